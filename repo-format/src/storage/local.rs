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

/// An exclusive lock of one directory's conditional writes, and of overwrites and
/// deletes where conditional writes happen (module documentation); released when
/// dropped.
struct DirLock {
    _file: File,
}

/// The lock file of the directory `dir` (at or below `root`): `<root>/.tmp-locks/<dir>`,
/// with `/` as `+` (`+` alone for the root). Outside the directories it guards, it shows
/// in no listing of them; a name that two directories share only makes them share a
/// lock.
fn lock_path(root: &Path, dir: &Path) -> PathBuf {
    let relative = dir.strip_prefix(root).unwrap_or(dir);
    let key: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let key = if key.is_empty() {
        "+".to_owned()
    } else {
        key.join("+")
    };
    root.join(LOCK_DIR).join(key)
}

/// Open the lock file at `path`, creating it (and its directory) with `create`; `None`
/// if it does not exist and `create` is false.
fn open_lock_file(path: &Path, create: bool) -> io::Result<Option<File>> {
    if create {
        if let Some(parent) = path.parent() {
            private_dir_builder().recursive(true).create(parent)?;
        }
    }
    let opened = private_file_options()
        .read(true)
        .create(create)
        .truncate(false)
        .open(path);
    match opened {
        Ok(file) => Ok(Some(file)),
        Err(e) if !create && e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// How long a write waits for a directory's lock by default before it fails
/// ([`LocalStorage::set_lock_wait`]). Every holder only checks and renames or removes one
/// file, so a wait this long means the holder is stopped (SIGSTOP, a debugger, a hung NFS
/// client) rather than slow; without a bound, every writer of the directory would wait
/// as long as it stays stopped.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(60);

/// Longest pause between two tries of a held lock.
const LOCK_POLL_MAX: Duration = Duration::from_millis(100);

/// Take the lock at `path`: always for an update (`create`), only where the file exists
/// for an overwrite or a delete. While another process or thread holds it, tries again
/// with growing pauses (1 ms up to [`LOCK_POLL_MAX`]) for up to `wait`, then fails with
/// [`io::ErrorKind::ResourceBusy`] naming the lock file and, where `/proc/locks` shows
/// it, the holder's PID. A holder that dies releases the lock (the kernel drops it with
/// its last descriptor).
fn lock_dir(path: &Path, create: bool, wait: Duration) -> io::Result<Option<DirLock>> {
    let Some(file) = open_lock_file(path, create)? else {
        return Ok(None);
    };
    #[cfg(target_os = "linux")]
    {
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(e) if e == rustix::io::Errno::WOULDBLOCK => {}
                Err(e) if e == rustix::io::Errno::INTR => continue,
                Err(e) => return Err(e.into()),
            }
            let waited = start.elapsed();
            if waited >= wait {
                return Err(lock_held_error(path, &file, waited, wait));
            }
            std::thread::sleep(pause.min(wait - waited));
            pause = (pause * 2).min(LOCK_POLL_MAX);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = wait;
    Ok(Some(DirLock { _file: file }))
}

/// The error of a lock wait that ran out: names the lock file and, if `/proc/locks`
/// shows it, the process holding it.
#[cfg(target_os = "linux")]
fn lock_held_error(path: &Path, file: &File, waited: Duration, wait: Duration) -> io::Error {
    use std::os::unix::fs::MetadataExt;
    let holder = file
        .metadata()
        .ok()
        .and_then(|meta| {
            let locks = fs::read_to_string("/proc/locks").ok()?;
            flock_holder(&locks, meta.dev(), meta.ino())
        })
        .map_or_else(
            || "another process".to_owned(),
            |pid| {
                let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                match comm.trim() {
                    "" => format!("process {pid}"),
                    comm => format!("process {pid} ({comm})"),
                }
            },
        );
    io::Error::new(
        io::ErrorKind::ResourceBusy,
        format!(
            "lock file {} is held by {holder}: gave up after waiting {:.1} s (limit {:.1} s); \
             a process holding it for that long is stopped or hung (SIGSTOP, a debugger, \
             a hung NFS client): resume or end it, and writes of this directory go on",
            path.display(),
            waited.as_secs_f64(),
            wait.as_secs_f64(),
        ),
    )
}

/// The PID holding an `flock` on the file `(dev, ino)`, from the text of `/proc/locks`
/// (lines `1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`; waiters, marked `->`, are
/// skipped). `None` if no line matches or the PID is not visible (0 or -1).
#[cfg(target_os = "linux")]
fn flock_holder(locks: &str, dev: u64, ino: u64) -> Option<u32> {
    let file = format!(
        "{:02x}:{:02x}:{ino}",
        rustix::fs::major(dev),
        rustix::fs::minor(dev)
    );
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, "FLOCK", _, _, pid, id, ..] if *id == file => {
                pid.parse::<u32>().ok().filter(|&p| p > 0)
            }
            _ => None,
        }
    })
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

/// Largest single `write` of an object's bytes. One `write` of a whole 16 MiB pack cost
/// the kernel 2-4 times the system time of the same bytes in 1 MiB writes on the
/// project machine (ext4 on a KVM guest; BENCHMARKS.md, run of commit 9e17595): the
/// first backup of 1 GiB of random data went from 4.9-6.6 s to 1.8-2.8 s of system time.
const WRITE_PIECE: usize = DIRECT_PIECE;

/// Objects at least this large are written with `O_DIRECT`, from the writer's memory to
/// the disk without a copy in the page cache: packs, which nothing reads back soon.
/// Filling fresh page-cache pages was most of the system time of a backup on the project
/// machine (a VM whose free pages go back to the host): `dd` wrote 1 GiB in 2.1-4.1 s
/// of system time buffered and 0.2-0.3 s direct (BENCHMARKS.md, "Pack writes past the page
/// cache"). It also leaves the page cache to the applications being backed up.
pub(super) const DIRECT_WRITE_MIN: usize = 1 << 20;

/// Bounce buffers of direct writes (object bytes sit at arbitrary addresses; direct
/// writes need aligned memory), kept for the next write: at most one per concurrent
/// write of the eight kept.
#[cfg(target_os = "linux")]
static DIRECT_BUFFERS: AlignedBuffers = AlignedBuffers::new(8);

/// The write protocol proper: temp file, fsync, rename or link, fsync the directory.
#[allow(clippy::too_many_arguments)]
fn write_via_temp(
    name: &str,
    path: &Path,
    dir: &Path,
    temp: &Path,
    lock: &Path,
    data: &[u8],
    mode: PutMode,
    direct_refused: &AtomicBool,
    lock_wait: Duration,
) -> Result<Version> {
    let io_err = |e| storage_error(name, e);
    let direct = cfg!(target_os = "linux")
        && data.len() >= DIRECT_WRITE_MIN
        && !direct_refused.load(Ordering::Relaxed);
    let file = match direct.then(|| write_direct(temp, data)) {
        Some(Ok(file)) => file,
        Some(Err(_)) => {
            // The file system may take no direct writes (some FUSE file systems, tmpfs
            // before Linux 6.6, EINVAL or EOPNOTSUPP), or not at this alignment, or a
            // write came back short. The temporary file may exist by now: write it again,
            // buffered. Were the error the disk's, this write fails the same way.
            let file = write_buffered(&rewrite_options(), temp, data).map_err(io_err)?;
            direct_refused.store(true, Ordering::Relaxed);
            file
        }
        None => {
            write_buffered(private_file_options().create_new(true), temp, data).map_err(io_err)?
        }
    };
    file.set_modified(version_time(temp)).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    // Renaming and linking keep the inode and its modification time.
    let version = version_of(&file.metadata().map_err(io_err)?);
    drop(file);
    match mode {
        PutMode::Overwrite => {
            let _lock = lock_dir(lock, false, lock_wait).map_err(io_err)?;
            fs::rename(temp, path).map_err(io_err)?;
        }
        PutMode::Update(expected) => {
            let _lock = lock_dir(lock, true, lock_wait).map_err(io_err)?;
            match fs::metadata(path) {
                Ok(meta) if meta.is_file() && version_of(&meta) == expected => {}
                Ok(_) => return Err(Error::conflict(name)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::conflict(name)),
                Err(e) => return Err(io_err(e)),
            }
            fs::rename(temp, path).map_err(io_err)?;
        }
        PutMode::Create => {
            // Only created names are ever updated: with the lock file in place before
            // the name exists, every delete of the name locks (module documentation).
            open_lock_file(lock, true).map_err(io_err)?;
            fs::hard_link(temp, path).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    Error::AlreadyExists {
                        object: name.to_owned(),
                    }
                } else {
                    storage_error(name, e)
                }
            })?;
            // The blob is in place; failing here would make a retry report
            // AlreadyExists for our own write, so a stale temp file is the lesser evil.
            let _ = fs::remove_file(temp);
        }
    }
    sync_dir(dir).map_err(io_err)?;
    Ok(version)
}

/// Options opening a temporary file that a refused direct write may have created and
/// partly written, emptied.
fn rewrite_options() -> OpenOptions {
    let mut options = private_file_options();
    options.create(true).truncate(true);
    options
}

/// Mode of the files the backend creates: only their owner reads them. Key files wrap
/// the master key, which another local user could take away to guess the password
/// offline; the rest shows sizes and counts (SPEC.md, "Threat model"). As restic.
const FILE_MODE: u32 = 0o600;
/// Mode of the directories the backend creates.
const DIR_MODE: u32 = 0o700;

/// Options opening a new file for writing with [`FILE_MODE`].
fn private_file_options() -> OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = OpenOptions::new();
    options.write(true).mode(FILE_MODE);
    options
}

/// A builder of directories with [`DIR_MODE`].
fn private_dir_builder() -> fs::DirBuilder {
    use std::os::unix::fs::DirBuilderExt;
    let mut builder = fs::DirBuilder::new();
    builder.mode(DIR_MODE);
    builder
}

/// Open `temp` with `options` and write `data` to it through the page cache.
fn write_buffered(options: &OpenOptions, temp: &Path, data: &[u8]) -> io::Result<File> {
    let mut file = options.open(temp)?;
    for piece in data.chunks(WRITE_PIECE) {
        file.write_all(piece)?;
    }
    Ok(file)
}

/// Create `temp` for direct writes and write `data` to it in aligned pieces, the last
/// one padded with zeros and cut back by `set_len`.
#[cfg(target_os = "linux")]
fn write_direct(temp: &Path, data: &[u8]) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = private_file_options()
        .create_new(true)
        .custom_flags(libc::O_DIRECT)
        .open(temp)?;
    let mut bounce = DIRECT_BUFFERS.take();
    let result = write_pieces_aligned(&file, data, &mut bounce);
    DIRECT_BUFFERS.give_back(bounce);
    result?;
    file.set_len(data.len() as u64)?;
    Ok(file)
}

#[cfg(not(target_os = "linux"))]
fn write_direct(_temp: &Path, _data: &[u8]) -> io::Result<File> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Write `data` at offset 0 of `file` through the aligned part of `bounce`, in pieces
/// of [`WRITE_PIECE`] (a multiple of [`DIRECT_ALIGN`]) and a last piece padded to it.
#[cfg(target_os = "linux")]
fn write_pieces_aligned(file: &File, data: &[u8], bounce: &mut [u8]) -> io::Result<()> {
    let start = aligned_start(bounce);
    let aligned = &mut bounce[start..start + WRITE_PIECE];
    let mut offset = 0u64;
    for piece in data.chunks(WRITE_PIECE) {
        let padded = piece.len().next_multiple_of(DIRECT_ALIGN);
        aligned[..piece.len()].copy_from_slice(piece);
        aligned[piece.len()..padded].fill(0);
        file.write_all_at(&aligned[..padded], offset)?;
        offset += piece.len() as u64;
    }
    Ok(())
}

fn read_range_blocking(
    name: &str,
    path: &Path,
    offset: u64,
    len: u64,
    mut buf: Vec<u8>,
) -> Result<Vec<u8>> {
    let (file, size) = open_blob(name, path)?;
    let past_end = || {
        Error::corrupt(
            name,
            format!(
                "range of {len} bytes at offset {offset} extends past the end of the blob ({size} bytes)"
            ),
        )
    };
    match offset.checked_add(len) {
        Some(end) if end <= size => {}
        _ => return Err(past_end()),
    }
    // Bounded by the file size just checked, never by the untrusted `len` alone.
    let len_usize = usize::try_from(len).map_err(|_| {
        Error::InvalidArgument(format!(
            "range of {len} bytes of {name} does not fit in memory"
        ))
    })?;
    buf.clear();
    buf.resize(len_usize, 0);
    file.read_exact_at(&mut buf, offset).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            // Truncated between the size check and the read.
            past_end()
        } else {
            storage_error(name, e)
        }
    })?;
    Ok(buf)
}

/// Files below `prefix`; `sizes` false leaves every size 0 and skips the `stat` of
/// regular files.
fn list_blocking(root: &Path, prefix: &str, sizes: bool) -> Result<Vec<BlobInfo>> {
    let (dir_part, _) = split_prefix(prefix);
    let mut start = root.to_path_buf();
    start.extend(dir_part.split('/').filter(|c| !c.is_empty()));
    let mut found = Vec::new();
    // (directory path, its name relative to the root with a trailing '/', depth)
    let mut stack = vec![(start, dir_part.to_owned(), dir_part.matches('/').count())];
    while let Some((dir, rel, depth)) = stack.pop() {
        let object = if rel.is_empty() { "/" } else { rel.as_str() };
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            // Missing (or deleted meanwhile), or a file where the prefix implies a
            // directory: nothing below it.
            Err(e) if e.kind() == io::ErrorKind::NotFound || !dir.is_dir() => continue,
            Err(e) => return Err(storage_error(object, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| storage_error(object, e))?;
            let Ok(file_name) = entry.file_name().into_string() else {
                continue; // not UTF-8, so not a blob name
            };
            if file_name.starts_with(TEMP_PREFIX) {
                continue;
            }
            let full = format!("{rel}{file_name}");
            let file_type = entry.file_type().map_err(|e| storage_error(&full, e))?;
            if !sizes && file_type.is_file() {
                if full.starts_with(prefix) && validate_name(&full).is_ok() {
                    found.push(BlobInfo {
                        name: full,
                        size: 0,
                    });
                }
                continue;
            }
            let meta = if file_type.is_symlink() {
                fs::metadata(entry.path())
            } else {
                entry.metadata()
            };
            let meta = match meta {
                Ok(meta) => meta,
                // Deleted since read_dir, or a dangling symlink.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(storage_error(&full, e)),
            };
            if meta.is_dir() {
                let sub = format!("{full}/");
                let may_match = sub.starts_with(prefix) || prefix.starts_with(&sub);
                if may_match && depth < MAX_LIST_DEPTH {
                    stack.push((entry.path(), sub, depth + 1));
                }
            } else if meta.is_file() && full.starts_with(prefix) && validate_name(&full).is_ok() {
                found.push(BlobInfo {
                    name: full,
                    size: meta.len(),
                });
            }
        }
    }
    Ok(found)
}

/// Every temporary file below `root` (not following symlinks), with its age.
fn list_temporary_blocking(root: &Path) -> Result<Vec<TemporaryFile>> {
    let mut found = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new(), 0usize)];
    while let Some((dir, rel, depth)) = stack.pop() {
        let object = if rel.is_empty() { "/" } else { rel.as_str() };
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(storage_error(object, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| storage_error(object, e))?;
            let Ok(file_name) = entry.file_name().into_string() else {
                continue;
            };
            let full = format!("{rel}{file_name}");
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(storage_error(&full, e)),
            };
            if meta.is_dir() && depth == 0 && file_name == LOCK_DIR {
                continue; // lock files, not temporary files
            } else if meta.is_dir() && depth < MAX_LIST_DEPTH {
                stack.push((entry.path(), format!("{full}/"), depth + 1));
            } else if meta.is_file() && file_name.starts_with(TEMP_PREFIX) {
                found.push(TemporaryFile {
                    name: full.clone(),
                    size: meta.len(),
                    modified: meta.modified().map_err(|e| storage_error(&full, e))?,
                });
            }
        }
    }
    Ok(found)
}

/// Check that `name` names a temporary file: a valid blob name for its directory part,
/// and a last component starting with [`TEMP_PREFIX`].
fn validate_temporary_name(name: &str) -> Result<()> {
    let (dir, file) = match name.rsplit_once('/') {
        Some((dir, file)) => (Some(dir), file),
        None => (None, name),
    };
    let valid_file = file.starts_with(TEMP_PREFIX) && !file.contains(['\\', '\0']);
    if !valid_file || dir.is_some_and(|d| validate_name(d).is_err()) {
        return Err(Error::InvalidArgument(format!(
            "{name:?} is not the name of a temporary file"
        )));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Temporary files anywhere below the root are listed with their size and age and
    /// can be deleted by that name; nothing else can be deleted through it.
    #[tokio::test]
    async fn temporary_files_are_listed_and_deleted_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path());
        storage.put("data/ab/abcd", b"pack").await.unwrap();
        fs::write(dir.path().join("data/ab/.tmp-1-2-3"), b"partial").unwrap();
        fs::write(dir.path().join(".tmp-4-5-6"), b"").unwrap();
        let mut found = storage.list_temporary().await.unwrap();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        let names: Vec<(&str, u64)> = found.iter().map(|t| (t.name.as_str(), t.size)).collect();
        assert_eq!(names, [(".tmp-4-5-6", 0), ("data/ab/.tmp-1-2-3", 7)]);
        for bad in [
            "data/ab/abcd",
            "../x/.tmp-1",
            "data/../.tmp-1",
            ".tmp-1/../data/ab/abcd",
        ] {
            assert!(
                matches!(
                    storage.delete_temporary(bad).await,
                    Err(Error::InvalidArgument(_))
                ),
                "{bad}"
            );
        }
        storage
            .delete_temporary("data/ab/.tmp-1-2-3")
            .await
            .unwrap();
        storage
            .delete_temporary("data/ab/.tmp-1-2-3")
            .await
            .unwrap();
        assert_eq!(storage.list_temporary().await.unwrap().len(), 1);
        assert_eq!(storage.get("data/ab/abcd").await.unwrap(), b"pack");
    }

    /// The lock files that creates leave for updates are neither blobs nor temporary
    /// files, and sit outside the directories they guard.
    #[tokio::test]
    async fn lock_files_are_neither_listed_nor_collected() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path());
        storage.put("data/ab/abcd", b"pack").await.unwrap();
        storage.create("sessions/s1", b"marker").await.unwrap();
        storage.create("config", b"config").await.unwrap();
        let locks = dir.path().join(LOCK_DIR);
        let mut made: Vec<String> = fs::read_dir(&locks)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        made.sort();
        assert_eq!(made, ["+", "sessions"]);
        assert_eq!(
            fs::read_dir(dir.path().join("sessions")).unwrap().count(),
            1
        );
        assert_eq!(
            storage.list_names("sessions/").await.unwrap(),
            ["sessions/s1"]
        );
        assert_eq!(storage.list("").await.unwrap().len(), 3);
        assert!(storage.list_temporary().await.unwrap().is_empty());
        assert!(matches!(
            storage.get(&format!("{LOCK_DIR}/sessions")).await,
            Err(Error::InvalidArgument(_))
        ));
    }

    /// A writer stopped while holding a directory's lock (SIGSTOP, a hung NFS client)
    /// made every other writer of the directory wait for as long as it stayed stopped:
    /// a backup waited 8 minutes behind a stopped copy. The wait is bounded now and
    /// fails naming the lock file and the holder; once released, writes go on.
    #[tokio::test]
    async fn a_stalled_lock_holder_fails_writers_within_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path());
        let v1 = storage
            .put_opts("sessions/s1", Bytes::from_static(b"one"), PutMode::Create)
            .await
            .unwrap();
        let lock = dir.path().join(LOCK_DIR).join("sessions");
        // Another open file description of the lock file conflicts like another
        // process would; /proc/locks shows this process as the holder.
        let holder = File::open(&lock).unwrap();
        rustix::fs::flock(&holder, rustix::fs::FlockOperation::LockExclusive).unwrap();
        let bound = Duration::from_millis(300);
        storage.set_lock_wait(bound);

        let start = Instant::now();
        let err = storage
            .put_opts(
                "sessions/s1",
                Bytes::from_static(b"two"),
                PutMode::Update(v1.clone()),
            )
            .await
            .unwrap_err();
        let waited = start.elapsed();
        assert!(waited >= bound, "gave up after {waited:?}");
        assert!(waited < Duration::from_secs(10), "waited {waited:?}");
        let Error::Storage { object, source } = &err else {
            panic!("{err}");
        };
        assert_eq!(object, "sessions/s1");
        assert_eq!(source.kind(), io::ErrorKind::ResourceBusy, "{err}");
        let message = err.to_string();
        assert!(message.contains(&lock.display().to_string()), "{message}");
        assert!(
            message.contains(&format!("held by process {}", std::process::id())),
            "{message}"
        );
        // Deletes and overwrites of the directory wait on the same lock.
        let err = storage.delete("sessions/s1").await.unwrap_err();
        assert!(err.to_string().contains("is held by process"), "{err}");
        let err = storage.put("sessions/s1", b"three").await.unwrap_err();
        assert!(err.to_string().contains("is held by process"), "{err}");
        assert_eq!(storage.get("sessions/s1").await.unwrap(), b"one");

        // A holder that lets go within the bound is waited for.
        storage.set_lock_wait(Duration::from_secs(30));
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(holder);
        });
        let v2 = storage
            .put_opts(
                "sessions/s1",
                Bytes::from_static(b"two"),
                PutMode::Update(v1),
            )
            .await
            .unwrap();
        release.join().unwrap();
        assert_eq!(storage.get("sessions/s1").await.unwrap(), b"two");
        storage.delete("sessions/s1").await.unwrap();
        assert!(storage
            .put_opts("sessions/s1", Bytes::from_static(b"x"), PutMode::Update(v2))
            .await
            .is_err());
    }

    /// `/proc/locks` lines are matched by device and inode; waiters and other lock
    /// kinds are not holders.
    #[test]
    fn flock_holders_are_read_from_proc_locks() {
        let dev = rustix::fs::makedev(8, 1);
        let locks = "1: POSIX  ADVISORY  WRITE 10 08:01:77 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 4321 08:01:77 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 99 08:01:77 0 EOF\n\
                     3: FLOCK  ADVISORY  WRITE 55 08:02:77 0 EOF\n";
        assert_eq!(flock_holder(locks, dev, 77), Some(4321));
        assert_eq!(flock_holder(locks, dev, 78), None);
        assert_eq!(flock_holder(locks, rustix::fs::makedev(8, 2), 77), Some(55));
        assert_eq!(
            flock_holder("3: FLOCK  ADVISORY  WRITE -1 08:01:77 0 EOF", dev, 77),
            None
        );
    }

    /// When the direct write fails (here at its exclusive open: a temporary file is in
    /// the way, holding more than the object, as a refused direct write may leave it),
    /// the object is written again buffered over whatever is there, lands whole, and
    /// later writes go buffered.
    #[test]
    fn a_failed_direct_write_is_redone_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let temp = dir.path().join(".tmp-left");
        let path = dir.path().join("pack");
        fs::write(&temp, vec![7u8; 5 * DIRECT_ALIGN + DIRECT_WRITE_MIN]).unwrap();
        let data = crate::fuzzing::pseudo_random_bytes(3, DIRECT_WRITE_MIN + 5000);
        let refused = AtomicBool::new(false);
        write_via_temp(
            "pack",
            &path,
            dir.path(),
            &temp,
            &dir.path().join(LOCK_DIR).join("+"),
            &data,
            PutMode::Overwrite,
            &refused,
            DEFAULT_LOCK_WAIT,
        )
        .unwrap();
        assert!(fs::read(&path).unwrap() == data, "the object differs");
        assert!(!temp.exists());
        assert!(
            refused.load(Ordering::Relaxed),
            "later writes still try direct"
        );
    }
}
