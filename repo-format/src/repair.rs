//! Repair (`dprepo repair index|snapshots`): rebuild the index from pack headers, and
//! write repaired copies of snapshots that reference missing or damaged data.

use crate::blob::BlobType;
use crate::content::Content;
use crate::error::{Error, Result};
use crate::gc::{GcOptions, LeaseGuard};
use crate::id::BlobId;
use crate::index::{IndexFile, IndexPack};
use crate::pack::PackKind;
use crate::repo::{run_cpu, Repository, INDEX_DIR};
use crate::tree::NodeKind;
use crate::verify::{list_packs, read_pack_header, VerifyProgress};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What `repair index` did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepairIndexReport {
    /// Packs whose header was read.
    pub packs_indexed: usize,
    /// Blobs in the new index.
    pub blobs: usize,
    /// Packs whose header could not be read: their blobs keep old index entries if any.
    pub unreadable_packs: Vec<String>,
    /// Old index files replaced.
    pub index_files_replaced: usize,
}

/// Rebuild the index from pack headers alone: write new index files for every pack in
/// storage, then delete the old ones. Entries of packs whose header is unreadable are
/// taken from old index files that still decode.
///
/// Holds the gc lease throughout (SPEC.md section 18.1), so no gc deletes a pack while
/// it is being indexed. Index files are listed before packs: every pack an old index
/// file names was written before that file (section 17, W1), so it is in the pack
/// listing, and deleting the old file loses nothing; files written meanwhile by
/// backups are not in the listing and stay.
///
/// # Errors
/// [`Error::Busy`] while a gc (or another repair) holds the lease; storage errors while
/// listing, reading or writing (before any old index file is deleted).
pub async fn repair_index(
    repo: &Repository,
    progress: Arc<VerifyProgress>,
) -> Result<RepairIndexReport> {
    let lease = LeaseGuard::acquire(repo, &GcOptions::default(), "repair index").await?;
    let result = rebuild_index_files(repo, progress).await;
    lease.release().await;
    result
}

/// [`repair_index`] under the lease.
async fn rebuild_index_files(
    repo: &Repository,
    progress: Arc<VerifyProgress>,
) -> Result<RepairIndexReport> {
    let mut report = RepairIndexReport::default();
    let old_names: Vec<String> = repo
        .storage()
        .list(INDEX_DIR)
        .await?
        .into_iter()
        .map(|b| b.name)
        .collect();
    let stored = list_packs(repo).await?;
    progress
        .packs_total
        .store(stored.len() as u64, Ordering::Relaxed);
    let mut fresh = IndexFile::default();
    let mut entries_in_file = 0usize;
    let mut unreadable: HashSet<BlobId> = HashSet::new();
    let mut packs: Vec<_> = stored.iter().map(|(id, (k, s))| (*id, *k, *s)).collect();
    packs.sort_by_key(|p| p.0);
    let mut written = Vec::new();
    for (id, kind, size) in packs {
        match read_pack_header(repo, &id, kind, size).await {
            Ok(entries) => {
                report.packs_indexed += 1;
                report.blobs += entries.len();
                entries_in_file += entries.len();
                fresh.packs.push(IndexPack { id, kind, entries });
            }
            // Deleted since the listing (by hand: gc waits for the lease): nothing to
            // index.
            Err(Error::NotFound { .. }) => {}
            Err(Error::Corrupt { .. } | Error::UnsupportedVersion { .. }) => {
                unreadable.insert(id);
                report.unreadable_packs.push(kind.storage_name(&id));
            }
            // A storage fault says nothing about the pack: stop before deleting the
            // index files that name it.
            Err(e) => return Err(e),
        }
        progress.packs_done.fetch_add(1, Ordering::Relaxed);
        if entries_in_file >= crate::gc::MAX_ENTRIES_PER_INDEX_FILE {
            written.push(write_index(repo, std::mem::take(&mut fresh)).await?);
            entries_in_file = 0;
        }
    }
    // Keep what old index files say about packs whose header is damaged.
    if !unreadable.is_empty() {
        for name in &old_names {
            let file = match repo
                .storage()
                .get(name)
                .await
                .and_then(|b| IndexFile::decode(repo.keys(), &b, name))
            {
                Ok(file) => file,
                Err(Error::Corrupt { .. } | Error::UnsupportedVersion { .. }) => continue,
                Err(e) => return Err(e),
            };
            for p in file.packs {
                if unreadable.remove(&p.id) {
                    report.blobs += p.entries.len();
                    fresh.packs.push(p);
                }
            }
        }
    }
    if !fresh.packs.is_empty() {
        written.push(write_index(repo, fresh).await?);
    }
    for name in &old_names {
        if !written.contains(name) {
            repo.storage().delete(name).await?;
            report.index_files_replaced += 1;
        }
    }
    repo.load_index().await?;
    Ok(report)
}

async fn write_index(repo: &Repository, file: IndexFile) -> Result<String> {
    let keys = repo.keys().clone();
    let bytes = run_cpu(move || file.encode(&keys)).await?;
    let name = format!("{INDEX_DIR}{}", BlobId::of_stored(&bytes).to_hex());
    repo.storage().put(&name, &bytes).await?;
    Ok(name)
}

/// What `repair snapshots` did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepairSnapshotsReport {
    /// Snapshots checked.
    pub snapshots: usize,
    /// (original id, repaired id, dropped paths) of every snapshot rewritten.
    pub repaired: Vec<RepairedSnapshot>,
}

/// One rewritten snapshot.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RepairedSnapshot {
    /// The damaged snapshot (kept).
    pub original: String,
    /// The repaired copy.
    pub repaired: String,
    /// Files and directories left out because their data is missing or damaged.
    pub dropped: Vec<String>,
}

/// For every snapshot that references missing or unreadable blobs, write a repaired
/// copy that leaves out the damaged files and directories (listed in the report and
/// tagged `repaired`), keeping the original. With `read_data`, every referenced blob is
/// read and verified, not just looked up in the index.
///
/// Holds the gc lease throughout (SPEC.md section 18.1): the repaired manifests are
/// committed before any later gc lists snapshots, so that gc keeps what they reference.
///
/// # Errors
/// [`Error::Busy`] while a gc (or another repair) holds the lease; storage errors while
/// writing.
pub async fn repair_snapshots(
    repo: &Repository,
    read_data: bool,
    dry_run: bool,
) -> Result<RepairSnapshotsReport> {
    let lease = LeaseGuard::acquire(repo, &GcOptions::default(), "repair snapshots").await?;
    let result = rewrite_snapshots(repo, read_data, dry_run).await;
    lease.release().await;
    result
}

/// [`repair_snapshots`] under the lease.
async fn rewrite_snapshots(
    repo: &Repository,
    read_data: bool,
    dry_run: bool,
) -> Result<RepairSnapshotsReport> {
    // An index loaded before the lease was taken may list packs a gc that ran in
    // between deleted, with the blobs it moved (SPEC.md section 15, S-2a).
    repo.load_index().await?;
    let snapshots = repo.list_snapshots().await?;
    let stored = list_packs(repo).await?;
    let mut report = RepairSnapshotsReport {
        snapshots: snapshots.len(),
        repaired: Vec::new(),
    };
    let mut fixer = TreeFixer {
        repo: repo.clone(),
        stored,
        read_data,
        memo: HashMap::new(),
        blob_ok: HashMap::new(),
        saver: None,
        uploader: None,
        dry_run,
    };
    for snap in &snapshots {
        let mut dropped = Vec::new();
        let new_root = fixer
            .fix_tree(snap.manifest.tree, String::new(), &mut dropped)
            .await?;
        let Some(new_root) = new_root.filter(|_| !dropped.is_empty()) else {
            continue;
        };
        let mut manifest = snap.manifest.clone();
        manifest.tree = new_root;
        manifest.original = Some(manifest.original.unwrap_or(snap.id));
        if !manifest.tags.iter().any(|t| t == "repaired") {
            manifest.tags.push("repaired".into());
        }
        let bytes = manifest.encode(repo.keys());
        let id = BlobId::of_stored(&bytes);
        report.repaired.push(RepairedSnapshot {
            original: snap.id.to_hex(),
            repaired: id.to_hex(),
            dropped: dropped
                .into_iter()
                .map(|p| if p.is_empty() { "/".into() } else { p })
                .collect(),
        });
        if !dry_run {
            fixer.flush().await?;
            repo.storage()
                .put(
                    &format!("{}{}", crate::repo::SNAPSHOTS_DIR, id.to_hex()),
                    &bytes,
                )
                .await?;
        }
    }
    fixer.flush().await?;
    Ok(report)
}

struct TreeFixer {
    repo: Repository,
    stored: HashMap<BlobId, (PackKind, u64)>,
    read_data: bool,
    /// tree id -> (new id or None if the tree itself is lost, dropped paths relative)
    memo: HashMap<BlobId, (Option<BlobId>, Vec<String>)>,
    blob_ok: HashMap<BlobId, bool>,
    saver: Option<Arc<crate::saver::BlobSaver>>,
    uploader: Option<crate::saver::UploaderHandle>,
    dry_run: bool,
}

impl TreeFixer {
    async fn blob_ok(&mut self, id: &BlobId, t: BlobType) -> bool {
        if let Some(ok) = self.blob_ok.get(id) {
            return *ok;
        }
        let stored = |id: &BlobId| {
            self.repo
                .locate(id)
                .is_some_and(|l| self.stored.contains_key(&l.pack_id))
        };
        let ok = match self.repo.locate(id) {
            None => false,
            Some(loc) if !self.stored.contains_key(&loc.pack_id) => false,
            // A delta is as good as its base.
            Some(loc) if loc.base.is_some_and(|b| !stored(&b)) => false,
            Some(_) if self.read_data || t != BlobType::Data => {
                self.repo.read_blob(id, t).await.is_ok()
            }
            Some(_) => true,
        };
        self.blob_ok.insert(*id, ok);
        ok
    }

    async fn content_ok(&mut self, content: &Content) -> bool {
        let t = if content.level == 0 {
            BlobType::Data
        } else {
            BlobType::ChunkList
        };
        for id in &content.ids {
            if !self.blob_ok(id, t).await {
                return false;
            }
        }
        if content.level == 0 {
            return true;
        }
        let mut ids = crate::restore::DataIds::new(content);
        loop {
            match ids.next(&self.repo).await {
                Ok(Some(id)) => {
                    if !self.blob_ok(&id, BlobType::Data).await {
                        return false;
                    }
                }
                Ok(None) => return true,
                Err(_) => return false,
            }
        }
    }

    /// The repaired id of tree `id` (unchanged if intact), or `None` if it is lost.
    async fn fix_tree(
        &mut self,
        id: BlobId,
        path: String,
        dropped: &mut Vec<String>,
    ) -> Result<Option<BlobId>> {
        if let Some((new, rel)) = self.memo.get(&id) {
            dropped.extend(rel.iter().map(|r| format!("{path}{r}")));
            return Ok(*new);
        }
        let Ok(tree) = self.repo.load_tree(&id).await else {
            self.memo.insert(id, (None, vec![String::new()]));
            dropped.push(path);
            return Ok(None);
        };
        let mut rel_dropped = Vec::new();
        let mut new_tree = crate::tree::Tree::default();
        for mut node in tree.nodes {
            let name = format!("/{}", String::from_utf8_lossy(&node.name));
            match &node.kind {
                NodeKind::Dir(sub) => {
                    let mut sub_dropped = Vec::new();
                    match Box::pin(self.fix_tree(*sub, String::new(), &mut sub_dropped)).await? {
                        Some(new_sub) => {
                            rel_dropped
                                .extend(sub_dropped.into_iter().map(|d| format!("{name}{d}")));
                            node.kind = NodeKind::Dir(new_sub);
                            new_tree.nodes.push(node);
                        }
                        None => rel_dropped.push(name),
                    }
                }
                NodeKind::File(content) => {
                    let content = content.clone();
                    if self.content_ok(&content).await {
                        new_tree.nodes.push(node);
                    } else {
                        rel_dropped.push(name);
                    }
                }
                NodeKind::Symlink(_) => new_tree.nodes.push(node),
            }
        }
        let new_id = if rel_dropped.is_empty() {
            id
        } else {
            let body = new_tree.encode()?;
            self.save_tree(body).await?
        };
        dropped.extend(rel_dropped.iter().map(|r| format!("{path}{r}")));
        self.memo.insert(id, (Some(new_id), rel_dropped));
        Ok(Some(new_id))
    }

    async fn save_tree(&mut self, body: Vec<u8>) -> Result<BlobId> {
        if self.dry_run {
            return Ok(self.repo.keys().content_id(&body));
        }
        if self.saver.is_none() {
            let c = self.repo.config();
            let (saver, uploader) = crate::saver::BlobSaver::start(
                self.repo.storage().clone(),
                self.repo.keys().clone(),
                self.repo.index().clone(),
                c.pack_size,
                c.compression_level,
                2,
            );
            self.saver = Some(saver);
            self.uploader = Some(uploader);
        }
        let saver = self
            .saver
            .clone()
            .ok_or_else(|| Error::Internal("no saver".into()))?;
        tokio::task::spawn_blocking(move || saver.save(BlobType::Tree, &body))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
    }

    /// Make every tree saved so far durable (packs and index) before a manifest uses it.
    async fn flush(&mut self) -> Result<()> {
        if let (Some(saver), Some(uploader)) = (self.saver.take(), self.uploader.take()) {
            tokio::task::spawn_blocking(move || saver.close())
                .await
                .map_err(|e| Error::Internal(e.to_string()))??;
            uploader.finish().await?;
        }
        Ok(())
    }
}
