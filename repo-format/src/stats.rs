//! Repository statistics (`dprepo stats`): what a set of snapshots holds logically, how
//! much unique data that is before and after compression, and what the repository stores
//! in all. The CLI formats these; the numbers are the engine's so every front end counts
//! the same way.

use crate::blob::BlobType;
use crate::data_ids::DataIds;
use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::pack::PackKind;
use crate::repo::{Repository, Snapshot};
use crate::tree::NodeKind;
use std::collections::HashSet;

/// Ids of one file's chunks resolved against the index at once.
const IDS_PER_LOOKUP: usize = 4096;

/// What one snapshot contributes, in the order the snapshots were given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotUsage {
    /// The snapshot.
    pub id: BlobId,
    /// Its logical size: the manifest's recorded total, or what the walk counted if that
    /// is more (files of trees already counted for an earlier snapshot still count).
    pub logical_bytes: u64,
    /// Raw bytes of data chunks no earlier snapshot of the set referenced.
    pub new_unique_bytes: u64,
}

/// What a set of snapshots holds, each tree and data chunk counted once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// File nodes walked (files of a tree shared by several snapshots count once).
    pub files: u64,
    /// Sum of the snapshots' logical sizes.
    pub logical_bytes: u64,
    /// Raw bytes of the distinct data chunks.
    pub unique_data_bytes: u64,
    /// Stored (compressed, sealed) bytes of the distinct data chunks.
    pub unique_data_stored_bytes: u64,
    /// Per snapshot, in the order given.
    pub per_snapshot: Vec<SnapshotUsage>,
}

/// What the repository stores, whatever references it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Pack files under `data/` and `meta/`.
    pub packs: u64,
    /// Their size in storage.
    pub pack_bytes: u64,
    /// Indexed data blobs.
    pub data_blobs: u64,
    /// Indexed tree and chunk-list blobs.
    pub metadata_blobs: u64,
    /// Raw bytes of every indexed blob.
    pub blob_raw_bytes: u64,
    /// Stored bytes of every indexed blob.
    pub blob_stored_bytes: u64,
}

/// Walk `snapshots` once, counting each tree and each data chunk once.
///
/// Memory holds one id per distinct tree and data chunk of the set.
///
/// # Errors
/// Storage and decoding errors; [`Error::NotFound`] for a chunk the index does not know
/// (a damaged repository: `dprepo verify` says more).
pub async fn usage(repo: &Repository, snapshots: &[Snapshot]) -> Result<Usage> {
    let mut seen_trees: HashSet<BlobId> = HashSet::new();
    let mut seen_data: HashSet<BlobId> = HashSet::new();
    let mut out = Usage::default();
    for snap in snapshots {
        let mut stack = vec![snap.manifest.tree];
        let (mut walked_logical, mut new_raw) = (0u64, 0u64);
        while let Some(tree_id) = stack.pop() {
            if !seen_trees.insert(tree_id) {
                continue;
            }
            let tree = repo.load_tree(&tree_id).await?;
            for node in tree.nodes {
                match &node.kind {
                    NodeKind::Dir(id) => stack.push(*id),
                    NodeKind::File(content) => {
                        out.files += 1;
                        walked_logical += node.size;
                        let mut fresh = Vec::new();
                        let mut ids = DataIds::new(content);
                        while let Some(id) = ids.next(repo).await? {
                            if seen_data.insert(id) {
                                fresh.push(id);
                            }
                        }
                        for batch in fresh.chunks(IDS_PER_LOOKUP) {
                            for (id, loc) in batch.iter().zip(repo.locate_many(batch)) {
                                let loc = loc.ok_or_else(|| {
                                    Error::not_found(format!(
                                        "chunk {} of {} (not in any index)",
                                        id.short(),
                                        String::from_utf8_lossy(&node.name)
                                    ))
                                })?;
                                out.unique_data_bytes += u64::from(loc.raw_len);
                                out.unique_data_stored_bytes += u64::from(loc.stored_len);
                                new_raw += u64::from(loc.raw_len);
                            }
                        }
                    }
                    NodeKind::Symlink(_) | NodeKind::Special(_) => {}
                }
            }
        }
        let logical = snap.manifest.summary.total_bytes.max(walked_logical);
        out.logical_bytes += logical;
        out.per_snapshot.push(SnapshotUsage {
            id: snap.id,
            logical_bytes: logical,
            new_unique_bytes: new_raw,
        });
    }
    Ok(out)
}

/// Count the packs in storage and every blob of the index.
///
/// # Errors
/// Storage errors listing the packs; [`Error::Internal`] if the index lock is poisoned.
pub async fn totals(repo: &Repository) -> Result<Totals> {
    let mut out = Totals::default();
    for kind in PackKind::ALL {
        for b in repo.storage().list(crate::layout::pack_dir(kind)).await? {
            out.pack_bytes += b.size;
            out.packs += 1;
        }
    }
    let index = repo
        .index()
        .read()
        .map_err(|_| Error::Internal("index lock poisoned".into()))?;
    for (_, loc) in index.blobs() {
        out.blob_raw_bytes += u64::from(loc.raw_len);
        out.blob_stored_bytes += u64::from(loc.stored_len);
        if loc.blob_type == BlobType::Data {
            out.data_blobs += 1;
        } else {
            out.metadata_blobs += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::{backup, BackupOptions, BackupProgress, BackupSource};
    use std::sync::Arc;

    /// Bytes that neither compress nor repeat, so raw sizes are exact.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        crate::fuzzing::pseudo_random_bytes(seed, len)
    }

    async fn snapshot_of(repo: &Repository, dir: &std::path::Path) -> Snapshot {
        backup(
            repo,
            BackupSource::Paths(vec![dir.to_path_buf()]),
            BackupOptions::default(),
            Arc::new(BackupProgress::default()),
        )
        .await
        .unwrap()
        .snapshot
    }

    /// Shared data counts once for the set and is new only in the snapshot that first
    /// references it; the same snapshot given twice adds nothing new the second time.
    #[tokio::test(flavor = "multi_thread")]
    async fn usage_counts_each_chunk_once_and_credits_the_first_snapshot() {
        let (_storage, repo) = crate::verify::tests::memory_repo().await;
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (noise(700_000, 1), noise(300_000, 2));
        std::fs::write(dir.path().join("a"), &a).unwrap();
        let first = snapshot_of(&repo, dir.path()).await;
        std::fs::write(dir.path().join("b"), &b).unwrap();
        let second = snapshot_of(&repo, dir.path()).await;

        let u = usage(&repo, &[first.clone(), second.clone(), first.clone()])
            .await
            .unwrap();
        let (la, lb) = (a.len() as u64, b.len() as u64);
        assert_eq!(u.unique_data_bytes, la + lb);
        assert!(
            u.unique_data_stored_bytes > la + lb,
            "noise does not compress"
        );
        assert_eq!(
            u.files, 3,
            "the second snapshot's tree differs: a counts again"
        );
        assert_eq!(u.logical_bytes, la + (la + lb) + la);
        let new: Vec<u64> = u.per_snapshot.iter().map(|s| s.new_unique_bytes).collect();
        assert_eq!(new, vec![la, lb, 0]);
        assert_eq!(u.per_snapshot[1].id, second.id);

        let t = totals(&repo).await.unwrap();
        assert!(t.packs >= 2, "a data and a meta pack: {t:?}");
        assert!(t.data_blobs >= 2 && t.metadata_blobs >= 2, "{t:?}");
        assert!(t.blob_raw_bytes >= la + lb, "{t:?}");
        assert!(t.pack_bytes >= t.blob_stored_bytes, "{t:?}");
    }
}
