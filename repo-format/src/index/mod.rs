//! Index files (`index/<id>`) and the index built from them (in memory, or in the
//! on-disk cache of `index/cache.rs`).
//!
//! An index file lists, for some packs, every blob they hold with its offset, so a reader
//! finds any blob with one lookup and one ranged read. Index files are written by each
//! backup for the packs it uploaded; together they cover every pack. An index file may
//! name older index files it replaces (`obsoletes`), which compaction (gc) deletes after
//! writing it.
//!
//! Body (envelope type 2, version 1):
//! `obsolete_count u32 || id[32]* || pack_count u32 || pack*` with
//! `pack = pack_id[32] || kind u8 || entry_count u32 || entry*` and
//! `entry = type u8 || id[32] || offset u32 || stored_len u32 || raw_len u32`, then
//! `base[32]` when the type byte has [`crate::pack::DELTA_FLAG`] (version 2 files only; see `pack::DELTA_FLAG`).

use crate::blob::BlobType;
use crate::codec::{Reader, Writer};
use crate::crypto::Keys;
use crate::envelope::{open_file, seal_file, FileType};
use crate::error::{Error, Result};
use crate::id::{BlobId, ID_LEN};
pub mod cache;
pub mod copies;
use crate::pack::{check_base, decode_type_byte, PackEntry, PackKind};
use cache::IndexCache;
use copies::CopyRank;
use std::collections::{HashMap, HashSet};

/// Envelope version of index files without delta entries.
pub const INDEX_FILE_VERSION: u8 = 1;
/// Envelope version of index files with delta entries (type byte with [`crate::pack::DELTA_FLAG`],
/// base id after the entry). The highest version this build reads.
pub const INDEX_FILE_VERSION_DELTA: u8 = 2;
/// Length of one entry in an index file.
pub const INDEX_ENTRY_LEN: usize = 1 + ID_LEN + 4 + 4 + 4;
/// Length of a pack record before its entries.
pub const INDEX_PACK_HEADER_LEN: usize = ID_LEN + 1 + 4;

/// The blobs of one pack, as recorded in an index file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexPack {
    /// Storage id of the pack.
    pub id: BlobId,
    /// Data or metadata pack.
    pub kind: PackKind,
    /// Blobs in the pack.
    pub entries: Vec<PackEntry>,
}

/// A decoded index file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexFile {
    /// Index files this one replaces.
    pub obsoletes: Vec<BlobId>,
    /// Packs it describes.
    pub packs: Vec<IndexPack>,
}

impl IndexFile {
    /// Encode as a sealed index file.
    pub fn encode(&self, keys: &Keys) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(self.obsoletes.len() as u32);
        for id in &self.obsoletes {
            w.id(id);
        }
        write_pack_records(&mut w, &self.packs);
        // Version 1 unless a delta entry needs 2, as for packs.
        let has_delta = self
            .packs
            .iter()
            .any(|p| p.entries.iter().any(|e| e.base.is_some()));
        let version = if has_delta {
            INDEX_FILE_VERSION_DELTA
        } else {
            INDEX_FILE_VERSION
        };
        seal_file(keys, FileType::Index, version, &w.finish())
    }

    /// Decode a sealed index file.
    ///
    /// # Errors
    /// [`Error::Corrupt`] / [`Error::UnsupportedVersion`] naming `object`.
    pub fn decode(keys: &Keys, bytes: &[u8], object: &str) -> Result<IndexFile> {
        let (version, body) = open_file(
            keys,
            bytes,
            FileType::Index,
            INDEX_FILE_VERSION_DELTA,
            object,
        )?;
        Self::decode_body(&body, version, object)
    }

    /// Decode the plaintext body of an index file of envelope `version`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming `object`.
    pub fn decode_body(body: &[u8], version: u8, object: &str) -> Result<IndexFile> {
        let deltas_allowed = version >= INDEX_FILE_VERSION_DELTA;
        let mut r = Reader::new(body, object);
        let n = r.count("obsolete count", ID_LEN)?;
        let mut obsoletes = Vec::with_capacity(n);
        for _ in 0..n {
            obsoletes.push(r.id("obsolete index id")?);
        }
        let n = r.count("pack count", INDEX_PACK_HEADER_LEN)?;
        let mut packs = Vec::with_capacity(n);
        for _ in 0..n {
            let id = r.id("pack id")?;
            let kind = PackKind::from_u8(r.u8("pack kind")?, object)?;
            let m = r.count("entry count", INDEX_ENTRY_LEN)?;
            let mut entries = Vec::with_capacity(m);
            for _ in 0..m {
                let (blob_type, delta) =
                    decode_type_byte(r.u8("blob type")?, deltas_allowed, object)?;
                let bid = r.id("blob id")?;
                let offset = r.u32("offset")?;
                let stored_len = r.u32("stored length")?;
                let raw_len = r.u32("raw length")?;
                let base = if delta { Some(r.id("base id")?) } else { None };
                check_base(&bid, base.as_ref(), object)?;
                if offset.checked_add(stored_len).is_none() {
                    return Err(r.corrupt(format!("blob {} extends past 4 GiB", bid.short())));
                }
                entries.push(PackEntry {
                    blob_type,
                    id: bid,
                    offset,
                    stored_len,
                    raw_len,
                    base,
                });
            }
            packs.push(IndexPack { id, kind, entries });
        }
        r.finish()?;
        Ok(IndexFile { obsoletes, packs })
    }
}

/// Where a blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    /// Pack holding it.
    pub pack_id: BlobId,
    /// Kind of that pack.
    pub pack_kind: PackKind,
    /// Blob type.
    pub blob_type: BlobType,
    /// Offset in the pack.
    pub offset: u32,
    /// Stored length.
    pub stored_len: u32,
    /// Plaintext length.
    pub raw_len: u32,
    /// For a delta blob, its base (see [`PackEntry::base`]).
    pub base: Option<BlobId>,
}

impl BlobLocation {
    /// The storage name of the pack holding the blob.
    pub fn pack_name(&self) -> String {
        crate::layout::pack(self.pack_kind, &self.pack_id)
    }
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    pack: u32,
    blob_type: BlobType,
    offset: u32,
    stored_len: u32,
    raw_len: u32,
    base: Option<BlobId>,
}

/// Every blob in a hash map: about 80 bytes per blob. For tests and small repositories;
/// the command line uses the on-disk [`IndexCache`].
#[derive(Debug, Default)]
struct MemoryIndex {
    packs: Vec<(BlobId, PackKind)>,
    pack_numbers: HashMap<BlobId, u32>,
    blobs: HashMap<BlobId, Slot>,
}

impl MemoryIndex {
    fn add_pack(
        &mut self,
        id: BlobId,
        kind: PackKind,
        entries: &[PackEntry],
        excluded: &HashSet<BlobId>,
    ) {
        let number = *self.pack_numbers.entry(id).or_insert_with(|| {
            self.packs.push((id, kind));
            (self.packs.len() - 1) as u32
        });
        self.packs[number as usize].1 = kind;
        let new_is_excluded = excluded.contains(&id);
        for e in entries {
            let slot = Slot {
                pack: number,
                blob_type: e.blob_type,
                offset: e.offset,
                stored_len: e.stored_len,
                raw_len: e.raw_len,
                base: e.base,
            };
            match self.blobs.entry(e.id) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(slot);
                }
                // Which copy wins: `copies` (outside excluded packs, then full).
                std::collections::hash_map::Entry::Occupied(mut o) => {
                    let old_pack = self.packs[o.get().pack as usize].0;
                    let old = CopyRank::of(o.get().base.is_some(), excluded.contains(&old_pack));
                    if copies::replaces(CopyRank::of(slot.base.is_some(), new_is_excluded), old) {
                        o.insert(slot);
                    }
                }
            }
        }
    }

    fn get(&self, id: &BlobId) -> Option<BlobLocation> {
        self.blobs.get(id).map(|s| {
            let (pack_id, pack_kind) = self.packs[s.pack as usize];
            BlobLocation {
                pack_id,
                pack_kind,
                blob_type: s.blob_type,
                offset: s.offset,
                stored_len: s.stored_len,
                raw_len: s.raw_len,
                base: s.base,
            }
        })
    }
}

#[derive(Debug)]
enum Store {
    Memory(MemoryIndex),
    Disk(Box<IndexCache>),
    /// A cold backup's index (SPEC.md section 15, S-7): no index file read.
    Cold(ColdIndex),
}

/// The index of a backup that loaded no index file: exact locations of its parent's
/// trees and chunk lists (from the parent's locator) and of the packs it wrote itself,
/// and the parent's data ids it may reference without a lookup.
#[derive(Debug)]
struct ColdIndex {
    exact: MemoryIndex,
    /// Parent data ids S-7 lets this writer reference (at most [`MAX_TRUSTED`]).
    trusted: HashSet<BlobId>,
    /// The store in place before, restored by [`Index::leave_cold`].
    parked: Box<Store>,
    /// Packs this process added while cold, added again after leaving.
    own: Vec<IndexPack>,
}

/// Most parent data ids a cold index trusts (8 MiB of ids): chunks of changed files
/// past it are stored again.
pub const MAX_TRUSTED: usize = 1 << 18;

/// The index: every known blob id mapped to its location, either in memory or in the
/// persistent local [`IndexCache`] (memory then stays flat as the repository grows).
#[derive(Debug)]
pub struct Index {
    store: Store,
    /// Packs named by gc tombstones: a writer must not reference their blobs.
    excluded: HashSet<BlobId>,
}

impl Default for Index {
    fn default() -> Self {
        Index::new()
    }
}

impl Index {
    /// An empty in-memory index.
    pub fn new() -> Self {
        Index {
            store: Store::Memory(MemoryIndex::default()),
            excluded: HashSet::new(),
        }
    }

    /// An index kept in `cache` (which may already hold absorbed index files).
    pub fn on_disk(cache: IndexCache) -> Self {
        Index {
            store: Store::Disk(Box::new(cache)),
            excluded: HashSet::new(),
        }
    }

    /// Keep the index in `cache` from now on (in memory if `None`), empty or as `cache`
    /// holds it; returns the cache it was kept in until now. Exclusions stay.
    pub fn replace_cache(&mut self, cache: Option<IndexCache>) -> Option<IndexCache> {
        let store = match cache {
            Some(c) => Store::Disk(Box::new(c)),
            None => Store::Memory(MemoryIndex::default()),
        };
        match std::mem::replace(&mut self.store, store) {
            Store::Disk(old) => Some(*old),
            Store::Cold(ColdIndex { parked, .. }) => match *parked {
                Store::Disk(old) => Some(*old),
                _ => None,
            },
            Store::Memory(_) => None,
        }
    }

    /// The on-disk cache, if this index lives in one.
    pub fn cache(&self) -> Option<&IndexCache> {
        match &self.store {
            Store::Memory(_) | Store::Cold(_) => None,
            Store::Disk(c) => Some(c),
        }
    }

    /// Record every blob of `pack`. A blob already known keeps its first location,
    /// unless that is in an excluded pack and this one is not.
    ///
    /// # Errors
    /// [`Error::IndexCache`] when the on-disk cache cannot be written.
    pub fn add_pack(&mut self, id: BlobId, kind: PackKind, entries: &[PackEntry]) -> Result<()> {
        match &mut self.store {
            Store::Cold(c) => {
                c.exact.add_pack(id, kind, entries, &self.excluded);
                c.own.push(IndexPack {
                    id,
                    kind,
                    entries: entries.to_vec(),
                });
                Ok(())
            }
            Store::Memory(m) => {
                m.add_pack(id, kind, entries, &self.excluded);
                Ok(())
            }
            Store::Disk(c) => {
                let file = IndexFile {
                    obsoletes: Vec::new(),
                    packs: vec![IndexPack {
                        id,
                        kind,
                        entries: entries.to_vec(),
                    }],
                };
                c.add_file(None, &file, &self.excluded)
            }
        }
    }

    /// Add every pack of an index file.
    ///
    /// # Errors
    /// As [`Index::add_pack`].
    pub fn add_file(&mut self, file: &IndexFile) -> Result<()> {
        self.add_named_file(None, file)
    }

    /// Add every pack of index file `name`; an on-disk index remembers the name, so a
    /// later load does not read that file again.
    ///
    /// # Errors
    /// As [`Index::add_pack`].
    pub fn add_named_file(&mut self, name: Option<&str>, file: &IndexFile) -> Result<()> {
        match &mut self.store {
            Store::Memory(m) | Store::Cold(ColdIndex { exact: m, .. }) => {
                for p in &file.packs {
                    m.add_pack(p.id, p.kind, &p.entries, &self.excluded);
                }
                Ok(())
            }
            Store::Disk(c) => c.add_file(name, file, &self.excluded),
        }
    }

    /// Index files an on-disk index has absorbed (`None` for an in-memory index, which
    /// is always built from scratch, and for a rebuild cut short).
    ///
    /// # Errors
    /// [`Error::IndexCache`] when the cache is damaged: it failed a read, or holds a
    /// record that does not decode. Rebuilding it in place would not do: RocksDB keeps
    /// the damaged files it cannot compact, and every later load found them again and
    /// rebuilt again; the caller makes the cache again instead.
    pub fn absorbed_files(&self) -> Result<Option<HashSet<String>>> {
        match &self.store {
            Store::Memory(_) | Store::Cold(_) => Ok(None),
            // A rebuild that did not finish (an error cut the load short) starts over.
            Store::Disk(c) if c.is_building() => Ok(None),
            Store::Disk(c) => {
                let files = c.absorbed_files()?;
                if c.is_damaged() {
                    return Err(c.damaged_error());
                }
                Ok(Some(files))
            }
        }
    }

    /// Forget every blob and pack (exclusions stay).
    ///
    /// # Errors
    /// [`Error::IndexCache`] when the on-disk cache cannot be recreated.
    pub fn clear(&mut self) -> Result<()> {
        match &mut self.store {
            Store::Memory(m) | Store::Cold(ColdIndex { exact: m, .. }) => {
                *m = MemoryIndex::default();
                Ok(())
            }
            Store::Disk(c) => c.clear(),
        }
    }

    /// Forget every blob and pack (exclusions stay) before adding every index file
    /// again; an on-disk index then writes without reading first until
    /// [`Index::finish_rebuild`].
    ///
    /// # Errors
    /// [`Error::IndexCache`] when the on-disk cache cannot be recreated.
    pub fn begin_rebuild(&mut self) -> Result<()> {
        match &mut self.store {
            Store::Memory(m) | Store::Cold(ColdIndex { exact: m, .. }) => {
                *m = MemoryIndex::default();
                Ok(())
            }
            Store::Disk(c) => c.begin_rebuild(),
        }
    }

    /// End what [`Index::begin_rebuild`] began (counts become exact again).
    ///
    /// # Errors
    /// [`Error::IndexCache`].
    pub fn finish_rebuild(&mut self) -> Result<()> {
        match &mut self.store {
            Store::Memory(_) | Store::Cold(_) => Ok(()),
            Store::Disk(c) => c.finish_rebuild(),
        }
    }

    /// Enter cold mode (S-7): keep the current store aside and answer from `packs` (a
    /// parent's locator) and the packs added from now on. Refused (false) while packs
    /// are excluded: S-7 (c) requires that the writer saw no tombstone.
    pub fn enter_cold(&mut self, packs: &[IndexPack]) -> bool {
        if !self.excluded.is_empty() || matches!(self.store, Store::Cold(_)) {
            return false;
        }
        let mut exact = MemoryIndex::default();
        for p in packs {
            exact.add_pack(p.id, p.kind, &p.entries, &self.excluded);
        }
        let parked = std::mem::replace(&mut self.store, Store::Memory(MemoryIndex::default()));
        self.store = Store::Cold(ColdIndex {
            exact,
            trusted: HashSet::new(),
            parked: Box::new(parked),
            own: Vec::new(),
        });
        true
    }

    /// Whether this is a cold index ([`Index::enter_cold`]).
    pub fn is_cold(&self) -> bool {
        matches!(self.store, Store::Cold(_))
    }

    /// Let a cold index answer "usable" for `ids` (data ids of the parent's version of
    /// a changed file, S-7 (a)) up to [`MAX_TRUSTED`]; no effect otherwise. Returns
    /// whether all were taken.
    pub fn trust(&mut self, ids: impl IntoIterator<Item = BlobId>) -> bool {
        let Store::Cold(c) = &mut self.store else {
            return false;
        };
        for id in ids {
            if c.trusted.len() >= MAX_TRUSTED {
                return false;
            }
            c.trusted.insert(id);
        }
        true
    }

    /// Leave cold mode: the store in place before comes back (empty or as it was, to be
    /// loaded), and the packs added while cold are returned, to add again once it is.
    /// `None` if the index was not cold.
    pub fn leave_cold(&mut self) -> Option<Vec<IndexPack>> {
        let placeholder = Store::Memory(MemoryIndex::default());
        match std::mem::replace(&mut self.store, placeholder) {
            Store::Cold(c) => {
                self.store = *c.parked;
                Some(c.own)
            }
            other => {
                self.store = other;
                None
            }
        }
    }

    /// Mark packs (from gc tombstones) whose blobs a writer must not reference.
    pub fn exclude_packs(&mut self, packs: &HashSet<BlobId>) {
        self.excluded.extend(packs.iter().copied());
    }

    /// Packs excluded so far.
    pub fn excluded_packs(&self) -> HashSet<BlobId> {
        self.excluded.clone()
    }

    /// Whether a writer may reference blob `id`: it is indexed in a pack that no gc
    /// tombstone names, and so is its base when it is a delta. (A delta that no snapshot
    /// references keeps its index entry until gc rewrites its pack, but its base may
    /// already be gone: gc keeps bases only of reachable deltas.)
    pub fn usable(&self, id: &BlobId) -> bool {
        if let Store::Cold(c) = &self.store {
            if c.trusted.contains(id) {
                return true;
            }
        }
        if self.excluded.is_empty() {
            // No pack to avoid: the type and base decide, without resolving packs.
            return match self.type_and_base(id) {
                None => false,
                Some((_, None)) => true,
                Some((_, Some(base))) => self.type_and_base(&base) == Some((BlobType::Data, None)),
            };
        }
        let Some(loc) = self.get(id) else {
            return false;
        };
        if self.excluded.contains(&loc.pack_id) {
            return false;
        }
        match loc.base {
            None => true,
            Some(base) => self.get(&base).is_some_and(|b| {
                b.base.is_none()
                    && b.blob_type == BlobType::Data
                    && !self.excluded.contains(&b.pack_id)
            }),
        }
    }

    /// [`Index::usable`] of each of `ids`, in batched reads on disk.
    pub fn usable_many(&self, ids: &[BlobId]) -> Vec<bool> {
        if !self.excluded.is_empty() || matches!(self.store, Store::Cold(_)) {
            return ids.iter().map(|id| self.usable(id)).collect();
        }
        let found = self.type_and_base_many(ids);
        let bases: Vec<BlobId> = found
            .iter()
            .filter_map(|f| f.and_then(|(_, b)| b))
            .collect();
        let mut bases_ok = self
            .type_and_base_many(&bases)
            .into_iter()
            .map(|b| b == Some((BlobType::Data, None)));
        found
            .into_iter()
            .map(|f| match f {
                None => false,
                Some((_, None)) => true,
                Some((_, Some(_))) => bases_ok.next().unwrap_or(false),
            })
            .collect()
    }

    /// Blob `id`'s type and delta base, if known (cheaper than [`Index::get`] on disk).
    pub fn type_and_base(&self, id: &BlobId) -> Option<(BlobType, Option<BlobId>)> {
        match &self.store {
            Store::Memory(m) | Store::Cold(ColdIndex { exact: m, .. }) => {
                m.blobs.get(id).map(|s| (s.blob_type, s.base))
            }
            Store::Disk(c) => c.type_and_base(id),
        }
    }

    /// [`Index::type_and_base`] of each of `ids`, in one batched read on disk.
    pub fn type_and_base_many(&self, ids: &[BlobId]) -> Vec<Option<(BlobType, Option<BlobId>)>> {
        match &self.store {
            Store::Memory(_) | Store::Cold(_) => {
                ids.iter().map(|id| self.type_and_base(id)).collect()
            }
            Store::Disk(c) => c.type_and_base_many(ids),
        }
    }

    /// [`Index::get`] of each of `ids`, in one batched read on disk.
    pub fn get_many(&self, ids: &[BlobId]) -> Vec<Option<BlobLocation>> {
        match &self.store {
            Store::Memory(m) | Store::Cold(ColdIndex { exact: m, .. }) => {
                ids.iter().map(|id| m.get(id)).collect()
            }
            Store::Disk(c) => c.get_many(ids),
        }
    }

    /// Where blob `id` is stored, if known.
    pub fn get(&self, id: &BlobId) -> Option<BlobLocation> {
        match &self.store {
            Store::Memory(m) | Store::Cold(ColdIndex { exact: m, .. }) => m.get(id),
            Store::Disk(c) => c.get(id),
        }
    }

    /// Whether blob `id` is known.
    pub fn contains(&self, id: &BlobId) -> bool {
        match &self.store {
            Store::Memory(m) | Store::Cold(ColdIndex { exact: m, .. }) => m.blobs.contains_key(id),
            Store::Disk(c) => c.contains(id),
        }
    }

    /// Number of distinct blobs.
    pub fn blob_count(&self) -> usize {
        match &self.store {
            Store::Memory(m) | Store::Cold(ColdIndex { exact: m, .. }) => m.blobs.len(),
            Store::Disk(c) => usize::try_from(c.blob_count()).unwrap_or(usize::MAX),
        }
    }

    /// Number of distinct packs.
    pub fn pack_count(&self) -> usize {
        match &self.store {
            Store::Memory(m) | Store::Cold(ColdIndex { exact: m, .. }) => m.packs.len(),
            Store::Disk(c) => c.pack_count() as usize,
        }
    }

    /// Every pack with its kind.
    pub fn packs(&self) -> Box<dyn Iterator<Item = (BlobId, PackKind)> + '_> {
        match &self.store {
            Store::Memory(m) | Store::Cold(ColdIndex { exact: m, .. }) => {
                Box::new(m.packs.iter().copied())
            }
            Store::Disk(c) => Box::new(c.packs()),
        }
    }

    /// Every blob with its location.
    pub fn blobs(&self) -> Box<dyn Iterator<Item = (BlobId, BlobLocation)> + '_> {
        match &self.store {
            Store::Memory(m) | Store::Cold(ColdIndex { exact: m, .. }) => {
                Box::new(m.blobs.keys().filter_map(|id| m.get(id).map(|l| (*id, l))))
            }
            Store::Disk(c) => Box::new(c.blobs()),
        }
    }
}

/// Write `pack_count u32 || pack*` in the grammar of SPEC.md section 10 (a delta entry
/// carries its base id): index files and snapshot locators (section 14.1) share it.
pub(crate) fn write_pack_records(w: &mut Writer, packs: &[IndexPack]) {
    w.u32(packs.len() as u32);
    for p in packs {
        w.id(&p.id);
        w.u8(p.kind as u8);
        w.u32(p.entries.len() as u32);
        for e in &p.entries {
            w.u8(e.type_byte());
            w.id(&e.id);
            w.u32(e.offset);
            w.u32(e.stored_len);
            w.u32(e.raw_len);
            if let Some(base) = &e.base {
                w.id(base);
            }
        }
    }
}

/// Build an error for a blob the index does not know.
pub fn missing_blob(id: &BlobId) -> Error {
    Error::not_found(format!("blob {} (not in any index)", id.to_hex()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;
    use proptest::prelude::*;

    fn entry() -> impl Strategy<Value = PackEntry> {
        (
            0u8..3,
            proptest::array::uniform32(any::<u8>()),
            0u32..1 << 30,
            41u32..1 << 20,
            any::<u32>(),
            proptest::option::of(proptest::array::uniform32(any::<u8>())),
        )
            .prop_map(|(t, id, offset, stored_len, raw_len, base)| {
                let blob_type = BlobType::from_u8(t, "t").unwrap();
                PackEntry {
                    blob_type,
                    id: BlobId(id),
                    offset,
                    stored_len,
                    raw_len,
                    // Only Data blobs are deltas, never of themselves.
                    base: base
                        .filter(|b| blob_type == BlobType::Data && *b != id)
                        .map(BlobId),
                }
            })
    }

    proptest! {
        #[test]
        fn index_file_round_trip(
            obsoletes in proptest::collection::vec(proptest::array::uniform32(any::<u8>()), 0..3),
            packs in proptest::collection::vec((proptest::array::uniform32(any::<u8>()), any::<bool>(), proptest::collection::vec(entry(), 0..10)), 0..5)
        ) {
            let keys = Keys::derive(&MasterKey::from_bytes([1; 32]));
            let file = IndexFile {
                obsoletes: obsoletes.into_iter().map(BlobId).collect(),
                packs: packs.into_iter().map(|(id, meta, entries)| IndexPack { id: BlobId(id), kind: if meta { PackKind::Meta } else { PackKind::Data }, entries }).collect(),
            };
            let bytes = file.encode(&keys);
            // Version 2 only when a delta entry needs it.
            let has_delta = file.packs.iter().any(|p| p.entries.iter().any(|e| e.base.is_some()));
            prop_assert_eq!(bytes[5], if has_delta { INDEX_FILE_VERSION_DELTA } else { INDEX_FILE_VERSION });
            prop_assert_eq!(IndexFile::decode(&keys, &bytes, "i").unwrap(), file);
            let mut bad = bytes.clone();
            let i = bad.len() - 1;
            bad[i] ^= 1;
            prop_assert!(IndexFile::decode(&keys, &bad, "i").is_err());
        }

        #[test]
        fn delta_entries_need_version_2(entries in proptest::collection::vec(entry(), 1..10)) {
            let file = IndexFile {
                obsoletes: Vec::new(),
                packs: vec![IndexPack { id: BlobId([9; 32]), kind: PackKind::Data, entries }],
            };
            let keys = Keys::derive(&MasterKey::from_bytes([1; 32]));
            let body = crate::envelope::open_file(&keys, &file.encode(&keys), crate::envelope::FileType::Index, INDEX_FILE_VERSION_DELTA, "i").unwrap().1;
            let has_delta = file.packs[0].entries.iter().any(|e| e.base.is_some());
            prop_assert_eq!(IndexFile::decode_body(&body, INDEX_FILE_VERSION, "i").is_ok(), !has_delta);
            prop_assert_eq!(IndexFile::decode_body(&body, INDEX_FILE_VERSION_DELTA, "i").unwrap(), file);
        }

        #[test]
        fn index_body_decode_never_panics(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = IndexFile::decode_body(&body, INDEX_FILE_VERSION_DELTA, "fuzz");
        }
    }
}
