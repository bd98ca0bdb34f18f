//! What verify can prove and repair can recover, on a small repository damaged in
//! every way a storage fault can damage it.

use dprepo_repo_format::backup::{backup, BackupOptions, BackupProgress, BackupSource};
use dprepo_repo_format::repair::{
    repair_index, repair_packs, repair_snapshots, RepairPacksOptions, RepairSnapshotsOptions,
};
use dprepo_repo_format::restore::dump;
use dprepo_repo_format::storage::{MemoryStorage, Storage};
use dprepo_repo_format::verify::{verify, DataSubset, VerifyReport};
use dprepo_repo_format::{InitOptions, Repository};
use std::collections::BTreeMap;
use std::sync::Arc;

#[path = "support/common.rs"]
mod common;
use common::{xorshift_bytes, FAST_KDF};

/// A repository with one directory snapshot (two files) and one stream snapshot.
async fn small_repository() -> (MemoryStorage, tempfile::TempDir, BTreeMap<String, Vec<u8>>) {
    let storage = MemoryStorage::new();
    let repo = Repository::init(
        Arc::new(storage.clone()),
        b"pw",
        InitOptions::default().with_kdf(FAST_KDF),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut expected = BTreeMap::new();
    for (name, data) in [
        ("a", xorshift_bytes(1, 3000)),
        ("b", b"small file".to_vec()),
    ] {
        std::fs::write(dir.path().join(name), &data).unwrap();
        expected.insert(format!("{}/{name}", dir.path().display()), data);
    }
    backup(
        &repo,
        BackupSource::Paths(vec![dir.path().to_path_buf()]),
        BackupOptions::default(),
        Arc::new(BackupProgress::default()),
    )
    .await
    .unwrap();
    let stream = xorshift_bytes(2, 2000);
    backup(
        &repo,
        BackupSource::Stream {
            name: "s".into(),
            reader: Box::new(std::io::Cursor::new(stream.clone())),
        },
        BackupOptions::default(),
        Arc::new(BackupProgress::default()),
    )
    .await
    .unwrap();
    expected.insert("/s".into(), stream);
    (storage, dir, expected)
}

/// Dump every expected file from every snapshot that has it. Returns whether all came
/// back; panics if any came back with wrong bytes.
async fn dump_all(repo: &Repository, expected: &BTreeMap<String, Vec<u8>>, context: &str) -> bool {
    let Ok(snapshots) = repo.list_snapshots().await else {
        return false;
    };
    let mut all = snapshots.len() == 2;
    for snap in snapshots {
        for (path, data) in expected {
            let mut out = Vec::new();
            match dump(repo, &snap.manifest.tree, path.as_bytes(), &mut out).await {
                Ok(_) => assert!(out == *data, "{context}: {path} restored with wrong bytes"),
                Err(dprepo_repo_format::Error::SnapshotPath { .. }) => {} // not in this snapshot
                Err(_) => all = false,
            }
        }
    }
    all
}

fn names_a_snapshot(report: &VerifyReport) -> bool {
    report
        .problems
        .iter()
        .any(|p| !p.snapshots.is_empty() || p.kind == "snapshot_damaged")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_single_byte_flip_is_detected_or_harmless_and_never_restores_wrong_bytes() {
    let (storage, _dir, expected) = small_repository().await;
    let pristine: Vec<(String, Vec<u8>)> = {
        let mut v = Vec::new();
        for name in storage.names() {
            v.push((name.clone(), storage.get(&name).await.unwrap()));
        }
        v
    };
    let mut flips = 0;
    for (name, data) in &pristine {
        // Every offset of small files; a stride through larger ones, plus both ends.
        let offsets: Vec<usize> = (0..data.len())
            .filter(|&o| data.len() <= 1200 || o % 5 == 0 || o < 64 || o + 64 >= data.len())
            .collect();
        for offset in offsets {
            flips += 1;
            let damaged = MemoryStorage::new();
            for (n, d) in &pristine {
                damaged.raw_put(n, d.clone());
            }
            damaged.corrupt_byte(name, offset);
            let context = format!("flip of {name} at {offset}");
            let repo = match Repository::open(Arc::new(damaged.clone()), b"pw").await {
                Ok(r) => r,
                Err(_) => continue, // detected at open: key file, config or an index file
            };
            let complete = dump_all(&repo, &expected, &context).await;
            let report = verify(&repo, Some(DataSubset::All), Arc::new(Default::default()))
                .await
                .unwrap();
            if !complete {
                assert!(names_a_snapshot(&report), "{context}: restore failed but verify --read-data named no snapshot: {report:?}");
            }
            if complete && report.ok() {
                // Harmless only if nothing reachable changed: every file restored exactly.
                continue;
            }
        }
    }
    assert!(flips > 1000, "only {flips} flips tried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_index_files_are_reported_and_rebuilt_from_pack_headers() {
    let (storage, _dir, expected) = small_repository().await;
    for n in storage
        .names()
        .into_iter()
        .filter(|n| n.starts_with("index/"))
    {
        storage.delete(&n).await.unwrap();
    }
    let repo = Repository::open(Arc::new(storage.clone()), b"pw")
        .await
        .unwrap();
    let report = verify(&repo, None, Arc::new(Default::default()))
        .await
        .unwrap();
    assert!(!report.ok() && names_a_snapshot(&report), "{report:?}");
    assert_eq!(
        report.unindexed_packs.len(),
        storage
            .names()
            .iter()
            .filter(|n| n.starts_with("data/") || n.starts_with("meta/"))
            .count()
    );
    repair_index(&repo, Arc::new(Default::default()))
        .await
        .unwrap();
    let report = verify(&repo, Some(DataSubset::All), Arc::new(Default::default()))
        .await
        .unwrap();
    assert!(report.ok(), "{report:?}");
    assert!(dump_all(&repo, &expected, "after repair index").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_data_pack_is_reported_with_its_files_and_repaired_snapshots_leave_them_out() {
    let (storage, dir, expected) = small_repository().await;
    let pack = storage
        .names()
        .into_iter()
        .find(|n| n.starts_with("data/"))
        .unwrap();
    storage.delete(&pack).await.unwrap();
    let repo = Repository::open(Arc::new(storage.clone()), b"pw")
        .await
        .unwrap();
    let report = verify(&repo, None, Arc::new(Default::default()))
        .await
        .unwrap();
    let missing = report
        .problems
        .iter()
        .find(|p| p.kind == "pack_missing")
        .unwrap_or_else(|| panic!("{report:?}"));
    assert!(
        !missing.snapshots.is_empty()
            && missing
                .files
                .iter()
                .any(|f| f.contains(&format!("{}/", dir.path().display())) || f.contains(":/s")),
        "{missing:?}"
    );
    // repair index drops the lost pack; the snapshots still reference its blobs.
    repair_index(&repo, Arc::new(Default::default()))
        .await
        .unwrap();
    let report = verify(&repo, None, Arc::new(Default::default()))
        .await
        .unwrap();
    assert!(
        report.problems.iter().any(|p| p.kind == "blob_missing"),
        "{report:?}"
    );
    let repaired = repair_snapshots(&repo, &RepairSnapshotsOptions::default())
        .await
        .unwrap();
    assert!(!repaired.repaired.is_empty());
    assert!(repaired.repaired.iter().all(|r| !r.dropped.is_empty()));
    // The repaired snapshots restore what survived, byte-exact.
    let snapshots = repo.list_snapshots().await.unwrap();
    let repaired_ids: Vec<String> = repaired
        .repaired
        .iter()
        .map(|r| r.repaired.clone())
        .collect();
    for snap in snapshots
        .iter()
        .filter(|s| repaired_ids.contains(&s.id.to_hex()))
    {
        assert!(snap.manifest.tags.contains(&"repaired".to_string()));
        for (path, data) in &expected {
            let mut out = Vec::new();
            if dump(&repo, &snap.manifest.tree, path.as_bytes(), &mut out)
                .await
                .is_ok()
            {
                assert!(out == *data, "{path}");
            }
        }
    }
    assert_eq!(
        snapshots.len(),
        2 + repaired.repaired.len(),
        "originals are kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_tree_is_reported_with_the_snapshot_it_breaks() {
    let (storage, _dir, _expected) = small_repository().await;
    for n in storage
        .names()
        .into_iter()
        .filter(|n| n.starts_with("meta/"))
    {
        storage.delete(&n).await.unwrap();
    }
    let repo = Repository::open(Arc::new(storage.clone()), b"pw")
        .await
        .unwrap();
    let report = verify(&repo, None, Arc::new(Default::default()))
        .await
        .unwrap();
    assert!(
        report.problems.iter().any(
            |p| (p.kind == "tree_unreadable" || p.kind == "pack_missing")
                && !p.snapshots.is_empty()
        ),
        "{report:?}"
    );
}

/// A data pack of `storage` and its header entries: the one with `entries` blobs.
async fn data_pack_with(
    repo: &Repository,
    storage: &MemoryStorage,
    entries: usize,
) -> (String, Vec<dprepo_repo_format::pack::PackEntry>) {
    for name in storage
        .names()
        .into_iter()
        .filter(|n| n.starts_with("data/"))
    {
        let id = dprepo_repo_format::BlobId::from_hex(name.rsplit('/').next().unwrap()).unwrap();
        let size = storage.get(&name).await.unwrap().len() as u64;
        let header = dprepo_repo_format::verify::read_pack_header(
            repo,
            &id,
            dprepo_repo_format::pack::PackKind::Data,
            size,
        )
        .await
        .unwrap();
        if header.len() == entries {
            return (name, header);
        }
    }
    panic!("no data pack with {entries} blobs: {:?}", storage.names());
}

/// One flipped byte in a data pack: `repair packs` finds the blob that no longer
/// decodes, copies the pack's other blobs into a new pack, takes the damaged one out of
/// the index and deletes the pack; `repair snapshots --forget` then replaces the
/// snapshot that used it, and the repository verifies clean. Before, the index kept
/// offering the damaged blob to every later backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_blob_leaves_the_index_and_the_rest_of_its_pack_is_kept() {
    let (storage, dir, expected) = small_repository().await;
    let repo = Repository::open(Arc::new(storage.clone()), b"pw")
        .await
        .unwrap();
    // The directory snapshot's data pack holds the chunks of `a` and `b`.
    let (pack, entries) = data_pack_with(&repo, &storage, 2).await;
    let victim = entries[0];
    let survivor = entries[1];
    storage.corrupt_byte(
        &pack,
        victim.offset as usize + victim.stored_len as usize / 2,
    );

    let report = verify(&repo, Some(DataSubset::All), Arc::new(Default::default()))
        .await
        .unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == "blob_damaged" && p.object == pack && !p.snapshots.is_empty()),
        "{report:?}"
    );
    assert!(
        report
            .next_steps()
            .iter()
            .any(|s| s.contains("repair packs")),
        "{:?}",
        report.next_steps()
    );

    // A dry run names the damage and changes nothing.
    let names_before = storage.names();
    let dry = repair_packs(
        &repo,
        &RepairPacksOptions::default().with_dry_run(true),
        Arc::new(Default::default()),
    )
    .await
    .unwrap();
    assert_eq!(dry.damaged.len(), 1, "{dry:?}");
    assert_eq!(storage.names(), names_before);

    let done = repair_packs(
        &repo,
        &RepairPacksOptions::default(),
        Arc::new(Default::default()),
    )
    .await
    .unwrap();
    assert_eq!(done.damaged.len(), 1, "{done:?}");
    let damaged = &done.damaged[0];
    assert_eq!(damaged.pack, pack);
    assert_eq!(damaged.blobs_kept, 1);
    assert_eq!(damaged.dropped.len(), 1);
    assert_eq!(damaged.dropped[0].id, victim.id.to_hex());
    assert_eq!(done.packs_written.len(), 1, "{done:?}");
    assert!(
        !storage.names().contains(&pack),
        "the damaged pack is deleted"
    );
    assert!(
        repo.locate(&victim.id).is_none(),
        "the damaged blob is still indexed"
    );
    let moved = repo
        .locate(&survivor.id)
        .expect("the intact blob is indexed");
    assert_eq!(moved.pack_name(), done.packs_written[0]);
    // Nothing is left to repair.
    let again = repair_packs(
        &repo,
        &RepairPacksOptions::default(),
        Arc::new(Default::default()),
    )
    .await
    .unwrap();
    assert!(again.damaged.is_empty(), "{again:?}");

    let repaired = repair_snapshots(&repo, &RepairSnapshotsOptions::default().with_forget(true))
        .await
        .unwrap();
    assert_eq!(repaired.repaired.len(), 1, "{repaired:?}");
    assert_eq!(repaired.repaired[0].dropped.len(), 1, "{repaired:?}");
    assert_eq!(repaired.removed, [repaired.repaired[0].original.clone()]);
    let report = verify(&repo, Some(DataSubset::All), Arc::new(Default::default()))
        .await
        .unwrap();
    assert!(report.ok(), "{report:?}");
    // The repaired snapshot restores the file that survived, exactly.
    let snapshots = repo.list_snapshots().await.unwrap();
    assert_eq!(snapshots.len(), 2);
    let mut restored = 0;
    for snap in &snapshots {
        for (path, data) in &expected {
            let mut out = Vec::new();
            if dump(&repo, &snap.manifest.tree, path.as_bytes(), &mut out)
                .await
                .is_ok()
            {
                assert!(out == *data, "{path}");
                restored += 1;
            }
        }
    }
    assert_eq!(
        restored,
        2,
        "one file of {} and the stream",
        dir.path().display()
    );
}

/// With both metadata packs gone, every snapshot's root tree is lost: `repair
/// snapshots` named none of them ("0 of 2 snapshots needed repair") and gc refused to
/// run for good. They are now reported as lost, and `--forget` removes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_whose_root_tree_is_lost_are_named_and_can_be_removed() {
    let (storage, _dir, _expected) = small_repository().await;
    for n in storage
        .names()
        .into_iter()
        .filter(|n| n.starts_with("meta/"))
    {
        storage.delete(&n).await.unwrap();
    }
    let repo = Repository::open(Arc::new(storage.clone()), b"pw")
        .await
        .unwrap();
    repair_index(&repo, Arc::new(Default::default()))
        .await
        .unwrap();
    let report = repair_snapshots(&repo, &RepairSnapshotsOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (report.repaired.len(), report.lost.len()),
        (0, 2),
        "{report:?}"
    );
    assert!(report.removed.is_empty());
    assert_eq!(repo.list_snapshots().await.unwrap().len(), 2);
    let report = repair_snapshots(&repo, &RepairSnapshotsOptions::default().with_forget(true))
        .await
        .unwrap();
    assert_eq!(report.removed.len(), 2, "{report:?}");
    assert!(repo.list_snapshots().await.unwrap().is_empty());
    dprepo_repo_format::gc::run(&repo, &Default::default())
        .await
        .unwrap();
}
