//! What `datasafed` needs of every snapshot (path or directory tag, codec, time, size,
//! tree), kept in a local cache so `list`, `stat` and `push` read only the manifests
//! they have not seen: over a WAL archive of 100,000 files, reading every manifest at
//! every call is what made them slow (BENCHMARKS.md, "datasafed calls with an access
//! key").
//!
//! The cache is derived data in the cache directory, beside the index cache
//! (`<cache dir>/<repository id>/datasafed-files`). Snapshot files are named by the hash
//! of their bytes and never change, so an entry stays right for as long as its snapshot
//! is listed; the listing of `snapshots/` (always from storage) decides which entries
//! count, and entries of snapshots no longer listed are dropped. A cache that does not
//! decode, or fails its checksum, is ignored and written again.
//!
//! Layout: `"dprepo datasafed files 1\n" || count u64 || entry*count || BLAKE3(all
//! preceding bytes)[32]`; entry = `id[32] || time secs i64 || time nanos u32 || tree[32] ||
//! size u64 || kind u8 (0 other, 1 file, 2 directory) || path (u16 length + UTF-8) ||
//! codec (u8 length + UTF-8)`.

use dprepo_repo_format::repo::SNAPSHOTS_DIR;
use dprepo_repo_format::storage::BlobInfo;
use dprepo_repo_format::{BlobId, Repository, Snapshot};
use std::collections::HashMap;
use std::path::PathBuf;

const MAGIC: &[u8] = b"dprepo datasafed files 1\n";
/// Fixed part of an entry: id, secs, nanos, tree, size, kind.
const FIXED_LEN: usize = 32 + 8 + 4 + 32 + 8 + 1;

/// What kind of datasafed object a snapshot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Not a datasafed snapshot (a `dprepo backup`).
    Other = 0,
    /// A file (`datasafed:path=`).
    File = 1,
    /// A directory marker (`datasafed:dir=`).
    Dir = 2,
}

/// One snapshot as datasafed sees it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: BlobId,
    pub time: chrono::DateTime<chrono::Utc>,
    pub tree: BlobId,
    pub size: u64,
    pub kind: Kind,
    /// The path (files) or directory (markers); empty for other snapshots.
    pub path: String,
    /// The codec tag's value (`none` or an algorithm); empty if absent.
    pub codec: String,
}

impl Entry {
    pub fn of(s: &Snapshot) -> Entry {
        let tag = |prefix: &str| {
            s.manifest
                .tags
                .iter()
                .find_map(|t| t.strip_prefix(prefix))
                .map(str::to_string)
        };
        let (kind, path) = match (
            tag(super::datasafed::DIR_TAG),
            tag(super::datasafed::PATH_TAG),
        ) {
            (Some(dir), _) => (Kind::Dir, dir),
            (None, Some(path)) => (Kind::File, path),
            _ => (Kind::Other, String::new()),
        };
        Entry {
            id: s.id,
            time: s.manifest.time,
            tree: s.manifest.tree,
            size: s.manifest.summary.total_bytes,
            kind,
            path,
            codec: tag(super::datasafed::CODEC_TAG).unwrap_or_default(),
        }
    }
}

/// Every readable snapshot of `repo` as datasafed sees it, in no particular order, from
/// the cache where it has them; damaged snapshot files are reported on stderr and left
/// out. `cache_dir` is the cache directory (`None`: no cache).
///
/// # Errors
/// Storage errors listing `snapshots/` or reading a snapshot.
pub async fn load(repo: &Repository, cache_dir: Option<PathBuf>) -> anyhow::Result<Vec<Entry>> {
    let listed = repo.storage().list_names(SNAPSHOTS_DIR).await?;
    let path = cache_dir.map(|d| d.join(&repo.config().id).join("datasafed-files"));
    let mut cached: HashMap<BlobId, Entry> = match &path {
        Some(p) => std::fs::read(p)
            .ok()
            .and_then(|b| decode(&b))
            .unwrap_or_default(),
        None => HashMap::new(),
    };
    let mut entries = Vec::with_capacity(listed.len());
    let mut missing = Vec::new();
    for name in listed {
        let id = name
            .strip_prefix(SNAPSHOTS_DIR)
            .and_then(|h| BlobId::from_hex(h).ok());
        match id.and_then(|id| cached.remove(&id)) {
            Some(e) => entries.push(e),
            None => missing.push(BlobInfo { name, size: 0 }),
        }
    }
    let changed = !missing.is_empty() || !cached.is_empty();
    let (snaps, damaged) = repo.read_snapshots(missing).await?;
    for (name, e) in damaged {
        eprintln!("Warning: {name} cannot be read and is left out: {e}");
    }
    entries.extend(snaps.iter().map(Entry::of));
    if let (true, Some(path)) = (changed, path) {
        // Derived data: failing to keep it only costs the next call its reads.
        let _ = write(&path, &entries);
    }
    Ok(entries)
}

fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + 8 + entries.len() * (FIXED_LEN + 32) + 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for e in entries {
        out.extend_from_slice(&e.id.0);
        out.extend_from_slice(&e.time.timestamp().to_le_bytes());
        out.extend_from_slice(&e.time.timestamp_subsec_nanos().to_le_bytes());
        out.extend_from_slice(&e.tree.0);
        out.extend_from_slice(&e.size.to_le_bytes());
        out.push(e.kind as u8);
        let path = &e.path.as_bytes()[..e.path.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(path.len() as u16).to_le_bytes());
        out.extend_from_slice(path);
        let codec = &e.codec.as_bytes()[..e.codec.len().min(u8::MAX as usize)];
        out.push(codec.len() as u8);
        out.extend_from_slice(codec);
    }
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    out
}

/// The entries of a cache file, or `None` if it is damaged in any way.
fn decode(bytes: &[u8]) -> Option<HashMap<BlobId, Entry>> {
    let body_len = bytes.len().checked_sub(32)?;
    let (body, sum) = bytes.split_at(body_len);
    if blake3::hash(body).as_bytes() != sum {
        return None;
    }
    let mut r = body.strip_prefix(MAGIC)?;
    let mut take = |n: usize| -> Option<&[u8]> {
        if r.len() < n {
            return None;
        }
        let (a, b) = r.split_at(n);
        r = b;
        Some(a)
    };
    let count = u64::from_le_bytes(take(8)?.try_into().ok()?);
    let mut out = HashMap::new();
    for _ in 0..count {
        let fixed = take(FIXED_LEN)?;
        let id = BlobId(fixed[..32].try_into().ok()?);
        let secs = i64::from_le_bytes(fixed[32..40].try_into().ok()?);
        let nanos = u32::from_le_bytes(fixed[40..44].try_into().ok()?);
        let tree = BlobId(fixed[44..76].try_into().ok()?);
        let size = u64::from_le_bytes(fixed[76..84].try_into().ok()?);
        let kind = match fixed[84] {
            0 => Kind::Other,
            1 => Kind::File,
            2 => Kind::Dir,
            _ => return None,
        };
        let n = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
        let path = String::from_utf8(take(n)?.to_vec()).ok()?;
        let n = take(1)?[0] as usize;
        let codec = String::from_utf8(take(n)?.to_vec()).ok()?;
        let time = chrono::DateTime::from_timestamp(secs, nanos)?;
        out.insert(
            id,
            Entry {
                id,
                time,
                tree,
                size,
                kind,
                path,
                codec,
            },
        );
    }
    r.is_empty().then_some(out)
}

fn write(path: &std::path::Path, entries: &[Entry]) -> std::io::Result<()> {
    let dir = path.parent().ok_or(std::io::ErrorKind::NotFound)?;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".tmp-datasafed-files-{}", std::process::id()));
    // Paths, sizes and times are sealed in the repository: the copy is for this user
    // only, as the local backend's own files are (SPEC.md section 22).
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = options
        .open(&tmp)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &encode(entries)));
    written
        .and_then(|()| std::fs::rename(&tmp, path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u8) -> Entry {
        Entry {
            id: BlobId([i; 32]),
            time: chrono::DateTime::from_timestamp(1_700_000_000 + i64::from(i), 5).expect("time"),
            tree: BlobId([i ^ 0xff; 32]),
            size: u64::from(i) * 1000,
            kind: [Kind::Other, Kind::File, Kind::Dir][usize::from(i % 3)],
            path: format!("/wal/{i}"),
            codec: if i < 3 { "none".into() } else { String::new() },
        }
    }

    #[test]
    fn cache_round_trips_and_any_damage_is_ignored() {
        let entries: Vec<Entry> = (0..5).map(entry).collect();
        let bytes = encode(&entries);
        let back = decode(&bytes).expect("decodes");
        assert_eq!(back.len(), 5);
        let e = &back[&BlobId([3; 32])];
        assert_eq!(
            (e.path.as_str(), e.size, e.kind),
            ("/wal/3", 3000, Kind::Other)
        );
        assert_eq!(e.time, entries[3].time);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(decode(&bad).is_none(), "flip at {i} accepted");
        }
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_none());
        }
    }
}
