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
//! is reported on stderr and its snapshots are read from their manifests. A caller
//! keeps only the entries it needs ([`load_with`]: a push or a pull keeps its own
//! path's), so a call into a WAL archive of 100,000 files does not hold them all.
//!
//! Writing ([`Files::keep`]): when at least [`MIN_NEW`] listed snapshots were uncovered,
//! a new object records them; when there are more than [`MAX_OBJECTS`] objects, the
//! smallest (and those mostly made of forgotten snapshots) are read again and merged
//! into one, which is stored before they are deleted. Why no coverage is lost to a concurrent merge: an
//! object's entries are of snapshots stored before the object, and `catalog/` is listed
//! before `snapshots/`, so every entry of an object a merger read is of a snapshot its
//! listing shows or of a forgotten one; the merger stores all the listed ones again
//! before deleting what it read, and deletes nothing it did not read.

use anyhow::Result;
use dprepo_repo_format::catalog::{self, CATALOG_DIR};
pub use dprepo_repo_format::catalog::{Entry, EntryRef, Kind};
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
    /// How many of them are of listed snapshots.
    listed: usize,
}

/// Every readable listed snapshot the caller kept, and what the catalogue knew of them.
pub struct Files {
    /// The snapshots of catalogue entries the caller kept ([`load_with`]), in no
    /// particular order; with [`load`], every one.
    pub entries: Vec<Entry>,
    /// Snapshots read from their manifests (no catalogue object covers them), all of
    /// them whatever the caller kept: [`Files::keep`] records them.
    pub uncovered: Vec<Entry>,
    objects: Vec<Object>,
    /// Every listed snapshot (and whether a catalogue entry covered it).
    listed: HashMap<BlobId, bool>,
}

/// Every readable snapshot of `repo` as datasafed sees it ([`load_with`] keeping all).
///
/// # Errors
/// As [`load_with`].
pub async fn load(repo: &Repository) -> Result<Files> {
    load_inner(repo, |_| true, true).await
}

/// Hand every readable listed snapshot of `repo`, as datasafed sees it, to `visit`
/// (once each, in no particular order), and keep those it returns true for in
/// [`Files::entries`] (a push keeps only what its conflicts and replaced versions need:
/// a WAL archive has 100,000 entries). Damaged snapshot files and catalogue objects are
/// reported on stderr and left out (the snapshots of a damaged catalogue object are
/// read from their manifests).
///
/// # Errors
/// Storage errors listing `catalog/` or `snapshots/` or reading a snapshot.
pub async fn load_with(
    repo: &Repository,
    visit: impl FnMut(EntryRef<'_>) -> bool,
) -> Result<Files> {
    load_inner(repo, visit, false).await
}

/// [`load_with`]; `keeps_all`: room for every listed snapshot is reserved at once.
async fn load_inner(
    repo: &Repository,
    mut visit: impl FnMut(EntryRef<'_>) -> bool,
    keeps_all: bool,
) -> Result<Files> {
    // `catalog/` first: see the module comment.
    let names = repo.storage().list_names(CATALOG_DIR).await?;
    // Every listed snapshot, and whether an entry of it was seen yet. The names are
    // consumed as they are converted, so their strings do not outlive the map's growth.
    let mut seen: HashMap<BlobId, bool> = HashMap::new();
    for n in repo.storage().list_names(SNAPSHOTS_DIR).await? {
        if let Some(id) = dprepo_repo_format::layout::id_in(SNAPSHOTS_DIR, &n) {
            seen.insert(id, false);
        }
    }
    let mut entries: Vec<Entry> = Vec::with_capacity(if keeps_all { seen.len() } else { 0 });
    let mut objects = Vec::new();
    for (name, read) in read_objects(repo, names).await? {
        let body = match read {
            Ok(body) => body,
            // Deleted by a concurrent merge since the listing: its entries are in the
            // merged object, or read from their manifests below.
            Err(EngineError::NotFound { .. }) => continue,
            Err(e) => {
                warn_unreadable(&name, &e);
                continue;
            }
        };
        let mut listed = 0;
        // Entries straight from the body into the kept ones (a vector of every entry,
        // then the kept ones copied out of it, doubled a push's peak memory).
        let decoded = catalog::for_each(&body, &name, |e| {
            if let Some(was_seen) = seen.get_mut(&e.id) {
                listed += 1;
                if !*was_seen {
                    *was_seen = true;
                    if visit(e) {
                        entries.push(e.to_entry());
                    }
                }
            }
        });
        match decoded {
            Ok(total) => objects.push(Object {
                name,
                total,
                listed,
            }),
            Err(e) => warn_unreadable(&name, &e),
        }
    }
    let missing: Vec<BlobInfo> = seen
        .iter()
        .filter(|(_, was_seen)| !**was_seen)
        .map(|(id, _)| BlobInfo {
            name: dprepo_repo_format::layout::snapshot(id),
            size: 0,
        })
        .collect();
    let (snaps, damaged) = repo.read_snapshots(missing).await?;
    for (name, e) in damaged {
        eprintln!("Warning: {name} cannot be read and is left out: {e}");
    }
    let uncovered: Vec<Entry> = snaps.iter().map(entry_of).collect();
    drop(snaps);
    for e in &uncovered {
        visit(e.as_ref());
    }
    Ok(Files {
        entries,
        uncovered,
        objects,
        listed: seen,
    })
}

fn warn_unreadable(name: &str, e: &EngineError) {
    eprintln!("Warning: {name} cannot be read; its snapshots are read from their manifests: {e}");
}

/// Read and open catalogue objects `names` (not decoded: see [`catalog::for_each`]), a
/// few at once.
async fn read_objects(
    repo: &Repository,
    names: Vec<String>,
) -> Result<Vec<(String, Result<Vec<u8>, EngineError>)>> {
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
                    move || catalog::open_body(&keys, &name, &bytes)
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
    /// Every snapshot loaded: the kept catalogue entries and the uncovered snapshots.
    pub fn into_entries(self) -> Vec<Entry> {
        let mut all = self.entries;
        all.extend(self.uncovered);
        all
    }

    /// Record what this call learned in the repository's catalogue: `added` (snapshots
    /// this call stored) and the uncovered snapshots, less `removed` (snapshots it
    /// forgot), when there are at least [`MIN_NEW`] of them; merge objects when there
    /// are more than [`MAX_OBJECTS`] or some are mostly of forgotten snapshots. The
    /// merged objects are read again (a caller may have kept few of their entries); one
    /// that is gone or unreadable by then is neither copied nor deleted. Returns whether
    /// it wrote anything.
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
            .filter(|e| !removed.contains(&e.id))
            .count()
            + added.iter().filter(|e| !removed.contains(&e.id)).count();
        let writes_new = new_count >= MIN_NEW;
        let mut order: Vec<&Object> = self.objects.iter().collect();
        order.sort_by_key(|o| (o.listed, o.name.clone()));
        let count = self.objects.len() + usize::from(writes_new);
        let smallest = if count > MAX_OBJECTS {
            count - MAX_OBJECTS / 2
        } else {
            0
        };
        let merged: Vec<&Object> = order
            .iter()
            .enumerate()
            .filter(|(i, o)| *i < smallest || o.listed * 2 < o.total)
            .map(|(_, o)| *o)
            .collect();
        if !writes_new && merged.is_empty() {
            // The common case of a push: nothing to write.
            return Ok(false);
        }
        let mut new: Vec<Entry> = self
            .uncovered
            .iter()
            .chain(added)
            .filter(|e| !removed.contains(&e.id))
            .cloned()
            .collect();
        let mut seen: HashSet<BlobId> = new.iter().map(|e| e.id).collect();
        let mut copied = Vec::new();
        for (name, read) in
            read_objects(repo, merged.iter().map(|o| o.name.clone()).collect()).await?
        {
            let Ok(body) = read else { continue };
            let decoded = catalog::for_each(&body, &name, |e| {
                if self.listed.contains_key(&e.id) && !removed.contains(&e.id) && seen.insert(e.id)
                {
                    new.push(e.to_entry());
                }
            });
            if decoded.is_ok() {
                copied.push(name);
            }
        }
        if !new.is_empty() {
            let (name, bytes) = catalog::seal(repo.keys(), &new);
            repo.storage().put(&name, &bytes).await?;
        }
        for name in copied {
            match repo.storage().delete(&name).await {
                Ok(()) | Err(EngineError::NotFound { .. }) => {}
                // Left for the next merge: it is read, and its entries counted twice.
                Err(_) => {}
            }
        }
        Ok(true)
    }
}
