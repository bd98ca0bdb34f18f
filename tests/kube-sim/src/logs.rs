//! `pods/<name>/log`: serves what the runner writes.
//!
//! Storage contract (for the runner): each container's output goes to
//! `<data-dir>/pods/<namespace>/<pod>/<container>.log` (the previous run of a restarted
//! container to `<container>.previous.log`), one line per log line, each prefixed with its
//! RFC 3339 timestamp (nanoseconds, UTC) and a space, like the kubelet's CRI logs. The
//! endpoint strips the prefix unless `timestamps=true`, honours `tailLines`, `limitBytes`,
//! `sinceSeconds`, `sinceTime`, `previous`, and with `follow=true` keeps streaming until
//! the container's status says it terminated (or the pod is gone).

use crate::cluster::{Cluster, Target};
use crate::error::{ApiError, ApiResult};
use bytes::Bytes;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// Where a container's log lives.
pub fn log_path(data_dir: &Path, ns: &str, pod: &str, container: &str, previous: bool) -> PathBuf {
    let file = if previous {
        format!("{container}.previous.log")
    } else {
        format!("{container}.log")
    };
    data_dir.join("pods").join(ns).join(pod).join(file)
}

/// Query options of a log request.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// `container`.
    pub container: Option<String>,
    /// `follow`.
    pub follow: bool,
    /// `previous`.
    pub previous: bool,
    /// `tailLines`.
    pub tail_lines: Option<usize>,
    /// `limitBytes`.
    pub limit_bytes: Option<usize>,
    /// `sinceSeconds`.
    pub since_seconds: Option<i64>,
    /// `sinceTime`.
    pub since_time: Option<String>,
    /// `timestamps`.
    pub timestamps: bool,
}

fn names(pod: &Value, list: &str) -> Vec<String> {
    pod.pointer(&format!("/spec/{list}"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn container_state(pod: &Value, container: &str) -> Option<Value> {
    for list in ["containerStatuses", "initContainerStatuses"] {
        if let Some(a) = pod
            .pointer(&format!("/status/{list}"))
            .and_then(Value::as_array)
        {
            if let Some(cs) = a
                .iter()
                .find(|c| c.get("name").and_then(Value::as_str) == Some(container))
            {
                return cs.get("state").cloned();
            }
        }
    }
    None
}

/// Picks the container and checks the log can be served.
///
/// # Errors
/// 400 with the real server's messages (container not named, unknown, or not started).
pub fn resolve(c: &Cluster, pod: &Value, o: &LogOptions) -> ApiResult<(PathBuf, String)> {
    let ns = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let containers = names(pod, "containers");
    let inits = names(pod, "initContainers");
    let container = match &o.container {
        Some(cn) if !cn.is_empty() => {
            if !containers.contains(cn) && !inits.contains(cn) {
                return Err(ApiError::bad_request(format!(
                    "container {cn} is not valid for pod {name}"
                )));
            }
            cn.clone()
        }
        _ => {
            if containers.len() == 1 {
                containers[0].clone()
            } else {
                let mut msg = format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    containers.join(" ")
                );
                if !inits.is_empty() {
                    msg.push_str(&format!(
                        " or one of the init containers: [{}]",
                        inits.join(" ")
                    ));
                }
                return Err(ApiError::bad_request(msg));
            }
        }
    };
    let path = log_path(&c.options().data_dir, ns, name, &container, o.previous);
    if !path.exists() {
        if o.previous {
            return Err(ApiError::bad_request(format!(
                "previous terminated container \"{container}\" in pod \"{name}\" not found"
            )));
        }
        let reason = container_state(pod, &container)
            .and_then(|s| {
                s.pointer("/waiting/reason")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "ContainerCreating".to_string());
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: {reason}"
        )));
    }
    Ok((path, container))
}

fn render(
    line: &str,
    o: &LogOptions,
    since: Option<chrono::DateTime<chrono::Utc>>,
) -> Option<String> {
    let (ts, text) = line.split_once(' ').unwrap_or(("", line));
    if let Some(s) = since {
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(ts) {
            if t.with_timezone(&chrono::Utc) < s {
                return None;
            }
        }
    }
    Some(if o.timestamps {
        format!("{line}\n")
    } else {
        format!("{text}\n")
    })
}

/// Streams a log into `tx` (ends when the log is complete, or when the receiver goes).
pub async fn stream(
    c: Cluster,
    t: Target,
    pod_name: String,
    path: PathBuf,
    container: String,
    o: LogOptions,
    tx: mpsc::Sender<Bytes>,
) {
    let since = o
        .since_time
        .as_deref()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
        .or_else(|| {
            o.since_seconds
                .map(|s| chrono::Utc::now() - chrono::Duration::seconds(s))
        });
    let mut sent = 0usize;
    let limit = o.limit_bytes.unwrap_or(usize::MAX);
    let content = tokio::fs::read_to_string(&path).await.unwrap_or_default();
    let mut offset = content.len();
    let complete_lines: Vec<&str> = content.lines().collect();
    let start = o
        .tail_lines
        .map_or(0, |n| complete_lines.len().saturating_sub(n));
    for line in &complete_lines[start..] {
        if let Some(out) = render(line, &o, since) {
            let bytes = out.as_bytes();
            let take = bytes.len().min(limit - sent);
            if tx
                .send(Bytes::copy_from_slice(&bytes[..take]))
                .await
                .is_err()
            {
                return;
            }
            sent += take;
            if sent >= limit {
                return;
            }
        }
    }
    if !o.follow {
        return;
    }
    let mut partial = String::new();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let data = tokio::fs::read(&path).await.unwrap_or_default();
        if data.len() > offset {
            partial.push_str(&String::from_utf8_lossy(&data[offset..]));
            offset = data.len();
            while let Some(i) = partial.find('\n') {
                let line: String = partial.drain(..=i).collect();
                if let Some(out) = render(line.trim_end_matches('\n'), &o, since) {
                    let bytes = out.as_bytes();
                    let take = bytes.len().min(limit - sent);
                    if tx
                        .send(Bytes::copy_from_slice(&bytes[..take]))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    sent += take;
                    if sent >= limit {
                        return;
                    }
                }
            }
            continue;
        }
        let done = match c.get(&t, &pod_name) {
            Err(_) => true,
            Ok(pod) => {
                container_state(&pod, &container).is_some_and(|s| s.get("terminated").is_some())
            }
        };
        if done || tx.is_closed() {
            return;
        }
    }
}
