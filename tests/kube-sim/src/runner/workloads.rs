//! The Deployment and ReplicaSet controllers, enough to run a Deployment (such as the
//! controller's own in deploy/) the way a cluster does:
//!
//! - a Deployment owns one ReplicaSet per template, `<deployment>-<pod-template-hash>`,
//!   with the `pod-template-hash` label on the set, its selector and its pods; a changed
//!   template gets a new set scaled to `replicas`, and the old sets go to 0 once the new
//!   one's pods are available (a surge-then-drain roll, `Recreate` drains first);
//!   `revisionHistoryLimit` old sets are kept;
//! - a ReplicaSet keeps `replicas` pods `<set>-<5 random>` (failed or succeeded pods are
//!   replaced, extras deleted newest first);
//! - status: Deployment `replicas`, `updatedReplicas`, `readyReplicas`,
//!   `availableReplicas`, `unavailableReplicas`, `observedGeneration`, conditions
//!   `Available` (MinimumReplicasAvailable/Unavailable) and `Progressing`
//!   (NewReplicaSetAvailable/ReplicaSetUpdated/NewReplicaSetCreated); ReplicaSet
//!   `replicas`, `fullyLabeledReplicas`, `readyReplicas`, `availableReplicas`,
//!   `observedGeneration`.
//!
//! `minReadySeconds`, `maxSurge`/`maxUnavailable` arithmetic, `paused` and rollbacks are
//! not modelled.

use super::statefulset::{running_ready, template_hash};
use super::util::{self, meta, terminating};
use crate::cluster::{now, Cluster, Propagation, WriteOptions};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::sync::watch;

const DEPLOY_USER: &str = "system:serviceaccount:kube-system:deployment-controller";
const RS_USER: &str = "system:serviceaccount:kube-system:replicaset-controller";

fn opts(user: &str) -> WriteOptions {
    util::as_component(user, "kube-controller-manager")
}

/// Runs both controllers until `stop`.
pub async fn run(c: Cluster, mut stop: watch::Receiver<bool>) {
    loop {
        for d in util::list_all(&c, "apps", "v1", "deployments") {
            deployment(&c, &d);
        }
        for rs in util::list_all(&c, "apps", "v1", "replicasets") {
            replicaset(&c, &rs);
        }
        tokio::select! {
            _ = c.changed() => tokio::time::sleep(Duration::from_millis(20)).await,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => return,
        }
    }
}

fn set_replicas(c: &Cluster, rs: &Value, n: i64) {
    if rs.pointer("/spec/replicas").and_then(Value::as_i64) == Some(n) {
        return;
    }
    let ns = meta(rs, "namespace");
    let Some(t) = util::target(c, "apps", "v1", "replicasets", Some(&ns)) else {
        return;
    };
    let _ = util::update_main(
        c,
        &t,
        &meta(rs, "name"),
        &meta(rs, "uid"),
        &opts(DEPLOY_USER),
        |o| {
            if o.pointer("/spec/replicas").and_then(Value::as_i64) == Some(n) {
                return false;
            }
            o["spec"]["replicas"] = json!(n);
            true
        },
    );
}

#[allow(clippy::too_many_lines)]
fn deployment(c: &Cluster, d: &Value) {
    if terminating(d) {
        return;
    }
    let ns = meta(d, "namespace");
    let name = meta(d, "name");
    let uid = meta(d, "uid");
    let (Some(dt), Some(rt)) = (
        util::target(c, "apps", "v1", "deployments", Some(&ns)),
        util::target(c, "apps", "v1", "replicasets", Some(&ns)),
    ) else {
        return;
    };
    let spec = d.get("spec").cloned().unwrap_or(json!({}));
    let replicas = spec
        .get("replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .max(0);
    let tmpl = spec.get("template").cloned().unwrap_or(json!({}));
    let hash = template_hash(&tmpl);
    let rs_name = format!("{name}-{hash}");
    let mut d_obj = d.clone();
    d_obj["kind"] = json!("Deployment");
    d_obj["apiVersion"] = json!("apps/v1");
    let sets: Vec<Value> = util::list_all(c, "apps", "v1", "replicasets")
        .into_iter()
        .filter(|r| meta(r, "namespace") == ns && util::owned_by(r, &uid))
        .collect();
    let new_rs = sets.iter().find(|r| meta(r, "name") == rs_name).cloned();
    let recreate = spec.pointer("/strategy/type").and_then(Value::as_str) == Some("Recreate");
    let olds: Vec<&Value> = sets.iter().filter(|r| meta(r, "name") != rs_name).collect();
    let old_pods_left: i64 = olds
        .iter()
        .map(|r| {
            r.pointer("/status/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(0)
        })
        .sum();
    let mut progressing = (
        "ReplicaSetUpdated",
        format!("ReplicaSet \"{rs_name}\" is progressing."),
    );
    let new_rs = match new_rs {
        Some(r) => r,
        None => {
            if recreate && old_pods_left > 0 {
                for r in &olds {
                    set_replicas(c, r, 0);
                }
                return;
            }
            let mut md = tmpl.get("metadata").cloned().unwrap_or(json!({}));
            let mut labels = md.get("labels").cloned().unwrap_or(json!({}));
            labels["pod-template-hash"] = json!(hash);
            md["labels"] = labels.clone();
            let mut sel = spec.get("selector").cloned().unwrap_or(json!({}));
            sel["matchLabels"]["pod-template-hash"] = json!(hash);
            let mut ptmpl = tmpl.clone();
            ptmpl["metadata"] = md;
            let rev = sets.len() + 1;
            let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": rs_name, "namespace": ns, "labels": labels,
                    "annotations": {"deployment.kubernetes.io/revision": rev.to_string(), "deployment.kubernetes.io/desired-replicas": replicas.to_string(), "deployment.kubernetes.io/max-replicas": replicas.to_string()},
                    "ownerReferences": [util::controller_ref(&d_obj)]},
                "spec": {"replicas": replicas, "selector": sel, "template": ptmpl, "minReadySeconds": spec.get("minReadySeconds").cloned().unwrap_or(json!(0))}});
            match c.create(&rt, rs, &opts(DEPLOY_USER)) {
                Ok(out) => {
                    util::event(
                        c,
                        &d_obj,
                        None,
                        false,
                        "ScalingReplicaSet",
                        &format!("Scaled up replica set {rs_name} from 0 to {replicas}"),
                        "deployment-controller",
                    );
                    progressing = (
                        "NewReplicaSetCreated",
                        format!("Created new replica set \"{rs_name}\""),
                    );
                    out.object
                }
                Err(_) => return,
            }
        }
    };
    set_replicas(c, &new_rs, replicas);
    let available = new_rs
        .pointer("/status/availableReplicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if available >= replicas {
        for r in &olds {
            if r.pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                > 0
            {
                util::event(
                    c,
                    &d_obj,
                    None,
                    false,
                    "ScalingReplicaSet",
                    &format!(
                        "Scaled down replica set {} from {} to 0",
                        meta(r, "name"),
                        r.pointer("/spec/replicas")
                            .and_then(Value::as_i64)
                            .unwrap_or(0)
                    ),
                    "deployment-controller",
                );
            }
            set_replicas(c, r, 0);
        }
        progressing = (
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
        );
        // History.
        let limit = spec
            .get("revisionHistoryLimit")
            .and_then(Value::as_i64)
            .unwrap_or(10)
            .max(0) as usize;
        let mut empty: Vec<&&Value> = olds
            .iter()
            .filter(|r| {
                r.pointer("/status/replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
                    == 0
            })
            .collect();
        if empty.len() > limit {
            empty.sort_by_key(|r| meta(r, "creationTimestamp"));
            for r in empty.iter().take(empty.len() - limit) {
                let _ = util::delete(
                    c,
                    &rt,
                    &meta(r, "name"),
                    DEPLOY_USER,
                    Some(Propagation::Background),
                    None,
                );
            }
        }
    }
    let sum = |f: &str| -> i64 {
        sets.iter()
            .map(|r| {
                r.pointer(&format!("/status/{f}"))
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
            })
            .sum()
    };
    let total = sum("replicas");
    let ready = sum("readyReplicas");
    let avail = sum("availableReplicas");
    let updated = new_rs
        .pointer("/status/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let old_conds = d
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let cond = |ty: &str, ok: bool, reason: &str, msg: &str| {
        let s = if ok { "True" } else { "False" };
        let prev = old_conds
            .iter()
            .find(|c| c.get("type").and_then(Value::as_str) == Some(ty));
        let same = prev.is_some_and(|p| {
            p.get("status").and_then(Value::as_str) == Some(s)
                && p.get("reason").and_then(Value::as_str) == Some(reason)
        });
        let transition = prev
            .filter(|p| p.get("status").and_then(Value::as_str) == Some(s))
            .and_then(|p| p.get("lastTransitionTime").cloned())
            .unwrap_or(json!(now()));
        let update = if same {
            prev.and_then(|p| p.get("lastUpdateTime").cloned())
                .unwrap_or(json!(now()))
        } else {
            json!(now())
        };
        json!({"type": ty, "status": s, "lastUpdateTime": update, "lastTransitionTime": transition, "reason": reason, "message": msg})
    };
    let min_avail = avail >= replicas;
    let conds = vec![
        if min_avail {
            cond(
                "Available",
                true,
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            )
        } else {
            cond(
                "Available",
                false,
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        },
        cond("Progressing", true, progressing.0, &progressing.1),
    ];
    let mut status = json!({
        "observedGeneration": d.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
        "replicas": total, "updatedReplicas": updated, "readyReplicas": ready, "availableReplicas": avail,
        "unavailableReplicas": (total.max(replicas) - avail).max(0), "conditions": conds,
    });
    for k in [
        "replicas",
        "updatedReplicas",
        "readyReplicas",
        "availableReplicas",
        "unavailableReplicas",
    ] {
        if status.get(k).and_then(Value::as_i64) == Some(0) {
            if let Some(m) = status.as_object_mut() {
                m.remove(k);
            }
        }
    }
    if d.get("status") != Some(&status) {
        let _ = util::update_status(c, &dt, &name, &uid, &opts(DEPLOY_USER), move |o| {
            if o.get("status") == Some(&status) {
                return false;
            }
            o["status"] = status.clone();
            true
        });
    }
}

fn replicaset(c: &Cluster, rs: &Value) {
    if terminating(rs) {
        return;
    }
    let ns = meta(rs, "namespace");
    let name = meta(rs, "name");
    let uid = meta(rs, "uid");
    let (Some(rt), Some(pt)) = (
        util::target(c, "apps", "v1", "replicasets", Some(&ns)),
        util::target(c, "", "v1", "pods", Some(&ns)),
    ) else {
        return;
    };
    let replicas = rs
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .max(0);
    let mut rs_obj = rs.clone();
    rs_obj["kind"] = json!("ReplicaSet");
    rs_obj["apiVersion"] = json!("apps/v1");
    let pods: Vec<Value> = util::list_all(c, "", "v1", "pods")
        .into_iter()
        .filter(|p| meta(p, "namespace") == ns && util::owned_by(p, &uid))
        .collect();
    let mut live: Vec<&Value> = Vec::new();
    for p in &pods {
        if terminating(p) {
            continue;
        }
        match p.pointer("/status/phase").and_then(Value::as_str) {
            Some("Failed" | "Succeeded") => {
                let _ = util::delete(c, &pt, &meta(p, "name"), RS_USER, None, None);
            }
            _ => live.push(p),
        }
    }
    let n = live.len() as i64;
    if n < replicas {
        let tmpl = rs.pointer("/spec/template").cloned().unwrap_or(json!({}));
        for _ in 0..(replicas - n) {
            let mut md = tmpl.get("metadata").cloned().unwrap_or(json!({}));
            md["generateName"] = json!(format!("{name}-"));
            md["namespace"] = json!(ns);
            md["ownerReferences"] = json!([util::controller_ref(&rs_obj)]);
            let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": tmpl.get("spec").cloned().unwrap_or(json!({}))});
            match c.create(&pt, pod, &opts(RS_USER)) {
                Ok(out) => util::event(
                    c,
                    &rs_obj,
                    None,
                    false,
                    "SuccessfulCreate",
                    &format!("Created pod: {}", meta(&out.object, "name")),
                    "replicaset-controller",
                ),
                Err(e) => util::event(
                    c,
                    &rs_obj,
                    None,
                    true,
                    "FailedCreate",
                    &format!("Error creating: {}", e.message),
                    "replicaset-controller",
                ),
            }
        }
    } else if n > replicas {
        live.sort_by_key(|p| std::cmp::Reverse(meta(p, "creationTimestamp")));
        for p in live.iter().take((n - replicas) as usize) {
            if util::delete(c, &pt, &meta(p, "name"), RS_USER, None, None).is_ok() {
                util::event(
                    c,
                    &rs_obj,
                    None,
                    false,
                    "SuccessfulDelete",
                    &format!("Deleted pod: {}", meta(p, "name")),
                    "replicaset-controller",
                );
            }
        }
    }
    let ready = live.iter().filter(|p| running_ready(p)).count() as i64;
    let mut status = json!({"replicas": n, "fullyLabeledReplicas": n, "readyReplicas": ready, "availableReplicas": ready,
        "observedGeneration": rs.pointer("/metadata/generation").cloned().unwrap_or(json!(1))});
    for k in [
        "replicas",
        "fullyLabeledReplicas",
        "readyReplicas",
        "availableReplicas",
    ] {
        if status.get(k).and_then(Value::as_i64) == Some(0) && k != "replicas" {
            if let Some(m) = status.as_object_mut() {
                m.remove(k);
            }
        }
    }
    if rs.get("status") != Some(&status) {
        let _ = util::update_status(c, &rt, &name, &uid, &opts(RS_USER), move |o| {
            if o.get("status") == Some(&status) {
                return false;
            }
            o["status"] = status.clone();
            true
        });
    }
}
