//! Incremental backups: unchanged files are taken from the parent snapshot without
//! reading, changed ones are read again, and the result is always the current tree.
//! Every test runs against both backends (the parent's trees come from the repository).

mod common;

use common::*;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

const FILES: u64 = 25;

/// `FILES` files in three directories; returns the total size.
fn build_tree(root: &Path) -> u64 {
    let mut total = 0;
    for i in 0..FILES {
        let dir = root.join(["", "x", "x/y"][i as usize % 3]);
        fs::create_dir_all(&dir).unwrap();
        let len = if i == 0 {
            0
        } else {
            (i as usize * 7_919) % 100_000 + 1
        };
        let bytes = if i == 1 {
            random_bytes(500, 1 << 20)
        } else {
            random_bytes(500 + i, len)
        };
        total += bytes.len() as u64;
        fs::write(dir.join(format!("f{i:02}")), bytes).unwrap();
    }
    total
}

fn file(root: &Path, i: u64) -> PathBuf {
    root.join(["", "x", "x/y"][i as usize % 3])
        .join(format!("f{i:02}"))
}

/// The latest snapshot of `src`, restored, equals `src`.
fn assert_latest_restores_as(env: &TestEnv, src: &Path) {
    let target = env.path("restore");
    env.ok(&[
        "restore",
        &format!("latest:{}", s(src)),
        "--target",
        s(&target),
    ]);
    assert_same_tree(
        src,
        &target,
        Compare {
            root_metadata: false,
            ..Compare::ALL
        },
    );
}

fn counts(snap: &Value) -> (u64, u64, u64) {
    let s = &snap["summary"];
    (
        s["files_new"].as_u64().unwrap(),
        s["files_changed"].as_u64().unwrap(),
        s["files_unmodified"].as_u64().unwrap(),
    )
}

both_backends!(
    unchanged_tree_is_taken_from_the_parent_without_reading,
    changed_file_of_the_same_size_is_read_again,
    force_reads_every_file_and_parent_can_be_chosen,
    content_change_keeping_size_and_mtime_is_detected,
    added_and_deleted_files_are_reflected,
    many_directories_with_type_changes_are_taken_right,
);

fn unchanged_tree_is_taken_from_the_parent_without_reading(backend: Backend) {
    let env = TestEnv::init_with(backend);
    let src = env.path("src");
    let total = build_tree(&src);
    let first = env.backup(&[&src], &[]);
    assert_eq!(counts(&first), (FILES, 0, 0), "{first}");
    assert_eq!(first["parent"], Value::Null);

    let second = env.backup(&[&src], &[]);
    assert_eq!(
        second["parent"], first["id"],
        "the previous snapshot of the same paths is the parent"
    );
    assert_eq!(counts(&second), (0, 0, FILES), "{second}");
    assert_eq!(second["summary"]["files"], FILES);
    assert_eq!(
        second["summary"]["bytes_read"], 0,
        "nothing is read: {second}"
    );
    assert_eq!(second["summary"]["total_bytes"], total);

    assert_latest_restores_as(&env, &src);
}

fn changed_file_of_the_same_size_is_read_again(backend: Backend) {
    let env = TestEnv::init_with(backend);
    let src = env.path("src");
    build_tree(&src);
    env.backup(&[&src], &[]);

    let changed = file(&src, 1);
    let mut bytes = fs::read(&changed).unwrap();
    bytes[12_345] ^= 1;
    fs::write(&changed, &bytes).unwrap();
    set_mtime(&changed, 1_900_000_000, 5);
    let snap = env.backup(&[&src], &[]);
    assert_eq!(counts(&snap), (0, 1, FILES - 1), "{snap}");
    assert_eq!(snap["summary"]["bytes_read"], bytes.len() as u64);
    assert!(
        env.dump("latest", s(&changed)) == bytes,
        "the new content is in the snapshot"
    );
}

fn content_change_keeping_size_and_mtime_is_detected(backend: Backend) {
    // Editors and tools (rsync -t, tar) can leave size and mtime as they were; the change
    // time still moves, and the file must not be taken from the parent.
    let env = TestEnv::init_with(backend);
    let src = env.path("src");
    build_tree(&src);
    let target = file(&src, 4);
    let old_meta = fs::metadata(&target).unwrap();
    env.backup(&[&src], &[]);

    let mut bytes = fs::read(&target).unwrap();
    bytes[0] ^= 0xff;
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(&target, &bytes).unwrap();
    filetime::set_file_mtime(
        &target,
        filetime::FileTime::from_last_modification_time(&old_meta),
    )
    .unwrap();
    let snap = env.backup(&[&src], &[]);
    assert_eq!(counts(&snap), (0, 1, FILES - 1), "{snap}");
    assert!(env.dump("latest", s(&target)) == bytes);
}

fn added_and_deleted_files_are_reflected(backend: Backend) {
    let env = TestEnv::init_with(backend);
    let src = env.path("src");
    build_tree(&src);
    env.backup(&[&src], &[]);
    fs::remove_file(file(&src, 3)).unwrap();
    fs::write(src.join("x/new-file"), b"brand new\n").unwrap();
    let snap = env.backup(&[&src], &[]);
    assert_eq!(counts(&snap), (1, 0, FILES - 1), "{snap}");
    assert_latest_restores_as(&env, &src);
}

fn force_reads_every_file_and_parent_can_be_chosen(backend: Backend) {
    let env = TestEnv::init_with(backend);
    let src = env.path("src");
    let total = build_tree(&src);
    let first = env.backup(&[&src], &["--host", "alpha"]);

    let forced = env.backup(&[&src], &["--host", "alpha", "--force"]);
    assert_eq!(forced["parent"], Value::Null, "{forced}");
    assert_eq!(
        counts(&forced).2,
        0,
        "--force takes nothing from a parent: {forced}"
    );
    assert_eq!(counts(&forced).0, FILES);
    assert_eq!(forced["summary"]["bytes_read"], total);

    // Another host has no automatic parent ...
    let other = env.backup(&[&src], &["--host", "beta"]);
    assert_eq!(other["parent"], Value::Null, "{other}");
    assert_eq!(counts(&other), (FILES, 0, 0));
    // ... unless one is named.
    let first_id = first["id"].as_str().unwrap();
    let chosen = env.backup(&[&src], &["--host", "beta", "--parent", &first_id[..10]]);
    assert_eq!(chosen["parent"], first["id"]);
    assert_eq!(counts(&chosen), (0, 0, FILES));
}

/// More subdirectories than the walker loads parent trees ahead for (16), two levels
/// deep, with entries that change type between snapshots.
fn many_directories_with_type_changes_are_taken_right(backend: Backend) {
    let env = TestEnv::init_with(backend);
    let src = env.path("src");
    for d in 0..40u64 {
        for e in 0..3 {
            let sub = src.join(format!("d{d:02}/e{e}"));
            fs::create_dir_all(&sub).unwrap();
            fs::write(sub.join("f"), format!("{d} {e}\n")).unwrap();
        }
        fs::write(src.join(format!("d{d:02}/top")), random_bytes(d, 1000)).unwrap();
    }
    fs::write(src.join("becomes-dir"), b"a file first\n").unwrap();
    let files = 40 * 4 + 1;
    let first = env.backup(&[&src], &[]);
    assert_eq!(counts(&first), (files, 0, 0), "{first}");

    // A directory becomes a file, a file becomes a directory, and a file deep in one of
    // the last directories changes.
    fs::remove_dir_all(src.join("d05")).unwrap();
    fs::write(src.join("d05"), b"now a file\n").unwrap();
    fs::remove_file(src.join("becomes-dir")).unwrap();
    fs::create_dir(src.join("becomes-dir")).unwrap();
    fs::write(src.join("becomes-dir/inside"), b"inside\n").unwrap();
    fs::write(
        src.join("d37/e2/f"),
        b"changed in one of the last directories\n",
    )
    .unwrap();
    let second = env.backup(&[&src], &[]);
    // New: d05 and becomes-dir/inside. Gone: d05's four files and the file becomes-dir.
    assert_eq!(counts(&second), (2, 1, files - 4 - 1 - 1), "{second}");

    assert_latest_restores_as(&env, &src);
}

/// An unchanged file whose content the index no longer knows (its packs were lost and
/// `repair index` dropped them) is read again, not referenced.
#[test]
fn unchanged_files_whose_blobs_are_lost_are_read_again() {
    let env = TestEnv::init();
    let src = env.path("src");
    let total = build_tree(&src);
    env.backup(&[&src], &[]);
    for pack in env.repo_files("data") {
        fs::remove_file(pack).unwrap();
    }
    env.ok(&["repair", "index"]);

    let snap = env.backup(&[&src], &[]);
    // f00 is empty: it references no blob, so it is still taken from the parent.
    assert_eq!(counts(&snap), (0, FILES - 1, 1), "{snap}");
    assert_eq!(snap["summary"]["bytes_read"], total, "{snap}");
    assert_latest_restores_as(&env, &src);
}
