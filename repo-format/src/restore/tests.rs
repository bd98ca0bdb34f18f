//! Unit tests of restore.

use super::*;
use crate::backup::{backup, BackupOptions, BackupProgress, BackupSource};

/// `restore --verify` compares a restored file with the snapshot byte for byte: a
/// copy that differs in one byte, is shorter or is longer is reported.
#[tokio::test(flavor = "multi_thread")]
async fn verify_file_finds_a_differing_short_or_long_copy() {
    let (_storage, repo) = crate::verify::tests::memory_repo().await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    let outcome = backup(
        &repo,
        BackupSource::Paths(vec![src.clone()]),
        BackupOptions::default(),
        Arc::new(BackupProgress::default()),
    )
    .await
    .unwrap();
    let node = repo
        .find_node(
            &outcome.snapshot.manifest.tree,
            src.to_str().unwrap().as_bytes(),
        )
        .await
        .unwrap()
        .unwrap();
    let copy = dir.path().join("copy");
    std::fs::write(&copy, &data).unwrap();
    verify_file(&repo, &copy, &node).await.unwrap();

    let mut changed = data.clone();
    changed[200_000] ^= 1;
    std::fs::write(&copy, &changed).unwrap();
    let e = verify_file(&repo, &copy, &node).await.unwrap_err();
    assert!(e.to_string().contains("at byte 200000"), "{e}");

    std::fs::write(&copy, &data[..1000]).unwrap();
    let e = verify_file(&repo, &copy, &node).await.unwrap_err();
    assert!(e.to_string().contains("at byte 1000"), "{e}");

    let mut longer = data.clone();
    longer.push(0);
    std::fs::write(&copy, &longer).unwrap();
    let e = verify_file(&repo, &copy, &node).await.unwrap_err();
    assert!(e.to_string().contains("longer"), "{e}");
}
