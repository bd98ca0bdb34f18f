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

/// The tiny repository [`fuzz_repository`] damages: its files in a fixed order, and the
/// streams its snapshots hold.
#[derive(Debug)]
pub struct FuzzRepository {
    /// Storage name and bytes of every file, in creation order (config and key first).
    pub files: Vec<(String, Vec<u8>)>,
    /// Name and content of every stream backed up, in order; each is one snapshot,
    /// stream `i` taken at [`stream_time`]`(i)`. [`FUZZ_TAR_STREAM`] appears twice.
    pub streams: Vec<(String, Vec<u8>)>,
}

/// Snapshot time of stream `i` of the fuzz repository: 2023-11-14 plus `i` seconds.
pub fn stream_time(i: usize) -> chrono::DateTime<chrono::Utc> {
    let secs = 1_700_000_000i64.saturating_add(i64::try_from(i).unwrap_or(i64::MAX));
    chrono::DateTime::from_timestamp(secs, 0).unwrap_or(chrono::DateTime::UNIX_EPOCH)
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

/// Stream chunker of the fuzz repository: the smallest chunks FastCDC allows, so a
/// 32 KiB stream has more than 64 chunks and its content needs a chunk-list blob.
pub fn fuzz_stream_chunker() -> ChunkerParams {
    ChunkerParams::new(64, 256, 1024).unwrap_or(ChunkerParams::SMALL)
}

/// Create a repository in `storage` whose master key is [`FUZZ_MASTER_KEY`] and whose
/// only key file opens with [`FUZZ_PASSWORD`] at [`FUZZ_KDF`], and open it.
///
/// # Errors
/// Storage errors; [`Error::InvalidArgument`] for invalid `options`.
pub async fn create_fuzz_repository(
    storage: Arc<dyn Storage>,
    options: &InitOptions,
) -> Result<Repository> {
    let master = MasterKey::from_bytes(FUZZ_MASTER_KEY);
    let key = KeyFile::create(&master, FUZZ_PASSWORD, FUZZ_KDF, "fuzz-host", "fuzz-user")?;
    let key_name = format!("{KEYS_DIR}{}", BlobId::of_stored(&key).to_hex());
    storage.create(&key_name, &key).await?;
    let mut config = Config::new(options.chunker, options.stream_chunker);
    config.pack_size = options.pack_size;
    config.compression_level = options.compression_level;
    config.created = chrono::DateTime::UNIX_EPOCH;
    config
        .validate()
        .map_err(|e| Error::InvalidArgument(e.to_string()))?;
    storage
        .create(CONFIG_NAME, &config.encode(fuzz_keys()))
        .await?;
    Repository::open(storage, FUZZ_PASSWORD).await
}

/// The two streams of the fuzz repository: 32 KiB (over 64 chunks: a chunk list) and
/// 8 KiB sharing its first 6 KiB (deduplicated, content inline in the tree).
pub fn fuzz_streams() -> Vec<(String, Vec<u8>)> {
    let mut first = pseudo_random_bytes(1, 16 << 10);
    first.extend(b"dprepo fuzzing stream ".iter().cycle().take(16 << 10));
    let mut second = first[..6 << 10].to_vec();
    second.extend(pseudo_random_bytes(2, 2 << 10));
    vec![("first.bin".into(), first), ("second.bin".into(), second)]
}

/// Name of the tar stream of the fuzz repositories: [`fuzz_tar_streams`] are two backups
/// of it, the second with the first as parent.
pub const FUZZ_TAR_STREAM: &str = "db.tar";

/// Chunker of the tar stream: small chunks for its header runs, and a maximum of one
/// page, the least with which a stream is cut tar-aware (SPEC.md section 11.1).
pub fn fuzz_tar_chunker() -> ChunkerParams {
    ChunkerParams::new(64, 256, PAGE_SIZE).unwrap_or(ChunkerParams::SMALL)
}

/// Size of a tar block.
const TAR_BLOCK: usize = 512;
// Fields of a ustar header, each after the previous one (name, mode, uid, gid, size,
// mtime, chksum, typeflag, linkname, magic and version).
const TAR_NAME_LEN: usize = 100;
const TAR_MODE_AT: usize = TAR_NAME_LEN;
const TAR_UID_AT: usize = TAR_MODE_AT + 8;
const TAR_GID_AT: usize = TAR_UID_AT + 8;
const TAR_SIZE_AT: usize = TAR_GID_AT + 8;
const TAR_MTIME_AT: usize = TAR_SIZE_AT + 12;
const TAR_CHKSUM_AT: usize = TAR_MTIME_AT + 12;
const TAR_TYPEFLAG_AT: usize = TAR_CHKSUM_AT + 8;
const TAR_MAGIC_AT: usize = TAR_TYPEFLAG_AT + 1 + 100;
const _: () = assert!(TAR_SIZE_AT == 124 && TAR_MAGIC_AT == 257);

/// The ustar header of regular file `name` (under 100 bytes) of `size` bytes, with
/// fixed mode, owner and mtime (1 700 000 000, octal).
fn ustar_header(name: &str, size: usize) -> [u8; TAR_BLOCK] {
    let mut h = [0u8; TAR_BLOCK];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[TAR_MODE_AT..TAR_UID_AT].copy_from_slice(b"0000644\0");
    h[TAR_UID_AT..TAR_GID_AT].copy_from_slice(b"0000000\0");
    h[TAR_GID_AT..TAR_SIZE_AT].copy_from_slice(b"0000000\0");
    h[TAR_SIZE_AT..TAR_MTIME_AT].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[TAR_MTIME_AT..TAR_CHKSUM_AT].copy_from_slice(b"14524237000\0");
    h[TAR_TYPEFLAG_AT] = b'0';
    h[TAR_MAGIC_AT..TAR_MAGIC_AT + 8].copy_from_slice(b"ustar\x0000");
    // The checksum is the byte sum with its own field read as spaces.
    h[TAR_CHKSUM_AT..TAR_TYPEFLAG_AT].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[TAR_CHKSUM_AT..TAR_TYPEFLAG_AT].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// A ustar archive of `members` (name and content), with its two zero end blocks.
fn ustar_archive(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in members {
        out.extend_from_slice(&ustar_header(name, data.len()));
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(TAR_BLOCK) * TAR_BLOCK, 0);
    }
    out.resize(out.len() + 2 * TAR_BLOCK, 0);
    out
}

/// Two versions of a tiny database directory as tar, for [`FUZZ_TAR_STREAM`]: members
/// `PG_VERSION` (not a page multiple: cut content-defined), `base/5/1259` (2 pages, page
/// 0 is [`fuzz_delta_base`]) and `base/5/16397` (3 pages). The second changes 8 bytes in
/// page 0 of `1259` and pages 1 and 2 of `16397`, and adds a fourth page to `16397`;
/// backed up after the first, it stores those three pages as deltas (against the first
/// one's pages) and the new page in full.
pub fn fuzz_tar_streams() -> [Vec<u8>; 2] {
    let page = PAGE_SIZE as usize;
    let mut rel_1259 = fuzz_delta_base().plaintext.clone();
    rel_1259.extend(pseudo_random_bytes(1260, page));
    let rel_16397 = pseudo_random_bytes(16397, 3 * page);
    let first = ustar_archive(&[
        ("PG_VERSION", b"15\n"),
        ("base/5/1259", &rel_1259),
        ("base/5/16397", &rel_16397),
    ]);
    // A few rows of each changed page: 8 bytes at different places of the page.
    let touch = |data: &mut Vec<u8>, page_no: usize, at: usize| {
        data[page_no * page + at..][..8].copy_from_slice(b"changed!");
    };
    let (mut rel_1259, mut rel_16397) = (rel_1259, rel_16397);
    touch(&mut rel_1259, 0, 100);
    touch(&mut rel_16397, 1, 4000);
    touch(&mut rel_16397, 2, 8000);
    rel_16397.extend(pseudo_random_bytes(16398, page));
    let second = ustar_archive(&[
        ("PG_VERSION", b"15\n"),
        ("base/5/1259", &rel_1259),
        ("base/5/16397", &rel_16397),
    ]);
    [first, second]
}

async fn build_fuzz_repository() -> Result<FuzzRepository> {
    let storage = MemoryStorage::new();
    let options = InitOptions::default()
        .with_kdf(FUZZ_KDF)
        .with_stream_chunker(fuzz_stream_chunker())
        .with_pack_size(crate::config::MIN_PACK_SIZE);
    let repo = create_fuzz_repository(Arc::new(storage.clone()), &options).await?;
    // Creation order fixes file positions: names hash bytes that hold random nonces, so
    // sorting by name would differ from one process to the next.
    let mut order: Vec<(usize, String)> = Vec::new();
    let record = |step: usize, order: &mut Vec<(usize, String)>| {
        let seen: BTreeSet<String> = order.iter().map(|(_, n)| n.clone()).collect();
        for name in storage.names() {
            if !seen.contains(&name) {
                order.push((step, name));
            }
        }
    };
    record(0, &mut order);
    // The tar stream twice: the second backup stores deltas (a version 2 pack and index
    // file) whose bases are in the first one's pack, so reads follow bases.
    let mut streams = fuzz_streams();
    streams.extend(fuzz_tar_streams().map(|t| (FUZZ_TAR_STREAM.to_string(), t)));
    for (i, (name, data)) in streams.iter().enumerate() {
        let mut options = BackupOptions::default().with_hostname("fuzz-host");
        options = if name == FUZZ_TAR_STREAM {
            options
                .with_chunker(fuzz_tar_chunker())
                .with_parent(ParentChoice::Auto)
        } else {
            options.with_parent(ParentChoice::None)
        };
        options.time = Some(stream_time(i));
        backup(
            &repo,
            BackupSource::Stream {
                name: name.clone(),
                reader: Box::new(std::io::Cursor::new(data.clone())),
            },
            options,
            Arc::new(BackupProgress::default()),
        )
        .await?;
        record(i + 1, &mut order);
    }
    let dir = |name: &str| name.rsplit_once('/').map_or("", |(d, _)| d).to_string();
    let mut files = Vec::new();
    for (step, name) in order {
        if let Ok(bytes) = storage.get(&name).await {
            files.push((step, dir(&name), bytes.len(), name, bytes));
        }
    }
    files.sort_by(|a, b| (a.0, &a.1, a.2).cmp(&(b.0, &b.1, b.2)));
    Ok(FuzzRepository {
        files: files.into_iter().map(|f| (f.3, f.4)).collect(),
        streams,
    })
}

/// The repository [`fuzz_repository`] damages, built once per process.
///
/// # Panics
/// If it cannot be built (a bug: it is an ordinary backup into memory).
pub fn fuzz_repository_base() -> &'static FuzzRepository {
    static BASE: OnceLock<FuzzRepository> = OnceLock::new();
    BASE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(build_fuzz_repository())
            .expect("building the fuzz repository")
    })
}

/// Length of one mutation record of [`fuzz_repository`].
pub const MUTATION_LEN: usize = 5;
/// Most mutations applied per input.
pub const MAX_MUTATIONS: usize = 32;

/// Resolve a mutation position: bit 15 set counts from the end, so headers and trailers
/// are both in reach of a 16-bit position.
fn position(pos: u16, len: usize) -> usize {
    let p = usize::from(pos & 0x7fff);
    if pos & 0x8000 != 0 {
        len.saturating_sub(1 + p)
    } else {
        p.min(len.saturating_sub(1))
    }
}

/// Apply the mutation records of `data` to `files`; returns how many changed something.
///
/// Record: `op u8 || file u8 || position u16 || value u8`, file index modulo the file
/// count. Ops (modulo 6): xor a byte with `value` (0 counts as 0x80), truncate at the
/// position, delete the file, replace it by a copy of file `value`, insert `value`,
/// write `value` as a u32 at the position.
pub fn apply_mutations(files: &mut [Option<Vec<u8>>], data: &[u8]) -> usize {
    let n = files.len();
    let mut applied = 0;
    for rec in data.chunks_exact(MUTATION_LEN).take(MAX_MUTATIONS) {
        let (op, file, value) = (rec[0] % 6, usize::from(rec[1]) % n, rec[4]);
        let pos = u16::from_le_bytes([rec[2], rec[3]]);
        let source = if op == 3 {
            files[usize::from(value) % n].clone()
        } else {
            None
        };
        let Some(bytes) = files[file].as_mut() else {
            continue;
        };
        let at = position(pos, bytes.len());
        match op {
            0 if !bytes.is_empty() => bytes[at] ^= if value == 0 { 0x80 } else { value },
            1 => bytes.truncate(at),
            2 => files[file] = None,
            3 => files[file] = source,
            4 => bytes.insert(at.min(bytes.len()), value),
            5 => {
                let v = u32::from(value).to_le_bytes();
                for (i, b) in v.iter().enumerate() {
                    if let Some(x) = bytes.get_mut(at + i) {
                        *x = *b;
                    }
                }
            }
            _ => continue,
        }
        applied += 1;
    }
    applied
}

/// A writer that refuses to grow past a capacity.
struct CappedWriter {
    buf: Vec<u8>,
    cap: usize,
}

impl std::io::Write for CappedWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + b.len() > self.cap {
            return Err(std::io::Error::other(
                "dump output exceeds the original stream",
            ));
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Panic on errors that only a bug can cause (a panicked task, a poisoned lock).
fn check_error(e: &Error, during: &str) {
    if let Error::Internal(msg) = e {
        panic!("internal error during {during}: {msg}");
    }
}

async fn read_damaged_repository(storage: MemoryStorage, base: &FuzzRepository, pristine: bool) {
    let repo = match Repository::open(Arc::new(storage), FUZZ_PASSWORD).await {
        Ok(r) => r,
        Err(e) => {
            assert!(
                !pristine,
                "the undamaged fuzz repository does not open: {e}"
            );
            return check_error(&e, "Repository::open");
        }
    };
    let snapshots = match repo.list_snapshots().await {
        Ok(s) => s,
        Err(e) => {
            assert!(!pristine, "listing snapshots failed: {e}");
            return check_error(&e, "list_snapshots");
        }
    };
    if pristine {
        assert_eq!(snapshots.len(), base.streams.len(), "snapshot count");
    }
    for snap in snapshots {
        let name = snap.manifest.stdin_name.clone().unwrap_or_default();
        // A stream name may have several snapshots; the time tells which one this is.
        let time = snap.manifest.time;
        let found = (base.streams.iter().enumerate())
            .find(|(i, (n, _))| *n == name && stream_time(*i) == time);
        let Some((_, (_, expected))) = found else {
            panic!(
                "a snapshot decoded from damaged storage names stream {name:?} at {time}, \
                 which was never backed up"
            );
        };
        let root = snap.manifest.tree;
        if let Err(e) = repo.find_node(&root, name.as_bytes()).await {
            assert!(!pristine, "find_node failed: {e}");
            check_error(&e, "find_node");
        }
        let mut out = CappedWriter {
            buf: Vec::new(),
            cap: expected.len(),
        };
        match dump(&repo, &root, name.as_bytes(), &mut out).await {
            Ok(n) => {
                assert_eq!(n as usize, out.buf.len(), "dump reports a wrong length");
                assert!(
                    out.buf == *expected,
                    "dump of {name} from damaged storage returned wrong bytes without an error"
                );
            }
            Err(e) => {
                assert!(!pristine, "dump of the undamaged repository failed: {e}");
                check_error(&e, "dump");
            }
        }
    }
}

/// The whole read path on damaged storage: the input is a list of mutation records
/// (see [`apply_mutations`]) applied to the files of [`fuzz_repository_base`]; then
/// `Repository::open`, `list_snapshots`, and `find_node` and `dump` of every snapshot.
/// Every step may fail, but a dump that succeeds must return exactly the stream that
/// was backed up, and the undamaged repository must read back completely.
pub fn fuzz_repository(data: &[u8]) {
    let base = fuzz_repository_base();
    let mut files: Vec<Option<Vec<u8>>> = base.files.iter().map(|(_, b)| Some(b.clone())).collect();
    let pristine = apply_mutations(&mut files, data) == 0;
    let storage = MemoryStorage::new();
    for ((name, _), bytes) in base.files.iter().zip(files) {
        let Some(bytes) = bytes else { continue };
        // Bound the work: a key file may ask for seconds of Argon2 (by design).
        if name.starts_with(KEYS_DIR) {
            if let Ok(key) = KeyFile::decode(&bytes, name) {
                if key.kdf.memory_kib > MAX_FUZZ_KDF_MEMORY_KIB
                    || key.kdf.iterations > MAX_FUZZ_KDF_ITERATIONS
                {
                    return;
                }
            }
        }
        storage.raw_put(name.clone(), bytes);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(read_damaged_repository(storage, base, pristine));
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
