//! The expiry loop (KubeBlocks' GC controller, CONTROLLER.md section 4), and dprepo's
//! count-based retention.
//!
//! Every `GC_FREQUENCY_SECONDS` every Backup is looked at (watch events do not wake this
//! loop). One that is being deleted, or whose `status.expiration` is null or in the
//! future, stays. An expired one is deleted (background propagation; the Backup
//! reconciler's deletion flow then runs) when it is deletable:
//! - `Failed`: always; `New`, `Running`, `Deleting`: never;
//! - `Completed`: when its BackupPolicy is gone; else not when it is `Incremental` and
//!   its base (or parent) Backup still exists (it goes with that base; KubeBlocks keeps
//!   every incremental, dprepo deletes one whose base is gone); else not when the policy
//!   says `retainLatestBackup` and it is the newest Completed Backup of its cluster
//!   (`cluster-uid` label; Backups without one form one group, where KubeBlocks keeps
//!   none), policy and method; else yes.
//!
//! Then the extension `dprepo.io/keep-last: N` on a BackupSchedule (KubeBlocks has no
//! count limit): of the Completed, non-Incremental autobackups of that schedule
//! (`autobackup` and `backup-schedule` labels), per backup method, the newest N stay and
//! the older ones are deleted, expired or not.
//!
//! The decisions are the pure functions [`expiry_verdict`] and [`keep_last_excess`]; the
//! clock is the context's.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use kube::api::{Api, ListParams};
use kube::runtime::events::EventType;

use super::{delete_background, from_time};
use crate::api::actionset::BackupType;
use crate::api::backup::{Backup, BackupPhase};
use crate::api::backuppolicy::BackupPolicyRetentionPolicy;
use crate::api::labels::{annotation, label};
use crate::api::{ActionSet, BackupPolicy, BackupSchedule};
use crate::context::Context;
use crate::error::{KubeResultExt, Result};

/// The Warning event of a Backup the loop could not delete (KubeBlocks').
pub const EVENT_REMOVE_FAILED: &str = "RemoveExpiredBackupsFailed";

/// The Normal event of a Backup deleted because it expired.
pub const EVENT_EXPIRED: &str = "ExpiredBackupDeleted";

/// The Normal event on a BackupSchedule whose keep-last deleted Backups.
pub const EVENT_KEEP_LAST: &str = "KeepLastBackupsDeleted";

/// What a backup method's type is known as, for the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MethodType {
    /// Its ActionSet's type (`Full` for volume snapshots).
    Known(BackupType),
    /// The method names no ActionSet.
    Unknown,
    /// The ActionSet it names does not exist.
    ActionSetMissing,
}

/// What the loop needs of a BackupPolicy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyFacts {
    /// `retentionPolicy: retainLatestBackup`.
    pub retain_latest: bool,
    /// The type of each method.
    pub methods: BTreeMap<String, MethodType>,
}

impl PolicyFacts {
    /// The facts of `policy`, with the ActionSets `action_sets` (by name).
    pub fn of(policy: &BackupPolicy, action_sets: &BTreeMap<String, BackupType>) -> Self {
        let methods = policy
            .spec
            .backup_methods
            .iter()
            .map(|m| {
                let t = if m.snapshot_volumes == Some(true) {
                    MethodType::Known(BackupType::Full)
                } else {
                    match m.action_set_name.as_deref().filter(|n| !n.is_empty()) {
                        None => MethodType::Unknown,
                        Some(a) => action_sets
                            .get(a)
                            .map_or(MethodType::ActionSetMissing, |t| MethodType::Known(*t)),
                    }
                };
                (m.name.clone(), t)
            })
            .collect();
        Self {
            retain_latest: policy.spec.retention_policy
                == Some(BackupPolicyRetentionPolicy::RetainLatestBackup),
            methods,
        }
    }
}

/// Why a Backup stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keep {
    /// It is being deleted already.
    BeingDeleted,
    /// It has no expiration (kept forever).
    NoExpiration,
    /// Its expiration is in the future.
    NotExpired,
    /// It is New, Running or Deleting (or has no phase).
    NotFinished,
    /// An Incremental backup whose base still exists.
    IncrementalWithBase,
    /// The newest Completed backup under `retainLatestBackup`.
    Latest,
}

/// Why a Backup goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delete {
    /// Failed and expired.
    Failed,
    /// Completed and expired.
    Expired,
    /// Expired, and its BackupPolicy is gone.
    PolicyMissing,
    /// Expired, and its method's ActionSet is gone.
    ActionSetMissing,
}

/// The decision for one Backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It stays.
    Keep(Keep),
    /// It is deleted.
    Delete(Delete),
}

/// The label value of `key`, if any.
fn label_of<'a>(b: &'a Backup, key: &str) -> Option<&'a str> {
    b.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

/// The type of `b`: its `backup-type` label, else its method's (when known).
fn type_of(b: &Backup, policy: Option<&PolicyFacts>) -> Option<MethodType> {
    if let Some(t) = label_of(b, label::BACKUP_TYPE).filter(|t| !t.is_empty()) {
        return Some(
            serde_json::from_value::<BackupType>(serde_json::Value::String(t.into()))
                .map_or(MethodType::Unknown, MethodType::Known),
        );
    }
    policy.and_then(|p| p.methods.get(&b.spec.backup_method).cloned())
}

/// KubeBlocks' order of backups by stop time, newest first: the end of the data
/// (`timeRange.end`, else `completionTimestamp`) descending, a missing end first, equal
/// ends by name descending.
fn newest_first(a: &Backup, b: &Backup) -> std::cmp::Ordering {
    let (ea, eb) = (a.end_time().map(|t| t.0), b.end_time().map(|t| t.0));
    match (ea, eb) {
        (None, None) => b.metadata.name.cmp(&a.metadata.name),
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (Some(x), Some(y)) if x == y => b.metadata.name.cmp(&a.metadata.name),
        (Some(x), Some(y)) => y.cmp(&x),
    }
}

/// Whether `b` is the newest Completed Backup of its cluster (`cluster-uid`), policy and
/// method among `namespace_backups` (which holds `b`).
pub fn is_latest_completed(b: &Backup, namespace_backups: &[Backup]) -> bool {
    let cluster = label_of(b, label::CLUSTER_UID);
    let newest = namespace_backups
        .iter()
        .filter(|o| o.phase() == Some(BackupPhase::Completed))
        .filter(|o| label_of(o, label::CLUSTER_UID) == cluster)
        .filter(|o| o.spec.backup_policy_name == b.spec.backup_policy_name)
        .filter(|o| o.spec.backup_method == b.spec.backup_method)
        .min_by(|x, y| newest_first(x, y));
    newest.is_some_and(|n| n.metadata.name == b.metadata.name)
}

/// The Backup an Incremental one builds on: `status.baseBackupName`, else its parent.
fn base_of(b: &Backup) -> Option<&str> {
    let s = b.status.as_ref();
    s.and_then(|s| s.base_backup_name.as_deref())
        .or(s.and_then(|s| s.parent_backup_name.as_deref()))
        .or(b.spec.parent_backup_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// Whether `b` is an Incremental Backup whose base still exists (and is not being
/// deleted) among `namespace_backups`. One without a recorded base counts as having one:
/// nothing says it can go.
fn has_living_base(b: &Backup, namespace_backups: &[Backup]) -> bool {
    match base_of(b) {
        None => true,
        Some(base) => namespace_backups.iter().any(|o| {
            o.metadata.name.as_deref() == Some(base) && o.metadata.deletion_timestamp.is_none()
        }),
    }
}

/// The expiry decision for `b` at `now`. `namespace_backups` are the Backups of its
/// namespace (it among them); `policy` is its BackupPolicy's facts, `None` when the
/// policy does not exist.
pub fn expiry_verdict(
    b: &Backup,
    namespace_backups: &[Backup],
    policy: Option<&PolicyFacts>,
    now: DateTime<Utc>,
) -> Verdict {
    if b.metadata.deletion_timestamp.is_some() {
        return Verdict::Keep(Keep::BeingDeleted);
    }
    let Some(expiration) = b.status.as_ref().and_then(|s| s.expiration.as_ref()) else {
        return Verdict::Keep(Keep::NoExpiration);
    };
    if from_time(expiration) > now {
        return Verdict::Keep(Keep::NotExpired);
    }
    match b.phase() {
        Some(BackupPhase::Failed) => return Verdict::Delete(Delete::Failed),
        Some(BackupPhase::Completed) => {}
        _ => return Verdict::Keep(Keep::NotFinished),
    }
    let Some(facts) = policy else {
        return Verdict::Delete(Delete::PolicyMissing);
    };
    match type_of(b, Some(facts)) {
        Some(MethodType::ActionSetMissing) => return Verdict::Delete(Delete::ActionSetMissing),
        Some(MethodType::Known(BackupType::Incremental))
            if has_living_base(b, namespace_backups) =>
        {
            return Verdict::Keep(Keep::IncrementalWithBase)
        }
        _ => {}
    }
    if facts.retain_latest && is_latest_completed(b, namespace_backups) {
        return Verdict::Keep(Keep::Latest);
    }
    Verdict::Delete(Delete::Expired)
}

/// Reads a `dprepo.io/keep-last` value: a whole number of at least 1.
///
/// # Errors
/// What is wrong with the text.
pub fn parse_keep_last(text: &str) -> std::result::Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err(format!(
            "{}: 0 would delete every backup; write at least 1",
            annotation::DPREPO_KEEP_LAST
        )),
        Ok(n) => Ok(n),
        Err(_) => Err(format!(
            "{}: {text:?} is not a whole number of backups to keep",
            annotation::DPREPO_KEEP_LAST
        )),
    }
}

/// The Backups `dprepo.io/keep-last: keep` on the schedule `schedule` deletes among
/// `namespace_backups`: per method, the Completed, non-Incremental autobackups of the
/// schedule beyond the newest `keep`, oldest last.
pub fn keep_last_excess<'a>(
    schedule: &str,
    keep: usize,
    namespace_backups: &'a [Backup],
) -> Vec<&'a Backup> {
    let mut by_method: BTreeMap<&str, Vec<&Backup>> = BTreeMap::new();
    for b in namespace_backups {
        let mine = label_of(b, label::AUTO_BACKUP) == Some("true")
            && label_of(b, label::BACKUP_SCHEDULE) == Some(schedule);
        let candidate = mine
            && b.metadata.deletion_timestamp.is_none()
            && b.phase() == Some(BackupPhase::Completed)
            && label_of(b, label::BACKUP_TYPE) != Some(BackupType::Incremental.as_str());
        if candidate {
            by_method.entry(&b.spec.backup_method).or_default().push(b);
        }
    }
    let mut out = Vec::new();
    for (_, mut list) in by_method {
        list.sort_by(|x, y| newest_first(x, y));
        out.extend(list.into_iter().skip(keep));
    }
    out
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Backups deleted because they expired (`namespace/name`).
    pub expired: Vec<String>,
    /// Backups deleted beyond a schedule's keep-last.
    pub beyond_keep_last: Vec<String>,
    /// Deletions that failed.
    pub failed: usize,
}

async fn delete_backup(ctx: &Context, b: &Backup, rule: &str, note: String) -> bool {
    let ns = b.metadata.namespace.clone().unwrap_or_default();
    let name = b.metadata.name.clone().unwrap_or_default();
    let api: Api<Backup> = Api::namespaced(ctx.client.clone(), &ns);
    match delete_background(&api, &name).await {
        Ok(()) => {
            tracing::info!(backup = %format!("{ns}/{name}"), rule, "deleted by the expiry loop");
            ctx.metrics.expiry_deleted(rule, false);
            ctx.event(b, EventType::Normal, EVENT_EXPIRED, note).await;
            true
        }
        Err(e) => {
            tracing::warn!(backup = %format!("{ns}/{name}"), error = %e, "could not delete an expired Backup");
            ctx.metrics.expiry_deleted(rule, true);
            ctx.event(b, EventType::Warning, EVENT_REMOVE_FAILED, e.to_string())
                .await;
            false
        }
    }
}

/// One pass over every Backup: expiry, then keep-last.
///
/// # Errors
/// Listing Backups, BackupPolicies, ActionSets or BackupSchedules failed (one Backup's
/// failed deletion is counted, reported by event, and does not stop the pass).
pub async fn sweep(ctx: &Context) -> Result<SweepReport> {
    let client = ctx.client.clone();
    let backups = Api::<Backup>::all(client.clone())
        .list(&ListParams::default())
        .await
        .during(|| "list Backups".to_string())?
        .items;
    let policies = Api::<BackupPolicy>::all(client.clone())
        .list(&ListParams::default())
        .await
        .during(|| "list BackupPolicies".to_string())?
        .items;
    let action_sets: BTreeMap<String, BackupType> = Api::<ActionSet>::all(client.clone())
        .list(&ListParams::default())
        .await
        .during(|| "list ActionSets".to_string())?
        .items
        .into_iter()
        .map(|a| {
            (
                a.metadata.name.clone().unwrap_or_default(),
                a.spec.backup_type,
            )
        })
        .collect();
    let schedules = Api::<BackupSchedule>::all(client)
        .list(&ListParams::default())
        .await
        .during(|| "list BackupSchedules".to_string())?
        .items;
    let facts: BTreeMap<(String, String), PolicyFacts> = policies
        .iter()
        .map(|p| {
            (
                (
                    p.metadata.namespace.clone().unwrap_or_default(),
                    p.metadata.name.clone().unwrap_or_default(),
                ),
                PolicyFacts::of(p, &action_sets),
            )
        })
        .collect();
    let mut by_ns: BTreeMap<String, Vec<Backup>> = BTreeMap::new();
    for b in backups {
        by_ns
            .entry(b.metadata.namespace.clone().unwrap_or_default())
            .or_default()
            .push(b);
    }
    let now = ctx.clock.now();
    let mut report = SweepReport::default();
    let mut gone: BTreeSet<(String, String)> = BTreeSet::new();
    for (ns, list) in &by_ns {
        for b in list {
            let policy = facts.get(&(ns.clone(), b.spec.backup_policy_name.clone()));
            let Verdict::Delete(why) = expiry_verdict(b, list, policy, now) else {
                continue;
            };
            let name = b.metadata.name.clone().unwrap_or_default();
            let note = format!(
                "expired ({why:?}) at {}; deleting it",
                b.status
                    .as_ref()
                    .and_then(|s| s.expiration.as_ref())
                    .map(|t| t.0.to_string())
                    .unwrap_or_default()
            );
            if delete_backup(ctx, b, "expired", note).await {
                report.expired.push(format!("{ns}/{name}"));
                gone.insert((ns.clone(), name));
            } else {
                report.failed += 1;
            }
        }
    }
    for s in &schedules {
        let Some(text) = s
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(annotation::DPREPO_KEEP_LAST))
        else {
            continue;
        };
        let ns = s.metadata.namespace.clone().unwrap_or_default();
        let name = s.metadata.name.clone().unwrap_or_default();
        let keep = match parse_keep_last(text) {
            Ok(n) => n,
            Err(e) => {
                // Another wrong value after an edit is an event of its own.
                let action = crate::context::distinct_action(
                    &format!("Validate {}", annotation::DPREPO_KEEP_LAST),
                    &e,
                );
                ctx.event_as(s, EventType::Warning, "InvalidKeepLast", action, e)
                    .await;
                continue;
            }
        };
        let remaining: Vec<Backup> = by_ns
            .get(&ns)
            .into_iter()
            .flatten()
            .filter(|b| !gone.contains(&(ns.clone(), b.metadata.name.clone().unwrap_or_default())))
            .cloned()
            .collect();
        let excess = keep_last_excess(&name, keep, &remaining);
        for b in excess {
            let bname = b.metadata.name.clone().unwrap_or_default();
            let note = format!(
                "beyond the newest {keep} of BackupSchedule {name} ({}); deleting it",
                annotation::DPREPO_KEEP_LAST
            );
            if delete_backup(ctx, b, "keep-last", note).await {
                report.beyond_keep_last.push(format!("{ns}/{bname}"));
                // One event per Backup, related to it: a second event of one series
                // would keep the first note and lose which Backup went.
                ctx.event_related(
                    s,
                    b,
                    EventType::Normal,
                    EVENT_KEEP_LAST,
                    format!("{}={keep}: deleted {bname}", annotation::DPREPO_KEEP_LAST),
                )
                .await;
            } else {
                report.failed += 1;
            }
        }
    }
    Ok(report)
}

/// Runs [`sweep`] every `GC_FREQUENCY_SECONDS` (the first pass at once) until `stop`.
pub async fn run_loop(ctx: Arc<Context>, stop: impl Future<Output = ()>) {
    let mut interval = tokio::time::interval(ctx.config.gc_frequency);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = &mut stop => return,
        }
        match sweep(&ctx).await {
            Ok(r) => {
                ctx.metrics.expiry_sweep(false);
                tracing::debug!(
                    expired = r.expired.len(),
                    keep_last = r.beyond_keep_last.len(),
                    failed = r.failed,
                    "expiry pass"
                );
            }
            Err(e) => {
                ctx.metrics.expiry_sweep(true);
                tracing::warn!(error = %e, "expiry pass failed; trying again next period");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const NOW: &str = "2026-12-07T12:00:00Z";

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(NOW).unwrap().to_utc()
    }

    fn b(name: &str, phase: &str, expiration: Option<&str>, done: &str, extra: Value) -> Backup {
        let mut v = json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "Backup",
            "metadata": {"name": name, "namespace": "ns",
                         "labels": {"dataprotection.kubeblocks.io/cluster-uid": "c1"}},
            "spec": {"backupPolicyName": "pol", "backupMethod": "full", "deletionPolicy": "Delete"},
            "status": {"phase": phase, "expiration": expiration, "completionTimestamp": done}
        });
        merge(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    fn merge(a: &mut Value, b: Value) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn facts(retain_latest: bool) -> PolicyFacts {
        PolicyFacts {
            retain_latest,
            methods: [
                ("full".to_string(), MethodType::Known(BackupType::Full)),
                (
                    "incr".to_string(),
                    MethodType::Known(BackupType::Incremental),
                ),
                ("gone".to_string(), MethodType::ActionSetMissing),
            ]
            .into(),
        }
    }

    const PAST: Option<&str> = Some("2026-12-07T11:00:00Z");

    #[test]
    fn expiry_decisions_follow_kubeblocks() {
        let f = facts(false);
        let v =
            |x: &Backup, all: &[Backup], p: Option<&PolicyFacts>| expiry_verdict(x, all, p, now());
        let done = "2026-12-01T00:00:00Z";
        let cases: Vec<(Backup, Verdict)> = vec![
            (
                b("no-exp", "Completed", None, done, json!({})),
                Verdict::Keep(Keep::NoExpiration),
            ),
            (
                b(
                    "future",
                    "Completed",
                    Some("2026-12-07T12:00:01Z"),
                    done,
                    json!({}),
                ),
                Verdict::Keep(Keep::NotExpired),
            ),
            (
                b("exactly-now", "Completed", Some(NOW), done, json!({})),
                Verdict::Delete(Delete::Expired),
            ),
            (
                b("failed", "Failed", PAST, done, json!({})),
                Verdict::Delete(Delete::Failed),
            ),
            (
                b("running", "Running", PAST, done, json!({})),
                Verdict::Keep(Keep::NotFinished),
            ),
            (
                b("new", "New", PAST, done, json!({})),
                Verdict::Keep(Keep::NotFinished),
            ),
            (
                b("deleting-phase", "Deleting", PAST, done, json!({})),
                Verdict::Keep(Keep::NotFinished),
            ),
            (
                b(
                    "being-deleted",
                    "Failed",
                    PAST,
                    done,
                    json!({"metadata": {"deletionTimestamp": "2026-12-07T11:59:00Z"}}),
                ),
                Verdict::Keep(Keep::BeingDeleted),
            ),
            (
                b(
                    "gone-actionset",
                    "Completed",
                    PAST,
                    done,
                    json!({"spec": {"backupMethod": "gone"}}),
                ),
                Verdict::Delete(Delete::ActionSetMissing),
            ),
            (
                b(
                    "unknown-method",
                    "Completed",
                    PAST,
                    done,
                    json!({"spec": {"backupMethod": "zzz"}}),
                ),
                Verdict::Delete(Delete::Expired),
            ),
        ];
        let all: Vec<Backup> = cases.iter().map(|(x, _)| x.clone()).collect();
        for (x, want) in &cases {
            assert_eq!(&v(x, &all, Some(&f)), want, "{:?}", x.metadata.name);
        }
        // No policy: any expired Completed backup goes.
        assert_eq!(
            v(&cases[2].0, &all, None),
            Verdict::Delete(Delete::PolicyMissing)
        );
    }

    #[test]
    fn incrementals_go_with_their_base_only() {
        let f = facts(false);
        let done = "2026-12-01T00:00:00Z";
        let base = b("base", "Completed", None, done, json!({}));
        let incr = b(
            "incr",
            "Completed",
            PAST,
            done,
            json!({"spec": {"backupMethod": "incr"}, "status": {"baseBackupName": "base", "parentBackupName": "base"}}),
        );
        let labelled = b(
            "labelled",
            "Completed",
            PAST,
            done,
            json!({"metadata": {"labels": {"dataprotection.kubeblocks.io/backup-type": "Incremental"}}, "status": {"parentBackupName": "base"}}),
        );
        let all = vec![base.clone(), incr.clone(), labelled.clone()];
        assert_eq!(
            expiry_verdict(&incr, &all, Some(&f), now()),
            Verdict::Keep(Keep::IncrementalWithBase)
        );
        assert_eq!(
            expiry_verdict(&labelled, &all, Some(&f), now()),
            Verdict::Keep(Keep::IncrementalWithBase)
        );
        // The base is gone (or going): the incremental is deleted.
        let orphans = vec![incr.clone(), labelled.clone()];
        assert_eq!(
            expiry_verdict(&incr, &orphans, Some(&f), now()),
            Verdict::Delete(Delete::Expired)
        );
        let mut going = base.clone();
        going.metadata.deletion_timestamp = Some(serde_json::from_value(json!(NOW)).unwrap());
        assert_eq!(
            expiry_verdict(&labelled, &[going, labelled.clone()], Some(&f), now()),
            Verdict::Delete(Delete::Expired)
        );
    }

    #[test]
    fn retain_latest_keeps_the_newest_of_each_cluster_policy_and_method() {
        let f = facts(true);
        let old = b("old", "Completed", PAST, "2026-12-01T00:00:00Z", json!({}));
        let newer = b(
            "newer",
            "Completed",
            PAST,
            "2026-12-02T00:00:00Z",
            json!({"status": {"timeRange": {"end": "2026-12-02T00:00:00Z"}}}),
        );
        // Newer, but not Completed: does not count.
        let failed = b("failed", "Failed", None, "2026-12-03T00:00:00Z", json!({}));
        // Another cluster, another method: groups of their own.
        let other_cluster = b(
            "other-cluster",
            "Completed",
            PAST,
            "2026-11-01T00:00:00Z",
            json!({"metadata": {"labels": {"dataprotection.kubeblocks.io/cluster-uid": "c2"}}}),
        );
        let other_method = b(
            "other-method",
            "Completed",
            PAST,
            "2026-11-01T00:00:00Z",
            json!({"spec": {"backupMethod": "zzz"}}),
        );
        let all = vec![
            old.clone(),
            newer.clone(),
            failed,
            other_cluster.clone(),
            other_method.clone(),
        ];
        assert_eq!(
            expiry_verdict(&old, &all, Some(&f), now()),
            Verdict::Delete(Delete::Expired)
        );
        assert_eq!(
            expiry_verdict(&newer, &all, Some(&f), now()),
            Verdict::Keep(Keep::Latest)
        );
        assert_eq!(
            expiry_verdict(&other_cluster, &all, Some(&f), now()),
            Verdict::Keep(Keep::Latest)
        );
        assert_eq!(
            expiry_verdict(&other_method, &all, Some(&f), now()),
            Verdict::Keep(Keep::Latest)
        );
        // Without retainLatestBackup the newest goes too.
        assert_eq!(
            expiry_verdict(&newer, &all, Some(&facts(false)), now()),
            Verdict::Delete(Delete::Expired)
        );
        // Equal ends: the greater name is the newest (KubeBlocks' order).
        let a = b("a", "Completed", PAST, "2026-12-02T00:00:00Z", json!({}));
        let z = b("z", "Completed", PAST, "2026-12-02T00:00:00Z", json!({}));
        let pair = vec![a.clone(), z.clone()];
        assert!(is_latest_completed(&z, &pair) && !is_latest_completed(&a, &pair));
    }

    #[test]
    fn keep_last_keeps_the_newest_n_per_method_of_its_schedule() {
        let auto = |name: &str, method: &str, day: u32, phase: &str| {
            b(
                name,
                phase,
                None,
                &format!("2026-12-{day:02}T00:00:00Z"),
                json!({
                "metadata": {"labels": {"dataprotection.kubeblocks.io/autobackup": "true",
                                        "dataprotection.kubeblocks.io/backup-schedule": "s"}},
                "spec": {"backupMethod": method}}),
            )
        };
        let mut all = vec![
            auto("f1", "full", 1, "Completed"),
            auto("f4", "full", 4, "Completed"),
            auto("f2", "full", 2, "Completed"),
            auto("f3", "full", 3, "Completed"),
            auto("f5-running", "full", 5, "Running"),
            auto("f9-failed", "full", 9, "Failed"),
            auto("x1", "other", 1, "Completed"),
            auto("x2", "other", 2, "Completed"),
            // Not this schedule's, or not an autobackup.
            b(
                "manual",
                "Completed",
                None,
                "2026-11-01T00:00:00Z",
                json!({}),
            ),
        ];
        let mut incr = auto("i1", "incr", 1, "Completed");
        incr.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(label::BACKUP_TYPE.into(), "Incremental".into());
        all.push(incr);
        let names = |v: Vec<&Backup>| -> Vec<String> {
            v.iter().map(|b| b.metadata.name.clone().unwrap()).collect()
        };
        assert_eq!(names(keep_last_excess("s", 2, &all)), vec!["f2", "f1"]);
        assert_eq!(
            names(keep_last_excess("s", 1, &all)),
            vec!["f3", "f2", "f1", "x1"]
        );
        assert!(keep_last_excess("s", 10, &all).is_empty());
        assert!(keep_last_excess("other-schedule", 1, &all).is_empty());
        assert_eq!(parse_keep_last(" 3 "), Ok(3));
        assert!(parse_keep_last("0").unwrap_err().contains("at least 1"));
        assert!(parse_keep_last("three")
            .unwrap_err()
            .contains("not a whole number"));
    }
}
