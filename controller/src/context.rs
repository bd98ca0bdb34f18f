//! What every reconciler shares: the API client, the configuration, metrics, the event
//! recorder and the clock.
//!
//! # Event series
//! kube-runtime's [`Recorder`] keys an event series by (type, reason, action, object,
//! related object) and, within 6 minutes, counts a later event of a series up while
//! keeping the FIRST note. An event whose note varies under one reason on one object must
//! therefore differ in the related object or the action, or users see only the first
//! note (with a count). What each such event does:
//! - related object: CreatingJob, CreatingVolumeSnapshot, CreatingStatefulSet and the
//!   Restore's Job/claim events (the Job, claim, snapshot); keep-last deletions (the
//!   deleted Backup); GarbageCollection runs (the run's Job); MultipleDefaultRepos (the
//!   other default BackupRepo, one event each); PreCheckFailed (the pre-check Job: each
//!   run is a Job of its own); DeleteBackupFilesFailed of a preDelete or deleter Job (the
//!   Job by name, without uid, so the retries of one Job that fail alike count up).
//! - a distinct action ([`distinct_action`]): InvalidSpec (`Validate <field>`),
//!   Unavailable (ActionSet, BackupPolicy), InvalidKeepLast, HandleBackupScheduleFailed,
//!   DeleteBackupFilesFailed while the repository is not prepared, and the phase events
//!   of BackupRepo (Failed: `Check <condition>`) and StorageProvider (NotReady). KubeBlocks'
//!   reason names stay; only the (hidden) action differs, and identical repeats still
//!   collapse into one event with a count.
//! - left as they are, one note per reason and object: events published once per object
//!   (CreatedBackup, BackupFailed, Retain, RestoreStarting/Completed/Failed,
//!   ValidateFailed, Expired) or with a fixed note (Ready, PreChecking, Deleting,
//!   NoAccessKey); RemoveExpiredBackupsFailed, published at most once per GC pass (hourly
//!   by default, beyond the 6-minute series window); access-key revocation (fixed earlier).

use crate::config::ControllerConfig;
use crate::metrics::SharedMetrics;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use std::sync::Arc;

/// The name the controller reports events under (`reportingController`).
pub const CONTROLLER_NAME: &str = "dprepo-controller";

/// Wall-clock time, a parameter so tests control it (schedules, expiry, deadlines).
pub trait Clock: Send + Sync {
    /// Now, in UTC.
    fn now(&self) -> chrono::DateTime<chrono::Utc>;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now()
    }
}

/// The action of an event whose reason covers several failures of one object with
/// nothing else (no related object) to tell them apart: `what` (the step that failed,
/// e.g. `Validate spec.storageProviderRef`) and a digest of the note. The same failure
/// again is the same series and counts up; a different one (another field, another
/// message) gets its own event instead of counting up under the first one's note. Only
/// for notes that are a function of the failure (no times, no logs): a note that
/// changes on every repeat would make every repeat an event of its own.
pub fn distinct_action(what: &str, note: &str) -> String {
    // FNV-1a: stable across builds (the Recorder's cache lives in one process anyway).
    let digest = note.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    // The events API caps `action` at 128 characters; the digest takes 9.
    let mut what = what.to_string();
    if what.len() > 119 {
        let mut cut = 119;
        while !what.is_char_boundary(cut) {
            cut -= 1;
        }
        what.truncate(cut);
    }
    format!("{what} {digest:08x}")
}

/// Shared by every reconcile.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// The controller's configuration.
    pub config: ControllerConfig,
    /// Metrics.
    pub metrics: SharedMetrics,
    /// Event recorder.
    pub recorder: Recorder,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Consecutive failures per object (the back-off of transient errors).
    pub failures: crate::reconcile::Failures,
}

impl Context {
    /// A context reporting events as `instance` (the pod name) of [`CONTROLLER_NAME`].
    pub fn new(
        client: Client,
        config: ControllerConfig,
        metrics: SharedMetrics,
        instance: Option<String>,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: CONTROLLER_NAME.into(),
                instance,
            },
        );
        Self {
            client,
            config,
            metrics,
            recorder,
            clock: Arc::new(SystemClock),
            failures: Default::default(),
        }
    }

    /// Publishes an event about `object`. An event that cannot be written is logged,
    /// never an error: events inform, they do not drive reconciles.
    pub async fn event<K>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        note: impl Into<String>,
    ) where
        K: Resource<DynamicType = ()>,
    {
        self.publish(
            object.object_ref(&()),
            None,
            type_,
            reason,
            None,
            note.into(),
        )
        .await;
    }

    /// [`Context::event`] in a series of its own per `action`: the events API keys a
    /// series by (reason, action, object, related object), and kube-runtime's Recorder
    /// counts a later event of a series up within 6 minutes keeping the FIRST note. Where
    /// one reason covers different failures of one object and no other object tells them
    /// apart, the action does: see [`distinct_action`].
    pub async fn event_as<K>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        action: String,
        note: impl Into<String>,
    ) where
        K: Resource<DynamicType = ()>,
    {
        self.publish(
            object.object_ref(&()),
            None,
            type_,
            reason,
            Some(action),
            note.into(),
        )
        .await;
    }

    /// [`Context::event`] about `object` naming a `related` one. The events API keeps one
    /// series per (reason, object, related object) and a later event of the same series
    /// only counts up, keeping the first note; an event whose note names a different
    /// object each time (which Backup a rule deleted) needs its own series.
    pub async fn event_related<K, R>(
        &self,
        object: &K,
        related: &R,
        type_: EventType,
        reason: &str,
        note: impl Into<String>,
    ) where
        K: Resource<DynamicType = ()>,
        R: Resource<DynamicType = ()>,
    {
        self.publish(
            object.object_ref(&()),
            Some(related.object_ref(&())),
            type_,
            reason,
            None,
            note.into(),
        )
        .await;
    }

    /// [`Context::event_related`] with the related object given by reference (kinds the
    /// controller has no typed API for, such as VolumeSnapshot).
    pub async fn event_related_ref<K>(
        &self,
        object: &K,
        related: ObjectReference,
        type_: EventType,
        reason: &str,
        note: impl Into<String>,
    ) where
        K: Resource<DynamicType = ()>,
    {
        self.publish(
            object.object_ref(&()),
            Some(related),
            type_,
            reason,
            None,
            note.into(),
        )
        .await;
    }

    /// [`Context::event_related_ref`] with its own action (see [`Context::event_as`]).
    pub async fn event_related_ref_as<K>(
        &self,
        object: &K,
        related: ObjectReference,
        type_: EventType,
        reason: &str,
        action: String,
        note: impl Into<String>,
    ) where
        K: Resource<DynamicType = ()>,
    {
        self.publish(
            object.object_ref(&()),
            Some(related),
            type_,
            reason,
            Some(action),
            note.into(),
        )
        .await;
    }

    async fn publish(
        &self,
        reference: ObjectReference,
        related: Option<ObjectReference>,
        type_: EventType,
        reason: &str,
        action: Option<String>,
        note: String,
    ) {
        let mut note = note;
        // The Events API caps notes at 1 kB.
        if note.len() > 1024 {
            let mut cut = 1021;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
            note.push_str("...");
        }
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: action.unwrap_or_else(|| reason.to_string()),
            secondary: related,
        };
        if let Err(e) = self.recorder.publish(&event, &reference).await {
            tracing::warn!(
                kind = reference.kind.as_deref().unwrap_or(""),
                name = reference.name.as_deref().unwrap_or(""),
                reason,
                error = %e,
                "could not record an event"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::distinct_action;

    #[test]
    fn distinct_action_tells_failures_apart_and_repeats_alike() {
        let a = distinct_action("Validate spec.x", "spec.x: empty");
        assert_eq!(a, distinct_action("Validate spec.x", "spec.x: empty"));
        assert_ne!(a, distinct_action("Validate spec.x", "spec.x: too long"));
        assert!(a.starts_with("Validate spec.x "), "{a}");
        // The events API refuses actions over 128 characters.
        let long = distinct_action(&"é".repeat(200), "n");
        assert!(long.len() <= 128, "{}", long.len());
    }
}
