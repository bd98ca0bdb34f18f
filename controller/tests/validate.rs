//! `dprepo-controller validate`: every fixture passes; each kind of error is reported with
//! the exact JSON path of the field; the binary's output, `--json`, stdin and exit codes.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use dprepo_controller::validate::{validate_text, Options, Problem};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixture_dir().join(name)).unwrap()
}

/// The problems of a single-document text.
fn problems(yaml: &str) -> Vec<Problem> {
    let reports = validate_text("test.yaml", yaml, Options::default());
    assert_eq!(reports.len(), 1, "{reports:?}");
    reports.into_iter().next().unwrap().problems
}

/// Asserts that exactly one problem is reported, at `path`, of `kind`, containing `text`;
/// returns its rendered line.
fn only(yaml: &str, path: &str, kind: &str, text: &str) -> String {
    let ps = problems(yaml);
    assert_eq!(ps.len(), 1, "expected one problem at {path}, got {ps:#?}");
    let p = &ps[0];
    assert_eq!(p.path, path, "{p:?}");
    assert_eq!(p.kind, kind, "{p:?}");
    let line = p.to_string();
    if !path.is_empty() {
        assert!(line.starts_with(&format!("{path}: ")), "{line}");
    }
    assert!(line.contains(text), "{line:?} lacks {text:?}");
    line
}

const REPO: &str = r#"
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: BackupRepo
metadata:
  name: repo
spec:
  storageProviderRef: s3
  pvReclaimPolicy: Retain
"#;

#[test]
fn every_fixture_is_valid() {
    let mut n = 0;
    for entry in std::fs::read_dir(fixture_dir()).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for r in validate_text(&path.display().to_string(), &text, Options::default()) {
            assert!(r.is_ok(), "{} #{}: {:#?}", r.file, r.document, r.problems);
            n += 1;
        }
    }
    assert!(n >= 10, "{n} documents");
}

#[test]
fn a_minimal_document_is_valid_and_defaulted_documents_decode() {
    assert_eq!(problems(REPO), vec![]);
}

#[test]
fn unknown_field_is_an_error() {
    let doc = REPO.replace(
        "storageProviderRef: s3",
        "storageProviderRef: s3\n  storageProvider: s3",
    );
    only(
        &doc,
        "spec.storageProvider",
        "FieldValueUnknown",
        "unknown field",
    );
}

#[test]
fn unknown_metadata_field_is_an_error() {
    let doc = REPO.replace("  name: repo", "  name: repo\n  label:\n    a: b");
    only(&doc, "metadata.label", "FieldValueUnknown", "unknown field");
}

#[test]
fn wrong_type_is_an_error_and_blocks_rules() {
    let doc = fixture("backuppolicy.yaml").replace("backoffLimit: 3", "backoffLimit: three");
    let ps = problems(doc.split("\n---\n").next().unwrap());
    assert_eq!(ps.len(), 2, "{ps:#?}");
    assert_eq!(ps[0].path, "spec.backoffLimit");
    assert_eq!(ps[0].kind, "FieldValueTypeInvalid");
    assert!(ps[0].message.contains("must be of type integer"), "{ps:?}");
    assert!(ps[1]
        .message
        .contains("some validation rules were not checked"));
}

#[test]
fn enum_is_checked() {
    let doc = REPO.replace("pvReclaimPolicy: Retain", "pvReclaimPolicy: Keep");
    only(
        &doc,
        "spec.pvReclaimPolicy",
        "FieldValueNotSupported",
        r#"Unsupported value: "Keep": supported values: "Delete", "Retain""#,
    );
}

#[test]
fn pattern_is_checked() {
    let doc = format!("{REPO}  pathPrefix: my backups\n");
    only(
        &doc,
        "spec.pathPrefix",
        "FieldValueInvalid",
        "should match '^([a-zA-Z0-9-_]+/?)*$'",
    );
}

#[test]
fn maximum_is_checked() {
    let doc = fixture("backupschedule.yaml").replace(
        "startingDeadlineMinutes: 120",
        "startingDeadlineMinutes: 2000",
    );
    only(
        &doc,
        "spec.startingDeadlineMinutes",
        "FieldValueInvalid",
        "should be less than or equal to 1440",
    );
}

#[test]
fn minimum_is_checked() {
    let doc = fixture("garbagecollection.yaml").replace("maxUnused: 10", "maxUnused: -1");
    only(
        &doc,
        "spec.maxUnused",
        "FieldValueInvalid",
        "should be greater than or equal to 0",
    );
}

#[test]
fn min_items_is_checked() {
    let doc = r#"
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: BackupSchedule
metadata:
  name: s
  namespace: demo
spec:
  backupPolicyName: p
  schedules: []
"#;
    only(
        doc,
        "spec.schedules",
        "FieldValueInvalid",
        "should have at least 1 items",
    );
}

#[test]
fn max_items_is_checked() {
    let mut doc = String::from(
        "apiVersion: dataprotection.kubeblocks.io/v1alpha1\nkind: Backup\nmetadata:\n  name: b\nspec:\n  backupPolicyName: p\n  backupMethod: m\n  parameters:\n",
    );
    for i in 0..129 {
        doc.push_str(&format!("    - name: p{i}\n      value: v\n"));
    }
    only(
        &doc,
        "spec.parameters",
        "FieldValueTooMany",
        "must have at most 128 items",
    );
}

#[test]
fn duplicate_map_list_key_is_checked() {
    let doc = "apiVersion: dataprotection.kubeblocks.io/v1alpha1\nkind: Backup\nmetadata:\n  name: b\nspec:\n  backupPolicyName: p\n  backupMethod: m\n  parameters:\n    - name: a\n      value: '1'\n    - name: a\n      value: '2'\n";
    only(
        doc,
        "spec.parameters[1]",
        "FieldValueDuplicate",
        "Duplicate value",
    );
}

#[test]
fn required_is_checked() {
    let doc = REPO.replace("  pvReclaimPolicy: Retain\n", "");
    only(
        &doc,
        "spec.pvReclaimPolicy",
        "FieldValueRequired",
        "Required value",
    );
}

#[test]
fn defaults_fill_required_fields() {
    // deletionPolicy is required and defaulted: absent is fine, as on the server.
    let doc = "apiVersion: dataprotection.kubeblocks.io/v1alpha1\nkind: Backup\nmetadata:\n  name: b\n  namespace: demo\nspec:\n  backupPolicyName: p\n  backupMethod: m\n";
    assert_eq!(problems(doc), vec![]);
}

#[test]
fn cel_rule_target_or_targets() {
    let doc = fixture("backuppolicy.yaml");
    let first = doc.split("\n---\n").next().unwrap().replace(
        "  backupMethods:\n",
        "  targets:\n    - name: extra\n  backupMethods:\n",
    );
    only(
        &first,
        "spec",
        "FieldValueInvalid",
        "either spec.target or spec.targets",
    );
    // And neither of them breaks the same rule.
    let neither = r#"
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: BackupPolicy
metadata:
  name: p
spec:
  backupMethods:
    - name: m
"#;
    only(
        neither,
        "spec",
        "FieldValueInvalid",
        "either spec.target or spec.targets",
    );
}

#[test]
fn cel_rule_ready_config_needs_an_action() {
    let doc = r#"
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: Restore
metadata:
  name: r
spec:
  backup:
    name: b
    namespace: demo
  readyConfig:
    connectionCredential:
      secretName: s
"#;
    only(
        doc,
        "spec.readyConfig",
        "FieldValueInvalid",
        "at least one exists for jobAction and execAction.",
    );
}

#[test]
fn cel_rule_volume_claim_needs_source_or_mount_path() {
    let doc = r#"
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: Restore
metadata:
  name: r
spec:
  backup:
    name: b
    namespace: demo
  prepareDataConfig:
    volumeClaimRestorePolicy: Parallel
    volumeClaims:
      - metadata:
          name: data
        volumeClaimSpec:
          accessModes: [ReadWriteOnce]
        volumeSource: ""
        mountPath: ""
"#;
    only(
        doc,
        "spec.prepareDataConfig.volumeClaims[0]",
        "FieldValueInvalid",
        "at least one exists for volumeSource and mountPath.",
    );
}

#[test]
fn metadata_name_is_checked() {
    let doc = REPO.replace("name: repo", "name: My_Repo");
    only(
        &doc,
        "metadata.name",
        "FieldValueInvalid",
        "RFC 1123 subdomain",
    );
}

#[test]
fn value_the_types_cannot_hold_is_undecodable() {
    // format int32 is not enforced by the server; the type (Go's and ours) cannot hold it.
    let doc =
        fixture("actionset.yaml").replace("intervalSeconds: 30", "intervalSeconds: 99999999999");
    only(
        &doc,
        "spec.backup.backupData.syncProgress.intervalSeconds",
        "Undecodable",
        "99999999999",
    );
}

#[test]
fn field_kept_by_the_server_but_not_the_types_is_dropped() {
    // ActionSet.env preserves unknown fields (KubeBlocks' CRD says so); Kubernetes 1.33's
    // EnvVar has no `fileKeyRef`, so the controller would lose it.
    let doc = fixture("actionset.yaml").replace(
        "    - name: DATA_DIR\n",
        "    - name: DATA_DIR\n      fileKeyRef:\n        path: env/data_dir\n",
    );
    only(
        &doc,
        "spec.env[0].fileKeyRef.path",
        "Dropped",
        "\"env/data_dir\" is kept by the API server",
    );
}

#[test]
fn bad_go_duration_is_reported() {
    let doc = fixture("actionset.yaml").replace("timeout: 1m30s", "timeout: 90 seconds");
    only(
        &doc,
        "spec.backup.preBackup[0].exec.timeout",
        "Uninterpretable",
        "not a Go duration",
    );
}

#[test]
fn bad_retention_period_is_reported() {
    let doc = fixture("backup.yaml").replace("retentionPeriod: 7d", "retentionPeriod: 7days");
    only(
        &doc,
        "spec.retentionPeriod",
        "Uninterpretable",
        "invalid retention period \"7days\"",
    );
}

#[test]
fn bad_restore_time_is_reported() {
    let doc = fixture("restore.yaml").replace(
        r#"restoreTime: "2026-01-05T18:01:00Z""#,
        r#"restoreTime: "2026-02-30T18:01:00Z""#,
    );
    only(
        &doc,
        "spec.restoreTime",
        "Uninterpretable",
        "not a valid UTC time",
    );
}

#[test]
fn other_kinds_fail_unless_skipped() {
    let doc = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n";
    only(doc, "", "NotServed", "not a kind dprepo-controller serves");
    let r = validate_text(
        "t.yaml",
        doc,
        Options {
            skip_other_kinds: true,
        },
    );
    assert!(r[0].skipped && r[0].is_ok());
}

#[test]
fn every_document_of_a_stream_is_reported() {
    let text = format!("{REPO}---\n{}---\n", REPO.replace("Retain", "Keep"));
    let reports = validate_text("two.yaml", &text, Options::default());
    assert_eq!(reports.len(), 2);
    assert!(reports[0].is_ok());
    assert_eq!(reports[1].document, 2);
    assert_eq!(reports[1].problems[0].path, "spec.pvReclaimPolicy");
}

#[test]
fn broken_yaml_is_reported() {
    let reports = validate_text("bad.yaml", "kind: [unclosed\n", Options::default());
    assert_eq!(reports[0].problems[0].kind, "NotYaml");
}

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dprepo-controller"))
}

#[test]
fn binary_prints_ok_per_document_and_exits_0() {
    let out = binary()
        .args(["validate", "-f"])
        .arg(fixture_dir().join("backuppolicy.yaml"))
        .arg(fixture_dir().join("backuprepo.yaml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].ends_with(
        "backuppolicy.yaml#1: BackupPolicy demo/pg-cluster-postgresql-backup-policy: OK"
    ));
    assert!(lines[2].ends_with("backuprepo.yaml#1: BackupRepo s3-repo: OK"));
}

#[test]
fn binary_reads_stdin_reports_errors_and_exits_1() {
    let mut child = binary()
        .args(["validate", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let bad = REPO.replace("Retain", "Keep").replace(
        "storageProviderRef: s3",
        "storageProviderRef: s3\n  bogus: 1",
    );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(bad.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(
        stdout,
        "-#1: BackupRepo repo: 2 errors\n  spec.bogus: unknown field (the API server would drop it without a word)\n  spec.pvReclaimPolicy: Unsupported value: \"Keep\": supported values: \"Delete\", \"Retain\"\n"
    );
}

#[test]
fn binary_json_output() {
    let out = binary()
        .args(["validate", "--json", "-f"])
        .arg(fixture_dir().join("backuprepo.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reports[0]["kind"], "BackupRepo");
    assert_eq!(reports[0]["name"], "s3-repo");
    assert_eq!(reports[0]["document"], 1);
    assert_eq!(reports[0]["problems"], serde_json::json!([]));

    let mut child = binary()
        .args(["validate", "--json", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(REPO.replace("Retain", "Keep").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["problems"][0]["path"], "spec.pvReclaimPolicy");
    assert_eq!(v[0]["problems"][0]["type"], "FieldValueNotSupported");
}

#[test]
fn run_without_a_cluster_says_where_it_looked_once() {
    // `run` with no in-cluster service account and a kubeconfig that does not exist: one
    // line naming both places, each cause said once (kube's errors embed their sources).
    let out = binary()
        .arg("run")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("configuring the API client"), "{err}");
    assert!(err.contains("/nonexistent/kubeconfig"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}
