//! `dprepo-controller validate`: checks manifests before `kubectl apply`, against the same
//! CRDs the controller installs, the way the API server checks a create, and stricter:
//!
//! 1. each YAML document is found its CRD by `apiVersion` and `kind`;
//! 2. the CRD's schema is applied with [`dprepo_k8s_schema::admit`]: unknown fields are
//!    **errors** here (the server drops them without a word, which is how a misspelt field
//!    silently does nothing), then metadata, types, enums, patterns, bounds, lengths,
//!    required fields, defaults, and CEL rules evaluated for real. Rules comparing with
//!    `oldSelf` (immutability) only apply to updates and are not checked;
//! 3. the admitted object is decoded into the controller's types and written back: a field
//!    the types would lose, or a value they cannot hold, is an error;
//! 4. texts the schema leaves free but KubeBlocks interprets are read: Go durations,
//!    retention periods, the restore time.
//!
//! Every problem names its field by JSON path, as the server does (`spec.schedules[0].name`).
//! A namespaced object without a namespace is checked as if in `default` (kubectl would
//! give it its context's namespace).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use dprepo_k8s_schema::{admit, Target};
use serde::Serialize;
use serde_json::Value;

use crate::api::Object;

/// One problem of a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// JSON path of the field (`spec.backupMethods[0].name`), empty for the document.
    pub path: String,
    /// What kind of problem: the server's cause type (`FieldValueInvalid`,
    /// `FieldValueRequired`, ...), or `FieldValueUnknown`, `NotServed`, `NotYaml`,
    /// `Undecodable`, `Dropped`, `Uninterpretable`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The message, worded as the server words it where the server has the check.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// The verdict on one document.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The file (`-` for standard input).
    pub file: String,
    /// The document's position in the file, from 1.
    pub document: usize,
    /// `apiVersion`, when the document has one.
    pub api_version: Option<String>,
    /// `kind`, when the document has one.
    pub kind: Option<String>,
    /// `metadata.namespace`, when set.
    pub namespace: Option<String>,
    /// `metadata.name`, when set.
    pub name: Option<String>,
    /// True when the kind is not one of ours and `skip_other_kinds` was asked for.
    pub skipped: bool,
    /// Every problem found; empty means valid.
    pub problems: Vec<Problem>,
}

impl Report {
    /// Whether the document passed (or was skipped).
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// `Kind namespace/name` (or what is known of it).
    pub fn title(&self) -> String {
        let kind = self.kind.as_deref().unwrap_or("(no kind)");
        let name = self.name.as_deref().unwrap_or("(no name)");
        match &self.namespace {
            Some(ns) => format!("{kind} {ns}/{name}"),
            None => format!("{kind} {name}"),
        }
    }
}

/// How `validate` treats documents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Report documents of kinds the controller does not serve (a Secret beside a
    /// BackupRepo) as skipped instead of as errors.
    pub skip_other_kinds: bool,
}

struct Served {
    target: Target,
    schema: Value,
}

/// The served kinds by `apiVersion/kind`, with their schemas.
fn served() -> &'static BTreeMap<String, Served> {
    static SERVED: OnceLock<BTreeMap<String, Served>> = OnceLock::new();
    SERVED.get_or_init(|| {
        crate::crd::all()
            .into_iter()
            .flat_map(|crd| {
                let group = crd.spec.group.clone();
                let kind = crd.spec.names.kind.clone();
                let namespaced = crd.spec.scope == "Namespaced";
                crd.spec.versions.into_iter().map(move |v| {
                    let api_version = format!("{group}/{}", v.name);
                    let schema = v
                        .schema
                        .and_then(|s| s.open_api_v3_schema)
                        .map(|s| serde_json::to_value(s).expect("a schema serializes"))
                        .unwrap_or(Value::Null);
                    (
                        format!("{api_version}/{kind}"),
                        Served {
                            target: Target {
                                api_version,
                                kind: kind.clone(),
                                namespaced,
                            },
                            schema,
                        },
                    )
                })
            })
            .collect()
    })
}

fn problem(path: &str, kind: &str, message: impl Into<String>) -> Problem {
    Problem {
        path: path.to_string(),
        kind: kind.to_string(),
        message: message.into(),
    }
}

/// Checks every document of one file's text.
pub fn validate_text(file: &str, text: &str, options: Options) -> Vec<Report> {
    use serde::Deserialize;
    let mut reports = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        match Value::deserialize(doc) {
            // An empty document (`---` at the end, a comment-only file) is not an object.
            Ok(Value::Null) => {}
            Ok(value) => reports.push(validate_document(file, document, &value, options)),
            Err(e) => {
                reports.push(Report {
                    file: file.to_string(),
                    document,
                    api_version: None,
                    kind: None,
                    namespace: None,
                    name: None,
                    skipped: false,
                    problems: vec![problem("", "NotYaml", format!("not valid YAML: {e}"))],
                });
                // The YAML stream cannot be resumed after a syntax error.
                break;
            }
        }
    }
    reports
}

/// Checks one document.
pub fn validate_document(file: &str, document: usize, doc: &Value, options: Options) -> Report {
    let text = |ptr: &str| doc.pointer(ptr).and_then(Value::as_str).map(str::to_string);
    let mut report = Report {
        file: file.to_string(),
        document,
        api_version: text("/apiVersion"),
        kind: text("/kind"),
        namespace: text("/metadata/namespace"),
        name: text("/metadata/name"),
        skipped: false,
        problems: Vec::new(),
    };
    if !doc.is_object() {
        report
            .problems
            .push(problem("", "NotYaml", "the document is not a YAML mapping"));
        return report;
    }
    let key = format!(
        "{}/{}",
        report.api_version.as_deref().unwrap_or_default(),
        report.kind.as_deref().unwrap_or_default()
    );
    let Some(served) = served().get(&key) else {
        if options.skip_other_kinds {
            report.skipped = true;
        } else {
            let kinds: Vec<&str> = served().keys().map(String::as_str).collect();
            report.problems.push(problem(
                "",
                "NotServed",
                format!(
                    "{:?} {:?} is not a kind dprepo-controller serves (it serves {}); \
                     use --skip-other-kinds to let such documents pass unchecked",
                    report.api_version.as_deref().unwrap_or_default(),
                    report.kind.as_deref().unwrap_or_default(),
                    kinds.join(", ")
                ),
            ));
        }
        return report;
    };
    // kubectl fills in the namespace of its context for a namespaced object that names
    // none; any valid namespace stands in for it here.
    let mut doc = doc.clone();
    if served.target.namespaced && report.namespace.is_none() {
        if let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("namespace".into(), Value::String("default".into()));
        }
    }
    report.problems = check(served, &doc);
    report
}

fn check(served: &Served, doc: &Value) -> Vec<Problem> {
    let admission = admit(&served.schema, doc, None, &served.target);
    let mut problems: Vec<Problem> = admission
        .unknown_fields
        .iter()
        .map(|p| {
            problem(
                p,
                "FieldValueUnknown",
                "unknown field (the API server would drop it without a word)",
            )
        })
        .collect();
    problems.extend(
        admission
            .errors
            .iter()
            .map(|e| problem(&e.field, e.kind.cause(), e.body())),
    );
    if !problems.is_empty() {
        return problems;
    }
    // What the server would store, decoded as the controller decodes it.
    let object = match Object::from_value(admission.object.clone()) {
        Ok(o) => o,
        Err(crate::api::DecodeError::Invalid { path, message }) => {
            let path = path.trim_start_matches('.').to_string();
            return vec![problem(&path, "Undecodable", message)];
        }
        Err(e) => return vec![problem("", "Undecodable", e.to_string())],
    };
    match object.to_value() {
        Ok(back) => {
            for (path, value) in lost_leaves(&admission.object, &back) {
                problems.push(problem(
                    &path,
                    "Dropped",
                    format!(
                        "{value} is kept by the API server but not by dprepo-controller's \
                         types, so the controller would drop it when it writes the object"
                    ),
                ));
            }
        }
        Err(e) => problems.push(problem("", "Undecodable", e.to_string())),
    }
    for (path, message) in object.interpretation_problems() {
        problems.push(problem(&path, "Uninterpretable", message));
    }
    problems
}

/// Leaves (scalars, empty containers) of `before` that `after` does not have, by path;
/// `null`s count as absent.
fn lost_leaves(before: &Value, after: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    walk_lost(before, Some(after), String::new(), &mut out);
    out
}

fn walk_lost(before: &Value, after: Option<&Value>, path: String, out: &mut Vec<(String, Value)>) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match before {
        Value::Null => {}
        Value::Object(o) if !o.is_empty() => {
            for (k, v) in o {
                walk_lost(v, after.and_then(|a| a.get(k)), join(k), out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, v) in a.iter().enumerate() {
                walk_lost(v, after.and_then(|x| x.get(i)), format!("{path}[{i}]"), out);
            }
        }
        leaf => {
            if after.is_none_or(Value::is_null) {
                out.push((path, leaf.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lost_leaves_finds_dropped_fields_only() {
        let before = json!({"a": {"b": 1, "c": [1, {"d": "x"}]}, "n": null, "e": {}});
        let after = json!({"a": {"b": 2, "c": [1, {}]}, "e": {}});
        let lost = lost_leaves(&before, &after);
        assert_eq!(lost, vec![("a.c[1].d".to_string(), json!("x"))]);
    }

    #[test]
    fn every_served_kind_has_a_schema() {
        assert_eq!(served().len(), 12);
        for s in served().values() {
            assert_eq!(s.schema["type"], "object", "{}", s.target.kind);
        }
    }
}
