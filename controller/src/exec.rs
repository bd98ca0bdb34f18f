//! `dprepo-controller exec`: what the Job of an Exec action runs (in place of KubeBlocks'
//! `kubectl -n NS exec POD -c C -- CMD`): the command in the target pod's container
//! through the `pods/exec` API, as the Job's service account (the exec worker).
//!
//! Why a Job and not the controller itself: the outcome of a Job outlives the controller
//! (a restart mid-exec loses nothing: the Job still ends, and its status and logs say
//! how), a long command ties up no reconcile worker, `timeout` becomes the Job's
//! `activeDeadlineSeconds` as well as this command's own deadline, and `pods/exec`
//! stays a right of the exec worker's service account in the controller's namespace,
//! not of the controller.
//!
//! Contract:
//! - the command's stdout and stderr are copied to this process's (the Job's log, which
//!   the controller quotes in `failureReason`);
//! - the exit status is the remote command's (the status channel's `ExitCode` cause);
//!   a command that could not start (no such container, not running, refused) exits 1
//!   with the API server's message; a deadline that passes exits 124, as `timeout(1)`;
//! - with `--forward-env PREFIX`, the variables of this process whose names start with
//!   PREFIX (`DP_`) reach the command: they are sent over stdin (never in the request
//!   URL, where API server logs would keep a password) to a `sh` wrapper that exports
//!   them and `exec`s the command, then stdin is closed. Values with a newline cannot be
//!   sent that way and are left out with a warning.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Exit status for a command that ran past its deadline (as `timeout(1)`).
pub const TIMEOUT_EXIT: i32 = 124;

/// The wrapper that reads `NAME='value'` lines from stdin until an empty line, exports
/// them, and runs the command (`$@`).
pub const ENV_WRAPPER: &str = r#"while IFS= read -r dp_line && [ -n "$dp_line" ]; do eval "export $dp_line"; done; unset dp_line; exec "$@""#;

/// What to run.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Namespace of the target pod.
    pub namespace: String,
    /// The target pod.
    pub pod: String,
    /// Its container (empty: the first).
    pub container: String,
    /// Deadline for the whole command, if any.
    pub timeout: Option<Duration>,
    /// Prefix of the variables to hand to the command.
    pub forward_env: Option<String>,
    /// The command and its arguments.
    pub command: Vec<String>,
}

/// The `NAME='value'` lines sent to [`ENV_WRAPPER`] for `vars` (sorted by name), and the
/// names left out because their value has a newline.
pub fn env_lines(vars: impl IntoIterator<Item = (String, String)>) -> (String, Vec<String>) {
    let mut vars: Vec<(String, String)> = vars.into_iter().collect();
    vars.sort();
    let mut text = String::new();
    let mut skipped = Vec::new();
    for (name, value) in vars {
        let valid_name = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name || value.contains('\n') || value.contains('\r') {
            skipped.push(name);
            continue;
        }
        text.push_str(&name);
        text.push('=');
        text.push_str(&crate::builder::shell_quote(&value));
        text.push('\n');
    }
    text.push('\n');
    (text, skipped)
}

/// The command sent to the API server: `command` itself, or wrapped by
/// [`ENV_WRAPPER`] when variables are forwarded.
pub fn remote_command(command: &[String], forwarding: bool) -> Vec<String> {
    if !forwarding {
        return command.to_vec();
    }
    let mut out = vec![
        "sh".to_string(),
        "-c".into(),
        ENV_WRAPPER.into(),
        "sh".into(),
    ];
    out.extend(command.iter().cloned());
    out
}

/// The exit code a `pods/exec` status stands for: 0 on Success, the `ExitCode` cause on
/// `NonZeroExitCode`, else an error with the server's message.
///
/// # Errors
/// The command did not run to an exit code (container missing, not running, refused).
pub fn exit_code(
    status: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>,
) -> Result<i32> {
    let Some(s) = status else {
        bail!("the API server closed the exec stream without a status");
    };
    if s.status.as_deref() == Some("Success") {
        return Ok(0);
    }
    if s.reason.as_deref() == Some("NonZeroExitCode") {
        let code = s
            .details
            .as_ref()
            .and_then(|d| d.causes.as_ref())
            .and_then(|c| c.iter().find(|c| c.reason.as_deref() == Some("ExitCode")))
            .and_then(|c| c.message.as_deref())
            .and_then(|m| m.trim().parse::<i32>().ok());
        return match code {
            Some(c) => Ok(c),
            None => bail!(
                "the command failed without an exit code: {}",
                s.message.as_deref().unwrap_or("no message")
            ),
        };
    }
    bail!(
        "{}",
        s.message
            .clone()
            .or_else(|| s.reason.clone())
            .unwrap_or_else(|| "the exec failed without a message".into())
    )
}

/// Copies a stream of the command to this process's stdout (or stderr) as it comes.
async fn relay(from: &mut (impl tokio::io::AsyncRead + Unpin), to_stderr: bool) {
    use std::io::Write;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let chunk = &buf[..n];
                if to_stderr {
                    let mut e = std::io::stderr().lock();
                    e.write_all(chunk).ok();
                    e.flush().ok();
                } else {
                    let mut o = std::io::stdout().lock();
                    o.write_all(chunk).ok();
                    o.flush().ok();
                }
            }
        }
    }
}

/// Runs the command and returns its exit status.
///
/// # Errors
/// The API is unreachable or refuses the exec, or the command could not start.
pub async fn run(o: ExecOptions) -> Result<i32> {
    crate::run::install_crypto_provider();
    if o.command.is_empty() {
        bail!("no command given");
    }
    let client = kube::Client::try_default()
        .await
        .context("configuring the API client (the pod's service account, or KUBECONFIG)")?;
    let pods: Api<Pod> = Api::namespaced(client, &o.namespace);
    let forwarded: Vec<(String, String)> = match &o.forward_env {
        Some(prefix) => std::env::vars()
            .filter(|(k, _)| k.starts_with(prefix.as_str()))
            .collect(),
        None => Vec::new(),
    };
    let forwarding = !forwarded.is_empty();
    let command = remote_command(&o.command, forwarding);
    let mut params = AttachParams::default()
        .stdin(forwarding)
        .stdout(true)
        .stderr(true);
    if !o.container.is_empty() {
        params = params.container(o.container.clone());
    }
    eprintln!(
        "exec in pod {}/{} container {}: {}",
        o.namespace,
        o.pod,
        if o.container.is_empty() {
            "(first)"
        } else {
            &o.container
        },
        o.command.join(" ")
    );
    let work = async {
        let mut process = pods
            .exec(&o.pod, command, &params)
            .await
            .with_context(|| format!("exec in pod {}/{}", o.namespace, o.pod))?;
        if forwarding {
            let (text, skipped) = env_lines(forwarded);
            for name in skipped {
                eprintln!("warning: {name} not passed to the command (its value has a newline)");
            }
            if let Some(mut stdin) = process.stdin() {
                stdin
                    .write_all(text.as_bytes())
                    .await
                    .context("sending the environment")?;
                stdin.shutdown().await.ok();
                drop(stdin);
            }
        }
        let status = process
            .take_status()
            .context("the exec stream has no status channel")?;
        let mut stdout = process.stdout().context("no stdout stream")?;
        let mut stderr = process.stderr().context("no stderr stream")?;
        let copy_out = relay(&mut stdout, false);
        let copy_err = relay(&mut stderr, true);
        let (_, _, status) = tokio::join!(copy_out, copy_err, status);
        process.join().await.ok();
        exit_code(status.as_ref())
    };
    match o.timeout {
        Some(t) => match tokio::time::timeout(t, work).await {
            Ok(r) => r,
            Err(_) => {
                eprintln!(
                    "the command did not finish within its timeout of {}s",
                    t.as_secs()
                );
                Ok(TIMEOUT_EXIT)
            }
        },
        None => work.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};

    #[test]
    fn env_lines_quote_values_and_leave_out_newlines() {
        let (text, skipped) = env_lines([
            ("DP_DB_PASSWORD".to_string(), "it's $x".to_string()),
            ("DP_DB_HOST".to_string(), "db".to_string()),
            ("DP_BAD".to_string(), "a\nb".to_string()),
        ]);
        assert_eq!(text, "DP_DB_HOST='db'\nDP_DB_PASSWORD='it'\\''s $x'\n\n");
        assert_eq!(skipped, vec!["DP_BAD".to_string()]);
    }

    #[test]
    fn remote_command_wraps_only_when_forwarding() {
        let cmd = vec!["mariadb".to_string(), "-e".into(), "select 1".into()];
        assert_eq!(remote_command(&cmd, false), cmd);
        let wrapped = remote_command(&cmd, true);
        assert_eq!(&wrapped[..2], &["sh".to_string(), "-c".into()]);
        assert_eq!(&wrapped[4..], &cmd[..]);
    }

    #[test]
    fn the_wrapper_exports_what_stdin_says() {
        let (text, _) = env_lines([("DP_X".to_string(), "a b'c".to_string())]);
        let mut child = std::process::Command::new("sh")
            .args(["-c", ENV_WRAPPER, "sh", "sh", "-c", "printf %s \"$DP_X\""])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sh");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a b'c");
    }

    #[test]
    fn exit_codes_come_from_the_status_channel() {
        let ok = Status {
            status: Some("Success".into()),
            ..Default::default()
        };
        assert_eq!(exit_code(Some(&ok)).unwrap(), 0);
        let failed = Status {
            status: Some("Failure".into()),
            reason: Some("NonZeroExitCode".into()),
            message: Some("command terminated with non-zero exit code".into()),
            details: Some(StatusDetails {
                causes: Some(vec![StatusCause {
                    reason: Some("ExitCode".into()),
                    message: Some("3".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(exit_code(Some(&failed)).unwrap(), 3);
        let refused = Status {
            status: Some("Failure".into()),
            message: Some("container db not found".into()),
            ..Default::default()
        };
        assert!(exit_code(Some(&refused))
            .unwrap_err()
            .to_string()
            .contains("container db not found"));
        assert!(exit_code(None).is_err());
    }
}
