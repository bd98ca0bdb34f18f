//! Deleting a Backup: child Backups, its Jobs, preDelete, the deleter Job, the GC request.

use super::*;
use crate::context::distinct_action;

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
                        Some(Err(reason)) => return self.deletion_job_failed(&job, reason).await,
                        Some(Ok(())) => {}
                    }
                }
            }
        }
        // 5. The deleter.
        let job = backup_job::delete_job(self.b, &path, &mount, &sa, &self.ctx.config);
        match self.run_deletion_job(&job).await? {
            None => Ok(Action::requeue(Duration::from_secs(5))),
            Some(Err(reason)) => self.deletion_job_failed(&job, reason).await,
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

    /// DeleteBackupFilesFailed before any Job ran (the repository is not prepared in the
    /// namespace): one series per such note, so it counts up while it lasts.
    pub(super) async fn deletion_failed(&self, reason: String) -> Result<Action> {
        self.patch(json!({"deletionFailureReason": reason})).await?;
        let action = distinct_action("Prepare the repository", &reason);
        self.ctx
            .event_as(
                self.b,
                EventType::Warning,
                "DeleteBackupFilesFailed",
                action,
                reason,
            )
            .await;
        Ok(Action::requeue(Duration::from_secs(30)))
    }

    /// DeleteBackupFilesFailed of the preDelete or the deleter Job, related to that Job
    /// by name (each retry is a new Job of the same name and another uid, so the
    /// reference leaves the uid out), with an action per failure: the preDelete's and the
    /// deleter's failures are events of their own, a retry failing the same way counts
    /// up, and one failing another way (another exit code or log) is a new event.
    pub(super) async fn deletion_job_failed(&self, job: &Job, reason: String) -> Result<Action> {
        self.patch(json!({"deletionFailureReason": reason})).await?;
        let job_name = job.metadata.name.clone().unwrap_or_default();
        let related = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("batch/v1".into()),
            kind: Some("Job".into()),
            namespace: job.metadata.namespace.clone(),
            name: Some(job_name.clone()),
            ..Default::default()
        };
        let action = distinct_action(
            &format!("Run Job {job_name}"),
            &without_pod_names(&reason, &job_name),
        );
        self.ctx
            .event_related_ref_as(
                self.b,
                related,
                EventType::Warning,
                "DeleteBackupFilesFailed",
                action,
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

/// `text` without the names of the Job's pods (`<job>-<suffix>`), which differ on every
/// retry: what is left tells whether two failures are the same.
pub(super) fn without_pod_names(text: &str, job_name: &str) -> String {
    let prefix = format!("{job_name}-");
    text.split(' ')
        .map(|w| if w.starts_with(&prefix) { "<pod>" } else { w })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::without_pod_names;

    #[test]
    fn retries_failing_alike_read_alike() {
        let a = "action deleter (Job x-delete-b) failed: BackoffLimitExceeded; container deleter of pod x-delete-b-abcde: exit code 1, last log lines: no such bucket";
        let b = a.replace("x-delete-b-abcde", "x-delete-b-fghij");
        assert_eq!(
            without_pod_names(a, "x-delete-b"),
            without_pod_names(&b, "x-delete-b")
        );
        let c = a.replace("no such bucket", "access denied");
        assert_ne!(
            without_pod_names(a, "x-delete-b"),
            without_pod_names(&c, "x-delete-b")
        );
    }
}
