//! `dprepo key`: list the repository's keys, add access keys, remove (revoke) keys.

use crate::output::{print, print_json};
use crate::repository;
use crate::Cli;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use dprepo_repo_format::key::KeyKind;
use dprepo_repo_format::repo::KEYS_DIR;
use dprepo_repo_format::Repository;
use serde_json::json;
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List the key files: passwords and access keys (needs no key: their headers are
    /// plaintext).
    List,
    /// Make an access key: a secret that opens the repository without password hashing,
    /// for processes started often (datasafed in pods, via DPREPO_ACCESS_KEY_FILE).
    /// Revoke it with `dprepo key remove`.
    AddAccess(AddAccessArgs),
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
pub struct RemoveArgs {
    /// Key file id, or a unique prefix of it.
    id: String,
}

pub async fn run(cli: &Cli, command: &KeyCommand) -> Result<u8> {
    match command {
        KeyCommand::List => list(cli).await,
        KeyCommand::AddAccess(a) => add_access(cli, a).await,
        KeyCommand::Remove(a) => remove(cli, a).await,
    }
}

async fn list(cli: &Cli) -> Result<u8> {
    let storage = repository::storage(cli)?;
    let files = Repository::key_files(&*storage)
        .await
        .with_context(|| format!("listing {KEYS_DIR}"))?;
    let mut docs = Vec::new();
    let mut text = String::new();
    for (name, file) in &files {
        let id = name.strip_prefix(KEYS_DIR).unwrap_or(name);
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
                    "{}  {kind:<8}  {created}  {}@{}{}",
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
                    "username": k.username, "label": k.label,
                }));
            }
            Err(e) => {
                let _ = writeln!(text, "{}  unreadable: {e}", &id[..id.len().min(16)]);
                docs.push(json!({ "id": id, "error": e.to_string() }));
            }
        }
    }
    if cli.json {
        print_json(&json!({ "keys": docs }))?;
    } else if files.is_empty() {
        print(&format!("no key files in {KEYS_DIR}\n"))?;
    } else {
        print(&text)?;
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
    repo.remove_key(&name)
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
