//! [`MemoryStorage`]: blobs in a shared in-process map, for tests and fuzzing.
//!
//! It has the same observable semantics as the durable backends (name validation,
//! atomic create-if-absent, compare-and-swap, range checks) and adds test hooks to
//! damage blobs, so corruption handling can be tested through the [`Storage`] trait
//! (failures are injected by the [`FaultyStorage`](super::FaultyStorage) decorator,
//! around any backend). Every operation takes the lock once, so each is atomic; the
//! lock is never held across an `.await`.
//!
//! Versions are exact: every write (and every damage hook) gives the blob the next value
//! of a counter shared by all names, so a version is never seen twice.

use super::name::{validate_name, validate_prefix};
use super::{BlobInfo, BlobMeta, Bytes, PutMode, Storage, Version, Versioned};
use crate::error::{Error, Result};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// A [`Storage`] backend keeping blobs in memory.
///
/// Cloning gives another handle to the same blobs, so a test can keep one handle to
/// inspect or damage storage while the code under test uses another (the "reopen after
/// a crash" pattern: drop the repository, keep the storage). Nothing is durable beyond
/// the last handle.
#[derive(Clone, Default)]
pub struct MemoryStorage {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    blobs: BTreeMap<String, Blob>,
    /// The version of the last write, of any name.
    generation: u64,
}

struct Blob {
    data: Vec<u8>,
    generation: u64,
    /// When it was last written ([`Storage::modified`]).
    modified: std::time::SystemTime,
}

impl State {
    fn next_generation(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    /// Replace `name`'s bytes, giving it a new version.
    fn store(&mut self, name: String, data: Vec<u8>) -> Version {
        let generation = self.next_generation();
        self.blobs.insert(
            name,
            Blob {
                data,
                generation,
                modified: std::time::SystemTime::now(),
            },
        );
        version_of(generation)
    }

    /// Change `name`'s bytes in place (damage hooks), giving it a new version.
    fn damage(&mut self, name: &str, what: &str, f: impl FnOnce(&mut Vec<u8>)) {
        let generation = self.next_generation();
        let blob = self
            .blobs
            .get_mut(name)
            .unwrap_or_else(|| panic!("{what}: no blob {name}"));
        f(&mut blob.data);
        blob.generation = generation;
        blob.modified = std::time::SystemTime::now();
    }
}

fn version_of(generation: u64) -> Version {
    Version::new(generation.to_string())
}

impl std::fmt::Debug for MemoryStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("MemoryStorage")
            .field("blobs", &state.blobs.len())
            .field("generation", &state.generation)
            .finish()
    }
}

impl MemoryStorage {
    /// An empty storage with failure injection off.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the map consistent, so a panic elsewhere while
        // holding the lock (a failed test assertion) does not invalidate it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// All blob names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.lock().blobs.keys().cloned().collect()
    }

    /// Flip every bit of the byte at `offset` of blob `name` (test support).
    ///
    /// # Panics
    /// If the blob does not exist or is not longer than `offset`.
    pub fn corrupt_byte(&self, name: &str, offset: usize) {
        self.lock().damage(name, "corrupt_byte", |blob| {
            let len = blob.len();
            let byte = blob.get_mut(offset).unwrap_or_else(|| {
                panic!("corrupt_byte: offset {offset} is past the end of {name} ({len} bytes)")
            });
            *byte ^= 0xff;
        });
    }

    /// Shorten blob `name` to `len` bytes, as a torn write would (test support). No
    /// effect if it is already that short.
    ///
    /// # Panics
    /// If the blob does not exist.
    pub fn truncate(&self, name: &str, len: usize) {
        self.lock()
            .damage(name, "truncate", |blob| blob.truncate(len));
    }

    /// Store `data` under `name` unconditionally, bypassing name validation (test
    /// support: plant a stale or hostile blob).
    pub fn raw_put(&self, name: impl Into<String>, data: impl Into<Vec<u8>>) {
        self.lock().store(name.into(), data.into());
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    fn location(&self) -> String {
        "memory".to_owned()
    }

    async fn put_opts(&self, name: &str, data: Bytes, mode: PutMode) -> Result<Version> {
        validate_name(name)?;
        let mut state = self.lock();
        let current = state.blobs.get(name).map(|b| b.generation);
        match (&mode, current) {
            (PutMode::Overwrite, _) | (PutMode::Create, None) => {}
            (PutMode::Create, Some(_)) => {
                return Err(Error::AlreadyExists {
                    object: name.to_owned(),
                })
            }
            (PutMode::Update(expected), Some(generation))
                if *expected == version_of(generation) => {}
            (PutMode::Update(_), _) => return Err(Error::conflict(name)),
        }
        Ok(state.store(name.to_owned(), data.to_vec()))
    }

    async fn modified(&self, name: &str) -> Result<Option<std::time::SystemTime>> {
        validate_name(name)?;
        let state = self.lock();
        let blob = state
            .blobs
            .get(name)
            .ok_or_else(|| Error::not_found(name))?;
        Ok(Some(blob.modified))
    }

    async fn get_versioned(&self, name: &str) -> Result<Versioned> {
        validate_name(name)?;
        let state = self.lock();
        let blob = state
            .blobs
            .get(name)
            .ok_or_else(|| Error::not_found(name))?;
        Ok(Versioned {
            data: blob.data.clone(),
            version: version_of(blob.generation),
        })
    }

    async fn head(&self, name: &str) -> Result<BlobMeta> {
        validate_name(name)?;
        let state = self.lock();
        let blob = state
            .blobs
            .get(name)
            .ok_or_else(|| Error::not_found(name))?;
        Ok(BlobMeta {
            size: blob.data.len() as u64,
            version: version_of(blob.generation),
        })
    }

    async fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        validate_name(name)?;
        let state = self.lock();
        let blob = state
            .blobs
            .get(name)
            .ok_or_else(|| Error::not_found(name))?;
        let size = blob.data.len();
        let range = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(len).ok())
            .and_then(|(start, len)| Some(start..start.checked_add(len)?))
            .filter(|range| range.end <= size);
        match range {
            Some(range) => Ok(blob.data[range].to_vec()),
            None => Err(Error::corrupt(
                name,
                format!(
                    "range of {len} bytes at offset {offset} extends past the end of the blob ({size} bytes)"
                ),
            )),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<BlobInfo>> {
        validate_prefix(prefix)?;
        let state = self.lock();
        Ok(state
            .blobs
            .range(prefix.to_owned()..)
            .take_while(|(name, _)| name.starts_with(prefix))
            .map(|(name, data)| BlobInfo {
                name: name.clone(),
                size: data.data.len() as u64,
            })
            .collect())
    }

    async fn delete(&self, name: &str) -> Result<()> {
        validate_name(name)?;
        self.lock().blobs.remove(name);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Versions change with every write and every damage hook, and an update names the
    /// version it replaces.
    #[tokio::test]
    async fn versions_follow_every_change() {
        let s = MemoryStorage::new();
        let v1 = s
            .put_opts("x", Bytes::from_static(b"1"), PutMode::Create)
            .await
            .unwrap();
        assert_eq!(s.head("x").await.unwrap().version, v1);
        s.corrupt_byte("x", 0);
        let v2 = s.head("x").await.unwrap().version;
        assert_ne!(v1, v2);
        assert!(matches!(
            s.put_opts("x", Bytes::from_static(b"2"), PutMode::Update(v1))
                .await,
            Err(Error::Conflict { .. })
        ));
        let v3 = s
            .put_opts("x", Bytes::from_static(b"2"), PutMode::Update(v2))
            .await
            .unwrap();
        assert_eq!(s.get_versioned("x").await.unwrap().version, v3);
    }

    #[tokio::test]
    async fn damage_hooks_change_only_the_named_blob() {
        let s = MemoryStorage::new();
        s.put("x", &[0, 1, 2, 3]).await.unwrap();
        s.put("y", &[9; 4]).await.unwrap();
        let handle = s.clone();
        handle.corrupt_byte("x", 1);
        assert_eq!(s.get("x").await.unwrap(), [0, 0xfe, 2, 3]);
        handle.truncate("x", 2);
        assert_eq!(s.size("x").await.unwrap(), 2);
        assert!(matches!(
            s.get_range("x", 1, 2).await,
            Err(Error::Corrupt { .. })
        ));
        handle.truncate("x", 10);
        assert_eq!(s.get("x").await.unwrap(), [0, 0xfe]);
        handle.raw_put("z", b"raw".to_vec());
        assert_eq!(s.get("z").await.unwrap(), b"raw");
        assert_eq!(s.get("y").await.unwrap(), [9; 4]);
    }

    #[test]
    #[should_panic(expected = "past the end")]
    fn corrupt_byte_past_end_panics() {
        let s = MemoryStorage::new();
        s.raw_put("x", vec![1]);
        s.corrupt_byte("x", 1);
    }
}
