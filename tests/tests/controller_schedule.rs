//! End-to-end: BackupSchedules and the expiry loop, with the real `dprepo-controller`
//! binary against kube-sim (CronJobs on kube-sim's fast cron clock), driven with the
//! machine's `kubectl`.
//!
//! Until the Backup reconciler runs Backups to completion, these tests play its part
//! where the decisions need it: they set a Backup's status (and labels) as that
//! controller would, through the status subresource.
//!
//! Build first: `cargo build --workspace --bins` (scripts/test.sh does). `kubectl` must be
//! on PATH.

mod common;

use common::cluster::*;
use serde_json::Value;
use std::time::Duration;

/// The ActionSets, the policy and the namespace the tests share.
const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: ActionSet
metadata: {name: full-as}
spec:
  backupType: Full
  backup:
    backupData: {image: busybox, command: ["sh", "-c", "true"]}
---
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: ActionSet
metadata: {name: incr-as}
spec:
  backupType: Incremental
  backup:
    backupData: {image: busybox, command: ["sh", "-c", "true"]}
---
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: ActionSet
metadata: {name: wal-as}
spec:
  backupType: Continuous
  backup:
    backupData: {image: busybox, command: ["sh", "-c", "sleep 3600"]}
---
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: BackupPolicy
metadata: {name: pol, namespace: demo}
spec:
  retentionPolicy: retainLatestBackup
  target:
    podSelector:
      matchLabels: {app.kubernetes.io/instance: mydb}
  backupMethods:
  - {name: full, actionSetName: full-as}
  - {name: incr, actionSetName: incr-as, compatibleMethod: full}
  - {name: wal, actionSetName: wal-as}
"#;

fn backups(c: &Cluster, selector: &str) -> Vec<Value> {
    c.get(&["backups", "-n", "demo", "-l", selector])
        .and_then(|l| l["items"].as_array().cloned())
        .unwrap_or_default()
}

fn name_of(v: &Value) -> String {
    v["metadata"]["name"].as_str().unwrap_or("").to_string()
}

/// Sets a Backup's status as the Backup reconciler would.
fn set_status(c: &Cluster, name: &str, status: Value) {
    let patch = serde_json::json!({ "status": status }).to_string();
    c.kubectl_ok(&[
        "patch",
        "backup",
        name,
        "-n",
        "demo",
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch,
    ]);
}

fn is_scheduled_name(prefix: &str, name: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('-'))
        .is_some_and(|ts| ts.len() == 14 && ts.bytes().all(|b| b.is_ascii_digit()))
}

/// A schedule fires on its CronJob (twice and more) and each run's pod creates a Backup
/// named and labelled as KubeBlocks names them; the status shows lastScheduleTime and,
/// once a Backup completed, lastSuccessfulTime; an Incremental schedule creates nothing
/// until a Completed Full backup exists; disabling a schedule removes its CronJob; a
/// schedule naming a method the policy lacks is Failed with KubeBlocks' event.
#[test]
fn schedules_fire_create_kubeblocks_named_backups_and_disabling_removes_the_cron_job() {
    // The cron clock runs 60 times faster: "*/5 * * * *" fires every 5 real seconds.
    let mut c = Cluster::start_with(&["--cron-time-scale", "60"]);
    install(&mut c);
    c.apply(BASE);
    c.apply(
        r#"
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: BackupSchedule
metadata: {name: sched, namespace: demo}
spec:
  backupPolicyName: pol
  startingDeadlineMinutes: 10
  schedules:
  - {enabled: true, backupMethod: full, cronExpression: "*/5 * * * *", retentionPeriod: 7d}
  - {enabled: true, name: hourly-incr, backupMethod: incr, cronExpression: "*/5 * * * *", retentionPeriod: 1d}
  - {backupMethod: full, name: never, cronExpression: "0 0 * * *"}
  - {enabled: true, backupMethod: wal, cronExpression: "*/5 * * * *", retentionPeriod: 8d}
"#,
    );
    let sched = c.wait_for(
        "BackupSchedule sched Available",
        Duration::from_secs(60),
        || {
            c.get(&["bs", "sched", "-n", "demo"])
                .filter(|s| s.pointer("/status/phase") == Some(&Value::from("Available")))
        },
    );
    let uid8: String = sched["metadata"]["uid"]
        .as_str()
        .unwrap()
        .chars()
        .take(8)
        .collect();
    assert_eq!(
        sched["metadata"]["labels"]["dataprotection.kubeblocks.io/backup-policy"],
        "pol"
    );
    assert!(sched["metadata"]["finalizers"]
        .as_array()
        .unwrap()
        .contains(&Value::from("dataprotection.kubeblocks.io/finalizer")));
    // One CronJob per enabled schedule, named and built as KubeBlocks builds them.
    let full_cj = format!("{uid8}-sched-demo-full");
    let incr_cj = format!("{uid8}-sched-demo-hourly-incr");
    let cj = c
        .get(&["cronjob", &full_cj, "-n", "demo"])
        .expect("the full schedule's CronJob");
    assert_eq!(cj["spec"]["schedule"], "*/5 * * * *");
    assert_eq!(cj["spec"]["timeZone"], "UTC");
    assert_eq!(cj["spec"]["concurrencyPolicy"], "Forbid");
    assert_eq!(cj["spec"]["successfulJobsHistoryLimit"], 0);
    assert_eq!(cj["spec"]["failedJobsHistoryLimit"], 1);
    assert_eq!(cj["spec"]["startingDeadlineSeconds"], 600);
    assert_eq!(cj["spec"]["jobTemplate"]["spec"]["backoffLimit"], 2);
    assert_eq!(
        cj["metadata"]["labels"]["dataprotection.kubeblocks.io/backup-schedule"],
        "sched"
    );
    assert_eq!(
        cj["metadata"]["labels"]["dataprotection.kubeblocks.io/backup-method"],
        "full"
    );
    assert_eq!(
        cj["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "kubeblocks-dataprotection"
    );
    assert_eq!(
        cj["metadata"]["ownerReferences"][0]["kind"],
        "BackupSchedule"
    );
    let pod = &cj["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(
        pod["serviceAccountName"],
        "kubeblocks-dataprotection-worker"
    );
    assert_eq!(pod["containers"][0]["name"], "backup-schedule");
    assert_eq!(pod["containers"][0]["command"][0], "/dprepo-controller");
    assert!(c.get(&["cronjob", &incr_cj, "-n", "demo"]).is_some());
    assert!(c
        .get(&["cronjob", &format!("{uid8}-sched-demo-never"), "-n", "demo"])
        .is_none());
    assert!(c
        .get(&["sa", "kubeblocks-dataprotection-worker", "-n", "demo"])
        .is_some());

    // The Continuous method gets one long-lived Backup instead of a CronJob, named and
    // labelled as KubeBlocks' scheduler makes it.
    assert!(c
        .get(&["cronjob", &format!("{uid8}-sched-demo-wal"), "-n", "demo"])
        .is_none());
    let wal = c
        .get(&["backup", &format!("{uid8}-sched-demo-wal"), "-n", "demo"])
        .expect("the Continuous backup");
    let labels = &wal["metadata"]["labels"];
    assert_eq!(
        labels["dataprotection.kubeblocks.io/backup-type"],
        "Continuous"
    );
    assert_eq!(labels["dataprotection.kubeblocks.io/autobackup"], "true");
    assert_eq!(
        labels["dataprotection.kubeblocks.io/backup-schedule"],
        "sched"
    );
    assert_eq!(labels["app.kubernetes.io/instance"], "mydb");
    assert_eq!(
        labels["app.kubernetes.io/managed-by"],
        "kubeblocks-dataprotection"
    );
    assert_eq!(wal["spec"]["backupMethod"], "wal");
    assert_eq!(wal["spec"]["retentionPeriod"], "8d");
    assert_eq!(sched["status"]["schedules"]["wal"]["phase"], "Running");

    // The full schedule fires at least twice.
    let made = c.wait_for("two scheduled Backups", Duration::from_secs(120), || {
        let b: Vec<Value> = backups(&c, "dataprotection.kubeblocks.io/backup-schedule=sched")
            .into_iter()
            .filter(|b| b["spec"]["backupMethod"] == "full")
            .collect();
        (b.len() >= 2).then_some(b)
    });
    for b in &made {
        let name = name_of(b);
        assert!(is_scheduled_name("mydb-full", &name), "{name}");
        assert_eq!(
            b["metadata"]["labels"]["dataprotection.kubeblocks.io/autobackup"],
            "true"
        );
        assert_eq!(
            b["metadata"]["labels"]["dataprotection.kubeblocks.io/backup-schedule"],
            "sched"
        );
        assert_eq!(b["spec"]["backupPolicyName"], "pol");
        assert_eq!(b["spec"]["backupMethod"], "full");
        assert_eq!(b["spec"]["retentionPeriod"], "7d");
    }
    // No Completed Full yet: the Incremental schedule's runs create nothing.
    // (Successful runs' Jobs are not kept: successfulJobsHistoryLimit is 0.)
    c.wait_for(
        "an Incremental run that succeeded",
        Duration::from_secs(60),
        || {
            c.get(&["cronjob", &incr_cj, "-n", "demo"])
                .filter(|cj| cj.pointer("/status/lastSuccessfulTime").is_some())
        },
    );
    assert!(
        backups(&c, "dataprotection.kubeblocks.io/backup-schedule=sched")
            .iter()
            .all(|b| b["spec"]["backupMethod"] != "incr"),
        "an Incremental backup without a full one"
    );

    // One full backup completes (as the Backup reconciler reports it, with its labels):
    // lastSuccessfulTime appears, and the Incremental schedule starts making backups.
    let first = name_of(&made[0]);
    c.kubectl_ok(&[
        "label",
        "backup",
        &first,
        "-n",
        "demo",
        "dataprotection.kubeblocks.io/backup-policy=pol",
        "dataprotection.kubeblocks.io/backup-type=Full",
    ]);
    set_status(
        &c,
        &first,
        serde_json::json!({"phase": "Completed", "completionTimestamp": "2026-01-02T03:04:05Z"}),
    );
    let sched = c.wait_for("lastSuccessfulTime", Duration::from_secs(60), || {
        c.get(&["bs", "sched", "-n", "demo"]).filter(|s| {
            s.pointer("/status/schedules/full/lastSuccessfulTime")
                == Some(&Value::from("2026-01-02T03:04:05Z"))
        })
    });
    let full = &sched["status"]["schedules"]["full"];
    assert_eq!(full["phase"], "Running");
    assert!(full["lastScheduleTime"].is_string(), "{full}");
    assert_eq!(
        sched["status"]["schedules"]["hourly-incr"]["phase"],
        "Running"
    );
    assert!(sched["status"]["schedules"].get("never").is_none());
    c.wait_for("an Incremental backup", Duration::from_secs(90), || {
        backups(&c, "dataprotection.kubeblocks.io/backup-schedule=sched")
            .iter()
            .find(|b| b["spec"]["backupMethod"] == "incr")
            .filter(|b| is_scheduled_name("mydb-hourly-incr", &name_of(b)))
            .cloned()
    });

    // Disabling the full schedule removes its CronJob and its status entry.
    c.kubectl_ok(&[
        "patch",
        "bs",
        "sched",
        "-n",
        "demo",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/schedules/0/enabled","value":false}]"#,
    ]);
    c.wait_for("the full CronJob gone", Duration::from_secs(60), || {
        c.get(&["cronjob", &full_cj, "-n", "demo"])
            .is_none()
            .then_some(())
    });
    c.wait_for(
        "the status without the disabled schedule",
        Duration::from_secs(60),
        || {
            c.get(&["bs", "sched", "-n", "demo"])
                .filter(|s| s.pointer("/status/schedules/full").is_none())
        },
    );
    assert!(c.get(&["cronjob", &incr_cj, "-n", "demo"]).is_some());

    // A schedule of a method the policy lacks: Failed, with KubeBlocks' event.
    c.apply(
        r#"
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: BackupSchedule
metadata: {name: wrong, namespace: demo}
spec:
  backupPolicyName: pol
  schedules:
  - {enabled: true, backupMethod: nope, cronExpression: "0 * * * *"}
"#,
    );
    let wrong = c.wait_for(
        "BackupSchedule wrong Failed",
        Duration::from_secs(60),
        || {
            c.get(&["bs", "wrong", "-n", "demo"])
                .filter(|s| s.pointer("/status/phase") == Some(&Value::from("Failed")))
        },
    );
    let reason = wrong["status"]["failureReason"].as_str().unwrap();
    assert!(
        reason.contains("backup method nope is not in backup policy demo/pol"),
        "{reason}"
    );
    c.wait_for(
        "the HandleBackupScheduleFailed event",
        Duration::from_secs(30),
        || {
            c.events_of("wrong")
                .iter()
                .any(|e| e.starts_with("HandleBackupScheduleFailed: "))
                .then_some(())
        },
    );

    // Deleting the schedule deletes its CronJobs.
    c.kubectl_ok(&["delete", "bs", "sched", "-n", "demo", "--wait=false"]);
    c.wait_for(
        "sched and its CronJobs gone",
        Duration::from_secs(60),
        || {
            (c.get(&["bs", "sched", "-n", "demo"]).is_none()
                && c.get(&["cronjob", &incr_cj, "-n", "demo"]).is_none())
            .then_some(())
        },
    );
    assert!(
        !c.controller_log().contains("panicked"),
        "{}",
        c.controller_log()
    );
}

/// The Backups here are made by hand with the statuses the decisions need, and marked
/// `skip-reconciliation` so the Backup reconciler leaves them as written (the expiry loop,
/// like KubeBlocks' GC, does not look at that annotation).
///
/// The expiry loop (every GC_FREQUENCY_SECONDS, here 2): expired Failed and Completed
/// Backups go, except the newest Completed one under retainLatestBackup; unexpired,
/// running and expiry-less ones stay; `dprepo.io/keep-last: 2` keeps exactly the two
/// newest Completed autobackups of its schedule.
#[test]
fn the_expiry_loop_deletes_expired_backups_and_keep_last_keeps_exactly_n() {
    let mut c = Cluster::start();
    install_with(&mut c, &[("GC_FREQUENCY_SECONDS", "2")]);
    c.apply(BASE);
    c.apply(
        r#"
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: BackupSchedule
metadata:
  name: keep
  namespace: demo
  annotations: {dprepo.io/keep-last: "2"}
spec:
  backupPolicyName: pol
  schedules:
  - {enabled: false, backupMethod: full, cronExpression: "0 0 * * *"}
"#,
    );
    let backup = |name: &str, labels: &str| {
        format!(
            "apiVersion: dataprotection.kubeblocks.io/v1alpha1\nkind: Backup\nmetadata: {{name: {name}, namespace: demo, labels: {{{labels}}}, annotations: {{dataprotection.kubeblocks.io/skip-reconciliation: 'true'}}}}\nspec: {{backupPolicyName: pol, backupMethod: full}}\n---\n"
        )
    };
    let cluster = "dataprotection.kubeblocks.io/cluster-uid: c1";
    let auto = "dataprotection.kubeblocks.io/autobackup: 'true', dataprotection.kubeblocks.io/backup-schedule: keep";
    let mut yaml = String::new();
    for n in [
        "expired-failed",
        "expired-old",
        "expired-newest",
        "not-expired",
        "running-expired",
        "forever",
    ] {
        yaml.push_str(&backup(n, cluster));
    }
    for n in ["k1", "k2", "k3", "k4"] {
        yaml.push_str(&backup(n, auto));
    }
    c.apply(&yaml);
    let past = "2026-01-01T00:00:00Z";
    let future = "2999-01-01T00:00:00Z";
    let statuses = [
        (
            "expired-failed",
            serde_json::json!({"phase": "Failed", "expiration": past}),
        ),
        (
            "expired-old",
            serde_json::json!({"phase": "Completed", "expiration": past, "completionTimestamp": "2025-12-01T00:00:00Z"}),
        ),
        (
            "expired-newest",
            serde_json::json!({"phase": "Completed", "expiration": past, "completionTimestamp": "2025-12-02T00:00:00Z"}),
        ),
        (
            "not-expired",
            serde_json::json!({"phase": "Completed", "expiration": future, "completionTimestamp": "2025-11-01T00:00:00Z"}),
        ),
        (
            "running-expired",
            serde_json::json!({"phase": "Running", "expiration": past}),
        ),
        (
            "forever",
            serde_json::json!({"phase": "Completed", "completionTimestamp": "2025-10-01T00:00:00Z"}),
        ),
        (
            "k1",
            serde_json::json!({"phase": "Completed", "completionTimestamp": "2025-12-01T00:00:00Z"}),
        ),
        (
            "k2",
            serde_json::json!({"phase": "Completed", "completionTimestamp": "2025-12-02T00:00:00Z"}),
        ),
        (
            "k3",
            serde_json::json!({"phase": "Completed", "completionTimestamp": "2025-12-03T00:00:00Z"}),
        ),
        (
            "k4",
            serde_json::json!({"phase": "Completed", "completionTimestamp": "2025-12-04T00:00:00Z"}),
        ),
    ];
    for (name, status) in statuses {
        set_status(&c, name, status);
    }
    let gone = ["expired-failed", "expired-old", "k1", "k2"];
    c.wait_for(
        "the expired and beyond-keep-last Backups gone",
        Duration::from_secs(60),
        || {
            gone.iter()
                .all(|n| c.get(&["backup", n, "-n", "demo"]).is_none())
                .then_some(())
        },
    );
    // Two more periods: nothing else goes.
    std::thread::sleep(Duration::from_secs(5));
    let all = c.get(&["backups", "-n", "demo"]).expect("backups");
    let mut left: Vec<String> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(name_of)
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "expired-newest",
            "forever",
            "k3",
            "k4",
            "not-expired",
            "running-expired"
        ],
        "{}",
        c.controller_log()
    );
    // Events and metrics say what happened.
    assert!(c
        .events_of("expired-old")
        .iter()
        .any(|e| e.starts_with("ExpiredBackupDeleted: ")));
    // One event per deleted Backup, whether k1 and k2 go in one pass or in two (the
    // statuses are set one at a time while the loop runs every 2 s). Failed before when
    // they went in two passes: the second event joined the first one's series (same
    // reason, same schedule) and only counted up, so "deleted k2" was never shown.
    let mut deleted: Vec<String> = c
        .events_of("keep")
        .iter()
        .filter_map(|e| e.strip_prefix("KeepLastBackupsDeleted: dprepo.io/keep-last=2: deleted "))
        .flat_map(|names| names.split(", ").map(str::to_string).collect::<Vec<_>>())
        .collect();
    deleted.sort();
    assert_eq!(deleted, ["k1", "k2"], "{:?}", c.events_of("keep"));
    let (code, metrics) = c.http_get(c.metrics_port, "/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("dprepo_backup_expiry_deleted_total{rule=\"expired\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("dprepo_backup_expiry_deleted_total{rule=\"keep-last\"} 2"),
        "{metrics}"
    );
    // A keep-last that is not a number is reported, and nothing of it is deleted.
    c.kubectl_ok(&[
        "annotate",
        "--overwrite",
        "bs",
        "keep",
        "-n",
        "demo",
        "dprepo.io/keep-last=all",
    ]);
    c.wait_for("the InvalidKeepLast event", Duration::from_secs(30), || {
        c.events_of("keep")
            .iter()
            .any(|e| {
                e.starts_with("InvalidKeepLast: dprepo.io/keep-last: \"all\" is not a whole number")
            })
            .then_some(())
    });
    assert!(c.get(&["backup", "k3", "-n", "demo"]).is_some());
    assert!(
        !c.controller_log().contains("panicked"),
        "{}",
        c.controller_log()
    );
}
