//! [`FaultyStorage`]: failure injection and forced interleavings around any backend, so
//! crash safety and races are tested through the [`Storage`] trait on the in-memory,
//! local and S3 backends alike (STYLE.md, "Tests").
//!
//! Three kinds of fault, all off until a test arms them:
//! - [`FaultyStorage::fail_writes_after`]: after `n` successful writes every write fails
//!   without reaching the backend, as if the process had died at that point;
//! - [`FaultyStorage::fail_deletes_after`]: the same for deletes, so the states between a
//!   write and the delete that follows it (copy written, original still there) are
//!   reached without killing a process;
//! - [`FaultyStorage::gate`]: writes matching a predicate stop before reaching the
//!   backend until the test opens the [`Gate`], so a test decides which of two racing
//!   writers goes first.

use super::{BlobInfo, BlobMeta, Bytes, PutMode, Storage, TemporaryFile, Version, Versioned};
use crate::error::{Error, Result};
use async_trait::async_trait;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{watch, Notify};

/// Which writes a [`Gate`] holds.
type WriteFilter = dyn Fn(&str, &PutMode) -> bool + Send + Sync;

/// A decorator injecting failures and holding writes. Cloning gives another handle to
/// the same faults, so a test keeps one to arm them while the code under test uses
/// another.
#[derive(Clone)]
pub struct FaultyStorage {
    inner: Arc<dyn Storage>,
    faults: Arc<Faults>,
}

struct Faults {
    /// Whether `writes_left` applies.
    limited: AtomicBool,
    /// Writes that may still succeed while `limited`.
    writes_left: AtomicUsize,
    /// Whether `deletes_left` applies.
    deletes_limited: AtomicBool,
    /// Deletes that may still succeed while `deletes_limited`.
    deletes_left: AtomicUsize,
    gates: Mutex<Vec<Arc<GateState>>>,
}

/// Writes held by [`FaultyStorage::gate`] until [`Gate::open`].
#[derive(Clone)]
pub struct Gate {
    state: Arc<GateState>,
}

struct GateState {
    filter: Box<WriteFilter>,
    /// How many writes the gate holds at most; later matching writes pass.
    capacity: usize,
    arrived: AtomicUsize,
    arrival: Notify,
    open: watch::Sender<bool>,
}

impl std::fmt::Debug for FaultyStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyStorage")
            .field("inner", &self.inner)
            .field("limited", &self.faults.limited.load(Ordering::SeqCst))
            .field(
                "writes_left",
                &self.faults.writes_left.load(Ordering::SeqCst),
            )
            .finish()
    }
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("capacity", &self.state.capacity)
            .field("arrived", &self.state.arrived.load(Ordering::SeqCst))
            .field("open", &*self.state.open.borrow())
            .finish()
    }
}

impl FaultyStorage {
    /// Wrap `inner` with every fault off.
    pub fn new(inner: Arc<dyn Storage>) -> Self {
        FaultyStorage {
            inner,
            faults: Arc::new(Faults {
                limited: AtomicBool::new(false),
                writes_left: AtomicUsize::new(0),
                deletes_limited: AtomicBool::new(false),
                deletes_left: AtomicUsize::new(0),
                gates: Mutex::new(Vec::new()),
            }),
        }
    }

    /// With `Some(n)`, the next `n` successful writes go through and every later one
    /// fails with [`Error::Storage`] (an [`std::io::ErrorKind::Other`] "injected
    /// failure", not transient) without reaching the backend. `None` turns it off.
    /// Writes the backend rejects (invalid name, `AlreadyExists`, `Conflict`) or fails
    /// do not count. Reads are never failed; deletes only by
    /// [`FaultyStorage::fail_deletes_after`].
    pub fn fail_writes_after(&self, n: Option<usize>) {
        self.faults
            .writes_left
            .store(n.unwrap_or(0), Ordering::SeqCst);
        self.faults.limited.store(n.is_some(), Ordering::SeqCst);
    }

    /// With `Some(n)`, the next `n` successful deletes go through and every later one
    /// fails with the same injected [`Error::Storage`] without reaching the backend (the
    /// name stays). Deletes the backend fails do not count. `None` turns it off.
    pub fn fail_deletes_after(&self, n: Option<usize>) {
        self.faults
            .deletes_left
            .store(n.unwrap_or(0), Ordering::SeqCst);
        self.faults
            .deletes_limited
            .store(n.is_some(), Ordering::SeqCst);
    }

    /// Hold up to `capacity` writes for which `filter(name, mode)` is true before they
    /// reach the backend, until the returned gate is opened. Later matching writes pass.
    pub fn gate(
        &self,
        capacity: usize,
        filter: impl Fn(&str, &PutMode) -> bool + Send + Sync + 'static,
    ) -> Gate {
        let state = Arc::new(GateState {
            filter: Box::new(filter),
            capacity,
            arrived: AtomicUsize::new(0),
            arrival: Notify::new(),
            open: watch::channel(false).0,
        });
        self.faults
            .gates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(state.clone());
        Gate { state }
    }

    /// Take one unit of the write budget; false when it is used up.
    fn take_write(&self) -> bool {
        !self.faults.limited.load(Ordering::SeqCst)
            || self
                .faults
                .writes_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
    }

    fn refund_write(&self) {
        if self.faults.limited.load(Ordering::SeqCst) {
            self.faults.writes_left.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Wait at every gate that holds this write.
    async fn pass_gates(&self, name: &str, mode: &PutMode) {
        let holding: Vec<Arc<GateState>> = self
            .faults
            .gates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|g| !*g.open.borrow() && (g.filter)(name, mode))
            .filter(|g| {
                g.arrived
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                        (n < g.capacity).then_some(n + 1)
                    })
                    .is_ok()
            })
            .cloned()
            .collect();
        for gate in holding {
            gate.arrival.notify_waiters();
            let mut open = gate.open.subscribe();
            // The sender lives in `gate`, so this ends only when the gate opens.
            let _ = open.wait_for(|open| *open).await;
        }
    }
}

impl Gate {
    /// Wait until `n` writes are held.
    pub async fn wait_for(&self, n: usize) {
        loop {
            let notified = self.state.arrival.notified();
            if self.state.arrived.load(Ordering::SeqCst) >= n {
                return;
            }
            notified.await;
        }
    }

    /// Let the held writes (and every later one) through.
    pub fn open(&self) {
        self.state.open.send_replace(true);
    }
}

fn injected(name: &str) -> Error {
    Error::Storage {
        object: name.to_owned(),
        source: std::io::Error::other("injected failure"),
    }
}

#[async_trait]
impl Storage for FaultyStorage {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn put_opts(&self, name: &str, data: Bytes, mode: PutMode) -> Result<Version> {
        self.pass_gates(name, &mode).await;
        if !self.take_write() {
            return Err(injected(name));
        }
        let result = self.inner.put_opts(name, data, mode).await;
        if result.is_err() {
            self.refund_write();
        }
        result
    }
    async fn get_versioned(&self, name: &str) -> Result<Versioned> {
        self.inner.get_versioned(name).await
    }
    async fn get(&self, name: &str) -> Result<Vec<u8>> {
        self.inner.get(name).await
    }
    async fn modified(&self, name: &str) -> Result<Option<std::time::SystemTime>> {
        self.inner.modified(name).await
    }
    async fn head(&self, name: &str) -> Result<BlobMeta> {
        self.inner.head(name).await
    }
    async fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.inner.get_range(name, offset, len).await
    }
    async fn get_range_into(
        &self,
        name: &str,
        offset: u64,
        len: u64,
        buf: Vec<u8>,
    ) -> Result<Vec<u8>> {
        self.inner.get_range_into(name, offset, len, buf).await
    }
    async fn size(&self, name: &str) -> Result<u64> {
        self.inner.size(name).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<BlobInfo>> {
        self.inner.list(prefix).await
    }
    async fn list_names(&self, prefix: &str) -> Result<Vec<String>> {
        self.inner.list_names(prefix).await
    }
    async fn delete(&self, name: &str) -> Result<()> {
        let limited = self.faults.deletes_limited.load(Ordering::SeqCst);
        if limited
            && self
                .faults
                .deletes_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_err()
        {
            return Err(injected(name));
        }
        let result = self.inner.delete(name).await;
        if result.is_err() && limited {
            self.faults.deletes_left.fetch_add(1, Ordering::SeqCst);
        }
        result
    }
    async fn list_temporary(&self) -> Result<Vec<TemporaryFile>> {
        self.inner.list_temporary().await
    }
    async fn delete_temporary(&self, name: &str) -> Result<()> {
        self.inner.delete_temporary(name).await
    }
}

#[cfg(test)]
mod tests {
    use super::super::MemoryStorage;
    use super::*;

    fn is_injected(e: &Error) -> bool {
        matches!(e, Error::Storage { source, .. } if source.kind() == std::io::ErrorKind::Other
            && source.to_string() == "injected failure")
    }

    #[tokio::test]
    async fn fail_writes_after_counts_only_successful_writes() {
        let memory = MemoryStorage::new();
        let s = FaultyStorage::new(Arc::new(memory.clone()));
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
        assert_eq!(memory.names(), ["a", "b"]);
        assert_eq!(s.get("a").await.unwrap(), b"1");
        s.delete("a").await.unwrap();
        s.fail_writes_after(None);
        s.put("c", b"3").await.unwrap();
        assert_eq!(memory.names(), ["b", "c"]);
    }

    #[tokio::test]
    async fn fail_deletes_after_counts_only_successful_deletes() {
        let memory = MemoryStorage::new();
        let s = FaultyStorage::new(Arc::new(memory.clone()));
        for name in ["a", "b", "c"] {
            s.put(name, b"x").await.unwrap();
        }
        s.fail_deletes_after(Some(1));
        s.delete("a").await.unwrap();
        let e = s.delete("b").await.unwrap_err();
        assert!(is_injected(&e), "{e}");
        // Writes and reads go on; the name stays.
        s.put("d", b"y").await.unwrap();
        assert_eq!(memory.names(), ["b", "c", "d"]);
        s.fail_deletes_after(None);
        s.delete("b").await.unwrap();
        assert_eq!(memory.names(), ["c", "d"]);
    }

    /// A gate holds exactly the writes it matches, up to its capacity, until opened.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_gate_holds_matching_writes_until_opened() {
        let memory = MemoryStorage::new();
        let s = FaultyStorage::new(Arc::new(memory.clone()));
        let gate = s.gate(1, |name, mode| {
            name.starts_with("locks/") && *mode == PutMode::Overwrite
        });
        s.create("locks/a", b"created").await.unwrap();
        let held = tokio::spawn({
            let s = s.clone();
            async move { s.put("locks/a", b"held").await }
        });
        gate.wait_for(1).await;
        s.put("locks/b", b"past capacity").await.unwrap();
        assert_eq!(memory.get("locks/a").await.unwrap(), b"created");
        gate.open();
        held.await.unwrap().unwrap();
        assert_eq!(memory.get("locks/a").await.unwrap(), b"held");
    }
}
