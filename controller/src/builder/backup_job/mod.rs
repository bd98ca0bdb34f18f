//! The Jobs of a Backup (CONTROLLER.md section 2 "Backup data Job"), built exactly as
//! KubeBlocks builds them so ActionSet scripts run unchanged:
//!
//! - names: action `dp-backup-[<target>-]<i>` (backupData), `dp-prebackup-[<target>-]<j>-<i>`
//!   and `dp-postbackup-[<target>-]<j>-<i>` (j: the step, i: the target pod), Job
//!   `<action>-<backup>-<uid[:8]>` cut to 63 ([`job_name`]);
//! - paths: root `/<repo prefix>/<namespace>/<policy prefix>`, the backup's path
//!   `<root>/<backup>`, the target's `DP_BACKUP_BASE_PATH` `<path>/<relative>`;
//! - environment, in KubeBlocks' order ([`backup_env`]); the method's `env` replaces
//!   same-named variables in place and appends the others;
//! - the pod: container `backupdata` (pre/post steps: named after the action), runAsUser
//!   0, no privilege escalation, the target container's `envFrom` then the ActionSet's,
//!   the emptyDir `manager-shared-volume` at `/dp-manager`, the worker service account,
//!   `restartPolicy: Never`, the target's node and tolerations (`runOnTargetPodNode`) or
//!   the controller's scheduling settings; then the datasafed injection
//!   ([`super::datasafed::inject_datasafed`]);
//! - backupData only: the `manager` sidecar, a copy of the first container running
//!   `/dprepo-controller backup-manager` from the tools image ([`MANAGER_COMMAND`];
//!   see `crate::manager`), in place of KubeBlocks' kubectl script.
//!
//! The deleter Job (section 2 "Deletion") is here too: [`delete_job`].

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, Pod, PodSpec, PodTemplateSpec,
    SecretKeySelector, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::datasafed::{inject_datasafed, no_privilege_escalation, RepoMount};
use super::names::cut_name;
use super::precheck::add_scheduling;
use super::{controller_ref, shell_quote};
use crate::api::actionset::{ActionSet, JobActionSpec};
use crate::api::backuppolicy::{BackupMethod, BackupPolicy, BackupTarget, PodSelectionStrategy};
use crate::api::labels::{label, FINALIZER};
use crate::api::Backup;
use crate::config::ControllerConfig;

/// Container of the backupData action.
pub const BACKUP_DATA_CONTAINER: &str = "backupdata";
/// The sidecar reporting `backup.info`.
pub const MANAGER_CONTAINER: &str = "manager";
/// The emptyDir shared by the backup container and the manager.
pub const MANAGER_VOLUME: &str = "manager-shared-volume";
/// Where it is mounted.
pub const MANAGER_MOUNT_PATH: &str = "/dp-manager";
/// The file the script writes its result to (`DP_BACKUP_INFO_FILE`).
pub const BACKUP_INFO_FILE: &str = "/dp-manager/backup.info";
/// The manager's command: dprepo-controller in the tools image.
pub const MANAGER_COMMAND: [&str; 2] = ["/dprepo-controller", "backup-manager"];
/// KubeBlocks' default check interval of the manager (seconds).
pub const DEFAULT_CHECK_INTERVAL: i32 = 5;
/// Action name prefix of backupData.
pub const BACKUP_DATA_PREFIX: &str = "dp-backup";
/// Action name prefix of preBackup steps.
pub const PRE_BACKUP_PREFIX: &str = "dp-prebackup";
/// Action name prefix of postBackup steps.
pub const POST_BACKUP_PREFIX: &str = "dp-postbackup";
/// The component label KubeBlocks keeps off workloads.
pub const COMPONENT_LABEL: &str = "apps.kubeblocks.io/component-name";
/// The role label of a target pod (`DP_TARGET_POD_ROLE`).
pub const ROLE_LABEL: &str = "kubeblocks.io/role";
/// Container of the deleter Job.
pub const DELETER_CONTAINER: &str = "deleter";
/// Container of the preDelete Job.
pub const PRE_DELETE_CONTAINER: &str = "predelete";

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: None,
            }),
            ..Default::default()
        }),
    }
}

/// `filepath.Join("/", parts...)`: one absolute, clean path.
pub fn join_path(parts: &[&str]) -> String {
    let mut out: Vec<&str> = Vec::new();
    for part in parts {
        for seg in part.split('/') {
            match seg {
                "" | "." => {}
                ".." => {
                    out.pop();
                }
                s => out.push(s),
            }
        }
    }
    format!("/{}", out.join("/"))
}

/// `/<repo prefix>/<namespace>/<policy prefix>` (`DP_BACKUP_ROOT_PATH`).
pub fn backup_root_path(repo_prefix: &str, namespace: &str, policy_prefix: &str) -> String {
    join_path(&[repo_prefix, namespace, policy_prefix])
}

/// `<root>/<backup>`: `status.path`.
pub fn backup_path(
    repo_prefix: &str,
    namespace: &str,
    policy_prefix: &str,
    backup_name: &str,
) -> String {
    join_path(&[
        &backup_root_path(repo_prefix, namespace, policy_prefix),
        backup_name,
    ])
}

/// `DP_TARGET_RELATIVE_PATH`: the target's name, then the pod's under strategy `All`.
pub fn target_relative_path(target: &BackupTarget, pod_name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    if let Some(n) = target.name.as_deref().filter(|n| !n.is_empty()) {
        parts.push(n);
    }
    let all = target
        .pod_selector
        .as_ref()
        .is_some_and(|s| s.strategy() == PodSelectionStrategy::All);
    if all {
        parts.push(pod_name);
    }
    let joined = join_path(&parts);
    joined.trim_start_matches('/').to_string()
}

/// `<target name>-`, or nothing for an unnamed target.
fn target_prefix(target: &BackupTarget) -> String {
    match target.name.as_deref().filter(|n| !n.is_empty()) {
        Some(n) => format!("{n}-"),
        None => String::new(),
    }
}

/// The backupData action of target pod `index`.
pub fn backup_data_action_name(target: &BackupTarget, index: usize) -> String {
    format!("{BACKUP_DATA_PREFIX}-{}{index}", target_prefix(target))
}

/// Step `step` of preBackup for target pod `index`.
pub fn pre_backup_action_name(target: &BackupTarget, step: usize, index: usize) -> String {
    format!(
        "{PRE_BACKUP_PREFIX}-{}{step}-{index}",
        target_prefix(target)
    )
}

/// Step `step` of postBackup for target pod `index`.
pub fn post_backup_action_name(target: &BackupTarget, step: usize, index: usize) -> String {
    format!(
        "{POST_BACKUP_PREFIX}-{}{step}-{index}",
        target_prefix(target)
    )
}

fn uid8(uid: &str) -> &str {
    let mut end = uid.len().min(8);
    while !uid.is_char_boundary(end) {
        end -= 1;
    }
    &uid[..end]
}

/// `<action>-<backup>-<uid[:8]>`, cut to 63 (one trailing `-` dropped).
pub fn job_name(action: &str, backup_name: &str, backup_uid: &str) -> String {
    cut_name(&format!("{action}-{backup_name}-{}", uid8(backup_uid)))
}

/// `<uid[:8]>-predelete-<backup>` cut to 63.
pub fn pre_delete_job_name(backup_name: &str, backup_uid: &str) -> String {
    cut_name(&format!("{}-predelete-{backup_name}", uid8(backup_uid)))
}

/// `<uid[:8]>-delete-<backup>` cut to 63.
pub fn delete_job_name(backup_name: &str, backup_uid: &str) -> String {
    cut_name(&format!("{}-delete-{backup_name}", uid8(backup_uid)))
}

/// Labels of a Backup's workloads: the Backup's minus the component label, plus
/// `backup-name` and `managed-by`.
pub fn workload_labels(backup: &Backup) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = backup
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k != COMPONENT_LABEL)
        .collect();
    labels.insert(
        label::BACKUP_NAME.into(),
        backup.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(label::MANAGED_BY.into(), label::MANAGED_BY_VALUE.into());
    labels
}

/// KubeBlocks' `MergeEnv`: a variable of `overrides` replaces the same-named one in
/// place, the others are appended.
pub fn merge_env(mut base: Vec<EnvVar>, overrides: &[EnvVar]) -> Vec<EnvVar> {
    for o in overrides {
        match base.iter_mut().find(|e| e.name == o.name) {
            Some(e) => *e = o.clone(),
            None => base.push(o.clone()),
        }
    }
    base
}

/// `$(VAR)` expansion as Kubernetes does it (`$$` escapes; unknown references stay).
pub fn expand(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    match vars.get(name) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = body;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The incremental chain of a backup: its parent and the full backup at the base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// `DP_PARENT_BACKUP_NAME`.
    pub parent: String,
    /// `DP_BASE_BACKUP_NAME`.
    pub base: String,
}

/// Everything a backup action's pod depends on.
#[derive(Debug, Clone)]
pub struct BackupJobInputs<'a> {
    /// The Backup (name, namespace, uid, labels, spec).
    pub backup: &'a Backup,
    /// Its policy.
    pub policy: &'a BackupPolicy,
    /// The method used.
    pub method: &'a BackupMethod,
    /// The method's ActionSet.
    pub action_set: &'a ActionSet,
    /// The target being backed up.
    pub target: &'a BackupTarget,
    /// The pod backed up.
    pub target_pod: &'a Pod,
    /// `spec.pathPrefix` of the BackupRepo.
    pub repo_path_prefix: &'a str,
    /// How the pod reaches the repository.
    pub repo: RepoMount,
    /// The worker service account of the Backup's namespace.
    pub service_account: &'a str,
    /// Parent and base (incrementals), when both exist.
    pub chain: Option<Chain>,
}

impl BackupJobInputs<'_> {
    fn namespace(&self) -> String {
        self.backup.metadata.namespace.clone().unwrap_or_default()
    }

    fn backup_name(&self) -> String {
        self.backup.metadata.name.clone().unwrap_or_default()
    }

    fn pod_name(&self) -> String {
        self.target_pod.metadata.name.clone().unwrap_or_default()
    }

    fn first_container(&self) -> Option<&Container> {
        self.target_pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
    }

    /// `DP_BACKUP_BASE_PATH` of this target pod.
    pub fn base_path(&self) -> String {
        let path = backup_path(
            self.repo_path_prefix,
            &self.namespace(),
            self.policy.spec.path_prefix.as_deref().unwrap_or(""),
            &self.backup_name(),
        );
        join_path(&[&path, &target_relative_path(self.target, &self.pod_name())])
    }
}

/// An error building a backup pod: the target pod does not give what is asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

/// `DP_DB_HOST` and `DP_DB_PORT` (and the credential's user and password), as
/// KubeBlocks' `BuildEnvByTarget`.
///
/// # Errors
/// `containerPort` names a container or port the pod does not have.
pub fn target_db_env(target: &BackupTarget, pod: &Pod) -> Result<Vec<EnvVar>, BuildError> {
    let host = pod_host_dns(pod);
    let port = || -> Result<EnvVar, BuildError> {
        let spec = pod.spec.as_ref();
        let Some(cp) = &target.container_port else {
            let first = spec
                .and_then(|s| s.containers.first())
                .and_then(|c| c.ports.as_ref())
                .and_then(|p| p.first())
                .map_or(0, |p| p.container_port);
            return Ok(env("DP_DB_PORT", &first.to_string()));
        };
        let port = spec
            .into_iter()
            .flat_map(|s| s.containers.iter())
            .filter(|c| c.name == cp.container_name)
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(cp.port_name.as_str()));
        match port {
            Some(p) => Ok(env("DP_DB_PORT", &p.container_port.to_string())),
            None => Err(BuildError(format!(
                "the target pod {} has no port {:?} in container {:?} (policy target containerPort)",
                pod.metadata.name.as_deref().unwrap_or(""),
                cp.port_name,
                cp.container_name
            ))),
        }
    };
    let mut out = Vec::new();
    match &target.connection_credential {
        None => {
            out.push(env("DP_DB_HOST", &host));
            out.push(port()?);
        }
        Some(c) => {
            match c.host_key.as_deref().filter(|k| !k.is_empty()) {
                Some(k) => out.push(secret_env("DP_DB_HOST", &c.secret_name, k)),
                None => out.push(env("DP_DB_HOST", &host)),
            }
            match c.port_key.as_deref().filter(|k| !k.is_empty()) {
                Some(k) => out.push(secret_env("DP_DB_PORT", &c.secret_name, k)),
                None => out.push(port()?),
            }
            if !c.password_key().is_empty() {
                out.push(secret_env(
                    "DP_DB_PASSWORD",
                    &c.secret_name,
                    c.password_key(),
                ));
            }
            if !c.username_key().is_empty() {
                out.push(secret_env("DP_DB_USER", &c.secret_name, c.username_key()));
            }
        }
    }
    Ok(out)
}

/// KubeBlocks' `BuildPodHostDNS`: `<hostname|pod>.<subdomain>` when the pod has a
/// subdomain, else its IP.
pub fn pod_host_dns(pod: &Pod) -> String {
    let spec = pod.spec.as_ref();
    match spec
        .and_then(|s| s.subdomain.as_deref())
        .filter(|s| !s.is_empty())
    {
        Some(sub) => {
            let host = spec
                .and_then(|s| s.hostname.as_deref())
                .filter(|h| !h.is_empty())
                .map(str::to_string)
                .or_else(|| pod.metadata.name.clone())
                .unwrap_or_default();
            format!("{host}.{sub}")
        }
        None => pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default(),
    }
}

/// The environment of a backup action's container, in KubeBlocks' order (module doc).
///
/// # Errors
/// See [`target_db_env`].
pub fn backup_env(inputs: &BackupJobInputs<'_>) -> Result<Vec<EnvVar>, BuildError> {
    let backup = inputs.backup;
    let mut out: Vec<EnvVar> = inputs
        .first_container()
        .and_then(|c| c.env.clone())
        .unwrap_or_default();
    let role = inputs
        .target_pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(ROLE_LABEL))
        .cloned()
        .unwrap_or_default();
    let ttl = backup
        .spec
        .retention_period
        .as_ref()
        .map(|r| r.as_str().to_string())
        .unwrap_or_default();
    out.extend([
        env("DP_BACKUP_NAME", &inputs.backup_name()),
        env("DP_TARGET_POD_NAME", &inputs.pod_name()),
        env("DP_TARGET_POD_ROLE", &role),
        env("DP_BACKUP_BASE_PATH", &inputs.base_path()),
        env("DP_BACKUP_INFO_FILE", BACKUP_INFO_FILE),
        env("DP_TTL", &ttl),
    ]);
    out.extend(target_db_env(inputs.target, inputs.target_pod)?);
    out.extend(inputs.action_set.spec.env.clone().unwrap_or_default());
    for p in backup.spec.parameters.iter().flatten() {
        out.push(env(&p.name, &p.value));
    }
    let labels = backup.metadata.labels.clone().unwrap_or_default();
    for (key, name) in [
        (label::CLUSTER_UID, "KB_CLUSTER_UID"),
        ("app.kubernetes.io/instance", "KB_CLUSTER_NAME"),
        (COMPONENT_LABEL, "KB_COMP_NAME"),
    ] {
        if let Some(v) = labels.get(key) {
            out.push(env(name, v));
        }
    }
    out.push(env("KB_NAMESPACE", &inputs.namespace()));
    if let Some(chain) = &inputs.chain {
        out.extend([
            env("DP_PARENT_BACKUP_NAME", &chain.parent),
            env("DP_BASE_BACKUP_NAME", &chain.base),
            env(
                "DP_TARGET_RELATIVE_PATH",
                &target_relative_path(inputs.target, &inputs.pod_name()),
            ),
            env(
                "DP_BACKUP_ROOT_PATH",
                &backup_root_path(
                    inputs.repo_path_prefix,
                    &inputs.namespace(),
                    inputs.policy.spec.path_prefix.as_deref().unwrap_or(""),
                ),
            ),
        ]);
    }
    Ok(merge_env(
        out,
        inputs.method.env.as_deref().unwrap_or_default(),
    ))
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    }
}

/// The target pod's volumes and mounts named by the method's `targetVolumes`.
fn target_volumes(inputs: &BackupJobInputs<'_>) -> (Vec<Volume>, Vec<VolumeMount>) {
    let Some(info) = &inputs.method.target_volumes else {
        return (Vec::new(), Vec::new());
    };
    let pod_volumes = inputs
        .target_pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    let mut names: Vec<String> = info.volumes.clone().unwrap_or_default();
    let mounts = info.volume_mounts.clone().unwrap_or_default();
    for m in &mounts {
        if !names.contains(&m.name) {
            names.push(m.name.clone());
        }
    }
    let volumes = pod_volumes
        .into_iter()
        .filter(|v| names.contains(&v.name))
        .collect::<Vec<_>>();
    let mounts = mounts
        .into_iter()
        .filter(|m| volumes.iter().any(|v| v.name == m.name))
        .collect();
    (volumes, mounts)
}

/// The pod of one Job action (`container`: its container's name).
///
/// # Errors
/// See [`target_db_env`].
pub fn action_pod_spec(
    inputs: &BackupJobInputs<'_>,
    container: &str,
    job: &JobActionSpec,
    config: &ControllerConfig,
) -> Result<PodSpec, BuildError> {
    let env = backup_env(inputs)?;
    let vars: BTreeMap<String, String> = env
        .iter()
        .filter_map(|e| e.value.clone().map(|v| (e.name.clone(), v)))
        .collect();
    let on_node = job.run_on_target_pod_node == Some(true);
    let mut volumes = vec![Volume {
        name: MANAGER_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }];
    let mut mounts = vec![mount(MANAGER_VOLUME, MANAGER_MOUNT_PATH)];
    if on_node {
        let (v, m) = target_volumes(inputs);
        volumes.extend(v);
        mounts.extend(m);
    }
    let mut env_from = inputs
        .first_container()
        .and_then(|c| c.env_from.clone())
        .unwrap_or_default();
    env_from.extend(inputs.action_set.spec.env_from.clone().unwrap_or_default());
    let c = Container {
        name: container.into(),
        image: Some(expand(&job.image, &vars)),
        image_pull_policy: config.image_pull_policy.clone(),
        command: Some(job.command.clone()),
        env: Some(env),
        env_from: (!env_from.is_empty()).then_some(env_from),
        volume_mounts: Some(mounts),
        resources: inputs
            .method
            .runtime_settings
            .as_ref()
            .and_then(|r| r.resources.clone()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            run_as_user: Some(0),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut spec = PodSpec {
        containers: vec![c],
        volumes: Some(volumes),
        service_account_name: Some(inputs.service_account.into()),
        restart_policy: Some("Never".into()),
        ..Default::default()
    };
    if on_node {
        let target_spec = inputs.target_pod.spec.as_ref();
        spec.tolerations = target_spec.and_then(|s| s.tolerations.clone());
        spec.node_selector = Some(BTreeMap::from([(
            "kubernetes.io/hostname".to_string(),
            target_spec
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
        )]));
    } else {
        add_scheduling(&mut spec, config);
    }
    inject_datasafed(
        &mut spec,
        &inputs.repo,
        inputs.policy.spec.encryption_config.as_ref(),
        config,
    );
    Ok(spec)
}

/// Adds the `manager` sidecar: a copy of the first container (its environment and
/// mounts) running [`MANAGER_COMMAND`] from the tools image, with `DP_CHECK_INTERVAL`.
pub fn inject_manager(
    spec: &mut PodSpec,
    interval_seconds: Option<i32>,
    config: &ControllerConfig,
) {
    let Some(first) = spec.containers.first() else {
        return;
    };
    let mut c = first.clone();
    c.name = MANAGER_CONTAINER.into();
    c.image = Some(config.tools_image.clone());
    c.image_pull_policy = config.image_pull_policy.clone();
    c.resources = None;
    c.command = Some(MANAGER_COMMAND.iter().map(|s| s.to_string()).collect());
    c.args = None;
    let interval = interval_seconds
        .filter(|i| *i > 0)
        .unwrap_or(DEFAULT_CHECK_INTERVAL);
    c.env
        .get_or_insert_with(Vec::new)
        .push(env("DP_CHECK_INTERVAL", &interval.to_string()));
    spec.containers.push(c);
}

/// A Job of the Backup running `pod`, named `name`, in the Backup's namespace.
pub fn backup_workload_job(
    backup: &Backup,
    name: &str,
    pod: PodSpec,
    backoff_limit: Option<i32>,
) -> Job {
    let labels = workload_labels(backup);
    Job {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: backup.metadata.namespace.clone(),
            labels: Some(labels.clone()),
            finalizers: Some(vec![FINALIZER.into()]),
            owner_references: controller_ref(backup).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit,
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    name: Some(name.into()),
                    namespace: backup.metadata.namespace.clone(),
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// The backupData Job of target pod `index`.
///
/// # Errors
/// See [`target_db_env`]; an ActionSet without `backup.backupData`.
pub fn backup_data_job(
    inputs: &BackupJobInputs<'_>,
    index: usize,
    config: &ControllerConfig,
) -> Result<Job, BuildError> {
    let data = inputs
        .action_set
        .spec
        .backup
        .as_ref()
        .and_then(|b| b.backup_data.as_ref())
        .ok_or_else(|| {
            BuildError(format!(
                "ActionSet {} has no backup.backupData",
                inputs.action_set.metadata.name.as_deref().unwrap_or("")
            ))
        })?;
    let action = backup_data_action_name(inputs.target, index);
    let mut pod = action_pod_spec(inputs, BACKUP_DATA_CONTAINER, &data.job, config)?;
    inject_manager(
        &mut pod,
        data.sync_progress.as_ref().and_then(|s| s.interval_seconds),
        config,
    );
    let name = job_name(
        &action,
        &inputs.backup_name(),
        inputs.backup.metadata.uid.as_deref().unwrap_or(""),
    );
    Ok(backup_workload_job(
        inputs.backup,
        &name,
        pod,
        inputs.policy.spec.backoff_limit,
    ))
}

/// The Job of a pre- or postBackup step (`action`: its action name).
///
/// # Errors
/// See [`target_db_env`].
pub fn step_job(
    inputs: &BackupJobInputs<'_>,
    action: &str,
    job: &JobActionSpec,
    config: &ControllerConfig,
) -> Result<Job, BuildError> {
    let pod = action_pod_spec(inputs, action, job, config)?;
    let name = job_name(
        action,
        &inputs.backup_name(),
        inputs.backup.metadata.uid.as_deref().unwrap_or(""),
    );
    Ok(backup_workload_job(
        inputs.backup,
        &name,
        pod,
        inputs.policy.spec.backoff_limit,
    ))
}

/// The deleter's script: remove the backup's files, then its directory and every parent
/// that is left empty (up to, not including, the repository root).
pub fn delete_script(path: &str) -> String {
    let quoted = shell_quote(path);
    format!(
        r#"set -e
export PATH="$PATH:$DP_DATASAFED_BIN_PATH"
export DATASAFED_KOPIA_MAINTENANCE=true
target={quoted}
echo "removing $target"
datasafed rm -r "$target"
dir="$target"
while [ -n "$dir" ] && [ "$dir" != "/" ]; do
  if [ -n "$(datasafed list "$dir")" ]; then
    break
  fi
  datasafed rmdir "$dir" || true
  dir=$(dirname "$dir")
done
echo "removed $target"
"#
    )
}

/// The deleter Job of `backup` (files at `path`), in the Backup's namespace.
pub fn delete_job(
    backup: &Backup,
    path: &str,
    repo: &RepoMount,
    service_account: &str,
    config: &ControllerConfig,
) -> Job {
    let name = delete_job_name(
        backup.metadata.name.as_deref().unwrap_or(""),
        backup.metadata.uid.as_deref().unwrap_or(""),
    );
    let mut pod = PodSpec {
        containers: vec![Container {
            name: DELETER_CONTAINER.into(),
            image: Some(config.tools_image.clone()),
            image_pull_policy: config.image_pull_policy.clone(),
            command: Some(vec!["sh".into(), "-c".into(), delete_script(path)]),
            security_context: Some(no_privilege_escalation()),
            ..Default::default()
        }],
        service_account_name: Some(service_account.into()),
        restart_policy: Some("Never".into()),
        ..Default::default()
    };
    add_scheduling(&mut pod, config);
    inject_datasafed(&mut pod, repo, None, config);
    let mut job = backup_workload_job(backup, &name, pod, Some(2));
    // The deleter outlives nothing: it runs while the Backup is being deleted, so it
    // carries no finalizer of ours and is removed with the Backup by its owner reference.
    job.metadata.finalizers = None;
    job
}

/// The preDelete Job of `backup`: the ActionSet's image and command with
/// `DP_BACKUP_BASE_PATH` and `DP_BACKUP_NAME`.
pub fn pre_delete_job(
    backup: &Backup,
    base_path: &str,
    image: &str,
    command: &[String],
    repo: &RepoMount,
    service_account: &str,
    config: &ControllerConfig,
) -> Job {
    let backup_name = backup.metadata.name.clone().unwrap_or_default();
    let name = pre_delete_job_name(&backup_name, backup.metadata.uid.as_deref().unwrap_or(""));
    let mut pod = PodSpec {
        containers: vec![Container {
            name: PRE_DELETE_CONTAINER.into(),
            image: Some(image.into()),
            image_pull_policy: config.image_pull_policy.clone(),
            command: Some(command.to_vec()),
            env: Some(vec![
                env("DP_BACKUP_BASE_PATH", base_path),
                env("DP_BACKUP_NAME", &backup_name),
            ]),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                run_as_user: Some(0),
                ..Default::default()
            }),
            ..Default::default()
        }],
        service_account_name: Some(service_account.into()),
        restart_policy: Some("Never".into()),
        ..Default::default()
    };
    add_scheduling(&mut pod, config);
    inject_datasafed(&mut pod, repo, None, config);
    let mut job = backup_workload_job(backup, &name, pod, Some(2));
    job.metadata.finalizers = None;
    job
}

pub mod statefulset;

#[cfg(test)]
mod tests;
