//! Access keys for pods (a decision taken for dprepo: processes the operator starts open
//! the repository without hashing the password, README "Access keys").
//!
//! The controller chooses a 256-bit secret and keeps it in the Secret
//! `dprepo-access-<repo>` (controller's namespace, key [`SECRET_FIELD`]; not owned by the
//! BackupRepo, so that a cascading deletion cannot remove it before the key it records
//! was revoked: labelled with the repository's uid, deleted by the controller). The pre-check Job, which has the repository key, gets the secret in
//! its own tool Secret ([`PRE_CHECK_SECRET_KEY`]) and runs `datasafed access-key`, which
//! registers the access key that secret makes (once per repository) and prints only the
//! key file's id ([`ID_LINE_PREFIX`]). The controller reads the id from the pod's log,
//! composes `dprepo-ak1-<id>-<secret>` and records it in the same Secret
//! ([`ACCESS_KEY_FIELD`], annotated with the digest and key source it was registered
//! under). From then on the tool Secrets of other namespaces carry the access key where
//! they carried the repository key (`dprepo-password`, which datasafed accepts either
//! way), so those namespaces never hold the password. `dprepo key remove <id>` revokes it;
//! a new pre-check (changed storage or key) registers it again.
//!
//! When the BackupRepo is deleted, the Job [`revoke_job`] (the pre-check's injection, with
//! the repository key) runs `dprepo key remove <id>`, so a copy of the access key taken
//! from a namespace's Secret stops opening the repository with it.
//!
//! Tool access only: with Mount access each namespace's claim may be a volume of its own
//! (a CSI driver's subdirectory per volume), where the first Job creates the repository,
//! which needs the repository key.

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::datasafed::RepoMount;
use super::precheck::tool_job_pod;
use super::string_map;
use crate::api::backuprepo::AccessMethod;
use crate::api::labels::label;
use crate::api::BackupRepo;
use crate::config::ControllerConfig;

/// The access Secret's key holding the secret (64 hex digits).
pub const SECRET_FIELD: &str = "secret";
/// The access Secret's key holding the registered access key.
pub const ACCESS_KEY_FIELD: &str = "accessKey";
/// The pre-check tool Secret's key holding the secret (mounted beside `datasafed.conf`).
pub const PRE_CHECK_SECRET_KEY: &str = "dprepo-access-secret";
/// What `datasafed access-key` prints before the key file's id.
pub const ID_LINE_PREFIX: &str = "dprepo-access-key-id: ";
/// The prefix of an access key's text form.
pub const ACCESS_KEY_PREFIX: &str = "dprepo-ak1-";

/// A new secret: 32 random bytes as 64 hex digits.
///
/// # Errors
/// The operating system's random source failed.
pub fn generate_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `secret` (white space around it aside) is 64 hex digits.
pub fn valid_secret(secret: &str) -> bool {
    is_hex64(secret.trim())
}

/// The key file id the pre-check printed: the last well-formed id line of its log.
pub fn id_from_log(log: &str) -> Option<String> {
    log.lines()
        .rev()
        .filter_map(|l| l.trim().strip_prefix(ID_LINE_PREFIX))
        .map(str::trim)
        .find(|id| is_hex64(id))
        .map(str::to_ascii_lowercase)
}

/// The access key of key file `id` and `secret`.
pub fn access_key_text(id: &str, secret: &str) -> String {
    format!("{ACCESS_KEY_PREFIX}{id}-{}", secret.trim())
}

/// The key file id of an access key's text (`dprepo-ak1-<id>-<secret>`), when both
/// parts are 64 hex digits.
pub fn id_of_access_key(text: &str) -> Option<String> {
    let (id, secret) = text
        .trim()
        .strip_prefix(ACCESS_KEY_PREFIX)?
        .split_once('-')?;
    (is_hex64(id) && is_hex64(secret)).then(|| id.to_ascii_lowercase())
}

/// The pre-check script's last step: register the access key when the secret is there.
/// A datasafed without the command (another image) leaves pods on the repository key.
pub fn register_step(config_dir: &str, label: &str) -> String {
    let file = format!("{config_dir}/{PRE_CHECK_SECRET_KEY}");
    format!(
        "if [ -f {file} ]; then datasafed access-key --secret-file {file} --label {} \
         || echo 'dprepo: no access key registered; pods get the repository key'; fi",
        super::shell_quote(label)
    )
}

/// The container of the revocation Job.
pub const REVOKE_CONTAINER: &str = "revoke-key";

/// Retries of the revocation Job: one more try after a failure.
pub const REVOKE_BACKOFF_LIMIT: i32 = 1;

/// The Job that removes the access key file `id` from `repo`'s repository: in the
/// controller's namespace, named [`super::names::revoke_key_name`] like its tool Secret
/// (which carries the repository key), worker service account, running
/// `/dprepo key remove <id>` from the datasafed image with the datasafed injection
/// (`dprepo` finds the storage as datasafed does).
///
/// Not owned by the BackupRepo (whose finalizer waits for it): deleted in the foreground
/// (`kubectl delete --cascade=foreground`), the BackupRepo's dependents are deleted by
/// the garbage collector before it goes, and the Job with them before it ran. It carries
/// the repository's name and uid ([`label::DPREPO_BACKUP_REPO_UID`]) instead, and the
/// controller deletes it once it is done.
pub fn revoke_job(
    repo: &BackupRepo,
    name: &str,
    id: &str,
    service_account: &str,
    config: &ControllerConfig,
) -> Job {
    let repo_name = repo.metadata.name.clone().unwrap_or_default();
    let repo_uid = repo.metadata.uid.as_deref().unwrap_or("");
    let container = Container {
        name: REVOKE_CONTAINER.into(),
        image: Some(config.datasafed_image.clone()),
        image_pull_policy: config.image_pull_policy.clone(),
        command: Some(vec![
            "/dprepo".into(),
            "key".into(),
            "remove".into(),
            id.to_string(),
        ]),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    };
    let mount = RepoMount {
        access: AccessMethod::Tool,
        pvc_name: String::new(),
        secret_name: name.to_string(),
    };
    let pod = tool_job_pod(container, service_account, &mount, config);
    Job {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(config.namespace.clone()),
            labels: Some(string_map([
                (label::BACKUP_REPO_NAME, repo_name.as_str()),
                (label::DPREPO_BACKUP_REPO_UID, repo_uid),
                (label::MANAGED_BY, label::MANAGED_BY_VALUE),
            ])),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(REVOKE_BACKOFF_LIMIT),
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

    #[test]
    fn the_id_is_read_from_the_log_and_the_key_composed() {
        let id = "AB".repeat(32);
        let log = format!(
            "+ datasafed stat /\n{{}}\n+ datasafed access-key --secret-file x\n\
             dprepo-access-key-id: {id}\n"
        );
        assert_eq!(id_from_log(&log), Some("ab".repeat(32)));
        assert_eq!(id_from_log("dprepo-access-key-id: 1234\n"), None);
        assert_eq!(id_from_log("+ echo dprepo-access-key-id: x"), None);
        let secret = generate_secret().unwrap();
        assert!(valid_secret(&secret) && !valid_secret("xyz"));
        let text = access_key_text(&"ab".repeat(32), &format!("{secret}\n"));
        assert_eq!(text, format!("dprepo-ak1-{}-{secret}", "ab".repeat(32)));
        assert_eq!(id_of_access_key(&text), Some("ab".repeat(32)));
        assert_eq!(id_of_access_key(&format!("{text}0")), None);
        assert_eq!(id_of_access_key(&format!("dprepo-ak1-x-{secret}")), None);
        assert_eq!(id_of_access_key("dprepo-ak1-; rm -rf /"), None);
    }

    /// The revocation Job was owned by its BackupRepo: deleted in the foreground, the
    /// garbage collector removed it with the repository's other dependents before it ran,
    /// and the access key stayed valid. It is found by labels now.
    #[test]
    fn the_revocation_job_survives_a_foreground_deletion_of_its_repo() {
        use crate::api::backuprepo::{BackupRepoSpec, PvReclaimPolicy};
        let mut repo = BackupRepo::new(
            "s3-repo",
            BackupRepoSpec {
                storage_provider_ref: "s3".into(),
                access_method: Some(AccessMethod::Tool),
                volume_capacity: None,
                pv_reclaim_policy: PvReclaimPolicy::Retain,
                config: None,
                credential: None,
                path_prefix: None,
            },
        );
        repo.metadata.uid = Some("0f1e2d3c-aaaa-bbbb-cccc-000000000000".into());
        let config = ControllerConfig::from_source(&std::collections::BTreeMap::from([(
            "CM_NAMESPACE".to_string(),
            "dprepo-system".to_string(),
        )]))
        .unwrap();
        let job = revoke_job(
            &repo,
            "revoke-key-0f1e2d3c-s3-repo",
            &"ab".repeat(32),
            "sa",
            &config,
        );
        assert_eq!(job.metadata.owner_references, None);
        let labels = job.metadata.labels.unwrap();
        assert_eq!(labels[label::BACKUP_REPO_NAME], "s3-repo");
        assert_eq!(
            labels[label::DPREPO_BACKUP_REPO_UID],
            "0f1e2d3c-aaaa-bbbb-cccc-000000000000"
        );
        assert_eq!(job.metadata.namespace.as_deref(), Some("dprepo-system"));
    }

    #[test]
    fn the_register_step_tolerates_a_datasafed_without_the_command() {
        let step = register_step("/etc/datasafed", "BackupRepo it's");
        assert_eq!(
            step,
            "if [ -f /etc/datasafed/dprepo-access-secret ]; then datasafed access-key \
             --secret-file /etc/datasafed/dprepo-access-secret --label 'BackupRepo it'\\''s' \
             || echo 'dprepo: no access key registered; pods get the repository key'; fi"
        );
    }
}
