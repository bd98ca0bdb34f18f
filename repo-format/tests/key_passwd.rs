//! `Repository::change_password` (`dprepo key passwd`, SPEC.md section 6): the new key
//! file is written and checked before the old one is deleted, so a failure at any step
//! leaves at least one password that opens the repository.

use dprepo_repo_format::repo::IndexPlace;
use dprepo_repo_format::storage::{FaultyStorage, MemoryStorage, Storage};
use dprepo_repo_format::{Error, InitOptions, Repository};
use std::sync::Arc;

#[path = "support/common.rs"]
mod common;
use common::FAST_KDF;

async fn open(storage: &Arc<dyn Storage>, pw: &[u8]) -> Result<Repository, Error> {
    Repository::open_with(storage.clone(), pw, &IndexPlace::Memory).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_key_passwd_leaves_a_password_that_opens() {
    let memory: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let faulty = FaultyStorage::new(memory.clone());
    let storage: Arc<dyn Storage> = Arc::new(faulty.clone());
    Repository::init(
        storage.clone(),
        b"old",
        InitOptions::default().with_kdf(FAST_KDF),
    )
    .await
    .unwrap();

    // The new key file's write fails: nothing changed, the old password opens.
    let mut repo = open(&storage, b"old").await.unwrap();
    faulty.fail_writes_after(Some(0));
    assert!(repo
        .change_password(b"new", FAST_KDF, "h", "u")
        .await
        .is_err());
    faulty.fail_writes_after(None);
    open(&storage, b"old").await.unwrap();
    assert!(matches!(open(&storage, b"new").await, Err(Error::WrongKey)));
    assert_eq!(storage.list("keys/").await.unwrap().len(), 1);

    // Killed between the two steps: the state is that of `key add`, both open.
    let added = repo
        .add_password_as(b"new", FAST_KDF, "h", "u")
        .await
        .unwrap();
    open(&storage, b"old").await.unwrap();
    open(&storage, b"new").await.unwrap();
    storage.delete(&added).await.unwrap();

    // The whole change: only the new password opens, and the handle counts the new key
    // file as the one in use.
    let name = repo
        .change_password(b"new", FAST_KDF, "h", "u")
        .await
        .unwrap();
    assert_eq!(repo.opened_with(), name);
    assert!(matches!(open(&storage, b"old").await, Err(Error::WrongKey)));
    assert_eq!(open(&storage, b"new").await.unwrap().opened_with(), name);
    assert_eq!(storage.list("keys/").await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_passwd_refuses_an_access_key_handle() {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let repo = Repository::init(
        storage.clone(),
        b"pw",
        InitOptions::default().with_kdf(FAST_KDF),
    )
    .await
    .unwrap();
    let key = repo.add_access_key("ops").await.unwrap();
    let mut by_key = Repository::open_with_access_key(storage.clone(), &key, &IndexPlace::Memory)
        .await
        .unwrap();
    let err = by_key
        .change_password(b"x", FAST_KDF, "h", "u")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert_eq!(storage.list("keys/").await.unwrap().len(), 2);
    // The key in use goes only with `allow_in_use`; the last password never.
    assert!(by_key.remove_key(&key.key_name()).await.is_err());
    let pw = repo.opened_with().to_string();
    assert!(by_key.remove_key_with(&pw, true).await.is_err());
    by_key.remove_key_with(&key.key_name(), true).await.unwrap();
    open(&storage, b"pw").await.unwrap();
}
