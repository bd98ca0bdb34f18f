//! `x-kubernetes-validations` (CEL) rules, evaluated with `kube-cel` (the Kubernetes CEL
//! libraries on the `cel` crate).
//!
//! Rules are compiled when the CRD is written: a rule or `messageExpression` that does not
//! compile makes the CRD invalid, as on the real server. On object writes every rule runs
//! with `self` bound to its node (and `oldSelf` on updates, so transition rules run only
//! when there is an old object). A rule kube-cel cannot evaluate (an unsupported macro, a
//! runtime error) fails the write with a message naming the rule: it never passes silently.
//!
//! Not done: the real server's static cost estimation, which refuses CRDs whose rules could
//! exceed the cost budget on unbounded lists and strings.

use crate::error::{FieldError, FieldErrorType};
use kube_cel::{compile_schema, CompiledSchema, ErrorKind, RootContext, Validator};
use serde_json::Value;

thread_local! {
    static VALIDATOR: Validator = Validator::new();
}

fn walk_errors(c: &CompiledSchema, path: &str, out: &mut Vec<FieldError>) {
    for (i, r) in c.validations.iter().enumerate() {
        if let Err(e) = r {
            out.push(FieldError::invalid(
                &format!("{path}.x-kubernetes-validations[{i}].rule"),
                "rule",
                format!("compilation failed: {e}"),
            ));
        }
    }
    for (k, sub) in &c.properties {
        walk_errors(sub, &format!("{path}.properties[{k}]"), out);
    }
    if let Some(i) = &c.items {
        walk_errors(i, &format!("{path}.items"), out);
    }
    if let Some(a) = &c.additional_properties {
        walk_errors(a, &format!("{path}.additionalProperties"), out);
    }
    for (n, list) in [
        ("allOf", &c.all_of),
        ("oneOf", &c.one_of),
        ("anyOf", &c.any_of),
    ] {
        for (i, sub) in list.iter().enumerate() {
            walk_errors(sub, &format!("{path}.{n}[{i}]"), out);
        }
    }
}

/// Compiles every rule of a schema; returns the CRD field errors of those that fail.
pub fn check_rules(schema: &Value, path: &str) -> Vec<FieldError> {
    let compiled = compile_schema(schema);
    let mut out = Vec::new();
    walk_errors(&compiled, path, &mut out);
    out
}

fn schema_type_at(schema: &Value, path: &str) -> String {
    // Walk the dotted path (ignoring list indices and map keys we cannot resolve).
    let mut cur = schema;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let name = part.split('[').next().unwrap_or(part);
        let next = cur.pointer(&format!(
            "/properties/{}",
            name.replace('~', "~0").replace('/', "~1")
        ));
        match next {
            Some(n) => {
                cur = n;
                if part.contains('[') {
                    if let Some(i) = cur.get("items").or_else(|| cur.get("additionalProperties")) {
                        cur = i;
                    }
                }
            }
            None => return "object".to_string(),
        }
    }
    cur.get("type")
        .and_then(Value::as_str)
        .unwrap_or("object")
        .to_string()
}

/// Runs the CEL rules of a schema against an object (`old` on update).
pub fn evaluate(
    schema: &Value,
    obj: &Value,
    old: Option<&Value>,
    root: &RootContext,
) -> Vec<FieldError> {
    let res = VALIDATOR.with(|v| v.validate_with_context(schema, obj, old, Some(root)));
    let Err(errs) = res else { return Vec::new() };
    errs.iter()
        .map(|e| {
            let path = e.field_path.trim_start_matches('.').to_string();
            let ty = schema_type_at(schema, &path);
            match e.kind {
                ErrorKind::ValidationFailure | ErrorKind::InvalidResult => {
                    let kind = FieldErrorType::from_rule_reason(e.reason.as_deref().unwrap_or(""));
                    match kind {
                        FieldErrorType::Required => FieldError::required(&path, e.message.clone()),
                        FieldErrorType::Forbidden => {
                            FieldError::forbidden(&path, e.message.clone())
                        }
                        FieldErrorType::Duplicate => FieldError::typed(
                            FieldErrorType::Duplicate,
                            &path,
                            Some(Value::String(ty)),
                            e.message.clone(),
                        ),
                        _ => FieldError::invalid(&path, Value::String(ty), e.message.clone()),
                    }
                }
                _ => FieldError::invalid(
                    &path,
                    Value::String(ty),
                    format!(
                        "kube-sim could not evaluate rule {:?}: {}",
                        e.rule, e.message
                    ),
                ),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn root() -> RootContext {
        RootContext {
            api_version: "t.io/v1".into(),
            api_group: "t.io".into(),
            kind: "T".into(),
        }
    }

    #[test]
    fn rules_and_transition_rules() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}, "name": {"type": "string",
                "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "name is immutable"}]}},
            "x-kubernetes-validations": [{"rule": "self.a <= self.b", "message": "a must not exceed b"}]}}});
        let ok = json!({"spec": {"a": 1, "b": 2, "name": "x"}});
        assert!(evaluate(&schema, &ok, None, &root()).is_empty());
        let bad = json!({"spec": {"a": 3, "b": 2, "name": "x"}});
        let e = evaluate(&schema, &bad, None, &root());
        assert_eq!(
            e[0].to_string(),
            "spec: Invalid value: \"object\": a must not exceed b"
        );
        let renamed = json!({"spec": {"a": 1, "b": 2, "name": "y"}});
        let e = evaluate(&schema, &renamed, Some(&ok), &root());
        assert_eq!(
            e[0].to_string(),
            "spec.name: Invalid value: \"string\": name is immutable"
        );
    }

    #[test]
    fn bad_rules_are_reported() {
        let schema = json!({"type": "object", "x-kubernetes-validations": [{"rule": "self.a >"}]});
        assert_eq!(check_rules(&schema, "s").len(), 1);
    }
}
