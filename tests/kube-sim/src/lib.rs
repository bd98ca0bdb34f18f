//! kube-sim: a test-only, in-process stand-in for the Kubernetes API server, the way moto
//! stands in for S3. kubectl (1.27 to 1.33) and kube-rs talk to it exactly as to a real
//! cluster, and it refuses what the real server refuses.
//!
//! Module map:
//! - [`server`]: HTTPS, authentication, routing, content negotiation, watch streaming;
//! - [`cluster`]: the in-process API (create/get/list/update/patch/delete/watch) with the
//!   real semantics; [`store`]: objects, the resourceVersion counter, watch history;
//! - [`resource`]: served kinds; [`discovery`]: discovery documents; [`crd`]: CRDs;
//! - [`validation`]: names, built-in rules, structural schemas, CEL; [`defaults`]: built-in
//!   defaults; [`patch`]: merge/JSON/strategic patches; [`apply`]: server-side apply and
//!   managedFields; [`selector`]: label and field selectors;
//! - [`auth`]: tokens and RBAC; [`controllers`]: namespace lifecycle, garbage collection,
//!   CRD cleanup, volume binding; [`table`] and [`jsonpath`]: server-side printing;
//! - [`logs`]: `pods/log`; [`runner`]: the kubelet and controller-manager stand-in;
//!   [`proto`]: protobuf request bodies.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kube_sim::StartError> {
//! let sim = kube_sim::start(kube_sim::Options::default()).await?;
//! println!("KUBECONFIG={}", sim.kubeconfig.display());
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

pub mod apply;
pub mod auth;
pub mod cluster;
pub mod controllers;
pub mod crd;
pub mod defaults;
pub mod discovery;
pub mod error;
pub mod jsonpath;
pub mod logs;
pub mod patch;
pub mod proto;
pub mod resource;
pub mod runner;
pub mod selector;
pub mod server;
pub mod store;
pub mod table;
pub mod tls;
pub mod validation;

pub use cluster::Cluster;

use base64::Engine;
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How to start kube-sim.
#[derive(Clone, Default)]
pub struct Options {
    /// Port on 127.0.0.1 (0 = any free port).
    pub port: u16,
    /// Where to write the kubeconfig (default: `<data_dir>/kubeconfig`).
    pub kubeconfig: Option<PathBuf>,
    /// Data directory for pod logs and volumes (default: a temporary directory removed at
    /// shutdown).
    pub data_dir: Option<PathBuf>,
    /// Changes kept for watch resumption (default 10000).
    pub watch_history: Option<usize>,
    /// Interval of watch bookmarks (default 10 s).
    pub bookmark_interval: Option<Duration>,
    /// The runner's handler for pods/exec, attach and portforward (default: the runner's).
    pub pod_io: Option<runner::PodIoHandler>,
    /// The runner (kubelet and controller-manager stand-in).
    pub runner: runner::RunnerOptions,
}

/// Why kube-sim could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Binding the port failed.
    #[error("cannot listen on 127.0.0.1:{port}: {source}")]
    Listen {
        /// The port.
        port: u16,
        /// The cause.
        source: std::io::Error,
    },
    /// Certificates could not be generated.
    #[error("cannot generate certificates: {0}")]
    Tls(String),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// A running kube-sim.
pub struct Handle {
    /// Where it listens.
    pub addr: SocketAddr,
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// The kubeconfig written at start.
    pub kubeconfig: PathBuf,
    /// The admin (cluster-admin) bearer token.
    pub admin_token: String,
    /// The CA certificate (PEM).
    pub ca_pem: String,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The in-process API.
    pub cluster: Cluster,
    /// The runner (its CronJob clock, its running containers).
    pub runner: Arc<runner::Runner>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _temp: Option<tempfile::TempDir>,
}

impl Handle {
    /// Stops serving and the controllers.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::getrandom(&mut b).expect("system randomness");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A fresh opaque bearer token.
pub fn issue_token_string() -> String {
    format!("kube-sim-{}", random_hex(24))
}

/// A service-account token shaped like the real server's (a JWT with the usual claims;
/// kube-sim recognises it by lookup, the signature is not meaningful).
pub fn issue_token_for(ns: &str, sa: &str, uid: &str, exp: i64, audiences: &[String]) -> String {
    let header = json!({"alg": "RS256", "kid": "kube-sim"});
    let aud: Vec<String> = if audiences.is_empty() {
        vec!["https://kubernetes.default.svc.cluster.local".into()]
    } else {
        audiences.to_vec()
    };
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "aud": aud, "exp": exp, "iat": now, "nbf": now, "iss": "https://kubernetes.default.svc.cluster.local",
        "jti": cluster::new_uid(), "sub": format!("system:serviceaccount:{ns}:{sa}"),
        "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": sa, "uid": uid}},
    });
    format!(
        "{}.{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes()),
        b64url(random_hex(32).as_bytes())
    )
}

/// Writes the objects a fresh cluster has: namespaces, the node, the default storage
/// class, the default cluster roles and the cluster-admin binding.
fn bootstrap(c: &Cluster) {
    let up = |g: &str, v: &str, p: &str, o: serde_json::Value| {
        if let Err(e) = c.system_upsert(g, v, p, o) {
            panic!("kube-sim bootstrap object refused: {e}");
        }
    };
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        up(
            "",
            "v1",
            "namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        );
    }
    up(
        "",
        "v1",
        "nodes",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "kube-sim", "labels": {
        "kubernetes.io/hostname": "kube-sim", "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64", "node-role.kubernetes.io/control-plane": ""}}}),
    );
    if let Ok(t) = c.target("", "v1", "nodes", None) {
        if let Ok(mut n) = c.get(&t, "kube-sim") {
            n["status"] = json!({
                "capacity": {"cpu": "2", "memory": "24Gi", "pods": "110", "ephemeral-storage": "100Gi"},
                "allocatable": {"cpu": "2", "memory": "24Gi", "pods": "110", "ephemeral-storage": "100Gi"},
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kube-sim is ready",
                    "lastHeartbeatTime": cluster::now(), "lastTransitionTime": cluster::now()}],
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": "kube-sim"}],
                "nodeInfo": {"kubeletVersion": format!("v1.{}.0", discovery::MINOR), "kubeProxyVersion": "", "operatingSystem": "linux",
                    "architecture": "amd64", "containerRuntimeVersion": "kube-sim://1", "kernelVersion": "", "osImage": "kube-sim",
                    "machineID": "", "systemUUID": "", "bootID": ""}
            });
            let _ = c.update(
                &t,
                "kube-sim",
                n,
                Some("status"),
                &cluster::WriteOptions::as_user(auth::UserInfo::system("kube-sim")),
            );
        }
    }
    up(
        "storage.k8s.io",
        "v1",
        "storageclasses",
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "kube-sim.io/host-path", "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate", "allowVolumeExpansion": true}),
    );
    let rbac = "rbac.authorization.k8s.io";
    let ro = json!(["get", "list", "watch"]);
    let rw = json!([
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection"
    ]);
    let core_read = json!([
        "pods",
        "pods/log",
        "pods/status",
        "services",
        "endpoints",
        "configmaps",
        "persistentvolumeclaims",
        "persistentvolumeclaims/status",
        "serviceaccounts",
        "events",
        "namespaces",
        "resourcequotas",
        "limitranges"
    ]);
    let apps = json!([
        "statefulsets",
        "deployments",
        "replicasets",
        "daemonsets",
        "statefulsets/scale",
        "deployments/scale",
        "replicasets/scale"
    ]);
    let batch = json!(["jobs", "cronjobs", "jobs/status", "cronjobs/status"]);
    let roles = [
        (
            "cluster-admin",
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
        ),
        (
            "view",
            json!([
            {"apiGroups": [""], "resources": core_read, "verbs": ro},
            {"apiGroups": ["apps"], "resources": apps, "verbs": ro},
            {"apiGroups": ["batch"], "resources": batch, "verbs": ro},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ro},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ro}]),
        ),
        (
            "edit",
            json!([
            {"apiGroups": [""], "resources": core_read, "verbs": rw},
            {"apiGroups": [""], "resources": ["secrets", "pods/exec", "pods/attach", "pods/portforward", "serviceaccounts/token"], "verbs": rw},
            {"apiGroups": ["apps"], "resources": apps, "verbs": rw},
            {"apiGroups": ["batch"], "resources": batch, "verbs": rw},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": rw},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": rw}]),
        ),
        (
            "admin",
            json!([
            {"apiGroups": [""], "resources": core_read, "verbs": rw},
            {"apiGroups": [""], "resources": ["secrets", "pods/exec", "pods/attach", "pods/portforward", "serviceaccounts/token"], "verbs": rw},
            {"apiGroups": ["apps"], "resources": apps, "verbs": rw},
            {"apiGroups": ["batch"], "resources": batch, "verbs": rw},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": rw},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": rw},
            {"apiGroups": [rbac], "resources": ["roles", "rolebindings"], "verbs": rw},
            {"apiGroups": ["authorization.k8s.io"], "resources": ["localsubjectaccessreviews"], "verbs": ["create"]}]),
        ),
    ];
    for (name, rules) in roles {
        up(
            rbac,
            "v1",
            "clusterroles",
            json!({"apiVersion": format!("{rbac}/v1"), "kind": "ClusterRole",
            "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}}, "rules": rules}),
        );
    }
    up(
        rbac,
        "v1",
        "clusterrolebindings",
        json!({"apiVersion": format!("{rbac}/v1"), "kind": "ClusterRoleBinding",
        "metadata": {"name": "cluster-admin", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
        "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"apiGroup": rbac, "kind": "Group", "name": "system:masters"}]}),
    );
    controllers::reconcile_all(c);
}

/// The kubeconfig text for a server.
pub fn kubeconfig_text(url: &str, ca_pem: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-sim\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\nusers:\n- name: kube-sim-admin\n  user:\n    token: {token}\ncontexts:\n- name: kube-sim\n  context:\n    cluster: kube-sim\n    user: kube-sim-admin\n    namespace: default\ncurrent-context: kube-sim\npreferences: {{}}\n"
    )
}

/// Starts kube-sim: generates certificates, bootstraps the cluster, writes the kubeconfig,
/// serves HTTPS on 127.0.0.1 and runs the controllers, until [`Handle::shutdown`] or drop.
///
/// # Errors
/// [`StartError`] when the port cannot be bound or files cannot be written.
pub async fn start(opts: Options) -> Result<Handle, StartError> {
    // Clients built in the same process (kube::Client) ask rustls for the process-wide
    // provider; in a workspace build that also enables aws-lc-rs it cannot choose alone.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (temp, data_dir) = match &opts.data_dir {
        Some(d) => (None, d.clone()),
        None => {
            let t = tempfile::tempdir().map_err(|e| StartError::Write {
                path: std::env::temp_dir(),
                source: e,
            })?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    std::fs::create_dir_all(&data_dir).map_err(|e| StartError::Write {
        path: data_dir.clone(),
        source: e,
    })?;
    let certs = tls::generate().map_err(StartError::Tls)?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", opts.port))
        .await
        .map_err(|e| StartError::Listen {
            port: opts.port,
            source: e,
        })?;
    let addr = listener.local_addr().map_err(|e| StartError::Listen {
        port: opts.port,
        source: e,
    })?;
    let url = format!("https://127.0.0.1:{}", addr.port());
    let cluster = Cluster::new(cluster::ClusterOptions {
        data_dir: data_dir.clone(),
        watch_history: opts.watch_history.unwrap_or(10000),
        ca_pem: certs.ca_pem.clone(),
        bookmark_interval: opts.bookmark_interval.unwrap_or(Duration::from_secs(10)),
    });
    let admin_token = issue_token_string();
    cluster.add_token(&admin_token, auth::UserInfo::system("kube-sim-admin"));
    bootstrap(&cluster);
    let kubeconfig = opts
        .kubeconfig
        .clone()
        .unwrap_or_else(|| data_dir.join("kubeconfig"));
    if let Some(parent) = kubeconfig.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| StartError::Write {
            path: parent.to_path_buf(),
            source: e,
        })?;
    }
    std::fs::write(
        &kubeconfig,
        kubeconfig_text(&url, &certs.ca_pem, &admin_token),
    )
    .map_err(|e| StartError::Write {
        path: kubeconfig.clone(),
        source: e,
    })?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let runner = Arc::new(runner::Runner::new(
        cluster.clone(),
        addr.port(),
        &opts.runner,
    ));
    let pod_io = opts
        .pod_io
        .clone()
        .or_else(|| opts.runner.enabled.then(|| runner.pod_io()));
    let server = Arc::new(server::Server {
        cluster: cluster.clone(),
        url: url.clone(),
        pod_io,
    });
    let acceptor = tokio_rustls::TlsAcceptor::from(certs.server_config.clone());
    let mut stop_accept = stop_rx.clone();
    let accept_task = tokio::spawn(async move {
        loop {
            let conn = tokio::select! {
                c = listener.accept() => c,
                _ = stop_accept.changed() => return,
            };
            let Ok((tcp, _)) = conn else { continue };
            let acceptor = acceptor.clone();
            let server = server.clone();
            let mut stop_conn = stop_accept.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req| server.clone().handle(req));
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .with_upgrades();
                tokio::select! {
                    _ = conn => {}
                    _ = stop_conn.changed() => {}
                }
            });
        }
    });
    let ctl_task = tokio::spawn(controllers::run(cluster.clone(), stop_rx.clone()));
    let mut tasks = vec![accept_task, ctl_task];
    if opts.runner.enabled {
        tasks.extend(runner.spawn(&stop_rx));
    }
    Ok(Handle {
        addr,
        url,
        kubeconfig,
        admin_token,
        ca_pem: certs.ca_pem,
        data_dir,
        cluster,
        runner,
        stop: stop_tx,
        tasks,
        _temp: temp,
    })
}
