//! Key files (`keys/<id>`): the repository's master key wrapped under a key derived from
//! one password with Argon2id. Any number of key files may exist; each password opens
//! the same master key, so passwords can be added, changed and removed without
//! re-encrypting data.
//!
//! Layout (SPEC.md, "Key file"): header "dprp" 5 1, kdf u8 (1 = Argon2id), memory KiB
//! u32, iterations u32, parallelism u32, salt[16], created i64, hostname (u16 length +
//! UTF-8), username (u16 length + UTF-8), then `nonce[24] || XChaCha20-Poly1305(master
//! key[32]) || tag[16]` with every preceding byte as associated data.

use crate::codec::{Reader, Writer};
use crate::crypto::{open_with_key, seal_with_key, MasterKey, SEAL_OVERHEAD};
use crate::envelope::{check_header, header, FileType, HEADER_LEN};
use crate::error::{Error, Result};
use chacha20poly1305::aead::{rand_core::RngCore, OsRng};

/// Key file format version written by this build.
pub const KEY_FILE_VERSION: u8 = 1;
/// The only key derivation function so far.
pub const KDF_ARGON2ID: u8 = 1;
/// Length of the random salt.
pub const SALT_LEN: usize = 16;
/// Upper bounds on KDF parameters read from storage: a forged key file must not make
/// `open` allocate gigabytes or spin for hours.
pub const MAX_MEMORY_KIB: u32 = 1 << 20;
/// Upper bound on Argon2 iterations accepted from storage.
pub const MAX_ITERATIONS: u32 = 64;
/// Upper bound on Argon2 parallelism accepted from storage.
pub const MAX_PARALLELISM: u32 = 16;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Number of passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane: about a quarter second on a current core.
    fn default() -> Self {
        KdfParams {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }
}

impl KdfParams {
    /// The cheapest cost key files accept: opening a key takes microseconds. For tests
    /// and fuzzing; a real password needs [`KdfParams::default`].
    pub const CHEAPEST: KdfParams = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    fn derive(&self, password: &[u8], salt: &[u8]) -> Result<[u8; 32]> {
        let params =
            argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
                .map_err(|e| Error::InvalidArgument(format!("argon2 parameters: {e}")))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = [0u8; 32];
        argon
            .hash_password_into(password, salt, &mut out)
            .map_err(|e| Error::InvalidArgument(format!("argon2: {e}")))?;
        Ok(out)
    }
}

/// A decoded key file (without the secret).
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyFile {
    /// Cost parameters of the password hash.
    pub kdf: KdfParams,
    /// Random salt.
    #[serde(skip)]
    pub salt: [u8; SALT_LEN],
    /// Creation time, Unix seconds.
    pub created: i64,
    /// Host that created the key.
    pub hostname: String,
    /// User that created the key.
    pub username: String,
    #[serde(skip)]
    wrapped: Vec<u8>,
    #[serde(skip)]
    aad_len: usize,
    #[serde(skip)]
    raw: Vec<u8>,
}

impl KeyFile {
    /// Wrap `master` under `password`, producing the bytes of a new key file.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if `kdf` is out of the bounds readers accept (such a key file
    /// could never be opened).
    pub fn create(
        master: &MasterKey,
        password: &[u8],
        kdf: KdfParams,
        hostname: &str,
        username: &str,
    ) -> Result<Vec<u8>> {
        check_kdf(&kdf, "new key")?;
        let mut salt = [0u8; SALT_LEN];
        OsRng.fill_bytes(&mut salt);
        let mut w = Writer::new();
        w.bytes(&header(FileType::Key, KEY_FILE_VERSION));
        w.u8(KDF_ARGON2ID);
        w.u32(kdf.memory_kib);
        w.u32(kdf.iterations);
        w.u32(kdf.parallelism);
        w.bytes(&salt);
        w.i64(chrono::Utc::now().timestamp());
        for s in [hostname, username] {
            let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
            w.u16(b.len() as u16);
            w.bytes(b);
        }
        let mut bytes = w.finish();
        let kek = kdf.derive(password, &salt)?;
        let wrapped = seal_with_key(&kek, &bytes, &master.0);
        bytes.extend_from_slice(&wrapped);
        Ok(bytes)
    }

    /// Parse a key file without opening it.
    ///
    /// # Errors
    /// [`Error::Corrupt`] / [`Error::UnsupportedVersion`] naming `object`.
    pub fn decode(bytes: &[u8], object: &str) -> Result<KeyFile> {
        check_header(bytes, FileType::Key, KEY_FILE_VERSION, object)?;
        let mut r = Reader::new(&bytes[HEADER_LEN..], object);
        let kdf_id = r.u8("kdf")?;
        if kdf_id != KDF_ARGON2ID {
            return Err(r.corrupt(format!("unknown key derivation function {kdf_id}")));
        }
        let kdf = KdfParams {
            memory_kib: r.u32("memory")?,
            iterations: r.u32("iterations")?,
            parallelism: r.u32("parallelism")?,
        };
        check_kdf(&kdf, object)?;
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(r.take(SALT_LEN, "salt")?);
        let created = r.i64("created")?;
        let mut strings = Vec::new();
        for field in ["hostname", "username"] {
            let n = r.u16(field)? as usize;
            strings.push(String::from_utf8_lossy(r.take(n, field)?).into_owned());
        }
        let wrapped = r.take(32 + SEAL_OVERHEAD, "wrapped master key")?.to_vec();
        r.finish()?;
        let aad_len = bytes.len() - wrapped.len();
        let username = strings.pop().unwrap_or_default();
        let hostname = strings.pop().unwrap_or_default();
        Ok(KeyFile {
            kdf,
            salt,
            created,
            hostname,
            username,
            wrapped,
            aad_len,
            raw: bytes.to_vec(),
        })
    }

    /// Unwrap the master key with `password`; `Ok(None)` if the password does not fit.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the KDF rejects its parameters.
    pub fn open(&self, password: &[u8]) -> Result<Option<MasterKey>> {
        let kek = self.kdf.derive(password, &self.salt)?;
        Ok(
            open_with_key(&kek, &self.raw[..self.aad_len], &self.wrapped).and_then(|m| {
                let bytes: [u8; 32] = m.try_into().ok()?;
                Some(MasterKey(bytes))
            }),
        )
    }
}

fn check_kdf(kdf: &KdfParams, object: &str) -> Result<()> {
    let ok = (1..=MAX_PARALLELISM).contains(&kdf.parallelism)
        && (1..=MAX_ITERATIONS).contains(&kdf.iterations)
        && kdf.memory_kib >= 8 * kdf.parallelism
        && kdf.memory_kib <= MAX_MEMORY_KIB;
    if ok {
        Ok(())
    } else {
        Err(Error::corrupt(
            object,
            format!("argon2 parameters out of bounds: {kdf:?}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams::CHEAPEST;

    #[test]
    fn key_file_opens_with_its_password_only() {
        let master = MasterKey::generate();
        let bytes = KeyFile::create(&master, b"secret", FAST, "host", "user").unwrap();
        let key = KeyFile::decode(&bytes, "key").unwrap();
        assert_eq!(key.hostname, "host");
        assert_eq!(key.open(b"secret").unwrap().unwrap().0, master.0);
        assert!(key.open(b"wrong").unwrap().is_none());
        // Any flipped byte either fails to parse or fails to open.
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            if let Ok(k) = KeyFile::decode(&bad, "key") {
                assert!(
                    k.open(b"secret").map(|m| m.is_none()).unwrap_or(true),
                    "flip at {i} accepted"
                );
            }
        }
        for n in 0..bytes.len() {
            assert!(KeyFile::decode(&bytes[..n], "key").is_err());
        }
    }

    #[test]
    fn forged_huge_kdf_parameters_are_refused() {
        let master = MasterKey::generate();
        let mut bytes = KeyFile::create(&master, b"pw", FAST, "h", "u").unwrap();
        bytes[HEADER_LEN + 1..HEADER_LEN + 5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            KeyFile::decode(&bytes, "key"),
            Err(Error::Corrupt { .. })
        ));
    }
}
