//! Lookups: blob records, their packs (through the pack memo), and iteration.

use super::*;

impl IndexCache {
    /// Make sure pack `id` has a number (so exclusion can name it before it is indexed).
    pub(super) fn pack_number(&self, id: &BlobId) -> Result<Option<u32>> {
        let v = self
            .db()?
            .get_pinned(pack_number_key(id))
            .map_err(|e| cache_error(&self.path, "read", e))?;
        Ok(match v {
            Some(v) if v.len() == 4 => Some(u32_at(&v, 0)),
            Some(_) => {
                self.mark_damaged();
                None
            }
            None => None,
        })
    }

    /// A read that failed: the database is damaged or the disk is failing; either way
    /// the next load rebuilds it.
    pub(super) fn read_failed<T>(&self, r: std::result::Result<T, rocksdb::Error>) -> Option<T> {
        r.map_err(|_| self.mark_damaged()).ok()
    }

    pub(super) fn pack_by_number(&self, number: u32) -> Option<(BlobId, PackKind)> {
        if let Some(known) = self.packs.lock().ok().and_then(|m| m.get(number)) {
            return Some(known);
        }
        let v = self.read_failed(self.db().ok()?.get_pinned(pack_key(number)))??;
        let decoded = decode_pack(&v);
        match decoded {
            Some((id, kind)) => {
                if let Ok(mut memo) = self.packs.lock() {
                    memo.put(number, id, kind);
                }
            }
            None => self.mark_damaged(),
        }
        decoded
    }

    /// Where blob `id` is stored, if known. A failing or damaged database reads as
    /// "unknown" (dedup then stores the blob again; a reader reloads the index).
    pub fn get(&self, id: &BlobId) -> Option<BlobLocation> {
        self.locate(self.record(id)?)
    }

    /// The location a blob record points at, its pack resolved.
    pub(super) fn locate(&self, rec: BlobRecord) -> Option<BlobLocation> {
        let (pack_id, pack_kind) = self.pack_by_number(rec.pack)?;
        Some(location(pack_id, pack_kind, &rec))
    }

    pub(super) fn record(&self, id: &BlobId) -> Option<BlobRecord> {
        let found = self.db().ok()?.get_pinned(blob_key(id));
        self.decode_record(found)
    }

    /// A record read from the database: a failed read or one that does not decode marks
    /// the cache damaged (the next load rebuilds it) and reads as unknown.
    pub(super) fn decode_record<V: AsRef<[u8]>>(
        &self,
        found: std::result::Result<Option<V>, rocksdb::Error>,
    ) -> Option<BlobRecord> {
        let v = self.read_failed(found)??;
        let rec = BlobRecord::decode(v.as_ref());
        if rec.is_none() {
            self.mark_damaged();
        }
        rec
    }

    /// Blob `id`'s type and delta base, if known: one read, where [`IndexCache::get`]
    /// also resolves the pack (deduplication asks this for every chunk).
    pub fn type_and_base(&self, id: &BlobId) -> Option<(BlobType, Option<BlobId>)> {
        self.record(id).map(|r| (r.blob_type, r.base))
    }

    /// [`IndexCache::type_and_base`] of many blobs in one batched read: RocksDB sorts
    /// the keys and reads each block once for all of its keys (benches/NOTES.md, "Batched
    /// index reads").
    pub fn type_and_base_many(&self, ids: &[BlobId]) -> Vec<Option<(BlobType, Option<BlobId>)>> {
        self.records(ids)
            .into_iter()
            .map(|rec| rec.map(|r| (r.blob_type, r.base)))
            .collect()
    }

    /// [`IndexCache::get`] of many blobs, their records in one batched read.
    pub fn get_many(&self, ids: &[BlobId]) -> Vec<Option<BlobLocation>> {
        self.records(ids)
            .into_iter()
            .map(|rec| self.locate(rec?))
            .collect()
    }

    pub(super) fn records(&self, ids: &[BlobId]) -> Vec<Option<BlobRecord>> {
        let Some((db, cf)) = self
            .db()
            .ok()
            .and_then(|db| Some((db, db.cf_handle(rocksdb::DEFAULT_COLUMN_FAMILY_NAME)?)))
        else {
            return ids.iter().map(|id| self.record(id)).collect();
        };
        let keys: Vec<[u8; 1 + ID_LEN]> = ids.iter().map(blob_key).collect();
        db.batched_multi_get_cf(cf, &keys, false)
            .into_iter()
            .map(|found| self.decode_record(found))
            .collect()
    }

    /// Whether blob `id` is known.
    pub fn contains(&self, id: &BlobId) -> bool {
        self.db()
            .ok()
            .and_then(|db| self.read_failed(db.get_pinned(blob_key(id))).flatten())
            .is_some()
    }

    /// Number of distinct blobs.
    pub fn blob_count(&self) -> u64 {
        self.blob_count
    }

    /// Number of distinct packs.
    pub fn pack_count(&self) -> u32 {
        self.pack_count
    }

    /// Every pack with its kind, in pack-number order.
    pub fn packs(&self) -> impl Iterator<Item = (BlobId, PackKind)> + '_ {
        self.db
            .iter()
            .flat_map(|db| db.prefix_iterator([PACK]))
            .map_while(|item| self.read_failed(item))
            .take_while(|(k, _)| k.first() == Some(&PACK))
            .filter_map(|(_, v)| {
                let decoded = decode_pack(&v);
                if decoded.is_none() {
                    self.mark_damaged();
                }
                decoded
            })
    }

    /// Every blob with its location, in id order.
    pub fn blobs(&self) -> impl Iterator<Item = (BlobId, BlobLocation)> + '_ {
        // Blobs come in id order, so their packs are random: remember recent packs.
        let mut packs: HashMap<u32, (BlobId, PackKind)> = HashMap::new();
        self.db
            .iter()
            .flat_map(|db| db.prefix_iterator([BLOB]))
            .map_while(|item| self.read_failed(item))
            .take_while(|(k, _)| k.first() == Some(&BLOB))
            .filter_map(move |(k, v)| {
                let rec = BlobRecord::decode(&v);
                if k.len() != 1 + ID_LEN || rec.is_none() {
                    self.mark_damaged();
                    return None;
                }
                let rec = rec?;
                let pack = match packs.get(&rec.pack) {
                    Some(p) => *p,
                    None => {
                        let p = self.pack_by_number(rec.pack)?;
                        if packs.len() >= 1 << 16 {
                            packs.clear();
                        }
                        packs.insert(rec.pack, p);
                        p
                    }
                };
                let mut id = [0u8; ID_LEN];
                id.copy_from_slice(&k[1..]);
                Some((BlobId(id), location(pack.0, pack.1, &rec)))
            })
    }
}
