//! [`MemoryStorage`]: blobs in a shared in-process map, for tests and fuzzing.
//!
//! It has the same observable semantics as the durable backends (name validation,
//! atomic create-if-absent, range checks) and adds test hooks to damage blobs and to
//! make writes fail after a number of successful ones, so crash and corruption handling
//! can be tested through the [`Storage`] trait. Every operation takes the lock once, so
//! each is atomic; the lock is never held across an `.await`.

use super::local::{validate_name, validate_prefix};
use super::{BlobInfo, Storage};
use crate::error::{Error, Result};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::io;
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
    blobs: BTreeMap<String, Vec<u8>>,
    /// `Some(n)`: `n` more `put`/`create` calls may succeed, then all fail.
    writes_left: Option<usize>,
}

impl std::fmt::Debug for MemoryStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("MemoryStorage")
            .field("blobs", &state.blobs.len())
            .field("writes_left", &state.writes_left)
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
        let mut state = self.lock();
        let blob = state
            .blobs
            .get_mut(name)
            .unwrap_or_else(|| panic!("corrupt_byte: no blob {name}"));
        let len = blob.len();
        let byte = blob.get_mut(offset).unwrap_or_else(|| {
            panic!("corrupt_byte: offset {offset} is past the end of {name} ({len} bytes)")
        });
        *byte ^= 0xff;
    }

    /// Shorten blob `name` to `len` bytes, as a torn write would (test support). No
    /// effect if it is already that short.
    ///
    /// # Panics
    /// If the blob does not exist.
    pub fn truncate(&self, name: &str, len: usize) {
        self.lock()
            .blobs
            .get_mut(name)
            .unwrap_or_else(|| panic!("truncate: no blob {name}"))
            .truncate(len);
    }

    /// Store `data` under `name` unconditionally, bypassing name validation and failure
    /// injection (test support: plant a stale or hostile blob).
    pub fn raw_put(&self, name: impl Into<String>, data: impl Into<Vec<u8>>) {
        self.lock().blobs.insert(name.into(), data.into());
    }

    /// Failure injection for crash-safety tests. With `Some(n)`, the next `n` successful
    /// `put`/`create` calls go through and every later one fails with
    /// [`Error::Storage`] (an [`io::ErrorKind::Other`] "injected failure") without
    /// changing anything, as if the process had died at that point. `None` turns
    /// injection off. Calls rejected for other reasons (invalid name, `AlreadyExists`)
    /// do not count.
    pub fn fail_writes_after(&self, n: Option<usize>) {
        self.lock().writes_left = n;
    }

    fn write(&self, name: &str, data: &[u8], replace: bool) -> Result<()> {
        validate_name(name)?;
        let mut state = self.lock();
        if state.writes_left == Some(0) {
            return Err(Error::Storage {
                object: name.to_owned(),
                source: io::Error::other("injected failure"),
            });
        }
        if !replace && state.blobs.contains_key(name) {
            return Err(Error::AlreadyExists {
                object: name.to_owned(),
            });
        }
        state.blobs.insert(name.to_owned(), data.to_vec());
        if let Some(left) = state.writes_left.as_mut() {
            *left -= 1;
        }
        Ok(())
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    fn location(&self) -> String {
        "memory".to_owned()
    }

    async fn put(&self, name: &str, data: &[u8]) -> Result<()> {
        self.write(name, data, true)
    }

    async fn create(&self, name: &str, data: &[u8]) -> Result<()> {
        self.write(name, data, false)
    }

    async fn get(&self, name: &str) -> Result<Vec<u8>> {
        validate_name(name)?;
        self.lock()
            .blobs
            .get(name)
            .cloned()
            .ok_or_else(|| Error::not_found(name))
    }

    async fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        validate_name(name)?;
        let state = self.lock();
        let blob = state
            .blobs
            .get(name)
            .ok_or_else(|| Error::not_found(name))?;
        let size = blob.len();
        let range = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(len).ok())
            .and_then(|(start, len)| Some(start..start.checked_add(len)?))
            .filter(|range| range.end <= size);
        match range {
            Some(range) => Ok(blob[range].to_vec()),
            None => Err(Error::corrupt(
                name,
                format!(
                    "range of {len} bytes at offset {offset} extends past the end of the blob ({size} bytes)"
                ),
            )),
        }
    }

    async fn size(&self, name: &str) -> Result<u64> {
        validate_name(name)?;
        let state = self.lock();
        let blob = state
            .blobs
            .get(name)
            .ok_or_else(|| Error::not_found(name))?;
        Ok(blob.len() as u64)
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
                size: data.len() as u64,
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

    fn is_injected(e: &Error) -> bool {
        matches!(e, Error::Storage { source, .. } if source.kind() == io::ErrorKind::Other
            && source.to_string() == "injected failure")
    }

    #[tokio::test]
    async fn fail_writes_after_counts_only_successful_writes() {
        let s = MemoryStorage::new();
        s.fail_writes_after(Some(2));
        s.put("a", b"1").await.unwrap();
        // Rejected calls do not use up the budget.
        assert!(matches!(
            s.create("a", b"x").await,
            Err(Error::AlreadyExists { .. })
        ));
        assert!(matches!(
            s.put("../a", b"x").await,
            Err(Error::InvalidArgument(_))
        ));
        s.create("b", b"2").await.unwrap();
        let e = s.put("c", b"3").await.unwrap_err();
        assert!(is_injected(&e), "{e}");
        let e = s.create("d", b"4").await.unwrap_err();
        assert!(is_injected(&e), "{e}");
        assert!(!e.is_transient());
        // Failed writes change nothing; reads and deletes keep working.
        assert_eq!(s.names(), ["a", "b"]);
        assert_eq!(s.get("a").await.unwrap(), b"1");
        s.delete("a").await.unwrap();
        s.fail_writes_after(None);
        s.put("c", b"3").await.unwrap();
        assert_eq!(s.names(), ["b", "c"]);
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
