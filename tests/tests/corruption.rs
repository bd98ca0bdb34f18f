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

/// Every file restored from `snapshot` below `target` must equal its source in `src`.
/// Returns how many files it restored.
fn restores_exact_files(env: &TestEnv, snapshot: &str, src: &Path, target: &Path) -> usize {
    env.ok(&["restore", snapshot, "--target", s(target)]);
    let restored = restored_path(target, src);
    let mut files = 0;
    for e in fs::read_dir(&restored).unwrap() {
        let e = e.unwrap();
        assert!(
            fs::read(e.path()).unwrap() == fs::read(src.join(e.file_name())).unwrap(),
            "snapshot {snapshot}: {} restores other bytes",
            e.path().display()
        );
        files += 1;
    }
    files
}

/// One flipped byte in a data pack used to poison every later snapshot: the index kept
/// offering the damaged chunk, so `backup` deduplicated against it and exited 0 with a
/// snapshot that could not be restored; `repair index` kept the damaged pack's entries
/// and `repair snapshots` found nothing to repair. Now the steps `verify --read-data`
/// names recover: `repair packs` takes the damaged chunk out of the index (keeping the
/// rest of its pack), `repair snapshots --forget` replaces every snapshot that used it,
/// and the next backup stores the chunk again. Small chunks, so the damaged chunk sits
/// below a chunk list.
#[test]
fn a_flipped_byte_in_a_data_pack_is_recovered_by_the_steps_verify_names() {
    let env = TestEnv::new();
    env.ok(&["init", "--chunker", "small"]);
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    for i in 0..FILES {
        fs::write(src.join(format!("f{i}")), random_bytes(300 + i, 5 * MIB)).unwrap();
    }
    env.backup(&[&src], &[]);
    fs::write(src.join("added"), random_bytes(400, MIB)).unwrap();
    env.backup(&[&src], &[]);
    env.backup(&[&src], &["--host", "elsewhere"]);
    let pack = largest(env.repo_files("data"));
    flip_byte(&pack, fs::metadata(&pack).unwrap().len() as usize / 2);
    let pack_name = pack
        .strip_prefix(&env.repo)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();

    let out = env.run(&["--json", "verify", "--read-data"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let damaged = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "blob_damaged")
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(damaged["object"], pack_name.as_str(), "{report}");
    assert_eq!(
        damaged["snapshots"].as_array().unwrap().len(),
        3,
        "{report}"
    );
    let steps: Vec<&str> = report["next_steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(
        steps[0].starts_with(&format!("dprepo repair packs {pack_name}"))
            && steps[1].starts_with("dprepo repair snapshots --forget"),
        "{steps:?}"
    );

    // The steps, as verify names them.
    let repaired = env.json(&["repair", "packs", &pack_name]);
    assert_eq!(
        repaired["damaged"].as_array().unwrap().len(),
        1,
        "{repaired}"
    );
    assert!(!pack.exists(), "the damaged pack is deleted");
    let snapshots = env.json(&["repair", "snapshots", "--forget"]);
    assert_eq!(
        snapshots["repaired"].as_array().unwrap().len(),
        3,
        "{snapshots}"
    );
    assert_eq!(
        snapshots["removed"].as_array().unwrap().len(),
        3,
        "{snapshots}"
    );
    let new = env.backup(&[&src], &[]);
    assert_eq!(new["warnings"], serde_json::json!([]), "{new}");
    let new_id = new["id"].as_str().unwrap().to_string();

    // Every snapshot restores, with exact bytes; the repaired ones without the damaged
    // file, the new one whole.
    let mut restored = Vec::new();
    for (i, snap) in env.snapshots().iter().enumerate() {
        let id = snap["id"].as_str().unwrap();
        let target = env.path(&format!("restore{i}"));
        restored.push(restores_exact_files(&env, id, &src, &target));
        if id == new_id {
            assert_same_tree(&src, &restored_path(&target, &src), Compare::CONTENT);
        }
    }
    assert_eq!(restored.len(), 4);
    assert!(restored.contains(&(FILES as usize + 1)), "{restored:?}");
    let report = env.json(&["verify", "--read-data"]);
    assert_eq!(report["ok"], true, "{report}");
    env.ok(&["gc"]);
}

/// A damaged chunk that no snapshot used was not named (`verify --read-data` reported
/// only that its pack's hash differs, and no repair took the chunk out of the index), yet
/// the index still offered it: backing the same file up again deduplicated against it
/// and committed a snapshot that could not be restored.
#[test]
fn a_damaged_chunk_no_snapshot_uses_is_reported_and_not_deduplicated_against() {
    let env = TestEnv::init();
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("x"), random_bytes(77, 3 * MIB)).unwrap();
    let old = env.backup(&[&src], &[]);
    env.ok(&["forget", old["id"].as_str().unwrap()]);
    let pack = largest(env.repo_files("data"));
    flip_byte(&pack, fs::metadata(&pack).unwrap().len() as usize / 2);

    let out = env.run(&["--json", "verify", "--read-data"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["kind"] == "blob_damaged"
                && p["detail"]
                    .as_str()
                    .unwrap()
                    .contains("no snapshot uses it")),
        "{report}"
    );
    env.ok(&["repair", "packs"]);
    let new = env.backup(&[&src], &["--force"]);
    let target = env.path("restore");
    assert_eq!(
        restores_exact_files(&env, new["id"].as_str().unwrap(), &src, &target),
        1
    );
}

/// With every metadata pack gone, no snapshot's root tree can be read: `repair
/// snapshots` reported "0 of 2 snapshots needed repair" and gc refused to run for good.
/// They are named as lost now, and `--forget` removes them so gc can run.
#[test]
fn repair_snapshots_names_snapshots_whose_root_tree_is_lost() {
    let (env, _src) = setup();
    env.backup_stream("stream", b"a second snapshot");
    for pack in env.repo_files("meta") {
        fs::remove_file(pack).unwrap();
    }
    env.ok(&["repair", "index"]);
    let out = env.ok(&["repair", "snapshots"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("2 of 2 snapshots needed repair") && text.contains("0 rewritten, 2 lost"),
        "{text}"
    );
    let line = env.fail(&["gc"]);
    assert!(line.contains("repair snapshots --forget"), "{line}");
    let report = env.json(&["repair", "snapshots", "--forget"]);
    assert_eq!(report["removed"].as_array().unwrap().len(), 2, "{report}");
    assert!(env.snapshots().is_empty());
    env.ok(&["gc"]);
}

/// A damaged snapshot file blocked gc, and gc's advice ("forget or restore that file")
/// led nowhere: `forget` knew only readable snapshots and said "no such snapshot". It
/// now takes the file's name, or a unique prefix, and gc's message names the command;
/// `repair snapshots` names such files and `--forget` removes them.
#[test]
fn a_damaged_snapshot_file_can_be_forgotten_as_gc_advises() {
    let (env, _src) = setup();
    let mut damaged: Vec<String> = (0..3)
        .map(|i| env.backup_stream(&format!("s{i}"), format!("stream {i}").as_bytes()))
        .collect();
    for id in &damaged {
        let file = env.repo.join("snapshots").join(id);
        flip_byte(&file, fs::metadata(&file).unwrap().len() as usize / 2);
    }
    damaged.sort();

    // gc names the first damaged file and the command that removes it.
    let line = env.fail(&["gc"]);
    let advised = line
        .split('`')
        .find(|part| part.starts_with("dprepo forget "))
        .unwrap_or_else(|| panic!("gc names no forget command: {line}"));
    assert_eq!(advised, format!("dprepo forget {}", damaged[0]), "{line}");
    let args: Vec<&str> = advised.split_whitespace().skip(1).collect();
    let out = env.ok(&args);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&damaged[0]),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // By a unique prefix.
    let removed = env.json(&["forget", &damaged[1][..12]]);
    assert_eq!(
        removed["removed_files"],
        serde_json::json!([format!("snapshots/{}", damaged[1])]),
        "{removed}"
    );
    // repair snapshots names the last one and offers to remove it.
    let out = env.ok(&["repair", "snapshots"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains(&damaged[2]) && text.contains("--forget"),
        "{text}"
    );
    let report = env.json(&["repair", "snapshots", "--forget"]);
    assert_eq!(
        report["removed_files"],
        serde_json::json!([format!("snapshots/{}", damaged[2])]),
        "{report}"
    );
    assert_eq!(env.repo_file_names("snapshots").len(), 1);
    env.ok(&["gc"]);
}

/// `init` over a repository whose config was lost succeeded: it wrote a second master
/// key and a new config, orphaning every pack and snapshot for good; and the error for
/// the missing config advised exactly that ("create one with `dprepo init`"). Now the
/// error asks for the config back and init refuses, naming what it found; with the
/// config put back the repository is whole. Key files alone (an init that died before
/// its config) are refused too, after init has waited for a concurrent one.
#[test]
fn init_refuses_a_location_holding_a_repository_without_its_config() {
    let (env, src) = setup();
    let config = fs::read(env.repo.join("config")).unwrap();
    fs::remove_file(env.repo.join("config")).unwrap();
    let keys = env.repo_file_names("keys");

    let line = env.fail(&["snapshots"]);
    assert!(
        line.contains("config is missing")
            && line.contains("put a copy of the config back")
            && !line.contains("create one"),
        "{line}"
    );
    let line = env.fail(&["init"]);
    assert!(
        line.contains("no config") && line.contains("data/") && line.contains("snapshots/"),
        "{line}"
    );
    assert!(!env.repo.join("config").exists(), "init wrote a config");
    assert_eq!(env.repo_file_names("keys"), keys, "init wrote a key");

    fs::write(env.repo.join("config"), &config).unwrap();
    assert_eq!(env.snapshots().len(), 1);
    let f0 = s(&src.join("f0")).to_string();
    assert!(env.dump("latest", &f0) == fs::read(&f0).unwrap());

    // Only key files: an init that died between its key and its config.
    let other = TestEnv::new();
    fs::create_dir_all(other.repo.join("keys")).unwrap();
    fs::copy(
        env.repo.join("keys").join(&keys[0]),
        other.repo.join("keys").join(&keys[0]),
    )
    .unwrap();
    let line = other.fail(&["snapshots"]);
    assert!(line.contains("no repository"), "{line}");
    let line = other.fail(&["init"]);
    assert!(line.contains("keys/ holds 1 file"), "{line}");
    // An empty directory is fine.
    let empty = TestEnv::new();
    fs::create_dir_all(empty.repo.join("keys")).unwrap();
    empty.ok(&["init"]);
}

/// With the newest snapshot's file damaged, `latest` silently meant an older snapshot:
/// a restore of "latest" restored yesterday's data without saying so (the listing
/// warning names the damaged file, not what `latest` became). Now stderr and `--json`
/// say which snapshot `latest` fell back to and that the unreadable one may be newer.
#[test]
fn latest_says_when_it_falls_back_past_an_unreadable_snapshot_file() {
    let (env, src) = setup();
    let older = env.snapshots()[0]["id"].as_str().unwrap().to_string();
    let newest = env.backup_stream("later", b"the newest snapshot");
    let file = env.repo.join("snapshots").join(&newest);
    flip_byte(&file, fs::metadata(&file).unwrap().len() as usize / 2);

    let says_so = |text: &str| {
        text.contains("`latest` is snapshot")
            && text.contains(&older[..8])
            && text.contains(&newest)
            && text.contains("may be newer")
    };
    let target = env.path("restore");
    let out = env.run(&["--json", "restore", "latest", "--target", s(&target)]);
    assert_success(&out, &["restore", "latest"]);
    assert!(says_so(&stderr(&out)), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["snapshot"], older.as_str());
    assert!(
        doc["warnings"]
            .as_array()
            .is_some_and(|w| w.iter().any(|w| says_so(w.as_str().unwrap_or("")))),
        "{doc}"
    );
    let doc = env.json(&["ls", "latest"]);
    assert!(
        doc["warnings"]
            .as_array()
            .is_some_and(|w| w.iter().any(|w| says_so(w.as_str().unwrap_or("")))),
        "{doc}"
    );
    let out = env.run(&["dump", "latest", s(&src.join("f0"))]);
    assert_success(&out, &["dump", "latest"]);
    assert!(says_so(&stderr(&out)), "{}", stderr(&out));
    // A snapshot named by id needs no such warning.
    let out = env.run(&["dump", &older, s(&src.join("f0"))]);
    assert!(!stderr(&out).contains("`latest`"), "{}", stderr(&out));
}
