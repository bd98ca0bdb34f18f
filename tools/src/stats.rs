//! `dprepo stats`: what the selected snapshots hold and what they cost in the repository.
use crate::output::{self, bytes, print, print_json};
use crate::repository;
use crate::snapshots::{filtered_snapshots_checked, latest_warning, snapshot_paths, FilterArgs};
use crate::Cli;
use anyhow::Result;
use clap::Args;
use dprepo_repo_format::{Repository, Snapshot};
use serde_json::json;

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Snapshots to count (default: all matching the filters).
    snapshots: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
}

pub(crate) async fn stats(cli: &Cli, a: &StatsArgs) -> Result<u8> {
    let repo = repository::open(cli).await?;
    let (all, damaged) = filtered_snapshots_checked(&repo, &a.filter).await?;
    let selected: Vec<Snapshot> = if a.snapshots.is_empty() {
        all
    } else {
        let mut selected = Vec::new();
        for sel in &a.snapshots {
            let snap = Repository::select_snapshot(&all, sel)?;
            if let Some(w) = latest_warning(sel, &snap, &damaged) {
                eprintln!("dprepo: warning: {w}");
            }
            selected.push(snap);
        }
        selected
    };
    let usage = dprepo_repo_format::stats::usage(&repo, &selected).await?;
    let totals = dprepo_repo_format::stats::totals(&repo).await?;
    let per_snapshot: Vec<serde_json::Value> = selected
        .iter()
        .zip(&usage.per_snapshot)
        .map(|(snap, u)| {
            let sum = &snap.manifest.summary;
            json!({
                "id": snap.id,
                "short_id": snap.id.short(),
                "time": snap.manifest.time,
                "paths": snapshot_paths(snap),
                "logical_bytes": u.logical_bytes,
                "new_unique_bytes": u.new_unique_bytes,
                "bytes_added_by_backup": sum.bytes_added,
                "bytes_stored_by_backup": sum.bytes_stored,
                "dedup_ratio": ratio_or_null(u.logical_bytes, sum.bytes_added),
            })
        })
        .collect();
    let (files, logical, unique_raw, unique_stored) = (
        usage.files,
        usage.logical_bytes,
        usage.unique_data_bytes,
        usage.unique_data_stored_bytes,
    );
    let (packs, pack_bytes, data_blobs, meta_blobs) = (
        totals.packs,
        totals.pack_bytes,
        totals.data_blobs,
        totals.metadata_blobs,
    );
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let doc = json!({
        "snapshots": selected.len(),
        "files": files,
        "logical_bytes": logical,
        "unique_data_bytes": unique_raw,
        "unique_data_stored_bytes": unique_stored,
        "dedup_ratio": ratio(logical, unique_raw),
        "compression_ratio": ratio(unique_raw, unique_stored),
        "repository": {
            "packs": packs,
            "pack_bytes": pack_bytes,
            "data_blobs": data_blobs,
            "metadata_blobs": meta_blobs,
            "blob_raw_bytes": totals.blob_raw_bytes,
            "blob_stored_bytes": totals.blob_stored_bytes,
        },
        "per_snapshot": per_snapshot,
    });
    if cli.json {
        print_json(&doc)?;
        return Ok(0);
    }
    print(&format!(
        "snapshots:               {}\nlogical size:            {}\nunique data:             {} ({} stored)\ndedup ratio:             {:.2}x\ncompression ratio:       {:.2}x\nrepository:              {} in {} packs ({} data blobs, {} metadata blobs)\n",
        selected.len(),
        bytes(logical),
        bytes(unique_raw),
        bytes(unique_stored),
        ratio(logical, unique_raw),
        ratio(unique_raw, unique_stored),
        bytes(pack_bytes),
        packs,
        data_blobs,
        meta_blobs
    ))?;
    // Per snapshot, what its backup added: logical size, new data before and after
    // compression, and logical / new (how much deduplication saved).
    let mut text = format!(
        "\n{:<9} {:<19} {:>11} {:>11} {:>11} {:>8}  {}\n",
        "ID", "Time", "Logical", "Added", "Stored", "Dedup", "Paths"
    );
    for snap in &selected {
        let sum = &snap.manifest.summary;
        let logical = sum.total_bytes;
        let dedup = match ratio_or_null(logical, sum.bytes_added) {
            serde_json::Value::Null if logical == 0 => "-".to_string(),
            serde_json::Value::Null => "all".to_string(),
            v => format!("{:.1}x", v.as_f64().unwrap_or_default()),
        };
        text.push_str(&format!(
            "{:<9} {:<19} {:>11} {:>11} {:>11} {:>8}  {}\n",
            snap.id.short(),
            output::time(&snap.manifest.time),
            bytes(logical),
            bytes(sum.bytes_added),
            bytes(sum.bytes_stored),
            dedup,
            snapshot_paths(snap).join(", ")
        ));
    }
    print(&text)?;
    Ok(0)
}

/// logical / added, or null when nothing was added.
fn ratio_or_null(logical: u64, added: u64) -> serde_json::Value {
    if added == 0 {
        serde_json::Value::Null
    } else {
        json!(logical as f64 / added as f64)
    }
}
