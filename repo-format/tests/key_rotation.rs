//! Master-key rotation (SPEC.md sections 5.1 and 18.2): `rotate` commits a new master
//! key generation, new data is sealed under it while old data stays readable, `finish`
//! re-encrypts everything and retires the old key. Tested here: a backup that opened the
//! repository before the rotation and commits after it; a failure at every write of
//! `rotate` and of `finish` followed by a rerun; `verify --read-data` clean after each
//! step; the old key (a kept key file with its password, or the old subkeys) refused or
//! useless afterwards; the golden repositories of format versions 1 and 2 rotated.

use dprepo_repo_format::backup::{backup, BackupOptions, BackupProgress, BackupSource};
use dprepo_repo_format::crypto::Keys;
use dprepo_repo_format::gc::{self, GcOptions};
use dprepo_repo_format::index::IndexFile;
use dprepo_repo_format::manifest::{Lease, SessionMarker, SnapshotManifest};
use dprepo_repo_format::pack::decode_pack;
use dprepo_repo_format::repo::IndexPlace;
use dprepo_repo_format::rotate::{
    finish, finish_with_progress, objects_not_under_newest, rotate, FinishProgress,
};
use dprepo_repo_format::session::WriterSession;
use dprepo_repo_format::storage::{FaultyStorage, LocalStorage, MemoryStorage, Storage};
use dprepo_repo_format::verify::{verify, DataSubset, VerifyProgress};
use dprepo_repo_format::{Error, InitOptions, Repository};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

#[path = "support/common.rs"]
mod common;
use common::{assert_restores, run_backup, xorshift_bytes, FAST_KDF};

const PW: &[u8] = b"password";

async fn open(storage: &Arc<dyn Storage>, pw: &[u8]) -> Result<Repository, Error> {
    Repository::open_with(storage.clone(), pw, &IndexPlace::Memory).await
}

async fn assert_verifies(repo: &Repository, when: &str) {
    let report = verify(
        repo,
        Some(DataSubset::All),
        Arc::new(VerifyProgress::default()),
    )
    .await
    .unwrap_or_else(|e| panic!("{when}: verify failed: {e}"));
    assert!(report.ok(), "{when}: {:?}", report.problems);
}

fn write_tree(dir: &Path, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("a"), xorshift_bytes(seed, 300_000)).unwrap();
    std::fs::write(dir.join("b"), xorshift_bytes(seed + 1, 5_000)).unwrap();
}

/// Every index file, manifest and pack that `keys` still opens.
async fn opened_by(storage: &Arc<dyn Storage>, keys: &Keys) -> Vec<String> {
    let mut out = Vec::new();
    for dir in ["index/", "snapshots/", "data/", "meta/", "config"] {
        for info in storage.list(dir).await.unwrap() {
            let bytes = storage.get(&info.name).await.unwrap();
            let opens = match dir {
                "index/" => IndexFile::decode(keys, &bytes, &info.name).is_ok(),
                "snapshots/" => SnapshotManifest::decode(keys, &bytes, &info.name).is_ok(),
                "config" => dprepo_repo_format::config::Config::decode(keys, &bytes).is_ok(),
                _ => decode_pack(keys, &bytes, &info.name).is_ok(),
            };
            if opens {
                out.push(info.name);
            }
        }
    }
    out
}

async fn repository_with_snapshot(
    storage: &Arc<dyn Storage>,
    dir: &Path,
) -> dprepo_repo_format::Snapshot {
    let repo = Repository::init(
        storage.clone(),
        PW,
        InitOptions::default().with_kdf(FAST_KDF),
    )
    .await
    .unwrap();
    write_tree(dir, 1);
    run_backup(&repo, dir).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_running_across_the_rotation_commits_and_stays_readable() {
    let memory: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let faulty = FaultyStorage::new(memory.clone());
    let storage: Arc<dyn Storage> = Arc::new(faulty.clone());
    let src = tempfile::tempdir().unwrap();
    let first_dir = src.path().join("first");
    let first = repository_with_snapshot(&storage, &first_dir).await;
    let old = open(&storage, PW).await.unwrap();
    let old_keys = old.keys().clone();
    // Another password, as a second user would have: rotation removes it.
    old.add_password(b"other", FAST_KDF).await.unwrap();
    let other_key_file = {
        let names: Vec<String> = storage
            .list("keys/")
            .await
            .unwrap()
            .into_iter()
            .map(|b| b.name)
            .filter(|n| n != old.opened_with())
            .collect();
        assert_eq!(names.len(), 1);
        (names[0].clone(), storage.get(&names[0]).await.unwrap())
    };

    // A backup on the old handle, held just before its manifest.
    let running_dir = src.path().join("running");
    write_tree(&running_dir, 7);
    let gate = faulty.gate(1, |name, _| name.starts_with("snapshots/"));
    let writer = old.clone();
    let dir = running_dir.clone();
    let running = tokio::spawn(async move { run_backup(&writer, &dir).await });
    gate.wait_for(1).await;

    // Rotate with the password in use: refused while another key exists, unless told.
    let err = rotate(&old, PW, false, &GcOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("remove-other-keys"), "{err}");
    let report = rotate(&old, PW, true, &GcOptions::default()).await.unwrap();
    assert_eq!(report.generation, 2);
    assert_eq!(report.removed_key_files.len(), 2);

    // The new generation opens; the handle of the old one cannot start a new writer.
    let new = open(&storage, PW).await.unwrap();
    assert_eq!(new.key_generation(), 2);
    let late_dir = src.path().join("late");
    write_tree(&late_dir, 11);
    let err = backup(
        &old,
        BackupSource::Paths(vec![late_dir.clone()]),
        BackupOptions::default(),
        Arc::new(BackupProgress::default()),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::KeyRetired { .. }), "{err}");

    // finish waits for the writer that opened before the rotation.
    let err = finish(&new, &GcOptions::default()).await.unwrap_err();
    assert!(matches!(err, Error::Busy { .. }), "{err}");
    gate.open();
    let during = running.await.unwrap();
    // New data under the new key: a backup of the new generation.
    let after_dir = src.path().join("after");
    write_tree(&after_dir, 21);
    let new = open(&storage, PW).await.unwrap();
    let after = run_backup(&new, &after_dir).await;
    assert!(!opened_by(&storage, &new.keys().newest_only())
        .await
        .is_empty());
    assert_verifies(&new, "after rotate").await;
    for (snap, dir) in [
        (&first, &first_dir),
        (&during, &running_dir),
        (&after, &after_dir),
    ] {
        let snap =
            Repository::select_snapshot(&new.list_snapshots().await.unwrap(), &snap.id.to_hex())
                .unwrap();
        assert_restores(&new, &snap, dir).await;
    }
    // The old subkeys open what was written before, not the new backup's manifest.
    let old_opens = opened_by(&storage, &old_keys).await;
    assert!(!old_opens.contains(&format!("snapshots/{}", after.id.to_hex())));
    assert!(old_opens.contains(&format!("snapshots/{}", first.id.to_hex())));

    // A kept key file of the old generation, with its password, is refused.
    storage
        .put(&other_key_file.0, &other_key_file.1)
        .await
        .unwrap();
    let err = open(&storage, b"other").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::KeyRetired {
                generation: 1,
                newest: 2,
                ..
            }
        ),
        "{err}"
    );

    let report = finish(&new, &GcOptions::default()).await.unwrap();
    assert!(report.retired);
    assert!(report.packs_reencrypted > 0);
    assert_eq!(report.snapshots.len(), 2, "{report:?}");
    let new = open(&storage, PW).await.unwrap();
    assert!(!new.keys().holds_older());
    assert!(objects_not_under_newest(&new).await.unwrap().is_empty());
    assert_verifies(&new, "after finish").await;
    let snapshots = new.list_snapshots().await.unwrap();
    assert_eq!(snapshots.len(), 3);
    for snap in &snapshots {
        let dir = match snap.manifest.original {
            Some(o) if o == first.id => &first_dir,
            Some(o) if o == during.id => &running_dir,
            None if snap.id == after.id => &after_dir,
            _ => panic!("unexpected snapshot {snap:?}"),
        };
        assert_restores(&new, snap, dir).await;
    }
    // The old key: nothing in storage opens with it; its key file is gone again.
    assert!(opened_by(&storage, &old_keys).await.is_empty());
    assert!(matches!(
        storage.head(&other_key_file.0).await,
        Err(Error::NotFound { .. })
    ));
    storage
        .put(&other_key_file.0, &other_key_file.1)
        .await
        .unwrap();
    assert!(matches!(
        open(&storage, b"other").await,
        Err(Error::KeyRetired { .. })
    ));
    // A second rotation starts from the finished one.
    let report = rotate(&new, PW, true, &GcOptions::default()).await.unwrap();
    assert_eq!(report.generation, 3);
    let third = open(&storage, PW).await.unwrap();
    finish(&third, &GcOptions::default()).await.unwrap();
    let third = open(&storage, PW).await.unwrap();
    assert_verifies(&third, "after a second rotation").await;
    assert_eq!(storage.list("keyring/").await.unwrap().len(), 1);
}

/// A handle opened before a rotation committed must not write under the lease: a second
/// `rotate` from it would have deleted the committed generation's key ring as a leftover
/// (its R1), and a gc from it would write index files under the key `finish` retires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_of_the_old_generation_cannot_rotate_again_or_gc() {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().join("d");
    repository_with_snapshot(&storage, &dir).await;
    let a = open(&storage, PW).await.unwrap();
    let b = open(&storage, PW).await.unwrap();
    rotate(&a, PW, false, &GcOptions::default()).await.unwrap();
    let err = rotate(&b, PW, false, &GcOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::KeyRetired { .. }), "{err}");
    let err = dprepo_repo_format::gc::run(&b, &GcOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::KeyRetired { .. }), "{err}");
    // The lease was released, and the new generation is intact.
    assert!(storage.list("locks/").await.unwrap().is_empty());
    let new = open(&storage, PW).await.unwrap();
    assert_eq!(new.key_generation(), 2);
    finish(&new, &GcOptions::default()).await.unwrap();
    dprepo_repo_format::gc::run(&open(&storage, PW).await.unwrap(), &GcOptions::default())
        .await
        .unwrap();
    assert_verifies(&open(&storage, PW).await.unwrap(), "after gc").await;
}

/// A failure at each write of `rotate`, then of `finish`, and then at each delete of
/// both: the repository opens, verifies and restores after each, and a rerun completes.
/// (Failed deletes reach the states between a write and the delete after it, a copy
/// written and its original still there, which failed writes never reach.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_fails_at_every_step_and_a_rerun_completes() {
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().join("d");
    // A repository of three snapshots (several packs and index files), behind a
    // storage that fails every write (or delete) after the first `n`.
    let setup = || async {
        let memory: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let faulty = FaultyStorage::new(memory);
        let storage: Arc<dyn Storage> = Arc::new(faulty.clone());
        repository_with_snapshot(&storage, &dir).await;
        let repo = open(&storage, PW).await.unwrap();
        std::fs::write(dir.join("c"), xorshift_bytes(99, 70_000)).unwrap();
        run_backup(&repo, &dir).await;
        std::fs::write(dir.join("d"), xorshift_bytes(100, 9_000)).unwrap();
        run_backup(&repo, &dir).await;
        (faulty, storage)
    };
    // After a failure the same snapshot may be listed twice (F6 wrote the re-sealed
    // manifest, the old one's delete failed): three distinct trees, and exactly three
    // snapshots once a run completed.
    let check = |storage: Arc<dyn Storage>, when: String, completed: bool| {
        let dir = dir.clone();
        async move {
            let repo = open(&storage, PW).await.unwrap();
            assert_verifies(&repo, &when).await;
            let snapshots = repo.list_snapshots().await.unwrap();
            let trees: BTreeSet<_> = snapshots.iter().map(|s| s.manifest.tree).collect();
            assert_eq!(trees.len(), 3, "{when}");
            if completed {
                assert_eq!(snapshots.len(), 3, "{when}");
            }
            let latest = Repository::select_snapshot(&snapshots, "latest").unwrap();
            assert_restores(&repo, &latest, &dir).await;
            repo
        }
    };
    // A failed delete may leave this process's lease: a rerun by another process takes
    // it over (at once on this host, its holder being dead; elsewhere once expired), as
    // the rerun here does with its clock past the lease's expiry.
    let rerun_options = |storage: &Arc<dyn Storage>| {
        let storage = storage.clone();
        async move {
            if storage.head("locks/gc").await.is_ok() {
                later(31, 30)
            } else {
                GcOptions::default()
            }
        }
    };
    for deletes in [false, true] {
        let what = if deletes { "deletes" } else { "writes" };
        let arm = |faulty: &FaultyStorage, n: Option<usize>| {
            if deletes {
                faulty.fail_deletes_after(n);
            } else {
                faulty.fail_writes_after(n);
            }
        };
        let mut rotate_failures = 0;
        for step in 0.. {
            let (faulty, storage) = setup().await;
            let repo = open(&storage, PW).await.unwrap();
            arm(&faulty, Some(step));
            let rotated = rotate(&repo, PW, false, &GcOptions::default()).await;
            arm(&faulty, None);
            let when = format!("rotate failed after {step} {what}");
            let repo = check(storage.clone(), when.clone(), true).await;
            if rotated.is_ok() {
                assert_eq!(repo.key_generation(), 2);
                break;
            }
            rotate_failures += 1;
            let options = rerun_options(&storage).await;
            if repo.key_generation() == 1 {
                rotate(&repo, PW, false, &options).await.unwrap();
            } else {
                // Committed; only the old key files' deletes (R6) failed: they open
                // nothing, and `finish` deletes them.
                assert!(deletes, "{when}: a failed rotate committed");
                finish(&repo, &options).await.unwrap();
            }
            let repo = check(storage.clone(), format!("rotate rerun after {step}"), true).await;
            assert_eq!(repo.key_generation(), 2);
            assert_eq!(storage.list("keys/").await.unwrap().len(), 1);
        }
        let mut finish_failures = 0;
        for step in 0.. {
            let (faulty, storage) = setup().await;
            let repo = open(&storage, PW).await.unwrap();
            rotate(&repo, PW, false, &GcOptions::default())
                .await
                .unwrap();
            let repo = open(&storage, PW).await.unwrap();
            arm(&faulty, Some(step));
            let finished = finish(&repo, &GcOptions::default()).await;
            arm(&faulty, None);
            let when = format!("finish failed after {step} {what}");
            let repo = check(storage.clone(), when, finished.is_ok()).await;
            if finished.is_ok() {
                assert!(objects_not_under_newest(&repo).await.unwrap().is_empty());
                break;
            }
            finish_failures += 1;
            let options = rerun_options(&storage).await;
            finish(&repo, &options).await.unwrap();
            let repo = check(storage.clone(), format!("finish rerun after {step}"), true).await;
            assert!(objects_not_under_newest(&repo).await.unwrap().is_empty());
            assert!(!repo.keys().holds_older());
        }
        eprintln!("{what}: rotate failed {rotate_failures} times, finish {finish_failures}");
        assert!(rotate_failures >= 1, "{what}: {rotate_failures}");
        assert!(finish_failures >= 5, "{what}: {finish_failures}");
        if !deletes {
            assert!(rotate_failures >= 3, "{rotate_failures}");
        }
    }
}

/// Repositories written by earlier builds (tests/golden) open, rotate and verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_repositories_rotate() {
    for version in ["v1", "v2"] {
        let golden = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/golden")
            .join(version);
        let tmp = tempfile::tempdir().unwrap();
        let copy = tmp.path().join("repo");
        copy_dir(&golden.join("repo"), &copy);
        let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(&copy));
        let pw = b"golden-password";
        let repo = open(&storage, pw).await.unwrap();
        let before = repo.list_snapshots().await.unwrap().len();
        rotate(&repo, pw, true, &GcOptions::default())
            .await
            .unwrap();
        let repo = open(&storage, pw).await.unwrap();
        assert_verifies(&repo, version).await;
        finish(&repo, &GcOptions::default()).await.unwrap();
        let repo = open(&storage, pw).await.unwrap();
        assert_verifies(&repo, version).await;
        assert_eq!(repo.list_snapshots().await.unwrap().len(), before);
        assert!(objects_not_under_newest(&repo).await.unwrap().is_empty());
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Options whose clock runs `minutes` ahead, with a lease time to live of `lease_ttl`
/// minutes (gc tests' time hook: nothing sleeps).
fn later(minutes: i64, lease_ttl: i64) -> GcOptions {
    GcOptions {
        clock: Arc::new(move || chrono::Utc::now() + chrono::Duration::minutes(minutes)),
        lease_ttl: chrono::Duration::minutes(lease_ttl),
        ..GcOptions::default()
    }
}

/// What a process of generation `keys` leaves when killed right after writing its
/// session marker (S-1, before its S-2b check) and its gc lease (before its check).
async fn leftovers_of_a_killed_process(storage: &Arc<dyn Storage>, keys: &Keys) -> String {
    let now = chrono::Utc::now();
    let marker = SessionMarker {
        hostname: "elsewhere".into(),
        pid: 4242,
        pid_namespace: None,
        boot_id: None,
        started: now,
        command: "backup".into(),
        heartbeat: now,
        ready: false,
        seen_tombstones: Vec::new(),
        key_generation: Some(1),
    };
    let name = "sessions/0123456789abcdef0123456789abcdef".to_string();
    storage.create(&name, &marker.encode(keys)).await.unwrap();
    let lease = Lease {
        hostname: "elsewhere".into(),
        pid: 4242,
        pid_namespace: None,
        boot_id: None,
        acquired: now,
        expires: now + chrono::Duration::minutes(30),
        token: "00".into(),
        command: "gc".into(),
    };
    storage
        .create("locks/gc", &lease.encode(keys))
        .await
        .unwrap();
    name
}

/// A process of a retired generation killed after writing its session marker or the gc
/// lease left objects no key of the repository opens. gc, repair and `--finish` used to
/// fail on the lease (`Corrupt`) and be held back by the marker forever; now both count
/// as stale once not written for their expiry (by the storage's modification time), and
/// still hold everything back before it (they may be a live writer of a newer build).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_or_marker_no_key_opens_blocks_gc_and_finish_forever() {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().join("d");
    repository_with_snapshot(&storage, &dir).await;
    std::fs::write(dir.join("c"), xorshift_bytes(5, 80_000)).unwrap();
    let old = open(&storage, PW).await.unwrap();
    run_backup(&old, &dir).await;
    rotate(&old, PW, false, &GcOptions::default())
        .await
        .unwrap();
    finish(&open(&storage, PW).await.unwrap(), &GcOptions::default())
        .await
        .unwrap();
    // The old handle now refuses before writing either object.
    let err = WriterSession::start(&old, "backup").await.unwrap_err();
    assert!(matches!(err, Error::KeyRetired { .. }), "{err}");
    let err = gc::acquire_lease(&old, &GcOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::KeyRetired { .. }), "{err}");
    assert!(storage.list("sessions/").await.unwrap().is_empty());
    assert!(storage.list("locks/").await.unwrap().is_empty());
    // But one that passed its checks just before the rotation and was killed after
    // writing leaves them, sealed under generation 1, which no key opens any more.
    let marker = leftovers_of_a_killed_process(&storage, old.keys()).await;
    let repo = open(&storage, PW).await.unwrap();
    // The second snapshot (re-sealed by `finish`, so listed under a new id).
    let second =
        Repository::select_snapshot(&repo.list_snapshots().await.unwrap(), "latest").unwrap();
    gc::forget_snapshots(&repo, &[second.id]).await.unwrap();

    // Young: the lease holds gc and repair back (busy, not an error about damage).
    let err = gc::run(&repo, &GcOptions::default()).await.unwrap_err();
    assert!(matches!(err, Error::Busy { .. }), "{err}");
    // Past the lease's time to live but not the marker's expiry: gc takes the lease
    // over, and the marker still blocks the tombstone.
    let (_, report) = gc::run(&repo, &later(2, 1)).await.unwrap();
    assert_eq!(report.tombstones_blocked.len(), 1, "{report:?}");
    assert_eq!(report.tombstones_processed, 0);
    assert!(storage.head(&marker).await.is_ok());
    // Past the marker's expiry: removed as stale, the tombstone processed.
    let (_, report) = gc::run(&repo, &later(31, 30)).await.unwrap();
    assert_eq!(report.stale_sessions_removed, vec![marker.clone()]);
    assert!(report.tombstones_blocked.is_empty(), "{report:?}");
    assert_eq!(report.tombstones_processed, 1);
    assert_verifies(&repo, "after gc").await;

    // `--finish` of the next rotation: held back by a young marker no key opens, and by
    // a young lease; both give way once expired.
    rotate(&repo, PW, false, &GcOptions::default())
        .await
        .unwrap();
    let marker = leftovers_of_a_killed_process(&storage, old.keys()).await;
    let repo = open(&storage, PW).await.unwrap();
    assert_eq!(repo.key_generation(), 3);
    let err = finish(&repo, &GcOptions::default()).await.unwrap_err();
    assert!(matches!(err, Error::Busy { .. }), "{err}");
    let err = finish(&repo, &later(2, 1)).await.unwrap_err();
    assert!(
        matches!(&err, Error::Busy { reason, .. } if reason.contains(&marker)),
        "{err}"
    );
    let report = finish(&repo, &later(31, 30)).await.unwrap();
    assert_eq!(report.stale_sessions_removed, vec![marker]);
    assert!(report.retired);
    let repo = open(&storage, PW).await.unwrap();
    assert!(objects_not_under_newest(&repo).await.unwrap().is_empty());
    assert_verifies(&repo, "after finish").await;
    assert!(storage.list("locks/").await.unwrap().is_empty());
}

/// A decorator tracking the bytes stored (puts add, replacements and deletes subtract)
/// and their peak.
#[derive(Debug, Clone)]
struct PeakStorage {
    inner: Arc<dyn Storage>,
    bytes: Arc<std::sync::Mutex<(u64, u64)>>,
}

impl PeakStorage {
    fn new(inner: Arc<dyn Storage>) -> Self {
        PeakStorage {
            inner,
            bytes: Arc::new(std::sync::Mutex::new((0, 0))),
        }
    }
    /// Start tracking from what is stored now.
    async fn reset(&self) -> u64 {
        let mut total = 0;
        for info in self.inner.list("").await.unwrap() {
            total += info.size;
        }
        *self.bytes.lock().unwrap() = (total, total);
        total
    }
    fn peak(&self) -> u64 {
        self.bytes.lock().unwrap().1
    }
    fn change(&self, added: u64, removed: u64) {
        let mut b = self.bytes.lock().unwrap();
        b.0 = (b.0 + added).saturating_sub(removed);
        b.1 = b.1.max(b.0);
    }
}

#[async_trait::async_trait]
impl Storage for PeakStorage {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn put_opts(
        &self,
        name: &str,
        data: dprepo_repo_format::storage::Bytes,
        mode: dprepo_repo_format::storage::PutMode,
    ) -> Result<dprepo_repo_format::storage::Version, Error> {
        let before = self.inner.head(name).await.map(|m| m.size).unwrap_or(0);
        let len = data.len() as u64;
        let version = self.inner.put_opts(name, data, mode).await?;
        self.change(len, before);
        Ok(version)
    }
    async fn get_versioned(
        &self,
        name: &str,
    ) -> Result<dprepo_repo_format::storage::Versioned, Error> {
        self.inner.get_versioned(name).await
    }
    async fn head(&self, name: &str) -> Result<dprepo_repo_format::storage::BlobMeta, Error> {
        self.inner.head(name).await
    }
    async fn modified(&self, name: &str) -> Result<Option<std::time::SystemTime>, Error> {
        self.inner.modified(name).await
    }
    async fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
        self.inner.get_range(name, offset, len).await
    }
    async fn list(
        &self,
        prefix: &str,
    ) -> Result<Vec<dprepo_repo_format::storage::BlobInfo>, Error> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, name: &str) -> Result<(), Error> {
        let before = self.inner.head(name).await.map(|m| m.size).unwrap_or(0);
        self.inner.delete(name).await?;
        self.change(0, before);
        Ok(())
    }
}

/// `--finish` used to copy every pack before freeing any: it needed twice the
/// repository's room (a nearly full disk failed it), and a killed run left a whole
/// copy behind. Now it goes one index file at a time: the peak stays below the
/// repository plus the largest index file's packs (plus index files and manifests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finish_needs_twice_the_room_of_the_repository() {
    let memory: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let peak = PeakStorage::new(memory.clone());
    let storage: Arc<dyn Storage> = Arc::new(peak.clone());
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().join("d");
    repository_with_snapshot(&storage, &dir).await;
    let repo = open(&storage, PW).await.unwrap();
    // Five backups of new data: five index files, each naming its own packs.
    for seed in 10..14u64 {
        std::fs::write(dir.join(format!("f{seed}")), xorshift_bytes(seed, 300_000)).unwrap();
        run_backup(&repo, &dir).await;
    }
    rotate(&repo, PW, false, &GcOptions::default())
        .await
        .unwrap();
    let repo = open(&storage, PW).await.unwrap();
    let mut largest = 0u64;
    let index_files = storage.list("index/").await.unwrap();
    assert!(index_files.len() >= 5, "{index_files:?}");
    for info in &index_files {
        let bytes = storage.get(&info.name).await.unwrap();
        let file = IndexFile::decode(repo.keys(), &bytes, &info.name).unwrap();
        let mut packs = 0;
        for p in &file.packs {
            packs += storage
                .size(&dprepo_repo_format::layout::pack(p.kind, &p.id))
                .await
                .unwrap();
        }
        largest = largest.max(packs);
    }
    let initial = peak.reset().await;
    finish(&repo, &GcOptions::default()).await.unwrap();
    let margin = 64 * 1024;
    eprintln!(
        "finish: {initial} bytes stored, largest index file's packs {largest}, peak {}",
        peak.peak()
    );
    assert!(
        peak.peak() < initial + largest + margin,
        "peak {} with {initial} stored and {largest} in the largest index file's packs",
        peak.peak()
    );
    let repo = open(&storage, PW).await.unwrap();
    assert!(objects_not_under_newest(&repo).await.unwrap().is_empty());
    assert_verifies(&repo, "after finish").await;
    assert_eq!(repo.list_snapshots().await.unwrap().len(), 5);
}

/// R1 used to hash the password with every key file in `keys/`, whatever its Argon2
/// parameters and however many there were: key files are untrusted bytes, and one
/// planted with the largest parameters a key file may carry (1 GiB, 64 passes) made
/// `rotate` allocate a gigabyte and hash for minutes, 64 such files for hours. Now only
/// key files that can be an interrupted rotation's (the parameters of the key file in
/// use, named by their storage id) are hashed, at most MAX_KEYS_TRIED of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_hashes_with_every_key_files_argon2_parameters() {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let src = tempfile::tempdir().unwrap();
    repository_with_snapshot(&storage, &src.path().join("d")).await;
    let repo = open(&storage, PW).await.unwrap();
    // The key file in use with its parameters raised to the limit, under its own id.
    let mut planted = storage.get(repo.opened_with()).await.unwrap();
    planted[7..11].copy_from_slice(&(1u32 << 20).to_le_bytes());
    planted[11..15].copy_from_slice(&64u32.to_le_bytes());
    planted[15..19].copy_from_slice(&1u32.to_le_bytes());
    let planted_name = format!(
        "keys/{}",
        dprepo_repo_format::id::BlobId::of_stored(&planted).to_hex()
    );
    dprepo_repo_format::key::KeyFile::decode(&planted, &planted_name)
        .expect("within the limits every reader applies");
    storage.create(&planted_name, &planted).await.unwrap();
    // Hashing with it takes minutes on any machine; without it rotate takes well under
    // a second here. The bound only catches the hashing, it measures nothing.
    let report = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        rotate(&repo, PW, true, &GcOptions::default()),
    )
    .await
    .expect("rotate hashed the password with the planted key file's parameters")
    .unwrap();
    assert!(report.removed_key_files.contains(&planted_name));
    let repo = open(&storage, PW).await.unwrap();
    assert_eq!(repo.key_generation(), 2);
    assert_eq!(storage.list("keys/").await.unwrap().len(), 1);
}

/// `--finish` reads and rewrites every pack, the longest command there is, and showed
/// nothing until it ended. It now counts packs and bytes as it goes, which the command
/// line shows as a status line on a terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finish_shows_no_progress_while_it_reads_every_pack() {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().join("d");
    repository_with_snapshot(&storage, &dir).await;
    let repo = open(&storage, PW).await.unwrap();
    std::fs::write(dir.join("c"), xorshift_bytes(3, 200_000)).unwrap();
    run_backup(&repo, &dir).await;
    rotate(&repo, PW, false, &GcOptions::default())
        .await
        .unwrap();
    let mut packs = 0;
    let mut bytes = 0;
    for d in ["data/", "meta/"] {
        for info in storage.list(d).await.unwrap() {
            packs += 1;
            bytes += info.size;
        }
    }
    let progress = FinishProgress::default();
    let repo = open(&storage, PW).await.unwrap();
    let report = finish_with_progress(&repo, &GcOptions::default(), &progress)
        .await
        .unwrap();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(load(&progress.packs_total), packs);
    assert_eq!(load(&progress.packs_done), packs);
    assert_eq!(load(&progress.bytes_read), bytes);
    assert_eq!(load(&progress.bytes_written), report.bytes_written);
    assert_eq!(report.packs_reencrypted as u64, packs);
}

/// Catalogue objects (SPEC.md section 14.2) sealed under the retired key would fail to
/// open after `finish` (a warning at every datasafed call): F7a deletes them, and keeps
/// those of the new generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finish_deletes_catalogue_objects_of_the_old_key() {
    use dprepo_repo_format::catalog::{self, Entry, Kind, CATALOG_DIR};
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let src = tempfile::tempdir().unwrap();
    let snap = repository_with_snapshot(&storage, &src.path().join("d")).await;
    let entry = Entry {
        id: snap.id,
        time: snap.manifest.time,
        tree: snap.manifest.tree,
        size: 1,
        kind: Kind::File,
        path: "/a".into(),
        codec: "none".into(),
    };
    let old = open(&storage, PW).await.unwrap();
    let (old_name, bytes) = catalog::seal(old.keys(), std::slice::from_ref(&entry));
    storage.put(&old_name, &bytes).await.unwrap();
    rotate(&old, PW, false, &GcOptions::default())
        .await
        .unwrap();
    let new = open(&storage, PW).await.unwrap();
    let (new_name, bytes) = catalog::seal(new.keys(), &[entry]);
    storage.put(&new_name, &bytes).await.unwrap();
    finish(&new, &GcOptions::default()).await.unwrap();
    assert_eq!(storage.list_names(CATALOG_DIR).await.unwrap(), [new_name]);
}
