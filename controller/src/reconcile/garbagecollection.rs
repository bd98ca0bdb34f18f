//! GarbageCollection (`dprepo.io/v1alpha1`): runs `dprepo gc` over a BackupRepo's
//! repository as a Job in the controller's namespace, one run at a time per
//! GarbageCollection, on its cron schedule (UTC) and on request, and records every run.
//!
//! - Schedule: the next time after the last run's start (or the object's creation) that
//!   `spec.schedule` names; `spec.suspend` starts nothing new (a run in progress finishes).
//! - Requests: the annotation [`RUN_REQUESTED_ANNOTATION`] (any value; `BackupDeleted...`
//!   marks a run asked for by a Backup's deletion, anything else a manual one) starts a run
//!   at most once per [`REQUEST_INTERVAL`]; it is removed when the run starts.
//! - Safety: the engine's gc is safe beside running backups (SPEC.md's GC protocol), so
//!   runs do not wait for them; one GarbageCollection never runs two Jobs at once.
//! - Results: the Job's pod writes a [`crate::builder::gc_job::GcSummary`] as its termination message; the run
//!   goes into `status.history` (newest first, at most 10) with its figures or error;
//!   `status.lastSuccessfulTime`, conditions `Ready`/`Running`/`Succeeded`, events, metrics
//!   (`dprepo_repo_gc_*`), and the condition `RepositoryMaintained` on the BackupRepo
//!   (dry runs change no figure there).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::json;

use super::worker::ensure_worker_service_account;
use super::{
    create_if_absent, delete_background, from_time, patch_object, patch_status, replace_status,
    set_condition, to_time,
};
use crate::api::backuprepo::{condition as repo_condition, AccessMethod, BackupRepoPhase};
use crate::api::garbagecollection::{
    condition, GarbageCollection, GarbageCollectionCurrentRun, GarbageCollectionResult,
    GarbageCollectionRun, GarbageCollectionStatus, GarbageCollectionTrigger,
};
use crate::api::BackupRepo;
use crate::builder::gc_job::{gc_job, parse_summary, GcJobInputs, CONTAINER, GC_LABEL};
use crate::builder::names::gc_job_name;
use crate::context::Context;
use crate::error::{Error, KubeResultExt, Result};

/// Annotation on a GarbageCollection asking for a run now (rate-limited).
pub const RUN_REQUESTED_ANNOTATION: &str = "dprepo.io/run-requested";

/// The shortest time between two runs started by requests.
pub const REQUEST_INTERVAL: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

/// Condition type: the GarbageCollection can run (its schedule parses, its BackupRepo is
/// Ready).
pub const CONDITION_READY: &str = "Ready";

/// How often a running Job is looked at (its changes also wake the reconcile).
pub const RUNNING_INTERVAL: Duration = Duration::from_secs(30);

/// Parses a schedule as Kubernetes CronJobs take it: five fields or an `@` shorthand,
/// in UTC.
///
/// # Errors
/// The parser's message.
pub fn parse_schedule(text: &str) -> std::result::Result<Cron, String> {
    let text = text.trim();
    if text.starts_with("TZ=") || text.starts_with("CRON_TZ=") {
        return Err("time zones are not supported: schedules are in UTC".into());
    }
    if !text.starts_with('@') && text.split_whitespace().count() != 5 {
        return Err(format!(
            "{text:?} is not a cron expression of five fields (minute hour day-of-month month day-of-week)"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(text)
        .map_err(|e| e.to_string())
}

/// The first time strictly after `after` that `cron` names.
pub fn next_after(cron: &Cron, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(&after, false).ok()
}

/// What a GarbageCollection does now (no run in progress).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GcDecision {
    /// Start a run for this reason.
    Start(GarbageCollectionTrigger),
    /// Nothing before this time (a schedule or a rate-limited request).
    WaitUntil(DateTime<Utc>),
    /// Suspended, or nothing ever due.
    Idle,
}

/// Decides whether a run starts: `last_start` is the last run's start (any trigger),
/// `created` the object's creation, `requested` the request annotation's value.
pub fn decide(
    cron: &Cron,
    suspended: bool,
    last_start: Option<DateTime<Utc>>,
    created: DateTime<Utc>,
    requested: Option<&str>,
    now: DateTime<Utc>,
) -> GcDecision {
    if suspended {
        return GcDecision::Idle;
    }
    let mut wait: Option<DateTime<Utc>> = None;
    if let Some(value) = requested {
        let allowed = last_start.map(|t| t + REQUEST_INTERVAL);
        match allowed {
            Some(at) if at > now => wait = Some(at),
            _ => {
                let trigger = if value.starts_with("BackupDeleted") {
                    GarbageCollectionTrigger::BackupDeleted
                } else {
                    GarbageCollectionTrigger::Manual
                };
                return GcDecision::Start(trigger);
            }
        }
    }
    if let Some(next) = next_after(cron, last_start.unwrap_or(created)) {
        if next <= now {
            return GcDecision::Start(GarbageCollectionTrigger::Schedule);
        }
        wait = Some(wait.map_or(next, |w| w.min(next)));
    }
    wait.map_or(GcDecision::Idle, GcDecision::WaitUntil)
}

/// The record of a finished run from its Job's outcome: `succeeded` (the Job completed)
/// and the termination message of its pod.
pub fn finished_run(
    current: &GarbageCollectionCurrentRun,
    succeeded: bool,
    message: &str,
    job_failure: &str,
    now: DateTime<Utc>,
) -> GarbageCollectionRun {
    let parsed = parse_summary(message);
    let (result, summary, error) = match (succeeded, parsed) {
        (true, Ok(s)) if s.error.is_none() => (GarbageCollectionResult::Succeeded, Some(s), None),
        (true, Ok(s)) => (GarbageCollectionResult::Failed, None, s.error),
        (true, Err(text)) => (
            GarbageCollectionResult::Failed,
            None,
            Some(format!("the run ended without a summary: {text}")),
        ),
        (false, Ok(s)) => (
            GarbageCollectionResult::Failed,
            None,
            Some(s.error.unwrap_or_else(|| job_failure.to_string())),
        ),
        (false, Err(text)) if !text.is_empty() => {
            (GarbageCollectionResult::Failed, None, Some(text))
        }
        (false, Err(_)) => (
            GarbageCollectionResult::Failed,
            None,
            Some(job_failure.to_string()),
        ),
    };
    let n = |v: u64| Some(i64::try_from(v).unwrap_or(i64::MAX));
    let s = summary.unwrap_or_default();
    let ok = result == GarbageCollectionResult::Succeeded;
    GarbageCollectionRun {
        job_name: Some(current.job_name.clone()),
        trigger: current.trigger.clone(),
        dry_run: current.dry_run,
        start_time: current.start_time.clone(),
        completion_time: Some(to_time(now)),
        result,
        snapshots_seen: if ok { n(s.snapshots) } else { None },
        packs_deleted: if ok { n(s.packs_deleted) } else { None },
        packs_rewritten: if ok { n(s.packs_rewritten) } else { None },
        bytes_freed: if ok { n(s.bytes_freed) } else { None },
        error,
    }
}

fn describe(run: &GarbageCollectionRun) -> String {
    match run.result {
        GarbageCollectionResult::Succeeded => format!(
            "{}{} bytes freed, {} packs deleted, {} rewritten; {} snapshots kept",
            if run.dry_run == Some(true) {
                "dry run: would have "
            } else {
                ""
            },
            run.bytes_freed.unwrap_or(0),
            run.packs_deleted.unwrap_or(0),
            run.packs_rewritten.unwrap_or(0),
            run.snapshots_seen.unwrap_or(0)
        ),
        GarbageCollectionResult::Failed => run.error.clone().unwrap_or_default(),
    }
}

struct Run<'a> {
    ctx: &'a Context,
    api: Api<GarbageCollection>,
    gc: GarbageCollection,
    status: GarbageCollectionStatus,
    name: String,
    now: DateTime<Utc>,
}

impl Run<'_> {
    fn cond(&mut self, type_: &str, status: &str, reason: &str, message: &str) {
        let generation = self.gc.metadata.generation;
        let now = self.now;
        set_condition(
            self.status.conditions.get_or_insert_with(Vec::new),
            type_,
            status,
            reason,
            message,
            generation,
            now,
        );
    }

    /// A reference to the run Job `name` (in the controller's namespace), the related
    /// object of the run's events.
    fn job_ref(&self, name: &str) -> k8s_openapi::api::core::v1::ObjectReference {
        k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("batch/v1".into()),
            kind: Some("Job".into()),
            name: Some(name.to_string()),
            namespace: Some(self.ctx.config.namespace.clone()),
            ..Default::default()
        }
    }

    async fn flush(&mut self) -> Result<()> {
        self.status.observed_generation = self.gc.metadata.generation;
        if self.gc.status.as_ref() == Some(&self.status) {
            return Ok(());
        }
        self.gc = replace_status(
            &self.api,
            &self.name,
            self.gc.metadata.resource_version.as_deref(),
            self.gc.status.as_ref(),
            &self.status,
        )
        .await?;
        Ok(())
    }

    /// Follows the run in progress; `true` when it finished (and was recorded).
    async fn follow(&mut self, repo: Option<&BackupRepo>) -> Result<bool> {
        let Some(current) = self.status.current_run.clone() else {
            return Ok(true);
        };
        let ns = self.ctx.config.namespace.clone();
        let jobs: Api<Job> = Api::namespaced(self.ctx.client.clone(), &ns);
        let job = jobs
            .get_opt(&current.job_name)
            .await
            .during(|| format!("get Job {ns}/{}", current.job_name))?;
        let (succeeded, message, failure) = match &job {
            None => (
                false,
                String::new(),
                format!(
                    "the Job {ns}/{} was deleted before it finished",
                    current.job_name
                ),
            ),
            Some(job) => match job_outcome(job) {
                None => return Ok(false),
                Some((ok, failure)) => (
                    ok,
                    self.termination_message(&current.job_name).await,
                    failure,
                ),
            },
        };
        let run = finished_run(&current, succeeded, &message, &failure, self.now);
        let ok = run.result == GarbageCollectionResult::Succeeded;
        let dry = run.dry_run == Some(true);
        let note = describe(&run);
        let repo_name = self.gc.spec.backup_repo_name.clone();
        self.ctx.metrics.gc_finished(
            &repo_name,
            ok,
            if dry {
                0
            } else {
                run.bytes_freed.unwrap_or(0).max(0) as u64
            },
            self.now.timestamp() as f64,
        );
        if ok {
            self.status.last_successful_time = Some(to_time(self.now));
            self.cond(condition::SUCCEEDED, "True", "RunSucceeded", &note);
        } else {
            self.cond(condition::SUCCEEDED, "False", "RunFailed", &note);
        }
        self.cond(condition::RUNNING, "False", "NotRunning", "");
        self.status.record(run);
        self.status.current_run = None;
        if let (Some(repo), false) = (repo, dry) {
            self.mark_repository(repo, ok, &current.job_name, &note)
                .await?;
        }
        self.flush().await?;
        let gc = self.gc.clone();
        // One series per run (its Job): runs a few minutes apart (manual, after
        // deletions) report their own figures and failures.
        let job = self.job_ref(&current.job_name);
        if ok {
            self.ctx
                .event_related_ref(
                    &gc,
                    job,
                    EventType::Normal,
                    "GarbageCollectionSucceeded",
                    note,
                )
                .await;
        } else {
            self.ctx
                .event_related_ref(
                    &gc,
                    job,
                    EventType::Warning,
                    "GarbageCollectionFailed",
                    note,
                )
                .await;
        }
        Ok(true)
    }

    /// The termination message of the Job's newest pod's `gc` container.
    async fn termination_message(&self, job_name: &str) -> String {
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.ctx.config.namespace);
        let mut list = pods
            .list(&ListParams::default().labels(&format!("job-name={job_name}")))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        list.sort_by(|a, b| {
            b.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0)
                .cmp(&a.metadata.creation_timestamp.as_ref().map(|t| t.0))
        });
        list.iter()
            .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
            .flatten()
            .filter(|c| c.name == CONTAINER)
            .find_map(|c| c.state.as_ref()?.terminated.as_ref()?.message.clone())
            .unwrap_or_default()
    }

    /// Sets `RepositoryMaintained` on the BackupRepo (a 409 retries the reconcile).
    async fn mark_repository(
        &self,
        repo: &BackupRepo,
        ok: bool,
        job: &str,
        note: &str,
    ) -> Result<()> {
        let repos: Api<BackupRepo> = Api::all(self.ctx.client.clone());
        let mut status = repo.status.clone().unwrap_or_default();
        let (state, reason) = if ok {
            ("True", "GarbageCollectionSucceeded")
        } else {
            ("False", "GarbageCollectionFailed")
        };
        let changed = set_condition(
            status.conditions.get_or_insert_with(Vec::new),
            repo_condition::REPOSITORY_MAINTAINED,
            state,
            reason,
            &format!("GarbageCollection {} run {job}: {note}", self.name),
            repo.metadata.generation,
            self.now,
        );
        if changed {
            patch_status(
                &repos,
                repo.metadata.name.as_deref().unwrap_or(""),
                repo.metadata.resource_version.as_deref(),
                &json!({"conditions": status.conditions}),
            )
            .await?;
        }
        Ok(())
    }

    /// Whether the controller's namespace holds the repository's objects.
    async fn namespace_prepared(&self, repo: &BackupRepo) -> Result<bool> {
        let ns = &self.ctx.config.namespace;
        let status = repo.status.clone().unwrap_or_default();
        let secret = status.tool_config_secret_name.unwrap_or_default();
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), ns);
        if secret.is_empty()
            || secrets
                .get_opt(&secret)
                .await
                .during(|| format!("get Secret {ns}/{secret}"))?
                .is_none()
        {
            return Ok(false);
        }
        if repo.access_method() == AccessMethod::Mount {
            let pvc = status.backup_pvc_name.unwrap_or_default();
            let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(self.ctx.client.clone(), ns);
            if pvc.is_empty()
                || pvcs
                    .get_opt(&pvc)
                    .await
                    .during(|| format!("get PersistentVolumeClaim {ns}/{pvc}"))?
                    .is_none()
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Deletes the finished Jobs of earlier runs (the last one stays for its logs).
    async fn delete_old_jobs(&self, keep: &str) -> Result<()> {
        let jobs: Api<Job> = Api::namespaced(self.ctx.client.clone(), &self.ctx.config.namespace);
        let list = jobs
            .list(&ListParams::default().labels(&format!("{GC_LABEL}={}", self.name)))
            .await
            .during(|| format!("list the Jobs of GarbageCollection {}", self.name))?;
        for j in list.items {
            let name = j.metadata.name.clone().unwrap_or_default();
            if name != keep && job_outcome(&j).is_some() {
                delete_background(&jobs, &name).await?;
            }
        }
        Ok(())
    }

    async fn start(&mut self, repo: &BackupRepo, trigger: GarbageCollectionTrigger) -> Result<()> {
        let ns = self.ctx.config.namespace.clone();
        let sa = ensure_worker_service_account(self.ctx, &ns).await?;
        let mut start = self.now;
        let jobs: Api<Job> = Api::namespaced(self.ctx.client.clone(), &ns);
        let mut name = gc_job_name(&self.name, start);
        // A name is unique per second: a second run within it waits a second.
        while jobs
            .get_opt(&name)
            .await
            .during(|| format!("get Job {ns}/{name}"))?
            .is_some()
        {
            start += chrono::TimeDelta::seconds(1);
            name = gc_job_name(&self.name, start);
        }
        let previous = self
            .status
            .history
            .as_ref()
            .and_then(|h| h.first())
            .and_then(|r| r.job_name.clone())
            .unwrap_or_default();
        self.delete_old_jobs(&previous).await?;
        let job = gc_job(
            &self.gc,
            repo,
            &GcJobInputs {
                name: name.clone(),
                trigger: trigger.as_str().to_string(),
                service_account: sa,
            },
            &self.ctx.config,
        );
        let dry_run = self.gc.spec.is_dry_run();
        self.status.current_run = Some(GarbageCollectionCurrentRun {
            job_name: name.clone(),
            start_time: to_time(self.now),
            trigger: Some(trigger.clone()),
            dry_run: dry_run.then_some(true),
        });
        self.status.last_schedule_time = Some(to_time(self.now));
        self.cond(
            condition::RUNNING,
            "True",
            "Running",
            &format!("Job {ns}/{name} runs dprepo gc ({trigger})"),
        );
        // Claim the run before starting it: the status write is conditional on the
        // resourceVersion, so a reconcile working from a copy that has not seen the run
        // in progress fails here instead of starting a second Job (which found the first
        // one's gc lease busy and was recorded as a failed run).
        self.flush().await?;
        if let Err(e) = create_if_absent(&jobs, &job).await {
            self.status.current_run = None;
            self.cond(condition::RUNNING, "False", "NotRunning", "");
            if let Err(undo) = self.flush().await {
                tracing::warn!(gc = %self.name, error = %undo, "could not withdraw the run that did not start");
            }
            return Err(e);
        }
        if trigger != GarbageCollectionTrigger::Schedule {
            self.clear_request().await?;
        }
        let gc = self.gc.clone();
        let job = self.job_ref(&name);
        self.ctx
            .event_related_ref(
                &gc,
                job,
                EventType::Normal,
                "GarbageCollectionStarted",
                format!(
                    "Job {ns}/{name} started ({trigger}{})",
                    if dry_run { ", dry run" } else { "" }
                ),
            )
            .await;
        Ok(())
    }

    async fn clear_request(&mut self) -> Result<()> {
        self.gc = patch_object(
            &self.api,
            &self.name,
            self.gc.metadata.resource_version.as_deref(),
            json!({"metadata": {"annotations": {RUN_REQUESTED_ANNOTATION: null}}}),
        )
        .await?;
        Ok(())
    }
}

/// `Some((succeeded, failure message))` once the Job finished.
fn job_outcome(job: &Job) -> Option<(bool, String)> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .filter(|c| c.status == "True")
        .find_map(|c| match c.type_.as_str() {
            "Complete" => Some((true, String::new())),
            "Failed" => Some((
                false,
                format!(
                    "the Job failed: {}: {}",
                    c.reason.clone().unwrap_or_default(),
                    c.message.clone().unwrap_or_default()
                ),
            )),
            _ => None,
        })
}

/// Reconciles one GarbageCollection.
///
/// # Errors
/// API errors (transient); a schedule that does not parse or a BackupRepo that does not
/// exist ([`Error::Invalid`], after the `Ready` condition says so).
pub async fn reconcile(gc: Arc<GarbageCollection>, ctx: Arc<Context>) -> Result<Action> {
    if gc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let api: Api<GarbageCollection> = Api::all(ctx.client.clone());
    let name = gc.metadata.name.clone().unwrap_or_default();
    let mut run = Run {
        ctx: &ctx,
        api,
        gc: gc.as_ref().clone(),
        status: gc.status.clone().unwrap_or_default(),
        name,
        now: ctx.clock.now(),
    };
    let repos: Api<BackupRepo> = Api::all(ctx.client.clone());
    let repo_name = gc.spec.backup_repo_name.clone();
    let repo = repos
        .get_opt(&repo_name)
        .await
        .during(|| format!("get BackupRepo {repo_name}"))?;

    if !run.follow(repo.as_ref()).await? {
        return Ok(Action::requeue(RUNNING_INTERVAL));
    }
    let cron = match parse_schedule(gc.spec.schedule()) {
        Ok(c) => c,
        Err(message) => {
            run.cond(
                CONDITION_READY,
                "False",
                "InvalidSchedule",
                &format!("spec.schedule: {message}"),
            );
            run.status.next_schedule_time = None;
            run.flush().await?;
            return Err(Error::invalid("spec.schedule", message));
        }
    };
    let Some(repo) = repo else {
        run.cond(
            CONDITION_READY,
            "False",
            "BackupRepoNotFound",
            &format!("spec.backupRepoName: BackupRepo {repo_name} not found"),
        );
        run.flush().await?;
        return Err(Error::invalid(
            "spec.backupRepoName",
            format!("BackupRepo {repo_name} not found"),
        ));
    };
    let created = gc
        .metadata
        .creation_timestamp
        .as_ref()
        .map(from_time)
        .unwrap_or(run.now);
    let last_start = run.status.last_schedule_time.as_ref().map(from_time);
    let requested = gc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RUN_REQUESTED_ANNOTATION))
        .map(String::as_str);
    run.status.next_schedule_time = if gc.spec.is_suspended() {
        None
    } else {
        next_after(&cron, last_start.unwrap_or(created)).map(to_time)
    };
    let repo_ready = repo.status.as_ref().and_then(|s| s.phase) == Some(BackupRepoPhase::Ready);
    if !repo_ready {
        run.cond(
            CONDITION_READY,
            "False",
            "BackupRepoNotReady",
            &format!("BackupRepo {repo_name} is not Ready"),
        );
        run.flush().await?;
        return Ok(Action::requeue(Duration::from_secs(300)));
    }
    run.cond(CONDITION_READY, "True", "Ready", "");
    let decision = decide(
        &cron,
        gc.spec.is_suspended(),
        last_start,
        created,
        requested,
        run.now,
    );
    match decision {
        GcDecision::Start(trigger) => {
            if !run.namespace_prepared(&repo).await? {
                run.flush().await?;
                // The BackupRepo reconciler prepares the namespace; look again soon.
                return Ok(Action::requeue(Duration::from_secs(5)));
            }
            run.start(&repo, trigger).await?;
            Ok(Action::requeue(RUNNING_INTERVAL))
        }
        GcDecision::WaitUntil(at) => {
            run.flush().await?;
            let wait = (at - run.now).to_std().unwrap_or(Duration::from_secs(1));
            Ok(Action::requeue(wait.max(Duration::from_secs(1))))
        }
        GcDecision::Idle => {
            run.flush().await?;
            Ok(Action::await_change())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn schedules_are_five_fields_or_shorthands_in_utc() {
        let daily = parse_schedule("0 3 * * *").unwrap();
        assert_eq!(
            next_after(&daily, at("2026-12-07T02:00:00Z")),
            Some(at("2026-12-07T03:00:00Z"))
        );
        assert_eq!(
            next_after(&daily, at("2026-12-07T03:00:00Z")),
            Some(at("2026-12-08T03:00:00Z"))
        );
        let weekly = parse_schedule("@weekly").unwrap();
        assert!(next_after(&weekly, at("2026-12-07T02:00:00Z")).is_some());
        assert!(parse_schedule("0 0 3 * * *").is_err());
        assert!(parse_schedule("61 * * * *").is_err());
        assert!(parse_schedule("CRON_TZ=Asia/Tokyo 0 3 * * *").is_err());
    }

    #[test]
    fn scheduled_runs_start_when_due_and_not_before() {
        let cron = parse_schedule("0 3 * * *").unwrap();
        let created = at("2026-12-06T10:00:00Z");
        assert_eq!(
            decide(
                &cron,
                false,
                None,
                created,
                None,
                at("2026-12-07T02:59:59Z")
            ),
            GcDecision::WaitUntil(at("2026-12-07T03:00:00Z"))
        );
        assert_eq!(
            decide(
                &cron,
                false,
                None,
                created,
                None,
                at("2026-12-07T03:00:00Z")
            ),
            GcDecision::Start(GarbageCollectionTrigger::Schedule)
        );
        // After a run started at 03:00, the next is tomorrow's.
        assert_eq!(
            decide(
                &cron,
                false,
                Some(at("2026-12-07T03:00:00Z")),
                created,
                None,
                at("2026-12-07T09:00:00Z")
            ),
            GcDecision::WaitUntil(at("2026-12-08T03:00:00Z"))
        );
        assert_eq!(
            decide(
                &cron,
                true,
                None,
                created,
                Some("now"),
                at("2026-12-08T03:00:00Z")
            ),
            GcDecision::Idle
        );
    }

    #[test]
    fn requests_start_a_run_at_most_every_ten_minutes() {
        let cron = parse_schedule("0 3 * * *").unwrap();
        let created = at("2026-12-06T10:00:00Z");
        let now = at("2026-12-06T12:00:00Z");
        assert_eq!(
            decide(
                &cron,
                false,
                None,
                created,
                Some("BackupDeleted: ns/b"),
                now
            ),
            GcDecision::Start(GarbageCollectionTrigger::BackupDeleted)
        );
        assert_eq!(
            decide(
                &cron,
                false,
                Some(at("2026-12-06T11:55:00Z")),
                created,
                Some("please"),
                now
            ),
            GcDecision::WaitUntil(at("2026-12-06T12:05:00Z"))
        );
        assert_eq!(
            decide(
                &cron,
                false,
                Some(at("2026-12-06T11:50:00Z")),
                created,
                Some("please"),
                now
            ),
            GcDecision::Start(GarbageCollectionTrigger::Manual)
        );
    }

    fn current() -> GarbageCollectionCurrentRun {
        GarbageCollectionCurrentRun {
            job_name: "gc-r-1".into(),
            start_time: to_time(at("2026-12-06T12:00:00Z")),
            trigger: Some(GarbageCollectionTrigger::Manual),
            dry_run: None,
        }
    }

    #[test]
    fn a_finished_run_records_the_summary_or_the_error() {
        let done = at("2026-12-06T12:01:00Z");
        let ok = finished_run(
            &current(),
            true,
            r#"{"dryRun":false,"snapshots":4,"packs":9,"packsDeleted":2,"packsRewritten":1,"bytesFreed":123456,"tombstonesBlocked":0}"#,
            "",
            done,
        );
        assert_eq!(ok.result, GarbageCollectionResult::Succeeded);
        assert_eq!(ok.bytes_freed, Some(123456));
        assert_eq!(ok.snapshots_seen, Some(4));
        assert_eq!(ok.packs_deleted, Some(2));
        assert_eq!(ok.completion_time, Some(to_time(done)));
        assert_eq!(
            describe(&ok),
            "123456 bytes freed, 2 packs deleted, 1 rewritten; 4 snapshots kept"
        );
        let failed = finished_run(
            &current(),
            false,
            r#"{"error":"no repository at /backupdata"}"#,
            "the Job failed: BackoffLimitExceeded: x",
            done,
        );
        assert_eq!(failed.result, GarbageCollectionResult::Failed);
        assert_eq!(
            failed.error.as_deref(),
            Some("no repository at /backupdata")
        );
        assert_eq!(failed.bytes_freed, None);
        let log_tail = finished_run(&current(), false, "dprepo: error: boom", "j", done);
        assert_eq!(log_tail.error.as_deref(), Some("dprepo: error: boom"));
        let nothing = finished_run(
            &current(),
            false,
            "",
            "the Job failed: DeadlineExceeded: late",
            done,
        );
        assert_eq!(
            nothing.error.as_deref(),
            Some("the Job failed: DeadlineExceeded: late")
        );
        let no_summary = finished_run(&current(), true, "", "", done);
        assert_eq!(no_summary.result, GarbageCollectionResult::Failed);
    }
}
