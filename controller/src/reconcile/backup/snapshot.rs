//! Volume snapshot backups (`snapshotVolumes: true` on the backup method): per target
//! pod, the action `createVolumeSnapshot-[<target>-]<i>` (after backupData, before
//! postBackup, as KubeBlocks orders them) creates a `snapshot.storage.k8s.io/v1`
//! VolumeSnapshot of each claim behind the method's `targetVolumes.volumes`, named
//! `<backup>[-<target>]-<i>-<volume>`, labelled like the Backup's Jobs and owned by the
//! Backup (so deleting the Backup deletes them; `Retain` keeps Backup and snapshots),
//! and waits until each is `readyToUse`. The action then records the snapshots (name,
//! content, volume, size) and `totalSize` (the sum of their `restoreSize`); the Backup's
//! `status.volumeSnapshots` gets them when it completes.
//!
//! Failures say what is missing: the VolumeSnapshot API (CRDs) not installed, a target
//! volume that is not a claim or does not exist, a CSI volume without a
//! VolumeSnapshotClass for its driver (KubeBlocks' check; a volume that is not CSI is
//! left to the snapshot controller), or the snapshot controller's own error on the
//! snapshot.

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};

use super::*;
use crate::api::actionset::{ActionSetSpec, BackupType};
use crate::api::backup::VolumeSnapshotStatus;

/// The group of the VolumeSnapshot API.
pub const SNAPSHOT_GROUP: &str = "snapshot.storage.k8s.io";

/// What a volume snapshot action needs: (volume name, claim name) per target volume.
#[derive(Clone, Debug)]
pub(super) struct SnapshotPlan {
    pub prefix: String,
    pub index: usize,
    pub claims: Vec<(String, String)>,
}

/// The ActionSet of a snapshot-only method (none named): a Full backup with no steps.
pub(super) fn no_action_set() -> ActionSet {
    let spec: ActionSetSpec = serde_json::from_value(json!({ "backupType": "Full" }))
        .expect("an ActionSetSpec with only backupType decodes");
    debug_assert_eq!(spec.backup_type, BackupType::Full);
    ActionSet::new("", spec)
}

/// The action name: `createVolumeSnapshot-[<target>-]<index>`.
pub fn snapshot_action_name(target: &BackupTarget, index: usize) -> String {
    match target.name.as_deref().filter(|n| !n.is_empty()) {
        Some(t) => format!("createVolumeSnapshot-{t}-{index}"),
        None => format!("createVolumeSnapshot-{index}"),
    }
}

/// The VolumeSnapshot name: `<prefix>-<index>-<volume>` (KubeBlocks'
/// `GetBackupVolumeSnapshotName`), cut to 253.
pub fn volume_snapshot_name(prefix: &str, volume: &str, index: usize) -> String {
    let mut name = format!("{prefix}-{index}-{volume}");
    name.truncate(253);
    name
}

/// The claims behind `volumes` on `pod`, as (volume, claim).
///
/// # Errors
/// A volume that is not a PersistentVolumeClaim, or none found (KubeBlocks' messages).
pub fn target_claims(
    pod: &Pod,
    volumes: &[String],
) -> std::result::Result<Vec<(String, String)>, String> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or("");
    let mut out = Vec::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        if !volumes.contains(&v.name) {
            continue;
        }
        match &v.persistent_volume_claim {
            Some(c) => out.push((v.name.clone(), c.claim_name.clone())),
            None => {
                return Err(format!(
                    "the type of volume \"{}\" is not PersistentVolumeClaim on pod \"{pod_name}\"",
                    v.name
                ))
            }
        }
    }
    if out.is_empty() {
        return Err(format!(
            "can not find any volume by targetVolumes {volumes:?} on pod \"{pod_name}\""
        ));
    }
    Ok(out)
}

fn snapshot_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(SNAPSHOT_GROUP, "v1", kind), plural)
}

impl Reconciler<'_> {
    /// The snapshot action of target pod `index`, when the method snapshots volumes.
    pub(super) fn plan_snapshot(
        &self,
        method: &BackupMethod,
        target: &BackupTarget,
        pod: &Pod,
        index: usize,
    ) -> Option<(String, std::result::Result<SnapshotPlan, String>)> {
        if method.snapshot_volumes != Some(true) {
            return None;
        }
        let name = snapshot_action_name(target, index);
        let volumes = method
            .target_volumes
            .as_ref()
            .and_then(|t| t.volumes.clone())
            .unwrap_or_default();
        if volumes.is_empty() {
            return Some((
                name,
                Err("targetVolumes is required for snapshotVolumes".to_string()),
            ));
        }
        let mut prefix = self.name.clone();
        if let Some(t) = target.name.as_deref().filter(|n| !n.is_empty()) {
            prefix = format!("{prefix}-{t}");
        }
        let plan = target_claims(pod, &volumes).map(|claims| SnapshotPlan {
            prefix,
            index,
            claims,
        });
        Some((name, plan))
    }

    /// Creates the plan's VolumeSnapshots if absent and reads them into `slot`:
    /// `Some(Ok)` all ready, `Some(Err)` failed, `None` still waiting.
    pub(super) async fn run_snapshot(
        &self,
        plan: &SnapshotPlan,
        slot: &mut ActionStatus,
    ) -> Result<Option<std::result::Result<(), String>>> {
        let action = slot.name.clone().unwrap_or_default();
        slot.action_type = Some(ActionType::None);
        let fail = |slot: &mut ActionStatus, reason: String| {
            let reason = format!("action {action}: {reason}");
            slot.phase = Some(ActionPhase::Failed);
            slot.failure_reason = Some(reason.clone());
            Ok(Some(Err(reason)))
        };
        let group_version = format!("{SNAPSHOT_GROUP}/v1");
        match self.ctx.client.list_api_group_resources(&group_version).await {
            Ok(list) if list.resources.iter().any(|r| r.name == "volumesnapshots") => {}
            Ok(_) | Err(kube::Error::Api(_)) => {
                return fail(
                    slot,
                    format!("the VolumeSnapshot API ({group_version}) is not installed in this cluster: install the snapshot CRDs and a snapshot controller, or back up without snapshotVolumes"),
                )
            }
            Err(e) => return Err(Error::kube(format!("discover {group_version}"), e)),
        }
        let snaps: Api<DynamicObject> = Api::namespaced_with(
            self.ctx.client.clone(),
            &self.ns,
            &snapshot_resource("VolumeSnapshot", "volumesnapshots"),
        );
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let mut statuses = Vec::new();
        let mut total: u64 = 0;
        let mut all_ready = true;
        let mut first_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time> = None;
        for (volume, claim) in &plan.claims {
            let name = volume_snapshot_name(&plan.prefix, volume, plan.index);
            let snap = match snaps
                .get_opt(&name)
                .await
                .during(|| format!("get VolumeSnapshot {}/{name}", self.ns))?
            {
                Some(s) => s,
                None => {
                    let Some(pvc) = claims
                        .get_opt(claim)
                        .await
                        .during(|| format!("get PersistentVolumeClaim {}/{claim}", self.ns))?
                    else {
                        return fail(
                            slot,
                            format!("the claim {claim} of volume {volume} does not exist"),
                        );
                    };
                    let class = match self.snapshot_class(&pvc).await? {
                        Ok(c) => c,
                        Err(reason) => return fail(slot, reason),
                    };
                    let mut spec = json!({"source": {"persistentVolumeClaimName": claim}});
                    if let Some(c) = class {
                        spec["volumeSnapshotClassName"] = json!(c);
                    }
                    let obj = json!({
                        "apiVersion": group_version,
                        "kind": "VolumeSnapshot",
                        "metadata": {
                            "name": name,
                            "namespace": self.ns,
                            "labels": backup_job::workload_labels(self.b),
                            "ownerReferences": crate::builder::controller_ref(self.b).map(|o| vec![o]),
                        },
                        "spec": spec,
                    });
                    let obj: DynamicObject = serde_json::from_value(obj)
                        .map_err(|e| Error::Other(format!("VolumeSnapshot {name}: {e}")))?;
                    let created = match snaps.create(&PostParams::default(), &obj).await {
                        Ok(s) => s,
                        Err(kube::Error::Api(s)) if s.code == 409 => snaps
                            .get(&name)
                            .await
                            .during(|| format!("get VolumeSnapshot {name}"))?,
                        Err(kube::Error::Api(s)) if s.code == 422 || s.code == 400 => {
                            return fail(
                                slot,
                                format!(
                                    "the API server refused VolumeSnapshot {name}: {}",
                                    s.message
                                ),
                            )
                        }
                        Err(e) => {
                            return Err(Error::kube(format!("create VolumeSnapshot {name}"), e))
                        }
                    };
                    // One series per VolumeSnapshot: a Backup makes one per volume.
                    let related = k8s_openapi::api::core::v1::ObjectReference {
                        api_version: Some(group_version.to_string()),
                        kind: Some("VolumeSnapshot".into()),
                        name: Some(name.clone()),
                        namespace: Some(self.ns.clone()),
                        uid: created.metadata.uid.clone(),
                        ..Default::default()
                    };
                    self.ctx
                        .event_related_ref(
                            self.b,
                            related,
                            EventType::Normal,
                            "CreatingVolumeSnapshot",
                            format!("creating volume snapshot {}/{name}", self.ns),
                        )
                        .await;
                    created
                }
            };
            if slot.start_timestamp.is_none() {
                slot.start_timestamp = snap.metadata.creation_timestamp.clone();
            }
            let status = snap.data.get("status").cloned().unwrap_or(Value::Null);
            if let Some(msg) = status.pointer("/error/message").and_then(Value::as_str) {
                return fail(
                    slot,
                    format!("VolumeSnapshot {name} of claim {claim} failed: {msg}"),
                );
            }
            if status.get("readyToUse") != Some(&Value::Bool(true)) {
                all_ready = false;
                continue;
            }
            let size = status.get("restoreSize").and_then(|v| {
                v.as_str()
                    .map(str::to_string)
                    .or_else(|| Some(v.to_string()))
            });
            if let Some(bytes) = size.as_deref().and_then(quantity_bytes) {
                total = total.saturating_add(bytes);
            }
            if first_time.is_none() {
                first_time = status
                    .get("creationTime")
                    .and_then(|v| serde_json::from_value(v.clone()).ok());
            }
            statuses.push(VolumeSnapshotStatus {
                name: Some(name.clone()),
                content_name: status
                    .get("boundVolumeSnapshotContentName")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                volume_name: Some(volume.clone()),
                size,
                ..Default::default()
            });
        }
        if !all_ready {
            slot.phase = Some(ActionPhase::Running);
            return Ok(None);
        }
        slot.phase = Some(ActionPhase::Completed);
        slot.failure_reason = None;
        slot.completion_timestamp = Some(to_time(self.ctx.clock.now()));
        slot.total_size = Some(total.to_string());
        slot.volume_snapshots = Some(statuses);
        if let Some(t) = first_time {
            slot.time_range = Some(crate::api::backup::BackupTimeRange {
                start: Some(t.clone()),
                end: Some(t),
                ..Default::default()
            });
        }
        Ok(Some(Ok(())))
    }

    /// The VolumeSnapshotClass for `pvc`'s volume: `Ok(None)` when the volume is not
    /// CSI; `Err` when it is and no class names its driver.
    async fn snapshot_class(
        &self,
        pvc: &PersistentVolumeClaim,
    ) -> Result<std::result::Result<Option<String>, String>> {
        let claim = pvc.metadata.name.clone().unwrap_or_default();
        let Some(pv_name) = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()) else {
            return Ok(Err(format!("the claim {claim} is not bound to a volume")));
        };
        let pvs: Api<PersistentVolume> = Api::all(self.ctx.client.clone());
        let Some(pv) = pvs
            .get_opt(&pv_name)
            .await
            .during(|| format!("get PersistentVolume {pv_name}"))?
        else {
            return Ok(Err(format!(
                "the volume {pv_name} of claim {claim} does not exist"
            )));
        };
        let Some(driver) = pv
            .spec
            .as_ref()
            .and_then(|s| s.csi.as_ref())
            .map(|c| c.driver.clone())
        else {
            return Ok(Ok(None));
        };
        let classes: Api<DynamicObject> = Api::all_with(
            self.ctx.client.clone(),
            &snapshot_resource("VolumeSnapshotClass", "volumesnapshotclasses"),
        );
        let list = classes
            .list(&ListParams::default())
            .await
            .during(|| "list VolumeSnapshotClasses".to_string())?;
        Ok(list
            .items
            .iter()
            .find(|c| c.data.get("driver").and_then(Value::as_str) == Some(driver.as_str()))
            .and_then(|c| c.metadata.name.clone())
            .map(Some)
            .ok_or_else(|| {
                format!(
                    "cannot find any VolumeSnapshotClass of persistentVolumeClaim \"{claim}\" (CSI driver {driver}) to do volume snapshot"
                )
            }))
    }
}

/// Bytes of a Kubernetes quantity as snapshots report sizes (`1Gi`, `500M`, `1048576`).
pub fn quantity_bytes(q: &str) -> Option<u64> {
    let q = q.trim().trim_matches('"');
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (num, unit) = q.split_at(split);
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    if num.contains('.') {
        let f: f64 = num.parse().ok()?;
        return Some((f * mult as f64) as u64);
    }
    num.parse::<u64>().ok()?.checked_mul(mult)
}

#[cfg(test)]
mod snapshot_tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        EmptyDirVolumeSource, PersistentVolumeClaimVolumeSource, PodSpec, Volume,
    };

    #[test]
    fn names_follow_kubeblocks() {
        let t = BackupTarget::default();
        assert_eq!(snapshot_action_name(&t, 0), "createVolumeSnapshot-0");
        let t = BackupTarget {
            name: Some("shard".into()),
            ..Default::default()
        };
        assert_eq!(snapshot_action_name(&t, 1), "createVolumeSnapshot-shard-1");
        assert_eq!(volume_snapshot_name("b1", "data", 0), "b1-0-data");
    }

    #[test]
    fn target_claims_need_claims() {
        let pod = Pod {
            metadata: kube::api::ObjectMeta {
                name: Some("db-0".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                volumes: Some(vec![
                    Volume {
                        name: "data".into(),
                        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                            claim_name: "data-db-0".into(),
                            read_only: None,
                        }),
                        ..Default::default()
                    },
                    Volume {
                        name: "scratch".into(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            status: None,
        };
        assert_eq!(
            target_claims(&pod, &["data".into()]).unwrap(),
            vec![("data".to_string(), "data-db-0".to_string())]
        );
        assert!(target_claims(&pod, &["scratch".into()])
            .unwrap_err()
            .contains("is not PersistentVolumeClaim"));
        assert!(target_claims(&pod, &["nope".into()])
            .unwrap_err()
            .contains("can not find any volume"));
    }

    #[test]
    fn quantities_in_bytes() {
        assert_eq!(quantity_bytes("1Gi"), Some(1 << 30));
        assert_eq!(quantity_bytes("1048576"), Some(1 << 20));
        assert_eq!(quantity_bytes("2k"), Some(2000));
        assert_eq!(quantity_bytes("1.5Ki"), Some(1536));
        assert_eq!(quantity_bytes("lots"), None);
    }
}
