//! The garbage collection protocol against concurrent writers, with interleavings forced
//! deterministically: a storage wrapper holds a backup just before it writes its
//! manifest while gc runs.

use async_trait::async_trait;
use dprepo_repo_format::gc::{self, GcOptions};
use dprepo_repo_format::session::WriterSession;
use dprepo_repo_format::storage::{BlobInfo, MemoryStorage, Storage};
use dprepo_repo_format::{InitOptions, Repository, Result};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

#[path = "support/common.rs"]
mod common;
use common::{assert_restores, run_backup, xorshift_bytes, FAST_KDF};

/// Holds every `put` of a snapshot manifest until released.
#[derive(Debug)]
struct GatedStorage {
    inner: MemoryStorage,
    armed: AtomicBool,
    arrived: Notify,
    release: Notify,
}

#[async_trait]
impl Storage for GatedStorage {
    fn location(&self) -> String {
        "gated".into()
    }
    async fn put(&self, name: &str, data: &[u8]) -> Result<()> {
        if name.starts_with("snapshots/") && self.armed.swap(false, Ordering::SeqCst) {
            self.arrived.notify_one();
            self.release.notified().await;
        }
        self.inner.put(name, data).await
    }
    async fn create(&self, name: &str, data: &[u8]) -> Result<()> {
        self.inner.create(name, data).await
    }
    async fn get(&self, name: &str) -> Result<Vec<u8>> {
        self.inner.get(name).await
    }
    async fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.inner.get_range(name, offset, len).await
    }
    async fn size(&self, name: &str) -> Result<u64> {
        self.inner.size(name).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<BlobInfo>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, name: &str) -> Result<()> {
        self.inner.delete(name).await
    }
}

fn random_file(path: &Path, len: usize, seed: u64) {
    std::fs::write(path, xorshift_bytes(seed, len)).unwrap();
}

fn data_packs(storage: &MemoryStorage) -> Vec<String> {
    storage
        .names()
        .into_iter()
        .filter(|n| n.starts_with("data/"))
        .collect()
}

async fn setup() -> (MemoryStorage, Repository, tempfile::TempDir) {
    let storage = MemoryStorage::new();
    let repo = Repository::init(
        Arc::new(storage.clone()),
        b"pw",
        InitOptions::default().with_kdf(FAST_KDF),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    random_file(&dir.path().join("x"), 1_500_000, 1);
    (storage, repo, dir)
}

/// A backup that deduplicated against a pack whose only snapshot was forgotten is in
/// flight while gc runs: gc must not delete that pack, and the backup's snapshot must
/// restore.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_keeps_packs_an_in_flight_backup_deduplicated_against() {
    let (storage, repo, dir) = setup().await;
    let first = run_backup(&repo, dir.path()).await;
    gc::forget_snapshots(&repo, &[first.id]).await.unwrap();
    let old_packs = data_packs(&storage);

    let gated = Arc::new(GatedStorage {
        inner: storage.clone(),
        armed: AtomicBool::new(true),
        arrived: Notify::new(),
        release: Notify::new(),
    });
    let writer = Repository::open(gated.clone(), b"pw").await.unwrap();
    let dir_path = dir.path().to_path_buf();
    let in_flight = tokio::spawn(async move {
        let snap = run_backup(&writer, &dir_path).await;
        (writer, snap)
    });
    gated.arrived.notified().await;

    // The backup stored nothing new (every chunk deduplicated) and has not committed.
    let (_, report) = gc::run(&repo, &GcOptions::default()).await.unwrap();
    assert_eq!(
        report.packs_deleted, 0,
        "gc deleted packs an in-flight backup references"
    );
    assert_eq!(report.tombstones_blocked.len(), 1);
    assert!(old_packs.iter().all(|p| storage.names().contains(p)));

    gated.release.notify_one();
    let (writer, second) = in_flight.await.unwrap();
    // The next gc sees the committed snapshot and keeps its data.
    let (_, report) = gc::run(&repo, &GcOptions::default()).await.unwrap();
    assert_eq!(report.tombstones_processed, 1);
    assert_eq!(report.packs_deleted, 0);
    assert!(report.packs_kept >= 1);
    assert_restores(&writer, &second, dir.path()).await;
    let fresh = Repository::open(Arc::new(storage.clone()), b"pw")
        .await
        .unwrap();
    assert_restores(&fresh, &second, dir.path()).await;
}

/// A backup that starts after a tombstone never references its packs: it stores the
/// data again, so the tombstoned pack can go once older writers are done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_started_after_a_tombstone_stores_its_own_copy() {
    let (storage, repo, dir) = setup().await;
    let first = run_backup(&repo, dir.path()).await;
    gc::forget_snapshots(&repo, &[first.id]).await.unwrap();
    let old_packs = data_packs(&storage);
    // An older writer (started before the tombstone) keeps the tombstone blocked.
    let (older, _) = WriterSession::start(&repo, "backup").await.unwrap();
    let (_, report) = gc::run(&repo, &GcOptions::default()).await.unwrap();
    assert_eq!(report.tombstones_blocked.len(), 1);

    let writer = Repository::open(Arc::new(storage.clone()), b"pw")
        .await
        .unwrap();
    let second = run_backup(&writer, dir.path()).await;
    assert!(
        second.manifest.summary.bytes_added >= 1_500_000,
        "the new backup must not reuse tombstoned data"
    );
    older.end().await;

    let (_, report) = gc::run(&repo, &GcOptions::default()).await.unwrap();
    assert!(report.packs_deleted >= 1);
    assert!(
        old_packs.iter().all(|p| !storage.names().contains(p)),
        "the tombstoned packs are gone"
    );
    let fresh = Repository::open(Arc::new(storage.clone()), b"pw")
        .await
        .unwrap();
    assert_restores(&fresh, &second, dir.path()).await;
}

/// A writer that crashed leaves a session without heartbeats; once stale it no longer
/// blocks deletion, and it is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_sessions_stop_blocking_and_are_removed() {
    let (storage, repo, dir) = setup().await;
    let first = run_backup(&repo, dir.path()).await;
    gc::forget_snapshots(&repo, &[first.id]).await.unwrap();
    let (crashed, _) = WriterSession::start(&repo, "backup").await.unwrap();
    std::mem::forget(crashed);
    let (_, report) = gc::run(&repo, &GcOptions::default()).await.unwrap();
    assert_eq!(report.packs_deleted, 0);
    let later = GcOptions {
        clock: Arc::new(|| chrono::Utc::now() + chrono::Duration::hours(2)),
        ..GcOptions::default()
    };
    let (_, report) = gc::run(&repo, &later).await.unwrap();
    assert_eq!(report.stale_sessions_removed.len(), 1);
    assert!(report.packs_deleted >= 1);
    assert!(data_packs(&storage).is_empty());
}

/// gc interrupted after any number of writes leaves a consistent repository and the
/// next gc finishes the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_gc_is_finished_by_the_next() {
    for crash_after in 0..12 {
        let (storage, repo, dir) = setup().await;
        random_file(&dir.path().join("y"), 600_000, 2);
        let a = run_backup(&repo, dir.path()).await;
        std::fs::remove_file(dir.path().join("y")).unwrap();
        random_file(&dir.path().join("z"), 400_000, 3);
        let b = run_backup(&repo, dir.path()).await;
        gc::forget_snapshots(&repo, &[a.id]).await.unwrap();
        storage.fail_writes_after(Some(crash_after));
        let _ = gc::run(
            &repo,
            &GcOptions {
                max_unused: 0.0,
                ..GcOptions::default()
            },
        )
        .await;
        storage.fail_writes_after(None);
        let reopened = Repository::open(Arc::new(storage.clone()), b"pw")
            .await
            .unwrap();
        assert_restores(&reopened, &b, dir.path()).await;
        // A crashed gc leaves its lease behind; the next one takes it over once expired.
        let later = GcOptions {
            max_unused: 0.0,
            clock: Arc::new(|| chrono::Utc::now() + chrono::Duration::hours(2)),
            ..GcOptions::default()
        };
        gc::run(&reopened, &later)
            .await
            .unwrap_or_else(|e| panic!("gc after a crash after {crash_after} writes: {e}"));
        let plan = gc::plan(&reopened, &later).await.unwrap();
        assert!(
            plan.delete.is_empty() && plan.orphans.is_empty(),
            "crash after {crash_after}: garbage left: {plan:?}"
        );
        let fresh = Repository::open(Arc::new(storage.clone()), b"pw")
            .await
            .unwrap();
        assert_restores(&fresh, &b, dir.path()).await;
    }
}

/// Lost index files make every pack look like an orphan. gc must refuse rather than
/// delete packs that `repair index` can still recover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_refuses_when_snapshots_reference_unindexed_blobs() {
    let (storage, repo, dir) = setup().await;
    let snap = run_backup(&repo, dir.path()).await;
    let packs_before = data_packs(&storage);
    for name in storage
        .names()
        .into_iter()
        .filter(|n| n.starts_with("index/"))
    {
        storage.delete(&name).await.unwrap();
    }
    let reopened = Repository::open(Arc::new(storage.clone()), b"pw")
        .await
        .unwrap();
    let err = gc::run(&reopened, &GcOptions::default())
        .await
        .expect_err("gc must refuse");
    assert!(err.to_string().contains("repair index"), "{err}");
    assert_eq!(data_packs(&storage), packs_before, "no pack may be deleted");
    dprepo_repo_format::verify::repair_index(&reopened, Arc::new(Default::default()))
        .await
        .unwrap();
    gc::run(&reopened, &GcOptions::default()).await.unwrap();
    assert_restores(&reopened, &snap, dir.path()).await;
}
