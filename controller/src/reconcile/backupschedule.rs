//! BackupSchedule: each enabled schedule becomes a CronJob whose pod creates a Backup
//! (Continuous schedules: one long-lived Backup), as KubeBlocks' BackupSchedule
//! controller and `Scheduler` do (CONTROLLER.md section 5).
//!
//! One reconcile:
//! 1. being deleted: the CronJobs labelled with the schedule lose their finalizer and are
//!    deleted; then the schedule's finalizer goes;
//! 2. the finalizer and the `backup-policy` label are set; the policy must exist, the
//!    schedule names must be unique and every method must be the policy's (else the whole
//!    schedule is `Failed`, with the event `HandleBackupScheduleFailed`); the worker
//!    service account is ensured in the namespace;
//! 3. each schedule: a Continuous method's Backup is created or updated as KubeBlocks
//!    does; any other method's CronJob is created or brought up to date when enabled, and
//!    deleted when not (an absent `enabled` means disabled); CronJobs of the schedule
//!    that no enabled schedule names any more are deleted too;
//! 4. the status: phase `Available` or `Failed` (with `failureReason`), and per enabled
//!    schedule `Running`/`Failed`, `lastScheduleTime` (the CronJob's, else the creation of
//!    the newest Backup it made) and `lastSuccessfulTime` (the completion of the newest
//!    Completed one), both of which KubeBlocks leaves empty.
//!
//! Not done: KubeBlocks' `reconfigureRef` annotation (OpsRequests on KubeBlocks Clusters
//! when a Continuous schedule is switched), which needs KubeBlocks' Cluster objects.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::json;

use super::garbagecollection::parse_schedule;
use super::worker::ensure_worker_service_account;
use super::{add_finalizer, delete_background, patch_object, remove_finalizer, truncate};
use crate::api::actionset::BackupType;
use crate::api::backup::{Backup, BackupPhase, BackupSpec};
use crate::api::backupschedule::{
    BackupSchedule, BackupSchedulePhase, BackupScheduleStatus, SchedulePhase, SchedulePolicy,
    ScheduleStatus,
};
use crate::api::labels::{label, FINALIZER};
use crate::api::{ActionSet, BackupPolicy};
use crate::builder::schedule::{
    backup_name_prefix, continuous_backup_name, cron_job, cron_job_name, first_target_match_labels,
    is_scheduled_name, json_subset, CronJobInputs,
};
use crate::context::Context;
use crate::error::{Error, KubeResultExt, Result};

/// The event of a schedule that could not be set up (KubeBlocks').
pub const EVENT_FAILED: &str = "HandleBackupScheduleFailed";

/// KubeBlocks' annotation that wakes a Backup's reconcile (set on a Continuous backup to
/// the schedule's resourceVersion).
pub const RECONCILE_ANNOTATION: &str = "kubeblocks.io/reconcile";

/// How often a schedule is looked at without a change (its CronJobs and Backups wake it
/// sooner).
pub const RESYNC: Duration = Duration::from_secs(300);

/// The longest `failureReason` written.
pub const MAX_REASON: usize = 4096;

/// What became of one schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum ScheduleOutcome {
    /// Its CronJob exists (as stored).
    Cron(Box<CronJob>),
    /// Its Continuous Backup exists or was just created (`None`: created now).
    Continuous(Option<Box<Backup>>),
    /// Disabled: nothing runs.
    Disabled,
    /// It could not be set up.
    Failed(String),
}

/// Checks the schedules against `policy` (KubeBlocks' `Scheduler.validate`): unique
/// schedule names, methods of the policy, cron expressions Kubernetes accepts.
///
/// # Errors
/// The first problem, naming the field.
pub fn validate(schedule: &BackupSchedule, policy: &BackupPolicy) -> Result<()> {
    let mut seen = BTreeSet::new();
    for (i, sp) in schedule.spec.schedules.iter().enumerate() {
        let name = sp.schedule_name();
        if !seen.insert(name) {
            return Err(Error::invalid(
                format!("spec.schedules[{i}].name"),
                format!("schedule name {name} is duplicated"),
            ));
        }
        if policy.spec.method(&sp.backup_method).is_none() {
            return Err(Error::invalid(
                format!("spec.schedules[{i}].backupMethod"),
                format!(
                    "backup method {} is not in backup policy {}/{}",
                    sp.backup_method,
                    policy.metadata.namespace.as_deref().unwrap_or(""),
                    policy.metadata.name.as_deref().unwrap_or("")
                ),
            ));
        }
        if let Err(e) = parse_schedule(&sp.cron_expression) {
            return Err(Error::invalid(
                format!("spec.schedules[{i}].cronExpression"),
                e,
            ));
        }
    }
    Ok(())
}

/// The newest creation time and the newest completion time of the Completed ones, of
/// the Backups `sp` made (by name prefix and method) among `backups`.
pub fn backup_times(
    prefix: &str,
    method: &str,
    backups: &[Backup],
) -> (Option<Time>, Option<Time>) {
    let mine = backups
        .iter()
        .filter(|b| b.spec.backup_method == method)
        .filter(|b| is_scheduled_name(prefix, b.metadata.name.as_deref().unwrap_or("")));
    let mut created: Option<Time> = None;
    let mut completed: Option<Time> = None;
    for b in mine {
        if let Some(t) = &b.metadata.creation_timestamp {
            if created.as_ref().is_none_or(|c| c.0 < t.0) {
                created = Some(t.clone());
            }
        }
        if b.phase() == Some(BackupPhase::Completed) {
            if let Some(t) = b
                .status
                .as_ref()
                .and_then(|s| s.completion_timestamp.as_ref())
            {
                if completed.as_ref().is_none_or(|c| c.0 < t.0) {
                    completed = Some(t.clone());
                }
            }
        }
    }
    (created, completed)
}

/// The status the outcomes give (the times from the CronJobs and `backups`).
pub fn status_of(
    schedule: &BackupSchedule,
    policy: Option<&BackupPolicy>,
    outcomes: &[(SchedulePolicy, ScheduleOutcome)],
    backups: &[Backup],
) -> BackupScheduleStatus {
    let mut schedules = BTreeMap::new();
    let mut failure: Option<String> = None;
    for (sp, outcome) in outcomes {
        let name = sp.schedule_name().to_string();
        let entry = match outcome {
            ScheduleOutcome::Disabled => continue,
            ScheduleOutcome::Failed(reason) => {
                if failure.is_none() {
                    failure = Some(format!("schedule {name}: {reason}"));
                }
                ScheduleStatus {
                    phase: Some(SchedulePhase::Failed),
                    failure_reason: Some(truncate(reason, MAX_REASON)),
                    ..Default::default()
                }
            }
            ScheduleOutcome::Cron(cj) => {
                let (created, completed) = match policy {
                    Some(p) => backup_times(
                        &backup_name_prefix(schedule, p, sp),
                        &sp.backup_method,
                        backups,
                    ),
                    None => (None, None),
                };
                let cron_last = cj
                    .status
                    .as_ref()
                    .and_then(|s| s.last_schedule_time.clone());
                ScheduleStatus {
                    phase: Some(SchedulePhase::Running),
                    failure_reason: None,
                    last_schedule_time: cron_last.or(created),
                    last_successful_time: completed,
                }
            }
            ScheduleOutcome::Continuous(backup) => ScheduleStatus {
                phase: Some(SchedulePhase::Running),
                failure_reason: None,
                last_schedule_time: backup
                    .as_ref()
                    .and_then(|b| b.metadata.creation_timestamp.clone()),
                last_successful_time: backup.as_ref().and_then(|b| b.end_time().cloned()),
            },
        };
        schedules.insert(name, entry);
    }
    BackupScheduleStatus {
        phase: Some(if failure.is_some() {
            BackupSchedulePhase::Failed
        } else {
            BackupSchedulePhase::Available
        }),
        observed_generation: schedule.metadata.generation,
        failure_reason: failure.map(|f| truncate(&f, MAX_REASON)),
        schedules: Some(schedules),
    }
}

/// A status for a schedule that failed as a whole (no policy, invalid spec).
pub fn failed_status(schedule: &BackupSchedule, reason: &str) -> BackupScheduleStatus {
    BackupScheduleStatus {
        phase: Some(BackupSchedulePhase::Failed),
        observed_generation: schedule.metadata.generation,
        failure_reason: Some(truncate(reason, MAX_REASON)),
        schedules: schedule.status.as_ref().and_then(|s| s.schedules.clone()),
    }
}

/// The backup type of `method` of `policy`: `Full` for volume snapshots, else its
/// ActionSet's; `None` when the method names no ActionSet.
async fn method_type(
    ctx: &Context,
    policy: &BackupPolicy,
    method: &str,
) -> Result<Option<BackupType>> {
    let Some(m) = policy.spec.method(method) else {
        return Ok(None);
    };
    if m.snapshot_volumes == Some(true) {
        return Ok(Some(BackupType::Full));
    }
    let Some(name) = m.action_set_name.as_deref().filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    let api: Api<ActionSet> = Api::all(ctx.client.clone());
    match api
        .get_opt(name)
        .await
        .during(|| format!("get ActionSet {name}"))?
    {
        Some(a) => Ok(Some(a.spec.backup_type)),
        None => Err(Error::Missing {
            kind: "ActionSet".into(),
            name: name.into(),
        }),
    }
}

/// Creates the CronJob, or replaces the stored one when it differs from `desired` in a
/// field we set.
async fn ensure_cron_job(api: &Api<CronJob>, desired: CronJob) -> Result<CronJob> {
    let name = desired.metadata.name.clone().unwrap_or_default();
    let Some(existing) = api
        .get_opt(&name)
        .await
        .during(|| format!("get CronJob {name}"))?
    else {
        return api
            .create(&PostParams::default(), &desired)
            .await
            .during(|| format!("create CronJob {name}"));
    };
    let want_spec = serde_json::to_value(&desired.spec).unwrap_or_default();
    let have_spec = serde_json::to_value(&existing.spec).unwrap_or_default();
    let want_labels = serde_json::to_value(&desired.metadata.labels).unwrap_or_default();
    let have_labels = serde_json::to_value(&existing.metadata.labels).unwrap_or_default();
    if json_subset(&want_spec, &have_spec) && want_labels == have_labels {
        return Ok(existing);
    }
    let mut updated = existing.clone();
    updated.spec = desired.spec;
    updated.metadata.labels = desired.metadata.labels;
    updated.status = None;
    api.replace(&name, &PostParams::default(), &updated)
        .await
        .during(|| format!("update CronJob {name}"))
}

/// Removes our finalizer from a CronJob and deletes it.
async fn delete_cron_job(api: &Api<CronJob>, cj: &CronJob) -> Result<()> {
    let name = cj.metadata.name.clone().unwrap_or_default();
    remove_finalizer(api, cj, FINALIZER).await?;
    delete_background(api, &name).await
}

/// KubeBlocks' `reconcileForContinuous`: the schedule's Continuous Backup is created
/// (when enabled), set Running again when it had stopped, or updated.
async fn ensure_continuous(
    ctx: &Context,
    schedule: &BackupSchedule,
    policy: &BackupPolicy,
    sp: &SchedulePolicy,
) -> Result<ScheduleOutcome> {
    let ns = schedule.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Backup> = Api::namespaced(ctx.client.clone(), &ns);
    let name = continuous_backup_name(schedule, &sp.backup_method);
    let mut labels = first_target_match_labels(policy, &sp.backup_method);
    labels.insert(label::MANAGED_BY.into(), label::MANAGED_BY_VALUE.into());
    labels.insert(
        label::BACKUP_SCHEDULE.into(),
        schedule.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(label::BACKUP_TYPE.into(), "Continuous".into());
    labels.insert(label::AUTO_BACKUP.into(), "true".into());
    let existing = api
        .get_opt(&name)
        .await
        .during(|| format!("get Backup {ns}/{name}"))?;
    let Some(existing) = existing else {
        if !sp.is_enabled() {
            return Ok(ScheduleOutcome::Disabled);
        }
        let mut backup = Backup::new(
            &name,
            BackupSpec {
                backup_policy_name: schedule.spec.backup_policy_name.clone(),
                backup_method: sp.backup_method.clone(),
                deletion_policy: Default::default(),
                retention_period: sp.retention_period.clone(),
                parent_backup_name: None,
                parameters: None,
            },
        );
        backup.metadata.namespace = Some(ns.clone());
        backup.metadata.labels = Some(labels);
        match api.create(&PostParams::default(), &backup).await {
            Ok(b) => return Ok(ScheduleOutcome::Continuous(Some(Box::new(b)))),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                return Ok(ScheduleOutcome::Continuous(None))
            }
            Err(e) => return Err(Error::kube(format!("create Backup {ns}/{name}"), e)),
        }
    };
    if sp.is_enabled() && existing.phase() == Some(BackupPhase::Completed) {
        let body = json!({"status": {"phase": "Running", "failureReason": null}});
        let b = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await
            .during(|| format!("set Continuous Backup {ns}/{name} Running again"))?;
        return Ok(ScheduleOutcome::Continuous(Some(Box::new(b))));
    }
    let body = json!({
        "metadata": {
            "labels": labels,
            "annotations": {(RECONCILE_ANNOTATION): schedule.metadata.resource_version},
        },
        "spec": {"retentionPeriod": sp.retention_period},
    });
    let b = patch_object(&api, &name, None, body).await?;
    Ok(if sp.is_enabled() {
        ScheduleOutcome::Continuous(Some(Box::new(b)))
    } else {
        ScheduleOutcome::Disabled
    })
}

/// Sets up every schedule; a problem of one schedule is its outcome, an API error that
/// retrying can mend is the error.
async fn schedule_all(
    ctx: &Context,
    schedule: &BackupSchedule,
    policy: &BackupPolicy,
) -> Result<Vec<(SchedulePolicy, ScheduleOutcome)>> {
    let ns = schedule.metadata.namespace.clone().unwrap_or_default();
    let name = schedule.metadata.name.clone().unwrap_or_default();
    let cron_jobs: Api<CronJob> = Api::namespaced(ctx.client.clone(), &ns);
    let service_account = ensure_worker_service_account(ctx, &ns).await?;
    let mut outcomes = Vec::new();
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    for sp in &schedule.spec.schedules {
        let outcome = async {
            let type_ = match method_type(ctx, policy, &sp.backup_method).await {
                // A disabled schedule runs nothing: what it names may be missing.
                Err(e) if !e.is_transient() && !sp.is_enabled() => {
                    return Ok(ScheduleOutcome::Disabled)
                }
                r => r?,
            };
            if type_ == Some(BackupType::Continuous) {
                return ensure_continuous(ctx, schedule, policy, sp).await;
            }
            if !sp.is_enabled() {
                return Ok(ScheduleOutcome::Disabled);
            }
            let require_full_of = (type_ == Some(BackupType::Incremental)).then(|| {
                policy
                    .spec
                    .method(&sp.backup_method)
                    .and_then(|m| m.compatible_method.clone())
                    .unwrap_or_default()
            });
            let inputs = CronJobInputs {
                service_account: service_account.clone(),
                require_full_of,
            };
            let desired = cron_job(schedule, policy, sp, &inputs, &ctx.config);
            wanted.insert(cron_job_name(schedule, sp));
            let cj = ensure_cron_job(&cron_jobs, desired).await?;
            Ok(ScheduleOutcome::Cron(Box::new(cj)))
        }
        .await;
        match outcome {
            Ok(o) => outcomes.push((sp.clone(), o)),
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => outcomes.push((sp.clone(), ScheduleOutcome::Failed(e.to_string()))),
        }
    }
    // CronJobs of this schedule that no enabled schedule names (disabled, renamed,
    // removed) go.
    let selector = format!("{}={name}", label::BACKUP_SCHEDULE);
    let existing = cron_jobs
        .list(&ListParams::default().labels(&selector))
        .await
        .during(|| format!("list the CronJobs of BackupSchedule {ns}/{name}"))?;
    for cj in &existing.items {
        let cj_name = cj.metadata.name.as_deref().unwrap_or("");
        if !wanted.contains(cj_name) && super::is_owned_by(cj, schedule.metadata.uid.as_deref()) {
            delete_cron_job(&cron_jobs, cj).await?;
            tracing::info!(schedule = %format!("{ns}/{name}"), cronjob = cj_name, "deleted the CronJob of a disabled or removed schedule");
        }
    }
    Ok(outcomes)
}

/// Writes `status` when it differs from the stored one (the whole status is replaced, so
/// schedules and reasons that went are removed).
async fn write_status(
    api: &Api<BackupSchedule>,
    schedule: &BackupSchedule,
    status: BackupScheduleStatus,
) -> Result<()> {
    if schedule.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let name = schedule.metadata.name.clone().unwrap_or_default();
    let mut updated = schedule.clone();
    updated.status = Some(status);
    api.replace_status(&name, &PostParams::default(), &updated)
        .await
        .during(|| format!("write the status of BackupSchedule {name}"))?;
    Ok(())
}

/// Reconciles one BackupSchedule.
///
/// # Errors
/// API errors (retried with back-off).
pub async fn reconcile(schedule: Arc<BackupSchedule>, ctx: Arc<Context>) -> Result<Action> {
    let ns = schedule.metadata.namespace.clone().unwrap_or_default();
    let name = schedule.metadata.name.clone().unwrap_or_default();
    let api: Api<BackupSchedule> = Api::namespaced(ctx.client.clone(), &ns);
    if schedule.metadata.deletion_timestamp.is_some() {
        let cron_jobs: Api<CronJob> = Api::namespaced(ctx.client.clone(), &ns);
        let selector = format!("{}={name}", label::BACKUP_SCHEDULE);
        let list = cron_jobs
            .list(&ListParams::default().labels(&selector))
            .await
            .during(|| format!("list the CronJobs of BackupSchedule {ns}/{name}"))?;
        for cj in &list.items {
            delete_cron_job(&cron_jobs, cj).await?;
        }
        remove_finalizer(&api, schedule.as_ref(), FINALIZER).await?;
        return Ok(Action::await_change());
    }
    let mut schedule = add_finalizer(&api, schedule.as_ref(), FINALIZER).await?;
    let policy_name = schedule.spec.backup_policy_name.clone();
    let labelled = schedule
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(label::BACKUP_POLICY))
        == Some(&policy_name);
    if !labelled {
        schedule = patch_object(
            &api,
            &name,
            schedule.metadata.resource_version.as_deref(),
            json!({"metadata": {"labels": {(label::BACKUP_POLICY): policy_name}}}),
        )
        .await?;
    }
    let policies: Api<BackupPolicy> = Api::namespaced(ctx.client.clone(), &ns);
    let policy = policies
        .get_opt(&policy_name)
        .await
        .during(|| format!("get BackupPolicy {ns}/{policy_name}"))?;
    let whole = match &policy {
        None => Err(Error::Missing {
            kind: "BackupPolicy".into(),
            name: format!("{ns}/{policy_name}"),
        }),
        Some(p) => validate(&schedule, p),
    };
    if let Err(e) = whole {
        let reason = e.to_string();
        let changed = schedule
            .status
            .as_ref()
            .and_then(|s| s.failure_reason.as_deref())
            != Some(reason.as_str());
        write_status(&api, &schedule, failed_status(&schedule, &reason)).await?;
        if changed {
            schedule_failed(&ctx, &schedule, reason.clone()).await;
        }
        tracing::info!(schedule = %format!("{ns}/{name}"), reason, "BackupSchedule failed");
        return Ok(Action::requeue(super::INVALID_REQUEUE));
    }
    let policy = policy.expect("checked above");
    let outcomes = schedule_all(&ctx, &schedule, &policy).await?;
    let backups: Api<Backup> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = format!("{}={name}", label::BACKUP_SCHEDULE);
    let made = backups
        .list(&ListParams::default().labels(&selector))
        .await
        .during(|| format!("list the Backups of BackupSchedule {ns}/{name}"))?;
    let status = status_of(&schedule, Some(&policy), &outcomes, &made.items);
    let failure = status.failure_reason.clone();
    let changed = schedule
        .status
        .as_ref()
        .and_then(|s| s.failure_reason.clone())
        != failure;
    write_status(&api, &schedule, status).await?;
    if let (Some(reason), true) = (failure, changed) {
        schedule_failed(&ctx, &schedule, reason).await;
    }
    Ok(Action::requeue(RESYNC))
}

/// HandleBackupScheduleFailed, published when `failureReason` changes: one series per
/// failure (a missing policy, an unknown method, schedule `a`'s CronJob refused, then
/// schedule `b`'s...), so a new failure is not a count on the first one's note.
async fn schedule_failed(ctx: &Context, schedule: &BackupSchedule, reason: String) {
    let what = match reason.split_once(": ") {
        Some((head, _)) if head.starts_with("schedule ") => format!("Handle {head}"),
        _ => "Handle the BackupSchedule".to_string(),
    };
    let action = crate::context::distinct_action(&what, &reason);
    ctx.event_as(schedule, EventType::Warning, EVENT_FAILED, action, reason)
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schedule() -> BackupSchedule {
        serde_json::from_value(json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1",
            "kind": "BackupSchedule",
            "metadata": {"name": "sched", "namespace": "demo", "uid": "11112222-3", "generation": 4},
            "spec": {"backupPolicyName": "pol", "schedules": [
                {"enabled": true, "backupMethod": "full", "cronExpression": "*/5 * * * *"},
                {"enabled": true, "name": "nightly", "backupMethod": "full", "cronExpression": "0 1 * * *"},
                {"backupMethod": "incr", "cronExpression": "0 * * * *"}]}
        }))
        .unwrap()
    }

    fn policy() -> BackupPolicy {
        serde_json::from_value(json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1",
            "kind": "BackupPolicy",
            "metadata": {"name": "pol", "namespace": "demo"},
            "spec": {"target": {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": "db"}}},
                     "backupMethods": [{"name": "full", "actionSetName": "a"}, {"name": "incr", "actionSetName": "b"}]}
        }))
        .unwrap()
    }

    fn backup(name: &str, method: &str, created: &str, phase: &str, done: Option<&str>) -> Backup {
        serde_json::from_value(json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "Backup",
            "metadata": {"name": name, "creationTimestamp": created},
            "spec": {"backupPolicyName": "pol", "backupMethod": method, "deletionPolicy": "Delete"},
            "status": {"phase": phase, "completionTimestamp": done}
        }))
        .unwrap()
    }

    #[test]
    fn validation_names_the_field() {
        let (s, p) = (schedule(), policy());
        assert!(validate(&s, &p).is_ok());
        let mut dup = s.clone();
        dup.spec.schedules[1].name = None;
        let e = validate(&dup, &p).unwrap_err().to_string();
        assert!(
            e.contains("spec.schedules[1].name") && e.contains("full is duplicated"),
            "{e}"
        );
        let mut unknown = s.clone();
        unknown.spec.schedules[2].backup_method = "nope".into();
        let e = validate(&unknown, &p).unwrap_err().to_string();
        assert!(
            e.contains("backup method nope is not in backup policy demo/pol"),
            "{e}"
        );
        let mut cron = s.clone();
        cron.spec.schedules[0].cron_expression = "every hour".into();
        let e = validate(&cron, &p).unwrap_err().to_string();
        assert!(e.contains("spec.schedules[0].cronExpression"), "{e}");
    }

    #[test]
    fn times_come_from_the_schedules_own_backups() {
        let backups = vec![
            backup(
                "db-full-20261207010000",
                "full",
                "2026-12-07T01:00:01Z",
                "Completed",
                Some("2026-12-07T01:02:00Z"),
            ),
            backup(
                "db-full-20261207010500",
                "full",
                "2026-12-07T01:05:01Z",
                "Running",
                None,
            ),
            // Another schedule's (same method, other name) and a stray name.
            backup(
                "db-nightly-20261207020000",
                "full",
                "2026-12-07T02:00:00Z",
                "Completed",
                Some("2026-12-07T02:09:00Z"),
            ),
            backup(
                "db-full-manual",
                "full",
                "2026-12-07T03:00:00Z",
                "Completed",
                Some("2026-12-07T03:01:00Z"),
            ),
        ];
        let (created, completed) = backup_times("db-full", "full", &backups);
        assert_eq!(created.unwrap().0.to_string(), "2026-12-07T01:05:01Z");
        assert_eq!(completed.unwrap().0.to_string(), "2026-12-07T01:02:00Z");
        assert_eq!(backup_times("db-x", "full", &backups), (None, None));
    }

    #[test]
    fn status_lists_enabled_schedules_and_names_the_first_failure() {
        let (s, p) = (schedule(), policy());
        let cj = CronJob {
            status: Some(k8s_openapi::api::batch::v1::CronJobStatus {
                last_schedule_time: Some(
                    serde_json::from_value(json!("2026-12-07T01:05:00Z")).unwrap(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        let backups = vec![backup(
            "db-full-20261207010000",
            "full",
            "2026-12-07T01:00:01Z",
            "Completed",
            Some("2026-12-07T01:02:00Z"),
        )];
        let outcomes = vec![
            (
                s.spec.schedules[0].clone(),
                ScheduleOutcome::Cron(Box::new(cj)),
            ),
            (
                s.spec.schedules[1].clone(),
                ScheduleOutcome::Failed("ActionSet a not found".into()),
            ),
            (s.spec.schedules[2].clone(), ScheduleOutcome::Disabled),
        ];
        let st = status_of(&s, Some(&p), &outcomes, &backups);
        assert_eq!(st.phase, Some(BackupSchedulePhase::Failed));
        assert_eq!(st.observed_generation, Some(4));
        assert_eq!(
            st.failure_reason.as_deref(),
            Some("schedule nightly: ActionSet a not found")
        );
        let v = serde_json::to_value(&st.schedules).unwrap();
        assert_eq!(
            v,
            json!({
                "full": {"phase": "Running", "lastScheduleTime": "2026-12-07T01:05:00Z",
                         "lastSuccessfulTime": "2026-12-07T01:02:00Z"},
                "nightly": {"phase": "Failed", "failureReason": "ActionSet a not found"}
            })
        );
        let ok = status_of(&s, Some(&p), &outcomes[..1], &backups);
        assert_eq!(ok.phase, Some(BackupSchedulePhase::Available));
        assert_eq!(ok.failure_reason, None);
    }
}
