//! The conformance suite for the [`Storage`] trait, run against every backend.
//!
//! [`run_conformance`] checks the observable contract of `mod.rs` on an empty backend:
//! round trips, `NotFound`, range checks, listing by prefix (including thousands of
//! blobs), idempotent deletes, create-if-absent (also under concurrency), versions and
//! compare-and-swap updates (also under concurrency, and after a delete) and large
//! blobs. Backend-specific behaviour (file layout, temporary files) is tested below it.

use super::{BlobInfo, Bytes, LocalStorage, MemoryStorage, PutMode, Storage, Version};
use crate::error::Error;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::task::Poll;

/// Names every backend must reject with `InvalidArgument`.
const INVALID_NAMES: &[&str] = &[
    "",
    "/abs",
    "a//b",
    "a/",
    "..",
    "../x",
    "a/../b",
    ".",
    "a/./b",
    "a\\b",
    "a\0b",
    ".tmp-123",
    "data/.tmp-1-2-3",
];

/// Deterministic, incompressible-looking bytes (xorshift64).
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let take = (len - out.len()).min(8);
        out.extend_from_slice(&x.to_le_bytes()[..take]);
    }
    out
}

/// Poll all `futures` concurrently on the current task and return their outputs in
/// order. The suite takes `&dyn Storage`, so it cannot spawn `'static` tasks; backends
/// still run the calls in parallel (blocking pool, concurrent HTTP requests).
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future completed"))
        .collect()
}

/// The listing as a sorted name -> size map (listings come in any order).
async fn listing(s: &dyn Storage, prefix: &str) -> BTreeMap<String, u64> {
    let list = s
        .list(prefix)
        .await
        .unwrap_or_else(|e| panic!("list {prefix:?}: {e}"));
    let n = list.len();
    let map: BTreeMap<_, _> = list
        .into_iter()
        .map(|BlobInfo { name, size }| (name, size))
        .collect();
    assert_eq!(map.len(), n, "list {prefix:?} returned a name twice");
    map
}

fn expect_map(entries: &[(&str, u64)]) -> BTreeMap<String, u64> {
    entries
        .iter()
        .map(|&(name, size)| (name.to_owned(), size))
        .collect()
}

#[track_caller]
fn assert_not_found<T: std::fmt::Debug>(result: crate::Result<T>, name: &str) {
    match result {
        Err(Error::NotFound { object }) => assert_eq!(object, name),
        other => panic!("{name}: expected NotFound, got {other:?}"),
    }
}

#[track_caller]
fn assert_already_exists<T: std::fmt::Debug>(result: crate::Result<T>, name: &str) {
    match result {
        Err(Error::AlreadyExists { object }) => assert_eq!(object, name),
        other => panic!("{name}: expected AlreadyExists, got {other:?}"),
    }
}

/// A range past the end is `Corrupt`, and the reason states the range and the size.
#[track_caller]
fn assert_past_end<T: std::fmt::Debug>(result: crate::Result<T>, offset: u64, size: u64) {
    match result {
        Err(Error::Corrupt { reason, .. }) => {
            assert!(
                reason.contains(&offset.to_string()),
                "reason lacks offset {offset}: {reason}"
            );
            assert!(
                reason.contains(&size.to_string()),
                "reason lacks size {size}: {reason}"
            );
        }
        other => panic!("range at {offset} of a {size}-byte blob: expected Corrupt, got {other:?}"),
    }
}

/// Run the whole contract against `s`, which must start empty.
pub(crate) async fn run_conformance(s: &dyn Storage) {
    assert!(
        listing(s, "").await.is_empty(),
        "conformance needs an empty backend: {s:?}"
    );
    assert!(!s.location().is_empty());

    // Invalid names are rejected by every operation, before anything is written.
    for &bad in INVALID_NAMES {
        let invalid = |r: &crate::Result<_>| matches!(r, Err(Error::InvalidArgument(_)));
        assert!(invalid(&s.put(bad, b"x").await.map(|_| ())), "put {bad:?}");
        assert!(
            invalid(&s.create(bad, b"x").await.map(|_| ())),
            "create {bad:?}"
        );
        assert!(invalid(&s.get(bad).await.map(|_| ())), "get {bad:?}");
        assert!(
            invalid(&s.get_range(bad, 0, 1).await.map(|_| ())),
            "get_range {bad:?}"
        );
        assert!(invalid(&s.size(bad).await.map(|_| ())), "size {bad:?}");
        assert!(invalid(&s.head(bad).await.map(|_| ())), "head {bad:?}");
        assert!(
            invalid(&s.get_versioned(bad).await.map(|_| ())),
            "get_versioned {bad:?}"
        );
        assert!(
            invalid(
                &s.put_opts(
                    bad,
                    Bytes::from_static(b"x"),
                    PutMode::Update(Version::new("1"))
                )
                .await
                .map(|_| ())
            ),
            "update {bad:?}"
        );
        assert!(invalid(&s.delete(bad).await), "delete {bad:?}");
    }
    for bad_prefix in ["/", "../", "a//", "a/../", "x\\y"] {
        assert!(
            matches!(s.list(bad_prefix).await, Err(Error::InvalidArgument(_))),
            "list {bad_prefix:?}"
        );
    }
    assert!(listing(s, "").await.is_empty());

    // put / get round trip, including an empty blob.
    s.put("config", b"hello").await.unwrap();
    assert_eq!(s.get("config").await.unwrap(), b"hello");
    s.put("keys/empty", b"").await.unwrap();
    assert_eq!(s.get("keys/empty").await.unwrap(), b"");
    assert_eq!(s.size("keys/empty").await.unwrap(), 0);
    assert_eq!(s.get_range("keys/empty", 0, 0).await.unwrap(), b"");

    // Missing names.
    assert_not_found(s.get("data/00/missing").await, "data/00/missing");
    assert_not_found(
        s.get_range("data/00/missing", 0, 1).await,
        "data/00/missing",
    );
    assert_not_found(s.size("data/00/missing").await, "data/00/missing");
    assert_not_found(s.get("keys").await, "keys"); // a "directory" is not a blob
    assert_not_found(s.size("keys").await, "keys");

    // Ranged reads.
    let data = content(1, 1000);
    s.put("data/ab/ranged", &data).await.unwrap();
    assert_eq!(s.size("data/ab/ranged").await.unwrap(), 1000);
    for (offset, len) in [
        (0u64, 10u64),
        (500, 100),
        (990, 10),
        (0, 1000),
        (0, 0),
        (437, 0),
        (1000, 0),
    ] {
        let got = s.get_range("data/ab/ranged", offset, len).await.unwrap();
        assert_eq!(
            got,
            data[offset as usize..(offset + len) as usize],
            "range {offset}+{len}"
        );
        // A reused buffer, longer or shorter than the range, holds exactly the range.
        for stale in [vec![0xee; 2000], vec![0xee; 3]] {
            let got = s
                .get_range_into("data/ab/ranged", offset, len, stale)
                .await
                .unwrap();
            assert_eq!(
                got,
                data[offset as usize..(offset + len) as usize],
                "range {offset}+{len} into a used buffer"
            );
        }
    }
    assert_past_end(
        s.get_range_into("data/ab/ranged", 995, 10, vec![0; 10])
            .await,
        995,
        1000,
    );
    assert_past_end(s.get_range("data/ab/ranged", 995, 10).await, 995, 1000);
    assert_past_end(s.get_range("data/ab/ranged", 1001, 0).await, 1001, 1000);
    assert_past_end(s.get_range("data/ab/ranged", 0, 1001).await, 0, 1000);
    // Untrusted lengths must be checked before allocating, and sums must not overflow.
    assert_past_end(s.get_range("data/ab/ranged", 0, u64::MAX).await, 0, 1000);
    assert_past_end(
        s.get_range("data/ab/ranged", u64::MAX, 2).await,
        u64::MAX,
        1000,
    );

    // Listing by prefix, across nested "directories".
    s.put("data/ab/0001", &content(2, 11)).await.unwrap();
    s.put("data/cd/0003", &content(3, 33)).await.unwrap();
    s.put("snapshots/s1", &content(4, 4)).await.unwrap();
    s.put("snapshots/s2", &content(5, 5)).await.unwrap();
    let all = expect_map(&[
        ("config", 5),
        ("data/ab/0001", 11),
        ("data/ab/ranged", 1000),
        ("data/cd/0003", 33),
        ("keys/empty", 0),
        ("snapshots/s1", 4),
        ("snapshots/s2", 5),
    ]);
    assert_eq!(listing(s, "").await, all);
    let data_blobs = expect_map(&[
        ("data/ab/0001", 11),
        ("data/ab/ranged", 1000),
        ("data/cd/0003", 33),
    ]);
    assert_eq!(listing(s, "data/").await, data_blobs);
    assert_eq!(listing(s, "dat").await, data_blobs);
    assert_eq!(
        listing(s, "data/ab/").await,
        expect_map(&[("data/ab/0001", 11), ("data/ab/ranged", 1000)])
    );
    assert_eq!(
        listing(s, "data/a").await,
        expect_map(&[("data/ab/0001", 11), ("data/ab/ranged", 1000)])
    );
    assert_eq!(
        listing(s, "data/ab/0").await,
        expect_map(&[("data/ab/0001", 11)])
    );
    assert_eq!(
        listing(s, "data/ab/0001").await,
        expect_map(&[("data/ab/0001", 11)])
    );
    assert_eq!(
        listing(s, "snapshots/").await,
        expect_map(&[("snapshots/s1", 4), ("snapshots/s2", 5)])
    );
    assert_eq!(
        listing(s, "snapshots").await,
        expect_map(&[("snapshots/s1", 4), ("snapshots/s2", 5)])
    );
    assert_eq!(listing(s, "conf").await, expect_map(&[("config", 5)]));
    assert!(listing(s, "config/").await.is_empty());
    assert!(listing(s, "locks/").await.is_empty());
    assert!(listing(s, "data/ef/").await.is_empty());
    assert!(listing(s, "x").await.is_empty());

    // Delete, idempotently.
    s.delete("data/cd/0003").await.unwrap();
    assert_not_found(s.get("data/cd/0003").await, "data/cd/0003");
    assert!(listing(s, "data/cd/").await.is_empty());
    s.delete("data/cd/0003").await.unwrap();
    s.delete("locks/never-existed").await.unwrap();
    assert_eq!(listing(s, "data/").await.len(), 2);

    // Create-if-absent keeps the first content.
    s.create("keys/k1", b"first").await.unwrap();
    assert_already_exists(s.create("keys/k1", b"second").await, "keys/k1");
    assert_eq!(s.get("keys/k1").await.unwrap(), b"first");
    assert_already_exists(s.create("config", b"other").await, "config");
    assert_eq!(s.get("config").await.unwrap(), b"hello");
    // A deleted name can be created again.
    s.delete("keys/k1").await.unwrap();
    s.create("keys/k1", b"again").await.unwrap();
    assert_eq!(s.get("keys/k1").await.unwrap(), b"again");

    // Concurrent creates of one name: exactly one wins, and its content is stored.
    let contents: Vec<Vec<u8>> = (0..16).map(|i| content(100 + i, 4096)).collect();
    let results = join_all(contents.iter().map(|c| s.create("locks/race", c)).collect()).await;
    let mut winners = Vec::new();
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(()) => winners.push(i),
            Err(e) => assert_already_exists(Err::<(), _>(e), "locks/race"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one concurrent create must succeed: {winners:?}"
    );
    assert_eq!(s.get("locks/race").await.unwrap(), contents[winners[0]]);

    // put over an existing blob with the same content (content-addressed names).
    let same = content(6, 77);
    s.put("data/ef/same", &same).await.unwrap();
    s.put("data/ef/same", &same).await.unwrap();
    assert_eq!(s.get("data/ef/same").await.unwrap(), same);
    assert_eq!(
        listing(s, "data/ef/").await,
        expect_map(&[("data/ef/same", 77)])
    );

    // Thousands of blobs in one listing.
    let index_names: Vec<String> = (0..3000).map(|i| format!("index/{i:04x}")).collect();
    for batch in index_names.chunks(100) {
        let results = join_all(batch.iter().map(|n| s.put(n, n.as_bytes())).collect()).await;
        results.into_iter().for_each(|r| r.unwrap());
    }
    let expected: BTreeMap<String, u64> = index_names
        .iter()
        .map(|n| (n.clone(), n.len() as u64))
        .collect();
    assert_eq!(listing(s, "index/").await, expected);

    // Versions and compare-and-swap.
    assert_updates_are_compare_and_swap(s).await;

    // A write hands the buffer back unchanged, at sizes around the local backend's
    // 1 MiB write pieces and 4 KiB direct-write alignment, replacing a longer blob.
    assert_buffers_come_back(s).await;

    // A large blob: whole and ranged reads.
    const LARGE: usize = 40 << 20;
    let large = content(7, LARGE);
    s.put("data/ff/large", &large).await.unwrap();
    assert_eq!(s.size("data/ff/large").await.unwrap(), LARGE as u64);
    let got = s.get("data/ff/large").await.unwrap();
    assert!(got == large, "40 MiB round trip differs");
    drop(got);
    let (offset, len) = ((20 << 20) + 3, 1 << 20);
    let got = s
        .get_range("data/ff/large", offset as u64, len as u64)
        .await
        .unwrap();
    assert!(
        got == large[offset..offset + len],
        "ranged read of the large blob differs"
    );
    let got = s
        .get_range("data/ff/large", (LARGE - 10) as u64, 10)
        .await
        .unwrap();
    assert_eq!(got, large[LARGE - 10..]);
    assert_past_end(
        s.get_range("data/ff/large", (LARGE - 10) as u64, 11).await,
        (LARGE - 10) as u64,
        LARGE as u64,
    );

    // Everything written is listed exactly once.
    let mut everything = all;
    everything.remove("data/cd/0003");
    everything.insert("keys/k1".into(), 5);
    everything.insert("locks/race".into(), 4096);
    everything.insert("data/ef/same".into(), 77);
    everything.insert("sessions/cas".into(), 3);
    everything.insert("data/ff/large".into(), LARGE as u64);
    everything.extend(expected);
    assert_eq!(listing(s, "").await, everything);
    // list_names lists the same names, whole and by prefix.
    for prefix in ["", "data/", "data/c", "keys/"] {
        let mut names = s.list_names(prefix).await.unwrap();
        names.sort();
        let expected: Vec<String> = everything
            .keys()
            .filter(|n| n.starts_with(prefix))
            .cloned()
            .collect();
        assert_eq!(names, expected, "list_names({prefix:?})");
    }
}

/// Sizes where writing in 1 MiB pieces aligned to 4 KiB, the last one padded, could go
/// wrong: an aligned length, one byte on either side, a piece and a bit.
const EDGE_SIZES: &[usize] = &[
    (1 << 20) - 1,
    1 << 20,
    (1 << 20) + 1,
    (3 << 20) + 4096,
    (3 << 20) + 4095,
    (2 << 20) + 17,
];

#[track_caller]
fn assert_conflict<T: std::fmt::Debug>(r: crate::Result<T>, name: &str) {
    match r {
        Err(Error::Conflict { object }) => assert_eq!(object, name),
        other => panic!("expected Conflict for {name}, got {other:?}"),
    }
}

/// Versions name exactly one content, and an update replaces only the version it names:
/// not a changed blob, not a deleted one, and of concurrent updates of one version
/// exactly one. Leaves `sessions/cas` holding `"end"`.
async fn assert_updates_are_compare_and_swap(s: &dyn Storage) {
    let name = "sessions/cas";
    let put = |data: &'static [u8], mode| s.put_opts(name, Bytes::from_static(data), mode);
    // Versions from writes and reads agree.
    let v1 = put(b"one", PutMode::Create).await.unwrap();
    assert_eq!(s.head(name).await.unwrap().version, v1);
    let got = s.get_versioned(name).await.unwrap();
    assert_eq!((got.data.as_slice(), &got.version), (&b"one"[..], &v1));
    assert_eq!(s.head(name).await.unwrap().size, 3);
    // Every backend here knows when a blob was written (ages of objects no key opens,
    // SPEC.md section 18): within a minute of now, allowing for the server's clock.
    let modified = s
        .modified(name)
        .await
        .unwrap()
        .expect("a modification time");
    let skew = match modified.duration_since(std::time::SystemTime::now()) {
        Ok(ahead) => ahead,
        Err(behind) => behind.duration(),
    };
    assert!(skew < std::time::Duration::from_secs(60), "{modified:?}");
    assert_not_found(
        s.modified("sessions/never").await.map(|_| ()),
        "sessions/never",
    );
    // An update of the current version replaces it and gives a new version.
    let v2 = put(b"two", PutMode::Update(v1.clone())).await.unwrap();
    assert_ne!(v2, v1);
    assert_eq!(s.get_versioned(name).await.unwrap().version, v2);
    // An update of an older version changes nothing.
    assert_conflict(put(b"old", PutMode::Update(v1.clone())).await, name);
    assert_eq!(s.get(name).await.unwrap(), b"two");
    // An overwrite with other bytes gives a new version too. (With the same bytes it
    // may keep the version: S3's ETag of a single-part upload is the bytes' MD5.)
    let v3 = put(b"TWO", PutMode::Overwrite).await.unwrap();
    assert_ne!(v3, v2);
    assert_eq!(s.head(name).await.unwrap().version, v3);
    assert_conflict(put(b"stale", PutMode::Update(v2.clone())).await, name);
    assert_eq!(s.get(name).await.unwrap(), b"TWO");
    // An update of a deleted name does not bring it back: the heartbeat that stalled
    // while gc removed its session marker.
    s.delete(name).await.unwrap();
    assert_conflict(put(b"back", PutMode::Update(v3.clone())).await, name);
    assert_not_found(s.get(name).await, name);
    assert_conflict(
        s.put_opts(
            "sessions/never",
            Bytes::from_static(b"x"),
            PutMode::Update(v3),
        )
        .await,
        "sessions/never",
    );
    assert_not_found(s.head("sessions/never").await, "sessions/never");
    // Concurrent updates of one version: exactly one wins, and its content is stored.
    let v4 = put(b"base", PutMode::Create).await.unwrap();
    let contents: Vec<Bytes> = (0..8).map(|i| Bytes::from(content(200 + i, 64))).collect();
    let results = join_all(
        contents
            .iter()
            .map(|c| s.put_opts(name, c.clone(), PutMode::Update(v4.clone())))
            .collect(),
    )
    .await;
    let mut winners = Vec::new();
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(version) => winners.push((i, version)),
            Err(e) => assert_conflict(Err::<(), _>(e), name),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one concurrent update of a version must succeed: {:?}",
        winners.iter().map(|w| w.0).collect::<Vec<_>>()
    );
    let (winner, version) = winners.remove(0);
    let got = s.get_versioned(name).await.unwrap();
    assert_eq!(got.data, contents[winner]);
    assert_eq!(got.version, version);
    put(b"end", PutMode::Update(version)).await.unwrap();
}

async fn assert_buffers_come_back(s: &dyn Storage) {
    s.put("data/ee/edge", &content(1, 5 << 20)).await.unwrap();
    for (seed, &len) in (2..).zip(EDGE_SIZES) {
        let bytes = content(seed, len);
        let payload = Bytes::from(bytes.clone());
        s.put_opts("data/ee/edge", payload.clone(), PutMode::Overwrite)
            .await
            .unwrap();
        let back = Vec::from(payload);
        assert!(back == bytes, "a write of {len} bytes changed the buffer");
        assert_eq!(s.size("data/ee/edge").await.unwrap(), len as u64);
        let got = s.get("data/ee/edge").await.unwrap();
        assert!(got == bytes, "{len}-byte blob read back differs");
        let tail = s
            .get_range("data/ee/edge", (len - 5000) as u64, 5000)
            .await
            .unwrap();
        assert_eq!(tail, bytes[len - 5000..], "tail of the {len}-byte blob");
    }
    s.delete("data/ee/edge").await.unwrap();
}

/// Every file below `dir` whose name starts with the temporary-file prefix.
fn temp_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                // The lock files of conditional writes stay, by design.
                if entry.file_name() != super::name::LOCK_DIR {
                    stack.push(entry.path());
                }
            } else if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                found.push(entry.path());
            }
        }
    }
    found
}

#[tokio::test]
async fn memory_storage_conforms() {
    run_conformance(&MemoryStorage::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_storage_conforms() {
    let dir = tempfile::tempdir().unwrap();
    // The root does not exist yet: the first write creates it.
    let storage = LocalStorage::new(dir.path().join("repo"));
    run_conformance(&storage).await;
    assert_eq!(temp_files(dir.path()), Vec::<std::path::PathBuf>::new());
}

/// Large blobs are written past the page cache where the file system takes it (ext4,
/// the usual `/tmp`), and buffered once it has refused: both read back whole, leaving no
/// temporary file behind. Where the directory takes `O_DIRECT`, the direct path must
/// have been the one that wrote (a mistake in it would otherwise hide behind the
/// buffered fallback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_large_blobs_round_trip_direct_or_buffered() {
    for direct in [true, false] {
        let root = tempfile::tempdir().unwrap();
        let storage = if direct {
            LocalStorage::new(root.path())
        } else {
            LocalStorage::without_direct_writes(root.path())
        };
        assert_buffers_come_back(&storage).await;
        let pack = content(42, (16 << 20) + 12345);
        storage
            .put_opts(
                "data/aa/pack",
                Bytes::from(pack.clone()),
                PutMode::Overwrite,
            )
            .await
            .unwrap();
        storage.create("data/aa/created", &pack).await.unwrap();
        for name in ["data/aa/pack", "data/aa/created"] {
            let got = storage.get(name).await.unwrap();
            assert!(got == pack, "{name} (direct writes: {direct}) differs");
        }
        assert_eq!(temp_files(root.path()), Vec::<std::path::PathBuf>::new());
        if direct && takes_direct_writes(root.path()) {
            assert!(!storage.direct_writes_refused(), "direct writes fell back");
        }
    }
}

/// Whether files in `dir` open with `O_DIRECT`.
fn takes_direct_writes(dir: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let probe = dir.join("direct-probe");
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(&probe)
            .is_ok();
        let _ = std::fs::remove_file(&probe);
        opened
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        false
    }
}

#[tokio::test]
async fn local_blob_name_is_a_path_below_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(dir.path());
    assert_eq!(storage.root(), dir.path());
    storage.put("a/b/c", b"abc").await.unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("a").join("b").join("c")).unwrap(),
        b"abc"
    );
    storage.create("top", b"t").await.unwrap();
    assert_eq!(std::fs::read(dir.path().join("top")).unwrap(), b"t");
}

#[tokio::test]
async fn local_rejects_invalid_names_without_touching_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let storage = LocalStorage::new(&root);
    for &bad in INVALID_NAMES.iter().chain(&["../escape", "a/../../escape"]) {
        let result = storage.put(bad, b"x").await;
        assert!(
            matches!(result, Err(Error::InvalidArgument(_))),
            "put {bad:?}: {result:?}"
        );
    }
    assert!(!root.exists(), "a rejected write created the root");
    assert!(!dir.path().join("escape").exists());
}

#[tokio::test]
async fn local_missing_root_reads_as_empty() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(dir.path().join("absent"));
    assert!(storage.list("").await.unwrap().is_empty());
    assert!(storage.list("data/").await.unwrap().is_empty());
    assert_not_found(storage.get("config").await, "config");
    storage.delete("config").await.unwrap();
}

#[tokio::test]
async fn local_leaves_no_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(dir.path());
    storage.put("data/ab/x", b"1").await.unwrap();
    storage.put("data/ab/x", b"1").await.unwrap();
    storage.create("keys/k", b"2").await.unwrap();
    // A create that loses after writing its temp file must remove it too: bypass the
    // early existence check by racing creates.
    let results = join_all((0..8).map(|_| storage.create("locks/l", b"3")).collect()).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert_already_exists(storage.create("keys/k", b"other").await, "keys/k");
    assert_eq!(temp_files(dir.path()), Vec::<std::path::PathBuf>::new());
}

#[tokio::test]
async fn local_does_not_list_stale_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(dir.path());
    storage.put("data/ab/blob", b"blob").await.unwrap();
    // Left behind by a writer that crashed before its rename.
    std::fs::write(dir.path().join("data/ab/.tmp-999-0-123"), b"partial").unwrap();
    std::fs::write(dir.path().join(".tmp-1-2-3"), b"partial").unwrap();
    let expected = expect_map(&[("data/ab/blob", 4)]);
    assert_eq!(listing(&storage, "").await, expected);
    assert_eq!(listing(&storage, "data/").await, expected);
    assert_eq!(listing(&storage, "data/ab/").await, expected);
    assert!(listing(&storage, "data/ab/.tmp").await.is_empty());
}

#[tokio::test]
async fn local_range_of_truncated_blob_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(dir.path());
    storage.put("data/ab/pack", &content(9, 100)).await.unwrap();
    // Damaged on disk after it was indexed.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("data/ab/pack"))
        .unwrap();
    file.set_len(60).unwrap();
    drop(file);
    assert_past_end(storage.get_range("data/ab/pack", 50, 20).await, 50, 60);
    assert_eq!(
        storage.get_range("data/ab/pack", 50, 10).await.unwrap(),
        content(9, 100)[50..60]
    );
}

/// The S3-compatible test server: `DPREPO_TEST_S3_ENDPOINT` (default
/// `http://127.0.0.1:5000`, where `scripts/test.sh` starts moto). Creates the test bucket
/// if needed and fails, saying how to start the server, when it cannot be reached.
pub(crate) fn s3_test_storage(prefix: &str) -> super::S3Storage {
    let endpoint =
        std::env::var("DPREPO_TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".into());
    let host = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let bucket = "dprepo-test";
    let request = format!(
        "PUT /{bucket} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let reply = std::net::TcpStream::connect(&host).and_then(|mut s| {
        use std::io::{Read, Write};
        s.write_all(request.as_bytes())?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        Ok(buf)
    });
    match reply {
        Ok(r) if r.starts_with("HTTP/1.1 200") || r.starts_with("HTTP/1.1 409") || r.starts_with("HTTP/1.0 200") => {}
        Ok(r) => panic!("S3 test server at {endpoint} refused to create bucket {bucket}: {}", r.lines().next().unwrap_or_default()),
        Err(e) => panic!(
            "S3 test server not reachable at {endpoint} ({e}). Start it with `bash scripts/test.sh` (installs and runs moto), \
             or `pip install 'moto[server]' && moto_server -H 127.0.0.1 -p 5000`, or set DPREPO_TEST_S3_ENDPOINT"
        ),
    }
    let unique = format!(
        "{prefix}-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    let mut options = super::S3Options::new(bucket, unique);
    options.endpoint = Some(endpoint);
    options.access_key_id = Some("test".into());
    options.secret_access_key = Some("test".into());
    options.max_retries = 2;
    super::S3Storage::new(options).expect("S3 client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_storage_conforms() {
    let s3 = s3_test_storage("conformance");
    run_conformance(&s3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_server_honours_create_if_absent() {
    let s3 = s3_test_storage("probe");
    assert!(
        super::probe_create_if_absent(&s3).await.unwrap(),
        "moto implements If-None-Match; the probe must see it"
    );
}

/// moto 5 implements `If-Match` on PUT (412 for a stale ETag, 404 for a missing key):
/// the probe must see it. A server that ignored the header would fail here, and the
/// conformance run above, at the first stale update it accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_server_honours_if_match() {
    let s3 = s3_test_storage("cas-probe");
    let honoured = super::probe_compare_and_swap(&s3).await.unwrap();
    eprintln!("S3 test server refuses a stale If-Match update: {honoured}");
    assert!(
        honoured,
        "the S3 test server accepted an update of a stale ETag"
    );
}
