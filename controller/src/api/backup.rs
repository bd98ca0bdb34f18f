//! `Backup` (namespaced): one backup made with a BackupPolicy's method; its status records
//! where the data went, what was backed up and how it went (CONTROLLER.md section 2).

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::backuppolicy::{BackupMethod, BackupTarget};
use super::common::{open_enum, EncryptionConfig, ParameterPair, NAME_PATTERN};
use super::duration::MetaDuration;
use super::retention::RetentionPeriod;

/// The only backup format version KubeBlocks writes (`status.formatVersion`).
pub const FORMAT_VERSION: &str = "0.1.0";

/// What happens to the backup's data when the Backup is deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum BackupDeletionPolicy {
    /// The data is deleted with the Backup (default).
    #[default]
    Delete,
    /// The Backup cannot be deleted while this is set (the data is kept).
    Retain,
}

impl BackupDeletionPolicy {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupDeletionPolicy::Delete => "Delete",
            BackupDeletionPolicy::Retain => "Retain",
        }
    }
}

impl fmt::Display for BackupDeletionPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One backup.
#[allow(clippy::duplicated_attributes)] // kube's repeated `type_ = ...` in printcolumns
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "dataprotection.kubeblocks.io",
    version = "v1alpha1",
    kind = "Backup",
    plural = "backups",
    namespaced,
    status = "BackupStatus",
    category = "kubeblocks",
    derive = "PartialEq",
    doc = "Backup is one backup made with a method of a BackupPolicy. Its status records where the data is stored, what was backed up, and how the backup went.",
    printcolumn(
        name = "POLICY",
        type_ = "string",
        json_path = ".spec.backupPolicyName"
    ),
    printcolumn(name = "METHOD", type_ = "string", json_path = ".spec.backupMethod"),
    printcolumn(name = "REPO", type_ = "string", json_path = ".status.backupRepoName"),
    printcolumn(name = "STATUS", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "TOTAL-SIZE", type_ = "string", json_path = ".status.totalSize"),
    printcolumn(name = "DURATION", type_ = "string", json_path = ".status.duration"),
    printcolumn(
        name = "DELETION-POLICY",
        type_ = "string",
        json_path = ".spec.deletionPolicy"
    ),
    printcolumn(
        name = "CREATION-TIME",
        type_ = "string",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "COMPLETION-TIME",
        type_ = "string",
        json_path = ".status.completionTimestamp"
    ),
    printcolumn(
        name = "EXPIRATION-TIME",
        type_ = "string",
        json_path = ".status.expiration"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(oldSelf.parameters) == has(self.parameters)",
    "message": "forbidden to update spec.parameters",
}]))]
pub struct BackupSpec {
    /// The BackupPolicy to use. Cannot be changed.
    #[schemars(
        regex(pattern = NAME_PATTERN),
        extend("x-kubernetes-validations" = [
            {"rule": "self == oldSelf", "message": "forbidden to update spec.backupPolicyName"}
        ])
    )]
    pub backup_policy_name: String,
    /// The policy's method to use. Cannot be changed.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self == oldSelf", "message": "forbidden to update spec.backupMethod"}
    ]))]
    pub backup_method: String,
    /// `Delete` (default) or `Retain`.
    #[schemars(extend("default" = "Delete"))]
    pub deletion_policy: BackupDeletionPolicy,
    /// How long the backup is kept (`"7d"`, `"1y6mo"`; unset or empty: forever).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_period: Option<RetentionPeriod>,
    /// For incremental backups: the backup this one builds on. Cannot be changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self == oldSelf", "message": "forbidden to update spec.parentBackupName"}
    ]))]
    pub parent_backup_name: Option<String>,
    /// Parameters of the method's ActionSet (each becomes an environment variable of the
    /// backup Job). Cannot be changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        schema_with = "super::common::parameter_list",
        extend("x-kubernetes-validations" = [
            {"rule": "self == oldSelf", "message": "forbidden to update spec.parameters"}
        ])
    )]
    pub parameters: Option<Vec<ParameterPair>>,
}

/// The phase of a Backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum BackupPhase {
    /// Created, not yet looked at.
    New,
    /// An old name of `Running`, no longer written.
    InProgress,
    /// Its Jobs run.
    Running,
    /// Done; the data is stored.
    Completed,
    /// It failed; `failureReason` says why.
    Failed,
    /// Its data is being deleted.
    Deleting,
}

impl BackupPhase {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupPhase::New => "New",
            BackupPhase::InProgress => "InProgress",
            BackupPhase::Running => "Running",
            BackupPhase::Completed => "Completed",
            BackupPhase::Failed => "Failed",
            BackupPhase::Deleting => "Deleting",
        }
    }
}

impl fmt::Display for BackupPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The observed state of a Backup.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// The backup format version ([`FORMAT_VERSION`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format_version: Option<String>,
    /// The phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupPhase>,
    /// When the backup may be collected; never when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<Time>,
    /// When the backup started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timestamp: Option<Time>,
    /// When the backup ended (also when it failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_timestamp: Option<Time>,
    /// How long it took, as a Go duration (`"1m30s"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<MetaDuration>,
    /// The size of the backed-up data (`"1Gi"`, or bytes without a unit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_size: Option<String>,
    /// Why the backup failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// What blocks deleting the backup or its data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_failure_reason: Option<String>,
    /// The BackupRepo holding the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_repo_name: Option<String>,
    /// The backup's directory in the repository (absolute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// KubeBlocks Enterprise's Kopia repository path; never set by dprepo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kopia_repo_path: Option<String>,
    /// The PersistentVolumeClaim the data was written to (Mount access).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim_name: Option<String>,
    /// The time range the backed-up data covers (for point-in-time recovery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_range: Option<BackupTimeRange>,
    /// The target backed up, with the pods chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<BackupStatusTarget>,
    /// The targets backed up, with the pods chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<BackupStatusTarget>>,
    /// A copy of the method used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_method: Option<BackupMethod>,
    /// A copy of the policy's encryption settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_config: Option<EncryptionConfig>,
    /// Each action's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<ActionStatus>>,
    /// The volume snapshots taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshots: Option<Vec<VolumeSnapshotStatus>>,
    /// The parent backup (incrementals); deleting it deletes this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_backup_name: Option<String>,
    /// The full backup at the base of the chain; deleting it deletes this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_backup_name: Option<String>,
    /// Extra facts the backup script reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extras: Option<Vec<BTreeMap<String, String>>>,
}

/// The time range of backed-up data.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupTimeRange {
    /// The zone the times are shown in, as an offset from `-12:59` to `+13:00`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(\+|\-)(0[0-9]|1[0-3]):([0-5][0-9])$"))]
    pub time_zone: Option<String>,
    /// The start (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Time>,
    /// The end (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<Time>,
}

/// A target as backed up: the policy's target and the pods chosen.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatusTarget {
    /// The target.
    #[serde(flatten)]
    pub target: BackupTarget,
    /// The pods chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected_target_pods: Option<Vec<String>>,
}

open_enum! {
    /// The phase of one action of a Backup (no `enum` in KubeBlocks' CRD).
    pub enum ActionPhase {
        /// Not started.
        New = "New",
        /// Its workload runs.
        Running = "Running",
        /// Done.
        Completed = "Completed",
        /// Failed.
        Failed = "Failed",
    }
}

open_enum! {
    /// The workload of one action of a Backup (no `enum` in KubeBlocks' CRD).
    pub enum ActionType {
        /// A Job.
        Job = "Job",
        /// A StatefulSet (continuous backups).
        StatefulSet = "StatefulSet",
        /// None.
        None = "",
    }
}

/// The state of one action of a Backup.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionStatus {
    /// The action's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The pod it backs up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_pod_name: Option<String>,
    /// `New`, `Running`, `Completed` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ActionPhase>,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timestamp: Option<Time>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_timestamp: Option<Time>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// `Job` or `StatefulSet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_type: Option<ActionType>,
    /// Available replicas of a StatefulSet action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_replicas: Option<i32>,
    /// Its workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_ref: Option<ObjectReference>,
    /// The size of what it backed up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_size: Option<String>,
    /// The time range of what it backed up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_range: Option<BackupTimeRange>,
    /// The volume snapshots it took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshots: Option<Vec<VolumeSnapshotStatus>>,
}

/// One volume snapshot of a Backup.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotStatus {
    /// The VolumeSnapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its VolumeSnapshotContent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_name: Option<String>,
    /// The volume snapshotted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_name: Option<String>,
    /// Its size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// The target it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_name: Option<String>,
}

impl Backup {
    /// The start of the backed-up data: `timeRange.start`, else `startTimestamp`.
    pub fn start_time(&self) -> Option<&Time> {
        let s = self.status.as_ref()?;
        s.time_range
            .as_ref()
            .and_then(|r| r.start.as_ref())
            .or(s.start_timestamp.as_ref())
    }

    /// The end of the backed-up data: `timeRange.end`, else `completionTimestamp`.
    pub fn end_time(&self) -> Option<&Time> {
        let s = self.status.as_ref()?;
        s.time_range
            .as_ref()
            .and_then(|r| r.end.as_ref())
            .or(s.completion_timestamp.as_ref())
    }

    /// The phase, if any.
    pub fn phase(&self) -> Option<BackupPhase> {
        self.status.as_ref().and_then(|s| s.phase)
    }
}
