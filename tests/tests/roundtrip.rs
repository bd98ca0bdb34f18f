//! Directory round trips: what `backup` reads, `restore` and `dump` give back exactly,
//! including file types, link targets, modes, owners and nanosecond mtimes. Round trips
//! run against both backends; what only concerns the file system (a restore target with
//! planted symlinks, backing up `/`) runs on the local one.

mod common;

use common::*;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

const MIB: usize = 1 << 20;

/// 40 MiB mixing incompressible data, text, zeros and a repeat of an earlier part.
fn big_file_bytes() -> Vec<u8> {
    let mut v = random_bytes(1, 12 * MIB);
    v.extend_from_slice(&text_bytes(8 * MIB));
    v.extend_from_slice(&vec![0u8; 4 * MIB]);
    v.extend_from_slice(&random_bytes(2, 12 * MIB));
    let repeat = v[MIB..5 * MIB].to_vec();
    v.extend_from_slice(&repeat);
    assert_eq!(v.len(), 40 * MIB);
    v
}

fn write(path: &Path, bytes: &[u8], mode: u32) {
    fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    set_mode(path, mode);
}

/// Gives every entry below `dir` (and `dir` itself) a distinct mtime with sub-second
/// nanoseconds, children before parents so creating nothing afterwards disturbs them.
/// Entries in `keep` keep the mtime they already have.
fn stamp_mtimes(dir: &Path, next: &mut i64, keep: &[PathBuf]) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for e in entries {
        if fs::symlink_metadata(&e).unwrap().is_dir() {
            stamp_mtimes(&e, next, keep);
        } else if !keep.contains(&e) {
            *next += 3_601;
            set_mtime(
                &e,
                *next,
                (*next as u32).wrapping_mul(7_919) % 1_000_000_000,
            );
        }
    }
    if !keep.iter().any(|k| k == dir) {
        *next += 3_601;
        set_mtime(
            dir,
            *next,
            (*next as u32).wrapping_mul(104_729) % 1_000_000_000,
        );
    }
}

/// Builds the source tree under `src` and returns the big file's bytes.
fn build_tree(src: &Path) -> Vec<u8> {
    fs::create_dir_all(src).unwrap();
    write(&src.join("hello.txt"), b"hello, world\n", 0o644);
    write(&src.join("empty"), b"", 0o600);
    write(&src.join("run.sh"), b"#!/bin/sh\necho hi\n", 0o755);
    write(&src.join("setuid-bin"), b"not really a program\n", 0o4750);
    write(
        &src.join("spaces and \u{fc}n\u{ef}c\u{f8}d\u{e9} \u{2713}.txt"),
        b"utf-8 name\n",
        0o644,
    );
    write(
        &src.join(OsStr::from_bytes(b"caf\xe9.txt")),
        b"latin-1 name\n",
        0o644,
    );
    write(
        &src.join(OsStr::from_bytes(b"new\nline")),
        b"newline in the name\n",
        0o644,
    );
    let big = big_file_bytes();
    write(&src.join("big.bin"), &big, 0o640);

    fs::create_dir_all(src.join("nested/a/b/c")).unwrap();
    write(&src.join("nested/a/b/c/deep.txt"), b"deep\n", 0o644);
    write(
        &src.join("nested/a/one-chunk.bin"),
        &random_bytes(3, 300 * 1024),
        0o644,
    );
    fs::create_dir(src.join("empty-dir")).unwrap();
    set_mode(&src.join("empty-dir"), 0o700);
    fs::create_dir(src.join("setgid-dir")).unwrap();
    write(&src.join("setgid-dir/inside.txt"), b"group shared\n", 0o664);
    set_mode(&src.join("setgid-dir"), 0o2775);
    fs::create_dir(src.join("sticky-dir")).unwrap();
    set_mode(&src.join("sticky-dir"), 0o1777);
    let latin_dir = src.join(OsStr::from_bytes(b"dir-\xff\xfe"));
    fs::create_dir(&latin_dir).unwrap();
    write(&latin_dir.join("x"), b"in a non-UTF-8 directory\n", 0o644);

    fs::create_dir(src.join("links")).unwrap();
    symlink("../hello.txt", src.join("links/relative")).unwrap();
    symlink(src.join("hello.txt"), src.join("links/absolute")).unwrap();
    symlink("does/not/exist", src.join("links/dangling")).unwrap();
    symlink("../nested", src.join("links/to-dir")).unwrap();
    symlink(
        OsStr::from_bytes(b"target-\xe9"),
        src.join("links/non-utf8-target"),
    )
    .unwrap();

    // Written last: a read-only directory with a read-only file in it.
    fs::create_dir(src.join("read-only")).unwrap();
    write(&src.join("read-only/file.txt"), b"read only\n", 0o444);

    if running_as_root() {
        use std::os::unix::fs::lchown;
        lchown(src.join("hello.txt"), Some(1234), Some(5678)).unwrap();
        lchown(src.join("nested/a"), Some(4321), Some(8765)).unwrap();
        lchown(src.join("links/relative"), Some(1111), Some(2222)).unwrap();
    }

    // Specific mtimes: before the epoch, beyond 2038, and sub-second everywhere else.
    set_mtime(&src.join("hello.txt"), 1_600_000_000, 123_456_789);
    set_mtime(&src.join("empty"), -315_619_200, 250_000_000);
    set_mtime(&src.join("run.sh"), 4_102_444_800, 999_999_999);
    set_mtime(&src.join("links/dangling"), 1_234_567_890, 1);
    let keep: Vec<PathBuf> = ["hello.txt", "empty", "run.sh", "links/dangling"]
        .iter()
        .map(|p| src.join(p))
        .collect();
    stamp_mtimes(src, &mut 1_500_000_000, &keep);
    set_mode(&src.join("read-only"), 0o555);
    big
}

both_backends!(
    restore_reproduces_every_file_type_mode_owner_and_mtime,
    restore_of_a_sub_path_and_dump_of_files,
    backup_of_several_paths_and_of_a_single_file,
);

fn restore_reproduces_every_file_type_mode_owner_and_mtime(backend: Backend) {
    let env = TestEnv::init_with(backend);
    let src = env.path("src");
    let big = build_tree(&src);

    let snap = env.backup(&[&src], &[]);
    let summary = &snap["summary"];
    assert_eq!(summary["files"], 13, "regular files counted: {summary}");
    assert_eq!(summary["symlinks"], 5, "symlinks counted: {summary}");
    assert_eq!(summary["errors"], 0, "no entry should fail: {summary}");

    let target = env.path("restore");
    let restored = env.json(&["restore", "latest", "--target", s(&target)]);
    assert_eq!(restored["files"], 13, "restore --json: {restored}");
    assert_eq!(restored["symlinks"], 5, "restore --json: {restored}");
    assert_same_tree(&src, &restored_path(&target, &src), Compare::ALL);
    assert_eq!(
        fs::read(restored_path(&target, &src.join("big.bin"))).unwrap(),
        big
    );

    // `ls` shows the tree with link targets and non-UTF-8 names (lossily).
    let ls = env.json(&["ls", "latest", s(&src)]);
    let nodes = ls["nodes"].as_array().unwrap();
    let find = |suffix: &str| {
        nodes
            .iter()
            .find(|n| n["path"].as_str().unwrap().ends_with(suffix))
            .unwrap_or_else(|| panic!("ls --json has no entry ending in {suffix:?}: {ls}"))
    };
    assert_eq!(find("/links/relative")["type"], "symlink");
    assert_eq!(find("/links/relative")["link_target"], "../hello.txt");
    assert_eq!(find("/big.bin")["size"], 40 * MIB);
    assert_eq!(find("/big.bin")["type"], "file");
    assert_eq!(find("/setgid-dir")["type"], "dir");
    assert_eq!(find("/setgid-dir")["mode"], 0o2775);
    assert_eq!(find("/caf\u{fffd}.txt")["type"], "file");
    let long = String::from_utf8(
        env.ok(&["ls", "-l", "latest", s(&src.join("links"))])
            .stdout,
    )
    .unwrap();
    assert!(
        long.contains("-> ../hello.txt"),
        "ls -l shows link targets:\n{long}"
    );
}

fn restore_of_a_sub_path_and_dump_of_files(backend: Backend) {
    let env = TestEnv::init_with(backend);
    let src = env.path("src");
    let big = build_tree(&src);
    env.backup(&[&src], &[]);

    // A directory: its contents go into the target.
    let t1 = env.path("sub-dir");
    env.ok(&[
        "restore",
        &format!("latest:{}", s(&src.join("nested"))),
        "--target",
        s(&t1),
    ]);
    assert_same_tree(
        &src.join("nested"),
        &t1,
        Compare {
            root_metadata: false,
            ..Compare::ALL
        },
    );

    // A file: restored under its own name.
    let t2 = env.path("sub-file");
    env.ok(&[
        "restore",
        &format!("latest:{}", s(&src.join("run.sh"))),
        "--target",
        s(&t2),
    ]);
    assert_same_tree(&src.join("run.sh"), &t2.join("run.sh"), Compare::ALL);
    let entries: Vec<_> = fs::read_dir(&t2).unwrap().collect();
    assert_eq!(entries.len(), 1, "only the requested file is restored");

    assert_eq!(env.dump("latest", s(&src.join("big.bin"))), big);
    assert_eq!(
        env.dump("latest", s(&src.join("hello.txt"))),
        b"hello, world\n"
    );
    assert_eq!(env.dump("latest", s(&src.join("empty"))), b"");
    assert_eq!(
        env.dump("latest", s(&src.join("nested/a/one-chunk.bin"))),
        random_bytes(3, 300 * 1024)
    );
}

fn backup_of_several_paths_and_of_a_single_file(backend: Backend) {
    let env = TestEnv::init_with(backend);
    let (a, b) = (env.path("a"), env.path("b/inner"));
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    write(&a.join("one"), b"one\n", 0o644);
    write(&b.join("two"), &random_bytes(9, 2 * MIB), 0o600);
    let lone = env.path("lone.txt");
    write(&lone, b"a single file\n", 0o640);
    set_mtime(&lone, 1_700_000_000, 42);

    let snap = env.backup(&[&a, &b, &lone], &[]);
    let mut paths: Vec<&str> = snap["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    paths.sort();
    let mut expected = vec![s(&a), s(&b), s(&lone)];
    expected.sort();
    assert_eq!(
        paths, expected,
        "snapshot paths are the absolute paths given"
    );

    let target = env.path("restore");
    env.ok(&["restore", "latest", "--target", s(&target)]);
    assert_same_tree(&a, &restored_path(&target, &a), Compare::ALL);
    assert_same_tree(&b, &restored_path(&target, &b), Compare::ALL);
    assert_same_tree(&lone, &restored_path(&target, &lone), Compare::ALL);
    // Only the given paths: nothing else of the temp dir (the repository!) is included.
    let parent = restored_path(&target, env.dir.path());
    let mut names: Vec<_> = fs::read_dir(&parent)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b", "lone.txt"]);

    // Relative paths are made absolute against the working directory.
    let rel = env.json(&["backup", "a"]);
    assert_eq!(rel["paths"][0], s(&a));
}

#[test]
fn restore_replaces_what_it_finds_in_the_target_and_never_writes_through_symlinks() {
    let env = TestEnv::init();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    write(&src.join("d/f"), b"file in d\n", 0o644);
    write(&src.join("g"), b"file g\n", 0o644);
    symlink("d/f", src.join("l")).unwrap();
    env.backup(&[&src], &[]);

    // A target prepared by someone else: symlinks pointing outside where the snapshot has
    // a directory and a file, a regular file where it has a symlink.
    let outside = env.path("outside");
    fs::create_dir(&outside).unwrap();
    write(&outside.join("victim"), b"must stay\n", 0o644);
    let target = env.path("restore");
    fs::create_dir_all(&target).unwrap();
    symlink(&outside, target.join("d")).unwrap();
    symlink(outside.join("victim"), target.join("g")).unwrap();
    write(&target.join("l"), b"stale", 0o644);

    env.ok(&[
        "restore",
        &format!("latest:{}", s(&src)),
        "--target",
        s(&target),
    ]);
    assert_eq!(
        fs::read(outside.join("victim")).unwrap(),
        b"must stay\n",
        "restore wrote through a symlink"
    );
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        1,
        "restore created files outside the target"
    );
    assert_same_tree(
        &src,
        &target,
        Compare {
            root_metadata: false,
            ..Compare::ALL
        },
    );

    // Restoring again over a restore with local edits gives the snapshot back.
    write(
        &target.join("d/f"),
        b"edited locally, and longer than before\n",
        0o600,
    );
    fs::remove_file(target.join("g")).unwrap();
    env.ok(&[
        "restore",
        &format!("latest:{}", s(&src)),
        "--target",
        s(&target),
    ]);
    assert_same_tree(
        &src,
        &target,
        Compare {
            root_metadata: false,
            ..Compare::ALL
        },
    );
}

/// BUG (open, found by this suite): `dprepo backup /` exits 0 at once with an empty
/// snapshot (0 files, 1 dir): a path that normalises to the root has no components, so
/// the walker marks the virtual root as the target but only walks its (absent) children.
/// Whole-machine backups silently save nothing.
///
/// A fixed backup of `/` reads the whole machine, so it is stopped after a few seconds:
/// the test only fails when the backup finishes early having found nothing.
#[test]
fn backup_of_the_root_directory_is_not_empty() {
    let env = TestEnv::init();
    let mut child = env
        .cmd(["--json", "backup", "/"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            let mut doc = String::new();
            std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut doc).unwrap();
            let snap: serde_json::Value = serde_json::from_str(&doc).unwrap_or_default();
            let files = snap["summary"]["files"].as_u64().unwrap_or(0);
            assert!(
                files > 0,
                "backup of / finished early with {files} files: {snap}"
            );
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // still walking the machine: the root is being backed up
    child.wait().unwrap();
}

/// Small files are restored in groups that share range reads and one writing task
/// (restore.rs). A tree of several hundred small files, many identical (one chunk
/// serves several files of a group), some empty and some with their own modes, spans
/// many groups and must come back exactly, in content, mode and mtime.
#[test]
fn many_small_files_restore_exactly_across_groups() {
    let env = TestEnv::init_with(Backend::Local);
    let src = env.path("src");
    for d in 0..5 {
        let dir = src.join(format!("d{d}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..90 {
            let body = match f % 5 {
                0 => Vec::new(),
                1 => b"the same content in many files\n".to_vec(),
                2 => random_bytes(d * 1000 + f, 3_000 + f as usize * 97),
                3 => text_bytes(20_000 + f as usize * 13),
                _ => random_bytes(7, 5_000),
            };
            write(
                &dir.join(format!("f{f:03}")),
                &body,
                0o600 + (f as u32 % 3) * 0o40,
            );
        }
    }
    stamp_mtimes(&src, &mut 1_600_000_000, &[]);
    let snap = env.backup(&[&src], &[]);
    assert_eq!(snap["summary"]["files"], 450, "{snap}");

    let target = env.path("restore");
    let restored = env.json(&["restore", "latest", "--target", s(&target)]);
    assert_eq!(restored["files"], 450, "restore --json: {restored}");
    assert_same_tree(&src, &restored_path(&target, &src), Compare::ALL);
}
