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
