//! Page deltas end to end: a database base backup streamed as tar changes a few rows in
//! many 8 KiB pages between backups. Tar members are cut into page groups of 128 KiB
//! (16 pages, the last group of a member shorter); the next backup of the stream stores
//! each changed group as a small delta against the same group of the last backup, and
//! every snapshot stays restorable byte-exact after the snapshots holding the bases are
//! forgotten and garbage-collected.

mod common;

use common::*;
use std::path::Path;

const PAGE: usize = 8192;

/// Relation files of random (incompressible) pages: a full page stores about 8 KiB.
/// `1259` is groups 0..2 and a short group 2 of 8 pages; `16397` is groups 0..7 and a
/// short group 7 of 8 pages (112..120); `16400` is one whole group.
fn make_datadir(dir: &Path) {
    std::fs::create_dir_all(dir.join("base/5")).unwrap();
    std::fs::write(dir.join("PG_VERSION"), b"15\n").unwrap();
    std::fs::write(dir.join("base/5/1259"), random_bytes(1, 40 * PAGE)).unwrap();
    std::fs::write(dir.join("base/5/16397"), random_bytes(2, 120 * PAGE)).unwrap();
    std::fs::write(dir.join("base/5/16400"), random_bytes(3, 16 * PAGE)).unwrap();
}

/// Overwrite 60 bytes in each of `pages` of relation file `rel` (a few rows of each).
fn touch_pages(dir: &Path, rel: &str, pages: impl IntoIterator<Item = usize>, seed: u64) {
    let path = dir.join(rel);
    let mut data = std::fs::read(&path).unwrap();
    for (i, page) in pages.into_iter().enumerate() {
        let at = page * PAGE + 1000 + (i * 97) % 6000;
        data[at..at + 60].copy_from_slice(&random_bytes(seed + i as u64, 60));
    }
    std::fs::write(&path, data).unwrap();
}

fn summary(snap: &serde_json::Value, field: &str) -> u64 {
    snap["summary"][field]
        .as_u64()
        .unwrap_or_else(|| panic!("no summary.{field} in {snap}"))
}

#[test]
fn changed_pages_are_deltas_and_outlive_the_snapshots_of_their_bases() {
    let env = TestEnv::init();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("data");
    make_datadir(&dir);
    let tar1 = gnu_tar(&dir);
    let first = env.backup_stream_with("base.tar", &tar1, &[]);
    assert_eq!(summary(&first, "deltas_added"), 0, "{first}");

    // 30 changed pages in one relation (in all its 8 groups, the short last one too), 10
    // in another (all in its group 1), one relation grows by a page (a new short group).
    touch_pages(&dir, "base/5/16397", (0..120).step_by(4), 100);
    touch_pages(&dir, "base/5/1259", 20..30, 200);
    let mut grown = std::fs::read(dir.join("base/5/16400")).unwrap();
    grown.extend_from_slice(&random_bytes(4, PAGE));
    std::fs::write(dir.join("base/5/16400"), grown).unwrap();
    let tar2 = gnu_tar(&dir);
    let second = env.backup_stream_with("base.tar", &tar2, &[]);
    assert_eq!(second["parent"], first["id"], "{second}");
    assert_eq!(summary(&second, "deltas_added"), 9, "{second}");
    // 9 deltas of a few hundred bytes, one new full page, and the stream's tree and chunk
    // list: far below the 9 groups (1 MB) a backup without deltas stores.
    let stored = summary(&second, "bytes_stored");
    assert!(
        stored < 30_000,
        "second backup stored {stored} bytes: {second}"
    );

    // The third backup changes pages again, in the same 8 groups: its deltas are against
    // the first backup's full groups (never against a delta).
    touch_pages(&dir, "base/5/16397", (0..120).step_by(8), 300);
    let tar3 = gnu_tar(&dir);
    let third = env.backup_stream_with("base.tar", &tar3, &[]);
    assert_eq!(summary(&third, "deltas_added"), 8, "{third}");

    let ids: Vec<String> = [&first, &second, &third]
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        env.dump(&ids[1], "/base.tar") == tar2,
        "second dump differs"
    );
    assert!(env.dump(&ids[2], "/base.tar") == tar3, "third dump differs");
    env.ok(&["verify", "--read-data"]);

    // Forget the snapshots that hold the bases; gc must keep every base the third
    // snapshot's deltas need, and may free the rest.
    env.ok(&["forget", &ids[0], &ids[1]]);
    env.ok(&["gc", "--max-unused", "0"]);
    env.ok(&["verify", "--read-data"]);
    assert!(
        env.dump(&ids[2], "/base.tar") == tar3,
        "dump after gc differs"
    );
    let restore_to = work.path().join("restored");
    env.ok(&["restore", &ids[2], "--target", s(&restore_to)]);
    assert!(std::fs::read(restore_to.join("base.tar")).unwrap() == tar3);

    // A fourth backup, whose parent is the third: deltas against the bases gc kept.
    // Pages 0..5 (group 0) and 32..34 (the short last group).
    touch_pages(&dir, "base/5/1259", (0..5).chain(32..34), 400);
    let tar4 = gnu_tar(&dir);
    let fourth = env.backup_stream_with("base.tar", &tar4, &[]);
    assert_eq!(summary(&fourth, "deltas_added"), 2, "{fourth}");
    assert!(env.dump(fourth["id"].as_str().unwrap(), "/base.tar") == tar4);
}

#[test]
fn streams_without_a_parent_or_not_cut_as_tar_store_no_deltas() {
    let env = TestEnv::init();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("data");
    make_datadir(&dir);
    let tar1 = gnu_tar(&dir);
    env.backup_stream_with("base.tar", &tar1, &[]);
    touch_pages(&dir, "base/5/16397", 0..10, 500);
    let tar2 = gnu_tar(&dir);

    // Another stream name has no parent; --force ignores the parent; cdc cuts no pages.
    for (name, extra) in [
        ("other.tar", &[][..]),
        ("base.tar", &["--force"][..]),
        ("base.tar", &["--stream-chunking", "cdc"][..]),
    ] {
        let snap = env.backup_stream_with(name, &tar2, extra);
        assert_eq!(
            summary(&snap, "deltas_added"),
            0,
            "{name} {extra:?}: {snap}"
        );
        let path = format!("/{name}");
        assert!(env.dump(snap["id"].as_str().unwrap(), &path) == tar2);
    }
}

/// When the packs that hold a stream's base pages are lost, verify names each delta that
/// can no longer be decoded, and the snapshot that needs it.
#[test]
fn verify_names_deltas_whose_bases_are_lost() {
    let env = TestEnv::init();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("data");
    make_datadir(&dir);
    env.backup_stream_with("base.tar", &gnu_tar(&dir), &[]);
    let packs_of_first = env.repo_files("data");
    // One page in each of the 8 groups (the last one short).
    touch_pages(&dir, "base/5/16397", (0..120).step_by(16), 100);
    let second = env.backup_stream_with("base.tar", &gnu_tar(&dir), &[]);
    assert_eq!(summary(&second, "deltas_added"), 8, "{second}");

    for pack in &packs_of_first {
        std::fs::remove_file(pack).unwrap();
    }
    env.ok(&["repair", "index"]);
    let out = env.run(&["--json", "verify"]);
    assert!(!out.status.success(), "verify must fail: {}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lost: Vec<&serde_json::Value> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "delta_base_missing")
        .collect();
    assert_eq!(lost.len(), 8, "{report}");
    for problem in lost {
        assert_eq!(
            problem["snapshots"],
            serde_json::json!([second["id"]]),
            "{problem}"
        );
    }
}
