//! Absorbing index files: one batch per file, and the blind rebuild from scratch (see the
//! module documentation of the cache).

use super::*;

impl IndexCache {
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
    /// same batch). A blob already known keeps its location unless that location is in
    /// an `excluded` pack and the new one is not.
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
        let mut written: HashSet<BlobId> = HashSet::new();
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
                let replace = match found.as_deref().map(BlobRecord::decode) {
                    None => !written.contains(&entry.id),
                    Some(None) => true,
                    // A full copy replaces a delta (whose base gc may have taken with
                    // it as garbage); a copy outside an excluded pack one inside.
                    Some(Some(old)) => {
                        (old.base.is_some() && entry.base.is_none())
                            || (!new_is_excluded
                                && !excluded.is_empty()
                                && self
                                    .pack_by_number(old.pack)
                                    .is_some_and(|(id, _)| excluded.contains(&id)))
                    }
                };
                if found.is_none() && !written.contains(&entry.id) {
                    blob_count += 1;
                }
                if replace {
                    written.insert(entry.id);
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
    /// excluded are written without looking first (last location wins); entries of
    /// excluded packs and delta entries go first and only where the blob is not known
    /// yet, so a usable full copy written before or after always wins over them. (A delta
    /// entry may outlive its base when gc collected both as garbage but kept the delta's
    /// pack; a full copy stored again later must then be the one found.)
    pub(super) fn add_file_rebuilding(
        &mut self,
        name: Option<&str>,
        file: &IndexFile,
        excluded: &HashSet<BlobId>,
    ) -> Result<()> {
        let mut batch = WriteBatch::default();
        let mut in_batch = 0usize;
        let mut numbers: HashMap<BlobId, u32> = HashMap::new();
        let mut excluded_written: HashSet<BlobId> = HashSet::new();
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
                let only_if_unknown = is_excluded || entry.base.is_some();
                if (pass == 0) != only_if_unknown {
                    continue;
                }
                if only_if_unknown {
                    if excluded_written.contains(&entry.id) || self.contains(&entry.id) {
                        continue;
                    }
                    excluded_written.insert(entry.id);
                }
                let (value, len) = record(number, entry).encode();
                batch.put(blob_key(&entry.id), &value[..len]);
                in_batch += 1;
                if in_batch >= REBUILD_BATCH_ENTRIES {
                    // Pack records written so far go with it: a later batch may be lost
                    // in a crash, and then the whole rebuild starts over anyway.
                    self.write(std::mem::take(&mut batch))?;
                    in_batch = 0;
                    // Excluded entries already written are now visible to `contains`.
                    excluded_written.clear();
                }
            }
        }
        if let Some(name) = name {
            batch.put(file_key(name), []);
        }
        self.write(batch)
    }
}
