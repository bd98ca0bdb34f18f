//! The subcommands.

use crate::output::{self, bytes, parse_size, print, print_json};
use crate::progress::Status;
use crate::repository;
use crate::snapshots::{latest_warning, resolve, snapshot_json, snapshots, FilterArgs};
use crate::stats::{stats, StatsArgs};
use crate::{Cli, EXIT_PARTIAL};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use dprepo_repo_format::backup::{
    backup, BackupOptions, BackupProgress, BackupSource, IndexMode, ParentChoice,
};
use dprepo_repo_format::chunker::{ChunkerParams, StreamChunking};
use dprepo_repo_format::restore::{dump, restore, Overwrite, RestoreOptions, RestoreProgress};
use dprepo_repo_format::storage::{probe_compare_and_swap, probe_create_if_absent};
use dprepo_repo_format::tree::{Node, NodeKind, Special};
use dprepo_repo_format::{BlobId, InitOptions, Repository};
use serde_json::json;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new repository.
    Init(InitArgs),
    /// Back up files and directories, or a stream from stdin.
    Backup(BackupArgs),
    /// List snapshots.
    Snapshots(FilterArgs),
    /// List the files of a snapshot.
    Ls(LsArgs),
    /// Restore a snapshot (or a path in it) to a directory.
    Restore(RestoreArgs),
    /// Write one file or stream of a snapshot to stdout.
    Dump(DumpArgs),
    /// Show repository and snapshot statistics.
    Stats(StatsArgs),
    /// Remove snapshots by id or by retention policy.
    Forget(crate::maintenance::ForgetArgs),
    /// Delete data no snapshot references; safe beside running backups.
    Gc(crate::maintenance::GcArgs),
    /// Check the repository; --read-data also reads and re-hashes every blob.
    Verify(crate::check::VerifyArgs),
    /// Recover from damage: rebuild the index, or rewrite damaged snapshots.
    #[command(subcommand)]
    Repair(crate::check::RepairCommand),
    /// Change a snapshot's expiration time.
    #[command(subcommand)]
    Snapshot(crate::maintenance::SnapshotCommand),
    /// Dump repository structures (config, keys, packs, index, blobs, trees, snapshots).
    Inspect(crate::inspect::InspectArgs),
    /// Manage keys: list them, add access keys, remove (revoke) keys.
    #[command(subcommand)]
    Key(crate::keys::KeyCommand),
    /// Show what changed between two snapshots.
    Diff(crate::history::DiffArgs),
    /// Find files and directories in snapshots by name or path.
    Find(crate::history::FindArgs),
    /// Add, remove or set the tags of snapshots (their ids change).
    Tag(crate::history::TagArgs),
    /// Write snapshots again without the paths --exclude matches (--forget drops the
    /// originals).
    Rewrite(crate::history::RewriteArgs),
    /// Copy snapshots from another repository (--from-repo) into this one, sending only
    /// what it lacks; snapshots copied before are skipped.
    Copy(crate::copy::CopyArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion(crate::docs::CompletionArgs),
    /// Print the manual page (roff), or write one per subcommand with --dir.
    Man(crate::docs::ManArgs),
    /// datasafed-compatible commands for KubeBlocks backup scripts (first argument only).
    ///
    /// push, pull, list, stat, rm, rmdir, mkdir as datasafed has them; the binary named
    /// `datasafed` is the same. See `dprepo datasafed --help`.
    #[command(disable_help_flag = true)]
    Datasafed {
        /// Arguments of the datasafed command.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Print the version, the git commit and whether this binary is static (no shared
    /// libraries: it runs in any Linux image). With --json: {"version", "commit", "static"}.
    Version,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Chunker for directory backups: MIN:AVG:MAX (e.g. 256K:1M:4M) or `default`/`small`.
    #[arg(long, default_value = "default")]
    chunker: String,
    /// Chunker for stream (stdin) backups, same forms as --chunker.
    #[arg(long, default_value = "default")]
    stream_chunker: String,
    /// Target pack size (e.g. 16M).
    #[arg(long, value_parser = parse_size, default_value = "16M")]
    pack_size: u32,
    /// zstd compression level, 0 to disable.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(0..=22))]
    compression: i32,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Files and directories to back up.
    paths: Vec<PathBuf>,
    /// Back up a stream read from stdin.
    #[arg(long, conflicts_with = "paths")]
    stdin: bool,
    /// Name under which the stdin stream is stored.
    #[arg(long, requires = "stdin")]
    stdin_name: Option<String>,
    /// Tag the snapshot (repeatable, or comma-separated).
    #[arg(long = "tag", value_delimiter = ',')]
    tags: Vec<String>,
    /// Host name to record (default: this machine's).
    #[arg(long)]
    host: Option<String>,
    /// Use this snapshot as parent instead of the latest of the same host and paths.
    #[arg(long)]
    parent: Option<String>,
    /// Read every file, ignoring the parent snapshot.
    #[arg(long)]
    force: bool,
    /// Let `forget --expired` remove the snapshot after this long (e.g. 30d, 1y6m, 12h).
    #[arg(long)]
    expire_in: Option<String>,
    /// How to cut a --stdin stream. `auto`: if the stream is a tar archive (ustar header
    /// first, as `pg_basebackup -Ft -D -` writes), cut at every member and every 8 KiB of
    /// files whose size is a multiple of 8 KiB (database pages), so an incremental stores
    /// only changed pages; anything else is cut content-defined. `cdc`: content-defined
    /// throughout (fewer, larger chunks).
    #[arg(long, value_enum, default_value = "auto", requires = "stdin")]
    stream_chunking: StreamChunkingArg,
    #[command(flatten)]
    select: crate::select::BackupSelectArgs,
    /// Do everything but write: read and chunk what changed since the parent, and say
    /// what would be added; the repository is left as it was.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Load the whole index even when the parent snapshot's locator would let the backup
    /// run without it (a cold backup stores again chunks its parent does not have, such
    /// as a moved directory's). Also `DPREPO_FULL_INDEX=1`.
    #[arg(long)]
    full_index: bool,
}

/// `--full-index`, or `DPREPO_FULL_INDEX` (`1`/`true`, `0`/`false`; empty is unset).
fn full_index_wanted(flag: bool) -> Result<bool> {
    if flag {
        return Ok(true);
    }
    match std::env::var("DPREPO_FULL_INDEX") {
        Err(_) => Ok(false),
        Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
            "" | "0" | "false" => Ok(false),
            "1" | "true" => Ok(true),
            other => bail!("DPREPO_FULL_INDEX={other:?}: use 1, true, 0 or false"),
        },
    }
}

/// `--stream-chunking` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum StreamChunkingArg {
    /// Tar-aware and page-aligned for tar streams, content-defined otherwise.
    Auto,
    /// Content-defined chunking of the whole stream.
    Cdc,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Snapshot id, unique prefix, or `latest`.
    snapshot: String,
    /// Directory or file in the snapshot (default: everything).
    path: Option<String>,
    /// Show mode, owner, size and time.
    #[arg(short, long)]
    long: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// SNAPSHOT or SNAPSHOT:PATH.
    snapshot: String,
    /// Directory to restore into (created if missing).
    #[arg(short, long)]
    target: PathBuf,
    /// Files restored in parallel.
    #[arg(long, default_value_t = 8)]
    parallel: usize,
    /// Write runs of zeros of every file as holes (files that had holes when backed up
    /// get them back anyway).
    #[arg(long)]
    sparse: bool,
    #[command(flatten)]
    select: crate::select::TreeSelectArgs,
    /// What to do with files already in the target: always replace them, replace
    /// if-changed (size or modification time differ), if-newer (the snapshot's is
    /// newer), or never.
    #[arg(long, value_enum, default_value = "always")]
    overwrite: OverwriteArg,
    /// Remove what the target holds that the snapshot does not (in the restored
    /// directories; with --include/--exclude, only what they take). Nothing outside the
    /// target is touched: symlinks are removed, never followed.
    #[arg(long)]
    delete: bool,
    /// Restore nothing: say what would be restored and deleted.
    #[arg(short = 'n', long, conflicts_with = "verify")]
    dry_run: bool,
    /// Read every restored file again and compare it with the snapshot.
    #[arg(long)]
    verify: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

/// `--overwrite` values (restic's).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum OverwriteArg {
    Always,
    IfChanged,
    IfNewer,
    Never,
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// Snapshot id, unique prefix, or `latest`.
    snapshot: String,
    /// The file in the snapshot (for a stream: its name).
    path: String,
    #[command(flatten)]
    filter: FilterArgs,
}

pub async fn run(cli: &Cli) -> Result<u8> {
    match &cli.command {
        Command::Init(a) => init(cli, a).await,
        Command::Backup(a) => run_backup(cli, a).await,
        Command::Snapshots(a) => snapshots(cli, a).await,
        Command::Ls(a) => ls(cli, a).await,
        Command::Restore(a) => run_restore(cli, a).await,
        Command::Dump(a) => run_dump(cli, a).await,
        Command::Stats(a) => stats(cli, a).await,
        Command::Forget(a) => crate::maintenance::forget(cli, a).await,
        Command::Gc(a) => crate::maintenance::gc(cli, a).await,
        Command::Snapshot(c) => crate::maintenance::snapshot(cli, c).await,
        Command::Verify(a) => crate::check::run_verify(cli, a).await,
        Command::Repair(c) => crate::check::run_repair(cli, c).await,
        Command::Inspect(a) => crate::inspect::run(cli, a).await,
        Command::Key(c) => crate::keys::run(cli, c).await,
        Command::Diff(a) => crate::history::diff(cli, a).await,
        Command::Find(a) => crate::history::find(cli, a).await,
        Command::Tag(a) => crate::history::tag(cli, a).await,
        Command::Rewrite(a) => crate::history::rewrite(cli, a).await,
        Command::Copy(a) => crate::copy::copy(cli, a).await,
        Command::Completion(a) => crate::docs::completion(a),
        Command::Man(a) => crate::docs::man(a),
        Command::Version => {
            crate::build_info::print(cli.json);
            Ok(0)
        }
        Command::Datasafed { .. } => {
            bail!("`datasafed` must be the first argument: dprepo datasafed COMMAND ... (global dprepo flags do not apply to it)")
        }
    }
}

fn parse_chunker(s: &str) -> Result<ChunkerParams> {
    match s {
        "default" => return Ok(ChunkerParams::DEFAULT),
        "small" => return Ok(ChunkerParams::SMALL),
        _ => {}
    }
    let parts: Vec<&str> = s.split(':').collect();
    let [min, avg, max] = parts.as_slice() else {
        bail!("chunker {s:?}: expected MIN:AVG:MAX (e.g. 256K:1M:4M), `default` or `small`");
    };
    let size = |v: &str| parse_size(v).map_err(anyhow::Error::msg);
    ChunkerParams::new(size(min)?, size(avg)?, size(max)?).with_context(|| format!("chunker {s:?}"))
}

async fn init(cli: &Cli, a: &InitArgs) -> Result<u8> {
    let storage = repository::storage(cli)?;
    let options = InitOptions::default()
        .with_chunker(parse_chunker(&a.chunker)?)
        .with_stream_chunker(parse_chunker(&a.stream_chunker)?)
        .with_pack_size(a.pack_size)
        .with_compression_level(a.compression);
    let password = repository::password(cli, true)?;
    let repo = Repository::init(storage.clone(), &password, options).await?;
    if !probe_create_if_absent(&*storage).await? {
        eprintln!(
            "dprepo: warning: {} ignores conditional writes (If-None-Match): create-if-absent degrades to write-if-unseen, \
             so two concurrent `init`s of one location could both succeed; backups are unaffected (their files are content-addressed)",
            storage.location()
        );
    }
    let cas = match probe_compare_and_swap(&*storage).await {
        Ok(true) => None,
        Ok(false) => Some("it accepted an update of a stale version".to_string()),
        Err(e) => Some(e.to_string()),
    };
    if let Some(why) = cas {
        eprintln!(
            "dprepo: warning: {} does not honour conditional updates (If-Match: {why}): two gc runs taking over \
             an expired gc lease at the same moment could both run; run gc from one place at a time",
            storage.location()
        );
    }
    if cli.json {
        print_json(
            &json!({ "id": repo.config().id, "location": storage.location(), "config": repo.config() }),
        )?;
    } else if !cli.quiet {
        print(&format!(
            "created repository {} at {}\n",
            &repo.config().id[..8],
            storage.location()
        ))?;
    }
    Ok(0)
}

async fn run_backup(cli: &Cli, a: &BackupArgs) -> Result<u8> {
    let started = std::time::Instant::now();
    let index_mode = if full_index_wanted(a.full_index)? {
        IndexMode::Full
    } else {
        IndexMode::Auto
    };
    let (repo, dry) = if a.dry_run {
        let (repo, dry) = repository::open_dry_run(cli).await?;
        (repo, Some(dry))
    } else {
        (repository::open_for_backup(cli).await?, None)
    };
    let mut list_warnings = Vec::new();
    let mut paths = a.paths.clone();
    if a.select.has_lists() {
        if a.stdin {
            bail!("--files-from* cannot be combined with --stdin");
        }
        paths.extend(a.select.listed_paths(&mut list_warnings)?);
    }
    let selection = a.select.selection()?;
    if a.stdin && !selection.is_everything() {
        bail!("exclude options select files of a directory backup; they do not apply to --stdin");
    }
    for w in &list_warnings {
        eprintln!("dprepo: warning: {w}");
    }
    let source = if a.stdin {
        BackupSource::Stream {
            name: a.stdin_name.clone().unwrap_or_else(|| "stdin".into()),
            reader: Box::new(std::io::stdin()),
        }
    } else {
        if paths.is_empty() {
            bail!(
                "nothing to back up: give paths, --files-from FILE, or --stdin --stdin-name NAME"
            );
        }
        BackupSource::Paths(paths)
    };
    let parent = match (&a.parent, a.force) {
        (_, true) => ParentChoice::None,
        (Some(sel), false) => {
            let (all, damaged) = repo.list_snapshots_checked().await?;
            let parent = Repository::select_snapshot(&all, sel)?;
            if let Some(w) = latest_warning(sel, &parent, &damaged) {
                eprintln!("dprepo: warning: --parent {w}");
            }
            ParentChoice::Id(parent.id)
        }
        (None, false) => ParentChoice::Auto,
    };
    let mut options = BackupOptions::default()
        .with_tags(a.tags.iter().filter(|t| !t.is_empty()).cloned().collect())
        .with_parent(parent)
        .with_connections(cli.connections.unwrap_or(4))
        .with_selection(selection)
        .with_index_mode(index_mode)
        .with_stream_chunking(match a.stream_chunking {
            StreamChunkingArg::Auto => StreamChunking::Auto,
            StreamChunkingArg::Cdc => StreamChunking::Cdc,
        });
    if let Some(h) = &a.host {
        options = options.with_hostname(h.clone());
    }
    if let Some(d) = &a.expire_in {
        options = options.with_expires(crate::maintenance::expiry_from_now(d)?);
    }
    let progress = Arc::new(BackupProgress::default());
    let p = progress.clone();
    let status = Status::start(cli.quiet || cli.json, move || {
        format!(
            "{} files, {} dirs, {} read, {} unchanged, {} errors  {}",
            p.files.load(Ordering::Relaxed),
            p.dirs.load(Ordering::Relaxed),
            bytes(p.bytes_read.load(Ordering::Relaxed)),
            bytes(p.bytes_unchanged.load(Ordering::Relaxed)),
            p.errors.load(Ordering::Relaxed),
            p.current.lock().map(|c| c.clone()).unwrap_or_default()
        )
    });
    let result = backup(&repo, source, options, progress).await;
    status.finish();
    repository::print_index_notes(&repo);
    let outcome = result?;
    for w in &outcome.warnings {
        eprintln!("dprepo: warning: {w}");
    }
    if cli.verbose {
        eprintln!("dprepo: index: {}", outcome.index_mode);
        for n in &outcome.notes {
            eprintln!("dprepo: note: {n}");
        }
    }
    for path in &outcome.changed_while_read {
        eprintln!(
            "dprepo: warning: {}: changed while it was read; its copy may mix old and new contents (the next backup reads it again)",
            path.display()
        );
    }
    let s = &outcome.snapshot;
    let sum = &s.manifest.summary;
    let mut warnings = list_warnings;
    warnings.extend(outcome.warnings.iter().cloned());
    if cli.json {
        let mut doc = snapshot_json(s);
        doc["warnings"] = json!(warnings);
        doc["changed_while_read"] = json!(outcome.changed_while_read);
        doc["excluded"] = json!(outcome.excluded);
        doc["excluded_count"] = json!(outcome.excluded.len());
        doc["index_mode"] = json!(outcome.index_mode);
        doc["first_pack_secs"] = json!(outcome
            .first_pack_at
            .map(|t| t.saturating_duration_since(started).as_secs_f64()));
        if let Some(dry) = &dry {
            let (packs, pack_bytes) = dry.dropped();
            doc["dry_run"] = json!(true);
            doc["id"] = serde_json::Value::Null;
            doc["short_id"] = serde_json::Value::Null;
            doc["data_packs_not_written"] = json!(packs);
            doc["data_pack_bytes_not_written"] = json!(pack_bytes);
        }
        print_json(&doc)?;
    } else if let Some(_dry) = &dry {
        if !cli.quiet {
            if let Some(p) = s.manifest.parent {
                print(&format!("using parent snapshot {}\n", p.short()))?;
            }
            let excluded = match outcome.excluded.len() {
                0 => String::new(),
                n => format!("Excluded: {n} entries (--json lists them)\n"),
            };
            print(&format!(
                "Files: {} new, {} changed, {} unmodified\n{excluded}Would add to the repository: {} ({} stored)\nwould process {} files, {}\ndry run: nothing was written to the repository\n",
                sum.files_new,
                sum.files_changed,
                sum.files_unmodified,
                bytes(sum.bytes_added),
                bytes(sum.bytes_stored),
                sum.files,
                bytes(sum.total_bytes),
            ))?;
        }
    } else if !cli.quiet {
        if !outcome.excluded.is_empty() {
            print(&format!(
                "Excluded: {} entries (--json lists them)\n",
                outcome.excluded.len()
            ))?;
        }
        if let Some(p) = s.manifest.parent {
            print(&format!("using parent snapshot {}\n", p.short()))?;
        }
        let deltas = match sum.deltas_added {
            0 => String::new(),
            n => format!(", {n} chunks as deltas of the parent's pages"),
        };
        print(&format!(
            "Files: {} new, {} changed, {} unmodified\nAdded to the repository: {} ({} stored{deltas})\nprocessed {} files, {} in {:.1}s\nsnapshot {} saved\n",
            sum.files_new,
            sum.files_changed,
            sum.files_unmodified,
            bytes(sum.bytes_added),
            bytes(sum.bytes_stored),
            sum.files,
            bytes(sum.total_bytes),
            sum.duration_secs,
            s.id.short()
        ))?;
    }
    Ok(if warnings.is_empty() { 0 } else { EXIT_PARTIAL })
}

fn node_type(n: &Node) -> &'static str {
    n.kind.name()
}

fn mode_string(n: &Node) -> String {
    let kind = match n.kind {
        NodeKind::Dir(_) => 'd',
        NodeKind::Symlink(_) => 'l',
        NodeKind::File(_) => '-',
        NodeKind::Special(Special::Fifo) => 'p',
        NodeKind::Special(Special::Socket) => 's',
        NodeKind::Special(Special::CharDevice(_)) => 'c',
        NodeKind::Special(Special::BlockDevice(_)) => 'b',
    };
    let mut s = String::from(kind);
    for shift in [6u32, 3, 0] {
        let bits = (n.mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn node_time(n: &Node) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(n.mtime.sec, n.mtime.nsec).unwrap_or_default()
}

async fn ls(cli: &Cli, a: &LsArgs) -> Result<u8> {
    let repo = repository::open(cli).await?;
    let (snap, warnings) = resolve(&repo, &a.snapshot, &a.filter).await?;
    let start = a.path.clone().unwrap_or_default();
    let start_trimmed = start.trim_end_matches('/').to_string();
    let mut entries: Vec<(String, Node)> = Vec::new();
    let mut stack: Vec<(BlobId, String)> = Vec::new();
    match repo
        .find_node(&snap.manifest.tree, start.as_bytes())
        .await?
    {
        None => stack.push((snap.manifest.tree, String::new())),
        Some(node) => {
            let path = if start_trimmed.starts_with('/') {
                start_trimmed.clone()
            } else {
                format!("/{start_trimmed}")
            };
            if let NodeKind::Dir(id) = node.kind {
                stack.push((id, path.clone()));
            }
            entries.push((path, node));
        }
    }
    while let Some((tree_id, prefix)) = stack.pop() {
        let tree = repo.load_tree(&tree_id).await?;
        for node in tree.nodes.into_iter().rev() {
            let path = format!("{prefix}/{}", String::from_utf8_lossy(&node.name));
            if let NodeKind::Dir(id) = node.kind {
                stack.push((id, path.clone()));
            }
            entries.push((path, node));
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    if cli.json {
        let nodes: Vec<_> = entries
            .iter()
            .map(|(path, n)| {
                let mut v = json!({
                    "path": path,
                    "name": String::from_utf8_lossy(&n.name),
                    "type": node_type(n),
                    "mode": n.mode & 0o7777,
                    "uid": n.uid,
                    "gid": n.gid,
                    "size": n.size,
                    "mtime": node_time(n),
                });
                if let NodeKind::Symlink(t) = &n.kind {
                    v["link_target"] = json!(String::from_utf8_lossy(t));
                }
                v
            })
            .collect();
        print_json(&json!({ "snapshot": snap.id, "nodes": nodes, "warnings": warnings }))?;
        return Ok(0);
    }
    let mut text = String::new();
    for (path, n) in &entries {
        if a.long {
            let link = match &n.kind {
                NodeKind::Symlink(t) => format!(" -> {}", String::from_utf8_lossy(t)),
                _ => String::new(),
            };
            text.push_str(&format!(
                "{} {:>5} {:>5} {:>12} {} {path}{link}\n",
                mode_string(n),
                n.uid,
                n.gid,
                n.size,
                output::time(&node_time(n))
            ));
        } else {
            text.push_str(path);
            text.push('\n');
        }
    }
    print(&text)?;
    Ok(0)
}

async fn run_restore(cli: &Cli, a: &RestoreArgs) -> Result<u8> {
    let repo = repository::open(cli).await?;
    let (selector, path) = match a.snapshot.split_once(':') {
        Some((s, p)) => (s, p),
        None => (a.snapshot.as_str(), ""),
    };
    let (snap, resolve_warnings) = resolve(&repo, selector, &a.filter).await?;
    let progress = Arc::new(RestoreProgress::default());
    let p = progress.clone();
    let status = Status::start(cli.quiet || cli.json, move || {
        format!(
            "{} files, {} dirs, {} restored",
            p.files.load(Ordering::Relaxed),
            p.dirs.load(Ordering::Relaxed),
            bytes(p.bytes.load(Ordering::Relaxed))
        )
    });
    let options = RestoreOptions {
        parallel_files: a.parallel.max(1),
        sparse: a.sparse,
        filter: a.select.filter()?,
        overwrite: match a.overwrite {
            OverwriteArg::Always => Overwrite::Always,
            OverwriteArg::IfChanged => Overwrite::IfChanged,
            OverwriteArg::IfNewer => Overwrite::IfNewer,
            OverwriteArg::Never => Overwrite::Never,
        },
        delete: a.delete,
        dry_run: a.dry_run,
        verify: a.verify,
        ..RestoreOptions::default()
    };
    let result = restore(
        &repo,
        &snap.manifest.tree,
        path.as_bytes(),
        &a.target,
        &options,
        progress,
    )
    .await;
    status.finish();
    let summary = result?;
    for w in &summary.warnings {
        eprintln!("dprepo: warning: {w}");
    }
    if cli.json {
        let mut v = serde_json::to_value(&summary)?;
        v["snapshot"] = json!(snap.id);
        v["target"] = json!(a.target);
        // The snapshot's selection first, then what the restore itself reported.
        let mut warnings: Vec<serde_json::Value> = resolve_warnings
            .into_iter()
            .map(serde_json::Value::from)
            .collect();
        if let Some(serde_json::Value::Array(restore_warnings)) = v.get("warnings") {
            warnings.extend(restore_warnings.iter().cloned());
        }
        v["warnings"] = serde_json::Value::Array(warnings);
        print_json(&v)?;
    } else if !cli.quiet {
        let mut others = String::new();
        if summary.hard_links > 0 {
            others.push_str(&format!(", {} hard links", summary.hard_links));
        }
        if summary.special_files > 0 {
            others.push_str(&format!(", {} special files", summary.special_files));
        }
        if summary.left_existing > 0 {
            others.push_str(&format!(", {} left as they were", summary.left_existing));
        }
        if summary.verified_files > 0 {
            others.push_str(&format!(", {} files verified", summary.verified_files));
        }
        if summary.filtered_out > 0 {
            others.push_str(&format!(", {} filtered out", summary.filtered_out));
        }
        let mut text = String::new();
        for p in &summary.deleted {
            text.push_str(&format!(
                "{} {}\n",
                if a.dry_run { "would delete" } else { "deleted" },
                p.display()
            ));
        }
        print(&format!(
            "{text}{} snapshot {} to {}: {} files, {} dirs, {} symlinks{others}, {}{}\n",
            if a.dry_run {
                "would restore"
            } else {
                "restored"
            },
            snap.id.short(),
            a.target.display(),
            summary.files,
            summary.dirs,
            summary.symlinks,
            bytes(summary.bytes),
            match summary.deleted.len() {
                0 => String::new(),
                n if a.dry_run => format!("; {n} entries would be deleted"),
                n => format!("; {n} entries deleted"),
            }
        ))?;
    }
    if summary.is_complete() {
        return Ok(0);
    }
    // Listed last, after everything else was restored (as restic does).
    for skipped in &summary.errors {
        eprintln!("dprepo: not restored: {skipped}");
    }
    eprintln!(
        "dprepo: error: restore incomplete: {} {} not restored (listed above)",
        summary.errors.len(),
        if summary.errors.len() == 1 {
            "entry was"
        } else {
            "entries were"
        }
    );
    Ok(1)
}

async fn run_dump(cli: &Cli, a: &DumpArgs) -> Result<u8> {
    let repo = repository::open(cli).await?;
    let (snap, _warnings) = resolve(&repo, &a.snapshot, &a.filter).await?;
    let mut stdout = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
    match dump(&repo, &snap.manifest.tree, a.path.as_bytes(), &mut stdout).await {
        Ok(_) => Ok(0),
        Err(dprepo_repo_format::Error::LocalIo { source, .. })
            if source.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            Ok(0)
        }
        Err(e) => Err(e.into()),
    }
}
