//! VolumeSnapshots (`snapshot.storage.k8s.io/v1`, active once their CRDs are applied),
//! playing the snapshot controller and a CSI driver's snapshotter and provisioner:
//!
//! - a VolumeSnapshot of a bound PVC (`source.persistentVolumeClaimName`) copies the
//!   volume's directory, creates the VolumeSnapshotContent `snapcontent-<snapshot uid>`
//!   (driver, `deletionPolicy` from the VolumeSnapshotClass or `Delete`, `source.volumeHandle`,
//!   `volumeSnapshotRef`) with status `snapshotHandle`, `creationTime` (ns), `restoreSize`
//!   (bytes), `readyToUse`, and sets the snapshot's status `boundVolumeSnapshotContentName`,
//!   `creationTime`, `restoreSize` (the claim's capacity), `readyToUse: true`; the
//!   snapshot and content carry the bound-protection finalizers;
//! - deleting a snapshot deletes its content (policy `Delete`: and the copy) or keeps it
//!   (`Retain`), then releases the finalizers;
//! - a PVC whose `dataSource` (or `dataSourceRef`) is a ready VolumeSnapshot is provisioned
//!   with a copy of the snapshot: its PersistentVolume `pvc-<claim uid>` is created here,
//!   holding the data, and kube-sim's volume binder binds the claim to it. Until the
//!   snapshot is ready the claim stays Pending.

use super::util::{self, meta, terminating};
use crate::cluster::{now, Cluster, WriteOptions};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;

const GROUP: &str = "snapshot.storage.k8s.io";
const USER: &str = "system:serviceaccount:kube-system:snapshot-controller";
const SNAP_BOUND: &str = "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection";
const CONTENT_BOUND: &str = "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection";

fn opts() -> WriteOptions {
    util::as_component(USER, "snapshot-controller")
}

/// Runs the snapshot controller until `stop`.
pub async fn run(c: Cluster, mut stop: watch::Receiver<bool>) {
    loop {
        if util::target(&c, GROUP, "v1", "volumesnapshots", Some("default")).is_some() {
            let c2 = c.clone();
            let _ = tokio::task::spawn_blocking(move || sync(&c2)).await;
        }
        tokio::select! {
            _ = c.changed() => tokio::time::sleep(Duration::from_millis(50)).await,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => return,
        }
    }
}

fn snap_dir(c: &Cluster, content: &str) -> PathBuf {
    c.options().data_dir.join("snapshots").join(content)
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .output()
        .map_err(|e| format!("cp: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn dir_size(p: &Path) -> u64 {
    let Ok(md) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if md.is_dir() {
        std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| dir_size(&e.path())).sum())
            .unwrap_or(0)
    } else {
        md.len()
    }
}

fn add_finalizer(o: &mut Value, f: &str) -> bool {
    let mut a = o
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if a.iter().any(|x| x.as_str() == Some(f)) {
        return false;
    }
    a.push(json!(f));
    o["metadata"]["finalizers"] = json!(a);
    true
}

fn drop_finalizer(o: &mut Value, f: &str) -> bool {
    let Some(a) = o
        .pointer_mut("/metadata/finalizers")
        .and_then(Value::as_array_mut)
    else {
        return false;
    };
    let n = a.len();
    a.retain(|x| x.as_str() != Some(f));
    a.len() != n
}

#[allow(clippy::too_many_lines)]
fn sync(c: &Cluster) {
    let Some(ct) = util::target(c, GROUP, "v1", "volumesnapshotcontents", None) else {
        return;
    };
    for snap in util::list_all(c, GROUP, "v1", "volumesnapshots") {
        let ns = meta(&snap, "namespace");
        let name = meta(&snap, "name");
        let uid = meta(&snap, "uid");
        let Some(st) = util::target(c, GROUP, "v1", "volumesnapshots", Some(&ns)) else {
            continue;
        };
        let content_name = format!("snapcontent-{uid}");
        if terminating(&snap) {
            let bound = snap
                .pointer("/status/boundVolumeSnapshotContentName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if !bound.is_empty() {
                if let Ok(content) = c.get(&ct, &bound) {
                    if content
                        .pointer("/spec/deletionPolicy")
                        .and_then(Value::as_str)
                        == Some("Delete")
                    {
                        let _ = std::fs::remove_dir_all(snap_dir(c, &bound));
                        let _ = util::update_main(c, &ct, &bound, "", &opts(), |o| {
                            drop_finalizer(o, CONTENT_BOUND)
                        });
                        let _ = util::delete(c, &ct, &bound, USER, None, None);
                    } else {
                        let _ = util::update_main(c, &ct, &bound, "", &opts(), |o| {
                            drop_finalizer(o, CONTENT_BOUND)
                        });
                    }
                }
            }
            let _ = util::update_main(c, &st, &name, &uid, &opts(), |o| {
                drop_finalizer(o, SNAP_BOUND)
            });
            continue;
        }
        if snap.pointer("/status/readyToUse").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        let Some(claim) = snap
            .pointer("/spec/source/persistentVolumeClaimName")
            .and_then(Value::as_str)
        else {
            continue;
        };
        let Some(pvct) = util::target(c, "", "v1", "persistentvolumeclaims", Some(&ns)) else {
            continue;
        };
        let Ok(pvc) = c.get(&pvct, claim) else {
            continue;
        };
        let pv_name = pvc
            .pointer("/spec/volumeName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if pvc.pointer("/status/phase").and_then(Value::as_str) != Some("Bound")
            || pv_name.is_empty()
        {
            continue;
        }
        let Some(pvt) = util::target(c, "", "v1", "persistentvolumes", None) else {
            continue;
        };
        let Ok(pv) = c.get(&pvt, &pv_name) else {
            continue;
        };
        let Some(src) = pv
            .pointer("/spec/hostPath/path")
            .or_else(|| pv.pointer("/spec/local/path"))
            .and_then(Value::as_str)
            .map(PathBuf::from)
        else {
            continue;
        };
        let _ = util::update_main(c, &st, &name, &uid, &opts(), |o| {
            add_finalizer(o, SNAP_BOUND)
        });
        let class_name = snap
            .pointer("/spec/volumeSnapshotClassName")
            .and_then(Value::as_str)
            .map(str::to_string);
        let class = class_name.as_ref().and_then(|n| {
            util::target(c, GROUP, "v1", "volumesnapshotclasses", None)
                .and_then(|t| c.get(&t, n).ok())
        });
        let driver = class
            .as_ref()
            .and_then(|k| k.get("driver").and_then(Value::as_str).map(str::to_string))
            .or_else(|| {
                pv.pointer("/metadata/annotations/pv.kubernetes.io~1provisioned-by")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "kube-sim.io/host-path".into());
        let policy = class
            .as_ref()
            .and_then(|k| k.get("deletionPolicy").and_then(Value::as_str))
            .unwrap_or("Delete")
            .to_string();
        let dest = snap_dir(c, &content_name);
        if c.get(&ct, &content_name).is_err() {
            if let Err(e) = copy_dir(&src, &dest) {
                let msg = format!("Failed to create snapshot: {e}");
                let _ = util::update_status(c, &st, &name, &uid, &opts(), |o| {
                    o["status"] =
                        json!({"readyToUse": false, "error": {"message": msg, "time": now()}});
                    true
                });
                continue;
            }
            let mut spec = json!({
                "volumeSnapshotRef": {"kind": "VolumeSnapshot", "apiVersion": format!("{GROUP}/v1"), "name": name, "namespace": ns, "uid": uid},
                "source": {"volumeHandle": pv_name},
                "driver": driver, "deletionPolicy": policy,
            });
            if let Some(cn) = &class_name {
                spec["volumeSnapshotClassName"] = json!(cn);
            }
            let content = json!({"apiVersion": format!("{GROUP}/v1"), "kind": "VolumeSnapshotContent",
                "metadata": {"name": content_name, "finalizers": [CONTENT_BOUND]}, "spec": spec});
            if let Err(e) = c.create(&ct, content, &opts()) {
                if e.code != 409 {
                    continue;
                }
            }
        }
        let created_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
        let size = dir_size(&dest);
        let restore_size = pvc
            .pointer("/status/capacity/storage")
            .cloned()
            .unwrap_or(json!(size.to_string()));
        let restore_bytes = restore_size
            .as_str()
            .and_then(super::env::quantity)
            .map_or(size, |q| q as u64);
        let _ = util::update_status(c, &ct, &content_name, "", &opts(), |o| {
            if o.pointer("/status/readyToUse").and_then(Value::as_bool) == Some(true) {
                return false;
            }
            o["status"] = json!({"snapshotHandle": dest.to_string_lossy(), "creationTime": created_ns, "restoreSize": restore_bytes, "readyToUse": true});
            true
        });
        let created = util::format_time(created_ns / 1_000_000_000);
        let _ = util::update_status(c, &st, &name, &uid, &opts(), |o| {
            o["status"] = json!({"boundVolumeSnapshotContentName": content_name, "creationTime": created, "readyToUse": true, "restoreSize": restore_size});
            true
        });
        let mut s = snap.clone();
        s["kind"] = json!("VolumeSnapshot");
        s["apiVersion"] = json!(format!("{GROUP}/v1"));
        util::event(
            c,
            &s,
            None,
            false,
            "SnapshotCreated",
            &format!("Snapshot {ns}/{name} was successfully created by the CSI driver."),
            "snapshot-controller",
        );
        util::event(
            c,
            &s,
            None,
            false,
            "SnapshotReady",
            &format!("Snapshot {ns}/{name} is ready to use."),
            "snapshot-controller",
        );
    }
    restore_claims(c);
}

/// Provisions claims whose data source is a ready VolumeSnapshot.
fn restore_claims(c: &Cluster) {
    let Some(pvt) = util::target(c, "", "v1", "persistentvolumes", None) else {
        return;
    };
    for pvc in util::list_all(c, "", "v1", "persistentvolumeclaims") {
        if terminating(&pvc)
            || pvc.pointer("/status/phase").and_then(Value::as_str) == Some("Bound")
        {
            continue;
        }
        let ds = pvc
            .pointer("/spec/dataSourceRef")
            .or_else(|| pvc.pointer("/spec/dataSource"))
            .cloned()
            .unwrap_or(Value::Null);
        if ds.get("kind").and_then(Value::as_str) != Some("VolumeSnapshot") {
            continue;
        }
        let ns = ds
            .get("namespace")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| meta(&pvc, "namespace"));
        let snap_name = ds.get("name").and_then(Value::as_str).unwrap_or("");
        let Some(st) = util::target(c, GROUP, "v1", "volumesnapshots", Some(&ns)) else {
            continue;
        };
        let Ok(snap) = c.get(&st, snap_name) else {
            continue;
        };
        if snap.pointer("/status/readyToUse").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let content = snap
            .pointer("/status/boundVolumeSnapshotContentName")
            .and_then(Value::as_str)
            .unwrap_or("");
        let uid = meta(&pvc, "uid");
        let pv_name = format!("pvc-{uid}");
        if c.get(&pvt, &pv_name).is_ok() {
            continue;
        }
        let dir = c.options().data_dir.join("volumes").join(&pv_name);
        if copy_dir(&snap_dir(c, content), &dir).is_err() {
            continue;
        }
        let sc_name = pvc
            .pointer("/spec/storageClassName")
            .and_then(Value::as_str)
            .unwrap_or("standard")
            .to_string();
        let sc = util::target(c, "storage.k8s.io", "v1", "storageclasses", None)
            .and_then(|t| c.get(&t, &sc_name).ok());
        let provisioner = sc
            .as_ref()
            .and_then(|s| s.get("provisioner").and_then(Value::as_str))
            .unwrap_or("kube-sim.io/host-path")
            .to_string();
        let reclaim = sc
            .as_ref()
            .and_then(|s| s.get("reclaimPolicy").cloned())
            .unwrap_or(json!("Delete"));
        let request = pvc
            .pointer("/spec/resources/requests/storage")
            .cloned()
            .unwrap_or(json!("1Gi"));
        let pv = json!({"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": pv_name, "annotations": {"pv.kubernetes.io/provisioned-by": provisioner}},
            "spec": {"capacity": {"storage": request}, "accessModes": pvc.pointer("/spec/accessModes").cloned().unwrap_or(json!(["ReadWriteOnce"])),
                "persistentVolumeReclaimPolicy": reclaim, "storageClassName": sc_name,
                "volumeMode": pvc.pointer("/spec/volumeMode").cloned().unwrap_or(json!("Filesystem")),
                "hostPath": {"path": dir.to_string_lossy(), "type": "DirectoryOrCreate"},
                "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": meta(&pvc, "namespace"), "name": meta(&pvc, "name"), "uid": uid}}});
        let _ = c.create(&pvt, pv, &opts());
    }
}
