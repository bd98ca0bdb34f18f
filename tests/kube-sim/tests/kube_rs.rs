//! The kube-rs runtime pieces a controller uses, against kube-sim: the finalizer helper
//! (JSON patches with `test`), the events Recorder (events.k8s.io, seen through core/v1
//! with involvedObject field selectors as `kubectl describe` reads them), and Leases.

mod common;

use common::{eventually, start};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Event as FinalizerEvent};
use kube::Resource;
use serde_json::json;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

#[tokio::test]
async fn finalizer_helper_adds_and_removes_its_finalizer() {
    let sim = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "default");
    let c: ConfigMap = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "f"}}),
    )
    .unwrap();
    cms.create(&PostParams::default(), &c).await.unwrap();
    let fin = "test.kube-sim.io/cleanup";
    // First pass adds the finalizer.
    let obj = Arc::new(cms.get("f").await.unwrap());
    finalizer(&cms, fin, obj, |_ev: FinalizerEvent<ConfigMap>| async {
        Ok::<_, Never>(Action::await_change())
    })
    .await
    .unwrap();
    assert_eq!(
        cms.get("f").await.unwrap().metadata.finalizers.unwrap(),
        vec![fin.to_string()]
    );
    // Deletion waits; the cleanup pass removes the finalizer and the object goes.
    cms.delete("f", &DeleteParams::default()).await.unwrap();
    let obj = Arc::new(cms.get("f").await.unwrap());
    assert!(obj.metadata.deletion_timestamp.is_some());
    let mut cleaned = false;
    finalizer(&cms, fin, obj, |ev: FinalizerEvent<ConfigMap>| {
        cleaned = matches!(ev, FinalizerEvent::Cleanup(_));
        async { Ok::<_, Never>(Action::await_change()) }
    })
    .await
    .unwrap();
    assert!(cleaned);
    assert!(cms.get("f").await.is_err());
}

#[tokio::test]
async fn recorder_events_show_up_as_core_events() {
    let sim = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "default");
    let c: ConfigMap = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "e"}}),
    )
    .unwrap();
    let c = cms.create(&PostParams::default(), &c).await.unwrap();
    let reporter = Reporter {
        controller: "dprepo-controller".into(),
        instance: Some("pod-1".into()),
    };
    let rec = Recorder::new(sim.client.clone(), reporter);
    let ev = Event {
        type_: EventType::Normal,
        reason: "Ready".into(),
        note: Some("all good".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    rec.publish(&ev, &c.object_ref(&())).await.unwrap();
    let events: Api<CoreEvent> = Api::namespaced(sim.client.clone(), "default");
    let uid = c.metadata.uid.clone().unwrap();
    let sel =
        format!("involvedObject.name=e,involvedObject.namespace=default,involvedObject.uid={uid}");
    eventually("event visible", || async {
        events
            .list(&ListParams::default().fields(&sel))
            .await
            .is_ok_and(|l| l.items.len() == 1)
    })
    .await;
    let e = events
        .list(&ListParams::default().fields(&sel))
        .await
        .unwrap()
        .items
        .remove(0);
    assert_eq!(e.reason.as_deref(), Some("Ready"));
    assert_eq!(e.message.as_deref(), Some("all good"));
    assert_eq!(e.reporting_component.as_deref(), Some("dprepo-controller"));
}

#[tokio::test]
async fn leases_can_be_taken_and_renewed_with_conflicts() {
    let sim = start().await;
    let leases: Api<Lease> = Api::namespaced(sim.client.clone(), "default");
    let l: Lease = serde_json::from_value(json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "leader"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "acquireTime": "2026-01-01T00:00:00.000000Z", "renewTime": "2026-01-01T00:00:00.000000Z"}})).unwrap();
    let l = leases.create(&PostParams::default(), &l).await.unwrap();
    let mut renewed = l.clone();
    renewed.spec.as_mut().unwrap().holder_identity = Some("b".into());
    leases
        .replace("leader", &PostParams::default(), &renewed)
        .await
        .unwrap();
    // A second contender with the old version loses.
    let e = leases
        .replace("leader", &PostParams::default(), &l)
        .await
        .unwrap_err();
    assert!(matches!(e, kube::Error::Api(s) if s.code == 409));
    let bad: Lease = serde_json::from_value(
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "bad"},
        "spec": {"leaseDurationSeconds": 0}}),
    )
    .unwrap();
    let e = leases
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err();
    assert!(matches!(e, kube::Error::Api(s) if s.code == 422));
}
