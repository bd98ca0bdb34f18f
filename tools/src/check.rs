//! `verify` and `repair`: what dprepo can prove about its own repository, and how it
//! recovers what the packs still hold.

use crate::output::{bytes, print, print_json};
use crate::progress::Status;
use crate::repository;
use crate::Cli;
use anyhow::Result;
use clap::{Args, Subcommand};
use dprepo_repo_format::repair;
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
    /// Write repaired copies of snapshots that reference missing or damaged data.
    Snapshots {
        /// Read and verify every referenced blob, not just look it up in the index.
        #[arg(long)]
        read_data: bool,
        /// Show what would be repaired; write nothing.
        #[arg(short = 'n', long)]
        dry_run: bool,
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
        t.push_str(if report.ok() {
            "no errors were found\n"
        } else {
            "the repository is damaged: see the errors above (repair index / repair snapshots)\n"
        });
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
                    eprintln!("dprepo: warning: {p}: header unreadable; kept what old index files said about it");
                }
            }
            Ok(0)
        }
        RepairCommand::Snapshots { read_data, dry_run } => {
            let report = repair::repair_snapshots(&repo, *read_data, *dry_run).await?;
            if cli.json {
                let mut v = serde_json::to_value(&report)?;
                v["dry_run"] = json!(dry_run);
                print_json(&v)?;
            } else if !cli.quiet {
                let mut t = String::new();
                for r in &report.repaired {
                    t.push_str(&format!(
                        "snapshot {} {} as {} (tagged repaired), leaving out:\n",
                        &r.original[..8],
                        if *dry_run {
                            "would be repaired"
                        } else {
                            "repaired"
                        },
                        &r.repaired[..8]
                    ));
                    for d in &r.dropped {
                        t.push_str(&format!("  {d}\n"));
                    }
                }
                t.push_str(&format!(
                    "{} of {} snapshots needed repair; originals are kept\n",
                    report.repaired.len(),
                    report.snapshots
                ));
                print(&t)?;
            }
            Ok(0)
        }
    }
}
