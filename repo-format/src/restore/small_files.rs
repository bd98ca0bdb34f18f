//! Small files restored together in groups, with their chunks read in ranged runs per pack.

#[cfg(doc)]
use super::file::SMALL_FILE_BYTES;
use super::*;

/// Restore tasks in flight.
type FileTasks = tokio::task::JoinSet<TaskOutcome>;

/// What a restore has started and not finished: file tasks, and the small files
/// collected for the next group.
#[derive(Default)]
pub(super) struct InFlight {
    pub(super) tasks: FileTasks,
    pub(super) group: SmallFileGroup,
    pub(super) hard_links: HardLinks,
}

/// Files of the restore recorded as hard links ([`hard_link_count`]).
#[derive(Debug, Default)]
pub(super) struct HardLinks {
    /// Where the first name of each (device, inode) is restored.
    pub(super) first: HashMap<(u64, u64), PathBuf>,
    /// Later names: (first name, this name).
    pub(super) later: Vec<(PathBuf, PathBuf)>,
}

/// Wait until fewer than `parallel_files` restore tasks are in flight.
pub(super) async fn wait_for_slot(
    options: &RestoreOptions,
    files: &mut FileTasks,
    summary: &mut RestoreSummary,
) -> Result<()> {
    while files.len() >= options.parallel_files.max(1) {
        if let Some(done) = files.join_next().await {
            summary.add(done.map_err(|e| Error::Internal(e.to_string()))?);
        }
    }
    Ok(())
}

/// A group of small files restored by one task: up to this many bytes of content ...
pub(super) const GROUP_BYTES: u64 = 512 << 10;
/// ... or this many files.
pub(super) const GROUP_FILES: usize = 32;
/// Blobs of one pack at most this far apart are read with one range request.
const RUN_GAP: u64 = 64 << 10;
/// A range request reads at most this many bytes (or one larger blob).
const RUN_BYTES: u64 = 1 << 20;

/// Small files (one chunk list level, at most [`SMALL_FILE_BYTES`]) collected in tree
/// order, to be restored together.
#[derive(Debug, Default)]
pub(super) struct SmallFileGroup {
    pub(super) files: Vec<(PathBuf, Node)>,
    pub(super) bytes: u64,
}

/// Hand the collected small files to one task ([`restore_small_group`]).
pub(super) async fn spawn_group(
    repo: &Repository,
    options: &RestoreOptions,
    progress: &Arc<RestoreProgress>,
    files: &mut FileTasks,
    group: &mut SmallFileGroup,
    summary: &mut RestoreSummary,
) -> Result<()> {
    if group.files.is_empty() {
        return Ok(());
    }
    wait_for_slot(options, files, summary).await?;
    let batch = std::mem::take(group);
    let (repo, options, progress) = (repo.clone(), options.clone(), progress.clone());
    files.spawn(async move { restore_small_group(&repo, batch.files, &options, &progress).await });
    Ok(())
}

/// One range request: blobs of one pack, sorted by offset.
struct Run {
    pack: String,
    start: u64,
    end: u64,
    blobs: Vec<(BlobId, BlobLocation)>,
}

/// Restore a group of small files with few trips to storage and to the blocking pool:
/// their chunks are read in runs of adjacent ranges (files saved together sit together
/// in packs), then one blocking task decodes the chunks and writes every file. One
/// blocking task per file read and another per file written spent a fifth of a
/// restore's CPU on waking threads. Files with a chunk that is not indexed in full
/// (a delta, or gone after a concurrent gc), and every file of the group when a read
/// fails, take the one-by-one path, which follows gc and names what is damaged.
async fn restore_small_group(
    repo: &Repository,
    files: Vec<(PathBuf, Node)>,
    options: &RestoreOptions,
    progress: &RestoreProgress,
) -> TaskOutcome {
    let mut together = Vec::with_capacity(files.len());
    let mut alone = Vec::new();
    let mut wanted: Vec<(BlobId, BlobLocation)> = Vec::new();
    let mut seen = HashSet::new();
    // Every chunk of the group located in one batched index read.
    let ids: Vec<BlobId> = files
        .iter()
        .filter_map(|(_, node)| match &node.kind {
            NodeKind::File(content) => Some(content.ids.iter().copied()),
            _ => None,
        })
        .flatten()
        .collect();
    let mut locations = repo.locate_many(&ids).into_iter();
    for (path, node) in files {
        let NodeKind::File(content) = &node.kind else {
            continue;
        };
        // Takes exactly this file's locations, so the next file starts at its own (an
        // `Option` collect would stop at the first one missing).
        let located: Vec<Option<BlobLocation>> = (&mut locations)
            .take(content.ids.len())
            .map(|l| l.filter(|l| l.base.is_none() && l.blob_type == BlobType::Data))
            .collect();
        let located: Option<Vec<BlobLocation>> = located.into_iter().collect();
        // Chunks that do not add up to the recorded size are not read: the one-by-one
        // path refuses the file before reading (file_size.rs).
        let adds_up = |l: &Vec<BlobLocation>| {
            l.iter().map(|l| u64::from(l.raw_len)).sum::<u64>() == node.size
        };
        match located {
            Some(locations) if adds_up(&locations) => {
                for (id, location) in content.ids.iter().zip(locations) {
                    if seen.insert(*id) {
                        wanted.push((*id, location));
                    }
                }
                together.push((path, node));
            }
            _ => alone.push((path, node)),
        }
    }
    wanted.sort_by_key(|(_, location)| (location.pack_id, location.offset));
    let mut runs: Vec<Run> = Vec::new();
    for (id, location) in wanted {
        let (from, to) = (
            u64::from(location.offset),
            u64::from(location.offset) + u64::from(location.stored_len),
        );
        match runs.last_mut() {
            Some(run)
                if run.blobs[0].1.pack_id == location.pack_id
                    && from >= run.start
                    && from <= run.end + RUN_GAP
                    && to.max(run.end) - run.start <= RUN_BYTES =>
            {
                run.end = run.end.max(to);
                run.blobs.push((id, location));
            }
            _ => runs.push(Run {
                pack: location.pack_name(),
                start: from,
                end: to,
                blobs: vec![(id, location)],
            }),
        }
    }
    let mut read = Vec::with_capacity(runs.len());
    for run in runs {
        match repo
            .storage()
            .get_range(&run.pack, run.start, run.end - run.start)
            .await
        {
            Ok(bytes) => read.push((run, bytes)),
            Err(_) => {
                alone.append(&mut together);
                read.clear();
                break;
            }
        }
    }
    let mut outcome = TaskOutcome::default();
    if !together.is_empty() {
        let count = together.len() as u64;
        let keys = repo.keys().clone();
        let group_options = options.clone();
        let paths: Vec<PathBuf> = together.iter().map(|(p, _)| p.clone()).collect();
        // Decoded and written by one blocking task: a decode on the CPU pool first cost a
        // hand-off per group and left the pool's threads spinning (`sched_yield`) after
        // each one, most of a restore's system calls (benches/NOTES.md, "Restore without
        // the CPU pool").
        let job = tokio::task::spawn_blocking(move || match decode_runs(&keys, read) {
            Ok(plain) => Ok(write_small_group(&plain, &together, &group_options)),
            // A damaged chunk: the one-by-one path names the file it belongs to.
            Err(_) => Err(together),
        })
        .await;
        match job {
            Ok(Ok(group)) => {
                progress.bytes.fetch_add(group.bytes, Ordering::Relaxed);
                progress
                    .files
                    .fetch_add(count - group.errors.len() as u64, Ordering::Relaxed);
                outcome.merge(group);
            }
            Ok(Err(mut back)) => alone.append(&mut back),
            Err(e) => outcome.errors.extend(
                paths
                    .iter()
                    .map(|p| SkippedEntry::new(p, Error::Internal(format!("restore task: {e}")))),
            ),
        }
    }
    for (path, node) in &alone {
        let NodeKind::File(content) = &node.kind else {
            continue;
        };
        let result = restore_small_file(repo, node, content, path, options, progress).await;
        outcome.merge(TaskOutcome::of_file(path, result));
    }
    outcome
}

/// Decode the chunks read for a group, by id.
fn decode_runs(keys: &Keys, read: Vec<(Run, Vec<u8>)>) -> Result<HashMap<BlobId, Vec<u8>>> {
    let mut plain: HashMap<BlobId, Vec<u8>> = HashMap::new();
    // Each run is dropped once decoded.
    for (run, bytes) in read {
        for (id, location) in &run.blobs {
            let from = (u64::from(location.offset) - run.start) as usize;
            let stored = bytes
                .get(from..from + location.stored_len as usize)
                .ok_or_else(|| {
                    Error::corrupt(
                        run.pack.as_str(),
                        format!(
                            "range of {} bytes at {} came back with {}",
                            run.end - run.start,
                            run.start,
                            bytes.len()
                        ),
                    )
                })?;
            let chunk = decode_blob(
                keys,
                BlobType::Data,
                id,
                stored,
                u64::from(location.raw_len),
            )?;
            plain.insert(*id, chunk);
        }
    }
    Ok(plain)
}

/// Write the files of a group, in tree order, from their decoded chunks.
fn write_small_group(
    plain: &HashMap<BlobId, Vec<u8>>,
    files: &[(PathBuf, Node)],
    options: &RestoreOptions,
) -> TaskOutcome {
    let mut outcome = TaskOutcome::default();
    let mut data = Vec::new();
    for (path, node) in files {
        let result = gather_chunks(plain, path, node, &mut data)
            .and_then(|()| write_whole_file(path, node, &data, options));
        outcome.merge(TaskOutcome::of_file(path, result));
    }
    outcome
}

/// Put the content of small file `node` together from the decoded chunks of its group.
fn gather_chunks(
    plain: &HashMap<BlobId, Vec<u8>>,
    path: &Path,
    node: &Node,
    data: &mut Vec<u8>,
) -> Result<()> {
    let NodeKind::File(content) = &node.kind else {
        return Err(Error::Internal("not a file".into()));
    };
    data.clear();
    for id in &content.ids {
        let chunk = plain
            .get(id)
            .ok_or_else(|| Error::Internal(format!("chunk {} was not read", id.short())))?;
        let have = (data.len() + chunk.len()) as u64;
        if have > node.size {
            return Err(size_mismatch(&file_object(path), node.size, have, true));
        }
        data.extend_from_slice(chunk);
    }
    if data.len() as u64 != node.size {
        return Err(size_mismatch(
            &file_object(path),
            node.size,
            data.len() as u64,
            false,
        ));
    }
    Ok(())
}

/// Write a file whose whole content is in memory, and apply its metadata; returns its
/// size and the warnings.
pub(super) fn write_whole_file(
    path: &Path,
    node: &Node,
    data: &[u8],
    options: &RestoreOptions,
) -> Result<(u64, Vec<String>)> {
    let (mut file, placement) = create_for_restore(path)?;
    let sparse = options.sparse || is_sparse(node);
    let written = write_at(&mut file, data, 0, sparse)
        .and_then(|()| finish_holes(&file, data.len() as u64, sparse))
        .map_err(|e| Error::LocalIo {
            path: path.to_path_buf(),
            source: e,
        })
        .and_then(|()| apply_file_metadata(&file, path, node, options.restore_owner));
    match written {
        Ok(warnings) => {
            placement.commit()?;
            Ok((data.len() as u64, warnings))
        }
        Err(e) => {
            placement.abandon();
            Err(e)
        }
    }
}
