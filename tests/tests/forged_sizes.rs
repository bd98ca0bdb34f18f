//! A snapshot forged by someone holding the password: file nodes record a small size
//! while their chunk lists repeat one chunk until they expand to 256 GiB. `restore` and
//! `dump` must refuse such a file having written at most what the node records, and
//! `verify` must report it. The commands run under a file size limit (`ulimit -f`), as a
//! small disk would be: a command that writes past it is killed by SIGXFSZ.

mod common;

use common::*;
use dprepo_repo_format::blob::BlobType;
use dprepo_repo_format::content::{Content, LIST_FANOUT, MAX_INLINE_IDS};
use dprepo_repo_format::manifest::{SnapshotManifest, MANIFEST_VERSION};
use dprepo_repo_format::saver::BlobSaver;
use dprepo_repo_format::storage::{LocalStorage, Storage};
use dprepo_repo_format::tree::{Node, NodeKind, Timestamp, Tree};
use dprepo_repo_format::{BlobId, Repository};
use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

/// What the forged nodes record.
const RECORDED: u64 = 300_000;
/// The file size limit the commands run under, in KiB (`ulimit -f` counts 1024 bytes).
const LIMIT_KIB: u64 = 2048;

fn file_node(name: &str, content: Content, size: u64) -> Node {
    Node {
        name: name.as_bytes().to_vec(),
        kind: NodeKind::File(content),
        mode: 0o100644,
        uid: 0,
        gid: 0,
        mtime: Timestamp::default(),
        ctime: Timestamp::default(),
        inode: 0,
        device: 0,
        size,
        extensions: Vec::new(),
    }
}

/// Write, with the library and the password, a snapshot whose root holds `big` (a
/// 300 KB node over two levels of chunk lists that expand to 256 GiB) and `small` (a
/// 1 KB node with 64 inline ids of one 1 MiB chunk).
fn forge(env: &TestEnv) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(&env.repo));
        let repo = Repository::open(storage.clone(), env.password.as_bytes())
            .await
            .unwrap();
        let config = repo.config().clone();
        let (saver, uploader) = BlobSaver::start(
            storage.clone(),
            repo.keys().clone(),
            repo.index().clone(),
            config.pack_size,
            config.compression_level,
            1,
        );
        let saved = {
            let saver = saver.clone();
            tokio::task::spawn_blocking(move || {
                let chunk = random_bytes(7, 1 << 20);
                let data = saver.save(BlobType::Data, &chunk)?;
                let list = Content {
                    level: 0,
                    ids: vec![data; LIST_FANOUT],
                };
                let list = saver.save(BlobType::ChunkList, &list.encode_list())?;
                let big = Content {
                    level: 1,
                    ids: vec![list; MAX_INLINE_IDS],
                };
                let small = Content {
                    level: 0,
                    ids: vec![data; MAX_INLINE_IDS],
                };
                let tree = Tree {
                    nodes: vec![
                        file_node("big", big, RECORDED),
                        file_node("small", small, 1000),
                    ],
                };
                let root = saver.save(BlobType::Tree, &tree.encode()?)?;
                saver.close()?;
                Ok::<BlobId, dprepo_repo_format::Error>(root)
            })
            .await
            .unwrap()
        };
        drop(saver);
        uploader.finish().await.unwrap();
        let root = saved.unwrap();
        let manifest = SnapshotManifest {
            version: MANIFEST_VERSION,
            time: chrono::Utc::now(),
            tree: root,
            paths: vec!["/".into()],
            hostname: "forger".into(),
            username: "forger".into(),
            tags: Vec::new(),
            parent: None,
            stdin_name: None,
            chunker: config.chunker,
            program_version: "forged".into(),
            summary: Default::default(),
            expires: None,
            original: None,
            copied_from: None,
        };
        let bytes = manifest.encode(repo.keys());
        let id = BlobId::of_stored(&bytes);
        storage
            .put(&format!("snapshots/{}", id.to_hex()), &bytes)
            .await
            .unwrap();
    });
}

/// Run `dprepo args` under the file size limit, stdout into `stdout_file`.
fn run_limited(env: &TestEnv, args: &[&str], stdout_file: &Path) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -f {LIMIT_KIB}; exec \"$0\" \"$@\""))
        .arg(dprepo_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(stdout_file).unwrap())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("DPREPO_") {
            cmd.env_remove(&key);
        }
    }
    env.storage_env(&mut cmd);
    cmd.env("DPREPO_REPOSITORY", env.location())
        .env("DPREPO_PASSWORD", &env.password)
        .current_dir(env.dir.path());
    cmd.output().unwrap()
}

/// Exits by itself (not killed by SIGXFSZ, as a command writing past the limit is).
fn assert_not_killed(out: &Output, what: &str) {
    assert!(
        out.status.code().is_some(),
        "{what} was killed ({}): it wrote past the file size limit; stderr:\n{}",
        out.status,
        stderr(out)
    );
}

/// BUG (issue 19, point 8): restore wrote a forged file's chunks until the disk was
/// full (16 GiB for a node recording 300 KB).
#[test]
fn restore_of_a_forged_file_stops_at_its_recorded_size() {
    let env = TestEnv::init();
    forge(&env);
    let target = env.path("restore");
    let args = ["restore", "latest", "--target", s(&target)];
    let out = run_limited(&env, &args, &env.path("restore.out"));
    assert_not_killed(&out, "restore");
    let skipped = assert_incomplete_restore(&out, &args);
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    for (line, name) in skipped.iter().zip(["big", "small"]) {
        assert!(
            line.starts_with(s(&target.join(name))) && line.contains("records"),
            "{line}"
        );
    }
    assert!(
        skipped[0].contains(&format!("records {RECORDED} bytes")),
        "{skipped:?}"
    );
    // Nothing is left of either file.
    assert_eq!(fs::read_dir(&target).unwrap().count(), 0);
}

/// BUG (issue 19, point 8): dump streamed a forged file's chunks without end (7 GB
/// before it was stopped).
#[test]
fn dump_of_a_forged_file_stops_at_its_recorded_size() {
    let env = TestEnv::init();
    forge(&env);
    for name in ["big", "small"] {
        let sink = env.path(&format!("{name}.dump"));
        let args = ["dump", "latest", name];
        let out = run_limited(&env, &args, &sink);
        assert_not_killed(&out, "dump");
        let line = assert_clean_failure(&out, &args);
        assert!(
            line.contains(&format!("file {name}")) && line.contains("records"),
            "{line}"
        );
        assert!(fs::metadata(&sink).unwrap().len() <= RECORDED);
    }
}

/// BUG (issue 19, point 8): `verify` and `verify --read-data` found nothing wrong with a
/// forged snapshot that restore cannot restore.
#[test]
fn verify_reports_files_whose_chunks_do_not_add_up_to_their_size() {
    let env = TestEnv::init();
    forge(&env);
    for extra in [&[][..], &["--read-data"]] {
        let mut args = vec!["--json", "verify"];
        args.extend_from_slice(extra);
        let out = env.run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let problems = report["problems"].as_array().unwrap();
        for name in ["/big", "/small"] {
            assert!(
                problems.iter().any(|p| p["kind"] == "file_size_mismatch"
                    && p["files"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|f| f.as_str().unwrap().ends_with(&format!(":{name}")))),
                "{args:?}: {name} is not reported: {report}"
            );
        }
    }
}
