//! Seed `BackupPolicy` (`kubeblocks.io/v1alpha1`, namespaced): how a cluster is backed up
//! (physical or logical), where to (`storage`), for how long (`retention`), with which
//! consistency and encryption. Translated onto a BackupRepo and a dataprotection
//! BackupPolicy of the same name ([`crate::reconcile::seed::backuppolicy`]).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Storage;

/// A backup policy of the simplified API.
#[allow(clippy::duplicated_attributes)] // kube's repeated `type_ = ...` in printcolumns
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kubeblocks.io",
    version = "v1alpha1",
    kind = "BackupPolicy",
    plural = "backuppolicies",
    namespaced,
    status = "BackupPolicyStatus",
    category = "dprepo-seed",
    derive = "PartialEq",
    doc = "BackupPolicy (simplified API) says how a database cluster is backed up: the method, the storage, the retention, consistency and encryption. dprepo-controller translates it onto a BackupRepo and a dataprotection.kubeblocks.io BackupPolicy of the same name.",
    printcolumn(
        name = "CLUSTER",
        type_ = "string",
        json_path = ".spec.clusterRef.name"
    ),
    printcolumn(name = "METHOD", type_ = "string", json_path = ".spec.method"),
    printcolumn(name = "ENGINE", type_ = "string", json_path = ".status.engine"),
    printcolumn(name = "REPO", type_ = "string", json_path = ".status.backupRepoName"),
    printcolumn(name = "STATUS", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupPolicySpec {
    /// The database cluster backed up.
    pub cluster_ref: ClusterRef,
    /// `physical` (the data files: pg_basebackup, mariabackup) or `logical` (SQL:
    /// pg_dump, mysqldump).
    pub method: BackupKind,
    /// Where backups go.
    pub storage: Storage,
    /// How long backups are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// Consistency settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<Consistency>,
    /// Encryption settings (dprepo repositories are always encrypted; this chooses the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

/// A reference to a database cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterRef {
    /// The cluster's name (see the README: an apps.kubeblocks.io Cluster, else the
    /// StatefulSet of that name).
    pub name: String,
    /// Its namespace; must be the policy's own (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The kind of backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    /// The database's files.
    Physical,
    /// The database's contents as SQL.
    Logical,
}

impl BackupKind {
    /// The wire name (also the dataprotection BackupPolicy's method name).
    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::Physical => "physical",
            BackupKind::Logical => "logical",
        }
    }
}

/// Retention.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retention {
    /// Days a backup is kept (each Backup's `retentionPeriod`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 36500))]
    pub max_retention_days: Option<i64>,
    /// The newest this many scheduled backups are kept (`dprepo.io/keep-last`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_retention_count: Option<i64>,
}

/// Consistency.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Consistency {
    /// Whether volume snapshots are taken (`snapshotVolumes` of a second method,
    /// `volume-snapshot`; see the README).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_before_backup: Option<bool>,
    /// Whether a logical backup locks the tables (parameter `lockTables` of the logical
    /// ActionSets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_tables: Option<bool>,
}

/// Encryption.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Encryption {
    /// With `keyRef`: the repository key is the user's. Without it (or `false`): the
    /// controller's own generated key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The Secret (in the policy's namespace) whose key `dprepoPassword` is the
    /// repository key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ref: Option<String>,
}

/// What the controller made of the policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupPolicyStatus {
    /// `Available` (the BackupRepo is Ready and the dataprotection BackupPolicy Available),
    /// `Pending` (waiting for them), `Unavailable` (something is wrong: see `message`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Why the policy is not Available, naming the field at fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The database engine found in the cluster (`postgresql`, `mysql`, `mariadb`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// The ActionSet chosen for the engine and method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_set_name: Option<String>,
    /// The BackupRepo the storage block became.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_repo_name: Option<String>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
}
