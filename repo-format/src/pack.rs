//! Packs: many encoded blobs in one storage file, followed by an encrypted header that
//! lists them, so an index can always be rebuilt from the packs alone.
//!
//! `pack = blob_0 || ... || blob_{n-1} || sealed_header || header_len u32 || version u8 || "dprpack"`
//! where `sealed_header = nonce || AEAD("dprepo pack header", count u32 || entry*)` and
//! `entry = type u8 || id[32] || stored_len u32 || raw_len u32`, followed by `base[32]`
//! when the type byte has [`DELTA_FLAG`] (version 2 packs only): the blob is stored as a
//! delta against that Data blob. Blob offsets follow from the order: blob i starts at
//! the sum of the stored lengths before it.
//! The pack's storage id is the BLAKE3 hash of all its bytes.

use crate::blob::{BlobType, MIN_STORED_BLOB};
use crate::codec::{Reader, Writer};
use crate::crypto::{Keys, SEAL_OVERHEAD};
use crate::error::{Error, Result};
use crate::id::{BlobId, ID_LEN};

/// Pack format version of packs without delta blobs (what every build since the first
/// reads).
pub const PACK_VERSION: u8 = 1;
/// Pack format version of packs holding delta blobs: header entries may carry
/// [`DELTA_FLAG`] and a base id. The highest version this build reads.
pub const PACK_VERSION_DELTA: u8 = 2;
/// Bit of a header or index entry's type byte: the blob is a delta, and the entry ends
/// with the id of its base.
pub const DELTA_FLAG: u8 = 0x80;
/// Magic at the very end of a pack.
pub const PACK_MAGIC: &[u8; 7] = b"dprpack";
/// Offset of the header length within the trailer.
pub const TRAILER_HEADER_LEN_OFFSET: usize = 0;
/// Offset of the version byte within the trailer.
pub const TRAILER_VERSION_OFFSET: usize = TRAILER_HEADER_LEN_OFFSET + 4;
/// Offset of the magic within the trailer.
pub const TRAILER_MAGIC_OFFSET: usize = TRAILER_VERSION_OFFSET + 1;
/// Length of the trailer.
pub const TRAILER_LEN: usize = TRAILER_MAGIC_OFFSET + PACK_MAGIC.len();
/// Length of one header entry.
pub const HEADER_ENTRY_LEN: usize = 1 + ID_LEN + 4 + 4;
/// Associated data of the pack header.
pub const PACK_HEADER_AAD: &[u8] = b"dprepo pack header";

/// Which directory a pack lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PackKind {
    /// `data/`: file and stream content.
    Data = 0,
    /// `meta/`: trees and chunk lists (small, read often, cacheable).
    Meta = 1,
}

impl PackKind {
    /// Decode the stored byte.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for an unknown value.
    pub fn from_u8(v: u8, object: &str) -> Result<Self> {
        match v {
            0 => Ok(PackKind::Data),
            1 => Ok(PackKind::Meta),
            _ => Err(Error::corrupt(object, format!("unknown pack kind {v}"))),
        }
    }

    /// The kind of pack blobs of `t` go to.
    pub fn for_blob(t: BlobType) -> Self {
        if t.is_metadata() {
            PackKind::Meta
        } else {
            PackKind::Data
        }
    }

    /// Both kinds, data first.
    pub const ALL: [PackKind; 2] = [PackKind::Data, PackKind::Meta];
}

/// One blob of a pack, as listed in its header and in index files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    /// Blob type.
    pub blob_type: BlobType,
    /// Content id of the plaintext.
    pub id: BlobId,
    /// Offset of the stored blob in the pack.
    pub offset: u32,
    /// Length of the stored (encoded) blob.
    pub stored_len: u32,
    /// Length of the plaintext.
    pub raw_len: u32,
    /// For a delta blob, the full Data blob it was compressed against (needed to decode
    /// it, and kept alive by garbage collection while this blob is).
    pub base: Option<BlobId>,
}

impl PackEntry {
    /// The entry's type byte as stored: the blob type, with [`DELTA_FLAG`] for a delta.
    pub fn type_byte(&self) -> u8 {
        self.blob_type as u8 | if self.base.is_some() { DELTA_FLAG } else { 0 }
    }

    /// Encoded length of the entry in a pack header.
    pub fn header_len(&self) -> usize {
        HEADER_ENTRY_LEN + if self.base.is_some() { ID_LEN } else { 0 }
    }
}

/// Decode an entry's type byte: the blob type and whether a base id follows.
///
/// # Errors
/// [`Error::Corrupt`] for an unknown type, a delta that is not a Data blob, or a delta
/// in a structure of a version that has none (`deltas_allowed` false).
pub fn decode_type_byte(v: u8, deltas_allowed: bool, object: &str) -> Result<(BlobType, bool)> {
    let delta = v & DELTA_FLAG != 0;
    let blob_type = BlobType::from_u8(v & !DELTA_FLAG, object)?;
    if delta && (!deltas_allowed || blob_type != BlobType::Data) {
        return Err(Error::corrupt(object, format!("unknown blob type {v}")));
    }
    Ok((blob_type, delta))
}

/// Check a delta entry's base: a different blob than the entry itself.
///
/// # Errors
/// [`Error::Corrupt`] when a blob names itself as its base.
pub fn check_base(id: &BlobId, base: Option<&BlobId>, object: &str) -> Result<()> {
    if base == Some(id) {
        return Err(Error::corrupt(
            object,
            format!("blob {} is a delta against itself", id.short()),
        ));
    }
    Ok(())
}

/// Accumulates encoded blobs into one pack in memory.
#[derive(Debug)]
pub struct PackBuilder {
    kind: PackKind,
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
}

/// A complete pack, ready to upload.
#[derive(Debug)]
pub struct FinishedPack {
    /// Storage id (BLAKE3 of `bytes`).
    pub id: BlobId,
    /// Which directory it goes to.
    pub kind: PackKind,
    /// The pack file.
    pub bytes: Vec<u8>,
    /// The blobs it holds.
    pub entries: Vec<PackEntry>,
}

impl PackBuilder {
    /// An empty pack of `kind`.
    pub fn new(kind: PackKind) -> Self {
        PackBuilder {
            kind,
            buf: Vec::new(),
            entries: Vec::new(),
        }
    }

    /// An empty pack of `kind` with room for `bytes` of blobs, so a pack of the target
    /// size never reallocates (doubling would hold up to twice its size in memory).
    pub fn with_capacity(kind: PackKind, bytes: usize) -> Self {
        Self::with_buffer(kind, Vec::with_capacity(bytes))
    }

    /// An empty pack of `kind` written into `buf` (cleared first): a buffer of an earlier
    /// pack, already backed by memory.
    pub fn with_buffer(kind: PackKind, mut buf: Vec<u8>) -> Self {
        buf.clear();
        PackBuilder {
            kind,
            buf,
            entries: Vec::new(),
        }
    }

    /// Append an encoded blob.
    pub fn add(&mut self, blob_type: BlobType, id: BlobId, stored: &[u8], raw_len: u32) {
        self.add_entry(blob_type, id, stored, raw_len, None);
    }

    /// Append an encoded blob, a delta against `base` when given.
    pub fn add_entry(
        &mut self,
        blob_type: BlobType,
        id: BlobId,
        stored: &[u8],
        raw_len: u32,
        base: Option<BlobId>,
    ) {
        self.entries.push(PackEntry {
            blob_type,
            id,
            offset: self.buf.len() as u32,
            stored_len: stored.len() as u32,
            raw_len,
            base,
        });
        self.buf.extend_from_slice(stored);
    }

    /// Bytes of blob data so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no blob was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Append the header and trailer.
    pub fn finish(mut self, keys: &Keys) -> FinishedPack {
        let mut w = Writer::new();
        w.u32(self.entries.len() as u32);
        for e in &self.entries {
            w.u8(e.type_byte());
            w.id(&e.id);
            w.u32(e.stored_len);
            w.u32(e.raw_len);
            if let Some(base) = &e.base {
                w.id(base);
            }
        }
        let header = keys.seal(PACK_HEADER_AAD, &w.finish());
        self.buf.extend_from_slice(&header);
        self.buf
            .extend_from_slice(&(header.len() as u32).to_le_bytes());
        // Version 1 unless a delta needs 2, so packs without deltas stay readable by
        // builds that predate them.
        let has_delta = self.entries.iter().any(|e| e.base.is_some());
        self.buf.push(if has_delta {
            PACK_VERSION_DELTA
        } else {
            PACK_VERSION
        });
        self.buf.extend_from_slice(PACK_MAGIC);
        FinishedPack {
            id: BlobId::of_stored(&self.buf),
            kind: self.kind,
            bytes: self.buf,
            entries: self.entries,
        }
    }
}

/// Parse a pack trailer (its last [`TRAILER_LEN`] bytes) and return the length of the
/// sealed header that precedes it and the pack version.
///
/// # Errors
/// [`Error::Corrupt`] if the pack is too short, the magic is wrong or the header length
/// does not fit in the pack; [`Error::UnsupportedVersion`] for an unknown pack version.
pub fn parse_trailer(trailer: &[u8], pack_len: u64, object: &str) -> Result<(u32, u8)> {
    if trailer.len() != TRAILER_LEN || pack_len < TRAILER_LEN as u64 {
        return Err(Error::corrupt(
            object,
            format!("pack of {pack_len} bytes is too short for its trailer"),
        ));
    }
    if &trailer[TRAILER_MAGIC_OFFSET..] != PACK_MAGIC {
        return Err(Error::corrupt(
            object,
            "pack trailer magic missing (truncated or not a pack)",
        ));
    }
    let version = trailer[TRAILER_VERSION_OFFSET];
    if version == 0 || version > PACK_VERSION_DELTA {
        return Err(Error::UnsupportedVersion {
            object: object.into(),
            found: u32::from(version),
            supported: u32::from(PACK_VERSION_DELTA),
        });
    }
    let mut len = [0u8; 4];
    len.copy_from_slice(&trailer[..4]);
    let header_len = u32::from_le_bytes(len);
    if u64::from(header_len) + TRAILER_LEN as u64 > pack_len
        || (header_len as usize) < SEAL_OVERHEAD + 4
    {
        return Err(Error::corrupt(
            object,
            format!("header length {header_len} does not fit in a pack of {pack_len} bytes"),
        ));
    }
    Ok((header_len, version))
}

/// Decrypt and parse a sealed pack header; checks that the listed blobs exactly fill the
/// pack before the header.
///
/// # Errors
/// [`Error::Corrupt`] naming `object` on any inconsistency.
pub fn decode_header(
    keys: &Keys,
    sealed: &[u8],
    pack_len: u64,
    version: u8,
    object: &str,
) -> Result<Vec<PackEntry>> {
    let plain = keys.open(PACK_HEADER_AAD, sealed, object)?;
    let mut r = Reader::new(&plain, object);
    let count = r.count("pack header entry count", HEADER_ENTRY_LEN)?;
    let data_len = pack_len - sealed.len() as u64 - TRAILER_LEN as u64;
    let mut entries = Vec::with_capacity(count);
    let mut offset = 0u64;
    for _ in 0..count {
        let (blob_type, delta) =
            decode_type_byte(r.u8("blob type")?, version >= PACK_VERSION_DELTA, object)?;
        let id = r.id("blob id")?;
        let stored_len = r.u32("stored length")?;
        let raw_len = r.u32("raw length")?;
        let base = if delta { Some(r.id("base id")?) } else { None };
        check_base(&id, base.as_ref(), object)?;
        if (stored_len as usize) < MIN_STORED_BLOB {
            return Err(r.corrupt(format!(
                "blob {} has impossible stored length {stored_len}",
                id.short()
            )));
        }
        entries.push(PackEntry {
            blob_type,
            id,
            offset: offset as u32,
            stored_len,
            raw_len,
            base,
        });
        offset += u64::from(stored_len);
        if offset > data_len {
            return Err(r.corrupt(format!(
                "header lists {offset}+ bytes of blobs but the pack holds {data_len}"
            )));
        }
    }
    r.finish()?;
    if offset != data_len {
        return Err(Error::corrupt(
            object,
            format!("header lists {offset} bytes of blobs but the pack holds {data_len}"),
        ));
    }
    Ok(entries)
}

/// Parse the header of a whole pack held in memory.
///
/// # Errors
/// As [`parse_trailer`] and [`decode_header`].
pub fn decode_pack(keys: &Keys, pack: &[u8], object: &str) -> Result<Vec<PackEntry>> {
    let len = pack.len() as u64;
    if pack.len() < TRAILER_LEN {
        return Err(Error::corrupt(
            object,
            format!("pack of {len} bytes is too short for its trailer"),
        ));
    }
    let (header_len, version) = parse_trailer(&pack[pack.len() - TRAILER_LEN..], len, object)?;
    let start = pack.len() - TRAILER_LEN - header_len as usize;
    decode_header(
        keys,
        &pack[start..pack.len() - TRAILER_LEN],
        len,
        version,
        object,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::{decode_blob, encode_blob};
    use crate::crypto::MasterKey;
    use proptest::prelude::*;

    /// A pack built in the buffer of an earlier, larger one (the saver reuses them)
    /// holds its own blobs only, and is as long as one built in a fresh buffer.
    #[test]
    fn pack_in_a_reused_buffer_holds_only_its_own_blobs() {
        let keys = Keys::derive(&MasterKey::from_bytes([6; 32]));
        let build = |buf: Vec<u8>, seeds: std::ops::Range<u64>| {
            let mut b = PackBuilder::with_buffer(PackKind::Data, buf);
            let mut blobs = Vec::new();
            for seed in seeds {
                let data = crate::fuzzing::pseudo_random_bytes(seed, 3000 + seed as usize);
                let id = keys.content_id(&data);
                b.add(
                    BlobType::Data,
                    id,
                    &encode_blob(&keys, BlobType::Data, &id, &data, 3),
                    data.len() as u32,
                );
                blobs.push(data);
            }
            (b.finish(&keys), blobs)
        };
        let (first, _) = build(Vec::new(), 0..10);
        let (reused, blobs) = build(first.bytes, 20..23);
        let (fresh, _) = build(Vec::new(), 20..23);
        assert_eq!(reused.bytes.len(), fresh.bytes.len());
        let entries = decode_pack(&keys, &reused.bytes, "pack").unwrap();
        assert_eq!(entries, reused.entries);
        assert_eq!(entries.len(), 3);
        for (e, data) in entries.iter().zip(&blobs) {
            let stored = &reused.bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
            assert_eq!(
                &decode_blob(&keys, e.blob_type, &e.id, stored, e.raw_len.into()).unwrap(),
                data
            );
        }
    }

    proptest! {
        #[test]
        fn pack_round_trip(blobs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..2000), 0..20)) {
            let keys = Keys::derive(&MasterKey::from_bytes([5; 32]));
            let mut b = PackBuilder::new(PackKind::Data);
            for data in &blobs {
                let id = keys.content_id(data);
                b.add(BlobType::Data, id, &encode_blob(&keys, BlobType::Data, &id, data, 3), data.len() as u32);
            }
            let pack = b.finish(&keys);
            prop_assert_eq!(pack.id, BlobId::of_stored(&pack.bytes));
            let entries = decode_pack(&keys, &pack.bytes, "pack").unwrap();
            prop_assert_eq!(&entries, &pack.entries);
            for (e, data) in entries.iter().zip(&blobs) {
                let stored = &pack.bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
                prop_assert_eq!(&decode_blob(&keys, e.blob_type, &e.id, stored, e.raw_len.into()).unwrap(), data);
            }
            // Every truncation is rejected.
            for cut in [1usize, 5, TRAILER_LEN, TRAILER_LEN + 3] {
                if cut <= pack.bytes.len() {
                    prop_assert!(decode_pack(&keys, &pack.bytes[..pack.bytes.len() - cut], "pack").is_err());
                }
            }
        }

        #[test]
        fn delta_entries_round_trip_in_version_2_packs(deltas in proptest::collection::vec(any::<bool>(), 1..8)) {
            let keys = Keys::derive(&MasterKey::from_bytes([5; 32]));
            let base_plain = vec![3u8; 8192];
            let base_id = keys.content_id(&base_plain);
            let mut b = PackBuilder::new(PackKind::Data);
            let mut plains = Vec::new();
            for (i, delta) in deltas.iter().enumerate() {
                let mut plain = base_plain.clone();
                plain[i] = 9;
                let id = keys.content_id(&plain);
                if *delta {
                    let base = crate::blob::DeltaBase { id: &base_id, plaintext: &base_plain };
                    let stored = crate::blob::encode_delta_blob(&keys, &id, &plain, base, 3).unwrap();
                    b.add_entry(BlobType::Data, id, &stored, 8192, Some(base_id));
                } else {
                    b.add(BlobType::Data, id, &encode_blob(&keys, BlobType::Data, &id, &plain, 3), 8192);
                }
                plains.push(plain);
            }
            let pack = b.finish(&keys);
            let version = pack.bytes[pack.bytes.len() - TRAILER_LEN + TRAILER_VERSION_OFFSET];
            let any_delta = deltas.iter().any(|d| *d);
            prop_assert_eq!(version, if any_delta { PACK_VERSION_DELTA } else { PACK_VERSION });
            let entries = decode_pack(&keys, &pack.bytes, "pack").unwrap();
            prop_assert_eq!(&entries, &pack.entries);
            for (e, plain) in entries.iter().zip(&plains) {
                let stored = &pack.bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
                let decoded = match e.base {
                    Some(base) => crate::blob::decode_delta_blob(&keys, &e.id, stored, 8192, crate::blob::DeltaBase { id: &base, plaintext: &base_plain }),
                    None => decode_blob(&keys, e.blob_type, &e.id, stored, 8192),
                };
                prop_assert_eq!(&decoded.unwrap(), plain);
            }
            // The same pack claiming version 1 cannot carry delta entries.
            let mut v1 = pack.bytes.clone();
            let at = v1.len() - TRAILER_LEN + TRAILER_VERSION_OFFSET;
            v1[at] = PACK_VERSION;
            prop_assert_eq!(decode_pack(&keys, &v1, "pack").is_ok(), !any_delta);
            v1[at] = PACK_VERSION_DELTA + 1;
            let refused = decode_pack(&keys, &v1, "pack").is_err_and(|e| matches!(e, Error::UnsupportedVersion { .. }));
            prop_assert!(refused);
        }

        #[test]
        fn decode_pack_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let keys = Keys::derive(&MasterKey::from_bytes([5; 32]));
            let _ = decode_pack(&keys, &bytes, "fuzz");
        }
    }
}
