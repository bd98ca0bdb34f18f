//! The control-plane loops a cluster runs besides the API server, acting through the
//! in-process API as the system user:
//! - namespace lifecycle: every active namespace gets the `default` ServiceAccount and the
//!   `kube-root-ca.crt` ConfigMap; a terminating namespace has its contents deleted, then
//!   its `kubernetes` finalizer removed, then it goes;
//! - the garbage collector: dependents whose owners (by uid, in the dependent's namespace
//!   or cluster-scoped) are all gone are deleted; dangling references next to live owners
//!   are removed; `orphan` owners release their dependents; `foregroundDeletion` owners
//!   delete all theirs (also ones created while they wait; a dependent another owner
//!   still holds loses the reference instead) and go once no dependent with
//!   `blockOwnerDeletion` remains, and only then does a dependent made later survive;
//! - CRD cleanup: a terminating CRD's objects are deleted, then its finalizer removed;
//! - volumes: PVCs are bound (a PV is provisioned for Immediate storage classes, or for
//!   WaitForFirstConsumer ones once a pod uses the claim; claims restored from a
//!   VolumeSnapshot wait for the volume the runner provisions with the data), `pvc-protection` and
//!   `pv-protection` are lifted when nothing uses the volume, released PVs are deleted or
//!   kept per their reclaim policy;
//! - legacy ServiceAccount token Secrets get their token.

use crate::auth::UserInfo;
use crate::cluster::{now, Cluster, DeleteOptions, Propagation, Target, WriteOptions};
use crate::store::GroupResource;
use base64::Engine;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

fn gr(g: &str, r: &str) -> GroupResource {
    (g.to_string(), r.to_string())
}

fn meta(o: &Value, f: &str) -> String {
    o.pointer(&format!("/metadata/{f}"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn terminating(o: &Value) -> bool {
    o.pointer("/metadata/deletionTimestamp")
        .is_some_and(|d| !d.is_null())
}

fn finalizers(o: &Value) -> Vec<String> {
    o.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn sys() -> WriteOptions {
    WriteOptions {
        field_manager: Some("kube-controller-manager".into()),
        ..WriteOptions::as_user(UserInfo::system("system:kube-controller-manager"))
    }
}

/// Runs every loop until `stop` resolves.
pub async fn run(cluster: Cluster, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        reconcile_all(&cluster);
        tokio::select! {
            _ = cluster.changed() => {
                // Let a burst of writes land before the next pass.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// One pass of every loop (also used by tests that want a synchronous step).
pub fn reconcile_all(c: &Cluster) {
    namespaces(c);
    crd_cleanup(c);
    garbage_collect(c);
    volumes(c);
    token_secrets(c);
}

fn target_for(c: &Cluster, storage: &GroupResource, ns: &str) -> Option<Target> {
    let rt = c.lock().registry.by_storage(storage)?;
    let namespace = if rt.namespaced {
        Some(ns.to_string())
    } else {
        None
    };
    Some(Target { rt, namespace })
}

fn delete(c: &Cluster, storage: &GroupResource, ns: &str, name: &str, p: Propagation) {
    if let Some(t) = target_for(c, storage, ns) {
        let o = DeleteOptions {
            user: UserInfo::system("system:kube-controller-manager"),
            propagation: Some(p),
            ..Default::default()
        };
        let _ = c.delete(&t, name, &o);
    }
}

/// Rewrites an object through the API (main resource), retrying on conflicts.
fn modify(
    c: &Cluster,
    storage: &GroupResource,
    ns: &str,
    name: &str,
    f: impl Fn(&mut Value) -> bool,
) {
    let Some(t) = target_for(c, storage, ns) else {
        return;
    };
    for _ in 0..5 {
        let Ok(mut obj) = c.get(&t, name) else { return };
        if !f(&mut obj) {
            return;
        }
        match c.update(&t, name, obj, None, &sys()) {
            Err(e) if e.code == 409 => continue,
            _ => return,
        }
    }
}

fn modify_status(c: &Cluster, storage: &GroupResource, ns: &str, name: &str, status: Value) {
    let Some(t) = target_for(c, storage, ns) else {
        return;
    };
    for _ in 0..5 {
        let Ok(mut obj) = c.get(&t, name) else { return };
        if obj.get("status") == Some(&status) {
            return;
        }
        obj["status"] = status.clone();
        match c.update(&t, name, obj, Some("status"), &sys()) {
            Err(e) if e.code == 409 => continue,
            _ => return,
        }
    }
}

fn remove_finalizer(c: &Cluster, storage: &GroupResource, ns: &str, name: &str, fin: &str) {
    modify(c, storage, ns, name, |o| {
        let fins = finalizers(o);
        if !fins.iter().any(|f| f == fin) {
            return false;
        }
        let rest: Vec<String> = fins.into_iter().filter(|f| f != fin).collect();
        o["metadata"]["finalizers"] = json!(rest);
        true
    });
}

fn namespaces(c: &Cluster) {
    let nsgr = gr("", "namespaces");
    for ns in c.stored(&nsgr) {
        let name = meta(&ns, "name");
        if !terminating(&ns) {
            let has_sa = c
                .lock()
                .store
                .get(&gr("", "serviceaccounts"), &name, "default")
                .is_some();
            if !has_sa {
                let _ = c.system_upsert("", "v1", "serviceaccounts", json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": name}}));
            }
            let has_ca = c
                .lock()
                .store
                .get(&gr("", "configmaps"), &name, "kube-root-ca.crt")
                .is_some();
            if !has_ca {
                let ca = c.options().ca_pem.clone();
                let _ = c.system_upsert("", "v1", "configmaps", json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "kube-root-ca.crt", "namespace": name,
                        "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
                    "data": {"ca.crt": ca}}));
            }
            continue;
        }
        // Terminating: delete everything in it, then finalize.
        let kinds = c.lock().store.kinds();
        let mut remaining = 0;
        for k in kinds {
            let objs: Vec<Arc<Value>> = c.lock().store.list(&k, Some(&name));
            for o in objs {
                remaining += 1;
                if !terminating(&o) {
                    delete(c, &k, &name, &meta(&o, "name"), Propagation::Background);
                }
            }
        }
        let content_left = remaining > 0;
        let spec_fins = ns
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if !content_left && spec_fins > 0 {
            if let Ok(t) = c.target("", "v1", "namespaces", None) {
                let mut obj = (*ns).clone();
                obj["spec"]["finalizers"] = json!([]);
                let _ = c.update(&t, &name, obj, Some("finalize"), &sys());
            }
        }
    }
}

fn crd_cleanup(c: &Cluster) {
    let crdgr = gr("apiextensions.k8s.io", "customresourcedefinitions");
    for crd in c.stored(&crdgr) {
        if !terminating(&crd) {
            continue;
        }
        let name = meta(&crd, "name");
        let storage = gr(
            crd.pointer("/spec/group")
                .and_then(Value::as_str)
                .unwrap_or(""),
            crd.pointer("/spec/names/plural")
                .and_then(Value::as_str)
                .unwrap_or(""),
        );
        let objs = c.stored(&storage);
        for o in &objs {
            if !terminating(o) {
                delete(
                    c,
                    &storage,
                    &meta(o, "namespace"),
                    &meta(o, "name"),
                    Propagation::Background,
                );
            }
        }
        if objs.is_empty() {
            remove_finalizer(
                c,
                &crdgr,
                "",
                &name,
                "customresourcecleanup.apiextensions.k8s.io",
            );
        }
    }
}

struct OwnerInfo {
    namespace: String,
    terminating: bool,
    finalizers: Vec<String>,
}

fn garbage_collect(c: &Cluster) {
    let kinds = c.lock().store.kinds();
    let mut owners: HashMap<String, OwnerInfo> = HashMap::new();
    let mut all: Vec<(GroupResource, Arc<Value>)> = Vec::new();
    for k in &kinds {
        for o in c.stored(k) {
            owners.insert(
                meta(&o, "uid"),
                OwnerInfo {
                    namespace: meta(&o, "namespace"),
                    terminating: terminating(&o),
                    finalizers: finalizers(&o),
                },
            );
            all.push((k.clone(), o));
        }
    }
    // uid -> dependents still referring to it (blocking or not)
    let mut dependents: HashMap<String, (usize, usize)> = HashMap::new();
    // uids some object names as its owner.
    let owned: std::collections::HashSet<&str> = all
        .iter()
        .flat_map(|(_, o)| {
            o.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|r| r.get("uid").and_then(Value::as_str))
        })
        .collect();
    for (k, o) in &all {
        let refs = o
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if refs.is_empty() {
            continue;
        }
        let ns = meta(o, "namespace");
        let name = meta(o, "name");
        let live = |r: &Value| -> Option<&OwnerInfo> {
            let uid = r.get("uid").and_then(Value::as_str).unwrap_or("");
            owners
                .get(uid)
                .filter(|info| info.namespace.is_empty() || info.namespace == ns)
        };
        let mut keep = Vec::new();
        let mut dangling = false;
        let mut delete_now = false;
        // Owners that are not deleting their dependents in the foreground.
        let mut solid = false;
        // References to owners that are (dropped when a solid owner remains).
        let mut waiting = Vec::new();
        for r in &refs {
            let uid = r
                .get("uid")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            match live(r) {
                None => dangling = true,
                Some(info) => {
                    if info.terminating && info.finalizers.iter().any(|f| f == "orphan") {
                        // Released by an orphaning owner.
                        dangling = true;
                        continue;
                    }
                    if info.terminating && info.finalizers.iter().any(|f| f == "foregroundDeletion")
                    {
                        delete_now = true;
                        waiting.push(uid.clone());
                    } else {
                        solid = true;
                    }
                    let e = dependents.entry(uid).or_insert((0, 0));
                    e.0 += 1;
                    if r.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true) {
                        e.1 += 1;
                    }
                    keep.push(r.clone());
                }
            }
        }
        if terminating(o) {
            continue;
        }
        if keep.is_empty() {
            // Orphaned by all owners: released (keep) vs owners gone (delete).
            let released = refs.iter().all(|r| {
                live(r).is_some_and(|info| {
                    info.terminating && info.finalizers.iter().any(|f| f == "orphan")
                })
            });
            if released {
                modify(c, k, &ns, &name, |obj| {
                    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.remove("ownerReferences");
                    }
                    true
                });
            } else {
                delete(c, k, &ns, &name, Propagation::Background);
            }
        } else if delete_now && !solid {
            // As the real collector: an object with dependents of its own is deleted in
            // the foreground too, a leaf in the background.
            let uid = meta(o, "uid");
            let policy = if owned.contains(uid.as_str()) {
                Propagation::Foreground
            } else {
                Propagation::Background
            };
            delete(c, k, &ns, &name, policy);
        } else if dangling || delete_now {
            // Another owner still holds it: the references to gone owners and to owners
            // deleting in the foreground are removed instead (so those owners can go).
            let keep_uids: Vec<Value> = keep
                .iter()
                .map(|r| r["uid"].clone())
                .filter(|u| !waiting.iter().any(|w| u.as_str() == Some(w.as_str())))
                .collect();
            modify(c, k, &ns, &name, |obj| {
                let refs = obj
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let kept: Vec<Value> = refs
                    .into_iter()
                    .filter(|r| keep_uids.contains(&r["uid"]))
                    .collect();
                obj["metadata"]["ownerReferences"] = Value::Array(kept);
                true
            });
        }
    }
    // Owners waiting on their dependents.
    for (k, o) in &all {
        if !terminating(o) {
            continue;
        }
        let uid = meta(o, "uid");
        let (n, blocking) = dependents.get(&uid).copied().unwrap_or((0, 0));
        let fins = finalizers(o);
        if fins.iter().any(|f| f == "orphan") && n == 0 {
            remove_finalizer(c, k, &meta(o, "namespace"), &meta(o, "name"), "orphan");
        }
        if fins.iter().any(|f| f == "foregroundDeletion") && blocking == 0 {
            remove_finalizer(
                c,
                k,
                &meta(o, "namespace"),
                &meta(o, "name"),
                "foregroundDeletion",
            );
        }
    }
}

fn pod_uses_claim(c: &Cluster, ns: &str, claim: &str, running_only: bool) -> bool {
    c.lock()
        .store
        .list(&gr("", "pods"), Some(ns))
        .iter()
        .any(|p| {
            let phase = p
                .pointer("/status/phase")
                .and_then(Value::as_str)
                .unwrap_or("");
            if running_only && (phase == "Succeeded" || phase == "Failed") {
                return false;
            }
            p.pointer("/spec/volumes")
                .and_then(Value::as_array)
                .is_some_and(|vs| {
                    vs.iter().any(|v| {
                        v.pointer("/persistentVolumeClaim/claimName")
                            .and_then(Value::as_str)
                            == Some(claim)
                    })
                })
        })
}

fn volumes(c: &Cluster) {
    let pvcgr = gr("", "persistentvolumeclaims");
    let pvgr = gr("", "persistentvolumes");
    let scgr = gr("storage.k8s.io", "storageclasses");
    for pvc in c.stored(&pvcgr) {
        let ns = meta(&pvc, "namespace");
        let name = meta(&pvc, "name");
        if terminating(&pvc) {
            if finalizers(&pvc)
                .iter()
                .any(|f| f == "kubernetes.io/pvc-protection")
                && !pod_uses_claim(c, &ns, &name, true)
            {
                remove_finalizer(c, &pvcgr, &ns, &name, "kubernetes.io/pvc-protection");
            }
            continue;
        }
        if pvc.pointer("/status/phase").and_then(Value::as_str) == Some("Bound") {
            continue;
        }
        let uid = meta(&pvc, "uid");
        let request = pvc
            .pointer("/spec/resources/requests/storage")
            .cloned()
            .unwrap_or(json!("1Gi"));
        let modes = pvc
            .pointer("/spec/accessModes")
            .cloned()
            .unwrap_or(json!([]));
        let sc_name = pvc
            .pointer("/spec/storageClassName")
            .and_then(Value::as_str)
            .map(str::to_string);
        let mut pv_name = pvc
            .pointer("/spec/volumeName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let mut provisioner = String::new();
        if pv_name.is_empty() {
            let Some(scn) = sc_name.clone().filter(|s| !s.is_empty()) else {
                continue;
            };
            let Some(sc) = c.lock().store.get(&scgr, "", &scn) else {
                continue;
            };
            if sc.get("volumeBindingMode").and_then(Value::as_str) == Some("WaitForFirstConsumer")
                && !pod_uses_claim(c, &ns, &name, false)
            {
                continue;
            }
            provisioner = sc
                .get("provisioner")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            pv_name = format!("pvc-{uid}");
            // A claim restored from a VolumeSnapshot is provisioned by the runner's
            // snapshot controller, which creates `pvc-<uid>` holding the data: bind to
            // that volume once it exists, never to an empty one.
            let from_snapshot = pvc
                .pointer("/spec/dataSourceRef/kind")
                .or_else(|| pvc.pointer("/spec/dataSource/kind"))
                .and_then(Value::as_str)
                == Some("VolumeSnapshot");
            if from_snapshot && c.lock().store.get(&pvgr, "", &pv_name).is_none() {
                continue;
            }
            let dir = c.options().data_dir.join("volumes").join(&pv_name);
            let pv = json!({"apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": pv_name, "annotations": {"pv.kubernetes.io/provisioned-by": provisioner}},
                "spec": {"capacity": {"storage": request}, "accessModes": modes,
                    "persistentVolumeReclaimPolicy": sc.get("reclaimPolicy").cloned().unwrap_or(json!("Delete")),
                    "storageClassName": scn, "volumeMode": pvc.pointer("/spec/volumeMode").cloned().unwrap_or(json!("Filesystem")),
                    "hostPath": {"path": dir.to_string_lossy(), "type": "DirectoryOrCreate"},
                    "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": ns, "name": name, "uid": uid}}});
            if c.lock().store.get(&pvgr, "", &pv_name).is_none()
                && c.system_upsert("", "v1", "persistentvolumes", pv).is_err()
            {
                continue;
            }
        } else {
            // Static binding to a named volume.
            let Some(pv) = c.lock().store.get(&pvgr, "", &pv_name) else {
                continue;
            };
            let claimed = pv
                .pointer("/spec/claimRef/uid")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !claimed.is_empty() && claimed != uid {
                continue;
            }
            modify(c, &pvgr, "", &pv_name, |o| {
                if o.pointer("/spec/claimRef/uid").and_then(Value::as_str) == Some(uid.as_str()) {
                    return false;
                }
                o["spec"]["claimRef"] = json!({"kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": ns, "name": name, "uid": uid});
                true
            });
        }
        let Some(pv) = c.lock().store.get(&pvgr, "", &pv_name) else {
            continue;
        };
        modify_status(
            c,
            &pvgr,
            "",
            &pv_name,
            json!({"phase": "Bound", "lastPhaseTransitionTime": now()}),
        );
        let pvn = pv_name.clone();
        let prov = provisioner.clone();
        modify(c, &pvcgr, &ns, &name, |o| {
            let mut changed = false;
            if o.pointer("/spec/volumeName").and_then(Value::as_str) != Some(pvn.as_str()) {
                o["spec"]["volumeName"] = json!(pvn);
                changed = true;
            }
            if o.pointer("/metadata/annotations/pv.kubernetes.io~1bind-completed")
                .is_none()
            {
                if !o["metadata"]
                    .get("annotations")
                    .is_some_and(Value::is_object)
                {
                    o["metadata"]["annotations"] = json!({});
                }
                let a = &mut o["metadata"]["annotations"];
                a["pv.kubernetes.io/bind-completed"] = json!("yes");
                a["pv.kubernetes.io/bound-by-controller"] = json!("yes");
                if !prov.is_empty() {
                    a["volume.beta.kubernetes.io/storage-provisioner"] = json!(prov);
                    a["volume.kubernetes.io/storage-provisioner"] = json!(prov);
                }
                changed = true;
            }
            changed
        });
        let capacity = pv
            .pointer("/spec/capacity")
            .cloned()
            .unwrap_or(json!({"storage": request}));
        modify_status(
            c,
            &pvcgr,
            &ns,
            &name,
            json!({"phase": "Bound", "accessModes": pv.pointer("/spec/accessModes").cloned().unwrap_or(modes), "capacity": capacity}),
        );
    }
    // Volumes whose claims are gone.
    for pv in c.stored(&pvgr) {
        let name = meta(&pv, "name");
        let claim_uid = pv
            .pointer("/spec/claimRef/uid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let claim_ns = pv
            .pointer("/spec/claimRef/namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let claim_name = pv
            .pointer("/spec/claimRef/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let claim_alive = !claim_uid.is_empty()
            && c.lock()
                .store
                .get(&pvcgr, &claim_ns, &claim_name)
                .is_some_and(|p| meta(&p, "uid") == claim_uid);
        if terminating(&pv) {
            if !claim_alive {
                remove_finalizer(c, &pvgr, "", &name, "kubernetes.io/pv-protection");
            }
            continue;
        }
        let phase = pv
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        if claim_uid.is_empty() {
            if phase != "Available" {
                modify_status(
                    c,
                    &pvgr,
                    "",
                    &name,
                    json!({"phase": "Available", "lastPhaseTransitionTime": now()}),
                );
            }
            continue;
        }
        if !claim_alive && phase == "Bound" {
            let policy = pv
                .pointer("/spec/persistentVolumeReclaimPolicy")
                .and_then(Value::as_str)
                .unwrap_or("Retain");
            if policy == "Delete" {
                if let Some(path) = pv.pointer("/spec/hostPath/path").and_then(Value::as_str) {
                    let p = std::path::Path::new(path);
                    if p.starts_with(c.options().data_dir.join("volumes")) {
                        let _ = std::fs::remove_dir_all(p);
                    }
                }
                delete(c, &pvgr, "", &name, Propagation::Background);
            } else {
                modify_status(
                    c,
                    &pvgr,
                    "",
                    &name,
                    json!({"phase": "Released", "lastPhaseTransitionTime": now()}),
                );
            }
        }
    }
}

fn token_secrets(c: &Cluster) {
    let sgr = gr("", "secrets");
    for s in c.stored(&sgr) {
        if s.get("type").and_then(Value::as_str) != Some("kubernetes.io/service-account-token")
            || terminating(&s)
        {
            continue;
        }
        if s.pointer("/data/token").is_some() {
            continue;
        }
        let ns = meta(&s, "namespace");
        let sa = s
            .pointer("/metadata/annotations/kubernetes.io~1service-account.name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let Some(sa_obj) = c.lock().store.get(&gr("", "serviceaccounts"), &ns, &sa) else {
            continue;
        };
        let sa_uid = meta(&sa_obj, "uid");
        let token = crate::issue_token_string();
        c.add_token(&token, UserInfo::service_account(&ns, &sa, &sa_uid));
        let b64 = |x: &str| base64::engine::general_purpose::STANDARD.encode(x.as_bytes());
        let ca = c.options().ca_pem.clone();
        modify(c, &sgr, &ns, &meta(&s, "name"), |o| {
            if o.pointer("/data/token").is_some() {
                return false;
            }
            if !o.get("data").is_some_and(Value::is_object) {
                o["data"] = json!({});
            }
            o["data"]["token"] = json!(b64(&token));
            o["data"]["ca.crt"] = json!(b64(&ca));
            o["data"]["namespace"] = json!(b64(&ns));
            o["metadata"]["annotations"]["kubernetes.io/service-account.uid"] = json!(sa_uid);
            true
        });
    }
}
