//! REST semantics through kube-rs: CRUD, conflicts, status subresource, generation,
//! namespaces, finalizers, garbage collection, selectors, paging, patches.

mod common;

use common::{eventually, start, status};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolumeClaim, Pod, Secret, ServiceAccount,
};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "1"}})).unwrap()
}

#[tokio::test]
async fn crud_conflicts_and_not_found() {
    let sim = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "default");
    let created = cms
        .create(&PostParams::default(), &cm("one"))
        .await
        .unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    assert!(!uid.is_empty());
    assert!(created.metadata.creation_timestamp.is_some());
    let rv1 = created.metadata.resource_version.clone().unwrap();

    let dup = status(
        cms.create(&PostParams::default(), &cm("one"))
            .await
            .unwrap_err(),
    );
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(dup.message, "configmaps \"one\" already exists");

    let mut upd = created.clone();
    upd.data = Some([("a".to_string(), "2".to_string())].into());
    let updated = cms
        .replace("one", &PostParams::default(), &upd)
        .await
        .unwrap();
    assert_ne!(
        updated.metadata.resource_version.as_deref(),
        Some(rv1.as_str())
    );

    // The stale copy (old resourceVersion) is refused.
    let stale = status(
        cms.replace("one", &PostParams::default(), &upd)
            .await
            .unwrap_err(),
    );
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        stale.message,
        "Operation cannot be fulfilled on configmaps \"one\": the object has been modified; please apply your changes to the latest version and try again"
    );

    let missing = status(cms.get("nope").await.unwrap_err());
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(missing.message, "configmaps \"nope\" not found");

    // A write that changes nothing keeps the resourceVersion (no event, no new version).
    let same = cms
        .replace("one", &PostParams::default(), &updated)
        .await
        .unwrap();
    assert_eq!(
        same.metadata.resource_version,
        updated.metadata.resource_version
    );

    cms.delete("one", &DeleteParams::default()).await.unwrap();
    assert_eq!(status(cms.get("one").await.unwrap_err()).code, 404);
}

#[tokio::test]
async fn generate_name_dry_run_and_invalid_names() {
    let sim = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "default");
    let g: ConfigMap = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "gen-"}}),
    )
    .unwrap();
    let made = cms.create(&PostParams::default(), &g).await.unwrap();
    let n = made.metadata.name.unwrap();
    assert!(n.starts_with("gen-") && n.len() == 9, "{n}");

    let dry = cms
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &cm("dry"),
        )
        .await
        .unwrap();
    assert_eq!(dry.metadata.name.as_deref(), Some("dry"));
    assert_eq!(status(cms.get("dry").await.unwrap_err()).code, 404);

    let bad = status(
        cms.create(&PostParams::default(), &cm("Bad_Name"))
            .await
            .unwrap_err(),
    );
    assert_eq!((bad.code, bad.reason.as_str()), (422, "Invalid"));
    assert!(bad.message.starts_with("ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"), "{}", bad.message);
    let causes = bad.details.unwrap().causes;
    assert_eq!(causes[0].field, "metadata.name");
}

#[tokio::test]
async fn namespaces_refuse_missing_and_terminating_and_delete_contents() {
    let sim = start().await;
    let missing: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "nowhere");
    let e = status(
        missing
            .create(&PostParams::default(), &cm("x"))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (404, "namespaces \"nowhere\" not found")
    );

    let nss: Api<Namespace> = Api::all(sim.client.clone());
    let ns: Namespace = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "work"}}),
    )
    .unwrap();
    let ns = nss.create(&PostParams::default(), &ns).await.unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Active"));
    assert_eq!(
        ns.metadata.labels.unwrap()["kubernetes.io/metadata.name"],
        "work"
    );
    let cms: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "work");
    // The namespace controller adds the default service account and the root CA.
    let sas: Api<ServiceAccount> = Api::namespaced(sim.client.clone(), "work");
    eventually("default service account", || async {
        sas.get("default").await.is_ok()
    })
    .await;
    eventually("root CA configmap", || async {
        cms.get("kube-root-ca.crt").await.is_ok()
    })
    .await;

    // An object with a finalizer keeps the namespace terminating.
    let mut held = cm("held");
    held.metadata.finalizers = Some(vec!["test.io/hold".into()]);
    cms.create(&PostParams::default(), &held).await.unwrap();
    cms.create(&PostParams::default(), &cm("plain"))
        .await
        .unwrap();
    nss.delete("work", &DeleteParams::default()).await.unwrap();
    let t = nss.get("work").await.unwrap();
    assert_eq!(t.status.unwrap().phase.as_deref(), Some("Terminating"));
    let refused = status(
        cms.create(&PostParams::default(), &cm("late"))
            .await
            .unwrap_err(),
    );
    assert_eq!(refused.code, 403);
    assert_eq!(refused.message, "configmaps \"late\" is forbidden: unable to create new content in namespace work because it is being terminated");
    eventually("plain configmap deleted", || async {
        cms.get("plain").await.is_err()
    })
    .await;
    assert!(
        nss.get("work").await.is_ok(),
        "namespace must wait for the finalizer"
    );
    let pp = PatchParams::default();
    cms.patch(
        "held",
        &pp,
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually("namespace gone", || async {
        nss.get("work").await.is_err()
    })
    .await;

    let e = status(
        nss.delete("default", &DeleteParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            403,
            "namespaces \"default\" is forbidden: this namespace may not be deleted"
        )
    );
}

#[tokio::test]
async fn finalizers_hold_deletion_and_refuse_additions() {
    let sim = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "default");
    let mut c = cm("f");
    c.metadata.finalizers = Some(vec!["test.io/a".into(), "test.io/b".into()]);
    cms.create(&PostParams::default(), &c).await.unwrap();
    let d = cms.delete("f", &DeleteParams::default()).await.unwrap();
    let obj = d.left().expect("object returned while finalizers remain");
    assert!(obj.metadata.deletion_timestamp.is_some());
    assert_eq!(obj.metadata.deletion_grace_period_seconds, Some(0));

    // Adding a finalizer to a terminating object is refused.
    let e = status(
        cms.patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"finalizers": ["test.io/a", "test.io/b", "test.io/c"]}}),
            ),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert!(
        e.message
            .contains("no new finalizers can be added if the object is being deleted"),
        "{}",
        e.message
    );

    // JSON patch with test, as kube-rs' finalizer helper does it.
    let jp: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/finalizers", "value": ["test.io/a", "test.io/b"]},
        {"op": "replace", "path": "/metadata/finalizers", "value": ["test.io/b"]}
    ]))
    .unwrap();
    cms.patch("f", &PatchParams::default(), &Patch::<()>::Json(jp.clone()))
        .await
        .unwrap();
    // The same test now fails: 422.
    let e = status(
        cms.patch("f", &PatchParams::default(), &Patch::<()>::Json(jp))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    cms.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": []}})),
    )
    .await
    .unwrap();
    assert_eq!(status(cms.get("f").await.unwrap_err()).code, 404);
}

fn owned_cm(name: &str, owner: &ConfigMap, block: bool) -> ConfigMap {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name,
        "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": owner.metadata.name, "uid": owner.metadata.uid, "blockOwnerDeletion": block}]}}))
    .unwrap()
}

#[tokio::test]
async fn owner_garbage_collection_background_foreground_orphan() {
    let sim = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "default");
    let pp = PostParams::default();
    // Background: dependents go after the owner.
    let o1 = cms.create(&pp, &cm("owner1")).await.unwrap();
    cms.create(&pp, &owned_cm("dep1", &o1, false))
        .await
        .unwrap();
    cms.delete("owner1", &DeleteParams::background())
        .await
        .unwrap();
    assert_eq!(status(cms.get("owner1").await.unwrap_err()).code, 404);
    eventually("dep1 collected", || async {
        cms.get("dep1").await.is_err()
    })
    .await;

    // Foreground: the owner waits for blocking dependents.
    let o2 = cms.create(&pp, &cm("owner2")).await.unwrap();
    let mut dep2 = owned_cm("dep2", &o2, true);
    dep2.metadata.finalizers = Some(vec!["test.io/slow".into()]);
    cms.create(&pp, &dep2).await.unwrap();
    cms.delete("owner2", &DeleteParams::foreground())
        .await
        .unwrap();
    let owner = cms.get("owner2").await.unwrap();
    assert!(owner
        .metadata
        .finalizers
        .unwrap()
        .contains(&"foregroundDeletion".to_string()));
    eventually("dep2 terminating", || async {
        cms.get("dep2")
            .await
            .is_ok_and(|d| d.metadata.deletion_timestamp.is_some())
    })
    .await;
    assert!(
        cms.get("owner2").await.is_ok(),
        "owner waits for its blocking dependent"
    );
    cms.patch(
        "dep2",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually("owner2 gone", || async { cms.get("owner2").await.is_err() }).await;

    // Orphan: dependents stay, without the reference.
    let o3 = cms.create(&pp, &cm("owner3")).await.unwrap();
    cms.create(&pp, &owned_cm("dep3", &o3, false))
        .await
        .unwrap();
    cms.delete("owner3", &DeleteParams::orphan()).await.unwrap();
    eventually("owner3 gone", || async { cms.get("owner3").await.is_err() }).await;
    let d3 = cms.get("dep3").await.unwrap();
    assert!(d3.metadata.owner_references.unwrap_or_default().is_empty());

    // A dependent whose owner never existed is collected.
    let ghost: ConfigMap = serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ghost",
        "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "none", "uid": "00000000-0000-0000-0000-000000000000"}]}})).unwrap();
    cms.create(&pp, &ghost).await.unwrap();
    eventually("ghost collected", || async {
        cms.get("ghost").await.is_err()
    })
    .await;
}

#[tokio::test]
async fn delete_preconditions() {
    let sim = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "default");
    cms.create(&PostParams::default(), &cm("p")).await.unwrap();
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("wrong".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    let e = status(cms.delete("p", &dp).await.unwrap_err());
    assert_eq!(e.code, 409);
    assert!(
        e.message
            .contains("Precondition failed: UID in precondition: wrong"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn jobs_orphan_pods_by_default_with_a_warning_and_validate_templates() {
    let sim = start().await;
    let jobs: Api<Job> = Api::namespaced(sim.client.clone(), "default");
    let bad: Job = serde_json::from_value(json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
        "spec": {"template": {"spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "busybox"}]}}}})).unwrap();
    let e = status(jobs.create(&PostParams::default(), &bad).await.unwrap_err());
    assert_eq!(e.message, "Job.batch \"j\" is invalid: spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\"");
    let good: Job = serde_json::from_value(json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}})).unwrap();
    let j = jobs.create(&PostParams::default(), &good).await.unwrap();
    let uid = j.metadata.uid.clone().unwrap();
    let spec = j.spec.clone().unwrap();
    assert_eq!(spec.backoff_limit, Some(6));
    assert_eq!(
        spec.selector.unwrap().match_labels.unwrap()["batch.kubernetes.io/controller-uid"],
        uid
    );
    assert_eq!(
        spec.template.metadata.unwrap().labels.unwrap()["job-name"],
        "j"
    );
    assert_eq!(j.metadata.generation, Some(1));
    // The template is immutable.
    let e = status(
        jobs.patch("j", &PatchParams::default(), &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "alpine"}]}}}})))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert!(
        e.message.contains("spec.template: Invalid value"),
        "{}",
        e.message
    );
    // Status writes go through /status only and do not bump the generation.
    let st = jobs
        .patch_status(
            "j",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"active": 1}})),
        )
        .await
        .unwrap();
    assert_eq!(st.status.unwrap().active, Some(1));
    assert_eq!(st.metadata.generation, Some(1));
    let ignored = jobs
        .patch(
            "j",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"active": 5}})),
        )
        .await
        .unwrap();
    assert_eq!(
        ignored.status.unwrap().active,
        Some(1),
        "main resource writes ignore status"
    );
    let bumped = jobs
        .patch(
            "j",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"backoffLimit": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(bumped.metadata.generation, Some(2));
}

#[tokio::test]
async fn pods_need_their_service_account_and_get_a_token_volume() {
    let sim = start().await;
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    let sas: Api<ServiceAccount> = Api::namespaced(sim.client.clone(), "default");
    eventually("default SA", || async { sas.get("default").await.is_ok() }).await;
    let p: Pod = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"serviceAccountName": "worker", "containers": [{"name": "c", "image": "busybox"}]}})).unwrap();
    let e = status(pods.create(&PostParams::default(), &p).await.unwrap_err());
    assert_eq!(e.code, 403);
    assert!(
        e.message.contains("serviceaccount \"worker\" not found"),
        "{}",
        e.message
    );
    let ok: Pod = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
    )
    .unwrap();
    let made = pods.create(&PostParams::default(), &ok).await.unwrap();
    let spec = made.spec.unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
    let vols = spec.volumes.unwrap();
    assert!(vols[0].name.starts_with("kube-api-access-"));
    assert_eq!(made.status.unwrap().phase.as_deref(), Some("Pending"));
    // An unscheduled pod is deleted at once.
    pods.delete("p", &DeleteParams::default()).await.unwrap();
    assert!(pods.get("p").await.is_err());
}

#[tokio::test]
async fn pvcs_bind_immediately_and_specs_are_immutable() {
    let sim = start().await;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(sim.client.clone(), "default");
    let c: PersistentVolumeClaim = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
    )
    .unwrap();
    pvcs.create(&PostParams::default(), &c).await.unwrap();
    eventually("pvc bound", || async {
        pvcs.get("data")
            .await
            .is_ok_and(|p| p.status.and_then(|s| s.phase).as_deref() == Some("Bound"))
    })
    .await;
    let bound = pvcs.get("data").await.unwrap();
    assert_eq!(
        bound.spec.as_ref().unwrap().storage_class_name.as_deref(),
        Some("standard")
    );
    assert!(bound
        .spec
        .as_ref()
        .unwrap()
        .volume_name
        .as_deref()
        .unwrap()
        .starts_with("pvc-"));
    let e = status(
        pvcs.patch(
            "data",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"accessModes": ["ReadWriteMany"]}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert!(
        e.message.contains("spec is immutable after creation"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn secrets_check_keys_and_immutability() {
    let sim = start().await;
    let secrets: Api<Secret> = Api::namespaced(sim.client.clone(), "default");
    let s: Secret = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
        "immutable": true, "stringData": {"datasafed.conf": "x"}}),
    )
    .unwrap();
    let made = secrets.create(&PostParams::default(), &s).await.unwrap();
    assert!(made.string_data.is_none());
    assert_eq!(made.data.unwrap()["datasafed.conf"].0, b"x");
    let e = status(
        secrets
            .patch(
                "s",
                &PatchParams::default(),
                &Patch::Merge(json!({"stringData": {"datasafed.conf": "y"}})),
            )
            .await
            .unwrap_err(),
    );
    assert!(
        e.message
            .contains("field is immutable when `immutable` is set"),
        "{}",
        e.message
    );
    let bad = sim
        .raw("POST", "/api/v1/namespaces/default/secrets", "application/json", Some(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "b"}, "data": {"k": "not base64!"}})))
        .await
        .unwrap_err();
    assert_eq!(bad.code, 400);
    let badkey = status(
        secrets
            .create(&PostParams::default(), &serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "k"}, "stringData": {"a/b": "x"}})).unwrap())
            .await
            .unwrap_err(),
    );
    assert!(
        badkey
            .message
            .contains("data[a/b]: Invalid value: \"a/b\": a valid config key"),
        "{}",
        badkey.message
    );
}

#[tokio::test]
async fn selectors_and_paging() {
    let sim = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "default");
    for i in 0..5 {
        let mut c = cm(&format!("c{i}"));
        c.metadata.labels = Some(
            [
                ("n".to_string(), i.to_string()),
                ("app".to_string(), "x".to_string()),
            ]
            .into(),
        );
        cms.create(&PostParams::default(), &c).await.unwrap();
    }
    let l = cms
        .list(&ListParams::default().labels("app=x,n in (1,2)"))
        .await
        .unwrap();
    assert_eq!(l.items.len(), 2);
    let l = cms
        .list(&ListParams::default().labels("n!=1,app"))
        .await
        .unwrap();
    assert_eq!(l.items.len(), 4);
    let l = cms
        .list(&ListParams::default().fields("metadata.name=c3"))
        .await
        .unwrap();
    assert_eq!(l.items.len(), 1);
    let e = status(
        cms.list(&ListParams::default().fields("data.a=1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (400, "field label not supported: data.a")
    );
    // Paging over a consistent snapshot.
    let p1 = cms
        .list(&ListParams::default().labels("app=x").limit(2))
        .await
        .unwrap();
    assert_eq!(p1.items.len(), 2);
    let tok = p1.metadata.continue_.clone().unwrap();
    assert_eq!(
        p1.metadata.remaining_item_count, None,
        "no count with a label selector"
    );
    cms.create(&PostParams::default(), &cm("zz-later"))
        .await
        .unwrap();
    let p2 = cms
        .list(
            &ListParams::default()
                .labels("app=x")
                .limit(10)
                .continue_token(&tok),
        )
        .await
        .unwrap();
    assert_eq!(p2.items.len(), 3);
    assert_eq!(p2.metadata.resource_version, p1.metadata.resource_version);
    // Cluster-wide list of a namespaced kind.
    let all: Api<ConfigMap> = Api::all(sim.client.clone());
    assert!(all.list(&ListParams::default()).await.unwrap().items.len() >= 6);
}

/// Waits until the garbage collector has made at least one full pass: a ConfigMap
/// referring to an owner that never existed is collected.
async fn one_gc_pass(cms: &Api<ConfigMap>, name: &str) {
    let ghost: ConfigMap = serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name,
        "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "none", "uid": "00000000-0000-0000-0000-00000000beef"}]}})).unwrap();
    cms.create(&PostParams::default(), &ghost).await.unwrap();
    eventually("a garbage collection pass", || async {
        cms.get(name).await.is_err()
    })
    .await;
}

/// As on a real API server: an owner deleted in the background but held by a finalizer
/// (a controller's cleanup) still exists, so the garbage collector leaves its dependents,
/// also ones created after the deletion began (a controller's cleanup Job), until the
/// finalizer goes. Deleted in the foreground, the owner's dependents go at once, while
/// the finalizer keeps the owner.
#[tokio::test]
async fn an_owner_held_by_a_finalizer_keeps_its_dependents_unless_deleted_in_the_foreground() {
    let sim = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "default");
    let pp = PostParams::default();
    let mut owner = cm("held");
    owner.metadata.finalizers = Some(vec!["test.io/cleanup".into()]);
    let o = cms.create(&pp, &owner).await.unwrap();
    cms.create(&pp, &owned_cm("held-dep", &o, true))
        .await
        .unwrap();
    cms.delete("held", &DeleteParams::background())
        .await
        .unwrap();
    let terminating = cms.get("held").await.unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());
    // The cleanup's own dependent, made while the owner is being deleted.
    cms.create(&pp, &owned_cm("held-job", &o, true))
        .await
        .unwrap();
    one_gc_pass(&cms, "ghost-a").await;
    one_gc_pass(&cms, "ghost-b").await;
    for dep in ["held-dep", "held-job"] {
        let d = cms.get(dep).await.unwrap();
        assert!(d.metadata.deletion_timestamp.is_none(), "{dep} kept");
    }
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually("held gone", || async { cms.get("held").await.is_err() }).await;
    eventually("its dependents collected", || async {
        cms.get("held-dep").await.is_err() && cms.get("held-job").await.is_err()
    })
    .await;

    // Foreground: the dependents are deleted while the finalizer keeps the owner; then
    // only the finalizer remains.
    let mut owner = cm("fg");
    owner.metadata.finalizers = Some(vec!["test.io/cleanup".into()]);
    let o = cms.create(&pp, &owner).await.unwrap();
    cms.create(&pp, &owned_cm("fg-dep", &o, true))
        .await
        .unwrap();
    cms.delete("fg", &DeleteParams::foreground()).await.unwrap();
    eventually("fg-dep collected", || async {
        cms.get("fg-dep").await.is_err()
    })
    .await;
    eventually("only the cleanup finalizer left", || async {
        cms.get("fg").await.is_ok_and(|o| {
            o.metadata.finalizers.unwrap_or_default() == ["test.io/cleanup".to_string()]
        })
    })
    .await;
    // A dependent made now (the owner no longer waits for dependents) is kept.
    cms.create(&pp, &owned_cm("fg-late", &o, true))
        .await
        .unwrap();
    one_gc_pass(&cms, "ghost-c").await;
    assert!(cms.get("fg-late").await.is_ok());
}

/// kube-sim ignored the propagation policy of a second delete of an object already being
/// deleted, where the API server's store sets the `foregroundDeletion` / `orphan`
/// finalizers anew: `kubectl delete --cascade=foreground` of an owner a finalizer held in
/// a background deletion did not delete its dependents. And a dependent with another,
/// live owner was deleted with a foreground-deleting one, where the real collector only
/// removes the reference to the deleting owner.
#[tokio::test]
async fn a_second_delete_switches_to_the_foreground_and_spares_dependents_held_by_another_owner() {
    let sim = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "default");
    let pp = PostParams::default();
    let mut owner = cm("twice");
    owner.metadata.finalizers = Some(vec!["test.io/cleanup".into()]);
    let o = cms.create(&pp, &owner).await.unwrap();
    cms.create(&pp, &owned_cm("twice-dep", &o, true))
        .await
        .unwrap();
    cms.delete("twice", &DeleteParams::background())
        .await
        .unwrap();
    let first = cms.get("twice").await.unwrap();
    let since = first.metadata.deletion_timestamp.clone().unwrap();
    one_gc_pass(&cms, "ghost-d").await;
    assert!(cms.get("twice-dep").await.is_ok(), "background: kept");
    cms.delete("twice", &DeleteParams::foreground())
        .await
        .unwrap();
    let again = cms.get("twice").await.unwrap();
    assert_eq!(again.metadata.deletion_timestamp, Some(since));
    eventually("twice-dep collected", || async {
        cms.get("twice-dep").await.is_err()
    })
    .await;
    eventually("only the cleanup finalizer left", || async {
        cms.get("twice").await.is_ok_and(|o| {
            o.metadata.finalizers.unwrap_or_default() == ["test.io/cleanup".to_string()]
        })
    })
    .await;

    // Two owners, one deleted in the foreground: the dependent stays with the other.
    let going = cms.create(&pp, &cm("going")).await.unwrap();
    let staying = cms.create(&pp, &cm("staying")).await.unwrap();
    let reference = |o: &ConfigMap| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "name": o.metadata.name,
            "uid": o.metadata.uid, "blockOwnerDeletion": true})
    };
    let shared: ConfigMap = serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "shared", "ownerReferences": [reference(&going), reference(&staying)]}}))
    .unwrap();
    cms.create(&pp, &shared).await.unwrap();
    cms.delete("going", &DeleteParams::foreground())
        .await
        .unwrap();
    eventually("going gone", || async { cms.get("going").await.is_err() }).await;
    let kept = cms.get("shared").await.unwrap();
    assert!(kept.metadata.deletion_timestamp.is_none());
    let owners: Vec<String> = kept
        .metadata
        .owner_references
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(owners, ["staying"]);
}
