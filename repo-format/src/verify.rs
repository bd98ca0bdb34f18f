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

fn pack_name_id(name: &str) -> Option<(BlobId, PackKind)> {
    let kind = match name.split('/').next()? {
        "data" => PackKind::Data,
        "meta" => PackKind::Meta,
        _ => return None,
    };
    BlobId::from_hex(name.rsplit('/').next()?)
        .ok()
        .map(|id| (id, kind))
}

/// Read a pack's header with two ranged reads (trailer, then header).
///
/// # Errors
/// [`Error::Corrupt`] naming the pack if trailer or header are damaged.
pub async fn read_pack_header(
    repo: &Repository,
    id: &BlobId,
    kind: PackKind,
    size: u64,
) -> Result<Vec<PackEntry>> {
    let name = kind.storage_name(id);
    if size < TRAILER_LEN as u64 {
        return Err(Error::corrupt(
            &name,
            format!("pack of {size} bytes is too short for its trailer"),
        ));
    }
    let trailer = repo
        .storage()
        .get_range(&name, size - TRAILER_LEN as u64, TRAILER_LEN as u64)
        .await?;
    let (header_len, version) = parse_trailer(&trailer, size, &name)?;
    let start = size - TRAILER_LEN as u64 - u64::from(header_len);
    let sealed = repo
        .storage()
        .get_range(&name, start, u64::from(header_len))
        .await?;
    let keys = repo.keys().clone();
    run_cpu(move || decode_header(&keys, &sealed, size, version, &name)).await?
}

/// Every pack in storage with its kind and size.
///
/// # Errors
/// Storage errors.
pub async fn list_packs(repo: &Repository) -> Result<HashMap<BlobId, (PackKind, u64)>> {
    let mut out = HashMap::new();
    for prefix in ["data/", "meta/"] {
        for b in repo.storage().list(prefix).await? {
            if let Some((id, kind)) = pack_name_id(&b.name) {
                out.insert(id, (kind, b.size));
            }
        }
    }
    Ok(out)
}

/// Where each blob of interest is used: snapshot ids and paths.
async fn users_of(
    repo: &Repository,
    snapshots: &[Snapshot],
    wanted: &HashSet<BlobId>,
) -> HashMap<BlobId, (Vec<String>, Vec<String>)> {
    let mut out: HashMap<BlobId, (Vec<String>, Vec<String>)> = HashMap::new();
    if wanted.is_empty() {
        return out;
    }
    for snap in snapshots {
        let mut stack = vec![(snap.manifest.tree, String::new())];
        while let Some((tree_id, path)) = stack.pop() {
            let mut note = |id: &BlobId, p: &str| {
                if wanted.contains(id) {
                    let e = out.entry(*id).or_default();
                    if !e.0.contains(&snap.id.to_hex()) {
                        e.0.push(snap.id.to_hex());
                    }
                    e.1.push(format!(
                        "{}:{}",
                        snap.id.short(),
                        if p.is_empty() { "/" } else { p }
                    ));
                }
            };
            note(&tree_id, &path);
            let Ok(tree) = repo.load_tree(&tree_id).await else {
                continue;
            };
            for node in tree.nodes {
                let p = format!("{path}/{}", String::from_utf8_lossy(&node.name));
                match &node.kind {
                    NodeKind::Dir(id) => stack.push((*id, p)),
                    NodeKind::File(content) => {
                        for id in &content.ids {
                            note(id, &p);
                        }
                        if content.level > 0 {
                            let mut ids = crate::restore::DataIds::new(content);
                            while let Ok(Some(id)) = ids.next(repo).await {
                                note(&id, &p);
                            }
                        }
                    }
                    NodeKind::Symlink(_) | NodeKind::Special(_) => {}
                }
            }
        }
    }
    for v in out.values_mut() {
        v.1.sort();
        v.1.dedup();
        v.1.truncate(100);
    }
    out
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
    let buffers = Arc::new(SegmentBuffers::default());
    // Problems of the pack checks, reported in pack order whatever order they came in.
    let mut pack_problems: Vec<Problem> = Vec::new();
    let absorb = |report: &mut VerifyReport,
                  pack_problems: &mut Vec<Problem>,
                  suspect_blobs: &mut Suspects,
                  outcome: PackOutcome| {
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
                            kind.storage_name(&id),
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
                            kind.storage_name(&id),
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
            while tasks.len() >= PACKS_READ_AT_ONCE {
                if let Some(done) = tasks.join_next().await {
                    let outcome = done.map_err(|e| Error::Internal(e.to_string()))?;
                    absorb(&mut report, &mut pack_problems, &mut suspect_blobs, outcome);
                }
            }
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
        absorb(&mut report, &mut pack_problems, &mut suspect_blobs, outcome);
    }
    report.blobs = repo.index().read().map(|i| i.blob_count()).unwrap_or(0);
    report.unindexed_packs = stored
        .iter()
        .filter(|(id, _)| !indexed.contains(id))
        .map(|(id, (k, _))| k.storage_name(id))
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

/// Every blob reachable from `snapshots` must be indexed, and so must the base of every
/// delta among them: the blobs that are not, with what is wrong.
async fn walk_snapshots(repo: Repository, snapshots: Vec<Snapshot>) -> Suspects {
    let mut suspect_blobs = Suspects::new();
    let mut seen_trees = HashSet::new();
    let mut references = References::default();
    let mut sizes = crate::file_size::FileSizes::default();
    for snap in &snapshots {
        let mut stack = vec![snap.manifest.tree];
        while let Some(tree_id) = stack.pop() {
            if !seen_trees.insert(tree_id) {
                continue;
            }
            let tree = match repo.load_tree(&tree_id).await {
                Ok(t) => t,
                Err(e) => {
                    suspect_blobs.entry(tree_id).or_insert((
                        ProblemKind::TreeUnreadable,
                        format!("tree {}", tree_id.short()),
                        e.to_string(),
                    ));
                    continue;
                }
            };
            for node in tree.nodes {
                match node.kind {
                    NodeKind::Dir(id) => stack.push(id),
                    NodeKind::File(content) => {
                        sizes.file(&repo, &content, node.size, tree_id).await;
                        check_content(&repo, &content, &mut references, &mut suspect_blobs).await
                    }
                    NodeKind::Symlink(_) | NodeKind::Special(_) => {}
                }
            }
        }
    }
    references.check(&repo, &mut suspect_blobs);
    for (id, problem) in sizes.finish(&repo) {
        suspect_blobs.entry(id).or_insert(problem);
    }
    for id in references.missing {
        suspect_blobs.entry(id).or_insert((
            ProblemKind::BlobMissing,
            format!("blob {}", id.short()),
            "referenced by a snapshot but in no index file".into(),
        ));
    }
    suspect_blobs
}

/// Blobs that snapshots' file contents reference (chunk lists and data), looked up in
/// the index in batches: one read each took a fifth of verify's CPU time (BENCHMARKS.md, "Batched index reads").
#[derive(Default)]
struct References {
    pending: Vec<BlobId>,
    /// Referenced, in no index file.
    missing: HashSet<BlobId>,
}

/// Ids per batched read. A batch blocks the walk's task for about a millisecond.
const REFERENCES_PER_READ: usize = 512;

impl References {
    fn add(&mut self, repo: &Repository, id: BlobId, suspect: &mut Suspects) {
        self.pending.push(id);
        if self.pending.len() >= REFERENCES_PER_READ {
            self.check(repo, suspect);
        }
    }

    /// Look the pending ids up: each must be indexed, and so must the base of a delta.
    fn check(&mut self, repo: &Repository, suspect: &mut Suspects) {
        let ids = std::mem::take(&mut self.pending);
        let mut deltas = Vec::new();
        for (id, found) in ids.iter().zip(repo.type_and_base_many(&ids)) {
            match found {
                None => {
                    self.missing.insert(*id);
                }
                // A delta is readable only with its base (page_deltas.rs).
                Some((_, Some(base))) => deltas.push((*id, base)),
                Some((_, None)) => {}
            }
        }
        let bases: Vec<BlobId> = deltas.iter().map(|(_, base)| *base).collect();
        for ((id, base), found) in deltas.iter().zip(repo.type_and_base_many(&bases)) {
            // SPEC.md, blob checks: a base is a Data blob stored in full (chains are one
            // step long), and nothing can decode a delta against anything else.
            let (kind, why) = match found {
                None => (ProblemKind::DeltaBaseMissing, "which no index file lists"),
                Some((_, Some(_))) => (
                    ProblemKind::DeltaBaseInvalid,
                    "which is itself a delta (chains are one step long)",
                ),
                Some((BlobType::Data, None)) => continue,
                Some((_, None)) => (ProblemKind::DeltaBaseInvalid, "which is not a Data blob"),
            };
            suspect.entry(*id).or_insert((
                kind,
                format!("data blob {}", id.short()),
                format!("it is stored as a delta against {}, {why}", base.short()),
            ));
        }
    }
}

/// Blobs with a problem: id -> (kind, object, detail).
type Suspects = HashMap<BlobId, (ProblemKind, String, String)>;

async fn check_content(
    repo: &Repository,
    content: &Content,
    references: &mut References,
    suspect: &mut Suspects,
) {
    for id in &content.ids {
        references.add(repo, *id, suspect);
    }
    if content.level > 0 {
        let mut ids = crate::restore::DataIds::new(content);
        loop {
            match ids.next(repo).await {
                Ok(Some(id)) => references.add(repo, id, suspect),
                Ok(None) => break,
                Err(e) => {
                    if let Some(first) = content.ids.first() {
                        suspect.entry(*first).or_insert((
                            ProblemKind::ChunkListUnreadable,
                            format!("chunk list {}", first.short()),
                            e.to_string(),
                        ));
                    }
                    break;
                }
            }
        }
    }
}

/// Snapshot ids and `<snapshot>:<path>` names affected by a problem.
type Affected = (Vec<String>, Vec<String>);

struct PackOutcome {
    read: bool,
    bytes: u64,
    blobs_checked: u64,
    bad_blobs: Vec<(BlobId, ProblemKind, String, String)>,
    problems: Vec<Problem>,
}

/// Packs checked at the same time.
const PACKS_READ_AT_ONCE: usize = 4;

/// One pack to check: its id, kind and size, whether to read it whole, and what one
/// index file says it holds.
struct PackCheck {
    id: BlobId,
    kind: PackKind,
    size: u64,
    full_read: bool,
    /// Whether this is the first index file listing the pack: only then is the pack
    /// counted as checked and read.
    first_listing: bool,
    entries: Vec<PackEntry>,
}

/// Bytes of a pack read at once by `verify --read-data` (more when one blob is larger).
const VERIFY_SEGMENT_BYTES: u64 = 2 << 20;
/// Most blobs in one segment. 2 MiB of page deltas are about 20,000 blobs; 512 keep a
/// segment's lists of entries and of their bases' locations small (under 128 KiB).
/// Pages come in stream order, so the bases of a segment's deltas still share runs.
const MAX_SEGMENT_ENTRIES: usize = 512;

/// Segment buffers of `verify --read-data`, handed from one segment read to the next.
/// A buffer allocated per segment and freed on another thread stayed resident in
/// glibc's per-thread arenas: with these buffers, 2 MiB segments and envelope buffers
/// of their declared size, verify of the 1.4 GiB comparison repository peaks at
/// 82-84 MiB instead of 112-129 (BENCHMARKS.md, "verify memory").
#[derive(Default)]
pub(crate) struct SegmentBuffers {
    spare: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl SegmentBuffers {
    /// At most one spare buffer per pack read at once.
    const KEEP: usize = PACKS_READ_AT_ONCE;

    /// Room for a segment and the blob that ends it (chunks are at most 2 MiB by
    /// default), so a buffer is allocated once and does not grow.
    const CAPACITY: u64 = 2 * VERIFY_SEGMENT_BYTES;

    fn take(&self) -> Vec<u8> {
        self.spare
            .lock()
            .ok()
            .and_then(|mut spare| spare.pop())
            .unwrap_or_else(|| Vec::with_capacity(Self::CAPACITY as usize))
    }

    /// Keep `buf` for the next segment, unless enough are kept or it grew for one huge
    /// blob.
    fn give_back(&self, buf: Vec<u8>) {
        if buf.capacity() as u64 > Self::CAPACITY {
            return;
        }
        if let Ok(mut spare) = self.spare.lock() {
            if spare.len() < Self::KEEP {
                spare.push(buf);
            }
        }
    }
}

/// What reading a whole pack found.
struct PackRead {
    hash: BlobId,
    bytes: u64,
    blobs_checked: u64,
    bad: Vec<(BlobId, String)>,
    /// The sealed header, cut from the last segment when it holds the trailer and the
    /// whole header (an error if the trailer is damaged); `None` if it did not.
    sealed_header: Option<Result<(Vec<u8>, u8)>>,
}

/// The sealed header at the end of `segment`, the last bytes of a pack of `size` bytes,
/// with the pack version: `None` if the segment is too short to hold the trailer and the
/// header it announces.
fn sealed_header_in_tail(segment: &[u8], size: u64, name: &str) -> Option<Result<(Vec<u8>, u8)>> {
    let trailer_at = segment.len().checked_sub(TRAILER_LEN)?;
    let (header_len, version) = match parse_trailer(&segment[trailer_at..], size, name) {
        Ok(found) => found,
        Err(e) => return Some(Err(e)),
    };
    let header_at = trailer_at.checked_sub(header_len as usize)?;
    Some(Ok((segment[header_at..trailer_at].to_vec(), version)))
}

/// The header of a pack just read by [`read_pack_in_segments`]: decoded from the bytes
/// already read when they hold it, otherwise read again with [`read_pack_header`].
///
/// # Errors
/// As [`read_pack_header`].
async fn header_after_read(
    repo: &Repository,
    id: &BlobId,
    kind: PackKind,
    size: u64,
    sealed_header: Option<Result<(Vec<u8>, u8)>>,
) -> Result<Vec<PackEntry>> {
    match sealed_header {
        None => read_pack_header(repo, id, kind, size).await,
        Some(Err(e)) => Err(e),
        Some(Ok((sealed, version))) => {
            let keys = repo.keys().clone();
            let name = kind.storage_name(id);
            run_cpu(move || decode_header(&keys, &sealed, size, version, &name)).await?
        }
    }
}

/// Read pack `name` (of `size` bytes) front to back in segments of about
/// [`VERIFY_SEGMENT_BYTES`], cut where an indexed blob starts, hashing every byte and
/// decoding every blob of `entries` (sorted here by offset): memory stays at one segment
/// per pack being read, not the whole pack.
async fn read_pack_in_segments(
    repo: &Repository,
    name: &str,
    size: u64,
    entries: &mut [PackEntry],
    progress: &VerifyProgress,
    segment_bytes: u64,
    buffers: &SegmentBuffers,
) -> Result<PackRead> {
    entries.sort_by_key(|e| e.offset);
    let sorted = &*entries;
    let mut out = PackRead {
        hash: BlobId([0; crate::id::ID_LEN]),
        bytes: 0,
        blobs_checked: 0,
        bad: Vec::new(),
        sealed_header: None,
    };
    let mut hasher = blake3::Hasher::new();
    let mut next_entry = 0usize;
    let mut at = 0u64;
    while at < size {
        // Extend the segment to the start of the first blob past the target length.
        let target = at.saturating_add(segment_bytes.max(1)).min(size);
        let mut end = target;
        let mut covered = at;
        let mut last = next_entry;
        while last < sorted.len() && u64::from(sorted[last].offset) < target {
            if last - next_entry == MAX_SEGMENT_ENTRIES {
                // Many small blobs (deltas): end the segment where this one starts.
                end = covered
                    .max(u64::from(sorted[last].offset))
                    .min(size)
                    .max(at + 1);
                break;
            }
            let blob_end = u64::from(sorted[last].offset) + u64::from(sorted[last].stored_len);
            end = end.max(blob_end.min(size));
            covered = covered.max(blob_end.min(size));
            last += 1;
        }
        let segment = repo
            .storage()
            .get_range_into(name, at, end - at, buffers.take())
            .await?;
        if segment.len() as u64 != end - at {
            return Err(Error::corrupt(
                name,
                format!(
                    "read {} bytes at {at}, expected {}",
                    segment.len(),
                    end - at
                ),
            ));
        }
        hasher.update(&segment);
        if end == size {
            out.sealed_header = sealed_header_in_tail(&segment, size, name);
        }
        progress
            .bytes
            .fetch_add(segment.len() as u64, Ordering::Relaxed);
        out.bytes += segment.len() as u64;
        let batch: Vec<PackEntry> = sorted[next_entry..last].to_vec();
        let keys = repo.keys().clone();
        let segment_start = at;
        let (deltas, batch): (Vec<PackEntry>, Vec<PackEntry>) =
            batch.into_iter().partition(|e| e.base.is_some());
        let (checked, mut bad, segment) = run_cpu(move || {
            let mut bad = Vec::new();
            for e in &batch {
                // Entries overlapping a blob of an earlier segment (a damaged index)
                // start before this one.
                let range = u64::from(e.offset)
                    .checked_sub(segment_start)
                    .map(|from| from as usize..(from + u64::from(e.stored_len)) as usize);
                let verdict = match range.and_then(|r| segment.get(r)) {
                    None => Err(format!("blob {} lies beyond the pack", e.id.short())),
                    Some(stored) => {
                        decode_blob(&keys, e.blob_type, &e.id, stored, u64::from(e.raw_len))
                            .map(|_| ())
                            .map_err(|err| err.to_string())
                    }
                };
                if let Err(detail) = verdict {
                    bad.push((e.id, detail));
                }
            }
            (batch.len() as u64, bad, segment)
        })
        .await?;
        // Deltas are decoded against their bases, read from elsewhere; they are sliced
        // from the segment, which goes back to the pool afterwards.
        let deltas_checked = deltas.len() as u64;
        let segment = Arc::new(segment);
        let in_segment = Segment {
            bytes: segment.clone(),
            start: segment_start,
        };
        bad.extend(check_deltas(repo, deltas, &in_segment, buffers).await?);
        drop(in_segment);
        if let Ok(segment) = Arc::try_unwrap(segment) {
            buffers.give_back(segment);
        }
        out.blobs_checked += checked + deltas_checked;
        out.bad.extend(bad);
        next_entry = last;
        at = end;
    }
    // Entries that start beyond the end of the pack.
    for e in &sorted[next_entry..] {
        out.blobs_checked += 1;
        out.bad
            .push((e.id, format!("blob {} lies beyond the pack", e.id.short())));
    }
    out.hash = BlobId(*hasher.finalize().as_bytes());
    Ok(out)
}

/// Bases read at once by [`check_deltas`]: bases stored this close to each other in a
/// pack are read in one request with the bytes between them.
const BASE_RUN_GAP: u64 = 64 << 10;
/// Largest read of [`check_deltas`] (more only for one larger base).
const BASE_RUN_BYTES: u64 = 1 << 20;

/// Bases stored near each other in one pack, with the deltas that need them.
struct BaseRun {
    pack_name: String,
    start: u64,
    end: u64,
    /// Each base's id and location, and the deltas against it.
    bases: Vec<(BlobId, BlobLocation, Vec<PackEntry>)>,
}

/// Bytes read from a pack, starting at pack offset `start`.
#[derive(Clone)]
pub(crate) struct Segment {
    pub(crate) bytes: Arc<Vec<u8>>,
    pub(crate) start: u64,
}

impl Segment {
    /// The stored bytes of `e`, if the segment holds them.
    fn stored(&self, e: &PackEntry) -> Option<&[u8]> {
        let from = usize::try_from(u64::from(e.offset).checked_sub(self.start)?).ok()?;
        self.bytes
            .get(from..from.checked_add(e.stored_len as usize)?)
    }
}

/// Decode each delta of `deltas` (entries with a base, stored in `segment`) against its
/// base; returns the ones that fail, with why. Bases are located, sorted by pack and
/// offset and read in runs into pooled buffers, so a pack of deltas costs a few reads,
/// not one per page (pages of one table were stored together); memory is one run at a
/// time and a location per delta.
///
/// # Errors
/// Only if a decoding task panicked.
pub(crate) async fn check_deltas(
    repo: &Repository,
    deltas: Vec<PackEntry>,
    segment: &Segment,
    buffers: &SegmentBuffers,
) -> Result<Vec<(BlobId, String)>> {
    let mut bad = Vec::new();
    let mut located: Vec<(BlobId, BlobLocation, PackEntry)> = Vec::with_capacity(deltas.len());
    for e in deltas {
        let Some(base) = e.base else {
            continue;
        };
        let problem = match repo.locate(&base) {
            Some(loc) if loc.base.is_none() && loc.blob_type == BlobType::Data => {
                located.push((base, loc, e));
                continue;
            }
            Some(_) => "its base is not a full data blob",
            None => "its base is in no index",
        };
        bad.push((e.id, format!("{}: {problem}", delta_object(&e, &base))));
    }
    located.sort_by_key(|(base, loc, _)| (loc.pack_id, loc.offset, *base));
    let mut runs: Vec<BaseRun> = Vec::new();
    for (base, loc, delta) in located {
        let (start, end) = (
            u64::from(loc.offset),
            u64::from(loc.offset) + u64::from(loc.stored_len),
        );
        let name = loc.pack_name();
        match runs.last_mut() {
            Some(run) if run.bases.last().is_some_and(|(b, _, _)| *b == base) => {
                if let Some((_, _, deltas)) = run.bases.last_mut() {
                    deltas.push(delta);
                }
            }
            Some(run)
                if run.pack_name == name
                    && start >= run.start
                    && start <= run.end + BASE_RUN_GAP
                    && end.max(run.end) - run.start <= BASE_RUN_BYTES =>
            {
                run.end = run.end.max(end);
                run.bases.push((base, loc, vec![delta]));
            }
            _ => runs.push(BaseRun {
                pack_name: name,
                start,
                end,
                bases: vec![(base, loc, vec![delta])],
            }),
        }
    }
    for run in runs {
        let len = run.end - run.start;
        let read = repo
            .storage()
            .get_range_into(&run.pack_name, run.start, len, buffers.take())
            .await;
        let bytes = match read {
            Ok(bytes) if bytes.len() as u64 == len => bytes,
            // Moved by a concurrent gc, or damaged: one base at a time, each read
            // reloading the index once if its pack is gone.
            _ => {
                for (base, _, deltas) in run.bases {
                    let plaintext = repo.read_delta_base(&deltas[0].id, &base).await;
                    bad.extend(check_against(
                        repo.keys(),
                        &base,
                        plaintext,
                        &deltas,
                        segment,
                    ));
                }
                continue;
            }
        };
        let (keys, segment) = (repo.keys().clone(), segment.clone());
        let (checked, bytes) = run_cpu(move || {
            let mut bad = Vec::new();
            for (base, loc, deltas) in run.bases {
                let at = (u64::from(loc.offset) - run.start) as usize;
                let stored = &bytes[at..at + loc.stored_len as usize];
                let plaintext =
                    decode_blob(&keys, BlobType::Data, &base, stored, loc.raw_len.into());
                bad.extend(check_against(&keys, &base, plaintext, &deltas, &segment));
            }
            (bad, bytes)
        })
        .await?;
        buffers.give_back(bytes);
        bad.extend(checked);
    }
    Ok(bad)
}

fn delta_object(e: &PackEntry, base: &BlobId) -> String {
    format!(
        "data blob {} (delta against {})",
        e.id.short(),
        base.short()
    )
}

/// Decode `deltas` (stored in `segment`) against base `base`: its plaintext, or why it
/// could not be read.
fn check_against(
    keys: &crate::crypto::Keys,
    base: &BlobId,
    plaintext: Result<Vec<u8>>,
    deltas: &[PackEntry],
    segment: &Segment,
) -> Vec<(BlobId, String)> {
    let plaintext = match plaintext {
        Ok(p) => p,
        Err(e) => {
            return deltas
                .iter()
                .map(|d| (d.id, format!("{}: its base: {e}", delta_object(d, base))))
                .collect()
        }
    };
    deltas
        .iter()
        .filter_map(|e| {
            let Some(stored) = segment.stored(e) else {
                return Some((e.id, format!("blob {} lies beyond the pack", e.id.short())));
            };
            let with = DeltaBase {
                id: base,
                plaintext: &plaintext,
            };
            decode_delta_blob(keys, &e.id, stored, u64::from(e.raw_len), with)
                .err()
                .map(|err| (e.id, err.to_string()))
        })
        .collect()
}

async fn check_pack(
    repo: &Repository,
    pack: PackCheck,
    progress: &VerifyProgress,
    buffers: &SegmentBuffers,
) -> PackOutcome {
    let PackCheck {
        id,
        kind,
        size,
        full_read,
        first_listing,
        entries: mut index_entries,
    } = pack;
    // A pack listed by several index files is checked once per file; counted once.
    let done = |progress: &VerifyProgress| {
        if first_listing {
            progress.packs_done.fetch_add(1, Ordering::Relaxed);
        }
    };
    let name = kind.storage_name(&id);
    let mut out = PackOutcome {
        read: false,
        bytes: 0,
        blobs_checked: 0,
        bad_blobs: Vec::new(),
        problems: Vec::new(),
    };
    let header = if full_read {
        match read_pack_in_segments(
            repo,
            &name,
            size,
            &mut index_entries,
            progress,
            VERIFY_SEGMENT_BYTES,
            buffers,
        )
        .await
        {
            Err(e) => {
                let detail = e.to_string();
                for e in &index_entries {
                    out.bad_blobs.push((
                        e.id,
                        ProblemKind::PackUnreadable,
                        name.clone(),
                        detail.clone(),
                    ));
                }
                done(progress);
                return out;
            }
            Ok(read) => {
                out.read = first_listing;
                out.bytes = read.bytes;
                out.blobs_checked = read.blobs_checked;
                if read.hash != id {
                    out.problems.push(Problem {
                        kind: ProblemKind::PackHashMismatch,
                        object: name.clone(),
                        detail: "content does not hash to the pack's name".into(),
                        snapshots: vec![],
                        files: vec![],
                    });
                }
                for (blob, detail) in read.bad {
                    out.bad_blobs
                        .push((blob, ProblemKind::BlobDamaged, name.clone(), detail));
                }
                header_after_read(repo, &id, kind, size, read.sealed_header).await
            }
        }
    } else {
        read_pack_header(repo, &id, kind, size).await
    };
    done(progress);
    match header {
        Err(e) => out.problems.push(Problem {
            kind: ProblemKind::PackHeaderDamaged,
            object: name.clone(),
            detail: e.to_string(),
            snapshots: vec![],
            files: vec![],
        }),
        Ok(header) => {
            let mut header = header;
            header.sort_unstable_by_key(|h| h.id);
            for e in &index_entries {
                let found = header
                    .binary_search_by_key(&e.id, |h| h.id)
                    .ok()
                    .and_then(|at| header.get(at));
                match found {
                    Some(h)
                        if h.offset == e.offset
                            && h.stored_len == e.stored_len
                            && h.raw_len == e.raw_len
                            && h.blob_type == e.blob_type => {}
                    Some(_) => out.bad_blobs.push((
                        e.id,
                        ProblemKind::IndexHeaderMismatch,
                        name.clone(),
                        format!(
                            "index entry of blob {} disagrees with the pack header",
                            e.id.short()
                        ),
                    )),
                    None => out.bad_blobs.push((
                        e.id,
                        ProblemKind::IndexHeaderMismatch,
                        name.clone(),
                        format!(
                            "index lists blob {} but the pack header does not",
                            e.id.short()
                        ),
                    )),
                }
            }
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::key::KdfParams;
    use crate::saver::BlobSaver;
    use crate::storage::{MemoryStorage, Storage};
    use crate::InitOptions;

    /// A new repository in memory, opened.
    pub(crate) async fn memory_repo() -> (MemoryStorage, Repository) {
        let storage = MemoryStorage::new();
        let options = InitOptions::default().with_kdf(KdfParams::CHEAPEST);
        Repository::init(Arc::new(storage.clone()), b"pw", options)
            .await
            .unwrap();
        let repo = Repository::open(Arc::new(storage.clone()), b"pw")
            .await
            .unwrap();
        (storage, repo)
    }

    /// [`read_pack_in_segments`] of pack `name`, given a copy of `entries` to sort.
    async fn read_in_segments(
        repo: &Repository,
        name: &str,
        size: u64,
        entries: &[PackEntry],
        segment: u64,
        buffers: &SegmentBuffers,
    ) -> PackRead {
        let progress = VerifyProgress::default();
        let mut entries = entries.to_vec();
        read_pack_in_segments(repo, name, size, &mut entries, &progress, segment, buffers)
            .await
            .unwrap()
    }

    /// Saves `pages` through one backup session: in full, or as deltas of `bases`.
    pub(crate) async fn save_pages(
        repo: &Repository,
        pages: Vec<Vec<u8>>,
        bases: Option<Vec<Vec<u8>>>,
    ) {
        let (saver, uploader) = BlobSaver::start(
            repo.storage().clone(),
            repo.keys().clone(),
            repo.index().clone(),
            repo.config().pack_size,
            repo.config().compression_level,
            1,
        );
        let saving = saver.clone();
        tokio::task::spawn_blocking(move || {
            for (i, page) in pages.iter().enumerate() {
                let id = saving.keys().content_id(page);
                match &bases {
                    None => saving.save_with_id(BlobType::Data, id, page).unwrap(),
                    Some(bases) => {
                        let base_id = saving.keys().content_id(&bases[i]);
                        let base = DeltaBase {
                            id: &base_id,
                            plaintext: &bases[i],
                        };
                        saving.save_data_with_base(id, page, base).unwrap();
                    }
                }
            }
            saving.close().unwrap();
        })
        .await
        .unwrap();
        drop(saver);
        uploader.finish().await.unwrap();
    }

    /// Deltas are checked against their bases, read in runs from another pack; a
    /// damaged base fails exactly the deltas against it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deltas_are_checked_against_bases_read_in_runs() {
        let (storage, repo) = memory_repo().await;
        // More deltas than a segment takes (MAX_SEGMENT_ENTRIES), so segments are also
        // cut by count.
        let bases: Vec<Vec<u8>> = (0..600)
            .map(|i| crate::fuzzing::pseudo_random_bytes(2 * i + 1, 8192))
            .collect();
        save_pages(&repo, bases.clone(), None).await;
        let pages: Vec<Vec<u8>> = bases
            .iter()
            .enumerate()
            .map(|(i, base)| {
                let mut page = base.clone();
                page[100 + i..200 + i].fill(i as u8);
                page
            })
            .collect();
        save_pages(&repo, pages, Some(bases.clone())).await;

        let mut delta_pack = None;
        let mut base_pack = None;
        for (id, (kind, size)) in list_packs(&repo).await.unwrap() {
            let entries = read_pack_header(&repo, &id, kind, size).await.unwrap();
            if kind == PackKind::Data && entries.iter().all(|e| e.base.is_some()) {
                delta_pack = Some((id, size, entries));
            } else if kind == PackKind::Data {
                base_pack = Some((id, size, entries));
            }
        }
        let (id, size, entries) = delta_pack.expect("a pack of deltas");
        assert_eq!(entries.len(), 600);
        let name = PackKind::Data.storage_name(&id);
        let buffers = SegmentBuffers::default();
        for segment in [9000, 16 << 20] {
            let read = read_in_segments(&repo, &name, size, &entries, segment, &buffers).await;
            assert_eq!(read.hash, id, "segment {segment}");
            assert_eq!(
                (read.blobs_checked, read.bad.len()),
                (600, 0),
                "{:?}",
                read.bad
            );
        }

        // Damage base 7 in its pack: the delta against it, and only that one, fails.
        let (base_pack_id, _, base_entries) = base_pack.expect("a pack of bases");
        let base_name = PackKind::Data.storage_name(&base_pack_id);
        let damaged_base = repo.keys().content_id(&bases[7]);
        let at = base_entries
            .iter()
            .find(|e| e.id == damaged_base)
            .unwrap()
            .offset;
        let mut bytes = storage.get(&base_name).await.unwrap();
        bytes[at as usize + 60] ^= 1;
        storage.put(&base_name, &bytes).await.unwrap();
        let read = read_in_segments(&repo, &name, size, &entries, 9000, &buffers).await;
        let against_7 = entries
            .iter()
            .find(|e| e.base == Some(damaged_base))
            .unwrap();
        assert_eq!(read.bad.len(), 1, "{:?}", read.bad);
        assert_eq!(read.bad[0].0, against_7.id);
        assert!(read.bad[0].1.contains("its base"), "{}", read.bad[0].1);
    }

    /// The snapshot walk's index checks name a delta whose base is missing, or is itself
    /// a delta, and pass one against a full Data blob.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn referenced_deltas_need_a_full_data_blob_as_base() {
        let (_storage, repo) = memory_repo().await;
        let page = |seed| crate::fuzzing::pseudo_random_bytes(seed, 8192);
        let edit = |mut p: Vec<u8>, at: usize| {
            p[at..at + 64].fill(7);
            p
        };
        let (a, b, c) = (page(1), edit(page(1), 100), edit(edit(page(1), 100), 3000));
        let lost_base = page(2);
        let d = edit(page(2), 500);
        save_pages(&repo, vec![a.clone()], None).await;
        // b against a (good), c against b (a chain: no writer makes one), d against a
        // base that was never saved.
        save_pages(&repo, vec![b.clone()], Some(vec![a.clone()])).await;
        save_pages(
            &repo,
            vec![c.clone(), d.clone()],
            Some(vec![b.clone(), lost_base]),
        )
        .await;

        let id = |p: &[u8]| repo.keys().content_id(p);
        let mut references = References::default();
        let mut suspect = Suspects::new();
        for p in [&a, &b, &c, &d] {
            references.add(&repo, id(p), &mut suspect);
        }
        references.check(&repo, &mut suspect);
        assert!(references.missing.is_empty());
        let kinds: HashMap<BlobId, ProblemKind> = suspect
            .iter()
            .map(|(id, (kind, ..))| (*id, *kind))
            .collect();
        assert_eq!(kinds.len(), 2, "{suspect:?}");
        assert_eq!(kinds[&id(&c)], "delta_base_invalid");
        assert!(suspect[&id(&c)].2.contains("itself a delta"), "{suspect:?}");
        assert_eq!(kinds[&id(&d)], "delta_base_missing");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pack_read_in_segments_checks_every_blob_and_hashes_every_byte() {
        let (storage, repo) = memory_repo().await;
        // Sizes from 1 byte to 40 KiB, content that does not compress away.
        let blobs = (0..40u32)
            .map(|n| {
                let len = 1 + (n as usize * 1021) % (40 << 10);
                (0..len)
                    .map(|i| (i as u32).wrapping_mul(2_654_435_761).wrapping_add(n) as u8)
                    .collect()
            })
            .collect();
        save_pages(&repo, blobs, None).await;
        let packs = list_packs(&repo).await.unwrap();
        let (&id, &(kind, size)) = packs
            .iter()
            .find(|(_, (k, _))| *k == PackKind::Data)
            .unwrap();
        let name = kind.storage_name(&id);
        let entries = read_pack_header(&repo, &id, kind, size).await.unwrap();
        assert_eq!(entries.len(), 40);
        // Shared by every read below, so buffers come back holding other bytes.
        let buffers = SegmentBuffers::default();
        // Segments smaller than one blob, about one blob, and the whole pack.
        for segment in [1, 700, 5000, 64 << 10, 16 << 20] {
            let read = read_in_segments(&repo, &name, size, &entries, segment, &buffers).await;
            assert_eq!(read.hash, id, "segment {segment}");
            assert_eq!(read.bytes, size);
            assert_eq!(read.blobs_checked, 40);
            assert!(read.bad.is_empty(), "segment {segment}: {:?}", read.bad);
            // The header comes from the last segment when it holds it (not with 1-byte
            // segments), and equals the one read on its own.
            if segment == 1 {
                assert!(read.sealed_header.is_none());
            }
            if segment >= 64 << 10 {
                assert!(
                    matches!(read.sealed_header, Some(Ok(_))),
                    "segment {segment}"
                );
            }
            let header = header_after_read(&repo, &id, kind, size, read.sealed_header)
                .await
                .unwrap();
            assert_eq!(header, entries, "segment {segment}");
        }
        // One damaged byte: exactly its blob is reported, and the pack hash differs.
        let victim = entries[17];
        storage.corrupt_byte(
            &name,
            victim.offset as usize + victim.stored_len as usize / 2,
        );
        for segment in [1, 5000, 16 << 20] {
            let read = read_in_segments(&repo, &name, size, &entries, segment, &buffers).await;
            assert_ne!(read.hash, id);
            assert_eq!(read.bad.len(), 1, "segment {segment}");
            assert_eq!(read.bad[0].0, victim.id);
        }
        // A damaged header byte, then a damaged trailer: the header taken from the last
        // segment is refused, as the one read on its own is.
        let header_byte = size as usize - TRAILER_LEN - 10;
        let trailer_byte = size as usize - 1;
        for (what, at) in [("header", header_byte), ("trailer", trailer_byte)] {
            storage.corrupt_byte(&name, at);
            for segment in [1, 16 << 20] {
                let read = read_in_segments(&repo, &name, size, &entries, segment, &buffers).await;
                let header = header_after_read(&repo, &id, kind, size, read.sealed_header).await;
                assert!(header.is_err(), "damaged {what}, segment {segment}");
            }
        }
    }
}
