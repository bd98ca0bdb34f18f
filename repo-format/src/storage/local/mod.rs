//! [`LocalStorage`]: blobs as files below a root directory.
//!
//! The blob name `a/b/c` is the file `<root>/a/b/c`. Invariants this module keeps:
//! - A blob file only ever appears complete: data is written to a temporary file in the
//!   target's directory (named `.tmp-<pid>-<counter>-<nanos>`), fsynced, then moved into
//!   place with `rename` (overwrite, update) or `hard_link` (create, which fails if the
//!   target exists and is therefore an atomic create-if-absent).
//! - Conditional writes ([`PutMode::Update`]): the version of a file is its identity
//!   (inode number, size, modification time to the nanosecond), and every write gives
//!   the new file a modification time whose nanoseconds are drawn from the write's
//!   unique temporary name, so two writes of one name within one clock tick, even onto
//!   a reused inode number, differ in version but by a chance of one in 10^9. An update
//!   compares the version and renames under an exclusive `flock` of the directory's lock
//!   file `<root>/.tmp-locks/<dir>` (below a reserved name, so never listed, and not a
//!   temporary file: [`Storage::list_temporary`] skips it). A create makes the lock file before the name
//!   exists, and overwrites and deletes take the lock wherever the file exists, so none
//!   of them slips between an update's check and its rename: only created names are
//!   ever updated, so a delete of one (which callers issue after reading it) always
//!   finds the lock file. Directories of content-addressed files never get one. The lock
//!   is atomic among processes of one host; on
//!   NFS it maps to NFS byte-range locks (Linux clients), so it holds across hosts only
//!   where the server supports locking. Processes of dprepo versions before this lock
//!   do not take it. Holders keep it only to check and rename or remove one file, so
//!   waiting for it is bounded ([`DEFAULT_LOCK_WAIT`], [`LocalStorage::set_lock_wait`]):
//!   a holder that is stopped (SIGSTOP, a hung NFS client) fails the other writers of
//!   that directory with an error naming the lock file and the holder's PID instead of
//!   stalling them; a holder that dies releases it.
//! - A write returns `Ok` only after the file, its directory entry and the entries of
//!   every directory on the way from the root have been fsynced.
//! - Temporary files are never listed, and names that could escape the root or collide
//!   with temporary files are rejected before touching the file system.
//! - Objects of [`DIRECT_WRITE_MIN`] bytes or more (packs) are written past the page
//!   cache (`O_DIRECT`) where the file system takes it, with buffered writes otherwise.
//! - Files it creates are readable by their owner only (0600) and directories, the root
//!   included, usable by their owner only (0700), less what the umask takes away.
//!   Existing files and directories keep their modes.
//!
//! Every blocking file system call runs on tokio's blocking pool (`spawn_blocking`).

use super::name::{split_prefix, validate_name, validate_prefix, LOCK_DIR, TEMP_PREFIX};
use super::{BlobInfo, BlobMeta, Bytes, PutMode, Storage, TemporaryFile, Version, Versioned};
use crate::direct_io::DIRECT_PIECE;
#[cfg(target_os = "linux")]
use crate::direct_io::{aligned_start, AlignedBuffers, DIRECT_ALIGN};
use crate::error::{Error, Result};
use crate::free_space::{format_bytes, free_space, is_out_of_space};
use async_trait::async_trait;
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod lock;
mod read;
#[cfg(test)]
mod tests;
mod write;

pub use lock::DEFAULT_LOCK_WAIT;
use lock::*;
use read::*;
use write::*;

/// How deep `list` descends below the root. Repository names have at most three
/// components; the limit only stops symlink loops from being walked forever.
const MAX_LIST_DEPTH: usize = 32;

/// Distinguishes temporary files created by one process within the same nanosecond.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A [`Storage`] backend keeping each blob as a file below a root directory.
///
/// Cloning is cheap and clones share state. The root and any missing directories below
/// it are created on the first write. Concurrent use from several processes is safe:
/// every write goes through a uniquely named temporary file and an atomic rename or
/// link.
///
/// Caveats: the file system must support hard links (`create` fails with
/// [`Error::Storage`] otherwise) and must honour `fsync` for durability. Deleting a blob
/// does not remove directories that become empty.
#[derive(Clone)]
pub struct LocalStorage {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    /// Directories (at or below the root) that exist and whose own directory entry this
    /// process has fsynced in their parent. Checking this instead of just "exists" closes
    /// the race where another writer created the directory but has not synced it yet.
    synced_dirs: Mutex<HashSet<PathBuf>>,
    /// Set once the file system refused a direct write: later writes go buffered.
    direct_refused: AtomicBool,
    /// How long a write or delete waits for a directory's lock, in milliseconds
    /// ([`DEFAULT_LOCK_WAIT`], [`LocalStorage::set_lock_wait`]).
    lock_wait_ms: AtomicU64,
}

impl std::fmt::Debug for LocalStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStorage")
            .field("root", &self.inner.root)
            .finish()
    }
}

impl LocalStorage {
    /// A backend rooted at `root`. Nothing is touched until the first operation, so a
    /// missing root only shows up as [`Error::NotFound`] on reads or an empty listing.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStorage {
            inner: Arc::new(Inner {
                root: root.into(),
                synced_dirs: Mutex::new(HashSet::new()),
                direct_refused: AtomicBool::new(false),
                lock_wait_ms: AtomicU64::new(DEFAULT_LOCK_WAIT.as_millis() as u64),
            }),
        }
    }

    /// Whether a direct write was refused, so writes go buffered now.
    #[cfg(test)]
    pub(crate) fn direct_writes_refused(&self) -> bool {
        self.inner.direct_refused.load(Ordering::Relaxed)
    }

    /// [`LocalStorage::new`] as after the file system refused a direct write.
    #[cfg(test)]
    pub(crate) fn without_direct_writes(root: impl Into<PathBuf>) -> Self {
        let storage = LocalStorage::new(root);
        storage.inner.direct_refused.store(true, Ordering::Relaxed);
        storage
    }

    /// How long a conditional write, overwrite or delete waits for its directory's lock
    /// (module documentation) before it fails with a storage error of kind
    /// [`io::ErrorKind::ResourceBusy`] naming the lock file and its holder; shared by
    /// clones. [`DEFAULT_LOCK_WAIT`] unless set.
    pub fn set_lock_wait(&self, wait: Duration) {
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        self.inner.lock_wait_ms.store(ms, Ordering::Relaxed);
    }

    /// The root directory holding the blobs.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The file path of a (validated) blob name.
    fn path_of(&self, name: &str) -> Result<PathBuf> {
        validate_name(name)?;
        let mut path = self.inner.root.clone();
        path.extend(name.split('/'));
        Ok(path)
    }

    /// Write `data` from the blocking pool.
    async fn write(&self, name: &str, data: Bytes, mode: PutMode) -> Result<Version> {
        let path = self.path_of(name)?;
        let inner = Arc::clone(&self.inner);
        let owned_name = name.to_owned();
        let size = data.len();
        self.run_blocking_sized(name, Some(size), move || {
            inner.write_blocking(&owned_name, &path, &data, mode)
        })
        .await
    }

    /// Run `f` on the blocking pool, its storage errors explained ([`explain`]); a
    /// panicked or cancelled task becomes [`Error::Internal`] naming `object`.
    async fn run_blocking<T, F>(&self, object: &str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        self.run_blocking_sized(object, None, f).await
    }

    /// [`LocalStorage::run_blocking`] of a write of `writing` bytes.
    async fn run_blocking_sized<T, F>(
        &self,
        object: &str,
        writing: Option<usize>,
        f: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        let root = self.inner.root.clone();
        tokio::task::spawn_blocking(move || f().map_err(|e| explain(&root, e, writing)))
            .await
            .map_err(|e| Error::Internal(format!("storage task for {object} failed: {e}")))?
    }
}

/// Say what an OS error alone does not. A repository location that is not a directory
/// (or lies below a file) fails every name below it with "Not a directory", which read
/// as `storage config: Not a directory`: it becomes [`Error::InvalidArgument`] naming
/// the location and the file in the way. A full file system (or quota) is named, with
/// the size of the write (`writing`, when known) and the space there is.
fn explain(root: &Path, e: Error, writing: Option<usize>) -> Error {
    let Error::Storage { object, source } = e else {
        return e;
    };
    if is_out_of_space(&source) {
        let size = writing.map_or(String::new(), |n| {
            format!(" writing {}", format_bytes(n as u64))
        });
        // Measured after the partial file was removed.
        let detail = match free_space(root) {
            Some(space) => format!(
                "{source}{size} below {}, on a file system with {} free of {}",
                root.display(),
                format_bytes(space.available),
                format_bytes(space.total)
            ),
            None => format!("{source}{size} below {}", root.display()),
        };
        return Error::Storage {
            object,
            source: io::Error::new(source.kind(), detail),
        };
    }
    let in_the_way = root
        .ancestors()
        .filter(|p| !p.as_os_str().is_empty())
        .find(|p| fs::metadata(p).is_ok_and(|m| !m.is_dir()));
    match in_the_way {
        Some(file) if file == root => Error::InvalidArgument(format!(
            "repository location {} is a file, not a directory",
            root.display()
        )),
        Some(file) => Error::InvalidArgument(format!(
            "repository location {}: {} is a file, not a directory",
            root.display(),
            file.display()
        )),
        None => Error::Storage { object, source },
    }
}

/// Map an error of a read: a missing file is [`Error::NotFound`], anything else
/// [`Error::Storage`].
fn read_error(name: &str, source: io::Error) -> Error {
    if source.kind() == io::ErrorKind::NotFound {
        Error::not_found(name)
    } else {
        Error::Storage {
            object: name.to_owned(),
            source,
        }
    }
}

fn storage_error(name: &str, source: io::Error) -> Error {
    Error::Storage {
        object: name.to_owned(),
        source,
    }
}

/// A fresh temporary file name, unique across processes (pid), threads (counter) and
/// restarts of a process with a reused pid (nanoseconds).
fn temp_name() -> String {
    let counter = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{TEMP_PREFIX}{}-{counter}-{nanos}", std::process::id())
}

/// Make the entries of `dir` durable (new, renamed or removed files in it).
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        match File::open(dir).and_then(|d| d.sync_all()) {
            Ok(()) => Ok(()),
            // Some file systems (network mounts, some FUSE) cannot fsync a directory;
            // they give no stronger guarantee to ask for, as restic also concludes.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
    #[cfg(not(unix))]
    {
        // Directories cannot be opened for syncing here; NTFS journals metadata.
        let _ = dir;
        Ok(())
    }
}

/// Open a blob for reading and return it with its metadata. A directory at the blob's
/// path is not a blob and reads as [`Error::NotFound`].
fn open_blob_meta(name: &str, path: &Path) -> Result<(File, fs::Metadata)> {
    let file = File::open(path).map_err(|e| read_error(name, e))?;
    let meta = file.metadata().map_err(|e| storage_error(name, e))?;
    if !meta.is_file() {
        return Err(Error::not_found(name));
    }
    Ok((file, meta))
}

/// [`open_blob_meta`] with only the size.
fn open_blob(name: &str, path: &Path) -> Result<(File, u64)> {
    open_blob_meta(name, path).map(|(file, meta)| (file, meta.len()))
}

/// The version of the file `meta` describes (module documentation): files are never
/// changed in place, so the identity of the file is the identity of its content.
fn version_of(meta: &fs::Metadata) -> Version {
    use std::os::unix::fs::MetadataExt;
    Version::new(format!(
        "{:x}.{:x}.{}.{:09}",
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec()
    ))
}

/// The modification time a write gives its file: now, to the second, with nanoseconds
/// drawn from the temporary file's name (unique per write), so that versions of two
/// writes in one clock tick differ.
fn version_time(temp: &Path) -> SystemTime {
    let hash = blake3::hash(temp.as_os_str().as_encoded_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    let nanos = (u64::from_le_bytes(first) % 1_000_000_000) as u32;
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    UNIX_EPOCH + std::time::Duration::new(secs, nanos)
}

impl Inner {
    /// [`LocalStorage::set_lock_wait`].
    fn lock_wait(&self) -> Duration {
        Duration::from_millis(self.lock_wait_ms.load(Ordering::Relaxed))
    }

    /// Make sure `dir` (the root or a directory below it) exists and that its entry is
    /// durable in its parent, creating and syncing directories from the root down.
    fn ensure_dir(&self, dir: &Path) -> io::Result<()> {
        if self
            .synced_dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(dir)
        {
            return Ok(());
        }
        if dir == self.root || dir.parent().is_none() {
            // The root: create it (and its ancestors) if missing. An existing root was
            // made by the user or by `init` in an earlier run, so its entry is durable.
            if !dir.is_dir() {
                private_dir_builder().recursive(true).create(dir)?;
                if let Some(parent) = dir.parent() {
                    sync_dir(parent)?;
                }
            }
        } else {
            let parent = dir.parent().unwrap_or(Path::new(""));
            self.ensure_dir(parent)?;
            match private_dir_builder().create(dir) {
                Ok(()) => {}
                // Made by someone else (another writer, or an earlier run): it may not
                // be synced yet, so sync the parent below regardless.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            sync_dir(parent)?;
        }
        self.synced_dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dir.to_path_buf());
        Ok(())
    }

    fn write_blocking(
        &self,
        name: &str,
        path: &Path,
        data: &[u8],
        mode: PutMode,
    ) -> Result<Version> {
        if mode == PutMode::Create && fs::symlink_metadata(path).is_ok() {
            // Cheap early answer; the hard link below is the authoritative check.
            return Err(Error::AlreadyExists {
                object: name.to_owned(),
            });
        }
        let dir = path.parent().unwrap_or(Path::new(""));
        self.ensure_dir(dir).map_err(|e| storage_error(name, e))?;
        let temp = dir.join(temp_name());
        let lock = lock_path(&self.root, dir);
        let result = write_via_temp(
            name,
            path,
            dir,
            &temp,
            &lock,
            data,
            mode,
            &self.direct_refused,
            self.lock_wait(),
        );
        if result.is_err() {
            // Best effort: a leftover temporary file is never listed, only wastes space.
            let _ = fs::remove_file(&temp);
        }
        result
    }
}

#[async_trait]
impl Storage for LocalStorage {
    fn location(&self) -> String {
        self.inner.root.display().to_string()
    }

    /// Writes through a temporary file renamed over `name` (linked, for a create), so
    /// an existing blob is replaced atomically.
    async fn put_opts(&self, name: &str, data: Bytes, mode: PutMode) -> Result<Version> {
        self.write(name, data, mode).await
    }

    async fn get_versioned(&self, name: &str) -> Result<Versioned> {
        let path = self.path_of(name)?;
        let owned_name = name.to_owned();
        self.run_blocking(name, move || {
            let (mut file, meta) = open_blob_meta(&owned_name, &path)?;
            let mut data = Vec::new();
            file.read_to_end(&mut data)
                .map_err(|e| storage_error(&owned_name, e))?;
            Ok(Versioned {
                data,
                version: version_of(&meta),
            })
        })
        .await
    }

    async fn modified(&self, name: &str) -> Result<Option<SystemTime>> {
        let path = self.path_of(name)?;
        let owned_name = name.to_owned();
        self.run_blocking(name, move || {
            let meta = fs::metadata(&path).map_err(|e| read_error(&owned_name, e))?;
            if !meta.is_file() {
                return Err(Error::not_found(owned_name));
            }
            let modified = meta.modified().map_err(|e| read_error(&owned_name, e))?;
            Ok(Some(modified))
        })
        .await
    }

    async fn head(&self, name: &str) -> Result<BlobMeta> {
        let path = self.path_of(name)?;
        let owned_name = name.to_owned();
        self.run_blocking(name, move || {
            let meta = fs::metadata(&path).map_err(|e| read_error(&owned_name, e))?;
            if meta.is_file() {
                Ok(BlobMeta {
                    size: meta.len(),
                    version: version_of(&meta),
                })
            } else {
                Err(Error::not_found(owned_name))
            }
        })
        .await
    }

    async fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.get_range_into(name, offset, len, Vec::new()).await
    }

    async fn get_range_into(
        &self,
        name: &str,
        offset: u64,
        len: u64,
        buf: Vec<u8>,
    ) -> Result<Vec<u8>> {
        let path = self.path_of(name)?;
        let owned_name = name.to_owned();
        self.run_blocking(name, move || {
            read_range_blocking(&owned_name, &path, offset, len, buf)
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<BlobInfo>> {
        validate_prefix(prefix)?;
        let root = self.inner.root.clone();
        let owned_prefix = prefix.to_owned();
        self.run_blocking(prefix, move || list_blocking(&root, &owned_prefix, true))
            .await
    }

    /// Without a `stat` of each regular file: the directory entry's type says what it is.
    async fn list_names(&self, prefix: &str) -> Result<Vec<String>> {
        validate_prefix(prefix)?;
        let root = self.inner.root.clone();
        let owned_prefix = prefix.to_owned();
        let found = self
            .run_blocking(prefix, move || list_blocking(&root, &owned_prefix, false))
            .await?;
        Ok(found.into_iter().map(|b| b.name).collect())
    }

    async fn list_temporary(&self) -> Result<Vec<TemporaryFile>> {
        let root = self.inner.root.clone();
        self.run_blocking("temporary files", move || list_temporary_blocking(&root))
            .await
    }

    async fn delete_temporary(&self, name: &str) -> Result<()> {
        validate_temporary_name(name)?;
        let mut path = self.inner.root.clone();
        path.extend(name.split('/'));
        let owned_name = name.to_owned();
        self.run_blocking(name, move || match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(storage_error(&owned_name, e)),
        })
        .await
    }

    /// Removes the file under the directory's lock (so it is ordered with updates) and
    /// fsyncs its directory, so a deletion is not undone by a crash (garbage collection
    /// relies on deletes staying in the order they were made).
    async fn delete(&self, name: &str) -> Result<()> {
        let path = self.path_of(name)?;
        let owned_name = name.to_owned();
        let root = self.inner.root.clone();
        let wait = self.inner.lock_wait();
        self.run_blocking(name, move || {
            let dir = path.parent().unwrap_or(Path::new(""));
            let _lock = lock_dir(&lock_path(&root, dir), false, wait)
                .map_err(|e| storage_error(&owned_name, e))?;
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(storage_error(&owned_name, e)),
            }
            sync_dir(path.parent().unwrap_or(Path::new("")))
                .map_err(|e| storage_error(&owned_name, e))
        })
        .await
    }
}
