//! `dprepo stats`: what the selected snapshots hold and what they cost in the repository.
use crate::output::{self, bytes, print, print_json};
use crate::repository;
use crate::snapshots::{filtered_snapshots_checked, latest_warning, snapshot_paths, FilterArgs};
use crate::Cli;
use anyhow::Result;
use clap::Args;
use dprepo_repo_format::blob::BlobType;
use dprepo_repo_format::tree::NodeKind;
use dprepo_repo_format::{BlobId, Repository, Snapshot};
use serde_json::json;
use std::collections::HashSet;

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
    // Walk every selected snapshot once, counting each tree and data blob once.
    let mut seen_trees: HashSet<BlobId> = HashSet::new();
    let mut seen_data: HashSet<BlobId> = HashSet::new();
    let mut logical = 0u64;
    let mut files = 0u64;
    let (mut unique_raw, mut unique_stored) = (0u64, 0u64);
    let mut per_snapshot = Vec::new();
    for snap in &selected {
        let mut stack = vec![snap.manifest.tree];
        let (mut snap_logical, mut snap_new_raw) = (0u64, 0u64);
        while let Some(tree_id) = stack.pop() {
            if !seen_trees.insert(tree_id) {
                continue;
            }
            let tree = repo.load_tree(&tree_id).await?;
            for node in tree.nodes {
                match &node.kind {
                    NodeKind::Dir(id) => stack.push(*id),
                    NodeKind::File(content) => {
                        files += 1;
                        snap_logical += node.size;
                        let mut ids = dprepo_repo_format::restore::DataIds::new(content);
                        while let Some(id) = ids.next(&repo).await? {
                            if seen_data.insert(id) {
                                let loc = repo.locate(&id).ok_or_else(|| {
                                    anyhow::anyhow!(
                                        "chunk {} of {} is not in the index",
                                        id.short(),
                                        String::from_utf8_lossy(&node.name)
                                    )
                                })?;
                                unique_raw += u64::from(loc.raw_len);
                                unique_stored += u64::from(loc.stored_len);
                                snap_new_raw += u64::from(loc.raw_len);
                            }
                        }
                    }
                    NodeKind::Symlink(_) | NodeKind::Special(_) => {}
                }
            }
        }
        // Files of trees already seen (unchanged directories) still count logically.
        let logical_recorded = snap.manifest.summary.total_bytes.max(snap_logical);
        logical += logical_recorded;
        let sum = &snap.manifest.summary;
        per_snapshot.push(json!({
            "id": snap.id,
            "short_id": snap.id.short(),
            "time": snap.manifest.time,
            "paths": snapshot_paths(snap),
            "logical_bytes": logical_recorded,
            "new_unique_bytes": snap_new_raw,
            "bytes_added_by_backup": sum.bytes_added,
            "bytes_stored_by_backup": sum.bytes_stored,
            "dedup_ratio": ratio_or_null(logical_recorded, sum.bytes_added),
        }));
    }
    let (mut pack_bytes, mut packs) = (0u64, 0u64);
    for prefix in ["data/", "meta/"] {
        for b in repo.storage().list(prefix).await? {
            pack_bytes += b.size;
            packs += 1;
        }
    }
    let index = repo
        .index()
        .read()
        .map_err(|_| anyhow::anyhow!("index lock poisoned"))?;
    let (mut all_raw, mut all_stored, mut data_blobs, mut meta_blobs) = (0u64, 0u64, 0u64, 0u64);
    for (_, loc) in index.blobs() {
        all_raw += u64::from(loc.raw_len);
        all_stored += u64::from(loc.stored_len);
        if loc.blob_type == BlobType::Data {
            data_blobs += 1;
        } else {
            meta_blobs += 1;
        }
    }
    drop(index);
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
            "blob_raw_bytes": all_raw,
            "blob_stored_bytes": all_stored,
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
