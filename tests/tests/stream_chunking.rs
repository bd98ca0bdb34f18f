//! Tar-aware stream chunking end to end: `dprepo backup --stdin` of real GNU tar archives.
//! A database base backup streamed as tar changes in scattered 8 KiB pages between
//! backups; the user-visible promise is that the next backup stores only the page groups
//! (128 KiB, 16 pages) holding those pages, and that any stream, tar or not, damaged or
//! not, comes back byte-exact.

mod common;

use common::*;
use std::path::Path;

const PAGE: usize = 8192;
/// The page group size of tar members with the default stream chunker (2 MiB max).
const GROUP: usize = 16 * PAGE;

/// `dprepo --json backup --stdin --stdin-name NAME [extra...]` fed `data`; the snapshot.
fn backup_stream(env: &TestEnv, name: &str, data: &[u8], extra: &[&str]) -> serde_json::Value {
    env.backup_stream_with(name, data, extra)
}

/// A small PostgreSQL-like data directory: relation files of whole 8 KiB pages (random,
/// so no two pages deduplicate by accident) and a few files of other sizes.
fn make_datadir(dir: &Path) {
    std::fs::create_dir_all(dir.join("base/5")).unwrap();
    std::fs::write(dir.join("PG_VERSION"), b"15\n").unwrap();
    std::fs::write(dir.join("postgresql.auto.conf"), text_bytes(1000)).unwrap();
    std::fs::write(dir.join("base/5/1259"), random_bytes(1, 20 * PAGE)).unwrap();
    std::fs::write(dir.join("base/5/16397"), random_bytes(2, 96 * PAGE)).unwrap();
    std::fs::write(dir.join("base/5/16397_fsm"), random_bytes(3, 3 * PAGE)).unwrap();
    std::fs::write(dir.join("base/5/pg_filenode.map"), random_bytes(4, 512)).unwrap();
}

#[test]
fn one_page_change_in_a_tar_member_adds_exactly_one_group_chunk() {
    let env = TestEnv::init();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("data");
    make_datadir(&dir);
    let before = gnu_tar(&dir);

    let first = backup_stream(&env, "base.tar", &before, &[]);
    assert_eq!(first["chunker"]["tar_page_size"], GROUP, "{first}");

    // Baseline for the metadata a changed stream costs (its tree and chunk list): group 2
    // (pages 32..48) of the 96-page relation file overwritten with a copy of group 1,
    // which the repository already holds, so no data chunk is new.
    let rel = dir.join("base/5/16397");
    let original = std::fs::read(&rel).unwrap();
    let mut copied = original.clone();
    copied.copy_within(GROUP..2 * GROUP, 2 * GROUP);
    std::fs::write(&rel, &copied).unwrap();
    let baseline = backup_stream(&env, "base.tar", &gnu_tar(&dir), &[]);
    let metadata_blobs = baseline["summary"]["blobs_added"].as_u64().unwrap();
    let metadata_bytes = baseline["summary"]["bytes_added"].as_u64().unwrap();
    assert!(
        metadata_bytes < PAGE as u64,
        "a copied group stored data: {baseline}"
    );

    // Now change 100 bytes of page 41 (in group 2) of the original file, in place.
    let changed = 41 * PAGE;
    let mut pages = original;
    pages[changed + 100..changed + 200].copy_from_slice(&random_bytes(99, 100));
    std::fs::write(&rel, &pages).unwrap();
    let after = gnu_tar(&dir);
    assert_eq!(after.len(), before.len());

    let second = backup_stream(&env, "base.tar", &after, &[]);
    let added = second["summary"]["blobs_added"].as_u64().unwrap();
    assert_eq!(
        added,
        metadata_blobs + 1,
        "a one-page change must add one data chunk (plus {metadata_blobs} metadata blobs): {second}"
    );
    // The new data chunk is the page's group: 128 KiB of random pages, give or take the
    // few bytes by which the tree (whose node times are the snapshot time) may differ in
    // length. (No delta: the parent's group 2 is the copy of group 1, unrelated bytes.)
    let data_bytes = second["summary"]["bytes_added"].as_u64().unwrap() - metadata_bytes;
    assert!(
        data_bytes.abs_diff(GROUP as u64) <= 64,
        "new data is {data_bytes} bytes, not one group: {second}"
    );
    let id = second["id"].as_str().unwrap();
    assert!(
        env.dump(id, "/base.tar") == after,
        "dump differs from the stream"
    );
    let first_id = first["id"].as_str().unwrap();
    assert!(env.dump(first_id, "/base.tar") == before);
}

#[test]
fn forced_cdc_and_non_tar_streams_are_not_cut_as_tar() {
    let env = TestEnv::init();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("data");
    make_datadir(&dir);
    let tar = gnu_tar(&dir);

    let cdc = backup_stream(&env, "base.tar", &tar, &["--stream-chunking", "cdc"]);
    assert!(cdc["chunker"].get("tar_page_size").is_none(), "{cdc}");
    assert!(env.dump(cdc["id"].as_str().unwrap(), "/base.tar") == tar);

    let text = text_bytes(300_000);
    let plain = backup_stream(&env, "dump.sql", &text, &[]);
    assert!(plain["chunker"].get("tar_page_size").is_none(), "{plain}");
    assert!(env.dump(plain["id"].as_str().unwrap(), "/dump.sql") == text);
}

#[test]
fn truncated_and_damaged_tar_streams_round_trip() {
    let env = TestEnv::init();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("data");
    make_datadir(&dir);
    let tar = gnu_tar(&dir);

    // Cut inside a relation file's pages, inside a header, and right after the first
    // header; then a copy with the second member's header checksum broken.
    let mut cases: Vec<(String, Vec<u8>)> = [100 * PAGE + 123, 512 + 300, 512]
        .iter()
        .map(|&n| {
            (
                format!("truncated at {n}"),
                tar[..n.min(tar.len())].to_vec(),
            )
        })
        .collect();
    let mut damaged = tar.clone();
    let second_header = (1..damaged.len() / 512)
        .map(|b| b * 512)
        .find(|&o| &damaged[o + 257..o + 262] == b"ustar")
        .expect("a second member");
    damaged[second_header + 150] ^= 0x55;
    cases.push(("damaged header".into(), damaged));

    for (what, data) in cases {
        let snap = backup_stream(&env, "base.tar", &data, &[]);
        let restored = env.dump(snap["id"].as_str().unwrap(), "/base.tar");
        assert!(restored == data, "{what}: dump differs from the stream");
    }
    env.ok(&["verify", "--read-data"]);
}
