//! Full disks, met by the real binary on real file systems: a small tmpfs mounted for
//! the test (which needs root, or passwordless sudo) fills up under the repository.

mod common;

use common::*;
use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

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
