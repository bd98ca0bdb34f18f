//! Loading the index from the index files: in memory or into the on-disk cache, with
//! the fallbacks when the cache cannot be used.

use super::*;

impl Repository {
    /// Bring the index up to date with the index files in storage. An in-memory index
    /// is rebuilt from all of them; an on-disk one absorbs the files it has not seen, and
    /// is rebuilt when a file it absorbed is gone (gc replaced it: packs it named may be
    /// deleted) or when it found itself damaged.
    ///
    /// # Errors
    /// Storage errors; [`Error::IndexCache`] when the index cannot be kept in memory
    /// either (never, today: only an on-disk cache fails, and memory takes over).
    pub async fn load_index(&self) -> Result<()> {
        self.load_index_or_fall_back(false).await
    }

    /// Rebuild the index from every index file in storage, dropping what it held first
    /// (after gc rewrote the index files).
    ///
    /// # Errors
    /// As [`Repository::load_index`].
    pub async fn rebuild_index(&self) -> Result<()> {
        self.load_index_or_fall_back(true).await
    }

    /// Load (or rebuild) the index; when its on-disk cache fails ([`Error::IndexCache`]),
    /// keep the index elsewhere and load again from scratch: a cache that failed for
    /// another reason than room is made again in place, once; then a temporary cache in
    /// the system's temporary directory takes over, then memory. Each change is noted
    /// for the user ([`Repository::take_index_notes`]).
    async fn load_index_or_fall_back(&self, rebuild: bool) -> Result<()> {
        // A cold index (S-7) leaves cold mode: the store it parked is loaded as usual,
        // then the packs this process wrote while cold go back in (their index file may
        // not be written yet).
        let own = self.index.write().map_err(|_| poisoned())?.leave_cold();
        self.load_index_unless_cold(rebuild).await?;
        let mut index = self.index.write().map_err(|_| poisoned())?;
        for p in own.unwrap_or_default() {
            index.add_pack(p.id, p.kind, &p.entries)?;
        }
        drop(index);
        self.index_loads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Whether this handle has loaded the index from the index files yet (a handle
    /// opened with [`IndexLoad::Deferred`] has not, until a command loads it).
    pub fn index_loaded(&self) -> bool {
        self.index_loads.load(std::sync::atomic::Ordering::Relaxed) > 0
    }

    /// [`Repository::load_index_or_fall_back`] of an index that is not cold.
    async fn load_index_unless_cold(&self, rebuild: bool) -> Result<()> {
        let mut made_again = false;
        loop {
            let error = match self.load_index_inner(rebuild).await {
                Err(e @ Error::IndexCache { .. }) => e,
                other => return other,
            };
            let full = matches!(error, Error::IndexCache { full: true, .. });
            let failed = self
                .index
                .write()
                .map_err(|_| poisoned())?
                .replace_cache(None);
            let Some(failed) = failed else {
                return Err(error); // not the cache's doing after all
            };
            let temporary = failed.is_temporary();
            let id = self.config.id.clone();
            let (next, note) = if !temporary && !full && !made_again {
                made_again = true;
                match run_cpu(move || failed.recreate()).await? {
                    Ok(cache) => (Some(cache), format!("{error}; made it again")),
                    Err(e) => {
                        let id = self.config.id.clone();
                        Repository::temporary_or_memory(format!("{error}; {e}"), id).await?
                    }
                }
            } else if !temporary {
                drop(failed);
                Repository::temporary_or_memory(error.to_string(), id).await?
            } else {
                drop(failed);
                (None, format!("{error}; keeping the index in memory"))
            };
            self.index
                .write()
                .map_err(|_| poisoned())?
                .replace_cache(next);
            if let Ok(mut notes) = self.index_notes.write() {
                notes.push(note);
            }
        }
    }

    /// A temporary cache in the system's temporary directory, or none (memory), with
    /// the note saying so after `why`.
    pub(super) async fn temporary_or_memory(
        why: String,
        id: String,
    ) -> Result<(Option<IndexCache>, String)> {
        Ok(
            match run_cpu(move || IndexCache::temporary_in(&std::env::temp_dir(), &id)).await? {
                Ok(cache) => (
                    Some(cache),
                    format!("{why}; going on without it, as with --no-cache"),
                ),
                Err(e) => (None, format!("{why}; {e}; keeping the index in memory")),
            },
        )
    }

    async fn load_index_inner(&self, rebuild: bool) -> Result<()> {
        let _serial = self.index_load.lock().await;
        let names = self.storage.list(INDEX_DIR).await?;
        let absorbed = self
            .index
            .read()
            .map_err(|_| poisoned())?
            .absorbed_files()?;
        let incremental = match absorbed {
            // A cache that absorbed nothing yet (new, or cleared) is filled by the
            // rebuild path, which does not read before writing.
            Some(seen) if !rebuild && !seen.is_empty() => {
                let listed: std::collections::HashSet<&str> =
                    names.iter().map(|n| n.name.as_str()).collect();
                seen.iter()
                    .all(|n| listed.contains(n.as_str()))
                    .then_some(seen)
            }
            _ => None,
        };
        // A cache must not meet a full disk (`index_cache::check_room`): make sure there
        // is room for what it will absorb before it writes.
        if let Some(cache) = self.index.read().map_err(|_| poisoned())?.cache() {
            let incoming: u64 = names
                .iter()
                .filter(|n| match &incremental {
                    Some(seen) => !seen.contains(&n.name),
                    None => true,
                })
                .map(|n| n.size)
                .sum();
            cache.check_room_for(incoming)?;
        }
        // Memory: build a fresh index beside the old one and swap (readers keep working).
        // Disk: clear and refill in place, unless this is an incremental load.
        let mut fresh = None;
        let to_read: Vec<BlobInfo> = match &incremental {
            Some(seen) => names
                .into_iter()
                .filter(|n| !seen.contains(&n.name))
                .collect(),
            None => {
                let mut index = self.index.write().map_err(|_| poisoned())?;
                // A forced rebuild drops the old index first, so gc never holds two.
                if index.cache().is_some() || rebuild {
                    index.begin_rebuild()?;
                } else {
                    let mut f = Index::new();
                    f.exclude_packs(&index.excluded_packs());
                    fresh = Some(f);
                }
                names
            }
        };
        let mut damaged = Vec::new();
        let mut tasks = tokio::task::JoinSet::new();
        let mut pending = to_read.into_iter().peekable();
        // Decoded index files wait in memory until added: bound them by bytes as well
        // as by count, whatever size the files have (at least one is always read).
        let mut bytes_in_flight = 0u64;
        loop {
            while tasks.len() < INDEX_FILES_IN_FLIGHT {
                let Some(next) = pending.peek() else { break };
                let memory = next.size.saturating_mul(DECODED_PER_STORED_BYTE);
                if !tasks.is_empty()
                    && bytes_in_flight.saturating_add(memory) > INDEX_BYTES_IN_FLIGHT
                {
                    break;
                }
                let Some(info) = pending.next() else { break };
                bytes_in_flight = bytes_in_flight.saturating_add(memory);
                let (name, size) = (info.name, info.size);
                let storage = self.storage.clone();
                let keys = self.keys.clone();
                tasks.spawn(async move {
                    let result = async {
                        let bytes = storage.get(&name).await?;
                        let object = name.clone();
                        run_cpu(move || IndexFile::decode(&keys, &bytes, &object)).await?
                    }
                    .await;
                    (name, size, result)
                });
            }
            let Some(done) = tasks.join_next().await else {
                break;
            };
            let (name, size, result) = done.map_err(|e| Error::Internal(e.to_string()))?;
            bytes_in_flight =
                bytes_in_flight.saturating_sub(size.saturating_mul(DECODED_PER_STORED_BYTE));
            match (name, result) {
                (name, Ok(file)) => match &mut fresh {
                    Some(f) => f.add_named_file(Some(&name), &file)?,
                    None => {
                        let index = self.index.clone();
                        run_cpu(move || {
                            index
                                .write()
                                .map_err(|_| poisoned())?
                                .add_named_file(Some(&name), &file)
                        })
                        .await??
                    }
                },
                // Removed by a concurrent gc between listing and reading.
                (_, Err(Error::NotFound { .. })) => {}
                // A damaged index file must not lock the user out: verify reports it
                // and repair index rebuilds it from the pack headers.
                (name, Err(e @ (Error::Corrupt { .. } | Error::UnsupportedVersion { .. }))) => {
                    damaged.push((name, e.to_string()))
                }
                (_, Err(e)) => return Err(e),
            }
        }
        if let Some(fresh) = fresh {
            *self.index.write().map_err(|_| poisoned())? = fresh;
        } else if incremental.is_none() {
            let index = self.index.clone();
            run_cpu(move || index.write().map_err(|_| poisoned())?.finish_rebuild()).await??;
        }
        damaged.sort();
        let mut known_damaged = self.damaged_index_files.write().map_err(|_| poisoned())?;
        if incremental.is_some() {
            // Files found damaged before are read again (they are never absorbed).
            known_damaged.retain(|(n, _)| !damaged.iter().any(|(d, _)| d == n));
            known_damaged.extend(damaged);
            known_damaged.sort();
        } else {
            *known_damaged = damaged;
        }
        Ok(())
    }

    /// Index files the last index load skipped because they are damaged or of a newer
    /// version (name, error). Blobs only they listed look missing until `repair index`.
    pub fn damaged_index_files(&self) -> Vec<(String, String)> {
        self.damaged_index_files
            .read()
            .map(|d| d.clone())
            .unwrap_or_default()
    }
}
