//! Grow a local repository to a given number of blobs, for memory benchmarks at
//! repository sizes no real backup here could reach (BENCHMARKS.md, "Index memory").
//!
//! Every added blob is a unique 64-byte data blob, encoded and packed as a backup does,
//! in packs of the repository's pack size listed by index files of 100k blobs (the cap
//! gc compaction and the saver use). They are written directly, not through the saver:
//! the saver's dedup lookups against a cache of millions of blobs are what the benchmark
//! measures afterwards, not how the repository is made. No snapshot references them (a
//! gc would delete them).
//!
//! ```text
//! cargo run --release -p dprepo-repo-format --example grow_repository -- \
//!     REPO_DIR PASSWORD_FILE TARGET_BLOBS
//! ```
//! The repository is created if REPO_DIR holds none. Growing is resumable: blobs already
//! there count towards TARGET_BLOBS.

use dprepo_repo_format::blob::{encode_blob, BlobType};
use dprepo_repo_format::index::{IndexFile, IndexPack};
use dprepo_repo_format::pack::{PackBuilder, PackKind};
use dprepo_repo_format::repo::{IndexPlace, INDEX_DIR};
use dprepo_repo_format::storage::{Bytes, LocalStorage, PutMode};
use dprepo_repo_format::{BlobId, Error, InitOptions, Repository, Result};
use rayon::prelude::*;
use std::sync::Arc;

/// Blobs per index file written.
const BLOBS_PER_INDEX_FILE: u64 = 100_000;

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
    let storage = repo.storage().clone();
    while have < target {
        let end = (have + BLOBS_PER_INDEX_FILE).min(target);
        let keys = repo.keys().clone();
        let level = repo.config().compression_level;
        let pack_size = repo.config().pack_size as usize;
        let start = have;
        let packs = tokio::task::spawn_blocking(move || {
            let encoded: Vec<(BlobId, Vec<u8>)> = (start..end)
                .into_par_iter()
                .map(|n| {
                    let b = blob(n);
                    let id = keys.content_id(&b);
                    (id, encode_blob(&keys, BlobType::Data, &id, &b, level))
                })
                .collect();
            let mut packs = Vec::new();
            let mut builder = PackBuilder::new(PackKind::Data);
            for (id, stored) in &encoded {
                builder.add(BlobType::Data, *id, stored, 64);
                if builder.len() >= pack_size {
                    let full = std::mem::replace(&mut builder, PackBuilder::new(PackKind::Data));
                    packs.push(full.finish(&keys));
                }
            }
            if !builder.is_empty() {
                packs.push(builder.finish(&keys));
            }
            packs
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
        let mut listed = Vec::with_capacity(packs.len());
        for pack in packs {
            storage
                .put_opts(
                    &dprepo_repo_format::layout::pack(pack.kind, &pack.id),
                    Bytes::from(pack.bytes),
                    PutMode::Overwrite,
                )
                .await?;
            listed.push(IndexPack {
                id: pack.id,
                kind: pack.kind,
                entries: pack.entries,
            });
        }
        let file = IndexFile {
            obsoletes: Vec::new(),
            packs: listed,
        };
        let bytes = file.encode(repo.keys());
        let name = format!("{INDEX_DIR}{}", BlobId::of_stored(&bytes).to_hex());
        storage.put(&name, &bytes).await?;
        have = end;
        if have % 1_000_000 == 0 || have == target {
            eprintln!("{have} blobs");
        }
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
