use super::*;
use crate::api::restore::RestoreStatusAction;
use serde_json::json;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn backup(name: &str, phase: &str, range: Option<(&str, &str)>) -> Backup {
    let mut status = json!({"phase": phase});
    if let Some((s, e)) = range {
        status["timeRange"] = json!({"start": s, "end": e});
    }
    serde_json::from_value(json!({
        "apiVersion": "dataprotection.kubeblocks.io/v1alpha1",
        "kind": "Backup",
        "metadata": {"name": name, "namespace": "demo"},
        "spec": {"backupPolicyName": "p", "backupMethod": "m", "deletionPolicy": "Delete"},
        "status": status
    }))
    .unwrap()
}

fn wal() -> Backup {
    backup(
        "wal",
        "Running",
        Some(("2026-01-01T09:55:00Z", "2026-01-01T11:00:00Z")),
    )
}

fn fulls() -> Vec<Backup> {
    vec![
        backup(
            "full-1",
            "Completed",
            Some(("2026-01-01T10:00:00Z", "2026-01-01T10:10:00Z")),
        ),
        backup(
            "full-2",
            "Completed",
            Some(("2026-01-01T10:20:00Z", "2026-01-01T10:30:00Z")),
        ),
        // Failed: never a base, even though its range would fit.
        backup(
            "full-failed",
            "Failed",
            Some(("2026-01-01T10:35:00Z", "2026-01-01T10:36:00Z")),
        ),
        // Ended before the log started: the gap cannot be replayed.
        backup(
            "full-old",
            "Completed",
            Some(("2026-01-01T09:00:00Z", "2026-01-01T09:50:00Z")),
        ),
    ]
}

#[test]
fn the_base_is_the_newest_completed_full_ending_before_the_time() {
    let fulls = fulls();
    let cases = [
        ("2026-01-01T10:40:00Z", Ok("full-2")),
        ("2026-01-01T10:30:00Z", Ok("full-2")), // the base's end itself
        ("2026-01-01T10:29:59Z", Ok("full-1")),
        ("2026-01-01T10:10:00Z", Ok("full-1")),
        ("2026-01-01T11:00:00Z", Ok("full-2")), // the log's end itself
        (
            "2026-01-01T10:09:59Z",
            Err("is before every recoverable range"),
        ),
        (
            "2026-01-01T09:55:00Z",
            Err("is before every recoverable range"),
        ),
        ("2026-01-01T11:00:01Z", Err("is outside the time range")),
        ("2026-01-01T09:54:59Z", Err("is outside the time range")),
    ];
    for (time, want) in cases {
        let got = select_pitr_base(t(time), &wal(), &fulls, true);
        match (want, got) {
            (Ok(name), Ok(Some(b))) => {
                assert_eq!(b.metadata.name.as_deref(), Some(name), "{time}")
            }
            (Err(part), Err(msg)) => {
                assert!(msg.contains(part), "{time}: {msg}");
                // Every error lists what can be restored.
                assert!(
                    msg.contains("recoverable ranges: 2026-01-01T10:10:00Z to 2026-01-01T11:00:00Z (base backup \"full-1\"); 2026-01-01T10:30:00Z to 2026-01-01T11:00:00Z (base backup \"full-2\")"),
                    "{msg}"
                );
            }
            (want, got) => panic!("{time}: wanted {want:?}, got {got:?}"),
        }
    }
}

#[test]
fn without_a_base_requirement_only_the_log_range_counts() {
    let got = select_pitr_base(t("2026-01-01T09:56:00Z"), &wal(), &[], false).unwrap();
    assert!(got.is_none());
    let err = select_pitr_base(t("2026-01-01T12:00:00Z"), &wal(), &[], false).unwrap_err();
    assert!(
        err.ends_with("recoverable ranges: 2026-01-01T09:55:00Z to 2026-01-01T11:00:00Z (no base backup needed)"),
        "{err}"
    );
}

#[test]
fn no_usable_full_and_no_time_range_are_explained() {
    let err = select_pitr_base(t("2026-01-01T10:40:00Z"), &wal(), &[], true).unwrap_err();
    assert!(
        err.contains("recoverable ranges: none: continuous backup \"wal\" covers 2026-01-01T09:55:00Z to 2026-01-01T11:00:00Z, but no Completed full backup of the same cluster ends inside that range"),
        "{err}"
    );
    let bare = backup("wal", "Running", None);
    let err = select_pitr_base(t("2026-01-01T10:40:00Z"), &bare, &fulls(), true).unwrap_err();
    assert!(err.contains("has no time range yet"), "{err}");
}

#[test]
fn only_completed_backups_restore_except_continuous_ones() {
    let cases = [
        ("Completed", BackupType::Full, true),
        ("Completed", BackupType::Incremental, true),
        ("Running", BackupType::Full, false),
        ("Failed", BackupType::Selective, false),
        ("Running", BackupType::Continuous, true),
        ("Failed", BackupType::Continuous, true),
        ("Completed", BackupType::Differential, false),
    ];
    for (phase, ty, ok) in cases {
        let b = backup("b", phase, None);
        assert_eq!(check_backup(&b, ty).is_ok(), ok, "{phase} {ty}");
    }
    let mut failed = backup("b", "Failed", None);
    failed.status.as_mut().unwrap().failure_reason = Some("disk full".into());
    assert_eq!(
        check_backup(&failed, BackupType::Full).unwrap_err(),
        "backup \"b\" is not Completed (phase Failed: disk full); only a Completed backup can be restored"
    );
}

#[test]
fn restore_times_must_be_rfc3339() {
    assert_eq!(
        parse_restore_time("2026-01-01T10:00:00Z").unwrap(),
        t("2026-01-01T10:00:00Z")
    );
    assert!(parse_restore_time("yesterday")
        .unwrap_err()
        .starts_with("spec.restoreTime \"yesterday\" is not a time"));
}

#[test]
fn base_candidates_match_the_cluster_else_the_policy() {
    let mut b = wal();
    assert_eq!(
        base_candidate_selector(&b),
        "dataprotection.kubeblocks.io/backup-type=Full,dataprotection.kubeblocks.io/backup-policy=p"
    );
    b.metadata.labels = Some(
        [
            (label::CLUSTER_UID.to_string(), "u1".to_string()),
            (COMPONENT_LABEL.to_string(), "pg".to_string()),
        ]
        .into(),
    );
    assert_eq!(
        base_candidate_selector(&b),
        "dataprotection.kubeblocks.io/backup-type=Full,dataprotection.kubeblocks.io/cluster-uid=u1,apps.kubeblocks.io/component-name=pg"
    );
}

#[test]
fn incremental_chains_walk_to_the_full_oldest_first() {
    let mut inc3 = backup("inc-3", "Completed", None);
    inc3.status.as_mut().unwrap().parent_backup_name = Some("inc-2".into());
    let mut inc2 = backup("inc-2", "Completed", None);
    inc2.status.as_mut().unwrap().parent_backup_name = Some("inc-1".into());
    let mut inc1 = backup("inc-1", "Completed", None);
    inc1.spec.parent_backup_name = Some("full".into());
    let full = backup("full", "Completed", None);
    let all = [
        (inc2.clone(), BackupType::Incremental),
        (inc1.clone(), BackupType::Incremental),
        (full, BackupType::Full),
    ];
    let get = |n: &str| {
        all.iter()
            .find(|(b, _)| b.metadata.name.as_deref() == Some(n))
            .cloned()
    };
    let (base, ancestors) = incremental_chain(&inc3, get).unwrap();
    assert_eq!(base.metadata.name.as_deref(), Some("full"));
    assert_eq!(ancestors, ["inc-1", "inc-2"]);
    // A missing parent, and a failed one.
    let err = incremental_chain(&inc3, |_| None).unwrap_err();
    assert_eq!(err, "parent backup \"inc-2\" of \"inc-3\" not found");
    let err = incremental_chain(&inc3, |_| {
        Some((backup("inc-2", "Failed", None), BackupType::Incremental))
    })
    .unwrap_err();
    assert!(err.contains("\"inc-2\" is not Completed"), "{err}");
    // A loop ends.
    let mut looped = backup("a", "Completed", None);
    looped.status.as_mut().unwrap().parent_backup_name = Some("a".into());
    let l2 = looped.clone();
    let err = incremental_chain(&looped, move |_| {
        Some((l2.clone(), BackupType::Incremental))
    })
    .unwrap_err();
    assert!(err.contains("longer than 1000"), "{err}");
}

fn action(key: &str, name: &str, backup: &str, status: RestoreActionStatus) -> RestoreStatusAction {
    RestoreStatusAction {
        name: name.into(),
        backup_name: backup.into(),
        object_key: key.into(),
        message: None,
        status,
        start_time: None,
        end_time: None,
    }
}

#[test]
fn actions_keep_their_start_and_get_an_end_when_they_leave_processing() {
    let mut actions = Vec::new();
    let t0 = t("2026-01-01T10:00:00Z");
    let t1 = t("2026-01-01T10:01:00Z");
    set_action(
        &mut actions,
        action(
            "Job/a",
            "prepareData-0",
            "b",
            RestoreActionStatus::Processing,
        ),
        t0,
    );
    assert_eq!(
        actions[0].message.as_deref(),
        Some("\"Job/a\" is processing")
    );
    assert!(actions[0].end_time.is_none());
    set_action(
        &mut actions,
        action(
            "Job/a",
            "prepareData-0",
            "b",
            RestoreActionStatus::Processing,
        ),
        t1,
    );
    assert_eq!(actions[0].start_time, Some(to_time(t0)));
    let mut failed = action("Job/a", "prepareData-0", "b", RestoreActionStatus::Failed);
    failed.message = Some("boom".into());
    set_action(&mut actions, failed, t1);
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].status, RestoreActionStatus::Failed);
    assert_eq!(actions[0].message.as_deref(), Some("boom"));
    assert_eq!(actions[0].start_time, Some(to_time(t0)));
    assert_eq!(actions[0].end_time, Some(to_time(t1)));
}

#[test]
fn progress_counts_the_expected_jobs_and_serial_allows_one_more() {
    use RestoreActionStatus::*;
    let actions = vec![
        action("Job/0", "prepareData-0", "b", Completed),
        action("Job/1", "prepareData-0", "b", Processing),
        action("Job/x", "prepareData-0", "other", Failed),
        action("Job/y", "prepareData-1", "b", Failed),
    ];
    assert_eq!(
        action_progress(&actions, "b", "prepareData-0", Some(2)),
        (false, false)
    );
    assert_eq!(
        action_progress(&actions[..1], "b", "prepareData-0", Some(1)),
        (true, false)
    );
    // Fewer actions recorded than Jobs expected: not finished.
    assert_eq!(
        action_progress(&actions[..1], "b", "prepareData-0", Some(3)),
        (false, false)
    );
    assert_eq!(
        action_progress(&actions, "b", "prepareData-1", None),
        (true, true)
    );
    assert_eq!(
        action_progress(&[], "b", "postReady-0", None),
        (false, false)
    );
    assert_eq!(serial_jobs_allowed(&actions, "b", "prepareData-0", 3), 2);
    assert_eq!(serial_jobs_allowed(&actions, "b", "prepareData-0", 1), 1);
    assert_eq!(serial_jobs_allowed(&[], "b", "prepareData-0", 3), 1);
}
