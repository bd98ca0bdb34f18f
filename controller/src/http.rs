//! The controller's HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (the
//! process serves) and `/readyz` (it reached the API server and found its CRDs).
//!
//! KubeBlocks serves metrics on `:8080` and probes on `:8081`; the Deployment in
//! `deploy/` points its probes at these paths.

use crate::metrics::SharedMetrics;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What the probes report.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    /// Marks the controller ready (or not) for `/readyz`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct AppState {
    metrics: SharedMetrics,
    health: Arc<Health>,
}

/// The router serving all three paths.
pub fn router(metrics: SharedMetrics, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(serve_ready))
        .with_state(AppState { metrics, health })
}

async fn serve_metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn serve_ready(State(state): State<AppState>) -> impl IntoResponse {
    if state.health.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the API server or the CRDs are not reachable yet",
        )
    }
}

/// Serves `router` on `address` until the task is dropped.
///
/// # Errors
/// The address cannot be bound, named in the error.
pub async fn serve(address: SocketAddr, router: Router) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {address}: {e}"))?;
    axum::serve(listener, router).await?;
    Ok(())
}
