//! Small helpers shared by the runner's loops: object access as a system component,
//! status writes with conflict retries, and Events as the components record them.

use crate::auth::UserInfo;
use crate::cluster::{now, Cluster, DeleteOptions, ListOptions, Propagation, Target, WriteOptions};
use crate::error::ApiResult;
use serde_json::{json, Value};

/// `metadata.<f>` as a string ("" when absent).
pub fn meta(o: &Value, f: &str) -> String {
    o.get("metadata")
        .and_then(|m| m.get(f))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// Whether the object has a deletionTimestamp.
pub fn terminating(o: &Value) -> bool {
    o.pointer("/metadata/deletionTimestamp")
        .is_some_and(|d| !d.is_null())
}

/// Write options for a component.
pub fn as_component(user: &str, manager: &str) -> WriteOptions {
    WriteOptions {
        field_manager: Some(manager.to_string()),
        ..WriteOptions::as_user(UserInfo::system(user))
    }
}

/// A target, panicking never: None when the resource is not served (e.g. CRDs absent).
pub fn target(
    c: &Cluster,
    group: &str,
    version: &str,
    plural: &str,
    ns: Option<&str>,
) -> Option<Target> {
    c.target(group, version, plural, ns).ok()
}

/// All objects of a resource (every namespace).
pub fn list_all(c: &Cluster, group: &str, version: &str, plural: &str) -> Vec<Value> {
    let Some(t) = target(c, group, version, plural, None) else {
        return Vec::new();
    };
    let Ok(l) = c.list(&t, &ListOptions::default()) else {
        return Vec::new();
    };
    let kind = t.rt.kind.clone();
    let av = t.rt.api_version();
    l.get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut o| {
            o["kind"] = json!(kind);
            o["apiVersion"] = json!(av);
            o
        })
        .collect()
}

/// Reads, changes and writes an object's status (`f` returns false to skip), retrying on
/// conflicts; `uid` guards against writing to a newer object of the same name.
pub fn update_status(
    c: &Cluster,
    t: &Target,
    name: &str,
    uid: &str,
    o: &WriteOptions,
    f: impl Fn(&mut Value) -> bool,
) -> ApiResult<Option<Value>> {
    for attempt in 0..8 {
        let mut obj = match c.get(t, name) {
            Ok(x) => x,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        if !uid.is_empty() && meta(&obj, "uid") != uid {
            return Ok(None);
        }
        if !f(&mut obj) {
            return Ok(Some(obj));
        }
        match c.update(t, name, obj, Some("status"), o) {
            Ok(out) => return Ok(Some(out.object)),
            Err(e) if e.code == 409 && attempt < 7 => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Reads, changes and writes an object (main resource), retrying on conflicts.
pub fn update_main(
    c: &Cluster,
    t: &Target,
    name: &str,
    uid: &str,
    o: &WriteOptions,
    f: impl Fn(&mut Value) -> bool,
) -> ApiResult<Option<Value>> {
    for attempt in 0..8 {
        let mut obj = match c.get(t, name) {
            Ok(x) => x,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        if !uid.is_empty() && meta(&obj, "uid") != uid {
            return Ok(None);
        }
        if !f(&mut obj) {
            return Ok(Some(obj));
        }
        match c.update(t, name, obj, None, o) {
            Ok(out) => return Ok(Some(out.object)),
            Err(e) if e.code == 409 && attempt < 7 => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Deletes an object as a component.
pub fn delete(
    c: &Cluster,
    t: &Target,
    name: &str,
    user: &str,
    propagation: Option<Propagation>,
    grace: Option<i64>,
) -> ApiResult<()> {
    let o = DeleteOptions {
        user: UserInfo::system(user),
        propagation,
        grace_period: grace,
        ..Default::default()
    };
    c.delete(t, name, &o).map(|_| ())
}

/// Records a core/v1 Event about `obj` (`field_path` e.g. `spec.containers{c}`).
pub fn event(
    c: &Cluster,
    obj: &Value,
    field_path: Option<&str>,
    warning: bool,
    reason: &str,
    message: &str,
    component: &str,
) {
    let ns = {
        let n = meta(obj, "namespace");
        if n.is_empty() {
            "default".to_string()
        } else {
            n
        }
    };
    let name = meta(obj, "name");
    let Some(t) = target(c, "", "v1", "events", Some(&ns)) else {
        return;
    };
    let mut involved = json!({
        "kind": obj.get("kind").cloned().unwrap_or(Value::Null),
        "apiVersion": obj.get("apiVersion").cloned().unwrap_or(Value::Null),
        "namespace": meta(obj, "namespace"),
        "name": name,
        "uid": meta(obj, "uid"),
        "resourceVersion": meta(obj, "resourceVersion"),
    });
    if let Some(f) = field_path {
        involved["fieldPath"] = json!(f);
    }
    let ts = now();
    let ev = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{name}.{}", crate::cluster::name_suffix(16)), "namespace": ns},
        "involvedObject": involved,
        "reason": reason, "message": message,
        "type": if warning { "Warning" } else { "Normal" },
        "source": {"component": component, "host": if component == "kubelet" { json!("kube-sim") } else { Value::Null }},
        "reportingComponent": component, "reportingInstance": if component == "kubelet" { "kube-sim" } else { "" },
        "firstTimestamp": ts, "lastTimestamp": ts, "count": 1,
    });
    let _ = c.create(
        &t,
        ev,
        &as_component(&format!("system:{component}"), component),
    );
}

/// An owner reference to `obj` as controllers write it.
pub fn controller_ref(obj: &Value) -> Value {
    json!({
        "apiVersion": obj.get("apiVersion").cloned().unwrap_or(Value::Null),
        "kind": obj.get("kind").cloned().unwrap_or(Value::Null),
        "name": meta(obj, "name"),
        "uid": meta(obj, "uid"),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// Whether `o` has a controller owner reference with this uid.
pub fn owned_by(o: &Value, uid: &str) -> bool {
    o.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|a| {
            a.iter().any(|r| {
                r.get("uid").and_then(Value::as_str) == Some(uid)
                    && r.get("controller").and_then(Value::as_bool) == Some(true)
            })
        })
}

/// RFC 3339 time text as unix seconds.
pub fn parse_time(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp())
}

/// Unix seconds as the API's time text.
pub fn format_time(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Whether a pod matches a LabelSelector object (matchLabels and matchExpressions).
pub fn selector_matches(sel: &Value, labels: &Value) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
        if !ml.iter().all(|(k, v)| get(k) == v.as_str()) {
            return false;
        }
    }
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e.get("key").and_then(Value::as_str).unwrap_or("");
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let have = get(key);
        let ok = match e.get("operator").and_then(Value::as_str).unwrap_or("") {
            "In" => have.is_some_and(|h| values.contains(&h)),
            "NotIn" => !have.is_some_and(|h| values.contains(&h)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}
