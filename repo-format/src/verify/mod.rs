//! Verification (`dprepo verify`); repair is in `repair.rs`.
//!
//! The structure check reads index files, pack headers and trees, never pack data:
//! every index entry must point into an existing pack within its bounds and agree with
//! the pack's header; every pack should be indexed; every blob reachable from every
//! snapshot must be indexed. `--read-data` additionally downloads packs (all, a
//! percentage, or slice K of M), checks each pack's hash against its name, and decrypts
//! and re-hashes every blob. Each problem names the snapshots and files it affects.

use crate::blob::{decode_blob, decode_delta_blob, BlobType, DeltaBase};
use crate::content::Content;
use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::index::{BlobLocation, IndexFile, IndexPack};
use crate::pack::{decode_header, parse_trailer, PackEntry, PackKind, TRAILER_LEN};
use crate::repo::{run_cpu, Repository, Snapshot, INDEX_DIR};
use crate::tree::NodeKind;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

mod check;
mod pack_read;
mod read_data;
#[cfg(test)]
pub(crate) mod tests;

use check::{users_of, walk_snapshots, Suspects};
pub(crate) use pack_read::{check_deltas, Segment, SegmentBuffers};
use pack_read::{
    header_after_read, read_pack_header_pooled, read_pack_in_segments, VERIFY_SEGMENT_BYTES,
};
pub use pack_read::{list_packs, read_pack_header};
use read_data::{
    check_against, check_pack, delta_object, Affected, EntriesInFlight, PackCheck, PackOutcome,
    PACKS_READ_AT_ONCE,
};

/// Which packs `--read-data` reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DataSubset {
    /// Every pack.
    All,
    /// A random sample of this percentage of packs.
    Percent(f64),
    /// Slice `k` (1-based) of `m`: packs whose id, as a number, is `k-1` modulo `m`.
    /// Running `1/m` to `m/m` reads every pack exactly once.
    Slice(u32, u32),
}

impl std::str::FromStr for DataSubset {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if let Some(p) = s.strip_suffix('%') {
            let v: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("{s:?}: expected N% (e.g. 10%)"))?;
            if !(0.0..=100.0).contains(&v) || v == 0.0 {
                return Err(format!("{s:?}: percentage must be in (0, 100]"));
            }
            return Ok(DataSubset::Percent(v));
        }
        if let Some((k, m)) = s.split_once('/') {
            let k: u32 = k
                .trim()
                .parse()
                .map_err(|_| format!("{s:?}: expected K/M (e.g. 2/7)"))?;
            let m: u32 = m
                .trim()
                .parse()
                .map_err(|_| format!("{s:?}: expected K/M (e.g. 2/7)"))?;
            if m == 0 || k == 0 || k > m {
                return Err(format!("{s:?}: need 1 <= K <= M"));
            }
            return Ok(DataSubset::Slice(k, m));
        }
        Err(format!("{s:?}: expected N% or K/M"))
    }
}

impl DataSubset {
    fn includes(&self, id: &BlobId) -> bool {
        let mut n = [0u8; 8];
        n.copy_from_slice(&id.0[..8]);
        let v = u64::from_le_bytes(n);
        match self {
            DataSubset::All => true,
            DataSubset::Percent(p) => {
                use chacha20poly1305::aead::{rand_core::RngCore, OsRng};
                (OsRng.next_u64() % 1_000_000) < (*p * 10_000.0) as u64
            }
            DataSubset::Slice(k, m) => v % u64::from(*m) == u64::from(*k - 1),
        }
    }
}

pub use crate::problem::ProblemKind;

/// One problem found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    /// What kind of damage (serialised as `pack_missing`, `blob_missing`, ...).
    pub kind: ProblemKind,
    /// The object concerned (pack, blob, index file, tree).
    pub object: String,
    /// What is wrong.
    pub detail: String,
    /// Snapshots affected.
    pub snapshots: Vec<String>,
    /// Files or directories affected (`<snapshot short id>:<path>`).
    pub files: Vec<String>,
}

/// Result of a verification.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifyReport {
    /// Snapshots checked.
    pub snapshots: usize,
    /// Packs in storage.
    pub packs: usize,
    /// Index files.
    pub index_files: usize,
    /// Blobs in the index.
    pub blobs: usize,
    /// Packs read with `--read-data`.
    pub packs_read: usize,
    /// Bytes read with `--read-data`.
    pub bytes_read: u64,
    /// Blobs decrypted and re-hashed.
    pub blobs_checked: u64,
    /// Packs in storage that no index file names (garbage for gc, or to re-index).
    pub unindexed_packs: Vec<String>,
    /// Temporary files of writes in progress or interrupted (`.tmp-*` of the local
    /// backend): not damage; gc removes those older than a writer may stay silent.
    pub temporary_files: Vec<String>,
    /// Their bytes.
    pub temporary_bytes: u64,
    /// Errors: data that is missing or damaged.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// Whether nothing is wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The commands that recover from the problems found, in the order to run them:
    /// rebuild the index, take damaged blobs out of it, rewrite the snapshots that
    /// used lost data, back up again. Empty when nothing is wrong.
    pub fn next_steps(&self) -> Vec<String> {
        let has = |kinds: &[ProblemKind]| self.problems.iter().any(|p| kinds.contains(&p.kind));
        let mut steps = Vec::new();
        if has(&[
            ProblemKind::IndexFileDamaged,
            ProblemKind::PackMissing,
            ProblemKind::BlobOutOfBounds,
            ProblemKind::IndexHeaderMismatch,
        ]) || (has(&[ProblemKind::BlobMissing, ProblemKind::TreeUnreadable])
            && !self.unindexed_packs.is_empty())
        {
            steps.push("dprepo repair index   (rebuild the index from the pack headers)".into());
        }
        let mut packs: Vec<&str> = self
            .problems
            .iter()
            .filter(|p| {
                matches!(
                    p.kind,
                    ProblemKind::BlobDamaged
                        | ProblemKind::PackHashMismatch
                        | ProblemKind::PackHeaderDamaged
                        | ProblemKind::PackUnreadable
                )
            })
            .map(|p| p.object.as_str())
            .collect();
        packs.sort_unstable();
        packs.dedup();
        if !packs.is_empty() {
            let named = if packs.len() <= 8 {
                format!(" {}", packs.join(" "))
            } else {
                String::new()
            };
            steps.push(format!(
                "dprepo repair packs{named}   (take the damaged blobs out of the index, keep the intact ones)"
            ));
        }
        if self.problems.iter().any(|p| {
            !p.snapshots.is_empty()
                || p.kind == ProblemKind::SnapshotDamaged
                || p.kind == ProblemKind::PackMissing
        }) || !packs.is_empty()
        {
            steps.push(
                "dprepo repair snapshots --forget   (rewrite the snapshots that used lost data, remove the damaged ones)"
                    .into(),
            );
            steps.push(
                "dprepo backup ...   (the next backup stores the lost chunks again, if the files still exist)".into(),
            );
        }
        steps
    }
}

/// Live counters of a running verification.
#[derive(Debug, Default)]
pub struct VerifyProgress {
    /// Packs whose header or data was checked.
    pub packs_done: AtomicU64,
    /// Packs to check.
    pub packs_total: AtomicU64,
    /// Bytes downloaded.
    pub bytes: AtomicU64,
}

/// Verify the repository. `read_data`: also read and check pack contents.
///
/// # Errors
/// Only failures that stop verification itself (listing storage); every damage found is
/// reported in [`VerifyReport::problems`].
pub async fn verify(
    repo: &Repository,
    read_data: Option<DataSubset>,
    progress: Arc<VerifyProgress>,
) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let stored = list_packs(repo).await?;
    report.packs = stored.len();
    let (snapshots, damaged) = repo.list_snapshots_checked().await?;
    for (name, e) in damaged {
        report.problems.push(Problem {
            kind: ProblemKind::SnapshotDamaged,
            object: name,
            detail: e.to_string(),
            snapshots: vec![],
            files: vec![],
        });
    }
    report.snapshots = snapshots.len();
    // The snapshots' trees are walked while the index files and packs are read: the
    // walk is mostly index lookups, the pack checks mostly reads and decoding on the
    // CPU pool. In a set, so an early return aborts it.
    let mut walk = tokio::task::JoinSet::new();
    walk.spawn(walk_snapshots(repo.clone(), snapshots.clone()));
    progress
        .packs_total
        .store(stored.len() as u64, Ordering::Relaxed);
    // Index files, one at a time: entries against pack existence and bounds, then each
    // pack the file lists checked against the file's entries for it (its header, or the
    // whole pack with read-data), in the file's order. Only one index file's entries
    // are held (at most MAX_ENTRIES_PER_INDEX_FILE), never the whole index: memory does
    // not grow with the repository. A pack that several index files list is checked once
    // per file, against that file's entries, and counted once.
    let mut indexed: HashSet<BlobId> = HashSet::new();
    let mut suspect_blobs: HashMap<BlobId, (ProblemKind, String, String)> = HashMap::new(); // blob -> (kind, object, detail)
    let index_names = repo.storage().list(INDEX_DIR).await?;
    report.index_files = index_names.len();
    let mut tasks = tokio::task::JoinSet::new();
    let mut in_flight = EntriesInFlight::default();
    let buffers = Arc::new(SegmentBuffers::default());
    // Problems of the pack checks, reported in pack order whatever order they came in.
    let mut pack_problems: Vec<Problem> = Vec::new();
    let absorb = |report: &mut VerifyReport,
                  pack_problems: &mut Vec<Problem>,
                  suspect_blobs: &mut Suspects,
                  in_flight: &mut EntriesInFlight,
                  outcome: PackOutcome| {
        in_flight.finished(outcome.entries);
        report.packs_read += usize::from(outcome.read);
        report.bytes_read += outcome.bytes;
        report.blobs_checked += outcome.blobs_checked;
        for (blob, kind, object, detail) in outcome.bad_blobs {
            suspect_blobs.insert(blob, (kind, object, detail));
        }
        pack_problems.extend(outcome.problems);
    };
    for info in &index_names {
        let file = match repo
            .storage()
            .get(&info.name)
            .await
            .and_then(|b| IndexFile::decode(repo.keys(), &b, &info.name))
        {
            Ok(f) => f,
            Err(e) => {
                report.problems.push(Problem {
                    kind: ProblemKind::IndexFileDamaged,
                    object: info.name.clone(),
                    detail: e.to_string(),
                    snapshots: vec![],
                    files: vec![],
                });
                continue;
            }
        };
        for IndexPack { id, kind, entries } in file.packs {
            let first_listing = indexed.insert(id);
            let Some((stored_kind, size)) = stored.get(&id).copied() else {
                for e in &entries {
                    suspect_blobs.insert(
                        e.id,
                        (
                            ProblemKind::PackMissing,
                            crate::layout::pack(kind, &id),
                            format!(
                                "index file {} lists this pack but it is not in storage",
                                info.name
                            ),
                        ),
                    );
                }
                continue;
            };
            let limit = size.saturating_sub(TRAILER_LEN as u64);
            for e in &entries {
                if u64::from(e.offset) + u64::from(e.stored_len) > limit {
                    suspect_blobs.insert(
                        e.id,
                        (
                            ProblemKind::BlobOutOfBounds,
                            crate::layout::pack(kind, &id),
                            format!(
                                "blob {} at {}+{} lies beyond the pack's {} bytes",
                                e.id.short(),
                                e.offset,
                                e.stored_len,
                                size
                            ),
                        ),
                    );
                }
            }
            while in_flight.full(entries.len()) {
                let Some(done) = tasks.join_next().await else {
                    break;
                };
                let outcome = done.map_err(|e| Error::Internal(e.to_string()))?;
                absorb(
                    &mut report,
                    &mut pack_problems,
                    &mut suspect_blobs,
                    &mut in_flight,
                    outcome,
                );
            }
            in_flight.started(entries.len());
            let checked = PackCheck {
                id,
                kind: stored_kind,
                size,
                full_read: read_data.is_some_and(|s| s.includes(&id)),
                first_listing,
                entries,
            };
            let (repo, progress, buffers) = (repo.clone(), progress.clone(), buffers.clone());
            tasks.spawn(async move { check_pack(&repo, checked, &progress, &buffers).await });
        }
    }
    while let Some(done) = tasks.join_next().await {
        let outcome = done.map_err(|e| Error::Internal(e.to_string()))?;
        absorb(
            &mut report,
            &mut pack_problems,
            &mut suspect_blobs,
            &mut in_flight,
            outcome,
        );
    }
    report.blobs = repo.index().read().map(|i| i.blob_count()).unwrap_or(0);
    report.unindexed_packs = stored
        .iter()
        .filter(|(id, _)| !indexed.contains(id))
        .map(|(id, (k, _))| crate::layout::pack(*k, id))
        .collect();
    report.unindexed_packs.sort();
    for t in repo.storage().list_temporary().await? {
        report.temporary_files.push(t.name);
        report.temporary_bytes += t.size;
    }
    report.temporary_files.sort();
    pack_problems.sort_by(|a, b| a.object.cmp(&b.object));
    report.problems.append(&mut pack_problems);

    // Problems found by reading packs come first: the walk only adds blobs they did
    // not name.
    let walked = walk
        .join_next()
        .await
        .ok_or_else(|| Error::Internal("the snapshot walk was not started".into()))?
        .map_err(|e| Error::Internal(e.to_string()))?;
    for (id, problem) in walked {
        suspect_blobs.entry(id).or_insert(problem);
    }
    // Name the snapshots and files each damaged blob affects.
    let wanted: HashSet<BlobId> = suspect_blobs.keys().copied().collect();
    let users = users_of(repo, &snapshots, &wanted).await;
    let mut grouped: BTreeMap<(ProblemKind, String, String), Affected> = BTreeMap::new();
    let mut unused = Vec::new();
    for (blob, (kind, object, detail)) in suspect_blobs {
        let Some((snaps, files)) = users.get(&blob) else {
            unused.push((blob, (kind, object, detail)));
            continue;
        };
        let e = grouped.entry((kind, object, detail)).or_default();
        e.0.extend(snaps.iter().cloned());
        e.1.extend(files.iter().cloned());
    }
    // Damaged or lost blobs no snapshot uses still poison the next backup that meets
    // their content, as long as the index offers them for deduplication. (A delta whose
    // base is gone is not offered, SPEC.md section 15, S-3.)
    let ids: Vec<BlobId> = unused.iter().map(|(id, _)| *id).collect();
    for ((_, (kind, object, detail)), usable) in unused.into_iter().zip(repo.usable_many(&ids)) {
        if usable {
            let detail =
                format!("{detail} (no snapshot uses it, but the index still offers it to backups)");
            grouped.entry((kind, object, detail)).or_default();
        }
    }
    for ((kind, object, detail), (mut snaps, mut files)) in grouped {
        snaps.sort();
        snaps.dedup();
        files.sort();
        files.dedup();
        report.problems.push(Problem {
            kind,
            object,
            detail,
            snapshots: snaps,
            files,
        });
    }
    Ok(report)
}
