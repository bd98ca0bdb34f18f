//! G1's sweep of orphan snapshot locators (SPEC.md sections 14.1 and 18): a locator no
//! manifest names, by id or `original`, is deleted once it is older than the
//! stale-session window. A live writer creates its locator just before its manifest,
//! so a young orphan may be a snapshot about to be committed.

use super::{GcOptions, GcReport};
use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::locator::{self, Locator};
use crate::repo::{Repository, SNAPSHOTS_DIR};
use std::collections::HashSet;

/// Delete the orphan locators older than `options.session_stale_after`; counts them in
/// `report`.
///
/// # Errors
/// Storage errors (a locator already gone is not one).
pub(super) async fn sweep_orphan_locators(
    repo: &Repository,
    options: &GcOptions,
    report: &mut GcReport,
) -> Result<()> {
    let locators = locator::list(repo.storage().as_ref()).await?;
    if locators.is_empty() {
        return Ok(());
    }
    let snapshot_ids: HashSet<BlobId> = repo
        .storage()
        .list_names(SNAPSHOTS_DIR)
        .await?
        .iter()
        .filter_map(|n| crate::layout::id_in(SNAPSHOTS_DIR, n))
        .collect();
    let now = (options.clock)();
    // Manifests' `original`s, read only when an old orphan candidate needs them.
    let mut originals: Option<HashSet<BlobId>> = None;
    for id in locators {
        if snapshot_ids.contains(&id) {
            continue;
        }
        let name = crate::layout::locator(&id);
        let old = match repo.storage().get(&name).await {
            Err(Error::NotFound { .. }) => continue,
            Err(e) => return Err(e),
            Ok(bytes) => match Locator::decode(repo.keys(), &bytes, &id) {
                Ok(l) => {
                    let created = chrono::DateTime::from_timestamp(l.created, 0)
                        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
                    created + options.session_stale_after < now
                }
                // Sealed under a key this process does not hold, or damaged: its age in
                // storage decides (never old when the storage does not say).
                Err(_) => match super::unreadable_age(repo, &name, now).await? {
                    None => continue,
                    Some(age) => age.is_some_and(|a| a > options.session_stale_after),
                },
            },
        };
        if !old {
            continue;
        }
        if originals.is_none() {
            originals = Some(
                repo.list_snapshots()
                    .await?
                    .into_iter()
                    .filter_map(|s| s.manifest.original)
                    .collect(),
            );
        }
        if originals.as_ref().is_some_and(|o| o.contains(&id)) {
            continue;
        }
        match repo.storage().delete(&name).await {
            Ok(()) => report.locators_deleted += 1,
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
