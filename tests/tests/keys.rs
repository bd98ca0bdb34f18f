//! Password management through the real binary (SPEC.md sections 6, 19): `dprepo key
//! add` makes a second password for the same master key, `key passwd` replaces the
//! password in use (the new key file first, the old one only after it), `key remove`
//! refuses the last password and the key in use unless `--force`, and `key list` marks
//! the key a command opened with, with kind, time, host and user, in text and JSON.

mod common;

use common::*;

/// `key list --json` as seen with `env`'s password.
fn keys(env: &TestEnv) -> Vec<serde_json::Value> {
    env.json(&["key", "list"])["keys"]
        .as_array()
        .expect("keys array")
        .clone()
}

fn in_use(keys: &[serde_json::Value]) -> Vec<String> {
    keys.iter()
        .filter(|k| k["in_use"] == true)
        .map(|k| k["id"].as_str().expect("id").to_string())
        .collect()
}

#[test]
fn key_add_passwd_and_remove_keep_one_password_that_opens() {
    let env = TestEnv::init();
    let data = env.path("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::write(data.join("a"), random_bytes(1, 100_000)).expect("write");
    let snap = env.backup(&[&data], &[]);
    let snap_id = snap["id"].as_str().expect("id").to_string();

    // One password key, in use.
    let first = keys(&env);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0]["kind"], "password");
    assert_eq!(in_use(&first), vec![first[0]["id"].as_str().unwrap()]);
    let first_id = first[0]["id"].as_str().unwrap().to_string();

    // key add with labels, the new password from a file.
    let new_pw = env.path("new-pw");
    std::fs::write(&new_pw, "second password\n").expect("write");
    let added = env.json(&[
        "key",
        "add",
        "--new-password-file",
        s(&new_pw),
        "--host",
        "laptop",
        "--user",
        "alice",
    ]);
    let second_id = added["id"].as_str().expect("id").to_string();
    assert_ne!(second_id, first_id);
    let second = env.same_repository("second password");
    let listed = keys(&second);
    assert_eq!(listed.len(), 2);
    assert_eq!(in_use(&listed), vec![second_id.clone()]);
    let entry = listed
        .iter()
        .find(|k| k["id"] == second_id.as_str())
        .unwrap();
    assert_eq!(entry["hostname"], "laptop");
    assert_eq!(entry["username"], "alice");
    assert_eq!(entry["kind"], "password");
    assert!(entry["created"]
        .as_str()
        .is_some_and(|c| c.starts_with("20")));
    // Both passwords read the data.
    assert_eq!(
        second.dump(&snap_id, &format!("{}/a", s(&data))),
        random_bytes(1, 100_000)
    );

    // Text listing: a header and a `*` on the key in use.
    let text = String::from_utf8(second.ok(&["key", "list"]).stdout).unwrap();
    let marked: Vec<&str> = text.lines().filter(|l| l.starts_with('*')).collect();
    assert_eq!(marked.len(), 1, "{text}");
    assert!(
        marked[0].starts_with(&format!("*{}", &second_id[..16])),
        "{text}"
    );
    assert!(marked[0].contains("alice@laptop"), "{text}");
    // Without any key, the list still works (headers are plaintext), marking nothing.
    let mut cmd = bare_cmd(["--json", "key", "list"]);
    env.storage_env(&mut cmd);
    cmd.env("DPREPO_REPOSITORY", env.location());
    let out = output_of(cmd);
    let doc = parse_json(&out, &["key", "list"]);
    let all = doc["keys"].as_array().unwrap();
    assert_eq!(all.len(), 2);
    assert!(in_use(all).is_empty(), "{doc}");

    // The key in use cannot be removed without --force; another one can.
    let err = second.fail(&["key", "remove", &second_id[..12]]);
    assert!(err.contains("--force"), "{err}");
    second.ok(&["key", "remove", &first_id[..12]]);
    env.fail(&["snapshots"]);
    // Now the last password: refused even with --force.
    let err = second.fail(&["key", "remove", "--force", &second_id]);
    assert!(err.contains("last password"), "{err}");

    // key passwd: the password in use is replaced, the old one stops opening.
    std::fs::write(&new_pw, "third password\n").expect("write");
    let changed = second.json(&["key", "passwd", "--new-password-file", s(&new_pw)]);
    let third_id = changed["id"].as_str().expect("id").to_string();
    assert_eq!(changed["removed"], second_id.as_str());
    let err = second.fail(&["snapshots"]);
    assert!(err.contains("password"), "{err}");
    let third = env.same_repository("third password");
    let listed = keys(&third);
    assert_eq!(listed.len(), 1);
    assert_eq!(in_use(&listed), vec![third_id.clone()]);
    assert_eq!(
        third.dump(&snap_id, &format!("{}/a", s(&data))),
        random_bytes(1, 100_000)
    );

    // With --force the key in use goes once another password exists.
    std::fs::write(&new_pw, "fourth password\n").expect("write");
    third.ok(&["key", "add", "--new-password-file", s(&new_pw)]);
    third.ok(&["key", "remove", "--force", &third_id[..12]]);
    third.fail(&["snapshots"]);
    let fourth = env.same_repository("fourth password");
    assert_eq!(keys(&fourth).len(), 1);
    fourth.ok(&["verify", "--read-data"]);
}

#[test]
fn key_passwd_refuses_an_access_key_and_missing_new_passwords() {
    let env = TestEnv::init();
    // No new password anywhere (stdin is not a terminal): a clear error, nothing written.
    let err = env.fail(&["key", "add"]);
    assert!(err.contains("--new-password-file"), "{err}");
    assert_eq!(env.repo_file_names("keys").len(), 1);

    let key_file = env.path("ak");
    env.ok(&["key", "add-access", "-o", s(&key_file)]);
    let pw = env.path("pw");
    std::fs::write(&pw, "other\n").expect("write");
    let mut cmd = bare_cmd(["key", "passwd", "--new-password-file", s(&pw)]);
    env.storage_env(&mut cmd);
    cmd.env("DPREPO_REPOSITORY", env.location())
        .env("DPREPO_ACCESS_KEY_FILE", &key_file);
    let err = assert_clean_failure(&output_of(cmd), &["key", "passwd"]);
    assert!(err.contains("access key"), "{err}");
    assert_eq!(env.repo_file_names("keys").len(), 2);
    // An access key's text is not taken as a new password.
    let err = env.fail(&["key", "add", "--new-password-file", s(&key_file)]);
    assert!(err.contains("add-access"), "{err}");
    assert_eq!(env.repo_file_names("keys").len(), 2);
}

/// `key rotate` and `key rotate --finish` through the binary: data of before, between
/// and after stays readable, verify --read-data is clean after each step, and the old
/// key file, put back with its password, no longer opens the repository.
#[test]
fn key_rotate_then_finish_keeps_every_snapshot_and_retires_the_old_key() {
    let env = TestEnv::init();
    let data = env.path("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::write(data.join("a"), random_bytes(3, 200_000)).expect("write");
    let first = env.backup(&[&data], &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let pw = env.path("pw2");
    std::fs::write(&pw, "second\n").expect("write");
    env.ok(&["key", "add", "--new-password-file", s(&pw)]);
    let second = env.same_repository("second");
    let old_keys: Vec<(String, Vec<u8>)> = env
        .repo_file_names("keys")
        .into_iter()
        .map(|n| {
            let bytes = std::fs::read(env.repo.join("keys").join(&n)).unwrap();
            (n, bytes)
        })
        .collect();

    // Another password exists: refused without --remove-other-keys.
    let err = env.fail(&["key", "rotate"]);
    assert!(err.contains("--remove-other-keys"), "{err}");
    let report = env.json(&["key", "rotate", "--remove-other-keys"]);
    assert_eq!(report["generation"], 2);
    assert_eq!(env.repo_file_names("keys").len(), 1);
    // The other password's key file is gone with the old master key.
    let err = second.fail(&["snapshots"]);
    assert!(err.contains("wrong password"), "{err}");
    env.ok(&["verify", "--read-data"]);

    std::fs::write(data.join("b"), random_bytes(4, 100_000)).expect("write");
    let between = env.backup(&[&data], &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.ok(&["verify", "--read-data"]);
    assert_eq!(
        env.dump(&first, &format!("{}/a", s(&data))),
        random_bytes(3, 200_000)
    );

    let report = env.json(&["key", "rotate", "--finish"]);
    assert_eq!(report["retired"], true, "{report}");
    assert!(
        report["packs_reencrypted"].as_u64().unwrap() > 0,
        "{report}"
    );
    env.ok(&["verify", "--read-data"]);
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 2);
    // The first snapshot has a new id (its manifest was sealed again); `between` was
    // written under the new key and keeps its id.
    assert!(snaps.iter().any(|s| s["id"] == between.as_str()));
    let renamed = snaps.iter().find(|s| s["id"] != between.as_str()).unwrap();
    let renamed = renamed["id"].as_str().unwrap().to_string();
    assert_eq!(
        env.dump(&renamed, &format!("{}/a", s(&data))),
        random_bytes(3, 200_000)
    );
    assert_eq!(
        env.dump(&between, &format!("{}/b", s(&data))),
        random_bytes(4, 100_000)
    );
    // Rerunning finds nothing to do.
    let again = env.json(&["key", "rotate", "--finish"]);
    assert_eq!(again["packs_reencrypted"], 0, "{again}");

    // Old key files put back: their passwords open nothing.
    for (name, bytes) in &old_keys {
        std::fs::write(env.repo.join("keys").join(name), bytes).unwrap();
    }
    let err = second.fail(&["snapshots"]);
    assert!(err.contains("generation 1"), "{err}");
    env.ok(&["snapshots"]);
}

/// The scenario through the binary: a stream backup that started before `key
/// rotate` and commits after it; `--finish` refuses while it runs; then `--finish` killed
/// (SIGKILL) at a range of moments, the repository verifying with `--read-data` and
/// restoring after each kill, and a last run completing.
#[test]
fn key_rotate_beside_a_running_backup_and_a_killed_finish() {
    use std::io::Write;
    use std::process::Stdio;
    let env = TestEnv::new();
    env.ok(&["init", "--pack-size", "1M"]);
    let base = random_bytes(5, 6_000_000);
    let first = env.backup_stream("base.bin", &base);

    // A backup of a stream, held open: its session exists before the rotation.
    let running_data = random_bytes(6, 3_000_000);
    let mut child = env
        .cmd(["--json", "backup", "--stdin", "--stdin-name", "running.bin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn backup");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(&running_data[..1_000_000]).expect("write");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while env.repo_file_names("sessions").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the backup made no session"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let report = env.json(&["key", "rotate"]);
    assert_eq!(report["generation"], 2);
    let err = env.fail(&["key", "rotate", "--finish"]);
    assert!(err.contains("before the rotation"), "{err}");
    stdin.write_all(&running_data[1_000_000..]).expect("write");
    drop(stdin);
    let out = child.wait_with_output().expect("wait");
    let running = parse_json(&out, &["backup"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.ok(&["verify", "--read-data"]);
    assert_eq!(env.dump(&running, "running.bin"), running_data);
    let after_data = random_bytes(7, 2_000_000);
    let after = env.backup_stream("after.bin", &after_data);

    // --finish killed at growing moments.
    let mut killed = 0;
    for delay_ms in [0u64, 50, 150, 300, 500, 800, 1200, 1800] {
        let mut finish = env.spawn(&["key", "rotate", "--finish"]);
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let done = finish.try_wait().expect("poll").is_some();
        if !done {
            let _ = finish.kill();
            killed += 1;
        }
        let _ = finish.wait_with_output();
        // A kill leaves the gc lease until it expires; its holder is dead, so the next
        // run takes it over (SPEC.md section 18). Everything stays readable.
        env.ok(&["verify", "--read-data"]);
        let names: Vec<String> = env
            .snapshots()
            .iter()
            .map(|s| s["paths"][0].as_str().unwrap().to_string())
            .collect();
        // A kill between a manifest's re-sealed copy and the old one's deletion leaves
        // the snapshot listed twice for a moment (as a killed `tag` does); the next
        // finish deletes the old one instead of sealing it again.
        let distinct: std::collections::BTreeSet<&String> = names.iter().collect();
        assert_eq!(distinct.len(), 3, "{names:?}");
        assert!(names.len() <= 4, "{names:?}");
        if done {
            break;
        }
    }
    assert!(killed >= 2, "finish was never killed mid-way ({killed})");
    let report = env.json(&["key", "rotate", "--finish"]);
    let again = env.json(&["key", "rotate", "--finish"]);
    assert_eq!(again["packs_reencrypted"], 0, "{report} then {again}");
    assert_eq!(again["retired"], false, "{again}");
    env.ok(&["verify", "--read-data"]);
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 3);
    for s in &snaps {
        let id = s["id"].as_str().unwrap();
        let (name, data) = match s["paths"][0].as_str().unwrap() {
            "/base.bin" => ("base.bin", &base),
            "/running.bin" => ("running.bin", &running_data),
            "/after.bin" => ("after.bin", &after_data),
            other => panic!("unexpected snapshot {other}"),
        };
        assert_eq!(&env.dump(id, name), data, "{name}");
    }
    let _ = (first, after);
}
