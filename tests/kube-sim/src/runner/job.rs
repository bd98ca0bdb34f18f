//! The Job controller (and the TTL-after-finished controller), after kube-controller-manager
//! 1.33:
//!
//! - pods from `spec.template`, named `<job>-<5 random>` (generateName), with the job's
//!   labels (`job-name`, `controller-uid` and their `batch.kubernetes.io/` forms, set by
//!   the API server on the template), a controller ownerReference with
//!   `blockOwnerDeletion`, and the `batch.kubernetes.io/job-tracking` finalizer, removed
//!   once a finished pod is counted (so deleted pods are never lost from the counts);
//! - `parallelism`/`completions` (NonIndexed; no completions = work queue), `backoffLimit`
//!   (failed pods, and for `OnFailure` the containers' restarts), new pods after a failure
//!   delayed 10 s doubling up to 10 min, `activeDeadlineSeconds`, `suspend`/resume,
//!   `ttlSecondsAfterFinished` (the Job is deleted with foreground propagation);
//! - status `active`, `ready`, `terminating`, `succeeded`, `failed`,
//!   `uncountedTerminatedPods`, `startTime`, `completionTime`, and the conditions as 1.33
//!   writes them: `SuccessCriteriaMet` then `Complete` (reason `CompletionsReached`);
//!   `FailureTarget` then, once no pod is left running, `Failed` (reasons
//!   `BackoffLimitExceeded`, `DeadlineExceeded`); `Suspended`;
//! - Events `SuccessfulCreate`, `SuccessfulDelete`, `Completed`, `BackoffLimitExceeded`,
//!   `DeadlineExceeded`, `Suspended`, `Resumed`.
//!
//! Not implemented: Indexed completion, `podFailurePolicy`, `successPolicy`,
//! `backoffLimitPerIndex`, `podReplacementPolicy` other than the default, `managedBy`.

use super::util::{self, meta, terminating};
use crate::cluster::{now, Cluster, Propagation, WriteOptions};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::watch;

/// The pod finalizer of job tracking.
pub const TRACKING: &str = "batch.kubernetes.io/job-tracking";
const USER: &str = "system:serviceaccount:kube-system:job-controller";

fn opts() -> WriteOptions {
    util::as_component(USER, "kube-controller-manager")
}

#[derive(Default, Clone)]
struct Backoff {
    failures: u32,
    last_failure: i64,
}

/// Runs the Job controller until `stop`.
pub async fn run(c: Cluster, mut stop: watch::Receiver<bool>) {
    let mut backoff: HashMap<String, Backoff> = HashMap::new();
    loop {
        sync(&c, &mut backoff);
        tokio::select! {
            _ = c.changed() => tokio::time::sleep(Duration::from_millis(20)).await,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => return,
        }
    }
}

fn cond_true(job: &Value, ty: &str) -> bool {
    job.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|a| {
            a.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some(ty)
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

fn condition(ty: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": ty, "status": status, "lastProbeTime": now(), "lastTransitionTime": now(), "reason": reason, "message": message})
}

fn set_condition(status: &mut Value, c: Value) {
    let mut conds = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ty = c.get("type").cloned();
    if let Some(existing) = conds.iter_mut().find(|x| x.get("type") == ty.as_ref()) {
        if existing.get("status") == c.get("status") {
            return;
        }
        *existing = c;
    } else {
        conds.push(c);
    }
    status["conditions"] = Value::Array(conds);
}

fn finished(job: &Value) -> bool {
    cond_true(job, "Complete") || cond_true(job, "Failed")
}

fn pod_terminal(p: &Value) -> Option<bool> {
    match p.pointer("/status/phase").and_then(Value::as_str) {
        Some("Succeeded") => Some(true),
        Some("Failed") => Some(false),
        _ => None,
    }
}

fn has_finalizer(p: &Value) -> bool {
    p.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|f| f.as_str() == Some(TRACKING)))
}

fn remove_finalizer(c: &Cluster, p: &Value) {
    let ns = meta(p, "namespace");
    let Some(t) = util::target(c, "", "v1", "pods", Some(&ns)) else {
        return;
    };
    let _ = util::update_main(c, &t, &meta(p, "name"), &meta(p, "uid"), &opts(), |o| {
        let Some(a) = o
            .pointer_mut("/metadata/finalizers")
            .and_then(Value::as_array_mut)
        else {
            return false;
        };
        let before = a.len();
        a.retain(|f| f.as_str() != Some(TRACKING));
        a.len() != before
    });
}

fn finished_at(p: &Value) -> i64 {
    p.pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| {
            c.pointer("/state/terminated/finishedAt")
                .and_then(Value::as_str)
                .and_then(util::parse_time)
        })
        .max()
        .unwrap_or_else(|| chrono::Utc::now().timestamp())
}

fn restarts(p: &Value) -> i64 {
    ["containerStatuses", "initContainerStatuses"]
        .iter()
        .flat_map(|l| {
            p.pointer(&format!("/status/{l}"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
        .sum()
}

fn pod_ready(p: &Value) -> bool {
    p.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|a| {
            a.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

#[allow(clippy::too_many_lines)]
fn sync(c: &Cluster, backoff: &mut HashMap<String, Backoff>) {
    let jobs = util::list_all(c, "batch", "v1", "jobs");
    let pods = util::list_all(c, "", "v1", "pods");
    let job_uids: std::collections::HashSet<String> = jobs.iter().map(|j| meta(j, "uid")).collect();
    // Pods whose Job is gone are released.
    for p in &pods {
        if has_finalizer(p) {
            let owner = p
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .and_then(|a| {
                    a.iter()
                        .find(|r| r.get("kind").and_then(Value::as_str) == Some("Job"))
                        .cloned()
                });
            let alive = owner
                .as_ref()
                .and_then(|o| o.get("uid"))
                .and_then(Value::as_str)
                .is_some_and(|u| job_uids.contains(u));
            if !alive {
                remove_finalizer(c, p);
            }
        }
    }
    backoff.retain(|uid, _| job_uids.contains(uid));
    let now_s = chrono::Utc::now().timestamp();
    for job in jobs {
        let ns = meta(&job, "namespace");
        let name = meta(&job, "name");
        let uid = meta(&job, "uid");
        let Some(jt) = util::target(c, "batch", "v1", "jobs", Some(&ns)) else {
            continue;
        };
        let Some(pt) = util::target(c, "", "v1", "pods", Some(&ns)) else {
            continue;
        };
        let mine: Vec<&Value> = pods
            .iter()
            .filter(|p| meta(p, "namespace") == ns && util::owned_by(p, &uid))
            .collect();
        if finished(&job) {
            for p in &mine {
                if has_finalizer(p) && (pod_terminal(p).is_some() || terminating(p)) {
                    remove_finalizer(c, p);
                }
            }
            // TTL after finished.
            if let Some(ttl) = job
                .pointer("/spec/ttlSecondsAfterFinished")
                .and_then(Value::as_i64)
            {
                let fin = job
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .and_then(|a| {
                        a.iter()
                            .filter(|x| {
                                matches!(
                                    x.get("type").and_then(Value::as_str),
                                    Some("Complete" | "Failed")
                                )
                            })
                            .filter_map(|x| {
                                x.get("lastTransitionTime")
                                    .and_then(Value::as_str)
                                    .and_then(util::parse_time)
                            })
                            .max()
                    })
                    .unwrap_or(now_s);
                if now_s >= fin + ttl && !terminating(&job) {
                    let _ = util::delete(
                        c,
                        &jt,
                        &name,
                        "system:serviceaccount:kube-system:ttl-after-finished-controller",
                        Some(Propagation::Foreground),
                        None,
                    );
                }
            }
            continue;
        }
        if terminating(&job) {
            continue;
        }
        // Count finished pods still holding the finalizer.
        let mut new_succ = 0i64;
        let mut new_fail = 0i64;
        let mut to_release = Vec::new();
        let bo = backoff.entry(uid.clone()).or_default();
        for p in &mine {
            if !has_finalizer(p) {
                continue;
            }
            match pod_terminal(p) {
                Some(true) => {
                    new_succ += 1;
                    bo.failures = 0;
                    to_release.push((*p).clone());
                }
                Some(false) => {
                    new_fail += 1;
                    bo.failures += 1;
                    bo.last_failure = bo.last_failure.max(finished_at(p));
                    to_release.push((*p).clone());
                }
                None => {}
            }
        }
        let bo = bo.clone();
        let active: Vec<&Value> = mine
            .iter()
            .copied()
            .filter(|p| pod_terminal(p).is_none() && !terminating(p))
            .collect();
        let terminating_n = mine
            .iter()
            .filter(|p| pod_terminal(p).is_none() && terminating(p))
            .count() as i64;
        let ready = active.iter().filter(|p| pod_ready(p)).count() as i64;
        let st = job.get("status").cloned().unwrap_or(json!({}));
        let succeeded = st.get("succeeded").and_then(Value::as_i64).unwrap_or(0) + new_succ;
        let failed = st.get("failed").and_then(Value::as_i64).unwrap_or(0) + new_fail;
        let spec = job.get("spec").cloned().unwrap_or(json!({}));
        let parallelism = spec
            .get("parallelism")
            .and_then(Value::as_i64)
            .unwrap_or(1)
            .max(0);
        let completions = spec.get("completions").and_then(Value::as_i64);
        let backoff_limit = spec
            .get("backoffLimit")
            .and_then(Value::as_i64)
            .unwrap_or(6);
        let suspend = spec
            .get("suspend")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let policy = spec
            .pointer("/template/spec/restartPolicy")
            .and_then(Value::as_str)
            .unwrap_or("Never");
        let mut status = st.clone();
        let already_target =
            cond_true(&job, "FailureTarget") || cond_true(&job, "SuccessCriteriaMet");
        let mut events: Vec<(bool, &str, String)> = Vec::new();
        let mut delete_active = false;
        let mut create = 0i64;

        if suspend {
            if !cond_true(&job, "Suspended") {
                set_condition(
                    &mut status,
                    condition("Suspended", "True", "JobSuspended", "Job suspended"),
                );
                events.push((false, "Suspended", "Job suspended".into()));
            }
            delete_active = true;
        } else {
            if cond_true(&job, "Suspended") {
                set_condition(
                    &mut status,
                    condition("Suspended", "False", "JobResumed", "Job resumed"),
                );
                events.push((false, "Resumed", "Job resumed".into()));
                status["startTime"] = json!(now());
            }
            if status.get("startTime").is_none_or(Value::is_null) {
                status["startTime"] = json!(now());
            }
            if !already_target {
                let start = status
                    .get("startTime")
                    .and_then(Value::as_str)
                    .and_then(util::parse_time)
                    .unwrap_or(now_s);
                let deadline = spec.get("activeDeadlineSeconds").and_then(Value::as_i64);
                let on_failure_restarts: i64 = if policy == "OnFailure" {
                    active.iter().map(|p| restarts(p)).sum()
                } else {
                    0
                };
                let past_on_failure = policy == "OnFailure"
                    && if backoff_limit == 0 {
                        on_failure_restarts > 0
                    } else {
                        on_failure_restarts >= backoff_limit
                    };
                let done = match completions {
                    Some(n) => succeeded >= n,
                    None => succeeded > 0 && active.is_empty(),
                };
                if failed > backoff_limit || past_on_failure {
                    set_condition(
                        &mut status,
                        condition(
                            "FailureTarget",
                            "True",
                            "BackoffLimitExceeded",
                            "Job has reached the specified backoff limit",
                        ),
                    );
                    delete_active = true;
                } else if deadline.is_some_and(|d| now_s - start >= d) {
                    set_condition(
                        &mut status,
                        condition(
                            "FailureTarget",
                            "True",
                            "DeadlineExceeded",
                            "Job was active longer than specified deadline",
                        ),
                    );
                    delete_active = true;
                } else if done {
                    set_condition(
                        &mut status,
                        condition(
                            "SuccessCriteriaMet",
                            "True",
                            "CompletionsReached",
                            "Reached expected number of succeeded pods",
                        ),
                    );
                    delete_active = true;
                } else {
                    let want = match completions {
                        Some(n) => parallelism.min(n - succeeded),
                        None if succeeded > 0 => 0,
                        None => parallelism,
                    };
                    let missing = want - active.len() as i64;
                    if missing > 0 {
                        let delay = if bo.failures == 0 {
                            0
                        } else {
                            (10i64 << (bo.failures - 1).min(6)).min(600)
                        };
                        if now_s >= bo.last_failure + delay {
                            create = missing;
                        }
                    }
                }
            } else {
                delete_active = true;
            }
        }
        // Terminal conditions once nothing runs any more.
        let nothing_left = active.is_empty() && terminating_n == 0;
        if nothing_left && !suspend {
            if cond_true(&status, "FailureTarget") {
                let (r, m) = status
                    .get("conditions")
                    .and_then(Value::as_array)
                    .and_then(|a| {
                        a.iter()
                            .find(|x| {
                                x.get("type").and_then(Value::as_str) == Some("FailureTarget")
                            })
                            .cloned()
                    })
                    .map(|x| {
                        (
                            x["reason"].as_str().unwrap_or("").to_string(),
                            x["message"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .unwrap_or_default();
                if mine.iter().all(|p| {
                    !has_finalizer(p) || to_release.iter().any(|r| meta(r, "uid") == meta(p, "uid"))
                }) {
                    set_condition(&mut status, condition("Failed", "True", &r, &m));
                    events.push((
                        true,
                        if r == "DeadlineExceeded" {
                            "DeadlineExceeded"
                        } else {
                            "BackoffLimitExceeded"
                        },
                        m,
                    ));
                }
            } else if cond_true(&status, "SuccessCriteriaMet") {
                set_condition(
                    &mut status,
                    condition(
                        "Complete",
                        "True",
                        "CompletionsReached",
                        "Reached expected number of succeeded pods",
                    ),
                );
                status["completionTime"] = json!(now());
                events.push((false, "Completed", "Job completed".into()));
            }
        }
        status["active"] = json!(if delete_active {
            0
        } else {
            active.len() as i64 + create
        });
        status["ready"] = json!(if delete_active { 0 } else { ready });
        status["terminating"] = json!(
            terminating_n
                + if delete_active {
                    active.len() as i64
                } else {
                    0
                }
        );
        status["uncountedTerminatedPods"] = json!({});
        if succeeded > 0 || st.get("succeeded").is_some() {
            status["succeeded"] = json!(succeeded);
        }
        if failed > 0 || st.get("failed").is_some() {
            status["failed"] = json!(failed);
        }
        for k in ["active", "succeeded", "failed"] {
            if status.get(k).and_then(Value::as_i64) == Some(0) {
                if let Some(m) = status.as_object_mut() {
                    m.remove(k);
                }
            }
        }
        if status != st {
            let s2 = status.clone();
            let r = util::update_status(c, &jt, &name, &uid, &opts(), move |o| {
                if o.get("status") == Some(&s2) {
                    return false;
                }
                o["status"] = s2.clone();
                true
            });
            if r.is_err() {
                continue;
            }
        }
        for p in &to_release {
            remove_finalizer(c, p);
        }
        let mut job_obj = job.clone();
        job_obj["kind"] = json!("Job");
        job_obj["apiVersion"] = json!("batch/v1");
        if delete_active {
            for p in &active {
                if util::delete(c, &pt, &meta(p, "name"), USER, None, None).is_ok() {
                    events.push((
                        false,
                        "SuccessfulDelete",
                        format!("Deleted pod: {}", meta(p, "name")),
                    ));
                }
            }
        }
        for _ in 0..create {
            let tmpl = spec.get("template").cloned().unwrap_or(json!({}));
            let mut md = tmpl.get("metadata").cloned().unwrap_or(json!({}));
            if let Some(m) = md.as_object_mut() {
                m.remove("name");
                m.remove("namespace");
            }
            md["generateName"] = json!(format!("{name}-"));
            md["ownerReferences"] = json!([util::controller_ref(&job_obj)]);
            md["finalizers"] = json!([TRACKING]);
            let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": tmpl.get("spec").cloned().unwrap_or(json!({}))});
            match c.create(&pt, pod, &opts()) {
                Ok(out) => events.push((
                    false,
                    "SuccessfulCreate",
                    format!("Created pod: {}", meta(&out.object, "name")),
                )),
                Err(e) => events.push((
                    true,
                    "FailedCreate",
                    format!("Error creating: {}", e.message),
                )),
            }
        }
        for (warn, reason, msg) in events {
            util::event(c, &job_obj, None, warn, reason, &msg, "job-controller");
        }
    }
}
