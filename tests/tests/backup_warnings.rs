//! What `backup` says about its source beyond read errors: files that change while they
//! are read (issue 19, point 15) and paths that do not exist (point 14).

mod common;

use common::*;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// BUG (issue 19, point 15): a file written to while backup read it was saved without a
/// word, though its copy may mix old and new contents.
#[test]
fn a_file_that_changes_while_it_is_read_is_named_and_counted() {
    let env = TestEnv::init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let busy = src.join("busy.db");
    fs::write(&busy, random_bytes(1, 48 << 20)).unwrap();
    for i in 0..20 {
        fs::write(src.join(format!("quiet-{i}")), random_bytes(10 + i, 5000)).unwrap();
    }
    fs::write(src.join("quiet-large"), random_bytes(9, 8 << 20)).unwrap();

    // A writer that keeps changing bytes of busy.db for as long as the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, busy) = (stop.clone(), busy.clone());
        std::thread::spawn(move || {
            let mut f = fs::OpenOptions::new().write(true).open(&busy).unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                f.seek(SeekFrom::Start((n * 7919 * 4096) % (48 << 20)))
                    .unwrap();
                f.write_all(&n.to_le_bytes()).unwrap();
                n += 1;
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        })
    };
    let out = env.run(&["--json", "backup", s(&src)]);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let doc = parse_json(&out, &["backup"]);
    let err = stderr(&out);
    assert_eq!(
        doc["changed_while_read"],
        serde_json::json!([s(&busy)]),
        "only the busy file is named: {doc}"
    );
    assert_eq!(doc["summary"]["files_changed_during_read"], 1, "{doc}");
    assert_eq!(doc["summary"]["errors"], 0, "{doc}");
    assert!(
        err.contains(&format!("{}: changed while it was read", s(&busy))),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    // Nothing changes now: no warning, and the next backup reads the file again.
    let out = env.run(&["--json", "backup", s(&src)]);
    let doc = parse_json(&out, &["backup"]);
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    assert_eq!(doc["summary"]["files_changed_during_read"], 0);
    assert_eq!(doc["summary"]["files_changed"], 1, "{doc}");
    assert_eq!(env.dump("latest", s(&busy)), fs::read(&busy).unwrap());
}

/// BUG (issue 19, point 14): `backup /missing /existing` failed without backing up
/// anything; restic warns about the missing path, backs up the others and exits with 3.
#[test]
fn a_missing_path_is_left_out_with_a_warning_and_the_others_are_backed_up() {
    let env = TestEnv::init();
    let existing = env.path("existing");
    fs::create_dir_all(&existing).unwrap();
    fs::write(existing.join("f"), b"backed up").unwrap();
    let missing = env.path("missing");
    let args = ["--json", "backup", s(&missing), s(&existing)];
    let out = env.run(&args);
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(3), "stderr:\n{err}");
    assert!(
        err.contains(&format!("dprepo: warning: {}: No such file", s(&missing))),
        "{err}"
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["paths"], serde_json::json!([s(&existing)]), "{doc}");
    assert_eq!(doc["summary"]["errors"], 1, "{doc}");
    assert_eq!(env.dump("latest", s(&existing.join("f"))), b"backed up");

    // Only missing paths: nothing to back up is still an error, naming the first.
    let line = env.fail(&["backup", s(&missing), s(&env.path("also-missing"))]);
    assert!(line.contains(s(&missing)), "{line}");
    assert_eq!(env.snapshots().len(), 1);
}
