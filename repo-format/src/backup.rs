//! Backups of directory trees and streams.
//!
//! Pipeline (SPEC.md "Write ordering", ARCHITECTURE.md "Data flow of a backup"):
//! - the walker (one blocking thread) stats entries in directory order, reuses the
//!   content of files unchanged since the parent snapshot (size, mtime, ctime, inode),
//!   and reads and chunks the others; the parent trees of the directories ahead of it
//!   are loaded, and their files' blobs looked up in the index, on the reader threads;
//!   files of at most one maximal chunk are instead read whole, chunked and saved by
//!   those reader threads (`SmallFileJob`), so reads overlap and each file costs one
//!   hand-off;
//! - each chunk is hashed, deduplicated, compressed and encrypted on the rayon pool
//!   ([`BlobSaver`]), in jobs of consecutive chunks of one file (up to `BATCH_BYTES`,
//!   or one larger chunk); at most `max_in_flight_chunks` jobs and
//!   `SMALL_FILE_BYTES_IN_FLIGHT` bytes of small files are held at once, so memory
//!   is bounded by configuration, not by the input;
//! - the finalizer (one thread) receives directories in post-order and writes each tree
//!   once all its files are done, so the walker never waits at directory boundaries;
//! - after the root tree, the packs are flushed, the uploader writes the last index
//!   file, and only then is the manifest written: a crash at any earlier point leaves
//!   unreferenced packs, never a snapshot with missing data.

use crate::blob::{BlobType, DeltaBase};
use crate::config::ChunkerSettings;
use crate::content::{Content, ContentBuilder};
use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::manifest::{SnapshotManifest, SnapshotSummary, MANIFEST_VERSION};
use crate::page_deltas::{ParentPages, TarPageMapBuilder};
use crate::repo::{current_hostname, current_username, Repository, Snapshot, SNAPSHOTS_DIR};
use crate::saver::BlobSaver;
use crate::selection::{ExcludeReason, Excluded, Selection};
use crate::session::WriterSession;
use crate::tree::{Node, NodeKind, Special, Timestamp, Tree};
use dprepo_chunker::{Chunker, ChunkerParams, StreamChunk, StreamChunker, StreamChunking};
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Instant;

/// What to back up.
pub enum BackupSource {
    /// Files and directories, by path (made absolute).
    Paths(Vec<PathBuf>),
    /// A stream read to its end and stored as one file named `name`.
    Stream {
        /// Name of the stream (`--stdin-name`).
        name: String,
        /// The bytes.
        reader: Box<dyn Read + Send>,
    },
}

impl std::fmt::Debug for BackupSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackupSource::Paths(p) => f.debug_tuple("Paths").field(p).finish(),
            BackupSource::Stream { name, .. } => {
                f.debug_struct("Stream").field("name", name).finish()
            }
        }
    }
}

/// How the parent snapshot is chosen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ParentChoice {
    /// The latest snapshot of the same host and paths.
    #[default]
    Auto,
    /// This snapshot.
    Id(BlobId),
    /// This snapshot if it still exists, else none: for a stream, whose parent only
    /// lends delta bases, and which a concurrent `forget` may remove.
    IfPresent(BlobId),
    /// None: read every file.
    None,
}

/// Options of a backup.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Tags recorded in the manifest.
    pub tags: Vec<String>,
    /// Host name recorded (default: this machine's).
    pub hostname: Option<String>,
    /// Parent snapshot selection.
    pub parent: ParentChoice,
    /// Chunker override (default: the repository's, for trees or streams).
    pub chunker: Option<ChunkerParams>,
    /// How a stream is cut: tar-aware and page-aligned when it is a tar (default), or
    /// content-defined throughout. Not used for trees.
    pub stream_chunking: StreamChunking,
    /// Concurrent pack uploads.
    pub connections: usize,
    /// Jobs of chunks being processed at once (memory: this times 512 KiB plus the
    /// maximum chunk size).
    pub max_in_flight_chunks: usize,
    /// Snapshot time (default: now).
    pub time: Option<chrono::DateTime<chrono::Utc>>,
    /// Expiration time recorded in the manifest (`forget --expired` removes it after).
    pub expires: Option<chrono::DateTime<chrono::Utc>>,
    /// What to leave out of a backup of paths (selection.rs); not used for streams.
    pub selection: Selection,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            tags: Vec::new(),
            hostname: None,
            parent: ParentChoice::Auto,
            chunker: None,
            stream_chunking: StreamChunking::Auto,
            connections: 4,
            max_in_flight_chunks: 4 * rayon::current_num_threads().max(2),
            time: None,
            expires: None,
            selection: Selection::default(),
        }
    }
}

impl BackupOptions {
    /// Set tags.
    pub fn with_tags(mut self, tags: Vec<String>) -> Self {
        self.tags = tags;
        self
    }
    /// Set the recorded host name.
    pub fn with_hostname(mut self, host: impl Into<String>) -> Self {
        self.hostname = Some(host.into());
        self
    }
    /// Set the parent choice.
    pub fn with_parent(mut self, parent: ParentChoice) -> Self {
        self.parent = parent;
        self
    }
    /// Override the chunker.
    pub fn with_chunker(mut self, c: ChunkerParams) -> Self {
        self.chunker = Some(c);
        self
    }
    /// Set how streams are cut.
    pub fn with_stream_chunking(mut self, mode: StreamChunking) -> Self {
        self.stream_chunking = mode;
        self
    }
    /// Set the expiration time.
    pub fn with_expires(mut self, t: chrono::DateTime<chrono::Utc>) -> Self {
        self.expires = Some(t);
        self
    }
    /// Set the number of concurrent uploads.
    pub fn with_connections(mut self, n: usize) -> Self {
        self.connections = n;
        self
    }
    /// Set what a backup of paths leaves out.
    pub fn with_selection(mut self, selection: Selection) -> Self {
        self.selection = selection;
        self
    }
}

/// Live counters of a running backup (for progress display).
#[derive(Debug, Default)]
pub struct BackupProgress {
    /// Files finished (read or reused).
    pub files: AtomicU64,
    /// Directories entered.
    pub dirs: AtomicU64,
    /// Bytes read from the source.
    pub bytes_read: AtomicU64,
    /// Bytes of unchanged files that were not read.
    pub bytes_unchanged: AtomicU64,
    /// Entries that could not be read.
    pub errors: AtomicU64,
    /// Path being read.
    pub current: Mutex<String>,
}

/// The result of a backup.
#[derive(Debug)]
pub struct BackupOutcome {
    /// The committed snapshot.
    pub snapshot: Snapshot,
    /// Entries that could not be read and were left out of the snapshot.
    pub warnings: Vec<String>,
    /// Files that changed while they were read (their paths): the snapshot holds what
    /// was read, which may mix old and new contents.
    pub changed_while_read: Vec<PathBuf>,
    /// Entries [`BackupOptions::selection`] left out, in walk order.
    pub excluded: Vec<Excluded>,
}

/// Back up `source` into `repo` and commit a snapshot.
///
/// # Errors
/// Storage failures abort the backup before the manifest is written (nothing is
/// committed). Unreadable source entries do not abort it: they are left out and listed
/// in [`BackupOutcome::warnings`], and so is a source path that does not exist; only
/// when none of the paths exists is that an error.
pub async fn backup(
    repo: &Repository,
    source: BackupSource,
    options: BackupOptions,
    progress: Arc<BackupProgress>,
) -> Result<BackupOutcome> {
    let started = Instant::now();
    let time = options.time.unwrap_or_else(chrono::Utc::now);
    let hostname = options.hostname.clone().unwrap_or_else(current_hostname);
    let (session, excluded) = WriterSession::start(repo, "backup").await?;
    // The index must be read after the session is ready (SPEC.md section 15, S-2a): an
    // index loaded earlier may list packs that a whole gc deleted, tombstone and all,
    // before this session existed.
    if let Err(e) = repo.load_index().await {
        session.end().await;
        return Err(e);
    }
    if !excluded.is_empty() {
        repo.index()
            .write()
            .map_err(|_| Error::Internal("index lock poisoned".into()))?
            .exclude_packs(&excluded);
    }
    let result = run_backup(
        repo, source, &options, progress, time, &hostname, started, &session,
    )
    .await;
    session.end().await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn run_backup(
    repo: &Repository,
    source: BackupSource,
    options: &BackupOptions,
    progress: Arc<BackupProgress>,
    time: chrono::DateTime<chrono::Utc>,
    hostname: &str,
    started: Instant,
    session: &WriterSession,
) -> Result<BackupOutcome> {
    let config = repo.config().clone();
    let mut missing = Vec::new();
    let (paths, stdin_name, chunker) = match &source {
        BackupSource::Paths(p) => (
            normalize_paths(p, &mut missing)?,
            None,
            options
                .chunker
                .map(Ok)
                .unwrap_or_else(|| config.chunker.params())?,
        ),
        BackupSource::Stream { name, .. } => {
            validate_stream_name(name)?;
            (
                vec![PathBuf::from("/").join(name)],
                Some(name.clone()),
                options
                    .chunker
                    .map(Ok)
                    .unwrap_or_else(|| config.stream_chunker.params())?,
            )
        }
    };
    let path_strings: Vec<String> = paths
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let parent = match (&options.parent, &source) {
        (ParentChoice::None, _) => None,
        // One snapshot file read, not every manifest: datasafed pushes into archives of
        // 100,000 files name their parent this way.
        (ParentChoice::Id(id), _) => match repo.load_snapshot(id).await {
            Err(Error::NotFound { .. }) => {
                return Err(Error::Snapshot {
                    selector: id.to_hex(),
                    reason: "no such snapshot".into(),
                })
            }
            other => Some(other?),
        },
        // A parent that is gone or damaged only costs the delta bases it would lend.
        (ParentChoice::IfPresent(id), _) => match repo.load_snapshot(id).await {
            Err(Error::NotFound { .. } | Error::Corrupt { .. }) => None,
            other => Some(other?),
        },
        // A stream's parent offers its pages as delta bases (page_deltas.rs): the
        // latest stream of the same name, from this host if there is one.
        (ParentChoice::Auto, BackupSource::Stream { .. }) => {
            let all = repo.list_snapshots().await?;
            let same_stream = |s: &&Snapshot| {
                s.manifest.stdin_name == stdin_name && s.manifest.paths == path_strings
            };
            let from_here = all
                .iter()
                .rev()
                .filter(same_stream)
                .find(|s| s.manifest.hostname == hostname);
            from_here
                .or_else(|| all.iter().rev().find(same_stream))
                .cloned()
        }
        (ParentChoice::Auto, _) => {
            let all = repo.list_snapshots().await?;
            all.into_iter().rev().find(|s| {
                s.manifest.hostname == hostname
                    && s.manifest.paths == path_strings
                    && s.manifest.stdin_name.is_none()
            })
        }
    };
    let (saver, uploader) = BlobSaver::start(
        repo.storage().clone(),
        repo.keys().clone(),
        repo.index().clone(),
        config.pack_size,
        config.compression_level,
        options.connections,
    );
    let save_stats = saver.stats.clone();
    let walker = Walker {
        repo: repo.clone(),
        rt: tokio::runtime::Handle::current(),
        saver: saver.clone(),
        chunker,
        stream_chunking: options.stream_chunking,
        stream_cut_as_tar: AtomicBool::new(false),
        stream_run_params: Mutex::new(None),
        limiter: Arc::new(Limiter::new(options.max_in_flight_chunks.max(1) as u64)),
        small_files: Arc::new(Limiter::new(SMALL_FILE_BYTES_IN_FLIGHT)),
        readers: rayon::ThreadPoolBuilder::new()
            .num_threads(SMALL_FILE_READERS)
            .thread_name(|i| format!("dprepo-read-{i}"))
            .build()
            .map_err(|e| Error::Internal(format!("starting file readers: {e}")))?,
        parent_nodes_ahead: Arc::new(AtomicU64::new(0)),
        abort: Arc::new(AtomicBool::new(false)),
        progress: progress.clone(),
        counts: Mutex::new(SnapshotSummary::default()),
        warnings: Mutex::new(Vec::new()),
        changed: Arc::new(Mutex::new(Vec::new())),
        selection: options.selection.clone(),
        excluded: Mutex::new(Vec::new()),
        top_device: AtomicU64::new(NO_DEVICE),
    };
    let parent_tree = parent.as_ref().map(|p| p.manifest.tree);
    let walked = tokio::task::spawn_blocking(move || {
        let result = match source {
            BackupSource::Paths(_) => walker.walk_paths(&paths, parent_tree),
            BackupSource::Stream { name, reader } => {
                walker.walk_stream(&name, reader, time, parent_tree)
            }
        };
        // No chunk task may outlive the walk: they hold the saver, whose channel must
        // close for the uploader to finish.
        walker.small_files.wait_idle();
        walker.limiter.wait_idle();
        let closed = walker.saver.close();
        let counts = walker.counts.into_inner().unwrap_or_default();
        let as_tar = walker.stream_cut_as_tar.load(Ordering::Relaxed);
        let run_params = walker
            .stream_run_params
            .lock()
            .map(|p| p.unwrap_or(chunker))
            .unwrap_or(chunker);
        let warnings = walker.warnings.into_inner().unwrap_or_default();
        let mut changed =
            std::mem::take(&mut *walker.changed.lock().unwrap_or_else(|e| e.into_inner()));
        changed.sort();
        let excluded = walker.excluded.into_inner().unwrap_or_default();
        result.and_then(|root| {
            closed.map(|_| {
                (
                    root,
                    counts,
                    warnings,
                    changed,
                    (as_tar, run_params),
                    excluded,
                )
            })
        })
    })
    .await
    .map_err(|e| Error::Internal(format!("backup walker: {e}")));
    drop(saver);
    let uploaded = uploader.finish().await;
    // A failed upload stops the saver, and the walker then fails with "backup aborted"
    // or "uploader stopped": the upload's error is the cause to report (a full disk
    // under the repository was reported as "internal error: backup aborted").
    uploaded?;
    let (root, mut summary, walk_warnings, changed_while_read, (as_tar, run_params), excluded) =
        walked??;
    let mut warnings = missing;
    warnings.extend(walk_warnings);
    summary.bytes_read = progress.bytes_read.load(Ordering::Relaxed);
    summary.blobs_added = save_stats.blobs_added.load(Ordering::Relaxed);
    summary.bytes_added = save_stats.bytes_added.load(Ordering::Relaxed);
    summary.bytes_stored = save_stats.bytes_stored.load(Ordering::Relaxed);
    summary.deltas_added = save_stats.deltas_added.load(Ordering::Relaxed);
    summary.packs_written = save_stats.packs_written.load(Ordering::Relaxed);
    summary.errors = warnings.len() as u64;
    summary.files_changed_during_read = changed_while_read.len() as u64;
    summary.duration_secs = started.elapsed().as_secs_f64();
    let manifest = SnapshotManifest {
        version: MANIFEST_VERSION,
        time,
        tree: root,
        paths: path_strings,
        hostname: hostname.to_string(),
        username: current_username(),
        tags: options.tags.clone(),
        parent: parent.map(|p| p.id),
        stdin_name,
        chunker: ChunkerSettings {
            tar_page_size: as_tar.then_some(dprepo_chunker::tar_group_size(run_params.max_size)),
            ..ChunkerSettings::from(run_params)
        },
        program_version: format!("dprepo {}", env!("CARGO_PKG_VERSION")),
        summary,
        expires: options.expires,
        original: None,
        copied_from: None,
    };
    let bytes = manifest.encode(repo.keys());
    session.check_alive().await?;
    let id = BlobId::of_stored(&bytes);
    repo.storage()
        .put(&format!("{SNAPSHOTS_DIR}{}", id.to_hex()), &bytes)
        .await?;
    Ok(BackupOutcome {
        snapshot: Snapshot { id, manifest },
        warnings,
        changed_while_read,
        excluded,
    })
}

/// Check a stream name before anything is written: it becomes a file name in the
/// snapshot's tree, which accepts no longer name (a 5000-byte name failed late, as
/// "tree is corrupt", while the root tree was encoded).
fn validate_stream_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." || name.contains('\0') {
        return Err(Error::InvalidArgument(format!(
            "stream name {name:?} must be a single file name (no '/')"
        )));
    }
    if name.len() > crate::tree::MAX_NAME_LEN {
        return Err(Error::InvalidArgument(format!(
            "stream name is {} bytes long; a file name has at most {} bytes",
            name.len(),
            crate::tree::MAX_NAME_LEN
        )));
    }
    Ok(())
}

/// Make paths absolute and lexically clean, drop duplicates and paths inside others. A
/// path that cannot be stat'ed (missing) is left out with a warning in `missing`, as
/// restic does, so one vanished path does not cost the backup of the others.
///
/// # Errors
/// [`Error::InvalidArgument`] for no paths; [`Error::LocalIo`] when no path can be
/// stat'ed (naming the first).
fn normalize_paths(paths: &[PathBuf], missing: &mut Vec<String>) -> Result<Vec<PathBuf>> {
    if paths.is_empty() {
        return Err(Error::InvalidArgument(
            "nothing to back up: give at least one path".into(),
        ));
    }
    let cwd = std::env::current_dir().map_err(|e| Error::LocalIo {
        path: ".".into(),
        source: e,
    })?;
    let mut out: Vec<PathBuf> = Vec::new();
    let mut first_error = None;
    for p in paths {
        let abs = if p.is_absolute() {
            p.clone()
        } else {
            cwd.join(p)
        };
        let mut clean = PathBuf::from("/");
        for c in abs.components() {
            match c {
                Component::Normal(n) => clean.push(n),
                Component::ParentDir => {
                    clean.pop();
                }
                _ => {}
            }
        }
        match std::fs::symlink_metadata(&clean) {
            Ok(_) => out.push(clean),
            Err(e) => {
                missing.push(format!("{}: {e}; not backed up", clean.display()));
                first_error.get_or_insert(Error::LocalIo {
                    path: clean,
                    source: e,
                });
            }
        }
    }
    if out.is_empty() {
        if let Some(e) = first_error {
            return Err(e);
        }
    }
    out.sort();
    out.dedup();
    let all = out.clone();
    out.retain(|p| !all.iter().any(|q| q != p && p.starts_with(q)));
    Ok(out)
}

/// Counting semaphore bounding what is in flight: chunks, or bytes of small files.
#[derive(Debug)]
struct Limiter {
    state: Mutex<u64>,
    cond: Condvar,
    max: u64,
}

impl Limiter {
    fn new(max: u64) -> Self {
        Limiter {
            state: Mutex::new(0),
            cond: Condvar::new(),
            max,
        }
    }
    fn acquire(&self) {
        self.acquire_n(1);
    }
    /// Take `n` units; waits until they fit, or until nothing else is taken (so a
    /// request larger than the whole budget still goes through, alone).
    fn acquire_n(&self, n: u64) {
        let mut used = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while *used > 0 && *used + n > self.max {
            used = self.cond.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += n;
    }
    fn release(&self) {
        self.release_n(1);
    }
    fn release_n(&self, n: u64) {
        let mut used = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *used = used.saturating_sub(n);
        self.cond.notify_all();
    }
    fn wait_idle(&self) {
        let mut used = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while *used > 0 {
            used = self.cond.wait(used).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Content of one file being saved: chunk ids arrive out of order from the pool and are
/// fed in order into a [`ContentBuilder`].
#[derive(Debug, Default)]
struct FileState {
    inner: Mutex<FileInner>,
    cond: Condvar,
}

#[derive(Debug, Default)]
struct FileInner {
    builder: Option<ContentBuilder>,
    next_seq: u64,
    out_of_order: BTreeMap<u64, BlobId>,
    total: Option<u64>,
    /// Bytes read, when the file was read by a [`SmallFileJob`] (the node's size is only
    /// known once it is done).
    read_size: Option<u64>,
    done: Option<Result<Content>>,
}

impl FileState {
    fn new() -> Arc<FileState> {
        Arc::new(FileState {
            inner: Mutex::new(FileInner {
                builder: Some(ContentBuilder::new()),
                ..Default::default()
            }),
            cond: Condvar::new(),
        })
    }

    fn chunk_done(&self, seq: u64, result: Result<BlobId>, saver: &BlobSaver) {
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

    fn set_total(&self, total: u64, saver: &BlobSaver) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.total = Some(total);
        Self::maybe_finish(&mut inner, saver);
        self.cond.notify_all();
    }

    fn fail(&self, e: Error) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.done.is_none() {
            inner.done = Some(Err(e));
        }
        self.cond.notify_all();
    }

    fn maybe_finish(inner: &mut FileInner, saver: &BlobSaver) {
        if inner.done.is_none() && inner.total == Some(inner.next_seq) {
            if let Some(b) = inner.builder.take() {
                inner.done = Some(b.finish(&mut |body| saver.save(BlobType::ChunkList, &body)));
            }
        }
    }

    /// Wait for the file's content; also returns the bytes read if a [`SmallFileJob`]
    /// read it. A read error comes back as [`Error::LocalIo`] (without a path).
    fn wait(&self) -> Result<(Content, Option<u64>)> {
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

/// Threads that open and read small files, so the disk sees several requests at once
/// while the walker goes on (a cold file costs a seek or more; reading one at a time left
/// the cores idle). The same threads chunk and save what they read (see
/// [`SmallFileJob::read`]). Measured on SRC (BENCHMARKS.md):
/// 2 readers 18.7 s, 4 readers 13.9 s, 8 readers 11.7 s, but 8 raise the peak RSS by
/// 14 MiB (each thread gets its own malloc arena) past the memory target.
const SMALL_FILE_READERS: usize = 4;

/// Bytes of small files read and waiting to be saved. Enough to keep the reader threads
/// busy saving while others wait on the disk; each file counts at least [`SMALL_FILE_MIN_COST`].
const SMALL_FILE_BYTES_IN_FLIGHT: u64 = 8 << 20;

/// What a small file counts against [`SMALL_FILE_BYTES_IN_FLIGHT`] at least: its
/// buffers, path and state (bounds the files in flight to 256).
const SMALL_FILE_MIN_COST: u64 = 32 << 10;

/// A file of at most one maximal chunk: a reader thread reads it whole, then one task
/// of the reader pool chunks and saves it. One hand-off per file instead of one per chunk, and the
/// reads overlap with the walk.
struct SmallFileJob {
    path: PathBuf,
    /// Size when stat'ed.
    size: u64,
    /// Units taken from `limiter`.
    cost: u64,
    state: Arc<FileState>,
    saver: Arc<BlobSaver>,
    params: ChunkerParams,
    limiter: Arc<Limiter>,
    abort: Arc<AtomicBool>,
    progress: Arc<BackupProgress>,
    /// The file as the walker stat'ed it, and where to record it if it changed.
    seen: SeenAs,
    changed: Arc<Mutex<Vec<PathBuf>>>,
}

impl SmallFileJob {
    /// Read the file (on a reader thread), then queue its chunking and saving.
    /// `rayon::spawn` from a reader thread queues to the reader pool, not the global one:
    /// the reader threads do that work too, as in every measurement of this design
    /// (BENCHMARKS.md, "Where a restore's system calls go", last paragraph).
    fn read(self) {
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

    fn finish(self, result: Result<()>) {
        if let Err(e) = result {
            self.state.fail(e);
        }
        self.progress.files.fetch_add(1, Ordering::Relaxed);
        self.limiter.release_n(self.cost);
    }

    fn save(&self, source: impl Read) -> Result<()> {
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

/// A node whose payload may still be in progress.
enum PendingNode {
    Ready(Node),
    File(Node, Arc<FileState>, PathBuf),
    Dir(Node, Arc<DirState>),
}

#[derive(Debug, Default)]
struct DirState {
    tree: OnceLock<BlobId>,
}

/// How a new stream chunk offered a parent's page as a delta base gets saved.
enum PageSave {
    /// Saved (in full, or found stored already): its id.
    Done(BlobId),
    /// New, with a usable base whose plaintext must be read first.
    NeedsBase { id: BlobId, base: BlobId },
}

/// First step of saving Data chunk `chunk`, offered the parent's page `base_id` as a
/// delta base: a chunk that is stored already, or has no usable base (saver.rs), is
/// saved in full now; otherwise the base to read is returned (the page itself, or that
/// page's own base when it is a delta).
fn save_or_find_base(saver: &BlobSaver, chunk: &[u8], base_id: BlobId) -> Result<PageSave> {
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
fn save_against_base(
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
const BASE_READS_IN_FLIGHT: usize = 16;

/// A job of the CPU pool holds consecutive chunks of one file or stream up to this many
/// bytes or [`BATCH_CHUNKS`] chunks. A job per 8 KiB database page cost more in thread
/// wake-ups (walker, pool and limiter) than hashing and compressing the page did.
const BATCH_BYTES: usize = 512 << 10;
/// See [`BATCH_BYTES`].
const BATCH_CHUNKS: usize = 64;

/// Save a batch of chunks: `(chunk, offered base)` in order; returns one result per
/// chunk. The bases of the chunks that need one are read concurrently (a CPU worker
/// waiting on each read in turn left the two cores idle during an incremental database
/// backup). This worker waits for the reads, so they must not need the CPU pool: bases
/// are pages (at most `TAR_GROUP_SIZE` bytes, decoded on the reading task) and are read
/// without the index reload of `Repository::read_blob`.
fn save_batch(
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

/// Whether the parent's content of an unchanged file may be reused: every blob it
/// references (chunk lists and the data below them) is indexed outside the packs
/// of gc tombstones. Otherwise the file is read again.
fn content_usable(repo: &Repository, rt: &tokio::runtime::Handle, content: &Content) -> bool {
    if let Some(usable) = top_level_usable(repo, content) {
        return usable;
    }
    let mut ids = crate::restore::DataIds::new(content);
    let mut batch = Vec::new();
    loop {
        match rt.block_on(ids.next(repo)) {
            Ok(Some(id)) => {
                batch.push(id);
                if batch.len() >= 4096 {
                    if !all_usable(repo, &batch) {
                        return false;
                    }
                    batch.clear();
                }
            }
            Ok(None) => return all_usable(repo, &batch),
            Err(_) => return false,
        }
    }
}

/// [`content_usable`] as far as index lookups of `content.ids` decide it; `None` when
/// the chunk lists below them must be read too.
fn top_level_usable(repo: &Repository, content: &Content) -> Option<bool> {
    if !all_usable(repo, &content.ids) {
        return Some(false);
    }
    (content.level == 0).then_some(true)
}

fn all_usable(repo: &Repository, ids: &[BlobId]) -> bool {
    repo.usable_many(ids).into_iter().all(|usable| usable)
}

/// Subdirectories whose parent trees are loaded ahead of the walker, per directory.
/// Loading a tree and looking its files' blobs up in the index took 40% of the walker's
/// CPU time in an incremental backup of SRC; ahead of it, on the reader threads, they
/// overlap with its `statx` calls (BENCHMARKS.md, "Incremental backups").
const PARENT_TREES_AHEAD: usize = 16;

/// Nodes of parent trees loaded ahead of the walker and not yet reached, at most (one
/// tree may exceed it alone). A tree loaded past it is dropped, and the walker loads it
/// again when it gets there: memory stays bounded by this and the trees being loaded,
/// one per reader thread.
const PARENT_NODES_AHEAD: u64 = 64 << 10;

/// Ids per batched index read when loading a parent tree.
const PARENT_IDS_PER_READ: usize = 4096;

/// A directory's tree in the parent snapshot, and which of its files' content may be
/// reused.
struct ParentDir {
    tree: Tree,
    /// Index-aligned with `tree.nodes`: [`top_level_usable`] of a file's content
    /// (`Some(false)` for other nodes).
    usable: Vec<Option<bool>>,
    /// Counts the tree against [`PARENT_NODES_AHEAD`] until the walker reaches it.
    ahead: Option<NodesAhead>,
}

impl ParentDir {
    fn load(repo: &Repository, rt: &tokio::runtime::Handle, id: BlobId) -> Result<ParentDir> {
        let tree = rt.block_on(repo.load_tree(&id))?;
        // Every file's top-level ids, looked up in batched reads.
        let ids: Vec<BlobId> = tree
            .nodes
            .iter()
            .filter_map(|n| match &n.kind {
                NodeKind::File(c) => Some(c.ids.iter().copied()),
                _ => None,
            })
            .flatten()
            .collect();
        let mut indexed = ids
            .chunks(PARENT_IDS_PER_READ)
            .flat_map(|batch| repo.usable_many(batch));
        let usable = tree
            .nodes
            .iter()
            .map(|n| match &n.kind {
                NodeKind::File(c) => {
                    // Consumes exactly this file's ids, whatever they hold.
                    let unusable = (&mut indexed).take(c.ids.len()).filter(|u| !u).count();
                    match (unusable == 0, c.level) {
                        (false, _) => Some(false),
                        (true, 0) => Some(true),
                        (true, _) => None,
                    }
                }
                _ => Some(false),
            })
            .collect();
        Ok(ParentDir {
            tree,
            usable,
            ahead: None,
        })
    }

    /// The parent's node named `name`, and whether its content may be reused if a file
    /// (`None`: ask [`content_usable`]).
    fn node(&self, name: &[u8]) -> Option<(Node, Option<bool>)> {
        let i = self
            .tree
            .nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()?;
        Some((self.tree.nodes[i].clone(), self.usable[i]))
    }

    fn subdir(&self, name: &[u8]) -> Option<BlobId> {
        match self.tree.get(name)?.kind {
            NodeKind::Dir(id) => Some(id),
            _ => None,
        }
    }
}

/// Nodes of one tree loaded ahead, counted in the walker's total until dropped.
struct NodesAhead {
    total: Arc<AtomicU64>,
    nodes: u64,
}

impl NodesAhead {
    /// Count `nodes` in `total`, unless that would pass [`PARENT_NODES_AHEAD`] with
    /// other trees already counted.
    fn take(total: &Arc<AtomicU64>, nodes: u64) -> Option<NodesAhead> {
        let before = total.fetch_add(nodes, Ordering::AcqRel);
        if before > 0 && before + nodes > PARENT_NODES_AHEAD {
            total.fetch_sub(nodes, Ordering::AcqRel);
            return None;
        }
        Some(NodesAhead {
            total: total.clone(),
            nodes,
        })
    }
}

impl Drop for NodesAhead {
    fn drop(&mut self) {
        self.total.fetch_sub(self.nodes, Ordering::AcqRel);
    }
}

/// What a reader thread hands back for a parent tree loaded ahead: `Ok(None)` if it
/// was over [`PARENT_NODES_AHEAD`] and dropped.
type ParentLoaded = Result<Option<ParentDir>>;

/// Where a directory's parent tree comes from.
enum ParentSource {
    None,
    /// To be loaded by the walker.
    Id(BlobId),
    /// Being loaded on a reader thread.
    Loading(BlobId, std::sync::mpsc::Receiver<ParentLoaded>),
}

struct Walker {
    repo: Repository,
    rt: tokio::runtime::Handle,
    saver: Arc<BlobSaver>,
    chunker: ChunkerParams,
    stream_chunking: StreamChunking,
    /// Set when the stream was recognised as tar and cut by the tar rules.
    stream_cut_as_tar: AtomicBool,
    /// The params a stream's content-defined runs were cut with (an unrecognised
    /// stream's are smaller than `chunker`), for its manifest.
    stream_run_params: Mutex<Option<ChunkerParams>>,
    limiter: Arc<Limiter>,
    /// Bounds the bytes of small files read and not yet saved.
    small_files: Arc<Limiter>,
    /// Reader threads for small files, and for parent trees loaded ahead.
    readers: rayon::ThreadPool,
    /// Nodes of the parent trees loaded ahead ([`PARENT_NODES_AHEAD`]).
    parent_nodes_ahead: Arc<AtomicU64>,
    abort: Arc<AtomicBool>,
    progress: Arc<BackupProgress>,
    counts: Mutex<SnapshotSummary>,
    warnings: Mutex<Vec<String>>,
    /// Files that changed while they were read.
    changed: Arc<Mutex<Vec<PathBuf>>>,
    /// What to leave out, and what was left out.
    selection: Selection,
    excluded: Mutex<Vec<Excluded>>,
    /// Device of the backed-up path being walked (`--one-file-system`), or
    /// [`NO_DEVICE`].
    top_device: AtomicU64,
}

/// [`Walker::top_device`] before a backed-up path is reached.
const NO_DEVICE: u64 = u64::MAX;

/// What `lstat` said of a file before it was read. A file that stats otherwise once read
/// changed while it was read (or was replaced), and its copy may mix old and new bytes;
/// the next backup sees the new times and reads it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SeenAs {
    size: u64,
    mtime: Timestamp,
    ctime: Timestamp,
    inode: u64,
}

impl SeenAs {
    fn of(node: &Node) -> SeenAs {
        SeenAs {
            size: node.size,
            mtime: node.mtime,
            ctime: node.ctime,
            inode: node.inode,
        }
    }

    /// Stat `path` again now that it is read, and record it in `changed` if it differs.
    /// A file that can no longer be stat'ed (deleted since) counts as changed.
    fn check_after_read(&self, path: &Path, changed: &Mutex<Vec<PathBuf>>) {
        let now = std::fs::symlink_metadata(path).map(|meta| {
            SeenAs::of(&node_from_meta(
                Vec::new(),
                &meta,
                NodeKind::Dir(BlobId([0; 32])),
            ))
        });
        if now.ok() != Some(*self) {
            changed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(path.to_path_buf());
        }
    }
}

/// A directory whose entries are all enumerated, waiting for its tree to be written.
struct FinishedDir {
    nodes: Vec<PendingNode>,
    state: Arc<DirState>,
}

/// Virtual directory structure above the backed-up paths.
#[derive(Default)]
struct PathTrie {
    children: BTreeMap<Vec<u8>, PathTrie>,
    is_target: bool,
}

impl Walker {
    /// Whether the selection leaves out the entry at `path`; records it if so.
    fn excluded(&self, path: &Path, meta: &std::io::Result<std::fs::Metadata>) -> bool {
        let Ok(meta) = meta else { return false };
        match self.selection.exclude(path, meta) {
            Some(reason) => {
                self.record_excluded(path, reason);
                true
            }
            None => false,
        }
    }

    fn record_excluded(&self, path: &Path, reason: ExcludeReason) {
        if let Ok(mut e) = self.excluded.lock() {
            e.push(Excluded {
                path: path.to_path_buf(),
                reason,
            });
        }
    }

    fn warn(&self, msg: String) {
        self.progress.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut w) = self.warnings.lock() {
            w.push(msg);
        }
    }

    /// The parent's tree `id` with the usability of its files, loaded here; `None` (and
    /// a warning) if it cannot be read, so the directory's files are read in full.
    fn load_parent(&self, id: BlobId) -> Option<ParentDir> {
        let loaded = ParentDir::load(&self.repo, &self.rt, id);
        self.parent_loaded(id, loaded)
    }

    fn parent_loaded(&self, id: BlobId, loaded: Result<ParentDir>) -> Option<ParentDir> {
        match loaded {
            Ok(p) => Some(p),
            Err(e) => {
                self.warn(format!(
                    "parent tree {}: {e} (reading files in full)",
                    id.short()
                ));
                None
            }
        }
    }

    /// Resolve where a directory's parent tree comes from.
    fn parent_dir(&self, source: ParentSource) -> Option<ParentDir> {
        match source {
            ParentSource::None => None,
            ParentSource::Id(id) => self.load_parent(id),
            ParentSource::Loading(id, rx) => match rx.recv() {
                Ok(Ok(Some(mut p))) => {
                    p.ahead = None; // reached: no longer ahead of the walker
                    Some(p)
                }
                Ok(Err(e)) => self.parent_loaded(id, Err(e)),
                // Dropped as over budget, or the job was dropped: load it here.
                Ok(Ok(None)) | Err(_) => self.load_parent(id),
            },
        }
    }

    /// Start loading parent tree `id` on a reader thread, ahead of the walker.
    fn prefetch_parent(&self, id: BlobId) -> ParentSource {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let (repo, rt) = (self.repo.clone(), self.rt.clone());
        let total = self.parent_nodes_ahead.clone();
        self.readers.spawn(move || {
            let loaded = ParentDir::load(&repo, &rt, id).map(|mut p| {
                p.ahead = Some(NodesAhead::take(&total, p.tree.nodes.len() as u64)?);
                Some(p)
            });
            // The walker may have moved on (the entry is no longer a directory).
            let _ = tx.send(loaded);
        });
        ParentSource::Loading(id, rx)
    }

    fn walk_paths(&self, paths: &[PathBuf], parent_root: Option<BlobId>) -> Result<BlobId> {
        let mut trie = PathTrie::default();
        for p in paths {
            let mut t = &mut trie;
            for c in p.components() {
                if let Component::Normal(n) = c {
                    t = t.children.entry(n.as_bytes().to_vec()).or_default();
                }
            }
            t.is_target = true;
        }
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<FinishedDir>(256);
            let finalizer = scope.spawn(|| self.finalize(rx));
            let root_state = Arc::new(DirState::default());
            let root_parent = parent_root.map_or(ParentSource::None, ParentSource::Id);
            let walked =
                self.walk_virtual(&trie, Path::new("/"), root_parent, root_state.clone(), &tx);
            drop(tx);
            let finalized = finalizer
                .join()
                .map_err(|_| Error::Internal("finalizer panicked".into()))?;
            walked?;
            finalized?;
            root_state
                .tree
                .get()
                .copied()
                .ok_or_else(|| Error::Internal("root tree not written".into()))
        })
    }

    fn walk_virtual(
        &self,
        trie: &PathTrie,
        path: &Path,
        parent: ParentSource,
        state: Arc<DirState>,
        tx: &std::sync::mpsc::SyncSender<FinishedDir>,
    ) -> Result<()> {
        if trie.is_target {
            // The root itself was given (`dprepo backup /`).
            return self.walk_dir(path, parent, state, tx);
        }
        let parent_dir = self.parent_dir(parent);
        let mut nodes = Vec::new();
        for (name, child) in &trie.children {
            let child_path = path.join(OsStr::from_bytes(name));
            let sub_parent = parent_dir
                .as_ref()
                .and_then(|p| p.subdir(name))
                .map_or(ParentSource::None, ParentSource::Id);
            if child.is_target {
                let meta = std::fs::symlink_metadata(&child_path);
                if self.excluded(&child_path, &meta) {
                    continue;
                }
                if let Ok(m) = &meta {
                    self.top_device.store(m.dev(), Ordering::Relaxed);
                }
                let parent_node = parent_dir.as_ref().and_then(|p| p.node(name));
                if let Some(n) =
                    self.entry(&child_path, name.clone(), meta, parent_node, sub_parent, tx)?
                {
                    nodes.push(n);
                }
            } else {
                let meta = std::fs::metadata(&child_path).map_err(|e| Error::LocalIo {
                    path: child_path.clone(),
                    source: e,
                })?;
                let sub_state = Arc::new(DirState::default());
                self.walk_virtual(child, &child_path, sub_parent, sub_state.clone(), tx)?;
                nodes.push(PendingNode::Dir(
                    node_from_meta(name.clone(), &meta, NodeKind::Dir(BlobId([0; 32]))),
                    sub_state,
                ));
            }
        }
        self.counts
            .lock()
            .map_err(|_| Error::Internal("poisoned".into()))?
            .dirs += 1;
        tx.send(FinishedDir { nodes, state })
            .map_err(|_| Error::Internal("finalizer stopped".into()))
    }

    /// Back up one entry found at `path`, whose `lstat` gave `meta`; `None` if it is
    /// skipped. `parent` is its node in the parent snapshot and whether that node's
    /// content may be reused; `sub_parent` is where its parent tree comes from if it is
    /// a directory.
    fn entry(
        &self,
        path: &Path,
        name: Vec<u8>,
        meta: std::io::Result<std::fs::Metadata>,
        parent: Option<(Node, Option<bool>)>,
        sub_parent: ParentSource,
        tx: &std::sync::mpsc::SyncSender<FinishedDir>,
    ) -> Result<Option<PendingNode>> {
        if self.abort.load(Ordering::Relaxed) {
            return Err(Error::Internal("backup aborted".into()));
        }
        let meta = match meta {
            Ok(m) => m,
            Err(e) => {
                self.warn(format!("{}: {e}", path.display()));
                return Ok(None);
            }
        };
        let ft = meta.file_type();
        // Hard links, holes, extended attributes and ACLs (file_meta.rs).
        let (extensions, unread) = crate::file_meta::read_extensions(path, &meta);
        for w in unread {
            self.warn(w);
        }
        let node = |name, kind| Node {
            extensions: extensions.clone(),
            ..node_from_meta(name, &meta, kind)
        };
        if ft.is_dir() {
            let state = Arc::new(DirState::default());
            self.walk_dir(path, sub_parent, state.clone(), tx)?;
            return Ok(Some(PendingNode::Dir(
                node(name, NodeKind::Dir(BlobId([0; 32]))),
                state,
            )));
        }
        if ft.is_symlink() {
            let target = match std::fs::read_link(path) {
                Ok(t) => t,
                Err(e) => {
                    self.warn(format!("{}: {e}", path.display()));
                    return Ok(None);
                }
            };
            self.counts
                .lock()
                .map_err(|_| Error::Internal("poisoned".into()))?
                .symlinks += 1;
            return Ok(Some(PendingNode::Ready(node(
                name,
                NodeKind::Symlink(target.as_os_str().as_bytes().to_vec()),
            ))));
        }
        if !ft.is_file() {
            use std::os::unix::fs::FileTypeExt;
            let special = if ft.is_fifo() {
                Special::Fifo
            } else if ft.is_socket() {
                Special::Socket
            } else if ft.is_char_device() {
                Special::CharDevice(meta.rdev())
            } else if ft.is_block_device() {
                Special::BlockDevice(meta.rdev())
            } else {
                self.warn(format!(
                    "{}: file of unknown type {:o} not backed up",
                    path.display(),
                    meta.mode() & 0o170000
                ));
                return Ok(None);
            };
            self.counts
                .lock()
                .map_err(|_| Error::Internal("poisoned".into()))?
                .special_files += 1;
            return Ok(Some(PendingNode::Ready(node(
                name,
                NodeKind::Special(special),
            ))));
        }
        let node = node(name, NodeKind::File(Content::default()));
        {
            let mut counts = self
                .counts
                .lock()
                .map_err(|_| Error::Internal("poisoned".into()))?;
            counts.files += 1;
        }
        // Unchanged since the parent snapshot: reuse its content without reading.
        if let Some((p, usable)) = parent {
            if let NodeKind::File(content) = &p.kind {
                let same = p.size == node.size
                    && p.mtime == node.mtime
                    && p.ctime == node.ctime
                    && p.inode == node.inode;
                if same && usable.unwrap_or_else(|| content_usable(&self.repo, &self.rt, content)) {
                    let mut counts = self
                        .counts
                        .lock()
                        .map_err(|_| Error::Internal("poisoned".into()))?;
                    counts.files_unmodified += 1;
                    counts.total_bytes += node.size;
                    self.progress.files.fetch_add(1, Ordering::Relaxed);
                    self.progress
                        .bytes_unchanged
                        .fetch_add(node.size, Ordering::Relaxed);
                    let mut node = node;
                    node.kind = NodeKind::File(content.clone());
                    return Ok(Some(PendingNode::Ready(node)));
                }
                self.counts
                    .lock()
                    .map_err(|_| Error::Internal("poisoned".into()))?
                    .files_changed += 1;
            } else {
                self.counts
                    .lock()
                    .map_err(|_| Error::Internal("poisoned".into()))?
                    .files_new += 1;
            }
        } else {
            self.counts
                .lock()
                .map_err(|_| Error::Internal("poisoned".into()))?
                .files_new += 1;
        }
        if let Ok(mut c) = self.progress.current.lock() {
            *c = path.to_string_lossy().into_owned();
        }
        if node.size <= u64::from(self.chunker.max_size) {
            let state = FileState::new();
            let cost = node.size.max(SMALL_FILE_MIN_COST);
            self.small_files.acquire_n(cost);
            let job = SmallFileJob {
                path: path.to_path_buf(),
                size: node.size,
                cost,
                state: state.clone(),
                saver: self.saver.clone(),
                params: self.chunker,
                limiter: self.small_files.clone(),
                abort: self.abort.clone(),
                progress: self.progress.clone(),
                seen: SeenAs::of(&node),
                changed: self.changed.clone(),
            };
            self.readers.spawn(move || job.read());
            return Ok(Some(PendingNode::File(node, state, path.to_path_buf())));
        }
        // Longer than one chunk: read ahead on a thread of its own, past the page cache.
        let file = match crate::read_ahead::ReadAhead::open(path) {
            Ok(f) => f,
            Err(e) => {
                self.warn(format!("{}: {e}", path.display()));
                return Ok(None);
            }
        };
        let state = FileState::new();
        let seen = SeenAs::of(&node);
        match self.read_content(file, &state) {
            Ok(size) => {
                // Every byte is read (the chunks are still being saved).
                seen.check_after_read(path, &self.changed);
                let mut node = node;
                node.size = size;
                self.counts
                    .lock()
                    .map_err(|_| Error::Internal("poisoned".into()))?
                    .total_bytes += size;
                Ok(Some(PendingNode::File(node, state, path.to_path_buf())))
            }
            Err(Error::LocalIo { source, .. }) => {
                state.fail(Error::InvalidArgument("read failed".into()));
                self.warn(format!("{}: {source}", path.display()));
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn walk_dir(
        &self,
        path: &Path,
        parent: ParentSource,
        state: Arc<DirState>,
        tx: &std::sync::mpsc::SyncSender<FinishedDir>,
    ) -> Result<()> {
        self.progress.dirs.fetch_add(1, Ordering::Relaxed);
        self.counts
            .lock()
            .map_err(|_| Error::Internal("poisoned".into()))?
            .dirs += 1;
        let parent_dir = self.parent_dir(parent);
        let mut entries: Vec<(Vec<u8>, std::fs::DirEntry)> = Vec::new();
        let top_device = match self.top_device.load(Ordering::Relaxed) {
            NO_DEVICE => None,
            d => Some(d),
        };
        let descend = !self.selection.one_file_system
            || std::fs::symlink_metadata(path)
                .map_or(true, |meta| self.selection.descend(&meta, top_device));
        if !descend {
            // A mount point: kept, as an empty directory (restic does the same).
            self.record_excluded(path, ExcludeReason::OtherFileSystem);
        }
        match std::fs::read_dir(path) {
            Ok(rd) if descend => {
                for e in rd {
                    match e {
                        Ok(e) => entries.push((e.file_name().as_bytes().to_vec(), e)),
                        Err(e) => self.warn(format!("{}: {e}", path.display())),
                    }
                }
            }
            Ok(_) => {}
            Err(e) => self.warn(format!("{}: {e}", path.display())),
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        // Subdirectories that were directories in the parent too, in walk order: their
        // parent trees load on reader threads, up to PARENT_TREES_AHEAD ahead.
        let subdirs: Vec<(usize, BlobId)> = entries
            .iter()
            .enumerate()
            .filter_map(|(i, (name, _))| {
                let id = parent_dir.as_ref()?.subdir(name)?;
                Some((i, id))
            })
            .collect();
        let mut subdirs = subdirs.into_iter();
        let mut loading = std::collections::VecDeque::new();
        let mut nodes = Vec::with_capacity(entries.len());
        for (i, (name, dir_entry)) in entries.into_iter().enumerate() {
            while loading.len() < PARENT_TREES_AHEAD {
                match subdirs.next() {
                    Some((at, id)) => loading.push_back((at, self.prefetch_parent(id))),
                    None => break,
                }
            }
            let sub_parent = match loading.front() {
                Some((at, _)) if *at == i => loading
                    .pop_front()
                    .map_or(ParentSource::None, |(_, source)| source),
                _ => ParentSource::None,
            };
            let child = path.join(OsStr::from_bytes(&name));
            // Relative to the open directory: no path walk per entry.
            let meta = dir_entry.metadata();
            drop(dir_entry);
            if self.excluded(&child, &meta) {
                continue;
            }
            let parent_node = parent_dir.as_ref().and_then(|p| p.node(&name));
            if let Some(n) = self.entry(&child, name, meta, parent_node, sub_parent, tx)? {
                nodes.push(n);
            }
        }
        tx.send(FinishedDir { nodes, state })
            .map_err(|_| Error::Internal("finalizer stopped".into()))
    }

    /// Read and chunk a file, handing chunks to the pool; returns the number of bytes
    /// read. Chunk ids complete asynchronously into `state`.
    fn read_content(&self, source: impl Read, state: &Arc<FileState>) -> Result<u64> {
        let chunker = Chunker::new(source, self.chunker)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        self.save_chunks(chunker.map(|c| c.map(|data| (data, None))), state)
    }

    /// Hand the chunks of one file or stream to the pool, each with the base to offer
    /// it as a delta (page_deltas.rs); returns the number of bytes.
    fn save_chunks(
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
    fn spawn_batch(
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
    fn parent_pages(&self, name: &str, parent_tree: Option<BlobId>) -> Option<ParentPages> {
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

    fn walk_stream(
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

    /// Write trees in post-order as their files complete.
    fn finalize(&self, rx: std::sync::mpsc::Receiver<FinishedDir>) -> Result<()> {
        let mut first_error = None;
        for dir in rx {
            if first_error.is_some() {
                continue; // keep draining so the walker never blocks on a full channel
            }
            if let Err(e) = self.finalize_dir(dir) {
                self.abort.store(true, Ordering::Relaxed);
                first_error = Some(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn finalize_dir(&self, dir: FinishedDir) -> Result<()> {
        let mut tree = Tree::default();
        let mut seen: HashMap<Vec<u8>, ()> = HashMap::new();
        for pending in dir.nodes {
            let node = match pending {
                PendingNode::Ready(n) => n,
                PendingNode::File(mut n, state, path) => match state.wait() {
                    Ok((content, read_size)) => {
                        if let Some(size) = read_size {
                            n.size = size;
                            self.counts
                                .lock()
                                .map_err(|_| Error::Internal("poisoned".into()))?
                                .total_bytes += size;
                        }
                        n.kind = NodeKind::File(content);
                        n
                    }
                    Err(e) => {
                        if self.abort.load(Ordering::Relaxed) {
                            return Err(e);
                        }
                        match e {
                            Error::LocalIo { source, .. } => {
                                self.warn(format!("{}: {source}", path.display()));
                            }
                            e => self.warn(format!("{}: {e}", path.display())),
                        }
                        continue;
                    }
                },
                PendingNode::Dir(mut n, state) => {
                    let id =
                        state.tree.get().copied().ok_or_else(|| {
                            Error::Internal("subtree finished out of order".into())
                        })?;
                    n.kind = NodeKind::Dir(id);
                    n
                }
            };
            if seen.insert(node.name.clone(), ()).is_none() {
                tree.nodes.push(node);
            }
        }
        tree.sort();
        let id = self.saver.save(BlobType::Tree, &tree.encode()?)?;
        let _ = dir.state.tree.set(id);
        Ok(())
    }
}

fn node_from_meta(name: Vec<u8>, meta: &std::fs::Metadata, kind: NodeKind) -> Node {
    Node {
        name,
        kind,
        mode: meta.mode(),
        uid: meta.uid(),
        gid: meta.gid(),
        mtime: Timestamp {
            sec: meta.mtime(),
            nsec: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
        },
        ctime: Timestamp {
            sec: meta.ctime(),
            nsec: meta.ctime_nsec().clamp(0, 999_999_999) as u32,
        },
        inode: meta.ino(),
        device: meta.dev(),
        size: meta.size(),
        extensions: Vec::new(),
    }
}
