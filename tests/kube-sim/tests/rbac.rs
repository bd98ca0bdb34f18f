//! Authorization: service-account tokens from the TokenRequest API are held to RBAC,
//! with the real server's 403 wording, subresource rules, resource names, escalation
//! prevention, and access reviews; requests without a valid token are refused.

mod common;

use common::{eventually, start, status};
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, PostParams};
use serde_json::json;

#[tokio::test]
async fn service_account_tokens_are_held_to_rbac() {
    let sim = start().await;
    let sas: Api<ServiceAccount> = Api::namespaced(sim.client.clone(), "default");
    let sa: ServiceAccount = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "ctl"}}),
    )
    .unwrap();
    sas.create(&PostParams::default(), &sa).await.unwrap();
    let tr = sim
        .raw("POST", "/api/v1/namespaces/default/serviceaccounts/ctl/token", "application/json",
            Some(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}})))
        .await
        .unwrap();
    let token = tr["status"]["token"].as_str().unwrap().to_string();
    assert_eq!(token.split('.').count(), 3, "JWT-shaped");
    let ctl = sim.client_with_token(&token).await;
    let cms: Api<ConfigMap> = Api::namespaced(ctl.clone(), "default");
    let e = status(cms.list(&Default::default()).await.unwrap_err());
    assert_eq!(e.code, 403);
    assert_eq!(
        e.message,
        "configmaps is forbidden: User \"system:serviceaccount:default:ctl\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"default\""
    );
    // Grant get on one configmap and list on all.
    let roles: Api<Role> = Api::namespaced(sim.client.clone(), "default");
    let role: Role = serde_json::from_value(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "r"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]},
                  {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["kube-root-ca.crt"], "verbs": ["get"]}]})).unwrap();
    roles.create(&PostParams::default(), &role).await.unwrap();
    let rbs: Api<RoleBinding> = Api::namespaced(sim.client.clone(), "default");
    let rb: RoleBinding = serde_json::from_value(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "rb"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
        "subjects": [{"kind": "ServiceAccount", "name": "ctl", "namespace": "default"}]})).unwrap();
    rbs.create(&PostParams::default(), &rb).await.unwrap();
    eventually("root CA", || async {
        cms.list(&Default::default())
            .await
            .is_ok_and(|l| !l.items.is_empty())
    })
    .await;
    cms.get("kube-root-ca.crt").await.unwrap();
    let e = status(cms.get("other").await.unwrap_err());
    assert_eq!(e.code, 403);
    assert!(e.message.starts_with("configmaps \"other\" is forbidden: User \"system:serviceaccount:default:ctl\" cannot get resource \"configmaps\""), "{}", e.message);
    // Another namespace is not covered by the RoleBinding.
    let sys: Api<ConfigMap> = Api::namespaced(ctl.clone(), "kube-system");
    assert_eq!(
        status(sys.list(&Default::default()).await.unwrap_err()).code,
        403
    );
    // The SA may not grant itself more (escalation).
    let grant = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "more"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]});
    let escalate = Api::<Role>::namespaced(ctl.clone(), "default");
    let e = status(
        escalate
            .create(
                &PostParams::default(),
                &serde_json::from_value(grant.clone()).unwrap(),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 403, "no create permission on roles at all");
    // With create on roles but without the secrets permission: escalation refused.
    let role2: Role = serde_json::from_value(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "r2"},
        "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["create"]}]})).unwrap();
    roles.create(&PostParams::default(), &role2).await.unwrap();
    let mut rb2 = rb.clone();
    rb2.metadata.name = Some("rb2".into());
    rb2.role_ref.name = "r2".into();
    rbs.create(&PostParams::default(), &rb2).await.unwrap();
    let e = status(
        escalate
            .create(
                &PostParams::default(),
                &serde_json::from_value(grant).unwrap(),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 403);
    assert!(
        e.message
            .contains("is attempting to grant RBAC permissions not currently held"),
        "{}",
        e.message
    );
    // Self access review.
    let r = common::raw(&ctl, "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", "application/json",
        Some(json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"namespace": "default", "verb": "list", "resource": "configmaps"}}})))
        .await
        .unwrap();
    assert_eq!(r["status"]["allowed"], true);
    // Discovery is open to every authenticated user.
    common::raw(&ctl, "GET", "/apis", "", None).await.unwrap();
}

#[tokio::test]
async fn bad_tokens_are_unauthorized() {
    let sim = start().await;
    let bad = sim.client_with_token("not-a-token").await;
    let e = common::raw(&bad, "GET", "/api/v1/namespaces", "", None)
        .await
        .unwrap_err();
    assert_eq!(e.code, 401);
}
