//! `dprepo key`: list the repository's keys, add passwords and access keys, change the
//! password in use, remove (revoke) keys.

use crate::output::{print, print_json};
use crate::repository;
use crate::Cli;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use dprepo_repo_format::key::{AccessKey, KdfParams, KeyKind};
use dprepo_repo_format::repo::{current_hostname, current_username, KEYS_DIR};
use dprepo_repo_format::Repository;
use serde_json::json;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List the key files: passwords and access keys, when and by whom they were made.
    /// Needs no key (key file headers are plaintext); given one (DPREPO_PASSWORD,
    /// --password-file, --access-key-file), marks the key file it opens as in use.
    List,
    /// Add a password: a new key file wrapping the same master key, so both the old and
    /// the new password open the repository. The new password comes from
    /// --new-password-file, else DPREPO_NEW_PASSWORD, else a prompt on a terminal.
    Add(AddArgs),
    /// Change the password in use: add a key file for the new password, check that it
    /// opens, then remove the key file of the password the command opened with. At no
    /// moment does no key open the repository.
    Passwd(AddArgs),
    /// Make an access key: a secret that opens the repository without password hashing,
    /// for processes started often (datasafed in pods, via DPREPO_ACCESS_KEY_FILE).
    /// Revoke it with `dprepo key remove`.
    AddAccess(AddAccessArgs),
    /// Rotate the master key: a new master key seals everything written from now on,
    /// and only the password given (re-wrapped for the new key) opens the repository;
    /// existing data stays readable. `--finish` then re-encrypts existing data under the
    /// new key and retires the old one (SPEC.md sections 5.1, 18.2).
    Rotate(RotateArgs),
    /// Remove a key file (a password or an access key) by id or unique id prefix: it
    /// opens nothing from then on. The key in use and the last password cannot be
    /// removed.
    Remove(RemoveArgs),
}

#[derive(Debug, Args)]
pub struct AddAccessArgs {
    /// What the key is for (shown by `dprepo key list`), e.g. the namespace it is given to.
    #[arg(long, default_value = "")]
    label: String,
    /// Write the access key to this new file (mode 0600) instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Read the new password from this file (first line).
    #[arg(long, value_name = "FILE")]
    new_password_file: Option<PathBuf>,
    /// Host name recorded in the new key file (default: this host's).
    #[arg(long)]
    host: Option<String>,
    /// User name recorded in the new key file (default: $USER).
    #[arg(long)]
    user: Option<String>,
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// Re-encrypt everything still under the previous master key, delete the old key
    /// files and retire the old key. Safe to run again after an interruption; refuses
    /// while backups that opened the repository before the rotation still run.
    #[arg(long)]
    finish: bool,
    /// Rotate although other key files (other passwords, access keys) exist: they wrap
    /// the old master key, stop opening the repository and are removed. Add them again
    /// afterwards (`key add`, `key add-access`).
    #[arg(long)]
    remove_other_keys: bool,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// Key file id, or a unique prefix of it.
    id: String,
    /// Remove even the key file this command opened the repository with (the last
    /// password is refused even so).
    #[arg(long)]
    force: bool,
}

pub async fn run(cli: &Cli, command: &KeyCommand) -> Result<u8> {
    match command {
        KeyCommand::List => list(cli).await,
        KeyCommand::Add(a) => add(cli, a, false).await,
        KeyCommand::Passwd(a) => add(cli, a, true).await,
        KeyCommand::AddAccess(a) => add_access(cli, a).await,
        KeyCommand::Remove(a) => remove(cli, a).await,
        KeyCommand::Rotate(a) => rotate(cli, a).await,
    }
}

async fn list(cli: &Cli) -> Result<u8> {
    // Given a key without asking for one, open with it to mark the key file it opens.
    let in_use = if key_without_prompt(cli)? {
        Some(repository::open(cli).await?.opened_with().to_string())
    } else {
        None
    };
    let storage = repository::storage(cli)?;
    let files = Repository::key_files(&*storage)
        .await
        .with_context(|| format!("listing {KEYS_DIR}"))?;
    let mut docs = Vec::new();
    let mut text = String::new();
    for (name, file) in &files {
        let id = name.strip_prefix(KEYS_DIR).unwrap_or(name);
        let current = in_use.as_deref() == Some(name.as_str());
        let mark = if current { "*" } else { " " };
        match file {
            Ok(k) => {
                let kind = match k.kind {
                    KeyKind::Password => "password",
                    KeyKind::Access => "access",
                };
                let created = chrono::DateTime::from_timestamp(k.created, 0)
                    .map(|t| crate::output::time(&t))
                    .unwrap_or_else(|| k.created.to_string());
                let _ = writeln!(
                    text,
                    "{mark}{}  {kind:<8}  {created}  {}@{}{}",
                    &id[..id.len().min(16)],
                    k.username,
                    k.hostname,
                    if k.label.is_empty() {
                        String::new()
                    } else {
                        format!("  {}", k.label)
                    }
                );
                docs.push(json!({
                    "id": id, "kind": kind, "created": created, "hostname": k.hostname,
                    "username": k.username, "label": k.label, "in_use": current,
                }));
            }
            Err(e) => {
                let _ = writeln!(text, " {}  unreadable: {e}", &id[..id.len().min(16)]);
                docs.push(json!({ "id": id, "error": e.to_string() }));
            }
        }
    }
    if cli.json {
        print_json(&json!({ "keys": docs }))?;
    } else if files.is_empty() {
        print(&format!("no key files in {KEYS_DIR}\n"))?;
    } else {
        print(&format!(
            " {:<16}  {:<8}  {:<20}  user@host  label\n{text}{}",
            "id",
            "kind",
            "created",
            if in_use.is_some() {
                "(* the key this command opened with)\n"
            } else {
                ""
            }
        ))?;
    }
    Ok(0)
}

/// The key given on the command line or in the environment, without prompting.
fn key_without_prompt(cli: &Cli) -> Result<bool> {
    Ok(cli.access_key_file.is_some()
        || repository::password_without_prompt(cli.password_file.as_deref())?.is_some())
}

/// The new password of `key add` / `key passwd`: --new-password-file, else
/// DPREPO_NEW_PASSWORD, else asked twice on a terminal.
fn new_password(a: &AddArgs) -> Result<Vec<u8>> {
    if let Some(file) = &a.new_password_file {
        return repository::read_secret_file(file, "new password file");
    }
    if let Some(pw) = std::env::var_os("DPREPO_NEW_PASSWORD").filter(|v| !v.is_empty()) {
        return Ok(pw.into_encoded_bytes());
    }
    if std::io::stdin().is_terminal() {
        let pw = rpassword::prompt_password("enter new password: ").context("reading password")?;
        if pw.is_empty() {
            bail!("empty password");
        }
        let again =
            rpassword::prompt_password("enter new password again: ").context("reading password")?;
        if again != pw {
            bail!("passwords do not match");
        }
        return Ok(pw.into_bytes());
    }
    bail!("no new password: give --new-password-file or set DPREPO_NEW_PASSWORD (or run on a terminal to be asked)")
}

/// `key add` (`replace` false) and `key passwd` (`replace` true).
async fn add(cli: &Cli, a: &AddArgs, replace: bool) -> Result<u8> {
    // Read the new password before opening, so a missing one costs no password hash.
    let password = new_password(a)?;
    if AccessKey::looks_like(&password) {
        bail!("the new password has the form of an access key; make access keys with `dprepo key add-access`");
    }
    let mut repo = repository::open(cli).await?;
    let host = a.host.clone().unwrap_or_else(current_hostname);
    let user = a.user.clone().unwrap_or_else(current_username);
    let old = repo.opened_with().to_string();
    let name = if replace {
        repo.change_password(&password, KdfParams::default(), &host, &user)
            .await
            .with_context(|| format!("replacing the password of {old}"))?
    } else {
        repo.add_password_as(&password, KdfParams::default(), &host, &user)
            .await
            .context("writing the new key file")?
    };
    let id = name.strip_prefix(KEYS_DIR).unwrap_or(&name);
    if cli.json {
        let mut doc = json!({ "id": id, "hostname": host, "username": user });
        if replace {
            doc["removed"] = json!(old.strip_prefix(KEYS_DIR).unwrap_or(&old));
        }
        print_json(&doc)?;
    } else if !cli.quiet {
        if replace {
            eprintln!("password changed: added {name}, removed {old}");
        } else {
            eprintln!("added password key {name}");
        }
    }
    Ok(0)
}

async fn add_access(cli: &Cli, a: &AddAccessArgs) -> Result<u8> {
    // Refuse an existing output file before writing a key file nobody would get.
    if let Some(path) = &a.output {
        if path.exists() {
            bail!("{} already exists; choose a new file", path.display());
        }
    }
    let repo = repository::open(cli).await?;
    let key = repo
        .add_access_key(&a.label)
        .await
        .context("writing the access key file")?;
    let text = key.to_text();
    if let Some(path) = &a.output {
        write_private(path, format!("{text}\n").as_bytes()).with_context(|| {
            format!(
                "writing {} (the key file {} was written: remove it with `dprepo key remove {}`)",
                path.display(),
                key.key_name(),
                key.key_id().short()
            )
        })?;
    }
    if cli.json {
        let mut doc = json!({ "id": key.key_id().to_hex(), "label": a.label });
        match &a.output {
            Some(path) => doc["file"] = json!(path.display().to_string()),
            None => doc["access_key"] = json!(text),
        }
        print_json(&doc)?;
    } else if a.output.is_none() {
        print(&format!("{text}\n"))?;
    } else if !cli.quiet {
        eprintln!("access key {} written to {}", key.key_id().short(), {
            a.output
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        });
    }
    Ok(0)
}

/// Create `path` readable by its owner only, failing if it exists.
fn write_private(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

async fn remove(cli: &Cli, a: &RemoveArgs) -> Result<u8> {
    let prefix =
        a.id.strip_prefix(KEYS_DIR)
            .unwrap_or(&a.id)
            .to_ascii_lowercase();
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("key {}: not a key id or id prefix", a.id);
    }
    let repo = repository::open(cli).await?;
    let files = Repository::key_files(&**repo.storage()).await?;
    let matches: Vec<&String> = files
        .iter()
        .map(|(n, _)| n)
        .filter(|n| {
            n.strip_prefix(KEYS_DIR)
                .is_some_and(|h| h.starts_with(&prefix))
        })
        .collect();
    let name = match matches.as_slice() {
        [one] => (*one).clone(),
        [] => bail!("key {}: no such key file in {KEYS_DIR}", a.id),
        many => bail!(
            "key {}: prefix matches {} key files; give more digits",
            a.id,
            many.len()
        ),
    };
    repo.remove_key_with(&name, a.force)
        .await
        .with_context(|| format!("removing {name}"))?;
    if !cli.quiet && !cli.json {
        eprintln!("removed {name}");
    }
    if cli.json {
        print_json(&json!({ "removed": name }))?;
    }
    Ok(0)
}

async fn rotate(cli: &Cli, a: &RotateArgs) -> Result<u8> {
    let options = dprepo_repo_format::gc::GcOptions::default();
    if a.finish {
        let repo = repository::open(cli).await?;
        let progress = std::sync::Arc::new(dprepo_repo_format::rotate::FinishProgress::default());
        let p = progress.clone();
        let status = crate::progress::Status::start(cli.quiet || cli.json, move || {
            use std::sync::atomic::Ordering::Relaxed;
            format!(
                "key rotate --finish: {}/{} packs, {} read, {} written",
                p.packs_done.load(Relaxed),
                p.packs_total.load(Relaxed),
                crate::output::bytes(p.bytes_read.load(Relaxed)),
                crate::output::bytes(p.bytes_written.load(Relaxed))
            )
        });
        let result =
            dprepo_repo_format::rotate::finish_with_progress(&repo, &options, &progress).await;
        status.finish();
        let report = result.context("finishing the key rotation")?;
        if cli.json {
            print_json(&serde_json::to_value(&report)?)?;
        } else if !cli.quiet {
            if report.generation < 2 {
                eprintln!("the master key was never rotated: nothing to finish");
            } else {
                eprintln!(
                    "master key generation {} alone: {} packs ({} bytes), {} index files, {} snapshots and {} tombstones re-encrypted; {} old key files and key rings removed{}",
                    report.generation,
                    report.packs_reencrypted,
                    report.bytes_written,
                    report.index_files_rewritten,
                    report.snapshots.len(),
                    report.tombstones_reencrypted,
                    report.removed.len(),
                    if report.retired { "; the old master key is retired" } else { "" }
                );
                for (old, new) in &report.snapshots {
                    eprintln!("snapshot {} is now {}", &old[..16], &new[..16]);
                }
            }
        }
        return Ok(0);
    }
    // The password in use is written again for the new master key, so it is needed
    // as a password (an access key cannot be re-wrapped without its secret).
    let password = match repository::repo_key(cli)? {
        repository::RepoKey::Password(pw) => pw,
        repository::RepoKey::Access(_) => {
            bail!("key rotate needs the password (an access key cannot be carried over to the new master key)")
        }
    };
    let repo = repository::open(cli).await?;
    let report =
        dprepo_repo_format::rotate::rotate(&repo, &password, a.remove_other_keys, &options)
            .await
            .context("rotating the master key")?;
    if cli.json {
        print_json(&serde_json::to_value(&report)?)?;
    } else if !cli.quiet {
        eprintln!(
            "master key generation {} committed: new data is sealed under it; the password's key file is now {}; {} key files of the old key removed. Run `dprepo key rotate --finish` to re-encrypt existing data and retire the old key.",
            report.generation,
            report.key_file,
            report.removed_key_files.len()
        );
    }
    Ok(0)
}
