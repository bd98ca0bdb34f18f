//! The BackupRepo pre-check Job (KubeBlocks' flow with dprepo's additions): in the
//! controller's namespace, named `pre-check-<uid8>-<repo>`, worker service account,
//! `backoffLimit: 2`, `fsGroup: 65532`, container `pre-check` on the tools image, owned by
//! the BackupRepo and annotated with its digest.
//!
//! Both access methods run one script through the real `datasafed` (Mount access gets the
//! datasafed injection with the pre-check PVC; KubeBlocks only wrote a file there): push,
//! pull and remove a file, then `datasafed stat /`. The first push creates the dprepo
//! repository when the storage holds none, and fails when it holds one made with another
//! key (the shim's message contains [`WRONG_KEY_MARKER`]).

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, PodSecurityContext, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::datasafed::{inject_datasafed, no_privilege_escalation, RepoMount};
use super::{shell_quote, string_map};
use crate::api::labels::{annotation, label};
use crate::api::BackupRepo;
use crate::config::ControllerConfig;

/// The container's name.
pub const CONTAINER: &str = "pre-check";

/// The Job's retries.
pub const BACKOFF_LIMIT: i32 = 2;

/// The group the pod's volumes are given to (the tools image's user, 65532).
pub const FS_GROUP: i64 = 65532;

/// The text of the engine's error when a key opens no key file of an existing
/// repository; `datasafed` prints it (after `Error: ` and its own context).
pub const WRONG_KEY_MARKER: &str = "wrong password: no key in the repository matches it";

/// `/<pathPrefix>/precheck.txt`, cleaned as Go's `filepath.Join("/", prefix, "precheck.txt")`.
pub fn precheck_file(path_prefix: Option<&str>) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in path_prefix.unwrap_or("").split('/').chain(["precheck.txt"]) {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The pre-check script; its last step registers the pods' access key
/// ([`super::access`]).
pub fn script(path_prefix: Option<&str>, repo_name: &str) -> String {
    let file = shell_quote(&precheck_file(path_prefix));
    format!(
        "\nset -ex\nexport PATH=\"$PATH:$DP_DATASAFED_BIN_PATH\"\n\
         echo \"pre-check\" | datasafed push - {file}\n\
         datasafed pull {file} -\n\
         datasafed rm {file}\n\
         datasafed stat /\n{}",
        super::access::register_step(
            super::datasafed::CONFIG_MOUNT_PATH,
            &format!("BackupRepo {repo_name}")
        )
    )
}

/// Everything the Job depends on besides the BackupRepo and the configuration.
#[derive(Debug, Clone)]
pub struct PreCheckInputs {
    /// The Job's name (also its PVC's and Secret's): [`super::names::pre_check_name`].
    pub name: String,
    /// The worker service account in the controller's namespace.
    pub service_account: String,
    /// The BackupRepo's digest (KubeBlocks' `backup-repo-digest`).
    pub digest: String,
    /// The key source id (see [`super::key::KeySource::id`]).
    pub key_source: String,
}

/// The annotations identifying what a pre-check (or a tool Secret) was made for.
pub fn generation_annotations(digest: &str, key_source: &str) -> BTreeMap<String, String> {
    string_map([
        (annotation::BACKUP_REPO_DIGEST, digest),
        (super::key::KEY_SOURCE_ANNOTATION, key_source),
    ])
}

/// Sets the controller's scheduling settings (`CM_TOLERATIONS`, `CM_AFFINITY`,
/// `CM_NODE_SELECTOR`) on a pod of its own Jobs (KubeBlocks' `AddTolerations`).
pub fn add_scheduling(spec: &mut PodSpec, config: &ControllerConfig) {
    if !config.tolerations.is_empty() {
        spec.tolerations = Some(config.tolerations.clone());
    }
    if let Some(a) = &config.affinity {
        spec.affinity = Some(a.clone());
    }
    if !config.node_selector.is_empty() {
        spec.node_selector = Some(config.node_selector.clone());
    }
}

/// The pod of one of the controller's own datasafed Jobs (pre-check, gc, key revocation):
/// `container` (its security context set to no privilege escalation) run once under
/// `service_account` with the controller's scheduling settings, the fs group that lets
/// it write the repository volume, and the datasafed injection for `mount`.
pub fn tool_job_pod(
    mut container: Container,
    service_account: &str,
    mount: &RepoMount,
    config: &ControllerConfig,
) -> PodSpec {
    container.security_context = Some(no_privilege_escalation());
    let mut pod = PodSpec {
        restart_policy: Some("Never".into()),
        containers: vec![container],
        service_account_name: Some(service_account.to_string()),
        security_context: Some(PodSecurityContext {
            fs_group: Some(FS_GROUP),
            ..Default::default()
        }),
        ..Default::default()
    };
    add_scheduling(&mut pod, config);
    inject_datasafed(&mut pod, mount, None, config);
    pod
}

/// The pre-check Job for `repo`.
pub fn pre_check_job(repo: &BackupRepo, inputs: &PreCheckInputs, config: &ControllerConfig) -> Job {
    let repo_name = repo.metadata.name.clone().unwrap_or_default();
    let container = Container {
        name: CONTAINER.into(),
        image: Some(config.tools_image.clone()),
        image_pull_policy: config.image_pull_policy.clone(),
        command: Some(vec![
            "sh".into(),
            "-c".into(),
            script(repo.spec.path_prefix.as_deref(), &repo_name),
        ]),
        ..Default::default()
    };
    let mount = RepoMount {
        access: repo.access_method(),
        pvc_name: inputs.name.clone(),
        secret_name: inputs.name.clone(),
    };
    let pod = tool_job_pod(container, &inputs.service_account, &mount, config);
    Job {
        metadata: ObjectMeta {
            name: Some(inputs.name.clone()),
            namespace: Some(config.namespace.clone()),
            labels: Some(string_map([
                (label::BACKUP_REPO_NAME, repo_name.as_str()),
                (label::MANAGED_BY, label::MANAGED_BY_VALUE),
            ])),
            annotations: Some(generation_annotations(&inputs.digest, &inputs.key_source)),
            owner_references: super::controller_ref(repo).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(BACKOFF_LIMIT),
            template: PodTemplateSpec {
                metadata: None,
                spec: Some(pod),
            },
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::backuprepo::{AccessMethod, BackupRepoSpec, PvReclaimPolicy};
    use serde_json::json;

    fn config() -> ControllerConfig {
        ControllerConfig::from_source(&BTreeMap::from([
            ("CM_NAMESPACE".to_string(), "dprepo-system".to_string()),
            (
                "KUBEBLOCKS_TOOLS_IMAGE".to_string(),
                "dprepo/dprepo:tools".to_string(),
            ),
            (
                "DATASAFED_IMAGE".to_string(),
                "dprepo/dprepo:ds".to_string(),
            ),
            (
                "CM_NODE_SELECTOR".to_string(),
                r#"{"disk":"ssd"}"#.to_string(),
            ),
        ]))
        .unwrap()
    }

    fn repo(access: AccessMethod, prefix: Option<&str>) -> BackupRepo {
        let mut r = BackupRepo::new(
            "s3-repo",
            BackupRepoSpec {
                storage_provider_ref: "s3".into(),
                access_method: Some(access),
                volume_capacity: None,
                pv_reclaim_policy: PvReclaimPolicy::Delete,
                config: None,
                credential: None,
                path_prefix: prefix.map(str::to_string),
            },
        );
        r.metadata.uid = Some("0f1e2d3c-aaaa-bbbb-cccc-000000000000".into());
        r
    }

    fn inputs() -> PreCheckInputs {
        PreCheckInputs {
            name: "pre-check-0f1e2d3c-s3-repo".into(),
            service_account: "kubeblocks-dataprotection-worker".into(),
            digest: "d41d8cd98f00b204e9800998ecf8427e".into(),
            key_source: "generated:dprepo-system/dprepo-key-s3-repo#dprepoPassword".into(),
        }
    }

    #[test]
    fn the_file_path_is_cleaned_like_go_filepath_join() {
        assert_eq!(precheck_file(None), "/precheck.txt");
        assert_eq!(precheck_file(Some("team/a/")), "/team/a/precheck.txt");
    }

    #[test]
    fn tool_pre_check_job_golden() {
        let job = pre_check_job(
            &repo(AccessMethod::Tool, Some("backups/prod")),
            &inputs(),
            &config(),
        );
        let script = "\nset -ex\nexport PATH=\"$PATH:$DP_DATASAFED_BIN_PATH\"\n\
            echo \"pre-check\" | datasafed push - '/backups/prod/precheck.txt'\n\
            datasafed pull '/backups/prod/precheck.txt' -\n\
            datasafed rm '/backups/prod/precheck.txt'\n\
            datasafed stat /\n\
            if [ -f /etc/datasafed/dprepo-access-secret ]; then datasafed access-key \
            --secret-file /etc/datasafed/dprepo-access-secret --label 'BackupRepo s3-repo' \
            || echo 'dprepo: no access key registered; pods get the repository key'; fi";
        assert_eq!(
            serde_json::to_value(&job).unwrap(),
            json!({
                "apiVersion": "batch/v1", "kind": "Job",
                "metadata": {
                    "name": "pre-check-0f1e2d3c-s3-repo", "namespace": "dprepo-system",
                    "labels": {"app.kubernetes.io/managed-by": "kubeblocks-dataprotection",
                               "dataprotection.kubeblocks.io/backup-repo-name": "s3-repo"},
                    "annotations": {"dataprotection.kubeblocks.io/backup-repo-digest": "d41d8cd98f00b204e9800998ecf8427e",
                                    "dprepo.io/key-source": "generated:dprepo-system/dprepo-key-s3-repo#dprepoPassword"},
                    "ownerReferences": [{"apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "BackupRepo",
                        "name": "s3-repo", "uid": "0f1e2d3c-aaaa-bbbb-cccc-000000000000",
                        "controller": true, "blockOwnerDeletion": true}]
                },
                "spec": {
                    "backoffLimit": 2,
                    "template": {"spec": {
                        "restartPolicy": "Never",
                        "serviceAccountName": "kubeblocks-dataprotection-worker",
                        "securityContext": {"fsGroup": 65532},
                        "nodeSelector": {"disk": "ssd"},
                        "initContainers": [{
                            "name": "dp-copy-datasafed", "image": "dprepo/dprepo:ds",
                            "command": ["/bin/sh", "-c", "/scripts/install-datasafed.sh /bin/datasafed"],
                            "volumeMounts": [{"name": "dp-datasafed-bin", "mountPath": "/bin/datasafed"}],
                            "securityContext": {"allowPrivilegeEscalation": false}
                        }],
                        "containers": [{
                            "name": "pre-check", "image": "dprepo/dprepo:tools",
                            "command": ["sh", "-c", script],
                            "securityContext": {"allowPrivilegeEscalation": false},
                            "env": [
                                {"name": "DPREPO_PASSWORD_FILE", "value": "/etc/datasafed/dprepo-password"},
                                {"name": "DP_DATASAFED_BIN_PATH", "value": "/bin/datasafed"},
                                {"name": "DPREPO_CACHE_DIR", "value": "/dprepo-cache"}
                            ],
                            "volumeMounts": [
                                {"name": "dp-datasafed-config", "mountPath": "/etc/datasafed", "readOnly": true},
                                {"name": "dp-datasafed-bin", "mountPath": "/bin/datasafed"},
                                {"name": "dp-dprepo-cache", "mountPath": "/dprepo-cache"}
                            ]
                        }],
                        "volumes": [
                            {"name": "dp-datasafed-config", "secret": {"secretName": "pre-check-0f1e2d3c-s3-repo"}},
                            {"name": "dp-datasafed-bin", "emptyDir": {}},
                            {"name": "dp-dprepo-cache", "emptyDir": {}}
                        ]
                    }}
                }
            })
        );
    }

    #[test]
    fn mount_pre_check_uses_its_pvc_through_datasafed() {
        let job = pre_check_job(&repo(AccessMethod::Mount, None), &inputs(), &config());
        let pod = serde_json::to_value(job.spec.unwrap().template.spec.unwrap()).unwrap();
        assert_eq!(
            pod["volumes"][0],
            json!({"name": "dp-backup-data", "persistentVolumeClaim": {"claimName": "pre-check-0f1e2d3c-s3-repo"}})
        );
        assert_eq!(
            pod["containers"][0]["env"][0],
            json!({"name": "DATASAFED_LOCAL_BACKEND_PATH", "value": "/backupdata"})
        );
        assert!(pod["containers"][0]["command"][2]
            .as_str()
            .unwrap()
            .contains("datasafed push - '/precheck.txt'"));
    }
}
