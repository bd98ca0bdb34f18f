//! The persistent local index cache: the repository's index (blob id -> pack, offset,
//! lengths) kept in a RocksDB database on local disk instead of a hash map in RAM, so a
//! process's memory does not grow with the number of blobs in the repository.
//!
//! The cache is derived data. It records which index files it has absorbed; a load adds
//! the index files it has not seen and rebuilds from scratch when one it has seen is gone
//! (gc compaction replaced it, so packs it named may be deleted). Anything unexpected in
//! the database (a value of the wrong length, an unknown layout version, another
//! repository's id) also leads to a rebuild: the repository stays the source of truth.
//!
//! Layout (all keys prefixed by one byte):
//! - `b` `blob_id[32]` -> pack_number u32 LE || blob_type u8 || offset u32 || stored u32 || raw u32
//!   (17 bytes), then `base_id[32]` for a delta blob (49 bytes)
//! - `p` pack_number u32 LE -> `pack_id[32]` || pack_kind u8
//! - `q` `pack_id[32]` -> pack_number u32 LE
//! - `f` index file name -> (empty): index files absorbed
//! - `m` -> layout u8 || blob_count u64 || pack_count u32 || repository id (utf-8)
//!
//! Writes go in one batch per index file (entries, pack records, file marker and
//! counters together), without the write-ahead log: after a crash the database holds a
//! prefix of the batches, which is consistent, and the files it lost are absorbed again.
//!
//! A rebuild from scratch (an empty or discarded cache) takes another path, because
//! reading every entry before writing it made it superlinear: entries are written
//! blind in batches of [`REBUILD_BATCH_ENTRIES`] (a blob in two packs keeps the last
//! location written, which is as good as the first), only entries of excluded packs are
//! checked first, and the blob count is taken by one scan at the end. Until then `m`
//! holds a marker no reader accepts, so a rebuild cut short starts over.
//!
//! Memory is bounded by the settings below: a 32 MiB block cache that also holds the
//! partitions of the index and of the Bloom filters, and two 16 MiB memtables. Only the
//! top level of each file's index and filter stays pinned: under 1 KiB per MiB of
//! table file, under 1 MiB at 10 million blobs.

use super::{BlobLocation, IndexFile};
use crate::blob::BlobType;
use crate::error::{Error, Result};
use crate::free_space::{format_bytes, free_space};
use crate::id::{BlobId, ID_LEN};
use crate::pack::{PackEntry, PackKind};
use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType,
    DataBlockIndexType, Options, WriteBatch, WriteOptions, DB,
};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Version of the key layout above; a database with another one is rebuilt. 2 keeps the
/// keys of 1 but rewrites the table files with the partitioned filters and index of
/// [`db_options`]: files written under 1 have one Bloom filter per file, which the
/// block cache cannot hold in a large cache (see there).
const LAYOUT: u8 = 2;
/// `m` while a rebuild runs: not a layout, so a cache left mid-rebuild is cleared.
const BUILDING: u8 = 0xfe;
/// Entries per write batch during a rebuild: bounds the batch's memory.
pub const REBUILD_BATCH_ENTRIES: usize = 1 << 16;
const BLOB: u8 = b'b';
const PACK: u8 = b'p';
const PACK_NUMBER: u8 = b'q';
const FILE: u8 = b'f';
const META: &[u8] = b"m";
/// Every key starts with one of the tags above, so these bound the whole key space.
const KEYS_START: &[u8] = b"";
const KEYS_END: &[u8] = b"\xff";
const BLOB_VALUE_LEN: usize = 4 + 1 + 4 + 4 + 4;
/// A delta blob's record: the same, then its base id.
const DELTA_VALUE_LEN: usize = BLOB_VALUE_LEN + ID_LEN;
const PACK_VALUE_LEN: usize = ID_LEN + 1;
/// Block cache shared by data, index and filter blocks.
const BLOCK_CACHE_BYTES: usize = 32 << 20;
const WRITE_BUFFER_BYTES: usize = 16 << 20;

/// The index of one repository in a local RocksDB database.
pub struct IndexCache {
    db: Option<DB>,
    path: PathBuf,
    repository_id: String,
    /// Removed when dropped: a private database used when the shared one is locked by
    /// another process, or when no cache directory is wanted.
    temporary: Option<tempfile::TempDir>,
    blob_count: u64,
    pack_count: u32,
    /// Set when a read found something that cannot be right; the next load rebuilds.
    damaged: AtomicBool,
    /// A rebuild from scratch is running: writes are blind, counts wait for the end.
    building: bool,
    /// Packs recently resolved by number ([`PackMemo`]).
    packs: std::sync::Mutex<PackMemo>,
    /// Why `open` deleted a damaged database and made this one ([`IndexCache::made_again`]).
    made_again: Option<String>,
}

/// Slots of [`PackMemo`]: 40 bytes each.
const PACK_MEMO_SLOTS: usize = 1024;

/// The last pack seen for each pack number modulo [`PACK_MEMO_SLOTS`]. Locating a blob
/// reads its record and then its pack's; restores and reads take blobs pack by pack,
/// so the second read was a third of the cost of locating (a restore of SRC spent 4% of
/// its CPU time on it). Emptied by every write, so it never outlives a renumbering.
struct PackMemo {
    slots: Vec<Option<(u32, BlobId, PackKind)>>,
}

impl PackMemo {
    fn new() -> PackMemo {
        PackMemo {
            slots: vec![None; PACK_MEMO_SLOTS],
        }
    }

    fn slot(number: u32) -> usize {
        number as usize % PACK_MEMO_SLOTS
    }

    fn get(&self, number: u32) -> Option<(BlobId, PackKind)> {
        match self.slots[Self::slot(number)] {
            Some((n, id, kind)) if n == number => Some((id, kind)),
            _ => None,
        }
    }

    fn put(&mut self, number: u32, id: BlobId, kind: PackKind) {
        self.slots[Self::slot(number)] = Some((number, id, kind));
    }

    fn clear(&mut self) {
        self.slots.fill(None);
    }
}

impl std::fmt::Debug for IndexCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexCache")
            .field("path", &self.path)
            .field("blobs", &self.blob_count)
            .field("packs", &self.pack_count)
            .finish()
    }
}

fn cache_error(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::IndexCache {
        path: path.to_path_buf(),
        reason: format!("{what}: {e}"),
        full: false,
    }
}

/// Free space a cache's file system must keep before RocksDB is asked to write there:
/// room to flush both memtables.
pub const MIN_FREE_BYTES: u64 = 2 * WRITE_BUFFER_BYTES as u64;

/// Free space needed per byte of index files still to absorb: the cache takes about
/// twice their size, and a compaction writes its new files before it deletes the old.
pub const FREE_BYTES_PER_INDEX_BYTE: u64 = 4;

/// Check that the file system holding `dir` has [`MIN_FREE_BYTES`] free beyond `more`.
///
/// RocksDB must not meet a full disk: Debian's build keeps its assertions, and its info
/// log writer asserts (aborting the process) on the line after a write that failed,
/// which is why the log also takes only the header lines written at open
/// (`db_options`). A full disk found here is an [`Error::IndexCache`] with `full` set,
/// and the repository goes on without the cache.
///
/// # Errors
/// [`Error::IndexCache`] when there is not enough room.
pub fn check_room(dir: &Path, more: u64) -> Result<()> {
    let Some(space) = free_space(dir) else {
        return Ok(());
    };
    let needed = MIN_FREE_BYTES.saturating_add(more);
    if space.available >= needed {
        return Ok(());
    }
    Err(Error::IndexCache {
        path: dir.to_path_buf(),
        reason: format!(
            "its file system has {} free of {}; the cache needs {} free",
            format_bytes(space.available),
            format_bytes(space.total),
            format_bytes(needed)
        ),
        full: true,
    })
}

fn db_options() -> Options {
    let mut table = BlockBasedOptions::default();
    // Without it RocksDB's default (8 MiB) cache is used.
    if let Ok(cache) = Cache::new_lru_cache(BLOCK_CACHE_BYTES) {
        table.set_block_cache(&cache);
    }
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    // Filters and index in 4 KiB partitions, found through a small pinned top level. A
    // whole-file Bloom filter is 1.2 MiB per million keys: in a cache of 10 million
    // blobs the block cache evicted them constantly, and every lookup re-read one
    // (300 us a lookup, against 3 us for a miss and 10-16 us for a hit partitioned;
    // BENCHMARKS.md, "Index cache lookups").
    table.set_partition_filters(true);
    table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
    table.set_metadata_block_size(4 << 10);
    table.set_pin_top_level_index_and_filter(true);
    // A lookup reads one data block; ids are random, so larger blocks only cost more
    // to read and search once the cache no longer holds them all.
    table.set_block_size(4 << 10);
    // A hash table in each data block finds a key without a binary search.
    table.set_data_block_index_type(DataBlockIndexType::BinaryAndHash);
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.set_block_based_table_factory(&table);
    // Ids are random: compression would not pay (and is not built in).
    opts.set_compression_type(DBCompressionType::None);
    opts.set_write_buffer_size(WRITE_BUFFER_BYTES);
    opts.set_max_write_buffer_number(2);
    opts.set_max_open_files(256);
    opts.set_max_background_jobs(2);
    opts.set_keep_log_file_num(2);
    opts.set_max_log_file_size(1 << 20);
    opts.set_level_compaction_dynamic_level_bytes(true);
    // Only the header lines written at open go to the info log (`LOG`). Once a write to
    // it has failed, RocksDB's writer asserts on the next line and aborts the process: a
    // full disk under the cache aborted every command (exit 134). The header fits in the
    // room [`check_room`] asks for; nothing is logged after open, flush failures included.
    opts.set_log_level(rocksdb::LogLevel::Header);
    opts
}

/// Open with the default column family named, so batched reads can address it.
fn open_db(path: &Path) -> std::result::Result<DB, rocksdb::Error> {
    let opts = db_options();
    let default = ColumnFamilyDescriptor::new(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, opts.clone());
    DB::open_cf_descriptors(&opts, path, [default])
}

fn write_options() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.disable_wal(true);
    w
}

fn blob_key(id: &BlobId) -> [u8; 1 + ID_LEN] {
    let mut k = [BLOB; 1 + ID_LEN];
    k[1..].copy_from_slice(&id.0);
    k
}

fn pack_key(number: u32) -> [u8; 5] {
    let mut k = [PACK; 5];
    k[1..].copy_from_slice(&number.to_le_bytes());
    k
}

fn pack_number_key(id: &BlobId) -> [u8; 1 + ID_LEN] {
    let mut k = [PACK_NUMBER; 1 + ID_LEN];
    k[1..].copy_from_slice(&id.0);
    k
}

fn file_key(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(FILE);
    k.extend_from_slice(name.as_bytes());
    k
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// A blob's stored record: pack number and where in it.
#[derive(Debug, Clone, Copy)]
struct BlobRecord {
    pack: u32,
    blob_type: BlobType,
    offset: u32,
    stored_len: u32,
    raw_len: u32,
    base: Option<BlobId>,
}

impl BlobRecord {
    fn encode(&self) -> ([u8; DELTA_VALUE_LEN], usize) {
        let mut v = [0u8; DELTA_VALUE_LEN];
        v[0..4].copy_from_slice(&self.pack.to_le_bytes());
        v[4] = self.blob_type as u8;
        v[5..9].copy_from_slice(&self.offset.to_le_bytes());
        v[9..13].copy_from_slice(&self.stored_len.to_le_bytes());
        v[13..17].copy_from_slice(&self.raw_len.to_le_bytes());
        match &self.base {
            Some(base) => {
                v[BLOB_VALUE_LEN..].copy_from_slice(&base.0);
                (v, DELTA_VALUE_LEN)
            }
            None => (v, BLOB_VALUE_LEN),
        }
    }

    fn decode(v: &[u8]) -> Option<BlobRecord> {
        let base = match v.len() {
            BLOB_VALUE_LEN => None,
            DELTA_VALUE_LEN => {
                let mut id = [0u8; ID_LEN];
                id.copy_from_slice(&v[BLOB_VALUE_LEN..]);
                Some(BlobId(id))
            }
            _ => return None,
        };
        Some(BlobRecord {
            pack: u32_at(v, 0),
            blob_type: BlobType::from_u8(v[4], "index cache").ok()?,
            offset: u32_at(v, 5),
            stored_len: u32_at(v, 9),
            raw_len: u32_at(v, 13),
            base,
        })
    }
}

fn decode_pack(v: &[u8]) -> Option<(BlobId, PackKind)> {
    if v.len() != PACK_VALUE_LEN {
        return None;
    }
    let mut id = [0u8; ID_LEN];
    id.copy_from_slice(&v[..ID_LEN]);
    Some((
        BlobId(id),
        PackKind::from_u8(v[ID_LEN], "index cache").ok()?,
    ))
}

/// Whether opening failed because another process (or this one) holds the database:
/// "IO error: While lock file: <path>/LOCK: Resource temporarily unavailable", or "IO
/// error: lock hold by current process". Matching "lock" alone took "Corruption: block
/// checksum mismatch" for one, so a damaged cache was never made again: every command
/// built a private index from scratch beside it.
fn is_lock_error(e: &rocksdb::Error) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    e.kind() == rocksdb::ErrorKind::IOError
        && (text.contains("while lock file") || text.contains("lock hold by current process"))
}

impl IndexCache {
    /// Open (or create) the cache of repository `repository_id` under `dir`
    /// (`<dir>/<repository_id>/index`). When another process holds that database, a
    /// private temporary one under `dir` is used instead and built from scratch. A
    /// database that does not open, or whose first read fails, is damaged: being derived
    /// data, it is deleted and made again, empty.
    ///
    /// # Errors
    /// [`Error::IndexCache`] when the file system lacks room ([`check_room`]) or no
    /// database can be opened.
    pub fn open(dir: &Path, repository_id: &str) -> Result<IndexCache> {
        let repo_dir = dir.join(sanitize(repository_id));
        std::fs::create_dir_all(&repo_dir)
            .map_err(|e| cache_error(&repo_dir, "create directory", e))?;
        restrict_permissions(dir);
        check_room(&repo_dir, 0)?;
        let path = repo_dir.join("index");
        let damage = match open_db(&path) {
            Ok(db) => match IndexCache::start(db, path.clone(), repository_id, None) {
                Ok(cache) => return Ok(cache),
                Err(e) => e.to_string(),
            },
            Err(e) if is_lock_error(&e) => {
                return IndexCache::temporary_in(&repo_dir, repository_id);
            }
            Err(e) => e.to_string(),
        };
        let mut cache = IndexCache::recreate_at(path, repository_id)?;
        cache.made_again = Some(damage);
        Ok(cache)
    }

    /// Why [`IndexCache::open`] found the database damaged and made it again, empty, if
    /// it did.
    pub fn made_again(&self) -> Option<&str> {
        self.made_again.as_deref()
    }

    /// Delete the database at `path`, damaged or not, and make a new, empty one there.
    fn recreate_at(path: PathBuf, repository_id: &str) -> Result<IndexCache> {
        // Only RocksDB's own files go, even if `path` holds others.
        let _ = DB::destroy(&Options::default(), &path);
        let db = open_db(&path).map_err(|e| cache_error(&path, "open", e))?;
        IndexCache::start(db, path, repository_id, None)
    }

    /// Close this cache, delete its database and make a new, empty one in its place (a
    /// temporary cache gets a new temporary directory beside the old one). For a cache
    /// found damaged while the index was loaded.
    ///
    /// # Errors
    /// As [`IndexCache::open`].
    pub fn recreate(mut self) -> Result<IndexCache> {
        let id = std::mem::take(&mut self.repository_id);
        let path = self.path.clone();
        let temporary_parent = self
            .temporary
            .as_ref()
            .and_then(|t| t.path().parent().map(Path::to_path_buf));
        // Closes the database (releasing its lock) and removes a temporary directory.
        drop(self);
        match temporary_parent {
            Some(parent) => IndexCache::temporary_in(&parent, &id),
            None => {
                if let Some(dir) = path.parent() {
                    check_room(dir, 0)?;
                }
                IndexCache::recreate_at(path, &id)
            }
        }
    }

    /// A private cache in a fresh directory under `parent`, removed when dropped.
    ///
    /// # Errors
    /// [`Error::IndexCache`] when the file system lacks room ([`check_room`]) or the
    /// database cannot be made.
    pub fn temporary_in(parent: &Path, repository_id: &str) -> Result<IndexCache> {
        std::fs::create_dir_all(parent).map_err(|e| cache_error(parent, "create directory", e))?;
        check_room(parent, 0)?;
        let dir = tempfile::Builder::new()
            .prefix("index-tmp-")
            .tempdir_in(parent)
            .map_err(|e| cache_error(parent, "create temporary directory", e))?;
        let path = dir.path().join("index");
        let db = open_db(&path).map_err(|e| cache_error(&path, "open", e))?;
        IndexCache::start(db, path, repository_id, Some(dir))
    }

    /// [`check_room`] for absorbing `index_bytes` bytes of index files.
    ///
    /// # Errors
    /// [`Error::IndexCache`] with `full` set.
    pub fn check_room_for(&self, index_bytes: u64) -> Result<()> {
        let dir = self.path.parent().unwrap_or(&self.path);
        check_room(dir, index_bytes.saturating_mul(FREE_BYTES_PER_INDEX_BYTE))
    }

    fn start(
        db: DB,
        path: PathBuf,
        repository_id: &str,
        temporary: Option<tempfile::TempDir>,
    ) -> Result<IndexCache> {
        let mut cache = IndexCache {
            db: Some(db),
            path,
            repository_id: repository_id.to_string(),
            temporary,
            blob_count: 0,
            pack_count: 0,
            damaged: AtomicBool::new(false),
            building: false,
            packs: std::sync::Mutex::new(PackMemo::new()),
            made_again: None,
        };
        let meta = cache
            .db()?
            .get(META)
            .map_err(|e| cache_error(&cache.path, "read", e))?;
        match meta.as_deref().and_then(decode_meta) {
            Some((blobs, packs, id)) if id == repository_id => {
                cache.blob_count = blobs;
                cache.pack_count = packs;
            }
            // New, of another layout, or of another repository: start empty.
            _ => cache.clear()?,
        }
        Ok(cache)
    }

    fn db(&self) -> Result<&DB> {
        self.db
            .as_ref()
            .ok_or_else(|| Error::Internal("index cache closed".into()))
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this is a private database that is deleted when dropped.
    pub fn is_temporary(&self) -> bool {
        self.temporary.is_some()
    }

    /// Whether a read failed or found a record that cannot be right (the next load
    /// makes the cache again).
    pub fn is_damaged(&self) -> bool {
        self.damaged.load(Ordering::Relaxed)
    }

    /// The error saying this cache is damaged ([`IndexCache::is_damaged`]).
    pub fn damaged_error(&self) -> Error {
        cache_error(
            &self.path,
            "damaged",
            "a read failed or found a record that cannot be right",
        )
    }

    /// Drop every record.
    ///
    /// # Errors
    /// [`Error::IndexCache`].
    pub fn clear(&mut self) -> Result<()> {
        self.building = false;
        self.reset()?;
        let mut batch = WriteBatch::default();
        batch.put(META, self.encode_meta());
        self.write(batch)
    }

    /// Delete every key in place. The database stays open: closing it would release its
    /// lock, and another process could open the shared cache before this one reopens
    /// it, leaving this one with an error instead of a cache.
    fn reset(&mut self) -> Result<()> {
        let db = self.db()?;
        // Whole table files go without being read; the range tombstone covers the rest.
        db.delete_file_in_range(KEYS_START, KEYS_END)
            .map_err(|e| cache_error(&self.path, "clear", e))?;
        let mut batch = WriteBatch::default();
        batch.delete_range(KEYS_START, KEYS_END);
        self.write(batch)?;
        // Drop what the tombstone covers now rather than keep two caches on disk
        // while a rebuild writes the new one.
        self.db()?.compact_range(Some(KEYS_START), Some(KEYS_END));
        self.blob_count = 0;
        self.pack_count = 0;
        self.damaged.store(false, Ordering::Relaxed);
        Ok(())
    }

    fn encode_meta(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(13 + self.repository_id.len());
        v.push(LAYOUT);
        v.extend_from_slice(&self.blob_count.to_le_bytes());
        v.extend_from_slice(&self.pack_count.to_le_bytes());
        v.extend_from_slice(self.repository_id.as_bytes());
        v
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        self.forget_packs();
        self.db()?
            .write_opt(batch, &write_options())
            .map_err(|e| cache_error(&self.path, "write", e))
    }

    fn forget_packs(&self) {
        if let Ok(mut memo) = self.packs.lock() {
            memo.clear();
        }
    }

    fn mark_damaged(&self) {
        self.damaged.store(true, Ordering::Relaxed);
    }

    /// Names of the index files absorbed so far.
    ///
    /// # Errors
    /// [`Error::IndexCache`].
    pub fn absorbed_files(&self) -> Result<HashSet<String>> {
        let mut names = HashSet::new();
        for item in self.db()?.prefix_iterator([FILE]) {
            let (key, _) = item.map_err(|e| {
                self.mark_damaged();
                cache_error(&self.path, "read", e)
            })?;
            if key.first() != Some(&FILE) {
                break;
            }
            match std::str::from_utf8(&key[1..]) {
                Ok(name) => {
                    names.insert(name.to_string());
                }
                Err(_) => self.mark_damaged(),
            }
        }
        Ok(names)
    }

    /// Write everything buffered to disk (also done when dropped).
    ///
    /// # Errors
    /// [`Error::IndexCache`].
    pub fn flush(&self) -> Result<()> {
        self.db()?
            .flush()
            .map_err(|e| cache_error(&self.path, "flush", e))
    }
}

impl Drop for IndexCache {
    fn drop(&mut self) {
        if self.temporary.is_none() {
            if let Some(db) = &self.db {
                let _ = db.flush();
            }
        }
        // Close before the temporary directory goes.
        self.db = None;
    }
}

fn record(pack: u32, e: &PackEntry) -> BlobRecord {
    BlobRecord {
        pack,
        blob_type: e.blob_type,
        offset: e.offset,
        stored_len: e.stored_len,
        raw_len: e.raw_len,
        base: e.base,
    }
}

fn location(pack_id: BlobId, pack_kind: PackKind, rec: &BlobRecord) -> BlobLocation {
    BlobLocation {
        pack_id,
        pack_kind,
        blob_type: rec.blob_type,
        offset: rec.offset,
        stored_len: rec.stored_len,
        raw_len: rec.raw_len,
        base: rec.base,
    }
}

fn decode_meta(v: &[u8]) -> Option<(u64, u32, String)> {
    if v.len() < 13 || v[0] != LAYOUT {
        return None;
    }
    let mut blobs = [0u8; 8];
    blobs.copy_from_slice(&v[1..9]);
    let packs = u32_at(v, 9);
    let id = std::str::from_utf8(&v[13..]).ok()?;
    Some((u64::from_le_bytes(blobs), packs, id.to_string()))
}

/// Keep a repository id usable as a directory name whatever the config says.
fn sanitize(id: &str) -> String {
    let clean: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(64)
        .collect();
    if clean.is_empty() {
        "unnamed".into()
    } else {
        clean
    }
}

/// The cache names every blob and its length: keep it private to the user.
fn restrict_permissions(dir: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
}

mod read;
#[cfg(test)]
mod tests;
mod write;
