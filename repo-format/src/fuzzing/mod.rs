//! Fuzzing entry points: one function per parser of bytes read from storage, and one
//! that opens a whole (tiny, in-memory) repository whose files were damaged.
//!
//! Contract of every `fuzz_*` function: for any input it returns without panicking, in
//! bounded time (milliseconds), and allocates no more than a bound derived from the input
//! size. Errors from the code under test are expected and ignored; a panic is a bug,
//! either in that code or caught by an assertion here. The assertions check what a
//! decoder promises beyond "no panic": a decoded value re-encodes to one that decodes to
//! the same value, decoded sizes are consistent, and a snapshot read from damaged storage
//! is either an error or exactly the bytes that were backed up, never other bytes.
//!
//! Encrypted files (config, index files, manifests, packs) are decoded twice: as stored
//! bytes under the fixed [`fuzz_keys`], and with the input sealed under those keys as the
//! plaintext payload. Mutated ciphertext never authenticates, so only the second reading
//! lets a fuzzer reach the parsers behind the encryption. Failures found only that way
//! need the repository key to trigger from storage; they are still bugs (a writer bug or
//! an older format version could produce such bodies).
//!
//! Used by the cargo-fuzz targets in `fuzz/` and by `tests/fuzz_corpus.rs`, which replays
//! the committed corpus (`fuzz/corpus/<target>/`) as an ordinary test on stable Rust.

use crate::backup::{backup, BackupOptions, BackupProgress, BackupSource, ParentChoice};
use crate::blob::{
    decode_blob, decode_delta_blob, decompress_payload, BlobType, DeltaBase, ENCODING_ZSTD_DELTA,
    MIN_STORED_BLOB,
};
use crate::chunker::{ChunkerParams, StreamChunker, StreamChunking, PAGE_SIZE};
use crate::config::{Config, CONFIG_FILE_VERSION};
use crate::content::{Content, LIST_FANOUT, MAX_LEVEL};
use crate::crypto::{Keys, MasterKey, NONCE_LEN};
use crate::envelope::{header, FileType};
use crate::error::{Error, Result};
use crate::id::{BlobId, ID_LEN};
use crate::index::{Index, IndexFile, INDEX_FILE_VERSION_DELTA};
use crate::key::{KdfParams, KeyFile, MAX_ITERATIONS, MAX_MEMORY_KIB, MAX_PARALLELISM};
use crate::manifest::{
    Lease, SessionMarker, SnapshotManifest, Tombstone, LEASE_FILE_VERSION, SESSION_FILE_VERSION,
    SNAPSHOT_FILE_VERSION, TOMBSTONE_FILE_VERSION,
};
use crate::pack::{
    decode_pack, decode_type_byte, parse_trailer, PackEntry, PACK_HEADER_AAD, PACK_MAGIC,
    PACK_VERSION_DELTA, TRAILER_LEN,
};
use crate::page_deltas::{TarPageMap, MAX_MEMBER_NAME};
use crate::repo::{InitOptions, Repository, CONFIG_NAME, KEYS_DIR};
use crate::restore::dump;
use crate::storage::{MemoryStorage, Storage};
use crate::tree::Tree;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};

mod repository;
pub use repository::*;

/// Master key of every repository the fuzzers and the seed corpus use, so stored files
/// of the corpus decrypt under [`fuzz_keys`].
pub const FUZZ_MASTER_KEY: [u8; 32] = *b"dprepo fuzzing master key, fixed";
/// Password of the key files of those repositories.
pub const FUZZ_PASSWORD: &[u8] = b"fuzz password";
/// Cheapest Argon2 cost the key file format accepts: opening a key takes microseconds.
pub const FUZZ_KDF: KdfParams = KdfParams::CHEAPEST;
/// Argon2 cost above which a fuzz input is not opened: a key file may legitimately ask for
/// up to [`MAX_MEMORY_KIB`] and [`MAX_ITERATIONS`], which is seconds of work, not a bug.
const MAX_FUZZ_KDF_MEMORY_KIB: u32 = 1024;
const MAX_FUZZ_KDF_ITERATIONS: u32 = 4;
/// Largest plaintext length a fuzz input may ask a decompressor for.
pub const MAX_FUZZ_PLAINTEXT: u64 = 1 << 20;
/// Largest blob area of a pack built around a fuzzed pack header (the seed packs are
/// smaller; a larger area only makes each run slower).
pub const MAX_FUZZ_BLOB_AREA: usize = 64 << 10;
/// Fixed nonce for sealing fuzz inputs, so a run is reproducible.
const FUZZ_NONCE: [u8; NONCE_LEN] = [0x5a; NONCE_LEN];
/// Seed of the pseudo-random plaintext of [`fuzz_delta_base`].
const FUZZ_DELTA_BASE_SEED: u64 = 1259;

/// A fuzz entry point.
pub type FuzzTarget = fn(&[u8]);

/// Every entry point by name; the names are those of the cargo-fuzz targets and of
/// their corpus directories.
pub const TARGETS: &[(&str, FuzzTarget)] = &[
    ("fuzz_config", fuzz_config),
    ("fuzz_key_file", fuzz_key_file),
    ("fuzz_pack", fuzz_pack),
    ("fuzz_index", fuzz_index),
    ("fuzz_tree", fuzz_tree),
    ("fuzz_page_map", fuzz_page_map),
    ("fuzz_manifest", fuzz_manifest),
    ("fuzz_chunk_list", fuzz_chunk_list),
    ("fuzz_blob", fuzz_blob),
    ("fuzz_repository", fuzz_repository),
    ("fuzz_stream_formats", fuzz_stream_formats),
    ("fuzz_locator", fuzz_locator),
];

/// The keys derived from [`FUZZ_MASTER_KEY`].
pub fn fuzz_keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys::derive(&MasterKey::from_bytes(FUZZ_MASTER_KEY)))
}

/// Seal `payload` (`encoding u8 || body`) into an envelope of `file_type` under
/// [`fuzz_keys`], as a writer would have.
pub fn seal_payload(file_type: FileType, version: u8, payload: &[u8]) -> Vec<u8> {
    let header = header(file_type, version);
    let mut out = header.to_vec();
    out.extend_from_slice(&fuzz_keys().seal_with_nonce(&FUZZ_NONCE, &header, payload));
    out
}

/// Fuzzing entry point: [`crate::locator::Locator::decode`] and [`crate::locator::Locator::decode_body`] (SPEC.md section 14.1) on arbitrary
/// bytes never panic, and what decodes re-encodes to the same locator.
pub fn fuzz_locator(data: &[u8]) {
    let keys = fuzz_keys();
    let id = BlobId(*blake3::hash(b"fuzz locator").as_bytes());
    // The snapshot id the body must carry: take it from the input when it is long enough,
    // so the fuzzer reaches the pack records.
    let named = data
        .get(..ID_LEN)
        .and_then(|b| <[u8; ID_LEN]>::try_from(b).ok())
        .map_or(id, BlobId);
    let sealed = seal_payload(FileType::Locator, crate::locator::LOCATOR_VERSION, data);
    let decoded = [
        crate::locator::Locator::decode(keys, data, &named),
        crate::locator::Locator::decode(keys, &sealed, &named),
        crate::locator::Locator::decode_body(data, &named, "fuzz locator"),
    ];
    for l in decoded.into_iter().flatten() {
        let again = crate::locator::Locator::decode(keys, &l.encode(keys), &named)
            .unwrap_or_else(|e| panic!("a decoded locator does not decode again: {e}"));
        assert_eq!(again, l, "locator round trip");
    }
}

/// Assert that `value` survives encoding and decoding unchanged.
fn assert_round_trip<T: PartialEq + std::fmt::Debug>(
    what: &str,
    value: &T,
    encode: impl Fn(&T) -> Vec<u8>,
    decode: impl Fn(&[u8]) -> Result<T>,
) {
    let bytes = encode(value);
    match decode(&bytes) {
        Ok(again) => assert_eq!(
            &again, value,
            "a decoded {what} re-encodes to a different value"
        ),
        Err(e) => panic!("a decoded {what} re-encodes to bytes that do not decode: {e}"),
    }
}

/// The repository config: `Config::decode`, then a round trip of what it accepts.
pub fn fuzz_config(data: &[u8]) {
    let keys = fuzz_keys();
    let sealed = seal_payload(FileType::Config, CONFIG_FILE_VERSION, data);
    for bytes in [data, &sealed[..]] {
        if let Ok(config) = Config::decode(keys, bytes) {
            if let Err(e) = config.validate() {
                panic!("Config::decode accepted a config that does not validate: {e}");
            }
            assert_round_trip(
                "config",
                &config,
                |c| c.encode(keys),
                |b| Config::decode(keys, b),
            );
        }
    }
}

/// Key files: `KeyFile::decode`, then `open` with [`FUZZ_PASSWORD`] when the Argon2 cost
/// it asks for is small. A key file that opens must yield [`FUZZ_MASTER_KEY`]: damage
/// may make a key unusable, never make it unwrap to another key.
pub fn fuzz_key_file(data: &[u8]) {
    let Ok(key) = KeyFile::decode(data, "fuzz key file") else {
        return;
    };
    let kdf = key.kdf;
    assert!(
        (1..=MAX_PARALLELISM).contains(&kdf.parallelism)
            && (1..=MAX_ITERATIONS).contains(&kdf.iterations)
            && kdf.memory_kib <= MAX_MEMORY_KIB,
        "KeyFile::decode accepted out-of-bounds Argon2 parameters {kdf:?}"
    );
    if kdf.memory_kib > MAX_FUZZ_KDF_MEMORY_KIB || kdf.iterations > MAX_FUZZ_KDF_ITERATIONS {
        return;
    }
    if let Ok(Some(master)) = key.open(FUZZ_PASSWORD) {
        assert_eq!(
            Keys::derive(&master).content_id(b"probe"),
            fuzz_keys().content_id(b"probe"),
            "a key file opened to a master key it was not created with"
        );
    }
}

/// Check what `decode_pack` promises about the entries of a pack of `pack_len` bytes
/// whose sealed header is `header_len` bytes.
fn check_pack_entries(entries: &[PackEntry], pack_len: usize, header_len: usize) {
    let data_len = pack_len - header_len - TRAILER_LEN;
    let mut offset = 0usize;
    for e in entries {
        assert_eq!(
            e.offset as usize, offset,
            "pack entry offsets are not contiguous"
        );
        assert!(
            e.stored_len as usize >= MIN_STORED_BLOB,
            "decode_pack accepted a blob of impossible stored length {}",
            e.stored_len
        );
        assert!(
            e.base.is_none() || e.blob_type == BlobType::Data,
            "decode_pack accepted a delta that is not a Data blob"
        );
        assert_ne!(
            e.base,
            Some(e.id),
            "decode_pack accepted a self-based delta"
        );
        offset += e.stored_len as usize;
    }
    assert_eq!(offset, data_len, "pack entries do not fill the pack");
}

fn trailer_header_len(pack: &[u8]) -> usize {
    let mut len = [0u8; 4];
    len.copy_from_slice(&pack[pack.len() - TRAILER_LEN..][..4]);
    u32::from_le_bytes(len) as usize
}

/// Packs: `parse_trailer` and `decode_pack` on the input as a stored pack, then each
/// blob it lists through `decode_blob`, and each delta whose base is a full Data blob of
/// the same pack or one of [`fuzz_delta_bases`] through `decode_delta_blob`. Second reading:
/// `blob area length u32 || header plaintext`, sealed into a pack of that many zero
/// bytes of blobs (capped at [`MAX_FUZZ_BLOB_AREA`]).
pub fn fuzz_pack(data: &[u8]) {
    let keys = fuzz_keys();
    if data.len() >= TRAILER_LEN {
        let _ = parse_trailer(
            &data[data.len() - TRAILER_LEN..],
            data.len() as u64,
            "fuzz pack",
        );
    }
    if let Ok(entries) = decode_pack(keys, data, "fuzz pack") {
        check_pack_entries(&entries, data.len(), trailer_header_len(data));
        // Full Data blobs that decode are bases for the deltas of the same pack; only
        // those a delta names are kept.
        let fixed = fuzz_delta_bases();
        let named: BTreeSet<BlobId> = entries.iter().filter_map(|e| e.base).collect();
        let mut bases: HashMap<BlobId, Vec<u8>> = HashMap::new();
        for e in &entries {
            let stored = &data[e.offset as usize..][..e.stored_len as usize];
            if e.base.is_some() {
                // A delta does not open without its base's id as associated data.
                assert!(decode_blob(keys, e.blob_type, &e.id, stored, e.raw_len.into()).is_err());
            } else if let Ok(plain) =
                decode_blob(keys, e.blob_type, &e.id, stored, e.raw_len.into())
            {
                check_blob_plaintext(&plain, &e.id, e.raw_len.into());
                if e.blob_type == BlobType::Data && named.contains(&e.id) {
                    bases.insert(e.id, plain);
                }
            }
        }
        for e in &entries {
            let Some(base_id) = e.base else { continue };
            let plaintext = match bases.get(&base_id) {
                Some(p) => &p[..],
                None => match fixed.iter().find(|b| b.id == base_id) {
                    Some(b) => &b.plaintext[..],
                    None => continue,
                },
            };
            let base = DeltaBase {
                id: &base_id,
                plaintext,
            };
            let stored = &data[e.offset as usize..][..e.stored_len as usize];
            if let Ok(plain) = decode_delta_blob(keys, &e.id, stored, e.raw_len.into(), base) {
                check_blob_plaintext(&plain, &e.id, e.raw_len.into());
            }
        }
    }
    if data.len() >= 4 {
        let mut area = [0u8; 4];
        area.copy_from_slice(&data[..4]);
        let area = (u32::from_le_bytes(area) as usize).min(MAX_FUZZ_BLOB_AREA);
        let sealed = keys.seal_with_nonce(&FUZZ_NONCE, PACK_HEADER_AAD, &data[4..]);
        let mut pack = vec![0u8; area];
        pack.extend_from_slice(&sealed);
        pack.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        // Version 2 reads everything version 1 does, and delta entries too.
        pack.push(PACK_VERSION_DELTA);
        pack.extend_from_slice(PACK_MAGIC);
        if let Ok(entries) = decode_pack(keys, &pack, "fuzz pack") {
            check_pack_entries(&entries, pack.len(), sealed.len());
        }
    }
}

/// Index files: `IndexFile::decode` (stored bytes and sealed payload) and
/// `IndexFile::decode_body`; what decodes must round-trip and load into an [`Index`]
/// that finds every blob it lists.
pub fn fuzz_index(data: &[u8]) {
    let keys = fuzz_keys();
    let sealed = seal_payload(FileType::Index, INDEX_FILE_VERSION_DELTA, data);
    let decoded = [
        IndexFile::decode(keys, data, "fuzz index"),
        IndexFile::decode(keys, &sealed, "fuzz index"),
        IndexFile::decode_body(data, INDEX_FILE_VERSION_DELTA, "fuzz index"),
    ];
    for file in decoded.into_iter().flatten() {
        assert_round_trip(
            "index file",
            &file,
            |f| f.encode(keys),
            |b| IndexFile::decode(keys, b, "fuzz index"),
        );
        let mut index = Index::new();
        if let Err(e) = index.add_file(&file) {
            panic!("in-memory index refused a decoded index file: {e}");
        }
        let mut ids = BTreeSet::new();
        for pack in &file.packs {
            for e in &pack.entries {
                ids.insert(e.id);
                let loc = index.get(&e.id);
                assert!(loc.is_some(), "an indexed blob is not found in the index");
            }
        }
        assert_eq!(index.blob_count(), ids.len(), "index blob count");
    }
}

/// Trees: `Tree::decode`; the encoding is canonical, so a decoded tree must re-encode
/// to exactly the input, and every node must be found by name.
pub fn fuzz_tree(data: &[u8]) {
    let Ok(tree) = Tree::decode(data, "fuzz tree") else {
        return;
    };
    match tree.encode() {
        Ok(bytes) => assert!(
            bytes == data,
            "a decoded tree re-encodes to other bytes ({} instead of {})",
            bytes.len(),
            data.len()
        ),
        Err(e) => panic!("a decoded tree does not re-encode: {e}"),
    }
    for node in &tree.nodes {
        assert_eq!(
            tree.get(&node.name),
            Some(node),
            "Tree::get misses a node of a decoded tree"
        );
        // Stream nodes of tar streams carry a page map (seeds from tar backups do).
        if let Ok(Some(map)) = TarPageMap::of_node(node, "fuzz tree") {
            check_page_map(&map, None);
        }
    }
}

/// Check what `TarPageMap::decode` promises about a map it accepted from `input` (when
/// known): valid names, a round trip, and an encoding no longer than the input (the
/// encoder shares the longest prefix, so it never needs more bytes than a map it read).
fn check_page_map(map: &TarPageMap, input: Option<&[u8]>) {
    for m in &map.members {
        assert!(
            (1..=MAX_MEMBER_NAME).contains(&m.name.len()),
            "TarPageMap::decode accepted a member name of {} bytes",
            m.name.len()
        );
    }
    assert_round_trip("tar page map", map, TarPageMap::encode, |b| {
        TarPageMap::decode(b, "fuzz page map")
    });
    if let Some(input) = input {
        let len = map.encode().len();
        assert!(
            len <= input.len(),
            "a decoded tar page map re-encodes to {len} bytes, more than its {} input bytes",
            input.len()
        );
    }
}

/// Tar page maps (tree node extension 1): `TarPageMap::decode`; what decodes has names
/// of 1..=[`MAX_MEMBER_NAME`] bytes and round-trips. Prefix sharing makes the encoding
/// not canonical (a writer may share less than it could), so the check is
/// `decode(encode(m)) == m`, not equality of bytes.
pub fn fuzz_page_map(data: &[u8]) {
    if let Ok(map) = TarPageMap::decode(data, "fuzz page map") {
        check_page_map(&map, Some(data));
    }
}

/// Stream recognition and cutting ([`StreamChunker`] in `Auto` mode): the input read as a
/// stream as is, and behind an xbstream record magic and a tar header, so a fuzzer
/// reaches the record and header parsers from any bytes. Whatever the bytes, the chunks
/// reassemble the input exactly and each is `1..=max_size` bytes; memory stays bounded
/// (the allocation check of the fuzz crate).
pub fn fuzz_stream_formats(data: &[u8]) {
    use dprepo_chunker::xbstream::MAGIC;
    let params = [
        ChunkerParams::SMALL,
        ChunkerParams::new(64, 256, 16384).unwrap_or(ChunkerParams::SMALL),
    ];
    let mut behind_magic = MAGIC.to_vec();
    behind_magic.extend_from_slice(data);
    for input in [data, &behind_magic[..]] {
        for p in params {
            let Ok(chunker) = StreamChunker::new(input, p, StreamChunking::Auto) else {
                continue;
            };
            let mut at = 0usize;
            for chunk in chunker {
                let Ok(chunk) = chunk else {
                    panic!("reading a slice failed");
                };
                assert!(!chunk.is_empty() && chunk.len() <= p.max_size as usize);
                assert_eq!(chunk[..], input[at..at + chunk.len()], "chunks reassemble");
                at += chunk.len();
            }
            assert_eq!(at, input.len(), "chunks cover the input");
        }
    }
}

/// Snapshot manifests and the other JSON files of the gc protocol (session markers,
/// tombstones, the gc lease): decode (stored bytes and sealed payload) and round-trip.
pub fn fuzz_manifest(data: &[u8]) {
    let keys = fuzz_keys();
    let o = "fuzz manifest";
    let snapshot = seal_payload(FileType::Snapshot, SNAPSHOT_FILE_VERSION, data);
    for bytes in [data, &snapshot[..]] {
        if let Ok(m) = SnapshotManifest::decode(keys, bytes, o) {
            assert_round_trip(
                "snapshot manifest",
                &m,
                |m| m.encode(keys),
                |b| SnapshotManifest::decode(keys, b, o),
            );
        }
    }
    let session = seal_payload(FileType::Session, SESSION_FILE_VERSION, data);
    for bytes in [data, &session[..]] {
        if let Ok(m) = SessionMarker::decode(keys, bytes, o) {
            assert_round_trip(
                "session marker",
                &m,
                |m| m.encode(keys),
                |b| SessionMarker::decode(keys, b, o),
            );
        }
    }
    let tombstone = seal_payload(FileType::Tombstone, TOMBSTONE_FILE_VERSION, data);
    for bytes in [data, &tombstone[..]] {
        if let Ok(t) = Tombstone::decode(keys, bytes, o) {
            assert_round_trip(
                "tombstone",
                &t,
                |t| t.encode(keys),
                |b| Tombstone::decode(keys, b, o),
            );
        }
    }
    let lease = seal_payload(FileType::Lease, LEASE_FILE_VERSION, data);
    for bytes in [data, &lease[..]] {
        if let Ok(l) = Lease::decode(keys, bytes, o) {
            assert_round_trip(
                "gc lease",
                &l,
                |l| l.encode(keys),
                |b| Lease::decode(keys, b, o),
            );
        }
    }
}

/// Chunk lists: `Content::decode_list` at every level 0..=MAX_LEVEL+1; what decodes is
/// at the level asked for, within the fan-out, and re-encodes to exactly the input.
pub fn fuzz_chunk_list(data: &[u8]) {
    for level in 0..=MAX_LEVEL + 1 {
        if let Ok(c) = Content::decode_list(data, level, "fuzz chunk list") {
            assert!(level <= MAX_LEVEL, "chunk list above MAX_LEVEL accepted");
            assert_eq!(c.level, level, "chunk list at another level accepted");
            assert!(
                (1..=LIST_FANOUT).contains(&c.ids.len()),
                "chunk list of {} ids accepted",
                c.ids.len()
            );
            assert!(
                c.encode_list() == data,
                "a decoded chunk list re-encodes to other bytes"
            );
        }
    }
}

/// Prefix of the associated data of blobs (SPEC.md section 8).
const BLOB_AAD_PREFIX: &[u8] = b"dprepo blob";

/// Associated data of delta blob `id` against `base`:
/// `"dprepo blob" || 0 (Data) || id || base` (SPEC.md section 8).
pub fn delta_blob_aad(id: &BlobId, base: &BlobId) -> Vec<u8> {
    let mut aad = BLOB_AAD_PREFIX.to_vec();
    aad.push(BlobType::Data as u8);
    aad.extend_from_slice(&id.0);
    aad.extend_from_slice(&base.0);
    aad
}

/// A fixed base the delta blobs of [`fuzz_blob`] (and the deltas of [`fuzz_pack`] that
/// name it) are decoded against; see [`fuzz_delta_bases`].
#[derive(Debug)]
pub struct FuzzDeltaBase {
    /// One tar page.
    pub plaintext: Vec<u8>,
    /// Its content id under [`fuzz_keys`].
    pub id: BlobId,
}

impl FuzzDeltaBase {
    /// As the base argument of the delta codec.
    pub fn as_base(&self) -> DeltaBase<'_> {
        DeltaBase {
            id: &self.id,
            plaintext: &self.plaintext,
        }
    }
}

/// First bytes (little-endian) of a structured zstd dictionary (`ZSTD_MAGIC_DICTIONARY`).
const ZSTD_DICTIONARY_MAGIC: [u8; 4] = 0xEC30_A437u32.to_le_bytes();

/// The fixed delta bases, built once per process: first [`fuzz_delta_base`], then a page
/// that starts with the zstd dictionary magic, which the delta codec must still treat as
/// raw content (it takes another path for such bases).
pub fn fuzz_delta_bases() -> &'static [FuzzDeltaBase; 2] {
    static BASES: OnceLock<[FuzzDeltaBase; 2]> = OnceLock::new();
    BASES.get_or_init(|| {
        let page = PAGE_SIZE as usize;
        let mut dictionary_like = pseudo_random_bytes(FUZZ_DELTA_BASE_SEED + 1, page);
        dictionary_like[..4].copy_from_slice(&ZSTD_DICTIONARY_MAGIC);
        [
            pseudo_random_bytes(FUZZ_DELTA_BASE_SEED, page),
            dictionary_like,
        ]
        .map(|plaintext| {
            let id = fuzz_keys().content_id(&plaintext);
            FuzzDeltaBase { plaintext, id }
        })
    })
}

/// The first fixed delta base: page 0 of member `base/5/1259` of [`fuzz_tar_streams`],
/// so the deltas a tar backup stores against that page decode in the fuzzers too.
pub fn fuzz_delta_base() -> &'static FuzzDeltaBase {
    &fuzz_delta_bases()[0]
}

/// Check a plaintext a blob decoder returned for blob `id` of `raw_len` bytes.
fn check_blob_plaintext(plain: &[u8], id: &BlobId, raw_len: u64) {
    assert_eq!(plain.len() as u64, raw_len, "blob of the wrong length");
    assert_eq!(fuzz_keys().content_id(plain), *id, "blob of the wrong id");
}

/// Blobs: input `raw_len u32 || type byte u8 || id[32] || stored`, the type byte as in a
/// pack header. A full blob goes through `decode_blob`. A delta (`DELTA_FLAG` on a Data
/// blob) goes through `decode_delta_blob` against each of [`fuzz_delta_bases`], twice: as
/// stored bytes, and with `stored` sealed under [`fuzz_keys`] and that base's id as the
/// payload (`raw_len` capped at [`MAX_FUZZ_PLAINTEXT`]), the only way a fuzzer reaches
/// the decoder behind the encryption. What decodes is `raw_len` bytes hashing to `id`. Every input also runs
/// `decompress_payload` on `stored` read as a payload with `raw_len` capped at
/// [`MAX_FUZZ_PLAINTEXT`], which must refuse a delta payload: it names no base.
pub fn fuzz_blob(data: &[u8]) {
    const PREFIX: usize = 4 + 1 + ID_LEN;
    if data.len() < PREFIX {
        let _ = decompress_payload(data, data.len() as u64, "fuzz blob");
        return;
    }
    let keys = fuzz_keys();
    let mut raw_len = [0u8; 4];
    raw_len.copy_from_slice(&data[..4]);
    let raw_len = u64::from(u32::from_le_bytes(raw_len));
    let mut id = [0u8; ID_LEN];
    id.copy_from_slice(&data[5..PREFIX]);
    let id = BlobId(id);
    let stored = &data[PREFIX..];
    let capped = raw_len.min(MAX_FUZZ_PLAINTEXT);
    match decode_type_byte(data[4], true, "fuzz blob") {
        Ok((blob_type, false)) => {
            if let Ok(plain) = decode_blob(keys, blob_type, &id, stored, raw_len) {
                check_blob_plaintext(&plain, &id, raw_len);
            }
        }
        Ok((_, true)) => {
            for base in fuzz_delta_bases() {
                if let Ok(plain) = decode_delta_blob(keys, &id, stored, raw_len, base.as_base()) {
                    check_blob_plaintext(&plain, &id, raw_len);
                }
                let aad = delta_blob_aad(&id, &base.id);
                let sealed = keys.seal_with_nonce(&FUZZ_NONCE, &aad, stored);
                if let Ok(plain) = decode_delta_blob(keys, &id, &sealed, capped, base.as_base()) {
                    check_blob_plaintext(&plain, &id, capped);
                }
            }
        }
        Err(_) => {}
    }
    if let Ok(plain) = decompress_payload(stored, capped, "fuzz blob") {
        assert_ne!(
            stored.first(),
            Some(&ENCODING_ZSTD_DELTA),
            "decompress_payload decoded a delta payload without its base"
        );
        assert_eq!(plain.len() as u64, capped, "payload of the wrong length");
    }
}

/// Deterministic pseudo-random bytes (xorshift64), `len` of them.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_accepts_empty_and_short_inputs() {
        for (name, target) in TARGETS {
            for input in [&b""[..], b"\0", b"dprp\x01\x01", &[0xff; 64]] {
                let r = std::panic::catch_unwind(|| target(input));
                assert!(r.is_ok(), "{name} panicked on {input:?}");
            }
        }
    }

    #[test]
    fn fuzz_repository_base_has_a_chunk_list_deltas_and_four_snapshots() {
        let base = fuzz_repository_base();
        let count = |p: &str| base.files.iter().filter(|(n, _)| n.starts_with(p)).count();
        assert_eq!(count("snapshots/"), 4);
        assert_eq!(count("keys/"), 1);
        assert!(count("meta/") >= 1 && count("data/") >= 1 && count("index/") >= 1);
        let chunk_lists = base
            .files
            .iter()
            .filter(|(n, _)| n.starts_with("meta/"))
            .flat_map(|(_, b)| decode_pack(fuzz_keys(), b, "meta pack").unwrap())
            .filter(|e| e.blob_type == BlobType::ChunkList)
            .count();
        assert!(
            chunk_lists >= 1,
            "the fuzz repository has no chunk-list blob"
        );
        // The second tar backup stored its changed pages as deltas, one against the
        // fixed base of fuzz_blob.
        let bases: Vec<BlobId> = base
            .files
            .iter()
            .filter(|(n, _)| n.starts_with("data/"))
            .flat_map(|(_, b)| decode_pack(fuzz_keys(), b, "data pack").unwrap())
            .filter_map(|e| e.base)
            .collect();
        assert_eq!(bases.len(), 3, "delta blobs of the fuzz repository");
        assert!(bases.contains(&fuzz_delta_base().id));
        // The undamaged repository reads back completely (asserted inside).
        fuzz_repository(&[]);
    }
}
