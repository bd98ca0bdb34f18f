//! What a command takes: `backup`'s excludes, `--files-from` lists and `--dry-run`;
//! `restore`'s and `dump`'s include/exclude patterns. Every option runs through the real
//! binary against a generated tree, with text and JSON outputs asserted.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

/// A tree with something for every exclude option.
fn make_tree(root: &Path) {
    let files: &[(&str, usize)] = &[
        ("keep/a.txt", 100),
        ("keep/b.log", 200),
        ("keep/UPPER.LOG", 50),
        ("keep/sub/c.txt", 300),
        ("keep/sub/d.log", 10),
        ("big/huge.bin", 300_000),
        ("big/small.bin", 1000),
        ("cache/real/CACHEDIR.TAG", 0),
        ("cache/real/blob", 500),
        ("cache/fake/CACHEDIR.TAG", 0),
        ("cache/fake/blob", 500),
        ("marked/.nobackup", 0),
        ("marked/secret", 64),
        ("tmp/x", 5),
        ("tmp/y", 5),
    ];
    for (i, (rel, len)) in files.iter().enumerate() {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, random_bytes(i as u64 + 1, *len)).unwrap();
    }
    fs::write(
        root.join("cache/real/CACHEDIR.TAG"),
        "Signature: 8a477f597d28d172789f06886806bc55\n# a cache\n",
    )
    .unwrap();
    fs::write(root.join("cache/fake/CACHEDIR.TAG"), "not a signature\n").unwrap();
}

/// Paths of a snapshot relative to `root`'s position in it (files and directories).
fn snapshot_paths(env: &TestEnv, snapshot: &str, root: &Path) -> BTreeSet<String> {
    let doc = env.json(&["ls", snapshot]);
    let prefix = format!("{}/", s(root));
    doc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["path"].as_str()?.strip_prefix(&prefix).map(String::from))
        .collect()
}

fn excluded_of(doc: &Value, root: &Path) -> BTreeSet<(String, String)> {
    let prefix = format!("{}/", s(root));
    doc["excluded"]
        .as_array()
        .unwrap_or_else(|| panic!("no excluded list: {doc}"))
        .iter()
        .map(|e| {
            let path = e["path"].as_str().unwrap();
            (
                path.strip_prefix(&prefix).unwrap_or(path).to_string(),
                e["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn backup_excludes_by_pattern_marker_cache_tag_and_size() {
    let env = TestEnv::init();
    let root = env.path("src");
    make_tree(&root);
    let exclude_file = env.path("excludes");
    fs::write(&exclude_file, "# comment\n\n  /**/tmp/x  \n").unwrap();
    let doc = env.backup(
        &[&root],
        &[
            "--exclude",
            "*.log",
            "--iexclude",
            "*.LOG",
            "--exclude-file",
            s(&exclude_file),
            "--exclude-if-present",
            ".nobackup",
            "--exclude-caches",
            "--exclude-larger-than",
            "100K",
        ],
    );
    let id = doc["id"].as_str().unwrap();
    let got = snapshot_paths(&env, id, &root);
    assert_eq!(
        got,
        set(&[
            "big",
            "big/small.bin",
            "cache",
            "cache/fake",
            "cache/fake/CACHEDIR.TAG",
            "cache/fake/blob",
            "keep",
            "keep/a.txt",
            "keep/sub",
            "keep/sub/c.txt",
            "tmp",
            "tmp/y",
        ]),
        "a CACHEDIR.TAG without the signature does not exclude its directory"
    );
    let excluded = excluded_of(&doc, &root);
    let expected: BTreeSet<(String, String)> = [
        ("keep/b.log", "pattern"),
        ("keep/UPPER.LOG", "pattern"),
        ("keep/sub/d.log", "pattern"),
        ("big/huge.bin", "too_large"),
        ("cache/real", "marker"),
        ("marked", "marker"),
        ("tmp/x", "pattern"),
    ]
    .iter()
    .map(|(p, r)| (p.to_string(), r.to_string()))
    .collect();
    assert_eq!(excluded, expected, "{doc}");
    assert_eq!(doc["excluded_count"], 7, "{doc}");
    let huge = doc["excluded"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"].as_str().unwrap().ends_with("huge.bin"))
        .unwrap();
    assert_eq!(huge["size"], 300_000);
    assert_eq!(huge["limit"], 100 * 1024);

    // Text output counts what was left out.
    fs::write(root.join("keep/new.log"), b"x").unwrap();
    let out = env.ok(&["backup", s(&root), "--exclude", "*.log"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Excluded: 3 entries"), "{text}");
}

#[test]
fn exclude_patterns_anchor_negate_and_reject_bad_globs() {
    let env = TestEnv::init();
    let root = env.path("src");
    make_tree(&root);
    let anchored = format!("{}/keep/*", s(&root));
    let keep_sub = format!("!{}/keep/sub", s(&root));
    let doc = env.backup(&[&root], &["-e", &anchored, "-e", &keep_sub, "-e", "big"]);
    let got = snapshot_paths(&env, doc["id"].as_str().unwrap(), &root);
    assert!(got.contains("keep/sub/c.txt"), "{got:?}");
    assert!(!got.contains("keep/a.txt"), "{got:?}");
    assert!(!got.iter().any(|p| p.starts_with("big")), "{got:?}");
    assert!(got.contains("tmp/x"), "{got:?}");

    let line = env.fail(&["backup", s(&root), "--exclude", "[oops"]);
    assert!(
        line.contains("[oops") && line.contains("not valid"),
        "{line}"
    );
    let out = env.run(&["backup", s(&root), "--exclude-larger-than", "12Q"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(stderr(&out).contains("unknown unit"), "{}", stderr(&out));
}

#[test]
fn files_from_lists_expand_globs_verbatim_and_raw() {
    let env = TestEnv::init();
    let root = env.path("src");
    make_tree(&root);
    fs::write(root.join("keep/star*name"), b"literal star").unwrap();
    let list = env.path("list");
    fs::write(
        &list,
        format!(
            "# what to back up\n\n  {0}/keep/*.txt  \n{0}/tmp/x\n{0}/nothing-*\n",
            s(&root)
        ),
    )
    .unwrap();
    let verbatim = env.path("verbatim");
    fs::write(&verbatim, format!("{}/keep/star*name\n", s(&root))).unwrap();
    let raw = env.path("raw");
    fs::write(
        &raw,
        format!("{}/big/small.bin\0{}/tmp/y\0", s(&root), s(&root)),
    )
    .unwrap();
    let out = env.run(&[
        "--json",
        "backup",
        "--files-from",
        s(&list),
        "--files-from-verbatim",
        s(&verbatim),
        "--files-from-raw",
        s(&raw),
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "a glob matching nothing is a warning"
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let warnings = doc["warnings"].to_string();
    assert!(
        warnings.contains("nothing-*") && warnings.contains("matches no files"),
        "{warnings}"
    );
    let mut paths: Vec<String> = doc["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p.as_str()
                .unwrap()
                .strip_prefix(&format!("{}/", s(&root)))
                .unwrap()
                .to_string()
        })
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "big/small.bin",
            "keep/a.txt",
            "keep/star*name",
            "tmp/x",
            "tmp/y"
        ],
        "globs expand in --files-from only"
    );

    fs::write(&raw, format!("{}/tmp/y", s(&root))).unwrap();
    let line = env.fail(&["backup", "--files-from-raw", s(&raw)]);
    assert!(line.contains("does not end in a NUL"), "{line}");
    fs::write(&raw, format!("{}/tmp/y\0\0", s(&root))).unwrap();
    let line = env.fail(&["backup", "--files-from-raw", s(&raw)]);
    assert!(line.contains("empty file name"), "{line}");
}

both_backends!(dry_run_reports_what_would_be_added_and_writes_nothing);

/// Every object of the repository with its size, sorted
/// (local: with a hash of its contents).
fn repo_listing(env: &TestEnv) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = match env.backend {
        Backend::Local => tree_manifest(&env.repo).into_iter().collect(),
        Backend::S3 => env
            .s3_list("")
            .into_iter()
            .map(|b| (b.name, b.size.to_string()))
            .collect(),
    };
    v.sort();
    v
}

fn dry_run_reports_what_would_be_added_and_writes_nothing(backend: Backend) {
    let env = TestEnv::init_with(backend);
    let root = env.path("src");
    make_tree(&root);
    let before = repo_listing(&env);
    let doc = env.backup(&[&root], &["--dry-run", "--exclude", "big"]);
    assert_eq!(doc["dry_run"], true, "{doc}");
    assert!(doc["id"].is_null(), "no snapshot id: {doc}");
    let added = doc["summary"]["bytes_added"].as_u64().unwrap();
    assert!(added > 2000, "the new files would be added: {doc}");
    assert_eq!(doc["summary"]["files_new"], 13, "{doc}");
    assert!(
        doc["data_pack_bytes_not_written"].as_u64().unwrap() > 0,
        "{doc}"
    );
    assert_eq!(doc["excluded_count"], 1);
    assert_eq!(
        repo_listing(&env),
        before,
        "a dry run leaves the repository as it was"
    );
    assert_eq!(env.snapshots().len(), 0);

    // Against a parent: only the changed file would be read and added.
    let first = env.backup(&[&root], &[]);
    fs::write(root.join("keep/a.txt"), random_bytes(99, 5000)).unwrap();
    let before = repo_listing(&env);
    let out = env.ok(&["backup", s(&root), "-n"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "using parent snapshot {}",
            &first["id"].as_str().unwrap()[..8]
        )),
        "{text}"
    );
    assert!(
        text.contains("Files: 0 new, 1 changed, 14 unmodified"),
        "{text}"
    );
    assert!(text.contains("Would add to the repository:"), "{text}");
    assert!(text.contains("dry run: nothing was written"), "{text}");
    assert_eq!(repo_listing(&env), before);
    assert_eq!(env.snapshots().len(), 1);
}

/// `--one-file-system` keeps a mount point below the backed-up path as an empty
/// directory. A tmpfs is mounted in a private mount namespace (`unshare -rm`), so the
/// test needs user namespaces, not root.
#[test]
fn one_file_system_keeps_mount_points_empty() {
    let env = TestEnv::init();
    let root = env.path("src");
    make_tree(&root);
    fs::create_dir_all(root.join("mnt")).unwrap();
    let script = format!(
        "mount -t tmpfs none {mnt} && echo inside > {mnt}/file && \"$0\" --json backup --one-file-system {root} && \"$0\" --json backup {root}",
        mnt = s(&root.join("mnt")),
        root = s(&root)
    );
    let mut unshare = std::process::Command::new("unshare");
    unshare
        .args(["-rm", "sh", "-c", script.as_str()])
        .arg(dprepo_bin())
        .env("DPREPO_REPOSITORY", env.location())
        .env("DPREPO_PASSWORD", PASSWORD)
        .current_dir(env.dir.path());
    env.storage_env(&mut unshare);
    let out = unshare.output().expect("run unshare (util-linux)");
    assert!(
        out.status.success(),
        "unshare -rm with a tmpfs mount failed (user namespaces needed): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let docs: Vec<Value> = serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .map(|d| d.unwrap())
        .collect();
    assert_eq!(docs.len(), 2, "{text}");
    let one = snapshot_paths(&env, docs[0]["id"].as_str().unwrap(), &root);
    assert!(one.contains("mnt"), "the mount point is kept: {one:?}");
    assert!(!one.contains("mnt/file"), "{one:?}");
    assert!(
        excluded_of(&docs[0], &root)
            .contains(&("mnt".to_string(), "other_file_system".to_string())),
        "{}",
        docs[0]
    );
    let all = snapshot_paths(&env, docs[1]["id"].as_str().unwrap(), &root);
    assert!(
        all.contains("mnt/file"),
        "without the flag it is crossed: {all:?}"
    );
}

/// Every path below `dir`, relative, sorted (directories too; symlinks not followed).
fn local_paths(dir: &Path) -> BTreeSet<String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            out.insert(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// A snapshot of `make_tree` and the snapshot path of its root (`SNAP:PATH` selector).
fn snapshot_of_tree(env: &TestEnv) -> (String, std::path::PathBuf) {
    let root = env.path("src");
    make_tree(&root);
    let doc = env.backup(&[&root], &[]);
    (
        format!("{}:{}", doc["id"].as_str().unwrap(), s(&root)),
        root,
    )
}

#[test]
fn restore_include_and_exclude_take_only_what_they_match() {
    let env = TestEnv::init();
    let (sel, root) = snapshot_of_tree(&env);
    let target = env.path("t-include");
    let doc = env.json(&[
        "restore",
        &sel,
        "--target",
        s(&target),
        "--include",
        "*.txt",
    ]);
    assert_eq!(
        local_paths(&target),
        set(&["keep", "keep/a.txt", "keep/sub", "keep/sub/c.txt"]),
        "only matches and the directories leading to them"
    );
    assert_eq!(doc["files"], 2, "{doc}");
    assert!(doc["filtered_out"].as_u64().unwrap() > 0, "{doc}");

    let anchored = format!("{}/cache", s(&root));
    let target = env.path("t-dir");
    env.ok(&[
        "restore",
        &sel,
        "--target",
        s(&target),
        "-i",
        &anchored,
        "-e",
        "fake",
    ]);
    assert_eq!(
        local_paths(&target),
        set(&[
            "cache",
            "cache/real",
            "cache/real/CACHEDIR.TAG",
            "cache/real/blob"
        ]),
        "an included directory comes whole, minus what is excluded"
    );

    let target = env.path("t-exclude");
    let out = env.ok(&[
        "restore",
        &sel,
        "--target",
        s(&target),
        "--exclude",
        "keep",
        "--iexclude",
        "*.BIN",
    ]);
    let got = local_paths(&target);
    assert!(
        !got.iter()
            .any(|p| p.starts_with("keep") || p.ends_with(".bin")),
        "{got:?}"
    );
    assert!(got.contains("tmp/x") && got.contains("big"), "{got:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("filtered out"), "{text}");
}

#[test]
fn restore_delete_makes_the_target_match_and_never_follows_a_symlink_out() {
    let env = TestEnv::init();
    let (sel, root) = snapshot_of_tree(&env);
    let target = env.path("target");
    env.ok(&["restore", &sel, "--target", s(&target)]);
    // Extras: a file, a directory tree, and symlinks pointing out of the target, one
    // where the snapshot has a directory.
    let outside = env.path("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("precious"), b"must survive").unwrap();
    fs::write(target.join("keep/extra.txt"), b"extra").unwrap();
    fs::create_dir_all(target.join("extra-dir/deep")).unwrap();
    fs::write(target.join("extra-dir/deep/f"), b"f").unwrap();
    std::os::unix::fs::symlink(&outside, target.join("escape")).unwrap();
    fs::remove_dir_all(target.join("tmp")).unwrap();
    std::os::unix::fs::symlink(&outside, target.join("tmp")).unwrap();

    // A dry run lists what would go, and changes nothing.
    let doc = env.json(&[
        "restore",
        &sel,
        "--target",
        s(&target),
        "--delete",
        "--dry-run",
    ]);
    let would: BTreeSet<String> = doc["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p.as_str()
                .unwrap()
                .strip_prefix(&format!("{}/", s(&target)))
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        would,
        set(&["escape", "extra-dir", "keep/extra.txt"]),
        "{doc}"
    );
    assert_eq!(doc["dry_run"], true);
    assert!(target.join("extra-dir/deep/f").exists());
    assert!(fs::symlink_metadata(target.join("tmp"))
        .unwrap()
        .file_type()
        .is_symlink());

    let out = env.ok(&["restore", &sel, "--target", s(&target), "--delete"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("; 3 entries deleted"), "{text}");
    assert_eq!(
        fs::read(outside.join("precious")).unwrap(),
        b"must survive",
        "nothing outside the target is touched"
    );
    assert_eq!(local_paths(&outside), set(&["precious"]));
    assert_same_tree(&root, &target, Compare::ALL);

    // With a filter, only what it takes is deleted.
    fs::write(target.join("keep/extra.txt"), b"extra").unwrap();
    fs::write(target.join("keep/extra.dat"), b"extra").unwrap();
    env.ok(&[
        "restore",
        &sel,
        "--target",
        s(&target),
        "--delete",
        "--include",
        "*.txt",
    ]);
    assert!(!target.join("keep/extra.txt").exists());
    assert!(
        target.join("keep/extra.dat").exists(),
        "not taken by --include, kept"
    );
}

#[test]
fn restore_overwrite_modes_and_dry_run() {
    let env = TestEnv::init();
    let (sel, root) = snapshot_of_tree(&env);
    let target = env.path("target");

    let doc = env.json(&["restore", &sel, "--target", s(&target), "--dry-run"]);
    assert!(!target.join("keep").exists(), "a dry run restores nothing");
    assert_eq!(doc["files"], 15, "{doc}");
    assert_eq!(doc["dry_run"], true);
    assert!(doc["bytes"].as_u64().unwrap() > 300_000, "{doc}");

    env.ok(&["restore", &sel, "--target", s(&target)]);
    let a = target.join("keep/a.txt");
    let b = target.join("keep/sub/c.txt");
    // a: other content, same size and mtime as the snapshot's; b: changed and newer.
    let snap_a_mtime = fs::metadata(root.join("keep/a.txt"))
        .unwrap()
        .modified()
        .unwrap();
    fs::write(&a, random_bytes(500, 100)).unwrap();
    filetime::set_file_mtime(&a, filetime::FileTime::from_system_time(snap_a_mtime)).unwrap();
    fs::write(&b, b"local edit").unwrap();
    filetime::set_file_mtime(&b, filetime::FileTime::from_unix_time(4_000_000_000, 0)).unwrap();
    let local_a = fs::read(&a).unwrap();

    let doc = env.json(&[
        "restore",
        &sel,
        "--target",
        s(&target),
        "--overwrite",
        "never",
    ]);
    assert_eq!(doc["files"], 0, "{doc}");
    assert_eq!(doc["left_existing"], 15, "{doc}");
    assert_eq!(fs::read(&b).unwrap(), b"local edit");

    let doc = env.json(&[
        "restore",
        &sel,
        "--target",
        s(&target),
        "--overwrite",
        "if-newer",
    ]);
    assert_eq!(
        fs::read(&b).unwrap(),
        b"local edit",
        "the local copy is newer"
    );
    assert_eq!(doc["files"], 0, "{doc}");

    let doc = env.json(&[
        "restore",
        &sel,
        "--target",
        s(&target),
        "--overwrite",
        "if-changed",
    ]);
    assert_eq!(doc["files"], 1, "only c.txt differs in size or time: {doc}");
    assert_eq!(
        fs::read(&b).unwrap(),
        fs::read(root.join("keep/sub/c.txt")).unwrap()
    );
    assert_eq!(fs::read(&a).unwrap(), local_a, "same size and time: left");

    let doc = env.json(&["restore", &sel, "--target", s(&target), "--verify"]);
    assert_eq!(doc["files"], 15, "{doc}");
    assert_eq!(
        doc["verified_files"], 15,
        "every restored file is read again: {doc}"
    );
    assert_same_tree(&root, &target, Compare::ALL);
    let out = env.ok(&[
        "restore",
        &sel,
        "--target",
        s(&target),
        "--verify",
        "-i",
        "*.txt",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(", 2 files verified"), "{text}");
    let out = env.run(&[
        "restore",
        &sel,
        "--target",
        s(&target),
        "--verify",
        "--dry-run",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a dry run restores nothing to verify"
    );
}
