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
//! (`HaveAssociatedBackups`); pre-check Jobs, PVCs (waited for: `HaveResidualPVCs`),
//! StorageClasses, Secrets and GarbageCollections the BackupRepo owns are deleted; then
//! the finalizer goes. The repository key Secret is owned by nobody and stays.

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
            let (kind, note) = self.phase_note(phase);
            let repo = self.repo.clone();
            self.ctx.event(&repo, kind, phase.as_str(), note).await;
        }
        Ok(())
    }

    fn phase_note(&self, phase: BackupRepoPhase) -> (EventType, String) {
        let failing = self
            .conditions()
            .iter()
            .find(|c| c.status == "False" && c.type_ != condition::REPOSITORY_MAINTAINED);
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

    // -- 1. the storage provider ------------------------------------------------------

    async fn check_provider(&mut self) -> Result<StorageProvider> {
        let providers: Api<StorageProvider> = Api::all(self.ctx.client.clone());
        let provider_name = self.repo.spec.storage_provider_ref.clone();
        let found = providers
            .get_opt(&provider_name)
            .await
            .during(|| format!("get StorageProvider {provider_name}"))?;
        let Some(provider) = found else {
            self.cond(
                condition::STORAGE_PROVIDER_READY,
                "False",
                reason::STORAGE_PROVIDER_NOT_FOUND,
                &format!(
                    "storageproviders.dataprotection.kubeblocks.io \"{provider_name}\" not found"
                ),
            );
            return Err(Error::invalid(
                "spec.storageProviderRef",
                format!("StorageProvider {provider_name} not found"),
            ));
        };
        let problem = match self.repo.access_method() {
            AccessMethod::Mount => {
                if nonempty(&provider.spec.storage_class_template).is_none()
                    && nonempty(&provider.spec.persistent_volume_claim_template).is_none()
                {
                    Some((
                        reason::INVALID_STORAGE_PROVIDER,
                        "both StorageClassTemplate and PersistentVolumeClaimTemplate are empty",
                        true,
                    ))
                } else {
                    let conds = provider
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_deref())
                        .unwrap_or(&[]);
                    (!is_true(conds, CONDITION_CSI_DRIVER_INSTALLED)).then_some((
                        reason::STORAGE_PROVIDER_NOT_READY,
                        "CSI driver is not installed",
                        false,
                    ))
                }
            }
            AccessMethod::Tool => nonempty(&provider.spec.datasafed_config_template)
                .is_none()
                .then_some((
                    reason::INVALID_STORAGE_PROVIDER,
                    "DatasafedConfigTemplate is empty",
                    true,
                )),
        };
        if let Some((why, message, invalid)) = problem {
            self.cond(condition::STORAGE_PROVIDER_READY, "False", why, message);
            let text = format!("StorageProvider {provider_name}: {message}");
            return Err(if invalid {
                Error::invalid("spec.storageProviderRef", text)
            } else {
                Error::Missing {
                    kind: "CSIDriver of StorageProvider".into(),
                    name: provider_name,
                }
            });
        }
        self.cond(
            condition::STORAGE_PROVIDER_READY,
            "True",
            reason::STORAGE_PROVIDER_READY,
            "",
        );
        Ok(provider)
    }

    // -- 2. parameters and the key --------------------------------------------------

    async fn check_parameters(
        &mut self,
        provider: &StorageProvider,
    ) -> Result<(BTreeMap<String, String>, RepoKey)> {
        let schema = provider
            .spec
            .parameters_schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.clone())
            .unwrap_or(serde_json::Value::Null);
        let defaults = schema_defaults(&schema);
        let config = self.repo.spec.config.clone().unwrap_or_default();
        let mut credential: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        if let Some(reference) = self.repo.spec.credential.clone() {
            let ns = reference.namespace.clone().unwrap_or_default();
            let name = reference.name.clone().unwrap_or_default();
            let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &ns);
            let found = secrets
                .get_opt(&name)
                .await
                .during(|| format!("get Secret {ns}/{name}"))?;
            let Some(secret) = found else {
                self.cond(
                    condition::PARAMETERS_CHECKED,
                    "False",
                    reason::CREDENTIAL_SECRET_NOT_FOUND,
                    &format!("failed to get secret: secrets \"{name}\" not found"),
                );
                return Err(Error::invalid(
                    "spec.credential",
                    format!("Secret {ns}/{name} not found"),
                ));
            };
            credential = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
        }
        let params = merge_parameters(&defaults, &config, &credential);
        let key = match self.repository_key(&credential).await {
            Ok(k) => k,
            Err((why, e)) => {
                self.cond(condition::PARAMETERS_CHECKED, "False", why, &e.to_string());
                return Err(e);
            }
        };
        self.cond(
            condition::PARAMETERS_CHECKED,
            "True",
            reason::PARAMETERS_CHECKED,
            "",
        );
        Ok((params, key))
    }

    async fn repository_key(
        &self,
        credential: &BTreeMap<String, Vec<u8>>,
    ) -> std::result::Result<RepoKey, (&'static str, Error)> {
        let source = key_source(
            &self.repo,
            credential.contains_key(KEY_FIELD),
            self.namespace(),
        )
        .map_err(|e| (reason::INVALID_REPOSITORY_KEY, e))?;
        let key = match &source {
            KeySource::Credential { .. } => credential.get(KEY_FIELD).cloned().unwrap_or_default(),
            KeySource::Named { namespace, name } => {
                let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), namespace);
                let secret = secrets
                    .get_opt(name)
                    .await
                    .during(|| format!("get Secret {namespace}/{name}"))
                    .map_err(|e| (reason::UNKNOWN_ERROR, e))?
                    .ok_or_else(|| {
                        (
                            reason::KEY_SECRET_NOT_FOUND,
                            Error::invalid(
                                format!("metadata.annotations[{}]", annotation::DPREPO_KEY_SECRET),
                                format!("Secret {namespace}/{name} not found"),
                            ),
                        )
                    })?;
                secret_key(&secret, &source)?
            }
            KeySource::Generated { namespace, name } => {
                let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), namespace);
                let fresh = generate_key().map_err(|e| {
                    (
                        reason::UNKNOWN_ERROR,
                        Error::Other(format!("generating a repository key: {e}")),
                    )
                })?;
                let wanted = generated_key_secret(&self.name, name, namespace, &fresh);
                let (secret, created) = create_if_absent(&secrets, &wanted)
                    .await
                    .map_err(|e| (reason::UNKNOWN_ERROR, e))?;
                if created {
                    tracing::info!(repo = %self.name, secret = %format!("{namespace}/{name}"), "generated the repository key");
                }
                secret_key(&secret, &source)?
            }
        };
        check_key(&source, &key).map_err(|e| (reason::INVALID_REPOSITORY_KEY, e))?;
        Ok(RepoKey { source, key })
    }

    // -- 3. StorageClass and CSI Secret -------------------------------------------

    async fn create_storage_class_and_secret(
        &mut self,
        provider: &StorageProvider,
        rctx: &mut RenderContext,
        digest: &str,
    ) -> Result<()> {
        let result = self.storage_class_and_secret(provider, rctx, digest).await;
        match &result {
            Ok(()) => self.cond(
                condition::STORAGE_CLASS_CREATED,
                "True",
                reason::STORAGE_CLASS_CREATED,
                "",
            ),
            Err((why, e)) => self.cond(
                condition::STORAGE_CLASS_CREATED,
                "False",
                why,
                &e.to_string(),
            ),
        }
        result.map_err(|(_, e)| e)
    }

    async fn storage_class_and_secret(
        &mut self,
        provider: &StorageProvider,
        rctx: &mut RenderContext,
        digest: &str,
    ) -> std::result::Result<(), (&'static str, Error)> {
        let unknown = |e| (reason::UNKNOWN_ERROR, e);
        let csi_template = nonempty(&provider.spec.csi_driver_secret_template).map(str::to_string);
        let sc_template = nonempty(&provider.spec.storage_class_template).map(str::to_string);
        let mut named = false;
        if csi_template.is_some() && self.status.generated_csi_driver_secret.is_none() {
            self.status.generated_csi_driver_secret = Some(SecretReference {
                name: Some(self.derived("secret").map_err(unknown)?),
                namespace: Some(self.namespace().to_string()),
            });
            named = true;
        }
        if sc_template.is_some()
            && self
                .status
                .generated_storage_class_name
                .as_deref()
                .unwrap_or("")
                .is_empty()
        {
            self.status.generated_storage_class_name = Some(self.derived("sc").map_err(unknown)?);
            named = true;
        }
        if named {
            // Keep the random names before creating objects under them.
            self.flush().await.map_err(unknown)?;
        }
        if let Some(reference) = &self.status.generated_csi_driver_secret {
            rctx.csi_driver_secret_name = reference.name.clone().unwrap_or_default();
            rctx.csi_driver_secret_namespace = reference.namespace.clone().unwrap_or_default();
        }
        if let Some(text) = csi_template {
            let failed = |e| (reason::PREPARE_CSI_SECRET_FAILED, e);
            let name = rctx.csi_driver_secret_name.clone();
            let ns = rctx.csi_driver_secret_namespace.clone();
            let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &ns);
            let existing = secrets
                .get_opt(&name)
                .await
                .during(|| format!("get Secret {ns}/{name}"))
                .map_err(failed)?;
            let stale = existing.as_ref().is_none_or(|s| {
                annotation_of(&s.metadata, annotation::BACKUP_REPO_DIGEST) != Some(digest)
            });
            if stale {
                let content = render(
                    provider,
                    "spec.csiDriverSecretTemplate",
                    CSI_SECRET_TEMPLATE,
                    &text,
                    rctx,
                )
                .map_err(|e| failed(prefix_error(e, "failed to render secret template")))?;
                let secret = csi_secret(&self.repo, &name, &ns, &content, digest).map_err(|e| {
                    failed(Error::invalid(
                        "spec.storageProviderRef (spec.csiDriverSecretTemplate)",
                        e.to_string(),
                    ))
                })?;
                match existing {
                    None => {
                        create_if_absent(&secrets, &secret).await.map_err(failed)?;
                    }
                    Some(_) => {
                        patch_object(
                            &secrets,
                            &name,
                            None,
                            json!({"metadata": {
                                    "labels": secret.metadata.labels,
                                    "annotations": secret.metadata.annotations,
                                    "ownerReferences": secret.metadata.owner_references},
                                "data": secret.data}),
                        )
                        .await
                        .map_err(failed)?;
                    }
                }
            }
        }
        if let Some(text) = sc_template {
            let failed = |e| (reason::PREPARE_STORAGE_CLASS_FAILED, e);
            let name = self
                .status
                .generated_storage_class_name
                .clone()
                .unwrap_or_default();
            let classes: Api<StorageClass> = Api::all(self.ctx.client.clone());
            let existing = classes
                .get_opt(&name)
                .await
                .during(|| format!("get StorageClass {name}"))
                .map_err(failed)?;
            if existing.is_none() {
                let content = render(
                    provider,
                    "spec.storageClassTemplate",
                    STORAGE_CLASS_TEMPLATE,
                    &text,
                    rctx,
                )
                .map_err(|e| failed(prefix_error(e, "failed to render storage class template")))?;
                let sc = storage_class(&self.repo, &name, &content).map_err(|e| {
                    failed(Error::invalid(
                        "spec.storageProviderRef (spec.storageClassTemplate)",
                        e.to_string(),
                    ))
                })?;
                create_if_absent(&classes, &sc).await.map_err(failed)?;
            }
        }
        rctx.generated_storage_class_name = self
            .status
            .generated_storage_class_name
            .clone()
            .unwrap_or_default();
        Ok(())
    }

    // -- 4. the PVC template ------------------------------------------------------

    fn check_pvc_template(
        &mut self,
        provider: &StorageProvider,
        rctx: &RenderContext,
        digest: &str,
    ) -> Result<()> {
        let Some(text) = nonempty(&provider.spec.persistent_volume_claim_template) else {
            self.cond(condition::PVC_TEMPLATE_CHECKED, "True", reason::SKIPPED, "");
            return Ok(());
        };
        if self.repo.access_method() != AccessMethod::Mount {
            self.cond(condition::PVC_TEMPLATE_CHECKED, "True", reason::SKIPPED, "");
            return Ok(());
        }
        if annotation_of(&self.repo.metadata, annotation::BACKUP_REPO_DIGEST) != Some(digest) {
            let checked = render(
                provider,
                "spec.persistentVolumeClaimTemplate",
                PVC_TEMPLATE,
                text,
                rctx,
            )
            .map_err(|e| prefix_error(e, "failed to render PVC template"))
            .and_then(|content| {
                repo_pvc(
                    &self.repo,
                    "check",
                    "check",
                    Some(&content),
                    None,
                    BTreeMap::new(),
                )
                .map_err(|e| {
                    Error::invalid(
                        "spec.storageProviderRef (spec.persistentVolumeClaimTemplate)",
                        e.to_string(),
                    )
                })
            });
            if let Err(e) = checked {
                self.cond(
                    condition::PVC_TEMPLATE_CHECKED,
                    "False",
                    reason::BAD_PVC_TEMPLATE,
                    &e.to_string(),
                );
                return Err(e);
            }
        }
        self.cond(
            condition::PVC_TEMPLATE_CHECKED,
            "True",
            reason::PVC_TEMPLATE_CHECKED,
            "",
        );
        Ok(())
    }

    // -- per-namespace objects ------------------------------------------------------

    /// The PVC `name` in `namespace` (Mount access), created if absent.
    async fn ensure_pvc(
        &self,
        provider: &StorageProvider,
        rctx: &RenderContext,
        name: &str,
        namespace: &str,
        annotations: BTreeMap<String, String>,
    ) -> Result<PersistentVolumeClaim> {
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(self.ctx.client.clone(), namespace);
        if let Some(found) = pvcs
            .get_opt(name)
            .await
            .during(|| format!("get PersistentVolumeClaim {namespace}/{name}"))?
        {
            return Ok(found);
        }
        let rendered = match nonempty(&provider.spec.persistent_volume_claim_template) {
            Some(text) => Some(
                render(
                    provider,
                    "spec.persistentVolumeClaimTemplate",
                    PVC_TEMPLATE,
                    text,
                    rctx,
                )
                .map_err(|e| prefix_error(e, "failed to render PVC template"))?,
            ),
            None => None,
        };
        let sc = self.status.generated_storage_class_name.clone();
        let pvc = repo_pvc(
            &self.repo,
            name,
            namespace,
            rendered.as_deref(),
            sc.as_deref(),
            annotations,
        )
        .map_err(|e| {
            Error::invalid(
                "spec.storageProviderRef (spec.persistentVolumeClaimTemplate)",
                e.to_string(),
            )
        })?;
        Ok(create_if_absent(&pvcs, &pvc).await?.0)
    }

    /// The tool Secret `name` in `namespace` (both access methods), created if absent.
    async fn ensure_tool_secret(
        &self,
        provider: &StorageProvider,
        rctx: &RenderContext,
        key: &RepoKey,
        name: &str,
        namespace: &str,
        digest: &str,
    ) -> Result<Secret> {
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), namespace);
        if let Some(found) = secrets
            .get_opt(name)
            .await
            .during(|| format!("get Secret {namespace}/{name}"))?
        {
            return Ok(found);
        }
        let secret = self.tool_secret_object(provider, rctx, key, name, namespace, digest)?;
        Ok(create_if_absent(&secrets, &secret).await?.0)
    }

    fn tool_secret_object(
        &self,
        provider: &StorageProvider,
        rctx: &RenderContext,
        key: &RepoKey,
        name: &str,
        namespace: &str,
        digest: &str,
    ) -> Result<Secret> {
        let conf = match self.repo.access_method() {
            AccessMethod::Tool => Some(
                render(
                    provider,
                    "spec.datasafedConfigTemplate",
                    TOOL_CONFIG_TEMPLATE,
                    provider
                        .spec
                        .datasafed_config_template
                        .as_deref()
                        .unwrap_or(""),
                    rctx,
                )
                .map_err(|e| prefix_error(e, "failed to render tool config template"))?,
            ),
            AccessMethod::Mount => None,
        };
        Ok(tool_secret(
            &self.repo,
            name,
            namespace,
            conf.as_deref(),
            &key.key,
            generation_annotations(digest, &key.source.id()),
        ))
    }

    /// What a namespace needs for pods to reach the repository.
    async fn prepare_namespace(
        &self,
        provider: &StorageProvider,
        rctx: &RenderContext,
        key: &RepoKey,
        namespace: &str,
        digest: &str,
    ) -> Result<()> {
        if self.repo.access_method() == AccessMethod::Mount {
            let pvc_name = self.status.backup_pvc_name.clone().unwrap_or_default();
            self.ensure_pvc(provider, rctx, &pvc_name, namespace, BTreeMap::new())
                .await?;
        }
        let secret_name = self
            .status
            .tool_config_secret_name
            .clone()
            .unwrap_or_default();
        self.ensure_tool_secret(provider, rctx, key, &secret_name, namespace, digest)
            .await?;
        Ok(())
    }

    // -- 5. the pre-check -----------------------------------------------------------

    fn pre_check_finished(&self) -> bool {
        find_condition(self.conditions(), condition::PRE_CHECK_PASSED)
            .is_some_and(|c| c.status != "Unknown")
    }

    fn pre_check_name(&self) -> String {
        pre_check_name(self.repo.metadata.uid.as_deref().unwrap_or(""), &self.name)
    }

    /// Runs or follows the pre-check; `Some(action)` while it runs.
    async fn pre_check(
        &mut self,
        provider: &StorageProvider,
        rctx: &RenderContext,
        digest: &str,
        key: &RepoKey,
    ) -> Result<Option<Action>> {
        let key_id = key.source.id();
        let digest_changed =
            annotation_of(&self.repo.metadata, annotation::BACKUP_REPO_DIGEST) != Some(digest);
        let key_changed =
            annotation_of(&self.repo.metadata, KEY_SOURCE_ANNOTATION) != Some(&key_id);
        if digest_changed || key_changed {
            self.cond(
                condition::PRE_CHECK_PASSED,
                "Unknown",
                reason::DIGEST_CHANGED,
                "",
            );
            self.flush().await?;
            self.set_annotations(BTreeMap::from([
                (
                    annotation::BACKUP_REPO_DIGEST.to_string(),
                    digest.to_string(),
                ),
                (
                    annotation::NEED_UPDATE_TOOL_CONFIG.to_string(),
                    "true".to_string(),
                ),
                (KEY_SOURCE_ANNOTATION.to_string(), key_id.clone()),
            ]))
            .await?;
        }
        if self.pre_check_finished() {
            return Ok(None);
        }
        match self.run_pre_check(provider, rctx, digest, key).await {
            Ok(PreCheck::Running) => {
                self.cond(
                    condition::PRE_CHECK_PASSED,
                    "Unknown",
                    reason::UNKNOWN_ERROR,
                    "wait job to finish",
                );
                Ok(Some(Action::requeue(CHECK_INTERVAL)))
            }
            Ok(PreCheck::Passed) => {
                self.cond(
                    condition::PRE_CHECK_PASSED,
                    "True",
                    reason::PRE_CHECK_PASSED,
                    "",
                );
                Ok(None)
            }
            Ok(PreCheck::Failed(message)) => {
                self.cond(
                    condition::PRE_CHECK_PASSED,
                    "False",
                    reason::PRE_CHECK_FAILED,
                    &message,
                );
                let first = message.lines().next().unwrap_or("").to_string();
                let repo = self.repo.clone();
                self.ctx
                    .event(&repo, EventType::Warning, reason::PRE_CHECK_FAILED, first)
                    .await;
                Ok(None)
            }
            Err(e @ Error::Invalid { .. }) => {
                // The objects cannot even be built: the check fails, naming the field.
                self.cond(
                    condition::PRE_CHECK_PASSED,
                    "False",
                    reason::PRE_CHECK_FAILED,
                    &e.to_string(),
                );
                Err(e)
            }
            Err(e) => {
                self.cond(
                    condition::PRE_CHECK_PASSED,
                    "Unknown",
                    reason::UNKNOWN_ERROR,
                    &e.to_string(),
                );
                Err(e)
            }
        }
    }

    async fn run_pre_check(
        &mut self,
        provider: &StorageProvider,
        rctx: &RenderContext,
        digest: &str,
        key: &RepoKey,
    ) -> Result<PreCheck> {
        let namespace = self.namespace().to_string();
        let sa = ensure_worker_service_account(self.ctx, &namespace).await?;
        let name = self.pre_check_name();
        let key_id = key.source.id();
        let wanted = generation_annotations(digest, &key_id);
        let current = |meta: &ObjectMeta| {
            annotation_of(meta, annotation::BACKUP_REPO_DIGEST) == Some(digest)
                && annotation_of(meta, KEY_SOURCE_ANNOTATION) == Some(key_id.as_str())
        };
        let mut up_to_date = true;
        let mut pvc = None;
        if self.repo.access_method() == AccessMethod::Mount {
            let p = self
                .ensure_pvc(provider, rctx, &name, &namespace, wanted.clone())
                .await?;
            up_to_date &= current(&p.metadata);
            pvc = Some(p);
        }
        let secret = self
            .ensure_tool_secret(provider, rctx, key, &name, &namespace, digest)
            .await?;
        up_to_date &= current(&secret.metadata);
        let jobs: Api<Job> = Api::namespaced(self.ctx.client.clone(), &namespace);
        let inputs = PreCheckInputs {
            name: name.clone(),
            service_account: sa,
            digest: digest.to_string(),
            key_source: key_id.clone(),
        };
        let (job, _) =
            create_if_absent(&jobs, &pre_check_job(&self.repo, &inputs, &self.ctx.config)).await?;
        up_to_date &= current(&job.metadata);
        if !up_to_date {
            // Made for an earlier version of the BackupRepo: remove and start again.
            self.remove_pre_check_resources().await?;
            return Err(Error::Other(
                "pre-check job or PVC digest not match, try again".into(),
            ));
        }
        let (succeeded, failure) = match job_finished(&job) {
            Some(done) => done,
            None => {
                let created = job
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(super::from_time)
                    .unwrap_or(self.now);
                if self.now - created > PRE_CHECK_TIMEOUT {
                    (false, "timeout".to_string())
                } else {
                    return Ok(PreCheck::Running);
                }
            }
        };
        if succeeded {
            return Ok(PreCheck::Passed);
        }
        Ok(PreCheck::Failed(
            self.failure_message(&job, pvc.as_ref(), &failure, &key.source)
                .await,
        ))
    }

    async fn failure_message(
        &self,
        job: &Job,
        pvc: Option<&PersistentVolumeClaim>,
        failure: &str,
        key: &KeySource,
    ) -> String {
        let namespace = self.namespace().to_string();
        let job_name = job.metadata.name.clone().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &namespace);
        let mut pod_list = pods
            .list(&ListParams::default().labels(&format!("job-name={job_name}")))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        pod_list.sort_by(|a, b| {
            b.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0)
                .cmp(&a.metadata.creation_timestamp.as_ref().map(|t| t.0))
        });
        let mut logs = String::new();
        for pod in &pod_list {
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if phase != Some("Failed") {
                continue;
            }
            let params = LogParams {
                container: Some(PRE_CHECK_CONTAINER.into()),
                limit_bytes: Some(CONTENT_LIMIT as i64),
                ..Default::default()
            };
            match pods
                .logs(pod.metadata.name.as_deref().unwrap_or(""), &params)
                .await
            {
                Ok(text) => logs = truncate(&text, CONTENT_LIMIT),
                Err(e) => {
                    tracing::warn!(repo = %self.name, error = %e, "could not read the pre-check pod's logs")
                }
            }
            break;
        }
        let mut events = Vec::new();
        if let Some(pod) = pod_list.first() {
            events.push(self.events_of("Pod", &pod.metadata).await);
        }
        if let Some(pvc) = pvc {
            events.push(self.events_of("PersistentVolumeClaim", &pvc.metadata).await);
        }
        events.push(self.events_of("Job", &job.metadata).await);
        pre_check_failure_message(failure, &logs, &events, key)
    }

    async fn events_of(&self, kind: &str, meta: &ObjectMeta) -> (String, String) {
        let ns = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        let object = format!("{kind}/{ns}/{name}");
        let Some(uid) = meta.uid.as_deref() else {
            return (object, String::new());
        };
        let api: Api<CoreEvent> = Api::namespaced(self.ctx.client.clone(), &ns);
        let events = api
            .list(&ListParams::default().fields(&format!("involvedObject.uid={uid}")))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        (object, events_table(&events))
    }

    async fn remove_pre_check_resources(&self) -> Result<()> {
        let ns = self.namespace().to_string();
        let name = self.pre_check_name();
        delete_background(&Api::<Job>::namespaced(self.ctx.client.clone(), &ns), &name).await?;
        delete_background(
            &Api::<PersistentVolumeClaim>::namespaced(self.ctx.client.clone(), &ns),
            &name,
        )
        .await?;
        delete_background(
            &Api::<Secret>::namespaced(self.ctx.client.clone(), &ns),
            &name,
        )
        .await
    }

    // -- 7. when Ready ------------------------------------------------------------

    /// Rewrites the tool Secrets made for an earlier digest or key (when flagged).
    async fn update_tool_config_secrets(
        &mut self,
        provider: &StorageProvider,
        rctx: &RenderContext,
        key: &RepoKey,
        digest: &str,
    ) -> Result<()> {
        if annotation_of(&self.repo.metadata, annotation::NEED_UPDATE_TOOL_CONFIG) != Some("true") {
            return Ok(());
        }
        let key_id = key.source.id();
        let secrets: Api<Secret> = Api::all(self.ctx.client.clone());
        let list = secrets
            .list(&ListParams::default().labels(&format!(
                "{}={},{}=true",
                label::BACKUP_REPO_NAME,
                self.name,
                label::IS_TOOL_CONFIG
            )))
            .await
            .during(|| format!("list the tool Secrets of {}", self.name))?;
        for secret in list.items {
            if annotation_of(&secret.metadata, annotation::BACKUP_REPO_DIGEST) == Some(digest)
                && annotation_of(&secret.metadata, KEY_SOURCE_ANNOTATION) == Some(key_id.as_str())
            {
                continue;
            }
            let ns = secret.metadata.namespace.clone().unwrap_or_default();
            let name = secret.metadata.name.clone().unwrap_or_default();
            let fresh = self.tool_secret_object(provider, rctx, key, &name, &ns, digest)?;
            let api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &ns);
            // Replace the data whole: a Mount Secret has no datasafed.conf to keep.
            let mut data: BTreeMap<String, Option<ByteString>> = secret
                .data
                .unwrap_or_default()
                .into_keys()
                .map(|k| (k, None))
                .collect();
            for (k, v) in fresh.data.unwrap_or_default() {
                data.insert(k, Some(v));
            }
            patch_object(
                &api,
                &name,
                secret.metadata.resource_version.as_deref(),
                json!({"metadata": {"annotations": fresh.metadata.annotations}, "data": data}),
            )
            .await?;
        }
        self.set_annotations(BTreeMap::from([(
            annotation::NEED_UPDATE_TOOL_CONFIG.to_string(),
            "false".to_string(),
        )]))
        .await
    }

    /// Backups and Restores waiting for the repository in their namespace.
    async fn prepare_for_waiting(
        &self,
        provider: &StorageProvider,
        rctx: &RenderContext,
        key: &RepoKey,
        digest: &str,
    ) -> Result<()> {
        let selector = format!(
            "{}={},{}=true",
            label::BACKUP_REPO_NAME,
            self.name,
            label::WAIT_REPO_PREPARATION
        );
        let backups: Api<Backup> = Api::all(self.ctx.client.clone());
        let waiting = backups
            .list(&ListParams::default().labels(&selector))
            .await
            .during(|| format!("list the Backups waiting for {}", self.name))?;
        let mut first_error = None;
        for b in waiting.items.iter().filter(|b| !ignored_backup(b)) {
            let ns = b.metadata.namespace.clone().unwrap_or_default();
            let result = match self
                .prepare_namespace(provider, rctx, key, &ns, digest)
                .await
            {
                Ok(()) => {
                    let api: Api<Backup> = Api::namespaced(self.ctx.client.clone(), &ns);
                    drop_wait_label(&api, &b.metadata).await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::warn!(repo = %self.name, backup = %format!("{ns}/{}", b.metadata.name.as_deref().unwrap_or("")), error = %e, "could not prepare the repository for a Backup");
                first_error.get_or_insert(e);
            }
        }
        let restores: Api<Restore> = Api::all(self.ctx.client.clone());
        let waiting = restores
            .list(&ListParams::default().labels(&selector))
            .await
            .during(|| format!("list the Restores waiting for {}", self.name))?;
        for r in waiting
            .items
            .iter()
            .filter(|r| r.phase() != Some(crate::api::restore::RestorePhase::Failed))
        {
            let ns = r.metadata.namespace.clone().unwrap_or_default();
            let result = match self
                .prepare_namespace(provider, rctx, key, &ns, digest)
                .await
            {
                Ok(()) => {
                    let api: Api<Restore> = Api::namespaced(self.ctx.client.clone(), &ns);
                    drop_wait_label(&api, &r.metadata).await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The repository's GarbageCollection (unless disabled) and its namespace's objects.
    async fn ensure_gc(
        &self,
        provider: &StorageProvider,
        rctx: &RenderContext,
        key: &RepoKey,
        digest: &str,
    ) -> Result<()> {
        let gcs: Api<GarbageCollection> = Api::all(self.ctx.client.clone());
        let all = gcs
            .list(&ListParams::default())
            .await
            .during(|| "list GarbageCollections".to_string())?;
        let mine: Vec<&GarbageCollection> = all
            .items
            .iter()
            .filter(|g| g.spec.backup_repo_name == self.name)
            .collect();
        if annotation_of(&self.repo.metadata, GC_ANNOTATION) == Some("disabled") {
            for g in mine {
                if is_owned_by(g, self.repo.metadata.uid.as_deref()) {
                    delete_background(&gcs, g.metadata.name.as_deref().unwrap_or("")).await?;
                }
            }
            return Ok(());
        }
        let ns = self.namespace().to_string();
        self.prepare_namespace(provider, rctx, key, &ns, digest)
            .await?;
        if mine.is_empty() {
            let mut gc = GarbageCollection::new(
                &self.name,
                GarbageCollectionSpec {
                    backup_repo_name: self.name.clone(),
                    schedule: None,
                    max_unused: None,
                    dry_run: None,
                    suspend: None,
                },
            );
            gc.metadata.labels = Some(BTreeMap::from([(
                label::BACKUP_REPO_NAME.to_string(),
                self.name.clone(),
            )]));
            gc.metadata.owner_references =
                crate::builder::controller_ref(&self.repo).map(|o| vec![o]);
            let (_, created) = create_if_absent(&gcs, &gc).await?;
            if created {
                tracing::info!(repo = %self.name, "created the repository's GarbageCollection");
            }
        }
        Ok(())
    }

    async fn warn_about_default_conflicts(&self) {
        let all = match self.api.list(&ListParams::default()).await {
            Ok(l) => l.items,
            Err(_) => return,
        };
        let others = default_conflicts(&self.repo, &all);
        if !others.is_empty() {
            let note = format!(
                "BackupRepos {} are default too: Backups that name no repository fail until only one is annotated {}=true",
                others.join(", "),
                annotation::IS_DEFAULT_REPO
            );
            self.ctx
                .event(&self.repo, EventType::Warning, "MultipleDefaultRepos", note)
                .await;
        }
    }

    // -- deletion -----------------------------------------------------------------

    /// Deletes what the repository derived; `false` while something must be waited for.
    async fn delete_external(&mut self) -> Result<bool> {
        if self.status.phase != Some(BackupRepoPhase::Deleting) {
            self.status.phase = Some(BackupRepoPhase::Deleting);
            self.flush().await?;
            self.ctx.metrics.repository_phase(&self.name, "Deleting");
            let repo = self.repo.clone();
            self.ctx
                .event(
                    &repo,
                    EventType::Normal,
                    "Deleting",
                    "the BackupRepo is being deleted",
                )
                .await;
        }
        let client = self.ctx.client.clone();
        let by_repo =
            ListParams::default().labels(&format!("{}={}", label::BACKUP_REPO_NAME, self.name));
        let backups: Api<Backup> = Api::all(client.clone());
        let referencing: Vec<String> = backups
            .list(&by_repo)
            .await
            .during(|| format!("list the Backups of {}", self.name))?
            .items
            .iter()
            .filter(|b| !ignored_backup(b))
            .map(|b| {
                format!(
                    "{}/{}",
                    b.metadata.namespace.as_deref().unwrap_or(""),
                    b.metadata.name.as_deref().unwrap_or("")
                )
            })
            .collect();
        if !referencing.is_empty() {
            let mut shown = referencing
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            if referencing.len() > 10 {
                shown.push_str(&format!(" and {} more", referencing.len() - 10));
            }
            self.cond(
                condition::DERIVED_OBJECTS_DELETED,
                "False",
                reason::HAVE_ASSOCIATED_BACKUPS,
                &format!("some backups still refer to this repo: {shown}"),
            );
            self.flush().await?;
            return Ok(false);
        }
        let uid = self.repo.metadata.uid.clone();
        let ns = self.namespace().to_string();
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
        for j in jobs
            .list(&by_repo)
            .await
            .during(|| "list Jobs".to_string())?
            .items
        {
            if is_owned_by(&j, uid.as_deref()) {
                delete_background(&jobs, j.metadata.name.as_deref().unwrap_or("")).await?;
            }
        }
        let pvcs: Api<PersistentVolumeClaim> = Api::all(client.clone());
        let owned_pvcs: Vec<PersistentVolumeClaim> = pvcs
            .list(&by_repo)
            .await
            .during(|| "list PersistentVolumeClaims".to_string())?
            .items
            .into_iter()
            .filter(|p| is_owned_by(p, uid.as_deref()))
            .collect();
        for p in &owned_pvcs {
            let api: Api<PersistentVolumeClaim> = Api::namespaced(
                client.clone(),
                p.metadata.namespace.as_deref().unwrap_or(""),
            );
            delete_background(&api, p.metadata.name.as_deref().unwrap_or("")).await?;
        }
        let remaining = pvcs
            .list(&by_repo)
            .await
            .during(|| "list PersistentVolumeClaims".to_string())?
            .items
            .into_iter()
            .filter(|p| is_owned_by(p, uid.as_deref()))
            .count();
        if remaining > 0 {
            self.cond(
                condition::DERIVED_OBJECTS_DELETED,
                "False",
                reason::HAVE_RESIDUAL_PVCS,
                "maybe the derived PVCs are still in use",
            );
            self.flush().await?;
            return Ok(false);
        }
        let classes: Api<StorageClass> = Api::all(client.clone());
        for sc in classes
            .list(&by_repo)
            .await
            .during(|| "list StorageClasses".to_string())?
            .items
        {
            if is_owned_by(&sc, uid.as_deref()) {
                delete_background(&classes, sc.metadata.name.as_deref().unwrap_or("")).await?;
            }
        }
        let secrets: Api<Secret> = Api::all(client.clone());
        for s in secrets
            .list(&by_repo)
            .await
            .during(|| "list Secrets".to_string())?
            .items
        {
            if is_owned_by(&s, uid.as_deref()) {
                let api: Api<Secret> = Api::namespaced(
                    client.clone(),
                    s.metadata.namespace.as_deref().unwrap_or(""),
                );
                delete_background(&api, s.metadata.name.as_deref().unwrap_or("")).await?;
            }
        }
        let gcs: Api<GarbageCollection> = Api::all(client.clone());
        for g in gcs
            .list(&ListParams::default())
            .await
            .during(|| "list GarbageCollections".to_string())?
            .items
        {
            if is_owned_by(&g, uid.as_deref()) {
                delete_background(&gcs, g.metadata.name.as_deref().unwrap_or("")).await?;
            }
        }
        self.cond(
            condition::DERIVED_OBJECTS_DELETED,
            "True",
            reason::DERIVED_OBJECTS_DELETED,
            "",
        );
        self.flush().await?;
        Ok(true)
    }
}

enum PreCheck {
    Running,
    Passed,
    Failed(String),
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
        if !run.delete_external().await? {
            return Ok(Action::requeue(Duration::from_secs(30)));
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
        let (params, key) = self.check_parameters(&provider).await?;
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
            if let Some(a) = self.pre_check(&provider, &rctx, &digest, &key).await? {
                action = a;
            }
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
