//! Content references: how a file's or stream's chunks are listed.
//!
//! A [`Content`] is `level u8 || count u32 || id[32]*`. At level 0 the ids are the data
//! chunks of the file in order. At level L > 0 they are ids of chunk-list blobs, whose
//! body is again `level u8 || count u32 || id*` at level L-1. Chunk lists hold at most
//! [`LIST_FANOUT`] ids and a tree node inlines at most [`MAX_INLINE_IDS`], so no single
//! object grows with the file: a 1 TiB stream in 16 KiB chunks is a three-level list.
//! The lists are built incrementally ([`ContentBuilder`]) in memory bounded by
//! `LIST_FANOUT * MAX_LEVEL` ids, whatever the stream length.

use crate::codec::{Reader, Writer};
use crate::error::{Error, Result};
use crate::id::{BlobId, ID_LEN};

/// Most ids in one chunk-list blob.
pub const LIST_FANOUT: usize = 4096;
/// Most ids inlined in a tree node; longer lists go into chunk-list blobs.
pub const MAX_INLINE_IDS: usize = 64;
/// Highest level accepted (4096^4 chunks is far beyond any real file).
pub const MAX_LEVEL: u8 = 4;

/// The chunk list of one file or stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Content {
    /// 0: `ids` are data chunks; L > 0: `ids` are chunk lists of level L-1.
    pub level: u8,
    /// The ids at that level, in order.
    pub ids: Vec<BlobId>,
}

impl Content {
    /// Append the encoding to `w`.
    pub fn encode_into(&self, w: &mut Writer) {
        w.u8(self.level);
        w.u32(self.ids.len() as u32);
        for id in &self.ids {
            w.id(id);
        }
    }

    /// Decode from `r`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for a level above [`MAX_LEVEL`] or a count that does not fit.
    pub fn decode_from(r: &mut Reader<'_>) -> Result<Content> {
        let level = r.u8("content level")?;
        if level > MAX_LEVEL {
            return Err(r.corrupt(format!("content level {level} exceeds {MAX_LEVEL}")));
        }
        let n = r.count("content id count", ID_LEN)?;
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(r.id("content id")?);
        }
        Ok(Content { level, ids })
    }

    /// Encode as the body of a chunk-list blob.
    pub fn encode_list(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode_into(&mut w);
        w.finish()
    }

    /// Decode the body of a chunk-list blob, which must be at `expected_level`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if malformed, longer than [`LIST_FANOUT`], or at another level.
    pub fn decode_list(body: &[u8], expected_level: u8, object: &str) -> Result<Content> {
        let mut r = Reader::new(body, object);
        let c = Content::decode_from(&mut r)?;
        r.finish()?;
        if c.level != expected_level {
            return Err(Error::corrupt(
                object,
                format!(
                    "chunk list at level {} where {expected_level} was expected",
                    c.level
                ),
            ));
        }
        if c.ids.len() > LIST_FANOUT || c.ids.is_empty() {
            return Err(Error::corrupt(
                object,
                format!(
                    "chunk list of {} ids (1..={LIST_FANOUT} allowed)",
                    c.ids.len()
                ),
            ));
        }
        Ok(c)
    }
}

/// Builds a [`Content`] from data chunk ids arriving in order, saving chunk-list blobs
/// through a callback as lists fill up.
#[derive(Debug, Default)]
pub struct ContentBuilder {
    levels: Vec<Vec<BlobId>>,
}

impl ContentBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        ContentBuilder::default()
    }

    /// Append the next data chunk id. `save_list` stores a chunk-list body and returns
    /// its id.
    ///
    /// # Errors
    /// Whatever `save_list` returns; [`Error::InvalidArgument`] past [`MAX_LEVEL`].
    pub fn push(
        &mut self,
        id: BlobId,
        save_list: &mut dyn FnMut(Vec<u8>) -> Result<BlobId>,
    ) -> Result<()> {
        self.push_at(0, id, save_list)
    }

    fn push_at(
        &mut self,
        level: usize,
        id: BlobId,
        save_list: &mut dyn FnMut(Vec<u8>) -> Result<BlobId>,
    ) -> Result<()> {
        if level > MAX_LEVEL as usize {
            return Err(Error::InvalidArgument(
                "content too large for the chunk list depth".into(),
            ));
        }
        if self.levels.len() <= level {
            self.levels.resize_with(level + 1, Vec::new);
        }
        self.levels[level].push(id);
        if self.levels[level].len() == LIST_FANOUT {
            let ids = std::mem::take(&mut self.levels[level]);
            let list_id = save_list(
                Content {
                    level: level as u8,
                    ids,
                }
                .encode_list(),
            )?;
            self.push_at(level + 1, list_id, save_list)?;
        }
        Ok(())
    }

    /// Finish: flush partial lists upwards until the top level fits inline.
    ///
    /// # Errors
    /// Whatever `save_list` returns.
    pub fn finish(
        mut self,
        save_list: &mut dyn FnMut(Vec<u8>) -> Result<BlobId>,
    ) -> Result<Content> {
        let mut level = 0;
        loop {
            if level >= self.levels.len() {
                return Ok(Content::default());
            }
            let is_top = self.levels[level + 1..].iter().all(Vec::is_empty);
            if is_top && self.levels[level].len() <= MAX_INLINE_IDS {
                let ids = std::mem::take(&mut self.levels[level]);
                return Ok(Content {
                    level: level as u8,
                    ids,
                });
            }
            let ids = std::mem::take(&mut self.levels[level]);
            if !ids.is_empty() {
                let list_id = save_list(
                    Content {
                        level: level as u8,
                        ids,
                    }
                    .encode_list(),
                )?;
                self.push_at(level + 1, list_id, save_list)?;
            }
            level += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn id(n: u64) -> BlobId {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&n.to_le_bytes());
        BlobId(b)
    }

    fn build(n: u64) -> (Content, HashMap<BlobId, Vec<u8>>) {
        let mut store = HashMap::new();
        let mut counter = 1u64 << 40;
        let mut save = |body: Vec<u8>| {
            counter += 1;
            let lid = id(counter);
            store.insert(lid, body);
            Ok(lid)
        };
        let mut b = ContentBuilder::new();
        for i in 0..n {
            b.push(id(i), &mut save).unwrap();
        }
        let c = b.finish(&mut save).unwrap();
        (c, store)
    }

    fn expand(c: &Content, store: &HashMap<BlobId, Vec<u8>>, out: &mut Vec<BlobId>) {
        if c.level == 0 {
            out.extend_from_slice(&c.ids);
            return;
        }
        for lid in &c.ids {
            let list = Content::decode_list(&store[lid], c.level - 1, "list").unwrap();
            expand(&list, store, out);
        }
    }

    #[test]
    fn lists_expand_to_the_pushed_ids_for_every_shape() {
        for n in [
            0,
            1,
            64,
            65,
            4095,
            4096,
            4097,
            4096 * 64,
            4096 * 64 + 1,
            4096 * 65 + 7,
        ] {
            let (c, store) = build(n);
            assert!(c.ids.len() <= MAX_INLINE_IDS, "n={n}");
            let mut out = Vec::new();
            expand(&c, &store, &mut out);
            assert_eq!(out, (0..n).map(id).collect::<Vec<_>>(), "n={n}");
        }
    }

    #[test]
    fn malformed_lists_are_rejected() {
        let list = Content {
            level: 1,
            ids: vec![id(1)],
        }
        .encode_list();
        assert!(Content::decode_list(&list, 0, "l").is_err());
        assert!(Content::decode_list(&list[..list.len() - 1], 1, "l").is_err());
        let empty = Content {
            level: 0,
            ids: vec![],
        }
        .encode_list();
        assert!(Content::decode_list(&empty, 0, "l").is_err());
        let deep = Content {
            level: 9,
            ids: vec![id(1)],
        }
        .encode_list();
        assert!(Content::decode_list(&deep, 9, "l").is_err());
    }
}
