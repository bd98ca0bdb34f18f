//! Seed BackupSchedule -> a dataprotection BackupSchedule of the same name (owned by it):
//! one enabled schedule of the seed policy's method at `spec.schedule` (plus the enabled
//! Continuous `archive-wal` schedule when the policy can restore to a point in time, see
//! [`b::dp_schedule`]), each backup kept
//! `maxRetentionDays`, and `dprepo.io/keep-last` from `successfulJobsHistoryLimit` (else
//! the policy's `maxRetentionCount`). The backups it makes are dataprotection Backups
//! (`kubectl get backups.dataprotection.kubeblocks.io -l
//! dataprotection.kubeblocks.io/backup-schedule=<name>`).

use std::sync::Arc;
use std::time::Duration;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::Resource;

use crate::api::seed::backupschedule::BackupScheduleStatus;
use crate::api::seed::{self};
use crate::api::BackupSchedule;
use crate::builder::seed as b;
use crate::context::Context;
use crate::error::{KubeResultExt, Result};
use crate::reconcile::replace_status;

use super::{apply, owner_ref, ready_condition, text_at};

async fn translate(s: &seed::BackupSchedule, ctx: &Context) -> Result<BackupScheduleStatus> {
    let ns = s.meta().namespace.clone().unwrap_or_default();
    let policy_name = &s.spec.backup_policy_template_ref;
    let policies: Api<seed::BackupPolicy> = Api::namespaced(ctx.client.clone(), &ns);
    let state = |phase: &str, message: String| BackupScheduleStatus {
        phase: Some(phase.into()),
        message: Some(message),
        ..Default::default()
    };
    let Some(policy) = policies
        .get_opt(policy_name)
        .await
        .during(|| format!("get BackupPolicy.kubeblocks.io {ns}/{policy_name}"))?
    else {
        return Ok(state(
            "Unavailable",
            format!("spec.backupPolicyTemplateRef: BackupPolicy {policy_name} not found in namespace {ns}"),
        ));
    };
    if policy.status.as_ref().and_then(|st| st.phase.as_deref()) != Some("Available") {
        let why = policy
            .status
            .as_ref()
            .and_then(|st| st.message.clone())
            .unwrap_or_else(|| "not checked yet".into());
        return Ok(state(
            "Pending",
            format!(
                "spec.backupPolicyTemplateRef: BackupPolicy {policy_name} is not Available: {why}"
            ),
        ));
    }
    let mut dp = match b::dp_schedule(s, &policy) {
        Ok(d) => d,
        Err(msg) => return Ok(state("Unavailable", msg)),
    };
    dp.metadata.owner_references = Some(vec![owner_ref(s)]);
    let api: Api<BackupSchedule> = Api::namespaced(ctx.client.clone(), &ns);
    let dp = apply(&api, &dp).await?;
    let method = policy.spec.method.as_str();
    let last = text_at(&dp, &format!("/status/schedules/{method}/lastScheduleTime"));
    Ok(match text_at(&dp, "/status/phase").as_deref() {
        Some("Available") => BackupScheduleStatus {
            phase: Some("Available".into()),
            last_schedule_time: last,
            ..Default::default()
        },
        Some("Failed") => BackupScheduleStatus {
            phase: Some("Unavailable".into()),
            message: Some(format!(
                "BackupSchedule.dataprotection.kubeblocks.io {ns}/{} failed: {}",
                dp.meta().name.as_deref().unwrap_or_default(),
                text_at(&dp, "/status/failureReason").unwrap_or_default()
            )),
            last_schedule_time: last,
            ..Default::default()
        },
        _ => state(
            "Pending",
            "waiting for the dataprotection BackupSchedule".into(),
        ),
    })
}

/// Reconciles one seed BackupSchedule.
///
/// # Errors
/// API errors (retried).
pub async fn reconcile(s: Arc<seed::BackupSchedule>, ctx: Arc<Context>) -> Result<Action> {
    let ns = s.meta().namespace.clone().unwrap_or_default();
    let name = s.meta().name.clone().unwrap_or_default();
    let old = s.status.clone().unwrap_or_default();
    let mut status = translate(&s, &ctx).await?;
    let phase = status.phase.clone().unwrap_or_default();
    status.observed_generation = s.meta().generation;
    status.conditions = ready_condition(
        old.conditions.clone(),
        phase == "Available",
        &phase,
        status.message.as_deref().unwrap_or_default(),
        s.meta().generation,
    );
    if status != old {
        let api: Api<seed::BackupSchedule> = Api::namespaced(ctx.client.clone(), &ns);
        replace_status(
            &api,
            &name,
            s.meta().resource_version.as_deref(),
            s.status.as_ref(),
            &status,
        )
        .await?;
    }
    Ok(Action::requeue(Duration::from_secs(
        if phase == "Available" { 30 } else { 3 },
    )))
}
