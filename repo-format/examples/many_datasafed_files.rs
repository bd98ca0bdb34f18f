//! Benchmark fixture: make a repository look like a datasafed WAL archive of N files
//! (BENCHMARKS.md, "datasafed calls with an access key"), fast. It copies the manifest of
//! the newest datasafed file already in the repository N times, each with its own path
//! tag (`/wal/<8-digit number>`) and time, so `datasafed list`/`stat` see N files while
//! all of them share one stored stream. Writes manifests directly (no writer session):
//! for benchmarks only.
//!
//! Usage: `many_datasafed_files REPOSITORY_DIR N` with DPREPO_ACCESS_KEY_FILE set.

use dprepo_repo_format::key::AccessKey;
use dprepo_repo_format::repo::IndexPlace;
use dprepo_repo_format::storage::{LocalStorage, Storage};
use dprepo_repo_format::{BlobId, Repository};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, n] = args.as_slice() else {
        return Err("usage: many_datasafed_files REPOSITORY_DIR N".into());
    };
    let n: u64 = n.parse()?;
    let key_file = std::env::var("DPREPO_ACCESS_KEY_FILE")?;
    let key = AccessKey::parse(&std::fs::read(key_file)?)?;
    let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(dir));
    let repo = Repository::open_with_access_key(storage.clone(), &key, &IndexPlace::Memory).await?;
    let template = repo
        .list_snapshots()
        .await?
        .into_iter()
        .rev()
        .find(|s| {
            s.manifest
                .tags
                .iter()
                .any(|t| t.starts_with("datasafed:path="))
        })
        .ok_or("push one file with datasafed first")?
        .manifest;
    let start = template.time - chrono::Duration::seconds(n as i64);
    let semaphore = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let mut m = template.clone();
        m.time = start + chrono::Duration::seconds(i as i64);
        m.tags = vec![
            "datasafed".into(),
            format!("datasafed:path=/wal/{i:08}"),
            "datasafed:codec=none".into(),
        ];
        m.stdin_name = Some(format!("{i:08}"));
        let bytes = m.encode(repo.keys());
        let storage = storage.clone();
        let permit = semaphore.clone().acquire_owned().await?;
        tasks.spawn(async move {
            let name = format!("snapshots/{}", BlobId::of_stored(&bytes).to_hex());
            let r = storage.put(&name, &bytes).await;
            drop(permit);
            r
        });
        while tasks.len() > 64 {
            if let Some(r) = tasks.join_next().await {
                r??;
            }
        }
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    println!("{n} files added");
    Ok(())
}
