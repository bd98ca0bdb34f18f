//! `dprepo inspect`: dump each structure of SPEC.md in readable form (or `--json`), for
//! debugging a repository: config, key files, pack headers, index files, blobs, trees,
//! snapshot manifests, where a chunk lives and who uses it, and per-pack statistics.
//!
//! Ids are accepted as unique hex prefixes, and storage names (`data/6e/6e83…`,
//! `index/…`, `snapshots/…`) can be pasted as they are. Damaged objects are reported
//! with the engine's error naming them; a damaged key file, index file or snapshot in a
//! listing is shown with its error instead of stopping the listing.

use crate::output::{bytes, print, print_json};
use crate::repository;
use crate::Cli;
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use dprepo_repo_format::blob::BlobType;
use dprepo_repo_format::config::ChunkerSettings;
use dprepo_repo_format::content::Content;
use dprepo_repo_format::index::BlobLocation;
use dprepo_repo_format::inspect::{
    list_index_files, load_index_file, pack_stats, read_pack_header, read_stored_blob,
    resolve_blob_prefix, resolve_index_file, resolve_pack_prefix, snapshots_using_blob, PackStats,
};
use dprepo_repo_format::key::KeyFile;
use dprepo_repo_format::pack::{PackEntry, PackKind};
use dprepo_repo_format::repo::{KEYS_DIR, MAX_KEYS_TRIED, SNAPSHOTS_DIR};
use dprepo_repo_format::tree::{Node, NodeKind, Special, Timestamp, Tree, EXT_CRITICAL};
use dprepo_repo_format::{BlobId, Repository};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;

/// Arguments of `dprepo inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(subcommand)]
    command: InspectCommand,
}

#[derive(Debug, Subcommand)]
enum InspectCommand {
    /// The repository config.
    Config,
    /// Every key file: KDF parameters, creation time, host and user (no password needed).
    Keys,
    /// A pack's header, read from the pack itself, and whether the index lists each blob.
    Pack {
        /// Pack id (unique prefix) or storage name.
        id: String,
    },
    /// All index files (summary), or the packs and entries of one.
    Index {
        /// Index file id (unique prefix) or storage name.
        id: Option<String>,
    },
    /// One blob: a data blob's plaintext to stdout, or a decoded tree or chunk list.
    Blob {
        /// Blob id (unique prefix).
        id: String,
        /// Print the stored (encrypted) bytes as hex.
        #[arg(long, conflicts_with = "decoded")]
        raw: bool,
        /// Print the decoded blob with its location (data blobs as a hex dump).
        #[arg(long)]
        decoded: bool,
    },
    /// A tree's nodes with every field.
    Tree {
        /// Tree id (unique prefix), or SNAPSHOT:PATH for the tree of a directory.
        id: String,
    },
    /// A snapshot's manifest and storage id.
    Snapshot {
        /// Snapshot id, unique prefix, storage name or `latest`.
        id: String,
    },
    /// Where a blob lives, and which snapshots and paths use it.
    Chunk {
        /// Blob id (unique prefix; a full id is searched for even if no index lists it).
        id: String,
    },
    /// Pack totals by kind; with --by-pack, one line per pack.
    Stats {
        /// List every pack: size, blobs, raw and stored bytes, compression ratio.
        #[arg(long)]
        by_pack: bool,
    },
}

/// Run `dprepo inspect`.
pub async fn run(cli: &Cli, a: &InspectArgs) -> Result<u8> {
    match &a.command {
        InspectCommand::Config => config(cli).await,
        InspectCommand::Keys => keys(cli).await,
        InspectCommand::Pack { id } => pack(cli, id).await,
        InspectCommand::Index { id } => index(cli, id.as_deref()).await,
        InspectCommand::Blob { id, raw, decoded } => blob(cli, id, *raw, *decoded).await,
        InspectCommand::Tree { id } => tree(cli, id).await,
        InspectCommand::Snapshot { id } => snapshot(cli, id).await,
        InspectCommand::Chunk { id } => chunk(cli, id).await,
        InspectCommand::Stats { by_pack } => stats(cli, *by_pack).await,
    }?;
    Ok(0)
}

// ---- formatting helpers ----

fn hex(data: &[u8]) -> String {
    let mut s = String::with_capacity(data.len() * 2);
    for b in data {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Hex wrapped at 32 bytes a line (`xxd -r -p` reads it back).
fn hex_lines(data: &[u8]) -> String {
    let mut s = String::new();
    for line in data.chunks(32) {
        s.push_str(&hex(line));
        s.push('\n');
    }
    s
}

/// `hexdump -C` style: offset, 16 bytes in hex, the printable ones as text.
fn hexdump(data: &[u8]) -> String {
    let mut s = String::new();
    for (i, line) in data.chunks(16).enumerate() {
        let mut cols = String::new();
        for (j, b) in line.iter().enumerate() {
            let _ = write!(cols, "{}{b:02x}", if j == 8 { "  " } else { " " });
        }
        let text: String = line
            .iter()
            .map(|b| {
                if b.is_ascii_graphic() || *b == b' ' {
                    char::from(*b)
                } else {
                    '.'
                }
            })
            .collect();
        let _ = writeln!(s, "{:08x} {cols:<49}  |{text}|", i * 16);
    }
    let _ = writeln!(s, "{:08x}", data.len());
    s
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn timestamp_text(t: &Timestamp) -> String {
    match chrono::DateTime::from_timestamp(t.sec, t.nsec) {
        Some(d) => d.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string(),
        None => format!("{}.{:09} (out of range)", t.sec, t.nsec),
    }
}

fn timestamp_json(t: &Timestamp) -> Value {
    json!({ "sec": t.sec, "nsec": t.nsec, "utc": timestamp_text(t) })
}

fn ratio(raw: u64, stored: u64) -> f64 {
    if stored == 0 {
        0.0
    } else {
        raw as f64 / stored as f64
    }
}

fn size_text(n: u64) -> String {
    if n < 1024 {
        format!("{n} bytes")
    } else {
        format!("{n} bytes ({})", bytes(n))
    }
}

fn kind_name(k: PackKind) -> &'static str {
    match k {
        PackKind::Data => "data",
        PackKind::Meta => "meta",
    }
}

fn type_name(t: BlobType) -> &'static str {
    match t {
        BlobType::Data => "data",
        BlobType::Tree => "tree",
        BlobType::ChunkList => "chunk_list",
    }
}

fn chunker_text(c: &ChunkerSettings) -> String {
    format!(
        "min {} / avg {} / max {}",
        bytes(c.min_size.into()),
        bytes(c.avg_size.into()),
        bytes(c.max_size.into())
    )
}

fn location_json(loc: &BlobLocation) -> Value {
    json!({
        "pack": loc.pack_id,
        "pack_name": loc.pack_name(),
        "pack_kind": loc.pack_kind,
        "type": loc.blob_type,
        "offset": loc.offset,
        "stored_len": loc.stored_len,
        "raw_len": loc.raw_len,
        "delta_base": loc.base,
    })
}

fn location_text(loc: &BlobLocation) -> String {
    let base = loc
        .base
        .map(|b| format!("delta base  {b}\n"))
        .unwrap_or_default();
    format!(
        "type        {}\npack        {}\npack name   {}\noffset      {}\nstored      {}\nraw         {}\n{base}",
        type_name(loc.blob_type),
        loc.pack_id,
        loc.pack_name(),
        loc.offset,
        size_text(loc.stored_len.into()),
        size_text(loc.raw_len.into()),
    )
}

fn entry_json(e: &PackEntry) -> Value {
    json!({
        "offset": e.offset,
        "stored_len": e.stored_len,
        "raw_len": e.raw_len,
        "type": e.blob_type,
        "id": e.id,
        "delta_base": e.base,
    })
}

fn entry_header() -> String {
    format!(
        "{:>12} {:>10} {:>10}  {:<10}  {:<64}",
        "offset", "stored", "raw", "type", "id"
    )
}

fn entry_text(e: &PackEntry) -> String {
    let base = e
        .base
        .map(|b| format!("  delta of {b}"))
        .unwrap_or_default();
    format!(
        "{:>12} {:>10} {:>10}  {:<10}  {}{base}",
        e.offset,
        e.stored_len,
        e.raw_len,
        type_name(e.blob_type),
        e.id
    )
}

fn write_stdout(data: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(data).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

// ---- config and keys ----

async fn config(cli: &Cli) -> Result<()> {
    let repo = repository::open(cli).await?;
    let c = repo.config();
    let location = repo.storage().location();
    if cli.json {
        return print_json(&json!({ "location": location, "config": c }));
    }
    print(&format!(
        "location           {location}\nrepository id      {}\nversion            {}\ncreated            {}\nchunker            {}\nstream chunker     {}\npack size          {}\ncompression level  {}{}\n",
        c.id,
        c.version,
        c.created.to_rfc3339(),
        chunker_text(&c.chunker),
        chunker_text(&c.stream_chunker),
        size_text(c.pack_size.into()),
        c.compression_level,
        if c.compression_level == 0 { " (no compression)" } else { " (zstd)" },
    ))
}

/// Reads key files without opening the repository: their headers are plaintext, so
/// this works with a wrong or missing password.
async fn keys(cli: &Cli) -> Result<()> {
    let storage = repository::storage(cli)?;
    let mut files = storage
        .list(KEYS_DIR)
        .await
        .with_context(|| format!("listing {KEYS_DIR}"))?;
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let mut docs = Vec::new();
    let mut text = String::new();
    for (i, info) in files.iter().enumerate() {
        let id = info.name.strip_prefix(KEYS_DIR).unwrap_or(&info.name);
        let tried = i < MAX_KEYS_TRIED;
        let _ = writeln!(text, "key {id}");
        let _ = writeln!(text, "  size       {}", size_text(info.size));
        if !tried {
            let _ = writeln!(
                text,
                "  note       not tried when opening (only the first {MAX_KEYS_TRIED} are)"
            );
        }
        let bytes = match storage.get(&info.name).await {
            Ok(b) => b,
            Err(e) => {
                let _ = writeln!(text, "  error      {e}\n");
                docs.push(json!({ "id": id, "name": info.name, "size": info.size, "error": e.to_string() }));
                continue;
            }
        };
        let name_matches = BlobId::of_stored(&bytes).to_hex() == id;
        if !name_matches {
            let _ = writeln!(text, "  note       content does not hash to the name");
        }
        let mut doc = json!({
            "id": id,
            "name": info.name,
            "size": info.size,
            "name_matches_content": name_matches,
            "tried_when_opening": tried,
        });
        match KeyFile::decode(&bytes, &info.name) {
            Ok(k) => {
                let created = chrono::DateTime::from_timestamp(k.created, 0)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| format!("{} (out of range)", k.created));
                if k.kind == dprepo_repo_format::key::KeyKind::Access {
                    let _ = writeln!(text, "  kdf        none (access key)");
                    let _ = writeln!(text, "  label      {}", k.label);
                } else {
                    let _ = writeln!(
                        text,
                        "  kdf        argon2id, memory {} KiB, {} iterations, parallelism {}",
                        k.kdf.memory_kib, k.kdf.iterations, k.kdf.parallelism
                    );
                }
                let _ = writeln!(text, "  created    {created}");
                let _ = writeln!(text, "  host       {}", k.hostname);
                let _ = writeln!(text, "  user       {}\n", k.username);
                doc["kind"] = json!(k.kind);
                doc["label"] = json!(k.label);
                doc["kdf"] = json!({
                    "algorithm": if k.kind == dprepo_repo_format::key::KeyKind::Access { "none" } else { "argon2id" },
                    "memory_kib": k.kdf.memory_kib,
                    "iterations": k.kdf.iterations,
                    "parallelism": k.kdf.parallelism,
                });
                doc["created"] = json!(created);
                doc["created_unix"] = json!(k.created);
                doc["hostname"] = json!(k.hostname);
                doc["username"] = json!(k.username);
            }
            Err(e) => {
                let _ = writeln!(text, "  error      {e}\n");
                doc["error"] = json!(e.to_string());
            }
        }
        docs.push(doc);
    }
    if cli.json {
        return print_json(&json!({ "location": storage.location(), "keys": docs }));
    }
    if files.is_empty() {
        text = format!("no key files in {KEYS_DIR} (the repository cannot be opened)\n");
    }
    print(&text)
}

// ---- packs and index files ----

async fn pack(cli: &Cli, arg: &str) -> Result<()> {
    let repo = repository::open(cli).await?;
    let (id, _) = resolve_pack_prefix(&repo, arg).await?;
    let header = read_pack_header(&repo, &id).await?;
    let indexed = repo
        .index()
        .read()
        .map_err(|_| anyhow!("index lock poisoned"))?
        .packs()
        .any(|(p, _)| p == id);
    // How the index sees each header entry.
    let status: Vec<(&'static str, Option<BlobLocation>)> = header
        .entries
        .iter()
        .map(|e| match repo.locate(&e.id) {
            None => ("missing", None),
            Some(l) if l.pack_id != id => ("elsewhere", Some(l)),
            Some(l)
                if (l.blob_type, l.offset, l.stored_len, l.raw_len, l.base)
                    == (e.blob_type, e.offset, e.stored_len, e.raw_len, e.base) =>
            {
                ("here", Some(l))
            }
            Some(l) => ("mismatch", Some(l)),
        })
        .collect();
    let raw: u64 = header.entries.iter().map(|e| u64::from(e.raw_len)).sum();
    let stored: u64 = header.entries.iter().map(|e| u64::from(e.stored_len)).sum();
    if cli.json {
        let entries: Vec<Value> = header
            .entries
            .iter()
            .zip(&status)
            .map(|(e, (s, loc))| {
                let mut v = entry_json(e);
                v["index"] = json!(s);
                if let Some(l) = loc.filter(|_| *s != "here") {
                    v["index_location"] = location_json(&l);
                }
                v
            })
            .collect();
        return print_json(&json!({
            "id": header.id,
            "name": header.name,
            "kind": header.kind,
            "size": header.size,
            "header_len": header.header_len,
            "indexed": indexed,
            "raw_bytes": raw,
            "stored_bytes": stored,
            "entries": entries,
        }));
    }
    let mut text = format!(
        "pack        {}\nname        {}\nkind        {}\nsize        {}\nheader      {} sealed, {} entries\nindex       {}\nblobs       raw {}, stored {} (ratio {:.2}x)\n\n{}  index\n",
        header.id,
        header.name,
        kind_name(header.kind),
        size_text(header.size),
        size_text(header.header_len.into()),
        header.entries.len(),
        if indexed {
            "listed by an index file"
        } else {
            "not listed by any index file (orphan)"
        },
        size_text(raw),
        size_text(stored),
        ratio(raw, stored),
        entry_header(),
    );
    for (e, (s, loc)) in header.entries.iter().zip(&status) {
        let note = match (s, loc) {
            (&"elsewhere", Some(l)) => format!("elsewhere: pack {}", l.pack_id.short()),
            (&"mismatch", Some(l)) => format!(
                "MISMATCH: index says {} at {} ({} stored, {} raw)",
                type_name(l.blob_type),
                l.offset,
                l.stored_len,
                l.raw_len
            ),
            (&"missing", _) => "MISSING from the index".to_string(),
            (s, _) => s.to_string(),
        };
        let _ = writeln!(text, "{}  {note}", entry_text(e));
    }
    print(&text)
}

async fn index(cli: &Cli, arg: Option<&str>) -> Result<()> {
    let repo = repository::open(cli).await?;
    match arg {
        Some(arg) => index_file(cli, &repo, arg).await,
        None => index_summary(cli, &repo).await,
    }
}

async fn index_summary(cli: &Cli, repo: &Repository) -> Result<()> {
    let files = list_index_files(repo).await?;
    let mut docs = Vec::new();
    let mut text = format!(
        "{:<64}  {:>10}  {:>9}  {:>6}  {:>8}  {:>9}\n",
        "index file", "size", "obsoletes", "packs", "blobs", "raw"
    );
    let (mut packs_total, mut blobs_total) = (0usize, 0usize);
    for f in &files {
        let id = f
            .name
            .strip_prefix(dprepo_repo_format::layout::INDEX_DIR)
            .unwrap_or(&f.name);
        match load_index_file(repo, &f.name).await {
            Ok(file) => {
                let blobs: usize = file.packs.iter().map(|p| p.entries.len()).sum();
                let raw: u64 = file
                    .packs
                    .iter()
                    .flat_map(|p| &p.entries)
                    .map(|e| u64::from(e.raw_len))
                    .sum();
                let data_packs = file
                    .packs
                    .iter()
                    .filter(|p| p.kind == PackKind::Data)
                    .count();
                packs_total += file.packs.len();
                blobs_total += blobs;
                let _ = writeln!(
                    text,
                    "{id:<64}  {:>10}  {:>9}  {:>6}  {blobs:>8}  {:>9}",
                    f.size,
                    file.obsoletes.len(),
                    file.packs.len(),
                    bytes(raw)
                );
                docs.push(json!({
                    "id": id,
                    "name": f.name,
                    "size": f.size,
                    "obsoletes": file.obsoletes,
                    "packs": file.packs.len(),
                    "data_packs": data_packs,
                    "meta_packs": file.packs.len() - data_packs,
                    "blobs": blobs,
                    "raw_bytes": raw,
                }));
            }
            Err(e) => {
                let _ = writeln!(text, "{id:<64}  {:>10}  error: {e}", f.size);
                docs.push(
                    json!({ "id": id, "name": f.name, "size": f.size, "error": e.to_string() }),
                );
            }
        }
    }
    if cli.json {
        return print_json(&json!({ "index_files": docs }));
    }
    let _ = writeln!(
        text,
        "{} index files, {packs_total} pack records, {blobs_total} blob entries",
        files.len()
    );
    print(&text)
}

async fn index_file(cli: &Cli, repo: &Repository, arg: &str) -> Result<()> {
    let name = resolve_index_file(repo, arg).await?;
    let size = repo.storage().size(&name).await?;
    let file = load_index_file(repo, &name).await?;
    let id = name
        .strip_prefix(dprepo_repo_format::layout::INDEX_DIR)
        .unwrap_or(&name);
    if cli.json {
        let packs: Vec<Value> = file
            .packs
            .iter()
            .map(|p| {
                json!({
                    "id": p.id,
                    "kind": p.kind,
                    "entries": p.entries.iter().map(entry_json).collect::<Vec<_>>(),
                })
            })
            .collect();
        return print_json(&json!({
            "id": id,
            "name": name,
            "size": size,
            "obsoletes": file.obsoletes,
            "packs": packs,
        }));
    }
    let blobs: usize = file.packs.iter().map(|p| p.entries.len()).sum();
    let mut text = format!(
        "index file  {id}\nname        {name}\nsize        {}\npacks       {}, {blobs} blob entries\nobsoletes   {}\n",
        size_text(size),
        file.packs.len(),
        if file.obsoletes.is_empty() { "none".to_string() } else { file.obsoletes.len().to_string() },
    );
    for o in &file.obsoletes {
        let _ = writeln!(text, "  {o}");
    }
    for p in &file.packs {
        let _ = writeln!(
            text,
            "\npack {}  {}  {} entries\n{}",
            p.id,
            kind_name(p.kind),
            p.entries.len(),
            entry_header().trim_end()
        );
        for e in &p.entries {
            let _ = writeln!(text, "{}", entry_text(e));
        }
    }
    print(&text)
}

// ---- blobs and trees ----

fn node_json(n: &Node) -> Value {
    let mut v = json!({
        "name": lossy(&n.name),
        "kind": n.kind.name(),
        "mode": n.mode,
        "mode_octal": format!("{:o}", n.mode),
        "uid": n.uid,
        "gid": n.gid,
        "size": n.size,
        "mtime": timestamp_json(&n.mtime),
        "ctime": timestamp_json(&n.ctime),
        "inode": n.inode,
        "device": n.device,
        "extensions": n.extensions.iter().map(|e| json!({
            "tag": e.tag,
            "critical": e.tag & EXT_CRITICAL != 0,
            "data_hex": hex(&e.data),
        })).collect::<Vec<_>>(),
    });
    if std::str::from_utf8(&n.name).is_err() {
        v["name_hex"] = json!(hex(&n.name));
    }
    match &n.kind {
        NodeKind::File(c) => v["content"] = json!({ "level": c.level, "ids": c.ids }),
        NodeKind::Dir(id) => v["subtree"] = json!(id),
        NodeKind::Symlink(t) => {
            v["link_target"] = json!(lossy(t));
            if std::str::from_utf8(t).is_err() {
                v["link_target_hex"] = json!(hex(t));
            }
        }
        NodeKind::Special(Special::CharDevice(rdev) | Special::BlockDevice(rdev)) => {
            v["rdev"] = json!(rdev)
        }
        NodeKind::Special(Special::Fifo | Special::Socket) => {}
    }
    v
}

fn tree_json(id: &BlobId, tree: &Tree) -> Value {
    json!({ "id": id, "nodes": tree.nodes.iter().map(node_json).collect::<Vec<_>>() })
}

fn tree_text(id: &BlobId, tree: &Tree) -> String {
    let mut s = format!("tree {id}  ({} nodes)\n", tree.nodes.len());
    for n in &tree.nodes {
        let _ = writeln!(s, "\n[{}] {}", n.kind.name(), lossy(&n.name));
        if std::str::from_utf8(&n.name).is_err() {
            let _ = writeln!(s, "  name hex   {}", hex(&n.name));
        }
        let _ = writeln!(
            s,
            "  mode {:06o}  uid {}  gid {}  size {}",
            n.mode, n.uid, n.gid, n.size
        );
        let _ = writeln!(
            s,
            "  mtime {}  ctime {}",
            timestamp_text(&n.mtime),
            timestamp_text(&n.ctime)
        );
        let _ = writeln!(s, "  inode {}  device {}", n.inode, n.device);
        match &n.kind {
            NodeKind::File(c) => {
                let _ = writeln!(
                    s,
                    "  content level {} ({}), {} ids",
                    c.level,
                    if c.level == 0 {
                        "data chunks"
                    } else {
                        "chunk lists"
                    },
                    c.ids.len()
                );
                for id in &c.ids {
                    let _ = writeln!(s, "    {id}");
                }
            }
            NodeKind::Dir(id) => {
                let _ = writeln!(s, "  subtree {id}");
            }
            NodeKind::Symlink(t) => {
                let _ = writeln!(s, "  target {}", lossy(t));
            }
            NodeKind::Special(Special::CharDevice(rdev) | Special::BlockDevice(rdev)) => {
                let _ = writeln!(s, "  device number {rdev:#x}");
            }
            NodeKind::Special(Special::Fifo | Special::Socket) => {}
        }
        for e in &n.extensions {
            let _ = writeln!(
                s,
                "  extension tag {:#06x}{} ({} bytes) {}",
                e.tag,
                if e.tag & EXT_CRITICAL != 0 {
                    " critical"
                } else {
                    ""
                },
                e.data.len(),
                hex(&e.data[..e.data.len().min(32)])
            );
        }
    }
    s
}

fn chunk_list_text(id: &BlobId, c: &Content) -> String {
    let mut s = format!(
        "chunk list {id}\nlevel {} ({}), {} ids\n",
        c.level,
        if c.level == 0 {
            "data chunks"
        } else {
            "chunk lists"
        },
        c.ids.len()
    );
    for i in &c.ids {
        let _ = writeln!(s, "  {i}");
    }
    s
}

async fn blob(cli: &Cli, arg: &str, raw: bool, decoded: bool) -> Result<()> {
    let repo = repository::open(cli).await?;
    let id = resolve_blob_prefix(&repo, arg)?;
    if raw {
        let (loc, stored) = read_stored_blob(&repo, &id).await?;
        if cli.json {
            return print_json(&json!({
                "id": id,
                "location": location_json(&loc),
                "stored_hex": hex(&stored),
            }));
        }
        return print(&hex_lines(&stored));
    }
    let loc = repo
        .locate(&id)
        .ok_or_else(|| anyhow!("blob {id} is not listed by any index file"))?;
    let plain = repo.read_blob(&id, loc.blob_type).await?;
    let object = format!("{} {}", type_name(loc.blob_type), id.short());
    match loc.blob_type {
        BlobType::Data => {
            if cli.json {
                print_json(&json!({
                    "id": id,
                    "location": location_json(&loc),
                    "plaintext_hex": hex(&plain),
                }))
            } else if decoded {
                print(&format!(
                    "blob        {id}\n{}\n{}",
                    location_text(&loc),
                    hexdump(&plain)
                ))
            } else {
                write_stdout(&plain)
            }
        }
        BlobType::Tree => {
            let tree = Tree::decode(&plain, &object)?;
            if cli.json {
                print_json(&json!({
                    "id": id,
                    "location": location_json(&loc),
                    "tree": tree_json(&id, &tree),
                }))
            } else {
                print(&format!(
                    "blob        {id}\n{}\n{}",
                    location_text(&loc),
                    tree_text(&id, &tree)
                ))
            }
        }
        BlobType::ChunkList => {
            // A chunk list's level is its first byte; decode_list checks the rest.
            let level = plain.first().copied().unwrap_or_default();
            let list = Content::decode_list(&plain, level, &object)?;
            if cli.json {
                print_json(&json!({
                    "id": id,
                    "location": location_json(&loc),
                    "chunk_list": { "level": list.level, "ids": list.ids },
                }))
            } else {
                print(&format!(
                    "blob        {id}\n{}\n{}",
                    location_text(&loc),
                    chunk_list_text(&id, &list)
                ))
            }
        }
    }
}

async fn tree(cli: &Cli, arg: &str) -> Result<()> {
    let repo = repository::open(cli).await?;
    let id = match arg.split_once(':') {
        Some((selector, path)) => {
            let snap = select_snapshot(&repo, selector).await?;
            match repo.find_node(&snap.manifest.tree, path.as_bytes()).await? {
                None => snap.manifest.tree,
                Some(Node {
                    kind: NodeKind::Dir(id),
                    ..
                }) => id,
                Some(n) => bail!(
                    "{path} in snapshot {} is a {}, not a directory",
                    snap.id.short(),
                    n.kind.name()
                ),
            }
        }
        None => resolve_blob_prefix(&repo, arg)?,
    };
    if let Some(loc) = repo.locate(&id).filter(|l| l.blob_type != BlobType::Tree) {
        bail!(
            "blob {id} is a {} blob, not a tree (see `dprepo inspect blob`)",
            type_name(loc.blob_type)
        );
    }
    let tree = repo.load_tree(&id).await?;
    if cli.json {
        return print_json(&tree_json(&id, &tree));
    }
    print(&tree_text(&id, &tree))
}

// ---- snapshots and chunks ----

/// Resolve a snapshot selector; a damaged manifest matching it is reported with its
/// error rather than as "no such snapshot".
async fn select_snapshot(repo: &Repository, arg: &str) -> Result<dprepo_repo_format::Snapshot> {
    let selector = arg.strip_prefix(SNAPSHOTS_DIR).unwrap_or(arg);
    let (snapshots, damaged) = repo.list_snapshots_checked().await?;
    match Repository::select_snapshot(&snapshots, selector) {
        Ok(s) => Ok(s),
        Err(e) => {
            let lower = selector.to_ascii_lowercase();
            if let Some((_, err)) = damaged
                .iter()
                .find(|(name, _)| name[SNAPSHOTS_DIR.len().min(name.len())..].starts_with(&lower))
            {
                bail!("{err}");
            }
            Err(e.into())
        }
    }
}

async fn snapshot(cli: &Cli, arg: &str) -> Result<()> {
    let repo = repository::open(cli).await?;
    let snap = select_snapshot(&repo, arg).await?;
    let name = format!("{SNAPSHOTS_DIR}{}", snap.id);
    let size = repo.storage().size(&name).await?;
    if cli.json {
        return print_json(&json!({
            "id": snap.id,
            "name": name,
            "size": size,
            "manifest": snap.manifest,
        }));
    }
    print(&format!(
        "snapshot    {}\nname        {name}\nsize        {}\nmanifest:\n{}\n",
        snap.id,
        size_text(size),
        serde_json::to_string_pretty(&snap.manifest)?
    ))
}

async fn chunk(cli: &Cli, arg: &str) -> Result<()> {
    let repo = repository::open(cli).await?;
    let id = resolve_blob_prefix(&repo, arg)?;
    let loc = repo.locate(&id);
    let (snapshots, damaged) = repo.list_snapshots_checked().await?;
    for (name, e) in &damaged {
        eprintln!("dprepo: warning: {name} was not searched: {e}");
    }
    let uses = snapshots_using_blob(&repo, &snapshots, &id)
        .await
        .with_context(|| format!("searching the snapshots for blob {}", id.short()))?;
    let times: HashMap<BlobId, _> = snapshots.iter().map(|s| (s.id, s.manifest.time)).collect();
    // The index may name a pack that is gone: say so next to the location.
    let pack_file = match &loc {
        Some(l) => Some(match repo.storage().size(&l.pack_name()).await {
            Ok(n) => format!("present, {}", size_text(n)),
            Err(dprepo_repo_format::Error::NotFound { .. }) => "MISSING from storage".to_string(),
            Err(e) => format!("error: {e}"),
        }),
        None => None,
    };
    if cli.json {
        let used: Vec<Value> = uses
            .iter()
            .map(|u| {
                json!({
                    "snapshot": u.snapshot,
                    "time": times.get(&u.snapshot),
                    "path": lossy(&u.path),
                })
            })
            .collect();
        let unreadable: Vec<Value> = damaged
            .iter()
            .map(|(name, e)| json!({ "name": name, "error": e.to_string() }))
            .collect();
        return print_json(&json!({
            "id": id,
            "location": loc.as_ref().map(location_json),
            "pack_file": pack_file,
            "used_by": used,
            "unreadable_snapshots": unreadable,
        }));
    }
    let mut text = format!("blob        {id}\n");
    match &loc {
        Some(l) => {
            text.push_str(&location_text(l));
            let _ = writeln!(text, "pack file   {}", pack_file.unwrap_or_default());
        }
        None => text.push_str("index       not listed by any index file\n"),
    }
    let snapshot_count = {
        let mut ids: Vec<BlobId> = uses.iter().map(|u| u.snapshot).collect();
        ids.dedup();
        ids.len()
    };
    if uses.is_empty() {
        let why = match (loc.is_some(), damaged.len()) {
            (_, n) if n > 0 => format!(" ({n} unreadable snapshots not searched)"),
            (true, _) => " (garbage: gc deletes it)".to_string(),
            (false, _) => String::new(),
        };
        let _ = writeln!(text, "used by     no snapshot{why}");
    } else {
        let _ = writeln!(
            text,
            "used by     {} {} in {snapshot_count} of {} snapshots{}",
            uses.len(),
            if uses.len() == 1 { "path" } else { "paths" },
            snapshots.len(),
            if loc.is_none() {
                " -- MISSING from the index: these cannot be restored"
            } else {
                ""
            }
        );
        for u in &uses {
            let time = times
                .get(&u.snapshot)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default();
            let _ = writeln!(text, "  {}  {time}  {}", u.snapshot.short(), lossy(&u.path));
        }
    }
    print(&text)
}

// ---- stats ----

#[derive(Default)]
struct Totals {
    packs: u64,
    size: u64,
    blobs: u64,
    raw: u64,
    stored: u64,
    orphans: u64,
    missing: u64,
}

impl Totals {
    fn add(&mut self, p: &PackStats) {
        self.packs += 1;
        self.size += p.size.unwrap_or_default();
        self.blobs += p.blobs;
        self.raw += p.raw_bytes;
        self.stored += p.stored_bytes;
        self.orphans += u64::from(!p.indexed);
        self.missing += u64::from(p.size.is_none());
    }

    fn json(&self) -> Value {
        json!({
            "packs": self.packs,
            "size": self.size,
            "blobs": self.blobs,
            "raw_bytes": self.raw,
            "stored_bytes": self.stored,
            "compression_ratio": ratio(self.raw, self.stored),
            "orphan_packs": self.orphans,
            "missing_packs": self.missing,
        })
    }

    fn text(&self, label: &str) -> String {
        let mut notes = String::new();
        if self.orphans > 0 {
            let _ = write!(notes, ", {} orphan (unindexed)", self.orphans);
        }
        if self.missing > 0 {
            let _ = write!(notes, ", {} MISSING from storage", self.missing);
        }
        format!(
            "{label:<6} {} packs, {}, {} blobs, raw {}, stored {}, ratio {:.2}x{notes}\n",
            self.packs,
            bytes(self.size),
            self.blobs,
            bytes(self.raw),
            bytes(self.stored),
            ratio(self.raw, self.stored)
        )
    }
}

async fn stats(cli: &Cli, by_pack: bool) -> Result<()> {
    let repo = repository::open(cli).await?;
    let packs = pack_stats(&repo).await?;
    let (mut data, mut meta, mut all) = (Totals::default(), Totals::default(), Totals::default());
    for p in &packs {
        match p.kind {
            PackKind::Data => data.add(p),
            PackKind::Meta => meta.add(p),
        }
        all.add(p);
    }
    if cli.json {
        let mut doc = json!({
            "totals": { "data": data.json(), "meta": meta.json(), "all": all.json() },
        });
        if by_pack {
            doc["packs"] = packs
                .iter()
                .map(|p| {
                    json!({
                        "id": p.id,
                        "kind": p.kind,
                        "size": p.size,
                        "indexed": p.indexed,
                        "blobs": p.blobs,
                        "raw_bytes": p.raw_bytes,
                        "stored_bytes": p.stored_bytes,
                        "compression_ratio": ratio(p.raw_bytes, p.stored_bytes),
                    })
                })
                .collect();
        }
        return print_json(&doc);
    }
    let mut text = String::new();
    if by_pack {
        let _ = writeln!(
            text,
            "kind  {:<64}  {:>10}  {:>6}  {:>11}  {:>11}  {:>6}",
            "pack", "size", "blobs", "raw", "stored", "ratio"
        );
        for p in &packs {
            let size = p.size.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
            let note = match (p.indexed, p.size) {
                (false, _) => "  orphan (no index file lists it)",
                (true, None) => "  MISSING from storage",
                _ => "",
            };
            let _ = writeln!(
                text,
                "{:<4}  {}  {size:>10}  {:>6}  {:>11}  {:>11}  {:>5.2}x{note}",
                kind_name(p.kind),
                p.id,
                p.blobs,
                p.raw_bytes,
                p.stored_bytes,
                ratio(p.raw_bytes, p.stored_bytes)
            );
        }
        text.push('\n');
    }
    text.push_str(&data.text("data"));
    text.push_str(&meta.text("meta"));
    text.push_str(&all.text("total"));
    print(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hexdump_shows_offsets_hex_and_text() {
        let dump = hexdump(b"hello world, this is dprepo!");
        assert!(
            dump.starts_with("00000000  68 65 6c 6c 6f 20 77 6f  72 6c 64"),
            "{dump}"
        );
        assert!(dump.contains("|hello world, thi|"), "{dump}");
        assert!(dump.ends_with("0000001c\n"), "{dump}");
        assert_eq!(hexdump(b""), "00000000\n");
    }

    #[test]
    fn hex_lines_wrap_at_32_bytes() {
        let lines = hex_lines(&[0xab; 40]);
        assert_eq!(lines, format!("{}\n{}\n", "ab".repeat(32), "ab".repeat(8)));
    }

    #[test]
    fn timestamps_out_of_range_do_not_panic() {
        let t = Timestamp {
            sec: i64::MAX,
            nsec: 5,
        };
        assert!(timestamp_text(&t).contains("out of range"));
        let t = Timestamp {
            sec: 1_700_000_000,
            nsec: 123_456_789,
        };
        assert_eq!(timestamp_text(&t), "2023-11-14T22:13:20.123456789Z");
    }
}
