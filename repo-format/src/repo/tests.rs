use super::*;
use crate::storage::MemoryStorage;

const FAST_KDF: KdfParams = KdfParams::CHEAPEST;

/// Two `init`s racing on one repository both write a key; the one that loses the
/// race to create the config deletes its key afterwards, or never does if it dies
/// first. Meanwhile that key opens with the same password but wraps another master
/// key: `open` must go on to the key that opens the config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_passes_over_the_key_of_an_init_that_lost_the_race() {
    let storage = MemoryStorage::new();
    let shared: Arc<dyn Storage> = Arc::new(storage.clone());
    let winner = Repository::init(
        shared.clone(),
        b"pw",
        InitOptions::default().with_kdf(FAST_KDF),
    )
    .await
    .unwrap();
    let winner_key = shared.list(KEYS_DIR).await.unwrap().remove(0).name;
    // Named as init names it, and listed, so tried, before the winner's key.
    let (stray_name, stray) = loop {
        let stray =
            KeyFile::create(&MasterKey::generate(), b"pw", FAST_KDF, "loser", "me").unwrap();
        let name = crate::layout::key_file(&BlobId::of_stored(&stray));
        if name < winner_key {
            break (name, stray);
        }
    };
    shared.create(&stray_name, &stray).await.unwrap();

    let opened = Repository::open(shared.clone(), b"pw").await.unwrap();
    assert_eq!(opened.config().id, winner.config().id);
    assert!(matches!(
        Repository::open(shared.clone(), b"other").await,
        Err(Error::WrongKey)
    ));

    // With only the stray key left, the config does not open: that is an error
    // about the config, not a wrong password.
    for name in shared.list(KEYS_DIR).await.unwrap() {
        if name.name != stray_name {
            shared.delete(&name.name).await.unwrap();
        }
    }
    let err = Repository::open(shared, b"pw").await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}
