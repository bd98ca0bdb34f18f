//! Defaults the real server fills into built-in objects (`pkg/apis/*/v1/defaults.go` and
//! the default admission plugins), so objects read back look as they do on a cluster.
//! Applied on every write; each default only fills what is absent, so reapplying is a no-op.

use serde_json::{json, Map, Value};

fn obj_mut<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v.get(key).is_some_and(Value::is_object) {
        v[key] = json!({});
    }
    v.get_mut(key)
        .and_then(Value::as_object_mut)
        .expect("object")
}

fn default(m: &mut Map<String, Value>, key: &str, v: Value) {
    m.entry(key.to_string()).or_insert(v);
}

/// Defaults for one built-in object of `kind` (`group` as in the URL).
pub fn apply(group: &str, kind: &str, obj: &mut Value) {
    match (group, kind) {
        ("", "Pod") => {
            let spec = obj_mut(obj, "spec");
            pod_spec(spec, true);
            let sa = spec
                .get("serviceAccountName")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_string();
            default(spec, "serviceAccountName", Value::String(sa.clone()));
            default(spec, "serviceAccount", Value::String(sa));
            default(spec, "priority", json!(0));
            default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
            default(
                spec,
                "tolerations",
                json!([
                    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
                ]),
            );
        }
        ("batch", "Job") => {
            let spec = obj_mut(obj, "spec");
            job_spec(spec);
        }
        ("batch", "CronJob") => {
            let spec = obj_mut(obj, "spec");
            default(spec, "concurrencyPolicy", json!("Allow"));
            default(spec, "suspend", json!(false));
            default(spec, "successfulJobsHistoryLimit", json!(3));
            default(spec, "failedJobsHistoryLimit", json!(1));
            if let Some(js) = spec
                .get_mut("jobTemplate")
                .and_then(|t| t.get_mut("spec"))
                .and_then(Value::as_object_mut)
            {
                job_spec(js);
            }
        }
        ("apps", "StatefulSet") => {
            let spec = obj_mut(obj, "spec");
            default(spec, "replicas", json!(1));
            default(spec, "podManagementPolicy", json!("OrderedReady"));
            default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
            );
            default(spec, "revisionHistoryLimit", json!(10));
            default(
                spec,
                "persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
            );
            if let Some(vcts) = spec
                .get_mut("volumeClaimTemplates")
                .and_then(Value::as_array_mut)
            {
                for t in vcts {
                    let s = obj_mut(t, "spec");
                    default(s, "volumeMode", json!("Filesystem"));
                    if let Some(m) = t.as_object_mut() {
                        m.entry("apiVersion").or_insert(json!("v1"));
                        m.entry("kind").or_insert(json!("PersistentVolumeClaim"));
                    }
                }
            }
            template(spec, true);
        }
        ("apps", "Deployment") => {
            let spec = obj_mut(obj, "spec");
            default(spec, "replicas", json!(1));
            default(
                spec,
                "strategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
            );
            default(spec, "revisionHistoryLimit", json!(10));
            default(spec, "progressDeadlineSeconds", json!(600));
            template(spec, true);
        }
        ("apps", "ReplicaSet") | ("apps", "DaemonSet") => {
            let spec = obj_mut(obj, "spec");
            if kind == "ReplicaSet" {
                default(spec, "replicas", json!(1));
            }
            template(spec, true);
        }
        ("", "Service") => {
            let spec = obj_mut(obj, "spec");
            default(spec, "type", json!("ClusterIP"));
            default(spec, "sessionAffinity", json!("None"));
            if spec.get("type").and_then(Value::as_str) != Some("ExternalName") {
                default(spec, "ipFamilyPolicy", json!("SingleStack"));
                default(spec, "ipFamilies", json!(["IPv4"]));
                default(spec, "internalTrafficPolicy", json!("Cluster"));
            }
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports {
                    if let Some(m) = p.as_object_mut() {
                        default(m, "protocol", json!("TCP"));
                        let port = m.get("port").cloned().unwrap_or(Value::Null);
                        default(m, "targetPort", port);
                    }
                }
            }
        }
        ("", "PersistentVolumeClaim") => {
            let spec = obj_mut(obj, "spec");
            default(spec, "volumeMode", json!("Filesystem"));
        }
        ("", "PersistentVolume") => {
            let spec = obj_mut(obj, "spec");
            default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
            default(spec, "volumeMode", json!("Filesystem"));
        }
        ("", "Secret") => {
            if let Some(m) = obj.as_object_mut() {
                default(m, "type", json!("Opaque"));
            }
        }
        ("", "Namespace") => {
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let md = obj_mut(obj, "metadata");
            let labels = md.entry("labels").or_insert_with(|| json!({}));
            if !labels.is_object() {
                *labels = json!({});
            }
            let labels = labels.as_object_mut().expect("labels object");
            labels.insert("kubernetes.io/metadata.name".into(), Value::String(name));
        }
        ("storage.k8s.io", "StorageClass") => {
            if let Some(m) = obj.as_object_mut() {
                default(m, "reclaimPolicy", json!("Delete"));
                default(m, "volumeBindingMode", json!("Immediate"));
            }
        }
        ("storage.k8s.io", "CSIDriver") => {
            let spec = obj_mut(obj, "spec");
            default(spec, "attachRequired", json!(true));
            default(spec, "podInfoOnMount", json!(false));
            default(spec, "requiresRepublish", json!(false));
            default(spec, "storageCapacity", json!(false));
            default(spec, "seLinuxMount", json!(false));
            default(spec, "fsGroupPolicy", json!("ReadWriteOnceWithFSType"));
            default(spec, "volumeLifecycleModes", json!(["Persistent"]));
        }
        ("rbac.authorization.k8s.io", "RoleBinding")
        | ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            if let Some(subs) = obj.get_mut("subjects").and_then(Value::as_array_mut) {
                for s in subs {
                    let k = s
                        .get("kind")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    if let Some(m) = s.as_object_mut() {
                        if k == "User" || k == "Group" {
                            default(m, "apiGroup", json!("rbac.authorization.k8s.io"));
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

fn template(spec: &mut Map<String, Value>, default_restart: bool) {
    if let Some(ps) = spec
        .get_mut("template")
        .and_then(|t| {
            if !t.get("spec").is_some_and(Value::is_object) {
                return None;
            }
            t.get_mut("spec")
        })
        .and_then(Value::as_object_mut)
    {
        pod_spec(ps, default_restart);
    }
}

fn job_spec(spec: &mut Map<String, Value>) {
    let has_c = spec.contains_key("completions");
    let has_p = spec.contains_key("parallelism");
    if !has_c && !has_p {
        spec.insert("completions".into(), json!(1));
        spec.insert("parallelism".into(), json!(1));
    } else if !has_p {
        spec.insert("parallelism".into(), json!(1));
    }
    default(spec, "backoffLimit", json!(6));
    default(spec, "completionMode", json!("NonIndexed"));
    default(spec, "suspend", json!(false));
    default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    default(spec, "manualSelector", Value::Null);
    if spec.get("manualSelector").is_some_and(Value::is_null) {
        spec.remove("manualSelector");
    }
    // A Job's pod template gets no restartPolicy default: validation asks for one.
    template(spec, false);
}

fn image_pull_policy(image: &str) -> &'static str {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        return "IfNotPresent";
    }
    match last.split_once(':') {
        None => "Always",
        Some((_, "latest")) => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn pod_spec(spec: &mut Map<String, Value>, default_restart: bool) {
    if default_restart {
        default(spec, "restartPolicy", json!("Always"));
    }
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "schedulerName", json!("default-scheduler"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "securityContext", json!({}));
    default(spec, "enableServiceLinks", json!(true));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs {
                let Some(m) = c.as_object_mut() else { continue };
                default(m, "terminationMessagePath", json!("/dev/termination-log"));
                default(m, "terminationMessagePolicy", json!("File"));
                let img = m
                    .get("image")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                default(m, "imagePullPolicy", json!(image_pull_policy(&img)));
                default(m, "resources", json!({}));
                if let Some(ports) = m.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports {
                        if let Some(pm) = p.as_object_mut() {
                            default(pm, "protocol", json!("TCP"));
                        }
                    }
                }
                if let Some(env) = m.get_mut("env").and_then(Value::as_array_mut) {
                    for e in env {
                        if let Some(fr) = e
                            .pointer_mut("/valueFrom/fieldRef")
                            .and_then(Value::as_object_mut)
                        {
                            default(fr, "apiVersion", json!("v1"));
                        }
                    }
                }
            }
        }
    }
    if let Some(vols) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        for v in vols {
            for src in ["secret", "configMap", "projected", "downwardAPI"] {
                if let Some(m) = v.get_mut(src).and_then(Value::as_object_mut) {
                    default(m, "defaultMode", json!(420));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_defaults() {
        let mut p = json!({"spec": {"containers": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "x:1.0"}]}});
        apply("", "Pod", &mut p);
        assert_eq!(p["spec"]["restartPolicy"], "Always");
        assert_eq!(p["spec"]["serviceAccountName"], "default");
        assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(
            p["spec"]["containers"][1]["imagePullPolicy"],
            "IfNotPresent"
        );
        let once = p.clone();
        apply("", "Pod", &mut p);
        assert_eq!(p, once);
    }

    #[test]
    fn job_template_has_no_restart_default() {
        let mut j =
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}});
        apply("batch", "Job", &mut j);
        assert!(j["spec"]["template"]["spec"].get("restartPolicy").is_none());
        assert_eq!(j["spec"]["backoffLimit"], 6);
    }
}
