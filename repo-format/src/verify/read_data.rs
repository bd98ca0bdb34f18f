//! `--read-data`: each pack read and checked against its name, its header and the index.

use super::*;

/// Snapshot ids and `<snapshot>:<path>` names affected by a problem.
pub(super) type Affected = (Vec<String>, Vec<String>);

pub(super) struct PackOutcome {
    pub(super) read: bool,
    pub(super) bytes: u64,
    pub(super) blobs_checked: u64,
    pub(super) bad_blobs: Vec<(BlobId, ProblemKind, String, String)>,
    pub(super) problems: Vec<Problem>,
    /// Index entries the check was given (what [`EntriesInFlight`] counts).
    pub(super) entries: usize,
}

/// Packs checked at the same time.
pub(super) const PACKS_READ_AT_ONCE: usize = 4;

/// Index entries of the packs checked at the same time, at most: a pack that holds more
/// is checked alone. Each entry is held twice while its pack is checked (the index
/// file's entry and the decoded header's, about 80 bytes each) besides the sealed and
/// plain header (about 40 bytes each): 64k entries are about 13 MiB. Packs of large
/// chunks hold a few hundred blobs and are still checked [`PACKS_READ_AT_ONCE`] at a
/// time; packs of 16 MiB of tiny blobs (50k each) were checked four at once, about
/// 50 MiB (BENCHMARKS.md, "Incremental backup and verify as the repository grows").
pub(super) const ENTRIES_CHECKED_AT_ONCE: usize = 1 << 16;

/// The index entries of the pack checks in flight.
#[derive(Default)]
pub(super) struct EntriesInFlight {
    packs: usize,
    entries: usize,
}

impl EntriesInFlight {
    /// Whether a check of `entries` more must wait for one in flight to finish.
    pub(super) fn full(&self, entries: usize) -> bool {
        self.packs > 0
            && (self.packs >= PACKS_READ_AT_ONCE
                || self.entries.saturating_add(entries) > ENTRIES_CHECKED_AT_ONCE)
    }

    pub(super) fn started(&mut self, entries: usize) {
        self.packs += 1;
        self.entries += entries;
    }

    pub(super) fn finished(&mut self, entries: usize) {
        self.packs = self.packs.saturating_sub(1);
        self.entries = self.entries.saturating_sub(entries);
    }
}

/// One pack to check: its id, kind and size, whether to read it whole, and what one
/// index file says it holds.
pub(super) struct PackCheck {
    pub(super) id: BlobId,
    pub(super) kind: PackKind,
    pub(super) size: u64,
    pub(super) full_read: bool,
    /// Whether this is the first index file listing the pack: only then is the pack
    /// counted as checked and read.
    pub(super) first_listing: bool,
    pub(super) entries: Vec<PackEntry>,
}

pub(super) fn delta_object(e: &PackEntry, base: &BlobId) -> String {
    format!(
        "data blob {} (delta against {})",
        e.id.short(),
        base.short()
    )
}

/// Decode `deltas` (stored in `segment`) against base `base`: its plaintext, or why it
/// could not be read.
pub(super) fn check_against(
    keys: &crate::crypto::Keys,
    base: &BlobId,
    plaintext: Result<Vec<u8>>,
    deltas: &[PackEntry],
    segment: &Segment,
) -> Vec<(BlobId, String)> {
    let plaintext = match plaintext {
        Ok(p) => p,
        Err(e) => {
            return deltas
                .iter()
                .map(|d| (d.id, format!("{}: its base: {e}", delta_object(d, base))))
                .collect()
        }
    };
    deltas
        .iter()
        .filter_map(|e| {
            let Some(stored) = segment.stored(e) else {
                return Some((e.id, format!("blob {} lies beyond the pack", e.id.short())));
            };
            let with = DeltaBase {
                id: base,
                plaintext: &plaintext,
            };
            decode_delta_blob(keys, &e.id, stored, u64::from(e.raw_len), with)
                .err()
                .map(|err| (e.id, err.to_string()))
        })
        .collect()
}

pub(super) async fn check_pack(
    repo: &Repository,
    pack: PackCheck,
    progress: &VerifyProgress,
    buffers: &SegmentBuffers,
) -> PackOutcome {
    let PackCheck {
        id,
        kind,
        size,
        full_read,
        first_listing,
        entries: mut index_entries,
    } = pack;
    // A pack listed by several index files is checked once per file; counted once.
    let done = |progress: &VerifyProgress| {
        if first_listing {
            progress.packs_done.fetch_add(1, Ordering::Relaxed);
        }
    };
    let name = crate::layout::pack(kind, &id);
    let mut out = PackOutcome {
        read: false,
        bytes: 0,
        blobs_checked: 0,
        bad_blobs: Vec::new(),
        problems: Vec::new(),
        entries: index_entries.len(),
    };
    let header = if full_read {
        match read_pack_in_segments(
            repo,
            &name,
            size,
            &mut index_entries,
            progress,
            VERIFY_SEGMENT_BYTES,
            buffers,
        )
        .await
        {
            Err(e) => {
                let detail = e.to_string();
                for e in &index_entries {
                    out.bad_blobs.push((
                        e.id,
                        ProblemKind::PackUnreadable,
                        name.clone(),
                        detail.clone(),
                    ));
                }
                done(progress);
                return out;
            }
            Ok(read) => {
                out.read = first_listing;
                out.bytes = read.bytes;
                out.blobs_checked = read.blobs_checked;
                if read.hash != id {
                    out.problems.push(Problem {
                        kind: ProblemKind::PackHashMismatch,
                        object: name.clone(),
                        detail: "content does not hash to the pack's name".into(),
                        snapshots: vec![],
                        files: vec![],
                    });
                }
                for (blob, detail) in read.bad {
                    out.bad_blobs
                        .push((blob, ProblemKind::BlobDamaged, name.clone(), detail));
                }
                header_after_read(repo, &id, kind, size, read.sealed_header).await
            }
        }
    } else {
        read_pack_header_pooled(repo, &id, kind, size, &buffers.headers).await
    };
    done(progress);
    match header {
        Err(e) => out.problems.push(Problem {
            kind: ProblemKind::PackHeaderDamaged,
            object: name.clone(),
            detail: e.to_string(),
            snapshots: vec![],
            files: vec![],
        }),
        Ok(header) => {
            let mut header = header;
            header.sort_unstable_by_key(|h| h.id);
            for e in &index_entries {
                let found = header
                    .binary_search_by_key(&e.id, |h| h.id)
                    .ok()
                    .and_then(|at| header.get(at));
                match found {
                    Some(h)
                        if h.offset == e.offset
                            && h.stored_len == e.stored_len
                            && h.raw_len == e.raw_len
                            && h.blob_type == e.blob_type => {}
                    Some(_) => out.bad_blobs.push((
                        e.id,
                        ProblemKind::IndexHeaderMismatch,
                        name.clone(),
                        format!(
                            "index entry of blob {} disagrees with the pack header",
                            e.id.short()
                        ),
                    )),
                    None => out.bad_blobs.push((
                        e.id,
                        ProblemKind::IndexHeaderMismatch,
                        name.clone(),
                        format!(
                            "index lists blob {} but the pack header does not",
                            e.id.short()
                        ),
                    )),
                }
            }
        }
    }
    out
}
