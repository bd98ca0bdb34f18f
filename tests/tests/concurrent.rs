//! Several writers at once: backups into one repository need no lock, and every
//! snapshot they commit is complete, on both backends.

mod common;

use common::*;
use std::fs;
use std::process::Stdio;

both_backends!(concurrent_backups_into_one_repository_all_commit_complete_snapshots);

fn concurrent_backups_into_one_repository_all_commit_complete_snapshots(backend: Backend) {
    let env = TestEnv::init_with(backend);
    let shared = random_bytes(1, 3 << 20);
    let sources: Vec<_> = (0..4u64)
        .map(|i| {
            let src = env.path(&format!("src{i}"));
            fs::create_dir(&src).unwrap();
            fs::write(src.join("shared.bin"), &shared).unwrap();
            fs::write(src.join("own.bin"), random_bytes(10 + i, 2 << 20)).unwrap();
            src
        })
        .collect();
    let children: Vec<_> = sources
        .iter()
        .map(|src| {
            env.cmd(["--json", "backup", s(src)])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        parse_json(
            &child.wait_with_output().unwrap(),
            &["backup", "(concurrent)"],
        );
    }

    let snaps = env.snapshots();
    assert_eq!(
        snaps.len(),
        4,
        "every concurrent backup committed a snapshot"
    );
    for (i, src) in sources.iter().enumerate() {
        let target = env.path(&format!("restore{i}"));
        env.ok(&[
            "restore",
            &format!("latest:{}", s(src)),
            "--path",
            s(src),
            "--target",
            s(&target),
        ]);
        assert_same_tree(
            src,
            &target,
            Compare {
                root_metadata: false,
                ..Compare::ALL
            },
        );
    }
    assert!(
        env.repo_files("sessions").is_empty(),
        "finished backups leave no session markers"
    );
    // The shared file may be stored more than once by racing writers, but everything is
    // readable and accounted for.
    let stats = env.json(&["stats"]);
    assert_eq!(stats["files"], 8, "{stats}");
}
