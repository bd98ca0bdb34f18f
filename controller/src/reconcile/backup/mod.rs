//! Backup: New -> Running -> Completed | Failed, and Deleting (CONTROLLER.md section 2).
//!
//! - **New**: the policy (Unavailable: Failed), method, ActionSet and parameters are
//!   resolved; the repository is the `backup-repo-name` label, else the policy's, else
//!   the one default repository (two Ready defaults: Failed); it must be Ready. Labels
//!   `backup-type`, `backup-policy`, `backup-repo-name` and the finalizer are added.
//!   Without the repository's tool Secret (and PVC for Mount access) in the namespace,
//!   the Backup is labelled `wait-repo-preparation=true` and waits: the BackupRepo
//!   reconciler creates them and drops the label, which wakes this one. Then the status
//!   gets `formatVersion, path, backupMethod, backupRepoName, persistentVolumeClaimName,
//!   encryptionConfig, target(s)` with the selected pods, `phase Running,
//!   startTimestamp, parentBackupName, expiration`.
//! - **Running**: per target pod, the actions run in order (preBackup steps, backupData,
//!   postBackup steps), each a Job built by [`crate::builder::backup_job`]; the first
//!   that is not finished stops the walk. A Job that failed fails the Backup with the
//!   reason Kubernetes gives and the last lines of its pod's log. An Exec step's Job
//!   runs `dprepo-controller exec` in the controller's namespace as the exec worker
//!   (see [`crate::builder::exec`]); a step with `onError: Continue` that fails is
//!   recorded Failed and the walk goes on. A Continuous backup's backupData is a
//!   StatefulSet kept running instead (`continuous`).
//! - **Completed / Failed**: the Backup's Jobs are deleted. A Failed backup is retried
//!   from where it failed by setting its phase back to `Running`
//!   (`kubectl patch backup NAME --subresource=status --type=merge -p '{"status":{"phase":"Running"}}'`):
//!   actions recorded Completed are not run again, the others are (their Jobs are gone).
//! - **Deleting**: child Backups are deleted, then the Backup's Jobs; `Retain` keeps the
//!   data and the CR (event `Retain`); otherwise the ActionSet's preDelete Job, then the
//!   deleter Job (`datasafed rm -r <path>`, then empty parent directories); a failed one
//!   sets `deletionFailureReason` (event `DeleteBackupFilesFailed`) and is run again; on
//!   success the repository's GarbageCollection is asked for a run and the finalizer
//!   goes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, ListParams, LogParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::{json, Value};

use super::worker::ensure_worker_service_account;
use super::{
    add_finalizer, delete_background, from_time, patch_object, patch_status, remove_finalizer,
    to_time,
};
use crate::api::actionset::{ActionSet, BackupType};
use crate::api::backup::{
    ActionPhase, ActionStatus, ActionType, Backup, BackupDeletionPolicy, BackupPhase,
    BackupStatusTarget, FORMAT_VERSION,
};
use crate::api::backuppolicy::{BackupMethod, BackupPolicy, BackupTarget, PodSelectionStrategy};
use crate::api::backuprepo::{AccessMethod, BackupRepo, BackupRepoPhase};
use crate::api::common::AvailabilityPhase;
use crate::api::labels::{annotation, label, FINALIZER};
use crate::api::GarbageCollection;
use crate::builder::backup_job::{
    self, backup_data_action_name, post_backup_action_name, pre_backup_action_name,
    BackupJobInputs, Chain,
};
use crate::builder::datasafed::RepoMount;
use crate::context::Context;
use crate::error::{Error, KubeResultExt, Result};
use crate::reconcile::garbagecollection::RUN_REQUESTED_ANNOTATION;

/// How often a running Backup is looked at besides the Job watch.
pub const RUNNING_INTERVAL: Duration = Duration::from_secs(20);
/// Lines of a failed pod's log quoted in `failureReason`.
pub const LOG_LINES: i64 = 10;

/// Why a backup cannot go on: the text becomes `failureReason`.
#[derive(Debug)]
pub struct Failure(pub String);

/// A step's outcome: go on, fail the Backup with a reason, or an error to retry.
enum Step<T> {
    Ok(T),
    Fail(String),
}

macro_rules! step {
    ($e:expr) => {
        match $e? {
            Step::Ok(v) => v,
            Step::Fail(reason) => return Ok(Step::Fail(reason)),
        }
    };
}

/// Reconciles one Backup.
///
/// # Errors
/// API errors (retried).
pub async fn reconcile(backup: Arc<Backup>, ctx: Arc<Context>) -> Result<Action> {
    let b = backup.as_ref();
    let skip = b
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotation::SKIP_RECONCILIATION))
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if skip {
        return Ok(Action::await_change());
    }
    let r = Reconciler::new(b, &ctx);
    if b.metadata.deletion_timestamp.is_some() {
        if b.phase() != Some(BackupPhase::Deleting) {
            r.patch(json!({"phase": "Deleting"})).await?;
            ctx.metrics.backup_phase("Deleting", None, None);
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        return r.deleting().await;
    }
    match b.phase() {
        None | Some(BackupPhase::New) => r.new_phase().await,
        Some(BackupPhase::Running) | Some(BackupPhase::InProgress)
            if continuous::is_continuous(b) =>
        {
            r.running_continuous().await
        }
        Some(BackupPhase::Running) | Some(BackupPhase::InProgress) => r.running().await,
        // A Continuous backup that failed once it started is looked at again: a healthy
        // archiver makes it Running (KubeBlocks' rule).
        Some(BackupPhase::Failed)
            if continuous::is_continuous(b)
                && b.status
                    .as_ref()
                    .and_then(|s| s.start_timestamp.as_ref())
                    .is_some() =>
        {
            r.running_continuous().await
        }
        Some(BackupPhase::Completed) | Some(BackupPhase::Failed) => {
            r.clean_up_jobs(false).await?;
            Ok(Action::await_change())
        }
        Some(BackupPhase::Deleting) => Ok(Action::await_change()),
    }
}

struct Reconciler<'a> {
    b: &'a Backup,
    ctx: &'a Context,
    name: String,
    ns: String,
    api: Api<Backup>,
}

/// What New and Running both resolve.
struct Resolved {
    policy: BackupPolicy,
    method: BackupMethod,
    action_set: ActionSet,
    repo: BackupRepo,
}

fn label_of<'a>(b: &'a Backup, key: &str) -> Option<&'a str> {
    b.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// The targets of a method: its own, else the policy's.
pub fn targets_of(policy: &BackupPolicy, method: &BackupMethod) -> Vec<BackupTarget> {
    let own: Vec<BackupTarget> = method
        .target
        .iter()
        .cloned()
        .chain(method.targets.iter().flatten().cloned())
        .collect();
    if !own.is_empty() {
        return own;
    }
    policy
        .spec
        .target
        .iter()
        .cloned()
        .chain(policy.spec.targets.iter().flatten().cloned())
        .collect()
}

/// A label selector as the API's `labelSelector` parameter.
pub fn selector_string(
    s: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
) -> String {
    let mut parts: Vec<String> = s
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in s.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            other => format!("{} {other} ({values})", e.key),
        });
    }
    parts.join(",")
}

/// Whether `pod` is one of the backup workloads themselves (label `managed-by:
/// kubeblocks-dataprotection`): never a target. A Continuous backup made by a schedule
/// carries its target's selector labels, and so does its archiver pod: a selector as
/// broad as `app: pg` matched the archiver, and a later full backup ran pg_basebackup
/// against it (`invalid port number: "0"`).
pub fn is_backup_workload(pod: &Pod) -> bool {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(label::MANAGED_BY))
        .is_some_and(|v| v == label::MANAGED_BY_VALUE)
}

/// KubeBlocks' expiration rule: Completed counts from completion, otherwise it is set once
/// from the start; a zero retention means none.
pub fn expiration(
    b: &Backup,
    phase: BackupPhase,
    completion: Option<chrono::DateTime<chrono::Utc>>,
) -> Option<Option<chrono::DateTime<chrono::Utc>>> {
    // A running Continuous backup has no expiration: its data keeps growing.
    if phase == BackupPhase::Running && continuous::is_continuous(b) {
        return Some(None);
    }
    let retention = b.spec.retention_period.as_ref()?;
    let duration = retention.to_duration().ok()?;
    if duration.is_zero() {
        return Some(None);
    }
    let point = if phase == BackupPhase::Completed {
        completion
    } else {
        if b.status
            .as_ref()
            .and_then(|s| s.expiration.as_ref())
            .is_some()
        {
            return None;
        }
        b.start_time().map(from_time)
    }
    .or_else(|| b.metadata.creation_timestamp.as_ref().map(from_time))?;
    let d = chrono::TimeDelta::from_std(duration).ok()?;
    Some(point.checked_add_signed(d))
}

/// Job finished: `Some(Ok)` Complete, `Some(Err(reason))` Failed, `None` running.
pub fn job_outcome(job: &Job) -> Option<std::result::Result<(), String>> {
    for c in job
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
    {
        if c.status != "True" {
            continue;
        }
        if c.type_ == "Complete" {
            return Some(Ok(()));
        }
        if c.type_ == "Failed" {
            return Some(Err(format!(
                "{}: {}",
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default()
            )));
        }
    }
    None
}

/// Go duration text of whole seconds (`1m30s`, `0s`).
pub fn go_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

impl<'a> Reconciler<'a> {
    fn new(b: &'a Backup, ctx: &'a Context) -> Self {
        let ns = b.metadata.namespace.clone().unwrap_or_default();
        Reconciler {
            b,
            ctx,
            name: b.metadata.name.clone().unwrap_or_default(),
            api: Api::namespaced(ctx.client.clone(), &ns),
            ns,
        }
    }

    async fn patch(&self, status: Value) -> Result<Backup> {
        patch_status(
            &self.api,
            &self.name,
            self.b.metadata.resource_version.as_deref(),
            &status,
        )
        .await
    }

    /// Fails the Backup with `reason` (event, metrics, expiration).
    async fn fail(&self, reason: String, actions: Option<&[ActionStatus]>) -> Result<Action> {
        let now = self.ctx.clock.now();
        let mut status = json!({"phase": "Failed", "failureReason": reason,
            "completionTimestamp": to_time(now)});
        if let Some(actions) = actions {
            status["actions"] = json!(actions);
        }
        if let Some(e) = expiration(self.b, BackupPhase::Failed, None) {
            status["expiration"] = json!(e.map(to_time));
        }
        self.patch(status).await?;
        self.ctx
            .event(self.b, EventType::Warning, "BackupFailed", reason.clone())
            .await;
        self.ctx.metrics.backup_phase("Failed", None, None);
        tracing::info!(namespace = %self.ns, backup = %self.name, %reason, "backup failed");
        Ok(Action::await_change())
    }

    async fn resolve(&self) -> Result<Step<Resolved>> {
        let spec = &self.b.spec;
        let policies: Api<BackupPolicy> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let Some(policy) = policies
            .get_opt(&spec.backup_policy_name)
            .await
            .during(|| format!("get BackupPolicy {}", spec.backup_policy_name))?
        else {
            return Ok(Step::Fail(format!(
                "BackupPolicy {} not found in namespace {}",
                spec.backup_policy_name, self.ns
            )));
        };
        if let Some(s) = &policy.status {
            if s.phase == Some(AvailabilityPhase::Unavailable) {
                return Ok(Step::Fail(format!(
                    "BackupPolicy {} is Unavailable: {}",
                    spec.backup_policy_name,
                    s.message.clone().unwrap_or_default()
                )));
            }
        }
        let Some(method) = policy.spec.method(&spec.backup_method).cloned() else {
            return Ok(Step::Fail(format!(
                "BackupPolicy {} has no backup method {}",
                spec.backup_policy_name, spec.backup_method
            )));
        };
        let snapshots = method.snapshot_volumes == Some(true);
        let Some(set_name) = method.action_set_name.clone().filter(|n| !n.is_empty()) else {
            if snapshots {
                // A volume snapshot backup needs no ActionSet (KubeBlocks: type Full).
                let repo = step!(self.repository(&policy).await);
                return Ok(Step::Ok(Resolved {
                    policy,
                    method,
                    action_set: snapshot::no_action_set(),
                    repo,
                }));
            }
            return Ok(Step::Fail(format!(
                "backup method {} names no ActionSet (and does not snapshot volumes)",
                method.name
            )));
        };
        let sets: Api<ActionSet> = Api::all(self.ctx.client.clone());
        let Some(action_set) = sets
            .get_opt(&set_name)
            .await
            .during(|| format!("get ActionSet {set_name}"))?
        else {
            return Ok(Step::Fail(format!(
                "ActionSet {set_name} (backup method {}) not found",
                method.name
            )));
        };
        if action_set.spec.backup_type == BackupType::Differential {
            return Ok(Step::Fail(format!(
                "ActionSet {set_name}: Differential backups are not supported"
            )));
        }
        if action_set
            .spec
            .backup
            .as_ref()
            .and_then(|b| b.backup_data.as_ref())
            .is_none()
            && !snapshots
        {
            return Ok(Step::Fail(format!(
                "ActionSet {set_name} has no backup.backupData action"
            )));
        }
        let allowed = action_set
            .spec
            .backup
            .as_ref()
            .and_then(|b| b.with_parameters.clone())
            .unwrap_or_default();
        for p in spec.parameters.iter().flatten() {
            if !allowed.contains(&p.name) {
                return Ok(Step::Fail(format!(
                    "parameter {} is not among the ActionSet {set_name}'s backup.withParameters ({})",
                    p.name,
                    allowed.join(", ")
                )));
            }
        }
        let repo = step!(self.repository(&policy).await);
        Ok(Step::Ok(Resolved {
            policy,
            method,
            action_set,
            repo,
        }))
    }

    async fn repository(&self, policy: &BackupPolicy) -> Result<Step<BackupRepo>> {
        let repos: Api<BackupRepo> = Api::all(self.ctx.client.clone());
        let named = label_of(self.b, label::BACKUP_REPO_NAME)
            .map(str::to_string)
            .or_else(|| {
                policy
                    .spec
                    .backup_repo_name
                    .clone()
                    .filter(|n| !n.is_empty())
            });
        let repo = match named {
            Some(n) => match repos
                .get_opt(&n)
                .await
                .during(|| format!("get BackupRepo {n}"))?
            {
                Some(r) => r,
                None => return Ok(Step::Fail(format!("BackupRepo {n} not found"))),
            },
            None => {
                let all = repos
                    .list(&ListParams::default())
                    .await
                    .during(|| "list BackupRepos".to_string())?;
                let mut defaults: Vec<BackupRepo> = all
                    .items
                    .into_iter()
                    .filter(|r| {
                        r.metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get(annotation::IS_DEFAULT_REPO))
                            .is_some_and(|v| v == "true")
                            && r.status.as_ref().and_then(|s| s.phase)
                                == Some(BackupRepoPhase::Ready)
                    })
                    .collect();
                let names: Vec<String> = defaults
                    .iter()
                    .filter_map(|r| r.metadata.name.clone())
                    .collect();
                match (defaults.len(), defaults.pop()) {
                    (1, Some(only)) => only,
                    (0, _) | (_, None) => {
                        return Ok(Step::Fail(
                            "no BackupRepo named (label backup-repo-name, policy spec.backupRepoName) and no Ready default BackupRepo".into(),
                        ))
                    }
                    _ => {
                        return Ok(Step::Fail(format!(
                            "more than one Ready default BackupRepo ({}): mark exactly one with {}=true",
                            names.join(", "),
                            annotation::IS_DEFAULT_REPO
                        )));
                    }
                }
            }
        };
        let phase = repo.status.as_ref().and_then(|s| s.phase);
        if phase != Some(BackupRepoPhase::Ready) {
            return Ok(Step::Fail(format!(
                "BackupRepo {} is not Ready (phase {})",
                repo.metadata.name.as_deref().unwrap_or(""),
                phase.map_or("unset", |p| p.as_str())
            )));
        }
        Ok(Step::Ok(repo))
    }

    fn repo_mount(repo: &BackupRepo) -> RepoMount {
        let status = repo.status.clone().unwrap_or_default();
        RepoMount {
            access: repo.access_method(),
            pvc_name: status.backup_pvc_name.unwrap_or_default(),
            secret_name: status.tool_config_secret_name.unwrap_or_default(),
        }
    }

    /// Whether the repository's per-namespace objects exist in the Backup's namespace.
    async fn repo_prepared(&self, repo: &BackupRepo) -> Result<bool> {
        let mount = Self::repo_mount(repo);
        if mount.secret_name.is_empty() {
            return Ok(false);
        }
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        if secrets
            .get_opt(&mount.secret_name)
            .await
            .during(|| format!("get Secret {}/{}", self.ns, mount.secret_name))?
            .is_none()
        {
            return Ok(false);
        }
        if mount.access == AccessMethod::Mount {
            if mount.pvc_name.is_empty() {
                return Ok(false);
            }
            let pvcs: Api<PersistentVolumeClaim> =
                Api::namespaced(self.ctx.client.clone(), &self.ns);
            return Ok(pvcs
                .get_opt(&mount.pvc_name)
                .await
                .during(|| format!("get PVC {}/{}", self.ns, mount.pvc_name))?
                .is_some());
        }
        Ok(true)
    }

    /// The pods of `target`: sorted by name; one under strategy Any, all under All.
    async fn select_pods(&self, target: &BackupTarget) -> Result<Step<Vec<String>>> {
        let Some(sel) = &target.pod_selector else {
            return Ok(Step::Fail(format!(
                "target {} has no podSelector",
                target.name.as_deref().unwrap_or("")
            )));
        };
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let mut selectors = vec![&sel.label_selector];
        if let Some(f) = &sel.fallback_label_selector {
            selectors.push(f);
        }
        for s in selectors {
            let text = selector_string(s);
            let list = pods
                .list(&ListParams::default().labels(&text))
                .await
                .during(|| format!("list pods {text}"))?;
            let mut names: Vec<String> = list
                .items
                .iter()
                .filter(|p| {
                    p.metadata.deletion_timestamp.is_none()
                        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                        && !is_backup_workload(p)
                })
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            names.sort();
            if names.is_empty() {
                continue;
            }
            if sel.strategy() == PodSelectionStrategy::Any {
                names.truncate(1);
            }
            return Ok(Step::Ok(names));
        }
        Ok(Step::Fail(format!(
            "no running pod in namespace {} matches the podSelector of target {:?} ({})",
            self.ns,
            target.name.as_deref().unwrap_or(""),
            selector_string(&sel.label_selector)
        )))
    }

    async fn new_phase(&self) -> Result<Action> {
        match self.start().await? {
            Step::Ok(action) => Ok(action),
            Step::Fail(reason) => self.fail(reason, None).await,
        }
    }

    async fn start(&self) -> Result<Step<Action>> {
        let r = step!(self.resolve().await);
        let repo_name = r.repo.metadata.name.clone().unwrap_or_default();
        // Labels and the finalizer.
        let mut labels = BTreeMap::from([
            (
                label::BACKUP_TYPE.to_string(),
                r.action_set.spec.backup_type.as_str().to_string(),
            ),
            (
                label::BACKUP_POLICY.to_string(),
                r.policy.metadata.name.clone().unwrap_or_default(),
            ),
            (label::BACKUP_REPO_NAME.to_string(), repo_name.clone()),
        ]);
        let prepared = self.repo_prepared(&r.repo).await?;
        if !prepared {
            labels.insert(label::WAIT_REPO_PREPARATION.into(), "true".into());
        }
        let current = self.b.metadata.labels.clone().unwrap_or_default();
        let mut obj = self.b.clone();
        if labels.iter().any(|(k, v)| current.get(k) != Some(v)) {
            obj = patch_object(
                &self.api,
                &self.name,
                self.b.metadata.resource_version.as_deref(),
                json!({"metadata": {"labels": labels}}),
            )
            .await?;
        }
        add_finalizer(&self.api, &obj, FINALIZER).await?;
        if !prepared {
            tracing::info!(namespace = %self.ns, backup = %self.name, repo = %repo_name,
                "waiting for the repository's objects in the namespace");
            return Ok(Step::Ok(Action::requeue(Duration::from_secs(30))));
        }
        // Targets and their pods.
        let targets = targets_of(&r.policy, &r.method);
        if targets.is_empty() {
            return Ok(Step::Fail(format!(
                "backup method {} of BackupPolicy {} has no target",
                r.method.name,
                r.policy.metadata.name.as_deref().unwrap_or("")
            )));
        }
        let mut status_targets = Vec::new();
        for t in &targets {
            let pods = step!(self.select_pods(t).await);
            status_targets.push(BackupStatusTarget {
                target: t.clone(),
                selected_target_pods: Some(pods),
            });
        }
        let path = backup_job::backup_path(
            r.repo.spec.path_prefix.as_deref().unwrap_or(""),
            &self.ns,
            r.policy.spec.path_prefix.as_deref().unwrap_or(""),
            &self.name,
        );
        let now = self.ctx.clock.now();
        let mut status = json!({
            "formatVersion": FORMAT_VERSION,
            "phase": "Running",
            "path": path,
            "backupRepoName": repo_name,
            "backupMethod": r.method,
            "startTimestamp": to_time(now),
        });
        if r.repo.access_method() == AccessMethod::Mount {
            status["persistentVolumeClaimName"] = json!(Self::repo_mount(&r.repo).pvc_name);
        }
        if let Some(e) = &r.policy.spec.encryption_config {
            status["encryptionConfig"] = json!(e);
        }
        if status_targets.len() == 1
            && r.policy.spec.targets.is_none()
            && r.method.targets.is_none()
        {
            status["target"] = json!(status_targets[0]);
        } else {
            status["targets"] = json!(status_targets);
        }
        if let Some(p) = &self.b.spec.parent_backup_name {
            status["parentBackupName"] = json!(p);
        }
        let mut with_start = self.b.clone();
        with_start
            .status
            .get_or_insert_with(Default::default)
            .start_timestamp = Some(to_time(now));
        if let Some(e) = expiration(&with_start, BackupPhase::Running, None) {
            status["expiration"] = json!(e.map(to_time));
        }
        // Re-read: the label and finalizer patches moved the resourceVersion.
        patch_status(&self.api, &self.name, None, &status).await?;
        self.ctx.metrics.backup_phase("Running", None, None);
        Ok(Step::Ok(Action::requeue(Duration::from_secs(1))))
    }

    async fn chain(&self) -> Result<Step<Option<Chain>>> {
        let Some(parent) = self.b.spec.parent_backup_name.clone() else {
            return Ok(Step::Ok(None));
        };
        let Some(p) = self
            .api
            .get_opt(&parent)
            .await
            .during(|| format!("get Backup {parent}"))?
        else {
            return Ok(Step::Fail(format!("parent Backup {parent} not found")));
        };
        if p.phase() != Some(BackupPhase::Completed) {
            return Ok(Step::Fail(format!(
                "parent Backup {parent} is not Completed"
            )));
        }
        let base = p
            .status
            .as_ref()
            .and_then(|s| s.base_backup_name.clone())
            .unwrap_or(parent.clone());
        Ok(Step::Ok(Some(Chain { parent, base })))
    }
}

mod actions;
mod continuous;
mod deletion;
mod exec;
mod snapshot;

#[cfg(test)]
mod tests;
