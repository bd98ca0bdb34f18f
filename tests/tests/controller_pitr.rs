//! End-to-end: PostgreSQL point-in-time recovery through the real `dprepo-controller` on
//! kube-sim, with a real PostgreSQL server (Debian's postgresql package) as the target and
//! a Mount BackupRepo on kube-sim's host-path volumes.
//!
//! The ActionSets are written the way KubeBlocks' postgresql addon writes its
//! `postgresql-for-pitr` and `postgresql-basebackup` ones: the Continuous backupData is a
//! long-lived archiver that switches WAL files while transactions come in, pushes every
//! finished segment (`archive_status/*.ready`, renamed `.done` once stored) to
//! `/<YYYYMMDD>/<segment>.zst`, and writes backup.info with `totalSize` and the commit
//! times of the oldest and newest archived segments (pg_waldump) as `timeRange`; its
//! restore pulls the segments after the base backup into a directory and configures
//! `restore_command` and `recovery_target_time` from `DP_RESTORE_TIMESTAMP`. The base is
//! a `pg_basebackup -Ft -Xf` tar.
//!
//! Build first: `cargo build -p dprepo-tools -p kube-sim -p dprepo-controller --bins`.
//! Needs root (kube-sim's runner), `kubectl` and PostgreSQL 15 (`apt-get install
//! postgresql`).

mod common;

use common::cluster::*;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const NS: &str = "db";

/// A PostgreSQL pod on claim `claim` listening on `port`. `init` makes the data
/// directory (a new cluster) when true; otherwise the directory is the restored one. WAL
/// archiving is on with no `archive_command`: the archiver of the Continuous backup takes
/// the finished segments (as the addon's configuration leaves it to the archiver).
fn postgres_pod(name: &str, claim: &str, port: u16, init: bool, labels: &str) -> String {
    let (uid, gid) = (service_id("-u", "postgres"), service_id("-g", "postgres"));
    let initdb = if init {
        format!(
            r#"
  - name: initdb
    image: postgres:15
    command: [sh, -c, "test -f /data/pgdata/PG_VERSION || {PG_BIN}/initdb -D /data/pgdata --auth=trust -U postgres >/dev/null"]
    volumeMounts: [{{name: data, mountPath: /data}}]"#
        )
    } else {
        String::new()
    };
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: db
  labels: {labels}
spec:
  securityContext: {{runAsUser: {uid}, runAsGroup: {gid}}}
  initContainers:
  - name: own
    image: postgres:15
    securityContext: {{runAsUser: 0, runAsGroup: 0}}
    command: [sh, -c, "mkdir -p /data/pgdata && chown -R {uid}:{gid} /data && chmod 700 /data/pgdata"]
    volumeMounts: [{{name: data, mountPath: /data}}]{initdb}
  containers:
  - name: postgresql
    image: postgres:15
    command: [{PG_BIN}/postgres, -D, /data/pgdata, -p, "{port}", -k, /tmp, -c, listen_addresses=127.0.0.1, -c, fsync=off, -c, wal_level=replica, -c, archive_mode=on]
    ports: [{{name: tcp-postgresql, containerPort: {port}}}]
    readinessProbe:
      tcpSocket: {{port: {port}}}
      periodSeconds: 1
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes: [{{name: data, persistentVolumeClaim: {{claimName: {claim}}}}}]
"#
    )
}

const PG_CLAIM: &str = r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: pg-data, namespace: db}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Secret
metadata: {name: pg-account, namespace: db}
stringData: {username: postgres, password: unused-trust-auth}
"#;

/// The addon's WAL archiver (postgresql-pitr-backup.sh), kept to what vanilla PostgreSQL
/// needs: no Patroni role checks, no wal-g.
const ARCHIVER: &str = r#"
set -o pipefail
export PATH="$PATH:$DP_DATASAFED_BIN_PATH:/usr/lib/postgresql/15/bin"
export DATASAFED_BACKEND_BASE_PATH="$DP_BACKUP_BASE_PATH"
PSQL="psql -h ${DP_DB_HOST} -p ${DP_DB_PORT} -U ${DP_DB_USER} -d postgres"
last_switch=$(date +%s)
start_time=
stop_time=
old_size=0
function log() { echo "$(date -u '+%Y-%m-%d %H:%M:%S') $1"; }
function commit_times() {
  pg_waldump "$1" --rmgr=Transaction 2>/dev/null | grep 'desc: COMMIT' | awk -F ' COMMIT ' '{print $2}' | awk -F ';' '{print $1}'
}
function utc() { date -d "$1" -u '+%Y-%m-%dT%H:%M:%SZ'; }
# the start of the range: the first commit of the oldest archived segment
function find_start_time() {
  for day in $(datasafed list /); do
    day=${day%/}; day=${day##*/}
    for f in $(datasafed list "/${day}/" | grep '\.zst$'); do
      f=${f##*/}
      # pg_waldump reads the segment's position from its file name
      datasafed pull -d zstd-fastest "/${day}/${f}" "/tmp/${f%.zst}" || continue
      first=$(commit_times "/tmp/${f%.zst}" | head -n 1)
      rm -f "/tmp/${f%.zst}"
      if [ -n "$first" ]; then start_time=$(utc "$first"); return; fi
    done
  done
}
# switch to a new WAL file when the current one holds a transaction and nothing waits
function switch_wal() {
  local now=$(date +%s)
  [ $((now - last_switch)) -lt ${SWITCH_WAL_INTERVAL_SECONDS} ] && return
  last_switch=$now
  local current=$(${PSQL} -Atc "select pg_walfile_name(pg_current_wal_lsn())")
  local last_trans=$(pg_waldump "${LOG_DIR}/${current}" --rmgr=Transaction 2>/dev/null | tail -n 1)
  if [ -n "$last_trans" ] && [ -z "$(find ${LOG_DIR}/archive_status/ -name '*.ready')" ]; then
    ${PSQL} -c "select pg_switch_wal()" >/dev/null || log "pg_switch_wal failed, retrying next round"
  fi
}
# push every finished segment; .done only once it is stored, so nothing is lost
function upload_wal() {
  local day=$(date -u +%Y%m%d)
  cd ${LOG_DIR} || return 1
  for ready in $(ls -tr ./archive_status/ | grep '\.ready$'); do
    local wal=${ready%.ready}
    [ -f "$wal" ] || continue
    local last=$(commit_times "$wal" | tail -n 1)
    local first=$(commit_times "$wal" | head -n 1)
    if datasafed push -z zstd-fastest "$wal" "/${day}/${wal}.zst"; then
      mv -f "./archive_status/${ready}" "./archive_status/${wal}.done"
      log "uploaded ${wal}"
      [ -n "$last" ] && stop_time=$(utc "$last")
      [ -z "$start_time" ] && [ -n "$first" ] && start_time=$(utc "$first")
    else
      log "failed to upload ${wal}, keeping it for retry"
    fi
  done
}
function save_status() {
  local size=$(datasafed stat / | grep TotalSize | awk '{print $2}')
  if [ -z "$size" ] || [ "$size" = 0 ] || [ "$size" = "$old_size" ]; then return; fi
  old_size=$size
  if [ -z "$stop_time" ]; then
    echo "{\"totalSize\":\"${size}\"}" > ${DP_BACKUP_INFO_FILE}
  elif [ -z "$start_time" ]; then
    echo "{\"totalSize\":\"${size}\",\"timeRange\":{\"end\":\"${stop_time}\"}}" > ${DP_BACKUP_INFO_FILE}
  else
    echo "{\"totalSize\":\"${size}\",\"timeRange\":{\"start\":\"${start_time}\",\"end\":\"${stop_time}\"}}" > ${DP_BACKUP_INFO_FILE}
  fi
}
function check_pg() {
  for i in 1 2 3; do
    ${PSQL} -Atc "select 1" >/dev/null 2>&1 && return
    sleep 1
  done
  log "the target ${DP_TARGET_POD_NAME} does not answer: archiving what is left, then exiting"
  upload_wal; save_status
  exit 1
}
trap "echo 'Terminating...' && sync && exit 0" TERM
find_start_time
log "start to archive wal logs (interval ${DP_ARCHIVE_INTERVAL}, ttl ${DP_TTL_SECONDS:-none})"
while true; do
  check_pg
  switch_wal
  upload_wal
  save_status
  sleep ${LOG_ARCHIVE_SECONDS}
done
"#;

/// The addon's PITR restore (postgresql-pitr-restore.sh with fetch-wal-log), for a data
/// directory the base backup's restore just filled.
const PITR_RESTORE: &str = r#"
set -e
set -o pipefail
export PATH="$PATH:$DP_DATASAFED_BIN_PATH:/usr/lib/postgresql/15/bin"
export DATASAFED_BACKEND_BASE_PATH="$DP_BACKUP_BASE_PATH"
mkdir -p ${PITR_DIR}
start_wal=$(ls ${DATA_DIR}/pg_wal | grep -E '^[0-9A-F]{24}$' | sort | tail -n 1)
restore_time=$(date -d "${DP_RESTORE_TIME}" +%s)
echo "fetching WAL from ${start_wal} up to ${DP_RESTORE_TIME}"
reached=0
for day in $(datasafed list /); do
  day=${day%/}; day=${day##*/}
  [ $reached = 1 ] && break
  for file in $(datasafed list "/${day}/" | grep '\.zst$'); do
    file=${file##*/}
    wal=${file%.zst}
    [[ "$wal" < "$start_wal" ]] && continue
    datasafed pull -d zstd-fastest "/${day}/${file}" "${PITR_DIR}/${wal}"
    echo "fetched ${wal}"
    last=$(pg_waldump "${PITR_DIR}/${wal}" --rmgr=Transaction 2>/dev/null | grep 'desc: COMMIT' | tail -n 1 | awk -F ' COMMIT ' '{print $2}' | awk -F ';' '{print $1}' || true)
    if [ -n "$last" ] && [ $(date -d "$last" +%s) -gt $restore_time ]; then reached=1; break; fi
  done
done
touch ${DATA_DIR}/recovery.signal
cat >> ${DATA_DIR}/postgresql.auto.conf <<EOF
restore_command = 'cp ${PITR_DIR}/%f %p'
recovery_target_time = '$(date -d "@${DP_RESTORE_TIMESTAMP}" '+%F %T%::z')'
recovery_target_action = 'promote'
EOF
echo done
"#;

/// The base backup (the addon's pg_basebackup script) and its restore.
const BASEBACKUP: &str = r#"
set -e
set -o pipefail
export PATH="$PATH:$DP_DATASAFED_BIN_PATH"
export DATASAFED_BACKEND_BASE_PATH="$DP_BACKUP_BASE_PATH"
export PGPASSWORD=${DP_DB_PASSWORD}
function handle_exit() {
  exit_code=$?
  if [ $exit_code -ne 0 ]; then
    echo "failed with exit code $exit_code"
    touch "${DP_BACKUP_INFO_FILE}.exit"
    exit 1
  fi
}
trap handle_exit EXIT
START_TIME=$(date -u '+%Y-%m-%dT%H:%M:%SZ')
echo "" | pg_basebackup -Ft -Pv -c fast -Xf -D - -h ${DP_DB_HOST} -U ${DP_DB_USER} -p ${DP_DB_PORT} -W | datasafed push -z zstd-fastest - "/${DP_BACKUP_NAME}.tar.zst"
STOP_TIME=$(date -u '+%Y-%m-%dT%H:%M:%SZ')
TOTAL_SIZE=$(datasafed stat / | grep TotalSize | awk '{print $2}')
echo "{\"totalSize\":\"$TOTAL_SIZE\",\"timeRange\":{\"start\":\"${START_TIME}\",\"end\":\"${STOP_TIME}\"}}" > "${DP_BACKUP_INFO_FILE}"
"#;

const BASE_RESTORE: &str = r#"
set -e
set -o pipefail
export PATH="$PATH:$DP_DATASAFED_BIN_PATH"
export DATASAFED_BACKEND_BASE_PATH="$DP_BACKUP_BASE_PATH"
mkdir -p ${DATA_DIR}
datasafed pull -d zstd-fastest "${DP_BACKUP_NAME}.tar.zst" - | tar -xf - -C "${DATA_DIR}/"
"#;

fn block(script: &str) -> String {
    script
        .lines()
        .map(|l| format!("        {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn protection_manifests() -> String {
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
{base}
  restore:
    prepareData:
      image: postgres:15
      command:
      - bash
      - -c
      - |
{base_restore}
---
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: ActionSet
metadata: {{name: pg-wal}}
spec:
  backupType: Continuous
  env:
  - {{name: DATA_DIR, value: /data/pgdata}}
  - {{name: LOG_DIR, value: /data/pgdata/pg_wal}}
  - {{name: PITR_DIR, value: /data/pitr}}
  - {{name: DP_TIME_FORMAT, value: "2006-01-02 15:04:05 MST"}}
  - {{name: LOG_ARCHIVE_SECONDS, value: "1"}}
  - {{name: SWITCH_WAL_INTERVAL_SECONDS, value: "2"}}
  backup:
    backupData:
      image: postgres:15
      runOnTargetPodNode: true
      syncProgress: {{enabled: true, intervalSeconds: 1}}
      command:
      - bash
      - -c
      - |
{archiver}
  restore:
    prepareData:
      image: postgres:15
      command:
      - bash
      - -c
      - |
{pitr}
---
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: BackupPolicy
metadata: {{name: pg-policy, namespace: db}}
spec:
  backupRepoName: local
  target:
    podSelector:
      matchLabels: {{app: pg}}
    connectionCredential: {{secretName: pg-account, usernameKey: username, passwordKey: password}}
  backupMethods:
  - name: basebackup
    actionSetName: pg-basebackup
    targetVolumes:
      volumes: [data]
      volumeMounts: [{{name: data, mountPath: /data}}]
  - name: wal
    actionSetName: pg-wal
    targetVolumes:
      volumes: [data]
      volumeMounts: [{{name: data, mountPath: /data}}]
---
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: BackupSchedule
metadata: {{name: pg-schedule, namespace: db}}
spec:
  backupPolicyName: pg-policy
  schedules:
  - backupMethod: wal
    enabled: true
    cronExpression: "*/5 * * * *"
    retentionPeriod: 7d
"#,
        base = block(BASEBACKUP),
        base_restore = block(BASE_RESTORE),
        archiver = block(ARCHIVER),
        pitr = block(PITR_RESTORE),
    )
}

fn psql(port: u16, sql: &str) -> String {
    let out = try_psql(port, sql);
    assert!(
        out.status.success(),
        "psql on port {port} failed: {sql}\n{}",
        stderr(&out)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn try_psql(port: u16, sql: &str) -> Output {
    Command::new(Path::new(PG_BIN).join("psql"))
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .args(["-d", "postgres", "-c", sql])
        .stdin(Stdio::null())
        .output()
        .expect("psql")
}

/// Rows `from..to` into both tables, each row its own transaction.
fn insert_rows(port: u16, from: u32, to: u32) {
    let mut sql = String::new();
    for i in from..to {
        sql.push_str(&format!(
            "INSERT INTO accounts VALUES ({i}, 'owner-{i}', {}); INSERT INTO ledger (account, amount) VALUES ({i}, {});\n",
            i * 7,
            i * 13 % 101
        ));
    }
    let mut child = Command::new(Path::new(PG_BIN).join("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .args(["-d", "postgres", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(sql.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "inserting rows: {}", stderr(&out));
}

/// Per table: row count and an md5 over every row in key order.
fn table_sums(port: u16) -> Vec<String> {
    ["accounts ORDER BY id", "ledger ORDER BY seq"]
        .iter()
        .map(|t| {
            let (table, order) = t.split_once(" ORDER BY ").unwrap();
            psql(
                port,
                &format!(
                    "SELECT '{table}:' || count(*) || ':' || coalesce(md5(string_agg(x::text, ',' ORDER BY x.{order})), '') FROM {table} x"
                ),
            )
        })
        .collect()
}

fn wait_ready(c: &Cluster, pod: &str, secs: u64) {
    c.wait_for(
        &format!("pod {pod} ready"),
        Duration::from_secs(secs),
        || {
            c.get(&["pod", "-n", NS, pod]).filter(|p| {
                p["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|x| x["type"] == "Ready" && x["status"] == "True")
                })
            })
        },
    );
}

fn backup(c: &Cluster, name: &str) -> Value {
    c.get(&["backup", "-n", NS, name])
        .unwrap_or_else(|| panic!("Backup {name} not found"))
}

fn rfc3339(v: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap()
        .with_timezone(&chrono::Utc)
}

fn size_of(b: &Value) -> u64 {
    b["status"]["totalSize"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// `dprepo snapshots --json` of the repository the namespace's Mount PVC holds, with the
/// key from the namespace's tool Secret.
fn repo_snapshots(c: &Cluster) -> Vec<Value> {
    let repo = c.get(&["backuprepo", "local"]).unwrap();
    let pvc = repo["status"]["backupPVCName"]
        .as_str()
        .unwrap()
        .to_string();
    let secret = repo["status"]["toolConfigSecretName"]
        .as_str()
        .unwrap()
        .to_string();
    let key = c.kubectl_ok(&[
        "get",
        "secret",
        "-n",
        NS,
        &secret,
        "-o",
        r#"go-template={{index .data "dprepo-password" | base64decode}}"#,
    ]);
    let key_file = c.dir.path().join("repo-key");
    std::fs::write(&key_file, key).unwrap();
    let dir = c.volume_dir(NS, &pvc);
    let out = Command::new(dprepo_bin())
        .arg("-r")
        .arg(&dir)
        .args(["snapshots", "--json"])
        .env("DPREPO_PASSWORD_FILE", &key_file)
        .env("XDG_CACHE_HOME", c.dir.path().join("cache"))
        .env_remove("DPREPO_PASSWORD")
        .stdin(Stdio::null())
        .output()
        .expect("dprepo");
    assert!(out.status.success(), "dprepo snapshots: {}", stderr(&out));
    match serde_json::from_slice::<Value>(&out.stdout) {
        Ok(Value::Array(v)) => v,
        other => panic!("snapshots --json did not print an array: {other:?}"),
    }
}

fn tag_paths(snaps: &[Value]) -> Vec<String> {
    snaps
        .iter()
        .flat_map(|s| {
            s["tags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str()?.strip_prefix("datasafed:path="))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn restore_yaml(name: &str, backup: &str, time: &str, claim: &str) -> String {
    format!(
        r#"
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: Restore
metadata: {{name: {name}, namespace: db}}
spec:
  backup: {{name: {backup}, namespace: db}}
  restoreTime: "{time}"
  prepareDataConfig:
    volumeClaimRestorePolicy: Parallel
    volumeClaims:
    - metadata: {{name: {claim}}}
      volumeSource: data
      volumeClaimSpec:
        accessModes: [ReadWriteOnce]
        resources: {{requests: {{storage: 1Gi}}}}
"#
    )
}

/// The whole PITR story: a BackupSchedule's Continuous backup archives WAL through its
/// StatefulSet (Running, `timeRange.end` advancing, `totalSize` growing, segments in the
/// repository, the StatefulSet made again after it is deleted); a full base backup; rows
/// committed before and after a chosen second; a Restore to that second into a new claim
/// on which PostgreSQL starts with exactly the rows committed before it; a time outside
/// every range refused with the ranges; deleting the running backup stops the archiver
/// before its files go; disabling the schedule completes the backup and stops the
/// archiver.
#[test]
fn postgres_point_in_time_restore_from_a_continuous_wal_archive() {
    require_postgres();
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
        || c.get(&["sa", "-n", NS, "default"]),
    );
    let port = free_port();
    c.apply(PG_CLAIM);
    c.apply(&postgres_pod(
        "pg-0",
        "pg-data",
        port,
        true,
        "{app.kubernetes.io/instance: pg, kubeblocks.io/role: primary, app: pg}",
    ));
    wait_ready(&c, "pg-0", 120);
    psql(
        port,
        "CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance bigint NOT NULL); \
         CREATE TABLE ledger (seq bigserial PRIMARY KEY, account int NOT NULL, amount int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())",
    );
    insert_rows(port, 0, 50);

    // The schedule's Continuous backup: Running, archived by a StatefulSet.
    c.apply(&protection_manifests());
    let cont = c.wait_for(
        "the schedule's Continuous Backup",
        Duration::from_secs(120),
        || {
            let list = c.get(&[
                "backup",
                "-n",
                NS,
                "-l",
                "dataprotection.kubeblocks.io/backup-schedule=pg-schedule",
            ])?;
            list["items"].as_array()?.first()?["metadata"]["name"]
                .as_str()
                .map(str::to_string)
        },
    );
    let running = c.wait_for(
        "the Continuous backup Running with its StatefulSet",
        Duration::from_secs(120),
        || {
            backup(&c, &cont)
                .pointer("/status/actions/0/actionType")
                .filter(|t| *t == "StatefulSet")?;
            let b = backup(&c, &cont);
            (b["status"]["phase"] == "Running").then_some(b)
        },
    );
    assert_eq!(
        running["metadata"]["labels"]["dataprotection.kubeblocks.io/backup-type"],
        "Continuous"
    );
    assert!(
        running["status"]["expiration"].is_null(),
        "{}",
        running["status"]
    );
    assert_eq!(
        running["status"]["actions"][0]["objectRef"]["name"],
        cont.as_str()
    );
    let sts = c
        .get(&["statefulset", "-n", NS, &cont])
        .expect("the StatefulSet");
    assert_eq!(sts["spec"]["replicas"], 1);
    assert_eq!(sts["metadata"]["ownerReferences"][0]["name"], cont.as_str());
    let env = &sts["spec"]["template"]["spec"]["containers"][0]["env"];
    let var = |n: &str| {
        env.as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == n)
            .map(|e| e["value"].clone())
    };
    assert_eq!(var("DP_ARCHIVE_INTERVAL"), Some(Value::from("300s")));
    assert_eq!(var("DP_TTL_SECONDS"), Some(Value::from("604800")));
    assert_eq!(
        sts["spec"]["template"]["spec"]["containers"][1]["command"][2],
        "--continuous"
    );

    // Rows after the archive began, then the base backup.
    insert_rows(port, 50, 100);
    let first = c.wait_for("the archive's time range", Duration::from_secs(180), || {
        let b = backup(&c, &cont);
        b.pointer("/status/timeRange/end")?.as_str()?;
        b.pointer("/status/timeRange/start")?.as_str()?;
        Some(b)
    });
    let end0 = rfc3339(&first["status"]["timeRange"]["end"]);
    let size0 = size_of(&first);
    assert!(size0 > 0, "{}", first["status"]);
    c.apply(
        "apiVersion: dataprotection.kubeblocks.io/v1alpha1\nkind: Backup\nmetadata: {name: pg-base, namespace: db}\nspec: {backupPolicyName: pg-policy, backupMethod: basebackup, deletionPolicy: Delete}\n",
    );
    let base = c.wait_for("the base backup", Duration::from_secs(300), || {
        let b = backup(&c, "pg-base");
        matches!(b["status"]["phase"].as_str(), Some("Completed" | "Failed")).then_some(b)
    });
    assert_eq!(base["status"]["phase"], "Completed", "{}", base["status"]);

    // Self-healing: the deleted StatefulSet is made again and archiving goes on.
    let old_uid = sts["metadata"]["uid"].as_str().unwrap().to_string();
    c.kubectl_ok(&["delete", "statefulset", "-n", NS, &cont, "--wait=false"]);
    c.wait_for("a new StatefulSet", Duration::from_secs(120), || {
        c.get(&["statefulset", "-n", NS, &cont]).filter(|s| {
            s["metadata"]["uid"] != old_uid.as_str() && s["status"]["availableReplicas"] == 1
        })
    });

    // Rows before the chosen second, the second, rows after it.
    insert_rows(port, 100, 150);
    let expected = table_sums(port);
    let now = chrono::Utc::now();
    let target = chrono::DateTime::from_timestamp(now.timestamp() + 2, 0).unwrap();
    while chrono::Utc::now() < target + chrono::TimeDelta::milliseconds(1500) {
        std::thread::sleep(Duration::from_millis(100));
    }
    insert_rows(port, 150, 200);
    let after = table_sums(port);
    assert_ne!(expected, after);
    let target_text = target.format("%Y-%m-%dT%H:%M:%SZ").to_string();

    // The archive reaches past the chosen second: timeRange.end advanced, size grew.
    let archived = c.wait_for(
        "the archive past the chosen second",
        Duration::from_secs(180),
        || {
            let b = backup(&c, &cont);
            let end = rfc3339(b.pointer("/status/timeRange/end")?);
            (end > target).then_some(b)
        },
    );
    assert!(rfc3339(&archived["status"]["timeRange"]["end"]) > end0);
    assert!(size_of(&archived) > size0, "{}", archived["status"]);
    assert_eq!(archived["status"]["phase"], "Running");
    let extras = archived["status"]["extras"]
        .as_array()
        .and_then(|a| a.iter().find(|m| m["type"] == "dprepo"))
        .cloned()
        .unwrap_or_else(|| panic!("no dprepo extras: {}", archived["status"]));
    assert!(
        extras["snapshotCount"]
            .as_str()
            .and_then(|s| s.parse::<u64>().ok())
            .is_some_and(|n| n >= 2),
        "{extras}"
    );
    // The segments are in the repository, one snapshot each, tagged with their path.
    let paths = tag_paths(&repo_snapshots(&c));
    let segments: Vec<&String> = paths
        .iter()
        .filter(|p| {
            p.starts_with(&format!("/{NS}/{cont}/"))
                && p.ends_with(".zst")
                && p.rsplit('/').next().is_some_and(|f| f.len() == 28)
        })
        .collect();
    assert!(
        segments.len() >= 2,
        "WAL segments in the repository: {paths:?}"
    );
    assert!(
        paths.contains(&format!("/{NS}/pg-base/pg-base.tar.zst")),
        "{paths:?}"
    );

    // Point-in-time restore into a new claim.
    c.apply(&restore_yaml("pitr", &cont, &target_text, "pg-restored"));
    let r = c.finished_restore(NS, "pitr");
    assert_eq!(r["status"]["phase"], "Completed", "{}", r["status"]);
    let prepared: Vec<String> = r["status"]["actions"]["prepareData"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["backupName"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        prepared.first().map(String::as_str),
        Some("pg-base"),
        "{prepared:?}"
    );
    assert_eq!(prepared.last(), Some(&cont), "{prepared:?}");
    let port2 = free_port();
    c.apply(&postgres_pod(
        "pg-restored",
        "pg-restored",
        port2,
        false,
        "{app: pg-restored}",
    ));
    wait_ready(&c, "pg-restored", 180);
    let start = Instant::now();
    while psql(port2, "SELECT pg_is_in_recovery()") != "f" {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the restored server did not finish recovery"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        table_sums(port2),
        expected,
        "exactly the rows committed before {target_text}"
    );
    assert_eq!(psql(port2, "SELECT count(*) FROM accounts"), "150");

    // A time no range covers: refused with the ranges.
    c.apply(&restore_yaml(
        "too-early",
        &cont,
        "2001-01-01T00:00:00Z",
        "pg-never",
    ));
    let r = c.finished_restore(NS, "too-early");
    assert_eq!(r["status"]["phase"], "Failed", "{}", r["status"]);
    let msg = c
        .condition(&r, "ValidationPassed")
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_default();
    assert!(
        msg.contains("2001-01-01") && msg.contains("recoverable ranges") && msg.contains(&cont),
        "{msg}"
    );
    assert!(c.get(&["pvc", "-n", NS, "pg-never"]).is_none());

    // Deleting the running Continuous backup stops its archiver, then removes its files;
    // the schedule, still enabled, starts a new one under the same name.
    let first_segment = |paths: &[String]| {
        paths.iter().any(|p| {
            p.starts_with(&format!("/{NS}/{cont}/")) && p.ends_with("/000000010000000000000001.zst")
        })
    };
    assert!(first_segment(&tag_paths(&repo_snapshots(&c))));
    let old_uid = backup(&c, &cont)["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let sts_uid = c.get(&["statefulset", "-n", NS, &cont]).unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    c.kubectl_ok(&["delete", "backup", "-n", NS, &cont, "--wait=false"]);
    c.wait_for(
        "the deleted backup gone with its archiver",
        Duration::from_secs(180),
        || {
            let backup_gone = c
                .get(&["backup", "-n", NS, &cont])
                .is_none_or(|b| b["metadata"]["uid"] != old_uid.as_str());
            let sts_gone = c
                .get(&["statefulset", "-n", NS, &cont])
                .is_none_or(|s| s["metadata"]["uid"] != sts_uid.as_str());
            (backup_gone && sts_gone).then_some(())
        },
    );
    assert!(
        !first_segment(&tag_paths(&repo_snapshots(&c))),
        "the deleted backup's segments are gone from the repository"
    );
    c.wait_for(
        "the schedule's new Continuous backup Running",
        Duration::from_secs(120),
        || {
            c.get(&["backup", "-n", NS, &cont]).filter(|b| {
                b["metadata"]["uid"] != old_uid.as_str() && b["status"]["phase"] == "Running"
            })
        },
    );

    // Disabling the schedule completes the backup and stops the archiver.
    c.kubectl_ok(&[
        "patch",
        "backupschedule",
        "-n",
        NS,
        "pg-schedule",
        "--type=json",
        "-p",
        r#"[{"op": "replace", "path": "/spec/schedules/0/enabled", "value": false}]"#,
    ]);
    let done = c.wait_for(
        "the Continuous backup Completed",
        Duration::from_secs(120),
        || {
            let b = backup(&c, &cont);
            (b["status"]["phase"] == "Completed").then_some(b)
        },
    );
    assert!(
        done["status"]["expiration"].is_string(),
        "{}",
        done["status"]
    );
    assert_eq!(done["status"]["actions"][0]["phase"], "Completed");
    c.wait_for("the StatefulSet gone", Duration::from_secs(120), || {
        c.get(&["statefulset", "-n", NS, &cont])
            .is_none()
            .then_some(())
    });
}
