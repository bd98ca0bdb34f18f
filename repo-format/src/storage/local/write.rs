//! Writing a file: through a temporary name, buffered or with direct I/O, made durable
//! before it is renamed into place.

use super::*;

/// Largest single `write` of an object's bytes. One `write` of a whole 16 MiB pack cost
/// the kernel 2-4 times the system time of the same bytes in 1 MiB writes on the
/// project machine (ext4 on a KVM guest; benches/NOTES.md, run of commit 9e17595): the
/// first backup of 1 GiB of random data went from 4.9-6.6 s to 1.8-2.8 s of system time.
pub(super) const WRITE_PIECE: usize = DIRECT_PIECE;

/// Objects at least this large are written with `O_DIRECT`, from the writer's memory to
/// the disk without a copy in the page cache: packs, which nothing reads back soon.
/// Filling fresh page-cache pages was most of the system time of a backup on the project
/// machine (a VM whose free pages go back to the host): `dd` wrote 1 GiB in 2.1-4.1 s
/// of system time buffered and 0.2-0.3 s direct (benches/NOTES.md, "Pack writes past the page
/// cache"). It also leaves the page cache to the applications being backed up.
pub(super) const DIRECT_WRITE_MIN: usize = 1 << 20;

/// Bounce buffers of direct writes (object bytes sit at arbitrary addresses; direct
/// writes need aligned memory), kept for the next write: at most one per concurrent
/// write of the eight kept.
#[cfg(target_os = "linux")]
static DIRECT_BUFFERS: AlignedBuffers = AlignedBuffers::new(8);

/// The write protocol proper: temp file, fsync, rename or link, fsync the directory.
#[allow(clippy::too_many_arguments)]
pub(super) fn write_via_temp(
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
pub(super) fn rewrite_options() -> OpenOptions {
    let mut options = private_file_options();
    options.create(true).truncate(true);
    options
}

/// Mode of the files the backend creates: only their owner reads them. Key files wrap
/// the master key, which another local user could take away to guess the password
/// offline; the rest shows sizes and counts (SPEC.md, "Threat model"). As restic.
pub(super) const FILE_MODE: u32 = 0o600;
/// Mode of the directories the backend creates.
pub(super) const DIR_MODE: u32 = 0o700;

/// Options opening a new file for writing with [`FILE_MODE`].
pub(super) fn private_file_options() -> OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = OpenOptions::new();
    options.write(true).mode(FILE_MODE);
    options
}

/// A builder of directories with [`DIR_MODE`].
pub(super) fn private_dir_builder() -> fs::DirBuilder {
    use std::os::unix::fs::DirBuilderExt;
    let mut builder = fs::DirBuilder::new();
    builder.mode(DIR_MODE);
    builder
}

/// Open `temp` with `options` and write `data` to it through the page cache.
pub(super) fn write_buffered(options: &OpenOptions, temp: &Path, data: &[u8]) -> io::Result<File> {
    let mut file = options.open(temp)?;
    for piece in data.chunks(WRITE_PIECE) {
        file.write_all(piece)?;
    }
    Ok(file)
}

/// Create `temp` for direct writes and write `data` to it in aligned pieces, the last
/// one padded with zeros and cut back by `set_len`.
#[cfg(target_os = "linux")]
pub(super) fn write_direct(temp: &Path, data: &[u8]) -> io::Result<File> {
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
pub(super) fn write_direct(_temp: &Path, _data: &[u8]) -> io::Result<File> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Write `data` at offset 0 of `file` through the aligned part of `bounce`, in pieces
/// of [`WRITE_PIECE`] (a multiple of [`DIRECT_ALIGN`]) and a last piece padded to it.
#[cfg(target_os = "linux")]
pub(super) fn write_pieces_aligned(file: &File, data: &[u8], bounce: &mut [u8]) -> io::Result<()> {
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
