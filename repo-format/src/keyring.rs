//! Key rings (`keyring/<generation>`, SPEC.md section 5.1): what a master key of a
//! generation after a rotation needs besides itself.
//!
//! A rotation makes a new master key (generation g + 1). Its key ring, sealed under the
//! new generation's own encryption key only, holds the content-id key (kept from
//! generation 1, so ids, trees and deduplication carry over), the encryption key of the
//! generation it replaces while objects sealed under it may remain (`previous`, emptied
//! when `key rotate --finish` has re-encrypted them), and the key files of the old
//! generation that `--finish` deletes. A master key that opens no key ring is
//! generation 1's (a repository never rotated has no key ring).
//!
//! Invariants: the ring of the newest generation is the only one `finish` leaves; at
//! most one older generation is held ([`crate::crypto::MAX_GENERATIONS_HELD`]); the ring
//! is rewritten only by an `Update` naming the version read (storage S8).

use crate::crypto::{Keys, MasterKey};
use crate::envelope::{open_file, seal_file, FileType};
use crate::error::{Error, Result};
use crate::storage::Storage;
use serde::{Deserialize, Serialize};

pub use crate::layout::KEYRING_DIR;
/// Envelope version of key ring files.
pub const KEYRING_FILE_VERSION: u8 = 1;
/// Most key ring files a reader tries (each is one authentication attempt).
pub const MAX_KEY_RINGS_TRIED: usize = 64;

/// An older generation's encryption key still needed. Its `Debug` leaves the key out
/// (as [`KeyRing`]'s does): a log line must never carry key material.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousKey {
    /// Its generation.
    pub generation: u32,
    /// Its encryption subkey (hex in the file).
    #[serde(with = "hex32")]
    pub encryption_key: [u8; 32],
}

impl std::fmt::Debug for PreviousKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreviousKey")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// A decoded key ring.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRing {
    /// The generation whose master key seals this ring (≥ 2).
    pub generation: u32,
    /// The content-id subkey of generation 1.
    #[serde(with = "hex32")]
    pub content_id_key: [u8; 32],
    /// Encryption keys of the generation this one replaces, while objects sealed under
    /// it may remain (empty once `key rotate --finish` completed).
    #[serde(default)]
    pub previous: Vec<PreviousKey>,
    /// Key files (`keys/<id>`) of older generations, deleted by `key rotate --finish`.
    #[serde(default)]
    pub old_key_files: Vec<String>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("generation", &self.generation)
            .field("previous", &self.previous.len())
            .field("old_key_files", &self.old_key_files)
            .finish()
    }
}

impl KeyRing {
    /// The keys of `master` under this ring: content ids with the ring's key, sealing
    /// with `master`'s encryption key, opening also with the previous generation's.
    pub fn keys(&self, master: &MasterKey) -> Keys {
        let older: Vec<[u8; 32]> = self.previous.iter().map(|p| p.encryption_key).collect();
        Keys::of_generation(master, self.content_id_key, &older)
    }

    /// Seal under `own` (the keys of this ring's generation; only its newest key is used).
    pub fn encode(&self, own: &Keys) -> Vec<u8> {
        let json = serde_json::to_vec(self).unwrap_or_default();
        seal_file(own, FileType::KeyRing, KEYRING_FILE_VERSION, &json)
    }

    /// Open a key ring with the keys derived from one master key.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when it does not authenticate under `own` (another
    /// generation's ring, or damage) or its JSON is invalid; [`Error::UnsupportedVersion`].
    pub fn decode(own: &Keys, bytes: &[u8], object: &str) -> Result<KeyRing> {
        let (_, body) = open_file(
            &own.newest_only(),
            bytes,
            FileType::KeyRing,
            KEYRING_FILE_VERSION,
            object,
        )?;
        let ring: KeyRing =
            serde_json::from_slice(&body).map_err(|e| Error::corrupt(object, e.to_string()))?;
        if ring.generation < 2
            || crate::layout::parse_keyring(object).is_some_and(|g| g != ring.generation)
        {
            return Err(Error::corrupt(
                object,
                format!("key ring of generation {} under this name", ring.generation),
            ));
        }
        if ring.previous.len() >= crate::crypto::MAX_GENERATIONS_HELD {
            return Err(Error::corrupt(
                object,
                format!(
                    "{} previous generations held (at most 1)",
                    ring.previous.len()
                ),
            ));
        }
        Ok(ring)
    }
}

/// What a master key opens: its generation, its keys, and its key ring with the
/// ring's name and version (generation 1 has none).
#[derive(Debug, Clone)]
pub struct Generation {
    /// 1 for the original master key.
    pub number: u32,
    /// The keys to use.
    pub keys: Keys,
    /// The key ring and its storage name, for generations ≥ 2.
    pub ring: Option<(String, KeyRing)>,
    /// The highest generation named in `keyring/` (≥ `number` unless damaged).
    pub newest_listed: u32,
}

/// Find `master`'s generation: the key ring it opens, newest first (at most
/// [`MAX_KEY_RINGS_TRIED`]), or generation 1 if none.
///
/// # Errors
/// Storage errors listing or reading `keyring/`.
pub async fn generation_of_master(storage: &dyn Storage, master: &MasterKey) -> Result<Generation> {
    let mut names: Vec<(u32, String)> = storage
        .list(KEYRING_DIR)
        .await?
        .into_iter()
        .filter_map(|b| crate::layout::parse_keyring(&b.name).map(|g| (g, b.name)))
        .collect();
    names.sort_by(|a, b| b.cmp(a));
    let newest_listed = names.first().map_or(1, |(g, _)| *g);
    let own = Keys::derive(master);
    for (_, name) in names.iter().take(MAX_KEY_RINGS_TRIED) {
        let bytes = match storage.get(name).await {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        if let Ok(ring) = KeyRing::decode(&own, &bytes, name) {
            return Ok(Generation {
                number: ring.generation,
                keys: ring.keys(master),
                ring: Some((name.clone(), ring)),
                newest_listed,
            });
        }
    }
    Ok(Generation {
        number: 1,
        keys: own,
        ring: None,
        newest_listed,
    })
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(key: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::id::BlobId(*key).to_hex())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        crate::id::BlobId::from_hex(&text)
            .map(|id| id.0)
            .map_err(|_| serde::de::Error::custom("expected 64 hex digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_ring_opens_under_its_own_generation_only() {
        let old = MasterKey::from_bytes([1; 32]);
        let new = MasterKey::from_bytes([2; 32]);
        let old_keys = Keys::derive(&old);
        let ring = KeyRing {
            generation: 2,
            content_id_key: old_keys.content_id_key(),
            previous: vec![PreviousKey {
                generation: 1,
                encryption_key: old_keys.encryption_key(),
            }],
            old_key_files: vec!["keys/ab".into()],
        };
        let own = Keys::derive(&new);
        let bytes = ring.encode(&own);
        let name = crate::layout::keyring(2);
        assert_eq!(KeyRing::decode(&own, &bytes, &name).unwrap(), ring);
        assert!(KeyRing::decode(&old_keys, &bytes, &name).is_err());
        assert!(KeyRing::decode(&own, &bytes, &crate::layout::keyring(3)).is_err());
        // Keys of generation 2: ids as generation 1, seals that only generation 2 opens,
        // opens what generation 1 sealed.
        let keys = ring.keys(&new);
        assert_eq!(keys.content_id(b"x"), old_keys.content_id(b"x"));
        let sealed = keys.seal(b"a", b"p");
        assert!(old_keys.open(b"a", &sealed, "o").is_err());
        assert_eq!(
            keys.open(b"a", &old_keys.seal(b"a", b"q"), "o").unwrap(),
            b"q"
        );
        assert!(keys
            .newest_only()
            .open(b"a", &old_keys.seal(b"a", b"q"), "o")
            .is_err());
        for n in 0..bytes.len() {
            assert!(KeyRing::decode(&own, &bytes[..n], &name).is_err());
        }
        assert_eq!(crate::layout::parse_keyring(&name), Some(2));
        assert_eq!(crate::layout::parse_keyring("keyring/2"), None);
    }
}
