use super::*;
use serde_json::json;

fn job(conditions: serde_json::Value) -> Job {
    serde_json::from_value(json!({
        "metadata": {"name": "restore-preparedata-0123-b-0", "namespace": "demo"},
        "status": {"conditions": conditions}
    }))
    .unwrap()
}

fn pod(restore: Option<(i32, &str)>, manager: Option<(i32, &str)>) -> Pod {
    let state = |s: Option<(i32, &str)>| match s {
        Some((code, msg)) => json!({"terminated": {"exitCode": code, "message": msg}}),
        None => json!({"running": {}}),
    };
    serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "demo"},
        "status": {"containerStatuses": [
            {"name": "restore", "state": state(restore), "ready": false, "restartCount": 0, "image": "i", "imageID": ""},
            {"name": "restore-manager", "state": state(manager), "ready": false, "restartCount": 0, "image": "i", "imageID": ""}
        ]}
    }))
    .unwrap()
}

#[test]
fn job_states_come_from_conditions_and_the_containers() {
    let running = job(json!([]));
    assert_eq!(
        job_state(&running, &[pod(None, None)]),
        JobState::Running {
            restore_ended: false
        }
    );
    assert_eq!(
        job_state(&running, &[pod(Some((0, "")), None)]),
        JobState::Running {
            restore_ended: true
        }
    );
    let complete = job(json!([{"type": "Complete", "status": "True"}]));
    assert_eq!(job_state(&complete, &[]), JobState::Completed);
    let failed = job(
        json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]),
    );
    assert_eq!(
        job_state(&failed, &[pod(Some((2, "tar: short read\n")), Some((0, "")))]),
        JobState::Failed("\"Job/restore-preparedata-0123-b-0\" failed (BackoffLimitExceeded: Job has reached the specified backoff limit); the restore container exited 2: tar: short read".into())
    );
    // An empty claim fails the Job at once, whatever the Job says yet.
    let msg = "restored volume is empty: 'data': the restore container exited 0 but wrote nothing into it\n";
    assert_eq!(
        job_state(&running, &[pod(Some((0, "")), Some((1, msg)))]),
        JobState::Failed(format!(
            "\"Job/restore-preparedata-0123-b-0\" failed: {}",
            msg.trim()
        ))
    );
}

#[test]
fn selectors_become_list_parameters() {
    let s: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector =
        serde_json::from_value(json!({
            "matchLabels": {"app": "pg", "role": "primary"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "gone", "operator": "DoesNotExist"},
                {"key": "here", "operator": "Exists"}
            ]
        }))
        .unwrap();
    assert_eq!(
        selector_text(&s),
        "app=pg,role=primary,tier in (a,b),!gone,here"
    );
}
