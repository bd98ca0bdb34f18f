use super::*;
use crate::api::backuprepo::AccessMethod;
use serde_json::{json, Value};

fn config() -> ControllerConfig {
    ControllerConfig::from_source(&BTreeMap::from([
        (
            "DATASAFED_IMAGE".to_string(),
            "dprepo/dprepo:ds".to_string(),
        ),
        (
            "KUBEBLOCKS_TOOLS_IMAGE".to_string(),
            "dprepo/dprepo:tools".to_string(),
        ),
        ("CM_NAMESPACE".to_string(), "dprepo-system".to_string()),
        (
            "CM_NODE_SELECTOR".to_string(),
            r#"{"disk":"ssd"}"#.to_string(),
        ),
    ]))
    .unwrap()
}

fn from<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

fn backup() -> Backup {
    from(json!({
        "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "Backup",
        "metadata": {"name": "pg-b1", "namespace": "db", "uid": "5c0ffee1-aaaa-bbbb-cccc-000000000000",
            "labels": {"app.kubernetes.io/instance": "pg", "apps.kubeblocks.io/component-name": "postgresql",
                       "dataprotection.kubeblocks.io/cluster-uid": "c1d2"}},
        "spec": {"backupPolicyName": "pg-policy", "backupMethod": "basebackup", "deletionPolicy": "Delete",
                 "retentionPeriod": "7d", "parameters": [{"name": "COMPRESS", "value": "zstd"}]}
    }))
}

fn policy() -> BackupPolicy {
    from(json!({
        "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "BackupPolicy",
        "metadata": {"name": "pg-policy", "namespace": "db"},
        "spec": {"backupRepoName": "local", "pathPrefix": "/pg/", "backoffLimit": 1,
            "target": {"name": "primary",
                "podSelector": {"matchLabels": {"app": "pg"}, "strategy": "Any"},
                "connectionCredential": {"secretName": "pg-account", "usernameKey": "username", "passwordKey": "password"}},
            "backupMethods": [{"name": "basebackup", "actionSetName": "pg-basebackup",
                "env": [{"name": "IMAGE_TAG", "value": "16"}, {"name": "DP_TTL", "value": "override"}],
                "targetVolumes": {"volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql"}]}}]}
    }))
}

fn action_set(on_node: bool) -> ActionSet {
    from(json!({
        "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "ActionSet",
        "metadata": {"name": "pg-basebackup"},
        "spec": {"backupType": "Full",
            "env": [{"name": "DATA_DIR", "value": "/var/lib/postgresql/data"}],
            "backup": {
                "preBackup": [{"job": {"image": "postgres:$(IMAGE_TAG)", "command": ["sh", "-c", "echo pre"]}}],
                "backupData": {"image": "postgres:$(IMAGE_TAG)", "runOnTargetPodNode": on_node,
                    "command": ["bash", "-c", "backup.sh"], "syncProgress": {"enabled": true, "intervalSeconds": 2}}}}
    }))
}

fn pod() -> Pod {
    from(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "pg-0", "namespace": "db", "labels": {"app": "pg", "kubeblocks.io/role": "primary"}},
        "spec": {"nodeName": "node-a",
            "tolerations": [{"key": "db", "operator": "Exists"}],
            "containers": [{"name": "postgresql", "image": "postgres:16",
                "env": [{"name": "PGUSER", "value": "postgres"}],
                "envFrom": [{"configMapRef": {"name": "pg-env"}}],
                "ports": [{"name": "tcp-postgresql", "containerPort": 5432}]}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-pg-0"}},
                        {"name": "scratch", "emptyDir": {}}]},
        "status": {"podIP": "10.0.0.7"}
    }))
}

struct Fixture {
    backup: Backup,
    policy: BackupPolicy,
    action_set: ActionSet,
    pod: Pod,
}

impl Fixture {
    fn new(on_node: bool) -> Self {
        Fixture {
            backup: backup(),
            policy: policy(),
            action_set: action_set(on_node),
            pod: pod(),
        }
    }

    fn inputs(&self) -> BackupJobInputs<'_> {
        BackupJobInputs {
            backup: &self.backup,
            policy: &self.policy,
            method: &self.policy.spec.backup_methods[0],
            action_set: &self.action_set,
            target: self.policy.spec.target.as_ref().unwrap(),
            target_pod: &self.pod,
            repo_path_prefix: "team",
            repo: RepoMount {
                access: AccessMethod::Mount,
                pvc_name: "pvc-local-x2b4zq".into(),
                secret_name: "tool-config-local-bcdfgh".into(),
            },
            service_account: "kubeblocks-dataprotection-worker",
            chain: None,
        }
    }
}

#[test]
fn paths_join_like_go_filepath() {
    assert_eq!(backup_root_path("", "db", ""), "/db");
    assert_eq!(backup_root_path("/team/", "db", "/pg/"), "/team/db/pg");
    assert_eq!(backup_path("team", "db", "pg", "b1"), "/team/db/pg/b1");
    let mut target = policy().spec.target.unwrap();
    assert_eq!(target_relative_path(&target, "pg-0"), "primary");
    target.pod_selector.as_mut().unwrap().strategy = Some(PodSelectionStrategy::All);
    assert_eq!(target_relative_path(&target, "pg-0"), "primary/pg-0");
    target.name = None;
    assert_eq!(target_relative_path(&target, "pg-0"), "pg-0");
    target.pod_selector = None;
    assert_eq!(target_relative_path(&target, "pg-0"), "");
    assert_eq!(
        Fixture::new(false).inputs().base_path(),
        "/team/db/pg/pg-b1/primary"
    );
}

#[test]
fn names_are_cut_as_kubeblocks_cuts_them() {
    let target = policy().spec.target.unwrap();
    assert_eq!(backup_data_action_name(&target, 0), "dp-backup-primary-0");
    assert_eq!(
        pre_backup_action_name(&target, 1, 0),
        "dp-prebackup-primary-1-0"
    );
    assert_eq!(
        post_backup_action_name(&BackupTarget::default(), 0, 2),
        "dp-postbackup-0-2"
    );
    assert_eq!(
        job_name("dp-backup-0", "b1", "5c0ffee1-aaaa"),
        "dp-backup-0-b1-5c0ffee1"
    );
    let long = job_name("dp-backup-0", &"b".repeat(60), "5c0ffee1");
    assert_eq!(long.len(), 63);
    // 63 bytes ending in '-': the dash goes.
    let name = job_name("dp-backup-0", &"b".repeat(50), "5c0ffee1");
    assert!(!name.ends_with('-') && name.len() <= 63, "{name}");
    assert_eq!(delete_job_name("b1", "5c0ffee1-aaaa"), "5c0ffee1-delete-b1");
    assert_eq!(
        pre_delete_job_name("b1", "5c0ffee1-aaaa"),
        "5c0ffee1-predelete-b1"
    );
}

#[test]
fn variables_expand_as_kubernetes_expands_them() {
    let vars = BTreeMap::from([("A".to_string(), "1".to_string())]);
    assert_eq!(expand("img:$(A)", &vars), "img:1");
    assert_eq!(expand("$(B)-$$(A)-$(A", &vars), "$(B)-$(A)-$(A");
    assert_eq!(expand("plain $x", &vars), "plain $x");
}

#[test]
fn method_env_replaces_in_place_and_appends() {
    let e = |n: &str, v: &str| env(n, v);
    let merged = merge_env(vec![e("A", "1"), e("B", "2")], &[e("B", "x"), e("C", "3")]);
    let names: Vec<(String, String)> = merged
        .into_iter()
        .map(|v| (v.name, v.value.unwrap()))
        .collect();
    assert_eq!(
        names,
        [("A", "1"), ("B", "x"), ("C", "3")].map(|(a, b)| (a.to_string(), b.to_string()))
    );
}

#[test]
fn the_environment_is_in_kubeblocks_order() {
    let f = Fixture::new(false);
    let env = backup_env(&f.inputs()).unwrap();
    let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "PGUSER",
            "DP_BACKUP_NAME",
            "DP_TARGET_POD_NAME",
            "DP_TARGET_POD_ROLE",
            "DP_BACKUP_BASE_PATH",
            "DP_BACKUP_INFO_FILE",
            "DP_TTL",
            "DP_DB_HOST",
            "DP_DB_PORT",
            "DP_DB_PASSWORD",
            "DP_DB_USER",
            "DATA_DIR",
            "COMPRESS",
            "KB_CLUSTER_UID",
            "KB_CLUSTER_NAME",
            "KB_COMP_NAME",
            "KB_NAMESPACE",
            "IMAGE_TAG",
        ]
    );
    let value = |n: &str| env.iter().find(|e| e.name == n).unwrap().value.clone();
    // The method's DP_TTL replaced KubeBlocks' in place.
    assert_eq!(value("DP_TTL").as_deref(), Some("override"));
    assert_eq!(value("DP_DB_HOST").as_deref(), Some("10.0.0.7"));
    assert_eq!(value("DP_DB_PORT").as_deref(), Some("5432"));
    assert_eq!(value("DP_TARGET_POD_ROLE").as_deref(), Some("primary"));
    // Incrementals get the chain, relative and root paths at the end.
    let mut inputs = f.inputs();
    inputs.chain = Some(Chain {
        parent: "pg-b0".into(),
        base: "pg-full".into(),
    });
    let env = backup_env(&inputs).unwrap();
    let tail: Vec<(String, String)> = env[env.len() - 5..]
        .iter()
        .map(|e| (e.name.clone(), e.value.clone().unwrap()))
        .collect();
    assert_eq!(
        tail,
        [
            ("DP_PARENT_BACKUP_NAME", "pg-b0"),
            ("DP_BASE_BACKUP_NAME", "pg-full"),
            ("DP_TARGET_RELATIVE_PATH", "primary"),
            ("DP_BACKUP_ROOT_PATH", "/team/db/pg"),
            ("IMAGE_TAG", "16"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
}

#[test]
fn a_container_port_the_pod_lacks_is_an_error_naming_it() {
    let mut f = Fixture::new(false);
    f.policy.spec.target.as_mut().unwrap().container_port =
        Some(crate::api::backuppolicy::ContainerPort {
            container_name: "postgresql".into(),
            port_name: "metrics".into(),
        });
    let err = backup_env(&f.inputs()).unwrap_err();
    assert!(err.0.contains("\"metrics\""), "{err}");
}

/// The whole backupData Job, on the target's node: golden JSON in
/// `testdata/backup_data_job.json` (regenerate with `UPDATE_GOLDEN=1` and review).
#[test]
fn backup_data_job_golden() {
    let f = Fixture::new(true);
    let job = backup_data_job(&f.inputs(), 0, &config()).unwrap();
    golden("backup_data_job.json", &serde_json::to_value(&job).unwrap());
    let spec = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(spec.containers[0].image.as_deref(), Some("postgres:16"));
    assert_eq!(spec.containers[1].name, "manager");
    assert_eq!(
        spec.node_selector.as_ref().unwrap()["kubernetes.io/hostname"],
        "node-a"
    );
}

/// A preBackup step off the target's node gets the controller's scheduling and no
/// manager.
#[test]
fn pre_backup_job_golden() {
    let f = Fixture::new(false);
    let step = f
        .action_set
        .spec
        .backup
        .as_ref()
        .unwrap()
        .pre_backup
        .as_ref()
        .unwrap()[0]
        .job
        .clone()
        .unwrap();
    let action = pre_backup_action_name(f.inputs().target, 0, 0);
    let job = step_job(&f.inputs(), &action, &step, &config()).unwrap();
    golden("pre_backup_job.json", &serde_json::to_value(&job).unwrap());
}

#[test]
fn delete_job_golden() {
    let repo = RepoMount {
        access: AccessMethod::Tool,
        pvc_name: String::new(),
        secret_name: "tool-config-s3-bcdfgh".into(),
    };
    let job = delete_job(
        &backup(),
        "/team/db/pg/pg-b1",
        &repo,
        "kubeblocks-dataprotection-worker",
        &config(),
    );
    golden("delete_job.json", &serde_json::to_value(&job).unwrap());
}

fn golden(name: &str, actual: &Value) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/builder/backup_job/testdata")
        .join(name);
    let text = serde_json::to_string_pretty(actual).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(text, expected, "{} differs", path.display());
}

/// A Continuous backupData runs as a one-replica StatefulSet owned by the Backup: the
/// Job action's pod with `restartPolicy: Always`, the manager in continuous mode, and
/// the archive interval and TTL on the archiver only.
#[test]
fn continuous_backup_data_is_a_statefulset() {
    use super::statefulset::*;
    let mut f = Fixture::new(true);
    f.action_set.spec.backup_type = crate::api::actionset::BackupType::Continuous;
    let env = continuous_env(Some("*/5 * * * *"), 3600);
    let sts = backup_statefulset(&f.inputs(), &env, &config()).unwrap();
    let v = serde_json::to_value(&sts).unwrap();
    assert_eq!(v["metadata"]["name"], "dp-backup-primary-pg-b1");
    assert_eq!(v["metadata"]["namespace"], "db");
    assert_eq!(v["metadata"]["finalizers"][0], FINALIZER);
    assert_eq!(v["metadata"]["ownerReferences"][0]["kind"], "Backup");
    assert_eq!(v["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(v["spec"]["replicas"], 1);
    let labels = &v["metadata"]["labels"];
    assert_eq!(labels["dataprotection.kubeblocks.io/backup-name"], "pg-b1");
    assert!(labels.get("apps.kubeblocks.io/component-name").is_none());
    assert_eq!(&v["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(&v["spec"]["template"]["metadata"]["labels"], labels);
    let pod = &v["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Always");
    assert_eq!(pod["nodeSelector"]["kubernetes.io/hostname"], "node-a");
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers[0]["name"], BACKUP_DATA_CONTAINER);
    assert_eq!(containers[0]["image"], "postgres:16");
    assert_eq!(containers[1]["name"], MANAGER_CONTAINER);
    assert_eq!(
        containers[1]["command"],
        json!(["/dprepo-controller", "backup-manager", "--continuous"])
    );
    let names = |c: &Value| -> Vec<String> {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect()
    };
    let archiver = names(&containers[0]);
    let n = archiver.len();
    assert_eq!(archiver[n - 2..], ["DP_ARCHIVE_INTERVAL", "DP_TTL_SECONDS"]);
    assert_eq!(containers[0]["env"][n - 2]["value"], "300s");
    let manager = names(&containers[1]);
    assert!(!manager.contains(&"DP_ARCHIVE_INTERVAL".to_string()));
    assert!(manager.contains(&"DP_CHECK_INTERVAL".to_string()));
    // The digest names the built spec: same inputs, same digest; other env, another.
    let again = backup_statefulset(&f.inputs(), &env, &config()).unwrap();
    let hash = |s: &k8s_openapi::api::apps::v1::StatefulSet| {
        s.metadata.annotations.as_ref().unwrap()[SPEC_HASH_ANNOTATION].clone()
    };
    assert_eq!(hash(&sts), hash(&again));
    let other = backup_statefulset(&f.inputs(), &continuous_env(None, 0), &config()).unwrap();
    assert_ne!(hash(&sts), hash(&other));
}
