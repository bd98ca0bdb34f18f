//! Rules of the built-in kinds that a controller can get wrong, worded like the real
//! server's (`pkg/apis/*/validation`): pod specs (also inside Job, CronJob, StatefulSet and
//! Deployment templates), Jobs and CronJobs, Secrets and ConfigMaps, PVCs, Services,
//! workloads' selectors, RBAC, Leases and events.

use super::names;
use super::validate_labels;
use crate::error::FieldError;
use crate::selector::LabelSelector;
use serde_json::Value;

/// Looks up cluster objects a rule depends on (storage classes).
pub type Lookup<'a> = &'a dyn Fn(&str, &str) -> Option<Value>;

fn s<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Validates one built-in object (`old` on update).
pub fn validate(
    group: &str,
    kind: &str,
    obj: &Value,
    old: Option<&Value>,
    lookup: Lookup<'_>,
) -> Vec<FieldError> {
    let mut e = Vec::new();
    match (group, kind) {
        ("", "Pod") => {
            if let Some(spec) = obj.get("spec") {
                pod_spec(spec, "spec", true, &mut e);
            }
            if let Some(o) = old {
                pod_update(obj, o, &mut e);
            }
        }
        ("batch", "Job") => job(obj, old, &mut e),
        ("batch", "CronJob") => cronjob(obj, &mut e),
        ("apps", "StatefulSet") => workload(obj, old, "StatefulSet", &mut e),
        ("apps", "Deployment") | ("apps", "ReplicaSet") | ("apps", "DaemonSet") => {
            workload(obj, old, kind, &mut e)
        }
        ("", "Secret") => secret(obj, old, &mut e),
        ("", "ConfigMap") => configmap(obj, old, &mut e),
        ("", "PersistentVolumeClaim") => pvc(obj, old, lookup, &mut e),
        ("", "Service") => service(obj, old, &mut e),
        ("", "Namespace") => {
            for (i, f) in arr(obj.get("spec").unwrap_or(&Value::Null), "finalizers")
                .iter()
                .enumerate()
            {
                let n = f.as_str().unwrap_or("");
                for m in names::qualified_name(n) {
                    e.push(FieldError::invalid(&format!("spec.finalizers[{i}]"), n, m));
                }
            }
        }
        ("rbac.authorization.k8s.io", "Role") | ("rbac.authorization.k8s.io", "ClusterRole") => {
            rules(obj, &mut e)
        }
        ("rbac.authorization.k8s.io", "RoleBinding")
        | ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            binding(obj, old, kind == "RoleBinding", &mut e)
        }
        ("coordination.k8s.io", "Lease") => {
            if let Some(d) = obj
                .pointer("/spec/leaseDurationSeconds")
                .and_then(Value::as_i64)
            {
                if d <= 0 {
                    e.push(FieldError::invalid(
                        "spec.leaseDurationSeconds",
                        d,
                        "must be greater than 0",
                    ));
                }
            }
            if let Some(t) = obj
                .pointer("/spec/leaseTransitions")
                .and_then(Value::as_i64)
            {
                if t < 0 {
                    e.push(FieldError::invalid(
                        "spec.leaseTransitions",
                        t,
                        "must be greater than or equal to 0",
                    ));
                }
            }
        }
        ("", "Event") => event(obj, &mut e),
        _ => {}
    }
    e
}

fn pod_update(new: &Value, old: &Value, e: &mut Vec<FieldError>) {
    // Pod specs are immutable except container images, activeDeadlineSeconds,
    // tolerations (additions) and terminationGracePeriodSeconds.
    let strip = |v: &Value| {
        let mut spec = v.get("spec").cloned().unwrap_or(Value::Null);
        for list in ["containers", "initContainers"] {
            if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
                for c in cs {
                    if let Some(m) = c.as_object_mut() {
                        m.remove("image");
                    }
                }
            }
        }
        if let Some(m) = spec.as_object_mut() {
            for f in [
                "activeDeadlineSeconds",
                "tolerations",
                "terminationGracePeriodSeconds",
            ] {
                m.remove(f);
            }
        }
        spec
    };
    if strip(new) != strip(old) {
        e.push(FieldError::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        ));
    }
}

const VOLUME_SOURCES: &[&str] = &[
    "hostPath",
    "emptyDir",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
];

/// Validates a pod spec at `path` (`spec`, `spec.template.spec` ...).
pub fn pod_spec(spec: &Value, path: &str, require_image: bool, e: &mut Vec<FieldError>) {
    let mut vol_names = Vec::new();
    for (i, v) in arr(spec, "volumes").iter().enumerate() {
        let p = format!("{path}.volumes[{i}]");
        let name = v.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            e.push(FieldError::required(&format!("{p}.name"), ""));
        } else {
            for m in names::dns1123_label(name) {
                e.push(FieldError::invalid(&format!("{p}.name"), name, m));
            }
            if vol_names.contains(&name.to_string()) {
                e.push(FieldError::duplicate(&format!("{p}.name"), name));
            }
            vol_names.push(name.to_string());
        }
        let n = VOLUME_SOURCES
            .iter()
            .filter(|k| v.get(**k).is_some())
            .count();
        if n == 0 {
            e.push(FieldError::required(&p, "must specify a volume type"));
        } else if n > 1 {
            e.push(FieldError::forbidden(
                &p,
                "may not specify more than 1 volume type",
            ));
        }
        if let Some(pvc) = v.get("persistentVolumeClaim") {
            if pvc
                .get("claimName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                e.push(FieldError::required(
                    &format!("{p}.persistentVolumeClaim.claimName"),
                    "",
                ));
            }
        }
        if let Some(sec) = v.get("secret") {
            if sec
                .get("secretName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                e.push(FieldError::required(&format!("{p}.secret.secretName"), ""));
            }
        }
    }
    let rp = spec
        .get("restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Always");
    if !["Always", "OnFailure", "Never"].contains(&rp) {
        e.push(FieldError::not_supported(
            &format!("{path}.restartPolicy"),
            rp,
            &["Always", "OnFailure", "Never"],
        ));
    }
    let mut all_names: Vec<String> = Vec::new();
    let containers = arr(spec, "containers");
    if containers.is_empty() {
        e.push(FieldError::required(&format!("{path}.containers"), ""));
    }
    for list in ["initContainers", "containers"] {
        for (i, c) in arr(spec, list).iter().enumerate() {
            container(
                c,
                &format!("{path}.{list}[{i}]"),
                &vol_names,
                &mut all_names,
                require_image,
                e,
            );
        }
    }
    if let Some(sa) = spec.get("serviceAccountName").and_then(Value::as_str) {
        if !sa.is_empty() {
            for m in names::dns1123_subdomain(sa) {
                e.push(FieldError::invalid(
                    &format!("{path}.serviceAccountName"),
                    sa,
                    m,
                ));
            }
        }
    }
    if let Some(ns) = spec.get("nodeSelector") {
        e.extend(validate_labels(Some(ns), &format!("{path}.nodeSelector")));
    }
}

fn container(
    c: &Value,
    p: &str,
    volumes: &[String],
    all_names: &mut Vec<String>,
    require_image: bool,
    e: &mut Vec<FieldError>,
) {
    let name = c.get("name").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        e.push(FieldError::required(&format!("{p}.name"), ""));
    } else {
        for m in names::dns1123_label(name) {
            e.push(FieldError::invalid(&format!("{p}.name"), name, m));
        }
        if all_names.contains(&name.to_string()) {
            e.push(FieldError::duplicate(&format!("{p}.name"), name));
        }
        all_names.push(name.to_string());
    }
    if require_image
        && c.get("image")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim()
            .is_empty()
    {
        e.push(FieldError::required(&format!("{p}.image"), ""));
    }
    let mut port_names = Vec::new();
    for (i, port) in arr(c, "ports").iter().enumerate() {
        let pp = format!("{p}.ports[{i}]");
        if let Some(n) = port.get("name").and_then(Value::as_str) {
            for m in names::port_name(n) {
                e.push(FieldError::invalid(&format!("{pp}.name"), n, m));
            }
            if port_names.contains(&n.to_string()) {
                e.push(FieldError::duplicate(&format!("{pp}.name"), n));
            }
            port_names.push(n.to_string());
        }
        let cp = port
            .get("containerPort")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if !(1..=65535).contains(&cp) {
            e.push(FieldError::invalid(
                &format!("{pp}.containerPort"),
                cp,
                "must be between 1 and 65535, inclusive",
            ));
        }
        if let Some(proto) = port.get("protocol").and_then(Value::as_str) {
            if !["TCP", "UDP", "SCTP"].contains(&proto) {
                e.push(FieldError::not_supported(
                    &format!("{pp}.protocol"),
                    proto,
                    &["SCTP", "TCP", "UDP"],
                ));
            }
        }
    }
    for (i, env) in arr(c, "env").iter().enumerate() {
        let ep = format!("{p}.env[{i}]");
        let n = env.get("name").and_then(Value::as_str).unwrap_or("");
        if n.is_empty() {
            e.push(FieldError::required(&format!("{ep}.name"), ""));
        } else {
            for m in names::env_var_name(n) {
                e.push(FieldError::invalid(&format!("{ep}.name"), n, m));
            }
        }
        if let Some(vf) = env.get("valueFrom") {
            if env
                .get("value")
                .and_then(Value::as_str)
                .is_some_and(|v| !v.is_empty())
            {
                e.push(FieldError::invalid(
                    &format!("{ep}.valueFrom"),
                    "",
                    "may not be specified when `value` is not empty",
                ));
            }
            let kinds = [
                "fieldRef",
                "resourceFieldRef",
                "configMapKeyRef",
                "secretKeyRef",
                "fileKeyRef",
            ];
            let n = kinds.iter().filter(|k| vf.get(**k).is_some()).count();
            if n == 0 {
                e.push(FieldError::invalid(&format!("{ep}.valueFrom"), "", "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"));
            } else if n > 1 {
                e.push(FieldError::invalid(
                    &format!("{ep}.valueFrom"),
                    "",
                    "may not have more than one field specified at a time",
                ));
            }
            for (k, what) in [
                ("secretKeyRef", "secretKeyRef"),
                ("configMapKeyRef", "configMapKeyRef"),
            ] {
                if let Some(r) = vf.get(k) {
                    if r.get("key")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .is_empty()
                    {
                        e.push(FieldError::required(
                            &format!("{ep}.valueFrom.{what}.key"),
                            "",
                        ));
                    }
                    if r.get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .is_empty()
                    {
                        e.push(FieldError::required(
                            &format!("{ep}.valueFrom.{what}.name"),
                            "",
                        ));
                    }
                }
            }
            if let Some(fr) = vf.get("fieldRef") {
                let fp = fr.get("fieldPath").and_then(Value::as_str).unwrap_or("");
                let ok = [
                    "metadata.name",
                    "metadata.namespace",
                    "metadata.uid",
                    "spec.nodeName",
                    "spec.serviceAccountName",
                    "status.hostIP",
                    "status.hostIPs",
                    "status.podIP",
                    "status.podIPs",
                ]
                .contains(&fp)
                    || fp.starts_with("metadata.labels['")
                    || fp.starts_with("metadata.annotations['");
                if fp.is_empty() {
                    e.push(FieldError::required(
                        &format!("{ep}.valueFrom.fieldRef.fieldPath"),
                        "",
                    ));
                } else if !ok {
                    e.push(FieldError::not_supported(
                        &format!("{ep}.valueFrom.fieldRef.fieldPath"),
                        fp,
                        &[
                            "metadata.name",
                            "metadata.namespace",
                            "metadata.uid",
                            "spec.nodeName",
                            "spec.serviceAccountName",
                            "status.hostIP",
                            "status.hostIPs",
                            "status.podIP",
                            "status.podIPs",
                        ],
                    ));
                }
            }
        }
    }
    let mut mount_paths = Vec::new();
    for (i, m) in arr(c, "volumeMounts").iter().enumerate() {
        let mp = format!("{p}.volumeMounts[{i}]");
        let n = m.get("name").and_then(Value::as_str).unwrap_or("");
        if n.is_empty() {
            e.push(FieldError::required(&format!("{mp}.name"), ""));
        } else if !volumes.iter().any(|v| v == n) {
            e.push(FieldError::not_found(&format!("{mp}.name"), n));
        }
        let path = m.get("mountPath").and_then(Value::as_str).unwrap_or("");
        if path.is_empty() {
            e.push(FieldError::required(&format!("{mp}.mountPath"), ""));
        } else if mount_paths.contains(&path.to_string()) {
            e.push(FieldError::invalid(
                &format!("{mp}.mountPath"),
                path,
                "must be unique",
            ));
        }
        mount_paths.push(path.to_string());
        if let Some(sp) = m.get("subPath").and_then(Value::as_str) {
            if sp.starts_with('/') {
                e.push(FieldError::invalid(
                    &format!("{mp}.subPath"),
                    sp,
                    "must be a relative path",
                ));
            }
            if sp.split('/').any(|x| x == "..") {
                e.push(FieldError::invalid(
                    &format!("{mp}.subPath"),
                    sp,
                    "must not contain '..'",
                ));
            }
        }
    }
    if let Some(pol) = c.get("imagePullPolicy").and_then(Value::as_str) {
        if !["Always", "IfNotPresent", "Never"].contains(&pol) {
            e.push(FieldError::not_supported(
                &format!("{p}.imagePullPolicy"),
                pol,
                &["Always", "IfNotPresent", "Never"],
            ));
        }
    }
}

fn template_restart(spec: &Value, path: &str, allowed: &[&str], e: &mut Vec<FieldError>) {
    let rp = spec
        .get("restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Always");
    if !allowed.contains(&rp) {
        e.push(FieldError::not_supported(
            &format!("{path}.restartPolicy"),
            rp,
            allowed,
        ));
    }
}

fn job(obj: &Value, old: Option<&Value>, e: &mut Vec<FieldError>) {
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    job_spec(&spec, "spec", e);
    if let Some(name) = s(obj, "/metadata/name") {
        // The job name becomes the value of the pods' job-name label.
        if name.len() > 63 {
            e.push(FieldError::invalid(
                "spec.template.labels",
                name,
                "must be no more than 63 characters",
            ));
        }
    }
    match old {
        None => {
            if spec.get("selector").is_some()
                && spec.get("manualSelector").and_then(Value::as_bool) != Some(true)
            {
                // The defaults filled in the selector before validation; a user-set one
                // that differs from the generated labels is refused.
                let uid = s(obj, "/metadata/uid").unwrap_or("");
                let generated = spec
                    .pointer("/selector/matchLabels/batch.kubernetes.io~1controller-uid")
                    .and_then(Value::as_str)
                    == Some(uid);
                if !generated {
                    e.push(FieldError::invalid(
                        "spec.selector",
                        "object",
                        "`selector` not auto-generated",
                    ));
                }
            }
        }
        Some(o) => {
            let os = o.get("spec").cloned().unwrap_or(Value::Null);
            for f in ["selector", "completions", "completionMode"] {
                if spec.get(f) != os.get(f)
                    && !(f == "completions"
                        && spec.get("completionMode").and_then(Value::as_str) == Some("Indexed"))
                {
                    e.push(FieldError::invalid(
                        &format!("spec.{f}"),
                        display(spec.get(f)),
                        "field is immutable",
                    ));
                }
            }
            if spec.get("template") != os.get("template") {
                e.push(FieldError::invalid(
                    "spec.template",
                    "core.PodTemplateSpec",
                    "field is immutable",
                ));
            }
        }
    }
}

fn display(v: Option<&Value>) -> Value {
    match v {
        None => Value::String("null".into()),
        Some(Value::Object(_)) => Value::String("object".into()),
        Some(x) => x.clone(),
    }
}

fn job_spec(spec: &Value, path: &str, e: &mut Vec<FieldError>) {
    for f in [
        "backoffLimit",
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "ttlSecondsAfterFinished",
    ] {
        if let Some(n) = spec.get(f).and_then(Value::as_i64) {
            let min = if f == "activeDeadlineSeconds" { 1 } else { 0 };
            if n < min {
                let msg = if min == 1 {
                    "must be greater than 0"
                } else {
                    "must be greater than or equal to 0"
                };
                e.push(FieldError::invalid(&format!("{path}.{f}"), n, msg));
            }
        }
    }
    let tpath = format!("{path}.template.spec");
    match spec.pointer("/template/spec") {
        None => e.push(FieldError::required(
            &format!("{path}.template.spec.containers"),
            "",
        )),
        Some(ps) => {
            pod_spec(ps, &tpath, true, e);
            let rp = ps
                .get("restartPolicy")
                .and_then(Value::as_str)
                .unwrap_or("");
            if rp.is_empty() {
                e.push(FieldError::required(
                    &format!("{tpath}.restartPolicy"),
                    "valid values: \"OnFailure\", \"Never\"",
                ));
            } else {
                template_restart(ps, &tpath, &["OnFailure", "Never"], e);
            }
        }
    }
    e.extend(validate_labels(
        spec.pointer("/template/metadata/labels"),
        &format!("{path}.template.metadata.labels"),
    ));
}

fn cron_ok(sched: &str) -> bool {
    let s = sched.trim();
    let s = match s.strip_prefix("CRON_TZ=").or_else(|| s.strip_prefix("TZ=")) {
        Some(rest) => rest.split_once(' ').map(|x| x.1).unwrap_or(""),
        None => s,
    };
    if s.starts_with('@') {
        return [
            "@yearly",
            "@annually",
            "@monthly",
            "@weekly",
            "@daily",
            "@midnight",
            "@hourly",
        ]
        .contains(&s)
            || s.strip_prefix("@every ")
                .is_some_and(|d| super::go_duration(d).is_some());
    }
    let fields: Vec<&str> = s.split_whitespace().collect();
    if fields.len() != 5 {
        return false;
    }
    let ranges = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)];
    let names = [
        &[][..],
        &[][..],
        &[][..],
        &[
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ][..],
        &["sun", "mon", "tue", "wed", "thu", "fri", "sat"][..],
    ];
    fields
        .iter()
        .zip(ranges)
        .zip(names)
        .all(|((f, (lo, hi)), nm)| {
            f.split(',').all(|part| {
                let (range, step) = match part.split_once('/') {
                    Some((r, st)) => (r, Some(st)),
                    None => (part, None),
                };
                if step.is_some_and(|st| st.parse::<u32>().map_or(true, |n| n == 0)) {
                    return false;
                }
                let val = |x: &str| -> Option<u32> {
                    x.parse::<u32>().ok().or_else(|| {
                        nm.iter()
                            .position(|n| n.eq_ignore_ascii_case(x))
                            .map(|i| i as u32 + lo)
                    })
                };
                if range == "*" || range == "?" {
                    return true;
                }
                let (a, b) = match range.split_once('-') {
                    Some((a, b)) => (val(a), val(b)),
                    None => (val(range), val(range)),
                };
                matches!((a, b), (Some(a), Some(b)) if a >= lo && b <= hi && a <= b)
            })
        })
}

fn cronjob(obj: &Value, e: &mut Vec<FieldError>) {
    if let Some(name) = s(obj, "/metadata/name") {
        if name.len() > 52 {
            e.push(FieldError::invalid(
                "metadata.name",
                name,
                "must be no more than 52 characters",
            ));
        }
    }
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    match spec.get("schedule").and_then(Value::as_str) {
        None | Some("") => e.push(FieldError::required("spec.schedule", "")),
        Some(sc) => {
            if !cron_ok(sc) {
                e.push(FieldError::invalid(
                    "spec.schedule",
                    sc,
                    format!("unparseable schedule: {sc:?}"),
                ));
            }
        }
    }
    if let Some(cp) = spec.get("concurrencyPolicy").and_then(Value::as_str) {
        if !["Allow", "Forbid", "Replace"].contains(&cp) {
            e.push(FieldError::not_supported(
                "spec.concurrencyPolicy",
                cp,
                &["Allow", "Forbid", "Replace"],
            ));
        }
    }
    match spec.pointer("/jobTemplate/spec") {
        Some(js) => job_spec(js, "spec.jobTemplate.spec", e),
        None => e.push(FieldError::required(
            "spec.jobTemplate.spec.template.spec.containers",
            "",
        )),
    }
}

fn workload(obj: &Value, old: Option<&Value>, kind: &str, e: &mut Vec<FieldError>) {
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    match spec.get("selector") {
        None => e.push(FieldError::required("spec.selector", "")),
        Some(sel) => {
            let empty = sel
                .get("matchLabels")
                .and_then(Value::as_object)
                .is_none_or(|m| m.is_empty())
                && sel
                    .get("matchExpressions")
                    .and_then(Value::as_array)
                    .is_none_or(|m| m.is_empty());
            if empty {
                e.push(FieldError::invalid(
                    "spec.selector",
                    "object",
                    "empty selector is invalid for deployment",
                ));
            } else if let Ok(ls) = LabelSelector::from_object(sel) {
                let tmpl = serde_json::json!({"metadata": {"labels": spec.pointer("/template/metadata/labels").cloned().unwrap_or(Value::Null)}});
                if !ls.matches(&tmpl) {
                    e.push(FieldError::invalid(
                        "spec.template.metadata.labels",
                        Value::String(
                            spec.pointer("/template/metadata/labels")
                                .map(|v| v.to_string())
                                .unwrap_or_default(),
                        ),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
        }
    }
    e.extend(validate_labels(
        spec.pointer("/template/metadata/labels"),
        "spec.template.metadata.labels",
    ));
    if let Some(ps) = spec.pointer("/template/spec") {
        // A StatefulSet's containers mount its volumeClaimTemplates by name: the pods get
        // those volumes from the controller, so they count as declared (the real server
        // does not check the template's mounts at all here).
        let mut ps = ps.clone();
        if kind == "StatefulSet" {
            let claims: Vec<Value> = arr(&spec, "volumeClaimTemplates")
                .iter()
                .filter_map(|t| t.pointer("/metadata/name").cloned())
                .map(|n| serde_json::json!({"name": n, "emptyDir": {}}))
                .collect();
            if !claims.is_empty() {
                let mut vols = arr(&ps, "volumes").to_vec();
                vols.extend(claims);
                ps["volumes"] = Value::Array(vols);
            }
        }
        pod_spec(&ps, "spec.template.spec", true, e);
        template_restart(&ps, "spec.template.spec", &["Always"], e);
    } else {
        e.push(FieldError::required("spec.template.spec.containers", ""));
    }
    if let Some(r) = spec.get("replicas").and_then(Value::as_i64) {
        if r < 0 {
            e.push(FieldError::invalid(
                "spec.replicas",
                r,
                "must be greater than or equal to 0",
            ));
        }
    }
    if kind == "StatefulSet" {
        if let Some(p) = spec.get("podManagementPolicy").and_then(Value::as_str) {
            if !["OrderedReady", "Parallel"].contains(&p) {
                e.push(FieldError::not_supported(
                    "spec.podManagementPolicy",
                    p,
                    &["OrderedReady", "Parallel"],
                ));
            }
        }
        if let Some(o) = old {
            let strip = |v: &Value| {
                let mut sp = v.get("spec").cloned().unwrap_or(Value::Null);
                if let Some(m) = sp.as_object_mut() {
                    for f in [
                        "replicas",
                        "ordinals",
                        "template",
                        "updateStrategy",
                        "persistentVolumeClaimRetentionPolicy",
                        "minReadySeconds",
                    ] {
                        m.remove(f);
                    }
                }
                sp
            };
            if strip(obj) != strip(o) {
                e.push(FieldError::forbidden("spec", "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"));
            }
        }
    } else if let Some(o) = old {
        if spec.get("selector") != o.pointer("/spec/selector") {
            e.push(FieldError::invalid(
                "spec.selector",
                "object",
                "field is immutable",
            ));
        }
    }
}

fn data_size(v: Option<&Value>, decoded: bool) -> usize {
    use base64::Engine;
    v.and_then(Value::as_object)
        .map(|m| {
            m.values()
                .map(|x| {
                    let s = x.as_str().unwrap_or("");
                    if decoded {
                        base64::engine::general_purpose::STANDARD
                            .decode(s)
                            .map_or(s.len(), |b| b.len())
                    } else {
                        s.len()
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

fn keys_valid(v: Option<&Value>, path: &str, e: &mut Vec<FieldError>) {
    if let Some(m) = v.and_then(Value::as_object) {
        for k in m.keys() {
            for msg in names::config_map_key(k) {
                e.push(FieldError::invalid(
                    &format!("{path}[{k}]"),
                    k.as_str(),
                    msg,
                ));
            }
        }
    }
}

fn immutable_data(obj: &Value, old: Option<&Value>, fields: &[&str], e: &mut Vec<FieldError>) {
    if let Some(o) = old {
        if o.get("immutable").and_then(Value::as_bool) == Some(true) {
            for f in fields {
                if obj.get(*f) != o.get(*f) {
                    e.push(FieldError::forbidden(
                        f,
                        "field is immutable when `immutable` is set",
                    ));
                }
            }
            if obj.get("immutable").and_then(Value::as_bool) != Some(true) {
                e.push(FieldError::forbidden(
                    "immutable",
                    "field is immutable when `immutable` is set",
                ));
            }
        }
    }
}

fn secret(obj: &Value, old: Option<&Value>, e: &mut Vec<FieldError>) {
    keys_valid(obj.get("data"), "data", e);
    if data_size(obj.get("data"), true) > 1024 * 1024 {
        e.push(FieldError::too_long("data", 1024 * 1024));
    }
    let ty = obj.get("type").and_then(Value::as_str).unwrap_or("Opaque");
    let data = obj.get("data").and_then(Value::as_object);
    let has = |k: &str| data.is_some_and(|d| d.contains_key(k));
    match ty {
        "kubernetes.io/service-account-token" => {
            if s(
                obj,
                "/metadata/annotations/kubernetes.io~1service-account.name",
            )
            .unwrap_or("")
            .is_empty()
            {
                e.push(FieldError::required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "",
                ));
            }
        }
        "kubernetes.io/dockerconfigjson" => {
            if !has(".dockerconfigjson") {
                e.push(FieldError::required("data[.dockerconfigjson]", ""));
            }
        }
        "kubernetes.io/tls" => {
            for k in ["tls.crt", "tls.key"] {
                if !has(k) {
                    e.push(FieldError::required(&format!("data[{k}]"), ""));
                }
            }
        }
        "kubernetes.io/basic-auth" => {
            if !has("username") && !has("password") {
                e.push(FieldError::required("data[username]", ""));
            }
        }
        "kubernetes.io/ssh-auth" => {
            if !has("ssh-privatekey") {
                e.push(FieldError::required("data[ssh-privatekey]", ""));
            }
        }
        _ => {}
    }
    if let Some(o) = old {
        let ot = o.get("type").and_then(Value::as_str).unwrap_or("Opaque");
        if ot != ty {
            e.push(FieldError::invalid("type", ty, "field is immutable"));
        }
    }
    immutable_data(obj, old, &["data"], e);
}

fn configmap(obj: &Value, old: Option<&Value>, e: &mut Vec<FieldError>) {
    keys_valid(obj.get("data"), "data", e);
    keys_valid(obj.get("binaryData"), "binaryData", e);
    if let (Some(d), Some(b)) = (
        obj.get("data").and_then(Value::as_object),
        obj.get("binaryData").and_then(Value::as_object),
    ) {
        for k in d.keys() {
            if b.contains_key(k) {
                e.push(FieldError::invalid(
                    &format!("data[{k}]"),
                    k.as_str(),
                    "duplicate of key present in binaryData",
                ));
            }
        }
    }
    if data_size(obj.get("data"), false) + data_size(obj.get("binaryData"), true) > 1024 * 1024 {
        e.push(FieldError::too_long("", 1024 * 1024));
    }
    immutable_data(obj, old, &["data", "binaryData"], e);
}

const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

/// Parses a quantity into bytes (enough for comparing storage requests).
pub fn quantity_bytes(q: &str) -> Option<f64> {
    let q = q.trim();
    let idx = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (num, suf) = q.split_at(idx);
    let n: f64 = num.parse().ok()?;
    let m = match suf {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with('e') || s.starts_with('E') => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * m)
}

fn pvc(obj: &Value, old: Option<&Value>, lookup: Lookup<'_>, e: &mut Vec<FieldError>) {
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let modes = arr(&spec, "accessModes");
    if modes.is_empty() {
        e.push(FieldError::required(
            "spec.accessModes",
            "at least 1 access mode is required",
        ));
    }
    for (i, m) in modes.iter().enumerate() {
        let m = m.as_str().unwrap_or("");
        if !ACCESS_MODES.contains(&m) {
            e.push(FieldError::not_supported(
                &format!("spec.accessModes[{i}]"),
                m,
                ACCESS_MODES,
            ));
        }
    }
    match spec
        .pointer("/resources/requests/storage")
        .and_then(Value::as_str)
    {
        None => e.push(FieldError::required("spec.resources[storage]", "")),
        Some(q) => match quantity_bytes(q) {
            Some(b) if b > 0.0 => {}
            _ => e.push(FieldError::invalid(
                "spec.resources.requests[storage]",
                q,
                "must be greater than zero",
            )),
        },
    }
    if let Some(o) = old {
        let os = o.get("spec").cloned().unwrap_or(Value::Null);
        let strip = |v: &Value| {
            let mut x = v.clone();
            if let Some(m) = x.as_object_mut() {
                if let Some(r) = m.get_mut("resources").and_then(Value::as_object_mut) {
                    r.remove("requests");
                }
                m.remove("volumeAttributesClassName");
                // Binding fills these in; the user may not change them afterwards.
                if os.get("volumeName").is_none() {
                    m.remove("volumeName");
                }
            }
            x
        };
        if strip(&spec) != strip(&os) {
            e.push(FieldError::forbidden(
                "spec",
                "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
            ));
        }
        let newq = spec
            .pointer("/resources/requests/storage")
            .and_then(Value::as_str)
            .and_then(quantity_bytes);
        let oldq = os
            .pointer("/resources/requests/storage")
            .and_then(Value::as_str)
            .and_then(quantity_bytes);
        if let (Some(n), Some(ol)) = (newq, oldq) {
            if n < ol {
                e.push(FieldError::forbidden(
                    "spec.resources.requests.storage",
                    "field can not be less than status.capacity",
                ));
            } else if n > ol {
                let sc = spec
                    .get("storageClassName")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let expandable = lookup("storageclasses", sc)
                    .and_then(|c| c.get("allowVolumeExpansion").and_then(Value::as_bool))
                    .unwrap_or(false);
                if !expandable {
                    e.push(FieldError::forbidden(
                        "spec.resources.requests.storage",
                        "only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize",
                    ));
                }
            }
        }
    }
}

fn service(obj: &Value, old: Option<&Value>, e: &mut Vec<FieldError>) {
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&ty) {
        e.push(FieldError::not_supported(
            "spec.type",
            ty,
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        ));
    }
    let ports = arr(&spec, "ports");
    if ports.is_empty()
        && ty != "ExternalName"
        && spec.get("clusterIP").and_then(Value::as_str) != Some("None")
    {
        e.push(FieldError::required("spec.ports", ""));
    }
    let mut seen = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        match p.get("name").and_then(Value::as_str) {
            None | Some("") if ports.len() > 1 => {
                e.push(FieldError::required(&format!("{pp}.name"), ""))
            }
            Some(n) if !n.is_empty() => {
                for m in names::dns1123_label(n) {
                    e.push(FieldError::invalid(&format!("{pp}.name"), n, m));
                }
                if seen.contains(&n.to_string()) {
                    e.push(FieldError::duplicate(&format!("{pp}.name"), n));
                }
                seen.push(n.to_string());
            }
            _ => {}
        }
        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&port) {
            e.push(FieldError::invalid(
                &format!("{pp}.port"),
                port,
                "must be between 1 and 65535, inclusive",
            ));
        }
    }
    e.extend(validate_labels(spec.get("selector"), "spec.selector"));
    if let Some(o) = old {
        let oc = o.pointer("/spec/clusterIP");
        if oc.is_some() && spec.get("clusterIP") != oc && ty != "ExternalName" {
            e.push(FieldError::invalid(
                "spec.clusterIP",
                display(spec.get("clusterIP")),
                "field is immutable",
            ));
        }
    }
}

const VERBS: &[&str] = &[];

fn rules(obj: &Value, e: &mut Vec<FieldError>) {
    let _ = VERBS;
    for (i, r) in arr(obj, "rules").iter().enumerate() {
        let p = format!("rules[{i}]");
        if arr(r, "verbs").is_empty() {
            e.push(FieldError::required(
                &format!("{p}.verbs"),
                "verbs must contain at least one value",
            ));
        }
        let has_urls = !arr(r, "nonResourceURLs").is_empty();
        if has_urls {
            if obj.get("kind").and_then(Value::as_str) == Some("Role") {
                e.push(FieldError::invalid(
                    &format!("{p}.nonResourceURLs"),
                    "",
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if !arr(r, "apiGroups").is_empty() || !arr(r, "resources").is_empty() {
                e.push(FieldError::invalid(
                    &format!("{p}.nonResourceURLs"),
                    "",
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if arr(r, "apiGroups").is_empty() {
            e.push(FieldError::required(
                &format!("{p}.apiGroups"),
                "resource rules must supply at least one api group",
            ));
        }
        if arr(r, "resources").is_empty() {
            e.push(FieldError::required(
                &format!("{p}.resources"),
                "resource rules must supply at least one resource",
            ));
        }
    }
}

fn binding(obj: &Value, old: Option<&Value>, namespaced: bool, e: &mut Vec<FieldError>) {
    let rr = obj.get("roleRef").cloned().unwrap_or(Value::Null);
    let kind = rr.get("kind").and_then(Value::as_str).unwrap_or("");
    let allowed: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    if !allowed.contains(&kind) {
        e.push(FieldError::not_supported("roleRef.kind", kind, allowed));
    }
    if rr.get("apiGroup").and_then(Value::as_str) != Some("rbac.authorization.k8s.io") {
        e.push(FieldError::not_supported(
            "roleRef.apiGroup",
            rr.get("apiGroup")
                .cloned()
                .unwrap_or(Value::String(String::new())),
            &["rbac.authorization.k8s.io"],
        ));
    }
    if rr
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
    {
        e.push(FieldError::required("roleRef.name", ""));
    }
    for (i, sub) in arr(obj, "subjects").iter().enumerate() {
        let p = format!("subjects[{i}]");
        let k = sub.get("kind").and_then(Value::as_str).unwrap_or("");
        let n = sub.get("name").and_then(Value::as_str).unwrap_or("");
        if n.is_empty() {
            e.push(FieldError::required(&format!("{p}.name"), ""));
        }
        match k {
            "ServiceAccount" => {
                if let Some(g) = sub.get("apiGroup").and_then(Value::as_str) {
                    if !g.is_empty() {
                        e.push(FieldError::not_supported(
                            &format!("{p}.apiGroup"),
                            g,
                            &[""],
                        ));
                    }
                }
                if !namespaced
                    && sub
                        .get("namespace")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .is_empty()
                {
                    e.push(FieldError::required(&format!("{p}.namespace"), ""));
                }
                for m in names::dns1123_subdomain(n) {
                    e.push(FieldError::invalid(&format!("{p}.name"), n, m));
                }
            }
            "User" | "Group" => {
                if sub.get("apiGroup").and_then(Value::as_str) != Some("rbac.authorization.k8s.io")
                {
                    e.push(FieldError::not_supported(
                        &format!("{p}.apiGroup"),
                        sub.get("apiGroup")
                            .cloned()
                            .unwrap_or(Value::String(String::new())),
                        &["rbac.authorization.k8s.io"],
                    ));
                }
            }
            _ => e.push(FieldError::not_supported(
                &format!("{p}.kind"),
                k,
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
    if let Some(o) = old {
        if o.get("roleRef") != obj.get("roleRef") {
            e.push(FieldError::invalid(
                "roleRef",
                "object",
                "cannot change roleRef",
            ));
        }
    }
}

fn event(obj: &Value, e: &mut Vec<FieldError>) {
    // Events written through events.k8s.io/v1 (eventTime set) carry the newer rules.
    let ns = s(obj, "/metadata/namespace").unwrap_or("");
    if let Some(ins) = s(obj, "/involvedObject/namespace") {
        if !ins.is_empty() && ins != ns {
            e.push(FieldError::invalid(
                "involvedObject.namespace",
                ins,
                "does not match event.namespace",
            ));
        }
    }
    if obj.get("eventTime").is_some_and(|t| !t.is_null()) {
        for (f, max) in [
            ("reportingComponent", 128),
            ("reportingInstance", 128),
            ("action", 128),
            ("reason", 128),
        ] {
            let v = obj.get(f).and_then(Value::as_str).unwrap_or("");
            let name = match f {
                "reportingComponent" => "reportingController",
                other => other,
            };
            if v.is_empty() {
                e.push(FieldError::required(name, ""));
            } else if v.len() > max {
                e.push(FieldError::invalid(
                    name,
                    v,
                    format!("can have at most {max} characters"),
                ));
            }
        }
        if obj
            .get("message")
            .and_then(Value::as_str)
            .is_some_and(|m| m.len() > 1024)
        {
            e.push(FieldError::invalid(
                "note",
                "",
                "can have at most 1024 characters",
            ));
        }
    }
    if let Some(t) = obj.get("type").and_then(Value::as_str) {
        if !t.is_empty() && t != "Normal" && t != "Warning" {
            e.push(FieldError::invalid(
                "type",
                t,
                "has invalid value, expected \"Normal\" or \"Warning\"",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn none(_: &str, _: &str) -> Option<Value> {
        None
    }

    #[test]
    fn job_restart_policy_and_mounts() {
        let j = json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {
            "restartPolicy": "Always",
            "containers": [{"name": "c", "image": "busybox", "volumeMounts": [{"name": "missing", "mountPath": "/x"}],
                "env": [{"name": "A=B", "value": "1"}]}]}}}});
        let e = validate("batch", "Job", &j, None, &none);
        let m: Vec<String> = e.iter().map(|x| x.to_string()).collect();
        assert!(m.contains(&"spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\"".to_string()), "{m:?}");
        assert!(
            m.contains(
                &"spec.template.spec.containers[0].volumeMounts[0].name: Not found: \"missing\""
                    .to_string()
            ),
            "{m:?}"
        );
        assert!(m.iter().any(|x| x
            .starts_with("spec.template.spec.containers[0].env[0].name: Invalid value: \"A=B\"")));
    }

    #[test]
    fn statefulset_mounts_of_volume_claim_templates_are_declared() {
        // Broke: the standard StatefulSet (a container mounting its volumeClaimTemplate)
        // was refused with "volumeMounts[0].name: Not found", which a cluster accepts.
        let s = json!({"metadata": {"name": "db"}, "spec": {"selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "c", "image": "pg",
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]}});
        let e = validate("apps", "StatefulSet", &s, None, &none);
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn cron_schedules() {
        assert!(cron_ok("0 3 * * *"));
        assert!(cron_ok("*/5 * * * 1-5"));
        assert!(cron_ok("@daily"));
        assert!(cron_ok("CRON_TZ=UTC 0 0 * * *"));
        assert!(!cron_ok("0 3 * *"));
        assert!(!cron_ok("61 * * * *"));
    }

    #[test]
    fn quantities() {
        assert_eq!(quantity_bytes("1Gi"), Some(1073741824.0));
        assert_eq!(quantity_bytes("500M"), Some(5e8));
        assert_eq!(quantity_bytes("x"), None);
    }
}
