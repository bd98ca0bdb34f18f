//! `repair index`: rebuild the index files from the pack headers in storage.

use crate::error::{Error, Result};
use crate::gc::{GcOptions, LeaseGuard};
use crate::id::BlobId;
use crate::index::{IndexFile, IndexPack};
use crate::locator::delete_all;
use crate::repo::{run_cpu, Repository, INDEX_DIR};
use crate::verify::{list_packs, read_pack_header, VerifyProgress};
use std::collections::HashSet;
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
    /// Snapshot locators deleted: the next backup of each chain loads the index.
    pub locators_deleted: usize,
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
    let result = async {
        // before any index change, so no cold backup trusts a parent whose blobs
        // this repair may take out of the index; and again at the end, for the
        // locators of backups committed meanwhile.
        let before = delete_all(repo.storage().as_ref()).await?;
        let mut report = rebuild_index_files(repo, progress).await?;
        report.locators_deleted = before + delete_all(repo.storage().as_ref()).await?;
        Ok(report)
    }
    .await;
    lease.release().await;
    result
}

/// [`repair_index`] under the lease.
async fn rebuild_index_files(
    repo: &Repository,
    progress: Arc<VerifyProgress>,
) -> Result<RepairIndexReport> {
    let mut report = RepairIndexReport::default();
    let old_names: Vec<String> = repo.storage().list_names(INDEX_DIR).await?;
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
                report.unreadable_packs.push(crate::layout::pack(kind, &id));
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

pub(super) async fn write_index(repo: &Repository, file: IndexFile) -> Result<String> {
    let keys = repo.keys().clone();
    let bytes = run_cpu(move || file.encode(&keys)).await?;
    let name = crate::layout::index_file(&BlobId::of_stored(&bytes));
    repo.storage().put(&name, &bytes).await?;
    Ok(name)
}
