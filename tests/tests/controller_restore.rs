//! End-to-end: Restores run by the real `dprepo-controller` binary against kube-sim (pods
//! as processes), driven with the machine's `kubectl`.
//!
//! Until the Backup reconciler lands, the tests leave each Backup the way the backup side
//! does: a Job with the same datasafed injection as the controller's Jobs pushes the data
//! with the real `datasafed`, then the Backup's status (phase, path, repository, time
//! range, size, method) is written through the status subresource.
//!
//! The cluster is the shared harness (`common::cluster`: kube-sim, the controller,
//! kubectl). Build first: `cargo build -p dprepo-tools -p kube-sim -p dprepo-controller
//! --bins`. Root is needed (kube-sim's runner), and `kubectl` on PATH.

mod common;

use common::cluster::*;
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The image kube-sim maps to the cargo-built `dprepo` (`/datasafed`, the installer).
const DPREPO_IMAGE: &str = concat!("docker.io/dprepo/dprepo:", env!("CARGO_PKG_VERSION"));

fn condition(obj: &Value, type_: &str) -> Value {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_).cloned())
        .unwrap_or(Value::Null)
}

/// The ActionSets: a full backup whose restore is written as KubeBlocks' addon scripts
/// are (`datasafed pull ... | tar -x -C ${DATA_DIR}`), a continuous one whose restore
/// pulls the log and records the recovery target, and one whose restore "succeeds"
/// without writing anything.
const ACTION_SETS: &str = r#"
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: ActionSet
metadata: {name: files-full}
spec:
  backupType: Full
  env:
  - {name: DATA_DIR, value: /data/files}
  backup:
    backupData:
      image: docker.io/library/debian:12
      command: [sh, -c, "true"]
  restore:
    prepareData:
      image: docker.io/library/debian:12
      command:
      - bash
      - -c
      - |
        set -e
        export PATH="$PATH:$DP_DATASAFED_BIN_PATH"
        export DATASAFED_BACKEND_BASE_PATH="$DP_BACKUP_BASE_PATH"
        mkdir -p ${DATA_DIR}
        datasafed pull "${DP_BACKUP_NAME}.tar" - | tar -xf - -C ${DATA_DIR}
        env | grep '^DP_' | sort > /data/restore-env-${DP_BACKUP_NAME}
---
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: ActionSet
metadata: {name: files-wal}
spec:
  backupType: Continuous
  env:
  - {name: DATA_DIR, value: /data/files}
  - {name: DP_TIME_FORMAT, value: "2006-01-02 15:04:05 MST"}
  backup:
    backupData:
      image: docker.io/library/debian:12
      command: [sh, -c, "true"]
  restore:
    prepareData:
      image: docker.io/library/debian:12
      command:
      - bash
      - -c
      - |
        set -e
        export PATH="$PATH:$DP_DATASAFED_BIN_PATH"
        export DATASAFED_BACKEND_BASE_PATH="$DP_BACKUP_BASE_PATH"
        datasafed pull wal.log ${DATA_DIR}/wal.log
        echo "recovery_target_time = '${DP_RESTORE_TIME}'" > ${DATA_DIR}/recovery.conf
        env | grep '^DP_' | sort > /data/restore-env-${DP_BACKUP_NAME}
---
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: ActionSet
metadata: {name: files-noop}
spec:
  backupType: Full
  backup:
    backupData:
      image: docker.io/library/debian:12
      command: [sh, -c, "true"]
  restore:
    prepareData:
      image: docker.io/library/debian:12
      command: [sh, -c, "echo restored; exit 0"]
"#;

/// Makes the repository reachable from `ns` the way a Backup does before it runs: a
/// Backup labelled `wait-repo-preparation` makes the BackupRepo reconciler create the
/// namespace's PVC and tool Secret. The test writes its status as the backup side would
/// (`set_backup_status`), so it is marked `skip-reconciliation`: the Backup reconciler
/// leaves it as written.
fn create_backup(c: &Cluster, ns: &str, name: &str, backup_type: &str) {
    c.apply(&format!(
        r#"
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: Backup
metadata:
  name: {name}
  namespace: {ns}
  annotations:
    dataprotection.kubeblocks.io/skip-reconciliation: "true"
  labels:
    dataprotection.kubeblocks.io/backup-repo-name: local
    dataprotection.kubeblocks.io/wait-repo-preparation: "true"
    dataprotection.kubeblocks.io/backup-type: {backup_type}
    dataprotection.kubeblocks.io/backup-policy: files-policy
spec:
  backupPolicyName: files-policy
  backupMethod: {method}
"#,
        method = if backup_type == "Continuous" {
            "wal"
        } else {
            "tar"
        }
    ));
}

/// Pushes `script`'s output into the repository from a Job in `ns` that gets exactly the
/// controller's datasafed injection (installer init container, repository PVC, tool
/// Secret with the key), with `source` mounted at `/source`.
fn push_job(c: &Cluster, ns: &str, backup: &str, source: &Path, script: &str) {
    let repo = c.get(&["backuprepo", "local"]).unwrap();
    let pvc = repo["status"]["backupPVCName"]
        .as_str()
        .unwrap()
        .to_string();
    let secret = repo["status"]["toolConfigSecretName"]
        .as_str()
        .unwrap()
        .to_string();
    c.wait_for(
        "the repository prepared in the namespace",
        Duration::from_secs(120),
        || {
            (c.get(&["pvc", "-n", ns, &pvc]).is_some()
                && c.get(&["secret", "-n", ns, &secret]).is_some())
            .then_some(())
        },
    );
    let job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": format!("push-{backup}"), "namespace": ns},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "initContainers": [{
                "name": "dp-copy-datasafed", "image": DPREPO_IMAGE,
                "command": ["/bin/sh", "-c", "/scripts/install-datasafed.sh /bin/datasafed"],
                "volumeMounts": [{"name": "dp-datasafed-bin", "mountPath": "/bin/datasafed"}]
            }],
            "containers": [{
                "name": "backupdata", "image": "docker.io/library/debian:12",
                "command": ["bash", "-c", format!("set -e\nexport PATH=\"$PATH:$DP_DATASAFED_BIN_PATH\"\nexport DATASAFED_BACKEND_BASE_PATH=\"$DP_BACKUP_BASE_PATH\"\n{script}")],
                "env": [
                    {"name": "DP_BACKUP_NAME", "value": backup},
                    {"name": "DP_BACKUP_BASE_PATH", "value": format!("/{ns}/{backup}")},
                    {"name": "DATASAFED_LOCAL_BACKEND_PATH", "value": "/backupdata"},
                    {"name": "DPREPO_PASSWORD_FILE", "value": "/etc/datasafed/dprepo-password"},
                    {"name": "DP_DATASAFED_BIN_PATH", "value": "/bin/datasafed"},
                    {"name": "DPREPO_CACHE_DIR", "value": "/dprepo-cache"}
                ],
                "volumeMounts": [
                    {"name": "dp-backup-data", "mountPath": "/backupdata"},
                    {"name": "dp-datasafed-config", "mountPath": "/etc/datasafed", "readOnly": true},
                    {"name": "dp-datasafed-bin", "mountPath": "/bin/datasafed"},
                    {"name": "dp-dprepo-cache", "mountPath": "/dprepo-cache"},
                    {"name": "source", "mountPath": "/source", "readOnly": true}
                ]
            }],
            "volumes": [
                {"name": "dp-backup-data", "persistentVolumeClaim": {"claimName": pvc}},
                {"name": "dp-datasafed-config", "secret": {"secretName": secret}},
                {"name": "dp-datasafed-bin", "emptyDir": {}},
                {"name": "dp-dprepo-cache", "emptyDir": {}},
                {"name": "source", "hostPath": {"path": source.to_str().unwrap(), "type": "Directory"}}
            ]
        }}}
    });
    c.apply(&serde_json::to_string(&job).unwrap());
    let done = c.wait_for(
        &format!("push Job of {backup}"),
        Duration::from_secs(180),
        || {
            c.get(&["job", "-n", ns, &format!("push-{backup}")])
                .filter(|j| {
                    j.pointer("/status/succeeded").is_some()
                        || j.pointer("/status/failed").is_some()
                })
        },
    );
    assert!(
        done.pointer("/status/succeeded").is_some(),
        "the push Job failed: {}",
        c.kubectl(&[
            "logs",
            "-n",
            ns,
            &format!("job/push-{backup}"),
            "-c",
            "backupdata"
        ])
        .stdout
        .iter()
        .map(|b| *b as char)
        .collect::<String>()
    );
}

/// Writes a Backup's status as the backup side leaves it when it ends.
fn set_backup_status(
    c: &Cluster,
    ns: &str,
    name: &str,
    phase: &str,
    action_set: &str,
    range: (&str, &str),
    extra: Value,
) {
    let mut status = json!({
        "formatVersion": "0.1.0",
        "phase": phase,
        "path": format!("/{ns}/{name}"),
        "backupRepoName": "local",
        "persistentVolumeClaimName": c.get(&["backuprepo", "local"]).unwrap()["status"]["backupPVCName"],
        "startTimestamp": range.0,
        "completionTimestamp": range.1,
        "timeRange": {"timeZone": "+08:00", "start": range.0, "end": range.1},
        "totalSize": "1234",
        "duration": "10s",
        "backupMethod": {
            "name": if action_set == "files-wal" { "wal" } else { "tar" },
            "actionSetName": action_set,
            "targetVolumes": {"volumeMounts": [{"name": "data", "mountPath": "/data"}]}
        },
        "target": {
            "podSelector": {"matchLabels": {"app": "files"}, "strategy": "Any"},
            "selectedTargetPods": ["files-0"]
        }
    });
    if let (Some(s), Some(e)) = (status.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    c.kubectl_ok(&[
        "patch",
        "backup",
        "-n",
        ns,
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &json!({ "status": status }).to_string(),
    ]);
}

fn restore_yaml(
    ns: &str,
    name: &str,
    backup: &str,
    restore_time: Option<&str>,
    claim: &str,
) -> String {
    format!(
        r#"
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: Restore
metadata: {{name: {name}, namespace: {ns}}}
spec:
  backup: {{name: {backup}, namespace: demo}}
{time}  prepareDataConfig:
    volumeClaimRestorePolicy: Parallel
    volumeClaims:
    - metadata: {{name: {claim}, labels: {{app: restored}}}}
      volumeSource: data
      volumeClaimSpec:
        accessModes: [ReadWriteOnce]
        resources: {{requests: {{storage: 1Gi}}}}
"#,
        time = restore_time
            .map(|t| format!("  restoreTime: \"{t}\"\n"))
            .unwrap_or_default()
    )
}

/// Every file under `root`, relative, with its bytes.
fn tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn env_file(path: &Path) -> std::collections::BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The whole Restore story on one cluster: a full backup restored into a new claim in
/// another namespace (through the wait-repo-preparation hand-off), byte for byte;
/// point-in-time restores picking their base; and the failure paths, each Failed with a
/// message that says why.
#[test]
fn restores_full_and_point_in_time_backups_and_fails_clearly() {
    let mut c = Cluster::start();
    apply_deploy(&c, false);
    c.start_controller();
    c.apply(&local_mount_repo("demo"));
    c.apply(
        r#"
apiVersion: v1
kind: Namespace
metadata: {name: target}
"#,
    );
    c.apply(ACTION_SETS);
    c.wait_for("BackupRepo local Ready", Duration::from_secs(180), || {
        c.get(&["backuprepo", "local"])
            .filter(|r| r.pointer("/status/phase") == Some(&Value::from("Ready")))
    });

    // The original data: a tree with a large random file, an empty file, a subdirectory.
    let original = c.dir.path().join("original");
    std::fs::create_dir_all(original.join("sub/deeper")).unwrap();
    std::fs::write(original.join("big.bin"), random_bytes(7, 3 << 20)).unwrap();
    std::fs::write(original.join("empty"), b"").unwrap();
    std::fs::write(original.join("sub/notes.txt"), text_bytes(10_000)).unwrap();
    std::fs::write(original.join("sub/deeper/x"), random_bytes(8, 4097)).unwrap();
    let wal = c.dir.path().join("wal");
    std::fs::create_dir_all(&wal).unwrap();
    std::fs::write(wal.join("wal.log"), text_bytes(5000)).unwrap();

    // Two full backups, a continuous one, a failed one, and one restored by a no-op.
    let tar = r#"tar -cf - -C /source . | datasafed push - "${DP_BACKUP_NAME}.tar""#;
    for (name, kind) in [
        ("full-1", "Full"),
        ("full-2", "Full"),
        ("wal", "Continuous"),
        ("noop", "Full"),
    ] {
        create_backup(&c, "demo", name, kind);
    }
    push_job(&c, "demo", "full-1", &original, tar);
    push_job(&c, "demo", "full-2", &original, tar);
    push_job(
        &c,
        "demo",
        "wal",
        &wal,
        "datasafed push /source/wal.log wal.log",
    );
    set_backup_status(
        &c,
        "demo",
        "full-1",
        "Completed",
        "files-full",
        ("2026-01-01T10:00:00Z", "2026-01-01T10:10:00Z"),
        json!({}),
    );
    set_backup_status(
        &c,
        "demo",
        "full-2",
        "Completed",
        "files-full",
        ("2026-01-01T10:20:00Z", "2026-01-01T10:30:00Z"),
        json!({}),
    );
    set_backup_status(
        &c,
        "demo",
        "wal",
        "Running",
        "files-wal",
        ("2026-01-01T09:55:00Z", "2026-01-01T11:00:00Z"),
        json!({}),
    );
    set_backup_status(
        &c,
        "demo",
        "noop",
        "Completed",
        "files-noop",
        ("2026-01-01T10:00:00Z", "2026-01-01T10:10:00Z"),
        json!({}),
    );
    c.apply(
        r#"
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: Backup
metadata:
  name: broken
  namespace: demo
  annotations: {dataprotection.kubeblocks.io/skip-reconciliation: "true"}
spec: {backupPolicyName: files-policy, backupMethod: tar}
"#,
    );
    set_backup_status(
        &c,
        "demo",
        "broken",
        "Failed",
        "files-full",
        ("2026-01-01T10:00:00Z", "2026-01-01T10:10:00Z"),
        json!({"failureReason": "BackoffLimitExceeded: the backup container exited 1"}),
    );

    // 1. A full backup into a new claim: Completed, and the files equal the originals
    // byte for byte.
    c.apply(&restore_yaml("demo", "full", "full-1", None, "restored"));
    let r = c.finished_restore("demo", "full");
    assert_eq!(r["status"]["phase"], "Completed", "{r:#}");
    let restored = c.volume_dir("demo", "restored");
    assert_eq!(tree(&original), tree(&restored.join("files")));
    assert_eq!(condition(&r, "PrepareData")["status"], "True");
    assert_eq!(condition(&r, "ValidationPassed")["status"], "True");
    assert_eq!(condition(&r, "CheckBackupRepo")["status"], "True");
    let actions = r["status"]["actions"]["prepareData"].as_array().unwrap();
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert_eq!(actions[0]["status"], "Completed");
    assert_eq!(actions[0]["backupName"], "full-1");
    assert_eq!(actions[0]["name"], "prepareData-0");
    let uid8 = &r["metadata"]["uid"].as_str().unwrap()[..8];
    assert_eq!(
        actions[0]["objectKey"],
        format!("Job/restore-preparedata-{uid8}-full-1-0")
    );
    assert!(r["status"]["duration"].as_str().is_some());
    let env = env_file(&restored.join("restore-env-full-1"));
    assert_eq!(env["DP_BACKUP_NAME"], "full-1");
    assert_eq!(env["DP_BACKUP_BASE_PATH"], "/demo/full-1");
    assert_eq!(env["DP_BACKUP_ROOT_PATH"], "/demo");
    assert_eq!(env["DP_BACKUP_STOP_TIME"], "2026-01-01T18:10:00+08:00");
    let events = c.events_of("full");
    for reason in [
        "RestoreStarting",
        "CreateRestorePVC",
        "CreateRestoreJob",
        "RestoreCompleted",
    ] {
        assert!(
            events.iter().any(|e| e.starts_with(reason)),
            "{reason} missing: {events:?}"
        );
    }
    c.wait_for("the restore Jobs deleted", Duration::from_secs(60), || {
        c.get(&[
            "jobs",
            "-n",
            "target",
            "-l",
            "dataprotection.kubeblocks.io/restore=full",
        ])
        .filter(|l| l["items"].as_array().is_some_and(|i| i.is_empty()))
    });

    // Serial, from a template: two replicas' claims, one Job after the other, each
    // claim with the whole backup.
    c.apply(
        r#"
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: Restore
metadata: {name: serial, namespace: demo}
spec:
  backup: {name: full-2, namespace: demo}
  prepareDataConfig:
    volumeClaimRestorePolicy: Serial
    volumeClaimsTemplate:
      replicas: 2
      startingIndex: 1
      templates:
      - metadata: {name: tpl-data}
        volumeSource: data
        volumeClaimSpec:
          accessModes: [ReadWriteOnce]
          resources: {requests: {storage: 1Gi}}
"#,
    );
    let r = c.finished_restore("demo", "serial");
    assert_eq!(r["status"]["phase"], "Completed", "{r:#}");
    let actions = r["status"]["actions"]["prepareData"].as_array().unwrap();
    let keys: Vec<&str> = actions
        .iter()
        .map(|a| a["objectKey"].as_str().unwrap())
        .collect();
    let uid8 = &r["metadata"]["uid"].as_str().unwrap()[..8];
    assert_eq!(
        keys,
        [
            format!("Job/restore-preparedata-{uid8}-full-2-0"),
            format!("Job/restore-preparedata-{uid8}-full-2-1")
        ]
    );
    // One after the other: the second started when the first had ended.
    assert!(actions[1]["startTime"].as_str() >= actions[0]["endTime"].as_str());
    for claim in ["tpl-data-1", "tpl-data-2"] {
        assert_eq!(
            tree(&original),
            tree(&c.volume_dir("demo", claim).join("files"))
        );
    }

    // 2. Point in time: the base is the newest full ending before the time.
    for (name, time, base) in [
        ("pitr-late", "2026-01-01T10:40:00Z", "full-2"),
        ("pitr-early", "2026-01-01T10:15:00Z", "full-1"),
    ] {
        let claim = format!("{name}-data");
        c.apply(&restore_yaml("demo", name, "wal", Some(time), &claim));
        let r = c.finished_restore("demo", name);
        assert_eq!(r["status"]["phase"], "Completed", "{r:#}");
        let actions = r["status"]["actions"]["prepareData"].as_array().unwrap();
        let backups: Vec<&str> = actions
            .iter()
            .map(|a| a["backupName"].as_str().unwrap())
            .collect();
        assert_eq!(backups, [base, "wal"], "{actions:?}");
        let dir = c.volume_dir("demo", &claim);
        let wal_env = env_file(&dir.join("restore-env-wal"));
        assert_eq!(wal_env["DP_BASE_BACKUP_NAME"], base);
        let restore_time = chrono::DateTime::parse_from_rfc3339(time).unwrap();
        let local = restore_time.with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap());
        assert_eq!(
            wal_env["DP_RESTORE_TIME"],
            local.format("%Y-%m-%d %H:%M:%S +0800").to_string()
        );
        assert_eq!(
            wal_env["DP_RESTORE_TIMESTAMP"],
            restore_time.timestamp().to_string()
        );
        assert_eq!(wal_env["DP_BACKUP_BASE_PATH"], "/demo/wal");
        // The base was restored first, the log on top of it.
        let base_env = env_file(&dir.join(format!("restore-env-{base}")));
        assert_eq!(base_env["DP_BACKUP_NAME"], base);
        assert_eq!(tree(&original), {
            let mut t = tree(&dir.join("files"));
            t.retain(|(p, _)| p != "wal.log" && p != "recovery.conf");
            t
        });
        assert_eq!(
            std::fs::read(dir.join("files/wal.log")).unwrap(),
            text_bytes(5000)
        );
        assert!(std::fs::read_to_string(dir.join("files/recovery.conf"))
            .unwrap()
            .contains(&local.format("%Y-%m-%d %H:%M:%S").to_string()));
    }

    // 3. Failure paths.
    // A time outside the continuous backup's range: the ranges are in the message.
    c.apply(&restore_yaml(
        "demo",
        "too-late",
        "wal",
        Some("2026-01-01T12:00:00Z"),
        "too-late-data",
    ));
    let r = c.finished_restore("demo", "too-late");
    assert_eq!(r["status"]["phase"], "Failed");
    let v = condition(&r, "ValidationPassed");
    assert_eq!(v["status"], "False");
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains("restoreTime 2026-01-01T12:00:00Z is outside the time range of continuous backup \"wal\"")
            && msg.contains("2026-01-01T10:10:00Z to 2026-01-01T11:00:00Z (base backup \"full-1\")")
            && msg.contains("2026-01-01T10:30:00Z to 2026-01-01T11:00:00Z (base backup \"full-2\")"),
        "{msg}"
    );
    assert!(c
        .events_of("too-late")
        .iter()
        .any(|e| e.starts_with("RestoreFailed")));
    // A time inside the log but before any full backup ended.
    c.apply(&restore_yaml(
        "demo",
        "too-early",
        "wal",
        Some("2026-01-01T10:05:00Z"),
        "too-early-data",
    ));
    let r = c.finished_restore("demo", "too-early");
    assert_eq!(r["status"]["phase"], "Failed");
    let msg = condition(&r, "ValidationPassed")["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("is before every recoverable range"), "{msg}");
    // A Failed backup.
    c.apply(&restore_yaml(
        "demo",
        "of-broken",
        "broken",
        None,
        "broken-data",
    ));
    let r = c.finished_restore("demo", "of-broken");
    assert_eq!(r["status"]["phase"], "Failed");
    let msg = condition(&r, "ValidationPassed")["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        msg,
        "backup \"broken\" is not Completed (phase Failed: BackoffLimitExceeded: the backup container exited 1); only a Completed backup can be restored"
    );
    // A restore script that exits 0 after writing nothing, restored in another namespace:
    // the Restore waits there for the repository (wait-repo-preparation), the BackupRepo
    // reconciler prepares the namespace, then the empty claim fails it. (kube-sim's
    // host-path volumes are per claim, so another namespace's repository PVC does not
    // see the data pushed in demo: only a restore that reads nothing can run there.)
    c.apply(&restore_yaml("target", "noop", "noop", None, "noop-data"));
    let r = c.finished_restore("target", "noop");
    assert_eq!(r["status"]["phase"], "Failed", "{r:#}");
    assert!(
        c.events_of("noop")
            .iter()
            .any(|e| e.contains("CreateRestoreJob")),
        "{:?}",
        c.events_of("noop")
    );
    let prepare = condition(&r, "PrepareData");
    assert_eq!(prepare["status"], "False");
    let msg = prepare["message"].as_str().unwrap();
    assert!(
        msg.contains("restored volume is empty: 'noop-data': the restore container exited 0 but wrote nothing into it"),
        "{msg}"
    );
    let action = &r["status"]["actions"]["prepareData"][0];
    assert_eq!(action["status"], "Failed");
    assert!(action["message"]
        .as_str()
        .unwrap()
        .contains("restored volume is empty"));
    // A repository key that is gone from the namespace's tool Secret.
    let secret = c.get(&["backuprepo", "local"]).unwrap()["status"]["toolConfigSecretName"]
        .as_str()
        .unwrap()
        .to_string();
    c.kubectl_ok(&[
        "patch",
        "secret",
        "-n",
        "demo",
        &secret,
        "--type=json",
        "-p",
        r#"[{"op": "remove", "path": "/data/dprepo-password"}]"#,
    ]);
    c.apply(&restore_yaml(
        "demo",
        "keyless",
        "full-1",
        None,
        "keyless-data",
    ));
    let r = c.finished_restore("demo", "keyless");
    assert_eq!(r["status"]["phase"], "Failed");
    let msg = condition(&r, "CheckBackupRepo")["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.starts_with(&format!(
            "the repository key is missing: Secret demo/{secret} (the tool Secret of BackupRepo local) has no dprepo-password key"
        )),
        "{msg}"
    );
    // The sources were not touched: the first backup still restores, elsewhere.
    assert!(
        !c.controller_log().contains("panicked"),
        "{}",
        c.controller_log()
    );
}

/// Runs `cmd args` as the `postgres` user; panics with its output on failure.
fn as_postgres(cmd: &str, args: &[&str]) -> String {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--", cmd])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("runuser");
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}\n{}",
        stderr(&out),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pg_bin(name: &str) -> String {
    for dir in [
        "/usr/local/bin",
        "/usr/lib/postgresql/17/bin",
        "/usr/lib/postgresql/16/bin",
        "/usr/lib/postgresql/15/bin",
    ] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p.to_string_lossy().into_owned();
        }
    }
    panic!("PostgreSQL's {name} not found: install the Debian package postgresql to run this test");
}

/// Starts a server on `data`, runs `sql` through psql, stops the server.
fn with_server(data: &Path, sockets: &Path, sql: &str) -> String {
    let port = free_port().to_string();
    let opts = format!(
        "-c listen_addresses='' -c port={port} -c unix_socket_directories={}",
        sockets.display()
    );
    as_postgres(
        &pg_bin("pg_ctl"),
        &[
            "-D",
            data.to_str().unwrap(),
            "-o",
            &opts,
            "-w",
            "-l",
            sockets.join(format!("{port}.log")).to_str().unwrap(),
            "start",
        ],
    );
    let out = Command::new("runuser")
        .args([
            "-u",
            "postgres",
            "--",
            &pg_bin("psql"),
            "-h",
            sockets.to_str().unwrap(),
            "-p",
            &port,
            "-d",
            "postgres",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .output()
        .expect("psql");
    as_postgres(
        &pg_bin("pg_ctl"),
        &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"],
    );
    assert!(out.status.success(), "psql: {}", stderr(&out));
    // The result of the last statement (earlier ones print their command tags).
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .lines()
        .last()
        .unwrap_or("")
        .to_string()
}

/// A PostgreSQL data directory backed up (cold, after a clean shutdown) with the real
/// datasafed and restored by the controller into a new claim: the server starts on the
/// restored directory and every row is there (count and checksum of the table).
#[test]
fn a_postgresql_backup_restores_and_the_server_starts_on_it() {
    let mut c = Cluster::start();
    // The postgres user must reach the data directories under the test directory.
    std::fs::set_permissions(
        c.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let pg = c.dir.path().join("pg");
    let sockets = c.dir.path().join("sockets");
    for d in [&pg, &sockets] {
        std::fs::create_dir_all(d).unwrap();
        Command::new("chown")
            .args(["postgres:postgres", d.to_str().unwrap()])
            .status()
            .unwrap();
    }
    let data = pg.join("data");
    as_postgres(
        &pg_bin("initdb"),
        &["-D", data.to_str().unwrap(), "-U", "postgres", "--no-sync"],
    );
    let check =
        "select count(*) || ' ' || md5(string_agg(id || ':' || body, ',' order by id)) from t";
    let before = with_server(
        &data,
        &sockets,
        &format!("create table t (id int primary key, body text); insert into t select g, md5(g::text) from generate_series(1, 20000) g; {check}"),
    );
    assert!(before.starts_with("20000 "), "{before}");

    apply_deploy(&c, false);
    c.start_controller();
    c.apply(&local_mount_repo("demo"));
    c.apply(ACTION_SETS);
    c.wait_for("BackupRepo local Ready", Duration::from_secs(180), || {
        c.get(&["backuprepo", "local"])
            .filter(|r| r.pointer("/status/phase") == Some(&Value::from("Ready")))
    });
    create_backup(&c, "demo", "pg-full", "Full");
    push_job(
        &c,
        "demo",
        "pg-full",
        &data,
        r#"tar -cf - -C /source . | datasafed push - "${DP_BACKUP_NAME}.tar""#,
    );
    set_backup_status(
        &c,
        "demo",
        "pg-full",
        "Completed",
        "files-full",
        ("2026-01-01T10:00:00Z", "2026-01-01T10:10:00Z"),
        json!({}),
    );
    c.apply(&restore_yaml("demo", "pg", "pg-full", None, "pg-data"));
    let r = c.finished_restore("demo", "pg");
    assert_eq!(r["status"]["phase"], "Completed", "{r:#}");
    let restored = c.volume_dir("demo", "pg-data").join("files");
    let after = with_server(&restored, &sockets, check);
    assert_eq!(after, before);
}

/// postReady: a Job step of the ActionSet runs on the target pod's node with the pod's
/// volume and the database's address and credentials (`DP_DB_*`, the user and password
/// from the connection credential Secret) besides the restore environment.
#[test]
fn post_ready_job_steps_run_against_the_target_pod() {
    let mut c = Cluster::start();
    apply_deploy(&c, false);
    c.start_controller();
    c.apply(&local_mount_repo("demo"));
    c.apply(
        r#"
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: ActionSet
metadata: {name: files-post}
spec:
  backupType: Full
  env:
  - {name: DATA_DIR, value: /data}
  backup:
    backupData:
      image: docker.io/library/debian:12
      command: [sh, -c, "true"]
  restore:
    postReady:
    - job:
        image: docker.io/library/debian:12
        runOnTargetPodNode: true
        command: [sh, -c, "env | grep '^DP_' | sort > ${DATA_DIR}/post-ready-env"]
---
apiVersion: v1
kind: Secret
metadata: {name: files-conn, namespace: demo}
stringData: {username: postgres, password: s3cret}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: files-0-data, namespace: demo}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: files, namespace: demo}
---
apiVersion: v1
kind: Pod
metadata: {name: files-0, namespace: demo, labels: {app: files}}
spec:
  serviceAccountName: files
  containers:
  - name: db
    image: docker.io/library/debian:12
    command: [sleep, "3600"]
    ports: [{containerPort: 5432}]
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: files-0-data}
"#,
    );
    c.wait_for("BackupRepo local Ready", Duration::from_secs(180), || {
        c.get(&["backuprepo", "local"])
            .filter(|r| r.pointer("/status/phase") == Some(&Value::from("Ready")))
    });
    create_backup(&c, "demo", "post", "Full");
    c.wait_for(
        "the repository prepared in demo",
        Duration::from_secs(120),
        || {
            c.get(&["backup", "-n", "demo", "post"]).filter(|b| {
                b.pointer("/metadata/labels/dataprotection.kubeblocks.io~1wait-repo-preparation")
                    .is_none()
            })
        },
    );
    set_backup_status(
        &c,
        "demo",
        "post",
        "Completed",
        "files-post",
        ("2026-01-01T10:00:00Z", "2026-01-01T10:10:00Z"),
        json!({}),
    );
    c.wait_for("the target pod running", Duration::from_secs(120), || {
        c.get(&["pod", "-n", "demo", "files-0"])
            .filter(|p| p.pointer("/status/phase") == Some(&Value::from("Running")))
    });
    c.apply(
        r#"
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: Restore
metadata: {name: post, namespace: demo}
spec:
  backup: {name: post, namespace: demo}
  readyConfig:
    connectionCredential: {secretName: files-conn}
    jobAction:
      target:
        podSelector: {matchLabels: {app: files}}
        volumeMounts: [{name: data, mountPath: /data}]
"#,
    );
    let r = c.finished_restore("demo", "post");
    assert_eq!(r["status"]["phase"], "Completed", "{r:#}");
    assert_eq!(condition(&r, "PostReady")["status"], "True");
    let actions = r["status"]["actions"]["postReady"].as_array().unwrap();
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert_eq!(actions[0]["name"], "postReady-0");
    let uid8 = &r["metadata"]["uid"].as_str().unwrap()[..8];
    assert_eq!(
        actions[0]["objectKey"],
        format!("Job/restore-post-ready-{uid8}-post-0-0")
    );
    let env = env_file(&c.volume_dir("demo", "files-0-data").join("post-ready-env"));
    assert_eq!(env["DP_BACKUP_NAME"], "post");
    assert_eq!(env["DP_BACKUP_BASE_PATH"], "/demo/post");
    assert_eq!(env["DP_DB_USER"], "postgres");
    assert_eq!(env["DP_DB_PASSWORD"], "s3cret");
    assert_eq!(env["DP_DB_PORT"], "5432");
    assert_eq!(env["DP_DB_HOST"], "127.0.0.1");
}
