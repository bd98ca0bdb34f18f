//! `Restore` (namespaced): restores a Backup into new volumes (`prepareData`) and/or into a
//! running cluster (`postReady`), optionally to a point in time (CONTROLLER.md section 2).

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, PersistentVolumeClaimSpec, ResourceRequirements, Toleration,
    TopologySpreadConstraint, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::backuppolicy::{ConnectionCredential, PodSelector};
use super::common::{open_enum, EmbeddedObjectMeta, ParameterPair};
use super::duration::MetaDuration;

/// Condition types a Restore carries.
pub mod condition {
    /// The Backup's repository is Ready and reachable from the Restore's namespace.
    pub const CHECK_BACKUP_REPO: &str = "CheckBackupRepo";
    /// The Restore's references and settings were checked.
    pub const VALIDATION_PASSED: &str = "ValidationPassed";
    /// The `prepareData` stage ended.
    pub const PREPARE_DATA: &str = "PrepareData";
    /// The `postReady` stage ended.
    pub const POST_READY: &str = "PostReady";
}

/// A restore of a backup.
#[allow(clippy::duplicated_attributes)] // kube's repeated `type_ = ...` in printcolumns
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "dataprotection.kubeblocks.io",
    version = "v1alpha1",
    kind = "Restore",
    plural = "restores",
    namespaced,
    status = "RestoreStatus",
    category = "kubeblocks",
    derive = "PartialEq",
    doc = "Restore restores a Backup (and for incremental or continuous backups, the chain under it) into new volumes and/or a running cluster, optionally to a point in time.",
    printcolumn(name = "BACKUP", type_ = "string", json_path = ".spec.backup.name"),
    printcolumn(
        name = "RESTORE-TIME",
        type_ = "string",
        json_path = ".spec.restoreTime",
        description = "Point in time for restoring"
    ),
    printcolumn(
        name = "STATUS",
        type_ = "string",
        json_path = ".status.phase",
        description = "Restore Status."
    ),
    printcolumn(name = "DURATION", type_ = "string", json_path = ".status.duration"),
    printcolumn(
        name = "CREATION-TIME",
        type_ = "string",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "COMPLETION-TIME",
        type_ = "string",
        json_path = ".status.completionTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(oldSelf.parameters) == has(self.parameters)",
    "message": "forbidden to update spec.parameters",
}]))]
pub struct RestoreSpec {
    /// The Backup to restore. Cannot be changed.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self == oldSelf", "message": "forbidden to update spec.backupName"}
    ]))]
    pub backup: BackupRef,
    /// The point in time to restore to, `YYYY-MM-DDTHH:MM:SSZ`. Cannot be changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$"),
        extend("x-kubernetes-validations" = [
            {"rule": "self == oldSelf", "message": "forbidden to update spec.restoreTime"}
        ])
    )]
    pub restore_time: Option<String>,
    /// Kubernetes objects to restore (accepted, not supported). Cannot be changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self == oldSelf", "message": "forbidden to update spec.resources"}
    ]))]
    pub resources: Option<RestoreKubeResources>,
    /// The volumes to restore into and where the restore pods run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare_data_config: Option<PrepareDataConfig>,
    /// The service account of the restore pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// The steps run in the running cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "has(self.jobAction) || has(self.execAction)",
        "message": "at least one exists for jobAction and execAction.",
    }]))]
    pub ready_config: Option<ReadyConfig>,
    /// Environment of the restore containers; wins over the method's and the ActionSet's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
    pub env: Option<Vec<EnvVar>>,
    /// Resources of the restore containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_resources: Option<ResourceRequirements>,
    /// Retries of a restore Job before the Restore fails (0 to 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub backoff_limit: Option<i32>,
    /// Parameters of the ActionSet's restore steps. Cannot be changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        schema_with = "super::common::parameter_list",
        extend("x-kubernetes-validations" = [
            {"rule": "self == oldSelf", "message": "forbidden to update spec.parameters"}
        ])
    )]
    pub parameters: Option<Vec<ParameterPair>>,
}

/// The Backup to restore.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRef {
    /// Its name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Of a backup with several targets: the one to restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_target_name: Option<String>,
}

/// Kubernetes objects to restore.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RestoreKubeResources {
    /// The objects to restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub included: Option<Vec<IncludeResource>>,
}

/// Objects of one resource type to restore.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncludeResource {
    /// The resource type (`deployments.apps`).
    pub group_resource: String,
    /// The objects' labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
}

/// How PersistentVolumeClaims are restored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum VolumeClaimRestorePolicy {
    /// All at once (default).
    #[default]
    Parallel,
    /// One after the other.
    Serial,
}

impl VolumeClaimRestorePolicy {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeClaimRestorePolicy::Parallel => "Parallel",
            VolumeClaimRestorePolicy::Serial => "Serial",
        }
    }
}

impl fmt::Display for VolumeClaimRestorePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

open_enum! {
    /// How the data of a target whose pods were all backed up (strategy `All`) is spread
    /// over the restored pods (no `enum` in KubeBlocks' CRD).
    pub enum DataRestorePolicy {
        /// Each restored pod gets the data of the original pod of the same position
        /// (default).
        OneToOne = "OneToOne",
        /// Every restored pod gets the data of one original pod (`sourceOfOneToMany`).
        OneToMany = "OneToMany",
    }
}

/// The `prepareData` stage: volumes to restore into and the restore pods.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrepareDataConfig {
    /// For a target backed up with strategy `All`: how its data is spread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_policy_for_all_pod_selection: Option<RequiredPolicyForAllPodSelection>,
    /// Restore through a volume populator (accepted, not supported). Cannot be changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "self.volumeSource != '' || self.mountPath !=''",
            "message": "at least one exists for volumeSource and mountPath.",
        },
        {
            "rule": "self == oldSelf",
            "message": "forbidden to update spec.prepareDataConfig.dataSourceRef",
        },
    ]))]
    pub data_source_ref: Option<VolumeConfig>,
    /// Claims to restore into (created when missing). Cannot be changed.
    #[serde(
        rename = "volumeClaims",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self == oldSelf",
        "message": "forbidden to update spec.prepareDataConfig.volumeClaims",
    }]))]
    pub volume_claims: Option<Vec<RestoreVolumeClaim>>,
    /// Claims to restore into, made from templates per replica. Cannot be changed.
    #[serde(
        rename = "volumeClaimsTemplate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self == oldSelf",
        "message": "forbidden to update spec.prepareDataConfig.volumeClaimsTemplate",
    }]))]
    pub volume_claims_template: Option<RestoreVolumeClaimsTemplate>,
    /// `Parallel` (default) or `Serial`.
    #[schemars(extend("default" = "Parallel"))]
    pub volume_claim_restore_policy: VolumeClaimRestorePolicy,
    /// Where the restore pods run. Cannot be changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self == oldSelf",
        "message": "forbidden to update spec.prepareDataConfig.schedulingSpec",
    }]))]
    pub scheduling_spec: Option<SchedulingSpec>,
}

/// The `postReady` stage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadyConfig {
    /// Run the ActionSet's job steps on a pod's node, with its volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_action: Option<JobAction>,
    /// Run the ActionSet's exec steps in the selected pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_action: Option<ExecAction>,
    /// The database's credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_credential: Option<ConnectionCredential>,
    /// A readiness check before the steps (accepted, not supported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<ReadinessProbe>,
}

/// Where `postReady` job steps run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobAction {
    /// For a target backed up with strategy `All`: how its data is spread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_policy_for_all_pod_selection: Option<RequiredPolicyForAllPodSelection>,
    /// The pod whose node, volumes and environment the Job uses.
    pub target: JobActionTarget,
}

/// How the data of a target backed up with strategy `All` is spread.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequiredPolicyForAllPodSelection {
    /// `OneToOne` (default) or `OneToMany`.
    #[schemars(extend("default" = "OneToOne"))]
    pub data_restore_policy: DataRestorePolicy,
    /// For `OneToMany`: the original pod whose data every pod gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_of_one_to_many: Option<SourceOfOneToMany>,
}

/// The original pod whose data is restored everywhere.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceOfOneToMany {
    /// Its name.
    pub target_pod_name: String,
}

/// Where `postReady` exec steps run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ExecAction {
    /// The pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<ExecActionTarget>,
}

/// The pods `postReady` exec steps run in.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecActionTarget {
    /// Their labels.
    pub pod_selector: LabelSelector,
}

/// The pod whose node, volumes and environment a `postReady` Job uses.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobActionTarget {
    /// Chooses the pod.
    pub pod_selector: PodSelector,
    /// Which of its volumes to mount, where.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mounts: Option<Vec<VolumeMount>>,
}

/// A restored volume's source and mount path.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeConfig {
    /// The backed-up volume (of `targetVolumes`) restored into it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_source: Option<String>,
    /// Where the restore container mounts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_path: Option<String>,
}

/// A PersistentVolumeClaim to restore into.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.volumeSource != '' || self.mountPath !=''",
    "message": "at least one exists for volumeSource and mountPath.",
}]))]
pub struct RestoreVolumeClaim {
    /// The claim's metadata.
    pub metadata: EmbeddedObjectMeta,
    /// The claim's spec.
    pub volume_claim_spec: PersistentVolumeClaimSpec,
    /// Its source and mount path.
    #[serde(flatten)]
    pub volume_config: VolumeConfig,
}

/// Claims made from templates, `replicas` of each, named `<template>-<index>`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreVolumeClaimsTemplate {
    /// The templates.
    pub templates: Vec<RestoreVolumeClaim>,
    /// How many claims of each (at least 1).
    #[schemars(range(min = 1))]
    pub replicas: i32,
    /// The first index (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub starting_index: Option<i32>,
}

/// Where restore pods run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingSpec {
    /// Tolerations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Node labels the node must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// The node to run on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Affinity rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Spread over topology domains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    /// The scheduler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_name: Option<String>,
}

/// A readiness check run before `postReady` steps.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessProbe {
    /// Seconds before the first check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub initial_delay_seconds: Option<i64>,
    /// Seconds a check may take (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1), extend("default" = 30))]
    pub timeout_seconds: Option<i64>,
    /// Seconds between checks (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1), extend("default" = 5))]
    pub period_seconds: Option<i64>,
    /// The check.
    pub exec: ReadinessProbeExecAction,
}

/// The command of a readiness check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReadinessProbeExecAction {
    /// The image.
    pub image: String,
    /// The command.
    pub command: Vec<String>,
}

/// The phase of a Restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RestorePhase {
    /// Its Jobs run.
    Running,
    /// Done.
    Completed,
    /// It failed; the conditions say why.
    Failed,
    /// It serves as a volume populator's data source.
    AsDataSource,
}

impl RestorePhase {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RestorePhase::Running => "Running",
            RestorePhase::Completed => "Completed",
            RestorePhase::Failed => "Failed",
            RestorePhase::AsDataSource => "AsDataSource",
        }
    }
}

impl fmt::Display for RestorePhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of one restore action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RestoreActionStatus {
    /// It runs.
    Processing,
    /// Done.
    Completed,
    /// It failed.
    Failed,
}

impl RestoreActionStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RestoreActionStatus::Processing => "Processing",
            RestoreActionStatus::Completed => "Completed",
            RestoreActionStatus::Failed => "Failed",
        }
    }
}

impl fmt::Display for RestoreActionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The observed state of a Restore.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    /// The phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RestorePhase>,
    /// When the restore started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timestamp: Option<Time>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_timestamp: Option<Time>,
    /// How long it took, as a Go duration (`"1m30s"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<MetaDuration>,
    /// The actions of each stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<RestoreStatusActions>,
    /// Conditions (see [`condition`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
}

/// The actions of each restore stage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatusActions {
    /// Actions of `prepareData`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare_data: Option<Vec<RestoreStatusAction>>,
    /// Actions of `postReady`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_ready: Option<Vec<RestoreStatusAction>>,
}

/// One restore action (a Job).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatusAction {
    /// The action's name.
    pub name: String,
    /// The backup it restores.
    pub backup_name: String,
    /// The object it runs as (`Job/<namespace>/<name>`).
    pub object_key: String,
    /// What happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `Processing`, `Completed` or `Failed`.
    pub status: RestoreActionStatus,
    /// When it started (KubeBlocks writes `null` for "not yet").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When it ended (KubeBlocks writes `null` for "not yet").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
}

impl Restore {
    /// The phase, if any.
    pub fn phase(&self) -> Option<RestorePhase> {
        self.status.as_ref().and_then(|s| s.phase)
    }
}
