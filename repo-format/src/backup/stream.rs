//! A file's or stream's chunks on their way to the saver: per-file completion
//! (`FileState`), batches, page groups saved as deltas against the parent's, and the
//! stream walk.

use super::*;

/// Content of one file being saved: chunk ids arrive out of order from the pool and are
/// fed in order into a [`ContentBuilder`].
#[derive(Debug, Default)]
pub(super) struct FileState {
    pub(super) inner: Mutex<FileInner>,
    pub(super) cond: Condvar,
}

#[derive(Debug, Default)]
pub(super) struct FileInner {
    pub(super) builder: Option<ContentBuilder>,
    pub(super) next_seq: u64,
    pub(super) out_of_order: BTreeMap<u64, BlobId>,
    pub(super) total: Option<u64>,
    /// Bytes read, when the file was read by a [`SmallFileJob`] (the node's size is only
    /// known once it is done).
    pub(super) read_size: Option<u64>,
    pub(super) done: Option<Result<Content>>,
}

impl FileState {
    pub(super) fn new() -> Arc<FileState> {
        Arc::new(FileState {
            inner: Mutex::new(FileInner {
                builder: Some(ContentBuilder::new()),
                ..Default::default()
            }),
            cond: Condvar::new(),
        })
    }

    pub(super) fn chunk_done(&self, seq: u64, result: Result<BlobId>, saver: &BlobSaver) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.done.is_some() {
            return;
        }
        match result {
            Err(e) => inner.done = Some(Err(e)),
            Ok(id) => {
                inner.out_of_order.insert(seq, id);
                let mut failed = None;
                while let Some(id) = {
                    let next = inner.next_seq;
                    inner.out_of_order.remove(&next)
                } {
                    inner.next_seq += 1;
                    if let Some(b) = inner.builder.as_mut() {
                        if let Err(e) =
                            b.push(id, &mut |body| saver.save(BlobType::ChunkList, &body))
                        {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                if let Some(e) = failed {
                    inner.done = Some(Err(e));
                }
            }
        }
        Self::maybe_finish(&mut inner, saver);
        self.cond.notify_all();
    }

    pub(super) fn set_total(&self, total: u64, saver: &BlobSaver) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.total = Some(total);
        Self::maybe_finish(&mut inner, saver);
        self.cond.notify_all();
    }

    pub(super) fn fail(&self, e: Error) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.done.is_none() {
            inner.done = Some(Err(e));
        }
        self.cond.notify_all();
    }

    pub(super) fn maybe_finish(inner: &mut FileInner, saver: &BlobSaver) {
        if inner.done.is_none() && inner.total == Some(inner.next_seq) {
            if let Some(b) = inner.builder.take() {
                inner.done = Some(b.finish(&mut |body| saver.save(BlobType::ChunkList, &body)));
            }
        }
    }

    /// Wait for the file's content; also returns the bytes read if a [`SmallFileJob`]
    /// read it. A read error comes back as [`Error::LocalIo`] (without a path).
    pub(super) fn wait(&self) -> Result<(Content, Option<u64>)> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(done) = &inner.done {
                return match done {
                    Ok(c) => Ok((c.clone(), inner.read_size)),
                    Err(Error::LocalIo { source, .. }) => Err(Error::LocalIo {
                        path: PathBuf::new(),
                        source: std::io::Error::new(source.kind(), source.to_string()),
                    }),
                    Err(e) => Err(Error::Internal(e.to_string())),
                };
            }
            inner = self.cond.wait(inner).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// How a new stream chunk offered a parent's page as a delta base gets saved.
pub(super) enum PageSave {
    /// Saved (in full, or found stored already): its id.
    Done(BlobId),
    /// New, with a usable base whose plaintext must be read first.
    NeedsBase { id: BlobId, base: BlobId },
}

/// First step of saving Data chunk `chunk`, offered the parent's page `base_id` as a
/// delta base: a chunk that is stored already, or has no usable base (saver.rs), is
/// saved in full now; otherwise the base to read is returned (the page itself, or that
/// page's own base when it is a delta).
pub(super) fn save_or_find_base(
    saver: &BlobSaver,
    chunk: &[u8],
    base_id: BlobId,
) -> Result<PageSave> {
    let id = saver.keys().content_id(chunk);
    match saver.delta_base_for(&base_id, chunk.len()) {
        Some(base) if base != id && !saver.is_stored(&id) => Ok(PageSave::NeedsBase { id, base }),
        _ => {
            saver.save_with_id(BlobType::Data, id, chunk)?;
            Ok(PageSave::Done(id))
        }
    }
}

/// Second step: save chunk `id` as a delta against the base read, if the delta pays
/// (saver.rs). A base that could not be read only costs the delta: the chunk is stored
/// in full, and verify reports the damage.
pub(super) fn save_against_base(
    saver: &BlobSaver,
    id: BlobId,
    chunk: &[u8],
    base_id: BlobId,
    base: Result<Vec<u8>>,
) -> Result<BlobId> {
    match base {
        Ok(base) => saver.save_data_with_base(
            id,
            chunk,
            DeltaBase {
                id: &base_id,
                plaintext: &base,
            },
        )?,
        Err(_) => saver.save_with_id(BlobType::Data, id, chunk)?,
    }
    Ok(id)
}

/// Base reads of one batch in flight at once.
pub(super) const BASE_READS_IN_FLIGHT: usize = 16;

/// A job of the CPU pool holds consecutive chunks of one file or stream up to this many
/// bytes or [`BATCH_CHUNKS`] chunks. A job per 8 KiB database page cost more in thread
/// wake-ups (walker, pool and limiter) than hashing and compressing the page did.
pub(super) const BATCH_BYTES: usize = 512 << 10;
/// See [`BATCH_BYTES`].
pub(super) const BATCH_CHUNKS: usize = 64;

/// Save a batch of chunks: `(chunk, offered base)` in order; returns one result per
/// chunk. The bases of the chunks that need one are read concurrently (a CPU worker
/// waiting on each read in turn left the two cores idle during an incremental database
/// backup). This worker waits for the reads, so they must not need the CPU pool: bases
/// are pages (at most `TAR_GROUP_SIZE` bytes, decoded on the reading task) and are read
/// without the index reload of `Repository::read_blob`.
pub(super) fn save_batch(
    saver: &BlobSaver,
    repo: &Repository,
    rt: &tokio::runtime::Handle,
    batch: &[(Vec<u8>, Option<BlobId>)],
) -> Vec<Result<BlobId>> {
    let mut results = Vec::with_capacity(batch.len());
    let mut needs_base = Vec::new();
    for (i, (chunk, page)) in batch.iter().enumerate() {
        let result = match page {
            None => saver.save(BlobType::Data, chunk),
            Some(page) => match save_or_find_base(saver, chunk, *page) {
                Ok(PageSave::Done(id)) => Ok(id),
                Ok(PageSave::NeedsBase { id, base }) => {
                    needs_base.push((i, base));
                    Ok(id)
                }
                Err(e) => Err(e),
            },
        };
        results.push(result);
    }
    if needs_base.is_empty() {
        return results;
    }
    let bases: Vec<Result<Vec<u8>>> = rt.block_on(
        futures::stream::iter(needs_base.iter().map(|(_, base)| {
            let repo = repo.clone();
            let base = *base;
            async move { repo.read_page_base(&base).await }
        }))
        .buffered(BASE_READS_IN_FLIGHT)
        .collect(),
    );
    for ((i, base_id), base) in needs_base.into_iter().zip(bases) {
        let (chunk, _) = &batch[i];
        results[i] = match &results[i] {
            Ok(id) => save_against_base(saver, *id, chunk, base_id, base),
            Err(_) => continue,
        };
    }
    results
}

impl Walker {
    /// Read and chunk a file, handing chunks to the pool; returns the number of bytes
    /// read. Chunk ids complete asynchronously into `state`.
    pub(super) fn read_content(&self, source: impl Read, state: &Arc<FileState>) -> Result<u64> {
        let chunker = Chunker::new(source, self.chunker)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        self.save_chunks(chunker.map(|c| c.map(|data| (data, None))), state)
    }

    /// Hand the chunks of one file or stream to the pool, each with the base to offer
    /// it as a delta (page_deltas.rs); returns the number of bytes.
    pub(super) fn save_chunks(
        &self,
        chunker: impl Iterator<Item = std::io::Result<(Vec<u8>, Option<BlobId>)>>,
        state: &Arc<FileState>,
    ) -> Result<u64> {
        let mut seq = 0u64;
        let mut size = 0u64;
        let mut batch = Vec::new();
        let mut batch_bytes = 0usize;
        for chunk in chunker {
            if self.abort.load(Ordering::Relaxed) {
                return Err(Error::Internal("backup aborted".into()));
            }
            let (chunk, base) = chunk.map_err(|e| Error::LocalIo {
                path: PathBuf::new(),
                source: e,
            })?;
            size += chunk.len() as u64;
            self.progress
                .bytes_read
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            batch_bytes += chunk.len();
            batch.push((chunk, base));
            if batch_bytes >= BATCH_BYTES || batch.len() >= BATCH_CHUNKS {
                let batch = std::mem::take(&mut batch);
                let n = batch.len() as u64;
                self.spawn_batch(batch, seq, state);
                seq += n;
                batch_bytes = 0;
            }
        }
        if !batch.is_empty() {
            let n = batch.len() as u64;
            self.spawn_batch(batch, seq, state);
            seq += n;
        }
        state.set_total(seq, &self.saver);
        self.progress.files.fetch_add(1, Ordering::Relaxed);
        Ok(size)
    }

    /// Hand `batch`, chunks `first_seq..` of the file behind `state`, to the CPU pool as
    /// one job, after waiting while too many jobs are in flight.
    pub(super) fn spawn_batch(
        &self,
        batch: Vec<(Vec<u8>, Option<BlobId>)>,
        first_seq: u64,
        state: &Arc<FileState>,
    ) {
        self.limiter.acquire();
        let (saver, state, limiter, abort, repo, rt) = (
            self.saver.clone(),
            state.clone(),
            self.limiter.clone(),
            self.abort.clone(),
            self.repo.clone(),
            self.rt.clone(),
        );
        rayon::spawn(move || {
            let results = save_batch(&saver, &repo, &rt, &batch);
            drop(batch);
            for (seq, result) in (first_seq..).zip(results) {
                if result.is_err() {
                    abort.store(true, Ordering::Relaxed);
                }
                state.chunk_done(seq, result, &saver);
            }
            limiter.release();
        });
    }

    /// The pages of the parent snapshot's stream, to offer as delta bases: the stream
    /// named `name`, or the one stream of a stream snapshot of another name (datasafed
    /// names files after the backup); `None` without a parent, or when it has no such
    /// stream or no page map.
    pub(super) fn parent_pages(
        &self,
        name: &str,
        parent_tree: Option<BlobId>,
    ) -> Option<ParentPages> {
        let tree_id = parent_tree?;
        let found = self.rt.block_on(async {
            let tree = self.repo.load_tree(&tree_id).await?;
            let node = match (tree.get(name.as_bytes()), &tree.nodes[..]) {
                (Some(node), _) => node,
                (None, [only]) => only,
                (None, _) => return Ok(None),
            };
            ParentPages::of_node(&self.repo, node)
        });
        found.unwrap_or_else(|e| {
            self.warn(format!(
                "parent stream {name}: {e}; its pages are not used as delta bases"
            ));
            None
        })
    }

    pub(super) fn walk_stream(
        &self,
        name: &str,
        reader: Box<dyn Read + Send>,
        time: chrono::DateTime<chrono::Utc>,
        parent_tree: Option<BlobId>,
    ) -> Result<BlobId> {
        let state = FileState::new();
        let mut chunker = StreamChunker::new(reader, self.chunker, self.stream_chunking)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let mut parent = self.parent_pages(name, parent_tree);
        let mut page_map = TarPageMapBuilder::new();
        let mut seq = 0u64;
        let tagged = std::iter::from_fn(|| chunker.next_tagged()).map(|chunk| {
            let StreamChunk { data, page } = chunk?;
            let mut base = None;
            if let Some(position) = &page {
                page_map.record(seq, position, data.len());
                if let Some(pages) = parent.as_mut() {
                    match self.rt.block_on(pages.base_for(position, data.len())) {
                        Ok(found) => base = found,
                        Err(e) => {
                            self.warn(format!(
                                "parent stream {name}: {e}; its pages are no longer used as delta bases"
                            ));
                            parent = None;
                        }
                    }
                }
            }
            seq += 1;
            Ok((data, base))
        });
        let saved = self.save_chunks(tagged, &state);
        self.stream_cut_as_tar
            .store(chunker.tar_detected(), Ordering::Relaxed);
        if let Ok(mut params) = self.stream_run_params.lock() {
            *params = Some(chunker.run_params());
        }
        let size = saved.map_err(|e| match e {
            Error::LocalIo { source, .. } => Error::LocalIo {
                path: PathBuf::from("<stdin>"),
                source,
            },
            e => e,
        })?;
        let (content, _) = state.wait()?;
        let (uid, gid) = std::fs::metadata("/proc/self")
            .map(|m| (m.uid(), m.gid()))
            .unwrap_or((0, 0));
        let stamp = Timestamp {
            sec: time.timestamp(),
            nsec: time.timestamp_subsec_nanos(),
        };
        let node = Node {
            name: name.as_bytes().to_vec(),
            kind: NodeKind::File(content),
            mode: 0o100644,
            uid,
            gid,
            mtime: stamp,
            ctime: stamp,
            inode: 0,
            device: 0,
            size,
            extensions: page_map.finish().into_iter().collect(),
        };
        {
            let mut counts = self
                .counts
                .lock()
                .map_err(|_| Error::Internal("poisoned".into()))?;
            counts.files = 1;
            counts.files_new = 1;
            counts.total_bytes = size;
        }
        let tree = Tree { nodes: vec![node] };
        self.saver.save(BlobType::Tree, &tree.encode()?)
    }
}
