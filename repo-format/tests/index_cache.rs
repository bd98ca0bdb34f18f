//! The persistent index cache: what a second open reads, what happens when gc rewrites
//! the index files behind it, when another process holds it, and when it is damaged.

use dprepo_repo_format::gc::{self, GcOptions};
use dprepo_repo_format::repo::IndexPlace;
use dprepo_repo_format::storage::{CountingStorage, MemoryStorage, Storage};
use dprepo_repo_format::{InitOptions, Repository};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

#[path = "support/common.rs"]
mod common;
use common::{assert_restores, run_backup, xorshift_bytes, FAST_KDF};

async fn init(storage: &MemoryStorage) {
    Repository::init(
        Arc::new(storage.clone()),
        b"pw",
        InitOptions::default()
            .with_kdf(FAST_KDF)
            .with_chunker(dprepo_repo_format::chunker::ChunkerParams::SMALL),
    )
    .await
    .unwrap();
}

async fn open(storage: Arc<dyn Storage>, cache: &Path) -> Repository {
    Repository::open_with(storage, b"pw", &IndexPlace::Cache(cache.to_path_buf()))
        .await
        .unwrap()
}

/// Everything the index says, as a sorted map (for comparing two indexes).
fn index_contents(repo: &Repository) -> BTreeMap<String, String> {
    repo.index()
        .read()
        .unwrap()
        .blobs()
        .map(|(id, loc)| (id.to_hex(), format!("{loc:?}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_reads_no_index_file_and_sees_the_same_index() {
    let storage = MemoryStorage::new();
    init(&storage).await;
    let cache = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("a"), xorshift_bytes(1, 3_000_000)).unwrap();
    let repo = open(Arc::new(storage.clone()), cache.path()).await;
    let snap = run_backup(&repo, data.path()).await;
    let written = index_contents(&repo);
    assert!(written.len() > 50, "a few hundred chunks expected");
    let blobs = repo.index().read().unwrap().blob_count();
    assert_eq!(blobs, written.len(), "count kept while adding");
    drop(repo);

    let counting = Arc::new(CountingStorage::new(Arc::new(storage.clone())));
    let again = open(counting.clone(), cache.path()).await;
    let gets_of_index_files = counting.stats().counts().get;
    // config and one key file; no index file.
    assert_eq!(gets_of_index_files, 2, "index files were read again");
    assert_eq!(index_contents(&again), written);
    assert_eq!(again.index().read().unwrap().blob_count(), blobs);

    // The in-memory index built from storage agrees with the cache.
    let memory = Repository::open(Arc::new(storage.clone()), b"pw")
        .await
        .unwrap();
    assert_eq!(index_contents(&memory), written);
    assert_restores(&again, &snap, data.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_left_behind_by_gc_rewriting_the_index_is_rebuilt() {
    let storage = MemoryStorage::new();
    init(&storage).await;
    let cache = tempfile::tempdir().unwrap();
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::write(one.path().join("a"), xorshift_bytes(10, 2_000_000)).unwrap();
    std::fs::write(two.path().join("b"), xorshift_bytes(20, 2_000_000)).unwrap();
    let repo = open(Arc::new(storage.clone()), cache.path()).await;
    let first = run_backup(&repo, one.path()).await;
    let second = run_backup(&repo, two.path()).await;
    drop(repo);

    // Another machine (its own cache) forgets the first snapshot and collects garbage:
    // packs are deleted and the index files rewritten.
    let other_cache = tempfile::tempdir().unwrap();
    let other = open(Arc::new(storage.clone()), other_cache.path()).await;
    gc::forget_snapshots(&other, &[first.id]).await.unwrap();
    // The first run tombstones the garbage, the second deletes it.
    let mut deleted = 0;
    for _ in 0..2 {
        let (_, report) = gc::run(&other, &GcOptions::default()).await.unwrap();
        deleted += report.packs_deleted;
    }
    assert!(deleted > 0, "gc deleted nothing");
    drop(other);

    let repo = open(Arc::new(storage.clone()), cache.path()).await;
    let memory = Repository::open(Arc::new(storage.clone()), b"pw")
        .await
        .unwrap();
    assert_eq!(
        index_contents(&repo),
        index_contents(&memory),
        "the stale cache still lists deleted packs"
    );
    assert_restores(&repo, &second, two.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_in_use_elsewhere_gives_a_private_one() {
    let storage = MemoryStorage::new();
    init(&storage).await;
    let cache = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("a"), xorshift_bytes(4, 1_000_000)).unwrap();
    let holder = open(Arc::new(storage.clone()), cache.path()).await;
    let snap = run_backup(&holder, data.path()).await;
    let second = open(Arc::new(storage.clone()), cache.path()).await;
    let private = second
        .index()
        .read()
        .unwrap()
        .cache()
        .map(|c| (c.is_temporary(), c.path().to_path_buf()))
        .unwrap();
    assert!(private.0, "the second open shared a locked database");
    assert!(private.1.exists());
    assert_eq!(index_contents(&second), index_contents(&holder));
    assert_restores(&second, &snap, data.path()).await;
    drop(second);
    assert!(!private.1.exists(), "the private index was left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_of_another_repository_or_a_damaged_one_is_rebuilt() {
    let (a, b) = (MemoryStorage::new(), MemoryStorage::new());
    init(&a).await;
    init(&b).await;
    let cache = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("a"), xorshift_bytes(5, 1_000_000)).unwrap();
    let repo_a = open(Arc::new(a.clone()), cache.path()).await;
    run_backup(&repo_a, data.path()).await;
    drop(repo_a);
    // Same cache directory, other repository: its own database, nothing shared.
    let repo_b = open(Arc::new(b.clone()), cache.path()).await;
    assert_eq!(repo_b.index().read().unwrap().blob_count(), 0);
    drop(repo_b);

    // Damage the database files of repository a: open must still succeed and the
    // index must match storage again.
    let mut damaged = 0;
    for entry in walk(cache.path()) {
        let name = entry.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with(".sst") || name.starts_with("MANIFEST") {
            let mut bytes = std::fs::read(&entry).unwrap();
            for b in bytes.iter_mut().skip(16).step_by(97) {
                *b ^= 0x5a;
            }
            std::fs::write(&entry, bytes).unwrap();
            damaged += 1;
        }
    }
    assert!(damaged > 0, "no database files found to damage");
    // The first open after the damage gets it right: the damaged database is made
    // again, and the user is told.
    let repo_a = open(Arc::new(a.clone()), cache.path()).await;
    let memory = Repository::open(Arc::new(a.clone()), b"pw").await.unwrap();
    assert_eq!(index_contents(&repo_a), index_contents(&memory));
    let notes = repo_a.take_index_notes();
    assert!(
        notes.len() == 1 && notes[0].contains("damaged"),
        "{notes:?}"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A repository holding two copies of its blobs: the first backup's packs, named by a
/// gc tombstone an older writer keeps pending, and the copies a later backup stored
/// again (SPEC.md section 15, S-3). Every way a writer that saw the tombstone can hold
/// its index (in memory, in a cache filled file by file, in a cache rebuilt from
/// scratch), and either order of the index files, keeps the same copy of every blob:
/// the one outside the tombstoned packs (`index/copies.rs`). Verify finds both copies
/// intact, and once the older writer is gone gc deletes the tombstoned packs and the
/// kept copies restore the snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_index_path_keeps_the_same_copy_of_duplicated_blobs() {
    use dprepo_repo_format::index::cache::IndexCache;
    use dprepo_repo_format::index::{Index, IndexFile};
    use dprepo_repo_format::session::{load_tombstones, WriterSession};
    use dprepo_repo_format::BlobId;
    use std::collections::{HashMap, HashSet};

    let storage = MemoryStorage::new();
    init(&storage).await;
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("a"), xorshift_bytes(7, 1_500_000)).unwrap();
    let repo = Repository::open(Arc::new(storage.clone()), b"pw")
        .await
        .unwrap();
    let first = run_backup(&repo, data.path()).await;
    gc::forget_snapshots(&repo, &[first.id]).await.unwrap();
    let (older, _) = WriterSession::start(&repo, "backup").await.unwrap();
    let (_, report) = gc::run(&repo, &GcOptions::default()).await.unwrap();
    assert_eq!(report.tombstones_blocked.len(), 1);
    let writer = Repository::open(Arc::new(storage.clone()), b"pw")
        .await
        .unwrap();
    let second = run_backup(&writer, data.path()).await;
    assert!(second.manifest.summary.bytes_added >= 1_500_000);

    let excluded: HashSet<BlobId> = load_tombstones(&repo)
        .await
        .unwrap()
        .iter()
        .flat_map(|(_, t)| t.packs.iter().map(|p| p.id))
        .collect();
    assert!(!excluded.is_empty());
    let mut files: Vec<(String, IndexFile)> = Vec::new();
    for info in storage
        .list(dprepo_repo_format::layout::INDEX_DIR)
        .await
        .unwrap()
    {
        let bytes = storage.get(&info.name).await.unwrap();
        files.push((
            info.name.clone(),
            IndexFile::decode(repo.keys(), &bytes, &info.name).unwrap(),
        ));
    }
    // Blobs with a copy outside the tombstoned packs, and with one inside.
    let mut outside: HashSet<BlobId> = HashSet::new();
    let mut inside: HashSet<BlobId> = HashSet::new();
    for (_, f) in &files {
        for p in &f.packs {
            let set = if excluded.contains(&p.id) {
                &mut inside
            } else {
                &mut outside
            };
            set.extend(p.entries.iter().map(|e| e.id));
        }
    }
    assert!(
        outside.intersection(&inside).count() > 50,
        "the repository holds duplicate copies"
    );

    let caches = tempfile::tempdir().unwrap();
    let mut kept: Vec<(String, HashMap<BlobId, BlobId>)> = Vec::new();
    for reversed in [false, true] {
        let mut order: Vec<&(String, IndexFile)> = files.iter().collect();
        if reversed {
            order.reverse();
        }
        for path in ["memory", "added", "rebuilt"] {
            let mut index = match path {
                "memory" => Index::new(),
                _ => Index::on_disk(
                    IndexCache::open(&caches.path().join(format!("{path}-{reversed}")), "r")
                        .unwrap(),
                ),
            };
            index.exclude_packs(&excluded);
            if path == "rebuilt" {
                index.begin_rebuild().unwrap();
            }
            for (name, file) in &order {
                index.add_named_file(Some(name), file).unwrap();
            }
            if path == "rebuilt" {
                index.finish_rebuild().unwrap();
            }
            let copies: HashMap<BlobId, BlobId> = outside
                .union(&inside)
                .map(|id| (*id, index.get(id).unwrap().pack_id))
                .collect();
            for id in &outside {
                assert!(
                    !excluded.contains(&copies[id]),
                    "{path}, reversed {reversed}: blob {id:?} kept in a tombstoned pack"
                );
                assert!(index.usable(id), "{path}, reversed {reversed}: {id:?}");
            }
            kept.push((format!("{path}, reversed {reversed}"), copies));
        }
    }
    for (what, copies) in &kept[1..] {
        assert!(
            copies == &kept[0].1,
            "{what} keeps other copies than {}",
            kept[0].0
        );
    }

    let report = dprepo_repo_format::verify::verify(&repo, None, Arc::new(Default::default()))
        .await
        .unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    older.end().await;
    let (_, report) = gc::run(&repo, &GcOptions::default()).await.unwrap();
    assert_eq!(report.tombstones_processed, 1);
    let names = storage.names();
    for id in &excluded {
        assert!(
            names.iter().all(|n| !n.ends_with(&id.to_hex())),
            "tombstoned pack {id:?} still stored"
        );
    }
    let fresh = Repository::open(Arc::new(storage.clone()), b"pw")
        .await
        .unwrap();
    assert_restores(&fresh, &second, data.path()).await;
}
