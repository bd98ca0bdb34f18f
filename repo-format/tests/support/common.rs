//! Helpers shared by the repository test files (`#[path = "support/common.rs"] mod common;`).

#![allow(dead_code)]

use dprepo_repo_format::backup::{backup, BackupOptions, BackupProgress, BackupSource};
/// `len` pseudo-random bytes (xorshift), the same for the same seed.
#[allow(unused_imports)] // not every test file uses it
pub use dprepo_repo_format::fuzzing::pseudo_random_bytes as xorshift_bytes;
use dprepo_repo_format::key::KdfParams;
use dprepo_repo_format::restore::{restore, RestoreOptions, RestoreProgress};
use dprepo_repo_format::{Repository, Snapshot};
use std::path::Path;
use std::sync::Arc;

/// A key derivation cheap enough for tests (never for real repositories).
pub const FAST_KDF: KdfParams = KdfParams::CHEAPEST;

/// Back up directory `dir`; panics on failure.
pub async fn run_backup(repo: &Repository, dir: &Path) -> Snapshot {
    backup(
        repo,
        BackupSource::Paths(vec![dir.to_path_buf()]),
        BackupOptions::default(),
        Arc::new(BackupProgress::default()),
    )
    .await
    .unwrap()
    .snapshot
}

/// Restore `dir` from `snap` into a fresh temporary directory; panics naming the
/// snapshot if it does not restore.
pub async fn restore_to_tempdir(
    repo: &Repository,
    snap: &Snapshot,
    dir: &Path,
) -> tempfile::TempDir {
    let target = tempfile::tempdir().unwrap();
    let summary = restore(
        repo,
        &snap.manifest.tree,
        dir.as_os_str().as_encoded_bytes(),
        target.path(),
        &RestoreOptions::default(),
        Arc::new(RestoreProgress::default()),
    )
    .await
    .unwrap_or_else(|e| panic!("snapshot {} does not restore: {e}", snap.id.short()));
    assert!(
        summary.is_complete(),
        "snapshot {} restores only in part: {:?}",
        snap.id.short(),
        summary.errors
    );
    target
}

/// Restore `dir` from `snap` into a fresh directory and compare every file of `dir`.
pub async fn assert_restores(repo: &Repository, snap: &Snapshot, dir: &Path) {
    let target = restore_to_tempdir(repo, snap, dir).await;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let restored = target.path().join(entry.file_name());
        assert!(
            std::fs::read(entry.path()).unwrap() == std::fs::read(&restored).unwrap(),
            "{} differs",
            entry.path().display()
        );
    }
}
