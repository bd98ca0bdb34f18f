//! The decisions of a Restore, as plain functions of the objects it refers to (tested
//! without a server): whether the backup can be restored, which backups a point-in-time
//! restore needs, and how far each stage has got from its actions.
//!
//! KubeBlocks' rules, kept:
//! - a backup that is not Continuous must be `Completed`;
//! - restoring a Continuous backup needs `restoreTime` inside its `timeRange`, and (unless
//!   its ActionSet says `baseBackupRequired: false`) a base: the Completed full backup of
//!   the same cluster (labels `cluster-uid`, `app.kubernetes.io/instance`,
//!   `apps.kubeblocks.io/component-name`, else the same `backup-policy`) whose data ends
//!   latest while not after `restoreTime` and not before the continuous backup starts;
//! - an incremental backup is restored on its chain: `parentBackupName` up to the full.
//!
//! dprepo's addition: a `restoreTime` that no base can reach is refused with every
//! recoverable range in the message, so the user sees what can be restored.

use chrono::{DateTime, Utc};

use crate::api::actionset::BackupType;
use crate::api::backup::{Backup, BackupPhase};
use crate::api::labels::label;
use crate::api::restore::{RestoreActionStatus, RestoreStatusAction};
use crate::reconcile::{from_time, to_time};

/// `app.kubernetes.io/instance`.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// `apps.kubeblocks.io/component-name`.
pub const COMPONENT_LABEL: &str = "apps.kubeblocks.io/component-name";

fn name(b: &Backup) -> &str {
    b.metadata.name.as_deref().unwrap_or("")
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Reads `spec.restoreTime` (`YYYY-MM-DDTHH:MM:SSZ`; any RFC 3339 time is accepted).
///
/// # Errors
/// Text that is not an RFC 3339 time, quoted in the message.
pub fn parse_restore_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!("spec.restoreTime {text:?} is not a time like 2024-01-02T15:04:05Z: {e}")
        })
}

/// Whether `backup` (of `backup_type`) can be restored: every type but Continuous must be
/// Completed; Differential is refused as KubeBlocks refuses it.
///
/// # Errors
/// Why not, naming the backup and its phase (and its failure reason when it failed).
pub fn check_backup(backup: &Backup, backup_type: BackupType) -> Result<(), String> {
    let phase = backup.phase();
    if backup_type == BackupType::Differential {
        return Err(format!(
            "backup \"{}\" is Differential, which is not supported",
            name(backup)
        ));
    }
    if backup_type != BackupType::Continuous && phase != Some(BackupPhase::Completed) {
        let reason = backup
            .status
            .as_ref()
            .and_then(|s| s.failure_reason.as_deref())
            .filter(|r| !r.is_empty())
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        return Err(format!(
            "backup \"{}\" is not Completed (phase {}{reason}); only a Completed backup can be restored",
            name(backup),
            phase.map(|p| p.as_str()).unwrap_or("unset"),
        ));
    }
    Ok(())
}

/// The label selector of the full backups that may serve as the base of `continuous`
/// (KubeBlocks' `listCompletedBackups`).
pub fn base_candidate_selector(continuous: &Backup) -> String {
    let labels = continuous.metadata.labels.clone().unwrap_or_default();
    let mut parts = vec![format!(
        "{}={}",
        label::BACKUP_TYPE,
        BackupType::Full.as_str()
    )];
    for key in [label::CLUSTER_UID, INSTANCE_LABEL, COMPONENT_LABEL] {
        if let Some(v) = labels.get(key).filter(|v| !v.is_empty()) {
            parts.push(format!("{key}={v}"));
        }
    }
    if parts.len() == 1 {
        parts.push(format!(
            "{}={}",
            label::BACKUP_POLICY,
            continuous.spec.backup_policy_name
        ));
    }
    parts.join(",")
}

/// One range of time a point-in-time restore can reach: from the end of `base` to the end
/// of the continuous backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoverableRange {
    /// The full backup the range starts from.
    pub base: String,
    /// The earliest time (the base's end).
    pub from: DateTime<Utc>,
    /// The latest time (the continuous backup's end).
    pub to: DateTime<Utc>,
}

/// The ranges `continuous` can restore to, one per usable base among `fulls` (Completed,
/// ending inside the continuous backup's range), earliest first.
pub fn recoverable_ranges(continuous: &Backup, fulls: &[Backup]) -> Vec<RecoverableRange> {
    let (Some(start), Some(end)) = (continuous.start_time(), continuous.end_time()) else {
        return Vec::new();
    };
    let (start, end) = (from_time(start), from_time(end));
    let mut out: Vec<RecoverableRange> = fulls
        .iter()
        .filter(|b| b.phase() == Some(BackupPhase::Completed))
        .filter_map(|b| {
            let e = from_time(b.end_time()?);
            (e >= start && e <= end).then(|| RecoverableRange {
                base: name(b).to_string(),
                from: e,
                to: end,
            })
        })
        .collect();
    out.sort_by(|a, b| a.from.cmp(&b.from).then(a.base.cmp(&b.base)));
    out
}

fn describe_ranges(ranges: &[RecoverableRange]) -> String {
    ranges
        .iter()
        .map(|r| {
            format!(
                "{} to {} (base backup \"{}\")",
                rfc3339(r.from),
                rfc3339(r.to),
                r.base
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Checks `restore_time` against the continuous backup's range, and (when
/// `base_required`) picks the base among `fulls`: the newest whose data ends not after
/// `restore_time` and not before the continuous backup starts.
///
/// # Errors
/// The continuous backup has no time range; the time is outside it; no base reaches it.
/// Each message gives the ranges that can be restored.
pub fn select_pitr_base<'a>(
    restore_time: DateTime<Utc>,
    continuous: &Backup,
    fulls: &'a [Backup],
    base_required: bool,
) -> Result<Option<&'a Backup>, String> {
    let cname = name(continuous);
    let (Some(start), Some(end)) = (continuous.start_time(), continuous.end_time()) else {
        return Err(format!(
            "continuous backup \"{cname}\" has no time range yet (status.timeRange), so no point in time can be restored from it"
        ));
    };
    let (start, end) = (from_time(start), from_time(end));
    let ranges = recoverable_ranges(continuous, fulls);
    let available = if !base_required {
        format!(
            "{} to {} (no base backup needed)",
            rfc3339(start),
            rfc3339(end)
        )
    } else if ranges.is_empty() {
        format!(
            "none: continuous backup \"{cname}\" covers {} to {}, but no Completed full backup of the same cluster ends inside that range",
            rfc3339(start),
            rfc3339(end)
        )
    } else {
        describe_ranges(&ranges)
    };
    if restore_time < start || restore_time > end {
        return Err(format!(
            "restoreTime {} is outside the time range of continuous backup \"{cname}\" ({} to {}); recoverable ranges: {available}",
            rfc3339(restore_time),
            rfc3339(start),
            rfc3339(end)
        ));
    }
    if !base_required {
        return Ok(None);
    }
    let base = fulls
        .iter()
        .filter(|b| b.phase() == Some(BackupPhase::Completed))
        .filter_map(|b| b.end_time().map(|e| (from_time(e), b)))
        .filter(|(e, _)| *e <= restore_time && *e >= start)
        .max_by(|(ea, a), (eb, b)| ea.cmp(eb).then(name(b).cmp(name(a))))
        .map(|(_, b)| b);
    match base {
        Some(b) => Ok(Some(b)),
        None => Err(format!(
            "restoreTime {} is before every recoverable range of continuous backup \"{cname}\": no Completed full backup ends between the start of the continuous backup and that time; recoverable ranges: {available}",
            rfc3339(restore_time)
        )),
    }
}

/// The chain under an incremental backup: its full base and the incrementals between
/// them, oldest first. `get` finds a backup by name (in the backup's namespace).
///
/// # Errors
/// A parent that is missing or not Completed, or a chain longer than 1000 (a loop).
pub fn incremental_chain(
    backup: &Backup,
    get: impl Fn(&str) -> Option<(Backup, BackupType)>,
) -> Result<(Backup, Vec<String>), String> {
    let mut ancestors = Vec::new();
    let mut current = backup.clone();
    for _ in 0..1000 {
        let parent_name = current
            .status
            .as_ref()
            .and_then(|s| s.parent_backup_name.clone())
            .or_else(|| current.spec.parent_backup_name.clone())
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                format!(
                    "incremental backup \"{}\" names no parent backup",
                    name(&current)
                )
            })?;
        let (parent, parent_type) = get(&parent_name).ok_or_else(|| {
            format!(
                "parent backup \"{parent_name}\" of \"{}\" not found",
                name(&current)
            )
        })?;
        check_backup(&parent, parent_type)?;
        match parent_type {
            BackupType::Full => {
                ancestors.reverse();
                return Ok((parent, ancestors));
            }
            BackupType::Incremental => {
                ancestors.push(parent_name);
                current = parent;
            }
            other => {
                return Err(format!(
                    "parent backup \"{parent_name}\" is {other}, neither Full nor Incremental"
                ))
            }
        }
    }
    Err(format!(
        "the parent chain of backup \"{}\" is longer than 1000 backups (a loop?)",
        name(backup)
    ))
}

/// Records an action's state as KubeBlocks' `SetRestoreStatusAction` does: a new action
/// gets `startTime`; leaving `Processing` sets `endTime`; the message is the default of the
/// state unless one is given.
pub fn set_action(
    actions: &mut Vec<RestoreStatusAction>,
    mut action: RestoreStatusAction,
    now: DateTime<Utc>,
) {
    if action.message.as_deref().unwrap_or("").is_empty() {
        action.message = Some(match action.status {
            RestoreActionStatus::Processing => format!("\"{}\" is processing", action.object_key),
            RestoreActionStatus::Completed => {
                format!("successfully processed the \"{}\"", action.object_key)
            }
            RestoreActionStatus::Failed => format!(
                "\"{}\" is failed, you can describe it or logs the ownered pod to get more information",
                action.object_key
            ),
        });
    }
    if action.status != RestoreActionStatus::Processing {
        action.end_time = Some(to_time(now));
    }
    match actions
        .iter_mut()
        .find(|a| a.object_key == action.object_key)
    {
        None => {
            action.start_time = Some(to_time(now));
            actions.push(action);
        }
        Some(existing) => {
            if existing.status != action.status {
                existing.status = action.status;
                existing.end_time = action.end_time;
                existing.message = action.message;
            }
        }
    }
}

/// How far the actions named `action_name` of `backup` got: (all `expected` finished, any
/// failed). `expected` is `None` when every recorded action counts (postReady).
pub fn action_progress(
    actions: &[RestoreStatusAction],
    backup: &str,
    action_name: &str,
    expected: Option<usize>,
) -> (bool, bool) {
    let mine: Vec<&RestoreStatusAction> = actions
        .iter()
        .filter(|a| a.backup_name == backup && a.name == action_name)
        .collect();
    let count = expected.unwrap_or(mine.len());
    let finished = mine
        .iter()
        .filter(|a| a.status != RestoreActionStatus::Processing)
        .count();
    let failed = mine.iter().any(|a| a.status == RestoreActionStatus::Failed);
    (count > 0 && finished >= count, failed)
}

/// How many Jobs of a Serial prepareData action may exist now: one more than those
/// Completed, at most `replicas` (KubeBlocks' Serial policy).
pub fn serial_jobs_allowed(
    actions: &[RestoreStatusAction],
    backup: &str,
    action_name: &str,
    replicas: usize,
) -> usize {
    let completed = actions
        .iter()
        .filter(|a| {
            a.backup_name == backup
                && a.name == action_name
                && a.status == RestoreActionStatus::Completed
        })
        .count();
    (completed + 1).min(replicas)
}

#[cfg(test)]
mod tests;
