//! `diff`, `find` and `tag` through the real binary: text and JSON outputs asserted
//! against generated trees.

mod common;

use common::*;
use serde_json::Value;
use std::fs;
use std::path::Path;

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

/// Two snapshots of one tree with one change of every kind between them.
fn two_snapshots(env: &TestEnv) -> (String, String, std::path::PathBuf) {
    let root = env.path("src");
    write(&root, "same/deep/a", &random_bytes(1, 1000));
    write(&root, "same/b", &random_bytes(2, 10));
    write(&root, "mod.bin", &random_bytes(3, 4000));
    write(&root, "gone.txt", &random_bytes(4, 700));
    write(&root, "olddir/x", &random_bytes(5, 50));
    write(&root, "olddir/y", &random_bytes(6, 60));
    write(&root, "perm.sh", b"#!/bin/sh\n");
    write(&root, "becomes-dir", b"file first");
    set_mtime(&root.join("perm.sh"), 1_700_000_000, 0);
    let first = env.backup(&[&root], &[])["id"]
        .as_str()
        .unwrap()
        .to_string();

    fs::write(root.join("mod.bin"), random_bytes(33, 5000)).unwrap();
    fs::remove_file(root.join("gone.txt")).unwrap();
    fs::remove_dir_all(root.join("olddir")).unwrap();
    write(&root, "new/n1", &random_bytes(7, 300));
    write(&root, "new.txt", &random_bytes(8, 200));
    set_mode(&root.join("perm.sh"), 0o755);
    set_mtime(&root.join("perm.sh"), 1_700_000_000, 0);
    fs::remove_file(root.join("becomes-dir")).unwrap();
    write(&root, "becomes-dir/inner", b"now a dir");
    let second = env.backup(&[&root], &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    (first, second, root)
}

#[test]
fn diff_lists_every_kind_of_change_with_sizes() {
    let env = TestEnv::init();
    let (first, second, root) = two_snapshots(&env);
    let r = s(&root);
    let doc = env.json(&["diff", &first, &second]);
    let changes: Vec<(String, String)> = doc["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["kind"].as_str().unwrap().to_string(),
                c["path"].as_str().unwrap().replace(r, "R"),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        // The directory's mtime changed with its entries.
        ("metadata", "R/"),
        ("type_changed", "R/becomes-dir/"),
        ("added", "R/becomes-dir/inner"),
        ("removed", "R/gone.txt"),
        ("modified", "R/mod.bin"),
        ("added", "R/new.txt"),
        ("added", "R/new/"),
        ("added", "R/new/n1"),
        ("removed", "R/olddir/"),
        ("removed", "R/olddir/x"),
        ("removed", "R/olddir/y"),
        ("metadata", "R/perm.sh"),
    ]
    .iter()
    .map(|(k, p)| (k.to_string(), p.to_string()))
    .collect();
    let got: Vec<_> = changes
        .iter()
        .filter(|(_, p)| p.starts_with("R/"))
        .cloned()
        .collect();
    assert_eq!(got, expected, "{doc}");
    let stats = &doc["stats"];
    assert_eq!(stats["files_added"], 3, "{stats}");
    assert_eq!(stats["files_removed"], 3, "{stats}");
    assert_eq!(
        stats["files_modified"], 2,
        "mod.bin and the file that became a dir"
    );
    assert_eq!(stats["dirs_added"], 1, "{stats}");
    assert_eq!(stats["dirs_removed"], 1, "{stats}");
    // perm.sh and src/, and /tmp above it when another process changed it meanwhile.
    assert!(stats["metadata_changed"].as_u64().unwrap() >= 2, "{stats}");
    // new/n1 300 + new.txt 200 + becomes-dir/inner 9 + mod.bin 5000
    assert_eq!(stats["bytes_added"], 300 + 200 + 9 + 5000, "{stats}");
    // gone 700 + olddir 110 + mod.bin 4000 + becomes-dir (file) 10
    assert_eq!(stats["bytes_removed"], 700 + 110 + 4000 + 10, "{stats}");
    assert!(
        stats["identical_subtrees_skipped"].as_u64().unwrap() >= 1,
        "same/ is skipped by id: {stats}"
    );
    let modbin = doc["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"].as_str().unwrap().ends_with("mod.bin"))
        .unwrap();
    assert_eq!(modbin["size_before"], 4000);
    assert_eq!(modbin["size_after"], 5000);

    let out = env.ok(&["diff", &first, &second]);
    let text = String::from_utf8_lossy(&out.stdout).replace(r, "R");
    for line in [
        "+    R/new.txt",
        "-    R/gone.txt",
        "M    R/mod.bin",
        "U    R/perm.sh",
        "T    R/becomes-dir/",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} in:\n{text}");
    }
    assert!(
        text.contains("Files:       3 new, 3 removed, 2 changed"),
        "{text}"
    );
    assert!(text.contains("Dirs:        1 new, 1 removed"), "{text}");

    let same = env.json(&["diff", &second, &second]);
    assert_eq!(same["changes"], Value::Array(vec![]));
    let line = env.fail(&["diff", &first, "ffffffff"]);
    assert!(line.contains("ffffffff"), "{line}");
}

#[test]
fn find_searches_names_paths_times_and_snapshots() {
    let env = TestEnv::init();
    let (first, second, root) = two_snapshots(&env);
    let docs = env.json(&["find", "*.txt"]);
    let per: Vec<(String, Vec<String>)> = docs
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["snapshot"].as_str().unwrap().to_string(),
                d["matches"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| {
                        m["path"]
                            .as_str()
                            .unwrap()
                            .rsplit('/')
                            .next()
                            .unwrap()
                            .to_string()
                    })
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        per,
        vec![
            (first.clone(), vec!["gone.txt".to_string()]),
            (second.clone(), vec!["new.txt".to_string()])
        ]
    );
    assert_eq!(docs[0]["hits"], 1);

    // --snapshot, a path pattern, case folding.
    let pattern = format!("{}/OLDDIR/*", s(&root));
    let docs = env.json(&["find", "-i", &pattern, "--snapshot", &first[..8]]);
    assert_eq!(docs.as_array().unwrap().len(), 1);
    assert_eq!(docs[0]["hits"], 2, "{docs}");
    let docs = env.json(&["find", &pattern, "--snapshot", &first[..8]]);
    assert_eq!(docs, Value::Array(vec![]), "case matters without -i");

    // perm.sh's mtime is 2023-11-14; everything else is from today.
    let docs = env.json(&["find", "*", "--newest", "2024-01-01", "-s", &second]);
    let paths: Vec<&str> = docs[0]["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.iter().any(|p| p.ends_with("/perm.sh"))
            && !paths.iter().any(|p| p.ends_with("new.txt")),
        "{paths:?}"
    );
    let docs = env.json(&["find", "perm.sh", "--oldest", "2024-01-01 00:00"]);
    assert_eq!(docs, Value::Array(vec![]));

    let out = env.ok(&["find", "new.txt"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!(
            "Found matching entries in snapshot {}",
            &second[..8]
        )),
        "{text}"
    );
    assert!(text.contains(&format!("{}/new.txt\n", s(&root))), "{text}");
    let out = env.ok(&["find", "nothing-matches"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no entries found in 2 snapshots"));
    let line = env.fail(&["find", "x", "--oldest", "yesterday"]);
    assert!(line.contains("not a time"), "{line}");
}

#[test]
fn tag_adds_removes_and_sets_and_keeps_the_original_id() {
    let env = TestEnv::init();
    let a = env.backup_stream("s", b"one");
    let b = env.backup_stream("s", b"two");
    let doc = env.json(&["tag", "--add", "keep,prod", &a]);
    let changed = doc["changed"].as_array().unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0]["replaced"], a.as_str());
    assert_eq!(changed[0]["original"], a.as_str());
    assert_eq!(changed[0]["tags"], serde_json::json!(["keep", "prod"]));
    let a2 = changed[0]["id"].as_str().unwrap().to_string();
    assert_ne!(a2, a);

    // Without ids: every snapshot matching the filters.
    let doc = env.json(&["tag", "--add", "all"]);
    assert_eq!(doc["changed"].as_array().unwrap().len(), 2);
    let snaps = env.snapshots();
    let tags: Vec<Value> = snaps.iter().map(|s| s["tags"].clone()).collect();
    assert_eq!(
        tags,
        vec![
            serde_json::json!(["keep", "prod", "all"]),
            serde_json::json!(["all"])
        ]
    );
    // The content is unchanged: the tree, and what dump returns.
    assert_eq!(env.dump("latest", "s"), b"two");
    let first_now = snaps[0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        snaps[0]["original"],
        a.as_str(),
        "the chain names the first id"
    );

    let out = env.ok(&["tag", "--remove", "prod", "--tag", "keep"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("tags keep,all"), "{text}");
    assert!(text.contains("modified 1 snapshots, 0 unchanged"), "{text}");
    let doc = env.json(&["tag", "--remove", "absent"]);
    assert_eq!(doc["unchanged"], 2, "{doc}");

    let doc = env.json(&[
        "tag",
        "--set",
        "only",
        "--host",
        snaps[1]["hostname"].as_str().unwrap(),
    ]);
    assert_eq!(doc["changed"].as_array().unwrap().len(), 2);
    assert!(env
        .snapshots()
        .iter()
        .all(|s| s["tags"] == serde_json::json!(["only"])));
    env.json(&["tag", "--set", ""]);
    assert!(env
        .snapshots()
        .iter()
        .all(|s| s["tags"] == serde_json::json!([])));

    let line = env.fail(&["tag", &b]);
    assert!(line.contains("--add, --remove or --set"), "{line}");
    let out = env.run(&["tag", "--set", "x", "--add", "y"]);
    assert_eq!(out.status.code(), Some(2), "--set excludes --add");
    assert!(env
        .fail(&["tag", "--add", "x", &first_now])
        .contains(&first_now[..8]));
    // `snapshot expire` rewrites the manifest the same way: the chain goes on.
    let expired = env.json(&["snapshot", "expire", "latest", "--in", "30d"]);
    assert!(expired["expires"].is_string(), "{expired}");
    assert_eq!(expired["original"], b.as_str(), "{expired}");
    assert_eq!(expired["tags"], serde_json::json!([]));
    // Old ids are gone; only the two current manifests remain.
    assert_eq!(env.repo_file_names("snapshots").len(), 2);
}

#[test]
fn rewrite_removes_excluded_paths_into_new_snapshots_and_forgets_on_request() {
    let env = TestEnv::init();
    let root = env.path("src");
    write(&root, "app/config.yml", b"setting: 1\n");
    write(&root, "app/server.key", b"-----BEGIN PRIVATE KEY-----\n");
    write(&root, "app/deep/other.KEY", b"another secret");
    write(&root, "data/big.bin", &random_bytes(9, 100_000));
    let first = env.backup(&[&root], &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    write(&root, "data/more.bin", &random_bytes(10, 1000));
    let second = env.backup(&[&root], &[])["id"]
        .as_str()
        .unwrap()
        .to_string();

    // A dry run says what would go and writes nothing.
    let before = env.repo_file_names("snapshots");
    let doc = env.json(&["rewrite", "--iexclude", "*.key", "--dry-run"]);
    assert_eq!(doc["dry_run"], true);
    assert_eq!(doc["rewritten"].as_array().unwrap().len(), 2, "{doc}");
    assert_eq!(env.repo_file_names("snapshots"), before);

    let doc = env.json(&["rewrite", "--iexclude", "*.key", &first]);
    let r = &doc["rewritten"][0];
    assert_eq!(r["original"], first.as_str());
    let removed: Vec<String> = r["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().replace(s(&root), "R"))
        .collect();
    assert_eq!(removed, vec!["R/app/deep/other.KEY", "R/app/server.key"]);
    let new = r["rewritten"].as_str().unwrap().to_string();
    assert_eq!(
        env.snapshots().len(),
        3,
        "the original is kept without --forget"
    );

    // The copy restores to the source without the keys, and keeps the rest by id.
    let target = env.path("restored");
    env.ok(&["restore", &new, "--target", s(&target)]);
    let restored = restored_path(&target, &root);
    assert!(!restored.join("app/server.key").exists());
    assert!(!restored.join("app/deep/other.KEY").exists());
    assert_eq!(
        fs::read(restored.join("data/big.bin")).unwrap(),
        random_bytes(9, 100_000)
    );
    let diff = env.json(&["diff", &first, &new]);
    let kinds: Vec<&str> = diff["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "removed")
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), 2, "{diff}");
    let snap = env
        .snapshots()
        .into_iter()
        .find(|s| s["id"] == new.as_str())
        .unwrap();
    assert_eq!(snap["original"], first.as_str());

    // Rewriting it again changes nothing; --forget drops the second's original.
    let out = env.ok(&[
        "rewrite", "-e", "*.key", "-e", "*.KEY", "--forget", &new, &second,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("rewrote 1 snapshots, 1 unchanged; forgot 1 originals"),
        "{text}"
    );
    assert!(
        text.contains(&format!("snapshot {}: removed 2 entries", &second[..8])),
        "{text}"
    );
    let ids: Vec<String> = env
        .snapshots()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert!(!ids.contains(&second), "{ids:?}");
    assert!(ids.contains(&first) && ids.contains(&new), "{ids:?}");
    // gc keeps everything the rewritten snapshots use.
    env.ok(&["gc"]);
    env.ok(&["verify", "--read-data"]);
    let target = env.path("after-gc");
    env.ok(&["restore", "latest", "--target", s(&target)]);
    assert_eq!(
        fs::read(restored_path(&target, &root).join("data/more.bin")).unwrap(),
        random_bytes(10, 1000)
    );

    let line = env.fail(&["rewrite", &first]);
    assert!(line.contains("nothing to remove"), "{line}");
}
