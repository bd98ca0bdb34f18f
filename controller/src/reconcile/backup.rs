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
//!   reason Kubernetes gives and the last lines of its pod's log. Exec actions and
//!   Continuous/StatefulSet actions are recognised and refused with a reason naming
//!   them (not supported yet).
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
use crate::api::actionset::{ActionSet, BackupType, JobActionSpec};
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
        Some(BackupPhase::Running) | Some(BackupPhase::InProgress) => r.running().await,
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

/// KubeBlocks' expiration rule: Completed counts from completion, otherwise it is set once
/// from the start; a zero retention means none.
pub fn expiration(
    b: &Backup,
    phase: BackupPhase,
    completion: Option<chrono::DateTime<chrono::Utc>>,
) -> Option<Option<chrono::DateTime<chrono::Utc>>> {
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
        let Some(set_name) = method.action_set_name.clone().filter(|n| !n.is_empty()) else {
            return Ok(Step::Fail(format!(
                "backup method {} names no ActionSet; volume snapshot backups are not supported yet",
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
        match action_set.spec.backup_type {
            BackupType::Differential => {
                return Ok(Step::Fail(format!(
                    "ActionSet {set_name}: Differential backups are not supported"
                )))
            }
            BackupType::Continuous => {
                return Ok(Step::Fail(format!(
                    "ActionSet {set_name}: Continuous backups (StatefulSet actions) are not supported yet"
                )))
            }
            _ => {}
        }
        if action_set
            .spec
            .backup
            .as_ref()
            .and_then(|b| b.backup_data.as_ref())
            .is_none()
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

    async fn running(&self) -> Result<Action> {
        let mut actions: Vec<ActionStatus> = self
            .b
            .status
            .as_ref()
            .and_then(|s| s.actions.clone())
            .unwrap_or_default();
        match self.run_actions(&mut actions).await? {
            Step::Ok(None) => self.complete(&actions).await,
            Step::Ok(Some(action)) => Ok(action),
            Step::Fail(reason) => self.fail(reason, Some(&actions)).await,
        }
    }

    /// Walks the actions; `Some(requeue)` while one runs, `None` when all completed.
    async fn run_actions(&self, actions: &mut Vec<ActionStatus>) -> Result<Step<Option<Action>>> {
        let r = step!(self.resolve().await);
        let chain = step!(self.chain().await);
        let status = self.b.status.clone().unwrap_or_default();
        let targets: Vec<BackupStatusTarget> = status
            .target
            .clone()
            .into_iter()
            .chain(status.targets.clone().into_iter().flatten())
            .collect();
        let sa = ensure_worker_service_account(self.ctx, &self.ns).await?;
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let backup_spec = r.action_set.spec.backup.clone().unwrap_or_default();
        let mut waiting = false;
        for t in &targets {
            for (index, pod_name) in t.selected_target_pods.iter().flatten().enumerate() {
                let Some(pod) = pods
                    .get_opt(pod_name)
                    .await
                    .during(|| format!("get Pod {}/{pod_name}", self.ns))?
                else {
                    return Ok(Step::Fail(format!(
                        "target pod {pod_name} no longer exists in namespace {}",
                        self.ns
                    )));
                };
                let inputs = BackupJobInputs {
                    backup: self.b,
                    policy: &r.policy,
                    method: &r.method,
                    action_set: &r.action_set,
                    target: &t.target,
                    target_pod: &pod,
                    repo_path_prefix: r.repo.spec.path_prefix.as_deref().unwrap_or(""),
                    repo: Self::repo_mount(&r.repo),
                    service_account: &sa,
                    chain: chain.clone(),
                };
                // The actions of this pod, in order.
                let mut plan: Vec<(String, Result<Job, String>)> = Vec::new();
                let build = |action: &str, job: &JobActionSpec| {
                    backup_job::step_job(&inputs, action, job, &self.ctx.config).map_err(|e| e.0)
                };
                for (i, a) in backup_spec.pre_backup.iter().flatten().enumerate() {
                    let name = pre_backup_action_name(&t.target, i, index);
                    let job = match (&a.job, &a.exec) {
                        (Some(j), None) => build(&name, j),
                        (None, Some(_)) => Err(format!("action {name}: Exec actions (commands run in the target pod) are not supported yet")),
                        _ => Err(format!("action {name}: needs exactly one of exec and job")),
                    };
                    plan.push((name, job));
                }
                let name = backup_data_action_name(&t.target, index);
                plan.push((
                    name,
                    backup_job::backup_data_job(&inputs, index, &self.ctx.config).map_err(|e| e.0),
                ));
                for (i, a) in backup_spec.post_backup.iter().flatten().enumerate() {
                    let name = post_backup_action_name(&t.target, i, index);
                    let job = match (&a.job, &a.exec) {
                        (Some(j), None) => build(&name, j),
                        (None, Some(_)) => Err(format!("action {name}: Exec actions (commands run in the target pod) are not supported yet")),
                        _ => Err(format!("action {name}: needs exactly one of exec and job")),
                    };
                    plan.push((name, job));
                }
                for (action, job) in plan {
                    let slot = match actions.iter().position(|a| {
                        a.name.as_deref() == Some(&action)
                            && a.target_pod_name.as_deref() == Some(pod_name)
                    }) {
                        Some(i) => i,
                        None => {
                            actions.push(ActionStatus {
                                name: Some(action.clone()),
                                target_pod_name: Some(pod_name.clone()),
                                phase: Some(ActionPhase::New),
                                action_type: Some(ActionType::Job),
                                ..Default::default()
                            });
                            actions.len() - 1
                        }
                    };
                    if actions[slot].phase == Some(ActionPhase::Completed) {
                        continue;
                    }
                    let job = match job {
                        Ok(j) => j,
                        Err(reason) => {
                            actions[slot].phase = Some(ActionPhase::Failed);
                            actions[slot].failure_reason = Some(reason.clone());
                            return Ok(Step::Fail(reason));
                        }
                    };
                    match self.run_job(&job, &mut actions[slot]).await? {
                        Some(Ok(())) => continue,
                        Some(Err(reason)) => return Ok(Step::Fail(reason)),
                        None => {
                            waiting = true;
                            break;
                        }
                    }
                }
            }
        }
        if waiting {
            let body = json!({"actions": actions});
            patch_status(&self.api, &self.name, None, &body).await?;
            return Ok(Step::Ok(Some(Action::requeue(RUNNING_INTERVAL))));
        }
        Ok(Step::Ok(None))
    }

    /// Creates `job` if absent and reads its outcome into `slot`.
    async fn run_job(
        &self,
        job: &Job,
        slot: &mut ActionStatus,
    ) -> Result<Option<std::result::Result<(), String>>> {
        let jobs: Api<Job> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let job_name = job.metadata.name.clone().unwrap_or_default();
        let action = slot.name.clone().unwrap_or_default();
        let existing = jobs
            .get_opt(&job_name)
            .await
            .during(|| format!("get Job {}/{job_name}", self.ns))?;
        let found = match existing {
            Some(j) => j,
            None => {
                let created = match jobs.create(&PostParams::default(), job).await {
                    Ok(j) => j,
                    Err(kube::Error::Api(s)) if s.code == 409 => jobs
                        .get(&job_name)
                        .await
                        .during(|| format!("get Job {job_name}"))?,
                    Err(kube::Error::Api(s)) if s.code == 422 || s.code == 400 => {
                        let reason = format!(
                            "action {action}: the API server refused its Job {job_name}: {}",
                            s.message
                        );
                        slot.phase = Some(ActionPhase::Failed);
                        slot.failure_reason = Some(reason.clone());
                        return Ok(Some(Err(reason)));
                    }
                    Err(e) => return Err(Error::kube(format!("create Job {job_name}"), e)),
                };
                self.ctx
                    .event(
                        self.b,
                        EventType::Normal,
                        "CreatingJob",
                        format!("creating job {}/{job_name}", self.ns),
                    )
                    .await;
                created
            }
        };
        slot.action_type = Some(ActionType::Job);
        slot.start_timestamp = found.metadata.creation_timestamp.clone();
        slot.object_ref = Some(k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("batch/v1".into()),
            kind: Some("Job".into()),
            namespace: Some(self.ns.clone()),
            name: Some(job_name.clone()),
            uid: found.metadata.uid.clone(),
            ..Default::default()
        });
        match job_outcome(&found) {
            None => {
                slot.phase = Some(ActionPhase::Running);
                slot.completion_timestamp = None;
                Ok(None)
            }
            Some(Ok(())) => {
                slot.phase = Some(ActionPhase::Completed);
                slot.failure_reason = None;
                slot.completion_timestamp = found
                    .status
                    .as_ref()
                    .and_then(|s| s.completion_time.clone())
                    .or_else(|| Some(to_time(self.ctx.clock.now())));
                Ok(Some(Ok(())))
            }
            Some(Err(condition)) => {
                let logs = self.failed_pod_logs(&job_name).await;
                let reason = format!("action {action} (Job {job_name}) failed: {condition}{logs}");
                slot.phase = Some(ActionPhase::Failed);
                slot.failure_reason = Some(reason.clone());
                slot.completion_timestamp = Some(to_time(self.ctx.clock.now()));
                Ok(Some(Err(reason)))
            }
        }
    }

    /// The last log lines of the failed containers of a Job's newest failed pod, and
    /// how they ended (exit code, signal).
    async fn failed_pod_logs(&self, job_name: &str) -> String {
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let Ok(list) = pods
            .list(&ListParams::default().labels(&format!("job-name={job_name}")))
            .await
        else {
            return String::new();
        };
        let mut failed: Vec<&Pod> = list
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"))
            .collect();
        failed.sort_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0));
        let Some(pod) = failed.last() else {
            return String::new();
        };
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let mut out = String::new();
        for cs in pod
            .status
            .iter()
            .flat_map(|s| s.container_statuses.iter().flatten())
        {
            let Some(t) = cs.state.as_ref().and_then(|s| s.terminated.as_ref()) else {
                continue;
            };
            if t.exit_code == 0 {
                continue;
            }
            let how = match t.signal {
                Some(sig) => format!("killed by signal {sig}"),
                None if t.exit_code > 128 => format!(
                    "exit code {} (killed by signal {})",
                    t.exit_code,
                    t.exit_code - 128
                ),
                None => format!("exit code {}", t.exit_code),
            };
            out.push_str(&format!("; container {} of pod {pod_name}: {how}", cs.name));
            let lp = LogParams {
                container: Some(cs.name.clone()),
                tail_lines: Some(LOG_LINES),
                ..Default::default()
            };
            if let Ok(text) = pods.logs(&pod_name, &lp).await {
                let text = text.trim();
                if !text.is_empty() {
                    out.push_str(&format!(
                        ", last log lines: {}",
                        crate::reconcile::truncate(text, 2048)
                    ));
                }
            }
        }
        out
    }

    async fn complete(&self, actions: &[ActionStatus]) -> Result<Action> {
        let now = self.ctx.clock.now();
        let start = self
            .b
            .status
            .as_ref()
            .and_then(|s| s.start_timestamp.as_ref())
            .map(from_time)
            .unwrap_or(now);
        let secs = (now - start).num_seconds();
        let mut status = json!({
            "phase": "Completed",
            "completionTimestamp": to_time(now),
            "duration": go_duration(secs),
            "failureReason": null,
            "actions": actions,
        });
        if let Some(e) = expiration(self.b, BackupPhase::Completed, Some(now)) {
            status["expiration"] = json!(e.map(to_time));
        }
        // The manager reported totalSize/timeRange into the Backup; the first action's
        // are copied up when it has none (KubeBlocks' updateBackupStatusByActionStatus).
        let current = self
            .api
            .get(&self.name)
            .await
            .during(|| format!("get Backup {}", self.name))?;
        let cur = current.status.clone().unwrap_or_default();
        if cur.total_size.is_none() {
            if let Some(ts) = actions.iter().find_map(|a| a.total_size.clone()) {
                status["totalSize"] = json!(ts);
            }
        }
        patch_status(
            &self.api,
            &self.name,
            current.metadata.resource_version.as_deref(),
            &status,
        )
        .await?;
        self.ctx
            .event(
                self.b,
                EventType::Normal,
                "CreatedBackup",
                "Completed backup",
            )
            .await;
        let size = cur
            .total_size
            .as_deref()
            .and_then(|s| s.parse::<u64>().ok());
        self.ctx.metrics.backup_phase(
            "Completed",
            Some(Duration::from_secs(secs.max(0) as u64)),
            size,
        );
        Ok(Action::await_change())
    }

    /// Deletes the Backup's Jobs (not the deleter's unless `all`), removing our finalizer.
    async fn clean_up_jobs(&self, all: bool) -> Result<bool> {
        let jobs: Api<Job> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let list = jobs
            .list(&ListParams::default().labels(&format!("{}={}", label::BACKUP_NAME, self.name)))
            .await
            .during(|| format!("list the Jobs of Backup {}", self.name))?;
        let uid = self.b.metadata.uid.clone().unwrap_or_default();
        let keep = [
            backup_job::delete_job_name(&self.name, &uid),
            backup_job::pre_delete_job_name(&self.name, &uid),
        ];
        let mut any = false;
        for j in list.items {
            let name = j.metadata.name.clone().unwrap_or_default();
            if !all && keep.contains(&name) {
                continue;
            }
            any = true;
            remove_finalizer(&jobs, &j, FINALIZER).await?;
            if j.metadata.deletion_timestamp.is_none() {
                delete_background(&jobs, &name).await?;
            }
        }
        Ok(any)
    }

    async fn deleting(&self) -> Result<Action> {
        // 1. Child backups (incrementals built on this one).
        let children = self
            .api
            .list(&ListParams::default())
            .await
            .during(|| format!("list Backups in {}", self.ns))?;
        for c in children.items {
            let s = c.status.clone().unwrap_or_default();
            if (s.parent_backup_name.as_deref() == Some(&self.name)
                || s.base_backup_name.as_deref() == Some(&self.name))
                && c.metadata.deletion_timestamp.is_none()
            {
                delete_background(&self.api, c.metadata.name.as_deref().unwrap_or("")).await?;
            }
        }
        // 2. The backup's own Jobs.
        if self.clean_up_jobs(false).await? {
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
        // 3. Retain: data and CR stay.
        if self.b.spec.deletion_policy == BackupDeletionPolicy::Retain {
            self.ctx
                .event(
                    self.b,
                    EventType::Normal,
                    "Retain",
                    "deletionPolicy is Retain: the backup's data and this Backup are kept",
                )
                .await;
            return Ok(Action::await_change());
        }
        let status = self.b.status.clone().unwrap_or_default();
        let path = status.path.clone().unwrap_or_default();
        let repo_name = status.backup_repo_name.clone().unwrap_or_default();
        if path.is_empty() || repo_name.is_empty() || !path.contains(&self.name) {
            return self.finish_deletion(None).await;
        }
        let repos: Api<BackupRepo> = Api::all(self.ctx.client.clone());
        let Some(repo) = repos
            .get_opt(&repo_name)
            .await
            .during(|| format!("get BackupRepo {repo_name}"))?
        else {
            return self.finish_deletion(None).await;
        };
        if !self.repo_prepared(&repo).await? {
            return self
                .deletion_failed(format!(
                    "the repository {repo_name}'s objects are missing in namespace {}; waiting for it to be Ready",
                    self.ns
                ))
                .await;
        }
        let sa = ensure_worker_service_account(self.ctx, &self.ns).await?;
        let mount = Self::repo_mount(&repo);
        // 4. preDelete.
        let method_set = status
            .backup_method
            .as_ref()
            .and_then(|m| m.action_set_name.clone());
        if let Some(set_name) = method_set {
            let sets: Api<ActionSet> = Api::all(self.ctx.client.clone());
            if let Some(set) = sets
                .get_opt(&set_name)
                .await
                .during(|| format!("get ActionSet {set_name}"))?
            {
                if let Some(pd) = set.spec.backup.as_ref().and_then(|b| b.pre_delete.clone()) {
                    let job = backup_job::pre_delete_job(
                        self.b,
                        &path,
                        &pd.image,
                        &pd.command,
                        &mount,
                        &sa,
                        &self.ctx.config,
                    );
                    match self.run_deletion_job(&job).await? {
                        None => return Ok(Action::requeue(Duration::from_secs(5))),
                        Some(Err(reason)) => return self.deletion_failed(reason).await,
                        Some(Ok(())) => {}
                    }
                }
            }
        }
        // 5. The deleter.
        let job = backup_job::delete_job(self.b, &path, &mount, &sa, &self.ctx.config);
        match self.run_deletion_job(&job).await? {
            None => Ok(Action::requeue(Duration::from_secs(5))),
            Some(Err(reason)) => self.deletion_failed(reason).await,
            Some(Ok(())) => self.finish_deletion(Some(&repo_name)).await,
        }
    }

    async fn run_deletion_job(&self, job: &Job) -> Result<Option<std::result::Result<(), String>>> {
        let mut slot = ActionStatus {
            name: job.metadata.name.clone(),
            ..Default::default()
        };
        let out = self.run_job(job, &mut slot).await?;
        if let Some(Err(_)) = &out {
            // Deleting the failed Job is what retries it (the next reconcile recreates it).
            let jobs: Api<Job> = Api::namespaced(self.ctx.client.clone(), &self.ns);
            delete_background(&jobs, job.metadata.name.as_deref().unwrap_or("")).await?;
        }
        Ok(out)
    }

    async fn deletion_failed(&self, reason: String) -> Result<Action> {
        self.patch(json!({"deletionFailureReason": reason})).await?;
        self.ctx
            .event(
                self.b,
                EventType::Warning,
                "DeleteBackupFilesFailed",
                reason,
            )
            .await;
        Ok(Action::requeue(Duration::from_secs(30)))
    }

    async fn finish_deletion(&self, repo: Option<&str>) -> Result<Action> {
        if let Some(repo) = repo {
            self.request_gc(repo).await;
        }
        // The deleter's Jobs go with the Backup (owner references).
        remove_finalizer(&self.api, self.b, FINALIZER).await?;
        self.ctx.metrics.backup_phase("Deleted", None, None);
        Ok(Action::await_change())
    }

    /// Asks the repository's GarbageCollection(s) for a run (they rate-limit requests).
    async fn request_gc(&self, repo: &str) {
        let gcs: Api<GarbageCollection> = Api::all(self.ctx.client.clone());
        let Ok(list) = gcs.list(&ListParams::default()).await else {
            tracing::warn!(repo, "could not list GarbageCollections to request a run");
            return;
        };
        for g in list
            .items
            .iter()
            .filter(|g| g.spec.backup_repo_name == repo)
        {
            let name = g.metadata.name.clone().unwrap_or_default();
            let value = format!("BackupDeleted:{}/{}", self.ns, self.name);
            if let Err(e) = patch_object(
                &gcs,
                &name,
                None,
                json!({"metadata": {"annotations": {RUN_REQUESTED_ANNOTATION: value}}}),
            )
            .await
            {
                tracing::warn!(gc = %name, error = %e, "could not request a garbage collection run");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn backup(retention: Option<&str>, status: Value) -> Backup {
        let mut spec =
            json!({"backupPolicyName": "p", "backupMethod": "m", "deletionPolicy": "Delete"});
        if let Some(r) = retention {
            spec["retentionPeriod"] = json!(r);
        }
        serde_json::from_value(json!({"apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "Backup",
            "metadata": {"name": "b", "namespace": "n", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": spec, "status": status}))
        .unwrap()
    }

    fn t(s: &str) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .with_timezone(&chrono::Utc)
    }

    #[test]
    fn expiration_follows_kubeblocks() {
        // No retention: nothing to set.
        assert_eq!(
            expiration(&backup(None, json!({})), BackupPhase::Running, None),
            None
        );
        // Zero retention: cleared.
        assert_eq!(
            expiration(&backup(Some("0d"), json!({})), BackupPhase::Running, None),
            Some(None)
        );
        // Running: from the start, once.
        let b = backup(
            Some("1d"),
            json!({"startTimestamp": "2026-01-02T00:00:00Z"}),
        );
        assert_eq!(
            expiration(&b, BackupPhase::Running, None),
            Some(Some(t("2026-01-03T00:00:00Z")))
        );
        let set = backup(Some("1d"), json!({"expiration": "2026-02-01T00:00:00Z"}));
        assert_eq!(expiration(&set, BackupPhase::Failed, None), None);
        // Completed: from completion.
        assert_eq!(
            expiration(
                &set,
                BackupPhase::Completed,
                Some(t("2026-01-05T00:00:00Z"))
            ),
            Some(Some(t("2026-01-06T00:00:00Z")))
        );
        // No start: the creation time.
        assert_eq!(
            expiration(&backup(Some("2h"), json!({})), BackupPhase::Failed, None),
            Some(Some(t("2026-01-01T02:00:00Z")))
        );
    }

    #[test]
    fn durations_are_go_formatted() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(90), "1m30s");
        assert_eq!(go_duration(3725), "1h2m5s");
    }

    #[test]
    fn selectors_render_as_the_api_takes_them() {
        let s: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector =
            serde_json::from_value(json!({
            "matchLabels": {"app": "pg"},
            "matchExpressions": [{"key": "role", "operator": "In", "values": ["primary", "leader"]},
                                 {"key": "gone", "operator": "DoesNotExist"}]}))
            .unwrap();
        assert_eq!(selector_string(&s), "app=pg,role in (primary,leader),!gone");
    }

    #[test]
    fn job_outcomes_read_the_conditions() {
        let job = |conds: Value| -> Job {
            serde_json::from_value(
                json!({"metadata": {"name": "j"}, "status": {"conditions": conds}}),
            )
            .unwrap()
        };
        assert_eq!(job_outcome(&job(json!([]))), None);
        assert_eq!(
            job_outcome(&job(json!([{"type": "Complete", "status": "True"}]))),
            Some(Ok(()))
        );
        assert_eq!(
            job_outcome(&job(
                json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit"}])
            )),
            Some(Err(
                "BackoffLimitExceeded: Job has reached the specified backoff limit".into()
            ))
        );
    }

    #[test]
    fn method_targets_win_over_the_policys() {
        let policy: BackupPolicy = serde_json::from_value(
            json!({"apiVersion": "dataprotection.kubeblocks.io/v1alpha1",
            "kind": "BackupPolicy", "metadata": {"name": "p", "namespace": "n"},
            "spec": {"target": {"name": "policy"}, "backupMethods": [
                {"name": "a"}, {"name": "b", "targets": [{"name": "t1"}, {"name": "t2"}]}]}}),
        )
        .unwrap();
        let names = |m: usize| -> Vec<String> {
            targets_of(&policy, &policy.spec.backup_methods[m])
                .into_iter()
                .map(|t| t.name.unwrap())
                .collect()
        };
        assert_eq!(names(0), ["policy"]);
        assert_eq!(names(1), ["t1", "t2"]);
    }
}
