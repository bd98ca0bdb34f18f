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
use crate::repo::{current_hostname, current_username, Repository, Snapshot};
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

mod locate;
mod parent;
mod small_files;
mod stream;
mod walker;

use parent::*;
use small_files::*;
use stream::*;
use walker::*;

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

/// Whether a backup may run without loading the index (SPEC.md section 15, S-7).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IndexMode {
    /// Load the index (after the session is ready, S-2a): deduplicates against every
    /// snapshot.
    #[default]
    Full,
    /// Cold when the handle loaded no index yet, the source is a tree, its parent has a
    /// locator and no gc tombstone is pending: only the parent's trees are read, its
    /// content is reused without lookups, and chunks found neither in the parent nor in
    /// this backup are stored again. Otherwise as `Full`.
    Auto,
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
    /// Whether the index may be skipped (default: loaded).
    pub index_mode: IndexMode,
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
            index_mode: IndexMode::Full,
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
    /// Set whether the index may be skipped.
    pub fn with_index_mode(mut self, mode: IndexMode) -> Self {
        self.index_mode = mode;
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
    /// Remarks that do not make the snapshot incomplete (a locator not written, a
    /// parent's locator not usable), for `--verbose`.
    pub notes: Vec<String>,
    /// How the index was used: `"full"` (loaded), `"cold"` (S-7: none loaded) or
    /// `"cold, then full"` (a location of the parent's locator was gone, and the index
    /// was loaded mid-walk).
    pub index_mode: &'static str,
    /// When the first pack was stored, if any.
    pub first_pack_at: Option<Instant>,
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
    // The index is loaded (S-2a) by run_backup once the parent is known, or not at all
    // for a cold backup (S-7). Exclusions first: they decide S-7 (c).
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
    // The index must be read after the session is ready (SPEC.md section 15, S-2a): an
    // index loaded earlier may list packs that a whole gc deleted, tombstone and all,
    // before this session existed. A cold backup (S-7) reads none.
    let mut notes = Vec::new();
    let cold = match (&parent, &source) {
        (Some(p), BackupSource::Paths(_))
            if options.index_mode == IndexMode::Auto && index_never_loaded(repo) =>
        {
            let (locator, why) = crate::locator::load_for(repo, p).await?;
            notes.extend(why);
            match locator {
                Some(l) => repo
                    .index()
                    .write()
                    .map_err(|_| Error::Internal("index lock poisoned".into()))?
                    .enter_cold(&l.packs),
                None => {
                    notes.push(format!(
                        "parent snapshot {} has no locator; loading the index",
                        p.id.short()
                    ));
                    false
                }
            }
        }
        _ => false,
    };
    if !cold {
        repo.load_index().await?;
    }
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
        meta_ids: Mutex::new(Vec::new()),
        deep_contents: Mutex::new(Vec::new()),
    };
    // Tree backups write a locator; streams take the full path anyway in this phase, and
    // a WAL push must stay one small snapshot (no extra PUT).
    let writes_locator = matches!(source, BackupSource::Paths(_));
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
        let meta = (
            walker.meta_ids.into_inner().unwrap_or_default(),
            walker.deep_contents.into_inner().unwrap_or_default(),
        );
        result.and_then(|root| {
            closed.map(|_| {
                (
                    root,
                    counts,
                    warnings,
                    changed,
                    (as_tar, run_params),
                    excluded,
                    meta,
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
    let (
        root,
        mut summary,
        walk_warnings,
        changed_while_read,
        (as_tar, run_params),
        excluded,
        (meta_ids, deep_contents),
    ) = walked??;
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
    let id = BlobId::of_stored(&bytes);
    // The locator goes after every pack it names (they are all uploaded) and before the
    // manifest (SPEC.md section 17, step 4a), so no committed snapshot of this build
    // lacks one unless it could not be made.
    let index_mode = match (cold, parent::index_is_cold(repo)) {
        (false, _) => "full",
        (true, true) => "cold",
        (true, false) => "cold, then full",
    };
    if writes_locator {
        match locate::build_locator(repo, id, root, meta_ids, deep_contents).await? {
            Ok(locator) => crate::locator::write(repo, &locator).await?,
            Err(reason) => notes.push(format!(
                "no locator written ({reason}); the next backup of these paths loads the index"
            )),
        }
    }
    session.check_alive().await?;
    repo.storage()
        .put(&crate::layout::snapshot(&id), &bytes)
        .await?;
    Ok(BackupOutcome {
        snapshot: Snapshot { id, manifest },
        warnings,
        changed_while_read,
        excluded,
        notes,
        index_mode,
        first_pack_at: save_stats.first_pack_at.get().copied(),
    })
}

/// Whether `repo`'s index is as opened with [`crate::repo::IndexLoad::Deferred`] and
/// empty: never loaded by this handle, and no cache absorbed an index file (a warm cache
/// is brought up to date cheaply, and deduplicates against every snapshot).
fn index_never_loaded(repo: &Repository) -> bool {
    if repo.index_loaded() {
        return false;
    }
    repo.index()
        .read()
        .ok()
        .and_then(|i| i.absorbed_files().ok())
        .is_some_and(|absorbed| absorbed.is_none_or(|a| a.is_empty()))
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
