//! `GarbageCollection` (`dprepo.io/v1alpha1`, cluster-scoped, short name `gc`): dprepo's own
//! kind. Deleting a Backup only forgets its snapshot; the space comes back when `dprepo gc`
//! runs over the repository. One GarbageCollection per BackupRepo says when that runs, and
//! its status keeps the last runs (CONTROLLER.md section 3, dprepo additions 4).
//!
//! The name follows the command it runs (`dprepo gc`) and what users of restic (`prune`)
//! and Kopia (`maintenance`) look for under "garbage collection".

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{open_enum, NAME_PATTERN};

/// The API group of dprepo's own kinds.
pub const GROUP: &str = "dprepo.io";

/// The schedule of a GarbageCollection that names none: daily at 03:00 UTC.
pub const DEFAULT_SCHEDULE: &str = "0 3 * * *";

/// The `maxUnused` of a GarbageCollection that names none, as `dprepo gc --max-unused`.
pub const DEFAULT_MAX_UNUSED_PERCENT: i32 = 20;

/// How many finished runs the status keeps.
pub const HISTORY_LIMIT: usize = 10;

/// A cron expression: five fields, or one of the `@` shorthands Kubernetes CronJobs take.
pub const CRON_PATTERN: &str =
    r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|\S+(\s+\S+){4})$";

/// Condition types a GarbageCollection carries.
pub mod condition {
    /// The last run succeeded (False with the error when it failed).
    pub const SUCCEEDED: &str = "Succeeded";
    /// A run is in progress.
    pub const RUNNING: &str = "Running";
}

/// When and how a repository's garbage is collected.
#[allow(clippy::duplicated_attributes)] // kube's repeated `type_ = ...` in printcolumns
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "dprepo.io",
    version = "v1alpha1",
    kind = "GarbageCollection",
    plural = "garbagecollections",
    shortname = "gc",
    status = "GarbageCollectionStatus",
    category = "kubeblocks",
    category = "dprepo",
    derive = "PartialEq",
    doc = "GarbageCollection runs `dprepo gc` over one BackupRepo's repository on a schedule (and after Backups are deleted), freeing the space of forgotten snapshots, and keeps the last runs in its status.",
    printcolumn(name = "REPO", type_ = "string", json_path = ".spec.backupRepoName"),
    printcolumn(name = "SCHEDULE", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "SUSPEND", type_ = "boolean", json_path = ".spec.suspend"),
    printcolumn(
        name = "LAST-SUCCESS",
        type_ = "date",
        json_path = ".status.lastSuccessfulTime"
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct GarbageCollectionSpec {
    /// The BackupRepo whose repository is collected. Cannot be changed.
    #[schemars(
        regex(pattern = NAME_PATTERN),
        extend("x-kubernetes-validations" = [
            {"rule": "self == oldSelf", "message": "backupRepoName is immutable"}
        ])
    )]
    pub backup_repo_name: String,
    /// When to run, as a cron expression in UTC (default `0 3 * * *`, daily at 03:00).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = CRON_PATTERN),
        extend("default" = "0 3 * * *")
    )]
    pub schedule: Option<String>,
    /// Rewrite packs whose unused share exceeds this percentage (0 to 100, default 20), as
    /// `dprepo gc --max-unused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100), extend("default" = 20))]
    pub max_unused: Option<i32>,
    /// Only report what would be freed; change nothing (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = false))]
    pub dry_run: Option<bool>,
    /// Start no new runs (default false); a running one finishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = false))]
    pub suspend: Option<bool>,
}

impl GarbageCollectionSpec {
    /// The schedule, [`DEFAULT_SCHEDULE`] when unset.
    pub fn schedule(&self) -> &str {
        self.schedule.as_deref().unwrap_or(DEFAULT_SCHEDULE)
    }

    /// The unused share above which packs are rewritten, in percent.
    pub fn max_unused_percent(&self) -> i32 {
        self.max_unused.unwrap_or(DEFAULT_MAX_UNUSED_PERCENT)
    }

    /// Whether runs only report.
    pub fn is_dry_run(&self) -> bool {
        self.dry_run == Some(true)
    }

    /// Whether new runs are held back.
    pub fn is_suspended(&self) -> bool {
        self.suspend == Some(true)
    }
}

open_enum! {
    /// What started a run.
    pub enum GarbageCollectionTrigger {
        /// The schedule.
        Schedule = "Schedule",
        /// Backups were deleted (at most one such run per 10 minutes).
        BackupDeleted = "BackupDeleted",
        /// A user asked for it.
        Manual = "Manual",
    }
}

/// How a finished run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum GarbageCollectionResult {
    /// `dprepo gc` succeeded.
    Succeeded,
    /// It failed; `error` says why.
    Failed,
}

impl GarbageCollectionResult {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            GarbageCollectionResult::Succeeded => "Succeeded",
            GarbageCollectionResult::Failed => "Failed",
        }
    }
}

impl fmt::Display for GarbageCollectionResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A run in progress.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GarbageCollectionCurrentRun {
    /// The Job running `dprepo gc`.
    pub job_name: String,
    /// When the run started.
    pub start_time: Time,
    /// What started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<GarbageCollectionTrigger>,
    /// Whether it only reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
}

/// A finished run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GarbageCollectionRun {
    /// The Job that ran `dprepo gc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// What started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<GarbageCollectionTrigger>,
    /// Whether it only reported (nothing was freed; the figures say what would be).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// When it started.
    pub start_time: Time,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// `Succeeded` or `Failed`.
    pub result: GarbageCollectionResult,
    /// Snapshots found in the repository (their data was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub snapshots_seen: Option<i64>,
    /// Packs deleted whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub packs_deleted: Option<i64>,
    /// Packs rewritten without their unused blobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub packs_rewritten: Option<i64>,
    /// Bytes of storage freed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub bytes_freed: Option<i64>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The observed state of a GarbageCollection.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GarbageCollectionStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions (see [`condition`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// The run in progress, if any (one at a time per repository).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_run: Option<GarbageCollectionCurrentRun>,
    /// When a run was last started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// When a run last succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,
    /// When the schedule next starts a run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    /// The last finished runs, newest first (at most 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 10))]
    pub history: Option<Vec<GarbageCollectionRun>>,
}

impl GarbageCollectionStatus {
    /// Puts `run` first in the history and drops the oldest beyond [`HISTORY_LIMIT`].
    pub fn record(&mut self, run: GarbageCollectionRun) {
        let history = self.history.get_or_insert_with(Vec::new);
        history.insert(0, run);
        history.truncate(HISTORY_LIMIT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(n: i64) -> GarbageCollectionRun {
        GarbageCollectionRun {
            job_name: Some(format!("gc-{n}")),
            trigger: Some(GarbageCollectionTrigger::Schedule),
            dry_run: None,
            start_time: Time(k8s_openapi::jiff::Timestamp::from_second(n).unwrap()),
            completion_time: None,
            result: GarbageCollectionResult::Succeeded,
            snapshots_seen: Some(n),
            packs_deleted: None,
            packs_rewritten: None,
            bytes_freed: None,
            error: None,
        }
    }

    #[test]
    fn history_keeps_the_newest_ten() {
        let mut status = GarbageCollectionStatus::default();
        for n in 0..13 {
            status.record(run(n));
        }
        let history = status.history.unwrap();
        assert_eq!(history.len(), HISTORY_LIMIT);
        assert_eq!(history[0].snapshots_seen, Some(12));
        assert_eq!(history[9].snapshots_seen, Some(3));
    }

    #[test]
    fn defaults_apply_when_unset() {
        let spec: GarbageCollectionSpec =
            serde_json::from_value(serde_json::json!({"backupRepoName": "repo"})).unwrap();
        assert_eq!(spec.schedule(), DEFAULT_SCHEDULE);
        assert_eq!(spec.max_unused_percent(), 20);
        assert!(!spec.is_dry_run());
        assert!(!spec.is_suspended());
    }
}
