//! The seed document's simplified API (`kubeblocks.io/v1alpha1`: BackupPolicy,
//! BackupSchedule, Backup, Restore; design document "API设计", CONTROLLER.md section 8),
//! field for field as the document writes them.
//!
//! These are not KubeBlocks' kinds: same kind names, another group, other fields. Every
//! struct refuses unknown fields (`deny_unknown_fields`), so a misspelt field is an error
//! when decoded rather than a setting silently ignored. The reconcilers in
//! [`crate::reconcile::seed`] translate each object onto the `dataprotection.kubeblocks.io`
//! objects ([`crate::builder::seed`] holds the pure translation); the seed object's status
//! mirrors the result in the seed's own words.
//!
//! Decisions where the document is silent are listed in the README ("Simplified API").

pub mod backup;
pub mod backuppolicy;
pub mod backupschedule;
pub mod restore;

pub use backup::Backup;
pub use backuppolicy::BackupPolicy;
pub use backupschedule::BackupSchedule;
pub use restore::Restore;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of the seed kinds.
pub const GROUP: &str = "kubeblocks.io";

/// `apiVersion` of the seed kinds.
pub const API_VERSION: &str = "kubeblocks.io/v1alpha1";

/// The condition every seed object carries: `True` when its translation is in place and
/// healthy, `False` with the field that is wrong (or the dataprotection object's own
/// reason) otherwise.
pub const CONDITION_READY: &str = "Ready";

/// Where backups are stored (`spec.storage` of a BackupPolicy; a Backup may override any
/// of the fields).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Storage {
    /// The storage kind: one of the StorageProviders dprepo ships (`s3`, `minio`, `oss`,
    /// `cos`, `obs`, `gcs`, `s3-compatible`, `nfs`, `pv`/`pvc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The bucket (for `nfs`, the export path; unused for `pv`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// The region, for object stores that need one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The Secret (in the object's namespace) holding the storage credentials, with the
    /// provider's credential keys (`accessKeyId`, `secretAccessKey`; any other parameter of
    /// the provider, such as `endpoint`, may be given here too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<String>,
}

impl Storage {
    /// `self` with every field `over` sets replaced by `over`'s.
    pub fn overridden_by(&self, over: &Storage) -> Storage {
        Storage {
            provider: over.provider.clone().or_else(|| self.provider.clone()),
            bucket: over.bucket.clone().or_else(|| self.bucket.clone()),
            region: over.region.clone().or_else(|| self.region.clone()),
            secret_ref: over.secret_ref.clone().or_else(|| self.secret_ref.clone()),
        }
    }
}
