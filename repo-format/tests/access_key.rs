//! Access keys (SPEC.md sections 5, 6 and 19): a repository opens with an access key
//! without hashing a password, and removing the access key file revokes it while the
//! password and the other keys keep opening the repository.

use dprepo_repo_format::key::{AccessKey, KeyKind};
use dprepo_repo_format::repo::IndexPlace;
use dprepo_repo_format::storage::{MemoryStorage, Storage};
use dprepo_repo_format::{Error, InitOptions, Repository};
use std::sync::Arc;

#[path = "support/common.rs"]
mod common;
use common::FAST_KDF;

async fn new_repository() -> (Arc<dyn Storage>, Repository) {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let repo = Repository::init(
        storage.clone(),
        b"pw",
        InitOptions::default().with_kdf(FAST_KDF),
    )
    .await
    .unwrap();
    (storage, repo)
}

async fn open_access(storage: &Arc<dyn Storage>, key: &AccessKey) -> Result<Repository, Error> {
    Repository::open_with_access_key(storage.clone(), key, &IndexPlace::Memory).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_access_key_is_refused_while_the_password_and_other_keys_still_open() {
    let (storage, repo) = new_repository().await;
    let first = repo.add_access_key("controller ns-a").await.unwrap();
    let second = repo.add_access_key("controller ns-b").await.unwrap();

    let opened = open_access(&storage, &first).await.unwrap();
    assert_eq!(opened.config().id, repo.config().id);
    assert_eq!(opened.opened_with(), first.key_name());
    // The text form, as a pod reads it from a Secret file, opens it too.
    let parsed = AccessKey::parse(format!("{}\n", first.to_text()).as_bytes()).unwrap();
    open_access(&storage, &parsed).await.unwrap();

    // Listed with their labels, beside the password.
    let files = Repository::key_files(&*storage).await.unwrap();
    let kinds: Vec<(KeyKind, String)> = files
        .iter()
        .map(|(_, f)| {
            let f = f.as_ref().unwrap();
            (f.kind, f.label.clone())
        })
        .collect();
    assert_eq!(kinds.len(), 3);
    assert_eq!(
        kinds
            .iter()
            .filter(|(k, _)| *k == KeyKind::Password)
            .count(),
        1
    );
    assert!(kinds.contains(&(KeyKind::Access, "controller ns-a".into())));

    // Revoke the first: it opens nothing any more; the password and the second do.
    repo.remove_key(&first.key_name()).await.unwrap();
    let err = open_access(&storage, &first).await.unwrap_err();
    assert!(matches!(err, Error::KeyRevoked { .. }), "{err}");
    assert!(err.to_string().contains("revoked"), "{err}");
    open_access(&storage, &second).await.unwrap();
    Repository::open(storage.clone(), b"pw").await.unwrap();
    // An access key is not a password.
    assert!(matches!(
        Repository::open(storage.clone(), second.to_text().as_bytes()).await,
        Err(Error::WrongKey)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_access_key_is_refused() {
    let (storage, repo) = new_repository().await;
    let key = repo.add_access_key("").await.unwrap();
    // Right key file, wrong secret.
    let text = key.to_text();
    let flipped = format!(
        "{}{}",
        &text[..text.len() - 1],
        if text.ends_with('0') { '1' } else { '0' }
    );
    let wrong = AccessKey::parse(flipped.as_bytes()).unwrap();
    assert!(matches!(
        open_access(&storage, &wrong).await,
        Err(Error::WrongKey)
    ));
    // A key of another repository names a key file this one does not have.
    let (_, other) = new_repository().await;
    let foreign = other.add_access_key("").await.unwrap();
    assert!(matches!(
        open_access(&storage, &foreign).await,
        Err(Error::KeyRevoked { .. })
    ));
    // A key file damaged in storage is reported as damaged, not as a wrong key.
    let mut bytes = storage.get(&key.key_name()).await.unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    storage.delete(&key.key_name()).await.unwrap();
    storage.create(&key.key_name(), &bytes).await.unwrap();
    let err = open_access(&storage, &key).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_removal_keeps_a_way_in() {
    let (storage, repo) = new_repository().await;
    let key = repo.add_access_key("").await.unwrap();
    let by_key = open_access(&storage, &key).await.unwrap();
    // Neither the key in use nor the last password can be removed.
    assert!(matches!(
        by_key.remove_key(&key.key_name()).await,
        Err(Error::InvalidArgument(_))
    ));
    let password_key = repo.opened_with().to_string();
    assert!(matches!(
        by_key.remove_key(&password_key).await,
        Err(Error::InvalidArgument(_))
    ));
    // With a second password, the first can go.
    by_key.add_password(b"pw2", FAST_KDF).await.unwrap();
    by_key.remove_key(&password_key).await.unwrap();
    assert!(matches!(
        Repository::open(storage.clone(), b"pw").await,
        Err(Error::WrongKey)
    ));
    Repository::open(storage.clone(), b"pw2").await.unwrap();
    assert!(matches!(
        by_key.remove_key("keys/nothing").await,
        Err(Error::NotFound { .. })
    ));
}

/// An operator keeps the secret and has a Job register it: running the Job again finds
/// the key file the secret opens instead of adding one per run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chosen_secret_registers_one_access_key_however_often_it_is_given() {
    let (storage, repo) = new_repository().await;
    let secret = [7u8; 32];
    let (key, created) = repo
        .access_key_for_secret(secret, "BackupRepo r")
        .await
        .unwrap();
    assert!(created);
    let (again, created_again) = repo.access_key_for_secret(secret, "other").await.unwrap();
    assert!(!created_again);
    assert_eq!(again.to_text(), key.to_text());
    open_access(&storage, &key).await.unwrap();
    // Another secret is another key; a revoked one is registered anew.
    let (other, created) = repo.access_key_for_secret([8u8; 32], "").await.unwrap();
    assert!(created && other.key_id() != key.key_id());
    repo.remove_key(&key.key_name()).await.unwrap();
    let (renewed, created) = repo.access_key_for_secret(secret, "").await.unwrap();
    assert!(created && renewed.key_id() != key.key_id());
    open_access(&storage, &renewed).await.unwrap();
    assert_eq!(Repository::key_files(&*storage).await.unwrap().len(), 3);
}
