//! Damaged or foreign bytes in storage: every command fails with one clear error line
//! naming the damaged object, never panics, and never writes wrong bytes to a restore
//! target or to stdout. A restore goes on past the files a damaged object breaks and
//! lists each of them before its error line.

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};

const MIB: usize = 1 << 20;
const FILES: u64 = 5;

/// A repository holding one snapshot of `FILES` incompressible 5 MiB files (more than one
/// data pack at the default pack size).
fn setup() -> (TestEnv, PathBuf) {
    let env = TestEnv::init();
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    for i in 0..FILES {
        fs::write(src.join(format!("f{i}")), random_bytes(300 + i, 5 * MIB)).unwrap();
    }
    env.backup(&[&src], &[]);
    assert!(
        env.repo_files("data").len() >= 2,
        "the test needs several data packs"
    );
    (env, src)
}

fn largest(files: Vec<PathBuf>) -> PathBuf {
    files
        .into_iter()
        .max_by_key(|f| fs::metadata(f).unwrap().len())
        .expect("no files")
}

/// Every file restored below `target` must be a prefix of (or equal to) its original:
/// a failed restore may stop early, but must not have written wrong bytes.
fn assert_no_wrong_bytes(src: &Path, target: &Path) {
    let restored = restored_path(target, src);
    let Ok(entries) = fs::read_dir(&restored) else {
        return;
    };
    for e in entries {
        let e = e.unwrap();
        let got = fs::read(e.path()).unwrap();
        let want = fs::read(src.join(e.file_name())).unwrap();
        assert!(
            got.len() <= want.len() && got[..] == want[..got.len()],
            "{} holds bytes that are not the original's ({} of {} bytes restored)",
            e.path().display(),
            got.len(),
            want.len()
        );
    }
}

/// `restore latest` into `target`: either it fails at once with one clean error line,
/// or (when the damage is below the first tree) it restores what it can and lists what
/// it could not. Returns the error line, or the not-restored lines joined.
fn failed_restore(env: &TestEnv, target: &Path) -> String {
    let args = ["restore", "latest", "--target", s(target)];
    let out = env.run(&args);
    if stderr(&out).lines().count() == 1 {
        return assert_clean_failure(&out, &args);
    }
    assert_incomplete_restore(&out, &args).join("\n")
}

/// `dump` of every file either gives the exact bytes or fails cleanly with one of `words`
/// in the error. Returns how many failed.
fn dump_each(env: &TestEnv, src: &Path, words: &[&str]) -> usize {
    let mut failed = 0;
    for i in 0..FILES {
        let path = src.join(format!("f{i}"));
        let args = ["dump", "latest", s(&path)];
        let out = env.run(&args);
        if out.status.success() {
            assert!(
                out.stdout == fs::read(&path).unwrap(),
                "dump of {} succeeded with wrong bytes",
                path.display()
            );
        } else {
            let line = assert_clean_failure(&out, &args);
            assert!(
                words.iter().any(|w| line.to_lowercase().contains(w)),
                "dump {}: {line}",
                path.display()
            );
            failed += 1;
        }
    }
    failed
}

#[test]
fn truncated_data_pack_fails_restore_without_writing_wrong_bytes() {
    let (env, src) = setup();
    let pack = largest(env.repo_files("data"));
    let len = fs::metadata(&pack).unwrap().len();
    let file = fs::OpenOptions::new().write(true).open(&pack).unwrap();
    file.set_len(len / 2).unwrap();

    let target = env.path("restore");
    let line = failed_restore(&env, &target);
    let pack_name = pack.file_name().unwrap().to_str().unwrap();
    assert!(
        line.contains(&pack_name[..8]) || line.contains("blob") || line.contains("pack"),
        "names the damaged object: {line}"
    );
    assert_no_wrong_bytes(&src, &target);
    assert!(
        dump_each(
            &env,
            &src,
            &["pack", "blob", "chunk", "corrupt", &pack_name[..8]]
        ) >= 1,
        "some file lives in the truncated pack"
    );
}

#[test]
fn flipped_byte_in_data_pack_is_reported_as_corrupt() {
    let (env, src) = setup();
    let pack = largest(env.repo_files("data"));
    let len = fs::metadata(&pack).unwrap().len() as usize;
    flip_byte(&pack, len / 2);

    let target = env.path("restore");
    let line = failed_restore(&env, &target);
    assert!(
        line.contains("corrupt") || line.contains("authentic"),
        "{line}"
    );
    assert_no_wrong_bytes(&src, &target);
    assert_eq!(
        dump_each(&env, &src, &["corrupt", "authentic"]),
        1,
        "exactly one file holds the damaged chunk"
    );
}

#[test]
fn missing_data_pack_is_named() {
    let (env, src) = setup();
    let pack = largest(env.repo_files("data"));
    fs::remove_file(&pack).unwrap();
    let target = env.path("restore");
    let line = failed_restore(&env, &target);
    assert!(
        line.contains(pack.file_name().unwrap().to_str().unwrap()) && line.contains("not found"),
        "{line}"
    );
    assert_no_wrong_bytes(&src, &target);
}

#[test]
fn damaged_metadata_is_reported() {
    let (env, _src) = setup();
    let meta = env.repo_files("meta");
    for pack in &meta {
        flip_byte(pack, 0);
    }
    for args in [vec!["ls", "latest"], vec!["stats"]] {
        let line = env.fail(&args);
        assert!(
            line.contains("corrupt") || line.contains("authentic"),
            "{args:?}: {line}"
        );
    }
    let line = failed_restore(&env, &env.path("t"));
    assert!(
        line.contains("corrupt") || line.contains("authentic"),
        "{line}"
    );
}

#[test]
fn damaged_snapshot_file_is_named_in_every_listing() {
    // One damaged manifest must not stop the other snapshots from being listed, backed
    // up or restored (see damaged_snapshot_file_does_not_stop_new_backups...), but every
    // listing names it on stderr.
    let (env, _src) = setup();
    let snap = env.repo_files("snapshots").pop().unwrap();
    let len = fs::metadata(&snap).unwrap().len() as usize;
    flip_byte(&snap, len / 2);
    let name = snap.file_name().unwrap().to_str().unwrap();
    for args in [
        vec!["snapshots"],
        vec!["ls", "latest"],
        vec!["--json", "snapshots"],
    ] {
        let out = env.run(&args);
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            err.contains(&name[..8]) && err.contains("corrupt"),
            "{args:?} names the damaged snapshot: {err}"
        );
    }
    // gc refuses to run: it would free the damaged snapshot's data.
    let line = env.fail(&["gc"]);
    assert!(
        line.contains(&name[..8]) && line.contains("gc will not run"),
        "{line}"
    );
}

#[test]
fn damaged_index_files_are_repairable_and_damaged_keys_fail_cleanly() {
    let (env, _src) = setup();
    let index = env.repo_files("index");
    flip_byte(
        &index[0],
        fs::metadata(&index[0]).unwrap().len() as usize / 2,
    );
    // A damaged index file must not lock the user out: commands warn and go on, verify
    // fails naming it, and repair index rebuilds the index from the pack headers. The
    // local index cache absorbed the file while it was intact, so the warning comes
    // when the index is built from storage (here: without the cache).
    env.ok(&["snapshots"]);
    let out = env.run(&["--no-cache", "snapshots"]);
    let err = stderr(&out);
    assert!(
        out.status.success() && err.contains("index") && err.contains("corrupt"),
        "{err}"
    );
    let out = env.run(&["verify"]);
    assert!(
        !out.status.success(),
        "verify must fail on a damaged index file"
    );
    env.ok(&["repair", "index"]);
    env.ok(&["verify", "--read-data"]);

    let (env, _src) = setup();
    let key = env.repo_files("keys").pop().unwrap();
    flip_byte(&key, fs::metadata(&key).unwrap().len() as usize - 1);
    env.fail(&["snapshots"]);

    let (env, _src) = setup();
    write_over(&env.repo.join("config"), b"");
    let line = env.fail(&["snapshots"]);
    assert!(line.contains("config"), "{line}");
}

#[test]
fn future_format_versions_ask_for_an_upgrade() {
    const VERSION_OFFSET: usize = 5; // after the magic "dprp" and the file type byte
    let (env, _src) = setup();
    let config = env.repo.join("config");
    let mut bytes = fs::read(&config).unwrap();
    bytes[VERSION_OFFSET] = 9;
    write_over(&config, &bytes);
    let line = env.fail(&["snapshots"]);
    assert!(
        line.contains("version") && line.contains('9') && line.contains("upgrade"),
        "{line}"
    );

    // A snapshot written by a later version: its name is the hash of its bytes, as a
    // later dprepo would have named it.
    let (env, _src) = setup();
    let snap = env.repo_files("snapshots").pop().unwrap();
    let mut bytes = fs::read(&snap).unwrap();
    bytes[VERSION_OFFSET] = 9;
    fs::remove_file(&snap).unwrap();
    let id = dprepo_repo_format::BlobId::of_stored(&bytes).to_hex();
    fs::write(env.repo.join("snapshots").join(&id), &bytes).unwrap();
    for args in [
        vec!["snapshots"],
        vec!["ls", "latest"],
        vec!["dump", &id, "x"],
    ] {
        let out = env.run(&args);
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            err.contains(&id[..8]) && err.contains("version") && err.contains("upgrade"),
            "{args:?}: {err}"
        );
    }

    let (env, _src) = setup();
    let key = env.repo_files("keys").pop().unwrap();
    let mut bytes = fs::read(&key).unwrap();
    bytes[VERSION_OFFSET] = 9;
    write_over(&key, &bytes);
    let line = env.fail(&["snapshots"]);
    assert!(
        line.contains("version") && line.contains("upgrade"),
        "{line}"
    );
}

#[test]
fn missing_index_reports_blobs_not_found() {
    let (env, src) = setup();
    for f in env.repo_files("index") {
        fs::remove_file(f).unwrap();
    }
    let target = env.path("restore");
    let line = env.fail(&["restore", "latest", "--target", s(&target)]);
    assert!(
        line.contains("not found") && (line.contains("blob") || line.contains("tree")),
        "{line}"
    );
    assert_no_wrong_bytes(&src, &target);
    let line = env.fail(&["dump", "latest", s(&src.join("f0"))]);
    assert!(line.contains("not found"), "{line}");
}

/// BUG (open, found by this suite): one damaged file in `snapshots/` makes every command
/// that lists snapshots fail, including `backup` (which lists them to choose a parent)
/// and `restore`/`dump` of other, intact snapshots given by their full id. A single
/// flipped bit in an old manifest thus stops all new directory backups and every
/// restore until someone deletes the file by hand. restic skips an unloadable snapshot
/// with a warning and loads a snapshot given by id on its own.
#[test]
fn damaged_snapshot_file_does_not_stop_new_backups_or_restores_of_other_snapshots() {
    let (env, src) = setup();
    let intact = env.snapshots()[0]["id"].as_str().unwrap().to_string();
    let damaged = env.backup_stream("other", b"a stream snapshot that will be damaged");
    let file = env.repo.join("snapshots").join(&damaged);
    flip_byte(&file, fs::metadata(&file).unwrap().len() as usize / 2);

    let f0 = s(&src.join("f0")).to_string();
    let out = env.run(&["dump", &intact, &f0]);
    assert_success(&out, &["dump", "<intact full id>", "f0"]);
    assert!(out.stdout == fs::read(&f0).unwrap());

    fs::write(src.join("new-file"), b"written after the damage").unwrap();
    let out = env.run(&["--json", "backup", s(&src)]);
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)),
        "a new backup must still be possible: {}",
        stderr(&out)
    );
    let new_id = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = env.run(&["dump", &new_id, s(&src.join("new-file"))]);
    assert_success(&out, &["dump", "<new snapshot>", "new-file"]);
    assert_eq!(out.stdout, b"written after the damage");
}
