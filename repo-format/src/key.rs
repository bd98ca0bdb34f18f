//! Key files (`keys/<id>`): the repository's master key wrapped under a key derived from
//! one password with Argon2id, or from one access key with BLAKE3. Any number of key
//! files may exist; each opens the same master key, so passwords and access keys can be
//! added and removed without re-encrypting data.
//!
//! Layout (SPEC.md, "Key file"): header "dprp" 5 version, kdf u8 (1 = Argon2id, 2 =
//! access key), memory KiB u32, iterations u32, parallelism u32, `salt[16]`, created i64,
//! hostname (u16 length + UTF-8), username (u16 length + UTF-8), in version 2 a label
//! (u16 length + UTF-8), then `nonce[24] || XChaCha20-Poly1305(master key[32]) ||
//! tag[16]` with every preceding byte as associated data.
//!
//! Password key files are written as version 1, which every build reads; access key
//! files need version 2, which builds before access keys refuse (`UnsupportedVersion`)
//! and pass over when opening with a password.
//!
//! An access key ([`AccessKey`]) is 32 random bytes plus the id of its key file: it is
//! high-entropy, so it needs no password hashing, and opening with it reads one key file.

use crate::codec::{Reader, Writer};
use crate::crypto::{open_with_key, seal_with_key, MasterKey, SEAL_OVERHEAD};
use crate::envelope::{check_header, header, FileType, HEADER_LEN};
use crate::error::{Error, Result};
use crate::id::BlobId;
use chacha20poly1305::aead::{rand_core::RngCore, OsRng};
use std::sync::atomic::{AtomicU64, Ordering};

/// Key file format version of password key files (read by every build).
pub const KEY_FILE_VERSION: u8 = 1;
/// Key file format version of access key files, and the highest this build reads.
pub const KEY_FILE_VERSION_ACCESS: u8 = 2;
/// Key derivation of password key files: Argon2id.
pub const KDF_ARGON2ID: u8 = 1;
/// Key derivation of access key files: BLAKE3 of the 32-byte secret (section 5).
pub const KDF_ACCESS_KEY: u8 = 2;
/// BLAKE3 derive_key context of the KEK of an access key file (SPEC.md, "Key hierarchy").
pub const ACCESS_KEY_CONTEXT: &str = "dprepo 2026-12-07 v1 access key";
/// Text an access key starts with (SPEC.md, "Access key").
pub const ACCESS_KEY_PREFIX: &str = "dprepo-ak1-";
/// Length of an access key's secret.
pub const ACCESS_SECRET_LEN: usize = 32;
/// Longest label an access key file stores (longer ones are truncated by writers).
pub const MAX_LABEL_LEN: usize = 1024;

/// Password hashes (Argon2id runs) this process has computed: a structural check that
/// opening with an access key hashes nothing.
static PASSWORD_HASHES: AtomicU64 = AtomicU64::new(0);

/// How many password hashes (Argon2id runs) this process has computed so far.
pub fn password_hashes() -> u64 {
    PASSWORD_HASHES.load(Ordering::Relaxed)
}
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
        PASSWORD_HASHES.fetch_add(1, Ordering::Relaxed);
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

/// What opens a key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// A password, hashed with Argon2id (kdf 1).
    Password,
    /// An access key (kdf 2).
    Access,
}

/// An access key: the id of its key file and the 32-byte secret that opens it. Its text
/// form is `dprepo-ak1-<key file id hex>-<secret hex>` (SPEC.md, "Access key").
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKey {
    key_id: BlobId,
    secret: [u8; ACCESS_SECRET_LEN],
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccessKey({}, ..)", self.key_id.short())
    }
}

impl AccessKey {
    /// The id of the key file this access key opens (`keys/<id hex>`).
    pub fn key_id(&self) -> BlobId {
        self.key_id
    }

    /// The storage name of its key file.
    pub fn key_name(&self) -> String {
        crate::layout::key_file(&self.key_id)
    }

    /// The access key of key file `key_id` with `secret` (whether it opens it is known
    /// only by trying: [`KeyFile::open_access`]).
    pub fn from_parts(key_id: BlobId, secret: [u8; ACCESS_SECRET_LEN]) -> AccessKey {
        AccessKey { key_id, secret }
    }

    /// The text form, a secret: `dprepo-ak1-<key file id hex>-<secret hex>`.
    pub fn to_text(&self) -> String {
        let secret = BlobId(self.secret).to_hex();
        format!("{ACCESS_KEY_PREFIX}{}-{secret}", self.key_id.to_hex())
    }

    /// Whether `text` (surrounding white space aside) has the form of an access key, so a
    /// secret given where a password may also be is taken as one.
    pub fn looks_like(text: &[u8]) -> bool {
        text.trim_ascii().starts_with(ACCESS_KEY_PREFIX.as_bytes())
    }

    /// Parse the text form (surrounding white space is ignored).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] saying what is wrong, without repeating the secret.
    pub fn parse(text: &[u8]) -> Result<AccessKey> {
        let bad = |why: &str| Error::InvalidArgument(format!("not a dprepo access key: {why}"));
        let text = std::str::from_utf8(text.trim_ascii()).map_err(|_| bad("not UTF-8"))?;
        let rest = text
            .strip_prefix(ACCESS_KEY_PREFIX)
            .ok_or_else(|| bad(&format!("it does not start with {ACCESS_KEY_PREFIX}")))?;
        let (id, secret) = rest
            .split_once('-')
            .ok_or_else(|| bad("expected <key id>-<secret> after the prefix"))?;
        let key_id = BlobId::from_hex(id).map_err(|_| bad("the key id is not 64 hex digits"))?;
        let secret = BlobId::from_hex(secret)
            .map_err(|_| bad("the secret is not 64 hex digits"))?
            .0;
        Ok(AccessKey { key_id, secret })
    }

    /// The key-encryption key of its key file with `salt` (SPEC.md section 5).
    fn kek(&self, salt: &[u8; SALT_LEN]) -> [u8; 32] {
        let mut input = [0u8; ACCESS_SECRET_LEN + SALT_LEN];
        input[..ACCESS_SECRET_LEN].copy_from_slice(&self.secret);
        input[ACCESS_SECRET_LEN..].copy_from_slice(salt);
        blake3::derive_key(ACCESS_KEY_CONTEXT, &input)
    }
}

/// A decoded key file (without the secret).
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyFile {
    /// What opens it: a password or an access key.
    pub kind: KeyKind,
    /// Cost parameters of the password hash (all zero for an access key).
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
    /// What the key is for, as given when it was made (version 2; empty otherwise).
    pub label: String,
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
        let mut bytes = prefix(
            KEY_FILE_VERSION,
            KDF_ARGON2ID,
            kdf,
            &salt,
            hostname,
            username,
        );
        let kek = kdf.derive(password, &salt)?;
        let wrapped = seal_with_key(&kek, &bytes, &master.0);
        bytes.extend_from_slice(&wrapped);
        Ok(bytes)
    }

    /// Wrap `master` under a new random access key, producing the bytes of a new key file
    /// (version 2) and the access key that opens it. `label` says what the key is for
    /// (truncated to [`MAX_LABEL_LEN`] bytes).
    pub fn create_access(
        master: &MasterKey,
        hostname: &str,
        username: &str,
        label: &str,
    ) -> (Vec<u8>, AccessKey) {
        let mut secret = [0u8; ACCESS_SECRET_LEN];
        OsRng.fill_bytes(&mut secret);
        KeyFile::create_access_with_secret(master, secret, hostname, username, label)
    }

    /// As [`KeyFile::create_access`], with a secret the caller chose (an operator that
    /// keeps the secret and learns only the key file id from the process that wrote it).
    pub fn create_access_with_secret(
        master: &MasterKey,
        secret: [u8; ACCESS_SECRET_LEN],
        hostname: &str,
        username: &str,
        label: &str,
    ) -> (Vec<u8>, AccessKey) {
        let mut salt = [0u8; SALT_LEN];
        OsRng.fill_bytes(&mut salt);
        let mut bytes = prefix(
            KEY_FILE_VERSION_ACCESS,
            KDF_ACCESS_KEY,
            ACCESS_KDF,
            &salt,
            hostname,
            username,
        );
        let mut label_end = label.len().min(MAX_LABEL_LEN);
        while !label.is_char_boundary(label_end) {
            label_end -= 1;
        }
        let label = &label.as_bytes()[..label_end];
        bytes.extend_from_slice(&(label.len() as u16).to_le_bytes());
        bytes.extend_from_slice(label);
        let mut key = AccessKey {
            key_id: BlobId([0; 32]),
            secret,
        };
        let wrapped = seal_with_key(&key.kek(&salt), &bytes, &master.0);
        bytes.extend_from_slice(&wrapped);
        key.key_id = BlobId::of_stored(&bytes);
        (bytes, key)
    }

    /// Parse a key file without opening it.
    ///
    /// # Errors
    /// [`Error::Corrupt`] / [`Error::UnsupportedVersion`] naming `object`.
    pub fn decode(bytes: &[u8], object: &str) -> Result<KeyFile> {
        let version = check_header(bytes, FileType::Key, KEY_FILE_VERSION_ACCESS, object)?;
        let mut r = Reader::new(&bytes[HEADER_LEN..], object);
        let kdf_id = r.u8("kdf")?;
        let kind = match (kdf_id, version) {
            (KDF_ARGON2ID, _) => KeyKind::Password,
            (KDF_ACCESS_KEY, KEY_FILE_VERSION_ACCESS) => KeyKind::Access,
            _ => {
                return Err(r.corrupt(format!(
                    "unknown key derivation function {kdf_id} in a version {version} key file"
                )))
            }
        };
        let kdf = KdfParams {
            memory_kib: r.u32("memory")?,
            iterations: r.u32("iterations")?,
            parallelism: r.u32("parallelism")?,
        };
        match kind {
            KeyKind::Password => check_kdf(&kdf, object)?,
            KeyKind::Access if kdf != ACCESS_KDF => {
                return Err(r.corrupt(format!(
                    "an access key file has argon2 parameters {kdf:?} (must be zero)"
                )))
            }
            KeyKind::Access => {}
        }
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(r.take(SALT_LEN, "salt")?);
        let created = r.i64("created")?;
        let mut strings = Vec::new();
        let mut fields = vec!["hostname", "username"];
        if version >= KEY_FILE_VERSION_ACCESS {
            fields.push("label");
        }
        for field in fields {
            let n = r.u16(field)? as usize;
            strings.push(String::from_utf8_lossy(r.take(n, field)?).into_owned());
        }
        let label = if version >= KEY_FILE_VERSION_ACCESS {
            strings.pop().unwrap_or_default()
        } else {
            String::new()
        };
        let wrapped = r.take(32 + SEAL_OVERHEAD, "wrapped master key")?.to_vec();
        r.finish()?;
        let aad_len = bytes.len() - wrapped.len();
        let username = strings.pop().unwrap_or_default();
        let hostname = strings.pop().unwrap_or_default();
        Ok(KeyFile {
            kind,
            kdf,
            salt,
            created,
            hostname,
            username,
            label,
            wrapped,
            aad_len,
            raw: bytes.to_vec(),
        })
    }

    /// Unwrap the master key with `password`; `Ok(None)` if the password does not fit,
    /// or this is an access key file (which no password opens: no hash is computed).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the KDF rejects its parameters.
    pub fn open(&self, password: &[u8]) -> Result<Option<MasterKey>> {
        if self.kind != KeyKind::Password {
            return Ok(None);
        }
        let kek = self.kdf.derive(password, &self.salt)?;
        Ok(self.unwrap_master(&kek))
    }

    /// Unwrap the master key with access key `key`: one BLAKE3 hash, no password hashing.
    /// `None` if `key` does not fit or this is a password key file.
    pub fn open_access(&self, key: &AccessKey) -> Option<MasterKey> {
        if self.kind != KeyKind::Access {
            return None;
        }
        self.unwrap_master(&key.kek(&self.salt))
    }

    fn unwrap_master(&self, kek: &[u8; 32]) -> Option<MasterKey> {
        let m = open_with_key(kek, &self.raw[..self.aad_len], &self.wrapped)?;
        let bytes: [u8; 32] = m.try_into().ok()?;
        Some(MasterKey(bytes))
    }
}

/// The KDF parameters an access key file carries: none.
const ACCESS_KDF: KdfParams = KdfParams {
    memory_kib: 0,
    iterations: 0,
    parallelism: 0,
};

/// Every byte of a key file before its label (version 2) and wrapped key.
fn prefix(
    version: u8,
    kdf_id: u8,
    kdf: KdfParams,
    salt: &[u8; SALT_LEN],
    hostname: &str,
    username: &str,
) -> Vec<u8> {
    let mut w = Writer::new();
    w.bytes(&header(FileType::Key, version));
    w.u8(kdf_id);
    w.u32(kdf.memory_kib);
    w.u32(kdf.iterations);
    w.u32(kdf.parallelism);
    w.bytes(salt);
    w.i64(chrono::Utc::now().timestamp());
    for s in [hostname, username] {
        let mut end = s.len().min(u16::MAX as usize);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let b = &s.as_bytes()[..end];
        w.u16(b.len() as u16);
        w.bytes(b);
    }
    w.finish()
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
    fn access_key_file_opens_with_its_access_key_only() {
        let master = MasterKey::generate();
        let (bytes, key) = KeyFile::create_access(&master, "host", "user", "controller ns/x");
        assert_eq!(
            key.key_name(),
            crate::layout::key_file(&BlobId::of_stored(&bytes))
        );
        let file = KeyFile::decode(&bytes, "key").unwrap();
        assert_eq!(file.kind, KeyKind::Access);
        assert_eq!(file.label, "controller ns/x");
        assert_eq!(file.open_access(&key).unwrap().0, master.0);
        // The text form round-trips; another secret for the same file does not open it.
        let text = key.to_text();
        assert!(AccessKey::looks_like(format!(" {text}\n").as_bytes()));
        let parsed = AccessKey::parse(format!("{text}\n").as_bytes()).unwrap();
        assert_eq!(parsed, key);
        let mut wrong = key.clone();
        wrong.secret[0] ^= 1;
        assert!(file.open_access(&wrong).is_none());
        // No password opens an access key file, and computing that hashes nothing.
        let before = password_hashes();
        assert!(file.open(text.as_bytes()).unwrap().is_none());
        assert_eq!(password_hashes(), before);
        // Nor does an access key open a password key file.
        let pw = KeyFile::create(&master, b"pw", FAST, "h", "u").unwrap();
        assert!(KeyFile::decode(&pw, "key")
            .unwrap()
            .open_access(&key)
            .is_none());
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            if let Ok(k) = KeyFile::decode(&bad, "key") {
                assert!(k.open_access(&key).is_none(), "flip at {i} accepted");
            }
        }
        for n in 0..bytes.len() {
            assert!(KeyFile::decode(&bytes[..n], "key").is_err());
        }
    }

    #[test]
    fn malformed_access_keys_are_refused_without_echoing_them() {
        let (_, key) = KeyFile::create_access(&MasterKey::generate(), "h", "u", "");
        let text = key.to_text();
        for bad in [
            "password".to_string(),
            text.replace("dprepo-ak1-", "dprepo-ak2-"),
            text[..text.len() - 1].to_string(),
            text.replacen('-', "", 3),
            format!("{text}00"),
        ] {
            let err = AccessKey::parse(bad.as_bytes()).unwrap_err().to_string();
            assert!(err.contains("not a dprepo access key"), "{err}");
            assert!(!err.contains(&text[20..]), "{err}");
        }
    }

    /// A password key file must stay version 1, so builds from before access keys keep
    /// opening repositories with passwords.
    #[test]
    fn password_key_files_stay_version_1() {
        let bytes = KeyFile::create(&MasterKey::generate(), b"pw", FAST, "h", "u").unwrap();
        assert_eq!(bytes[5], 1);
        let (access, _) = KeyFile::create_access(&MasterKey::generate(), "h", "u", "");
        assert_eq!(access[5], 2);
        // Version 1 cannot carry kdf 2.
        let mut forged = access.clone();
        forged[5] = 1;
        assert!(matches!(
            KeyFile::decode(&forged, "key"),
            Err(Error::Corrupt { .. })
        ));
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
