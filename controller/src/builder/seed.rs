//! The translation of the seed's simplified API ([`crate::api::seed`]) onto the
//! dataprotection objects: pure functions from the seed object and what was read of the
//! cluster to the objects the reconcilers in [`crate::reconcile::seed`] write. Nothing here
//! talks to the API server.
//!
//! The rules (also in the README, "Simplified API"):
//! - **cluster**: the StatefulSet named `clusterRef.name` in the policy's namespace, whose
//!   pods carry `app.kubernetes.io/instance=<name>` (KubeBlocks' own convention); the
//!   target's podSelector is that label;
//! - **engine**: the first of the StatefulSet's and its pod template's
//!   `app.kubernetes.io/name` labels, then the containers' images, that names PostgreSQL,
//!   MariaDB or MySQL ([`detect_engine`]); engine and method choose the ActionSet
//!   ([`action_set_name`], shipped in `deploy/actionsets/`);
//! - **storage**: one BackupRepo per storage block, named `seed-<bucket>-<hash>`
//!   ([`repo_name`]); not owned by the policy (a cluster-scoped object cannot be owned by a
//!   namespaced one, and the repository holds backups other objects refer to);
//! - **retention**: `maxRetentionDays: N` -> `retentionPeriod: Nd`; `maxRetentionCount` and
//!   `successfulJobsHistoryLimit` -> `dprepo.io/keep-last` on the BackupSchedule;
//! - **point in time**: a PostgreSQL physical policy also gets the Continuous method
//!   `archive-wal` ([`continuous_action_set`]), and its seed BackupSchedule enables it
//!   beside the base backups, so `pitr.targetTime` has logs to replay;
//! - **encryption**: `keyRef` -> `dprepo.io/key-secret: <ns>/<keyRef>` on the BackupRepo
//!   (its key `dprepoPassword` is the repository key); otherwise the controller's key.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaimSpec, VolumeMount};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

use crate::api::labels::annotation;
use crate::api::seed::backuppolicy::BackupKind;
use crate::api::seed::{self, Storage};
use crate::api::{Backup, BackupPolicy, BackupRepo, BackupSchedule, Restore};

/// The label every pod of a cluster carries (KubeBlocks' convention), with the cluster's
/// name as value.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";

/// The label naming a database engine.
pub const ENGINE_LABEL: &str = "app.kubernetes.io/name";

/// The label on objects the seed reconcilers made from a seed object: its kind and name
/// (`BackupRepo` objects carry `storage` instead).
pub const SEED_LABEL: &str = "dprepo.io/seed";

/// The Secret of a cluster's database account, when it exists: `<cluster>-conn-credential`
/// with keys `username` and `password` (KubeBlocks' naming).
pub fn credential_secret_name(cluster: &str) -> String {
    format!("{cluster}-conn-credential")
}

/// A shipped StorageProvider and how a storage block reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    /// The StorageProvider's name (`deploy/storageproviders/`).
    pub storage_provider: &'static str,
    /// `Tool` (object stores: datasafed talks to the store) or `Mount` (volumes).
    pub access_method: &'static str,
    /// The scheme of a backup's `location`.
    pub scheme: &'static str,
}

/// The provider names accepted in `storage.provider`, with their StorageProvider.
pub const PROVIDERS: &[(&str, Provider)] = &[
    ("s3", provider("s3", "Tool", "s3")),
    ("minio", provider("minio", "Tool", "s3")),
    ("s3-compatible", provider("s3-compatible", "Tool", "s3")),
    ("oss", provider("oss", "Tool", "oss")),
    ("cos", provider("cos", "Tool", "cos")),
    ("obs", provider("obs", "Tool", "obs")),
    ("gcs", provider("gcs-s3comp", "Tool", "gs")),
    ("nfs", provider("nfs", "Mount", "nfs")),
    ("pv", provider("pvc", "Mount", "pvc")),
    ("pvc", provider("pvc", "Mount", "pvc")),
];

const fn provider(
    storage_provider: &'static str,
    access_method: &'static str,
    scheme: &'static str,
) -> Provider {
    Provider {
        storage_provider,
        access_method,
        scheme,
    }
}

/// The shipped provider for `storage.provider`.
///
/// # Errors
/// No provider given, or one dprepo does not ship; the message lists the accepted names.
pub fn provider_of(name: Option<&str>) -> Result<Provider, String> {
    let names: Vec<&str> = PROVIDERS.iter().map(|(n, _)| *n).collect();
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return Err(format!(
            "no storage provider given (one of {})",
            names.join(", ")
        ));
    };
    PROVIDERS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, p)| p.clone())
        .ok_or_else(|| {
            format!(
                "{name:?} is not a storage provider dprepo ships (one of {})",
                names.join(", ")
            )
        })
}

/// Lower-case letters, digits and `-` only, runs of others as one `-`, trimmed, cut.
fn dns_label_part(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out: String = out.trim_matches('-').chars().take(max).collect();
    out.trim_end_matches('-').to_string()
}

/// The BackupRepo of a storage block used from namespace `ns` with the key Secret
/// `key_ref` (if any): `seed-<bucket>-<first 8 hex of SHA-256 over provider, bucket,
/// region, the credential Secret and the key Secret>`. The same storage and Secrets give
/// the same repository, whichever policy or backup names them.
pub fn repo_name(ns: &str, storage: &Storage, key_ref: Option<&str>) -> String {
    let mut h = Sha256::new();
    for part in [
        storage.provider.as_deref().unwrap_or(""),
        storage.bucket.as_deref().unwrap_or(""),
        storage.region.as_deref().unwrap_or(""),
        ns,
        storage.secret_ref.as_deref().unwrap_or(""),
        key_ref.unwrap_or(""),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    let mut hash = String::new();
    for b in &digest[..4] {
        let _ = write!(hash, "{b:02x}");
    }
    let bucket = dns_label_part(storage.bucket.as_deref().unwrap_or("volume"), 40);
    if bucket.is_empty() {
        format!("seed-{hash}")
    } else {
        format!("seed-{bucket}-{hash}")
    }
}

/// The key Secret a policy names, when encryption is enabled with a `keyRef`.
pub fn key_ref(policy: &seed::BackupPolicy) -> Option<&str> {
    let e = policy.spec.encryption.as_ref()?;
    if e.enabled == Some(false) {
        return None;
    }
    e.key_ref.as_deref().filter(|k| !k.is_empty())
}

/// The BackupRepo for `storage` used from namespace `ns`.
///
/// # Errors
/// The provider is unknown, or an object store lacks its bucket (naming the field).
pub fn backup_repo(
    ns: &str,
    storage: &Storage,
    key_ref: Option<&str>,
) -> Result<BackupRepo, String> {
    let p = provider_of(storage.provider.as_deref())
        .map_err(|e| format!("spec.storage.provider: {e}"))?;
    let mut config = BTreeMap::new();
    if let Some(b) = storage.bucket.as_deref().filter(|b| !b.is_empty()) {
        // nfs takes the export path; the object stores the bucket.
        let key = if p.storage_provider == "nfs" {
            "nfsPath"
        } else {
            "bucket"
        };
        config.insert(key.to_string(), b.to_string());
    } else if p.access_method == "Tool" {
        return Err(format!(
            "spec.storage.bucket: provider {:?} needs a bucket",
            storage.provider.as_deref().unwrap_or_default()
        ));
    }
    if let Some(r) = storage.region.as_deref().filter(|r| !r.is_empty()) {
        config.insert("region".to_string(), r.to_string());
    }
    let mut spec = json!({
        "storageProviderRef": p.storage_provider,
        "accessMethod": p.access_method,
        // The repository outlives any one policy: its data is only removed by deleting
        // Backups.
        "pvReclaimPolicy": "Retain",
        "config": config,
    });
    if p.access_method == "Mount" {
        spec["volumeCapacity"] = json!("10Gi");
    }
    if let Some(s) = storage.secret_ref.as_deref().filter(|s| !s.is_empty()) {
        spec["credential"] = json!({"name": s, "namespace": ns});
    }
    let name = repo_name(ns, storage, key_ref);
    let mut annotations = BTreeMap::new();
    if let Some(k) = key_ref {
        annotations.insert(
            annotation::DPREPO_KEY_SECRET.to_string(),
            format!("{ns}/{k}"),
        );
    }
    serde_json::from_value(json!({
        "apiVersion": "dataprotection.kubeblocks.io/v1alpha1",
        "kind": "BackupRepo",
        "metadata": {
            "name": name,
            "labels": {SEED_LABEL: "storage"},
            "annotations": annotations,
        },
        "spec": spec,
    }))
    .map_err(|e| format!("building BackupRepo {name}: {e}"))
}

/// A database engine the shipped ActionSets know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// PostgreSQL.
    PostgreSql,
    /// MySQL.
    MySql,
    /// MariaDB.
    MariaDb,
}

impl Engine {
    /// The name in status and ActionSet names.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::PostgreSql => "postgresql",
            Engine::MySql => "mysql",
            Engine::MariaDb => "mariadb",
        }
    }

    /// The engine [`Engine::as_str`] names (as a seed BackupPolicy's `status.engine`).
    pub fn from_name(name: &str) -> Option<Engine> {
        [Engine::PostgreSql, Engine::MySql, Engine::MariaDb]
            .into_iter()
            .find(|e| e.as_str() == name)
    }

    fn from_text(text: &str) -> Option<Engine> {
        let t = text.to_ascii_lowercase();
        if t.contains("postgres") {
            Some(Engine::PostgreSql)
        } else if t.contains("mariadb") {
            Some(Engine::MariaDb)
        } else if t.contains("mysql") {
            Some(Engine::MySql)
        } else {
            None
        }
    }
}

/// The engine of a cluster: the StatefulSet's `app.kubernetes.io/name` label, its pod
/// template's, then each container's image, the first that names an engine.
///
/// # Errors
/// None names one; the message lists what was looked at.
pub fn detect_engine(sts: &StatefulSet) -> Result<Engine, String> {
    let mut seen = Vec::new();
    let label = |labels: Option<&BTreeMap<String, String>>| {
        labels.and_then(|l| l.get(ENGINE_LABEL)).cloned()
    };
    let template = sts.spec.as_ref().map(|s| &s.template);
    let mut candidates: Vec<String> = Vec::new();
    candidates.extend(label(sts.metadata.labels.as_ref()));
    candidates.extend(label(
        template
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.as_ref()),
    ));
    for c in template
        .and_then(|t| t.spec.as_ref())
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
    {
        candidates.extend(c.image.clone());
    }
    for c in candidates {
        if let Some(e) = Engine::from_text(&c) {
            return Ok(e);
        }
        seen.push(c);
    }
    Err(format!(
        "no known database engine (postgresql, mysql, mariadb) in the {ENGINE_LABEL} labels or container images of StatefulSet {} (found {:?})",
        sts.metadata.name.as_deref().unwrap_or_default(),
        seen
    ))
}

/// The shipped ActionSet for an engine and method.
pub fn action_set_name(engine: Engine, kind: BackupKind) -> &'static str {
    match (engine, kind) {
        (Engine::PostgreSql, BackupKind::Physical) => "dprepo-postgresql-basebackup",
        (Engine::PostgreSql, BackupKind::Logical) => "dprepo-postgresql-pgdump",
        (Engine::MariaDb, BackupKind::Physical) => "dprepo-mariadb-mariabackup",
        (Engine::MySql, BackupKind::Physical) => "dprepo-mysql-xtrabackup",
        (Engine::MariaDb | Engine::MySql, BackupKind::Logical) => "dprepo-mysql-mysqldump",
    }
}

/// The method name of the Continuous (log archive) method a PITR-capable policy gets.
pub const CONTINUOUS_METHOD: &str = "archive-wal";

/// How often a seed schedule's Continuous backup switches to a new log file when
/// transactions came in (its `DP_ARCHIVE_INTERVAL`): every five minutes, KubeBlocks'
/// default for PostgreSQL's WAL archive. The base backups keep `spec.schedule`.
pub const CONTINUOUS_CRON: &str = "*/5 * * * *";

/// The shipped Continuous ActionSet that archives the logs a point-in-time restore of an
/// `engine` cluster backed up with `kind` replays, when there is one: PostgreSQL physical
/// backups (`pg_basebackup` bases, WAL replayed on top). A logical dump cannot replay a
/// physical log, and the MySQL-family binlog archive is not shipped yet.
pub fn continuous_action_set(engine: Engine, kind: BackupKind) -> Option<&'static str> {
    match (engine, kind) {
        (Engine::PostgreSql, BackupKind::Physical) => Some("dprepo-postgresql-archive-wal"),
        _ => None,
    }
}

/// The method name of the volume-snapshot method `snapshotBeforeBackup` adds.
pub const SNAPSHOT_METHOD: &str = "volume-snapshot";

/// The parameter of the logical ActionSets that `consistency.lockTables` sets.
pub const LOCK_TABLES_PARAMETER: &str = "lockTables";

/// The volumes of the StatefulSet's claim templates as its first container mounts them.
pub fn data_mounts(sts: &StatefulSet) -> Vec<VolumeMount> {
    let Some(spec) = &sts.spec else {
        return Vec::new();
    };
    let claims: Vec<&str> = spec
        .volume_claim_templates
        .iter()
        .flatten()
        .filter_map(|t| t.metadata.name.as_deref())
        .collect();
    spec.template
        .spec
        .as_ref()
        .and_then(|p| p.containers.first())
        .and_then(|c| c.volume_mounts.as_ref())
        .into_iter()
        .flatten()
        .filter(|m| claims.contains(&m.name.as_str()))
        .cloned()
        .collect()
}

/// The dataprotection BackupPolicy for a seed policy (same name and namespace).
///
/// `credential`: the keys of Secret [`credential_secret_name`] when it exists
/// (`username`, `password`, and `host`/`port` when it has them, which then address the
/// database instead of the pod's DNS name and first container port).
pub fn dp_backup_policy(
    policy: &seed::BackupPolicy,
    repo: &str,
    engine: Engine,
    sts: &StatefulSet,
    credential: Option<&[String]>,
) -> Result<BackupPolicy, String> {
    let name = policy.metadata.name.clone().unwrap_or_default();
    let cluster = &policy.spec.cluster_ref.name;
    let mut target = json!({
        "podSelector": {"matchLabels": {INSTANCE_LABEL: cluster}, "strategy": "Any"},
    });
    if let Some(keys) = credential {
        let mut c = json!({
            "secretName": credential_secret_name(cluster),
            "usernameKey": "username",
            "passwordKey": "password",
        });
        for k in ["host", "port"] {
            if keys.iter().any(|x| x == k) {
                c[format!("{k}Key")] = json!(k);
            }
        }
        target["connectionCredential"] = c;
    }
    let mounts = data_mounts(sts);
    let method_name = policy.spec.method.as_str();
    let mut method = json!({
        "name": method_name,
        "actionSetName": action_set_name(engine, policy.spec.method),
        "snapshotVolumes": false,
    });
    if !mounts.is_empty() {
        method["targetVolumes"] = json!({
            "volumeMounts": mounts,
        });
    }
    let mut methods = vec![method];
    let consistency = policy.spec.consistency.clone().unwrap_or_default();
    if consistency.snapshot_before_backup == Some(true) {
        let volumes: Vec<&str> = mounts.iter().map(|m| m.name.as_str()).collect();
        methods.push(json!({
            "name": SNAPSHOT_METHOD,
            "snapshotVolumes": true,
            "targetVolumes": {"volumes": volumes},
        }));
    }
    if let Some(set) = continuous_action_set(engine, policy.spec.method) {
        // The archiver reads the server's WAL directory on the data volume.
        let mut m = json!({
            "name": CONTINUOUS_METHOD,
            "actionSetName": set,
            "snapshotVolumes": false,
        });
        if !mounts.is_empty() {
            m["targetVolumes"] = json!({"volumeMounts": mounts});
        }
        methods.push(m);
    }
    serde_json::from_value(json!({
        "apiVersion": "dataprotection.kubeblocks.io/v1alpha1",
        "kind": "BackupPolicy",
        "metadata": {
            "name": name,
            "namespace": policy.metadata.namespace,
            "labels": {SEED_LABEL: format!("BackupPolicy.{name}"), INSTANCE_LABEL: cluster},
        },
        "spec": {
            "backupRepoName": repo,
            "backoffLimit": 1,
            "target": target,
            "backupMethods": methods,
            "useKopia": false,
        },
    }))
    .map_err(|e| format!("building BackupPolicy {name}: {e}"))
}

/// `maxRetentionDays` as a retention period (`30d`); none means kept until deleted.
pub fn retention_period(policy: &seed::BackupPolicy) -> Option<String> {
    policy
        .spec
        .retention
        .as_ref()
        .and_then(|r| r.max_retention_days)
        .map(|d| format!("{d}d"))
}

/// The parameters a policy hands each backup (`lockTables` for logical backups).
pub fn parameters(policy: &seed::BackupPolicy) -> Vec<Value> {
    let lock = policy.spec.consistency.as_ref().and_then(|c| c.lock_tables);
    match (policy.spec.method, lock) {
        (BackupKind::Logical, Some(l)) => {
            vec![json!({"name": LOCK_TABLES_PARAMETER, "value": l.to_string()})]
        }
        _ => Vec::new(),
    }
}

/// The dataprotection Backup for a seed Backup (same name and namespace), in repository
/// `repo` (the policy's, or the override's), labelled with the cluster
/// (`app.kubernetes.io/instance`) so that it is a base for point-in-time restores.
pub fn dp_backup(
    backup: &seed::Backup,
    policy: &seed::BackupPolicy,
    repo: &str,
) -> Result<Backup, String> {
    let name = backup.metadata.name.clone().unwrap_or_default();
    let mut spec = json!({
        "backupPolicyName": policy.metadata.name,
        "backupMethod": policy.spec.method.as_str(),
        "deletionPolicy": "Delete",
    });
    if let Some(r) = retention_period(policy) {
        spec["retentionPeriod"] = json!(r);
    }
    let params = parameters(policy);
    if !params.is_empty() {
        spec["parameters"] = json!(params);
    }
    serde_json::from_value(json!({
        "apiVersion": "dataprotection.kubeblocks.io/v1alpha1",
        "kind": "Backup",
        "metadata": {
            "name": name,
            "namespace": backup.metadata.namespace,
            "labels": {
                SEED_LABEL: format!("Backup.{name}"),
                crate::api::labels::label::BACKUP_REPO_NAME: repo,
                // The cluster's label, as scheduled backups carry it: a point-in-time
                // restore picks its base among the cluster's full backups by it.
                INSTANCE_LABEL: policy.spec.cluster_ref.name,
            },
        },
        "spec": spec,
    }))
    .map_err(|e| format!("building Backup {name}: {e}"))
}

/// The keep-last count of a schedule: `successfulJobsHistoryLimit`, else the policy's
/// `maxRetentionCount`.
pub fn keep_last(schedule: &seed::BackupSchedule, policy: &seed::BackupPolicy) -> Option<i64> {
    schedule.spec.successful_jobs_history_limit.or_else(|| {
        policy
            .spec
            .retention
            .as_ref()
            .and_then(|r| r.max_retention_count)
    })
}

/// The dataprotection BackupSchedule for a seed schedule (same name and namespace): the
/// policy's method at `spec.schedule`, and, when the policy's engine (its
/// `status.engine`) and method have a Continuous ActionSet
/// ([`continuous_action_set`]), the enabled Continuous schedule [`CONTINUOUS_METHOD`]
/// (one long-running archive that point-in-time restores replay).
pub fn dp_schedule(
    schedule: &seed::BackupSchedule,
    policy: &seed::BackupPolicy,
) -> Result<BackupSchedule, String> {
    let name = schedule.metadata.name.clone().unwrap_or_default();
    let mut entry = json!({
        "name": policy.spec.method.as_str(),
        "enabled": true,
        "backupMethod": policy.spec.method.as_str(),
        "cronExpression": schedule.spec.schedule,
        // Without maxRetentionDays backups are kept until deleted (or keep-last).
        "retentionPeriod": retention_period(policy).unwrap_or_default(),
    });
    let params = parameters(policy);
    if !params.is_empty() {
        entry["parameters"] = json!(params);
    }
    let mut entries = vec![entry];
    let engine = policy
        .status
        .as_ref()
        .and_then(|s| s.engine.as_deref())
        .and_then(Engine::from_name);
    if engine
        .and_then(|e| continuous_action_set(e, policy.spec.method))
        .is_some()
    {
        entries.push(json!({
            "name": CONTINUOUS_METHOD,
            "enabled": true,
            "backupMethod": CONTINUOUS_METHOD,
            "cronExpression": CONTINUOUS_CRON,
            "retentionPeriod": retention_period(policy).unwrap_or_default(),
        }));
    }
    let mut annotations = BTreeMap::new();
    if let Some(n) = keep_last(schedule, policy) {
        annotations.insert(annotation::DPREPO_KEEP_LAST.to_string(), n.to_string());
    }
    serde_json::from_value(json!({
        "apiVersion": "dataprotection.kubeblocks.io/v1alpha1",
        "kind": "BackupSchedule",
        "metadata": {
            "name": name,
            "namespace": schedule.metadata.namespace,
            "labels": {SEED_LABEL: format!("BackupSchedule.{name}")},
            "annotations": annotations,
        },
        "spec": {
            "backupPolicyName": policy.metadata.name,
            "schedules": entries,
        },
    }))
    .map_err(|e| format!("building BackupSchedule {name}: {e}"))
}

/// A byte count in binary units, as the document writes sizes (`5GiB`): the largest
/// unit in which the value is at least 1, with at most one decimal (none when whole).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut unit = 0;
    let mut scaled = bytes as f64;
    while scaled >= 1024.0 && unit + 1 < UNITS.len() {
        scaled /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        return format!("{bytes}B");
    }
    let rounded = (scaled * 10.0).round() / 10.0;
    if rounded.fract() == 0.0 {
        format!("{rounded:.0}{}", UNITS[unit])
    } else {
        format!("{rounded:.1}{}", UNITS[unit])
    }
}

/// The seed phase of a dataprotection Backup phase.
pub fn seed_phase(dp_phase: Option<&str>) -> &'static str {
    match dp_phase {
        Some("Running") | Some("InProgress") => "Running",
        Some("Completed") => "Completed",
        Some("Failed") => "Failed",
        Some("Deleting") => "Deleting",
        _ => "Pending",
    }
}

/// The seed status of a dataprotection Backup: phase, times, size, location
/// (`<scheme>://<bucket><path>`), snapshotName (the first VolumeSnapshot, else the dprepo
/// snapshot of the backup's data from the `dprepo` extras), message.
pub fn mirror_backup_status(dp: &Backup, storage: &Storage) -> seed::backup::BackupStatus {
    let v = serde_json::to_value(dp).unwrap_or_default();
    let status = &v["status"];
    let text = |p: &str| {
        status
            .pointer(p)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let phase = seed_phase(text("/phase").as_deref()).to_string();
    let size = text("/totalSize")
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(human_size);
    let location = text("/path").filter(|p| !p.is_empty()).map(|path| {
        let scheme = provider_of(storage.provider.as_deref())
            .map(|p| p.scheme)
            .unwrap_or("repo");
        let bucket = storage.bucket.as_deref().unwrap_or_default();
        format!("{scheme}://{bucket}{path}")
    });
    let volume_snapshot = status
        .pointer("/volumeSnapshots/0/name")
        .or_else(|| status.pointer("/actions/0/volumeSnapshots/0/name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let dprepo_snapshot = status["extras"].as_array().and_then(|xs| {
        xs.iter()
            .find(|x| x["type"] == "dprepo")
            .and_then(|x| x["snapshots"].as_str())
            .and_then(|s| s.split(',').next())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    });
    seed::backup::BackupStatus {
        phase: Some(phase),
        start_time: text("/startTimestamp"),
        completion_time: text("/completionTimestamp"),
        size,
        location,
        snapshot_name: volume_snapshot.or(dprepo_snapshot),
        message: text("/failureReason"),
        backup_name: dp.metadata.name.clone(),
        conditions: None,
    }
}

/// One claim of a cluster: template name, ordinal, the claim's name as the StatefulSet
/// claims it, its spec and where the first container mounts it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterClaim {
    /// The claim template's name.
    pub template: String,
    /// The replica's ordinal.
    pub ordinal: i32,
    /// `<template>-<statefulset>-<ordinal>`.
    pub name: String,
    /// The template's spec.
    pub spec: PersistentVolumeClaimSpec,
    /// The mount path in the first container.
    pub mount_path: String,
}

/// The claims StatefulSet `sts` (named `name`) makes for its replicas.
///
/// # Errors
/// The StatefulSet has no claim templates (nothing to restore into).
pub fn cluster_claims(sts: &StatefulSet, name: &str) -> Result<Vec<ClusterClaim>, String> {
    let spec = sts.spec.as_ref().ok_or("the StatefulSet has no spec")?;
    let replicas = spec.replicas.unwrap_or(1).max(1);
    let mounts = data_mounts(sts);
    let mut out = Vec::new();
    for t in spec.volume_claim_templates.iter().flatten() {
        let template = t.metadata.name.clone().unwrap_or_default();
        let Some(mount) = mounts.iter().find(|m| m.name == template) else {
            continue;
        };
        for ordinal in 0..replicas {
            out.push(ClusterClaim {
                template: template.clone(),
                ordinal,
                name: format!("{template}-{name}-{ordinal}"),
                spec: t.spec.clone().unwrap_or_default(),
                mount_path: mount.mount_path.clone(),
            });
        }
    }
    if out.is_empty() {
        return Err(format!(
            "StatefulSet {} has no volumeClaimTemplates mounted by its first container: there is no volume to restore into",
            sts.metadata.name.as_deref().unwrap_or_default()
        ));
    }
    Ok(out)
}

/// The dataprotection Restore preparing `claims` (named `claim_name(c)`) from Backup
/// `backup` (namespace `ns`).
pub fn dp_restore(
    restore: &seed::Restore,
    backup: &str,
    claims: &[(String, &ClusterClaim)],
) -> Result<Restore, String> {
    let name = restore.metadata.name.clone().unwrap_or_default();
    let ns = restore.metadata.namespace.clone().unwrap_or_default();
    let volume_claims: Vec<Value> = claims
        .iter()
        .map(|(claim_name, c)| {
            json!({
                "metadata": {"name": claim_name, "labels": {SEED_LABEL: format!("Restore.{name}")}},
                "volumeClaimSpec": c.spec,
                "volumeSource": c.template,
                "mountPath": c.mount_path,
            })
        })
        .collect();
    let mut spec = json!({
        "backup": {"name": backup, "namespace": ns},
        "prepareDataConfig": {
            "volumeClaims": volume_claims,
            "volumeClaimRestorePolicy": "Parallel",
        },
    });
    if let Some(p) = &restore.spec.pitr {
        spec["restoreTime"] = json!(p.target_time);
    }
    serde_json::from_value(json!({
        "apiVersion": "dataprotection.kubeblocks.io/v1alpha1",
        "kind": "Restore",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {SEED_LABEL: format!("Restore.{name}")},
        },
        "spec": spec,
    }))
    .map_err(|e| format!("building Restore {name}: {e}"))
}

/// A new cluster `name` from the source cluster's StatefulSet: the same spec, with every
/// label `app.kubernetes.io/instance` (metadata, selector, pod template) set to `name`,
/// `serviceName` kept unless it was the source's name (then `name`), and the server-set
/// fields dropped.
pub fn new_cluster(source: &StatefulSet, name: &str) -> StatefulSet {
    let source_name = source.metadata.name.clone().unwrap_or_default();
    let mut spec = source.spec.clone().unwrap_or_default();
    let relabel = |labels: &mut Option<BTreeMap<String, String>>| {
        let l = labels.get_or_insert_with(BTreeMap::new);
        l.insert(INSTANCE_LABEL.into(), name.into());
    };
    {
        let sel = &mut spec.selector.match_labels;
        if sel.as_ref().is_some_and(|l| l.contains_key(INSTANCE_LABEL)) {
            relabel(sel);
        }
    }
    let meta = spec.template.metadata.get_or_insert_with(Default::default);
    relabel(&mut meta.labels);
    if spec.service_name.as_deref() == Some(source_name.as_str()) {
        spec.service_name = Some(name.to_string());
    }
    let mut labels = source.metadata.labels.clone();
    relabel(&mut labels);
    StatefulSet {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.to_string()),
            namespace: source.metadata.namespace.clone(),
            labels,
            annotations: None,
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// The script of a swap Job: makes the claim mounted at `/target` hold exactly what the
/// claim at `/incoming` holds, keeping the old data until the new is fully in place.
///
/// 1. A leftover `.dprepo-previous` (a swap killed mid-way) is rolled back first: entries
///    moved in from the new data are removed and the old ones moved back.
/// 2. The new data is copied to `/target/.dprepo-incoming` (a failure here leaves the old
///    data as it was; an empty restored volume is refused).
/// 3. The old entries move to `/target/.dprepo-previous` (then `.complete` is written
///    there), the new entries move into place, and `.dprepo-previous` is removed. Any
///    failure in this step rolls back before the script exits non-zero.
pub const SWAP_SCRIPT: &str = r#"set -eu
T="${SWAP_TARGET:-/target}"
N="${SWAP_INCOMING:-/incoming}"
P="$T/.dprepo-previous"
I="$T/.dprepo-incoming"
entries() { find "$1" -mindepth 1 -maxdepth 1 ! -name .dprepo-previous ! -name .dprepo-incoming; }
rollback() {
  if [ -d "$P" ]; then
    if [ -f "$P/.complete" ]; then
      entries "$T" | while read -r e; do rm -rf "$e"; done
    fi
    rm -f "$P/.complete"
    entries "$P" | while read -r e; do mv "$e" "$T/"; done
    rmdir "$P"
    echo "rolled back: the old data is in place"
  fi
}
rollback
rm -rf "$I"
if [ -z "$(ls -A "$N")" ]; then
  echo "the restored volume is empty: nothing was swapped" >&2
  exit 1
fi
mkdir "$I"
cp -a "$N/." "$I/"
trap 'rc=$?; if [ $rc -ne 0 ]; then rollback; rm -rf "$I"; fi; exit $rc' EXIT
mkdir "$P"
entries "$T" | while read -r e; do mv "$e" "$P/"; done
touch "$P/.complete"
entries "$I" | while read -r e; do mv "$e" "$T/"; done
rmdir "$I"
rm -rf "$P"
echo "swapped"
"#;

/// The Job swapping the data of claim `target` for that of claim `incoming`, run as root
/// with the tools image.
pub fn swap_job(
    name: &str,
    ns: &str,
    target: &str,
    incoming: &str,
    image: &str,
    labels: BTreeMap<String, String>,
) -> Result<Job, String> {
    serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": {"runAsUser": 0},
                    "containers": [{
                        "name": "swap",
                        "image": image,
                        "command": ["sh", "-c", SWAP_SCRIPT],
                        "volumeMounts": [
                            {"name": "target", "mountPath": "/target"},
                            {"name": "incoming", "mountPath": "/incoming", "readOnly": true},
                        ],
                    }],
                    "volumes": [
                        {"name": "target", "persistentVolumeClaim": {"claimName": target}},
                        {"name": "incoming", "persistentVolumeClaim": {"claimName": incoming}},
                    ],
                },
            },
        },
    }))
    .map_err(|e| format!("building Job {name}: {e}"))
}

#[cfg(test)]
mod tests;
