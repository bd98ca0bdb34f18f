//! Repositories written once and committed stay readable: every snapshot in them restores
//! to the committed source, byte for byte. One directory per format generation, each kept
//! as it was written forever (SPEC.md section 23):
//!
//! - `tests/golden/v1/`: the first format (pack, index, tree and key file version 1);
//! - `tests/golden/v2/`: what version 2 added: page deltas (pack and index version 2, the
//!   page map in versions 1 and 2), a special file (tree version 2) and an access key (key
//!   file version 2).
//!
//! A new generation gets a new directory and generator; an existing one is never
//! regenerated (its generator is kept to show how it was made).
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
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/v1")
}

fn golden_v2_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/v2")
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
    env_on(&golden_dir())
}

/// A test environment on a private copy of the repository in `golden`.
fn env_on(golden: &Path) -> TestEnv {
    assert!(
        golden.join("repo/config").is_file(),
        "{} has no golden repository (it is committed; see tests/tests/golden.rs)",
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

/// Writes `tests/golden/v1/` (kept to show how it was made: v1 is never regenerated): the
/// source tree `expected/`, the stream `stream.bin`, and the
/// repository `repo/` (password `golden-password`) holding one snapshot of each.
#[test]
#[ignore = "wrote tests/golden/v1/ once; a new format generation gets its own directory"]
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

const V2_STREAM: &str = "base.tar";
const V2_XB_STREAM: &str = "innodb.xb";
const V2_PAGE: usize = 8192;
const XB_PAGE: usize = 16384;

/// `mbstream -c` (MariaDB's xbstream writer) of every file below `dir`, paths relative to it.
fn mbstream(dir: &Path) -> Vec<u8> {
    let out = std::process::Command::new("mbstream")
        .arg("-c")
        .arg("db/t1.ibd")
        .current_dir(dir)
        .output()
        .expect("mbstream (Debian package mariadb-backup)");
    assert!(out.status.success(), "mbstream -c failed");
    out.stdout
}

/// The version 2 repository: the second base backup's changed pages are deltas against the
/// first's (pack and index version 2, tree page map; for the xbstream, page map version 2),
/// the directory snapshot holds a FIFO (tree version 2), and `access-key.txt` opens it (key
/// file version 2).
#[test]
fn golden_v2_repository_restores_deltas_special_files_and_opens_with_its_access_key() {
    let golden = golden_v2_dir();
    let mut env = env_on(&golden);
    // Open with the committed access key only: the password is wrong on purpose.
    env.password = "not-the-password".to_string();
    let key = golden.join("access-key.txt");
    let with_key = |args: &[&str]| -> Vec<String> {
        let mut v = vec!["--access-key-file".to_string(), s(&key).to_string()];
        v.extend(args.iter().map(|a| a.to_string()));
        v
    };
    let run = |args: &[&str]| -> std::process::Output {
        let out = env.cmd(with_key(args)).output().unwrap();
        assert_success(&out, args);
        out
    };
    let snaps: Value =
        serde_json::from_slice(&run(&["--json", "snapshots"]).stdout).expect("snapshots JSON");
    let snaps = snaps.as_array().expect("a list of snapshots").clone();
    assert_eq!(
        snaps.len(),
        5,
        "two tar and two xbstream base backups, a directory: {snaps:?}"
    );
    for (stream, files, least_deltas) in [
        (V2_STREAM, ["base1.tar", "base2.tar"], 10),
        (V2_XB_STREAM, ["innodb1.xb", "innodb2.xb"], 4),
    ] {
        let mut two: Vec<&Value> = snaps.iter().filter(|s| s["stdin_name"] == stream).collect();
        assert_eq!(two.len(), 2, "{stream}: {snaps:?}");
        two.sort_by(|a, b| a["time"].as_str().cmp(&b["time"].as_str()));
        assert_eq!(two[1]["parent"], two[0]["id"], "{}", two[1]);
        assert!(
            two[1]["summary"]["deltas_added"].as_u64().unwrap_or(0) >= least_deltas,
            "the second {stream} holds page deltas: {}",
            two[1]
        );
        for (snap, file) in two.iter().zip(files) {
            let id = snap["id"].as_str().unwrap();
            let dumped = run(&["dump", id, stream]).stdout;
            assert!(
                dumped == fs::read(golden.join(file)).unwrap(),
                "dump of {file} differs"
            );
        }
    }

    let dir_snap = snaps
        .iter()
        .find(|s| s["stdin_name"].is_null())
        .expect("directory snapshot");
    let dir_id = dir_snap["id"].as_str().unwrap();
    let recorded = dir_snap["paths"][0].as_str().expect("snapshot path");
    let target = env.path("restored");
    run(&["restore", dir_id, "--target", s(&target)]);
    let restored = restored_path(&target, Path::new(recorded));
    assert_same_tree(
        &golden.join("expected"),
        &restored_without_fifo(&restored),
        Compare::CONTENT,
    );
    let fifo = fs::symlink_metadata(restored.join("pipe")).expect("the FIFO is restored");
    assert!(
        std::os::unix::fs::FileTypeExt::is_fifo(&fifo.file_type()),
        "pipe is restored as a FIFO"
    );
    run(&["verify", "--read-data"]);
}

/// `dir` with its FIFO moved out of the way, for comparing against the committed tree
/// (git cannot hold a FIFO).
fn restored_without_fifo(dir: &Path) -> PathBuf {
    let moved = dir.with_extension("fifo");
    fs::create_dir_all(&moved).unwrap();
    fs::rename(dir.join("pipe"), moved.join("pipe")).unwrap();
    let copy = dir.with_extension("compare");
    copy_dir(dir, &copy);
    fs::rename(moved.join("pipe"), dir.join("pipe")).unwrap();
    copy
}

/// Writes `tests/golden/v2/` (once; never regenerated): `base1.tar` and `base2.tar`, GNU tar
/// streams of a data directory of random 8 KiB pages, the second with 16 pages changed;
/// `expected/`, a small tree backed up together with a FIFO named `pipe`; `repo/` holding
/// the two streams (as `base.tar`) and the tree; `access-key.txt`, an access key for it.
#[test]
#[ignore = "wrote tests/golden/v2/ once; a new format generation gets its own directory"]
fn generate_golden_v2_repository() {
    let golden = golden_v2_dir();
    if golden.exists() {
        fs::remove_dir_all(&golden).unwrap();
    }
    fs::create_dir_all(&golden).unwrap();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    fs::create_dir_all(data.join("base/5")).unwrap();
    fs::write(data.join("PG_VERSION"), b"15\n").unwrap();
    fs::write(data.join("base/5/16397"), random_bytes(2026, 16 * V2_PAGE)).unwrap();
    let tar1 = gnu_tar(&data);
    let mut pages = fs::read(data.join("base/5/16397")).unwrap();
    for (i, page) in (0..16).step_by(2).chain([1, 3, 5, 7]).enumerate() {
        let at = page * V2_PAGE + 1000 + (i * 97) % 6000;
        pages[at..at + 60].copy_from_slice(&random_bytes(3000 + i as u64, 60));
    }
    fs::write(data.join("base/5/16397"), pages).unwrap();
    let tar2 = gnu_tar(&data);
    fs::write(golden.join("base1.tar"), &tar1).unwrap();
    fs::write(golden.join("base2.tar"), &tar2).unwrap();
    // An xbstream (mariabackup's format) of one InnoDB file of 16 KiB pages, then the same
    // with 4 pages changed: its pages become deltas through the page map's version 2.
    let ibd = work.path().join("innodb");
    fs::create_dir_all(ibd.join("db")).unwrap();
    let mut ibd_pages = random_bytes(2027, 12 * XB_PAGE);
    fs::write(ibd.join("db/t1.ibd"), &ibd_pages).unwrap();
    let xb1 = mbstream(&ibd);
    for (i, page) in [1usize, 4, 7, 10].into_iter().enumerate() {
        let at = page * XB_PAGE + 2000 + i * 131;
        ibd_pages[at..at + 80].copy_from_slice(&random_bytes(4000 + i as u64, 80));
    }
    fs::write(ibd.join("db/t1.ibd"), &ibd_pages).unwrap();
    let xb2 = mbstream(&ibd);
    fs::write(golden.join("innodb1.xb"), &xb1).unwrap();
    fs::write(golden.join("innodb2.xb"), &xb2).unwrap();

    let expected = golden.join("expected");
    fs::create_dir_all(expected.join("conf")).unwrap();
    fs::write(expected.join("conf/app.toml"), "name = \"golden v2\"\n").unwrap();
    fs::write(expected.join("notes.txt"), text_bytes(20 * 1024)).unwrap();
    let source = work.path().join("source");
    copy_dir(&expected, &source);
    let status = std::process::Command::new("mkfifo")
        .arg(source.join("pipe"))
        .status()
        .expect("mkfifo");
    assert!(status.success(), "mkfifo failed");

    fs::write(
        golden.join(".gitattributes"),
        "# Byte-exact fixtures: no line-ending conversion.\n* -text\n",
    )
    .unwrap();
    fs::write(
        golden.join("README.md"),
        "Golden repository of format generation 2, written once by `generate_golden_v2_repository`\n\
         in `tests/tests/golden.rs` and never regenerated (password `golden-password`, or the\n\
         access key in `access-key.txt`): two base backups of a data directory of 8 KiB pages\n\
         (`base1.tar`, `base2.tar`, stored as `base.tar`; the second as page deltas), two\n\
         xbstreams of a 16 KiB-page InnoDB file (`innodb1.xb`, `innodb2.xb`, stored as\n\
         `innodb.xb`; the second as page deltas, page map version 2) and one snapshot of\n\
         `expected/` plus a FIFO named `pipe`.\n",
    )
    .unwrap();

    let mut env = TestEnv::new();
    env.password = GOLDEN_PASSWORD.to_string();
    env.ok(&["init"]);
    let first = env.backup_stream_with(V2_STREAM, &tar1, &["--host", HOST]);
    let second = env.backup_stream_with(V2_STREAM, &tar2, &["--host", HOST]);
    assert_eq!(second["parent"], first["id"], "{second}");
    assert!(
        second["summary"]["deltas_added"].as_u64().unwrap() >= 10,
        "{second}"
    );
    let first = env.backup_stream_with(V2_XB_STREAM, &xb1, &["--host", HOST]);
    let second = env.backup_stream_with(V2_XB_STREAM, &xb2, &["--host", HOST]);
    assert_eq!(second["parent"], first["id"], "{second}");
    assert!(
        second["summary"]["deltas_added"].as_u64().unwrap() >= 4,
        "{second}"
    );
    env.backup(&[&source], &["--host", HOST, "--tag", "golden"]);
    let key = golden.join("access-key.txt");
    env.ok(&[
        "key",
        "add-access",
        "--label",
        "golden v2",
        "--output",
        s(&key),
    ]);

    // The local backend's lock files are its working state, not repository content.
    fs::remove_dir_all(env.repo.join(".tmp-locks")).unwrap();
    prune_empty_dirs(&env.repo);
    copy_dir(&env.repo, &golden.join("repo"));
    let size = dir_size(&golden);
    assert!(
        size < 2_000_000,
        "the golden directory should stay small, it is {size} bytes"
    );
}
