//! Garbage collection racing backups from other processes.
//!
//! `gc_beside_concurrent_backups_keeps_every_snapshot_restorable`: three writer
//! processes loop: mutate their own source tree (seeded, so every run does the same
//! work), back it up under their own host name. Meanwhile a gc loop forgets all but the
//! two newest snapshots of each host and runs `gc --max-unused 0` (every pack with an
//! unused byte is rewritten, so packs move under the writers' feet), a second gc loop
//! contends for the lease, and readers loop `snapshots`. Content is shared across
//! writers and versions, so deduplication keeps referencing packs gc is working on.
//! Checked: every backup, forget, gc (but for "busy") and reader succeeds; after a final
//! gc every remaining snapshot restores byte-exact to the tree it was taken of; the two
//! newest snapshots of each host survive; nothing is left in `gc/` or `sessions/`.
//!
//! The other tests force one interleaving each (a backup stopped with SIGSTOP at a
//! chosen point, or held open by its stdin) and are named after the failure they catch.
//! The last two race repair commands against gc: many rounds of a gc and a repair
//! started a few milliseconds apart, and a gc stopped while it holds the lease.

mod common;

use common::*;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WRITERS: usize = 3;
const ITERATIONS: usize = 12;
/// Files shared by all writers (identical bytes), so deduplication crosses writers.
const POOL_FILES: u64 = 6;
const POOL_FILE_LEN: usize = 1_500_000;
const KEEP_LAST: usize = 2;
/// Processes looping `snapshots` beside the writers.
const READERS: usize = 2;

/// One writer's source tree and the deterministic edits applied to it.
struct Writer {
    src: PathBuf,
    rng: XorShift,
    files: Vec<String>,
    next_name: u64,
}

impl Writer {
    fn new(src: PathBuf, seed: u64) -> Writer {
        fs::create_dir_all(&src).expect("create source dir");
        for d in ["a", "b", "b/c"] {
            fs::create_dir_all(src.join(d)).expect("create subdir");
        }
        Writer {
            src,
            rng: XorShift::new(seed),
            files: Vec::new(),
            next_name: 0,
        }
    }

    fn below(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n
    }

    /// New file content: small or large private data, or a pool file (whole, or with a
    /// private prefix so only its later chunks deduplicate).
    fn content(&mut self, pool: &[Vec<u8>]) -> Vec<u8> {
        let seed = self.rng.next_u64();
        match self.below(6) {
            0 | 1 => {
                let len = 1 + self.below(64 << 10) as usize;
                random_bytes(seed, len)
            }
            2 => {
                let len = (1 << 20) + 1 + self.below(3 << 19) as usize;
                random_bytes(seed, len)
            }
            3 | 4 => pool[self.below(POOL_FILES) as usize].clone(),
            _ => {
                let mut v = random_bytes(seed, 1 + self.below(4096) as usize);
                v.extend_from_slice(&pool[self.below(POOL_FILES) as usize]);
                v
            }
        }
    }

    fn add_file(&mut self, pool: &[Vec<u8>]) {
        let dir = ["", "a/", "b/", "b/c/"][self.below(4) as usize];
        let name = format!("{dir}f{:03}.bin", self.next_name);
        self.next_name += 1;
        let data = self.content(pool);
        fs::write(self.src.join(&name), data).expect("write file");
        self.files.push(name);
    }

    fn modify_file(&mut self) {
        let i = self.below(self.files.len() as u64) as usize;
        let name = self.files[i].clone();
        let path = self.src.join(&name);
        let mut data = fs::read(&path).expect("read file to modify");
        let patch = random_bytes(self.rng.next_u64(), 1 + self.below(8192) as usize);
        match self.below(3) {
            0 => data.extend_from_slice(&patch),
            1 => data.truncate(data.len() / 2),
            _ => {
                let at = self.below(data.len() as u64 + 1) as usize;
                let end = (at + patch.len()).min(data.len());
                data.splice(at..end, patch);
            }
        }
        fs::write(&path, data).expect("rewrite file");
    }

    fn delete_file(&mut self) {
        let i = self.below(self.files.len() as u64) as usize;
        let name = self.files.swap_remove(i);
        fs::remove_file(self.src.join(name)).expect("delete file");
    }

    /// The edits of one iteration: a fresh tree first, then a few random edits.
    fn mutate(&mut self, iteration: usize, pool: &[Vec<u8>]) {
        if iteration == 0 {
            for _ in 0..8 {
                self.add_file(pool);
            }
            return;
        }
        for _ in 0..3 {
            match self.below(3) {
                0 => self.add_file(pool),
                1 if self.files.len() > 3 => self.delete_file(),
                _ => self.modify_file(),
            }
        }
    }
}

/// A backup that succeeded: which writer took it and the tree it was taken of.
struct Recorded {
    writer: usize,
    iteration: usize,
    tree: TreeManifest,
}

fn is_busy(out: &Output) -> bool {
    stderr(out).contains("busy")
}

fn describe(what: &str, out: &Output) -> String {
    format!("{what}: exit {} stderr: {}", out.status, stderr(out).trim())
}

#[test]
fn gc_beside_concurrent_backups_keeps_every_snapshot_restorable() {
    let started = Instant::now();
    let env = TestEnv::init();
    let pool: Vec<Vec<u8>> = (0..POOL_FILES)
        .map(|k| random_bytes(9_000 + k, POOL_FILE_LEN))
        .collect();
    let hosts: Vec<String> = (0..WRITERS).map(|w| format!("writer{w}")).collect();

    let recorded: Mutex<HashMap<String, Recorded>> = Mutex::new(HashMap::new());
    // Snapshot ids of each writer in commit order.
    let order: Mutex<Vec<Vec<String>>> = Mutex::new(vec![Vec::new(); WRITERS]);
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let writers_done = AtomicBool::new(false);
    let gc_runs = AtomicU64::new(0);
    let gc_busy = AtomicU64::new(0);
    let reader_runs = AtomicU64::new(0);
    let packs_deleted = AtomicU64::new(0);
    let packs_rewritten = AtomicU64::new(0);
    let tombstones_blocked = AtomicU64::new(0);

    // Parse a successful gc --json report into the counters.
    let count_gc = |out: &Output| {
        gc_runs.fetch_add(1, Ordering::Relaxed);
        if let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
            let report = &doc["report"];
            let n = |k: &str| report[k].as_u64().unwrap_or(0);
            packs_deleted.fetch_add(n("packs_deleted"), Ordering::Relaxed);
            packs_rewritten.fetch_add(n("packs_rewritten"), Ordering::Relaxed);
            let blocked = report["tombstones_blocked"].as_array().map_or(0, Vec::len);
            tombstones_blocked.fetch_add(blocked as u64, Ordering::Relaxed);
        }
    };

    std::thread::scope(|scope| {
        let writer_handles: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (env, pool, host) = (&env, &pool, &hosts[w]);
                let (recorded, order, failures) = (&recorded, &order, &failures);
                scope.spawn(move || {
                    let src = env.path(&format!("src{w}"));
                    let mut writer = Writer::new(src.clone(), 0x5eed_0000 + w as u64);
                    for i in 0..ITERATIONS {
                        writer.mutate(i, pool);
                        let tree = tree_manifest(&src);
                        let tag = format!("i{i}");
                        let out =
                            env.run(&["--json", "backup", s(&src), "--host", host, "--tag", &tag]);
                        if !out.status.success() {
                            failures
                                .lock()
                                .unwrap()
                                .push(describe(&format!("writer {w} backup {i}"), &out));
                            continue;
                        }
                        let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
                            .unwrap_or_else(|e| panic!("backup --json output ({e})"));
                        let warnings = doc["warnings"].as_array().map_or(0, Vec::len);
                        if warnings != 0 {
                            failures.lock().unwrap().push(format!(
                                "writer {w} backup {i} had warnings: {}",
                                doc["warnings"]
                            ));
                        }
                        let id = doc["id"].as_str().expect("snapshot id").to_string();
                        order.lock().unwrap()[w].push(id.clone());
                        recorded.lock().unwrap().insert(
                            id,
                            Recorded {
                                writer: w,
                                iteration: i,
                                tree,
                            },
                        );
                    }
                })
            })
            .collect();

        // Forget + gc loop.
        let forget_and_gc = scope.spawn(|| {
            while !writers_done.load(Ordering::Relaxed) {
                for host in &hosts {
                    let keep = KEEP_LAST.to_string();
                    let out = env.run(&["forget", "--keep-last", &keep, "--host", host]);
                    if !out.status.success() {
                        failures
                            .lock()
                            .unwrap()
                            .push(describe(&format!("forget --host {host}"), &out));
                    }
                }
                let out = env.run(&["--json", "gc", "--max-unused", "0"]);
                if out.status.success() {
                    count_gc(&out);
                } else if is_busy(&out) {
                    gc_busy.fetch_add(1, Ordering::Relaxed);
                } else {
                    failures
                        .lock()
                        .unwrap()
                        .push(describe("gc (forget loop)", &out));
                }
            }
        });
        // A second gc loop: contends for the lease, and runs gc at other moments.
        let contender = scope.spawn(|| {
            while !writers_done.load(Ordering::Relaxed) {
                let out = env.run(&["--json", "gc", "--max-unused", "0"]);
                if out.status.success() {
                    count_gc(&out);
                } else if is_busy(&out) {
                    gc_busy.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(20));
                } else {
                    failures
                        .lock()
                        .unwrap()
                        .push(describe("gc (contender)", &out));
                }
            }
        });
        // Readers: opening the repository (which loads every index file) must work
        // while gc rewrites index files.
        let readers: Vec<_> = (0..READERS)
            .map(|r| {
                let (env, writers_done, reader_runs, failures) =
                    (&env, &writers_done, &reader_runs, &failures);
                scope.spawn(move || {
                    while !writers_done.load(Ordering::Relaxed) {
                        let out = env.run(&["--json", "snapshots"]);
                        reader_runs.fetch_add(1, Ordering::Relaxed);
                        if !out.status.success() {
                            failures
                                .lock()
                                .unwrap()
                                .push(describe(&format!("snapshots (reader {r})"), &out));
                        }
                    }
                })
            })
            .collect();
        for h in writer_handles {
            h.join().expect("writer thread");
        }
        writers_done.store(true, Ordering::Relaxed);
        forget_and_gc.join().expect("gc thread");
        contender.join().expect("contender thread");
        for r in readers {
            r.join().expect("reader thread");
        }
    });
    let race_secs = started.elapsed().as_secs_f64();

    // Everything is stopped: a final gc processes every pending tombstone.
    for host in &hosts {
        env.ok(&[
            "forget",
            "--keep-last",
            &KEEP_LAST.to_string(),
            "--host",
            host,
        ]);
    }
    let final_gc = env.json(&["gc", "--max-unused", "0"]);
    let mut failures = failures.into_inner().unwrap();
    let recorded = recorded.into_inner().unwrap();
    let order = order.into_inner().unwrap();
    if !env.repo_file_names("gc").is_empty() || !env.repo_file_names("sessions").is_empty() {
        failures.push(format!(
            "after the final gc with no writer running, left over: tombstones {:?}, sessions {:?}; report {}",
            env.repo_file_names("gc"),
            env.repo_file_names("sessions"),
            final_gc["report"]
        ));
    }

    let snapshots = env.snapshots();
    let listed: Vec<String> = snapshots
        .iter()
        .map(|s| s["id"].as_str().expect("snapshot id").to_string())
        .collect();
    for (w, ids) in order.iter().enumerate() {
        for id in ids.iter().rev().take(KEEP_LAST) {
            if !listed.contains(id) {
                failures.push(format!(
                    "writer {w}: snapshot {id}, one of its {KEEP_LAST} newest, is gone"
                ));
            }
        }
    }
    for id in &listed {
        let Some(rec) = recorded.get(id) else {
            failures.push(format!("snapshot {id} was never reported by a backup"));
            continue;
        };
        let target = env.path("restore");
        let out = env.run(&["restore", id, "--target", s(&target)]);
        if !out.status.success() {
            failures.push(describe(
                &format!(
                    "restore of snapshot {id} (writer {} iteration {})",
                    rec.writer, rec.iteration
                ),
                &out,
            ));
        } else {
            let src = env.path(&format!("src{}", rec.writer));
            let restored = restored_path(&target, &src);
            let diffs = manifest_diff(&rec.tree, &tree_manifest(&restored));
            if !diffs.is_empty() {
                failures.push(format!(
                    "snapshot {id} (writer {} iteration {}) restores differently:\n    {}",
                    rec.writer,
                    rec.iteration,
                    diffs.join("\n    ")
                ));
            }
        }
        let _ = fs::remove_dir_all(&target);
    }

    eprintln!(
        "gc_race: {} backups committed, {} snapshots kept; {} gc runs during the race \
         ({} busy), {} reader runs, {} packs deleted, {} rewritten, {} tombstones blocked; race {:.1}s, total {:.1}s",
        recorded.len(),
        listed.len(),
        gc_runs.load(Ordering::Relaxed),
        gc_busy.load(Ordering::Relaxed),
        reader_runs.load(Ordering::Relaxed),
        packs_deleted.load(Ordering::Relaxed),
        packs_rewritten.load(Ordering::Relaxed),
        tombstones_blocked.load(Ordering::Relaxed),
        race_secs,
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    assert!(
        gc_runs.load(Ordering::Relaxed) > 0,
        "no gc completed while the writers ran: the race did not happen"
    );
}

/// `rchar` (bytes read through read-like system calls) of process `pid`.
fn read_bytes_of(pid: u32) -> Option<u64> {
    fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("rchar:"))?
        .trim()
        .parse()
        .ok()
}

/// User plus system CPU time of process `pid`, in clock ticks.
fn cpu_ticks_of(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14, 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} {pid} failed");
}

/// Sum of the sizes of the index files.
fn index_bytes(env: &TestEnv) -> u64 {
    fs::read_dir(env.repo.join("index"))
        .expect("list index files")
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with(".tmp-"))
        .map(|e| e.metadata().expect("stat index file").len())
        .sum()
}

/// Stop `child` (a command that opens the repository) right after it has read every
/// index file: once its read counter, steady while it derives the key (CPU time grows,
/// nothing is read), has grown by `index_bytes`. Returns false if it exited first.
fn stop_after_index_load(child: &mut Child, index_bytes: u64) -> bool {
    let pid = child.id();
    let (mut last_read, mut ticks_at_change) = (u64::MAX, 0u64);
    let mut key_derivation_read = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if child.try_wait().expect("poll child").is_some() {
            return false;
        }
        let (Some(read), Some(ticks)) = (read_bytes_of(pid), cpu_ticks_of(pid)) else {
            return false;
        };
        if read != last_read {
            if key_derivation_read.is_some_and(|base| read >= base + index_bytes) {
                signal(pid, "-STOP");
                return true;
            }
            (last_read, ticks_at_change) = (read, ticks);
        } else if key_derivation_read.is_none() && ticks >= ticks_at_change + 2 {
            // Two clock ticks of CPU without a read: key derivation, which comes right
            // before the index is loaded.
            key_derivation_read = Some(read);
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    panic!("dprepo (pid {pid}) did not finish loading the index within 30 s");
}

/// A backup opens the repository, loading the index, before it creates its session
/// marker and reads the tombstones (SPEC "Write ordering" 1, section 15 S-1/S-2). A gc
/// that runs entirely in between (tombstone written, no session listed, packs and
/// tombstone deleted) is invisible to the backup, whose in-memory index still lists the
/// deleted packs: the backup deduplicates against them and commits a snapshot whose data
/// is gone. The safety argument's case 3 assumes the tombstone still exists when the
/// writer lists `gc/`. This test stops the backup in that window (SIGSTOP once it has
/// read every index file and before its session marker exists), runs gc, resumes it.
#[test]
fn backup_does_not_deduplicate_against_packs_deleted_by_a_gc_between_index_load_and_session_start()
{
    let env = TestEnv::init();
    let data = random_bytes(77, 3 << 20);
    let old = env.path("old");
    fs::create_dir(&old).expect("create dir");
    fs::write(old.join("x.bin"), &data).expect("write file");
    let out = env.json(&["backup", s(&old), "--host", "old"]);
    env.ok(&["forget", out["id"].as_str().expect("snapshot id")]);
    // The same bytes, elsewhere (no parent snapshot): every chunk deduplicates against
    // the packs of the forgotten snapshot, if the backup still believes they exist.
    let src = env.path("w");
    fs::create_dir(&src).expect("create dir");
    fs::write(src.join("x.bin"), &data).expect("write file");
    let expected = tree_manifest(&src);

    for attempt in 0..8 {
        let mut backup = env.spawn(&["--json", "backup", s(&src), "--host", "w"]);
        let stopped = stop_after_index_load(&mut backup, index_bytes(&env));
        let in_window = stopped && env.repo_file_names("sessions").is_empty();
        if in_window {
            // The backup holds the old index and has no session: gc sees no writer.
            let gc = env.run(&["--json", "gc", "--max-unused", "0"]);
            signal(backup.id(), "-CONT");
            let out = backup.wait_with_output().expect("wait for backup");
            assert!(gc.status.success(), "gc failed: {}", stderr(&gc));
            let gc_doc: serde_json::Value = serde_json::from_slice(&gc.stdout).expect("gc --json");
            assert!(
                gc_doc["report"]["packs_deleted"].as_u64().unwrap_or(0) > 0,
                "gc deleted nothing, so the scenario did not happen: {gc_doc}"
            );
            assert!(
                out.status.success(),
                "the backup failed after a gc ran before its session started: {}",
                stderr(&out)
            );
            let doc: serde_json::Value =
                serde_json::from_slice(&out.stdout).expect("backup --json");
            let id = doc["id"].as_str().expect("snapshot id");
            let target = env.path("restore");
            let restore = env.run(&["restore", id, "--target", s(&target)]);
            assert!(
                restore.status.success(),
                "snapshot {id}, committed by a backup that loaded the index before a gc deleted \
                 the packs it then deduplicated against, does not restore: {}",
                stderr(&restore)
            );
            let diffs = manifest_diff(&expected, &tree_manifest(&restored_path(&target, &src)));
            assert!(
                diffs.is_empty(),
                "snapshot {id} restores differently:\n  {}",
                diffs.join("\n  ")
            );
            return;
        }
        // Missed the window: let the backup finish, forget its snapshot, try again.
        if stopped {
            signal(backup.id(), "-CONT");
        }
        let out = backup.wait_with_output().expect("wait for backup");
        assert!(out.status.success(), "backup failed: {}", stderr(&out));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("backup --json");
        env.ok(&["forget", doc["id"].as_str().expect("snapshot id")]);
        eprintln!("attempt {attempt}: missed the window between index load and session start");
    }
    panic!("could not stop a backup between its index load and its session start in 8 attempts");
}

/// Total size of the files below `dir`.
fn dir_size(dir: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// While a backup runs, every gc's tombstone is blocked, and the packs it planned to
/// rewrite stay indexed. The next gc plans the same packs again (`plan` does not skip
/// packs already named by a pending tombstone) and writes another copy of their live
/// blobs each time. Once the tombstones are processed only the originals go: every
/// copy holds live blobs only, so no later gc removes them. Periodic gc beside a long
/// backup (or beside the stale session marker of a killed one, for 30 minutes) thus
/// multiplies the repository's size for good.
#[test]
fn gc_beside_a_running_backup_does_not_copy_the_same_packs_again_and_again() {
    let env = TestEnv::init();
    let src = env.path("src");
    fs::create_dir(&src).expect("create dir");
    const FILE_LEN: usize = 300_000;
    for i in 0..6u64 {
        fs::write(src.join(format!("f{i}")), random_bytes(500 + i, FILE_LEN)).expect("write");
    }
    env.ok(&["backup", s(&src)]);
    for i in 0..3 {
        fs::remove_file(src.join(format!("f{i}"))).expect("delete file");
    }
    env.ok(&["backup", s(&src)]);
    // The first backup's data pack is now half unused: gc rewrites it.
    env.ok(&["forget", "--keep-last", "1"]);

    // A backup that runs until its stdin closes: a live writer session.
    let mut writer = env
        .cmd(["--json", "backup", "--stdin", "--stdin-name", "stream"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start backup");
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.repo_file_names("sessions").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the backup never created its session marker"
        );
        assert!(
            writer.try_wait().expect("poll").is_none(),
            "the stdin backup exited early"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    const GC_RUNS: usize = 4;
    for _ in 0..GC_RUNS {
        env.ok(&["gc"]);
    }
    let stream = random_bytes(600, 1000);
    let mut stdin = writer.stdin.take().expect("stdin");
    std::io::Write::write_all(&mut stdin, &stream).expect("write stream");
    drop(stdin);
    let out = writer.wait_with_output().expect("wait for backup");
    assert!(
        out.status.success(),
        "stdin backup failed: {}",
        stderr(&out)
    );
    // No writer now: these process every tombstone.
    env.ok(&["gc"]);
    env.ok(&["gc"]);

    let live = (3 * FILE_LEN + stream.len()) as u64;
    let stored = dir_size(&env.repo.join("data"));
    assert!(
        env.repo_file_names("gc").is_empty(),
        "tombstones left: {:?}",
        env.repo_file_names("gc")
    );
    assert!(
        stored < 2 * live,
        "{GC_RUNS} gc runs beside one backup left {stored} bytes of data packs for {live} bytes \
         of live data (each run copied the same half-used pack again)"
    );
}

/// Whether gc (or repair) lost the race for the lease: an expected outcome, not an error.
fn lost_the_lease(out: &Output) -> bool {
    !out.status.success() && stderr(out).contains("gc lease is busy")
}

/// `repair index` listed packs and wrote index files without the gc lease, so it could
/// index packs that a gc running at the same time was deleting. Once gc had deleted
/// them (and its tombstone), the index files written by repair still named them: the
/// next backup of the data gc had just freed deduplicated against those entries and
/// exited 0 with a snapshot whose packs were gone. Each round here frees data (backup,
/// forget), starts a gc, starts a repair a few milliseconds later (the delay varies from
/// round to round), then backs the freed data up again and restores it. Repair now takes
/// the lease (SPEC.md section 18.1): of gc and repair, one runs and the other reports
/// that the lease is busy, and every backup restores.
#[test]
fn repair_beside_gc_never_leaves_index_entries_of_packs_gc_deleted() {
    const ROUNDS: u64 = 24;
    const DATA_LEN: usize = 3 << 20;
    let env = TestEnv::init();
    let mut failures = Vec::new();
    let (mut repairs_run, mut repairs_busy, mut gcs_busy) = (0, 0, 0);
    for round in 0..ROUNDS {
        let data = random_bytes(4_000 + round, DATA_LEN);
        let garbage = env.path(&format!("garbage{round}"));
        fs::create_dir(&garbage).expect("create dir");
        fs::write(garbage.join("x.bin"), &data).expect("write file");
        let old = env.backup(&[&garbage], &["--host", "old"]);
        env.ok(&["forget", old["id"].as_str().expect("snapshot id")]);

        let gc = env.spawn(&["--json", "gc", "--max-unused", "0"]);
        std::thread::sleep(Duration::from_millis(round % 12 * 5));
        let repair_args: &[&str] = if round % 4 == 3 {
            &["repair", "snapshots"]
        } else {
            &["repair", "index"]
        };
        let repair = env.run(repair_args);
        let gc = gc.wait_with_output().expect("wait for gc");
        if repair.status.success() {
            repairs_run += 1;
        } else if lost_the_lease(&repair) {
            repairs_busy += 1;
        } else {
            failures.push(describe(
                &format!("round {round}: {repair_args:?}"),
                &repair,
            ));
        }
        if lost_the_lease(&gc) {
            gcs_busy += 1;
        } else if !gc.status.success() {
            failures.push(describe(&format!("round {round}: gc"), &gc));
        }

        // The freed data again, from another host (no parent): every chunk is looked up
        // in the index, which must not name a pack gc deleted.
        let again = env.path(&format!("again{round}"));
        fs::create_dir(&again).expect("create dir");
        fs::write(again.join("x.bin"), &data).expect("write file");
        let out = env.run(&["--json", "backup", s(&again), "--host", "new"]);
        if !out.status.success() {
            failures.push(describe(&format!("round {round}: backup"), &out));
            continue;
        }
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("backup --json");
        let id = doc["id"].as_str().expect("snapshot id").to_string();
        let target = env.path(&format!("restore{round}"));
        let restore = env.run(&["restore", &id, "--target", s(&target)]);
        if !restore.status.success() {
            failures.push(describe(
                &format!(
                    "round {round}: restore of the backup taken after {repair_args:?} ran beside gc \
                     ({} exit {}, gc exit {})",
                    repair_args[1], repair.status, gc.status
                ),
                &restore,
            ));
        } else if fs::read(restored_path(&target, &again).join("x.bin")).ok() != Some(data) {
            failures.push(format!("round {round}: snapshot {id} restores other bytes"));
        }
        let _ = fs::remove_dir_all(&target);
        env.ok(&["forget", &id]);
    }
    eprintln!(
        "repair beside gc: {ROUNDS} rounds, {repairs_run} repairs ran, {repairs_busy} found the \
         lease busy, {gcs_busy} gcs found it busy"
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    let verify = env.json(&["verify"]);
    assert_eq!(verify["ok"], true, "{verify}");
}

/// A stopped gc holds the lease: every repair command refuses to run (naming the
/// holder) instead of writing index files or snapshots beside it, and runs once gc has
/// ended. Before repair took the lease, both repairs ran at once.
#[test]
fn repair_does_not_run_while_a_gc_holds_the_lease() {
    let env = TestEnv::init();
    let src = env.path("src");
    for d in 0..20 {
        let dir = src.join(format!("d{d}"));
        fs::create_dir_all(&dir).expect("create dir");
        for f in 0..20u64 {
            fs::write(dir.join(format!("f{f}")), random_bytes(d * 100 + f, 2000))
                .expect("write file");
        }
    }
    let lease = env.repo.join("locks").join("gc");
    for attempt in 0..20 {
        let snap = env.backup(&[&src], &["--host", &format!("h{attempt}")]);
        env.ok(&["forget", snap["id"].as_str().expect("snapshot id")]);
        let mut gc = env.spawn(&["gc"]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !lease.exists() && gc.try_wait().expect("poll gc").is_none() {
            assert!(Instant::now() < deadline, "gc never took the lease");
            std::thread::sleep(Duration::from_micros(100));
        }
        let running = gc.try_wait().expect("poll gc").is_none();
        if running {
            signal(gc.id(), "-STOP");
        }
        if !(running && lease.exists()) {
            // gc finished between the checks: try again.
            if running {
                signal(gc.id(), "-CONT");
            }
            let out = gc.wait_with_output().expect("wait for gc");
            assert!(out.status.success(), "gc failed: {}", stderr(&out));
            continue;
        }
        let index_before = env.repo_file_names("index");
        let snapshots_before = env.repo_file_names("snapshots");
        for args in [vec!["repair", "index"], vec!["repair", "snapshots"]] {
            let out = env.run(&args);
            let line = stderr(&out);
            let still_there = lease.exists();
            if out.status.success() || !line.contains("gc lease is busy") || !line.contains("`gc`")
            {
                signal(gc.id(), "-CONT");
                let _ = gc.wait_with_output();
                panic!(
                    "{args:?} while gc held the lease (lease file still there: {still_there}): \
                     exit {}, stderr: {line}",
                    out.status
                );
            }
        }
        assert_eq!(env.repo_file_names("index"), index_before);
        assert_eq!(env.repo_file_names("snapshots"), snapshots_before);
        signal(gc.id(), "-CONT");
        let out = gc.wait_with_output().expect("wait for gc");
        assert!(out.status.success(), "gc failed: {}", stderr(&out));
        env.ok(&["repair", "index"]);
        env.ok(&["repair", "snapshots"]);
        return;
    }
    panic!("could not stop a gc while it held the lease in 20 attempts");
}
