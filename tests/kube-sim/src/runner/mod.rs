//! The runner: kube-sim's kubelet and controller-manager (pods run as host processes in
//! their own namespaces; Jobs, CronJobs, StatefulSets, Deployments, VolumeSnapshots).
//! Nothing in the API server depends on it; it plugs in through:
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
//!
//! [`Runner::spawn`] starts the kubelet ([`kubelet`]) and the controllers ([`job`],
//! [`cronjob`], [`statefulset`], [`workloads`], [`snapshot`]); `tests/kube-sim/README.md`
//! says what they implement and what they do not.

pub mod cron;
pub mod cronjob;
pub mod env;
pub mod exec;
pub mod expand;
pub mod image;
pub mod job;
pub mod kubelet;
pub mod podexec;
pub mod snapshot;
pub mod statefulset;
pub mod util;
pub mod volumes;
pub mod workloads;

use crate::cluster::Cluster;
use crate::server::Body;
use futures::future::BoxFuture;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

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

/// How the runner runs.
#[derive(Clone, Debug)]
pub struct RunnerOptions {
    /// Whether pods are run at all (false: kube-sim is an API server only, pods stay
    /// Pending).
    pub enabled: bool,
    /// The kube-sim binary used as the container helper (`kube-sim pod-exec`). Default:
    /// `KUBE_SIM_BIN`, the running binary when it is kube-sim, or `kube-sim` next to it.
    pub helper: Option<PathBuf>,
    /// The CronJob clock runs this many times faster than real time (kube-sim only; 1 =
    /// real time). Nothing else is affected.
    pub cron_time_scale: f64,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        RunnerOptions {
            enabled: true,
            helper: None,
            cron_time_scale: 1.0,
        }
    }
}

/// The clock CronJobs are evaluated against: real time, sped up by
/// [`RunnerOptions::cron_time_scale`] and moved forward by [`CronClock::advance`].
/// A kube-sim-only control for tests; no other time in kube-sim follows it.
#[derive(Debug)]
pub struct CronClock {
    start: f64,
    scale: f64,
    offset: Mutex<f64>,
}

fn real_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl CronClock {
    /// A clock starting now.
    pub fn new(scale: f64) -> Self {
        CronClock {
            start: real_now(),
            scale: if scale > 0.0 { scale } else { 1.0 },
            offset: Mutex::new(0.0),
        }
    }

    /// The cron time, unix seconds.
    pub fn now(&self) -> i64 {
        let real = real_now();
        let off = *self.offset.lock().unwrap_or_else(|e| e.into_inner());
        (self.start + (real - self.start) * self.scale + off).floor() as i64
    }

    /// Moves the cron time forward.
    pub fn advance(&self, secs: i64) {
        *self.offset.lock().unwrap_or_else(|e| e.into_inner()) += secs as f64;
    }
}

/// A running runner.
pub struct Runner {
    /// The kubelet's state (running containers).
    pub kubelet: Arc<kubelet::Ctx>,
    /// The CronJob clock.
    pub cron_clock: Arc<CronClock>,
}

fn find_helper(opts: &RunnerOptions) -> PathBuf {
    if let Some(h) = &opts.helper {
        return h.clone();
    }
    if let Ok(h) = std::env::var("KUBE_SIM_BIN") {
        return PathBuf::from(h);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    if exe.file_name().is_some_and(|n| n == "kube-sim") {
        return exe;
    }
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    [
        dir.join("kube-sim"),
        dir.parent().map(|p| p.join("kube-sim")).unwrap_or_default(),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .unwrap_or_else(|| PathBuf::from("kube-sim"))
}

impl Runner {
    /// Creates the runner (nothing runs until [`Runner::spawn`]).
    pub fn new(cluster: Cluster, api_port: u16, opts: &RunnerOptions) -> Runner {
        let data_dir = cluster.options().data_dir.clone();
        let kubelet = Arc::new(kubelet::Ctx {
            cluster,
            data_dir,
            helper: find_helper(opts),
            api_port,
            running: Mutex::new(Default::default()),
        });
        Runner {
            kubelet,
            cron_clock: Arc::new(CronClock::new(opts.cron_time_scale)),
        }
    }

    /// Starts the kubelet and the controllers; they stop when `stop` turns true (the
    /// kubelet after killing every container).
    pub fn spawn(
        &self,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let c = self.kubelet.cluster.clone();
        vec![
            tokio::spawn(kubelet::run(self.kubelet.clone(), stop.clone())),
            tokio::spawn(job::run(c.clone(), stop.clone())),
            tokio::spawn(cronjob::run(
                c.clone(),
                self.cron_clock.clone(),
                stop.clone(),
            )),
            tokio::spawn(statefulset::run(c.clone(), stop.clone())),
            tokio::spawn(workloads::run(c.clone(), stop.clone())),
            tokio::spawn(snapshot::run(c, stop.clone())),
        ]
    }

    /// The pods/exec handler.
    pub fn pod_io(&self) -> PodIoHandler {
        let k = self.kubelet.clone();
        Arc::new(move |req: PodIoRequest| {
            let k = k.clone();
            Box::pin(async move { exec::handle(k, req).await })
        })
    }
}
