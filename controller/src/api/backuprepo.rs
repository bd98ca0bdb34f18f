//! `BackupRepo` (cluster-scoped): one storage location, reached through a StorageProvider.
//! With dprepo one BackupRepo is one dprepo repository at the storage root, so
//! deduplication spans every namespace that backs up into it (CONTROLLER.md section 3).

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::SecretReference;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition types a BackupRepo carries (KubeBlocks' and dprepo's).
pub mod condition {
    /// The StorageProvider exists and is Ready.
    pub const STORAGE_PROVIDER_READY: &str = "StorageProviderReady";
    /// The parameters satisfy the provider's schema.
    pub const PARAMETERS_CHECKED: &str = "ParametersChecked";
    /// The StorageClass (Mount access) was created.
    pub const STORAGE_CLASS_CREATED: &str = "StorageClassCreated";
    /// The PVC template rendered and checked.
    pub const PVC_TEMPLATE_CHECKED: &str = "PVCTemplateChecked";
    /// The pre-check Job wrote, read and removed a file.
    pub const PRE_CHECK_PASSED: &str = "PreCheckPassed";
    /// Everything the repository created was deleted.
    pub const DERIVED_OBJECTS_DELETED: &str = "DerivedObjectsDeleted";
    /// dprepo: repository garbage collection runs and succeeds.
    pub const REPOSITORY_MAINTAINED: &str = "RepositoryMaintained";
}

/// How pods reach a BackupRepo's storage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum AccessMethod {
    /// Through a PersistentVolumeClaim of the provider's CSI driver, at `/backupdata`.
    #[default]
    Mount,
    /// Through datasafed and a `datasafed.conf` Secret.
    Tool,
}

impl AccessMethod {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessMethod::Mount => "Mount",
            AccessMethod::Tool => "Tool",
        }
    }
}

impl fmt::Display for AccessMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens to a volume of the generated StorageClass when its claim goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum PvReclaimPolicy {
    /// The volume (and the data on it, for some drivers) is deleted.
    Delete,
    /// The volume is kept.
    Retain,
}

impl PvReclaimPolicy {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            PvReclaimPolicy::Delete => "Delete",
            PvReclaimPolicy::Retain => "Retain",
        }
    }
}

impl fmt::Display for PvReclaimPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where backups are stored.
#[allow(clippy::duplicated_attributes)] // kube's repeated `type_ = ...` in printcolumns
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "dataprotection.kubeblocks.io",
    version = "v1alpha1",
    kind = "BackupRepo",
    plural = "backuprepos",
    status = "BackupRepoStatus",
    category = "kubeblocks",
    derive = "PartialEq",
    doc = "BackupRepo is one storage location for backups, reached through a StorageProvider. With dprepo it holds one deduplicating, encrypted repository shared by every namespace that backs up into it.",
    printcolumn(name = "STATUS", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "STORAGEPROVIDER",
        type_ = "string",
        json_path = ".spec.storageProviderRef"
    ),
    printcolumn(
        name = "ACCESSMETHOD",
        type_ = "string",
        json_path = ".spec.accessMethod"
    ),
    printcolumn(name = "DEFAULT", type_ = "boolean", json_path = ".status.isDefault"),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BackupRepoSpec {
    /// The StorageProvider to use. Cannot be changed.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self == oldSelf", "message": "StorageProviderRef is immutable"}
    ]))]
    pub storage_provider_ref: String,
    /// `Mount` (default) or `Tool`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "Mount"))]
    pub access_method: Option<AccessMethod>,
    /// Size of the PersistentVolumeClaims made for Mount access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::common::quantity")]
    pub volume_capacity: Option<Quantity>,
    /// Reclaim policy of the volumes of the generated StorageClass: `Delete` or `Retain`.
    pub pv_reclaim_policy: PvReclaimPolicy,
    /// Parameters of the StorageProvider that are not secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<BTreeMap<String, String>>,
    /// The Secret holding the StorageProvider's secret parameters. dprepo also reads the
    /// repository password from its key `dprepoPassword`, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<SecretReference>,
    /// A directory inside the storage under which everything of this repository goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([a-zA-Z0-9-_]+/?)*$"))]
    pub path_prefix: Option<String>,
}

/// The phase of a BackupRepo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum BackupRepoPhase {
    /// Checking that the storage can be written and read.
    PreChecking,
    /// A check failed; the conditions say which.
    Failed,
    /// Usable.
    Ready,
    /// Being deleted.
    Deleting,
}

impl BackupRepoPhase {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupRepoPhase::PreChecking => "PreChecking",
            BackupRepoPhase::Failed => "Failed",
            BackupRepoPhase::Ready => "Ready",
            BackupRepoPhase::Deleting => "Deleting",
        }
    }
}

impl fmt::Display for BackupRepoPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The observed state of a BackupRepo.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRepoStatus {
    /// `PreChecking`, `Failed`, `Ready` or `Deleting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupRepoPhase>,
    /// Conditions (see [`condition`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The Secret rendered from the provider's CSI driver Secret template.
    #[serde(
        rename = "generatedCSIDriverSecret",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub generated_csi_driver_secret: Option<SecretReference>,
    /// The StorageClass rendered from the provider's template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated_storage_class_name: Option<String>,
    /// Name of the PersistentVolumeClaim made in each namespace (Mount access).
    #[serde(
        rename = "backupPVCName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub backup_pvc_name: Option<String>,
    /// Name of the `datasafed.conf` Secret made in each namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_config_secret_name: Option<String>,
    /// Whether this is the default repository (annotation `is-default-repo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_default: Option<bool>,
}

impl BackupRepo {
    /// The access method, with KubeBlocks' default (Mount) when unset.
    pub fn access_method(&self) -> AccessMethod {
        self.spec.access_method.unwrap_or_default()
    }
}
