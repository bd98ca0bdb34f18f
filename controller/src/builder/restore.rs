//! The Jobs and PersistentVolumeClaims of a Restore (CONTROLLER.md section 2, "Restore"),
//! built as KubeBlocks builds them so addon restore scripts run unchanged:
//!
//! - names: `restore-preparedata-<uid8>-<backup>-<i>` and
//!   `restore-post-ready-<uid8>-<backup>-<step>-<i>`, longer than 63 bytes cut to the first
//!   57, `-`, and the last 5 ([`cut_job_name`]);
//! - labels `app.kubernetes.io/managed-by` and `dataprotection.kubeblocks.io/restore` (plus
//!   the labels of the claims a template made);
//! - the pod runs as uid 0, `restartPolicy: Never`, with the Restore's `schedulingSpec`
//!   (prepareData) or the target pod's node and tolerations (postReady jobs), `backoffLimit`
//!   from the Restore, else 1;
//! - the container `restore` gets the restore environment ([`restore_env`], in
//!   KubeBlocks' order), the ActionSet's image with `$(VAR)` expanded from that
//!   environment, the restored claims, and the backup's `extras` at
//!   `/dp_downward/status_extras`;
//! - the sidecar `restore-manager` waits for the pod annotation
//!   `dataprotection.kubeblocks.io/stop-restore-manager=true` (read through a downward-API
//!   file), which the controller sets once every restore container of the stage ended, so
//!   the pods of one stage hold their node until all are done;
//! - datasafed is injected ([`super::datasafed`]).
//!
//! dprepo's addition: **a restore never reports success over empty data.** The
//! `restore-manager` also mounts each restored claim read-only under `/dp-restored/`, and
//! once told to stop it checks that every one of them holds something (an entry other than
//! `lost+found`). A claim that is still empty fails the sidecar with a termination message
//! starting with [`EMPTY_VOLUME_MARKER`], naming the claim; the controller fails the action
//! with it, so a restore script that exits 0 after writing nothing is a failed restore.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, DownwardAPIVolumeFile, DownwardAPIVolumeSource, EnvVar, EnvVarSource,
    ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimVolumeSource,
    PodSecurityContext, PodSpec, PodTemplateSpec, SecretKeySelector, Toleration, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::datasafed::{inject_datasafed, RepoMount};
use super::restore_time::{format_go, in_zone, RFC3339_LAYOUT};
use crate::api::actionset::ActionSet;
use crate::api::backup::{Backup, BackupStatusTarget};
use crate::api::backuppolicy::{ConnectionCredential, PodSelectionStrategy};
use crate::api::labels::{annotation, label};
use crate::api::restore::{
    DataRestorePolicy, RequiredPolicyForAllPodSelection, Restore, RestoreVolumeClaim,
};
use crate::config::ControllerConfig;

/// The restore container.
pub const RESTORE_CONTAINER: &str = "restore";
/// The sidecar that holds the pod until the stage ends, then checks the restored claims.
pub const MANAGER_CONTAINER: &str = "restore-manager";
/// The manager's downward-API volume (KubeBlocks' name, spelling included).
pub const MANAGER_DOWNWARD_VOLUME: &str = "downward-volume-sidecard";
/// The restore container's downward-API volume (the backup's extras).
pub const EXTRAS_DOWNWARD_VOLUME: &str = "downward-volume";
/// Where both downward-API volumes are mounted.
pub const DOWNWARD_MOUNT_PATH: &str = "/dp_downward";
/// The file the manager waits for.
pub const STOP_FILE: &str = "stop_restore_manager";
/// The file with the backup's extras (JSON).
pub const EXTRAS_FILE: &str = "status_extras";
/// Where the manager mounts the restored claims (read-only), one directory per volume.
pub const RESTORED_MOUNT_ROOT: &str = "/dp-restored";
/// How the manager's termination message starts when a restored claim is empty.
pub const EMPTY_VOLUME_MARKER: &str = "restored volume is empty:";
/// KubeBlocks' default `backoffLimit` of restore Jobs.
pub const DEFAULT_BACKOFF_LIMIT: i32 = 1;

/// The env names of the restore contract.
pub mod env {
    /// The backup restored.
    pub const BACKUP_NAME: &str = "DP_BACKUP_NAME";
    /// `<target>[/<pod>]` under the backup's path.
    pub const TARGET_RELATIVE_PATH: &str = "DP_TARGET_RELATIVE_PATH";
    /// The parent of the backup's path.
    pub const BACKUP_ROOT_PATH: &str = "DP_BACKUP_ROOT_PATH";
    /// The backup's path joined with the relative path.
    pub const BACKUP_BASE_PATH: &str = "DP_BACKUP_BASE_PATH";
    /// The full backup under an incremental or continuous one.
    pub const BASE_BACKUP_NAME: &str = "DP_BASE_BACKUP_NAME";
    /// The incrementals between the base and the backup, oldest first, comma-separated.
    pub const ANCESTOR_INCREMENTAL_BACKUP_NAMES: &str = "DP_ANCESTOR_INCREMENTAL_BACKUP_NAMES";
    /// The end of the backup's data.
    pub const BACKUP_STOP_TIME: &str = "DP_BACKUP_STOP_TIME";
    /// The start of the base backup's data.
    pub const BASE_BACKUP_START_TIME: &str = "DP_BASE_BACKUP_START_TIME";
    /// The same, in Unix seconds.
    pub const BASE_BACKUP_START_TIMESTAMP: &str = "DP_BASE_BACKUP_START_TIMESTAMP";
    /// The end of the base backup's data.
    pub const BASE_BACKUP_STOP_TIME: &str = "DP_BASE_BACKUP_STOP_TIME";
    /// The same, in Unix seconds.
    pub const BASE_BACKUP_STOP_TIMESTAMP: &str = "DP_BASE_BACKUP_STOP_TIMESTAMP";
    /// The point in time restored to.
    pub const RESTORE_TIME: &str = "DP_RESTORE_TIME";
    /// The same, in Unix seconds.
    pub const RESTORE_TIMESTAMP: &str = "DP_RESTORE_TIMESTAMP";
    /// The Go layout of the times above (read from the ActionSet's env).
    pub const TIME_FORMAT: &str = "DP_TIME_FORMAT";
    /// The database host of postReady jobs.
    pub const DB_HOST: &str = "DP_DB_HOST";
    /// Its port.
    pub const DB_PORT: &str = "DP_DB_PORT";
    /// Its user.
    pub const DB_USER: &str = "DP_DB_USER";
    /// Its password.
    pub const DB_PASSWORD: &str = "DP_DB_PASSWORD";
}

/// The stage of a restore action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Writing the data into new volumes.
    PrepareData,
    /// Steps run against the running cluster.
    PostReady,
}

impl Stage {
    /// The name KubeBlocks uses in action names and status fields.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::PrepareData => "prepareData",
            Stage::PostReady => "postReady",
        }
    }
}

/// A restore action's name: `<stage>-<step>` (KubeBlocks').
pub fn action_name(stage: Stage, step: usize) -> String {
    format!("{}-{step}", stage.as_str())
}

/// KubeBlocks' `cutJobName`: more than 63 bytes become the first 57, `-`, the last 5.
pub fn cut_job_name(name: &str) -> String {
    let b = name.as_bytes();
    if b.len() <= 63 {
        return name.to_string();
    }
    // Names are ASCII (a uid prefix and object names); a non-ASCII byte would not be a
    // valid name anyway, so a lossy cut cannot make a valid name invalid.
    format!(
        "{}-{}",
        String::from_utf8_lossy(&b[..57]),
        String::from_utf8_lossy(&b[b.len() - 5..])
    )
}

fn uid8(restore: &Restore) -> String {
    restore
        .metadata
        .uid
        .as_deref()
        .unwrap_or("")
        .chars()
        .take(8)
        .collect()
}

/// The name of the `index`th prepareData Job restoring `backup`.
pub fn prepare_data_job_name(restore: &Restore, backup: &str, index: usize) -> String {
    cut_job_name(&format!(
        "restore-preparedata-{}-{backup}-{index}",
        uid8(restore)
    ))
}

/// The name of the `index`th Job of postReady step `step` restoring `backup`.
pub fn post_ready_job_name(restore: &Restore, backup: &str, step: usize, index: usize) -> String {
    cut_job_name(&format!(
        "restore-post-ready-{}-{backup}-{step}-{index}",
        uid8(restore)
    ))
}

/// The labels of every restore Job and pod.
pub fn restore_labels(restore_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            label::MANAGED_BY.to_string(),
            label::MANAGED_BY_VALUE.to_string(),
        ),
        (label::RESTORE.to_string(), restore_name.to_string()),
    ])
}

/// One backup of what a Restore restores, with the ActionSet that made it.
#[derive(Clone, Debug)]
pub struct BackupSet {
    /// The backup.
    pub backup: Backup,
    /// Its ActionSet (`status.backupMethod.actionSetName`).
    pub action_set: ActionSet,
    /// The full backup under it (incremental chains; the base of a point-in-time restore).
    pub base: Option<Backup>,
    /// The incrementals between `base` and `backup`, oldest first.
    pub ancestors: Vec<String>,
}

impl BackupSet {
    /// The backup's name.
    pub fn name(&self) -> &str {
        self.backup.metadata.name.as_deref().unwrap_or("")
    }
}

/// KubeBlocks' `MergeEnv`: each of `extra` replaces the variable of its name in place,
/// or is appended.
pub fn merge_env(env: &mut Vec<EnvVar>, extra: &[EnvVar]) {
    for e in extra {
        match env.iter_mut().find(|x| x.name == e.name) {
            Some(x) => *x = e.clone(),
            None => env.push(e.clone()),
        }
    }
}

/// Expands `$(VAR)` in `text` from the literal values of `env`, as the kubelet expands
/// commands: `$$` is a literal `$`, an unknown or non-literal variable stays as written.
pub fn expand_vars(text: &str, env: &[EnvVar]) -> String {
    let lookup = |name: &str| {
        env.iter()
            .rev()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('(') {
            match r.find(')') {
                Some(end) => {
                    let name = &r[..end];
                    match lookup(name) {
                        Some(v) => out.push_str(&v),
                        None => out.push_str(&rest[i..i + 3 + end]),
                    }
                    rest = &r[end + 1..];
                }
                None => {
                    out.push_str(&rest[i..]);
                    rest = "";
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

fn var(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// Go's `filepath.Join("/", parts...)`: one absolute, cleaned path.
pub fn join_clean(parts: &[&str]) -> String {
    let mut out: Vec<&str> = Vec::new();
    for part in parts {
        for p in part.split('/') {
            match p {
                "" | "." => {}
                ".." => {
                    out.pop();
                }
                p => out.push(p),
            }
        }
    }
    format!("/{}", out.join("/"))
}

/// `<target>[/<pod>]` (KubeBlocks' `GetTargetRelativePath`).
pub fn target_relative_path(target_name: &str, pod_name: &str) -> String {
    [target_name, pod_name]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("/")
}

/// The target of `backup` a Restore restores: `status.target`, else the one of
/// `status.targets` named `source_target_name`.
pub fn status_target<'a>(
    backup: &'a Backup,
    source_target_name: Option<&str>,
) -> Option<&'a BackupStatusTarget> {
    let status = backup.status.as_ref()?;
    if let Some(t) = &status.target {
        return Some(t);
    }
    status
        .targets
        .iter()
        .flatten()
        .find(|t| t.target.name.as_deref() == source_target_name)
}

/// The original pod whose data the `index`th restored replica gets (KubeBlocks'
/// `GetSourcePodNameFromTarget`): none for strategy `Any`; for `All`, the pod of the same
/// position (`OneToOne`) or the one named (`OneToMany`).
///
/// # Errors
/// Strategy `All` without `requiredPolicyForAllPodSelection`, or `OneToMany` without a
/// source pod.
pub fn source_target_pod(
    target: &BackupStatusTarget,
    policy: Option<&RequiredPolicyForAllPodSelection>,
    index: usize,
) -> Result<Option<String>, String> {
    let strategy = target
        .target
        .pod_selector
        .as_ref()
        .map(|p| p.strategy())
        .unwrap_or_default();
    if strategy == PodSelectionStrategy::Any {
        return Ok(None);
    }
    let Some(policy) = policy else {
        return Err("requiredPolicyForAllPodSelection is required when the backup's target selected all pods (strategy All)".into());
    };
    if policy.data_restore_policy == DataRestorePolicy::OneToMany {
        return match policy
            .source_of_one_to_many
            .as_ref()
            .map(|s| s.target_pod_name.as_str())
        {
            Some(p) if !p.is_empty() => Ok(Some(p.to_string())),
            _ => Err(
                "sourceOfOneToMany.targetPodName is required with dataRestorePolicy OneToMany"
                    .into(),
            ),
        };
    }
    Ok(target
        .selected_target_pods
        .as_ref()
        .and_then(|p| p.get(index))
        .cloned())
}

/// The environment of a restore container, in KubeBlocks' order:
/// `DP_BACKUP_NAME`; when the backup has a path, `DP_TARGET_RELATIVE_PATH`,
/// `DP_BACKUP_ROOT_PATH`, `DP_BACKUP_BASE_PATH`; `DP_BASE_BACKUP_NAME` and
/// `DP_ANCESTOR_INCREMENTAL_BACKUP_NAMES` when there is a base; `DP_BACKUP_STOP_TIME`;
/// the base's `DP_BASE_BACKUP_{START,STOP}_TIME[STAMP]`; `DP_RESTORE_TIME[STAMP]`; the
/// Restore's parameters; the ActionSet's env; then the backup method's env and the
/// Restore's env replace same-named variables (the Restore's win).
///
/// Times are in the zone of the backup they belong to and the ActionSet's
/// `DP_TIME_FORMAT` (RFC 3339 when unset); the restore time in the restored backup's zone.
/// `target_name` names the directory of the target (the Restore's `sourceTargetName`, else
/// the backup's target name); `source_pod` the original pod (strategy `All`).
pub fn restore_env(
    restore: &Restore,
    set: &BackupSet,
    target_name: &str,
    source_pod: Option<&str>,
) -> Vec<EnvVar> {
    let backup = &set.backup;
    let status = backup.status.clone().unwrap_or_default();
    let mut env = vec![var(env::BACKUP_NAME, set.name())];
    if let Some(path) = status.path.as_deref().filter(|p| !p.is_empty()) {
        let relative = target_relative_path(target_name, source_pod.unwrap_or(""));
        env.push(var(env::TARGET_RELATIVE_PATH, relative.clone()));
        env.push(var(env::BACKUP_ROOT_PATH, join_clean(&[path, ".."])));
        env.push(var(env::BACKUP_BASE_PATH, join_clean(&[path, &relative])));
    }
    if let Some(base) = &set.base {
        env.push(var(
            env::BASE_BACKUP_NAME,
            base.metadata.name.clone().unwrap_or_default(),
        ));
    }
    if !set.ancestors.is_empty() {
        env.push(var(
            env::ANCESTOR_INCREMENTAL_BACKUP_NAMES,
            set.ancestors.join(","),
        ));
    }
    let action_env = set.action_set.spec.env.clone().unwrap_or_default();
    let layout = action_env
        .iter()
        .find(|e| e.name == env::TIME_FORMAT)
        .and_then(|e| e.value.clone())
        .unwrap_or_else(|| RFC3339_LAYOUT.to_string());
    let zone_of = |b: &Backup| {
        b.status
            .as_ref()
            .and_then(|s| s.time_range.as_ref())
            .and_then(|r| r.time_zone.clone())
    };
    let mut time = |name: &str, stamp: Option<&str>, zone: Option<String>, t: Option<i64>| {
        let Some(t) = t.and_then(|s| chrono::DateTime::from_timestamp(s, 0)) else {
            return;
        };
        if t.timestamp() == 0 {
            return;
        }
        env.push(var(name, format_go(in_zone(t, zone.as_deref()), &layout)));
        if let Some(stamp) = stamp {
            env.push(var(stamp, t.timestamp().to_string()));
        }
    };
    let secs = |t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.map(|t| t.0.as_second())
    };
    time(
        env::BACKUP_STOP_TIME,
        None,
        zone_of(backup),
        secs(backup.end_time()),
    );
    if let Some(base) = &set.base {
        time(
            env::BASE_BACKUP_START_TIME,
            Some(env::BASE_BACKUP_START_TIMESTAMP),
            zone_of(base),
            secs(base.start_time()),
        );
        time(
            env::BASE_BACKUP_STOP_TIME,
            Some(env::BASE_BACKUP_STOP_TIMESTAMP),
            zone_of(base),
            secs(base.end_time()),
        );
    }
    if let Some(rt) = restore
        .spec
        .restore_time
        .as_deref()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
    {
        time(
            env::RESTORE_TIME,
            Some(env::RESTORE_TIMESTAMP),
            zone_of(backup),
            Some(rt.timestamp()),
        );
    }
    for p in restore.spec.parameters.iter().flatten() {
        env.push(var(&p.name, p.value.clone()));
    }
    env.extend(action_env);
    if let Some(method_env) = status.backup_method.as_ref().and_then(|m| m.env.as_ref()) {
        merge_env(&mut env, method_env);
    }
    if let Some(restore_env) = &restore.spec.env {
        merge_env(&mut env, restore_env);
    }
    env
}

/// The `DP_DB_*` variables of a postReady job against `pod` (KubeBlocks'
/// `addTargetPodAndCredentialEnv`): the pod's first container's env, then host and port
/// (the pod's DNS name and its first container's first port, or the Secret's keys), user
/// and password from the connection credential.
pub fn target_pod_env(
    pod: &k8s_openapi::api::core::v1::Pod,
    credential: Option<&ConnectionCredential>,
    cluster_domain: &str,
) -> Vec<EnvVar> {
    let mut env: Vec<EnvVar> = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.env.clone())
        .unwrap_or_default();
    let host = || var(env::DB_HOST, pod_host_dns(pod, cluster_domain));
    let port = || {
        pod.spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.ports.as_ref())
            .and_then(|p| p.first())
            .map(|p| var(env::DB_PORT, p.container_port.to_string()))
    };
    let secret = |name: &str, secret: &str, key: &str| EnvVar {
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
    };
    match credential {
        None => {
            env.push(host());
            env.extend(port());
        }
        Some(c) => {
            env.push(secret(env::DB_USER, &c.secret_name, c.username_key()));
            env.push(secret(env::DB_PASSWORD, &c.secret_name, c.password_key()));
            match c.port_key.as_deref().filter(|k| !k.is_empty()) {
                Some(k) => env.push(secret(env::DB_PORT, &c.secret_name, k)),
                None => env.extend(port()),
            }
            match c.host_key.as_deref().filter(|k| !k.is_empty()) {
                Some(k) => env.push(secret(env::DB_HOST, &c.secret_name, k)),
                None => env.push(host()),
            }
        }
    }
    env
}

/// A pod's DNS name: `<hostname>.<subdomain>.<ns>.svc.<domain>` when it has a subdomain,
/// else its IP (KubeBlocks' `BuildPodHostDNS`).
pub fn pod_host_dns(pod: &k8s_openapi::api::core::v1::Pod, cluster_domain: &str) -> String {
    let spec = pod.spec.as_ref();
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    match spec
        .and_then(|s| s.subdomain.as_deref())
        .filter(|s| !s.is_empty())
    {
        Some(sub) => {
            let host = spec
                .and_then(|s| s.hostname.clone())
                .or_else(|| pod.metadata.name.clone())
                .unwrap_or_default();
            format!("{host}.{sub}.{ns}.svc.{cluster_domain}")
        }
        None => pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default(),
    }
}

/// The claims the `index`th prepareData Job restores into: every `volumeClaims` entry, and
/// each template of `volumeClaimsTemplate` named `<template>-<startingIndex + index>`.
/// The second element says which came from a template (KubeBlocks' volume name prefix
/// `dp-claim-tpl` rather than `dp-claim`).
pub fn claims_for_index(restore: &Restore, index: usize) -> Vec<(RestoreVolumeClaim, bool)> {
    let Some(config) = restore.spec.prepare_data_config.as_ref() else {
        return Vec::new();
    };
    let mut out: Vec<(RestoreVolumeClaim, bool)> = config
        .volume_claims
        .iter()
        .flatten()
        .map(|c| (c.clone(), false))
        .collect();
    if let Some(t) = &config.volume_claims_template {
        let start = t.starting_index.unwrap_or(0).max(0) as usize;
        for template in &t.templates {
            let mut claim = template.clone();
            let base = claim.metadata.name.clone().unwrap_or_default();
            claim.metadata.name = Some(format!("{base}-{}", start + index));
            out.push((claim, true));
        }
    }
    out
}

/// How many prepareData Jobs a backup needs: the template's replicas, else one.
pub fn prepare_data_job_count(restore: &Restore) -> usize {
    restore
        .spec
        .prepare_data_config
        .as_ref()
        .and_then(|c| c.volume_claims_template.as_ref())
        .map(|t| t.replicas.max(1) as usize)
        .unwrap_or(1)
}

/// The PersistentVolumeClaim of a restored claim, in the Restore's namespace.
pub fn claim_pvc(restore: &Restore, claim: &RestoreVolumeClaim) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: claim.metadata.name.clone(),
            namespace: restore.metadata.namespace.clone(),
            labels: claim.metadata.labels.clone(),
            annotations: claim.metadata.annotations.clone(),
            finalizers: claim.metadata.finalizers.clone(),
            ..Default::default()
        },
        spec: Some(claim.volume_claim_spec.clone()),
        status: None,
    }
}

/// The volume and mount of a restored claim in the restore container: volume
/// `<dp-claim|dp-claim-tpl>-<claim>` (cut to 63), mounted at the claim's `mountPath`, else
/// at the mount path the backup method recorded for its `volumeSource`.
///
/// # Errors
/// Neither gives a mount path.
pub fn claim_volume(
    claim: &RestoreVolumeClaim,
    from_template: bool,
    backup: &Backup,
) -> Result<(Volume, VolumeMount), String> {
    let claim_name = claim.metadata.name.clone().unwrap_or_default();
    let prefix = if from_template {
        "dp-claim-tpl"
    } else {
        "dp-claim"
    };
    let name = super::names::cut_name(&format!("{prefix}-{claim_name}"));
    let config = &claim.volume_config;
    let mount_path = match config.mount_path.as_deref().filter(|p| !p.is_empty()) {
        Some(p) => p.to_string(),
        None => {
            let source = config.volume_source.as_deref().unwrap_or("");
            backup
                .status
                .as_ref()
                .and_then(|s| s.backup_method.as_ref())
                .and_then(|m| m.target_volumes.as_ref())
                .and_then(|v| v.volume_mounts.as_ref())
                .and_then(|mounts| mounts.iter().find(|m| m.name == source))
                .map(|m| m.mount_path.clone())
                .filter(|p| !p.is_empty())
                .ok_or_else(|| {
                    format!(
                        "claim {claim_name}: no mountPath, and volumeSource {source:?} is not among status.backupMethod.targetVolumes.volumeMounts of backup {}",
                        backup.metadata.name.as_deref().unwrap_or("")
                    )
                })?
        }
    };
    Ok((
        Volume {
            name: name.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name,
                read_only: None,
            }),
            ..Default::default()
        },
        VolumeMount {
            name,
            mount_path,
            ..Default::default()
        },
    ))
}

/// The manager's script: wait for the stop signal; then, for each restored claim mounted
/// under [`RESTORED_MOUNT_ROOT`], fail with [`EMPTY_VOLUME_MARKER`] if it holds nothing.
pub fn manager_script(check: &[(String, String)]) -> String {
    let mut s = format!(
        "\nset -o errexit\nset -o nounset\nsignal_file={}\n\
         while true; do\n  if [ -f \"$signal_file\" ] && [ \"$(cat \"$signal_file\")\" = \"true\" ]; then\n    break\n  fi\n  \
         echo \"waiting for other restore workloads, sleep 1s\"\n  sleep 1\ndone\n\
         empty=\"\"\n",
        super::shell_quote(&format!("{DOWNWARD_MOUNT_PATH}/{STOP_FILE}"))
    );
    for (dir, claim) in check {
        s.push_str(&format!(
            "if [ -z \"$(ls -A {d} | grep -v '^lost+found$' || true)\" ]; then empty=\"$empty {c}\"; fi\n",
            d = super::shell_quote(dir),
            c = super::shell_quote(claim),
        ));
    }
    s.push_str(&format!(
        "if [ -n \"$empty\" ]; then\n  msg=\"{EMPTY_VOLUME_MARKER}$empty: the restore container exited 0 but wrote nothing into it\"\n  \
         echo \"$msg\"\n  echo \"$msg\" > /dev/termination-log\n  exit 1\nfi\necho \"restore manager stopped\"\n"
    ));
    s
}

/// Everything a restore Job depends on besides the Restore, the backup and the
/// configuration.
#[derive(Clone, Debug)]
pub struct RestoreJobInputs {
    /// The Job's name.
    pub name: String,
    /// The namespace it runs in (the Restore's, or the controller's for exec steps).
    pub namespace: String,
    /// The stage.
    pub stage: Stage,
    /// The service account.
    pub service_account: String,
    /// How the pod reaches the repository (none: exec steps, which only run kubectl).
    pub repo: Option<RepoMount>,
    /// The image (before `$(VAR)` expansion).
    pub image: String,
    /// The command.
    pub command: Vec<String>,
    /// Arguments (exec steps).
    pub args: Option<Vec<String>>,
    /// The environment ([`restore_env`], and [`target_pod_env`] for postReady jobs).
    pub env: Vec<EnvVar>,
    /// Restored claims: volume, mount, claim name (checked for emptiness).
    pub claims: Vec<(Volume, VolumeMount, String)>,
    /// Other volumes and mounts (a postReady job's target pod volumes).
    pub volumes: Vec<(Volume, VolumeMount)>,
    /// Extra labels (those of the claims a template made).
    pub labels: BTreeMap<String, String>,
    /// postReady jobs: the node to run on and the target's tolerations.
    pub node_name: Option<String>,
    /// postReady jobs: tolerations.
    pub tolerations: Option<Vec<Toleration>>,
}

/// The restore Job (see the module documentation for its shape).
pub fn restore_job(
    restore: &Restore,
    set: &BackupSet,
    inputs: &RestoreJobInputs,
    config: &ControllerConfig,
) -> Job {
    let restore_name = restore.metadata.name.clone().unwrap_or_default();
    let mut labels = restore_labels(&restore_name);
    for (k, v) in &inputs.labels {
        labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let mut volumes: Vec<Volume> = Vec::new();
    let mut mounts: Vec<VolumeMount> = Vec::new();
    for (v, m) in &inputs.volumes {
        volumes.push(v.clone());
        mounts.push(m.clone());
    }
    for (v, m, _) in &inputs.claims {
        volumes.push(v.clone());
        mounts.push(m.clone());
    }
    let image = expand_vars(&inputs.image, &inputs.env);
    let mut pod = PodSpec {
        restart_policy: Some("Never".into()),
        security_context: Some(PodSecurityContext {
            run_as_user: Some(0),
            ..Default::default()
        }),
        service_account_name: Some(inputs.service_account.clone()),
        ..Default::default()
    };
    match inputs.stage {
        Stage::PrepareData => {
            if let Some(s) = restore
                .spec
                .prepare_data_config
                .as_ref()
                .and_then(|c| c.scheduling_spec.as_ref())
            {
                pod.tolerations = s.tolerations.clone();
                pod.affinity = s.affinity.clone();
                pod.node_selector = s.node_selector.clone();
                pod.node_name = s.node_name.clone();
                pod.scheduler_name = s.scheduler_name.clone();
                pod.topology_spread_constraints = s.topology_spread_constraints.clone();
            }
        }
        Stage::PostReady => {
            pod.tolerations = inputs.tolerations.clone();
            pod.node_selector = inputs
                .node_name
                .as_ref()
                .map(|n| BTreeMap::from([("kubernetes.io/hostname".to_string(), n.clone())]));
        }
    }
    let mut template_annotations = BTreeMap::new();
    let extras = set
        .backup
        .status
        .as_ref()
        .and_then(|s| s.extras.clone())
        .filter(|e| !e.is_empty());
    if let Some(extras) = extras {
        template_annotations.insert(
            annotation::BACKUP_EXTRAS.to_string(),
            serde_json::to_string(&extras).unwrap_or_default(),
        );
        volumes.push(downward_volume(
            EXTRAS_DOWNWARD_VOLUME,
            EXTRAS_FILE,
            annotation::BACKUP_EXTRAS,
        ));
        mounts.push(VolumeMount {
            name: EXTRAS_DOWNWARD_VOLUME.into(),
            mount_path: format!("{DOWNWARD_MOUNT_PATH}/"),
            ..Default::default()
        });
    }
    pod.containers.push(Container {
        name: RESTORE_CONTAINER.into(),
        image: Some(image),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(inputs.command.clone()),
        args: inputs.args.clone(),
        env: Some(inputs.env.clone()),
        resources: restore.spec.container_resources.clone(),
        volume_mounts: Some(mounts),
        // dprepo: the log tail becomes the failure message of the action.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    });
    // The manager: the stop signal, and the restored claims read-only for the check.
    volumes.push(downward_volume(
        MANAGER_DOWNWARD_VOLUME,
        STOP_FILE,
        annotation::STOP_RESTORE_MANAGER,
    ));
    let mut manager_mounts = vec![VolumeMount {
        name: MANAGER_DOWNWARD_VOLUME.into(),
        mount_path: DOWNWARD_MOUNT_PATH.into(),
        ..Default::default()
    }];
    let mut check = Vec::new();
    for (v, _, claim) in &inputs.claims {
        let dir = format!("{RESTORED_MOUNT_ROOT}/{}", v.name);
        manager_mounts.push(VolumeMount {
            name: v.name.clone(),
            mount_path: dir.clone(),
            read_only: Some(true),
            ..Default::default()
        });
        check.push((dir, claim.clone()));
    }
    pod.containers.push(Container {
        name: MANAGER_CONTAINER.into(),
        image: Some(config.tools_image.clone()),
        image_pull_policy: config.image_pull_policy.clone(),
        command: Some(vec!["sh".into(), "-c".into()]),
        args: Some(vec![manager_script(&check)]),
        volume_mounts: Some(manager_mounts),
        ..Default::default()
    });
    pod.volumes = Some(volumes);
    if let Some(repo) = &inputs.repo {
        inject_datasafed(
            &mut pod,
            repo,
            set.backup
                .status
                .as_ref()
                .and_then(|s| s.encryption_config.as_ref()),
            config,
        );
    }
    Job {
        metadata: ObjectMeta {
            name: Some(inputs.name.clone()),
            namespace: Some(inputs.namespace.clone()),
            labels: Some(labels.clone()),
            owner_references: (inputs.namespace
                == restore.metadata.namespace.clone().unwrap_or_default())
            .then(|| super::controller_ref(restore).map(|o| vec![o]))
            .flatten(),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(restore.spec.backoff_limit.unwrap_or(DEFAULT_BACKOFF_LIMIT)),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: (!template_annotations.is_empty()).then_some(template_annotations),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        status: None,
    }
}

fn downward_volume(name: &str, file: &str, annotation: &str) -> Volume {
    Volume {
        name: name.into(),
        downward_api: Some(DownwardAPIVolumeSource {
            items: Some(vec![DownwardAPIVolumeFile {
                path: file.into(),
                field_ref: Some(ObjectFieldSelector {
                    field_path: format!("metadata.annotations['{annotation}']"),
                    api_version: None,
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
