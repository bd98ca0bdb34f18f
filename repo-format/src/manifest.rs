//! Snapshot manifests (`snapshots/<id>`): what a snapshot is. JSON in an envelope of type
//! Snapshot; the snapshot id is the storage id of the file. Unknown fields are ignored,
//! so later minor versions can add fields without breaking older readers.
//!
//! A manifest is written last, after every pack and index file it depends on is
//! durable: its existence is what commits a snapshot.

use crate::config::ChunkerSettings;
use crate::crypto::Keys;
use crate::envelope::{open_file, seal_file, FileType};
use crate::error::{Error, Result};
use crate::id::BlobId;
use serde::{Deserialize, Serialize};

/// Envelope version of snapshot files.
pub const SNAPSHOT_FILE_VERSION: u8 = 1;
/// Manifest major version written and read by this build.
pub const MANIFEST_VERSION: u32 = 1;

/// Counters recorded by the backup that made a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SnapshotSummary {
    /// Regular files in the snapshot.
    pub files: u64,
    /// Directories in the snapshot.
    pub dirs: u64,
    /// Symlinks in the snapshot.
    pub symlinks: u64,
    /// FIFOs, sockets and device nodes in the snapshot.
    pub special_files: u64,
    /// Files read because they were new.
    pub files_new: u64,
    /// Files read because they changed since the parent.
    pub files_changed: u64,
    /// Files taken from the parent without reading.
    pub files_unmodified: u64,
    /// Sum of file sizes (logical bytes).
    pub total_bytes: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Blobs this backup added to the repository.
    pub blobs_added: u64,
    /// Plaintext bytes of the blobs added.
    pub bytes_added: u64,
    /// Stored (compressed, encrypted) bytes of the blobs added.
    pub bytes_stored: u64,
    /// Of the blobs added, those stored as deltas against a page of the parent.
    pub deltas_added: u64,
    /// Packs uploaded.
    pub packs_written: u64,
    /// Entries that could not be read and were left out.
    pub errors: u64,
    /// Files that changed while they were read: each is in the snapshot as read, which
    /// may mix old and new contents.
    pub files_changed_during_read: u64,
    /// Wall time of the backup in seconds.
    pub duration_secs: f64,
}

/// The manifest of one snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotManifest {
    /// Manifest major version.
    pub version: u32,
    /// When the backup started.
    pub time: chrono::DateTime<chrono::Utc>,
    /// Root tree.
    pub tree: BlobId,
    /// Backed-up paths as given (absolute), or `/<name>` for a stream.
    pub paths: Vec<String>,
    /// Host name of the machine that made it.
    pub hostname: String,
    /// User that made it.
    pub username: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Snapshot whose unchanged files were reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<BlobId>,
    /// For a stream backup: the name under which the stream is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_name: Option<String>,
    /// Chunker parameters used for this snapshot's content.
    pub chunker: ChunkerSettings,
    /// Version of the program that wrote it.
    pub program_version: String,
    /// Backup counters.
    #[serde(default)]
    pub summary: SnapshotSummary,
    /// When `forget --expired` may remove this snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<chrono::DateTime<chrono::Utc>>,
    /// For a manifest rewritten by `dprepo snapshot expire`: the snapshot it replaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<BlobId>,
    /// For a snapshot written by `dprepo copy`: the snapshot it copies, so that copying
    /// again finds it (SPEC.md section 14, `copied_from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_from: Option<CopyOrigin>,
}

/// Where a copied snapshot comes from: the source repository's config `id` and the
/// snapshot id there, with what recognises the same snapshot re-sealed under a new id
/// (SPEC.md section 14).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CopyOrigin {
    /// The `id` of the source repository's config.
    pub repository: String,
    /// The snapshot copied, in the source repository.
    pub snapshot: BlobId,
    /// That snapshot's `original` (the first id of its chain of re-sealed manifests),
    /// when it has one. Absent in copies by older builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<BlobId>,
    /// That snapshot's root tree id, in the source repository. Absent in copies by
    /// older builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<BlobId>,
}

impl SnapshotManifest {
    /// Encode as a sealed snapshot file.
    pub fn encode(&self, keys: &Keys) -> Vec<u8> {
        let json = serde_json::to_vec(self).unwrap_or_default();
        seal_file(keys, FileType::Snapshot, SNAPSHOT_FILE_VERSION, &json)
    }

    /// Decode a sealed snapshot file.
    ///
    /// # Errors
    /// [`Error::Corrupt`] / [`Error::UnsupportedVersion`] naming `object`.
    pub fn decode(keys: &Keys, bytes: &[u8], object: &str) -> Result<SnapshotManifest> {
        let (_, body) = open_file(
            keys,
            bytes,
            FileType::Snapshot,
            SNAPSHOT_FILE_VERSION,
            object,
        )?;
        #[derive(Deserialize)]
        struct VersionOnly {
            version: u32,
        }
        let v: VersionOnly =
            serde_json::from_slice(&body).map_err(|e| Error::corrupt(object, e.to_string()))?;
        if v.version != MANIFEST_VERSION {
            return Err(Error::UnsupportedVersion {
                object: object.into(),
                found: v.version,
                supported: MANIFEST_VERSION,
            });
        }
        serde_json::from_slice(&body).map_err(|e| Error::corrupt(object, e.to_string()))
    }
}

/// A writer session marker (`sessions/<random id>`): present while a backup may
/// reference blobs that no snapshot references yet. Garbage collection does not delete
/// the packs of a tombstone while a live session has not seen that tombstone
/// (SPEC.md, "Garbage collection protocol"). Rewritten in place for heartbeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionMarker {
    /// Host running the writer.
    pub hostname: String,
    /// Process id of the writer.
    pub pid: u32,
    /// Inode number of the writer's PID namespace (`/proc/self/ns/pid`); absent in
    /// markers written before it was recorded ([`crate::liveness`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_namespace: Option<u64>,
    /// The writer's kernel boot id; absent as `pid_namespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// When the session started.
    pub started: chrono::DateTime<chrono::Utc>,
    /// What the writer is doing (`backup`).
    pub command: String,
    /// Last sign of life (writer's clock).
    #[serde(default = "epoch")]
    pub heartbeat: chrono::DateTime<chrono::Utc>,
    /// Set once `seen_tombstones` is complete; a session that is not ready blocks
    /// every tombstone.
    #[serde(default)]
    pub ready: bool,
    /// Names of the tombstones (`gc/<id>`) that existed when the writer started; it
    /// never references blobs of their packs.
    #[serde(default)]
    pub seen_tombstones: Vec<String>,
    /// The master-key generation the writer seals with (SPEC.md section 5.1); absent in
    /// markers of builds before key rotation, which count as older than any rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_generation: Option<u32>,
}

fn epoch() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::UNIX_EPOCH
}

/// Envelope version of session files.
pub const SESSION_FILE_VERSION: u8 = 1;

impl SessionMarker {
    /// Who wrote it, for [`crate::liveness::Holder::is_dead`].
    pub fn holder(&self) -> crate::liveness::Holder {
        crate::liveness::Holder {
            hostname: self.hostname.clone(),
            pid: self.pid,
            pid_namespace: self.pid_namespace,
            boot_id: self.boot_id.clone(),
        }
    }

    /// Encode as a sealed session file.
    pub fn encode(&self, keys: &Keys) -> Vec<u8> {
        seal_file(
            keys,
            FileType::Session,
            SESSION_FILE_VERSION,
            &serde_json::to_vec(self).unwrap_or_default(),
        )
    }

    /// Decode a sealed session file.
    ///
    /// # Errors
    /// [`Error::Corrupt`] / [`Error::UnsupportedVersion`] naming `object`.
    pub fn decode(keys: &Keys, bytes: &[u8], object: &str) -> Result<SessionMarker> {
        let (_, body) = open_file(keys, bytes, FileType::Session, SESSION_FILE_VERSION, object)?;
        serde_json::from_slice(&body).map_err(|e| Error::corrupt(object, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;
    use proptest::prelude::*;

    fn keys() -> Keys {
        Keys::derive(&MasterKey::from_bytes([4; 32]))
    }

    proptest! {
        #[test]
        fn manifest_round_trip(
            secs in 0i64..4_000_000_000,
            tree in proptest::array::uniform32(any::<u8>()),
            paths in proptest::collection::vec(".{0,20}", 0..4),
            tags in proptest::collection::vec("[a-z]{1,8}", 0..3),
            host in ".{0,16}",
            parent in proptest::option::of(proptest::array::uniform32(any::<u8>())),
            stdin_name in proptest::option::of("[a-z.]{1,12}"),
            files in any::<u64>(),
        ) {
            let m = SnapshotManifest {
                version: MANIFEST_VERSION,
                time: chrono::DateTime::from_timestamp(secs, 0).unwrap(),
                tree: BlobId(tree),
                paths,
                hostname: host,
                username: "u".into(),
                tags,
                parent: parent.map(BlobId),
                stdin_name,
                chunker: ChunkerSettings { min_size: 1, avg_size: 2, max_size: 3, tar_page_size: None },
                program_version: "dprepo test".into(),
                summary: SnapshotSummary { files, ..Default::default() },
                expires: None,
                original: None,
                copied_from: None,
            };
            let bytes = m.encode(&keys());
            prop_assert_eq!(SnapshotManifest::decode(&keys(), &bytes, "s").unwrap(), m);
            for cut in [1, 10, bytes.len() / 2] {
                prop_assert!(SnapshotManifest::decode(&keys(), &bytes[..bytes.len() - cut], "s").is_err());
            }
        }

        #[test]
        fn manifest_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = SnapshotManifest::decode(&keys(), &bytes, "fuzz");
            let _ = SessionMarker::decode(&keys(), &bytes, "fuzz");
        }
    }

    #[test]
    fn a_newer_manifest_version_is_refused_by_name() {
        let json = br#"{"version": 2, "time": "2026-01-01T00:00:00Z"}"#;
        let bytes = seal_file(&keys(), FileType::Snapshot, SNAPSHOT_FILE_VERSION, json);
        assert!(matches!(
            SnapshotManifest::decode(&keys(), &bytes, "s"),
            Err(Error::UnsupportedVersion { found: 2, .. })
        ));
    }

    #[test]
    fn unknown_fields_are_ignored_for_forward_compatibility() {
        let json = br#"{"version":1,"time":"2026-01-01T00:00:00Z","tree":"0000000000000000000000000000000000000000000000000000000000000000","paths":["/x"],"hostname":"h","username":"u","chunker":{"min_size":1,"avg_size":2,"max_size":3},"program_version":"p","added_later":{"x":1}}"#;
        let bytes = seal_file(&keys(), FileType::Snapshot, SNAPSHOT_FILE_VERSION, json);
        assert_eq!(
            SnapshotManifest::decode(&keys(), &bytes, "s")
                .unwrap()
                .paths,
            vec!["/x".to_string()]
        );
    }

    #[test]
    fn session_marker_round_trip() {
        let m = SessionMarker {
            hostname: "h".into(),
            pid: 7,
            pid_namespace: Some(4026531836),
            boot_id: Some("0f3e5a4c-7d1e-4c2a-9a57-3f2b8d1c6e90".into()),
            started: chrono::Utc::now(),
            command: "backup".into(),
            heartbeat: chrono::Utc::now(),
            ready: true,
            seen_tombstones: vec!["gc/x".into()],
            key_generation: None,
        };
        assert_eq!(
            SessionMarker::decode(&keys(), &m.encode(&keys()), "s").unwrap(),
            m
        );
    }
}

/// Envelope version of tombstone files.
pub const TOMBSTONE_FILE_VERSION: u8 = 1;

/// A pack named in a tombstone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TombstonePack {
    /// Pack id.
    pub id: BlobId,
    /// Data or metadata pack.
    pub kind: crate::pack::PackKind,
}

/// A tombstone (`gc/<id>`): packs garbage collection intends to delete once no writer
/// that could still reference them is running.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tombstone {
    /// When gc wrote it.
    pub created: chrono::DateTime<chrono::Utc>,
    /// Packs to delete.
    pub packs: Vec<TombstonePack>,
}

impl Tombstone {
    /// Encode as a sealed tombstone file.
    pub fn encode(&self, keys: &Keys) -> Vec<u8> {
        seal_file(
            keys,
            FileType::Tombstone,
            TOMBSTONE_FILE_VERSION,
            &serde_json::to_vec(self).unwrap_or_default(),
        )
    }

    /// Decode a sealed tombstone file.
    ///
    /// # Errors
    /// [`Error::Corrupt`] / [`Error::UnsupportedVersion`] naming `object`.
    pub fn decode(keys: &Keys, bytes: &[u8], object: &str) -> Result<Tombstone> {
        let (_, body) = open_file(
            keys,
            bytes,
            FileType::Tombstone,
            TOMBSTONE_FILE_VERSION,
            object,
        )?;
        serde_json::from_slice(&body).map_err(|e| Error::corrupt(object, e.to_string()))
    }
}

/// Envelope version of lease files.
pub const LEASE_FILE_VERSION: u8 = 1;

/// The gc lease (`locks/gc`): at most one garbage collection runs at a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    /// Holder's host.
    pub hostname: String,
    /// Holder's process id.
    pub pid: u32,
    /// Inode number of the holder's PID namespace; absent in leases written before it
    /// was recorded ([`crate::liveness`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_namespace: Option<u64>,
    /// The holder's kernel boot id; absent as `pid_namespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// When it was taken.
    pub acquired: chrono::DateTime<chrono::Utc>,
    /// Until when it holds unless renewed (holder's clock).
    pub expires: chrono::DateTime<chrono::Utc>,
    /// Random token identifying the holder.
    pub token: String,
    /// What holds it: `gc`, or a repair command (`repair index`, `repair packs`,
    /// `repair snapshots`), which exclude gc the same way. Absent in leases written
    /// before repair took the lease: `gc`.
    #[serde(default = "gc_command")]
    pub command: String,
}

fn gc_command() -> String {
    "gc".into()
}

impl Lease {
    /// Who holds it, for [`crate::liveness::Holder::is_dead`].
    pub fn holder(&self) -> crate::liveness::Holder {
        crate::liveness::Holder {
            hostname: self.hostname.clone(),
            pid: self.pid,
            pid_namespace: self.pid_namespace,
            boot_id: self.boot_id.clone(),
        }
    }

    /// Encode as a sealed lease file.
    pub fn encode(&self, keys: &Keys) -> Vec<u8> {
        seal_file(
            keys,
            FileType::Lease,
            LEASE_FILE_VERSION,
            &serde_json::to_vec(self).unwrap_or_default(),
        )
    }

    /// Decode a sealed lease file.
    ///
    /// # Errors
    /// [`Error::Corrupt`] / [`Error::UnsupportedVersion`] naming `object`.
    pub fn decode(keys: &Keys, bytes: &[u8], object: &str) -> Result<Lease> {
        let (_, body) = open_file(keys, bytes, FileType::Lease, LEASE_FILE_VERSION, object)?;
        serde_json::from_slice(&body).map_err(|e| Error::corrupt(object, e.to_string()))
    }
}
