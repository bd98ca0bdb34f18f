//! Which destination snapshot is the copy of a source snapshot: origins by id, and by
//! (first id of the `original` chain, tree) for snapshots the source re-sealed.

use super::*;

/// The origin a copy of `snap` (a snapshot of repository `repo_id`) records: its own
/// origin when it is itself a copy, so a copy of a copy names the first snapshot.
pub(super) fn origin_of(repo_id: &str, snap: &Snapshot) -> CopyOrigin {
    snap.manifest
        .copied_from
        .clone()
        .unwrap_or_else(|| own_origin(repo_id, snap))
}

/// `snap` (of repository `repo_id`) as an origin of its own.
fn own_origin(repo_id: &str, snap: &Snapshot) -> CopyOrigin {
    CopyOrigin {
        repository: repo_id.to_string(),
        snapshot: snap.id,
        original: snap.manifest.original,
        tree: Some(snap.manifest.tree),
    }
}

/// Which destination snapshot stands for each origin, found by the origin's snapshot
/// id, or by its chain and tree: `tag`, an expiry change and `key rotate --finish`
/// re-seal a manifest under a new id with `original` naming the first id of the
/// chain and the tree unchanged, so (repository, first id of the chain, tree) is the
/// same snapshot; `rewrite` and `repair snapshots` change the tree (new content).
#[derive(Default)]
pub(super) struct Origins {
    by_id: HashMap<(String, BlobId), BlobId>,
    by_content: HashMap<(String, BlobId, BlobId), BlobId>,
}

impl Origins {
    pub(super) fn insert(&mut self, origin: &CopyOrigin, at: BlobId) {
        self.by_id
            .entry((origin.repository.clone(), origin.snapshot))
            .or_insert(at);
        if let Some(tree) = origin.tree {
            let first = origin.original.unwrap_or(origin.snapshot);
            self.by_content
                .entry((origin.repository.clone(), first, tree))
                .or_insert(at);
        }
    }

    pub(super) fn get(&self, origin: &CopyOrigin) -> Option<BlobId> {
        if let Some(at) = self
            .by_id
            .get(&(origin.repository.clone(), origin.snapshot))
        {
            return Some(*at);
        }
        let tree = origin.tree?;
        let first = origin.original.unwrap_or(origin.snapshot);
        self.by_content
            .get(&(origin.repository.clone(), first, tree))
            .copied()
    }
}

/// Which destination snapshot stands for each origin: its copies by `copied_from`,
/// and every destination snapshot as its own origin.
pub(super) fn origins_in(dst: &Repository, snaps: &[Snapshot]) -> Origins {
    let mut map = Origins::default();
    for s in snaps {
        map.insert(&origin_of(&dst.config().id, s), s.id);
    }
    for s in snaps {
        map.insert(&own_origin(&dst.config().id, s), s.id);
    }
    map
}

/// Whether the destination snapshot `existing` (in `dst_all`) has other tags than
/// source snapshot `snap` (tagged in the source after the copy, or in the destination).
pub(super) fn tags_differ(dst_all: &[Snapshot], existing: BlobId, snap: &Snapshot) -> bool {
    let Some(d) = dst_all.iter().find(|s| s.id == existing) else {
        return false;
    };
    let mut a = d.manifest.tags.clone();
    let mut b = snap.manifest.tags.clone();
    a.sort();
    a.dedup();
    b.sort();
    b.dedup();
    a != b
}
