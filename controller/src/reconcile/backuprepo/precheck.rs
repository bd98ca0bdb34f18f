//! Step 5 of a BackupRepo: the pre-check Job that proves the storage and key work.

use super::*;

impl Run<'_> {
    // -- 5. the pre-check -----------------------------------------------------------

    pub(super) fn pre_check_finished(&self) -> bool {
        find_condition(self.conditions(), condition::PRE_CHECK_PASSED)
            .is_some_and(|c| c.status != "Unknown")
    }

    pub(super) fn pre_check_name(&self) -> String {
        pre_check_name(self.repo.metadata.uid.as_deref().unwrap_or(""), &self.name)
    }

    /// Runs or follows the pre-check; `Some(action)` while it runs.
    pub(super) async fn pre_check(
        &mut self,
        provider: &StorageProvider,
        rctx: &RenderContext,
        digest: &str,
        key: &RepoKey,
    ) -> Result<Option<Action>> {
        let key_id = key.source.id();
        let digest_changed =
            annotation_of(&self.repo.metadata, annotation::BACKUP_REPO_DIGEST) != Some(digest);
        let key_changed =
            annotation_of(&self.repo.metadata, KEY_SOURCE_ANNOTATION) != Some(&key_id);
        if digest_changed || key_changed {
            self.cond(
                condition::PRE_CHECK_PASSED,
                "Unknown",
                reason::DIGEST_CHANGED,
                "",
            );
            self.flush().await?;
            self.set_annotations(BTreeMap::from([
                (
                    annotation::BACKUP_REPO_DIGEST.to_string(),
                    digest.to_string(),
                ),
                (
                    annotation::NEED_UPDATE_TOOL_CONFIG.to_string(),
                    "true".to_string(),
                ),
                (KEY_SOURCE_ANNOTATION.to_string(), key_id.clone()),
            ]))
            .await?;
        }
        if self.pre_check_finished() {
            return Ok(None);
        }
        match self.run_pre_check(provider, rctx, digest, key).await {
            Ok(PreCheck::Running) => {
                self.cond(
                    condition::PRE_CHECK_PASSED,
                    "Unknown",
                    reason::UNKNOWN_ERROR,
                    "wait job to finish",
                );
                Ok(Some(Action::requeue(CHECK_INTERVAL)))
            }
            Ok(PreCheck::Passed) => {
                if let Err(e) = self.record_access_key(key, digest).await {
                    // Not fatal: pods keep the repository key until the next pre-check.
                    tracing::warn!(repo = %self.name, error = %e, "could not record the pods' access key");
                }
                self.cond(
                    condition::PRE_CHECK_PASSED,
                    "True",
                    reason::PRE_CHECK_PASSED,
                    "",
                );
                Ok(None)
            }
            Ok(PreCheck::Failed(message, job)) => {
                self.cond(
                    condition::PRE_CHECK_PASSED,
                    "False",
                    reason::PRE_CHECK_FAILED,
                    &message,
                );
                // Related to the run's Job: every pre-check run (after an edit of the
                // BackupRepo, its credential or its key) is a Job of its own, so each
                // run's failure is an event of its own.
                let note = pre_check_event_note(&message);
                let repo = self.repo.clone();
                self.ctx
                    .event_related(
                        &repo,
                        job.as_ref(),
                        EventType::Warning,
                        reason::PRE_CHECK_FAILED,
                        note,
                    )
                    .await;
                Ok(None)
            }
            Err(e @ Error::Invalid { .. }) => {
                // The objects cannot even be built: the check fails, naming the field.
                self.cond(
                    condition::PRE_CHECK_PASSED,
                    "False",
                    reason::PRE_CHECK_FAILED,
                    &e.to_string(),
                );
                Err(e)
            }
            Err(e) => {
                self.cond(
                    condition::PRE_CHECK_PASSED,
                    "Unknown",
                    reason::UNKNOWN_ERROR,
                    &e.to_string(),
                );
                Err(e)
            }
        }
    }

    pub(super) async fn run_pre_check(
        &mut self,
        provider: &StorageProvider,
        rctx: &RenderContext,
        digest: &str,
        key: &RepoKey,
    ) -> Result<PreCheck> {
        let namespace = self.namespace().to_string();
        let sa = ensure_worker_service_account(self.ctx, &namespace).await?;
        let name = self.pre_check_name();
        let key_id = key.source.id();
        let wanted = generation_annotations(digest, &key_id);
        let current = |meta: &ObjectMeta| {
            annotation_of(meta, annotation::BACKUP_REPO_DIGEST) == Some(digest)
                && annotation_of(meta, KEY_SOURCE_ANNOTATION) == Some(key_id.as_str())
        };
        let mut up_to_date = true;
        let mut pvc = None;
        if self.repo.access_method() == AccessMethod::Mount {
            let p = self
                .ensure_pvc(provider, rctx, &name, &namespace, wanted.clone())
                .await?;
            up_to_date &= current(&p.metadata);
            pvc = Some(p);
        }
        let secret = self
            .ensure_tool_secret(provider, rctx, key, &name, &namespace, digest)
            .await?;
        up_to_date &= current(&secret.metadata);
        let jobs: Api<Job> = Api::namespaced(self.ctx.client.clone(), &namespace);
        let inputs = PreCheckInputs {
            name: name.clone(),
            service_account: sa,
            digest: digest.to_string(),
            key_source: key_id.clone(),
        };
        let (job, _) =
            create_if_absent(&jobs, &pre_check_job(&self.repo, &inputs, &self.ctx.config)).await?;
        up_to_date &= current(&job.metadata);
        if !up_to_date {
            // Made for an earlier version of the BackupRepo: remove and start again.
            self.remove_pre_check_resources().await?;
            return Err(Error::Other(
                "pre-check job or PVC digest not match, try again".into(),
            ));
        }
        let (succeeded, failure) = match job_finished(&job) {
            Some(done) => done,
            None => {
                let created = job
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(crate::reconcile::from_time)
                    .unwrap_or(self.now);
                if self.now - created > PRE_CHECK_TIMEOUT {
                    (false, "timeout".to_string())
                } else {
                    return Ok(PreCheck::Running);
                }
            }
        };
        if succeeded {
            return Ok(PreCheck::Passed);
        }
        Ok(PreCheck::Failed(
            self.failure_message(&job, pvc.as_ref(), &failure, &key.source)
                .await,
            Box::new(job),
        ))
    }

    pub(super) async fn failure_message(
        &self,
        job: &Job,
        pvc: Option<&PersistentVolumeClaim>,
        failure: &str,
        key: &KeySource,
    ) -> String {
        let namespace = self.namespace().to_string();
        let job_name = job.metadata.name.clone().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &namespace);
        let mut pod_list = pods
            .list(&ListParams::default().labels(&format!("job-name={job_name}")))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        pod_list.sort_by(|a, b| {
            b.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0)
                .cmp(&a.metadata.creation_timestamp.as_ref().map(|t| t.0))
        });
        let mut logs = String::new();
        for pod in &pod_list {
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if phase != Some("Failed") {
                continue;
            }
            let params = LogParams {
                container: Some(PRE_CHECK_CONTAINER.into()),
                limit_bytes: Some(CONTENT_LIMIT as i64),
                ..Default::default()
            };
            match pods
                .logs(pod.metadata.name.as_deref().unwrap_or(""), &params)
                .await
            {
                Ok(text) => logs = truncate(&text, CONTENT_LIMIT),
                Err(e) => {
                    tracing::warn!(repo = %self.name, error = %e, "could not read the pre-check pod's logs")
                }
            }
            break;
        }
        let mut events = Vec::new();
        if let Some(pod) = pod_list.first() {
            events.push(self.events_of("Pod", &pod.metadata).await);
        }
        if let Some(pvc) = pvc {
            events.push(self.events_of("PersistentVolumeClaim", &pvc.metadata).await);
        }
        events.push(self.events_of("Job", &job.metadata).await);
        pre_check_failure_message(failure, &logs, &events, key)
    }

    pub(super) async fn events_of(&self, kind: &str, meta: &ObjectMeta) -> (String, String) {
        let ns = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        let object = format!("{kind}/{ns}/{name}");
        let Some(uid) = meta.uid.as_deref() else {
            return (object, String::new());
        };
        let api: Api<CoreEvent> = Api::namespaced(self.ctx.client.clone(), &ns);
        let events = api
            .list(&ListParams::default().fields(&format!("involvedObject.uid={uid}")))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        (object, events_table(&events))
    }

    pub(super) async fn remove_pre_check_resources(&self) -> Result<()> {
        let ns = self.namespace().to_string();
        let name = self.pre_check_name();
        delete_background(&Api::<Job>::namespaced(self.ctx.client.clone(), &ns), &name).await?;
        delete_background(
            &Api::<PersistentVolumeClaim>::namespaced(self.ctx.client.clone(), &ns),
            &name,
        )
        .await?;
        delete_background(
            &Api::<Secret>::namespaced(self.ctx.client.clone(), &ns),
            &name,
        )
        .await
    }
}
