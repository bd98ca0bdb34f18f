use super::*;

/// Temporary files anywhere below the root are listed with their size and age and
/// can be deleted by that name; nothing else can be deleted through it.
#[tokio::test]
async fn temporary_files_are_listed_and_deleted_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(dir.path());
    storage.put("data/ab/abcd", b"pack").await.unwrap();
    fs::write(dir.path().join("data/ab/.tmp-1-2-3"), b"partial").unwrap();
    fs::write(dir.path().join(".tmp-4-5-6"), b"").unwrap();
    let mut found = storage.list_temporary().await.unwrap();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    let names: Vec<(&str, u64)> = found.iter().map(|t| (t.name.as_str(), t.size)).collect();
    assert_eq!(names, [(".tmp-4-5-6", 0), ("data/ab/.tmp-1-2-3", 7)]);
    for bad in [
        "data/ab/abcd",
        "../x/.tmp-1",
        "data/../.tmp-1",
        ".tmp-1/../data/ab/abcd",
    ] {
        assert!(
            matches!(
                storage.delete_temporary(bad).await,
                Err(Error::InvalidArgument(_))
            ),
            "{bad}"
        );
    }
    storage
        .delete_temporary("data/ab/.tmp-1-2-3")
        .await
        .unwrap();
    storage
        .delete_temporary("data/ab/.tmp-1-2-3")
        .await
        .unwrap();
    assert_eq!(storage.list_temporary().await.unwrap().len(), 1);
    assert_eq!(storage.get("data/ab/abcd").await.unwrap(), b"pack");
}

/// The lock files that creates leave for updates are neither blobs nor temporary
/// files, and sit outside the directories they guard.
#[tokio::test]
async fn lock_files_are_neither_listed_nor_collected() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(dir.path());
    storage.put("data/ab/abcd", b"pack").await.unwrap();
    storage.create("sessions/s1", b"marker").await.unwrap();
    storage.create("config", b"config").await.unwrap();
    let locks = dir.path().join(LOCK_DIR);
    let mut made: Vec<String> = fs::read_dir(&locks)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    made.sort();
    assert_eq!(made, ["+", "sessions"]);
    assert_eq!(
        fs::read_dir(dir.path().join("sessions")).unwrap().count(),
        1
    );
    assert_eq!(
        storage.list_names("sessions/").await.unwrap(),
        ["sessions/s1"]
    );
    assert_eq!(storage.list("").await.unwrap().len(), 3);
    assert!(storage.list_temporary().await.unwrap().is_empty());
    assert!(matches!(
        storage.get(&format!("{LOCK_DIR}/sessions")).await,
        Err(Error::InvalidArgument(_))
    ));
}

/// A writer stopped while holding a directory's lock (SIGSTOP, a hung NFS client)
/// made every other writer of the directory wait for as long as it stayed stopped:
/// a backup waited 8 minutes behind a stopped copy. The wait is bounded now and
/// fails naming the lock file and the holder; once released, writes go on.
#[tokio::test]
async fn a_stalled_lock_holder_fails_writers_within_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(dir.path());
    let v1 = storage
        .put_opts("sessions/s1", Bytes::from_static(b"one"), PutMode::Create)
        .await
        .unwrap();
    let lock = dir.path().join(LOCK_DIR).join("sessions");
    // Another open file description of the lock file conflicts like another
    // process would; /proc/locks shows this process as the holder.
    let holder = File::open(&lock).unwrap();
    rustix::fs::flock(&holder, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let bound = Duration::from_millis(300);
    storage.set_lock_wait(bound);

    let start = Instant::now();
    let err = storage
        .put_opts(
            "sessions/s1",
            Bytes::from_static(b"two"),
            PutMode::Update(v1.clone()),
        )
        .await
        .unwrap_err();
    let waited = start.elapsed();
    assert!(waited >= bound, "gave up after {waited:?}");
    assert!(waited < Duration::from_secs(10), "waited {waited:?}");
    let Error::Storage { object, source } = &err else {
        panic!("{err}");
    };
    assert_eq!(object, "sessions/s1");
    assert_eq!(source.kind(), io::ErrorKind::ResourceBusy, "{err}");
    let message = err.to_string();
    assert!(message.contains(&lock.display().to_string()), "{message}");
    assert!(
        message.contains(&format!("held by process {}", std::process::id())),
        "{message}"
    );
    // Deletes and overwrites of the directory wait on the same lock.
    let err = storage.delete("sessions/s1").await.unwrap_err();
    assert!(err.to_string().contains("is held by process"), "{err}");
    let err = storage.put("sessions/s1", b"three").await.unwrap_err();
    assert!(err.to_string().contains("is held by process"), "{err}");
    assert_eq!(storage.get("sessions/s1").await.unwrap(), b"one");

    // A holder that lets go within the bound is waited for.
    storage.set_lock_wait(Duration::from_secs(30));
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        drop(holder);
    });
    let v2 = storage
        .put_opts(
            "sessions/s1",
            Bytes::from_static(b"two"),
            PutMode::Update(v1),
        )
        .await
        .unwrap();
    release.join().unwrap();
    assert_eq!(storage.get("sessions/s1").await.unwrap(), b"two");
    storage.delete("sessions/s1").await.unwrap();
    assert!(storage
        .put_opts("sessions/s1", Bytes::from_static(b"x"), PutMode::Update(v2))
        .await
        .is_err());
}

/// `/proc/locks` lines are matched by device and inode; waiters and other lock
/// kinds are not holders.
#[test]
fn flock_holders_are_read_from_proc_locks() {
    let dev = rustix::fs::makedev(8, 1);
    let locks = "1: POSIX  ADVISORY  WRITE 10 08:01:77 0 EOF\n\
                 2: FLOCK  ADVISORY  WRITE 4321 08:01:77 0 EOF\n\
                 2: -> FLOCK  ADVISORY  WRITE 99 08:01:77 0 EOF\n\
                 3: FLOCK  ADVISORY  WRITE 55 08:02:77 0 EOF\n";
    assert_eq!(flock_holder(locks, dev, 77), Some(4321));
    assert_eq!(flock_holder(locks, dev, 78), None);
    assert_eq!(flock_holder(locks, rustix::fs::makedev(8, 2), 77), Some(55));
    assert_eq!(
        flock_holder("3: FLOCK  ADVISORY  WRITE -1 08:01:77 0 EOF", dev, 77),
        None
    );
}

/// When the direct write fails (here at its exclusive open: a temporary file is in
/// the way, holding more than the object, as a refused direct write may leave it),
/// the object is written again buffered over whatever is there, lands whole, and
/// later writes go buffered.
#[test]
fn a_failed_direct_write_is_redone_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let temp = dir.path().join(".tmp-left");
    let path = dir.path().join("pack");
    fs::write(&temp, vec![7u8; 5 * DIRECT_ALIGN + DIRECT_WRITE_MIN]).unwrap();
    let data = crate::fuzzing::pseudo_random_bytes(3, DIRECT_WRITE_MIN + 5000);
    let refused = AtomicBool::new(false);
    write_via_temp(
        "pack",
        &path,
        dir.path(),
        &temp,
        &dir.path().join(LOCK_DIR).join("+"),
        &data,
        PutMode::Overwrite,
        &refused,
        DEFAULT_LOCK_WAIT,
    )
    .unwrap();
    assert!(fs::read(&path).unwrap() == data, "the object differs");
    assert!(!temp.exists());
    assert!(
        refused.load(Ordering::Relaxed),
        "later writes still try direct"
    );
}
