//! The StatefulSet controller:
//!
//! - pods `<name>-<ordinal>` (from `spec.ordinals.start`), with the template's labels plus
//!   `statefulset.kubernetes.io/pod-name`, `apps.kubernetes.io/pod-index` and
//!   `controller-revision-hash`, `hostname`/`subdomain` set (so
//!   `<pod>.<serviceName>.<ns>.svc.cluster.local` is in every pod's `/etc/hosts`), a
//!   controller ownerReference;
//! - PVCs from `volumeClaimTemplates` named `<template>-<name>-<ordinal>`, created before
//!   the pod, kept on scale-down and pod deletion (`persistentVolumeClaimRetentionPolicy`
//!   `Delete` gives them an ownerReference to the set or the pod, as the controller does);
//! - `OrderedReady` (one pod at a time, each waiting for the previous to be Running and
//!   Ready; scale-down from the highest ordinal, one at a time) and `Parallel`;
//! - deleted, failed or succeeded pods are recreated with the same name and claims;
//! - a changed template rolls the pods (RollingUpdate, highest ordinal first; `OnDelete`
//!   leaves them);
//! - status `replicas`, `readyReplicas`, `currentReplicas`, `updatedReplicas`,
//!   `availableReplicas`, `currentRevision`, `updateRevision`, `observedGeneration`,
//!   `collisionCount`.
//!
//! No ControllerRevision objects are written (the revision is a hash of the template).

use super::util::{self, meta, terminating};
use crate::cluster::{Cluster, WriteOptions};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::sync::watch;

const USER: &str = "system:serviceaccount:kube-system:statefulset-controller";

fn opts() -> WriteOptions {
    util::as_component(USER, "kube-controller-manager")
}

/// A short hash of a template (FNV-1a, in the alphabet Kubernetes uses for such hashes).
pub fn template_hash(tmpl: &Value) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in serde_json::to_vec(tmpl).unwrap_or_default() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut s = String::new();
    let mut x = h;
    for _ in 0..10 {
        s.push(ALPHABET[(x % ALPHABET.len() as u32) as usize] as char);
        x /= ALPHABET.len() as u32;
        if x == 0 {
            break;
        }
    }
    s
}

/// Whether a pod is Running with Ready True.
pub fn running_ready(p: &Value) -> bool {
    p.pointer("/status/phase").and_then(Value::as_str) == Some("Running")
        && p.pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|a| {
                a.iter().any(|c| {
                    c.get("type").and_then(Value::as_str) == Some("Ready")
                        && c.get("status").and_then(Value::as_str) == Some("True")
                })
            })
}

/// Runs the controller until `stop`.
pub async fn run(c: Cluster, mut stop: watch::Receiver<bool>) {
    loop {
        for s in util::list_all(&c, "apps", "v1", "statefulsets") {
            sync(&c, &s);
        }
        tokio::select! {
            _ = c.changed() => tokio::time::sleep(Duration::from_millis(20)).await,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => return,
        }
    }
}

#[allow(clippy::too_many_lines)]
fn sync(c: &Cluster, set: &Value) {
    if terminating(set) {
        return;
    }
    let ns = meta(set, "namespace");
    let name = meta(set, "name");
    let uid = meta(set, "uid");
    let (Some(st), Some(pt), Some(ct)) = (
        util::target(c, "apps", "v1", "statefulsets", Some(&ns)),
        util::target(c, "", "v1", "pods", Some(&ns)),
        util::target(c, "", "v1", "persistentvolumeclaims", Some(&ns)),
    ) else {
        return;
    };
    let spec = set.get("spec").cloned().unwrap_or(json!({}));
    let replicas = spec
        .get("replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .max(0);
    let start = spec
        .pointer("/ordinals/start")
        .and_then(Value::as_i64)
        .unwrap_or(0)
        .max(0);
    let parallel = spec.get("podManagementPolicy").and_then(Value::as_str) == Some("Parallel");
    let on_delete =
        spec.pointer("/updateStrategy/type").and_then(Value::as_str) == Some("OnDelete");
    let tmpl = spec.get("template").cloned().unwrap_or(json!({}));
    let revision = format!("{name}-{}", template_hash(&tmpl));
    let mut set_obj = set.clone();
    set_obj["kind"] = json!("StatefulSet");
    set_obj["apiVersion"] = json!("apps/v1");
    let ev = |warn: bool, reason: &str, msg: &str| {
        util::event(
            c,
            &set_obj,
            None,
            warn,
            reason,
            msg,
            "statefulset-controller",
        )
    };
    let pods: Vec<Value> = util::list_all(c, "", "v1", "pods")
        .into_iter()
        .filter(|p| meta(p, "namespace") == ns && util::owned_by(p, &uid))
        .collect();
    let ordinal_of = |p: &Value| -> Option<i64> {
        meta(p, "name")
            .strip_prefix(&format!("{name}-"))
            .and_then(|s| s.parse().ok())
    };
    let want: Vec<i64> = (start..start + replicas).collect();
    let pod_at = |i: i64| pods.iter().find(|p| ordinal_of(p) == Some(i));
    let retention = |f: &str| {
        spec.pointer(&format!("/persistentVolumeClaimRetentionPolicy/{f}"))
            .and_then(Value::as_str)
            .unwrap_or("Retain")
            .to_string()
    };
    let mut blocked = false;
    for &i in &want {
        let pod_name = format!("{name}-{i}");
        match pod_at(i) {
            Some(p) if terminating(p) => {
                if !parallel {
                    blocked = true;
                }
            }
            Some(p) => {
                let phase = p
                    .pointer("/status/phase")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if phase == "Failed" || phase == "Succeeded" {
                    if util::delete(c, &pt, &pod_name, USER, None, None).is_ok() {
                        ev(
                            false,
                            "SuccessfulDelete",
                            &format!("delete Pod {pod_name} in StatefulSet {name} successful"),
                        );
                    }
                    blocked = !parallel;
                    continue;
                }
                if !parallel && !running_ready(p) {
                    blocked = true;
                }
            }
            None => {
                if blocked {
                    continue;
                }
                // Claims first.
                for vct in spec
                    .get("volumeClaimTemplates")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let tname = vct
                        .pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let claim = format!("{tname}-{pod_name}");
                    if c.get(&ct, &claim).is_ok() {
                        continue;
                    }
                    let mut md = vct.get("metadata").cloned().unwrap_or(json!({}));
                    md["name"] = json!(claim);
                    md["namespace"] = json!(ns);
                    if let Some(m) = md.as_object_mut() {
                        m.remove("creationTimestamp");
                    }
                    let mut labels = md.get("labels").cloned().unwrap_or(json!({}));
                    for (k, v) in spec
                        .pointer("/selector/matchLabels")
                        .and_then(Value::as_object)
                        .into_iter()
                        .flatten()
                    {
                        labels[k] = v.clone();
                    }
                    md["labels"] = labels;
                    if retention("whenDeleted") == "Delete" {
                        let mut r = util::controller_ref(&set_obj);
                        r["controller"] = json!(true);
                        md["ownerReferences"] = json!([r]);
                    }
                    let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": md, "spec": vct.get("spec").cloned().unwrap_or(json!({}))});
                    match c.create(&ct, pvc, &opts()) {
                        Ok(_) => ev(false, "SuccessfulCreate", &format!("create Claim {claim} Pod {pod_name} in StatefulSet {name} success")),
                        Err(e) => ev(true, "FailedCreate", &format!("create Claim {claim} for Pod {pod_name} in StatefulSet {name} failed error: {}", e.message)),
                    }
                }
                let mut md = tmpl.get("metadata").cloned().unwrap_or(json!({}));
                md["name"] = json!(pod_name);
                md["namespace"] = json!(ns);
                if let Some(m) = md.as_object_mut() {
                    m.remove("creationTimestamp");
                    m.remove("generateName");
                }
                let mut labels = md.get("labels").cloned().unwrap_or(json!({}));
                labels["statefulset.kubernetes.io/pod-name"] = json!(pod_name);
                labels["apps.kubernetes.io/pod-index"] = json!(i.to_string());
                labels["controller-revision-hash"] = json!(revision);
                md["labels"] = labels;
                md["ownerReferences"] = json!([util::controller_ref(&set_obj)]);
                let mut pspec = tmpl.get("spec").cloned().unwrap_or(json!({}));
                pspec["hostname"] = json!(pod_name);
                if let Some(svc) = spec
                    .get("serviceName")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                {
                    pspec["subdomain"] = json!(svc);
                }
                let mut vols: Vec<Value> = pspec
                    .get("volumes")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for vct in spec
                    .get("volumeClaimTemplates")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let tname = vct
                        .pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    vols.retain(|v| v.get("name").and_then(Value::as_str) != Some(tname.as_str()));
                    vols.push(json!({"name": tname, "persistentVolumeClaim": {"claimName": format!("{tname}-{pod_name}")}}));
                }
                if !vols.is_empty() {
                    pspec["volumes"] = json!(vols);
                }
                let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": pspec});
                match c.create(&pt, pod, &opts()) {
                    Ok(_) => ev(
                        false,
                        "SuccessfulCreate",
                        &format!("create Pod {pod_name} in StatefulSet {name} successful"),
                    ),
                    Err(e) if e.code == 409 => {}
                    Err(e) => ev(
                        true,
                        "FailedCreate",
                        &format!(
                            "create Pod {pod_name} in StatefulSet {name} failed error: {}",
                            e.message
                        ),
                    ),
                }
                if !parallel {
                    blocked = true;
                }
            }
        }
    }
    // Scale down: pods outside the wanted ordinals, highest first.
    let mut extra: Vec<&Value> = pods
        .iter()
        .filter(|p| ordinal_of(p).is_none_or(|i| !want.contains(&i)))
        .collect();
    extra.sort_by_key(|p| std::cmp::Reverse(ordinal_of(p).unwrap_or(i64::MAX)));
    for p in extra {
        if terminating(p) {
            if !parallel {
                break;
            }
            continue;
        }
        let pn = meta(p, "name");
        if util::delete(c, &pt, &pn, USER, None, None).is_ok() {
            ev(
                false,
                "SuccessfulDelete",
                &format!("delete Pod {pn} in StatefulSet {name} successful"),
            );
        }
        if !parallel {
            break;
        }
    }
    // Rolling update: one outdated pod at a time, highest ordinal first, when all are ready.
    let all_ready = want
        .iter()
        .all(|&i| pod_at(i).is_some_and(|p| running_ready(p) && !terminating(p)));
    if !on_delete && all_ready {
        let outdated = want.iter().rev().filter_map(|&i| pod_at(i)).find(|p| {
            p.pointer("/metadata/labels/controller-revision-hash")
                .and_then(Value::as_str)
                != Some(revision.as_str())
        });
        if let Some(p) = outdated {
            let _ = util::delete(c, &pt, &meta(p, "name"), USER, None, None);
        }
    }
    let live: Vec<&Value> = pods.iter().filter(|p| !terminating(p)).collect();
    let ready = live.iter().filter(|p| running_ready(p)).count();
    let updated = live
        .iter()
        .filter(|p| {
            p.pointer("/metadata/labels/controller-revision-hash")
                .and_then(Value::as_str)
                == Some(revision.as_str())
        })
        .count();
    let status = json!({
        "observedGeneration": set.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
        "replicas": live.len(), "readyReplicas": ready, "currentReplicas": updated, "updatedReplicas": updated,
        "availableReplicas": ready, "currentRevision": revision, "updateRevision": revision, "collisionCount": 0,
    });
    let mut status = status;
    for k in ["readyReplicas", "currentReplicas", "updatedReplicas"] {
        if status.get(k).and_then(Value::as_u64) == Some(0) {
            if let Some(m) = status.as_object_mut() {
                m.remove(k);
            }
        }
    }
    if set.get("status") != Some(&status) {
        let _ = util::update_status(c, &st, &name, &uid, &opts(), move |o| {
            if o.get("status") == Some(&status) {
                return false;
            }
            o["status"] = status.clone();
            true
        });
    }
}
