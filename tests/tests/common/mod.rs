//! Shared helpers of the end-to-end tests: locating the `dprepo` binary, running it in
//! a throw-away environment, generating reproducible data, and comparing trees.
//!
//! Every test gets its own temporary directory holding the repository and the source
//! trees, and runs the real binary with only the `DPREPO_*` variables it sets itself.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dprepo_repo_format::storage::{BlobInfo, S3Options, S3Storage, Storage};

pub mod cluster;

/// Password of the repositories the tests create.
pub const PASSWORD: &str = "correct horse battery staple";

/// Path of the `dprepo` binary built by `cargo build -p dprepo-tools`.
///
/// `CARGO_BIN_EXE_dprepo` only exists for tests of the package owning the binary, so look
/// next to this test executable (`target/<profile>/deps/..`), then in `$CARGO_TARGET_DIR`
/// and `<workspace>/target`.
pub fn dprepo_bin() -> PathBuf {
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            candidates.push(profile_dir.join("dprepo"));
        }
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(dir).join("debug").join("dprepo"));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/dprepo"));
    match candidates.iter().find(|c| c.is_file()) {
        Some(found) => found.clone(),
        None => panic!(
            "the dprepo binary was not found (looked at {candidates:?}); run `cargo build -p dprepo-tools` first"
        ),
    }
}

/// Where the repository of a [`TestEnv`] lives.
///
/// Tests that edit or copy repository files on disk (`corruption.rs`, `golden.rs`) stay
/// on [`Backend::Local`]; damaged storage is tested below the CLI, through the storage
/// trait (`repo-format/tests/verify_repair.rs`) and against S3 faults
/// (`repo-format/tests/s3_faults.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The directory `<dir>/repo`.
    Local,
    /// A prefix no other test uses in bucket [`S3_BUCKET`] of the S3 test server
    /// ([`s3_endpoint`]), reached with static test credentials and a private metadata
    /// cache in `<dir>/cache`.
    S3,
}

/// Bucket of the S3 test server holding the repositories of the S3 tests.
pub const S3_BUCKET: &str = "dprepo-test";

/// `both_backends!(name)` turns `fn name(backend: Backend)` into two tests,
/// `name::local` and `name::s3` (filter with `cargo test s3`).
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[test]
            fn local() {
                super::$name($crate::common::Backend::Local)
            }
            #[test]
            fn s3() {
                super::$name($crate::common::Backend::S3)
            }
        }
    )+};
}

/// A temporary directory, and a repository location: `<dir>/repo` on the local backend,
/// a fresh prefix of the test bucket on S3.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    /// The local repository directory (unused by [`Backend::S3`] environments).
    pub repo: PathBuf,
    pub password: String,
    pub backend: Backend,
    /// S3 key prefix of the repository (S3 only).
    s3_prefix: Option<String>,
    /// Delete the S3 prefix on drop (false for environments sharing another's).
    owns_prefix: bool,
}

impl TestEnv {
    /// A fresh local directory; the repository is not created.
    pub fn new() -> TestEnv {
        TestEnv::new_with(Backend::Local)
    }

    /// A fresh local directory with an initialised repository (default settings).
    pub fn init() -> TestEnv {
        TestEnv::init_with(Backend::Local)
    }

    /// A fresh environment on `backend`; the repository is not created. For S3 this
    /// creates the test bucket if needed and panics with instructions when the server
    /// cannot be reached.
    pub fn new_with(backend: Backend) -> TestEnv {
        let dir = tempfile::Builder::new()
            .prefix("dprepo-test-")
            .tempdir()
            .expect("create temp dir");
        let repo = dir.path().join("repo");
        let s3_prefix = match backend {
            Backend::Local => None,
            Backend::S3 => {
                ensure_s3_bucket();
                Some(unique_s3_prefix())
            }
        };
        TestEnv {
            dir,
            repo,
            password: PASSWORD.to_string(),
            backend,
            s3_prefix,
            owns_prefix: true,
        }
    }

    /// A fresh environment on `backend` with an initialised repository.
    pub fn init_with(backend: Backend) -> TestEnv {
        let env = TestEnv::new_with(backend);
        env.ok(&["init"]);
        env
    }

    /// Another environment (own directory and cache) on the same repository, using
    /// `password`. Dropping it leaves the repository alone.
    pub fn same_repository(&self, password: &str) -> TestEnv {
        let mut other = TestEnv::new();
        other.repo = self.repo.clone();
        other.password = password.to_string();
        other.backend = self.backend;
        other.s3_prefix = self.s3_prefix.clone();
        other.owns_prefix = false;
        other
    }

    /// The repository as given to `dprepo -r`: a path, or `s3://BUCKET/PREFIX`.
    pub fn location(&self) -> String {
        match &self.s3_prefix {
            None => s(&self.repo).to_string(),
            Some(prefix) => format!("s3://{S3_BUCKET}/{prefix}"),
        }
    }

    /// `<dir>/<rel>`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Set what `cmd` needs to reach this environment's backend, without the repository
    /// and password: a private cache, and for S3 the test server and credentials (and no
    /// other `AWS_*` variable of the caller's environment).
    pub fn storage_env(&self, cmd: &mut Command) {
        // Keep any local cache the tool may write away from the user's own.
        cmd.env("XDG_CACHE_HOME", self.dir.path().join("cache"))
            .env("DPREPO_CACHE_DIR", self.dir.path().join("cache/dprepo"));
        if self.backend == Backend::S3 {
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("AWS_") {
                    cmd.env_remove(&key);
                }
            }
            cmd.env("AWS_ACCESS_KEY_ID", "test")
                .env("AWS_SECRET_ACCESS_KEY", "test")
                .env("AWS_REGION", "us-east-1")
                .env("AWS_ENDPOINT_URL", s3_endpoint());
        }
    }

    /// A `dprepo` command with no inherited `DPREPO_*` variables, the repository and
    /// password of this environment, stdin from /dev/null, working directory `dir`.
    pub fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = bare_cmd(args);
        self.storage_env(&mut cmd);
        cmd.env("DPREPO_REPOSITORY", self.location())
            .env("DPREPO_PASSWORD", &self.password)
            .current_dir(self.dir.path());
        cmd
    }

    /// Run `dprepo args` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        output_of(self.cmd(args))
    }

    /// Start `dprepo args` with piped stdout and stderr.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start dprepo {args:?}: {e}"))
    }

    /// Names of the files directly in `<repo>/<sub>` of a local repository, sorted,
    /// without the temporary files a killed process may leave (`.tmp-*`).
    pub fn repo_file_names(&self, sub: &str) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.repo.join(sub))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with(".tmp-"))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Run `dprepo args`, assert it succeeded without a panic, return its output.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert_success(&out, args);
        out
    }

    /// Run `dprepo --json args`, assert success, parse stdout as one JSON document.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        parse_json(&self.ok(&all), args)
    }

    /// Run `dprepo args`, assert it failed cleanly (see [`assert_clean_failure`]) and
    /// return the error line.
    pub fn fail(&self, args: &[&str]) -> String {
        assert_clean_failure(&self.run(args), args)
    }

    /// `backup --json PATH...`, returning the snapshot document.
    pub fn backup(&self, paths: &[&Path], extra: &[&str]) -> serde_json::Value {
        let mut args: Vec<&str> = vec!["backup"];
        args.extend(paths.iter().map(|p| s(p)));
        args.extend_from_slice(extra);
        self.json(&args)
    }

    /// `backup --stdin --stdin-name NAME` with `data` on stdin; returns the snapshot id.
    pub fn backup_stream(&self, name: &str, data: &[u8]) -> String {
        let doc = self.backup_stream_with(name, data, &[]);
        doc["id"].as_str().expect("snapshot id").to_string()
    }

    /// `--json backup --stdin --stdin-name NAME EXTRA...` with `data` on stdin; returns
    /// the snapshot document.
    pub fn backup_stream_with(&self, name: &str, data: &[u8], extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["--json", "backup", "--stdin", "--stdin-name", name];
        args.extend_from_slice(extra);
        let mut child = self
            .cmd(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dprepo");
        let mut stdin = child.stdin.take().expect("stdin");
        let data = data.to_vec();
        // Written from another thread, so a large stream cannot deadlock against the
        // piped output.
        let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &data));
        let out = child.wait_with_output().expect("wait for dprepo");
        writer
            .join()
            .expect("writer thread")
            .expect("write stream to dprepo");
        parse_json(&out, &args)
    }

    /// Every snapshot (`snapshots --json`), oldest first.
    pub fn snapshots(&self) -> Vec<serde_json::Value> {
        self.json(&["snapshots"])
            .as_array()
            .expect("snapshots --json is an array")
            .clone()
    }

    /// `dump SNAPSHOT PATH` as bytes.
    pub fn dump(&self, snapshot: &str, path: &str) -> Vec<u8> {
        self.ok(&["dump", snapshot, path]).stdout
    }

    /// Total size of the files (S3: objects) of the repository.
    pub fn repo_size(&self) -> u64 {
        match self.backend {
            Backend::Local => dir_size(&self.repo),
            Backend::S3 => self.s3_list("").iter().map(|b| b.size).sum(),
        }
    }

    /// Every file under `<repo>/<sub>`, sorted. Local: full paths; S3: object names
    /// relative to the repository (`data/ab/ab12..`), which only tests counting or
    /// naming objects may use.
    pub fn repo_files(&self, sub: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        match self.backend {
            Backend::Local => collect_files(&self.repo.join(sub), &mut out),
            Backend::S3 => {
                let prefix = match sub.trim_end_matches('/') {
                    "" => String::new(),
                    dir => format!("{dir}/"),
                };
                out.extend(
                    self.s3_list(&prefix)
                        .into_iter()
                        .map(|b| PathBuf::from(b.name)),
                );
            }
        }
        out.sort();
        out
    }

    /// Whether the repository holds the file (S3: object) `name`, e.g. `config`.
    pub fn repo_has(&self, name: &str) -> bool {
        match self.backend {
            Backend::Local => self.repo.join(name).is_file(),
            Backend::S3 => self.s3_list(name).iter().any(|b| b.name == name),
        }
    }

    /// The objects whose names start with `prefix`, listed directly on the server.
    pub fn s3_list(&self, prefix: &str) -> Vec<BlobInfo> {
        let storage = s3_storage(self.s3_prefix.as_deref().expect("an S3 environment"));
        s3_runtime()
            .block_on(storage.list(prefix))
            .unwrap_or_else(|e| panic!("list {prefix:?} on the S3 test server: {e}"))
    }
}

impl Drop for TestEnv {
    /// Restored read-only directories would stop the temp dir from being removed; an
    /// S3 repository is deleted so the test server's memory does not fill up across runs,
    /// unless the test failed (then it is kept for a look and its location printed).
    fn drop(&mut self) {
        make_writable(self.dir.path());
        if let (Some(prefix), true) = (&self.s3_prefix, self.owns_prefix) {
            if std::thread::panicking() {
                eprintln!(
                    "keeping the S3 repository of the failed test: {}",
                    self.location()
                );
            } else {
                delete_s3_prefix(prefix);
            }
        }
    }
}

/// URL of the S3 test server: `DPREPO_TEST_S3_ENDPOINT` (set by `scripts/test.sh`), by
/// default `http://127.0.0.1:5000`.
pub fn s3_endpoint() -> String {
    std::env::var("DPREPO_TEST_S3_ENDPOINT")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "http://127.0.0.1:5000".into())
}

/// Create the test bucket (once per test process) with a raw unsigned request, which
/// moto accepts; panics with instructions when the server cannot be reached.
pub fn ensure_s3_bucket() {
    static CREATED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let result = CREATED.get_or_init(|| {
        let endpoint = s3_endpoint();
        let host = endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let request = format!(
            "PUT /{S3_BUCKET} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let reply = std::net::TcpStream::connect(&host).and_then(|mut sock| {
            use std::io::{Read, Write};
            sock.set_read_timeout(Some(Duration::from_secs(10)))?;
            sock.write_all(request.as_bytes())?;
            let mut buf = String::new();
            sock.read_to_string(&mut buf)?;
            Ok(buf)
        });
        match reply {
            Ok(r)
                if r.starts_with("HTTP/1.1 200")
                    || r.starts_with("HTTP/1.1 409")
                    || r.starts_with("HTTP/1.0 200") =>
            {
                Ok(())
            }
            Ok(r) => Err(format!(
                "S3 test server at {endpoint} refused to create bucket {S3_BUCKET}: {}",
                r.lines().next().unwrap_or_default()
            )),
            Err(e) => Err(format!(
                "S3 test server not reachable at {endpoint} ({e}). Start it with `bash scripts/test.sh` (installs and runs moto), \
                 or `pip install 'moto[server]' && moto_server -H 127.0.0.1 -p 5000`, or set DPREPO_TEST_S3_ENDPOINT"
            )),
        }
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// A key prefix no other test, process or run uses.
fn unique_s3_prefix() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "e2e-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A direct client of the test bucket below `prefix`, for looking at what the binary
/// stored.
pub fn s3_storage(prefix: &str) -> S3Storage {
    let mut options = S3Options::new(S3_BUCKET, prefix);
    options.endpoint = Some(s3_endpoint());
    options.region = Some("us-east-1".into());
    options.access_key_id = Some("test".into());
    options.secret_access_key = Some("test".into());
    options.max_retries = 2;
    S3Storage::new(options).expect("S3 client of the test server")
}

/// The runtime the synchronous test helpers drive the S3 client on.
fn s3_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// Delete every object below `prefix`, ignoring errors (best effort, runs in `drop`).
fn delete_s3_prefix(prefix: &str) {
    let storage = Arc::new(s3_storage(prefix));
    s3_runtime().block_on(async move {
        let Ok(blobs) = storage.list("").await else {
            return;
        };
        let mut tasks = tokio::task::JoinSet::new();
        for chunk in blobs.chunks(blobs.len().div_ceil(8).max(1)) {
            let names: Vec<String> = chunk.iter().map(|b| b.name.clone()).collect();
            let storage = storage.clone();
            tasks.spawn(async move {
                for name in names {
                    let _ = storage.delete(&name).await;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    });
}

fn make_writable(dir: &Path) {
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return;
    };
    if meta.is_dir() {
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
        if let Ok(rd) = fs::read_dir(dir) {
            for e in rd.flatten() {
                make_writable(&e.path());
            }
        }
    }
}

/// A `dprepo` command with no `DPREPO_*` variables at all and stdin from /dev/null.
pub fn bare_cmd<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(dprepo_bin());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("DPREPO_") {
            cmd.env_remove(&key);
        }
    }
    cmd.args(args).stdin(Stdio::null());
    cmd
}

/// Run `cmd` to completion, capturing stdout and stderr.
pub fn output_of(mut cmd: Command) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Text of stderr.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Assert `out` is a success and nothing panicked.
pub fn assert_success(out: &Output, args: &[&str]) {
    let err = stderr(out);
    assert!(
        !err.contains("panicked"),
        "dprepo {args:?} panicked:\n{err}"
    );
    assert!(
        out.status.success(),
        "dprepo {args:?} failed with {}:\n{err}",
        out.status
    );
}

/// Parse the stdout of `--json` output as exactly one JSON document.
pub fn parse_json(out: &Output, args: &[&str]) -> serde_json::Value {
    assert_success(out, args);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "dprepo --json {args:?} printed invalid JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Assert `out` is a clean failure: a non-zero exit (not a signal), no panic, and stderr
/// is exactly one line starting with `dprepo: error:`. Returns that line.
pub fn assert_clean_failure(out: &Output, args: &[&str]) -> String {
    let err = stderr(out);
    assert!(
        !err.contains("panicked"),
        "dprepo {args:?} panicked:\n{err}"
    );
    match out.status.code() {
        Some(0) => panic!("dprepo {args:?} succeeded but was expected to fail; stderr:\n{err}"),
        Some(_) => {}
        None => panic!(
            "dprepo {args:?} was killed by a signal ({}); stderr:\n{err}",
            out.status
        ),
    }
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "dprepo {args:?}: expected one error line on stderr, got:\n{err}"
    );
    assert!(
        lines[0].starts_with("dprepo: error:"),
        "dprepo {args:?}: error line has the wrong form: {err}"
    );
    lines[0].to_string()
}

/// Assert `out` is a restore that went on past entries it could not restore: exit code
/// 1 (not a signal), no panic, one `dprepo: not restored: PATH: WHY` line per skipped
/// entry, then one `dprepo: error: restore incomplete ...` line last. Returns the
/// not-restored lines without their prefix.
pub fn assert_incomplete_restore(out: &Output, args: &[&str]) -> Vec<String> {
    let err = stderr(out);
    assert!(
        !err.contains("panicked"),
        "dprepo {args:?} panicked:\n{err}"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "dprepo {args:?}: expected exit code 1 for an incomplete restore; stderr:\n{err}"
    );
    let lines: Vec<&str> = err.lines().collect();
    let last = lines.last().copied().unwrap_or_default();
    assert!(
        last.starts_with("dprepo: error: restore incomplete"),
        "dprepo {args:?}: last line is not the incomplete-restore error:\n{err}"
    );
    let skipped: Vec<String> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("dprepo: not restored: "))
        .map(str::to_string)
        .collect();
    assert!(
        !skipped.is_empty(),
        "dprepo {args:?}: no entry is listed as not restored:\n{err}"
    );
    for l in &lines[..lines.len() - 1] {
        assert!(
            l.starts_with("dprepo: not restored: ") || l.starts_with("dprepo: warning: "),
            "dprepo {args:?}: unexpected stderr line {l:?}:\n{err}"
        );
    }
    skipped
}

/// `p` as `&str` (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// Where a backed-up absolute path `src` lands below a restore target (`TARGET/<src>`).
pub fn restored_path(target: &Path, src: &Path) -> PathBuf {
    target.join(src.strip_prefix("/").expect("absolute path"))
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd {
        let e = e.expect("read dir entry");
        let ft = e.file_type().expect("file type");
        if ft.is_dir() {
            collect_files(&e.path(), out);
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
}

/// Total size of the regular files under `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    let mut files = Vec::new();
    collect_files(dir, &mut files);
    files
        .iter()
        .map(|f| fs::metadata(f).expect("stat").len())
        .sum()
}

/// Reproducible pseudo-random bytes (xorshift64*), incompressible for zstd.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&last[..n]);
    }
}

/// `len` pseudo-random bytes from `seed`.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    XorShift::new(seed).fill(&mut v);
    v
}

/// `len` bytes of highly compressible text (numbered log-like lines).
pub fn text_bytes(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 64);
    let mut i = 0u64;
    while v.len() < len {
        v.extend_from_slice(
            format!("{i:08} INFO request served path=/api/v1/items status=200\n").as_bytes(),
        );
        i += 1;
    }
    v.truncate(len);
    v
}

/// Polls `/proc/<pid>/status` for `VmHWM` (peak resident set) while a child runs.
pub struct PeakRss {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<u64>,
}

impl PeakRss {
    pub fn watch(child: &Child) -> PeakRss {
        let pid = child.id();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak_kib = 0u64;
            while !flag.load(Ordering::Relaxed) {
                // Once the process exits its memory fields disappear; keep the last peak.
                if let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) {
                    if let Some(kib) = status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmHWM:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                    {
                        peak_kib = peak_kib.max(kib);
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            peak_kib * 1024
        });
        PeakRss { stop, handle }
    }

    /// Stop polling; the highest peak seen, in bytes.
    pub fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("rss watcher")
    }
}

/// What to compare in [`compare_trees`].
#[derive(Debug, Clone, Copy)]
pub struct Compare {
    /// Modes (& 0o7777) of files and directories.
    pub modes: bool,
    /// Modification times of files, directories and symlinks, to the nanosecond.
    pub mtimes: bool,
    /// Owner uid and gid.
    pub owners: bool,
    /// Also compare the metadata of the two roots themselves.
    pub root_metadata: bool,
}

impl Compare {
    /// Everything a restore must reproduce.
    pub const ALL: Compare = Compare {
        modes: true,
        mtimes: true,
        owners: true,
        root_metadata: true,
    };
    /// Only names, file types, file bytes and link targets.
    pub const CONTENT: Compare = Compare {
        modes: false,
        mtimes: false,
        owners: false,
        root_metadata: false,
    };
}

/// Compare the trees at `expected` and `actual` and panic listing every difference.
pub fn assert_same_tree(expected: &Path, actual: &Path, what: Compare) {
    let mut diffs = Vec::new();
    compare_entry(expected, actual, what, true, &mut diffs);
    assert!(
        diffs.is_empty(),
        "restored tree {} differs from {}:\n  {}",
        actual.display(),
        expected.display(),
        diffs.join("\n  ")
    );
}

fn compare_entry(
    expected: &Path,
    actual: &Path,
    what: Compare,
    is_root: bool,
    diffs: &mut Vec<String>,
) {
    let e = fs::symlink_metadata(expected).expect("stat expected entry");
    let a = match fs::symlink_metadata(actual) {
        Ok(m) => m,
        Err(err) => {
            diffs.push(format!("{}: missing ({err})", actual.display()));
            return;
        }
    };
    let name = actual.display();
    let (et, at) = (e.file_type(), a.file_type());
    let kind = |t: fs::FileType| {
        if t.is_symlink() {
            "symlink"
        } else if t.is_dir() {
            "dir"
        } else if t.is_file() {
            "file"
        } else {
            "special"
        }
    };
    if kind(et) != kind(at) {
        diffs.push(format!(
            "{name}: is a {} instead of a {}",
            kind(at),
            kind(et)
        ));
        return;
    }
    let check_meta = !is_root || what.root_metadata;
    if check_meta {
        if what.modes
            && !et.is_symlink()
            && e.permissions().mode() & 0o7777 != a.permissions().mode() & 0o7777
        {
            diffs.push(format!(
                "{name}: mode {:o} instead of {:o}",
                a.permissions().mode() & 0o7777,
                e.permissions().mode() & 0o7777
            ));
        }
        if what.mtimes && (e.mtime(), e.mtime_nsec()) != (a.mtime(), a.mtime_nsec()) {
            diffs.push(format!(
                "{name}: mtime {}.{:09} instead of {}.{:09}",
                a.mtime(),
                a.mtime_nsec(),
                e.mtime(),
                e.mtime_nsec()
            ));
        }
        if what.owners && (e.uid(), e.gid()) != (a.uid(), a.gid()) {
            diffs.push(format!(
                "{name}: owner {}:{} instead of {}:{}",
                a.uid(),
                a.gid(),
                e.uid(),
                e.gid()
            ));
        }
    }
    if et.is_symlink() {
        let (lt, la) = (
            fs::read_link(expected).expect("readlink"),
            fs::read_link(actual).expect("readlink"),
        );
        if lt != la {
            diffs.push(format!("{name}: link target {la:?} instead of {lt:?}"));
        }
    } else if et.is_file() {
        if e.len() != a.len() {
            diffs.push(format!("{name}: {} bytes instead of {}", a.len(), e.len()));
        } else if fs::read(expected).expect("read expected")
            != fs::read(actual).expect("read actual")
        {
            diffs.push(format!("{name}: content differs"));
        }
    } else if et.is_dir() {
        let names = |p: &Path| {
            let mut v: Vec<_> = fs::read_dir(p)
                .expect("read dir")
                .map(|d| d.expect("dir entry").file_name())
                .collect();
            v.sort();
            v
        };
        let (ne, na) = (names(expected), names(actual));
        for extra in na.iter().filter(|n| !ne.contains(n)) {
            diffs.push(format!(
                "{}: unexpected entry",
                actual.join(extra).display()
            ));
        }
        for n in &ne {
            compare_entry(&expected.join(n), &actual.join(n), what, false, diffs);
        }
    }
}

/// Set the mtime (and atime) of `path` without following a symlink.
pub fn set_mtime(path: &Path, sec: i64, nsec: u32) {
    let t = filetime::FileTime::from_unix_time(sec, nsec);
    filetime::set_symlink_file_times(path, t, t)
        .unwrap_or_else(|e| panic!("set times of {}: {e}", path.display()));
}

/// Set the permission bits of `path`.
pub fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// A TCP port on 127.0.0.1 that was free a moment ago and that this process has not handed
/// out before. The kernel may give the same ephemeral port to two `bind(0)` calls in a row
/// once the first listener is closed, so a test that needs two ports (the controller's
/// probe and metrics addresses) would otherwise get one port twice.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port on 127.0.0.1");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Whether the tests run as root (ownership can then be set to arbitrary ids).
pub fn running_as_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Flip the bits of the byte at `offset` of `path`.
pub fn flip_byte(path: &Path, offset: usize) {
    let mut bytes = fs::read(path).expect("read file to damage");
    assert!(
        offset < bytes.len(),
        "offset {offset} beyond {} ({} bytes)",
        path.display(),
        bytes.len()
    );
    bytes[offset] ^= 0xff;
    write_over(path, &bytes);
}

/// Replace the content of `path`, even if it is read-only.
pub fn write_over(path: &Path, bytes: &[u8]) {
    set_mode(path, 0o644);
    fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Length and 64-bit FNV-1a hash of a file.
pub fn hash_file(path: &Path) -> (u64, u64) {
    let mut file = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut buf = vec![0u8; 1 << 20];
    let (mut len, mut h) = (0u64, 0xcbf2_9ce4_8422_2325u64);
    loop {
        let got = file.read(&mut buf).expect("read file");
        if got == 0 {
            return (len, h);
        }
        for &b in &buf[..got] {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3);
        }
        len += got as u64;
    }
}

/// Relative path -> "dir" or "file <len> <fnv64>".
pub type TreeManifest = BTreeMap<String, String>;

/// Names, kinds, sizes and content hashes of everything below `root`.
pub fn tree_manifest(root: &Path) -> TreeManifest {
    fn walk(root: &Path, dir: &Path, out: &mut TreeManifest) {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read dir {}: {e}", dir.display()))
            .map(|e| e.expect("dir entry"))
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let rel = path
                .strip_prefix(root)
                .expect("below root")
                .to_string_lossy()
                .into_owned();
            let ft = e.file_type().expect("file type");
            if ft.is_dir() {
                out.insert(rel, "dir".into());
                walk(root, &path, out);
            } else if ft.is_file() {
                let (len, hash) = hash_file(&path);
                out.insert(rel, format!("file {len} {hash:016x}"));
            } else {
                out.insert(rel, "other".into());
            }
        }
    }
    let mut out = TreeManifest::new();
    walk(root, root, &mut out);
    out
}

/// Lines describing how `actual` differs from `expected`.
pub fn manifest_diff(expected: &TreeManifest, actual: &TreeManifest) -> Vec<String> {
    let mut diffs = Vec::new();
    for (path, want) in expected {
        match actual.get(path) {
            None => diffs.push(format!("{path}: missing (want {want})")),
            Some(got) if got != want => diffs.push(format!("{path}: {got} instead of {want}")),
            Some(_) => {}
        }
    }
    for path in actual.keys().filter(|p| !expected.contains_key(*p)) {
        diffs.push(format!("{path}: unexpected entry"));
    }
    diffs
}

/// A tar of `dir` by GNU tar, reproducible (fixed order, owner and mtime), so two tars
/// differ only where file contents differ.
pub fn gnu_tar(dir: &Path) -> Vec<u8> {
    let out = Command::new("tar")
        .args([
            "--format=gnu",
            "--sort=name",
            "--mtime=@1700000000",
            "--owner=0",
            "--group=0",
            "-cf",
            "-",
            "-C",
        ])
        .arg(dir)
        .arg(".")
        .output()
        .expect("GNU tar must be installed (apt-get install tar)");
    assert!(out.status.success(), "tar: {}", stderr(&out));
    out.stdout
}
