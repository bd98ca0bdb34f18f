//! Snapshot locators and cold backups (SPEC.md sections 14.1 and 15, S-7): what a
//! backup writes for the next one, and what gc, repair and key rotation do with it.

use dprepo_repo_format::backup::{backup, BackupOptions, BackupProgress, BackupSource};
use dprepo_repo_format::blob::BlobType;
use dprepo_repo_format::chunker::ChunkerParams;
use dprepo_repo_format::content::Content;
use dprepo_repo_format::locator::{self, Locator, LOCATORS_DIR};
use dprepo_repo_format::storage::{MemoryStorage, Storage};
use dprepo_repo_format::tree::NodeKind;
use dprepo_repo_format::{BlobId, InitOptions, Repository, Snapshot};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

#[path = "support/common.rs"]
mod common;
use common::{xorshift_bytes, FAST_KDF};

/// Chunks of about 256 bytes: a file of a few dozen KiB has more than 64 chunks and so
/// a chunk list (content level 1).
const TINY: ChunkerParams = ChunkerParams {
    min_size: 64,
    avg_size: 256,
    max_size: 1024,
};

async fn new_repo(storage: &MemoryStorage) -> Repository {
    Repository::init(
        Arc::new(storage.clone()),
        b"pw",
        InitOptions::default().with_kdf(FAST_KDF).with_chunker(TINY),
    )
    .await
    .unwrap()
}

async fn back_up(repo: &Repository, dir: &Path, options: BackupOptions) -> Snapshot {
    backup(
        repo,
        BackupSource::Paths(vec![dir.to_path_buf()]),
        options,
        Arc::new(BackupProgress::default()),
    )
    .await
    .unwrap()
    .snapshot
}

/// A tree of nested directories, small files, and one file with a chunk list.
fn make_tree(dir: &Path) {
    for d in 0..4 {
        let sub = dir.join(format!("d{d}")).join("inner");
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..5 {
            std::fs::write(
                sub.join(format!("f{f}")),
                xorshift_bytes(d * 10 + f, 500 + 37 * f as usize),
            )
            .unwrap();
        }
    }
    std::fs::write(dir.join("d0").join("large"), xorshift_bytes(99, 60_000)).unwrap();
}

/// Every Tree and ChunkList id reachable from `root`, by walking the trees.
async fn reachable_meta(repo: &Repository, root: BlobId) -> BTreeSet<BlobId> {
    let mut out = BTreeSet::new();
    let mut trees = vec![root];
    while let Some(id) = trees.pop() {
        if !out.insert(id) {
            continue;
        }
        for n in repo.load_tree(&id).await.unwrap().nodes {
            match n.kind {
                NodeKind::Dir(sub) => trees.push(sub),
                NodeKind::File(c) if c.level >= 1 => {
                    let mut lists: Vec<(u8, BlobId)> =
                        c.ids.iter().map(|i| (c.level - 1, *i)).collect();
                    while let Some((level, list)) = lists.pop() {
                        out.insert(list);
                        if level >= 1 {
                            let body = repo.read_blob(&list, BlobType::ChunkList).await.unwrap();
                            let inner = Content::decode_list(&body, level, "list").unwrap();
                            lists.extend(inner.ids.iter().map(|i| (level - 1, *i)));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    out
}

async fn read_locator(storage: &MemoryStorage, repo: &Repository, id: &BlobId) -> Locator {
    let bytes = storage
        .get(&dprepo_repo_format::layout::locator(id))
        .await
        .unwrap();
    Locator::decode(repo.keys(), &bytes, id).unwrap()
}

#[tokio::test]
async fn backup_writes_a_locator_listing_exactly_its_reachable_trees() {
    let storage = MemoryStorage::new();
    let repo = new_repo(&storage).await;
    let dir = tempfile::tempdir().unwrap();
    make_tree(dir.path());
    let a = back_up(&repo, dir.path(), BackupOptions::default()).await;
    // Change one small file and add a directory: B reuses most of A's trees.
    std::fs::write(dir.path().join("d1/inner/f2"), b"changed").unwrap();
    std::fs::create_dir(dir.path().join("new")).unwrap();
    std::fs::write(dir.path().join("new/x"), xorshift_bytes(7, 40_000)).unwrap();
    let b = back_up(&repo, dir.path(), BackupOptions::default()).await;
    for snap in [&a, &b] {
        let l = read_locator(&storage, &repo, &snap.id).await;
        assert_eq!(l.snapshot, snap.id);
        assert_eq!(l.tree, snap.manifest.tree);
        let listed: BTreeSet<BlobId> = l.ids().collect();
        assert_eq!(listed.len(), l.blob_count(), "an id listed twice");
        let expected = reachable_meta(&repo, snap.manifest.tree).await;
        assert!(
            expected.iter().any(|id| repo
                .locate(id)
                .is_some_and(|loc| loc.blob_type == BlobType::ChunkList)),
            "the test tree must reach a chunk list"
        );
        assert_eq!(listed, expected, "locator of {}", snap.id.short());
        // Every entry is the blob's indexed location.
        for p in &l.packs {
            for e in &p.entries {
                let loc = repo.locate(&e.id).unwrap();
                assert_eq!(
                    (
                        loc.pack_id,
                        loc.offset,
                        loc.stored_len,
                        loc.raw_len,
                        loc.blob_type
                    ),
                    (p.id, e.offset, e.stored_len, e.raw_len, e.blob_type)
                );
            }
        }
        let (found, notes) = locator::load_for(&repo, snap).await.unwrap();
        assert_eq!(found.as_ref(), Some(&l), "{notes:?}");
    }
    // No manifest without a locator, and no locator without a manifest.
    let snapshots: BTreeSet<BlobId> = repo
        .list_snapshots()
        .await
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    let locators: BTreeSet<BlobId> = locator::list(&storage).await.unwrap().into_iter().collect();
    assert_eq!(snapshots, locators);
    assert_eq!(
        storage.list_names(LOCATORS_DIR).await.unwrap().len(),
        2,
        "one locator per tree snapshot"
    );
}

#[tokio::test]
async fn stream_backups_write_no_locator() {
    let storage = MemoryStorage::new();
    let repo = new_repo(&storage).await;
    backup(
        &repo,
        BackupSource::Stream {
            name: "s".into(),
            reader: Box::new(std::io::Cursor::new(xorshift_bytes(3, 50_000))),
        },
        BackupOptions::default(),
        Arc::new(BackupProgress::default()),
    )
    .await
    .unwrap();
    assert!(storage.list_names(LOCATORS_DIR).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_locator_is_found_through_original_only_for_the_same_tree() {
    let storage = MemoryStorage::new();
    let repo = new_repo(&storage).await;
    let dir = tempfile::tempdir().unwrap();
    make_tree(dir.path());
    let a = back_up(&repo, dir.path(), BackupOptions::default()).await;
    // A re-sealed manifest (as `tag` writes) names A as its original and keeps the tree.
    let mut retagged = a.clone();
    retagged.id = BlobId([0xAB; 32]);
    retagged.manifest.original = Some(a.id);
    let (found, _) = locator::load_for(&repo, &retagged).await.unwrap();
    assert_eq!(found.map(|l| l.snapshot), Some(a.id));
    // A rewrite with another tree finds none.
    retagged.manifest.tree = BlobId([0xCD; 32]);
    let (found, notes) = locator::load_for(&repo, &retagged).await.unwrap();
    assert!(found.is_none());
    assert_eq!(notes.len(), 1, "{notes:?}");
}

/// Locators of snapshot ids that no manifest names (a backup killed between its locator
/// and its manifest) go once they are older than the stale-session window; young ones
/// may belong to a backup about to commit, and one reached through a re-sealed
/// manifest's `original` is in use.
#[tokio::test]
async fn gc_deletes_orphan_locators_only_after_the_stale_window() {
    use dprepo_repo_format::gc::{run, set_expiry, GcOptions};
    let storage = MemoryStorage::new();
    let repo = new_repo(&storage).await;
    let dir = tempfile::tempdir().unwrap();
    make_tree(dir.path());
    let a = back_up(&repo, dir.path(), BackupOptions::default()).await;
    // A re-sealed A (as `snapshot expire` or `tag` writes): new id, original = A.
    let resealed = set_expiry(
        &repo,
        &a,
        Some(chrono::Utc::now() + chrono::Duration::days(9)),
    )
    .await
    .unwrap();
    assert_ne!(resealed.id, a.id);
    assert_eq!(resealed.manifest.original, Some(a.id));
    let now = chrono::Utc::now();
    let orphan = |byte: u8, age: chrono::Duration| Locator {
        snapshot: BlobId([byte; 32]),
        tree: a.manifest.tree,
        created: (now - age).timestamp(),
        packs: Vec::new(),
    };
    let young = orphan(1, chrono::Duration::minutes(5));
    let old = orphan(2, chrono::Duration::hours(2));
    locator::write(&repo, &young).await.unwrap();
    locator::write(&repo, &old).await.unwrap();
    // A's own locator was created just now too, so make the clock late enough that A's
    // would be old were it an orphan: it stays for its original.
    let options = GcOptions {
        clock: Arc::new(move || now + chrono::Duration::minutes(20)),
        ..GcOptions::default()
    };
    let (_, report) = run(&repo, &options).await.unwrap();
    assert_eq!(report.locators_deleted, 1, "{report:?}");
    let left: BTreeSet<BlobId> = locator::list(&storage).await.unwrap().into_iter().collect();
    assert_eq!(left, BTreeSet::from([a.id, young.snapshot]));
    let later = GcOptions {
        clock: Arc::new(move || now + chrono::Duration::hours(3)),
        ..GcOptions::default()
    };
    let (_, report) = run(&repo, &later).await.unwrap();
    assert_eq!(report.locators_deleted, 1, "{report:?}");
    let left: Vec<BlobId> = locator::list(&storage).await.unwrap();
    assert_eq!(
        left,
        vec![a.id],
        "A's locator is reached through `original`"
    );
    let (found, _) = locator::load_for(&repo, &resealed).await.unwrap();
    assert_eq!(found.map(|l| l.snapshot), Some(a.id));
}

/// a repair that takes blobs out of the index deletes every locator, so no later
/// backup reuses a parent's content without looking it up.
#[tokio::test]
async fn repair_packs_deletes_locators() {
    use dprepo_repo_format::repair::{repair_packs, RepairPacksOptions};
    let storage = MemoryStorage::new();
    let repo = new_repo(&storage).await;
    let dir = tempfile::tempdir().unwrap();
    make_tree(dir.path());
    back_up(&repo, dir.path(), BackupOptions::default()).await;
    std::fs::write(dir.path().join("d2/inner/f1"), b"second").unwrap();
    back_up(&repo, dir.path(), BackupOptions::default()).await;
    assert_eq!(locator::list(&storage).await.unwrap().len(), 2);
    // Nothing damaged: nothing taken out of the index, the locators stay.
    let clean = repair_packs(&repo, &RepairPacksOptions::default(), Arc::default())
        .await
        .unwrap();
    assert_eq!(clean.locators_deleted, 0);
    assert_eq!(locator::list(&storage).await.unwrap().len(), 2);
    let pack = storage
        .names()
        .into_iter()
        .find(|n| n.starts_with("data/"))
        .unwrap();
    storage.corrupt_byte(&pack, 50);
    let report = repair_packs(&repo, &RepairPacksOptions::default(), Arc::default())
        .await
        .unwrap();
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    assert_eq!(report.locators_deleted, 2);
    assert!(locator::list(&storage).await.unwrap().is_empty());
}

#[tokio::test]
async fn repair_index_deletes_locators() {
    use dprepo_repo_format::repair::repair_index;
    let storage = MemoryStorage::new();
    let repo = new_repo(&storage).await;
    let dir = tempfile::tempdir().unwrap();
    make_tree(dir.path());
    back_up(&repo, dir.path(), BackupOptions::default()).await;
    let report = repair_index(&repo, Arc::default()).await.unwrap();
    assert_eq!(report.locators_deleted, 1);
    assert!(locator::list(&storage).await.unwrap().is_empty());
}

/// F7b: after `key rotate --finish` no locator of the old generation is left (its
/// locations named packs F3 renamed); one written under the new key stays.
#[tokio::test]
async fn key_rotate_finish_deletes_old_generation_locators() {
    use dprepo_repo_format::gc::GcOptions;
    use dprepo_repo_format::rotate::{finish, objects_not_under_newest, rotate};
    let storage = MemoryStorage::new();
    let repo = new_repo(&storage).await;
    let dir = tempfile::tempdir().unwrap();
    make_tree(dir.path());
    let a = back_up(&repo, dir.path(), BackupOptions::default()).await;
    rotate(&repo, b"pw", true, &GcOptions::default())
        .await
        .unwrap();
    let new = Repository::open(Arc::new(storage.clone()), b"pw")
        .await
        .unwrap();
    std::fs::write(dir.path().join("d3/inner/f0"), b"after rotate").unwrap();
    let b = back_up(&new, dir.path(), BackupOptions::default()).await;
    let report = finish(&new, &GcOptions::default()).await.unwrap();
    assert_eq!(report.locators_deleted, 1, "{report:?}");
    let left = locator::list(&storage).await.unwrap();
    assert_eq!(left, vec![b.id]);
    assert!(!left.contains(&a.id));
    let not_newest = objects_not_under_newest(&new).await.unwrap();
    assert!(
        !not_newest.iter().any(|n| n.starts_with(LOCATORS_DIR)),
        "{not_newest:?}"
    );
}

// ---- Cold backups (S-7) ----

use dprepo_repo_format::backup::{BackupOutcome, IndexMode};
use dprepo_repo_format::repo::{IndexLoad, IndexPlace};
use dprepo_repo_format::storage::{BlobInfo, BlobMeta, Bytes, PutMode, Version, Versioned};
use std::sync::Mutex;

/// Storage that logs every read and listing by name, to show what a backup fetched.
#[derive(Debug)]
struct Recorder {
    inner: Arc<dyn Storage>,
    log: Mutex<Vec<String>>,
}

impl Recorder {
    fn new(inner: Arc<dyn Storage>) -> Arc<Recorder> {
        Arc::new(Recorder {
            inner,
            log: Mutex::new(Vec::new()),
        })
    }
    fn note(&self, what: &str, name: &str) {
        self.log.lock().unwrap().push(format!("{what} {name}"));
    }
    fn touched(&self, prefix: &str) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.split(' ').nth(1).is_some_and(|n| n.starts_with(prefix)))
            .cloned()
            .collect()
    }
}

#[async_trait::async_trait]
impl Storage for Recorder {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn put_opts(
        &self,
        name: &str,
        data: Bytes,
        mode: PutMode,
    ) -> dprepo_repo_format::Result<Version> {
        self.inner.put_opts(name, data, mode).await
    }
    async fn get_versioned(&self, name: &str) -> dprepo_repo_format::Result<Versioned> {
        self.note("get", name);
        self.inner.get_versioned(name).await
    }
    async fn head(&self, name: &str) -> dprepo_repo_format::Result<BlobMeta> {
        self.note("head", name);
        self.inner.head(name).await
    }
    async fn get_range(
        &self,
        name: &str,
        offset: u64,
        len: u64,
    ) -> dprepo_repo_format::Result<Vec<u8>> {
        self.note("range", name);
        self.inner.get_range(name, offset, len).await
    }
    async fn list(&self, prefix: &str) -> dprepo_repo_format::Result<Vec<BlobInfo>> {
        self.note("list", prefix);
        self.inner.list(prefix).await
    }
    async fn delete(&self, name: &str) -> dprepo_repo_format::Result<()> {
        self.inner.delete(name).await
    }
}

/// A fresh process's handle: nothing loaded at open.
async fn open_deferred(storage: Arc<dyn Storage>) -> Repository {
    Repository::open_with_load(storage, b"pw", &IndexPlace::Memory, IndexLoad::Deferred)
        .await
        .unwrap()
}

async fn back_up_outcome(repo: &Repository, dir: &Path, mode: IndexMode) -> BackupOutcome {
    backup(
        repo,
        BackupSource::Paths(vec![dir.to_path_buf()]),
        BackupOptions::default().with_index_mode(mode),
        Arc::new(BackupProgress::default()),
    )
    .await
    .unwrap()
}

/// A byte-for-byte copy of `storage`, for a second history from the same point.
async fn copy_of(storage: &MemoryStorage) -> MemoryStorage {
    let copy = MemoryStorage::new();
    for name in storage.names() {
        copy.raw_put(name.clone(), storage.get(&name).await.unwrap());
    }
    copy
}

/// Change about 2% of the tree: two small files rewritten, and a few hundred bytes in
/// the middle of the large file (whose other chunks stay the parent's).
fn change_a_little(dir: &Path, seed: u64) {
    std::fs::write(dir.join("d1/inner/f3"), xorshift_bytes(1000 + seed, 700)).unwrap();
    std::fs::write(dir.join("d2/inner/f0"), xorshift_bytes(2000 + seed, 900)).unwrap();
    let large = dir.join("d0/large");
    let mut bytes = std::fs::read(&large).unwrap();
    bytes[30_000..30_300].copy_from_slice(&xorshift_bytes(3000 + seed, 300));
    std::fs::write(&large, bytes).unwrap();
}

/// Restore `dir` from `snap` and compare every file below it, recursively.
async fn assert_same_tree(repo: &Repository, snap: &Snapshot, dir: &Path) {
    let target = common::restore_to_tempdir(repo, snap, dir).await;
    fn files(root: &Path, at: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(at).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                files(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    let (mut want, mut got) = (Vec::new(), Vec::new());
    files(dir, dir, &mut want);
    files(target.path(), target.path(), &mut got);
    want.sort();
    got.sort();
    assert_eq!(want.len(), got.len(), "file count of {}", snap.id.short());
    assert!(
        want == got,
        "snapshot {} restores other bytes",
        snap.id.short()
    );
}

async fn assert_verifies(storage: Arc<dyn Storage>) {
    let repo = Repository::open(storage, b"pw").await.unwrap();
    let report = dprepo_repo_format::verify::verify(
        &repo,
        Some(dprepo_repo_format::verify::DataSubset::All),
        Arc::default(),
    )
    .await
    .unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[tokio::test]
async fn cold_backup_reads_no_index_file_and_stores_only_the_change() {
    let storage = MemoryStorage::new();
    let repo = new_repo(&storage).await;
    let dir = tempfile::tempdir().unwrap();
    make_tree(dir.path());
    back_up(&repo, dir.path(), BackupOptions::default()).await;
    change_a_little(dir.path(), 1);
    // The same change backed up with the index, into a copy of the repository.
    let copy = copy_of(&storage).await;
    let warm = Repository::open(Arc::new(copy.clone()), b"pw")
        .await
        .unwrap();
    let full = back_up_outcome(&warm, dir.path(), IndexMode::Full).await;
    assert_eq!(full.index_mode, "full");

    let recorder = Recorder::new(Arc::new(storage.clone()));
    let cold_repo = open_deferred(recorder.clone()).await;
    let cold = back_up_outcome(&cold_repo, dir.path(), IndexMode::Auto).await;
    assert_eq!(cold.index_mode, "cold", "{:?}", cold.notes);
    assert_eq!(recorder.touched("index/"), Vec::<String>::new());
    assert!(cold.warnings.is_empty(), "{:?}", cold.warnings);
    assert_eq!(
        cold.snapshot.manifest.summary.blobs_added, full.snapshot.manifest.summary.blobs_added,
        "a cold backup stores what a backup with the index stores"
    );
    assert!(cold.snapshot.manifest.summary.files_unmodified > 0);
    assert!(cold.first_pack_at.is_some());
    // It wrote its own locator, so the next backup of the chain is cold too.
    let next_repo = open_deferred(Arc::new(storage.clone())).await;
    change_a_little(dir.path(), 2);
    let next = back_up_outcome(&next_repo, dir.path(), IndexMode::Auto).await;
    assert_eq!(next.index_mode, "cold", "{:?}", next.notes);
    let repo = Repository::open(Arc::new(storage.clone()), b"pw")
        .await
        .unwrap();
    assert_same_tree(&repo, &next.snapshot, dir.path()).await;
    for snap in [&cold.snapshot, &next.snapshot] {
        let l = read_locator(&storage, &repo, &snap.id).await;
        let listed: BTreeSet<BlobId> = l.ids().collect();
        assert_eq!(listed, reachable_meta(&repo, snap.manifest.tree).await);
    }
    assert_verifies(Arc::new(storage.clone())).await;
}

#[tokio::test]
async fn cold_backup_falls_back_when_a_tombstone_is_pending() {
    use dprepo_repo_format::manifest::{Tombstone, TombstonePack};
    use dprepo_repo_format::pack::PackKind;
    let storage = MemoryStorage::new();
    let repo = new_repo(&storage).await;
    let dir = tempfile::tempdir().unwrap();
    make_tree(dir.path());
    back_up(&repo, dir.path(), BackupOptions::default()).await;
    // A tombstone naming a pack that is not the parent's: S-7 (c) still fails.
    let tombstone = Tombstone {
        created: chrono::Utc::now(),
        packs: vec![TombstonePack {
            id: BlobId([0x55; 32]),
            kind: PackKind::Data,
        }],
    }
    .encode(repo.keys());
    storage.raw_put(
        format!("gc/{}", BlobId::of_stored(&tombstone).to_hex()),
        tombstone,
    );
    change_a_little(dir.path(), 1);
    let recorder = Recorder::new(Arc::new(storage.clone()));
    let cold_repo = open_deferred(recorder.clone()).await;
    let b = back_up_outcome(&cold_repo, dir.path(), IndexMode::Auto).await;
    assert_eq!(b.index_mode, "full");
    assert!(!recorder.touched("index/").is_empty());
    assert_same_tree(&cold_repo, &b.snapshot, dir.path()).await;
}

#[tokio::test]
async fn cold_backup_takes_the_full_path_without_a_locator() {
    let storage = MemoryStorage::new();
    let repo = new_repo(&storage).await;
    let dir = tempfile::tempdir().unwrap();
    make_tree(dir.path());
    let a = back_up(&repo, dir.path(), BackupOptions::default()).await;
    // As for a parent written by an older build.
    storage
        .delete(&dprepo_repo_format::layout::locator(&a.id))
        .await
        .unwrap();
    change_a_little(dir.path(), 1);
    let b = back_up_outcome(
        &open_deferred(Arc::new(storage.clone())).await,
        dir.path(),
        IndexMode::Auto,
    )
    .await;
    assert_eq!(b.index_mode, "full");
    assert!(
        b.notes.iter().any(|n| n.contains("no locator")),
        "{:?}",
        b.notes
    );
    // B wrote one: the next backup is cold.
    change_a_little(dir.path(), 2);
    let c = back_up_outcome(
        &open_deferred(Arc::new(storage.clone())).await,
        dir.path(),
        IndexMode::Auto,
    )
    .await;
    assert_eq!(c.index_mode, "cold", "{:?}", c.notes);
    // A handle that loaded the index (every command but backup) is never cold.
    let eager = Repository::open(Arc::new(storage.clone()), b"pw")
        .await
        .unwrap();
    change_a_little(dir.path(), 3);
    let d = back_up_outcome(&eager, dir.path(), IndexMode::Auto).await;
    assert_eq!(d.index_mode, "full");
    assert_verifies(Arc::new(storage.clone())).await;
}

/// The failure this guards against: a cold backup trusting a parent's locator whose
/// locations name packs that are gone (here `key rotate --finish` copied the parent's
/// meta packs under the new key and deleted the originals; gc repacking meta packs does
/// the same). Reading the parent's trees there fails with NotFound; the backup must
/// load the index and go on, never skip or lose a file.
#[tokio::test]
async fn cold_backup_after_gc_moved_the_parents_trees_loses_nothing() {
    use dprepo_repo_format::gc::GcOptions;
    use dprepo_repo_format::rotate::{finish, rotate};
    let storage = MemoryStorage::new();
    let repo = new_repo(&storage).await;
    let dir = tempfile::tempdir().unwrap();
    make_tree(dir.path());
    back_up(&repo, dir.path(), BackupOptions::default()).await;
    rotate(&repo, b"pw", true, &GcOptions::default())
        .await
        .unwrap();
    // A under the new key: its trees are A0's, so its locator names old-generation packs.
    let new = Repository::open(Arc::new(storage.clone()), b"pw")
        .await
        .unwrap();
    let a = back_up(&new, dir.path(), BackupOptions::default()).await;
    finish(&new, &GcOptions::default()).await.unwrap();
    let l = read_locator(&storage, &new, &a.id).await;
    let names = storage.names();
    assert!(
        l.packs
            .iter()
            .any(|p| !names.iter().any(|n| n.ends_with(&p.id.to_hex()))),
        "the locator must name a deleted pack for this test"
    );
    change_a_little(dir.path(), 1);
    let b = back_up_outcome(
        &open_deferred(Arc::new(storage.clone())).await,
        dir.path(),
        IndexMode::Auto,
    )
    .await;
    assert_eq!(b.index_mode, "cold, then full", "{:?}", b.notes);
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    let repo = Repository::open(Arc::new(storage.clone()), b"pw")
        .await
        .unwrap();
    assert_same_tree(&repo, &b.snapshot, dir.path()).await;
    let listed: BTreeSet<BlobId> = read_locator(&storage, &repo, &b.snapshot.id)
        .await
        .ids()
        .collect();
    assert_eq!(
        listed,
        reachable_meta(&repo, b.snapshot.manifest.tree).await
    );
    assert_verifies(Arc::new(storage.clone())).await;
}

#[tokio::test]
async fn repair_packs_deletes_locators_and_the_next_backup_stores_damaged_content_again() {
    use dprepo_repo_format::repair::{repair_packs, RepairPacksOptions};
    let storage = MemoryStorage::new();
    let repo = new_repo(&storage).await;
    let dir = tempfile::tempdir().unwrap();
    make_tree(dir.path());
    back_up(&repo, dir.path(), BackupOptions::default()).await;
    let pack = storage
        .names()
        .into_iter()
        .find(|n| n.starts_with("data/"))
        .unwrap();
    storage.corrupt_byte(&pack, 50);
    let report = repair_packs(&repo, &RepairPacksOptions::default(), Arc::default())
        .await
        .unwrap();
    assert_eq!(report.damaged.len(), 1);
    assert!(locator::list(&storage).await.unwrap().is_empty());
    // Nothing changed in the tree, but the parent lost a chunk: with no locator the
    // backup looks the parent's content up, and stores the damaged file again.
    let b = back_up_outcome(
        &open_deferred(Arc::new(storage.clone())).await,
        dir.path(),
        IndexMode::Auto,
    )
    .await;
    assert_eq!(b.index_mode, "full");
    assert!(b.snapshot.manifest.summary.blobs_added > 0);
    let repo = Repository::open(Arc::new(storage.clone()), b"pw")
        .await
        .unwrap();
    assert_same_tree(&repo, &b.snapshot, dir.path()).await;
}
