//! The kubelet (and the scheduler's one decision): pods are bound to the node `kube-sim`
//! and run as host processes, each container in its own mount, PID, UTS and IPC
//! namespace with an overlay root (see [`super::podexec`]).
//!
//! Per pod, a worker task: prepares the volumes (retrying, with `FailedMount` events),
//! runs the init containers one by one and then the containers together, restarts them per
//! `restartPolicy` with the kubelet's back-off (10 s doubling to 5 min, reset after 10 min
//! of running), runs readiness and liveness probes (exec, tcpSocket, httpGet), writes the
//! pod status as the kubelet does (phase, conditions with transition times, container
//! states with exit codes, reasons, timestamps, restart counts, `podIP`/`hostIP`
//! 127.0.0.1, `startTime`), keeps each container's output in the log files
//! `pods/<name>/log` serves, reads termination messages, refreshes atomic volumes and
//! `/etc/hosts`, enforces `activeDeadlineSeconds`, and on deletion sends SIGTERM, waits
//! the grace period, sends SIGKILL, writes the terminal phase and confirms the deletion.

use super::env::{command_line, container_env, service_env};
use super::podexec::{Mount, Spec};
use super::util::{self, meta, terminating};
use super::volumes::{self, Prepared};
use crate::cluster::{now, Cluster};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;

/// The node's name.
pub const NODE: &str = "kube-sim";
const KUBELET_USER: &str = "system:node:kube-sim";

/// Shared state of the runner's kubelet.
pub struct Ctx {
    /// The cluster.
    pub cluster: Cluster,
    /// kube-sim's data directory.
    pub data_dir: PathBuf,
    /// The kube-sim binary (for `pod-exec`).
    pub helper: PathBuf,
    /// The API server's port (the in-cluster service variables).
    pub api_port: u16,
    /// Running containers by (namespace, pod, container), for exec and probes.
    pub running: Mutex<HashMap<(String, String, String), Running>>,
}

/// A running container, as exec needs it.
#[derive(Clone, Debug)]
pub struct Running {
    /// Host PID of the container's PID 1.
    pub pid: i32,
    /// The container's environment.
    pub env: Vec<(String, String)>,
    /// `runAsUser`.
    pub uid: Option<u32>,
    /// `runAsGroup`.
    pub gid: Option<u32>,
}

/// The command that runs `argv` inside a running container (its namespaces, root,
/// working directory, user and environment).
pub fn nsenter(r: &Running, argv: &[String]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("nsenter");
    cmd.arg("-t")
        .arg(r.pid.to_string())
        .args(["-m", "-u", "-i", "-p", "-r", "-w"]);
    if let Some(g) = r.gid.or(r.uid.map(|_| 0)) {
        cmd.arg("-G").arg(g.to_string());
    }
    if let Some(u) = r.uid {
        cmd.arg("-S").arg(u.to_string());
    }
    cmd.arg("--")
        .args(argv)
        .env_clear()
        .envs(r.env.iter().map(|(k, v)| (k, v)));
    cmd
}

fn ts_nano() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.9fZ")
        .to_string()
}

#[derive(Clone, Debug, Default)]
struct CState {
    name: String,
    image: String,
    state: Value,
    last_state: Value,
    restart_count: i64,
    ready: bool,
    started: bool,
    container_id: String,
}

impl CState {
    fn json(&self) -> Value {
        let mut v = json!({
            "name": self.name, "image": self.image, "imageID": format!("kube-sim://{}", self.image),
            "state": self.state, "lastState": if self.last_state.is_null() { json!({}) } else { self.last_state.clone() },
            "ready": self.ready, "restartCount": self.restart_count, "started": self.started,
        });
        if !self.container_id.is_empty() {
            v["containerID"] = json!(self.container_id);
        }
        v
    }
    fn terminated(&self) -> Option<&Value> {
        self.state.get("terminated")
    }
}

#[derive(Debug, Default)]
struct Model {
    phase: String,
    reason: Option<(String, String)>,
    inits: Vec<CState>,
    containers: Vec<CState>,
    sandbox_ready: bool,
    initialized: bool,
    start_time: String,
    cond_times: HashMap<String, (String, String)>,
}

fn waiting(reason: &str, message: Option<&str>) -> Value {
    let mut w = json!({"reason": reason});
    if let Some(m) = message {
        w["message"] = json!(m);
    }
    json!({"waiting": w})
}

impl Model {
    fn new(pod: &Value) -> Model {
        let mk = |list: &str, reason: &str| -> Vec<CState> {
            pod.pointer(&format!("/spec/{list}"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|c| CState {
                    name: c
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    image: c
                        .get("image")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    state: waiting(reason, None),
                    ..Default::default()
                })
                .collect()
        };
        let has_inits = pod
            .pointer("/spec/initContainers")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
        Model {
            phase: "Pending".into(),
            inits: mk("initContainers", "PodInitializing"),
            containers: mk(
                "containers",
                if has_inits {
                    "PodInitializing"
                } else {
                    "ContainerCreating"
                },
            ),
            initialized: !has_inits,
            start_time: now(),
            ..Default::default()
        }
    }

    fn cond(
        &mut self,
        ty: &str,
        status: bool,
        reason: Option<&str>,
        message: Option<String>,
    ) -> Value {
        let s = if status { "True" } else { "False" };
        let entry = self
            .cond_times
            .entry(ty.to_string())
            .or_insert_with(|| (s.to_string(), now()));
        if entry.0 != s {
            *entry = (s.to_string(), now());
        }
        let mut c =
            json!({"type": ty, "status": s, "lastProbeTime": null, "lastTransitionTime": entry.1});
        if let Some(r) = reason {
            c["reason"] = json!(r);
        }
        if let Some(m) = message {
            c["message"] = json!(m);
        }
        c
    }

    fn render(&mut self, existing: &Value) -> Value {
        let done = self.phase == "Succeeded" || self.phase == "Failed";
        let incomplete: Vec<String> = self
            .inits
            .iter()
            .filter(|c| {
                c.terminated()
                    .and_then(|t| t.get("exitCode"))
                    .and_then(Value::as_i64)
                    != Some(0)
            })
            .map(|c| c.name.clone())
            .collect();
        let unready: Vec<String> = self
            .containers
            .iter()
            .filter(|c| !c.ready)
            .map(|c| c.name.clone())
            .collect();
        let mut conds = Vec::new();
        let sandbox = self.sandbox_ready && !done;
        conds.push(self.cond("PodReadyToStartContainers", sandbox, None, None));
        if self.initialized || incomplete.is_empty() {
            let r = if done { Some("PodCompleted") } else { None };
            conds.push(self.cond("Initialized", true, r, None));
        } else {
            let m = format!(
                "containers with incomplete status: [{}]",
                incomplete.join(" ")
            );
            conds.push(self.cond(
                "Initialized",
                false,
                Some("ContainersNotInitialized"),
                Some(m),
            ));
        }
        for ty in ["Ready", "ContainersReady"] {
            if done {
                conds.push(self.cond(ty, false, Some("PodCompleted"), None));
            } else if unready.is_empty() && self.initialized {
                conds.push(self.cond(ty, true, None, None));
            } else {
                let m = format!("containers with unready status: [{}]", unready.join(" "));
                conds.push(self.cond(ty, false, Some("ContainersNotReady"), Some(m)));
            }
        }
        // PodScheduled is the scheduler's; keep it.
        if let Some(ps) = existing
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|a| {
                a.iter()
                    .find(|c| c.get("type").and_then(Value::as_str) == Some("PodScheduled"))
            })
        {
            conds.push(ps.clone());
        }
        let mut st = json!({
            "phase": self.phase,
            "conditions": conds,
            "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.start_time,
            "containerStatuses": self.containers.iter().map(CState::json).collect::<Vec<_>>(),
        });
        if !self.inits.is_empty() {
            st["initContainerStatuses"] =
                json!(self.inits.iter().map(CState::json).collect::<Vec<_>>());
        }
        if let Some(q) = existing.pointer("/status/qosClass") {
            st["qosClass"] = q.clone();
        }
        if let Some((r, m)) = &self.reason {
            st["reason"] = json!(r);
            st["message"] = json!(m);
        }
        st
    }
}

struct PodRef {
    ns: String,
    name: String,
    uid: String,
}

fn pods_target(c: &Cluster, ns: &str) -> Option<crate::cluster::Target> {
    util::target(c, "", "v1", "pods", Some(ns))
}

fn push(ctx: &Ctx, p: &PodRef, model: &Mutex<Model>) {
    let Some(t) = pods_target(&ctx.cluster, &p.ns) else {
        return;
    };
    let o = util::as_component(KUBELET_USER, "kubelet");
    let _ = util::update_status(&ctx.cluster, &t, &p.name, &p.uid, &o, |pod| {
        let st = model.lock().unwrap_or_else(|e| e.into_inner()).render(pod);
        if pod.get("status") == Some(&st) {
            return false;
        }
        pod["status"] = st;
        true
    });
}

/// Runs the kubelet until `stop`; then kills every container and waits for them.
pub async fn run(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    let mut workers: HashMap<String, (watch::Sender<Option<Value>>, tokio::task::JoinHandle<()>)> =
        HashMap::new();
    loop {
        sync(&ctx, &mut workers);
        tokio::select! {
            _ = ctx.cluster.changed() => tokio::time::sleep(Duration::from_millis(20)).await,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => break,
        }
    }
    for (tx, _) in workers.values() {
        tx.send_replace(None);
    }
    for (_, (_, h)) in workers.drain() {
        let _ = h.await;
    }
}

fn node_labels(c: &Cluster) -> Value {
    util::target(c, "", "v1", "nodes", None)
        .and_then(|t| c.get(&t, NODE).ok())
        .and_then(|n| n.pointer("/metadata/labels").cloned())
        .unwrap_or(json!({}))
}

fn schedule(ctx: &Ctx, pod: &Value) {
    let sched = pod
        .pointer("/spec/schedulerName")
        .and_then(Value::as_str)
        .unwrap_or("default-scheduler");
    if sched != "default-scheduler" || terminating(pod) {
        return;
    }
    let labels = node_labels(&ctx.cluster);
    let fits = pod
        .pointer("/spec/nodeSelector")
        .and_then(Value::as_object)
        .is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let ns = meta(pod, "namespace");
    let name = meta(pod, "name");
    if fits {
        if ctx.cluster.bind_pod(&ns, &name, NODE).is_ok() {
            let mut p = pod.clone();
            p["kind"] = json!("Pod");
            p["apiVersion"] = json!("v1");
            util::event(
                &ctx.cluster,
                &p,
                None,
                false,
                "Scheduled",
                &format!("Successfully assigned {ns}/{name} to {NODE}"),
                "default-scheduler",
            );
        }
        return;
    }
    let Some(t) = pods_target(&ctx.cluster, &ns) else {
        return;
    };
    let _ = util::update_status(
        &ctx.cluster,
        &t,
        &name,
        &meta(pod, "uid"),
        &util::as_component("system:kube-scheduler", "default-scheduler"),
        |p| {
            let mut conds = p
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if conds
                .iter()
                .any(|c| c.get("type").and_then(Value::as_str) == Some("PodScheduled"))
            {
                return false;
            }
            conds.push(json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "lastProbeTime": null, "lastTransitionTime": now(),
            "message": "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."}));
            p["status"]["conditions"] = json!(conds);
            true
        },
    );
}

type Workers = HashMap<String, (watch::Sender<Option<Value>>, tokio::task::JoinHandle<()>)>;

fn sync(ctx: &Arc<Ctx>, workers: &mut Workers) {
    let pods = util::list_all(&ctx.cluster, "", "v1", "pods");
    let mut seen = HashSet::new();
    for pod in pods {
        let uid = meta(&pod, "uid");
        seen.insert(uid.clone());
        let node = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if node.is_empty() {
            schedule(ctx, &pod);
            continue;
        }
        if node != NODE {
            continue;
        }
        if let Some((tx, _)) = workers.get(&uid) {
            if tx.borrow().as_ref() != Some(&pod) {
                tx.send_replace(Some(pod));
            }
            continue;
        }
        let phase = pod
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        if phase == "Succeeded" || phase == "Failed" {
            continue;
        }
        let (tx, rx) = watch::channel(Some(pod));
        let h = tokio::spawn(pod_worker(ctx.clone(), rx));
        workers.insert(uid, (tx, h));
    }
    for (uid, (tx, _)) in workers.iter() {
        if !seen.contains(uid) && tx.borrow().is_some() {
            tx.send_replace(None);
        }
    }
    workers.retain(|_, (_, h)| !h.is_finished());
}

/// What ended the pod's run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// Deleted (grace seconds) or gone.
    Kill(i64),
}

fn hostname_of(pod: &Value) -> String {
    let h = pod
        .pointer("/spec/hostname")
        .and_then(Value::as_str)
        .unwrap_or("");
    let h = if h.is_empty() {
        meta(pod, "name")
    } else {
        h.to_string()
    };
    h.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches(['-', '.'])
        .to_string()
}

/// `/etc/hosts` of a pod: itself, and every Service and subdomain pod name of the
/// cluster at 127.0.0.1 (all pods share the host network; there is no DNS).
fn hosts_file(c: &Cluster, pod: &Value) -> String {
    let ns = meta(pod, "namespace");
    let host = hostname_of(pod);
    let mut out = String::from(
        "# Kubernetes-managed hosts file (kube-sim: every name is 127.0.0.1).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    let sub = pod
        .pointer("/spec/subdomain")
        .and_then(Value::as_str)
        .unwrap_or("");
    if sub.is_empty() {
        out.push_str(&format!("127.0.0.1\t{host}\n"));
    } else {
        out.push_str(&format!(
            "127.0.0.1\t{host}.{sub}.{ns}.svc.cluster.local\t{host}\n"
        ));
    }
    let mut names = Vec::new();
    for s in util::list_all(c, "", "v1", "services") {
        let (sn, sns) = (meta(&s, "name"), meta(&s, "namespace"));
        let mut n = format!("{sn}.{sns} {sn}.{sns}.svc {sn}.{sns}.svc.cluster.local");
        if sns == ns {
            n = format!("{sn} {n}");
        }
        names.push(n);
    }
    for p in util::list_all(c, "", "v1", "pods") {
        let sub = p
            .pointer("/spec/subdomain")
            .and_then(Value::as_str)
            .unwrap_or("");
        if sub.is_empty() || meta(&p, "uid") == meta(pod, "uid") {
            continue;
        }
        names.push(format!(
            "{}.{sub}.{}.svc.cluster.local",
            hostname_of(&p),
            meta(&p, "namespace")
        ));
    }
    names.sort();
    for n in names {
        out.push_str(&format!("127.0.0.1\t{n}\n"));
    }
    out
}

fn write_in_place(path: &Path, content: &str) {
    if std::fs::read_to_string(path).ok().as_deref() != Some(content) {
        // In place: the file is bind-mounted into running containers.
        let _ = std::fs::write(path, content);
    }
}

async fn pod_worker(ctx: Arc<Ctx>, mut rx: watch::Receiver<Option<Value>>) {
    let Some(pod) = rx.borrow().clone() else {
        return;
    };
    let p = PodRef {
        ns: meta(&pod, "namespace"),
        name: meta(&pod, "name"),
        uid: meta(&pod, "uid"),
    };
    let dir = ctx.data_dir.join("kubelet").join(&p.uid);
    let log_dir = ctx.data_dir.join("pods").join(&p.ns).join(&p.name);
    let _ = std::fs::remove_dir_all(&log_dir);
    let _ = std::fs::create_dir_all(&log_dir);
    let _ = std::fs::create_dir_all(dir.join("volumes"));
    let _ = std::fs::create_dir_all(dir.join("shm"));
    let _ = std::fs::set_permissions(
        dir.join("shm"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    );
    let model = Arc::new(Mutex::new(Model::new(&pod)));
    push(&ctx, &p, &model);
    let mut pod_obj = pod.clone();
    pod_obj["kind"] = json!("Pod");
    pod_obj["apiVersion"] = json!("v1");

    // Termination: deletion (grace), disappearance (0), or the pod's deadline.
    let (term_tx, term_rx) = watch::channel::<Option<Stop>>(None);
    let deadline = pod
        .pointer("/spec/activeDeadlineSeconds")
        .and_then(Value::as_i64);
    let started = Instant::now();
    let tokens = Arc::new(Mutex::new(volumes::Tokens::default()));
    let follower = {
        let ctx = ctx.clone();
        let mut rx = rx.clone();
        let model = model.clone();
        let dir = dir.clone();
        let tokens = tokens.clone();
        let pod_obj = pod_obj.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                let cur = rx.borrow().clone();
                match cur {
                    None => {
                        term_tx.send_if_modified(|t| {
                            if t.is_none() {
                                *t = Some(Stop::Kill(0));
                                true
                            } else {
                                false
                            }
                        });
                        return;
                    }
                    Some(pod) => {
                        if terminating(&pod) {
                            let grace = pod
                                .pointer("/metadata/deletionGracePeriodSeconds")
                                .and_then(Value::as_i64)
                                .unwrap_or(30);
                            term_tx.send_if_modified(|t| match t {
                                Some(Stop::Kill(g)) if *g <= grace => false,
                                _ => {
                                    *t = Some(Stop::Kill(grace));
                                    true
                                }
                            });
                        } else if deadline.is_some_and(|d| started.elapsed().as_secs() as i64 >= d)
                            && term_tx.borrow().is_none()
                        {
                            {
                                let mut m = model.lock().unwrap_or_else(|e| e.into_inner());
                                m.reason = Some((
                                    "DeadlineExceeded".into(),
                                    "Pod was active on the node longer than the specified deadline"
                                        .into(),
                                ));
                            }
                            util::event(
                                &ctx.cluster,
                                &pod_obj,
                                None,
                                false,
                                "DeadlineExceeded",
                                "Pod was active on the node longer than the specified deadline",
                                "kubelet",
                            );
                            let grace = pod
                                .pointer("/spec/terminationGracePeriodSeconds")
                                .and_then(Value::as_i64)
                                .unwrap_or(30);
                            term_tx.send_replace(Some(Stop::Kill(grace)));
                        }
                        // Keep atomic volumes and /etc/hosts current.
                        let c = ctx.cluster.clone();
                        let d = dir.clone();
                        let tk = tokens.clone();
                        let _ = tokio::task::spawn_blocking(move || {
                            let mut tk = tk.lock().unwrap_or_else(|e| e.into_inner());
                            volumes::refresh(&c, &pod, &d.join("volumes"), &mut tk);
                            write_in_place(&d.join("etc-hosts"), &hosts_file(&c, &pod));
                        })
                        .await;
                    }
                }
                tokio::select! {
                    r = rx.changed() => { if r.is_err() { rx.mark_changed(); } }
                    _ = tick.tick() => {}
                }
            }
        })
    };

    let run = PodRun {
        ctx: ctx.clone(),
        p,
        dir: dir.clone(),
        model: model.clone(),
        pod_rx: rx.clone(),
        term: term_rx,
        obj: pod_obj,
    };
    run.run(tokens).await;
    // Terminal: confirm a deletion, then wait for the object to go and clean up.
    loop {
        let cur = rx.borrow().clone();
        match cur {
            None => break,
            Some(pod)
                if terminating(&pod)
                    && pod
                        .pointer("/metadata/deletionGracePeriodSeconds")
                        .and_then(Value::as_i64)
                        != Some(0) =>
            {
                // Confirm once: a pod kept by finalizers stays with a zero grace period.
                if let Some(t) = pods_target(&ctx.cluster, &run.p.ns) {
                    let o = crate::cluster::DeleteOptions {
                        user: crate::auth::UserInfo::system(KUBELET_USER),
                        grace_period: Some(0),
                        precondition_uid: Some(run.p.uid.clone()),
                        ..Default::default()
                    };
                    let _ = ctx.cluster.delete(&t, &run.p.name, &o);
                }
            }
            Some(_) => {}
        }
        tokio::select! {
            r = rx.changed() => { if r.is_err() { break } }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    follower.abort();
    let _ = follower.await;
    let _ = std::fs::remove_dir_all(&dir);
    // The logs go with the pod, unless a new pod of the same name took the directory.
    let reused = util::target(&ctx.cluster, "", "v1", "pods", Some(&run.p.ns))
        .and_then(|t| ctx.cluster.get(&t, &run.p.name).ok())
        .is_some();
    if !reused {
        let _ = std::fs::remove_dir_all(&log_dir);
    }
}

struct PodRun {
    ctx: Arc<Ctx>,
    p: PodRef,
    dir: PathBuf,
    model: Arc<Mutex<Model>>,
    pod_rx: watch::Receiver<Option<Value>>,
    term: watch::Receiver<Option<Stop>>,
    obj: Value,
}

enum Outcome {
    /// Exited (or killed) with a terminated state.
    Exited {
        code: i64,
        state: Value,
        ran: Duration,
    },
    /// Could not start: a waiting state to show, then retry.
    Waiting { reason: String, message: String },
}

fn backoff(n: u32) -> Duration {
    let secs = 10u64.saturating_mul(1u64 << n.min(5)).min(300);
    Duration::from_secs(secs)
}

impl PodRun {
    fn pod(&self) -> Value {
        self.pod_rx
            .borrow()
            .clone()
            .unwrap_or_else(|| self.obj.clone())
    }

    fn stopped(&self) -> Option<Stop> {
        *self.term.borrow()
    }

    fn set(&self, init: bool, i: usize, f: impl FnOnce(&mut CState)) {
        {
            let mut m = self.model.lock().unwrap_or_else(|e| e.into_inner());
            let list = if init {
                &mut m.inits
            } else {
                &mut m.containers
            };
            if let Some(c) = list.get_mut(i) {
                f(c);
            }
        }
        push(&self.ctx, &self.p, &self.model);
    }

    async fn sleep_or_stop(&self, d: Duration) -> bool {
        let mut t = self.term.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = t.wait_for(|s| s.is_some()) => true,
        }
    }

    async fn run(&self, tokens: Arc<Mutex<volumes::Tokens>>) {
        // Volumes.
        let vols = loop {
            if self.stopped().is_some() {
                self.finish(None).await;
                return;
            }
            let pod = self.pod();
            let c = self.ctx.cluster.clone();
            let d = self.dir.join("volumes");
            let tk = tokens.clone();
            let r = tokio::task::spawn_blocking(move || {
                let mut tk = tk.lock().unwrap_or_else(|e| e.into_inner());
                volumes::prepare(&c, &pod, &d, &mut tk)
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            match r {
                Ok(v) => break v,
                Err(msg) => {
                    util::event(
                        &self.ctx.cluster,
                        &self.obj,
                        None,
                        true,
                        "FailedMount",
                        &msg,
                        "kubelet",
                    );
                    if self.sleep_or_stop(Duration::from_secs(2)).await {
                        continue;
                    }
                }
            }
        };
        write_in_place(
            &self.dir.join("etc-hosts"),
            &hosts_file(&self.ctx.cluster, &self.pod()),
        );
        write_in_place(
            &self.dir.join("hostname"),
            &format!("{}\n", hostname_of(&self.pod())),
        );
        self.model
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sandbox_ready = true;
        push(&self.ctx, &self.p, &self.model);
        let vols = Arc::new(vols);
        let policy = self
            .pod()
            .pointer("/spec/restartPolicy")
            .and_then(Value::as_str)
            .unwrap_or("Always")
            .to_string();

        // Init containers, one by one.
        let inits: Vec<Value> = self
            .pod()
            .pointer("/spec/initContainers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (i, c) in inits.iter().enumerate() {
            let ok = self.container_loop(true, i, c, &vols, &policy).await;
            if !ok {
                if self.stopped().is_none() {
                    // An init container failed for good (restartPolicy Never).
                    self.model.lock().unwrap_or_else(|e| e.into_inner()).phase = "Failed".into();
                    for k in 0..self
                        .model
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .containers
                        .len()
                    {
                        self.set(false, k, |s| s.state = waiting("PodInitializing", None));
                    }
                    push(&self.ctx, &self.p, &self.model);
                }
                self.finish(None).await;
                return;
            }
        }
        {
            let mut m = self.model.lock().unwrap_or_else(|e| e.into_inner());
            m.initialized = true;
            m.phase = "Pending".into();
            for c in &mut m.containers {
                c.state = waiting("ContainerCreating", None);
            }
        }
        push(&self.ctx, &self.p, &self.model);
        // Containers, together.
        let containers: Vec<Value> = self
            .pod()
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let futs = containers
            .iter()
            .enumerate()
            .map(|(i, c)| self.container_loop(false, i, c, &vols, &policy));
        let results = futures::future::join_all(futs).await;
        let all_ok = results.iter().all(|ok| *ok);
        self.finish(Some(all_ok)).await;
    }

    /// The terminal phase: Succeeded when every container exited 0.
    async fn finish(&self, all_ok: Option<bool>) {
        {
            let mut m = self.model.lock().unwrap_or_else(|e| e.into_inner());
            if m.phase != "Failed" {
                let ok = all_ok.unwrap_or(false)
                    && m.containers.iter().all(|c| {
                        c.terminated()
                            .and_then(|t| t.get("exitCode"))
                            .and_then(Value::as_i64)
                            == Some(0)
                    });
                m.phase = if ok {
                    "Succeeded".into()
                } else {
                    "Failed".into()
                };
            }
            for c in m.containers.iter_mut() {
                c.ready = false;
            }
        }
        push(&self.ctx, &self.p, &self.model);
    }

    /// Runs one container until it is done for good. Returns whether it succeeded.
    async fn container_loop(
        &self,
        init: bool,
        i: usize,
        c: &Value,
        vols: &Arc<HashMap<String, Prepared>>,
        policy: &str,
    ) -> bool {
        let name = c
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let mut restarts: u32 = 0;
        let mut config_failures: u32 = 0;
        loop {
            if self.stopped().is_some() {
                return false;
            }
            match self.run_once(init, i, c, vols, restarts).await {
                Outcome::Waiting { reason, message } => {
                    self.set(init, i, |s| s.state = waiting(&reason, Some(&message)));
                    util::event(
                        &self.ctx.cluster,
                        &self.obj,
                        Some(&field_path(init, &name)),
                        true,
                        "Failed",
                        &format!("Error: {message}"),
                        "kubelet",
                    );
                    config_failures += 1;
                    let wait = Duration::from_secs(if config_failures < 3 { 2 } else { 10 });
                    if self.sleep_or_stop(wait).await {
                        return false;
                    }
                }
                Outcome::Exited { code, state, ran } => {
                    let stopped = self.stopped().is_some();
                    let restart = !stopped
                        && match policy {
                            "Always" => !init || code != 0,
                            "OnFailure" => code != 0,
                            _ => false,
                        };
                    if !restart {
                        self.set(init, i, |s| {
                            s.state = state;
                            s.ready = false;
                        });
                        return code == 0;
                    }
                    if ran > Duration::from_secs(600) {
                        restarts = 0;
                    }
                    let delay = backoff(restarts);
                    restarts += 1;
                    let pod = self.pod();
                    let msg = format!(
                        "back-off {}s restarting failed container={name} pod={}_{}({})",
                        delay.as_secs(),
                        self.p.name,
                        self.p.ns,
                        self.p.uid
                    );
                    self.set(init, i, |s| {
                        s.last_state = state;
                        s.state = waiting("CrashLoopBackOff", Some(&msg));
                        s.restart_count += 1;
                        s.ready = false;
                    });
                    let _ = pod;
                    util::event(
                        &self.ctx.cluster,
                        &self.obj,
                        Some(&field_path(init, &name)),
                        true,
                        "BackOff",
                        "Back-off restarting failed container",
                        "kubelet",
                    );
                    if self.sleep_or_stop(delay).await {
                        return false;
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_lines)]
    async fn run_once(
        &self,
        init: bool,
        i: usize,
        c: &Value,
        vols: &Arc<HashMap<String, Prepared>>,
        n: u32,
    ) -> Outcome {
        let pod = self.pod();
        let name = c
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let image = c
            .get("image")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let host = hostname_of(&pod);
        let svc = service_env(self.ctx.api_port);
        let env = match container_env(&self.ctx.cluster, &pod, c, &svc, &host) {
            Ok(e) => e,
            Err(m) => {
                return Outcome::Waiting {
                    reason: "CreateContainerConfigError".into(),
                    message: m,
                }
            }
        };
        let sc = |f: &str| {
            c.pointer(&format!("/securityContext/{f}"))
                .or_else(|| pod.pointer(&format!("/spec/securityContext/{f}")))
                .cloned()
        };
        let uid = sc("runAsUser").and_then(|v| v.as_u64()).map(|u| u as u32);
        let gid = sc("runAsGroup").and_then(|v| v.as_u64()).map(|g| g as u32);
        if sc("runAsNonRoot").and_then(|v| v.as_bool()) == Some(true) && uid.unwrap_or(0) == 0 {
            return Outcome::Waiting {
                reason: "CreateContainerConfigError".into(),
                message: if uid.is_none() {
                    "container has runAsNonRoot and image will run as root".into()
                } else {
                    format!("container's runAsUser breaks non-root policy (pod: \"{}_{}({})\", container: {name})", self.p.name, self.p.ns, self.p.uid)
                },
            };
        }
        let mut groups: Vec<u32> = Vec::new();
        if let Some(g) = pod
            .pointer("/spec/securityContext/fsGroup")
            .and_then(Value::as_u64)
        {
            groups.push(g as u32);
        }
        for g in pod
            .pointer("/spec/securityContext/supplementalGroups")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(g) = g.as_u64() {
                groups.push(g as u32);
            }
        }
        let mut layers = Vec::new();
        if super::image::is_dprepo_image(&image) {
            let images = self.ctx.data_dir.join("images");
            let _ = std::fs::create_dir_all(&images);
            match super::image::dprepo_layer(&images, &image) {
                Ok(l) => layers.push(l),
                Err(m) => {
                    return Outcome::Waiting {
                        reason: "ErrImagePull".into(),
                        message: m,
                    }
                }
            }
        }
        let argv = command_line(c, &env);
        let cdir = self.dir.join("containers").join(format!("{name}-{n}"));
        let _ = std::fs::remove_dir_all(&cdir);
        for d in ["upper", "work", "root", "tmp", "home"] {
            let _ = std::fs::create_dir_all(cdir.join(d));
        }
        let _ = std::fs::set_permissions(
            cdir.join("tmp"),
            std::os::unix::fs::PermissionsExt::from_mode(0o1777),
        );
        let _ = std::fs::set_permissions(
            cdir.join("home"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        );
        let termlog = cdir.join("termination-log");
        let _ = std::fs::write(&termlog, b"");
        let _ = std::fs::set_permissions(
            &termlog,
            std::os::unix::fs::PermissionsExt::from_mode(0o666),
        );
        let term_path = c
            .get("terminationMessagePath")
            .and_then(Value::as_str)
            .unwrap_or("/dev/termination-log")
            .to_string();
        let mut mounts = vec![
            Mount {
                source: self.dir.join("etc-hosts"),
                target: "/etc/hosts".into(),
                read_only: false,
            },
            Mount {
                source: self.dir.join("hostname"),
                target: "/etc/hostname".into(),
                read_only: false,
            },
            Mount {
                source: termlog.clone(),
                target: term_path,
                read_only: false,
            },
        ];
        let env_map: HashMap<&str, &str> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        for m in c
            .get("volumeMounts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let vname = m.get("name").and_then(Value::as_str).unwrap_or("");
            let Some(v) = vols.get(vname) else {
                return Outcome::Waiting {
                    reason: "CreateContainerConfigError".into(),
                    message: format!("volume {vname:?} not found"),
                };
            };
            let mut sub = m
                .get("subPath")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if let Some(expr) = m.get("subPathExpr").and_then(Value::as_str) {
                sub = super::expand::expand(expr, &|k| env_map.get(k).map(|s| s.to_string()));
            }
            let source = if sub.is_empty() {
                v.path.clone()
            } else {
                if sub.starts_with('/') || sub.split('/').any(|p| p == "..") {
                    return Outcome::Waiting { reason: "CreateContainerConfigError".into(), message: format!("failed to prepare subPath for volumeMount {vname:?} of container {name:?}") };
                }
                let s = v.path.join(&sub);
                if !s.exists() {
                    let _ = std::fs::create_dir_all(&s);
                }
                s
            };
            let ro = m.get("readOnly").and_then(Value::as_bool).unwrap_or(false) || v.read_only;
            mounts.push(Mount {
                source,
                target: m
                    .get("mountPath")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                read_only: ro,
            });
        }
        let error_file = cdir.join("start-error");
        let spec = Spec {
            root: cdir.join("root"),
            upper: cdir.join("upper"),
            work: cdir.join("work"),
            layers,
            hostname: host,
            shm: self.dir.join("shm"),
            tmp: cdir.join("tmp"),
            home: cdir.join("home"),
            mounts,
            argv: argv.clone(),
            env: env.clone(),
            working_dir: c
                .get("workingDir")
                .and_then(Value::as_str)
                .map(str::to_string),
            uid,
            gid,
            groups,
            error_file: error_file.clone(),
        };
        let spec_path = cdir.join("spec.json");
        if let Err(e) = std::fs::write(&spec_path, serde_json::to_vec(&spec).unwrap_or_default()) {
            return Outcome::Waiting {
                reason: "RunContainerError".into(),
                message: e.to_string(),
            };
        }
        // Logs: the previous run's file becomes `previous`.
        let log = crate::logs::log_path(&self.ctx.data_dir, &self.p.ns, &self.p.name, &name, false);
        if n > 0 && log.exists() {
            let _ = std::fs::rename(
                &log,
                crate::logs::log_path(&self.ctx.data_dir, &self.p.ns, &self.p.name, &name, true),
            );
        }
        if let Some(parent) = log.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let log_file = match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
        {
            Ok(f) => Arc::new(Mutex::new(f)),
            Err(e) => {
                return Outcome::Waiting {
                    reason: "RunContainerError".into(),
                    message: format!("cannot open the log: {e}"),
                }
            }
        };
        let mut cmd = tokio::process::Command::new("setpriv");
        cmd.args([
            "--pdeathsig",
            "KILL",
            "--",
            "unshare",
            "--mount",
            "--uts",
            "--ipc",
            "--pid",
            "--fork",
            "--kill-child",
            "--",
        ])
        .arg(&self.ctx.helper)
        .arg("pod-exec")
        .arg(&spec_path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
        let started_at = now();
        let started = Instant::now();
        let mut child = match cmd.spawn() {
            Ok(ch) => ch,
            Err(e) => {
                return Outcome::Waiting {
                    reason: "RunContainerError".into(),
                    message: format!("cannot start the container: {e}"),
                }
            }
        };
        let outer = child.id().unwrap_or(0) as i32;
        let mut pumps = Vec::new();
        if let Some(o) = child.stdout.take() {
            pumps.push(tokio::spawn(pump(o, log_file.clone())));
        }
        if let Some(e) = child.stderr.take() {
            pumps.push(tokio::spawn(pump(e, log_file.clone())));
        }
        let pid1 = find_child(outer).await;
        let cid = format!("kube-sim://{}", crate::cluster::new_uid().replace('-', ""));
        let key = (self.p.ns.clone(), self.p.name.clone(), name.clone());
        if let Some(pid) = pid1 {
            self.ctx
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    key.clone(),
                    Running {
                        pid,
                        env: env.clone(),
                        uid,
                        gid,
                    },
                );
        }
        let has_readiness = c.get("readinessProbe").is_some();
        self.set(init, i, |s| {
            s.state = json!({"running": {"startedAt": started_at}});
            s.container_id = cid.clone();
            s.started = true;
            s.ready = !has_readiness && !init;
        });
        if !init {
            let mut m = self.model.lock().unwrap_or_else(|e| e.into_inner());
            if m.phase == "Pending" {
                m.phase = "Running".into();
            }
        }
        push(&self.ctx, &self.p, &self.model);
        // Probes.
        let (kill_tx, mut kill_rx) = watch::channel(false);
        let probes = if init {
            None
        } else {
            Some(tokio::spawn(probe_loop(
                self.ctx.clone(),
                self.model.clone(),
                PodRef {
                    ns: self.p.ns.clone(),
                    name: self.p.name.clone(),
                    uid: self.p.uid.clone(),
                },
                i,
                c.clone(),
                key.clone(),
                kill_tx,
                self.obj.clone(),
            )))
        };
        let mut term = self.term.clone();
        let live_grace = c
            .pointer("/livenessProbe/terminationGracePeriodSeconds")
            .or_else(|| pod.pointer("/spec/terminationGracePeriodSeconds"))
            .and_then(Value::as_i64)
            .unwrap_or(30);
        let kill_with: Option<i64> = tokio::select! {
            s = child.wait() => {
                let _ = s;
                None
            }
            r = term.wait_for(|s| s.is_some()) => Some(match r { Ok(g) => match *g { Some(Stop::Kill(g)) => g, None => 0 }, Err(_) => 0 }),
            r = kill_rx.wait_for(|k| *k) => { drop(r); Some(live_grace) }
        };
        let status = match kill_with {
            None => child.wait().await.ok(),
            Some(g) => kill(&mut child, pid1, g).await,
        };
        if let Some(p) = probes {
            p.abort();
        }
        for p in pumps {
            let _ = tokio::time::timeout(Duration::from_secs(5), p).await;
        }
        self.ctx
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        let code: i64 = match status {
            Some(s) => match (s.code(), std::os::unix::process::ExitStatusExt::signal(&s)) {
                (Some(c), _) => i64::from(c),
                (None, Some(sig)) => 128 + i64::from(sig),
                _ => 1,
            },
            None => 137,
        };
        let start_error = std::fs::read_to_string(&error_file).unwrap_or_default();
        let mut term_msg = {
            let mut b = std::fs::read(&termlog).unwrap_or_default();
            b.truncate(4096);
            String::from_utf8_lossy(&b).into_owned()
        };
        let policy = c
            .get("terminationMessagePolicy")
            .and_then(Value::as_str)
            .unwrap_or("File");
        if term_msg.is_empty() && policy == "FallbackToLogsOnError" && code != 0 {
            term_msg = tail_log(&log, 80, 2048);
        }
        let (reason, message) = if !start_error.is_empty() && code == 128 {
            ("StartError".to_string(), start_error)
        } else {
            (
                if code == 0 { "Completed" } else { "Error" }.to_string(),
                term_msg,
            )
        };
        let mut t = json!({"exitCode": code, "reason": reason, "startedAt": started_at, "finishedAt": now(), "containerID": cid});
        if !message.is_empty() {
            t["message"] = json!(message);
        }
        let _ = std::fs::remove_dir_all(&cdir);
        Outcome::Exited {
            code,
            state: json!({"terminated": t}),
            ran: started.elapsed(),
        }
    }
}

fn field_path(init: bool, name: &str) -> String {
    if init {
        format!("spec.initContainers{{{name}}}")
    } else {
        format!("spec.containers{{{name}}}")
    }
}

fn tail_log(path: &Path, lines: usize, max: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text
        .lines()
        .map(|l| l.split_once(' ').map_or(l, |x| x.1))
        .collect();
    let mut s = all[all.len().saturating_sub(lines)..].join("\n");
    if !s.is_empty() {
        s.push('\n');
    }
    if s.len() > max {
        let cut = s.len() - max;
        let mut i = cut;
        while !s.is_char_boundary(i) {
            i += 1;
        }
        s = s[i..].to_string();
    }
    s
}

async fn pump(r: impl AsyncRead + Unpin, out: Arc<Mutex<std::fs::File>>) {
    use std::io::Write;
    let mut br = BufReader::new(r);
    let mut line = Vec::new();
    loop {
        line.clear();
        match br.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if line.last() != Some(&b'\n') {
                    line.push(b'\n');
                }
                let mut rec = ts_nano().into_bytes();
                rec.push(b' ');
                rec.extend_from_slice(&line);
                let _ = out
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .write_all(&rec);
            }
        }
    }
}

/// The host PID of the first child of `unshare` (the container's PID 1).
async fn find_child(outer: i32) -> Option<i32> {
    for _ in 0..200 {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{outer}/task/{outer}/children")) {
            if let Some(p) = s.split_whitespace().next().and_then(|x| x.parse().ok()) {
                return Some(p);
            }
        }
        if !Path::new(&format!("/proc/{outer}")).exists() {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

fn signal(pid: i32, sig: rustix::process::Signal) {
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// SIGTERM to the container's PID 1, the grace period, then SIGKILL (which ends the
/// whole PID namespace).
async fn kill(
    child: &mut tokio::process::Child,
    pid1: Option<i32>,
    grace: i64,
) -> Option<std::process::ExitStatus> {
    if grace > 0 {
        if let Some(p) = pid1 {
            signal(p, rustix::process::Signal::TERM);
        }
        if let Ok(s) = tokio::time::timeout(Duration::from_secs(grace as u64), child.wait()).await {
            return s.ok();
        }
    }
    if let Some(p) = pid1 {
        signal(p, rustix::process::Signal::KILL);
    }
    let _ = child.start_kill();
    child.wait().await.ok()
}

/// Runs a probe once; true on success.
pub async fn probe_once(
    ctx: &Ctx,
    key: &(String, String, String),
    container: &Value,
    probe: &Value,
) -> bool {
    let timeout = Duration::from_secs(
        probe
            .get("timeoutSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(1)
            .max(1),
    );
    let port_of = |p: &Value| -> Option<u16> {
        match p {
            Value::Number(n) => n.as_u64().map(|x| x as u16),
            Value::String(s) => s.parse().ok().or_else(|| {
                container
                    .get("ports")
                    .and_then(Value::as_array)
                    .and_then(|ps| {
                        ps.iter()
                            .find(|x| x.get("name").and_then(Value::as_str) == Some(s))
                            .and_then(|x| x.get("containerPort"))
                            .and_then(Value::as_u64)
                            .map(|x| x as u16)
                    })
            }),
            _ => None,
        }
    };
    if let Some(e) = probe.get("exec") {
        let argv: Vec<String> = e
            .get("command")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let Some(r) = ctx
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
        else {
            return false;
        };
        let mut cmd = nsenter(&r, &argv);
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        return matches!(tokio::time::timeout(timeout, async { cmd.status().await }).await, Ok(Ok(s)) if s.success());
    }
    if let Some(t) = probe.get("tcpSocket") {
        let Some(port) = t.get("port").and_then(port_of) else {
            return false;
        };
        let host = t
            .get("host")
            .and_then(Value::as_str)
            .unwrap_or("127.0.0.1")
            .to_string();
        return matches!(
            tokio::time::timeout(
                timeout,
                tokio::net::TcpStream::connect((host.as_str(), port))
            )
            .await,
            Ok(Ok(_))
        );
    }
    if let Some(h) = probe.get("httpGet") {
        let Some(port) = h.get("port").and_then(port_of) else {
            return false;
        };
        let host = h
            .get("host")
            .and_then(Value::as_str)
            .unwrap_or("127.0.0.1")
            .to_string();
        let path = h
            .get("path")
            .and_then(Value::as_str)
            .unwrap_or("/")
            .to_string();
        if h.get("scheme").and_then(Value::as_str).unwrap_or("HTTP") != "HTTP" {
            return false;
        }
        let fut = async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .ok()?;
            let req = format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.ok()?;
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).await.ok()?;
            let line = String::from_utf8_lossy(&buf[..n]).to_string();
            let code: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some((200..400).contains(&code))
        };
        return matches!(tokio::time::timeout(timeout, fut).await, Ok(Some(true)));
    }
    false
}

#[allow(clippy::too_many_arguments)]
async fn probe_loop(
    ctx: Arc<Ctx>,
    model: Arc<Mutex<Model>>,
    p: PodRef,
    i: usize,
    c: Value,
    key: (String, String, String),
    kill: watch::Sender<bool>,
    obj: Value,
) {
    let ready_p = c.get("readinessProbe").cloned();
    let live_p = c.get("livenessProbe").cloned();
    if ready_p.is_none() && live_p.is_none() {
        return;
    }
    let started = Instant::now();
    let num = |pr: &Option<Value>, f: &str, d: u64| {
        pr.as_ref()
            .and_then(|x| x.get(f))
            .and_then(Value::as_u64)
            .unwrap_or(d)
    };
    let mut next_ready = Duration::from_secs(num(&ready_p, "initialDelaySeconds", 0));
    let mut next_live = Duration::from_secs(num(&live_p, "initialDelaySeconds", 0));
    let (mut r_ok, mut r_fail, mut l_fail) = (0u64, 0u64, 0u64);
    let name = c
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    loop {
        let el = started.elapsed();
        if let Some(rp) = &ready_p {
            if el >= next_ready {
                next_ready = el + Duration::from_secs(num(&ready_p, "periodSeconds", 10).max(1));
                let ok = probe_once(&ctx, &key, &c, rp).await;
                let (succ_t, fail_t) = (
                    num(&ready_p, "successThreshold", 1),
                    num(&ready_p, "failureThreshold", 3),
                );
                let mut change = None;
                if ok {
                    r_fail = 0;
                    r_ok += 1;
                    if r_ok >= succ_t {
                        change = Some(true);
                    }
                } else {
                    r_ok = 0;
                    r_fail += 1;
                    if r_fail >= fail_t {
                        change = Some(false);
                    }
                    util::event(
                        &ctx.cluster,
                        &obj,
                        Some(&format!("spec.containers{{{name}}}")),
                        true,
                        "Unhealthy",
                        "Readiness probe failed",
                        "kubelet",
                    );
                }
                if let Some(ready) = change {
                    let differs = {
                        let mut m = model.lock().unwrap_or_else(|e| e.into_inner());
                        let cs = &mut m.containers[i];
                        let d = cs.ready != ready;
                        cs.ready = ready;
                        d
                    };
                    if differs {
                        push(&ctx, &p, &model);
                    }
                }
            }
        }
        if let Some(lp) = &live_p {
            if el >= next_live {
                next_live = el + Duration::from_secs(num(&live_p, "periodSeconds", 10).max(1));
                if probe_once(&ctx, &key, &c, lp).await {
                    l_fail = 0;
                } else {
                    l_fail += 1;
                    util::event(
                        &ctx.cluster,
                        &obj,
                        Some(&format!("spec.containers{{{name}}}")),
                        true,
                        "Unhealthy",
                        "Liveness probe failed",
                        "kubelet",
                    );
                    if l_fail >= num(&live_p, "failureThreshold", 3) {
                        util::event(
                            &ctx.cluster,
                            &obj,
                            Some(&format!("spec.containers{{{name}}}")),
                            false,
                            "Killing",
                            &format!("Container {name} failed liveness probe, will be restarted"),
                            "kubelet",
                        );
                        kill.send_replace(true);
                        return;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
