//! Repair (`dprepo repair index|packs|snapshots`): rebuild the index from pack headers;
//! take damaged blobs out of the index, keeping the intact blobs of their packs; write
//! repaired copies of snapshots that reference missing or damaged data.
//!
//! Every repair holds the gc lease while it runs (SPEC.md section 18.1), so no gc
//! deletes packs or rewrites index files beside it. Only bytes that were read and do not
//! decode count as damage: a storage error stops a repair before it deletes anything.

use crate::blob::{authenticate_delta_blob, decode_blob, BlobType};
use crate::content::Content;
use crate::error::{Error, Result};
use crate::gc::{GcOptions, LeaseGuard};
use crate::id::BlobId;
use crate::index::{IndexFile, IndexPack};
use crate::pack::{PackBuilder, PackEntry, PackKind};
use crate::repo::{run_cpu, Repository, INDEX_DIR, SESSIONS_DIR};
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

/// What `repair packs` should do.
#[derive(Debug, Clone, Default)]
pub struct RepairPacksOptions {
    /// Packs to check: storage names (`data/ab/ab12…`), ids or unique id prefixes.
    /// Empty: every pack an index file names.
    pub packs: Vec<String>,
    /// Report what would be done; write and delete nothing.
    pub dry_run: bool,
}

impl RepairPacksOptions {
    /// Set [`RepairPacksOptions::packs`].
    pub fn with_packs(mut self, packs: Vec<String>) -> Self {
        self.packs = packs;
        self
    }
    /// Set [`RepairPacksOptions::dry_run`].
    pub fn with_dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }
}

/// What `repair packs` did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepairPacksReport {
    /// Packs read.
    pub packs_checked: usize,
    /// Bytes read while checking them.
    pub bytes_read: u64,
    /// Blobs decoded (a delta: authenticated) while checking them.
    pub blobs_checked: u64,
    /// Packs with a damaged header or damaged blobs: what was kept of each and what
    /// was left out. They are deleted once their intact blobs are copied.
    pub damaged: Vec<DamagedPack>,
    /// New packs holding the intact blobs of the damaged ones.
    pub packs_written: Vec<String>,
    /// Index files replaced by files that no longer name the damaged packs.
    pub index_files_rewritten: usize,
    /// Problems seen that other commands repair (index files to rebuild).
    pub notes: Vec<String>,
    /// Writer sessions in the repository when the repair ended: backups that ran
    /// beside it, which may have referenced a blob found damaged before it was dropped.
    pub writer_sessions: Vec<String>,
}

/// One damaged pack.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DamagedPack {
    /// Its storage name.
    pub pack: String,
    /// Why its header cannot be read (its blobs were then found through the index).
    pub header: Option<String>,
    /// Blobs that decode, copied into new packs.
    pub blobs_kept: usize,
    /// Blobs that do not decode, left out of the index.
    pub dropped: Vec<DroppedBlob>,
}

/// A blob `repair packs` left out.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DroppedBlob {
    /// Its id (hex).
    pub id: String,
    /// Its type.
    #[serde(rename = "type")]
    pub blob_type: BlobType,
    /// Why it does not decode.
    pub reason: String,
}

/// Find packs whose header or blobs are damaged and take the damage out of the index:
/// the blobs that still decode are copied into new packs (indexed first), the index
/// files naming a damaged pack are replaced by files without it, and the damaged pack
/// is deleted. Blobs that do not decode are then in no index file, so the next backup
/// stores their chunks again instead of deduplicating against them, and `repair
/// snapshots` finds the snapshots that used them. Reads every pack the index names, or
/// those in `options.packs`; a delta blob is authenticated, not decoded (its base may
/// be the damaged one).
///
/// Holds the gc lease throughout (a dry run, which only reads, does not) and follows
/// SPEC.md section 18.1, R-4: only bytes that were read and do not decode count as
/// damage; a storage error stops the repair before anything is deleted.
///
/// # Errors
/// [`Error::Busy`] while a gc (or another repair) holds the lease;
/// [`Error::InvalidArgument`] for a pack named in `options.packs` that is unknown,
/// ambiguous or in no index file; [`Error::UnsupportedVersion`] for a pack of a newer
/// format; storage errors.
pub async fn repair_packs(
    repo: &Repository,
    options: &RepairPacksOptions,
    progress: Arc<VerifyProgress>,
) -> Result<RepairPacksReport> {
    if options.dry_run {
        // Reads only: no need to keep gc out.
        return Ok(plan_packs(repo, options, progress).await?.report);
    }
    let lease = LeaseGuard::acquire(repo, &GcOptions::default(), "repair packs").await?;
    let result = async {
        let plan = plan_packs(repo, options, progress).await?;
        apply_packs(repo, plan).await
    }
    .await;
    lease.release().await;
    result
}

/// What `repair packs` would do, from [`plan_packs`]: the report so far (packs read,
/// damaged ones found) and what `apply_packs` needs to carry it out.
#[derive(Debug)]
pub struct RepairPacksPlan {
    /// The damaged packs found, with what would be kept and dropped.
    pub report: RepairPacksReport,
    salvage: Vec<Salvage>,
    /// Index files naming each pack.
    named_by: HashMap<BlobId, Vec<String>>,
}

/// A damaged pack found by [`plan_packs`]: where it is, the entries its blobs are
/// read by, and the report line.
#[derive(Debug)]
struct Salvage {
    id: BlobId,
    kind: PackKind,
    size: u64,
    entries: Vec<PackEntry>,
    report: DamagedPack,
}

/// Find the damaged packs (`options.packs`, or every indexed one) and what of each
/// decodes; reads only. [`repair_packs`] runs it under the lease, then `apply_packs`.
///
/// # Errors
/// As [`repair_packs`], but for [`Error::Busy`].
pub async fn plan_packs(
    repo: &Repository,
    options: &RepairPacksOptions,
    progress: Arc<VerifyProgress>,
) -> Result<RepairPacksPlan> {
    let mut report = RepairPacksReport::default();
    repo.load_index().await?;
    // What every index file says about each pack, and which files name it.
    let index_names: Vec<String> = repo
        .storage()
        .list(INDEX_DIR)
        .await?
        .into_iter()
        .map(|b| b.name)
        .collect();
    let mut indexed: HashMap<BlobId, Vec<PackEntry>> = HashMap::new();
    let mut named_by: HashMap<BlobId, Vec<String>> = HashMap::new();
    for name in &index_names {
        let file = match read_index_file(repo, name).await {
            Ok(file) => file,
            Err(e @ (Error::Corrupt { .. } | Error::UnsupportedVersion { .. })) => {
                report.notes.push(format!(
                    "{e}: its packs are not checked; run `dprepo repair index`"
                ));
                continue;
            }
            Err(e) => return Err(e),
        };
        for p in file.packs {
            named_by.entry(p.id).or_default().push(name.clone());
            indexed.entry(p.id).or_default().extend(p.entries);
        }
    }
    let stored = list_packs(repo).await?;
    let mut selected: Vec<(BlobId, PackKind, u64)> = Vec::new();
    if options.packs.is_empty() {
        selected.extend(
            indexed
                .keys()
                .filter_map(|id| stored.get(id).map(|(kind, size)| (*id, *kind, *size))),
        );
    } else {
        for given in &options.packs {
            let id = select_pack(given, &stored)?;
            if !indexed.contains_key(&id) {
                return Err(Error::InvalidArgument(format!(
                    "pack {given} is in no index file: run `dprepo repair index` first (repair packs only repairs indexed packs; gc deletes packs no index file names)"
                )));
            }
            let (kind, size) = stored[&id];
            selected.push((id, kind, size));
        }
    }
    selected.sort_by_key(|p| p.0);
    selected.dedup_by_key(|p| p.0);
    progress
        .packs_total
        .store(selected.len() as u64, Ordering::Relaxed);

    let mut damaged: Vec<Salvage> = Vec::new();
    for (id, kind, size) in selected {
        let name = kind.storage_name(&id);
        let mut index_entries = indexed.remove(&id).unwrap_or_default();
        index_entries.sort_by_key(|e| (e.offset, e.id));
        index_entries.dedup();
        let (entries, header) = match read_pack_header(repo, &id, kind, size).await {
            Ok(mut header) => {
                header.sort_by_key(|e| (e.offset, e.id));
                if header != index_entries {
                    report.notes.push(format!(
                        "the index entries of {name} disagree with its header: run `dprepo repair index`"
                    ));
                }
                (header, None)
            }
            Err(e @ Error::Corrupt { .. }) => (index_entries, Some(e.to_string())),
            Err(Error::NotFound { .. }) => {
                report.notes.push(format!(
                    "{name} was deleted while this repair ran: run `dprepo repair index`"
                ));
                continue;
            }
            Err(e) => return Err(e),
        };
        let checked = check_blobs(repo, &name, size, &entries, false).await?;
        report.packs_checked += 1;
        report.bytes_read += checked.bytes;
        report.blobs_checked += (checked.good.len() + checked.bad.len()) as u64;
        progress.packs_done.fetch_add(1, Ordering::Relaxed);
        progress.bytes.fetch_add(checked.bytes, Ordering::Relaxed);
        if header.is_none() && checked.bad.is_empty() {
            continue;
        }
        damaged.push(Salvage {
            id,
            kind,
            size,
            entries,
            report: DamagedPack {
                pack: name,
                header,
                blobs_kept: checked.good.len(),
                dropped: dropped_blobs(checked.bad),
            },
        });
    }
    report.damaged = damaged.iter().map(|d| d.report.clone()).collect();
    Ok(RepairPacksPlan {
        report,
        salvage: damaged,
        named_by,
    })
}

/// Carry out `plan` (SPEC.md section 18.1, R-4); the caller holds the gc lease and
/// made the plan under it.
///
/// # Errors
/// Storage errors; before the old index files are deleted, nothing but new packs and
/// index files has been written.
async fn apply_packs(repo: &Repository, plan: RepairPacksPlan) -> Result<RepairPacksReport> {
    let RepairPacksPlan {
        mut report,
        salvage: mut damaged,
        named_by,
    } = plan;
    if damaged.is_empty() {
        return Ok(report);
    }

    // Copy what decodes into new packs (read and checked again: these are the bytes
    // that are copied), then index them (W1).
    let pack_size = repo.config().pack_size as usize;
    let mut builders: HashMap<PackKind, PackBuilder> = HashMap::new();
    let mut new_index = IndexFile::default();
    for salvage in &mut damaged {
        let name = salvage.kind.storage_name(&salvage.id);
        let checked = check_blobs(repo, &name, salvage.size, &salvage.entries, true).await?;
        salvage.report.blobs_kept = checked.good.len();
        salvage.report.dropped = dropped_blobs(checked.bad);
        for (e, stored) in checked.good {
            let builder = builders
                .entry(salvage.kind)
                .or_insert_with(|| PackBuilder::new(salvage.kind));
            builder.add_entry(e.blob_type, e.id, &stored, e.raw_len, e.base);
            if builder.len() >= pack_size {
                let full = std::mem::replace(builder, PackBuilder::new(salvage.kind));
                let pack = upload_pack(repo, full).await?;
                report.packs_written.push(pack.kind.storage_name(&pack.id));
                new_index.packs.push(pack);
            }
        }
    }
    for (_, builder) in builders {
        if !builder.is_empty() {
            let pack = upload_pack(repo, builder).await?;
            report.packs_written.push(pack.kind.storage_name(&pack.id));
            new_index.packs.push(pack);
        }
    }
    if !new_index.packs.is_empty() {
        write_index(repo, new_index).await?;
    }

    // Replace the index files naming a damaged pack by files without it (as gc's G8),
    // then delete the damaged packs.
    let doomed: HashSet<BlobId> = damaged.iter().map(|d| d.id).collect();
    let mut rewrite: Vec<String> = damaged
        .iter()
        .flat_map(|d| named_by.get(&d.id).cloned().unwrap_or_default())
        .collect();
    rewrite.sort();
    rewrite.dedup();
    let mut out = IndexFile::default();
    let mut out_entries = 0usize;
    let mut written_packs: HashSet<BlobId> = HashSet::new();
    for name in &rewrite {
        for p in read_index_file(repo, name).await?.packs {
            if doomed.contains(&p.id) || !written_packs.insert(p.id) {
                continue;
            }
            out_entries += p.entries.len();
            out.packs.push(p);
            if out_entries >= crate::gc::MAX_ENTRIES_PER_INDEX_FILE {
                write_index(repo, std::mem::take(&mut out)).await?;
                out_entries = 0;
            }
        }
    }
    if !out.packs.is_empty() {
        write_index(repo, out).await?;
    }
    for name in &rewrite {
        repo.storage().delete(name).await?;
        report.index_files_rewritten += 1;
    }
    for d in &damaged {
        repo.storage().delete(&d.kind.storage_name(&d.id)).await?;
    }
    report.damaged = damaged.into_iter().map(|d| d.report).collect();
    repo.load_index().await?;
    report.writer_sessions = repo
        .storage()
        .list(SESSIONS_DIR)
        .await?
        .into_iter()
        .map(|b| b.name)
        .collect();
    Ok(report)
}

/// The pack `given` names: a storage name, an id or a unique id prefix.
///
/// # Errors
/// [`Error::InvalidArgument`] if none or several packs match.
fn select_pack(given: &str, stored: &HashMap<BlobId, (PackKind, u64)>) -> Result<BlobId> {
    let hex = given
        .rsplit('/')
        .next()
        .unwrap_or(given)
        .to_ascii_lowercase();
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::InvalidArgument(format!(
            "pack {given}: expected a pack name (data/ab/ab12...), id or id prefix"
        )));
    }
    let matches: Vec<&BlobId> = stored
        .keys()
        .filter(|id| id.to_hex().starts_with(&hex))
        .collect();
    match matches.as_slice() {
        [id] => Ok(**id),
        [] => Err(Error::InvalidArgument(format!(
            "pack {given}: no such pack in storage"
        ))),
        many => Err(Error::InvalidArgument(format!(
            "pack {given}: matches {} packs; give more digits",
            many.len()
        ))),
    }
}

fn dropped_blobs(bad: Vec<(PackEntry, String)>) -> Vec<DroppedBlob> {
    bad.into_iter()
        .map(|(e, reason)| DroppedBlob {
            id: e.id.to_hex(),
            blob_type: e.blob_type,
            reason,
        })
        .collect()
}

async fn read_index_file(repo: &Repository, name: &str) -> Result<IndexFile> {
    let bytes = repo.storage().get(name).await?;
    let keys = repo.keys().clone();
    let name = name.to_string();
    run_cpu(move || IndexFile::decode(&keys, &bytes, &name)).await?
}

async fn upload_pack(repo: &Repository, builder: PackBuilder) -> Result<IndexPack> {
    let keys = repo.keys().clone();
    let pack = run_cpu(move || builder.finish(&keys)).await?;
    repo.storage()
        .put(&pack.kind.storage_name(&pack.id), &pack.bytes)
        .await?;
    Ok(IndexPack {
        id: pack.id,
        kind: pack.kind,
        entries: pack.entries,
    })
}

/// Bytes of a pack read at once by `repair packs` (more when one blob is larger).
const REPAIR_SEGMENT_BYTES: u64 = 4 << 20;

/// The blobs of one pack, checked.
struct CheckedBlobs {
    /// Those that decode, with their stored bytes when asked for.
    good: Vec<(PackEntry, Vec<u8>)>,
    /// Those that do not, with why.
    bad: Vec<(PackEntry, String)>,
    /// Bytes read.
    bytes: u64,
}

/// Read the blobs `entries` name in pack `name` and check each: a full blob is decoded
/// and hashed, a delta authenticated (its base may be the damaged blob). A range past
/// the end of the pack (of `size` bytes) is damage; any other storage error is returned. With `keep`,
/// the stored bytes of the good blobs are returned (a pack's worth at most).
///
/// # Errors
/// Storage errors other than a short pack.
async fn check_blobs(
    repo: &Repository,
    name: &str,
    size: u64,
    entries: &[PackEntry],
    keep: bool,
) -> Result<CheckedBlobs> {
    let mut out = CheckedBlobs {
        good: Vec::new(),
        bad: Vec::new(),
        bytes: 0,
    };
    let end_of = |e: &PackEntry| u64::from(e.offset) + u64::from(e.stored_len);
    // Entries from a damaged index may point anywhere: nothing past the end is read.
    let (mut sorted, beyond): (Vec<PackEntry>, Vec<PackEntry>) =
        entries.iter().partition(|e| end_of(e) <= size);
    for e in beyond {
        let why = format!("blob {} lies beyond the end of the pack", e.id.short());
        out.bad.push((e, why));
    }
    sorted.sort_by_key(|e| (e.offset, e.id));
    sorted.dedup();
    let mut next = 0;
    while next < sorted.len() {
        let start = u64::from(sorted[next].offset);
        let mut end = end_of(&sorted[next]);
        let mut last = next + 1;
        while last < sorted.len() && end_of(&sorted[last]) <= start + REPAIR_SEGMENT_BYTES {
            end = end.max(end_of(&sorted[last]));
            last += 1;
        }
        let batch = &sorted[next..last];
        next = last;
        let segment = match repo.storage().get_range(name, start, end - start).await {
            Ok(bytes) if bytes.len() as u64 == end - start => Some(bytes),
            Ok(_) | Err(Error::Corrupt { .. }) => None,
            Err(e) => return Err(e),
        };
        // Each blob's stored bytes, or why they cannot be read.
        let mut pieces: Vec<(PackEntry, std::result::Result<Vec<u8>, String>)> = Vec::new();
        match segment {
            Some(bytes) => {
                out.bytes += bytes.len() as u64;
                for e in batch {
                    let from = (u64::from(e.offset) - start) as usize;
                    let piece = bytes[from..from + e.stored_len as usize].to_vec();
                    pieces.push((*e, Ok(piece)));
                }
            }
            // The pack is shorter than the segment: one blob at a time.
            None => {
                for e in batch {
                    let len = u64::from(e.stored_len);
                    let piece = match repo.storage().get_range(name, e.offset.into(), len).await {
                        Ok(bytes) if bytes.len() as u64 == len => {
                            out.bytes += len;
                            Ok(bytes)
                        }
                        Ok(_) | Err(Error::Corrupt { .. }) => Err(format!(
                            "blob {} lies beyond the end of the pack",
                            e.id.short()
                        )),
                        Err(e) => return Err(e),
                    };
                    pieces.push((*e, piece));
                }
            }
        }
        let keys = repo.keys().clone();
        let checked = run_cpu(move || {
            pieces
                .into_iter()
                .map(|(e, piece)| {
                    let verdict = piece.and_then(|stored| {
                        let raw_len = u64::from(e.raw_len);
                        match &e.base {
                            None => {
                                decode_blob(&keys, e.blob_type, &e.id, &stored, raw_len).map(|_| ())
                            }
                            Some(base) => {
                                authenticate_delta_blob(&keys, &e.id, base, &stored, raw_len)
                            }
                        }
                        .map(|()| stored)
                        .map_err(|err| err.to_string())
                    });
                    (e, verdict)
                })
                .collect::<Vec<_>>()
        })
        .await?;
        for (e, verdict) in checked {
            match verdict {
                Ok(stored) => out.good.push((e, if keep { stored } else { Vec::new() })),
                Err(why) => out.bad.push((e, why)),
            }
        }
    }
    Ok(out)
}

/// Whether `e`, met reading a blob or tree, proves it lost or damaged (rather than a
/// storage fault or a newer format, which say nothing about the data).
fn is_damage(e: &Error) -> bool {
    matches!(e, Error::Corrupt { .. } | Error::NotFound { .. })
}

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
                .put(
                    &format!("{}{}", crate::repo::SNAPSHOTS_DIR, id.to_hex()),
                    &bytes,
                )
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
        let mut ids = crate::restore::DataIds::new(content);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::tests::{memory_repo, save_pages};

    /// A delta is checked without its base: when its base is the damaged blob, the
    /// delta itself is intact and stays (a backup no longer offers it, its base being
    /// unindexed); a damaged delta is dropped like any blob.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deltas_are_judged_by_their_own_bytes() {
        let (storage, repo) = memory_repo().await;
        let page = |seed| crate::fuzzing::pseudo_random_bytes(seed, 8192);
        let bases = vec![page(1), page(2)];
        let edited: Vec<Vec<u8>> = bases
            .iter()
            .map(|b| {
                let mut p = b.clone();
                p[300..340].fill(9);
                p
            })
            .collect();
        save_pages(&repo, bases.clone(), None).await;
        save_pages(&repo, edited.clone(), Some(bases.clone())).await;
        let id = |p: &[u8]| repo.keys().content_id(p);
        let (base_loc, delta_loc) = (
            repo.locate(&id(&bases[0])).unwrap(),
            repo.locate(&id(&edited[1])).unwrap(),
        );
        assert_ne!(base_loc.pack_id, delta_loc.pack_id);
        assert!(delta_loc.base.is_some());
        // Damage base 0, and delta 1.
        storage.corrupt_byte(&base_loc.pack_name(), base_loc.offset as usize + 50);
        storage.corrupt_byte(&delta_loc.pack_name(), delta_loc.offset as usize + 30);

        let report = repair_packs(&repo, &RepairPacksOptions::default(), Arc::default())
            .await
            .unwrap();
        let mut dropped: Vec<String> = report
            .damaged
            .iter()
            .flat_map(|d| d.dropped.iter().map(|b| b.id.clone()))
            .collect();
        dropped.sort();
        let mut expected = vec![id(&bases[0]).to_hex(), id(&edited[1]).to_hex()];
        expected.sort();
        assert_eq!(dropped, expected, "{report:?}");
        assert_eq!(report.damaged.len(), 2);
        // Kept: base 1 (moved), and delta 0 whose own bytes are intact.
        assert!(
            repo.read_blob(&id(&bases[1]), BlobType::Data)
                .await
                .unwrap()
                == bases[1]
        );
        assert!(repo.locate(&id(&edited[0])).is_some());
        let usable = repo.usable_many(&[id(&edited[0]), id(&bases[1])]);
        assert_eq!(
            usable,
            [false, true],
            "a delta without its base is not offered"
        );
        assert!(repo.locate(&id(&bases[0])).is_none());
        assert!(repo.locate(&id(&edited[1])).is_none());
    }
}
