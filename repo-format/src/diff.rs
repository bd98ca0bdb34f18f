//! Differences between two snapshots' trees (`dprepo diff`): entries added, removed,
//! modified (content or type), or changed in metadata only.
//!
//! Both trees are walked together by name; a subtree whose id is the same on both
//! sides is identical (trees are content-addressed) and is skipped without loading.
//! File contents are compared by their chunk lists, never by reading data.

use crate::error::Result;
use crate::id::BlobId;
use crate::repo::Repository;
use crate::tree::{Node, NodeKind};

/// How an entry differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Only in the second snapshot.
    Added,
    /// Only in the first snapshot.
    Removed,
    /// In both, with other content (files), target (symlinks) or device.
    Modified,
    /// In both, of another type (a file became a directory ...).
    TypeChanged,
    /// In both, same content, other mode, owner, times or extended metadata.
    Metadata,
}

impl ChangeKind {
    /// restic's one-letter marker: `+`, `-`, `M`, `T`, `U`.
    pub fn marker(self) -> char {
        match self {
            ChangeKind::Added => '+',
            ChangeKind::Removed => '-',
            ChangeKind::Modified => 'M',
            ChangeKind::TypeChanged => 'T',
            ChangeKind::Metadata => 'U',
        }
    }
}

/// One difference.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// Path in the snapshot (`/`-rooted); directories end in `/`.
    pub path: String,
    /// How it differs.
    pub kind: ChangeKind,
    /// Node type after the change (before, for removals): `file`, `dir` ...
    #[serde(rename = "type")]
    pub node_type: &'static str,
    /// Size in the first snapshot (absent when added).
    pub size_before: Option<u64>,
    /// Size in the second snapshot (absent when removed).
    pub size_after: Option<u64>,
}

/// Totals of a diff. Entries inside an added or removed directory are counted, and
/// their file bytes summed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DiffStats {
    /// Files (and other non-directories) added.
    pub files_added: u64,
    /// Files removed.
    pub files_removed: u64,
    /// Files modified or of another type.
    pub files_modified: u64,
    /// Entries whose metadata alone changed.
    pub metadata_changed: u64,
    /// Directories added.
    pub dirs_added: u64,
    /// Directories removed.
    pub dirs_removed: u64,
    /// Bytes of added files, and the new size of modified ones.
    pub bytes_added: u64,
    /// Bytes of removed files, and the old size of modified ones.
    pub bytes_removed: u64,
    /// Subtrees skipped because both sides had the same tree id.
    pub identical_subtrees_skipped: u64,
}

/// The differences between trees `before` and `after`, in path order, and totals.
///
/// # Errors
/// A tree that cannot be loaded or decoded.
pub async fn diff_trees(
    repo: &Repository,
    before: &BlobId,
    after: &BlobId,
) -> Result<(Vec<Change>, DiffStats)> {
    let mut changes = Vec::new();
    let mut stats = DiffStats::default();
    // Directory pairs still to compare (depth first, path order).
    let mut stack = vec![(String::from("/"), Some(*before), Some(*after))];
    while let Some((prefix, a, b)) = stack.pop() {
        if a == b {
            if a.is_some() {
                stats.identical_subtrees_skipped += 1;
            }
            continue;
        }
        let a_nodes = match a {
            Some(id) => repo.load_tree(&id).await?.nodes,
            None => Vec::new(),
        };
        let b_nodes = match b {
            Some(id) => repo.load_tree(&id).await?.nodes,
            None => Vec::new(),
        };
        let mut pending = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < a_nodes.len() || j < b_nodes.len() {
            let order = match (a_nodes.get(i), b_nodes.get(j)) {
                (Some(x), Some(y)) => x.name.cmp(&y.name),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            let (x, y) = match order {
                std::cmp::Ordering::Less => {
                    i += 1;
                    (a_nodes.get(i - 1), None)
                }
                std::cmp::Ordering::Greater => {
                    j += 1;
                    (None, b_nodes.get(j - 1))
                }
                std::cmp::Ordering::Equal => {
                    i += 1;
                    j += 1;
                    (a_nodes.get(i - 1), b_nodes.get(j - 1))
                }
            };
            let name =
                String::from_utf8_lossy(&x.or(y).map(|n| n.name.clone()).unwrap_or_default())
                    .into_owned();
            let path = format!("{prefix}{name}");
            compare(&path, x, y, &mut changes, &mut stats, &mut pending);
        }
        // Pushed in reverse so the stack pops them in name order.
        stack.extend(pending.into_iter().rev());
    }
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((changes, stats))
}

fn dir_id(n: &Node) -> Option<BlobId> {
    match n.kind {
        NodeKind::Dir(id) => Some(id),
        _ => None,
    }
}

fn display_path(path: &str, n: &Node) -> String {
    if dir_id(n).is_some() {
        format!("{path}/")
    } else {
        path.to_string()
    }
}

fn compare(
    path: &str,
    before: Option<&Node>,
    after: Option<&Node>,
    changes: &mut Vec<Change>,
    stats: &mut DiffStats,
    pending: &mut Vec<(String, Option<BlobId>, Option<BlobId>)>,
) {
    let file_size = |n: &Node| if dir_id(n).is_some() { 0 } else { n.size };
    match (before, after) {
        (None, Some(b)) => {
            changes.push(Change {
                path: display_path(path, b),
                kind: ChangeKind::Added,
                node_type: b.kind.name(),
                size_before: None,
                size_after: Some(b.size),
            });
            match dir_id(b) {
                Some(id) => {
                    stats.dirs_added += 1;
                    pending.push((format!("{path}/"), None, Some(id)));
                }
                None => {
                    stats.files_added += 1;
                    stats.bytes_added += file_size(b);
                }
            }
        }
        (Some(a), None) => {
            changes.push(Change {
                path: display_path(path, a),
                kind: ChangeKind::Removed,
                node_type: a.kind.name(),
                size_before: Some(a.size),
                size_after: None,
            });
            match dir_id(a) {
                Some(id) => {
                    stats.dirs_removed += 1;
                    pending.push((format!("{path}/"), Some(id), None));
                }
                None => {
                    stats.files_removed += 1;
                    stats.bytes_removed += file_size(a);
                }
            }
        }
        (Some(a), Some(b)) => {
            let same_type = std::mem::discriminant(&a.kind) == std::mem::discriminant(&b.kind);
            let kind = if !same_type {
                Some(ChangeKind::TypeChanged)
            } else if dir_id(a).is_none() && a.kind != b.kind {
                Some(ChangeKind::Modified)
            } else if a.mode != b.mode
                || a.uid != b.uid
                || a.gid != b.gid
                || a.mtime != b.mtime
                || a.extensions != b.extensions
            {
                Some(ChangeKind::Metadata)
            } else {
                None
            };
            if let Some(kind) = kind {
                changes.push(Change {
                    path: display_path(path, b),
                    kind,
                    node_type: b.kind.name(),
                    size_before: Some(a.size),
                    size_after: Some(b.size),
                });
                match kind {
                    ChangeKind::Metadata => stats.metadata_changed += 1,
                    _ => {
                        stats.files_modified += 1;
                        stats.bytes_added += file_size(b);
                        stats.bytes_removed += file_size(a);
                    }
                }
            }
            match (dir_id(a), dir_id(b)) {
                (Some(x), Some(y)) => pending.push((format!("{path}/"), Some(x), Some(y))),
                (Some(x), None) => pending.push((format!("{path}/"), Some(x), None)),
                (None, Some(y)) => pending.push((format!("{path}/"), None, Some(y))),
                (None, None) => {}
            }
        }
        (None, None) => {}
    }
}
