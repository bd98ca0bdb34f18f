//! ActionSet and BackupPolicy: checked, then `Available` or `Unavailable` with a
//! message naming what is wrong, and `observedGeneration` (KubeBlocks' ActionSet and
//! BackupPolicy reconcilers). The checks are pure ([`check_action_set`],
//! [`check_policy`]); the reconcile fetches what they refer to and writes the status
//! when it changed.

use std::sync::Arc;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::json;

use super::patch_status;
use crate::api::actionset::{ActionSet, ActionSpec, BackupType};
use crate::api::backuppolicy::{BackupPolicy, BackupTarget};
use crate::api::backuprepo::BackupRepo;
use crate::api::common::AvailabilityPhase;
use crate::context::Context;
use crate::error::{KubeResultExt, Result};

fn check_action_spec(field: &str, a: &ActionSpec, problems: &mut Vec<String>) {
    match (&a.exec, &a.job) {
        (Some(_), Some(_)) => {
            problems.push(format!("{field}: has both exec and job; give exactly one"))
        }
        (None, None) => problems.push(format!(
            "{field}: has neither exec nor job; give exactly one"
        )),
        (None, Some(j)) => {
            if j.image.trim().is_empty() {
                problems.push(format!("{field}.job.image: empty"));
            }
            if j.command.is_empty() {
                problems.push(format!("{field}.job.command: empty"));
            }
        }
        (Some(e), None) => {
            if e.command.is_empty() {
                problems.push(format!("{field}.exec.command: empty"));
            }
        }
    }
}

/// What is wrong with an ActionSet as written (empty: nothing).
pub fn check_action_set(set: &ActionSet) -> Vec<String> {
    let mut problems = Vec::new();
    let spec = &set.spec;
    if spec.backup_type == BackupType::Differential {
        problems.push("spec.backupType: Differential backups are not supported".into());
    }
    if let Some(b) = &spec.backup {
        for (i, a) in b.pre_backup.iter().flatten().enumerate() {
            check_action_spec(&format!("spec.backup.preBackup[{i}]"), a, &mut problems);
        }
        for (i, a) in b.post_backup.iter().flatten().enumerate() {
            check_action_spec(&format!("spec.backup.postBackup[{i}]"), a, &mut problems);
        }
        if let Some(d) = &b.backup_data {
            if d.job.image.trim().is_empty() {
                problems.push("spec.backup.backupData.image: empty".into());
            }
            if d.job.command.is_empty() {
                problems.push("spec.backup.backupData.command: empty".into());
            }
        }
        if let Some(p) = &b.pre_delete {
            if p.image.trim().is_empty() || p.command.is_empty() {
                problems.push("spec.backup.preDelete: needs an image and a command".into());
            }
        }
    }
    if let Some(r) = &spec.restore {
        for (i, a) in r.post_ready.iter().flatten().enumerate() {
            check_action_spec(&format!("spec.restore.postReady[{i}]"), a, &mut problems);
        }
    }
    problems
}

fn has_selector(t: &BackupTarget) -> bool {
    t.pod_selector.is_some()
}

/// What is wrong with a BackupPolicy, given the ActionSets its methods name (`None`: not
/// found) and whether its repository exists (`None`: it names none).
pub fn check_policy(
    policy: &BackupPolicy,
    action_sets: &[(String, Option<ActionSet>)],
    repo_exists: Option<bool>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let spec = &policy.spec;
    let policy_target =
        spec.target.is_some() || spec.targets.as_ref().is_some_and(|t| !t.is_empty());
    if spec.target.is_some() && spec.targets.is_some() {
        problems.push("spec: give either target or targets, not both".into());
    }
    for t in spec.target.iter().chain(spec.targets.iter().flatten()) {
        if !has_selector(t) {
            problems.push(format!(
                "spec.target{}: has no podSelector",
                t.name
                    .as_deref()
                    .map(|n| format!(" {n}"))
                    .unwrap_or_default()
            ));
        }
    }
    if spec.backup_methods.is_empty() {
        problems.push("spec.backupMethods: empty".into());
    }
    for (i, m) in spec.backup_methods.iter().enumerate() {
        let field = format!("spec.backupMethods[{i}] ({})", m.name);
        let method_target = m.target.is_some() || m.targets.as_ref().is_some_and(|t| !t.is_empty());
        if !policy_target && !method_target {
            problems.push(format!(
                "{field}: has no target, and the policy has none either"
            ));
        }
        match m.action_set_name.as_deref().filter(|n| !n.is_empty()) {
            None => {
                if m.snapshot_volumes != Some(true) {
                    problems.push(format!(
                        "{field}: names no actionSetName and does not snapshot volumes"
                    ));
                }
            }
            Some(name) => match action_sets.iter().find(|(n, _)| n == name) {
                Some((_, Some(set))) => {
                    if set.status.as_ref().and_then(|s| s.phase)
                        == Some(AvailabilityPhase::Unavailable)
                    {
                        problems.push(format!("{field}: ActionSet {name} is Unavailable"));
                    }
                }
                _ => problems.push(format!("{field}: ActionSet {name} not found")),
            },
        }
    }
    if repo_exists == Some(false) {
        problems.push(format!(
            "spec.backupRepoName: BackupRepo {} not found",
            spec.backup_repo_name.as_deref().unwrap_or("")
        ));
    }
    problems
}

fn status_body(problems: &[String], generation: Option<i64>) -> serde_json::Value {
    let (phase, message) = if problems.is_empty() {
        (AvailabilityPhase::Available, None)
    } else {
        (AvailabilityPhase::Unavailable, Some(problems.join("; ")))
    };
    json!({"phase": phase.as_str(), "message": message, "observedGeneration": generation})
}

/// The `Unavailable` event: one series per set of problems (named by their fields), so
/// a policy that becomes unavailable for another reason shows the new reason rather than
/// counting up under the first one.
async fn unavailable<K>(ctx: &Context, object: &K, problems: &[String])
where
    K: kube::Resource<DynamicType = ()>,
{
    let note = problems.join("; ");
    let fields: Vec<&str> = problems
        .iter()
        .map(|p| p.split_once(": ").map_or(p.as_str(), |(f, _)| f))
        .collect();
    let action = crate::context::distinct_action(&format!("Validate {}", fields.join(",")), &note);
    ctx.event_as(object, EventType::Warning, "Unavailable", action, note)
        .await;
}

/// Reconciles an ActionSet.
///
/// # Errors
/// API errors.
pub async fn reconcile_action_set(set: Arc<ActionSet>, ctx: Arc<Context>) -> Result<Action> {
    let problems = check_action_set(&set);
    let name = set.metadata.name.clone().unwrap_or_default();
    let body = status_body(&problems, set.metadata.generation);
    let current = serde_json::to_value(set.status.clone().unwrap_or_default()).unwrap_or_default();
    if current.get("phase") != body.get("phase")
        || current.get("message").unwrap_or(&serde_json::Value::Null) != &body["message"]
        || current.get("observedGeneration") != body.get("observedGeneration")
    {
        let api: Api<ActionSet> = Api::all(ctx.client.clone());
        patch_status(&api, &name, set.metadata.resource_version.as_deref(), &body).await?;
        if !problems.is_empty() {
            unavailable(&ctx, set.as_ref(), &problems).await;
        }
    }
    Ok(Action::await_change())
}

/// Reconciles a BackupPolicy.
///
/// # Errors
/// API errors.
pub async fn reconcile_policy(policy: Arc<BackupPolicy>, ctx: Arc<Context>) -> Result<Action> {
    let name = policy.metadata.name.clone().unwrap_or_default();
    let ns = policy.metadata.namespace.clone().unwrap_or_default();
    let sets: Api<ActionSet> = Api::all(ctx.client.clone());
    let mut found = Vec::new();
    for m in &policy.spec.backup_methods {
        if let Some(n) = m.action_set_name.as_deref().filter(|n| !n.is_empty()) {
            if found.iter().any(|(f, _)| f == n) {
                continue;
            }
            let got = sets
                .get_opt(n)
                .await
                .during(|| format!("get ActionSet {n}"))?;
            found.push((n.to_string(), got));
        }
    }
    let repo_exists = match policy
        .spec
        .backup_repo_name
        .as_deref()
        .filter(|n| !n.is_empty())
    {
        None => None,
        Some(r) => Some(
            Api::<BackupRepo>::all(ctx.client.clone())
                .get_opt(r)
                .await
                .during(|| format!("get BackupRepo {r}"))?
                .is_some(),
        ),
    };
    let problems = check_policy(&policy, &found, repo_exists);
    let body = status_body(&problems, policy.metadata.generation);
    let current =
        serde_json::to_value(policy.status.clone().unwrap_or_default()).unwrap_or_default();
    if current.get("phase") != body.get("phase")
        || current.get("message").unwrap_or(&serde_json::Value::Null) != &body["message"]
        || current.get("observedGeneration") != body.get("observedGeneration")
    {
        let api: Api<BackupPolicy> = Api::namespaced(ctx.client.clone(), &ns);
        patch_status(
            &api,
            &name,
            policy.metadata.resource_version.as_deref(),
            &body,
        )
        .await?;
        if !problems.is_empty() {
            unavailable(&ctx, policy.as_ref(), &problems).await;
        }
    }
    // What it refers to may appear later: look again now and then.
    Ok(Action::requeue(std::time::Duration::from_secs(60)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(v: serde_json::Value) -> ActionSet {
        serde_json::from_value(
            json!({"apiVersion": "dataprotection.kubeblocks.io/v1alpha1",
            "kind": "ActionSet", "metadata": {"name": "a"}, "spec": v}),
        )
        .unwrap()
    }

    fn policy(v: serde_json::Value) -> BackupPolicy {
        serde_json::from_value(
            json!({"apiVersion": "dataprotection.kubeblocks.io/v1alpha1",
            "kind": "BackupPolicy", "metadata": {"name": "p", "namespace": "n"}, "spec": v}),
        )
        .unwrap()
    }

    #[test]
    fn action_specs_need_exactly_one_of_exec_and_job() {
        let s = set(json!({"backupType": "Full", "backup": {
            "preBackup": [{"exec": {"command": ["true"]}, "job": {"image": "i", "command": ["true"]}}, {}],
            "backupData": {"image": "i", "command": ["sh"]}}}));
        assert_eq!(
            check_action_set(&s),
            [
                "spec.backup.preBackup[0]: has both exec and job; give exactly one",
                "spec.backup.preBackup[1]: has neither exec nor job; give exactly one"
            ]
        );
        let ok = set(
            json!({"backupType": "Full", "backup": {"backupData": {"image": "i", "command": ["sh"]}}}),
        );
        assert!(check_action_set(&ok).is_empty());
        let diff = set(json!({"backupType": "Differential"}));
        assert!(check_action_set(&diff)[0].contains("Differential"));
    }

    #[test]
    fn policies_name_missing_action_sets_targets_and_repositories() {
        let p = policy(json!({"backupRepoName": "gone", "backupMethods": [
            {"name": "m1", "actionSetName": "missing"},
            {"name": "m2"}]}));
        let problems = check_policy(&p, &[("missing".into(), None)], Some(false));
        assert_eq!(
            problems,
            [
                "spec.backupMethods[0] (m1): has no target, and the policy has none either",
                "spec.backupMethods[0] (m1): ActionSet missing not found",
                "spec.backupMethods[1] (m2): has no target, and the policy has none either",
                "spec.backupMethods[1] (m2): names no actionSetName and does not snapshot volumes",
                "spec.backupRepoName: BackupRepo gone not found"
            ]
        );
        let good = policy(
            json!({"target": {"podSelector": {"matchLabels": {"a": "b"}}},
            "backupMethods": [{"name": "m", "actionSetName": "a"}]}),
        );
        let a = set(json!({"backupType": "Full"}));
        assert!(check_policy(&good, &[("a".into(), Some(a))], None).is_empty());
    }
}
