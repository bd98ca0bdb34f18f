//! The parent snapshot: its directories loaded ahead of the walker, and whether its
//! files' blobs may be reused.

use super::*;

/// Whether the parent's content of an unchanged file may be reused: every blob it
/// references (chunk lists and the data below them) is indexed outside the packs
/// of gc tombstones. Otherwise the file is read again.
pub(super) fn content_usable(
    repo: &Repository,
    rt: &tokio::runtime::Handle,
    content: &Content,
) -> bool {
    // S-7 (a): the parent's content, reachable from a committed snapshot, may be
    // referenced without a lookup by a cold backup.
    if index_is_cold(repo) {
        return true;
    }
    if let Some(usable) = top_level_usable(repo, content) {
        return usable;
    }
    let mut ids = crate::data_ids::DataIds::new(content);
    let mut batch = Vec::new();
    loop {
        match rt.block_on(ids.next(repo)) {
            Ok(Some(id)) => {
                batch.push(id);
                if batch.len() >= 4096 {
                    if !all_usable(repo, &batch) {
                        return false;
                    }
                    batch.clear();
                }
            }
            Ok(None) => return all_usable(repo, &batch),
            Err(_) => return false,
        }
    }
}

/// [`content_usable`] as far as index lookups of `content.ids` decide it; `None` when
/// the chunk lists below them must be read too.
pub(super) fn top_level_usable(repo: &Repository, content: &Content) -> Option<bool> {
    if !all_usable(repo, &content.ids) {
        return Some(false);
    }
    (content.level == 0).then_some(true)
}

/// Whether the backup runs cold (SPEC.md section 15, S-7): no index file loaded, and
/// the parent's content trusted. A fallback to the full index ends it mid-walk.
pub(super) fn index_is_cold(repo: &Repository) -> bool {
    repo.index().read().is_ok_and(|i| i.is_cold())
}

pub(super) fn all_usable(repo: &Repository, ids: &[BlobId]) -> bool {
    repo.usable_many(ids).into_iter().all(|usable| usable)
}

/// Subdirectories whose parent trees are loaded ahead of the walker, per directory.
/// Loading a tree and looking its files' blobs up in the index took 40% of the walker's
/// CPU time in an incremental backup of SRC; ahead of it, on the reader threads, they
/// overlap with its `statx` calls (benches/NOTES.md, "Incremental backups").
pub(super) const PARENT_TREES_AHEAD: usize = 16;

/// Nodes of parent trees loaded ahead of the walker and not yet reached, at most (one
/// tree may exceed it alone). A tree loaded past it is dropped, and the walker loads it
/// again when it gets there: memory stays bounded by this and the trees being loaded,
/// one per reader thread.
pub(super) const PARENT_NODES_AHEAD: u64 = 64 << 10;

/// Ids per batched index read when loading a parent tree.
pub(super) const PARENT_IDS_PER_READ: usize = 4096;

/// A directory's tree in the parent snapshot, and which of its files' content may be
/// reused.
pub(super) struct ParentDir {
    pub(super) tree: Tree,
    /// Index-aligned with `tree.nodes`: [`top_level_usable`] of a file's content
    /// (`Some(false)` for other nodes).
    pub(super) usable: Vec<Option<bool>>,
    /// Counts the tree against [`PARENT_NODES_AHEAD`] until the walker reaches it.
    pub(super) ahead: Option<NodesAhead>,
}

impl ParentDir {
    pub(super) fn load(
        repo: &Repository,
        rt: &tokio::runtime::Handle,
        id: BlobId,
    ) -> Result<ParentDir> {
        let tree = rt.block_on(repo.load_tree(&id))?;
        if index_is_cold(repo) {
            // S-7 (a): every file's content is the parent's, reusable without lookups.
            let usable = tree
                .nodes
                .iter()
                .map(|n| Some(matches!(n.kind, NodeKind::File(_))))
                .collect();
            return Ok(ParentDir {
                tree,
                usable,
                ahead: None,
            });
        }
        // Every file's top-level ids, looked up in batched reads.
        let ids: Vec<BlobId> = tree
            .nodes
            .iter()
            .filter_map(|n| match &n.kind {
                NodeKind::File(c) => Some(c.ids.iter().copied()),
                _ => None,
            })
            .flatten()
            .collect();
        let mut indexed = ids
            .chunks(PARENT_IDS_PER_READ)
            .flat_map(|batch| repo.usable_many(batch));
        let usable = tree
            .nodes
            .iter()
            .map(|n| match &n.kind {
                NodeKind::File(c) => {
                    // Consumes exactly this file's ids, whatever they hold.
                    let unusable = (&mut indexed).take(c.ids.len()).filter(|u| !u).count();
                    match (unusable == 0, c.level) {
                        (false, _) => Some(false),
                        (true, 0) => Some(true),
                        (true, _) => None,
                    }
                }
                _ => Some(false),
            })
            .collect();
        Ok(ParentDir {
            tree,
            usable,
            ahead: None,
        })
    }

    /// The parent's node named `name`, and whether its content may be reused if a file
    /// (`None`: ask [`content_usable`]).
    pub(super) fn node(&self, name: &[u8]) -> Option<(Node, Option<bool>)> {
        let i = self
            .tree
            .nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()?;
        Some((self.tree.nodes[i].clone(), self.usable[i]))
    }

    pub(super) fn subdir(&self, name: &[u8]) -> Option<BlobId> {
        match self.tree.get(name)?.kind {
            NodeKind::Dir(id) => Some(id),
            _ => None,
        }
    }
}

/// Nodes of one tree loaded ahead, counted in the walker's total until dropped.
pub(super) struct NodesAhead {
    pub(super) total: Arc<AtomicU64>,
    pub(super) nodes: u64,
}

impl NodesAhead {
    /// Count `nodes` in `total`, unless that would pass [`PARENT_NODES_AHEAD`] with
    /// other trees already counted.
    pub(super) fn take(total: &Arc<AtomicU64>, nodes: u64) -> Option<NodesAhead> {
        let before = total.fetch_add(nodes, Ordering::AcqRel);
        if before > 0 && before + nodes > PARENT_NODES_AHEAD {
            total.fetch_sub(nodes, Ordering::AcqRel);
            return None;
        }
        Some(NodesAhead {
            total: total.clone(),
            nodes,
        })
    }
}

impl Drop for NodesAhead {
    fn drop(&mut self) {
        self.total.fetch_sub(self.nodes, Ordering::AcqRel);
    }
}

/// What a reader thread hands back for a parent tree loaded ahead: `Ok(None)` if it
/// was over [`PARENT_NODES_AHEAD`] and dropped.
pub(super) type ParentLoaded = Result<Option<ParentDir>>;

/// Where a directory's parent tree comes from.
pub(super) enum ParentSource {
    None,
    /// To be loaded by the walker.
    Id(BlobId),
    /// Being loaded on a reader thread.
    Loading(BlobId, std::sync::mpsc::Receiver<ParentLoaded>),
}

impl Walker {
    /// The parent's tree `id` with the usability of its files, loaded here; `None` (and
    /// a warning) if it cannot be read, so the directory's files are read in full.
    pub(super) fn load_parent(&self, id: BlobId) -> Option<ParentDir> {
        let loaded = ParentDir::load(&self.repo, &self.rt, id);
        self.parent_loaded(id, loaded)
    }

    pub(super) fn parent_loaded(&self, id: BlobId, loaded: Result<ParentDir>) -> Option<ParentDir> {
        match loaded {
            Ok(p) => Some(p),
            Err(e) => {
                self.warn(format!(
                    "parent tree {}: {e} (reading files in full)",
                    id.short()
                ));
                None
            }
        }
    }

    /// Resolve where a directory's parent tree comes from.
    pub(super) fn parent_dir(&self, source: ParentSource) -> Option<ParentDir> {
        match source {
            ParentSource::None => None,
            ParentSource::Id(id) => self.load_parent(id),
            ParentSource::Loading(id, rx) => match rx.recv() {
                Ok(Ok(Some(mut p))) => {
                    p.ahead = None; // reached: no longer ahead of the walker
                    Some(p)
                }
                Ok(Err(e)) => self.parent_loaded(id, Err(e)),
                // Dropped as over budget, or the job was dropped: load it here.
                Ok(Ok(None)) | Err(_) => self.load_parent(id),
            },
        }
    }

    /// Start loading parent tree `id` on a reader thread, ahead of the walker.
    pub(super) fn prefetch_parent(&self, id: BlobId) -> ParentSource {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let (repo, rt) = (self.repo.clone(), self.rt.clone());
        let total = self.parent_nodes_ahead.clone();
        self.readers.spawn(move || {
            let loaded = ParentDir::load(&repo, &rt, id).map(|mut p| {
                p.ahead = Some(NodesAhead::take(&total, p.tree.nodes.len() as u64)?);
                Some(p)
            });
            // The walker may have moved on (the entry is no longer a directory).
            let _ = tx.send(loaded);
        });
        ParentSource::Loading(id, rx)
    }
}
