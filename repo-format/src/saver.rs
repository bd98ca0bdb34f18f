//! The blob saver: the write path shared by every backup task.
//!
//! `save` hashes a plaintext, skips it if the index (or this session) already has it,
//! otherwise compresses, encrypts and appends it to the open data or metadata pack. Full
//! packs go to an async uploader over a bounded channel (backpressure: at most
//! `connections + 1` packs wait in memory). The uploader records each durable pack in the
//! in-memory index once an index file lists it; index files are written every
//! [`PACKS_PER_INDEX_FILE`] packs and at the end, and describe only packs that exist.
//!
//! `save` is synchronous and blocks on backpressure: call it from rayon or blocking
//! threads, never from async code.

use crate::blob::{encode_blob, encode_delta_blob, BlobType, DeltaBase};
use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::gc::MAX_ENTRIES_PER_INDEX_FILE;
use crate::id::{BlobId, ID_LEN};
use crate::index::{Index, IndexFile, IndexPack};
use crate::pack::{FinishedPack, PackBuilder, PackKind};
use crate::storage::{Bytes, PutMode, Storage};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Packs described per index file written during a backup (fewer when they hold more
/// than [`MAX_ENTRIES_PER_INDEX_FILE`] blobs).
pub const PACKS_PER_INDEX_FILE: usize = 64;

/// Counters of what a saver added.
#[derive(Debug, Default)]
pub struct SaveStats {
    /// Blobs added.
    pub blobs_added: AtomicU64,
    /// Plaintext bytes of blobs added.
    pub bytes_added: AtomicU64,
    /// Stored bytes of blobs added.
    pub bytes_stored: AtomicU64,
    /// Packs uploaded.
    pub packs_written: AtomicU64,
    /// Index files written.
    pub index_files_written: AtomicU64,
    /// Blobs added as deltas against a base (counted in `blobs_added` too).
    pub deltas_added: AtomicU64,
    /// When the first pack was stored (for the time to the first pack of a backup).
    pub first_pack_at: std::sync::OnceLock<std::time::Instant>,
}

/// Ids of blobs this session has taken on to store that the shared index does not list
/// yet: deduplication within the session until their index file is written. Then they
/// leave, so the set holds at most about one index file's worth of blobs however much a
/// backup adds (a database stream cut in pages adds 75k blobs per GB).
#[derive(Debug, Default)]
struct Claimed {
    ids: Mutex<HashSet<BlobId>>,
    /// Counts the index files written; each is counted before its ids leave `ids`.
    pruned: AtomicU64,
}

/// Buffers of packs the uploader has written, for the next packs to fill, while packs
/// fill fast. A fresh pack buffer costs a page fault per 4 KiB as it fills: 4096 for a
/// 16 MiB pack, about 18 ms of system time on the project machine (a VM whose freed pages
/// go back to the host). A backup of 1 GiB of random data, a pack every 30-40 ms, took
/// 2.8 s without reuse and 2.0 s with it (benches/NOTES.md, "Pack writes past the page
/// cache"). A kept buffer is resident while the next pack fills, though: 16 MiB more at
/// the peak of a backup of small files, which fills a pack every half second and would
/// gain a few percent at most. So buffers are kept only while packs fill in under
/// [`FAST_PACK_FILL`], and dropped once the saver closes.
/// A buffer is only allocated when none is spare, so there are never more of them than
/// were in use at once.
#[derive(Debug, Default)]
struct SparePacks {
    buffers: Mutex<Vec<Vec<u8>>>,
    /// Whether the last data pack filled in under [`FAST_PACK_FILL`].
    fast: AtomicBool,
    closed: AtomicBool,
}

/// Packs filling faster than this keep their buffers for the next ones.
const FAST_PACK_FILL: Duration = Duration::from_millis(250);

/// Spare pack buffers kept at most: enough for the packs queued and uploading at once.
const MAX_SPARE_PACK_BUFFERS: usize = 4;

impl SparePacks {
    fn take(&self) -> Option<Vec<u8>> {
        self.buffers.lock().ok()?.pop()
    }

    /// Note whether packs fill fast; once they do not, the kept buffers go.
    fn set_fast(&self, fast: bool) {
        self.fast.store(fast, Ordering::Relaxed);
        if !fast {
            if let Ok(mut spare) = self.buffers.lock() {
                spare.clear();
            }
        }
    }

    fn give(&self, buf: Vec<u8>) {
        if !self.fast.load(Ordering::Relaxed) || self.closed.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(mut spare) = self.buffers.lock() {
            if spare.len() < MAX_SPARE_PACK_BUFFERS {
                spare.push(buf);
            }
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.set_fast(false);
    }
}

/// Shared write path of one backup session.
#[derive(Debug)]
pub struct BlobSaver {
    keys: Keys,
    index: Arc<RwLock<Index>>,
    claimed: Arc<Claimed>,
    spare_packs: Arc<SparePacks>,
    data_pack: Mutex<OpenPack>,
    meta_pack: Mutex<OpenPack>,
    pack_size: usize,
    level: i32,
    tx: Mutex<Option<mpsc::Sender<FinishedPack>>>,
    /// Counters, readable while the backup runs.
    pub stats: Arc<SaveStats>,
}

/// Handle to the uploader task; [`UploaderHandle::finish`] waits for it.
#[derive(Debug)]
pub struct UploaderHandle {
    task: tokio::task::JoinHandle<Result<()>>,
}

impl UploaderHandle {
    /// Wait until every pack sent so far is uploaded and indexed.
    ///
    /// # Errors
    /// The first upload or index write failure.
    pub async fn finish(self) -> Result<()> {
        self.task
            .await
            .map_err(|e| Error::Internal(format!("uploader: {e}")))?
    }
}

impl BlobSaver {
    /// Start a saver and its uploader on the current tokio runtime.
    pub fn start(
        storage: Arc<dyn Storage>,
        keys: Keys,
        index: Arc<RwLock<Index>>,
        pack_size: u32,
        level: i32,
        connections: usize,
    ) -> (Arc<BlobSaver>, UploaderHandle) {
        let connections = connections.max(1);
        let (tx, rx) = mpsc::channel(1);
        let stats = Arc::new(SaveStats::default());
        let claimed = Arc::new(Claimed::default());
        let spare_packs = Arc::new(SparePacks::default());
        let uploader = Uploader {
            storage,
            keys: keys.clone(),
            index: index.clone(),
            claimed: claimed.clone(),
            spare_packs: spare_packs.clone(),
            stats: stats.clone(),
        };
        let task = tokio::spawn(upload_loop(uploader, rx, connections));
        let saver = BlobSaver {
            keys,
            index,
            claimed,
            spare_packs,
            data_pack: Mutex::new(OpenPack::new(PackBuilder::with_capacity(
                PackKind::Data,
                pack_capacity(pack_size),
            ))),
            meta_pack: Mutex::new(OpenPack::new(PackBuilder::with_capacity(
                PackKind::Meta,
                pack_capacity(pack_size),
            ))),
            pack_size: pack_size as usize,
            level,
            tx: Mutex::new(Some(tx)),
            stats,
        };
        (Arc::new(saver), UploaderHandle { task })
    }

    /// The keys blobs are encrypted with.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Store `plaintext` as a blob of `blob_type` unless it is already stored; returns
    /// its content id.
    ///
    /// # Errors
    /// [`Error::Internal`] if the uploader has stopped (after an upload failure, which
    /// the uploader itself reports).
    pub fn save(&self, blob_type: BlobType, plaintext: &[u8]) -> Result<BlobId> {
        let id = self.keys.content_id(plaintext);
        self.save_with_id(blob_type, id, plaintext)?;
        Ok(id)
    }

    /// [`BlobSaver::save`] for a plaintext whose id is already computed.
    ///
    /// # Errors
    /// As [`BlobSaver::save`].
    pub fn save_with_id(&self, blob_type: BlobType, id: BlobId, plaintext: &[u8]) -> Result<()> {
        self.save_inner(blob_type, id, plaintext, None)
    }

    /// Store Data `plaintext` (content id `id`) unless it is already stored: as a delta
    /// against `base` when that is usable and the delta is smaller than the full blob by
    /// more than the base id it costs in the pack header and index; else in full.
    ///
    /// # Errors
    /// As [`BlobSaver::save`].
    pub fn save_data_with_base(
        &self,
        id: BlobId,
        plaintext: &[u8],
        base: DeltaBase<'_>,
    ) -> Result<()> {
        self.save_inner(BlobType::Data, id, plaintext, Some(base))
    }

    /// Whether blob `id` is stored already, where this writer may reference it.
    pub fn is_stored(&self, id: &BlobId) -> bool {
        self.index.read().is_ok_and(|i| i.usable(id))
    }

    /// The base a new delta of `len` bytes against `page` (a Data blob of an earlier
    /// snapshot) should use: `page` itself if it is stored in full, else the base `page`
    /// is a delta of, so chains stay one step long. `None` unless that base is indexed
    /// (so durable) in a pack no gc tombstone names, and is `len` bytes long too (a page
    /// map pointing elsewhere must not make a backup read a large blob per page).
    pub fn delta_base_for(&self, page: &BlobId, len: usize) -> Option<BlobId> {
        let index = self.index.read().ok()?;
        let loc = index.get(page)?;
        let base = loc.base.unwrap_or(*page);
        let full = if loc.base.is_some() {
            index.get(&base)?
        } else {
            loc
        };
        let fits = full.raw_len as usize == len;
        (fits && full.base.is_none() && full.blob_type == BlobType::Data && index.usable(&base))
            .then_some(base)
    }

    fn save_inner(
        &self,
        blob_type: BlobType,
        id: BlobId,
        plaintext: &[u8],
        base: Option<DeltaBase<'_>>,
    ) -> Result<()> {
        if plaintext.len() as u64 > crate::blob::MAX_BLOB_PLAINTEXT {
            // Readers refuse such blobs; refuse to write one rather than commit a
            // snapshot that cannot be read back.
            return Err(Error::InvalidArgument(format!(
                "{blob_type:?} blob of {} bytes exceeds the format limit of {} bytes (a directory with too many entries?)",
                plaintext.len(),
                crate::blob::MAX_BLOB_PLAINTEXT
            )));
        }
        let pruned = self.claimed.pruned.load(Ordering::SeqCst);
        if self.index.read().map(|i| i.usable(&id)).unwrap_or(false) {
            return Ok(());
        }
        if !self.claimed.ids.lock().map_err(|_| poisoned())?.insert(id) {
            return Ok(());
        }
        // An index file written since the lookup may list the blob, its id gone from
        // the claimed set just before this claim: look again.
        if self.claimed.pruned.load(Ordering::SeqCst) != pruned
            && self.index.read().map(|i| i.usable(&id)).unwrap_or(false)
        {
            self.claimed.ids.lock().map_err(|_| poisoned())?.remove(&id);
            return Ok(());
        }
        let full = encode_blob(&self.keys, blob_type, &id, plaintext, self.level);
        let (stored, base_id) = match base {
            Some(base) if *base.id != id && blob_type == BlobType::Data => {
                let delta = encode_delta_blob(&self.keys, &id, plaintext, base, self.level)?;
                if delta.len() + 2 * ID_LEN < full.len() {
                    self.stats.deltas_added.fetch_add(1, Ordering::Relaxed);
                    (delta, Some(*base.id))
                } else {
                    (full, None)
                }
            }
            _ => (full, None),
        };
        self.stats.blobs_added.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_added
            .fetch_add(plaintext.len() as u64, Ordering::Relaxed);
        self.stats
            .bytes_stored
            .fetch_add(stored.len() as u64, Ordering::Relaxed);
        let kind = PackKind::for_blob(blob_type);
        let full = {
            let mut pack = self.packer(kind).lock().map_err(|_| poisoned())?;
            pack.builder
                .add_entry(blob_type, id, &stored, plaintext.len() as u32, base_id);
            if pack.builder.len() >= self.pack_size {
                if kind == PackKind::Data {
                    // Trees fill meta packs at their own pace; data decides.
                    self.spare_packs
                        .set_fast(pack.started.elapsed() < FAST_PACK_FILL);
                }
                let buf = self
                    .spare_packs
                    .take()
                    .unwrap_or_else(|| Vec::with_capacity(pack_capacity(self.pack_size as u32)));
                let next = OpenPack::new(PackBuilder::with_buffer(kind, buf));
                Some(std::mem::replace(&mut *pack, next).builder)
            } else {
                None
            }
        };
        if let Some(builder) = full {
            self.send(builder.finish(&self.keys))?;
        }
        Ok(())
    }

    fn packer(&self, kind: PackKind) -> &Mutex<OpenPack> {
        match kind {
            PackKind::Data => &self.data_pack,
            PackKind::Meta => &self.meta_pack,
        }
    }

    fn send(&self, pack: FinishedPack) -> Result<()> {
        let tx = self.tx.lock().map_err(|_| poisoned())?.clone();
        let tx = tx.ok_or_else(|| Error::Internal("blob saver already closed".into()))?;
        tx.blocking_send(pack)
            .map_err(|_| Error::Internal("pack uploader stopped (see the upload error)".into()))
    }

    /// Send the partly filled packs and close the channel; then await
    /// [`UploaderHandle::finish`]. Blocking: call from a blocking thread.
    ///
    /// # Errors
    /// As [`BlobSaver::save`].
    pub fn close(&self) -> Result<()> {
        self.spare_packs.close();
        for kind in [PackKind::Data, PackKind::Meta] {
            let builder = std::mem::replace(
                &mut *self.packer(kind).lock().map_err(|_| poisoned())?,
                OpenPack::new(PackBuilder::new(kind)),
            )
            .builder;
            if !builder.is_empty() {
                self.send(builder.finish(&self.keys))?;
            }
        }
        self.tx.lock().map_err(|_| poisoned())?.take();
        Ok(())
    }
}

/// The pack a saver is filling, and since when.
#[derive(Debug)]
struct OpenPack {
    builder: PackBuilder,
    started: Instant,
}

impl OpenPack {
    fn new(builder: PackBuilder) -> Self {
        OpenPack {
            builder,
            started: Instant::now(),
        }
    }
}

/// Room for a full pack: the target size, one maximal blob past it, and the header.
fn pack_capacity(pack_size: u32) -> usize {
    pack_size as usize + (crate::blob::MAX_BLOB_PLAINTEXT as usize).min(16 << 20) + (1 << 20)
}

fn poisoned() -> Error {
    Error::Internal("a backup worker panicked".into())
}

/// What the uploader shares with the saver that started it.
struct Uploader {
    storage: Arc<dyn Storage>,
    keys: Keys,
    index: Arc<RwLock<Index>>,
    claimed: Arc<Claimed>,
    spare_packs: Arc<SparePacks>,
    stats: Arc<SaveStats>,
}

async fn upload_loop(
    uploader: Uploader,
    mut rx: mpsc::Receiver<FinishedPack>,
    connections: usize,
) -> Result<()> {
    let Uploader {
        storage,
        keys,
        index,
        claimed,
        spare_packs,
        stats,
    } = uploader;
    let mut uploads = tokio::task::JoinSet::new();
    let mut done: Vec<IndexPack> = Vec::new();
    let mut entries_waiting = 0usize;
    let mut receiving = true;
    loop {
        tokio::select! {
            pack = rx.recv(), if receiving && uploads.len() < connections => {
                match pack {
                    Some(pack) => {
                        let storage = storage.clone();
                        let spare_packs = spare_packs.clone();
                        uploads.spawn(async move {
                            // Once the write returns the backend holds no clone, so the
                            // buffer comes back without a copy for the next pack.
                            let bytes = Bytes::from(pack.bytes);
                            storage.put_opts(&crate::layout::pack(pack.kind, &pack.id), bytes.clone(), PutMode::Overwrite).await?;
                            spare_packs.give(Vec::from(bytes));
                            Ok::<_, Error>(IndexPack { id: pack.id, kind: pack.kind, entries: pack.entries })
                        });
                    }
                    None => receiving = false,
                }
            }
            Some(joined) = uploads.join_next(), if !uploads.is_empty() => {
                let uploaded = joined.map_err(|e| Error::Internal(format!("upload task: {e}")))??;
                stats.packs_written.fetch_add(1, Ordering::Relaxed);
                let _ = stats.first_pack_at.set(std::time::Instant::now());
                entries_waiting += uploaded.entries.len();
                done.push(uploaded);
                if done.len() >= PACKS_PER_INDEX_FILE || entries_waiting >= MAX_ENTRIES_PER_INDEX_FILE {
                    entries_waiting = 0;
                    write_index_file(&*storage, &keys, &index, &claimed, std::mem::take(&mut done), &stats).await?;
                }
            }
            else => break,
        }
    }
    if !done.is_empty() {
        write_index_file(&*storage, &keys, &index, &claimed, done, &stats).await?;
    }
    Ok(())
}

/// Write an index file for `packs`, then make them visible in the shared in-memory
/// index. Only then: a blob in a pack that no index file lists must not be found by
/// deduplication of a later backup in the same process (if this backup fails, no index
/// file will ever list it). Within this backup the saver's claimed set covers them
/// until then, and lets go of them after.
async fn write_index_file(
    storage: &dyn Storage,
    keys: &Keys,
    index: &RwLock<Index>,
    claimed: &Claimed,
    packs: Vec<IndexPack>,
    stats: &SaveStats,
) -> Result<()> {
    let file = IndexFile {
        obsoletes: Vec::new(),
        packs,
    };
    let bytes = file.encode(keys);
    let name = crate::layout::index_file(&BlobId::of_stored(&bytes));
    storage.put(&name, &bytes).await?;
    index
        .write()
        .map_err(|_| poisoned())?
        .add_named_file(Some(&name), &file)?;
    // Counted before the ids leave, so a saver claiming one of them again sees the
    // count move and finds the blob in the index (BlobSaver::save_with_id).
    claimed.pruned.fetch_add(1, Ordering::SeqCst);
    let mut ids = claimed.ids.lock().map_err(|_| poisoned())?;
    for entry in file.packs.iter().flat_map(|p| &p.entries) {
        ids.remove(&entry.id);
    }
    drop(ids);
    stats.index_files_written.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buffers are kept only while packs fill fast, at most [`MAX_SPARE_PACK_BUFFERS`],
    /// dropped when packs slow down or the saver closes, and never kept after.
    #[test]
    fn spare_pack_buffers_are_kept_only_while_packs_fill_fast() {
        let spare = SparePacks::default();
        spare.give(vec![1; 10]);
        assert!(spare.take().is_none(), "kept before any pack filled fast");
        spare.set_fast(true);
        for _ in 0..MAX_SPARE_PACK_BUFFERS + 2 {
            spare.give(vec![2; 10]);
        }
        assert_eq!(spare.buffers.lock().unwrap().len(), MAX_SPARE_PACK_BUFFERS);
        assert_eq!(spare.take(), Some(vec![2; 10]));
        spare.set_fast(false);
        assert!(spare.take().is_none(), "kept after packs slowed down");
        spare.set_fast(true);
        spare.give(vec![3; 10]);
        spare.close();
        assert!(spare.take().is_none(), "kept after close");
        spare.set_fast(true);
        spare.give(vec![4; 10]);
        assert!(spare.take().is_none(), "kept after close");
    }
    use crate::gc::MAX_ENTRIES_PER_INDEX_FILE;

    /// Blobs leave the session's claimed set once an index file lists them, so it does
    /// not grow with the backup; saved again, from two threads at once, each blob is
    /// still stored exactly once (found in the claimed set or in the index).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn indexed_blobs_leave_the_claimed_set_and_still_deduplicate() {
        let (_storage, repo) = crate::verify::tests::memory_repo().await;
        let blobs = MAX_ENTRIES_PER_INDEX_FILE as u64 + 50_000;
        // 1 MiB packs of 200-byte blobs: an index file after 100k blobs, not 64 packs.
        let (saver, uploader) = BlobSaver::start(
            repo.storage().clone(),
            repo.keys().clone(),
            repo.index().clone(),
            1 << 20,
            1,
            2,
        );
        let saving = saver.clone();
        let claimed_after_first_index_file = tokio::task::spawn_blocking(move || {
            let blob = |n: u64| crate::fuzzing::pseudo_random_bytes(2 * n + 1, 200);
            std::thread::scope(|scope| {
                for backwards in [false, true] {
                    let saving = &saving;
                    scope.spawn(move || {
                        for i in 0..blobs {
                            let n = if backwards { blobs - 1 - i } else { i };
                            saving.save(BlobType::Data, &blob(n)).unwrap();
                        }
                    });
                }
            });
            let started = std::time::Instant::now();
            while saving.stats.index_files_written.load(Ordering::SeqCst) == 0 {
                assert!(started.elapsed().as_secs() < 60, "no index file written");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let claimed = saving.claimed.ids.lock().unwrap().len();
            // And once more, now that most of them are in the index.
            for n in 0..blobs {
                saving.save(BlobType::Data, &blob(n)).unwrap();
            }
            saving.close().unwrap();
            claimed
        })
        .await
        .unwrap();
        drop(saver.clone());
        uploader.finish().await.unwrap();
        assert!(
            claimed_after_first_index_file <= 60_000,
            "{claimed_after_first_index_file} ids still claimed"
        );
        assert_eq!(saver.stats.blobs_added.load(Ordering::SeqCst), blobs);
        assert_eq!(
            repo.index().read().unwrap().blob_count() as u64,
            blobs,
            "every blob indexed once"
        );
    }
}
