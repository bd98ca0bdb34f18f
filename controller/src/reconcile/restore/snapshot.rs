//! Restoring a volume snapshot backup (its method has `snapshotVolumes: true`): as
//! KubeBlocks does, each claim of `prepareDataConfig` is created with a `dataSource`
//! naming the backup's VolumeSnapshot of the claim's `volumeSource` (taken from the
//! source target pod: the `index`th selected pod, else the first), and the stage is done
//! when every such claim is Bound (the snapshot controller and the CSI driver provision
//! it with the snapshot's data). An ActionSet's prepareData Jobs, if any, run after that
//! on the same claims.

use k8s_openapi::api::core::v1::TypedLocalObjectReference;

use super::*;
use crate::reconcile::{create_if_absent, is_true};

/// The VolumeSnapshot of `volume` recorded by `backup` for target pod `pod` (any pod
/// when none of its actions names it).
pub fn snapshot_of(backup: &Backup, volume: &str, pod: Option<&str>) -> Option<String> {
    let actions = backup.status.as_ref()?.actions.as_ref()?;
    let find = |pod: Option<&str>| {
        actions
            .iter()
            .filter(|a| pod.is_none() || a.target_pod_name.as_deref() == pod)
            .flat_map(|a| a.volume_snapshots.iter().flatten())
            .find(|s| s.volume_name.as_deref() == Some(volume))
            .and_then(|s| s.name.clone())
    };
    find(pod).or_else(|| find(None))
}

impl Run<'_> {
    /// Claims from the backup's volume snapshots. `Ok(true)`: done (or not such a backup).
    pub(super) async fn restore_snapshots(&mut self, plan: &Plan) -> Result<Outcome<bool>> {
        let spec = self.restore.spec.backup.clone();
        let Some(backup) = self.get_backup(&spec.namespace, &spec.name).await? else {
            return Ok(Ok(true));
        };
        let snapshots = backup
            .status
            .as_ref()
            .and_then(|s| s.backup_method.as_ref())
            .is_some_and(|m| m.snapshot_volumes == Some(true));
        if !snapshots || self.restore.spec.prepare_data_config.is_none() {
            return Ok(Ok(true));
        }
        if is_true(self.conditions(), condition::PREPARE_DATA) {
            return Ok(Ok(true));
        }
        let pods: Vec<String> = status_target(&backup, spec.source_target_name.as_deref())
            .and_then(|t| t.selected_target_pods.clone())
            .unwrap_or_default();
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let mut all_bound = true;
        for index in 0..prepare_data_job_count(&self.restore) {
            let pod = pods.get(index).or(pods.first()).map(String::as_str);
            for (claim, _) in claims_for_index(&self.restore, index) {
                let cname = claim.metadata.name.clone().unwrap_or_default();
                let Some(volume) = claim.volume_config.volume_source.clone() else {
                    return Ok(Err(Fatal(format!(
                        "claim {cname}: volumeSource is required to restore from volume snapshots"
                    ))));
                };
                let Some(snapshot) = snapshot_of(&backup, &volume, pod) else {
                    return Ok(Err(Fatal(format!(
                        "backup {} has no volume snapshot of volume {volume} (claim {cname})",
                        spec.name
                    ))));
                };
                let mut pvc = claim_pvc(&self.restore, &claim);
                if let Some(s) = pvc.spec.as_mut() {
                    s.data_source = Some(TypedLocalObjectReference {
                        api_group: Some("snapshot.storage.k8s.io".into()),
                        kind: "VolumeSnapshot".into(),
                        name: snapshot,
                    });
                }
                let (stored, created) = create_if_absent(&pvcs, &pvc).await?;
                if created {
                    // One series per claim: a Restore may make many.
                    self.ctx
                        .event_related(
                            &self.restore,
                            &stored,
                            EventType::Normal,
                            event::CREATE_RESTORE_PVC,
                            format!("created pvc {}/{cname} from a volume snapshot", self.ns),
                        )
                        .await;
                }
                if stored.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") {
                    all_bound = false;
                }
            }
        }
        if !all_bound {
            self.condition(
                condition::PREPARE_DATA,
                "Unknown",
                reason::PROCESSING,
                "restoring volumes from volume snapshots",
            );
            return Ok(Ok(false));
        }
        if plan.prepare.is_empty() {
            // No prepareData Jobs follow: the snapshots were the whole stage.
            self.condition(
                condition::PREPARE_DATA,
                "True",
                reason::SUCCEED,
                "prepare data successfully (volumes restored from volume snapshots)",
            );
        }
        Ok(Ok(true))
    }
}

#[cfg(test)]
mod snapshot_tests {
    use super::*;
    use crate::api::backup::{ActionStatus, BackupStatus, VolumeSnapshotStatus};

    #[test]
    fn the_snapshot_of_the_source_pod_is_chosen() {
        let snap = |pod: &str, name: &str| ActionStatus {
            target_pod_name: Some(pod.into()),
            volume_snapshots: Some(vec![VolumeSnapshotStatus {
                name: Some(name.into()),
                volume_name: Some("data".into()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let mut b = Backup::new(
            "b",
            serde_json::from_value(
                json!({"backupPolicyName": "p", "backupMethod": "m", "deletionPolicy": "Delete"}),
            )
            .unwrap(),
        );
        b.status = Some(BackupStatus {
            actions: Some(vec![snap("db-0", "b-0-data"), snap("db-1", "b-1-data")]),
            ..Default::default()
        });
        assert_eq!(
            snapshot_of(&b, "data", Some("db-1")).as_deref(),
            Some("b-1-data")
        );
        assert_eq!(
            snapshot_of(&b, "data", Some("db-9")).as_deref(),
            Some("b-0-data")
        );
        assert_eq!(snapshot_of(&b, "logs", None), None);
    }
}
