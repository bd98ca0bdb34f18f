//! [`DryRunStorage`]: a repository's storage seen through an overlay that keeps every
//! write in memory, so a command can run to its end (`backup --dry-run`) and add
//! nothing to the repository.
//!
//! Reads see the overlay first, then the repository; listings merge both; deletions
//! reach only the overlay. Data packs (`data/`) are counted and dropped rather than
//! kept, so a dry run of a large backup does not hold its data in memory: nothing in a
//! backup reads a data pack it has just written.
//!
//! The repository handle on top must keep its index in memory
//! ([`IndexPlace::Memory`](crate::repo::IndexPlace::Memory)): a persistent index cache
//! would otherwise remember blobs that were never stored.

use super::{BlobInfo, BlobMeta, Bytes, MemoryStorage, PutMode, Storage, Version, Versioned};
use crate::error::{Error, Result};
use async_trait::async_trait;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A storage that never writes to `inner` (see the module documentation).
#[derive(Debug)]
pub struct DryRunStorage {
    inner: Arc<dyn Storage>,
    overlay: MemoryStorage,
    dropped_packs: AtomicU64,
    dropped_bytes: AtomicU64,
}

impl DryRunStorage {
    /// An overlay over `inner`.
    pub fn new(inner: Arc<dyn Storage>) -> Self {
        DryRunStorage {
            inner,
            overlay: MemoryStorage::new(),
            dropped_packs: AtomicU64::new(0),
            dropped_bytes: AtomicU64::new(0),
        }
    }

    /// Data packs a real run would have written, and their bytes.
    pub fn dropped(&self) -> (u64, u64) {
        (
            self.dropped_packs.load(Ordering::Relaxed),
            self.dropped_bytes.load(Ordering::Relaxed),
        )
    }

    /// Names written to the overlay (everything but data packs), sorted.
    pub fn written(&self) -> Vec<String> {
        self.overlay.names()
    }
}

fn is_data_pack(name: &str) -> bool {
    name.starts_with(crate::layout::DATA_DIR)
}

#[async_trait]
impl Storage for DryRunStorage {
    fn location(&self) -> String {
        format!("{} (dry run)", self.inner.location())
    }

    async fn put_opts(&self, name: &str, data: Bytes, mode: PutMode) -> Result<Version> {
        if let PutMode::Create = mode {
            match self.inner.head(name).await {
                Ok(_) => {
                    return Err(Error::AlreadyExists {
                        object: name.to_owned(),
                    })
                }
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if is_data_pack(name) {
            self.dropped_packs.fetch_add(1, Ordering::Relaxed);
            self.dropped_bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            return self.overlay.put_opts(name, Bytes::new(), mode).await;
        }
        self.overlay.put_opts(name, data, mode).await
    }

    async fn get_versioned(&self, name: &str) -> Result<Versioned> {
        match self.overlay.get_versioned(name).await {
            Err(Error::NotFound { .. }) => self.inner.get_versioned(name).await,
            other => other,
        }
    }

    async fn modified(&self, name: &str) -> Result<Option<std::time::SystemTime>> {
        match self.overlay.modified(name).await {
            Err(Error::NotFound { .. }) => self.inner.modified(name).await,
            other => other,
        }
    }
    async fn head(&self, name: &str) -> Result<BlobMeta> {
        match self.overlay.head(name).await {
            Err(Error::NotFound { .. }) => self.inner.head(name).await,
            other => other,
        }
    }

    async fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        match self.overlay.get_range(name, offset, len).await {
            Err(Error::NotFound { .. }) => self.inner.get_range(name, offset, len).await,
            other => other,
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<BlobInfo>> {
        let mut all = self.inner.list(prefix).await?;
        let mine = self.overlay.list(prefix).await?;
        all.retain(|b| !mine.iter().any(|m| m.name == b.name));
        all.extend(mine);
        Ok(all)
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.overlay.delete(name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_stay_in_the_overlay_and_reads_see_both() {
        let inner = MemoryStorage::new();
        inner.put("keys/k", b"key").await.unwrap();
        let dry = DryRunStorage::new(Arc::new(inner.clone()));
        dry.put("snapshots/s", b"snap").await.unwrap();
        dry.put("data/ab/pack", &[7; 100]).await.unwrap();
        dry.delete("keys/k").await.unwrap();
        assert_eq!(inner.names(), vec!["keys/k".to_string()]);
        assert_eq!(dry.get("snapshots/s").await.unwrap(), b"snap");
        assert_eq!(dry.get("keys/k").await.unwrap(), b"key");
        assert_eq!(dry.list("snapshots/").await.unwrap().len(), 1);
        assert_eq!(dry.dropped(), (1, 100));
        assert!(matches!(
            dry.create("keys/k", b"x").await,
            Err(Error::AlreadyExists { .. })
        ));
    }
}
