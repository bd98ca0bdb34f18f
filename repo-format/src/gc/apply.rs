//! Applying a gc plan: rewrite packs, write tombstones, and delete what no live
//! session can still need.

use super::lease::{renew_lease, unreadable_age, HeldLease};
use super::plan::{all_snapshots, read_index_file, stored_packs, GcPlan, GcReport, PackUsage};
use super::reachable::{close_over_bases, Reachable};
use super::{GcOptions, MAX_ENTRIES_PER_INDEX_FILE};
use crate::blob::decode_blob;
use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::index::{IndexFile, IndexPack};
use crate::manifest::{SessionMarker, Tombstone, TombstonePack};
use crate::pack::{PackBuilder, PackEntry, PackKind};
use crate::repo::{run_cpu, Repository, INDEX_DIR, SESSIONS_DIR};
use crate::session::load_tombstones;
use crate::verify::{check_deltas, Segment, SegmentBuffers};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Carry out a plan (the caller holds `lease`).
///
/// # Errors
/// Storage errors. An error leaves the repository consistent: the next gc finishes.
pub async fn apply(
    repo: &Repository,
    plan: GcPlan,
    options: &GcOptions,
    lease: &mut HeldLease,
) -> Result<GcReport> {
    let mut report = GcReport::default();
    let mut reachable = plan
        .reachable
        .clone()
        .ok_or_else(|| Error::Internal("gc plan without reachability".into()))?;
    // Abandoned temporary files first: they free space and nothing refers to them.
    for name in &plan.stale_temporary_files {
        repo.storage().delete_temporary(name).await?;
        report.temporary_files_removed += 1;
    }
    if report.temporary_files_removed > 0 {
        report.temporary_bytes_freed = plan.stale_temporary_bytes;
    }
    super::locators::sweep_orphan_locators(repo, options, &mut report).await?;
    let mut doomed: Vec<TombstonePack> = Vec::new();
    doomed.extend(plan.delete.iter().map(|u| TombstonePack {
        id: u.id,
        kind: u.kind,
    }));
    doomed.extend(plan.orphans.iter().map(|u| TombstonePack {
        id: u.id,
        kind: u.kind,
    }));
    // Packs with nothing to keep go before any copy is written: rewriting needs room
    // for the copies, and on a nearly full disk it failed before anything was freed.
    if !doomed.is_empty() && !plan.repack.is_empty() {
        write_tombstone(repo, std::mem::take(&mut doomed), options).await?;
        renew_lease(repo, lease, options).await?;
        process_tombstones(repo, options, lease, &mut reachable, &mut report).await?;
    }

    // Rewrite mostly-unused packs.
    let rewritten = rewrite_packs(repo, &plan.repack, &mut report).await?;
    doomed.extend(rewritten);
    if !doomed.is_empty() {
        write_tombstone(repo, doomed, options).await?;
    }
    renew_lease(repo, lease, options).await?;
    process_tombstones(repo, options, lease, &mut reachable, &mut report).await?;
    report.tombstones_blocked.sort();
    report.tombstones_blocked.dedup();
    Ok(report)
}

/// G5: name `packs` in a new tombstone.
async fn write_tombstone(
    repo: &Repository,
    packs: Vec<TombstonePack>,
    options: &GcOptions,
) -> Result<()> {
    let tombstone = Tombstone {
        created: (options.clock)(),
        packs,
    };
    let bytes = tombstone.encode(repo.keys());
    let name = crate::layout::tombstone(&BlobId::of_stored(&bytes));
    match repo.storage().create(&name, &bytes).await {
        Ok(()) | Err(Error::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// G6 to G9 for every tombstone in the repository: list sessions, then for the
/// tombstones no live writer blocks, delete the packs whose reachable blobs all have
/// another home, after rewriting the index files naming them; compact index files when
/// there are many.
///
/// # Errors
/// Storage errors; the repository stays consistent (the next gc finishes).
async fn process_tombstones(
    repo: &Repository,
    options: &GcOptions,
    lease: &mut HeldLease,
    reachable: &mut Reachable,
    report: &mut GcReport,
) -> Result<()> {
    // Sessions: after the tombstone is durable, so a writer not listed now sees it.
    let now = (options.clock)();
    let mut live: Vec<SessionMarker> = Vec::new();
    let mut unreadable_sessions = false;
    for info in repo.storage().list(SESSIONS_DIR).await? {
        let marker = match repo.storage().get(&info.name).await {
            Ok(b) => SessionMarker::decode(repo.keys(), &b, &info.name),
            Err(Error::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        match marker {
            Ok(m) if now - m.heartbeat > options.session_stale_after || m.holder().is_dead() => {
                repo.storage().delete(&info.name).await?;
                report.stale_sessions_removed.push(info.name.clone());
            }
            Ok(m) => live.push(m),
            // No key of this handle opens it (a writer of a retired key generation
            // killed before its S-2b check, a newer build, damage): its heartbeat cannot
            // be read, so the storage's modification time stands for it. A live writer
            // rewrites its marker every 120 s.
            Err(e) => match unreadable_age(repo, &info.name, now).await? {
                None => {}
                Some(Some(age)) if age > options.session_stale_after => {
                    repo.storage().delete(&info.name).await?;
                    report.warnings.push(format!(
                        "{e}; not written for {} minutes: removed as stale",
                        age.num_minutes()
                    ));
                    report.stale_sessions_removed.push(info.name.clone());
                }
                Some(_) => {
                    report.warnings.push(format!(
                        "{e}; it blocks deletion until it is {} minutes old or removed",
                        options.session_stale_after.num_minutes()
                    ));
                    unreadable_sessions = true;
                }
            },
        }
    }
    let tombstones = load_tombstones(repo).await?;
    let mut candidates: HashMap<BlobId, PackKind> = HashMap::new();
    let mut processable = Vec::new();
    for (name, t) in tombstones {
        let blocked = unreadable_sessions
            || live
                .iter()
                .any(|s| !s.ready || !s.seen_tombstones.contains(&name));
        if blocked {
            report.tombstones_blocked.push(name);
        } else {
            candidates.extend(t.packs.iter().map(|p| (p.id, p.kind)));
            processable.push(name);
        }
    }
    let index_names: Vec<String> = repo.storage().list_names(INDEX_DIR).await?;
    if processable.is_empty() && index_names.len() <= options.compact_index_files_above {
        return Ok(());
    }

    // Fresh view: snapshots committed meanwhile keep their data.
    for s in all_snapshots(repo).await? {
        reachable.add_snapshot(repo, &s).await?;
    }
    close_over_bases(repo, reachable, &index_names).await?;
    // Pass 1: reachable blobs inside candidate packs need a copy elsewhere.
    let mut needs_copy: HashSet<BlobId> = HashSet::new();
    let mut pack_live: HashMap<BlobId, Vec<BlobId>> = HashMap::new();
    for name in &index_names {
        for p in read_index_file(repo, name).await?.packs {
            if candidates.contains_key(&p.id) {
                let live: Vec<BlobId> = p
                    .entries
                    .iter()
                    .filter(|e| reachable.bloom.may_contain(&e.id))
                    .map(|e| e.id)
                    .collect();
                needs_copy.extend(live.iter().copied());
                pack_live.entry(p.id).or_default().extend(live);
            }
        }
    }
    // Pass 2: which of them have a copy in a pack that stays. A delta copy counts only
    // if its base has a full copy in a pack that stays too (pass 3): an unreachable
    // delta's entry may have outlived its base, collected as garbage by an earlier gc.
    // (`Index::usable` with the candidates excluded: the copy `index::copies` keeps.)
    let mut copied: HashSet<BlobId> = HashSet::new();
    let mut delta_copies: Vec<(BlobId, BlobId)> = Vec::new();
    if !needs_copy.is_empty() {
        for name in &index_names {
            for p in read_index_file(repo, name).await?.packs {
                if candidates.contains_key(&p.id) {
                    continue;
                }
                for e in p.entries.iter().filter(|e| needs_copy.contains(&e.id)) {
                    match e.base {
                        None => {
                            copied.insert(e.id);
                        }
                        Some(base) => delta_copies.push((e.id, base)),
                    }
                }
            }
        }
    }
    delta_copies.retain(|(id, _)| !copied.contains(id));
    if !delta_copies.is_empty() {
        let bases: HashSet<BlobId> = delta_copies.iter().map(|(_, b)| *b).collect();
        let mut full_bases: HashSet<BlobId> = HashSet::new();
        for name in &index_names {
            for p in read_index_file(repo, name).await?.packs {
                if !candidates.contains_key(&p.id) {
                    full_bases.extend(
                        p.entries
                            .iter()
                            .filter(|e| e.base.is_none() && bases.contains(&e.id))
                            .map(|e| e.id),
                    );
                }
            }
        }
        copied.extend(
            delta_copies
                .iter()
                .filter(|(_, base)| full_bases.contains(base))
                .map(|(id, _)| *id),
        );
    }
    let deletable: HashMap<BlobId, PackKind> = candidates
        .iter()
        .filter(|(id, _)| {
            pack_live
                .get(*id)
                .is_none_or(|live| live.iter().all(|b| copied.contains(b)))
        })
        .map(|(id, k)| (*id, *k))
        .collect();
    report.packs_kept += (candidates.len() - deletable.len()) as u64;

    // Index files naming deleted packs are rewritten before any pack goes.
    let compact_all = index_names.len() > options.compact_index_files_above;
    let mut rewrite: Vec<String> = Vec::new();
    let mut out = IndexFile::default();
    let mut out_entries = 0usize;
    let mut written_packs: HashSet<BlobId> = HashSet::new();
    for name in &index_names {
        let file = read_index_file(repo, name).await?;
        let touches = file.packs.iter().any(|p| deletable.contains_key(&p.id));
        if !(touches || compact_all) {
            continue;
        }
        rewrite.push(name.clone());
        for p in file.packs {
            if deletable.contains_key(&p.id) || !written_packs.insert(p.id) {
                continue;
            }
            out_entries += p.entries.len();
            out.packs.push(p);
            if out_entries >= MAX_ENTRIES_PER_INDEX_FILE {
                write_index(repo, std::mem::take(&mut out)).await?;
                out_entries = 0;
            }
        }
    }
    if !out.packs.is_empty() {
        write_index(repo, out).await?;
    }
    renew_lease(repo, lease, options).await?;
    for name in &rewrite {
        repo.storage().delete(name).await?;
        report.index_files_rewritten += 1;
    }
    let stored = stored_packs(repo).await?;
    for (id, kind) in &deletable {
        repo.storage()
            .delete(&crate::layout::pack(*kind, id))
            .await?;
        report.packs_deleted += 1;
        report.bytes_freed += stored.get(id).map(|(_, s)| *s).unwrap_or(0);
    }
    for name in &processable {
        repo.storage().delete(name).await?;
        report.tombstones_processed += 1;
    }
    // Follow the rewritten index files. The old index is dropped before the new one is
    // built, so gc never holds two (readers meanwhile reload on a miss).
    let _ = deletable;
    repo.rebuild_index().await?;
    Ok(())
}

async fn write_index(repo: &Repository, file: IndexFile) -> Result<()> {
    let keys = repo.keys().clone();
    let bytes = run_cpu(move || file.encode(&keys)).await?;
    repo.storage()
        .put(
            &crate::layout::index_file(&BlobId::of_stored(&bytes)),
            &bytes,
        )
        .await
}

/// Copy the reachable blobs of `packs` into new packs, verifying each; returns the
/// packs whose blobs all have a new home (to be deleted later).
async fn rewrite_packs(
    repo: &Repository,
    packs: &[PackUsage],
    report: &mut GcReport,
) -> Result<Vec<TombstonePack>> {
    let pack_size = repo.config().pack_size as usize;
    let mut builders: HashMap<PackKind, PackBuilder> = HashMap::new();
    let mut new_index = IndexFile::default();
    let mut done = Vec::new();
    let buffers = SegmentBuffers::default();
    for usage in packs {
        let name = crate::layout::pack(usage.kind, &usage.id);
        let bytes = match repo.storage().get(&name).await {
            Ok(b) => b,
            Err(e) => {
                report
                    .warnings
                    .push(format!("pack {}: {e}; left in place", usage.id.short()));
                report.packs_kept += 1;
                continue;
            }
        };
        // Verify before copying: a damaged blob must not be given a new home silently.
        // Deltas first, against bases read in runs (a pack of deltas may name thousands).
        let bytes = Arc::new(bytes);
        if let Err(reason) = verify_deltas(repo, &usage.live, &bytes, &buffers).await {
            report.warnings.push(format!(
                "pack {}: {reason}; not rewritten (run verify)",
                usage.id.short()
            ));
            report.packs_kept += 1;
            continue;
        }
        let keys = repo.keys().clone();
        let live = usage.live.clone();
        let verified = run_cpu(
            move || -> std::result::Result<Vec<(PackEntry, Vec<u8>)>, String> {
                let mut out = Vec::new();
                for e in live {
                    let end = e.offset as usize + e.stored_len as usize;
                    let stored = bytes
                        .get(e.offset as usize..end)
                        .ok_or_else(|| format!("blob {} lies outside the pack", e.id.short()))?;
                    if e.base.is_none() {
                        decode_blob(&keys, e.blob_type, &e.id, stored, u64::from(e.raw_len))
                            .map_err(|err| err.to_string())?;
                    }
                    out.push((e, stored.to_vec()));
                }
                Ok(out)
            },
        )
        .await?;
        let blobs = match verified {
            Ok(b) => b,
            Err(reason) => {
                report.warnings.push(format!(
                    "pack {}: {reason}; not rewritten (run verify)",
                    usage.id.short()
                ));
                report.packs_kept += 1;
                continue;
            }
        };
        for (e, stored) in blobs {
            let builder = builders
                .entry(usage.kind)
                .or_insert_with(|| PackBuilder::with_capacity(usage.kind, pack_size + (1 << 20)));
            builder.add_entry(e.blob_type, e.id, &stored, e.raw_len, e.base);
            if builder.len() >= pack_size {
                let full = std::mem::replace(
                    builder,
                    PackBuilder::with_capacity(usage.kind, pack_size + (1 << 20)),
                );
                new_index.packs.push(upload_pack(repo, full, report).await?);
            }
        }
        report.packs_rewritten += 1;
        done.push(TombstonePack {
            id: usage.id,
            kind: usage.kind,
        });
    }
    for (_, builder) in builders {
        if !builder.is_empty() {
            new_index
                .packs
                .push(upload_pack(repo, builder, report).await?);
        }
    }
    if !new_index.packs.is_empty() {
        write_index(repo, new_index).await?;
    }
    Ok(done)
}

/// Decode every delta among `live` (entries of `pack`) against its base. The bases are
/// read as `verify --read-data` reads them: located, sorted, and fetched in runs of one
/// pack, so a pack of thousands of deltas costs a few reads, not one per base.
///
/// # Errors
/// Why one does not decode, as text for the report.
async fn verify_deltas(
    repo: &Repository,
    live: &[PackEntry],
    pack: &Arc<Vec<u8>>,
    buffers: &SegmentBuffers,
) -> std::result::Result<(), String> {
    let deltas: Vec<PackEntry> = live.iter().filter(|e| e.base.is_some()).copied().collect();
    if deltas.is_empty() {
        return Ok(());
    }
    let whole_pack = Segment {
        bytes: pack.clone(),
        start: 0,
    };
    let bad = check_deltas(repo, deltas, &whole_pack, buffers)
        .await
        .map_err(|e| e.to_string())?;
    match bad.into_iter().next() {
        None => Ok(()),
        Some((_, why)) => Err(why),
    }
}

async fn upload_pack(
    repo: &Repository,
    builder: PackBuilder,
    report: &mut GcReport,
) -> Result<IndexPack> {
    let keys = repo.keys().clone();
    let pack = run_cpu(move || builder.finish(&keys)).await?;
    repo.storage()
        .put(&crate::layout::pack(pack.kind, &pack.id), &pack.bytes)
        .await?;
    report.packs_written += 1;
    report.bytes_written += pack.bytes.len() as u64;
    Ok(IndexPack {
        id: pack.id,
        kind: pack.kind,
        entries: pack.entries,
    })
}
