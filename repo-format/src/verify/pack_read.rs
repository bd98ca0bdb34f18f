//! Reading packs: names, headers, the pack list, whole packs in segments, deltas checked.

use super::*;

/// Read a pack's header with two ranged reads (trailer, then header).
///
/// # Errors
/// [`Error::Corrupt`] naming the pack if trailer or header are damaged.
pub async fn read_pack_header(
    repo: &Repository,
    id: &BlobId,
    kind: PackKind,
    size: u64,
) -> Result<Vec<PackEntry>> {
    let name = crate::layout::pack(kind, id);
    let (start, header_len, version) = read_header_place(repo, &name, size).await?;
    let sealed = repo
        .storage()
        .get_range(&name, start, u64::from(header_len))
        .await?;
    let keys = repo.keys().clone();
    run_cpu(move || decode_header(&keys, &sealed, size, version, &name)).await?
}

/// Where the sealed header of the pack `name` (of `size` bytes) starts, its length and
/// the pack version, from the pack's trailer (one ranged read).
///
/// # Errors
/// [`Error::Corrupt`] naming the pack if it is too short or its trailer is damaged.
async fn read_header_place(repo: &Repository, name: &str, size: u64) -> Result<(u64, u32, u8)> {
    if size < TRAILER_LEN as u64 {
        return Err(Error::corrupt(
            name,
            format!("pack of {size} bytes is too short for its trailer"),
        ));
    }
    let trailer = repo
        .storage()
        .get_range(name, size - TRAILER_LEN as u64, TRAILER_LEN as u64)
        .await?;
    let (header_len, version) = parse_trailer(&trailer, size, name)?;
    Ok((
        size - TRAILER_LEN as u64 - u64::from(header_len),
        header_len,
        version,
    ))
}

/// Every pack in storage with its kind and size.
///
/// # Errors
/// Storage errors.
pub async fn list_packs(repo: &Repository) -> Result<HashMap<BlobId, (PackKind, u64)>> {
    let mut out = HashMap::new();
    for kind in PackKind::ALL {
        for b in repo.storage().list(crate::layout::pack_dir(kind)).await? {
            if let Some((kind, id)) = crate::layout::parse_pack(&b.name) {
                out.insert(id, (kind, b.size));
            }
        }
    }
    Ok(out)
}

/// Bytes of a pack read at once by `verify --read-data` (more when one blob is larger).
pub(super) const VERIFY_SEGMENT_BYTES: u64 = 2 << 20;
/// Most blobs in one segment. 2 MiB of page deltas are about 20,000 blobs; 512 keep a
/// segment's lists of entries and of their bases' locations small (under 128 KiB).
/// Pages come in stream order, so the bases of a segment's deltas still share runs.
const MAX_SEGMENT_ENTRIES: usize = 512;

/// Segment buffers of `verify --read-data`, handed from one segment read to the next.
/// A buffer allocated per segment and freed on another thread stayed resident in
/// glibc's per-thread arenas: with these buffers, 2 MiB segments and envelope buffers
/// of their declared size, verify of the 1.4 GiB comparison repository peaks at
/// 82-84 MiB instead of 112-129 (benches/NOTES.md, "verify memory").
#[derive(Default)]
pub(crate) struct SegmentBuffers {
    spare: std::sync::Mutex<Vec<Vec<u8>>>,
    /// The structure check's sealed pack headers, pooled the same way.
    pub(super) headers: HeaderBuffers,
}

impl SegmentBuffers {
    /// At most one spare buffer per pack read at once.
    const KEEP: usize = PACKS_READ_AT_ONCE;

    /// Room for a segment and the blob that ends it (chunks are at most 2 MiB by
    /// default), so a buffer is allocated once and does not grow.
    const CAPACITY: u64 = 2 * VERIFY_SEGMENT_BYTES;

    fn take(&self) -> Vec<u8> {
        self.spare
            .lock()
            .ok()
            .and_then(|mut spare| spare.pop())
            .unwrap_or_else(|| Vec::with_capacity(Self::CAPACITY as usize))
    }

    /// Keep `buf` for the next segment, unless enough are kept or it grew for one huge
    /// blob.
    fn give_back(&self, buf: Vec<u8>) {
        if buf.capacity() as u64 > Self::CAPACITY {
            return;
        }
        if let Ok(mut spare) = self.spare.lock() {
            if spare.len() < Self::KEEP {
                spare.push(buf);
            }
        }
    }
}

/// What reading a whole pack found.
pub(super) struct PackRead {
    pub(super) hash: BlobId,
    pub(super) bytes: u64,
    pub(super) blobs_checked: u64,
    pub(super) bad: Vec<(BlobId, String)>,
    /// The sealed header, cut from the last segment when it holds the trailer and the
    /// whole header (an error if the trailer is damaged); `None` if it did not.
    pub(super) sealed_header: Option<Result<(Vec<u8>, u8)>>,
}

/// The sealed header at the end of `segment`, the last bytes of a pack of `size` bytes,
/// with the pack version: `None` if the segment is too short to hold the trailer and the
/// header it announces.
fn sealed_header_in_tail(segment: &[u8], size: u64, name: &str) -> Option<Result<(Vec<u8>, u8)>> {
    let trailer_at = segment.len().checked_sub(TRAILER_LEN)?;
    let (header_len, version) = match parse_trailer(&segment[trailer_at..], size, name) {
        Ok(found) => found,
        Err(e) => return Some(Err(e)),
    };
    let header_at = trailer_at.checked_sub(header_len as usize)?;
    Some(Ok((segment[header_at..trailer_at].to_vec(), version)))
}

/// The header of a pack just read by [`read_pack_in_segments`]: decoded from the bytes
/// already read when they hold it, otherwise read again with [`read_pack_header`].
///
/// # Errors
/// As [`read_pack_header`].
pub(super) async fn header_after_read(
    repo: &Repository,
    id: &BlobId,
    kind: PackKind,
    size: u64,
    sealed_header: Option<Result<(Vec<u8>, u8)>>,
) -> Result<Vec<PackEntry>> {
    match sealed_header {
        None => read_pack_header(repo, id, kind, size).await,
        Some(Err(e)) => Err(e),
        Some(Ok((sealed, version))) => {
            let keys = repo.keys().clone();
            let name = crate::layout::pack(kind, id);
            run_cpu(move || decode_header(&keys, &sealed, size, version, &name)).await?
        }
    }
}

/// Read pack `name` (of `size` bytes) front to back in segments of about
/// [`VERIFY_SEGMENT_BYTES`], cut where an indexed blob starts, hashing every byte and
/// decoding every blob of `entries` (sorted here by offset): memory stays at one segment
/// per pack being read, not the whole pack.
pub(super) async fn read_pack_in_segments(
    repo: &Repository,
    name: &str,
    size: u64,
    entries: &mut [PackEntry],
    progress: &VerifyProgress,
    segment_bytes: u64,
    buffers: &SegmentBuffers,
) -> Result<PackRead> {
    entries.sort_by_key(|e| e.offset);
    let sorted = &*entries;
    let mut out = PackRead {
        hash: BlobId([0; crate::id::ID_LEN]),
        bytes: 0,
        blobs_checked: 0,
        bad: Vec::new(),
        sealed_header: None,
    };
    let mut hasher = blake3::Hasher::new();
    let mut next_entry = 0usize;
    let mut at = 0u64;
    while at < size {
        // Extend the segment to the start of the first blob past the target length.
        let target = at.saturating_add(segment_bytes.max(1)).min(size);
        let mut end = target;
        let mut covered = at;
        let mut last = next_entry;
        while last < sorted.len() && u64::from(sorted[last].offset) < target {
            if last - next_entry == MAX_SEGMENT_ENTRIES {
                // Many small blobs (deltas): end the segment where this one starts.
                end = covered
                    .max(u64::from(sorted[last].offset))
                    .min(size)
                    .max(at + 1);
                break;
            }
            let blob_end = u64::from(sorted[last].offset) + u64::from(sorted[last].stored_len);
            end = end.max(blob_end.min(size));
            covered = covered.max(blob_end.min(size));
            last += 1;
        }
        let segment = repo
            .storage()
            .get_range_into(name, at, end - at, buffers.take())
            .await?;
        if segment.len() as u64 != end - at {
            return Err(Error::corrupt(
                name,
                format!(
                    "read {} bytes at {at}, expected {}",
                    segment.len(),
                    end - at
                ),
            ));
        }
        hasher.update(&segment);
        if end == size {
            out.sealed_header = sealed_header_in_tail(&segment, size, name);
        }
        progress
            .bytes
            .fetch_add(segment.len() as u64, Ordering::Relaxed);
        out.bytes += segment.len() as u64;
        let batch: Vec<PackEntry> = sorted[next_entry..last].to_vec();
        let keys = repo.keys().clone();
        let segment_start = at;
        let (deltas, batch): (Vec<PackEntry>, Vec<PackEntry>) =
            batch.into_iter().partition(|e| e.base.is_some());
        let (checked, mut bad, segment) = run_cpu(move || {
            let mut bad = Vec::new();
            for e in &batch {
                // Entries overlapping a blob of an earlier segment (a damaged index)
                // start before this one.
                let range = u64::from(e.offset)
                    .checked_sub(segment_start)
                    .map(|from| from as usize..(from + u64::from(e.stored_len)) as usize);
                let verdict = match range.and_then(|r| segment.get(r)) {
                    None => Err(format!("blob {} lies beyond the pack", e.id.short())),
                    Some(stored) => {
                        decode_blob(&keys, e.blob_type, &e.id, stored, u64::from(e.raw_len))
                            .map(|_| ())
                            .map_err(|err| err.to_string())
                    }
                };
                if let Err(detail) = verdict {
                    bad.push((e.id, detail));
                }
            }
            (batch.len() as u64, bad, segment)
        })
        .await?;
        // Deltas are decoded against their bases, read from elsewhere; they are sliced
        // from the segment, which goes back to the pool afterwards.
        let deltas_checked = deltas.len() as u64;
        let segment = Arc::new(segment);
        let in_segment = Segment {
            bytes: segment.clone(),
            start: segment_start,
        };
        bad.extend(check_deltas(repo, deltas, &in_segment, buffers).await?);
        drop(in_segment);
        if let Ok(segment) = Arc::try_unwrap(segment) {
            buffers.give_back(segment);
        }
        out.blobs_checked += checked + deltas_checked;
        out.bad.extend(bad);
        next_entry = last;
        at = end;
    }
    // Entries that start beyond the end of the pack.
    for e in &sorted[next_entry..] {
        out.blobs_checked += 1;
        out.bad
            .push((e.id, format!("blob {} lies beyond the pack", e.id.short())));
    }
    out.hash = BlobId(*hasher.finalize().as_bytes());
    Ok(out)
}

/// Bases read at once by [`check_deltas`]: bases stored this close to each other in a
/// pack are read in one request with the bytes between them.
const BASE_RUN_GAP: u64 = 64 << 10;
/// Largest read of [`check_deltas`] (more only for one larger base).
const BASE_RUN_BYTES: u64 = 1 << 20;

/// Bases stored near each other in one pack, with the deltas that need them.
struct BaseRun {
    pack_name: String,
    start: u64,
    end: u64,
    /// Each base's id and location, and the deltas against it.
    bases: Vec<(BlobId, BlobLocation, Vec<PackEntry>)>,
}

/// Bytes read from a pack, starting at pack offset `start`.
#[derive(Clone)]
pub(crate) struct Segment {
    pub(crate) bytes: Arc<Vec<u8>>,
    pub(crate) start: u64,
}

impl Segment {
    /// The stored bytes of `e`, if the segment holds them.
    pub(super) fn stored(&self, e: &PackEntry) -> Option<&[u8]> {
        let from = usize::try_from(u64::from(e.offset).checked_sub(self.start)?).ok()?;
        self.bytes
            .get(from..from.checked_add(e.stored_len as usize)?)
    }
}

/// Decode each delta of `deltas` (entries with a base, stored in `segment`) against its
/// base; returns the ones that fail, with why. Bases are located, sorted by pack and
/// offset and read in runs into pooled buffers, so a pack of deltas costs a few reads,
/// not one per page (pages of one table were stored together); memory is one run at a
/// time and a location per delta.
///
/// # Errors
/// Only if a decoding task panicked.
pub(crate) async fn check_deltas(
    repo: &Repository,
    deltas: Vec<PackEntry>,
    segment: &Segment,
    buffers: &SegmentBuffers,
) -> Result<Vec<(BlobId, String)>> {
    let mut bad = Vec::new();
    let mut located: Vec<(BlobId, BlobLocation, PackEntry)> = Vec::with_capacity(deltas.len());
    for e in deltas {
        let Some(base) = e.base else {
            continue;
        };
        let problem = match repo.locate(&base) {
            Some(loc) if loc.base.is_none() && loc.blob_type == BlobType::Data => {
                located.push((base, loc, e));
                continue;
            }
            Some(_) => "its base is not a full data blob",
            None => "its base is in no index",
        };
        bad.push((e.id, format!("{}: {problem}", delta_object(&e, &base))));
    }
    located.sort_by_key(|(base, loc, _)| (loc.pack_id, loc.offset, *base));
    let mut runs: Vec<BaseRun> = Vec::new();
    for (base, loc, delta) in located {
        let (start, end) = (
            u64::from(loc.offset),
            u64::from(loc.offset) + u64::from(loc.stored_len),
        );
        let name = loc.pack_name();
        match runs.last_mut() {
            Some(run) if run.bases.last().is_some_and(|(b, _, _)| *b == base) => {
                if let Some((_, _, deltas)) = run.bases.last_mut() {
                    deltas.push(delta);
                }
            }
            Some(run)
                if run.pack_name == name
                    && start >= run.start
                    && start <= run.end + BASE_RUN_GAP
                    && end.max(run.end) - run.start <= BASE_RUN_BYTES =>
            {
                run.end = run.end.max(end);
                run.bases.push((base, loc, vec![delta]));
            }
            _ => runs.push(BaseRun {
                pack_name: name,
                start,
                end,
                bases: vec![(base, loc, vec![delta])],
            }),
        }
    }
    for run in runs {
        let len = run.end - run.start;
        let read = repo
            .storage()
            .get_range_into(&run.pack_name, run.start, len, buffers.take())
            .await;
        let bytes = match read {
            Ok(bytes) if bytes.len() as u64 == len => bytes,
            // Moved by a concurrent gc, or damaged: one base at a time, each read
            // reloading the index once if its pack is gone.
            _ => {
                for (base, _, deltas) in run.bases {
                    let plaintext = repo.read_delta_base(&deltas[0].id, &base).await;
                    bad.extend(check_against(
                        repo.keys(),
                        &base,
                        plaintext,
                        &deltas,
                        segment,
                    ));
                }
                continue;
            }
        };
        let (keys, segment) = (repo.keys().clone(), segment.clone());
        let (checked, bytes) = run_cpu(move || {
            let mut bad = Vec::new();
            for (base, loc, deltas) in run.bases {
                let at = (u64::from(loc.offset) - run.start) as usize;
                let stored = &bytes[at..at + loc.stored_len as usize];
                let plaintext =
                    decode_blob(&keys, BlobType::Data, &base, stored, loc.raw_len.into());
                bad.extend(check_against(&keys, &base, plaintext, &deltas, &segment));
            }
            (bad, bytes)
        })
        .await?;
        buffers.give_back(bytes);
        bad.extend(checked);
    }
    Ok(bad)
}

/// Sealed pack headers of the structure check, handed from one header read to the next.
/// Every pack's header is read; one of 16 MiB of tiny blobs is about 4 MiB, and a buffer
/// allocated per read on a storage thread and freed on another stayed resident in that
/// thread's glibc arena, more of them the more packs were read (BENCHMARKS.md,
/// "Incremental backup and verify as the repository grows").
#[derive(Default)]
pub(super) struct HeaderBuffers {
    spare: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl HeaderBuffers {
    /// At most one spare buffer per pack checked at once.
    const KEEP: usize = PACKS_READ_AT_ONCE;
    /// Larger buffers (headers of packs of more than about 400k blobs) are not kept.
    const MAX_KEPT: usize = 16 << 20;

    fn take(&self) -> Vec<u8> {
        self.spare
            .lock()
            .ok()
            .and_then(|mut spare| spare.pop())
            .unwrap_or_default()
    }

    fn give_back(&self, buf: Vec<u8>) {
        if buf.capacity() > Self::MAX_KEPT {
            return;
        }
        if let Ok(mut spare) = self.spare.lock() {
            if spare.len() < Self::KEEP {
                spare.push(buf);
            }
        }
    }
}

/// [`read_pack_header`], the sealed header read into a buffer of `buffers` and given
/// back after decoding: the same reads, checks and errors.
///
/// # Errors
/// As [`read_pack_header`].
pub(super) async fn read_pack_header_pooled(
    repo: &Repository,
    id: &BlobId,
    kind: PackKind,
    size: u64,
    buffers: &HeaderBuffers,
) -> Result<Vec<PackEntry>> {
    let name = crate::layout::pack(kind, id);
    let (start, header_len, version) = read_header_place(repo, &name, size).await?;
    let sealed = repo
        .storage()
        .get_range_into(&name, start, u64::from(header_len), buffers.take())
        .await?;
    let keys = repo.keys().clone();
    let (header, sealed) = run_cpu(move || {
        let header = decode_header(&keys, &sealed, size, version, &name);
        (header, sealed)
    })
    .await?;
    buffers.give_back(sealed);
    header
}
