//! Blob encoding: how one chunk, tree or chunk list is stored inside a pack.
//!
//! `stored = nonce[24] || AEAD(encryption key, aad, payload)` with
//! `aad = "dprepo blob" || type u8 || content id[32]` and
//! `payload = encoding u8 || body` (encoding 0: body is the plaintext; 1: body is a zstd
//! frame of the plaintext). Binding the content id and type as associated data means a
//! blob cannot be passed off as another one even by someone who can rewrite packs.

use crate::crypto::{Keys, SEAL_OVERHEAD};
use crate::error::{Error, Result};
use crate::id::BlobId;

/// Kinds of blobs; the byte value is stored in pack headers and index files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobType {
    /// File or stream content (goes to data packs).
    Data = 0,
    /// A directory tree (metadata packs).
    Tree = 1,
    /// A list of chunk ids of a large file (metadata packs).
    ChunkList = 2,
}

impl BlobType {
    /// Decode the stored byte.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for an unknown value.
    pub fn from_u8(v: u8, object: &str) -> Result<Self> {
        match v {
            0 => Ok(BlobType::Data),
            1 => Ok(BlobType::Tree),
            2 => Ok(BlobType::ChunkList),
            _ => Err(Error::corrupt(object, format!("unknown blob type {v}"))),
        }
    }

    /// Whether blobs of this type live in metadata packs.
    pub fn is_metadata(self) -> bool {
        !matches!(self, BlobType::Data)
    }
}

/// Payload encoding byte: body stored as is.
pub const ENCODING_RAW: u8 = 0;
/// Payload encoding byte: body is one zstd frame.
pub const ENCODING_ZSTD: u8 = 1;
/// Payload encoding byte: body is one zstd frame compressed with the plaintext of the
/// blob's base (a Data blob named in the pack header and index) as a raw-content prefix.
/// Only delta blobs use it, and they use nothing else.
pub const ENCODING_ZSTD_DELTA: u8 = 2;
/// The largest plaintext any blob may decode to. Bounds allocations on damaged input.
pub const MAX_BLOB_PLAINTEXT: u64 = 256 << 20;

/// Prefix of the associated data of blobs.
const BLOB_AAD_PREFIX: &[u8] = b"dprepo blob";

/// `"dprepo blob" || type || id`, and for a delta blob `|| base id`: a delta cannot be
/// passed off as a full blob, nor be decoded against another base.
pub fn blob_aad(blob_type: BlobType, id: &BlobId, base: Option<&BlobId>) -> Vec<u8> {
    let mut aad = Vec::with_capacity(BLOB_AAD_PREFIX.len() + 65);
    aad.extend_from_slice(BLOB_AAD_PREFIX);
    aad.push(blob_type as u8);
    aad.extend_from_slice(&id.0);
    if let Some(base) = base {
        aad.extend_from_slice(&base.0);
    }
    aad
}

/// The base of a delta blob: its id and its plaintext.
#[derive(Debug, Clone, Copy)]
pub struct DeltaBase<'a> {
    /// Content id of the base (a full Data blob).
    pub id: &'a BlobId,
    /// Its plaintext, the prefix the delta was compressed against.
    pub plaintext: &'a [u8],
}

/// Compress `plaintext` with zstd at `level` (0 disables compression) when that saves
/// space; returns the payload `encoding || body`.
///
/// Incompressible data is detected on a sample first, so random data costs almost no
/// compression time.
pub fn compress_payload(plaintext: &[u8], level: i32) -> Vec<u8> {
    const SAMPLE: usize = 16 << 10;
    let worth_trying = level != 0
        && plaintext.len() >= 64
        && (plaintext.len() <= 2 * SAMPLE || {
            let sample = &plaintext[..SAMPLE];
            with_compressor(1, |c| c.compress(sample))
                .map(|c| c.len() < SAMPLE * 97 / 100)
                .unwrap_or(false)
        });
    if worth_trying {
        if let Ok(compressed) = with_compressor(level, |c| c.compress(plaintext)) {
            if compressed.len() + 16 < plaintext.len() {
                let mut out = Vec::with_capacity(compressed.len() + 1);
                out.push(ENCODING_ZSTD);
                out.extend_from_slice(&compressed);
                return out;
            }
        }
    }
    let mut out = Vec::with_capacity(plaintext.len() + 1);
    out.push(ENCODING_RAW);
    out.extend_from_slice(plaintext);
    out
}

thread_local! {
    /// One zstd context per thread and level: creating a context for every blob cost
    /// about 8% of a backup's CPU (benches/NOTES.md, "Where backup time goes").
    static COMPRESSORS: std::cell::RefCell<Vec<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Run `f` with this thread's zstd compressor for `level`.
fn with_compressor<T>(
    level: i32,
    f: impl FnOnce(&mut zstd::bulk::Compressor<'static>) -> std::io::Result<T>,
) -> std::io::Result<T> {
    COMPRESSORS.with(|cell| {
        let Ok(mut compressors) = cell.try_borrow_mut() else {
            // Re-entered on this thread (not done today): use a fresh context.
            return f(&mut zstd::bulk::Compressor::new(level)?);
        };
        let at = match compressors.iter().position(|(l, _)| *l == level) {
            Some(at) => at,
            None => {
                compressors.push((level, zstd::bulk::Compressor::new(level)?));
                compressors.len() - 1
            }
        };
        f(&mut compressors[at].1)
    })
}

/// First bytes (little-endian) of a structured zstd dictionary.
const ZSTD_DICTIONARY_MAGIC: [u8; 4] = 0xEC30_A437u32.to_le_bytes();

/// Whether zstd's `*_usingDict` functions take `prefix` as raw content, as a prefix is
/// (else they would parse it as a structured dictionary).
fn loads_as_raw_content(prefix: &[u8]) -> bool {
    prefix.len() < 8 || prefix[..4] != ZSTD_DICTIONARY_MAGIC
}

thread_local! {
    /// Contexts for delta blobs: creating one per page cost 8% of a read-verify.
    static DELTA_CCTX: std::cell::RefCell<Option<zstd::zstd_safe::CCtx<'static>>> =
        const { std::cell::RefCell::new(None) };
    static DELTA_DCTX: std::cell::RefCell<Option<zstd::zstd_safe::DCtx<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn zstd_error(code: usize) -> String {
    zstd::zstd_safe::get_error_name(code).to_string()
}

/// One zstd frame of `data` compressed at `level` with `prefix` as raw-content history
/// (`ZSTD_CCtx_refPrefix`). A dictionary of raw content is the same history, and the
/// `usingDict` call binds no lifetime to the context, so this thread's context is
/// reused; a prefix that starts like a structured dictionary gets a fresh context.
fn zstd_with_prefix(data: &[u8], prefix: &[u8], level: i32) -> Result<Vec<u8>, String> {
    use zstd::zstd_safe::{CCtx, CParameter};
    let mut frame = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
    if !loads_as_raw_content(prefix) {
        let mut cctx = CCtx::create();
        cctx.set_parameter(CParameter::CompressionLevel(level))
            .map_err(zstd_error)?;
        cctx.ref_prefix(prefix).map_err(zstd_error)?;
        cctx.compress2(&mut frame, data).map_err(zstd_error)?;
        return Ok(frame);
    }
    DELTA_CCTX.with(|cell| {
        let mut slot = cell.try_borrow_mut().map_err(|e| e.to_string())?;
        let cctx = slot.get_or_insert_with(CCtx::create);
        cctx.compress_using_dict(&mut frame, data, prefix, level)
            .map_err(zstd_error)
    })?;
    Ok(frame)
}

/// Decode one zstd frame made by [`zstd_with_prefix`] into at most `capacity` bytes.
fn unzstd_with_prefix(frame: &[u8], prefix: &[u8], capacity: usize) -> Result<Vec<u8>, String> {
    use zstd::zstd_safe::DCtx;
    let mut plain = Vec::with_capacity(capacity);
    if !loads_as_raw_content(prefix) {
        let mut dctx = DCtx::create();
        dctx.ref_prefix(prefix).map_err(zstd_error)?;
        dctx.decompress(&mut plain, frame).map_err(zstd_error)?;
        return Ok(plain);
    }
    DELTA_DCTX.with(|cell| {
        let mut slot = cell.try_borrow_mut().map_err(|e| e.to_string())?;
        let dctx = slot.get_or_insert_with(DCtx::create);
        dctx.decompress_using_dict(&mut plain, frame, prefix)
            .map_err(zstd_error)
    })?;
    Ok(plain)
}

/// Decode a payload (`encoding || body`) into the plaintext, which must be exactly
/// `expected_len` bytes.
///
/// # Errors
/// [`Error::Corrupt`] for an unknown encoding, a damaged zstd frame or a length mismatch.
pub fn decompress_payload(payload: &[u8], expected_len: u64, object: &str) -> Result<Vec<u8>> {
    let (&encoding, body) = payload
        .split_first()
        .ok_or_else(|| Error::corrupt(object, "empty blob payload"))?;
    if expected_len > MAX_BLOB_PLAINTEXT {
        return Err(Error::corrupt(
            object,
            format!("plaintext length {expected_len} exceeds {MAX_BLOB_PLAINTEXT}"),
        ));
    }
    let plain = match encoding {
        ENCODING_RAW => body.to_vec(),
        ENCODING_ZSTD => bounded_zstd(body, expected_len, object)?,
        ENCODING_ZSTD_DELTA => {
            return Err(Error::corrupt(
                object,
                "delta payload in a blob that names no base",
            ))
        }
        other => {
            return Err(Error::corrupt(
                object,
                format!("unknown payload encoding {other}"),
            ))
        }
    };
    if plain.len() as u64 != expected_len {
        return Err(Error::corrupt(
            object,
            format!("decodes to {} bytes, expected {expected_len}", plain.len()),
        ));
    }
    Ok(plain)
}

/// Decode zstd `body` into at most `limit` bytes, in one pass into a buffer of the size
/// the frame declares (or `limit` when it declares none): no window buffer is allocated whatever a (possibly forged) frame header asks
/// for, and a frame that would produce more fails instead of growing the output.
/// Writers compress with the source size known, so their frames fit exactly.
///
/// # Errors
/// [`Error::Corrupt`] for a damaged frame or one that decodes to more than `limit`.
pub fn bounded_zstd(body: &[u8], limit: u64, object: &str) -> Result<Vec<u8>> {
    // The buffer is as large as the frame says it decodes to, when it says. Sized by
    // the limit instead, every envelope cost an allocation of 64 times its stored size,
    // and freeing those raised glibc's mmap and trim thresholds, so later buffers of a
    // few MiB stayed resident in its arenas. A frame that lies about its size fails to
    // decode into the buffer.
    let declared = match zstd::zstd_safe::get_frame_content_size(body) {
        Ok(Some(size)) if size > limit => {
            return Err(Error::corrupt(
                object,
                format!("zstd: frame declares {size} bytes, more than the {limit} allowed"),
            ))
        }
        Ok(Some(size)) => size,
        Ok(None) | Err(_) => limit,
    };
    let capacity = usize::try_from(declared.min(MAX_BLOB_PLAINTEXT))
        .map_err(|_| Error::corrupt(object, "zstd: output limit too large"))?;
    with_decompressor(|d| d.decompress(body, capacity))
        .map_err(|e| Error::corrupt(object, format!("zstd: {e}")))
}

thread_local! {
    /// One zstd decompression context per thread: creating one per blob cost about 7%
    /// of a restore's CPU.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Run `f` with this thread's zstd decompressor.
fn with_decompressor<T>(
    f: impl FnOnce(&mut zstd::bulk::Decompressor<'static>) -> std::io::Result<T>,
) -> std::io::Result<T> {
    DECOMPRESSOR.with(|cell| {
        let Ok(mut slot) = cell.try_borrow_mut() else {
            return f(&mut zstd::bulk::Decompressor::new()?);
        };
        match slot.as_mut() {
            Some(d) => f(d),
            None => {
                let mut d = zstd::bulk::Decompressor::new()?;
                let out = f(&mut d);
                *slot = Some(d);
                out
            }
        }
    })
}

/// Encode a blob for storage in a pack: compress (when it pays), then encrypt bound to
/// its type and id.
pub fn encode_blob(
    keys: &Keys,
    blob_type: BlobType,
    id: &BlobId,
    plaintext: &[u8],
    level: i32,
) -> Vec<u8> {
    let payload = compress_payload(plaintext, level);
    keys.seal(&blob_aad(blob_type, id, None), &payload)
}

/// Encode a Data blob as a delta against `base`: zstd at `level` (at least 1) with the
/// base's plaintext as prefix, encrypted bound to the id and the base id. The caller
/// decides whether it pays against [`encode_blob`].
///
/// # Errors
/// [`Error::Internal`] if zstd fails (out of memory).
pub fn encode_delta_blob(
    keys: &Keys,
    id: &BlobId,
    plaintext: &[u8],
    base: DeltaBase<'_>,
    level: i32,
) -> Result<Vec<u8>> {
    let mut payload = Vec::with_capacity(1 + zstd::zstd_safe::compress_bound(plaintext.len()));
    payload.push(ENCODING_ZSTD_DELTA);
    // The frame records the content size, which decoding checks.
    let frame = zstd_with_prefix(plaintext, base.plaintext, level.max(1))
        .map_err(|e| Error::Internal(format!("zstd delta: {e}")))?;
    payload.extend_from_slice(&frame);
    Ok(keys.seal(&blob_aad(BlobType::Data, id, Some(base.id)), &payload))
}

/// Decrypt, decompress and verify a stored blob: the plaintext must hash to `id`.
///
/// # Errors
/// [`Error::Corrupt`] if the bytes do not authenticate, do not decode to `raw_len`
/// bytes, or hash to another id.
pub fn decode_blob(
    keys: &Keys,
    blob_type: BlobType,
    id: &BlobId,
    stored: &[u8],
    raw_len: u64,
) -> Result<Vec<u8>> {
    let object = format!("{blob_type:?} blob {}", id.short()).to_lowercase();
    let payload = keys.open(&blob_aad(blob_type, id, None), stored, &object)?;
    let plain = decompress_payload(&payload, raw_len, &object)?;
    if keys.content_id(&plain) != *id {
        return Err(Error::corrupt(object, "content does not hash to its id"));
    }
    Ok(plain)
}

/// Decrypt, decode against its base and verify a delta blob (a Data blob whose pack
/// entry names `base`): the plaintext must be `raw_len` bytes and hash to `id`.
///
/// # Errors
/// [`Error::Corrupt`] if the bytes do not authenticate with this id and base, the
/// payload is not a delta, or it does not decode to `raw_len` bytes hashing to `id`.
pub fn decode_delta_blob(
    keys: &Keys,
    id: &BlobId,
    stored: &[u8],
    raw_len: u64,
    base: DeltaBase<'_>,
) -> Result<Vec<u8>> {
    let object = format!(
        "data blob {} (delta against {})",
        id.short(),
        base.id.short()
    );
    let payload = keys.open(
        &blob_aad(BlobType::Data, id, Some(base.id)),
        stored,
        &object,
    )?;
    let (&encoding, body) = payload
        .split_first()
        .ok_or_else(|| Error::corrupt(&object, "empty blob payload"))?;
    if encoding != ENCODING_ZSTD_DELTA {
        return Err(Error::corrupt(
            &object,
            format!("payload encoding {encoding} in a delta blob"),
        ));
    }
    if raw_len > MAX_BLOB_PLAINTEXT {
        return Err(Error::corrupt(
            &object,
            format!("plaintext length {raw_len} exceeds {MAX_BLOB_PLAINTEXT}"),
        ));
    }
    // Writers declare the content size; the output buffer is allocated only once the
    // frame agrees with the index, so a damaged length allocates nothing. One pass into
    // that buffer, as for full blobs: a frame cannot make it grow, and a forged window
    // size allocates nothing either.
    match zstd::zstd_safe::get_frame_content_size(body) {
        Ok(Some(declared)) if declared == raw_len => {}
        Ok(Some(declared)) => {
            return Err(Error::corrupt(
                &object,
                format!("zstd: frame declares {declared} bytes, expected {raw_len}"),
            ))
        }
        Ok(None) | Err(_) => {
            return Err(Error::corrupt(
                &object,
                "zstd: frame does not declare its size",
            ))
        }
    }
    let plain = unzstd_with_prefix(body, base.plaintext, raw_len as usize)
        .map_err(|e| Error::corrupt(&object, format!("zstd: {e}")))?;
    if plain.len() as u64 != raw_len {
        return Err(Error::corrupt(
            &object,
            format!("decodes to {} bytes, expected {raw_len}", plain.len()),
        ));
    }
    if keys.content_id(&plain) != *id {
        return Err(Error::corrupt(object, "content does not hash to its id"));
    }
    Ok(plain)
}

/// Check that a stored delta blob is intact without its base: it authenticates with its
/// id and base, and its payload is a delta frame declaring `raw_len` bytes. The content
/// hash needs the base's plaintext; authentication alone already fails on any changed
/// byte, so `repair packs` can tell a damaged delta from one whose base is unreadable.
///
/// # Errors
/// [`Error::Corrupt`] as [`decode_delta_blob`] for the checks made.
pub fn authenticate_delta_blob(
    keys: &Keys,
    id: &BlobId,
    base: &BlobId,
    stored: &[u8],
    raw_len: u64,
) -> Result<()> {
    let object = format!("data blob {} (delta against {})", id.short(), base.short());
    let payload = keys.open(&blob_aad(BlobType::Data, id, Some(base)), stored, &object)?;
    let (&encoding, body) = payload
        .split_first()
        .ok_or_else(|| Error::corrupt(&object, "empty blob payload"))?;
    if encoding != ENCODING_ZSTD_DELTA {
        return Err(Error::corrupt(
            &object,
            format!("payload encoding {encoding} in a delta blob"),
        ));
    }
    match zstd::zstd_safe::get_frame_content_size(body) {
        Ok(Some(declared)) if declared == raw_len => Ok(()),
        _ => Err(Error::corrupt(
            &object,
            format!("zstd: frame does not declare the expected {raw_len} bytes"),
        )),
    }
}

/// Smallest possible stored blob (empty plaintext, raw encoding).
pub const MIN_STORED_BLOB: usize = SEAL_OVERHEAD + 1;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;
    use proptest::prelude::*;

    fn keys() -> Keys {
        Keys::derive(&MasterKey::from_bytes([7; 32]))
    }

    proptest! {
        #[test]
        fn blob_round_trip(data in proptest::collection::vec(any::<u8>(), 0..5000), level in 0i32..4, rep in 1usize..4) {
            let keys = keys();
            let plain: Vec<u8> = data.iter().cycle().take(data.len() * rep).copied().collect();
            let id = keys.content_id(&plain);
            let stored = encode_blob(&keys, BlobType::Data, &id, &plain, level);
            prop_assert_eq!(decode_blob(&keys, BlobType::Data, &id, &stored, plain.len() as u64).unwrap(), plain.clone());
            // Wrong type, wrong length, flipped byte: all rejected.
            prop_assert!(decode_blob(&keys, BlobType::Tree, &id, &stored, plain.len() as u64).is_err());
            prop_assert!(decode_blob(&keys, BlobType::Data, &id, &stored, plain.len() as u64 + 1).is_err());
            let mut bad = stored.clone();
            let i = bad.len() / 2;
            bad[i] ^= 0x40;
            prop_assert!(decode_blob(&keys, BlobType::Data, &id, &bad, plain.len() as u64).is_err());
        }

        #[test]
        fn decompress_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..300), len in 0u64..100_000) {
            let _ = decompress_payload(&payload, len, "fuzz");
        }
    }

    #[test]
    fn compressible_data_is_compressed_and_random_is_not() {
        let zeros = vec![0u8; 100_000];
        assert_eq!(compress_payload(&zeros, 3)[0], ENCODING_ZSTD);
        let mut x = 1u64;
        let random: Vec<u8> = (0..100_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert_eq!(compress_payload(&random, 3)[0], ENCODING_RAW);
    }

    /// Found by fuzz_blob: a frame whose header asks for a 128 MiB window made the
    /// streaming decoder allocate it although the caller expected one byte. Decoding
    /// now goes in one pass into an output of the expected size, which needs no window:
    /// the frame's one byte comes out, and it cannot produce more than expected.
    #[test]
    fn forged_zstd_window_size_allocates_no_window() {
        let payload = [
            0x01, 0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x88, 0x09, 0x00, 0x00, 0x41,
        ];
        assert_eq!(decompress_payload(&payload, 1, "forged").unwrap(), b"A");
        assert!(decompress_payload(&payload, 0, "forged").is_err());
        assert!(decompress_payload(&payload, 2, "forged").is_err());
    }

    /// Envelopes decode into a buffer of the size their frame declares: a frame that
    /// declares more than the limit is refused before decoding, one that declares less
    /// than it holds fails, and one that declares nothing decodes within the limit.
    #[test]
    fn bounded_zstd_sizes_its_buffer_by_the_frame() {
        let text = b"an index file body ".repeat(5000);
        let declared = zstd::bulk::compress(&text, 3).unwrap();
        let len = text.len() as u64;
        assert_eq!(bounded_zstd(&declared, len * 64, "envelope").unwrap(), text);
        let refused = bounded_zstd(&declared, len - 1, "envelope").unwrap_err();
        assert!(refused.to_string().contains("declares"), "{refused}");

        // A streaming encoder does not know the size, so its frame declares none.
        let mut undeclared = Vec::new();
        let mut encoder = zstd::stream::write::Encoder::new(&mut undeclared, 3).unwrap();
        std::io::Write::write_all(&mut encoder, &text).unwrap();
        encoder.finish().unwrap();
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&undeclared).unwrap(),
            None
        );
        assert_eq!(bounded_zstd(&undeclared, len, "stream").unwrap(), text);
        assert!(bounded_zstd(&undeclared, len - 1, "stream").is_err());

        let small = b"0123456789".repeat(10);
        let mut lying = zstd::bulk::compress(&small, 3).unwrap();
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&lying).unwrap(),
            Some(100)
        );
        // Frame header: magic (4), descriptor (1), then a 1-byte content size for
        // single-segment frames of < 256 bytes.
        assert_eq!(lying[5], 100);
        lying[5] = 50;
        assert!(bounded_zstd(&lying, 1000, "lying").is_err());
    }

    /// A page that differs from its base in a few bytes is stored as a delta of a few
    /// dozen bytes, decodes only against that base, and not as a full blob.
    #[test]
    fn delta_blob_round_trip_and_refusals() {
        let keys = keys();
        // Random bytes: the page can only be matched against its base, not itself.
        let base = crate::fuzzing::pseudo_random_bytes(88172645463325252, 8192);
        let mut page = base.clone();
        page[100..108].copy_from_slice(b"changed!");
        let (base_id, id) = (keys.content_id(&base), keys.content_id(&page));
        let with = |plaintext| DeltaBase {
            id: &base_id,
            plaintext,
        };
        let stored = encode_delta_blob(&keys, &id, &page, with(&base), 3).unwrap();
        assert!(stored.len() < 100, "delta of {} bytes", stored.len());
        let len = page.len() as u64;
        assert_eq!(
            decode_delta_blob(&keys, &id, &stored, len, with(&base)).unwrap(),
            page
        );
        // Another base (same id claimed, other bytes) decodes to bytes that fail the hash.
        let mut other = base.clone();
        other[5000] ^= 1;
        assert!(decode_delta_blob(&keys, &id, &stored, len, with(&other)).is_err());
        // Another base id is other associated data.
        let wrong_id = keys.content_id(b"x");
        let wrong = DeltaBase {
            id: &wrong_id,
            plaintext: &base,
        };
        assert!(decode_delta_blob(&keys, &id, &stored, len, wrong).is_err());
        // Not a full blob, and not of another length.
        assert!(decode_blob(&keys, BlobType::Data, &id, &stored, len).is_err());
        assert!(decode_delta_blob(&keys, &id, &stored, len - 1, with(&base)).is_err());
        assert!(decode_delta_blob(&keys, &id, &stored, len + 1, with(&base)).is_err());
        // The frame must declare the expected length before anything is allocated.
        assert!(
            decode_delta_blob(&keys, &id, &stored, 256 << 20, with(&base))
                .is_err_and(|e| e.to_string().contains("declares"))
        );
        // A full blob is not a delta.
        let full = encode_blob(&keys, BlobType::Data, &id, &page, 3);
        assert!(decode_delta_blob(&keys, &id, &full, len, with(&base)).is_err());
        // A delta payload sealed as a full blob is refused by the full decoder.
        let payload = keys
            .open(&blob_aad(BlobType::Data, &id, Some(&base_id)), &stored, "t")
            .unwrap();
        let resealed = keys.seal(&blob_aad(BlobType::Data, &id, None), &payload);
        assert!(decode_blob(&keys, BlobType::Data, &id, &resealed, len).is_err());

        // Without its base: intact and authentic, or refused for any flipped byte, a
        // wrong base id or another length.
        authenticate_delta_blob(&keys, &id, &base_id, &stored, len).unwrap();
        for at in 0..stored.len() {
            let mut flipped = stored.clone();
            flipped[at] ^= 0x10;
            assert!(authenticate_delta_blob(&keys, &id, &base_id, &flipped, len).is_err());
        }
        assert!(authenticate_delta_blob(&keys, &id, &wrong_id, &stored, len).is_err());
        assert!(authenticate_delta_blob(&keys, &id, &base_id, &stored, len + 1).is_err());
        assert!(authenticate_delta_blob(&keys, &id, &base_id, &full, len).is_err());
    }

    /// The reused contexts load the base as a raw-content dictionary, which must be the
    /// same history as the prefix SPEC section 8 names: frames made either way decode
    /// the other way. A base that starts like a structured dictionary takes the prefix
    /// path itself.
    #[test]
    fn delta_frames_are_prefix_frames() {
        use zstd::zstd_safe::{CCtx, CParameter, DCtx};
        let page = |seed: u64| crate::fuzzing::pseudo_random_bytes(seed, 8192);
        let base = page(1);
        let mut data = base.clone();
        data[4000..4100].copy_from_slice(&page(2)[..100]);

        let mut cctx = CCtx::create();
        cctx.set_parameter(CParameter::CompressionLevel(3)).unwrap();
        cctx.ref_prefix(&base).unwrap();
        let mut by_prefix = Vec::with_capacity(16 << 10);
        cctx.compress2(&mut by_prefix, &data).unwrap();
        assert!(by_prefix.len() < 300, "{} bytes", by_prefix.len());
        assert_eq!(unzstd_with_prefix(&by_prefix, &base, 8192).unwrap(), data);

        let reused = zstd_with_prefix(&data, &base, 3).unwrap();
        assert!(reused.len() < 300, "{} bytes", reused.len());
        let mut dctx = DCtx::create();
        dctx.ref_prefix(&base).unwrap();
        let mut plain = Vec::with_capacity(8192);
        dctx.decompress(&mut plain, &reused).unwrap();
        assert_eq!(plain, data);

        let mut magic_base = base.clone();
        magic_base[..4].copy_from_slice(&ZSTD_DICTIONARY_MAGIC);
        assert!(!loads_as_raw_content(&magic_base));
        let frame = zstd_with_prefix(&data, &magic_base, 3).unwrap();
        assert_eq!(unzstd_with_prefix(&frame, &magic_base, 8192).unwrap(), data);
    }

    #[test]
    fn zstd_bomb_is_stopped_at_expected_length() {
        let zeros = vec![0u8; 10 << 20];
        let payload = compress_payload(&zeros, 3);
        assert!(decompress_payload(&payload, 1000, "bomb").is_err());
    }
}
