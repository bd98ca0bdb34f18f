//! Modes of what the local backend writes (SPEC.md, "Threat model").

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// Run `dprepo args` in `env` under umask 000, so the modes seen are the ones the
/// program asked for, not what the caller's umask left of them.
fn ok_with_open_umask(env: &TestEnv, args: &[&str]) {
    let base = env.cmd(args);
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("umask 000 && exec \"$@\"")
        .arg("sh")
        .arg(base.get_program())
        .args(base.get_args());
    for (key, value) in base.get_envs() {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    cmd.current_dir(env.dir.path()).stdin(Stdio::null());
    assert_success(&output_of(cmd), args);
}

/// Every entry below `dir` (and `dir` itself) whose permission bits differ from 0700
/// for a directory or 0600 for a file.
fn wrong_modes(dir: &Path, out: &mut Vec<String>) {
    let meta = fs::symlink_metadata(dir).unwrap();
    let mode = meta.permissions().mode() & 0o777;
    if mode != 0o700 {
        out.push(format!("directory {} is {mode:o}", dir.display()));
    }
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            wrong_modes(&path, out);
        } else {
            let mode = meta.permissions().mode() & 0o777;
            if mode != 0o600 {
                out.push(format!("file {} is {mode:o}", path.display()));
            }
        }
    }
}

/// Repository files, `keys/*` included, were created 0644 and directories 0755 (under
/// the usual umask): any local user could copy a key file, the master key wrapped
/// under the password, and guess the password offline.
#[test]
fn local_repository_files_are_0600_and_directories_0700() {
    let env = TestEnv::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    // Large enough for a pack of over 1 MiB, which goes through the direct-write path.
    fs::write(src.join("big"), random_bytes(1, 3 << 20)).unwrap();
    fs::write(src.join("sub/small"), b"small").unwrap();
    ok_with_open_umask(&env, &["init"]);
    ok_with_open_umask(&env, &["backup", s(&src)]);
    fs::write(src.join("big"), random_bytes(2, 3 << 20)).unwrap();
    ok_with_open_umask(&env, &["backup", s(&src)]);
    let first = env.snapshots()[0]["id"].as_str().unwrap().to_string();
    ok_with_open_umask(&env, &["forget", &first]);
    ok_with_open_umask(&env, &["gc"]);
    assert!(!env.repo_files("keys").is_empty() && !env.repo_files("data").is_empty());

    let mut wrong = Vec::new();
    wrong_modes(&env.repo, &mut wrong);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
