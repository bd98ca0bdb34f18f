//! What a restore meets in its target: entries it cannot create, and files planted by
//! someone else. A restore goes on past what it cannot restore and lists every skipped
//! entry at the end with a non-zero exit (restic's behaviour); it never writes through
//! a hard link or a symlink it finds where the snapshot has a file.

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};

/// Every file below `src`, relative to it, except those under `except`.
fn files_below(src: &Path, except: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if except.iter().any(|x| p.starts_with(x)) {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(src).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

fn assert_restored(src: &Path, target: &Path, rel: &[PathBuf]) {
    let restored = restored_path(target, src);
    for r in rel {
        let want = fs::read(src.join(r)).unwrap();
        let got = fs::read(restored.join(r))
            .unwrap_or_else(|e| panic!("{} was not restored: {e}", r.display()));
        assert!(got == want, "{} restored with wrong bytes", r.display());
    }
}

/// BUG (issue 19, point 5): a directory standing in the target where the snapshot has a
/// file stopped the whole restore at that file: 1 of 34 files was restored.
#[test]
fn restore_goes_on_past_a_directory_standing_where_the_snapshot_has_a_file() {
    let env = TestEnv::init();
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..30 {
        fs::write(
            src.join(format!("f{i:02}")),
            random_bytes(i, 1000 + 97 * i as usize),
        )
        .unwrap();
    }
    for i in 0..4 {
        fs::write(
            src.join(format!("sub/g{i}")),
            random_bytes(100 + i, 300 << 10),
        )
        .unwrap();
    }
    env.backup(&[&src], &[]);

    let target = env.path("restore");
    let blocked = restored_path(&target, &src).join("f01");
    fs::create_dir_all(blocked.join("kept")).unwrap();
    fs::write(blocked.join("kept/data"), b"the user's").unwrap();
    let args = ["restore", "latest", "--target", s(&target)];
    let skipped = assert_incomplete_restore(&env.run(&args), &args);
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0].starts_with(s(&blocked)), "{skipped:?}");
    // Everything else is restored, and what stood in the way is left alone.
    let others = files_below(&src, &[src.join("f01")]);
    assert_eq!(others.len(), 33);
    assert_restored(&src, &target, &others);
    assert_eq!(fs::read(blocked.join("kept/data")).unwrap(), b"the user's");

    // --json lists the skipped entry too, and nothing else goes to stdout.
    let args = ["--json", "restore", "latest", "--target", s(&target)];
    let out = env.run(&args);
    assert_incomplete_restore(&out, &args);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["errors"].as_array().unwrap().len(), 1, "{doc}");
    assert_eq!(doc["errors"][0]["path"], s(&blocked));
    assert_eq!(doc["files"], 33);
}

/// BUG (issue 19, point 5): a path that grows past PATH_MAX below the target aborted the
/// whole restore, leaving an arbitrary part of the tree.
#[test]
fn restore_goes_on_past_a_path_longer_than_path_max() {
    let env = TestEnv::init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a-first"), b"first").unwrap();
    // A chain of directories whose deepest file is just within PATH_MAX (4096 with the
    // NUL) at the source, so that below the target it is not.
    let mut deep = src.join("deep");
    while s(&deep).len() < 4096 - 260 {
        deep.push("d".repeat(200));
    }
    fs::create_dir_all(&deep).unwrap();
    let name = "f".repeat(4094 - s(&deep).len() - 1);
    fs::write(deep.join(&name), b"deep").unwrap();
    fs::create_dir_all(src.join("later")).unwrap();
    for i in 0..40 {
        fs::write(src.join(format!("later/f{i}")), random_bytes(i, 5000)).unwrap();
    }
    fs::write(src.join("z-last"), b"last").unwrap();
    env.backup(&[&src], &[]);

    let target = env.path("restore");
    let args = ["restore", "latest", "--target", s(&target)];
    let skipped = assert_incomplete_restore(&env.run(&args), &args);
    assert!(
        skipped.iter().all(|l| l.contains("/deep/")),
        "only the deep chain is skipped: {skipped:?}"
    );
    assert!(
        skipped.iter().any(|l| l.contains("too long")),
        "the reason is given: {skipped:?}"
    );
    assert_restored(&src, &target, &files_below(&src, &[src.join("deep")]));
}

/// A source of small files (restored in groups) and one large file (restored on its
/// own), backed up; returns the source and the names of its files.
fn small_and_large_files(env: &TestEnv, count: u64) -> (PathBuf, Vec<String>) {
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let mut names = Vec::new();
    for i in 0..count {
        let name = format!("f{i:02}");
        fs::write(src.join(&name), random_bytes(i, 2000 + 10 * i as usize)).unwrap();
        names.push(name);
    }
    fs::write(src.join("large"), random_bytes(99, 3 << 20)).unwrap();
    names.push("large".into());
    env.backup(&[&src], &[]);
    (src, names)
}

/// BUG (issue 19, point 6): a hard link planted in the target where the snapshot has a
/// file was opened and truncated, so the restore overwrote the file outside the target
/// that the link shares its inode with.
#[test]
fn restore_never_writes_through_a_hard_link_planted_in_the_target() {
    use std::os::unix::fs::MetadataExt;
    let env = TestEnv::init();
    let (src, names) = small_and_large_files(&env, 3);
    let outside = env.path("outside");
    fs::create_dir(&outside).unwrap();
    let target = env.path("restore");
    let restored = restored_path(&target, &src);
    fs::create_dir_all(&restored).unwrap();
    for name in &names {
        let victim = outside.join(name);
        fs::write(&victim, b"precious, outside the target").unwrap();
        fs::hard_link(&victim, restored.join(name)).unwrap();
    }
    env.ok(&["restore", "latest", "--target", s(&target)]);
    for name in &names {
        let victim = outside.join(name);
        assert_eq!(
            fs::read(&victim).unwrap(),
            b"precious, outside the target",
            "restore wrote through the hard link {name}"
        );
        assert_eq!(fs::metadata(&victim).unwrap().nlink(), 1, "{name}");
    }
    assert_same_tree(
        &src,
        &restored,
        Compare {
            root_metadata: false,
            ..Compare::ALL
        },
    );
}

/// BUG (issue 19, point 6): restore checked what stood at a file's name, then opened the
/// name: a symlink put there in between was followed and the file it points at
/// overwritten. A thread keeps trying to create symlinks (to a file outside) at the names
/// of some of the snapshot's files while restores run, so one appears as soon as a name
/// is free, and the file outside must never change.
#[test]
fn restore_never_writes_through_a_symlink_swapped_in_while_it_runs() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let env = TestEnv::init();
    let (src, mut names) = small_and_large_files(&env, 40);
    names.retain(|n| ["f00", "f13", "f27", "large"].contains(&n.as_str()));
    let outside = env.path("outside");
    fs::create_dir(&outside).unwrap();
    let victim = outside.join("victim");
    fs::write(&victim, b"precious").unwrap();
    let target = env.path("restore");
    let restored = restored_path(&target, &src);
    fs::create_dir_all(&restored).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let planted = Arc::new(AtomicU64::new(0));
    let swapper = {
        let (stop, planted) = (stop.clone(), planted.clone());
        let paths: Vec<PathBuf> = names.iter().map(|n| restored.join(n)).collect();
        let victim = victim.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for p in &paths {
                    if std::os::unix::fs::symlink(&victim, p).is_ok() {
                        planted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    let mut outcomes = Vec::new();
    for _ in 0..10 {
        let out = env.run(&["restore", "latest", "--target", s(&target)]);
        outcomes.push(out.status.code());
        if fs::read(&victim).unwrap() != b"precious" {
            break;
        }
        // Free the names again, for the next restore to meet symlinks.
        for n in &names {
            let _ = fs::remove_file(restored.join(n));
        }
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    assert_eq!(
        fs::read(&victim).unwrap(),
        b"precious",
        "a restore wrote through a symlink planted while it ran (exit codes {outcomes:?})"
    );
    assert!(
        fs::symlink_metadata(&victim).unwrap().file_type().is_file(),
        "the victim was replaced"
    );
    let planted = planted.load(Ordering::Relaxed);
    assert!(planted >= 10, "the symlinks were planted ({planted} times)");
}
