//! Running a Continuous backup (KubeBlocks' `StatefulSetAction` and the continuous parts
//! of its Backup controller): the ActionSet's backupData is a long-lived archiver run by a
//! StatefulSet ([`crate::builder::backup_job::statefulset`]), and the Backup stays
//! `Running` while the archiver's `manager` sidecar reports `totalSize` and `timeRange`
//! into its status.
//!
//! Each reconcile of a Running (or Failed, once started) Continuous Backup:
//! 1. made by a BackupSchedule (label `backup-schedule`) whose schedule of this method is
//!    no longer enabled, or which is gone: the Backup is `Completed` (completion time,
//!    duration, expiration from completion; actions Completed with no replicas), and the
//!    Completed phase deletes the StatefulSet (KubeBlocks' `checkIsCompletedDuringRunning`;
//!    re-enabling the schedule sets it Running again, which starts a new one);
//! 2. per target, the StatefulSet of its first selected pod is created when absent (also
//!    after someone deleted it: self-healing), rewritten when what would be built changed
//!    (a digest annotation; the replica count back to 1), or, when being deleted, let go
//!    (our finalizer removed) so the next reconcile makes a new one. A selected pod that
//!    is gone is replaced by a running pod of the target's selector; none: the
//!    StatefulSet is scaled to 0 and the Backup fails;
//! 3. the action is `Running` with `availableReplicas`, or `Failed` when a container of
//!    pod `<name>-0` failed and has not been ready for [`FAILED_POD_TIMEOUT`]
//!    (KubeBlocks' rule); then the Backup is `Failed` (and, as in KubeBlocks, is looked
//!    at again: a healthy archiver sets it back to `Running`);
//! 4. `expiration`, `completionTimestamp` and `duration` are cleared while Running: a
//!    running Continuous backup never expires (KubeBlocks' `SetExpirationTime`).
//!
//! The Backup may be created directly as well as by a schedule (KubeBlocks requires a
//! schedule); it then runs until it is deleted. preBackup and postBackup steps of a
//! Continuous ActionSet are refused with a reason (postBackup could never run).

use k8s_openapi::api::apps::v1::StatefulSet;

use super::*;
use crate::api::backupschedule::BackupSchedule;
use crate::builder::backup_job::statefulset::{
    backup_statefulset, continuous_env, statefulset_name, SPEC_HASH_ANNOTATION,
};

/// How long a failed archiver container may stay not ready before the action fails
/// (KubeBlocks' `PodContainerFailedTimeout`).
pub const FAILED_POD_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `b` is a Continuous backup (its `backup-type` label, set in New).
pub fn is_continuous(b: &Backup) -> bool {
    label_of(b, label::BACKUP_TYPE) == Some(BackupType::Continuous.as_str())
}

/// Why pod `pod` counts as failed: a container terminated with a non-zero code or waiting
/// with a message, and the pod not ready for longer than [`FAILED_POD_TIMEOUT`] at `now`.
pub fn pod_failure(pod: &Pod, now: chrono::DateTime<chrono::Utc>) -> Option<String> {
    let status = pod.status.as_ref()?;
    let failed = |list: Option<&Vec<k8s_openapi::api::core::v1::ContainerStatus>>| {
        list.into_iter().flatten().find_map(|c| {
            let state = c.state.as_ref()?;
            if let Some(w) = state
                .waiting
                .as_ref()
                .filter(|w| w.message.as_deref().is_some_and(|m| !m.is_empty()))
            {
                return Some(format!(
                    "container {} waiting: {}",
                    c.name,
                    w.message.clone().unwrap_or_default()
                ));
            }
            let t = state.terminated.as_ref().filter(|t| t.exit_code != 0)?;
            Some(format!(
                "container {} exited with code {}{}",
                c.name,
                t.exit_code,
                t.message
                    .as_deref()
                    .filter(|m| !m.is_empty())
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ))
        })
    };
    let (why, condition) = match failed(status.init_container_statuses.as_ref()) {
        Some(w) => (w, "Initialized"),
        None => (
            failed(status.container_statuses.as_ref())?,
            "ContainersReady",
        ),
    };
    let since = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == condition)
        .and_then(|c| c.last_transition_time.as_ref())
        .map(from_time)?;
    let timeout = chrono::TimeDelta::from_std(FAILED_POD_TIMEOUT).ok()?;
    (now > since + timeout).then_some(why)
}

impl Reconciler<'_> {
    /// The cron expression of the schedule that made this Backup, and whether that
    /// schedule still runs this method (`None`: not made by a schedule).
    async fn schedule_state(&self) -> Result<Option<(bool, Option<String>)>> {
        let Some(name) = label_of(self.b, label::BACKUP_SCHEDULE) else {
            return Ok(None);
        };
        let api: Api<BackupSchedule> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let Some(schedule) = api
            .get_opt(name)
            .await
            .during(|| format!("get BackupSchedule {}/{name}", self.ns))?
        else {
            return Ok(Some((false, None)));
        };
        let sp = schedule
            .spec
            .schedules
            .iter()
            .find(|p| p.backup_method == self.b.spec.backup_method);
        Ok(Some((
            sp.is_some_and(|p| p.is_enabled()),
            sp.map(|p| p.cron_expression.clone()),
        )))
    }

    /// The schedule stopped: Completed, as KubeBlocks' `checkIsCompletedDuringRunning`.
    async fn complete_continuous(&self) -> Result<Action> {
        let now = self.ctx.clock.now();
        let start = self
            .b
            .status
            .as_ref()
            .and_then(|s| s.start_timestamp.as_ref())
            .map(from_time);
        let mut actions = self
            .b
            .status
            .as_ref()
            .and_then(|s| s.actions.clone())
            .unwrap_or_default();
        for a in &mut actions {
            a.phase = Some(ActionPhase::Completed);
            a.available_replicas = Some(0);
            a.completion_timestamp = Some(to_time(now));
        }
        let mut status = json!({
            "phase": "Completed",
            "completionTimestamp": to_time(now),
            "failureReason": null,
            "actions": actions,
        });
        if let Some(s) = start {
            status["duration"] = json!(go_duration((now - s).num_seconds()));
        }
        if let Some(e) = expiration(self.b, BackupPhase::Completed, Some(now)) {
            status["expiration"] = json!(e.map(to_time));
        }
        patch_status(&self.api, &self.name, None, &status).await?;
        self.ctx
            .event(
                self.b,
                EventType::Normal,
                "CreatedBackup",
                "Completed continuous backup: its schedule no longer runs it",
            )
            .await;
        self.ctx.metrics.backup_phase("Completed", None, None);
        tracing::info!(namespace = %self.ns, backup = %self.name, "continuous backup completed");
        Ok(Action::requeue(Duration::from_secs(1)))
    }

    pub(super) async fn running_continuous(&self) -> Result<Action> {
        let schedule = self.schedule_state().await?;
        if let Some((false, _)) = schedule {
            return self.complete_continuous().await;
        }
        let cron = schedule.and_then(|(_, c)| c);
        let mut actions: Vec<ActionStatus> = self
            .b
            .status
            .as_ref()
            .and_then(|s| s.actions.clone())
            .unwrap_or_default();
        match self.run_statefulsets(&mut actions, cron.as_deref()).await? {
            Step::Ok(failed) => {
                let failed_reason = actions
                    .iter()
                    .find(|a| a.phase == Some(ActionPhase::Failed))
                    .and_then(|a| a.failure_reason.clone());
                if failed {
                    let reason = format!(
                        "there are failed actions, you can obtain the more information in the status.actions: {}",
                        failed_reason.unwrap_or_default()
                    );
                    if self.b.phase() == Some(BackupPhase::Failed) {
                        let body = json!({"actions": actions, "failureReason": reason});
                        patch_status(&self.api, &self.name, None, &body).await?;
                    } else {
                        self.fail(reason, Some(&actions)).await?;
                    }
                    return Ok(Action::requeue(RUNNING_INTERVAL));
                }
                let status = json!({
                    "phase": "Running",
                    "actions": actions,
                    "failureReason": null,
                    "completionTimestamp": null,
                    "duration": null,
                    "expiration": null,
                });
                // No resourceVersion: the manager sidecar patches the status too.
                patch_status(&self.api, &self.name, None, &status).await?;
                if self.b.phase() != Some(BackupPhase::Running) {
                    self.ctx.metrics.backup_phase("Running", None, None);
                }
                Ok(Action::requeue(RUNNING_INTERVAL))
            }
            Step::Fail(reason) => {
                if self.b.phase() == Some(BackupPhase::Failed) {
                    return Ok(Action::requeue(RUNNING_INTERVAL));
                }
                self.fail(reason, Some(&actions)).await?;
                Ok(Action::requeue(RUNNING_INTERVAL))
            }
        }
    }

    /// Brings each target's StatefulSet to what it should be; `Ok(true)` when an action
    /// failed.
    async fn run_statefulsets(
        &self,
        actions: &mut Vec<ActionStatus>,
        cron: Option<&str>,
    ) -> Result<Step<bool>> {
        let r = step!(self.resolve().await);
        let backup_spec = r.action_set.spec.backup.clone().unwrap_or_default();
        if backup_spec
            .pre_backup
            .as_ref()
            .is_some_and(|v| !v.is_empty())
            || backup_spec
                .post_backup
                .as_ref()
                .is_some_and(|v| !v.is_empty())
        {
            return Ok(Step::Fail(format!(
                "ActionSet {}: preBackup and postBackup steps of a Continuous backup are not supported",
                r.action_set.metadata.name.as_deref().unwrap_or("")
            )));
        }
        let status = self.b.status.clone().unwrap_or_default();
        let single = status.target.is_some();
        let mut targets: Vec<BackupStatusTarget> = status
            .target
            .clone()
            .into_iter()
            .chain(status.targets.clone().into_iter().flatten())
            .collect();
        let sa = ensure_worker_service_account(self.ctx, &self.ns).await?;
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let sets: Api<StatefulSet> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let retention = self
            .b
            .spec
            .retention_period
            .as_ref()
            .and_then(|r| r.to_duration().ok())
            .map_or(0, |d| d.as_secs());
        let env = continuous_env(cron, retention);
        let mut reselected = false;
        let mut failed = false;
        for t in &mut targets {
            let sts_name = statefulset_name(&self.name, t.target.name.as_deref());
            let first = t
                .selected_target_pods
                .as_ref()
                .and_then(|p| p.first().cloned());
            let mut pod = match &first {
                Some(n) => pods
                    .get_opt(n)
                    .await
                    .during(|| format!("get Pod {}/{n}", self.ns))?
                    .filter(|p| p.metadata.deletion_timestamp.is_none()),
                None => None,
            };
            if pod.is_none() {
                match self.select_pods(&t.target).await? {
                    Step::Ok(names) => {
                        let n = names[0].clone();
                        pod = pods
                            .get_opt(&n)
                            .await
                            .during(|| format!("get Pod {}/{n}", self.ns))?;
                        t.selected_target_pods = Some(names);
                        reselected = true;
                    }
                    Step::Fail(reason) => {
                        // No pod to archive from: stop the archiver, as KubeBlocks does.
                        self.scale_to_zero(&sets, &sts_name).await?;
                        return Ok(Step::Fail(reason));
                    }
                }
            }
            let Some(pod) = pod else {
                return Ok(Step::Fail(format!(
                    "the target pod of {} disappeared",
                    t.target.name.as_deref().unwrap_or("the target")
                )));
            };
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
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
                chain: None,
            };
            let action = backup_data_action_name(&t.target, 0);
            let slot = match actions
                .iter()
                .position(|a| a.name.as_deref() == Some(&action))
            {
                Some(i) => i,
                None => {
                    actions.push(ActionStatus {
                        name: Some(action.clone()),
                        phase: Some(ActionPhase::New),
                        action_type: Some(ActionType::StatefulSet),
                        ..Default::default()
                    });
                    actions.len() - 1
                }
            };
            let slot = &mut actions[slot];
            slot.target_pod_name = Some(pod_name);
            let built = match backup_statefulset(&inputs, &env, &self.ctx.config) {
                Ok(s) => s,
                Err(e) => {
                    slot.phase = Some(ActionPhase::Failed);
                    slot.failure_reason = Some(e.0.clone());
                    return Ok(Step::Fail(format!("action {action}: {}", e.0)));
                }
            };
            let Some(sts) = self.ensure_statefulset(&sets, built, slot).await? else {
                // Being replaced: the next reconcile makes the new one.
                continue;
            };
            slot.action_type = Some(ActionType::StatefulSet);
            slot.object_ref = Some(k8s_openapi::api::core::v1::ObjectReference {
                api_version: Some("apps/v1".into()),
                kind: Some("StatefulSet".into()),
                namespace: Some(self.ns.clone()),
                name: Some(sts_name.clone()),
                uid: sts.metadata.uid.clone(),
                ..Default::default()
            });
            if slot.start_timestamp.is_none() {
                slot.start_timestamp = sts.metadata.creation_timestamp.clone();
            }
            slot.completion_timestamp = None;
            slot.available_replicas = Some(
                sts.status
                    .as_ref()
                    .and_then(|s| s.available_replicas)
                    .unwrap_or(0),
            );
            let archiver = pods
                .get_opt(&format!("{sts_name}-0"))
                .await
                .during(|| format!("get Pod {}/{sts_name}-0", self.ns))?;
            match archiver.and_then(|p| pod_failure(&p, self.ctx.clock.now())) {
                Some(why) => {
                    slot.phase = Some(ActionPhase::Failed);
                    slot.failure_reason = Some(format!("pod {sts_name}-0 is not running: {why}"));
                    failed = true;
                }
                None => {
                    slot.phase = Some(ActionPhase::Running);
                    slot.failure_reason = None;
                }
            }
        }
        if reselected {
            let body = if single {
                json!({"target": targets[0]})
            } else {
                json!({"targets": targets})
            };
            patch_status(&self.api, &self.name, None, &body).await?;
        }
        Ok(Step::Ok(failed))
    }

    /// Creates `built` when absent, rewrites it when it differs, lets a StatefulSet being
    /// deleted go (`None`).
    async fn ensure_statefulset(
        &self,
        sets: &Api<StatefulSet>,
        built: StatefulSet,
        slot: &mut ActionStatus,
    ) -> Result<Option<StatefulSet>> {
        let name = built.metadata.name.clone().unwrap_or_default();
        let existing = sets
            .get_opt(&name)
            .await
            .during(|| format!("get StatefulSet {}/{name}", self.ns))?;
        let Some(existing) = existing else {
            let created = match sets.create(&PostParams::default(), &built).await {
                Ok(s) => s,
                Err(kube::Error::Api(s)) if s.code == 409 => sets
                    .get(&name)
                    .await
                    .during(|| format!("get StatefulSet {name}"))?,
                Err(e) => {
                    return Err(Error::kube(format!("create StatefulSet {name}"), e));
                }
            };
            slot.start_timestamp = created.metadata.creation_timestamp.clone();
            // One series per StatefulSet (one per target).
            self.ctx
                .event_related(
                    self.b,
                    &created,
                    EventType::Normal,
                    "CreatingStatefulSet",
                    format!("creating statefulset {}/{name}", self.ns),
                )
                .await;
            tracing::info!(namespace = %self.ns, backup = %self.name, statefulset = %name,
                "created the archiver's StatefulSet");
            return Ok(Some(created));
        };
        if existing.metadata.deletion_timestamp.is_some() {
            // Someone deleted it: let it go, and make it again once it is gone.
            remove_finalizer(sets, &existing, FINALIZER).await?;
            tracing::info!(namespace = %self.ns, backup = %self.name, statefulset = %name,
                "the archiver's StatefulSet is being deleted; it will be made again");
            return Ok(None);
        }
        let hash = |s: &StatefulSet| {
            s.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(SPEC_HASH_ANNOTATION).cloned())
        };
        let replicas = existing.spec.as_ref().and_then(|s| s.replicas);
        let selector_fits = existing
            .spec
            .as_ref()
            .and_then(|s| s.selector.match_labels.as_ref())
            .is_some_and(|sel| {
                let labels = built.metadata.labels.clone().unwrap_or_default();
                sel.iter().all(|(k, v)| labels.get(k) == Some(v))
            });
        if !selector_fits {
            // The selector cannot change: replace the StatefulSet.
            remove_finalizer(sets, &existing, FINALIZER).await?;
            delete_background(sets, &name).await?;
            return Ok(None);
        }
        if hash(&existing) == hash(&built) && replicas == Some(1) {
            return Ok(Some(existing));
        }
        let mut updated = existing.clone();
        updated.metadata.annotations = Some({
            let mut a = existing.metadata.annotations.clone().unwrap_or_default();
            a.extend(built.metadata.annotations.clone().unwrap_or_default());
            a
        });
        if let (Some(spec), Some(new)) = (updated.spec.as_mut(), built.spec) {
            spec.replicas = Some(1);
            spec.template = new.template;
        }
        let replaced = sets
            .replace(&name, &PostParams::default(), &updated)
            .await
            .map_err(|e| Error::kube(format!("update StatefulSet {}/{name}", self.ns), e))?;
        tracing::info!(namespace = %self.ns, backup = %self.name, statefulset = %name,
            "updated the archiver's StatefulSet");
        Ok(Some(replaced))
    }

    async fn scale_to_zero(&self, sets: &Api<StatefulSet>, name: &str) -> Result<()> {
        let Some(existing) = sets
            .get_opt(name)
            .await
            .during(|| format!("get StatefulSet {}/{name}", self.ns))?
        else {
            return Ok(());
        };
        if existing.spec.as_ref().and_then(|s| s.replicas) == Some(0) {
            return Ok(());
        }
        patch_object(sets, name, None, json!({"spec": {"replicas": 0}})).await?;
        Ok(())
    }

    /// Deletes the Backup's StatefulSets (removing our finalizer); true while any of
    /// them, or a pod of theirs, still exists.
    pub(super) async fn clean_up_statefulsets(&self) -> Result<bool> {
        let sets: Api<StatefulSet> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let selector = format!("{}={}", label::BACKUP_NAME, self.name);
        let list = sets
            .list(&ListParams::default().labels(&selector))
            .await
            .during(|| format!("list the StatefulSets of Backup {}", self.name))?;
        let mut any = false;
        for s in list.items {
            any = true;
            remove_finalizer(&sets, &s, FINALIZER).await?;
            if s.metadata.deletion_timestamp.is_none() {
                delete_background(&sets, s.metadata.name.as_deref().unwrap_or("")).await?;
            }
        }
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let archivers = pods
            .list(
                &ListParams::default()
                    .labels(&format!("{selector},statefulset.kubernetes.io/pod-name")),
            )
            .await
            .during(|| format!("list the archiver pods of Backup {}", self.name))?;
        Ok(any || !archivers.items.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn an_archiver_fails_only_after_the_timeout() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:01:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let failing = |since: &str| {
            pod(json!({"metadata": {"name": "b-0"}, "status": {
                "conditions": [{"type": "ContainersReady", "status": "False", "lastTransitionTime": since}],
                "containerStatuses": [{"name": "backupdata", "image": "x", "imageID": "", "ready": false,
                    "restartCount": 3, "state": {"terminated": {"exitCode": 2, "message": "psql: no server"}}}]}}))
        };
        let why = pod_failure(&failing("2026-01-01T00:00:00Z"), now).unwrap();
        assert!(why.contains("backupdata") && why.contains("code 2") && why.contains("psql"));
        assert!(pod_failure(&failing("2026-01-01T00:00:55Z"), now).is_none());
        let running = pod(json!({"metadata": {"name": "b-0"}, "status": {
            "conditions": [{"type": "ContainersReady", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            "containerStatuses": [{"name": "backupdata", "image": "x", "imageID": "", "ready": true,
                "restartCount": 0, "state": {"running": {}}}]}}));
        assert!(pod_failure(&running, now).is_none());
    }
}
