//! The CronJob controller, after kube-controller-manager's (v2) controller, evaluated
//! against the runner's [`super::CronClock`]:
//!
//! - the most recent unmet schedule time since `status.lastScheduleTime` (or the
//!   creation time), no earlier than now − `startingDeadlineSeconds`; too late ⇒ event
//!   `MissSchedule`; more than 100 missed ⇒ event `TooManyMissedTimes`;
//! - Jobs named `<cronjob>-<scheduled time in minutes since the epoch>`, with the
//!   template's labels and annotations, the annotation
//!   `batch.kubernetes.io/cronjob-scheduled-timestamp` (RFC 3339 in the CronJob's zone),
//!   a controller ownerReference;
//! - `concurrencyPolicy` Allow, Forbid (event `JobAlreadyActive`), Replace (active Jobs
//!   deleted in the background); `suspend`; `timeZone` (and `TZ=`/`CRON_TZ=` prefixes);
//! - status `active` (object references), `lastScheduleTime`, `lastSuccessfulTime`;
//!   events `SuccessfulCreate`, `SawCompletedJob`, `SuccessfulDelete`, `UnexpectedJob`,
//!   `MissingJob`, `UnparseableSchedule`, `UnknownTimeZone`;
//! - `successfulJobsHistoryLimit` (3) and `failedJobsHistoryLimit` (1): the oldest
//!   finished Jobs beyond them are deleted.
//!
//! Jobs made by `kubectl create job --from=cronjob/NAME` are plain Jobs (owned by the
//! CronJob, so it reports them as `UnexpectedJob`, as the real controller does).

use super::cron::{Schedule, Zone};
use super::util::{self, meta, terminating};
use super::CronClock;
use crate::cluster::{Cluster, Propagation, WriteOptions};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const USER: &str = "system:serviceaccount:kube-system:cronjob-controller";
/// The scheduled-time annotation of Jobs a CronJob creates.
pub const SCHEDULED: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

fn opts() -> WriteOptions {
    util::as_component(USER, "kube-controller-manager")
}

/// Runs the controller until `stop`.
pub async fn run(c: Cluster, clock: Arc<CronClock>, mut stop: watch::Receiver<bool>) {
    let mut warned: HashSet<String> = HashSet::new();
    loop {
        sync(&c, &clock, &mut warned);
        tokio::select! {
            _ = c.changed() => tokio::time::sleep(Duration::from_millis(50)).await,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.changed() => return,
        }
    }
}

fn job_finished(j: &Value) -> Option<&'static str> {
    let conds = j.pointer("/status/conditions").and_then(Value::as_array)?;
    for c in conds {
        if c.get("status").and_then(Value::as_str) != Some("True") {
            continue;
        }
        match c.get("type").and_then(Value::as_str) {
            Some("Complete") => return Some("Complete"),
            Some("Failed") => return Some("Failed"),
            _ => {}
        }
    }
    None
}

fn job_ref(j: &Value) -> Value {
    json!({"kind": "Job", "namespace": meta(j, "namespace"), "name": meta(j, "name"), "uid": meta(j, "uid"),
        "apiVersion": "batch/v1", "resourceVersion": meta(j, "resourceVersion")})
}

/// The schedule text the controller parses: `spec.timeZone` becomes a `TZ=` prefix.
pub fn schedule_text(cj: &Value) -> String {
    let s = cj
        .pointer("/spec/schedule")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    match cj.pointer("/spec/timeZone").and_then(Value::as_str) {
        Some(tz) if !s.contains("TZ") => format!("TZ={tz} {s}"),
        _ => s,
    }
}

/// The most recent schedule time in `(earliest, now]` and how many were missed.
pub fn most_recent(s: &Schedule, earliest: i64, now: i64) -> (Option<i64>, u64) {
    let Some(t1) = s.next(earliest) else {
        return (None, 0);
    };
    if t1 > now {
        return (None, 0);
    }
    let mut last = t1;
    let mut n = 1u64;
    while let Some(t) = s.next(last) {
        if t > now {
            break;
        }
        last = t;
        n += 1;
        if n > 100_000 {
            break;
        }
    }
    (Some(last), n)
}

#[allow(clippy::too_many_lines)]
fn sync(c: &Cluster, clock: &CronClock, warned: &mut HashSet<String>) {
    let now = clock.now();
    let cjs = util::list_all(c, "batch", "v1", "cronjobs");
    let jobs = util::list_all(c, "batch", "v1", "jobs");
    for cj in cjs {
        let ns = meta(&cj, "namespace");
        let name = meta(&cj, "name");
        let uid = meta(&cj, "uid");
        let Some(ct) = util::target(c, "batch", "v1", "cronjobs", Some(&ns)) else {
            continue;
        };
        let Some(jt) = util::target(c, "batch", "v1", "jobs", Some(&ns)) else {
            continue;
        };
        let mut cj_obj = cj.clone();
        cj_obj["kind"] = json!("CronJob");
        cj_obj["apiVersion"] = json!("batch/v1");
        let ev = |warn: bool, reason: &str, msg: &str| {
            util::event(c, &cj_obj, None, warn, reason, msg, "cronjob-controller")
        };
        let mine: Vec<&Value> = jobs
            .iter()
            .filter(|j| meta(j, "namespace") == ns && util::owned_by(j, &uid))
            .collect();
        let old_status = cj.get("status").cloned().unwrap_or(json!({}));
        let mut active: Vec<Value> = old_status
            .get("active")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut last_success = old_status
            .get("lastSuccessfulTime")
            .and_then(Value::as_str)
            .map(str::to_string);
        let mut last_schedule = old_status
            .get("lastScheduleTime")
            .and_then(Value::as_str)
            .map(str::to_string);
        let in_active = |active: &Vec<Value>, uid: &str| {
            active
                .iter()
                .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
        };
        for j in &mine {
            let juid = meta(j, "uid");
            let found = in_active(&active, &juid);
            let fin = job_finished(j);
            if !found && fin.is_none() {
                if warned.insert(juid.clone()) {
                    ev(
                        true,
                        "UnexpectedJob",
                        &format!(
                            "Saw a job that the controller did not create or forgot: {}",
                            meta(j, "name")
                        ),
                    );
                }
            } else if found && fin.is_some() {
                active.retain(|r| r.get("uid").and_then(Value::as_str) != Some(juid.as_str()));
                ev(
                    false,
                    "SawCompletedJob",
                    &format!(
                        "Saw completed job: {}, condition: {}",
                        meta(j, "name"),
                        fin.unwrap_or("")
                    ),
                );
            }
            if fin == Some("Complete") {
                if let Some(ct_) = j.pointer("/status/completionTime").and_then(Value::as_str) {
                    let newer = last_success
                        .as_deref()
                        .and_then(util::parse_time)
                        .is_none_or(|l| util::parse_time(ct_).is_some_and(|t| t > l));
                    if newer {
                        last_success = Some(ct_.to_string());
                    }
                }
            }
        }
        let child_uids: HashSet<String> = mine.iter().map(|j| meta(j, "uid")).collect();
        active.retain(|r| {
            let u = r.get("uid").and_then(Value::as_str).unwrap_or("");
            if child_uids.contains(u) {
                return true;
            }
            ev(
                false,
                "MissingJob",
                &format!(
                    "Active job went missing: {}",
                    r.get("name").and_then(Value::as_str).unwrap_or("")
                ),
            );
            false
        });
        let mut to_create: Option<(i64, Zone)> = None;
        let mut replace = Vec::new();
        let suspended = cj
            .pointer("/spec/suspend")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if !terminating(&cj) && !suspended {
            let text = schedule_text(&cj);
            match Schedule::parse(&text) {
                Err(e) => {
                    let key = format!("{uid}/{text}");
                    if warned.insert(key) {
                        if e.contains("bad location") {
                            ev(
                                true,
                                "UnknownTimeZone",
                                &format!(
                                    "invalid timeZone: {:?}: {e}",
                                    cj.pointer("/spec/timeZone")
                                        .and_then(Value::as_str)
                                        .unwrap_or("")
                                ),
                            );
                        } else {
                            ev(
                                true,
                                "UnparseableSchedule",
                                &format!("unparseable schedule: {:?} : {e}", text),
                            );
                        }
                    }
                }
                Ok(s) => {
                    let created = util::parse_time(&meta(&cj, "creationTimestamp")).unwrap_or(now);
                    let mut earliest = last_schedule
                        .as_deref()
                        .and_then(util::parse_time)
                        .unwrap_or(created);
                    let deadline = cj
                        .pointer("/spec/startingDeadlineSeconds")
                        .and_then(Value::as_i64);
                    if let Some(d) = deadline {
                        earliest = earliest.max(now - d);
                    }
                    let (recent, missed) = most_recent(&s, earliest, now);
                    if missed > 100
                        && warned.insert(format!("{uid}/missed/{}", recent.unwrap_or(0)))
                    {
                        ev(true, "TooManyMissedTimes", &format!("too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"));
                    }
                    if let Some(t) = recent {
                        let job_name = format!("{name}-{}", t.div_euclid(60));
                        let too_late = deadline.is_some_and(|d| t + d < now);
                        let already = active.iter().any(|r| {
                            r.get("name").and_then(Value::as_str) == Some(job_name.as_str())
                        }) || last_schedule.as_deref().and_then(util::parse_time)
                            == Some(t);
                        if too_late {
                            if warned.insert(format!("{uid}/late/{t}")) {
                                let when = chrono::DateTime::from_timestamp(t, 0)
                                    .unwrap_or_default()
                                    .format("%a, %d %b %Y %H:%M:%S +0000");
                                ev(
                                    false,
                                    "MissSchedule",
                                    &format!("Missed scheduled time to start a job: {when}"),
                                );
                            }
                        } else if !already {
                            let policy = cj
                                .pointer("/spec/concurrencyPolicy")
                                .and_then(Value::as_str)
                                .unwrap_or("Allow");
                            if policy == "Forbid" && !active.is_empty() {
                                if warned.insert(format!("{uid}/forbid/{t}")) {
                                    ev(false, "JobAlreadyActive", "Not starting job because prior execution is running and concurrency policy is Forbid");
                                }
                            } else {
                                if policy == "Replace" {
                                    replace = std::mem::take(&mut active);
                                }
                                to_create = Some((t, s.zone().clone()));
                            }
                        }
                    }
                }
            }
        }
        for r in &replace {
            let jn = r.get("name").and_then(Value::as_str).unwrap_or("");
            if util::delete(c, &jt, jn, USER, Some(Propagation::Background), None).is_ok() {
                ev(false, "SuccessfulDelete", &format!("Deleted job {jn}"));
            }
        }
        if let Some((t, zone)) = to_create {
            let job_name = format!("{name}-{}", t.div_euclid(60));
            let tmpl = cj
                .pointer("/spec/jobTemplate")
                .cloned()
                .unwrap_or(json!({}));
            let mut md = json!({"name": job_name, "namespace": ns});
            if let Some(l) = tmpl.pointer("/metadata/labels") {
                md["labels"] = l.clone();
            }
            let mut ann = tmpl
                .pointer("/metadata/annotations")
                .cloned()
                .unwrap_or(json!({}));
            ann[SCHEDULED] = json!(zone.rfc3339(t));
            md["annotations"] = ann;
            md["ownerReferences"] = json!([util::controller_ref(&cj_obj)]);
            let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": md, "spec": tmpl.get("spec").cloned().unwrap_or(json!({}))});
            match c.create(&jt, job, &opts()) {
                Ok(out) => {
                    ev(
                        false,
                        "SuccessfulCreate",
                        &format!("Created job {job_name}"),
                    );
                    active.push(job_ref(&out.object));
                    last_schedule = Some(util::format_time(t));
                }
                Err(e) if e.code == 409 => {
                    if let Ok(j) = c.get(&jt, &job_name) {
                        if util::owned_by(&j, &uid) {
                            if job_finished(&j).is_none() && !in_active(&active, &meta(&j, "uid")) {
                                active.push(job_ref(&j));
                            }
                            last_schedule = Some(util::format_time(t));
                        }
                    }
                }
                Err(e) => ev(
                    true,
                    "FailedCreate",
                    &format!("Error creating job: {}", e.message),
                ),
            }
        }
        let mut status = old_status.clone();
        if active.is_empty() {
            if let Some(m) = status.as_object_mut() {
                m.remove("active");
            }
        } else {
            status["active"] = json!(active);
        }
        if let Some(l) = &last_schedule {
            status["lastScheduleTime"] = json!(l);
        }
        if let Some(l) = &last_success {
            status["lastSuccessfulTime"] = json!(l);
        }
        if status != old_status {
            let s2 = status.clone();
            let _ = util::update_status(c, &ct, &name, &uid, &opts(), move |o| {
                o["status"] = s2.clone();
                true
            });
        }
        // History limits.
        for (kind, limit) in [
            (
                "Complete",
                cj.pointer("/spec/successfulJobsHistoryLimit")
                    .and_then(Value::as_i64)
                    .unwrap_or(3),
            ),
            (
                "Failed",
                cj.pointer("/spec/failedJobsHistoryLimit")
                    .and_then(Value::as_i64)
                    .unwrap_or(1),
            ),
        ] {
            let mut done: Vec<&&Value> = mine
                .iter()
                .filter(|j| job_finished(j) == Some(kind) && !terminating(j))
                .collect();
            if done.len() as i64 <= limit {
                continue;
            }
            done.sort_by_key(|j| {
                j.pointer("/status/startTime")
                    .and_then(Value::as_str)
                    .and_then(util::parse_time)
                    .unwrap_or(0)
            });
            let extra = done.len() - limit.max(0) as usize;
            for j in done.into_iter().take(extra) {
                if util::delete(
                    c,
                    &jt,
                    &meta(j, "name"),
                    USER,
                    Some(Propagation::Background),
                    None,
                )
                .is_ok()
                {
                    ev(
                        false,
                        "SuccessfulDelete",
                        &format!("Deleted job {}", meta(j, "name")),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_recent_counts_missed_times() {
        let s = Schedule::parse("* * * * *").unwrap();
        let t0 = 1_700_000_000 - 1_700_000_000 % 60;
        assert_eq!(most_recent(&s, t0, t0 + 30), (None, 0));
        assert_eq!(most_recent(&s, t0, t0 + 60), (Some(t0 + 60), 1));
        assert_eq!(most_recent(&s, t0, t0 + 185), (Some(t0 + 180), 3));
    }

    #[test]
    fn time_zone_becomes_a_prefix() {
        let cj = json!({"spec": {"schedule": "0 * * * *", "timeZone": "Europe/Paris"}});
        assert_eq!(schedule_text(&cj), "TZ=Europe/Paris 0 * * * *");
        let cj = json!({"spec": {"schedule": "CRON_TZ=UTC 0 * * * *"}});
        assert_eq!(schedule_text(&cj), "CRON_TZ=UTC 0 * * * *");
    }
}
