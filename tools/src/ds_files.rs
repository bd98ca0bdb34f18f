//! What `datasafed` needs of every snapshot (path or directory tag, codec, time, size,
//! tree), read from the repository's catalogue (`catalog/`, SPEC.md section 14.2) so that
//! a process with an empty cache (every datasafed call of a Kubernetes pod) reads a few
//! catalogue objects instead of every manifest: over a WAL archive of 100,000 files,
//! reading every manifest was 3.3 s and 254 MiB a call (BENCHMARKS.md, "datasafed calls
//! with an access key").
//!
//! Reading: list `catalog/`, then `snapshots/` (once); an entry of a catalogue object
//! counts only for a listed snapshot (forgotten ones drop out), listed snapshots no
//! object covers are read from their manifests. A catalogue object that cannot be read
//! is reported on stderr and its snapshots are read from their manifests.
//!
//! Writing ([`Files::keep`]): when at least [`MIN_NEW`] listed snapshots were uncovered,
//! a new object records them; when there are more than [`MAX_OBJECTS`] objects, the
//! smallest (and those mostly made of forgotten snapshots) are merged into one, which is
//! stored before they are deleted. Why no coverage is lost to a concurrent merge: an
//! object's entries are of snapshots stored before the object, and `catalog/` is listed
//! before `snapshots/`, so every entry of an object a merger read is of a snapshot its
//! listing shows or of a forgotten one; the merger stores all the listed ones again
//! before deleting what it read, and deletes nothing it did not read.

use anyhow::Result;
use dprepo_repo_format::catalog::{self, CATALOG_DIR};
pub use dprepo_repo_format::catalog::{Entry, Kind};
use dprepo_repo_format::repo::SNAPSHOTS_DIR;
use dprepo_repo_format::storage::BlobInfo;
use dprepo_repo_format::{BlobId, Error as EngineError, Repository, Snapshot};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Tag every datasafed snapshot carries (`dprepo snapshots --tag datasafed`).
pub const TAG: &str = "datasafed";
/// Tag prefix naming the file a snapshot holds.
pub const PATH_TAG: &str = "datasafed:path=";
/// Tag prefix naming the directory a marker snapshot stands for.
pub const DIR_TAG: &str = "datasafed:dir=";
/// Tag prefix naming the algorithm the stream was pushed with (`none`: no -z).
pub const CODEC_TAG: &str = "datasafed:codec=";

/// Uncovered snapshots that make a call record a new catalogue object.
pub const MIN_NEW: usize = 64;
/// More catalogue objects than this are merged.
pub const MAX_OBJECTS: usize = 16;
/// Catalogue objects read at once.
const READS_IN_FLIGHT: usize = 16;

/// The entry of a snapshot (its manifest's datasafed tags).
pub fn entry_of(s: &Snapshot) -> Entry {
    let tag = |prefix: &str| {
        s.manifest
            .tags
            .iter()
            .find_map(|t| t.strip_prefix(prefix))
            .map(str::to_string)
    };
    let (kind, path) = match (tag(DIR_TAG), tag(PATH_TAG)) {
        (Some(dir), _) => (Kind::Dir, dir),
        (None, Some(path)) => (Kind::File, path),
        _ => (Kind::Other, String::new()),
    };
    Entry {
        id: s.id,
        time: s.manifest.time,
        tree: s.manifest.tree,
        size: s.manifest.summary.total_bytes,
        kind,
        path,
        codec: tag(CODEC_TAG).unwrap_or_default(),
    }
}

/// A readable catalogue object.
struct Object {
    name: String,
    /// Entries it holds.
    total: usize,
    /// Ids of its entries whose snapshots are listed.
    listed: Vec<BlobId>,
}

/// Every readable listed snapshot, and what the catalogue knew of them.
pub struct Files {
    /// Every readable snapshot, in no particular order.
    pub entries: Vec<Entry>,
    objects: Vec<Object>,
    /// Snapshots read from their manifests (no catalogue object covers them).
    uncovered: Vec<BlobId>,
}

/// Every readable snapshot of `repo` as datasafed sees it; damaged snapshot files and
/// catalogue objects are reported on stderr and left out (the snapshots of a damaged
/// catalogue object are read from their manifests).
///
/// # Errors
/// Storage errors listing `catalog/` or `snapshots/` or reading a snapshot.
pub async fn load(repo: &Repository) -> Result<Files> {
    // `catalog/` first: see the module comment.
    let names = repo.storage().list_names(CATALOG_DIR).await?;
    let listed: HashSet<BlobId> = repo
        .storage()
        .list_names(SNAPSHOTS_DIR)
        .await?
        .into_iter()
        .filter_map(|n| dprepo_repo_format::layout::id_in(SNAPSHOTS_DIR, &n))
        .collect();
    // Entries straight into one vector (a map of 100,000 entries, then a vector made of
    // it, doubled a push's peak memory).
    let mut covered: HashSet<BlobId> = HashSet::with_capacity(listed.len());
    let mut entries: Vec<Entry> = Vec::with_capacity(listed.len());
    let mut objects = Vec::new();
    for (name, read) in read_objects(repo, names).await? {
        match read {
            Ok(list) => {
                let mut ids = Vec::new();
                let total = list.len();
                for e in list {
                    if listed.contains(&e.id) {
                        ids.push(e.id);
                        if covered.insert(e.id) {
                            entries.push(e);
                        }
                    }
                }
                objects.push(Object {
                    name,
                    total,
                    listed: ids,
                });
            }
            // Deleted by a concurrent merge since the listing: its entries are in the
            // merged object, or read from their manifests below.
            Err(EngineError::NotFound { .. }) => {}
            Err(e) => eprintln!(
                "Warning: {name} cannot be read; its snapshots are read from their manifests: {e}"
            ),
        }
    }
    let missing: Vec<BlobInfo> = listed
        .iter()
        .filter(|id| !covered.contains(id))
        .map(|id| BlobInfo {
            name: dprepo_repo_format::layout::snapshot(id),
            size: 0,
        })
        .collect();
    drop((listed, covered));
    let (snaps, damaged) = repo.read_snapshots(missing).await?;
    for (name, e) in damaged {
        eprintln!("Warning: {name} cannot be read and is left out: {e}");
    }
    let uncovered: Vec<BlobId> = snaps.iter().map(|s| s.id).collect();
    entries.extend(snaps.iter().map(entry_of));
    Ok(Files {
        entries,
        objects,
        uncovered,
    })
}

/// Read catalogue objects `names`, a few at once.
async fn read_objects(
    repo: &Repository,
    names: Vec<String>,
) -> Result<Vec<(String, Result<Vec<Entry>, EngineError>)>> {
    let limit = Arc::new(tokio::sync::Semaphore::new(READS_IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    for name in names {
        let limit = limit.clone();
        let storage = repo.storage().clone();
        let keys = repo.keys().clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let read = match storage.get(&name).await {
                Ok(bytes) => tokio::task::spawn_blocking({
                    let name = name.clone();
                    move || catalog::open(&keys, &name, &bytes)
                })
                .await
                .unwrap_or_else(|e| Err(EngineError::Internal(e.to_string()))),
                Err(e) => Err(e),
            };
            (name, read)
        });
    }
    let mut out = Vec::new();
    while let Some(done) = tasks.join_next().await {
        out.push(done?);
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

impl Files {
    /// Record what this call learned in the repository's catalogue: `added` (snapshots
    /// this call stored) and the uncovered snapshots, less `removed` (snapshots it
    /// forgot), when there are at least [`MIN_NEW`] of them; merge objects when there
    /// are more than [`MAX_OBJECTS`] or some are mostly of forgotten snapshots. Returns
    /// whether it wrote anything.
    ///
    /// # Errors
    /// Storage errors writing the object (deleting a merged one is best effort).
    pub async fn keep(
        &self,
        repo: &Repository,
        added: &[Entry],
        removed: &[BlobId],
    ) -> Result<bool> {
        let removed: HashSet<&BlobId> = removed.iter().collect();
        let new_count = self
            .uncovered
            .iter()
            .filter(|id| !removed.contains(id))
            .count()
            + added.iter().filter(|e| !removed.contains(&e.id)).count();
        let writes_new = new_count >= MIN_NEW;
        let mut order: Vec<&Object> = self.objects.iter().collect();
        order.sort_by_key(|o| (o.listed.len(), o.name.clone()));
        let count = self.objects.len() + usize::from(writes_new);
        let smallest = if count > MAX_OBJECTS {
            count - MAX_OBJECTS / 2
        } else {
            0
        };
        let merged: Vec<&Object> = order
            .iter()
            .enumerate()
            .filter(|(i, o)| *i < smallest || o.listed.len() * 2 < o.total)
            .map(|(_, o)| *o)
            .collect();
        if !writes_new && merged.is_empty() {
            // The common case of a push: nothing to write, no map of every entry built.
            return Ok(false);
        }
        let by_id: HashMap<&BlobId, &Entry> = self.entries.iter().map(|e| (&e.id, e)).collect();
        let mut new: Vec<Entry> = self
            .uncovered
            .iter()
            .filter(|id| !removed.contains(id))
            .filter_map(|id| by_id.get(id).map(|e| (*e).clone()))
            .collect();
        new.extend(added.iter().filter(|e| !removed.contains(&e.id)).cloned());
        let mut seen: HashSet<BlobId> = new.iter().map(|e| e.id).collect();
        for o in &merged {
            for id in &o.listed {
                if !removed.contains(id) && seen.insert(*id) {
                    if let Some(e) = by_id.get(id) {
                        new.push((*e).clone());
                    }
                }
            }
        }
        if !new.is_empty() {
            let (name, bytes) = catalog::seal(repo.keys(), &new);
            repo.storage().put(&name, &bytes).await?;
        }
        for o in merged {
            match repo.storage().delete(&o.name).await {
                Ok(()) | Err(EngineError::NotFound { .. }) => {}
                // Left for the next merge: it is read, and its entries counted twice.
                Err(_) => {}
            }
        }
        Ok(true)
    }
}
