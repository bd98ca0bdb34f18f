//! The repository handle: opening with a password, the in-memory index, reading blobs,
//! trees and snapshots, and resolving snapshot selectors.
//!
//! Layout of a repository in storage (SPEC.md, "Repository layout"):
//! `config`, `keys/<id>`, `data/<xx>/<id>`, `meta/<xx>/<id>`, `index/<id>`,
//! `snapshots/<id>`, `sessions/<id>`.

use crate::blob::{decode_blob, decode_delta_blob, BlobType, DeltaBase};
use crate::config::Config;
use crate::crypto::{Keys, MasterKey};
use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::index::{missing_blob, BlobLocation, Index, IndexFile};
use crate::index_cache::IndexCache;
use crate::key::{AccessKey, KdfParams, KeyFile, KeyKind};
use crate::manifest::SnapshotManifest;
use crate::storage::{BlobInfo, Storage};
use crate::tree::{Node, NodeKind, Tree};
use dprepo_chunker::ChunkerParams;
use std::sync::{Arc, RwLock};

mod key_files;

/// Index files read and decoded at once while loading the index.
const INDEX_FILES_IN_FLIGHT: usize = 8;
/// Blobs stored in at most this many bytes are decoded on the calling task.
const INLINE_DECODE_BYTES: u32 = 64 << 10;
/// Memory for index files read and decoded at once while loading the index, counted
/// as [`DECODED_PER_STORED_BYTE`] times their stored size.
const INDEX_BYTES_IN_FLIGHT: u64 = 32 << 20;
/// Memory a decoding index file takes per stored byte: its entries (about 2.4 times the
/// stored size, which is compressed and encrypted) plus the decompressed body while it
/// is decoded. Counting stored bytes alone let 8 files of 100k entries hold 69 MiB
/// (BENCHMARKS.md, "Index cache lookups at 10 million blobs").
const DECODED_PER_STORED_BYTE: u64 = 3;

/// Storage name of the config file.
pub const CONFIG_NAME: &str = "config";
/// Directory of key files.
pub const KEYS_DIR: &str = "keys/";
/// Directory of index files.
pub const INDEX_DIR: &str = "index/";
/// Directory of snapshot manifests.
pub const SNAPSHOTS_DIR: &str = "snapshots/";
/// Directory of writer session markers.
pub const SESSIONS_DIR: &str = "sessions/";
/// Snapshot files read and decoded at once by [`Repository::read_snapshots`].
pub const SNAPSHOT_READS_IN_FLIGHT: usize = 64;
/// Most key files tried when opening (each costs one Argon2 run).
pub const MAX_KEYS_TRIED: usize = 64;

/// Settings chosen when a repository is created.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Password hashing cost.
    pub kdf: KdfParams,
    /// Chunker for directory backups.
    pub chunker: ChunkerParams,
    /// Chunker for stream backups.
    pub stream_chunker: ChunkerParams,
    /// Target pack size in bytes.
    pub pack_size: u32,
    /// zstd level (0: no compression).
    pub compression_level: i32,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            kdf: KdfParams::default(),
            chunker: ChunkerParams::DEFAULT,
            stream_chunker: ChunkerParams::DEFAULT,
            pack_size: crate::config::DEFAULT_PACK_SIZE,
            compression_level: 3,
        }
    }
}

impl InitOptions {
    /// Set the password hashing cost.
    pub fn with_kdf(mut self, kdf: KdfParams) -> Self {
        self.kdf = kdf;
        self
    }
    /// Set the chunker for directory backups.
    pub fn with_chunker(mut self, c: ChunkerParams) -> Self {
        self.chunker = c;
        self
    }
    /// Set the chunker for stream backups.
    pub fn with_stream_chunker(mut self, c: ChunkerParams) -> Self {
        self.stream_chunker = c;
        self
    }
    /// Set the target pack size.
    pub fn with_pack_size(mut self, size: u32) -> Self {
        self.pack_size = size;
        self
    }
    /// Set the zstd level.
    pub fn with_compression_level(mut self, level: i32) -> Self {
        self.compression_level = level;
        self
    }
}

/// Where an opened repository keeps its index.
#[derive(Debug, Clone, Default)]
pub enum IndexPlace {
    /// A hash map in RAM, rebuilt at every open (about 80 bytes per blob).
    #[default]
    Memory,
    /// The persistent local cache under this directory (`<dir>/<repository id>/index`),
    /// brought up to date at open: memory stays flat as the repository grows.
    Cache(std::path::PathBuf),
    /// A private on-disk index under this directory, built at open and deleted when the
    /// repository is dropped: flat memory without keeping a cache.
    Temporary(std::path::PathBuf),
}

/// A snapshot: its id and manifest.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Snapshot id (storage id of the manifest file).
    pub id: BlobId,
    /// The manifest.
    pub manifest: SnapshotManifest,
}

/// An open repository.
#[derive(Debug, Clone)]
pub struct Repository {
    storage: Arc<dyn Storage>,
    master: MasterKey,
    keys: Keys,
    /// The key file this handle was opened (or created) with.
    opened_with: String,
    /// The master-key generation of `master` (1 unless rotated, SPEC.md section 5.1).
    generation: u32,
    config: Config,
    index: Arc<RwLock<Index>>,
    /// Serialises index loads, so a reload racing another one does not rebuild twice.
    index_load: Arc<tokio::sync::Mutex<()>>,
    /// Index files skipped by the last index load because they did not decode.
    damaged_index_files: Arc<RwLock<Vec<(String, String)>>>,
    /// Changes of where the index is kept, for the user ([`Repository::take_index_notes`]).
    index_notes: Arc<RwLock<Vec<String>>>,
}

/// The user name of this process, for manifests and key files.
pub fn current_username() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// The host name of this machine.
pub fn current_hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

impl Repository {
    /// Create a new repository in `storage`, protected by `password`.
    ///
    /// Refuses a location where `keys/`, `data/`, `index/` or `snapshots/` hold files but
    /// there is no config (a repository that lost its config: a new master key would
    /// orphan all of it). Key files alone may belong to an init running at the same
    /// time: init waits up to two seconds for that one's config first.
    ///
    /// # Errors
    /// [`Error::RepositoryExists`] if a config is already there (or appears while
    /// waiting); [`Error::Corrupt`] naming the files found if there is none; invalid
    /// options; storage errors.
    pub async fn init(
        storage: Arc<dyn Storage>,
        password: &[u8],
        options: InitOptions,
    ) -> Result<Repository> {
        let config_exists = |storage: Arc<dyn Storage>| async move {
            match storage.size(CONFIG_NAME).await {
                Ok(_) => Ok(true),
                Err(Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(e),
            }
        };
        let exists = || Error::RepositoryExists {
            location: storage.location(),
        };
        if config_exists(storage.clone()).await? {
            return Err(exists());
        }
        // Files of a repository without its config: a new master key could read none
        // of them (SPEC.md section 16).
        let mut held = repository_files(&*storage).await?;
        if held.iter().all(|(dir, _)| *dir == KEYS_DIR) {
            // Key files alone may be an init running right now, between its key and its
            // config: give it time to finish.
            for _ in 0..INIT_RACE_POLLS {
                if held.is_empty() {
                    break;
                }
                tokio::time::sleep(INIT_RACE_POLL).await;
                if config_exists(storage.clone()).await? {
                    return Err(exists());
                }
                held = repository_files(&*storage).await?;
            }
        }
        if !held.is_empty() {
            return Err(Error::corrupt(
                format!("repository at {}", storage.location()),
                format!(
                    "it has no config, but {}: init refuses to create a new repository over them (a new key could read none of them). If the config was lost, put a copy back; if an init was interrupted before writing it (only keys/ holds files), delete keys/; to start afresh, empty the location",
                    describe_files(&held)
                ),
            ));
        }
        let mut config = Config::new(options.chunker, options.stream_chunker);
        config.pack_size = options.pack_size;
        config.compression_level = options.compression_level;
        config
            .validate()
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let master = MasterKey::generate();
        let keys = Keys::derive(&master);
        let kdf = options.kdf;
        let pw = password_owned(password);
        let wrap_master = master.clone();
        let key_file = run_cpu(move || {
            KeyFile::create(
                &wrap_master,
                &pw,
                kdf,
                &current_hostname(),
                &current_username(),
            )
        })
        .await??;
        let key_name = format!("{KEYS_DIR}{}", BlobId::of_stored(&key_file).to_hex());
        storage.create(&key_name, &key_file).await?;
        if let Err(e) = storage.create(CONFIG_NAME, &config.encode(&keys)).await {
            // Lost a race with another init: leave no stray key behind.
            let _ = storage.delete(&key_name).await;
            return Err(match e {
                Error::AlreadyExists { .. } => Error::RepositoryExists {
                    location: storage.location(),
                },
                e => e,
            });
        }
        Ok(Repository {
            storage,
            master,
            keys,
            opened_with: key_name,
            generation: 1,
            config,
            index: Arc::new(RwLock::new(Index::new())),
            index_load: Arc::default(),
            damaged_index_files: Arc::default(),
            index_notes: Arc::default(),
        })
    }

    /// Open the repository in `storage` with `password` and load its index.
    ///
    /// # Errors
    /// [`Error::NoRepository`] if there is no config and nothing but key files;
    /// [`Error::Corrupt`] if the config is missing from a repository that holds data,
    /// index files or snapshots, or does not decode, or naming a damaged key file (one
    /// that does not decode, or whose bytes do not match its name) when no intact one
    /// opens, as the password may be the damaged one's; [`Error::WrongKey`] when no key
    /// file opens with `password` and none is damaged; [`Error::UnsupportedVersion`];
    /// storage errors.
    pub async fn open(storage: Arc<dyn Storage>, password: &[u8]) -> Result<Repository> {
        Repository::open_with(storage, password, &IndexPlace::Memory).await
    }

    /// Open like [`Repository::open`], keeping the index where `place` says.
    ///
    /// # Errors
    /// As [`Repository::open`]. An index cache that cannot be opened or loaded is not an
    /// error: the index goes to a temporary cache or to memory, and
    /// [`Repository::take_index_notes`] says so.
    pub async fn open_with(
        storage: Arc<dyn Storage>,
        password: &[u8],
        place: &IndexPlace,
    ) -> Result<Repository> {
        let config_bytes = read_config(&*storage).await?;
        let unlocked = unlock_with_password(&*storage, &config_bytes, password).await?;
        Repository::with_index(storage, unlocked, place).await
    }

    /// Open the repository in `storage` with access key `key` (SPEC.md section 19): one
    /// key file is read, and no password is hashed.
    ///
    /// # Errors
    /// As [`Repository::open`], except that a key file absent from `keys/` is
    /// [`Error::KeyRevoked`] and one that does not open with `key` is
    /// [`Error::WrongKey`].
    pub async fn open_with_access_key(
        storage: Arc<dyn Storage>,
        key: &AccessKey,
        place: &IndexPlace,
    ) -> Result<Repository> {
        let config_bytes = read_config(&*storage).await?;
        let unlocked = unlock_with_access_key(&*storage, &config_bytes, key).await?;
        Repository::with_index(storage, unlocked, place).await
    }

    /// Finish opening: keep the index where `place` says and load it.
    async fn with_index(
        storage: Arc<dyn Storage>,
        unlocked: Unlocked,
        place: &IndexPlace,
    ) -> Result<Repository> {
        let Unlocked {
            master,
            keys,
            generation,
            config,
            key_name,
        } = unlocked;
        // A cache that cannot be used must not stop the command (it is derived data):
        // a persistent one gives way to a private one in the system's temporary
        // directory, as with --no-cache, and that to memory.
        let mut notes = Vec::new();
        let id = config.id.clone();
        let cache = match place {
            IndexPlace::Memory => None,
            IndexPlace::Cache(dir) => {
                let dir = dir.clone();
                let opened = run_cpu(move || IndexCache::open(&dir, &id)).await?;
                match opened {
                    Ok(cache) => {
                        if let Some(why) = cache.made_again() {
                            notes.push(format!(
                                "index cache {} was damaged ({why}); made it again",
                                cache.path().display()
                            ));
                        }
                        Some(cache)
                    }
                    Err(e) => {
                        let (cache, note) =
                            Repository::temporary_or_memory(e.to_string(), config.id.clone())
                                .await?;
                        notes.push(note);
                        cache
                    }
                }
            }
            IndexPlace::Temporary(dir) => {
                let dir = dir.clone();
                match run_cpu(move || IndexCache::temporary_in(&dir, &id)).await? {
                    Ok(cache) => Some(cache),
                    Err(e) => {
                        notes.push(format!("{e}; keeping the index in memory"));
                        None
                    }
                }
            }
        };
        let mut index = Index::new();
        index.replace_cache(cache);
        let repo = Repository {
            storage,
            master,
            keys,
            opened_with: key_name,
            generation,
            config,
            index: Arc::new(RwLock::new(index)),
            index_load: Arc::default(),
            damaged_index_files: Arc::default(),
            index_notes: Arc::new(RwLock::new(notes)),
        };
        repo.load_index().await?;
        Ok(repo)
    }

    /// What changed about where the index is kept since the last call: a cache that
    /// could not be used, or was found damaged and made again, with the reason. For the
    /// user; the repository works either way.
    pub fn take_index_notes(&self) -> Vec<String> {
        self.index_notes
            .write()
            .map(|mut n| std::mem::take(&mut *n))
            .unwrap_or_default()
    }

    /// The storage name of the key file this handle was opened (or created) with.
    pub fn opened_with(&self) -> &str {
        &self.opened_with
    }

    /// The storage backend.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The master-key generation this handle opened (1 unless `key rotate` ran, SPEC.md
    /// section 5.1).
    pub fn key_generation(&self) -> u32 {
        self.generation
    }

    /// The master key this handle opened (for `rotate.rs`, which records its subkeys).
    pub(crate) fn master(&self) -> &MasterKey {
        &self.master
    }

    /// The derived keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The repository config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Shared handle to the in-memory index.
    pub fn index(&self) -> &Arc<RwLock<Index>> {
        &self.index
    }

    /// Bring the index up to date with the index files in storage. An in-memory index
    /// is rebuilt from all of them; an on-disk one absorbs the files it has not seen, and
    /// is rebuilt when a file it absorbed is gone (gc replaced it: packs it named may be
    /// deleted) or when it found itself damaged.
    ///
    /// # Errors
    /// Storage errors; [`Error::IndexCache`] when the index cannot be kept in memory
    /// either (never, today: only an on-disk cache fails, and memory takes over).
    pub async fn load_index(&self) -> Result<()> {
        self.load_index_or_fall_back(false).await
    }

    /// Rebuild the index from every index file in storage, dropping what it held first
    /// (after gc rewrote the index files).
    ///
    /// # Errors
    /// As [`Repository::load_index`].
    pub async fn rebuild_index(&self) -> Result<()> {
        self.load_index_or_fall_back(true).await
    }

    /// Load (or rebuild) the index; when its on-disk cache fails ([`Error::IndexCache`]),
    /// keep the index elsewhere and load again from scratch: a cache that failed for
    /// another reason than room is made again in place, once; then a temporary cache in
    /// the system's temporary directory takes over, then memory. Each change is noted
    /// for the user ([`Repository::take_index_notes`]).
    async fn load_index_or_fall_back(&self, rebuild: bool) -> Result<()> {
        let mut made_again = false;
        loop {
            let error = match self.load_index_inner(rebuild).await {
                Err(e @ Error::IndexCache { .. }) => e,
                other => return other,
            };
            let full = matches!(error, Error::IndexCache { full: true, .. });
            let failed = self
                .index
                .write()
                .map_err(|_| poisoned())?
                .replace_cache(None);
            let Some(failed) = failed else {
                return Err(error); // not the cache's doing after all
            };
            let temporary = failed.is_temporary();
            let id = self.config.id.clone();
            let (next, note) = if !temporary && !full && !made_again {
                made_again = true;
                match run_cpu(move || failed.recreate()).await? {
                    Ok(cache) => (Some(cache), format!("{error}; made it again")),
                    Err(e) => {
                        let id = self.config.id.clone();
                        Repository::temporary_or_memory(format!("{error}; {e}"), id).await?
                    }
                }
            } else if !temporary {
                drop(failed);
                Repository::temporary_or_memory(error.to_string(), id).await?
            } else {
                drop(failed);
                (None, format!("{error}; keeping the index in memory"))
            };
            self.index
                .write()
                .map_err(|_| poisoned())?
                .replace_cache(next);
            if let Ok(mut notes) = self.index_notes.write() {
                notes.push(note);
            }
        }
    }

    /// A temporary cache in the system's temporary directory, or none (memory), with
    /// the note saying so after `why`.
    async fn temporary_or_memory(why: String, id: String) -> Result<(Option<IndexCache>, String)> {
        Ok(
            match run_cpu(move || IndexCache::temporary_in(&std::env::temp_dir(), &id)).await? {
                Ok(cache) => (
                    Some(cache),
                    format!("{why}; going on without it, as with --no-cache"),
                ),
                Err(e) => (None, format!("{why}; {e}; keeping the index in memory")),
            },
        )
    }

    async fn load_index_inner(&self, rebuild: bool) -> Result<()> {
        let _serial = self.index_load.lock().await;
        let names = self.storage.list(INDEX_DIR).await?;
        let absorbed = self
            .index
            .read()
            .map_err(|_| poisoned())?
            .absorbed_files()?;
        let incremental = match absorbed {
            // A cache that absorbed nothing yet (new, or cleared) is filled by the
            // rebuild path, which does not read before writing.
            Some(seen) if !rebuild && !seen.is_empty() => {
                let listed: std::collections::HashSet<&str> =
                    names.iter().map(|n| n.name.as_str()).collect();
                seen.iter()
                    .all(|n| listed.contains(n.as_str()))
                    .then_some(seen)
            }
            _ => None,
        };
        // A cache must not meet a full disk (`index_cache::check_room`): make sure there
        // is room for what it will absorb before it writes.
        if let Some(cache) = self.index.read().map_err(|_| poisoned())?.cache() {
            let incoming: u64 = names
                .iter()
                .filter(|n| match &incremental {
                    Some(seen) => !seen.contains(&n.name),
                    None => true,
                })
                .map(|n| n.size)
                .sum();
            cache.check_room_for(incoming)?;
        }
        // Memory: build a fresh index beside the old one and swap (readers keep working).
        // Disk: clear and refill in place, unless this is an incremental load.
        let mut fresh = None;
        let to_read: Vec<BlobInfo> = match &incremental {
            Some(seen) => names
                .into_iter()
                .filter(|n| !seen.contains(&n.name))
                .collect(),
            None => {
                let mut index = self.index.write().map_err(|_| poisoned())?;
                // A forced rebuild drops the old index first, so gc never holds two.
                if index.cache().is_some() || rebuild {
                    index.begin_rebuild()?;
                } else {
                    let mut f = Index::new();
                    f.exclude_packs(&index.excluded_packs());
                    fresh = Some(f);
                }
                names
            }
        };
        let mut damaged = Vec::new();
        let mut tasks = tokio::task::JoinSet::new();
        let mut pending = to_read.into_iter().peekable();
        // Decoded index files wait in memory until added: bound them by bytes as well
        // as by count, whatever size the files have (at least one is always read).
        let mut bytes_in_flight = 0u64;
        loop {
            while tasks.len() < INDEX_FILES_IN_FLIGHT {
                let Some(next) = pending.peek() else { break };
                let memory = next.size.saturating_mul(DECODED_PER_STORED_BYTE);
                if !tasks.is_empty()
                    && bytes_in_flight.saturating_add(memory) > INDEX_BYTES_IN_FLIGHT
                {
                    break;
                }
                let Some(info) = pending.next() else { break };
                bytes_in_flight = bytes_in_flight.saturating_add(memory);
                let (name, size) = (info.name, info.size);
                let storage = self.storage.clone();
                let keys = self.keys.clone();
                tasks.spawn(async move {
                    let result = async {
                        let bytes = storage.get(&name).await?;
                        let object = name.clone();
                        run_cpu(move || IndexFile::decode(&keys, &bytes, &object)).await?
                    }
                    .await;
                    (name, size, result)
                });
            }
            let Some(done) = tasks.join_next().await else {
                break;
            };
            let (name, size, result) = done.map_err(|e| Error::Internal(e.to_string()))?;
            bytes_in_flight =
                bytes_in_flight.saturating_sub(size.saturating_mul(DECODED_PER_STORED_BYTE));
            match (name, result) {
                (name, Ok(file)) => match &mut fresh {
                    Some(f) => f.add_named_file(Some(&name), &file)?,
                    None => {
                        let index = self.index.clone();
                        run_cpu(move || {
                            index
                                .write()
                                .map_err(|_| poisoned())?
                                .add_named_file(Some(&name), &file)
                        })
                        .await??
                    }
                },
                // Removed by a concurrent gc between listing and reading.
                (_, Err(Error::NotFound { .. })) => {}
                // A damaged index file must not lock the user out: verify reports it
                // and repair index rebuilds it from the pack headers.
                (name, Err(e @ (Error::Corrupt { .. } | Error::UnsupportedVersion { .. }))) => {
                    damaged.push((name, e.to_string()))
                }
                (_, Err(e)) => return Err(e),
            }
        }
        if let Some(fresh) = fresh {
            *self.index.write().map_err(|_| poisoned())? = fresh;
        } else if incremental.is_none() {
            let index = self.index.clone();
            run_cpu(move || index.write().map_err(|_| poisoned())?.finish_rebuild()).await??;
        }
        damaged.sort();
        let mut known_damaged = self.damaged_index_files.write().map_err(|_| poisoned())?;
        if incremental.is_some() {
            // Files found damaged before are read again (they are never absorbed).
            known_damaged.retain(|(n, _)| !damaged.iter().any(|(d, _)| d == n));
            known_damaged.extend(damaged);
            known_damaged.sort();
        } else {
            *known_damaged = damaged;
        }
        Ok(())
    }

    /// Index files the last index load skipped because they are damaged or of a newer
    /// version (name, error). Blobs only they listed look missing until `repair index`.
    pub fn damaged_index_files(&self) -> Vec<(String, String)> {
        self.damaged_index_files
            .read()
            .map(|d| d.clone())
            .unwrap_or_default()
    }

    /// Where blob `id` is stored.
    pub fn locate(&self, id: &BlobId) -> Option<BlobLocation> {
        self.index.read().ok().and_then(|i| i.get(id))
    }

    /// Blob `id`'s type and delta base, if it is indexed: cheaper than
    /// [`Repository::locate`], which also resolves the pack.
    pub fn type_and_base(&self, id: &BlobId) -> Option<(BlobType, Option<BlobId>)> {
        self.index.read().ok().and_then(|i| i.type_and_base(id))
    }

    /// Whether a writer may reference each of `ids` ([`Index::usable`]), in batched
    /// index reads.
    pub fn usable_many(&self, ids: &[BlobId]) -> Vec<bool> {
        match self.index.read() {
            Ok(i) => i.usable_many(ids),
            Err(_) => vec![false; ids.len()],
        }
    }

    /// [`Repository::locate`] of each of `ids`, in one batched index read.
    pub fn locate_many(&self, ids: &[BlobId]) -> Vec<Option<BlobLocation>> {
        match self.index.read() {
            Ok(i) => i.get_many(ids),
            Err(_) => vec![None; ids.len()],
        }
    }

    /// [`Repository::type_and_base`] of each of `ids`, in one batched index read.
    pub fn type_and_base_many(&self, ids: &[BlobId]) -> Vec<Option<(BlobType, Option<BlobId>)>> {
        match self.index.read() {
            Ok(i) => i.type_and_base_many(ids),
            Err(_) => vec![None; ids.len()],
        }
    }

    /// Read, decrypt and verify blob `id`, which must be of type `blob_type`.
    ///
    /// # Errors
    /// [`Error::NotFound`] if no index knows it or its pack is gone; [`Error::Corrupt`]
    /// if the stored bytes are damaged.
    pub async fn read_blob(&self, id: &BlobId, blob_type: BlobType) -> Result<Vec<u8>> {
        match self
            .read_blob_once(id, blob_type, None, INLINE_DECODE_BYTES)
            .await
        {
            // A concurrent gc may have moved the blob to a new pack and deleted the old
            // one: reload the index once and follow it.
            Err(Error::NotFound { .. }) => {
                self.load_index().await?;
                self.read_blob_once(id, blob_type, None, INLINE_DECODE_BYTES)
                    .await
            }
            other => other,
        }
    }

    /// The plaintext of Data blob `id`, read once, for a backup to use as a delta base.
    /// Unlike [`Repository::read_blob`] it does not reload the index after `NotFound`:
    /// backups call it from CPU-pool workers, and a reload decodes index files on that
    /// pool, which two workers waiting this way would leave with no thread to run on.
    /// A base that cannot be read only costs the delta.
    ///
    /// For the same reason it is decoded on the calling task whatever its size: a tar
    /// page group of 128 KiB of incompressible pages is stored in more than
    /// [`INLINE_DECODE_BYTES`], and handing it to the CPU pool left backups hanging
    /// with every pool worker waiting for a base only the pool could decode. Page bases
    /// are full blobs of at most a page group (the saver offers no other), so this
    /// decodes at most 128 KiB here.
    ///
    /// # Errors
    /// As [`Repository::read_blob`], without the retry; [`Error::Corrupt`] if the blob
    /// is indexed as a delta.
    pub(crate) async fn read_page_base(&self, id: &BlobId) -> Result<Vec<u8>> {
        if self.locate(id).is_some_and(|loc| loc.base.is_some()) {
            return Err(Error::corrupt(
                format!("data blob {}", id.short()),
                "offered as a page base but stored as a delta",
            ));
        }
        self.read_blob_once(id, BlobType::Data, None, u32::MAX)
            .await
    }

    /// The plaintext of `base_id`, the base of delta blob `id`: a full Data blob (a
    /// delta's base is never a delta itself, so this reads one blob).
    ///
    /// # Errors
    /// As [`Repository::read_blob`]; [`Error::Corrupt`] if the base is indexed as a
    /// delta or as another type.
    pub async fn read_delta_base(&self, id: &BlobId, base_id: &BlobId) -> Result<Vec<u8>> {
        match self
            .read_blob_once(base_id, BlobType::Data, Some(id), INLINE_DECODE_BYTES)
            .await
        {
            Err(Error::NotFound { .. }) => {
                self.load_index().await?;
                self.read_blob_once(base_id, BlobType::Data, Some(id), INLINE_DECODE_BYTES)
                    .await
            }
            other => other,
        }
    }

    /// Read blob `id` once. `base_of` is set when it is read as the base of that delta
    /// blob, and then it must not be a delta itself. A blob stored in at most
    /// `inline_limit` bytes is decoded on the calling task, a larger one on the CPU pool.
    async fn read_blob_once(
        &self,
        id: &BlobId,
        blob_type: BlobType,
        base_of: Option<&BlobId>,
        inline_limit: u32,
    ) -> Result<Vec<u8>> {
        let loc = self.locate(id).ok_or_else(|| missing_blob(id))?;
        if loc.blob_type != blob_type {
            return Err(Error::corrupt(
                format!("blob {}", id.short()),
                format!("indexed as {:?}, expected {blob_type:?}", loc.blob_type),
            ));
        }
        let base = match (loc.base, base_of) {
            (Some(_), Some(delta)) => {
                return Err(Error::corrupt(
                    format!("data blob {} (delta against {})", delta.short(), id.short()),
                    "its base is itself a delta",
                ))
            }
            (Some(base_id), None) => {
                Some((base_id, Box::pin(self.read_delta_base(id, &base_id)).await?))
            }
            (None, _) => None,
        };
        let stored = self
            .storage
            .get_range(
                &loc.pack_name(),
                u64::from(loc.offset),
                u64::from(loc.stored_len),
            )
            .await?;
        let raw_len = u64::from(loc.raw_len);
        if loc.stored_len <= inline_limit {
            // Decoding a small blob takes less time than handing it to another thread.
            return decode_stored_blob(&self.keys, blob_type, id, &stored, raw_len, base);
        }
        let keys = self.keys.clone();
        let id = *id;
        run_cpu(move || decode_stored_blob(&keys, blob_type, &id, &stored, raw_len, base)).await?
    }

    /// Load and decode tree `id`.
    ///
    /// # Errors
    /// As [`Repository::read_blob`], plus tree decoding errors.
    pub async fn load_tree(&self, id: &BlobId) -> Result<Tree> {
        let body = self.read_blob(id, BlobType::Tree).await?;
        Tree::decode(&body, &format!("tree {}", id.short()))
    }

    /// Every readable snapshot, oldest first. Damaged manifests are left out (see
    /// [`Repository::list_snapshots_checked`]), so one bad file does not stop backups or
    /// restores of the others.
    ///
    /// # Errors
    /// Storage errors listing `snapshots/`.
    pub async fn list_snapshots(&self) -> Result<Vec<Snapshot>> {
        Ok(self.list_snapshots_checked().await?.0)
    }

    /// Every snapshot, oldest first, and the manifests that could not be read (name
    /// and error). Whatever must not ignore a snapshot (gc) checks the second list.
    ///
    /// # Errors
    /// Storage errors listing `snapshots/`.
    pub async fn list_snapshots_checked(&self) -> Result<(Vec<Snapshot>, Vec<(String, Error)>)> {
        let names = self.storage.list(SNAPSHOTS_DIR).await?;
        self.read_snapshots(names).await
    }

    /// Read snapshot `id` alone (one `get`, where [`Repository::list_snapshots`] reads
    /// them all).
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no such snapshot file; [`Error::Corrupt`] if its
    /// bytes do not hash to its name or do not decode; storage errors.
    pub async fn load_snapshot(&self, id: &BlobId) -> Result<Snapshot> {
        let name = format!("{SNAPSHOTS_DIR}{}", id.to_hex());
        let bytes = self.storage.get(&name).await?;
        if BlobId::of_stored(&bytes) != *id {
            return Err(Error::corrupt(&name, "content does not hash to its name"));
        }
        let manifest =
            SnapshotManifest::decode(&self.keys, &bytes, &format!("snapshot {}", id.short()))?;
        Ok(Snapshot { id: *id, manifest })
    }

    /// Read and decode the snapshot files `names` (from a listing of `snapshots/`):
    /// the snapshots, oldest first, and the files that could not be read (name and
    /// error). Files deleted since the listing are left out. At most
    /// [`SNAPSHOT_READS_IN_FLIGHT`] are read at once.
    ///
    /// # Errors
    /// [`Error::Internal`] if a reading task panicked.
    pub async fn read_snapshots(
        &self,
        names: Vec<BlobInfo>,
    ) -> Result<(Vec<Snapshot>, Vec<(String, Error)>)> {
        let limit = Arc::new(tokio::sync::Semaphore::new(SNAPSHOT_READS_IN_FLIGHT));
        let mut tasks = tokio::task::JoinSet::new();
        for info in names {
            let limit = limit.clone();
            let storage = self.storage.clone();
            let keys = self.keys.clone();
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let name = info.name.clone();
                let result = async {
                    let hex = info.name.trim_start_matches(SNAPSHOTS_DIR).to_string();
                    let id = BlobId::from_hex(&hex).map_err(|_| {
                        Error::corrupt(&info.name, "snapshot file name is not an id")
                    })?;
                    let bytes = storage.get(&info.name).await?;
                    if BlobId::of_stored(&bytes) != id {
                        return Err(Error::corrupt(
                            &info.name,
                            "content does not hash to its name",
                        ));
                    }
                    let manifest = SnapshotManifest::decode(
                        &keys,
                        &bytes,
                        &format!("snapshot {}", id.short()),
                    )?;
                    Ok(Snapshot { id, manifest })
                }
                .await;
                (name, result)
            });
        }
        let mut out = Vec::new();
        let mut damaged = Vec::new();
        while let Some(done) = tasks.join_next().await {
            match done.map_err(|e| Error::Internal(e.to_string()))? {
                (_, Ok(s)) => out.push(s),
                // Deleted by a concurrent forget between listing and reading.
                (_, Err(Error::NotFound { .. })) => {}
                (name, Err(e)) => damaged.push((name, e)),
            }
        }
        out.sort_by(|a, b| a.manifest.time.cmp(&b.manifest.time).then(a.id.cmp(&b.id)));
        damaged.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((out, damaged))
    }

    /// Resolve `latest`, a full id or a unique id prefix among `snapshots`.
    ///
    /// # Errors
    /// [`Error::Snapshot`] if nothing or more than one snapshot matches.
    pub fn select_snapshot(snapshots: &[Snapshot], selector: &str) -> Result<Snapshot> {
        let err = |reason: &str| Error::Snapshot {
            selector: selector.to_string(),
            reason: reason.to_string(),
        };
        if selector == "latest" {
            return snapshots
                .last()
                .cloned()
                .ok_or_else(|| err("the repository has no snapshots (matching the filters)"));
        }
        if selector.is_empty() || !selector.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err("not a snapshot id, id prefix or `latest`"));
        }
        let lower = selector.to_ascii_lowercase();
        let matches: Vec<&Snapshot> = snapshots
            .iter()
            .filter(|s| s.id.to_hex().starts_with(&lower))
            .collect();
        match matches.len() {
            1 => Ok(matches[0].clone()),
            0 => Err(err("no such snapshot")),
            n => Err(err(&format!(
                "prefix matches {n} snapshots; give more digits"
            ))),
        }
    }

    /// Find the node at `path` (`/`-separated, relative to the snapshot root; empty or
    /// `/` is the root, returned as `None`).
    ///
    /// # Errors
    /// [`Error::SnapshotPath`] if a component is missing or not a directory.
    pub async fn find_node(&self, root: &BlobId, path: &[u8]) -> Result<Option<Node>> {
        let display = String::from_utf8_lossy(path).into_owned();
        let mut tree_id = *root;
        let mut found: Option<Node> = None;
        for comp in path
            .split(|b| *b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
        {
            if let Some(node) = &found {
                match &node.kind {
                    NodeKind::Dir(id) => tree_id = *id,
                    _ => {
                        return Err(Error::SnapshotPath {
                            path: display,
                            reason: format!(
                                "{} is not a directory",
                                String::from_utf8_lossy(&node.name)
                            ),
                        })
                    }
                }
            }
            let tree = self.load_tree(&tree_id).await?;
            let node = tree.get(comp).cloned().ok_or_else(|| Error::SnapshotPath {
                path: display.clone(),
                reason: format!("no entry named {}", String::from_utf8_lossy(comp)),
            })?;
            found = Some(node);
        }
        Ok(found)
    }
}

/// What unlocking a repository yields: its keys, its config and the key file that
/// opened it.
struct Unlocked {
    master: MasterKey,
    keys: Keys,
    generation: u32,
    config: Config,
    key_name: String,
}

/// The stored config of the repository in `storage`.
///
/// # Errors
/// [`Error::NoRepository`] if there is no config and nothing but key files;
/// [`Error::Corrupt`] if the config is missing but data, index files or snapshots are
/// there; storage errors.
async fn read_config(storage: &dyn Storage) -> Result<Vec<u8>> {
    match storage.get(CONFIG_NAME).await {
        Ok(b) => Ok(b),
        Err(Error::NotFound { .. }) => {
            // Key files alone: an init in progress or interrupted (init says which
            // way out). Anything more is a repository that lost its config, which a
            // new init would not bring back.
            let held: Vec<(&str, usize)> = repository_files(storage)
                .await?
                .into_iter()
                .filter(|(dir, _)| *dir != KEYS_DIR)
                .collect();
            if held.is_empty() {
                return Err(Error::NoRepository {
                    location: storage.location(),
                });
            }
            Err(Error::corrupt(
                format!("repository at {}", storage.location()),
                format!(
                    "its config is missing, but {}: put a copy of the config back (`dprepo init` cannot recover them: a new repository has a new key)",
                    describe_files(&held)
                ),
            ))
        }
        Err(e) => Err(e),
    }
}

/// Find the key file that opens with `password` and whose master key opens the config.
///
/// # Errors
/// As [`Repository::open`].
async fn unlock_with_password(
    storage: &dyn Storage,
    config_bytes: &[u8],
    password: &[u8],
) -> Result<Unlocked> {
    let mut key_names: Vec<String> = storage
        .list(KEYS_DIR)
        .await?
        .into_iter()
        .map(|b| b.name)
        .collect();
    key_names.sort();
    let mut opened = None;
    let mut last_error = None;
    let mut config_error = None;
    // The first key file that did not open and is damaged: the password may be its.
    let mut damaged_key = None;
    for name in key_names.iter().take(MAX_KEYS_TRIED) {
        let bytes = match storage.get(name).await {
            Ok(bytes) => bytes,
            // Deleted since the listing: an init that lost the race removes its key.
            Err(Error::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        let key = match KeyFile::decode(&bytes, name) {
            Ok(k) => k,
            Err(e) => {
                if let Error::Corrupt { reason, .. } = &e {
                    damaged_key.get_or_insert_with(|| (name.clone(), reason.clone()));
                }
                last_error = Some(e);
                continue;
            }
        };
        if key.kind == KeyKind::Access {
            continue; // no password opens it (and it is not damaged: it decoded)
        }
        let pw = password_owned(password);
        let Some(master) = run_cpu(move || key.open(&pw)).await?? else {
            // A wrong password and a damaged key file both fail to unwrap; the name
            // (the storage id of the bytes written, L1) tells them apart.
            let expected = BlobId::of_stored(&bytes).to_hex();
            if name.strip_prefix(KEYS_DIR) != Some(expected.as_str()) {
                damaged_key.get_or_insert_with(|| {
                    (
                        name.clone(),
                        "its bytes do not match its name (storage id)".to_string(),
                    )
                });
            }
            continue;
        };
        // The password can open a key of another master key: the key an init wrote
        // before it lost the race to create the config, until it deletes that key.
        // The right key is the one whose master key opens the config.
        match open_config(storage, master, config_bytes, name).await? {
            Ok(unlocked) => {
                opened = Some(unlocked);
                break;
            }
            Err(e) => config_error = Some(e),
        }
    }
    opened.ok_or_else(|| match (config_error, last_error) {
        (Some(e), _) => e,
        (None, Some(e @ Error::UnsupportedVersion { .. })) => e,
        _ if key_names.is_empty() => Error::corrupt("repository", "no key files in keys/"),
        _ => match damaged_key {
            Some((name, reason)) => Error::corrupt(
                name,
                format!(
                    "{reason}; no intact key file opens with this password \
                             (if it is this key's, restore the key file from a copy)"
                ),
            ),
            None => Error::WrongKey,
        },
    })
}

/// Open key file `keys/<id>` named by access key `key` (SPEC.md section 19): it must
/// still be listed in `keys/` (a revoked key is deleted; listings are never served from
/// a cache), match its name, be an access key file and open with `key`, and its master
/// key must open the config.
///
/// # Errors
/// [`Error::KeyRevoked`] if `keys/` does not list it; [`Error::Corrupt`] if it is damaged
/// or not an access key file, or the config does not open; [`Error::WrongKey`] if `key`
/// does not open it; storage errors.
async fn unlock_with_access_key(
    storage: &dyn Storage,
    config_bytes: &[u8],
    key: &AccessKey,
) -> Result<Unlocked> {
    let name = key.key_name();
    let listed = storage.list(KEYS_DIR).await?;
    if !listed.iter().any(|b| b.name == name) {
        return Err(Error::KeyRevoked {
            key: key.key_id().short(),
        });
    }
    let bytes = match storage.get(&name).await {
        Ok(b) => b,
        // Deleted since the listing.
        Err(Error::NotFound { .. }) => {
            return Err(Error::KeyRevoked {
                key: key.key_id().short(),
            })
        }
        Err(e) => return Err(e),
    };
    if BlobId::of_stored(&bytes) != key.key_id() {
        return Err(Error::corrupt(
            &name,
            "its bytes do not match its name (storage id); restore the key file from a copy",
        ));
    }
    let file = KeyFile::decode(&bytes, &name)?;
    if file.kind != KeyKind::Access {
        return Err(Error::corrupt(
            &name,
            "the access key names a password key file (access keys open access key files only)",
        ));
    }
    let master = file.open_access(key).ok_or(Error::WrongKey)?;
    open_config(storage, master, config_bytes, &name).await?
}

/// The keys of `master` (its generation, SPEC.md section 5.1) and the config they open:
/// the config must authenticate under the generation's own encryption key, which makes
/// the newest committed generation the only one that opens the repository. The outer
/// error is a storage error; the inner one says why this key does not open it.
async fn open_config(
    storage: &dyn Storage,
    master: MasterKey,
    config_bytes: &[u8],
    key_name: &str,
) -> Result<Result<Unlocked>> {
    let generation = crate::keyring::generation_of_master(storage, &master).await?;
    let config = match Config::decode(&generation.keys.newest_only(), config_bytes) {
        Ok(c) => c,
        Err(Error::Corrupt { .. }) if generation.number < generation.newest_listed => {
            return Ok(Err(Error::KeyRetired {
                key: key_name.to_string(),
                generation: generation.number,
                newest: generation.newest_listed,
            }))
        }
        Err(e) => return Ok(Err(e)),
    };
    let rotated = config.version >= crate::config::REPOSITORY_VERSION_ROTATED;
    if rotated != (generation.number >= 2) {
        return Ok(Err(Error::corrupt(
            "config",
            format!(
                "repository version {} opened by master key generation {}",
                config.version, generation.number
            ),
        )));
    }
    Ok(Ok(Unlocked {
        master,
        keys: generation.keys,
        generation: generation.number,
        config,
        key_name: key_name.to_string(),
    }))
}

/// How often, and how long apart, `init` looks for the config another init is about
/// to write, when it finds key files but no config.
const INIT_RACE_POLLS: usize = 20;
const INIT_RACE_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// The directories of repository files that hold anything, with how many files each.
///
/// # Errors
/// Storage errors listing them.
async fn repository_files(storage: &dyn Storage) -> Result<Vec<(&'static str, usize)>> {
    let mut held = Vec::new();
    for dir in [KEYS_DIR, "data/", INDEX_DIR, SNAPSHOTS_DIR] {
        let n = storage.list(dir).await?.len();
        if n > 0 {
            held.push((dir, n));
        }
    }
    Ok(held)
}

/// "keys/ holds 1 file, data/ 3 files" for [`repository_files`].
fn describe_files(held: &[(&str, usize)]) -> String {
    held.iter()
        .enumerate()
        .map(|(i, (dir, n))| {
            let files = if *n == 1 { "file" } else { "files" };
            if i == 0 {
                format!("{dir} holds {n} {files}")
            } else {
                format!("{dir} {n} {files}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn password_owned(p: &[u8]) -> Vec<u8> {
    p.to_vec()
}

/// Run CPU-heavy work on the rayon pool and await its result.
///
/// # Errors
/// [`Error::Internal`] if the work panicked.
pub async fn run_cpu<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        let _ = tx.send(f());
    });
    rx.await
        .map_err(|_| Error::Internal("worker task panicked".into()))
}

fn poisoned() -> Error {
    Error::Internal("index lock poisoned".into())
}

/// Decode a stored blob read from its location: a delta against the base given with its
/// plaintext, otherwise a full blob.
///
/// # Errors
/// As [`decode_blob`] and [`decode_delta_blob`].
pub fn decode_stored_blob(
    keys: &Keys,
    blob_type: BlobType,
    id: &BlobId,
    stored: &[u8],
    raw_len: u64,
    base: Option<(BlobId, Vec<u8>)>,
) -> Result<Vec<u8>> {
    match &base {
        Some((base_id, plaintext)) => decode_delta_blob(
            keys,
            id,
            stored,
            raw_len,
            DeltaBase {
                id: base_id,
                plaintext,
            },
        ),
        None => decode_blob(keys, blob_type, id, stored, raw_len),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStorage;

    const FAST_KDF: KdfParams = KdfParams::CHEAPEST;

    /// Two `init`s racing on one repository both write a key; the one that loses the
    /// race to create the config deletes its key afterwards, or never does if it dies
    /// first. Meanwhile that key opens with the same password but wraps another master
    /// key: `open` must go on to the key that opens the config.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_passes_over_the_key_of_an_init_that_lost_the_race() {
        let storage = MemoryStorage::new();
        let shared: Arc<dyn Storage> = Arc::new(storage.clone());
        let winner = Repository::init(
            shared.clone(),
            b"pw",
            InitOptions::default().with_kdf(FAST_KDF),
        )
        .await
        .unwrap();
        let winner_key = shared.list(KEYS_DIR).await.unwrap().remove(0).name;
        // Named as init names it, and listed, so tried, before the winner's key.
        let (stray_name, stray) = loop {
            let stray =
                KeyFile::create(&MasterKey::generate(), b"pw", FAST_KDF, "loser", "me").unwrap();
            let name = format!("{KEYS_DIR}{}", BlobId::of_stored(&stray).to_hex());
            if name < winner_key {
                break (name, stray);
            }
        };
        shared.create(&stray_name, &stray).await.unwrap();

        let opened = Repository::open(shared.clone(), b"pw").await.unwrap();
        assert_eq!(opened.config().id, winner.config().id);
        assert!(matches!(
            Repository::open(shared.clone(), b"other").await,
            Err(Error::WrongKey)
        ));

        // With only the stray key left, the config does not open: that is an error
        // about the config, not a wrong password.
        for name in shared.list(KEYS_DIR).await.unwrap() {
            if name.name != stray_name {
                shared.delete(&name.name).await.unwrap();
            }
        }
        let err = Repository::open(shared, b"pw").await.unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    }
}
