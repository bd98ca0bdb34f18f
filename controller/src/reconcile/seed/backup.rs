//! Seed Backup -> a dataprotection Backup of the same name (owned by it) with the seed
//! policy's method and retention, in the policy's repository or, when `spec.storage`
//! overrides any storage field, in the repository of the merged storage block (label
//! `dataprotection.kubeblocks.io/backup-repo-name`). The seed status mirrors the
//! dataprotection Backup's: phase Pending/Running/Completed/Failed, startTime,
//! completionTime, size, location, snapshotName, message.

use std::sync::Arc;
use std::time::Duration;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::Resource;

use crate::api::seed::backup::BackupStatus;
use crate::api::seed::{self};
use crate::api::Backup;
use crate::builder::seed as b;
use crate::context::Context;
use crate::error::{KubeResultExt, Result};
use crate::reconcile::replace_status;

use super::backuppolicy::{ensure_repo, repo_state};
use super::{now_text, owner_ref, ready_condition, text_at};

fn waiting(phase: &str, message: String) -> BackupStatus {
    BackupStatus {
        phase: Some(phase.into()),
        message: Some(message),
        ..Default::default()
    }
}

async fn translate(bk: &seed::Backup, ctx: &Context) -> Result<BackupStatus> {
    let ns = bk.meta().namespace.clone().unwrap_or_default();
    let name = bk.meta().name.clone().unwrap_or_default();
    let policies: Api<seed::BackupPolicy> = Api::namespaced(ctx.client.clone(), &ns);
    let policy_name = &bk.spec.backup_policy_ref;
    let Some(policy) = policies
        .get_opt(policy_name)
        .await
        .during(|| format!("get BackupPolicy.kubeblocks.io {ns}/{policy_name}"))?
    else {
        return Ok(waiting(
            "Pending",
            format!("spec.backupPolicyRef: BackupPolicy {policy_name} not found in namespace {ns}"),
        ));
    };
    let storage = match &bk.spec.storage {
        Some(over) => policy.spec.storage.overridden_by(over),
        None => policy.spec.storage.clone(),
    };
    let dps: Api<Backup> = Api::namespaced(ctx.client.clone(), &ns);
    let existing = dps
        .get_opt(&name)
        .await
        .during(|| format!("get Backup.dataprotection.kubeblocks.io {ns}/{name}"))?;
    let dp = match existing {
        Some(dp) => {
            if !crate::reconcile::is_owned_by(&dp, bk.meta().uid.as_deref()) {
                return Ok(waiting(
                    "Failed",
                    format!("a dataprotection Backup {ns}/{name} not made for this Backup exists; rename this Backup"),
                ));
            }
            dp
        }
        None => {
            let phase = policy.status.as_ref().and_then(|s| s.phase.as_deref());
            if phase != Some("Available") {
                let why = policy
                    .status
                    .as_ref()
                    .and_then(|s| s.message.clone())
                    .unwrap_or_else(|| "not checked yet".into());
                return Ok(waiting(
                    "Pending",
                    format!(
                        "spec.backupPolicyRef: BackupPolicy {policy_name} is not Available: {why}"
                    ),
                ));
            }
            let repo = if bk.spec.storage.is_some() {
                let repo = match ensure_repo(ctx, &ns, &storage, b::key_ref(&policy)).await? {
                    Ok(r) => r,
                    Err(msg) => return Ok(waiting("Failed", msg)),
                };
                if let Some((failed, msg)) = repo_state(&repo) {
                    return Ok(waiting(if failed { "Failed" } else { "Pending" }, msg));
                }
                repo.meta().name.clone().unwrap_or_default()
            } else {
                policy
                    .status
                    .as_ref()
                    .and_then(|s| s.backup_repo_name.clone())
                    .unwrap_or_default()
            };
            let mut dp = match b::dp_backup(bk, &policy, &repo) {
                Ok(d) => d,
                Err(msg) => return Ok(waiting("Failed", msg)),
            };
            dp.metadata.owner_references = Some(vec![owner_ref(bk)]);
            let (dp, _) = crate::reconcile::create_if_absent(&dps, &dp).await?;
            dp
        }
    };
    let mut status = b::mirror_backup_status(&dp, &storage);
    if status.phase.as_deref() == Some("Pending")
        && text_at(
            &dp,
            "/metadata/labels/dataprotection.kubeblocks.io~1wait-repo-preparation",
        )
        .as_deref()
            == Some("true")
    {
        status.message = Some("waiting for the repository to be prepared in this namespace".into());
    }
    Ok(status)
}

/// Reconciles one seed Backup.
///
/// # Errors
/// API errors (retried).
pub async fn reconcile(bk: Arc<seed::Backup>, ctx: Arc<Context>) -> Result<Action> {
    let ns = bk.meta().namespace.clone().unwrap_or_default();
    let name = bk.meta().name.clone().unwrap_or_default();
    let old = bk.status.clone().unwrap_or_default();
    let mut status = translate(&bk, &ctx).await?;
    // A Backup that ended keeps its times; one that failed before any work began gets
    // its end time now.
    if status.phase.as_deref() == Some("Failed") && status.completion_time.is_none() {
        status.completion_time = old.completion_time.clone().or_else(|| Some(now_text()));
    }
    let phase = status.phase.clone().unwrap_or_default();
    status.conditions = ready_condition(
        old.conditions.clone(),
        phase == "Completed",
        &phase,
        status.message.as_deref().unwrap_or_default(),
        bk.meta().generation,
    );
    if status != old {
        let api: Api<seed::Backup> = Api::namespaced(ctx.client.clone(), &ns);
        replace_status(
            &api,
            &name,
            bk.meta().resource_version.as_deref(),
            bk.status.as_ref(),
            &status,
        )
        .await?;
    }
    Ok(match phase.as_str() {
        "Completed" => Action::requeue(Duration::from_secs(300)),
        "Failed" => Action::requeue(Duration::from_secs(60)),
        _ => Action::requeue(Duration::from_secs(3)),
    })
}
