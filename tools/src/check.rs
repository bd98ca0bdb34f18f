//! `verify` and `repair`: what dprepo can prove about its own repository, and how it
//! recovers what the packs still hold.

use crate::output::{bytes, print, print_json};
use crate::progress::Status;
use crate::repository;
use crate::Cli;
use anyhow::Result;
use clap::{Args, Subcommand};
use dprepo_repo_format::blob::BlobType;
use dprepo_repo_format::repair::{
    self, RepairPacksOptions, RepairPacksReport, RepairSnapshotsOptions, RepairSnapshotsReport,
};
use dprepo_repo_format::verify::{self, DataSubset, VerifyProgress};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Exit code when verify finds problems.
pub const EXIT_DAMAGED: u8 = 2;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Also read every pack, decrypt and re-hash every blob.
    #[arg(long)]
    read_data: bool,
    /// Read only a subset of packs: N% (random) or K/M (slice K of M; M runs cover all).
    #[arg(long, value_parser = clap::value_parser!(DataSubset))]
    read_data_subset: Option<DataSubset>,
}

#[derive(Debug, Subcommand)]
pub enum RepairCommand {
    /// Rebuild the index from pack headers (after index files are lost or damaged).
    Index,
    /// Take damaged blobs out of the index: copy the intact blobs of each damaged pack
    /// into a new pack and delete the damaged one, so the next backup stores the lost
    /// chunks again (after `verify --read-data` reports damaged blobs or packs).
    Packs {
        /// Packs to repair (names, ids or id prefixes, as verify prints them); default:
        /// read every pack the index names.
        packs: Vec<String>,
        /// Show what would be repaired; write nothing.
        #[arg(short = 'n', long)]
        dry_run: bool,
    },
    /// Write repaired copies of snapshots that reference missing or damaged data, and
    /// name those and the snapshot files that cannot be read (`--forget` removes them).
    Snapshots {
        /// Read and verify every referenced blob, not just look it up in the index.
        #[arg(long)]
        read_data: bool,
        /// Show what would be repaired; write nothing.
        #[arg(short = 'n', long)]
        dry_run: bool,
        /// Remove the damaged originals once their repaired copies are written, the
        /// snapshots nothing can be restored from, and unreadable snapshot files.
        #[arg(long)]
        forget: bool,
    },
}

fn status(cli: &Cli, progress: &Arc<VerifyProgress>, what: &'static str) -> Status {
    let p = progress.clone();
    Status::start(cli.quiet || cli.json, move || {
        format!(
            "{what}: {}/{} packs, {} read",
            p.packs_done.load(Ordering::Relaxed),
            p.packs_total.load(Ordering::Relaxed),
            bytes(p.bytes.load(Ordering::Relaxed))
        )
    })
}

pub async fn run_verify(cli: &Cli, a: &VerifyArgs) -> Result<u8> {
    let repo = repository::open(cli).await?;
    let subset = match (a.read_data, a.read_data_subset) {
        (_, Some(s)) => Some(s),
        (true, None) => Some(DataSubset::All),
        (false, None) => None,
    };
    let progress = Arc::new(VerifyProgress::default());
    let st = status(cli, &progress, "verify");
    let result = verify::verify(&repo, subset, progress).await;
    st.finish();
    let report = result?;
    if cli.json {
        let mut v = serde_json::to_value(&report)?;
        v["ok"] = json!(report.ok());
        v["next_steps"] = json!(report.next_steps());
        print_json(&v)?;
    } else if !cli.quiet || !report.ok() {
        let mut t = format!(
            "checked {} snapshots, {} packs, {} index files, {} blobs",
            report.snapshots, report.packs, report.index_files, report.blobs
        );
        if subset.is_some() {
            t.push_str(&format!(
                "; read {} packs ({}), re-hashed {} blobs",
                report.packs_read,
                bytes(report.bytes_read),
                report.blobs_checked
            ));
        }
        t.push('\n');
        if !report.temporary_files.is_empty() {
            t.push_str(&format!(
                "{} temporary files ({}) are left by interrupted writes or belong to writes in progress; gc removes those older than {} minutes\n",
                report.temporary_files.len(),
                bytes(report.temporary_bytes),
                dprepo_repo_format::gc::GcOptions::default()
                    .session_stale_after
                    .num_minutes()
            ));
        }
        if !report.unindexed_packs.is_empty() {
            t.push_str(&format!("{} packs are in no index file (from interrupted backups; gc removes them, repair index indexes them)\n", report.unindexed_packs.len()));
        }
        for p in &report.problems {
            t.push_str(&format!("error: {}: {} ({})\n", p.object, p.detail, p.kind));
            if !p.snapshots.is_empty() {
                t.push_str(&format!(
                    "  affects snapshots: {}\n",
                    p.snapshots
                        .iter()
                        .map(|s| &s[..8])
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            for f in p.files.iter().take(20) {
                t.push_str(&format!("  {f}\n"));
            }
            if p.files.len() > 20 {
                t.push_str(&format!("  ... and {} more\n", p.files.len() - 20));
            }
        }
        if report.ok() {
            t.push_str("no errors were found\n");
        } else {
            t.push_str(
                "the repository is damaged: see the errors above. To recover, run in this order:\n",
            );
            for step in report.next_steps() {
                t.push_str(&format!("  {step}\n"));
            }
        }
        print(&t)?;
    }
    Ok(if report.ok() { 0 } else { EXIT_DAMAGED })
}

pub async fn run_repair(cli: &Cli, c: &RepairCommand) -> Result<u8> {
    let repo = repository::open(cli).await?;
    match c {
        RepairCommand::Index => {
            let progress = Arc::new(VerifyProgress::default());
            let st = status(cli, &progress, "repair index");
            let result = repair::repair_index(&repo, progress).await;
            st.finish();
            let report = result?;
            if cli.json {
                print_json(&serde_json::to_value(&report)?)?;
            } else if !cli.quiet {
                print(&format!(
                    "indexed {} packs ({} blobs), replaced {} index files\n",
                    report.packs_indexed, report.blobs, report.index_files_replaced
                ))?;
                for p in &report.unreadable_packs {
                    eprintln!("dprepo: warning: {p}: header unreadable; kept what old index files said about it (`dprepo repair packs {p}` keeps the blobs that still decode)");
                }
            }
            Ok(0)
        }
        RepairCommand::Packs { packs, dry_run } => {
            let options = RepairPacksOptions::default()
                .with_packs(packs.clone())
                .with_dry_run(*dry_run);
            let progress = Arc::new(VerifyProgress::default());
            let st = status(cli, &progress, "repair packs");
            let result = repair::repair_packs(&repo, &options, progress).await;
            st.finish();
            let report = result?;
            for n in &report.notes {
                eprintln!("dprepo: warning: {n}");
            }
            if !report.writer_sessions.is_empty() {
                eprintln!(
                    "dprepo: warning: {} backups were running during the repair; one that started before it may have referenced a damaged blob: run `dprepo repair snapshots` once they have finished",
                    report.writer_sessions.len()
                );
            }
            if cli.json {
                let mut v = serde_json::to_value(&report)?;
                v["dry_run"] = json!(dry_run);
                print_json(&v)?;
            } else if !cli.quiet {
                print(&packs_text(&report, *dry_run))?;
            }
            Ok(0)
        }
        RepairCommand::Snapshots {
            read_data,
            dry_run,
            forget,
        } => {
            let options = RepairSnapshotsOptions::default()
                .with_read_data(*read_data)
                .with_dry_run(*dry_run)
                .with_forget(*forget);
            let report = repair::repair_snapshots(&repo, &options).await?;
            if cli.json {
                let mut v = serde_json::to_value(&report)?;
                v["dry_run"] = json!(dry_run);
                print_json(&v)?;
            } else if !cli.quiet {
                print(&snapshots_text(&report, &options))?;
            }
            Ok(0)
        }
    }
}

fn packs_text(report: &RepairPacksReport, dry_run: bool) -> String {
    let mut t = format!(
        "checked {} packs ({}, {} blobs)\n",
        report.packs_checked,
        bytes(report.bytes_read),
        report.blobs_checked
    );
    if report.damaged.is_empty() {
        t.push_str("no damaged packs found\n");
        return t;
    }
    for d in &report.damaged {
        t.push_str(&format!(
            "{}: {} blobs decode{}, {} do not\n",
            d.pack,
            d.blobs_kept,
            if dry_run {
                ""
            } else {
                " (copied into new packs)"
            },
            d.dropped.len()
        ));
        if let Some(why) = &d.header {
            t.push_str(&format!("  header unreadable: {why}\n"));
        }
        for b in d.dropped.iter().take(20) {
            // The reason names the blob as decoding does ("data blob 1a2b3c4d is ...").
            let kind = match b.blob_type {
                BlobType::Data => "data",
                BlobType::Tree => "tree",
                BlobType::ChunkList => "chunk list",
            };
            if b.reason.contains(&b.id[..8]) {
                t.push_str(&format!("  {}\n", b.reason));
            } else {
                t.push_str(&format!("  {kind} blob {}: {}\n", &b.id[..8], b.reason));
            }
        }
        if d.dropped.len() > 20 {
            t.push_str(&format!("  ... and {} more\n", d.dropped.len() - 20));
        }
    }
    let dropped: usize = report.damaged.iter().map(|d| d.dropped.len()).sum();
    if dry_run {
        t.push_str(&format!(
            "dry run: {} damaged packs would be replaced and {dropped} blobs left out of the index\n",
            report.damaged.len()
        ));
    } else {
        t.push_str(&format!(
            "replaced {} damaged packs by {} new packs, left {dropped} blobs out of the index and deleted the damaged packs\n\
             next: `dprepo repair snapshots --forget` rewrites the snapshots that used the blobs left out; the next backup stores their chunks again\n",
            report.damaged.len(),
            report.packs_written.len()
        ));
    }
    t
}

fn snapshots_text(report: &RepairSnapshotsReport, options: &RepairSnapshotsOptions) -> String {
    let mut t = String::new();
    let would = |done: &'static str, planned: &'static str| {
        if options.dry_run {
            planned
        } else {
            done
        }
    };
    for r in &report.repaired {
        t.push_str(&format!(
            "snapshot {} {} as {} (tagged repaired{}), leaving out:\n",
            &r.original[..8],
            would("repaired", "would be repaired"),
            &r.repaired[..8],
            if r.existed {
                ", written by an earlier repair"
            } else {
                ""
            }
        ));
        for d in &r.dropped {
            t.push_str(&format!("  {d}\n"));
        }
    }
    for l in &report.lost {
        t.push_str(&format!(
            "snapshot {} cannot be repaired: nothing of it can be restored ({})\n",
            &l.id[..8],
            l.reason
        ));
    }
    for u in &report.unreadable {
        t.push_str(&format!(
            "snapshot file {} cannot be read ({}): {}\n",
            u.name,
            u.error,
            if options.forget {
                would("removed", "would be removed")
            } else {
                "`--forget` removes it"
            }
        ));
    }
    t.push_str(&format!(
        "{} of {} snapshots needed repair: {} rewritten, {} lost entirely\n",
        report.repaired.len() + report.lost.len(),
        report.snapshots,
        report.repaired.len(),
        report.lost.len()
    ));
    if options.forget {
        t.push_str(&format!(
            "{} {} snapshots (the damaged originals and the lost ones) and {} unreadable snapshot files\n",
            would("removed", "would remove"),
            report.removed.len(),
            report.removed_files.len()
        ));
    } else if !report.repaired.is_empty()
        || !report.lost.is_empty()
        || !report.unreadable.is_empty()
    {
        t.push_str("the damaged originals are kept; `dprepo repair snapshots --forget` removes them (gc does not run while they exist)\n");
    }
    if report.repaired.is_empty() && report.lost.is_empty() && !options.read_data {
        t.push_str("(blobs were looked up in the index, not read: `dprepo verify --read-data` finds damaged ones, `dprepo repair packs` takes them out of the index)\n");
    }
    t
}
