//! BackupRepo: KubeBlocks' flow (CONTROLLER.md section 3) with dprepo's additions.
//!
//! One reconcile, in order; each step sets its condition, and a step that fails stops
//! the reconcile after the status (with the phase it implies) is written:
//! 1. `StorageProviderReady`: the provider exists; Mount access needs a StorageClass or
//!    PVC template and `CSIDriverInstalled`; Tool access needs `datasafedConfigTemplate`.
//! 2. `ParametersChecked`: schema defaults, then `config`, then every key of the
//!    credential Secret; and (dprepo) the repository key, read or generated
//!    ([`crate::builder::key`]).
//! 3. `StorageClassCreated`: the CSI driver Secret (rewritten when the digest changes) and
//!    the StorageClass (`Immediate`, the repository's reclaim policy), named
//!    `secret-<repo>-xxxxxx` and `sc-<repo>-xxxxxx` once and kept in the status.
//! 4. `PVCTemplateChecked`: the PVC template renders to a PVC (Mount access).
//! 5. `PreCheckPassed`: a changed digest (or key source) makes it `Unknown/DigestChanged`
//!    and flags the tool Secrets for rewriting; the pre-check Job (with its PVC or
//!    Secret) runs `datasafed` push/pull/rm/stat, creating the dprepo repository or
//!    opening it; failure after 15 minutes; the failure message carries the pod's logs
//!    and events (at most 32 KiB) and says so plainly when the storage holds a repository
//!    made with another key. The pre-check's objects are removed once it finished.
//!    (dprepo, Tool access) It also registers the pods' access key, which the tool
//!    Secrets of other namespaces then carry instead of the repository key
//!    ([`crate::builder::access`]).
//! 6. Phase: `Deleting` sticks; otherwise `Failed` unless the first four conditions are
//!    True, then `Ready` (pre-check passed) or `PreChecking`.
//! 7. When Ready: flagged tool Secrets are rewritten; Backups and Restores labelled
//!    `backup-repo-name=<repo>` and `wait-repo-preparation=true` get the PVC (Mount) and
//!    the tool Secret (both access methods: it carries the key) in their namespace, then
//!    lose the label; (dprepo) the repository's `GarbageCollection` exists unless the
//!    BackupRepo is annotated `dprepo.io/garbage-collection: disabled`, and the
//!    controller's namespace is prepared for its Jobs.
//!
//! Deletion: phase `Deleting`; refused while non-failed Backups reference the repository
//! (`HaveAssociatedBackups`); (dprepo, Tool access) the pods' access key is removed from
//! the repository by a Job, best effort and bounded (a Warning Event names a key it
//! could not remove); pre-check Jobs, PVCs (waited for: `HaveResidualPVCs`),
//! StorageClasses, Secrets and GarbageCollections the BackupRepo owns are deleted; then
//! the finalizer goes. The repository key Secret is owned by nobody and stays. The access
//! Secret and the access-key revocation's Job and Secret are owned by nobody either (a
//! foreground deletion would remove them first): the deletion removes them itself.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Event as CoreEvent, PersistentVolumeClaim, Pod, Secret, SecretReference,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use k8s_openapi::ByteString;
use kube::api::{Api, ListParams, LogParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::json;

use super::worker::ensure_worker_service_account;
use super::{
    add_finalizer, create_if_absent, delete_background, find_condition, is_owned_by, is_true,
    patch_object, patch_status, remove_finalizer, set_condition, truncate,
};
use crate::api::backup::Backup;
use crate::api::backuprepo::{condition, AccessMethod, BackupRepoPhase, BackupRepoStatus};
use crate::api::garbagecollection::{GarbageCollection, GarbageCollectionSpec};
use crate::api::labels::{annotation, label, FINALIZER};
use crate::api::restore::Restore;
use crate::api::storageprovider::{StorageProvider, CONDITION_CSI_DRIVER_INSTALLED};
use crate::api::BackupRepo;
use crate::builder::key::{
    check_key, generate_key, key_source, KeySource, KEY_FIELD, KEY_SOURCE_ANNOTATION,
};
use crate::builder::names::{derived_name, pre_check_name, random_suffix};
use crate::builder::precheck::{
    generation_annotations, pre_check_job, PreCheckInputs, CONTAINER as PRE_CHECK_CONTAINER,
    WRONG_KEY_MARKER,
};
use crate::builder::repo_objects::{
    csi_secret, generated_key_secret, repo_pvc, storage_class, tool_secret,
};
use crate::context::Context;
use crate::error::{Error, KubeResultExt, Result};
use crate::template::provider::{
    render_template, RenderContext, CSI_SECRET_TEMPLATE, PVC_TEMPLATE, STORAGE_CLASS_TEMPLATE,
    TOOL_CONFIG_TEMPLATE,
};
use crate::template::repo_params::{digest, merge_parameters, schema_defaults, ProviderTemplates};

/// Condition reasons (KubeBlocks' names, and dprepo's for the key).
pub mod reason {
    #![allow(missing_docs)]
    pub const STORAGE_PROVIDER_READY: &str = "StorageProviderReady";
    pub const STORAGE_PROVIDER_NOT_READY: &str = "StorageProviderNotReady";
    pub const STORAGE_PROVIDER_NOT_FOUND: &str = "StorageProviderNotFound";
    pub const INVALID_STORAGE_PROVIDER: &str = "InvalidStorageProvider";
    pub const PARAMETERS_CHECKED: &str = "ParametersChecked";
    pub const CREDENTIAL_SECRET_NOT_FOUND: &str = "CredentialSecretNotFound";
    pub const PREPARE_CSI_SECRET_FAILED: &str = "PrepareCSISecretFailed";
    pub const PREPARE_STORAGE_CLASS_FAILED: &str = "PrepareStorageClassFailed";
    pub const BAD_PVC_TEMPLATE: &str = "BadPVCTemplate";
    pub const STORAGE_CLASS_CREATED: &str = "StorageClassCreated";
    pub const PVC_TEMPLATE_CHECKED: &str = "PVCTemplateChecked";
    pub const HAVE_ASSOCIATED_BACKUPS: &str = "HaveAssociatedBackups";
    pub const HAVE_RESIDUAL_PVCS: &str = "HaveResidualPVCs";
    pub const DERIVED_OBJECTS_DELETED: &str = "DerivedObjectsDeleted";
    pub const PRE_CHECK_PASSED: &str = "PreCheckPassed";
    pub const PRE_CHECK_FAILED: &str = "PreCheckFailed";
    pub const DIGEST_CHANGED: &str = "DigestChanged";
    pub const UNKNOWN_ERROR: &str = "UnknownError";
    pub const SKIPPED: &str = "Skipped";
    /// dprepo: the Secret named by `dprepo.io/key-secret` does not exist.
    pub const KEY_SECRET_NOT_FOUND: &str = "KeySecretNotFound";
    /// dprepo: the repository key is unusable (empty, several lines, missing field).
    pub const INVALID_REPOSITORY_KEY: &str = "InvalidRepositoryKey";
}

/// How long a pre-check may run before it counts as failed.
pub const PRE_CHECK_TIMEOUT: chrono::TimeDelta = chrono::TimeDelta::minutes(15);

/// How often an unfinished pre-check is looked at (its Job's changes also wake it).
pub const CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// Longest piece of logs or events in a pre-check failure message.
pub const CONTENT_LIMIT: usize = 4 * 1024;

/// Annotation on a BackupRepo: `disabled` stops the controller from keeping a
/// GarbageCollection for it (and deletes the one it made).
pub const GC_ANNOTATION: &str = "dprepo.io/garbage-collection";

/// The phase the conditions imply (KubeBlocks' `updateStatus`).
pub fn decide_phase(current: Option<BackupRepoPhase>, conditions: &[Condition]) -> BackupRepoPhase {
    if current == Some(BackupRepoPhase::Deleting) {
        return BackupRepoPhase::Deleting;
    }
    let basic = [
        condition::STORAGE_PROVIDER_READY,
        condition::PARAMETERS_CHECKED,
        condition::STORAGE_CLASS_CREATED,
        condition::PVC_TEMPLATE_CHECKED,
    ]
    .iter()
    .all(|t| is_true(conditions, t));
    if !basic {
        return BackupRepoPhase::Failed;
    }
    match find_condition(conditions, condition::PRE_CHECK_PASSED).map(|c| c.status.as_str()) {
        Some("True") => BackupRepoPhase::Ready,
        Some("Unknown") => BackupRepoPhase::PreChecking,
        _ => BackupRepoPhase::Failed,
    }
}

/// The names of the other Ready BackupRepos annotated as default, when `repo` is one.
pub fn default_conflicts(repo: &BackupRepo, all: &[BackupRepo]) -> Vec<String> {
    let is_default = |r: &BackupRepo| {
        r.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(annotation::IS_DEFAULT_REPO))
            .is_some_and(|v| v == "true")
    };
    if !is_default(repo) {
        return Vec::new();
    }
    all.iter()
        .filter(|r| r.metadata.name != repo.metadata.name && is_default(r))
        .filter(|r| r.status.as_ref().and_then(|s| s.phase) == Some(BackupRepoPhase::Ready))
        .filter_map(|r| r.metadata.name.clone())
        .collect()
}

/// The diagnosis KubeBlocks writes into `PreCheckPassed` when the pre-check Job failed,
/// preceded (dprepo) by a plain statement when the logs show that the storage holds a
/// repository made with another key. Cut to 32 KiB.
pub fn pre_check_failure_message(
    job_failure: &str,
    logs: &str,
    events: &[(String, String)],
    key: &KeySource,
) -> String {
    let mut message = String::new();
    if logs.contains(WRONG_KEY_MARKER) {
        message.push_str(&format!(
            "The storage already holds a dprepo repository that was created with another key: \
             the {} does not open it. Give this BackupRepo that repository's key (credential \
             key {KEY_FIELD}, or the annotation {}: NAMESPACE/NAME), or point it at a location \
             without a repository.\n\n",
            key.describe(),
            annotation::DPREPO_KEY_SECRET,
        ));
    }
    message.push_str("Pre-check job failed, information collected for diagnosis.\n\n");
    message.push_str(&format!("Job failure message: {job_failure}\n\n"));
    if logs.is_empty() {
        message.push_str("No logs are available.\n\n");
    } else {
        let indented: String = logs.lines().map(|l| format!("  {l}\n")).collect();
        message.push_str(&format!("Logs from the pre-check job:\n{indented}\n"));
    }
    for (object, content) in events {
        if content.is_empty() {
            message.push_str(&format!("No events are available for {object}.\n\n"));
        } else {
            let mut content = content.clone();
            if content.len() > CONTENT_LIMIT {
                content = truncate(&content, CONTENT_LIMIT);
                content.push_str("[truncated]");
            }
            message.push_str(&format!("Events from {object}:\n{content}\n"));
        }
    }
    truncate(&message, super::MAX_CONDITION_MESSAGE)
}

/// Events as `kubectl describe` lists them (type, reason, source, message).
pub fn events_table(events: &[CoreEvent]) -> String {
    if events.is_empty() {
        return String::new();
    }
    let mut rows = vec![
        ["Type", "Reason", "From", "Message"].map(str::to_string),
        ["----", "------", "----", "-------"].map(str::to_string),
    ];
    for e in events {
        let from = e
            .source
            .as_ref()
            .and_then(|s| s.component.clone())
            .or_else(|| e.reporting_component.clone())
            .unwrap_or_default();
        rows.push([
            e.type_.clone().unwrap_or_default(),
            e.reason.clone().unwrap_or_default(),
            from,
            e.message.clone().unwrap_or_default().replace('\n', " "),
        ]);
    }
    let widths: Vec<usize> = (0..3)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            format!(
                "  {:w0$}  {:w1$}  {:w2$}  {}\n",
                r[0],
                r[1],
                r[2],
                r[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2]
            )
        })
        .collect()
}

/// The repository key and where it came from.
struct RepoKey {
    source: KeySource,
    key: Vec<u8>,
    /// The secret the pre-check registers as the pods' access key (64 hex digits).
    access_secret: Option<String>,
    /// The pods' access key, once registered for the current digest and key source.
    access_key: Option<AccessKeyInUse>,
}

/// A registered access key: its text and its key file's id.
struct AccessKeyInUse {
    text: String,
    id: String,
}

impl RepoKey {
    /// What the tool Secrets of other namespaces carry in `dprepo-password`, and the key
    /// source annotation that says so (a change rewrites them).
    fn for_pods(&self) -> (Vec<u8>, String) {
        match &self.access_key {
            Some(a) => (
                a.text.as_bytes().to_vec(),
                format!(
                    "{}+access:{}",
                    self.source.id(),
                    &a.id[..16.min(a.id.len())]
                ),
            ),
            None => (self.key.clone(), self.source.id()),
        }
    }
}

/// What one reconcile works on.
struct Run<'a> {
    ctx: &'a Context,
    api: Api<BackupRepo>,
    /// The latest stored object (its resourceVersion guards every write).
    repo: BackupRepo,
    /// The status being computed.
    status: BackupRepoStatus,
    name: String,
    now: chrono::DateTime<chrono::Utc>,
}

fn annotation_of<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn label_of<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn templates(p: &StorageProvider) -> ProviderTemplates<'_> {
    ProviderTemplates {
        storage_class: p.spec.storage_class_template.as_deref().unwrap_or(""),
        persistent_volume_claim: p
            .spec
            .persistent_volume_claim_template
            .as_deref()
            .unwrap_or(""),
        csi_driver_secret: p.spec.csi_driver_secret_template.as_deref().unwrap_or(""),
        datasafed_config: p.spec.datasafed_config_template.as_deref().unwrap_or(""),
    }
}

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|t| !t.is_empty())
}

fn render(
    provider: &StorageProvider,
    field: &str,
    name: &str,
    text: &str,
    ctx: &RenderContext,
) -> Result<String> {
    render_template(name, text, ctx).map_err(|e| {
        Error::invalid(
            format!(
                "StorageProvider {} {field}",
                provider.metadata.name.as_deref().unwrap_or("")
            ),
            e.to_string(),
        )
    })
}

fn job_finished(job: &Job) -> Option<(bool, String)> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    for c in conditions {
        if c.status != "True" {
            continue;
        }
        if c.type_ == "Complete" {
            return Some((true, String::new()));
        }
        if c.type_ == "Failed" {
            return Some((
                false,
                format!(
                    "{}:{}",
                    c.reason.clone().unwrap_or_default(),
                    c.message.clone().unwrap_or_default()
                ),
            ));
        }
    }
    None
}

impl<'a> Run<'a> {
    fn generation(&self) -> Option<i64> {
        self.repo.metadata.generation
    }

    fn cond(&mut self, type_: &str, status: &str, reason: &str, message: &str) {
        let generation = self.generation();
        let now = self.now;
        set_condition(
            self.status.conditions.get_or_insert_with(Vec::new),
            type_,
            status,
            reason,
            message,
            generation,
            now,
        );
    }

    fn conditions(&self) -> &[Condition] {
        self.status.conditions.as_deref().unwrap_or(&[])
    }

    fn namespace(&self) -> &str {
        &self.ctx.config.namespace
    }

    /// Writes the computed status if it differs from the stored one.
    async fn flush(&mut self) -> Result<()> {
        if self.repo.status.as_ref() == Some(&self.status) {
            return Ok(());
        }
        self.repo = patch_status(
            &self.api,
            &self.name,
            self.repo.metadata.resource_version.as_deref(),
            &self.status,
        )
        .await?;
        Ok(())
    }

    async fn set_annotations(&mut self, values: BTreeMap<String, String>) -> Result<()> {
        let current = self.repo.metadata.annotations.clone().unwrap_or_default();
        if values.iter().all(|(k, v)| current.get(k) == Some(v)) {
            return Ok(());
        }
        self.repo = patch_object(
            &self.api,
            &self.name,
            self.repo.metadata.resource_version.as_deref(),
            json!({"metadata": {"annotations": values}}),
        )
        .await?;
        Ok(())
    }

    /// Phase, `isDefault`, the per-namespace object names and `observedGeneration`
    /// (KubeBlocks' `updateStatus`), written if changed; events and metrics on a change of
    /// phase.
    async fn update_status(&mut self) -> Result<()> {
        let before = self.repo.status.as_ref().and_then(|s| s.phase);
        let phase = decide_phase(self.status.phase, self.conditions());
        self.status.phase = Some(phase);
        let is_default =
            annotation_of(&self.repo.metadata, annotation::IS_DEFAULT_REPO) == Some("true");
        self.status.is_default = is_default.then_some(true);
        if self
            .status
            .backup_pvc_name
            .as_deref()
            .unwrap_or("")
            .is_empty()
        {
            self.status.backup_pvc_name = Some(self.derived("pvc")?);
        }
        if self
            .status
            .tool_config_secret_name
            .as_deref()
            .unwrap_or("")
            .is_empty()
        {
            self.status.tool_config_secret_name = Some(self.derived("tool-config")?);
        }
        self.status.observed_generation = self.generation();
        self.flush().await?;
        self.ctx
            .metrics
            .repository_phase(&self.name, phase.as_str());
        if before != Some(phase) {
            let (kind, note, action) = self.phase_note(phase);
            let repo = self.repo.clone();
            self.ctx
                .event_as(&repo, kind, phase.as_str(), action, note)
                .await;
        }
        Ok(())
    }

    /// The phase event's type, note and action. Failed names the failing condition; a
    /// repository that fails, recovers and fails again on another check (or the same
    /// check with another message) within minutes gets a Failed event per failure
    /// ([`crate::context::distinct_action`]), not a count on the first one.
    fn phase_note(&self, phase: BackupRepoPhase) -> (EventType, String, String) {
        let (kind, note) = self.phase_note_text(phase);
        let action = match (phase, self.failing_condition()) {
            (BackupRepoPhase::Failed, Some(c)) => {
                crate::context::distinct_action(&format!("Check {}", c.type_), &note)
            }
            _ => phase.as_str().to_string(),
        };
        (kind, note, action)
    }

    fn failing_condition(&self) -> Option<&Condition> {
        self.conditions()
            .iter()
            .find(|c| c.status == "False" && c.type_ != condition::REPOSITORY_MAINTAINED)
    }

    fn phase_note_text(&self, phase: BackupRepoPhase) -> (EventType, String) {
        let failing = self.failing_condition();
        match phase {
            BackupRepoPhase::Ready => (EventType::Normal, "the repository is ready".into()),
            BackupRepoPhase::PreChecking => (
                EventType::Normal,
                "checking that the storage can be written and the repository opened".into(),
            ),
            BackupRepoPhase::Deleting => {
                (EventType::Normal, "the BackupRepo is being deleted".into())
            }
            BackupRepoPhase::Failed => (
                EventType::Warning,
                failing
                    .map(|c| format!("{} ({}): {}", c.type_, c.reason, c.message))
                    .unwrap_or_else(|| "a check failed".into()),
            ),
        }
    }

    fn derived(&self, prefix: &str) -> Result<String> {
        let suffix =
            random_suffix().map_err(|e| Error::Other(format!("random name suffix: {e}")))?;
        Ok(derived_name(prefix, &self.name, &suffix))
    }
}

mod access;
mod precheck;
mod ready;
mod revoke;
mod storage;

pub use revoke::{sweep_left_behind, ACCESS_KEY_NOT_REVOKED, ACCESS_KEY_REVOKED, REVOKE_TIMEOUT};

enum PreCheck {
    Running,
    Passed,
    /// The message, and the failed pre-check Job.
    Failed(String, Box<Job>),
}

/// The note of a PreCheckFailed event (at most 1 kB): the message's first line, the
/// Job's failure and the last lines of its log, which is where the storage's error
/// is. The first line alone was the same for every failure.
pub fn pre_check_event_note(message: &str) -> String {
    let mut lines = message.lines();
    let mut note = lines.next().unwrap_or("").to_string();
    let mut logs = Vec::new();
    let mut in_logs = false;
    for line in message.lines() {
        if let Some(f) = line.strip_prefix("Job failure message: ") {
            note.push_str(&format!(" Job failure message: {f}."));
        } else if line.starts_with("Logs from the pre-check job:") {
            in_logs = true;
        } else if in_logs {
            match line.strip_prefix("  ") {
                Some(l) if !l.trim().is_empty() => logs.push(l.trim()),
                Some(_) => {}
                None => in_logs = false,
            }
        }
    }
    if !logs.is_empty() {
        let tail = &logs[logs.len().saturating_sub(3)..];
        note.push_str(&format!(" Log: {}", tail.join(" | ")));
    }
    note
}

fn secret_key(
    secret: &Secret,
    source: &KeySource,
) -> std::result::Result<Vec<u8>, (&'static str, Error)> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(KEY_FIELD))
        .map(|v| v.0.clone())
        .ok_or_else(|| {
            (
                reason::INVALID_REPOSITORY_KEY,
                Error::invalid(source.describe(), "the Secret has no such key"),
            )
        })
}

fn prefix_error(e: Error, prefix: &str) -> Error {
    match e {
        Error::Invalid { field, message } => Error::Invalid {
            field,
            message: format!("{prefix}: {message}"),
        },
        other => other,
    }
}

/// Failed Backups (except Continuous ones, whose data keeps growing) no longer hold a
/// repository (KubeBlocks' rule).
fn ignored_backup(b: &Backup) -> bool {
    let failed = b.phase() == Some(crate::api::backup::BackupPhase::Failed);
    failed && label_of(&b.metadata, label::BACKUP_TYPE) != Some("Continuous")
}

async fn drop_wait_label<K>(api: &Api<K>, meta: &ObjectMeta) -> Result<()>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if label_of(meta, label::WAIT_REPO_PREPARATION).is_none() {
        return Ok(());
    }
    patch_object(
        api,
        meta.name.as_deref().unwrap_or(""),
        meta.resource_version.as_deref(),
        json!({"metadata": {"labels": {label::WAIT_REPO_PREPARATION: null}}}),
    )
    .await
    .map(|_| ())
}

/// Reconciles one BackupRepo.
///
/// # Errors
/// API errors (transient), an object invalid as written ([`Error::Invalid`], after the
/// condition says which field), a missing dependency ([`Error::Missing`]).
pub async fn reconcile(repo: Arc<BackupRepo>, ctx: Arc<Context>) -> Result<Action> {
    let api: Api<BackupRepo> = Api::all(ctx.client.clone());
    let name = repo.metadata.name.clone().unwrap_or_default();
    let mut run = Run {
        ctx: &ctx,
        api: api.clone(),
        repo: repo.as_ref().clone(),
        status: repo.status.clone().unwrap_or_default(),
        name: name.clone(),
        now: ctx.clock.now(),
    };
    if repo.metadata.deletion_timestamp.is_some() {
        let has_finalizer = repo
            .metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|x| x == FINALIZER));
        if !has_finalizer {
            return Ok(Action::await_change());
        }
        if let Some(wait) = run.delete_external().await? {
            return Ok(Action::requeue(wait));
        }
        remove_finalizer(&api, &run.repo, FINALIZER).await?;
        ctx.metrics.repository_removed(&name);
        return Ok(Action::await_change());
    }
    run.repo = add_finalizer(&api, &run.repo, FINALIZER).await?;
    match run.apply().await {
        Ok(action) => Ok(action),
        Err(e) => {
            if let Err(status_error) = run.update_status().await {
                tracing::warn!(repo = %name, error = %status_error, "could not write the status after an error");
            }
            Err(e)
        }
    }
}

impl Run<'_> {
    async fn apply(&mut self) -> Result<Action> {
        let provider = self.check_provider().await?;
        let (params, mut key) = self.check_parameters(&provider).await?;
        let mut rctx = RenderContext {
            parameters: params.clone(),
            ..Default::default()
        };
        let digest = digest(&params, &templates(&provider));
        self.create_storage_class_and_secret(&provider, &mut rctx, &digest)
            .await?;
        self.check_pvc_template(&provider, &rctx, &digest)?;
        let mut action = Action::await_change();
        if self.status.phase != Some(BackupRepoPhase::Deleting) {
            self.load_access(&mut key, &digest).await?;
            if let Some(a) = self.pre_check(&provider, &rctx, &digest, &key).await? {
                action = a;
            }
            // The pre-check may just have registered the pods' access key.
            self.load_access(&mut key, &digest).await?;
        }
        self.update_status().await?;
        if self.pre_check_finished() {
            self.remove_pre_check_resources().await?;
        }
        if self.status.phase == Some(BackupRepoPhase::Ready) {
            self.update_tool_config_secrets(&provider, &rctx, &key, &digest)
                .await?;
            self.prepare_for_waiting(&provider, &rctx, &key, &digest)
                .await?;
            self.ensure_gc(&provider, &rctx, &key, &digest).await?;
            self.warn_about_default_conflicts().await;
        }
        Ok(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::backuprepo::{BackupRepoSpec, PvReclaimPolicy};

    fn cond(t: &str, s: &str) -> Condition {
        Condition {
            type_: t.into(),
            status: s.into(),
            reason: "R".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: super::super::to_time(chrono::Utc::now()),
        }
    }

    fn basic() -> Vec<Condition> {
        vec![
            cond(condition::STORAGE_PROVIDER_READY, "True"),
            cond(condition::PARAMETERS_CHECKED, "True"),
            cond(condition::STORAGE_CLASS_CREATED, "True"),
            cond(condition::PVC_TEMPLATE_CHECKED, "True"),
        ]
    }

    #[test]
    fn the_phase_follows_the_conditions_and_deleting_sticks() {
        let mut c = basic();
        assert_eq!(decide_phase(None, &c), BackupRepoPhase::Failed);
        c.push(cond(condition::PRE_CHECK_PASSED, "Unknown"));
        assert_eq!(decide_phase(None, &c), BackupRepoPhase::PreChecking);
        c[4].status = "True".into();
        assert_eq!(
            decide_phase(Some(BackupRepoPhase::PreChecking), &c),
            BackupRepoPhase::Ready
        );
        c[4].status = "False".into();
        assert_eq!(decide_phase(None, &c), BackupRepoPhase::Failed);
        c[4].status = "True".into();
        c[1].status = "False".into();
        assert_eq!(decide_phase(None, &c), BackupRepoPhase::Failed);
        assert_eq!(
            decide_phase(Some(BackupRepoPhase::Deleting), &c),
            BackupRepoPhase::Deleting
        );
    }

    fn repo(name: &str, default: bool, phase: Option<BackupRepoPhase>) -> BackupRepo {
        let mut r = BackupRepo::new(
            name,
            BackupRepoSpec {
                storage_provider_ref: "p".into(),
                access_method: None,
                volume_capacity: None,
                pv_reclaim_policy: PvReclaimPolicy::Delete,
                config: None,
                credential: None,
                path_prefix: None,
            },
        );
        if default {
            r.metadata.annotations =
                Some([(annotation::IS_DEFAULT_REPO.to_string(), "true".to_string())].into());
        }
        r.status = Some(BackupRepoStatus {
            phase,
            ..Default::default()
        });
        r
    }

    #[test]
    fn two_ready_defaults_conflict() {
        let a = repo("a", true, Some(BackupRepoPhase::Ready));
        let b = repo("b", true, Some(BackupRepoPhase::Ready));
        let c = repo("c", true, Some(BackupRepoPhase::Failed));
        let d = repo("d", false, Some(BackupRepoPhase::Ready));
        let all = vec![a.clone(), b.clone(), c, d.clone()];
        assert_eq!(default_conflicts(&a, &all), vec!["b".to_string()]);
        assert!(default_conflicts(&d, &all).is_empty());
    }

    #[test]
    fn the_pre_check_event_names_the_failure_not_only_that_it_failed() {
        // The event used to carry the message's first line, the same for every failure:
        // two pre-checks failing on different storage errors read alike.
        let key = KeySource::Generated {
            namespace: "dp".into(),
            name: "dprepo-key-r".into(),
        };
        let m = pre_check_failure_message(
            "BackoffLimitExceeded:Job has reached the specified backoff limit",
            "+ datasafed push - /precheck.txt\nError: bucket nope does not exist\n",
            &[("Job/dp/j".into(), "  Type  Reason\n".into())],
            &key,
        );
        assert_eq!(
            pre_check_event_note(&m),
            "Pre-check job failed, information collected for diagnosis. Job failure message: \
             BackoffLimitExceeded:Job has reached the specified backoff limit. Log: + datasafed \
             push - /precheck.txt | Error: bucket nope does not exist"
        );
        let plain = pre_check_failure_message("timeout", "", &[], &key);
        assert_eq!(
            pre_check_event_note(&plain),
            "Pre-check job failed, information collected for diagnosis. Job failure message: timeout."
        );
    }

    #[test]
    fn a_wrong_key_is_stated_first_and_the_message_is_capped() {
        let key = KeySource::Generated {
            namespace: "dp".into(),
            name: "dprepo-key-r".into(),
        };
        let logs = "+ datasafed push - /precheck.txt\nError: the repository at /backupdata was created with another key: wrong password: no key in the repository matches it\n";
        let m = pre_check_failure_message(
            "BackoffLimitExceeded:Job has reached the specified backoff limit",
            logs,
            &[
                ("Pod/dp/p".into(), String::new()),
                ("Job/dp/j".into(), "  Type  Reason\n".into()),
            ],
            &key,
        );
        assert!(m.starts_with(
            "The storage already holds a dprepo repository that was created with another key: the key dprepoPassword of Secret dp/dprepo-key-r does not open it."
        ), "{m}");
        assert!(m.contains("Pre-check job failed, information collected for diagnosis.\n\nJob failure message: BackoffLimitExceeded:Job has reached the specified backoff limit\n\n"));
        assert!(m.contains("Logs from the pre-check job:\n  + datasafed push - /precheck.txt\n"));
        assert!(m.contains("No events are available for Pod/dp/p.\n"));
        assert!(m.contains("Events from Job/dp/j:\n  Type  Reason\n"));
        let plain = pre_check_failure_message("timeout", "", &[], &key);
        assert!(plain.starts_with("Pre-check job failed"));
        assert!(plain.contains("No logs are available."));
        let huge = pre_check_failure_message("x", &"y".repeat(100_000), &[], &key);
        assert!(huge.len() <= super::super::MAX_CONDITION_MESSAGE);
    }

    #[test]
    fn events_are_listed_as_a_table() {
        let e = CoreEvent {
            type_: Some("Warning".into()),
            reason: Some("BackOff".into()),
            message: Some("restarting\nfailed".into()),
            reporting_component: Some("kubelet".into()),
            ..Default::default()
        };
        assert_eq!(
            events_table(&[e]),
            "  Type     Reason   From     Message\n  ----     ------   ----     -------\n  Warning  BackOff  kubelet  restarting failed\n"
        );
    }
}
