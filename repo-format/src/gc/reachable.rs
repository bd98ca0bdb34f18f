//! Marking what snapshots reach: the Bloom filter of reachable blob ids and the walk
//! that fills it (trees, contents, delta bases).

use super::plan::read_index_file;
use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::repo::{Repository, Snapshot};
use crate::tree::NodeKind;
use std::collections::HashSet;

/// Bloom filter of reachable blob ids. Ids are keyed BLAKE3 hashes, uniformly random,
/// so their bytes serve directly as the hash functions.
#[derive(Debug, Clone)]
pub(super) struct Bloom {
    bits: Vec<u64>,
    m: u64,
}

const BLOOM_HASHES: u64 = 7;

impl Bloom {
    pub(super) fn new(expected: usize) -> Self {
        let m = ((expected as u64).saturating_mul(10)).max(4096);
        Bloom {
            bits: vec![0; m.div_ceil(64) as usize],
            m,
        }
    }
    fn positions(&self, id: &BlobId) -> impl Iterator<Item = u64> + '_ {
        let mut a = [0u8; 8];
        a.copy_from_slice(&id.0[..8]);
        let mut b = [0u8; 8];
        b.copy_from_slice(&id.0[8..16]);
        let (h1, h2) = (u64::from_le_bytes(a), u64::from_le_bytes(b) | 1);
        (0..BLOOM_HASHES).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % self.m)
    }
    pub(super) fn insert(&mut self, id: &BlobId) {
        let pos: Vec<u64> = self.positions(id).collect();
        for p in pos {
            self.bits[(p / 64) as usize] |= 1 << (p % 64);
        }
    }
    pub(super) fn may_contain(&self, id: &BlobId) -> bool {
        self.positions(id)
            .all(|p| self.bits[(p / 64) as usize] & (1 << (p % 64)) != 0)
    }
}

/// Everything reachable from a set of snapshots.
#[derive(Debug, Clone)]
pub(super) struct Reachable {
    pub(super) bloom: Bloom,
    trees: HashSet<BlobId>,
    snapshots: HashSet<BlobId>,
}

impl Reachable {
    pub(super) fn new(expected: usize) -> Self {
        Reachable {
            bloom: Bloom::new(expected),
            trees: HashSet::new(),
            snapshots: HashSet::new(),
        }
    }

    pub(super) async fn add_snapshot(&mut self, repo: &Repository, snap: &Snapshot) -> Result<()> {
        if !self.snapshots.insert(snap.id) {
            return Ok(());
        }
        let mut stack = vec![snap.manifest.tree];
        while let Some(tree_id) = stack.pop() {
            if !self.trees.insert(tree_id) {
                continue;
            }
            self.bloom.insert(&tree_id);
            let tree = repo
                .load_tree(&tree_id)
                .await
                .map_err(|e| Error::SnapshotUnwalkable {
                    snapshot: snap.id.short(),
                    reason: format!("cannot be walked ({e})"),
                    remedy: "run `dprepo verify`, then `dprepo repair index` if index files were lost, and `dprepo repair snapshots --forget` to replace the snapshots that use lost data".into(),
                })?;
            for node in tree.nodes {
                match node.kind {
                    NodeKind::Dir(id) => stack.push(id),
                    NodeKind::File(content) => {
                        for id in &content.ids {
                            self.bloom.insert(id);
                        }
                        if content.level == 0 {
                            require_indexed(repo, snap, &content.ids)?;
                        }
                        if content.level > 0 {
                            // Mark the chunk lists below the top level and their data.
                            let mut lists = vec![(content.level, content.ids.clone())];
                            while let Some((level, ids)) = lists.pop() {
                                if level == 0 {
                                    require_indexed(repo, snap, &ids)?;
                                }
                                for id in ids {
                                    self.bloom.insert(&id);
                                    if level > 0 {
                                        let body = repo
                                            .read_blob(&id, crate::blob::BlobType::ChunkList)
                                            .await?;
                                        let list = crate::content::Content::decode_list(
                                            &body,
                                            level - 1,
                                            &format!("chunk list {}", id.short()),
                                        )?;
                                        lists.push((level - 1, list.ids));
                                    }
                                }
                            }
                        }
                    }
                    NodeKind::Symlink(_) | NodeKind::Special(_) => {}
                }
            }
        }
        Ok(())
    }
}

/// A snapshot's blob that no index file lists may still sit in a pack that no index
/// file names; gc would delete that pack as an orphan. Refuse instead: `repair index`
/// can recover it.
fn require_indexed(repo: &Repository, snap: &Snapshot, ids: &[BlobId]) -> Result<()> {
    let index = repo
        .index()
        .read()
        .map_err(|_| Error::Internal("index lock poisoned".into()))?;
    // A delta's base must be indexed too: it is as much needed as the blob itself.
    let unindexed = ids.iter().find_map(|id| match index.type_and_base(id) {
        None => Some(format!("blob {}", id.short())),
        Some((_, base)) => base.filter(|base| !index.contains(base)).map(|base| {
            format!(
                "blob {} through its delta base {}",
                id.short(),
                base.short()
            )
        }),
    });
    match unindexed {
        None => Ok(()),
        Some(what) => Err(Error::SnapshotUnwalkable {
            snapshot: snap.id.short(),
            reason: format!("references {what}, which no index file lists (gc could delete the pack holding it)"),
            remedy: "run `dprepo repair index` first (it indexes packs that index files lost), then, if the blob is still missing, `dprepo repair snapshots --forget`".into(),
        }),
    }
}

/// Mark the bases of reachable delta blobs reachable: a delta cannot be decoded without
/// its base. Every index entry counts, not only the copy the index prefers, because
/// whichever copy of a blob survives must stay decodable. Writers never make a delta of
/// a delta, but one id may be a base in one pack and a delta in another (two writers, or
/// a page stored again), so passes repeat until one adds nothing. Index files are read
/// one at a time.
pub(super) async fn close_over_bases(
    repo: &Repository,
    reachable: &mut Reachable,
    index_names: &[String],
) -> Result<()> {
    loop {
        let mut added = false;
        for name in index_names {
            for p in read_index_file(repo, name).await?.packs {
                for e in &p.entries {
                    if let Some(base) = &e.base {
                        if reachable.bloom.may_contain(&e.id) && !reachable.bloom.may_contain(base)
                        {
                            reachable.bloom.insert(base);
                            added = true;
                        }
                    }
                }
            }
        }
        if !added {
            return Ok(());
        }
    }
}
