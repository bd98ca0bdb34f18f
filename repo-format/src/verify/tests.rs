//! Unit tests of verify, and the in-memory repository helpers other modules' tests use.

use super::check::References;
use super::pack_read::PackRead;
use super::*;
use crate::key::KdfParams;
use crate::saver::BlobSaver;
use crate::storage::{MemoryStorage, Storage};
use crate::InitOptions;

/// A new repository in memory, opened.
pub(crate) async fn memory_repo() -> (MemoryStorage, Repository) {
    let storage = MemoryStorage::new();
    let options = InitOptions::default().with_kdf(KdfParams::CHEAPEST);
    Repository::init(Arc::new(storage.clone()), b"pw", options)
        .await
        .unwrap();
    let repo = Repository::open(Arc::new(storage.clone()), b"pw")
        .await
        .unwrap();
    (storage, repo)
}

/// [`read_pack_in_segments`] of pack `name`, given a copy of `entries` to sort.
async fn read_in_segments(
    repo: &Repository,
    name: &str,
    size: u64,
    entries: &[PackEntry],
    segment: u64,
    buffers: &SegmentBuffers,
) -> PackRead {
    let progress = VerifyProgress::default();
    let mut entries = entries.to_vec();
    read_pack_in_segments(repo, name, size, &mut entries, &progress, segment, buffers)
        .await
        .unwrap()
}

/// Saves `pages` through one backup session: in full, or as deltas of `bases`.
pub(crate) async fn save_pages(
    repo: &Repository,
    pages: Vec<Vec<u8>>,
    bases: Option<Vec<Vec<u8>>>,
) {
    let (saver, uploader) = BlobSaver::start(
        repo.storage().clone(),
        repo.keys().clone(),
        repo.index().clone(),
        repo.config().pack_size,
        repo.config().compression_level,
        1,
    );
    let saving = saver.clone();
    tokio::task::spawn_blocking(move || {
        for (i, page) in pages.iter().enumerate() {
            let id = saving.keys().content_id(page);
            match &bases {
                None => saving.save_with_id(BlobType::Data, id, page).unwrap(),
                Some(bases) => {
                    let base_id = saving.keys().content_id(&bases[i]);
                    let base = DeltaBase {
                        id: &base_id,
                        plaintext: &bases[i],
                    };
                    saving.save_data_with_base(id, page, base).unwrap();
                }
            }
        }
        saving.close().unwrap();
    })
    .await
    .unwrap();
    drop(saver);
    uploader.finish().await.unwrap();
}

/// Deltas are checked against their bases, read in runs from another pack; a
/// damaged base fails exactly the deltas against it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_are_checked_against_bases_read_in_runs() {
    let (storage, repo) = memory_repo().await;
    // More deltas than a segment takes (MAX_SEGMENT_ENTRIES), so segments are also
    // cut by count.
    let bases: Vec<Vec<u8>> = (0..600)
        .map(|i| crate::fuzzing::pseudo_random_bytes(2 * i + 1, 8192))
        .collect();
    save_pages(&repo, bases.clone(), None).await;
    let pages: Vec<Vec<u8>> = bases
        .iter()
        .enumerate()
        .map(|(i, base)| {
            let mut page = base.clone();
            page[100 + i..200 + i].fill(i as u8);
            page
        })
        .collect();
    save_pages(&repo, pages, Some(bases.clone())).await;

    let mut delta_pack = None;
    let mut base_pack = None;
    for (id, (kind, size)) in list_packs(&repo).await.unwrap() {
        let entries = read_pack_header(&repo, &id, kind, size).await.unwrap();
        if kind == PackKind::Data && entries.iter().all(|e| e.base.is_some()) {
            delta_pack = Some((id, size, entries));
        } else if kind == PackKind::Data {
            base_pack = Some((id, size, entries));
        }
    }
    let (id, size, entries) = delta_pack.expect("a pack of deltas");
    assert_eq!(entries.len(), 600);
    let name = crate::layout::pack(PackKind::Data, &id);
    let buffers = SegmentBuffers::default();
    for segment in [9000, 16 << 20] {
        let read = read_in_segments(&repo, &name, size, &entries, segment, &buffers).await;
        assert_eq!(read.hash, id, "segment {segment}");
        assert_eq!(
            (read.blobs_checked, read.bad.len()),
            (600, 0),
            "{:?}",
            read.bad
        );
    }

    // Damage base 7 in its pack: the delta against it, and only that one, fails.
    let (base_pack_id, _, base_entries) = base_pack.expect("a pack of bases");
    let base_name = crate::layout::pack(PackKind::Data, &base_pack_id);
    let damaged_base = repo.keys().content_id(&bases[7]);
    let at = base_entries
        .iter()
        .find(|e| e.id == damaged_base)
        .unwrap()
        .offset;
    let mut bytes = storage.get(&base_name).await.unwrap();
    bytes[at as usize + 60] ^= 1;
    storage.put(&base_name, &bytes).await.unwrap();
    let read = read_in_segments(&repo, &name, size, &entries, 9000, &buffers).await;
    let against_7 = entries
        .iter()
        .find(|e| e.base == Some(damaged_base))
        .unwrap();
    assert_eq!(read.bad.len(), 1, "{:?}", read.bad);
    assert_eq!(read.bad[0].0, against_7.id);
    assert!(read.bad[0].1.contains("its base"), "{}", read.bad[0].1);
}

/// The snapshot walk's index checks name a delta whose base is missing, or is itself
/// a delta, and pass one against a full Data blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referenced_deltas_need_a_full_data_blob_as_base() {
    let (_storage, repo) = memory_repo().await;
    let page = |seed| crate::fuzzing::pseudo_random_bytes(seed, 8192);
    let edit = |mut p: Vec<u8>, at: usize| {
        p[at..at + 64].fill(7);
        p
    };
    let (a, b, c) = (page(1), edit(page(1), 100), edit(edit(page(1), 100), 3000));
    let lost_base = page(2);
    let d = edit(page(2), 500);
    save_pages(&repo, vec![a.clone()], None).await;
    // b against a (good), c against b (a chain: no writer makes one), d against a
    // base that was never saved.
    save_pages(&repo, vec![b.clone()], Some(vec![a.clone()])).await;
    save_pages(
        &repo,
        vec![c.clone(), d.clone()],
        Some(vec![b.clone(), lost_base]),
    )
    .await;

    let id = |p: &[u8]| repo.keys().content_id(p);
    let mut references = References::default();
    let mut suspect = Suspects::new();
    for p in [&a, &b, &c, &d] {
        references.add(&repo, id(p), &mut suspect);
    }
    references.check(&repo, &mut suspect);
    assert!(references.missing.is_empty());
    let kinds: HashMap<BlobId, ProblemKind> = suspect
        .iter()
        .map(|(id, (kind, ..))| (*id, *kind))
        .collect();
    assert_eq!(kinds.len(), 2, "{suspect:?}");
    assert_eq!(kinds[&id(&c)], "delta_base_invalid");
    assert!(suspect[&id(&c)].2.contains("itself a delta"), "{suspect:?}");
    assert_eq!(kinds[&id(&d)], "delta_base_missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pack_read_in_segments_checks_every_blob_and_hashes_every_byte() {
    let (storage, repo) = memory_repo().await;
    // Sizes from 1 byte to 40 KiB, content that does not compress away.
    let blobs = (0..40u32)
        .map(|n| {
            let len = 1 + (n as usize * 1021) % (40 << 10);
            (0..len)
                .map(|i| (i as u32).wrapping_mul(2_654_435_761).wrapping_add(n) as u8)
                .collect()
        })
        .collect();
    save_pages(&repo, blobs, None).await;
    let packs = list_packs(&repo).await.unwrap();
    let (&id, &(kind, size)) = packs
        .iter()
        .find(|(_, (k, _))| *k == PackKind::Data)
        .unwrap();
    let name = crate::layout::pack(kind, &id);
    let entries = read_pack_header(&repo, &id, kind, size).await.unwrap();
    assert_eq!(entries.len(), 40);
    // Shared by every read below, so buffers come back holding other bytes.
    let buffers = SegmentBuffers::default();
    // Segments smaller than one blob, about one blob, and the whole pack.
    for segment in [1, 700, 5000, 64 << 10, 16 << 20] {
        let read = read_in_segments(&repo, &name, size, &entries, segment, &buffers).await;
        assert_eq!(read.hash, id, "segment {segment}");
        assert_eq!(read.bytes, size);
        assert_eq!(read.blobs_checked, 40);
        assert!(read.bad.is_empty(), "segment {segment}: {:?}", read.bad);
        // The header comes from the last segment when it holds it (not with 1-byte
        // segments), and equals the one read on its own.
        if segment == 1 {
            assert!(read.sealed_header.is_none());
        }
        if segment >= 64 << 10 {
            assert!(
                matches!(read.sealed_header, Some(Ok(_))),
                "segment {segment}"
            );
        }
        let header = header_after_read(&repo, &id, kind, size, read.sealed_header)
            .await
            .unwrap();
        assert_eq!(header, entries, "segment {segment}");
    }
    // One damaged byte: exactly its blob is reported, and the pack hash differs.
    let victim = entries[17];
    storage.corrupt_byte(
        &name,
        victim.offset as usize + victim.stored_len as usize / 2,
    );
    for segment in [1, 5000, 16 << 20] {
        let read = read_in_segments(&repo, &name, size, &entries, segment, &buffers).await;
        assert_ne!(read.hash, id);
        assert_eq!(read.bad.len(), 1, "segment {segment}");
        assert_eq!(read.bad[0].0, victim.id);
    }
    // A damaged header byte, then a damaged trailer: the header taken from the last
    // segment is refused, as the one read on its own is.
    let header_byte = size as usize - TRAILER_LEN - 10;
    let trailer_byte = size as usize - 1;
    for (what, at) in [("header", header_byte), ("trailer", trailer_byte)] {
        storage.corrupt_byte(&name, at);
        for segment in [1, 16 << 20] {
            let read = read_in_segments(&repo, &name, size, &entries, segment, &buffers).await;
            let header = header_after_read(&repo, &id, kind, size, read.sealed_header).await;
            assert!(header.is_err(), "damaged {what}, segment {segment}");
        }
    }
}

/// Verify checked four packs at once whatever they held: packs of 16 MiB of 64-byte
/// blobs (100k entries each) kept four headers and four index lists decoded together,
/// and verify's peak grew from 76 to 225 MiB at 10 million blobs.
#[test]
fn packs_of_many_blobs_are_checked_fewer_at_once() {
    use super::read_data::ENTRIES_CHECKED_AT_ONCE as MAX;
    let mut flight = EntriesInFlight::default();
    // Nothing in flight: even a pack larger than the bound starts.
    assert!(!flight.full(MAX * 2));
    flight.started(MAX * 2);
    assert!(flight.full(1));
    flight.finished(MAX * 2);
    // Small packs: PACKS_READ_AT_ONCE of them.
    for _ in 0..PACKS_READ_AT_ONCE {
        assert!(!flight.full(100));
        flight.started(100);
    }
    assert!(flight.full(100));
    flight.finished(100);
    assert!(!flight.full(100));
    // Large packs: as many as fit in the bound.
    let mut flight = EntriesInFlight::default();
    flight.started(MAX / 2);
    assert!(!flight.full(MAX / 2));
    flight.started(MAX / 2);
    assert!(flight.full(1));
}
