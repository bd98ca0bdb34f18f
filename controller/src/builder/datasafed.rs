//! The datasafed injection: what every pod that reads or writes a repository gets
//! (pre-check, repository GC, and Controller II's backup, restore and delete Jobs).
//!
//! KubeBlocks' part (`InjectDatasafed`), kept name for name so ActionSet scripts run
//! unchanged:
//! - an init container `dp-copy-datasafed` (image `DATASAFED_IMAGE`) runs
//!   `/scripts/install-datasafed.sh /bin/datasafed`, copying the binary into the emptyDir
//!   `dp-datasafed-bin` mounted at `/bin/datasafed`; `DP_DATASAFED_BIN_PATH` names it;
//! - Mount access: the repository PVC as volume `dp-backup-data` at `/backupdata`, and
//!   `DATASAFED_LOCAL_BACKEND_PATH=/backupdata`;
//! - Tool access: the tool Secret as volume `dp-datasafed-config`, read-only at
//!   `/etc/datasafed` (datasafed reads `datasafed.conf` there);
//! - a BackupPolicy's `encryptionConfig` as `DATASAFED_ENCRYPTION_ALGORITHM` and
//!   `DATASAFED_ENCRYPTION_PASS_PHRASE`.
//!
//! dprepo's additions:
//! - the repository key (or, with Tool access once the pre-check registered it, the
//!   pods' access key, [`super::access`]): the per-namespace tool Secret carries
//!   `dprepo-password` and is
//!   mounted at `/etc/datasafed` for **both** access methods; every container gets
//!   `DPREPO_PASSWORD_FILE=/etc/datasafed/dprepo-password`, which outranks the
//!   encryption pass phrase (so `encryptionConfig` changes nothing: one repository has one
//!   key);
//! - `DPREPO_CACHE_DIR=/dprepo-cache` on the emptyDir `dp-dprepo-cache`, so the index cache
//!   has a writable place whatever the image's user, home and root filesystem.
//!
//! Volumes and environment go to every container, none to init containers (KubeBlocks'
//! rule: an init container that needs the repository is the ActionSet's business).

use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, PersistentVolumeClaimVolumeSource,
    PodSpec, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};

use crate::api::backuprepo::AccessMethod;
use crate::api::common::EncryptionConfig;
use crate::config::ControllerConfig;

/// Name of the init container that copies datasafed.
pub const INSTALLER_CONTAINER: &str = "dp-copy-datasafed";
/// The emptyDir the binary is copied into.
pub const BIN_VOLUME: &str = "dp-datasafed-bin";
/// Where that emptyDir is mounted.
pub const BIN_MOUNT_PATH: &str = "/bin/datasafed";
/// The repository PVC's volume (Mount access).
pub const PVC_VOLUME: &str = "dp-backup-data";
/// Where the repository PVC is mounted (KubeBlocks' `RepoVolumeMountPath`).
pub const PVC_MOUNT_PATH: &str = "/backupdata";
/// The tool Secret's volume.
pub const CONFIG_VOLUME: &str = "dp-datasafed-config";
/// Where the tool Secret is mounted.
pub const CONFIG_MOUNT_PATH: &str = "/etc/datasafed";
/// The tool Secret's key holding `datasafed.conf` (Tool access).
pub const CONFIG_KEY: &str = "datasafed.conf";
/// The tool Secret's key holding the repository key (dprepo).
pub const PASSWORD_KEY: &str = "dprepo-password";
/// The emptyDir of dprepo's caches.
pub const CACHE_VOLUME: &str = "dp-dprepo-cache";
/// Where that emptyDir is mounted.
pub const CACHE_MOUNT_PATH: &str = "/dprepo-cache";

/// `DP_DATASAFED_BIN_PATH`.
pub const ENV_BIN_PATH: &str = "DP_DATASAFED_BIN_PATH";
/// `DATASAFED_LOCAL_BACKEND_PATH`.
pub const ENV_LOCAL_BACKEND_PATH: &str = "DATASAFED_LOCAL_BACKEND_PATH";
/// `DATASAFED_ENCRYPTION_ALGORITHM`.
pub const ENV_ENCRYPTION_ALGORITHM: &str = "DATASAFED_ENCRYPTION_ALGORITHM";
/// `DATASAFED_ENCRYPTION_PASS_PHRASE`.
pub const ENV_ENCRYPTION_PASS_PHRASE: &str = "DATASAFED_ENCRYPTION_PASS_PHRASE";
/// `DPREPO_PASSWORD_FILE`.
pub const ENV_PASSWORD_FILE: &str = "DPREPO_PASSWORD_FILE";
/// `DPREPO_CACHE_DIR`.
pub const ENV_CACHE_DIR: &str = "DPREPO_CACHE_DIR";

/// The script the installer runs (KubeBlocks' command).
pub fn installer_command() -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("/scripts/install-datasafed.sh {BIN_MOUNT_PATH}"),
    ]
}

/// How a pod reaches one repository: its access method and the per-namespace objects
/// (named in the BackupRepo's status) that exist in the pod's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoMount {
    /// Mount or Tool.
    pub access: AccessMethod,
    /// The PVC (Mount access): `status.backupPVCName`, or the pre-check's own.
    pub pvc_name: String,
    /// The tool Secret (both access methods): `status.toolConfigSecretName`, or the
    /// pre-check's own.
    pub secret_name: String,
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

/// `securityContext: {allowPrivilegeEscalation: false}`, as KubeBlocks sets on its
/// containers.
pub fn no_privilege_escalation() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        ..Default::default()
    }
}

fn secret_volume(secret_name: &str) -> Volume {
    Volume {
        name: CONFIG_VOLUME.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret_name.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn inject(spec: &mut PodSpec, volumes: Vec<Volume>, mounts: &[VolumeMount], envs: &[EnvVar]) {
    spec.volumes.get_or_insert_with(Vec::new).extend(volumes);
    for c in &mut spec.containers {
        c.volume_mounts
            .get_or_insert_with(Vec::new)
            .extend(mounts.iter().cloned());
        c.env
            .get_or_insert_with(Vec::new)
            .extend(envs.iter().cloned());
    }
}

/// Gives every container of `spec` access to the repository `repo` (see the module
/// documentation for exactly what is added, in order), and adds the installer init
/// container. `encryption` is a BackupPolicy's, passed on as KubeBlocks does.
pub fn inject_datasafed(
    spec: &mut PodSpec,
    repo: &RepoMount,
    encryption: Option<&EncryptionConfig>,
    config: &ControllerConfig,
) {
    let password_file = format!("{CONFIG_MOUNT_PATH}/{PASSWORD_KEY}");
    match repo.access {
        AccessMethod::Mount => {
            let volumes = vec![
                Volume {
                    name: PVC_VOLUME.into(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: repo.pvc_name.clone(),
                        read_only: None,
                    }),
                    ..Default::default()
                },
                secret_volume(&repo.secret_name),
            ];
            let mounts = [
                mount(PVC_VOLUME, PVC_MOUNT_PATH, false),
                mount(CONFIG_VOLUME, CONFIG_MOUNT_PATH, true),
            ];
            let envs = [
                env(ENV_LOCAL_BACKEND_PATH, PVC_MOUNT_PATH),
                env(ENV_PASSWORD_FILE, &password_file),
            ];
            inject(spec, volumes, &mounts, &envs);
        }
        AccessMethod::Tool => {
            inject(
                spec,
                vec![secret_volume(&repo.secret_name)],
                &[mount(CONFIG_VOLUME, CONFIG_MOUNT_PATH, true)],
                &[env(ENV_PASSWORD_FILE, &password_file)],
            );
        }
    }
    inject_installer(spec, config);
    if let Some(enc) = encryption {
        inject(
            spec,
            Vec::new(),
            &[],
            &[
                env(ENV_ENCRYPTION_ALGORITHM, enc.algorithm.as_str()),
                EnvVar {
                    name: ENV_ENCRYPTION_PASS_PHRASE.into(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(enc.pass_phrase_secret_key_ref.clone()),
                        ..Default::default()
                    }),
                },
            ],
        );
    }
    inject(
        spec,
        vec![Volume {
            name: CACHE_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        }],
        &[mount(CACHE_VOLUME, CACHE_MOUNT_PATH, false)],
        &[env(ENV_CACHE_DIR, CACHE_MOUNT_PATH)],
    );
}

fn inject_installer(spec: &mut PodSpec, config: &ControllerConfig) {
    let bin_mount = mount(BIN_VOLUME, BIN_MOUNT_PATH, false);
    spec.init_containers
        .get_or_insert_with(Vec::new)
        .push(Container {
            name: INSTALLER_CONTAINER.into(),
            image: Some(config.datasafed_image.clone()),
            image_pull_policy: config.image_pull_policy.clone(),
            command: Some(installer_command()),
            volume_mounts: Some(vec![bin_mount.clone()]),
            security_context: Some(no_privilege_escalation()),
            ..Default::default()
        });
    inject(
        spec,
        vec![Volume {
            name: BIN_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        }],
        &[bin_mount],
        &[env(ENV_BIN_PATH, BIN_MOUNT_PATH)],
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::EncryptionAlgorithm;
    use k8s_openapi::api::core::v1::SecretKeySelector;
    use serde_json::json;

    fn config() -> ControllerConfig {
        ControllerConfig::from_source(&std::collections::BTreeMap::from([
            (
                "DATASAFED_IMAGE".to_string(),
                "dprepo/dprepo:test".to_string(),
            ),
            (
                "KUBEBLOCKS_IMAGE_PULL_POLICY".to_string(),
                "IfNotPresent".to_string(),
            ),
        ]))
        .unwrap()
    }

    fn pod() -> PodSpec {
        PodSpec {
            init_containers: Some(vec![Container {
                name: "init".into(),
                ..Default::default()
            }]),
            containers: vec![
                Container {
                    name: "a".into(),
                    env: Some(vec![env("A", "1")]),
                    ..Default::default()
                },
                Container {
                    name: "b".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn mount_access_gets_the_pvc_the_key_the_installer_and_the_cache() {
        let mut spec = pod();
        let repo = RepoMount {
            access: AccessMethod::Mount,
            pvc_name: "pvc-repo-abcdef".into(),
            secret_name: "tool-config-repo-abcdef".into(),
        };
        inject_datasafed(&mut spec, &repo, None, &config());
        let got = serde_json::to_value(&spec).unwrap();
        let container_mounts = json!([
            {"name": "dp-backup-data", "mountPath": "/backupdata"},
            {"name": "dp-datasafed-config", "mountPath": "/etc/datasafed", "readOnly": true},
            {"name": "dp-datasafed-bin", "mountPath": "/bin/datasafed"},
            {"name": "dp-dprepo-cache", "mountPath": "/dprepo-cache"}
        ]);
        let injected_env = [
            json!({"name": "DATASAFED_LOCAL_BACKEND_PATH", "value": "/backupdata"}),
            json!({"name": "DPREPO_PASSWORD_FILE", "value": "/etc/datasafed/dprepo-password"}),
            json!({"name": "DP_DATASAFED_BIN_PATH", "value": "/bin/datasafed"}),
            json!({"name": "DPREPO_CACHE_DIR", "value": "/dprepo-cache"}),
        ];
        let mut a_env = vec![json!({"name": "A", "value": "1"})];
        a_env.extend(injected_env.iter().cloned());
        assert_eq!(
            got,
            json!({
                "initContainers": [
                    {"name": "init"},
                    {
                        "name": "dp-copy-datasafed",
                        "image": "dprepo/dprepo:test",
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["/bin/sh", "-c", "/scripts/install-datasafed.sh /bin/datasafed"],
                        "volumeMounts": [{"name": "dp-datasafed-bin", "mountPath": "/bin/datasafed"}],
                        "securityContext": {"allowPrivilegeEscalation": false}
                    }
                ],
                "containers": [
                    {"name": "a", "env": a_env, "volumeMounts": container_mounts},
                    {"name": "b", "env": injected_env, "volumeMounts": container_mounts}
                ],
                "volumes": [
                    {"name": "dp-backup-data", "persistentVolumeClaim": {"claimName": "pvc-repo-abcdef"}},
                    {"name": "dp-datasafed-config", "secret": {"secretName": "tool-config-repo-abcdef"}},
                    {"name": "dp-datasafed-bin", "emptyDir": {}},
                    {"name": "dp-dprepo-cache", "emptyDir": {}}
                ]
            })
        );
    }

    #[test]
    fn tool_access_mounts_the_secret_and_passes_encryption_on() {
        let mut spec = PodSpec {
            containers: vec![Container {
                name: "a".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let repo = RepoMount {
            access: AccessMethod::Tool,
            pvc_name: "unused".into(),
            secret_name: "tool-config-s3-xyzxyz".into(),
        };
        let enc = EncryptionConfig {
            algorithm: EncryptionAlgorithm::Aes128Cfb,
            pass_phrase_secret_key_ref: SecretKeySelector {
                name: "phrase".into(),
                key: "p".into(),
                optional: None,
            },
        };
        inject_datasafed(&mut spec, &repo, Some(&enc), &config());
        let got = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            got["containers"][0]["env"],
            json!([
                {"name": "DPREPO_PASSWORD_FILE", "value": "/etc/datasafed/dprepo-password"},
                {"name": "DP_DATASAFED_BIN_PATH", "value": "/bin/datasafed"},
                {"name": "DATASAFED_ENCRYPTION_ALGORITHM", "value": "AES-128-CFB"},
                {"name": "DATASAFED_ENCRYPTION_PASS_PHRASE", "valueFrom": {"secretKeyRef": {"name": "phrase", "key": "p"}}},
                {"name": "DPREPO_CACHE_DIR", "value": "/dprepo-cache"}
            ])
        );
        assert_eq!(
            got["volumes"],
            json!([
                {"name": "dp-datasafed-config", "secret": {"secretName": "tool-config-s3-xyzxyz"}},
                {"name": "dp-datasafed-bin", "emptyDir": {}},
                {"name": "dp-dprepo-cache", "emptyDir": {}}
            ])
        );
        assert_eq!(got["initContainers"].as_array().unwrap().len(), 1);
        assert!(got["initContainers"][0].get("env").is_none());
    }
}
