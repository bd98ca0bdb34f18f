//! End-to-end tests of the datasafed-compatible interface: the real `datasafed` binary
//! (built next to `dprepo`) driven the way KubeBlocks backup scripts drive it — streams
//! through pipes, `-z`/`-d` algorithms, listings parsed by shell — and the `dprepo`
//! commands that show what it stored.

mod common;

use common::*;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// The `datasafed` binary next to `dprepo`.
fn datasafed_bin() -> PathBuf {
    let bin = dprepo_bin().with_file_name("datasafed");
    assert!(
        bin.is_file(),
        "{} not found; run `cargo build -p dprepo-tools` (it builds both binaries)",
        bin.display()
    );
    bin
}

/// A repository directory for `DATASAFED_LOCAL_BACKEND_PATH` and a clean environment.
struct Ds {
    dir: tempfile::TempDir,
    /// Extra variables (besides the key) every command gets.
    vars: Vec<(String, String)>,
}

impl Ds {
    /// A local backend directory (empty: the first push creates the repository).
    fn local() -> Ds {
        let dir = tempfile::Builder::new()
            .prefix("dprepo-datasafed-")
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir(dir.path().join("repo")).expect("repo dir");
        let vars = vec![(
            "DATASAFED_LOCAL_BACKEND_PATH".to_string(),
            s(&dir.path().join("repo")).to_string(),
        )];
        Ds { dir, vars }
    }

    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    fn with(mut self, key: &str, value: &str) -> Ds {
        self.vars.push((key.into(), value.into()));
        self
    }

    /// `datasafed ARGS` with only our variables (no inherited DPREPO_*/DATASAFED_*).
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(datasafed_bin());
        clean_env(&mut cmd);
        cmd.env("DPREPO_PASSWORD", PASSWORD)
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"));
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
        cmd.args(args).stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        output_of(self.cmd(args))
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_success(&out, args);
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Exit code 1 and an `Error: ` line on stderr; returns stderr.
    fn fail(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let err = stderr(&out);
        assert!(
            !err.contains("panicked"),
            "datasafed {args:?} panicked:\n{err}"
        );
        assert_eq!(
            out.status.code(),
            Some(1),
            "datasafed {args:?}: expected exit 1, got {}; stderr:\n{err}",
            out.status
        );
        assert!(
            err.starts_with("Error: "),
            "datasafed {args:?}: stderr is {err:?}"
        );
        err
    }

    /// `datasafed push [extra] - RPATH` with `data` on stdin.
    fn push(&self, rpath: &str, extra: &[&str], data: &[u8]) {
        let mut args: Vec<&str> = vec!["push"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-", rpath]);
        let mut cmd = self.cmd(&args);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn datasafed");
        let mut stdin = child.stdin.take().expect("stdin");
        let data = data.to_vec();
        let writer = std::thread::spawn(move || {
            stdin.write_all(&data).expect("write stdin");
        });
        let out = child.wait_with_output().expect("wait");
        writer.join().expect("writer");
        assert_success(&out, &args);
    }

    /// `datasafed pull [extra] RPATH -`.
    fn pull(&self, rpath: &str, extra: &[&str]) -> Vec<u8> {
        let mut args: Vec<&str> = vec!["pull"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[rpath, "-"]);
        let out = self.run(&args);
        assert_success(&out, &args);
        out.stdout
    }

    fn lines(&self, args: &[&str]) -> Vec<String> {
        self.ok(args).lines().map(str::to_string).collect()
    }

    /// `dprepo ARGS --json` on the same repository.
    fn dprepo_json(&self, args: &[&str]) -> serde_json::Value {
        let mut cmd = bare_cmd(args);
        cmd.arg("--json")
            .env("DPREPO_REPOSITORY", self.repo())
            .env("DPREPO_PASSWORD", PASSWORD);
        parse_json(&output_of(cmd), args)
    }

    fn snapshots(&self, extra: &[&str]) -> Vec<serde_json::Value> {
        let mut args = vec!["snapshots"];
        args.extend_from_slice(extra);
        self.dprepo_json(&args)
            .as_array()
            .expect("snapshot list")
            .clone()
    }

    /// Run `script` in `bash -o pipefail` with our environment and `datasafed` on PATH.
    fn bash(&self, script: &str) -> Output {
        let bin_dir = datasafed_bin().parent().expect("bin dir").to_path_buf();
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new("bash");
        clean_env(&mut cmd);
        cmd.args(["-o", "pipefail", "-c", script])
            .env("DPREPO_PASSWORD", PASSWORD)
            .env("PATH", path)
            .stdin(Stdio::null());
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
        output_of(cmd)
    }
}

fn clean_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("DPREPO_") || k.starts_with("DATASAFED_") || k.starts_with("AWS_") {
            cmd.env_remove(&key);
        }
    }
}

/// Compressible, repetitive-but-not-trivial test data with a random part.
fn sample(seed: u64, len: usize) -> Vec<u8> {
    let mut data = text_bytes(len / 2);
    data.extend(random_bytes(seed, len - len / 2));
    data
}

/// Decode `data` with an implementation other than the one under test where one is
/// installed: python's zlib/gzip for deflate and gzip, the `lz4` tool, the zstd library.
fn decode(algo: &str, data: &[u8]) -> Vec<u8> {
    let run = |mut cmd: Command| -> Vec<u8> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot run {cmd:?} ({e}); install it (apt-get install lz4)")
        });
        let mut stdin = child.stdin.take().expect("stdin");
        let input = data.to_vec();
        let w = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().expect("decoder");
        w.join().expect("writer").expect("write decoder input");
        assert!(
            out.status.success(),
            "{algo} decoder failed: {}",
            stderr(&out)
        );
        out.stdout
    };
    let python = |code: &str| {
        let mut c = Command::new("python3");
        c.args(["-c", code]);
        run(c)
    };
    if algo.starts_with("zstd") {
        let mut out = Vec::new();
        zstd::stream::read::Decoder::new(data)
            .expect("zstd decoder")
            .read_to_end(&mut out)
            .expect("valid zstd stream");
        out
    } else if algo.contains("gzip") {
        python("import gzip,sys; sys.stdout.buffer.write(gzip.decompress(sys.stdin.buffer.read()))")
    } else if algo.starts_with("deflate") {
        python("import zlib,sys; sys.stdout.buffer.write(zlib.decompress(sys.stdin.buffer.read(), -15))")
    } else if algo == "lz4" {
        let mut c = Command::new("lz4");
        c.args(["-d", "-c"]);
        run(c)
    } else {
        panic!("no decoder for {algo}")
    }
}

#[test]
fn every_algorithm_round_trips_with_and_without_decompress() {
    let ds = Ds::local();
    let data = sample(1, 3 << 20);
    let algos = [
        "zstd",
        "zstd-fastest",
        "zstd-better-compression",
        "zstd-best-compression",
        "gzip",
        "gzip-best-speed",
        "pgzip",
        "deflate-default",
        "lz4",
    ];
    for algo in algos {
        let rpath = format!("/algo/{algo}.bin");
        ds.push(&rpath, &["-z", algo], &data);
        // -d ALGO gives back the original bytes.
        assert!(ds.pull(&rpath, &["-d", algo]) == data, "{algo}: pull -d");
        // Without -d: a valid ALGO stream, as datasafed would have stored.
        let compressed = ds.pull(&rpath, &[]);
        assert!(
            compressed.len() < data.len(),
            "{algo}: output is not compressed"
        );
        assert!(decode(algo, &compressed) == data, "{algo}: pull without -d");
    }
    // Algorithms of one format read each other's streams, as with datasafed.
    assert!(ds.pull("/algo/zstd-fastest.bin", &["-d", "zstd"]) == data);
    // Another format cannot decode it: a clear error, not garbage.
    let err = ds.fail(&["pull", "-d", "gzip", "/algo/zstd.bin", "-"]);
    assert!(err.contains("zstd") && err.contains("gzip"), "{err}");
    // The codec is recorded with the snapshot.
    let snaps = ds.snapshots(&["--tag", "datasafed:path=/algo/lz4.bin"]);
    assert_eq!(snaps.len(), 1);
    assert!(snaps[0]["tags"]
        .as_array()
        .expect("tags")
        .contains(&serde_json::json!("datasafed:codec=lz4")));
    // Unknown and unsupported algorithms fail before anything is stored.
    let err = ds.fail(&["push", "-z", "s2-default", "-", "/x"]);
    assert!(
        err.contains("not supported") && err.contains("zstd-fastest"),
        "{err}"
    );
    ds.fail(&["push", "-z", "brotli", "-", "/x"]);
    assert!(ds.lines(&["list", "/x"]).is_empty());
}

#[test]
fn a_plain_push_is_stored_as_is_and_decompressed_on_request() {
    let ds = Ds::local();
    let data = sample(2, 1 << 20);
    // A script that compresses itself and pushes without -z.
    let mut gz = Command::new("gzip");
    gz.arg("-c");
    let compressed = {
        gz.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = gz.spawn().expect("gzip");
        let mut stdin = child.stdin.take().expect("stdin");
        let input = data.clone();
        let w = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().expect("gzip");
        w.join().expect("w").expect("write");
        out.stdout
    };
    ds.push("/plain.tar.gz", &[], &compressed);
    assert!(ds.pull("/plain.tar.gz", &[]) == compressed);
    assert!(ds.pull("/plain.tar.gz", &["-d", "gzip"]) == data);
    // pull to a local file (parents created).
    let target = ds.dir.path().join("out/sub/file.gz");
    ds.ok(&["pull", "plain.tar.gz", s(&target)]);
    assert!(std::fs::read(&target).expect("pulled file") == compressed);
    // push from a local file.
    ds.ok(&["push", s(&target), "copy.gz"]);
    assert!(ds.pull("/copy.gz", &[]) == compressed);
}

#[test]
fn pushing_a_path_again_replaces_it() {
    let ds = Ds::local();
    ds.push(
        "/db/full.tar.zst",
        &["-z", "zstd-fastest"],
        b"first version",
    );
    ds.push(
        "/db/full.tar.zst",
        &["-z", "zstd-fastest"],
        b"second, longer version",
    );
    assert_eq!(
        ds.pull("/db/full.tar.zst", &["-d", "zstd-fastest"]),
        b"second, longer version"
    );
    // One snapshot is left for the path: the older one was forgotten after the new one
    // was stored.
    let snaps = ds.snapshots(&["--tag", "datasafed:path=/db/full.tar.zst"]);
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0]["summary"]["total_bytes"], 22);
    assert_eq!(
        ds.lines(&["list", "-o", "long", "db/full.tar.zst"]).len(),
        1
    );
}

#[test]
fn list_supports_every_datasafed_flag() {
    let ds = Ds::local();
    // Pushed in this order, so mtimes increase in this order.
    ds.push("/base/a.txt", &[], &[b'a'; 30]);
    ds.push("/base/dir1/b.log", &[], &[b'b'; 10]);
    ds.push("/base/dir1/deep/c.txt", &[], &[b'c'; 20]);
    ds.push("/base/z.log", &[], &[b'z'; 5]);
    ds.ok(&["mkdir", "/base/empty"]);

    // Default: one level, sorted by path, directories with a trailing slash; paths are
    // relative to the root (as datasafed prints them).
    assert_eq!(
        ds.lines(&["list", "base"]),
        ["base/a.txt", "base/dir1/", "base/empty/", "base/z.log"]
    );
    assert_eq!(ds.lines(&["list", "/"]), ["base/"]);
    // A file lists as itself (the scripts' existence check).
    assert_eq!(ds.lines(&["list", "base/a.txt"]), ["base/a.txt"]);
    // A missing path lists nothing, successfully.
    assert!(ds.lines(&["list", "nothing/here"]).is_empty());
    // -r, --max-depth, -d, -f.
    assert_eq!(
        ds.lines(&["list", "-r", "base"]),
        [
            "base/a.txt",
            "base/dir1/",
            "base/dir1/b.log",
            "base/dir1/deep/",
            "base/dir1/deep/c.txt",
            "base/empty/",
            "base/z.log"
        ]
    );
    assert_eq!(
        ds.lines(&["list", "-r", "--max-depth", "2", "base"]),
        [
            "base/a.txt",
            "base/dir1/",
            "base/dir1/b.log",
            "base/dir1/deep/",
            "base/empty/",
            "base/z.log"
        ]
    );
    assert_eq!(
        ds.lines(&["list", "-r", "-d", "base"]),
        ["base/dir1/", "base/dir1/deep/", "base/empty/"]
    );
    assert_eq!(
        ds.lines(&["list", "-r", "-f", "base"]),
        [
            "base/a.txt",
            "base/dir1/b.log",
            "base/dir1/deep/c.txt",
            "base/z.log"
        ]
    );
    ds.fail(&["list", "-d", "-f", "base"]);
    // Sorting: size, mtime, reversed.
    assert_eq!(
        ds.lines(&["list", "-r", "-f", "-s", "size", "base"]),
        [
            "base/z.log",
            "base/dir1/b.log",
            "base/dir1/deep/c.txt",
            "base/a.txt"
        ]
    );
    assert_eq!(
        ds.lines(&["list", "-r", "-f", "-s", "size", "--reverse", "base"]),
        [
            "base/a.txt",
            "base/dir1/deep/c.txt",
            "base/dir1/b.log",
            "base/z.log"
        ]
    );
    assert_eq!(
        ds.lines(&["list", "-r", "-f", "-s", "mtime", "--reverse", "base"]),
        [
            "base/z.log",
            "base/dir1/deep/c.txt",
            "base/dir1/b.log",
            "base/a.txt"
        ]
    );
    ds.fail(&["list", "-s", "name", "base"]);
    ds.fail(&["list", "-o", "yaml", "base"]);
    // --name matches the base name with Go's filepath.Match.
    assert_eq!(
        ds.lines(&["list", "-r", "--name", "*.log", "base"]),
        ["base/dir1/b.log", "base/z.log"]
    );
    assert_eq!(
        ds.lines(&["list", "-r", "--name", "[ab].*", "base"]),
        ["base/a.txt", "base/dir1/b.log"]
    );
    // JSON: datasafed's fields; every line parses once the "," lines are joined.
    let json_text = ds.ok(&["list", "-r", "-f", "-o", "json", "base"]);
    let entries: Vec<serde_json::Value> =
        serde_json::from_str(&json_text).expect("list -o json is a JSON array");
    assert_eq!(entries.len(), 4);
    assert_eq!(entries[0]["path"], "base/a.txt");
    assert_eq!(entries[0]["size"], 30);
    assert_eq!(entries[0]["is_dir"], false);
    let mtimes: Vec<i64> = entries
        .iter()
        .map(|e| e["mtime"].as_i64().expect("mtime"))
        .collect();
    assert!(entries[0]["mtime_str"]
        .as_str()
        .expect("mtime_str")
        .ends_with('Z'));
    assert_eq!(ds.ok(&["list", "-o", "json", "missing"]), "[]\n");
    let dirs: Vec<serde_json::Value> =
        serde_json::from_str(&ds.ok(&["list", "-d", "-o", "json", "base"])).expect("json");
    assert!(dirs.iter().all(|d| d["is_dir"] == true && d["size"] == -1));
    // Long: RFC 3339 time, size, path, tab-separated.
    let long = ds.lines(&["list", "-o", "long", "base/a.txt"]);
    let fields: Vec<&str> = long[0].split('\t').collect();
    assert_eq!(fields.len(), 3, "{long:?}");
    assert!(
        chrono::DateTime::parse_from_rfc3339(fields[0]).is_ok(),
        "{long:?}"
    );
    assert_eq!(&fields[1..], ["30", "base/a.txt"]);
    // --newer-than / --older-than are exclusive unix-time bounds.
    let (first, last) = (
        mtimes.iter().min().copied().unwrap_or_default(),
        mtimes.iter().max().copied().unwrap_or_default(),
    );
    let newer = |t: i64| {
        ds.lines(&["list", "-r", "-f", "--newer-than", &t.to_string(), "base"])
            .len()
    };
    let older = |t: i64| {
        ds.lines(&["list", "-r", "-f", "--older-than", &t.to_string(), "base"])
            .len()
    };
    assert_eq!(newer(first - 1), 4);
    assert_eq!(newer(last), 0);
    assert_eq!(older(last + 1), 4);
    assert_eq!(older(first), 0);
}

#[test]
fn stat_rm_rmdir_and_mkdir_behave_like_datasafed() {
    let ds = Ds::local();
    // Reading an empty location is reading an empty bucket.
    assert_eq!(
        ds.ok(&["stat", "/"]),
        "TotalSize: 0\nEntries: 0\nDirs: 0\nFiles: 0\n"
    );
    ds.fail(&["pull", "/nothing", "-"]);
    ds.ok(&["rm", "/nothing"]);
    assert!(
        !ds.repo().join("config").exists(),
        "a read created a repository"
    );

    ds.push("/b/one", &[], &[1; 100]);
    ds.push("/b/sub/two", &[], &[2; 50]);
    ds.ok(&["mkdir", "/b/made"]);
    assert_eq!(
        ds.ok(&["stat", "b"]),
        "TotalSize: 150\nEntries: 4\nDirs: 2\nFiles: 2\n"
    );
    assert_eq!(
        ds.ok(&["stat", "--json", "b/one"]),
        "{\"dirs\":0,\"entries\":1,\"files\":1,\"total_size\":100}\n"
    );
    let err = ds.fail(&["stat", "/nope"]);
    assert!(err.contains("not found"), "{err}");
    let err = ds.fail(&["pull", "/b/missing", "-"]);
    assert!(err.contains("not found"), "{err}");

    // mkdir: idempotent; a file in the way is an error; pushing onto a dir is too.
    ds.ok(&["mkdir", "/b/made"]);
    ds.fail(&["mkdir", "/b/one"]);
    ds.fail(&["mkdir", "/b/one/below"]);
    let payload: &[u8] = b"x";
    let out = {
        let mut cmd = ds.cmd(&["push", "-", "/b/made"]);
        cmd.stdin(Stdio::piped());
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(payload)
            .expect("write");
        child.wait_with_output().expect("wait")
    };
    assert_eq!(
        out.status.code(),
        Some(1),
        "push onto a directory: {}",
        stderr(&out)
    );

    // rmdir: only empty directories.
    let err = ds.fail(&["rmdir", "/b"]);
    assert!(err.contains("not empty"), "{err}");
    ds.ok(&["rmdir", "/b/made"]);
    assert!(ds.lines(&["list", "-d", "b"]) == ["b/sub/"]);
    ds.fail(&["rmdir", "/b/made"]);

    // rm: one file; a directory needs -r; a missing file is not an error.
    ds.ok(&["rm", "/b/one"]);
    ds.fail(&["pull", "/b/one", "-"]);
    ds.fail(&["rm", "/b/sub"]);
    ds.ok(&["rm", "/b/one"]);
    ds.push("/b/sub/three", &[], &[3; 10]);
    ds.ok(&["mkdir", "/b/sub/inner"]);
    ds.ok(&["rm", "-r", "/b"]);
    assert!(ds.lines(&["list", "-r", "/"]).is_empty());
    assert!(ds.snapshots(&["--tag", "datasafed"]).is_empty());
}

#[test]
fn a_failed_input_exits_non_zero_and_stores_nothing() {
    let ds = Ds::local();
    ds.push("/wal/keep", &[], b"committed before");
    // An unreadable input (a directory as LPATH) and a missing one.
    ds.fail(&["push", s(ds.dir.path()), "/wal/dir"]);
    ds.fail(&["push", "/no/such/file", "/wal/missing"]);
    // The producer fails under pipefail: the pipeline fails. (datasafed itself sees an
    // ordinary end of input from a producer that exits; see README.)
    let out = ds.bash("false | datasafed push - /wal/false");
    assert!(!out.status.success(), "pipefail pipeline succeeded");
    // datasafed killed while the producer is still streaming: no snapshot, old data
    // intact. The producer writes forever; the kill comes once it has written a lot.
    let mut cmd = ds.cmd(&["push", "-", "/wal/keep"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let chunk = random_bytes(3, 1 << 20);
    for _ in 0..24 {
        stdin
            .write_all(&chunk)
            .expect("write while datasafed reads");
    }
    child.kill().expect("kill");
    let status = child.wait().expect("wait");
    assert!(!status.success());
    drop(stdin);
    assert_eq!(ds.pull("/wal/keep", &[]), b"committed before");
    let paths: Vec<String> = ds
        .snapshots(&["--tag", "datasafed"])
        .iter()
        .filter_map(|s| s["tags"].as_array().cloned())
        .flatten()
        .filter_map(|t| {
            t.as_str()
                .and_then(|t| t.strip_prefix("datasafed:path="))
                .map(str::to_string)
        })
        .collect();
    assert!(
        !paths.iter().any(|p| p == "/wal/dir" || p == "/wal/missing"),
        "{paths:?}"
    );
    assert_eq!(
        paths.iter().filter(|p| *p == "/wal/keep").count(),
        1,
        "{paths:?}"
    );
}

#[test]
fn the_key_is_required_and_checked() {
    let ds = Ds::local();
    let mut cmd = Command::new(datasafed_bin());
    clean_env(&mut cmd);
    cmd.env("DATASAFED_LOCAL_BACKEND_PATH", ds.repo())
        .args(["push", "-", "/x"])
        .stdin(Stdio::null());
    let out = output_of(cmd);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("DPREPO_PASSWORD"), "{}", stderr(&out));
    assert!(!ds.repo().join("config").exists());
    // datasafed's own pass-phrase variable works as the key.
    let alt = Ds::local().with("DATASAFED_ENCRYPTION_PASS_PHRASE", "phrase one");
    let mut cmd = alt.cmd(&["mkdir", "/d"]);
    cmd.env_remove("DPREPO_PASSWORD");
    assert_success(&output_of(cmd), &["mkdir"]);
    let mut cmd = alt.cmd(&["list", "/"]);
    cmd.env_remove("DPREPO_PASSWORD")
        .env("DATASAFED_ENCRYPTION_PASS_PHRASE", "another phrase");
    let out = output_of(cmd);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("wrong password"), "{}", stderr(&out));
    // The controller's pre-check tells a repository made with another key from any other
    // failure by this wording.
    assert!(
        stderr(&out).contains(
            "was created with another key: wrong password: no key in the repository matches it"
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn configuration_from_ini_base_path_and_argv0() {
    let ds = Ds::local();
    let conf = ds.dir.path().join("datasafed.conf");
    std::fs::write(
        &conf,
        format!("[storage]\ntype = local\nroot = {}\n", s(&ds.repo())),
    )
    .expect("conf");
    // DATASAFED_CONFIG and -c, instead of DATASAFED_LOCAL_BACKEND_PATH.
    let via_ini = Ds {
        dir: tempfile::tempdir().expect("tmp"),
        vars: vec![
            ("DATASAFED_CONFIG".into(), s(&conf).into()),
            (
                "DATASAFED_BACKEND_BASE_PATH".into(),
                "ns/cluster-1/backup-a".into(),
            ),
        ],
    };
    via_ini.push("base.tar.zst", &["-z", "zstd-fastest"], b"database files");
    via_ini.push(
        "wal/20240101/000000010000000000000001.zst",
        &["-z", "zstd-fastest"],
        b"wal",
    );
    // Inside the base path, paths are relative to it.
    assert_eq!(via_ini.lines(&["list", "base.tar.zst"]), ["base.tar.zst"]);
    assert_eq!(via_ini.lines(&["list", "/"]), ["base.tar.zst", "wal/"]);
    // The same repository without a base path sees the full paths (-c here).
    let mut plain = Command::new(datasafed_bin());
    clean_env(&mut plain);
    plain
        .env("DPREPO_PASSWORD", PASSWORD)
        .args(["-c", s(&conf), "list", "-r", "-f", "ns"])
        .stdin(Stdio::null());
    let out = output_of(plain);
    assert_success(&out, &["list"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ns/cluster-1/backup-a/base.tar.zst\nns/cluster-1/backup-a/wal/20240101/000000010000000000000001.zst\n"
    );
    // dprepo shows one database's backups by directory.
    let of_cluster = ds.snapshots(&["--path", "/ns/cluster-1"]);
    assert_eq!(of_cluster.len(), 2);
    assert!(ds.snapshots(&["--path", "/ns/cluster-2"]).is_empty());
    // A missing explicit config file is an error.
    let mut cmd = Command::new(datasafed_bin());
    clean_env(&mut cmd);
    cmd.env("DPREPO_PASSWORD", PASSWORD)
        .env("DATASAFED_CONFIG", ds.dir.path().join("nope.conf"))
        .args(["list", "/"]);
    assert_eq!(output_of(cmd).status.code(), Some(1));
    // `dprepo datasafed ...` and a link named datasafed behave the same.
    let link = ds.dir.path().join("bin/datasafed");
    std::fs::create_dir_all(link.parent().expect("parent")).expect("bin dir");
    std::os::unix::fs::symlink(dprepo_bin(), &link).expect("symlink");
    for program in [link.as_path(), dprepo_bin().as_path()] {
        let mut cmd = Command::new(program);
        clean_env(&mut cmd);
        if program == dprepo_bin().as_path() {
            cmd.arg("datasafed");
        }
        cmd.env("DPREPO_PASSWORD", PASSWORD)
            .env("DATASAFED_LOCAL_BACKEND_PATH", ds.repo())
            .args(["list", "-r", "-f", "/ns/cluster-1/backup-a/wal"]);
        let out = output_of(cmd);
        assert_success(&out, &["list"]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "ns/cluster-1/backup-a/wal/20240101/000000010000000000000001.zst\n",
            "{}",
            program.display()
        );
    }
}

#[test]
fn a_second_similar_stream_stores_far_less() {
    let ds = Ds::local();
    let len = 64 << 20;
    let first = random_bytes(7, len);
    let mut second = first.clone();
    // A few changed places, as between two base backups of a quiet database.
    for (i, at) in [1usize << 20, 17 << 20, 40 << 20, 63 << 20]
        .iter()
        .enumerate()
    {
        second[*at..*at + 4096].fill(i as u8 + 1);
    }
    // As the scripts push them: compressed by name, one file per backup.
    ds.push("/pg/backup-1.tar.zst", &["-z", "zstd-fastest"], &first);
    ds.push("/pg/backup-2.tar.zst", &["-z", "zstd-fastest"], &second);
    let added = |path: &str| -> u64 {
        let snaps = ds.snapshots(&["--tag", &format!("datasafed:path={path}")]);
        assert_eq!(snaps.len(), 1);
        snaps[0]["summary"]["bytes_added"]
            .as_u64()
            .expect("bytes_added")
    };
    let (a1, a2) = (added("/pg/backup-1.tar.zst"), added("/pg/backup-2.tar.zst"));
    assert!(a1 >= len as u64, "first backup added only {a1} bytes");
    assert!(
        a2 < (len as u64) / 6,
        "second backup added {a2} of {len} bytes: no dedup"
    );
    assert!(ds.pull("/pg/backup-2.tar.zst", &["-d", "zstd-fastest"]) == second);
    // `dprepo stats` shows it per snapshot.
    let stats = ds.dprepo_json(&["stats", "--tag", "datasafed"]);
    let per: Vec<&serde_json::Value> = stats["per_snapshot"]
        .as_array()
        .expect("per")
        .iter()
        .collect();
    assert_eq!(per.len(), 2);
    let ratios: Vec<f64> = per
        .iter()
        .map(|p| p["dedup_ratio"].as_f64().unwrap_or(0.0))
        .collect();
    assert!(ratios.iter().any(|r| *r > 6.0), "{ratios:?}");
    let mut text = bare_cmd(["stats", "--tag", "datasafed"]);
    text.env("DPREPO_REPOSITORY", ds.repo())
        .env("DPREPO_PASSWORD", PASSWORD);
    let out = output_of(text);
    assert_success(&out, &["stats"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Dedup") && text.contains("/pg/backup-2.tar.zst"),
        "{text}"
    );
}

/// `pages` pages of 8 KiB as a database file holds them: a page header, rows of
/// varied values and some repetition, so they compress about 2:1 like real tables.
fn page_file(seed: u64, pages: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(pages * 8192);
    for page in 0..pages {
        out.extend(page_content(seed, page));
    }
    out
}

fn page_content(seed: u64, page: usize) -> Vec<u8> {
    let mut p = random_bytes(seed.wrapping_mul(1_000_003) + page as u64, 4096);
    let mut rows = String::new();
    let mut n = 0;
    while rows.len() < 4096 {
        rows.push_str(&format!("|row {page}.{n} status=active {}", p[n % 4096]));
        n += 1;
    }
    p.extend_from_slice(&rows.as_bytes()[..4096]);
    p
}

/// A stream of 8 KiB pages that is not a tar (a raw data file, a page-structured dump),
/// pushed again after 0.8% of its pages were rewritten at scattered places, stores
/// little more than those pages.
#[test]
fn scattered_page_rewrites_in_a_plain_stream_store_a_tenth_of_it() {
    // Was: such a stream was cut with the repository's 512 KiB average chunks, and the
    // second push stored 44% of its compressed size (issue 24).
    let pages = 4096; // 32 MiB; BENCHMARKS.md has the 200 MB figure
    let first = page_file(1, pages);
    let mut second = first.clone();
    let rewritten = pages * 8 / 1000;
    for i in 0..rewritten {
        let page = (i * 7919 + 101) % pages;
        second[page * 8192..(page + 1) * 8192].copy_from_slice(&page_content(2, page));
    }
    let compressed = zstd::bulk::compress(&second, 1).unwrap().len() as u64;
    let ds = Ds::local();
    ds.push("/raw/backup-1.dat.zst", &["-z", "zstd-fastest"], &first);
    let after_first = dir_size(&ds.repo());
    ds.push("/raw/backup-2.dat.zst", &["-z", "zstd-fastest"], &second);
    let stored = dir_size(&ds.repo()) - after_first;
    eprintln!(
        "first push stored {after_first} B, second {stored} B; zstd-fastest of the stream \
         {compressed} B ({rewritten} of {pages} pages rewritten)"
    );
    assert!(
        stored * 10 <= compressed,
        "the second push stored {stored} B, more than a tenth of {compressed} B"
    );
    // The first push costs about what datasafed stores (zstd of the whole stream).
    assert!(
        after_first * 100 <= compressed * 115,
        "the first push stored {after_first} B against {compressed} B compressed"
    );
    assert!(ds.pull("/raw/backup-2.dat.zst", &["-d", "zstd-fastest"]) == second);
    assert!(ds.pull("/raw/backup-1.dat.zst", &["-d", "zstd-fastest"]) == first);
    let snaps = ds.snapshots(&["--tag", "datasafed:path=/raw/backup-2.dat.zst"]);
    assert_eq!(snaps[0]["chunker"]["avg_size"], 16384, "{}", snaps[0]);
}

/// A tar of random 8 KiB pages in two relation files, with `changed` pages of the first
/// touched (a few rows each, by `seed`), as `pg_basebackup -Ft -D -` streams a database.
fn page_tar(changed: usize, seed: u64) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("base/5")).unwrap();
    let mut rel = random_bytes(11, 64 * 8192);
    for page in 0..changed {
        let at = page * 2 * 8192 + 500;
        rel[at..at + 40].copy_from_slice(&random_bytes(seed + page as u64, 40));
    }
    std::fs::write(dir.path().join("base/5/16384"), rel).unwrap();
    std::fs::write(dir.path().join("base/5/16390"), random_bytes(12, 16 * 8192)).unwrap();
    gnu_tar(dir.path())
}

/// The previous backup of the same database, found by the layouts backup scripts use
/// (a directory per backup, or a file per backup), lends its pages as delta bases.
#[test]
fn the_next_base_backup_stores_changed_pages_as_deltas() {
    for (first, second) in [
        (
            "/ns/pg/backup-1/base.tar.zst",
            "/ns/pg/backup-2/base.tar.zst",
        ),
        ("/pg/backup-1.tar.zst", "/pg/backup-2.tar.zst"),
        // KubeBlocks: <root>/<ns>/<policy>/<backup>/<target>/<backup>.tar.zst
        (
            "/kb/ns/pg-policy/backup-1/postgresql/backup-1.tar.zst",
            "/kb/ns/pg-policy/backup-2/postgresql/backup-2.tar.zst",
        ),
    ] {
        let ds = Ds::local();
        ds.push(
            "/pg/wal/000000010000000000000001.zst",
            &[],
            &sample(3, 10_000),
        );
        let (tar1, tar2) = (page_tar(0, 0), page_tar(20, 100));
        ds.push(first, &["-z", "zstd-fastest"], &tar1);
        // Something else is pushed in between, elsewhere and next to it.
        ds.push("/ns/other/backup-1/base.tar.zst", &[], &page_tar(5, 200));
        ds.push("/pg/000000010000000000000002.zst", &[], &sample(4, 10_000));
        ds.push(second, &["-z", "zstd-fastest"], &tar2);
        let snaps = ds.snapshots(&["--tag", &format!("datasafed:path={second}")]);
        assert_eq!(snaps.len(), 1);
        let parent = ds.snapshots(&["--tag", &format!("datasafed:path={first}")]);
        assert_eq!(
            snaps[0]["parent"], parent[0]["id"],
            "{second}: {}",
            snaps[0]
        );
        // The 20 touched pages (0, 2, .. 38) lie in page groups 0..3 of 16 pages.
        assert_eq!(
            snaps[0]["summary"]["deltas_added"], 3,
            "{second}: {}",
            snaps[0]
        );
        assert!(ds.pull(second, &["-d", "zstd-fastest"]) == tar2);
        assert!(ds.pull(first, &["-d", "zstd-fastest"]) == tar1);
    }
}

#[test]
fn concurrent_first_pushes_share_one_repository() {
    let ds = Ds::local();
    let children: Vec<_> = (0..3)
        .map(|i| {
            let mut cmd = ds.cmd(&["push", "-", &format!("/c/{i}")]);
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = cmd.spawn().expect("spawn");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(format!("stream {i}").as_bytes())
                .expect("write");
            child
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("wait");
        assert_success(&out, &["push"]);
    }
    assert_eq!(ds.lines(&["list", "c"]), ["c/0", "c/1", "c/2"]);
    assert_eq!(ds.pull("/c/2", &[]), b"stream 2");
}

#[test]
fn s3_storage_from_the_datasafed_config() {
    ensure_s3_bucket();
    let dir = tempfile::tempdir().expect("tmp");
    let prefix = format!(
        "datasafed-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    let conf = dir.path().join("datasafed.conf");
    std::fs::write(
        &conf,
        format!(
            "[storage]\ntype = s3\nprovider = Minio\nenv_auth = false\naccess_key_id = test\nsecret_access_key = test\n\
             region = us-east-1\nendpoint = {}\nroot = {S3_BUCKET}/{prefix}\nforce_path_style = true\n",
            s3_endpoint()
        ),
    )
    .expect("conf");
    let ds = Ds {
        dir,
        vars: vec![
            ("DATASAFED_CONFIG".into(), s(&conf).into()),
            (
                "DATASAFED_BACKEND_BASE_PATH".into(),
                "mysql/backup-1".into(),
            ),
        ],
    };
    let data = sample(9, 2 << 20);
    ds.push("xtrabackup.xbstream.zst", &["-z", "zstd-fastest"], &data);
    assert_eq!(
        ds.lines(&["list", "xtrabackup.xbstream.zst"]),
        ["xtrabackup.xbstream.zst"]
    );
    assert!(ds.pull("xtrabackup.xbstream.zst", &["-d", "zstd-fastest"]) == data);
    assert!(decode("zstd", &ds.pull("xtrabackup.xbstream.zst", &[])) == data);
    ds.ok(&["rm", "-r", "/"]);
    assert!(ds.lines(&["list", "-r", "/"]).is_empty());
    // The repository is really in the bucket.
    let storage = s3_storage(&prefix);
    assert!(block_on_list(&storage, "snapshots/").is_empty());
    assert!(!block_on_list(&storage, "data/").is_empty());
}

fn block_on_list(storage: &dprepo_repo_format::storage::S3Storage, prefix: &str) -> Vec<String> {
    use dprepo_repo_format::storage::Storage;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(storage.list(prefix))
        .expect("list")
        .into_iter()
        .map(|b| b.name)
        .collect()
}

/// `dprepo gc` run where only datasafed is set up (the controller's GC Job): no `-r`, the
/// storage from DATASAFED_LOCAL_BACKEND_PATH or the datasafed config, the key from the
/// environment, and a one-line JSON summary in `--summary-file` (the pod's termination
/// message), also when it fails.
#[test]
fn dprepo_gc_finds_the_datasafed_storage_and_writes_a_summary() {
    let ds = Ds::local();
    ds.push("/ns/a.bin", &[], &sample(71, 3 << 20));
    ds.push("/ns/b.bin", &[], &sample(72, 3 << 20));
    ds.ok(&["rm", "/ns/a.bin"]);
    let summary = ds.dir.path().join("summary.json");
    let gc = |vars: &[(&str, &str)], extra: &[&str]| {
        let mut cmd = Command::new(dprepo_bin());
        clean_env(&mut cmd);
        cmd.env("XDG_CACHE_HOME", ds.dir.path().join("cache"))
            .args(["gc", "--summary-file"])
            .arg(&summary)
            .args(extra)
            .stdin(Stdio::null());
        for (k, v) in vars {
            cmd.env(k, v);
        }
        output_of(cmd)
    };
    let repo = s(&ds.repo()).to_string();
    // A dry run through a datasafed config file names what would go.
    let conf = ds.dir.path().join("datasafed.conf");
    std::fs::write(&conf, format!("[storage]\ntype = local\nroot = {repo}\n")).unwrap();
    let out = gc(
        &[
            ("DATASAFED_CONFIG", s(&conf)),
            ("DPREPO_PASSWORD", PASSWORD),
        ],
        &["--dry-run"],
    );
    assert_success(&out, &["gc", "--dry-run"]);
    let text = std::fs::read_to_string(&summary).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let dry: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(dry["dryRun"], true);
    assert_eq!(dry["snapshots"], 1);
    assert!(dry["bytesFreed"].as_u64().unwrap() > 0, "{dry}");
    assert_eq!(ds.snapshots(&[]).len(), 1);

    let out = gc(
        &[
            ("DATASAFED_LOCAL_BACKEND_PATH", repo.as_str()),
            ("DPREPO_PASSWORD", PASSWORD),
        ],
        &[],
    );
    assert_success(&out, &["gc"]);
    let done: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(done["dryRun"], false);
    assert!(done["packsDeleted"].as_u64().unwrap() >= 1, "{done}");
    assert!(done["bytesFreed"].as_u64().unwrap() > 0, "{done}");
    assert_eq!(ds.pull("/ns/b.bin", &[]), sample(72, 3 << 20));

    // A wrong key fails, and the summary carries the error instead of counts.
    let out = gc(
        &[
            ("DATASAFED_LOCAL_BACKEND_PATH", repo.as_str()),
            ("DPREPO_PASSWORD", "not the key"),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let failed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert!(
        failed["error"].as_str().unwrap().contains("wrong password"),
        "{failed}"
    );
    // Nothing configured at all: the error names every way to give a repository.
    let out = gc(&[("DPREPO_PASSWORD", PASSWORD)], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("DATASAFED_LOCAL_BACKEND_PATH"),
        "{}",
        stderr(&out)
    );
}

// ---------------------------------------------------------------------------------
// The catalogue (SPEC.md section 14.2): what a fresh process (a Kubernetes pod, whose
// cache is always empty) reads to list a WAL archive.

/// A datasafed backend on either storage, with an access key (no password hashing per
/// call), and a direct storage client to look at and damage what it stored.
struct CatalogCase {
    ds: Ds,
    storage: std::sync::Arc<dyn dprepo_repo_format::storage::Storage>,
    key: String,
}

impl CatalogCase {
    fn new(backend: Backend) -> CatalogCase {
        use std::sync::Arc;
        let (ds, storage): (Ds, Arc<dyn dprepo_repo_format::storage::Storage>) = match backend {
            Backend::Local => {
                let ds = Ds::local();
                let storage = Arc::new(dprepo_repo_format::storage::LocalStorage::new(ds.repo()));
                (ds, storage)
            }
            Backend::S3 => {
                ensure_s3_bucket();
                let dir = tempfile::tempdir().expect("tmp");
                let prefix = format!(
                    "catalog-{}-{}",
                    std::process::id(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos())
                        .unwrap_or_default()
                );
                let conf = dir.path().join("datasafed.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "[storage]\ntype = s3\naccess_key_id = test\nsecret_access_key = test\n\
                         region = us-east-1\nendpoint = {}\nroot = {S3_BUCKET}/{prefix}\nforce_path_style = true\n",
                        s3_endpoint()
                    ),
                )
                .expect("conf");
                let ds = Ds {
                    dir,
                    vars: vec![("DATASAFED_CONFIG".into(), s(&conf).into())],
                };
                (ds, Arc::new(s3_storage(&prefix)))
            }
        };
        // The first push creates the repository with the password; the rest use a key.
        ds.push("/wal/first", &[], b"first");
        let secret = "7e".repeat(32);
        let secret_file = ds.dir.path().join("secret");
        std::fs::write(&secret_file, &secret).expect("secret");
        let out = ds.ok(&["access-key", "--secret-file", s(&secret_file)]);
        let id = out
            .trim()
            .strip_prefix("dprepo-access-key-id: ")
            .expect("key id")
            .to_string();
        let key = format!("dprepo-ak1-{id}-{secret}");
        let key_file = ds.dir.path().join("access-key");
        std::fs::write(&key_file, &key).expect("key file");
        let ds = ds.with("DPREPO_ACCESS_KEY_FILE", s(&key_file));
        CatalogCase { ds, storage, key }
    }

    fn block<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    fn names(&self, prefix: &str) -> Vec<String> {
        self.block(self.storage.list_names(prefix)).expect("list")
    }

    /// `datasafed list -r /` in a fresh process with an empty cache directory: the
    /// listed files, the GET requests it made (every one: it reads no index file) and
    /// its stderr.
    fn fresh_list(&self) -> (Vec<String>, u64, String) {
        let (out, gets, err) = self.fresh(&["list", "-r", "-f", "/"]);
        let files = String::from_utf8(out)
            .expect("utf-8")
            .lines()
            .map(str::to_string)
            .collect();
        (files, gets, err)
    }

    /// `datasafed ARGS` in a fresh process with an empty cache directory: its stdout,
    /// the GET requests it made and its stderr.
    fn fresh(&self, args: &[&str]) -> (Vec<u8>, u64, String) {
        let fresh = tempfile::tempdir().expect("cache");
        let mut cmd = self.ds.cmd(args);
        cmd.env("XDG_CACHE_HOME", fresh.path())
            .env("DPREPO_CACHE_DIR", fresh.path())
            .env("DPREPO_DATASAFED_REQUESTS", "1");
        let out = output_of(cmd);
        assert_success(&out, args);
        let err = stderr(&out);
        let counts: serde_json::Value = err
            .lines()
            .find_map(|l| serde_json::from_str(l).ok())
            .unwrap_or_else(|| panic!("no request counts on stderr: {err}"));
        let gets = counts["requests"]["get"].as_u64().expect("get count");
        (out.stdout, gets, err)
    }

    /// Store catalogue objects directly (as an earlier writer would have): one per
    /// `per` listed datasafed snapshots.
    fn write_catalogue_objects(&self, per: usize) -> usize {
        use dprepo_repo_format::catalog::{self, Entry, Kind};
        use dprepo_repo_format::repo::IndexPlace;
        use dprepo_repo_format::Repository;
        let key = dprepo_repo_format::key::AccessKey::parse(self.key.as_bytes()).expect("key");
        self.block(async {
            let repo =
                Repository::open_with_access_key(self.storage.clone(), &key, &IndexPlace::Memory)
                    .await
                    .expect("open");
            let snaps = repo.list_snapshots().await.expect("snapshots");
            let entries: Vec<Entry> = snaps
                .iter()
                .filter_map(|s| {
                    let path = s
                        .manifest
                        .tags
                        .iter()
                        .find_map(|t| t.strip_prefix("datasafed:path="))?;
                    Some(Entry {
                        id: s.id,
                        time: s.manifest.time,
                        tree: s.manifest.tree,
                        size: s.manifest.summary.total_bytes,
                        kind: Kind::File,
                        path: path.to_string(),
                        codec: "none".into(),
                    })
                })
                .collect();
            let mut n = 0;
            for chunk in entries.chunks(per) {
                let (name, bytes) = catalog::seal(repo.keys(), chunk);
                self.storage.put(&name, &bytes).await.expect("put");
                n += 1;
            }
            n
        })
    }
}

fn wal_names(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("wal/{i:04}")).collect()
}

both_backends!(a_fresh_process_lists_from_the_catalogue_and_forgotten_files_vanish);
fn a_fresh_process_lists_from_the_catalogue_and_forgotten_files_vanish(backend: Backend) {
    let case = CatalogCase::new(backend);
    let ds = &case.ds;
    ds.ok(&["rm", "/wal/first"]);
    // WAL archiving: one push per segment. The 64th uncovered snapshot makes a push
    // record them all in one catalogue object.
    for i in 0..70 {
        ds.push(
            &format!("/wal/{i:04}"),
            &[],
            format!("segment {i}").as_bytes(),
        );
    }
    assert_eq!(case.names("catalog/").len(), 1, "one catalogue object");
    // One index file per push: a fresh process that reads no blob reads none of them
    // (it opened the repository without loading the index).
    assert!(case.names("index/").len() >= 70, "an index file per push");
    let (files, gets, err) = case.fresh_list();
    assert_eq!(files, wal_names(0..70));
    // The config, the key file, one catalogue object and the 6 manifests pushed after
    // it (9); without the catalogue, 72, and 70 more with the index loaded at open.
    assert!(gets <= 12, "{gets} GETs for 70 files: {err}");
    assert!(!err.contains("Warning"), "{err}");
    let (out, gets, err) = case.fresh(&["stat", "--json", "/"]);
    assert_eq!(
        String::from_utf8_lossy(&out),
        "{\"dirs\":1,\"entries\":71,\"files\":70,\"total_size\":690}\n"
    );
    assert!(gets <= 12, "{gets} GETs for stat: {err}");
    // A pull reads blobs: it loads the index at its first lookup, and finds the file.
    let (out, _, _) = case.fresh(&["pull", "/wal/0042", "-"]);
    assert_eq!(out, b"segment 42");

    // Forgotten snapshots vanish though the catalogue still holds them.
    ds.ok(&["rm", "/wal/0003"]);
    ds.ok(&["rm", "/wal/0068"]);
    let mut expected = wal_names(0..70);
    expected.retain(|p| p != "wal/0003" && p != "wal/0068");
    assert_eq!(case.fresh_list().0, expected);

    // A catalogue object deleted (a concurrent merge): the manifests answer, and a
    // call that read that many records them again.
    for name in case.names("catalog/") {
        case.block(case.storage.delete(&name)).expect("delete");
    }
    let (files, gets, _) = case.fresh_list();
    assert_eq!(files, expected);
    assert!(gets >= 68, "{gets} GETs: the manifests were read");
    assert_eq!(case.names("catalog/").len(), 1, "the list recorded them");
    let (files, gets, _) = case.fresh_list();
    assert_eq!(files, expected);
    assert!(gets <= 6, "{gets} GETs once recorded again");
}

both_backends!(a_damaged_catalogue_object_falls_back_to_the_manifests_with_a_warning);
/// A catalogue object that does not open is reported and its files are read from their
/// manifests: the call never fails on it, and never trusts it.
fn a_damaged_catalogue_object_falls_back_to_the_manifests_with_a_warning(backend: Backend) {
    let case = CatalogCase::new(backend);
    let ds = &case.ds;
    for i in 0..5 {
        ds.push(
            &format!("/wal/{i:04}"),
            &[],
            format!("segment {i}").as_bytes(),
        );
    }
    case.write_catalogue_objects(100);
    let name = case.names("catalog/").pop().expect("an object");
    let mut bytes = case.block(case.storage.get(&name)).expect("get");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    case.block(case.storage.put(&name, &bytes)).expect("put");
    let (files, gets, err) = case.fresh_list();
    let mut expected = wal_names(0..5);
    expected.push("wal/first".into());
    assert_eq!(files, expected);
    assert!(
        err.contains(&format!("Warning: {name} cannot be read")),
        "{err}"
    );
    assert!(gets >= 6, "the manifests were read: {gets} GETs");
    // A push still works beside it.
    ds.push("/wal/0005", &[], b"segment 5");
    expected.insert(5, "wal/0005".into());
    assert_eq!(case.fresh_list().0, expected);
}

/// Two processes merging the same catalogue objects at once: each stores the merged
/// object before deleting what it read, so every file stays covered.
#[test]
fn two_concurrent_catalogue_merges_keep_every_file_covered() {
    let case = CatalogCase::new(Backend::Local);
    let ds = &case.ds;
    for i in 0..40 {
        ds.push(
            &format!("/wal/{i:04}"),
            &[],
            format!("segment {i}").as_bytes(),
        );
    }
    // 41 files in 21 objects of 2: more than 16, so the next calls merge.
    assert_eq!(case.write_catalogue_objects(2), 21);
    let children: Vec<_> = (0..2)
        .map(|_| {
            let mut cmd = ds.cmd(&["list", "-r", "/"]);
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            cmd.spawn().expect("spawn")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("wait");
        assert_success(&out, &["list", "-r", "/"]);
    }
    let objects = case.names("catalog/").len();
    assert!(objects < 21, "merged: {objects} objects");
    let (files, gets, err) = case.fresh_list();
    let mut expected = wal_names(0..40);
    expected.push("wal/first".into());
    assert_eq!(files, expected);
    // The config, the key file and the catalogue objects: no manifest.
    assert!(
        gets <= objects as u64 + 3,
        "{gets} GETs with {objects} objects: coverage was lost\n{err}"
    );
}

/// A push keeps in memory only the catalogue entries of its own path (a WAL archive has
/// 100,000), so when it merges catalogue objects it reads them again: every file of the
/// merged objects must stay covered, and a pull (which keeps only its path's entries
/// too) still finds its file and refuses a directory.
#[test]
fn a_push_that_merges_catalogue_objects_keeps_every_other_file_covered() {
    let case = CatalogCase::new(Backend::Local);
    let ds = &case.ds;
    for i in 0..40 {
        ds.push(
            &format!("/wal/{i:04}"),
            &[],
            format!("segment {i}").as_bytes(),
        );
    }
    // 41 files in 21 objects of 2: more than 16, so the next push merges.
    assert_eq!(case.write_catalogue_objects(2), 21);
    ds.push("/wal/0040", &[], b"segment 40");
    let objects = case.names("catalog/").len();
    assert!(objects < 21, "merged: {objects} objects");
    let (files, gets, err) = case.fresh_list();
    let mut expected = wal_names(0..41);
    expected.push("wal/first".into());
    assert_eq!(files, expected);
    // The config, the key file, the catalogue objects and at most the new file's
    // manifest: every file of the merged objects is still covered.
    assert!(
        gets <= objects as u64 + 4,
        "{gets} GETs with {objects} objects: coverage was lost\n{err}"
    );
    assert_eq!(case.fresh(&["pull", "/wal/0007", "-"]).0, b"segment 7");
    let mut cmd = ds.cmd(&["pull", "/wal", "-"]);
    cmd.env("DPREPO_CACHE_DIR", ds.dir.path().join("fresh"));
    let out = output_of(cmd);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is a directory not a file"),
        "{}",
        stderr(&out)
    );
}
