//! Inspection helpers behind `dprepo inspect`: read one structure of SPEC.md at a time,
//! straight from storage, so a damaged repository can be examined piece by piece.
//!
//! Everything here only reads. Bytes from storage go through the same checked decoders
//! as normal reads ([`parse_trailer`], [`decode_header`], [`IndexFile::decode`], ...),
//! so damage is reported as an [`Error::Corrupt`] naming the object, never a panic.
//! Ids are given as unique hex prefixes (1 to 64 digits, any case); text up to the
//! last `/` is ignored so storage names such as `data/6e/6e83…` can be pasted as is.

use crate::blob::BlobType;
use crate::content::Content;
use crate::error::{Error, Result};
use crate::id::{BlobId, ID_LEN};
use crate::index::{missing_blob, BlobLocation, IndexFile};
use crate::pack::{decode_header, parse_trailer, PackEntry, PackKind, TRAILER_LEN};
use crate::repo::{run_cpu, Repository, Snapshot, INDEX_DIR};
use crate::storage::BlobInfo;
use crate::tree::NodeKind;
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use std::collections::{BTreeMap, HashMap};

/// Index files read at once by [`pack_stats`].
const INDEX_READ_CONCURRENCY: usize = 8;
/// Matches named in an "ambiguous prefix" error.
const AMBIGUOUS_SHOWN: usize = 5;

/// A pack's header as read from the pack itself (not from the index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackHeader {
    /// Storage id of the pack.
    pub id: BlobId,
    /// The directory it was found in.
    pub kind: PackKind,
    /// Its storage name (`data/<xx>/<hex>` or `meta/<xx>/<hex>`).
    pub name: String,
    /// Its size in storage.
    pub size: u64,
    /// Length of the sealed header (trailer field `header_len`).
    pub header_len: u32,
    /// The header entries, with their implicit offsets filled in.
    pub entries: Vec<PackEntry>,
}

/// One place a blob is used: a snapshot and a path in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobUse {
    /// The snapshot.
    pub snapshot: BlobId,
    /// `/`-separated absolute path in the snapshot (raw name bytes): the file whose
    /// content holds the blob, or the directory whose tree it is (`/` for the root).
    pub path: Vec<u8>,
}

/// Size and contents of one pack, for `inspect stats --by-pack`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackStats {
    /// Storage id of the pack.
    pub id: BlobId,
    /// Data or metadata pack.
    pub kind: PackKind,
    /// Size in storage; `None` if an index file names the pack but storage lacks it.
    pub size: Option<u64>,
    /// Whether some index file lists the pack (`false`: an orphan, e.g. from a killed
    /// backup, which gc deletes).
    pub indexed: bool,
    /// Blobs the index lists in the pack.
    pub blobs: u64,
    /// Sum of their plaintext lengths.
    pub raw_bytes: u64,
    /// Sum of their stored lengths.
    pub stored_bytes: u64,
}

/// Parse `text` as an id prefix: everything after the last `/`, 1..=64 hex digits.
/// Returns the digits' values (one nibble per digit).
fn parse_prefix(what: &str, text: &str) -> Result<Vec<u8>> {
    let digits = text.rsplit('/').next().unwrap_or_default();
    if digits.is_empty() || digits.len() > 2 * ID_LEN {
        return Err(Error::InvalidArgument(format!(
            "{what} {text:?}: expected 1 to {} hex digits",
            2 * ID_LEN
        )));
    }
    digits
        .chars()
        .map(|c| c.to_digit(16).map(|v| v as u8))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| Error::InvalidArgument(format!("{what} {text:?} is not a hex id prefix")))
}

fn nibbles_to_hex(nibbles: &[u8]) -> String {
    nibbles
        .iter()
        .filter_map(|n| char::from_digit(u32::from(*n), 16))
        .collect()
}

/// The full id the nibbles spell, if there are 64 of them.
fn full_id(nibbles: &[u8]) -> Option<BlobId> {
    if nibbles.len() != 2 * ID_LEN {
        return None;
    }
    let mut id = [0u8; ID_LEN];
    for (byte, pair) in id.iter_mut().zip(nibbles.chunks_exact(2)) {
        *byte = (pair[0] << 4) | pair[1];
    }
    Some(BlobId(id))
}

fn has_prefix(id: &BlobId, nibbles: &[u8]) -> bool {
    nibbles.iter().enumerate().all(|(i, n)| {
        let byte = id.0[i / 2];
        let digit = if i % 2 == 0 { byte >> 4 } else { byte & 15 };
        digit == *n
    })
}

/// Pick the single match, or explain why there is none.
fn single_match<T: Clone>(
    what: &str,
    nibbles: &[u8],
    mut matches: Vec<(String, T)>,
    unknown_where: &str,
) -> Result<T> {
    matches.sort_by(|a, b| a.0.cmp(&b.0));
    matches.dedup_by(|a, b| a.0 == b.0);
    let prefix = nibbles_to_hex(nibbles);
    match matches.len() {
        1 => Ok(matches[0].1.clone()),
        0 => Err(Error::not_found(format!(
            "{what} {prefix}… ({unknown_where})"
        ))),
        n => {
            let shown: Vec<String> = matches
                .iter()
                .take(AMBIGUOUS_SHOWN)
                .map(|m| m.0.chars().take(16).collect::<String>())
                .collect();
            let more = if n > AMBIGUOUS_SHOWN { ", ..." } else { "" };
            Err(Error::InvalidArgument(format!(
                "{what} id prefix {prefix} is ambiguous: it matches {n} ids ({}{more}); give more digits",
                shown.join(", ")
            )))
        }
    }
}

fn read_index(repo: &Repository) -> Result<std::sync::RwLockReadGuard<'_, crate::index::Index>> {
    repo.index()
        .read()
        .map_err(|_| Error::Internal("index lock poisoned".into()))
}

/// Resolve a blob id prefix among the blobs of the in-memory index.
///
/// A full 64-digit id is returned even if no index lists it, so callers can report on
/// a blob that snapshots reference but the index lost.
///
/// # Errors
/// [`Error::InvalidArgument`] for text that is not a hex prefix, or a prefix matching
/// several blobs (the message names some); [`Error::NotFound`] if none matches.
pub fn resolve_blob_prefix(repo: &Repository, prefix: &str) -> Result<BlobId> {
    let nibbles = parse_prefix("blob", prefix)?;
    if let Some(id) = full_id(&nibbles) {
        return Ok(id);
    }
    let index = read_index(repo)?;
    let matches: Vec<(String, BlobId)> = index
        .blobs()
        .filter(|(id, _)| has_prefix(id, &nibbles))
        .map(|(id, _)| (id.to_hex(), id))
        .collect();
    drop(index);
    single_match("blob", &nibbles, matches, "looked in the index")
}

/// Resolve a pack id prefix among the packs the index lists and the packs present in
/// `data/` and `meta/` (so orphan packs, which no index file names, are found too).
/// Returns the id and the kind (the directory it is in; the index's kind if storage
/// lacks it).
///
/// # Errors
/// As [`resolve_blob_prefix`]; storage listing errors.
pub async fn resolve_pack_prefix(repo: &Repository, prefix: &str) -> Result<(BlobId, PackKind)> {
    let nibbles = parse_prefix("pack", prefix)?;
    let hex = nibbles_to_hex(&nibbles);
    let mut found: BTreeMap<BlobId, PackKind> = read_index(repo)?
        .packs()
        .filter(|(id, _)| has_prefix(id, &nibbles))
        .collect();
    for kind in PackKind::ALL {
        let dir = crate::layout::pack_dir(kind);
        // With two digits or more the listing can be narrowed to one fan-out directory.
        let list_prefix = if hex.len() >= 2 {
            format!("{dir}{}/{hex}", &hex[..2])
        } else {
            dir.to_string()
        };
        for info in repo.storage().list(&list_prefix).await? {
            if let Some((_, id)) = crate::layout::parse_pack(&info.name) {
                if has_prefix(&id, &nibbles) {
                    // Where the file is wins over what the index says.
                    found.insert(id, kind);
                }
            }
        }
    }
    let matches = found
        .into_iter()
        .map(|(id, kind)| (id.to_hex(), (id, kind)))
        .collect();
    single_match(
        "pack",
        &nibbles,
        matches,
        "looked in the index, data/ and meta/",
    )
}

/// Every index file in storage, sorted by name.
///
/// # Errors
/// Storage errors.
pub async fn list_index_files(repo: &Repository) -> Result<Vec<BlobInfo>> {
    let mut files = repo.storage().list(INDEX_DIR).await?;
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// Resolve an index file id prefix to the storage name `index/<hex>` of the one file
/// it matches.
///
/// # Errors
/// As [`resolve_blob_prefix`]; storage listing errors.
pub async fn resolve_index_file(repo: &Repository, prefix: &str) -> Result<String> {
    let nibbles = parse_prefix("index file", prefix)?;
    let hex = nibbles_to_hex(&nibbles);
    let matches = list_index_files(repo)
        .await?
        .into_iter()
        .filter_map(|f| {
            let id = f.name.strip_prefix(INDEX_DIR)?.to_string();
            id.starts_with(&hex).then_some((id, f.name))
        })
        .collect();
    single_match("index file", &nibbles, matches, "looked in index/")
}

/// Read and decode the index file stored under `name`.
///
/// # Errors
/// [`Error::NotFound`]; [`Error::Corrupt`] / [`Error::UnsupportedVersion`] naming it.
pub async fn load_index_file(repo: &Repository, name: &str) -> Result<IndexFile> {
    let bytes = repo.storage().get(name).await?;
    let keys = repo.keys().clone();
    let object = name.to_string();
    run_cpu(move || IndexFile::decode(&keys, &bytes, &object)).await?
}

/// Find the pack file of `pack_id` in `data/` or `meta/` (the index's kind first).
async fn find_pack_file(repo: &Repository, pack_id: &BlobId) -> Result<(PackKind, String, u64)> {
    let indexed_kind = read_index(repo)?
        .packs()
        .find(|(id, _)| id == pack_id)
        .map(|(_, kind)| kind);
    let order = match indexed_kind {
        Some(PackKind::Meta) => [PackKind::Meta, PackKind::Data],
        _ => [PackKind::Data, PackKind::Meta],
    };
    for kind in order {
        let name = crate::layout::pack(kind, pack_id);
        match repo.storage().size(&name).await {
            Ok(size) => return Ok((kind, name, size)),
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Err(Error::not_found(format!(
        "pack {} (neither in data/ nor in meta/)",
        pack_id.to_hex()
    )))
}

/// Read a pack's header from the pack itself with two ranged reads (the trailer, then
/// the sealed header), decrypt it and check it against the pack's size.
///
/// # Errors
/// [`Error::NotFound`] if the pack is in neither `data/` nor `meta/`;
/// [`Error::Corrupt`] naming the pack if it is truncated, is not a pack, or its header
/// does not authenticate or does not describe the pack; [`Error::UnsupportedVersion`].
pub async fn read_pack_header(repo: &Repository, pack_id: &BlobId) -> Result<PackHeader> {
    let (kind, name, size) = find_pack_file(repo, pack_id).await?;
    let object = format!("pack {name}");
    let trailer_len = TRAILER_LEN as u64;
    if size < trailer_len {
        return Err(Error::corrupt(
            &object,
            format!("pack of {size} bytes is too short for its {TRAILER_LEN}-byte trailer"),
        ));
    }
    let storage = repo.storage();
    let trailer = storage
        .get_range(&name, size - trailer_len, trailer_len)
        .await?;
    // Checks header_len + TRAILER_LEN <= size, so the subtraction below cannot wrap.
    let (header_len, version) = parse_trailer(&trailer, size, &object)?;
    let header_start = size - trailer_len - u64::from(header_len);
    let sealed = storage
        .get_range(&name, header_start, u64::from(header_len))
        .await?;
    if sealed.len() != header_len as usize {
        return Err(Error::corrupt(
            &object,
            format!(
                "read {} header bytes where the trailer says {header_len}",
                sealed.len()
            ),
        ));
    }
    let keys = repo.keys().clone();
    let decode_object = object.clone();
    let entries =
        run_cpu(move || decode_header(&keys, &sealed, size, version, &decode_object)).await??;
    Ok(PackHeader {
        id: *pack_id,
        kind,
        name,
        size,
        header_len,
        entries,
    })
}

/// The index location of blob `id` and its stored (still encrypted) bytes.
///
/// # Errors
/// [`Error::NotFound`] if no index lists the blob or its pack is gone;
/// [`Error::Corrupt`] if the pack is shorter than the index says.
pub async fn read_stored_blob(repo: &Repository, id: &BlobId) -> Result<(BlobLocation, Vec<u8>)> {
    let loc = repo.locate(id).ok_or_else(|| missing_blob(id))?;
    let stored = repo
        .storage()
        .get_range(
            &loc.pack_name(),
            u64::from(loc.offset),
            u64::from(loc.stored_len),
        )
        .await?;
    Ok((loc, stored))
}

/// Per-pack statistics: every pack some index file lists, plus every pack file in
/// storage that none lists. A pack listed by several index files is counted once (its
/// first record). Sorted by kind, then id.
///
/// # Errors
/// Storage errors; [`Error::Corrupt`] for an index file that does not decode.
pub async fn pack_stats(repo: &Repository) -> Result<Vec<PackStats>> {
    let files = list_index_files(repo).await?;
    let mut stats: HashMap<BlobId, PackStats> = HashMap::new();
    let mut decoded = futures::stream::iter(files)
        .map(|f| async move { load_index_file(repo, &f.name).await })
        .buffer_unordered(INDEX_READ_CONCURRENCY);
    while let Some(file) = decoded.try_next().await? {
        for pack in file.packs {
            stats.entry(pack.id).or_insert_with(|| PackStats {
                id: pack.id,
                kind: pack.kind,
                size: None,
                indexed: true,
                blobs: pack.entries.len() as u64,
                raw_bytes: pack.entries.iter().map(|e| u64::from(e.raw_len)).sum(),
                stored_bytes: pack.entries.iter().map(|e| u64::from(e.stored_len)).sum(),
            });
        }
    }
    for kind in PackKind::ALL {
        let dir = crate::layout::pack_dir(kind);
        for info in repo.storage().list(dir).await? {
            let Some((_, id)) = crate::layout::parse_pack(&info.name) else {
                continue;
            };
            stats
                .entry(id)
                .or_insert_with(|| PackStats {
                    id,
                    kind,
                    size: None,
                    indexed: false,
                    blobs: 0,
                    raw_bytes: 0,
                    stored_bytes: 0,
                })
                .size = Some(info.size);
        }
    }
    let mut out: Vec<PackStats> = stats.into_values().collect();
    out.sort_by_key(|p| (p.kind as u8, p.id));
    Ok(out)
}

/// Every (snapshot, path) among `snapshots` that uses blob `target`: files whose
/// content holds it (directly or through chunk lists), directories whose tree it is.
/// Each tree and chunk list is read once, however many snapshots share it. Sorted in
/// the order of `snapshots`, then by path.
///
/// # Errors
/// Failures reading or decoding trees and chunk lists (a damaged snapshot fails the
/// search, naming the damaged object).
pub async fn snapshots_using_blob(
    repo: &Repository,
    snapshots: &[Snapshot],
    target: &BlobId,
) -> Result<Vec<BlobUse>> {
    let mut finder = UseFinder {
        repo,
        target: *target,
        target_type: repo.locate(target).map(|l| l.blob_type),
        trees: HashMap::new(),
        lists: HashMap::new(),
    };
    let mut out = Vec::new();
    for snap in snapshots {
        let root = snap.manifest.tree;
        let mut paths: Vec<Vec<u8>> = Vec::new();
        if root == *target {
            paths.push(b"/".to_vec());
        }
        finder.walk_tree(root).await?;
        for rel in finder.trees.get(&root).into_iter().flatten() {
            let mut p = b"/".to_vec();
            p.extend_from_slice(rel);
            paths.push(p);
        }
        paths.sort();
        out.extend(paths.into_iter().map(|path| BlobUse {
            snapshot: snap.id,
            path,
        }));
    }
    Ok(out)
}

/// Search state of [`snapshots_using_blob`]: per tree, the paths below it that use the
/// target; per chunk list, whether it leads to the target.
struct UseFinder<'r> {
    repo: &'r Repository,
    target: BlobId,
    /// The target's type if the index knows it: lets the walk skip file contents when
    /// looking for a tree, and chunk list leaves when looking for a chunk list.
    target_type: Option<BlobType>,
    trees: HashMap<BlobId, Vec<Vec<u8>>>,
    lists: HashMap<BlobId, bool>,
}

/// A tree read but not finished: its files using the target and its subdirectories.
type PendingTree = (Vec<Vec<u8>>, Vec<(Vec<u8>, BlobId)>);

impl UseFinder<'_> {
    /// Fill `self.trees` for `root` and every tree below it, post-order with an explicit
    /// stack (directory depth is unbounded; recursion would not be).
    async fn walk_tree(&mut self, root: BlobId) -> Result<()> {
        let mut stack: Vec<(BlobId, bool)> = vec![(root, false)];
        let mut pending: HashMap<BlobId, PendingTree> = HashMap::new();
        while let Some((id, expanded)) = stack.pop() {
            if expanded {
                let Some((mut hits, dirs)) = pending.remove(&id) else {
                    continue;
                };
                for (name, sub) in dirs {
                    if sub == self.target {
                        hits.push(name.clone());
                    }
                    for below in self.trees.get(&sub).into_iter().flatten() {
                        let mut p = name.clone();
                        p.push(b'/');
                        p.extend_from_slice(below);
                        hits.push(p);
                    }
                }
                self.trees.insert(id, hits);
                continue;
            }
            if self.trees.contains_key(&id) {
                continue;
            }
            // Only ancestors of the current tree are pending: meeting one again is a
            // cycle, which content addressing rules out unless the data is forged.
            if pending.contains_key(&id) {
                return Err(Error::corrupt(
                    format!("tree {}", id.short()),
                    "tree contains itself",
                ));
            }
            let tree = self.repo.load_tree(&id).await?;
            let mut files = Vec::new();
            let mut dirs = Vec::new();
            for node in tree.nodes {
                match node.kind {
                    NodeKind::File(content) => {
                        if self.target_type != Some(BlobType::Tree)
                            && self.content_uses(content.level, &content.ids).await?
                        {
                            files.push(node.name);
                        }
                    }
                    NodeKind::Dir(sub) => dirs.push((node.name, sub)),
                    NodeKind::Symlink(_) | NodeKind::Special(_) => {}
                }
            }
            stack.push((id, true));
            for (_, sub) in &dirs {
                if !self.trees.contains_key(sub) {
                    stack.push((*sub, false));
                }
            }
            pending.insert(id, (files, dirs));
        }
        Ok(())
    }

    /// Whether a content at `level` with `ids` uses the target. Recursion depth is
    /// bounded by [`crate::content::MAX_LEVEL`], which the decoders enforce.
    fn content_uses<'a>(&'a mut self, level: u8, ids: &'a [BlobId]) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            if ids.contains(&self.target) {
                return Ok(true);
            }
            // Level 0 lists data chunks; level 1 lists chunk lists of data chunks only.
            if level == 0 || (level == 1 && self.target_type == Some(BlobType::ChunkList)) {
                return Ok(false);
            }
            let child = level - 1;
            for id in ids {
                if let Some(found) = self.lists.get(id) {
                    if *found {
                        return Ok(true);
                    }
                    continue;
                }
                let body = self.repo.read_blob(id, BlobType::ChunkList).await?;
                let list =
                    Content::decode_list(&body, child, &format!("chunk list {}", id.short()))?;
                let found = self.content_uses(child, &list.ids).await?;
                self.lists.insert(*id, found);
                if found {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::{backup, BackupOptions, BackupProgress, BackupSource};
    use crate::key::KdfParams;
    use crate::pack::PackBuilder;
    use crate::storage::{MemoryStorage, Storage};
    use crate::InitOptions;
    use dprepo_chunker::ChunkerParams;
    use std::sync::Arc;

    const FAST_KDF: KdfParams = KdfParams::CHEAPEST;

    /// A repository with tiny stream chunks, so a 200 KiB stream needs a chunk list.
    async fn repo() -> (MemoryStorage, Repository) {
        let storage = MemoryStorage::new();
        let tiny = ChunkerParams::new(256, 1024, 4096).unwrap();
        let options = InitOptions::default()
            .with_kdf(FAST_KDF)
            .with_stream_chunker(tiny);
        let repo = Repository::init(Arc::new(storage.clone()), b"pw", options)
            .await
            .unwrap();
        (storage, repo)
    }

    async fn backup_stream(repo: &Repository, name: &str, data: Vec<u8>) -> Snapshot {
        let source = BackupSource::Stream {
            name: name.into(),
            reader: Box::new(std::io::Cursor::new(data)),
        };
        backup(
            repo,
            source,
            BackupOptions::default(),
            Arc::new(BackupProgress::default()),
        )
        .await
        .unwrap()
        .snapshot
    }

    async fn stream_content(repo: &Repository, snap: &Snapshot) -> Content {
        let tree = repo.load_tree(&snap.manifest.tree).await.unwrap();
        match &tree.nodes[0].kind {
            NodeKind::File(c) => c.clone(),
            other => panic!("stream stored as {other:?}"),
        }
    }

    fn blobs(repo: &Repository) -> Vec<(BlobId, BlobLocation)> {
        repo.index().read().unwrap().blobs().collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pack_headers_match_the_index() {
        let (_, repo) = repo().await;
        backup_stream(
            &repo,
            "a.bin",
            crate::fuzzing::pseudo_random_bytes(1, 200_000),
        )
        .await;
        let packs: Vec<(BlobId, PackKind)> = repo.index().read().unwrap().packs().collect();
        assert!(packs.len() >= 2, "expected a data and a meta pack");
        let mut seen = 0;
        for (id, kind) in packs {
            let header = read_pack_header(&repo, &id).await.unwrap();
            assert_eq!(header.kind, kind);
            assert_eq!(header.name, crate::layout::pack(kind, &id));
            assert_eq!(
                header.size,
                repo.storage().size(&header.name).await.unwrap()
            );
            for e in &header.entries {
                let loc = repo.locate(&e.id).unwrap();
                assert_eq!(
                    (
                        loc.pack_id,
                        loc.blob_type,
                        loc.offset,
                        loc.stored_len,
                        loc.raw_len
                    ),
                    (id, e.blob_type, e.offset, e.stored_len, e.raw_len)
                );
                seen += 1;
            }
        }
        assert_eq!(seen, blobs(&repo).len());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn truncated_pack_is_corrupt_naming_the_pack() {
        let (storage, repo) = repo().await;
        backup_stream(
            &repo,
            "a.bin",
            crate::fuzzing::pseudo_random_bytes(2, 50_000),
        )
        .await;
        let (id, kind) = repo.index().read().unwrap().packs().next().unwrap();
        let name = crate::layout::pack(kind, &id);
        let size = storage.get(&name).await.unwrap().len();
        for len in [size - 5, 7, 0] {
            storage.truncate(&name, len);
            match read_pack_header(&repo, &id).await {
                Err(Error::Corrupt { object, .. }) => assert!(
                    object.contains(&id.to_hex()),
                    "error names {object}, not the pack"
                ),
                other => panic!("pack truncated to {len} bytes: {other:?}"),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn missing_pack_is_not_found() {
        let (_, repo) = repo().await;
        let err = read_pack_header(&repo, &BlobId([7; 32])).await.unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blob_prefixes_resolve_uniquely_or_fail_clearly() {
        let (_, repo) = repo().await;
        backup_stream(
            &repo,
            "a.bin",
            crate::fuzzing::pseudo_random_bytes(3, 200_000),
        )
        .await;
        let all = blobs(&repo);
        let ids: Vec<String> = all.iter().map(|(id, _)| id.to_hex()).collect();
        let (id, _) = all[0];
        let hex = id.to_hex();
        // The shortest prefix no other blob shares.
        let unique_len = (1..=64)
            .find(|n| ids.iter().filter(|h| h.starts_with(&hex[..*n])).count() == 1)
            .unwrap();
        assert_eq!(resolve_blob_prefix(&repo, &hex[..unique_len]).unwrap(), id);
        assert_eq!(
            resolve_blob_prefix(&repo, &hex[..unique_len].to_uppercase()).unwrap(),
            id
        );
        assert_eq!(resolve_blob_prefix(&repo, &hex).unwrap(), id);
        // Many blobs: some one-digit prefix is shared.
        let shared = (0..16)
            .map(|d| char::from_digit(d, 16).unwrap().to_string())
            .find(|p| ids.iter().filter(|h| h.starts_with(p.as_str())).count() > 1)
            .unwrap();
        let err = resolve_blob_prefix(&repo, &shared).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m.contains("ambiguous")),
            "{err:?}"
        );
        let absent = (0..=0xffffu32)
            .map(|v| format!("{v:04x}"))
            .find(|p| !ids.iter().any(|h| h.starts_with(p.as_str())))
            .unwrap();
        let err = resolve_blob_prefix(&repo, &absent).unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
        for bad in ["", "xyz", &"a".repeat(65)] {
            let err = resolve_blob_prefix(&repo, bad).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad:?}: {err:?}");
        }
        // A full id is accepted even when no index lists it.
        let unknown = BlobId([9; 32]);
        assert_eq!(
            resolve_blob_prefix(&repo, &unknown.to_hex()).unwrap(),
            unknown
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pack_prefixes_find_indexed_and_orphan_packs() {
        let (storage, repo) = repo().await;
        backup_stream(
            &repo,
            "a.bin",
            crate::fuzzing::pseudo_random_bytes(4, 50_000),
        )
        .await;
        let (id, kind) = repo.index().read().unwrap().packs().next().unwrap();
        let hex = id.to_hex();
        assert_eq!(
            resolve_pack_prefix(&repo, &hex[..12]).await.unwrap(),
            (id, kind)
        );
        // A pasted storage name works too.
        assert_eq!(
            resolve_pack_prefix(&repo, &crate::layout::pack(kind, &id))
                .await
                .unwrap(),
            (id, kind)
        );
        // An orphan pack (no index file names it), as a killed backup leaves.
        let mut b = PackBuilder::new(PackKind::Meta);
        let plain = b"orphan tree bytes";
        let blob_id = repo.keys().content_id(plain);
        let stored = crate::blob::encode_blob(repo.keys(), BlobType::Tree, &blob_id, plain, 0);
        b.add(BlobType::Tree, blob_id, &stored, plain.len() as u32);
        let orphan = b.finish(repo.keys());
        storage.raw_put(
            crate::layout::pack(PackKind::Meta, &orphan.id),
            orphan.bytes.clone(),
        );
        let orphan_hex = orphan.id.to_hex();
        assert_eq!(
            resolve_pack_prefix(&repo, &orphan_hex[..10]).await.unwrap(),
            (orphan.id, PackKind::Meta)
        );
        let header = read_pack_header(&repo, &orphan.id).await.unwrap();
        assert_eq!(header.entries, orphan.entries);
        let stats = pack_stats(&repo).await.unwrap();
        let s = stats.iter().find(|s| s.id == orphan.id).unwrap();
        assert!(!s.indexed);
        assert_eq!(s.size, Some(orphan.bytes.len() as u64));
        let err = resolve_pack_prefix(&repo, "").await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn index_files_resolve_by_prefix() {
        let (_, repo) = repo().await;
        backup_stream(
            &repo,
            "a.bin",
            crate::fuzzing::pseudo_random_bytes(5, 20_000),
        )
        .await;
        backup_stream(
            &repo,
            "b.bin",
            crate::fuzzing::pseudo_random_bytes(6, 20_000),
        )
        .await;
        let files = list_index_files(&repo).await.unwrap();
        assert_eq!(files.len(), 2);
        let mut total_packs = 0;
        for f in &files {
            let hex = &f.name[INDEX_DIR.len()..];
            let other = files.iter().find(|g| g.name != f.name).unwrap();
            let other_hex = &other.name[INDEX_DIR.len()..];
            let n = (1..=64).find(|n| hex[..*n] != other_hex[..*n]).unwrap();
            assert_eq!(resolve_index_file(&repo, &hex[..n]).await.unwrap(), f.name);
            assert_eq!(resolve_index_file(&repo, &f.name).await.unwrap(), f.name);
            total_packs += load_index_file(&repo, &f.name).await.unwrap().packs.len();
        }
        assert_eq!(total_packs, repo.index().read().unwrap().pack_count());
        let err = resolve_index_file(&repo, &"0".repeat(64))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn snapshots_using_blob_finds_chunks_lists_and_trees() {
        let (_, repo) = repo().await;
        let data = crate::fuzzing::pseudo_random_bytes(7, 200_000);
        let first = backup_stream(&repo, "a.bin", data.clone()).await;
        // Same bytes under another name: the chunks and chunk lists are shared.
        let second = backup_stream(&repo, "b.bin", data).await;
        let other = backup_stream(
            &repo,
            "c.bin",
            crate::fuzzing::pseudo_random_bytes(8, 5_000),
        )
        .await;
        let snapshots = repo.list_snapshots().await.unwrap();
        let content = stream_content(&repo, &first).await;
        assert!(content.level >= 1, "test needs a chunk list");
        let list_id = content.ids[0];
        let list = Content::decode_list(
            &repo.read_blob(&list_id, BlobType::ChunkList).await.unwrap(),
            content.level - 1,
            "list",
        )
        .unwrap();
        let chunk = list.ids[list.ids.len() / 2];
        let expect = vec![
            BlobUse {
                snapshot: first.id,
                path: b"/a.bin".to_vec(),
            },
            BlobUse {
                snapshot: second.id,
                path: b"/b.bin".to_vec(),
            },
        ];
        for id in [chunk, list_id] {
            let mut got = snapshots_using_blob(&repo, &snapshots, &id).await.unwrap();
            got.sort_by(|a, b| a.path.cmp(&b.path));
            assert_eq!(got, expect);
        }
        assert_eq!(
            snapshots_using_blob(&repo, &snapshots, &other.manifest.tree)
                .await
                .unwrap(),
            vec![BlobUse {
                snapshot: other.id,
                path: b"/".to_vec()
            }]
        );
        // A full id nobody uses (and the index does not know) is used nowhere.
        assert!(snapshots_using_blob(&repo, &snapshots, &BlobId([3; 32]))
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pack_stats_add_up_to_the_index_and_storage() {
        let (storage, repo) = repo().await;
        backup_stream(
            &repo,
            "a.bin",
            crate::fuzzing::pseudo_random_bytes(9, 200_000),
        )
        .await;
        let stats = pack_stats(&repo).await.unwrap();
        let all = blobs(&repo);
        assert_eq!(stats.iter().map(|s| s.blobs).sum::<u64>(), all.len() as u64);
        assert_eq!(
            stats.iter().map(|s| s.raw_bytes).sum::<u64>(),
            all.iter().map(|(_, l)| u64::from(l.raw_len)).sum::<u64>()
        );
        assert_eq!(
            stats.iter().map(|s| s.stored_bytes).sum::<u64>(),
            all.iter()
                .map(|(_, l)| u64::from(l.stored_len))
                .sum::<u64>()
        );
        for s in &stats {
            assert!(s.indexed);
            let name = crate::layout::pack(s.kind, &s.id);
            assert_eq!(s.size, Some(storage.get(&name).await.unwrap().len() as u64));
            assert!(
                s.size.unwrap() > s.stored_bytes,
                "header and trailer follow the blobs"
            );
        }
        // A pack deleted behind the index's back shows up without a size.
        let gone = &stats[0];
        storage
            .delete(&crate::layout::pack(gone.kind, &gone.id))
            .await
            .unwrap();
        let after = pack_stats(&repo).await.unwrap();
        assert_eq!(after.iter().find(|s| s.id == gone.id).unwrap().size, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stored_blob_is_the_indexed_range() {
        let (_, repo) = repo().await;
        backup_stream(
            &repo,
            "a.bin",
            crate::fuzzing::pseudo_random_bytes(10, 3_000),
        )
        .await;
        let (id, loc) = blobs(&repo)[0];
        let (got, stored) = read_stored_blob(&repo, &id).await.unwrap();
        assert_eq!(got, loc);
        assert_eq!(stored.len(), loc.stored_len as usize);
        let err = read_stored_blob(&repo, &BlobId([1; 32])).await.unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    }
}
