//! Applying metadata, holes, special files and hard links to restored entries.

use super::*;

/// [`apply_metadata`] for a regular file through its open handle, after its content is
/// written: no path lookups, and no second `open` for the times.
pub(super) fn apply_file_metadata(
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
pub(super) fn block_runs(data: &[u8], at: u64) -> Vec<(std::ops::Range<usize>, bool)> {
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
pub(super) fn write_at(
    file: &mut std::fs::File,
    data: &[u8],
    at: u64,
    sparse: bool,
) -> std::io::Result<()> {
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
pub(super) fn finish_holes(file: &std::fs::File, size: u64, sparse: bool) -> std::io::Result<()> {
    if sparse {
        file.set_len(size)?;
    }
    Ok(())
}

/// Create the FIFO or device node `node` at `local`, replacing a file or link in the
/// way, and apply its metadata. `None` for a socket, which is not recreated. A device
/// that cannot be created for lack of privileges is a warning, like an owner.
pub(super) fn restore_special(
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
pub(super) fn restore_hard_link(first: &Path, link: &Path) -> Result<()> {
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
pub(super) fn file_object(path: &Path) -> String {
    format!("file {}", path.display())
}

/// Apply owner, mode and mtime of `node` to `path`. Returns warnings for what could not
/// be applied for lack of privileges.
pub(super) fn apply_metadata(path: &Path, node: &Node, restore_owner: bool) -> Result<Vec<String>> {
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
