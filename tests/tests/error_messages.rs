//! What the user reads when a command fails: one line naming the real cause, not a
//! symptom of it. Each test runs the real binary and reads its stderr.

mod common;

use common::*;
use std::fs;

/// `text` holds `needle` exactly once.
fn once(text: &str, needle: &str) -> bool {
    text.matches(needle).count() == 1
}

/// Every local I/O error printed its OS error twice ("/x: No such file or directory
/// (os error 2): No such file or directory (os error 2)"): the engine's error shows its
/// cause and also returns it as its source, and the whole chain was printed.
#[test]
fn os_error_is_printed_once() {
    let env = TestEnv::init();
    let missing = env.path("missing");
    let line = env.fail(&["backup", s(&missing)]);
    assert!(
        line.contains(s(&missing)) && once(&line, "(os error 2)"),
        "{line}"
    );

    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"content").unwrap();
    env.backup(&[&src], &[]);
    // A restore target below a regular file: ENOTDIR.
    let file = env.path("a-file");
    fs::write(&file, b"").unwrap();
    let target = file.join("target");
    let line = env.fail(&["restore", "latest", "--target", s(&target)]);
    assert!(once(&line, "(os error 20)"), "{line}");

    // datasafed prints through the same path.
    let out = output_of({
        let mut c = env.cmd(["datasafed", "push", s(&missing), "x"]);
        c.env_remove("DPREPO_REPOSITORY")
            .env("DATASAFED_LOCAL_BACKEND_PATH", &env.repo);
        c
    });
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(once(&err, "(os error 2)"), "{err}");
}

/// A damaged key file read as "wrong password": with one key file, a flipped byte
/// anywhere in it (or a cut) leaves no key that opens, and the user was sent hunting for
/// another password instead of for a copy of the key file.
#[test]
fn damaged_key_file_is_reported_as_damaged_not_as_a_wrong_password() {
    let env = TestEnv::init();
    let keys = env.repo_files("keys");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key = &keys[0];
    let name = format!("keys/{}", key.file_name().unwrap().to_string_lossy());
    let original = fs::read(key).unwrap();
    let flipped = |at: usize| {
        let mut b = original.clone();
        b[at] ^= 0x01;
        b
    };
    let cases = [
        (
            "a flipped bit in the wrapped master key",
            flipped(original.len() - 1),
        ),
        ("a flipped bit in the salt", flipped(6 + 1 + 12)),
        (
            "a flipped bit in the hostname",
            flipped(6 + 1 + 12 + 16 + 8 + 2),
        ),
        ("cut short", original[..original.len() / 2].to_vec()),
    ];
    for (what, bytes) in cases {
        write_over(key, &bytes);
        let line = env.fail(&["snapshots"]);
        assert!(
            line.contains(&name) && line.contains("corrupt") && !line.contains("wrong password"),
            "key file {what}: {line}"
        );
    }
    write_over(key, &original);
    assert!(env.snapshots().is_empty());
    // With the key file intact, a wrong password is still called one.
    let line = env.same_repository("not the password").fail(&["snapshots"]);
    assert!(line.contains("wrong password"), "{line}");
}

/// `backup --stdin --stdin-name NAME` with a name longer than a tree accepts failed with
/// "invalid argument: tree is corrupt: invalid file name \"nnnn…\"", the whole name
/// printed, once the stream had been read and stored.
#[test]
fn over_long_stdin_name_is_refused_as_too_long_not_as_a_corrupt_tree() {
    let env = TestEnv::init();
    let name = "n".repeat(5000);
    let args = ["backup", "--stdin", "--stdin-name", name.as_str()];
    let mut child = env
        .cmd(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn dprepo");
    let mut stdin = child.stdin.take().unwrap();
    // The command may refuse before reading all of it: a broken pipe is fine.
    let _ = std::io::Write::write_all(&mut stdin, b"stream content");
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let line = assert_clean_failure(&out, &args);
    assert!(
        line.contains("5000") && line.contains("4096") && !line.contains("corrupt"),
        "{line}"
    );
    assert!(line.len() < 200, "the name is not printed whole: {line}");
    assert!(env.snapshots().is_empty());
    assert!(env.repo_files("data").is_empty(), "nothing was stored");

    // The longest name a tree takes is taken.
    let longest = "n".repeat(4096);
    let id = env.backup_stream(&longest, b"stream content");
    assert_eq!(env.dump(&id, &longest), b"stream content");
}

/// A repository location that is a regular file read as "storage config: Not a
/// directory (os error 20)", which names neither the location nor what is wrong with it.
#[test]
fn repository_location_that_is_a_file_is_called_a_file() {
    let env = TestEnv::new();
    let file = env.path("not-a-directory");
    fs::write(&file, b"a file").unwrap();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let below = file.join("repo");
    for location in [&file, &below] {
        for args in [
            &["init"][..],
            &["snapshots"],
            &["backup", s(&src)],
            &["verify"],
        ] {
            let mut all = vec!["-r", s(location)];
            all.extend_from_slice(args);
            let line = env.fail(&all);
            assert!(
                line.contains(&format!("{} is a file, not a directory", s(&file)))
                    && line.contains(s(location))
                    && !line.contains("storage config"),
                "{all:?}: {line}"
            );
        }
    }
    assert_eq!(fs::read(&file).unwrap(), b"a file");
}
