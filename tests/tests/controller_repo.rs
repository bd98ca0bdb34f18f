//! End-to-end: the real `dprepo-controller` binary against kube-sim (the workspace's
//! stand-in API server), driven with the machine's `kubectl` as a user would; the
//! repository side (StorageProvider, BackupRepo, GarbageCollection).
//!
//! Build first: `cargo build --workspace --bins` (scripts/test.sh does). `kubectl` must be
//! on PATH.

mod common;

use common::cluster::*;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Objects that are wrong as written get a condition and an event naming the field;
/// StorageProviders follow their CSIDriver; the controller keeps serving the others.
#[test]
fn invalid_objects_are_reported_by_field_and_providers_follow_their_csi_driver() {
    let mut c = Cluster::start();
    // Before the CRDs exist the controller is alive but not ready, and says why.
    c.start_controller();
    c.wait_for("/healthz", Duration::from_secs(60), || {
        (c.http_get(c.probe_port, "/healthz").0 == 200).then_some(())
    });
    assert_eq!(c.http_get(c.probe_port, "/readyz").0, 503);
    c.wait_for(
        "the missing CRDs in the log",
        Duration::from_secs(30),
        || {
            c.controller_log()
                .contains("backuprepos.dataprotection.kubeblocks.io")
                .then_some(())
        },
    );
    // deploy/ without its controller Deployment: the test's controller is the only one.
    apply_deploy(&c, false);
    c.wait_for(
        "/readyz once the CRDs are installed",
        Duration::from_secs(60),
        || (c.http_get(c.probe_port, "/readyz").0 == 200).then_some(()),
    );

    c.apply(
        r#"
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: StorageProvider
metadata: {name: broken}
spec:
  datasafedConfigTemplate: |
    [storage]
    root = {{ .Parameters.bucket
---
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: StorageProvider
metadata: {name: nfs-like}
spec:
  csiDriverName: nfs.csi.k8s.io
  storageClassTemplate: |
    provisioner: nfs.csi.k8s.io
---
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: BackupRepo
metadata: {name: orphan}
spec:
  storageProviderRef: no-such-provider
  pvReclaimPolicy: Retain
---
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: BackupRepo
metadata:
  name: bad-key-annotation
  annotations: {dprepo.io/key-secret: "not a reference"}
spec:
  storageProviderRef: nfs-like
  pvReclaimPolicy: Retain
"#,
    );
    let broken = c.wait_for(
        "StorageProvider broken NotReady",
        Duration::from_secs(60),
        || {
            c.get(&["storageprovider", "broken"])
                .filter(|p| p.pointer("/status/phase") == Some(&Value::from("NotReady")))
        },
    );
    let parsed = c
        .condition(&broken, "TemplatesParsed")
        .expect("TemplatesParsed");
    assert_eq!(parsed["status"], "False");
    let message = parsed["message"].as_str().unwrap();
    assert!(
        message.starts_with("spec.datasafedConfigTemplate: "),
        "{message}"
    );
    c.wait_for(
        "an InvalidSpec event naming the template",
        Duration::from_secs(30),
        || {
            c.events_of("broken")
                .iter()
                .any(|e| e.starts_with("InvalidSpec: spec.datasafedConfigTemplate"))
                .then_some(())
        },
    );

    let orphan = c.wait_for("BackupRepo orphan Failed", Duration::from_secs(60), || {
        c.get(&["backuprepo", "orphan"])
            .filter(|r| r.pointer("/status/phase") == Some(&Value::from("Failed")))
    });
    let ready = c
        .condition(&orphan, "StorageProviderReady")
        .expect("condition");
    assert_eq!(ready["reason"], "StorageProviderNotFound");
    c.wait_for(
        "an event naming spec.storageProviderRef",
        Duration::from_secs(30),
        || {
            c.events_of("orphan")
                .iter()
                .any(|e| e.contains("spec.storageProviderRef"))
                .then_some(())
        },
    );

    // The CSI driver is missing: the provider is NotReady, and a Mount repository on it
    // waits with StorageProviderNotReady ...
    let nfs = c.wait_for("nfs-like NotReady", Duration::from_secs(60), || {
        c.get(&["storageprovider", "nfs-like"])
            .filter(|p| p.pointer("/status/phase") == Some(&Value::from("NotReady")))
    });
    assert_eq!(
        c.condition(&nfs, "CSIDriverInstalled").unwrap()["status"],
        "Unknown"
    );
    let bad = c.wait_for("bad-key-annotation Failed", Duration::from_secs(60), || {
        c.get(&["backuprepo", "bad-key-annotation"]).filter(|r| {
            c.condition(r, "StorageProviderReady")
                .is_some_and(|x| x["reason"] == "StorageProviderNotReady")
        })
    });
    assert_eq!(bad["status"]["phase"], "Failed");
    // ... until the CSIDriver appears: the watch wakes the provider, then the repository,
    // which now stops at its malformed key annotation, named.
    c.apply(
        "apiVersion: storage.k8s.io/v1\nkind: CSIDriver\nmetadata: {name: nfs.csi.k8s.io}\nspec: {attachRequired: false}\n",
    );
    c.wait_for("nfs-like Ready", Duration::from_secs(60), || {
        c.get(&["storageprovider", "nfs-like"])
            .filter(|p| p.pointer("/status/phase") == Some(&Value::from("Ready")))
    });
    let bad = c.wait_for("the key annotation named", Duration::from_secs(90), || {
        c.get(&["backuprepo", "bad-key-annotation"]).filter(|r| {
            c.condition(r, "ParametersChecked")
                .is_some_and(|x| x["status"] == "False")
        })
    });
    let checked = c.condition(&bad, "ParametersChecked").unwrap();
    assert_eq!(checked["reason"], "InvalidRepositoryKey");
    assert!(
        checked["message"]
            .as_str()
            .unwrap()
            .starts_with("metadata.annotations[dprepo.io/key-secret]: "),
        "{checked}"
    );
    assert_eq!(bad["status"]["phase"], "Failed");
    // Both repositories carry the finalizer; metrics count the reconciles.
    assert!(bad["metadata"]["finalizers"]
        .as_array()
        .unwrap()
        .contains(&Value::from("dataprotection.kubeblocks.io/finalizer")));
    let (code, metrics) = c.http_get(c.metrics_port, "/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("dprepo_controller_reconcile_total{kind=\"BackupRepo\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("dprepo_repository_phase{repository=\"orphan\",phase=\"Failed\"} 1"));
    // Deleting a repository nothing uses goes through: the finalizer is removed.
    c.kubectl_ok(&["delete", "backuprepo", "orphan", "--wait=false"]);
    c.wait_for("orphan gone", Duration::from_secs(60), || {
        c.get(&["backuprepo", "orphan"]).is_none().then_some(())
    });
    // Nothing panicked.
    assert!(
        !c.controller_log().contains("panicked"),
        "{}",
        c.controller_log()
    );
}

/// The data of the key Secret the controller generated for `repo`.
fn generated_key(c: &Cluster, repo: &str) -> (Value, String) {
    let secret = c.wait_for("the generated key Secret", Duration::from_secs(60), || {
        c.get(&[
            "secret",
            "-n",
            "dprepo-system",
            &format!("dprepo-key-{repo}"),
        ])
    });
    let b64 = secret["data"]["dprepoPassword"]
        .as_str()
        .expect("key")
        .to_string();
    let out = Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut ch| {
            use std::io::Write;
            ch.stdin.take().unwrap().write_all(b64.as_bytes())?;
            ch.wait_with_output()
        })
        .expect("base64");
    (secret, String::from_utf8(out.stdout).expect("key text"))
}

/// The decoded value of `field` of Secret `ns/name`, if both exist.
fn secret_field(c: &Cluster, ns: &str, name: &str, field: &str) -> Option<String> {
    let secret = c.get(&["secret", "-n", ns, name])?;
    let b64 = secret["data"][field].as_str()?.to_string();
    let out = Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut ch| {
            use std::io::Write;
            ch.stdin.take().unwrap().write_all(b64.as_bytes())?;
            ch.wait_with_output()
        })
        .ok()?;
    String::from_utf8(out.stdout)
        .ok()
        .map(|s| s.trim().to_string())
}

/// A local-path style provider (Mount access): the BackupRepo becomes Ready, the
/// pre-check created a real repository (opened here with `dprepo` and the generated key,
/// from the retained volume), the repository's GarbageCollection exists, and deleting
/// the BackupRepo keeps the key Secret.
#[test]
fn a_mount_repo_becomes_ready_with_a_repository_made_by_the_pre_check() {
    let mut c = Cluster::start();
    install(&mut c);
    c.apply(
        r#"
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: StorageProvider
metadata: {name: local-path}
spec:
  storageClassTemplate: |
    provisioner: kube-sim.io/host-path
---
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: BackupRepo
metadata: {name: local}
spec:
  storageProviderRef: local-path
  accessMethod: Mount
  pvReclaimPolicy: Retain
  volumeCapacity: 1Gi
"#,
    );
    let repo = c.wait_for("BackupRepo local Ready", Duration::from_secs(180), || {
        c.get(&["backuprepo", "local"])
            .filter(|r| r.pointer("/status/phase") == Some(&Value::from("Ready")))
    });
    assert_eq!(
        c.condition(&repo, "PreCheckPassed").unwrap()["status"],
        "True"
    );
    let (secret, key) = generated_key(&c, "local");
    assert!(secret["metadata"].get("ownerReferences").is_none());
    // The pre-check's volume was retained: it holds the repository the pre-check made.
    let pvs = c.get(&["pv"]).expect("pv list");
    let dir = pvs["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|pv| {
            pv.pointer("/spec/claimRef/name")
                .and_then(Value::as_str)
                .is_some_and(|n| n.starts_with("pre-check-"))
        })
        .and_then(|pv| pv.pointer("/spec/hostPath/path").and_then(Value::as_str))
        .expect("the pre-check's volume")
        .to_string();
    let out = bare_cmd(["snapshots", "--json", "-r", dir.as_str()])
        .env("DPREPO_PASSWORD", key.trim())
        .output()
        .expect("dprepo");
    assert!(out.status.success(), "dprepo snapshots: {}", stderr(&out));
    // The repository's GarbageCollection and the controller namespace's objects.
    c.wait_for("the GarbageCollection", Duration::from_secs(60), || {
        c.get(&["gc", "local"])
    });
    c.kubectl_ok(&["delete", "backuprepo", "local", "--wait=false"]);
    c.wait_for("local gone", Duration::from_secs(120), || {
        c.get(&["backuprepo", "local"]).is_none().then_some(())
    });
    assert!(c
        .get(&["secret", "-n", "dprepo-system", "dprepo-key-local"])
        .is_some());
}

/// Runs `datasafed ARGS` on the host against the S3 location `root` with `key`.
fn datasafed_s3(
    root: &str,
    key: &str,
    args: &[&str],
    input: Option<&[u8]>,
    conf_dir: &Path,
) -> Output {
    use std::io::Write;
    let conf = conf_dir.join("host-datasafed.conf");
    std::fs::write(
        &conf,
        format!(
            "[storage]\ntype = s3\nendpoint = {}\nroot = {root}\naccess_key_id = test\nsecret_access_key = test\nforce_path_style = true\n",
            s3_endpoint()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(bin("datasafed"));
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("DPREPO_") || k.starts_with("DATASAFED_") || k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.arg("-c")
        .arg(&conf)
        .args(args)
        .env("DPREPO_PASSWORD", key)
        .env("XDG_CACHE_HOME", conf_dir.join("cache"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("datasafed");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(data) = input {
        stdin.write_all(data).unwrap();
    }
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// An S3 BackupRepo (Tool access) on the suite's moto server becomes Ready; a
/// GarbageCollection run asked for by annotation frees the packs of a forgotten file and
/// records the bytes; a second BackupRepo on the same location with another key fails
/// with a message that says so.
#[test]
fn an_s3_repo_becomes_ready_gc_frees_packs_and_another_key_is_refused() {
    ensure_s3_bucket();
    let mut c = Cluster::start();
    install(&mut c);
    let prefix = c
        .dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_lowercase();
    let root = format!("{S3_BUCKET}/{prefix}");
    let provider = s3_storage_provider("s3-test");
    c.apply(&format!(
        r#"
{provider}---
apiVersion: v1
kind: Secret
metadata: {{name: s3-creds, namespace: dprepo-system}}
stringData: {{accessKeyId: test, secretAccessKey: test}}
---
apiVersion: v1
kind: Secret
metadata: {{name: s3-other-key, namespace: dprepo-system}}
stringData: {{accessKeyId: test, secretAccessKey: test, dprepoPassword: not-the-key}}
---
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: BackupRepo
metadata: {{name: s3}}
spec:
  storageProviderRef: s3-test
  accessMethod: Tool
  pvReclaimPolicy: Retain
  config: {{bucket: "{root}", endpoint: "{endpoint}"}}
  credential: {{name: s3-creds, namespace: dprepo-system}}
"#,
        endpoint = s3_endpoint()
    ));
    c.wait_for("BackupRepo s3 Ready", Duration::from_secs(180), || {
        c.get(&["backuprepo", "s3"])
            .filter(|r| r.pointer("/status/phase") == Some(&Value::from("Ready")))
    });
    let (_, key) = generated_key(&c, "s3");
    let key = key.trim().to_string();
    // Pods get an access key instead of the repository key: the pre-check registered it,
    // the controller recorded it and wrote it into the tool Secrets (the GC Job below
    // opens the repository with it), so no namespace's Secret holds the password.
    let access = c.wait_for(
        "the access key in the tool Secret",
        Duration::from_secs(120),
        || {
            let repo = c.get(&["backuprepo", "s3"])?;
            let name = repo.pointer("/status/toolConfigSecretName")?.as_str()?;
            secret_field(&c, "dprepo-system", name, "dprepo-password")
                .filter(|k| k.starts_with("dprepo-ak1-"))
        },
    );
    assert_eq!(
        secret_field(&c, "dprepo-system", "dprepo-access-s3", "accessKey").as_deref(),
        Some(access.as_str())
    );
    let out = datasafed_s3(&root, &access, &["list", "/"], None, c.dir.path());
    assert!(
        out.status.success(),
        "list with the access key: {}",
        stderr(&out)
    );
    // Two files in separate pushes (separate packs), then one forgotten.
    let data = |seed: u64| random_bytes(seed, 2 << 20);
    for (path, seed) in [("/ns/a", 1), ("/ns/b", 2)] {
        let out = datasafed_s3(
            &root,
            &key,
            &["push", "-", path],
            Some(&data(seed)),
            c.dir.path(),
        );
        assert!(out.status.success(), "push: {}", stderr(&out));
    }
    let out = datasafed_s3(&root, &key, &["rm", "/ns/a"], None, c.dir.path());
    assert!(out.status.success(), "rm: {}", stderr(&out));
    c.wait_for("the GarbageCollection", Duration::from_secs(60), || {
        c.get(&["gc", "s3"])
    });
    c.kubectl_ok(&["annotate", "gc", "s3", "dprepo.io/run-requested=e2e"]);
    let gc = c.wait_for("a finished run", Duration::from_secs(180), || {
        c.get(&["gc", "s3"])
            .filter(|g| g.pointer("/status/history/0/result").is_some())
    });
    let run = &gc["status"]["history"][0];
    assert_eq!(run["result"], "Succeeded", "{run}");
    assert_eq!(run["trigger"], "Manual");
    assert!(run["bytesFreed"].as_i64().unwrap() > 0, "{run}");
    assert!(run["packsDeleted"].as_i64().unwrap() >= 1, "{run}");
    assert_eq!(run["snapshotsSeen"], 1, "{run}");
    // Recorded once, and no longer current (the next reconciles must not record it again).
    std::thread::sleep(Duration::from_secs(3));
    let again = c.get(&["gc", "s3"]).unwrap();
    assert_eq!(
        again["status"]["history"].as_array().unwrap().len(),
        1,
        "{}",
        again["status"]
    );
    assert!(
        again["status"].get("currentRun").is_none(),
        "{}",
        again["status"]
    );
    assert!(gc["metadata"]["annotations"]
        .get("dprepo.io/run-requested")
        .is_none());
    let repo = c.get(&["backuprepo", "s3"]).unwrap();
    assert_eq!(
        c.condition(&repo, "RepositoryMaintained").unwrap()["status"],
        "True"
    );
    let out = datasafed_s3(&root, &key, &["pull", "/ns/b", "-"], None, c.dir.path());
    assert_eq!(out.stdout, data(2));

    // The same location with another key: Failed, and the condition says why.
    c.apply(&format!(
        r#"
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: BackupRepo
metadata: {{name: s3-other-key}}
spec:
  storageProviderRef: s3-test
  accessMethod: Tool
  pvReclaimPolicy: Retain
  config: {{bucket: "{root}", endpoint: "{endpoint}"}}
  credential: {{name: s3-other-key, namespace: dprepo-system}}
"#,
        endpoint = s3_endpoint()
    ));
    let failed = c.wait_for("s3-other-key Failed", Duration::from_secs(180), || {
        c.get(&["backuprepo", "s3-other-key"])
            .filter(|r| r.pointer("/status/phase") == Some(&Value::from("Failed")))
    });
    let check = c.condition(&failed, "PreCheckPassed").unwrap();
    assert!(
        check["message"].as_str().unwrap().starts_with(
            "The storage already holds a dprepo repository that was created with another key"
        ),
        "{check}"
    );
}

/// An S3 server of one test that checks credentials (moto with authentication from the
/// first request) unless started without, killed when dropped.
struct AuthenticatingS3 {
    child: std::process::Child,
    endpoint: String,
}

impl AuthenticatingS3 {
    fn start() -> AuthenticatingS3 {
        Self::start_with(true)
    }

    /// A private moto server that takes any credential.
    fn start_without_authentication() -> AuthenticatingS3 {
        Self::start_with(false)
    }

    fn start_with(authenticate: bool) -> AuthenticatingS3 {
        let port = free_port();
        let no_auth_actions = if authenticate { "0" } else { "inf" };
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", no_auth_actions)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto (scripts/test.sh installs it: pip install 'moto[server]')");
        // Dropped (killed and reaped) on every path, the panic below included.
        let server = AuthenticatingS3 {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "moto with authentication did not start on {}",
            server.endpoint
        );
    }
}

impl Drop for AuthenticatingS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A credential the storage refuses: the pre-check fails, the BackupRepo is Failed, and
/// its condition carries the storage's answer, so the user sees which setting is wrong.
#[test]
fn an_s3_repo_with_a_wrong_credential_fails_saying_so() {
    let s3 = AuthenticatingS3::start();
    let mut c = Cluster::start();
    install(&mut c);
    let provider = s3_storage_provider("s3-auth");
    c.apply(&format!(
        r#"
{provider}---
apiVersion: v1
kind: Secret
metadata: {{name: s3-wrong-creds, namespace: dprepo-system}}
stringData: {{accessKeyId: no-such-key, secretAccessKey: wrong}}
---
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: BackupRepo
metadata: {{name: s3-wrong-creds}}
spec:
  storageProviderRef: s3-auth
  accessMethod: Tool
  pvReclaimPolicy: Retain
  config: {{bucket: "{S3_BUCKET}/wrong", endpoint: "{endpoint}"}}
  credential: {{name: s3-wrong-creds, namespace: dprepo-system}}
"#,
        endpoint = s3.endpoint
    ));
    let failed = c.wait_for("s3-wrong-creds Failed", Duration::from_secs(180), || {
        c.get(&["backuprepo", "s3-wrong-creds"])
            .filter(|r| r.pointer("/status/phase") == Some(&Value::from("Failed")))
    });
    let check = c.condition(&failed, "PreCheckPassed").unwrap();
    assert_eq!(check["status"], "False", "{check}");
    let message = check["message"].as_str().unwrap();
    assert!(
        message.contains("lacked the necessary privileges")
            && message.contains("InvalidAccessKeyId"),
        "{check}"
    );
}

/// Creates `bucket` on the S3 server at `endpoint` (moto takes unsigned requests).
fn create_bucket(endpoint: &str, bucket: &str) {
    use std::io::{Read, Write};
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut sock = std::net::TcpStream::connect(host).expect("S3 server");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        sock,
        "PUT /{bucket} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    sock.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "create bucket: {reply}");
}

/// `dprepo ARGS` on the host against the S3 location `root` of `endpoint`, with the
/// repository key `key` or (`access`) an access key.
fn dprepo_s3(
    endpoint: &str,
    root: &str,
    secret: &str,
    access: bool,
    args: &[&str],
    dir: &Path,
) -> Output {
    let conf = dir.join(format!("host-{}.conf", root.replace('/', "-")));
    std::fs::write(
        &conf,
        format!(
            "[storage]\ntype = s3\nendpoint = {endpoint}\nroot = {root}\naccess_key_id = test\nsecret_access_key = test\nforce_path_style = true\n"
        ),
    )
    .unwrap();
    let key_file = dir.join("host-key");
    std::fs::write(&key_file, secret).unwrap();
    let mut cmd = bare_cmd(["--datasafed-conf"]);
    cmd.arg(&conf).args(args);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("DATASAFED_") || k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env(
        if access {
            "DPREPO_ACCESS_KEY_FILE"
        } else {
            "DPREPO_PASSWORD_FILE"
        },
        &key_file,
    )
    .env("XDG_CACHE_HOME", dir.join("cache"))
    .output()
    .expect("dprepo")
}

/// The ids of the key files of the repository, listed with its key.
fn key_ids(endpoint: &str, root: &str, key: &str, dir: &Path) -> Vec<String> {
    let out = dprepo_s3(endpoint, root, key, false, &["key", "list", "--json"], dir);
    assert!(out.status.success(), "dprepo key list: {}", stderr(&out));
    let list: Value = serde_json::from_slice(&out.stdout).expect("key list JSON");
    list["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["id"].as_str().map(str::to_string))
        .collect()
}

/// Whether the access key `access` opens the repository.
fn access_key_opens(endpoint: &str, root: &str, access: &str, dir: &Path) -> bool {
    dprepo_s3(endpoint, root, access, true, &["snapshots", "--json"], dir)
        .status
        .success()
}

/// Deleting a Tool-access BackupRepo left the pods' access key file in the repository:
/// the Secrets went, but any copy of the key (taken from a namespace's tool Secret)
/// still opened it. Deletion now removes the key file with a Job before the finalizer
/// goes; where that fails (here the storage server is gone), a Warning Event names the
/// key and the repository, and the deletion still completes.
#[test]
fn access_keys_are_revoked_when_their_backup_repo_is_deleted() {
    ensure_s3_bucket();
    // The second repository's storage: a server of its own, stopped before the deletion.
    let doomed = AuthenticatingS3::start_without_authentication();
    create_bucket(&doomed.endpoint, S3_BUCKET);
    let mut c = Cluster::start();
    install(&mut c);
    let prefix = c
        .dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_lowercase();
    let root = format!("{S3_BUCKET}/{prefix}");
    let provider = s3_storage_provider("s3-revoke");
    let repos = [
        ("revoked", s3_endpoint()),
        ("unreachable", doomed.endpoint.clone()),
    ];
    let mut yaml = format!(
        r#"
{provider}---
apiVersion: v1
kind: Secret
metadata: {{name: s3-creds, namespace: dprepo-system}}
stringData: {{accessKeyId: test, secretAccessKey: test}}
"#
    );
    for (name, endpoint) in &repos {
        yaml.push_str(&format!(
            r#"---
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: BackupRepo
metadata: {{name: {name}}}
spec:
  storageProviderRef: s3-revoke
  accessMethod: Tool
  pvReclaimPolicy: Retain
  config: {{bucket: "{root}", endpoint: "{endpoint}"}}
  credential: {{name: s3-creds, namespace: dprepo-system}}
"#
        ));
    }
    c.apply(&yaml);
    let mut keys = Vec::new();
    for (name, endpoint) in &repos {
        c.wait_for(
            &format!("BackupRepo {name} Ready"),
            Duration::from_secs(180),
            || {
                c.get(&["backuprepo", name])
                    .filter(|r| r.pointer("/status/phase") == Some(&Value::from("Ready")))
            },
        );
        let access = c.wait_for(
            &format!("the access key of {name}"),
            Duration::from_secs(120),
            || {
                secret_field(
                    &c,
                    "dprepo-system",
                    &format!("dprepo-access-{name}"),
                    "accessKey",
                )
            },
        );
        let id = access
            .strip_prefix("dprepo-ak1-")
            .and_then(|rest| rest.split_once('-'))
            .map(|(id, _)| id.to_string())
            .expect("access key text");
        let (_, key) = generated_key(&c, name);
        let key = key.trim().to_string();
        let ids = key_ids(endpoint, &root, &key, c.dir.path());
        assert!(ids.contains(&id), "the pre-check registered {id}: {ids:?}");
        assert!(access_key_opens(endpoint, &root, &access, c.dir.path()));
        keys.push((*name, endpoint.clone(), access, id, key));
    }

    // Removed: the key file is gone and the old access key opens nothing.
    let (name, endpoint, access, id, key) = &keys[0];
    c.kubectl_ok(&["delete", "backuprepo", name, "--wait=false"]);
    c.wait_for(&format!("{name} gone"), Duration::from_secs(180), || {
        c.get(&["backuprepo", name]).is_none().then_some(())
    });
    let ids = key_ids(endpoint, &root, key, c.dir.path());
    assert!(!ids.contains(id), "{id} still in {ids:?}");
    assert_eq!(ids.len(), 1, "the repository key stays: {ids:?}");
    assert!(!access_key_opens(endpoint, &root, access, c.dir.path()));
    let events = c.events_of(name);
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("AccessKeyRevoked: ") && e.contains(id.as_str())),
        "{events:?}"
    );
    let jobs = c
        .get(&[
            "job",
            "-n",
            "dprepo-system",
            "-l",
            &format!("dataprotection.kubeblocks.io/backup-repo-name={name}"),
        ])
        .expect("job list");
    assert_eq!(jobs["items"].as_array().map(Vec::len), Some(0), "{jobs}");

    // The storage is gone: a Warning names the key and the repository, and the deletion
    // completes.
    let (name, _, _, id, _) = &keys[1];
    drop(doomed);
    c.kubectl_ok(&["delete", "backuprepo", name, "--wait=false"]);
    c.wait_for(&format!("{name} gone"), Duration::from_secs(400), || {
        c.get(&["backuprepo", name]).is_none().then_some(())
    });
    let events = c.events_of(name);
    let warning = events
        .iter()
        .find(|e| e.starts_with("AccessKeyNotRevoked: "))
        .unwrap_or_else(|| panic!("no AccessKeyNotRevoked event: {events:?}"));
    assert!(warning.contains(id.as_str()), "{warning}");
    assert!(warning.contains("BackupRepo unreachable"), "{warning}");
    assert!(
        warning.contains(&format!("dprepo key remove {id}")),
        "{warning}"
    );
}

/// `kubectl delete backuprepo --cascade=foreground` lost the access-key revocation: the
/// garbage collector deletes every dependent of an owner deleted in the foreground while
/// its finalizer holds it, and the access Secret (which names the key) and the
/// revocation's Job and Secret were owned by the BackupRepo, so they went before the
/// revocation ran and the key stayed valid, without a word. They are owned by nobody
/// now: the key is revoked in either cascade mode, and nothing is left behind. What a
/// BackupRepo gone while no controller ran left is deleted when the controller starts.
#[test]
fn access_keys_are_revoked_when_their_backup_repo_is_deleted_in_the_foreground() {
    ensure_s3_bucket();
    let mut c = Cluster::start();
    install(&mut c);
    let prefix = c
        .dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_lowercase();
    let root = format!("{S3_BUCKET}/{prefix}");
    let endpoint = s3_endpoint();
    let provider = s3_storage_provider("s3-cascade");
    let modes = [("foreground", "cascade-fg"), ("background", "cascade-bg")];
    let mut yaml = format!(
        r#"
{provider}---
apiVersion: v1
kind: Secret
metadata: {{name: s3-creds, namespace: dprepo-system}}
stringData: {{accessKeyId: test, secretAccessKey: test}}
"#
    );
    for (_, name) in &modes {
        yaml.push_str(&format!(
            r#"---
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: BackupRepo
metadata: {{name: {name}}}
spec:
  storageProviderRef: s3-cascade
  accessMethod: Tool
  pvReclaimPolicy: Retain
  config: {{bucket: "{root}/{name}", endpoint: "{endpoint}"}}
  credential: {{name: s3-creds, namespace: dprepo-system}}
"#
        ));
    }
    c.apply(&yaml);
    for (mode, name) in &modes {
        let repo_root = format!("{root}/{name}");
        c.wait_for(
            &format!("BackupRepo {name} Ready"),
            Duration::from_secs(180),
            || {
                c.get(&["backuprepo", name])
                    .filter(|r| r.pointer("/status/phase") == Some(&Value::from("Ready")))
            },
        );
        let uid = c.get(&["backuprepo", name]).unwrap()["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_string();
        let access_secret = format!("dprepo-access-{name}");
        let access = c.wait_for(
            &format!("the access key of {name}"),
            Duration::from_secs(120),
            || secret_field(&c, "dprepo-system", &access_secret, "accessKey"),
        );
        let id = access
            .strip_prefix("dprepo-ak1-")
            .and_then(|rest| rest.split_once('-'))
            .map(|(id, _)| id.to_string())
            .expect("access key text");
        let (_, key) = generated_key(&c, name);
        let key = key.trim().to_string();
        assert!(key_ids(&endpoint, &repo_root, &key, c.dir.path()).contains(&id));
        assert!(access_key_opens(
            &endpoint,
            &repo_root,
            &access,
            c.dir.path()
        ));
        let owners = c
            .get(&["secret", "-n", "dprepo-system", &access_secret])
            .unwrap()["metadata"]["ownerReferences"]
            .clone();
        assert!(
            owners.as_array().is_none_or(Vec::is_empty),
            "the access Secret is owned by nobody: {owners}"
        );

        c.kubectl_ok(&[
            "delete",
            "backuprepo",
            name,
            &format!("--cascade={mode}"),
            "--wait=false",
        ]);
        c.wait_for(&format!("{name} gone"), Duration::from_secs(180), || {
            c.get(&["backuprepo", name]).is_none().then_some(())
        });
        let ids = key_ids(&endpoint, &repo_root, &key, c.dir.path());
        assert!(!ids.contains(&id), "{mode}: {id} still in {ids:?}");
        assert_eq!(ids.len(), 1, "the repository key stays: {ids:?}");
        assert!(!access_key_opens(
            &endpoint,
            &repo_root,
            &access,
            c.dir.path()
        ));
        let events = c.events_of(name);
        assert!(
            events
                .iter()
                .any(|e| e.starts_with("AccessKeyRevoked: ") && e.contains(id.as_str())),
            "{mode}: {events:?}"
        );
        // Nothing of the repository is left but the key Secret (kept by design).
        let by_name = format!("dataprotection.kubeblocks.io/backup-repo-name={name}");
        let jobs = c.get(&["jobs", "-A", "-l", &by_name]).expect("job list");
        assert_eq!(
            jobs["items"].as_array().map(Vec::len),
            Some(0),
            "{mode}: {jobs}"
        );
        let by_uid = format!("dprepo.io/backup-repo-uid={uid}");
        let secrets = c
            .get(&["secrets", "-A", "-l", &by_uid])
            .expect("secret list");
        assert_eq!(
            secrets["items"].as_array().map(Vec::len),
            Some(0),
            "{mode}: {secrets}"
        );
        let all = c.get(&["secrets", "-n", "dprepo-system"]).expect("secrets");
        let left: Vec<&str> = all["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s.pointer("/metadata/name").and_then(Value::as_str))
            .filter(|n| n.contains(*name))
            .collect();
        assert_eq!(left, [format!("dprepo-key-{name}")], "{mode}");
    }

    // A BackupRepo removed while no controller ran (its finalizer removed by hand) left
    // a revocation Job and Secret: the controller deletes them when it starts.
    c.stop_controller();
    let gone_uid = "00000000-0000-4000-8000-00000000dead";
    c.apply(&format!(
        r#"
apiVersion: v1
kind: Secret
metadata:
  name: revoke-key-00000000-removed
  namespace: dprepo-system
  labels: {{dataprotection.kubeblocks.io/backup-repo-name: removed, dprepo.io/backup-repo-uid: "{gone_uid}"}}
stringData: {{dprepo-password: the-repository-key}}
---
apiVersion: batch/v1
kind: Job
metadata:
  name: revoke-key-00000000-removed
  namespace: dprepo-system
  labels: {{dataprotection.kubeblocks.io/backup-repo-name: removed, dprepo.io/backup-repo-uid: "{gone_uid}"}}
spec:
  suspend: true
  template:
    spec:
      restartPolicy: Never
      containers: [{{name: c, image: busybox, command: ["true"]}}]
"#
    ));
    c.start_controller();
    c.wait_for(
        "what the removed BackupRepo left deleted",
        Duration::from_secs(60),
        || {
            let by_uid = format!("dprepo.io/backup-repo-uid={gone_uid}");
            let jobs = c.get(&["jobs", "-n", "dprepo-system", "-l", &by_uid])?;
            let secrets = c.get(&["secrets", "-n", "dprepo-system", "-l", &by_uid])?;
            (jobs["items"].as_array()?.is_empty() && secrets["items"].as_array()?.is_empty())
                .then_some(())
        },
    );
}
