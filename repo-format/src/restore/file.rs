//! Restoring one leaf (file or symlink) and placing it where no planted link can redirect it.

use super::*;

pub(super) async fn restore_leaf(
    repo: &Repository,
    node: &Node,
    dir: &Path,
    options: &RestoreOptions,
    progress: &Arc<RestoreProgress>,
    in_flight: &mut InFlight,
    summary: &mut RestoreSummary,
) -> Result<()> {
    let InFlight {
        tasks: files,
        group,
        hard_links,
    } = in_flight;
    let local = dir.join(OsStr::from_bytes(&node.name));
    match &node.kind {
        NodeKind::Symlink(target) => match restore_symlink(&local, target, node, options) {
            Ok(warnings) => {
                summary.symlinks += 1;
                summary.warnings.extend(warnings);
            }
            Err(e) => summary.skip(&local, e),
        },
        NodeKind::File(content) => {
            // The second and later names of a hard-linked inode are linked to the first
            // once it is written (after every file task).
            if hard_link_count(node).is_some() {
                let key = (node.device, node.inode);
                if let Some(first) = hard_links.first.get(&key) {
                    hard_links.later.push((first.clone(), local));
                    return Ok(());
                }
                hard_links.first.insert(key, local.clone());
            }
            if node.size <= SMALL_FILE_BYTES && content.level == 0 {
                group.bytes += node.size;
                group.files.push((local, node.clone()));
                if group.bytes >= GROUP_BYTES || group.files.len() >= GROUP_FILES {
                    spawn_group(repo, options, progress, files, group, summary).await?;
                }
                return Ok(());
            }
            wait_for_slot(options, files, summary).await?;
            let (repo, node, options, progress) = (
                repo.clone(),
                node.clone(),
                options.clone(),
                progress.clone(),
            );
            files.spawn(async move {
                let result = restore_file(&repo, &node, &local, &options, &progress).await;
                TaskOutcome::of_file(&local, result)
            });
        }
        NodeKind::Special(special) => match restore_special(&local, *special, node, options) {
            Ok(Some(warnings)) => {
                summary.special_files += 1;
                summary.warnings.extend(warnings);
            }
            Ok(None) => {}
            Err(e) => summary.skip(&local, e),
        },
        NodeKind::Dir(_) => {}
    }
    Ok(())
}

/// Replace whatever is at `local` with a symlink to `target` (never following a link
/// that is there), and apply the metadata of `node`.
fn restore_symlink(
    local: &Path,
    target: &[u8],
    node: &Node,
    options: &RestoreOptions,
) -> Result<Vec<String>> {
    let io = |e| Error::LocalIo {
        path: local.to_path_buf(),
        source: e,
    };
    if std::fs::symlink_metadata(local).is_ok() {
        std::fs::remove_file(local).map_err(io)?;
    }
    std::os::unix::fs::symlink(OsStr::from_bytes(target), local).map_err(io)?;
    apply_metadata(local, node, options.restore_owner)
}

async fn restore_file(
    repo: &Repository,
    node: &Node,
    local: &Path,
    options: &RestoreOptions,
    progress: &RestoreProgress,
) -> Result<(u64, Vec<String>)> {
    let NodeKind::File(content) = &node.kind else {
        return Ok((0, Vec::new()));
    };
    if node.size <= SMALL_FILE_BYTES {
        return restore_small_file(repo, node, content, local, options, progress).await;
    }
    check_recorded_size(repo, content, node.size, &file_object(local))?;
    let path = local.to_path_buf();
    let (file, placement) = tokio::task::spawn_blocking(move || create_for_restore(&path))
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
    let written = write_content(repo, node, content, local, file, options, progress).await;
    let placed = tokio::task::spawn_blocking(move || match written {
        Ok(done) => placement.commit().map(|()| done),
        Err(e) => {
            placement.abandon();
            Err(e)
        }
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))??;
    progress.files.fetch_add(1, Ordering::Relaxed);
    Ok(placed)
}

/// Write the content of a large file into `file` as its chunks arrive, then apply its
/// metadata; returns its size and the warnings.
async fn write_content(
    repo: &Repository,
    node: &Node,
    content: &Content,
    local: &Path,
    file: std::fs::File,
    options: &RestoreOptions,
    progress: &RestoreProgress,
) -> Result<(u64, Vec<String>)> {
    let io = |e| Error::LocalIo {
        path: local.to_path_buf(),
        source: e,
    };
    let sparse = options.sparse || is_sparse(node);
    let mut file = tokio::fs::File::from_std(file);
    let mut reader =
        ContentReader::new(repo, content, node.size, options.read_ahead).named(file_object(local));
    let mut written = 0u64;
    while let Some(chunk) = reader.next_chunk().await? {
        if sparse {
            for (range, zero) in block_runs(&chunk, written) {
                if zero {
                    file.seek(std::io::SeekFrom::Current(range.len() as i64))
                        .await
                        .map_err(io)?;
                } else {
                    file.write_all(&chunk[range]).await.map_err(io)?;
                }
            }
        } else {
            file.write_all(&chunk).await.map_err(io)?;
        }
        written += chunk.len() as u64;
        progress
            .bytes
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    file.flush().await.map_err(io)?;
    let file = file.into_std().await;
    finish_holes(&file, written, sparse).map_err(io)?;
    let (node, path, restore_owner) = (node.clone(), local.to_path_buf(), options.restore_owner);
    let warnings = tokio::task::spawn_blocking(move || {
        apply_file_metadata(&file, &path, &node, restore_owner)
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))??;
    Ok((written, warnings))
}

/// Files up to this size are read into memory whole and written by one blocking task.
pub(super) const SMALL_FILE_BYTES: u64 = 256 << 10;

/// [`restore_file`] for a small file: its chunks are fetched first, then one blocking
/// task replaces what is in the way, writes the file and applies its metadata. Most
/// files of a source tree are small, and each trip between the async runtime and the
/// blocking pool costs more than writing them.
pub(super) async fn restore_small_file(
    repo: &Repository,
    node: &Node,
    content: &Content,
    local: &Path,
    options: &RestoreOptions,
    progress: &RestoreProgress,
) -> Result<(u64, Vec<String>)> {
    // Chunks are read one after the other, without a task each: files restored in
    // parallel keep the storage busy, and a small file has few chunks. Nothing is read
    // past the recorded size, by the index's lengths or by what came back.
    let object = file_object(local);
    check_recorded_size(repo, content, node.size, &object)?;
    let mut data = Vec::with_capacity(node.size as usize);
    let mut ids = DataIds::new(content);
    let mut announced = 0u64;
    while let Some(id) = ids.next(repo).await? {
        if let Some(location) = repo.locate(&id) {
            announced += u64::from(location.raw_len);
            if announced > node.size {
                return Err(size_mismatch(&object, node.size, announced, true));
            }
        }
        let chunk = repo.read_blob(&id, BlobType::Data).await?;
        let have = (data.len() + chunk.len()) as u64;
        if have > node.size {
            return Err(size_mismatch(&object, node.size, have, true));
        }
        data.extend_from_slice(&chunk);
    }
    if data.len() as u64 != node.size {
        return Err(size_mismatch(&object, node.size, data.len() as u64, false));
    }
    let size = node.size;
    let (node, local_path, options) = (node.clone(), local.to_path_buf(), options.clone());
    let (_, warnings) =
        tokio::task::spawn_blocking(move || write_whole_file(&local_path, &node, &data, &options))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
    progress.bytes.fetch_add(size, Ordering::Relaxed);
    progress.files.fetch_add(1, Ordering::Relaxed);
    Ok((size, warnings))
}

/// Where a restored file is being written, and how it gets its name once complete.
#[derive(Debug)]
pub(super) struct Placement {
    /// The file's name in the target.
    path: PathBuf,
    /// The temporary name it is written under, when something stood at `path`.
    temp: Option<PathBuf>,
}

impl Placement {
    /// Give the complete file its name: a rename over whatever stood there (a rename
    /// replaces a symlink or a hard link as a name, never writing through it).
    pub(super) fn commit(&self) -> Result<()> {
        let Some(temp) = &self.temp else {
            return Ok(());
        };
        std::fs::rename(temp, &self.path).map_err(|e| {
            self.abandon();
            Error::LocalIo {
                path: self.path.clone(),
                source: e,
            }
        })
    }

    /// Remove what was written, after a failure: the file never appears with bytes
    /// that are not the snapshot's, and what stood there before stays.
    pub(super) fn abandon(&self) {
        let _ = std::fs::remove_file(self.temp.as_ref().unwrap_or(&self.path));
    }
}

/// Temporary names tried before giving up (each is new and random, so a clash means
/// someone is creating them on purpose).
const TEMP_NAME_TRIES: usize = 16;

/// Open a new file to write the restored file `local` into. The common case, nothing
/// there yet, is a single `open` with `O_EXCL` at `local`, which creates a new regular
/// file and never follows a link. Otherwise the file is written to a new temporary name
/// in the same directory and renamed over what is there once complete
/// ([`Placement::commit`]): a hard link or a symlink planted in the target is replaced,
/// never written through, and no existing inode is ever truncated, so swapping one in
/// between any two steps gains nothing. A directory in the way is an error.
pub(super) fn create_for_restore(local: &Path) -> Result<(std::fs::File, Placement)> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e| Error::LocalIo {
        path: local.to_path_buf(),
        source: e,
    };
    let create = |path: &Path| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
    };
    match create(local) {
        Ok(file) => {
            return Ok((
                file,
                Placement {
                    path: local.to_path_buf(),
                    temp: None,
                },
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(e)),
    }
    if std::fs::symlink_metadata(local).is_ok_and(|m| m.is_dir()) {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "a directory stands where the snapshot has a file",
        )));
    }
    let dir = local.parent().unwrap_or(Path::new("."));
    let mut last = None;
    for _ in 0..TEMP_NAME_TRIES {
        let temp = dir.join(format!(".dprepo-restore-{:016x}", random_u64()));
        match create(&temp) {
            Ok(file) => {
                return Ok((
                    file,
                    Placement {
                        path: local.to_path_buf(),
                        temp: Some(temp),
                    },
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(io(e)),
        }
    }
    Err(io(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::AlreadyExists, "no temporary name")
    })))
}

pub(super) fn random_u64() -> u64 {
    use chacha20poly1305::aead::{rand_core::RngCore, OsRng};
    OsRng.next_u64()
}
