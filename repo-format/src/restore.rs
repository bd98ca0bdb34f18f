//! Restoring snapshots to a directory, and reading file contents in order (`dump`).
//!
//! Files are restored concurrently (bounded), each file's chunks are fetched with a
//! read-ahead window and verified (every chunk must decrypt and hash to its id; the file
//! must end at its recorded size), and is written where no link planted in the target
//! can redirect it (`create_for_restore`): a file is restored with its exact bytes, or
//! not at all and what stood there is left. An entry that cannot be restored (a local error, or a damaged object
//! behind it) is skipped and the restore goes on with the others; every skipped entry
//! is listed in [`RestoreSummary::errors`] (restic's behaviour). Directory metadata is
//! applied last, deepest first, so restoring contents does not disturb directory mtimes
//! or trip read-only modes.

use crate::blob::{decode_blob, BlobType};
use crate::content::Content;
use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::file_meta::{apply_xattrs_at, apply_xattrs_to_file, hard_link_count, is_sparse};
use crate::file_size::{check_recorded_size, size_mismatch};
use crate::id::BlobId;
use crate::index::BlobLocation;
use crate::repo::Repository;
use crate::selection::PathFilter;
use crate::tree::{Node, NodeKind, Special};
use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

/// Yields the data chunk ids of a content in order, loading chunk lists depth-first;
/// memory is bounded by the list depth times the list size.
#[derive(Debug)]
pub struct DataIds {
    stack: Vec<(u8, Vec<BlobId>, usize)>,
}

impl DataIds {
    /// Start at the root of `content`.
    pub fn new(content: &Content) -> Self {
        DataIds {
            stack: vec![(content.level, content.ids.clone(), 0)],
        }
    }

    /// The next data chunk id, or `None` at the end.
    ///
    /// # Errors
    /// Failures reading or decoding chunk lists.
    pub async fn next(&mut self, repo: &Repository) -> Result<Option<BlobId>> {
        while let Some((level, ids, pos)) = self.stack.last_mut() {
            if *pos >= ids.len() {
                self.stack.pop();
                continue;
            }
            let id = ids[*pos];
            *pos += 1;
            if *level == 0 {
                return Ok(Some(id));
            }
            let child = *level - 1;
            let body = repo.read_blob(&id, BlobType::ChunkList).await?;
            let list = Content::decode_list(&body, child, &format!("chunk list {}", id.short()))?;
            self.stack.push((child, list.ids, 0));
        }
        Ok(None)
    }
}

/// Reads the plaintext of a content chunk by chunk, with `window` chunks fetched ahead,
/// and never returns more bytes than the size its node records: a forged or damaged
/// chunk list that expands further fails as soon as the index lengths of the chunks
/// fetched pass that size, before those chunks are read (file_size.rs).
#[derive(Debug)]
pub struct ContentReader {
    repo: Repository,
    ids: DataIds,
    inflight: VecDeque<tokio::task::JoinHandle<Result<Vec<u8>>>>,
    window: usize,
    exhausted: bool,
    /// The size the node records.
    recorded: u64,
    /// Plaintext lengths, by the index, of the chunks fetched so far.
    announced: u64,
    /// Bytes returned so far.
    returned: u64,
    /// What errors name.
    object: String,
}

impl ContentReader {
    /// Start reading `content`, whose node records `recorded` bytes.
    pub fn new(repo: &Repository, content: &Content, recorded: u64, window: usize) -> Self {
        ContentReader {
            repo: repo.clone(),
            ids: DataIds::new(content),
            inflight: VecDeque::new(),
            window: window.max(1),
            exhausted: false,
            recorded,
            announced: 0,
            returned: 0,
            object: "file content".into(),
        }
    }

    /// Name the content in errors (e.g. `file /etc/passwd`).
    pub fn named(mut self, object: impl Into<String>) -> Self {
        self.object = object.into();
        self
    }

    /// The next chunk's plaintext, or `None` at the end.
    ///
    /// # Errors
    /// A missing or damaged chunk or chunk list; [`Error::Corrupt`] when the chunks hold
    /// more or fewer bytes than the node records (found before more are returned).
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        while !self.exhausted && self.inflight.len() < self.window {
            match self.ids.next(&self.repo).await? {
                Some(id) => {
                    if let Some(location) = self.repo.locate(&id) {
                        self.announced += u64::from(location.raw_len);
                        if self.announced > self.recorded {
                            return Err(size_mismatch(
                                &self.object,
                                self.recorded,
                                self.announced,
                                true,
                            ));
                        }
                    }
                    let repo = self.repo.clone();
                    self.inflight.push_back(tokio::spawn(async move {
                        repo.read_blob(&id, BlobType::Data).await
                    }));
                }
                None => self.exhausted = true,
            }
        }
        match self.inflight.pop_front() {
            Some(h) => {
                let chunk = h.await.map_err(|e| Error::Internal(e.to_string()))??;
                self.returned += chunk.len() as u64;
                if self.returned > self.recorded {
                    return Err(size_mismatch(
                        &self.object,
                        self.recorded,
                        self.returned,
                        true,
                    ));
                }
                Ok(Some(chunk))
            }
            None if self.returned != self.recorded => Err(size_mismatch(
                &self.object,
                self.recorded,
                self.returned,
                false,
            )),
            None => Ok(None),
        }
    }
}

impl Drop for ContentReader {
    fn drop(&mut self) {
        for h in &self.inflight {
            h.abort();
        }
    }
}

/// Options of a restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Files restored at once.
    pub parallel_files: usize,
    /// Chunks fetched ahead per file.
    pub read_ahead: usize,
    /// Restore owners (uid/gid); needs privileges, failures are warnings.
    pub restore_owner: bool,
    /// Write every file's runs of zeros as holes (restic's `--sparse`). Files that had
    /// holes at backup get them back either way.
    pub sparse: bool,
    /// Which entries of the snapshot to restore (paths as in the snapshot).
    pub filter: PathFilter,
    /// What to do with a file, symlink or special file already at its place.
    pub overwrite: Overwrite,
    /// Remove what the target holds that the snapshot does not, in every restored
    /// directory (only entries the filter takes; never below a symlink).
    pub delete: bool,
    /// Change nothing: count what would be restored and deleted.
    pub dry_run: bool,
    /// Once restored, read every restored file again and compare it with the
    /// snapshot's content; a difference is an entry in [`RestoreSummary::errors`].
    pub verify: bool,
}

/// What a restore does with an entry already at a restored entry's place (restic's
/// `--overwrite`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Overwrite {
    /// Replace it.
    #[default]
    Always,
    /// Leave a regular file whose size and modification time are the snapshot's.
    IfChanged,
    /// Replace it only when the snapshot's modification time is newer.
    IfNewer,
    /// Leave whatever is there.
    Never,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            parallel_files: 8,
            read_ahead: 8,
            restore_owner: true,
            sparse: false,
            filter: PathFilter::default(),
            overwrite: Overwrite::Always,
            delete: false,
            dry_run: false,
            verify: false,
        }
    }
}

/// Live counters of a running restore.
#[derive(Debug, Default)]
pub struct RestoreProgress {
    /// Files written.
    pub files: AtomicU64,
    /// Directories created.
    pub dirs: AtomicU64,
    /// Bytes written.
    pub bytes: AtomicU64,
}

/// What a restore did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RestoreSummary {
    /// Files written.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// FIFOs and device nodes created (sockets are recorded by a backup but not
    /// recreated: a socket is made by the program listening on it).
    pub special_files: u64,
    /// Files restored as hard links of another restored file.
    pub hard_links: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Metadata that could not be applied (e.g. ownership without privileges).
    pub warnings: Vec<String>,
    /// Entries that were not restored (or not completely), each with why. A restore
    /// with errors has restored everything else.
    pub errors: Vec<SkippedEntry>,
    /// Entries left as they were by [`RestoreOptions::overwrite`].
    pub left_existing: u64,
    /// Entries of the snapshot the filter left out.
    pub filtered_out: u64,
    /// What [`RestoreOptions::delete`] removed (or, in a dry run, would remove).
    pub deleted: Vec<PathBuf>,
    /// Whether this was a dry run: the counts say what a restore would do.
    pub dry_run: bool,
    /// Files read again and found equal to the snapshot's content (`verify`).
    pub verified_files: u64,
}

impl RestoreSummary {
    /// Whether every entry was restored.
    pub fn is_complete(&self) -> bool {
        self.errors.is_empty()
    }

    fn add(&mut self, outcome: TaskOutcome) {
        self.files += outcome.files;
        self.bytes += outcome.bytes;
        self.warnings.extend(outcome.warnings);
        self.errors.extend(outcome.errors);
    }

    fn skip(&mut self, path: &Path, error: Error) {
        self.errors.push(SkippedEntry::new(path, error));
    }
}

/// An entry a restore could not restore, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SkippedEntry {
    /// Where it was to be restored.
    pub path: PathBuf,
    /// Why it was not.
    pub error: String,
}

impl SkippedEntry {
    fn new(path: &Path, error: Error) -> SkippedEntry {
        let error = match error {
            // The path is already named.
            Error::LocalIo { path: p, source } if p == path => source.to_string(),
            e => e.to_string(),
        };
        SkippedEntry {
            path: path.to_path_buf(),
            error,
        }
    }
}

impl std::fmt::Display for SkippedEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.error)
    }
}

/// What one restore task did: bytes written, warnings, and the entries it skipped.
#[derive(Debug, Default)]
struct TaskOutcome {
    files: u64,
    bytes: u64,
    warnings: Vec<String>,
    errors: Vec<SkippedEntry>,
}

impl TaskOutcome {
    fn merge(&mut self, other: TaskOutcome) {
        self.files += other.files;
        self.bytes += other.bytes;
        self.warnings.extend(other.warnings);
        self.errors.extend(other.errors);
    }

    /// The outcome of restoring one file at `path`.
    fn of_file(path: &Path, result: Result<(u64, Vec<String>)>) -> TaskOutcome {
        match result {
            Ok((bytes, warnings)) => TaskOutcome {
                files: 1,
                bytes,
                warnings,
                errors: Vec::new(),
            },
            Err(e) => TaskOutcome {
                errors: vec![SkippedEntry::new(path, e)],
                ..TaskOutcome::default()
            },
        }
    }
}

/// Restore the entry at `path` of snapshot tree `root` into `target`. For the root or a
/// directory, its contents go into `target`; a file or symlink is restored as
/// `target/<name>`.
///
/// An entry that cannot be restored does not stop the restore: it is skipped (a
/// directory with everything below it) and listed in [`RestoreSummary::errors`], so a
/// caller MUST check [`RestoreSummary::is_complete`]. A file is never left holding
/// wrong bytes: one that fails is removed, or what stood there before stays.
///
/// # Errors
/// Only what stops the restore as a whole: [`Error::SnapshotPath`] for a bad path, a
/// target directory that cannot be created, a tree on the way to `path` (or the one at
/// it) that cannot be read.
pub async fn restore(
    repo: &Repository,
    root: &BlobId,
    path: &[u8],
    target: &Path,
    options: &RestoreOptions,
    progress: Arc<RestoreProgress>,
) -> Result<RestoreSummary> {
    tokio::fs::create_dir_all(target)
        .await
        .map_err(|e| Error::LocalIo {
            path: target.to_path_buf(),
            source: e,
        })?;
    let mut summary = RestoreSummary {
        dry_run: options.dry_run,
        ..RestoreSummary::default()
    };
    let mut in_flight = InFlight::default();
    let mut dir_meta: Vec<(PathBuf, Node)> = Vec::new();
    // Directories made only to reach included entries: removed again if still empty.
    let mut made_to_reach: Vec<PathBuf> = Vec::new();
    // Restored directories with the names their trees hold, for --delete.
    let mut listed: Vec<(PathBuf, String, HashSet<Vec<u8>>)> = Vec::new();
    // Files written, for `verify`.
    let mut written: Vec<(PathBuf, Node)> = Vec::new();
    // Stack of (tree id, local directory, its path in the snapshot, taken whole).
    let mut stack: Vec<(BlobId, PathBuf, String, bool)> = Vec::new();
    let start_path = {
        let p = String::from_utf8_lossy(path);
        let p = p.trim_matches('/');
        if p.is_empty() {
            String::new()
        } else {
            format!("/{p}")
        }
    };
    let start = match repo.find_node(root, path).await? {
        None => Some(*root),
        Some(node) => match &node.kind {
            NodeKind::Dir(id) => {
                dir_meta.push((target.to_path_buf(), node.clone()));
                Some(*id)
            }
            _ => {
                let snap_path = PathBuf::from(&start_path);
                if !options.filter.takes(&snap_path) {
                    summary.filtered_out += 1;
                } else if leaves_existing(
                    options,
                    &node,
                    &target.join(OsStr::from_bytes(&node.name)),
                    &mut summary,
                ) {
                } else if options.dry_run {
                    count_dry_run(&node, &mut summary);
                } else {
                    if options.verify && matches!(node.kind, NodeKind::File(_)) {
                        written.push((target.join(OsStr::from_bytes(&node.name)), node.clone()));
                    }
                    restore_leaf(
                        repo,
                        &node,
                        target,
                        options,
                        &progress,
                        &mut in_flight,
                        &mut summary,
                    )
                    .await?;
                }
                None
            }
        },
    };
    if let Some(start) = start {
        // The first tree is read here: if it cannot be, nothing can be restored.
        let mut first = Some(repo.load_tree(&start).await?);
        let start_taken = options.filter.include.is_empty()
            || (!start_path.is_empty() && options.filter.takes(Path::new(&start_path)));
        stack.push((start, target.to_path_buf(), start_path.clone(), start_taken));
        while let Some((tree_id, dir, prefix, taken)) = stack.pop() {
            let tree = match first.take() {
                Some(t) => t,
                None => match repo.load_tree(&tree_id).await {
                    Ok(t) => t,
                    Err(e) => {
                        summary.skip(&dir, e);
                        continue;
                    }
                },
            };
            if options.delete {
                let names = tree.nodes.iter().map(|n| n.name.clone()).collect();
                listed.push((dir.clone(), prefix.clone(), names));
            }
            for node in tree.nodes {
                let local = dir.join(OsStr::from_bytes(&node.name));
                let snap = format!("{prefix}/{}", String::from_utf8_lossy(&node.name));
                let snap_path = Path::new(&snap);
                if options.filter.excludes(snap_path) {
                    summary.filtered_out += 1;
                    continue;
                }
                let node_taken = taken || options.filter.takes(snap_path);
                if let NodeKind::Dir(id) = &node.kind {
                    if !node_taken && !options.filter.descends(snap_path) {
                        summary.filtered_out += 1;
                        continue;
                    }
                    if !options.dry_run {
                        let existed = match prepare_dir(&local) {
                            Ok(existed) => existed,
                            Err(e) => {
                                summary.skip(&local, e);
                                continue;
                            }
                        };
                        if !node_taken && !existed {
                            made_to_reach.push(local.clone());
                        }
                    }
                    if node_taken {
                        summary.dirs += 1;
                        progress.dirs.fetch_add(1, Ordering::Relaxed);
                    }
                    stack.push((*id, local.clone(), snap, node_taken));
                    dir_meta.push((local, node));
                } else if !node_taken {
                    summary.filtered_out += 1;
                } else if leaves_existing(options, &node, &local, &mut summary) {
                    continue;
                } else if options.dry_run {
                    count_dry_run(&node, &mut summary);
                } else {
                    if options.verify && matches!(node.kind, NodeKind::File(_)) {
                        written.push((local.clone(), node.clone()));
                    }
                    restore_leaf(
                        repo,
                        &node,
                        &dir,
                        options,
                        &progress,
                        &mut in_flight,
                        &mut summary,
                    )
                    .await?;
                }
            }
        }
    }
    if options.dry_run {
        if options.delete {
            delete_extra(&listed, options, &mut summary);
        }
        summary.errors.sort_by(|a, b| a.path.cmp(&b.path));
        return Ok(summary);
    }
    let InFlight {
        tasks: mut files,
        mut group,
        hard_links,
    } = in_flight;
    spawn_group(
        repo,
        options,
        &progress,
        &mut files,
        &mut group,
        &mut summary,
    )
    .await?;
    while let Some(done) = files.join_next().await {
        summary.add(done.map_err(|e| Error::Internal(e.to_string()))?);
    }
    let failed: HashSet<PathBuf> = summary.errors.iter().map(|e| e.path.clone()).collect();
    for (first, link) in hard_links.later {
        if failed.contains(&first) {
            summary.skip(
                &link,
                Error::Internal(format!(
                    "hard link of {}, which was not restored",
                    first.display()
                )),
            );
            continue;
        }
        match tokio::task::spawn_blocking({
            let (first, link) = (first.clone(), link.clone());
            move || restore_hard_link(&first, &link)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        {
            Ok(()) => summary.hard_links += 1,
            Err(e) => summary.skip(&link, e),
        }
    }
    if options.delete {
        delete_extra(&listed, options, &mut summary);
    }
    if options.verify {
        let failed: HashSet<PathBuf> = summary.errors.iter().map(|e| e.path.clone()).collect();
        for (local, node) in written.iter().filter(|(p, _)| !failed.contains(p)) {
            match verify_file(repo, local, node).await {
                Ok(()) => summary.verified_files += 1,
                Err(e) => summary.skip(local, e),
            }
        }
    }
    // Deepest first: a directory made only on the way to included entries, and left
    // empty, goes again (restic restores the parents of what it includes, no more).
    made_to_reach.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    let mut removed = HashSet::new();
    for p in made_to_reach {
        if std::fs::remove_dir(&p).is_ok() {
            removed.insert(p);
        }
    }
    // Deepest directories first, so setting a parent's mtime comes after its children.
    dir_meta.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (p, node) in dir_meta.iter().filter(|(p, _)| !removed.contains(p)) {
        match apply_metadata(p, node, options.restore_owner) {
            Ok(warnings) => summary.warnings.extend(warnings),
            Err(e) => summary.skip(p, e),
        }
    }
    summary.errors.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(summary)
}

/// Whether `--overwrite` leaves what is at `local` (counted in the summary).
fn leaves_existing(
    options: &RestoreOptions,
    node: &Node,
    local: &Path,
    summary: &mut RestoreSummary,
) -> bool {
    if options.overwrite == Overwrite::Always {
        return false;
    }
    let Ok(meta) = std::fs::symlink_metadata(local) else {
        return false;
    };
    use std::os::unix::fs::MetadataExt;
    let existing_mtime = (meta.mtime(), meta.mtime_nsec());
    let snapshot_mtime = (node.mtime.sec, i64::from(node.mtime.nsec));
    let leave = match options.overwrite {
        Overwrite::Always => false,
        Overwrite::Never => true,
        Overwrite::IfNewer => existing_mtime >= snapshot_mtime,
        Overwrite::IfChanged => {
            matches!(node.kind, NodeKind::File(_))
                && meta.is_file()
                && meta.len() == node.size
                && existing_mtime == snapshot_mtime
        }
    };
    if leave {
        summary.left_existing += 1;
    }
    leave
}

/// Read the restored file at `local` again and compare it, chunk by chunk, with the
/// content of `node` as the repository holds it (each chunk checked against its id
/// when decoded).
///
/// # Errors
/// [`Error::Corrupt`] naming the first differing byte, or a file of another length;
/// the file or a chunk cannot be read.
async fn verify_file(repo: &Repository, local: &Path, node: &Node) -> Result<()> {
    use tokio::io::AsyncReadExt;
    let NodeKind::File(content) = &node.kind else {
        return Ok(());
    };
    let object = local.display().to_string();
    let io = |e| Error::LocalIo {
        path: local.to_path_buf(),
        source: e,
    };
    let mut file = tokio::io::BufReader::with_capacity(
        1 << 20,
        tokio::fs::File::open(local).await.map_err(io)?,
    );
    let mut reader = ContentReader::new(repo, content, node.size, 8).named(&object);
    let mut offset = 0u64;
    let mut buf = Vec::new();
    while let Some(chunk) = reader.next_chunk().await? {
        buf.resize(chunk.len(), 0);
        let mut got = 0;
        while got < buf.len() {
            match file.read(&mut buf[got..]).await.map_err(io)? {
                0 => break,
                n => got += n,
            }
        }
        if let Some(at) = buf[..got]
            .iter()
            .zip(&chunk)
            .position(|(a, b)| a != b)
            .or((got < chunk.len()).then_some(got))
        {
            return Err(Error::corrupt(
                object,
                format!(
                    "verify: the restored file differs from the snapshot at byte {}",
                    offset + at as u64
                ),
            ));
        }
        offset += chunk.len() as u64;
    }
    let mut extra = [0u8; 1];
    if file.read(&mut extra).await.map_err(io)? != 0 {
        return Err(Error::corrupt(
            object,
            format!("verify: the restored file is longer than the snapshot's {offset} bytes"),
        ));
    }
    Ok(())
}

/// Count a leaf a dry run would restore.
fn count_dry_run(node: &Node, summary: &mut RestoreSummary) {
    match &node.kind {
        NodeKind::File(_) => {
            summary.files += 1;
            summary.bytes += node.size;
        }
        NodeKind::Symlink(_) => summary.symlinks += 1,
        NodeKind::Special(_) => summary.special_files += 1,
        NodeKind::Dir(_) => {}
    }
}

/// `--delete`: in each restored directory, remove the entries its tree does not hold
/// and the filter takes. A directory reached through a symlink is never listed: the
/// directories are visited parents first, and one that is not a real directory (a
/// symlink planted in the target, in a dry run still there) is skipped with all below
/// it, so nothing outside the target is touched. Removal does not follow symlinks
/// either (`remove_file` on a link removes the link).
fn delete_extra(
    listed: &[(PathBuf, String, HashSet<Vec<u8>>)],
    options: &RestoreOptions,
    summary: &mut RestoreSummary,
) {
    let mut order: Vec<&(PathBuf, String, HashSet<Vec<u8>>)> = listed.iter().collect();
    order.sort_by_key(|(p, _, _)| p.components().count());
    let mut unsafe_dirs: Vec<&Path> = Vec::new();
    for (dir, prefix, names) in order {
        if unsafe_dirs.iter().any(|u| dir.starts_with(u)) {
            continue;
        }
        if !std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
            unsafe_dirs.push(dir);
            continue;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut extra: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| !names.contains(e.file_name().as_bytes()))
            .filter(|e| {
                let snap = format!("{prefix}/{}", e.file_name().to_string_lossy());
                options.filter.takes(Path::new(&snap))
            })
            .map(|e| e.path())
            .collect();
        extra.sort();
        for path in extra {
            let result = if options.dry_run {
                Ok(())
            } else {
                match std::fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
                    Ok(_) => std::fs::remove_file(&path),
                    Err(e) => Err(e),
                }
            };
            match result {
                Ok(()) => summary.deleted.push(path),
                Err(e) => summary.skip(
                    &path,
                    Error::LocalIo {
                        path: path.clone(),
                        source: e,
                    },
                ),
            }
        }
    }
}

/// Make `local` an empty-or-existing real directory. An existing symlink is replaced,
/// never followed: a link planted in the target must not redirect the restore. Called
/// on the walking task itself: a `mkdir` costs less than a trip to the blocking pool.
/// Returns whether a directory was there already.
fn prepare_dir(local: &Path) -> Result<bool> {
    let io = |e| Error::LocalIo {
        path: local.to_path_buf(),
        source: e,
    };
    // The common case, nothing there yet, is one `mkdir`.
    match std::fs::create_dir(local) {
        Ok(()) => return Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(e)),
    }
    match std::fs::symlink_metadata(local) {
        Ok(m) if m.is_dir() => return Ok(true),
        Ok(m) if m.file_type().is_symlink() || m.is_file() => {
            std::fs::remove_file(local).map_err(io)?
        }
        Ok(_) => {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a directory",
            )))
        }
        Err(_) => {}
    }
    std::fs::create_dir(local).map_err(io)?;
    Ok(false)
}

/// Restore tasks in flight.
type FileTasks = tokio::task::JoinSet<TaskOutcome>;

/// What a restore has started and not finished: file tasks, and the small files
/// collected for the next group.
#[derive(Default)]
struct InFlight {
    tasks: FileTasks,
    group: SmallFileGroup,
    hard_links: HardLinks,
}

/// Files of the restore recorded as hard links ([`hard_link_count`]).
#[derive(Debug, Default)]
struct HardLinks {
    /// Where the first name of each (device, inode) is restored.
    first: HashMap<(u64, u64), PathBuf>,
    /// Later names: (first name, this name).
    later: Vec<(PathBuf, PathBuf)>,
}

/// Wait until fewer than `parallel_files` restore tasks are in flight.
async fn wait_for_slot(
    options: &RestoreOptions,
    files: &mut FileTasks,
    summary: &mut RestoreSummary,
) -> Result<()> {
    while files.len() >= options.parallel_files.max(1) {
        if let Some(done) = files.join_next().await {
            summary.add(done.map_err(|e| Error::Internal(e.to_string()))?);
        }
    }
    Ok(())
}

/// A group of small files restored by one task: up to this many bytes of content ...
const GROUP_BYTES: u64 = 512 << 10;
/// ... or this many files.
const GROUP_FILES: usize = 32;
/// Blobs of one pack at most this far apart are read with one range request.
const RUN_GAP: u64 = 64 << 10;
/// A range request reads at most this many bytes (or one larger blob).
const RUN_BYTES: u64 = 1 << 20;

/// Small files (one chunk list level, at most [`SMALL_FILE_BYTES`]) collected in tree
/// order, to be restored together.
#[derive(Debug, Default)]
struct SmallFileGroup {
    files: Vec<(PathBuf, Node)>,
    bytes: u64,
}

/// Hand the collected small files to one task ([`restore_small_group`]).
async fn spawn_group(
    repo: &Repository,
    options: &RestoreOptions,
    progress: &Arc<RestoreProgress>,
    files: &mut FileTasks,
    group: &mut SmallFileGroup,
    summary: &mut RestoreSummary,
) -> Result<()> {
    if group.files.is_empty() {
        return Ok(());
    }
    wait_for_slot(options, files, summary).await?;
    let batch = std::mem::take(group);
    let (repo, options, progress) = (repo.clone(), options.clone(), progress.clone());
    files.spawn(async move { restore_small_group(&repo, batch.files, &options, &progress).await });
    Ok(())
}

/// One range request: blobs of one pack, sorted by offset.
struct Run {
    pack: String,
    start: u64,
    end: u64,
    blobs: Vec<(BlobId, BlobLocation)>,
}

/// Restore a group of small files with few trips to storage and to the blocking pool:
/// their chunks are read in runs of adjacent ranges (files saved together sit together
/// in packs), then one blocking task decodes the chunks and writes every file. One
/// blocking task per file read and another per file written spent a fifth of a
/// restore's CPU on waking threads. Files with a chunk that is not indexed in full
/// (a delta, or gone after a concurrent gc), and every file of the group when a read
/// fails, take the one-by-one path, which follows gc and names what is damaged.
async fn restore_small_group(
    repo: &Repository,
    files: Vec<(PathBuf, Node)>,
    options: &RestoreOptions,
    progress: &RestoreProgress,
) -> TaskOutcome {
    let mut together = Vec::with_capacity(files.len());
    let mut alone = Vec::new();
    let mut wanted: Vec<(BlobId, BlobLocation)> = Vec::new();
    let mut seen = HashSet::new();
    // Every chunk of the group located in one batched index read.
    let ids: Vec<BlobId> = files
        .iter()
        .filter_map(|(_, node)| match &node.kind {
            NodeKind::File(content) => Some(content.ids.iter().copied()),
            _ => None,
        })
        .flatten()
        .collect();
    let mut locations = repo.locate_many(&ids).into_iter();
    for (path, node) in files {
        let NodeKind::File(content) = &node.kind else {
            continue;
        };
        // Takes exactly this file's locations, so the next file starts at its own (an
        // `Option` collect would stop at the first one missing).
        let located: Vec<Option<BlobLocation>> = (&mut locations)
            .take(content.ids.len())
            .map(|l| l.filter(|l| l.base.is_none() && l.blob_type == BlobType::Data))
            .collect();
        let located: Option<Vec<BlobLocation>> = located.into_iter().collect();
        // Chunks that do not add up to the recorded size are not read: the one-by-one
        // path refuses the file before reading (file_size.rs).
        let adds_up = |l: &Vec<BlobLocation>| {
            l.iter().map(|l| u64::from(l.raw_len)).sum::<u64>() == node.size
        };
        match located {
            Some(locations) if adds_up(&locations) => {
                for (id, location) in content.ids.iter().zip(locations) {
                    if seen.insert(*id) {
                        wanted.push((*id, location));
                    }
                }
                together.push((path, node));
            }
            _ => alone.push((path, node)),
        }
    }
    wanted.sort_by_key(|(_, location)| (location.pack_id, location.offset));
    let mut runs: Vec<Run> = Vec::new();
    for (id, location) in wanted {
        let (from, to) = (
            u64::from(location.offset),
            u64::from(location.offset) + u64::from(location.stored_len),
        );
        match runs.last_mut() {
            Some(run)
                if run.blobs[0].1.pack_id == location.pack_id
                    && from >= run.start
                    && from <= run.end + RUN_GAP
                    && to.max(run.end) - run.start <= RUN_BYTES =>
            {
                run.end = run.end.max(to);
                run.blobs.push((id, location));
            }
            _ => runs.push(Run {
                pack: location.pack_name(),
                start: from,
                end: to,
                blobs: vec![(id, location)],
            }),
        }
    }
    let mut read = Vec::with_capacity(runs.len());
    for run in runs {
        match repo
            .storage()
            .get_range(&run.pack, run.start, run.end - run.start)
            .await
        {
            Ok(bytes) => read.push((run, bytes)),
            Err(_) => {
                alone.append(&mut together);
                read.clear();
                break;
            }
        }
    }
    let mut outcome = TaskOutcome::default();
    if !together.is_empty() {
        let count = together.len() as u64;
        let keys = repo.keys().clone();
        let group_options = options.clone();
        let paths: Vec<PathBuf> = together.iter().map(|(p, _)| p.clone()).collect();
        // Decoded and written by one blocking task: a decode on the CPU pool first cost a
        // hand-off per group and left the pool's threads spinning (`sched_yield`) after
        // each one, most of a restore's system calls (BENCHMARKS.md, "Restore without
        // the CPU pool").
        let job = tokio::task::spawn_blocking(move || match decode_runs(&keys, read) {
            Ok(plain) => Ok(write_small_group(&plain, &together, &group_options)),
            // A damaged chunk: the one-by-one path names the file it belongs to.
            Err(_) => Err(together),
        })
        .await;
        match job {
            Ok(Ok(group)) => {
                progress.bytes.fetch_add(group.bytes, Ordering::Relaxed);
                progress
                    .files
                    .fetch_add(count - group.errors.len() as u64, Ordering::Relaxed);
                outcome.merge(group);
            }
            Ok(Err(mut back)) => alone.append(&mut back),
            Err(e) => outcome.errors.extend(
                paths
                    .iter()
                    .map(|p| SkippedEntry::new(p, Error::Internal(format!("restore task: {e}")))),
            ),
        }
    }
    for (path, node) in &alone {
        let NodeKind::File(content) = &node.kind else {
            continue;
        };
        let result = restore_small_file(repo, node, content, path, options, progress).await;
        outcome.merge(TaskOutcome::of_file(path, result));
    }
    outcome
}

/// Decode the chunks read for a group, by id.
fn decode_runs(keys: &Keys, read: Vec<(Run, Vec<u8>)>) -> Result<HashMap<BlobId, Vec<u8>>> {
    let mut plain: HashMap<BlobId, Vec<u8>> = HashMap::new();
    // Each run is dropped once decoded.
    for (run, bytes) in read {
        for (id, location) in &run.blobs {
            let from = (u64::from(location.offset) - run.start) as usize;
            let stored = bytes
                .get(from..from + location.stored_len as usize)
                .ok_or_else(|| {
                    Error::corrupt(
                        run.pack.as_str(),
                        format!(
                            "range of {} bytes at {} came back with {}",
                            run.end - run.start,
                            run.start,
                            bytes.len()
                        ),
                    )
                })?;
            let chunk = decode_blob(
                keys,
                BlobType::Data,
                id,
                stored,
                u64::from(location.raw_len),
            )?;
            plain.insert(*id, chunk);
        }
    }
    Ok(plain)
}

/// Write the files of a group, in tree order, from their decoded chunks.
fn write_small_group(
    plain: &HashMap<BlobId, Vec<u8>>,
    files: &[(PathBuf, Node)],
    options: &RestoreOptions,
) -> TaskOutcome {
    let mut outcome = TaskOutcome::default();
    let mut data = Vec::new();
    for (path, node) in files {
        let result = gather_chunks(plain, path, node, &mut data)
            .and_then(|()| write_whole_file(path, node, &data, options));
        outcome.merge(TaskOutcome::of_file(path, result));
    }
    outcome
}

/// Put the content of small file `node` together from the decoded chunks of its group.
fn gather_chunks(
    plain: &HashMap<BlobId, Vec<u8>>,
    path: &Path,
    node: &Node,
    data: &mut Vec<u8>,
) -> Result<()> {
    let NodeKind::File(content) = &node.kind else {
        return Err(Error::Internal("not a file".into()));
    };
    data.clear();
    for id in &content.ids {
        let chunk = plain
            .get(id)
            .ok_or_else(|| Error::Internal(format!("chunk {} was not read", id.short())))?;
        let have = (data.len() + chunk.len()) as u64;
        if have > node.size {
            return Err(size_mismatch(&file_object(path), node.size, have, true));
        }
        data.extend_from_slice(chunk);
    }
    if data.len() as u64 != node.size {
        return Err(size_mismatch(
            &file_object(path),
            node.size,
            data.len() as u64,
            false,
        ));
    }
    Ok(())
}

/// Write a file whose whole content is in memory, and apply its metadata; returns its
/// size and the warnings.
fn write_whole_file(
    path: &Path,
    node: &Node,
    data: &[u8],
    options: &RestoreOptions,
) -> Result<(u64, Vec<String>)> {
    let (mut file, placement) = create_for_restore(path)?;
    let sparse = options.sparse || is_sparse(node);
    let written = write_at(&mut file, data, 0, sparse)
        .and_then(|()| finish_holes(&file, data.len() as u64, sparse))
        .map_err(|e| Error::LocalIo {
            path: path.to_path_buf(),
            source: e,
        })
        .and_then(|()| apply_file_metadata(&file, path, node, options.restore_owner));
    match written {
        Ok(warnings) => {
            placement.commit()?;
            Ok((data.len() as u64, warnings))
        }
        Err(e) => {
            placement.abandon();
            Err(e)
        }
    }
}

async fn restore_leaf(
    repo: &Repository,
    node: &Node,
    dir: &Path,
    options: &RestoreOptions,
    progress: &Arc<RestoreProgress>,
    in_flight: &mut InFlight,
    summary: &mut RestoreSummary,
) -> Result<()> {
    let InFlight {
        tasks: files,
        group,
        hard_links,
    } = in_flight;
    let local = dir.join(OsStr::from_bytes(&node.name));
    match &node.kind {
        NodeKind::Symlink(target) => match restore_symlink(&local, target, node, options) {
            Ok(warnings) => {
                summary.symlinks += 1;
                summary.warnings.extend(warnings);
            }
            Err(e) => summary.skip(&local, e),
        },
        NodeKind::File(content) => {
            // The second and later names of a hard-linked inode are linked to the first
            // once it is written (after every file task).
            if hard_link_count(node).is_some() {
                let key = (node.device, node.inode);
                if let Some(first) = hard_links.first.get(&key) {
                    hard_links.later.push((first.clone(), local));
                    return Ok(());
                }
                hard_links.first.insert(key, local.clone());
            }
            if node.size <= SMALL_FILE_BYTES && content.level == 0 {
                group.bytes += node.size;
                group.files.push((local, node.clone()));
                if group.bytes >= GROUP_BYTES || group.files.len() >= GROUP_FILES {
                    spawn_group(repo, options, progress, files, group, summary).await?;
                }
                return Ok(());
            }
            wait_for_slot(options, files, summary).await?;
            let (repo, node, options, progress) = (
                repo.clone(),
                node.clone(),
                options.clone(),
                progress.clone(),
            );
            files.spawn(async move {
                let result = restore_file(&repo, &node, &local, &options, &progress).await;
                TaskOutcome::of_file(&local, result)
            });
        }
        NodeKind::Special(special) => match restore_special(&local, *special, node, options) {
            Ok(Some(warnings)) => {
                summary.special_files += 1;
                summary.warnings.extend(warnings);
            }
            Ok(None) => {}
            Err(e) => summary.skip(&local, e),
        },
        NodeKind::Dir(_) => {}
    }
    Ok(())
}

/// Replace whatever is at `local` with a symlink to `target` (never following a link
/// that is there), and apply the metadata of `node`.
fn restore_symlink(
    local: &Path,
    target: &[u8],
    node: &Node,
    options: &RestoreOptions,
) -> Result<Vec<String>> {
    let io = |e| Error::LocalIo {
        path: local.to_path_buf(),
        source: e,
    };
    if std::fs::symlink_metadata(local).is_ok() {
        std::fs::remove_file(local).map_err(io)?;
    }
    std::os::unix::fs::symlink(OsStr::from_bytes(target), local).map_err(io)?;
    apply_metadata(local, node, options.restore_owner)
}

async fn restore_file(
    repo: &Repository,
    node: &Node,
    local: &Path,
    options: &RestoreOptions,
    progress: &RestoreProgress,
) -> Result<(u64, Vec<String>)> {
    let NodeKind::File(content) = &node.kind else {
        return Ok((0, Vec::new()));
    };
    if node.size <= SMALL_FILE_BYTES {
        return restore_small_file(repo, node, content, local, options, progress).await;
    }
    check_recorded_size(repo, content, node.size, &file_object(local))?;
    let path = local.to_path_buf();
    let (file, placement) = tokio::task::spawn_blocking(move || create_for_restore(&path))
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
    let written = write_content(repo, node, content, local, file, options, progress).await;
    let placed = tokio::task::spawn_blocking(move || match written {
        Ok(done) => placement.commit().map(|()| done),
        Err(e) => {
            placement.abandon();
            Err(e)
        }
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))??;
    progress.files.fetch_add(1, Ordering::Relaxed);
    Ok(placed)
}

/// Write the content of a large file into `file` as its chunks arrive, then apply its
/// metadata; returns its size and the warnings.
async fn write_content(
    repo: &Repository,
    node: &Node,
    content: &Content,
    local: &Path,
    file: std::fs::File,
    options: &RestoreOptions,
    progress: &RestoreProgress,
) -> Result<(u64, Vec<String>)> {
    let io = |e| Error::LocalIo {
        path: local.to_path_buf(),
        source: e,
    };
    let sparse = options.sparse || is_sparse(node);
    let mut file = tokio::fs::File::from_std(file);
    let mut reader =
        ContentReader::new(repo, content, node.size, options.read_ahead).named(file_object(local));
    let mut written = 0u64;
    while let Some(chunk) = reader.next_chunk().await? {
        if sparse {
            for (range, zero) in block_runs(&chunk, written) {
                if zero {
                    file.seek(std::io::SeekFrom::Current(range.len() as i64))
                        .await
                        .map_err(io)?;
                } else {
                    file.write_all(&chunk[range]).await.map_err(io)?;
                }
            }
        } else {
            file.write_all(&chunk).await.map_err(io)?;
        }
        written += chunk.len() as u64;
        progress
            .bytes
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    file.flush().await.map_err(io)?;
    let file = file.into_std().await;
    finish_holes(&file, written, sparse).map_err(io)?;
    let (node, path, restore_owner) = (node.clone(), local.to_path_buf(), options.restore_owner);
    let warnings = tokio::task::spawn_blocking(move || {
        apply_file_metadata(&file, &path, &node, restore_owner)
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))??;
    Ok((written, warnings))
}

/// Files up to this size are read into memory whole and written by one blocking task.
const SMALL_FILE_BYTES: u64 = 256 << 10;

/// [`restore_file`] for a small file: its chunks are fetched first, then one blocking
/// task replaces what is in the way, writes the file and applies its metadata. Most
/// files of a source tree are small, and each trip between the async runtime and the
/// blocking pool costs more than writing them.
async fn restore_small_file(
    repo: &Repository,
    node: &Node,
    content: &Content,
    local: &Path,
    options: &RestoreOptions,
    progress: &RestoreProgress,
) -> Result<(u64, Vec<String>)> {
    // Chunks are read one after the other, without a task each: files restored in
    // parallel keep the storage busy, and a small file has few chunks. Nothing is read
    // past the recorded size, by the index's lengths or by what came back.
    let object = file_object(local);
    check_recorded_size(repo, content, node.size, &object)?;
    let mut data = Vec::with_capacity(node.size as usize);
    let mut ids = DataIds::new(content);
    let mut announced = 0u64;
    while let Some(id) = ids.next(repo).await? {
        if let Some(location) = repo.locate(&id) {
            announced += u64::from(location.raw_len);
            if announced > node.size {
                return Err(size_mismatch(&object, node.size, announced, true));
            }
        }
        let chunk = repo.read_blob(&id, BlobType::Data).await?;
        let have = (data.len() + chunk.len()) as u64;
        if have > node.size {
            return Err(size_mismatch(&object, node.size, have, true));
        }
        data.extend_from_slice(&chunk);
    }
    if data.len() as u64 != node.size {
        return Err(size_mismatch(&object, node.size, data.len() as u64, false));
    }
    let size = node.size;
    let (node, local_path, options) = (node.clone(), local.to_path_buf(), options.clone());
    let (_, warnings) =
        tokio::task::spawn_blocking(move || write_whole_file(&local_path, &node, &data, &options))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
    progress.bytes.fetch_add(size, Ordering::Relaxed);
    progress.files.fetch_add(1, Ordering::Relaxed);
    Ok((size, warnings))
}

/// Where a restored file is being written, and how it gets its name once complete.
#[derive(Debug)]
struct Placement {
    /// The file's name in the target.
    path: PathBuf,
    /// The temporary name it is written under, when something stood at `path`.
    temp: Option<PathBuf>,
}

impl Placement {
    /// Give the complete file its name: a rename over whatever stood there (a rename
    /// replaces a symlink or a hard link as a name, never writing through it).
    fn commit(&self) -> Result<()> {
        let Some(temp) = &self.temp else {
            return Ok(());
        };
        std::fs::rename(temp, &self.path).map_err(|e| {
            self.abandon();
            Error::LocalIo {
                path: self.path.clone(),
                source: e,
            }
        })
    }

    /// Remove what was written, after a failure: the file never appears with bytes
    /// that are not the snapshot's, and what stood there before stays.
    fn abandon(&self) {
        let _ = std::fs::remove_file(self.temp.as_ref().unwrap_or(&self.path));
    }
}

/// Temporary names tried before giving up (each is new and random, so a clash means
/// someone is creating them on purpose).
const TEMP_NAME_TRIES: usize = 16;

/// Open a new file to write the restored file `local` into. The common case, nothing
/// there yet, is a single `open` with `O_EXCL` at `local`, which creates a new regular
/// file and never follows a link. Otherwise the file is written to a new temporary name
/// in the same directory and renamed over what is there once complete
/// ([`Placement::commit`]): a hard link or a symlink planted in the target is replaced,
/// never written through, and no existing inode is ever truncated, so swapping one in
/// between any two steps gains nothing. A directory in the way is an error.
fn create_for_restore(local: &Path) -> Result<(std::fs::File, Placement)> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e| Error::LocalIo {
        path: local.to_path_buf(),
        source: e,
    };
    let create = |path: &Path| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
    };
    match create(local) {
        Ok(file) => {
            return Ok((
                file,
                Placement {
                    path: local.to_path_buf(),
                    temp: None,
                },
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(e)),
    }
    if std::fs::symlink_metadata(local).is_ok_and(|m| m.is_dir()) {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "a directory stands where the snapshot has a file",
        )));
    }
    let dir = local.parent().unwrap_or(Path::new("."));
    let mut last = None;
    for _ in 0..TEMP_NAME_TRIES {
        let temp = dir.join(format!(".dprepo-restore-{:016x}", random_u64()));
        match create(&temp) {
            Ok(file) => {
                return Ok((
                    file,
                    Placement {
                        path: local.to_path_buf(),
                        temp: Some(temp),
                    },
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(io(e)),
        }
    }
    Err(io(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::AlreadyExists, "no temporary name")
    })))
}

fn random_u64() -> u64 {
    use chacha20poly1305::aead::{rand_core::RngCore, OsRng};
    OsRng.next_u64()
}

/// [`apply_metadata`] for a regular file through its open handle, after its content is
/// written: no path lookups, and no second `open` for the times.
fn apply_file_metadata(
    file: &std::fs::File,
    path: &Path,
    node: &Node,
    restore_owner: bool,
) -> Result<Vec<String>> {
    use std::os::unix::fs::PermissionsExt;
    let io = |e| Error::LocalIo {
        path: path.to_path_buf(),
        source: e,
    };
    let mut warnings = Vec::new();
    if restore_owner {
        // Before the mode: changing the owner clears set-user-ID and set-group-ID.
        let chowned = std::os::unix::fs::fchown(file, Some(node.uid), Some(node.gid));
        warnings.extend(owner_warning(path, chowned));
    }
    // After the owner (a change of owner drops security.capability), before the mode
    // (a read-only mode would forbid setting user.* attributes).
    if !node.extensions.is_empty() {
        warnings.extend(apply_xattrs_to_file(file, path, node)?);
    }
    file.set_permissions(std::fs::Permissions::from_mode(node.mode & 0o7777))
        .map_err(io)?;
    let mtime = filetime::FileTime::from_unix_time(node.mtime.sec, node.mtime.nsec);
    filetime::set_file_handle_times(file, Some(mtime), Some(mtime)).map_err(io)?;
    Ok(warnings)
}

/// The warning for a failed change of owner; none when it failed for lack of
/// privileges, the normal case of a restore by an unprivileged user.
fn owner_warning(path: &Path, chowned: std::io::Result<()>) -> Option<String> {
    match chowned {
        Err(e) if e.kind() != std::io::ErrorKind::PermissionDenied => {
            Some(format!("{}: cannot set owner: {e}", path.display()))
        }
        _ => None,
    }
}

/// Holes are made in blocks of this many bytes, aligned in the file: a file system
/// allocates whole blocks, so a shorter run of zeros saves nothing.
const HOLE_BLOCK: u64 = 4096;

/// Split `data`, which goes at file offset `at`, into runs of whole zero blocks and
/// runs of anything else: `(range in data, zero)`.
fn block_runs(data: &[u8], at: u64) -> Vec<(std::ops::Range<usize>, bool)> {
    let mut runs: Vec<(std::ops::Range<usize>, bool)> = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let block_end = ((at + pos as u64) / HOLE_BLOCK + 1) * HOLE_BLOCK - at;
        let end = (block_end as usize).min(data.len());
        // Only whole blocks become holes: a partial one at the file's end is written.
        let whole = (end - pos) as u64 == HOLE_BLOCK;
        let zero = whole && data[pos..end].iter().all(|b| *b == 0);
        match runs.last_mut() {
            Some((range, z)) if *z == zero => range.end = end,
            _ => runs.push((pos..end, zero)),
        }
        pos = end;
    }
    runs
}

/// Write `data` at the file's current position, which is offset `at`; with `sparse`,
/// whole zero blocks are skipped (left as holes of the new file).
fn write_at(file: &mut std::fs::File, data: &[u8], at: u64, sparse: bool) -> std::io::Result<()> {
    use std::io::Seek;
    if !sparse {
        return file.write_all(data);
    }
    for (range, zero) in block_runs(data, at) {
        if zero {
            file.seek(std::io::SeekFrom::Current(range.len() as i64))?;
        } else {
            file.write_all(&data[range])?;
        }
    }
    Ok(())
}

/// After a sparse write of `size` bytes, give the file its size: a hole at the end was
/// skipped, not written.
fn finish_holes(file: &std::fs::File, size: u64, sparse: bool) -> std::io::Result<()> {
    if sparse {
        file.set_len(size)?;
    }
    Ok(())
}

/// Create the FIFO or device node `node` at `local`, replacing a file or link in the
/// way, and apply its metadata. `None` for a socket, which is not recreated. A device
/// that cannot be created for lack of privileges is a warning, like an owner.
fn restore_special(
    local: &Path,
    special: Special,
    node: &Node,
    options: &RestoreOptions,
) -> Result<Option<Vec<String>>> {
    let io = |e| Error::LocalIo {
        path: local.to_path_buf(),
        source: e,
    };
    if special == Special::Socket {
        return Ok(None);
    }
    match std::fs::symlink_metadata(local) {
        Ok(m) if m.is_dir() => {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a directory stands where the snapshot has a special file",
            )))
        }
        Ok(_) => std::fs::remove_file(local).map_err(io)?,
        Err(_) => {}
    }
    match make_node(local, special) {
        Ok(()) => {}
        Err(e)
            if e.kind() == std::io::ErrorKind::PermissionDenied
                && matches!(special, Special::CharDevice(_) | Special::BlockDevice(_)) =>
        {
            return Ok(Some(vec![format!(
                "{}: device node not created: {e} (creating devices needs privileges)",
                local.display()
            )]))
        }
        Err(e) => return Err(io(e)),
    }
    apply_metadata(local, node, options.restore_owner).map(Some)
}

#[cfg(target_os = "linux")]
fn make_node(path: &Path, special: Special) -> std::io::Result<()> {
    use rustix::fs::{mknodat, FileType, Mode, CWD};
    let (file_type, dev) = match special {
        Special::Fifo => (FileType::Fifo, 0),
        Special::CharDevice(dev) => (FileType::CharacterDevice, dev),
        Special::BlockDevice(dev) => (FileType::BlockDevice, dev),
        Special::Socket => return Ok(()),
    };
    // Permission bits come after, with the rest of the metadata.
    Ok(mknodat(
        CWD,
        path,
        file_type,
        Mode::from_raw_mode(0o600),
        dev,
    )?)
}

#[cfg(not(target_os = "linux"))]
fn make_node(_: &Path, _: Special) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// Make `link` a hard link of the restored file `first`, replacing whatever stands at
/// `link` (through a temporary name and a rename, as for files).
fn restore_hard_link(first: &Path, link: &Path) -> Result<()> {
    let io = |e| Error::LocalIo {
        path: link.to_path_buf(),
        source: e,
    };
    match std::fs::hard_link(first, link) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(e)),
    }
    if std::fs::symlink_metadata(link).is_ok_and(|m| m.is_dir()) {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "a directory stands where the snapshot has a file",
        )));
    }
    let dir = link.parent().unwrap_or(Path::new("."));
    let temp = dir.join(format!(".dprepo-restore-{:016x}", random_u64()));
    std::fs::hard_link(first, &temp).map_err(io)?;
    std::fs::rename(&temp, link).map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        io(e)
    })
}

/// How errors about the content of the file restored at `path` name it.
fn file_object(path: &Path) -> String {
    format!("file {}", path.display())
}

/// Apply owner, mode and mtime of `node` to `path`. Returns warnings for what could not
/// be applied for lack of privileges.
fn apply_metadata(path: &Path, node: &Node, restore_owner: bool) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    let is_link = matches!(node.kind, NodeKind::Symlink(_));
    if restore_owner {
        let chowned = std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid));
        warnings.extend(owner_warning(path, chowned));
    }
    if !node.extensions.is_empty() {
        warnings.extend(apply_xattrs_at(path, node)?);
    }
    if !is_link {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(node.mode & 0o7777))
            .map_err(|e| Error::LocalIo {
                path: path.to_path_buf(),
                source: e,
            })?;
    }
    // By path, never following a symlink and never opening the entry (`set_file_times`
    // opens it, which blocks on a FIFO until a writer comes).
    let mtime = filetime::FileTime::from_unix_time(node.mtime.sec, node.mtime.nsec);
    filetime::set_symlink_file_times(path, mtime, mtime).map_err(|e| Error::LocalIo {
        path: path.to_path_buf(),
        source: e,
    })?;
    Ok(warnings)
}

/// Write the content of the file at `path` in snapshot tree `root` to `out`.
///
/// # Errors
/// [`Error::SnapshotPath`] if the path is missing or not a file; write errors; missing
/// or damaged repository objects.
pub async fn dump(
    repo: &Repository,
    root: &BlobId,
    path: &[u8],
    out: &mut (dyn std::io::Write + Send),
) -> Result<u64> {
    let display = String::from_utf8_lossy(path).into_owned();
    let node = repo
        .find_node(root, path)
        .await?
        .ok_or_else(|| Error::SnapshotPath {
            path: display.clone(),
            reason: "is the snapshot root (a directory); use restore".into(),
        })?;
    let NodeKind::File(content) = &node.kind else {
        return Err(Error::SnapshotPath {
            path: display,
            reason: format!("is a {}, not a file; use restore", node.kind.name()),
        });
    };
    // Never more than the node records: a forged chunk list must not stream without end.
    let object = format!("file {display}");
    check_recorded_size(repo, content, node.size, &object)?;
    let mut reader = ContentReader::new(repo, content, node.size, 8).named(object);
    let mut written = 0u64;
    while let Some(chunk) = reader.next_chunk().await? {
        out.write_all(&chunk).map_err(|e| Error::LocalIo {
            path: "<stdout>".into(),
            source: e,
        })?;
        written += chunk.len() as u64;
    }
    out.flush().map_err(|e| Error::LocalIo {
        path: "<stdout>".into(),
        source: e,
    })?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::{backup, BackupOptions, BackupProgress, BackupSource};

    /// `restore --verify` compares a restored file with the snapshot byte for byte: a
    /// copy that differs in one byte, is shorter or is longer is reported.
    #[tokio::test(flavor = "multi_thread")]
    async fn verify_file_finds_a_differing_short_or_long_copy() {
        let (_storage, repo) = crate::verify::tests::memory_repo().await;
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("f");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&src, &data).unwrap();
        let outcome = backup(
            &repo,
            BackupSource::Paths(vec![src.clone()]),
            BackupOptions::default(),
            Arc::new(BackupProgress::default()),
        )
        .await
        .unwrap();
        let node = repo
            .find_node(
                &outcome.snapshot.manifest.tree,
                src.to_str().unwrap().as_bytes(),
            )
            .await
            .unwrap()
            .unwrap();
        let copy = dir.path().join("copy");
        std::fs::write(&copy, &data).unwrap();
        verify_file(&repo, &copy, &node).await.unwrap();

        let mut changed = data.clone();
        changed[200_000] ^= 1;
        std::fs::write(&copy, &changed).unwrap();
        let e = verify_file(&repo, &copy, &node).await.unwrap_err();
        assert!(e.to_string().contains("at byte 200000"), "{e}");

        std::fs::write(&copy, &data[..1000]).unwrap();
        let e = verify_file(&repo, &copy, &node).await.unwrap_err();
        assert!(e.to_string().contains("at byte 1000"), "{e}");

        let mut longer = data.clone();
        longer.push(0);
        std::fs::write(&copy, &longer).unwrap();
        let e = verify_file(&repo, &copy, &node).await.unwrap_err();
        assert!(e.to_string().contains("longer"), "{e}");
    }
}
