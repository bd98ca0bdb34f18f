//! Seed Restore -> a dataprotection Restore of the same name (owned by it), then the
//! cluster. Stages (`status.stage`):
//!
//! - into a **new** cluster: `RestoringData` (the Restore fills claims named as the new
//!   cluster's StatefulSet will claim them, `<template>-<cluster>-<ordinal>`), then
//!   `CreatingCluster` (the StatefulSet made from the source cluster's, relabelled), done
//!   when its replicas are ready;
//! - over an **existing** cluster, `conflictPolicy: Replace` only (the default `Fail`
//!   refuses and touches nothing): `PreparingData` (the Restore fills staging claims
//!   `<claim>-restore-<uid8>`; the cluster runs on), `StoppingCluster` (replicas 0, wait
//!   for its pods to go), `SwappingData` (one Job per claim swaps the data, see
//!   [`b::SWAP_SCRIPT`]), `StartingCluster` (replicas back, done when ready). A failure
//!   while preparing leaves the cluster untouched; a failed swap rolls its claim back and
//!   the cluster is started on its old data (`RollingBack`), then the Restore is Failed.
//!
//! `pitr.targetTime` is the Restore's `restoreTime`, and the Restore's backup is then the
//! newest Running or Completed Continuous backup of the seed Backup's policy (the
//! dataprotection Restore picks the base full backup and checks the time); without one
//! the seed Restore fails naming `spec.pitr.targetTime`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::Resource;
use serde_json::json;

use crate::api::seed::restore::{ConflictPolicy, RestoreStatus};
use crate::api::seed::{self};
use crate::api::Restore;
use crate::builder::seed as b;
use crate::context::Context;
use crate::error::{KubeResultExt, Result};
use crate::reconcile::{create_if_absent, delete_background, patch_object, replace_status};

use super::{false_condition, now_text, owner_ref, ready_condition, text_at};

/// The stages, as written in `status.stage`.
pub mod stage {
    /// New cluster: the data is being restored into its claims.
    pub const RESTORING_DATA: &str = "RestoringData";
    /// New cluster: its StatefulSet is created and starting.
    pub const CREATING_CLUSTER: &str = "CreatingCluster";
    /// Replace: the data is being restored into staging claims.
    pub const PREPARING_DATA: &str = "PreparingData";
    /// Replace: the cluster is scaled to 0.
    pub const STOPPING_CLUSTER: &str = "StoppingCluster";
    /// Replace: the swap Jobs run.
    pub const SWAPPING_DATA: &str = "SwappingData";
    /// Replace: the cluster starts on the new data.
    pub const STARTING_CLUSTER: &str = "StartingCluster";
    /// Replace: a swap failed; the cluster starts on its old data.
    pub const ROLLING_BACK: &str = "RollingBack";
    /// Finished.
    pub const DONE: &str = "Done";
}

/// The label on a swap Job naming its seed Restore.
pub const SWAP_LABEL: &str = "dprepo.io/seed-restore-swap";

const POLL: Duration = Duration::from_secs(2);

fn staging_name(claim: &str, uid: &str) -> String {
    format!("{claim}-restore-{}", &uid[..uid.len().min(8)])
}

fn swap_job_name(restore: &str, i: usize) -> String {
    crate::builder::names::cut_name(&format!("{restore}-swap-{i}"))
}

/// Everything the steps need.
struct Plan {
    ns: String,
    name: String,
    uid: String,
    target: String,
    /// The dataprotection Backup restored (the seed Backup's).
    backup: String,
    /// The source cluster's StatefulSet.
    source: StatefulSet,
}

enum Step {
    /// Stay in the stage (poll again).
    Wait(Option<String>),
    /// Move to another stage.
    Go(&'static str),
    /// End Failed with this message.
    Fail(String),
    /// End Completed.
    Done,
}

async fn plan(r: &seed::Restore, ctx: &Context) -> Result<std::result::Result<Plan, Step>> {
    let ns = r.meta().namespace.clone().unwrap_or_default();
    let backups: Api<seed::Backup> = Api::namespaced(ctx.client.clone(), &ns);
    let backup_name = &r.spec.backup_ref;
    let Some(bk) = backups
        .get_opt(backup_name)
        .await
        .during(|| format!("get Backup.kubeblocks.io {ns}/{backup_name}"))?
    else {
        return Ok(Err(Step::Fail(format!(
            "spec.backupRef: Backup {backup_name} not found in namespace {ns}"
        ))));
    };
    let status = bk.status.clone().unwrap_or_default();
    match status.phase.as_deref() {
        Some("Completed") => {}
        Some("Failed") => {
            return Ok(Err(Step::Fail(format!(
                "spec.backupRef: Backup {backup_name} is Failed: {}",
                status.message.unwrap_or_default()
            ))))
        }
        other => {
            return Ok(Err(Step::Wait(Some(format!(
                "waiting for Backup {backup_name} to complete (phase {})",
                other.unwrap_or("unset")
            )))))
        }
    }
    let policies: Api<seed::BackupPolicy> = Api::namespaced(ctx.client.clone(), &ns);
    let policy_name = &bk.spec.backup_policy_ref;
    let Some(policy) = policies
        .get_opt(policy_name)
        .await
        .during(|| format!("get BackupPolicy.kubeblocks.io {ns}/{policy_name}"))?
    else {
        return Ok(Err(Step::Fail(format!(
            "BackupPolicy {policy_name} of Backup {backup_name} not found: the source cluster is unknown"
        ))));
    };
    let source_name = &policy.spec.cluster_ref.name;
    let sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(source) = sets
        .get_opt(source_name)
        .await
        .during(|| format!("get StatefulSet {ns}/{source_name}"))?
    else {
        return Ok(Err(Step::Fail(format!(
            "the source cluster {source_name} (StatefulSet) of Backup {backup_name} is gone: its spec is what a new cluster is made from"
        ))));
    };
    let mut backup = status.backup_name.unwrap_or_else(|| backup_name.clone());
    if let Some(pitr) = &r.spec.pitr {
        // Point in time: the logs come from a Continuous backup of the same policy (the
        // dataprotection Restore then picks the base full backup and checks the time
        // against the recoverable ranges).
        let dps: Api<crate::api::Backup> = Api::namespaced(ctx.client.clone(), &ns);
        let selector = format!(
            "{}={policy_name},{}=Continuous",
            crate::api::labels::label::BACKUP_POLICY,
            crate::api::labels::label::BACKUP_TYPE
        );
        let mut continuous: Vec<crate::api::Backup> = dps
            .list(&ListParams::default().labels(&selector))
            .await
            .during(|| format!("list continuous Backups of {policy_name}"))?
            .items
            .into_iter()
            .filter(|c| {
                matches!(
                    text_at(c, "/status/phase").as_deref(),
                    Some("Running" | "Completed")
                )
            })
            .collect();
        continuous.sort_by_key(|c| c.meta().creation_timestamp.clone().map(|t| t.0));
        let Some(c) = continuous.last() else {
            return Ok(Err(Step::Fail(format!(
                "spec.pitr.targetTime: no continuous backup (WAL or binlog archive) of BackupPolicy {policy_name} exists, so {} cannot be restored to; without pitr the Backup itself is restored",
                pitr.target_time
            ))));
        };
        backup = c.meta().name.clone().unwrap_or_default();
    }
    Ok(Ok(Plan {
        ns,
        name: r.meta().name.clone().unwrap_or_default(),
        uid: r.meta().uid.clone().unwrap_or_default(),
        target: r.spec.cluster_ref.name.clone(),
        backup,
        source,
    }))
}

/// The dataprotection Restore's state: `Ok(true)` Completed, `Ok(false)` running,
/// `Err(message)` Failed.
async fn run_restore(
    r: &seed::Restore,
    ctx: &Context,
    p: &Plan,
    claims: &[(String, &b::ClusterClaim)],
) -> Result<std::result::Result<bool, String>> {
    let mut dp = match b::dp_restore(r, &p.backup, claims) {
        Ok(d) => d,
        Err(e) => return Ok(Err(e)),
    };
    dp.metadata.owner_references = Some(vec![owner_ref(r)]);
    let api: Api<Restore> = Api::namespaced(ctx.client.clone(), &p.ns);
    let (dp, _) = create_if_absent(&api, &dp).await?;
    Ok(match text_at(&dp, "/status/phase").as_deref() {
        Some("Completed") => Ok(true),
        Some("Failed") => {
            let v = serde_json::to_value(&dp).unwrap_or_default();
            let actions: Vec<String> = v
                .pointer("/status/actions/prepareData")
                .and_then(|a| a.as_array())
                .into_iter()
                .flatten()
                .filter(|a| a["status"] == "Failed")
                .filter_map(|a| a["message"].as_str().map(str::to_string))
                .collect();
            let why = if actions.is_empty() {
                false_condition(&dp).unwrap_or_default()
            } else {
                actions.join("; ")
            };
            let refused_time = r.spec.pitr.is_some()
                && v.pointer("/status/conditions")
                    .and_then(|c| c.as_array())
                    .into_iter()
                    .flatten()
                    .any(|c| {
                        c["type"] == crate::api::restore::condition::VALIDATION_PASSED
                            && c["status"] == "False"
                    });
            if refused_time {
                // The time is what validation of a point-in-time restore checks; its
                // message lists the ranges that can be restored.
                return Ok(Err(format!(
                    "spec.pitr.targetTime: {why} (Restore.dataprotection.kubeblocks.io {}/{}); nothing was restored",
                    p.ns, p.name
                )));
            }
            Err(format!(
                "restoring the data failed (Restore.dataprotection.kubeblocks.io {}/{}): {why}",
                p.ns, p.name
            ))
        }
        _ => Ok(false),
    })
}

async fn target_sts(ctx: &Context, p: &Plan) -> Result<Option<StatefulSet>> {
    let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &p.ns);
    api.get_opt(&p.target)
        .await
        .during(|| format!("get StatefulSet {}/{}", p.ns, p.target))
}

/// The claims of `sts` as it runs `replicas` replicas (it is scaled to 0 while stopped).
fn claims_at(
    sts: &StatefulSet,
    target: &str,
    replicas: Option<i32>,
) -> std::result::Result<Vec<b::ClusterClaim>, String> {
    let mut sts = sts.clone();
    if let (Some(spec), Some(n)) = (sts.spec.as_mut(), replicas) {
        spec.replicas = Some(n);
    }
    b::cluster_claims(&sts, target)
}

fn ready_replicas(sts: &StatefulSet) -> (i32, i32) {
    let want = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ready = sts
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    (want, ready)
}

async fn scale(ctx: &Context, p: &Plan, replicas: i32) -> Result<()> {
    let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &p.ns);
    patch_object(
        &api,
        &p.target,
        None,
        json!({"spec": {"replicas": replicas}}),
    )
    .await?;
    Ok(())
}

/// The pods of the target cluster still there.
async fn cluster_pods(ctx: &Context, p: &Plan, sts: &StatefulSet) -> Result<usize> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &p.ns);
    let selector = sts
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods = api
        .list(&ListParams::default().labels(&selector))
        .await
        .during(|| format!("list pods of {}", p.target))?;
    Ok(pods
        .items
        .iter()
        .filter(|pod| {
            pod.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with(&format!("{}-", p.target)))
        })
        .count())
}

async fn step(
    r: &seed::Restore,
    ctx: &Context,
    p: &Plan,
    current: &str,
    status: &mut RestoreStatus,
) -> Result<Step> {
    let target = target_sts(ctx, p).await?;
    match current {
        "" => {
            if target.is_none() {
                return Ok(Step::Go(stage::RESTORING_DATA));
            }
            match r.spec.conflict_policy.unwrap_or_default() {
                ConflictPolicy::Fail => Ok(Step::Fail(format!(
                    "spec.clusterRef.name: cluster {} exists and spec.conflictPolicy is Fail (the default): nothing was touched; restore into a new cluster, or set conflictPolicy: Replace to replace its data",
                    p.target
                ))),
                ConflictPolicy::Replace => Ok(Step::Go(stage::PREPARING_DATA)),
            }
        }
        stage::RESTORING_DATA => {
            let claims = match b::cluster_claims(&p.source, &p.target) {
                Ok(c) => c,
                Err(e) => return Ok(Step::Fail(e)),
            };
            let named: Vec<(String, &b::ClusterClaim)> =
                claims.iter().map(|c| (c.name.clone(), c)).collect();
            Ok(match run_restore(r, ctx, p, &named).await? {
                Ok(true) => Step::Go(stage::CREATING_CLUSTER),
                Ok(false) => Step::Wait(None),
                Err(e) => Step::Fail(e),
            })
        }
        stage::CREATING_CLUSTER => {
            let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &p.ns);
            let (sts, _) = create_if_absent(&api, &b::new_cluster(&p.source, &p.target)).await?;
            let (want, ready) = ready_replicas(&sts);
            Ok(if ready >= want {
                Step::Done
            } else {
                Step::Wait(Some(format!(
                    "{ready} of {want} replicas of {} ready",
                    p.target
                )))
            })
        }
        stage::PREPARING_DATA => {
            let Some(sts) = target else {
                return Ok(Step::Fail(format!(
                    "cluster {} disappeared during the restore",
                    p.target
                )));
            };
            let claims = match b::cluster_claims(&sts, &p.target) {
                Ok(c) => c,
                Err(e) => return Ok(Step::Fail(e)),
            };
            let named: Vec<(String, &b::ClusterClaim)> = claims
                .iter()
                .map(|c| (staging_name(&c.name, &p.uid), c))
                .collect();
            Ok(match run_restore(r, ctx, p, &named).await? {
                Ok(true) => {
                    status.replicas_before = Some(ready_replicas(&sts).0);
                    Step::Go(stage::STOPPING_CLUSTER)
                }
                Ok(false) => Step::Wait(None),
                Err(e) => {
                    // The staging claims hold nothing anyone needs.
                    let pvcs: Api<PersistentVolumeClaim> =
                        Api::namespaced(ctx.client.clone(), &p.ns);
                    for (name, _) in &named {
                        delete_background(&pvcs, name).await?;
                    }
                    Step::Fail(format!("{e}; cluster {} was not touched", p.target))
                }
            })
        }
        stage::STOPPING_CLUSTER => {
            let Some(sts) = target else {
                return Ok(Step::Fail(format!(
                    "cluster {} disappeared during the restore",
                    p.target
                )));
            };
            if ready_replicas(&sts).0 != 0 {
                scale(ctx, p, 0).await?;
            }
            let left = cluster_pods(ctx, p, &sts).await?;
            Ok(if left == 0 {
                Step::Go(stage::SWAPPING_DATA)
            } else {
                Step::Wait(Some(format!(
                    "waiting for {left} pod(s) of {} to stop",
                    p.target
                )))
            })
        }
        stage::SWAPPING_DATA => {
            let Some(sts) = target else {
                return Ok(Step::Fail(format!(
                    "cluster {} disappeared during the restore",
                    p.target
                )));
            };
            let claims = match claims_at(&sts, &p.target, status.replicas_before) {
                Ok(c) => c,
                Err(e) => return Ok(Step::Fail(e)),
            };
            let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &p.ns);
            let mut done = 0;
            let mut failed = Vec::new();
            for (i, c) in claims.iter().enumerate() {
                let name = swap_job_name(&p.name, i);
                let labels = BTreeMap::from([(SWAP_LABEL.to_string(), p.name.clone())]);
                let mut job = match b::swap_job(
                    &name,
                    &p.ns,
                    &c.name,
                    &staging_name(&c.name, &p.uid),
                    &ctx.config.tools_image,
                    labels,
                ) {
                    Ok(j) => j,
                    Err(e) => return Ok(Step::Fail(e)),
                };
                job.metadata.owner_references = Some(vec![owner_ref(r)]);
                let (job, _) = create_if_absent(&jobs, &job).await?;
                let conds = job
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.clone())
                    .unwrap_or_default();
                if conds
                    .iter()
                    .any(|c| c.type_ == "Complete" && c.status == "True")
                {
                    done += 1;
                } else if conds
                    .iter()
                    .any(|c| c.type_ == "Failed" && c.status == "True")
                {
                    failed.push(format!("claim {}: swap Job {name} failed", c.name));
                }
            }
            Ok(if !failed.is_empty() {
                status.message = Some(format!("{}; the old data was put back", failed.join("; ")));
                Step::Go(stage::ROLLING_BACK)
            } else if done == claims.len() {
                Step::Go(stage::STARTING_CLUSTER)
            } else {
                Step::Wait(None)
            })
        }
        stage::STARTING_CLUSTER | stage::ROLLING_BACK => {
            let Some(sts) = target else {
                return Ok(Step::Fail(format!(
                    "cluster {} disappeared during the restore",
                    p.target
                )));
            };
            let want = status.replicas_before.unwrap_or(1);
            if ready_replicas(&sts).0 != want {
                scale(ctx, p, want).await?;
                return Ok(Step::Wait(None));
            }
            let (_, ready) = ready_replicas(&sts);
            if ready < want {
                return Ok(Step::Wait(Some(format!(
                    "{ready} of {want} replicas of {} ready",
                    p.target
                ))));
            }
            // Started: the staging claims and swap Jobs are no longer needed.
            if let Ok(claims) = claims_at(&sts, &p.target, status.replicas_before) {
                let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &p.ns);
                let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &p.ns);
                for (i, c) in claims.iter().enumerate() {
                    delete_background(&jobs, &swap_job_name(&p.name, i)).await?;
                    delete_background(&pvcs, &staging_name(&c.name, &p.uid)).await?;
                }
            }
            Ok(if current == stage::ROLLING_BACK {
                Step::Fail(status.message.clone().unwrap_or_else(|| {
                    "swapping the data failed; the old data was put back".into()
                }))
            } else {
                Step::Done
            })
        }
        other => Ok(Step::Fail(format!(
            "unknown stage {other:?} in status.stage"
        ))),
    }
}

/// Reconciles one seed Restore.
///
/// # Errors
/// API errors (retried).
pub async fn reconcile(r: Arc<seed::Restore>, ctx: Arc<Context>) -> Result<Action> {
    let old = r.status.clone().unwrap_or_default();
    if matches!(old.phase.as_deref(), Some("Completed" | "Failed")) {
        return Ok(Action::await_change());
    }
    let mut status = old.clone();
    if status.start_time.is_none() {
        status.start_time = Some(now_text());
    }
    let current = old.stage.clone().unwrap_or_default();
    let outcome = match plan(&r, &ctx).await? {
        Err(s) => s,
        Ok(p) => {
            status.restore_name = Some(p.name.clone());
            step(&r, &ctx, &p, &current, &mut status).await?
        }
    };
    let mut requeue = Some(POLL);
    match outcome {
        Step::Wait(msg) => {
            status.phase = Some(
                if current.is_empty() {
                    "Pending"
                } else {
                    "Running"
                }
                .into(),
            );
            if msg.is_some() {
                status.message = msg;
            }
        }
        Step::Go(next) => {
            status.phase = Some("Running".into());
            status.stage = Some(next.into());
            if next != stage::ROLLING_BACK {
                status.message = None;
            }
            requeue = Some(Duration::from_millis(200));
        }
        Step::Fail(msg) => {
            status.phase = Some("Failed".into());
            status.message = Some(msg);
            status.completion_time = Some(now_text());
            requeue = None;
        }
        Step::Done => {
            status.phase = Some("Completed".into());
            status.stage = Some(stage::DONE.into());
            status.message = None;
            status.completion_time = Some(now_text());
            requeue = None;
        }
    }
    let phase = status.phase.clone().unwrap_or_default();
    status.conditions = ready_condition(
        old.conditions.clone(),
        phase == "Completed",
        &phase,
        status.message.as_deref().unwrap_or_default(),
        r.meta().generation,
    );
    if status != old {
        if phase == "Failed" {
            ctx.event(
                r.as_ref(),
                kube::runtime::events::EventType::Warning,
                "RestoreFailed",
                status.message.clone().unwrap_or_default(),
            )
            .await;
        }
        let ns = r.meta().namespace.clone().unwrap_or_default();
        let name = r.meta().name.clone().unwrap_or_default();
        let api: Api<seed::Restore> = Api::namespaced(ctx.client.clone(), &ns);
        replace_status(
            &api,
            &name,
            r.meta().resource_version.as_deref(),
            r.status.as_ref(),
            &status,
        )
        .await?;
    }
    Ok(match requeue {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}
