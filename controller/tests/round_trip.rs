//! Fixtures in `tests/fixtures/` (one full document per kind, status included, plus the
//! seed document's KubeBlocks fragment) decode into the API types and come back leaf for
//! leaf: no field lost, none added, `useKopia: false` kept, Go durations as written.
//!
//! Nulls: the fixtures hold `null`s where Go writes them (a Restore action's zero times) or
//! where a user may write them. They must decode; on the way back an unset field is left
//! out, which is what the API server stores anyway (it prunes `null` from every field that
//! is not `nullable`, and none of these is). So the comparison drops `null` members first.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use dprepo_controller::api::Object;
use serde_json::Value;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Every document of every fixture file, with its file name.
fn fixtures() -> Vec<(String, Value)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .expect("tests/fixtures exists")
        .map(|e| e.expect("readable").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    let mut docs = Vec::new();
    for path in paths {
        docs.extend(load(&path));
    }
    docs
}

fn load(path: &Path) -> Vec<(String, Value)> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(path).unwrap();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let v = Value::deserialize(doc).unwrap_or_else(|e| panic!("{name}: not YAML: {e}"));
            (name.clone(), v)
        })
        .collect()
}

fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// Every leaf (scalar, empty object, empty array) by its path.
fn leaves(v: &Value, path: String, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(o) if !o.is_empty() => {
            for (k, v) in o {
                leaves(v, format!("{path}.{k}"), out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, v) in a.iter().enumerate() {
                leaves(v, format!("{path}[{i}]"), out);
            }
        }
        other => {
            out.insert(path, other.clone());
        }
    }
}

fn leaf_diff(input: &Value, output: &Value) -> Vec<String> {
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    leaves(input, String::new(), &mut a);
    leaves(output, String::new(), &mut b);
    let mut diff = Vec::new();
    for (p, v) in &a {
        match b.get(p) {
            None => diff.push(format!("lost {p} = {v}")),
            Some(w) if w != v => diff.push(format!("changed {p}: {v} -> {w}")),
            _ => {}
        }
    }
    for (p, w) in &b {
        if !a.contains_key(p) {
            diff.push(format!("added {p} = {w}"));
        }
    }
    diff
}

#[test]
fn every_fixture_round_trips_leaf_for_leaf() {
    let docs = fixtures();
    assert!(docs.len() >= 9, "fixtures missing: {}", docs.len());
    for (file, doc) in docs {
        let obj = Object::from_value(doc.clone()).unwrap_or_else(|e| panic!("{file}: {e}"));
        let back = obj.to_value().unwrap();
        let diff = leaf_diff(&strip_nulls(&doc), &back);
        assert!(diff.is_empty(), "{file}:\n  {}", diff.join("\n  "));
        // And a second trip changes nothing.
        let again = Object::from_value(back.clone())
            .unwrap()
            .to_value()
            .unwrap();
        assert_eq!(back, again, "{file}: second round trip differs");
    }
}

#[test]
fn use_kopia_false_and_go_durations_survive() {
    let docs = fixtures();
    let policy = docs
        .iter()
        .find(|(f, _)| f == "backuppolicy.yaml")
        .unwrap()
        .1
        .clone();
    let back = Object::from_value(policy).unwrap().to_value().unwrap();
    assert_eq!(back["spec"]["useKopia"], Value::Bool(false));

    let backup = docs
        .iter()
        .find(|(f, _)| f == "backup.yaml")
        .unwrap()
        .1
        .clone();
    let Object::Backup(b) = Object::from_value(backup).unwrap() else {
        panic!("not a Backup")
    };
    let d = b.status.as_ref().unwrap().duration.as_ref().unwrap();
    assert_eq!(d.as_str(), "1m30s");
    assert_eq!(d.parse().unwrap().to_std().unwrap().as_secs(), 90);
    let retention = b.spec.retention_period.as_ref().unwrap();
    assert_eq!(retention.minutes().unwrap(), 7 * 24 * 60);
}

#[test]
fn every_kind_has_a_fixture() {
    let kinds: BTreeSet<String> = fixtures()
        .iter()
        .map(|(_, d)| d["kind"].as_str().unwrap().to_string())
        .collect();
    for crd in dprepo_controller::crd::all() {
        assert!(
            kinds.contains(&crd.spec.names.kind),
            "no fixture of {}",
            crd.spec.names.kind
        );
    }
}

/// Paths below which the fixtures need not set every field: Kubernetes' own types
/// (their fields are k8s-openapi's business), the open OpenAPI schemas, and maps.
const NOT_DESCENDED: &[&str] = &[
    ".metadata",
    "openAPIV3Schema",
    ".env",
    ".envFrom",
    ".conditions",
    ".credential",
    ".generatedCSIDriverSecret",
    ".passPhraseSecretKeyRef",
    ".matchLabels",
    ".matchExpressions",
    ".fallbackLabelSelector",
    ".selector",
    ".labelSelector",
    ".volumeMounts",
    "runtimeSettings.resources",
    ".containerResources",
    ".objectRef",
    ".volumeClaimSpec",
    ".tolerations",
    ".affinity",
    ".topologySpreadConstraints",
    ".execAction.target.podSelector",
];

/// Places where a type is used again: the fixtures set its fields once, at the first place
/// (the second of each pair), and the check counts them for the others.
const SAME_TYPE_AS: &[(&str, &str, &str)] = &[
    (
        "ActionSet",
        ".spec.backup.postBackup[]",
        ".spec.backup.preBackup[]",
    ),
    (
        "ActionSet",
        ".spec.restore.postReady[]",
        ".spec.backup.preBackup[]",
    ),
    ("BackupPolicy", ".spec.targets[]", ".spec.target"),
    (
        "BackupPolicy",
        ".spec.backupMethods[].targets[]",
        ".spec.target",
    ),
    (
        "BackupPolicy",
        ".spec.backupMethods[].target",
        ".spec.target",
    ),
    ("Backup", ".status.targets[]", ".status.target"),
    ("Backup", ".status.backupMethod.targets[]", ".status.target"),
    ("Backup", ".status.backupMethod.target", ".status.target"),
    (
        "Restore",
        ".status.actions.postReady[]",
        ".status.actions.prepareData[]",
    ),
    (
        "Restore",
        ".spec.prepareDataConfig.volumeClaimsTemplate.templates[]",
        ".spec.prepareDataConfig.volumeClaims[]",
    ),
    (
        "Restore",
        ".spec.readyConfig.jobAction.requiredPolicyForAllPodSelection",
        ".spec.prepareDataConfig.requiredPolicyForAllPodSelection",
    ),
];

/// `path` with a repeated use of a type written as its first use.
fn canonical(kind: &str, path: &str) -> String {
    for (k, again, first) in SAME_TYPE_AS {
        if *k == kind {
            if let Some(rest) = path.strip_prefix(again) {
                if rest.is_empty() || rest.starts_with('.') || rest.starts_with('[') {
                    return format!("{first}{rest}");
                }
            }
        }
    }
    path.to_string()
}

fn schema_paths(schema: &Value, path: String, out: &mut BTreeSet<String>) {
    out.insert(path.clone());
    if NOT_DESCENDED.iter().any(|s| path.ends_with(s)) && !path.is_empty() {
        return;
    }
    if let Some(Value::Object(props)) = schema.get("properties") {
        for (k, sub) in props {
            schema_paths(sub, format!("{path}.{k}"), out);
        }
    }
    if let Some(items) = schema.get("items") {
        schema_paths(items, format!("{path}[]"), out);
    }
}

fn doc_paths(v: &Value, path: String, out: &mut BTreeSet<String>) {
    out.insert(path.clone());
    match v {
        Value::Object(o) => {
            for (k, v) in o {
                doc_paths(v, format!("{path}.{k}"), out);
            }
        }
        Value::Array(a) => {
            for v in a {
                doc_paths(v, format!("{path}[]"), out);
            }
        }
        _ => {}
    }
}

/// "One full document per kind": every field the CRD declares (down to Kubernetes' own
/// types) appears in some fixture of its kind.
#[test]
fn fixtures_set_every_field() {
    let docs = fixtures();
    let mut missing = Vec::new();
    for crd in dprepo_controller::crd::all() {
        let kind = &crd.spec.names.kind;
        let schema = serde_json::to_value(
            &crd.spec.versions[0]
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema,
        )
        .unwrap();
        let mut wanted = BTreeSet::new();
        schema_paths(&schema, String::new(), &mut wanted);
        let mut present = BTreeSet::new();
        for (_, d) in docs.iter().filter(|(_, d)| d["kind"] == kind.as_str()) {
            doc_paths(d, String::new(), &mut present);
        }
        let present: BTreeSet<String> = present.iter().map(|p| canonical(kind, p)).collect();
        for p in &wanted {
            if !present.contains(&canonical(kind, p)) {
                missing.push(format!("{kind} {p}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "fields no fixture sets:\n  {}",
        missing.join("\n  ")
    );
}
