//! Writer sessions: how a backup tells garbage collection which blobs it may reference.
//!
//! Protocol (SPEC.md, "Garbage collection protocol"), writer side:
//! 1. create `sessions/<random id>` with `ready = false` (blocks every tombstone);
//! 2. list `gc/` and read every tombstone; their packs are excluded from deduplication
//!    and from reuse of unchanged files, so this writer never references them;
//! 3. rewrite the marker with `ready = true` and `seen_tombstones` = those names;
//! 4. rewrite it every [`HEARTBEAT_INTERVAL`] so gc can tell a live writer from a
//!    crashed one;
//! 5. before the manifest, check the marker still exists (gc deletes markers whose
//!    heartbeat is stale; such a writer must not commit), write the manifest, delete
//!    the marker.

use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::manifest::{SessionMarker, Tombstone};
use crate::repo::{current_hostname, Repository, SESSIONS_DIR};
use chacha20poly1305::aead::{rand_core::RngCore, OsRng};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Directory of gc tombstones.
pub const TOMBSTONES_DIR: &str = "gc/";
/// How often a live writer rewrites its session marker.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(120);

/// A running writer session.
#[derive(Debug)]
pub struct WriterSession {
    name: String,
    repo: Repository,
    marker: Arc<Mutex<SessionMarker>>,
    heartbeat: tokio::task::JoinHandle<()>,
}

/// Every tombstone in the repository: names and the packs they list.
///
/// # Errors
/// Storage errors; [`Error::Corrupt`] for a tombstone that does not decode.
pub async fn load_tombstones(repo: &Repository) -> Result<Vec<(String, Tombstone)>> {
    let mut out = Vec::new();
    for info in repo.storage().list(TOMBSTONES_DIR).await? {
        let bytes = match repo.storage().get(&info.name).await {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => continue, // processed by a gc meanwhile
            Err(e) => return Err(e),
        };
        out.push((
            info.name.clone(),
            Tombstone::decode(repo.keys(), &bytes, &info.name)?,
        ));
    }
    Ok(out)
}

impl WriterSession {
    /// Start a session (steps 1-4 above). Returns the session and the packs the writer
    /// must not reference.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn start(
        repo: &Repository,
        command: &str,
    ) -> Result<(WriterSession, HashSet<BlobId>)> {
        let mut random = [0u8; 16];
        OsRng.fill_bytes(&mut random);
        let name = format!(
            "{SESSIONS_DIR}{}",
            random
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let now = chrono::Utc::now();
        let mut marker = SessionMarker {
            hostname: current_hostname(),
            pid: std::process::id(),
            started: now,
            command: command.to_string(),
            heartbeat: now,
            ready: false,
            seen_tombstones: Vec::new(),
        };
        repo.storage()
            .create(&name, &marker.encode(repo.keys()))
            .await?;
        let tombstones = match load_tombstones(repo).await {
            Ok(t) => t,
            Err(e) => {
                let _ = repo.storage().delete(&name).await;
                return Err(e);
            }
        };
        let excluded: HashSet<BlobId> = tombstones
            .iter()
            .flat_map(|(_, t)| t.packs.iter().map(|p| p.id))
            .collect();
        marker.ready = true;
        marker.seen_tombstones = tombstones.into_iter().map(|(n, _)| n).collect();
        marker.heartbeat = chrono::Utc::now();
        repo.storage()
            .put(&name, &marker.encode(repo.keys()))
            .await?;
        let marker = Arc::new(Mutex::new(marker));
        let heartbeat = tokio::spawn(heartbeat_loop(repo.clone(), name.clone(), marker.clone()));
        Ok((
            WriterSession {
                name,
                repo: repo.clone(),
                marker,
                heartbeat,
            },
            excluded,
        ))
    }

    /// Fail if gc removed this session (its heartbeat went stale): the writer must not
    /// commit then, since gc may have deleted packs it references.
    ///
    /// # Errors
    /// [`Error::Internal`] naming the session if the marker is gone.
    pub async fn check_alive(&self) -> Result<()> {
        match self.repo.storage().size(&self.name).await {
            Ok(_) => Ok(()),
            Err(Error::NotFound { .. }) => Err(Error::Internal(format!(
                "writer session {} was removed by garbage collection (no heartbeat for too long); nothing was committed, run the backup again",
                self.name
            ))),
            Err(e) => Err(e),
        }
    }

    /// End the session: stop heartbeats and delete the marker.
    pub async fn end(self) {
        self.heartbeat.abort();
        let _ = self.heartbeat.await;
        let _ = self.repo.storage().delete(&self.name).await;
    }

    /// Storage name of the marker.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A copy of the current marker.
    pub fn marker(&self) -> SessionMarker {
        self.marker
            .lock()
            .map(|m| m.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }
}

async fn heartbeat_loop(repo: Repository, name: String, marker: Arc<Mutex<SessionMarker>>) {
    loop {
        tokio::time::sleep(HEARTBEAT_INTERVAL).await;
        let bytes = {
            let mut m = marker.lock().unwrap_or_else(|e| e.into_inner());
            m.heartbeat = chrono::Utc::now();
            m.encode(repo.keys())
        };
        // Only refresh a marker that still exists: a removed session stays removed.
        if repo.storage().size(&name).await.is_ok() {
            let _ = repo.storage().put(&name, &bytes).await;
        }
    }
}
