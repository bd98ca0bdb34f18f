//! CustomResourceDefinitions: defaulting, validation, status, and the resource types a
//! CRD serves.
//!
//! Writing a CRD validates it as the real server does (names, scope, versions, one storage
//! version, structural schemas, compilable CEL rules, printer columns, subresources); the
//! cluster then registers one [`crate::resource::ResourceType`] per served version and sets
//! the status (`acceptedNames`, `NamesAccepted`, `Established`, `storedVersions`).

use crate::error::FieldError;
use crate::resource::{ResourceType, ALL_VERBS};
use crate::validation::{cel, names, schema};
use serde_json::{json, Value};
use std::sync::Arc;

/// What a served CRD version needs at request time.
#[derive(Debug, Clone)]
pub struct CrdVersion {
    /// The CRD's name (`plural.group`).
    pub crd_name: String,
    /// The version name.
    pub version: String,
    /// The storage version's name.
    pub storage_version: String,
    /// `openAPIV3Schema`.
    pub schema: Value,
    /// `additionalPrinterColumns`.
    pub printer_columns: Vec<Value>,
    /// `subresources.scale`, if any.
    pub scale: Option<Value>,
    /// `selectableFields[].jsonPath`, without the leading dot.
    pub selectable_fields: Vec<String>,
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// Fills the defaults the real server sets on CRDs.
pub fn apply_defaults(crd: &mut Value) {
    let kind = s(crd, "/spec/names/kind").to_string();
    if let Some(names) = crd
        .pointer_mut("/spec/names")
        .and_then(Value::as_object_mut)
    {
        if !names.contains_key("singular") && !kind.is_empty() {
            names.insert("singular".into(), Value::String(kind.to_lowercase()));
        }
        if !names.contains_key("listKind") && !kind.is_empty() {
            names.insert("listKind".into(), Value::String(format!("{kind}List")));
        }
    }
    if let Some(spec) = crd.get_mut("spec").and_then(Value::as_object_mut) {
        spec.entry("conversion")
            .or_insert_with(|| json!({"strategy": "None"}));
    }
}

/// Validates a CRD (`old` on update).
pub fn validate(crd: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut e = Vec::new();
    let group = s(crd, "/spec/group");
    let plural = s(crd, "/spec/names/plural");
    if group.is_empty() {
        e.push(FieldError::required("spec.group", ""));
    } else {
        for m in names::dns1123_subdomain(group) {
            e.push(FieldError::invalid("spec.group", group, m));
        }
        if !group.contains('.') {
            e.push(FieldError::invalid(
                "spec.group",
                group,
                "should be a domain with at least one dot",
            ));
        }
    }
    let name = s(crd, "/metadata/name");
    if name != format!("{plural}.{group}") {
        e.push(FieldError::invalid(
            "metadata.name",
            name,
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    for (f, required) in [
        ("plural", true),
        ("singular", false),
        ("kind", true),
        ("listKind", false),
    ] {
        let v = s(crd, &format!("/spec/names/{f}"));
        let p = format!("spec.names.{f}");
        if v.is_empty() {
            if required {
                e.push(FieldError::required(&p, ""));
            }
            continue;
        }
        let check = if f == "kind" || f == "listKind" {
            v.to_lowercase()
        } else {
            v.to_string()
        };
        for m in names::dns1035_label(&check) {
            e.push(FieldError::invalid(&p, v, m));
        }
    }
    if s(crd, "/spec/names/kind") == s(crd, "/spec/names/listKind")
        && !s(crd, "/spec/names/kind").is_empty()
    {
        e.push(FieldError::invalid(
            "spec.names.listKind",
            s(crd, "/spec/names/listKind"),
            "kind and listKind cannot be the same",
        ));
    }
    for list in ["shortNames", "categories"] {
        if let Some(a) = crd
            .pointer(&format!("/spec/names/{list}"))
            .and_then(Value::as_array)
        {
            for (i, v) in a.iter().enumerate() {
                let v = v.as_str().unwrap_or("");
                for m in names::dns1035_label(v) {
                    e.push(FieldError::invalid(
                        &format!("spec.names.{list}[{i}]"),
                        v,
                        m,
                    ));
                }
            }
        }
    }
    let scope = s(crd, "/spec/scope");
    if scope != "Namespaced" && scope != "Cluster" {
        e.push(FieldError::not_supported(
            "spec.scope",
            scope,
            &["Cluster", "Namespaced"],
        ));
    }
    let strategy = s(crd, "/spec/conversion/strategy");
    if !strategy.is_empty() && strategy != "None" && strategy != "Webhook" {
        e.push(FieldError::not_supported(
            "spec.conversion.strategy",
            strategy,
            &["None", "Webhook"],
        ));
    }
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        e.push(FieldError::invalid(
            "spec.versions",
            "[]",
            "must have exactly one version marked as storage version",
        ));
    }
    let storage = versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .count();
    if !versions.is_empty() && storage != 1 {
        e.push(FieldError::invalid(
            "spec.versions",
            Value::String("[]apiextensions.CustomResourceDefinitionVersion".into()),
            "must have exactly one version marked as storage version",
        ));
    }
    if !versions.is_empty()
        && !versions
            .iter()
            .any(|v| v.get("served").and_then(Value::as_bool) == Some(true))
    {
        e.push(FieldError::invalid(
            "spec.versions",
            "[]",
            "must have at least one version marked as served",
        ));
    }
    let mut seen = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        let p = format!("spec.versions[{i}]");
        let vn = v.get("name").and_then(Value::as_str).unwrap_or("");
        for m in names::dns1035_label(vn) {
            e.push(FieldError::invalid(&format!("{p}.name"), vn, m));
        }
        if seen.contains(&vn) {
            e.push(FieldError::duplicate(&format!("{p}.name"), vn));
        }
        seen.push(vn);
        match v.pointer("/schema/openAPIV3Schema") {
            None => e.push(FieldError::required(
                &format!("{p}.schema.openAPIV3Schema"),
                "schemas are required",
            )),
            Some(sch) => {
                let sp = format!("{p}.schema.openAPIV3Schema");
                schema::check_structural(sch, &sp, true, &mut e);
                e.extend(cel::check_rules(sch, &sp));
            }
        }
        if let Some(cols) = v.get("additionalPrinterColumns").and_then(Value::as_array) {
            for (j, c) in cols.iter().enumerate() {
                let cp = format!("{p}.additionalPrinterColumns[{j}]");
                if c.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
                {
                    e.push(FieldError::required(&format!("{cp}.name"), ""));
                }
                let ty = c.get("type").and_then(Value::as_str).unwrap_or("");
                if !["integer", "number", "string", "boolean", "date"].contains(&ty) {
                    e.push(FieldError::not_supported(
                        &format!("{cp}.type"),
                        ty,
                        &["integer", "number", "string", "boolean", "date"],
                    ));
                }
                let jp = c.get("jsonPath").and_then(Value::as_str).unwrap_or("");
                if jp.is_empty() {
                    e.push(FieldError::required(&format!("{cp}.JSONPath"), ""));
                } else if let Err(msg) = crate::jsonpath::parse(&format!("{{{jp}}}")) {
                    e.push(FieldError::invalid(
                        &format!("{cp}.JSONPath"),
                        jp,
                        format!("must be a simple json path: {msg}"),
                    ));
                }
            }
        }
        if let Some(scale) = v.pointer("/subresources/scale") {
            let spec_path = scale
                .get("specReplicasPath")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !spec_path.starts_with(".spec.") {
                e.push(FieldError::invalid(
                    &format!("{p}.subresources.scale.specReplicasPath"),
                    spec_path,
                    "should be a json path under .spec",
                ));
            }
            let status_path = scale
                .get("statusReplicasPath")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !status_path.starts_with(".status.") {
                e.push(FieldError::invalid(
                    &format!("{p}.subresources.scale.statusReplicasPath"),
                    status_path,
                    "should be a json path under .status",
                ));
            }
        }
    }
    if let Some(o) = old {
        if s(o, "/spec/scope") != scope {
            e.push(FieldError::invalid(
                "spec.scope",
                scope,
                "field is immutable",
            ));
        }
        if s(o, "/spec/group") != group {
            e.push(FieldError::invalid(
                "spec.group",
                group,
                "field is immutable",
            ));
        }
        // Stored versions must stay defined.
        if let Some(stored) = o
            .pointer("/status/storedVersions")
            .and_then(Value::as_array)
        {
            for sv in stored.iter().filter_map(Value::as_str) {
                if !versions
                    .iter()
                    .any(|v| v.get("name").and_then(Value::as_str) == Some(sv))
                {
                    e.push(FieldError::invalid(
                        "status.storedVersions",
                        Value::String(format!("[{sv}]")),
                        format!("must appear in spec.versions: {sv}"),
                    ));
                }
            }
        }
    }
    e
}

/// The storage version of a (valid) CRD.
pub fn storage_version(crd: &Value) -> String {
    crd.pointer("/spec/versions")
        .and_then(Value::as_array)
        .and_then(|vs| {
            vs.iter()
                .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        })
        .and_then(|v| v.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// The resource types a (valid, established) CRD serves.
pub fn resource_types(crd: &Value) -> Vec<ResourceType> {
    let group = s(crd, "/spec/group").to_string();
    let plural = s(crd, "/spec/names/plural").to_string();
    let kind = s(crd, "/spec/names/kind").to_string();
    let storage = storage_version(crd);
    let list = |k: &str| -> Vec<String> {
        crd.pointer(&format!("/spec/names/{k}"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for v in crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        if v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let mut subresources = Vec::new();
        if v.pointer("/subresources/status").is_some() {
            subresources.push("status".to_string());
        }
        if v.pointer("/subresources/scale").is_some() {
            subresources.push("scale".to_string());
        }
        let selectable: Vec<String> = v
            .get("selectableFields")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|f| f.get("jsonPath").and_then(Value::as_str))
                    .map(|p| p.trim_start_matches('.').to_string())
                    .collect()
            })
            .unwrap_or_default();
        let version = v
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        out.push(ResourceType {
            group: group.clone(),
            version: version.clone(),
            plural: plural.clone(),
            singular: s(crd, "/spec/names/singular").to_string(),
            kind: kind.clone(),
            list_kind: s(crd, "/spec/names/listKind").to_string(),
            namespaced: s(crd, "/spec/scope") == "Namespaced",
            short_names: list("shortNames"),
            categories: list("categories"),
            verbs: ALL_VERBS.iter().map(|s| s.to_string()).collect(),
            subresources,
            storage: (group.clone(), plural.clone()),
            crd: Some(Arc::new(CrdVersion {
                crd_name: s(crd, "/metadata/name").to_string(),
                version,
                storage_version: storage.clone(),
                schema: v
                    .pointer("/schema/openAPIV3Schema")
                    .cloned()
                    .unwrap_or(json!({})),
                printer_columns: v
                    .get("additionalPrinterColumns")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
                scale: v.pointer("/subresources/scale").cloned(),
                selectable_fields: selectable.clone(),
            })),
            has_generation: true,
            create_on_update: false,
            unconditional_update: false,
            extra_field_labels: selectable,
            virtual_only: false,
        });
    }
    out
}

/// The status the CRD controllers set: accepted names and conditions. `conflict` is the
/// reason names are not accepted (another CRD owns the plural or kind).
pub fn status(crd: &Value, conflict: Option<&str>, now: &str) -> Value {
    let mut st = crd.get("status").cloned().unwrap_or(json!({}));
    let names = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
    let cond = |t: &str, ok: bool, reason: &str, msg: &str| json!({"type": t, "status": if ok { "True" } else { "False" }, "reason": reason, "message": msg, "lastTransitionTime": now});
    let mut conditions = Vec::new();
    match conflict {
        None => {
            st["acceptedNames"] = names;
            conditions.push(cond(
                "NamesAccepted",
                true,
                "NoConflicts",
                "no conflicts found",
            ));
            conditions.push(cond(
                "Established",
                true,
                "InitialNamesAccepted",
                "the initial names have been accepted",
            ));
        }
        Some(msg) => {
            st["acceptedNames"] = json!({"plural": "", "kind": ""});
            conditions.push(cond("NamesAccepted", false, "NameConflict", msg));
            conditions.push(cond(
                "Established",
                false,
                "NotAccepted",
                "not all names are accepted",
            ));
        }
    }
    // Keep transition times of unchanged conditions.
    if let Some(old) = crd.pointer("/status/conditions").and_then(Value::as_array) {
        for c in conditions.iter_mut() {
            if let Some(o) = old
                .iter()
                .find(|o| o.get("type") == c.get("type") && o.get("status") == c.get("status"))
            {
                c["lastTransitionTime"] =
                    o.get("lastTransitionTime").cloned().unwrap_or(Value::Null);
            }
        }
    }
    st["conditions"] = Value::Array(conditions);
    let sv = storage_version(crd);
    let mut stored: Vec<Value> = st
        .get("storedVersions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !sv.is_empty() && !stored.contains(&Value::String(sv.clone())) {
        stored.push(Value::String(sv));
    }
    st["storedVersions"] = Value::Array(stored);
    st
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd() -> Value {
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.test.io"},
            "spec": {"group": "test.io", "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object"}}}},
                    "subresources": {"status": {}}}]}})
    }

    #[test]
    fn valid_crd_registers() {
        let mut c = crd();
        apply_defaults(&mut c);
        assert!(validate(&c, None).is_empty(), "{:?}", validate(&c, None));
        let t = resource_types(&c);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].list_kind, "WidgetList");
        assert!(t[0].has_status());
    }

    #[test]
    fn invalid_crds_are_refused() {
        let mut c = crd();
        c["metadata"]["name"] = json!("wrong.test.io");
        c["spec"]["versions"][0]["storage"] = json!(false);
        c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"] =
            json!({"properties": {}});
        let e: Vec<String> = validate(&c, None).iter().map(|e| e.to_string()).collect();
        assert!(
            e.iter()
                .any(|m| m.starts_with("metadata.name: Invalid value: \"wrong.test.io\"")),
            "{e:?}"
        );
        assert!(e
            .iter()
            .any(|m| m.contains("must have exactly one version marked as storage version")));
        assert!(e
            .iter()
            .any(|m| m.contains("properties[spec].type: Required value")));
    }
}
