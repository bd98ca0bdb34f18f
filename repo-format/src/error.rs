//! The public error of the engine.
//!
//! Callers act on the kind of failure, not on messages: `NotFound`, `AlreadyExists`,
//! `Corrupt`, `UnsupportedVersion` and `WrongKey` stay distinct variants, and
//! [`Error::is_transient`] says whether retrying the same operation can help.

use std::path::PathBuf;

/// Result alias used across the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every failure the engine reports. Variants name the object they concern.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A blob or object that was asked for does not exist in storage.
    #[error("{object} not found")]
    NotFound {
        /// The storage name or description of the missing object.
        object: String,
    },
    /// A create-if-absent write found the name already taken.
    #[error("{object} already exists")]
    AlreadyExists {
        /// The storage name that was taken.
        object: String,
    },
    /// A conditional write ([`PutMode::Update`](crate::storage::PutMode::Update)) found
    /// the name changed since the version it names was read, or removed: someone else
    /// wrote or deleted it first. Read it again and decide anew.
    #[error("{object} was changed or removed by another process since it was read")]
    Conflict {
        /// The storage name concerned.
        object: String,
    },
    /// Bytes read from storage do not form a valid structure.
    #[error("{object} is corrupt: {reason}")]
    Corrupt {
        /// What was being decoded (a blob name, a chunk id ...).
        object: String,
        /// What was wrong with it.
        reason: String,
    },
    /// A structure carries a version this build cannot read.
    #[error("{object} has format version {found}, this dprepo reads up to version {supported}; upgrade dprepo")]
    UnsupportedVersion {
        /// The structure carrying the version.
        object: String,
        /// The version found.
        found: u32,
        /// The highest version this build supports.
        supported: u32,
    },
    /// A structure uses a feature this build does not implement and must not ignore.
    #[error("{object} uses {feature}, which this dprepo does not support; upgrade dprepo")]
    UnsupportedFeature {
        /// The structure.
        object: String,
        /// The feature it uses.
        feature: String,
    },
    /// No key blob of the repository opens with the given password.
    #[error("wrong password: no key in the repository matches it")]
    WrongKey,
    /// The key file an access key names is not in the repository: the key was revoked
    /// (its key file deleted), or it was made for another repository.
    #[error("access key {key} is not in this repository's keys/: it was revoked, or it belongs to another repository")]
    KeyRevoked {
        /// The short id of the key file the access key names.
        key: String,
    },
    /// The key opens a master key of a generation that `dprepo key rotate` replaced
    /// (SPEC.md section 5.1): it no longer opens the repository.
    #[error("key {key} opens master key generation {generation}, which `dprepo key rotate` replaced by generation {newest}: it no longer opens the repository; use a key made after the rotation")]
    KeyRetired {
        /// The key file's name.
        key: String,
        /// The generation it opens.
        generation: u32,
        /// The newest generation listed.
        newest: u32,
    },
    /// The repository location holds no repository.
    #[error("no repository at {location} (create one with `dprepo init`)")]
    NoRepository {
        /// The repository location as given.
        location: String,
    },
    /// A repository already exists where `init` was asked to create one.
    #[error("a repository already exists at {location}")]
    RepositoryExists {
        /// The repository location as given.
        location: String,
    },
    /// A snapshot selector matched no snapshot, or more than one.
    #[error("snapshot {selector}: {reason}")]
    Snapshot {
        /// The id, prefix or `latest` as given.
        selector: String,
        /// Why it could not be resolved.
        reason: String,
    },
    /// A path inside a snapshot does not exist or has the wrong kind.
    #[error("path {path} in snapshot: {reason}")]
    SnapshotPath {
        /// The path as given.
        path: String,
        /// Why it could not be used.
        reason: String,
    },
    /// Local file system I/O on the backup source or restore target failed.
    #[error("{}: {source}", path.display())]
    LocalIo {
        /// The local path concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Storage backend I/O failed.
    #[error("storage {object}: {source}")]
    Storage {
        /// The storage name concerned.
        object: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The local index cache cannot be used: its file system lacks the room, or RocksDB
    /// failed to open, read or write it. The cache is derived data: loading the index
    /// falls back to a temporary cache, then to memory ([`crate::Repository::load_index`]).
    #[error("index cache {}: {reason}", path.display())]
    IndexCache {
        /// The cache's database directory (or the directory it was to be made in).
        path: PathBuf,
        /// What failed.
        reason: String,
        /// Whether it failed for want of room on its file system, where a fresh cache
        /// would fail too.
        full: bool,
    },
    /// A writer's session marker was removed by garbage collection (its heartbeat went
    /// stale while the writer stalled), or replaced: the writer must not commit, since
    /// gc may have deleted packs it references. Nothing was committed; running the
    /// backup again is safe.
    #[error("writer session {session} was removed by garbage collection (no heartbeat for too long); nothing was committed, run the backup again")]
    SessionRemoved {
        /// The marker's storage name (`sessions/<hex>`).
        session: String,
    },
    /// A snapshot cannot be walked to the end: a tree it references cannot be loaded,
    /// or a blob it references is in no index file. gc refuses to run over it (it could
    /// delete data the snapshot still needs); `verify` and `repair` recover.
    #[error("snapshot {snapshot} {reason}; gc will not run: {remedy}")]
    SnapshotUnwalkable {
        /// The snapshot's short id.
        snapshot: String,
        /// What stops the walk.
        reason: String,
        /// The commands that recover.
        remedy: String,
    },
    /// Another process holds what this operation needs (the gc lease).
    #[error("{object} is busy: {reason}")]
    Busy {
        /// What is held.
        object: String,
        /// Who holds it and until when.
        reason: String,
    },
    /// An argument given to the engine is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A background task of the engine ended abnormally.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Build a [`Error::Corrupt`] for `object`.
    pub fn corrupt(object: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            object: object.into(),
            reason: reason.into(),
        }
    }

    /// Build a [`Error::Conflict`] for `object`.
    pub fn conflict(object: impl Into<String>) -> Self {
        Error::Conflict {
            object: object.into(),
        }
    }

    /// Build a [`Error::NotFound`] for `object`.
    pub fn not_found(object: impl Into<String>) -> Self {
        Error::NotFound {
            object: object.into(),
        }
    }

    /// Whether retrying the same operation may succeed (network hiccups, throttling,
    /// interrupted I/O). Corruption, missing objects and wrong keys never are.
    pub fn is_transient(&self) -> bool {
        use std::io::ErrorKind::*;
        match self {
            Error::Storage { source, .. } | Error::LocalIo { source, .. } => matches!(
                source.kind(),
                Interrupted
                    | TimedOut
                    | WouldBlock
                    | ConnectionReset
                    | ConnectionAborted
                    | BrokenPipe
            ),
            _ => false,
        }
    }
}
