//! Access keys through the real binaries (SPEC.md section 6.1): `dprepo key add-access`
//! makes one, `datasafed` and `dprepo` open with it through DPREPO_ACCESS_KEY_FILE (no
//! password hashed: `dprepo -v` counts them), `dprepo key remove` revokes it while the
//! password and other keys still open; and the repository key from datasafed.conf.

mod common;

use common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn datasafed_bin() -> PathBuf {
    let bin = dprepo_bin().with_file_name("datasafed");
    assert!(
        bin.is_file(),
        "{} not found; run `cargo build -p dprepo-tools` (it builds both binaries)",
        bin.display()
    );
    bin
}

/// `program ARGS` with no inherited DPREPO_*/DATASAFED_* variables, `vars` set and
/// `input` on stdin.
fn run(program: &Path, vars: &[(&str, &str)], args: &[&str], input: &[u8]) -> Output {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("DPREPO_") || k.starts_with("DATASAFED_") {
            cmd.env_remove(&key);
        }
    }
    cmd.envs(vars.iter().copied())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("writer");
    out
}

fn ok(out: Output, what: &str) -> Vec<u8> {
    assert_success(&out, &[what]);
    out.stdout
}

/// The `Error: ` line of a failed datasafed command.
fn failure(out: Output, what: &str) -> String {
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{what}: {err}");
    assert!(
        err.starts_with("Error: ") && !err.contains("panicked"),
        "{what}: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{what}: {err}");
    err
}

fn second_key_dprepo<'a>(repo: &'a Path, key: &'a Path) -> [(&'static str, &'a str); 2] {
    [
        ("DPREPO_REPOSITORY", s(repo)),
        ("DPREPO_ACCESS_KEY_FILE", s(key)),
    ]
}

fn zstd_of(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).expect("zstd")
}

#[test]
fn datasafed_opens_with_an_access_key_until_it_is_revoked() {
    let dir = tempfile::tempdir().expect("tmp");
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).expect("repo dir");
    let cache = dir.path().join("cache");
    let with_password = [
        ("DATASAFED_LOCAL_BACKEND_PATH", s(&repo)),
        ("DPREPO_PASSWORD", PASSWORD),
        ("DPREPO_CACHE_DIR", s(&cache)),
    ];
    let ds = datasafed_bin();
    // The first push (with the password) creates the repository.
    ok(
        run(&ds, &with_password, &["push", "-", "/first"], b"one"),
        "push",
    );
    let key_file = dir.path().join("access-key");
    let dprepo_pw = [
        ("DPREPO_REPOSITORY", s(&repo)),
        ("DPREPO_PASSWORD", PASSWORD),
    ];
    ok(
        run(
            &dprepo_bin(),
            &dprepo_pw,
            &[
                "key",
                "add-access",
                "--label",
                "pods of ns-a",
                "-o",
                s(&key_file),
            ],
            b"",
        ),
        "key add-access",
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key_file)
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "access key file mode {mode:o}");
    let second = ok(
        run(&dprepo_bin(), &dprepo_pw, &["key", "add-access"], b""),
        "key add-access",
    );
    let second_file = dir.path().join("second-key");
    std::fs::write(&second_file, &second).expect("second key");

    // datasafed with the access key only.
    let with_key = [
        ("DATASAFED_LOCAL_BACKEND_PATH", s(&repo)),
        ("DPREPO_ACCESS_KEY_FILE", s(&key_file)),
        ("DPREPO_CACHE_DIR", s(&cache)),
    ];
    // A stream the script compressed itself (no -z) comes back byte for byte.
    let compressed = zstd_of(&random_bytes(7, 300_000));
    ok(
        run(&ds, &with_key, &["push", "-", "/wal/0001.zst"], &compressed),
        "push",
    );
    let pulled = ok(
        run(&ds, &with_key, &["pull", "/wal/0001.zst", "-"], b""),
        "pull",
    );
    assert!(pulled == compressed, "pull without -d changed the bytes");
    let listed = ok(run(&ds, &with_key, &["list", "-r", "/"], b""), "list");
    assert_eq!(
        String::from_utf8_lossy(&listed),
        "first\nwal/\nwal/0001.zst\n"
    );
    let stat = ok(run(&ds, &with_key, &["stat", "--json", "/"], b""), "stat");
    assert!(String::from_utf8_lossy(&stat).contains("\"files\":2"));

    // dprepo counts password hashes: none with the access key, one with the password.
    let dprepo_key = [
        ("DPREPO_REPOSITORY", s(&repo)),
        ("DPREPO_ACCESS_KEY_FILE", s(&key_file)),
    ];
    let out = run(&dprepo_bin(), &dprepo_key, &["-v", "snapshots"], b"");
    assert_success(&out, &["snapshots"]);
    assert!(
        stderr(&out).contains("password hashes: 0"),
        "{}",
        stderr(&out)
    );
    let out = run(&dprepo_bin(), &dprepo_pw, &["-v", "snapshots"], b"");
    assert!(
        stderr(&out).contains("password hashes: 1"),
        "{}",
        stderr(&out)
    );

    // Listed with its label.
    let keys: serde_json::Value = serde_json::from_slice(&ok(
        run(&dprepo_bin(), &dprepo_key, &["key", "list", "--json"], b""),
        "key list",
    ))
    .expect("json");
    let keys = keys["keys"].as_array().expect("keys").clone();
    assert_eq!(keys.len(), 3);
    let ours = keys
        .iter()
        .find(|k| k["label"] == "pods of ns-a")
        .expect("labelled key");
    assert_eq!(ours["kind"], "access");
    let id = ours["id"].as_str().expect("id").to_string();

    // A wrong access key (right key file, another secret) is refused.
    let text = std::fs::read_to_string(&key_file).expect("key");
    let text = text.trim_end();
    let last = if text.ends_with('0') { "1" } else { "0" };
    let wrong_file = dir.path().join("wrong-key");
    std::fs::write(&wrong_file, format!("{}{last}\n", &text[..text.len() - 1])).expect("w");
    let wrong = [
        ("DATASAFED_LOCAL_BACKEND_PATH", s(&repo)),
        ("DPREPO_ACCESS_KEY_FILE", s(&wrong_file)),
    ];
    let err = failure(run(&ds, &wrong, &["list", "/"], b""), "wrong key");
    assert!(err.contains("another key"), "{err}");
    // Not an access key at all.
    std::fs::write(&wrong_file, "hunter2\n").expect("w");
    let err = failure(run(&ds, &wrong, &["list", "/"], b""), "not a key");
    assert!(err.contains("not a dprepo access key"), "{err}");

    // Revoke it: it opens nothing any more, even with the metadata cache that saw it;
    // the password and the other access key still open.
    let out = run(
        &dprepo_bin(),
        &dprepo_pw,
        &["key", "remove", &id[..12]],
        b"",
    );
    assert_success(&out, &["key remove"]);
    let err = failure(run(&ds, &with_key, &["list", "/"], b""), "revoked key");
    assert!(err.contains("revoked"), "{err}");
    let second_key = [
        ("DATASAFED_LOCAL_BACKEND_PATH", s(&repo)),
        ("DPREPO_ACCESS_KEY_FILE", s(&second_file)),
    ];
    ok(run(&ds, &second_key, &["list", "/"], b""), "second key");
    ok(run(&ds, &with_password, &["list", "/"], b""), "password");
    // The last password cannot be removed.
    let password_id = keys
        .iter()
        .find(|k| k["kind"] == "password")
        .and_then(|k| k["id"].as_str())
        .expect("password key")
        .to_string();
    let out = run(
        &dprepo_bin(),
        &second_key_dprepo(&repo, &second_file),
        &["key", "remove", &password_id],
        b"",
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("last password"), "{}", stderr(&out));
    let files = std::fs::read_dir(repo.join("keys")).expect("keys").count();
    assert_eq!(files, 2);

    // An access key cannot create a repository where there is none.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("empty");
    let elsewhere = [
        ("DATASAFED_LOCAL_BACKEND_PATH", s(&empty)),
        ("DPREPO_ACCESS_KEY_FILE", s(&second_file)),
    ];
    let err = failure(run(&ds, &elsewhere, &["push", "-", "/x"], b"x"), "no repo");
    assert!(
        err.contains("an access key opens an existing repository only"),
        "{err}"
    );
    assert!(!empty.join("config").exists());
}

#[test]
fn the_key_comes_from_the_datasafed_config_or_every_command_says_where_to_give_one() {
    let dir = tempfile::tempdir().expect("tmp");
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).expect("repo dir");
    let conf = dir.path().join("datasafed.conf");
    let storage = format!("[storage]\ntype = local\nroot = {}\n", s(&repo));
    let conf_var = [("DATASAFED_CONFIG", s(&conf))];
    let ds = datasafed_bin();

    // No key anywhere: every command fails with one line naming where a key goes, and
    // nothing is created.
    std::fs::write(&conf, &storage).expect("conf");
    for args in [
        &["push", "-", "/x"][..],
        &["pull", "/x", "-"],
        &["list", "/"],
        &["stat", "/"],
        &["rm", "/x"],
        &["rmdir", "/d"],
        &["mkdir", "/d"],
    ] {
        let err = failure(run(&ds, &conf_var, args, b"x"), args[0]);
        assert!(
            err.contains("no repository key")
                && err.contains("DPREPO_ACCESS_KEY_FILE")
                && err.contains(s(&conf)),
            "{err}"
        );
    }
    assert!(!repo.join("config").exists());

    // A password file named in the config, relative to the config's directory.
    std::fs::write(dir.path().join("pw"), format!("{PASSWORD}\n")).expect("pw");
    std::fs::write(&conf, format!("{storage}dprepo_password_file = pw\n")).expect("conf");
    ok(
        run(&ds, &conf_var, &["push", "-", "/x"], b"from the config"),
        "push",
    );
    let pulled = ok(run(&ds, &conf_var, &["pull", "/x", "-"], b""), "pull");
    assert_eq!(pulled, b"from the config");
    // dprepo without -r finds both the storage and the key there.
    let out = run(&dprepo_bin(), &conf_var, &["snapshots", "--json"], b"");
    assert_success(&out, &["snapshots"]);
    // An inline password, and an access key file.
    std::fs::write(&conf, format!("{storage}dprepo_password = {PASSWORD}\n")).expect("conf");
    ok(run(&ds, &conf_var, &["list", "/"], b""), "list");
    let key_file = dir.path().join("ak");
    ok(
        run(
            &dprepo_bin(),
            &[
                ("DPREPO_REPOSITORY", s(&repo)),
                ("DPREPO_PASSWORD", PASSWORD),
            ],
            &["key", "add-access", "-o", s(&key_file)],
            b"",
        ),
        "add-access",
    );
    std::fs::write(
        &conf,
        format!("{storage}dprepo_access_key_file = {}\n", s(&key_file)),
    )
    .expect("conf");
    let listed = ok(run(&ds, &conf_var, &["list", "/"], b""), "list");
    assert_eq!(listed, b"x\n");
    // A wrong password in the config is a wrong key, not a new repository.
    std::fs::write(&conf, format!("{storage}dprepo_password = nope\n")).expect("conf");
    let err = failure(run(&ds, &conf_var, &["list", "/"], b""), "wrong");
    assert!(err.contains("another key"), "{err}");
}

/// Copy the manifest of the newest datasafed file `n` times as `/wal/<8 digits>`, as
/// repo-format/examples/many_datasafed_files.rs does for the benchmark.
fn add_files(repo: &Path, key_file: &Path, n: u64) {
    use dprepo_repo_format::key::AccessKey;
    use dprepo_repo_format::repo::IndexPlace;
    use dprepo_repo_format::storage::{LocalStorage, Storage};
    use std::sync::Arc;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let key = AccessKey::parse(&std::fs::read(key_file).expect("key")).expect("key");
        let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(repo));
        let repo = dprepo_repo_format::Repository::open_with_access_key(
            storage.clone(),
            &key,
            &IndexPlace::Memory,
        )
        .await
        .expect("open");
        let template = repo.list_snapshots().await.expect("snapshots")[0]
            .manifest
            .clone();
        for i in 0..n {
            let mut m = template.clone();
            m.time = template.time - chrono::Duration::seconds((n - i) as i64);
            m.tags = vec![
                "datasafed".into(),
                format!("datasafed:path=/wal/{i:08}"),
                "datasafed:codec=none".into(),
            ];
            let bytes = m.encode(repo.keys());
            let name = format!(
                "snapshots/{}",
                dprepo_repo_format::BlobId::of_stored(&bytes).to_hex()
            );
            storage.put(&name, &bytes).await.expect("put");
        }
    });
}

/// `list` and `stat` over many files read each manifest once (the first call records them
/// in the repository's catalogue, SPEC.md section 14.2) and still follow every change:
/// files removed or added by other processes, and a damaged catalogue object. The
/// 100,000-file figures are in BENCHMARKS.md.
#[test]
fn list_and_stat_over_many_files_follow_changes_made_elsewhere() {
    let dir = tempfile::tempdir().expect("tmp");
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).expect("repo dir");
    let ds = datasafed_bin();
    let pw = [
        ("DATASAFED_LOCAL_BACKEND_PATH", s(&repo)),
        ("DPREPO_PASSWORD", PASSWORD),
    ];
    ok(run(&ds, &pw, &["push", "-", "/first"], b"first"), "push");
    let key_file = dir.path().join("ak");
    ok(
        run(
            &dprepo_bin(),
            &[
                ("DPREPO_REPOSITORY", s(&repo)),
                ("DPREPO_PASSWORD", PASSWORD),
            ],
            &["key", "add-access", "-o", s(&key_file)],
            b"",
        ),
        "add-access",
    );
    const N: u64 = 2000;
    add_files(&repo, &key_file, N);
    let cache = dir.path().join("cache");
    let other_cache = dir.path().join("other-cache");
    let vars = |cache: &Path| {
        vec![
            ("DATASAFED_LOCAL_BACKEND_PATH", s(&repo).to_string()),
            ("DPREPO_ACCESS_KEY_FILE", s(&key_file).to_string()),
            ("DPREPO_CACHE_DIR", s(cache).to_string()),
        ]
    };
    let here = vars(&cache);
    let here: Vec<(&str, &str)> = here.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let count = |args: &[&str]| {
        String::from_utf8(ok(run(&ds, &here, args, b""), args[0]))
            .expect("utf-8")
            .lines()
            .count() as u64
    };
    let stat_files = || {
        let out = ok(run(&ds, &here, &["stat", "--json", "/"], b""), "stat");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        v["files"].as_u64().expect("files")
    };
    assert_eq!(count(&["list", "-r", "-f", "/wal"]), N);
    assert_eq!(stat_files(), N + 1);
    let catalogue = |repo: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(repo.join("catalog"))
            .map(|d| d.map(|e| e.expect("entry").path()).collect())
            .unwrap_or_default()
    };
    let objects = catalogue(&repo);
    assert_eq!(
        objects.len(),
        1,
        "the first list recorded one catalogue object"
    );
    // Served from the cache: the same answers.
    assert_eq!(count(&["list", "-r", "-f", "/wal"]), N);

    // Another pod (its own cache) removes one file and pushes another.
    let there = vars(&other_cache);
    let there: Vec<(&str, &str)> = there.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ok(run(&ds, &there, &["rm", "/wal/00000005"], b""), "rm");
    ok(run(&ds, &there, &["push", "-", "/wal/new"], b"new"), "push");
    assert_eq!(count(&["list", "-r", "-f", "/wal"]), N);
    assert_eq!(count(&["list", "/wal/00000005"]), 0);
    assert_eq!(count(&["list", "/wal/new"]), 1);
    let pulled = ok(run(&ds, &here, &["pull", "/wal/new", "-"], b""), "pull");
    assert_eq!(pulled, b"new");

    // A damaged catalogue object is reported, the manifests answer, and the call
    // records them again in a new object.
    let bytes = std::fs::read(&objects[0]).expect("catalogue object");
    std::fs::write(&objects[0], &bytes[..bytes.len() / 2]).expect("truncate");
    let out = run(&ds, &here, &["stat", "--json", "/"], b"");
    assert!(out.status.success(), "stat: {}", stderr(&out));
    assert!(stderr(&out).contains("cannot be read"), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["files"].as_u64(), Some(N + 1));
    assert_eq!(
        catalogue(&repo).len(),
        2,
        "recorded again beside the damaged one"
    );
}

/// An operator keeps a secret and has a pod register it (`datasafed access-key`): the pod
/// prints only the key file's id; the operator composes `dprepo-ak1-ID-SECRET` and hands
/// that to other pods in place of the password. Registering again adds nothing.
#[test]
fn datasafed_registers_a_chosen_secret_once_and_pods_open_with_the_composed_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).expect("repo dir");
    let with_password = [
        ("DATASAFED_LOCAL_BACKEND_PATH", s(&repo)),
        ("DPREPO_PASSWORD", PASSWORD),
    ];
    let ds = datasafed_bin();
    let secret_file = dir.path().join("secret");
    let secret = "ab".repeat(32);
    std::fs::write(&secret_file, format!("{secret}\n")).expect("secret");
    let register = |vars: &[(&str, &str)]| {
        run(
            &ds,
            vars,
            &[
                "access-key",
                "--secret-file",
                s(&secret_file),
                "--label",
                "BackupRepo r",
            ],
            b"",
        )
    };
    // No repository yet: nothing to register in, and nothing is created.
    let err = failure(register(&with_password), "access-key before any push");
    assert!(err.contains("no repository"), "{err}");
    ok(
        run(&ds, &with_password, &["push", "-", "/first"], b"one"),
        "push",
    );
    let id_of = |out: Vec<u8>| -> String {
        let text = String::from_utf8(out).expect("utf-8");
        text.trim()
            .strip_prefix("dprepo-access-key-id: ")
            .unwrap_or_else(|| panic!("unexpected output {text:?}"))
            .to_string()
    };
    let id = id_of(ok(register(&with_password), "access-key"));
    assert_eq!(id.len(), 64, "{id}");
    assert_eq!(id_of(ok(register(&with_password), "access-key again")), id);
    let keys = ok(
        run(
            &dprepo_bin(),
            &[
                ("DPREPO_REPOSITORY", s(&repo)),
                ("DPREPO_PASSWORD", PASSWORD),
            ],
            &["--json", "key", "list"],
            b"",
        ),
        "key list",
    );
    let keys: serde_json::Value = serde_json::from_slice(&keys).expect("json");
    let access: Vec<&serde_json::Value> = keys["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter(|k| k["kind"] == "access")
        .collect();
    assert_eq!(access.len(), 1, "{keys}");
    assert_eq!(access[0]["id"], id.as_str());
    assert_eq!(access[0]["label"], "BackupRepo r");

    // The composed key, given where the password goes, opens the repository.
    let key_file = dir.path().join("dprepo-password");
    std::fs::write(&key_file, format!("dprepo-ak1-{id}-{secret}\n")).expect("key");
    let with_key = [
        ("DATASAFED_LOCAL_BACKEND_PATH", s(&repo)),
        ("DPREPO_PASSWORD_FILE", s(&key_file)),
    ];
    ok(
        run(&ds, &with_key, &["push", "-", "/second"], b"two"),
        "push with the access key",
    );
    assert_eq!(
        ok(run(&ds, &with_key, &["pull", "/first", "-"], b""), "pull"),
        b"one"
    );
    // A malformed secret is refused with the file named.
    std::fs::write(&secret_file, "not hex").expect("secret");
    let err = failure(register(&with_password), "a malformed secret");
    assert!(err.contains("64 hex digits"), "{err}");
}
