//! `dprepo completion SHELL` and `dprepo man`: generated from the command-line
//! definition, checked by the programs that consume them (bash completes with the
//! script, groff renders the pages).

mod common;

use common::*;
use std::fs;
use std::process::Command;

fn stdout_of(args: &[&str]) -> String {
    let out = output_of(bare_cmd(args));
    assert_success(&out, args);
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Run the bash completion function on `words` (the cursor on the last) and return
/// what it offers.
fn bash_complete(script: &std::path::Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let line = format!(
        "source '{}'; COMP_WORDS=({}); COMP_CWORD={}; _dprepo dprepo '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        s(script),
        quoted.join(" "),
        words.len() - 1,
        words[words.len() - 1],
        words[words.len().saturating_sub(2)],
    );
    let out = Command::new("bash")
        .args(["--norc", "-c", &line])
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn bash_completion_offers_subcommands_and_their_flags() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("dprepo.bash");
    fs::write(&script, stdout_of(&["completion", "bash"])).unwrap();
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap();
    assert!(syntax.success(), "the script parses");
    assert_eq!(bash_complete(&script, &["dprepo", "ba"]), vec!["backup"]);
    assert_eq!(
        bash_complete(&script, &["dprepo", "backup", "--exclude-c"]),
        vec!["--exclude-caches"]
    );
    let restore = bash_complete(&script, &["dprepo", "restore", "--ov"]);
    assert_eq!(restore, vec!["--overwrite"]);
    let values = bash_complete(&script, &["dprepo", "restore", "--overwrite", "if-"]);
    assert_eq!(values, vec!["if-changed", "if-newer"]);
}

#[test]
fn zsh_and_fish_completions_name_the_commands() {
    let zsh = stdout_of(&["completion", "zsh"]);
    assert!(zsh.starts_with("#compdef dprepo"), "{}", &zsh[..80]);
    assert!(zsh.contains("--exclude-larger-than"));
    let fish = stdout_of(&["completion", "fish"]);
    assert!(fish.contains("complete -c dprepo"));
    assert!(fish.contains("exclude-if-present"));
    let out = output_of(bare_cmd(["completion", "tcsh"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("possible values"), "{}", stderr(&out));
}

#[test]
fn man_pages_render_with_groff() {
    let page = stdout_of(&["man"]);
    assert!(page.contains(".TH dprepo 1"), "{}", &page[..200]);
    let dir = tempfile::tempdir().unwrap();
    let out = output_of(bare_cmd(["man", "--dir", s(dir.path())]));
    assert_success(&out, &["man", "--dir"]);
    for sub in [
        "dprepo",
        "dprepo-backup",
        "dprepo-restore",
        "dprepo-completion",
    ] {
        let path = dir.path().join(format!("{sub}.1"));
        assert!(path.exists(), "{sub}.1 is written");
        let text = Command::new("groff")
            .args(["-man", "-Tutf8", "-rLL=400n", "-rHY=0"])
            .arg(&path)
            .output()
            .expect("groff (apt-get install groff-base)");
        // grotty emboldens by overstriking (c BACKSPACE c): keep the last character.
        let mut plain = String::new();
        for c in String::from_utf8_lossy(&text.stdout).chars() {
            match c {
                '\u{8}' => {
                    plain.pop();
                }
                '\u{2010}' | '\u{2212}' => plain.push('-'),
                c => plain.push(c),
            }
        }
        let text = plain;
        assert!(text.contains("NAME"), "{sub}: {text}");
        if sub == "dprepo-backup" {
            assert!(text.contains("--exclude-caches"), "{text}");
        }
    }
}
