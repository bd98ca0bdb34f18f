//! The worker service account the controller's pods run as (KubeBlocks'
//! `EnsureWorkerServiceAccount`): `WORKER_SERVICE_ACCOUNT_NAME` in the pod's namespace,
//! bound by the RoleBinding `<sa>-rolebinding` to the ClusterRole
//! `WORKER_CLUSTER_ROLE_NAME`, annotated with `WORKER_SERVICE_ACCOUNT_ANNOTATIONS`.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use serde_json::json;

use super::patch_object;
use crate::context::Context;
use crate::error::{Error, KubeResultExt, Result};

/// Makes sure the worker service account exists in `namespace` and returns its name.
///
/// # Errors
/// API errors.
pub async fn ensure_worker_service_account(ctx: &Context, namespace: &str) -> Result<String> {
    let config = &ctx.config;
    let name = config.worker_service_account.clone();
    let accounts: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), namespace);
    if let Some(sa) = accounts
        .get_opt(&name)
        .await
        .during(|| format!("get ServiceAccount {namespace}/{name}"))?
    {
        let current = sa.metadata.annotations.clone().unwrap_or_default();
        let missing = config
            .worker_service_account_annotations
            .iter()
            .any(|(k, v)| current.get(k) != Some(v));
        if missing {
            patch_object(
                &accounts,
                &name,
                None,
                json!({"metadata": {"annotations": config.worker_service_account_annotations}}),
            )
            .await?;
        }
        return Ok(name);
    }
    // The binding first: the account's existence is what later calls check.
    let bindings: Api<RoleBinding> = Api::namespaced(ctx.client.clone(), namespace);
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some(format!("{name}-rolebinding")),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: config.worker_cluster_role.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: name.clone(),
            namespace: Some(namespace.into()),
            api_group: None,
        }]),
    };
    ignore_exists(
        bindings.create(&PostParams::default(), &binding).await,
        || format!("create RoleBinding {namespace}/{name}-rolebinding"),
    )?;
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.into()),
            annotations: (!config.worker_service_account_annotations.is_empty())
                .then(|| config.worker_service_account_annotations.clone()),
            ..Default::default()
        },
        image_pull_secrets: (!config.image_pull_secrets.is_empty())
            .then(|| config.image_pull_secrets.clone()),
        ..Default::default()
    };
    ignore_exists(accounts.create(&PostParams::default(), &sa).await, || {
        format!("create ServiceAccount {namespace}/{name}")
    })?;
    Ok(name)
}

fn ignore_exists<T>(r: kube::Result<T>, action: impl FnOnce() -> String) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(Error::kube(action(), e)),
    }
}
