//! Validation as the real server does it: object metadata for every kind, the built-in
//! kinds' own rules ([`builtin`]), custom resources' structural schemas ([`schema`]) and
//! CEL rules ([`cel`]). Each check returns field errors; the caller turns a non-empty list
//! into 422 Invalid.

pub mod builtin;
// Custom resource schemas, CEL rules and object names: the schema crate's, shared with
// `dprepo-controller validate`.
pub use dprepo_k8s_schema::{cel, names, schema};

use crate::error::FieldError;
use serde_json::Value;

/// How a kind's object names are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 subdomain (the default).
    Subdomain,
    /// RFC 1123 label (namespaces, statefulsets).
    Label,
    /// RFC 1035 label (services).
    Dns1035,
    /// Path segment (RBAC objects).
    PathSegment,
}

/// The name rule of a built-in kind (custom resources use subdomains).
pub fn name_rule(group: &str, kind: &str) -> NameRule {
    match (group, kind) {
        ("", "Namespace") => NameRule::Label,
        ("", "Service") => NameRule::Dns1035,
        ("apps", "StatefulSet") => NameRule::Label,
        ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
        _ => NameRule::Subdomain,
    }
}

fn name_errors(rule: NameRule, name: &str, prefix: bool) -> Vec<String> {
    // generateName prefixes are checked with a trailing character, as the server does.
    let n = if prefix && !name.is_empty() {
        format!("{name}a")
    } else {
        name.to_string()
    };
    match rule {
        NameRule::Subdomain => names::dns1123_subdomain(&n),
        NameRule::Label => names::dns1123_label(&n),
        NameRule::Dns1035 => names::dns1035_label(&n),
        NameRule::PathSegment => names::path_segment(&n),
    }
}

/// Parses a Go duration (`1h2m3.5s`, `300ms`, `0`).
pub fn go_duration(s: &str) -> Option<f64> {
    if s == "0" {
        return Some(0.0);
    }
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Some(if neg { -total } else { total })
}

/// Checks the metadata every object carries (name, labels, annotations, finalizers,
/// owner references).
pub fn validate_meta(obj: &Value, rule: NameRule, namespaced: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let meta = obj.get("metadata").cloned().unwrap_or(Value::Null);
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        for m in name_errors(rule, name, false) {
            errs.push(FieldError::invalid("metadata.name", name, m));
        }
    }
    if let Some(g) = meta.get("generateName").and_then(Value::as_str) {
        for m in name_errors(rule, g, true) {
            errs.push(FieldError::invalid("metadata.generateName", g, m));
        }
    }
    if namespaced
        && meta
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
    {
        errs.push(FieldError::required("metadata.namespace", ""));
    }
    errs.extend(validate_labels(meta.get("labels"), "metadata.labels"));
    if let Some(a) = meta.get("annotations").and_then(Value::as_object) {
        let mut size = 0;
        for (k, v) in a {
            for m in names::qualified_name(&k.to_lowercase()) {
                errs.push(FieldError::invalid("metadata.annotations", k.as_str(), m));
            }
            size += k.len() + v.as_str().map_or(0, str::len);
        }
        if size > 262144 {
            errs.push(FieldError::too_long("metadata.annotations", 262144));
        }
    }
    if let Some(f) = meta.get("finalizers").and_then(Value::as_array) {
        for (i, v) in f.iter().enumerate() {
            let s = v.as_str().unwrap_or("");
            for m in names::qualified_name(s) {
                errs.push(FieldError::invalid(
                    &format!("metadata.finalizers[{i}]"),
                    s,
                    m,
                ));
            }
        }
    }
    if let Some(refs) = meta.get("ownerReferences").and_then(Value::as_array) {
        let mut controllers = Vec::new();
        for r in refs {
            for (f, what) in [
                ("apiVersion", "version"),
                ("kind", "kind"),
                ("name", "name"),
                ("uid", "uid"),
            ] {
                if r.get(f).and_then(Value::as_str).unwrap_or("").is_empty() {
                    errs.push(FieldError::invalid(
                        &format!("metadata.ownerReferences.{f}"),
                        "",
                        format!("{what} must not be empty"),
                    ));
                }
            }
            if r.get("controller").and_then(Value::as_bool) == Some(true) {
                controllers.push(format!(
                    "{}/{}",
                    r.get("kind").and_then(Value::as_str).unwrap_or(""),
                    r.get("name").and_then(Value::as_str).unwrap_or("")
                ));
            }
        }
        if controllers.len() > 1 {
            errs.push(FieldError::invalid(
                "metadata.ownerReferences",
                Value::String("[]v1.OwnerReference".into()),
                format!(
                    "Only one reference can have Controller set to true. Found \"true\" in references for {}",
                    controllers.join(" and ")
                ),
            ));
        }
    }
    errs
}

/// Checks a label map (keys qualified names, values label values).
pub fn validate_labels(labels: Option<&Value>, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(l) = labels.and_then(Value::as_object) {
        for (k, v) in l {
            for m in names::qualified_name(k) {
                errs.push(FieldError::invalid(path, k.as_str(), m));
            }
            let s = v.as_str().unwrap_or("");
            for m in names::label_value(s) {
                errs.push(FieldError::invalid(path, s, m));
            }
        }
    }
    errs
}

/// Checks what may not change in metadata on update.
pub fn validate_meta_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for f in ["name", "namespace", "uid"] {
        let n = new
            .pointer(&format!("/metadata/{f}"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let o = old
            .pointer(&format!("/metadata/{f}"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if n != o && !(f == "uid" && n.is_empty()) {
            errs.push(FieldError::invalid(
                &format!("metadata.{f}"),
                n,
                "field is immutable",
            ));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations() {
        assert_eq!(go_duration("1m30s"), Some(90.0));
        assert_eq!(go_duration("1h"), Some(3600.0));
        assert_eq!(go_duration("250ms"), Some(0.25));
        assert_eq!(go_duration("1d"), None);
        assert_eq!(go_duration(""), None);
    }

    #[test]
    fn meta_errors() {
        let o = json!({"metadata": {"name": "Bad_Name", "labels": {"a b": "x"}, "finalizers": ["ok/x", "-bad"]}});
        let e = validate_meta(&o, NameRule::Subdomain, false);
        let s: Vec<String> = e.iter().map(|e| e.to_string()).collect();
        assert!(s[0].starts_with(
            "metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"
        ));
        assert!(s
            .iter()
            .any(|m| m.starts_with("metadata.labels: Invalid value: \"a b\"")));
        assert!(s
            .iter()
            .any(|m| m.starts_with("metadata.finalizers[1]: Invalid value: \"-bad\"")));
    }
}
