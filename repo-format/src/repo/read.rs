//! Reading through the index: locating and decoding blobs, trees, snapshots and
//! selectors.

use super::*;

impl Repository {
    /// Where blob `id` is stored.
    pub fn locate(&self, id: &BlobId) -> Option<BlobLocation> {
        self.index.read().ok().and_then(|i| i.get(id))
    }

    /// Blob `id`'s type and delta base, if it is indexed: cheaper than
    /// [`Repository::locate`], which also resolves the pack.
    pub fn type_and_base(&self, id: &BlobId) -> Option<(BlobType, Option<BlobId>)> {
        self.index.read().ok().and_then(|i| i.type_and_base(id))
    }

    /// Whether a writer may reference each of `ids` ([`Index::usable`]), in batched
    /// index reads.
    pub fn usable_many(&self, ids: &[BlobId]) -> Vec<bool> {
        match self.index.read() {
            Ok(i) => i.usable_many(ids),
            Err(_) => vec![false; ids.len()],
        }
    }

    /// [`Repository::locate`] of each of `ids`, in one batched index read.
    pub fn locate_many(&self, ids: &[BlobId]) -> Vec<Option<BlobLocation>> {
        match self.index.read() {
            Ok(i) => i.get_many(ids),
            Err(_) => vec![None; ids.len()],
        }
    }

    /// [`Repository::type_and_base`] of each of `ids`, in one batched index read.
    pub fn type_and_base_many(&self, ids: &[BlobId]) -> Vec<Option<(BlobType, Option<BlobId>)>> {
        match self.index.read() {
            Ok(i) => i.type_and_base_many(ids),
            Err(_) => vec![None; ids.len()],
        }
    }

    /// Read, decrypt and verify blob `id`, which must be of type `blob_type`.
    ///
    /// # Errors
    /// [`Error::NotFound`] if no index knows it or its pack is gone; [`Error::Corrupt`]
    /// if the stored bytes are damaged.
    pub async fn read_blob(&self, id: &BlobId, blob_type: BlobType) -> Result<Vec<u8>> {
        match self
            .read_blob_once(id, blob_type, None, INLINE_DECODE_BYTES)
            .await
        {
            // A concurrent gc may have moved the blob to a new pack and deleted the old
            // one: reload the index once and follow it.
            Err(Error::NotFound { .. }) => {
                self.load_index().await?;
                self.read_blob_once(id, blob_type, None, INLINE_DECODE_BYTES)
                    .await
            }
            other => other,
        }
    }

    /// The plaintext of Data blob `id`, read once, for a backup to use as a delta base.
    /// Unlike [`Repository::read_blob`] it does not reload the index after `NotFound`:
    /// backups call it from CPU-pool workers, and a reload decodes index files on that
    /// pool, which two workers waiting this way would leave with no thread to run on.
    /// A base that cannot be read only costs the delta.
    ///
    /// For the same reason it is decoded on the calling task whatever its size: a tar
    /// page group of 128 KiB of incompressible pages is stored in more than
    /// [`INLINE_DECODE_BYTES`], and handing it to the CPU pool left backups hanging
    /// with every pool worker waiting for a base only the pool could decode. Page bases
    /// are full blobs of at most a page group (the saver offers no other), so this
    /// decodes at most 128 KiB here.
    ///
    /// # Errors
    /// As [`Repository::read_blob`], without the retry; [`Error::Corrupt`] if the blob
    /// is indexed as a delta.
    pub(crate) async fn read_page_base(&self, id: &BlobId) -> Result<Vec<u8>> {
        if self.locate(id).is_some_and(|loc| loc.base.is_some()) {
            return Err(Error::corrupt(
                format!("data blob {}", id.short()),
                "offered as a page base but stored as a delta",
            ));
        }
        self.read_blob_once(id, BlobType::Data, None, u32::MAX)
            .await
    }

    /// The plaintext of `base_id`, the base of delta blob `id`: a full Data blob (a
    /// delta's base is never a delta itself, so this reads one blob).
    ///
    /// # Errors
    /// As [`Repository::read_blob`]; [`Error::Corrupt`] if the base is indexed as a
    /// delta or as another type.
    pub async fn read_delta_base(&self, id: &BlobId, base_id: &BlobId) -> Result<Vec<u8>> {
        match self
            .read_blob_once(base_id, BlobType::Data, Some(id), INLINE_DECODE_BYTES)
            .await
        {
            Err(Error::NotFound { .. }) => {
                self.load_index().await?;
                self.read_blob_once(base_id, BlobType::Data, Some(id), INLINE_DECODE_BYTES)
                    .await
            }
            other => other,
        }
    }

    /// Read blob `id` once. `base_of` is set when it is read as the base of that delta
    /// blob, and then it must not be a delta itself. A blob stored in at most
    /// `inline_limit` bytes is decoded on the calling task, a larger one on the CPU pool.
    async fn read_blob_once(
        &self,
        id: &BlobId,
        blob_type: BlobType,
        base_of: Option<&BlobId>,
        inline_limit: u32,
    ) -> Result<Vec<u8>> {
        let loc = self.locate(id).ok_or_else(|| missing_blob(id))?;
        if loc.blob_type != blob_type {
            return Err(Error::corrupt(
                format!("blob {}", id.short()),
                format!("indexed as {:?}, expected {blob_type:?}", loc.blob_type),
            ));
        }
        let base = match (loc.base, base_of) {
            (Some(_), Some(delta)) => {
                return Err(Error::corrupt(
                    format!("data blob {} (delta against {})", delta.short(), id.short()),
                    "its base is itself a delta",
                ))
            }
            (Some(base_id), None) => {
                Some((base_id, Box::pin(self.read_delta_base(id, &base_id)).await?))
            }
            (None, _) => None,
        };
        let stored = self
            .storage
            .get_range(
                &loc.pack_name(),
                u64::from(loc.offset),
                u64::from(loc.stored_len),
            )
            .await?;
        let raw_len = u64::from(loc.raw_len);
        if loc.stored_len <= inline_limit {
            // Decoding a small blob takes less time than handing it to another thread.
            return decode_stored_blob(&self.keys, blob_type, id, &stored, raw_len, base);
        }
        let keys = self.keys.clone();
        let id = *id;
        run_cpu(move || decode_stored_blob(&keys, blob_type, &id, &stored, raw_len, base)).await?
    }

    /// Load and decode tree `id`.
    ///
    /// # Errors
    /// As [`Repository::read_blob`], plus tree decoding errors.
    pub async fn load_tree(&self, id: &BlobId) -> Result<Tree> {
        let body = self.read_blob(id, BlobType::Tree).await?;
        Tree::decode(&body, &format!("tree {}", id.short()))
    }

    /// Every readable snapshot, oldest first. Damaged manifests are left out (see
    /// [`Repository::list_snapshots_checked`]), so one bad file does not stop backups or
    /// restores of the others.
    ///
    /// # Errors
    /// Storage errors listing `snapshots/`.
    pub async fn list_snapshots(&self) -> Result<Vec<Snapshot>> {
        Ok(self.list_snapshots_checked().await?.0)
    }

    /// Every snapshot, oldest first, and the manifests that could not be read (name
    /// and error). Whatever must not ignore a snapshot (gc) checks the second list.
    ///
    /// # Errors
    /// Storage errors listing `snapshots/`.
    pub async fn list_snapshots_checked(&self) -> Result<(Vec<Snapshot>, Vec<(String, Error)>)> {
        let names = self.storage.list(SNAPSHOTS_DIR).await?;
        self.read_snapshots(names).await
    }

    /// Read snapshot `id` alone (one `get`, where [`Repository::list_snapshots`] reads
    /// them all).
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no such snapshot file; [`Error::Corrupt`] if its
    /// bytes do not hash to its name or do not decode; storage errors.
    pub async fn load_snapshot(&self, id: &BlobId) -> Result<Snapshot> {
        let name = crate::layout::snapshot(id);
        let bytes = self.storage.get(&name).await?;
        if BlobId::of_stored(&bytes) != *id {
            return Err(Error::corrupt(&name, "content does not hash to its name"));
        }
        let manifest =
            SnapshotManifest::decode(&self.keys, &bytes, &format!("snapshot {}", id.short()))?;
        Ok(Snapshot { id: *id, manifest })
    }

    /// Read and decode the snapshot files `names` (from a listing of `snapshots/`):
    /// the snapshots, oldest first, and the files that could not be read (name and
    /// error). Files deleted since the listing are left out. At most
    /// [`SNAPSHOT_READS_IN_FLIGHT`] are read at once.
    ///
    /// # Errors
    /// [`Error::Internal`] if a reading task panicked.
    pub async fn read_snapshots(
        &self,
        names: Vec<BlobInfo>,
    ) -> Result<(Vec<Snapshot>, Vec<(String, Error)>)> {
        let limit = Arc::new(tokio::sync::Semaphore::new(SNAPSHOT_READS_IN_FLIGHT));
        let mut tasks = tokio::task::JoinSet::new();
        for info in names {
            let limit = limit.clone();
            let storage = self.storage.clone();
            let keys = self.keys.clone();
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let name = info.name.clone();
                let result = async {
                    let id = crate::layout::id_in(SNAPSHOTS_DIR, &info.name).ok_or_else(|| {
                        Error::corrupt(&info.name, "snapshot file name is not an id")
                    })?;
                    let bytes = storage.get(&info.name).await?;
                    if BlobId::of_stored(&bytes) != id {
                        return Err(Error::corrupt(
                            &info.name,
                            "content does not hash to its name",
                        ));
                    }
                    let manifest = SnapshotManifest::decode(
                        &keys,
                        &bytes,
                        &format!("snapshot {}", id.short()),
                    )?;
                    Ok(Snapshot { id, manifest })
                }
                .await;
                (name, result)
            });
        }
        let mut out = Vec::new();
        let mut damaged = Vec::new();
        while let Some(done) = tasks.join_next().await {
            match done.map_err(|e| Error::Internal(e.to_string()))? {
                (_, Ok(s)) => out.push(s),
                // Deleted by a concurrent forget between listing and reading.
                (_, Err(Error::NotFound { .. })) => {}
                (name, Err(e)) => damaged.push((name, e)),
            }
        }
        out.sort_by(|a, b| a.manifest.time.cmp(&b.manifest.time).then(a.id.cmp(&b.id)));
        damaged.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((out, damaged))
    }

    /// Resolve `latest`, a full id or a unique id prefix among `snapshots`.
    ///
    /// # Errors
    /// [`Error::Snapshot`] if nothing or more than one snapshot matches.
    pub fn select_snapshot(snapshots: &[Snapshot], selector: &str) -> Result<Snapshot> {
        let err = |reason: &str| Error::Snapshot {
            selector: selector.to_string(),
            reason: reason.to_string(),
        };
        if selector == "latest" {
            return snapshots
                .last()
                .cloned()
                .ok_or_else(|| err("the repository has no snapshots (matching the filters)"));
        }
        if selector.is_empty() || !selector.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err("not a snapshot id, id prefix or `latest`"));
        }
        let lower = selector.to_ascii_lowercase();
        let matches: Vec<&Snapshot> = snapshots
            .iter()
            .filter(|s| s.id.to_hex().starts_with(&lower))
            .collect();
        match matches.len() {
            1 => Ok(matches[0].clone()),
            0 => Err(err("no such snapshot")),
            n => Err(err(&format!(
                "prefix matches {n} snapshots; give more digits"
            ))),
        }
    }

    /// Find the node at `path` (`/`-separated, relative to the snapshot root; empty or
    /// `/` is the root, returned as `None`).
    ///
    /// # Errors
    /// [`Error::SnapshotPath`] if a component is missing or not a directory.
    pub async fn find_node(&self, root: &BlobId, path: &[u8]) -> Result<Option<Node>> {
        let display = String::from_utf8_lossy(path).into_owned();
        let mut tree_id = *root;
        let mut found: Option<Node> = None;
        for comp in path
            .split(|b| *b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
        {
            if let Some(node) = &found {
                match &node.kind {
                    NodeKind::Dir(id) => tree_id = *id,
                    _ => {
                        return Err(Error::SnapshotPath {
                            path: display,
                            reason: format!(
                                "{} is not a directory",
                                String::from_utf8_lossy(&node.name)
                            ),
                        })
                    }
                }
            }
            let tree = self.load_tree(&tree_id).await?;
            let node = tree.get(comp).cloned().ok_or_else(|| Error::SnapshotPath {
                path: display.clone(),
                reason: format!("no entry named {}", String::from_utf8_lossy(comp)),
            })?;
            found = Some(node);
        }
        Ok(found)
    }
}

/// Decode a stored blob read from its location: a delta against the base given with its
/// plaintext, otherwise a full blob.
///
/// # Errors
/// As [`decode_blob`] and [`decode_delta_blob`].
pub fn decode_stored_blob(
    keys: &Keys,
    blob_type: BlobType,
    id: &BlobId,
    stored: &[u8],
    raw_len: u64,
    base: Option<(BlobId, Vec<u8>)>,
) -> Result<Vec<u8>> {
    match &base {
        Some((base_id, plaintext)) => decode_delta_blob(
            keys,
            id,
            stored,
            raw_len,
            DeltaBase {
                id: base_id,
                plaintext,
            },
        ),
        None => decode_blob(keys, blob_type, id, stored, raw_len),
    }
}
