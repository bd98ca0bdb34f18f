//! `rewrite`: new snapshots without the paths a filter excludes, for removing files
//! that never should have been backed up (restic's `rewrite --exclude`).
//!
//! For each snapshot the trees are rebuilt bottom-up without the excluded entries;
//! subtrees nothing was removed from keep their ids, so only the directories on the
//! way to a removed entry are written again. The new manifest is the old one with the
//! new root tree and `original` naming the first snapshot of the chain (SPEC.md,
//! "Snapshot manifest"); the old snapshot is deleted only with `forget`, after every
//! new manifest is durable. Data blobs of the removed files are freed by the next gc.
//!
//! Writes follow the backup protocol (SPEC.md section 15): a writer session is open
//! throughout, the index is loaded after it is ready, the new trees' packs and index
//! are durable before the manifest, and the session is checked alive just before it.

use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::repo::{Repository, Snapshot};
use crate::saver::{BlobSaver, UploaderHandle};
use crate::selection::PathFilter;
use crate::session::WriterSession;
use crate::tree::{NodeKind, Tree};
use std::sync::Arc;

/// What a rewrite did (with `dry_run`: would do).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RewriteReport {
    /// Snapshots that lost at least one entry.
    pub rewritten: Vec<RewrittenSnapshot>,
    /// Snapshots from which nothing was excluded (left as they are).
    pub unchanged: usize,
    /// Ids (hex) of the originals deleted with `forget`.
    pub forgotten: Vec<String>,
    /// Whether nothing was written.
    pub dry_run: bool,
}

/// One rewritten snapshot.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RewrittenSnapshot {
    /// The snapshot rewritten.
    pub original: String,
    /// The new snapshot (in a dry run, the id of its root tree's manifest is not
    /// known: `None`).
    pub rewritten: Option<String>,
    /// Paths removed (a directory stands for everything below it).
    pub removed: Vec<String>,
}

struct TreeFilterer<'a> {
    repo: &'a Repository,
    filter: &'a PathFilter,
    dry_run: bool,
    saver: Option<(Arc<BlobSaver>, UploaderHandle)>,
}

impl TreeFilterer<'_> {
    /// The id of tree `id` (at snapshot path `prefix`) without the excluded entries.
    async fn filter_tree(
        &mut self,
        id: BlobId,
        prefix: &str,
        removed: &mut Vec<String>,
    ) -> Result<BlobId> {
        let tree = self.repo.load_tree(&id).await?;
        let before = removed.len();
        let mut kept = Tree::default();
        for mut node in tree.nodes {
            let path = format!("{prefix}/{}", String::from_utf8_lossy(&node.name));
            if self.filter.excludes(std::path::Path::new(&path)) {
                removed.push(path);
                continue;
            }
            if let NodeKind::Dir(sub) = node.kind {
                let new = Box::pin(self.filter_tree(sub, &path, removed)).await?;
                node.kind = NodeKind::Dir(new);
            }
            kept.nodes.push(node);
        }
        if removed.len() == before {
            return Ok(id);
        }
        let body = kept.encode()?;
        if self.dry_run {
            return Ok(self.repo.keys().content_id(&body));
        }
        if self.saver.is_none() {
            let c = self.repo.config();
            self.saver = Some(BlobSaver::start(
                self.repo.storage().clone(),
                self.repo.keys().clone(),
                self.repo.index().clone(),
                c.pack_size,
                c.compression_level,
                2,
            ));
        }
        let saver = self
            .saver
            .as_ref()
            .map(|(s, _)| s.clone())
            .ok_or_else(|| Error::Internal("no saver".into()))?;
        tokio::task::spawn_blocking(move || saver.save(crate::blob::BlobType::Tree, &body))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
    }

    /// Make every tree saved so far durable (packs and index).
    async fn flush(&mut self) -> Result<()> {
        if let Some((saver, uploader)) = self.saver.take() {
            tokio::task::spawn_blocking(move || saver.close())
                .await
                .map_err(|e| Error::Internal(e.to_string()))??;
            uploader.finish().await?;
        }
        Ok(())
    }
}

/// Rewrite `snapshots` without what `filter` excludes (its include patterns are not
/// used); with `forget`, delete each original once its copy is durable.
///
/// # Errors
/// A tree that cannot be read (nothing is committed then); storage errors; the
/// writer session's error when gc found it stale (no manifest is written then).
pub async fn rewrite_snapshots(
    repo: &Repository,
    snapshots: &[Snapshot],
    filter: &PathFilter,
    forget: bool,
    dry_run: bool,
) -> Result<RewriteReport> {
    if dry_run {
        return rewrite_in_session(repo, snapshots, filter, forget, None).await;
    }
    let (session, _tombstoned) = WriterSession::start(repo, "rewrite").await?;
    let result = async {
        // Loaded once the session is ready (SPEC.md section 15, S-2a).
        repo.load_index().await?;
        rewrite_in_session(repo, snapshots, filter, forget, Some(&session)).await
    }
    .await;
    session.end().await;
    result
}

async fn rewrite_in_session(
    repo: &Repository,
    snapshots: &[Snapshot],
    filter: &PathFilter,
    forget: bool,
    session: Option<&WriterSession>,
) -> Result<RewriteReport> {
    let dry_run = session.is_none();
    let mut filterer = TreeFilterer {
        repo,
        filter,
        dry_run,
        saver: None,
    };
    let mut report = RewriteReport {
        dry_run,
        ..RewriteReport::default()
    };
    let mut planned = Vec::new();
    for snap in snapshots {
        let mut removed = Vec::new();
        let root = filterer
            .filter_tree(snap.manifest.tree, "", &mut removed)
            .await?;
        if removed.is_empty() {
            report.unchanged += 1;
            continue;
        }
        planned.push((snap, root, removed));
    }
    // Every new tree is durable before any manifest names it.
    filterer.flush().await?;
    let mut originals = Vec::new();
    for (snap, root, removed) in planned {
        let mut manifest = snap.manifest.clone();
        manifest.tree = root;
        manifest.original = Some(manifest.original.unwrap_or(snap.id));
        // No longer the copy of its origin (entries were removed): a later `copy` must
        // not take it for one and skip the origin, or map files through it.
        manifest.copied_from = None;
        let mut new_id = None;
        if let Some(session) = session {
            let bytes = manifest.encode(repo.keys());
            let id = BlobId::of_stored(&bytes);
            session.check_alive().await?;
            repo.storage()
                .put(&crate::layout::snapshot(&id), &bytes)
                .await?;
            new_id = Some(id.to_hex());
        }
        originals.push(snap.id);
        report.rewritten.push(RewrittenSnapshot {
            original: snap.id.to_hex(),
            rewritten: new_id,
            removed,
        });
    }
    if forget {
        if !dry_run {
            crate::gc::forget_snapshots(repo, &originals).await?;
        }
        report.forgotten = originals.iter().map(|id| id.to_hex()).collect();
    }
    Ok(report)
}
