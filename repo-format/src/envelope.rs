//! The envelope of repository files other than packs and key files: config, index files,
//! snapshot manifests and writer sessions.
//!
//! `file = magic "dprp" || file_type u8 || version u8 || nonce[24] || AEAD(ciphertext || tag)`
//! where the associated data is the 6-byte header and the plaintext is a payload
//! (`encoding u8 || body`, see `blob.rs`). The version byte is the format version of that
//! file type; a reader refuses versions it does not know.

use crate::blob::{compress_payload, ENCODING_RAW, ENCODING_ZSTD};
use crate::crypto::Keys;
use crate::error::{Error, Result};

/// Magic bytes at the start of every enveloped file and key file.
pub const MAGIC: &[u8; 4] = b"dprp";
/// Offset of the file type byte.
pub const FILE_TYPE_OFFSET: usize = MAGIC.len();
/// Offset of the version byte.
pub const VERSION_OFFSET: usize = FILE_TYPE_OFFSET + 1;
/// Length of the plaintext header (also the associated data).
pub const HEADER_LEN: usize = VERSION_OFFSET + 1;
/// A decoded envelope body may be at most this many times its stored size, plus 1 MiB.
pub const MAX_BODY_RATIO: u64 = 64;
/// The largest body an envelope may decode to (bounds allocations on damaged input).
pub const MAX_BODY: u64 = 1 << 30;

/// Types of enveloped files; the byte is stored after the magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    /// The repository config (`config`).
    Config = 1,
    /// An index file (`index/<id>`).
    Index = 2,
    /// A snapshot manifest (`snapshots/<id>`).
    Snapshot = 3,
    /// A writer session marker (`sessions/<id>`).
    Session = 4,
    /// A key file (`keys/<id>`); not enveloped, but it shares the magic and header.
    Key = 5,
    /// A gc tombstone (`gc/<id>`).
    Tombstone = 6,
    /// The gc lease (`locks/gc`).
    Lease = 7,
    /// A key ring of a master-key generation (`keyring/<generation>`).
    KeyRing = 8,
    /// A snapshot locator (`locators/<snapshot id>`, SPEC.md section 14.1).
    Locator = 9,
    /// A datasafed catalogue object (`catalog/<id>`).
    Catalog = 10,
}

/// Seal `body` into an envelope of `file_type` at format `version`, compressing it.
pub fn seal_file(keys: &Keys, file_type: FileType, version: u8, body: &[u8]) -> Vec<u8> {
    let header = header(file_type, version);
    let sealed = keys.seal(&header, &compress_payload(body, 3));
    let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(&sealed);
    out
}

/// The 6-byte header of a file.
pub fn header(file_type: FileType, version: u8) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..MAGIC.len()].copy_from_slice(MAGIC);
    h[FILE_TYPE_OFFSET] = file_type as u8;
    h[VERSION_OFFSET] = version;
    h
}

/// Check magic, type and version of a file's header; returns the version.
///
/// # Errors
/// [`Error::Corrupt`] for a wrong magic or type; [`Error::UnsupportedVersion`] for a
/// version above `max_version` (or zero).
pub fn check_header(
    bytes: &[u8],
    file_type: FileType,
    max_version: u8,
    object: &str,
) -> Result<u8> {
    if bytes.len() < HEADER_LEN || &bytes[..MAGIC.len()] != MAGIC {
        return Err(Error::corrupt(object, "not a dprepo file (bad magic)"));
    }
    if bytes[FILE_TYPE_OFFSET] != file_type as u8 {
        return Err(Error::corrupt(
            object,
            format!(
                "file type {} where {:?} ({}) was expected",
                bytes[FILE_TYPE_OFFSET], file_type, file_type as u8
            ),
        ));
    }
    let version = bytes[VERSION_OFFSET];
    if version == 0 || version > max_version {
        return Err(Error::UnsupportedVersion {
            object: object.to_string(),
            found: u32::from(version),
            supported: u32::from(max_version),
        });
    }
    Ok(version)
}

/// Open an envelope: check the header, authenticate, decompress. Returns the version and
/// the body.
///
/// # Errors
/// As [`check_header`], plus [`Error::Corrupt`] when authentication or decompression fails.
pub fn open_file(
    keys: &Keys,
    bytes: &[u8],
    file_type: FileType,
    max_version: u8,
    object: &str,
) -> Result<(u8, Vec<u8>)> {
    let version = check_header(bytes, file_type, max_version, object)?;
    let payload = keys.open(&bytes[..HEADER_LEN], &bytes[HEADER_LEN..], object)?;
    let (&encoding, body) = payload
        .split_first()
        .ok_or_else(|| Error::corrupt(object, "empty payload"))?;
    let body = match encoding {
        ENCODING_RAW => body.to_vec(),
        ENCODING_ZSTD => {
            // Bodies are bounded by the stored size: real envelopes (ids, JSON) compress
            // far less than 64:1, while a bomb would not.
            let limit = (body.len() as u64)
                .saturating_mul(MAX_BODY_RATIO)
                .saturating_add(1 << 20)
                .min(MAX_BODY);
            let out = crate::blob::bounded_zstd(body, limit, object)?;
            if out.len() as u64 > limit {
                return Err(Error::corrupt(
                    object,
                    format!("body larger than {limit} bytes ({} stored)", body.len()),
                ));
            }
            out
        }
        other => {
            return Err(Error::corrupt(
                object,
                format!("unknown payload encoding {other}"),
            ))
        }
    };
    Ok((version, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;

    #[test]
    fn envelope_round_trip_and_version_refusal() {
        let keys = Keys::derive(&MasterKey::from_bytes([3; 32]));
        let file = seal_file(&keys, FileType::Snapshot, 1, b"{\"a\":1}");
        let (v, body) = open_file(&keys, &file, FileType::Snapshot, 1, "s").unwrap();
        assert_eq!((v, body.as_slice()), (1, &b"{\"a\":1}"[..]));
        assert!(matches!(
            open_file(&keys, &file, FileType::Index, 1, "s"),
            Err(Error::Corrupt { .. })
        ));
        let future = seal_file(&keys, FileType::Snapshot, 2, b"{}");
        assert!(matches!(
            open_file(&keys, &future, FileType::Snapshot, 1, "s"),
            Err(Error::UnsupportedVersion { found: 2, .. })
        ));
        // The header is authenticated: changing the version byte breaks the tag.
        let mut forged = file.clone();
        forged[VERSION_OFFSET] = 1;
        forged[FILE_TYPE_OFFSET] = FileType::Index as u8;
        assert!(open_file(&keys, &forged, FileType::Index, 1, "s").is_err());
    }
}
