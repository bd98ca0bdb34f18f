//! Writer sessions: how a backup tells garbage collection which blobs it may reference.
//!
//! Protocol (SPEC.md, "Garbage collection protocol"), writer side:
//! 1. create `sessions/<random id>` with `ready = false` (blocks every tombstone);
//! 2. list `gc/` and read every tombstone; their packs are excluded from deduplication
//!    and from reuse of unchanged files, so this writer never references them;
//! 3. rewrite the marker with `ready = true` and `seen_tombstones` = those names;
//! 4. rewrite it every [`HEARTBEAT_INTERVAL`] so gc can tell a live writer from a
//!    crashed one; every rewrite is an update naming the version written last, so a
//!    heartbeat that stalled while gc removed the marker fails instead of re-creating
//!    it, and the session stops;
//! 5. before the manifest, check the marker still exists (gc deletes markers whose
//!    heartbeat is stale; such a writer must not commit), write the manifest, delete
//!    the marker.

use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::manifest::{SessionMarker, Tombstone};
use crate::repo::{newer_generation_check, Repository};
use crate::storage::{Bytes, PutMode, Version};
use chacha20poly1305::aead::{rand_core::RngCore, OsRng};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use crate::layout::TOMBSTONES_DIR;
/// How often a live writer rewrites its session marker.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(120);

/// A running writer session.
#[derive(Debug)]
pub struct WriterSession {
    name: String,
    repo: Repository,
    marker: Arc<Mutex<SessionMarker>>,
    /// The version of the marker this session wrote last; held across each rewrite.
    version: Arc<tokio::sync::Mutex<Version>>,
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
        // A handle of a retired generation must not even write its marker: after
        // `finish` no key opens it, and it would hold gc back until it ages out. (A
        // rotation committing between this check and S-1 is caught by S-2b below.)
        newer_generation_check(repo).await?;
        let mut random = [0u8; 16];
        OsRng.fill_bytes(&mut random);
        let name = crate::layout::session(&random);
        let now = chrono::Utc::now();
        let me = crate::liveness::Holder::current();
        let mut marker = SessionMarker {
            hostname: me.hostname,
            pid: me.pid,
            pid_namespace: me.pid_namespace,
            boot_id: me.boot_id,
            started: now,
            command: command.to_string(),
            heartbeat: now,
            ready: false,
            seen_tombstones: Vec::new(),
            key_generation: Some(repo.key_generation()),
        };
        let version = repo
            .storage()
            .put_opts(
                &name,
                Bytes::from(marker.encode(repo.keys())),
                PutMode::Create,
            )
            .await?;
        let tombstones = match newer_generation_check(repo).await {
            Ok(()) => load_tombstones(repo).await,
            Err(e) => Err(e),
        };
        let tombstones = match tombstones {
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
        let version = repo
            .storage()
            .put_opts(
                &name,
                Bytes::from(marker.encode(repo.keys())),
                PutMode::Update(version),
            )
            .await
            .map_err(|e| removed_if_conflict(&name, e))?;
        let marker = Arc::new(Mutex::new(marker));
        let version = Arc::new(tokio::sync::Mutex::new(version));
        let heartbeat = tokio::spawn(heartbeat_loop(
            repo.clone(),
            name.clone(),
            marker.clone(),
            version.clone(),
        ));
        Ok((
            WriterSession {
                name,
                repo: repo.clone(),
                marker,
                version,
                heartbeat,
            },
            excluded,
        ))
    }

    /// Fail if gc removed this session (its heartbeat went stale): the writer must not
    /// commit then, since gc may have deleted packs it references.
    ///
    /// # Errors
    /// [`Error::SessionRemoved`] if the marker is gone or is no longer the one this
    /// session wrote.
    pub async fn check_alive(&self) -> Result<()> {
        let version = self.version.lock().await;
        match self.repo.storage().head(&self.name).await {
            Ok(meta) if meta.version == *version => Ok(()),
            Ok(_) | Err(Error::NotFound { .. }) => Err(session_removed(&self.name)),
            Err(e) => Err(e),
        }
    }

    /// Rewrite the marker with a fresh heartbeat now (the background task does this
    /// every [`HEARTBEAT_INTERVAL`]). The rewrite names the version this session wrote
    /// last, so a marker gc removed (or anyone changed) stays as it is.
    ///
    /// # Errors
    /// The error of [`WriterSession::check_alive`] if the marker was removed or
    /// changed; storage errors.
    pub async fn beat(&self) -> Result<()> {
        beat(&self.repo, &self.name, &self.marker, &self.version).await
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

/// The error of a session whose marker is gone (or no longer the one it wrote).
fn session_removed(name: &str) -> Error {
    Error::SessionRemoved {
        session: name.to_owned(),
    }
}

fn removed_if_conflict(name: &str, e: Error) -> Error {
    match e {
        Error::Conflict { .. } => session_removed(name),
        e => e,
    }
}

async fn beat(
    repo: &Repository,
    name: &str,
    marker: &Mutex<SessionMarker>,
    version: &tokio::sync::Mutex<Version>,
) -> Result<()> {
    let mut version = version.lock().await;
    let bytes = {
        let mut m = marker.lock().unwrap_or_else(|e| e.into_inner());
        m.heartbeat = chrono::Utc::now();
        m.encode(repo.keys())
    };
    *version = repo
        .storage()
        .put_opts(name, Bytes::from(bytes), PutMode::Update(version.clone()))
        .await
        .map_err(|e| removed_if_conflict(name, e))?;
    Ok(())
}

async fn heartbeat_loop(
    repo: Repository,
    name: String,
    marker: Arc<Mutex<SessionMarker>>,
    version: Arc<tokio::sync::Mutex<Version>>,
) {
    loop {
        tokio::time::sleep(HEARTBEAT_INTERVAL).await;
        match beat(&repo, &name, &marker, &version).await {
            Ok(()) => {}
            // Removed: it stays removed, and the commit check fails.
            Err(Error::SessionRemoved { .. }) => return,
            // A storage failure: the next beat tries again.
            Err(_) => {}
        }
    }
}
