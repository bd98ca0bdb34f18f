//! Deleting a Backup: child Backups, its Jobs, preDelete, the deleter Job, the GC request.

use super::*;

impl Reconciler<'_> {
    pub(super) async fn deleting(&self) -> Result<Action> {
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

    pub(super) async fn run_deletion_job(
        &self,
        job: &Job,
    ) -> Result<Option<std::result::Result<(), String>>> {
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

    pub(super) async fn deletion_failed(&self, reason: String) -> Result<Action> {
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

    pub(super) async fn finish_deletion(&self, repo: Option<&str>) -> Result<Action> {
        // The deleter's Jobs go with the Backup (owner references). The finalizer goes
        // first: a removal that loses a race is retried, and must not ask for a second
        // garbage collection run.
        remove_finalizer(&self.api, self.b, FINALIZER).await?;
        if let Some(repo) = repo {
            self.request_gc(repo).await;
        }
        self.ctx.metrics.backup_phase("Deleted", None, None);
        Ok(Action::await_change())
    }

    /// Asks the repository's GarbageCollection(s) for a run (they rate-limit requests).
    pub(super) async fn request_gc(&self, repo: &str) {
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
