//! Small files read whole on the reader threads (`SmallFileJob`), and the byte budget
//! (`Limiter`) they share with chunk batches.

use super::*;

/// Counting semaphore bounding what is in flight: chunks, or bytes of small files.
#[derive(Debug)]
pub(super) struct Limiter {
    pub(super) state: Mutex<u64>,
    pub(super) cond: Condvar,
    pub(super) max: u64,
}

impl Limiter {
    pub(super) fn new(max: u64) -> Self {
        Limiter {
            state: Mutex::new(0),
            cond: Condvar::new(),
            max,
        }
    }
    pub(super) fn acquire(&self) {
        self.acquire_n(1);
    }
    /// Take `n` units; waits until they fit, or until nothing else is taken (so a
    /// request larger than the whole budget still goes through, alone).
    pub(super) fn acquire_n(&self, n: u64) {
        let mut used = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while *used > 0 && *used + n > self.max {
            used = self.cond.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += n;
    }
    pub(super) fn release(&self) {
        self.release_n(1);
    }
    pub(super) fn release_n(&self, n: u64) {
        let mut used = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *used = used.saturating_sub(n);
        self.cond.notify_all();
    }
    pub(super) fn wait_idle(&self) {
        let mut used = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while *used > 0 {
            used = self.cond.wait(used).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Threads that open and read small files, so the disk sees several requests at once
/// while the walker goes on (a cold file costs a seek or more; reading one at a time left
/// the cores idle). The same threads chunk and save what they read (see
/// [`SmallFileJob::read`]). Measured on SRC (benches/NOTES.md):
/// 2 readers 18.7 s, 4 readers 13.9 s, 8 readers 11.7 s, but 8 raise the peak RSS by
/// 14 MiB (each thread gets its own malloc arena) past the memory target.
pub(super) const SMALL_FILE_READERS: usize = 4;

/// Bytes of small files read and waiting to be saved. Enough to keep the reader threads
/// busy saving while others wait on the disk; each file counts at least [`SMALL_FILE_MIN_COST`].
pub(super) const SMALL_FILE_BYTES_IN_FLIGHT: u64 = 8 << 20;

/// What a small file counts against [`SMALL_FILE_BYTES_IN_FLIGHT`] at least: its
/// buffers, path and state (bounds the files in flight to 256).
pub(super) const SMALL_FILE_MIN_COST: u64 = 32 << 10;

/// A file of at most one maximal chunk: a reader thread reads it whole, then one task
/// of the reader pool chunks and saves it. One hand-off per file instead of one per chunk, and the
/// reads overlap with the walk.
pub(super) struct SmallFileJob {
    pub(super) path: PathBuf,
    /// Size when stat'ed.
    pub(super) size: u64,
    /// Units taken from `limiter`.
    pub(super) cost: u64,
    pub(super) state: Arc<FileState>,
    pub(super) saver: Arc<BlobSaver>,
    pub(super) params: ChunkerParams,
    pub(super) limiter: Arc<Limiter>,
    pub(super) abort: Arc<AtomicBool>,
    pub(super) progress: Arc<BackupProgress>,
    /// The file as the walker stat'ed it, and where to record it if it changed.
    pub(super) seen: SeenAs,
    pub(super) changed: Arc<Mutex<Vec<PathBuf>>>,
}

impl SmallFileJob {
    /// Read the file (on a reader thread), then queue its chunking and saving.
    /// `rayon::spawn` from a reader thread queues to the reader pool, not the global one:
    /// the reader threads do that work too, as in every measurement of this design
    /// (benches/NOTES.md, "Where a restore's system calls go", last paragraph).
    pub(super) fn read(self) {
        let local = |source| Error::LocalIo {
            path: self.path.clone(),
            source,
        };
        let max = u64::from(self.params.max_size);
        let head = std::fs::File::open(&self.path)
            .map_err(local)
            .and_then(|mut file| {
                // Room for the size seen by stat and the byte that tells it ended:
                // growing the buffer by doubling would hold up to twice the file.
                let mut head = Vec::with_capacity(self.size.min(max) as usize + 1);
                (&mut file)
                    .take(max + 1)
                    .read_to_end(&mut head)
                    .map_err(local)?;
                Ok((head, file))
            });
        match head {
            Ok((head, file)) => rayon::spawn(move || {
                // A file that grew since it was stat'ed is read on from where the head
                // ends: the chunker sees the whole file either way.
                let result = self.save(std::io::Cursor::new(head).chain(file));
                if result.is_ok() {
                    self.seen.check_after_read(&self.path, &self.changed);
                }
                self.finish(result);
            }),
            Err(e) => self.finish(Err(e)),
        }
    }

    pub(super) fn finish(self, result: Result<()>) {
        if let Err(e) = result {
            self.state.fail(e);
        }
        self.progress.files.fetch_add(1, Ordering::Relaxed);
        self.limiter.release_n(self.cost);
    }

    pub(super) fn save(&self, source: impl Read) -> Result<()> {
        let chunker =
            Chunker::new(source, self.params).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let (mut seq, mut size) = (0u64, 0u64);
        for chunk in chunker {
            if self.abort.load(Ordering::Relaxed) {
                return Err(Error::Internal("backup aborted".into()));
            }
            let chunk = chunk.map_err(|source| Error::LocalIo {
                path: self.path.clone(),
                source,
            })?;
            size += chunk.len() as u64;
            self.progress
                .bytes_read
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            let result = self.saver.save(BlobType::Data, &chunk);
            if result.is_err() {
                self.abort.store(true, Ordering::Relaxed);
            }
            self.state.chunk_done(seq, result, &self.saver);
            seq += 1;
        }
        self.state
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .read_size = Some(size);
        self.state.set_total(seq, &self.saver);
        Ok(())
    }
}
