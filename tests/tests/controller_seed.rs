//! End-to-end: the seed document's simplified API (`kubeblocks.io/v1alpha1`) on kube-sim
//! with the real `dprepo-controller`, a real PostgreSQL cluster (a StatefulSet running
//! Debian's PostgreSQL 15) and S3 repositories on the suite's moto server.
//!
//! The design document's four YAML documents are applied as written, adapted only in the
//! names of things that must exist (the cluster, the buckets): they pass
//! `dprepo-controller validate`, the BackupPolicy becomes a BackupRepo and a
//! dataprotection BackupPolicy chosen for PostgreSQL, the Backup (to its override bucket)
//! completes with size and location, the BackupSchedule also runs the WAL archive (a
//! Continuous backup through the shipped `dprepo-postgresql-archive-wal` ActionSet; the
//! server runs with `archive_mode=on`), the Restore as written (`pitr` in 2023) fails
//! listing the ranges that can be restored, a Restore into a new cluster brings back every
//! row, a Restore with `pitr.targetTime` between two known transactions brings back
//! exactly the rows committed before it, `conflictPolicy: Replace` swaps the data of a
//! running cluster, and a Replace whose data cannot be restored leaves the old rows in
//! place.
//!
//! Build first: `cargo build --workspace --bins`. Needs root (kube-sim's runner),
//! `kubectl`, PostgreSQL 15 (`apt-get install postgresql`) and moto.

mod common;

use common::cluster::*;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const DOC: &str = include_str!("../../controller/tests/fixtures/seed-design-doc.yaml");

/// The shell text choosing the server's port by pod name (all pods share the host
/// network, and a new cluster runs the source's spec).
fn port_case(ports: &[(&str, u16)]) -> String {
    let mut s = String::from("case $HOSTNAME in ");
    for (pod, port) in ports {
        s.push_str(&format!("{pod}) P={port};; "));
    }
    s.push_str("*) echo unknown pod $HOSTNAME; exit 1;; esac");
    s
}

/// The cluster `pg`: a StatefulSet whose pods run PostgreSQL on the claim `data` at
/// KubeBlocks' layout (/home/postgres/pgdata/pgroot/data), and its account Secret.
fn cluster_manifests(ports: &[(&str, u16)]) -> String {
    let (uid, gid) = (service_id("-u", "postgres"), service_id("-g", "postgres"));
    let case = port_case(ports);
    let src_port = ports[0].1;
    format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: pg-conn-credential, namespace: default}}
stringData: {{username: postgres, password: unused-trust-auth, host: 127.0.0.1, port: "{src_port}"}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: pg
  namespace: default
  labels: {{app.kubernetes.io/instance: pg, app.kubernetes.io/name: postgresql}}
spec:
  replicas: 1
  serviceName: pg
  selector: {{matchLabels: {{app.kubernetes.io/instance: pg}}}}
  template:
    metadata:
      labels: {{app.kubernetes.io/instance: pg, app.kubernetes.io/name: postgresql}}
    spec:
      securityContext: {{runAsUser: {uid}, fsGroup: {gid}}}
      initContainers:
      - name: init
        image: docker.io/library/postgres:15
        securityContext: {{runAsUser: 0}}
        command: [sh, -c, "mkdir -p /home/postgres/pgdata/pgroot && chown {uid}:{gid} /home/postgres/pgdata /home/postgres/pgdata/pgroot"]
        volumeMounts: [{{name: data, mountPath: /home/postgres/pgdata}}]
      containers:
      - name: postgresql
        image: docker.io/library/postgres:15
        command:
        - bash
        - -c
        - |
          {case}
          D=/home/postgres/pgdata/pgroot/data
          [ -f $D/PG_VERSION ] || {PG_BIN}/initdb -D $D --auth=trust -U postgres >/dev/null
          # fsGroup makes the volume's files group-writable; the server wants 0700.
          chmod 0700 $D
          # Finished WAL segments wait in pg_wal/archive_status for the archiver.
          exec {PG_BIN}/postgres -D $D -p $P -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off -c wal_level=replica -c archive_mode=on
        ports: [{{name: tcp-postgresql, containerPort: {src_port}}}]
        readinessProbe:
          exec:
            command: [bash, -c, "{case}; {PG_BIN}/pg_isready -q -h 127.0.0.1 -p $P"]
          periodSeconds: 1
        volumeMounts: [{{name: data, mountPath: /home/postgres/pgdata}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}
"#
    )
}

fn psql(port: u16, sql: &str) -> String {
    let out = Command::new(Path::new(PG_BIN).join("psql"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
        ])
        .args(["-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .stdin(Stdio::null())
        .output()
        .expect("psql");
    assert!(out.status.success(), "psql {sql:?}: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Row count and checksum of every table in `public`.
fn table_sums(port: u16) -> BTreeMap<String, String> {
    let tables = psql(
        port,
        "select tablename from pg_tables where schemaname = 'public' order by 1",
    );
    tables
        .lines()
        .map(|t| {
            let sum = psql(
                port,
                &format!("select count(*) || ' ' || coalesce(md5(string_agg(x::text, ',' order by x::text)), '-') from public.{t} x"),
            );
            (t.to_string(), sum)
        })
        .collect()
}

fn pgbench(port: u16, args: &[&str]) {
    let out = Command::new(Path::new(PG_BIN).join("pgbench"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .args(args)
        .arg("postgres")
        .output()
        .expect("pgbench");
    assert!(out.status.success(), "pgbench {args:?}: {}", stderr(&out));
}

fn ready_pod(c: &Cluster, name: &str) -> Value {
    c.wait_for(
        &format!("pod {name} ready"),
        Duration::from_secs(180),
        || {
            c.get(&["pod", "-n", "default", name]).filter(|p| {
                p["metadata"]["deletionTimestamp"].is_null()
                    && p["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|x| x["type"] == "Ready" && x["status"] == "True")
                    })
            })
        },
    )
}

/// Waits for seed object `resource/name` to reach one of `phases`.
fn seed_phase(c: &Cluster, resource: &str, name: &str, phases: &[&str], secs: u64) -> Value {
    c.wait_for(
        &format!("{resource} {name} in {phases:?}"),
        Duration::from_secs(secs),
        || {
            c.get(&[&format!("{resource}.kubeblocks.io"), "-n", "default", name])
                .filter(|o| {
                    o.pointer("/status/phase")
                        .and_then(Value::as_str)
                        .is_some_and(|p| phases.contains(&p))
                })
        },
    )
}

fn restore_yaml(name: &str, backup: &str, cluster: &str, conflict: Option<&str>) -> String {
    let conflict = conflict
        .map(|p| format!("\n  conflictPolicy: {p}"))
        .unwrap_or_default();
    format!(
        "apiVersion: kubeblocks.io/v1alpha1\nkind: Restore\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  backupRef: {backup}\n  clusterRef: {{name: {cluster}}}{conflict}\n"
    )
}

/// The design document's YAML, adapted in the names of what must exist.
fn adapted_doc(bucket: &str, temporary: &str) -> String {
    DOC.replace("mysql-cluster-new", "pg-new")
        .replace("mysql-cluster", "pg")
        .replace("my-backup-bucket", bucket)
        .replace("temporary-bucket", temporary)
}

#[test]
fn the_design_documents_back_up_restore_and_replace_a_postgresql_cluster() {
    require_postgres();
    ensure_s3_bucket();
    let mut c = Cluster::start();
    install(&mut c);
    // The ActionSets the simplified API chooses from, applied once their CRD is served.
    let actionsets = workspace().join("deploy/actionsets");
    c.kubectl_ok(&[
        "apply",
        "--validate=false",
        "-k",
        actionsets.to_str().unwrap(),
    ]);
    // The shipped StorageProvider `provider: s3` names.
    let s3 = workspace().join("deploy/storageproviders/s3.yaml");
    c.kubectl_ok(&["apply", "--validate=false", "-f", s3.to_str().unwrap()]);
    let prefix = c
        .dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_lowercase();
    let (bucket, temporary) = (
        format!("{S3_BUCKET}/{prefix}"),
        format!("{S3_BUCKET}/{prefix}-tmp"),
    );
    let (src_port, new_port, pitr_port) = (free_port(), free_port(), free_port());
    c.wait_for(
        "the default service account",
        Duration::from_secs(30),
        || c.get(&["sa", "-n", "default", "default"]),
    );
    c.apply(&format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: s3-credentials, namespace: default}}
stringData: {{accessKeyId: test, secretAccessKey: test, endpoint: "{}", forcePathStyle: "true"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: encryption-key, namespace: default}}
stringData: {{dprepoPassword: seed-e2e-key}}
"#,
        s3_endpoint()
    ));
    c.apply(&cluster_manifests(&[
        ("pg-0", src_port),
        ("pg-new-0", new_port),
        ("pg-pitr-0", pitr_port),
    ]));
    ready_pod(&c, "pg-0");
    pgbench(src_port, &["-i", "-q", "-s", "2"]);
    psql(src_port, "create table notes (id int primary key, body text); insert into notes select g, md5(g::text) from generate_series(1, 5000) g");
    let at_backup = table_sums(src_port);
    assert_eq!(at_backup.len(), 5, "{at_backup:?}");

    // The four documents pass validate and apply with kubectl.
    let doc = adapted_doc(&bucket, &temporary);
    let doc_path = c.dir.path().join("seed-doc.yaml");
    std::fs::write(&doc_path, &doc).unwrap();
    let out = Command::new(bin("dprepo-controller"))
        .args(["validate", "-f"])
        .arg(&doc_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "validate: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    let docs: Vec<&str> = doc.split("\n---\n").skip(1).collect();
    assert_eq!(docs.len(), 4);

    // BackupPolicy: a BackupRepo and a dataprotection BackupPolicy chosen for PostgreSQL.
    c.apply(docs[0]);
    let policy = seed_phase(
        &c,
        "backuppolicy",
        "mysql-backup-policy",
        &["Available"],
        240,
    );
    assert_eq!(
        policy["status"]["engine"], "postgresql",
        "{}",
        policy["status"]
    );
    assert_eq!(
        policy["status"]["actionSetName"],
        "dprepo-postgresql-basebackup"
    );
    let repo = policy["status"]["backupRepoName"]
        .as_str()
        .unwrap()
        .to_string();
    let r = c.get(&["backuprepo", &repo]).expect("the BackupRepo");
    assert_eq!(r["spec"]["config"]["bucket"], bucket.as_str());
    assert_eq!(
        r["metadata"]["annotations"]["dprepo.io/key-secret"],
        "default/encryption-key"
    );
    let dp = c
        .get(&[
            "backuppolicies.dataprotection.kubeblocks.io",
            "-n",
            "default",
            "mysql-backup-policy",
        ])
        .expect("the dataprotection BackupPolicy");
    assert_eq!(dp["spec"]["backupRepoName"], repo.as_str());
    let methods: Vec<&str> = dp["spec"]["backupMethods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["physical", "volume-snapshot", "archive-wal"]);
    assert_eq!(dp["metadata"]["ownerReferences"][0]["kind"], "BackupPolicy");
    assert_eq!(
        dp["metadata"]["ownerReferences"][0]["apiVersion"],
        "kubeblocks.io/v1alpha1"
    );

    // BackupSchedule: a dataprotection schedule keeping the last 5.
    c.apply(docs[1]);
    seed_phase(&c, "backupschedule", "daily-backup", &["Available"], 120);
    let bs = c
        .get(&[
            "backupschedules.dataprotection.kubeblocks.io",
            "-n",
            "default",
            "daily-backup",
        ])
        .expect("the dataprotection BackupSchedule");
    assert_eq!(bs["metadata"]["annotations"]["dprepo.io/keep-last"], "5");
    assert_eq!(bs["spec"]["schedules"][0]["cronExpression"], "0 2 * * *");
    assert_eq!(bs["spec"]["schedules"][0]["retentionPeriod"], "30d");
    // ... and the WAL archive: one Continuous backup, running from now on.
    assert_eq!(bs["spec"]["schedules"][1]["backupMethod"], "archive-wal");
    assert_eq!(bs["spec"]["schedules"][1]["enabled"], true);
    let archive = c.wait_for(
        "the WAL archive Running with a time range",
        Duration::from_secs(180),
        || {
            let list = c.get(&[
                "backups.dataprotection.kubeblocks.io",
                "-n",
                "default",
                "-l",
                "dataprotection.kubeblocks.io/backup-schedule=daily-backup,dataprotection.kubeblocks.io/backup-type=Continuous",
            ])?;
            let b = list["items"].as_array()?.first()?.clone();
            (b["status"]["phase"] == "Running"
                && b.pointer("/status/timeRange/start")?.is_string()
                && b.pointer("/status/timeRange/end")?.is_string())
            .then_some(b)
        },
    );
    let archive_name = archive["metadata"]["name"].as_str().unwrap().to_string();

    // Backup, to its override bucket: Completed with size, location and snapshot.
    c.apply(docs[2]);
    let b1 = seed_phase(
        &c,
        "backup",
        "mysql-backup-20231001",
        &["Completed", "Failed"],
        600,
    );
    let s = &b1["status"];
    assert_eq!(s["phase"], "Completed", "{s}");
    let size = s["size"].as_str().unwrap();
    assert!(size.ends_with("MiB") || size.ends_with("KiB"), "{s}");
    assert_eq!(
        s["location"],
        format!("s3://{temporary}/default/mysql-backup-20231001").as_str(),
        "{s}"
    );
    assert!(
        s["snapshotName"].as_str().is_some_and(|n| n.len() >= 8),
        "{s}"
    );
    assert!(
        s["startTime"].is_string() && s["completionTime"].is_string(),
        "{s}"
    );
    let dpb = c
        .get(&[
            "backups.dataprotection.kubeblocks.io",
            "-n",
            "default",
            "mysql-backup-20231001",
        ])
        .expect("the dataprotection Backup");
    let tmp_repo = dpb["metadata"]["labels"]["dataprotection.kubeblocks.io/backup-repo-name"]
        .as_str()
        .unwrap();
    assert_ne!(tmp_repo, repo, "the override bucket is another repository");
    assert_eq!(dpb["spec"]["retentionPeriod"], "30d");

    // Restore as written (pitr): 2023 is outside the archive's range, so it fails saying
    // so and listing the ranges that can be restored; no cluster is made.
    c.apply(docs[3]);
    let pitr = seed_phase(
        &c,
        "restore",
        "mysql-restore-20231001",
        &["Completed", "Failed"],
        120,
    );
    assert_eq!(pitr["status"]["phase"], "Failed");
    let msg = pitr["status"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!("spec.pitr.targetTime: restoreTime 2023-10-01T02:10:00Z is outside the time range of continuous backup \"{archive_name}\"")),
        "{msg}"
    );
    assert!(msg.contains("; recoverable ranges: "), "{msg}");
    assert!(c.get(&["pvc", "-n", "default", "data-pg-new-0"]).is_none());
    assert!(c.get(&["statefulset", "-n", "default", "pg-new"]).is_none());

    // Into a new cluster: every row is back, the server started on the restored data.
    c.apply(&restore_yaml(
        "to-new",
        "mysql-backup-20231001",
        "pg-new",
        None,
    ));
    let r = seed_phase(&c, "restore", "to-new", &["Completed", "Failed"], 600);
    assert_eq!(r["status"]["phase"], "Completed", "{}", r["status"]);
    ready_pod(&c, "pg-new-0");
    assert_eq!(table_sums(new_port), at_backup);

    point_in_time(&c, src_port, pitr_port, &archive_name);

    // Over an existing cluster with the default policy: refused, nothing touched.
    psql(
        src_port,
        "delete from notes where id > 4000; insert into notes values (9999, 'after the backup')",
    );
    let changed = table_sums(src_port);
    assert_ne!(changed, at_backup);
    c.apply(&restore_yaml(
        "over-default",
        "mysql-backup-20231001",
        "pg",
        None,
    ));
    let r = seed_phase(&c, "restore", "over-default", &["Completed", "Failed"], 120);
    assert_eq!(r["status"]["phase"], "Failed");
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap()
            .contains("spec.conflictPolicy is Fail (the default): nothing was touched"),
        "{}",
        r["status"]
    );
    assert_eq!(table_sums(src_port), changed);

    // Replace: the restored data replaces the running cluster's.
    c.apply(&restore_yaml(
        "replace",
        "mysql-backup-20231001",
        "pg",
        Some("Replace"),
    ));
    let r = seed_phase(&c, "restore", "replace", &["Completed", "Failed"], 600);
    assert_eq!(r["status"]["phase"], "Completed", "{}", r["status"]);
    assert_eq!(r["status"]["stage"], "Done");
    ready_pod(&c, "pg-0");
    assert_eq!(table_sums(src_port), at_backup);
    c.wait_for("the staging claim removed", Duration::from_secs(60), || {
        c.get(&["pvc", "-n", "default"]).filter(|l| {
            l["items"].as_array().unwrap().iter().all(|p| {
                !p["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .contains("-restore-")
            })
        })
    });

    // Replace whose data cannot be restored (its backup file is gone from the
    // repository): Failed, and the cluster keeps running on its old rows.
    c.apply("apiVersion: kubeblocks.io/v1alpha1\nkind: Backup\nmetadata: {name: second, namespace: default}\nspec: {backupPolicyRef: mysql-backup-policy}\n");
    let b2 = seed_phase(&c, "backup", "second", &["Completed", "Failed"], 600);
    assert_eq!(b2["status"]["phase"], "Completed", "{}", b2["status"]);
    assert_eq!(
        b2["status"]["location"],
        format!("s3://{bucket}/default/second").as_str()
    );
    let conf = c.dir.path().join("host-datasafed.conf");
    std::fs::write(
        &conf,
        format!(
            "[storage]\ntype = s3\nendpoint = {}\nroot = {bucket}\naccess_key_id = test\nsecret_access_key = test\nforce_path_style = true\n",
            s3_endpoint()
        ),
    )
    .unwrap();
    let out = Command::new(dprepo_bin())
        .args(["datasafed", "-c"])
        .arg(&conf)
        .args(["rm", "/default/second/second.tar.zst"])
        .env("DPREPO_PASSWORD", "seed-e2e-key")
        .env("XDG_CACHE_HOME", c.dir.path().join("cache"))
        .output()
        .unwrap();
    assert!(out.status.success(), "datasafed rm: {}", stderr(&out));
    psql(
        src_port,
        "insert into notes values (10000, 'written after the replace')",
    );
    let before_failure = table_sums(src_port);
    let pod_uid = ready_pod(&c, "pg-0")["metadata"]["uid"].clone();
    c.apply(&restore_yaml(
        "replace-broken",
        "second",
        "pg",
        Some("Replace"),
    ));
    let r = seed_phase(
        &c,
        "restore",
        "replace-broken",
        &["Completed", "Failed"],
        600,
    );
    assert_eq!(r["status"]["phase"], "Failed", "{}", r["status"]);
    let msg = r["status"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("restoring the data failed") && msg.ends_with("cluster pg was not touched"),
        "{msg}"
    );
    assert_eq!(
        ready_pod(&c, "pg-0")["metadata"]["uid"],
        pod_uid,
        "the cluster was never stopped"
    );
    assert_eq!(table_sums(src_port), before_failure);
    c.wait_for(
        "the failed Replace's staging claim removed",
        Duration::from_secs(60),
        || {
            c.get(&["pvc", "-n", "default"]).filter(|l| {
                l["items"].as_array().unwrap().iter().all(|p| {
                    !p["metadata"]["name"]
                        .as_str()
                        .unwrap()
                        .contains("-restore-")
                })
            })
        },
    );

    // Mistakes in the objects: each named in the status.
    c.apply(
        "apiVersion: kubeblocks.io/v1alpha1\nkind: BackupPolicy\nmetadata: {name: ftp, namespace: default}\nspec: {clusterRef: {name: pg}, method: physical, storage: {provider: ftp, bucket: b}}\n",
    );
    let p = seed_phase(&c, "backuppolicy", "ftp", &["Unavailable"], 60);
    assert!(
        p["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.storage.provider: \"ftp\" is not a storage provider"),
        "{}",
        p["status"]
    );
    c.apply(
        "apiVersion: kubeblocks.io/v1alpha1\nkind: BackupPolicy\nmetadata: {name: nocluster, namespace: default}\nspec: {clusterRef: {name: nosuch}, method: logical, storage: {provider: s3, bucket: b, secretRef: s3-credentials}}\n",
    );
    let p = seed_phase(&c, "backuppolicy", "nocluster", &["Unavailable"], 60);
    assert!(
        p["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.clusterRef.name: no cluster nosuch in namespace default"),
        "{}",
        p["status"]
    );
    c.apply("apiVersion: kubeblocks.io/v1alpha1\nkind: Backup\nmetadata: {name: orphan, namespace: default}\nspec: {backupPolicyRef: nosuch}\n");
    let b = seed_phase(&c, "backup", "orphan", &["Pending"], 60);
    assert_eq!(
        b["status"]["message"],
        "spec.backupPolicyRef: BackupPolicy nosuch not found in namespace default"
    );
    c.apply(&restore_yaml("no-backup", "nosuch", "pg-x", None));
    let r = seed_phase(&c, "restore", "no-backup", &["Failed"], 60);
    assert_eq!(
        r["status"]["message"],
        "spec.backupRef: Backup nosuch not found in namespace default"
    );
    // A Failed Backup cannot be restored: the Restore fails naming spec.backupRef and the
    // cluster keeps running on its rows.
    c.apply("apiVersion: kubeblocks.io/v1alpha1\nkind: Backup\nmetadata: {name: bad-storage, namespace: default}\nspec: {backupPolicyRef: mysql-backup-policy, storage: {provider: ftp}}\n");
    let b = seed_phase(&c, "backup", "bad-storage", &["Failed"], 60);
    assert!(
        b["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.storage.provider: \"ftp\" is not a storage provider"),
        "{}",
        b["status"]
    );
    c.apply(&restore_yaml(
        "from-failed",
        "bad-storage",
        "pg",
        Some("Replace"),
    ));
    let r = seed_phase(&c, "restore", "from-failed", &["Completed", "Failed"], 60);
    assert_eq!(r["status"]["phase"], "Failed", "{}", r["status"]);
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.backupRef: Backup bad-storage is Failed: spec.storage.provider"),
        "{}",
        r["status"]
    );
    assert_eq!(ready_pod(&c, "pg-0")["metadata"]["uid"], pod_uid);
    assert_eq!(table_sums(src_port), before_failure);

    // A missing encryption key Secret: the policy is Unavailable naming
    // spec.encryption.keyRef, and its Backups wait without touching anything.
    c.apply(
        "apiVersion: kubeblocks.io/v1alpha1\nkind: BackupPolicy\nmetadata: {name: nokey, namespace: default}\nspec: {clusterRef: {name: pg}, method: physical, storage: {provider: s3, bucket: b, secretRef: s3-credentials}, encryption: {enabled: true, keyRef: nosuch-key}}\n",
    );
    let p = seed_phase(&c, "backuppolicy", "nokey", &["Unavailable"], 60);
    assert_eq!(
        p["status"]["message"],
        "spec.encryption.keyRef: Secret default/nosuch-key not found"
    );
    assert!(c
        .get(&[
            "backuppolicies.dataprotection.kubeblocks.io",
            "-n",
            "default",
            "nokey"
        ])
        .is_none());
    c.apply("apiVersion: kubeblocks.io/v1alpha1\nkind: Backup\nmetadata: {name: keyless, namespace: default}\nspec: {backupPolicyRef: nokey}\n");
    let b = seed_phase(&c, "backup", "keyless", &["Pending"], 60);
    assert_eq!(
        b["status"]["message"],
        "spec.backupPolicyRef: BackupPolicy nokey is not Available: spec.encryption.keyRef: Secret default/nosuch-key not found"
    );
    assert!(c
        .get(&[
            "backups.dataprotection.kubeblocks.io",
            "-n",
            "default",
            "keyless"
        ])
        .is_none());
    assert!(!c.controller_log().contains("panicked"));
}

/// A base backup, rows committed before a chosen second `T` and after it, then a seed
/// Restore with `pitr.targetTime: T` into the new cluster `pg-pitr`: the dataprotection
/// Restore replays the archived WAL on the base, and the restored server holds exactly the
/// rows committed before `T` (every table: counts and checksums).
fn point_in_time(c: &Cluster, src_port: u16, pitr_port: u16, archive: &str) {
    c.apply("apiVersion: kubeblocks.io/v1alpha1\nkind: Backup\nmetadata: {name: pitr-base, namespace: default}\nspec: {backupPolicyRef: mysql-backup-policy}\n");
    let b = seed_phase(c, "backup", "pitr-base", &["Completed", "Failed"], 600);
    assert_eq!(b["status"]["phase"], "Completed", "{}", b["status"]);

    // Before T: a new table, rows in it and in pgbench's, each its own transaction.
    let mut before = String::from(
        "create table ledger (seq int primary key, account int not null, amount int not null);\n",
    );
    for i in 0..60 {
        before.push_str(&format!(
            "insert into ledger values ({i}, {}, {}); update pgbench_accounts set abalance = abalance + {i} where aid = {};\n",
            i % 7,
            i * 13 % 101,
            i + 1
        ));
    }
    psql_script(src_port, &before);
    let expected = table_sums(src_port);
    let now = chrono::Utc::now();
    let target = chrono::DateTime::from_timestamp(now.timestamp() + 2, 0).unwrap();
    while chrono::Utc::now() < target + chrono::TimeDelta::milliseconds(1500) {
        std::thread::sleep(Duration::from_millis(100));
    }
    // After T: more rows, deletions and a table that must not come back.
    let mut after =
        String::from("create table after_target (id int);\ninsert into after_target values (1);\n");
    for i in 60..120 {
        after.push_str(&format!("insert into ledger values ({i}, 1, 1);\n"));
    }
    after.push_str("delete from notes where id <= 100;\n");
    psql_script(src_port, &after);
    assert_ne!(table_sums(src_port), expected);
    // Finish the segment holding the last transactions now rather than at the archiver's
    // next switch (every five minutes, the schedule's interval).
    psql(src_port, "select pg_switch_wal()");
    let target_text = target.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    c.wait_for(
        "the WAL archive past the chosen second",
        Duration::from_secs(120),
        || {
            let b = c.get(&[
                "backups.dataprotection.kubeblocks.io",
                "-n",
                "default",
                archive,
            ])?;
            let end = b.pointer("/status/timeRange/end")?.as_str()?;
            (chrono::DateTime::parse_from_rfc3339(end).ok()? > target).then_some(())
        },
    );

    c.apply(&format!(
        "apiVersion: kubeblocks.io/v1alpha1\nkind: Restore\nmetadata: {{name: pitr, namespace: default}}\nspec:\n  backupRef: pitr-base\n  clusterRef: {{name: pg-pitr}}\n  pitr: {{targetTime: \"{target_text}\"}}\n"
    ));
    let r = seed_phase(c, "restore", "pitr", &["Completed", "Failed"], 600);
    assert_eq!(r["status"]["phase"], "Completed", "{}", r["status"]);
    let dp = c
        .get(&[
            "restores.dataprotection.kubeblocks.io",
            "-n",
            "default",
            "pitr",
        ])
        .expect("the dataprotection Restore");
    assert_eq!(dp["spec"]["restoreTime"], target_text.as_str());
    let prepared: Vec<&str> = dp["status"]["actions"]["prepareData"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["backupName"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(prepared.first(), Some(&"pitr-base"), "{prepared:?}");
    assert_eq!(prepared.last(), Some(&archive), "{prepared:?}");
    ready_pod(c, "pg-pitr-0");
    c.wait_for(
        "the restored server out of recovery",
        Duration::from_secs(120),
        || {
            // Connections may be refused for a moment while the server promotes.
            let out = Command::new(Path::new(PG_BIN).join("psql"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &pitr_port.to_string(),
                    "-U",
                    "postgres",
                ])
                .args([
                    "-d",
                    "postgres",
                    "-X",
                    "-At",
                    "-c",
                    "select pg_is_in_recovery()",
                ])
                .stdin(Stdio::null())
                .output()
                .ok()?;
            (out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "f")
                .then_some(())
        },
    );
    assert_eq!(
        table_sums(pitr_port),
        expected,
        "exactly the rows committed before {target_text}"
    );
    assert_eq!(psql(pitr_port, "select count(*) from ledger"), "60");
}

/// Runs a script of statements, each its own transaction.
fn psql_script(port: u16, sql: &str) {
    use std::io::Write;
    let mut child = Command::new(Path::new(PG_BIN).join("psql"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .args([
            "-d",
            "postgres",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(sql.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "psql script: {}", stderr(&out));
}
