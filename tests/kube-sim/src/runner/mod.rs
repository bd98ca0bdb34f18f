//! The boundary for the job runner (kubelet and controller-manager stand-in), which a
//! later change adds here. Nothing in the API server depends on it; it plugs in through:
//!
//! - the in-process API ([`crate::Cluster`]): `create`/`get`/`list`/`update` (with
//!   `sub = Some("status")` for status writes)/`patch`/`delete`/`watch`, called with
//!   [`crate::cluster::WriteOptions`] whose user is e.g. `UserInfo::system("system:node:kube-sim")`;
//!   the same validation, defaults, admission and watch events as REST requests;
//! - [`crate::Cluster::bind_pod`] to schedule a pod onto the node (`spec.nodeName`), after
//!   which deleting the pod is graceful: it keeps a `deletionTimestamp` until the runner
//!   deletes it again with `grace_period: Some(0)`;
//! - [`crate::Cluster::issue_token`] for the projected service-account token the API
//!   server mounts into every pod (`kube-api-access-*` volume, path `token`, next to the
//!   `kube-root-ca.crt` ConfigMap's `ca.crt` and the pod's namespace);
//! - pod logs: the runner writes each container's output to
//!   [`crate::logs::log_path`] in the format described in [`crate::logs`];
//! - `pods/exec`, `pods/attach`, `pods/portforward`: the server hands the raw HTTP request
//!   (upgrade included) to the [`PodIoHandler`] given in [`crate::Options::pod_io`];
//!   without one, such requests are refused the way a cluster refuses them for a pod that
//!   is not running.

use crate::cluster::Cluster;
use crate::server::Body;
use futures::future::BoxFuture;
use std::sync::Arc;

/// A `pods/exec|attach|portforward` request handed to the runner.
pub struct PodIoRequest {
    /// The raw request (upgrade headers intact; use `hyper::upgrade::on`).
    pub request: hyper::Request<hyper::body::Incoming>,
    /// Namespace of the pod.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// `exec`, `attach` or `portforward`.
    pub subresource: String,
    /// The cluster, to read the pod.
    pub cluster: Cluster,
}

/// Serves pod I/O subresources.
pub type PodIoHandler =
    Arc<dyn Fn(PodIoRequest) -> BoxFuture<'static, hyper::Response<Body>> + Send + Sync>;
