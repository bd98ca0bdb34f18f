//! End-to-end: the events the real `dprepo-controller` publishes, read with `kubectl get
//! events --field-selector` as a user would, against kube-sim.
//!
//! kube-runtime's Recorder keys an event series by (reason, action, object, related
//! object) and counts a later event of a series up, keeping the FIRST note. Events whose
//! note varies under one reason on one object used to collapse into the first note with a
//! count: a user fixing one problem and hitting another saw only the first. Each test
//! here makes two different failures on one object (A, then B, then A again) and checks
//! that both notes are shown, and that the repeated A counts up in A's one event.
//!
//! Build first: `cargo build --workspace --bins`. `kubectl` must be on PATH.

mod common;

use common::cluster::*;
use serde_json::Value;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);

/// The core/v1 events about objects named `name`, with `reason`, as (note, count):
/// `kubectl get events -A --field-selector involvedObject.name=NAME,reason=REASON`.
fn events(c: &Cluster, name: &str, reason: &str) -> Vec<(String, i64)> {
    let selector = format!("involvedObject.name={name},reason={reason}");
    let list = c
        .get(&["events", "-A", "--field-selector", &selector])
        .expect("kubectl get events");
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let count = e
                .pointer("/series/count")
                .or_else(|| e.get("count"))
                .and_then(Value::as_i64)
                .unwrap_or(1);
            (e["message"].as_str().unwrap_or("").to_string(), count)
        })
        .collect()
}

/// Waits until the events of `name`/`reason` have a note containing `text` counted at
/// least `count` times; returns all of them.
fn wait_note(c: &Cluster, name: &str, reason: &str, text: &str, count: i64) -> Vec<(String, i64)> {
    let mut seen = Vec::new();
    c.wait_for(
        &format!("a {reason} event of {name} saying {text:?} (count >= {count})"),
        TIMEOUT,
        || {
            seen = events(c, name, reason);
            seen.iter()
                .any(|(n, k)| n.contains(text) && *k >= count)
                .then_some(())
        },
    );
    seen
}

/// Of `all`, the events whose note contains `text`.
fn with_note<'a>(all: &'a [(String, i64)], text: &str) -> Vec<&'a (String, i64)> {
    all.iter().filter(|(n, _)| n.contains(text)).collect()
}

fn patch(c: &Cluster, args: &[&str], json_patch: &str) {
    let mut all = vec!["patch"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--type", "json", "-p", json_patch]);
    c.kubectl_ok(&all);
}

/// InvalidSpec, Unavailable and HandleBackupScheduleFailed: a second failure of one
/// object is an event of its own; the first failing again counts up in its one event.
#[test]
fn different_failures_of_one_object_each_keep_their_event_and_repeats_count_up() {
    let mut c = Cluster::start();
    install(&mut c);
    c.apply(
        r#"
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: StorageProvider
metadata: {name: broken}
spec:
  datasafedConfigTemplate: |
    root = {{ .Parameters.bucket
---
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: ActionSet
metadata: {name: full-as}
spec:
  backupType: Full
  backup:
    backupData: {image: busybox, command: ["sh", "-c", "true"]}
---
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: BackupPolicy
metadata: {name: pol, namespace: demo}
spec:
  backupRepoName: no-such-repo
  target:
    podSelector:
      matchLabels: {app.kubernetes.io/instance: mydb}
  backupMethods:
  - {name: full, actionSetName: full-as}
---
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: BackupSchedule
metadata: {name: sched, namespace: demo}
spec:
  backupPolicyName: pol
  schedules:
  - {enabled: true, backupMethod: nope, cronExpression: "0 * * * *"}
"#,
    );

    // InvalidSpec (a StorageProvider): template A broken, then B, then A again.
    let a = "spec.datasafedConfigTemplate";
    let b = "spec.storageClassTemplate";
    wait_note(&c, "broken", "InvalidSpec", a, 1);
    patch(
        &c,
        &["storageprovider", "broken"],
        r#"[{"op":"remove","path":"/spec/datasafedConfigTemplate"},
            {"op":"add","path":"/spec/storageClassTemplate","value":"provisioner: {{ if"}]"#,
    );
    wait_note(&c, "broken", "InvalidSpec", b, 1);
    patch(
        &c,
        &["storageprovider", "broken"],
        r#"[{"op":"remove","path":"/spec/storageClassTemplate"},
            {"op":"add","path":"/spec/datasafedConfigTemplate","value":"root = {{ .Parameters.bucket\n"}]"#,
    );
    let all = wait_note(&c, "broken", "InvalidSpec", a, 2);
    assert_eq!(with_note(&all, a).len(), 1, "one event for {a}: {all:?}");
    assert_eq!(with_note(&all, b).len(), 1, "one event for {b}: {all:?}");

    // Unavailable (a BackupPolicy): the repository is missing (A), then the ActionSet
    // too (B), then only the repository again (A).
    let repo_missing = "spec.backupRepoName: BackupRepo no-such-repo not found";
    let set_missing = "ActionSet gone-as not found";
    wait_note(&c, "pol", "Unavailable", repo_missing, 1);
    let method = "/spec/backupMethods/0/actionSetName";
    patch(
        &c,
        &["bp", "pol", "-n", "demo"],
        &format!(r#"[{{"op":"replace","path":"{method}","value":"gone-as"}}]"#),
    );
    wait_note(&c, "pol", "Unavailable", set_missing, 1);
    patch(
        &c,
        &["bp", "pol", "-n", "demo"],
        &format!(r#"[{{"op":"replace","path":"{method}","value":"full-as"}}]"#),
    );
    let all = wait_note(&c, "pol", "Unavailable", repo_missing, 2);
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(with_note(&all, set_missing).len(), 1, "{all:?}");

    // HandleBackupScheduleFailed: an unknown method (A), then a missing policy (B), then
    // the unknown method again (A).
    let no_method = "backup method nope is not in backup policy demo/pol";
    let no_policy = "BackupPolicy demo/missing not found";
    wait_note(&c, "sched", "HandleBackupScheduleFailed", no_method, 1);
    let policy = "/spec/backupPolicyName";
    patch(
        &c,
        &["bs", "sched", "-n", "demo"],
        &format!(r#"[{{"op":"replace","path":"{policy}","value":"missing"}}]"#),
    );
    wait_note(&c, "sched", "HandleBackupScheduleFailed", no_policy, 1);
    patch(
        &c,
        &["bs", "sched", "-n", "demo"],
        &format!(r#"[{{"op":"replace","path":"{policy}","value":"pol"}}]"#),
    );
    let all = wait_note(&c, "sched", "HandleBackupScheduleFailed", no_method, 2);
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(with_note(&all, no_policy).len(), 1, "{all:?}");

    // The same through the events.k8s.io API, which the controller writes: one series
    // per failure, the repeated one with series.count 2.
    let list = c
        .get(&[
            "events.v1.events.k8s.io",
            "-n",
            "demo",
            "--field-selector",
            "regarding.name=sched,reason=HandleBackupScheduleFailed",
        ])
        .expect("events.k8s.io list");
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{items:?}");
    let repeated = items
        .iter()
        .find(|e| e["note"].as_str().is_some_and(|n| n.contains(no_method)))
        .expect("the unknown method's event");
    assert!(
        repeated.pointer("/series/count").and_then(Value::as_i64) >= Some(2),
        "{repeated}"
    );
    assert_ne!(items[0]["action"], items[1]["action"], "{items:?}");
}

/// MultipleDefaultRepos names each other default BackupRepo in an event of its own
/// (related to it): with three defaults, the second conflicting repository used to count
/// up under the first one's note, or both were named in one note that later conflicts
/// could not change.
#[test]
fn each_other_default_backup_repo_is_named_in_its_own_event() {
    let mut c = Cluster::start();
    install(&mut c);
    let mut yaml = String::from(
        r#"
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: StorageProvider
metadata: {name: local-path}
spec:
  storageClassTemplate: |
    provisioner: kube-sim.io/host-path
"#,
    );
    for name in ["d1", "d2", "d3"] {
        yaml.push_str(&format!(
            r#"---
apiVersion: dataprotection.kubeblocks.io/v1alpha1
kind: BackupRepo
metadata:
  name: {name}
  annotations: {{dataprotection.kubeblocks.io/is-default-repo: "true"}}
spec:
  storageProviderRef: local-path
  accessMethod: Mount
  pvReclaimPolicy: Delete
  volumeCapacity: 1Gi
"#
        ));
    }
    c.apply(&yaml);
    for name in ["d1", "d2", "d3"] {
        c.wait_for(
            &format!("BackupRepo {name} Ready"),
            Duration::from_secs(180),
            || {
                c.get(&["backuprepo", name])
                    .filter(|r| r.pointer("/status/phase") == Some(&Value::from("Ready")))
            },
        );
    }
    // Reconcile d1 twice more (an edit each): both conflicts are reported each time.
    for touch in ["1", "2"] {
        c.kubectl_ok(&[
            "annotate",
            "--overwrite",
            "backuprepo",
            "d1",
            &format!("example.com/touch={touch}"),
        ]);
    }
    wait_note(
        &c,
        "d1",
        "MultipleDefaultRepos",
        "BackupRepo d2 is default too",
        2,
    );
    let all = wait_note(
        &c,
        "d1",
        "MultipleDefaultRepos",
        "BackupRepo d3 is default too",
        2,
    );
    assert_eq!(all.len(), 2, "one event per other default: {all:?}");
    // Related to the other repository, in the events API.
    let list = c
        .get(&[
            "events.v1.events.k8s.io",
            "-n",
            "default",
            "--field-selector",
            "regarding.name=d1,reason=MultipleDefaultRepos",
        ])
        .expect("events.k8s.io list");
    let mut related: Vec<String> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| {
            format!(
                "{}/{}",
                e.pointer("/related/kind")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
                e.pointer("/related/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
            )
        })
        .collect();
    related.sort();
    assert_eq!(related, ["BackupRepo/d2", "BackupRepo/d3"]);
}
