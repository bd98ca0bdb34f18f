//! Build facts for `dprepo version` / `--version`: the git commit the binary was built
//! from and whether it is statically linked.
//!
//! - `DPREPO_GIT_COMMIT`: taken from the environment when set (builds outside a git
//!   checkout, e.g. from a source archive), else `git rev-parse HEAD`, else `unknown`.
//! - `DPREPO_LINKAGE`: `static` when the target has `crt-static` (scripts/build-static.sh:
//!   then the linker gets `-static` and every library, RocksDB included, is an archive),
//!   else `dynamic`.
//! - `DPREPO_VERSION_LINE`: `<version> (commit <12 hex>, <linkage>)`, what `--version`
//!   prints after the program name.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=DPREPO_GIT_COMMIT");
    let commit = match std::env::var("DPREPO_GIT_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => {
            // Rebuild when HEAD moves: a commit, checkout or reset appends to the
            // worktree's HEAD reflog.
            for p in ["HEAD", "logs/HEAD"] {
                if let Some(path) = git(&["rev-parse", "--git-path", p]) {
                    if std::path::Path::new(&path).exists() {
                        println!("cargo:rerun-if-changed={path}");
                    }
                }
            }
            git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".to_string())
        }
    };
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    let linkage = if features.split(',').any(|f| f == "crt-static") {
        "static"
    } else {
        "dynamic"
    };
    let short: String = commit.chars().take(12).collect();
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    println!("cargo:rustc-env=DPREPO_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=DPREPO_LINKAGE={linkage}");
    println!("cargo:rustc-env=DPREPO_VERSION_LINE={version} (commit {short}, {linkage})");
}
