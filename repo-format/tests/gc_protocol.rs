//! The garbage collection protocol against concurrent writers, with interleavings forced
//! deterministically: a storage wrapper holds a backup just before it writes its
//! manifest while gc runs.

use dprepo_repo_format::backup::{
    backup, BackupOptions, BackupProgress, BackupSource, ParentChoice,
};
use dprepo_repo_format::gc::{self, GcOptions};
use dprepo_repo_format::manifest::Lease;
use dprepo_repo_format::session::WriterSession;
use dprepo_repo_format::storage::{FaultyStorage, MemoryStorage, PutMode, Storage};
use dprepo_repo_format::{Error, InitOptions, Repository};
use std::path::Path;
use std::sync::Arc;

#[path = "support/common.rs"]
mod common;
use common::{assert_restores, run_backup, xorshift_bytes, FAST_KDF};

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

    // Holds the backup's manifest write until released.
    let gated = FaultyStorage::new(Arc::new(storage.clone()));
    let gate = gated.gate(1, |name, _| name.starts_with("snapshots/"));
    let writer = Repository::open(Arc::new(gated), b"pw").await.unwrap();
    let dir_path = dir.path().to_path_buf();
    let in_flight = tokio::spawn(async move {
        let snap = run_backup(&writer, &dir_path).await;
        (writer, snap)
    });
    gate.wait_for(1).await;

    // The backup stored nothing new (every chunk deduplicated) and has not committed.
    let (_, report) = gc::run(&repo, &GcOptions::default()).await.unwrap();
    assert_eq!(
        report.packs_deleted, 0,
        "gc deleted packs an in-flight backup references"
    );
    assert_eq!(report.tombstones_blocked.len(), 1);
    assert!(old_packs.iter().all(|p| storage.names().contains(p)));

    gate.open();
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
        let faulty = FaultyStorage::new(Arc::new(storage.clone()));
        let crashing = Repository::open(Arc::new(faulty.clone()), b"pw")
            .await
            .unwrap();
        faulty.fail_writes_after(Some(crash_after));
        let _ = gc::run(
            &crashing,
            &GcOptions {
                max_unused: 0.0,
                ..GcOptions::default()
            },
        )
        .await;
        faulty.fail_writes_after(None);
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
    dprepo_repo_format::repair::repair_index(&reopened, Arc::new(Default::default()))
        .await
        .unwrap();
    gc::run(&reopened, &GcOptions::default()).await.unwrap();
    assert_restores(&reopened, &snap, dir.path()).await;
}

/// A POSIX ustar archive of `members` (name, data, mtime), as `pg_basebackup -Ft`
/// streams one, followed by 512 bytes from `tail_seed` after the end blocks, so no two
/// archives share their last chunk.
fn ustar(members: &[(&str, &[u8], u64)], tail_seed: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data, mtime) in members {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        h[136..148].copy_from_slice(format!("{mtime:011o}\0").as_bytes());
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out.extend_from_slice(&xorshift_bytes(tail_seed, 512));
    out
}

async fn backup_stream(
    repo: &Repository,
    name: &str,
    data: Vec<u8>,
    parent: ParentChoice,
) -> dprepo_repo_format::Snapshot {
    let source = BackupSource::Stream {
        name: name.into(),
        reader: Box::new(std::io::Cursor::new(data)),
    };
    let options = BackupOptions::default().with_parent(parent);
    backup(repo, source, options, Arc::new(BackupProgress::default()))
        .await
        .unwrap()
        .snapshot
}

async fn dump(repo: &Repository, snap: &dprepo_repo_format::Snapshot, name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    dprepo_repo_format::restore::dump(repo, &snap.manifest.tree, name.as_bytes(), &mut out)
        .await
        .unwrap();
    out
}

/// gc collects a base with the snapshots that used it, and keeps the pack of an unused
/// delta against it (the pack holds a live blob). A later backup stores that page again,
/// in full. If a gc planned before that backup committed deletes the full copy, the
/// dangling delta must not count as the copy that survives (SPEC section 18, G7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_whose_base_was_collected_is_not_a_surviving_copy() {
    let (storage, repo, _dir) = setup().await;
    let page_b = xorshift_bytes(1, 8192);
    let mut page_x = page_b.clone();
    page_x[100..140].copy_from_slice(&xorshift_bytes(2, 40));
    let page_z = xorshift_bytes(5, 8192);
    let (other, kept) = (xorshift_bytes(3, 200_000), xorshift_bytes(4, 200_000));
    // A stores b in full; B stores x as a delta of b, next to a new member `kept` that
    // E (another stream, no parent) still uses after A and B are forgotten. Only A and B
    // share the header of base/1 (E and D have another mtime), so A's pack, holding b,
    // becomes garbage, while B's pack stays for `kept`.
    let tar_a = ustar(&[("base/1", &page_b, 1), ("other", &other, 1)], 10);
    let tar_b = ustar(&[("base/1", &page_x, 1), ("kept", &kept, 1)], 11);
    let tar_e = ustar(&[("base/1", &page_z, 2), ("kept", &kept, 1)], 12);
    // D shares E's header of base/1 and E's last chunk, so its only new blob is x.
    let tar_d = ustar(&[("base/1", &page_x, 2)], 12);
    let a = backup_stream(&repo, "db.tar", tar_a, ParentChoice::Auto).await;
    let b = backup_stream(&repo, "db.tar", tar_b, ParentChoice::Auto).await;
    assert_eq!(b.manifest.summary.deltas_added, 1);
    let e = backup_stream(&repo, "e.tar", tar_e.clone(), ParentChoice::None).await;
    gc::forget_snapshots(&repo, &[a.id, b.id]).await.unwrap();
    let keep_packs = GcOptions {
        max_unused: 1.0,
        ..GcOptions::default()
    };
    gc::run(&repo, &keep_packs).await.unwrap();
    let (x_id, b_id) = (
        repo.keys().content_id(&page_x),
        repo.keys().content_id(&page_b),
    );
    assert!(repo.locate(&b_id).is_none(), "b was collected");
    assert_eq!(
        repo.locate(&x_id).unwrap().base,
        Some(b_id),
        "x's delta stayed"
    );

    // D stores x again: the delta's base is gone, so in full.
    let d = backup_stream(&repo, "d.tar", tar_d.clone(), ParentChoice::None).await;
    assert_eq!(repo.locate(&x_id).unwrap().base, None);

    // gc plans while D's manifest is not visible yet (D's packs have no live blob), D
    // commits, then gc applies: x's delta copy, whose base is gone, is no copy.
    let manifest = format!("snapshots/{}", d.id.to_hex());
    let bytes = storage.get(&manifest).await.unwrap();
    storage.delete(&manifest).await.unwrap();
    let plan = gc::plan(&repo, &keep_packs).await.unwrap();
    assert!(!plan.delete.is_empty());
    storage.put(&manifest, &bytes).await.unwrap();
    let mut lease = gc::acquire_lease(&repo, &keep_packs).await.unwrap();
    gc::apply(&repo, plan, &keep_packs, &mut lease)
        .await
        .unwrap();
    gc::release_lease(&repo, &lease).await;

    let reopened = Repository::open(Arc::new(storage.clone()), b"pw")
        .await
        .unwrap();
    assert_eq!(dump(&reopened, &d, "d.tar").await, tar_d);
    assert_eq!(dump(&reopened, &e, "e.tar").await, tar_e);
}

/// gc copies a pack's live deltas to a new pack only after decoding each against its
/// base, read from the base's own pack. A damaged base keeps the pack where it is, with
/// a warning; once the base is intact again, gc rewrites the pack and the stream still
/// dumps byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_rewrites_a_pack_of_deltas_only_when_their_bases_decode() {
    let (storage, repo, _dir) = setup().await;
    // Odd seeds: the generator ignores a seed's lowest bit. Each "page" is a whole tar
    // page group (128 KiB, one chunk).
    let pages: Vec<Vec<u8>> = (0..8)
        .map(|i| xorshift_bytes(21 + 2 * i, 131_072))
        .collect();
    let changed: Vec<Vec<u8>> = pages
        .iter()
        .enumerate()
        .map(|(i, page)| {
            let mut page = page.clone();
            page[300..340].copy_from_slice(&xorshift_bytes(41 + 2 * i as u64, 40));
            page
        })
        .collect();
    let (old_rel, new_rel) = (pages.concat(), changed.concat());
    let scratch = xorshift_bytes(7, 200_000);
    // A holds the bases. B stores the changed pages as deltas, next to `scratch`, which
    // only B uses; F stores the same pages as B (so references B's deltas) without it.
    let tar_a = ustar(&[("base/1", &old_rel, 1)], 33);
    let tar_b = ustar(&[("base/1", &new_rel, 1), ("scratch", &scratch, 1)], 35);
    let tar_f = ustar(&[("base/1", &new_rel, 1)], 37);
    backup_stream(&repo, "db.tar", tar_a, ParentChoice::Auto).await;
    let b = backup_stream(&repo, "db.tar", tar_b, ParentChoice::Auto).await;
    assert_eq!(b.manifest.summary.deltas_added, 8);
    let f = backup_stream(&repo, "db.tar", tar_f.clone(), ParentChoice::Auto).await;
    gc::forget_snapshots(&repo, &[b.id]).await.unwrap();

    let (delta, base) = (0..pages.len())
        .find_map(|i| {
            let delta = repo.locate(&repo.keys().content_id(&changed[i]))?;
            delta.base?;
            Some((delta, repo.locate(&repo.keys().content_id(&pages[i]))?))
        })
        .expect("a page of F stored as a delta");
    let (delta_pack, base_pack) = (delta.pack_name(), base.pack_name());
    let intact = storage.get(&base_pack).await.unwrap();
    let mut damaged = intact.clone();
    damaged[base.offset as usize + 20] ^= 0x40;
    storage.put(&base_pack, &damaged).await.unwrap();

    let rewrite_all = GcOptions {
        max_unused: 0.0,
        ..GcOptions::default()
    };
    let (_, report) = gc::run(&repo, &rewrite_all).await.unwrap();
    assert!(
        report.warnings.iter().any(|w| w.contains("not rewritten")),
        "{report:?}"
    );
    assert_eq!(report.packs_rewritten, 0, "{report:?}");
    assert!(data_packs(&storage).contains(&delta_pack));

    storage.put(&base_pack, &intact).await.unwrap();
    let (_, report) = gc::run(&repo, &rewrite_all).await.unwrap();
    assert_eq!(report.packs_rewritten, 1, "{report:?}");
    assert!(report.warnings.is_empty(), "{report:?}");
    let reopened = Repository::open(Arc::new(storage.clone()), b"pw")
        .await
        .unwrap();
    assert_eq!(dump(&reopened, &f, "db.tar").await, tar_f);
}

/// GcOptions whose clock runs `hours` ahead of (or, negative, behind) the real one.
fn clock_offset(hours: i64) -> GcOptions {
    GcOptions {
        clock: Arc::new(move || chrono::Utc::now() + chrono::Duration::hours(hours)),
        ..GcOptions::default()
    }
}

/// Two processes find the same expired lease and both take it over. Takeover used to be
/// delete-then-create: the second taker's delete removed the first taker's fresh lease
/// and its create then succeeded, so both believed they held the lease and two gcs ran
/// at once. Each taker now replaces exactly the version it read: a gate holds both
/// takeover writes until both have read the expired lease, then lets them race; one
/// must win and the other must be told busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_takers_of_an_expired_lease_cannot_both_hold_it() {
    let (storage, repo, _dir) = setup().await;
    // A lease taken two hours ago and never renewed: expired 90 minutes ago.
    let dead = gc::acquire_lease(&repo, &clock_offset(-2)).await.unwrap();
    let faulty = FaultyStorage::new(Arc::new(storage.clone()));
    let gate = faulty.gate(2, |name, mode| {
        name == gc::LEASE_NAME && matches!(mode, PutMode::Update(_))
    });
    let racing = Repository::open(Arc::new(faulty), b"pw").await.unwrap();
    let takers: Vec<_> = (0..2)
        .map(|_| {
            let repo = racing.clone();
            tokio::spawn(async move { gc::acquire_lease(&repo, &GcOptions::default()).await })
        })
        .collect();
    tokio::time::timeout(std::time::Duration::from_secs(30), gate.wait_for(2))
        .await
        .expect("both takers reach their takeover write");
    gate.open();
    let mut held = Vec::new();
    for taker in takers {
        match taker.await.unwrap() {
            Ok(lease) => held.push(lease),
            Err(Error::Busy { .. }) => {}
            Err(e) => panic!("a taker failed otherwise: {e}"),
        }
    }
    assert_eq!(held.len(), 1, "both takers hold the lease");
    let stored = storage.get_versioned(gc::LEASE_NAME).await.unwrap();
    assert_eq!(stored.version, held[0].version);
    let lease = Lease::decode(repo.keys(), &stored.data, gc::LEASE_NAME).unwrap();
    assert_eq!(lease.token, held[0].lease.token);
    assert_ne!(lease.token, dead.lease.token);
}

/// A holder that stalled past its lease's expiry while another process took the lease
/// over can neither renew it nor, releasing, delete the new holder's lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_lease_was_taken_over_neither_renews_nor_releases_it() {
    let (storage, repo, _dir) = setup().await;
    let stalled_options = clock_offset(-2);
    let mut stalled = gc::acquire_lease(&repo, &stalled_options).await.unwrap();
    let successor = gc::acquire_lease(&repo, &GcOptions::default())
        .await
        .unwrap();
    assert!(matches!(
        gc::renew_lease(&repo, &mut stalled, &stalled_options).await,
        Err(Error::Busy { .. })
    ));
    gc::release_lease(&repo, &stalled).await;
    let stored = storage.get_versioned(gc::LEASE_NAME).await.unwrap();
    assert_eq!(stored.version, successor.version);
    // The successor renews and releases normally.
    let mut successor = successor;
    gc::renew_lease(&repo, &mut successor, &GcOptions::default())
        .await
        .unwrap();
    gc::release_lease(&repo, &successor).await;
    assert!(!storage.names().iter().any(|n| n == gc::LEASE_NAME));
}

/// A writer whose heartbeat stalled while gc removed its session marker as stale must
/// not bring the marker back. The heartbeat used to check that the marker existed and
/// then put it: a gc deleting the marker between the two saw it re-created, with
/// `seen_tombstones` that no longer held, by a writer that would then commit. The
/// heartbeat is now an update of the version the writer wrote last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_after_gc_removed_the_session_does_not_recreate_it() {
    let (storage, repo, _dir) = setup().await;
    let (session, _) = WriterSession::start(&repo, "backup").await.unwrap();
    session.beat().await.unwrap();
    session.check_alive().await.unwrap();
    // gc, its clock past the stale window, removes the marker.
    let (_, report) = gc::run(&repo, &clock_offset(2)).await.unwrap();
    assert_eq!(report.stale_sessions_removed, [session.name().to_owned()]);
    // The stalled heartbeat resumes.
    assert!(matches!(
        session.beat().await,
        Err(Error::SessionRemoved { .. })
    ));
    assert!(
        !storage.names().iter().any(|n| n == session.name()),
        "the heartbeat re-created the removed marker"
    );
    assert!(matches!(
        session.check_alive().await,
        Err(Error::SessionRemoved { .. })
    ));
    session.end().await;
}
