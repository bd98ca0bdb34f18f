//! Watches: resume from a resourceVersion after a disconnect, 410 on compacted history,
//! bookmarks, streaming lists (sendInitialEvents), selector transitions, timeouts, and the
//! kube-runtime watcher on top.

mod common;

use common::start_with;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use serde_json::json;
use std::time::Duration;

fn cm(name: &str, app: &str) -> ConfigMap {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"app": app}}})).unwrap()
}

async fn next_event(
    s: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<ConfigMap>>> + Unpin),
) -> WatchEvent<ConfigMap> {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("event in time")
        .expect("stream open")
        .expect("event ok")
}

#[tokio::test]
async fn watch_resumes_from_a_resource_version_after_disconnect() {
    let sim = start_with(Default::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "default");
    let c = cms
        .create(&PostParams::default(), &cm("w", "a"))
        .await
        .unwrap();
    let rv = c.metadata.resource_version.unwrap();
    {
        // A first watch that the client drops (disconnect).
        let s = cms.watch(&WatchParams::default(), &rv).await.unwrap();
        drop(s);
    }
    for v in ["1", "2"] {
        cms.patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"v": v}})),
        )
        .await
        .unwrap();
    }
    cms.delete("w", &Default::default()).await.unwrap();
    let mut s = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match next_event(&mut s).await {
        WatchEvent::Modified(o) => assert_eq!(o.data.unwrap()["v"], "1"),
        other => panic!("expected MODIFIED, got {other:?}"),
    }
    match next_event(&mut s).await {
        WatchEvent::Modified(o) => assert_eq!(o.data.unwrap()["v"], "2"),
        other => panic!("expected MODIFIED, got {other:?}"),
    }
    assert!(matches!(next_event(&mut s).await, WatchEvent::Deleted(_)));
}

#[tokio::test]
async fn watch_from_compacted_history_gets_410() {
    let sim = start_with(kube_sim::Options {
        watch_history: Some(5),
        ..Default::default()
    })
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "default");
    let c = cms
        .create(&PostParams::default(), &cm("old", "a"))
        .await
        .unwrap();
    let rv = c.metadata.resource_version.unwrap();
    for i in 0..10 {
        cms.create(&PostParams::default(), &cm(&format!("n{i}"), "a"))
            .await
            .unwrap();
    }
    let mut s = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match next_event(&mut s).await {
        WatchEvent::Error(e) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
            assert!(
                e.message.starts_with("too old resource version"),
                "{}",
                e.message
            );
        }
        other => panic!("expected ERROR 410, got {other:?}"),
    }
    // A list at that version is gone too.
    let e = sim
        .raw("GET", &format!("/api/v1/namespaces/default/configmaps?resourceVersion={rv}&resourceVersionMatch=Exact"), "", None)
        .await
        .unwrap_err();
    assert_eq!(e.code, 410);
    // Compaction on demand.
    let now = cms
        .list(&Default::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    cms.create(&PostParams::default(), &cm("after", "a"))
        .await
        .unwrap();
    sim.handle.cluster.compact();
    let mut s = cms
        .watch(&WatchParams::default(), &now)
        .await
        .unwrap()
        .boxed();
    assert!(matches!(next_event(&mut s).await, WatchEvent::Error(e) if e.code == 410));
}

#[tokio::test]
async fn bookmarks_selectors_and_timeouts() {
    let sim = start_with(kube_sim::Options {
        bookmark_interval: Some(Duration::from_millis(200)),
        ..Default::default()
    })
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "default");
    let c = cms
        .create(&PostParams::default(), &cm("s", "a"))
        .await
        .unwrap();
    let rv = c.metadata.resource_version.unwrap();
    let mut s = cms
        .watch(&WatchParams::default().labels("app=a"), &rv)
        .await
        .unwrap()
        .boxed();
    assert!(matches!(next_event(&mut s).await, WatchEvent::Bookmark(_)));
    // Losing the label looks like a deletion to a selector watch.
    cms.patch(
        "s",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "b"}}})),
    )
    .await
    .unwrap();
    loop {
        match next_event(&mut s).await {
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Deleted(o) => {
                assert_eq!(o.metadata.labels.unwrap()["app"], "b");
                break;
            }
            other => panic!("expected DELETED, got {other:?}"),
        }
    }
    // timeoutSeconds ends the stream.
    let mut t = cms
        .watch(&WatchParams::default().timeout(1), &rv)
        .await
        .unwrap()
        .boxed();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(e) = t.next().await {
            e.unwrap();
        }
    })
    .await;
    assert!(ended.is_ok(), "watch must end after timeoutSeconds");
}

#[tokio::test]
async fn streaming_lists_end_with_the_initial_events_bookmark() {
    let sim = start_with(Default::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "default");
    cms.create(&PostParams::default(), &cm("x1", "a"))
        .await
        .unwrap();
    let v = sim
        .raw(
            "GET",
            "/api/v1/namespaces/default/configmaps?watch=1&sendInitialEvents=true&timeoutSeconds=1",
            "",
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(
        v.code, 422,
        "sendInitialEvents needs resourceVersionMatch=NotOlderThan"
    );
    // kube-runtime's watcher in streaming-list mode.
    let stream = watcher(cms.clone(), watcher::Config::default().streaming_lists()).boxed();
    let events: Vec<_> = tokio::time::timeout(
        Duration::from_secs(10),
        stream
            .try_take_while(|e| futures::future::ready(Ok(!matches!(e, watcher::Event::InitDone))))
            .try_collect::<Vec<_>>(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(matches!(events[0], watcher::Event::Init));
    assert!(events.iter().any(
        |e| matches!(e, watcher::Event::InitApply(o) if o.metadata.name.as_deref() == Some("x1"))
    ));
    // (The namespace's kube-root-ca.crt is listed too.)
    assert_eq!(events.len(), 3);
    // And in list-then-watch mode.
    let mut stream = watcher(cms.clone(), watcher::Config::default()).boxed();
    let mut seen_done = false;
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
    {
        if matches!(ev.unwrap(), watcher::Event::InitDone) {
            seen_done = true;
            break;
        }
    }
    assert!(seen_done);
    cms.create(&PostParams::default(), &cm("x2", "a"))
        .await
        .unwrap();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let watcher::Event::Apply(o) = ev {
            assert_eq!(o.metadata.name.as_deref(), Some("x2"));
            break;
        }
    }
}
