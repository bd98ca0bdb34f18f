//! Stream (stdin) snapshots: large streams in bounded memory, and several streams under
//! one name each keeping their own bytes. Every test runs against both backends; the
//! stream of the memory test is smaller on S3.

mod common;

use common::*;
use std::io::{Read, Write};
use std::process::Stdio;

const MIB: u64 = 1 << 20;

/// A reproducible stream of `len` bytes, generated on the fly: 1 MiB blocks of
/// pseudo-random bytes, every eighth block zeros (so compression has work to do).
struct StreamGen {
    rng: XorShift,
    block: Vec<u8>,
    block_index: u64,
    pos: usize,
    left: u64,
}

impl StreamGen {
    fn new(seed: u64, len: u64) -> StreamGen {
        StreamGen {
            rng: XorShift::new(seed),
            block: Vec::new(),
            block_index: 0,
            pos: 0,
            left: len,
        }
    }
}

impl Read for StreamGen {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 || out.is_empty() {
            return Ok(0);
        }
        if self.pos == self.block.len() {
            self.block.resize(MIB as usize, 0);
            if self.block_index % 8 == 7 {
                self.block.fill(0);
            } else {
                self.rng.fill(&mut self.block);
            }
            self.block_index += 1;
            self.pos = 0;
        }
        let n = out
            .len()
            .min(self.block.len() - self.pos)
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        out[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Compare everything read from `actual` with `expected`; returns the byte count, or
/// panics at the first difference.
fn assert_same_stream(mut actual: impl Read, mut expected: impl Read, what: &str) -> u64 {
    let mut got = vec![0u8; MIB as usize];
    let mut want = vec![0u8; MIB as usize];
    let mut offset = 0u64;
    loop {
        let n = actual.read(&mut got).expect("read dump output");
        let mut m = 0;
        while m < n {
            let k = expected.read(&mut want[m..n]).expect("generate expected");
            if k == 0 {
                panic!("{what}: output is longer than the {offset} + {m} bytes expected");
            }
            m += k;
        }
        if let Some(i) = (0..n).find(|&i| got[i] != want[i]) {
            panic!("{what}: first difference at byte {}", offset + i as u64);
        }
        offset += n as u64;
        if n == 0 {
            let mut probe = [0u8; 1];
            assert_eq!(
                expected.read(&mut probe).unwrap(),
                0,
                "{what}: output ends early, after {offset} bytes"
            );
            return offset;
        }
    }
}

/// Peak memory allowed to a backup or dump of a stream, whatever the stream's size.
/// The local stream is larger than this, so memory growing with the input fails there;
/// on S3 (slower) the stream is smaller and only shows uploads and downloads do not
/// buffer it whole on top of their in-flight packs.
const RSS_LIMIT: u64 = 400 * MIB;

both_backends!(
    large_stream_round_trips_in_bounded_memory,
    second_stream_with_the_same_name_keeps_both_versions,
    interrupted_backup_leaves_no_snapshot_and_a_usable_repository,
    empty_stream_and_invalid_stream_names,
    stream_delivered_in_small_irregular_writes_is_chunked_the_same,
);

fn large_stream_round_trips_in_bounded_memory(backend: Backend) {
    let stream_len: u64 = match backend {
        Backend::Local => 512 * MIB,
        Backend::S3 => 64 * MIB,
    };
    let env = TestEnv::init_with(backend);

    let mut child = env
        .cmd(["--json", "backup", "--stdin", "--stdin-name", "db.dump"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dprepo backup");
    let rss = PeakRss::watch(&child);
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        std::io::copy(&mut StreamGen::new(42, stream_len), &mut stdin).expect("feed the stream");
        // Dropping stdin ends the stream.
    });
    let out = child.wait_with_output().expect("wait for backup");
    let backup_peak = rss.finish();
    writer.join().unwrap();
    let snap = parse_json(&out, &["backup", "--stdin"]);
    assert_eq!(snap["summary"]["total_bytes"], stream_len, "{snap}");
    assert_eq!(snap["stdin_name"], "db.dump");
    assert!(
        backup_peak > 0 && backup_peak < RSS_LIMIT,
        "backup of a {} MiB stream peaked at {} MiB resident (limit {} MiB)",
        stream_len / MIB,
        backup_peak / MIB,
        RSS_LIMIT / MIB
    );

    let mut child = env
        .cmd(["dump", "latest", "db.dump"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dump");
    let rss = PeakRss::watch(&child);
    let stdout = child.stdout.take().unwrap();
    let n = assert_same_stream(
        stdout,
        StreamGen::new(42, stream_len),
        "dump latest db.dump",
    );
    let out = child.wait_with_output().unwrap();
    let dump_peak = rss.finish();
    assert_success(&out, &["dump", "latest", "db.dump"]);
    assert_eq!(n, stream_len);
    eprintln!(
        "peak resident: backup {} MiB, dump {} MiB",
        backup_peak / MIB,
        dump_peak / MIB
    );
    assert!(
        dump_peak > 0 && dump_peak < RSS_LIMIT,
        "dump peaked at {} MiB resident",
        dump_peak / MIB
    );
}

fn second_stream_with_the_same_name_keeps_both_versions(backend: Backend) {
    // rustic 0.11 was seen returning the earlier stream's bytes for the later snapshot.
    let env = TestEnv::init_with(backend);
    let old = random_bytes(10, 6 * MIB as usize);
    // Same length, same first half, different second half: size-based shortcuts fail.
    let mut new = old[..3 * MIB as usize].to_vec();
    new.extend_from_slice(&random_bytes(11, 3 * MIB as usize));
    let shorter = old[..MIB as usize + 17].to_vec();

    let id_old = env.backup_stream("db.dump", &old);
    let id_new = env.backup_stream("db.dump", &new);
    assert_ne!(id_old, id_new);
    assert!(
        env.dump("latest", "db.dump") == new,
        "dump latest returns the newest stream"
    );
    assert!(
        env.dump(&id_old, "db.dump") == old,
        "the older snapshot keeps the older stream"
    );
    assert!(env.dump(&id_new[..12], "db.dump") == new);

    let id_short = env.backup_stream("db.dump", &shorter);
    assert!(
        env.dump("latest", "db.dump") == shorter,
        "a shorter stream is not padded with old bytes"
    );
    assert!(env.dump(&id_old, "db.dump") == old);

    // Every stream snapshot is recorded as such, and restores as one file named NAME.
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 3);
    for (snap, id) in snaps.iter().zip([&id_old, &id_new, &id_short]) {
        assert_eq!(snap["id"], **id, "snapshots are listed oldest first");
        assert_eq!(snap["stdin_name"], "db.dump");
        assert_eq!(snap["paths"], serde_json::json!(["/db.dump"]));
    }
    let target = env.path("restore");
    env.ok(&["restore", &id_new, "--target", common::s(&target)]);
    assert!(std::fs::read(target.join("db.dump")).unwrap() == new);
    let ls = String::from_utf8(env.ok(&["ls", &id_old]).stdout).unwrap();
    assert_eq!(ls.trim(), "/db.dump");
}

fn empty_stream_and_invalid_stream_names(backend: Backend) {
    let env = TestEnv::init_with(backend);
    let id = env.backup_stream("empty", b"");
    assert_eq!(env.dump(&id, "empty"), b"");

    for bad in ["a/b", "..", ""] {
        let mut child = env
            .cmd(["backup", "--stdin", "--stdin-name", bad])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(b"data");
        let out = child.wait_with_output().unwrap();
        let line = assert_clean_failure(&out, &["backup", "--stdin", "--stdin-name", bad]);
        assert!(line.contains("name"), "error names the problem: {line}");
    }
    assert_eq!(env.snapshots().len(), 1, "failed backups leave no snapshot");
}

fn stream_delivered_in_small_irregular_writes_is_chunked_the_same(backend: Backend) {
    // pg_dump and friends write in small pieces with pauses; chunk boundaries must depend
    // on the bytes only, or the next backup of the same data would not deduplicate.
    let env = TestEnv::init_with(backend);
    let data = random_bytes(77, 12 * MIB as usize);
    let first = env.backup_stream("dump", &data);

    let mut child = env
        .cmd(["--json", "backup", "--stdin", "--stdin-name", "dump"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let fed = data.clone();
    let writer = std::thread::spawn(move || {
        let mut rng = XorShift::new(5);
        let mut pos = 0;
        while pos < fed.len() {
            let n = [1, 7, 100, 4096, 65_536, 300_000][(rng.next_u64() % 6) as usize]
                .min(fed.len() - pos);
            stdin.write_all(&fed[pos..pos + n]).unwrap();
            stdin.flush().unwrap();
            pos += n;
            if rng.next_u64() & 127 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let snap = parse_json(&out, &["backup", "--stdin"]);
    let added = snap["summary"]["bytes_added"].as_u64().unwrap();
    assert!(
        added < 64 * 1024,
        "the same bytes delivered differently added {added} bytes: {snap}"
    );
    assert!(env.dump("latest", "dump") == data);
    assert!(env.dump(&first, "dump") == data);
}

fn interrupted_backup_leaves_no_snapshot_and_a_usable_repository(backend: Backend) {
    let env = TestEnv::init_with(backend);
    let old = random_bytes(3, 3 * MIB as usize);
    env.backup_stream("db.dump", &old);

    let mut child = env
        .cmd(["backup", "--stdin", "--stdin-name", "db.dump"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // An endless stream; the write fails once the backup is killed.
    let writer = std::thread::spawn(move || {
        let _ = std::io::copy(&mut StreamGen::new(9, u64::MAX), &mut stdin);
    });
    let packs_before = env.repo_files("data").len();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while env.repo_files("data").len() < packs_before + 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the backup wrote no packs within 60 s"
        );
        // Each poll of S3 is a LIST request; do not flood the test server.
        std::thread::sleep(std::time::Duration::from_millis(match backend {
            Backend::Local => 20,
            Backend::S3 => 200,
        }));
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    writer.join().unwrap();

    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 1, "a killed backup commits no snapshot");
    assert!(env.dump("latest", "db.dump") == old);
    let new = random_bytes(4, 2 * MIB as usize);
    let id = env.backup_stream("db.dump", &new);
    assert!(
        env.dump(&id, "db.dump") == new,
        "backups after a crash work"
    );
    assert_eq!(env.json(&["stats"])["snapshots"], 2);
}
