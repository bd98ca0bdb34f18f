//! Restore: KubeBlocks' flow (CONTROLLER.md section 2, "Restore"), the decisions in
//! [`super::restore_plan`], the Jobs in [`crate::builder::restore`].
//!
//! One reconcile, by phase:
//! - unset: `CheckBackupRepo`: the backup exists; its repository exists and is Ready; its
//!   per-namespace objects exist in the Restore's namespace (else the Restore is labelled
//!   `backup-repo-name` + `wait-repo-preparation=true` and waits for the BackupRepo
//!   reconciler to make them); (dprepo) the tool Secret there holds the repository key.
//!   Then `dataSourceRef` means `AsDataSource`; otherwise `ValidationPassed` (the backup,
//!   its ActionSet, the chain or point-in-time base) decides `Running` or `Failed`.
//! - `Running`: validation again (the objects may have changed), then `prepareData` (per
//!   backup of the plan, in order: claims created when absent, one Job per replica,
//!   Parallel or Serial, the managers stopped once every restore container of the action
//!   ended), then `postReady` (per ActionSet step: Jobs on the target pod's node, or
//!   `kubectl exec` Jobs in the controller's namespace). Each Job is an action in
//!   `status.actions`; a failed action fails the stage and the Restore. All done:
//!   `Completed`, `duration`, event `RestoreCompleted`, Jobs deleted.
//! - `Completed`: leftover Jobs deleted. `Failed`: the Jobs stay for inspection.
//!
//! Deletion removes the Restore's Jobs (its namespace and the controller's), then the
//! finalizer. Restored claims are the user's and stay.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::json;

use super::restore_plan::{
    action_progress, base_candidate_selector, check_backup, incremental_chain, parse_restore_time,
    select_pitr_base, serial_jobs_allowed, set_action,
};
use super::worker::ensure_worker_service_account;
use super::{
    add_finalizer, create_if_absent, delete_background, from_time, is_true, patch_object,
    patch_status, remove_finalizer, set_condition, to_time, truncate,
};
use crate::api::actionset::{ActionSet, BackupType};
use crate::api::backup::Backup;
use crate::api::backuprepo::{AccessMethod, BackupRepo, BackupRepoPhase};
use crate::api::duration::{GoDuration, MetaDuration};
use crate::api::labels::{annotation, label, FINALIZER};
use crate::api::restore::{
    condition, Restore, RestoreActionStatus, RestorePhase, RestoreStatus, RestoreStatusAction,
    RestoreStatusActions, VolumeClaimRestorePolicy,
};
use crate::builder::datasafed::{RepoMount, PASSWORD_KEY};
use crate::builder::restore::{
    action_name, claim_pvc, claim_volume, claims_for_index, post_ready_job_name,
    prepare_data_job_count, prepare_data_job_name, restore_env, restore_job, source_target_pod,
    status_target, target_pod_env, BackupSet, RestoreJobInputs, Stage, EMPTY_VOLUME_MARKER,
    MANAGER_CONTAINER, RESTORE_CONTAINER,
};
use crate::context::Context;
use crate::error::{Error, KubeResultExt, Result};

/// How often a Running Restore is looked at besides its Jobs' and pods' events.
pub const RUNNING_REQUEUE: Duration = Duration::from_secs(5);
/// How often a Restore waiting for its repository to become Ready is looked at.
pub const REPO_NOT_READY_REQUEUE: Duration = Duration::from_secs(30);
/// The longest failure message taken from a pod.
pub const MAX_POD_MESSAGE: usize = 2048;

/// Condition reasons (KubeBlocks').
pub mod reason {
    /// The repository is usable.
    pub const CHECK_BACKUP_REPO_SUCCESSFULLY: &str = "CheckBackupRepoSuccessfully";
    /// The repository (or the backup) is missing or unusable.
    pub const CHECK_BACKUP_REPO_FAILED: &str = "CheckBackupRepoFailed";
    /// The repository's objects are not in the Restore's namespace yet.
    pub const WAIT_FOR_BACKUP_REPO: &str = "WaitForBackupRepo";
    /// The repository is not Ready (dprepo's name; KubeBlocks reports an unknown error).
    pub const BACKUP_REPO_NOT_READY: &str = "BackupRepoNotReady";
    /// Validation passed.
    pub const VALIDATE_SUCCESSFULLY: &str = "ValidateSuccessfully";
    /// Validation failed.
    pub const VALIDATE_FAILED: &str = "ValidateFailed";
    /// A stage runs.
    pub const PROCESSING: &str = "Processing";
    /// A stage failed.
    pub const FAILED: &str = "Failed";
    /// A stage succeeded.
    pub const SUCCEED: &str = "Succeed";
}

/// Events (KubeBlocks' reasons).
pub mod event {
    /// Validation passed; the restore starts.
    pub const RESTORE_STARTING: &str = "RestoreStarting";
    /// The restore completed.
    pub const RESTORE_COMPLETED: &str = "RestoreCompleted";
    /// The restore failed.
    pub const RESTORE_FAILED: &str = "RestoreFailed";
    /// Validation failed.
    pub const VALIDATE_FAILED: &str = "ValidateFailed";
    /// A restore Job was created.
    pub const CREATE_RESTORE_JOB: &str = "CreateRestoreJob";
    /// A restored claim was created.
    pub const CREATE_RESTORE_PVC: &str = "CreateRestorePVC";
}

/// What the restore stops on: a reason that only a change of the objects can mend.
struct Fatal(String);

type Outcome<T> = std::result::Result<T, Fatal>;

/// The backups a Restore restores, per stage, in order.
struct Plan {
    prepare: Vec<BackupSet>,
    post: Vec<BackupSet>,
}

struct Run<'a> {
    ctx: &'a Context,
    api: Api<Restore>,
    restore: Restore,
    status: RestoreStatus,
    name: String,
    ns: String,
}

fn now(ctx: &Context) -> chrono::DateTime<chrono::Utc> {
    ctx.clock.now()
}

impl<'a> Run<'a> {
    fn generation(&self) -> Option<i64> {
        self.restore.metadata.generation
    }

    fn condition(&mut self, type_: &str, status: &str, reason: &str, message: &str) {
        let now = now(self.ctx);
        let generation = self.generation();
        let conditions = self.status.conditions.get_or_insert_with(Vec::new);
        set_condition(conditions, type_, status, reason, message, generation, now);
    }

    fn conditions(&self) -> &[Condition] {
        self.status.conditions.as_deref().unwrap_or(&[])
    }

    async fn write_status(&mut self) -> Result<()> {
        if self.restore.status.as_ref() == Some(&self.status) {
            return Ok(());
        }
        let updated = patch_status(
            &self.api,
            &self.name,
            self.restore.metadata.resource_version.as_deref(),
            &self.status,
        )
        .await?;
        self.restore = updated;
        Ok(())
    }

    /// Fails the Restore with `message` (phase, times, event).
    async fn fail(&mut self, message: &str) -> Result<Action> {
        let now = now(self.ctx);
        self.status.phase = Some(RestorePhase::Failed);
        self.status.completion_timestamp = Some(to_time(now));
        self.set_duration();
        self.write_status().await?;
        self.ctx
            .event(
                &self.restore,
                EventType::Warning,
                event::RESTORE_FAILED,
                message,
            )
            .await;
        Ok(Action::await_change())
    }

    fn set_duration(&mut self) {
        if let (Some(start), Some(end)) = (
            self.status.start_timestamp.as_ref(),
            self.status.completion_timestamp.as_ref(),
        ) {
            let secs = (from_time(end) - from_time(start)).num_seconds().max(0);
            self.status.duration = Some(MetaDuration::from(GoDuration::from_secs(secs)));
        }
    }

    async fn get_backup(&self, ns: &str, name: &str) -> Result<Option<Backup>> {
        let api: Api<Backup> = Api::namespaced(self.ctx.client.clone(), ns);
        api.get_opt(name)
            .await
            .during(|| format!("get Backup {ns}/{name}"))
    }

    async fn get_action_set(&self, backup: &Backup) -> Result<Outcome<ActionSet>> {
        let bname = backup.metadata.name.as_deref().unwrap_or("");
        let Some(name) = backup
            .status
            .as_ref()
            .and_then(|s| s.backup_method.as_ref())
            .and_then(|m| m.action_set_name.clone())
            .filter(|n| !n.is_empty())
        else {
            let snapshots = backup
                .status
                .as_ref()
                .and_then(|s| s.backup_method.as_ref())
                .is_some_and(|m| m.snapshot_volumes == Some(true));
            if snapshots {
                // Restored from its volume snapshots (see `snapshot`): no steps.
                let spec = serde_json::from_value(json!({ "backupType": "Full" }))
                    .map_err(|e| Error::Other(format!("an empty ActionSet: {e}")))?;
                return Ok(Ok(ActionSet::new("", spec)));
            }
            return Ok(Err(Fatal(format!(
                "backup \"{bname}\" names no ActionSet (status.backupMethod.actionSetName) and took no volume snapshots"
            ))));
        };
        let api: Api<ActionSet> = Api::all(self.ctx.client.clone());
        match api
            .get_opt(&name)
            .await
            .during(|| format!("get ActionSet {name}"))?
        {
            Some(a) => Ok(Ok(a)),
            None => Ok(Err(Fatal(format!(
                "ActionSet \"{name}\" of backup \"{bname}\" not found"
            )))),
        }
    }

    /// The repository check of a new Restore. `Ok(None)`: go on; `Ok(Some(action))`: stop
    /// here (waiting, or failed).
    async fn check_repo(&mut self) -> Result<Option<Action>> {
        let spec = self.restore.spec.backup.clone();
        let Some(backup) = self.get_backup(&spec.namespace, &spec.name).await? else {
            let msg = format!("backup {}/{} not found", spec.namespace, spec.name);
            self.condition(
                condition::CHECK_BACKUP_REPO,
                "False",
                reason::CHECK_BACKUP_REPO_FAILED,
                &msg,
            );
            return self.fail(&msg).await.map(Some);
        };
        let Some(repo_name) = backup
            .status
            .as_ref()
            .and_then(|s| s.backup_repo_name.clone())
            .filter(|n| !n.is_empty())
        else {
            self.condition(
                condition::CHECK_BACKUP_REPO,
                "True",
                reason::CHECK_BACKUP_REPO_SUCCESSFULLY,
                "",
            );
            return Ok(None);
        };
        let repos: Api<BackupRepo> = Api::all(self.ctx.client.clone());
        let Some(repo) = repos
            .get_opt(&repo_name)
            .await
            .during(|| format!("get BackupRepo {repo_name}"))?
        else {
            let msg = format!("backup repo {repo_name} not found");
            self.condition(
                condition::CHECK_BACKUP_REPO,
                "False",
                reason::CHECK_BACKUP_REPO_FAILED,
                &msg,
            );
            return self.fail(&msg).await.map(Some);
        };
        let status = repo.status.clone().unwrap_or_default();
        if status.phase != Some(BackupRepoPhase::Ready) {
            let msg = format!(
                "backup repo {repo_name} is not Ready (phase {})",
                status.phase.map(|p| p.as_str()).unwrap_or("unset")
            );
            self.condition(
                condition::CHECK_BACKUP_REPO,
                "False",
                reason::BACKUP_REPO_NOT_READY,
                &msg,
            );
            self.write_status().await?;
            return Ok(Some(Action::requeue(REPO_NOT_READY_REQUEUE)));
        }
        let ns = self.ns.clone();
        let secret_name = status.tool_config_secret_name.clone().unwrap_or_default();
        let pvc_name = status.backup_pvc_name.clone().unwrap_or_default();
        let missing_field = match repo.access_method() {
            AccessMethod::Mount if pvc_name.is_empty() => Some("backupPVCName"),
            _ if secret_name.is_empty() => Some("toolConfigSecretName"),
            _ => None,
        };
        if let Some(field) = missing_field {
            let msg = format!("{field} is empty in BackupRepo {repo_name}");
            self.condition(
                condition::CHECK_BACKUP_REPO,
                "False",
                reason::CHECK_BACKUP_REPO_FAILED,
                &msg,
            );
            return self.fail(&msg).await.map(Some);
        }
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &ns);
        let secret = secrets
            .get_opt(&secret_name)
            .await
            .during(|| format!("get Secret {ns}/{secret_name}"))?;
        let pvc_present = match repo.access_method() {
            AccessMethod::Mount => {
                let pvcs: Api<PersistentVolumeClaim> =
                    Api::namespaced(self.ctx.client.clone(), &ns);
                pvcs.get_opt(&pvc_name)
                    .await
                    .during(|| format!("get PersistentVolumeClaim {ns}/{pvc_name}"))?
                    .is_some()
            }
            AccessMethod::Tool => true,
        };
        let Some(secret) = secret.filter(|_| pvc_present) else {
            let msg = format!("backup repo {repo_name} is not ready in the namespace {ns}");
            self.condition(
                condition::CHECK_BACKUP_REPO,
                "False",
                reason::WAIT_FOR_BACKUP_REPO,
                &msg,
            );
            self.write_status().await?;
            let labels = self.restore.metadata.labels.clone().unwrap_or_default();
            if labels.get(label::WAIT_REPO_PREPARATION).map(String::as_str) != Some("true")
                || labels.get(label::BACKUP_REPO_NAME) != Some(&repo_name)
            {
                let updated = patch_object(
                    &self.api,
                    &self.name,
                    self.restore.metadata.resource_version.as_deref(),
                    json!({"metadata": {"labels": {
                        label::BACKUP_REPO_NAME: repo_name,
                        label::WAIT_REPO_PREPARATION: "true",
                    }}}),
                )
                .await?;
                self.restore = updated;
            }
            // The BackupRepo reconciler drops the label once the objects exist, which
            // brings this Restore back.
            return Ok(Some(Action::await_change()));
        };
        let has_key = secret
            .data
            .as_ref()
            .and_then(|d| d.get(PASSWORD_KEY))
            .is_some_and(|v| !v.0.is_empty())
            || secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(PASSWORD_KEY))
                .is_some_and(|v| !v.is_empty());
        if !has_key {
            let msg = format!(
                "the repository key is missing: Secret {ns}/{secret_name} (the tool Secret of BackupRepo {repo_name}) has no {PASSWORD_KEY} key, so the backup cannot be read; check the repository key of the BackupRepo (its credential's dprepoPassword, the dprepo.io/key-secret annotation, or the generated Secret {}/{})",
                self.ctx.config.namespace,
                crate::builder::names::key_secret_name(&repo_name)
            );
            self.condition(
                condition::CHECK_BACKUP_REPO,
                "False",
                reason::CHECK_BACKUP_REPO_FAILED,
                &msg,
            );
            return self.fail(&msg).await.map(Some);
        }
        self.condition(
            condition::CHECK_BACKUP_REPO,
            "True",
            reason::CHECK_BACKUP_REPO_SUCCESSFULLY,
            "",
        );
        Ok(None)
    }

    /// Resolves the backups to restore (validation).
    async fn plan(&self) -> Result<Outcome<Plan>> {
        let spec = &self.restore.spec;
        let bref = &spec.backup;
        let Some(backup) = self.get_backup(&bref.namespace, &bref.name).await? else {
            return Ok(Err(Fatal(format!(
                "backup {}/{} not found",
                bref.namespace, bref.name
            ))));
        };
        let action_set = match self.get_action_set(&backup).await? {
            Ok(a) => a,
            Err(f) => return Ok(Err(f)),
        };
        let backup_type = action_set.spec.backup_type;
        if let Err(m) = check_backup(&backup, backup_type) {
            return Ok(Err(Fatal(m)));
        }
        if let Some(t) = spec.restore_time.as_deref() {
            if let Err(m) = parse_restore_time(t) {
                return Ok(Err(Fatal(m)));
            }
        }
        let sets = match backup_type {
            BackupType::Full | BackupType::Selective => vec![BackupSet {
                backup,
                action_set,
                base: None,
                ancestors: Vec::new(),
            }],
            BackupType::Incremental => {
                let api: Api<Backup> = Api::namespaced(self.ctx.client.clone(), &bref.namespace);
                // Fetch the chain first (async), then decide (pure).
                let mut known: BTreeMap<String, (Backup, BackupType)> = BTreeMap::new();
                let mut next = backup
                    .status
                    .as_ref()
                    .and_then(|s| s.parent_backup_name.clone())
                    .or_else(|| backup.spec.parent_backup_name.clone());
                while let Some(parent) = next.take().filter(|p| !known.contains_key(p)) {
                    let Some(b) = api
                        .get_opt(&parent)
                        .await
                        .during(|| format!("get Backup {}/{parent}", bref.namespace))?
                    else {
                        break;
                    };
                    let t = match self.get_action_set(&b).await? {
                        Ok(a) => a.spec.backup_type,
                        Err(f) => return Ok(Err(f)),
                    };
                    if t == BackupType::Incremental {
                        next = b
                            .status
                            .as_ref()
                            .and_then(|s| s.parent_backup_name.clone())
                            .or_else(|| b.spec.parent_backup_name.clone());
                    }
                    known.insert(parent, (b, t));
                    if known.len() > 1000 {
                        break;
                    }
                }
                match incremental_chain(&backup, |n| known.get(n).cloned()) {
                    Ok((base, ancestors)) => vec![BackupSet {
                        backup,
                        action_set,
                        base: Some(base),
                        ancestors,
                    }],
                    Err(m) => return Ok(Err(Fatal(m))),
                }
            }
            BackupType::Continuous => {
                let Some(time) = spec.restore_time.as_deref() else {
                    return Ok(Err(Fatal(format!(
                        "backup \"{}\" is Continuous: spec.restoreTime is required to restore it",
                        bref.name
                    ))));
                };
                let time = match parse_restore_time(time) {
                    Ok(t) => t,
                    Err(m) => return Ok(Err(Fatal(m))),
                };
                let api: Api<Backup> = Api::namespaced(self.ctx.client.clone(), &bref.namespace);
                let selector = base_candidate_selector(&backup);
                let fulls = api
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .during(|| format!("list Backups {selector}"))?
                    .items;
                let base_required = action_set
                    .spec
                    .restore
                    .as_ref()
                    .and_then(|r| r.base_backup_required)
                    != Some(false);
                let base = match select_pitr_base(time, &backup, &fulls, base_required) {
                    Ok(b) => b.cloned(),
                    Err(m) => return Ok(Err(Fatal(m))),
                };
                match base {
                    None => vec![BackupSet {
                        backup,
                        action_set,
                        base: None,
                        ancestors: Vec::new(),
                    }],
                    Some(base) => {
                        let base_set = match self.get_action_set(&base).await? {
                            Ok(a) => a,
                            Err(f) => return Ok(Err(f)),
                        };
                        vec![
                            BackupSet {
                                backup: base.clone(),
                                action_set: base_set,
                                base: None,
                                ancestors: Vec::new(),
                            },
                            BackupSet {
                                backup,
                                action_set,
                                base: Some(base),
                                ancestors: Vec::new(),
                            },
                        ]
                    }
                }
            }
            BackupType::Differential => {
                return Ok(Err(Fatal("Differential backups are not supported".into())))
            }
        };
        Ok(Ok(Plan {
            prepare: sets
                .iter()
                .filter(|s| s.action_set.has_prepare_data_stage())
                .cloned()
                .collect(),
            post: sets
                .into_iter()
                .filter(|s| s.action_set.has_post_ready_stage())
                .collect(),
        }))
    }

    /// Validation, with its condition (and event when it fails).
    async fn validate(&mut self) -> Result<Outcome<Plan>> {
        match self.plan().await? {
            Ok(p) => {
                self.condition(
                    condition::VALIDATION_PASSED,
                    "True",
                    reason::VALIDATE_SUCCESSFULLY,
                    "validate restore spec successfully",
                );
                Ok(Ok(p))
            }
            Err(Fatal(m)) => {
                self.condition(
                    condition::VALIDATION_PASSED,
                    "False",
                    reason::VALIDATE_FAILED,
                    &m,
                );
                self.ctx
                    .event(
                        &self.restore,
                        EventType::Warning,
                        event::VALIDATE_FAILED,
                        m.clone(),
                    )
                    .await;
                Ok(Err(Fatal(m)))
            }
        }
    }

    async fn repo_mount(&self, set: &BackupSet) -> Result<Outcome<Option<RepoMount>>> {
        let Some(repo_name) = set
            .backup
            .status
            .as_ref()
            .and_then(|s| s.backup_repo_name.clone())
            .filter(|n| !n.is_empty())
        else {
            return Ok(Err(Fatal(format!(
                "backup {} has no backup repository",
                set.name()
            ))));
        };
        let repos: Api<BackupRepo> = Api::all(self.ctx.client.clone());
        let Some(repo) = repos
            .get_opt(&repo_name)
            .await
            .during(|| format!("get BackupRepo {repo_name}"))?
        else {
            return Ok(Err(Fatal(format!("backup repo {repo_name} not found"))));
        };
        let status = repo.status.clone().unwrap_or_default();
        Ok(Ok(Some(RepoMount {
            access: repo.access_method(),
            pvc_name: status.backup_pvc_name.unwrap_or_default(),
            secret_name: status.tool_config_secret_name.unwrap_or_default(),
        })))
    }

    fn actions(&mut self, stage: Stage) -> &mut Vec<RestoreStatusAction> {
        let actions = self
            .status
            .actions
            .get_or_insert_with(RestoreStatusActions::default);
        match stage {
            Stage::PrepareData => actions.prepare_data.get_or_insert_with(Vec::new),
            Stage::PostReady => actions.post_ready.get_or_insert_with(Vec::new),
        }
    }

    fn recorded(&self, stage: Stage) -> Vec<RestoreStatusAction> {
        let a = self.status.actions.clone().unwrap_or_default();
        match stage {
            Stage::PrepareData => a.prepare_data,
            Stage::PostReady => a.post_ready,
        }
        .unwrap_or_default()
    }

    async fn service_account(&self) -> Result<String> {
        match self
            .restore
            .spec
            .service_account_name
            .clone()
            .filter(|s| !s.is_empty())
        {
            Some(sa) => Ok(sa),
            None => ensure_worker_service_account(self.ctx, &self.ns).await,
        }
    }

    /// Deletes the Restore's Jobs (its namespace and the controller's).
    async fn delete_jobs(&self) -> Result<()> {
        let mut namespaces = vec![self.ns.clone()];
        if self.ctx.config.namespace != self.ns {
            namespaces.push(self.ctx.config.namespace.clone());
        }
        for ns in namespaces {
            let api: Api<Job> = Api::namespaced(self.ctx.client.clone(), &ns);
            let selector = format!("{}={}", label::RESTORE, self.name);
            let jobs = api
                .list(&ListParams::default().labels(&selector))
                .await
                .during(|| format!("list the Jobs of Restore {}/{}", self.ns, self.name))?;
            for j in jobs.items {
                let restore_ns = j
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(label::RESTORE_NAMESPACE))
                    .cloned();
                if ns != self.ns && restore_ns.as_deref() != Some(self.ns.as_str()) {
                    continue;
                }
                delete_background(&api, j.metadata.name.as_deref().unwrap_or("")).await?;
            }
        }
        self.delete_exec_secrets().await
    }

    async fn new_restore(&mut self) -> Result<Action> {
        if let Some(action) = self.check_repo().await? {
            return Ok(action);
        }
        if self
            .restore
            .spec
            .prepare_data_config
            .as_ref()
            .is_some_and(|c| c.data_source_ref.is_some())
        {
            self.status.phase = Some(RestorePhase::AsDataSource);
            self.write_status().await?;
            return Ok(Action::await_change());
        }
        match self.validate().await? {
            Err(Fatal(m)) => self.fail(&m).await,
            Ok(_) => {
                self.status.phase = Some(RestorePhase::Running);
                self.status.start_timestamp = Some(to_time(now(self.ctx)));
                self.write_status().await?;
                self.ctx
                    .event(
                        &self.restore,
                        EventType::Normal,
                        event::RESTORE_STARTING,
                        "start to restore",
                    )
                    .await;
                Ok(Action::requeue(Duration::from_millis(100)))
            }
        }
    }

    async fn running(&mut self) -> Result<Action> {
        let plan = match self.validate().await? {
            Ok(p) => p,
            Err(Fatal(m)) => return self.fail(&m).await,
        };
        match self.restore_snapshots(&plan).await? {
            Err(Fatal(m)) => return self.fail(&m).await,
            Ok(false) => {
                self.write_status().await?;
                return Ok(Action::requeue(RUNNING_REQUEUE));
            }
            Ok(true) => {}
        }
        let sa = self.service_account().await?;
        match self.prepare_data(&plan, &sa).await? {
            Err(Fatal(m)) => return self.fail(&m).await,
            Ok(false) => {
                self.write_status().await?;
                return Ok(Action::requeue(RUNNING_REQUEUE));
            }
            Ok(true) => {}
        }
        match self.post_ready(&plan).await? {
            Err(Fatal(m)) => return self.fail(&m).await,
            Ok(false) => {
                self.write_status().await?;
                return Ok(Action::requeue(RUNNING_REQUEUE));
            }
            Ok(true) => {}
        }
        self.status.phase = Some(RestorePhase::Completed);
        self.status.completion_timestamp = Some(to_time(now(self.ctx)));
        self.set_duration();
        self.write_status().await?;
        self.ctx
            .event(
                &self.restore,
                EventType::Normal,
                event::RESTORE_COMPLETED,
                "restore completed.",
            )
            .await;
        self.delete_jobs().await?;
        Ok(Action::await_change())
    }
}

/// The state of one restore Job as the Restore sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Still running; `restore_ended` once its restore container exited 0.
    Running {
        /// The restore container exited 0 (the pod waits for its manager).
        restore_ended: bool,
    },
    /// Complete.
    Completed,
    /// Failed, with the reason (the pods' termination messages when they have one).
    Failed(String),
}

fn container_exit(pod: &Pod, container: &str) -> Option<(i32, String)> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == container)?
        .state
        .as_ref()?
        .terminated
        .as_ref()
        .map(|t| (t.exit_code, t.message.clone().unwrap_or_default()))
}

/// Decides a Job's state from it and its pods: the Job's conditions first; a manager
/// that found an empty claim fails the Job at once (another attempt would write nothing
/// again); a failure message names the restore container's exit and log tail.
pub fn job_state(job: &Job, pods: &[Pod]) -> JobState {
    let jname = job.metadata.name.clone().unwrap_or_default();
    for pod in pods {
        if let Some((code, msg)) = container_exit(pod, MANAGER_CONTAINER) {
            if code != 0 && msg.contains(EMPTY_VOLUME_MARKER) {
                return JobState::Failed(format!(
                    "\"Job/{jname}\" failed: {}",
                    truncate(msg.trim(), MAX_POD_MESSAGE)
                ));
            }
        }
    }
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let has = |t: &str| {
        conditions
            .iter()
            .any(|c| c.type_ == t && c.status == "True")
    };
    if has("Complete") {
        return JobState::Completed;
    }
    if has("Failed") || has("FailureTarget") {
        let reason = conditions
            .iter()
            .find(|c| (c.type_ == "Failed" || c.type_ == "FailureTarget") && c.status == "True")
            .map(|c| {
                format!(
                    "{}: {}",
                    c.reason.clone().unwrap_or_default(),
                    c.message.clone().unwrap_or_default()
                )
            })
            .unwrap_or_default();
        let container = pods
            .iter()
            .filter_map(|p| container_exit(p, RESTORE_CONTAINER))
            .find(|(code, _)| *code != 0)
            .map(|(code, msg)| {
                format!(
                    "; the restore container exited {code}: {}",
                    truncate(msg.trim(), MAX_POD_MESSAGE)
                )
            })
            .unwrap_or_default();
        return JobState::Failed(format!("\"Job/{jname}\" failed ({reason}){container}"));
    }
    let restore_ended = pods
        .iter()
        .any(|p| container_exit(p, RESTORE_CONTAINER).is_some_and(|(c, _)| c == 0));
    JobState::Running { restore_ended }
}

/// A label selector as list-parameter text (`matchLabels` and `matchExpressions`).
pub fn selector_text(s: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector) -> String {
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
            _ => format!("!{}", e.key),
        });
    }
    parts.join(",")
}

/// Reconciles one Restore.
///
/// # Errors
/// API errors (transient). Everything wrong with the Restore or what it refers to ends
/// in phase `Failed` with the reason in a condition and an event, not in an error.
pub async fn reconcile(restore: Arc<Restore>, ctx: Arc<Context>) -> Result<Action> {
    let ns = restore.metadata.namespace.clone().unwrap_or_default();
    let name = restore.metadata.name.clone().unwrap_or_default();
    let api: Api<Restore> = Api::namespaced(ctx.client.clone(), &ns);
    let mut run = Run {
        ctx: &ctx,
        api: api.clone(),
        restore: restore.as_ref().clone(),
        status: restore.status.clone().unwrap_or_default(),
        name,
        ns,
    };
    if restore.metadata.deletion_timestamp.is_some() {
        run.delete_jobs().await?;
        remove_finalizer(&api, restore.as_ref(), FINALIZER).await?;
        return Ok(Action::await_change());
    }
    if !restore
        .metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == FINALIZER)
    {
        run.restore = add_finalizer(&api, restore.as_ref(), FINALIZER).await?;
    }
    let managed = run
        .restore
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(label::MANAGED_BY))
        .is_some();
    if !managed {
        run.restore = patch_object(
            &api,
            &run.name,
            run.restore.metadata.resource_version.as_deref(),
            json!({"metadata": {"labels": {label::MANAGED_BY: label::MANAGED_BY_VALUE}}}),
        )
        .await?;
    }
    match run.status.phase {
        None => run.new_restore().await,
        Some(RestorePhase::Running) => run.running().await,
        Some(RestorePhase::Completed) => {
            run.delete_jobs().await?;
            Ok(Action::await_change())
        }
        Some(RestorePhase::Failed) | Some(RestorePhase::AsDataSource) => Ok(Action::await_change()),
    }
}

mod exec;
mod snapshot;
mod stages;

#[cfg(test)]
mod tests;
