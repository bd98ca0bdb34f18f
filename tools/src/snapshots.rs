//! Choosing snapshots: the filters shared by the commands that select snapshots
//! (`--tag`, `--host`, `--path`), `latest` and its warning, the `snapshots` listing,
//! and a snapshot's JSON form.
use crate::output::{self, bytes, print, print_json};
use crate::repository;
use crate::Cli;
use anyhow::Result;
use clap::Args;
use dprepo_repo_format::{Repository, Snapshot};
use serde_json::json;

#[derive(Debug, Args, Clone, Default)]
pub struct FilterArgs {
    /// Only snapshots with this tag (repeatable; a snapshot matches if it has any).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Only snapshots of this host (repeatable).
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    /// Only snapshots that include this path (repeatable); for datasafed files, also
    /// every file and directory stored at or below this directory.
    #[arg(long = "path")]
    pub paths: Vec<String>,
}

pub fn snapshot_json(s: &Snapshot) -> serde_json::Value {
    let m = &s.manifest;
    json!({
        "id": s.id,
        "short_id": s.id.short(),
        "time": m.time,
        "tree": m.tree,
        "paths": m.paths,
        "hostname": m.hostname,
        "username": m.username,
        "tags": m.tags,
        "parent": m.parent,
        "stdin_name": m.stdin_name,
        "chunker": m.chunker,
        "program_version": m.program_version,
        "summary": m.summary,
        "expires": m.expires,
        "original": m.original,
    })
}

fn matches_filter(s: &Snapshot, f: &FilterArgs) -> bool {
    let m = &s.manifest;
    (f.tags.is_empty() || f.tags.iter().any(|t| m.tags.contains(t)))
        && (f.hosts.is_empty() || f.hosts.contains(&m.hostname))
        && (f.paths.is_empty()
            || f.paths.iter().all(|p| {
                m.paths
                    .iter()
                    .any(|q| q == p.trim_end_matches('/') || q == p)
                    || crate::datasafed::datasafed_path_within(s, p)
            }))
}

pub async fn filtered_snapshots(repo: &Repository, f: &FilterArgs) -> Result<Vec<Snapshot>> {
    Ok(filtered_snapshots_checked(repo, f).await?.0)
}

/// [`filtered_snapshots`], and the snapshot files that cannot be read (storage name,
/// error), each named in a warning on stderr.
pub async fn filtered_snapshots_checked(
    repo: &Repository,
    f: &FilterArgs,
) -> Result<(Vec<Snapshot>, Vec<(String, dprepo_repo_format::Error)>)> {
    let (all, damaged) = repo.list_snapshots_checked().await?;
    for (name, e) in &damaged {
        // The error names the object, usually by `name` itself.
        let e = e.to_string();
        if e.contains(name.as_str()) {
            eprintln!("dprepo: warning: {e}; it is left out");
        } else {
            eprintln!("dprepo: warning: {name} cannot be read and is left out: {e}");
        }
    }
    let selected = all.into_iter().filter(|s| matches_filter(s, f)).collect();
    Ok((selected, damaged))
}

pub(crate) async fn snapshots(cli: &Cli, f: &FilterArgs) -> Result<u8> {
    let repo = repository::open(cli).await?;
    let list = filtered_snapshots(&repo, f).await?;
    if cli.json {
        print_json(&serde_json::Value::Array(
            list.iter().map(snapshot_json).collect(),
        ))?;
        return Ok(0);
    }
    let mut text = format!(
        "{:<9} {:<19} {:<16} {:<16} {:>11}  {}\n",
        "ID", "Time", "Host", "Tags", "Size", "Paths"
    );
    text.push_str(&format!("{}\n", "-".repeat(90)));
    for s in &list {
        let m = &s.manifest;
        text.push_str(&format!(
            "{:<9} {:<19} {:<16} {:<16} {:>11}  {}\n",
            s.id.short(),
            output::time(&m.time),
            m.hostname,
            // A datasafed file's path tag is shown as its path.
            m.tags
                .iter()
                .filter(|t| !t.starts_with(crate::datasafed::PATH_TAG))
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(","),
            bytes(m.summary.total_bytes),
            snapshot_paths(s).join(", ")
        ));
    }
    text.push_str(&format!("{} snapshots\n", list.len()));
    print(&text)?;
    Ok(0)
}

/// Resolve `selector` among the snapshots matching `f`. Returns the warnings to add to
/// `--json` output, already printed on stderr: `latest` chosen while some snapshot
/// files cannot be read (one of them may be the newest).
pub(crate) async fn resolve(
    repo: &Repository,
    selector: &str,
    f: &FilterArgs,
) -> Result<(Snapshot, Vec<String>)> {
    let (list, damaged) = filtered_snapshots_checked(repo, f).await?;
    let snap = Repository::select_snapshot(&list, selector)?;
    let warnings: Vec<String> = latest_warning(selector, &snap, &damaged)
        .into_iter()
        .collect();
    for w in &warnings {
        eprintln!("dprepo: warning: {w}");
    }
    Ok((snap, warnings))
}

/// When `selector` is `latest` and some snapshot files cannot be read, say which
/// snapshot `latest` fell back to: the damaged ones may be newer, and nothing tells
/// their time.
pub fn latest_warning(
    selector: &str,
    chosen: &Snapshot,
    damaged: &[(String, dprepo_repo_format::Error)],
) -> Option<String> {
    if selector != "latest" || damaged.is_empty() {
        return None;
    }
    let names: Vec<&str> = damaged.iter().map(|(name, _)| name.as_str()).collect();
    Some(format!(
        "`latest` is snapshot {} of {}, the newest that can be read; {} snapshot files cannot be read and may be newer: {}",
        chosen.id.short(),
        output::time(&chosen.manifest.time),
        damaged.len(),
        names.join(", ")
    ))
}

/// What a snapshot holds, for listings: a datasafed file's path, else its paths.
pub(crate) fn snapshot_paths(s: &Snapshot) -> Vec<String> {
    match crate::datasafed::snapshot_file_path(s) {
        Some(p) => vec![p.to_string()],
        None => s.manifest.paths.clone(),
    }
}
