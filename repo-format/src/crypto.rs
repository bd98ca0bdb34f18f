//! Keys and authenticated encryption.
//!
//! A repository has one random 32-byte master key (wrapped per password in key files,
//! see `key.rs`). Two subkeys are derived from it with BLAKE3's key derivation mode:
//! the content-id key (keyed BLAKE3 of plaintexts, so ids reveal nothing about content
//! to someone without the key) and the encryption key (XChaCha20-Poly1305, whose 24-byte
//! random nonces make nonce reuse negligible without any counter state).
//!
//! After a master-key rotation (SPEC.md section 5.1, `rotate.rs`) a repository has key
//! generations: [`Keys`] then seals with the newest generation's encryption key and
//! opens with the newest, then each older one still held (at most
//! [`MAX_GENERATIONS_HELD`], newest first), and its content-id key is the one of
//! generation 1, kept by every rotation so that ids, trees and deduplication carry over.

use crate::error::{Error, Result};
use crate::id::BlobId;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// Size of the random nonce that prefixes every sealed object.
pub const NONCE_LEN: usize = 24;
/// Size of the Poly1305 authentication tag that ends every sealed object.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed object adds to its plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// BLAKE3 derive_key context of the content-id subkey (SPEC.md, "Key hierarchy").
pub const CONTENT_ID_CONTEXT: &str = "dprepo 2026-11-25 v1 content id key";
/// BLAKE3 derive_key context of the encryption subkey.
pub const ENCRYPTION_CONTEXT: &str = "dprepo 2026-11-25 v1 encryption key";

/// Most encryption keys a [`Keys`] holds: the newest generation and the one a pending
/// rotation replaces. A rotation starts only when the previous one finished, so readers
/// try at most this many keys per object.
pub const MAX_GENERATIONS_HELD: usize = 2;

/// The random master key of a repository.
#[derive(Clone)]
pub struct MasterKey(pub(crate) [u8; 32]);

impl MasterKey {
    /// A fresh random master key from the operating system's generator.
    pub fn generate() -> Self {
        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&key);
        MasterKey(bytes)
    }

    /// A master key from known bytes (test vectors, golden repositories).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        MasterKey(bytes)
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// The subkeys derived from a master key; everything that reads or writes a repository
/// holds one of these.
#[derive(Clone)]
pub struct Keys {
    content_id_key: [u8; 32],
    encryption_key: [u8; 32],
    cipher: XChaCha20Poly1305,
    /// Encryption keys of older generations still held (rotation pending), newest first:
    /// [`Keys::open`] tries them after `cipher`; [`Keys::seal`] never uses them.
    older: Vec<XChaCha20Poly1305>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

impl Keys {
    /// Derive the subkeys of `master`.
    pub fn derive(master: &MasterKey) -> Self {
        let content_id_key = blake3::derive_key(CONTENT_ID_CONTEXT, &master.0);
        Keys::of_generation(master, content_id_key, &[])
    }

    /// The keys of a generation after a rotation (SPEC.md section 5.1): encryption key
    /// derived from `master`, the content-id key kept from generation 1, and `older`
    /// encryption keys (newest first, at most [`MAX_GENERATIONS_HELD`] − 1 are used)
    /// tried when the newest does not open an object.
    pub fn of_generation(master: &MasterKey, content_id_key: [u8; 32], older: &[[u8; 32]]) -> Self {
        let enc = blake3::derive_key(ENCRYPTION_CONTEXT, &master.0);
        Keys {
            content_id_key,
            encryption_key: enc,
            cipher: XChaCha20Poly1305::new(&enc.into()),
            older: older
                .iter()
                .take(MAX_GENERATIONS_HELD - 1)
                .map(|k| XChaCha20Poly1305::new(k.into()))
                .collect(),
        }
    }

    /// These keys without the older generations: opens only what the newest sealed.
    pub fn newest_only(&self) -> Keys {
        Keys {
            content_id_key: self.content_id_key,
            encryption_key: self.encryption_key,
            cipher: self.cipher.clone(),
            older: Vec::new(),
        }
    }

    /// Whether older generations' keys are held (a rotation is pending).
    pub fn holds_older(&self) -> bool {
        !self.older.is_empty()
    }

    /// The newest encryption subkey (recorded, sealed, in the next generation's key ring).
    pub(crate) fn encryption_key(&self) -> [u8; 32] {
        self.encryption_key
    }

    /// The content-id subkey (recorded, sealed, in key rings).
    pub(crate) fn content_id_key(&self) -> [u8; 32] {
        self.content_id_key
    }

    /// The content id of a plaintext: keyed BLAKE3 with the content-id subkey.
    pub fn content_id(&self, plaintext: &[u8]) -> BlobId {
        BlobId(*blake3::keyed_hash(&self.content_id_key, plaintext).as_bytes())
    }

    /// Encrypt `plaintext` bound to `aad`: returns `nonce || ciphertext || tag`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        self.seal_with_nonce(&nonce.into(), aad, plaintext)
    }

    /// [`Keys::seal`] with a caller-chosen nonce; only for test vectors, where a fixed
    /// nonce makes the output reproducible. Never reuse a nonce with real data.
    pub fn seal_with_nonce(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        out.extend_from_slice(nonce);
        // Encryption with a valid key and in-memory buffers cannot fail.
        let ct = self
            .cipher
            .encrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .unwrap_or_default();
        out.extend_from_slice(&ct);
        out
    }

    /// Decrypt and authenticate `nonce || ciphertext || tag` bound to `aad`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming `object` if the input is too short or does not
    /// authenticate (tampered bytes, wrong key, or bound to a different `aad`).
    pub fn open(&self, aad: &[u8], sealed: &[u8], object: &str) -> Result<Vec<u8>> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(Error::corrupt(
                object,
                format!(
                    "{} bytes is shorter than the {SEAL_OVERHEAD}-byte encryption overhead",
                    sealed.len()
                ),
            ));
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        std::iter::once(&self.cipher)
            .chain(&self.older)
            .find_map(|c| {
                c.decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
                    .ok()
            })
            .ok_or_else(|| {
                Error::corrupt(
                    object,
                    "authentication failed (bytes damaged or not written by this repository's key)",
                )
            })
    }
}

/// Encrypt `plaintext` under a raw 32-byte key (used to wrap the master key with a
/// password-derived key). Output: `nonce || ciphertext || tag`.
pub fn seal_with_key(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let mut out = nonce.to_vec();
    out.extend_from_slice(
        &cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .unwrap_or_default(),
    );
    out
}

/// Decrypt output of [`seal_with_key`]; `None` if it does not authenticate.
pub fn open_with_key(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < SEAL_OVERHEAD {
        return None;
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    XChaCha20Poly1305::new(key.into())
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper_detection() {
        let keys = Keys::derive(&MasterKey::generate());
        let sealed = keys.seal(b"aad", b"hello");
        assert_eq!(keys.open(b"aad", &sealed, "t").unwrap(), b"hello");
        assert!(keys.open(b"other aad", &sealed, "t").is_err());
        let mut bad = sealed.clone();
        bad[30] ^= 1;
        assert!(keys.open(b"aad", &bad, "t").is_err());
        let other = Keys::derive(&MasterKey::generate());
        assert!(other.open(b"aad", &sealed, "t").is_err());
        assert!(keys.open(b"aad", &sealed[..10], "t").is_err());
    }

    #[test]
    fn content_ids_depend_on_the_key() {
        let a = Keys::derive(&MasterKey::from_bytes([1; 32]));
        let b = Keys::derive(&MasterKey::from_bytes([2; 32]));
        assert_ne!(a.content_id(b"x"), b.content_id(b"x"));
        assert_eq!(a.content_id(b"x"), a.content_id(b"x"));
    }
}
