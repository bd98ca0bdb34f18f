//! Master-key rotation (`dprepo key rotate`, SPEC.md section 5.1 and 18.2).
//!
//! [`rotate`] makes master key generation g + 1 and commits it by re-sealing the config
//! under it: from then on only keys of the new generation open the repository and every
//! process that opens it writes under the new key, while objects sealed under generation
//! g stay readable through the new generation's key ring. [`finish`] re-encrypts every
//! object still sealed under generation g (packs, index files, manifests, tombstones)
//! through the gc protocol's copy-index-delete order, then deletes the old key files and
//! drops generation g's key from the ring: after it, the old master key decrypts nothing
//! in the repository.
//!
//! Both hold the gc lease. Crash safety: `rotate` writes the key ring and the new key
//! file before the config (the commit point); a crash before leaves leftovers that open
//! nothing and that the next `rotate` removes. `finish` goes one index file at a time:
//! it writes that file's re-encrypted packs, then an index file naming the copies
//! (deleting the old one), then deletes the old packs, so no index file names a deleted
//! pack and the extra room needed is one index file's packs; a rerun skips what is
//! already under the new key. Writers that opened the repository before the rotation keep writing under
//! generation g until their session ends: `finish` waits for them (refusing while one
//! is live), and writers starting a session after a newer key ring appeared abort.

use crate::blob::blob_aad;
use crate::crypto::{Keys, MasterKey};
use crate::error::{Error, Result};
use crate::gc::{GcOptions, LeaseGuard};
use crate::id::BlobId;
use crate::index::{IndexFile, IndexPack};
use crate::key::{KdfParams, KeyFile, KeyKind};
use crate::keyring::{KeyRing, PreviousKey, KEYRING_DIR};
use crate::manifest::{SessionMarker, SnapshotManifest, Tombstone};
use crate::pack::{decode_pack, PackBuilder, PackKind};
use crate::repo::{
    current_hostname, current_username, run_cpu, Repository, CONFIG_NAME, INDEX_DIR, KEYS_DIR,
    SESSIONS_DIR, SNAPSHOTS_DIR,
};
use crate::session::TOMBSTONES_DIR;
use crate::storage::{Bytes, PutMode};
use std::collections::{BTreeMap, BTreeSet};

/// What [`rotate`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RotateReport {
    /// The new generation.
    pub generation: u32,
    /// The key file of the password for the new generation.
    pub key_file: String,
    /// Key files of the old generation deleted (they no longer open the repository).
    pub removed_key_files: Vec<String>,
}

/// What [`finish`] did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FinishReport {
    /// The generation now alone.
    pub generation: u32,
    /// Packs re-encrypted (old id → new id).
    pub packs_reencrypted: usize,
    /// Bytes of packs written.
    pub bytes_written: u64,
    /// Index files rewritten.
    pub index_files_rewritten: usize,
    /// Snapshots re-encrypted: old id → new id (manifests are content-addressed).
    pub snapshots: Vec<(String, String)>,
    /// Tombstones re-encrypted.
    pub tombstones_reencrypted: usize,
    /// Snapshot locators of the old generation deleted (F7b).
    pub locators_deleted: usize,
    /// Unindexed packs not under the newest key (left by an interrupted finish) deleted.
    pub old_orphans_deleted: usize,
    /// Stale sessions of old-generation writers removed.
    pub stale_sessions_removed: Vec<String>,
    /// Key files and key rings of the old generation deleted.
    pub removed: Vec<String>,
    /// Whether the old generation's key was dropped (false: there was nothing to do).
    pub retired: bool,
}

/// Progress of [`finish_with_progress`], for a status line.
#[derive(Debug, Default)]
pub struct FinishProgress {
    /// Packs named by the index files, each counted once.
    pub packs_total: std::sync::atomic::AtomicU64,
    /// Packs read and, where needed, re-encrypted.
    pub packs_done: std::sync::atomic::AtomicU64,
    /// Bytes of packs read.
    pub bytes_read: std::sync::atomic::AtomicU64,
    /// Bytes of re-encrypted packs written.
    pub bytes_written: std::sync::atomic::AtomicU64,
}

/// Make a new master key generation and commit it (SPEC.md section 5.1, R1 to R6).
/// `password` must open the key file `repo` was opened with; a key file for it wrapping
/// the new master key replaces that one. Other key files (other passwords, access keys)
/// wrap the old master key and stop opening the repository: they are refused unless
/// `remove_other_keys`, and deleted.
///
/// # Errors
/// [`Error::InvalidArgument`] if a rotation is not finished yet, the handle was opened
/// with an access key, `password` does not open its key file, or other key files exist
/// without `remove_other_keys`; [`Error::Busy`] if gc or repair holds the lease;
/// storage errors (before the commit nothing changed; after it, old key files may
/// remain, which `finish` deletes).
pub async fn rotate(
    repo: &Repository,
    password: &[u8],
    remove_other_keys: bool,
    options: &GcOptions,
) -> Result<RotateReport> {
    if repo.keys().holds_older() {
        return Err(Error::InvalidArgument(format!(
            "the rotation to master key generation {} is not finished: run `dprepo key rotate --finish` first",
            repo.key_generation()
        )));
    }
    // A rotation committed since this handle opened: say so (checked again under the
    // lease, where it is airtight).
    crate::repo::newer_generation_check(repo).await?;
    let storage = repo.storage().clone();
    let in_use = repo.opened_with().to_string();
    let file = KeyFile::decode(&storage.get(&in_use).await?, &in_use)?;
    if file.kind != KeyKind::Password {
        return Err(Error::InvalidArgument(format!(
            "{in_use} is an access key: rotate with a password (access keys are made again for the new key with `dprepo key add-access`)"
        )));
    }
    let kdf = file.kdf;
    let (pw, check) = (password.to_vec(), file.clone());
    let opened = run_cpu(move || check.open(&pw)).await??;
    if opened.is_none_or(|m| m.0 != repo.master().0) {
        return Err(Error::InvalidArgument(format!(
            "the password given does not open {in_use}, the key this command opened with"
        )));
    }
    let lease = LeaseGuard::acquire(repo, options, "key rotate").await?;
    let result = rotate_locked(repo, password, kdf, remove_other_keys).await;
    lease.release().await;
    result
}

async fn rotate_locked(
    repo: &Repository,
    password: &[u8],
    kdf: KdfParams,
    remove_other_keys: bool,
) -> Result<RotateReport> {
    let storage = repo.storage().clone();
    let generation = repo.key_generation();
    let new_generation = generation + 1;
    // The config version the commit will name, read now under the lease: a rotation
    // that stalled past the lease's expiry while another one committed then fails its
    // commit (Conflict) instead of sealing the config under a key ring the other
    // rotation's R1 deleted.
    let current = storage.get_versioned(CONFIG_NAME).await?;
    if crate::config::Config::decode(&repo.keys().newest_only(), &current.data).is_err() {
        crate::repo::newer_generation_check(repo).await?;
        return Err(Error::Conflict {
            object: CONFIG_NAME.to_string(),
        });
    }
    // R1: leftovers of an interrupted rotation (key rings of generations above this
    // handle's, which opened the config, were never committed).
    for info in storage.list(KEYRING_DIR).await? {
        if crate::layout::parse_keyring(&info.name).is_some_and(|g| g > generation) {
            storage.delete(&info.name).await?;
        }
    }
    let mut old_key_files: Vec<String> = Vec::new();
    let mut listed: Vec<String> = storage
        .list(KEYS_DIR)
        .await?
        .into_iter()
        .map(|b| b.name)
        .collect();
    listed.sort();
    // Key files are untrusted bytes: the password is hashed only with key files that can
    // be an interrupted rotation's (R4 writes them with the KDF parameters of the key file
    // in use, under their storage id), and with at most MAX_KEYS_TRIED of them, as
    // opening does. Any other key file costs no hashing: it is one of the other keys.
    let mut hashed = 0;
    for name in listed {
        if name != repo.opened_with() && hashed < crate::repo::MAX_KEYS_TRIED {
            if let Ok(bytes) = storage.get(&name).await {
                let own_name =
                    crate::layout::id_in(KEYS_DIR, &name) == Some(BlobId::of_stored(&bytes));
                match KeyFile::decode(&bytes, &name) {
                    Ok(file) if own_name && file.kind == KeyKind::Password && file.kdf == kdf => {
                        hashed += 1;
                        // The key file an interrupted rotation wrote for this password
                        // wraps a master key that opens nothing (its generation was
                        // never committed): remove it.
                        let pw = password.to_vec();
                        let opened = run_cpu(move || file.open(&pw)).await??;
                        if opened.is_some_and(|m| m.0 != repo.master().0) {
                            storage.delete(&name).await?;
                            continue;
                        }
                    }
                    _ => {}
                }
            }
        }
        old_key_files.push(name);
    }
    old_key_files.sort();
    let others: Vec<&String> = old_key_files
        .iter()
        .filter(|n| **n != repo.opened_with())
        .collect();
    if !others.is_empty() && !remove_other_keys {
        return Err(Error::InvalidArgument(format!(
            "{} other key file(s) wrap the current master key and would stop opening the repository: {}; give --remove-other-keys to rotate anyway (then add passwords and access keys again)",
            others.len(),
            others.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    // R2: the new master key and its key ring.
    let master = MasterKey::generate();
    let ring = KeyRing {
        generation: new_generation,
        content_id_key: repo.keys().content_id_key(),
        previous: vec![PreviousKey {
            generation,
            encryption_key: repo.keys().encryption_key(),
        }],
        old_key_files: old_key_files.clone(),
    };
    let keys = ring.keys(&master);
    storage
        .create(&crate::layout::keyring(new_generation), &ring.encode(&keys))
        .await?;
    // R3: the password's key file for the new master key, read back and checked.
    let (pw, m) = (password.to_vec(), master.clone());
    let bytes =
        run_cpu(move || KeyFile::create(&m, &pw, kdf, &current_hostname(), &current_username()))
            .await??;
    let key_file = crate::layout::key_file(&BlobId::of_stored(&bytes));
    storage.create(&key_file, &bytes).await?;
    let stored = KeyFile::decode(&storage.get(&key_file).await?, &key_file)?;
    let pw = password.to_vec();
    let reopened = run_cpu(move || stored.open(&pw)).await??;
    if reopened.is_none_or(|m| m.0 != master.0) {
        return Err(Error::corrupt(
            &key_file,
            "the new key file does not open with the password when read back",
        ));
    }
    // R4, the commit point: the config, re-sealed under the new generation as version 2.
    let mut config = repo.config().clone();
    config.version = crate::config::REPOSITORY_VERSION_ROTATED;
    storage
        .put_opts(
            CONFIG_NAME,
            Bytes::from(config.encode(&keys)),
            PutMode::Update(current.version),
        )
        .await?;
    // R5: the old key files open nothing now.
    let mut removed = Vec::new();
    for name in &old_key_files {
        match storage.delete(name).await {
            Ok(()) | Err(Error::NotFound { .. }) => removed.push(name.clone()),
            Err(e) => return Err(e),
        }
    }
    Ok(RotateReport {
        generation: new_generation,
        key_file,
        removed_key_files: removed,
    })
}

/// Re-encrypt everything still sealed under the previous generation, then retire it
/// (SPEC.md section 18.2, F1 to F9). Safe to run again after any failure.
///
/// # Errors
/// [`Error::Busy`] while a writer session of an older generation is live (run again
/// when it ended), or gc holds the lease; [`Error::InvalidArgument`] if `repo` is not
/// of the newest generation; [`Error::Corrupt`] for objects that do not decode under
/// any held key (run `dprepo verify` and repair first); storage errors.
pub async fn finish(repo: &Repository, options: &GcOptions) -> Result<FinishReport> {
    finish_with_progress(repo, options, &FinishProgress::default()).await
}

/// [`finish`], counting packs and bytes in `progress` as it goes.
///
/// # Errors
/// As [`finish`].
pub async fn finish_with_progress(
    repo: &Repository,
    options: &GcOptions,
    progress: &FinishProgress,
) -> Result<FinishReport> {
    let storage = repo.storage().clone();
    let generation = repo.key_generation();
    let mut report = FinishReport {
        generation,
        ..FinishReport::default()
    };
    if generation < 2 {
        return Ok(report); // never rotated: nothing to finish
    }
    let ring_name = crate::layout::keyring(generation);
    let lease = LeaseGuard::acquire(repo, options, "key rotate --finish").await?;
    let result = async {
        // Read under the lease: another finish may have retired the ring meanwhile.
        let current = storage.get_versioned(&ring_name).await?;
        let ring = KeyRing::decode(repo.keys(), &current.data, &ring_name)?;
        wait_for_old_writers(repo, options, &mut report).await?;
        reencrypt(repo, &mut report, progress).await?;
        // F8: the old key files and key rings.
        for name in &ring.old_key_files {
            match storage.delete(name).await {
                Ok(()) => report.removed.push(name.clone()),
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        for info in storage.list(KEYRING_DIR).await? {
            if crate::layout::parse_keyring(&info.name).is_some_and(|g| g < generation) {
                storage.delete(&info.name).await?;
                report.removed.push(info.name);
            }
        }
        // F9: retire: the ring keeps only the content-id key.
        if !ring.previous.is_empty() || !ring.old_key_files.is_empty() {
            let mut retired = ring.clone();
            retired.previous.clear();
            retired.old_key_files.clear();
            storage
                .put_opts(
                    &ring_name,
                    Bytes::from(retired.encode(repo.keys())),
                    PutMode::Update(current.version.clone()),
                )
                .await?;
            report.retired = true;
        }
        Ok(())
    }
    .await;
    lease.release().await;
    result.map(|()| report)
}

/// F2: refuse while a writer of an older generation may still commit; remove the
/// markers of those that are stale (as gc's G6 does, so they abort at S-5).
async fn wait_for_old_writers(
    repo: &Repository,
    options: &GcOptions,
    report: &mut FinishReport,
) -> Result<()> {
    let storage = repo.storage();
    let now = (options.clock)();
    let mut live = Vec::new();
    for info in storage.list(SESSIONS_DIR).await? {
        let bytes = match storage.get(&info.name).await {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        let marker = match SessionMarker::decode(repo.keys(), &bytes, &info.name) {
            Ok(marker) => marker,
            // No held key opens it: a writer of a retired generation killed between S-1
            // and S-2b, a newer build, or damage. Aged by the storage's modification
            // time (a live writer rewrites its marker every 120 s): stale once not
            // written for session_stale_after, live (it may still commit) before.
            Err(e) => {
                match crate::gc::unreadable_age(repo, &info.name, now).await? {
                    None => {}
                    Some(Some(age)) if age > options.session_stale_after => {
                        storage.delete(&info.name).await?;
                        report.stale_sessions_removed.push(info.name);
                    }
                    Some(_) => live.push(format!(
                        "{} (no key of this handle opens it: {e}; it counts as stale once not written for {} minutes)",
                        info.name,
                        options.session_stale_after.num_minutes()
                    )),
                }
                continue;
            }
        };
        if marker.key_generation.unwrap_or(0) >= repo.key_generation() {
            continue;
        }
        if marker.heartbeat < now - options.session_stale_after || marker.holder().is_dead() {
            let _ = storage.delete(&info.name).await;
            report.stale_sessions_removed.push(info.name);
        } else {
            live.push(format!(
                "{} on {} (pid {})",
                info.name, marker.hostname, marker.pid
            ));
        }
    }
    if live.is_empty() {
        Ok(())
    } else {
        Err(Error::Busy {
            object: "the key rotation".into(),
            reason: format!(
                "{} writer(s) that opened the repository before the rotation still run: {}; run `dprepo key rotate --finish` again when they have ended",
                live.len(),
                live.join(", ")
            ),
        })
    }
}

/// F3 to F7: packs, index files, manifests and tombstones under the newest key.
async fn reencrypt(
    repo: &Repository,
    report: &mut FinishReport,
    progress: &FinishProgress,
) -> Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    let storage = repo.storage().clone();
    let keys = repo.keys().clone();
    let newest = keys.newest_only();
    // F3 to F5, one index file at a time: its packs re-encrypted and put, an index file
    // naming the copies put, the old index file deleted, then the originals deleted. So
    // the extra room is one index file's packs (not a copy of the whole repository),
    // and a killed run leaves at most that much as orphans under the newest key, which
    // gc collects. A pack named by several index files (duplicates a crashed gc left)
    // is copied once and deleted only when the last file naming it was rewritten.
    let mut index_files = Vec::new();
    let mut naming: BTreeMap<BlobId, usize> = BTreeMap::new();
    for info in storage.list(INDEX_DIR).await? {
        let bytes = storage.get(&info.name).await?;
        let file = IndexFile::decode(&keys, &bytes, &info.name)?;
        for p in &file.packs {
            *naming.entry(p.id).or_default() += 1;
        }
        index_files.push(info.name);
    }
    progress.packs_total.store(naming.len() as u64, Relaxed);
    let mut checked: std::collections::HashSet<BlobId> = std::collections::HashSet::new();
    let mut moved: BTreeMap<BlobId, IndexPack> = BTreeMap::new();
    for name in index_files {
        // Read again: one index file is held at a time.
        let bytes = storage.get(&name).await?;
        let file = IndexFile::decode(&keys, &bytes, &name)?;
        let stale = IndexFile::decode(&newest, &bytes, &name).is_err();
        // F3: this file's packs.
        let mut changed = false;
        for p in &file.packs {
            if moved.contains_key(&p.id) {
                changed = true;
                continue;
            }
            if !checked.insert(p.id) {
                continue; // under the newest key already, found for an earlier file
            }
            let pack_name = crate::layout::pack(p.kind, &p.id);
            let bytes = storage.get(&pack_name).await?;
            progress.bytes_read.fetch_add(bytes.len() as u64, Relaxed);
            let (k, n, kind) = (keys.clone(), pack_name.clone(), p.kind);
            let copy = run_cpu(move || reencrypt_pack(&k, kind, &bytes, &n)).await??;
            progress.packs_done.fetch_add(1, Relaxed);
            if let Some((pack, len)) = copy {
                progress.bytes_written.fetch_add(len, Relaxed);
                storage
                    .put(&crate::layout::pack(p.kind, &pack.id), &pack.bytes)
                    .await?;
                report.packs_reencrypted += 1;
                report.bytes_written += len;
                moved.insert(
                    p.id,
                    IndexPack {
                        id: pack.id,
                        kind: p.kind,
                        entries: pack.entries,
                    },
                );
                changed = true;
            }
        }
        // F4: an index file naming the copies, then the old file goes.
        if stale || changed {
            let packs = file
                .packs
                .iter()
                .map(|p| moved.get(&p.id).cloned().unwrap_or_else(|| p.clone()))
                .collect();
            let new = IndexFile {
                obsoletes: Vec::new(),
                packs,
            };
            let bytes = new.encode(&keys);
            let new_name = crate::layout::index_file(&BlobId::of_stored(&bytes));
            storage.put(&new_name, &bytes).await?;
            storage.delete(&name).await?;
            report.index_files_rewritten += 1;
        }
        // F5: the originals no index file names any more.
        for p in &file.packs {
            let left = naming.get_mut(&p.id).map(|n| {
                *n = n.saturating_sub(1);
                *n
            });
            // Entries of a copy are held only while a later index file names it.
            if left == Some(0) && moved.remove(&p.id).is_some() {
                match storage.delete(&crate::layout::pack(p.kind, &p.id)).await {
                    Ok(()) | Err(Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    // F5b: packs no index file names whose header the newest key does not open: left
    // by an interrupted finish (or an old-generation writer that died before its index
    // file). F2 showed no old-generation writer runs, so none of them can still be
    // indexed; delete them rather than leave bytes the old key reads.
    let mut indexed = std::collections::HashSet::new();
    for info in storage.list(INDEX_DIR).await? {
        let bytes = storage.get(&info.name).await?;
        for p in IndexFile::decode(&keys, &bytes, &info.name)?.packs {
            indexed.insert(p.id);
        }
    }
    for kind in PackKind::ALL {
        for info in storage.list(crate::layout::pack_dir(kind)).await? {
            let Some((_, id)) = crate::layout::parse_pack(&info.name) else {
                continue;
            };
            if indexed.contains(&id) {
                continue;
            }
            let bytes = match storage.get(&info.name).await {
                Ok(b) => b,
                Err(Error::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            let (k, n) = (keys.clone(), info.name.clone());
            // Only a pack the previous key opens is deleted: one no held key opens (a
            // newer build's pack in flight, or damage) is not this command's to remove.
            let stale = run_cpu(move || reencrypt_pack(&k, kind, &bytes, &n))
                .await?
                .is_ok_and(|copy| copy.is_some());
            if stale {
                storage.delete(&info.name).await?;
                report.old_orphans_deleted += 1;
            }
        }
    }
    // F6: manifests (a new id each: `original` names the first). A run killed between
    // the put and the delete left the re-sealed copy beside the old manifest: a manifest
    // under the newest key with the same `original` and tree supersedes the old one (as
    // after `tag`), so the rerun only deletes the old one and a killed finish never
    // leaves a snapshot twice. 64 bytes per snapshot are held.
    let mut resealed = std::collections::HashSet::new();
    let mut old_generation = Vec::new();
    for info in storage.list(SNAPSHOTS_DIR).await? {
        let bytes = match storage.get(&info.name).await {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => continue, // forgotten meanwhile
            Err(e) => return Err(e),
        };
        match SnapshotManifest::decode(&newest, &bytes, &info.name) {
            Ok(manifest) => {
                if let Some(original) = manifest.original {
                    resealed.insert((original, manifest.tree));
                }
            }
            Err(_) => old_generation.push(info.name),
        }
    }
    for name in old_generation {
        let bytes = match storage.get(&name).await {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        let mut manifest = SnapshotManifest::decode(&keys, &bytes, &name)?;
        let old = BlobId::of_stored(&bytes);
        let original = manifest.original.unwrap_or(old);
        manifest.original = Some(original);
        if resealed.contains(&(original, manifest.tree)) {
            storage.delete(&name).await?;
            continue;
        }
        let new = manifest.encode(&keys);
        let id = BlobId::of_stored(&new);
        storage.put(&crate::layout::snapshot(&id), &new).await?;
        storage.delete(&name).await?;
        report.snapshots.push((old.to_hex(), id.to_hex()));
    }
    // F7: pending tombstones (a writer that saw the old name blocks the new one, the
    // safe direction, until it ends).
    for info in storage.list(TOMBSTONES_DIR).await? {
        let bytes = storage.get(&info.name).await?;
        if Tombstone::decode(&newest, &bytes, &info.name).is_ok() {
            continue;
        }
        let tombstone = Tombstone::decode(&keys, &bytes, &info.name)?;
        let new = tombstone.encode(&keys);
        let new_name = crate::layout::tombstone(&BlobId::of_stored(&new));
        storage.create(&new_name, &new).await?;
        storage.delete(&info.name).await?;
        report.tombstones_reencrypted += 1;
    }
    // F7a: catalogue objects (derived data, section 14.2) under the old key: F6 gave
    // the manifests they describe new ids, so they are deleted, not sealed again.
    for name in storage.list_names(crate::catalog::CATALOG_DIR).await? {
        let Ok(bytes) = storage.get(&name).await else {
            continue;
        };
        if crate::catalog::open(&newest, &name, &bytes).is_err()
            && crate::catalog::open(&keys, &name, &bytes).is_ok()
        {
            storage.delete(&name).await?;
        }
    }
    // F7b: locators the newest key does not open. The packs they name were renamed by
    // F3 anyway; the next backup of each chain loads the index and writes a new one.
    for id in crate::locator::list(storage.as_ref()).await? {
        let name = crate::layout::locator(&id);
        let bytes = match storage.get(&name).await {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        if crate::locator::Locator::decode(&newest, &bytes, &id).is_ok() {
            continue;
        }
        match storage.delete(&name).await {
            Ok(()) => report.locators_deleted += 1,
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A pack sealed again under the newest key.
struct ReencryptedPack {
    id: BlobId,
    bytes: Vec<u8>,
    entries: Vec<crate::pack::PackEntry>,
}

/// `pack` with every blob and its header under the newest key of `keys`, or `None` if
/// all of it already is. Blob payloads are opened and sealed again unchanged (same
/// associated data, same length), so offsets and lengths stay.
fn reencrypt_pack(
    keys: &Keys,
    kind: PackKind,
    pack: &[u8],
    object: &str,
) -> Result<Option<(ReencryptedPack, u64)>> {
    let newest = keys.newest_only();
    let entries = decode_pack(keys, pack, object)?;
    let mut changed = decode_pack(&newest, pack, object).is_err();
    let mut builder = PackBuilder::with_capacity(kind, pack.len());
    for e in &entries {
        let start = e.offset as usize;
        let end = start + e.stored_len as usize;
        let stored = pack.get(start..end).ok_or_else(|| {
            Error::corrupt(
                object,
                format!("blob {} past the end of the pack", e.id.short()),
            )
        })?;
        let aad = blob_aad(e.blob_type, &e.id, e.base.as_ref());
        let sealed = match newest.open(&aad, stored, object) {
            Ok(_) => stored.to_vec(),
            Err(_) => {
                changed = true;
                let payload = keys.open(&aad, stored, object)?;
                newest.seal(&aad, &payload)
            }
        };
        builder.add_entry(e.blob_type, e.id, &sealed, e.raw_len, e.base);
    }
    if !changed {
        return Ok(None);
    }
    let finished = builder.finish(&newest);
    let len = finished.bytes.len() as u64;
    Ok(Some((
        ReencryptedPack {
            id: finished.id,
            bytes: finished.bytes,
            entries: finished.entries,
        },
        len,
    )))
}

/// Which generations' objects remain, for tests and `verify`: names of files in
/// `dirs` that the newest key alone does not open.
///
/// # Errors
/// Storage errors.
pub async fn objects_not_under_newest(repo: &Repository) -> Result<BTreeSet<String>> {
    let storage = repo.storage();
    let newest = repo.keys().newest_only();
    let mut out = BTreeSet::new();
    for info in storage.list(INDEX_DIR).await? {
        let bytes = storage.get(&info.name).await?;
        if IndexFile::decode(&newest, &bytes, &info.name).is_err() {
            out.insert(info.name);
        }
    }
    for info in storage.list(SNAPSHOTS_DIR).await? {
        let bytes = storage.get(&info.name).await?;
        if SnapshotManifest::decode(&newest, &bytes, &info.name).is_err() {
            out.insert(info.name);
        }
    }
    for id in crate::locator::list(storage.as_ref()).await? {
        let name = crate::layout::locator(&id);
        let bytes = storage.get(&name).await?;
        if crate::locator::Locator::decode(&newest, &bytes, &id).is_err() {
            out.insert(name);
        }
    }
    for kind in PackKind::ALL {
        for info in storage.list(crate::layout::pack_dir(kind)).await? {
            let bytes = storage.get(&info.name).await?;
            let keys = repo.keys().clone();
            let name = info.name.clone();
            if run_cpu(move || reencrypt_pack(&keys, kind, &bytes, &name))
                .await??
                .is_some()
            {
                out.insert(info.name);
            }
        }
    }
    Ok(out)
}
