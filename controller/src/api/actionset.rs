//! `ActionSet` (cluster-scoped, short name `as`): the commands that back up and restore one
//! kind of database, written by KubeBlocks addons and run unchanged in Jobs with dprepo's
//! `datasafed` injected (CONTROLLER.md section 2).

use std::fmt;

use k8s_openapi::api::core::v1::{EnvFromSource, EnvVar};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{preserve_unknown_object, AvailabilityPhase};
use super::duration::MetaDuration;

/// What a backup made with an ActionSet contains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum BackupType {
    /// Everything.
    #[default]
    Full,
    /// What changed since the parent backup (full or incremental).
    Incremental,
    /// What changed since the last full backup (refused by KubeBlocks and by dprepo).
    Differential,
    /// A continuous log (WAL, binlog) for point-in-time recovery.
    Continuous,
    /// Part of the data, chosen by parameters.
    Selective,
}

impl BackupType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupType::Full => "Full",
            BackupType::Incremental => "Incremental",
            BackupType::Differential => "Differential",
            BackupType::Continuous => "Continuous",
            BackupType::Selective => "Selective",
        }
    }
}

impl fmt::Display for BackupType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do when an action fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ActionErrorMode {
    /// Go on with the next action.
    Continue,
    /// Fail the backup or restore (default).
    #[default]
    Fail,
}

impl ActionErrorMode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionErrorMode::Continue => "Continue",
            ActionErrorMode::Fail => "Fail",
        }
    }
}

impl fmt::Display for ActionErrorMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to back up and restore one kind of data.
#[allow(clippy::duplicated_attributes)] // kube's repeated `type_ = ...` in printcolumns
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "dataprotection.kubeblocks.io",
    version = "v1alpha1",
    kind = "ActionSet",
    plural = "actionsets",
    shortname = "as",
    status = "ActionSetStatus",
    category = "kubeblocks",
    derive = "PartialEq",
    doc = "ActionSet holds the commands that back up and restore one kind of data: the image and script of each step, their environment, and the parameters they accept.",
    printcolumn(name = "BACKUP-TYPE", type_ = "string", json_path = ".spec.backupType"),
    printcolumn(name = "STATUS", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ActionSetSpec {
    /// `Full` (default), `Incremental`, `Differential`, `Continuous` or `Selective`.
    #[schemars(extend("default" = "Full"))]
    pub backup_type: BackupType,
    /// The parameters backups and restores may pass (`withParameters` lists which).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters_schema: Option<ActionSetParametersSchema>,
    /// Environment of every action's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
    pub env: Option<Vec<EnvVar>>,
    /// Sources of environment variables of every action's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
    pub env_from: Option<Vec<EnvFromSource>>,
    /// The backup steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupActionSpec>,
    /// The restore steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreActionSpec>,
}

/// The parameters an ActionSet accepts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ActionSetParametersSchema {
    /// An OpenAPI v3 object schema; properties of type string, number, integer, or array
    /// of strings. Kept whole.
    #[serde(
        rename = "openAPIV3Schema",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub open_api_v3_schema: Option<serde_json::Value>,
}

/// The steps of a backup.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupActionSpec {
    /// The step that writes the backup (one Job per target pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_data: Option<BackupDataActionSpec>,
    /// Steps run before `backupData`, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_backup: Option<Vec<ActionSpec>>,
    /// Steps run after `backupData`, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_backup: Option<Vec<ActionSpec>>,
    /// A Job run before the backup's files are deleted.
    #[serde(rename = "preDelete", default, skip_serializing_if = "Option::is_none")]
    pub pre_delete: Option<BaseJobActionSpec>,
    /// The parameters (of `parametersSchema`) a backup may pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with_parameters: Option<Vec<String>>,
}

/// The step that writes a backup.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupDataActionSpec {
    /// The Job to run.
    #[serde(flatten)]
    pub job: JobActionSpec,
    /// Whether and how often a sidecar copies the backup's progress into its status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_progress: Option<SyncProgress>,
}

/// Progress reporting of a backup Job.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncProgress {
    /// Whether a sidecar reports progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Seconds between reports (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 60))]
    pub interval_seconds: Option<i32>,
}

/// The steps of a restore.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreActionSpec {
    /// The Job that writes the data into the new volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare_data: Option<JobActionSpec>,
    /// Steps run once the restored cluster is up, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_ready: Option<Vec<ActionSpec>>,
    /// Whether the restore needs a full backup under the one restored (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = true))]
    pub base_backup_required: Option<bool>,
    /// The parameters (of `parametersSchema`) a restore may pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with_parameters: Option<Vec<String>>,
}

/// One step: exactly one of `exec` and `job` is expected (KubeBlocks does not enforce it
/// in the schema either).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ActionSpec {
    /// Run a command in a container of the target pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecActionSpec>,
    /// Run a Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobActionSpec>,
}

/// A command run in a container of the target pod (through `kubectl exec` from a Job).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecActionSpec {
    /// The container; the pod's first when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The command and its arguments.
    #[schemars(length(min = 1))]
    pub command: Vec<String>,
    /// `Continue` or `Fail` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "Fail"))]
    pub on_error: Option<ActionErrorMode>,
    /// How long the command may run (a Go duration, e.g. `5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<MetaDuration>,
}

/// A Job running one image and command.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobActionSpec {
    /// The image; `$(VAR)` references to the container's environment are expanded.
    pub image: String,
    /// The command and its arguments.
    pub command: Vec<String>,
    /// Run on the target pod's node, with the target's volumes (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = false))]
    pub run_on_target_pod_node: Option<bool>,
    /// `Continue` or `Fail` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "Fail"))]
    pub on_error: Option<ActionErrorMode>,
}

/// A Job running one image and command, nothing more (the pre-delete step).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BaseJobActionSpec {
    /// The image.
    pub image: String,
    /// The command and its arguments.
    pub command: Vec<String>,
}

/// The observed state of an ActionSet.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionSetStatus {
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

impl ActionSet {
    /// Whether the ActionSet has a `prepareData` restore step.
    pub fn has_prepare_data_stage(&self) -> bool {
        self.spec
            .restore
            .as_ref()
            .is_some_and(|r| r.prepare_data.is_some())
    }

    /// Whether the ActionSet has `postReady` restore steps.
    pub fn has_post_ready_stage(&self) -> bool {
        self.spec
            .restore
            .as_ref()
            .and_then(|r| r.post_ready.as_ref())
            .is_some_and(|p| !p.is_empty())
    }
}
