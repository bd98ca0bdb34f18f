//! Snapshot locators (`locators/<snapshot id>`, SPEC.md section 14.1): the locations of
//! the Tree and ChunkList blobs reachable from one snapshot's root, so that a backup in
//! a fresh process can read its parent's trees without downloading the index.
//!
//! Body (envelope type 9, version 1):
//! `snapshot_id[32] || tree_id[32] || created i64 || pack_count u32 || pack*` with
//! `pack = pack_id[32] || kind u8 || entry_count u32 || entry*` and
//! `entry = type u8 || id[32] || offset u32 || stored_len u32 || raw_len u32`.
//!
//! The entry grammar is the index file's, but a pack record lists a subset of its
//! pack's blobs, which an index file must not do: that is why a locator is its own file
//! type that gc never reads as an index file. Only meta packs, only Tree and ChunkList
//! blobs, never a delta.
//!
//! A locator is derived data: deleting one only makes the next backup of that chain take
//! the full path (load the index).

use crate::blob::BlobType;
use crate::codec::{Reader, Writer};
use crate::crypto::Keys;
use crate::envelope::{open_file, seal_file, FileType};
use crate::error::{Error, Result};
use crate::id::{BlobId, ID_LEN};
use crate::index::{BlobLocation, IndexPack, INDEX_ENTRY_LEN, INDEX_PACK_HEADER_LEN};
use crate::pack::{decode_type_byte, PackEntry, PackKind};
use crate::repo::{Repository, Snapshot};
use crate::storage::Storage;
use std::collections::BTreeMap;

pub use crate::layout::LOCATORS_DIR;
/// Envelope version of locators; the highest this build reads.
pub const LOCATOR_VERSION: u8 = 1;
/// Length of one entry (as in an index file).
pub const LOCATOR_ENTRY_LEN: usize = INDEX_ENTRY_LEN;
/// Length of a pack record before its entries (as in an index file).
pub const LOCATOR_PACK_HEADER_LEN: usize = INDEX_PACK_HEADER_LEN;
/// Length of the fixed part of the body.
const LOCATOR_HEAD_LEN: usize = ID_LEN + ID_LEN + 8 + 4;

/// A decoded snapshot locator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locator {
    /// The snapshot it describes (the id in its name).
    pub snapshot: BlobId,
    /// That snapshot's root tree: a reader accepts the locator only for a manifest with
    /// this tree.
    pub tree: BlobId,
    /// When it was written (unix seconds, the writer's clock): gc deletes an orphan
    /// locator only once this is older than the stale-session window.
    pub created: i64,
    /// Meta packs and the Tree and ChunkList blobs in each that the snapshot reaches.
    pub packs: Vec<IndexPack>,
}

impl Locator {
    /// A locator for `snapshot` (root `tree`) from the locations of its meta blobs,
    /// grouped by pack.
    ///
    /// # Errors
    /// [`Error::Internal`] when a location is not a full Tree or ChunkList blob in a
    /// meta pack: the locator would not decode.
    pub fn from_locations(
        snapshot: BlobId,
        tree: BlobId,
        created: i64,
        blobs: impl IntoIterator<Item = (BlobId, BlobLocation)>,
    ) -> Result<Locator> {
        let mut by_pack: BTreeMap<BlobId, Vec<PackEntry>> = BTreeMap::new();
        for (id, loc) in blobs {
            if loc.pack_kind != PackKind::Meta
                || !matches!(loc.blob_type, BlobType::Tree | BlobType::ChunkList)
                || loc.base.is_some()
            {
                return Err(Error::Internal(format!(
                    "blob {} is not a metadata blob in a metadata pack",
                    id.short()
                )));
            }
            by_pack.entry(loc.pack_id).or_default().push(PackEntry {
                blob_type: loc.blob_type,
                id,
                offset: loc.offset,
                stored_len: loc.stored_len,
                raw_len: loc.raw_len,
                base: None,
            });
        }
        let packs = by_pack
            .into_iter()
            .map(|(id, mut entries)| {
                entries.sort_by_key(|e| e.offset);
                entries.dedup_by_key(|e| e.id);
                IndexPack {
                    id,
                    kind: PackKind::Meta,
                    entries,
                }
            })
            .collect();
        Ok(Locator {
            snapshot,
            tree,
            created,
            packs,
        })
    }

    /// Every listed blob id.
    pub fn ids(&self) -> impl Iterator<Item = BlobId> + '_ {
        self.packs
            .iter()
            .flat_map(|p| p.entries.iter().map(|e| e.id))
    }

    /// Number of listed blobs.
    pub fn blob_count(&self) -> usize {
        self.packs.iter().map(|p| p.entries.len()).sum()
    }

    /// The plaintext body.
    pub fn encode_body(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.id(&self.snapshot);
        w.id(&self.tree);
        w.i64(self.created);
        // Locator entries never carry a delta base (decoding refuses one), so this writes
        // exactly the 45-byte entries of section 14.1.
        crate::index::write_pack_records(&mut w, &self.packs);
        w.finish()
    }

    /// Encode as a sealed locator file.
    pub fn encode(&self, keys: &Keys) -> Vec<u8> {
        seal_file(
            keys,
            FileType::Locator,
            LOCATOR_VERSION,
            &self.encode_body(),
        )
    }

    /// Decode a sealed locator that storage holds as `locators/<snapshot>`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] (also when the body names another snapshot) and
    /// [`Error::UnsupportedVersion`], naming the file.
    pub fn decode(keys: &Keys, bytes: &[u8], snapshot: &BlobId) -> Result<Locator> {
        let object = crate::layout::locator(snapshot);
        let (_, body) = open_file(keys, bytes, FileType::Locator, LOCATOR_VERSION, &object)?;
        Self::decode_body(&body, snapshot, &object)
    }

    /// Decode the plaintext body of the locator of `snapshot`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming `object`.
    pub fn decode_body(body: &[u8], snapshot: &BlobId, object: &str) -> Result<Locator> {
        let mut r = Reader::new(body, object);
        if r.remaining() < LOCATOR_HEAD_LEN {
            return Err(r.corrupt("shorter than a locator's header"));
        }
        let named = r.id("snapshot id")?;
        if named != *snapshot {
            return Err(r.corrupt(format!(
                "describes snapshot {}, not the one it is named after",
                named.short()
            )));
        }
        let tree = r.id("tree id")?;
        let created = r.i64("created")?;
        let n = r.count("pack count", LOCATOR_PACK_HEADER_LEN)?;
        let mut packs = Vec::with_capacity(n);
        for _ in 0..n {
            let id = r.id("pack id")?;
            let kind = PackKind::from_u8(r.u8("pack kind")?, object)?;
            if kind != PackKind::Meta {
                return Err(r.corrupt(format!("pack {} is not a metadata pack", id.short())));
            }
            let m = r.count("entry count", LOCATOR_ENTRY_LEN)?;
            let mut entries = Vec::with_capacity(m);
            for _ in 0..m {
                let (blob_type, delta) = decode_type_byte(r.u8("blob type")?, false, object)?;
                let bid = r.id("blob id")?;
                if delta || !matches!(blob_type, BlobType::Tree | BlobType::ChunkList) {
                    return Err(
                        r.corrupt(format!("blob {} is not a tree or chunk list", bid.short()))
                    );
                }
                let offset = r.u32("offset")?;
                let stored_len = r.u32("stored length")?;
                let raw_len = r.u32("raw length")?;
                if offset.checked_add(stored_len).is_none() {
                    return Err(r.corrupt(format!("blob {} extends past 4 GiB", bid.short())));
                }
                entries.push(PackEntry {
                    blob_type,
                    id: bid,
                    offset,
                    stored_len,
                    raw_len,
                    base: None,
                });
            }
            packs.push(IndexPack { id, kind, entries });
        }
        r.finish()?;
        Ok(Locator {
            snapshot: *snapshot,
            tree,
            created,
            packs,
        })
    }
}

/// The locator of `snapshot`, if one binds to it: `locators/<id>`, else that of its
/// `original` (a `tag` or `snapshot expire` rewrite keeps the tree), accepted only when
/// its tree is the manifest's. A locator that is missing, damaged, of a newer version or
/// bound to another tree is none (the caller takes the full path); the reason is
/// returned as a note, except for a plain absence.
///
/// # Errors
/// Storage failures other than not found.
pub async fn load_for(
    repo: &Repository,
    snapshot: &Snapshot,
) -> Result<(Option<Locator>, Vec<String>)> {
    let mut notes = Vec::new();
    let mut candidates = vec![snapshot.id];
    if let Some(o) = snapshot.manifest.original {
        if o != snapshot.id {
            candidates.push(o);
        }
    }
    for id in candidates {
        let bytes = match repo.storage().get(&crate::layout::locator(&id)).await {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        match Locator::decode(repo.keys(), &bytes, &id) {
            Ok(l) if l.tree == snapshot.manifest.tree => return Ok((Some(l), notes)),
            Ok(_) => notes.push(format!(
                "{} describes another tree; not used",
                crate::layout::locator(&id)
            )),
            Err(e @ (Error::Corrupt { .. } | Error::UnsupportedVersion { .. })) => {
                notes.push(format!("{e}; not used"))
            }
            Err(e) => return Err(e),
        }
    }
    Ok((None, notes))
}

/// Store `locator` (before its snapshot's manifest). A locator already there is a retry
/// of the same manifest bytes (the name is the manifest's hash): success.
///
/// # Errors
/// Storage failures.
pub async fn write(repo: &Repository, locator: &Locator) -> Result<()> {
    let keys = repo.keys().clone();
    let l = locator.clone();
    let bytes = crate::repo::run_cpu(move || l.encode(&keys)).await?;
    match repo
        .storage()
        .create(&crate::layout::locator(&locator.snapshot), &bytes)
        .await
    {
        Ok(()) | Err(Error::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Snapshot ids of every locator in `storage` (names that are not a hex id are skipped).
///
/// # Errors
/// Storage failures.
pub async fn list(storage: &dyn Storage) -> Result<Vec<BlobId>> {
    Ok(storage
        .list_names(LOCATORS_DIR)
        .await?
        .iter()
        .filter_map(|n| crate::layout::id_in(LOCATORS_DIR, n))
        .collect())
}

/// Delete every locator (SPEC.md R-6 and F7b); returns how many were deleted.
///
/// # Errors
/// Storage failures other than a locator already gone.
pub async fn delete_all(storage: &dyn Storage) -> Result<usize> {
    let mut n = 0;
    for id in list(storage).await? {
        match storage.delete(&crate::layout::locator(&id)).await {
            Ok(()) => n += 1,
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;
    use proptest::prelude::*;

    fn keys() -> Keys {
        Keys::derive(&MasterKey::from_bytes([7; 32]))
    }

    fn sample() -> Locator {
        Locator {
            snapshot: BlobId([1; 32]),
            tree: BlobId([2; 32]),
            created: 1_700_000_000,
            packs: vec![IndexPack {
                id: BlobId([3; 32]),
                kind: PackKind::Meta,
                entries: vec![
                    PackEntry {
                        blob_type: BlobType::Tree,
                        id: BlobId([4; 32]),
                        offset: 0,
                        stored_len: 100,
                        raw_len: 200,
                        base: None,
                    },
                    PackEntry {
                        blob_type: BlobType::ChunkList,
                        id: BlobId([5; 32]),
                        offset: 100,
                        stored_len: 60,
                        raw_len: 64,
                        base: None,
                    },
                ],
            }],
        }
    }

    fn reseal(body: &[u8]) -> Vec<u8> {
        seal_file(&keys(), FileType::Locator, LOCATOR_VERSION, body)
    }

    fn is_corrupt(r: Result<Locator>) -> bool {
        matches!(r, Err(Error::Corrupt { .. }))
    }

    proptest! {
        #[test]
        fn locator_round_trips_and_refuses_damage(
            tree in proptest::array::uniform32(any::<u8>()),
            created in any::<i64>(),
            packs in proptest::collection::vec((proptest::array::uniform32(any::<u8>()),
                proptest::collection::vec((any::<bool>(), proptest::array::uniform32(any::<u8>()), 0u32..1 << 30, 41u32..1 << 20, any::<u32>()), 0..8)), 0..4),
            flip in any::<prop::sample::Index>(),
        ) {
            let k = keys();
            let l = Locator {
                snapshot: BlobId([9; 32]),
                tree: BlobId(tree),
                created,
                packs: packs.into_iter().map(|(id, es)| IndexPack {
                    id: BlobId(id),
                    kind: PackKind::Meta,
                    entries: es.into_iter().map(|(t, id, offset, stored_len, raw_len)| PackEntry {
                        blob_type: if t { BlobType::Tree } else { BlobType::ChunkList },
                        id: BlobId(id), offset, stored_len, raw_len, base: None,
                    }).collect(),
                }).collect(),
            };
            let bytes = l.encode(&k);
            prop_assert_eq!(bytes[crate::envelope::FILE_TYPE_OFFSET], 9);
            prop_assert_eq!(Locator::decode(&k, &bytes, &l.snapshot).unwrap(), l.clone());
            // Any flipped byte fails authentication (or the header check).
            let mut bad = bytes.clone();
            let i = flip.index(bad.len());
            bad[i] ^= 1;
            prop_assert!(Locator::decode(&k, &bad, &l.snapshot).is_err());
            // Bound to its name.
            prop_assert!(is_corrupt(Locator::decode(&k, &bytes, &BlobId([8; 32]))));
        }

        #[test]
        fn locator_body_decode_never_panics(body in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Locator::decode_body(&body, &BlobId([0; 32]), "fuzz");
            crate::fuzzing::fuzz_locator(&body);
        }
    }

    #[test]
    fn locator_refuses_what_an_index_file_would_accept() {
        let k = keys();
        let l = sample();
        let body = l.encode_body();
        let snap = l.snapshot;
        assert_eq!(Locator::decode(&k, &reseal(&body), &snap).unwrap(), l);
        let head = LOCATOR_HEAD_LEN;
        let pack_kind = head + ID_LEN;
        let first_type = head + LOCATOR_PACK_HEADER_LEN;
        // A data pack.
        let mut b = body.clone();
        b[pack_kind] = PackKind::Data as u8;
        assert!(is_corrupt(Locator::decode(&k, &reseal(&b), &snap)));
        // A Data blob (type 0).
        let mut b = body.clone();
        b[first_type] = BlobType::Data as u8;
        assert!(is_corrupt(Locator::decode(&k, &reseal(&b), &snap)));
        // A delta flag.
        let mut b = body.clone();
        b[first_type] |= crate::pack::DELTA_FLAG;
        assert!(is_corrupt(Locator::decode(&k, &reseal(&b), &snap)));
        // Trailing bytes.
        let mut b = body.clone();
        b.push(0);
        assert!(is_corrupt(Locator::decode(&k, &reseal(&b), &snap)));
        // A count larger than the bytes left.
        let mut b = body.clone();
        b[head - 4..head].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(is_corrupt(Locator::decode(&k, &reseal(&b), &snap)));
        // An entry reaching past 4 GiB.
        let mut b = body.clone();
        let off = first_type + 1 + ID_LEN;
        b[off..off + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(is_corrupt(Locator::decode(&k, &reseal(&b), &snap)));
        // An index file is not a locator.
        let index = crate::index::IndexFile::default().encode(&k);
        assert!(Locator::decode(&k, &index, &snap).is_err());
        // A newer version.
        let future = seal_file(&k, FileType::Locator, LOCATOR_VERSION + 1, &body);
        assert!(matches!(
            Locator::decode(&k, &future, &snap),
            Err(Error::UnsupportedVersion { .. })
        ));
    }
}
