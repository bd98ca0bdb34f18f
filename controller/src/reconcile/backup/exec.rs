//! The preBackup/postBackup steps of a Backup: a Job action in the Backup's namespace, or
//! an Exec action whose Job runs in the controller's namespace as the exec worker
//! ([`crate::builder::exec`]), found again by its `backup-name` and `backup-namespace`
//! labels. A step whose spec says `onError: Continue` does not fail the Backup: it is
//! recorded Failed with its reason and the next action runs.

use super::*;
use crate::api::actionset::{ActionErrorMode, ActionSpec};
use crate::builder::exec::{exec_container, exec_job, timeout_secs, ExecJobInputs};

/// One planned action: its name, its Job (or why none can be built), and whether its
/// failure is ignored (`onError: Continue`).
pub(super) struct Planned {
    pub name: String,
    pub job: std::result::Result<Work, String>,
    pub continue_on_error: bool,
}

/// What an action does: run a Job, or take volume snapshots.
pub(super) enum Work {
    Job(Box<Job>),
    Snapshot(super::snapshot::SnapshotPlan),
}

impl Reconciler<'_> {
    /// The Job of a pre/postBackup step `a` named `name`.
    pub(super) fn plan_step(
        &self,
        inputs: &BackupJobInputs<'_>,
        name: String,
        a: &ActionSpec,
    ) -> Planned {
        match (&a.job, &a.exec) {
            (Some(j), None) => Planned {
                job: backup_job::step_job(inputs, &name, j, &self.ctx.config)
                    .map(|j| Work::Job(Box::new(j)))
                    .map_err(|e| e.0),
                continue_on_error: j.on_error == Some(ActionErrorMode::Continue),
                name,
            },
            (None, Some(e)) => {
                let job = timeout_secs(e.timeout.as_ref())
                    .map_err(|m| format!("action {name}: {m}"))
                    .map(|timeout_secs| {
                        let mut labels = backup_job::workload_labels(self.b);
                        labels.insert(label::BACKUP_NAMESPACE.into(), self.ns.clone());
                        let uid = self.b.metadata.uid.as_deref().unwrap_or("");
                        exec_job(
                            &ExecJobInputs {
                                name: backup_job::job_name(&name, &self.name, uid),
                                container_name: name.clone(),
                                labels,
                                pod_namespace: self.ns.clone(),
                                pod_name: inputs
                                    .target_pod
                                    .metadata
                                    .name
                                    .clone()
                                    .unwrap_or_default(),
                                container: exec_container(
                                    e.container.as_deref(),
                                    inputs.target_pod,
                                ),
                                command: e.command.clone(),
                                timeout_secs,
                                backoff_limit: inputs.policy.spec.backoff_limit,
                                env: Vec::new(),
                                tolerations: None,
                            },
                            &self.ctx.config,
                        )
                    })
                    .map(|j| Work::Job(Box::new(j)));
                Planned {
                    job,
                    continue_on_error: e.on_error == Some(ActionErrorMode::Continue),
                    name,
                }
            }
            _ => Planned {
                job: Err(format!("action {name}: needs exactly one of exec and job")),
                continue_on_error: false,
                name,
            },
        }
    }

    /// Jobs of this Backup's Exec actions (in the controller's namespace).
    pub(super) async fn exec_jobs(&self) -> Result<(Api<Job>, Vec<Job>)> {
        let ns = &self.ctx.config.namespace;
        let jobs: Api<Job> = Api::namespaced(self.ctx.client.clone(), ns);
        let selector = format!(
            "{}={},{}={}",
            label::BACKUP_NAME,
            self.name,
            label::BACKUP_NAMESPACE,
            self.ns
        );
        let list = jobs
            .list(&ListParams::default().labels(&selector))
            .await
            .during(|| {
                format!(
                    "list the exec Jobs of Backup {}/{} in {ns}",
                    self.ns, self.name
                )
            })?;
        Ok((jobs, list.items))
    }
}
