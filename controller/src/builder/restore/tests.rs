use super::*;
use crate::api::backuprepo::AccessMethod;
use crate::builder::datasafed::RepoMount;
use serde_json::{json, Value};

fn config() -> ControllerConfig {
    ControllerConfig::from_source(&BTreeMap::from([
        ("CM_NAMESPACE".to_string(), "dprepo-system".to_string()),
        (
            "DATASAFED_IMAGE".to_string(),
            "dprepo/dprepo:test".to_string(),
        ),
        (
            "KUBEBLOCKS_TOOLS_IMAGE".to_string(),
            "dprepo/dprepo:test".to_string(),
        ),
    ]))
    .unwrap()
}

fn restore(extra: Value) -> Restore {
    let mut spec = json!({
        "backup": {"name": "wal", "namespace": "demo"},
        "restoreTime": "2026-01-01T10:40:00Z",
        "parameters": [{"name": "MODE", "value": "fast"}],
        "env": [{"name": "DATA_DIR", "value": "/override"}],
        "prepareDataConfig": {
            "volumeClaimRestorePolicy": "Parallel",
            "volumeClaims": [{
                "metadata": {"name": "data"},
                "volumeSource": "data",
                "volumeClaimSpec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
            }],
            "volumeClaimsTemplate": {
                "replicas": 2,
                "startingIndex": 3,
                "templates": [{
                    "metadata": {"name": "log-pg", "labels": {"app.kubernetes.io/instance": "pg"}},
                    "mountPath": "/log",
                    "volumeClaimSpec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
                }]
            },
            "schedulingSpec": {"nodeSelector": {"zone": "a"}, "tolerations": [{"key": "k", "operator": "Exists"}]}
        }
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(json!({
        "apiVersion": "dataprotection.kubeblocks.io/v1alpha1",
        "kind": "Restore",
        "metadata": {"name": "r", "namespace": "demo", "uid": "0123456789abcdef"},
        "spec": spec
    }))
    .unwrap()
}

fn backup(name: &str, start: &str, end: &str) -> Backup {
    serde_json::from_value(json!({
        "apiVersion": "dataprotection.kubeblocks.io/v1alpha1",
        "kind": "Backup",
        "metadata": {"name": name, "namespace": "demo"},
        "spec": {"backupPolicyName": "p", "backupMethod": "m", "deletionPolicy": "Delete"},
        "status": {
            "phase": "Completed",
            "path": format!("/prefix/demo/{name}"),
            "backupRepoName": "local",
            "timeRange": {"timeZone": "+08:00", "start": start, "end": end},
            "extras": [{"lsn": "0/3000028"}],
            "backupMethod": {
                "name": "m",
                "actionSetName": "as",
                "env": [{"name": "FROM_METHOD", "value": "m"}, {"name": "IMAGE_TAG", "value": "16.4"}],
                "targetVolumes": {"volumeMounts": [{"name": "data", "mountPath": "/data"}]}
            },
            "target": {"name": "pg", "podSelector": {"matchLabels": {"app": "pg"}, "strategy": "Any"}, "selectedTargetPods": ["pg-0"]}
        }
    }))
    .unwrap()
}

fn action_set() -> ActionSet {
    serde_json::from_value(json!({
        "apiVersion": "dataprotection.kubeblocks.io/v1alpha1",
        "kind": "ActionSet",
        "metadata": {"name": "as"},
        "spec": {
            "backupType": "Continuous",
            "env": [
                {"name": "DATA_DIR", "value": "/data/pgdata"},
                {"name": "DP_TIME_FORMAT", "value": "2006-01-02 15:04:05 MST"},
                {"name": "IMAGE_TAG", "value": "14"}
            ],
            "restore": {"prepareData": {"image": "postgres:$(IMAGE_TAG)", "command": ["bash", "-c", "restore"]}}
        }
    }))
    .unwrap()
}

fn set() -> BackupSet {
    BackupSet {
        backup: backup("wal", "2026-01-01T01:55:00Z", "2026-01-01T03:00:00Z"),
        action_set: action_set(),
        base: Some(backup(
            "full-2",
            "2026-01-01T02:20:00Z",
            "2026-01-01T02:30:00Z",
        )),
        ancestors: Vec::new(),
    }
}

fn names(env: &[EnvVar]) -> Vec<(String, String)> {
    env.iter()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

#[test]
fn restore_env_is_in_kubeblocks_order_with_times_in_the_backup_zone() {
    let r = restore(json!({}));
    let got = names(&restore_env(&r, &set(), "pg", None));
    let want: Vec<(String, String)> = [
        ("DP_BACKUP_NAME", "wal"),
        ("DP_TARGET_RELATIVE_PATH", "pg"),
        ("DP_BACKUP_ROOT_PATH", "/prefix/demo"),
        ("DP_BACKUP_BASE_PATH", "/prefix/demo/wal/pg"),
        ("DP_BASE_BACKUP_NAME", "full-2"),
        ("DP_BACKUP_STOP_TIME", "2026-01-01 11:00:00 +0800"),
        ("DP_BASE_BACKUP_START_TIME", "2026-01-01 10:20:00 +0800"),
        ("DP_BASE_BACKUP_START_TIMESTAMP", "1767234000"),
        ("DP_BASE_BACKUP_STOP_TIME", "2026-01-01 10:30:00 +0800"),
        ("DP_BASE_BACKUP_STOP_TIMESTAMP", "1767234600"),
        ("DP_RESTORE_TIME", "2026-01-01 18:40:00 +0800"),
        ("DP_RESTORE_TIMESTAMP", "1767264000"),
        ("MODE", "fast"),
        // The Restore's env replaces the ActionSet's in place; the method's too.
        ("DATA_DIR", "/override"),
        ("DP_TIME_FORMAT", "2006-01-02 15:04:05 MST"),
        ("IMAGE_TAG", "16.4"),
        ("FROM_METHOD", "m"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, want);
    // Incremental chains add the ancestors after the base; strategy All adds the pod.
    let mut s = set();
    s.ancestors = vec!["inc-1".into(), "inc-2".into()];
    let got = names(&restore_env(&r, &s, "", Some("pg-1")));
    assert_eq!(got[1], ("DP_TARGET_RELATIVE_PATH".into(), "pg-1".into()));
    assert_eq!(
        got[3],
        ("DP_BACKUP_BASE_PATH".into(), "/prefix/demo/wal/pg-1".into())
    );
    assert_eq!(
        got[5],
        (
            "DP_ANCESTOR_INCREMENTAL_BACKUP_NAMES".into(),
            "inc-1,inc-2".into()
        )
    );
}

#[test]
fn job_names_are_cut_as_kubeblocks_cuts_them() {
    let r = restore(json!({}));
    assert_eq!(
        prepare_data_job_name(&r, "wal", 0),
        "restore-preparedata-01234567-wal-0"
    );
    assert_eq!(
        post_ready_job_name(&r, "wal", 1, 2),
        "restore-post-ready-01234567-wal-1-2"
    );
    let long = prepare_data_job_name(&r, &"b".repeat(60), 12);
    assert_eq!(long.len(), 63);
    assert!(long.starts_with("restore-preparedata-01234567-bbbb"));
    assert!(long.ends_with("-bb-12"), "{long}");
    assert_eq!(action_name(Stage::PostReady, 3), "postReady-3");
}

#[test]
fn image_variables_expand_like_the_kubelet() {
    let env = vec![var("A", "1"), var("B", "two")];
    assert_eq!(expand_vars("x:$(A)-$(B)", &env), "x:1-two");
    assert_eq!(expand_vars("$(C) $$(A) $(A", &env), "$(C) $(A) $(A");
    assert_eq!(expand_vars("plain$", &env), "plain$");
}

#[test]
fn claims_come_from_the_list_and_the_templates_by_index() {
    let r = restore(json!({}));
    assert_eq!(prepare_data_job_count(&r), 2);
    let claims = claims_for_index(&r, 1);
    let got: Vec<(Option<String>, bool)> = claims
        .iter()
        .map(|(c, t)| (c.metadata.name.clone(), *t))
        .collect();
    assert_eq!(
        got,
        [
            (Some("data".to_string()), false),
            (Some("log-pg-4".to_string()), true)
        ]
    );
    let b = backup("wal", "2026-01-01T01:55:00Z", "2026-01-01T03:00:00Z");
    let (v, m) = claim_volume(&claims[0].0, false, &b).unwrap();
    assert_eq!(
        (v.name.as_str(), m.mount_path.as_str()),
        ("dp-claim-data", "/data")
    );
    let (v, m) = claim_volume(&claims[1].0, true, &b).unwrap();
    assert_eq!(
        (v.name.as_str(), m.mount_path.as_str()),
        ("dp-claim-tpl-log-pg-4", "/log")
    );
    let mut unknown = claims[0].0.clone();
    unknown.volume_config.volume_source = Some("nope".into());
    assert!(claim_volume(&unknown, false, &b)
        .unwrap_err()
        .contains("volumeSource \"nope\" is not among"));
}

#[test]
fn source_pods_follow_the_strategy_and_policy() {
    let b = backup("wal", "2026-01-01T01:55:00Z", "2026-01-01T03:00:00Z");
    let mut target = status_target(&b, None).unwrap().clone();
    assert_eq!(source_target_pod(&target, None, 0), Ok(None));
    target.target.pod_selector.as_mut().unwrap().strategy = Some(PodSelectionStrategy::All);
    target.selected_target_pods = Some(vec!["pg-0".into(), "pg-1".into()]);
    assert!(source_target_pod(&target, None, 0).is_err());
    let one_to_one: RequiredPolicyForAllPodSelection =
        serde_json::from_value(json!({"dataRestorePolicy": "OneToOne"})).unwrap();
    assert_eq!(
        source_target_pod(&target, Some(&one_to_one), 1),
        Ok(Some("pg-1".into()))
    );
    assert_eq!(source_target_pod(&target, Some(&one_to_one), 2), Ok(None));
    let many: RequiredPolicyForAllPodSelection = serde_json::from_value(
        json!({"dataRestorePolicy": "OneToMany", "sourceOfOneToMany": {"targetPodName": "pg-0"}}),
    )
    .unwrap();
    assert_eq!(
        source_target_pod(&target, Some(&many), 5),
        Ok(Some("pg-0".into()))
    );
}

#[test]
fn post_ready_env_takes_the_credential_secret_and_the_pod_address() {
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": "pg-0", "namespace": "demo"},
        "spec": {"hostname": "pg-0", "subdomain": "pg-headless", "containers": [{
            "name": "pg", "env": [{"name": "PGUSER", "value": "postgres"}],
            "ports": [{"containerPort": 5432}]
        }]}
    }))
    .unwrap();
    let got = serde_json::to_value(target_pod_env(&pod, None, "cluster.local")).unwrap();
    assert_eq!(
        got,
        json!([
            {"name": "PGUSER", "value": "postgres"},
            {"name": "DP_DB_HOST", "value": "pg-0.pg-headless.demo.svc.cluster.local"},
            {"name": "DP_DB_PORT", "value": "5432"}
        ])
    );
    let cred: ConnectionCredential =
        serde_json::from_value(json!({"secretName": "pg-conn", "hostKey": "host"})).unwrap();
    let got = serde_json::to_value(target_pod_env(&pod, Some(&cred), "cluster.local")).unwrap();
    assert_eq!(
        got,
        json!([
            {"name": "PGUSER", "value": "postgres"},
            {"name": "DP_DB_USER", "valueFrom": {"secretKeyRef": {"name": "pg-conn", "key": "username"}}},
            {"name": "DP_DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "pg-conn", "key": "password"}}},
            {"name": "DP_DB_PORT", "value": "5432"},
            {"name": "DP_DB_HOST", "valueFrom": {"secretKeyRef": {"name": "pg-conn", "key": "host"}}}
        ])
    );
}

/// Compares `got` with the golden file `name`; `UPDATE_GOLDEN=1` rewrites it.
fn golden(name: &str, got: &Value) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/builder/restore/golden")
        .join(name);
    let text = serde_json::to_string_pretty(got).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(text, want, "{name} differs from the golden file");
}

fn repo() -> RepoMount {
    RepoMount {
        access: AccessMethod::Mount,
        pvc_name: "pvc-local-abcdef".into(),
        secret_name: "tool-config-local-abcdef".into(),
    }
}

#[test]
fn prepare_data_job_matches_the_golden_file() {
    let r = restore(json!({"backoffLimit": 3, "containerResources": {"limits": {"cpu": "1"}}}));
    let s = set();
    let mut claims = Vec::new();
    let mut labels = BTreeMap::new();
    for (claim, tpl) in claims_for_index(&r, 0) {
        let (v, m) = claim_volume(&claim, tpl, &s.backup).unwrap();
        if tpl {
            labels.extend(claim.metadata.labels.clone().unwrap_or_default());
        }
        claims.push((v, m, claim.metadata.name.clone().unwrap()));
    }
    let inputs = RestoreJobInputs {
        name: prepare_data_job_name(&r, s.name(), 0),
        namespace: "demo".into(),
        stage: Stage::PrepareData,
        service_account: "kubeblocks-dataprotection-worker".into(),
        repo: Some(repo()),
        image: s
            .action_set
            .spec
            .restore
            .as_ref()
            .unwrap()
            .prepare_data
            .as_ref()
            .unwrap()
            .image
            .clone(),
        command: vec!["bash".into(), "-c".into(), "restore".into()],
        args: None,
        env: restore_env(&r, &s, "pg", None),
        claims,
        volumes: Vec::new(),
        labels,
        node_name: None,
        tolerations: None,
    };
    let job = restore_job(&r, &s, &inputs, &config());
    let got = serde_json::to_value(&job).unwrap();
    // The image took the method's IMAGE_TAG (the merged env), as KubeBlocks expands it.
    assert_eq!(
        got.pointer("/spec/template/spec/containers/0/image"),
        Some(&json!("postgres:16.4"))
    );
    golden("prepare_data_job.json", &got);
}

#[test]
fn post_ready_exec_job_matches_the_golden_file() {
    let r = restore(json!({}));
    let s = set();
    let inputs = RestoreJobInputs {
        name: post_ready_job_name(&r, s.name(), 0, 0),
        namespace: "dprepo-system".into(),
        stage: Stage::PostReady,
        service_account: "kubeblocks-dataprotection-exec-worker".into(),
        repo: None,
        image: "dprepo/dprepo:test".into(),
        // What reconcile/restore/exec.rs builds: our own exec client, not kubectl.
        command: crate::builder::exec::EXEC_COMMAND
            .map(String::from)
            .to_vec(),
        args: Some(
            [
                "--namespace",
                "demo",
                "--pod",
                "pg-0",
                "--container",
                "pg",
                "--forward-env",
                "DP_",
                "--",
                "psql",
                "-c",
                "select 1",
            ]
            .map(String::from)
            .to_vec(),
        ),
        env: restore_env(&r, &s, "pg", None),
        claims: Vec::new(),
        volumes: Vec::new(),
        labels: BTreeMap::from([(label::RESTORE_NAMESPACE.to_string(), "demo".to_string())]),
        node_name: Some("node-1".into()),
        tolerations: None,
    };
    let got = serde_json::to_value(restore_job(&r, &s, &inputs, &config())).unwrap();
    // Another namespace than the Restore's: no owner reference (Kubernetes forbids it).
    assert!(got.pointer("/metadata/ownerReferences").is_none());
    golden("post_ready_exec_job.json", &got);
}

#[test]
fn the_manager_fails_on_an_empty_claim_only() {
    // Run the script for real: one claim with a file, one empty, one with lost+found only.
    let dir = tempfile_dir();
    let signal = dir.join("signal");
    std::fs::write(&signal, "true").unwrap();
    let full = dir.join("full");
    let empty = dir.join("empty");
    let lost = dir.join("lost");
    for d in [&full, &empty, &lost] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::create_dir_all(lost.join("lost+found")).unwrap();
    std::fs::write(full.join("PG_VERSION"), "16").unwrap();
    let run = |check: &[(String, String)]| {
        let script = manager_script(check).replace(
            &format!("{DOWNWARD_MOUNT_PATH}/{STOP_FILE}"),
            signal.to_str().unwrap(),
        );
        // Outside a container /dev/termination-log is not ours to write.
        let script = script.replace("/dev/termination-log", dir.join("term").to_str().unwrap());
        std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap()
    };
    let p = |d: &std::path::Path| d.to_str().unwrap().to_string();
    let ok = run(&[(p(&full), "data".into())]);
    assert!(ok.status.success(), "{ok:?}");
    let bad = run(&[
        (p(&full), "data".into()),
        (p(&empty), "log".into()),
        (p(&lost), "wal".into()),
    ]);
    assert!(!bad.status.success());
    let msg = std::fs::read_to_string(dir.join("term")).unwrap();
    assert_eq!(
        msg.trim(),
        "restored volume is empty: 'log' 'wal': the restore container exited 0 but wrote nothing into it"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "dprepo-manager-test-{}-{}",
        std::process::id(),
        crate::builder::names::random_suffix().unwrap()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}
