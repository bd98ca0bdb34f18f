//! Server-side printing: `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` answers
//! with a `meta.k8s.io/v1` Table. Custom resources use their CRD's
//! `additionalPrinterColumns` (JSONPath evaluated here, dates shown as ages, as the real
//! server does); built-in kinds get the columns kubectl users know.

use crate::jsonpath;
use crate::resource::ResourceType;
use serde_json::{json, Value};

/// What each row carries besides its cells (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    /// Nothing.
    None,
    /// PartialObjectMetadata (the default).
    Metadata,
    /// The whole object.
    Object,
}

/// Renders an age the way `duration.HumanDuration` does.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    let m = s / 60;
    let h = s / 3600;
    let d = h / 24;
    let y = d / 365;
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 192 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if y < 2 {
        format!("{d}d")
    } else if y < 8 {
        if d % 365 == 0 {
            format!("{y}y")
        } else {
            format!("{y}y{}d", d % 365)
        }
    } else {
        format!("{y}y")
    }
}

fn age(ts: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(ts) {
        Ok(t) => human_duration((chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds()),
        Err(_) => "<unknown>".into(),
    }
}

fn s<'a>(o: &'a Value, ptr: &str) -> &'a str {
    o.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn col(name: &str, ty: &str, priority: i64, desc: &str) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": ty, "format": format, "description": desc, "priority": priority})
}

fn count(o: &Value, ptr: &str) -> usize {
    match o.pointer(ptr) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    }
}

fn join_names(o: &Value, ptr: &str, field: &str) -> String {
    o.pointer(ptr)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|c| c.get(field).and_then(Value::as_str).unwrap_or(""))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn builtin_columns(rt: &ResourceType) -> Vec<Value> {
    let name = col(
        "Name",
        "string",
        0,
        "Name must be unique within a namespace.",
    );
    let agec = col("Age", "string", 0, "CreationTimestamp is a timestamp representing the server time when this object was created.");
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Pod") => vec![
            name,
            col("Ready", "string", 0, "The aggregate readiness state of this pod for accepting traffic."),
            col("Status", "string", 0, "The aggregate status of the containers in this pod."),
            col("Restarts", "string", 0, "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
            agec,
            col("IP", "string", 1, "IP address allocated to the pod."),
            col("Node", "string", 1, "Name of the node this pod is assigned to."),
        ],
        ("batch", "Job") => vec![
            name,
            col("Status", "string", 0, "Status of the job."),
            col("Completions", "string", 0, "The completion status of the job."),
            col("Duration", "string", 0, "Time required to complete the job."),
            agec,
            col("Containers", "string", 1, "Names of each container in the template."),
            col("Images", "string", 1, "Images referenced by each container in the template."),
        ],
        ("batch", "CronJob") => vec![
            name,
            col("Schedule", "string", 0, "The schedule in Cron format."),
            col("Timezone", "string", 0, "The time zone name for the given schedule."),
            col("Suspend", "boolean", 0, "Whether subsequent executions are suspended."),
            col("Active", "integer", 0, "A list of pointers to currently running jobs."),
            col("Last Schedule", "string", 0, "Information when was the last time the job was successfully scheduled."),
            agec,
        ],
        ("", "Namespace") => vec![name, col("Status", "string", 0, "The status of the namespace"), agec],
        ("", "Secret") => vec![
            name,
            col("Type", "string", 0, "The type of the secret"),
            col("Data", "string", 0, "The number of entries in the secret"),
            agec,
        ],
        ("", "ConfigMap") => vec![name, col("Data", "string", 0, "Data contains the configuration data."), agec],
        ("", "ServiceAccount") => vec![name, col("Secrets", "string", 0, "Secrets"), agec],
        ("", "Service") => vec![
            name,
            col("Type", "string", 0, "type determines how the Service is exposed."),
            col("Cluster-IP", "string", 0, "clusterIP is the IP address of the service."),
            col("External-IP", "string", 0, "externalIPs is a list of IP addresses."),
            col("Port(s)", "string", 0, "The list of ports that are exposed by this service."),
            agec,
        ],
        ("", "PersistentVolumeClaim") => vec![
            name,
            col("Status", "string", 0, "phase represents the current phase of PersistentVolumeClaim."),
            col("Volume", "string", 0, "volumeName is the binding reference to the PersistentVolume backing this claim."),
            col("Capacity", "string", 0, "capacity represents the actual resources of the underlying volume."),
            col("Access Modes", "string", 0, "accessModes contains the desired access modes the volume should have."),
            col("StorageClass", "string", 0, "storageClassName is the name of the StorageClass required by the claim."),
            col("VolumeAttributesClass", "string", 0, "volumeAttributesClassName"),
            agec,
        ],
        ("", "PersistentVolume") => vec![
            name,
            col("Capacity", "string", 0, "capacity is the description of the persistent volume's resources and capacity."),
            col("Access Modes", "string", 0, "accessModes contains all ways the volume can be mounted."),
            col("Reclaim Policy", "string", 0, "persistentVolumeReclaimPolicy"),
            col("Status", "string", 0, "phase indicates if a volume is available, bound to a claim, or released by a claim."),
            col("Claim", "string", 0, "claimRef"),
            col("StorageClass", "string", 0, "storageClassName"),
            col("VolumeAttributesClass", "string", 0, "volumeAttributesClassName"),
            col("Reason", "string", 0, "reason"),
            agec,
        ],
        ("", "Event") => vec![
            col("Last Seen", "string", 0, "Time when last event occurred."),
            col("Type", "string", 0, "Type of this event."),
            col("Reason", "string", 0, "Reason is why the action was taken."),
            col("Object", "string", 0, "The object this Event is about."),
            col("Message", "string", 0, "A human-readable description of the status of this operation."),
            col("Name", "string", 1, "Name must be unique within a namespace."),
        ],
        ("", "Node") => vec![
            name,
            col("Status", "string", 0, "The status of the node"),
            col("Roles", "string", 0, "The roles of the node"),
            agec,
            col("Version", "string", 0, "Kubelet Version reported by the node."),
        ],
        ("apps", "StatefulSet") => vec![name, col("Ready", "string", 0, "Number of the pod with ready state"), agec],
        ("apps", "Deployment") => vec![
            name,
            col("Ready", "string", 0, "Number of the pod with ready state"),
            col("Up-to-date", "string", 0, "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
            col("Available", "string", 0, "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
            agec,
        ],
        ("coordination.k8s.io", "Lease") => vec![name, col("Holder", "string", 0, "holderIdentity"), agec],
        ("storage.k8s.io", "StorageClass") => vec![
            name,
            col("Provisioner", "string", 0, "provisioner"),
            col("ReclaimPolicy", "string", 0, "reclaimPolicy"),
            col("VolumeBindingMode", "string", 0, "volumeBindingMode"),
            col("AllowVolumeExpansion", "string", 0, "allowVolumeExpansion"),
            agec,
        ],
        ("rbac.authorization.k8s.io", "RoleBinding") | ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            vec![name, col("Role", "string", 0, "Role"), agec]
        }
        ("apiextensions.k8s.io", _) | ("rbac.authorization.k8s.io", _) => {
            vec![name, col("Created At", "date", 0, "CreationTimestamp")]
        }
        _ => vec![name, col("Created At", "date", 0, "CreationTimestamp is a timestamp representing the server time when this object was created.")],
    }
}

fn pod_status(o: &Value) -> String {
    if o.pointer("/metadata/deletionTimestamp")
        .is_some_and(|d| !d.is_null())
    {
        return "Terminating".into();
    }
    let mut reason = s(o, "/status/reason").to_string();
    if reason.is_empty() {
        reason = s(o, "/status/phase").to_string();
    }
    for cs in o
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        if let Some(w) = cs.pointer("/state/waiting/reason").and_then(Value::as_str) {
            return w.to_string();
        }
        if let Some(t) = cs.pointer("/state/terminated") {
            let r = t.get("reason").and_then(Value::as_str).unwrap_or("");
            if !r.is_empty() {
                reason = r.to_string();
            }
        }
    }
    reason
}

fn job_status(o: &Value) -> String {
    let conds = o
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let has = |t: &str| {
        conds.iter().any(|c| {
            c.get("type").and_then(Value::as_str) == Some(t)
                && c.get("status").and_then(Value::as_str) == Some("True")
        })
    };
    if has("Complete") {
        "Complete".into()
    } else if has("Failed") {
        "Failed".into()
    } else if o
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|d| !d.is_null())
    {
        "Terminating".into()
    } else if has("Suspended") {
        "Suspended".into()
    } else if has("FailureTarget") {
        "FailureTarget".into()
    } else if has("SuccessCriteriaMet") {
        "SuccessCriteriaMet".into()
    } else {
        "Running".into()
    }
}

fn duration_between(a: &str, b: &str) -> String {
    match (
        chrono::DateTime::parse_from_rfc3339(a),
        chrono::DateTime::parse_from_rfc3339(b),
    ) {
        (Ok(x), Ok(y)) => human_duration((y - x).num_seconds()),
        _ => String::new(),
    }
}

fn builtin_cells(rt: &ResourceType, o: &Value) -> Vec<Value> {
    let name = json!(s(o, "/metadata/name"));
    let created = age(s(o, "/metadata/creationTimestamp"));
    let or_none = |x: String| {
        if x.is_empty() {
            "<none>".to_string()
        } else {
            x
        }
    };
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Pod") => {
            let total = count(o, "/spec/containers");
            let statuses = o
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let ready = statuses
                .iter()
                .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
                .count();
            let restarts: i64 = statuses
                .iter()
                .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
                .sum();
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(pod_status(o)),
                json!(restarts.to_string()),
                json!(created),
                json!(or_none(s(o, "/status/podIP").to_string())),
                json!(or_none(s(o, "/spec/nodeName").to_string())),
            ]
        }
        ("batch", "Job") => {
            let succeeded = o
                .pointer("/status/succeeded")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let completions = o
                .pointer("/spec/completions")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let start = s(o, "/status/startTime");
            let end = s(o, "/status/completionTime");
            let dur = if start.is_empty() {
                String::new()
            } else if end.is_empty() {
                duration_between(start, &chrono::Utc::now().to_rfc3339())
            } else {
                duration_between(start, end)
            };
            vec![
                name,
                json!(job_status(o)),
                json!(format!("{succeeded}/{completions}")),
                json!(dur),
                json!(created),
                json!(join_names(o, "/spec/template/spec/containers", "name")),
                json!(join_names(o, "/spec/template/spec/containers", "image")),
            ]
        }
        ("batch", "CronJob") => {
            let last = s(o, "/status/lastScheduleTime");
            vec![
                name,
                json!(s(o, "/spec/schedule")),
                json!(or_none(s(o, "/spec/timeZone").to_string())),
                json!(o
                    .pointer("/spec/suspend")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)),
                json!(count(o, "/status/active")),
                json!(if last.is_empty() {
                    "<none>".to_string()
                } else {
                    age(last)
                }),
                json!(created),
            ]
        }
        ("", "Namespace") => vec![name, json!(s(o, "/status/phase")), json!(created)],
        ("", "Secret") => vec![
            name,
            json!(s(o, "/type")),
            json!(count(o, "/data")),
            json!(created),
        ],
        ("", "ConfigMap") => vec![
            name,
            json!(count(o, "/data") + count(o, "/binaryData")),
            json!(created),
        ],
        ("", "ServiceAccount") => vec![name, json!(count(o, "/secrets")), json!(created)],
        ("", "Service") => {
            let ports = o
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|p| {
                            format!(
                                "{}/{}",
                                p.get("port").map(|x| x.to_string()).unwrap_or_default(),
                                p.get("protocol").and_then(Value::as_str).unwrap_or("TCP")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![
                name,
                json!(s(o, "/spec/type")),
                json!(or_none(s(o, "/spec/clusterIP").to_string())),
                json!("<none>"),
                json!(or_none(ports)),
                json!(created),
            ]
        }
        ("", "PersistentVolumeClaim") => vec![
            name,
            json!(s(o, "/status/phase")),
            json!(s(o, "/spec/volumeName")),
            json!(s(o, "/status/capacity/storage")),
            json!(access_modes(o.pointer("/status/accessModes"))),
            json!(s(o, "/spec/storageClassName")),
            json!("<unset>"),
            json!(created),
        ],
        ("", "PersistentVolume") => {
            let claim = if s(o, "/spec/claimRef/name").is_empty() {
                String::new()
            } else {
                format!(
                    "{}/{}",
                    s(o, "/spec/claimRef/namespace"),
                    s(o, "/spec/claimRef/name")
                )
            };
            vec![
                name,
                json!(s(o, "/spec/capacity/storage")),
                json!(access_modes(o.pointer("/spec/accessModes"))),
                json!(s(o, "/spec/persistentVolumeReclaimPolicy")),
                json!(s(o, "/status/phase")),
                json!(claim),
                json!(s(o, "/spec/storageClassName")),
                json!("<unset>"),
                json!(s(o, "/status/reason")),
                json!(created),
            ]
        }
        ("", "Event") => {
            let mut last = s(o, "/lastTimestamp").to_string();
            if last.is_empty() {
                last = s(o, "/eventTime").to_string();
            }
            if last.is_empty() {
                last = s(o, "/metadata/creationTimestamp").to_string();
            }
            vec![
                json!(age(&last)),
                json!(s(o, "/type")),
                json!(s(o, "/reason")),
                json!(format!(
                    "{}/{}",
                    s(o, "/involvedObject/kind").to_lowercase(),
                    s(o, "/involvedObject/name")
                )),
                json!(s(o, "/message")),
                name,
            ]
        }
        ("", "Node") => vec![
            name,
            json!("Ready"),
            json!("<none>"),
            json!(created),
            json!(s(o, "/status/nodeInfo/kubeletVersion")),
        ],
        ("apps", "StatefulSet") | ("apps", "Deployment") => {
            let ready = o
                .pointer("/status/readyReplicas")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let want = o
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let mut c = vec![name, json!(format!("{ready}/{want}"))];
            if rt.kind == "Deployment" {
                c.push(json!(o
                    .pointer("/status/updatedReplicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)));
                c.push(json!(o
                    .pointer("/status/availableReplicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)));
            }
            c.push(json!(created));
            c
        }
        ("coordination.k8s.io", "Lease") => {
            vec![name, json!(s(o, "/spec/holderIdentity")), json!(created)]
        }
        ("storage.k8s.io", "StorageClass") => vec![
            name,
            json!(s(o, "/provisioner")),
            json!(s(o, "/reclaimPolicy")),
            json!(s(o, "/volumeBindingMode")),
            json!(o
                .get("allowVolumeExpansion")
                .and_then(Value::as_bool)
                .unwrap_or(false)
                .to_string()),
            json!(created),
        ],
        ("rbac.authorization.k8s.io", "RoleBinding")
        | ("rbac.authorization.k8s.io", "ClusterRoleBinding") => vec![
            name,
            json!(format!(
                "{}/{}",
                s(o, "/roleRef/kind"),
                s(o, "/roleRef/name")
            )),
            json!(created),
        ],
        _ => vec![name, json!(s(o, "/metadata/creationTimestamp"))],
    }
}

fn access_modes(v: Option<&Value>) -> String {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|m| match m.as_str().unwrap_or("") {
                    "ReadWriteOnce" => "RWO",
                    "ReadOnlyMany" => "ROX",
                    "ReadWriteMany" => "RWX",
                    "ReadWriteOncePod" => "RWOP",
                    _ => "",
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn crd_columns(rt: &ResourceType) -> Vec<(Value, Option<Vec<jsonpath::Segment>>, String)> {
    let c = rt.crd.as_ref().expect("custom resource");
    let mut out = vec![(
        col(
            "Name",
            "string",
            0,
            "Name must be unique within a namespace.",
        ),
        None,
        String::new(),
    )];
    let cols = if c.printer_columns.is_empty() {
        vec![json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})]
    } else {
        c.printer_columns.clone()
    };
    for pc in cols {
        let ty = pc
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("string")
            .to_string();
        let jp = pc.get("jsonPath").and_then(Value::as_str).unwrap_or("");
        let parsed = jsonpath::parse(&format!("{{{jp}}}")).ok();
        let def = json!({
            "name": pc.get("name").and_then(Value::as_str).unwrap_or(""),
            "type": ty,
            "format": pc.get("format").and_then(Value::as_str).unwrap_or(""),
            "description": pc.get("description").and_then(Value::as_str).unwrap_or(""),
            "priority": pc.get("priority").and_then(Value::as_i64).unwrap_or(0),
        });
        out.push((def, parsed, ty));
    }
    out
}

fn crd_cell(o: &Value, path: &Option<Vec<jsonpath::Segment>>, ty: &str) -> Value {
    let Some(segs) = path else { return Value::Null };
    let mut vals = Vec::new();
    for seg in segs {
        if let jsonpath::Segment::Path(p) = seg {
            vals.extend(jsonpath::eval(p, o).into_iter().cloned());
        }
    }
    let Some(first) = vals.first() else {
        return Value::Null;
    };
    match ty {
        "date" => match first.as_str() {
            Some(t) => json!(age(t)),
            None => json!("<unknown>"),
        },
        "integer" => {
            if first.is_i64() || first.is_u64() {
                first.clone()
            } else {
                Value::Null
            }
        }
        "number" => {
            if first.is_number() {
                first.clone()
            } else {
                Value::Null
            }
        }
        "boolean" => {
            if first.is_boolean() {
                first.clone()
            } else {
                Value::Null
            }
        }
        _ => {
            let strs: Vec<String> = vals
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            json!(strs.join(","))
        }
    }
}

fn row_object(o: &Value, include: Include) -> Option<Value> {
    match include {
        Include::None => None,
        Include::Object => Some(o.clone()),
        Include::Metadata => Some(json!({
            "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": o.get("metadata").cloned().unwrap_or(json!({}))
        })),
    }
}

/// The Table of some objects (already presented in the requested version).
pub fn to_table(rt: &ResourceType, objs: &[Value], list_meta: Value, include: Include) -> Value {
    let (defs, rows): (Vec<Value>, Vec<Value>) = if rt.is_custom() {
        let cols = crd_columns(rt);
        let defs = cols.iter().map(|c| c.0.clone()).collect();
        let rows = objs
            .iter()
            .map(|o| {
                let mut cells = vec![json!(s(o, "/metadata/name"))];
                for c in cols.iter().skip(1) {
                    cells.push(crd_cell(o, &c.1, &c.2));
                }
                row(cells, o, include)
            })
            .collect();
        (defs, rows)
    } else {
        let defs = builtin_columns(rt);
        let rows = objs
            .iter()
            .map(|o| row(builtin_cells(rt, o), o, include))
            .collect();
        (defs, rows)
    };
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta, "columnDefinitions": defs, "rows": rows})
}

fn row(cells: Vec<Value>, o: &Value, include: Include) -> Value {
    let mut r = json!({"cells": cells});
    if let Some(obj) = row_object(o, include) {
        r["object"] = obj;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(3600 * 5 + 60 * 7), "5h7m");
        assert_eq!(human_duration(86400 * 3), "3d");
    }
}
