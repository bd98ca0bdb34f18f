//! `dump`: writing one file's content from a snapshot to a writer.

use super::*;

/// Write the content of the file at `path` in snapshot tree `root` to `out`.
///
/// # Errors
/// [`Error::SnapshotPath`] if the path is missing or not a file; write errors; missing
/// or damaged repository objects.
pub async fn dump(
    repo: &Repository,
    root: &BlobId,
    path: &[u8],
    out: &mut (dyn std::io::Write + Send),
) -> Result<u64> {
    let display = String::from_utf8_lossy(path).into_owned();
    let node = repo
        .find_node(root, path)
        .await?
        .ok_or_else(|| Error::SnapshotPath {
            path: display.clone(),
            reason: "is the snapshot root (a directory); use restore".into(),
        })?;
    let NodeKind::File(content) = &node.kind else {
        return Err(Error::SnapshotPath {
            path: display,
            reason: format!("is a {}, not a file; use restore", node.kind.name()),
        });
    };
    // Never more than the node records: a forged chunk list must not stream without end.
    let object = format!("file {display}");
    check_recorded_size(repo, content, node.size, &object)?;
    let mut reader = ContentReader::new(repo, content, node.size, 8).named(object);
    let mut written = 0u64;
    while let Some(chunk) = reader.next_chunk().await? {
        out.write_all(&chunk).map_err(|e| Error::LocalIo {
            path: "<stdout>".into(),
            source: e,
        })?;
        written += chunk.len() as u64;
    }
    out.flush().map_err(|e| Error::LocalIo {
        path: "<stdout>".into(),
        source: e,
    })?;
    Ok(written)
}
