//! The storage trait: a flat namespace of named blobs, written whole.
//!
//! Every backend (local file system, in-memory, object stores) implements [`Storage`];
//! decorators ([`CountingStorage`], [`CachedStorage`], [`FaultyStorage`]) wrap any of
//! them. Names are `/`-separated relative paths such as `config`, `keys/<hex>` or
//! `data/ab/<hex>`, checked by one rule in every backend (SPEC.md section 3, "Valid
//! names"). The contract is SPEC.md section 3, invariants S1-S8:
//! - Writes ([`Storage::put_opts`] and its shorthands `put` and `create`) are atomic: a
//!   reader sees the whole blob or nothing, never a prefix (S1).
//! - When a write returns `Ok`, the blob is durable (S2).
//! - [`PutMode::Create`] is an atomic create-if-absent: of concurrent creates of one
//!   name exactly one succeeds, the others get [`Error::AlreadyExists`](crate::Error::AlreadyExists) (S3).
//! - Reads of a missing name return [`Error::NotFound`](crate::Error::NotFound); a range
//!   past the end is [`Error::Corrupt`](crate::Error::Corrupt) (S4).
//! - [`PutMode::Update`] is a compare-and-swap: it replaces the blob only if its current
//!   [`Version`] is the one given, atomically with respect to every other write and
//!   delete of the name; otherwise (also when the name is gone) it changes nothing and
//!   fails with [`Error::Conflict`](crate::Error::Conflict) (S8). Versions come from
//!   [`Storage::get_versioned`], [`Storage::head`] and the write itself.
//!
//! Content-addressed names are written with `put` (a repeated write stores the same
//! bytes); the few mutable names (session markers, the gc lease) are created with
//! `create` and changed only with `Update`, so a process that stalled cannot overwrite
//! or resurrect what another process changed or removed meanwhile.

mod cache;
#[cfg(test)]
mod conformance;
mod counting;
mod dry_run;
mod faulty;
mod local;
mod memory;
pub(crate) mod name;
mod s3;

pub use cache::CachedStorage;
pub use counting::{CountingStorage, RequestCounts, RequestStats};
pub use dry_run::DryRunStorage;
pub use faulty::{FaultyStorage, Gate};
pub use local::{LocalStorage, DEFAULT_LOCK_WAIT};
pub use memory::MemoryStorage;
pub use s3::{read_ini_section, S3Options, S3Storage};

use crate::error::Result;
use async_trait::async_trait;
pub use bytes::Bytes;

/// Identifies one stored content of a name, for [`PutMode::Update`]: an opaque token
/// that changes with every write of other bytes (the S3 ETag, the local backend's file
/// identity, the in-memory backend's write counter: each backend states its limits). A
/// write of the very same bytes may keep it (S3's ETag of a single-part upload is their
/// MD5), which is why mutable files carry a random token or a fresh time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version(String);

impl Version {
    /// A version from a backend's token (an ETag, a generation number ...).
    pub fn new(token: impl Into<String>) -> Self {
        Version(token.into())
    }

    /// The backend's token.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How [`Storage::put_opts`] treats a name that exists (object_store's `PutMode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutMode {
    /// Replace whatever is there. For content-addressed names, where an existing blob
    /// has the same bytes.
    Overwrite,
    /// Write only if the name does not exist; [`Error::AlreadyExists`](crate::Error::AlreadyExists) otherwise.
    Create,
    /// Replace the blob only if its current version is this one;
    /// [`Error::Conflict`](crate::Error::Conflict) if it changed or is gone.
    Update(Version),
}

/// What [`Storage::head`] says about a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobMeta {
    /// Size in bytes.
    pub size: u64,
    /// Its current version.
    pub version: Version,
}

/// A whole blob with the version it was read at ([`Storage::get_versioned`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The blob's bytes.
    pub data: Vec<u8>,
    /// The version these bytes are.
    pub version: Version,
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// The full name, including the prefix that was listed.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
}

/// A file that an in-flight or interrupted write left under a temporary name (the local
/// backend's `.tmp-*`), which [`Storage::list`] never shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemporaryFile {
    /// Its name relative to the repository root, `/`-separated (`data/ab/.tmp-…`).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// When it was last written: a write in progress keeps it recent.
    pub modified: std::time::SystemTime,
}

/// A backend holding the blobs of one repository. The module documentation states the
/// contract; SPEC.md section 3 is normative.
#[async_trait]
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// A human-readable location (path or URL) for messages.
    fn location(&self) -> String;

    /// Write `data` under `name` as `mode` says, and return the version written.
    /// Callers that want their buffer back after the write keep a clone of `data`: once
    /// this returns no backend holds one, so `Vec::from(bytes)` takes the allocation
    /// back without a copy.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`](crate::Error::AlreadyExists) for [`PutMode::Create`] of a
    /// taken name; [`Error::Conflict`](crate::Error::Conflict) for [`PutMode::Update`] of a
    /// name whose version differs or that is gone;
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for an invalid name;
    /// [`Error::Storage`](crate::Error::Storage) on I/O failure.
    async fn put_opts(&self, name: &str, data: Bytes, mode: PutMode) -> Result<Version>;

    /// [`Storage::put_opts`] with [`PutMode::Overwrite`], for content-addressed names
    /// (an existing blob already has the same bytes).
    ///
    /// # Errors
    /// As [`Storage::put_opts`].
    async fn put(&self, name: &str, data: &[u8]) -> Result<()> {
        self.put_opts(name, Bytes::copy_from_slice(data), PutMode::Overwrite)
            .await
            .map(drop)
    }

    /// [`Storage::put_opts`] with [`PutMode::Create`]: write `data` under `name` only if
    /// `name` does not exist yet.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`](crate::Error::AlreadyExists) if the name is taken; as
    /// [`Storage::put_opts`].
    async fn create(&self, name: &str, data: &[u8]) -> Result<()> {
        self.put_opts(name, Bytes::copy_from_slice(data), PutMode::Create)
            .await
            .map(drop)
    }

    /// Read the whole blob and the version it was read at.
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound) if absent.
    async fn get_versioned(&self, name: &str) -> Result<Versioned>;

    /// Read the whole blob.
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound) if absent.
    async fn get(&self, name: &str) -> Result<Vec<u8>> {
        Ok(self.get_versioned(name).await?.data)
    }

    /// Size and version of the blob.
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound) if absent.
    async fn head(&self, name: &str) -> Result<BlobMeta>;

    /// Read `len` bytes starting at `offset`.
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound) if absent;
    /// [`Error::Corrupt`](crate::Error::Corrupt) if the range extends past the end of
    /// the blob (the blob is shorter than its index says).
    async fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>>;

    /// [`Storage::get_range`] into `buf`, whose allocation is reused where the backend
    /// can read into it: callers that read many large ranges keep a few buffers instead
    /// of allocating and freeing one per read, which glibc's per-thread arenas would
    /// otherwise keep as resident memory. The default calls [`Storage::get_range`]; a
    /// backend whose `get_range` calls this method must override it.
    ///
    /// # Errors
    /// As [`Storage::get_range`].
    async fn get_range_into(
        &self,
        name: &str,
        offset: u64,
        len: u64,
        buf: Vec<u8>,
    ) -> Result<Vec<u8>> {
        drop(buf);
        self.get_range(name, offset, len).await
    }

    /// Size of the blob in bytes ([`Storage::head`] without the version).
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound) if absent.
    async fn size(&self, name: &str) -> Result<u64> {
        Ok(self.head(name).await?.size)
    }

    /// All blobs whose name starts with `prefix` (e.g. `"snapshots/"`), in any order.
    /// Temporary files of in-flight writes are never listed.
    async fn list(&self, prefix: &str) -> Result<Vec<BlobInfo>>;

    /// The names [`Storage::list`] would list, without their sizes: backends that must
    /// ask for each size separately (the local file system: one `stat` per file) list
    /// faster this way.
    ///
    /// # Errors
    /// As [`Storage::list`].
    async fn list_names(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self
            .list(prefix)
            .await?
            .into_iter()
            .map(|b| b.name)
            .collect())
    }

    /// Delete the blob. Deleting a missing name is not an error (idempotent).
    async fn delete(&self, name: &str) -> Result<()>;

    /// When the blob was last written, by the backend's clock (file modification time,
    /// S3 `Last-Modified`), or `None` if the backend does not know (the default). Used
    /// only to age objects no held key opens (a gc lease or session marker of a retired
    /// key generation, SPEC.md sections 15 and 18): `None` means "never old".
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound) if it does not exist; storage errors.
    async fn modified(&self, name: &str) -> Result<Option<std::time::SystemTime>> {
        self.head(name).await.map(|_| None)
    }

    /// The temporary files of writes in progress or interrupted (a killed process leaves
    /// them). The default, for backends whose writes leave none: no files.
    ///
    /// # Errors
    /// Storage errors while listing.
    async fn list_temporary(&self) -> Result<Vec<TemporaryFile>> {
        Ok(Vec::new())
    }

    /// Delete a temporary file [`Storage::list_temporary`] listed; a missing one is not
    /// an error. The caller decides it is abandoned (gc: older than a writer may stay
    /// silent); a write still using it fails instead of committing.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a name that is not
    /// a temporary file's (the default: every name); storage errors.
    async fn delete_temporary(&self, name: &str) -> Result<()> {
        Err(crate::Error::InvalidArgument(format!(
            "{name}: this storage keeps no temporary files"
        )))
    }
}

/// Check whether `storage` really refuses a second create of the same name (S3 stores
/// that ignore `If-None-Match` do not). Writes and deletes one probe blob under `locks/`.
///
/// # Errors
/// Storage errors other than the expected conflict.
pub async fn probe_create_if_absent(storage: &dyn Storage) -> Result<bool> {
    let ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let name = crate::layout::create_probe(std::process::id(), ns);
    storage.create(&name, b"probe").await?;
    let second = storage.create(&name, b"probe 2").await;
    let _ = storage.delete(&name).await;
    match second {
        Err(crate::Error::AlreadyExists { .. }) => Ok(true),
        Ok(()) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Check whether `storage` really refuses an update naming a version that is no longer
/// current (S3 stores that ignore `If-Match` do not: there two gcs could both take over
/// an expired lease). Writes and deletes one probe blob under `locks/`.
///
/// # Errors
/// Storage errors other than the expected conflict.
pub async fn probe_compare_and_swap(storage: &dyn Storage) -> Result<bool> {
    let ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let name = crate::layout::cas_probe(std::process::id(), ns);
    let first = storage
        .put_opts(&name, Bytes::from_static(b"probe 1"), PutMode::Create)
        .await?;
    let second = storage
        .put_opts(
            &name,
            Bytes::from_static(b"probe 2"),
            PutMode::Update(first.clone()),
        )
        .await;
    let stale = match second {
        Ok(_) => {
            storage
                .put_opts(
                    &name,
                    Bytes::from_static(b"probe 3"),
                    PutMode::Update(first),
                )
                .await
        }
        Err(e) => Err(e),
    };
    let _ = storage.delete(&name).await;
    match stale {
        Err(crate::Error::Conflict { .. }) => Ok(true),
        Ok(_) => Ok(false),
        Err(e) => Err(e),
    }
}
