//! Absorbing index files: one batch per file, and the blind rebuild from scratch (see the
//! module documentation of the cache).

use super::*;
use crate::index::copies::{self, CopyRank};

impl IndexCache {
    /// The [`CopyRank`] of the copy `rec` records, given the `excluded` packs.
    fn rank_of(&self, rec: &BlobRecord, excluded: &HashSet<BlobId>) -> CopyRank {
        let in_excluded = !excluded.is_empty()
            && self
                .pack_by_number(rec.pack)
                .is_some_and(|(id, _)| excluded.contains(&id));
        CopyRank::of(rec.base.is_some(), in_excluded)
    }

    /// Drop every record and start a rebuild from scratch: until
    /// [`IndexCache::finish_rebuild`], [`IndexCache::add_file`] writes without reading
    /// first and the blob count is not kept.
    ///
    /// # Errors
    /// [`Error::IndexCache`].
    pub fn begin_rebuild(&mut self) -> Result<()> {
        self.reset()?;
        self.building = true;
        let mut batch = WriteBatch::default();
        batch.put(META, [BUILDING]);
        self.write(batch)
    }

    /// Whether a rebuild has begun and not finished.
    pub fn is_building(&self) -> bool {
        self.building
    }

    /// End a rebuild: count the blobs and record the counters, which makes the cache
    /// valid for later processes.
    ///
    /// # Errors
    /// [`Error::IndexCache`].
    pub fn finish_rebuild(&mut self) -> Result<()> {
        if !self.building {
            return Ok(());
        }
        let mut blobs = 0u64;
        for item in self.db()?.prefix_iterator([BLOB]) {
            let (key, _) = item.map_err(|e| cache_error(&self.path, "read", e))?;
            if key.first() != Some(&BLOB) {
                break;
            }
            blobs += 1;
        }
        self.blob_count = blobs;
        self.building = false;
        let mut batch = WriteBatch::default();
        batch.put(META, self.encode_meta());
        self.write(batch)
    }

    /// Add the packs of index file `name` (if given, it is recorded as absorbed in the
    /// same batch). A blob already known keeps its location unless the new copy ranks
    /// better ([`crate::index::copies`]: outside `excluded` packs, then full).
    ///
    /// # Errors
    /// [`Error::IndexCache`].
    pub fn add_file(
        &mut self,
        name: Option<&str>,
        file: &IndexFile,
        excluded: &HashSet<BlobId>,
    ) -> Result<()> {
        if self.building {
            return self.add_file_rebuilding(name, file, excluded);
        }
        let mut batch = WriteBatch::default();
        let mut new_packs: HashMap<BlobId, u32> = HashMap::new();
        let mut written: HashMap<BlobId, CopyRank> = HashMap::new();
        let (mut blob_count, mut pack_count) = (self.blob_count, self.pack_count);
        for pack in &file.packs {
            let number = match new_packs.get(&pack.id) {
                Some(n) => *n,
                None => match self.pack_number(&pack.id)? {
                    Some(n) => n,
                    None => {
                        let n = pack_count;
                        pack_count = pack_count
                            .checked_add(1)
                            .ok_or_else(|| cache_error(&self.path, "add", "too many packs"))?;
                        new_packs.insert(pack.id, n);
                        batch.put(pack_number_key(&pack.id), n.to_le_bytes());
                        n
                    }
                },
            };
            // The kind is (re)written: a pack first named by a tombstone got a guess.
            let mut pack_value = [0u8; PACK_VALUE_LEN];
            pack_value[..ID_LEN].copy_from_slice(&pack.id.0);
            pack_value[ID_LEN] = pack.kind as u8;
            batch.put(pack_key(number), pack_value);
            let new_is_excluded = excluded.contains(&pack.id);
            let keys: Vec<[u8; 1 + ID_LEN]> =
                pack.entries.iter().map(|e| blob_key(&e.id)).collect();
            let existing = self.db()?.multi_get(&keys);
            for (entry, found) in pack.entries.iter().zip(existing) {
                let found = found.map_err(|e| cache_error(&self.path, "read", e))?;
                let new_rank = CopyRank::of(entry.base.is_some(), new_is_excluded);
                let replace = match (
                    written.get(&entry.id),
                    found.as_deref().map(BlobRecord::decode),
                ) {
                    // Written earlier in this batch (a later pack of the same file).
                    (Some(old), _) => copies::replaces(new_rank, *old),
                    (None, None) | (None, Some(None)) => true,
                    (None, Some(Some(old))) => {
                        copies::replaces(new_rank, self.rank_of(&old, excluded))
                    }
                };
                if found.is_none() && !written.contains_key(&entry.id) {
                    blob_count += 1;
                }
                if replace {
                    written.insert(entry.id, new_rank);
                    let (value, len) = record(number, entry).encode();
                    batch.put(blob_key(&entry.id), &value[..len]);
                }
            }
        }
        if let Some(name) = name {
            batch.put(file_key(name), []);
        }
        let (old_blobs, old_packs) = (self.blob_count, self.pack_count);
        self.blob_count = blob_count;
        self.pack_count = pack_count;
        batch.put(META, self.encode_meta());
        if let Err(e) = self.write(batch) {
            self.blob_count = old_blobs;
            self.pack_count = old_packs;
            return Err(e);
        }
        Ok(())
    }

    /// [`IndexCache::add_file`] during a rebuild: full entries of packs that are not
    /// excluded (the best [`CopyRank`]) are written without looking first (last location
    /// wins, which SPEC allows among equals); entries of excluded packs and delta entries
    /// go first and only where the blob is not known yet or known with a worse rank
    /// ([`crate::index::copies`]), so the copy kept is the one adding the files one by
    /// one keeps, up to copies of equal rank.
    pub(super) fn add_file_rebuilding(
        &mut self,
        name: Option<&str>,
        file: &IndexFile,
        excluded: &HashSet<BlobId>,
    ) -> Result<()> {
        let mut batch = WriteBatch::default();
        let mut in_batch = 0usize;
        let mut numbers: HashMap<BlobId, u32> = HashMap::new();
        // Ranks of the entries of excluded packs and deltas in the unwritten batch.
        let mut pending: HashMap<BlobId, CopyRank> = HashMap::new();
        let (excluded_packs, usable_packs): (Vec<_>, Vec<_>) =
            file.packs.iter().partition(|p| excluded.contains(&p.id));
        // Pass 0: excluded packs, and the delta entries of the others; pass 1: the
        // full entries of the others.
        let passes = excluded_packs
            .iter()
            .map(|p| (0, *p))
            .chain(usable_packs.iter().map(|p| (0, *p)))
            .chain(usable_packs.iter().map(|p| (1, *p)));
        for (pass, pack) in passes {
            let number = match numbers.get(&pack.id) {
                Some(n) => *n,
                None => {
                    let n = match self.pack_number(&pack.id)? {
                        Some(n) => n,
                        None => {
                            let n = self.pack_count;
                            self.pack_count = n
                                .checked_add(1)
                                .ok_or_else(|| cache_error(&self.path, "add", "too many packs"))?;
                            batch.put(pack_number_key(&pack.id), n.to_le_bytes());
                            n
                        }
                    };
                    numbers.insert(pack.id, n);
                    n
                }
            };
            let mut pack_value = [0u8; PACK_VALUE_LEN];
            pack_value[..ID_LEN].copy_from_slice(&pack.id.0);
            pack_value[ID_LEN] = pack.kind as u8;
            batch.put(pack_key(number), pack_value);
            let is_excluded = excluded.contains(&pack.id);
            for entry in &pack.entries {
                let rank = CopyRank::of(entry.base.is_some(), is_excluded);
                let only_if_better = rank != CopyRank::BEST;
                if (pass == 0) != only_if_better {
                    continue;
                }
                if only_if_better {
                    let old = match pending.get(&entry.id) {
                        Some(old) => Some(*old),
                        None => self.record(&entry.id).map(|r| self.rank_of(&r, excluded)),
                    };
                    if old.is_some_and(|old| !copies::replaces(rank, old)) {
                        continue;
                    }
                    pending.insert(entry.id, rank);
                }
                let (value, len) = record(number, entry).encode();
                batch.put(blob_key(&entry.id), &value[..len]);
                in_batch += 1;
                if in_batch >= REBUILD_BATCH_ENTRIES {
                    // Pack records written so far go with it: a later batch may be lost
                    // in a crash, and then the whole rebuild starts over anyway.
                    self.write(std::mem::take(&mut batch))?;
                    in_batch = 0;
                    // Entries already written are now visible to `record`.
                    pending.clear();
                }
            }
        }
        if let Some(name) = name {
            batch.put(file_key(name), []);
        }
        self.write(batch)
    }
}
