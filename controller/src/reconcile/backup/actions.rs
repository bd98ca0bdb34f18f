//! Running a Backup: its actions, one Job each, in order; completing it.

use super::exec::{Planned, Work};
use super::*;
use crate::api::actionset::ActionErrorMode;

impl Reconciler<'_> {
    pub(super) async fn running(&self) -> Result<Action> {
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
    pub(super) async fn run_actions(
        &self,
        actions: &mut Vec<ActionStatus>,
    ) -> Result<Step<Option<Action>>> {
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
                let mut plan: Vec<Planned> = Vec::new();
                for (i, a) in backup_spec.pre_backup.iter().flatten().enumerate() {
                    let name = pre_backup_action_name(&t.target, i, index);
                    plan.push(self.plan_step(&inputs, name, a));
                }
                if let Some(data) = &backup_spec.backup_data {
                    plan.push(Planned {
                        name: backup_data_action_name(&t.target, index),
                        job: backup_job::backup_data_job(&inputs, index, &self.ctx.config)
                            .map(|j| Work::Job(Box::new(j)))
                            .map_err(|e| e.0),
                        continue_on_error: data.job.on_error == Some(ActionErrorMode::Continue),
                    });
                }
                if let Some((name, snapshot)) =
                    self.plan_snapshot(&r.method, &t.target, &pod, index)
                {
                    plan.push(Planned {
                        name,
                        job: snapshot.map(Work::Snapshot),
                        continue_on_error: false,
                    });
                }
                for (i, a) in backup_spec.post_backup.iter().flatten().enumerate() {
                    let name = post_backup_action_name(&t.target, i, index);
                    plan.push(self.plan_step(&inputs, name, a));
                }
                for Planned {
                    name: action,
                    job,
                    continue_on_error,
                } in plan
                {
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
                    let phase = actions[slot].phase.clone();
                    if phase == Some(ActionPhase::Completed)
                        || (phase == Some(ActionPhase::Failed) && continue_on_error)
                    {
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
                    let outcome = match &job {
                        Work::Job(job) => self.run_job(job, &mut actions[slot]).await?,
                        Work::Snapshot(plan) => self.run_snapshot(plan, &mut actions[slot]).await?,
                    };
                    match outcome {
                        Some(Ok(())) => continue,
                        Some(Err(reason)) if continue_on_error => {
                            actions[slot].failure_reason =
                                Some(format!("{reason} (ignored: onError is Continue)"));
                            continue;
                        }
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
    pub(super) async fn run_job(
        &self,
        job: &Job,
        slot: &mut ActionStatus,
    ) -> Result<Option<std::result::Result<(), String>>> {
        let job_ns = job
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| self.ns.clone());
        let jobs: Api<Job> = Api::namespaced(self.ctx.client.clone(), &job_ns);
        let job_name = job.metadata.name.clone().unwrap_or_default();
        let action = slot.name.clone().unwrap_or_default();
        let existing = jobs
            .get_opt(&job_name)
            .await
            .during(|| format!("get Job {job_ns}/{job_name}"))?;
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
                // One series per Job: a Backup runs several (per action and pod).
                self.ctx
                    .event_related(
                        self.b,
                        &created,
                        EventType::Normal,
                        "CreatingJob",
                        format!("creating job {job_ns}/{job_name}"),
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
            namespace: Some(job_ns.clone()),
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
                let logs = self.failed_pod_logs(&job_ns, &job_name).await;
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
    pub(super) async fn failed_pod_logs(&self, job_ns: &str, job_name: &str) -> String {
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), job_ns);
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

    pub(super) async fn complete(&self, actions: &[ActionStatus]) -> Result<Action> {
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
        let snapshots: Vec<_> = actions
            .iter()
            .flat_map(|a| a.volume_snapshots.iter().flatten().cloned())
            .collect();
        if !snapshots.is_empty() {
            status["volumeSnapshots"] = json!(snapshots);
        }
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

    /// Deletes the Backup's Jobs (not the deleter's unless `all`) and StatefulSets,
    /// removing our finalizer; true while any existed.
    pub(super) async fn clean_up_jobs(&self, all: bool) -> Result<bool> {
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
        let (exec_api, exec_jobs) = self.exec_jobs().await?;
        for j in exec_jobs {
            let name = j.metadata.name.clone().unwrap_or_default();
            any = true;
            remove_finalizer(&exec_api, &j, FINALIZER).await?;
            if j.metadata.deletion_timestamp.is_none() {
                delete_background(&exec_api, &name).await?;
            }
        }
        // A Continuous backup's archiver StatefulSet goes with its Jobs.
        let archivers = self.clean_up_statefulsets().await?;
        Ok(any || archivers)
    }
}
