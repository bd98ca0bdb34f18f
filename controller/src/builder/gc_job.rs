//! The repository garbage collection Job of a `GarbageCollection` run, and the summary it
//! hands back.
//!
//! The Job runs in the controller's namespace with the same datasafed injection as every
//! other pod touching the repository (the namespace is prepared like any other: tool
//! Secret, and PVC for Mount access). Its container runs `/dprepo gc` from the datasafed
//! image (dprepo's image: it holds `/dprepo` beside `/datasafed`); with no `-r` given,
//! `dprepo` finds the storage as datasafed does (`DATASAFED_LOCAL_BACKEND_PATH`, then
//! `/etc/datasafed/datasafed.conf`) and the key in `DPREPO_PASSWORD_FILE`.
//!
//! The result comes back through the pod's termination message: `dprepo gc
//! --summary-file /dev/termination-log` writes one line of JSON ([`GcSummary`], counts
//! only, far below the kubelet's 4 KiB); a run that dies before writing it leaves the
//! tail of its log there instead (`FallbackToLogsOnError`).

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use super::datasafed::RepoMount;
use super::precheck::tool_job_pod;
use super::string_map;
use crate::api::labels::label;
use crate::api::{BackupRepo, GarbageCollection};
use crate::config::ControllerConfig;

/// The container's name.
pub const CONTAINER: &str = "gc";

/// Where the summary is written: the container's termination message file.
pub const SUMMARY_PATH: &str = "/dev/termination-log";

/// The label naming the GarbageCollection a Job runs for.
pub const GC_LABEL: &str = "dprepo.io/garbage-collection";

/// The annotation recording what started a run.
pub const TRIGGER_ANNOTATION: &str = "dprepo.io/trigger";

/// Everything the Job depends on besides the objects and the configuration.
#[derive(Debug, Clone)]
pub struct GcJobInputs {
    /// The Job's name ([`super::names::gc_job_name`]).
    pub name: String,
    /// What started the run (`Schedule`, `BackupDeleted`, `Manual`).
    pub trigger: String,
    /// The worker service account in the controller's namespace.
    pub service_account: String,
}

/// The `dprepo gc` command line of `gc`.
pub fn command(gc: &GarbageCollection) -> Vec<String> {
    let mut c: Vec<String> = vec![
        "/dprepo".into(),
        "gc".into(),
        "--summary-file".into(),
        SUMMARY_PATH.into(),
        "--max-unused".into(),
        gc.spec.max_unused_percent().clamp(0, 100).to_string(),
    ];
    if gc.spec.is_dry_run() {
        c.push("--dry-run".into());
    }
    c
}

/// The Job of one run of `gc` over `repo` (whose status names the per-namespace PVC and
/// tool Secret, present in the controller's namespace).
pub fn gc_job(
    gc: &GarbageCollection,
    repo: &BackupRepo,
    inputs: &GcJobInputs,
    config: &ControllerConfig,
) -> Job {
    let gc_name = gc.metadata.name.clone().unwrap_or_default();
    let repo_name = repo.metadata.name.clone().unwrap_or_default();
    let status = repo.status.clone().unwrap_or_default();
    let container = Container {
        name: CONTAINER.into(),
        image: Some(config.datasafed_image.clone()),
        image_pull_policy: config.image_pull_policy.clone(),
        command: Some(command(gc)),
        termination_message_path: Some(SUMMARY_PATH.into()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    };
    let mount = RepoMount {
        access: repo.access_method(),
        pvc_name: status.backup_pvc_name.unwrap_or_default(),
        secret_name: status.tool_config_secret_name.unwrap_or_default(),
    };
    let pod = tool_job_pod(container, &inputs.service_account, &mount, config);
    Job {
        metadata: ObjectMeta {
            name: Some(inputs.name.clone()),
            namespace: Some(config.namespace.clone()),
            labels: Some(string_map([
                (GC_LABEL, gc_name.as_str()),
                (label::BACKUP_REPO_NAME, repo_name.as_str()),
                (label::MANAGED_BY, label::MANAGED_BY_VALUE),
            ])),
            annotations: Some(string_map([(TRIGGER_ANNOTATION, inputs.trigger.as_str())])),
            owner_references: super::controller_ref(gc).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            // One run is one attempt: the schedule is the retry.
            backoff_limit: Some(0),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(string_map([(GC_LABEL, gc_name.as_str())])),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// What `dprepo gc --summary-file` writes: one line of JSON, counts only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcSummary {
    /// Whether the run only planned.
    #[serde(default)]
    pub dry_run: bool,
    /// Snapshots in the repository (their data kept).
    #[serde(default)]
    pub snapshots: u64,
    /// Packs in the repository before the run.
    #[serde(default)]
    pub packs: u64,
    /// Packs deleted (a dry run: that would be).
    #[serde(default)]
    pub packs_deleted: u64,
    /// Packs rewritten (a dry run: that would be).
    #[serde(default)]
    pub packs_rewritten: u64,
    /// Bytes of storage freed (a dry run: the estimate).
    #[serde(default)]
    pub bytes_freed: u64,
    /// Deletions postponed because backups were running.
    #[serde(default)]
    pub tombstones_blocked: u64,
    /// Why the run failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Reads a termination message: the summary, or `Err` with the text (a log tail, or
/// an unreadable summary) cut to 1 KiB for a status field.
pub fn parse_summary(message: &str) -> Result<GcSummary, String> {
    let text = message.trim();
    match serde_json::from_str::<GcSummary>(text) {
        Ok(s) if text.starts_with('{') => Ok(s),
        _ => Err(cut(text, 1024)),
    }
}

/// `s` cut to at most `max` bytes on a character boundary, marked when cut.
pub fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::backuprepo::{AccessMethod, BackupRepoSpec, BackupRepoStatus, PvReclaimPolicy};
    use crate::api::garbagecollection::GarbageCollectionSpec;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn config() -> ControllerConfig {
        ControllerConfig::from_source(&BTreeMap::from([
            ("CM_NAMESPACE".to_string(), "dprepo-system".to_string()),
            (
                "DATASAFED_IMAGE".to_string(),
                "dprepo/dprepo:ds".to_string(),
            ),
        ]))
        .unwrap()
    }

    #[test]
    fn mount_gc_job_golden() {
        let mut repo = BackupRepo::new(
            "nfs",
            BackupRepoSpec {
                storage_provider_ref: "nfs".into(),
                access_method: Some(AccessMethod::Mount),
                volume_capacity: None,
                pv_reclaim_policy: PvReclaimPolicy::Retain,
                config: None,
                credential: None,
                path_prefix: None,
            },
        );
        repo.status = Some(BackupRepoStatus {
            backup_pvc_name: Some("pvc-nfs-abcdef".into()),
            tool_config_secret_name: Some("tool-config-nfs-abcdef".into()),
            ..Default::default()
        });
        let mut gc = GarbageCollection::new(
            "nfs",
            GarbageCollectionSpec {
                backup_repo_name: "nfs".into(),
                schedule: None,
                max_unused: Some(5),
                dry_run: Some(true),
                suspend: None,
            },
        );
        gc.metadata.uid = Some("gc-uid".into());
        let job = gc_job(
            &gc,
            &repo,
            &GcJobInputs {
                name: "gc-nfs-20261207030405".into(),
                trigger: "Schedule".into(),
                service_account: "worker".into(),
            },
            &config(),
        );
        assert_eq!(
            serde_json::to_value(&job).unwrap(),
            json!({
                "apiVersion": "batch/v1", "kind": "Job",
                "metadata": {
                    "name": "gc-nfs-20261207030405", "namespace": "dprepo-system",
                    "labels": {"app.kubernetes.io/managed-by": "kubeblocks-dataprotection",
                               "dataprotection.kubeblocks.io/backup-repo-name": "nfs",
                               "dprepo.io/garbage-collection": "nfs"},
                    "annotations": {"dprepo.io/trigger": "Schedule"},
                    "ownerReferences": [{"apiVersion": "dprepo.io/v1alpha1", "kind": "GarbageCollection",
                        "name": "nfs", "uid": "gc-uid", "controller": true, "blockOwnerDeletion": true}]
                },
                "spec": {
                    "backoffLimit": 0,
                    "template": {
                        "metadata": {"labels": {"dprepo.io/garbage-collection": "nfs"}},
                        "spec": {
                            "restartPolicy": "Never",
                            "serviceAccountName": "worker",
                            "securityContext": {"fsGroup": 65532},
                            "initContainers": [{
                                "name": "dp-copy-datasafed", "image": "dprepo/dprepo:ds",
                                "command": ["/bin/sh", "-c", "/scripts/install-datasafed.sh /bin/datasafed"],
                                "volumeMounts": [{"name": "dp-datasafed-bin", "mountPath": "/bin/datasafed"}],
                                "securityContext": {"allowPrivilegeEscalation": false}
                            }],
                            "containers": [{
                                "name": "gc", "image": "dprepo/dprepo:ds",
                                "command": ["/dprepo", "gc", "--summary-file", "/dev/termination-log", "--max-unused", "5", "--dry-run"],
                                "terminationMessagePath": "/dev/termination-log",
                                "terminationMessagePolicy": "FallbackToLogsOnError",
                                "securityContext": {"allowPrivilegeEscalation": false},
                                "env": [
                                    {"name": "DATASAFED_LOCAL_BACKEND_PATH", "value": "/backupdata"},
                                    {"name": "DPREPO_PASSWORD_FILE", "value": "/etc/datasafed/dprepo-password"},
                                    {"name": "DP_DATASAFED_BIN_PATH", "value": "/bin/datasafed"},
                                    {"name": "DPREPO_CACHE_DIR", "value": "/dprepo-cache"}
                                ],
                                "volumeMounts": [
                                    {"name": "dp-backup-data", "mountPath": "/backupdata"},
                                    {"name": "dp-datasafed-config", "mountPath": "/etc/datasafed", "readOnly": true},
                                    {"name": "dp-datasafed-bin", "mountPath": "/bin/datasafed"},
                                    {"name": "dp-dprepo-cache", "mountPath": "/dprepo-cache"}
                                ]
                            }],
                            "volumes": [
                                {"name": "dp-backup-data", "persistentVolumeClaim": {"claimName": "pvc-nfs-abcdef"}},
                                {"name": "dp-datasafed-config", "secret": {"secretName": "tool-config-nfs-abcdef"}},
                                {"name": "dp-datasafed-bin", "emptyDir": {}},
                                {"name": "dp-dprepo-cache", "emptyDir": {}}
                            ]
                        }
                    }
                }
            })
        );
    }

    #[test]
    fn summaries_parse_and_anything_else_is_an_error_text() {
        let s = parse_summary(
            "{\"dryRun\":false,\"snapshots\":3,\"packs\":9,\"packsDeleted\":2,\"packsRewritten\":1,\"bytesFreed\":4096,\"tombstonesBlocked\":0}\n",
        )
        .unwrap();
        assert_eq!(s.bytes_freed, 4096);
        assert_eq!(s.packs_deleted, 2);
        let e = parse_summary("{\"error\":\"no repository at /backupdata\"}").unwrap();
        assert_eq!(e.error.as_deref(), Some("no repository at /backupdata"));
        assert_eq!(
            parse_summary("dprepo: error: boom").unwrap_err(),
            "dprepo: error: boom"
        );
        assert_eq!(parse_summary(&"x".repeat(5000)).unwrap_err().len(), 1024);
        assert!(parse_summary("42").is_err());
    }
}
