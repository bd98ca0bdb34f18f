//! `repair packs`: read packs, take damaged blobs out of the index and keep the intact
//! blobs of their packs in new packs.

use super::index::write_index;
use crate::blob::{authenticate_delta_blob, decode_blob, BlobType};
use crate::error::{Error, Result};
use crate::gc::{GcOptions, LeaseGuard};
use crate::id::BlobId;
use crate::index::{IndexFile, IndexPack};
use crate::pack::{PackBuilder, PackEntry, PackKind};
use crate::repo::{run_cpu, Repository, INDEX_DIR, SESSIONS_DIR};
use crate::verify::{list_packs, read_pack_header, VerifyProgress};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

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
    /// Snapshot locators deleted, when blobs were taken out of the index: the
    /// next backup of each chain loads the index and stores damaged content again.
    pub locators_deleted: usize,
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
    let index_names: Vec<String> = repo.storage().list_names(INDEX_DIR).await?;
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
        let name = crate::layout::pack(kind, &id);
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
    // before any index change, so no cold backup starting from here on trusts a
    // parent's blob this repair drops.
    report.locators_deleted += crate::locator::delete_all(repo.storage().as_ref()).await?;

    // Copy what decodes into new packs (read and checked again: these are the bytes
    // that are copied), then index them (W1).
    let pack_size = repo.config().pack_size as usize;
    let mut builders: HashMap<PackKind, PackBuilder> = HashMap::new();
    let mut new_index = IndexFile::default();
    for salvage in &mut damaged {
        let name = crate::layout::pack(salvage.kind, &salvage.id);
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
                report
                    .packs_written
                    .push(crate::layout::pack(pack.kind, &pack.id));
                new_index.packs.push(pack);
            }
        }
    }
    for (_, builder) in builders {
        if !builder.is_empty() {
            let pack = upload_pack(repo, builder).await?;
            report
                .packs_written
                .push(crate::layout::pack(pack.kind, &pack.id));
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
        repo.storage()
            .delete(&crate::layout::pack(d.kind, &d.id))
            .await?;
    }
    report.damaged = damaged.into_iter().map(|d| d.report).collect();
    // R-6 again: locators of backups committed while the repair ran.
    report.locators_deleted += crate::locator::delete_all(repo.storage().as_ref()).await?;
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
        .put(&crate::layout::pack(pack.kind, &pack.id), &pack.bytes)
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
pub(super) fn is_damage(e: &Error) -> bool {
    matches!(e, Error::Corrupt { .. } | Error::NotFound { .. })
}
