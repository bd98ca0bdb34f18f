//! Shared setup: start kube-sim in-process on a free port and connect kube-rs to it
//! through the kubeconfig it writes, exactly as a controller would.
#![allow(dead_code)]

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::Status;
use kube::Client;
use serde_json::Value;

/// A started kube-sim with an admin client.
pub struct Sim {
    pub handle: kube_sim::Handle,
    pub client: Client,
}

pub async fn client_from(path: &std::path::Path) -> Client {
    let kc = Kubeconfig::read_from(path).expect("kubeconfig readable");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig valid");
    Client::try_from(cfg).expect("client")
}

pub async fn start() -> Sim {
    start_with(kube_sim::Options::default()).await
}

pub async fn start_with(opts: kube_sim::Options) -> Sim {
    let handle = kube_sim::start(opts).await.expect("kube-sim starts");
    let client = client_from(&handle.kubeconfig).await;
    Sim { handle, client }
}

impl Sim {
    /// A client authenticating with another bearer token.
    pub async fn client_with_token(&self, token: &str) -> Client {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("kubeconfig");
        std::fs::write(
            &p,
            kube_sim::kubeconfig_text(&self.handle.url, &self.handle.ca_pem, token),
        )
        .expect("write");
        client_from(&p).await
    }

    /// A raw request; returns the JSON body or the Status of the error.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<Value>,
    ) -> Result<Value, Box<Status>> {
        raw(&self.client, method, path, content_type, body).await
    }
}

pub async fn raw(
    client: &Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: Option<Value>,
) -> Result<Value, Box<Status>> {
    let mut b = http::Request::builder().method(method).uri(path);
    if !content_type.is_empty() {
        b = b.header("Content-Type", content_type);
    }
    let req = b
        .body(
            body.map(|v| serde_json::to_vec(&v).unwrap())
                .unwrap_or_default(),
        )
        .unwrap();
    match client.request_text(req).await {
        Ok(t) => Ok(if t.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&t).unwrap_or(Value::String(t))
        }),
        Err(kube::Error::Api(s)) => Err(s),
        Err(e) => panic!("transport error on {method} {path}: {e}"),
    }
}

/// The Status of an API error.
pub fn status(e: kube::Error) -> Box<Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other}"),
    }
}

/// Waits (bounded) until `f` holds.
pub async fn eventually<F: FnMut() -> Fut, Fut: std::future::Future<Output = bool>>(
    what: &str,
    mut f: F,
) {
    for _ in 0..100 {
        if f().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}
