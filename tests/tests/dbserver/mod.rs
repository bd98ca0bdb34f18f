//! Private database servers for the database end-to-end tests: a sandbox directory the
//! server's OS user can use, commands run as that user, the `datasafed` interface on its
//! `PATH`, free ports, and the check that the server packages are installed.
//!
//! The tests run as root in CI, and PostgreSQL refuses to run as root, so every server,
//! client and backup command runs as the distribution's service user (`postgres`,
//! `mysql`) through `setpriv`, inside a temporary directory that user owns. The workspace
//! `target/` directory may not be readable by that user, so the `dprepo` binary is copied
//! into the sandbox (`bin/dprepo`, and `bin/datasafed`, the datasafed-compatible interface
//! dispatched on the program name). Run as a normal user, commands run as that user.
//!
//! Every command gets a cleared environment: the sandbox's `bin/` and the server's
//! binaries on `PATH`, `HOME` and `TMPDIR` in the sandbox, and the variables `datasafed` reads
//! (`DATASAFED_LOCAL_BACKEND_PATH` = `<sandbox>/repo`, `DPREPO_PASSWORD`).
//!
//! A missing server package is a test failure with instructions; `DPREPO_SKIP_DB_TESTS=1`
//! skips the database tests explicitly, with a message.
#![allow(dead_code)] // each test binary uses a different subset

use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::common::{dprepo_bin, PASSWORD};

/// Environment variable that skips the database tests (value `1`).
pub const SKIP_VAR: &str = "DPREPO_SKIP_DB_TESTS";

/// Whether the database test `test` should run: false (with a printed message) when
/// [`SKIP_VAR`] is `1`; otherwise panics with install instructions naming the first of
/// `programs` that does not exist, and returns true.
pub fn db_tests_enabled(test: &str, programs: &[PathBuf], packages: &str) -> bool {
    if std::env::var(SKIP_VAR).is_ok_and(|v| v == "1") {
        eprintln!("{test}: skipped because {SKIP_VAR}=1");
        return false;
    }
    if let Some(missing) = programs.iter().find(|p| !p.is_file()) {
        panic!(
            "{test} needs {} (Debian packages: {packages}), which is not installed. \
             Install with `apt-get update && apt-get install -y {packages}` or run \
             `bash scripts/test.sh`, which installs them; set {SKIP_VAR}=1 to skip the \
             database tests",
            missing.display()
        );
    }
    true
}

pub use crate::common::free_port;

/// Whether this process runs as root.
pub fn running_as_root() -> bool {
    crate::common::running_as_root()
}

/// The numeric uid and gid of the OS user `name` (`id -u`, `id -g`).
fn user_ids(name: &str) -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, name])
            .output()
            .unwrap_or_else(|e| panic!("cannot run `id {flag} {name}`: {e}"));
        assert!(
            out.status.success(),
            "OS user {name} does not exist (`id {flag} {name}`: {}); it is created by the server package",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("numeric id")
    };
    (id("-u"), id("-g"))
}

/// A temporary directory owned by a database server's OS user, holding the servers' data
/// and socket directories, the `datasafed` repository (`repo/`), and `bin/`.
pub struct Sandbox {
    dir: tempfile::TempDir,
    /// `(user name, uid, gid)` when running as root; commands then switch to that user.
    user: Option<(String, u32, u32)>,
    /// Extra directories put on `PATH` after `bin/` (the server's binaries).
    path_dirs: Vec<PathBuf>,
}

impl Sandbox {
    /// A sandbox for the OS user `user` (used only when running as root), with the
    /// `dprepo` binary installed as `bin/dprepo` and `bin/datasafed`, and `path_dirs` on
    /// the commands' `PATH`.
    pub fn new(user: &str, path_dirs: &[PathBuf]) -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("dprepo-db-")
            .tempdir()
            .expect("create temp dir");
        // The service user must traverse the directory; everything inside is its own.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let user = running_as_root().then(|| {
            let (uid, gid) = user_ids(user);
            (user.to_string(), uid, gid)
        });
        let sb = Sandbox {
            dir,
            user,
            path_dirs: path_dirs.to_vec(),
        };
        sb.give(sb.root(), 0o755);
        sb.install_binaries();
        fs::write(sb.path("password"), PASSWORD).expect("write password file");
        sb.give(&sb.path("password"), 0o600);
        // datasafed's local backend wants the directory to exist (the repository inside
        // is created on the first push).
        sb.mkdir("repo");
        sb.mkdir("home");
        sb.mkdir("tmp");
        sb.mkdir("cache");
        sb
    }

    /// The sandbox root.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `<sandbox>/<rel>`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The local repository the `datasafed` commands of this sandbox use.
    pub fn repo(&self) -> PathBuf {
        self.path("repo")
    }

    /// Create `<sandbox>/<rel>` (mode 0700, owned by the service user).
    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        self.give(&p, 0o700);
        p
    }

    /// Write an executable script `bin/<name>`.
    pub fn write_script(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path("bin").join(name);
        fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        self.give(&p, 0o755);
        p
    }

    /// Hand `path` to the service user with `mode`.
    pub fn give(&self, path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
        if let Some((_, uid, gid)) = &self.user {
            chown(path, Some(*uid), Some(*gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        }
    }

    /// Copy `dprepo` (and `datasafed` if it was built as its own file) into `bin/`.
    fn install_binaries(&self) {
        let bin = self.path("bin");
        fs::create_dir_all(&bin).expect("mkdir bin");
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).expect("chmod bin");
        let dprepo = dprepo_bin();
        fs::copy(&dprepo, bin.join("dprepo"))
            .unwrap_or_else(|e| panic!("copy {}: {e}", dprepo.display()));
        fs::set_permissions(bin.join("dprepo"), fs::Permissions::from_mode(0o755))
            .expect("chmod dprepo");
        let datasafed = dprepo.with_file_name("datasafed");
        if datasafed.exists() {
            fs::copy(&datasafed, bin.join("datasafed"))
                .unwrap_or_else(|e| panic!("copy {}: {e}", datasafed.display()));
            fs::set_permissions(bin.join("datasafed"), fs::Permissions::from_mode(0o755))
                .expect("chmod datasafed");
        } else {
            // `dprepo` behaves as `dprepo datasafed` when called by that name.
            std::os::unix::fs::symlink("dprepo", bin.join("datasafed")).expect("symlink datasafed");
        }
    }

    /// A command running `program` as the service user, in the sandbox, with a cleared
    /// environment (see the module documentation) and stdin from /dev/null.
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = match &self.user {
            Some((name, _, _)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={name}"))
                    .arg(format!("--regid={name}"))
                    .arg("--init-groups")
                    .arg("--")
                    .arg(program);
                c
            }
            None => Command::new(program),
        };
        let mut path = vec![self.path("bin")];
        path.extend(self.path_dirs.iter().cloned());
        path.extend(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from));
        cmd.env_clear()
            .env("PATH", std::env::join_paths(path).expect("PATH"))
            .env("HOME", self.path("home"))
            .env("LANG", "C.UTF-8")
            .env("TZ", "UTC")
            // A private temporary directory: a starting mariadbd deletes the `#sql*`
            // files it finds in its tmpdir, including those of another test's server.
            .env("TMPDIR", self.path("tmp"))
            .env("DATASAFED_LOCAL_BACKEND_PATH", self.repo())
            .env("DPREPO_PASSWORD", PASSWORD)
            .env("DPREPO_CACHE_DIR", self.path("cache/dprepo"))
            .env("XDG_CACHE_HOME", self.path("cache"))
            .current_dir(self.root())
            .stdin(Stdio::null());
        cmd
    }

    /// Run the bash `script` (with `set -euo pipefail`) as the service user.
    pub fn sh(&self, script: &str) -> Output {
        let mut cmd = self.cmd("bash");
        cmd.arg("-c").arg(format!("set -euo pipefail\n{script}"));
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run bash: {e}"))
    }

    /// Run `script` as [`Sandbox::sh`] does, assert success, return stdout as text.
    pub fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "script failed with {}:\n{script}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Snapshots of the sandbox repository (`dprepo -r repo --password-file ...
    /// snapshots --json`), oldest first.
    /// Empty before the first push created the repository.
    pub fn snapshots(&self) -> Vec<serde_json::Value> {
        let empty = fs::read_dir(self.repo())
            .map(|mut d| d.next().is_none())
            .unwrap_or(true);
        if empty {
            return Vec::new();
        }
        let out = self.sh_ok(
            "dprepo -r \"$DATASAFED_LOCAL_BACKEND_PATH\" --password-file password snapshots --json",
        );
        match serde_json::from_str(&out) {
            Ok(serde_json::Value::Array(v)) => v,
            other => panic!("snapshots --json did not print an array ({other:?}):\n{out}"),
        }
    }
}

/// The last `lines` lines of the text file `path` (empty if it cannot be read).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Sum of `summary.<field>` over `snapshots`.
pub fn summary_sum(snapshots: &[serde_json::Value], field: &str) -> u64 {
    snapshots
        .iter()
        .map(|s| {
            s["summary"][field]
                .as_u64()
                .unwrap_or_else(|| panic!("snapshot without summary.{field}: {s}"))
        })
        .sum()
}

/// The snapshots of `after` whose `id` is not in `before`.
pub fn new_snapshots(
    before: &[serde_json::Value],
    after: &[serde_json::Value],
) -> Vec<serde_json::Value> {
    after
        .iter()
        .filter(|s| !before.iter().any(|b| b["id"] == s["id"]))
        .cloned()
        .collect()
}
