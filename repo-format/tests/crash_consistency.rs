//! Crash safety through the storage trait: a backend that fails every write after N
//! successful ones stands in for a crash at every point of a backup. Whatever the point,
//! the repository must hold no snapshot that references missing data, and a later
//! backup must succeed.

use dprepo_repo_format::backup::{backup, BackupOptions, BackupProgress, BackupSource};
use dprepo_repo_format::restore::{restore, RestoreOptions, RestoreProgress};
use dprepo_repo_format::storage::{FaultyStorage, MemoryStorage, Storage};
use dprepo_repo_format::{InitOptions, Repository};
use std::path::Path;
use std::sync::Arc;

#[path = "support/common.rs"]
mod common;
use common::{restore_to_tempdir, FAST_KDF};

fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

fn write_tree(root: &Path, seed: u64) {
    let mut rand = xorshift(seed);
    for d in 0..4 {
        let dir = root.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..5 {
            let len = (rand() % 300_000) as usize;
            let data: Vec<u8> = (0..len).map(|_| rand() as u8).collect();
            std::fs::write(dir.join(format!("f{f}")), data).unwrap();
        }
    }
}

fn options() -> InitOptions {
    // Small packs so a backup writes many of them: more crash points.
    InitOptions::default()
        .with_kdf(FAST_KDF)
        .with_pack_size(1 << 20)
}

async fn run_backup(repo: &Repository, source: &Path) -> dprepo_repo_format::Result<()> {
    backup(
        repo,
        BackupSource::Paths(vec![source.to_path_buf()]),
        BackupOptions::default(),
        Arc::new(BackupProgress::default()),
    )
    .await
    .map(|_| ())
}

/// Restore every snapshot and compare it with the source it was taken from.
async fn check_every_snapshot_restores(repo: &Repository, source: &Path) {
    for snap in repo.list_snapshots().await.unwrap() {
        let target = restore_to_tempdir(repo, &snap, source).await;
        assert_trees_equal(source, target.path());
    }
}

fn assert_trees_equal(a: &Path, b: &Path) {
    let mut names: Vec<_> = std::fs::read_dir(a)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    let mut other: Vec<_> = std::fs::read_dir(b)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    other.sort();
    assert_eq!(names, other, "entries of {}", a.display());
    for n in names {
        let (pa, pb) = (a.join(&n), b.join(&n));
        if pa.is_dir() {
            assert_trees_equal(&pa, &pb);
        } else {
            assert!(
                std::fs::read(&pa).unwrap() == std::fs::read(&pb).unwrap(),
                "content of {}",
                pa.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_write_leaves_no_snapshot_with_missing_data() {
    let source = tempfile::tempdir().unwrap();
    write_tree(source.path(), 42);
    // How many writes does a clean backup make?
    let probe = MemoryStorage::new();
    let repo = Repository::init(Arc::new(probe.clone()), b"pw", options())
        .await
        .unwrap();
    let before = probe.names().len();
    run_backup(&repo, source.path()).await.unwrap();
    let writes = probe.names().len() - before + 1; // + the session marker, deleted at the end
    assert!(
        writes > 5,
        "expected a backup to write several packs, got {writes} writes"
    );

    for crash_after in 0..writes {
        let storage = MemoryStorage::new();
        let faulty = FaultyStorage::new(Arc::new(storage.clone()));
        let repo = Repository::init(Arc::new(faulty.clone()), b"pw", options())
            .await
            .unwrap();
        faulty.fail_writes_after(Some(crash_after));
        let result = run_backup(&repo, source.path()).await;
        faulty.fail_writes_after(None);
        // Reopen as a new process would after the crash.
        let reopened = Repository::open(Arc::new(storage.clone()), b"pw")
            .await
            .unwrap();
        let snapshots = reopened.list_snapshots().await.unwrap();
        match result {
            Ok(()) => assert_eq!(snapshots.len(), 1),
            Err(_) => assert!(
                snapshots.is_empty(),
                "a failed backup (crash after {crash_after} writes) committed a snapshot"
            ),
        }
        check_every_snapshot_restores(&reopened, source.path()).await;
        // The next backup after the crash succeeds and restores.
        run_backup(&reopened, source.path())
            .await
            .unwrap_or_else(|e| {
                panic!("backup after a crash after {crash_after} writes failed: {e}")
            });
        check_every_snapshot_restores(&reopened, source.path()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_backup_leaves_earlier_snapshots_intact() {
    let source = tempfile::tempdir().unwrap();
    write_tree(source.path(), 7);
    let storage = MemoryStorage::new();
    let faulty = FaultyStorage::new(Arc::new(storage.clone()));
    let repo = Repository::init(Arc::new(faulty.clone()), b"pw", options())
        .await
        .unwrap();
    run_backup(&repo, source.path()).await.unwrap();
    let first = repo.list_snapshots().await.unwrap();
    // Change everything, then fail part-way through the second backup.
    write_tree(source.path(), 8);
    faulty.fail_writes_after(Some(3));
    assert!(run_backup(&repo, source.path()).await.is_err());
    faulty.fail_writes_after(None);
    let reopened = Repository::open(Arc::new(storage.clone()), b"pw")
        .await
        .unwrap();
    let after = reopened.list_snapshots().await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].id, first[0].id);
    // The first snapshot still restores byte-exact to the first version of the tree.
    let original = tempfile::tempdir().unwrap();
    write_tree(original.path(), 7);
    let target = tempfile::tempdir().unwrap();
    let summary = restore(
        &reopened,
        &after[0].manifest.tree,
        source.path().as_os_str().as_encoded_bytes(),
        target.path(),
        &RestoreOptions::default(),
        Arc::new(RestoreProgress::default()),
    )
    .await
    .unwrap();
    assert!(summary.is_complete(), "{:?}", summary.errors);
    assert_trees_equal(original.path(), target.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_stream_round_trips_through_multi_level_chunk_lists() {
    // Tiny chunks make this stream need chunk lists (more than 4096 chunks).
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let tiny = dprepo_repo_format::chunker::ChunkerParams::new(256, 1024, 4096).unwrap();
    let repo = Repository::init(storage, b"pw", options().with_stream_chunker(tiny))
        .await
        .unwrap();
    let mut rand = xorshift(99);
    let data: Vec<u8> = (0..12 << 20).map(|_| rand() as u8).collect();
    let source = BackupSource::Stream {
        name: "db.dump".into(),
        reader: Box::new(std::io::Cursor::new(data.clone())),
    };
    let outcome = backup(
        &repo,
        source,
        BackupOptions::default(),
        Arc::new(BackupProgress::default()),
    )
    .await
    .unwrap();
    let root = outcome.snapshot.manifest.tree;
    let tree = repo.load_tree(&root).await.unwrap();
    match &tree.nodes[0].kind {
        dprepo_repo_format::tree::NodeKind::File(c) => assert!(
            c.level >= 1,
            "expected chunk lists for {} bytes in ~1 KiB chunks",
            data.len()
        ),
        other => panic!("stream stored as {other:?}"),
    }
    let mut out = Vec::new();
    dprepo_repo_format::restore::dump(&repo, &root, b"db.dump", &mut out)
        .await
        .unwrap();
    assert!(out == data, "dumped stream differs");
}

/// A symlink planted in the restore target where the snapshot has a directory or a file
/// must be replaced, not followed: restore never writes outside its target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_does_not_follow_symlinks_planted_in_the_target() {
    let source = tempfile::tempdir().unwrap();
    std::fs::create_dir(source.path().join("dir")).unwrap();
    std::fs::write(source.path().join("dir/inner"), b"snapshot data").unwrap();
    std::fs::write(source.path().join("file"), b"file data").unwrap();
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let repo = Repository::init(storage, b"pw", options()).await.unwrap();
    run_backup(&repo, source.path()).await.unwrap();
    let snap = &repo.list_snapshots().await.unwrap()[0];
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("file"), b"precious").unwrap();
    let target = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), target.path().join("dir")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("file"), target.path().join("file")).unwrap();
    let summary = restore(
        &repo,
        &snap.manifest.tree,
        source.path().as_os_str().as_encoded_bytes(),
        target.path(),
        &RestoreOptions::default(),
        Arc::new(RestoreProgress::default()),
    )
    .await
    .unwrap();
    assert!(summary.is_complete(), "{:?}", summary.errors);
    assert_eq!(
        std::fs::read(outside.path().join("file")).unwrap(),
        b"precious"
    );
    assert!(!outside.path().join("inner").exists());
    assert!(std::fs::symlink_metadata(target.path().join("dir"))
        .unwrap()
        .is_dir());
    assert_eq!(
        std::fs::read(target.path().join("dir/inner")).unwrap(),
        b"snapshot data"
    );
    assert_eq!(
        std::fs::read(target.path().join("file")).unwrap(),
        b"file data"
    );
}
