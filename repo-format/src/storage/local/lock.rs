//! The per-directory lock that makes conditional writes atomic on a local file system,
//! with a bounded wait that names the holder.

use super::*;

/// An exclusive lock of one directory's conditional writes, and of overwrites and
/// deletes where conditional writes happen (module documentation); released when
/// dropped.
pub(super) struct DirLock {
    pub(super) _file: File,
}

/// The lock file of the directory `dir` (at or below `root`): `<root>/.tmp-locks/<dir>`,
/// with `/` as `+` (`+` alone for the root). Outside the directories it guards, it shows
/// in no listing of them; a name that two directories share only makes them share a
/// lock.
pub(super) fn lock_path(root: &Path, dir: &Path) -> PathBuf {
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
pub(super) fn open_lock_file(path: &Path, create: bool) -> io::Result<Option<File>> {
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
pub(super) const LOCK_POLL_MAX: Duration = Duration::from_millis(100);

/// Take the lock at `path`: always for an update (`create`), only where the file exists
/// for an overwrite or a delete. While another process or thread holds it, tries again
/// with growing pauses (1 ms up to [`LOCK_POLL_MAX`]) for up to `wait`, then fails with
/// [`io::ErrorKind::ResourceBusy`] naming the lock file and, where `/proc/locks` shows
/// it, the holder's PID. A holder that dies releases the lock (the kernel drops it with
/// its last descriptor).
pub(super) fn lock_dir(path: &Path, create: bool, wait: Duration) -> io::Result<Option<DirLock>> {
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
pub(super) fn lock_held_error(
    path: &Path,
    file: &File,
    waited: Duration,
    wait: Duration,
) -> io::Error {
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
pub(super) fn flock_holder(locks: &str, dev: u64, ino: u64) -> Option<u32> {
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
