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

use crate::blob::decode_blob;
use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::index::{IndexFile, IndexPack};
use crate::manifest::{Lease, SessionMarker, Tombstone, TombstonePack};
use crate::pack::{PackBuilder, PackEntry, PackKind};
use crate::repo::{run_cpu, Repository, Snapshot, INDEX_DIR, SESSIONS_DIR};
use crate::restore::DataIds;
use crate::session::{load_tombstones, TOMBSTONES_DIR};
use crate::storage::{Bytes, PutMode, Version};
use crate::tree::NodeKind;
use crate::verify::{check_deltas, Segment, SegmentBuffers};
use chacha20poly1305::aead::{rand_core::RngCore, OsRng};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Storage name of the gc lease.
pub const LEASE_NAME: &str = "locks/gc";
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

/// Bloom filter of reachable blob ids. Ids are keyed BLAKE3 hashes, uniformly random,
/// so their bytes serve directly as the hash functions.
#[derive(Debug, Clone)]
struct Bloom {
    bits: Vec<u64>,
    m: u64,
}

const BLOOM_HASHES: u64 = 7;

impl Bloom {
    fn new(expected: usize) -> Self {
        let m = ((expected as u64).saturating_mul(10)).max(4096);
        Bloom {
            bits: vec![0; m.div_ceil(64) as usize],
            m,
        }
    }
    fn positions(&self, id: &BlobId) -> impl Iterator<Item = u64> + '_ {
        let mut a = [0u8; 8];
        a.copy_from_slice(&id.0[..8]);
        let mut b = [0u8; 8];
        b.copy_from_slice(&id.0[8..16]);
        let (h1, h2) = (u64::from_le_bytes(a), u64::from_le_bytes(b) | 1);
        (0..BLOOM_HASHES).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % self.m)
    }
    fn insert(&mut self, id: &BlobId) {
        let pos: Vec<u64> = self.positions(id).collect();
        for p in pos {
            self.bits[(p / 64) as usize] |= 1 << (p % 64);
        }
    }
    fn may_contain(&self, id: &BlobId) -> bool {
        self.positions(id)
            .all(|p| self.bits[(p / 64) as usize] & (1 << (p % 64)) != 0)
    }
}

/// Everything reachable from a set of snapshots.
#[derive(Debug, Clone)]
struct Reachable {
    bloom: Bloom,
    trees: HashSet<BlobId>,
    snapshots: HashSet<BlobId>,
}

impl Reachable {
    fn new(expected: usize) -> Self {
        Reachable {
            bloom: Bloom::new(expected),
            trees: HashSet::new(),
            snapshots: HashSet::new(),
        }
    }

    async fn add_snapshot(&mut self, repo: &Repository, snap: &Snapshot) -> Result<()> {
        if !self.snapshots.insert(snap.id) {
            return Ok(());
        }
        let mut stack = vec![snap.manifest.tree];
        while let Some(tree_id) = stack.pop() {
            if !self.trees.insert(tree_id) {
                continue;
            }
            self.bloom.insert(&tree_id);
            let tree = repo
                .load_tree(&tree_id)
                .await
                .map_err(|e| Error::SnapshotUnwalkable {
                    snapshot: snap.id.short(),
                    reason: format!("cannot be walked ({e})"),
                    remedy: "run `dprepo verify`, then `dprepo repair index` if index files were lost, and `dprepo repair snapshots --forget` to replace the snapshots that use lost data".into(),
                })?;
            for node in tree.nodes {
                match node.kind {
                    NodeKind::Dir(id) => stack.push(id),
                    NodeKind::File(content) => {
                        for id in &content.ids {
                            self.bloom.insert(id);
                        }
                        if content.level == 0 {
                            require_indexed(repo, snap, &content.ids)?;
                        }
                        if content.level > 0 {
                            // Mark the chunk lists below the top level and their data.
                            let mut lists = vec![(content.level, content.ids.clone())];
                            while let Some((level, ids)) = lists.pop() {
                                if level == 0 {
                                    require_indexed(repo, snap, &ids)?;
                                }
                                for id in ids {
                                    self.bloom.insert(&id);
                                    if level > 0 {
                                        let body = repo
                                            .read_blob(&id, crate::blob::BlobType::ChunkList)
                                            .await?;
                                        let list = crate::content::Content::decode_list(
                                            &body,
                                            level - 1,
                                            &format!("chunk list {}", id.short()),
                                        )?;
                                        lists.push((level - 1, list.ids));
                                    }
                                }
                            }
                        }
                    }
                    NodeKind::Symlink(_) | NodeKind::Special(_) => {}
                }
            }
        }
        Ok(())
    }
}

/// A snapshot's blob that no index file lists may still sit in a pack that no index
/// file names; gc would delete that pack as an orphan. Refuse instead: `repair index`
/// can recover it.
fn require_indexed(repo: &Repository, snap: &Snapshot, ids: &[BlobId]) -> Result<()> {
    let index = repo
        .index()
        .read()
        .map_err(|_| Error::Internal("index lock poisoned".into()))?;
    // A delta's base must be indexed too: it is as much needed as the blob itself.
    let unindexed = ids.iter().find_map(|id| match index.type_and_base(id) {
        None => Some(format!("blob {}", id.short())),
        Some((_, base)) => base.filter(|base| !index.contains(base)).map(|base| {
            format!(
                "blob {} through its delta base {}",
                id.short(),
                base.short()
            )
        }),
    });
    match unindexed {
        None => Ok(()),
        Some(what) => Err(Error::SnapshotUnwalkable {
            snapshot: snap.id.short(),
            reason: format!("references {what}, which no index file lists (gc could delete the pack holding it)"),
            remedy: "run `dprepo repair index` first (it indexes packs that index files lost), then, if the blob is still missing, `dprepo repair snapshots --forget`".into(),
        }),
    }
}

/// Mark the bases of reachable delta blobs reachable: a delta cannot be decoded without
/// its base. Every index entry counts, not only the copy the index prefers, because
/// whichever copy of a blob survives must stay decodable. Writers never make a delta of
/// a delta, but one id may be a base in one pack and a delta in another (two writers, or
/// a page stored again), so passes repeat until one adds nothing. Index files are read
/// one at a time.
async fn close_over_bases(
    repo: &Repository,
    reachable: &mut Reachable,
    index_names: &[String],
) -> Result<()> {
    loop {
        let mut added = false;
        for name in index_names {
            for p in read_index_file(repo, name).await?.packs {
                for e in &p.entries {
                    if let Some(base) = &e.base {
                        if reachable.bloom.may_contain(&e.id) && !reachable.bloom.may_contain(base)
                        {
                            reachable.bloom.insert(base);
                            added = true;
                        }
                    }
                }
            }
        }
        if !added {
            return Ok(());
        }
    }
}

/// Usage of one pack.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PackUsage {
    /// Pack id.
    pub id: BlobId,
    /// Data or metadata.
    pub kind: PackKind,
    /// Size in storage.
    pub size: u64,
    /// Blobs in it.
    pub blobs: u64,
    /// Blobs no snapshot references.
    pub unused_blobs: u64,
    /// Stored bytes of those.
    pub unused_bytes: u64,
    /// The reachable entries, kept for packs to rewrite.
    #[serde(skip)]
    live: Vec<PackEntry>,
}

/// What a gc would do. Produced by [`plan`], carried out by [`apply`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct GcPlan {
    /// Snapshots whose data is kept.
    pub snapshots: usize,
    /// Packs in the index.
    pub packs: usize,
    /// Bytes of all packs in storage.
    pub pack_bytes: u64,
    /// Blobs in the index.
    pub blobs: u64,
    /// Blobs no snapshot references.
    pub unused_blobs: u64,
    /// Packs with no reachable blob.
    pub delete: Vec<PackUsage>,
    /// Packs to rewrite.
    pub repack: Vec<PackUsage>,
    /// Packs in storage that no index file names (crashed writers, interrupted gc).
    pub orphans: Vec<PackUsage>,
    /// Index files.
    pub index_files: usize,
    /// Tombstones of earlier runs still waiting.
    pub pending_tombstones: Vec<String>,
    /// Bytes this gc frees once its tombstone is processed.
    pub bytes_freed_estimate: u64,
    /// Temporary files of interrupted writes (a killed backup leaves them) that are
    /// older than `session_stale_after`, so no live writer can own them: removed.
    pub stale_temporary_files: Vec<String>,
    /// Their bytes.
    pub stale_temporary_bytes: u64,
    #[serde(skip)]
    reachable: Option<Reachable>,
}

/// What a gc did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GcReport {
    /// Packs deleted.
    pub packs_deleted: u64,
    /// Bytes freed by deleting them.
    pub bytes_freed: u64,
    /// Packs rewritten.
    pub packs_rewritten: u64,
    /// New packs written by rewriting.
    pub packs_written: u64,
    /// Bytes written by rewriting.
    pub bytes_written: u64,
    /// Index files rewritten (deleted and replaced).
    pub index_files_rewritten: u64,
    /// Tombstones fully processed.
    pub tombstones_processed: u64,
    /// Tombstones waiting for writers that started before them.
    pub tombstones_blocked: Vec<String>,
    /// Writer sessions removed for lack of heartbeats.
    pub stale_sessions_removed: Vec<String>,
    /// Packs kept although planned for deletion (referenced again meanwhile, or a
    /// blob to rewrite failed verification).
    pub packs_kept: u64,
    /// Temporary files of interrupted writes removed.
    pub temporary_files_removed: u64,
    /// Bytes freed by removing them.
    pub temporary_bytes_freed: u64,
    /// Problems that did not stop gc.
    pub warnings: Vec<String>,
}

fn pack_id_from_name(name: &str) -> Option<(BlobId, PackKind)> {
    let kind = if name.starts_with("data/") {
        PackKind::Data
    } else if name.starts_with("meta/") {
        PackKind::Meta
    } else {
        return None;
    };
    BlobId::from_hex(name.rsplit('/').next()?)
        .ok()
        .map(|id| (id, kind))
}

/// Every snapshot; gc refuses to run when one cannot be read, since it would free that
/// snapshot's data.
async fn all_snapshots(repo: &Repository) -> Result<Vec<Snapshot>> {
    let (snapshots, damaged) = repo.list_snapshots_checked().await?;
    if let Some((name, e)) = damaged.first() {
        let file = name
            .strip_prefix(crate::repo::SNAPSHOTS_DIR)
            .unwrap_or(name);
        return Err(Error::corrupt(name, format!("{e}; gc will not run while a snapshot cannot be read (it would free its data): put an intact copy of that file back, or remove it with `dprepo forget {file}` (`dprepo repair snapshots --forget` removes every damaged one)")));
    }
    Ok(snapshots)
}

async fn stored_packs(repo: &Repository) -> Result<HashMap<BlobId, (PackKind, u64)>> {
    let mut out = HashMap::new();
    for prefix in ["data/", "meta/"] {
        for b in repo.storage().list(prefix).await? {
            if let Some((id, kind)) = pack_id_from_name(&b.name) {
                out.insert(id, (kind, b.size));
            }
        }
    }
    Ok(out)
}

async fn read_index_file(repo: &Repository, name: &str) -> Result<IndexFile> {
    let bytes = repo.storage().get(name).await?;
    let keys = repo.keys().clone();
    let name = name.to_string();
    run_cpu(move || IndexFile::decode(&keys, &bytes, &name)).await?
}

/// Compute what a gc would do. Reads every snapshot tree and index file; writes nothing.
///
/// # Errors
/// Storage errors; a snapshot that cannot be walked (gc refuses to guess).
pub async fn plan(repo: &Repository, options: &GcOptions) -> Result<GcPlan> {
    let snapshots = all_snapshots(repo).await?;
    let expected = repo.index().read().map(|i| i.blob_count()).unwrap_or(0);
    let mut reachable = Reachable::new(expected);
    for s in &snapshots {
        reachable.add_snapshot(repo, s).await?;
    }
    let stored = stored_packs(repo).await?;
    // Packs already named by a pending tombstone wait for it: planning them again would
    // copy the same live blobs once more on every gc while a backup runs.
    let already_doomed: HashSet<BlobId> = load_tombstones(repo)
        .await?
        .iter()
        .flat_map(|(_, t)| t.packs.iter().map(|p| p.id))
        .collect();
    let index_names = repo.storage().list(INDEX_DIR).await?;
    let names: Vec<String> = index_names.iter().map(|i| i.name.clone()).collect();
    close_over_bases(repo, &mut reachable, &names).await?;
    let mut seen: HashSet<BlobId> = HashSet::new();
    let (mut blobs, mut unused_blobs) = (0u64, 0u64);
    let (mut delete, mut repack) = (Vec::new(), Vec::new());
    for info in &index_names {
        let file = read_index_file(repo, &info.name).await?;
        for p in file.packs {
            if !seen.insert(p.id) {
                continue;
            }
            let Some(&(_, size)) = stored.get(&p.id) else {
                continue;
            };
            let mut usage = PackUsage {
                id: p.id,
                kind: p.kind,
                size,
                blobs: 0,
                unused_blobs: 0,
                unused_bytes: 0,
                live: Vec::new(),
            };
            for e in &p.entries {
                usage.blobs += 1;
                if reachable.bloom.may_contain(&e.id) {
                    usage.live.push(*e);
                } else {
                    usage.unused_blobs += 1;
                    usage.unused_bytes += u64::from(e.stored_len);
                }
            }
            blobs += usage.blobs;
            unused_blobs += usage.unused_blobs;
            if already_doomed.contains(&p.id) {
                continue;
            }
            if usage.live.is_empty() {
                delete.push(usage);
            } else if usage.unused_bytes as f64 > options.max_unused * size as f64 {
                repack.push(usage);
            }
        }
    }
    let orphans: Vec<PackUsage> = stored
        .iter()
        .filter(|(id, _)| !seen.contains(id) && !already_doomed.contains(id))
        .map(|(id, (kind, size))| PackUsage {
            id: *id,
            kind: *kind,
            size: *size,
            blobs: 0,
            unused_blobs: 0,
            unused_bytes: 0,
            live: Vec::new(),
        })
        .collect();
    for u in delete.iter_mut().chain(repack.iter_mut()) {
        if u.live.is_empty() {
            u.live = Vec::new();
        }
    }
    // A write in progress keeps its temporary file's time recent; one silent for as
    // long as a writer session may be is abandoned (its writer, if it ever resumes,
    // fails to rename the file and commits nothing).
    let cutoff = (options.clock)() - options.session_stale_after;
    let mut stale_temporary_files = Vec::new();
    let mut stale_temporary_bytes = 0;
    for t in repo.storage().list_temporary().await? {
        if chrono::DateTime::<chrono::Utc>::from(t.modified) < cutoff {
            stale_temporary_files.push(t.name);
            stale_temporary_bytes += t.size;
        }
    }
    stale_temporary_files.sort();
    let bytes_freed_estimate = delete.iter().chain(&orphans).map(|u| u.size).sum::<u64>()
        + repack.iter().map(|u| u.unused_bytes).sum::<u64>()
        + stale_temporary_bytes;
    let pending_tombstones = repo
        .storage()
        .list(TOMBSTONES_DIR)
        .await?
        .into_iter()
        .map(|b| b.name)
        .collect();
    Ok(GcPlan {
        snapshots: snapshots.len(),
        packs: seen.len(),
        pack_bytes: stored.values().map(|(_, s)| s).sum(),
        blobs,
        unused_blobs,
        delete,
        repack,
        orphans,
        index_files: index_names.len(),
        pending_tombstones,
        bytes_freed_estimate,
        stale_temporary_files,
        stale_temporary_bytes,
        reachable: Some(reachable),
    })
}

/// The gc lease as this process holds it: the lease and the storage version it was
/// written at, which renewal and release name so that they act only on this very lease
/// (SPEC.md section 18).
#[derive(Debug, Clone)]
pub struct HeldLease {
    /// The lease as written.
    pub lease: Lease,
    /// The version of `locks/gc` holding it.
    pub version: Version,
}

/// Take the gc lease for a gc.
///
/// # Errors
/// [`Error::Busy`] if another gc (or a repair) holds an unexpired lease.
pub async fn acquire_lease(repo: &Repository, options: &GcOptions) -> Result<HeldLease> {
    acquire_lease_for(repo, options, "gc").await
}

/// How many times [`acquire_lease_for`] looks again when the lease changed under it
/// (released, or taken over by someone else) before it answers busy.
const LEASE_ATTEMPTS: usize = 3;

/// Take the gc lease for `command` (`gc`, `repair index` ...): while it is held no gc
/// runs, so nothing gc would delete can be indexed or referenced behind its back.
///
/// A free name is taken with a create; an expired lease (or one whose holder is known
/// dead) with an update naming the version read, so that of two processes taking over
/// the same expired lease exactly one succeeds: the other's update finds a new version
/// and fails, and it then sees the winner's fresh lease.
///
/// # Errors
/// [`Error::Busy`] naming the holder if another process holds an unexpired lease.
pub async fn acquire_lease_for(
    repo: &Repository,
    options: &GcOptions,
    command: &str,
) -> Result<HeldLease> {
    // Checked before the lease is written too, so that a handle of a retired generation
    // normally leaves no lease sealed under its key behind (one that a rotation
    // overtakes between this check and the write is aged out, see `take_lease`).
    crate::session::newer_generation_check(repo).await?;
    let held = take_lease(repo, options, command).await?;
    // A handle that opened the repository before a key rotation committed must not
    // write under the lease: its index files, packs and tombstones would be sealed
    // under a key `key rotate --finish` retires (SPEC.md section 18.2). Rotations
    // commit under the lease, so checking once it is held is enough.
    if let Err(e) = crate::session::newer_generation_check(repo).await {
        release_lease(repo, &held).await;
        return Err(e);
    }
    Ok(held)
}

async fn take_lease(repo: &Repository, options: &GcOptions, command: &str) -> Result<HeldLease> {
    let now = (options.clock)();
    let mut token = [0u8; 16];
    OsRng.fill_bytes(&mut token);
    let me = crate::liveness::Holder::current();
    let lease = Lease {
        hostname: me.hostname,
        pid: me.pid,
        pid_namespace: me.pid_namespace,
        boot_id: me.boot_id,
        acquired: now,
        expires: now + options.lease_ttl,
        token: token.iter().map(|b| format!("{b:02x}")).collect(),
        command: command.to_string(),
    };
    let bytes = Bytes::from(lease.encode(repo.keys()));
    let storage = repo.storage();
    let held = |version| HeldLease {
        lease: lease.clone(),
        version,
    };
    for _ in 0..LEASE_ATTEMPTS {
        match storage
            .put_opts(LEASE_NAME, bytes.clone(), PutMode::Create)
            .await
        {
            Ok(version) => return Ok(held(version)),
            Err(Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
        let (existing, version) = match storage.get_versioned(LEASE_NAME).await {
            Ok(got) => (
                Lease::decode(repo.keys(), &got.data, LEASE_NAME),
                got.version,
            ),
            // Released meanwhile: create it again.
            Err(Error::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        match existing {
            Ok(existing) => {
                if existing.expires > now && !existing.holder().is_dead() {
                    return Err(busy(&existing, command));
                }
            }
            // No key of this handle opens it: a holder of a retired key generation
            // (killed between writing it and its generation check), a newer build, or
            // damage. Its `expires` cannot be read, so its age is the storage's
            // modification time: a live holder renews it every third of its time to
            // live, so one not written for a whole time to live is stale (SPEC.md
            // section 18).
            Err(e) => match unreadable_age(repo, LEASE_NAME, now).await? {
                None => continue, // released meanwhile
                Some(age) if age.is_some_and(|a| a > options.lease_ttl) => {}
                Some(age) => {
                    return Err(Error::Busy {
                        object: "the gc lease".into(),
                        reason: format!(
                            "{LEASE_NAME} does not open under this handle's keys ({e}); it may be held by a process of another key generation or a newer build{}; it is taken over once it has not been written for {} minutes: run {command} again then",
                            age.map(|a| format!(", last written {} s ago", a.num_seconds()))
                                .unwrap_or_default(),
                            options.lease_ttl.num_minutes()
                        ),
                    })
                }
            },
        }
        // Expired, or its holder died: replace exactly the lease read.
        match storage
            .put_opts(LEASE_NAME, bytes.clone(), PutMode::Update(version))
            .await
        {
            Ok(version) => return Ok(held(version)),
            // Another taker won, or the holder released it: look again.
            Err(Error::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::Busy {
        object: "the gc lease".into(),
        reason: format!(
            "it changed hands {LEASE_ATTEMPTS} times while {command} tried to take it; run {command} again"
        ),
    })
}

/// How long before `now` an object no held key opens was last written: `None` if it is
/// gone, `Some(None)` if the storage does not say (then it never counts as old).
///
/// # Errors
/// Storage errors.
pub(crate) async fn unreadable_age(
    repo: &Repository,
    name: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<Option<chrono::Duration>>> {
    match repo.storage().modified(name).await {
        Ok(modified) => Ok(Some(
            modified.map(|m| now - chrono::DateTime::<chrono::Utc>::from(m)),
        )),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn busy(existing: &Lease, command: &str) -> Error {
    Error::Busy {
        object: "the gc lease".into(),
        reason: format!(
            "`{}` runs on {} (pid {}) since {}, lease valid until {}; run {command} again when it has ended",
            existing.command, existing.hostname, existing.pid, existing.acquired, existing.expires
        ),
    }
}

/// The gc lease held by a command other than gc itself (repair), renewed in the
/// background until [`LeaseGuard::release`]: such commands have no natural points at
/// which to renew it, and may run longer than the lease's time to live.
#[derive(Debug)]
pub struct LeaseGuard {
    repo: Repository,
    lease: std::sync::Arc<tokio::sync::Mutex<HeldLease>>,
    renewal: tokio::task::JoinHandle<()>,
}

impl LeaseGuard {
    /// Take the lease for `command` and start renewing it every third of
    /// `options.lease_ttl`.
    ///
    /// # Errors
    /// As [`acquire_lease_for`].
    pub async fn acquire(
        repo: &Repository,
        options: &GcOptions,
        command: &str,
    ) -> Result<LeaseGuard> {
        let lease = acquire_lease_for(repo, options, command).await?;
        let every = (options.lease_ttl / 3)
            .to_std()
            .unwrap_or(std::time::Duration::from_secs(60))
            .max(std::time::Duration::from_secs(1));
        let (renewing, options) = (repo.clone(), options.clone());
        let lease = std::sync::Arc::new(tokio::sync::Mutex::new(lease));
        let renewed = lease.clone();
        let renewal = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                // Taken over (this process stalled past the ttl): stop renewing; the
                // release below then leaves the other holder's lease alone.
                if renew_lease(&renewing, &mut *renewed.lock().await, &options)
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(LeaseGuard {
            repo: repo.clone(),
            lease,
            renewal,
        })
    }

    /// Stop renewing and release the lease if it is still ours.
    pub async fn release(self) {
        self.renewal.abort();
        let _ = self.renewal.await;
        release_lease(&self.repo, &*self.lease.lock().await).await;
    }
}

/// Extend the lease, replacing exactly the version this process wrote last.
///
/// # Errors
/// [`Error::Busy`] if the lease was taken over (or removed) meanwhile; storage errors.
pub async fn renew_lease(
    repo: &Repository,
    held: &mut HeldLease,
    options: &GcOptions,
) -> Result<()> {
    let mut lease = held.lease.clone();
    lease.expires = (options.clock)() + options.lease_ttl;
    let written = repo
        .storage()
        .put_opts(
            LEASE_NAME,
            Bytes::from(lease.encode(repo.keys())),
            PutMode::Update(held.version.clone()),
        )
        .await;
    match written {
        Ok(version) => {
            *held = HeldLease { lease, version };
            Ok(())
        }
        Err(Error::Conflict { .. }) => {
            let by = match repo.storage().get(LEASE_NAME).await {
                Ok(bytes) => match Lease::decode(repo.keys(), &bytes, LEASE_NAME) {
                    Ok(current) => format!(
                        "taken over by `{}` on {} (pid {})",
                        current.command, current.hostname, current.pid
                    ),
                    Err(_) => "replaced by an unreadable lease".into(),
                },
                Err(_) => "removed".into(),
            };
            Err(Error::Busy {
                object: "the gc lease".into(),
                reason: format!("{by}; this {} stops", held.lease.command),
            })
        }
        Err(e) => Err(e),
    }
}

/// Release the lease if it is still the version this process wrote. (S3 has no
/// conditional delete: a holder that stalls past its expiry between the check and the
/// delete could remove a successor's lease, the window SPEC.md section 18 accepts.)
pub async fn release_lease(repo: &Repository, held: &HeldLease) {
    if let Ok(meta) = repo.storage().head(LEASE_NAME).await {
        if meta.version == held.version {
            let _ = repo.storage().delete(LEASE_NAME).await;
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
    let name = format!("{TOMBSTONES_DIR}{}", BlobId::of_stored(&bytes).to_hex());
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
    let index_names: Vec<String> = repo
        .storage()
        .list(INDEX_DIR)
        .await?
        .into_iter()
        .map(|b| b.name)
        .collect();
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
        repo.storage().delete(&kind.storage_name(id)).await?;
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
            &format!("{INDEX_DIR}{}", BlobId::of_stored(&bytes).to_hex()),
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
        let name = usage.kind.storage_name(&usage.id);
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
        .put(&pack.kind.storage_name(&pack.id), &pack.bytes)
        .await?;
    report.packs_written += 1;
    report.bytes_written += pack.bytes.len() as u64;
    Ok(IndexPack {
        id: pack.id,
        kind: pack.kind,
        entries: pack.entries,
    })
}

/// Remove snapshots (delete their manifests). Data is freed by the next gc.
///
/// # Errors
/// Storage errors.
pub async fn forget_snapshots(repo: &Repository, ids: &[BlobId]) -> Result<()> {
    for id in ids {
        repo.storage()
            .delete(&format!("{}{}", crate::repo::SNAPSHOTS_DIR, id.to_hex()))
            .await?;
    }
    Ok(())
}

/// Remove snapshot files that cannot be read (damaged manifests, by storage name
/// `snapshots/<name>` as [`Repository::list_snapshots_checked`] reports them): without
/// a readable manifest there is nothing to forget by id, and gc refuses to run while
/// they exist.
///
/// # Errors
/// [`Error::InvalidArgument`] for a name outside `snapshots/`; storage errors.
pub async fn forget_snapshot_files(repo: &Repository, names: &[String]) -> Result<()> {
    for name in names {
        let file = name.strip_prefix(crate::repo::SNAPSHOTS_DIR).unwrap_or("");
        if file.is_empty() || file.contains('/') {
            return Err(Error::InvalidArgument(format!(
                "{name} is not a snapshot file"
            )));
        }
        repo.storage().delete(name).await?;
    }
    Ok(())
}

/// Write a copy of `snap` with a new expiration time, then delete the original.
/// Returns the new snapshot (manifests are content-addressed, so the id changes).
///
/// # Errors
/// As [`rewrite_manifest`].
pub async fn set_expiry(
    repo: &Repository,
    snap: &Snapshot,
    expires: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Snapshot> {
    rewrite_manifest(repo, snap, "snapshot-expire", |m| m.expires = expires).await
}

/// Write a copy of `snap`'s manifest changed by `change` (expiry, tags), with
/// `original` naming the first snapshot of the chain, then delete the old manifest.
/// Returns the new snapshot; an unchanged manifest keeps its id and file.
///
/// The new manifest is written inside a writer session, as a backup writes its own
/// (SPEC.md section 15): a gc listing snapshots while the old file is deleted and the
/// new one written cannot miss both, because the session holds its deletions back.
///
/// # Errors
/// Storage errors; the session's error when it expired (gc saw no heartbeat)
/// before the manifest could be written (nothing is changed then).
pub async fn rewrite_manifest(
    repo: &Repository,
    snap: &Snapshot,
    command: &str,
    change: impl FnOnce(&mut crate::manifest::SnapshotManifest),
) -> Result<Snapshot> {
    let mut manifest = snap.manifest.clone();
    change(&mut manifest);
    if manifest == snap.manifest {
        return Ok(snap.clone());
    }
    manifest.original = Some(manifest.original.unwrap_or(snap.id));
    let bytes = manifest.encode(repo.keys());
    let id = BlobId::of_stored(&bytes);
    let (session, _tombstoned) = crate::session::WriterSession::start(repo, command).await?;
    let written = async {
        session.check_alive().await?;
        repo.storage()
            .put(
                &format!("{}{}", crate::repo::SNAPSHOTS_DIR, id.to_hex()),
                &bytes,
            )
            .await
    }
    .await;
    session.end().await;
    written?;
    if id != snap.id {
        forget_snapshots(repo, &[snap.id]).await?;
    }
    Ok(Snapshot { id, manifest })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bloom_filter_has_no_false_negatives_and_few_false_positives() {
        let ids: Vec<BlobId> = (0..10_000u64)
            .map(|i| BlobId(*blake3::hash(&i.to_le_bytes()).as_bytes()))
            .collect();
        let mut bloom = Bloom::new(ids.len());
        for id in &ids[..5000] {
            bloom.insert(id);
        }
        assert!(ids[..5000].iter().all(|id| bloom.may_contain(id)));
        let fp = ids[5000..]
            .iter()
            .filter(|id| bloom.may_contain(id))
            .count();
        assert!(fp < 100, "{fp} false positives out of 5000");
    }
}
