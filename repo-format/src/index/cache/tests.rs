//! Unit tests of the index cache.

use super::*;
use crate::index::IndexPack;

fn id(n: u64) -> BlobId {
    BlobId(*blake3::hash(&n.to_le_bytes()).as_bytes())
}

fn pack(pack: u64, blobs: impl IntoIterator<Item = u64>) -> IndexPack {
    IndexPack {
        id: id(1 << 40 | pack),
        kind: PackKind::Data,
        entries: blobs
            .into_iter()
            .enumerate()
            .map(|(i, b)| PackEntry {
                blob_type: BlobType::Data,
                id: id(b),
                offset: i as u32 * 100,
                stored_len: 100,
                raw_len: 90,
                base: None,
            })
            .collect(),
    }
}

/// Three index files: blobs 0..300 in packs 0-2, blobs 100..200 again in pack 3
/// (excluded) and pack 4, blobs 300..310 only in the excluded pack 5.
fn files() -> Vec<IndexFile> {
    let file = |packs| IndexFile {
        obsoletes: Vec::new(),
        packs,
    };
    vec![
        file(vec![pack(3, 100..200), pack(0, 0..100)]),
        file(vec![pack(1, 100..200), pack(2, 200..300)]),
        file(vec![pack(5, 300..310), pack(4, 100..200)]),
    ]
}

fn check(cache: &IndexCache, excluded: &HashSet<BlobId>) {
    assert_eq!(cache.blob_count(), 310);
    assert_eq!(cache.pack_count(), 6);
    for b in 0..310 {
        let loc = cache.get(&id(b)).expect("every blob is indexed");
        // A blob with a copy outside the excluded pack is found there.
        assert_eq!(excluded.contains(&loc.pack_id), b >= 300, "blob {b}");
    }
    assert_eq!(cache.blobs().count(), 310);
    assert_eq!(cache.absorbed_files().unwrap().len(), 3);
}

#[test]
fn a_rebuild_indexes_the_same_blobs_as_adding_files_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let excluded: HashSet<BlobId> = [id(1 << 40 | 3), id(1 << 40 | 5)].into();
    let mut one_by_one = IndexCache::open(&dir.path().join("a"), "repo").unwrap();
    let mut rebuilt = IndexCache::open(&dir.path().join("b"), "repo").unwrap();
    rebuilt.begin_rebuild().unwrap();
    for (n, f) in files().iter().enumerate() {
        let name = format!("index/{n}");
        one_by_one.add_file(Some(&name), f, &excluded).unwrap();
        rebuilt.add_file(Some(&name), f, &excluded).unwrap();
    }
    assert!(rebuilt.is_building());
    rebuilt.finish_rebuild().unwrap();
    check(&one_by_one, &excluded);
    check(&rebuilt, &excluded);
    // The counts are kept for the next process.
    drop(rebuilt);
    let reopened = IndexCache::open(&dir.path().join("b"), "repo").unwrap();
    check(&reopened, &excluded);
}

/// Batched reads answer exactly as one read per blob, for known and unknown ids in
/// any order, duplicates included.
#[test]
fn batched_reads_answer_as_single_reads() {
    let dir = tempfile::tempdir().unwrap();
    let mut cache = IndexCache::open(dir.path(), "repo").unwrap();
    let excluded: HashSet<BlobId> = [id(1 << 40 | 3)].into();
    for f in files() {
        cache.add_file(None, &f, &excluded).unwrap();
    }
    let ids: Vec<BlobId> = (0..400).rev().chain([5, 5, 399]).map(id).collect();
    let single: Vec<_> = ids.iter().map(|i| cache.get(i)).collect();
    assert_eq!(cache.get_many(&ids), single);
    assert_eq!(single.iter().filter(|l| l.is_some()).count(), 312);
    let single: Vec<_> = ids.iter().map(|i| cache.type_and_base(i)).collect();
    assert_eq!(cache.type_and_base_many(&ids), single);
    assert!(cache.get_many(&[]).is_empty());
}

/// Pack numbers start again from 0 after a clear: a blob located before must not be
/// found in the pack that had its pack's number.
#[test]
fn packs_remembered_by_number_do_not_survive_a_clear() {
    let dir = tempfile::tempdir().unwrap();
    let mut cache = IndexCache::open(dir.path(), "repo").unwrap();
    let none = HashSet::new();
    let file = |packs| IndexFile {
        obsoletes: Vec::new(),
        packs,
    };
    cache
        .add_file(None, &file(vec![pack(7, 0..10)]), &none)
        .unwrap();
    assert_eq!(cache.get(&id(3)).unwrap().pack_id, id(1 << 40 | 7));
    cache.clear().unwrap();
    cache
        .add_file(None, &file(vec![pack(8, 0..10)]), &none)
        .unwrap();
    assert_eq!(cache.get(&id(3)).unwrap().pack_id, id(1 << 40 | 8));
    // The same across a rebuild, whose writes skip the reads of add_file.
    cache.begin_rebuild().unwrap();
    cache
        .add_file(None, &file(vec![pack(9, 0..10)]), &none)
        .unwrap();
    cache.finish_rebuild().unwrap();
    assert_eq!(cache.get(&id(3)).unwrap().pack_id, id(1 << 40 | 9));
}

/// A gc or backup that clears the shared cache keeps it, while other processes
/// opening it at the same moment get private ones. A gc in the gc_race test once
/// failed here: its clear closed the database, another process took the lock, and
/// the reopen failed.
#[test]
fn clearing_the_shared_cache_keeps_it_while_others_try_to_open_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut owner = IndexCache::open(dir.path(), "repo").unwrap();
    assert!(!owner.is_temporary());
    let clearing = AtomicBool::new(true);
    std::thread::scope(|scope| {
        let contender = scope.spawn(|| {
            let mut shared = 0;
            while clearing.load(Ordering::Relaxed) {
                let other = IndexCache::open(dir.path(), "repo").unwrap();
                shared += usize::from(!other.is_temporary());
            }
            shared
        });
        // Every round runs even when one fails, so the contender is always stopped.
        let rounds: Vec<Result<u64>> = (0..200)
            .map(|round| {
                owner.add_file(Some("index/0"), &files()[0], &HashSet::new())?;
                if round % 2 == 0 {
                    owner.clear()?;
                } else {
                    owner.begin_rebuild()?;
                    owner.finish_rebuild()?;
                }
                Ok(owner.blob_count())
            })
            .collect();
        clearing.store(false, Ordering::Relaxed);
        let shared_opens = contender.join().unwrap();
        for (round, result) in rounds.into_iter().enumerate() {
            assert_eq!(result.unwrap(), 0, "round {round}");
        }
        assert_eq!(shared_opens, 0, "another opener got the shared cache");
    });
    assert!(owner.get(&id(0)).is_none());
    assert!(owner.absorbed_files().unwrap().is_empty());
    assert!(!owner.is_temporary());
}

/// A delta entry may outlive its base (gc collects both as garbage but keeps the
/// delta's pack); a full copy of the same blob, stored again later, must be what
/// the index finds, whatever the order the files come in, added one by one, in a
/// rebuild, or in memory.
#[test]
fn a_full_copy_wins_over_a_delta_in_any_order() {
    let delta = IndexFile {
        obsoletes: Vec::new(),
        packs: vec![IndexPack {
            id: id(1 << 40 | 7),
            kind: PackKind::Data,
            entries: vec![PackEntry {
                blob_type: BlobType::Data,
                id: id(5),
                offset: 0,
                stored_len: 60,
                raw_len: 90,
                base: Some(id(999)),
            }],
        }],
    };
    let full = IndexFile {
        obsoletes: Vec::new(),
        packs: vec![pack(8, [4, 5, 6])],
    };
    let none = HashSet::new();
    for order in [[&delta, &full], [&full, &delta]] {
        let dir = tempfile::tempdir().unwrap();
        let mut added = IndexCache::open(&dir.path().join("a"), "repo").unwrap();
        let mut rebuilt = IndexCache::open(&dir.path().join("b"), "repo").unwrap();
        let mut memory = crate::index::Index::new();
        rebuilt.begin_rebuild().unwrap();
        for (n, f) in order.iter().enumerate() {
            let name = format!("index/{n}");
            added.add_file(Some(&name), f, &none).unwrap();
            rebuilt.add_file(Some(&name), f, &none).unwrap();
            memory.add_file(f).unwrap();
        }
        rebuilt.finish_rebuild().unwrap();
        let full_pack = id(1 << 40 | 8);
        for (what, found) in [
            ("added", added.get(&id(5))),
            ("rebuilt", rebuilt.get(&id(5))),
            ("memory", memory.get(&id(5))),
        ] {
            let found = found.unwrap();
            assert_eq!((found.pack_id, found.base), (full_pack, None), "{what}");
        }
    }
    // Alone, the delta is found with its base.
    let dir = tempfile::tempdir().unwrap();
    let mut only = IndexCache::open(dir.path(), "repo").unwrap();
    only.add_file(None, &delta, &none).unwrap();
    assert_eq!(only.get(&id(5)).unwrap().base, Some(id(999)));
}

#[test]
fn a_rebuild_cut_short_is_discarded_by_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut cache = IndexCache::open(dir.path(), "repo").unwrap();
    cache.begin_rebuild().unwrap();
    cache
        .add_file(Some("index/0"), &files()[0], &HashSet::new())
        .unwrap();
    drop(cache);
    let reopened = IndexCache::open(dir.path(), "repo").unwrap();
    assert_eq!(reopened.blob_count(), 0);
    assert!(reopened.absorbed_files().unwrap().is_empty());
    assert!(reopened.get(&id(0)).is_none());
}

/// What broke: with a delta copy of a blob in a usable pack and a full copy in a pack a
/// gc tombstone names (excluded), the copy the index kept depended on the order the
/// index files came in and on the path: in memory and when adding files the later copy
/// won (the full copy replaced the delta, the delta replaced the excluded copy), while a
/// rebuild kept the earlier one. A writer's `usable` answer for the blob then changed
/// with the listing order. The rule (`index::copies`) ranks full copies before deltas
/// first and copies outside excluded packs next, so every path keeps the same copy: the
/// full one, which a later reader of the shared cache can always decode (the delta's
/// base may have been collected); the writer stores the blob again.
#[test]
fn an_excluded_full_copy_and_a_usable_delta_resolve_the_same_in_every_order_and_path() {
    let delta = IndexFile {
        obsoletes: Vec::new(),
        packs: vec![IndexPack {
            id: id(1 << 40 | 7),
            kind: PackKind::Data,
            entries: vec![PackEntry {
                blob_type: BlobType::Data,
                id: id(5),
                offset: 0,
                stored_len: 60,
                raw_len: 90,
                base: Some(id(4)),
            }],
        }],
    };
    // Blob 4 (the base) also has a full copy in a usable pack.
    let base = IndexFile {
        obsoletes: Vec::new(),
        packs: vec![pack(9, [4])],
    };
    let full = IndexFile {
        obsoletes: Vec::new(),
        packs: vec![pack(8, [5, 6])],
    };
    let excluded: HashSet<BlobId> = [id(1 << 40 | 8)].into();
    for order in [[&base, &delta, &full], [&base, &full, &delta]] {
        let dir = tempfile::tempdir().unwrap();
        let mut added = IndexCache::open(&dir.path().join("a"), "repo").unwrap();
        let mut rebuilt = IndexCache::open(&dir.path().join("b"), "repo").unwrap();
        let mut memory = crate::index::Index::new();
        memory.exclude_packs(&excluded);
        rebuilt.begin_rebuild().unwrap();
        for (n, f) in order.iter().enumerate() {
            let name = format!("index/{n}");
            added.add_file(Some(&name), f, &excluded).unwrap();
            rebuilt.add_file(Some(&name), f, &excluded).unwrap();
            memory.add_file(f).unwrap();
        }
        rebuilt.finish_rebuild().unwrap();
        for (what, found) in [
            ("added", added.get(&id(5))),
            ("rebuilt", rebuilt.get(&id(5))),
            ("memory", memory.get(&id(5))),
        ] {
            let found = found.unwrap();
            assert_eq!(
                (found.pack_id, found.base),
                (id(1 << 40 | 8), None),
                "{what}, order with the full copy {}",
                if std::ptr::eq(order[1], &full) {
                    "first"
                } else {
                    "last"
                }
            );
        }
        assert!(
            !memory.usable(&id(5)),
            "only an excluded full copy: store it again"
        );
    }
}
