//! The Job of an Exec action (an ActionSet step with `exec`, or a Restore's postReady
//! `execAction`): KubeBlocks runs `kubectl -n NS exec POD -c C -- CMD` in a Job in the
//! controller's namespace (`CM_NAMESPACE`) as the exec worker service account
//! (`EXEC_WORKER_SERVICE_ACCOUNT_NAME`), so the right to exec into database pods belongs
//! to that account alone, not to users of the database's namespace. dprepo keeps the
//! place, the account and the labels, and runs its own binary instead of kubectl:
//! `/dprepo-controller exec` from the tools image (see `crate::exec` for why a Job and
//! what the command guarantees).
//!
//! The Job is in another namespace than its Backup or Restore, so it carries no owner
//! reference (Kubernetes refuses cross-namespace owners): it is found by its labels
//! (`backup-name` + `backup-namespace`, or `restore` + `restore-namespace`) and deleted
//! by the reconciler that made it. `timeout` becomes both the command's own deadline
//! (`--timeout-seconds`, exit 124) and the Job's `activeDeadlineSeconds` (with a margin
//! for the pod to start), so a hung API connection cannot keep it running.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, PodSpec, PodTemplateSpec, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::datasafed::no_privilege_escalation;
use crate::api::duration::MetaDuration;
use crate::api::labels::FINALIZER;
use crate::config::ControllerConfig;

/// The exec command in the tools image.
pub const EXEC_COMMAND: [&str; 2] = ["/dprepo-controller", "exec"];
/// Seconds the Job's deadline adds to the command's timeout (pod start, API round trips).
pub const DEADLINE_MARGIN_SECS: i64 = 60;

/// What an Exec action's Job needs.
#[derive(Clone, Debug, Default)]
pub struct ExecJobInputs {
    /// The Job's name.
    pub name: String,
    /// The container's name (KubeBlocks names it after the action).
    pub container_name: String,
    /// Labels of the Job and its pod.
    pub labels: BTreeMap<String, String>,
    /// Namespace of the target pod.
    pub pod_namespace: String,
    /// The target pod.
    pub pod_name: String,
    /// Its container (resolved: the spec's, else the pod's first).
    pub container: String,
    /// The command.
    pub command: Vec<String>,
    /// The command's deadline in seconds.
    pub timeout_secs: Option<u64>,
    /// The Job's `backoffLimit`.
    pub backoff_limit: Option<i32>,
    /// Variables for the command (`DP_*`), handed over by `--forward-env DP_`.
    pub env: Vec<EnvVar>,
    /// The target pod's tolerations (KubeBlocks copies them for restores).
    pub tolerations: Option<Vec<Toleration>>,
}

/// The seconds of an Exec action's `timeout`, `None` when unset or zero.
///
/// # Errors
/// A duration Go would refuse (the ActionSet is then Unavailable too).
pub fn timeout_secs(timeout: Option<&MetaDuration>) -> std::result::Result<Option<u64>, String> {
    let Some(t) = timeout else { return Ok(None) };
    let d = t
        .parse()
        .map_err(|e| format!("timeout {:?}: {e}", t.as_str()))?;
    Ok(d.to_std()
        .filter(|d| !d.is_zero())
        .map(|d| d.as_secs().max(1)))
}

/// The container an Exec action runs in: the spec's, else the pod's first.
pub fn exec_container(spec: Option<&str>, pod: &Pod) -> String {
    spec.filter(|c| !c.is_empty())
        .map(str::to_string)
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .map(|c| c.name.clone())
        })
        .unwrap_or_default()
}

/// The arguments after `/dprepo-controller exec`.
pub fn exec_args(i: &ExecJobInputs) -> Vec<String> {
    let mut args = vec![
        "--namespace".to_string(),
        i.pod_namespace.clone(),
        "--pod".into(),
        i.pod_name.clone(),
        "--container".into(),
        i.container.clone(),
    ];
    if let Some(t) = i.timeout_secs {
        args.push("--timeout-seconds".into());
        args.push(t.to_string());
    }
    if !i.env.is_empty() {
        args.push("--forward-env".into());
        args.push("DP_".into());
    }
    args.push("--".into());
    args.extend(i.command.iter().cloned());
    args
}

/// The Job, in the controller's namespace, as the exec worker.
pub fn exec_job(i: &ExecJobInputs, config: &ControllerConfig) -> Job {
    let container = Container {
        name: i.container_name.clone(),
        image: Some(config.tools_image.clone()),
        image_pull_policy: config.image_pull_policy.clone(),
        command: Some(EXEC_COMMAND.iter().map(|s| s.to_string()).collect()),
        args: Some(exec_args(i)),
        env: (!i.env.is_empty()).then(|| i.env.clone()),
        security_context: Some(no_privilege_escalation()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    };
    let mut tolerations = i.tolerations.clone().unwrap_or_default();
    if tolerations.is_empty() {
        // KubeBlocks' exec pods tolerate everything: they only talk to the API server.
        tolerations.push(Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        });
    }
    Job {
        metadata: ObjectMeta {
            name: Some(i.name.clone()),
            namespace: Some(config.namespace.clone()),
            labels: Some(i.labels.clone()),
            finalizers: Some(vec![FINALIZER.into()]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: i.backoff_limit,
            active_deadline_seconds: i
                .timeout_secs
                .map(|t| i64::try_from(t).unwrap_or(i64::MAX / 2) + DEADLINE_MARGIN_SECS),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(i.labels.clone()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    service_account_name: Some(config.exec_worker_service_account.clone()),
                    containers: vec![container],
                    tolerations: Some(tolerations),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ControllerConfig {
        ControllerConfig::from_source(&BTreeMap::<String, String>::from([(
            "CM_NAMESPACE".to_string(),
            "kb-system".to_string(),
        )]))
        .unwrap()
    }

    fn inputs() -> ExecJobInputs {
        ExecJobInputs {
            name: "dp-prebackup-0-0-b1-0123abcd".into(),
            container_name: "dp-prebackup-0-0".into(),
            labels: BTreeMap::from([(
                "dataprotection.kubeblocks.io/backup-name".into(),
                "b1".into(),
            )]),
            pod_namespace: "demo".into(),
            pod_name: "db-0".into(),
            container: "mariadb".into(),
            command: vec!["mariadb".into(), "-e".into(), "FLUSH TABLES".into()],
            timeout_secs: Some(30),
            backoff_limit: Some(0),
            env: Vec::new(),
            tolerations: None,
        }
    }

    #[test]
    fn exec_job_runs_our_binary_in_the_controller_namespace_as_the_exec_worker() {
        let config = config();
        let job = exec_job(&inputs(), &config);
        assert_eq!(
            job.metadata.namespace.as_deref(),
            Some(config.namespace.as_str())
        );
        assert!(job.metadata.owner_references.is_none());
        let spec = job.spec.unwrap();
        assert_eq!(
            spec.active_deadline_seconds,
            Some(30 + DEADLINE_MARGIN_SECS)
        );
        assert_eq!(spec.backoff_limit, Some(0));
        let pod = spec.template.spec.unwrap();
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some(config.exec_worker_service_account.as_str())
        );
        let c = &pod.containers[0];
        assert_eq!(c.command.as_ref().unwrap(), &["/dprepo-controller", "exec"]);
        assert_eq!(
            c.args.as_ref().unwrap(),
            &[
                "--namespace",
                "demo",
                "--pod",
                "db-0",
                "--container",
                "mariadb",
                "--timeout-seconds",
                "30",
                "--",
                "mariadb",
                "-e",
                "FLUSH TABLES"
            ]
        );
    }

    #[test]
    fn variables_are_forwarded_only_when_there_are_some() {
        let mut i = inputs();
        i.timeout_secs = None;
        i.env = vec![EnvVar {
            name: "DP_DB_HOST".into(),
            value: Some("db-0".into()),
            ..Default::default()
        }];
        let args = exec_args(&i);
        assert!(args.windows(2).any(|w| w == ["--forward-env", "DP_"]));
        assert!(!args.iter().any(|a| a == "--timeout-seconds"));
        let job = exec_job(&i, &config());
        assert!(job.spec.unwrap().active_deadline_seconds.is_none());
    }

    #[test]
    fn timeouts_are_whole_seconds_and_zero_means_none() {
        assert_eq!(timeout_secs(None).unwrap(), None);
        assert_eq!(
            timeout_secs(Some(&MetaDuration("90s".into()))).unwrap(),
            Some(90)
        );
        assert_eq!(
            timeout_secs(Some(&MetaDuration("1m30s".into()))).unwrap(),
            Some(90)
        );
        assert_eq!(
            timeout_secs(Some(&MetaDuration("0s".into()))).unwrap(),
            None
        );
        assert!(timeout_secs(Some(&MetaDuration("soon".into())))
            .unwrap_err()
            .contains("soon"));
    }
}
