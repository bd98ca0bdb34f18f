//! Structural OpenAPI v3 schemas of custom resources: pruning, defaulting, validation.
//!
//! Order as in the real server: unknown fields are pruned (recorded so that
//! `fieldValidation=Strict` can refuse them and `Warn` can warn), nulls of non-nullable
//! properties are dropped, `default`s applied, then the object is validated (type, enum,
//! pattern, format, bounds, required, list types, allOf/anyOf/oneOf/not), then the CEL
//! rules run (see [`crate::validation::cel`]).

use crate::error::{FieldError, FieldErrorType};
use serde_json::{Map, Value};

/// ObjectMeta fields kept at the root of custom objects and embedded resources.
pub const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn child_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn index_path(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// Removes fields the schema does not know, recording their paths in `unknown`.
pub fn prune(schema: &Value, value: &mut Value, path: &str, root: bool, unknown: &mut Vec<String>) {
    let embedded = root || flag(schema, "x-kubernetes-embedded-resource");
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                let p = child_path(path, &k);
                if embedded && (k == "apiVersion" || k == "kind") {
                    continue;
                }
                if embedded && k == "metadata" {
                    if let Some(Value::Object(m)) = map.get_mut("metadata") {
                        let mk: Vec<String> = m.keys().cloned().collect();
                        for f in mk {
                            if !OBJECT_META_FIELDS.contains(&f.as_str()) {
                                m.remove(&f);
                                unknown.push(child_path(&p, &f));
                            }
                        }
                    }
                    continue;
                }
                if let Some(sub) = props.and_then(|pr| pr.get(&k)) {
                    if let Some(v) = map.get_mut(&k) {
                        prune(sub, v, &p, false, unknown);
                    }
                } else if let Some(ap) = additional {
                    if ap.is_object() {
                        if let Some(v) = map.get_mut(&k) {
                            prune(ap, v, &p, false, unknown);
                        }
                    } else if ap == &Value::Bool(false) && !preserve {
                        map.remove(&k);
                        unknown.push(p);
                    }
                } else if !preserve {
                    map.remove(&k);
                    unknown.push(p);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = schema.get("items") {
                for (i, it) in items.iter_mut().enumerate() {
                    prune(is, it, &index_path(path, i), false, unknown);
                }
            }
        }
        _ => {}
    }
}

/// Drops nulls of non-nullable properties and applies `default`s, recursively.
pub fn apply_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, sub) in props {
                    let nullable = flag(sub, "nullable");
                    match map.get(k) {
                        Some(Value::Null) if !nullable => {
                            if let Some(d) = sub.get("default") {
                                map.insert(k.clone(), d.clone());
                            } else {
                                map.remove(k);
                            }
                        }
                        None => {
                            if let Some(d) = sub.get("default") {
                                map.insert(k.clone(), d.clone());
                            }
                        }
                        _ => {}
                    }
                    if let Some(v) = map.get_mut(k) {
                        apply_defaults(sub, v);
                    }
                }
            }
            if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for v in map.values_mut() {
                    apply_defaults(ap, v);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = schema.get("items") {
                for it in items.iter_mut() {
                    if it.is_null() && !flag(is, "nullable") {
                        if let Some(d) = is.get("default") {
                            *it = d.clone();
                        }
                    }
                    apply_defaults(is, it);
                }
            }
        }
        _ => {}
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_ok(want: &str, v: &Value) -> bool {
    match want {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "integer" => match v {
            Value::Number(n) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        },
        "number" => v.is_number(),
        _ => true,
    }
}

fn invalid(path: &str, v: &Value, detail: String) -> FieldError {
    FieldError::invalid(path, display_value(v), detail)
}

/// The value a field error shows (scalars as themselves; containers as their Go type).
fn display_value(v: &Value) -> Value {
    match v {
        Value::Object(_) | Value::Array(_) => Value::String(v.to_string()),
        other => other.clone(),
    }
}

/// Checks a string against a `format` the real server validates.
pub fn format_ok(format: &str, s: &str) -> bool {
    use base64::Engine;
    match format {
        "date-time" | "datetime" => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
        "date" => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok(),
        "byte" => base64::engine::general_purpose::STANDARD.decode(s).is_ok(),
        "uuid" | "uuid3" | "uuid4" | "uuid5" => {
            let re = regex::Regex::new(
                r"^(?i)[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$",
            )
            .expect("static regex");
            re.is_match(s)
        }
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => s.split_once('/').is_some_and(|(ip, n)| {
            ip.parse::<std::net::IpAddr>().is_ok() && n.parse::<u8>().is_ok()
        }),
        "hostname" => {
            !s.is_empty()
                && crate::validation::names::dns1123_subdomain(&s.to_lowercase()).is_empty()
        }
        "email" => {
            let re = regex::Regex::new(r"^[^@\s]+@[^@\s]+$").expect("static regex");
            re.is_match(s)
        }
        "duration" => crate::validation::go_duration(s).is_some(),
        _ => true,
    }
}

/// Validates a value against a structural schema, appending field errors.
pub fn validate(schema: &Value, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let body = |p: &str| {
        if p.is_empty() {
            "body".to_string()
        } else {
            p.to_string()
        }
    };
    if v.is_null() {
        if flag(schema, "nullable") {
            return;
        }
        if let Some(t) = schema.get("type").and_then(Value::as_str) {
            errs.push(FieldError::typed(
                FieldErrorType::TypeInvalid,
                path,
                Some(Value::String("null".into())),
                format!("{} in body must be of type {t}: \"null\"", body(path)),
            ));
        }
        return;
    }
    if flag(schema, "x-kubernetes-int-or-string") {
        if !(type_ok("integer", v) || v.is_string()) {
            errs.push(FieldError::typed(
                FieldErrorType::TypeInvalid,
                path,
                Some(display_value(v)),
                format!(
                    "{} in body must be of type integer-or-string: \"{}\"",
                    body(path),
                    type_name(v)
                ),
            ));
            return;
        }
    } else if let Some(t) = schema.get("type").and_then(Value::as_str) {
        if !type_ok(t, v) {
            errs.push(FieldError::typed(
                FieldErrorType::TypeInvalid,
                path,
                Some(display_value(v)),
                format!(
                    "{} in body must be of type {t}: \"{}\"",
                    body(path),
                    type_name(v)
                ),
            ));
            return;
        }
    }
    if let Some(en) = schema.get("enum").and_then(Value::as_array) {
        if !en.contains(v) {
            let allowed: Vec<String> = en
                .iter()
                .map(|e| {
                    e.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| e.to_string())
                })
                .collect();
            let refs: Vec<&str> = allowed.iter().map(String::as_str).collect();
            errs.push(FieldError::not_supported(path, display_value(v), &refs));
        }
    }
    match v {
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(m) = schema.get("maxLength").and_then(Value::as_u64) {
                if len > m {
                    errs.push(FieldError::typed(
                        FieldErrorType::TooLong,
                        path,
                        None,
                        format!("may not be longer than {m}"),
                    ));
                }
            }
            if let Some(m) = schema.get("minLength").and_then(Value::as_u64) {
                if len < m {
                    errs.push(invalid(
                        path,
                        v,
                        format!("{} in body should be at least {m} chars long", body(path)),
                    ));
                }
            }
            if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
                match regex::Regex::new(p) {
                    Ok(re) if !re.is_match(s) => errs.push(invalid(
                        path,
                        v,
                        format!("{} in body should match '{p}'", body(path)),
                    )),
                    Ok(_) => {}
                    Err(e) => errs.push(FieldError::internal(
                        path,
                        format!("bad pattern {p:?}: {e}"),
                    )),
                }
            }
            if let Some(f) = schema.get("format").and_then(Value::as_str) {
                if !format_ok(f, s) {
                    errs.push(invalid(
                        path,
                        v,
                        format!("{} in body must be of type {f}: {s:?}", body(path)),
                    ));
                }
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if let Some(m) = schema.get("minimum").and_then(Value::as_f64) {
                let excl = flag(schema, "exclusiveMinimum");
                if (excl && x <= m) || (!excl && x < m) {
                    let rel = if excl {
                        "greater than"
                    } else {
                        "greater than or equal to"
                    };
                    errs.push(invalid(
                        path,
                        v,
                        format!("{} in body should be {rel} {}", body(path), num(m)),
                    ));
                }
            }
            if let Some(m) = schema.get("maximum").and_then(Value::as_f64) {
                let excl = flag(schema, "exclusiveMaximum");
                if (excl && x >= m) || (!excl && x > m) {
                    let rel = if excl {
                        "less than"
                    } else {
                        "less than or equal to"
                    };
                    errs.push(invalid(
                        path,
                        v,
                        format!("{} in body should be {rel} {}", body(path), num(m)),
                    ));
                }
            }
            if let Some(m) = schema.get("multipleOf").and_then(Value::as_f64) {
                if m != 0.0 && (x / m).fract() != 0.0 {
                    errs.push(invalid(
                        path,
                        v,
                        format!("{} in body should be a multiple of {}", body(path), num(m)),
                    ));
                }
            }
        }
        Value::Array(items) => {
            if let Some(m) = schema.get("maxItems").and_then(Value::as_u64) {
                if items.len() as u64 > m {
                    errs.push(FieldError::too_many(path, items.len(), m as usize));
                }
            }
            if let Some(m) = schema.get("minItems").and_then(Value::as_u64) {
                if (items.len() as u64) < m {
                    errs.push(invalid(
                        path,
                        v,
                        format!("{} in body should have at least {m} items", body(path)),
                    ));
                }
            }
            match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
                Some("set") => {
                    for (i, it) in items.iter().enumerate() {
                        if items[..i].contains(it) {
                            errs.push(FieldError::duplicate(
                                &index_path(path, i),
                                display_value(it),
                            ));
                        }
                    }
                }
                Some("map") => {
                    let keys: Vec<String> = schema
                        .get("x-kubernetes-list-map-keys")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(|k| k.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                    let key_of = |it: &Value| -> Value {
                        let mut m = Map::new();
                        for k in &keys {
                            m.insert(k.clone(), it.get(k).cloned().unwrap_or(Value::Null));
                        }
                        Value::Object(m)
                    };
                    for (i, it) in items.iter().enumerate() {
                        let k = key_of(it);
                        if items[..i].iter().any(|o| key_of(o) == k) {
                            errs.push(FieldError::duplicate(
                                &index_path(path, i),
                                Value::String(k.to_string()),
                            ));
                        }
                    }
                }
                _ => {}
            }
            if let Some(is) = schema.get("items") {
                for (i, it) in items.iter().enumerate() {
                    validate(is, it, &index_path(path, i), errs);
                }
            }
        }
        Value::Object(map) => {
            if let Some(req) = schema.get("required").and_then(Value::as_array) {
                for r in req.iter().filter_map(Value::as_str) {
                    if !map.contains_key(r) {
                        errs.push(FieldError::required(&child_path(path, r), ""));
                    }
                }
            }
            if let Some(m) = schema.get("maxProperties").and_then(Value::as_u64) {
                if map.len() as u64 > m {
                    errs.push(FieldError::too_many(path, map.len(), m as usize));
                }
            }
            if let Some(m) = schema.get("minProperties").and_then(Value::as_u64) {
                if (map.len() as u64) < m {
                    errs.push(invalid(
                        path,
                        v,
                        format!("{} in body should have at least {m} properties", body(path)),
                    ));
                }
            }
            let props = schema.get("properties").and_then(Value::as_object);
            let embedded = flag(schema, "x-kubernetes-embedded-resource");
            if embedded {
                for f in ["apiVersion", "kind"] {
                    if !map
                        .get(f)
                        .and_then(Value::as_str)
                        .is_some_and(|s| !s.is_empty())
                    {
                        errs.push(FieldError::required(
                            &child_path(path, f),
                            "must not be empty",
                        ));
                    }
                }
            }
            for (k, sub) in map {
                let p = child_path(path, k);
                if let Some(s) = props.and_then(|pr| pr.get(k)) {
                    validate(s, sub, &p, errs);
                } else if let Some(ap) =
                    schema.get("additionalProperties").filter(|a| a.is_object())
                {
                    validate(ap, sub, &p, errs);
                }
            }
        }
        _ => {}
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            validate(s, v, path, errs);
        }
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
        let ok = any.iter().any(|s| {
            let mut e = Vec::new();
            validate(s, v, path, &mut e);
            e.is_empty()
        });
        if !ok {
            errs.push(invalid(
                path,
                v,
                format!(
                    "{} in body must validate at least one schema (anyOf)",
                    body(path)
                ),
            ));
        }
    }
    if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
        let n = one
            .iter()
            .filter(|s| {
                let mut e = Vec::new();
                validate(s, v, path, &mut e);
                e.is_empty()
            })
            .count();
        if n != 1 {
            errs.push(invalid(
                path,
                v,
                format!(
                    "{} in body must validate one and only one schema (oneOf)",
                    body(path)
                ),
            ));
        }
    }
    if let Some(not) = schema.get("not") {
        let mut e = Vec::new();
        validate(not, v, path, &mut e);
        if e.is_empty() {
            errs.push(invalid(
                path,
                v,
                format!("{} in body must not validate the schema (not)", body(path)),
            ));
        }
    }
}

fn num(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        f.to_string()
    }
}

/// Checks that a CRD version's schema is structural and uses only what the real server
/// accepts, appending errors under `path` (`spec.versions[i].schema.openAPIV3Schema`).
pub fn check_structural(schema: &Value, path: &str, root: bool, errs: &mut Vec<FieldError>) {
    let Some(obj) = schema.as_object() else {
        errs.push(FieldError::invalid(
            path,
            display_value(schema),
            "must be an object",
        ));
        return;
    };
    let int_or_string = flag(schema, "x-kubernetes-int-or-string");
    let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
    let ty = obj.get("type").and_then(Value::as_str);
    if root && ty != Some("object") {
        errs.push(FieldError::invalid(
            &format!("{path}.type"),
            ty.unwrap_or(""),
            "must be object at the root",
        ));
    }
    if ty.is_none() && !int_or_string && !preserve {
        errs.push(FieldError::required(
            &format!("{path}.type"),
            "must not be empty for specified object fields",
        ));
    }
    if let Some(t) = ty {
        if !["object", "array", "string", "integer", "number", "boolean"].contains(&t) {
            errs.push(FieldError::not_supported(
                &format!("{path}.type"),
                t,
                &["array", "boolean", "integer", "number", "object", "string"],
            ));
        }
    }
    if obj.contains_key("properties")
        && obj
            .get("additionalProperties")
            .is_some_and(|a| a != &Value::Bool(false))
    {
        errs.push(FieldError::forbidden(
            &format!("{path}.additionalProperties"),
            "additionalProperties and properties are mutual exclusive",
        ));
    }
    if flag(schema, "uniqueItems") {
        errs.push(FieldError::forbidden(
            &format!("{path}.uniqueItems"),
            "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
        ));
    }
    if ty == Some("array") && !obj.contains_key("items") {
        errs.push(FieldError::required(
            &format!("{path}.items"),
            "must be specified",
        ));
    }
    if let Some(p) = obj.get("pattern").and_then(Value::as_str) {
        if regex::Regex::new(p).is_err() {
            errs.push(FieldError::invalid(
                &format!("{path}.pattern"),
                p,
                "must be a valid regular expression",
            ));
        }
    }
    if let Some(lt) = obj.get("x-kubernetes-list-type").and_then(Value::as_str) {
        if !["atomic", "set", "map"].contains(&lt) {
            errs.push(FieldError::not_supported(
                &format!("{path}.x-kubernetes-list-type"),
                lt,
                &["atomic", "set", "map"],
            ));
        }
        if lt == "map" {
            let keys = obj
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array);
            if keys.is_none_or(|k| k.is_empty()) {
                errs.push(FieldError::required(
                    &format!("{path}.x-kubernetes-list-map-keys"),
                    "must not be empty if x-kubernetes-list-type is map",
                ));
            }
        }
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, sub) in props {
            let p = format!("{path}.properties[{k}]");
            if root && k == "metadata" {
                // Only name and generateName may be constrained at the root.
                let allowed = |m: &Map<String, Value>| {
                    m.keys()
                        .all(|key| key == "type" || key == "properties" || key == "description")
                        && m.get("properties")
                            .and_then(Value::as_object)
                            .is_none_or(|pp| pp.keys().all(|n| n == "name" || n == "generateName"))
                };
                if !sub.as_object().is_some_and(allowed) {
                    errs.push(FieldError::forbidden(
                        &p,
                        "must not specify anything other than name and generateName, but metadata is implicitly specified",
                    ));
                }
                continue;
            }
            check_structural(sub, &p, false, errs);
        }
    }
    if let Some(items) = obj.get("items") {
        check_structural(items, &format!("{path}.items"), false, errs);
    }
    if let Some(ap) = obj.get("additionalProperties").filter(|a| a.is_object()) {
        check_structural(ap, &format!("{path}.additionalProperties"), false, errs);
    }
    if let Some(d) = obj.get("default") {
        let mut dv = d.clone();
        let mut unknown = Vec::new();
        prune(schema, &mut dv, "", false, &mut unknown);
        if !unknown.is_empty() {
            errs.push(FieldError::invalid(
                &format!("{path}.default"),
                display_value(d),
                format!("must not have unknown fields: {}", unknown.join(", ")),
            ));
        }
        let mut de = Vec::new();
        validate(schema, &dv, &format!("{path}.default"), &mut de);
        errs.extend(de);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
                "replicas": {"type": "integer", "minimum": 1, "default": 1},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "when": {"type": "string", "format": "date-time"},
                "port": {"x-kubernetes-int-or-string": true},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2, "x-kubernetes-list-type": "set"}
            }}
        }})
    }

    #[test]
    fn prunes_unknown_and_defaults() {
        let mut o = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a", "bogus": 1},
            "spec": {"name": "abc", "extra": 1, "free": {"any": {"x": 1}}, "replicas": null}});
        let mut unknown = Vec::new();
        prune(&schema(), &mut o, "", true, &mut unknown);
        apply_defaults(&schema(), &mut o);
        assert_eq!(
            unknown,
            vec!["metadata.bogus".to_string(), "spec.extra".to_string()]
        );
        assert_eq!(o["spec"]["replicas"], 1);
        assert_eq!(o["spec"]["free"]["any"]["x"], 1);
    }

    #[test]
    fn validates_like_the_server() {
        let o = json!({"spec": {"name": "ABCDEFG", "replicas": 0, "mode": "c", "when": "yesterday",
            "port": 1.5, "tags": ["a", "a", "b"]}});
        let mut errs = Vec::new();
        validate(&schema(), &o, "", &mut errs);
        let msgs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(
            msgs.contains(&"spec.name: Too long: may not be longer than 5".to_string()),
            "{msgs:?}"
        );
        assert!(msgs.contains(
            &"spec.name: Invalid value: \"ABCDEFG\": spec.name in body should match '^[a-z]+$'"
                .to_string()
        ));
        assert!(msgs.contains(&"spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1".to_string()));
        assert!(msgs.contains(
            &"spec.mode: Unsupported value: \"c\": supported values: \"a\", \"b\"".to_string()
        ));
        assert!(msgs.contains(&"spec.when: Invalid value: \"yesterday\": spec.when in body must be of type date-time: \"yesterday\"".to_string()));
        assert!(msgs.contains(&"spec.tags: Too many: 3: must have at most 2 items".to_string()));
        assert!(msgs.contains(&"spec.tags[1]: Duplicate value: \"a\"".to_string()));
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("spec.port: Invalid value: 1.5")),
            "{msgs:?}"
        );
        let mut e2 = Vec::new();
        validate(&schema(), &json!({"spec": {}}), "", &mut e2);
        assert_eq!(e2[0].to_string(), "spec.name: Required value");
    }

    #[test]
    fn structural_checks() {
        let mut errs = Vec::new();
        check_structural(
            &json!({"type": "object", "properties": {"spec": {"properties": {}}, "metadata": {"type": "object", "properties": {"labels": {"type": "object"}}}}}),
            "s",
            true,
            &mut errs,
        );
        let msgs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("s.properties[spec].type: Required value")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("s.properties[metadata]: Forbidden")),
            "{msgs:?}"
        );
    }
}
