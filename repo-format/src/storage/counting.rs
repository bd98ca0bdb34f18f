//! A storage wrapper that counts requests by kind and bytes moved, because on object
//! stores requests cost money (`dprepo --verbose` prints the counts).

use super::{BlobInfo, BlobMeta, Bytes, PutMode, Storage, Version, Versioned};
use crate::error::Result;
use async_trait::async_trait;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Request counters; all fields count since the wrapper was created.
#[derive(Debug, Default)]
pub struct RequestStats {
    /// Whole-blob reads.
    pub gets: AtomicU64,
    /// Ranged reads.
    pub range_gets: AtomicU64,
    /// Writes (every mode).
    pub puts: AtomicU64,
    /// Size queries (HEAD).
    pub heads: AtomicU64,
    /// Listings.
    pub lists: AtomicU64,
    /// Deletions.
    pub deletes: AtomicU64,
    /// Bytes read.
    pub bytes_down: AtomicU64,
    /// Bytes written.
    pub bytes_up: AtomicU64,
}

/// A plain-number copy of [`RequestStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RequestCounts {
    /// Whole-blob reads.
    pub get: u64,
    /// Ranged reads.
    pub range_get: u64,
    /// Writes.
    pub put: u64,
    /// Size queries.
    pub head: u64,
    /// Listings.
    pub list: u64,
    /// Deletions.
    pub delete: u64,
    /// Bytes read.
    pub bytes_down: u64,
    /// Bytes written.
    pub bytes_up: u64,
}

impl RequestStats {
    /// Current values.
    pub fn counts(&self) -> RequestCounts {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RequestCounts {
            get: l(&self.gets),
            range_get: l(&self.range_gets),
            put: l(&self.puts),
            head: l(&self.heads),
            list: l(&self.lists),
            delete: l(&self.deletes),
            bytes_down: l(&self.bytes_down),
            bytes_up: l(&self.bytes_up),
        }
    }
}

/// Counts the requests made to the wrapped storage.
#[derive(Debug)]
pub struct CountingStorage {
    inner: Arc<dyn Storage>,
    stats: Arc<RequestStats>,
}

impl CountingStorage {
    /// Wrap `inner`.
    pub fn new(inner: Arc<dyn Storage>) -> Self {
        CountingStorage {
            inner,
            stats: Arc::new(RequestStats::default()),
        }
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<RequestStats> {
        self.stats.clone()
    }
}

fn add(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

#[async_trait]
impl Storage for CountingStorage {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn put_opts(&self, name: &str, data: Bytes, mode: PutMode) -> Result<Version> {
        add(&self.stats.puts, 1);
        add(&self.stats.bytes_up, data.len() as u64);
        self.inner.put_opts(name, data, mode).await
    }
    async fn get_versioned(&self, name: &str) -> Result<Versioned> {
        add(&self.stats.gets, 1);
        let got = self.inner.get_versioned(name).await?;
        add(&self.stats.bytes_down, got.data.len() as u64);
        Ok(got)
    }
    async fn get(&self, name: &str) -> Result<Vec<u8>> {
        add(&self.stats.gets, 1);
        let data = self.inner.get(name).await?;
        add(&self.stats.bytes_down, data.len() as u64);
        Ok(data)
    }
    async fn modified(&self, name: &str) -> Result<Option<std::time::SystemTime>> {
        self.inner.modified(name).await
    }
    async fn head(&self, name: &str) -> Result<BlobMeta> {
        add(&self.stats.heads, 1);
        self.inner.head(name).await
    }
    async fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.get_range_into(name, offset, len, Vec::new()).await
    }
    async fn get_range_into(
        &self,
        name: &str,
        offset: u64,
        len: u64,
        buf: Vec<u8>,
    ) -> Result<Vec<u8>> {
        add(&self.stats.range_gets, 1);
        let data = self.inner.get_range_into(name, offset, len, buf).await?;
        add(&self.stats.bytes_down, data.len() as u64);
        Ok(data)
    }
    async fn size(&self, name: &str) -> Result<u64> {
        add(&self.stats.heads, 1);
        self.inner.size(name).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<BlobInfo>> {
        let list = self.inner.list(prefix).await?;
        // S3 lists at most 1000 keys per request.
        add(&self.stats.lists, 1 + list.len() as u64 / 1000);
        Ok(list)
    }
    async fn list_names(&self, prefix: &str) -> Result<Vec<String>> {
        let list = self.inner.list_names(prefix).await?;
        add(&self.stats.lists, 1 + list.len() as u64 / 1000);
        Ok(list)
    }
    async fn delete(&self, name: &str) -> Result<()> {
        add(&self.stats.deletes, 1);
        self.inner.delete(name).await
    }
    async fn list_temporary(&self) -> Result<Vec<super::TemporaryFile>> {
        add(&self.stats.lists, 1);
        self.inner.list_temporary().await
    }
    async fn delete_temporary(&self, name: &str) -> Result<()> {
        add(&self.stats.deletes, 1);
        self.inner.delete_temporary(name).await
    }
}
