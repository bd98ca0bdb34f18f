//! `BackupPolicy` (namespaced, short name `bp`): what to back up (targets), how (backup
//! methods naming ActionSets), and where (the BackupRepo). The target and method types are
//! copied into a Backup's status, so they live here and `backup.rs` reuses them.

use std::fmt;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements, VolumeMount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{AvailabilityPhase, EncryptionConfig, NAME_PATTERN};

/// How backups of a policy are retained beyond their `retentionPeriod`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum BackupPolicyRetentionPolicy {
    /// The newest Completed backup of each cluster, policy and method is never collected.
    #[serde(rename = "retainLatestBackup")]
    RetainLatestBackup,
    /// No extra rule.
    #[serde(rename = "none")]
    None,
}

impl BackupPolicyRetentionPolicy {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupPolicyRetentionPolicy::RetainLatestBackup => "retainLatestBackup",
            BackupPolicyRetentionPolicy::None => "none",
        }
    }
}

impl fmt::Display for BackupPolicyRetentionPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What, how and where to back up.
#[allow(clippy::duplicated_attributes)] // kube's repeated `type_ = ...` in printcolumns
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "dataprotection.kubeblocks.io",
    version = "v1alpha1",
    kind = "BackupPolicy",
    plural = "backuppolicies",
    shortname = "bp",
    namespaced,
    status = "BackupPolicyStatus",
    category = "kubeblocks",
    derive = "PartialEq",
    doc = "BackupPolicy says what to back up (the target pods and their credentials), how (backup methods naming ActionSets) and where (a BackupRepo).",
    printcolumn(
        name = "BACKUP-REPO",
        type_ = "string",
        json_path = ".spec.backupRepoName"
    ),
    printcolumn(name = "STATUS", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.target) && !has(self.targets)) || (has(self.targets) && !has(self.target))",
    "message": "either spec.target or spec.targets",
}]))]
pub struct BackupPolicySpec {
    /// The BackupRepo to store backups in; the default repository when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = NAME_PATTERN))]
    pub backup_repo_name: Option<String>,
    /// A directory inside the repository's namespace directory for these backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Retries of a backup Job before the backup fails (0 to 10, default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10), extend("default" = 2))]
    pub backoff_limit: Option<i32>,
    /// The one target to back up (or `targets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<BackupTarget>,
    /// Several targets backed up together (or `target`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<BackupTarget>>,
    /// The ways backups of this policy can be made.
    pub backup_methods: Vec<BackupMethod>,
    /// KubeBlocks Enterprise's Kopia repositories; always written, default false. dprepo
    /// repositories deduplicate whatever this says.
    #[serde(default)]
    pub use_kopia: bool,
    /// Encryption of backup data (recorded; dprepo encrypts with the repository key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_config: Option<EncryptionConfig>,
    /// `retainLatestBackup` keeps the newest Completed backup past its expiration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_policy: Option<BackupPolicyRetentionPolicy>,
}

/// What to back up: pods chosen by labels, and how to connect to their database.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupTarget {
    /// The target's name; required, and unique, among `targets` (the backup of each target
    /// goes to a directory of this name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The pods to back up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<PodSelector>,
    /// The Secret with the database's user, password, host and port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_credential: Option<ConnectionCredential>,
    /// Kubernetes objects to back up too (accepted, not supported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<KubeResources>,
    /// The service account the backup workload runs as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// The container port of the database; the first container's first port when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port: Option<ContainerPort>,
}

/// Which of the matching pods to back up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum PodSelectionStrategy {
    /// One of them (default).
    #[default]
    Any,
    /// Each of them, into a directory named after the pod.
    All,
}

impl PodSelectionStrategy {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            PodSelectionStrategy::Any => "Any",
            PodSelectionStrategy::All => "All",
        }
    }
}

impl fmt::Display for PodSelectionStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A label selector (`matchLabels`, `matchExpressions` at this level) with a fallback and
/// a strategy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSelector {
    /// The pods' labels.
    #[serde(flatten)]
    pub label_selector: LabelSelector,
    /// Used when no pod matches the selector (strategy `Any` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_label_selector: Option<LabelSelector>,
    /// `Any` (default) or `All`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "Any"))]
    pub strategy: Option<PodSelectionStrategy>,
    /// Back up the pods the parent backup chose (strategy `Any` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_parent_selected_pods: Option<bool>,
}

impl PodSelector {
    /// The strategy, with its default (`Any`) when unset.
    pub fn strategy(&self) -> PodSelectionStrategy {
        self.strategy.unwrap_or_default()
    }
}

/// Where a database's credentials are.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionCredential {
    /// The Secret, in the object's namespace.
    #[schemars(regex(pattern = NAME_PATTERN))]
    pub secret_name: String,
    /// Its key holding the user (default `username`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "username"))]
    pub username_key: Option<String>,
    /// Its key holding the password (default `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "password"))]
    pub password_key: Option<String>,
    /// Its key holding the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    /// Its key holding the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_key: Option<String>,
}

impl ConnectionCredential {
    /// The user key, `username` when unset.
    pub fn username_key(&self) -> &str {
        self.username_key.as_deref().unwrap_or("username")
    }

    /// The password key, `password` when unset.
    pub fn password_key(&self) -> &str {
        self.password_key.as_deref().unwrap_or("password")
    }
}

/// Kubernetes objects to back up.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KubeResources {
    /// The objects' labels; nothing is backed up when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Namespaced resource types to include.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub included: Option<Vec<String>>,
    /// Namespaced resource types to exclude.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excluded: Option<Vec<String>>,
}

/// A named port of a named container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    /// The container.
    pub container_name: String,
    /// The port's name.
    pub port_name: String,
}

/// One way to make a backup: an ActionSet (or volume snapshots) with its settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupMethod {
    /// The method's name, as Backups name it.
    #[schemars(regex(pattern = NAME_PATTERN))]
    pub name: String,
    /// For incremental methods: the full method whose backups they build on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = NAME_PATTERN))]
    pub compatible_method: Option<String>,
    /// Take CSI volume snapshots instead of running an ActionSet (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = false))]
    pub snapshot_volumes: Option<bool>,
    /// The ActionSet with the backup and restore steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_set_name: Option<String>,
    /// The target's volumes to mount into the backup workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_volumes: Option<TargetVolumeInfo>,
    /// Environment of the backup workload; wins over the ActionSet's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,
    /// Resources of the backup container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_settings: Option<RuntimeSettings>,
    /// Overrides the policy's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<BackupTarget>,
    /// Overrides the policy's targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<BackupTarget>>,
}

/// Volumes of the target pod to mount into the backup workload.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetVolumeInfo {
    /// Names of the target's volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<String>>,
    /// Where to mount them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mounts: Option<Vec<VolumeMount>>,
}

/// Settings of the backup container.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RuntimeSettings {
    /// Its resource requests and limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// The observed state of a BackupPolicy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupPolicyStatus {
    /// `Available` or `Unavailable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<AvailabilityPhase>,
    /// Why the phase is what it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl BackupPolicySpec {
    /// The method named `name`.
    pub fn method(&self, name: &str) -> Option<&BackupMethod> {
        self.backup_methods.iter().find(|m| m.name == name)
    }
}
