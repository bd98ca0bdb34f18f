//! Page deltas for tar and xbstream streams of database files.
//!
//! A database base backup changes a few rows in many 8 KiB pages, so most page chunks of
//! the next backup (tar page groups of 128 KiB, xbstream pages of 16 KiB) are new, each
//! only slightly different from the chunk at the same place in the last backup. Stored as
//! a zstd delta against that chunk (the *base*), such a chunk costs a few hundred bytes
//! instead of kilobytes (benches/NOTES.md, "DB incremental").
//!
//! To find "the chunk at the same place", a stream cut tar-aware or xbstream-aware
//! records in its tree node which chunks are the units (tar page groups, xbstream pages;
//! "pages" below) of which member (tar member or xbstream file): the [`TarPageMap`],
//! extension [`EXT_TAR_PAGES`] (SPEC section 13.1). The next backup of a stream of that
//! name reads the parent's map and chunk list ([`ParentPages`]) and offers each new page
//! the parent's page of the same member and number as its base. Whether a base is used, and
//! how bases stay alive, is the saver's and gc's business (SPEC sections 8, 9, 18).

use crate::blob::BlobType;
use crate::codec::{Reader, Writer};
use crate::content::{Content, LIST_FANOUT};
use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::repo::Repository;
use crate::tree::{Extension, Node, NodeKind, MAX_EXTENSION_LEN};
use dprepo_chunker::PagePosition;
use std::collections::HashMap;
use std::mem;

/// Tree node extension tag of a tar page map (not critical: readers that do not know it
/// lose nothing but the chance to store deltas).
pub const EXT_TAR_PAGES: u16 = 0x0001;
/// Version byte of the map encoding when every run starts at page 0 (tar streams).
const MAP_VERSION: u8 = 1;
/// Version byte of the map encoding with a first page per run (xbstream files, whose
/// pages come in several records with record headers between them).
const MAP_VERSION_RUNS: u8 = 2;
/// Length of a member record without its name suffix (version 1; version 2 adds 8).
const MEMBER_FIXED_LEN: usize = 2 + 2 + 8 + 4;
/// Length of the map header (version, page size, count).
const MAP_HEADER_LEN: usize = 1 + 4 + 4;
/// Alignment of a unit shorter than the map's page size: the last page group of a tar
/// member is the rest of its data, a multiple of this.
const SHORT_UNIT_ALIGN: usize = dprepo_chunker::PAGE_SIZE as usize;
/// Longest member name recorded; longer members are left out of the map.
pub const MAX_MEMBER_NAME: usize = 4096;
/// Most name bytes a decoded map may hold: a name shared with the previous one costs 4
/// bytes of extension data but up to 4 KiB decoded.
pub const MAX_MAP_NAME_BYTES: usize = 16 << 20;

/// A run of pages of one tar member or xbstream file: chunks `first_chunk ..first_chunk +
/// pages` of the stream's chunk list are its pages `first_page, first_page + 1, ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberPages {
    /// The member's path as the archive names it.
    pub name: Vec<u8>,
    /// Page number of the run's first page in the member (0 in every tar map).
    pub first_page: u64,
    /// Index of its first page in the stream's chunk list.
    pub first_chunk: u64,
    /// Number of page chunks.
    pub pages: u32,
}

/// Which chunks of a stream are the pages of which tar member or xbstream file.
///
/// Encoding (extension data, at most [`MAX_EXTENSION_LEN`] bytes):
/// `version u8 (1 or 2) || page_size u32 || count u32 || member*count` with
/// `member = shared u16 || suffix_len u16 || suffix || [first_page u64] || first_chunk u64
/// || pages u32` (`first_page` only in version 2, else 0); a name is the first `shared`
/// bytes of the previous member's name followed by `suffix` (names of one directory
/// share their prefix). Version 1 is written when every run starts at page 0, so tar
/// maps stay readable by builds that know only version 1.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TarPageMap {
    /// Page size the stream was cut with.
    pub page_size: u32,
    /// Members with pages, in stream order.
    pub members: Vec<MemberPages>,
}

impl TarPageMap {
    /// Encode as extension data.
    pub fn encode(&self) -> Vec<u8> {
        let runs = self.members.iter().any(|m| m.first_page != 0);
        let mut w = Writer::new();
        w.u8(if runs { MAP_VERSION_RUNS } else { MAP_VERSION });
        w.u32(self.page_size);
        w.u32(self.members.len() as u32);
        let mut previous: &[u8] = &[];
        for m in &self.members {
            let shared = shared_prefix(previous, &m.name);
            w.u16(shared as u16);
            w.u16((m.name.len() - shared) as u16);
            w.bytes(&m.name[shared..]);
            if runs {
                w.u64(m.first_page);
            }
            w.u64(m.first_chunk);
            w.u32(m.pages);
            previous = &m.name;
        }
        w.finish()
    }

    /// Decode extension data.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming `object` for an unknown version, a count that does not
    /// fit, a shared prefix longer than the previous name, an empty or overlong name,
    /// or trailing bytes.
    pub fn decode(data: &[u8], object: &str) -> Result<TarPageMap> {
        let mut r = Reader::new(data, object);
        let version = r.u8("page map version")?;
        let runs = match version {
            MAP_VERSION => false,
            MAP_VERSION_RUNS => true,
            _ => return Err(r.corrupt(format!("unknown page map version {version}"))),
        };
        let page_size = r.u32("page size")?;
        let fixed = MEMBER_FIXED_LEN + if runs { 8 } else { 0 };
        let count = r.count("member count", fixed)?;
        let mut members: Vec<MemberPages> = Vec::with_capacity(count);
        let mut name_bytes = 0usize;
        for _ in 0..count {
            let shared = usize::from(r.u16("shared name length")?);
            let suffix_len = usize::from(r.u16("name suffix length")?);
            let previous = members.last().map_or(&[][..], |m| &m.name[..]);
            if shared > previous.len() {
                return Err(r.corrupt(format!(
                    "member shares {shared} bytes of a {}-byte name",
                    previous.len()
                )));
            }
            name_bytes = name_bytes.saturating_add(shared + suffix_len);
            if name_bytes > MAX_MAP_NAME_BYTES {
                return Err(r.corrupt(format!("member names exceed {MAX_MAP_NAME_BYTES} bytes")));
            }
            let suffix = r.take(suffix_len, "name suffix")?;
            let mut name = Vec::with_capacity(shared + suffix_len);
            name.extend_from_slice(&previous[..shared]);
            name.extend_from_slice(suffix);
            if name.is_empty() || name.len() > MAX_MEMBER_NAME {
                return Err(r.corrupt(format!("member name of {} bytes", name.len())));
            }
            let first_page = if runs { r.u64("first page")? } else { 0 };
            let first_chunk = r.u64("first chunk")?;
            let pages = r.u32("page count")?;
            members.push(MemberPages {
                name,
                first_page,
                first_chunk,
                pages,
            });
        }
        r.finish()?;
        Ok(TarPageMap { page_size, members })
    }

    /// The map a file node carries, if any.
    ///
    /// # Errors
    /// As [`TarPageMap::decode`].
    pub fn of_node(node: &Node, object: &str) -> Result<Option<TarPageMap>> {
        node.extensions
            .iter()
            .find(|e| e.tag == EXT_TAR_PAGES)
            .map(|e| TarPageMap::decode(&e.data, object))
            .transpose()
    }
}

fn shared_prefix(a: &[u8], b: &[u8]) -> usize {
    let limit = a.len().min(b.len()).min(usize::from(u16::MAX));
    a.iter()
        .zip(b)
        .take(limit)
        .take_while(|(x, y)| x == y)
        .count()
}

/// Builds the [`TarPageMap`] of a stream while its chunks go by, within the size of one
/// tree node extension: members past that are left out (they are stored, just never
/// offered a base by the next backup).
#[derive(Debug)]
pub struct TarPageMapBuilder {
    map: TarPageMap,
    /// Length of the map encoded as version 1 (version 2 adds 8 bytes per member).
    encoded_len: usize,
    /// Whether a run starts at a page other than 0 (the map is version 2).
    runs: bool,
    /// Whether the last run ended with a short unit, so nothing may extend it.
    closed: bool,
    full: bool,
}

impl Default for TarPageMapBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TarPageMapBuilder {
    /// An empty map. Its page size is that of the first page recorded
    /// ([`PagePosition::page_size`]); pages of another size are left out.
    pub fn new() -> Self {
        TarPageMapBuilder {
            map: TarPageMap {
                page_size: 0,
                members: Vec::new(),
            },
            encoded_len: MAP_HEADER_LEN,
            runs: false,
            closed: false,
            full: false,
        }
    }

    /// Record that chunk number `chunk` of the stream is page `position` and `len` bytes
    /// long. Whole pages are mapped, and so is a shorter one whose length is a multiple
    /// of 8 KiB (the last page group of a tar member), which ends its run. A page that
    /// continues the last run (same member, next page, next chunk) extends it, any other
    /// starts a run.
    pub fn record(&mut self, chunk: u64, position: &PagePosition, len: usize) {
        if self.map.members.is_empty() && self.map.page_size == 0 {
            self.map.page_size = position.page_size;
        }
        if !unit_fits(len, self.map.page_size) || position.page_size != self.map.page_size {
            return;
        }
        if self.full {
            return;
        }
        let was_closed = mem::replace(&mut self.closed, len != self.map.page_size as usize);
        if let Some(last) = self.map.members.last_mut() {
            let continues = !was_closed
                && *last.name == *position.member
                && last.first_page.checked_add(u64::from(last.pages)) == Some(position.page)
                && last.first_chunk + u64::from(last.pages) == chunk;
            if continues {
                if let Some(pages) = last.pages.checked_add(1) {
                    last.pages = pages;
                }
                return;
            }
        }
        if position.member.is_empty() {
            return;
        }
        let name = position.member.to_vec();
        if name.len() > MAX_MEMBER_NAME {
            return;
        }
        let previous = self.map.members.last().map_or(&[][..], |m| &m.name[..]);
        let record_len = MEMBER_FIXED_LEN + name.len() - shared_prefix(previous, &name);
        let runs = self.runs || position.page != 0;
        let run_fields = if runs {
            8 * (self.map.members.len() + 1)
        } else {
            0
        };
        if self.encoded_len + record_len + run_fields > MAX_EXTENSION_LEN {
            self.full = true;
            return;
        }
        self.encoded_len += record_len;
        self.runs = runs;
        self.map.members.push(MemberPages {
            name,
            first_page: position.page,
            first_chunk: chunk,
            pages: 1,
        });
    }

    /// The extension to put on the stream's node, `None` when no page was mapped.
    pub fn finish(self) -> Option<Extension> {
        if self.map.members.is_empty() {
            return None;
        }
        Some(Extension {
            tag: EXT_TAR_PAGES,
            data: self.map.encode(),
        })
    }
}

/// The pages of the parent snapshot's stream, to offer as bases: member and page number
/// to chunk id, through the parent's page map and chunk list.
///
/// Memory: the map (bounded by one extension) and one chunk list per level of the
/// parent's content; chunk lists are read as pages ask for them, and pages come in
/// stream order, so each list is read about once.
#[derive(Debug)]
pub struct ParentPages {
    repo: Repository,
    /// Each member's runs as (first page, first chunk, pages), by first page; runs of
    /// equal first page in map order.
    members: HashMap<Vec<u8>, Vec<(u64, u64, u32)>>,
    page_size: u32,
    content: Content,
    /// For each level below the root, the last chunk list read: its id and ids.
    lists: Vec<Option<(BlobId, Vec<BlobId>)>>,
}

impl ParentPages {
    /// The pages of `node` (a stream's file node) in `repo`; `None` if the node is not
    /// a file or carries no page map.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for a damaged page map.
    pub fn of_node(repo: &Repository, node: &Node) -> Result<Option<ParentPages>> {
        let NodeKind::File(content) = &node.kind else {
            return Ok(None);
        };
        let Some(map) = TarPageMap::of_node(node, "page map of the parent stream")? else {
            return Ok(None);
        };
        let mut members: HashMap<Vec<u8>, Vec<(u64, u64, u32)>> = HashMap::new();
        for m in map.members {
            members
                .entry(m.name)
                .or_default()
                .push((m.first_page, m.first_chunk, m.pages));
        }
        for runs in members.values_mut() {
            runs.sort_by_key(|r| r.0); // stable: of equal first pages the last mapped wins
        }
        Ok(Some(ParentPages {
            repo: repo.clone(),
            members,
            page_size: map.page_size,
            content: content.clone(),
            lists: vec![None; usize::from(content.level)],
        }))
    }

    /// The parent's chunk at `position`: the same page of the member of the same name,
    /// if the parent had it. A page of `len` bytes gets one if it is whole or a shorter
    /// last page group (a multiple of 8 KiB); whether the parent's chunk has the same
    /// length, and so is a usable base, is the saver's check. Reading the parent's chunk
    /// lists may fail; the caller then stores the page in full.
    ///
    /// # Errors
    /// As [`Repository::read_blob`] for the parent's chunk lists.
    pub async fn base_for(
        &mut self,
        position: &PagePosition,
        len: usize,
    ) -> Result<Option<BlobId>> {
        if !unit_fits(len, self.page_size) {
            return Ok(None);
        }
        if position.page_size != self.page_size {
            return Ok(None);
        }
        let Some(runs) = self.members.get(&*position.member) else {
            return Ok(None);
        };
        // The last run starting at or before the page (a member named twice: the later).
        let at = runs.partition_point(|r| r.0 <= position.page);
        let Some(&(first_page, first, pages)) = at.checked_sub(1).and_then(|i| runs.get(i)) else {
            return Ok(None);
        };
        let offset = position.page - first_page;
        if offset >= u64::from(pages) {
            return Ok(None);
        }
        match first.checked_add(offset) {
            Some(index) => self.chunk_at(index).await,
            None => Ok(None),
        }
    }

    /// Id of data chunk `index` of the parent's content. Chunk lists written by
    /// [`crate::content::ContentBuilder`] are full except the last of each level, so
    /// the path to a chunk follows from its index; a list that is not full where
    /// expected only makes the answer a different chunk, which is a worse base, never
    /// a wrong restore (deltas are decoded against the base they name).
    async fn chunk_at(&mut self, index: u64) -> Result<Option<BlobId>> {
        let level = self.content.level;
        let Some(root_span) = span(level) else {
            return Ok(None);
        };
        let Ok(at) = usize::try_from(index / root_span) else {
            return Ok(None);
        };
        let Some(mut id) = self.content.ids.get(at).copied() else {
            return Ok(None);
        };
        let mut rest = index % root_span;
        for list_level in (0..level).rev() {
            let Some(list_span) = span(list_level) else {
                return Ok(None);
            };
            let slot = usize::from(list_level);
            let cached = matches!(&self.lists[slot], Some((cached, _)) if *cached == id);
            if !cached {
                let body = self.repo.read_blob(&id, BlobType::ChunkList).await?;
                let list =
                    Content::decode_list(&body, list_level, &format!("chunk list {}", id.short()))?;
                self.lists[slot] = Some((id, list.ids));
            }
            let Some((_, ids)) = &self.lists[slot] else {
                return Err(Error::Internal("chunk list cache".into()));
            };
            let Ok(at) = usize::try_from(rest / list_span) else {
                return Ok(None);
            };
            let Some(next) = ids.get(at).copied() else {
                return Ok(None);
            };
            id = next;
            rest %= list_span;
        }
        Ok(Some(id))
    }
}

/// Whether a page chunk of `len` bytes is mapped and offered a base with units of
/// `page_size` bytes: a whole unit, or a shorter one that is a non-zero multiple of
/// 8 KiB (the last page group of a tar member; a stream cut short ends in other
/// lengths).
fn unit_fits(len: usize, page_size: u32) -> bool {
    let page_size = page_size as usize;
    len == page_size || (len > 0 && len < page_size && len.is_multiple_of(SHORT_UNIT_ALIGN))
}

/// Data chunks under one id of a content at `level`: `LIST_FANOUT ^ level`.
fn span(level: u8) -> Option<u64> {
    (LIST_FANOUT as u64).checked_pow(u32::from(level))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn position(member: &str, page: u64) -> PagePosition {
        PagePosition {
            member: Arc::from(member.as_bytes()),
            page,
            page_size: 8192,
        }
    }

    #[test]
    fn builder_maps_whole_pages_of_members_in_order() {
        let mut b = TarPageMapBuilder::new();
        // chunk 0: a header run (not recorded); 1..=3: pages of base/1/100.
        for (chunk, page) in [(1, 0), (2, 1), (3, 2)] {
            b.record(chunk, &position("base/1/100", page), 8192);
        }
        // chunk 4: header; 5..=6: base/1/101, whose second page is short (truncated).
        b.record(5, &position("base/1/101", 0), 8192);
        b.record(6, &position("base/1/101", 1), 100);
        // A page of another size is not mapped.
        let mut big = position("base/1/103", 0);
        big.page_size = 16384;
        b.record(7, &big, 16384);
        let ext = b.finish().unwrap();
        assert_eq!(ext.tag, EXT_TAR_PAGES);
        assert_eq!(ext.data[0], 1, "runs from page 0 only: version 1");
        let map = TarPageMap::decode(&ext.data, "map").unwrap();
        assert_eq!(map.page_size, 8192);
        assert_eq!(
            map.members,
            vec![
                MemberPages {
                    name: b"base/1/100".to_vec(),
                    first_page: 0,
                    first_chunk: 1,
                    pages: 3
                },
                MemberPages {
                    name: b"base/1/101".to_vec(),
                    first_page: 0,
                    first_chunk: 5,
                    pages: 1
                },
            ]
        );
        assert!(TarPageMapBuilder::new().finish().is_none());
    }

    /// A unit of `page_size` bytes (a tar page group) of `member`.
    fn group(member: &str, page: u64) -> PagePosition {
        PagePosition {
            member: Arc::from(member.as_bytes()),
            page,
            page_size: GROUP,
        }
    }

    const GROUP: u32 = 131_072;

    #[test]
    fn builder_maps_short_last_groups_and_ends_their_run() {
        let mut b = TarPageMapBuilder::new();
        // base/1/100: two whole groups and a short last group of 3 pages.
        b.record(1, &group("base/1/100", 0), 131_072);
        b.record(2, &group("base/1/100", 1), 131_072);
        b.record(3, &group("base/1/100", 2), 3 * 8192);
        // Nothing extends a run after its short unit, even a unit that looks next.
        b.record(4, &group("base/1/100", 3), 131_072);
        // base/1/101: one short group only (a small relation).
        b.record(6, &group("base/1/101", 0), 8192);
        // A stream cut short inside a group: not a multiple of a page, not mapped.
        b.record(8, &group("base/1/102", 0), 100);
        b.record(9, &group("base/1/103", 0), 8192 + 1);
        let map = TarPageMap::decode(&b.finish().unwrap().data, "map").unwrap();
        assert_eq!(map.page_size, GROUP);
        let runs: Vec<(&[u8], u64, u64, u32)> = map
            .members
            .iter()
            .map(|m| (&m.name[..], m.first_page, m.first_chunk, m.pages))
            .collect();
        assert_eq!(
            runs,
            [
                (&b"base/1/100"[..], 0, 1, 3),
                (&b"base/1/100"[..], 3, 4, 1),
                (&b"base/1/101"[..], 0, 6, 1),
            ]
        );
    }

    /// A parent whose stream's chunk ids are `ids` (level 0: no chunk list to read) and
    /// whose map is `map`.
    async fn parent(map: &TarPageMap, ids: Vec<BlobId>) -> ParentPages {
        let storage = crate::storage::MemoryStorage::new();
        let options = crate::InitOptions::default().with_kdf(crate::key::KdfParams::CHEAPEST);
        let repo = Repository::init(Arc::new(storage), b"pw", options)
            .await
            .unwrap();
        let node = Node {
            name: b"db.tar".to_vec(),
            kind: NodeKind::File(Content { level: 0, ids }),
            mode: 0o100_600,
            uid: 0,
            gid: 0,
            mtime: Default::default(),
            ctime: Default::default(),
            inode: 0,
            device: 0,
            size: 0,
            extensions: vec![Extension {
                tag: EXT_TAR_PAGES,
                data: map.encode(),
            }],
        };
        ParentPages::of_node(&repo, &node).unwrap().unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn base_for_offers_short_last_groups_their_parents_short_group() {
        let ids: Vec<BlobId> = (0..8u8).map(|i| BlobId([i; 32])).collect();
        let map = TarPageMap {
            page_size: GROUP,
            members: vec![MemberPages {
                name: b"base/1/100".to_vec(),
                first_page: 0,
                first_chunk: 2,
                pages: 3,
            }],
        };
        let mut pages = parent(&map, ids.clone()).await;
        let at = |page| group("base/1/100", page);
        // Whole groups and the short last group (any multiple of a page: whether the
        // parent's is as long is the saver's check) map to the parent's chunks.
        assert_eq!(pages.base_for(&at(0), 131_072).await.unwrap(), Some(ids[2]));
        assert_eq!(pages.base_for(&at(1), 131_072).await.unwrap(), Some(ids[3]));
        assert_eq!(
            pages.base_for(&at(2), 3 * 8192).await.unwrap(),
            Some(ids[4])
        );
        assert_eq!(pages.base_for(&at(1), 8192).await.unwrap(), Some(ids[3]));
        // Past the member's groups, cut-short pieces, other members: no base.
        assert_eq!(pages.base_for(&at(3), 131_072).await.unwrap(), None);
        assert_eq!(pages.base_for(&at(2), 100).await.unwrap(), None);
        assert_eq!(pages.base_for(&at(0), 131_072 + 8192).await.unwrap(), None);
        let other = group("base/1/101", 0);
        assert_eq!(pages.base_for(&other, 131_072).await.unwrap(), None);
        // A map of another unit size (an 8 KiB-page parent of an older build) offers
        // nothing to groups, and its pages are offered nothing by a group map.
        let mut old = parent(
            &TarPageMap {
                page_size: 8192,
                ..map.clone()
            },
            ids.clone(),
        )
        .await;
        assert_eq!(old.base_for(&at(0), 131_072).await.unwrap(), None);
        assert_eq!(old.base_for(&at(0), 8192).await.unwrap(), None);
        assert_eq!(
            pages
                .base_for(&position("base/1/100", 0), 8192)
                .await
                .unwrap(),
            None
        );
    }

    #[test]
    fn xbstream_pages_split_over_records_are_mapped_as_runs() {
        // A file's pages 0..3 in one record, 3..5 in the next, a header chunk between.
        let mut b = TarPageMapBuilder::new();
        let page = |member: &str, page: u64| PagePosition {
            member: Arc::from(member.as_bytes()),
            page,
            page_size: 16384,
        };
        for (chunk, p) in [(1, 0), (2, 1), (3, 2), (5, 3), (6, 4)] {
            b.record(chunk, &page("shop/t.ibd", p), 16384);
        }
        let ext = b.finish().unwrap();
        assert_eq!(ext.data[0], 2, "a run from page 3: version 2");
        let map = TarPageMap::decode(&ext.data, "map").unwrap();
        assert_eq!(map.page_size, 16384);
        let runs: Vec<(u64, u64, u32)> = map
            .members
            .iter()
            .map(|m| (m.first_page, m.first_chunk, m.pages))
            .collect();
        assert_eq!(runs, [(0, 1, 3), (3, 5, 2)]);
        assert_eq!(TarPageMap::decode(&map.encode(), "m").unwrap(), map);
    }

    #[test]
    fn builder_stays_within_one_extension() {
        let mut b = TarPageMapBuilder::new();
        let long = "d/".repeat(1000);
        for chunk in 0..2_000u64 {
            // Names share nothing with the previous one beyond the first byte.
            let name = format!("{}{long}{chunk}", chunk % 10);
            b.record(chunk, &position(&name, 0), 8192);
        }
        let ext = b.finish().unwrap();
        assert!(ext.data.len() <= MAX_EXTENSION_LEN);
        let map = TarPageMap::decode(&ext.data, "map").unwrap();
        assert!(map.members.len() > 100 && map.members.len() < 2_000);
    }

    #[test]
    fn damaged_maps_are_refused() {
        let map = TarPageMap {
            page_size: 8192,
            members: vec![
                MemberPages {
                    name: b"base/5/1".to_vec(),
                    first_page: 0,
                    first_chunk: 3,
                    pages: 9,
                },
                MemberPages {
                    name: b"base/5/2".to_vec(),
                    first_page: 0,
                    first_chunk: 14,
                    pages: 1,
                },
            ],
        };
        let data = map.encode();
        assert_eq!(TarPageMap::decode(&data, "m").unwrap(), map);
        // The second name shares 7 bytes ("base/5/") with the first.
        assert_eq!(&data[9 + 16 + 8..9 + 16 + 8 + 2], &7u16.to_le_bytes());
        let mut version = data.clone();
        version[0] = 3;
        assert!(TarPageMap::decode(&version, "m").is_err());
        let mut shared = data.clone();
        shared[9 + 16 + 8] = 200;
        assert!(TarPageMap::decode(&shared, "m").is_err());
        let mut trailing = data.clone();
        trailing.push(0);
        assert!(TarPageMap::decode(&trailing, "m").is_err());
        for cut in 0..data.len() {
            assert!(TarPageMap::decode(&data[..cut], "m").is_err());
        }
    }

    /// Names shared with the previous member cost 4 bytes each in the map but up to
    /// 4 KiB decoded: the decoded total is bounded.
    #[test]
    fn shared_names_cannot_blow_up_decoding() {
        let long = vec![b'a'; MAX_MEMBER_NAME];
        let mut w = Writer::new();
        w.u8(MAP_VERSION);
        w.u32(8192);
        let count = 60_000u32;
        w.u32(count);
        w.u16(0);
        w.u16(long.len() as u16);
        w.bytes(&long);
        w.u64(0);
        w.u32(1);
        for _ in 1..count {
            w.u16(MAX_MEMBER_NAME as u16);
            w.u16(0);
            w.u64(0);
            w.u32(1);
        }
        let data = w.finish();
        assert!(data.len() <= MAX_EXTENSION_LEN);
        let err = TarPageMap::decode(&data, "map").unwrap_err();
        assert!(err.to_string().contains("exceed"), "{err}");
    }

    proptest! {
        #[test]
        fn map_round_trips(members in proptest::collection::vec(("[a-c/]{1,12}", prop_oneof![Just(0u64), any::<u64>()], any::<u64>(), any::<u32>()), 0..20)) {
            let map = TarPageMap {
                page_size: 8192,
                members: members
                    .into_iter()
                    .map(|(name, first_page, first_chunk, pages)| MemberPages { name: name.into_bytes(), first_page, first_chunk, pages })
                    .collect(),
            };
            prop_assert_eq!(TarPageMap::decode(&map.encode(), "m").unwrap(), map);
        }

        #[test]
        fn map_decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = TarPageMap::decode(&data, "fuzz");
        }
    }
}
