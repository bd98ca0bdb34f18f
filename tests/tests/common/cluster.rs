//! A kube-sim cluster for the controller's end-to-end tests: kube-sim (the workspace's
//! stand-in API server, with its runner) and the real `dprepo-controller` binary, driven
//! with the machine's `kubectl` as a user would, both killed on drop.
//!
//! Build first: `cargo build --workspace --bins` (scripts/test.sh does). `kubectl` must be
//! on PATH.

use super::dprepo_bin;
use super::stderr;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A binary built beside `dprepo`.
pub fn bin(name: &str) -> PathBuf {
    let path = dprepo_bin().with_file_name(name);
    assert!(
        path.is_file(),
        "{} not found; run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

pub use super::free_port;

/// A kube-sim instance and, once started, the controller, both killed on drop.
pub struct Cluster {
    /// The test's directory (kubeconfig, logs, kube-sim's data).
    pub dir: tempfile::TempDir,
    /// kube-sim's kubeconfig (cluster admin).
    pub kubeconfig: PathBuf,
    sim: Child,
    controller: Option<Child>,
    /// Where the controller serves /healthz and /readyz.
    pub probe_port: u16,
    /// Where the controller serves /metrics.
    pub metrics_port: u16,
    /// Whether the test started a controller of its own: then
    /// [`Cluster::assert_one_controller`] runs on drop.
    own_controller_started: bool,
}

impl Cluster {
    pub fn start() -> Cluster {
        Self::start_with(&[])
    }

    /// kube-sim with extra arguments (e.g. `--cron-time-scale 60`).
    pub fn start_with(sim_args: &[&str]) -> Cluster {
        let kubectl = Command::new("kubectl")
            .arg("version")
            .arg("--client")
            .output();
        assert!(
            kubectl.is_ok_and(|o| o.status.success()),
            "kubectl is not on PATH: install it (any version from 1.27) to run the controller tests"
        );
        let dir = tempfile::Builder::new()
            .prefix("dprepo-ctrl-")
            .tempdir()
            .expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        let log = std::fs::File::create(dir.path().join("kube-sim.log")).expect("log file");
        let sim = Command::new(bin("kube-sim"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(sim_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start kube-sim");
        let c = Cluster {
            dir,
            kubeconfig,
            sim,
            controller: None,
            probe_port: free_port(),
            metrics_port: free_port(),
            own_controller_started: false,
        };
        c.wait_for("kube-sim to answer", Duration::from_secs(60), || {
            (c.kubeconfig.is_file() && c.kubectl(&["get", "namespaces"]).status.success())
                .then_some(())
        });
        c
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::null())
            .output()
            .expect("run kubectl")
    }

    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            stderr(&out),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn apply(&self, yaml: &str) {
        let path = self.dir.path().join(format!("apply-{}.yaml", free_port()));
        std::fs::write(&path, yaml).expect("write manifest");
        self.kubectl_ok(&["apply", "--validate=false", "-f", path.to_str().unwrap()]);
    }

    /// `kubectl get ARGS -o json`, or `None` when it fails (not found).
    pub fn get(&self, args: &[&str]) -> Option<Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let out = self.kubectl(&all);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).expect("kubectl printed JSON"))
    }

    pub fn start_controller(&mut self) {
        self.start_controller_with(&[])
    }

    /// Starts the controller with extra environment variables.
    pub fn start_controller_with(&mut self, env: &[(&str, &str)]) {
        let log = std::fs::File::create(self.dir.path().join("controller.log")).expect("log");
        let child = Command::new(bin("dprepo-controller"))
            .args(["run", "--leader-elect=false"])
            .arg(format!(
                "--health-probe-bind-address=127.0.0.1:{}",
                self.probe_port
            ))
            .arg(format!(
                "--metrics-bind-address=127.0.0.1:{}",
                self.metrics_port
            ))
            .env("KUBECONFIG", &self.kubeconfig)
            .env("CM_NAMESPACE", "dprepo-system")
            .env("RUST_LOG", "info,dprepo_controller=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start dprepo-controller");
        self.controller = Some(child);
        self.own_controller_started = true;
    }

    /// Kills the controller (as a crash would); `start_controller` starts it again.
    pub fn stop_controller(&mut self) {
        if let Some(mut c) = self.controller.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn controller_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("controller.log")).unwrap_or_default()
    }

    pub fn http_get(&self, port: u16, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return (0, String::new());
        };
        let _ = write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        );
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        let code = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (code, text)
    }

    /// Polls `f` until it gives a value; on timeout fails with the controller's log tail.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut() -> Option<T>,
    ) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = f() {
                return v;
            }
            if start.elapsed() > timeout {
                let log = self.controller_log();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                panic!(
                    "timed out after {timeout:?} waiting for {what}\ncontroller log (tail):\n{}",
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    pub fn condition(&self, obj: &Value, type_: &str) -> Option<Value> {
        obj.pointer("/status/conditions")?
            .as_array()?
            .iter()
            .find(|c| c["type"] == type_)
            .cloned()
    }

    /// Events about `kind/name` (any namespace) as `reason: message` lines.
    pub fn events_of(&self, name: &str) -> Vec<String> {
        let Some(list) = self.get(&["events", "-A"]) else {
            return Vec::new();
        };
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e.pointer("/involvedObject/name") == Some(&Value::from(name)))
            .map(|e| {
                format!(
                    "{}: {}",
                    e["reason"].as_str().unwrap_or(""),
                    e["message"].as_str().unwrap_or("")
                )
            })
            .collect()
    }
}

impl Cluster {
    /// Waits for Restore `ns/name` to end (Completed or Failed); returns it.
    pub fn finished_restore(&self, ns: &str, name: &str) -> Value {
        self.wait_for(
            &format!("Restore {ns}/{name} to end"),
            Duration::from_secs(300),
            || {
                self.get(&["restore", "-n", ns, name]).filter(|r| {
                    matches!(
                        r.pointer("/status/phase").and_then(Value::as_str),
                        Some("Completed" | "Failed")
                    )
                })
            },
        )
    }

    /// The host directory of the volume bound to PVC `ns/name` (kube-sim's host-path
    /// volumes), once it is bound.
    pub fn volume_dir(&self, ns: &str, name: &str) -> PathBuf {
        let pvc = self.wait_for("the claim bound", Duration::from_secs(60), || {
            self.get(&["pvc", "-n", ns, name])
                .filter(|p| p.pointer("/spec/volumeName").is_some())
        });
        let pv_name = pvc["spec"]["volumeName"].as_str().unwrap().to_string();
        let pv = self.get(&["pv", &pv_name]).expect("the PV");
        PathBuf::from(pv["spec"]["hostPath"]["path"].as_str().expect("hostPath"))
    }
}

/// The label of the pods of `deploy/`'s controller Deployment.
pub const DEPLOYED_CONTROLLER_SELECTOR: &str = "app.kubernetes.io/name=dprepo-controller";

impl Cluster {
    /// Fails if a controller besides the test's own reconciles or did: a pod of
    /// `deploy/`'s controller Deployment exists (kube-sim's runner plays kubelet and runs
    /// it), or a leader Lease exists in `dprepo-system` (the test's controller runs with
    /// `--leader-elect=false`, every deployed one takes the Lease). Two controllers each
    /// do the work (and hide a controller that does not: the other did it), each publish
    /// events, and race on every object.
    pub fn assert_one_controller(&self) {
        let pods = self
            .get(&["pods", "-A", "-l", DEPLOYED_CONTROLLER_SELECTOR])
            .expect("list pods");
        let pods: Vec<String> = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                format!(
                    "{}/{} ({})",
                    p.pointer("/metadata/namespace")
                        .and_then(Value::as_str)
                        .unwrap_or(""),
                    p.pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or(""),
                    p.pointer("/status/phase")
                        .and_then(Value::as_str)
                        .unwrap_or("Pending")
                )
            })
            .collect();
        assert!(
            pods.is_empty(),
            "a deployed controller runs beside the test's: pods {pods:?} (install() leaves \
             deploy/'s Deployment out; install_deployed() is for tests that want it)"
        );
        let leases = self
            .get(&["leases", "-n", "dprepo-system"])
            .expect("list leases");
        let leases: Vec<String> = leases["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| {
                format!(
                    "{} held by {}",
                    l.pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or(""),
                    l.pointer("/spec/holderIdentity")
                        .and_then(Value::as_str)
                        .unwrap_or("nobody")
                )
            })
            .collect();
        assert!(
            leases.is_empty(),
            "a leader-electing controller ran beside the test's: Leases {leases:?}"
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Not while a test fails already (a second panic aborts), nor when kube-sim is
        // gone (a test that stopped it).
        if !std::thread::panicking()
            && self.own_controller_started
            && self.sim.try_wait().is_ok_and(|s| s.is_none())
        {
            self.assert_one_controller();
        }
        if let Some(c) = &mut self.controller {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.sim.kill();
        let _ = self.sim.wait();
        // DPREPO_KEEP_TEST_DIR=1 keeps the logs, manifests and volumes for a post-mortem.
        if std::env::var_os("DPREPO_KEEP_TEST_DIR").is_some() {
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
            eprintln!("kept {}", dir.keep().display());
        }
    }
}

/// A StorageProvider named `name` for S3-compatible stores such as the suite's moto server,
/// written the way KubeBlocks' minio provider is: parameters `bucket` and `endpoint`, the
/// credential from `accessKeyId` / `secretAccessKey`. One YAML document, no `---`.
pub fn s3_storage_provider(name: &str) -> String {
    format!(
        r#"apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: StorageProvider
metadata: {{name: {name}}}
spec:
  datasafedConfigTemplate: |
    [storage]
    type = s3
    provider = Minio
    env_auth = false
    access_key_id = {{{{ index .Parameters "accessKeyId" }}}}
    secret_access_key = {{{{ index .Parameters "secretAccessKey" }}}}
    endpoint = {{{{ index .Parameters "endpoint" }}}}
    root = {{{{ index .Parameters "bucket" }}}}
    force_path_style = true
  parametersSchema:
    openAPIV3Schema:
      type: object
      properties:
        bucket: {{type: string}}
        endpoint: {{type: string}}
    credentialFields: [accessKeyId, secretAccessKey]
"#
    )
}

/// Debian's PostgreSQL 15 programs, which the controller tests' database pods run.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Fails with instructions unless Debian's PostgreSQL 15 (server, base backup and WAL tools)
/// is installed.
pub fn require_postgres() {
    let missing = ["postgres", "pg_basebackup", "pg_waldump", "psql"]
        .into_iter()
        .find(|p| !Path::new(PG_BIN).join(p).is_file());
    assert!(
        missing.is_none(),
        "PostgreSQL 15 is not installed ({PG_BIN}/{} is missing): `apt-get install postgresql` (Debian's package) to run these tests",
        missing.unwrap_or_default()
    );
}

/// `id FLAG USER` (`-u` or `-g`) of a database's service user (`postgres`, `mysql`), whom
/// the database pods run as.
pub fn service_id(flag: &str, user: &str) -> String {
    let out = Command::new("id")
        .args([flag, user])
        .output()
        .expect("run id");
    assert!(
        out.status.success(),
        "no {user} user: install Debian's package of that database server"
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The StorageProvider `local-path` (kube-sim's host-path provisioner), the Mount-access
/// BackupRepo `local` on it, and the namespace `ns`: the repository most end-to-end tests
/// back up into.
pub fn local_mount_repo(ns: &str) -> String {
    format!(
        r#"
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: StorageProvider
metadata: {{name: local-path}}
spec:
  storageClassTemplate: |
    provisioner: kube-sim.io/host-path
---
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: BackupRepo
metadata: {{name: local}}
spec:
  storageProviderRef: local-path
  accessMethod: Mount
  pvReclaimPolicy: Retain
  volumeCapacity: 1Gi
---
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
"#
    )
}

/// Applies `deploy/` except the controller's Deployment and starts the controller under
/// test, waiting until it is ready: the one controller of the cluster. (kube-sim's runner
/// would run the Deployment's pod, a second controller beside the test's; see
/// [`Cluster::assert_one_controller`], which runs when the cluster is dropped.)
pub fn install(c: &mut Cluster) {
    install_with(c, &[])
}

/// [`install`] with extra environment variables for the controller.
pub fn install_with(c: &mut Cluster, env: &[(&str, &str)]) {
    apply_deploy(c, false);
    c.start_controller_with(env);
    c.wait_for("/readyz to answer 200", Duration::from_secs(60), || {
        (c.http_get(c.probe_port, "/readyz").0 == 200).then_some(())
    });
    c.assert_one_controller();
}

/// Applies all of `deploy/`, the controller Deployment included, for a test of the
/// deployed controller itself (start no controller of the test's then: the drop check of
/// [`Cluster::assert_one_controller`] would fail). Waits for the Deployment's pod.
pub fn install_deployed(c: &mut Cluster) {
    apply_deploy(c, true);
    c.wait_for(
        "the deployed controller's pod Running",
        Duration::from_secs(120),
        || {
            let pods = c.get(&[
                "pods",
                "-n",
                "dprepo-system",
                "-l",
                DEPLOYED_CONTROLLER_SELECTOR,
            ])?;
            pods["items"]
                .as_array()?
                .iter()
                .any(|p| p.pointer("/status/phase") == Some(&Value::from("Running")))
                .then_some(())
        },
    );
}

/// `kubectl apply` of `kubectl kustomize deploy/`, without the controller Deployment
/// unless `with_deployment` (for a test that starts its controller before the CRDs).
pub fn apply_deploy(c: &Cluster, with_deployment: bool) {
    let deploy = workspace().join("deploy");
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&deploy)
        .stdin(Stdio::null())
        .output()
        .expect("run kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize deploy/: {}",
        stderr(&out)
    );
    let text = String::from_utf8(out.stdout).expect("kubectl kustomize printed UTF-8");
    let mut kept = Vec::new();
    let mut left_out = 0;
    for doc in text.split("\n---\n").filter(|d| !d.trim().is_empty()) {
        let v: Value = serde_yaml::from_str(doc).expect("kubectl kustomize printed YAML");
        if !with_deployment && v["kind"] == "Deployment" && v["apiVersion"] == "apps/v1" {
            left_out += 1;
            continue;
        }
        kept.push(doc.trim_end().to_string());
    }
    assert!(
        with_deployment || left_out == 1,
        "deploy/ has {left_out} Deployments, expected the controller's one"
    );
    let path = c.dir.path().join("deploy.yaml");
    std::fs::write(&path, kept.join("\n---\n") + "\n").expect("write deploy.yaml");
    c.kubectl_ok(&["apply", "--validate=false", "-f", path.to_str().unwrap()]);
}
