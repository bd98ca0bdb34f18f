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

mod dump;
mod file;
mod metadata;
mod reader;
mod small_files;
mod target;
#[cfg(test)]
mod tests;

pub use crate::data_ids::DataIds;
pub use dump::dump;
use file::{create_for_restore, random_u64, restore_leaf, restore_small_file};
use metadata::{
    apply_file_metadata, apply_metadata, block_runs, file_object, finish_holes, restore_hard_link,
    restore_special, write_at,
};
pub use reader::ContentReader;
use small_files::{
    spawn_group, wait_for_slot, write_whole_file, InFlight, GROUP_BYTES, GROUP_FILES,
};
use target::{count_dry_run, delete_extra, leaves_existing, prepare_dir, verify_file};

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
