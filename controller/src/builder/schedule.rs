//! What a BackupSchedule derives, as KubeBlocks derives it (CONTROLLER.md section 5):
//! the CronJob of each enabled non-Continuous schedule, the name prefix of the Backups
//! its pod creates, and the name of the Backup a Continuous schedule keeps.
//!
//! Names (KubeBlocks' `GenerateCRNameByBackupSchedule`): `<uid8>-<schedule>-<namespace>`,
//! where `uid8` is the first 8 characters of the first owner's uid (else the schedule's
//! own), cut to 30 bytes with one trailing `-` dropped, then `-<suffix>`; the suffix is
//! the schedule's name (else its method) for CronJobs, the method for Continuous Backups.
//!
//! The CronJob's pod differs from KubeBlocks' in one way only: instead of a shell script
//! running `kubectl create`, its container runs `/dprepo-controller create-backup` (our
//! own binary, from the tools image, as the pod's worker service account), which creates
//! the same Backup: named `<prefix>-<YYYYMMDDhhmmss UTC>`, labelled `autobackup: "true"`
//! and `backup-schedule: <schedule>`, spec `{backupPolicyName, backupMethod,
//! retentionPeriod, parameters}`. For Incremental methods it first checks for a Completed
//! Full backup of the compatible method and exits 0 without one, as KubeBlocks' script
//! does.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::controller_ref;
use super::datasafed::no_privilege_escalation;
use super::precheck::add_scheduling;
use crate::api::backuppolicy::BackupTarget;
use crate::api::backupschedule::{BackupSchedule, SchedulePolicy};
use crate::api::labels::{label, FINALIZER};
use crate::api::BackupPolicy;
use crate::config::ControllerConfig;

/// The CronJob container's name (KubeBlocks').
pub const CONTAINER: &str = "backup-schedule";

/// The binary in the tools image that creates the Backup.
pub const CREATE_BACKUP_BIN: &str = "/dprepo-controller";

/// The label KubeBlocks takes a scheduled Backup's name prefix from (a target's pod
/// selector's `matchLabels`).
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";

/// Longest base of a schedule-derived name before its suffix (KubeBlocks' 30).
pub const MAX_SCHEDULE_BASE: usize = 30;

/// KubeBlocks' `GenerateCRNameByBackupSchedule(schedule, suffix)`.
pub fn schedule_derived_name(schedule: &BackupSchedule, suffix: &str) -> String {
    let own_uid = schedule.metadata.uid.as_deref().unwrap_or("");
    let uid = schedule
        .metadata
        .owner_references
        .as_ref()
        .and_then(|r| r.first())
        .map_or(own_uid, |r| r.uid.as_str());
    let uid8: String = uid.chars().take(8).collect();
    let base = format!(
        "{uid8}-{}-{}",
        schedule.metadata.name.as_deref().unwrap_or(""),
        schedule.metadata.namespace.as_deref().unwrap_or("")
    );
    let base = if base.len() > MAX_SCHEDULE_BASE {
        let mut end = MAX_SCHEDULE_BASE;
        while !base.is_char_boundary(end) {
            end -= 1;
        }
        let cut = &base[..end];
        cut.strip_suffix('-').unwrap_or(cut).to_string()
    } else {
        base
    };
    format!("{base}-{suffix}")
}

/// The CronJob of `policy` (KubeBlocks' `GenerateCRNameByScheduleNameAndMethod`).
pub fn cron_job_name(schedule: &BackupSchedule, policy: &SchedulePolicy) -> String {
    schedule_derived_name(schedule, policy.schedule_name())
}

/// The Backup a Continuous schedule of `method` keeps.
pub fn continuous_backup_name(schedule: &BackupSchedule, method: &str) -> String {
    schedule_derived_name(schedule, method)
}

/// The targets of `method_name` in `policy` (KubeBlocks' `GetBackupTargets`): the
/// method's own `target`/`targets`, else the policy's.
pub fn targets<'a>(policy: &'a BackupPolicy, method_name: &str) -> Vec<&'a BackupTarget> {
    let method = policy.spec.method(method_name);
    if let Some(t) = method.and_then(|m| m.target.as_ref()) {
        return vec![t];
    }
    if let Some(ts) = method
        .and_then(|m| m.targets.as_ref())
        .filter(|t| !t.is_empty())
    {
        return ts.iter().collect();
    }
    if let Some(t) = &policy.spec.target {
        return vec![t];
    }
    policy.spec.targets.iter().flatten().collect()
}

/// The `matchLabels` of the first target of `method_name`.
pub fn first_target_match_labels(
    policy: &BackupPolicy,
    method_name: &str,
) -> BTreeMap<String, String> {
    targets(policy, method_name)
        .first()
        .and_then(|t| t.pod_selector.as_ref())
        .and_then(|s| s.label_selector.match_labels.clone())
        .unwrap_or_default()
}

/// The name prefix of the Backups `sp` creates (KubeBlocks' `generateBackupName` without
/// its timestamp): the first target's `app.kubernetes.io/instance` label, else the
/// schedule's name; then `-<schedule name>`.
pub fn backup_name_prefix(
    schedule: &BackupSchedule,
    policy: &BackupPolicy,
    sp: &SchedulePolicy,
) -> String {
    let instance = first_target_match_labels(policy, &sp.backup_method)
        .get(INSTANCE_LABEL)
        .filter(|v| !v.is_empty())
        .cloned()
        .unwrap_or_else(|| schedule.metadata.name.clone().unwrap_or_default());
    format!("{instance}-{}", sp.schedule_name())
}

/// Whether `backup_name` is one `prefix` makes: `<prefix>-` and 14 digits.
pub fn is_scheduled_name(prefix: &str, backup_name: &str) -> bool {
    backup_name
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|ts| ts.len() == 14 && ts.bytes().all(|b| b.is_ascii_digit()))
}

/// What the CronJob depends on besides the objects and the configuration.
#[derive(Debug, Clone)]
pub struct CronJobInputs {
    /// The worker service account in the schedule's namespace.
    pub service_account: String,
    /// For Incremental methods: the compatible method a Completed Full backup must exist
    /// of (`Some("")` when the method names none: then no backup is ever made, as in
    /// KubeBlocks). `None` for other types.
    pub require_full_of: Option<String>,
}

/// The `create-backup` command line of the CronJob's container.
pub fn create_backup_command(
    schedule: &BackupSchedule,
    policy: &BackupPolicy,
    sp: &SchedulePolicy,
    inputs: &CronJobInputs,
) -> Vec<String> {
    let mut c: Vec<String> = vec![
        CREATE_BACKUP_BIN.into(),
        "create-backup".into(),
        "--namespace".into(),
        schedule.metadata.namespace.clone().unwrap_or_default(),
        "--name-prefix".into(),
        backup_name_prefix(schedule, policy, sp),
        "--backup-policy".into(),
        policy.metadata.name.clone().unwrap_or_default(),
        "--backup-method".into(),
        sp.backup_method.clone(),
        "--backup-schedule".into(),
        schedule.metadata.name.clone().unwrap_or_default(),
    ];
    if let Some(r) = &sp.retention_period {
        c.push("--retention-period".into());
        c.push(r.as_str().to_string());
    }
    if let Some(p) = sp.parameters.as_ref().filter(|p| !p.is_empty()) {
        c.push("--parameters".into());
        c.push(serde_json::to_string(p).unwrap_or_else(|_| "[]".into()));
    }
    if let Some(full) = &inputs.require_full_of {
        c.push("--require-completed-full".into());
        c.push(full.clone());
    }
    c
}

/// The labels of `sp`'s CronJob: the schedule's own, plus `backup-schedule`,
/// `backup-method` and `managed-by`.
pub fn cron_job_labels(schedule: &BackupSchedule, sp: &SchedulePolicy) -> BTreeMap<String, String> {
    let mut labels = schedule.metadata.labels.clone().unwrap_or_default();
    labels.insert(
        label::BACKUP_SCHEDULE.into(),
        schedule.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(label::BACKUP_METHOD.into(), sp.backup_method.clone());
    labels.insert(label::MANAGED_BY.into(), label::MANAGED_BY_VALUE.into());
    labels
}

/// The CronJob of `sp` (an enabled, non-Continuous schedule of `schedule`).
pub fn cron_job(
    schedule: &BackupSchedule,
    policy: &BackupPolicy,
    sp: &SchedulePolicy,
    inputs: &CronJobInputs,
    config: &ControllerConfig,
) -> CronJob {
    let mut pod = PodSpec {
        service_account_name: Some(inputs.service_account.clone()),
        restart_policy: Some("Never".into()),
        containers: vec![Container {
            name: CONTAINER.into(),
            image: Some(config.tools_image.clone()),
            image_pull_policy: config.image_pull_policy.clone(),
            command: Some(create_backup_command(schedule, policy, sp, inputs)),
            security_context: Some(no_privilege_escalation()),
            ..Default::default()
        }],
        ..Default::default()
    };
    add_scheduling(&mut pod, config);
    CronJob {
        metadata: ObjectMeta {
            name: Some(cron_job_name(schedule, sp)),
            namespace: schedule.metadata.namespace.clone(),
            labels: Some(cron_job_labels(schedule, sp)),
            finalizers: Some(vec![FINALIZER.into()]),
            owner_references: controller_ref(schedule).map(|r| vec![r]),
            ..Default::default()
        },
        spec: Some(CronJobSpec {
            schedule: sp.cron_expression.clone(),
            // Kubernetes 1.25+ (every version this controller supports).
            time_zone: Some("UTC".into()),
            concurrency_policy: Some("Forbid".into()),
            successful_jobs_history_limit: Some(0),
            failed_jobs_history_limit: Some(1),
            starting_deadline_seconds: schedule
                .spec
                .starting_deadline_minutes
                .map(|m| m.saturating_mul(60)),
            job_template: JobTemplateSpec {
                metadata: None,
                spec: Some(JobSpec {
                    backoff_limit: policy.spec.backoff_limit,
                    template: PodTemplateSpec {
                        metadata: None,
                        spec: Some(pod),
                    },
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// Whether every field of `desired` is in `actual` with the same value (objects are
/// compared key by key, arrays element by element and of equal length). The API server
/// fills defaults into what it stores, so a stored object equals what was written only
/// up to those additions.
pub fn json_subset(desired: &serde_json::Value, actual: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (desired, actual) {
        (Value::Object(d), Value::Object(a)) => d
            .iter()
            .all(|(k, v)| v.is_null() || a.get(k).is_some_and(|av| json_subset(v, av))),
        (Value::Array(d), Value::Array(a)) => {
            d.len() == a.len() && d.iter().zip(a).all(|(x, y)| json_subset(x, y))
        }
        (d, a) => d == a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schedule() -> BackupSchedule {
        serde_json::from_value(json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1",
            "kind": "BackupSchedule",
            "metadata": {"name": "pg-cluster-postgresql-backup-schedule", "namespace": "demo",
                         "uid": "0f1e2d3c-aaaa-bbbb-cccc-000000000001",
                         "labels": {"app.kubernetes.io/instance": "pg-cluster"}},
            "spec": {"backupPolicyName": "pg-policy", "startingDeadlineMinutes": 5,
                     "schedules": [
                        {"enabled": true, "backupMethod": "pg-basebackup",
                         "cronExpression": "0 18 * * *", "retentionPeriod": "7d"},
                        {"enabled": true, "name": "hourly", "backupMethod": "incr",
                         "cronExpression": "0 * * * *", "retentionPeriod": "1d",
                         "parameters": [{"name": "level", "value": "1"}]}]}
        }))
        .unwrap()
    }

    fn policy() -> BackupPolicy {
        serde_json::from_value(json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1",
            "kind": "BackupPolicy",
            "metadata": {"name": "pg-policy", "namespace": "demo"},
            "spec": {"backoffLimit": 3,
                     "target": {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": "pg-cluster"}}},
                     "backupMethods": [
                        {"name": "pg-basebackup", "actionSetName": "pg-basebackup"},
                        {"name": "incr", "actionSetName": "pg-incr", "compatibleMethod": "pg-basebackup"}]}
        }))
        .unwrap()
    }

    #[test]
    fn names_are_cut_as_kubeblocks_cuts_them() {
        let s = schedule();
        // "0f1e2d3c-pg-cluster-postgresql-backup-schedule-demo" cut to 30 bytes.
        assert_eq!(
            cron_job_name(&s, &s.spec.schedules[0]),
            "0f1e2d3c-pg-cluster-postgresql-pg-basebackup"
        );
        assert_eq!(
            cron_job_name(&s, &s.spec.schedules[1]),
            "0f1e2d3c-pg-cluster-postgresql-hourly"
        );
        // A cut ending in '-' loses it; the owner's uid wins over the schedule's.
        let mut short = s.clone();
        short.metadata.name = Some("abcdefghijklmnopqrst".into());
        short.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                uid: "99998888-x".into(),
                ..Default::default()
            },
        ]);
        // "99998888-abcdefghijklmnopqrst-demo": 30 bytes end at "...qrst-", '-' dropped.
        assert_eq!(
            continuous_backup_name(&short, "wal"),
            "99998888-abcdefghijklmnopqrst-wal"
        );
        let tiny = BackupSchedule {
            metadata: ObjectMeta {
                name: Some("s".into()),
                namespace: Some("ns".into()),
                uid: Some("12345678-9".into()),
                ..Default::default()
            },
            ..s
        };
        assert_eq!(continuous_backup_name(&tiny, "m"), "12345678-s-ns-m");
    }

    #[test]
    fn backup_names_start_with_the_instance_then_the_schedule_name() {
        let (s, p) = (schedule(), policy());
        assert_eq!(
            backup_name_prefix(&s, &p, &s.spec.schedules[0]),
            "pg-cluster-pg-basebackup"
        );
        assert_eq!(
            backup_name_prefix(&s, &p, &s.spec.schedules[1]),
            "pg-cluster-hourly"
        );
        let mut no_instance = p.clone();
        no_instance.spec.target = None;
        assert_eq!(
            backup_name_prefix(&s, &no_instance, &s.spec.schedules[1]),
            "pg-cluster-postgresql-backup-schedule-hourly"
        );
        assert!(is_scheduled_name(
            "pg-cluster-hourly",
            "pg-cluster-hourly-20261207051500"
        ));
        assert!(!is_scheduled_name(
            "pg-cluster-hourly",
            "pg-cluster-hourly-x-20261207051500"
        ));
        assert!(!is_scheduled_name("pg-cluster-hourly", "pg-cluster-hourly"));
    }

    #[test]
    fn the_cron_job_is_kubeblocks_with_our_create_backup_command() {
        let (s, p) = (schedule(), policy());
        let config = ControllerConfig::from_source(&BTreeMap::new()).unwrap();
        let inputs = CronJobInputs {
            service_account: "kubeblocks-dataprotection-worker".into(),
            require_full_of: Some("pg-basebackup".into()),
        };
        let cj = cron_job(&s, &p, &s.spec.schedules[1], &inputs, &config);
        let got = serde_json::to_value(&cj).unwrap();
        let expected = json!({
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {
                "name": "0f1e2d3c-pg-cluster-postgresql-hourly",
                "namespace": "demo",
                "labels": {
                    "app.kubernetes.io/instance": "pg-cluster",
                    "app.kubernetes.io/managed-by": "kubeblocks-dataprotection",
                    "dataprotection.kubeblocks.io/backup-method": "incr",
                    "dataprotection.kubeblocks.io/backup-schedule": "pg-cluster-postgresql-backup-schedule"
                },
                "finalizers": ["dataprotection.kubeblocks.io/finalizer"],
                "ownerReferences": [{
                    "apiVersion": "dataprotection.kubeblocks.io/v1alpha1",
                    "kind": "BackupSchedule",
                    "name": "pg-cluster-postgresql-backup-schedule",
                    "uid": "0f1e2d3c-aaaa-bbbb-cccc-000000000001",
                    "controller": true,
                    "blockOwnerDeletion": true
                }]
            },
            "spec": {
                "schedule": "0 * * * *",
                "timeZone": "UTC",
                "concurrencyPolicy": "Forbid",
                "successfulJobsHistoryLimit": 0,
                "failedJobsHistoryLimit": 1,
                "startingDeadlineSeconds": 300,
                "jobTemplate": {"spec": {
                    "backoffLimit": 3,
                    "template": {"spec": {
                        "serviceAccountName": "kubeblocks-dataprotection-worker",
                        "restartPolicy": "Never",
                        "containers": [{
                            "name": "backup-schedule",
                            "image": crate::config::DEFAULT_IMAGE,
                            "command": [
                                "/dprepo-controller", "create-backup",
                                "--namespace", "demo",
                                "--name-prefix", "pg-cluster-hourly",
                                "--backup-policy", "pg-policy",
                                "--backup-method", "incr",
                                "--backup-schedule", "pg-cluster-postgresql-backup-schedule",
                                "--retention-period", "1d",
                                "--parameters", "[{\"name\":\"level\",\"value\":\"1\"}]",
                                "--require-completed-full", "pg-basebackup"
                            ],
                            "securityContext": {"allowPrivilegeEscalation": false}
                        }]
                    }}
                }}
            }
        });
        assert_eq!(
            got,
            expected,
            "{}",
            serde_json::to_string_pretty(&got).unwrap()
        );
    }

    #[test]
    fn stored_defaults_do_not_count_as_a_difference() {
        let desired = json!({"a": 1, "b": {"c": [ {"d": 1} ]}, "gone": null});
        let stored = json!({"a": 1, "b": {"c": [ {"d": 1, "e": 2} ], "x": 3}, "y": 4});
        assert!(json_subset(&desired, &stored));
        assert!(!json_subset(&json!({"a": 2}), &stored));
        assert!(!json_subset(
            &json!({"b": {"c": [{"d": 1}, {"d": 2}]}}),
            &stored
        ));
        assert!(!json_subset(&json!({"z": 1}), &stored));
    }
}
