//! `StorageProvider` (cluster-scoped): how to reach one kind of storage, through a CSI
//! driver (Mount access) or through `datasafed` (Tool access). The four templates are Go
//! `text/template` texts rendered with a BackupRepo's parameters (CONTROLLER.md section 3).

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::preserve_unknown_object;

/// Condition type: whether the CSI driver named by `csiDriverName` is installed.
pub const CONDITION_CSI_DRIVER_INSTALLED: &str = "CSIDriverInstalled";

/// What a StorageProvider offers.
#[allow(clippy::duplicated_attributes)] // kube's repeated `type_ = ...` in printcolumns
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "dataprotection.kubeblocks.io",
    version = "v1alpha1",
    kind = "StorageProvider",
    plural = "storageproviders",
    status = "StorageProviderStatus",
    category = "kubeblocks",
    derive = "PartialEq",
    doc = "StorageProvider describes how to reach one kind of storage: the CSI driver and templates for Mount access, the datasafed configuration template for Tool access, and the parameters both take.",
    printcolumn(name = "STATUS", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "CSIDRIVER",
        type_ = "string",
        json_path = ".spec.csiDriverName"
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct StorageProviderSpec {
    /// The CSI driver that mounts this storage; empty when the storage is reached only
    /// through datasafed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csi_driver_name: Option<String>,
    /// Go template of the Secret the CSI driver reads (keys, endpoint, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csi_driver_secret_template: Option<String>,
    /// Go template of the StorageClass that provisions volumes through the CSI driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_template: Option<String>,
    /// Go template of the PersistentVolumeClaim that mounts the storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim_template: Option<String>,
    /// Go template of the `datasafed.conf` that gives datasafed (dprepo's shim) access to
    /// the storage; empty when the storage cannot be reached that way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datasafed_config_template: Option<String>,
    /// The parameters the templates use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters_schema: Option<ParametersSchema>,
}

/// The parameters a StorageProvider's templates take.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParametersSchema {
    /// An OpenAPI v3 object schema of the parameters; its `default`s are the parameters'
    /// defaults. Kept whole.
    #[serde(
        rename = "openAPIV3Schema",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub open_api_v3_schema: Option<serde_json::Value>,
    /// Parameters that are secrets: they are read from the BackupRepo's credential Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_fields: Option<Vec<String>>,
}

/// Whether a StorageProvider can be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum StorageProviderPhase {
    /// The CSI driver it names is not installed.
    NotReady,
    /// Usable.
    Ready,
}

impl StorageProviderPhase {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageProviderPhase::NotReady => "NotReady",
            StorageProviderPhase::Ready => "Ready",
        }
    }
}

impl fmt::Display for StorageProviderPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The observed state of a StorageProvider.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageProviderStatus {
    /// `NotReady` or `Ready`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<StorageProviderPhase>,
    /// Conditions, among them `CSIDriverInstalled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
}
