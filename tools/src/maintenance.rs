//! `forget`, `gc` and `snapshot expire`: the commands that remove things. Each one can
//! show what it would do (`--dry-run`) before doing it.

use crate::output::{bytes, print, print_json};
use crate::repository;
use crate::snapshots::{filtered_snapshots_checked, latest_warning, snapshot_json, FilterArgs};
use crate::Cli;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use dprepo_repo_format::gc::{self, GcOptions};
use dprepo_repo_format::repo::SNAPSHOTS_DIR;
use dprepo_repo_format::retention::{
    apply_policy, parse_duration, GroupBy, RetentionPolicy, SnapshotInfo,
};
use dprepo_repo_format::{BlobId, Repository, Snapshot};
use serde_json::json;

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// Snapshots to remove (ids, unique prefixes or `latest`); or use a policy.
    snapshots: Vec<String>,
    /// Keep the N newest snapshots.
    #[arg(long)]
    keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours.
    #[arg(long)]
    keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days.
    #[arg(long)]
    keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N weeks.
    #[arg(long)]
    keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months.
    #[arg(long)]
    keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last N years.
    #[arg(long)]
    keep_yearly: Option<u32>,
    /// Keep snapshots newer than the newest one minus DURATION (e.g. 1y2m3d4h).
    #[arg(long)]
    keep_within: Option<String>,
    /// Keep snapshots with this tag (repeatable; "a,b" needs both).
    #[arg(long = "keep-tag")]
    keep_tags: Vec<String>,
    /// Remove snapshots whose expiration time has passed.
    #[arg(long)]
    expired: bool,
    /// Group snapshots by these fields: host, paths, tags (comma-separated; "" for none).
    #[arg(long, default_value = "host,paths")]
    group_by: String,
    /// Show what would be kept and removed, and why; change nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Run gc afterwards to free the space.
    #[arg(long)]
    prune: bool,
    #[command(flatten)]
    filter: FilterArgs,
    #[command(flatten)]
    gc: GcTuning,
}

#[derive(Debug, Args, Clone)]
pub struct GcTuning {
    /// Rewrite packs whose unused share exceeds this percentage.
    #[arg(long, default_value_t = 20.0)]
    max_unused: f64,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Show what would be deleted and rewritten; change nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Also write a one-line JSON summary (counts only, or the error) to FILE, e.g. a
    /// Kubernetes container's termination message file.
    #[arg(long, value_name = "FILE")]
    summary_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    tuning: GcTuning,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Set or clear when `forget --expired` may remove a snapshot (its id changes).
    Expire {
        /// Snapshot id, unique prefix, or `latest`.
        snapshot: String,
        /// Expire this long from now (e.g. 30d).
        #[arg(long = "in", conflicts_with_all = ["at", "never"])]
        in_: Option<String>,
        /// Expire at this time (RFC 3339, e.g. 2027-01-01T00:00:00Z).
        #[arg(long, conflicts_with = "never")]
        at: Option<String>,
        /// Never expire.
        #[arg(long)]
        never: bool,
    },
}

/// `now + DURATION` for `--expire-in`.
pub fn expiry_from_now(duration: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    let d = parse_duration(duration).map_err(|e| anyhow::anyhow!("--expire-in {duration}: {e}"))?;
    // Adding is subtracting the negation; CalendarDuration subtracts, so add field-wise.
    let now = chrono::Utc::now();
    let back = d.subtract_from(now);
    Ok(now + (now - back))
}

fn policy(a: &ForgetArgs) -> Result<RetentionPolicy> {
    let mut p = RetentionPolicy {
        keep_last: a.keep_last,
        keep_hourly: a.keep_hourly,
        keep_daily: a.keep_daily,
        keep_weekly: a.keep_weekly,
        keep_monthly: a.keep_monthly,
        keep_yearly: a.keep_yearly,
        keep_within: None,
        keep_tags: a.keep_tags.clone(),
        drop_expired: a.expired,
    };
    if let Some(w) = &a.keep_within {
        p.keep_within =
            Some(parse_duration(w).map_err(|e| anyhow::anyhow!("--keep-within {w}: {e}"))?);
    }
    Ok(p)
}

fn gc_options(t: &GcTuning) -> Result<GcOptions> {
    if !(0.0..=100.0).contains(&t.max_unused) {
        bail!(
            "--max-unused {} must be a percentage from 0 to 100",
            t.max_unused
        );
    }
    Ok(GcOptions {
        max_unused: t.max_unused / 100.0,
        ..GcOptions::default()
    })
}

/// What a selector given to `forget` names.
enum Forgettable {
    /// A readable snapshot.
    Snapshot(BlobId),
    /// A snapshot file that cannot be read, by storage name (`snapshots/<name>`).
    File(String),
}

/// Resolve `sel` among the readable `candidates` and the unreadable snapshot files
/// `damaged`: `latest`, a full id or unique id prefix, or the name of an unreadable
/// file (with or without `snapshots/`), so a damaged manifest can be removed.
fn select_forgettable(
    candidates: &[Snapshot],
    damaged: &[(String, dprepo_repo_format::Error)],
    sel: &str,
) -> Result<Forgettable> {
    let file = sel.strip_prefix(SNAPSHOTS_DIR).unwrap_or(sel);
    let name_of = |name: &'_ String| name.strip_prefix(SNAPSHOTS_DIR).unwrap_or(name).to_string();
    if let Some((name, _)) = damaged.iter().find(|(name, _)| name_of(name) == file) {
        return Ok(Forgettable::File(name.clone()));
    }
    let hex_prefix = !file.is_empty() && file.bytes().all(|b| b.is_ascii_hexdigit());
    let lower = file.to_ascii_lowercase();
    let files: Vec<&String> = damaged
        .iter()
        .map(|(name, _)| name)
        .filter(|name| hex_prefix && name_of(name).to_ascii_lowercase().starts_with(&lower))
        .collect();
    let readable = candidates
        .iter()
        .filter(|s| hex_prefix && s.id.to_hex().starts_with(&lower))
        .count();
    match (readable, files.as_slice()) {
        (0, [name]) => Ok(Forgettable::File((*name).clone())),
        (_, []) => Ok(Forgettable::Snapshot(
            Repository::select_snapshot(candidates, file)?.id,
        )),
        (n, names) => bail!(
            "snapshot {sel}: prefix matches {} snapshots, {} of them unreadable files; give more digits",
            n + names.len(),
            names.len()
        ),
    }
}

pub async fn forget(cli: &Cli, a: &ForgetArgs) -> Result<u8> {
    let repo = repository::open(cli).await?;
    let (candidates, damaged) = filtered_snapshots_checked(&repo, &a.filter).await?;
    let policy = policy(a)?;
    let mut remove: Vec<BlobId> = Vec::new();
    let mut remove_files: Vec<String> = Vec::new();
    let mut doc = json!({});
    if !a.snapshots.is_empty() {
        if !policy.is_empty() {
            bail!("give snapshot ids or a policy (--keep-*, --expired), not both");
        }
        let mut warnings = Vec::new();
        for sel in &a.snapshots {
            match select_forgettable(&candidates, &damaged, sel)? {
                Forgettable::Snapshot(id) => {
                    let chosen = candidates.iter().find(|s| s.id == id);
                    if let Some(w) = chosen.and_then(|s| latest_warning(sel, s, &damaged)) {
                        eprintln!("dprepo: warning: {w}");
                        warnings.push(w);
                    }
                    remove.push(id)
                }
                Forgettable::File(name) => remove_files.push(name),
            }
        }
        doc["warnings"] = json!(warnings);
        remove.sort();
        remove.dedup();
        remove_files.sort();
        remove_files.dedup();
        doc["removed"] = json!(remove.iter().map(|id| id.to_hex()).collect::<Vec<_>>());
        doc["removed_files"] = json!(remove_files);
        if !cli.json && !cli.quiet {
            let verb = if a.dry_run { "would remove" } else { "removed" };
            for id in &remove {
                print(&format!("{verb} snapshot {}\n", id.short()))?;
            }
            for name in &remove_files {
                print(&format!("{verb} unreadable snapshot file {name}\n"))?;
            }
        }
    } else {
        if policy.is_empty() {
            bail!("no policy given: name snapshots, or use --keep-last/--keep-daily/.../--keep-within/--keep-tag or --expired");
        }
        let group_by: GroupBy = a
            .group_by
            .parse()
            .map_err(|e| anyhow::anyhow!("--group-by {}: {e}", a.group_by))?;
        let infos: Vec<SnapshotInfo> = candidates
            .iter()
            .map(|s| SnapshotInfo {
                id: s.id.to_hex(),
                time: s.manifest.time,
                hostname: s.manifest.hostname.clone(),
                paths: s.manifest.paths.clone(),
                tags: s.manifest.tags.clone(),
                expires: s.manifest.expires,
            })
            .collect();
        let groups = apply_policy(
            &infos,
            &policy,
            group_by,
            chrono::Utc::now(),
            &chrono::Local,
        );
        let mut json_groups = Vec::new();
        let mut text = String::new();
        for g in &groups {
            text.push_str(&format!(
                "group {}: keep {}, remove {}\n",
                g.key,
                g.kept().count(),
                g.removed().count()
            ));
            let mut rows = Vec::new();
            for d in &g.decisions {
                let reasons: Vec<String> = d.reasons.iter().map(|r| r.to_string()).collect();
                text.push_str(&format!(
                    "  {:<6} {:.8}  {}  {}{}\n",
                    if d.keep { "keep" } else { "remove" },
                    d.snapshot.id,
                    crate::output::time(&d.snapshot.time),
                    reasons.join(", "),
                    if d.expired { " (expired)" } else { "" }
                ));
                rows.push(json!({ "id": d.snapshot.id, "time": d.snapshot.time, "keep": d.keep, "reasons": reasons, "expired": d.expired }));
                if !d.keep {
                    remove.push(BlobId::from_hex(&d.snapshot.id)?);
                }
            }
            json_groups.push(json!({ "key": g.key.to_string(), "snapshots": rows }));
        }
        doc["groups"] = json!(json_groups);
        doc["removed"] = json!(remove.iter().map(|id| id.to_hex()).collect::<Vec<_>>());
        if !cli.json && !cli.quiet {
            print(&text)?;
        }
    }
    doc["dry_run"] = json!(a.dry_run);
    if !a.dry_run {
        gc::forget_snapshots(&repo, &remove).await?;
        gc::forget_snapshot_files(&repo, &remove_files).await?;
        if !cli.json && !cli.quiet {
            print(&format!(
                "{} snapshots removed\n",
                remove.len() + remove_files.len()
            ))?;
        }
        if a.prune {
            let (plan, report) = gc::run(&repo, &gc_options(&a.gc)?).await?;
            doc["gc"] = json!({ "plan": plan, "report": report });
            if !cli.json && !cli.quiet {
                print_gc(&plan, Some(&report))?;
            }
        }
    } else if !cli.json && !cli.quiet {
        print(&format!(
            "dry run: {} snapshots would be removed\n",
            remove.len() + remove_files.len()
        ))?;
    }
    if cli.json {
        print_json(&doc)?;
    }
    Ok(0)
}

fn print_gc(plan: &gc::GcPlan, report: Option<&gc::GcReport>) -> Result<()> {
    let mut t = format!(
        "{} snapshots, {} packs ({}), {} blobs of which {} unused\n\
         packs without used blobs: {} ({}), packs to rewrite: {}, orphan packs: {}\n\
         space to free: {}\n",
        plan.snapshots,
        plan.packs,
        bytes(plan.pack_bytes),
        plan.blobs,
        plan.unused_blobs,
        plan.delete.len(),
        bytes(plan.delete.iter().map(|p| p.size).sum()),
        plan.repack.len(),
        plan.orphans.len(),
        bytes(plan.bytes_freed_estimate)
    );
    if !plan.stale_temporary_files.is_empty() {
        t.push_str(&format!(
            "temporary files of interrupted writes (older than {} minutes): {} ({})\n",
            GcOptions::default().session_stale_after.num_minutes(),
            plan.stale_temporary_files.len(),
            bytes(plan.stale_temporary_bytes)
        ));
    }
    if let Some(r) = report {
        t.push_str(&format!(
            "deleted {} packs ({}), rewrote {} packs into {} ({}), rewrote {} index files\n",
            r.packs_deleted,
            bytes(r.bytes_freed),
            r.packs_rewritten,
            r.packs_written,
            bytes(r.bytes_written),
            r.index_files_rewritten
        ));
        if !r.tombstones_blocked.is_empty() {
            t.push_str(&format!(
                "{} deletions wait for backups that were running when they were planned; the next gc after those backups finish completes them\n",
                r.tombstones_blocked.len()
            ));
        }
        if r.temporary_files_removed > 0 {
            t.push_str(&format!(
                "removed {} temporary files of interrupted writes ({})\n",
                r.temporary_files_removed,
                bytes(r.temporary_bytes_freed)
            ));
        }
        if !r.stale_sessions_removed.is_empty() {
            t.push_str(&format!(
                "removed {} writer sessions without heartbeat (crashed backups)\n",
                r.stale_sessions_removed.len()
            ));
        }
        for w in &r.warnings {
            eprintln!("dprepo: warning: {w}");
        }
    }
    print(&t)
}

pub async fn gc(cli: &Cli, a: &GcArgs) -> Result<u8> {
    let result = gc_run(cli, a).await;
    if let Some(path) = &a.summary_file {
        let summary = match &result {
            Ok(s) => s.clone(),
            Err(e) => {
                let mut text = format!("{e:#}");
                if text.len() > 1024 {
                    let mut end = 1021;
                    while !text.is_char_boundary(end) {
                        end -= 1;
                    }
                    text.truncate(end);
                    text.push_str("...");
                }
                json!({ "error": text })
            }
        };
        std::fs::write(path, format!("{summary}\n"))
            .with_context(|| format!("writing the summary to {}", path.display()))?;
    }
    result.map(|_| 0)
}

/// The counts of a gc run for `--summary-file` (camelCase, as the controller reads them).
fn gc_summary(plan: &gc::GcPlan, report: Option<&gc::GcReport>) -> serde_json::Value {
    let (deleted, rewritten, freed, blocked) = match report {
        Some(r) => (
            r.packs_deleted,
            r.packs_rewritten,
            r.bytes_freed,
            r.tombstones_blocked.len() as u64,
        ),
        None => (
            plan.delete.len() as u64,
            plan.repack.len() as u64,
            plan.bytes_freed_estimate,
            0,
        ),
    };
    json!({
        "dryRun": report.is_none(),
        "snapshots": plan.snapshots,
        "packs": plan.packs,
        "packsDeleted": deleted,
        "packsRewritten": rewritten,
        "bytesFreed": freed,
        "tombstonesBlocked": blocked,
    })
}

async fn gc_run(cli: &Cli, a: &GcArgs) -> Result<serde_json::Value> {
    let repo = repository::open(cli).await?;
    let options = gc_options(&a.tuning)?;
    if a.dry_run {
        let plan = gc::plan(&repo, &options).await?;
        if cli.json {
            print_json(&json!({ "dry_run": true, "plan": plan }))?;
        } else if !cli.quiet {
            print_gc(&plan, None)?;
        }
        return Ok(gc_summary(&plan, None));
    }
    let (plan, report) = gc::run(&repo, &options).await?;
    if cli.json {
        print_json(&json!({ "dry_run": false, "plan": plan, "report": report }))?;
    } else if !cli.quiet {
        print_gc(&plan, Some(&report))?;
    }
    Ok(gc_summary(&plan, Some(&report)))
}

pub async fn snapshot(cli: &Cli, c: &SnapshotCommand) -> Result<u8> {
    match c {
        SnapshotCommand::Expire {
            snapshot,
            in_,
            at,
            never,
        } => {
            let expires = match (in_, at, never) {
                (Some(d), None, false) => Some(expiry_from_now(d)?),
                (None, Some(t), false) => Some(
                    chrono::DateTime::parse_from_rfc3339(t)
                        .with_context(|| {
                            format!("--at {t}: expected RFC 3339, e.g. 2027-01-01T00:00:00Z")
                        })?
                        .with_timezone(&chrono::Utc),
                ),
                (None, None, true) => None,
                _ => bail!("give one of --in DURATION, --at TIME or --never"),
            };
            let repo = repository::open(cli).await?;
            let (all, damaged) = repo.list_snapshots_checked().await?;
            let snap = Repository::select_snapshot(&all, snapshot)?;
            if let Some(w) = latest_warning(snapshot, &snap, &damaged) {
                eprintln!("dprepo: warning: {w}");
            }
            let new = gc::set_expiry(&repo, &snap, expires).await?;
            if cli.json {
                print_json(&snapshot_json(&new))?;
            } else if !cli.quiet {
                let when = new
                    .manifest
                    .expires
                    .map(|t| crate::output::time(&t))
                    .unwrap_or_else(|| "never".into());
                print(&format!(
                    "snapshot {} now expires {when}; its new id is {}\n",
                    snap.id.short(),
                    new.id.short()
                ))?;
            }
            Ok(0)
        }
    }
}
