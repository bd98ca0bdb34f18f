//! `dprepo-controller create-backup`: what a BackupSchedule's CronJob pod runs (in place
//! of KubeBlocks' `kubectl create` script), as the pod's own service account.
//!
//! It creates one Backup named `<name-prefix>-<YYYYMMDDhhmmss>` (UTC, now), labelled
//! `dataprotection.kubeblocks.io/autobackup: "true"` and `…/backup-schedule: <schedule>`,
//! with spec `{backupPolicyName, backupMethod, retentionPeriod, parameters}`: the object
//! KubeBlocks' script writes. With `--require-completed-full METHOD` (Incremental
//! methods) it first looks for a Completed Backup labelled `backup-policy=<policy>` and
//! `backup-type=Full` whose method is METHOD, and without one creates nothing and
//! succeeds, as KubeBlocks' script does ("No completed full backups found").

use kube::api::{Api, ListParams, PostParams};
use kube::Client;

use crate::api::backup::{BackupPhase, BackupSpec};
use crate::api::common::ParameterPair;
use crate::api::labels::label;
use crate::api::retention::RetentionPeriod;
use crate::api::Backup;

/// The arguments of `create-backup`.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateBackupArgs {
    /// The namespace of the Backup (the schedule's).
    pub namespace: String,
    /// The Backup's name before `-<timestamp>`.
    pub name_prefix: String,
    /// `spec.backupPolicyName`.
    pub backup_policy: String,
    /// `spec.backupMethod`.
    pub backup_method: String,
    /// The `backup-schedule` label.
    pub backup_schedule: String,
    /// `spec.retentionPeriod`.
    pub retention_period: Option<String>,
    /// `spec.parameters`, as JSON (`[{"name":..,"value":..}]`).
    pub parameters: Option<String>,
    /// For Incremental methods: the method a Completed Full backup must exist of.
    pub require_completed_full: Option<String>,
}

/// What `create-backup` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    /// The Backup of this name was created.
    Created(String),
    /// No Completed Full backup of the compatible method exists: nothing was created.
    NoFullBackup,
}

/// The Backup `args` describe, created at `now`.
///
/// # Errors
/// `--parameters` that is not a JSON list of `{name, value}`.
pub fn backup_object(
    args: &CreateBackupArgs,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Backup> {
    let parameters: Option<Vec<ParameterPair>> = match &args.parameters {
        None => None,
        Some(text) => Some(serde_json::from_str(text).map_err(|e| {
            anyhow::anyhow!("--parameters {text:?} is not a JSON list of {{name, value}}: {e}")
        })?),
    };
    let name = format!("{}-{}", args.name_prefix, now.format("%Y%m%d%H%M%S"));
    let mut backup = Backup::new(
        &name,
        BackupSpec {
            backup_policy_name: args.backup_policy.clone(),
            backup_method: args.backup_method.clone(),
            deletion_policy: Default::default(),
            retention_period: args.retention_period.clone().map(RetentionPeriod),
            parent_backup_name: None,
            parameters: parameters.filter(|p| !p.is_empty()),
        },
    );
    backup.metadata.namespace = Some(args.namespace.clone());
    backup.metadata.labels = Some(
        [
            (label::AUTO_BACKUP.to_string(), "true".to_string()),
            (
                label::BACKUP_SCHEDULE.to_string(),
                args.backup_schedule.clone(),
            ),
        ]
        .into(),
    );
    Ok(backup)
}

/// Whether `backups` hold a Completed one of `method` (the caller lists them by the
/// `backup-policy` and `backup-type=Full` labels).
pub fn has_completed_full(backups: &[Backup], method: &str) -> bool {
    backups
        .iter()
        .any(|b| b.spec.backup_method == method && b.phase() == Some(BackupPhase::Completed))
}

/// Runs `create-backup` against the cluster of `client`.
///
/// # Errors
/// Bad `--parameters`, or the API server refusing the list or the creation (an existing
/// Backup of the same name included: the Job's retry comes a second later, with another
/// name).
pub async fn run(client: Client, args: &CreateBackupArgs) -> anyhow::Result<CreateOutcome> {
    let api: Api<Backup> = Api::namespaced(client, &args.namespace);
    if let Some(full) = &args.require_completed_full {
        let selector = format!(
            "{}={},{}=Full",
            label::BACKUP_POLICY,
            args.backup_policy,
            label::BACKUP_TYPE
        );
        let list = api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "listing the Full backups of policy {}/{}: {e}",
                    args.namespace,
                    args.backup_policy
                )
            })?;
        if !has_completed_full(&list.items, full) {
            return Ok(CreateOutcome::NoFullBackup);
        }
    }
    let backup = backup_object(args, chrono::Utc::now())?;
    let name = backup.metadata.name.clone().unwrap_or_default();
    api.create(&PostParams::default(), &backup)
        .await
        .map_err(|e| anyhow::anyhow!("creating Backup {}/{name}: {e}", args.namespace))?;
    Ok(CreateOutcome::Created(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args() -> CreateBackupArgs {
        CreateBackupArgs {
            namespace: "demo".into(),
            name_prefix: "pg-cluster-hourly".into(),
            backup_policy: "pg-policy".into(),
            backup_method: "incr".into(),
            backup_schedule: "pg-schedule".into(),
            retention_period: Some("1d".into()),
            parameters: Some(r#"[{"name":"level","value":"1"}]"#.into()),
            require_completed_full: None,
        }
    }

    #[test]
    fn the_backup_is_the_one_kubeblocks_script_writes() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-07T05:04:03Z")
            .unwrap()
            .to_utc();
        let b = backup_object(&args(), now).unwrap();
        assert_eq!(
            serde_json::to_value(&b).unwrap(),
            json!({
                "apiVersion": "dataprotection.kubeblocks.io/v1alpha1",
                "kind": "Backup",
                "metadata": {
                    "name": "pg-cluster-hourly-20261207050403",
                    "namespace": "demo",
                    "labels": {
                        "dataprotection.kubeblocks.io/autobackup": "true",
                        "dataprotection.kubeblocks.io/backup-schedule": "pg-schedule"
                    }
                },
                "spec": {
                    "backupPolicyName": "pg-policy",
                    "backupMethod": "incr",
                    "deletionPolicy": "Delete",
                    "retentionPeriod": "1d",
                    "parameters": [{"name": "level", "value": "1"}]
                }
            })
        );
        let mut bad = args();
        bad.parameters = Some("level=1".into());
        assert!(backup_object(&bad, now)
            .unwrap_err()
            .to_string()
            .starts_with("--parameters \"level=1\" is not a JSON list"));
    }

    #[test]
    fn only_a_completed_full_of_the_compatible_method_counts() {
        let backup = |method: &str, phase: &str| -> Backup {
            serde_json::from_value(json!({
                "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "Backup",
                "metadata": {"name": "b"},
                "spec": {"backupPolicyName": "p", "backupMethod": method, "deletionPolicy": "Delete"},
                "status": {"phase": phase}
            }))
            .unwrap()
        };
        assert!(!has_completed_full(&[], "full"));
        assert!(!has_completed_full(
            &[backup("full", "Running"), backup("other", "Completed")],
            "full"
        ));
        assert!(has_completed_full(
            &[backup("full", "Failed"), backup("full", "Completed")],
            "full"
        ));
        assert!(!has_completed_full(&[backup("full", "Completed")], ""));
    }
}
