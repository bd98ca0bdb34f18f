//! Forgetting snapshots: deleting or rewriting their manifests.

use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::repo::{Repository, Snapshot};

/// Remove snapshots (delete their manifests). Data is freed by the next gc.
///
/// # Errors
/// Storage errors.
pub async fn forget_snapshots(repo: &Repository, ids: &[BlobId]) -> Result<()> {
    for id in ids {
        repo.storage().delete(&crate::layout::snapshot(id)).await?;
    }
    Ok(())
}

/// Remove snapshot files that cannot be read (damaged manifests, by storage name
/// `snapshots/<name>` as [`Repository::list_snapshots_checked`] reports them): without
/// a readable manifest there is nothing to forget by id, and gc refuses to run while
/// they exist.
///
/// # Errors
/// [`Error::InvalidArgument`] for a name outside `snapshots/`; storage errors.
pub async fn forget_snapshot_files(repo: &Repository, names: &[String]) -> Result<()> {
    for name in names {
        let file = name.strip_prefix(crate::repo::SNAPSHOTS_DIR).unwrap_or("");
        if file.is_empty() || file.contains('/') {
            return Err(Error::InvalidArgument(format!(
                "{name} is not a snapshot file"
            )));
        }
        repo.storage().delete(name).await?;
    }
    Ok(())
}

/// Write a copy of `snap` with a new expiration time, then delete the original.
/// Returns the new snapshot (manifests are content-addressed, so the id changes).
///
/// # Errors
/// As [`rewrite_manifest`].
pub async fn set_expiry(
    repo: &Repository,
    snap: &Snapshot,
    expires: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Snapshot> {
    rewrite_manifest(repo, snap, "snapshot-expire", |m| m.expires = expires).await
}

/// Write a copy of `snap`'s manifest changed by `change` (expiry, tags), with
/// `original` naming the first snapshot of the chain, then delete the old manifest.
/// Returns the new snapshot; an unchanged manifest keeps its id and file.
///
/// The new manifest is written inside a writer session, as a backup writes its own
/// (SPEC.md section 15): a gc listing snapshots while the old file is deleted and the
/// new one written cannot miss both, because the session holds its deletions back.
///
/// # Errors
/// Storage errors; the session's error when it expired (gc saw no heartbeat)
/// before the manifest could be written (nothing is changed then).
pub async fn rewrite_manifest(
    repo: &Repository,
    snap: &Snapshot,
    command: &str,
    change: impl FnOnce(&mut crate::manifest::SnapshotManifest),
) -> Result<Snapshot> {
    let mut manifest = snap.manifest.clone();
    change(&mut manifest);
    if manifest == snap.manifest {
        return Ok(snap.clone());
    }
    manifest.original = Some(manifest.original.unwrap_or(snap.id));
    let bytes = manifest.encode(repo.keys());
    let id = BlobId::of_stored(&bytes);
    let (session, _tombstoned) = crate::session::WriterSession::start(repo, command).await?;
    let written = async {
        session.check_alive().await?;
        repo.storage()
            .put(&crate::layout::snapshot(&id), &bytes)
            .await
    }
    .await;
    session.end().await;
    written?;
    if id != snap.id {
        forget_snapshots(repo, &[snap.id]).await?;
    }
    Ok(Snapshot { id, manifest })
}
