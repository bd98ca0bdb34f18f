//! End-to-end: volume snapshot backups (`snapshotVolumes: true`) run by the real
//! `dprepo-controller` on kube-sim, whose snapshot controller copies a claim's volume
//! once the `snapshot.storage.k8s.io/v1` CRDs are applied.
//!
//! Build first: `cargo build -p dprepo-tools -p kube-sim -p dprepo-controller --bins`.
//! Needs root (kube-sim's runner) and `kubectl`.

mod common;

use common::cluster::*;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// What the test needs besides [`local_mount_repo`].
const OBJECTS: &str = r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data-app-0, namespace: db}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Pod
metadata: {name: app-0, namespace: db, labels: {app: app}}
spec:
  containers:
  - name: main
    image: docker.io/library/debian:12
    command: [sh, -c, "echo 'precious rows' > /data/table.dat; sleep 3600"]
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: data-app-0}
---
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: BackupPolicy
metadata: {name: snap-policy, namespace: db}
spec:
  backupRepoName: local
  target:
    podSelector:
      matchLabels: {app: app}
  backupMethods:
  - name: volume-snapshot
    snapshotVolumes: true
    targetVolumes:
      volumes: [data]
"#;

fn crd(plural: &str, kind: &str, scope: &str) -> String {
    format!(
        r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: {plural}.snapshot.storage.k8s.io}}
spec:
  group: snapshot.storage.k8s.io
  scope: {scope}
  names: {{plural: {plural}, singular: {singular}, kind: {kind}, listKind: {kind}List}}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {{status: {{}}}}
    schema:
      openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
"#,
        singular = kind.to_lowercase()
    )
}

fn backup_yaml(name: &str) -> String {
    format!(
        "apiVersion: dataprotection.kubeblocks.io/v1alpha1\nkind: Backup\nmetadata: {{name: {name}, namespace: db}}\nspec: {{backupPolicyName: snap-policy, backupMethod: volume-snapshot, deletionPolicy: Delete}}\n"
    )
}

fn wait_backup(c: &Cluster, name: &str) -> Value {
    c.wait_for(
        &format!("Backup {name} to end"),
        Duration::from_secs(180),
        || {
            c.get(&["backup", "-n", "db", name]).filter(|b| {
                matches!(
                    b.pointer("/status/phase").and_then(Value::as_str),
                    Some("Completed" | "Failed")
                )
            })
        },
    )
}

fn volume_dir(c: &Cluster, claim: &str) -> PathBuf {
    let pvc = c.wait_for("the claim bound", Duration::from_secs(60), || {
        c.get(&["pvc", "-n", "db", claim])
            .filter(|p| p.pointer("/spec/volumeName").is_some())
    });
    let pv = c
        .get(&["pv", pvc["spec"]["volumeName"].as_str().unwrap()])
        .expect("the PV");
    PathBuf::from(pv["spec"]["hostPath"]["path"].as_str().expect("hostPath"))
}

/// Without the VolumeSnapshot API the Backup fails saying so; with it, the Backup takes a
/// VolumeSnapshot of the target's claim, waits until it is ready and records it in the
/// action and in `status.volumeSnapshots`; a claim made from that snapshot holds the
/// data, and so does the claim a Restore of the Backup makes; deleting the Backup deletes
/// the snapshot.
#[test]
fn volume_snapshot_backups_record_ready_snapshots_and_fail_without_the_api() {
    let mut c = Cluster::start();
    install(&mut c);
    // As on a real cluster, the namespace's default service account comes a moment later.
    c.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: db}\n");
    c.wait_for(
        "the default service account of db",
        Duration::from_secs(30),
        || c.get(&["sa", "-n", "db", "default"]),
    );
    c.apply(&local_mount_repo("db"));
    c.apply(OBJECTS);
    c.wait_for("BackupRepo local Ready", Duration::from_secs(180), || {
        c.get(&["backuprepo", "local"])
            .filter(|r| r.pointer("/status/phase") == Some(&Value::from("Ready")))
    });
    c.wait_for("BackupPolicy Available", Duration::from_secs(60), || {
        c.get(&["bp", "-n", "db", "snap-policy"])
            .filter(|p| p.pointer("/status/phase") == Some(&Value::from("Available")))
    });
    c.wait_for("the target running", Duration::from_secs(120), || {
        c.get(&["pod", "-n", "db", "app-0"])
            .filter(|p| p.pointer("/status/phase") == Some(&Value::from("Running")))
    });

    c.apply(&backup_yaml("no-api"));
    let b = wait_backup(&c, "no-api");
    assert_eq!(b["status"]["phase"], "Failed", "{:#}", b["status"]);
    let reason = b["status"]["failureReason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("createVolumeSnapshot-0")
            && reason.contains("VolumeSnapshot API (snapshot.storage.k8s.io/v1) is not installed"),
        "{reason}"
    );

    c.apply(&format!(
        "{}---{}---{}",
        crd("volumesnapshots", "VolumeSnapshot", "Namespaced"),
        crd("volumesnapshotcontents", "VolumeSnapshotContent", "Cluster"),
        crd("volumesnapshotclasses", "VolumeSnapshotClass", "Cluster")
    ));
    c.wait_for("the snapshot API served", Duration::from_secs(60), || {
        c.kubectl(&["get", "volumesnapshots", "-n", "db"])
            .status
            .success()
            .then_some(())
    });
    c.apply(&backup_yaml("snap1"));
    let b = wait_backup(&c, "snap1");
    assert_eq!(b["status"]["phase"], "Completed", "{:#}", b["status"]);
    let snaps = b["status"]["volumeSnapshots"]
        .as_array()
        .unwrap_or_else(|| panic!("no volumeSnapshots in {:#}", b["status"]));
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0]["name"], "snap1-0-data");
    assert_eq!(snaps[0]["volumeName"], "data");
    assert!(snaps[0]["contentName"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    let action = b["status"]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "createVolumeSnapshot-0")
        .cloned()
        .unwrap_or_else(|| panic!("no snapshot action in {:#}", b["status"]));
    assert_eq!(action["phase"], "Completed");
    assert_eq!(action["volumeSnapshots"], b["status"]["volumeSnapshots"]);
    let total: u64 = b["status"]["totalSize"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("totalSize in {:#}", b["status"]));
    assert!(total > 0);
    let vs = c
        .get(&["volumesnapshot", "-n", "db", "snap1-0-data"])
        .expect("the VolumeSnapshot");
    assert_eq!(vs["status"]["readyToUse"], true);
    assert_eq!(
        vs["spec"]["source"]["persistentVolumeClaimName"],
        "data-app-0"
    );
    assert_eq!(vs["metadata"]["ownerReferences"][0]["name"], "snap1");

    // The snapshot holds the data: a claim made from it has the file.
    c.apply(
        r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: from-snap, namespace: db}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
  dataSource: {apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: snap1-0-data}
"#,
    );
    let dir = volume_dir(&c, "from-snap");
    assert_eq!(
        std::fs::read_to_string(dir.join("table.dat")).unwrap(),
        "precious rows\n"
    );

    // A Restore of the backup makes its claim from the snapshot.
    c.apply(
        r#"
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: Restore
metadata: {name: from-backup, namespace: db}
spec:
  backup: {name: snap1, namespace: db}
  prepareDataConfig:
    volumeClaims:
    - metadata: {name: restored-data}
      volumeSource: data
      volumeClaimSpec:
        accessModes: [ReadWriteOnce]
        resources: {requests: {storage: 1Gi}}
"#,
    );
    let r = c.wait_for("the Restore to end", Duration::from_secs(120), || {
        c.get(&["restore", "-n", "db", "from-backup"]).filter(|r| {
            matches!(
                r.pointer("/status/phase").and_then(Value::as_str),
                Some("Completed" | "Failed")
            )
        })
    });
    assert_eq!(r["status"]["phase"], "Completed", "{:#}", r["status"]);
    let claim = c.get(&["pvc", "-n", "db", "restored-data"]).expect("claim");
    assert_eq!(claim["spec"]["dataSource"]["name"], "snap1-0-data");
    assert_eq!(
        std::fs::read_to_string(volume_dir(&c, "restored-data").join("table.dat")).unwrap(),
        "precious rows\n"
    );

    // Deleting the Backup deletes its snapshot.
    c.kubectl_ok(&["delete", "backup", "-n", "db", "snap1", "--wait=false"]);
    c.wait_for("the snapshot deleted", Duration::from_secs(120), || {
        c.get(&["volumesnapshot", "-n", "db", "snap1-0-data"])
            .is_none()
            .then_some(())
    });
}
