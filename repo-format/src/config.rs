//! The repository config (`config`): format version, repository id, chunker parameters
//! and pack settings, chosen at `init` and fixed for the repository's life. Stored as
//! JSON in an envelope of type Config; unknown JSON fields are ignored by readers.

use crate::crypto::Keys;
use crate::envelope::{open_file, seal_file, FileType};
use crate::error::{Error, Result};
use dprepo_chunker::ChunkerParams;
use serde::{Deserialize, Serialize};

/// The repository format major version written by `init` and read by this build.
pub const REPOSITORY_VERSION: u32 = 1;
/// The version of a repository whose master key was rotated (SPEC.md section 5.1): its
/// content-id key comes from a key ring, which builds that read only version 1 would
/// derive wrongly from the master key, so they must refuse it.
pub const REPOSITORY_VERSION_ROTATED: u32 = 2;
/// Envelope version of the config file.
pub const CONFIG_FILE_VERSION: u8 = 1;
/// Default target size of a pack.
pub const DEFAULT_PACK_SIZE: u32 = 16 << 20;
/// Bounds on the pack size accepted from config (offsets in packs are u32).
pub const MAX_PACK_SIZE: u32 = 1 << 30;
/// Smallest accepted pack size.
pub const MIN_PACK_SIZE: u32 = 1 << 20;

/// Chunker parameters as stored in config and snapshot manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerSettings {
    /// Smallest chunk (except a file's last one), bytes.
    pub min_size: u32,
    /// Average chunk size targeted, bytes.
    pub avg_size: u32,
    /// Largest chunk, bytes.
    pub max_size: u32,
    /// Only in snapshot manifests of streams: present when the stream was recognised as
    /// tar and cut tar-aware, page data of page-structured members in chunks of exactly
    /// this many bytes (SPEC.md, "Stream chunking"). Informational: readers need it for
    /// nothing, and a writer ignores it in config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tar_page_size: Option<u32>,
}

impl From<ChunkerParams> for ChunkerSettings {
    fn from(p: ChunkerParams) -> Self {
        ChunkerSettings {
            min_size: p.min_size,
            avg_size: p.avg_size,
            max_size: p.max_size,
            tar_page_size: None,
        }
    }
}

impl ChunkerSettings {
    /// Validated chunker parameters.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if FastCDC would not accept them.
    pub fn params(&self) -> Result<ChunkerParams> {
        ChunkerParams::new(self.min_size, self.avg_size, self.max_size)
            .map_err(|e| Error::InvalidArgument(format!("chunker parameters: {e}")))
    }
}

/// The repository config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Repository format major version; readers refuse a higher one.
    pub version: u32,
    /// Random repository id, hex.
    pub id: String,
    /// Creation time.
    pub created: chrono::DateTime<chrono::Utc>,
    /// Chunker parameters for directory backups.
    pub chunker: ChunkerSettings,
    /// Chunker parameters for stream (stdin) backups.
    pub stream_chunker: ChunkerSettings,
    /// Target size of a pack in bytes.
    pub pack_size: u32,
    /// zstd level for blobs (0 stores everything uncompressed).
    pub compression_level: i32,
}

impl Config {
    /// A new config with a random id and the given settings.
    pub fn new(chunker: ChunkerParams, stream_chunker: ChunkerParams) -> Config {
        let id = Keys::derive(&crate::crypto::MasterKey::generate()).content_id(b"repository id");
        Config {
            version: REPOSITORY_VERSION,
            id: id.to_hex(),
            created: chrono::Utc::now(),
            chunker: chunker.into(),
            stream_chunker: stream_chunker.into(),
            pack_size: DEFAULT_PACK_SIZE,
            compression_level: 3,
        }
    }

    /// Check every field against what this build can use.
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] for a newer format; [`Error::Corrupt`] otherwise.
    pub fn validate(&self) -> Result<()> {
        if !(REPOSITORY_VERSION..=REPOSITORY_VERSION_ROTATED).contains(&self.version) {
            return Err(Error::UnsupportedVersion {
                object: "repository config".into(),
                found: self.version,
                supported: REPOSITORY_VERSION_ROTATED,
            });
        }
        for c in [&self.chunker, &self.stream_chunker] {
            c.params()
                .map_err(|e| Error::corrupt(crate::layout::CONFIG_NAME, e.to_string()))?;
        }
        if !(MIN_PACK_SIZE..=MAX_PACK_SIZE).contains(&self.pack_size) {
            return Err(Error::corrupt(
                crate::layout::CONFIG_NAME,
                format!("pack_size {} out of bounds", self.pack_size),
            ));
        }
        if !(0..=22).contains(&self.compression_level) {
            return Err(Error::corrupt(
                crate::layout::CONFIG_NAME,
                format!("compression_level {} out of bounds", self.compression_level),
            ));
        }
        Ok(())
    }

    /// Encode as a sealed config file.
    pub fn encode(&self, keys: &Keys) -> Vec<u8> {
        let json = serde_json::to_vec(self).unwrap_or_default();
        seal_file(keys, FileType::Config, CONFIG_FILE_VERSION, &json)
    }

    /// Decode and validate a sealed config file.
    ///
    /// # Errors
    /// [`Error::Corrupt`] / [`Error::UnsupportedVersion`].
    pub fn decode(keys: &Keys, bytes: &[u8]) -> Result<Config> {
        let (_, body) = open_file(
            keys,
            bytes,
            FileType::Config,
            CONFIG_FILE_VERSION,
            crate::layout::CONFIG_NAME,
        )?;
        // Check the version field before the rest, so a newer format says so instead of
        // failing on a field it changed.
        #[derive(Deserialize)]
        struct VersionOnly {
            version: u32,
        }
        let v: VersionOnly = serde_json::from_slice(&body)
            .map_err(|e| Error::corrupt(crate::layout::CONFIG_NAME, e.to_string()))?;
        if !(REPOSITORY_VERSION..=REPOSITORY_VERSION_ROTATED).contains(&v.version) {
            return Err(Error::UnsupportedVersion {
                object: "repository config".into(),
                found: v.version,
                supported: REPOSITORY_VERSION_ROTATED,
            });
        }
        let config: Config = serde_json::from_slice(&body)
            .map_err(|e| Error::corrupt(crate::layout::CONFIG_NAME, e.to_string()))?;
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;
    use crate::envelope::seal_file;
    use proptest::prelude::*;

    fn keys() -> Keys {
        Keys::derive(&MasterKey::from_bytes([6; 32]))
    }

    proptest! {
        #[test]
        fn config_round_trip(avg_kib in 1u32..4096, pack_mib in 1u32..512, level in 0i32..=22) {
            let avg = avg_kib * 1024;
            let Ok(chunker) = ChunkerParams::new(avg / 4, avg, avg * 4) else { return Ok(()) };
            let mut c = Config::new(chunker, ChunkerParams::SMALL);
            c.pack_size = pack_mib << 20;
            c.compression_level = level;
            let bytes = c.encode(&keys());
            prop_assert_eq!(Config::decode(&keys(), &bytes).unwrap(), c);
        }

        #[test]
        fn config_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Config::decode(&keys(), &bytes);
        }
    }

    #[test]
    fn newer_repository_version_and_bad_values_are_refused() {
        let mut c = Config::new(ChunkerParams::DEFAULT, ChunkerParams::SMALL);
        c.version = 3;
        let bytes = seal_file(
            &keys(),
            FileType::Config,
            CONFIG_FILE_VERSION,
            &serde_json::to_vec(&c).unwrap(),
        );
        assert!(matches!(
            Config::decode(&keys(), &bytes),
            Err(Error::UnsupportedVersion { found: 3, .. })
        ));
        let mut c = Config::new(ChunkerParams::DEFAULT, ChunkerParams::SMALL);
        c.chunker.min_size = 0;
        let bytes = seal_file(
            &keys(),
            FileType::Config,
            CONFIG_FILE_VERSION,
            &serde_json::to_vec(&c).unwrap(),
        );
        assert!(matches!(
            Config::decode(&keys(), &bytes),
            Err(Error::Corrupt { .. })
        ));
        let mut c = Config::new(ChunkerParams::DEFAULT, ChunkerParams::SMALL);
        c.pack_size = u32::MAX;
        let bytes = seal_file(
            &keys(),
            FileType::Config,
            CONFIG_FILE_VERSION,
            &serde_json::to_vec(&c).unwrap(),
        );
        assert!(matches!(
            Config::decode(&keys(), &bytes),
            Err(Error::Corrupt { .. })
        ));
    }
}
