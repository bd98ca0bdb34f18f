//! End-to-end: Exec actions (commands run in the target pod's container through the
//! pods/exec API, from a Job in the controller's namespace running `dprepo-controller
//! exec` as the exec worker) in Backups and Restores, run by the real `dprepo-controller`
//! on kube-sim: a real MariaDB server backed up physically (`mariabackup --stream=xbstream
//! | datasafed push`, as KubeBlocks' MySQL-family addons do) between a preBackup and a
//! postBackup Exec step, restored into a new volume (`datasafed pull | mbstream -x`,
//! `mariabackup --prepare`) and checked table by table after a postReady Exec step; the
//! failure paths (exit status, timeout, `onError: Continue`) and the retry of a failed
//! Backup from the action that failed.
//!
//! Build first: `cargo build -p dprepo-tools -p kube-sim -p dprepo-controller --bins`.
//! Needs root (kube-sim's runner), `kubectl` (1.30+), and Debian's `mariadb-server` and
//! `mariadb-backup` packages.

mod common;

use common::cluster::*;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const MARIADB_PROGRAMS: [&str; 5] = [
    "/usr/sbin/mariadbd",
    "/usr/bin/mariadb-install-db",
    "/usr/bin/mariadb",
    "/usr/bin/mariabackup",
    "/usr/bin/mbstream",
];

fn require_mariadb() {
    for p in MARIADB_PROGRAMS {
        assert!(
            Path::new(p).is_file(),
            "{p} is missing: `apt-get install mariadb-server mariadb-backup` (Debian's packages) to run these tests"
        );
    }
}

fn start() -> Cluster {
    let mut c = Cluster::start();
    install(&mut c);
    c.apply(&local_mount_repo("db"));
    c.wait_for("BackupRepo local Ready", Duration::from_secs(180), || {
        c.get(&["backuprepo", "local"])
            .filter(|r| r.pointer("/status/phase") == Some(&Value::from("Ready")))
    });
    c.wait_for(
        "the default service account of db",
        Duration::from_secs(30),
        || c.get(&["sa", "-n", "db", "default"]),
    );
    c
}

/// A MariaDB pod `name` (label `app: <app>`) serving the data directory `/data/mysql` of
/// claim `claim` on `port`, as the mysql user; the data directory is made by
/// mariadb-install-db when the volume has none (a restored volume has one). The server
/// creates the account `dp` (all privileges) at each start; root logs in over the socket.
fn mariadb_pod(name: &str, app: &str, claim: &str, port: u16) -> String {
    let (uid, gid) = (service_id("-u", "mysql"), service_id("-g", "mysql"));
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: db
  labels: {{app: {app}, app.kubernetes.io/instance: {app}}}
spec:
  securityContext: {{runAsUser: {uid}, runAsGroup: {gid}, fsGroup: {gid}}}
  initContainers:
  - name: install
    image: mariadb:10.11
    command: [sh, -c, "[ -d /data/mysql/mysql ] || mariadb-install-db --no-defaults --datadir=/data/mysql --auth-root-authentication-method=normal --skip-test-db >/dev/null"]
    volumeMounts: [{{name: data, mountPath: /data}}]
  containers:
  - name: mariadb
    image: mariadb:10.11
    command: [/usr/sbin/mariadbd, --no-defaults, --datadir=/data/mysql, --socket=/data/mysqld.sock, --port={port}, --bind-address=127.0.0.1, --pid-file=/data/mysqld.pid, --log-error=/data/mysqld.err, --skip-name-resolve, --innodb-buffer-pool-size=64M, --init-file=/etc/maria/init.sql]
    ports: [{{name: mariadb, containerPort: {port}}}]
    readinessProbe:
      tcpSocket: {{port: {port}}}
      periodSeconds: 1
    volumeMounts:
    - {{name: data, mountPath: /data}}
    - {{name: init, mountPath: /etc/maria}}
  volumes:
  - name: data
    persistentVolumeClaim: {{claimName: {claim}}}
  - name: init
    configMap: {{name: maria-init}}
"#
    )
}

const MARIADB_OBJECTS: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: maria-init, namespace: db}
data:
  init.sql: |
    CREATE USER IF NOT EXISTS 'dp'@'%' IDENTIFIED BY 'dp-secret';
    GRANT ALL PRIVILEGES ON *.* TO 'dp'@'%';
---
apiVersion: v1
kind: Secret
metadata: {name: maria-account, namespace: db}
stringData: {username: dp, password: dp-secret}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data-maria-0, namespace: db}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
"#;

/// The ActionSet, written the way KubeBlocks' MySQL-family addons write their xtrabackup
/// scripts (stream, push, backup.info with totalSize and timeRange, `.exit` on failure),
/// with Exec steps around it writing marker rows; its restore pulls, extracts and
/// prepares, and a postReady Exec step writes a row with the credential's account.
const MARIADB_ACTIONS: &str = r#"
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: ActionSet
metadata: {name: mariadb-physical}
spec:
  backupType: Full
  env:
  - {name: DATA_DIR, value: /data/mysql}
  backup:
    preBackup:
    - exec:
        container: mariadb
        command: [mariadb, --socket=/data/mysqld.sock, -uroot, -e, "INSERT INTO shop.marker (note) VALUES ('pre-backup')"]
        timeout: 1m
    backupData:
      image: mariadb:10.11
      runOnTargetPodNode: true
      syncProgress: {enabled: true, intervalSeconds: 1}
      command:
      - bash
      - -c
      - |
        set -e
        set -o pipefail
        export PATH="$PATH:$DP_DATASAFED_BIN_PATH"
        export DATASAFED_BACKEND_BASE_PATH="$DP_BACKUP_BASE_PATH"
        function handle_exit() {
          exit_code=$?
          if [ $exit_code -ne 0 ]; then
            echo "failed with exit code $exit_code"
            tail -n 20 /tmp/mariabackup.log || true
            touch "${DP_BACKUP_INFO_FILE}.exit"
            exit 1
          fi
        }
        trap handle_exit EXIT
        START_TIME=$(date -u '+%Y-%m-%dT%H:%M:%SZ')
        mkdir -p /tmp/mariabackup
        mariabackup --backup --stream=xbstream --target-dir=/tmp/mariabackup \
          --host=${DP_DB_HOST} --port=${DP_DB_PORT} --user=${DP_DB_USER} --password=${DP_DB_PASSWORD} \
          --datadir=${DATA_DIR} 2> /tmp/mariabackup.log \
          | datasafed push -z zstd-fastest - "/${DP_BACKUP_NAME}.xbstream.zst"
        STOP_TIME=$(date -u '+%Y-%m-%dT%H:%M:%SZ')
        TOTAL_SIZE=$(datasafed stat / | grep TotalSize | awk '{print $2}')
        echo "{\"totalSize\":\"$TOTAL_SIZE\",\"timeRange\":{\"start\":\"${START_TIME}\",\"end\":\"${STOP_TIME}\"}}" > "${DP_BACKUP_INFO_FILE}"
    postBackup:
    - exec:
        command: [mariadb, --socket=/data/mysqld.sock, -uroot, -e, "INSERT INTO shop.marker (note) VALUES ('post-backup')"]
  restore:
    prepareData:
      image: mariadb:10.11
      command:
      - bash
      - -c
      - |
        set -e
        set -o pipefail
        export PATH="$PATH:$DP_DATASAFED_BIN_PATH"
        export DATASAFED_BACKEND_BASE_PATH="$DP_BACKUP_BASE_PATH"
        mkdir -p ${DATA_DIR}
        datasafed pull -d zstd-fastest "/${DP_BACKUP_NAME}.xbstream.zst" - | mbstream -x -C ${DATA_DIR}
        mariabackup --prepare --target-dir=${DATA_DIR} > /tmp/prepare.log 2>&1 || { tail -n 30 /tmp/prepare.log; exit 1; }
        chown -R mysql:mysql ${DATA_DIR}
    postReady:
    - exec:
        container: mariadb
        command: [sh, -c, "mariadb -h\"$DP_DB_HOST\" -P\"$DP_DB_PORT\" -u\"$DP_DB_USER\" -p\"$DP_DB_PASSWORD\" -e \"INSERT INTO shop.marker (note) VALUES ('post-ready $DP_BACKUP_NAME')\""]
---
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: BackupPolicy
metadata: {name: maria-policy, namespace: db}
spec:
  backupRepoName: local
  backoffLimit: 0
  target:
    podSelector:
      matchLabels: {app: maria}
    connectionCredential: {secretName: maria-account, usernameKey: username, passwordKey: password}
  backupMethods:
  - name: physical
    actionSetName: mariadb-physical
    targetVolumes:
      volumes: [data]
      volumeMounts: [{name: data, mountPath: /data}]
"#;

const SCHEMA_AND_DATA: &str = "
SET SESSION max_recursive_iterations = 100000;
CREATE DATABASE shop;
CREATE TABLE shop.orders (id INT PRIMARY KEY, customer INT NOT NULL, body VARCHAR(64) NOT NULL, amount DECIMAL(10,2));
CREATE TABLE shop.customers (id INT PRIMARY KEY, name VARCHAR(100) CHARACTER SET utf8mb4 NOT NULL) ENGINE=InnoDB;
CREATE TABLE shop.audit (id INT AUTO_INCREMENT PRIMARY KEY, line TEXT) ENGINE=Aria;
CREATE TABLE shop.marker (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(100) NOT NULL);
INSERT INTO shop.orders WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 20000)
  SELECT n, n % 500, MD5(n), n * 1.25 FROM s;
INSERT INTO shop.customers WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 500)
  SELECT n, CONCAT('customer ', n, ' \u{e9}t\u{e9}') FROM s;
INSERT INTO shop.audit (line) WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 3000)
  SELECT REPEAT(MD5(n), 4) FROM s;
";

/// `mariadb` on the host against the server on `port` as `dp`; stdout.
fn sql(port: u16, query: &str) -> String {
    let out = Command::new("mariadb")
        .args([
            "--no-defaults",
            "-h127.0.0.1",
            &format!("-P{port}"),
            "-udp",
            "-pdp-secret",
            "--default-character-set=utf8mb4",
            "-N",
            "-B",
            "-e",
            query,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("mariadb client");
    assert!(
        out.status.success(),
        "mariadb -e {query:?}: {}",
        stderr(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Row count and `CHECKSUM TABLE` of each table of the source data.
fn table_sums(port: u16) -> Vec<(String, String, String)> {
    ["orders", "customers", "audit"]
        .iter()
        .map(|t| {
            let count = sql(port, &format!("SELECT COUNT(*) FROM shop.{t}"));
            let sum = sql(port, &format!("CHECKSUM TABLE shop.{t} EXTENDED"));
            (
                t.to_string(),
                count.trim().to_string(),
                sum.trim().to_string(),
            )
        })
        .collect()
}

fn markers(port: u16) -> Vec<String> {
    sql(port, "SELECT note FROM shop.marker ORDER BY id")
        .lines()
        .map(str::to_string)
        .collect()
}

fn wait_ready(c: &Cluster, pod: &str) {
    c.wait_for(&format!("{pod} ready"), Duration::from_secs(180), || {
        c.get(&["pod", "-n", "db", pod]).filter(|p| {
            p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|x| x["type"] == "Ready" && x["status"] == "True")
            })
        })
    });
}

fn wait_backup(c: &Cluster, name: &str, phases: &[&str], secs: u64) -> Value {
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

fn backup_yaml(name: &str, policy: &str, method: &str) -> String {
    format!(
        "apiVersion: dataprotection.kubeblocks.io/v1alpha1\nkind: Backup\nmetadata: {{name: {name}, namespace: db}}\nspec: {{backupPolicyName: {policy}, backupMethod: {method}, deletionPolicy: Retain}}\n"
    )
}

/// The host directory of the volume bound to claim `db/<claim>`.
fn volume_dir(c: &Cluster, claim: &str) -> PathBuf {
    let pvc = c.wait_for("the claim bound", Duration::from_secs(60), || {
        c.get(&["pvc", "-n", "db", claim])
            .filter(|p| p.pointer("/spec/volumeName").is_some())
    });
    let pv = c
        .get(&["pv", pvc["spec"]["volumeName"].as_str().unwrap()])
        .expect("the PV");
    PathBuf::from(pv["spec"]["hostPath"]["path"].as_str().expect("hostPath"))
}

/// The repository key the controller generated for BackupRepo `local`.
fn repo_key(c: &Cluster) -> String {
    let out = c.kubectl_ok(&[
        "get",
        "secret",
        "-n",
        "dprepo-system",
        "dprepo-key-local",
        "-o",
        "jsonpath={.data.dprepoPassword}",
    ]);
    let decoded = Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut ch| {
            use std::io::Write;
            ch.stdin.take().unwrap().write_all(out.trim().as_bytes())?;
            ch.wait_with_output()
        })
        .expect("base64");
    String::from_utf8(decoded.stdout)
        .expect("key")
        .trim()
        .to_string()
}

/// `dprepo snapshots --json` of the namespace's repository volume (the Backup's claim).
fn repo_snapshots(c: &Cluster, backup: &Value) -> Vec<Value> {
    let claim = backup["status"]["persistentVolumeClaimName"]
        .as_str()
        .unwrap_or_else(|| panic!("no persistentVolumeClaimName in {}", backup["status"]));
    let dir = volume_dir(c, claim);
    let out = bare_cmd(["snapshots", "--json", "-r", dir.to_str().unwrap()])
        .env("DPREPO_PASSWORD", repo_key(c))
        .output()
        .expect("dprepo");
    assert!(out.status.success(), "dprepo snapshots: {}", stderr(&out));
    serde_json::from_slice::<Value>(&out.stdout)
        .expect("JSON")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn tags(snaps: &[Value]) -> Vec<String> {
    snaps
        .iter()
        .flat_map(|s| s["tags"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect()
}

fn action<'a>(b: &'a Value, name: &str) -> &'a Value {
    b["status"]["actions"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == name))
        .unwrap_or_else(|| panic!("no action {name} in {:#}", b["status"]))
}

/// MariaDB physical: preBackup Exec writes a marker row that the backup holds, backupData
/// streams mariabackup into the repository, postBackup Exec writes a row it does not;
/// the Backup is Completed with totalSize and dprepo's figures, its Exec steps ran as
/// Jobs in the controller's namespace; a Restore into a new volume prepares a data
/// directory a new server starts on, its postReady Exec step writes a row with the
/// connection credential's account, and every table equals the source.
#[test]
fn mariadb_physical_backup_with_exec_steps_restores_into_a_new_volume() {
    require_mariadb();
    let c = start();
    let port = free_port();
    c.apply(MARIADB_OBJECTS);
    c.apply(&mariadb_pod("maria-0", "maria", "data-maria-0", port));
    wait_ready(&c, "maria-0");
    sql(port, SCHEMA_AND_DATA);
    let source = table_sums(port);
    assert_eq!(source[0].1, "20000");

    c.apply(MARIADB_ACTIONS);
    c.wait_for("BackupPolicy Available", Duration::from_secs(60), || {
        c.get(&["bp", "-n", "db", "maria-policy"])
            .filter(|p| p.pointer("/status/phase") == Some(&Value::from("Available")))
    });
    c.apply(&backup_yaml("maria-phys", "maria-policy", "physical"));
    let b = wait_backup(&c, "maria-phys", &["Completed", "Failed"], 300);
    assert_eq!(b["status"]["phase"], "Completed", "{:#}", b["status"]);
    let total: u64 = b["status"]["totalSize"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("totalSize in {}", b["status"]));
    assert!(total > 1_000_000, "totalSize {total}");
    assert_eq!(b["status"]["path"], "/db/maria-phys");
    for name in ["dp-prebackup-0-0", "dp-backup-0", "dp-postbackup-0-0"] {
        let a = action(&b, name);
        assert_eq!(a["phase"], "Completed", "{a:#}");
        assert_eq!(a["targetPodName"], "maria-0");
    }
    // The Exec steps ran as Jobs in the controller's namespace, the data step beside the
    // Backup.
    assert_eq!(
        action(&b, "dp-prebackup-0-0")["objectRef"]["namespace"],
        "dprepo-system"
    );
    assert_eq!(action(&b, "dp-backup-0")["objectRef"]["namespace"], "db");
    let extras = b["status"]["extras"]
        .as_array()
        .and_then(|a| a.iter().find(|m| m["type"] == "dprepo"))
        .cloned()
        .unwrap_or_else(|| panic!("no dprepo extras in {}", b["status"]));
    assert!(
        extras["snapshots"].as_str().is_some_and(|s| !s.is_empty()),
        "{extras}"
    );
    assert!(extras.get("dedupRatio").is_some(), "{extras}");
    // Both markers on the source: pre-backup before the copy, post-backup after.
    assert_eq!(markers(port), ["pre-backup", "post-backup"]);
    // The exec Jobs are cleaned up with the others.
    c.wait_for("the exec Jobs deleted", Duration::from_secs(60), || {
        c.get(&[
            "jobs",
            "-n",
            "dprepo-system",
            "-l",
            "dataprotection.kubeblocks.io/backup-name=maria-phys",
        ])
        .filter(|l| l["items"].as_array().is_some_and(|a| a.is_empty()))
    });
    // The repository holds the stream and the Backup's JSON.
    let t = tags(&repo_snapshots(&c, &b));
    for want in [
        "datasafed:path=/db/maria-phys/maria-phys.xbstream.zst",
        "datasafed:path=/db/maria-phys/kubeblocks-backup.json",
    ] {
        assert!(t.contains(&want.to_string()), "{want} not in {t:?}");
    }

    // Restore into a new volume; the restored server comes up on it.
    c.apply(
        r#"
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: Restore
metadata: {name: maria-restore, namespace: db}
spec:
  backup: {name: maria-phys, namespace: db}
  prepareDataConfig:
    volumeClaimRestorePolicy: Parallel
    volumeClaims:
    - metadata: {name: data-maria-r-0}
      volumeSource: data
      mountPath: /data
      volumeClaimSpec:
        accessModes: [ReadWriteOnce]
        resources: {requests: {storage: 1Gi}}
  readyConfig:
    connectionCredential: {secretName: maria-account}
    execAction:
      target:
        podSelector: {matchLabels: {app: maria-restored}}
"#,
    );
    c.wait_for("prepareData done", Duration::from_secs(300), || {
        let r = c.get(&["restore", "-n", "db", "maria-restore"])?;
        if r.pointer("/status/phase") == Some(&Value::from("Failed")) {
            panic!("Restore failed: {:#}", r["status"]);
        }
        r.pointer("/status/actions/prepareData")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty() && a.iter().all(|x| x["status"] == "Completed"))
            .map(|_| ())
    });
    let port2 = free_port();
    c.apply(&mariadb_pod(
        "maria-r-0",
        "maria-restored",
        "data-maria-r-0",
        port2,
    ));
    wait_ready(&c, "maria-r-0");
    let r = c.wait_for("the Restore to end", Duration::from_secs(240), || {
        c.get(&["restore", "-n", "db", "maria-restore"])
            .filter(|r| {
                matches!(
                    r.pointer("/status/phase").and_then(Value::as_str),
                    Some("Completed" | "Failed")
                )
            })
    });
    assert_eq!(r["status"]["phase"], "Completed", "{:#}", r["status"]);
    let post = r["status"]["actions"]["postReady"].as_array().unwrap();
    assert_eq!(post.len(), 1, "{post:?}");
    assert_eq!(post[0]["status"], "Completed");
    // Every table equals the source; the marker table has the pre-backup row (taken
    // before the copy), not the post-backup one, and the postReady step's row.
    assert_eq!(table_sums(port2), source);
    assert_eq!(markers(port2), ["pre-backup", "post-ready maria-phys"]);
    // The credential copy made for the exec Job went with the Restore's Jobs.
    c.wait_for("the exec Secret deleted", Duration::from_secs(60), || {
        c.get(&[
            "secrets",
            "-n",
            "dprepo-system",
            "-l",
            "dataprotection.kubeblocks.io/restore=maria-restore",
        ])
        .filter(|l| l["items"].as_array().is_some_and(|a| a.is_empty()))
    });
}

const PLAIN_TARGET: &str = r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: state, namespace: db}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Pod
metadata: {name: plain-0, namespace: db, labels: {app: plain}}
spec:
  containers:
  - name: main
    image: docker.io/library/debian:12
    command: [sleep, "3600"]
    volumeMounts: [{name: state, mountPath: /state}]
  volumes:
  - name: state
    persistentVolumeClaim: {claimName: state}
"#;

/// ActionSets around a backupData Job that counts its runs in the target's volume and
/// pushes a small file: Exec steps that fail (exit 3), time out, fail under
/// `onError: Continue`, and fail only the first time (a marker file).
/// A backupData Job that counts its runs in the target's volume and pushes a small file.
const BACKUP_DATA: &str = r#"      image: docker.io/library/debian:12
      runOnTargetPodNode: true
      command:
      - sh
      - -c
      - |
        set -e
        export PATH="$PATH:$DP_DATASAFED_BIN_PATH"
        export DATASAFED_BACKEND_BASE_PATH="$DP_BACKUP_BASE_PATH"
        echo "$DP_BACKUP_NAME" >> /state/data.count
        echo "hello from $DP_BACKUP_NAME" | datasafed push - "/${DP_BACKUP_NAME}.txt"
        echo '{"totalSize":"42"}' > "$DP_BACKUP_INFO_FILE"
"#;

fn failing_actions() -> String {
    r#"
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: ActionSet
metadata: {name: exec-fails}
spec:
  backupType: Full
  backup:
    preBackup:
    - exec:
        command: [sh, -c, "echo 'FLUSH TABLES failed: table is read only' >&2; exit 3"]
    backupData:
{DATA}---
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: ActionSet
metadata: {name: exec-times-out}
spec:
  backupType: Full
  backup:
    preBackup:
    - exec:
        command: [sh, -c, "echo waiting; sleep 60"]
        timeout: 2s
    backupData:
{DATA}
---
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: ActionSet
metadata: {name: exec-continue}
spec:
  backupType: Full
  backup:
    backupData:
{DATA}
    postBackup:
    - exec:
        command: [sh, -c, "echo 'cleanup failed' >&2; exit 1"]
        onError: Continue
---
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: ActionSet
metadata: {name: fails-once}
spec:
  backupType: Full
  backup:
    preBackup:
    - exec:
        command: [sh, -c, "echo run >> /state/pre.count"]
    backupData:
{DATA}
    postBackup:
    - exec:
        command: [sh, -c, "echo run >> /state/post.count; if [ -e /state/failed-once ]; then echo 'post-backup ok'; else touch /state/failed-once; echo 'post-backup: the archive is not sealed yet' >&2; exit 1; fi"]
---
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: BackupPolicy
metadata: {name: plain-policy, namespace: db}
spec:
  backupRepoName: local
  backoffLimit: 0
  target:
    podSelector:
      matchLabels: {app: plain}
  backupMethods:
  - {name: exec-fails, actionSetName: exec-fails, targetVolumes: {volumes: [state], volumeMounts: [{name: state, mountPath: /state}]}}
  - {name: exec-times-out, actionSetName: exec-times-out, targetVolumes: {volumes: [state], volumeMounts: [{name: state, mountPath: /state}]}}
  - {name: exec-continue, actionSetName: exec-continue, targetVolumes: {volumes: [state], volumeMounts: [{name: state, mountPath: /state}]}}
  - {name: fails-once, actionSetName: fails-once, targetVolumes: {volumes: [state], volumeMounts: [{name: state, mountPath: /state}]}}
"#
    .replace("{DATA}", BACKUP_DATA)
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// An Exec step's exit status and output reach `failureReason`; a timeout says so; a
/// step under `onError: Continue` is recorded Failed and the Backup still completes.
#[test]
fn exec_step_failures_are_reported_with_their_output() {
    let c = start();
    c.apply(PLAIN_TARGET);
    c.apply(&failing_actions());
    wait_ready(&c, "plain-0");
    c.wait_for("BackupPolicy Available", Duration::from_secs(60), || {
        c.get(&["bp", "-n", "db", "plain-policy"])
            .filter(|p| p.pointer("/status/phase") == Some(&Value::from("Available")))
    });
    c.apply(&backup_yaml("fails", "plain-policy", "exec-fails"));
    c.apply(&backup_yaml("slow", "plain-policy", "exec-times-out"));
    c.apply(&backup_yaml("cont", "plain-policy", "exec-continue"));

    let b = wait_backup(&c, "fails", &["Completed", "Failed"], 180);
    assert_eq!(b["status"]["phase"], "Failed", "{:#}", b["status"]);
    let reason = b["status"]["failureReason"].as_str().unwrap_or_default();
    assert!(reason.contains("dp-prebackup-0-0"), "{reason}");
    assert!(reason.contains("exit code 3"), "{reason}");
    assert!(
        reason.contains("FLUSH TABLES failed: table is read only"),
        "{reason}"
    );
    assert_eq!(action(&b, "dp-prebackup-0-0")["phase"], "Failed");
    // Nothing after the failed step ran.
    assert!(b["status"]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["name"] != "dp-backup-0" || a["phase"] == "New"));

    let b = wait_backup(&c, "slow", &["Completed", "Failed"], 180);
    assert_eq!(b["status"]["phase"], "Failed", "{:#}", b["status"]);
    let reason = b["status"]["failureReason"].as_str().unwrap_or_default();
    assert!(reason.contains("timeout of 2s"), "{reason}");
    assert!(reason.contains("exit code 124"), "{reason}");

    let b = wait_backup(&c, "cont", &["Completed", "Failed"], 180);
    assert_eq!(b["status"]["phase"], "Completed", "{:#}", b["status"]);
    let post = action(&b, "dp-postbackup-0-0");
    assert_eq!(post["phase"], "Failed", "{post:#}");
    let why = post["failureReason"].as_str().unwrap_or_default();
    assert!(
        why.contains("cleanup failed") && why.contains("onError is Continue"),
        "{why}"
    );
    assert_eq!(action(&b, "dp-backup-0")["phase"], "Completed");
}

/// A Backup whose postBackup step fails once is Failed; set back to Running it runs only
/// the unfinished step again (the preBackup and backupData counts stay at one) and
/// Completes, and the repository holds its file once.
#[test]
fn a_failed_backup_is_retried_from_the_action_that_failed() {
    let c = start();
    c.apply(PLAIN_TARGET);
    c.apply(&failing_actions());
    wait_ready(&c, "plain-0");
    c.apply(&backup_yaml("retry", "plain-policy", "fails-once"));
    let b = wait_backup(&c, "retry", &["Completed", "Failed"], 180);
    assert_eq!(b["status"]["phase"], "Failed", "{:#}", b["status"]);
    let reason = b["status"]["failureReason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("dp-postbackup-0-0")
            && reason.contains("post-backup: the archive is not sealed yet"),
        "{reason}"
    );
    assert_eq!(action(&b, "dp-prebackup-0-0")["phase"], "Completed");
    assert_eq!(action(&b, "dp-backup-0")["phase"], "Completed");
    // Each step's Job has its own CreatingJob event: the events API had counted the
    // later ones into the first one's series (same reason on the same Backup within
    // minutes), keeping only the first Job's name.
    let created: std::collections::BTreeSet<String> = c
        .events_of("retry")
        .into_iter()
        .filter(|e| e.starts_with("CreatingJob: "))
        .collect();
    assert!(created.len() >= 3, "{created:?}");
    for step in ["dp-prebackup-0-0", "dp-backup-0", "dp-postbackup-0-0"] {
        assert!(
            created.iter().any(|e| e.contains(step)),
            "{step}: {created:?}"
        );
    }
    let state = volume_dir(&c, "state");
    // The Failed backup's Jobs go (so that the retry makes new ones).
    c.wait_for("the failed Jobs deleted", Duration::from_secs(60), || {
        let here = c.get(&[
            "jobs",
            "-n",
            "db",
            "-l",
            "dataprotection.kubeblocks.io/backup-name=retry",
        ])?;
        let there = c.get(&[
            "jobs",
            "-n",
            "dprepo-system",
            "-l",
            "dataprotection.kubeblocks.io/backup-name=retry",
        ])?;
        (here["items"].as_array()?.is_empty() && there["items"].as_array()?.is_empty())
            .then_some(())
    });

    c.kubectl_ok(&[
        "patch",
        "backup",
        "-n",
        "db",
        "retry",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running"}}"#,
    ]);
    let b = wait_backup(&c, "retry", &["Completed", "Failed"], 180);
    assert_eq!(b["status"]["phase"], "Completed", "{:#}", b["status"]);
    assert_eq!(lines(&state.join("pre.count")), 1, "preBackup ran again");
    assert_eq!(lines(&state.join("data.count")), 1, "backupData ran again");
    assert_eq!(lines(&state.join("post.count")), 2);
    for a in b["status"]["actions"].as_array().unwrap() {
        assert_eq!(a["phase"], "Completed", "{a:#}");
    }
    assert!(b["status"]["failureReason"].is_null(), "{:#}", b["status"]);
    let snaps = repo_snapshots(&c, &b);
    let data: Vec<&Value> = snaps
        .iter()
        .filter(|s| {
            s["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|x| x == "datasafed:path=/db/retry/retry.txt"))
        })
        .collect();
    assert_eq!(data.len(), 1, "{snaps:#?}");
}

/// The controller dies while an Exec step runs: the step's Job goes on without it, and
/// the restarted controller reads its outcome from the Job instead of running the
/// command again (the reason the step is a Job and not an exec from the controller).
#[test]
fn an_exec_step_survives_a_controller_restart() {
    let mut c = start();
    c.apply(PLAIN_TARGET);
    c.apply(&format!(
        r#"
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: ActionSet
metadata: {{name: slow-pre}}
spec:
  backupType: Full
  backup:
    preBackup:
    - exec:
        command: [sh, -c, "echo started >> /state/slow.count; sleep 8; echo done >> /state/slow.count"]
    backupData:
{BACKUP_DATA}
---
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: BackupPolicy
metadata: {{name: slow-policy, namespace: db}}
spec:
  backupRepoName: local
  backoffLimit: 0
  target:
    podSelector:
      matchLabels: {{app: plain}}
  backupMethods:
  - {{name: slow, actionSetName: slow-pre, targetVolumes: {{volumes: [state], volumeMounts: [{{name: state, mountPath: /state}}]}}}}
"#
    ));
    wait_ready(&c, "plain-0");
    c.apply(&backup_yaml("restart", "slow-policy", "slow"));
    let state = volume_dir(&c, "state");
    c.wait_for("the exec step started", Duration::from_secs(120), || {
        (lines(&state.join("slow.count")) >= 1).then_some(())
    });
    c.stop_controller();
    c.wait_for(
        "the exec step to finish without the controller",
        Duration::from_secs(60),
        || (lines(&state.join("slow.count")) >= 2).then_some(()),
    );
    let job = c
        .get(&[
            "jobs",
            "-n",
            "dprepo-system",
            "-l",
            "dataprotection.kubeblocks.io/backup-name=restart",
        ])
        .expect("jobs");
    assert_eq!(job["items"].as_array().map(Vec::len), Some(1), "{job:#}");
    c.start_controller();
    let b = wait_backup(&c, "restart", &["Completed", "Failed"], 180);
    assert_eq!(b["status"]["phase"], "Completed", "{:#}", b["status"]);
    assert_eq!(action(&b, "dp-prebackup-0-0")["phase"], "Completed");
    // Started once, finished once: the command was not run again.
    assert_eq!(lines(&state.join("slow.count")), 2);
    assert_eq!(lines(&state.join("data.count")), 1);
}
