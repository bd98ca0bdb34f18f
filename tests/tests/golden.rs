//! A repository written once and committed (`tests/golden/`) stays readable: every
//! snapshot in it restores to the committed source tree, byte for byte.
//!
//! Regenerate after a deliberate format change (this deletes and recreates
//! `tests/golden/`):
//!
//! ```text
//! cargo build -p dprepo-tools && \
//!   cargo test -p dprepo-tests --test golden -- --ignored generate_golden_repository
//! ```
//!
//! Git keeps neither mtimes nor most mode bits nor empty directories, so only names, file
//! types, bytes and link targets are compared, and the committed tree has no empty
//! directories and only UTF-8 names.

mod common;

use common::*;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

const GOLDEN_PASSWORD: &str = "golden-password";
const HOST: &str = "golden-host";
const STREAM_NAME: &str = "db.dump";

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden")
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display())) {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        let dest = to.join(e.file_name());
        if ft.is_dir() {
            copy_dir(&e.path(), &dest);
        } else if ft.is_symlink() {
            symlink(fs::read_link(e.path()).unwrap(), &dest).unwrap();
        } else {
            fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// Remove empty directories below `dir` (git would not keep them); true if `dir` ends
/// up empty.
fn prune_empty_dirs(dir: &Path) -> bool {
    let mut empty = true;
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() && prune_empty_dirs(&e.path()) {
            fs::remove_dir(e.path()).unwrap();
        } else {
            empty = false;
        }
    }
    empty
}

/// A test environment on a private copy of the committed repository.
fn golden_env() -> TestEnv {
    let golden = golden_dir();
    assert!(
        golden.join("repo/config").is_file(),
        "{} has no golden repository; generate it with `cargo test -p dprepo-tests --test golden -- --ignored generate_golden_repository`",
        golden.display()
    );
    let mut env = TestEnv::new();
    env.password = GOLDEN_PASSWORD.to_string();
    copy_dir(&golden.join("repo"), &env.repo);
    env
}

#[test]
fn golden_repository_restores_the_committed_tree() {
    let golden = golden_dir();
    let env = golden_env();
    let snaps = env.snapshots();
    assert_eq!(
        snaps.len(),
        2,
        "the golden repository holds a directory and a stream snapshot"
    );
    let dir_snap: &Value = snaps
        .iter()
        .find(|s| s["stdin_name"].is_null())
        .expect("directory snapshot");
    let stream_snap: &Value = snaps
        .iter()
        .find(|s| s["stdin_name"] == STREAM_NAME)
        .expect("stream snapshot");
    for snap in [dir_snap, stream_snap] {
        assert_eq!(snap["hostname"], HOST, "{snap}");
    }
    assert_eq!(dir_snap["tags"], serde_json::json!(["golden"]));
    assert_eq!(stream_snap["tags"], serde_json::json!(["golden", "stream"]));
    let dir_id = dir_snap["id"].as_str().unwrap();
    let stream_id = stream_snap["id"].as_str().unwrap();
    // The tree was backed up where the generator ran; restore it by that recorded path.
    let recorded = dir_snap["paths"][0].as_str().expect("snapshot path");

    let whole = env.path("whole");
    env.ok(&["restore", dir_id, "--target", s(&whole)]);
    assert_same_tree(
        &golden.join("expected"),
        &restored_path(&whole, Path::new(recorded)),
        Compare::CONTENT,
    );
    let sub = env.path("sub");
    env.ok(&[
        "restore",
        &format!("{}:{recorded}/nested", &dir_id[..8]),
        "--target",
        s(&sub),
    ]);
    assert_same_tree(&golden.join("expected/nested"), &sub, Compare::CONTENT);

    let stream = fs::read(golden.join("stream.bin")).unwrap();
    assert!(
        env.dump(stream_id, STREAM_NAME) == stream,
        "dump of the golden stream"
    );
    let streamed = env.path("stream");
    env.ok(&["restore", stream_id, "--target", s(&streamed)]);
    assert!(fs::read(streamed.join(STREAM_NAME)).unwrap() == stream);
    assert_eq!(
        env.dump(dir_id, &format!("{recorded}/logs/app.log")),
        fs::read(golden.join("expected/logs/app.log")).unwrap()
    );

    let ls = env.json(&["ls", dir_id]);
    let link = ls["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "link-to-readme")
        .expect("symlink listed");
    assert_eq!(
        (link["type"].as_str(), link["link_target"].as_str()),
        (Some("symlink"), Some("README.txt"))
    );

    let stats = env.json(&["stats"]);
    let files = count_files(&golden.join("expected"));
    assert_eq!(stats["snapshots"], 2, "{stats}");
    assert_eq!(stats["files"], files.0 + 1, "{stats}");
    assert_eq!(
        stats["logical_bytes"],
        files.1 + stream.len() as u64,
        "{stats}"
    );
}

#[test]
fn golden_repository_accepts_new_backups_that_deduplicate_against_it() {
    let golden = golden_dir();
    let env = golden_env();
    let src = env.path("again");
    copy_dir(&golden.join("expected"), &src);
    let snap = env.backup(&[&src], &[]);
    let total = snap["summary"]["total_bytes"].as_u64().unwrap();
    let added = snap["summary"]["bytes_added"].as_u64().unwrap();
    assert!(
        total > 300_000 && added < total / 10,
        "old data is reused: {added} of {total} bytes added: {snap}"
    );
    let target = env.path("restore");
    env.ok(&["restore", "latest", "--target", s(&target)]);
    assert_same_tree(
        &golden.join("expected"),
        &restored_path(&target, &src),
        Compare::CONTENT,
    );
    assert_eq!(env.snapshots().len(), 3);
}

/// (regular files, their total size) below `dir`.
fn count_files(dir: &Path) -> (u64, u64) {
    let mut acc = (0, 0);
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            let (n, b) = count_files(&e.path());
            acc = (acc.0 + n, acc.1 + b);
        } else if ft.is_file() {
            acc = (acc.0 + 1, acc.1 + e.metadata().unwrap().len());
        }
    }
    acc
}

/// Writes `tests/golden/`: the source tree `expected/`, the stream `stream.bin`, and the
/// repository `repo/` (password `golden-password`) holding one snapshot of each.
#[test]
#[ignore = "writes tests/golden/; run by hand after a deliberate format change"]
fn generate_golden_repository() {
    let golden = golden_dir();
    if golden.exists() {
        fs::remove_dir_all(&golden).unwrap();
    }
    let expected = golden.join("expected");
    fs::create_dir_all(expected.join("logs")).unwrap();
    fs::create_dir_all(expected.join("data")).unwrap();
    fs::create_dir_all(expected.join("nested/deeper")).unwrap();
    fs::write(
        expected.join("README.txt"),
        "Source tree of the golden repository.\n",
    )
    .unwrap();
    fs::write(expected.join("logs/app.log"), text_bytes(300 * 1024)).unwrap();
    fs::write(
        expected.join("data/random.bin"),
        random_bytes(2024, 64 * 1024),
    )
    .unwrap();
    fs::write(expected.join("data/empty.txt"), b"").unwrap();
    fs::write(
        expected.join("nested/deeper/note.md"),
        "# Note\n\nNested two levels down.\n",
    )
    .unwrap();
    fs::write(
        expected.join("nested/spaces and \u{fc}n\u{ef}c\u{f8}d\u{e9}.txt"),
        "UTF-8 name\n",
    )
    .unwrap();
    symlink("README.txt", expected.join("link-to-readme")).unwrap();
    symlink("../README.txt", expected.join("nested/up-link")).unwrap();
    let mut stream = random_bytes(2025, 64 * 1024);
    stream.extend_from_slice(&text_bytes(150 * 1024));
    fs::write(golden.join("stream.bin"), &stream).unwrap();
    fs::write(
        golden.join(".gitattributes"),
        "# Byte-exact fixtures: no line-ending conversion.\n* -text\n",
    )
    .unwrap();
    fs::write(
        golden.join("README.md"),
        "Golden repository written by `generate_golden_repository` in `tests/tests/golden.rs`\n\
         (password `golden-password`): one snapshot of `expected/` and one stream snapshot of\n\
         `stream.bin` named `db.dump`. Do not edit by hand; regenerate after a deliberate\n\
         format change with\n\n\
         ```\ncargo build -p dprepo-tools && cargo test -p dprepo-tests --test golden -- --ignored generate_golden_repository\n```\n",
    )
    .unwrap();

    let mut env = TestEnv::new();
    env.password = GOLDEN_PASSWORD.to_string();
    env.ok(&["init"]);
    env.backup(&[&expected], &["--host", HOST, "--tag", "golden"]);
    let mut child = env
        .cmd([
            "backup",
            "--stdin",
            "--stdin-name",
            STREAM_NAME,
            "--host",
            HOST,
            "--tag",
            "golden,stream",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &stream).unwrap();
    assert_success(&child.wait_with_output().unwrap(), &["backup", "--stdin"]);

    prune_empty_dirs(&env.repo);
    copy_dir(&env.repo, &golden.join("repo"));
    let size = dir_size(&golden);
    assert!(
        size < 2_000_000,
        "the golden directory should stay small, it is {size} bytes"
    );
}
