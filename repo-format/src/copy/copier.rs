//! The copier: one snapshot's trees and files read from the source and stored in the
//! destination, reusing the parent's copy where the mapping is known.

use super::*;

pub(super) struct Copier<'a> {
    pub(super) src: &'a Repository,
    pub(super) dst: &'a Repository,
    pub(super) progress: Arc<CopyProgress>,
    /// Source tree id -> destination tree id, for trees durable in the destination.
    pub(super) trees: HashMap<BlobId, BlobId>,
    /// Source data chunk id -> destination id, capped at [`MAX_MAPPED_CHUNKS`].
    pub(super) chunks: HashMap<BlobId, BlobId>,
    pub(super) saver: Option<(Arc<BlobSaver>, UploaderHandle)>,
    pub(super) connections: usize,
    /// The destination session saw gc tombstones (some packs are excluded): a tree
    /// of the parent's copy is no longer reused whole after a check of its own id,
    /// since blobs below it may lie in an excluded pack (SPEC.md section 15, S-3).
    pub(super) tombstones_seen: bool,
}

impl Copier<'_> {
    pub(super) fn start_saver(&mut self) {
        let c = self.dst.config();
        self.saver = Some(BlobSaver::start(
            self.dst.storage().clone(),
            self.dst.keys().clone(),
            self.dst.index().clone(),
            c.pack_size,
            c.compression_level,
            self.connections,
        ));
    }

    fn saver(&self) -> Result<Arc<BlobSaver>> {
        self.saver
            .as_ref()
            .map(|(s, _)| s.clone())
            .ok_or_else(|| Error::Internal("copy: no blob saver".into()))
    }

    /// Make everything saved so far durable (packs and index files) and count it.
    pub(super) async fn flush(&mut self, report: &mut CopyReport) -> Result<()> {
        let Some((saver, uploader)) = self.saver.take() else {
            return Ok(());
        };
        let closing = saver.clone();
        let closed = tokio::task::spawn_blocking(move || closing.close())
            .await
            .map_err(|e| Error::Internal(e.to_string()))
            .and_then(|r| r);
        let finished = uploader.finish().await;
        let stats = &saver.stats;
        report.blobs_added += stats.blobs_added.load(Ordering::Relaxed);
        report.bytes_added += stats.bytes_added.load(Ordering::Relaxed);
        report.bytes_uploaded += stats.bytes_stored.load(Ordering::Relaxed);
        report.packs_written += stats.packs_written.load(Ordering::Relaxed);
        report.deltas_added += stats.deltas_added.load(Ordering::Relaxed);
        closed?;
        finished
    }

    fn note_added(&self, saver: &BlobSaver, before: (u64, u64)) {
        let blobs = saver.stats.blobs_added.load(Ordering::Relaxed);
        let bytes = saver.stats.bytes_stored.load(Ordering::Relaxed);
        self.progress
            .blobs_added
            .fetch_add(blobs.saturating_sub(before.0), Ordering::Relaxed);
        self.progress
            .bytes_uploaded
            .fetch_add(bytes.saturating_sub(before.1), Ordering::Relaxed);
    }

    async fn save(&self, blob_type: BlobType, body: Vec<u8>) -> Result<BlobId> {
        let saver = self.saver()?;
        let before = (
            saver.stats.blobs_added.load(Ordering::Relaxed),
            saver.stats.bytes_stored.load(Ordering::Relaxed),
        );
        let s = saver.clone();
        let id = tokio::task::spawn_blocking(move || s.save(blob_type, &body))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        self.note_added(&saver, before);
        Ok(id)
    }

    /// The destination id of source tree `id` at snapshot path `path`, storing what the
    /// destination lacks. `hint` is (source tree, its copy in the destination) at the
    /// same path in the parent snapshot.
    pub(super) async fn copy_tree(
        &mut self,
        id: BlobId,
        hint: Option<(BlobId, BlobId)>,
        path: &str,
        snap: &Snapshot,
    ) -> Result<BlobId> {
        if let Some(d) = self.trees.get(&id) {
            return Ok(*d);
        }
        if let Some((hs, hd)) = hint {
            // Without tombstones nothing is excluded, and a usable tree's blobs are
            // all kept (S-3); with them the tree is walked, each file checked.
            if hs == id
                && !self.tombstones_seen
                && self.dst.usable_many(&[hd]).first() == Some(&true)
            {
                self.remember_tree(id, hd);
                return Ok(hd);
            }
        }
        let tree = self
            .src
            .load_tree(&id)
            .await
            .map_err(|e| in_context(e, snap, path))?;
        self.count_read(0);
        // The parent's trees at this path, when both read; a hint that fails only
        // costs the reuse.
        let hint_trees = match hint {
            Some((hs, hd)) => {
                match (self.src.load_tree(&hs).await, self.dst.load_tree(&hd).await) {
                    (Ok(a), Ok(b)) => Some((a, b)),
                    _ => None,
                }
            }
            None => None,
        };
        let pair_of = |node: &Node| {
            hint_trees
                .as_ref()
                .and_then(|(a, b)| Some((a.get(&node.name)?, b.get(&node.name)?)))
        };
        // The chunks of the directory's small files (inline contents, level 0) are
        // copied together, so a directory of many small files keeps
        // CHUNKS_IN_FLIGHT reads going instead of waiting for one file at a time.
        let mut reused: Vec<Option<Content>> = Vec::with_capacity(tree.nodes.len());
        let mut small_ids = Vec::new();
        let mut small_owner = Vec::new();
        for (i, node) in tree.nodes.iter().enumerate() {
            let NodeKind::File(content) = &node.kind else {
                reused.push(None);
                continue;
            };
            let shortcut = self
                .file_from_parent(node.size, content, pair_of(node))
                .await;
            if shortcut.is_none() && content.level == 0 {
                small_ids.extend_from_slice(&content.ids);
                small_owner.extend(std::iter::repeat_n(i, content.ids.len()));
            }
            reused.push(shortcut);
        }
        let nodes = &tree.nodes;
        let mut small_mapped = self
            .map_data_chunks(
                &small_ids,
                &|k| {
                    let name = small_owner
                        .get(k)
                        .and_then(|i| nodes.get(*i))
                        .map(|n| String::from_utf8_lossy(&n.name).into_owned())
                        .unwrap_or_default();
                    format!("{path}/{name}")
                },
                snap,
            )
            .await?
            .into_iter();
        let mut out = Tree::default();
        for (mut node, shortcut) in tree.nodes.into_iter().zip(reused) {
            let child = format!("{path}/{}", String::from_utf8_lossy(&node.name));
            let pair = pair_of(&node);
            node.kind = match node.kind {
                NodeKind::Dir(sub) => {
                    let sub_hint = pair.and_then(|(a, b)| match (&a.kind, &b.kind) {
                        (NodeKind::Dir(x), NodeKind::Dir(y)) => Some((*x, *y)),
                        _ => None,
                    });
                    NodeKind::Dir(Box::pin(self.copy_tree(sub, sub_hint, &child, snap)).await?)
                }
                NodeKind::File(content) => NodeKind::File(match shortcut {
                    Some(c) => c,
                    None if content.level == 0 => Content {
                        level: 0,
                        ids: small_mapped.by_ref().take(content.ids.len()).collect(),
                    },
                    None => self.copy_content(content, &child, snap).await?,
                }),
                other => other,
            };
            out.nodes.push(node);
        }
        let body = out.encode()?;
        let new = self.save(BlobType::Tree, body).await?;
        self.remember_tree(id, new);
        Ok(new)
    }

    /// The destination content of a file (`size` bytes, source content `content`)
    /// known from the parent snapshot's copy: `pair` is the file at the same path in
    /// the source's parent and in its copy. When the file is unchanged its copy's
    /// content is returned; when it changed, its chunks are mapped through the copy
    /// (equal positions) and `None` is returned.
    async fn file_from_parent(
        &mut self,
        size: u64,
        content: &Content,
        pair: Option<(&Node, &Node)>,
    ) -> Option<Content> {
        let (a, b) = pair?;
        let (NodeKind::File(sa), NodeKind::File(db)) = (&a.kind, &b.kind) else {
            return None;
        };
        let usable = content_usable(self.dst, db).await;
        if sa == content && a.size == size && b.size == size && usable {
            // The parent's copy of this very file: nothing to read.
            return Some(db.clone());
        }
        if usable && b.size > 0 {
            // A changed file: its unchanged chunks are the parent copy's chunks at
            // the same positions.
            self.map_chunks_of(sa, db).await;
        }
        None
    }

    /// The destination content of source content `content` (of the file at `path`),
    /// its chunk lists expanded depth-first and its chunks copied a window at a time.
    async fn copy_content(
        &mut self,
        content: Content,
        path: &str,
        snap: &Snapshot,
    ) -> Result<Content> {
        let mut builder = ContentBuilder::new();
        let mut batch = Vec::with_capacity(CHUNKS_IN_FLIGHT * 8);
        let mut stack: Vec<(Content, usize)> = vec![(content, 0)];
        while let Some((list, next)) = stack.last_mut() {
            let Some(id) = list.ids.get(*next).copied() else {
                stack.pop();
                continue;
            };
            *next += 1;
            let level = list.level;
            if level == 0 {
                batch.push(id);
                if batch.len() == batch.capacity() {
                    builder = self
                        .copy_chunks(std::mem::take(&mut batch), builder, path, snap)
                        .await?;
                }
                continue;
            }
            let body = self
                .src
                .read_blob(&id, BlobType::ChunkList)
                .await
                .map_err(|e| in_context(e, snap, path))?;
            self.count_read(body.len());
            let sub = Content::decode_list(&body, level - 1, &format!("chunk list {}", id.short()))
                .map_err(|e| in_context(e, snap, path))?;
            stack.push((sub, 0));
        }
        if !batch.is_empty() {
            builder = self.copy_chunks(batch, builder, path, snap).await?;
        }
        let saver = self.saver()?;
        let before = (
            saver.stats.blobs_added.load(Ordering::Relaxed),
            saver.stats.bytes_stored.load(Ordering::Relaxed),
        );
        let s = saver.clone();
        let content = tokio::task::spawn_blocking(move || {
            builder.finish(&mut |body| s.save(BlobType::ChunkList, &body))
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        self.note_added(&saver, before);
        Ok(content)
    }

    /// Data chunks of a file, in order: each is mapped to its destination id (read
    /// from the source, hashed and saved unless the map knows it), and the ids are
    /// pushed into `builder` (returned, as it moves through a blocking task).
    async fn copy_chunks(
        &mut self,
        ids: Vec<BlobId>,
        builder: ContentBuilder,
        path: &str,
        snap: &Snapshot,
    ) -> Result<ContentBuilder> {
        let dst_ids = self
            .map_data_chunks(&ids, &|_| path.to_string(), snap)
            .await?;
        let saver = self.saver()?;
        let s = saver.clone();
        let before = (
            saver.stats.blobs_added.load(Ordering::Relaxed),
            saver.stats.bytes_stored.load(Ordering::Relaxed),
        );
        let builder = tokio::task::spawn_blocking(move || -> Result<ContentBuilder> {
            let mut builder = builder;
            let mut save_list = |body: Vec<u8>| s.save(BlobType::ChunkList, &body);
            for id in dst_ids {
                builder.push(id, &mut save_list)?;
            }
            Ok(builder)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        self.note_added(&saver, before);
        Ok(builder)
    }

    /// The destination ids of source data chunks `ids`: each is taken from the map, or
    /// read from the source, hashed and saved (a delta when the source's is one and its
    /// base is mapped), [`CHUNKS_IN_FLIGHT`] at a time. `path_of(k)` names the file of
    /// `ids[k]` in errors.
    async fn map_data_chunks(
        &mut self,
        ids: &[BlobId],
        path_of: &(dyn Fn(usize) -> String + Sync),
        snap: &Snapshot,
    ) -> Result<Vec<BlobId>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let saver = self.saver()?;
        let before = (
            saver.stats.blobs_added.load(Ordering::Relaxed),
            saver.stats.bytes_stored.load(Ordering::Relaxed),
        );
        // Each distinct id is read once (its first occurrence names it in errors):
        // the map is consulted before the stream and filled after it, so a chunk
        // repeated within `ids` (small files of equal content) would otherwise be
        // read once per occurrence.
        let input = ids;
        let mut first_at: HashMap<BlobId, usize> = HashMap::with_capacity(input.len());
        let mut unique: Vec<BlobId> = Vec::with_capacity(input.len());
        let mut unique_k: Vec<usize> = Vec::with_capacity(input.len());
        let slots: Vec<usize> = input
            .iter()
            .enumerate()
            .map(|(k, id)| {
                *first_at.entry(*id).or_insert_with(|| {
                    unique.push(*id);
                    unique_k.push(k);
                    unique.len() - 1
                })
            })
            .collect();
        let ids = &unique[..];
        let known: Vec<Option<BlobId>> =
            ids.iter().map(|id| self.chunks.get(id).copied()).collect();
        // A delta in the source stays a delta in the destination when its base was
        // copied before (the parent's page): the map gives the base's destination id.
        let bases: Vec<Option<BlobId>> = self
            .src
            .type_and_base_many(ids)
            .into_iter()
            .map(|tb| {
                tb.and_then(|(_, base)| base)
                    .and_then(|b| self.chunks.get(&b).copied())
            })
            .collect();
        let (src, dst) = (self.src, self.dst);
        let progress = &self.progress;
        let unique_k = &unique_k;
        let mapped: Vec<(BlobId, BlobId)> =
            futures::stream::iter(ids.iter().zip(known).zip(bases).enumerate())
                .map(|(k, ((id, known), base))| {
                    let saver = saver.clone();
                    async move {
                        if let Some(d) = known {
                            return Ok((*id, d));
                        }
                        let plain = src
                            .read_blob(id, BlobType::Data)
                            .await
                            .map_err(|e| in_context(e, snap, &path_of(unique_k[k])))?;
                        progress.blobs_read.fetch_add(1, Ordering::Relaxed);
                        progress
                            .bytes_read
                            .fetch_add(plain.len() as u64, Ordering::Relaxed);
                        let d = saver.keys().content_id(&plain);
                        let base = match base {
                            Some(b) if !saver.is_stored(&d) => {
                                match saver.delta_base_for(&b, plain.len()) {
                                    // A base that cannot be read only costs the delta.
                                    Some(b) => {
                                        dst.read_blob(&b, BlobType::Data).await.ok().map(|p| (b, p))
                                    }
                                    None => None,
                                }
                            }
                            _ => None,
                        };
                        tokio::task::spawn_blocking(move || match &base {
                            Some((b, base_plain)) => saver.save_data_with_base(
                                d,
                                &plain,
                                crate::blob::DeltaBase {
                                    id: b,
                                    plaintext: base_plain,
                                },
                            ),
                            None => saver.save_with_id(BlobType::Data, d, &plain),
                        })
                        .await
                        .map_err(|e| Error::Internal(e.to_string()))??;
                        Ok::<_, Error>((*id, d))
                    }
                })
                .buffered(CHUNKS_IN_FLIGHT)
                .try_collect()
                .await?;
        self.note_added(&saver, before);
        for (s, d) in &mapped {
            self.remember_chunk(*s, *d);
        }
        Ok(slots.into_iter().map(|u| mapped[u].1).collect())
    }

    fn remember_tree(&mut self, src: BlobId, dst: BlobId) {
        if self.trees.len() >= MAX_MAPPED_TREES {
            self.trees.clear();
        }
        self.trees.insert(src, dst);
    }

    fn remember_chunk(&mut self, src: BlobId, dst: BlobId) {
        if self.chunks.len() >= MAX_MAPPED_CHUNKS {
            self.chunks.clear();
        }
        self.chunks.insert(src, dst);
    }

    fn count_read(&self, bytes: usize) {
        self.progress.blobs_read.fetch_add(1, Ordering::Relaxed);
        self.progress
            .bytes_read
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Map the data chunks of `src_content` (in the source) to those of `dst_content`
    /// (its copy in the destination) position by position, when both expand to the
    /// same number of chunks and those are usable. Best effort: any failure to read a
    /// list only costs the downloads it would have saved.
    async fn map_chunks_of(&mut self, src_content: &Content, dst_content: &Content) {
        let room = MAX_MAPPED_CHUNKS.saturating_sub(self.chunks.len());
        let Some(a) = expand_ids(self.src, src_content, room).await else {
            return;
        };
        let Some(b) = expand_ids(self.dst, dst_content, room).await else {
            return;
        };
        if a.len() != b.len() {
            return;
        }
        let usable = self.dst.usable_many(&b);
        for ((s, d), ok) in a.into_iter().zip(b).zip(usable) {
            if ok {
                self.chunks.insert(s, d);
            }
        }
    }
}

/// Whether a writer may reference `content` of `repo`: every blob it references
/// (chunk lists and the data chunks below them) is usable, as backup checks a
/// parent's file (a chunk list's own id says nothing of the chunks it lists).
async fn content_usable(repo: &Repository, content: &Content) -> bool {
    if !repo.usable_many(&content.ids).iter().all(|u| *u) {
        return false;
    }
    if content.level == 0 {
        return true;
    }
    let mut ids = crate::data_ids::DataIds::new(content);
    let mut batch = Vec::new();
    loop {
        match ids.next(repo).await {
            Ok(Some(id)) => {
                batch.push(id);
                if batch.len() >= 4096 {
                    if !repo.usable_many(&batch).iter().all(|u| *u) {
                        return false;
                    }
                    batch.clear();
                }
            }
            Ok(None) => return repo.usable_many(&batch).iter().all(|u| *u),
            Err(_) => return false,
        }
    }
}

/// The data chunk ids of `content` in `repo`, or `None` if there are more than `cap`
/// or a chunk list cannot be read.
async fn expand_ids(repo: &Repository, content: &Content, cap: usize) -> Option<Vec<BlobId>> {
    let mut out = Vec::new();
    let mut stack: Vec<(Content, usize)> = vec![(content.clone(), 0)];
    while let Some((list, next)) = stack.last_mut() {
        let Some(id) = list.ids.get(*next).copied() else {
            stack.pop();
            continue;
        };
        *next += 1;
        if list.level == 0 {
            if out.len() >= cap {
                return None;
            }
            out.push(id);
            continue;
        }
        let level = list.level;
        let body = repo.read_blob(&id, BlobType::ChunkList).await.ok()?;
        let sub = Content::decode_list(&body, level - 1, "chunk list").ok()?;
        stack.push((sub, 0));
    }
    Some(out)
}
