//! Seed `BackupSchedule` (`kubeblocks.io/v1alpha1`, namespaced): a cron schedule of
//! backups of a seed BackupPolicy. Translated onto a dataprotection BackupSchedule of the
//! same name ([`crate::reconcile::seed::backupschedule`]).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A backup schedule of the simplified API.
#[allow(clippy::duplicated_attributes)] // kube's repeated `type_ = ...` in printcolumns
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kubeblocks.io",
    version = "v1alpha1",
    kind = "BackupSchedule",
    plural = "backupschedules",
    namespaced,
    status = "BackupScheduleStatus",
    category = "dprepo-seed",
    derive = "PartialEq",
    doc = "BackupSchedule (simplified API) makes backups of a BackupPolicy (simplified API) on a cron schedule (UTC) and keeps the newest successfulJobsHistoryLimit of them.",
    printcolumn(name = "SCHEDULE", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(
        name = "POLICY",
        type_ = "string",
        json_path = ".spec.backupPolicyTemplateRef"
    ),
    printcolumn(name = "STATUS", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupScheduleSpec {
    /// When, as a five-field cron expression in UTC.
    #[schemars(length(min = 1))]
    pub schedule: String,
    /// The seed BackupPolicy (in the schedule's namespace) whose backups are made.
    #[schemars(length(min = 1))]
    pub backup_policy_template_ref: String,
    /// How many of the schedule's successful backups are kept (the oldest beyond are
    /// deleted; `dprepo.io/keep-last`). Unset: the policy's `maxRetentionCount`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub successful_jobs_history_limit: Option<i64>,
}

/// What the controller made of the schedule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupScheduleStatus {
    /// `Available`, `Pending` (the policy is not Available yet) or `Unavailable` (see
    /// `message`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Why it is not Available, naming the field at fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The last time a backup was started (the CronJob's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<String>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
}
