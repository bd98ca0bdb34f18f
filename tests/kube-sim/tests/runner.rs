//! The runner end to end: kube-sim started in-process, objects applied with the
//! machine's kubectl, pods run as real processes in their namespaces. Needs root (mount,
//! unshare), as the CI machine has.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Sim {
    h: kube_sim::Handle,
}

async fn sim() -> Sim {
    sim_with(kube_sim::runner::RunnerOptions::default()).await
}

async fn sim_with(mut ro: kube_sim::runner::RunnerOptions) -> Sim {
    ro.helper = Some(PathBuf::from(env!("CARGO_BIN_EXE_kube-sim")));
    let h = kube_sim::start(kube_sim::Options {
        runner: ro,
        ..Default::default()
    })
    .await
    .expect("kube-sim starts");
    Sim { h }
}

const KUBECTL: &str = "/usr/bin/kubectl";

fn kubectl_versions() -> Vec<PathBuf> {
    let dir = Path::new("/usr/lib/google-cloud-sdk/bin");
    let mut v: Vec<PathBuf> = (27..=33)
        .map(|m| dir.join(format!("kubectl.1.{m}")))
        .filter(|p| p.exists())
        .collect();
    assert!(!v.is_empty(), "no versioned kubectl under {} (the machine's Google Cloud CLI provides kubectl.1.27 ... 1.33)", dir.display());
    v.sort();
    v
}

impl Sim {
    fn kubectl_with(
        &self,
        bin: &Path,
        args: &[&str],
        stdin: Option<&str>,
    ) -> (bool, String, String) {
        let mut cmd = Command::new(bin);
        cmd.arg("--kubeconfig").arg(&self.h.kubeconfig).args(args);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{} cannot run: {e}", bin.display()));
        if let Some(s) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn kubectl(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.kubectl_with(Path::new(KUBECTL), args, None);
        assert!(ok, "kubectl {args:?} failed: {err}");
        out
    }

    fn apply(&self, docs: &[Value]) {
        let text: String = docs
            .iter()
            .map(|d| format!("---\n{}\n", serde_json::to_string(d).unwrap()))
            .collect();
        let (ok, _, err) = self.kubectl_with(
            Path::new(KUBECTL),
            &["apply", "--validate=false", "-f", "-"],
            Some(&text),
        );
        assert!(ok, "kubectl apply failed: {err}\n{text}");
    }

    fn get(&self, plural: &str, group: &str, ns: Option<&str>, name: &str) -> Option<Value> {
        // Every group the runner tests read (core, apps, batch, snapshot.storage.k8s.io)
        // is served at v1.
        let t = self.h.cluster.target(group, "v1", plural, ns).ok()?;
        self.h.cluster.get(&t, name).ok()
    }

    fn list(&self, plural: &str, group: &str, ns: &str) -> Vec<Value> {
        let t = self
            .h
            .cluster
            .target(group, "v1", plural, Some(ns))
            .unwrap();
        let l = self.h.cluster.list(&t, &Default::default()).unwrap();
        l["items"].as_array().cloned().unwrap_or_default()
    }

    async fn wait_for<T>(&self, what: &str, secs: u64, mut f: impl FnMut(&Sim) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(x) = f(self) {
                return x;
            }
            if Instant::now() > deadline {
                let pods = self.kubectl(&["get", "pods", "-A", "-o", "json"]);
                let events = self.kubectl(&["get", "events", "-A"]);
                let jobs =
                    self.kubectl(&["get", "jobs,cronjobs,statefulsets,pvc", "-A", "-o", "json"]);
                panic!("timed out waiting for {what}\npods: {pods}\nevents: {events}\nworkloads: {jobs}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn job_pods(&self, ns: &str, job: &str) -> Vec<Value> {
        self.list("pods", "", ns)
            .into_iter()
            .filter(|p| {
                p.pointer("/metadata/labels/job-name")
                    .and_then(Value::as_str)
                    == Some(job)
            })
            .collect()
    }
}

fn cond<'a>(obj: &'a Value, ty: &str) -> Option<&'a Value> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|c| c["type"] == ty))
}

fn ns(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

async fn wait_job(s: &Sim, nsn: &str, name: &str, ty: &str, secs: u64) -> Value {
    s.wait_for(&format!("job {name} {ty}"), secs, |s| {
        let j = s.get("jobs", "batch", Some(nsn), name)?;
        cond(&j, ty)
            .filter(|c| c["status"] == "True")
            .map(|_| j.clone())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn job_reads_a_secret_volume_env_and_field_refs_writes_a_pvc_and_completes() {
    let s = sim().await;
    s.apply(&[
        ns("app"),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": "app"}, "stringData": {"password": "hunter2", "user": "alice"}}),
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": "app"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "writer", "namespace": "app", "labels": {"team": "x"}},
            "spec": {"backoffLimit": 0, "template": {"metadata": {"labels": {"role": "w"}}, "spec": {"restartPolicy": "Never",
                "containers": [{"name": "main", "image": "busybox:1.36",
                    "command": ["/bin/sh", "-c", "set -e; echo \"user=$DB_USER pod=$POD ns=$NS node=$NODE role=$ROLE msg=$(MSG)\"; cat /secret/password > /data/copy; echo \"$POD\" >> /data/copy; ls /secret; echo host=$(hostname)"],
                    "env": [
                        {"name": "DB_USER", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "user"}}},
                        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                        {"name": "ROLE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['role']"}}},
                        {"name": "MSG", "value": "hi-$(NS)"}],
                    "volumeMounts": [{"name": "secret", "mountPath": "/secret", "readOnly": true}, {"name": "data", "mountPath": "/data"}]}],
                "volumes": [{"name": "secret", "secret": {"secretName": "creds"}}, {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}}}}),
    ]);
    let job = wait_job(&s, "app", "writer", "Complete", 60).await;
    // Conditions as 1.33 writes them: SuccessCriteriaMet, then Complete.
    let types: Vec<&str> = job["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["SuccessCriteriaMet", "Complete"]);
    for c in job["status"]["conditions"].as_array().unwrap() {
        assert_eq!(c["reason"], "CompletionsReached");
        assert_eq!(c["message"], "Reached expected number of succeeded pods");
    }
    assert_eq!(job["status"]["succeeded"], 1);
    assert!(job["status"].get("failed").is_none());
    assert!(job["status"]["completionTime"].is_string() && job["status"]["startTime"].is_string());
    assert_eq!(job["status"]["uncountedTerminatedPods"], json!({}));
    let pods = s.job_pods("app", "writer");
    assert_eq!(pods.len(), 1);
    let pod = &pods[0];
    let pod_name = pod["metadata"]["name"].as_str().unwrap();
    assert!(
        pod_name.starts_with("writer-") && pod_name.len() == "writer-".len() + 5,
        "{pod_name}"
    );
    let uid = job["metadata"]["uid"].as_str().unwrap();
    for (k, v) in [
        ("job-name", "writer"),
        ("batch.kubernetes.io/job-name", "writer"),
        ("controller-uid", uid),
        ("batch.kubernetes.io/controller-uid", uid),
        ("role", "w"),
    ] {
        assert_eq!(pod["metadata"]["labels"][k], v, "label {k}");
    }
    let owner = &pod["metadata"]["ownerReferences"][0];
    assert_eq!(
        (
            owner["kind"].as_str(),
            owner["controller"].as_bool(),
            owner["blockOwnerDeletion"].as_bool()
        ),
        (Some("Job"), Some(true), Some(true))
    );
    assert!(
        pod["metadata"]
            .get("finalizers")
            .is_none_or(|f| f.as_array().unwrap().is_empty()),
        "the tracking finalizer is removed once counted"
    );
    assert_eq!(pod["status"]["phase"], "Succeeded");
    assert_eq!(pod["status"]["podIP"], "127.0.0.1");
    assert_eq!(pod["status"]["hostIP"], "127.0.0.1");
    assert!(pod["status"]["startTime"].is_string());
    assert_eq!(pod["spec"]["nodeName"], "kube-sim");
    let cs = &pod["status"]["containerStatuses"][0];
    let t = &cs["state"]["terminated"];
    assert_eq!(
        (t["exitCode"].as_i64(), t["reason"].as_str()),
        (Some(0), Some("Completed"))
    );
    assert!(
        t["startedAt"].is_string()
            && t["finishedAt"].is_string()
            && t["containerID"]
                .as_str()
                .unwrap()
                .starts_with("kube-sim://")
    );
    assert_eq!(
        (cs["ready"].as_bool(), cs["restartCount"].as_i64()),
        (Some(false), Some(0))
    );
    assert_eq!(cond(pod, "Ready").unwrap()["reason"], "PodCompleted");
    assert_eq!(cond(pod, "PodScheduled").unwrap()["status"], "True");
    // The claim's volume holds what the container wrote.
    let pvc = s
        .get("persistentvolumeclaims", "", Some("app"), "data")
        .unwrap();
    let pv = s
        .get(
            "persistentvolumes",
            "",
            None,
            pvc["spec"]["volumeName"].as_str().unwrap(),
        )
        .unwrap();
    let dir = PathBuf::from(pv["spec"]["hostPath"]["path"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(dir.join("copy")).unwrap(),
        format!("hunter2{pod_name}\n")
    );
    // Logs through kubectl.
    let logs = s.kubectl(&["logs", "-n", "app", pod_name]);
    assert!(
        logs.contains(&format!(
            "user=alice pod={pod_name} ns=app node=kube-sim role=w msg=hi-app"
        )),
        "{logs}"
    );
    assert!(
        logs.contains("password\nuser\n"),
        "the secret volume lists its keys: {logs}"
    );
    assert!(
        logs.contains(&format!("host={pod_name}")),
        "hostname is the pod name: {logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_job_is_retried_up_to_its_backoff_limit_then_fails() {
    let s = sim().await;
    s.apply(&[json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "flaky", "namespace": "default"},
        "spec": {"backoffLimit": 1, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", "echo failing; echo 'out of luck' > /dev/termination-log; exit 3"]}]}}}})]);
    let job = wait_job(&s, "default", "flaky", "Failed", 90).await;
    let types: Vec<&str> = job["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["FailureTarget", "Failed"]);
    let failed = cond(&job, "Failed").unwrap();
    assert_eq!(failed["reason"], "BackoffLimitExceeded");
    assert_eq!(
        failed["message"],
        "Job has reached the specified backoff limit"
    );
    assert_eq!(
        job["status"]["failed"], 2,
        "backoffLimit 1 allows one retry"
    );
    assert!(job["status"].get("completionTime").is_none());
    let pods = s.job_pods("default", "flaky");
    assert_eq!(pods.len(), 2);
    for p in &pods {
        assert_eq!(p["status"]["phase"], "Failed");
        let t = &p["status"]["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(
            (t["exitCode"].as_i64(), t["reason"].as_str()),
            (Some(3), Some("Error"))
        );
        assert_eq!(t["message"], "out of luck\n");
    }
    // The second pod started only after the back-off (10 s after the first failure).
    let mut starts: Vec<i64> = pods
        .iter()
        .map(|p| {
            chrono::DateTime::parse_from_rfc3339(
                p["metadata"]["creationTimestamp"].as_str().unwrap(),
            )
            .unwrap()
            .timestamp()
        })
        .collect();
    starts.sort();
    assert!(
        starts[1] - starts[0] >= 10,
        "back-off between pods: {starts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn init_containers_run_one_by_one_before_the_containers() {
    let s = sim().await;
    s.apply(&[json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ordered", "namespace": "default"},
        "spec": {"restartPolicy": "Never",
            "initContainers": [
                {"name": "first", "image": "busybox", "command": ["sh", "-c", "sleep 1; echo first >> /work/order"], "volumeMounts": [{"name": "w", "mountPath": "/work"}]},
                {"name": "second", "image": "busybox", "command": ["sh", "-c", "echo second >> /work/order"], "volumeMounts": [{"name": "w", "mountPath": "/work"}]}],
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", "echo main >> /work/order; cat /work/order"], "volumeMounts": [{"name": "w", "mountPath": "/work"}]}],
            "volumes": [{"name": "w", "emptyDir": {}}]}})]);
    let pod = s
        .wait_for("pod ordered to succeed", 60, |s| {
            s.get("pods", "", Some("default"), "ordered")
                .filter(|p| p["status"]["phase"] == "Succeeded")
        })
        .await;
    let inits = pod["status"]["initContainerStatuses"].as_array().unwrap();
    assert_eq!(inits.len(), 2);
    for i in inits {
        assert_eq!(i["state"]["terminated"]["reason"], "Completed");
    }
    let first_done = inits[0]["state"]["terminated"]["finishedAt"]
        .as_str()
        .unwrap();
    let second_start = inits[1]["state"]["terminated"]["startedAt"]
        .as_str()
        .unwrap();
    assert!(first_done <= second_start);
    assert_eq!(cond(&pod, "Initialized").unwrap()["status"], "True");
    assert_eq!(s.kubectl(&["logs", "ordered"]), "first\nsecond\nmain\n");
    assert_eq!(s.kubectl(&["logs", "ordered", "-c", "first"]), "");
}

fn dprepo_bin() -> PathBuf {
    let p = std::env::var("KUBE_SIM_DPREPO_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_BIN_EXE_kube-sim")).with_file_name("dprepo"));
    assert!(p.is_file(), "the dprepo image is mapped to the cargo-built binary {}: run `cargo build --workspace --bins` first", p.display());
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dprepo_image_installs_datasafed_as_the_controllers_init_container_does() {
    std::env::set_var("KUBE_SIM_DPREPO_BIN", dprepo_bin());
    let s = sim().await;
    s.apply(&[json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "tools", "namespace": "default"},
        "spec": {"restartPolicy": "Never",
            "initContainers": [{"name": "dp-copy-datasafed", "image": "docker.io/dprepo/dprepo:0.1.0",
                "command": ["/bin/sh", "-c", "/scripts/install-datasafed.sh /bin/datasafed"],
                "volumeMounts": [{"name": "dp-datasafed-bin", "mountPath": "/bin/datasafed"}]}],
            "containers": [{"name": "main", "image": "debian:bookworm",
                "command": ["sh", "-c", "export PATH=$PATH:$DP_DATASAFED_BIN_PATH; ls /bin/datasafed; test -d /bin/datasafed/certs; test ! -e /datasafed && echo no-image-files; datasafed --help"],
                "env": [{"name": "DP_DATASAFED_BIN_PATH", "value": "/bin/datasafed"}],
                "volumeMounts": [{"name": "dp-datasafed-bin", "mountPath": "/bin/datasafed"}]}],
            "volumes": [{"name": "dp-datasafed-bin", "emptyDir": {}}]}})]);
    let pod = s
        .wait_for("pod tools to finish", 60, |s| {
            s.get("pods", "", Some("default"), "tools")
                .filter(|p| matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
        })
        .await;
    let logs = s.kubectl(&["logs", "tools"]);
    assert_eq!(pod["status"]["phase"], "Succeeded", "{logs}");
    assert!(
        logs.starts_with("certs\ndatasafed\nno-image-files\n"),
        "{logs}"
    );
    assert!(
        logs.to_lowercase().contains("usage"),
        "datasafed --help prints its usage: {logs}"
    );
}

/// The dprepo image also carries `/dprepo-controller` (the backup Jobs' `manager` sidecar
/// runs its `backup-manager` subcommand), taken from beside the `dprepo` binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dprepo_image_carries_the_controller_binary() {
    let bin = dprepo_bin();
    let controller = bin.with_file_name("dprepo-controller");
    assert!(
        controller.is_file(),
        "{} not found: run `cargo build --workspace --bins` first",
        controller.display()
    );
    std::env::set_var("KUBE_SIM_DPREPO_BIN", &bin);
    let s = sim().await;
    s.apply(&[json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "manager", "namespace": "default"},
        "spec": {"restartPolicy": "Never",
            "containers": [{"name": "main", "image": "docker.io/dprepo/dprepo:0.1.0",
                "command": ["/dprepo-controller", "--help"]}]}})]);
    let pod = s
        .wait_for("pod manager to finish", 60, |s| {
            s.get("pods", "", Some("default"), "manager")
                .filter(|p| matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
        })
        .await;
    let logs = s.kubectl(&["logs", "manager"]);
    assert_eq!(pod["status"]["phase"], "Succeeded", "{logs}");
    assert!(logs.contains("Usage: dprepo-controller"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logs_are_served_to_every_installed_kubectl() {
    let s = sim().await;
    s.apply(&[json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "talker", "namespace": "default"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", "for i in 1 2 3 4 5; do echo line $i; done; sleep 0.5; echo err >&2"]}]}})]);
    s.wait_for("talker done", 60, |s| {
        s.get("pods", "", Some("default"), "talker")
            .filter(|p| p["status"]["phase"] == "Succeeded")
    })
    .await;
    for bin in kubectl_versions() {
        let (ok, out, err) = s.kubectl_with(&bin, &["logs", "talker"], None);
        assert!(ok, "{}: {err}", bin.display());
        assert_eq!(
            out,
            "line 1\nline 2\nline 3\nline 4\nline 5\nerr\n",
            "{}",
            bin.display()
        );
        let (ok, out, _) = s.kubectl_with(&bin, &["logs", "talker", "--tail=2"], None);
        assert!(ok);
        assert_eq!(out, "line 5\nerr\n", "{}", bin.display());
        let (ok, out, _) = s.kubectl_with(&bin, &["logs", "talker", "--timestamps"], None);
        assert!(
            ok && out
                .lines()
                .all(|l| l.len() > 31 && l.as_bytes()[4] == b'-' && l.contains('Z')),
            "{out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exec_runs_in_the_container_for_kubectl_and_raw_websocket_clients() {
    let s = sim().await;
    s.apply(&[json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "shell", "namespace": "default"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", "echo inside > /tmp/marker; exec sleep 3600"],
            "env": [{"name": "GREETING", "value": "hello"}]}]}})]);
    s.wait_for("shell running", 60, |s| {
        s.get("pods", "", Some("default"), "shell").filter(|p| {
            p["status"]["phase"] == "Running"
                && cond(p, "Ready").is_some_and(|c| c["status"] == "True")
        })
    })
    .await;
    for bin in kubectl_versions() {
        let minor: u32 = bin
            .to_string_lossy()
            .rsplit('.')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let (ok, out, err) = s.kubectl_with(
            &bin,
            &[
                "exec",
                "shell",
                "--",
                "sh",
                "-c",
                "echo $GREETING $(cat /tmp/marker) $(hostname); echo oops >&2; exit 0",
            ],
            None,
        );
        if minor >= 30 {
            assert!(ok, "{}: {err}", bin.display());
            assert_eq!(out, "hello inside shell\n", "{}", bin.display());
            assert_eq!(err, "oops\n");
            let (ok, _, err) =
                s.kubectl_with(&bin, &["exec", "shell", "--", "sh", "-c", "exit 7"], None);
            assert!(!ok);
            assert!(
                err.contains("command terminated with exit code 7"),
                "{}: {err}",
                bin.display()
            );
            let (ok, out, _) = s.kubectl_with(
                &bin,
                &["exec", "-i", "shell", "--", "cat"],
                Some("piped stdin\n"),
            );
            assert!(ok);
            assert_eq!(out, "piped stdin\n");
        } else {
            assert!(!ok, "{} speaks SPDY only", bin.display());
            assert!(err.contains("WebSocket only"), "{}: {err}", bin.display());
        }
    }
    // A raw WebSocket client, as kube-rs speaks it.
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
    let url = format!("{}/api/v1/namespaces/default/pods/shell/exec?command=sh&command=-c&command=cat%3Becho%20done%20%24GREETING%3Bexit%205&stdin=true&stdout=true&stderr=true", s.h.url.replace("https", "wss"));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", s.h.admin_token).parse().unwrap(),
    );
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "v5.channel.k8s.io".parse().unwrap(),
    );
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile_certs(&s.h.ca_pem) {
        roots.add(c).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(s.h.addr).await.unwrap();
    let server_name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect(server_name, tcp)
        .await
        .unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(req, stream)
        .await
        .expect("websocket exec");
    assert_eq!(
        resp.headers()["sec-websocket-protocol"],
        "v5.channel.k8s.io"
    );
    ws.send(Message::binary(b"\x00from stdin\n".to_vec()))
        .await
        .unwrap();
    ws.send(Message::binary(vec![255u8, 0])).await.unwrap();
    let mut stdout = Vec::new();
    let mut status = Value::Null;
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Binary(b) = m {
            match b[0] {
                1 => stdout.extend_from_slice(&b[1..]),
                3 => status = serde_json::from_slice(&b[1..]).unwrap(),
                _ => {}
            }
        }
    }
    assert_eq!(String::from_utf8_lossy(&stdout), "from stdin\ndone hello\n");
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(
        status["details"]["causes"][0],
        json!({"reason": "ExitCode", "message": "5"})
    );
}

fn rustls_pemfile_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use base64::Engine;
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut inside = false;
    for l in pem.lines() {
        if l.starts_with("-----BEGIN CERTIFICATE") {
            inside = true;
            cur.clear();
        } else if l.starts_with("-----END CERTIFICATE") {
            inside = false;
            out.push(rustls::pki_types::CertificateDer::from(
                base64::engine::general_purpose::STANDARD
                    .decode(&cur)
                    .unwrap(),
            ));
        } else if inside {
            cur.push_str(l.trim());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kube_rs_exec_reads_stdout_and_the_exit_status() {
    let s = sim().await;
    s.apply(&[json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "target", "namespace": "default"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}})]);
    s.wait_for("target running", 60, |s| {
        s.get("pods", "", Some("default"), "target")
            .filter(|p| p["status"]["phase"] == "Running")
    })
    .await;
    let cfg = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&s.h.kubeconfig).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(cfg).unwrap();
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(client, "default");
    let mut p = pods
        .exec(
            "target",
            ["sh", "-c", "echo from-kube-rs; exit 4"],
            &kube::api::AttachParams::default().stderr(false),
        )
        .await
        .expect("exec");
    let mut out = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut p.stdout().unwrap(), &mut out)
        .await
        .unwrap();
    let status = p.take_status().unwrap().await.unwrap();
    assert_eq!(out, "from-kube-rs\n");
    assert_eq!(status.status.as_deref(), Some("Failure"));
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
    assert_eq!(
        status.details.unwrap().causes.unwrap()[0]
            .message
            .as_deref(),
        Some("4")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_downward_api_file_follows_the_pods_annotations() {
    let s = sim().await;
    s.apply(&[json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "watcher", "namespace": "default", "labels": {"app": "w"}},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "busybox",
                "command": ["sh", "-c", "until grep -q 'stop-restore-manager=\"true\"' /dp_downward/annotations; do sleep 0.2; done; cat /dp_downward/stop; echo; cat /dp_downward/labels; echo"],
                "volumeMounts": [{"name": "downward", "mountPath": "/dp_downward"}]}],
            "volumes": [{"name": "downward", "downwardAPI": {"items": [
                {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "stop", "fieldRef": {"fieldPath": "metadata.annotations['stop-restore-manager']"}}]}}]}})]);
    s.wait_for("watcher running", 60, |s| {
        s.get("pods", "", Some("default"), "watcher")
            .filter(|p| p["status"]["phase"] == "Running")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        s.get("pods", "", Some("default"), "watcher").unwrap()["status"]["phase"],
        "Running",
        "it waits for the annotation"
    );
    s.kubectl(&["annotate", "pod", "watcher", "stop-restore-manager=true"]);
    s.wait_for("watcher to see the annotation", 30, |s| {
        s.get("pods", "", Some("default"), "watcher")
            .filter(|p| p["status"]["phase"] == "Succeeded")
    })
    .await;
    assert_eq!(s.kubectl(&["logs", "watcher"]), "true\napp=\"w\"\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_statefulset_pod_comes_back_with_the_same_claim() {
    let s = sim().await;
    s.apply(&[
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": "default"}, "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 5432}]}}),
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "default"},
            "spec": {"serviceName": "db", "replicas": 2, "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": "postgres",
                    "command": ["sh", "-c", "date +%s%N >> /data/starts; grep -c . /data/starts; grep -q 'db-0.db.default.svc.cluster.local' /etc/hosts && grep -q ' db.default.svc.cluster.local' /etc/hosts && echo resolvable; exec sleep 3600"],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}}),
    ]);
    let ready = |s: &Sim| {
        let st = s.get("statefulsets", "apps", Some("default"), "db")?;
        (st["status"]["readyReplicas"] == 2).then_some(st)
    };
    let st = s.wait_for("2 ready replicas", 60, ready).await;
    assert_eq!(st["status"]["replicas"], 2);
    assert_eq!(st["status"]["availableReplicas"], 2);
    assert_eq!(st["status"]["currentReplicas"], 2);
    assert_eq!(st["status"]["observedGeneration"], 1);
    let p0 = s.get("pods", "", Some("default"), "db-0").unwrap();
    assert_eq!(
        p0["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
        "db-0"
    );
    assert_eq!(
        p0["metadata"]["labels"]["apps.kubernetes.io/pod-index"],
        "0"
    );
    assert_eq!(p0["spec"]["hostname"], "db-0");
    assert_eq!(p0["spec"]["subdomain"], "db");
    let claim = s
        .get("persistentvolumeclaims", "", Some("default"), "data-db-0")
        .unwrap();
    assert_eq!(claim["status"]["phase"], "Bound");
    let uid0 = p0["metadata"]["uid"].as_str().unwrap().to_string();
    s.wait_for("db-0 logs", 20, |s| {
        s.kubectl(&["logs", "db-0"])
            .contains("resolvable")
            .then_some(())
    })
    .await;
    assert_eq!(s.kubectl(&["logs", "db-0"]), "1\nresolvable\n");
    s.kubectl(&["delete", "pod", "db-0", "--wait=true"]);
    let p0b = s
        .wait_for("db-0 recreated and running", 60, |s| {
            s.get("pods", "", Some("default"), "db-0").filter(|p| {
                p["metadata"]["uid"] != uid0.as_str() && p["status"]["phase"] == "Running"
            })
        })
        .await;
    assert_eq!(
        p0b["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "data-db-0"
    );
    s.wait_for("db-0 second start", 20, |s| {
        s.kubectl(&["logs", "db-0"])
            .starts_with("2\n")
            .then_some(())
    })
    .await;
    // Scale down keeps the claim.
    s.kubectl(&["scale", "statefulset", "db", "--replicas=1"]);
    s.wait_for("db-1 gone", 60, |s| {
        s.get("pods", "", Some("default"), "db-1")
            .is_none()
            .then_some(())
    })
    .await;
    assert!(s
        .get("persistentvolumeclaims", "", Some("default"), "data-db-1")
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cronjob_fires_on_the_advanced_clock_and_kubectl_creates_jobs_from_it() {
    let s = sim().await;
    s.apply(&[json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "tick", "namespace": "default"},
        "spec": {"schedule": "*/5 * * * *", "timeZone": "Etc/UTC", "concurrencyPolicy": "Forbid", "successfulJobsHistoryLimit": 1,
            "jobTemplate": {"metadata": {"labels": {"kind": "tick"}}, "spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", "echo tick"]}]}}}}}})]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        s.list("jobs", "batch", "default").is_empty(),
        "nothing before the schedule"
    );
    s.h.runner.cron_clock.advance(5 * 60);
    let job = s
        .wait_for("a scheduled job", 30, |s| {
            s.list("jobs", "batch", "default")
                .into_iter()
                .find(|j| j["metadata"]["labels"]["kind"] == "tick")
        })
        .await;
    let name = job["metadata"]["name"].as_str().unwrap();
    let ts = job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
        .as_str()
        .unwrap();
    let t = chrono::DateTime::parse_from_rfc3339(ts)
        .unwrap()
        .timestamp();
    assert_eq!(t % 300, 0, "a */5 time: {ts}");
    assert_eq!(name, format!("tick-{}", t / 60));
    assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    wait_job(&s, "default", name, "Complete", 60).await;
    let cj = s
        .wait_for("lastSuccessfulTime", 30, |s| {
            s.get("cronjobs", "batch", Some("default"), "tick")
                .filter(|c| c["status"]["lastSuccessfulTime"].is_string())
        })
        .await;
    assert_eq!(
        cj["status"]["lastScheduleTime"].as_str().unwrap(),
        chrono::DateTime::from_timestamp(t, 0)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    );
    assert!(cj["status"].get("active").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_creates_and_runs_a_job_from_a_cronjob() {
    let s = sim().await;
    s.apply(&[json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly", "namespace": "default"},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", "echo by hand"]}]}}}}}})]);
    // As users trigger a schedule by hand (kubectl builds this Job itself).
    s.kubectl(&["create", "job", "--from=cronjob/nightly", "manual"]);
    let manual = wait_job(&s, "default", "manual", "Complete", 60).await;
    assert_eq!(
        manual["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"],
        "manual"
    );
    assert_eq!(manual["metadata"]["ownerReferences"][0]["name"], "nightly");
}

fn snapshot_crds() -> Vec<Value> {
    let crd = |plural: &str, kind: &str, scope: &str| {
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.snapshot.storage.k8s.io")},
            "spec": {"group": "snapshot.storage.k8s.io", "scope": scope,
                "names": {"plural": plural, "singular": kind.to_lowercase(), "kind": kind, "listKind": format!("{kind}List")},
                "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}})
    };
    vec![
        crd("volumesnapshots", "VolumeSnapshot", "Namespaced"),
        crd("volumesnapshotcontents", "VolumeSnapshotContent", "Cluster"),
        crd("volumesnapshotclasses", "VolumeSnapshotClass", "Cluster"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_volume_snapshot_becomes_ready_and_restores_into_a_new_claim() {
    let s = sim().await;
    s.apply(&snapshot_crds());
    s.wait_for("snapshot CRDs served", 20, |s| {
        s.h.cluster
            .target(
                "snapshot.storage.k8s.io",
                "v1",
                "volumesnapshots",
                Some("default"),
            )
            .ok()
    })
    .await;
    s.apply(&[
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "src", "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fill", "namespace": "default"},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", "echo precious > /v/file"],
                "volumeMounts": [{"name": "v", "mountPath": "/v"}]}], "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "src"}}]}}),
    ]);
    s.wait_for("fill done", 60, |s| {
        s.get("pods", "", Some("default"), "fill")
            .filter(|p| p["status"]["phase"] == "Succeeded")
    })
    .await;
    s.apply(&[json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot", "metadata": {"name": "snap", "namespace": "default"},
        "spec": {"source": {"persistentVolumeClaimName": "src"}}})]);
    let snap = s
        .wait_for("snapshot ready", 30, |s| {
            s.get(
                "volumesnapshots",
                "snapshot.storage.k8s.io",
                Some("default"),
                "snap",
            )
            .filter(|v| v["status"]["readyToUse"] == true)
        })
        .await;
    assert_eq!(snap["status"]["restoreSize"], "2Gi");
    assert!(snap["status"]["creationTime"].is_string());
    let content_name = snap["status"]["boundVolumeSnapshotContentName"]
        .as_str()
        .unwrap();
    assert_eq!(
        content_name,
        format!("snapcontent-{}", snap["metadata"]["uid"].as_str().unwrap())
    );
    let content = s
        .get(
            "volumesnapshotcontents",
            "snapshot.storage.k8s.io",
            None,
            content_name,
        )
        .unwrap();
    assert_eq!(content["status"]["readyToUse"], true);
    assert_eq!(content["spec"]["volumeSnapshotRef"]["name"], "snap");
    assert_eq!(content["spec"]["deletionPolicy"], "Delete");
    s.apply(&[
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "restored", "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}},
                "dataSource": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "snap"}}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "read", "namespace": "default"},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox", "command": ["cat", "/v/file"],
                "volumeMounts": [{"name": "v", "mountPath": "/v"}]}], "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "restored"}}]}}),
    ]);
    s.wait_for("read done", 60, |s| {
        s.get("pods", "", Some("default"), "read")
            .filter(|p| p["status"]["phase"] == "Succeeded")
    })
    .await;
    assert_eq!(s.kubectl(&["logs", "read"]), "precious\n");
    // Deleting the snapshot removes its content (policy Delete).
    s.kubectl(&["delete", "volumesnapshot", "snap", "--wait=true"]);
    s.wait_for("content gone", 30, |s| {
        s.get(
            "volumesnapshotcontents",
            "snapshot.storage.k8s.io",
            None,
            content_name,
        )
        .is_none()
        .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_in_cluster_client_uses_its_service_account_token_under_rbac() {
    let s = sim().await;
    s.apply(&[
        ns("team"),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader", "namespace": "team"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": "team"}, "data": {"k": "v"}}),
    ]);
    let pod = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "team"},
            "spec": {"restartPolicy": "Never", "serviceAccountName": "reader",
                "containers": [{"name": "c", "image": "bitnami/kubectl", "command": ["sh", "-c",
                    "cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; echo; test -s /var/run/secrets/kubernetes.io/serviceaccount/ca.crt && echo ca; kubectl get configmap settings -o jsonpath='{.data.k}' && echo"]}]}})
    };
    s.apply(&[pod("denied")]);
    let denied = s
        .wait_for("denied done", 60, |s| {
            s.get("pods", "", Some("team"), "denied")
                .filter(|p| matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
        })
        .await;
    let logs = s.kubectl(&["logs", "-n", "team", "denied"]);
    assert_eq!(denied["status"]["phase"], "Failed", "{logs}");
    assert!(logs.starts_with("team\nca\n"), "{logs}");
    assert!(logs.contains("configmaps \"settings\" is forbidden: User \"system:serviceaccount:team:reader\" cannot get resource \"configmaps\""), "{logs}");
    s.apply(&[
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "cm-reader", "namespace": "team"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "reader", "namespace": "team"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": "team"}]}),
        pod("allowed"),
    ]);
    let allowed = s
        .wait_for("allowed done", 60, |s| {
            s.get("pods", "", Some("team"), "allowed")
                .filter(|p| matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
        })
        .await;
    let logs = s.kubectl(&["logs", "-n", "team", "allowed"]);
    assert_eq!(allowed["status"]["phase"], "Succeeded", "{logs}");
    assert_eq!(logs, "team\nca\nv\n");
}

/// Host PIDs whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmd).contains(marker) {
                out.push(pid);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_pod_terminates_its_processes_gracefully() {
    let s = sim().await;
    let marker = format!("kube-sim-marker-{}", std::process::id());
    s.apply(&[json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "victim", "namespace": "default"},
        "spec": {"terminationGracePeriodSeconds": 20, "containers": [{"name": "c", "image": "busybox",
            "command": ["sh", "-c", format!("trap 'echo got TERM; exit 0' TERM; sleep 3600 & wait; echo {marker}")]}]}})]);
    s.wait_for("victim running", 60, |s| {
        s.get("pods", "", Some("default"), "victim")
            .filter(|p| p["status"]["phase"] == "Running")
    })
    .await;
    s.wait_for("the marked process", 10, |_| {
        (!processes_with(&marker).is_empty()).then_some(())
    })
    .await;
    let started = Instant::now();
    s.kubectl(&["delete", "pod", "victim", "--wait=true"]);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "SIGTERM ended it before the grace period"
    );
    assert!(s.get("pods", "", Some("default"), "victim").is_none());
    s.wait_for("no marked process", 10, |_| {
        processes_with(&marker).is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_is_left_running_or_mounted_after_kube_sim_stops() {
    let s = sim().await;
    let marker = format!("kube-sim-leftover-{}", std::process::id());
    let data_dir = s.h.data_dir.clone();
    s.apply(&[json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "stubborn", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", format!("sleep 3600; echo {marker}")],
            "volumeMounts": [{"name": "e", "mountPath": "/e"}]}], "volumes": [{"name": "e", "emptyDir": {}}]}})]);
    s.wait_for("stubborn running", 60, |s| {
        s.get("pods", "", Some("default"), "stubborn")
            .filter(|p| p["status"]["phase"] == "Running")
    })
    .await;
    assert!(!processes_with(&marker).is_empty());
    s.h.shutdown().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_with(&marker).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        processes_with(&marker).is_empty(),
        "container processes outlived kube-sim"
    );
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        !mounts.contains(&*data_dir.to_string_lossy()),
        "mounts under {} left: {mounts}",
        data_dir.display()
    );
}
