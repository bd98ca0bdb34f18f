//! kubectl end to end, with every kubectl on the machine (the Google Cloud CLI ships
//! 1.27 to 1.33 as /usr/lib/google-cloud-sdk/bin/kubectl.1.NN; /usr/bin/kubectl too):
//! apply (client- and server-side), get (tables, json, yaml, jsonpath, name, watch),
//! describe, label, annotate, the three patch types, status patches, create (protobuf
//! bodies on 1.32+), create job --from=cronjob, auth can-i, wait (condition and jsonpath),
//! logs, delete --wait, and refusals.
//!
//! Set KUBE_SIM_KUBECTLS to a colon-separated list of kubectl binaries to test others.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn kubectls() -> Vec<PathBuf> {
    if let Ok(list) = std::env::var("KUBE_SIM_KUBECTLS") {
        return list
            .split(':')
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect();
    }
    let mut out: Vec<PathBuf> = std::fs::read_dir("/usr/lib/google-cloud-sdk/bin")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("kubectl.1."))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    if Path::new("/usr/bin/kubectl").exists() {
        out.push(PathBuf::from("/usr/bin/kubectl"));
    }
    assert!(
        !out.is_empty(),
        "no kubectl found: install the Google Cloud CLI kubectl components (kubectl.1.27 ... kubectl.1.33 under \
         /usr/lib/google-cloud-sdk/bin) or set KUBE_SIM_KUBECTLS to a list of kubectl binaries"
    );
    out
}

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    cache: PathBuf,
    dir: PathBuf,
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Kubectl {
    fn run(&self, args: &[&str]) -> Out {
        let o = Command::new(&self.bin)
            .args([
                "--kubeconfig",
                self.kubeconfig.to_str().unwrap(),
                "--cache-dir",
                self.cache.to_str().unwrap(),
            ])
            .args(args)
            .current_dir(&self.dir)
            .env_remove("KUBECONFIG")
            .output()
            .expect("kubectl runs");
        Out {
            ok: o.status.success(),
            stdout: String::from_utf8_lossy(&o.stdout).into(),
            stderr: String::from_utf8_lossy(&o.stderr).into(),
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.ok,
            "{} {:?} failed:\n{}\n{}",
            self.bin.display(),
            args,
            o.stdout,
            o.stderr
        );
        o.stdout
    }

    fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            !o.ok,
            "{} {:?} should fail:\n{}",
            self.bin.display(),
            args,
            o.stdout
        );
        o.stderr
    }
}

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.kube-sim.io
spec:
  group: test.kube-sim.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Phase, type: string, jsonPath: .status.phase}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1}
              max: {type: integer, default: 10}
          status:
            type: object
            properties:
              phase: {type: string}
"#;

const OBJECTS: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: c1, labels: {app: demo}}
data: {a: "1"}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: cj}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - {name: c, image: busybox, command: [echo, hi]}
---
apiVersion: test.kube-sim.io/v1
kind: Widget
metadata: {name: w1}
spec: {size: 3}
"#;

fn scenario(k: &Kubectl, ns: &str, sim: &kube_sim::Handle) {
    std::fs::write(k.dir.join("crd.yaml"), CRD).unwrap();
    std::fs::write(k.dir.join("objects.yaml"), OBJECTS).unwrap();
    std::fs::write(
        k.dir.join("objects2.yaml"),
        OBJECTS.replace("{a: \"1\"}", "{a: \"2\"}"),
    )
    .unwrap();
    std::fs::write(
        k.dir.join("ssa.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {k: v}\n",
    )
    .unwrap();
    std::fs::write(
        k.dir.join("bad.yaml"),
        "apiVersion: test.kube-sim.io/v1\nkind: Widget\nmetadata: {name: bad}\nspec: {size: 0}\n",
    )
    .unwrap();

    k.ok(&["apply", "--validate=false", "-f", "crd.yaml"]);
    k.ok(&[
        "wait",
        "--for=condition=established",
        "crd/widgets.test.kube-sim.io",
        "--timeout=30s",
    ]);
    k.ok(&["create", "namespace", ns]);
    let out = k.ok(&["-n", ns, "apply", "--validate=false", "-f", "objects.yaml"]);
    assert!(
        out.contains("configmap/c1 created") && out.contains("widget.test.kube-sim.io/w1 created"),
        "{out}"
    );
    let out = k.ok(&["-n", ns, "apply", "--validate=false", "-f", "objects2.yaml"]);
    assert!(out.contains("configmap/c1 configured"), "{out}");
    assert_eq!(
        k.ok(&["-n", ns, "get", "cm", "c1", "-o", "jsonpath={.data.a}"]),
        "2"
    );

    // Tables with the CRD's columns, and the other output formats.
    let table = k.ok(&["-n", ns, "get", "widgets"]);
    assert!(
        table.contains("SIZE") && table.contains("PHASE") && table.contains("w1"),
        "{table}"
    );
    assert_eq!(
        k.ok(&["-n", ns, "get", "wd", "w1", "-o", "jsonpath={.spec.max}"]),
        "10"
    );
    assert!(k
        .ok(&["-n", ns, "get", "wd", "w1", "-o", "yaml"])
        .contains("kind: Widget"));
    assert!(k
        .ok(&["-n", ns, "get", "cm", "c1", "-o", "json"])
        .contains("\"app\": \"demo\""));
    assert_eq!(
        k.ok(&["-n", ns, "get", "cronjob", "-o", "name"]).trim(),
        "cronjob.batch/cj"
    );
    let pods = k.ok(&["get", "nodes"]);
    assert!(pods.contains("kube-sim"), "{pods}");

    // Server-side apply.
    assert!(k
        .ok(&[
            "-n",
            ns,
            "apply",
            "--server-side",
            "--validate=false",
            "-f",
            "ssa.yaml"
        ])
        .contains("serverside-applied"));

    // Label, annotate, the three patch types, a status patch.
    k.ok(&["-n", ns, "label", "cm", "c1", "tier=x"]);
    k.ok(&["-n", ns, "annotate", "cm", "c1", "note=y"]);
    k.ok(&["-n", ns, "patch", "cm", "c1", "-p", r#"{"data":{"b":"2"}}"#]);
    k.ok(&[
        "-n",
        ns,
        "patch",
        "cm",
        "c1",
        "--type=merge",
        "-p",
        r#"{"data":{"c":"3"}}"#,
    ]);
    k.ok(&[
        "-n",
        ns,
        "patch",
        "cm",
        "c1",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/data/d","value":"4"}]"#,
    ]);
    assert_eq!(
        k.ok(&[
            "-n",
            ns,
            "get",
            "cm",
            "c1",
            "-o",
            "jsonpath={.data.b}{.data.c}{.data.d}{.metadata.labels.tier}"
        ]),
        "234x"
    );
    k.ok(&[
        "-n",
        ns,
        "patch",
        "wd",
        "w1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Ready"}}"#,
    ]);
    k.ok(&[
        "-n",
        ns,
        "wait",
        "--for=jsonpath={.status.phase}=Ready",
        "wd/w1",
        "--timeout=10s",
    ]);
    assert!(k
        .ok(&["-n", ns, "describe", "wd", "w1"])
        .contains("Phase:  Ready"));

    // Typed creates (protobuf bodies on 1.32+), jobs from cronjobs, access checks.
    k.ok(&[
        "-n",
        ns,
        "create",
        "configmap",
        "made",
        "--from-literal=x=y",
    ]);
    k.ok(&[
        "-n",
        ns,
        "create",
        "secret",
        "generic",
        "sec",
        "--from-literal=k=v",
    ]);
    k.ok(&["-n", ns, "create", "job", "manual", "--from=cronjob/cj"]);
    assert_eq!(
        k.ok(&[
            "-n",
            ns,
            "get",
            "job",
            "manual",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].command}"
        ]),
        "[\"echo\",\"hi\"]"
    );
    assert_eq!(k.ok(&["auth", "can-i", "create", "pods"]).trim(), "yes");

    // Logs of a pod the runner would run: bind it and write its log.
    k.ok(&[
        "-n",
        ns,
        "run",
        "p",
        "--image=busybox",
        "--restart=Never",
        "--",
        "echo",
        "hello",
    ]);
    let e = k.fails(&["-n", ns, "logs", "p"]);
    assert!(e.contains("is waiting to start"), "{e}");
    sim.cluster.bind_pod(ns, "p", "kube-sim").unwrap();
    let log = kube_sim::logs::log_path(&sim.data_dir, ns, "p", "p", false);
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    std::fs::write(&log, "2026-01-01T00:00:00.000000000Z hello\n").unwrap();
    assert_eq!(k.ok(&["-n", ns, "logs", "p"]), "hello\n");

    // A watch sees a change.
    let mut child = Command::new(&k.bin)
        .args([
            "--kubeconfig",
            k.kubeconfig.to_str().unwrap(),
            "--cache-dir",
            k.cache.to_str().unwrap(),
        ])
        .args(["-n", ns, "get", "cm", "-w", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    k.ok(&["-n", ns, "create", "configmap", "watched"]);
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(seen.contains("configmap/watched"), "watch output: {seen}");

    // Refusals reach the user with the server's message.
    let e = k.fails(&["-n", ns, "apply", "--validate=false", "-f", "bad.yaml"]);
    assert!(
        e.contains(
            "spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1"
        ),
        "{e}"
    );
    let e = k.fails(&["-n", "no-such-ns", "create", "configmap", "x"]);
    assert!(e.contains("namespaces \"no-such-ns\" not found"), "{e}");

    // A bound pod is deleted gracefully: it stays until its kubelet confirms (the runner
    // does that); a forced delete with grace period 0 removes it at once.
    k.ok(&["-n", ns, "delete", "pod", "p", "--wait=false"]);
    assert!(k.ok(&["-n", ns, "get", "pod", "p"]).contains("Terminating"));
    k.ok(&[
        "-n",
        ns,
        "delete",
        "pod",
        "p",
        "--grace-period=0",
        "--force",
    ]);

    // Deletion with --wait, then the namespace with everything in it.
    k.ok(&[
        "-n",
        ns,
        "delete",
        "wd",
        "w1",
        "--wait=true",
        "--timeout=20s",
    ]);
    k.ok(&["delete", "namespace", ns, "--wait=true", "--timeout=30s"]);
    let e = k.fails(&["get", "namespace", ns]);
    assert!(e.contains("not found"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_works_with_every_installed_version() {
    // The API server alone: this scenario binds pods and writes their logs itself, and
    // checks graceful deletion of a bound pod no kubelet confirms (the runner's own
    // kubectl use is in runner.rs).
    let sim = common::start_with(kube_sim::Options {
        runner: kube_sim::runner::RunnerOptions {
            enabled: false,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let handle = std::sync::Arc::new(sim.handle);
    for bin in kubectls() {
        let tmp = tempfile::tempdir().unwrap();
        let name = bin.file_name().unwrap().to_string_lossy().replace('.', "-");
        let ns = format!("t-{name}");
        let k = Kubectl {
            bin: bin.clone(),
            kubeconfig: handle.kubeconfig.clone(),
            cache: tmp.path().join("cache"),
            dir: tmp.path().to_path_buf(),
        };
        let h = handle.clone();
        tokio::task::spawn_blocking(move || scenario(&k, &ns, &h))
            .await
            .unwrap_or_else(|e| {
                std::panic::resume_unwind(e.into_panic());
            });
    }
}
