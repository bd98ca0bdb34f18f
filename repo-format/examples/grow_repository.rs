//! Grow a local repository to a given number of blobs, for memory benchmarks at
//! repository sizes no real backup here could reach (BENCHMARKS.md, "Index memory").
//!
//! Every added blob is a unique 64-byte data blob, stored, packed and indexed through the
//! same saver a backup uses; no snapshot references them (a gc would delete them).
//!
//! ```text
//! cargo run --release -p dprepo-repo-format --example grow_repository -- \
//!     REPO_DIR PASSWORD_FILE TARGET_BLOBS
//! ```
//! The repository is created if REPO_DIR holds none. Growing is resumable: blobs already
//! there count towards TARGET_BLOBS.

use dprepo_repo_format::blob::BlobType;
use dprepo_repo_format::repo::IndexPlace;
use dprepo_repo_format::saver::BlobSaver;
use dprepo_repo_format::storage::LocalStorage;
use dprepo_repo_format::{Error, InitOptions, Repository, Result};
use rayon::prelude::*;
use std::sync::Arc;

/// Blobs per saver session (bounds the saver's per-session set of new ids).
const SESSION_BLOBS: u64 = 1_000_000;

fn blob(n: u64) -> [u8; 64] {
    // Unique per n; the rest is filler that does not compress away entirely.
    let mut b = [0u8; 64];
    b[..8].copy_from_slice(&n.to_le_bytes());
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for chunk in b[8..].chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    b
}

async fn run(repo_dir: &str, password_file: &str, target: u64) -> Result<()> {
    let io = |path: &str| {
        let path = std::path::PathBuf::from(path);
        move |source| Error::LocalIo { path, source }
    };
    let password = std::fs::read(password_file).map_err(io(password_file))?;
    let password = password.strip_suffix(b"\n").unwrap_or(&password).to_vec();
    std::fs::create_dir_all(repo_dir).map_err(io(repo_dir))?;
    let storage = Arc::new(LocalStorage::new(repo_dir));
    if !std::path::Path::new(repo_dir).join("config").exists() {
        Repository::init(storage.clone(), &password, InitOptions::default()).await?;
    }
    let scratch = tempfile::tempdir().map_err(io("temporary directory"))?;
    let repo = Repository::open_with(
        storage,
        &password,
        &IndexPlace::Temporary(scratch.path().to_path_buf()),
    )
    .await?;
    let mut have = repo
        .index()
        .read()
        .map(|i| i.blob_count() as u64)
        .unwrap_or(0);
    eprintln!("{have} blobs in the repository, growing to {target}");
    while have < target {
        let batch = (target - have).min(SESSION_BLOBS);
        let (saver, uploader) = BlobSaver::start(
            repo.storage().clone(),
            repo.keys().clone(),
            repo.index().clone(),
            repo.config().pack_size,
            repo.config().compression_level,
            4,
        );
        let start = have;
        let saving = saver.clone();
        tokio::task::spawn_blocking(move || {
            (start..start + batch)
                .into_par_iter()
                .try_for_each(|n| saving.save(BlobType::Data, &blob(n)).map(|_| ()))?;
            saving.close()
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        drop(saver);
        uploader.finish().await?;
        have = repo
            .index()
            .read()
            .map(|i| i.blob_count() as u64)
            .unwrap_or(0);
        eprintln!("{have} blobs");
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [repo, password_file, target] = args.as_slice() else {
        eprintln!("usage: grow_repository REPO_DIR PASSWORD_FILE TARGET_BLOBS");
        return std::process::ExitCode::from(2);
    };
    let Ok(target) = target.parse::<u64>() else {
        eprintln!("TARGET_BLOBS must be a number");
        return std::process::ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("grow_repository: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(repo, password_file, target)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("grow_repository: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
