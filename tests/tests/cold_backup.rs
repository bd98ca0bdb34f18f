//! Cold backups through the CLI (SPEC.md section 15, S-7): a backup in a fresh process
//! with no index cache reads its parent's locator instead of the index, on both
//! backends; `--full-index` and `DPREPO_FULL_INDEX` take the full path.

mod common;

use common::*;
use serde_json::Value;
use std::fs;
use std::path::Path;

fn build_tree(root: &Path) {
    for d in 0..4 {
        let dir = root.join(format!("d{d}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..6u64 {
            let seed = d * 100 + f;
            let bytes: Vec<u8> = (0..3000 + seed * 7)
                .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed * 977) >> 7) as u8)
                .collect();
            fs::write(dir.join(format!("f{f}")), bytes).unwrap();
        }
    }
}

/// `--no-cache --verbose --json backup`: the snapshot document and the request counts
/// (the last stderr line).
fn backup_counted(
    env: &TestEnv,
    src: &Path,
    extra_env: Option<(&str, &str)>,
    extra: &[&str],
) -> (Value, Value) {
    let mut args = vec![
        "--no-cache",
        "--verbose",
        "--json",
        "backup",
        "--host",
        "pod",
    ];
    args.extend_from_slice(extra);
    let src = src.to_str().unwrap();
    args.push(src);
    let mut cmd = env.cmd(&args);
    if let Some((k, v)) = extra_env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    let counts: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last stderr line is not JSON ({e}):\n{err}"));
    (doc, counts["requests"].clone())
}

both_backends!(second_backup_in_a_fresh_process_runs_cold);

fn second_backup_in_a_fresh_process_runs_cold(backend: Backend) {
    let env = TestEnv::init_with(backend);
    let src = env.path("src");
    build_tree(&src);
    let (first, _) = backup_counted(&env, &src, None, &[]);
    assert_eq!(first["index_mode"], "full", "no parent: {first}");
    assert!(first["first_pack_secs"].as_f64().is_some());

    fs::write(src.join("d1/f2"), b"changed in the second backup").unwrap();
    let (cold, cold_requests) = backup_counted(&env, &src, None, &[]);
    assert_eq!(cold["index_mode"], "cold", "{cold}");
    assert_eq!(cold["summary"]["files_changed"], 1);
    assert_eq!(cold["summary"]["files_unmodified"], 23);

    // The same change again, with the index: more bytes downloaded (the index files).
    fs::write(src.join("d1/f2"), b"changed in the third backup").unwrap();
    let (full, full_requests) = backup_counted(&env, &src, Some(("DPREPO_FULL_INDEX", "1")), &[]);
    assert_eq!(full["index_mode"], "full", "{full}");
    assert!(
        cold_requests["bytes_down"].as_u64().unwrap()
            < full_requests["bytes_down"].as_u64().unwrap(),
        "cold {cold_requests} against full {full_requests}"
    );
    let (flag, _) = backup_counted(&env, &src, None, &["--full-index"]);
    assert_eq!(flag["index_mode"], "full");
    let bad = env
        .cmd(["backup", "--host", "pod", src.to_str().unwrap()])
        .env("DPREPO_FULL_INDEX", "maybe")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("DPREPO_FULL_INDEX"));

    // Every snapshot holds the tree as it was; the repository verifies.
    let id = cold["id"].as_str().unwrap();
    let content = env.dump(id, &format!("{}/d1/f2", src.display()));
    assert_eq!(content, b"changed in the second backup");
    let unchanged = env.dump(id, &format!("{}/d3/f5", src.display()));
    assert_eq!(unchanged, fs::read(src.join("d3/f5")).unwrap());
    env.ok(&["verify", "--read-data"]);
}
