use super::*;
use serde_json::json;

fn backup(retention: Option<&str>, status: Value) -> Backup {
    let mut spec =
        json!({"backupPolicyName": "p", "backupMethod": "m", "deletionPolicy": "Delete"});
    if let Some(r) = retention {
        spec["retentionPeriod"] = json!(r);
    }
    serde_json::from_value(
        json!({"apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "Backup",
        "metadata": {"name": "b", "namespace": "n", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": spec, "status": status}),
    )
    .unwrap()
}

fn t(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap()
        .with_timezone(&chrono::Utc)
}

#[test]
fn expiration_follows_kubeblocks() {
    // No retention: nothing to set.
    assert_eq!(
        expiration(&backup(None, json!({})), BackupPhase::Running, None),
        None
    );
    // Zero retention: cleared.
    assert_eq!(
        expiration(&backup(Some("0d"), json!({})), BackupPhase::Running, None),
        Some(None)
    );
    // Running: from the start, once.
    let b = backup(
        Some("1d"),
        json!({"startTimestamp": "2026-01-02T00:00:00Z"}),
    );
    assert_eq!(
        expiration(&b, BackupPhase::Running, None),
        Some(Some(t("2026-01-03T00:00:00Z")))
    );
    let set = backup(Some("1d"), json!({"expiration": "2026-02-01T00:00:00Z"}));
    assert_eq!(expiration(&set, BackupPhase::Failed, None), None);
    // Completed: from completion.
    assert_eq!(
        expiration(
            &set,
            BackupPhase::Completed,
            Some(t("2026-01-05T00:00:00Z"))
        ),
        Some(Some(t("2026-01-06T00:00:00Z")))
    );
    // No start: the creation time.
    assert_eq!(
        expiration(&backup(Some("2h"), json!({})), BackupPhase::Failed, None),
        Some(Some(t("2026-01-01T02:00:00Z")))
    );
}

#[test]
fn durations_are_go_formatted() {
    assert_eq!(go_duration(0), "0s");
    assert_eq!(go_duration(90), "1m30s");
    assert_eq!(go_duration(3725), "1h2m5s");
}

#[test]
fn selectors_render_as_the_api_takes_them() {
    let s: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector =
        serde_json::from_value(json!({
        "matchLabels": {"app": "pg"},
        "matchExpressions": [{"key": "role", "operator": "In", "values": ["primary", "leader"]},
                             {"key": "gone", "operator": "DoesNotExist"}]}))
        .unwrap();
    assert_eq!(selector_string(&s), "app=pg,role in (primary,leader),!gone");
}

#[test]
fn job_outcomes_read_the_conditions() {
    let job = |conds: Value| -> Job {
        serde_json::from_value(json!({"metadata": {"name": "j"}, "status": {"conditions": conds}}))
            .unwrap()
    };
    assert_eq!(job_outcome(&job(json!([]))), None);
    assert_eq!(
        job_outcome(&job(json!([{"type": "Complete", "status": "True"}]))),
        Some(Ok(()))
    );
    assert_eq!(
        job_outcome(&job(
            json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
            "message": "Job has reached the specified backoff limit"}])
        )),
        Some(Err(
            "BackoffLimitExceeded: Job has reached the specified backoff limit".into()
        ))
    );
}

#[test]
fn method_targets_win_over_the_policys() {
    let policy: BackupPolicy = serde_json::from_value(
        json!({"apiVersion": "dataprotection.kubeblocks.io/v1alpha1",
        "kind": "BackupPolicy", "metadata": {"name": "p", "namespace": "n"},
        "spec": {"target": {"name": "policy"}, "backupMethods": [
            {"name": "a"}, {"name": "b", "targets": [{"name": "t1"}, {"name": "t2"}]}]}}),
    )
    .unwrap();
    let names = |m: usize| -> Vec<String> {
        targets_of(&policy, &policy.spec.backup_methods[m])
            .into_iter()
            .map(|t| t.name.unwrap())
            .collect()
    };
    assert_eq!(names(0), ["policy"]);
    assert_eq!(names(1), ["t1", "t2"]);
}

/// KubeBlocks' rule: a running Continuous backup has no expiration (its archive keeps
/// growing, and the GC loop must not delete it); once Completed it counts from completion.
#[test]
fn a_running_continuous_backup_never_expires() {
    let mut b = backup(
        Some("1d"),
        json!({"startTimestamp": "2026-01-02T00:00:00Z", "expiration": "2026-01-03T00:00:00Z"}),
    );
    b.metadata.labels = Some(BTreeMap::from([(
        label::BACKUP_TYPE.to_string(),
        "Continuous".to_string(),
    )]));
    assert!(continuous::is_continuous(&b));
    assert_eq!(expiration(&b, BackupPhase::Running, None), Some(None));
    assert_eq!(
        expiration(&b, BackupPhase::Completed, Some(t("2026-01-05T00:00:00Z"))),
        Some(Some(t("2026-01-06T00:00:00Z")))
    );
    b.metadata.labels = None;
    assert!(!continuous::is_continuous(&b));
}

/// A schedule's Continuous backup carries the target's selector labels, and so does its
/// archiver pod: a full backup selected the archiver as its target (pg_basebackup: invalid
/// port number "0"). Backup workloads are never targets.
#[test]
fn an_archiver_pod_is_never_a_backup_target() {
    let pod = |labels: Value| -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "x", "labels": labels}})).unwrap()
    };
    assert!(is_backup_workload(&pod(
        json!({"app": "pg", "app.kubernetes.io/managed-by": "kubeblocks-dataprotection"})
    )));
    assert!(!is_backup_workload(&pod(
        json!({"app": "pg", "app.kubernetes.io/managed-by": "kubeblocks"})
    )));
    assert!(!is_backup_workload(&pod(json!({"app": "pg"}))));
}
