//! End-to-end: Backups run by the real `dprepo-controller` on kube-sim, with a real
//! PostgreSQL server (Debian's postgresql package) as the target and an S3 BackupRepo on
//! the suite's moto server (`DPREPO_TEST_S3_ENDPOINT`).
//!
//! Build first: `cargo build --workspace --bins`. Needs root (kube-sim's runner),
//! `kubectl`, PostgreSQL 15 binaries (`apt-get install postgresql`) and moto.

mod common;

use common::cluster::*;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The S3 location of this cluster's repository, and the manifests of a Tool-access
/// StorageProvider and BackupRepo on it.
fn s3_repo_manifests(c: &Cluster, repo: &str) -> (String, String) {
    let prefix = c
        .dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_lowercase();
    let root = format!("{S3_BUCKET}/{prefix}");
    let provider = s3_storage_provider("s3-test");
    let yaml = format!(
        r#"
{provider}---
apiVersion: v1
kind: Secret
metadata: {{name: s3-creds, namespace: dprepo-system}}
stringData: {{accessKeyId: test, secretAccessKey: test, dprepoPassword: e2e-backup-key}}
---
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: BackupRepo
metadata: {{name: {repo}}}
spec:
  storageProviderRef: s3-test
  accessMethod: Tool
  pvReclaimPolicy: Retain
  config: {{bucket: "{root}", endpoint: "{endpoint}"}}
  credential: {{name: s3-creds, namespace: dprepo-system}}
"#,
        endpoint = s3_endpoint()
    );
    (root, yaml)
}

/// Runs `dprepo ARGS` on the host against the S3 repository at `root`.
fn dprepo_s3(root: &str, args: &[&str], dir: &Path) -> Output {
    let conf = dir.join("host-datasafed.conf");
    std::fs::write(
        &conf,
        format!(
            "[storage]\ntype = s3\nendpoint = {}\nroot = {root}\naccess_key_id = test\nsecret_access_key = test\nforce_path_style = true\n",
            s3_endpoint()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(dprepo_bin());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("DPREPO_") || k.starts_with("DATASAFED_") || k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .arg("--datasafed-conf")
        .arg(&conf)
        .env("DPREPO_PASSWORD", "e2e-backup-key")
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .stdin(Stdio::null());
    cmd.output().expect("dprepo")
}

fn dprepo_json(root: &str, args: &[&str], dir: &Path) -> Value {
    let out = dprepo_s3(root, args, dir);
    assert!(out.status.success(), "dprepo {args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// The PostgreSQL target: a pod running the host's postgres as user postgres on `port`,
/// its data directory made by an init container, and the account Secret.
fn postgres_manifests(port: u16) -> String {
    let uid = service_id("-u", "postgres");
    format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: pg-account, namespace: db}}
stringData: {{username: postgres, password: unused-trust-auth}}
---
apiVersion: v1
kind: Pod
metadata:
  name: pg-0
  namespace: db
  labels: {{app.kubernetes.io/instance: pg, kubeblocks.io/role: primary, app: pg}}
spec:
  securityContext: {{runAsUser: {uid}, fsGroup: {uid}}}
  initContainers:
  - name: initdb
    image: postgres:15
    command: [sh, -c, "{PG_BIN}/initdb -D /data/pgdata --auth=trust -U postgres >/dev/null"]
    volumeMounts: [{{name: data, mountPath: /data}}]
  containers:
  - name: postgresql
    image: postgres:15
    command: [{PG_BIN}/postgres, -D, /data/pgdata, -p, "{port}", -k, /tmp, -c, listen_addresses=127.0.0.1, -c, fsync=off]
    ports: [{{name: tcp-postgresql, containerPort: {port}}}]
    readinessProbe:
      tcpSocket: {{port: {port}}}
      periodSeconds: 1
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes: [{{name: data, emptyDir: {{}}}}]
"#
    )
}

/// The ActionSet, written the way KubeBlocks' postgresql addon writes its basebackup
/// script, and the BackupPolicy.
fn backup_manifests(backoff: u32) -> String {
    format!(
        r#"
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: ActionSet
metadata: {{name: pg-basebackup}}
spec:
  backupType: Full
  env:
  - {{name: DATA_DIR, value: /data/pgdata}}
  backup:
    backupData:
      image: postgres:15
      runOnTargetPodNode: true
      syncProgress: {{enabled: true, intervalSeconds: 1}}
      command:
      - bash
      - -c
      - |
        set -e
        set -o pipefail
        export PATH="$PATH:$DP_DATASAFED_BIN_PATH"
        export DATASAFED_BACKEND_BASE_PATH="$DP_BACKUP_BASE_PATH"
        export PGPASSWORD=${{DP_DB_PASSWORD}}
        # if the script exits with a non-zero exit code, touch a file to indicate
        # that the backup failed: the manager sidecar stops waiting.
        function handle_exit() {{
          exit_code=$?
          if [ $exit_code -ne 0 ]; then
            echo "failed with exit code $exit_code"
            touch "${{DP_BACKUP_INFO_FILE}}.exit"
            exit 1
          fi
        }}
        trap handle_exit EXIT
        START_TIME=$(date -u '+%Y-%m-%dT%H:%M:%SZ')
        echo "" | pg_basebackup -Ft -Pv -c fast -Xf -D - -h ${{DP_DB_HOST}} -U ${{DP_DB_USER}} -p ${{DP_DB_PORT}} -W | datasafed push -z zstd-fastest - "/${{DP_BACKUP_NAME}}.tar.zst"
        STOP_TIME=$(date -u '+%Y-%m-%dT%H:%M:%SZ')
        TOTAL_SIZE=$(datasafed stat / | grep TotalSize | awk '{{print $2}}')
        echo "{{\"totalSize\":\"$TOTAL_SIZE\",\"timeRange\":{{\"start\":\"${{START_TIME}}\",\"end\":\"${{STOP_TIME}}\"}}}}" > "${{DP_BACKUP_INFO_FILE}}"
---
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: ActionSet
metadata: {{name: fails}}
spec:
  backupType: Full
  backup:
    backupData:
      image: busybox
      command: [sh, -c, "echo 'pg_basebackup: error: connection refused' >&2; touch ${{DP_BACKUP_INFO_FILE}}.exit; exit 1"]
---
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: ActionSet
metadata: {{name: sleeps}}
spec:
  backupType: Full
  backup:
    backupData:
      image: busybox
      command: [sh, -c, "echo started; sleep 600"]
---
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: BackupPolicy
metadata: {{name: pg-policy, namespace: db}}
spec:
  backupRepoName: s3
  backoffLimit: {backoff}
  target:
    podSelector:
      matchLabels: {{app: pg}}
    connectionCredential: {{secretName: pg-account, usernameKey: username, passwordKey: password}}
  backupMethods:
  - name: basebackup
    actionSetName: pg-basebackup
  - name: fails
    actionSetName: fails
  - name: sleeps
    actionSetName: sleeps
---
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: BackupPolicy
metadata: {{name: missing-actionset, namespace: db}}
spec:
  backupRepoName: s3
  target:
    podSelector:
      matchLabels: {{app: pg}}
  backupMethods:
  - name: no-actionset
    actionSetName: does-not-exist
---
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: BackupPolicy
metadata: {{name: nobody, namespace: db}}
spec:
  backupRepoName: s3
  target:
    podSelector:
      matchLabels: {{app: no-such-app}}
  backupMethods:
  - name: basebackup
    actionSetName: pg-basebackup
"#
    )
}

fn backup_yaml(name: &str, method: &str, policy: &str, deletion: &str) -> String {
    format!(
        "apiVersion: dataprotection.kubeblocks.io/v1alpha1\nkind: Backup\nmetadata: {{name: {name}, namespace: db}}\nspec: {{backupPolicyName: {policy}, backupMethod: {method}, deletionPolicy: {deletion}, retentionPeriod: 7d}}\n"
    )
}

fn wait_phase(c: &Cluster, name: &str, phases: &[&str], secs: u64) -> Value {
    c.wait_for(
        &format!("Backup {name} in {phases:?}"),
        Duration::from_secs(secs),
        || {
            c.get(&["backup", "-n", "db", name]).filter(|b| {
                b.pointer("/status/phase")
                    .and_then(Value::as_str)
                    .is_some_and(|p| phases.contains(&p))
            })
        },
    )
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

fn extras_of(b: &Value) -> Value {
    b["status"]["extras"]
        .as_array()
        .and_then(|a| a.iter().find(|m| m["type"] == "dprepo"))
        .cloned()
        .unwrap_or_else(|| panic!("no dprepo extras in {}", b["status"]))
}

fn num(v: &Value) -> u64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a number: {v}"))
}

fn start_with_repo() -> (Cluster, String, u16) {
    require_postgres();
    ensure_s3_bucket();
    let mut c = Cluster::start();
    install(&mut c);
    let (root, repo) = s3_repo_manifests(&c, "s3");
    c.apply(&repo);
    c.wait_for("BackupRepo s3 Ready", Duration::from_secs(180), || {
        c.get(&["backuprepo", "s3"])
            .filter(|r| r.pointer("/status/phase") == Some(&Value::from("Ready")))
    });
    let port = free_port();
    // As on a real cluster, the namespace's default service account comes a moment later.
    c.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: db}\n");
    c.wait_for(
        "the default service account of db",
        Duration::from_secs(30),
        || c.get(&["sa", "-n", "db", "default"]),
    );
    c.apply(&postgres_manifests(port));
    c.wait_for("PostgreSQL ready", Duration::from_secs(120), || {
        c.get(&["pod", "-n", "db", "pg-0"]).filter(|p| {
            p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|x| x["type"] == "Ready" && x["status"] == "True")
            })
        })
    });
    (c, root, port)
}

/// A physical PostgreSQL backup through an addon-style pg_basebackup script: Completed
/// with totalSize, timeRange, path and dprepo's figures; after a small pgbench run the
/// second backup stores at most 10% of the first's bytes; the data restores to a server
/// that answers; deleting with Delete removes the files and the requested
/// GarbageCollection run shrinks the repository; Retain keeps them.
#[test]
fn postgres_physical_backups_deduplicate_and_deletion_frees_space() {
    let (c, root, port) = start_with_repo();
    pgbench(port, &["-i", "-q", "-s", "10"]);
    c.apply(&backup_manifests(2));
    c.wait_for("BackupPolicy Available", Duration::from_secs(60), || {
        c.get(&["bp", "-n", "db", "pg-policy"])
            .filter(|p| p.pointer("/status/phase") == Some(&Value::from("Available")))
    });
    c.apply(&backup_yaml(
        "pg-full-1",
        "basebackup",
        "pg-policy",
        "Delete",
    ));
    let b1 = wait_phase(&c, "pg-full-1", &["Completed", "Failed"], 600);
    assert_eq!(b1["status"]["phase"], "Completed", "{}", b1["status"]);
    let s1 = &b1["status"];
    assert_eq!(s1["path"], "/db/pg-full-1");
    assert_eq!(s1["backupRepoName"], "s3");
    assert_eq!(s1["formatVersion"], "0.1.0");
    assert!(
        s1["timeRange"]["start"].is_string() && s1["timeRange"]["end"].is_string(),
        "{s1}"
    );
    assert!(
        s1["expiration"].is_string() && s1["duration"].is_string(),
        "{s1}"
    );
    assert_eq!(s1["target"]["selectedTargetPods"][0], "pg-0");
    let total1 = num(&s1["totalSize"]);
    let x1 = extras_of(&b1);
    let (logical1, stored1) = (num(&x1["logicalBytes"]), num(&x1["storedBytes"]));
    assert_eq!(
        logical1, total1,
        "totalSize is datasafed's logical size: {s1}"
    );
    assert!(
        logical1 > 100 << 20,
        "a scale-10 cluster is over 100 MiB: {x1}"
    );
    assert!(stored1 > 0 && stored1 < logical1, "{x1}");
    assert_eq!(
        b1["metadata"]["labels"]["dataprotection.kubeblocks.io/backup-type"],
        "Full"
    );
    assert!(b1["metadata"]["finalizers"]
        .as_array()
        .unwrap()
        .contains(&Value::from("dataprotection.kubeblocks.io/finalizer")));
    // The repository holds the backup's file and the Backup's JSON, tagged by path.
    let snaps = dprepo_json(
        &root,
        &["snapshots", "--json", "--path", "/db/pg-full-1"],
        c.dir.path(),
    );
    let paths: Vec<String> = snaps
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| {
            s["tags"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|t| t.as_str())
                .map(str::to_string)
        })
        .filter(|t| t.starts_with("datasafed:path="))
        .collect();
    assert!(
        paths.contains(&"datasafed:path=/db/pg-full-1/pg-full-1.tar.zst".to_string()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"datasafed:path=/db/pg-full-1/kubeblocks-backup.json".to_string()),
        "{paths:?}"
    );
    let ids: Vec<&str> = x1["snapshots"].as_str().unwrap().split(',').collect();
    assert!(snaps.as_array().unwrap().iter().any(|s| s["id"] == ids[0]));
    // The Jobs are gone once Completed.
    c.wait_for("the backup Jobs deleted", Duration::from_secs(60), || {
        c.get(&[
            "jobs",
            "-n",
            "db",
            "-l",
            "dataprotection.kubeblocks.io/backup-name=pg-full-1",
        ])
        .filter(|l| l["items"].as_array().is_some_and(|i| i.is_empty()))
    });
    assert!(c
        .events_of("pg-full-1")
        .iter()
        .any(|e| e.starts_with("CreatedBackup")));

    // A small pgbench run, then a second backup: mostly deduplicated.
    pgbench(port, &["-t", "20", "-c", "1", "-n"]);
    c.apply(&backup_yaml(
        "pg-full-2",
        "basebackup",
        "pg-policy",
        "Retain",
    ));
    let b2 = wait_phase(&c, "pg-full-2", &["Completed", "Failed"], 600);
    assert_eq!(b2["status"]["phase"], "Completed", "{}", b2["status"]);
    let x2 = extras_of(&b2);
    let (logical2, stored2) = (num(&x2["logicalBytes"]), num(&x2["storedBytes"]));
    eprintln!(
        "FIGURES first: logical {logical1} stored {stored1}; second: logical {logical2} stored {stored2} ({:.2}% of the first's stored); dedup ratio {}",
        stored2 as f64 * 100.0 / stored1 as f64,
        x2["dedupRatio"]
    );
    assert!(logical2 > logical1 / 2, "{x2}");
    assert!(
        stored2 * 10 <= stored1,
        "second backup stored {stored2} bytes, over 10% of the first's {stored1}"
    );
    // The data is a valid base backup: pull it and list the tar.
    let pulled = c.dir.path().join("pg-full-2.tar");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} datasafed -c {} pull -d zstd-fastest /db/pg-full-2/pg-full-2.tar.zst - > {}",
            dprepo_bin().display(),
            c.dir.path().join("host-datasafed.conf").display(),
            pulled.display()
        ))
        .env("DPREPO_PASSWORD", "e2e-backup-key")
        .env("XDG_CACHE_HOME", c.dir.path().join("cache"))
        .output()
        .unwrap();
    assert!(out.status.success(), "datasafed pull: {}", stderr(&out));
    let listing = Command::new("tar")
        .arg("-tf")
        .arg(&pulled)
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&listing.stdout);
    assert!(
        names.contains("PG_VERSION") && names.contains("backup_label"),
        "tar -tf of the pulled backup ({} bytes): {names}{}",
        std::fs::metadata(&pulled).map(|m| m.len()).unwrap_or(0),
        stderr(&listing)
    );

    // Delete: the deleter removes the files, a GC run is requested and frees space.
    let before = dprepo_json(&root, &["stats", "--json"], c.dir.path());
    c.kubectl_ok(&["delete", "backup", "-n", "db", "pg-full-1", "--wait=false"]);
    c.wait_for("pg-full-1 gone", Duration::from_secs(300), || {
        c.get(&["backup", "-n", "db", "pg-full-1"])
            .is_none()
            .then_some(())
    });
    let snaps = dprepo_json(
        &root,
        &["snapshots", "--json", "--path", "/db/pg-full-1"],
        c.dir.path(),
    );
    assert_eq!(snaps.as_array().unwrap().len(), 0, "{snaps}");
    let gc = c.wait_for(
        "a GC run after the deletion",
        Duration::from_secs(300),
        || {
            c.get(&["gc", "s3"]).filter(|g| {
                g["status"]["history"].as_array().is_some_and(|h| {
                    h.iter()
                        .any(|r| r["trigger"] == "BackupDeleted" && r["result"].is_string())
                })
            })
        },
    );
    let after = dprepo_json(&root, &["stats", "--json"], c.dir.path());
    let size = |s: &Value| s["repository"]["pack_bytes"].as_u64().unwrap();
    eprintln!(
        "FIGURES repository pack bytes before delete {} after GC {}; GC run {}",
        size(&before),
        size(&after),
        gc["status"]["history"][0]
    );
    assert!(
        size(&after) < size(&before),
        "GC freed nothing: {}",
        gc["status"]
    );
    // One deletion, one run (a retried finalizer removal once asked for a second), recorded
    // once (a finished run's currentRun once stayed on the server, so every reconcile
    // recorded it again).
    std::thread::sleep(Duration::from_secs(3));
    let gc = c.get(&["gc", "s3"]).expect("the GarbageCollection");
    let runs = gc["status"]["history"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(gc["status"].get("currentRun").is_none(), "{}", gc["status"]);
    assert_eq!(runs[0]["result"], "Succeeded", "{runs:?}");
    // Retain: the Backup is kept (Deleting, finalizer held) with its data.
    c.kubectl_ok(&["delete", "backup", "-n", "db", "pg-full-2", "--wait=false"]);
    c.wait_for("a Retain event", Duration::from_secs(120), || {
        c.events_of("pg-full-2")
            .iter()
            .any(|e| e.starts_with("Retain"))
            .then_some(())
    });
    let b2 = c.get(&["backup", "-n", "db", "pg-full-2"]).expect("kept");
    assert_eq!(b2["status"]["phase"], "Deleting");
    let snaps = dprepo_json(
        &root,
        &["snapshots", "--json", "--path", "/db/pg-full-2"],
        c.dir.path(),
    );
    assert!(!snaps.as_array().unwrap().is_empty());
    let (code, metrics) = c.http_get(c.metrics_port, "/metrics");
    assert_eq!(code, 200);
    assert!(metrics.contains("dprepo_backup_phase_total"), "{metrics}");
    assert!(!c.controller_log().contains("panicked"));
}

/// Each failure gives Failed with a failureReason a person understands, and the
/// controller goes on with the other Backups: a script that exits 1, a missing
/// ActionSet, a repository that is not Ready, no target pod, a killed Job pod.
#[test]
fn failures_are_reported_and_other_backups_go_on() {
    let (c, _root, _port) = start_with_repo();
    c.apply(&backup_manifests(0));
    c.apply(
        "apiVersion: dataprotection.kubeblocks.io/v1alpha1\nkind: BackupRepo\nmetadata: {name: broken}\nspec: {storageProviderRef: no-such-provider, pvReclaimPolicy: Retain}\n",
    );
    c.apply(&backup_yaml("exits-1", "fails", "pg-policy", "Delete"));
    c.apply(&backup_yaml(
        "no-actionset",
        "no-actionset",
        "missing-actionset",
        "Delete",
    ));
    c.apply(&backup_yaml("no-pod", "basebackup", "nobody", "Delete"));
    c.apply(&backup_yaml("killed", "sleeps", "pg-policy", "Delete"));
    c.apply(
        "apiVersion: dataprotection.kubeblocks.io/v1alpha1\nkind: Backup\nmetadata:\n  name: repo-not-ready\n  namespace: db\n  labels: {dataprotection.kubeblocks.io/backup-repo-name: broken}\nspec: {backupPolicyName: pg-policy, backupMethod: basebackup, deletionPolicy: Delete}\n",
    );
    let reason = |name: &str| -> String {
        let b = wait_phase(&c, name, &["Failed", "Completed"], 300);
        assert_eq!(b["status"]["phase"], "Failed", "{name}: {}", b["status"]);
        b["status"]["failureReason"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let r = reason("exits-1");
    assert!(
        r.contains("action dp-backup-0") && r.contains("BackoffLimitExceeded"),
        "{r}"
    );
    assert!(
        r.contains("exit code 1") && r.contains("connection refused"),
        "{r}"
    );
    // The policy names the missing ActionSet: it is Unavailable, and says why.
    let r = reason("no-actionset");
    assert!(
        r.starts_with("BackupPolicy missing-actionset is Unavailable: ")
            && r.contains("ActionSet does-not-exist not found")
            || r == "ActionSet does-not-exist (backup method no-actionset) not found",
        "{r}"
    );
    let r = reason("repo-not-ready");
    assert!(r.starts_with("BackupRepo broken is not Ready"), "{r}");
    let r = reason("no-pod");
    assert!(
        r.starts_with("no running pod in namespace db matches the podSelector"),
        "{r}"
    );
    // Kill the sleeping backup's pod.
    let pod = c.wait_for(
        "the sleeping backup's pod running",
        Duration::from_secs(120),
        || {
            c.get(&[
                "pods",
                "-n",
                "db",
                "-l",
                "dataprotection.kubeblocks.io/backup-name=killed",
            ])
            .and_then(|l| {
                l["items"]
                    .as_array()?
                    .iter()
                    .find(|p| p["status"]["phase"] == "Running")
                    .cloned()
            })
        },
    );
    let pod_name = pod["metadata"]["name"].as_str().unwrap().to_string();
    c.kubectl_ok(&[
        "delete",
        "pod",
        "-n",
        "db",
        &pod_name,
        "--grace-period=0",
        "--force",
    ]);
    let r = reason("killed");
    assert!(
        r.contains("action dp-backup-0") && r.contains("failed"),
        "{r}"
    );
    // Failed backups lose their Jobs; events name the failure.
    c.wait_for("the failed Jobs deleted", Duration::from_secs(60), || {
        c.get(&["jobs", "-n", "db"])
            .filter(|l| l["items"].as_array().is_some_and(|i| i.is_empty()))
    });
    assert!(c
        .events_of("exits-1")
        .iter()
        .any(|e| e.starts_with("BackupFailed")));
    // Meanwhile a good backup completes.
    c.apply(&backup_yaml("good", "basebackup", "pg-policy", "Delete"));
    let good = wait_phase(&c, "good", &["Completed", "Failed"], 600);
    assert_eq!(good["status"]["phase"], "Completed", "{}", good["status"]);
    assert!(!c.controller_log().contains("panicked"));
}
