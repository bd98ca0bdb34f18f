//! Retention and space reclamation as users run them: `forget` removes snapshots (by id
//! or policy), `gc` frees what no snapshot needs, `verify` finds the result intact, on
//! both backends. Damaged repositories are `corruption.rs`'s subject (local only: it edits
//! repository files on disk).

mod common;

use common::*;
use serde_json::Value;
use std::fs;

const MIB: usize = 1 << 20;

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array of ids: {v}"))
        .iter()
        .map(|id| id.as_str().expect("id string").to_string())
        .collect()
}

both_backends!(forget_gc_and_verify_reclaim_exactly_the_unreferenced_data);

fn forget_gc_and_verify_reclaim_exactly_the_unreferenced_data(backend: Backend) {
    let env = TestEnv::init_with(backend);
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    // Three snapshots; each replaces one incompressible file, so the first two snapshots
    // hold 10 MiB that the last one does not reference.
    fs::write(src.join("a.bin"), random_bytes(1, 6 * MIB)).unwrap();
    fs::write(src.join("b.bin"), random_bytes(2, 4 * MIB)).unwrap();
    let first = env.backup(&[&src], &["--tag", "first"]);
    fs::write(src.join("a.bin"), random_bytes(3, 6 * MIB)).unwrap();
    let second = env.backup(&[&src], &[]);
    fs::write(src.join("b.bin"), random_bytes(4, 4 * MIB)).unwrap();
    let third = env.backup(&[&src], &[]);
    let id = |snap: &Value| snap["id"].as_str().unwrap().to_string();
    let (first, second, third) = (id(&first), id(&second), id(&third));

    // A dry run names what a policy would remove and removes nothing.
    let dry = env.json(&["forget", "--keep-last", "1", "--dry-run"]);
    assert_eq!(dry["dry_run"], true, "{dry}");
    let mut would = ids(&dry["removed"]);
    would.sort();
    let mut expected = vec![first.clone(), second.clone()];
    expected.sort();
    assert_eq!(would, expected, "{dry}");
    assert_eq!(env.snapshots().len(), 3, "a dry run removes nothing");

    // By id prefix, then by policy.
    let by_id = env.json(&["forget", &first[..10]]);
    assert_eq!(ids(&by_id["removed"]), [first.as_str()], "{by_id}");
    let line = env.fail(&["dump", &first, s(&src.join("a.bin"))]);
    assert!(
        line.contains(&first[..8]),
        "a forgotten snapshot is unknown: {line}"
    );
    let by_policy = env.json(&["forget", "--keep-last", "1"]);
    assert_eq!(ids(&by_policy["removed"]), [second.as_str()], "{by_policy}");
    let left: Vec<String> = env.snapshots().iter().map(id).collect();
    assert_eq!(left, [third.as_str()]);

    // gc --dry-run plans and changes nothing.
    let before = env.repo_size();
    let plan = env.json(&["gc", "--dry-run", "--max-unused", "0"]);
    assert_eq!(plan["dry_run"], true, "{plan}");
    let planned = plan["plan"]["delete"].as_array().map_or(0, Vec::len)
        + plan["plan"]["repack"].as_array().map_or(0, Vec::len);
    assert!(planned >= 1, "gc plans to free the old data: {plan}");
    assert_eq!(env.repo_size(), before, "gc --dry-run changes nothing");

    // gc frees the 10 MiB of replaced file data and keeps the 10 MiB still referenced.
    let gc = env.json(&["gc", "--max-unused", "0"]);
    let report = &gc["report"];
    assert!(report["packs_deleted"].as_u64().unwrap() >= 1, "{gc}");
    assert_eq!(report["tombstones_blocked"], serde_json::json!([]), "{gc}");
    assert_eq!(report["warnings"], serde_json::json!([]), "{gc}");
    let after = env.repo_size();
    let (garbage, live) = (10 * MIB as u64, 10 * MIB as u64);
    assert!(
        before - after >= garbage - MIB as u64,
        "gc freed {} bytes of {garbage} unreferenced ({before} -> {after})",
        before - after
    );
    assert!(
        after >= live && after < live + MIB as u64,
        "the repository holds the live {live} bytes and metadata, not {after}"
    );
    for dir in ["gc", "sessions"] {
        assert!(
            env.repo_files(dir).is_empty(),
            "gc leaves nothing in {dir}/: {:?}",
            env.repo_files(dir)
        );
    }

    // Everything left is intact and complete, and a second gc has nothing to do.
    let verify = env.json(&["verify", "--read-data"]);
    assert_eq!(verify["ok"], true, "{verify}");
    assert_eq!(verify["problems"], serde_json::json!([]), "{verify}");
    assert_eq!(verify["unindexed_packs"], serde_json::json!([]), "{verify}");
    assert_eq!(verify["snapshots"], 1, "{verify}");
    assert_eq!(verify["packs_read"], verify["packs"], "{verify}");
    let again = env.json(&["gc", "--max-unused", "0"]);
    assert_eq!(again["report"]["packs_deleted"], 0, "{again}");
    assert_eq!(
        env.repo_size(),
        after,
        "a second gc changes nothing: {again}"
    );

    let target = env.path("restore");
    env.ok(&["restore", &third, "--target", s(&target)]);
    assert_same_tree(&src, &restored_path(&target, &src), Compare::CONTENT);
}

/// A tmpfs of `size` bytes mounted at `dir` for the life of the guard.
struct SmallDisk {
    dir: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(dir: &std::path::Path, size: u64) -> SmallDisk {
        fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs to fill it up and needs root (or CAP_SYS_ADMIN): \
             run the tests as root; mount said: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        SmallDisk {
            dir: dir.to_path_buf(),
        }
    }

    /// Free bytes on it.
    fn available(&self) -> u64 {
        let out = std::process::Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.dir)
            .output()
            .expect("run df");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .expect("df prints the free bytes")
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

/// gc rewrote partly-used packs before it deleted unused ones, so on a nearly full disk
/// it failed writing the first copy ("No space left on device") having freed nothing,
/// however much garbage there was. It now deletes the packs with nothing to keep first,
/// then rewrites into the room they leave.
#[test]
fn gc_on_a_nearly_full_disk_deletes_garbage_before_rewriting() {
    let env = TestEnv::new();
    let disk = SmallDisk::mount(&env.repo, 40 * MIB as u64);
    env.ok(&["init", "--pack-size", "1M"]);
    // Garbage: a snapshot of 8 MiB that is forgotten (its packs have nothing to keep).
    let dead = env.path("dead");
    fs::create_dir(&dead).unwrap();
    fs::write(dead.join("dead.bin"), random_bytes(10, 8 * MIB)).unwrap();
    let old = env.backup(&[&dead], &[]);
    env.ok(&["forget", old["id"].as_str().unwrap()]);
    // Partly used packs: 48 one-chunk files backed up together, then every other one
    // deleted, so each pack keeps about half its bytes (3 MiB in all).
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    for i in 0..48u64 {
        fs::write(
            src.join(format!("f{i:02}")),
            random_bytes(100 + i, 128 << 10),
        )
        .unwrap();
    }
    env.backup(&[&src], &[]);
    for i in (1..48).step_by(2) {
        fs::remove_file(src.join(format!("f{i:02}"))).unwrap();
    }
    let kept = env.backup(&[&src], &[]);
    env.ok(&["forget", "--keep-last", "1"]);
    let plan = env.json(&["gc", "--dry-run", "--max-unused", "0"]);
    assert!(
        !plan["plan"]["delete"].as_array().unwrap().is_empty()
            && !plan["plan"]["repack"].as_array().unwrap().is_empty(),
        "the test needs packs to delete and packs to rewrite: {plan}"
    );

    // Fill the disk but for 1 MiB: less than the copies of the kept files need.
    let free = disk.available();
    fs::write(
        env.repo.join("filler"),
        vec![0u8; (free - MIB as u64) as usize],
    )
    .unwrap();
    let gc = env.json(&["gc", "--max-unused", "0"]);
    let report = &gc["report"];
    assert!(report["packs_deleted"].as_u64().unwrap() >= 8, "{gc}");
    assert!(report["packs_rewritten"].as_u64().unwrap() >= 1, "{gc}");
    fs::remove_file(env.repo.join("filler")).unwrap();

    let target = env.path("restore");
    env.ok(&[
        "restore",
        kept["id"].as_str().unwrap(),
        "--target",
        s(&target),
    ]);
    assert_same_tree(&src, &restored_path(&target, &src), Compare::CONTENT);
    let verify = env.json(&["verify", "--read-data"]);
    assert_eq!(verify["ok"], true, "{verify}");
}
