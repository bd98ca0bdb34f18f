//! `repair snapshots`: write repaired copies of snapshots whose trees reference
//! missing or damaged data.

use super::packs::is_damage;
use crate::blob::BlobType;
use crate::content::Content;
use crate::error::{Error, Result};
use crate::gc::{GcOptions, LeaseGuard};
use crate::id::BlobId;
use crate::pack::PackKind;
use crate::repo::Repository;
use crate::tree::NodeKind;
use crate::verify::list_packs;
use std::collections::HashMap;
use std::sync::Arc;

/// What `repair snapshots` should do.
#[derive(Debug, Clone, Default)]
pub struct RepairSnapshotsOptions {
    /// Read and verify every referenced blob, not just look it up in the index.
    pub read_data: bool,
    /// Report what would be done; write and delete nothing.
    pub dry_run: bool,
    /// Remove the damaged originals once their repaired copies are written, the
    /// snapshots nothing can be restored from, and the snapshot files that cannot be
    /// read.
    pub forget: bool,
}

impl RepairSnapshotsOptions {
    /// Set [`RepairSnapshotsOptions::read_data`].
    pub fn with_read_data(mut self, read_data: bool) -> Self {
        self.read_data = read_data;
        self
    }
    /// Set [`RepairSnapshotsOptions::dry_run`].
    pub fn with_dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }
    /// Set [`RepairSnapshotsOptions::forget`].
    pub fn with_forget(mut self, forget: bool) -> Self {
        self.forget = forget;
        self
    }
}

/// What `repair snapshots` did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepairSnapshotsReport {
    /// Snapshots checked.
    pub snapshots: usize,
    /// (original id, repaired id, dropped paths) of every snapshot rewritten.
    pub repaired: Vec<RepairedSnapshot>,
    /// Snapshots whose root tree is lost or damaged: nothing of them can be restored,
    /// so there is nothing to rewrite.
    pub lost: Vec<LostSnapshot>,
    /// Snapshot files that cannot be read (damaged manifests): name and error.
    pub unreadable: Vec<UnreadableSnapshot>,
    /// Snapshot ids (hex) removed with `forget`: originals of the repaired snapshots
    /// and the lost ones.
    pub removed: Vec<String>,
    /// Unreadable snapshot files removed with `forget` (storage names).
    pub removed_files: Vec<String>,
}

/// A snapshot file that cannot be read.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UnreadableSnapshot {
    /// Its storage name (`snapshots/<name>`).
    pub name: String,
    /// Why it cannot be read.
    pub error: String,
}

/// One rewritten snapshot.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RepairedSnapshot {
    /// The damaged snapshot (kept unless `forget`).
    pub original: String,
    /// The repaired copy.
    pub repaired: String,
    /// Files and directories left out because their data is missing or damaged.
    pub dropped: Vec<String>,
    /// Whether the repaired copy was written by an earlier run (same tree and
    /// original), and so not written again.
    pub existed: bool,
}

/// A snapshot whose root tree is gone.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LostSnapshot {
    /// Its id (hex).
    pub id: String,
    /// Why its root tree cannot be read.
    pub reason: String,
}

/// For every snapshot that references missing or unreadable blobs, write a repaired
/// copy that leaves out the damaged files and directories (listed in the report and
/// tagged `repaired`); a snapshot whose root tree is lost is reported, as nothing of it
/// is left to keep. With `read_data`, every referenced blob is read and verified, not
/// just looked up in the index (damaged blobs that are still indexed are found this
/// way, but only `repair packs` takes them out of the index). Snapshot files that
/// cannot be read are reported. With `forget`, the originals of repaired snapshots, the
/// lost snapshots and the unreadable snapshot files are removed afterwards.
///
/// Holds the gc lease throughout (SPEC.md section 18.1): the repaired manifests are
/// committed before any later gc lists snapshots, so that gc keeps what they reference.
/// Only blobs that are missing or fail to decode (`Corrupt`, `NotFound`) count as lost:
/// any other error stops the repair.
///
/// # Errors
/// [`Error::Busy`] while a gc (or another repair) holds the lease; storage errors.
pub async fn repair_snapshots(
    repo: &Repository,
    options: &RepairSnapshotsOptions,
) -> Result<RepairSnapshotsReport> {
    let lease = LeaseGuard::acquire(repo, &GcOptions::default(), "repair snapshots").await?;
    let result = rewrite_snapshots(repo, options).await;
    lease.release().await;
    result
}

/// [`repair_snapshots`] under the lease.
async fn rewrite_snapshots(
    repo: &Repository,
    options: &RepairSnapshotsOptions,
) -> Result<RepairSnapshotsReport> {
    let dry_run = options.dry_run;
    // An index loaded before the lease was taken may list packs a gc that ran in
    // between deleted, with the blobs it moved (SPEC.md section 15, S-2a).
    repo.load_index().await?;
    let (snapshots, unreadable) = repo.list_snapshots_checked().await?;
    let stored = list_packs(repo).await?;
    let mut report = RepairSnapshotsReport {
        snapshots: snapshots.len(),
        unreadable: unreadable
            .into_iter()
            .map(|(name, e)| UnreadableSnapshot {
                name,
                error: e.to_string(),
            })
            .collect(),
        ..RepairSnapshotsReport::default()
    };
    let mut fixer = TreeFixer {
        repo: repo.clone(),
        stored,
        read_data: options.read_data,
        memo: HashMap::new(),
        blob_ok: HashMap::new(),
        saver: None,
        uploader: None,
        dry_run,
    };
    let mut forget = Vec::new();
    for snap in &snapshots {
        let mut dropped = Vec::new();
        let new_root = match fixer
            .fix_tree(snap.manifest.tree, String::new(), &mut dropped)
            .await?
        {
            Ok(root) => root,
            Err(reason) => {
                report.lost.push(LostSnapshot {
                    id: snap.id.to_hex(),
                    reason,
                });
                forget.push(snap.id);
                continue;
            }
        };
        if dropped.is_empty() {
            continue;
        }
        let original = snap.manifest.original.unwrap_or(snap.id);
        // A copy written by an earlier run: the same tree, repaired from the same
        // original (manifests are sealed with a random nonce, so writing it again would
        // add a duplicate under another id).
        let earlier = snapshots.iter().find(|s| {
            s.id != snap.id && s.manifest.tree == new_root && s.manifest.original == Some(original)
        });
        let (id, bytes) = match earlier {
            Some(copy) => (copy.id, None),
            None => {
                let mut manifest = snap.manifest.clone();
                manifest.tree = new_root;
                manifest.original = Some(original);
                // No longer a faithful copy of its origin: `copy` copies the origin
                // again (restoring what repair took out) instead of skipping it.
                manifest.copied_from = None;
                if !manifest.tags.iter().any(|t| t == "repaired") {
                    manifest.tags.push("repaired".into());
                }
                let bytes = manifest.encode(repo.keys());
                (BlobId::of_stored(&bytes), Some(bytes))
            }
        };
        report.repaired.push(RepairedSnapshot {
            original: snap.id.to_hex(),
            repaired: id.to_hex(),
            dropped: dropped
                .into_iter()
                .map(|p| if p.is_empty() { "/".into() } else { p })
                .collect(),
            existed: bytes.is_none(),
        });
        forget.push(snap.id);
        if let (Some(bytes), false) = (bytes, dry_run) {
            fixer.flush().await?;
            repo.storage()
                .put(&crate::layout::snapshot(&id), &bytes)
                .await?;
        }
    }
    fixer.flush().await?;
    if options.forget {
        let files: Vec<String> = report.unreadable.iter().map(|u| u.name.clone()).collect();
        // After every repaired copy is durable.
        if !dry_run {
            crate::gc::forget_snapshots(repo, &forget).await?;
            crate::gc::forget_snapshot_files(repo, &files).await?;
        }
        report.removed = forget.iter().map(|id| id.to_hex()).collect();
        report.removed_files = files;
    }
    Ok(report)
}

struct TreeFixer {
    repo: Repository,
    stored: HashMap<BlobId, (PackKind, u64)>,
    read_data: bool,
    /// tree id -> (new id, or why the tree itself is lost; dropped paths relative)
    memo: HashMap<BlobId, (std::result::Result<BlobId, String>, Vec<String>)>,
    blob_ok: HashMap<BlobId, bool>,
    saver: Option<Arc<crate::saver::BlobSaver>>,
    uploader: Option<crate::saver::UploaderHandle>,
    dry_run: bool,
}

impl TreeFixer {
    /// Whether blob `id` of type `t` can be read: indexed in a pack that exists (a delta
    /// with its base), and with `read_data` (always for metadata) read and verified.
    ///
    /// # Errors
    /// Errors reading it that are not damage ([`is_damage`]).
    async fn blob_ok(&mut self, id: &BlobId, t: BlobType) -> Result<bool> {
        if let Some(ok) = self.blob_ok.get(id) {
            return Ok(*ok);
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
                match self.repo.read_blob(id, t).await {
                    Ok(_) => true,
                    Err(e) if is_damage(&e) => false,
                    Err(e) => return Err(e),
                }
            }
            Some(_) => true,
        };
        self.blob_ok.insert(*id, ok);
        Ok(ok)
    }

    /// Whether every blob of a file's content can be read (see [`TreeFixer::blob_ok`]).
    async fn content_ok(&mut self, content: &Content) -> Result<bool> {
        let t = if content.level == 0 {
            BlobType::Data
        } else {
            BlobType::ChunkList
        };
        for id in &content.ids {
            if !self.blob_ok(id, t).await? {
                return Ok(false);
            }
        }
        if content.level == 0 {
            return Ok(true);
        }
        let mut ids = crate::data_ids::DataIds::new(content);
        loop {
            match ids.next(&self.repo).await {
                Ok(Some(id)) => {
                    if !self.blob_ok(&id, BlobType::Data).await? {
                        return Ok(false);
                    }
                }
                Ok(None) => return Ok(true),
                Err(e) if is_damage(&e) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }

    /// The repaired id of tree `id` (unchanged if intact), or why the tree itself is
    /// lost.
    ///
    /// # Errors
    /// Errors reading it that are not damage ([`is_damage`]); storage errors saving the
    /// repaired tree.
    async fn fix_tree(
        &mut self,
        id: BlobId,
        path: String,
        dropped: &mut Vec<String>,
    ) -> Result<std::result::Result<BlobId, String>> {
        if let Some((new, rel)) = self.memo.get(&id) {
            dropped.extend(rel.iter().map(|r| format!("{path}{r}")));
            return Ok(new.clone());
        }
        let tree = match self.repo.load_tree(&id).await {
            Ok(tree) => tree,
            Err(e) if is_damage(&e) => {
                let lost = Err(format!("tree {}: {e}", id.short()));
                self.memo.insert(id, (lost.clone(), vec![String::new()]));
                dropped.push(path);
                return Ok(lost);
            }
            Err(e) => return Err(e),
        };
        let mut rel_dropped = Vec::new();
        let mut new_tree = crate::tree::Tree::default();
        for mut node in tree.nodes {
            let name = format!("/{}", String::from_utf8_lossy(&node.name));
            match &node.kind {
                NodeKind::Dir(sub) => {
                    let mut sub_dropped = Vec::new();
                    match Box::pin(self.fix_tree(*sub, String::new(), &mut sub_dropped)).await? {
                        Ok(new_sub) => {
                            rel_dropped
                                .extend(sub_dropped.into_iter().map(|d| format!("{name}{d}")));
                            node.kind = NodeKind::Dir(new_sub);
                            new_tree.nodes.push(node);
                        }
                        Err(_) => rel_dropped.push(name),
                    }
                }
                NodeKind::File(content) => {
                    let content = content.clone();
                    if self.content_ok(&content).await? {
                        new_tree.nodes.push(node);
                    } else {
                        rel_dropped.push(name);
                    }
                }
                NodeKind::Symlink(_) | NodeKind::Special(_) => new_tree.nodes.push(node),
            }
        }
        let new_id = if rel_dropped.is_empty() {
            id
        } else {
            let body = new_tree.encode()?;
            self.save_tree(body).await?
        };
        dropped.extend(rel_dropped.iter().map(|r| format!("{path}{r}")));
        self.memo.insert(id, (Ok(new_id), rel_dropped));
        Ok(Ok(new_id))
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
