//! Reading ranges and listing names and temporary files.

use super::*;

pub(super) fn read_range_blocking(
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
pub(super) fn list_blocking(root: &Path, prefix: &str, sizes: bool) -> Result<Vec<BlobInfo>> {
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
pub(super) fn list_temporary_blocking(root: &Path) -> Result<Vec<TemporaryFile>> {
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
pub(super) fn validate_temporary_name(name: &str) -> Result<()> {
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
