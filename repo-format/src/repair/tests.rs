//! Unit tests of repair.

use super::*;
use crate::blob::BlobType;
use crate::verify::tests::{memory_repo, save_pages};
use std::sync::Arc;

/// A delta is checked without its base: when its base is the damaged blob, the
/// delta itself is intact and stays (a backup no longer offers it, its base being
/// unindexed); a damaged delta is dropped like any blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_are_judged_by_their_own_bytes() {
    let (storage, repo) = memory_repo().await;
    let page = |seed| crate::fuzzing::pseudo_random_bytes(seed, 8192);
    let bases = vec![page(1), page(2)];
    let edited: Vec<Vec<u8>> = bases
        .iter()
        .map(|b| {
            let mut p = b.clone();
            p[300..340].fill(9);
            p
        })
        .collect();
    save_pages(&repo, bases.clone(), None).await;
    save_pages(&repo, edited.clone(), Some(bases.clone())).await;
    let id = |p: &[u8]| repo.keys().content_id(p);
    let (base_loc, delta_loc) = (
        repo.locate(&id(&bases[0])).unwrap(),
        repo.locate(&id(&edited[1])).unwrap(),
    );
    assert_ne!(base_loc.pack_id, delta_loc.pack_id);
    assert!(delta_loc.base.is_some());
    // Damage base 0, and delta 1.
    storage.corrupt_byte(&base_loc.pack_name(), base_loc.offset as usize + 50);
    storage.corrupt_byte(&delta_loc.pack_name(), delta_loc.offset as usize + 30);

    let report = repair_packs(&repo, &RepairPacksOptions::default(), Arc::default())
        .await
        .unwrap();
    let mut dropped: Vec<String> = report
        .damaged
        .iter()
        .flat_map(|d| d.dropped.iter().map(|b| b.id.clone()))
        .collect();
    dropped.sort();
    let mut expected = vec![id(&bases[0]).to_hex(), id(&edited[1]).to_hex()];
    expected.sort();
    assert_eq!(dropped, expected, "{report:?}");
    assert_eq!(report.damaged.len(), 2);
    // Kept: base 1 (moved), and delta 0 whose own bytes are intact.
    assert!(
        repo.read_blob(&id(&bases[1]), BlobType::Data)
            .await
            .unwrap()
            == bases[1]
    );
    assert!(repo.locate(&id(&edited[0])).is_some());
    let usable = repo.usable_many(&[id(&edited[0]), id(&bases[1])]);
    assert_eq!(
        usable,
        [false, true],
        "a delta without its base is not offered"
    );
    assert!(repo.locate(&id(&bases[0])).is_none());
    assert!(repo.locate(&id(&edited[1])).is_none());
}
