//! The StatefulSet of a Continuous backup (CONTROLLER.md section 2; KubeBlocks'
//! `StatefulSetAction`): the ActionSet's backupData runs as a long-lived archiver (WAL,
//! binlog) in pod `<name>-0`, restarted whenever it ends, beside a `manager` sidecar that
//! reports each new `backup.info` into the Backup while the archiver keeps going.
//!
//! - name: the Backup's, or `dp-backup-<target>-<backup>` for a named target, cut to 52
//!   bytes (the StatefulSet controller appends an 11-byte revision hash to build a label
//!   value) without a trailing `-` ([`statefulset_name`]);
//! - labels: the Backup's workload labels ([`super::workload_labels`]), which are also
//!   the selector and the pod template's labels; one replica; the dataprotection
//!   finalizer and the Backup as controller owner;
//! - pod: the backupData pod of a Job action ([`super::action_pod_spec`]) with the
//!   manager in continuous mode ([`CONTINUOUS_MANAGER_COMMAND`]) and `restartPolicy:
//!   Always`; the archiver's container then gets `DP_ARCHIVE_INTERVAL` and, with a
//!   non-zero retention, `DP_TTL_SECONDS` ([`continuous_env`]), after the manager was
//!   copied from it (the manager does not get them, as in KubeBlocks);
//! - [`SPEC_HASH_ANNOTATION`]: a digest of the pod spec built here, so the reconciler
//!   rewrites the StatefulSet only when what it would build changed (the server fills
//!   defaults in, so the stored template never equals the built one).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{EnvVar, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use sha2::{Digest, Sha256};

use super::{
    action_pod_spec, inject_manager, workload_labels, BackupJobInputs, BuildError,
    BACKUP_DATA_CONTAINER, BACKUP_DATA_PREFIX, MANAGER_CONTAINER,
};
use crate::api::labels::FINALIZER;
use crate::builder::controller_ref;
use crate::config::ControllerConfig;

/// Longest StatefulSet name KubeBlocks makes.
pub const MAX_STATEFULSET_NAME: usize = 52;
/// The manager's command in continuous mode.
pub const CONTINUOUS_MANAGER_COMMAND: [&str; 3] =
    ["/dprepo-controller", "backup-manager", "--continuous"];
/// Annotation holding the digest of the built pod spec.
pub const SPEC_HASH_ANNOTATION: &str = "dprepo.io/pod-spec-hash";
/// `DP_ARCHIVE_INTERVAL` when no schedule gives one (KubeBlocks' default).
pub const DEFAULT_ARCHIVE_INTERVAL: &str = "60s";

/// KubeBlocks' `GenerateBackupStatefulSetName`: the Backup's name, or
/// `dp-backup-<target>-<backup>` for a named target, cut to [`MAX_STATEFULSET_NAME`]
/// bytes, one trailing `-` dropped.
pub fn statefulset_name(backup_name: &str, target_name: Option<&str>) -> String {
    let name = match target_name.filter(|t| !t.is_empty()) {
        Some(t) => format!("{BACKUP_DATA_PREFIX}-{t}-{backup_name}"),
        None => backup_name.to_string(),
    };
    let mut end = name.len().min(MAX_STATEFULSET_NAME);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let cut = &name[..end];
    cut.strip_suffix('-').unwrap_or(cut).to_string()
}

/// KubeBlocks' archive interval of a cron expression: `*/m` in the minute field is `m`
/// minutes, `*/h` in the hour field (after a plain minute field) is `h` hours, anything
/// else (and `@` descriptors) 60 s; a `CRON_TZ=`/`TZ=` prefix is skipped.
pub fn archive_interval(cron: &str) -> String {
    let mut expr = cron.trim();
    if expr.starts_with("TZ=") || expr.starts_with("CRON_TZ=") {
        expr = expr.split_once(' ').map_or("", |(_, rest)| rest.trim());
    }
    if expr.starts_with('@') {
        return DEFAULT_ARCHIVE_INTERVAL.into();
    }
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let every = |f: &str| f.strip_prefix("*/").map(|n| n.parse::<u64>().unwrap_or(0));
    if let Some(m) = fields.first().and_then(|f| every(f)) {
        return format!("{}s", m * 60);
    }
    if let Some(h) = fields.get(1).and_then(|f| every(f)) {
        return format!("{}s", h * 3600);
    }
    DEFAULT_ARCHIVE_INTERVAL.into()
}

/// The archiver's extra variables: `DP_ARCHIVE_INTERVAL` (from the schedule's cron
/// expression, else [`DEFAULT_ARCHIVE_INTERVAL`]) and, for a non-zero retention,
/// `DP_TTL_SECONDS` (whole seconds).
pub fn continuous_env(cron: Option<&str>, retention_seconds: u64) -> Vec<EnvVar> {
    let mut out = vec![EnvVar {
        name: "DP_ARCHIVE_INTERVAL".into(),
        value: Some(cron.map_or_else(|| DEFAULT_ARCHIVE_INTERVAL.into(), archive_interval)),
        value_from: None,
    }];
    if retention_seconds > 0 {
        out.push(EnvVar {
            name: "DP_TTL_SECONDS".into(),
            value: Some(retention_seconds.to_string()),
            value_from: None,
        });
    }
    out
}

/// Hex SHA-256 of the JSON of `spec`.
pub fn pod_spec_hash(spec: &PodSpec) -> String {
    let bytes = serde_json::to_vec(spec).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The StatefulSet running the backupData of a Continuous ActionSet for `inputs`'s
/// target pod (`index` names the action), with `extra_env` ([`continuous_env`]) on the
/// archiver's container.
///
/// # Errors
/// See [`super::target_db_env`]; an ActionSet without `backup.backupData`.
pub fn backup_statefulset(
    inputs: &BackupJobInputs<'_>,
    extra_env: &[EnvVar],
    config: &ControllerConfig,
) -> Result<StatefulSet, BuildError> {
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
    let mut pod = action_pod_spec(inputs, BACKUP_DATA_CONTAINER, &data.job, config)?;
    inject_manager(
        &mut pod,
        data.sync_progress.as_ref().and_then(|s| s.interval_seconds),
        config,
    );
    if let Some(m) = pod
        .containers
        .iter_mut()
        .find(|c| c.name == MANAGER_CONTAINER)
    {
        m.command = Some(
            CONTINUOUS_MANAGER_COMMAND
                .iter()
                .map(|s| s.to_string())
                .collect(),
        );
    }
    if let Some(c) = pod.containers.first_mut() {
        c.env
            .get_or_insert_with(Vec::new)
            .extend_from_slice(extra_env);
    }
    pod.restart_policy = Some("Always".into());
    let backup = inputs.backup;
    let labels = workload_labels(backup);
    let name = statefulset_name(
        backup.metadata.name.as_deref().unwrap_or(""),
        inputs.target.name.as_deref(),
    );
    let hash = pod_spec_hash(&pod);
    Ok(StatefulSet {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: backup.metadata.namespace.clone(),
            labels: Some(labels.clone()),
            annotations: Some(BTreeMap::from([(SPEC_HASH_ANNOTATION.to_string(), hash)])),
            finalizers: Some(vec![FINALIZER.into()]),
            owner_references: controller_ref(backup).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_backup_or_carry_the_target_and_are_cut_to_52() {
        assert_eq!(statefulset_name("pg-wal", None), "pg-wal");
        assert_eq!(statefulset_name("pg-wal", Some("")), "pg-wal");
        assert_eq!(
            statefulset_name("pg-wal", Some("primary")),
            "dp-backup-primary-pg-wal"
        );
        let long = format!("{}-{}", "a".repeat(51), "b".repeat(10));
        let n = statefulset_name(&long, None);
        assert_eq!(n, "a".repeat(51));
        assert!(n.len() <= MAX_STATEFULSET_NAME);
    }

    #[test]
    fn archive_intervals_follow_the_cron_step() {
        assert_eq!(archive_interval("*/5 * * * *"), "300s");
        assert_eq!(archive_interval("CRON_TZ=UTC */10 * * * *"), "600s");
        assert_eq!(archive_interval("0 */2 * * *"), "7200s");
        assert_eq!(archive_interval("0 0 * * *"), "60s");
        assert_eq!(archive_interval("@hourly"), "60s");
        let env = continuous_env(Some("*/10 * * * *"), 7200);
        assert_eq!(env[0].name, "DP_ARCHIVE_INTERVAL");
        assert_eq!(env[0].value.as_deref(), Some("600s"));
        assert_eq!(env[1].name, "DP_TTL_SECONDS");
        assert_eq!(env[1].value.as_deref(), Some("7200"));
        assert_eq!(continuous_env(None, 0).len(), 1);
    }
}
