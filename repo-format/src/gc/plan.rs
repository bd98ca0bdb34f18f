//! Planning a gc: classify packs as used, rewritten, deleted or orphaned (`GcPlan`).

use super::reachable::{close_over_bases, Reachable};
use super::GcOptions;
use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::index::IndexFile;
use crate::pack::{PackEntry, PackKind};
use crate::repo::{run_cpu, Repository, Snapshot, INDEX_DIR};
use crate::session::{load_tombstones, TOMBSTONES_DIR};
use std::collections::{HashMap, HashSet};

/// Usage of one pack.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PackUsage {
    /// Pack id.
    pub id: BlobId,
    /// Data or metadata.
    pub kind: PackKind,
    /// Size in storage.
    pub size: u64,
    /// Blobs in it.
    pub blobs: u64,
    /// Blobs no snapshot references.
    pub unused_blobs: u64,
    /// Stored bytes of those.
    pub unused_bytes: u64,
    /// The reachable entries, kept for packs to rewrite.
    #[serde(skip)]
    pub(super) live: Vec<PackEntry>,
}

/// What a gc would do. Produced by [`plan`], carried out by [`apply`](super::apply()).
#[derive(Debug, Clone, serde::Serialize)]
pub struct GcPlan {
    /// Snapshots whose data is kept.
    pub snapshots: usize,
    /// Packs in the index.
    pub packs: usize,
    /// Bytes of all packs in storage.
    pub pack_bytes: u64,
    /// Blobs in the index.
    pub blobs: u64,
    /// Blobs no snapshot references.
    pub unused_blobs: u64,
    /// Packs with no reachable blob.
    pub delete: Vec<PackUsage>,
    /// Packs to rewrite.
    pub repack: Vec<PackUsage>,
    /// Packs in storage that no index file names (crashed writers, interrupted gc).
    pub orphans: Vec<PackUsage>,
    /// Index files.
    pub index_files: usize,
    /// Tombstones of earlier runs still waiting.
    pub pending_tombstones: Vec<String>,
    /// Bytes this gc frees once its tombstone is processed.
    pub bytes_freed_estimate: u64,
    /// Temporary files of interrupted writes (a killed backup leaves them) that are
    /// older than `session_stale_after`, so no live writer can own them: removed.
    pub stale_temporary_files: Vec<String>,
    /// Their bytes.
    pub stale_temporary_bytes: u64,
    #[serde(skip)]
    pub(super) reachable: Option<Reachable>,
}

/// What a gc did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GcReport {
    /// Packs deleted.
    pub packs_deleted: u64,
    /// Bytes freed by deleting them.
    pub bytes_freed: u64,
    /// Packs rewritten.
    pub packs_rewritten: u64,
    /// New packs written by rewriting.
    pub packs_written: u64,
    /// Bytes written by rewriting.
    pub bytes_written: u64,
    /// Index files rewritten (deleted and replaced).
    pub index_files_rewritten: u64,
    /// Tombstones fully processed.
    pub tombstones_processed: u64,
    /// Tombstones waiting for writers that started before them.
    pub tombstones_blocked: Vec<String>,
    /// Writer sessions removed for lack of heartbeats.
    pub stale_sessions_removed: Vec<String>,
    /// Packs kept although planned for deletion (referenced again meanwhile, or a
    /// blob to rewrite failed verification).
    pub packs_kept: u64,
    /// Temporary files of interrupted writes removed.
    pub temporary_files_removed: u64,
    /// Bytes freed by removing them.
    pub temporary_bytes_freed: u64,
    /// Problems that did not stop gc.
    pub warnings: Vec<String>,
    /// Orphan snapshot locators deleted (SPEC.md section 14.1).
    pub locators_deleted: u64,
}

/// Every snapshot; gc refuses to run when one cannot be read, since it would free that
/// snapshot's data.
pub(super) async fn all_snapshots(repo: &Repository) -> Result<Vec<Snapshot>> {
    let (snapshots, damaged) = repo.list_snapshots_checked().await?;
    if let Some((name, e)) = damaged.first() {
        let file = name
            .strip_prefix(crate::repo::SNAPSHOTS_DIR)
            .unwrap_or(name);
        return Err(Error::corrupt(name, format!("{e}; gc will not run while a snapshot cannot be read (it would free its data): put an intact copy of that file back, or remove it with `dprepo forget {file}` (`dprepo repair snapshots --forget` removes every damaged one)")));
    }
    Ok(snapshots)
}

pub(super) async fn stored_packs(repo: &Repository) -> Result<HashMap<BlobId, (PackKind, u64)>> {
    let mut out = HashMap::new();
    for kind in PackKind::ALL {
        for b in repo.storage().list(crate::layout::pack_dir(kind)).await? {
            if let Some((kind, id)) = crate::layout::parse_pack(&b.name) {
                out.insert(id, (kind, b.size));
            }
        }
    }
    Ok(out)
}

pub(super) async fn read_index_file(repo: &Repository, name: &str) -> Result<IndexFile> {
    let bytes = repo.storage().get(name).await?;
    let keys = repo.keys().clone();
    let name = name.to_string();
    run_cpu(move || IndexFile::decode(&keys, &bytes, &name)).await?
}

/// Compute what a gc would do. Reads every snapshot tree and index file; writes nothing.
///
/// # Errors
/// Storage errors; a snapshot that cannot be walked (gc refuses to guess).
pub async fn plan(repo: &Repository, options: &GcOptions) -> Result<GcPlan> {
    let snapshots = all_snapshots(repo).await?;
    let expected = repo.index().read().map(|i| i.blob_count()).unwrap_or(0);
    let mut reachable = Reachable::new(expected);
    for s in &snapshots {
        reachable.add_snapshot(repo, s).await?;
    }
    let stored = stored_packs(repo).await?;
    // Packs already named by a pending tombstone wait for it: planning them again would
    // copy the same live blobs once more on every gc while a backup runs.
    let already_doomed: HashSet<BlobId> = load_tombstones(repo)
        .await?
        .iter()
        .flat_map(|(_, t)| t.packs.iter().map(|p| p.id))
        .collect();
    let index_names = repo.storage().list(INDEX_DIR).await?;
    let names: Vec<String> = index_names.iter().map(|i| i.name.clone()).collect();
    close_over_bases(repo, &mut reachable, &names).await?;
    let mut seen: HashSet<BlobId> = HashSet::new();
    let (mut blobs, mut unused_blobs) = (0u64, 0u64);
    let (mut delete, mut repack) = (Vec::new(), Vec::new());
    for info in &index_names {
        let file = read_index_file(repo, &info.name).await?;
        for p in file.packs {
            if !seen.insert(p.id) {
                continue;
            }
            let Some(&(_, size)) = stored.get(&p.id) else {
                continue;
            };
            let mut usage = PackUsage {
                id: p.id,
                kind: p.kind,
                size,
                blobs: 0,
                unused_blobs: 0,
                unused_bytes: 0,
                live: Vec::new(),
            };
            for e in &p.entries {
                usage.blobs += 1;
                if reachable.bloom.may_contain(&e.id) {
                    usage.live.push(*e);
                } else {
                    usage.unused_blobs += 1;
                    usage.unused_bytes += u64::from(e.stored_len);
                }
            }
            blobs += usage.blobs;
            unused_blobs += usage.unused_blobs;
            if already_doomed.contains(&p.id) {
                continue;
            }
            if usage.live.is_empty() {
                delete.push(usage);
            } else if usage.unused_bytes as f64 > options.max_unused * size as f64 {
                repack.push(usage);
            }
        }
    }
    let orphans: Vec<PackUsage> = stored
        .iter()
        .filter(|(id, _)| !seen.contains(id) && !already_doomed.contains(id))
        .map(|(id, (kind, size))| PackUsage {
            id: *id,
            kind: *kind,
            size: *size,
            blobs: 0,
            unused_blobs: 0,
            unused_bytes: 0,
            live: Vec::new(),
        })
        .collect();
    for u in delete.iter_mut().chain(repack.iter_mut()) {
        if u.live.is_empty() {
            u.live = Vec::new();
        }
    }
    // A write in progress keeps its temporary file's time recent; one silent for as
    // long as a writer session may be is abandoned (its writer, if it ever resumes,
    // fails to rename the file and commits nothing).
    let cutoff = (options.clock)() - options.session_stale_after;
    let mut stale_temporary_files = Vec::new();
    let mut stale_temporary_bytes = 0;
    for t in repo.storage().list_temporary().await? {
        if chrono::DateTime::<chrono::Utc>::from(t.modified) < cutoff {
            stale_temporary_files.push(t.name);
            stale_temporary_bytes += t.size;
        }
    }
    stale_temporary_files.sort();
    let bytes_freed_estimate = delete.iter().chain(&orphans).map(|u| u.size).sum::<u64>()
        + repack.iter().map(|u| u.unused_bytes).sum::<u64>()
        + stale_temporary_bytes;
    let pending_tombstones = repo
        .storage()
        .list(TOMBSTONES_DIR)
        .await?
        .into_iter()
        .map(|b| b.name)
        .collect();
    Ok(GcPlan {
        snapshots: snapshots.len(),
        packs: seen.len(),
        pack_bytes: stored.values().map(|(_, s)| s).sum(),
        blobs,
        unused_blobs,
        delete,
        repack,
        orphans,
        index_files: index_names.len(),
        pending_tombstones,
        bytes_freed_estimate,
        stale_temporary_files,
        stale_temporary_bytes,
        reachable: Some(reachable),
    })
}
