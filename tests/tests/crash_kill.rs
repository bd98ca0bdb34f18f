//! Crash safety of the real binary: `dprepo backup` and `dprepo gc` are killed with
//! SIGKILL at seeded pseudo-random moments, alone or while running together.
//!
//! Every backup is of a distinct, deterministic version of one source tree and carries
//! the tag `v<version>`, so the tree each snapshot must restore to is known from its
//! tags. After every kill, with no dprepo process alive:
//! - `snapshots --json` works, and every listed snapshot restores byte-exact to its
//!   version;
//! - a new backup and a gc succeed.
//!
//! The gc that is killed is `forget --keep-last 1 --prune --max-unused 0`, so it always
//! has snapshots to remove and packs to delete and rewrite.
//!
//! A killed process leaves state behind that would block later runs for 30 minutes:
//! the gc lease `locks/gc` (the next gc fails with "busy" until it expires) and the
//! writer's session marker in `sessions/` (every gc tombstone stays blocked, so gc frees
//! nothing). The test removes both when no dprepo process is alive, as an operator
//! would, and counts how often the lease made the next gc fail.

mod common;

use common::*;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;
use std::process::{Child, Output};
use std::time::{Duration, Instant};

const TRIALS: u64 = 25;
/// Files of the source tree (some absent in a given version).
const FILES: u64 = 24;
/// Kill delays counted from the start of the process are drawn from 0..=this; most of
/// the first ~150 ms go to key derivation.
const MAX_KILL_DELAY_MS: u64 = 300;
/// Kill delays counted from the moment the work starts (session marker or gc lease
/// visible) are drawn from 0..=this: a gc of this repository takes about that long.
const MAX_KILL_DELAY_AFTER_START_MS: u64 = 120;
/// Snapshots kept between trials, so checking all of them stays cheap.
const KEEP_LAST: &str = "1";

/// One file of a tree version: random bytes from `base`, with 4 KiB replaced at an
/// offset drawn from `patch` (0: unpatched), so edits keep most chunks deduplicable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileSpec {
    base: u64,
    len: usize,
    patch: u64,
}

impl FileSpec {
    fn bytes(&self) -> Vec<u8> {
        let mut data = random_bytes(self.base, self.len);
        if self.patch != 0 && !data.is_empty() {
            let at = (self.patch % data.len() as u64) as usize;
            let end = (at + 4096).min(data.len());
            let patch = random_bytes(self.patch, end - at);
            data[at..end].copy_from_slice(&patch);
        }
        data
    }
}

fn file_name(k: u64) -> String {
    format!("{}/f{k:02}.bin", ["a", "b", "b/c"][(k % 3) as usize])
}

/// The files of `version`: version 0 is drawn fresh, each later version edits, adds
/// and deletes some files of the one before (a few MiB in all, some files > 1 MiB).
fn version_files(version: u64) -> BTreeMap<String, FileSpec> {
    let mut files = BTreeMap::new();
    for v in 0..=version {
        let mut rng = XorShift::new(0xC0FF_EE00 + v);
        for k in 0..FILES {
            let name = file_name(k);
            let roll = rng.below(100);
            let fresh = |rng: &mut XorShift| FileSpec {
                base: rng.next_u64() | 1,
                len: if rng.below(4) == 0 {
                    (1 << 20) + rng.below(1 << 20) as usize
                } else {
                    1 + rng.below(400 << 10) as usize
                },
                patch: 0,
            };
            match files.get_mut(&name) {
                None if v == 0 && roll < 80 || v > 0 && roll < 15 => {
                    files.insert(name, fresh(&mut rng));
                }
                Some(_) if v > 0 && roll < 8 => {
                    files.remove(&name);
                }
                Some(spec) if v > 0 && roll < 40 => spec.patch = rng.next_u64() | 1,
                Some(spec) if v > 0 && roll < 45 => *spec = fresh(&mut rng),
                _ => {}
            }
        }
    }
    files
}

/// Bring the tree at `src` from `current` to `version`, touching only changed files.
fn write_version(
    src: &Path,
    current: &mut BTreeMap<String, FileSpec>,
    version: u64,
) -> TreeManifest {
    let wanted = version_files(version);
    for name in current.keys().filter(|n| !wanted.contains_key(*n)) {
        fs::remove_file(src.join(name)).expect("delete file");
    }
    for (name, spec) in &wanted {
        if current.get(name) != Some(spec) {
            let path = src.join(name);
            fs::create_dir_all(path.parent().expect("parent")).expect("create dir");
            fs::write(&path, spec.bytes()).expect("write file");
        }
    }
    *current = wanted;
    tree_manifest(src)
}

/// Wait until `ready()` holds or `child` has exited (at most 10 s).
fn wait_for(child: &mut Child, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !ready() && child.try_wait().expect("poll child").is_none() {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// What a child did: finished by itself (with its output) or was killed.
enum Fate {
    Finished(Output),
    Killed,
}

/// Send SIGKILL unless `child` already exited (it may exit on its own meanwhile).
fn kill_child(child: &mut Child) {
    if child.try_wait().expect("poll child").is_none() {
        let _ = child.kill();
    }
}

/// Wait for `child`: it finished by itself, or died of a signal (our SIGKILL).
fn reap(child: Child) -> Fate {
    let out = child.wait_with_output().expect("reap child");
    if out.status.code().is_some() {
        Fate::Finished(out)
    } else {
        Fate::Killed
    }
}

fn describe(what: &str, out: &Output) -> String {
    format!("{what}: exit {} stderr: {}", out.status, stderr(out).trim())
}

/// `snapshots --json` works and every listed snapshot restores byte-exact to the
/// version its tag names; problems go to `failures`. Returns the number of snapshots
/// checked, or `None` if they could not even be listed.
fn check_snapshots(
    env: &TestEnv,
    src: &Path,
    expected: &HashMap<String, TreeManifest>,
    what: &str,
    failures: &mut Vec<String>,
) -> Option<usize> {
    let out = env.run(&["--json", "snapshots"]);
    if !out.status.success() {
        failures.push(describe(&format!("{what}: snapshots"), &out));
        return None;
    }
    let snapshots: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).expect("snapshots --json is valid JSON");
    for snap in &snapshots {
        let id = snap["id"].as_str().expect("snapshot id");
        let tags: Vec<&str> = snap["tags"]
            .as_array()
            .map(|t| t.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        let Some(tree) = tags.iter().find_map(|t| expected.get(*t)) else {
            failures.push(format!("{what}: snapshot {id} has unknown tags {tags:?}"));
            continue;
        };
        let target = env.path("restore");
        let out = env.run(&["restore", id, "--target", s(&target)]);
        if !out.status.success() {
            failures.push(describe(
                &format!("{what}: restore of snapshot {id} {tags:?}"),
                &out,
            ));
        } else {
            let diffs = manifest_diff(tree, &tree_manifest(&restored_path(&target, src)));
            if !diffs.is_empty() {
                failures.push(format!(
                    "{what}: snapshot {id} {tags:?} restores differently:\n    {}",
                    diffs.join("\n    ")
                ));
            }
        }
        let _ = fs::remove_dir_all(&target);
    }
    Some(snapshots.len())
}

#[test]
fn killed_backups_and_gcs_leave_a_consistent_repository() {
    let started = Instant::now();
    let env = TestEnv::init();
    let src = env.path("src");
    fs::create_dir(&src).expect("create source dir");
    let mut current = BTreeMap::new();
    let mut expected: HashMap<String, TreeManifest> = HashMap::new();
    let mut failures: Vec<String> = Vec::new();
    let (mut backups_killed, mut gcs_killed, mut leases_left, mut lease_busy) = (0, 0, 0, 0);
    let mut sessions_left = 0;
    let mut restores = 0;

    // Version 0 as a first snapshot, so gc has something to keep from the start.
    expected.insert("v0".into(), write_version(&src, &mut current, 0));
    env.ok(&["backup", s(&src), "--tag", "v0"]);

    for trial in 0..TRIALS {
        let mut rng = XorShift::new(0xDEAD_0000 + trial);
        let version = trial + 1;
        let tag = format!("v{version}");
        expected.insert(tag.clone(), write_version(&src, &mut current, version));

        // 0: backup alone, 1: gc alone, 2: both at once.
        let mode = rng.below(3);
        let force = rng.below(3) == 0;
        let (kill_backup, kill_gc) = match (mode, rng.below(3)) {
            (0, _) => (true, false),
            (1, _) => (false, true),
            (_, 0) => (true, false),
            (_, 1) => (false, true),
            _ => (true, true),
        };
        // The delay counts from the start of the process, or (to land more kills in
        // the middle of the work rather than in key derivation) from the moment the
        // backup's session marker or the gc lease appears.
        let anchor_on_work = rng.below(3) != 0;
        let delay = Duration::from_millis(if anchor_on_work {
            rng.below(MAX_KILL_DELAY_AFTER_START_MS + 1)
        } else {
            rng.below(MAX_KILL_DELAY_MS + 1)
        });
        let mut backup_args = vec!["--json", "backup", s(&src), "--tag", &tag];
        if force {
            backup_args.push("--force");
        }
        // The gc role: forget old snapshots, then gc (the same `gc::run` as `dprepo gc`),
        // so the gc always has packs to delete and rewrite.
        let gc_args = [
            "--json",
            "forget",
            "--keep-last",
            KEEP_LAST,
            "--prune",
            "--max-unused",
            "0",
        ];
        let gc_first = rng.below(2) == 0;
        let mut gc = (mode >= 1 && gc_first).then(|| env.spawn(&gc_args));
        let mut backup = (mode != 1).then(|| env.spawn(&backup_args));
        if mode >= 1 && gc.is_none() {
            gc = Some(env.spawn(&gc_args));
        }
        if anchor_on_work {
            let sessions = env.repo.join("sessions");
            let lease = env.repo.join("locks/gc");
            match (backup.as_mut(), gc.as_mut()) {
                (Some(child), _) if kill_backup => wait_for(child, || {
                    fs::read_dir(&sessions).is_ok_and(|mut rd| {
                        rd.any(|e| {
                            e.is_ok_and(|e| !e.file_name().to_string_lossy().starts_with(".tmp-"))
                        })
                    })
                }),
                (_, Some(child)) => wait_for(child, || lease.exists()),
                _ => {}
            }
        }
        std::thread::sleep(delay);
        let what = format!(
            "trial {trial} (mode {mode}, delay {delay:?} from {}, kill backup {kill_backup}, kill gc {kill_gc})",
            if anchor_on_work { "work start" } else { "spawn" }
        );
        // Kill first, then wait for the processes left to finish.
        let finish = |child: Option<Child>, kill: bool| {
            child.map(|mut c| {
                if kill {
                    kill_child(&mut c);
                }
                reap(c)
            })
        };
        let (backup_fate, gc_fate) = if kill_gc {
            let g = finish(gc, kill_gc);
            (finish(backup, kill_backup), g)
        } else {
            let b = finish(backup, kill_backup);
            (b, finish(gc, kill_gc))
        };
        // What ran to its end must have succeeded.
        match &backup_fate {
            Some(Fate::Finished(out)) if !out.status.success() => {
                failures.push(describe(&format!("{what}: backup"), out))
            }
            Some(Fate::Killed) => backups_killed += 1,
            _ => {}
        }
        match &gc_fate {
            Some(Fate::Finished(out)) if !out.status.success() => {
                failures.push(describe(&format!("{what}: gc"), out))
            }
            Some(Fate::Killed) => gcs_killed += 1,
            _ => {}
        }

        // No dprepo process of this test is alive now. The repository must be usable.
        match check_snapshots(&env, &src, &expected, &what, &mut failures) {
            Some(n) => restores += n,
            None => break,
        }

        // A killed gc leaves its lease; the next gc would fail with "busy" for 30
        // minutes. Observe that, then remove the lease: no gc process is alive.
        if env.repo.join("locks/gc").exists() {
            leases_left += 1;
            // Observing it twice is enough to show the behaviour; it costs a run.
            if leases_left <= 2 {
                let out = env.run(&["gc", "--max-unused", "0"]);
                if !out.status.success() && stderr(&out).contains("busy") {
                    lease_busy += 1;
                }
            }
            let _ = fs::remove_file(env.repo.join("locks/gc"));
        }
        // A killed backup leaves its session marker, which blocks every tombstone for
        // 30 minutes; no backup process is alive, so it is stale.
        let sessions = env.repo_file_names("sessions");
        sessions_left += sessions.len();
        for name in sessions {
            let _ = fs::remove_file(env.repo.join("sessions").join(name));
        }

        // A new backup (of the same version) and a gc succeed.
        let out = env.run(&["backup", s(&src), "--tag", &tag]);
        if !out.status.success() {
            failures.push(describe(&format!("{what}: backup after the kill"), &out));
        }
        let out = env.run(&["gc", "--max-unused", "0"]);
        if !out.status.success() {
            failures.push(describe(&format!("{what}: gc after the kill"), &out));
        }
    }

    // Finally, with nothing killed since the last check: everything still restores,
    // and the last gc processed every tombstone.
    if let Some(n) = check_snapshots(&env, &src, &expected, "at the end", &mut failures) {
        restores += n;
    }
    if !env.repo_file_names("gc").is_empty() {
        failures.push(format!(
            "tombstones left after the final gc: {:?}",
            env.repo_file_names("gc")
        ));
    }
    eprintln!(
        "crash_kill: {TRIALS} trials, {backups_killed} backups and {gcs_killed} gcs killed, \
         {restores} restores checked; a killed gc left its lease {leases_left} times (the next \
         gc, tried {} times, failed with busy {lease_busy} times); {sessions_left} session markers left by \
         killed backups; {:.1}s",
        leases_left.min(2),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

/// A killed writer leaves its temporary file behind (`.tmp-<pid>-<n>-<ns>` beside the
/// object it was writing). gc never removed them (10 files, about 11 MB after 15
/// killed backups) and verify did not mention them. gc now removes those not written
/// for 30 minutes, the time after which it also takes a silent writer for dead, and
/// keeps younger ones, which may belong to a write in progress; verify counts them.
#[test]
fn gc_removes_the_temporary_files_of_killed_writers_once_they_are_old() {
    let env = TestEnv::init();
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), random_bytes(5, 100_000)).unwrap();
    env.backup(&[&src], &[]);
    let pack_dir = env.repo_files("data")[0].parent().unwrap().to_path_buf();
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let abandoned = [
        pack_dir.join(".tmp-4242-0-1"),
        env.repo.join("index/.tmp-4242-1-2"),
        env.repo.join("snapshots/.tmp-4242-2-3"),
        env.repo.join(".tmp-4242-3-4"),
    ];
    for (i, path) in abandoned.iter().enumerate() {
        fs::write(path, random_bytes(i as u64, 250_000)).unwrap();
        let file = fs::File::options().write(true).open(path).unwrap();
        file.set_modified(hour_ago).unwrap();
    }
    let in_progress = pack_dir.join(".tmp-4343-0-5");
    fs::write(&in_progress, random_bytes(9, 1000)).unwrap();

    let verify = env.json(&["verify"]);
    assert_eq!(verify["ok"], true, "{verify}");
    assert_eq!(
        verify["temporary_files"].as_array().map(Vec::len),
        Some(5),
        "{verify}"
    );
    let text = String::from_utf8_lossy(&env.ok(&["verify"]).stdout).into_owned();
    assert!(text.contains("5 temporary files"), "{text}");

    let dry = env.json(&["gc", "--dry-run"]);
    assert_eq!(
        dry["plan"]["stale_temporary_files"]
            .as_array()
            .map(Vec::len),
        Some(4),
        "{dry}"
    );
    assert!(
        abandoned.iter().all(|p| p.exists()),
        "a dry run removed a file"
    );
    let gc = env.json(&["gc"]);
    assert_eq!(gc["report"]["temporary_files_removed"], 4, "{gc}");
    assert_eq!(gc["report"]["temporary_bytes_freed"], 1_000_000, "{gc}");
    for path in &abandoned {
        assert!(!path.exists(), "{} is still there", path.display());
    }
    assert!(
        in_progress.exists(),
        "gc removed a temporary file a writer may be using"
    );
    let verify = env.json(&["verify"]);
    assert_eq!(
        verify["temporary_files"].as_array().map(Vec::len),
        Some(1),
        "{verify}"
    );
    env.ok(&["restore", "latest", "--target", s(&env.path("restore"))]);
}
