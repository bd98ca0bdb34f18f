//! The seed document's simplified API (`kubeblocks.io/v1alpha1`): its four YAML documents
//! pass `validate` as written, and every mistake a user can make in them is reported at
//! its field: misspelt fields (the types refuse unknown fields), values outside the
//! enums, storage providers dprepo does not ship, times that are not times.

use dprepo_controller::api::{seed, Object};
use dprepo_controller::validate::{validate_text, Options, Problem};

const DOC: &str = include_str!("fixtures/seed-design-doc.yaml");

fn problems(yaml: &str) -> Vec<Problem> {
    let reports = validate_text("test.yaml", yaml, Options::default());
    assert_eq!(reports.len(), 1, "{reports:?}");
    reports.into_iter().next().unwrap().problems
}

/// The document's `n`th YAML document (from 0), with `from` replaced by `to`.
fn doc_with(n: usize, from: &str, to: &str) -> String {
    let d = DOC.split("\n---\n").nth(n + 1).unwrap();
    assert!(d.contains(from), "{from:?} not in document {n}");
    d.replacen(from, to, 1)
}

fn only(yaml: &str, path: &str, kind: &str, text: &str) {
    let ps = problems(yaml);
    assert_eq!(ps.len(), 1, "expected one problem at {path}, got {ps:#?}");
    assert_eq!(ps[0].path, path, "{:?}", ps[0]);
    assert_eq!(ps[0].kind, kind, "{:?}", ps[0]);
    assert!(ps[0].to_string().contains(text), "{} lacks {text:?}", ps[0]);
}

#[test]
fn the_four_documents_are_valid_and_decode_into_the_seed_kinds() {
    let reports = validate_text("doc.yaml", DOC, Options::default());
    let kinds: Vec<(String, bool)> = reports
        .iter()
        .map(|r| (r.kind.clone().unwrap_or_default(), r.is_ok()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("BackupPolicy".into(), true),
            ("BackupSchedule".into(), true),
            ("Backup".into(), true),
            ("Restore".into(), true)
        ],
        "{reports:#?}"
    );
    use serde::Deserialize;
    let objects: Vec<Object> = serde_yaml::Deserializer::from_str(DOC)
        .filter_map(|d| {
            let v = serde_json::Value::deserialize(d).unwrap();
            (!v.is_null()).then(|| Object::from_value(v).unwrap())
        })
        .collect();
    let Object::SeedBackupPolicy(p) = &objects[0] else {
        panic!("{:?}", objects[0])
    };
    assert_eq!(p.spec.cluster_ref.name, "mysql-cluster");
    assert_eq!(p.spec.method, seed::backuppolicy::BackupKind::Physical);
    assert_eq!(p.spec.storage.secret_ref.as_deref(), Some("s3-credentials"));
    let Object::SeedBackup(b) = &objects[2] else {
        panic!("{:?}", objects[2])
    };
    assert_eq!(b.status.as_ref().unwrap().size.as_deref(), Some("5GiB"));
    let Object::SeedRestore(r) = &objects[3] else {
        panic!("{:?}", objects[3])
    };
    assert_eq!(
        r.spec.conflict_policy,
        Some(seed::restore::ConflictPolicy::Replace)
    );
    // The dataprotection kinds of the same names still decode as theirs.
    let dp = Object::from_value(serde_json::json!({
        "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "Backup",
        "metadata": {"name": "b"},
        "spec": {"backupPolicyName": "p", "backupMethod": "m", "deletionPolicy": "Delete"},
    }))
    .unwrap();
    assert!(matches!(dp, Object::Backup(_)));
}

#[test]
fn a_misspelt_field_is_an_error_at_its_path() {
    only(
        &doc_with(0, "maxRetentionDays", "maxRetentionDay"),
        "spec.retention.maxRetentionDay",
        "FieldValueUnknown",
        "unknown field",
    );
    // A misspelt required field: both the unknown name and the missing one.
    let ps = problems(&doc_with(3, "targetTime", "target"));
    let found: Vec<(&str, &str)> = ps
        .iter()
        .map(|p| (p.path.as_str(), p.kind.as_str()))
        .collect();
    assert_eq!(
        found,
        vec![
            ("spec.pitr.target", "FieldValueUnknown"),
            ("spec.pitr.targetTime", "FieldValueRequired")
        ]
    );
    // Decoding alone refuses unknown fields too (deny_unknown_fields).
    let e = serde_json::from_value::<seed::BackupPolicy>(serde_json::json!({
        "apiVersion": "kubeblocks.io/v1alpha1", "kind": "BackupPolicy", "metadata": {"name": "p"},
        "spec": {"clusterRef": {"name": "c"}, "method": "physical", "storage": {"bucket": "b", "secretref": "s"}},
    }))
    .unwrap_err();
    assert!(e.to_string().contains("unknown field `secretref`"), "{e}");
}

#[test]
fn values_outside_the_enums_are_errors() {
    only(
        &doc_with(0, "method: physical", "method: incremental"),
        "spec.method",
        "FieldValueNotSupported",
        "\"incremental\"",
    );
    only(
        &doc_with(3, "conflictPolicy: Replace", "conflictPolicy: Merge"),
        "spec.conflictPolicy",
        "FieldValueNotSupported",
        "\"Merge\"",
    );
    only(
        &doc_with(
            1,
            "successfulJobsHistoryLimit: 5",
            "successfulJobsHistoryLimit: 0",
        ),
        "spec.successfulJobsHistoryLimit",
        "FieldValueInvalid",
        "greater than or equal to 1",
    );
}

#[test]
fn unknown_providers_and_bad_times_are_reported() {
    only(
        &doc_with(0, "provider: s3", "provider: ftp"),
        "spec.storage.provider",
        "Uninterpretable",
        "\"ftp\" is not a storage provider dprepo ships (one of s3, minio",
    );
    only(
        &doc_with(2, "bucket: temporary-bucket", "provider: dropbox"),
        "spec.storage.provider",
        "Uninterpretable",
        "\"dropbox\"",
    );
    only(
        &doc_with(3, "2023-10-01T02:10:00Z", "yesterday"),
        "spec.pitr.targetTime",
        "Uninterpretable",
        "\"yesterday\" is not a valid UTC time",
    );
}
