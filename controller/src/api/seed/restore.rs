//! Seed `Restore` (`kubeblocks.io/v1alpha1`, namespaced): a seed Backup restored into a
//! cluster, new or (with `conflictPolicy: Replace`) existing, optionally to a point in
//! time. Translated onto a dataprotection Restore, then the cluster is created or its data
//! swapped ([`crate::reconcile::seed::restore`]).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A restore of the simplified API.
#[allow(clippy::duplicated_attributes)] // kube's repeated `type_ = ...` in printcolumns
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kubeblocks.io",
    version = "v1alpha1",
    kind = "Restore",
    plural = "restores",
    namespaced,
    status = "RestoreStatus",
    category = "dprepo-seed",
    derive = "PartialEq",
    doc = "Restore (simplified API) restores a Backup (simplified API) into a cluster: a new one made from the source cluster's spec, or, with conflictPolicy Replace, an existing one whose data is swapped only once the restored data is complete.",
    printcolumn(name = "BACKUP", type_ = "string", json_path = ".spec.backupRef"),
    printcolumn(
        name = "CLUSTER",
        type_ = "string",
        json_path = ".spec.clusterRef.name"
    ),
    printcolumn(name = "STATUS", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreSpec {
    /// The seed Backup (in the restore's namespace).
    #[schemars(length(min = 1))]
    pub backup_ref: String,
    /// The cluster restored into (in the restore's namespace).
    pub cluster_ref: RestoreClusterRef,
    /// Point-in-time recovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pitr: Option<Pitr>,
    /// What to do when the cluster exists: `Fail` (the default: refuse, touch nothing) or
    /// `Replace` (swap its data for the restored data once that is complete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict_policy: Option<ConflictPolicy>,
}

/// The cluster restored into.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreClusterRef {
    /// Its name.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// Point-in-time recovery.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pitr {
    /// The instant restored to, `YYYY-MM-DDTHH:MM:SSZ` (the dataprotection Restore's
    /// `restoreTime`).
    pub target_time: String,
}

/// What a restore does to an existing cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ConflictPolicy {
    /// Refuse: the restore fails and the cluster is not touched.
    #[default]
    Fail,
    /// Replace the cluster's data, only once the restored data is complete.
    Replace,
}

/// How the restore went, in the seed's words.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreStatus {
    /// `Pending`, `Running`, `Completed` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The step under way or last done: `RestoringData`, `CreatingCluster`,
    /// `StoppingCluster`, `SwappingData`, `StartingCluster`, `Done`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// When it started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When it ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// Why it failed, naming the field at fault where one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The dataprotection Restore preparing the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_name: Option<String>,
    /// Replace: the cluster's replica count before it was stopped (restored on start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas_before: Option<i32>,
    /// `Ready`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
}
