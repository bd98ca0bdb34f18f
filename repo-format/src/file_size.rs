//! A file node's recorded size against what its content expands to.
//!
//! A tree node records a file's size, and its content lists the chunks (through chunk
//! lists, SPEC.md section 12) that hold the bytes. Both come from storage, so they can
//! disagree: through damage, or through a snapshot forged by someone holding the
//! password, whose node records 300 KB while its chunk lists repeat one chunk until they
//! expand to terabytes. Nothing may trust the lists to end: restore and dump check the
//! index's plaintext lengths of a file's chunks against the recorded size before they
//! write (`check_recorded_size`, here, for contents whose chunk ids are inline) and
//! while they write (`restore::ContentReader`, for every content), so they never write
//! more than the node records; verify totals every file with [`FileSizes`] and reports
//! the files whose chunks do not add up.

use crate::content::Content;
use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::repo::Repository;
use std::collections::HashMap;

/// The error for a file whose chunks hold `found` bytes (or more, if `at_least`) while
/// its node records `recorded`.
pub fn size_mismatch(object: &str, recorded: u64, found: u64, at_least: bool) -> Error {
    Error::corrupt(
        object,
        format!(
            "its node records {recorded} bytes but its chunks hold {}{found}",
            if at_least { "at least " } else { "" }
        ),
    )
}

/// Check, before anything is read or written, that the data chunks of a level-0
/// `content` add up to `recorded` bytes by the plaintext lengths the index gives them.
/// Deeper contents are checked as their chunk lists are read (`restore::ContentReader`).
/// A chunk the index does not know is not judged here: reading it fails on its own.
///
/// # Errors
/// [`Error::Corrupt`] naming `object` when the lengths add up to another size.
pub fn check_recorded_size(
    repo: &Repository,
    content: &Content,
    recorded: u64,
    object: &str,
) -> Result<()> {
    if content.level != 0 {
        return Ok(());
    }
    let mut total = 0u64;
    for location in repo.locate_many(&content.ids) {
        match location {
            Some(l) => total += u64::from(l.raw_len),
            None => return Ok(()),
        }
    }
    if total != recorded {
        return Err(size_mismatch(object, recorded, total, false));
    }
    Ok(())
}

/// Ids looked up per batched index read.
const IDS_PER_READ: usize = 512;

/// A problem found by [`FileSizes`]: (kind, object, detail), keyed by a blob id of the
/// file, as verify keys the problems it reports.
pub type SizeProblem = (BlobId, (crate::problem::ProblemKind, String, String));

/// Totals the plaintext lengths of every file's data chunks, as the index records them,
/// in batched index reads, and reports files whose total differs from their recorded
/// size. Feed it each file with [`FileSizes::file`] (or one at a time by hand:
/// [`FileSizes::start`], [`FileSizes::add`] for each data chunk id in order,
/// [`FileSizes::end`]); then [`FileSizes::finish`].
#[derive(Debug, Default)]
pub struct FileSizes {
    /// Files started and not yet judged, by slot.
    files: HashMap<u64, FileTotal>,
    next_slot: u64,
    /// Ids waiting for the next batched read, with the slot of their file.
    pending: Vec<(BlobId, u64)>,
    problems: Vec<SizeProblem>,
}

#[derive(Debug)]
struct FileTotal {
    /// The blob id a problem is reported under.
    key: BlobId,
    recorded: u64,
    total: u64,
    /// Ids still pending in a batch.
    pending: usize,
    /// A chunk not in the index, or chunk lists that could not all be read: not judged.
    unknown: bool,
    ended: bool,
}

impl FileSizes {
    /// Total the file whose node records `recorded` bytes and whose content is
    /// `content`, found in tree `tree`; its chunk lists, if any, are read here. A chunk
    /// list that cannot be read leaves the file unjudged (verify reports that apart).
    pub async fn file(
        &mut self,
        repo: &Repository,
        content: &Content,
        recorded: u64,
        tree: BlobId,
    ) {
        self.start(content, recorded, tree);
        if content.level == 0 {
            for id in &content.ids {
                self.add(repo, *id);
            }
            self.end(true);
            return;
        }
        let mut ids = crate::data_ids::DataIds::new(content);
        loop {
            match ids.next(repo).await {
                Ok(Some(id)) => self.add(repo, id),
                Ok(None) => return self.end(true),
                Err(_) => return self.end(false),
            }
        }
    }

    /// Start the file whose node records `recorded` bytes. Problems are reported under
    /// its content's first id, or `fallback` (e.g. its tree) for an empty content.
    pub fn start(&mut self, content: &Content, recorded: u64, fallback: BlobId) {
        self.next_slot += 1;
        self.files.insert(
            self.next_slot,
            FileTotal {
                key: content.ids.first().copied().unwrap_or(fallback),
                recorded,
                total: 0,
                pending: 0,
                unknown: false,
                ended: false,
            },
        );
    }

    /// The next data chunk id of the file started last.
    pub fn add(&mut self, repo: &Repository, id: BlobId) {
        let slot = self.next_slot;
        if let Some(file) = self.files.get_mut(&slot) {
            file.pending += 1;
            self.pending.push((id, slot));
        }
        if self.pending.len() >= IDS_PER_READ {
            self.look_up(repo);
        }
    }

    /// The file started last has no more chunks; `complete` is false when its chunk
    /// lists could not all be read (then it is not judged: that is reported apart).
    pub fn end(&mut self, complete: bool) {
        let slot = self.next_slot;
        if let Some(file) = self.files.get_mut(&slot) {
            file.ended = true;
            file.unknown |= !complete;
        }
        self.judge(slot);
    }

    /// Look up what is pending and return every problem found.
    pub fn finish(mut self, repo: &Repository) -> Vec<SizeProblem> {
        self.look_up(repo);
        self.problems
    }

    fn look_up(&mut self, repo: &Repository) {
        let pending = std::mem::take(&mut self.pending);
        let ids: Vec<BlobId> = pending.iter().map(|(id, _)| *id).collect();
        let mut touched = Vec::new();
        for ((_, slot), location) in pending.iter().zip(repo.locate_many(&ids)) {
            if let Some(file) = self.files.get_mut(slot) {
                file.pending -= 1;
                match location {
                    Some(l) => file.total += u64::from(l.raw_len),
                    None => file.unknown = true,
                }
                touched.push(*slot);
            }
        }
        touched.dedup();
        for slot in touched {
            self.judge(slot);
        }
    }

    /// Report the file in `slot` once it has ended and all its ids were looked up.
    fn judge(&mut self, slot: u64) {
        let done = self
            .files
            .get(&slot)
            .is_some_and(|f| f.ended && f.pending == 0);
        if !done {
            return;
        }
        let Some(file) = self.files.remove(&slot) else {
            return;
        };
        if file.unknown || file.total == file.recorded {
            return;
        }
        self.problems.push((
            file.key,
            (
                crate::problem::ProblemKind::FileSizeMismatch,
                format!("file content {}", file.key.short()),
                format!(
                    "its node records {} bytes but its chunks hold {} (restore and dump refuse it)",
                    file.recorded, file.total
                ),
            ),
        ));
    }
}
