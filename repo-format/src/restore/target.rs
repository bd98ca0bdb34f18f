//! What is already in the target: left alone, verified, counted (dry run) or deleted.

use super::*;

/// Whether `--overwrite` leaves what is at `local` (counted in the summary).
pub(super) fn leaves_existing(
    options: &RestoreOptions,
    node: &Node,
    local: &Path,
    summary: &mut RestoreSummary,
) -> bool {
    if options.overwrite == Overwrite::Always {
        return false;
    }
    let Ok(meta) = std::fs::symlink_metadata(local) else {
        return false;
    };
    use std::os::unix::fs::MetadataExt;
    let existing_mtime = (meta.mtime(), meta.mtime_nsec());
    let snapshot_mtime = (node.mtime.sec, i64::from(node.mtime.nsec));
    let leave = match options.overwrite {
        Overwrite::Always => false,
        Overwrite::Never => true,
        Overwrite::IfNewer => existing_mtime >= snapshot_mtime,
        Overwrite::IfChanged => {
            matches!(node.kind, NodeKind::File(_))
                && meta.is_file()
                && meta.len() == node.size
                && existing_mtime == snapshot_mtime
        }
    };
    if leave {
        summary.left_existing += 1;
    }
    leave
}

/// Read the restored file at `local` again and compare it, chunk by chunk, with the
/// content of `node` as the repository holds it (each chunk checked against its id
/// when decoded).
///
/// # Errors
/// [`Error::Corrupt`] naming the first differing byte, or a file of another length;
/// the file or a chunk cannot be read.
pub(super) async fn verify_file(repo: &Repository, local: &Path, node: &Node) -> Result<()> {
    use tokio::io::AsyncReadExt;
    let NodeKind::File(content) = &node.kind else {
        return Ok(());
    };
    let object = local.display().to_string();
    let io = |e| Error::LocalIo {
        path: local.to_path_buf(),
        source: e,
    };
    let mut file = tokio::io::BufReader::with_capacity(
        1 << 20,
        tokio::fs::File::open(local).await.map_err(io)?,
    );
    let mut reader = ContentReader::new(repo, content, node.size, 8).named(&object);
    let mut offset = 0u64;
    let mut buf = Vec::new();
    while let Some(chunk) = reader.next_chunk().await? {
        buf.resize(chunk.len(), 0);
        let mut got = 0;
        while got < buf.len() {
            match file.read(&mut buf[got..]).await.map_err(io)? {
                0 => break,
                n => got += n,
            }
        }
        if let Some(at) = buf[..got]
            .iter()
            .zip(&chunk)
            .position(|(a, b)| a != b)
            .or((got < chunk.len()).then_some(got))
        {
            return Err(Error::corrupt(
                object,
                format!(
                    "verify: the restored file differs from the snapshot at byte {}",
                    offset + at as u64
                ),
            ));
        }
        offset += chunk.len() as u64;
    }
    let mut extra = [0u8; 1];
    if file.read(&mut extra).await.map_err(io)? != 0 {
        return Err(Error::corrupt(
            object,
            format!("verify: the restored file is longer than the snapshot's {offset} bytes"),
        ));
    }
    Ok(())
}

/// Count a leaf a dry run would restore.
pub(super) fn count_dry_run(node: &Node, summary: &mut RestoreSummary) {
    match &node.kind {
        NodeKind::File(_) => {
            summary.files += 1;
            summary.bytes += node.size;
        }
        NodeKind::Symlink(_) => summary.symlinks += 1,
        NodeKind::Special(_) => summary.special_files += 1,
        NodeKind::Dir(_) => {}
    }
}

/// `--delete`: in each restored directory, remove the entries its tree does not hold
/// and the filter takes. A directory reached through a symlink is never listed: the
/// directories are visited parents first, and one that is not a real directory (a
/// symlink planted in the target, in a dry run still there) is skipped with all below
/// it, so nothing outside the target is touched. Removal does not follow symlinks
/// either (`remove_file` on a link removes the link).
pub(super) fn delete_extra(
    listed: &[(PathBuf, String, HashSet<Vec<u8>>)],
    options: &RestoreOptions,
    summary: &mut RestoreSummary,
) {
    let mut order: Vec<&(PathBuf, String, HashSet<Vec<u8>>)> = listed.iter().collect();
    order.sort_by_key(|(p, _, _)| p.components().count());
    let mut unsafe_dirs: Vec<&Path> = Vec::new();
    for (dir, prefix, names) in order {
        if unsafe_dirs.iter().any(|u| dir.starts_with(u)) {
            continue;
        }
        if !std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
            unsafe_dirs.push(dir);
            continue;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut extra: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| !names.contains(e.file_name().as_bytes()))
            .filter(|e| {
                let snap = format!("{prefix}/{}", e.file_name().to_string_lossy());
                options.filter.takes(Path::new(&snap))
            })
            .map(|e| e.path())
            .collect();
        extra.sort();
        for path in extra {
            let result = if options.dry_run {
                Ok(())
            } else {
                match std::fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
                    Ok(_) => std::fs::remove_file(&path),
                    Err(e) => Err(e),
                }
            };
            match result {
                Ok(()) => summary.deleted.push(path),
                Err(e) => summary.skip(
                    &path,
                    Error::LocalIo {
                        path: path.clone(),
                        source: e,
                    },
                ),
            }
        }
    }
}

/// Make `local` an empty-or-existing real directory. An existing symlink is replaced,
/// never followed: a link planted in the target must not redirect the restore. Called
/// on the walking task itself: a `mkdir` costs less than a trip to the blocking pool.
/// Returns whether a directory was there already.
pub(super) fn prepare_dir(local: &Path) -> Result<bool> {
    let io = |e| Error::LocalIo {
        path: local.to_path_buf(),
        source: e,
    };
    // The common case, nothing there yet, is one `mkdir`.
    match std::fs::create_dir(local) {
        Ok(()) => return Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(e)),
    }
    match std::fs::symlink_metadata(local) {
        Ok(m) if m.is_dir() => return Ok(true),
        Ok(m) if m.file_type().is_symlink() || m.is_file() => {
            std::fs::remove_file(local).map_err(io)?
        }
        Ok(_) => {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a directory",
            )))
        }
        Err(_) => {}
    }
    std::fs::create_dir(local).map_err(io)?;
    Ok(false)
}
