//! Custom resources: CRD registration and status, discovery, schema validation, pruning,
//! Strict field validation, defaults, CEL rules (with transition rules), the status
//! subresource, server-side apply, printer columns, and deletion of objects with the CRD.

mod common;

use common::{eventually, start, status, Sim};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::discovery::Discovery;
use serde_json::{json, Value};

fn crd() -> Value {
    json!({
      "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
      "metadata": {"name": "widgets.test.kube-sim.io"},
      "spec": {"group": "test.kube-sim.io", "scope": "Namespaced",
        "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"], "categories": ["kubesim"]},
        "versions": [{"name": "v1", "served": true, "storage": true,
          "subresources": {"status": {}},
          "additionalPrinterColumns": [
            {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}],
          "schema": {"openAPIV3Schema": {"type": "object", "properties": {
            "spec": {"type": "object", "required": ["size"],
              "x-kubernetes-validations": [{"rule": "self.size <= self.max", "message": "size must not exceed max"}],
              "properties": {
                "size": {"type": "integer", "minimum": 1},
                "max": {"type": "integer", "default": 10},
                "mode": {"type": "string", "enum": ["fast", "slow"], "default": "fast"},
                "when": {"type": "string", "format": "date-time"},
                "port": {"x-kubernetes-int-or-string": true},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "name": {"type": "string", "maxLength": 8,
                  "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "name is immutable"}]}}},
            "status": {"type": "object", "properties": {
              "phase": {"type": "string"},
              "conditions": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
                "items": {"type": "object", "required": ["type", "status"],
                  "properties": {"type": {"type": "string"}, "status": {"type": "string"}}}}}}}}}}]}
    })
}

fn widgets(sim: &Sim) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("test.kube-sim.io", "v1", "Widget"),
        "widgets",
    );
    Api::namespaced_with(sim.client.clone(), "default", &ar)
}

fn widget(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({"apiVersion": "test.kube-sim.io/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec})).unwrap()
}

async fn install(sim: &Sim) {
    let crds: Api<CustomResourceDefinition> = Api::all(sim.client.clone());
    let c: CustomResourceDefinition = serde_json::from_value(crd()).unwrap();
    crds.create(&PostParams::default(), &c).await.unwrap();
    let got = crds.get("widgets.test.kube-sim.io").await.unwrap();
    let st = got.status.unwrap();
    let conds = st.conditions.unwrap();
    assert!(conds
        .iter()
        .any(|c| c.type_ == "Established" && c.status == "True"));
    assert!(conds
        .iter()
        .any(|c| c.type_ == "NamesAccepted" && c.status == "True"));
    assert_eq!(st.accepted_names.unwrap().kind, "Widget");
    assert_eq!(st.stored_versions.unwrap(), vec!["v1".to_string()]);
}

#[tokio::test]
async fn crd_registers_and_is_discoverable() {
    let sim = start().await;
    install(&sim).await;
    let d = Discovery::new(sim.client.clone()).run().await.unwrap();
    let (ar, caps) = d
        .groups()
        .flat_map(|g| g.recommended_resources())
        .find(|(ar, _)| ar.kind == "Widget")
        .expect("Widget discovered");
    assert_eq!(ar.plural, "widgets");
    assert!(caps.subresources.iter().any(|(s, _)| s.plural == "status"));

    // An invalid CRD is refused with the field.
    let crds: Api<CustomResourceDefinition> = Api::all(sim.client.clone());
    let mut bad = crd();
    bad["metadata"]["name"] = json!("gadgets.test.kube-sim.io");
    bad["spec"]["names"] = json!({"plural": "gadgets", "kind": "Gadget"});
    bad["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["x-kubernetes-validations"] = json!([{"rule": "self.size <=", "message": "broken"}]);
    let e = status(
        crds.create(
            &PostParams::default(),
            &serde_json::from_value(bad).unwrap(),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert!(
        e.message.contains("x-kubernetes-validations[0].rule"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn schema_validation_pruning_defaults_and_cel() {
    let sim = start().await;
    install(&sim).await;
    let w = widgets(&sim);
    // Pruned unknown fields, defaults, preserved unknown fields under x-kubernetes-preserve-unknown-fields.
    let made = w
        .create(
            &PostParams::default(),
            &widget(
                "a",
                json!({"size": 2, "bogus": 1, "extra": {"anything": {"x": 1}}, "port": "http"}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(made.data["spec"]["max"], 10);
    assert_eq!(made.data["spec"]["mode"], "fast");
    assert!(made.data["spec"].get("bogus").is_none());
    assert_eq!(made.data["spec"]["extra"]["anything"]["x"], 1);
    // fieldValidation=Strict refuses unknown fields.
    let e = sim
        .raw(
            "POST",
            "/apis/test.kube-sim.io/v1/namespaces/default/widgets?fieldValidation=Strict",
            "application/json",
            Some(json!({"apiVersion": "test.kube-sim.io/v1", "kind": "Widget", "metadata": {"name": "s"}, "spec": {"size": 1, "bogus": 1}})),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, 400);
    assert!(
        e.message.contains("unknown field \"spec.bogus\""),
        "{}",
        e.message
    );
    // Type, enum, minimum, format, required, maxLength.
    let e = status(
        w.create(
            &PostParams::default(),
            &widget(
                "b",
                json!({"size": 0, "mode": "medium", "when": "today", "name": "far-too-long"}),
            ),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    for want in [
        "spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1",
        "spec.mode: Unsupported value: \"medium\": supported values: \"fast\", \"slow\"",
        "spec.when: Invalid value: \"today\": spec.when in body must be of type date-time: \"today\"",
        "spec.name: Too long: may not be longer than 8",
    ] {
        assert!(e.message.contains(want), "missing {want:?} in {}", e.message);
    }
    let e = status(
        w.create(&PostParams::default(), &widget("c", json!({"max": 3})))
            .await
            .unwrap_err(),
    );
    assert!(
        e.message.contains("spec.size: Required value"),
        "{}",
        e.message
    );
    let e = status(
        w.create(&PostParams::default(), &widget("d", json!({"size": "3"})))
            .await
            .unwrap_err(),
    );
    assert!(e.message.contains("spec.size: Invalid value: \"3\": spec.size in body must be of type integer: \"string\""), "{}", e.message);
    // CEL rule (with the defaulted max).
    let e = status(
        w.create(&PostParams::default(), &widget("e", json!({"size": 11})))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.message, "Widget.test.kube-sim.io \"e\" is invalid: spec: Invalid value: \"object\": size must not exceed max");
    // Transition rule on update.
    w.create(
        &PostParams::default(),
        &widget("f", json!({"size": 1, "name": "one"})),
    )
    .await
    .unwrap();
    let e = status(
        w.patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"name": "two"}})),
        )
        .await
        .unwrap_err(),
    );
    assert!(
        e.message
            .contains("spec.name: Invalid value: \"string\": name is immutable"),
        "{}",
        e.message
    );
    // Custom resources need a resourceVersion for PUT.
    let mut f = w.get("f").await.unwrap();
    f.metadata.resource_version = None;
    let e = status(
        w.replace("f", &PostParams::default(), &f)
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert!(
        e.message.contains(
            "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
        ),
        "{}",
        e.message
    );
    // Strategic merge patch is not for custom resources.
    let e = sim
        .raw(
            "PATCH",
            "/apis/test.kube-sim.io/v1/namespaces/default/widgets/f",
            "application/strategic-merge-patch+json",
            Some(json!({"spec": {"size": 2}})),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, 415);
}

#[tokio::test]
async fn status_subresource_ssa_and_printer_columns() {
    let sim = start().await;
    install(&sim).await;
    let w = widgets(&sim);
    w.create(&PostParams::default(), &widget("s", json!({"size": 1})))
        .await
        .unwrap();
    // Main-resource writes ignore status; status writes ignore spec.
    let p = w
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 2}, "status": {"phase": "X"}})),
        )
        .await
        .unwrap();
    assert!(p.data.get("status").is_none());
    assert_eq!(p.metadata.generation, Some(2));
    let ssa = PatchParams::apply("widget-controller");
    let st = w
        .patch_status(
            "s",
            &ssa,
            &Patch::Apply(json!({"apiVersion": "test.kube-sim.io/v1", "kind": "Widget", "status": {"phase": "Ready",
                "conditions": [{"type": "Ready", "status": "True"}]}, "spec": {"size": 9}})),
        )
        .await
        .unwrap();
    assert_eq!(st.data["status"]["phase"], "Ready");
    assert_eq!(st.data["spec"]["size"], 2);
    assert_eq!(st.metadata.generation, Some(2));
    let mf = st.metadata.managed_fields.unwrap();
    assert!(mf
        .iter()
        .any(|m| m.manager.as_deref() == Some("widget-controller")
            && m.subresource.as_deref() == Some("status")));
    // SSA needs a field manager.
    let e = sim
        .raw(
            "PATCH",
            "/apis/test.kube-sim.io/v1/namespaces/default/widgets/s/status",
            "application/apply-patch+yaml",
            Some(json!({"apiVersion": "test.kube-sim.io/v1", "kind": "Widget"})),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, 400);
    // Conflicting apply on the main resource.
    // "a" applies the value the merge patch above set: shared ownership, no conflict.
    w.patch(
        "s",
        &PatchParams::apply("a"),
        &Patch::Apply(
            json!({"apiVersion": "test.kube-sim.io/v1", "kind": "Widget", "spec": {"size": 2}}),
        ),
    )
    .await
    .unwrap();
    let e = status(
        w.patch(
            "s",
            &PatchParams::apply("b"),
            &Patch::Apply(
                json!({"apiVersion": "test.kube-sim.io/v1", "kind": "Widget", "spec": {"size": 4}}),
            ),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 409);
    assert!(e.message.starts_with("Apply failed with 2 conflicts: conflicts with \"a\":\n- .spec.size\nconflicts with \"kube-sim\" using test.kube-sim.io/v1:\n- .spec.size"), "{}", e.message);
    let forced = w
        .patch(
            "s",
            &PatchParams::apply("b").force(),
            &Patch::Apply(
                json!({"apiVersion": "test.kube-sim.io/v1", "kind": "Widget", "spec": {"size": 4}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(forced.data["spec"]["size"], 4);
    // Server-side printing with the CRD's columns.
    let req = http::Request::builder()
        .uri("/apis/test.kube-sim.io/v1/namespaces/default/widgets")
        .header(
            "Accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .body(vec![])
        .unwrap();
    let t: Value = sim.client.request(req).await.unwrap();
    assert_eq!(t["kind"], "Table");
    let names: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["Name", "Size", "Phase", "Ready"]);
    assert_eq!(t["rows"][0]["cells"], json!(["s", 4, "Ready", "True"]));
}

#[tokio::test]
async fn deleting_a_crd_deletes_its_objects_and_unregisters_it() {
    let sim = start().await;
    install(&sim).await;
    let w = widgets(&sim);
    let mut held = widget("held", json!({"size": 1}));
    held.metadata.finalizers = Some(vec!["test.io/hold".into()]);
    w.create(&PostParams::default(), &held).await.unwrap();
    w.create(&PostParams::default(), &widget("plain", json!({"size": 1})))
        .await
        .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(sim.client.clone());
    crds.delete("widgets.test.kube-sim.io", &DeleteParams::default())
        .await
        .unwrap();
    eventually("plain deleted", || async { w.get("plain").await.is_err() }).await;
    let c = crds.get("widgets.test.kube-sim.io").await.unwrap();
    assert!(
        c.metadata.deletion_timestamp.is_some(),
        "CRD waits for its objects"
    );
    let e = status(
        w.create(&PostParams::default(), &widget("new", json!({"size": 1})))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 405);
    w.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually("CRD gone", || async {
        crds.get("widgets.test.kube-sim.io").await.is_err()
    })
    .await;
    let e = status(w.list(&Default::default()).await.unwrap_err());
    assert_eq!(e.code, 404);
}
