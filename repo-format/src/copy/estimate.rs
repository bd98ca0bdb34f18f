//! The dry run of `copy`: the plan and an estimate of the blobs and bytes it would send.

use super::*;

/// The dry run: which snapshots would be copied (with their parent mapping) and which
/// skipped, and an estimate of what would be sent. No data chunk is read: trees and
/// chunk lists of the source are (see [`estimate`]).
pub(super) async fn plan_only(
    src: &Repository,
    dst: &Repository,
    snapshots: &[Snapshot],
    options: &CopyOptions,
) -> Result<CopyReport> {
    let src_all = src.list_snapshots().await?;
    let dst_all = dst.list_snapshots().await?;
    let mut origins = origins_in(dst, &dst_all);
    let listed: std::collections::HashSet<BlobId> = src_all.iter().map(|s| s.id).collect();
    // The source snapshots the destination holds copies of: their blobs are there.
    let held: Vec<BlobId> = src_all
        .iter()
        .filter(|s| origins.get(&origin_of(&src.config().id, s)).is_some())
        .map(|s| s.manifest.tree)
        .collect();
    let mut to_send = Vec::new();
    let mut report = CopyReport {
        dry_run: true,
        ..CopyReport::default()
    };
    for snap in snapshots {
        if !listed.contains(&snap.id) {
            report.skipped.push(SkippedSnapshot::gone(snap));
            continue;
        }
        let origin = origin_of(&src.config().id, snap);
        if let Some(existing) = origins.get(&origin) {
            report
                .skipped
                .push(SkippedSnapshot::copied_as(snap, existing, &dst_all));
            continue;
        }
        let parent = parent_in_dst(src, &src_all, snap, &origins);
        // Later snapshots of this run may name this one as parent: stand it in by its
        // own id, reported as "the copy of" it.
        origins.insert(&origin, snap.id);
        to_send.push(snap.manifest.tree);
        report.copied.push(CopiedSnapshot {
            source: snap.id.to_hex(),
            copy: None,
            parent: parent.map(|p| p.to_hex()),
            blobs_added: 0,
            bytes_uploaded: 0,
        });
    }
    let cap = options.max_estimated_blobs.unwrap_or(MAX_ESTIMATED_BLOBS);
    match estimate(src, &held, &to_send, cap).await {
        Ok(e) => report.estimate = Some(e),
        Err(e) => report.estimate_error = Some(e.to_string()),
    }
    Ok(report)
}

/// The estimate of a dry run: the blobs reachable from the trees `to_send` and not
/// from the trees `held`, sized from the source's index. Trees and chunk lists are
/// read from the source (each distinct one once); memory is bounded by `cap` ids
/// ([`MAX_ESTIMATED_BLOBS`] by default).
async fn estimate(
    src: &Repository,
    held: &[BlobId],
    to_send: &[BlobId],
    cap: usize,
) -> Result<CopyEstimate> {
    if to_send.is_empty() {
        return Ok(CopyEstimate::default());
    }
    src.load_index().await?;
    let none = HashSet::new();
    let mut visited = HashSet::new();
    let mut held_blobs = HashSet::new();
    for root in held {
        reachable(src, *root, &mut visited, &none, &mut held_blobs, cap).await?;
    }
    let mut new = HashSet::new();
    for root in to_send {
        reachable(src, *root, &mut visited, &held_blobs, &mut new, cap).await?;
    }
    let ids: Vec<BlobId> = new.into_iter().collect();
    let mut out = CopyEstimate::default();
    for chunk in ids.chunks(4096) {
        for loc in src.locate_many(chunk).into_iter().flatten() {
            out.blobs += 1;
            out.bytes += u64::from(loc.stored_len);
            out.plain_bytes += u64::from(loc.raw_len);
        }
    }
    Ok(out)
}

/// Add to `out` every blob reachable from tree `root` (trees, chunk lists, data chunks)
/// that is not in `skip`, without walking below a blob in `skip` or in `out` (a chunk
/// list met before) or a tree in `visited`.
///
/// # Errors
/// Read failures, and `InvalidArgument` once the three sets together hold more than
/// `cap` ids.
async fn reachable(
    src: &Repository,
    root: BlobId,
    visited: &mut HashSet<BlobId>,
    skip: &HashSet<BlobId>,
    out: &mut HashSet<BlobId>,
    cap: usize,
) -> Result<()> {
    let mut trees = vec![root];
    while let Some(t) = trees.pop() {
        if !visited.insert(t) || skip.contains(&t) {
            continue;
        }
        out.insert(t);
        within_cap(visited.len() + skip.len() + out.len(), cap)?;
        let tree = src.load_tree(&t).await?;
        for node in tree.nodes {
            match node.kind {
                NodeKind::Dir(sub) => trees.push(sub),
                NodeKind::File(content) => {
                    let mut lists = vec![(content.level, content.ids)];
                    while let Some((level, ids)) = lists.pop() {
                        for id in ids {
                            if skip.contains(&id) || !out.insert(id) {
                                continue;
                            }
                            within_cap(visited.len() + skip.len() + out.len(), cap)?;
                            if level == 0 {
                                continue;
                            }
                            let body = src.read_blob(&id, BlobType::ChunkList).await?;
                            let sub = Content::decode_list(
                                &body,
                                level - 1,
                                &format!("chunk list {}", id.short()),
                            )?;
                            lists.push((level - 1, sub.ids));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

fn within_cap(held: usize, cap: usize) -> Result<()> {
    if held > cap {
        return Err(Error::InvalidArgument(format!(
            "more than {cap} distinct blobs to weigh: no estimate"
        )));
    }
    Ok(())
}
