//! `copy`: replicate snapshots from one repository into another (restic's `copy`).
//!
//! The two repositories have their own master keys and content-id keys, so one chunk
//! has a different id in each: every blob is read from the source, decrypted, hashed
//! under the destination's id key and stored through the destination's ordinary write
//! path ([`BlobSaver`]: packs, index files, then the manifest), which skips what the
//! destination already holds. Chunk boundaries are the source's (nothing is re-chunked),
//! so a copy of a copy deduplicates against the first copy, and node extensions (the
//! tar page map of SPEC.md 13.1 counts data chunks by position, hard links, xattrs,
//! ACLs) stay valid byte for byte.
//!
//! Invariants:
//! - A copied manifest records `copied_from` (the first source snapshot of a chain of
//!   copies and its repository id, with that snapshot's `original` and tree); a
//!   snapshot whose origin the destination already holds is skipped, so copying twice
//!   adds nothing, also after the source re-sealed it under a new id (`tag`, expiry,
//!   key rotation: same `original` chain, same tree). The destination's copy is never
//!   changed (it keeps its own tags).
//! - Downloads are avoided where the mapping of source ids to destination ids is
//!   known: a subtree or file that equals the one in the source snapshot's parent,
//!   when that parent was copied before, is taken from the parent's copy without
//!   reading it; chunks of a changed file are mapped through the parent's copy of
//!   the same file (equal boundaries, equal positions); chunks read once in this run
//!   are mapped from then on (a bounded map).
//! - The destination is written under a writer session (SPEC.md section 15): its index
//!   is loaded after the session is ready, every pack and index file of a snapshot is
//!   durable before its manifest, and the session is checked alive just before the
//!   manifest. The source is read under a session marker too, which holds back the
//!   deletions of any gc that starts while the copy reads (SPEC.md section 18, G6).
//! - Memory is bounded: one file's chunks are read a window at a time, chunk lists are
//!   expanded depth-first (at most `MAX_LEVEL` lists held), and the id maps are capped.

use crate::blob::BlobType;
use crate::content::{Content, ContentBuilder};
use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::manifest::CopyOrigin;
use crate::repo::{Repository, Snapshot};
use crate::saver::{BlobSaver, UploaderHandle};
use crate::session::WriterSession;
use crate::tree::{Node, NodeKind, Tree};
use futures::{StreamExt, TryStreamExt};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

mod copier;
mod estimate;
mod origins;

use copier::Copier;
use estimate::plan_only;
use origins::{origin_of, origins_in, tags_differ, Origins};

/// Data chunks read from the source at once (a window of one file's chunks).
pub const CHUNKS_IN_FLIGHT: usize = 8;

/// Most entries in the map of source chunk ids to destination ids (64 bytes each plus
/// the map's overhead: about 100 MiB at the cap). Past it the map is emptied and
/// refilled: later chunks are read again rather than memory growing with the source.
pub const MAX_MAPPED_CHUNKS: usize = 1 << 20;

/// Most entries in the map of source tree ids to destination ids; past it the map is
/// emptied (trees met again are then read again, and stored only if they changed).
pub const MAX_MAPPED_TREES: usize = 1 << 20;

/// Most distinct blobs the dry run's estimate weighs (about 50 bytes each in its sets,
/// so about 100 MiB at the cap); past it the dry run reports no estimate rather than
/// memory growing with the source. The copy itself is not limited by this.
pub const MAX_ESTIMATED_BLOBS: usize = 1 << 21;

/// How the copy runs.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Write nothing: only say which snapshots would be copied and which skipped.
    pub dry_run: bool,
    /// Upload connections of the destination's pack writer (at least 1).
    pub connections: usize,
    /// Most distinct blobs a dry run's estimate weighs; `None` is
    /// [`MAX_ESTIMATED_BLOBS`].
    pub max_estimated_blobs: Option<usize>,
}

impl CopyOptions {
    /// Set `dry_run`.
    pub fn with_dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Set `connections`.
    pub fn with_connections(mut self, connections: usize) -> Self {
        self.connections = connections;
        self
    }

    /// Set `max_estimated_blobs`.
    pub fn with_max_estimated_blobs(mut self, cap: usize) -> Self {
        self.max_estimated_blobs = Some(cap);
        self
    }
}

/// Counters readable while a copy runs (for a progress line).
#[derive(Debug, Default)]
pub struct CopyProgress {
    /// Snapshots finished (copied or skipped).
    pub snapshots_done: AtomicU64,
    /// Blobs read from the source.
    pub blobs_read: AtomicU64,
    /// Plaintext bytes of the blobs read from the source.
    pub bytes_read: AtomicU64,
    /// Blobs added to the destination so far.
    pub blobs_added: AtomicU64,
    /// Stored bytes of the blobs added to the destination so far.
    pub bytes_uploaded: AtomicU64,
    /// The snapshots copied so far (their manifests are in the destination), so a
    /// caller can say what an error left done.
    pub copied: std::sync::Mutex<Vec<CopiedSnapshot>>,
}

/// What a copy did (with `dry_run`: would do).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CopyReport {
    /// Snapshots copied (to be copied, in a dry run), oldest first.
    pub copied: Vec<CopiedSnapshot>,
    /// Snapshots whose copy the destination already holds.
    pub skipped: Vec<SkippedSnapshot>,
    /// Blobs read (downloaded and decrypted) from the source.
    pub blobs_read: u64,
    /// Plaintext bytes of those blobs.
    pub bytes_read: u64,
    /// Blobs the destination lacked and received.
    pub blobs_added: u64,
    /// Plaintext bytes of those blobs.
    pub bytes_added: u64,
    /// Bytes they take in the destination's packs (compressed, encrypted).
    pub bytes_uploaded: u64,
    /// Blobs of those stored as deltas against a blob the destination held (a page of
    /// the parent's copy), as they were in the source.
    pub deltas_added: u64,
    /// Packs uploaded to the destination.
    pub packs_written: u64,
    /// Why the source could not be protected from its gc by a session marker, if it
    /// could not (a read-only source); reads then only retry after a reload.
    pub source_unprotected: Option<String>,
    /// Whether nothing was written.
    pub dry_run: bool,
    /// In a dry run: what the copy would send, estimated from the source's index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<CopyEstimate>,
    /// In a dry run: why there is no estimate (a source tree or chunk list that
    /// cannot be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate_error: Option<String>,
}

/// What a copy would send, estimated in a dry run: the distinct blobs (trees, chunk
/// lists, data chunks) of the snapshots to copy that no source snapshot the destination
/// holds a copy of reaches, with their sizes in the source's index. An upper bound on
/// the blobs: the destination may hold some from elsewhere (its own backups), which
/// only reading and hashing them would tell. The bytes are the source's stored sizes,
/// which the destination's compression makes about equal.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CopyEstimate {
    /// Blobs the destination would receive.
    pub blobs: u64,
    /// Their stored (compressed, encrypted) bytes in the source.
    pub bytes: u64,
    /// Their plaintext bytes.
    pub plain_bytes: u64,
}

/// One copied snapshot.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CopiedSnapshot {
    /// The snapshot in the source (hex id).
    pub source: String,
    /// Its copy in the destination (`None` in a dry run).
    pub copy: Option<String>,
    /// The copy's parent in the destination: the copy of the source's parent, when
    /// the destination holds one.
    pub parent: Option<String>,
    /// Blobs this snapshot added to the destination.
    pub blobs_added: u64,
    /// Stored bytes those blobs take.
    pub bytes_uploaded: u64,
}

/// One snapshot not copied: the destination holds it already, or it is gone from the
/// source.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SkippedSnapshot {
    /// The snapshot in the source (hex id).
    pub source: String,
    /// The destination snapshot that is its copy (or the destination's own snapshot,
    /// when the source snapshot was copied from the destination); `None` when the
    /// snapshot is gone from the source.
    pub existing: Option<String>,
    /// Why it was not copied.
    pub reason: SkipReason,
    /// The destination's copy has other tags than the source snapshot (retagged since
    /// the copy, on either side). The copy keeps its own: `copy` never changes a
    /// destination snapshot.
    pub tags_differ: bool,
}

/// Why a snapshot was not copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// The destination holds its copy (or it is a copy of a destination snapshot).
    AlreadyCopied,
    /// It was chosen, but the source no longer lists it once the copy's session there
    /// is ready: forgotten (or re-sealed under a new id by `tag`, an expiry change or
    /// a key rotation) in between.
    GoneFromSource,
}

impl SkippedSnapshot {
    fn copied_as(snap: &Snapshot, existing: BlobId, dst_all: &[Snapshot]) -> Self {
        SkippedSnapshot {
            source: snap.id.to_hex(),
            existing: Some(existing.to_hex()),
            reason: SkipReason::AlreadyCopied,
            tags_differ: tags_differ(dst_all, existing, snap),
        }
    }

    fn gone(snap: &Snapshot) -> Self {
        SkippedSnapshot {
            source: snap.id.to_hex(),
            existing: None,
            reason: SkipReason::GoneFromSource,
            tags_differ: false,
        }
    }
}

/// Copy `snapshots` (of `src`) into `dst`, oldest first, skipping those `dst` already
/// holds a copy of and those the source no longer lists once the copy's session there
/// is ready (reported as [`SkipReason::GoneFromSource`]). The snapshots copied before
/// an error are in `progress.copied`. Each snapshot's manifest is written once every blob it names is
/// durable in `dst`, so an interrupted copy leaves the snapshots finished before it
/// and, for the one in progress, indexed blobs that the next run reuses.
///
/// # Errors
/// The source and destination being one repository (`InvalidArgument`); a source
/// blob that cannot be read or is damaged (`Corrupt`/`NotFound`, naming the snapshot
/// and path; no manifest is written for that snapshot); storage errors; the writer
/// session's error when a gc found it stale.
pub async fn copy_snapshots(
    src: &Repository,
    dst: &Repository,
    snapshots: &[Snapshot],
    options: &CopyOptions,
    progress: &Arc<CopyProgress>,
) -> Result<CopyReport> {
    if src.config().id == dst.config().id {
        return Err(Error::InvalidArgument(format!(
            "source and destination are the same repository (id {})",
            src.config().id
        )));
    }
    let mut snapshots = snapshots.to_vec();
    snapshots.sort_by_key(|a| (a.manifest.time, a.id));
    snapshots.dedup_by_key(|s| s.id);
    if options.dry_run {
        return plan_only(src, dst, &snapshots, options).await;
    }
    let mut report = CopyReport::default();
    let source_session = match WriterSession::start(src, "copy (source)").await {
        Ok((s, _)) => Some(s),
        Err(e) => {
            report.source_unprotected = Some(e.to_string());
            None
        }
    };
    let result = async {
        src.load_index().await?;
        let (session, excluded) = WriterSession::start(dst, "copy").await?;
        let result = async {
            // Loaded once the session is ready (SPEC.md section 15, S-2a).
            dst.load_index().await?;
            if !excluded.is_empty() {
                dst.index()
                    .write()
                    .map_err(|_| Error::Internal("index lock poisoned".into()))?
                    .exclude_packs(&excluded);
            }
            copy_in_session(
                src,
                dst,
                &snapshots,
                options,
                progress,
                &session,
                &mut report,
            )
            .await
        }
        .await;
        session.end().await;
        result
    }
    .await;
    if let Some(s) = source_session {
        s.end().await;
    }
    result.map(|()| report)
}

/// The destination snapshot that is the copy of `snap`'s parent, if any.
fn parent_in_dst(
    src: &Repository,
    src_all: &[Snapshot],
    snap: &Snapshot,
    origins: &Origins,
) -> Option<BlobId> {
    let parent = snap.manifest.parent?;
    let origin = match src_all.iter().find(|s| s.id == parent) {
        Some(p) => origin_of(&src.config().id, p),
        None => CopyOrigin {
            repository: src.config().id.clone(),
            snapshot: parent,
            original: None,
            tree: None,
        },
    };
    origins.get(&origin)
}

async fn copy_in_session(
    src: &Repository,
    dst: &Repository,
    snapshots: &[Snapshot],
    options: &CopyOptions,
    progress: &Arc<CopyProgress>,
    session: &WriterSession,
    report: &mut CopyReport,
) -> Result<()> {
    // The packs of tombstones the destination session saw (excluded when its index
    // was loaded).
    let tombstones_seen = dst
        .index()
        .read()
        .map(|i| !i.excluded_packs().is_empty())
        .unwrap_or(true);
    // Listed again now that the source session is ready (SPEC.md section 15): a
    // snapshot chosen before it may have been forgotten and its data collected since;
    // one listed now is protected from the source's gc until the copy ends.
    let src_all = src.list_snapshots().await?;
    let dst_all = dst.list_snapshots().await?;
    let mut origins = origins_in(dst, &dst_all);
    let listed: std::collections::HashSet<BlobId> = src_all.iter().map(|s| s.id).collect();
    let mut copier = Copier {
        src,
        dst,
        progress: progress.clone(),
        trees: HashMap::new(),
        chunks: HashMap::new(),
        saver: None,
        connections: options.connections.max(1),
        tombstones_seen,
    };
    for snap in snapshots {
        if !listed.contains(&snap.id) {
            report.skipped.push(SkippedSnapshot::gone(snap));
            progress.snapshots_done.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let origin = origin_of(&src.config().id, snap);
        if let Some(existing) = origins.get(&origin) {
            report
                .skipped
                .push(SkippedSnapshot::copied_as(snap, existing, &dst_all));
            progress.snapshots_done.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let parent = parent_in_dst(src, &src_all, snap, &origins);
        let hint = match parent {
            Some(p) => dst_snapshot_tree(dst, &dst_all, p)
                .await
                .and_then(|dst_tree| {
                    let src_parent = snap.manifest.parent?;
                    let src_tree = src_all.iter().find(|s| s.id == src_parent)?.manifest.tree;
                    Some((src_tree, dst_tree))
                }),
            None => None,
        };
        let before = (
            progress.blobs_added.load(Ordering::Relaxed),
            progress.bytes_uploaded.load(Ordering::Relaxed),
        );
        copier.start_saver();
        let copied = copier.copy_tree(snap.manifest.tree, hint, "", snap).await;
        // Close the writer even after a failure: what it uploaded gets indexed, so a
        // later run reuses it instead of leaving unindexed packs behind.
        let flushed = copier.flush(report).await;
        let root = copied?;
        flushed?;
        let mut manifest = snap.manifest.clone();
        manifest.tree = root;
        manifest.parent = parent;
        // `original` names a snapshot of the source, which the destination lacks.
        manifest.original = None;
        manifest.copied_from = Some(origin.clone());
        let bytes = manifest.encode(dst.keys());
        let id = BlobId::of_stored(&bytes);
        session.check_alive().await?;
        dst.storage()
            .put(&crate::layout::snapshot(&id), &bytes)
            .await?;
        origins.insert(&origin, id);
        let after = (
            progress.blobs_added.load(Ordering::Relaxed),
            progress.bytes_uploaded.load(Ordering::Relaxed),
        );
        let done = CopiedSnapshot {
            source: snap.id.to_hex(),
            copy: Some(id.to_hex()),
            parent: parent.map(|p| p.to_hex()),
            blobs_added: after.0 - before.0,
            bytes_uploaded: after.1 - before.1,
        };
        if let Ok(mut copied) = progress.copied.lock() {
            copied.push(done.clone());
        }
        report.copied.push(done);
        progress.snapshots_done.fetch_add(1, Ordering::Relaxed);
    }
    report.blobs_read = progress.blobs_read.load(Ordering::Relaxed);
    report.bytes_read = progress.bytes_read.load(Ordering::Relaxed);
    Ok(())
}

/// The root tree of destination snapshot `id`, if it is listed (it was when the copy
/// started) and its root tree is usable by this writer.
async fn dst_snapshot_tree(dst: &Repository, dst_all: &[Snapshot], id: BlobId) -> Option<BlobId> {
    let tree = match dst_all.iter().find(|s| s.id == id) {
        Some(s) => s.manifest.tree,
        None => dst.load_snapshot(&id).await.ok()?.manifest.tree,
    };
    dst.usable_many(&[tree])
        .first()
        .copied()
        .unwrap_or(false)
        .then_some(tree)
}

/// Add context (the snapshot and path being copied) to a read failure, keeping its kind.
fn in_context(e: Error, snap: &Snapshot, path: &str) -> Error {
    let at = format!(
        "(source snapshot {}, {})",
        snap.id.short(),
        if path.is_empty() { "/" } else { path }
    );
    match e {
        Error::Corrupt { object, reason } => Error::Corrupt {
            object: format!("{object} {at}"),
            reason,
        },
        Error::NotFound { object } => Error::NotFound {
            object: format!("{object} {at}"),
        },
        other => other,
    }
}
