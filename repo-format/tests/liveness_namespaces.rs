//! A writer on this host but in another PID namespace (a container with the same
//! hostname, a restarted pod) is not declared dead because its pid is not running in
//! ours. gc used to remove such a writer's session marker as stale at once (same
//! hostname, no `/proc/<pid>`), unblocking tombstones the live writer had not seen.
//!
//! Needs root for `unshare -p -f --mount-proc`; fails, saying so, without it.

use dprepo_repo_format::gc::{self, GcOptions};
use dprepo_repo_format::liveness::Holder;
use dprepo_repo_format::manifest::SessionMarker;
use dprepo_repo_format::session::WriterSession;
use dprepo_repo_format::storage::{LocalStorage, Storage};
use dprepo_repo_format::{InitOptions, Repository};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/common.rs"]
mod common;
use common::FAST_KDF;

/// Set for the child: the repository to open.
const CHILD_REPO: &str = "DPREPO_LIVENESS_CHILD_REPO";
const PASSWORD: &[u8] = b"pw";

fn wait_for_file(path: &Path, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if !text.is_empty() {
                return text;
            }
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A pid not running in this namespace, for the child to get in its own.
fn free_pid() -> u32 {
    let max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768);
    (max / 2..max - 1)
        .rev()
        .find(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        .expect("a free pid")
}

/// The child's side: hold a writer session until the parent says it is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by a_writer_in_another_pid_namespace_with_our_hostname_is_not_declared_dead"]
async fn child_holds_a_session() {
    let Ok(repo_dir) = std::env::var(CHILD_REPO) else {
        return;
    };
    let repo_dir = PathBuf::from(repo_dir);
    let repo = Repository::open(Arc::new(LocalStorage::new(repo_dir.join("repo"))), PASSWORD)
        .await
        .unwrap();
    let (session, _) = WriterSession::start(&repo, "backup").await.unwrap();
    std::fs::write(repo_dir.join("ready"), session.name()).unwrap();
    tokio::task::spawn_blocking(move || wait_for_file(&repo_dir.join("done"), "the parent"))
        .await
        .unwrap();
    session.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_in_another_pid_namespace_with_our_hostname_is_not_declared_dead() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(dir.path().join("repo"));
    let repo = Repository::init(
        Arc::new(storage.clone()),
        PASSWORD,
        InitOptions::default().with_kdf(FAST_KDF),
    )
    .await
    .unwrap();
    // The child gets a pid that runs nothing here, in a PID namespace of its own.
    let pid = free_pid();
    let exe = std::env::current_exe().unwrap();
    let script = format!(
        "echo {} > /proc/sys/kernel/ns_last_pid && \"$0\" \"$@\"",
        pid - 1
    );
    let mut child = Command::new("unshare")
        .args(["-p", "-f", "--mount-proc", "sh", "-c", &script])
        .arg(&exe)
        .args([
            "child_holds_a_session",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_REPO, dir.path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run unshare ({e}): this test needs util-linux's unshare and root")
        });
    let ready = dir.path().join("ready");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the writer in a new PID namespace exited early ({status}): \
                 `unshare -p -f --mount-proc` needs root (CAP_SYS_ADMIN)"
            );
        }
        assert!(
            Instant::now() < deadline,
            "the child never started its session"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let name = wait_for_file(&ready, "the session name");
    let marker =
        SessionMarker::decode(repo.keys(), &storage.get(&name).await.unwrap(), &name).unwrap();
    let here = Holder::current();
    assert_eq!(marker.hostname, here.hostname);
    assert_eq!(
        marker.pid, pid,
        "the child did not get the pid chosen for it"
    );
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert_ne!(marker.pid_namespace, here.pid_namespace);
    assert_eq!(marker.boot_id, here.boot_id);
    // The rule before namespaces were recorded would have called it dead.
    let without_namespace = Holder {
        pid_namespace: None,
        boot_id: None,
        ..marker.holder()
    };
    assert!(
        without_namespace.is_dead(),
        "precondition: the old rule says dead"
    );
    assert!(!marker.holder().is_dead(), "a live writer declared dead");

    // gc keeps its session.
    let (_, report) = gc::run(&repo, &GcOptions::default()).await.unwrap();
    std::fs::write(dir.path().join("done"), "done").unwrap();
    let status = child.wait().unwrap();
    assert!(
        report.stale_sessions_removed.is_empty(),
        "gc removed the live writer's session: {:?}",
        report.stale_sessions_removed
    );
    assert!(status.success(), "the child failed: {status}");
    // It ended its session itself.
    assert!(storage.list("sessions/").await.unwrap().is_empty());
}
