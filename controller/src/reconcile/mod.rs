//! The reconcilers, one file per kind ([`storageprovider`], [`backuprepo`],
//! [`garbagecollection`], [`backup`], [`backupschedule`]; ActionSet and BackupPolicy in
//! [`availability`]; the seed's simplified kinds in [`seed`]), the expiry loop over Backups ([`expiry`]), and what they share:
//! conditions, status and finalizer patches,
//! create-if-absent, and the loop around every reconcile ([`guarded`], [`error_policy`]).
//!
//! Rules every reconciler keeps:
//! - status is written with a merge patch carrying the `resourceVersion` it was computed
//!   from, so two writers (the BackupRepo and GarbageCollection reconcilers both write a
//!   BackupRepo's conditions) never overwrite each other: the loser gets 409 and retries;
//! - an object that is wrong as written gets a condition (and an event) naming the field,
//!   then waits for a change; errors retrying can mend are retried with back-off
//!   ([`crate::error::Error::is_transient`]); a panic in a reconcile becomes an error of
//!   that object only.

pub mod availability;
pub mod backup;
pub mod backuprepo;
pub mod backupschedule;
pub mod expiry;
pub mod garbagecollection;
pub mod restore;
pub mod restore_plan;
pub mod seed;
pub mod storageprovider;
pub mod worker;

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

use crate::context::Context;
use crate::error::{Error, KubeResultExt, Result};

/// Longest condition message the API server accepts (32 KiB).
pub const MAX_CONDITION_MESSAGE: usize = 32 * 1024;

/// How long an object that is wrong as written waits before it is looked at again
/// (watches bring it back sooner when something it refers to changes).
pub const INVALID_REQUEUE: Duration = Duration::from_secs(300);

/// The longest back-off after transient errors.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// A chrono time as a Kubernetes `Time` (second precision, as the API server keeps it).
pub fn to_time(t: chrono::DateTime<chrono::Utc>) -> Time {
    Time(Timestamp::from_second(t.timestamp()).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// A Kubernetes `Time` as chrono.
pub fn from_time(t: &Time) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(t.0.as_second(), 0).unwrap_or_default()
}

/// `s` cut to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The condition of `type_`, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of `type_` is present and `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == "True")
}

/// Sets a condition as apimachinery's `SetStatusCondition` does (the transition time moves
/// only when the status changes); the message is cut to [`MAX_CONDITION_MESSAGE`].
/// Returns whether anything changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    let message = truncate(message, MAX_CONDITION_MESSAGE);
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status == status
                && c.reason == reason
                && c.message == message
                && c.observed_generation == generation
            {
                return false;
            }
            if c.status != status {
                c.status = status.into();
                c.last_transition_time = to_time(now);
            }
            c.reason = reason.into();
            c.message = message;
            c.observed_generation = generation;
            true
        }
        None => {
            conditions.push(Condition {
                type_: type_.into(),
                status: status.into(),
                reason: reason.into(),
                message,
                observed_generation: generation,
                last_transition_time: to_time(now),
            });
            true
        }
    }
}

/// Merges `status` into `name`'s status subresource, guarded by `resource_version`.
/// Fields `status` does not name (or leaves `None`) stay as they are on the server; use
/// [`replace_status`] when `status` is the whole status.
///
/// # Errors
/// The API error (409 when the object changed since it was read).
pub async fn patch_status<K, S>(
    api: &Api<K>,
    name: &str,
    resource_version: Option<&str>,
    status: &S,
) -> Result<K>
where
    K: Clone + DeserializeOwned + Debug,
    S: Serialize,
{
    let mut body = json!({ "status": status });
    if let Some(rv) = resource_version {
        body["metadata"] = json!({ "resourceVersion": rv });
    }
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .during(|| format!("patch the status of {name}"))
}

/// Writes `status` as `name`'s whole status, guarded by `resource_version`: the status on
/// the server becomes exactly `status`.
///
/// A JSON merge patch leaves alone every field it does not name, and our status types
/// skip `None` fields when serialised, so with [`patch_status`] a field set to `None` (a
/// finished GarbageCollection's `currentRun`) would stay on the server and the next
/// reconcile would see it again. This patch names each field `previous` (the status as
/// read with `resource_version`) has and `status` lacks, as `null`.
///
/// # Errors
/// The API error (409 when the object changed since it was read).
pub async fn replace_status<K, S>(
    api: &Api<K>,
    name: &str,
    resource_version: Option<&str>,
    previous: Option<&S>,
    status: &S,
) -> Result<K>
where
    K: Clone + DeserializeOwned + Debug,
    S: Serialize,
{
    let previous = previous
        .map(|p| serde_json::to_value(p).unwrap_or_default())
        .unwrap_or_default();
    let wanted = serde_json::to_value(status).unwrap_or_default();
    patch_status(
        api,
        name,
        resource_version,
        &merge_patch(&previous, &wanted),
    )
    .await
}

/// The JSON merge patch (RFC 7386) that turns `from` into `to`: `to`, with `null` for every
/// object member `from` has and `to` lacks, at any depth.
pub fn merge_patch(from: &serde_json::Value, to: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match (from, to) {
        (Value::Object(old), Value::Object(new)) => {
            let mut out = serde_json::Map::new();
            for (key, value) in new {
                let patched = match old.get(key) {
                    Some(previous) if previous.is_object() && value.is_object() => {
                        merge_patch(previous, value)
                    }
                    _ => value.clone(),
                };
                out.insert(key.clone(), patched);
            }
            for key in old.keys() {
                if !new.contains_key(key) {
                    out.insert(key.clone(), Value::Null);
                }
            }
            Value::Object(out)
        }
        _ => to.clone(),
    }
}

/// Merges `patch` into `name`'s metadata/spec (not status), guarded by `resource_version`.
///
/// # Errors
/// The API error.
pub async fn patch_object<K>(
    api: &Api<K>,
    name: &str,
    resource_version: Option<&str>,
    mut patch: serde_json::Value,
) -> Result<K>
where
    K: Clone + DeserializeOwned + Debug,
{
    if let Some(rv) = resource_version {
        patch["metadata"]["resourceVersion"] = json!(rv);
    }
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .during(|| format!("patch {name}"))
}

/// Adds `finalizer` to `obj` (a merge patch of the whole list, guarded by the
/// `resourceVersion` it was read at).
///
/// # Errors
/// The API error.
pub async fn add_finalizer<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let meta = obj.meta();
    let name = meta.name.clone().unwrap_or_default();
    let mut finalizers = meta.finalizers.clone().unwrap_or_default();
    if finalizers.iter().any(|f| f == finalizer) {
        return Ok(obj.clone());
    }
    finalizers.push(finalizer.to_string());
    patch_object(
        api,
        &name,
        meta.resource_version.as_deref(),
        json!({"metadata": {"finalizers": finalizers}}),
    )
    .await
}

/// Removes `finalizer` from `obj`, if present.
///
/// # Errors
/// The API error (a missing object is not one).
pub async fn remove_finalizer<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let meta = obj.meta();
    let name = meta.name.clone().unwrap_or_default();
    let finalizers = meta.finalizers.clone().unwrap_or_default();
    if !finalizers.iter().any(|f| f == finalizer) {
        return Ok(());
    }
    let rest: Vec<&String> = finalizers.iter().filter(|f| *f != finalizer).collect();
    match patch_object(
        api,
        &name,
        meta.resource_version.as_deref(),
        json!({"metadata": {"finalizers": rest}}),
    )
    .await
    {
        Ok(_) => Ok(()),
        Err(Error::Kube {
            source: kube::Error::Api(s),
            ..
        }) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Gets `obj` by name, creating it when absent. Returns the stored object and whether it
/// was created now. Losing a creation race is not an error: the winner's object is
/// returned.
///
/// # Errors
/// The API error.
pub async fn create_if_absent<K>(api: &Api<K>, obj: &K) -> Result<(K, bool)>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let kind = K::kind(&()).to_string();
    if let Some(found) = api
        .get_opt(&name)
        .await
        .during(|| format!("get {kind} {name}"))?
    {
        return Ok((found, false));
    }
    match api.create(&PostParams::default(), obj).await {
        Ok(created) => Ok((created, true)),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let found = api
                .get(&name)
                .await
                .during(|| format!("get {kind} {name}"))?;
            Ok((found, false))
        }
        Err(e) => Err(Error::kube(format!("create {kind} {name}"), e)),
    }
}

/// Deletes `name` with background propagation; a missing object is not an error.
///
/// # Errors
/// The API error.
pub async fn delete_background<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::kube(format!("delete {} {name}", K::kind(&())), e)),
    }
}

/// Whether `dependent` names `owner_uid` among its owners.
pub fn is_owned_by(dependent: &impl Resource, owner_uid: Option<&str>) -> bool {
    let Some(uid) = owner_uid else { return false };
    dependent
        .meta()
        .owner_references
        .as_ref()
        .is_some_and(|refs| refs.iter().any(|r| r.uid == uid))
}

/// Consecutive failures per object, for the back-off of transient errors.
#[derive(Debug, Default)]
pub struct Failures(Mutex<HashMap<String, u32>>);

impl Failures {
    fn key(kind: &str, name: &str) -> String {
        format!("{kind}/{name}")
    }

    /// Counts a failure of `kind/name`; returns the delay before the next attempt:
    /// 1 s, 2 s, 4 s ... up to [`MAX_BACKOFF`].
    pub fn failed(&self, kind: &str, name: &str) -> Duration {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(Self::key(kind, name)).or_insert(0);
        *n = n.saturating_add(1);
        let secs = 1u64.checked_shl((*n - 1).min(16)).unwrap_or(u64::MAX);
        Duration::from_secs(secs).min(MAX_BACKOFF)
    }

    /// Forgets the failures of `kind/name` after a success.
    pub fn succeeded(&self, kind: &str, name: &str) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&Self::key(kind, name));
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Runs one reconcile of `obj`: catches a panic as an error of this object, records
/// metrics, logs the outcome, resets the back-off after a success, and reports an object
/// that is invalid as written with a Warning event naming the field.
pub async fn guarded<K, F, Fut>(obj: Arc<K>, ctx: Arc<Context>, f: F) -> Result<Action>
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
    F: FnOnce(Arc<K>, Arc<Context>) -> Fut,
    Fut: Future<Output = Result<Action>> + Send,
{
    let kind = K::kind(&()).to_string();
    let name = obj.meta().name.clone().unwrap_or_default();
    let start = Instant::now();
    let result = std::panic::AssertUnwindSafe(f(obj.clone(), ctx.clone()))
        .catch_unwind()
        .await
        .unwrap_or_else(|payload| {
            Err(Error::Other(format!(
                "internal error while reconciling {kind} {name} (a bug; please report it): {}",
                panic_text(payload.as_ref())
            )))
        });
    ctx.metrics
        .reconciled(&kind, start.elapsed(), result.is_err());
    match &result {
        Ok(action) => {
            ctx.failures.succeeded(&kind, &name);
            tracing::debug!(%kind, %name, ?action, "reconciled");
        }
        Err(e @ Error::Invalid { field, .. }) => {
            tracing::warn!(%kind, %name, error = %e, "invalid object");
            // One series per field and message: a second invalid field (or the same
            // field wrong in another way after an edit) is an event of its own.
            let note = e.to_string();
            ctx.event_as(
                obj.as_ref(),
                EventType::Warning,
                "InvalidSpec",
                crate::context::distinct_action(&format!("Validate {field}"), &note),
                note,
            )
            .await;
        }
        Err(e) if e.is_transient() => {
            tracing::info!(%kind, %name, error = %e, "reconcile failed; will retry")
        }
        Err(e) => tracing::warn!(%kind, %name, error = %e, "reconcile failed"),
    }
    result
}

/// What the loop does after a failed reconcile: transient errors come back with
/// exponential back-off; an object invalid as written, or waiting for another object,
/// comes back after [`INVALID_REQUEUE`] (or when a watch sees a change).
pub fn error_policy<K>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()>,
{
    if error.is_transient() {
        let kind = K::kind(&());
        let name = obj.meta().name.clone().unwrap_or_default();
        Action::requeue(ctx.failures.failed(&kind, &name))
    } else {
        Action::requeue(INVALID_REQUEUE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    #[test]
    fn a_status_field_set_to_none_is_removed_on_the_server() {
        // A finished GarbageCollection run left `currentRun` on the server (a merge patch
        // without it keeps it), so every later reconcile recorded the run again.
        let from = json!({"currentRun": {"jobName": "gc-1", "dryRun": true},
            "history": [{"jobName": "gc-0"}], "phase": "Running",
            "nested": {"keep": 1, "drop": 2}});
        let to = json!({"history": [{"jobName": "gc-1"}, {"jobName": "gc-0"}],
            "nested": {"keep": 1}});
        let patch = merge_patch(&from, &to);
        assert_eq!(
            patch,
            json!({"currentRun": null, "phase": null,
            "history": [{"jobName": "gc-1"}, {"jobName": "gc-0"}],
            "nested": {"keep": 1, "drop": null}})
        );
        // Applying it (RFC 7386) gives exactly `to`.
        fn apply(target: &mut serde_json::Value, patch: &serde_json::Value) {
            let Some(members) = patch.as_object() else {
                *target = patch.clone();
                return;
            };
            if !target.is_object() {
                *target = json!({});
            }
            let object = target.as_object_mut().unwrap();
            for (key, value) in members {
                if value.is_null() {
                    object.remove(key);
                } else {
                    apply(object.entry(key.clone()).or_insert(json!(null)), value);
                }
            }
        }
        let mut applied = from.clone();
        apply(&mut applied, &patch);
        assert_eq!(applied, to);
        // Nothing was there: the patch is the status itself.
        assert_eq!(merge_patch(&serde_json::Value::Null, &to), to);
    }

    #[test]
    fn conditions_move_their_transition_time_only_on_a_status_change() {
        let mut c = Vec::new();
        assert!(set_condition(
            &mut c,
            "A",
            "Unknown",
            "R",
            "m",
            Some(1),
            t(0)
        ));
        assert!(!set_condition(
            &mut c,
            "A",
            "Unknown",
            "R",
            "m",
            Some(1),
            t(5)
        ));
        assert!(set_condition(
            &mut c,
            "A",
            "Unknown",
            "R2",
            "m2",
            Some(2),
            t(10)
        ));
        assert_eq!(c[0].last_transition_time, to_time(t(0)));
        assert!(set_condition(&mut c, "A", "True", "R2", "", Some(2), t(20)));
        assert_eq!(c[0].last_transition_time, to_time(t(20)));
        assert!(is_true(&c, "A"));
        let long = "é".repeat(MAX_CONDITION_MESSAGE);
        set_condition(&mut c, "B", "False", "R", &long, None, t(0));
        assert!(find_condition(&c, "B").unwrap().message.len() <= MAX_CONDITION_MESSAGE);
    }

    #[test]
    fn back_off_doubles_to_five_minutes_and_resets() {
        let f = Failures::default();
        assert_eq!(f.failed("K", "a"), Duration::from_secs(1));
        assert_eq!(f.failed("K", "a"), Duration::from_secs(2));
        assert_eq!(f.failed("K", "a"), Duration::from_secs(4));
        assert_eq!(f.failed("K", "b"), Duration::from_secs(1));
        for _ in 0..40 {
            f.failed("K", "a");
        }
        assert_eq!(f.failed("K", "a"), MAX_BACKOFF);
        f.succeeded("K", "a");
        assert_eq!(f.failed("K", "a"), Duration::from_secs(1));
    }

    #[test]
    fn times_round_trip_at_second_precision() {
        let now = t(42);
        assert_eq!(from_time(&to_time(now)), now);
    }
}
