//! Which earlier datasafed file a push is stored against (its page deltas' parent).
//!
//! Backup scripts give every backup a new path, so "the previous backup of the same
//! database" has to be recognised by the shape of the path. The layouts in use:
//!
//! - KubeBlocks: `<root>/<backup name>/<target relative path>/<backup name>.tar.zst`
//!   (`DATASAFED_BACKEND_BASE_PATH` is the backup's directory plus the target's relative
//!   path; the script pushes `/<backup name>.<ext>`). The previous backup is the newest
//!   file whose path differs only in that one directory and whose name is that directory's
//!   name plus the same suffix.
//! - a directory per backup with a fixed file name: `/ns/pg/<backup>/base.tar`;
//! - a file per backup in one directory: `/pg/<backup>.tar`.
//!
//! The rule is README's "Which earlier backup a push is stored against"; it only decides
//! how much a push stores, never what is restored.

use dprepo_repo_format::BlobId;

use crate::ds_files::{EntryRef, Kind};

/// How well `candidate` fits as the previous backup of `path` (higher is better).
fn rank(path: &str, candidate: &str) -> Option<u8> {
    let ours: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let theirs: Vec<&str> = candidate.split('/').filter(|c| !c.is_empty()).collect();
    let (Some((name, dirs)), Some((their_name, their_dirs))) =
        (ours.split_last(), theirs.split_last())
    else {
        return None;
    };
    if dirs.len() != their_dirs.len() {
        return None;
    }
    let differing: Vec<usize> = (0..dirs.len())
        .filter(|&i| dirs[i] != their_dirs[i])
        .collect();
    match differing.as_slice() {
        // The same directory: the same path pushed again, else a file per backup.
        [] if name == their_name => Some(2),
        [] => (extension(name).is_some() && extension(name) == extension(their_name)).then_some(1),
        // A directory per backup, named in the file name (KubeBlocks' layout).
        [i] if suffix_after(name, dirs[*i]).is_some()
            && suffix_after(name, dirs[*i]) == suffix_after(their_name, their_dirs[*i]) =>
        {
            Some(3)
        }
        // A directory per backup holding a file of a fixed name.
        [i] if *i + 1 == dirs.len() && name == their_name => Some(2),
        _ => None,
    }
}

/// Everything after the first dot of a file name (`tar.zst`).
fn extension(name: &str) -> Option<&str> {
    name.split_once('.').map(|(_, e)| e)
}

/// `name` is `stem` plus a `.suffix`: the suffix.
fn suffix_after<'a>(name: &'a str, stem: &str) -> Option<&'a str> {
    name.strip_prefix(stem)?.strip_prefix('.')
}

/// The snapshot a push to `path` takes its parent from: the newest file of the best
/// rank among those offered.
pub(crate) struct ParentPick<'p> {
    path: &'p str,
    best: Option<(u8, chrono::DateTime<chrono::Utc>, BlobId)>,
}

impl<'p> ParentPick<'p> {
    /// No candidate yet.
    pub(crate) fn new(path: &'p str) -> ParentPick<'p> {
        ParentPick { path, best: None }
    }

    /// Consider `e`.
    pub(crate) fn offer(&mut self, e: &EntryRef<'_>) {
        if e.kind != Kind::File {
            return;
        }
        if let Some(r) = rank(self.path, e.path) {
            self.best = self.best.max(Some((r, e.time, e.id)));
        }
    }

    /// The chosen parent.
    pub(crate) fn id(&self) -> Option<BlobId> {
        self.best.map(|(_, _, id)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::rank;

    #[test]
    fn kubeblocks_layout_finds_the_previous_backup_of_the_same_target() {
        let ours = "/repo/ns/pg-policy/pg-backup-2/postgresql/pg-backup-2.tar.zst";
        let previous = "/repo/ns/pg-policy/pg-backup-1/postgresql/pg-backup-1.tar.zst";
        assert_eq!(rank(ours, previous), Some(3));
        // Without a target relative path.
        assert_eq!(rank("/r/b-2/b-2.tar.zst", "/r/b-1/b-1.tar.zst"), Some(3));
        // Another target, another extension, another policy: not the same database.
        for other in [
            "/repo/ns/pg-policy/pg-backup-1/other/pg-backup-1.tar.zst",
            "/repo/ns/pg-policy/pg-backup-1/postgresql/pg-backup-1.tar.gz",
            "/repo/ns/other-policy/pg-backup-1/postgresql/pg-backup-1.tar.zst",
            "/repo/ns/pg-policy/pg-backup-1/postgresql/wal/000000010000000000000001.zst",
        ] {
            assert_eq!(rank(ours, other), None, "{other}");
        }
    }

    #[test]
    fn the_older_layouts_keep_their_rules() {
        assert_eq!(rank("/ns/pg/b-2/base.tar", "/ns/pg/b-1/base.tar"), Some(2));
        assert_eq!(rank("/pg/b-2.tar", "/pg/b-2.tar"), Some(2));
        assert_eq!(rank("/pg/b-2.tar", "/pg/b-1.tar"), Some(1));
        assert_eq!(rank("/pg/b-2.tar", "/pg/b-1.tar.zst"), None);
        assert_eq!(rank("/pg/b-2", "/pg/b-1"), None);
        // A fixed name two directories up is someone else's file.
        assert_eq!(rank("/a/x/b-2/base.tar", "/b/x/b-2/base.tar"), None);
    }
}
