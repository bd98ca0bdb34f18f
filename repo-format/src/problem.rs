//! The kinds of damage `verify` reports, one enum for the engine, the CLI and the
//! controller. Serialised as the snake_case names scripts already match on.

/// What kind of damage a verify problem is. Serialised (JSON output, `Display`) as the
/// snake_case names, e.g. `pack_missing`. The variants are in the order of those names, so
/// sorting by kind sorts by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// A blob does not decrypt or does not hash to its id (`--read-data`).
    BlobDamaged,
    /// A blob a snapshot references is in no index file.
    BlobMissing,
    /// An index entry points beyond the end of its pack.
    BlobOutOfBounds,
    /// A file's chunk list cannot be read.
    ChunkListUnreadable,
    /// A delta blob's base is itself a delta, or not a data blob.
    DeltaBaseInvalid,
    /// A delta blob's base is in no index file.
    DeltaBaseMissing,
    /// A file's chunks hold another number of bytes than its node records.
    FileSizeMismatch,
    /// An index file cannot be read or decoded.
    IndexFileDamaged,
    /// An index entry disagrees with its pack's header.
    IndexHeaderMismatch,
    /// A pack's content does not hash to its name (`--read-data`).
    PackHashMismatch,
    /// A pack's header cannot be read or decoded.
    PackHeaderDamaged,
    /// An index file lists a pack that storage does not hold.
    PackMissing,
    /// A pack cannot be read from storage (`--read-data`).
    PackUnreadable,
    /// A snapshot manifest cannot be read or decoded.
    SnapshotDamaged,
    /// A tree a snapshot references cannot be loaded.
    TreeUnreadable,
}

impl ProblemKind {
    /// The kind's name, as JSON output and `Display` write it.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::BlobDamaged => "blob_damaged",
            ProblemKind::BlobMissing => "blob_missing",
            ProblemKind::BlobOutOfBounds => "blob_out_of_bounds",
            ProblemKind::ChunkListUnreadable => "chunk_list_unreadable",
            ProblemKind::DeltaBaseInvalid => "delta_base_invalid",
            ProblemKind::DeltaBaseMissing => "delta_base_missing",
            ProblemKind::FileSizeMismatch => "file_size_mismatch",
            ProblemKind::IndexFileDamaged => "index_file_damaged",
            ProblemKind::IndexHeaderMismatch => "index_header_mismatch",
            ProblemKind::PackHashMismatch => "pack_hash_mismatch",
            ProblemKind::PackHeaderDamaged => "pack_header_damaged",
            ProblemKind::PackMissing => "pack_missing",
            ProblemKind::PackUnreadable => "pack_unreadable",
            ProblemKind::SnapshotDamaged => "snapshot_damaged",
            ProblemKind::TreeUnreadable => "tree_unreadable",
        }
    }
}

impl std::fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for ProblemKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_serialise_as_their_names_in_name_order() {
        let all = [
            ProblemKind::BlobDamaged,
            ProblemKind::BlobMissing,
            ProblemKind::BlobOutOfBounds,
            ProblemKind::ChunkListUnreadable,
            ProblemKind::DeltaBaseInvalid,
            ProblemKind::DeltaBaseMissing,
            ProblemKind::FileSizeMismatch,
            ProblemKind::IndexFileDamaged,
            ProblemKind::IndexHeaderMismatch,
            ProblemKind::PackHashMismatch,
            ProblemKind::PackHeaderDamaged,
            ProblemKind::PackMissing,
            ProblemKind::PackUnreadable,
            ProblemKind::SnapshotDamaged,
            ProblemKind::TreeUnreadable,
        ];
        for k in all {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
            assert_eq!(k.to_string(), k.as_str());
        }
        assert!(all
            .windows(2)
            .all(|w| w[0] < w[1] && w[0].as_str() < w[1].as_str()));
    }
}
