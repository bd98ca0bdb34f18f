//! Seed `Backup` (`kubeblocks.io/v1alpha1`, namespaced): one backup made with a seed
//! BackupPolicy, optionally to other storage. Translated onto a dataprotection Backup of
//! the same name; its status mirrors that Backup's in the seed's words
//! ([`crate::reconcile::seed::backup`]).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Storage;

/// A backup of the simplified API.
#[allow(clippy::duplicated_attributes)] // kube's repeated `type_ = ...` in printcolumns
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kubeblocks.io",
    version = "v1alpha1",
    kind = "Backup",
    plural = "backups",
    namespaced,
    status = "BackupStatus",
    category = "dprepo-seed",
    derive = "PartialEq",
    doc = "Backup (simplified API) is one backup made with a BackupPolicy (simplified API), optionally to other storage. Its status says how it went, how big it is and where it is.",
    printcolumn(name = "POLICY", type_ = "string", json_path = ".spec.backupPolicyRef"),
    printcolumn(name = "STATUS", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "SIZE", type_ = "string", json_path = ".status.size"),
    printcolumn(name = "LOCATION", type_ = "string", json_path = ".status.location"),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupSpec {
    /// The seed BackupPolicy (in the backup's namespace).
    #[schemars(length(min = 1))]
    pub backup_policy_ref: String,
    /// Storage settings overriding the policy's for this backup only (e.g. another
    /// bucket): the fields given replace the policy's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Storage>,
}

/// How the backup went, in the seed's words.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupStatus {
    /// `Pending`, `Running`, `Completed` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// When the backup started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When it ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// Its size, in binary units (`5GiB`, `312MiB`, `100B`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// Where it is: `<provider>://<bucket>/<path>` (`pvc://<claim>/<path>` for `pv`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The VolumeSnapshot taken, if any; else the id of the dprepo snapshot holding the
    /// backup's data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_name: Option<String>,
    /// Why it failed or waits, naming the field at fault where one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The dataprotection Backup doing the work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_name: Option<String>,
    /// `Ready`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
}
