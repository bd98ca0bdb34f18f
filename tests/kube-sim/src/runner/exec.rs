//! `pods/exec` over WebSocket, as the kubelet's streaming server speaks it to kubectl 1.30+
//! and kube-rs: subprotocols `v5.channel.k8s.io` and `v4.channel.k8s.io`, binary
//! messages whose first byte is the channel (0 stdin, 1 stdout, 2 stderr, 3 error, 4
//! resize; v5 adds 255 close, `[255, 0]` closing stdin), and on the error channel the
//! command's outcome as a `Status` (`Success`, or `Failure`/`NonZeroExitCode` with the
//! exit code as the `ExitCode` cause). The command runs inside the running container
//! (`nsenter` into its namespaces and root, its working directory, user and
//! environment). `tty=true` is accepted without a terminal (stderr then goes to stdout).
//!
//! SPDY (kubectl 1.29 and older without `KUBECTL_REMOTE_COMMAND_WEBSOCKETS`) is not
//! spoken: those clients get a 400 `Status` saying so. `attach` and `portforward` are
//! refused the same way.

use super::kubelet::{nsenter, Ctx};
use super::PodIoRequest;
use crate::error::ApiError;
use crate::server::Body;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::{Message, Role};

const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];

fn status_response(e: &ApiError) -> hyper::Response<Body> {
    let body = serde_json::to_vec(&e.to_status()).unwrap_or_default();
    hyper::Response::builder()
        .status(e.code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("response")
}

fn query(uri: &hyper::Uri) -> Vec<(String, String)> {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn truthy(v: Option<&String>) -> bool {
    v.is_some_and(|s| s == "true" || s == "1")
}

/// Serves a pods/exec (attach, portforward) request.
pub async fn handle(ctx: Arc<Ctx>, req: PodIoRequest) -> hyper::Response<Body> {
    match serve(ctx, req).await {
        Ok(r) => r,
        Err(e) => status_response(&e),
    }
}

async fn serve(ctx: Arc<Ctx>, req: PodIoRequest) -> Result<hyper::Response<Body>, ApiError> {
    if req.subresource != "exec" {
        return Err(ApiError::bad_request(format!(
            "kube-sim does not serve pods/{}: only pods/exec is implemented",
            req.subresource
        )));
    }
    let t = req.cluster.target("", "v1", "pods", Some(&req.namespace))?;
    let pod = req.cluster.get(&t, &req.pod)?;
    let q = query(req.request.uri());
    let get = |k: &str| q.iter().find(|(a, _)| a == k).map(|(_, b)| b.clone());
    let command: Vec<String> = q
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    if command.is_empty() {
        return Err(ApiError::bad_request("you must specify at least 1 command"));
    }
    let (stdin, stdout, stderr, tty) = (
        truthy(get("stdin").as_ref()),
        truthy(get("stdout").as_ref()),
        truthy(get("stderr").as_ref()),
        truthy(get("tty").as_ref()),
    );
    if !stdin && !stdout && !stderr {
        return Err(ApiError::bad_request(
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    let names: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let container = match get("container").filter(|c| !c.is_empty()) {
        Some(c) => c,
        None if names.len() == 1 => names[0].clone(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {}, choose one of: [{}]",
                req.pod,
                names.join(" ")
            )))
        }
    };
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    if phase == "Succeeded" || phase == "Failed" {
        return Err(ApiError::bad_request(format!(
            "cannot exec into a container in a completed pod; current phase is {phase}"
        )));
    }
    let running = ctx
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&(req.namespace.clone(), req.pod.clone(), container.clone()))
        .cloned();
    let Some(running) = running else {
        let known = names.contains(&container)
            || pod
                .pointer("/spec/initContainers")
                .and_then(Value::as_array)
                .is_some_and(|a| {
                    a.iter()
                        .any(|c| c.get("name").and_then(Value::as_str) == Some(container.as_str()))
                });
        if !known {
            return Err(ApiError::bad_request(format!(
                "container {container} is not valid for pod {}",
                req.pod
            )));
        }
        return Err(ApiError::bad_request(format!(
            "unable to upgrade connection: container not found (\"{container}\")"
        )));
    };
    let headers = req.request.headers();
    let is_ws = headers
        .get("upgrade")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    if !is_ws {
        return Err(ApiError::bad_request(
            "kube-sim serves pods/exec over WebSocket only (v5.channel.k8s.io, v4.channel.k8s.io): use kubectl 1.30 or newer (or KUBECTL_REMOTE_COMMAND_WEBSOCKETS=true with 1.29); SPDY is not supported",
        ));
    }
    let offered: Vec<String> = headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let Some(proto) = offered
        .iter()
        .find(|p| PROTOCOLS.contains(&p.as_str()))
        .cloned()
    else {
        return Err(ApiError::bad_request(format!(
            "kube-sim supports the exec subprotocols {PROTOCOLS:?}; the client offered {offered:?}"
        )));
    };
    let key = headers
        .get("sec-websocket-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let v5 = proto.starts_with("v5");
    let mut request = req.request;
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(&mut request).await else {
            return;
        };
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        run(ws, running, command, stdin, stdout, stderr || tty, tty, v5).await;
    });
    Ok(hyper::Response::builder()
        .status(101)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-accept", accept)
        .header("sec-websocket-protocol", proto)
        .body(Full::new(Bytes::new()).boxed())
        .expect("response"))
}

#[allow(clippy::too_many_arguments)]
async fn run<S>(
    ws: tokio_tungstenite::WebSocketStream<S>,
    r: super::kubelet::Running,
    command: Vec<String>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
    v5: bool,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let mut cmd = nsenter(&r, &command);
    cmd.stdin(if stdin {
        std::process::Stdio::piped()
    } else {
        std::process::Stdio::null()
    })
    .stdout(if stdout {
        std::process::Stdio::piped()
    } else {
        std::process::Stdio::null()
    })
    .stderr(if stderr {
        std::process::Stdio::piped()
    } else {
        std::process::Stdio::null()
    })
    .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let st = json!({"metadata": {}, "status": "Failure", "message": format!("failed to exec in container: {e}"), "reason": "InternalError", "code": 500});
            let mut m = vec![3u8];
            m.extend(serde_json::to_vec(&st).unwrap_or_default());
            let _ = sink.send(Message::binary(m)).await;
            let _ = sink.close().await;
            return;
        }
    };
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<(u8, Vec<u8>)>(16);
    let mut readers = Vec::new();
    if let Some(mut o) = child.stdout.take() {
        let tx = out_tx.clone();
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = o.read(&mut buf).await {
                if n == 0 || tx.send((1, buf[..n].to_vec())).await.is_err() {
                    break;
                }
            }
        }));
    }
    if let Some(mut e) = child.stderr.take() {
        let tx = out_tx.clone();
        let ch = if tty { 1 } else { 2 };
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = e.read(&mut buf).await {
                if n == 0 || tx.send((ch, buf[..n].to_vec())).await.is_err() {
                    break;
                }
            }
        }));
    }
    drop(out_tx);
    let mut child_in = child.stdin.take();
    // Client -> stdin.
    let input = tokio::spawn(async move {
        while let Some(msg) = stream.next().await {
            let Ok(msg) = msg else { break };
            let data = match msg {
                Message::Binary(b) => b.to_vec(),
                Message::Close(_) => break,
                _ => continue,
            };
            if data.is_empty() {
                continue;
            }
            match data[0] {
                0 => {
                    if let Some(w) = child_in.as_mut() {
                        if w.write_all(&data[1..]).await.is_err() {
                            child_in = None;
                        }
                    }
                }
                255 if v5 && data.get(1) == Some(&0) => {
                    if let Some(mut w) = child_in.take() {
                        let _ = w.shutdown().await;
                    }
                }
                _ => {}
            }
        }
        drop(child_in);
    });
    while let Some((ch, data)) = out_rx.recv().await {
        let mut m = Vec::with_capacity(data.len() + 1);
        m.push(ch);
        m.extend_from_slice(&data);
        if sink.send(Message::binary(m)).await.is_err() {
            break;
        }
    }
    let status = child.wait().await;
    let code = status
        .as_ref()
        .ok()
        .and_then(|s| {
            s.code()
                .or_else(|| std::os::unix::process::ExitStatusExt::signal(s).map(|x| 128 + x))
        })
        .unwrap_or(1);
    let st = if code == 0 {
        json!({"metadata": {}, "status": "Success"})
    } else {
        json!({"metadata": {}, "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}})
    };
    let mut m = vec![3u8];
    m.extend(serde_json::to_vec(&st).unwrap_or_default());
    let _ = sink.send(Message::binary(m)).await;
    let _ = sink.close().await;
    input.abort();
}
