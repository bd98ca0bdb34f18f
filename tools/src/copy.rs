//! `dprepo copy`: replicate snapshots from another repository into this one (restic's
//! `copy --from-repo`). The destination is the repository of `-r`; the source has its
//! own location, key and S3 settings (`--from-*`, `DPREPO_FROM_*`).

use crate::output::{bytes, print, print_json};
use crate::progress::Status;
use crate::repository::{self, RepoKey};
use crate::snapshots::FilterArgs;
use crate::Cli;
use anyhow::{bail, Context, Result};
use clap::Args;
use dprepo_repo_format::copy::{copy_snapshots, CopyOptions, CopyProgress, SkipReason};
use dprepo_repo_format::Repository;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// `dprepo copy` arguments.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Snapshots to copy: ids, unique prefixes or `latest` (default: every snapshot
    /// of the source matching the filters).
    snapshots: Vec<String>,
    /// Source repository: a path, a file:// URL, or s3://BUCKET/PREFIX.
    #[arg(long, env = "DPREPO_FROM_REPOSITORY", value_name = "REPO")]
    from_repo: String,
    /// Read the source's password from this file (first line); DPREPO_FROM_PASSWORD
    /// comes first.
    #[arg(long, env = "DPREPO_FROM_PASSWORD_FILE", value_name = "FILE")]
    from_password_file: Option<PathBuf>,
    /// Open the source with the access key in this file (comes before any password).
    #[arg(long, env = "DPREPO_FROM_ACCESS_KEY_FILE", value_name = "FILE")]
    from_access_key_file: Option<PathBuf>,
    /// The source's repository options file (INI `[s3]` section, as --repo-config);
    /// without it the source uses the S3 flags and environment of the destination.
    #[arg(long, env = "DPREPO_FROM_REPOSITORY_CONFIG", value_name = "FILE")]
    from_repo_config: Option<PathBuf>,
    /// Copy nothing: list the snapshots that would be copied and those already copied,
    /// and estimate the blobs and bytes that would be sent.
    #[arg(short = 'n', long)]
    dry_run: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

/// The source's key: `--from-access-key-file`, then `DPREPO_FROM_PASSWORD`, then
/// `--from-password-file` (either may hold an access key), then a prompt on a terminal.
fn source_key(a: &CopyArgs) -> Result<RepoKey> {
    if let Some(file) = &a.from_access_key_file {
        return repository::access_key_file(file);
    }
    if let Some(pw) = std::env::var_os("DPREPO_FROM_PASSWORD").filter(|v| !v.is_empty()) {
        return RepoKey::from_secret(pw.into_encoded_bytes(), "DPREPO_FROM_PASSWORD");
    }
    if let Some(file) = &a.from_password_file {
        let pw = repository::read_secret_file(file, "source password file")?;
        return RepoKey::from_secret(pw, "the source password file");
    }
    if std::io::stdin().is_terminal() {
        let pw = rpassword::prompt_password("enter password for source repository: ")
            .context("reading password")?;
        if pw.is_empty() {
            bail!("empty password");
        }
        return RepoKey::from_secret(pw.into_bytes(), "the password entered");
    }
    bail!(
        "no key for the source repository: set DPREPO_FROM_ACCESS_KEY_FILE, \
         DPREPO_FROM_PASSWORD_FILE or DPREPO_FROM_PASSWORD (or --from-access-key-file / \
         --from-password-file, or run on a terminal to be asked)"
    )
}

async fn open_source(cli: &Cli, a: &CopyArgs) -> Result<Repository> {
    let storage = repository::storage_with_config(cli, &a.from_repo, a.from_repo_config.as_deref())
        .with_context(|| format!("source repository {}", a.from_repo))?;
    let key = source_key(a)?;
    let repo = key
        .open(storage, &repository::index_place(cli))
        .await
        .with_context(|| format!("opening source repository {}", a.from_repo))?;
    for (name, e) in repo.damaged_index_files() {
        eprintln!("dprepo: warning: source index file {name} is skipped: {e}");
    }
    repository::print_index_notes(&repo);
    Ok(repo)
}

/// `dprepo copy`.
pub async fn copy(cli: &Cli, a: &CopyArgs) -> Result<u8> {
    let src = open_source(cli, a).await?;
    let dst = repository::open(cli).await?;
    let chosen = crate::history::chosen_snapshots(&src, &a.filter, &a.snapshots).await?;
    let progress = Arc::new(CopyProgress::default());
    let total = chosen.len();
    let status = {
        let p = progress.clone();
        Status::start(cli.quiet || cli.json || a.dry_run, move || {
            format!(
                "snapshot {}/{total}; read {} ({} blobs), uploaded {} ({} blobs)",
                (p.snapshots_done.load(Ordering::Relaxed) as usize + 1).min(total),
                bytes(p.bytes_read.load(Ordering::Relaxed)),
                p.blobs_read.load(Ordering::Relaxed),
                bytes(p.bytes_uploaded.load(Ordering::Relaxed)),
                p.blobs_added.load(Ordering::Relaxed),
            )
        })
    };
    let options = CopyOptions::default()
        .with_dry_run(a.dry_run)
        .with_connections(cli.connections.unwrap_or(4));
    let result = copy_snapshots(&src, &dst, &chosen, &options, &progress).await;
    status.finish();
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            // What is done stays done: say so, so the user knows the next run skips it.
            let done = progress
                .copied
                .lock()
                .map(|c| c.clone())
                .unwrap_or_default();
            if done.is_empty() {
                return Err(e.into());
            }
            let list: Vec<String> = done
                .iter()
                .map(|c| {
                    format!(
                        "{} as {}",
                        &c.source[..8],
                        c.copy.as_deref().map_or("?", |id| &id[..8])
                    )
                })
                .collect();
            return Err(anyhow::Error::from(e).context(format!(
                "copied {} of {total} snapshots before the error ({}; the next run skips them)",
                done.len(),
                list.join(", ")
            )));
        }
    };
    if let Some(why) = &report.source_unprotected {
        eprintln!(
            "dprepo: warning: could not register with the source repository ({why}); a gc \
             running there during the copy may delete data being read (the copy then fails \
             and can be run again)"
        );
    }
    if cli.json {
        print_json(&serde_json::to_value(&report)?)?;
        return Ok(0);
    }
    if cli.quiet {
        return Ok(0);
    }
    let mut text = String::new();
    for s in &report.skipped {
        match (s.reason, &s.existing) {
            (SkipReason::AlreadyCopied, Some(existing)) => text.push_str(&format!(
                "skipping snapshot {}: already copied as {}{}\n",
                &s.source[..8],
                &existing[..8],
                if s.tags_differ {
                    " (its tags differ; the copy keeps its own)"
                } else {
                    ""
                }
            )),
            _ => text.push_str(&format!(
                "skipping snapshot {}: no longer in the source (forgotten or rewritten \
                 since it was chosen)\n",
                &s.source[..8]
            )),
        }
    }
    for c in &report.copied {
        let parent = c
            .parent
            .as_deref()
            .map(|p| format!(", parent {}", &p[..8]))
            .unwrap_or_default();
        match &c.copy {
            Some(id) => text.push_str(&format!(
                "snapshot {} copied as {}{parent}: {} blobs added, {} uploaded\n",
                &c.source[..8],
                &id[..8],
                c.blobs_added,
                bytes(c.bytes_uploaded)
            )),
            None => text.push_str(&format!("would copy snapshot {}{parent}\n", &c.source[..8])),
        }
    }
    if report.dry_run {
        text.push_str(&format!(
            "would copy {} snapshots, skip {}\n",
            report.copied.len(),
            report.skipped.len()
        ));
        if let Some(e) = &report.estimate {
            text.push_str(&format!(
                "would send at most {} blobs, about {} ({} before compression)\n",
                e.blobs,
                bytes(e.bytes),
                bytes(e.plain_bytes)
            ));
        }
        if let Some(why) = &report.estimate_error {
            text.push_str(&format!("no estimate of what would be sent: {why}\n"));
        }
    } else {
        text.push_str(&format!(
            "copied {} snapshots, skipped {}; read {} blobs ({}) from the source, \
             added {} blobs ({}, {} uploaded in {} packs)\n",
            report.copied.len(),
            report.skipped.len(),
            report.blobs_read,
            bytes(report.bytes_read),
            report.blobs_added,
            bytes(report.bytes_added),
            bytes(report.bytes_uploaded),
            report.packs_written,
        ));
    }
    print(&text)?;
    Ok(0)
}
