//! Seed BackupPolicy -> a BackupRepo for its storage block and a dataprotection
//! BackupPolicy of the same name (owned by it) whose method and ActionSet come from the
//! cluster's database engine. Status: `Available` once the repository is Ready and the
//! dataprotection policy Available; `Pending` while they are on their way; `Unavailable`
//! with a message naming the field at fault.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::Resource;

use crate::api::seed::backuppolicy::BackupPolicyStatus;
use crate::api::seed::{self};
use crate::api::{ActionSet, BackupPolicy, BackupRepo};
use crate::builder::key::KEY_FIELD;
use crate::builder::seed as b;
use crate::context::Context;
use crate::error::{KubeResultExt, Result};
use crate::reconcile::replace_status;

use super::{apply, false_condition, owner_ref, ready_condition, text_at};

/// What the translation came to.
struct Outcome {
    phase: &'static str,
    message: String,
    engine: Option<String>,
    action_set: Option<String>,
    repo: Option<String>,
}

fn unavailable(message: impl Into<String>) -> Outcome {
    Outcome {
        phase: "Unavailable",
        message: message.into(),
        engine: None,
        action_set: None,
        repo: None,
    }
}

/// Checks that Secret `ns/name` exists and, when `key` is given, holds it.
pub(super) async fn check_secret(
    ctx: &Context,
    ns: &str,
    name: &str,
    key: Option<&str>,
    field: &str,
) -> Result<Option<String>> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let Some(s) = api
        .get_opt(name)
        .await
        .during(|| format!("get Secret {ns}/{name}"))?
    else {
        return Ok(Some(format!("{field}: Secret {ns}/{name} not found")));
    };
    if let Some(k) = key {
        let has = s.data.as_ref().is_some_and(|d| d.contains_key(k))
            || s.string_data.as_ref().is_some_and(|d| d.contains_key(k));
        if !has {
            return Ok(Some(format!(
                "{field}: Secret {ns}/{name} has no key {k:?} (the repository key goes there)"
            )));
        }
    }
    Ok(None)
}

/// The StatefulSet of cluster `name` in `ns`, or the message saying why there is none.
pub(super) async fn cluster(
    ctx: &Context,
    ns: &str,
    name: &str,
) -> Result<Result<StatefulSet, String>> {
    let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), ns);
    Ok(api
        .get_opt(name)
        .await
        .during(|| format!("get StatefulSet {ns}/{name}"))?
        .ok_or_else(|| {
            format!(
                "spec.clusterRef.name: no cluster {name} in namespace {ns} (a cluster is the StatefulSet of that name, its pods labelled {}={name})",
                b::INSTANCE_LABEL
            )
        }))
}

/// Creates (or finds) the BackupRepo of `storage` used from `ns`; `Err` names the field.
pub(super) async fn ensure_repo(
    ctx: &Context,
    ns: &str,
    storage: &seed::Storage,
    key_ref: Option<&str>,
) -> Result<std::result::Result<BackupRepo, String>> {
    let repo = match b::backup_repo(ns, storage, key_ref) {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    if let Some(s) = storage.secret_ref.as_deref().filter(|s| !s.is_empty()) {
        if let Some(msg) = check_secret(ctx, ns, s, None, "spec.storage.secretRef").await? {
            return Ok(Err(msg));
        }
    }
    let api: Api<BackupRepo> = Api::all(ctx.client.clone());
    let (found, _) = crate::reconcile::create_if_absent(&api, &repo).await?;
    Ok(Ok(found))
}

/// The repository's readiness: `None` when Ready, else why not (and whether that is a
/// failure rather than a wait).
pub(super) fn repo_state(repo: &BackupRepo) -> Option<(bool, String)> {
    let name = repo.meta().name.clone().unwrap_or_default();
    match text_at(repo, "/status/phase").as_deref() {
        Some("Ready") => None,
        Some("Failed") => Some((
            true,
            format!(
                "BackupRepo {name} (from spec.storage) is Failed: {}",
                false_condition(repo).unwrap_or_default()
            ),
        )),
        other => Some((
            false,
            format!(
                "waiting for BackupRepo {name} (from spec.storage) to be Ready (phase {})",
                other.unwrap_or("unset")
            ),
        )),
    }
}

async fn translate(p: &seed::BackupPolicy, ctx: &Context) -> Result<Outcome> {
    let ns = p.meta().namespace.clone().unwrap_or_default();
    if let Some(cns) = p.spec.cluster_ref.namespace.as_deref() {
        if !cns.is_empty() && cns != ns {
            return Ok(unavailable(format!(
                "spec.clusterRef.namespace: {cns:?} is not the policy's namespace {ns:?} (backups run beside the cluster: create the policy in {cns:?})"
            )));
        }
    }
    let key_ref = b::key_ref(p);
    if let Some(k) = key_ref {
        if let Some(msg) =
            check_secret(ctx, &ns, k, Some(KEY_FIELD), "spec.encryption.keyRef").await?
        {
            return Ok(unavailable(msg));
        }
    }
    let sts = match cluster(ctx, &ns, &p.spec.cluster_ref.name).await? {
        Ok(s) => s,
        Err(msg) => return Ok(unavailable(msg)),
    };
    let engine = match b::detect_engine(&sts) {
        Ok(e) => e,
        Err(msg) => return Ok(unavailable(format!("spec.clusterRef: {msg}"))),
    };
    let action_set = b::action_set_name(engine, p.spec.method);
    let sets: Api<ActionSet> = Api::all(ctx.client.clone());
    let continuous = b::continuous_action_set(engine, p.spec.method);
    for (set, what) in [
        (Some(action_set), p.spec.method.as_str()),
        (continuous, b::CONTINUOUS_METHOD),
    ] {
        let Some(set) = set else { continue };
        if sets
            .get_opt(set)
            .await
            .during(|| format!("get ActionSet {set}"))?
            .is_none()
        {
            return Ok(Outcome {
                engine: Some(engine.as_str().into()),
                ..unavailable(format!(
                    "ActionSet {set} (for the {what} method of {}) not found: apply deploy/actionsets",
                    engine.as_str()
                ))
            });
        }
    }
    let repo = match ensure_repo(ctx, &ns, &p.spec.storage, key_ref).await? {
        Ok(r) => r,
        Err(msg) => return Ok(unavailable(msg)),
    };
    let repo_name = repo.meta().name.clone().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let cred = b::credential_secret_name(&p.spec.cluster_ref.name);
    let credential: Option<Vec<String>> = secrets
        .get_opt(&cred)
        .await
        .during(|| format!("get Secret {ns}/{cred}"))?
        .map(|s| s.data.unwrap_or_default().into_keys().collect());
    let mut dp = match b::dp_backup_policy(p, &repo_name, engine, &sts, credential.as_deref()) {
        Ok(d) => d,
        Err(msg) => return Ok(unavailable(msg)),
    };
    dp.metadata.owner_references = Some(vec![owner_ref(p)]);
    let policies: Api<BackupPolicy> = Api::namespaced(ctx.client.clone(), &ns);
    let dp = apply(&policies, &dp).await?;
    let mut out = Outcome {
        phase: "Available",
        message: String::new(),
        engine: Some(engine.as_str().into()),
        action_set: Some(action_set.into()),
        repo: Some(repo_name),
    };
    if let Some((failed, msg)) = repo_state(&repo) {
        out.phase = if failed { "Unavailable" } else { "Pending" };
        out.message = msg;
        return Ok(out);
    }
    match text_at(&dp, "/status/phase").as_deref() {
        Some("Available") => {}
        Some("Unavailable") => {
            out.phase = "Unavailable";
            out.message = format!(
                "BackupPolicy.dataprotection.kubeblocks.io {} is Unavailable: {}",
                dp.meta().name.as_deref().unwrap_or_default(),
                text_at(&dp, "/status/message").unwrap_or_default()
            );
        }
        _ => {
            out.phase = "Pending";
            out.message = "waiting for the dataprotection BackupPolicy to be checked".into();
        }
    }
    Ok(out)
}

/// Reconciles one seed BackupPolicy.
///
/// # Errors
/// API errors (retried); what is wrong with the policy is its status, not an error.
pub async fn reconcile(p: Arc<seed::BackupPolicy>, ctx: Arc<Context>) -> Result<Action> {
    let ns = p.meta().namespace.clone().unwrap_or_default();
    let name = p.meta().name.clone().unwrap_or_default();
    let out = translate(&p, &ctx).await?;
    let old = p.status.clone().unwrap_or_default();
    let ready = out.phase == "Available";
    let status = BackupPolicyStatus {
        phase: Some(out.phase.into()),
        message: (!out.message.is_empty()).then(|| out.message.clone()),
        engine: out.engine.or(old.engine.clone()),
        action_set_name: out.action_set.or(old.action_set_name.clone()),
        backup_repo_name: out.repo.or(old.backup_repo_name.clone()),
        observed_generation: p.meta().generation,
        conditions: ready_condition(
            old.conditions.clone(),
            ready,
            out.phase,
            &out.message,
            p.meta().generation,
        ),
    };
    if status != old {
        let api: Api<seed::BackupPolicy> = Api::namespaced(ctx.client.clone(), &ns);
        replace_status(
            &api,
            &name,
            p.meta().resource_version.as_deref(),
            p.status.as_ref(),
            &status,
        )
        .await?;
    }
    Ok(Action::requeue(Duration::from_secs(if ready {
        60
    } else {
        3
    })))
}
