//! Deduplication as users see it: the repository grows by what changed, not by what was
//! backed up. Every test runs against both backends; growth is measured on what the
//! backend stores (files of the local directory, objects below the S3 prefix).

mod common;

use common::*;
use std::fs;
use std::path::Path;

const KIB: u64 = 1 << 10;
const MIB: usize = 1 << 20;

/// Metadata a backup may add when no file content is new: trees, index file, manifest.
fn metadata_allowance(data_bytes: u64) -> u64 {
    64 * KIB + data_bytes / 100
}

/// A tree of 30 incompressible files of assorted sizes (about 20 MiB) in a few dirs.
fn build_tree(root: &Path) -> u64 {
    let mut total = 0;
    for i in 0..30u64 {
        let dir = root.join(format!("dir{}", i % 4));
        fs::create_dir_all(&dir).unwrap();
        let len = (i * 97 * 1024 + i * i * 13_000) as usize % (3 * MIB) + 1;
        fs::write(dir.join(format!("file{i}.bin")), random_bytes(100 + i, len)).unwrap();
        total += len as u64;
    }
    total
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

both_backends!(
    backing_up_the_same_data_again_adds_only_metadata,
    small_edits_in_a_large_file_store_about_the_edited_regions,
    identical_files_under_different_names_are_stored_once,
);

fn backing_up_the_same_data_again_adds_only_metadata(backend: Backend) {
    let env = TestEnv::init_with(backend);
    let src = env.path("src");
    let total = build_tree(&src);
    let before = env.repo_size();
    env.backup(&[&src], &[]);
    let after_first = env.repo_size();
    assert!(
        after_first - before >= total,
        "incompressible data is stored: {total} bytes of files, repository grew by {}",
        after_first - before
    );

    // Read again in full (no parent): every chunk is already there.
    let again = env.backup(&[&src], &["--force"]);
    let after_second = env.repo_size();
    assert_eq!(
        again["summary"]["bytes_read"], total,
        "--force reads every byte"
    );
    assert!(
        after_second - after_first < metadata_allowance(total),
        "a second full read of unchanged data grew the repository by {} bytes",
        after_second - after_first
    );

    // The same files at another path (no parent snapshot applies) are not stored again.
    let copy = env.path("copy");
    copy_tree(&src, &copy);
    env.backup(&[&copy], &[]);
    let after_copy = env.repo_size();
    assert!(
        after_copy - after_second < metadata_allowance(total),
        "a copy of the tree grew the repository by {} bytes",
        after_copy - after_second
    );

    let target = env.path("restore");
    env.ok(&[
        "restore",
        &format!("latest:{}", s(&copy)),
        "--target",
        s(&target),
    ]);
    assert_same_tree(&src, &target, Compare::CONTENT);
}

fn small_edits_in_a_large_file_store_about_the_edited_regions(backend: Backend) {
    let env = TestEnv::init_with(backend);
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    let file = src.join("disk.img");
    // Smaller on S3 to keep the test server's time down; the edits stay far apart.
    let mib = match backend {
        Backend::Local => 64,
        Backend::S3 => 24,
    };
    let at = |fraction_of_64: usize| fraction_of_64 * mib / 64 * MIB;
    let mut data = random_bytes(7, mib * MIB);
    fs::write(&file, &data).unwrap();
    env.backup(&[&src], &[]);
    let chunker = env.snapshots()[0]["chunker"].clone();
    let max_chunk = chunker["max_size"]
        .as_u64()
        .expect("snapshot records the chunker max_size");
    let min_chunk = chunker["min_size"]
        .as_u64()
        .expect("snapshot records the chunker min_size");
    let before = env.repo_size();

    // Three separate edits: overwrite in place, insert, delete.
    data[at(5)..at(5) + 100].copy_from_slice(&[0xAB; 100]);
    let inserted = random_bytes(8, 4096);
    data.splice(at(30)..at(30), inserted);
    data.drain(at(55)..at(55) + 4096);
    fs::write(&file, &data).unwrap();
    let snap = env.backup(&[&src], &[]);
    assert_eq!(snap["summary"]["files_changed"], 1, "{snap}");
    let growth = env.repo_size() - before;

    // Each edit touches at most two chunks (the one it is in and a resynchronising one).
    let bound = 3 * 2 * max_chunk + 256 * KIB;
    assert!(growth <= bound, "three small edits grew the repository by {growth} bytes (bound {bound}, chunker {chunker})");
    // The edits are in different chunks, each new chunk is at least min_size and random.
    assert!(
        growth >= 3 * min_chunk,
        "three edited chunks must be stored: growth {growth}"
    );

    assert!(
        env.dump("latest", s(&file)) == data,
        "the edited file is restored as edited"
    );
}

fn identical_files_under_different_names_are_stored_once(backend: Backend) {
    let env = TestEnv::init_with(backend);
    let src = env.path("src");
    fs::create_dir_all(src.join("a")).unwrap();
    fs::create_dir_all(src.join("b/c")).unwrap();
    let content = random_bytes(21, 8 * MIB);
    fs::write(src.join("a/one.bin"), &content).unwrap();
    fs::write(src.join("b/c/two.bin"), &content).unwrap();
    fs::write(src.join("b/three.bin"), &content).unwrap();
    let before = env.repo_size();
    env.backup(&[&src], &[]);
    let growth = env.repo_size() - before;
    let len = content.len() as u64;
    assert!(
        growth >= len && growth < len + metadata_allowance(len),
        "three copies of {len} bytes grew the repository by {growth}"
    );

    let stats = env.json(&["stats"]);
    assert_eq!(stats["logical_bytes"], 3 * len, "{stats}");
    assert_eq!(stats["unique_data_bytes"], len, "{stats}");
    assert_eq!(stats["files"], 3, "{stats}");
    assert!(env.dump("latest", s(&src.join("b/three.bin"))) == content);
}
