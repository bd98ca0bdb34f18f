//! Opening with an access key hashes no password: shown by the process's count of
//! Argon2id runs, not by timing. Alone in its test binary, so no other test's password
//! hashing runs in the same process.

use dprepo_repo_format::key::password_hashes;
use dprepo_repo_format::repo::IndexPlace;
use dprepo_repo_format::storage::{MemoryStorage, Storage};
use dprepo_repo_format::{InitOptions, Repository};
use std::sync::Arc;

#[path = "support/common.rs"]
mod common;
use common::FAST_KDF;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_with_an_access_key_runs_no_argon2() {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let repo = Repository::init(
        storage.clone(),
        b"pw",
        InitOptions::default().with_kdf(FAST_KDF),
    )
    .await
    .unwrap();
    // Several password key files, as a repository with a few users has.
    repo.add_password(b"pw2", FAST_KDF).await.unwrap();
    repo.add_password(b"pw3", FAST_KDF).await.unwrap();
    let key = repo.add_access_key("pods").await.unwrap();

    let before = password_hashes();
    for _ in 0..3 {
        Repository::open_with_access_key(storage.clone(), &key, &IndexPlace::Memory)
            .await
            .unwrap();
    }
    assert_eq!(
        password_hashes(),
        before,
        "an access key open hashed a password"
    );

    // The counter does count: a password open hashes at least once.
    Repository::open(storage.clone(), b"pw3").await.unwrap();
    assert!(password_hashes() > before);
}
