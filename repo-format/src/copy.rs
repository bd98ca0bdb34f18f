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
use crate::repo::{Repository, Snapshot, SNAPSHOTS_DIR};
use crate::saver::{BlobSaver, UploaderHandle};
use crate::session::WriterSession;
use crate::tree::{Node, NodeKind, Tree};
use futures::{StreamExt, TryStreamExt};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Data chunks read from the source at once (a window of one file's chunks).
pub const CHUNKS_IN_FLIGHT: usize = 8;

/// Most entries in the map of source chunk ids to destination ids (64 bytes each plus
/// the map's overhead: about 100 MiB at the cap). Past it the map is emptied and
/// refilled: later chunks are read again rather than memory growing with the source.
pub const MAX_MAPPED_CHUNKS: usize = 1 << 20;

/// Most entries in the map of source tree ids to destination ids; past it the map is
/// emptied (trees met again are then read again, and stored only if they changed).
pub const MAX_MAPPED_TREES: usize = 1 << 20;

/// How the copy runs.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Write nothing: only say which snapshots would be copied and which skipped.
    pub dry_run: bool,
    /// Upload connections of the destination's pack writer (at least 1).
    pub connections: usize,
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

/// The origin a copy of `snap` (a snapshot of repository `repo_id`) records: its own
/// origin when it is itself a copy, so a copy of a copy names the first snapshot.
fn origin_of(repo_id: &str, snap: &Snapshot) -> CopyOrigin {
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
struct Origins {
    by_id: HashMap<(String, BlobId), BlobId>,
    by_content: HashMap<(String, BlobId, BlobId), BlobId>,
}

impl Origins {
    fn insert(&mut self, origin: &CopyOrigin, at: BlobId) {
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

    fn get(&self, origin: &CopyOrigin) -> Option<BlobId> {
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
fn origins_in(dst: &Repository, snaps: &[Snapshot]) -> Origins {
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
fn tags_differ(dst_all: &[Snapshot], existing: BlobId, snap: &Snapshot) -> bool {
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
        return plan_only(src, dst, &snapshots).await;
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

/// The dry run: which snapshots would be copied (with their parent mapping) and which
/// skipped, and an estimate of what would be sent. No data chunk is read: trees and
/// chunk lists of the source are (see [`estimate`]).
async fn plan_only(
    src: &Repository,
    dst: &Repository,
    snapshots: &[Snapshot],
) -> Result<CopyReport> {
    let src_all = src.list_snapshots().await?;
    let dst_all = dst.list_snapshots().await?;
    let mut origins = origins_in(dst, &dst_all);
    let listed: std::collections::HashSet<BlobId> = src_all.iter().map(|s| s.id).collect();
    // The source snapshots the destination holds copies of: their blobs are there.
    let held: Vec<BlobId> = src_all
        .iter()
        .filter(|s| origins.get(&origin_of(&src.config().id, s)).is_some())
        .map(|s| s.manifest.tree)
        .collect();
    let mut to_send = Vec::new();
    let mut report = CopyReport {
        dry_run: true,
        ..CopyReport::default()
    };
    for snap in snapshots {
        if !listed.contains(&snap.id) {
            report.skipped.push(SkippedSnapshot::gone(snap));
            continue;
        }
        let origin = origin_of(&src.config().id, snap);
        if let Some(existing) = origins.get(&origin) {
            report
                .skipped
                .push(SkippedSnapshot::copied_as(snap, existing, &dst_all));
            continue;
        }
        let parent = parent_in_dst(src, &src_all, snap, &origins);
        // Later snapshots of this run may name this one as parent: stand it in by its
        // own id, reported as "the copy of" it.
        origins.insert(&origin, snap.id);
        to_send.push(snap.manifest.tree);
        report.copied.push(CopiedSnapshot {
            source: snap.id.to_hex(),
            copy: None,
            parent: parent.map(|p| p.to_hex()),
            blobs_added: 0,
            bytes_uploaded: 0,
        });
    }
    match estimate(src, &held, &to_send).await {
        Ok(e) => report.estimate = Some(e),
        Err(e) => report.estimate_error = Some(e.to_string()),
    }
    Ok(report)
}

/// The estimate of a dry run: the blobs reachable from the trees `to_send` and not
/// from the trees `held`, sized from the source's index. Trees and chunk lists are
/// read from the source (each distinct one once); memory grows with the number of
/// distinct blobs reachable from both (32 bytes each, plus the sets' overhead).
async fn estimate(src: &Repository, held: &[BlobId], to_send: &[BlobId]) -> Result<CopyEstimate> {
    if to_send.is_empty() {
        return Ok(CopyEstimate::default());
    }
    src.load_index().await?;
    let none = HashSet::new();
    let mut visited = HashSet::new();
    let mut held_blobs = HashSet::new();
    for root in held {
        reachable(src, *root, &mut visited, &none, &mut held_blobs).await?;
    }
    let mut new = HashSet::new();
    for root in to_send {
        reachable(src, *root, &mut visited, &held_blobs, &mut new).await?;
    }
    let ids: Vec<BlobId> = new.into_iter().collect();
    let mut out = CopyEstimate::default();
    for chunk in ids.chunks(4096) {
        for loc in src.locate_many(chunk).into_iter().flatten() {
            out.blobs += 1;
            out.bytes += u64::from(loc.stored_len);
            out.plain_bytes += u64::from(loc.raw_len);
        }
    }
    Ok(out)
}

/// Add to `out` every blob reachable from tree `root` (trees, chunk lists, data chunks)
/// that is not in `skip`, without walking below a blob in `skip` or in `out` (a chunk
/// list met before) or a tree in `visited`.
async fn reachable(
    src: &Repository,
    root: BlobId,
    visited: &mut HashSet<BlobId>,
    skip: &HashSet<BlobId>,
    out: &mut HashSet<BlobId>,
) -> Result<()> {
    let mut trees = vec![root];
    while let Some(t) = trees.pop() {
        if !visited.insert(t) || skip.contains(&t) {
            continue;
        }
        out.insert(t);
        let tree = src.load_tree(&t).await?;
        for node in tree.nodes {
            match node.kind {
                NodeKind::Dir(sub) => trees.push(sub),
                NodeKind::File(content) => {
                    let mut lists = vec![(content.level, content.ids)];
                    while let Some((level, ids)) = lists.pop() {
                        for id in ids {
                            if skip.contains(&id) || !out.insert(id) || level == 0 {
                                continue;
                            }
                            let body = src.read_blob(&id, BlobType::ChunkList).await?;
                            let sub = Content::decode_list(
                                &body,
                                level - 1,
                                &format!("chunk list {}", id.short()),
                            )?;
                            lists.push((level - 1, sub.ids));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
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
            .put(&format!("{SNAPSHOTS_DIR}{}", id.to_hex()), &bytes)
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

struct Copier<'a> {
    src: &'a Repository,
    dst: &'a Repository,
    progress: Arc<CopyProgress>,
    /// Source tree id -> destination tree id, for trees durable in the destination.
    trees: HashMap<BlobId, BlobId>,
    /// Source data chunk id -> destination id, capped at [`MAX_MAPPED_CHUNKS`].
    chunks: HashMap<BlobId, BlobId>,
    saver: Option<(Arc<BlobSaver>, UploaderHandle)>,
    connections: usize,
    /// The destination session saw gc tombstones (some packs are excluded): a tree
    /// of the parent's copy is no longer reused whole after a check of its own id,
    /// since blobs below it may lie in an excluded pack (SPEC.md section 15, S-3).
    tombstones_seen: bool,
}

impl Copier<'_> {
    fn start_saver(&mut self) {
        let c = self.dst.config();
        self.saver = Some(BlobSaver::start(
            self.dst.storage().clone(),
            self.dst.keys().clone(),
            self.dst.index().clone(),
            c.pack_size,
            c.compression_level,
            self.connections,
        ));
    }

    fn saver(&self) -> Result<Arc<BlobSaver>> {
        self.saver
            .as_ref()
            .map(|(s, _)| s.clone())
            .ok_or_else(|| Error::Internal("copy: no blob saver".into()))
    }

    /// Make everything saved so far durable (packs and index files) and count it.
    async fn flush(&mut self, report: &mut CopyReport) -> Result<()> {
        let Some((saver, uploader)) = self.saver.take() else {
            return Ok(());
        };
        let closing = saver.clone();
        let closed = tokio::task::spawn_blocking(move || closing.close())
            .await
            .map_err(|e| Error::Internal(e.to_string()))
            .and_then(|r| r);
        let finished = uploader.finish().await;
        let stats = &saver.stats;
        report.blobs_added += stats.blobs_added.load(Ordering::Relaxed);
        report.bytes_added += stats.bytes_added.load(Ordering::Relaxed);
        report.bytes_uploaded += stats.bytes_stored.load(Ordering::Relaxed);
        report.packs_written += stats.packs_written.load(Ordering::Relaxed);
        report.deltas_added += stats.deltas_added.load(Ordering::Relaxed);
        closed?;
        finished
    }

    fn note_added(&self, saver: &BlobSaver, before: (u64, u64)) {
        let blobs = saver.stats.blobs_added.load(Ordering::Relaxed);
        let bytes = saver.stats.bytes_stored.load(Ordering::Relaxed);
        self.progress
            .blobs_added
            .fetch_add(blobs.saturating_sub(before.0), Ordering::Relaxed);
        self.progress
            .bytes_uploaded
            .fetch_add(bytes.saturating_sub(before.1), Ordering::Relaxed);
    }

    async fn save(&self, blob_type: BlobType, body: Vec<u8>) -> Result<BlobId> {
        let saver = self.saver()?;
        let before = (
            saver.stats.blobs_added.load(Ordering::Relaxed),
            saver.stats.bytes_stored.load(Ordering::Relaxed),
        );
        let s = saver.clone();
        let id = tokio::task::spawn_blocking(move || s.save(blob_type, &body))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        self.note_added(&saver, before);
        Ok(id)
    }

    /// The destination id of source tree `id` at snapshot path `path`, storing what the
    /// destination lacks. `hint` is (source tree, its copy in the destination) at the
    /// same path in the parent snapshot.
    async fn copy_tree(
        &mut self,
        id: BlobId,
        hint: Option<(BlobId, BlobId)>,
        path: &str,
        snap: &Snapshot,
    ) -> Result<BlobId> {
        if let Some(d) = self.trees.get(&id) {
            return Ok(*d);
        }
        if let Some((hs, hd)) = hint {
            // Without tombstones nothing is excluded, and a usable tree's blobs are
            // all kept (S-3); with them the tree is walked, each file checked.
            if hs == id
                && !self.tombstones_seen
                && self.dst.usable_many(&[hd]).first() == Some(&true)
            {
                self.remember_tree(id, hd);
                return Ok(hd);
            }
        }
        let tree = self
            .src
            .load_tree(&id)
            .await
            .map_err(|e| in_context(e, snap, path))?;
        self.count_read(0);
        // The parent's trees at this path, when both read; a hint that fails only
        // costs the reuse.
        let hint_trees = match hint {
            Some((hs, hd)) => {
                match (self.src.load_tree(&hs).await, self.dst.load_tree(&hd).await) {
                    (Ok(a), Ok(b)) => Some((a, b)),
                    _ => None,
                }
            }
            None => None,
        };
        let pair_of = |node: &Node| {
            hint_trees
                .as_ref()
                .and_then(|(a, b)| Some((a.get(&node.name)?, b.get(&node.name)?)))
        };
        // The chunks of the directory's small files (inline contents, level 0) are
        // copied together, so a directory of many small files keeps
        // CHUNKS_IN_FLIGHT reads going instead of waiting for one file at a time.
        let mut reused: Vec<Option<Content>> = Vec::with_capacity(tree.nodes.len());
        let mut small_ids = Vec::new();
        let mut small_owner = Vec::new();
        for (i, node) in tree.nodes.iter().enumerate() {
            let NodeKind::File(content) = &node.kind else {
                reused.push(None);
                continue;
            };
            let shortcut = self
                .file_from_parent(node.size, content, pair_of(node))
                .await;
            if shortcut.is_none() && content.level == 0 {
                small_ids.extend_from_slice(&content.ids);
                small_owner.extend(std::iter::repeat_n(i, content.ids.len()));
            }
            reused.push(shortcut);
        }
        let nodes = &tree.nodes;
        let mut small_mapped = self
            .map_data_chunks(
                &small_ids,
                &|k| {
                    let name = small_owner
                        .get(k)
                        .and_then(|i| nodes.get(*i))
                        .map(|n| String::from_utf8_lossy(&n.name).into_owned())
                        .unwrap_or_default();
                    format!("{path}/{name}")
                },
                snap,
            )
            .await?
            .into_iter();
        let mut out = Tree::default();
        for (mut node, shortcut) in tree.nodes.into_iter().zip(reused) {
            let child = format!("{path}/{}", String::from_utf8_lossy(&node.name));
            let pair = pair_of(&node);
            node.kind = match node.kind {
                NodeKind::Dir(sub) => {
                    let sub_hint = pair.and_then(|(a, b)| match (&a.kind, &b.kind) {
                        (NodeKind::Dir(x), NodeKind::Dir(y)) => Some((*x, *y)),
                        _ => None,
                    });
                    NodeKind::Dir(Box::pin(self.copy_tree(sub, sub_hint, &child, snap)).await?)
                }
                NodeKind::File(content) => NodeKind::File(match shortcut {
                    Some(c) => c,
                    None if content.level == 0 => Content {
                        level: 0,
                        ids: small_mapped.by_ref().take(content.ids.len()).collect(),
                    },
                    None => self.copy_content(content, &child, snap).await?,
                }),
                other => other,
            };
            out.nodes.push(node);
        }
        let body = out.encode()?;
        let new = self.save(BlobType::Tree, body).await?;
        self.remember_tree(id, new);
        Ok(new)
    }

    /// The destination content of a file (`size` bytes, source content `content`)
    /// known from the parent snapshot's copy: `pair` is the file at the same path in
    /// the source's parent and in its copy. When the file is unchanged its copy's
    /// content is returned; when it changed, its chunks are mapped through the copy
    /// (equal positions) and `None` is returned.
    async fn file_from_parent(
        &mut self,
        size: u64,
        content: &Content,
        pair: Option<(&Node, &Node)>,
    ) -> Option<Content> {
        let (a, b) = pair?;
        let (NodeKind::File(sa), NodeKind::File(db)) = (&a.kind, &b.kind) else {
            return None;
        };
        let usable = content_usable(self.dst, db).await;
        if sa == content && a.size == size && b.size == size && usable {
            // The parent's copy of this very file: nothing to read.
            return Some(db.clone());
        }
        if usable && b.size > 0 {
            // A changed file: its unchanged chunks are the parent copy's chunks at
            // the same positions.
            self.map_chunks_of(sa, db).await;
        }
        None
    }

    /// The destination content of source content `content` (of the file at `path`),
    /// its chunk lists expanded depth-first and its chunks copied a window at a time.
    async fn copy_content(
        &mut self,
        content: Content,
        path: &str,
        snap: &Snapshot,
    ) -> Result<Content> {
        let mut builder = ContentBuilder::new();
        let mut batch = Vec::with_capacity(CHUNKS_IN_FLIGHT * 8);
        let mut stack: Vec<(Content, usize)> = vec![(content, 0)];
        while let Some((list, next)) = stack.last_mut() {
            let Some(id) = list.ids.get(*next).copied() else {
                stack.pop();
                continue;
            };
            *next += 1;
            let level = list.level;
            if level == 0 {
                batch.push(id);
                if batch.len() == batch.capacity() {
                    builder = self
                        .copy_chunks(std::mem::take(&mut batch), builder, path, snap)
                        .await?;
                }
                continue;
            }
            let body = self
                .src
                .read_blob(&id, BlobType::ChunkList)
                .await
                .map_err(|e| in_context(e, snap, path))?;
            self.count_read(body.len());
            let sub = Content::decode_list(&body, level - 1, &format!("chunk list {}", id.short()))
                .map_err(|e| in_context(e, snap, path))?;
            stack.push((sub, 0));
        }
        if !batch.is_empty() {
            builder = self.copy_chunks(batch, builder, path, snap).await?;
        }
        let saver = self.saver()?;
        let before = (
            saver.stats.blobs_added.load(Ordering::Relaxed),
            saver.stats.bytes_stored.load(Ordering::Relaxed),
        );
        let s = saver.clone();
        let content = tokio::task::spawn_blocking(move || {
            builder.finish(&mut |body| s.save(BlobType::ChunkList, &body))
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        self.note_added(&saver, before);
        Ok(content)
    }

    /// Data chunks of a file, in order: each is mapped to its destination id (read
    /// from the source, hashed and saved unless the map knows it), and the ids are
    /// pushed into `builder` (returned, as it moves through a blocking task).
    async fn copy_chunks(
        &mut self,
        ids: Vec<BlobId>,
        builder: ContentBuilder,
        path: &str,
        snap: &Snapshot,
    ) -> Result<ContentBuilder> {
        let dst_ids = self
            .map_data_chunks(&ids, &|_| path.to_string(), snap)
            .await?;
        let saver = self.saver()?;
        let s = saver.clone();
        let before = (
            saver.stats.blobs_added.load(Ordering::Relaxed),
            saver.stats.bytes_stored.load(Ordering::Relaxed),
        );
        let builder = tokio::task::spawn_blocking(move || -> Result<ContentBuilder> {
            let mut builder = builder;
            let mut save_list = |body: Vec<u8>| s.save(BlobType::ChunkList, &body);
            for id in dst_ids {
                builder.push(id, &mut save_list)?;
            }
            Ok(builder)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        self.note_added(&saver, before);
        Ok(builder)
    }

    /// The destination ids of source data chunks `ids`: each is taken from the map, or
    /// read from the source, hashed and saved (a delta when the source's is one and its
    /// base is mapped), [`CHUNKS_IN_FLIGHT`] at a time. `path_of(k)` names the file of
    /// `ids[k]` in errors.
    async fn map_data_chunks(
        &mut self,
        ids: &[BlobId],
        path_of: &(dyn Fn(usize) -> String + Sync),
        snap: &Snapshot,
    ) -> Result<Vec<BlobId>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let saver = self.saver()?;
        let before = (
            saver.stats.blobs_added.load(Ordering::Relaxed),
            saver.stats.bytes_stored.load(Ordering::Relaxed),
        );
        // Each distinct id is read once (its first occurrence names it in errors):
        // the map is consulted before the stream and filled after it, so a chunk
        // repeated within `ids` (small files of equal content) would otherwise be
        // read once per occurrence.
        let input = ids;
        let mut first_at: HashMap<BlobId, usize> = HashMap::with_capacity(input.len());
        let mut unique: Vec<BlobId> = Vec::with_capacity(input.len());
        let mut unique_k: Vec<usize> = Vec::with_capacity(input.len());
        let slots: Vec<usize> = input
            .iter()
            .enumerate()
            .map(|(k, id)| {
                *first_at.entry(*id).or_insert_with(|| {
                    unique.push(*id);
                    unique_k.push(k);
                    unique.len() - 1
                })
            })
            .collect();
        let ids = &unique[..];
        let known: Vec<Option<BlobId>> =
            ids.iter().map(|id| self.chunks.get(id).copied()).collect();
        // A delta in the source stays a delta in the destination when its base was
        // copied before (the parent's page): the map gives the base's destination id.
        let bases: Vec<Option<BlobId>> = self
            .src
            .type_and_base_many(ids)
            .into_iter()
            .map(|tb| {
                tb.and_then(|(_, base)| base)
                    .and_then(|b| self.chunks.get(&b).copied())
            })
            .collect();
        let (src, dst) = (self.src, self.dst);
        let progress = &self.progress;
        let unique_k = &unique_k;
        let mapped: Vec<(BlobId, BlobId)> =
            futures::stream::iter(ids.iter().zip(known).zip(bases).enumerate())
                .map(|(k, ((id, known), base))| {
                    let saver = saver.clone();
                    async move {
                        if let Some(d) = known {
                            return Ok((*id, d));
                        }
                        let plain = src
                            .read_blob(id, BlobType::Data)
                            .await
                            .map_err(|e| in_context(e, snap, &path_of(unique_k[k])))?;
                        progress.blobs_read.fetch_add(1, Ordering::Relaxed);
                        progress
                            .bytes_read
                            .fetch_add(plain.len() as u64, Ordering::Relaxed);
                        let d = saver.keys().content_id(&plain);
                        let base = match base {
                            Some(b) if !saver.is_stored(&d) => {
                                match saver.delta_base_for(&b, plain.len()) {
                                    // A base that cannot be read only costs the delta.
                                    Some(b) => {
                                        dst.read_blob(&b, BlobType::Data).await.ok().map(|p| (b, p))
                                    }
                                    None => None,
                                }
                            }
                            _ => None,
                        };
                        tokio::task::spawn_blocking(move || match &base {
                            Some((b, base_plain)) => saver.save_data_with_base(
                                d,
                                &plain,
                                crate::blob::DeltaBase {
                                    id: b,
                                    plaintext: base_plain,
                                },
                            ),
                            None => saver.save_with_id(BlobType::Data, d, &plain),
                        })
                        .await
                        .map_err(|e| Error::Internal(e.to_string()))??;
                        Ok::<_, Error>((*id, d))
                    }
                })
                .buffered(CHUNKS_IN_FLIGHT)
                .try_collect()
                .await?;
        self.note_added(&saver, before);
        for (s, d) in &mapped {
            self.remember_chunk(*s, *d);
        }
        Ok(slots.into_iter().map(|u| mapped[u].1).collect())
    }

    fn remember_tree(&mut self, src: BlobId, dst: BlobId) {
        if self.trees.len() >= MAX_MAPPED_TREES {
            self.trees.clear();
        }
        self.trees.insert(src, dst);
    }

    fn remember_chunk(&mut self, src: BlobId, dst: BlobId) {
        if self.chunks.len() >= MAX_MAPPED_CHUNKS {
            self.chunks.clear();
        }
        self.chunks.insert(src, dst);
    }

    fn count_read(&self, bytes: usize) {
        self.progress.blobs_read.fetch_add(1, Ordering::Relaxed);
        self.progress
            .bytes_read
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Map the data chunks of `src_content` (in the source) to those of `dst_content`
    /// (its copy in the destination) position by position, when both expand to the
    /// same number of chunks and those are usable. Best effort: any failure to read a
    /// list only costs the downloads it would have saved.
    async fn map_chunks_of(&mut self, src_content: &Content, dst_content: &Content) {
        let room = MAX_MAPPED_CHUNKS.saturating_sub(self.chunks.len());
        let Some(a) = expand_ids(self.src, src_content, room).await else {
            return;
        };
        let Some(b) = expand_ids(self.dst, dst_content, room).await else {
            return;
        };
        if a.len() != b.len() {
            return;
        }
        let usable = self.dst.usable_many(&b);
        for ((s, d), ok) in a.into_iter().zip(b).zip(usable) {
            if ok {
                self.chunks.insert(s, d);
            }
        }
    }
}

/// Whether a writer may reference `content` of `repo`: every blob it references
/// (chunk lists and the data chunks below them) is usable, as backup checks a
/// parent's file (a chunk list's own id says nothing of the chunks it lists).
async fn content_usable(repo: &Repository, content: &Content) -> bool {
    if !repo.usable_many(&content.ids).iter().all(|u| *u) {
        return false;
    }
    if content.level == 0 {
        return true;
    }
    let mut ids = crate::restore::DataIds::new(content);
    let mut batch = Vec::new();
    loop {
        match ids.next(repo).await {
            Ok(Some(id)) => {
                batch.push(id);
                if batch.len() >= 4096 {
                    if !repo.usable_many(&batch).iter().all(|u| *u) {
                        return false;
                    }
                    batch.clear();
                }
            }
            Ok(None) => return repo.usable_many(&batch).iter().all(|u| *u),
            Err(_) => return false,
        }
    }
}

/// The data chunk ids of `content` in `repo`, or `None` if there are more than `cap`
/// or a chunk list cannot be read.
async fn expand_ids(repo: &Repository, content: &Content, cap: usize) -> Option<Vec<BlobId>> {
    let mut out = Vec::new();
    let mut stack: Vec<(Content, usize)> = vec![(content.clone(), 0)];
    while let Some((list, next)) = stack.last_mut() {
        let Some(id) = list.ids.get(*next).copied() else {
            stack.pop();
            continue;
        };
        *next += 1;
        if list.level == 0 {
            if out.len() >= cap {
                return None;
            }
            out.push(id);
            continue;
        }
        let level = list.level;
        let body = repo.read_blob(&id, BlobType::ChunkList).await.ok()?;
        let sub = Content::decode_list(&body, level - 1, "chunk list").ok()?;
        stack.push((sub, 0));
    }
    Some(out)
}
