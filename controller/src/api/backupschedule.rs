//! `BackupSchedule` (namespaced, short name `bs`): cron schedules (UTC) that create Backups
//! of a BackupPolicy's methods, one CronJob each (CONTROLLER.md section 5).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{open_enum, ParameterPair, NAME_PATTERN};
use super::retention::RetentionPeriod;

/// Schedules of backups.
#[allow(clippy::duplicated_attributes)] // kube's repeated `type_ = ...` in printcolumns
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "dataprotection.kubeblocks.io",
    version = "v1alpha1",
    kind = "BackupSchedule",
    plural = "backupschedules",
    shortname = "bs",
    namespaced,
    status = "BackupScheduleStatus",
    category = "kubeblocks",
    derive = "PartialEq",
    doc = "BackupSchedule creates Backups of a BackupPolicy's methods on cron schedules (UTC), each kept for its retention period.",
    printcolumn(name = "STATUS", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BackupScheduleSpec {
    /// The BackupPolicy whose methods the schedules name.
    #[schemars(regex(pattern = NAME_PATTERN))]
    pub backup_policy_name: String,
    /// Minutes after a missed time within which a backup still starts (0 to 1440).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1440))]
    pub starting_deadline_minutes: Option<i64>,
    /// The schedules (at least one).
    #[schemars(length(min = 1))]
    pub schedules: Vec<SchedulePolicy>,
}

/// One schedule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulePolicy {
    /// Whether backups are made. **Unset means disabled**, as in KubeBlocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The schedule's name, unique in the BackupSchedule; the method's name when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The BackupPolicy's method to use.
    pub backup_method: String,
    /// When, as a cron expression in UTC.
    pub cron_expression: String,
    /// How long each backup is kept (default `7d`; see [`RetentionPeriod`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "7d"))]
    pub retention_period: Option<RetentionPeriod>,
    /// Parameters handed to each backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::common::parameter_list")]
    pub parameters: Option<Vec<ParameterPair>>,
}

impl SchedulePolicy {
    /// The schedule's name: `name`, or the method's name when unset or empty.
    pub fn schedule_name(&self) -> &str {
        match self.name.as_deref() {
            Some(n) if !n.is_empty() => n,
            _ => &self.backup_method,
        }
    }

    /// Whether backups are made (unset means no).
    pub fn is_enabled(&self) -> bool {
        self.enabled == Some(true)
    }
}

open_enum! {
    /// The phase of a BackupSchedule (no `enum` in KubeBlocks' CRD).
    pub enum BackupSchedulePhase {
        /// Every schedule has its CronJob.
        Available = "Available",
        /// A schedule could not be set up; `failureReason` says why.
        Failed = "Failed",
    }
}

open_enum! {
    /// The phase of one schedule (no `enum` in KubeBlocks' CRD).
    pub enum SchedulePhase {
        /// Its CronJob exists.
        Running = "Running",
        /// It could not be set up.
        Failed = "Failed",
    }
}

/// The observed state of a BackupSchedule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupScheduleStatus {
    /// `Available` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupSchedulePhase>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Why the phase is `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// Each schedule's state, by schedule name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedules: Option<BTreeMap<String, ScheduleStatus>>,
}

/// The state of one schedule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleStatus {
    /// `Running` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SchedulePhase>,
    /// Why the phase is `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// When a backup was last created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// When a backup last completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,
}
