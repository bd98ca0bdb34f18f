//! The two stages of a Restore: prepareData (PVCs and restore Jobs per claim) and
//! postReady (Job and Exec actions against the running target).

use super::*;

impl Run<'_> {
    /// Creates `jobs` when absent; a same-named Job of another Restore is fatal.
    pub(super) async fn create_jobs(&self, jobs: Vec<Job>) -> Result<Outcome<Vec<Job>>> {
        let mut out = Vec::new();
        for job in jobs {
            let ns = job.metadata.namespace.clone().unwrap_or_default();
            let jname = job.metadata.name.clone().unwrap_or_default();
            let api: Api<Job> = Api::namespaced(self.ctx.client.clone(), &ns);
            let (stored, created) = create_if_absent(&api, &job).await?;
            let mine = stored
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(label::RESTORE))
                == Some(&self.name);
            if !mine {
                return Ok(Err(Fatal(format!(
                    "restore job name collision: existing job {ns}/{jname} does not belong to restore {}/{}",
                    self.ns, self.name
                ))));
            }
            if created {
                // One series per Job: a Restore runs one per stage, target pod and step.
                self.ctx
                    .event_related(
                        &self.restore,
                        &stored,
                        EventType::Normal,
                        event::CREATE_RESTORE_JOB,
                        format!("created job {ns}/{jname}"),
                    )
                    .await;
            }
            out.push(stored);
        }
        Ok(Ok(out))
    }

    /// Records each Job's state as an action; stops the managers once every restore
    /// container ended. Returns whether all Jobs finished and whether one failed.
    pub(super) async fn check_jobs(
        &mut self,
        stage: Stage,
        action: &str,
        backup: &str,
        jobs: &[Job],
    ) -> Result<(bool, bool)> {
        let mut all_finished = true;
        let mut failed = false;
        let mut ended = 0;
        let mut pods_of: Vec<Vec<Pod>> = Vec::new();
        for job in jobs {
            let ns = job.metadata.namespace.clone().unwrap_or_default();
            let jname = job.metadata.name.clone().unwrap_or_default();
            let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
            let list = pods
                .list(&ListParams::default().labels(&format!("job-name={jname}")))
                .await
                .during(|| format!("list the pods of Job {ns}/{jname}"))?
                .items;
            let state = job_state(job, &list);
            let key = format!("Job/{jname}");
            let (status, message) = match &state {
                JobState::Completed => (RestoreActionStatus::Completed, None),
                JobState::Failed(m) => (RestoreActionStatus::Failed, Some(m.clone())),
                JobState::Running { .. } => (RestoreActionStatus::Processing, None),
            };
            let now = now(self.ctx);
            set_action(
                self.actions(stage),
                RestoreStatusAction {
                    name: action.to_string(),
                    backup_name: backup.to_string(),
                    object_key: key,
                    message,
                    status,
                    start_time: None,
                    end_time: None,
                },
                now,
            );
            match state {
                JobState::Completed => ended += 1,
                JobState::Failed(ref m) => {
                    failed = true;
                    ended += 1;
                    if m.contains(EMPTY_VOLUME_MARKER) {
                        // Another attempt would write nothing again: stop the Job now.
                        let api: Api<Job> = Api::namespaced(self.ctx.client.clone(), &ns);
                        delete_background(&api, &jname).await?;
                    }
                }
                JobState::Running { restore_ended } => {
                    all_finished = false;
                    if restore_ended {
                        ended += 1;
                    }
                }
            }
            pods_of.push(list);
        }
        if ended == jobs.len() {
            for list in &pods_of {
                for pod in list {
                    self.stop_manager(pod).await?;
                }
            }
        } else {
            // A restore container that failed releases its own manager at once.
            for list in &pods_of {
                for pod in list {
                    if container_exit(pod, RESTORE_CONTAINER).is_some_and(|(code, _)| code != 0) {
                        self.stop_manager(pod).await?;
                    }
                }
            }
        }
        Ok((all_finished, failed))
    }

    pub(super) async fn stop_manager(&self, pod: &Pod) -> Result<()> {
        let already = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(annotation::STOP_RESTORE_MANAGER))
            .is_some_and(|v| v == "true");
        let terminal = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed");
        if already || terminal {
            return Ok(());
        }
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let pname = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
        match api
            .patch(
                &pname,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"annotations": {annotation::STOP_RESTORE_MANAGER: "true"}}}),
                ),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(Error::kube(format!("annotate Pod {ns}/{pname}"), e)),
        }
    }

    /// The prepareData stage. `Ok(true)`: done.
    pub(super) async fn prepare_data(&mut self, plan: &Plan, sa: &str) -> Result<Outcome<bool>> {
        let Some(config) = self.restore.spec.prepare_data_config.clone() else {
            return Ok(Ok(true));
        };
        if plan.prepare.is_empty()
            || (config.volume_claims_template.is_none()
                && config.volume_claims.as_ref().is_none_or(|c| c.is_empty()))
        {
            return Ok(Ok(true));
        }
        if is_true(self.conditions(), condition::PREPARE_DATA) {
            return Ok(Ok(true));
        }
        self.condition(
            condition::PREPARE_DATA,
            "Unknown",
            reason::PROCESSING,
            "processing prepareData stage.",
        );
        let serial = config.volume_claim_restore_policy == VolumeClaimRestorePolicy::Serial;
        let replicas = prepare_data_job_count(&self.restore);
        for (step, set) in plan.prepare.iter().enumerate() {
            let action = action_name(Stage::PrepareData, step);
            let backup = set.name().to_string();
            let recorded = self.recorded(Stage::PrepareData);
            let (finished, failed) = action_progress(&recorded, &backup, &action, Some(replicas));
            if failed && (finished || serial) {
                return Ok(Err(self.stage_failed(Stage::PrepareData, &backup)));
            }
            if finished {
                continue;
            }
            let repo = match self.repo_mount(set).await? {
                Ok(r) => r,
                Err(f) => return Ok(Err(f)),
            };
            let Some(target) = status_target(
                &set.backup,
                self.restore.spec.backup.source_target_name.as_deref(),
            )
            .cloned() else {
                return Ok(Err(Fatal(format!(
                    "can not find any source target in backup {backup}"
                ))));
            };
            let target_name = self
                .restore
                .spec
                .backup
                .source_target_name
                .clone()
                .or_else(|| target.target.name.clone())
                .unwrap_or_default();
            let allowed = if serial {
                serial_jobs_allowed(&recorded, &backup, &action, replicas)
            } else {
                replicas
            };
            let mut jobs = Vec::new();
            for index in 0..allowed {
                let jname = prepare_data_job_name(&self.restore, &backup, index);
                let key = format!("Job/{jname}");
                let recorded_status = recorded
                    .iter()
                    .find(|a| a.object_key == key)
                    .map(|a| a.status);
                if recorded_status == Some(RestoreActionStatus::Failed) {
                    // Decided (an empty claim deletes its Job): never started again.
                    continue;
                }
                if serial && recorded_status == Some(RestoreActionStatus::Completed) {
                    // Serial: a finished Job goes, releasing its claim.
                    let api: Api<Job> = Api::namespaced(self.ctx.client.clone(), &self.ns);
                    delete_background(&api, &jname).await?;
                    continue;
                }
                let source_pod = match source_target_pod(
                    &target,
                    config.required_policy_for_all_pod_selection.as_ref(),
                    index,
                ) {
                    Ok(p) => p,
                    Err(m) => return Ok(Err(Fatal(m))),
                };
                let all = target
                    .target
                    .pod_selector
                    .as_ref()
                    .map(|p| p.strategy())
                    .unwrap_or_default()
                    == crate::api::backuppolicy::PodSelectionStrategy::All;
                if all && source_pod.is_none() {
                    continue;
                }
                let mut claims = Vec::new();
                let mut labels = BTreeMap::new();
                for (claim, from_template) in claims_for_index(&self.restore, index) {
                    let pvc = claim_pvc(&self.restore, &claim);
                    let pvcs: Api<PersistentVolumeClaim> =
                        Api::namespaced(self.ctx.client.clone(), &self.ns);
                    let (stored, created) = create_if_absent(&pvcs, &pvc).await?;
                    let cname = claim.metadata.name.clone().unwrap_or_default();
                    if created {
                        // One series per claim: a Restore may make many.
                        self.ctx
                            .event_related(
                                &self.restore,
                                &stored,
                                EventType::Normal,
                                event::CREATE_RESTORE_PVC,
                                format!("created pvc {}/{cname}", self.ns),
                            )
                            .await;
                    }
                    if from_template {
                        for (k, v) in claim.metadata.labels.iter().flatten() {
                            labels.entry(k.clone()).or_insert_with(|| v.clone());
                        }
                    }
                    match claim_volume(&claim, from_template, &set.backup) {
                        Ok((v, m)) => claims.push((v, m, cname)),
                        Err(m) => return Ok(Err(Fatal(m))),
                    }
                }
                let env = restore_env(&self.restore, set, &target_name, source_pod.as_deref());
                let Some(prepare) = set
                    .action_set
                    .spec
                    .restore
                    .as_ref()
                    .and_then(|r| r.prepare_data.clone())
                else {
                    continue;
                };
                let inputs = RestoreJobInputs {
                    name: jname,
                    namespace: self.ns.clone(),
                    stage: Stage::PrepareData,
                    service_account: sa.to_string(),
                    repo: repo.clone(),
                    image: prepare.image.clone(),
                    command: prepare.command.clone(),
                    args: None,
                    env,
                    claims,
                    volumes: Vec::new(),
                    labels,
                    node_name: None,
                    tolerations: None,
                };
                jobs.push(restore_job(&self.restore, set, &inputs, &self.ctx.config));
            }
            if jobs.is_empty() {
                continue;
            }
            let jobs = match self.create_jobs(jobs).await? {
                Ok(j) => j,
                Err(f) => return Ok(Err(f)),
            };
            self.check_jobs(Stage::PrepareData, &action, &backup, &jobs)
                .await?;
            let recorded = self.recorded(Stage::PrepareData);
            let (mut finished, failed) =
                action_progress(&recorded, &backup, &action, Some(replicas));
            if serial {
                let completed = recorded
                    .iter()
                    .filter(|a| {
                        a.backup_name == backup
                            && a.name == action
                            && a.status == RestoreActionStatus::Completed
                    })
                    .count();
                finished = failed || completed >= replicas;
            }
            if finished && failed {
                return Ok(Err(self.stage_failed(Stage::PrepareData, &backup)));
            }
            if !finished {
                return Ok(Ok(false));
            }
        }
        self.condition(
            condition::PREPARE_DATA,
            "True",
            reason::SUCCEED,
            "prepare data successfully",
        );
        Ok(Ok(true))
    }

    pub(super) fn stage_failed(&mut self, stage: Stage, backup: &str) -> Fatal {
        let detail = self
            .recorded(stage)
            .iter()
            .filter(|a| a.status == RestoreActionStatus::Failed)
            .filter_map(|a| a.message.clone())
            .collect::<Vec<_>>()
            .join("; ");
        let msg = format!(
            "restore failed for backup \"{backup}\", more information can be found in status.actions.{}: {detail}",
            stage.as_str()
        );
        let type_ = match stage {
            Stage::PrepareData => condition::PREPARE_DATA,
            Stage::PostReady => condition::POST_READY,
        };
        self.condition(type_, "False", reason::FAILED, &truncate(&msg, 4096));
        Fatal(msg)
    }

    /// The postReady stage. `Ok(true)`: done.
    pub(super) async fn post_ready(&mut self, plan: &Plan) -> Result<Outcome<bool>> {
        let Some(ready) = self.restore.spec.ready_config.clone() else {
            return Ok(Ok(true));
        };
        if plan.post.is_empty() || is_true(self.conditions(), condition::POST_READY) {
            return Ok(Ok(true));
        }
        self.condition(
            condition::POST_READY,
            "Unknown",
            reason::PROCESSING,
            "processing postReady stage",
        );
        for set in &plan.post {
            let steps = set
                .action_set
                .spec
                .restore
                .as_ref()
                .and_then(|r| r.post_ready.clone())
                .unwrap_or_default();
            let backup = set.name().to_string();
            for (step, spec) in steps.iter().enumerate() {
                let action = action_name(Stage::PostReady, step);
                let recorded = self.recorded(Stage::PostReady);
                let (finished, failed) = action_progress(&recorded, &backup, &action, None);
                if finished && failed {
                    return Ok(Err(self.stage_failed(Stage::PostReady, &backup)));
                }
                if finished {
                    continue;
                }
                let jobs = match self.post_ready_jobs(set, step, spec, &ready).await? {
                    Ok(Some(j)) => j,
                    Ok(None) => return Ok(Ok(false)),
                    Err(f) => return Ok(Err(f)),
                };
                let jobs = match self.create_jobs(jobs).await? {
                    Ok(j) => j,
                    Err(f) => return Ok(Err(f)),
                };
                let (finished, failed) = self
                    .check_jobs(Stage::PostReady, &action, &backup, &jobs)
                    .await?;
                if finished && failed {
                    return Ok(Err(self.stage_failed(Stage::PostReady, &backup)));
                }
                if !finished {
                    return Ok(Ok(false));
                }
            }
        }
        self.condition(
            condition::POST_READY,
            "True",
            reason::SUCCEED,
            "processing postReady stage successfully",
        );
        Ok(Ok(true))
    }

    /// The Jobs of one postReady step; `Ok(None)` while no target pod exists yet.
    pub(super) async fn post_ready_jobs(
        &self,
        set: &BackupSet,
        step: usize,
        spec: &crate::api::actionset::ActionSpec,
        ready: &crate::api::restore::ReadyConfig,
    ) -> Result<Outcome<Option<Vec<Job>>>> {
        let backup = set.name().to_string();
        let Some(target) = status_target(
            &set.backup,
            self.restore.spec.backup.source_target_name.as_deref(),
        )
        .cloned() else {
            return Ok(Err(Fatal(format!(
                "can not find any source target in backup {backup}"
            ))));
        };
        let target_name = self
            .restore
            .spec
            .backup
            .source_target_name
            .clone()
            .or_else(|| target.target.name.clone())
            .unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let list_pods =
            |selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector| {
                let text = selector_text(selector);
                let pods = pods.clone();
                async move {
                    let mut items = pods
                        .list(&ListParams::default().labels(&text))
                        .await
                        .during(|| format!("list pods {text}"))?
                        .items;
                    items.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
                    Ok::<_, Error>(items)
                }
            };
        let mut jobs = Vec::new();
        if let Some(job_spec) = &spec.job {
            let Some(job_action) = &ready.job_action else {
                return Ok(Err(Fatal(
                    "spec.readyConfig.jobAction can not be empty".into(),
                )));
            };
            let selector = &job_action.target.pod_selector;
            let mut targets = list_pods(&selector.label_selector).await?;
            if targets.is_empty() {
                return Ok(Ok(None));
            }
            if selector.strategy() == crate::api::backuppolicy::PodSelectionStrategy::Any {
                let running = targets.iter().find(|p| {
                    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                });
                let Some(p) = running.cloned() else {
                    return Ok(Ok(None));
                };
                targets = vec![p];
            }
            let repo = match self.repo_mount(set).await? {
                Ok(r) => r,
                Err(f) => return Ok(Err(f)),
            };
            for (i, pod) in targets.iter().enumerate() {
                let source_pod = match source_target_pod(
                    &target,
                    job_action.required_policy_for_all_pod_selection.as_ref(),
                    i,
                ) {
                    Ok(p) => p,
                    Err(m) => return Ok(Err(Fatal(m))),
                };
                let mut env = restore_env(&self.restore, set, &target_name, source_pod.as_deref());
                crate::builder::restore::merge_env(
                    &mut env,
                    &target_pod_env(
                        pod,
                        ready.connection_credential.as_ref(),
                        &self.ctx.config.cluster_domain,
                    ),
                );
                let mut volumes = Vec::new();
                let on_node = job_spec.run_on_target_pod_node == Some(true);
                if on_node {
                    for m in job_action.target.volume_mounts.iter().flatten() {
                        if let Some(v) = pod
                            .spec
                            .as_ref()
                            .and_then(|s| s.volumes.as_ref())
                            .and_then(|vs| vs.iter().find(|v| v.name == m.name))
                        {
                            volumes.push((v.clone(), m.clone()));
                        }
                    }
                }
                let sa = self.service_account().await?;
                let inputs = RestoreJobInputs {
                    name: post_ready_job_name(&self.restore, &backup, step, i),
                    namespace: self.ns.clone(),
                    stage: Stage::PostReady,
                    service_account: sa,
                    repo: repo.clone(),
                    image: job_spec.image.clone(),
                    command: job_spec.command.clone(),
                    args: None,
                    env,
                    claims: Vec::new(),
                    volumes,
                    labels: BTreeMap::new(),
                    node_name: on_node
                        .then(|| pod.spec.as_ref().and_then(|s| s.node_name.clone()))
                        .flatten(),
                    tolerations: pod.spec.as_ref().and_then(|s| s.tolerations.clone()),
                };
                jobs.push(restore_job(&self.restore, set, &inputs, &self.ctx.config));
            }
        } else if let Some(exec) = &spec.exec {
            let Some(selector) = ready
                .exec_action
                .as_ref()
                .and_then(|e| e.target.as_ref())
                .map(|t| t.pod_selector.clone())
            else {
                return Ok(Err(Fatal(
                    "spec.readyConfig.execAction can not be empty".into(),
                )));
            };
            let targets = list_pods(&selector).await?;
            if targets.is_empty() {
                return Ok(Ok(None));
            }
            for (i, pod) in targets.iter().enumerate() {
                let env = restore_env(&self.restore, set, &target_name, None);
                let name = post_ready_job_name(&self.restore, &backup, step, i);
                match self
                    .post_ready_exec_job(set, exec, ready, pod, name, env)
                    .await?
                {
                    Ok(job) => jobs.push(job),
                    Err(f) => return Ok(Err(f)),
                }
            }
        }
        Ok(Ok(Some(jobs)))
    }
}
