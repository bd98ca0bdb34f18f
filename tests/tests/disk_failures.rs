//! Full disks and a damaged cache, met by the real binary on real file systems: a small
//! tmpfs mounted for the test (which needs root, or passwordless sudo) fills up under
//! the repository or under the index cache.

mod common;

use common::*;
use serde_json::Value;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Linux's ENOSPC.
const ENOSPC: i32 = 28;

/// Run `args` as root: directly when we are, else through `sudo -n`.
fn as_root(args: &[&str]) -> Output {
    let mut cmd = if running_as_root() {
        let mut c = Command::new(args[0]);
        c.args(&args[1..]);
        c
    } else {
        let mut c = Command::new("sudo");
        c.arg("-n").args(args);
        c
    };
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"))
}

/// A tmpfs of a given size mounted on a fresh directory: a real file system that fills
/// up. Unmounted when dropped (declare it after the [`TestEnv`] holding it).
struct SmallFs {
    path: PathBuf,
}

impl SmallFs {
    fn mount(path: PathBuf, bytes: u64) -> SmallFs {
        fs::create_dir_all(&path).unwrap();
        let options = format!("size={bytes},mode=1777");
        let out = as_root(&["mount", "-t", "tmpfs", "-o", &options, "tmpfs", s(&path)]);
        assert!(
            out.status.success(),
            "cannot mount a {bytes}-byte tmpfs on {}: {}\nThese tests fill real file \
             systems: run them as root, or as a user with passwordless sudo.",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        SmallFs { path }
    }

    /// Write zeros until the file system is full.
    fn fill(&self) {
        let mut file = fs::File::create(self.path.join("filler")).unwrap();
        for piece in [1 << 20, 4096, 1] {
            let zeros = vec![0u8; piece];
            loop {
                match file.write_all(&zeros) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(ENOSPC) => break,
                    Err(e) => panic!("filling {}: {e}", self.path.display()),
                }
            }
        }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = as_root(&["umount", "-l", s(&self.path)]);
    }
}

/// Run `cmd` with `stdin` written to it from another thread.
fn run_with_stdin(mut cmd: Command, stdin: Vec<u8>) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dprepo");
    let mut pipe = child.stdin.take().unwrap();
    // A command that fails early closes its end: a broken pipe is fine.
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&stdin);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

/// A full disk under the repository during a backup was reported as "internal error:
/// backup aborted" or "internal error: pack uploader stopped (see the upload error)":
/// the uploader's ENOSPC, the first cause, was hidden behind the walker's abort.
#[test]
fn full_repository_disk_during_backup_reports_no_space_not_an_internal_error() {
    let mut env = TestEnv::new();
    let small = SmallFs::mount(env.path("small"), 8 << 20);
    env.repo = small.path.join("repo");
    env.ok(&["init"]);
    // Each needs a 16 MiB pack on an 8 MiB file system.
    let big = env.path("big");
    fs::write(&big, random_bytes(1, 24 << 20)).unwrap();
    let many = env.path("many");
    fs::create_dir_all(&many).unwrap();
    for i in 0..40 {
        fs::write(many.join(format!("f{i}")), random_bytes(100 + i, 512 << 10)).unwrap();
    }
    let mut lines = vec![
        ("a big file", env.fail(&["backup", s(&big)])),
        ("many files", env.fail(&["backup", s(&many)])),
    ];
    let args = ["backup", "--stdin", "--stdin-name", "s"];
    let out = run_with_stdin(env.cmd(args), random_bytes(2, 24 << 20));
    lines.push(("a stream", assert_clean_failure(&out, &args)));
    for (what, line) in lines {
        assert!(
            line.contains("No space left on device")
                && line.contains(&format!("below {}", s(&env.repo)))
                && line.contains("storage data/")
                && !line.contains("internal error"),
            "backing up {what}: {line}"
        );
    }
    // Nothing was committed, the repository is whole, and what fits still goes in.
    assert!(env.snapshots().is_empty());
    env.ok(&["verify"]);
    let id = env.backup_stream("small", b"fits");
    assert_eq!(env.dump(&id, "small"), b"fits");
}

/// `cmd` with its index cache in `cache`.
fn with_cache(mut cmd: Command, cache: &Path) -> Command {
    cmd.env("DPREPO_CACHE_DIR", cache);
    cmd
}

/// The warning lines of `out` about the index cache.
fn cache_warnings(out: &Output) -> Vec<String> {
    stderr(out)
        .lines()
        .filter(|l| l.starts_with("dprepo: warning: index cache"))
        .map(str::to_string)
        .collect()
}

/// A full disk under the cache directory aborted every command with a RocksDB
/// assertion (exit 134, "Assertion `sync_without_flush_called_' failed"), even
/// `snapshots`, with the repository elsewhere. Every command now warns once and runs
/// without the cache, as with --no-cache; with the temporary directory full as well, it
/// keeps the index in memory.
#[test]
fn full_cache_disk_aborts_no_command_and_falls_back_with_a_warning() {
    let env = TestEnv::init();
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("a"), random_bytes(3, 300_000)).unwrap();
    fs::write(src.join("sub/b"), b"small file").unwrap();
    env.backup(&[&src], &[]);
    env.backup_stream("s", &random_bytes(4, 100_000));
    let small = SmallFs::mount(env.path("cache-fs"), 2 << 20);
    small.fill();
    let cache = small.path.join("dprepo");
    let target = env.path("restored");
    let commands: Vec<Vec<&str>> = vec![
        vec!["snapshots"],
        vec!["--json", "snapshots"],
        vec!["ls", "latest"],
        vec!["backup", s(&src)],
        vec!["restore", "latest", "--target", s(&target)],
        vec!["stats"],
        vec!["verify", "--read-data"],
        vec!["forget", "--keep-last", "1"],
        vec!["gc"],
    ];
    for args in &commands {
        let out = output_of(with_cache(env.cmd(args), &cache));
        assert_success(&out, args);
        let warnings = cache_warnings(&out);
        assert!(
            warnings.len() == 1
                && warnings[0].contains(s(&cache))
                && warnings[0].contains("free of")
                && warnings[0].contains("--no-cache"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert_same_tree(&src, &restored_path(&target, &src), Compare::CONTENT);
    let out = output_of(with_cache(env.cmd(["--json", "snapshots"]), &cache));
    let doc: Value = parse_json(&out, &["--json", "snapshots"]);
    assert_eq!(doc.as_array().map(Vec::len), Some(2), "{doc}");

    // The temporary directory full too: the index is kept in memory.
    let small_tmp = SmallFs::mount(env.path("tmp-fs"), 1 << 20);
    small_tmp.fill();
    let mut cmd = with_cache(env.cmd(["ls", "latest"]), &cache);
    cmd.env("TMPDIR", &small_tmp.path);
    let out = output_of(cmd);
    assert_success(&out, &["ls", "latest"]);
    let warnings = cache_warnings(&out);
    assert!(
        warnings.len() == 1 && warnings[0].contains("in memory"),
        "{}",
        stderr(&out)
    );
    // datasafed goes the same way.
    let mut cmd = with_cache(env.cmd(["datasafed", "push", "-", "/x/y.bin"]), &cache);
    cmd.env_remove("DPREPO_REPOSITORY")
        .env("DATASAFED_LOCAL_BACKEND_PATH", &env.repo);
    let out = run_with_stdin(cmd, b"datasafed stream".to_vec());
    assert_success(&out, &["datasafed", "push"]);
    assert!(
        stderr(&out).contains("Warning: index cache"),
        "{}",
        stderr(&out)
    );
}

/// The cache's disk filling up while a backup runs (after the cache was opened): the
/// backup is committed and the process ends normally. RocksDB's info log sat on the
/// same disk: once a write to it failed, its next line aborted the process.
#[test]
fn cache_disk_filling_during_a_backup_aborts_nothing() {
    let env = TestEnv::init();
    let small = SmallFs::mount(env.path("cache-fs"), 40 << 20);
    let cache = small.path.join("dprepo");
    let args = ["--json", "backup", "--stdin", "--stdin-name", "s"];
    let mut child = with_cache(env.cmd(args), &cache)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The cache is open once its database directory has its files.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !has_file_named(&cache, "CURRENT") {
        assert!(
            Instant::now() < deadline,
            "the backup never opened its cache"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    small.fill();
    let data = random_bytes(5, 16 << 20);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&data).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let doc = parse_json(&out, &args);
    let id = doc["id"].as_str().unwrap();
    let out = output_of(with_cache(env.cmd(["dump", id, "s"]), &cache));
    assert_success(&out, &["dump"]);
    assert!(out.stdout == data, "the stream differs");
}

fn has_file_named(dir: &Path, name: &str) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            has_file_named(&p, name)
        } else {
            e.file_name() == name
        }
    })
}

/// `--json --verbose snapshots`: how many objects it read (GET requests).
fn gets_of_a_listing(env: &TestEnv) -> u64 {
    let out = env.ok(&["--json", "--verbose", "snapshots"]);
    let err = stderr(&out);
    let last = err.lines().last().unwrap_or_default();
    let doc: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last stderr line is not JSON ({e}):\n{err}"));
    doc["requests"]["get"].as_u64().unwrap()
}

/// A damaged index cache: RocksDB's "Corruption: block checksum mismatch" on opening it
/// was taken for "another process holds it" (the text has "lock" in it), so the damaged
/// database was kept and every command built a private index from scratch beside it,
/// reading every index file. It is now made again by the first command that meets it,
/// with a warning, and the next command reads no index file.
#[test]
fn damaged_index_cache_is_made_again_by_the_first_command() {
    let env = TestEnv::init();
    for i in 0..4u64 {
        env.backup_stream(&format!("s{i}"), &random_bytes(10 + i, 200_000));
    }
    env.ok(&["snapshots"]);
    let healthy = gets_of_a_listing(&env);
    let tables = collect_named(&env.path("cache"), ".sst");
    assert!(!tables.is_empty(), "no cache table files to damage");
    for table in &tables {
        let mut bytes = fs::read(table).unwrap();
        // Every block but the footer: the first read fails its checksum.
        let end = bytes.len().saturating_sub(64);
        for b in bytes[..end].iter_mut().step_by(97) {
            *b ^= 0x5a;
        }
        fs::write(table, bytes).unwrap();
    }
    let out = env.ok(&["ls", "latest"]);
    let warnings = cache_warnings(&out);
    assert!(
        warnings.len() == 1 && warnings[0].contains("damaged"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        gets_of_a_listing(&env),
        healthy,
        "the next command read index files again: the cache was not made again"
    );
    assert_eq!(env.snapshots().len(), 4);
}

fn collect_named(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(collect_named(&p, suffix));
        } else if p.to_string_lossy().ends_with(suffix) {
            out.push(p);
        }
    }
    out
}
