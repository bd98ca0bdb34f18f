//! What every reconciler shares: the API client, the configuration, metrics, the event
//! recorder and the clock.

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
        self.publish(object.object_ref(&()), None, type_, reason, note.into())
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
            action: reason.to_string(),
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
