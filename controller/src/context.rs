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
        let reference: ObjectReference = object.object_ref(&());
        let mut note: String = note.into();
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
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &reference).await {
            tracing::warn!(
                kind = %K::kind(&()),
                name = reference.name.as_deref().unwrap_or(""),
                reason,
                error = %e,
                "could not record an event"
            );
        }
    }
}
