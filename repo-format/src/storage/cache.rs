//! A local cache of immutable repository metadata for remote backends, so a second
//! command against an object store does not download the index again.
//!
//! Cached: index files, snapshot manifests, key files and metadata packs. All of them
//! are named by the BLAKE3 hash of their content and never change, so a cached copy is
//! verified against its name when read and needs no invalidation; a damaged copy is
//! dropped and fetched again. Listings always go to the backend, so a deleted blob is
//! never resurrected from the cache, and cached copies of index files and snapshots that
//! the backend no longer lists are removed when those directories are listed. Data packs
//! and the config (not content-addressed) are never cached.

use super::{BlobInfo, BlobMeta, Bytes, PutMode, Storage, Version, Versioned};
use crate::error::Result;
use crate::id::BlobId;
use crate::layout::{CATALOG_DIR, INDEX_DIR, KEYS_DIR, META_DIR, SNAPSHOTS_DIR};
use async_trait::async_trait;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Never `locators/` (SPEC.md section 14.1): a locator is not named by its bytes, and
/// repair deletes every locator relying on the deletion being seen at once; a
/// cached copy would let a cold backup trust a parent whose blobs repair took out of the
/// index.
const CACHED_PREFIXES: [&str; 5] = [INDEX_DIR, SNAPSHOTS_DIR, KEYS_DIR, META_DIR, CATALOG_DIR];
/// Directories whose listing prunes the cache.
const PRUNED_PREFIXES: [&str; 4] = [INDEX_DIR, SNAPSHOTS_DIR, KEYS_DIR, CATALOG_DIR];

/// Caches immutable metadata of `inner` under a local directory.
#[derive(Debug)]
pub struct CachedStorage {
    inner: Arc<dyn Storage>,
    dir: PathBuf,
}

impl CachedStorage {
    /// Cache `inner` in `base/<hash of its location>/`.
    pub fn new(inner: Arc<dyn Storage>, base: &Path) -> Self {
        let key = blake3::hash(inner.location().as_bytes()).to_hex();
        CachedStorage {
            dir: base.join(&key[..32]),
            inner,
        }
    }

    /// The directory holding this repository's cache.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn cacheable(name: &str) -> bool {
        CACHED_PREFIXES.iter().any(|p| name.starts_with(p)) && !name.contains("..")
    }

    fn local(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The cached copy, if present and intact.
    async fn read_cached(&self, name: &str) -> Option<Vec<u8>> {
        let path = self.local(name);
        let data = tokio::fs::read(&path).await.ok()?;
        let expected = name
            .rsplit('/')
            .next()
            .and_then(|h| BlobId::from_hex(h).ok())?;
        if BlobId::of_stored(&data) == expected {
            Some(data)
        } else {
            let _ = tokio::fs::remove_file(&path).await;
            None
        }
    }

    /// Store a copy; failures only cost a later download, so they are ignored.
    async fn write_cached(&self, name: &str, data: &[u8]) {
        let path = self.local(name);
        let Some(parent) = path.parent() else { return };
        if tokio::fs::create_dir_all(parent).await.is_err() {
            return;
        }
        let tmp = parent.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            BlobId::of_stored(data).short()
        ));
        if tokio::fs::write(&tmp, data).await.is_ok()
            && tokio::fs::rename(&tmp, &path).await.is_err()
        {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
    }

    async fn fetch(&self, name: &str) -> Result<Vec<u8>> {
        if let Some(data) = self.read_cached(name).await {
            return Ok(data);
        }
        let data = self.inner.get(name).await?;
        self.write_cached(name, &data).await;
        Ok(data)
    }
}

#[async_trait]
impl Storage for CachedStorage {
    fn location(&self) -> String {
        self.inner.location()
    }
    /// Cacheable names are content-addressed: whatever mode writes them, the bytes
    /// are the ones the name says, so the copy is kept.
    async fn put_opts(&self, name: &str, data: Bytes, mode: PutMode) -> Result<Version> {
        let cached = Self::cacheable(name).then(|| data.clone());
        let version = self.inner.put_opts(name, data, mode).await?;
        if let Some(data) = cached {
            self.write_cached(name, &data).await;
        }
        Ok(version)
    }
    /// Always from the backend: a version is the backend's to give.
    async fn get_versioned(&self, name: &str) -> Result<Versioned> {
        self.inner.get_versioned(name).await
    }
    async fn modified(&self, name: &str) -> Result<Option<std::time::SystemTime>> {
        self.inner.modified(name).await
    }
    async fn head(&self, name: &str) -> Result<BlobMeta> {
        self.inner.head(name).await
    }
    async fn get(&self, name: &str) -> Result<Vec<u8>> {
        if Self::cacheable(name) {
            self.fetch(name).await
        } else {
            self.inner.get(name).await
        }
    }
    async fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        if !name.starts_with(META_DIR) {
            return self.inner.get_range(name, offset, len).await;
        }
        // Metadata packs are read many times in small pieces: fetch and keep them whole.
        let data = self.fetch(name).await?;
        let end = offset.checked_add(len).filter(|e| *e <= data.len() as u64);
        match end {
            Some(end) => Ok(data[offset as usize..end as usize].to_vec()),
            None => Err(crate::Error::corrupt(
                name,
                format!(
                    "range {offset}+{len} extends past the end of a {}-byte blob",
                    data.len()
                ),
            )),
        }
    }
    async fn get_range_into(
        &self,
        name: &str,
        offset: u64,
        len: u64,
        buf: Vec<u8>,
    ) -> Result<Vec<u8>> {
        if name.starts_with(META_DIR) {
            return self.get_range(name, offset, len).await;
        }
        self.inner.get_range_into(name, offset, len, buf).await
    }
    async fn size(&self, name: &str) -> Result<u64> {
        self.inner.size(name).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<BlobInfo>> {
        let list = self.inner.list(prefix).await?;
        if let Some(dir_prefix) = PRUNED_PREFIXES.iter().find(|p| **p == prefix) {
            let live: std::collections::HashSet<&str> =
                list.iter().map(|b| b.name.as_str()).collect();
            if let Ok(mut entries) = tokio::fs::read_dir(self.dir.join(dir_prefix)).await {
                while let Ok(Some(e)) = entries.next_entry().await {
                    let name = format!("{dir_prefix}{}", e.file_name().to_string_lossy());
                    if !live.contains(name.as_str()) {
                        let _ = tokio::fs::remove_file(e.path()).await;
                    }
                }
            }
        }
        Ok(list)
    }
    async fn delete(&self, name: &str) -> Result<()> {
        self.inner.delete(name).await?;
        let _ = tokio::fs::remove_file(self.local(name)).await;
        Ok(())
    }
    async fn list_temporary(&self) -> Result<Vec<super::TemporaryFile>> {
        self.inner.list_temporary().await
    }
    async fn delete_temporary(&self, name: &str) -> Result<()> {
        self.inner.delete_temporary(name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{CountingStorage, MemoryStorage};

    #[tokio::test]
    async fn second_read_of_metadata_comes_from_the_cache_and_damage_is_refetched() {
        let mem = MemoryStorage::new();
        let counting = Arc::new(CountingStorage::new(Arc::new(mem.clone())));
        let stats = counting.stats();
        let dir = tempfile::tempdir().unwrap();
        let cached = CachedStorage::new(counting.clone(), dir.path());
        let body = b"index body".to_vec();
        let name = crate::layout::index_file(&BlobId::of_stored(&body));
        mem.raw_put(&name, body.clone());
        assert_eq!(cached.get(&name).await.unwrap(), body);
        assert_eq!(cached.get(&name).await.unwrap(), body);
        assert_eq!(
            stats.counts().get,
            1,
            "second read must not reach the backend"
        );
        // A damaged cached copy is detected and fetched again.
        std::fs::write(cached.dir().join(&name), b"garbage").unwrap();
        assert_eq!(cached.get(&name).await.unwrap(), body);
        assert_eq!(stats.counts().get, 2);
        // Deleted remotely: listing prunes the cached copy.
        mem.delete(&name).await.unwrap();
        assert!(cached.list("index/").await.unwrap().is_empty());
        assert!(!cached.dir().join(&name).exists());
        // Data packs and config are never cached.
        mem.raw_put("config", b"c");
        cached.get("config").await.unwrap();
        cached.get("config").await.unwrap();
        assert_eq!(stats.counts().get, 4);
    }

    /// A deleted locator must be seen at once by the next reader (SPEC.md R-6): it is
    /// read from the backend every time, and reading it after its deletion fails.
    #[tokio::test]
    async fn cached_storage_never_caches_locators() {
        let mem = MemoryStorage::new();
        let counting = Arc::new(CountingStorage::new(Arc::new(mem.clone())));
        let stats = counting.stats();
        let dir = tempfile::tempdir().unwrap();
        let cached = CachedStorage::new(counting.clone(), dir.path());
        let body = b"locator body".to_vec();
        let name = crate::layout::locator(&BlobId::of_stored(&body));
        mem.raw_put(&name, body.clone());
        assert_eq!(cached.get(&name).await.unwrap(), body);
        assert_eq!(cached.get(&name).await.unwrap(), body);
        assert_eq!(stats.counts().get, 2, "every read reaches the backend");
        assert!(!cached.dir().join(&name).exists());
        mem.delete(&name).await.unwrap();
        assert!(matches!(
            cached.get(&name).await,
            Err(crate::Error::NotFound { .. })
        ));
    }
}
