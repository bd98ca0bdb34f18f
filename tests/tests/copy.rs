//! `dprepo copy --from-repo`: snapshots replicated between repositories with their own
//! keys, on every pair of backends. What is checked: restores from the copy equal the
//! source byte for byte and in metadata, a second copy adds nothing, a snapshot whose
//! parent was copied reads and uploads little, a copy of a copy is recognised, a
//! damaged source blob stops the copy with a clear error and a consistent destination,
//! and a copy beside a backup into the destination and a gc of the source loses nothing.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Output};

/// Password of the source repositories (the destinations use [`PASSWORD`]).
const SOURCE_PASSWORD: &str = "source repository password";

/// A source repository on `backend` with the small chunker, so a few MiB make files of
/// more than 64 chunks (chunk lists) and the copy keeps boundaries the destination's
/// own (default) chunker would not cut.
fn source_repo(backend: Backend) -> TestEnv {
    let mut env = TestEnv::new_with(backend);
    env.password = SOURCE_PASSWORD.to_string();
    env.ok(&["init", "--chunker", "small", "--stream-chunker", "small"]);
    env
}

/// A tree with a file of chunk lists, small files, an empty file, a subdirectory and a
/// symlink, with distinct modes and mtimes.
fn build_tree(root: &Path) {
    fs::create_dir_all(root.join("sub/deeper")).unwrap();
    fs::write(root.join("big.bin"), random_bytes(7, 6 << 20)).unwrap();
    fs::write(root.join("hello.txt"), b"hello, world\n").unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    fs::write(root.join("sub/text.txt"), text_bytes(300_000)).unwrap();
    fs::write(root.join("sub/deeper/small.bin"), random_bytes(8, 40_000)).unwrap();
    symlink("../hello.txt", root.join("sub/link")).unwrap();
    set_mode(&root.join("hello.txt"), 0o640);
    set_mode(&root.join("sub/deeper"), 0o750);
    set_mtime(&root.join("hello.txt"), 1_600_000_000, 123_456_789);
    set_mtime(&root.join("sub/deeper/small.bin"), 1_500_000_000, 987);
}

/// `dprepo copy ARGS` into `dst` from `src` (whose key goes in DPREPO_FROM_PASSWORD).
fn copy_cmd(dst: &TestEnv, src: &TestEnv, args: &[&str]) -> Command {
    let mut all = vec!["copy", "--from-repo"];
    let from = src.location();
    all.push(&from);
    all.extend_from_slice(args);
    let mut cmd = dst.cmd(&all);
    // The source's S3 settings, then the destination's again (both use the test server).
    src.storage_env(&mut cmd);
    dst.storage_env(&mut cmd);
    cmd.env("DPREPO_FROM_PASSWORD", &src.password);
    cmd
}

fn copy_json(dst: &TestEnv, src: &TestEnv, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = output_of(copy_cmd(dst, src, &all));
    assert_success(&out, &all);
    parse_json(&out, &all)
}

fn copy_out(dst: &TestEnv, src: &TestEnv, args: &[&str]) -> Output {
    output_of(copy_cmd(dst, src, args))
}

fn count(doc: &serde_json::Value, key: &str) -> u64 {
    doc[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key} in {doc}"))
}

/// The manifest fields a copy keeps.
fn metadata(snap: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "time": snap["time"],
        "hostname": snap["hostname"],
        "username": snap["username"],
        "paths": snap["paths"],
        "tags": snap["tags"],
        "stdin_name": snap["stdin_name"],
    })
}

/// Back up a tree into `src` on one backend, copy it to `dst` on another, restore from
/// the copy and compare; copy again: nothing added, the destination's bytes unchanged.
fn copy_restores_and_copies_once(src_backend: Backend, dst_backend: Backend) {
    let src = source_repo(src_backend);
    let dst = TestEnv::init_with(dst_backend);
    let data = src.path("data");
    build_tree(&data);
    src.backup(&[&data], &["--tag", "nightly", "--host", "db-1"]);

    let first = copy_json(&dst, &src, &[]);
    assert_eq!(first["copied"].as_array().unwrap().len(), 1, "{first}");
    assert_eq!(first["skipped"].as_array().unwrap().len(), 0, "{first}");
    assert!(count(&first, "blobs_added") > 64, "{first}");
    let src_snaps = src.snapshots();
    let dst_snaps = dst.snapshots();
    assert_eq!(dst_snaps.len(), 1);
    assert_eq!(metadata(&dst_snaps[0]), metadata(&src_snaps[0]));
    assert_eq!(
        first["copied"][0]["copy"].as_str().unwrap(),
        dst_snaps[0]["id"].as_str().unwrap()
    );

    let target = dst.path("restore");
    dst.ok(&["restore", "latest", "--target", s(&target)]);
    assert_same_tree(&data, &restored_path(&target, &data), Compare::ALL);
    dst.ok(&["verify", "--read-data"]);

    let size = dst.repo_size();
    let again = copy_json(&dst, &src, &[]);
    assert_eq!(again["copied"].as_array().unwrap().len(), 0, "{again}");
    assert_eq!(again["skipped"].as_array().unwrap().len(), 1, "{again}");
    assert_eq!(count(&again, "blobs_read"), 0, "{again}");
    assert_eq!(count(&again, "bytes_uploaded"), 0, "{again}");
    assert_eq!(
        dst.repo_size(),
        size,
        "a second copy changed the destination"
    );
    assert_eq!(dst.snapshots().len(), 1);
    let text = String::from_utf8_lossy(&copy_out(&dst, &src, &[]).stdout).into_owned();
    assert!(text.contains("skipping snapshot"), "{text}");
}

#[test]
fn copy_local_to_local() {
    copy_restores_and_copies_once(Backend::Local, Backend::Local);
}

#[test]
fn copy_local_to_s3() {
    copy_restores_and_copies_once(Backend::Local, Backend::S3);
}

#[test]
fn copy_s3_to_local() {
    copy_restores_and_copies_once(Backend::S3, Backend::Local);
}

#[test]
fn copy_s3_to_s3() {
    copy_restores_and_copies_once(Backend::S3, Backend::S3);
}

/// A second snapshot whose parent was copied: unchanged files and directories come from
/// the parent's copy without being read from the source, and only the new file's chunks
/// are uploaded. The copy names the parent's copy as its parent.
#[test]
fn copy_of_child_snapshot_reuses_parent_copy() {
    let src = source_repo(Backend::Local);
    let dst = TestEnv::init();
    let data = src.path("data");
    build_tree(&data);
    src.backup(&[&data], &[]);
    let first = copy_json(&dst, &src, &[]);
    let first_copy = first["copied"][0]["copy"].as_str().unwrap().to_string();

    fs::write(data.join("sub/new.txt"), b"a new small file\n").unwrap();
    src.backup(&[&data], &[]);
    let second = copy_json(&dst, &src, &[]);
    assert_eq!(second["copied"].as_array().unwrap().len(), 1, "{second}");
    assert_eq!(second["skipped"].as_array().unwrap().len(), 1, "{second}");
    assert_eq!(
        second["copied"][0]["parent"].as_str(),
        Some(first_copy.as_str()),
        "{second}"
    );
    // Read: the trees on the way to `sub` (the root, one per component of `data`, and
    // `sub`) and the new file's chunk; nothing of the unchanged files.
    let on_the_way = data.components().count() as u64 + 1;
    assert_eq!(count(&second, "blobs_read"), on_the_way + 1, "{second}");
    assert!(count(&second, "bytes_read") < 10_000, "{second}");
    // Added: the same trees (changed) and the new chunk.
    assert_eq!(count(&second, "blobs_added"), on_the_way + 1, "{second}");
    assert!(count(&second, "bytes_uploaded") < 20_000, "{second}");
    let target = dst.path("restore");
    dst.ok(&["restore", "latest", "--target", s(&target)]);
    assert_same_tree(&data, &restored_path(&target, &data), Compare::ALL);
}

/// A changed stream: its unchanged chunks are mapped through the parent's copy of the
/// same stream (equal boundaries at equal positions), so only the changed region is
/// read from the source.
#[test]
fn copy_of_changed_stream_reads_only_changed_chunks() {
    let src = source_repo(Backend::Local);
    let dst = TestEnv::init();
    let mut stream = random_bytes(21, 8 << 20);
    src.backup_stream("db.dump", &stream);
    let first = copy_json(&dst, &src, &[]);
    let chunks = count(&first, "blobs_read");
    assert!(chunks > 64, "{first}");
    // Overwrite 100 bytes in the middle: content-defined chunking changes one or two
    // chunks, and the others keep their positions.
    for b in &mut stream[4 << 20..(4 << 20) + 100] {
        *b = !*b;
    }
    src.backup_stream("db.dump", &stream);
    let second = copy_json(&dst, &src, &[]);
    assert_eq!(second["copied"].as_array().unwrap().len(), 1, "{second}");
    assert!(
        count(&second, "blobs_read") < 12,
        "read {} of about {chunks} blobs: {second}",
        count(&second, "blobs_read")
    );
    assert_eq!(dst.dump("latest", "db.dump"), stream);
}

/// A -> B -> C, then A -> C: C recognises the snapshot it got through B and adds
/// nothing; copying C back to A adds nothing either.
#[test]
fn copy_of_copy_is_recognised() {
    let a = source_repo(Backend::Local);
    let b = TestEnv::init();
    let c = TestEnv::init();
    let data = a.path("data");
    build_tree(&data);
    a.backup(&[&data], &[]);
    copy_json(&b, &a, &[]);
    let through_b = copy_json(&c, &b, &[]);
    assert_eq!(through_b["copied"].as_array().unwrap().len(), 1);
    // Same chunk boundaries as the source: nothing new between B's and C's content.
    let size = c.repo_size();
    let direct = copy_json(&c, &a, &[]);
    assert_eq!(direct["skipped"].as_array().unwrap().len(), 1, "{direct}");
    assert_eq!(c.repo_size(), size);
    let a_size = a.repo_size();
    let a_as_dst = a.same_repository(SOURCE_PASSWORD);
    let back = copy_json(&a_as_dst, &c, &[]);
    assert_eq!(back["skipped"].as_array().unwrap().len(), 1, "{back}");
    assert_eq!(a.repo_size(), a_size);
}

/// Selection (`--host`, `--tag`, ids, `latest`) and `--dry-run`, which writes nothing.
#[test]
fn copy_selects_snapshots_and_dry_run_writes_nothing() {
    let src = source_repo(Backend::Local);
    let dst = TestEnv::init();
    let a = src.backup_stream_with("a", b"first", &["--host", "h1", "--tag", "keep"]);
    src.backup_stream_with("b", b"second", &["--host", "h2"]);
    let c = src.backup_stream_with("c", b"third", &["--host", "h2"]);
    let size = dst.repo_size();
    let plan = copy_json(&dst, &src, &["--dry-run"]);
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["copied"].as_array().unwrap().len(), 3, "{plan}");
    assert_eq!(dst.repo_size(), size, "a dry run wrote to the destination");

    let by_tag = copy_json(&dst, &src, &["--tag", "keep"]);
    assert_eq!(by_tag["copied"][0]["source"], a["id"], "{by_tag}");
    let latest = copy_json(&dst, &src, &["latest"]);
    assert_eq!(latest["copied"][0]["source"], c["id"], "{latest}");
    let rest = copy_json(&dst, &src, &["--host", "h2"]);
    assert_eq!(rest["copied"].as_array().unwrap().len(), 1, "{rest}");
    assert_eq!(rest["skipped"].as_array().unwrap().len(), 1, "{rest}");
    assert_eq!(dst.snapshots().len(), 3);
}

/// A damaged data blob in the source: the copy fails naming the blob and the source
/// snapshot, writes no snapshot, and the destination verifies clean.
#[test]
fn copy_of_damaged_source_blob_fails_cleanly() {
    let src = source_repo(Backend::Local);
    let dst = TestEnv::init();
    let data = src.path("data");
    build_tree(&data);
    src.backup(&[&data], &[]);
    // Flip bytes in the middle of the largest data pack.
    let pack = src
        .repo_files("data")
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .expect("a data pack");
    let mut bytes = fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0x5a;
    }
    fs::write(&pack, bytes).unwrap();

    let out = copy_out(&dst, &src, &[]);
    let err = assert_clean_failure(&out, &["copy"]);
    assert!(err.contains("corrupt"), "{err}");
    assert!(err.contains("source snapshot"), "{err}");
    assert!(dst.snapshots().is_empty());
    dst.ok(&["verify", "--read-data"]);
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} {pid} failed");
}

/// Stops `pid` at a moment it holds no `flock`. The local backend serialises a
/// conditional write with `flock` (SPEC.md section 4); a process stopped inside that
/// window blocks every other writer of the repository until it runs again. Failed
/// before: the test's backup hung on the copy's lock when the stop landed there.
fn stop_outside_file_locks(pid: u32) {
    for _ in 0..1000 {
        signal(pid, "-STOP");
        let locks = fs::read_to_string("/proc/locks").unwrap_or_default();
        // `flock` locks only: RocksDB's cache holds a POSIX lock for the whole run.
        let holds = locks.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&"FLOCK") && f.get(4) == Some(&pid.to_string().as_str())
        });
        if !holds {
            return;
        }
        signal(pid, "-CONT");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    panic!("process {pid} held a file lock at every one of 1000 stops");
}

/// Names in `<repo>/sessions/` of a local repository.
fn sessions(env: &TestEnv) -> Vec<String> {
    env.repo_file_names("sessions")
}

/// The copy's session marker in the source holds back the source's gc: the copy is
/// stopped (SIGSTOP) once its marker is in the source's `sessions/` and it has uploaded
/// a pack to the destination (it has listed the source again by then), the very
/// snapshot it copies is forgotten there and a gc runs, whose tombstone stays blocked,
/// so no pack the copy reads goes. Meanwhile a backup and a gc run on the destination,
/// beside the copy's writer session there. Once resumed the copy succeeds, restores
/// exactly, both repositories verify, and the source's next gc frees the data.
#[test]
fn copy_beside_backup_and_source_gc() {
    let src = source_repo(Backend::Local);
    let dst = TestEnv::init();
    let data = src.path("data");
    build_tree(&data);
    fs::write(data.join("more.bin"), random_bytes(9, 24 << 20)).unwrap();
    let snap = src.backup(&[&data], &[]);
    let snap_id = snap["id"].as_str().unwrap().to_string();
    let other = dst.path("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("file"), random_bytes(31, 3 << 20)).unwrap();

    let mut copy = copy_cmd(&dst, &src, &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        assert!(
            copy.try_wait().unwrap().is_none(),
            "the copy ended before its session marker and a pack were seen"
        );
        // Its source session is ready and the source listed again once a pack is in
        // the destination: from then on the snapshot is copied even if forgotten.
        if !sessions(&src).is_empty() && !data_packs(&dst).is_empty() {
            stop_outside_file_locks(copy.id());
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no session marker");
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    src.ok(&["forget", &snap_id]);
    let packs_before = src.repo_files("data").len();
    let gc = src.json(&["gc", "--max-unused", "0"]);
    assert!(
        !gc["report"]["tombstones_blocked"]
            .as_array()
            .unwrap()
            .is_empty(),
        "the source's gc was not held back by the copy: {gc}"
    );
    assert_eq!(src.repo_files("data").len(), packs_before, "{gc}");
    dst.ok(&["backup", s(&other)]);
    dst.ok(&["gc"]);
    signal(copy.id(), "-CONT");
    let out = copy.wait_with_output().unwrap();
    assert_success(&out, &["copy"]);

    dst.ok(&["verify", "--read-data"]);
    assert_eq!(dst.snapshots().len(), 2);
    let target = dst.path("restore");
    dst.ok(&[
        "restore",
        "latest",
        "--path",
        s(&data),
        "--target",
        s(&target),
    ]);
    assert_same_tree(&data, &restored_path(&target, &data), Compare::ALL);
    let target = dst.path("restore-other");
    dst.ok(&[
        "restore",
        "latest",
        "--path",
        s(&other),
        "--target",
        s(&target),
    ]);
    assert_same_tree(&other, &restored_path(&target, &other), Compare::CONTENT);
    assert!(sessions(&src).is_empty() && sessions(&dst).is_empty());
    let gc = src.json(&["gc"]);
    assert!(
        gc["report"]["tombstones_blocked"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{gc}"
    );
    assert!(src.repo_files("data").is_empty(), "{gc}");
    src.ok(&["verify"]);
}

/// No key for the source: a clear error naming the variables.
#[test]
fn copy_without_source_key_says_how_to_give_one() {
    let src = source_repo(Backend::Local);
    let dst = TestEnv::init();
    let mut cmd = copy_cmd(&dst, &src, &[]);
    cmd.env_remove("DPREPO_FROM_PASSWORD");
    let err = assert_clean_failure(&output_of(cmd), &["copy"]);
    assert!(err.contains("DPREPO_FROM_PASSWORD"), "{err}");
    let mut cmd = copy_cmd(&dst, &src, &[]);
    cmd.env("DPREPO_FROM_PASSWORD", "wrong");
    let err = assert_clean_failure(&output_of(cmd), &["copy"]);
    assert!(err.contains("source repository"), "{err}");
}

const PAGE: usize = 8192;

/// Overwrite 60 bytes in each of `pages` of file `rel` (a few rows of a database page).
fn touch_pages(dir: &Path, rel: &str, pages: impl IntoIterator<Item = usize>, seed: u64) {
    let path = dir.join(rel);
    let mut data = fs::read(&path).unwrap();
    for (i, page) in pages.into_iter().enumerate() {
        let at = page * PAGE + 1000 + (i * 97) % 6000;
        data[at..at + 60].copy_from_slice(&random_bytes(seed + i as u64, 60));
    }
    fs::write(&path, data).unwrap();
}

/// Page deltas survive the copy: a changed page stored as a delta in the source is a
/// delta against the copied parent's page in the destination (whether the parent was
/// copied in the same run or an earlier one), and the tar page map is kept, so the next
/// backup into the destination stores its changed pages as deltas against the copy.
#[test]
fn copy_keeps_page_deltas_and_the_page_map() {
    let src = TestEnv::init();
    let mut dst = TestEnv::new();
    dst.password = "destination password".into();
    dst.ok(&["init"]);
    let dir = src.path("pgdata");
    fs::create_dir_all(dir.join("base/5")).unwrap();
    fs::write(dir.join("base/5/1259"), random_bytes(1, 40 * PAGE)).unwrap();
    fs::write(dir.join("base/5/16397"), random_bytes(2, 120 * PAGE)).unwrap();
    let tar1 = gnu_tar(&dir);
    let first = src.backup_stream_with("base.tar", &tar1, &[]);
    touch_pages(&dir, "base/5/16397", (0..120).step_by(4), 100);
    touch_pages(&dir, "base/5/1259", 20..30, 200);
    let tar2 = gnu_tar(&dir);
    let second = src.backup_stream_with("base.tar", &tar2, &[]);
    // One delta per changed page group of 16 pages: all 8 of 16397 (its last one of 8
    // pages), group 1 of 1259.
    assert_eq!(second["summary"]["deltas_added"], 9, "{second}");

    // The parent in an earlier run: its pages are mapped through its copy.
    copy_json(&dst, &src, &[first["id"].as_str().unwrap()]);
    let copied = copy_json(&dst, &src, &[]);
    assert_eq!(copied["copied"].as_array().unwrap().len(), 1, "{copied}");
    assert_eq!(count(&copied, "deltas_added"), 9, "{copied}");
    assert!(count(&copied, "bytes_uploaded") < 30_000, "{copied}");
    assert_eq!(dst.dump("latest", "base.tar"), tar2);

    // Both in one run, into another destination.
    let other = TestEnv::init();
    let both = copy_json(&other, &src, &[]);
    assert_eq!(both["copied"].as_array().unwrap().len(), 2, "{both}");
    assert_eq!(count(&both, "deltas_added"), 9, "{both}");
    assert_eq!(other.dump("latest", "base.tar"), tar2);

    // The page map came along: a backup into the destination makes deltas.
    touch_pages(&dir, "base/5/16397", (0..120).step_by(8), 300);
    let tar3 = gnu_tar(&dir);
    let third = dst.backup_stream_with("base.tar", &tar3, &[]);
    assert_eq!(third["summary"]["deltas_added"], 8, "{third}");
    dst.ok(&["verify", "--read-data"]);
    assert_eq!(dst.dump("latest", "base.tar"), tar3);
}

/// The source's S3 settings from `--from-repo-config` alone: the destination is local
/// and the environment names no S3 server or credentials.
#[test]
fn copy_from_s3_with_its_own_repository_config() {
    let src = source_repo(Backend::S3);
    let dst = TestEnv::init();
    src.backup_stream("s.bin", &random_bytes(40, 300_000));
    let conf = dst.path("source-s3.ini");
    fs::write(
        &conf,
        format!(
            "[s3]\nendpoint = {}\nregion = us-east-1\naccess_key_id = test\n\
             secret_access_key = test\npath_style = true\n",
            s3_endpoint()
        ),
    )
    .unwrap();
    let from = src.location();
    let mut cmd = dst.cmd([
        "--json",
        "copy",
        "--from-repo",
        &from,
        "--from-repo-config",
        s(&conf),
    ]);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("DPREPO_FROM_PASSWORD", &src.password);
    let out = output_of(cmd);
    assert_success(&out, &["copy", "--from-repo-config"]);
    let doc = parse_json(&out, &["copy"]);
    assert_eq!(doc["copied"].as_array().unwrap().len(), 1, "{doc}");
    assert_eq!(dst.dump("latest", "s.bin"), random_bytes(40, 300_000));
}

/// A copy rewritten without some paths is no longer a copy of its origin: the next copy
/// copies the origin again, in full (not skipped, and not mapped through the rewritten
/// trees, which lack the removed file).
#[test]
fn copy_after_rewrite_of_the_copy_copies_again() {
    let src = source_repo(Backend::Local);
    let dst = TestEnv::init();
    let data = src.path("data");
    build_tree(&data);
    src.backup(&[&data], &[]);
    copy_json(&dst, &src, &[]);
    dst.ok(&["rewrite", "-e", "hello.txt", "--forget"]);
    let again = copy_json(&dst, &src, &[]);
    assert_eq!(again["copied"].as_array().unwrap().len(), 1, "{again}");
    let target = dst.path("restore");
    let newest = again["copied"][0]["copy"].as_str().unwrap().to_string();
    dst.ok(&["restore", &newest, "--target", s(&target)]);
    assert_same_tree(&data, &restored_path(&target, &data), Compare::ALL);
}

/// A directory of many identical small files: their chunks are copied together, and the
/// one chunk they share was read from the source once per file (the map of copied
/// chunks was consulted before the batch and filled after it). Each distinct blob is
/// read once: into an empty destination, blobs read equal blobs added.
#[test]
fn copy_of_identical_small_files_reads_each_chunk_once() {
    let src = source_repo(Backend::Local);
    let dst = TestEnv::init();
    let data = src.path("data");
    fs::create_dir_all(&data).unwrap();
    let same = random_bytes(41, 3_000);
    for i in 0..40 {
        fs::write(data.join(format!("same-{i:02}")), &same).unwrap();
    }
    fs::write(data.join("other"), random_bytes(42, 3_000)).unwrap();
    src.backup(&[&data], &[]);

    let doc = copy_json(&dst, &src, &[]);
    assert_eq!(doc["copied"].as_array().unwrap().len(), 1, "{doc}");
    let added = count(&doc, "blobs_added");
    // The trees down to `data`, and at least the two distinct contents.
    assert!(added >= data.components().count() as u64 + 2, "{doc}");
    assert_eq!(count(&doc, "blobs_read"), added, "{doc}");
    let target = dst.path("restore");
    dst.ok(&["restore", "latest", "--target", s(&target)]);
    assert_same_tree(&data, &restored_path(&target, &data), Compare::ALL);
    dst.ok(&["verify", "--read-data"]);
}

/// Data packs of a local repository (their file names; no temporary files).
fn data_packs(env: &TestEnv) -> std::collections::BTreeSet<String> {
    env.repo_files("data")
        .into_iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| !n.starts_with(".tmp-"))
        .collect()
}

/// The source for the tests of a gc in the destination beside a copy: snapshot A
/// (`sub/` with two small files), then B = A plus a large file that sorts before `sub`
/// and a new file in `sub` (so B's `sub` tree is new while its two files are A's).
/// Returns the data directory.
fn parent_and_child(src: &TestEnv) -> std::path::PathBuf {
    let data = src.path("data");
    fs::create_dir_all(data.join("sub")).unwrap();
    fs::write(data.join("sub/x.bin"), random_bytes(51, 200_000)).unwrap();
    fs::write(data.join("sub/y.txt"), text_bytes(50_000)).unwrap();
    src.backup(&[&data], &[]);
    // 40 MiB: the copy uploads a full pack (16 MiB) while it still has most of the
    // file, and `sub`, to go.
    fs::write(data.join("a-big.bin"), random_bytes(52, 40 << 20)).unwrap();
    fs::write(data.join("sub/new.txt"), b"new in B\n").unwrap();
    src.backup(&[&data], &[]);
    data
}

/// Copies A into `dst`, then starts copying B and, once the copy has uploaded a pack
/// to `dst` (its destination session is ready and it chose A's copy as parent), stops
/// it outside any flock, forgets A's copy in `dst` and runs gc there: the gc's
/// tombstone (every pack of A's copy) must be held back by the copy's session. Then
/// resumes the copy and checks it succeeded. Returns the packs of A's copy.
fn copy_child_beside_destination_gc(
    src: &TestEnv,
    dst: &TestEnv,
) -> std::collections::BTreeSet<String> {
    let snaps = src.snapshots();
    let a = snaps[0]["id"].as_str().unwrap().to_string();
    let first = copy_json(dst, src, &[&a]);
    let a_copy = first["copied"][0]["copy"].as_str().unwrap().to_string();
    let a_packs = data_packs(dst);

    let mut copy = copy_cmd(dst, src, &["--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        assert!(
            copy.try_wait().unwrap().is_none(),
            "the copy ended before it uploaded a pack to the destination"
        );
        if data_packs(dst).len() > a_packs.len() && !sessions(dst).is_empty() {
            stop_outside_file_locks(copy.id());
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no pack uploaded");
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    dst.ok(&["forget", &a_copy]);
    let gc = dst.json(&["gc", "--max-unused", "0"]);
    assert!(
        !gc["report"]["tombstones_blocked"]
            .as_array()
            .unwrap()
            .is_empty(),
        "the destination's gc was not held back by the copy's session: {gc}"
    );
    assert!(
        a_packs.is_subset(&data_packs(dst)),
        "the destination's gc deleted packs beside the copy: {gc}"
    );
    signal(copy.id(), "-CONT");
    let out = copy.wait_with_output().unwrap();
    assert_success(&out, &["copy"]);
    let doc = parse_json(&out, &["copy"]);
    assert_eq!(doc["copied"].as_array().unwrap().len(), 1, "{doc}");
    assert_eq!(
        doc["copied"][0]["parent"].as_str(),
        Some(a_copy.as_str()),
        "the copy did not use A's copy as parent: {doc}"
    );
    a_packs
}

/// The copy's writer session in the destination holds back the destination's gc. The
/// copy is stopped once it has chosen the parent's copy and uploaded to the destination;
/// the parent's copy is forgotten and a gc runs there. The copy reuses the parent
/// copy's unchanged files, whose packs that gc tombstoned: they must stay until the
/// copy's snapshot protects them. Failed before: never tested (the test above stops the
/// copy before its destination session exists).
#[test]
fn copy_beside_destination_gc_that_forgets_the_parent_copy() {
    let src = source_repo(Backend::Local);
    let dst = TestEnv::init();
    let data = parent_and_child(&src);
    copy_child_beside_destination_gc(&src, &dst);
    assert!(sessions(&dst).is_empty());
    dst.ok(&["verify", "--read-data"]);
    // The pending tombstone is processed now: what the copy reused stays.
    let gc = dst.json(&["gc"]);
    assert!(dst.repo_file_names("gc").is_empty(), "{gc}");
    dst.ok(&["verify", "--read-data"]);
    assert_eq!(dst.snapshots().len(), 1);
    let target = dst.path("restore");
    dst.ok(&["restore", "latest", "--target", s(&target)]);
    assert_same_tree(&data, &restored_path(&target, &data), Compare::ALL);
}

/// S-3 (SPEC.md section 15) for copy: with a gc tombstone pending in the destination,
/// the copy must not reuse a blob whose only location is a tombstoned pack. Here the
/// parent's copy (B's) has a `sub` tree outside the tombstone whose files' chunks lie
/// only in the tombstoned packs (B's copy reused them from A's copy while that gc was
/// held back). Copying C (B plus a root file, `sub` unchanged) once the copy's session
/// has seen the tombstone: `sub`'s files are read from the source and stored again, so
/// once B's copy is forgotten the next gc deletes every pack of A's copy. Failed
/// before 696d9a2: the copy reused `sub`'s tree after checking only the tree's own id,
/// and its snapshot kept the tombstoned packs alive (or, had a gc run beside the copy,
/// lost their blobs).
#[test]
fn copy_with_pending_tombstone_does_not_reuse_blobs_of_tombstoned_packs() {
    let src = source_repo(Backend::Local);
    let dst = TestEnv::init();
    let data = parent_and_child(&src);
    let a_packs = copy_child_beside_destination_gc(&src, &dst);
    assert!(
        !dst.repo_file_names("gc").is_empty(),
        "no tombstone pending in the destination"
    );
    let b_copy = dst.snapshots()[0]["id"].as_str().unwrap().to_string();

    fs::write(data.join("c.txt"), b"new in C\n").unwrap();
    src.backup(&[&data], &[]);
    let doc = copy_json(&dst, &src, &["latest"]);
    assert_eq!(doc["copied"][0]["parent"].as_str(), Some(b_copy.as_str()));
    // `sub/x.bin` (200 kB) and `sub/y.txt` (50 kB) were read again from the source.
    assert!(count(&doc, "bytes_read") > 250_000, "{doc}");

    dst.ok(&["forget", &b_copy]);
    let gc = dst.json(&["gc"]);
    assert!(dst.repo_file_names("gc").is_empty(), "{gc}");
    let now = data_packs(&dst);
    let left: Vec<_> = a_packs.intersection(&now).collect();
    assert!(
        left.is_empty(),
        "packs of the tombstone are still needed by the new copy: {left:?}; {gc}"
    );
    dst.ok(&["verify", "--read-data"]);
    let target = dst.path("restore");
    dst.ok(&["restore", "latest", "--target", s(&target)]);
    assert_same_tree(&data, &restored_path(&target, &data), Compare::ALL);
}

/// The repository of `env` (local), opened in this process with `password`.
async fn open_local(env: &TestEnv, password: &str) -> dprepo_repo_format::Repository {
    use dprepo_repo_format::storage::{LocalStorage, Storage};
    let storage: std::sync::Arc<dyn Storage> = std::sync::Arc::new(LocalStorage::new(&env.repo));
    dprepo_repo_format::Repository::open(storage, password.as_bytes())
        .await
        .expect("open repository")
}

/// Snapshots are chosen before the copy's session in the source exists; one forgotten
/// in between is no longer protected from the source's gc. The copy lists the source
/// again once its session is ready and reports such a snapshot as skipped (gone from
/// the source), in the dry run too, and copies the others. Failed before: the copy
/// went on with the stale choice and failed on (or, with the data still there, copied)
/// a snapshot the source had forgotten.
#[test]
fn copy_of_snapshot_forgotten_after_it_was_chosen_skips_it() {
    use dprepo_repo_format::copy::{copy_snapshots, CopyOptions, CopyProgress};
    let src = source_repo(Backend::Local);
    let dst = TestEnv::init();
    let kept = src.backup_stream("kept", &random_bytes(60, 100_000));
    let gone = src.backup_stream("gone", &random_bytes(61, 100_000));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let from = open_local(&src, SOURCE_PASSWORD).await;
        let to = open_local(&dst, PASSWORD).await;
        let chosen = from.list_snapshots().await.unwrap();
        assert_eq!(chosen.len(), 2);
        src.ok(&["forget", &gone]);
        for dry_run in [true, false] {
            let options = CopyOptions::default()
                .with_dry_run(dry_run)
                .with_connections(2);
            let progress = std::sync::Arc::new(CopyProgress::default());
            let report = copy_snapshots(&from, &to, &chosen, &options, &progress)
                .await
                .unwrap();
            let doc = serde_json::to_value(&report).unwrap();
            assert_eq!(doc["copied"].as_array().unwrap().len(), 1, "{doc}");
            assert_eq!(doc["copied"][0]["source"], kept.as_str(), "{doc}");
            assert_eq!(doc["skipped"].as_array().unwrap().len(), 1, "{doc}");
            assert_eq!(doc["skipped"][0]["source"], gone.as_str(), "{doc}");
            assert_eq!(doc["skipped"][0]["reason"], "gone_from_source", "{doc}");
            assert!(doc["skipped"][0]["existing"].is_null(), "{doc}");
        }
    });
    assert_eq!(dst.snapshots().len(), 1);
    assert_eq!(dst.dump("latest", "kept"), random_bytes(60, 100_000));
}

/// A copy that fails on its second snapshot says which snapshots it copied before the
/// error (they stay, and the next run skips them). Failed before: the error alone was
/// printed, as if nothing had been copied.
#[test]
fn copy_failing_after_some_snapshots_names_those_already_copied() {
    let src = source_repo(Backend::Local);
    let dst = TestEnv::init();
    let first = src.backup_stream("first", &random_bytes(62, 200_000));
    let before = src.repo_files("data");
    src.backup_stream("second", &random_bytes(63, 200_000));
    // Damage the second snapshot's own data pack.
    let pack = src
        .repo_files("data")
        .into_iter()
        .find(|p| !before.contains(p))
        .expect("the second snapshot's pack");
    let mut bytes = fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0x5a;
    }
    fs::write(&pack, bytes).unwrap();

    let out = copy_out(&dst, &src, &[]);
    let err = assert_clean_failure(&out, &["copy"]);
    assert!(
        err.contains("copied 1 of 2 snapshots before the error"),
        "{err}"
    );
    let copies = dst.snapshots();
    assert_eq!(copies.len(), 1);
    let copy = copies[0]["id"].as_str().unwrap();
    assert!(
        err.contains(&format!("{} as {}", &first[..8], &copy[..8])),
        "{err}"
    );
    dst.ok(&["verify", "--read-data"]);
}

/// `tag` and `snapshot expire` re-seal a source snapshot under a new id (`original`
/// naming the first one, the tree unchanged): the destination recognises its copy
/// through `copied_from` (the origin's `original` chain and tree) and adds nothing; the
/// copy keeps its own tags, and the skip says they differ. `rewrite` in the source
/// changes the tree: new content, copied. Failed before: every re-sealed snapshot was
/// copied again (deduplicated, but a new destination snapshot each time).
#[test]
fn copy_after_tagging_the_source_snapshot_adds_no_snapshot() {
    let src = source_repo(Backend::Local);
    let dst = TestEnv::init();
    let data = src.path("data");
    build_tree(&data);
    src.backup(&[&data], &["--tag", "nightly"]);
    let first = copy_json(&dst, &src, &[]);
    let copy = first["copied"][0]["copy"].as_str().unwrap().to_string();

    src.ok(&["tag", "--add", "keep"]);
    src.ok(&["snapshot", "expire", "latest", "--in", "30d"]);
    let size = dst.repo_size();
    let again = copy_json(&dst, &src, &[]);
    assert_eq!(again["copied"].as_array().unwrap().len(), 0, "{again}");
    let skipped = &again["skipped"][0];
    assert_eq!(skipped["existing"].as_str(), Some(copy.as_str()), "{again}");
    assert_eq!(skipped["reason"], "already_copied", "{again}");
    assert_eq!(skipped["tags_differ"], true, "{again}");
    assert_eq!(count(&again, "blobs_read"), 0, "{again}");
    assert_eq!(count(&again, "bytes_uploaded"), 0, "{again}");
    assert_eq!(dst.repo_size(), size, "the copy changed the destination");
    let copies = dst.snapshots();
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0]["tags"], serde_json::json!(["nightly"]));
    let text = String::from_utf8_lossy(&copy_out(&dst, &src, &[]).stdout).into_owned();
    assert!(
        text.contains(&format!("already copied as {}", &copy[..8]))
            && text.contains("its tags differ"),
        "{text}"
    );
    // A copy of the copy recognises the re-sealed source snapshot too.
    let third = TestEnv::init();
    copy_json(&third, &dst, &[]);
    let direct = copy_json(&third, &src, &[]);
    assert_eq!(direct["copied"].as_array().unwrap().len(), 0, "{direct}");

    src.ok(&["rewrite", "-e", "hello.txt", "--forget"]);
    let rewritten = copy_json(&dst, &src, &[]);
    assert_eq!(
        rewritten["copied"].as_array().unwrap().len(),
        1,
        "{rewritten}"
    );
    assert_eq!(dst.snapshots().len(), 2);
    dst.ok(&["verify", "--read-data"]);
}

/// `copy --dry-run` estimates what it would send: the distinct blobs of the snapshots
/// to copy that no snapshot already copied reaches, sized from the source's index.
/// Into an empty destination that is exactly what the copy then adds; for a child of a
/// copied snapshot, only the changed trees and the new file's chunk.
#[test]
fn copy_dry_run_estimates_what_it_would_send() {
    let src = source_repo(Backend::Local);
    let dst = TestEnv::init();
    let data = src.path("data");
    build_tree(&data);
    src.backup(&[&data], &[]);
    let plan = copy_json(&dst, &src, &["--dry-run"]);
    let blobs = count(&plan["estimate"], "blobs");
    let bytes = count(&plan["estimate"], "bytes");
    assert!(count(&plan["estimate"], "plain_bytes") > 6 << 20, "{plan}");
    let text = String::from_utf8_lossy(&copy_out(&dst, &src, &["--dry-run"]).stdout).into_owned();
    assert!(
        text.contains(&format!("would send at most {blobs} blobs")),
        "{text}"
    );
    let done = copy_json(&dst, &src, &[]);
    assert!(done.get("estimate").is_none(), "{done}");
    assert_eq!(count(&done, "blobs_added"), blobs, "{plan}\n{done}");
    let uploaded = count(&done, "bytes_uploaded");
    assert!(
        bytes.abs_diff(uploaded) < uploaded / 20,
        "estimated {bytes} bytes, uploaded {uploaded}"
    );

    fs::write(data.join("sub/new.txt"), b"a new small file\n").unwrap();
    src.backup(&[&data], &[]);
    let plan = copy_json(&dst, &src, &["--dry-run"]);
    let on_the_way = data.components().count() as u64 + 1;
    assert_eq!(count(&plan["estimate"], "blobs"), on_the_way + 1, "{plan}");
    let done = copy_json(&dst, &src, &[]);
    assert_eq!(count(&done, "blobs_added"), on_the_way + 1, "{done}");
    let plan = copy_json(&dst, &src, &["--dry-run"]);
    assert_eq!(count(&plan["estimate"], "blobs"), 0, "{plan}");
}

/// The dry run's estimate keeps the blobs it weighs in memory; past its cap it reports
/// no estimate (with the reason) instead of growing with the source, and still lists
/// what it would copy. Before, nothing bounded those sets.
#[test]
fn copy_dry_run_estimate_stops_at_its_cap_instead_of_growing() {
    use dprepo_repo_format::copy::{copy_snapshots, CopyOptions, CopyProgress};
    let src = source_repo(Backend::Local);
    let dst = TestEnv::init();
    let data = src.path("data");
    build_tree(&data);
    let snap = src.backup(&[&data], &[])["id"]
        .as_str()
        .expect("snapshot id")
        .to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let from = open_local(&src, SOURCE_PASSWORD).await;
        let to = open_local(&dst, PASSWORD).await;
        let chosen = from.list_snapshots().await.unwrap();
        let progress = std::sync::Arc::new(CopyProgress::default());
        let run = |cap: Option<usize>| {
            let mut options = CopyOptions::default()
                .with_dry_run(true)
                .with_connections(1);
            if let Some(cap) = cap {
                options = options.with_max_estimated_blobs(cap);
            }
            let (from, to, chosen, progress) = (&from, &to, &chosen, &progress);
            async move {
                let report = copy_snapshots(from, to, chosen, &options, progress)
                    .await
                    .unwrap();
                serde_json::to_value(&report).unwrap()
            }
        };
        let whole = run(None).await;
        let blobs = count(&whole["estimate"], "blobs");
        assert!(blobs > 10, "{whole}");
        let capped = run(Some(10)).await;
        assert!(capped.get("estimate").is_none(), "{capped}");
        let reason = capped["estimate_error"].as_str().unwrap_or_default();
        assert!(reason.contains("more than 10 distinct blobs"), "{capped}");
        assert_eq!(capped["copied"][0]["source"], snap.as_str(), "{capped}");
    });
    assert!(dst.snapshots().is_empty());
}
