//! `diff`, `find` and `tag`: comparing snapshots, searching them, and changing their
//! tags. Flag names and output follow restic's commands of the same names.

use crate::output::{bytes, print, print_json};
use crate::repository;
use crate::snapshots::{filtered_snapshots_checked, latest_warning, snapshot_json, FilterArgs};
use crate::Cli;
use anyhow::{bail, Context, Result};
use clap::Args;
use dprepo_repo_format::diff::diff_trees;
use dprepo_repo_format::tree::{Node, NodeKind};
use dprepo_repo_format::{BlobId, Repository, Snapshot};
use serde_json::json;

/// `dprepo diff` arguments.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The first snapshot (id, unique prefix, or `latest`).
    first: String,
    /// The second snapshot.
    second: String,
    /// Print only the totals.
    #[arg(long)]
    stats_only: bool,
}

/// `dprepo find` arguments.
#[derive(Debug, Args)]
pub struct FindArgs {
    /// Glob matched against each entry's name, or against its whole path when it holds
    /// a `/` (anchored at the root when it starts with `/`) (repeatable: any matches).
    #[arg(required = true)]
    patterns: Vec<String>,
    /// Search only this snapshot (repeatable; default: every snapshot matching the
    /// filters).
    #[arg(short = 's', long = "snapshot", value_name = "ID")]
    snapshots: Vec<String>,
    /// Only entries modified at or after this time (YYYY-MM-DD[ HH:MM[:SS]] or RFC
    /// 3339; UTC).
    #[arg(short = 'O', long, value_name = "TIME")]
    oldest: Option<String>,
    /// Only entries modified at or before this time (same forms as --oldest).
    #[arg(short = 'N', long, value_name = "TIME")]
    newest: Option<String>,
    /// Match ignoring case.
    #[arg(short = 'i', long)]
    ignore_case: bool,
    /// Show mode, owner, size and time of each entry.
    #[arg(short, long)]
    long: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

/// `dprepo tag` arguments.
#[derive(Debug, Args)]
pub struct TagArgs {
    /// Snapshots to change (default: every snapshot matching the filters).
    snapshots: Vec<String>,
    /// Add these tags (repeatable, or comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "TAG")]
    add: Vec<String>,
    /// Remove these tags (repeatable, or comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "TAG")]
    remove: Vec<String>,
    /// Replace the tags with these (repeatable, or comma-separated; `--set ''` clears).
    #[arg(long, value_delimiter = ',', value_name = "TAG", conflicts_with_all = ["add", "remove"])]
    set: Option<Vec<String>>,
    #[command(flatten)]
    filter: FilterArgs,
}

async fn select_one(repo: &Repository, selector: &str) -> Result<Snapshot> {
    let (all, damaged) = filtered_snapshots_checked(repo, &FilterArgs::default()).await?;
    let snap = Repository::select_snapshot(&all, selector)?;
    if let Some(w) = latest_warning(selector, &snap, &damaged) {
        eprintln!("dprepo: warning: {w}");
    }
    Ok(snap)
}

/// `dprepo diff FIRST SECOND`.
pub async fn diff(cli: &Cli, a: &DiffArgs) -> Result<u8> {
    let repo = repository::open(cli).await?;
    let first = select_one(&repo, &a.first).await?;
    let second = select_one(&repo, &a.second).await?;
    let (changes, stats) = diff_trees(&repo, &first.manifest.tree, &second.manifest.tree).await?;
    if cli.json {
        let mut doc = json!({
            "first": first.id,
            "second": second.id,
            "stats": stats,
        });
        if !a.stats_only {
            doc["changes"] = json!(changes);
        }
        print_json(&doc)?;
        return Ok(0);
    }
    if cli.quiet {
        return Ok(0);
    }
    let mut text = format!(
        "comparing snapshot {} to {}:\n\n",
        first.id.short(),
        second.id.short()
    );
    if !a.stats_only {
        for c in &changes {
            text.push_str(&format!("{}    {}\n", c.kind.marker(), c.path));
        }
        if !changes.is_empty() {
            text.push('\n');
        }
    }
    text.push_str(&format!(
        "Files:       {} new, {} removed, {} changed\nDirs:        {} new, {} removed\nMetadata:    {} changed\nAdded:       {}\nRemoved:     {}\n",
        stats.files_added,
        stats.files_removed,
        stats.files_modified,
        stats.dirs_added,
        stats.dirs_removed,
        stats.metadata_changed,
        bytes(stats.bytes_added),
        bytes(stats.bytes_removed),
    ));
    print(&text)?;
    Ok(0)
}

/// Parse `--oldest`/`--newest`.
fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, format) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    }
    bail!("{s:?} is not a time: use YYYY-MM-DD, YYYY-MM-DD HH:MM[:SS] or RFC 3339")
}

struct Finder {
    name_globs: Vec<globset::GlobMatcher>,
    path_globs: Vec<globset::GlobMatcher>,
    oldest: Option<chrono::DateTime<chrono::Utc>>,
    newest: Option<chrono::DateTime<chrono::Utc>>,
}

impl Finder {
    fn new(a: &FindArgs) -> Result<Finder> {
        let mut f = Finder {
            name_globs: Vec::new(),
            path_globs: Vec::new(),
            oldest: a.oldest.as_deref().map(parse_time).transpose()?,
            newest: a.newest.as_deref().map(parse_time).transpose()?,
        };
        for p in &a.patterns {
            let (glob, by_path) = match (p.contains('/'), p.starts_with('/')) {
                (false, _) => (p.clone(), false),
                (true, true) => (p.trim_end_matches('/').to_string(), true),
                (true, false) => (format!("**/{}", p.trim_end_matches('/')), true),
            };
            let m = globset::GlobBuilder::new(&glob)
                .literal_separator(true)
                .case_insensitive(a.ignore_case)
                .build()
                .with_context(|| format!("pattern {p:?}"))?
                .compile_matcher();
            if by_path {
                f.path_globs.push(m);
            } else {
                f.name_globs.push(m);
            }
        }
        Ok(f)
    }

    fn matches(&self, path: &str, node: &Node) -> bool {
        let name = String::from_utf8_lossy(&node.name);
        let hit = self.name_globs.iter().any(|g| g.is_match(name.as_ref()))
            || self.path_globs.iter().any(|g| g.is_match(path));
        if !hit {
            return false;
        }
        let mtime =
            chrono::DateTime::from_timestamp(node.mtime.sec, node.mtime.nsec).unwrap_or_default();
        self.oldest.is_none_or(|t| mtime >= t) && self.newest.is_none_or(|t| mtime <= t)
    }
}

fn node_doc(path: &str, n: &Node) -> serde_json::Value {
    json!({
        "path": path,
        "type": n.kind.name(),
        "mode": n.mode & 0o7777,
        "uid": n.uid,
        "gid": n.gid,
        "size": n.size,
        "mtime": chrono::DateTime::from_timestamp(n.mtime.sec, n.mtime.nsec).unwrap_or_default(),
    })
}

/// The snapshots a command works on: those named by `selectors` (ids, prefixes, `latest`)
/// among the ones `filter` admits, or all of those when none is named. A `latest` that may
/// have missed a damaged snapshot file is said on stderr.
pub(crate) async fn chosen_snapshots(
    repo: &Repository,
    filter: &FilterArgs,
    selectors: &[String],
) -> Result<Vec<Snapshot>> {
    let (all, damaged) = filtered_snapshots_checked(repo, filter).await?;
    if selectors.is_empty() {
        return Ok(all);
    }
    let mut chosen = Vec::new();
    for sel in selectors {
        let snap = Repository::select_snapshot(&all, sel)?;
        if let Some(w) = latest_warning(sel, &snap, &damaged) {
            eprintln!("dprepo: warning: {w}");
        }
        chosen.push(snap);
    }
    Ok(chosen)
}

/// `dprepo find PATTERN...`.
pub async fn find(cli: &Cli, a: &FindArgs) -> Result<u8> {
    let finder = Finder::new(a)?;
    let repo = repository::open(cli).await?;
    let snaps = chosen_snapshots(&repo, &a.filter, &a.snapshots).await?;
    let mut docs = Vec::new();
    let mut text = String::new();
    for snap in &snaps {
        let mut hits: Vec<(String, Node)> = Vec::new();
        let mut stack: Vec<(BlobId, String)> = vec![(snap.manifest.tree, String::new())];
        while let Some((id, prefix)) = stack.pop() {
            let tree = repo.load_tree(&id).await?;
            for node in tree.nodes {
                let path = format!("{prefix}/{}", String::from_utf8_lossy(&node.name));
                if let NodeKind::Dir(sub) = node.kind {
                    stack.push((sub, path.clone()));
                }
                if finder.matches(&path, &node) {
                    hits.push((path, node));
                }
            }
        }
        if hits.is_empty() {
            continue;
        }
        hits.sort_by(|x, y| x.0.cmp(&y.0));
        if cli.json {
            docs.push(json!({
                "snapshot": snap.id,
                "hits": hits.len(),
                "matches": hits.iter().map(|(p, n)| node_doc(p, n)).collect::<Vec<_>>(),
            }));
        } else {
            text.push_str(&format!(
                "Found matching entries in snapshot {} from {}\n",
                snap.id.short(),
                crate::output::time(&snap.manifest.time)
            ));
            for (path, n) in &hits {
                if a.long {
                    let mtime = chrono::DateTime::from_timestamp(n.mtime.sec, n.mtime.nsec)
                        .unwrap_or_default();
                    text.push_str(&format!(
                        "{:<8} {:>5} {:>5} {:>12} {} {path}\n",
                        n.kind.name(),
                        n.uid,
                        n.gid,
                        n.size,
                        crate::output::time(&mtime)
                    ));
                } else {
                    text.push_str(path);
                    text.push('\n');
                }
            }
            text.push('\n');
        }
    }
    if cli.json {
        print_json(&serde_json::Value::Array(docs))?;
    } else if !cli.quiet {
        if text.is_empty() {
            text = format!("no entries found in {} snapshots\n", snaps.len());
        }
        print(&text)?;
    }
    Ok(0)
}

/// `dprepo tag`.
pub async fn tag(cli: &Cli, a: &TagArgs) -> Result<u8> {
    let clean = |v: &[String]| -> Vec<String> {
        v.iter()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect()
    };
    let (add, remove, set) = (clean(&a.add), clean(&a.remove), a.set.as_deref().map(clean));
    if add.is_empty() && remove.is_empty() && set.is_none() {
        bail!("nothing to do: give --add, --remove or --set");
    }
    let repo = repository::open(cli).await?;
    let targets = chosen_snapshots(&repo, &a.filter, &a.snapshots).await?;
    let mut changed = Vec::new();
    let mut unchanged = 0usize;
    for snap in &targets {
        let new = dprepo_repo_format::gc::rewrite_manifest(&repo, snap, "tag", |m| {
            if let Some(set) = &set {
                // A datasafed file's path tag says what the snapshot is: it stays.
                m.tags.retain(|t| t.starts_with(crate::datasafed::PATH_TAG));
                m.tags.extend(set.iter().cloned());
            }
            m.tags.retain(|t| !remove.contains(t));
            for t in &add {
                if !m.tags.contains(t) {
                    m.tags.push(t.clone());
                }
            }
        })
        .await
        .with_context(|| format!("changing the tags of snapshot {}", snap.id.short()))?;
        if new.id == snap.id {
            unchanged += 1;
        } else {
            changed.push((snap.id, new));
        }
    }
    if cli.json {
        print_json(&json!({
            "changed": changed.iter().map(|(old, new)| {
                let mut d = snapshot_json(new);
                d["replaced"] = json!(old);
                d
            }).collect::<Vec<_>>(),
            "unchanged": unchanged,
        }))?;
    } else if !cli.quiet {
        let mut text = String::new();
        for (old, new) in &changed {
            text.push_str(&format!(
                "snapshot {}: tags {}; its new id is {}\n",
                old.short(),
                if new.manifest.tags.is_empty() {
                    "(none)".to_string()
                } else {
                    new.manifest.tags.join(",")
                },
                new.id.short()
            ));
        }
        text.push_str(&format!(
            "modified {} snapshots, {} unchanged\n",
            changed.len(),
            unchanged
        ));
        print(&text)?;
    }
    Ok(0)
}

/// `dprepo rewrite` arguments.
#[derive(Debug, Args)]
pub struct RewriteArgs {
    /// Snapshots to rewrite (default: every snapshot matching the filters).
    snapshots: Vec<String>,
    /// Remove paths matching PATTERN (repeatable; the backup --exclude syntax).
    #[arg(short = 'e', long = "exclude", value_name = "PATTERN")]
    exclude: Vec<String>,
    /// As --exclude, ignoring case.
    #[arg(long = "iexclude", value_name = "PATTERN")]
    iexclude: Vec<String>,
    /// Read patterns from FILE, one a line (`#` comments) (repeatable).
    #[arg(long = "exclude-file", value_name = "FILE")]
    exclude_file: Vec<std::path::PathBuf>,
    /// As --exclude-file, ignoring case.
    #[arg(long = "iexclude-file", value_name = "FILE")]
    iexclude_file: Vec<std::path::PathBuf>,
    /// Delete each original once its rewritten copy is saved (default: keep both).
    #[arg(long)]
    forget: bool,
    /// Write nothing: list what would be removed from which snapshot.
    #[arg(short = 'n', long)]
    dry_run: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

/// `dprepo rewrite`.
pub async fn rewrite(cli: &Cli, a: &RewriteArgs) -> Result<u8> {
    let mut filter = dprepo_repo_format::selection::PathFilter::default();
    for p in &a.exclude {
        filter.exclude.add(p, false)?;
    }
    for p in &a.iexclude {
        filter.exclude.add(p, true)?;
    }
    for (files, ignore_case) in [(&a.exclude_file, false), (&a.iexclude_file, true)] {
        for f in files {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("reading exclude file {}", f.display()))?;
            filter
                .exclude
                .add_file_contents(&f.display().to_string(), &text, ignore_case)?;
        }
    }
    if filter.exclude.is_empty() {
        bail!("nothing to remove: give --exclude, --iexclude or --exclude-file");
    }
    let repo = repository::open(cli).await?;
    let targets = chosen_snapshots(&repo, &a.filter, &a.snapshots).await?;
    let report = dprepo_repo_format::rewrite::rewrite_snapshots(
        &repo, &targets, &filter, a.forget, a.dry_run,
    )
    .await?;
    if cli.json {
        print_json(&serde_json::to_value(&report)?)?;
        return Ok(0);
    }
    if cli.quiet {
        return Ok(0);
    }
    let mut text = String::new();
    for r in &report.rewritten {
        let short = &r.original[..8];
        match &r.rewritten {
            Some(new) => text.push_str(&format!(
                "snapshot {short}: removed {} entries; saved as {}\n",
                r.removed.len(),
                &new[..8]
            )),
            None => text.push_str(&format!(
                "snapshot {short}: would remove {} entries\n",
                r.removed.len()
            )),
        }
        for p in &r.removed {
            text.push_str(&format!("  - {p}\n"));
        }
    }
    text.push_str(&format!(
        "{} {} snapshots, {} unchanged{}\n",
        if report.dry_run {
            "would rewrite"
        } else {
            "rewrote"
        },
        report.rewritten.len(),
        report.unchanged,
        match (report.forgotten.len(), report.dry_run) {
            (0, _) => String::new(),
            (n, true) => format!("; would forget {n} originals"),
            (n, false) => format!("; forgot {n} originals"),
        }
    ));
    print(&text)?;
    Ok(0)
}
