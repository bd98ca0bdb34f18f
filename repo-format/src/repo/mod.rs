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
use crate::index::cache::IndexCache;
use crate::index::{missing_blob, BlobLocation, Index, IndexFile};
use crate::key::{AccessKey, KdfParams, KeyFile, KeyKind};
use crate::manifest::SnapshotManifest;
use crate::storage::{BlobInfo, Storage};
use crate::tree::{Node, NodeKind, Tree};
use dprepo_chunker::ChunkerParams;
use std::sync::{Arc, RwLock};

mod key_files;
pub(crate) use key_files::newer_generation_check;

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

pub use crate::layout::{CONFIG_NAME, INDEX_DIR, KEYS_DIR, SESSIONS_DIR, SNAPSHOTS_DIR};
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

/// When opening loads the index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IndexLoad {
    /// At open (every command but a backup).
    #[default]
    Eager,
    /// Not at open: the command loads it when it needs it ([`Repository::load_index`]),
    /// or, for a cold backup (SPEC.md section 15, S-7), not at all.
    Deferred,
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
    /// Index loads completed by this handle (and its clones).
    index_loads: Arc<std::sync::atomic::AtomicU64>,
}

/// The user name of this process, for manifests and key files.
pub fn current_username() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

pub use crate::liveness::current_hostname;

mod init;
mod load_index;
mod read;
#[cfg(test)]
mod tests;
mod unlock;

pub use read::decode_stored_blob;
use unlock::*;

impl Repository {
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
        Repository::open_with_load(storage, password, place, IndexLoad::Eager).await
    }

    /// Open like [`Repository::open_with`], loading the index at open or not (`load`).
    ///
    /// # Errors
    /// As [`Repository::open_with`].
    pub async fn open_with_load(
        storage: Arc<dyn Storage>,
        password: &[u8],
        place: &IndexPlace,
        load: IndexLoad,
    ) -> Result<Repository> {
        let config_bytes = read_config(&*storage).await?;
        let unlocked = unlock_with_password(&*storage, &config_bytes, password).await?;
        Repository::with_index(storage, unlocked, place, load).await
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
        Repository::open_with_access_key_load(storage, key, place, IndexLoad::Eager).await
    }

    /// Open like [`Repository::open_with_access_key`], loading the index at open or not.
    ///
    /// # Errors
    /// As [`Repository::open_with_access_key`].
    pub async fn open_with_access_key_load(
        storage: Arc<dyn Storage>,
        key: &AccessKey,
        place: &IndexPlace,
        load: IndexLoad,
    ) -> Result<Repository> {
        let config_bytes = read_config(&*storage).await?;
        let unlocked = unlock_with_access_key(&*storage, &config_bytes, key).await?;
        Repository::with_index(storage, unlocked, place, load).await
    }

    /// Finish opening: keep the index where `place` says and load it.
    async fn with_index(
        storage: Arc<dyn Storage>,
        unlocked: Unlocked,
        place: &IndexPlace,
        load: IndexLoad,
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
            index_loads: Arc::default(),
        };
        if load == IndexLoad::Eager {
            repo.load_index().await?;
        }
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
