//! The storage trait: a flat namespace of immutable, named blobs.
//!
//! Every backend (local file system, in-memory, object stores) implements [`Storage`].
//! Names are `/`-separated relative paths such as `config`, `keys/<hex>` or
//! `data/ab/<hex>` (SPEC.md, "Repository layout"). Blobs are written once and never
//! modified; the only way to change a name's content is to delete it first.
//!
//! Invariants every backend guarantees:
//! - `put` and `create` are atomic: a reader sees the whole blob or nothing, never a prefix.
//! - When `put`/`create` return `Ok`, the blob is durable (survives a crash/power loss).
//! - `create` is an atomic create-if-absent: of two concurrent `create`s of one name,
//!   exactly one succeeds and the other gets [`Error::AlreadyExists`].
//! - `get`/`get_range` of a missing name return [`Error::NotFound`].

mod cache;
#[cfg(test)]
mod conformance;
mod counting;
mod local;
mod memory;
mod s3;

pub use cache::CachedStorage;
pub use counting::{CountingStorage, RequestCounts, RequestStats};
pub use local::LocalStorage;
pub use memory::MemoryStorage;
pub use s3::{read_ini_section, S3Options, S3Storage};

use crate::error::Result;
use async_trait::async_trait;

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

/// A backend holding the blobs of one repository.
#[async_trait]
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// A human-readable location (path or URL) for messages.
    fn location(&self) -> String;

    /// Write `data` under `name`, replacing nothing: if `name` exists it is overwritten
    /// only by backends that cannot prevent it; callers use it only for names derived
    /// from the content (so an existing blob already has the same bytes).
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) on I/O failure.
    async fn put(&self, name: &str, data: &[u8]) -> Result<()>;

    /// [`Storage::put`] taking the bytes, so a backend that writes them from another
    /// thread need not copy them first (a pack is 16 MiB). Hands the buffer back once
    /// written, for the caller to fill again: a fresh 16 MiB buffer costs 4096 page
    /// faults, which on a VM cost more than the write itself.
    ///
    /// # Errors
    /// As [`Storage::put`].
    async fn put_owned(&self, name: &str, data: Vec<u8>) -> Result<Vec<u8>> {
        self.put(name, &data).await?;
        Ok(data)
    }

    /// Atomically write `data` under `name` only if `name` does not exist yet.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`](crate::Error::AlreadyExists) if the name is taken;
    /// [`Error::Storage`](crate::Error::Storage) on I/O failure.
    async fn create(&self, name: &str, data: &[u8]) -> Result<()>;

    /// Read the whole blob.
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound) if absent.
    async fn get(&self, name: &str) -> Result<Vec<u8>>;

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

    /// Size of the blob in bytes.
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound) if absent.
    async fn size(&self, name: &str) -> Result<u64>;

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
    let name = format!(
        "locks/create-probe-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    storage.create(&name, b"probe").await?;
    let second = storage.create(&name, b"probe 2").await;
    let _ = storage.delete(&name).await;
    match second {
        Err(crate::Error::AlreadyExists { .. }) => Ok(true),
        Ok(()) => Ok(false),
        Err(e) => Err(e),
    }
}
