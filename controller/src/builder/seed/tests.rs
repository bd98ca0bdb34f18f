use super::*;
use crate::api::seed::backuppolicy::BackupPolicySpec;

/// The design document's BackupPolicy, as written there.
fn doc_policy() -> seed::BackupPolicy {
    serde_yaml::from_str(
        r#"
apiVersion: kubeblocks.io/v1alpha1
kind: BackupPolicy
metadata:
  name: mysql-backup-policy
  namespace: default
spec:
  clusterRef:
    name: mysql-cluster
    namespace: default
  method: physical
  storage:
    provider: s3
    bucket: my-backup-bucket
    region: us-west-1
    secretRef: s3-credentials
  retention:
    maxRetentionDays: 30
    maxRetentionCount: 10
  consistency:
    snapshotBeforeBackup: true
    lockTables: true
  encryption:
    enabled: true
    keyRef: encryption-key
"#,
    )
    .unwrap()
}

fn sts(yaml: &str) -> StatefulSet {
    serde_yaml::from_str(yaml).unwrap()
}

const PG_STS: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: pg, namespace: db, labels: {app.kubernetes.io/instance: pg}}
spec:
  replicas: 1
  serviceName: pg
  selector: {matchLabels: {app.kubernetes.io/instance: pg}}
  template:
    metadata: {labels: {app.kubernetes.io/instance: pg, app.kubernetes.io/name: postgresql}}
    spec:
      containers:
      - name: postgresql
        image: docker.io/library/postgres:15
        volumeMounts: [{name: data, mountPath: /home/postgres/pgdata}, {name: run, mountPath: /run}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
"#;

#[test]
fn providers_map_to_shipped_storage_providers() {
    assert_eq!(provider_of(Some("s3")).unwrap().storage_provider, "s3");
    assert_eq!(
        provider_of(Some("gcs")).unwrap().storage_provider,
        "gcs-s3comp"
    );
    assert_eq!(provider_of(Some("pv")).unwrap().access_method, "Mount");
    let e = provider_of(Some("ftp")).unwrap_err();
    assert!(
        e.starts_with("\"ftp\" is not a storage provider dprepo ships (one of s3, "),
        "{e}"
    );
    // Every name maps to a provider file that exists.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/storageproviders");
    for (_, p) in PROVIDERS {
        assert!(
            dir.join(format!("{}.yaml", p.storage_provider)).is_file(),
            "{}",
            p.storage_provider
        );
    }
}

#[test]
fn repo_names_depend_on_the_whole_storage_block() {
    let p = doc_policy();
    let a = repo_name("default", &p.spec.storage, key_ref(&p));
    assert!(
        a.starts_with("seed-my-backup-bucket-") && a.len() == "seed-my-backup-bucket-".len() + 8,
        "{a}"
    );
    assert_eq!(
        a,
        repo_name("default", &p.spec.storage, Some("encryption-key"))
    );
    assert_ne!(
        a,
        repo_name("other", &p.spec.storage, Some("encryption-key"))
    );
    assert_ne!(a, repo_name("default", &p.spec.storage, None));
    let other = p.spec.storage.overridden_by(&Storage {
        bucket: Some("temporary-bucket".into()),
        ..Default::default()
    });
    assert_eq!(other.region.as_deref(), Some("us-west-1"));
    assert!(repo_name("default", &other, None).starts_with("seed-temporary-bucket-"));
    let odd = Storage {
        bucket: Some("My_Bucket.With.Dots".into()),
        ..Default::default()
    };
    assert!(repo_name("x", &odd, None).starts_with("seed-my-bucket-with-dots-"));
}

#[test]
fn the_storage_block_becomes_a_tool_backup_repo_with_the_key_secret() {
    let p = doc_policy();
    let repo = backup_repo("default", &p.spec.storage, key_ref(&p)).unwrap();
    let v = serde_json::to_value(&repo).unwrap();
    assert_eq!(v["spec"]["storageProviderRef"], "s3");
    assert_eq!(v["spec"]["accessMethod"], "Tool");
    assert_eq!(
        v["spec"]["config"],
        json!({"bucket": "my-backup-bucket", "region": "us-west-1"})
    );
    assert_eq!(
        v["spec"]["credential"],
        json!({"name": "s3-credentials", "namespace": "default"})
    );
    assert_eq!(
        v["metadata"]["annotations"]["dprepo.io/key-secret"],
        "default/encryption-key"
    );
    let no_bucket = Storage {
        provider: Some("s3".into()),
        ..Default::default()
    };
    assert_eq!(
        backup_repo("default", &no_bucket, None).unwrap_err(),
        "spec.storage.bucket: provider \"s3\" needs a bucket"
    );
    let disabled = seed::BackupPolicy {
        spec: BackupPolicySpec {
            encryption: Some(seed::backuppolicy::Encryption {
                enabled: Some(false),
                key_ref: Some("k".into()),
            }),
            ..p.spec.clone()
        },
        ..p.clone()
    };
    assert_eq!(key_ref(&disabled), None);
}

#[test]
fn engines_are_found_in_labels_then_images() {
    assert_eq!(detect_engine(&sts(PG_STS)).unwrap(), Engine::PostgreSql);
    let mut s = sts(PG_STS);
    s.spec
        .as_mut()
        .unwrap()
        .template
        .metadata
        .as_mut()
        .unwrap()
        .labels
        .as_mut()
        .unwrap()
        .remove(ENGINE_LABEL);
    assert_eq!(
        detect_engine(&s).unwrap(),
        Engine::PostgreSql,
        "from the image"
    );
    s.spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers[0]
        .image = Some("mariadb:11".into());
    assert_eq!(detect_engine(&s).unwrap(), Engine::MariaDb);
    s.spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers[0]
        .image = Some("redis:7".into());
    let e = detect_engine(&s).unwrap_err();
    assert!(
        e.contains("no known database engine") && e.contains("redis:7"),
        "{e}"
    );
    assert_eq!(
        action_set_name(Engine::MySql, BackupKind::Logical),
        "dprepo-mysql-mysqldump"
    );
}

#[test]
fn the_policy_becomes_a_dataprotection_policy() {
    let p = doc_policy();
    let bp = dp_backup_policy(
        &p,
        "seed-x",
        Engine::PostgreSql,
        &sts(PG_STS),
        Some(&["username".into(), "password".into(), "host".into()]),
    )
    .unwrap();
    let v = serde_json::to_value(&bp).unwrap();
    assert_eq!(v["metadata"]["name"], "mysql-backup-policy");
    assert_eq!(v["spec"]["backupRepoName"], "seed-x");
    assert_eq!(
        v["spec"]["target"]["podSelector"]["matchLabels"],
        json!({"app.kubernetes.io/instance": "mysql-cluster"})
    );
    assert_eq!(
        v["spec"]["target"]["connectionCredential"],
        json!({"secretName": "mysql-cluster-conn-credential", "usernameKey": "username", "passwordKey": "password", "hostKey": "host"})
    );
    let m = &v["spec"]["backupMethods"];
    assert_eq!(m[0]["name"], "physical");
    assert_eq!(m[0]["actionSetName"], "dprepo-postgresql-basebackup");
    assert_eq!(
        m[0]["targetVolumes"]["volumeMounts"],
        json!([{"name": "data", "mountPath": "/home/postgres/pgdata"}])
    );
    assert_eq!(
        m[1],
        json!({"name": "volume-snapshot", "snapshotVolumes": true, "targetVolumes": {"volumes": ["data"]}})
    );
    // PostgreSQL physical: the WAL archive a point-in-time restore replays, reading the
    // server's data volume.
    assert_eq!(
        m[2],
        json!({"name": "archive-wal", "actionSetName": "dprepo-postgresql-archive-wal", "snapshotVolumes": false,
               "targetVolumes": {"volumeMounts": [{"name": "data", "mountPath": "/home/postgres/pgdata"}]}})
    );
    assert_eq!(m.as_array().unwrap().len(), 3);
    // No log archive for a logical dump, nor (yet) for the MySQL family.
    let mut logical = p.clone();
    logical.spec.method = BackupKind::Logical;
    let v = serde_json::to_value(
        dp_backup_policy(&logical, "seed-x", Engine::PostgreSql, &sts(PG_STS), None).unwrap(),
    )
    .unwrap();
    let names: Vec<&str> = v["spec"]["backupMethods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["logical", "volume-snapshot"]);
    assert_eq!(
        continuous_action_set(Engine::MariaDb, BackupKind::Physical),
        None
    );
    assert_eq!(
        continuous_action_set(Engine::MySql, BackupKind::Physical),
        None
    );
    assert_eq!(retention_period(&p).as_deref(), Some("30d"));
    // lockTables only reaches logical backups.
    assert!(parameters(&p).is_empty());
    let mut logical = p.clone();
    logical.spec.method = BackupKind::Logical;
    assert_eq!(
        parameters(&logical),
        vec![json!({"name": "lockTables", "value": "true"})]
    );
}

#[test]
fn backups_and_schedules_carry_retention_and_keep_last() {
    let p = doc_policy();
    let b: seed::Backup = serde_yaml::from_str(
        "apiVersion: kubeblocks.io/v1alpha1\nkind: Backup\nmetadata: {name: b1, namespace: default}\nspec: {backupPolicyRef: mysql-backup-policy, storage: {bucket: temporary-bucket}}\n",
    )
    .unwrap();
    let v = serde_json::to_value(dp_backup(&b, &p, "seed-temp").unwrap()).unwrap();
    assert_eq!(v["spec"]["backupPolicyName"], "mysql-backup-policy");
    assert_eq!(v["spec"]["backupMethod"], "physical");
    assert_eq!(v["spec"]["retentionPeriod"], "30d");
    assert_eq!(
        v["metadata"]["labels"]["dataprotection.kubeblocks.io/backup-repo-name"],
        "seed-temp"
    );
    // The cluster's label: what a point-in-time restore finds its base backups by.
    assert_eq!(
        v["metadata"]["labels"]["app.kubernetes.io/instance"],
        "mysql-cluster"
    );
    let s: seed::BackupSchedule = serde_yaml::from_str(
        "apiVersion: kubeblocks.io/v1alpha1\nkind: BackupSchedule\nmetadata: {name: daily-backup, namespace: default}\nspec: {schedule: \"0 2 * * *\", backupPolicyTemplateRef: mysql-backup-policy, successfulJobsHistoryLimit: 5}\n",
    )
    .unwrap();
    let v = serde_json::to_value(dp_schedule(&s, &p).unwrap()).unwrap();
    assert_eq!(v["metadata"]["annotations"]["dprepo.io/keep-last"], "5");
    assert_eq!(
        v["spec"]["schedules"],
        json!([{"name": "physical", "enabled": true, "backupMethod": "physical", "cronExpression": "0 2 * * *", "retentionPeriod": "30d"}]),
        "an engine not known yet: no log archive"
    );
    // Once the policy found PostgreSQL, the schedule also runs its WAL archive.
    let mut pg = p.clone();
    pg.status = Some(seed::backuppolicy::BackupPolicyStatus {
        engine: Some("postgresql".into()),
        ..Default::default()
    });
    let v = serde_json::to_value(dp_schedule(&s, &pg).unwrap()).unwrap();
    assert_eq!(
        v["spec"]["schedules"][1],
        json!({"name": "archive-wal", "enabled": true, "backupMethod": "archive-wal", "cronExpression": "*/5 * * * *", "retentionPeriod": "30d"})
    );
    pg.status.as_mut().unwrap().engine = Some("mariadb".into());
    let v = serde_json::to_value(dp_schedule(&s, &pg).unwrap()).unwrap();
    assert_eq!(v["spec"]["schedules"].as_array().unwrap().len(), 1);
    let mut unlimited = s.clone();
    unlimited.spec.successful_jobs_history_limit = None;
    assert_eq!(
        keep_last(&unlimited, &p),
        Some(10),
        "the policy's maxRetentionCount"
    );
}

#[test]
fn sizes_read_as_the_document_writes_them() {
    assert_eq!(human_size(0), "0B");
    assert_eq!(human_size(1023), "1023B");
    assert_eq!(human_size(1024), "1KiB");
    assert_eq!(human_size(5 << 30), "5GiB");
    assert_eq!(human_size(1536 << 20), "1.5GiB");
    assert_eq!(human_size(u64::MAX), "16384PiB");
}

#[test]
fn the_backup_status_is_mirrored_in_the_seed_words() {
    let dp: Backup = serde_json::from_value(json!({
        "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "Backup",
        "metadata": {"name": "b1", "namespace": "db"},
        "spec": {"backupPolicyName": "p", "backupMethod": "physical", "deletionPolicy": "Delete"},
        "status": {"phase": "Completed", "startTimestamp": "2023-10-01T02:00:00Z", "completionTimestamp": "2023-10-01T02:15:00Z",
                   "totalSize": "5368709120", "path": "/db/b1",
                   "extras": [{"type": "dprepo", "snapshots": "abc123,def456"}]},
    }))
    .unwrap();
    let st = mirror_backup_status(&dp, &doc_policy().spec.storage);
    assert_eq!(st.phase.as_deref(), Some("Completed"));
    assert_eq!(st.size.as_deref(), Some("5GiB"));
    assert_eq!(st.location.as_deref(), Some("s3://my-backup-bucket/db/b1"));
    assert_eq!(st.snapshot_name.as_deref(), Some("abc123"));
    assert_eq!(st.start_time.as_deref(), Some("2023-10-01T02:00:00Z"));
    assert_eq!(st.completion_time.as_deref(), Some("2023-10-01T02:15:00Z"));
    assert_eq!(seed_phase(None), "Pending");
    assert_eq!(seed_phase(Some("New")), "Pending");
    assert_eq!(seed_phase(Some("Running")), "Running");
}

#[test]
fn a_new_cluster_is_the_source_relabelled_and_restored_into_its_claims() {
    let src = sts(PG_STS);
    let claims = cluster_claims(&src, "pg-new").unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].name, "data-pg-new-0");
    assert_eq!(claims[0].mount_path, "/home/postgres/pgdata");
    let r: seed::Restore = serde_yaml::from_str(
        "apiVersion: kubeblocks.io/v1alpha1\nkind: Restore\nmetadata: {name: r1, namespace: db}\nspec: {backupRef: b1, clusterRef: {name: pg-new}, pitr: {targetTime: \"2023-10-01T02:10:00Z\"}, conflictPolicy: Replace}\n",
    )
    .unwrap();
    let named: Vec<(String, &ClusterClaim)> = claims.iter().map(|c| (c.name.clone(), c)).collect();
    let v = serde_json::to_value(dp_restore(&r, "b1", &named).unwrap()).unwrap();
    assert_eq!(v["spec"]["restoreTime"], "2023-10-01T02:10:00Z");
    assert_eq!(
        v["spec"]["backup"],
        json!({"name": "b1", "namespace": "db"})
    );
    let vc = &v["spec"]["prepareDataConfig"]["volumeClaims"][0];
    assert_eq!(vc["metadata"]["name"], "data-pg-new-0");
    assert_eq!(vc["mountPath"], "/home/postgres/pgdata");
    assert_eq!(vc["volumeSource"], "data");
    let n = serde_json::to_value(new_cluster(&src, "pg-new")).unwrap();
    assert_eq!(n["metadata"]["name"], "pg-new");
    assert_eq!(n["spec"]["serviceName"], "pg-new");
    assert_eq!(
        n["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"],
        "pg-new"
    );
    assert_eq!(
        n["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/instance"],
        "pg-new"
    );
    assert_eq!(
        n["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"],
        "postgresql"
    );
    let mut no_claims = src.clone();
    no_claims.spec.as_mut().unwrap().volume_claim_templates = None;
    assert!(cluster_claims(&no_claims, "x")
        .unwrap_err()
        .contains("no volumeClaimTemplates"));
}

fn run_swap(target: &std::path::Path, incoming: &std::path::Path) -> std::process::Output {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(SWAP_SCRIPT)
        .env("SWAP_TARGET", target)
        .env("SWAP_INCOMING", incoming)
        .output()
        .unwrap()
}

fn listing(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = walk(dir, dir);
    out.sort();
    out
}

fn walk(root: &std::path::Path, dir: &std::path::Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            out.push((rel, String::new()));
            out.extend(walk(root, &p));
        } else {
            out.push((rel, std::fs::read_to_string(&p).unwrap()));
        }
    }
    out
}

/// The swap script, run for real on two directories: the new data replaces the old
/// exactly; an empty restored volume is refused with the old data untouched; a swap
/// killed after the old data moved aside is rolled back by the next run.
#[test]
fn the_swap_replaces_the_data_only_when_the_new_data_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let (t, n) = (dir.path().join("target"), dir.path().join("incoming"));
    std::fs::create_dir_all(t.join("pgdata/base")).unwrap();
    std::fs::write(t.join("pgdata/base/old"), "old rows").unwrap();
    std::fs::write(t.join("PG_VERSION"), "15").unwrap();
    std::fs::create_dir_all(&n).unwrap();
    let old = listing(&t);

    let out = run_swap(&t, &n);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the restored volume is empty"));
    assert_eq!(listing(&t), old);

    std::fs::create_dir_all(n.join("pgdata/base")).unwrap();
    std::fs::write(n.join("pgdata/base/new"), "new rows").unwrap();
    std::fs::write(n.join(".hidden"), "dot files move too").unwrap();
    let new = listing(&n);
    let out = run_swap(&t, &n);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(listing(&t), new);

    // A run killed after moving the old data aside (and one new entry in): the next run
    // puts the old data back first, then swaps again.
    std::fs::remove_dir_all(&t).unwrap();
    std::fs::create_dir_all(t.join(".dprepo-previous")).unwrap();
    std::fs::write(t.join(".dprepo-previous/PG_VERSION"), "15").unwrap();
    std::fs::write(t.join(".dprepo-previous/.complete"), "").unwrap();
    std::fs::write(t.join(".hidden"), "dot files move too").unwrap();
    std::fs::create_dir_all(t.join(".dprepo-incoming/pgdata")).unwrap();
    let out = run_swap(&t, &n);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("rolled back"));
    assert_eq!(listing(&t), new);
}
