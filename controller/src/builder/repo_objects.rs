//! The objects a BackupRepo derives, as KubeBlocks builds them, plus dprepo's key:
//!
//! - [`tool_secret`]: the per-namespace Secret (and the pre-check's own) with
//!   `datasafed.conf` (Tool access) and `dprepo-password` (both access methods), labelled
//!   `backup-repo-name` and `is-tool-config`, owned by the BackupRepo;
//! - [`repo_pvc`]: the per-namespace PVC (Mount access) from the provider's PVC template,
//!   or on the generated StorageClass; defaults `ReadWriteMany`, `Filesystem`, the
//!   repository's `volumeCapacity`;
//! - [`storage_class`]: the rendered StorageClass, `volumeBindingMode: Immediate`, the
//!   repository's reclaim policy;
//! - [`csi_secret`]: the rendered Secret the CSI driver reads;
//! - [`generated_key_secret`]: the repository key, owned by nobody.
//!
//! Rendered templates are YAML read as KubeBlocks reads them (YAML to JSON, then the
//! type; unknown fields dropped, empty text = an empty object).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, Secret, VolumeResourceRequirements,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;

use super::datasafed::{CONFIG_KEY, PASSWORD_KEY};
use super::key::{KEY_FIELD, KEY_FOR_LABEL};
use super::string_map;
use crate::api::labels::{annotation, label};
use crate::api::BackupRepo;

/// Size of a repository PVC when the BackupRepo names no `volumeCapacity` (an API
/// server refuses a claim without a size; drivers that mount shared storage ignore it).
pub const DEFAULT_VOLUME_CAPACITY: &str = "1Gi";

/// A rendered template that is not the object it should describe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to unmarshal {what}: {message}")]
pub struct UnmarshalError {
    /// "PVC object", "storage class", "secret content".
    pub what: &'static str,
    /// The parser's message.
    pub message: String,
}

/// Reads rendered YAML as the object `T` (Go's `yaml.Unmarshal` from
/// `k8s.io/apimachinery`: YAML to JSON, unknown fields ignored, empty text = zero).
///
/// # Errors
/// The text is not YAML, or not the shape of `T`.
pub fn from_rendered<T: serde::de::DeserializeOwned + Default>(
    what: &'static str,
    text: &str,
) -> Result<T, UnmarshalError> {
    let err = |e: &dyn std::fmt::Display| UnmarshalError {
        what,
        message: e.to_string(),
    };
    let value: serde_json::Value = serde_yaml::from_str(text).map_err(|e| err(&e))?;
    if value.is_null() {
        return Ok(T::default());
    }
    serde_json::from_value(value).map_err(|e| err(&e))
}

fn repo_name(repo: &BackupRepo) -> String {
    repo.metadata.name.clone().unwrap_or_default()
}

fn owned_meta(
    repo: &BackupRepo,
    name: &str,
    namespace: Option<&str>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(str::to_string),
        labels: Some(labels),
        annotations: (!annotations.is_empty()).then_some(annotations),
        owner_references: super::controller_ref(repo).map(|o| vec![o]),
        ..Default::default()
    }
}

/// The tool Secret `name` in `namespace`: `datasafed.conf` when `datasafed_conf` is
/// given (Tool access), and the repository key. `annotations` are the digest and the
/// key source (and any extra).
pub fn tool_secret(
    repo: &BackupRepo,
    name: &str,
    namespace: &str,
    datasafed_conf: Option<&str>,
    key: &[u8],
    annotations: BTreeMap<String, String>,
) -> Secret {
    let repo_name = repo_name(repo);
    let mut data = BTreeMap::new();
    if let Some(conf) = datasafed_conf {
        data.insert(CONFIG_KEY.to_string(), ByteString(conf.as_bytes().to_vec()));
    }
    data.insert(PASSWORD_KEY.to_string(), ByteString(key.to_vec()));
    Secret {
        metadata: owned_meta(
            repo,
            name,
            Some(namespace),
            string_map([
                (label::BACKUP_REPO_NAME, repo_name.as_str()),
                (label::IS_TOOL_CONFIG, "true"),
            ]),
            annotations,
        ),
        data: Some(data),
        ..Default::default()
    }
}

/// The repository PVC `name` in `namespace`: the rendered PVC template when the provider
/// has one (`rendered`), else a claim on `storage_class`; then KubeBlocks' defaults.
///
/// # Errors
/// `rendered` is not a PVC.
pub fn repo_pvc(
    repo: &BackupRepo,
    name: &str,
    namespace: &str,
    rendered: Option<&str>,
    storage_class: Option<&str>,
    annotations: BTreeMap<String, String>,
) -> Result<PersistentVolumeClaim, UnmarshalError> {
    let mut pvc: PersistentVolumeClaim = match rendered {
        Some(text) => from_rendered("PVC object", text)?,
        None => PersistentVolumeClaim {
            spec: Some(PersistentVolumeClaimSpec {
                storage_class_name: storage_class.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        },
    };
    let mut labels = pvc.metadata.labels.take().unwrap_or_default();
    labels.insert(label::BACKUP_REPO_NAME.into(), repo_name(repo));
    let mut all_annotations = pvc.metadata.annotations.take().unwrap_or_default();
    all_annotations.extend(annotations);
    pvc.metadata = ObjectMeta {
        labels: Some(labels),
        annotations: (!all_annotations.is_empty()).then_some(all_annotations),
        finalizers: pvc.metadata.finalizers.take(),
        ..owned_meta(
            repo,
            name,
            Some(namespace),
            BTreeMap::new(),
            BTreeMap::new(),
        )
    };
    let spec = pvc.spec.get_or_insert_with(Default::default);
    if spec.access_modes.as_ref().is_none_or(Vec::is_empty) {
        spec.access_modes = Some(vec!["ReadWriteMany".into()]);
    }
    if spec.volume_mode.is_none() {
        spec.volume_mode = Some("Filesystem".into());
    }
    let resources = spec
        .resources
        .get_or_insert_with(VolumeResourceRequirements::default);
    let requests = resources.requests.get_or_insert_with(BTreeMap::new);
    let zero = requests
        .get("storage")
        .is_none_or(|q| q.0.trim().trim_start_matches(['0', '.']).is_empty());
    if zero {
        let capacity = repo
            .spec
            .volume_capacity
            .clone()
            .filter(|q| !q.0.trim().trim_start_matches(['0', '.']).is_empty())
            .unwrap_or_else(|| Quantity(DEFAULT_VOLUME_CAPACITY.into()));
        requests.insert("storage".into(), capacity);
    }
    Ok(pvc)
}

/// The generated StorageClass `name` from the rendered template.
///
/// # Errors
/// `rendered` is not a StorageClass.
pub fn storage_class(
    repo: &BackupRepo,
    name: &str,
    rendered: &str,
) -> Result<StorageClass, UnmarshalError> {
    let mut sc: StorageClass = from_rendered("storage class", rendered)?;
    sc.metadata = owned_meta(
        repo,
        name,
        None,
        string_map([(label::BACKUP_REPO_NAME, repo_name(repo).as_str())]),
        BTreeMap::new(),
    );
    sc.volume_binding_mode = Some("Immediate".into());
    sc.reclaim_policy = Some(repo.spec.pv_reclaim_policy.as_str().into());
    Ok(sc)
}

/// The CSI driver's Secret from the rendered template (a YAML map of strings).
///
/// # Errors
/// `rendered` is not a map of strings.
pub fn csi_secret(
    repo: &BackupRepo,
    name: &str,
    namespace: &str,
    rendered: &str,
    digest: &str,
) -> Result<Secret, UnmarshalError> {
    let map: BTreeMap<String, String> = from_rendered("secret content", rendered)?;
    Ok(Secret {
        metadata: owned_meta(
            repo,
            name,
            Some(namespace),
            string_map([(label::BACKUP_REPO_NAME, repo_name(repo).as_str())]),
            string_map([(annotation::BACKUP_REPO_DIGEST, digest)]),
        ),
        data: Some(
            map.into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Default::default()
    })
}

/// The Secret holding a generated repository key. It has no owner: it outlives the
/// BackupRepo on purpose (see [`super::key`]).
pub fn generated_key_secret(repo_name: &str, name: &str, namespace: &str, key: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(string_map([
                (KEY_FOR_LABEL, repo_name),
                (label::MANAGED_BY, label::MANAGED_BY_VALUE),
            ])),
            annotations: Some(string_map([(
                "dprepo.io/note",
                "The key of the dprepo repository of this BackupRepo. It is kept when the \
                 BackupRepo is deleted: without it the repository's data cannot be read. \
                 Delete it only together with the data.",
            )])),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            KEY_FIELD.to_string(),
            ByteString(key.as_bytes().to_vec()),
        )])),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::backuprepo::{BackupRepoSpec, PvReclaimPolicy};
    use serde_json::json;

    fn repo() -> BackupRepo {
        let mut r = BackupRepo::new(
            "nfs-repo",
            BackupRepoSpec {
                storage_provider_ref: "nfs".into(),
                access_method: None,
                volume_capacity: Some(Quantity("100Gi".into())),
                pv_reclaim_policy: PvReclaimPolicy::Retain,
                config: None,
                credential: None,
                path_prefix: None,
            },
        );
        r.metadata.uid = Some("uid-1".into());
        r
    }

    fn owner() -> serde_json::Value {
        json!([{"apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "BackupRepo",
            "name": "nfs-repo", "uid": "uid-1", "controller": true, "blockOwnerDeletion": true}])
    }

    #[test]
    fn a_pvc_from_a_template_keeps_its_spec_and_gets_the_defaults() {
        let pvc = repo_pvc(
            &repo(),
            "pvc-nfs-repo-abcdef",
            "team-a",
            Some("metadata:\n  name: ignored\nspec:\n  storageClassName: fast\n"),
            None,
            string_map([("a", "b")]),
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&pvc).unwrap(),
            json!({
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": "pvc-nfs-repo-abcdef", "namespace": "team-a",
                    "labels": {"dataprotection.kubeblocks.io/backup-repo-name": "nfs-repo"},
                    "annotations": {"a": "b"}, "ownerReferences": owner()},
                "spec": {"storageClassName": "fast", "accessModes": ["ReadWriteMany"],
                    "volumeMode": "Filesystem", "resources": {"requests": {"storage": "100Gi"}}}
            })
        );
        let plain = repo_pvc(&repo(), "p", "ns", None, Some("sc-x"), BTreeMap::new()).unwrap();
        assert_eq!(
            plain.spec.unwrap().storage_class_name.as_deref(),
            Some("sc-x")
        );
        let bad = repo_pvc(
            &repo(),
            "p",
            "ns",
            Some("spec: [1, 2]"),
            None,
            BTreeMap::new(),
        );
        assert!(bad
            .unwrap_err()
            .to_string()
            .starts_with("failed to unmarshal PVC object: "));
    }

    #[test]
    fn storage_classes_bind_immediately_with_the_repo_reclaim_policy() {
        let sc = storage_class(
            &repo(),
            "sc-nfs-repo-abcdef",
            "provisioner: nfs.csi.k8s.io\nparameters:\n  server: nfs.local\nvolumeBindingMode: WaitForFirstConsumer\n",
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&sc).unwrap(),
            json!({
                "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": {"name": "sc-nfs-repo-abcdef",
                    "labels": {"dataprotection.kubeblocks.io/backup-repo-name": "nfs-repo"},
                    "ownerReferences": owner()},
                "provisioner": "nfs.csi.k8s.io",
                "parameters": {"server": "nfs.local"},
                "reclaimPolicy": "Retain",
                "volumeBindingMode": "Immediate"
            })
        );
    }

    #[test]
    fn secrets_carry_config_key_and_digest() {
        let s = tool_secret(
            &repo(),
            "tool-config-nfs-repo-abcdef",
            "team-a",
            Some("[storage]\ntype = local\n"),
            b"k3y",
            string_map([(annotation::BACKUP_REPO_DIGEST, "d1")]),
        );
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v["data"],
            json!({"datasafed.conf": "W3N0b3JhZ2VdCnR5cGUgPSBsb2NhbAo=", "dprepo-password": "azN5"})
        );
        assert_eq!(
            v["metadata"]["labels"],
            json!({"dataprotection.kubeblocks.io/backup-repo-name": "nfs-repo",
                   "dataprotection.kubeblocks.io/is-tool-config": "true"})
        );
        let c = csi_secret(
            &repo(),
            "secret-x",
            "dp",
            "accessKeyID: a\nsecretAccessKey: b\n",
            "d2",
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&c).unwrap()["data"],
            json!({"accessKeyID": "YQ==", "secretAccessKey": "Yg=="})
        );
        assert!(csi_secret(&repo(), "s", "dp", "a: [1]", "d").is_err());
        let k = generated_key_secret("nfs-repo", "dprepo-key-nfs-repo", "dp", "abc");
        assert!(k.metadata.owner_references.is_none());
        assert_eq!(
            serde_json::to_value(&k).unwrap()["data"],
            json!({"dprepoPassword": "YWJj"})
        );
    }
}
