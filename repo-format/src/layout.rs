//! Storage object names (SPEC.md section 4, "Repository layout"): every name the format
//! writes is built here and every listed name is read back here, so the layout lives in
//! one place.
//!
//! Invariants: a constructor's output parses back to the object it was made from
//! ([`parse`]), and [`parse`] accepts only the canonical form of each name (lower-case
//! hex, the pack shard `<xx>` equal to the id's first two digits, the key ring's
//! generation in exactly 8 digits), so two different strings never stand for one object.
//! Nothing here reads storage; names are checked against the generic name rule by
//! `storage/name.rs` when a backend sees them.

use crate::id::BlobId;
use crate::pack::PackKind;
use crate::{Error, Result};

/// The repository's config file (SPEC.md section 16).
pub const CONFIG_NAME: &str = "config";
/// Directory of key files (section 6).
pub const KEYS_DIR: &str = "keys/";
/// Directory of key rings of master-key generations ≥ 2 (section 5.1).
pub const KEYRING_DIR: &str = "keyring/";
/// Directory of packs of Data blobs (section 9), sharded by `<xx>/`.
pub const DATA_DIR: &str = "data/";
/// Directory of packs of Tree and ChunkList blobs (section 9), sharded by `<xx>/`.
pub const META_DIR: &str = "meta/";
/// Directory of index files (section 10).
pub const INDEX_DIR: &str = "index/";
/// Directory of snapshot manifests (section 14).
pub const SNAPSHOTS_DIR: &str = "snapshots/";
/// Directory of snapshot locators (section 14.1).
pub const LOCATORS_DIR: &str = "locators/";
/// Directory of writer session markers (section 15).
pub const SESSIONS_DIR: &str = "sessions/";
/// Directory of gc tombstones (section 18).
pub const TOMBSTONES_DIR: &str = "gc/";
/// Directory of the gc lease and the storage probes (sections 3, 18).
pub const LOCKS_DIR: &str = "locks/";
/// The gc lease (section 18).
pub const LEASE_NAME: &str = "locks/gc";
/// Directory of datasafed catalogue objects (section 14.2).
pub const CATALOG_DIR: &str = "catalog/";

/// Length of a session marker's random part in hex digits (section 15).
pub const SESSION_HEX_LEN: usize = 32;
/// Length of a key ring's generation in hex digits (section 5.1).
pub const KEYRING_HEX_LEN: usize = 8;

const CREATE_PROBE: &str = "locks/create-probe-";
const CAS_PROBE: &str = "locks/cas-probe-";

/// One storage object, as named in SPEC.md section 4.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Object {
    /// `config`.
    Config,
    /// `keys/<hex>`: a key file, by the storage id of its bytes.
    Key(BlobId),
    /// `keyring/<8 hex digits>`: the key ring of a master-key generation.
    KeyRing(u32),
    /// `data/<xx>/<hex>` or `meta/<xx>/<hex>`: a pack.
    Pack(PackKind, BlobId),
    /// `index/<hex>`: an index file.
    IndexFile(BlobId),
    /// `snapshots/<hex>`: a snapshot manifest, by the snapshot id.
    Snapshot(BlobId),
    /// `locators/<hex>`: the locator of the snapshot with this id.
    Locator(BlobId),
    /// `sessions/<32 random hex digits>`: a writer session marker.
    Session(String),
    /// `gc/<hex>`: a gc tombstone.
    Tombstone(BlobId),
    /// `locks/gc`: the gc lease.
    Lease,
    /// `catalog/<hex>`: a datasafed catalogue object.
    Catalog(BlobId),
    /// `locks/create-probe-<pid>-<ns>`: the create-if-absent probe (section 3).
    CreateProbe {
        /// The prober's process id.
        pid: u32,
        /// Nanoseconds since the epoch when it probed.
        ns: i64,
    },
    /// `locks/cas-probe-<pid>-<ns>`: the compare-and-swap probe (section 3).
    CasProbe {
        /// The prober's process id.
        pid: u32,
        /// Nanoseconds since the epoch when it probed.
        ns: i64,
    },
}

impl Object {
    /// The storage name of this object; [`parse`] of it gives the object back.
    pub fn name(&self) -> String {
        match self {
            Object::Config => CONFIG_NAME.to_string(),
            Object::Key(id) => key_file(id),
            Object::KeyRing(g) => keyring(*g),
            Object::Pack(kind, id) => pack(*kind, id),
            Object::IndexFile(id) => index_file(id),
            Object::Snapshot(id) => snapshot(id),
            Object::Locator(id) => locator(id),
            Object::Session(hex) => format!("{SESSIONS_DIR}{hex}"),
            Object::Tombstone(id) => tombstone(id),
            Object::Lease => LEASE_NAME.to_string(),
            Object::Catalog(id) => catalog(id),
            Object::CreateProbe { pid, ns } => create_probe(*pid, *ns),
            Object::CasProbe { pid, ns } => cas_probe(*pid, *ns),
        }
    }

    /// The id in the name, for objects named by one (all but config, key rings,
    /// sessions, the lease and the probes).
    pub fn id(&self) -> Option<BlobId> {
        match self {
            Object::Key(id)
            | Object::Pack(_, id)
            | Object::IndexFile(id)
            | Object::Snapshot(id)
            | Object::Locator(id)
            | Object::Tombstone(id)
            | Object::Catalog(id) => Some(*id),
            _ => None,
        }
    }
}

/// The storage directory of packs of `kind`, with its trailing `/`.
pub fn pack_dir(kind: PackKind) -> &'static str {
    match kind {
        PackKind::Data => DATA_DIR,
        PackKind::Meta => META_DIR,
    }
}

/// `data/<xx>/<hex>` or `meta/<xx>/<hex>`: pack `id` of `kind`, `<xx>` its first two
/// hex digits.
pub fn pack(kind: PackKind, id: &BlobId) -> String {
    let hex = id.to_hex();
    format!("{}{}/{hex}", pack_dir(kind), &hex[..2])
}

/// `keys/<hex>`: the key file whose stored bytes have storage id `id`.
pub fn key_file(id: &BlobId) -> String {
    format!("{KEYS_DIR}{}", id.to_hex())
}

/// `keyring/<8 hex digits>`: generation `generation`'s key ring (names sort by
/// generation).
pub fn keyring(generation: u32) -> String {
    format!("{KEYRING_DIR}{generation:08x}")
}

/// `index/<hex>`: the index file whose stored bytes have storage id `id`.
pub fn index_file(id: &BlobId) -> String {
    format!("{INDEX_DIR}{}", id.to_hex())
}

/// `snapshots/<hex>`: the manifest of snapshot `id`.
pub fn snapshot(id: &BlobId) -> String {
    format!("{SNAPSHOTS_DIR}{}", id.to_hex())
}

/// `locators/<hex>`: the locator of snapshot `snapshot`.
pub fn locator(snapshot: &BlobId) -> String {
    format!("{LOCATORS_DIR}{}", snapshot.to_hex())
}

/// `sessions/<32 hex digits>`: the session marker with random part `random`.
pub fn session(random: &[u8; SESSION_HEX_LEN / 2]) -> String {
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("{SESSIONS_DIR}{hex}")
}

/// `gc/<hex>`: the tombstone whose stored bytes have storage id `id`.
pub fn tombstone(id: &BlobId) -> String {
    format!("{TOMBSTONES_DIR}{}", id.to_hex())
}

/// `catalog/<hex>`: the catalogue object whose stored bytes have storage id `id`.
pub fn catalog(id: &BlobId) -> String {
    format!("{CATALOG_DIR}{}", id.to_hex())
}

/// `locks/create-probe-<pid>-<ns>` (section 3).
pub fn create_probe(pid: u32, ns: i64) -> String {
    format!("{CREATE_PROBE}{pid}-{ns}")
}

/// `locks/cas-probe-<pid>-<ns>` (section 3).
pub fn cas_probe(pid: u32, ns: i64) -> String {
    format!("{CAS_PROBE}{pid}-{ns}")
}

/// A lower-case hex digit: the only spelling a writer produces (SPEC section 4).
fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// The object `name` stands for.
///
/// # Errors
/// [`Error::Corrupt`] naming `name` when it is not the canonical name of an object of
/// SPEC.md section 4 (unknown directory, malformed or upper-case id, a pack in the
/// wrong shard, a key ring generation not in 8 digits, trailing components).
pub fn parse(name: &str) -> Result<Object> {
    let bad = |why: &str| Error::corrupt(name, format!("not a storage object name: {why}"));
    let id = |hex: &str| BlobId::from_hex(hex).map_err(|_| bad("no 64-digit hex id"));
    let object = if name == CONFIG_NAME {
        Object::Config
    } else if name == LEASE_NAME {
        Object::Lease
    } else if let Some(rest) = name.strip_prefix(CREATE_PROBE) {
        let (pid, ns) = probe_parts(rest).ok_or_else(|| bad("malformed probe name"))?;
        Object::CreateProbe { pid, ns }
    } else if let Some(rest) = name.strip_prefix(CAS_PROBE) {
        let (pid, ns) = probe_parts(rest).ok_or_else(|| bad("malformed probe name"))?;
        Object::CasProbe { pid, ns }
    } else if let Some(rest) = name.strip_prefix(KEYS_DIR) {
        Object::Key(id(rest)?)
    } else if let Some(rest) = name.strip_prefix(KEYRING_DIR) {
        if rest.len() != KEYRING_HEX_LEN || !rest.bytes().all(is_lower_hex) {
            return Err(bad("key ring generation is not 8 hex digits"));
        }
        Object::KeyRing(u32::from_str_radix(rest, 16).map_err(|_| bad("bad generation"))?)
    } else if let Some(rest) = name.strip_prefix(DATA_DIR) {
        Object::Pack(
            PackKind::Data,
            id(rest.split_once('/').map_or("", |(_, h)| h))?,
        )
    } else if let Some(rest) = name.strip_prefix(META_DIR) {
        Object::Pack(
            PackKind::Meta,
            id(rest.split_once('/').map_or("", |(_, h)| h))?,
        )
    } else if let Some(rest) = name.strip_prefix(INDEX_DIR) {
        Object::IndexFile(id(rest)?)
    } else if let Some(rest) = name.strip_prefix(SNAPSHOTS_DIR) {
        Object::Snapshot(id(rest)?)
    } else if let Some(rest) = name.strip_prefix(LOCATORS_DIR) {
        Object::Locator(id(rest)?)
    } else if let Some(rest) = name.strip_prefix(SESSIONS_DIR) {
        if rest.len() != SESSION_HEX_LEN || !rest.bytes().all(is_lower_hex) {
            return Err(bad("session marker is not 32 hex digits"));
        }
        Object::Session(rest.to_string())
    } else if let Some(rest) = name.strip_prefix(TOMBSTONES_DIR) {
        Object::Tombstone(id(rest)?)
    } else if let Some(rest) = name.strip_prefix(CATALOG_DIR) {
        Object::Catalog(id(rest)?)
    } else {
        return Err(bad("unknown directory"));
    };
    // Only the canonical spelling: lower-case hex, the right pack shard.
    if object.name() != name {
        return Err(bad(
            "not in canonical form (lower-case hex, pack shard <xx>/)",
        ));
    }
    Ok(object)
}

/// The id of `name` when it is an object of the directory `dir` (one of the `*_DIR`
/// constants, `data/` and `meta/` included) named by an id; `None` for anything else.
/// For listings, where an unexpected name is skipped rather than an error.
pub fn id_in(dir: &str, name: &str) -> Option<BlobId> {
    if !name.starts_with(dir) {
        return None;
    }
    parse(name).ok()?.id()
}

/// Kind and id of pack `name`, if it is a pack's name.
pub fn parse_pack(name: &str) -> Option<(PackKind, BlobId)> {
    match parse(name) {
        Ok(Object::Pack(kind, id)) => Some((kind, id)),
        _ => None,
    }
}

/// The generation of key ring `name`, if it is a key ring's name.
pub fn parse_keyring(name: &str) -> Option<u32> {
    match parse(name) {
        Ok(Object::KeyRing(g)) => Some(g),
        _ => None,
    }
}

fn probe_parts(rest: &str) -> Option<(u32, i64)> {
    let (pid, ns) = rest.split_once('-')?;
    Some((pid.parse().ok()?, ns.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(byte: u8) -> BlobId {
        BlobId([byte; 32])
    }

    #[test]
    fn every_object_round_trips_through_its_name() {
        let objects = [
            Object::Config,
            Object::Key(id(1)),
            Object::KeyRing(2),
            Object::KeyRing(u32::MAX),
            Object::Pack(PackKind::Data, id(0xab)),
            Object::Pack(PackKind::Meta, id(0x0c)),
            Object::IndexFile(id(3)),
            Object::Snapshot(id(4)),
            Object::Locator(id(5)),
            Object::Session("0123456789abcdef0123456789abcdef".into()),
            Object::Tombstone(id(6)),
            Object::Lease,
            Object::Catalog(id(7)),
            Object::CreateProbe {
                pid: 42,
                ns: 1_700_000_000_000_000_000,
            },
            Object::CasProbe { pid: 1, ns: 0 },
        ];
        for o in objects {
            assert_eq!(parse(&o.name()).unwrap(), o, "{}", o.name());
        }
    }

    #[test]
    fn names_are_those_of_spec_section_4() {
        let hex = "ab".repeat(32);
        let i = id(0xab);
        assert_eq!(pack(PackKind::Data, &i), format!("data/ab/{hex}"));
        assert_eq!(pack(PackKind::Meta, &i), format!("meta/ab/{hex}"));
        assert_eq!(index_file(&i), format!("index/{hex}"));
        assert_eq!(snapshot(&i), format!("snapshots/{hex}"));
        assert_eq!(locator(&i), format!("locators/{hex}"));
        assert_eq!(key_file(&i), format!("keys/{hex}"));
        assert_eq!(tombstone(&i), format!("gc/{hex}"));
        assert_eq!(catalog(&i), format!("catalog/{hex}"));
        assert_eq!(keyring(2), "keyring/00000002");
        assert_eq!(
            session(&[0xab; 16]),
            format!("sessions/{}", "ab".repeat(16))
        );
        assert_eq!(create_probe(7, 9), "locks/create-probe-7-9");
        assert_eq!(cas_probe(7, 9), "locks/cas-probe-7-9");
        assert_eq!(parse("config").unwrap(), Object::Config);
        assert_eq!(parse("locks/gc").unwrap(), Object::Lease);
        assert_eq!(
            parse_pack(&format!("data/ab/{hex}")),
            Some((PackKind::Data, i))
        );
        assert_eq!(parse_keyring("keyring/0000000a"), Some(10));
        assert_eq!(id_in(SNAPSHOTS_DIR, &snapshot(&i)), Some(i));
        assert_eq!(id_in(INDEX_DIR, &snapshot(&i)), None);
    }

    #[test]
    fn malformed_names_are_refused_with_an_error_naming_them() {
        let hex = "ab".repeat(32);
        for name in [
            String::new(),
            "configs".into(),
            "keyring/2".into(),
            "keyring/0000000g".into(),
            "keyring/000000002".into(),
            format!("data/{hex}"),
            format!("data/cd/{hex}"),
            format!("data/ab/{hex}/x"),
            format!("meta/AB/{}", hex.to_uppercase()),
            format!("index/{}", hex.to_uppercase()),
            format!("index/{hex}/"),
            format!("snapshots/{}", &hex[1..]),
            "sessions/xyz".into(),
            format!("sessions/{}", "AB".repeat(16)),
            "locks/other".into(),
            "locks/cas-probe-1".into(),
            "locks/create-probe-x-1".into(),
            format!("other/{hex}"),
            format!("/index/{hex}"),
        ] {
            match parse(&name) {
                Err(Error::Corrupt { object, .. }) => assert_eq!(object, name),
                other => panic!("{name:?} gave {other:?}"),
            }
        }
    }

    /// Junk of every shape (a fuzz corpus in miniature) is refused or parsed, never a
    /// panic, and whatever parses is canonical.
    #[test]
    fn junk_names_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let pieces = [
            "data/",
            "meta/",
            "index/",
            "keys/",
            "keyring/",
            "locks/",
            "gc",
            "/",
            "ab",
            "0",
            "ff",
            "é",
            "\0",
            "-",
            "cas-probe-",
            "create-probe-",
            "sessions/",
            "config",
            "..",
        ];
        for _ in 0..20_000 {
            let mut name = String::new();
            for _ in 0..next() % 8 {
                let r = next();
                if r % 3 == 0 {
                    name.push_str(&"0123456789abcdef".repeat((r % 5) as usize));
                } else {
                    name.push_str(pieces[(r as usize / 3) % pieces.len()]);
                }
            }
            if let Ok(o) = parse(&name) {
                assert_eq!(o.name(), name);
            }
        }
    }
}
