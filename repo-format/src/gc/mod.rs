//! Garbage collection: delete packs no snapshot needs, rewrite mostly-unused packs,
//! compact index files; safe beside concurrent backups.
//!
//! Protocol (SPEC.md, "Garbage collection protocol"), gc side:
//! 1. take the lease `locks/gc` (create-if-absent; an expired lease is taken over by a
//!    compare-and-swap of the exact lease read, so of two takers one wins);
//! 2. plan: mark every blob reachable from every snapshot in a Bloom filter (false
//!    positives only keep garbage), then classify packs from the index files: no
//!    reachable blob -> delete; unused share above `max_unused` -> rewrite; in storage
//!    but in no index file -> orphan;
//! 3. rewrite: copy the reachable blobs of those packs, verified, into new packs and an
//!    index file;
//! 4. write a tombstone `gc/<id>` naming the packs to delete;
//! 5. list writer sessions: a tombstone is blocked while a live session has not seen it
//!    (see `session.rs`); stale sessions (no heartbeat) do not block and are removed;
//! 6. for unblocked tombstones: mark the snapshots committed since step 2, re-read the
//!    index files, and delete a pack only if none of its blobs is reachable or every
//!    reachable one has a copy in a pack that stays; index files naming deleted packs
//!    are rewritten first, then the packs are deleted, then the tombstones.
//!
//! Memory: the Bloom filter takes 10 bits per indexed blob, plus the set of tree ids
//! walked and per-pack counters; index files are streamed one at a time.

mod apply;
mod forget;
mod lease;
mod locators;
mod plan;
mod reachable;
#[cfg(test)]
mod tests;

pub use apply::apply;
pub use forget::{forget_snapshot_files, forget_snapshots, rewrite_manifest, set_expiry};
pub(crate) use lease::unreadable_age;
pub use lease::{
    acquire_lease, acquire_lease_for, release_lease, renew_lease, HeldLease, LeaseGuard, LEASE_NAME,
};
pub use plan::{plan, GcPlan, GcReport, PackUsage};

use crate::data_ids::DataIds;
use crate::error::Result;
use crate::id::BlobId;
use crate::repo::Repository;
use std::sync::Arc;

/// Most entries written into one index file when index files are rewritten.
pub const MAX_ENTRIES_PER_INDEX_FILE: usize = 100_000;

/// A clock, so tests control time (session staleness, lease expiry).
pub type Clock = Arc<dyn Fn() -> chrono::DateTime<chrono::Utc> + Send + Sync>;

/// Options of a garbage collection.
#[derive(Clone)]
pub struct GcOptions {
    /// Rewrite a pack when more than this fraction of its bytes is unused (0..=1).
    pub max_unused: f64,
    /// A writer session without a heartbeat for this long is considered dead.
    pub session_stale_after: chrono::Duration,
    /// How long the gc lease holds without renewal.
    pub lease_ttl: chrono::Duration,
    /// Rewrite all index files into few when there are more than this many.
    pub compact_index_files_above: usize,
    /// The clock.
    pub clock: Clock,
}

impl std::fmt::Debug for GcOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcOptions")
            .field("max_unused", &self.max_unused)
            .field("session_stale_after", &self.session_stale_after)
            .finish()
    }
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            max_unused: 0.2,
            session_stale_after: chrono::Duration::minutes(30),
            lease_ttl: chrono::Duration::minutes(30),
            compact_index_files_above: 32,
            clock: Arc::new(chrono::Utc::now),
        }
    }
}

/// Take the lease, plan, apply, release.
///
/// # Errors
/// As [`acquire_lease`], [`plan`] and [`apply`].
pub async fn run(repo: &Repository, options: &GcOptions) -> Result<(GcPlan, GcReport)> {
    let mut lease = acquire_lease(repo, options).await?;
    let result = async {
        let p = plan(repo, options).await?;
        let report = apply(repo, p.clone(), options, &mut lease).await?;
        Ok((p, report))
    }
    .await;
    release_lease(repo, &lease).await;
    result
}

/// Data ids of a content, for tests and tools.
///
/// # Errors
/// Missing or damaged chunk lists.
pub async fn content_data_ids(
    repo: &Repository,
    content: &crate::content::Content,
) -> Result<Vec<BlobId>> {
    let mut ids = DataIds::new(content);
    let mut out = Vec::new();
    while let Some(id) = ids.next(repo).await? {
        out.push(id);
    }
    Ok(out)
}
