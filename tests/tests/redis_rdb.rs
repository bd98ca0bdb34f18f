//! Redis end to end through the datasafed interface, with a real `redis-server`: RDB
//! dumps taken as KubeBlocks' redis addon takes them (`BGSAVE`, then `tar -cf - ./` of the
//! data directory piped to `datasafed push -z zstd-fastest`) and as `redis-cli --rdb -`
//! streams them, before and after 1% of the keys changed. The second dump must store
//! little, and every pull must return the pushed bytes; the pulled tar must start a
//! server holding the same data.
//!
//! Needs Debian's `redis-server` and `redis-tools` packages; see `dbserver` for users,
//! sandboxes and the opt-out.

mod common;
mod dbserver;

use dbserver::*;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Keys in the test database: about 16 MB of RDB (BENCHMARKS.md measures 200,000).
const KEYS: u64 = 30_000;

/// Whether the Redis tests run (see [`db_tests_enabled`]).
fn redis_available(test: &str) -> bool {
    let programs = ["/usr/bin/redis-server", "/usr/bin/redis-cli"].map(PathBuf::from);
    db_tests_enabled(test, &programs, "redis-server redis-tools")
}

/// A private `redis-server` on 127.0.0.1 with its data directory `<sandbox>/<name>`
/// (`dump.rdb` there), no automatic saves, no AOF. Killed when dropped.
struct RedisServer<'a> {
    sb: &'a Sandbox,
    name: String,
    port: u16,
    child: Option<Child>,
}

impl<'a> RedisServer<'a> {
    fn start(sb: &'a Sandbox, name: &str) -> RedisServer<'a> {
        let dir = sb.path(name);
        if !dir.exists() {
            sb.mkdir(name);
        }
        let port = free_port();
        let child = sb
            .cmd("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .arg("--dir")
            .arg(&dir)
            .args([
                "--dbfilename",
                "dump.rdb",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--enable-debug-command", "local"])
            .arg("--logfile")
            .arg(sb.path(&format!("{name}.log")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let server = RedisServer {
            sb,
            name: name.to_string(),
            port,
            child: Some(child),
        };
        let start = Instant::now();
        while server.sb.sh(&server.cli("ping")).stdout != b"PONG\n" {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "redis-server {name} did not answer within 30 s; log:\n{}",
                tail(&sb.path(&format!("{name}.log")), 20)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// A `redis-cli` command line for this server running `args`.
    fn cli(&self, args: &str) -> String {
        format!("redis-cli -h 127.0.0.1 -p {} {args}", self.port)
    }

    /// Output of `redis-cli ... args`, trimmed.
    fn query(&self, args: &str) -> String {
        self.sb.sh_ok(&self.cli(args)).trim().to_string()
    }

    /// Sends the Redis protocol `resp` through `redis-cli --pipe`.
    fn pipe(&self, resp: &[u8]) {
        let path = self.sb.path("commands.resp");
        std::fs::write(&path, resp).unwrap();
        self.sb.give(&path, 0o600);
        let out = self
            .sb
            .sh_ok(&format!("{} --pipe < commands.resp", self.cli("")));
        assert!(out.contains("errors: 0"), "redis-cli --pipe: {out}");
    }

    /// `BGSAVE` and wait for it, as KubeBlocks' backup script does (LASTSAVE moves).
    fn bgsave(&self) {
        let last = self.query("lastsave");
        // LASTSAVE has a one-second resolution.
        std::thread::sleep(Duration::from_millis(1100));
        self.query("bgsave");
        let start = Instant::now();
        while self.query("lastsave") == last
            || self
                .query("info persistence")
                .contains("rdb_bgsave_in_progress:1")
        {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "BGSAVE did not finish"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(self
            .query("info persistence")
            .contains("rdb_last_bgsave_status:ok"));
    }

    /// Key count and `DEBUG DIGEST` (a hash of the whole dataset).
    fn contents(&self) -> (String, String) {
        (self.query("dbsize"), self.query("debug digest"))
    }
}

impl Drop for RedisServer<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                let log = self.sb.path(&format!("{}.log", self.name));
                eprintln!("redis-server {} log:\n{}", self.name, tail(&log, 20));
            }
        }
    }
}

/// Deterministic pseudo-random numbers (splitmix64).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// About `min + below(spread)` bytes of words and numbers: compresses like
    /// application data.
    fn text(&mut self, min: u64, spread: u64) -> String {
        let len = min + self.below(spread.max(1));
        const WORDS: &[&str] = &[
            "order", "customer", "invoice", "session", "cart", "item", "price", "total", "pending",
            "shipped", "user", "email", "street", "city", "token", "created",
        ];
        let mut s = String::new();
        while (s.len() as u64) < len {
            s.push_str(WORDS[self.below(WORDS.len() as u64) as usize]);
            if self.below(3) == 0 {
                s.push_str(&format!(":{}", self.below(1_000_000)));
            }
            s.push(' ');
        }
        s
    }
}

fn resp(out: &mut Vec<u8>, args: &[String]) {
    write!(out, "*{}\r\n", args.len()).unwrap();
    for a in args {
        write!(out, "${}\r\n{a}\r\n", a.len()).unwrap();
    }
}

/// Key `i`'s name: strings, hashes, lists, sets and sorted sets interleaved.
fn key(i: u64) -> (u64, String) {
    let kind = [0, 0, 0, 0, 0, 1, 1, 2, 3, 4][(i % 10) as usize];
    let name = ["str", "hash", "list", "set", "zset"][kind as usize];
    (kind, format!("{name}:{i:08}"))
}

/// Commands filling the database: mostly small values, 1% of the strings 4-32 KiB.
fn fill(keys: u64) -> Vec<u8> {
    let mut rng = Rng(1);
    let mut out = Vec::new();
    for i in 0..keys {
        let (kind, k) = key(i);
        let mut args = vec![
            ["SET", "HSET", "RPUSH", "SADD", "ZADD"][kind as usize].to_string(),
            k,
        ];
        match kind {
            0 => {
                let large = rng.below(100) == 0;
                args.push(if large {
                    rng.text(4096, 28672)
                } else {
                    rng.text(40, 360)
                });
            }
            1 => {
                for f in 0..5 + rng.below(15) {
                    args.push(format!("field{f}"));
                    args.push(rng.text(4, 56));
                }
            }
            2 => (0..5 + rng.below(55)).for_each(|_| args.push(rng.text(10, 110))),
            3 => {
                (0..5 + rng.below(40)).for_each(|_| args.push(rng.below(1_000_000_000).to_string()))
            }
            _ => {
                for _ in 0..5 + rng.below(35) {
                    args.push(format!("{}.{:03}", rng.below(1_000_000), rng.below(1000)));
                    args.push(format!("member-{}", rng.below(10_000_000)));
                }
            }
        }
        resp(&mut out, &args);
    }
    out
}

/// Commands changing 1% of the keys, spread over the keyspace (each its own key).
fn change(keys: u64) -> Vec<u8> {
    let mut rng = Rng(2);
    let mut out = Vec::new();
    for n in 0..keys / 100 {
        let i = n * 100 + rng.below(100);
        let (kind, k) = key(i);
        let args = match kind {
            0 => vec!["SET".into(), k, rng.text(40, 360)],
            1 => vec!["HSET".into(), k, "field0".into(), rng.text(30, 0)],
            2 => vec!["RPUSH".into(), k, rng.text(60, 0)],
            3 => vec!["SADD".into(), k, rng.below(1_000_000_000).to_string()],
            _ => vec!["ZADD".into(), k, "1.5".into(), format!("changed-{n}")],
        };
        resp(&mut out, &args);
    }
    out
}

/// KubeBlocks' layout: `<root>/<ns>/<policy>/<backup>/<target>/<backup>.tar.zst`.
fn kb_path(backup: &str) -> String {
    format!("/kb/ns/redis-policy/{backup}/redis/{backup}.tar.zst")
}

/// Pushes `tar -cf - ./` of the server's data directory as KubeBlocks' addon does,
/// keeping a copy of the tar as `<backup>.tar`; returns the repository's growth.
fn push_data_dir(sb: &Sandbox, server: &RedisServer, backup: &str) -> u64 {
    let before = common::dir_size(&sb.repo());
    sb.sh_ok(&format!(
        "cd {}\ntar -cf - ./ | tee ../{backup}.tar | datasafed push -z zstd-fastest - {}",
        server.name,
        kb_path(backup)
    ));
    common::dir_size(&sb.repo()) - before
}

/// Pushes `redis-cli --rdb -` (the RDB streamed by the server), keeping a copy, into
/// the repository `<sandbox>/stream-repo` (apart, so it cannot deduplicate against the
/// tars); returns that repository's growth.
fn push_rdb_stream(sb: &Sandbox, server: &RedisServer, backup: &str) -> u64 {
    let repo = sb.path(STREAM_REPO);
    if !repo.exists() {
        sb.mkdir(STREAM_REPO);
    }
    let before = common::dir_size(&repo);
    sb.sh_ok(&format!(
        "{} 2> /dev/null | tee {backup}.rdb | DATASAFED_LOCAL_BACKEND_PATH=$PWD/{STREAM_REPO} \
         datasafed push -z zstd-fastest - /rdb/{backup}.rdb.zst",
        server.cli("--rdb -")
    ));
    common::dir_size(&repo) - before
}

/// The repository of [`push_rdb_stream`], below the sandbox.
const STREAM_REPO: &str = "stream-repo";

/// The second dump of a Redis after 1% of its keys changed, pushed as KubeBlocks'
/// addon pushes it (a tar of the data directory) or as `redis-cli --rdb -` streams it,
/// stores at most 35% of what the first stored. Was: the tar's dump.rdb member was cut
/// with the repository's 512 KiB chunks, and the second stored about 100% of the first
/// (the bare RDB stream was cut with 16 KiB chunks: 37%). Both are cut with 8 KiB chunks
/// now (measured 22% at 200,000 keys, 24% here; benches/NOTES.md, "Redis RDB files and
/// mongodump archives"). Every pull returns the pushed bytes, and a server started on
/// the pulled second tar holds the same data.
#[test]
fn second_redis_dump_after_one_percent_of_keys_changed_stores_little() {
    if !redis_available("redis incremental dump") {
        return;
    }
    let sb = Sandbox::new("redis", &[]);
    let source = RedisServer::start(&sb, "source");
    source.pipe(&fill(KEYS));
    assert_eq!(source.query("dbsize"), KEYS.to_string());
    source.bgsave();
    let first = push_data_dir(&sb, &source, "backup-1");
    let first_stream = push_rdb_stream(&sb, &source, "stream-1");
    source.pipe(&change(KEYS));
    source.bgsave();
    let expected = source.contents();
    let second = push_data_dir(&sb, &source, "backup-2");
    let second_stream = push_rdb_stream(&sb, &source, "stream-2");
    drop(source);
    let rdb_len = std::fs::metadata(sb.path("source/dump.rdb")).unwrap().len();
    eprintln!(
        "RDB of {rdb_len} B; tar of the data directory: first push stored {first} B, second \
         {second} B ({:.1}%); redis-cli --rdb stream: first {first_stream} B, second \
         {second_stream} B ({:.1}%)",
        second as f64 * 100.0 / first as f64,
        second_stream as f64 * 100.0 / first_stream as f64,
    );
    assert!(rdb_len > 10 << 20, "RDB of only {rdb_len} B");
    assert!(
        second * 100 <= first * 35,
        "the second dump (tar) stored {second} B, more than 35% of the first's {first} B"
    );
    assert!(
        second_stream * 100 <= first_stream * 35,
        "the second dump (stream) stored {second_stream} B, more than 35% of the first's \
         {first_stream} B"
    );
    // A tar of the data directory keeps the repository's stream params; the RDB stream
    // records the RDB params it was cut with.
    let mut snaps = sb.snapshots();
    let out = sb.sh_ok(&format!(
        "dprepo -r {STREAM_REPO} --password-file password snapshots --json"
    ));
    snaps.extend(serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap());
    let chunker = |path: &str| {
        let tag = format!("datasafed:path={path}");
        let snap = snaps
            .iter()
            .find(|s| s["tags"].as_array().unwrap().iter().any(|t| t == &tag[..]))
            .unwrap_or_else(|| panic!("no snapshot of {path}"));
        snap["chunker"]["avg_size"].as_u64().unwrap()
    };
    assert_eq!(chunker(&kb_path("backup-2")), 512 * 1024);
    assert_eq!(chunker("/rdb/stream-2.rdb.zst"), 8192);

    // Restore: byte-exact pulls, and a server on the pulled second tar.
    sb.mkdir("restored");
    sb.sh_ok(&format!(
        "datasafed pull -d zstd-fastest {} - > pulled-1.tar\ncmp pulled-1.tar backup-1.tar\n\
         datasafed pull -d zstd-fastest {} - > pulled-2.tar\ncmp pulled-2.tar backup-2.tar\n\
         export DATASAFED_LOCAL_BACKEND_PATH=$PWD/{STREAM_REPO}\n\
         datasafed pull -d zstd-fastest /rdb/stream-1.rdb.zst - | cmp - stream-1.rdb\n\
         datasafed pull -d zstd-fastest /rdb/stream-2.rdb.zst - | cmp - stream-2.rdb\n\
         tar -xf pulled-2.tar -C restored",
        kb_path("backup-1"),
        kb_path("backup-2")
    ));
    let restored = RedisServer::start(&sb, "restored");
    assert_eq!(
        restored.contents(),
        expected,
        "the server on the restored second dump differs from the source"
    );
}
