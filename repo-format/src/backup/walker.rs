//! The walker: entries in directory order, selection, hard links, and directories
//! finished in post-order by the finalizer.

use super::*;

/// A node whose payload may still be in progress.
pub(super) enum PendingNode {
    Ready(Node),
    File(Node, Arc<FileState>, PathBuf),
    Dir(Node, Arc<DirState>),
}

#[derive(Debug, Default)]
pub(super) struct DirState {
    pub(super) tree: OnceLock<BlobId>,
}

pub(super) struct Walker {
    pub(super) repo: Repository,
    pub(super) rt: tokio::runtime::Handle,
    pub(super) saver: Arc<BlobSaver>,
    pub(super) chunker: ChunkerParams,
    pub(super) stream_chunking: StreamChunking,
    /// Set when the stream was recognised as tar and cut by the tar rules.
    pub(super) stream_cut_as_tar: AtomicBool,
    /// The params a stream's content-defined runs were cut with (an unrecognised
    /// stream's are smaller than `chunker`), for its manifest.
    pub(super) stream_run_params: Mutex<Option<ChunkerParams>>,
    pub(super) limiter: Arc<Limiter>,
    /// Bounds the bytes of small files read and not yet saved.
    pub(super) small_files: Arc<Limiter>,
    /// Reader threads for small files, and for parent trees loaded ahead.
    pub(super) readers: rayon::ThreadPool,
    /// Nodes of the parent trees loaded ahead ([`PARENT_NODES_AHEAD`]).
    pub(super) parent_nodes_ahead: Arc<AtomicU64>,
    pub(super) abort: Arc<AtomicBool>,
    pub(super) progress: Arc<BackupProgress>,
    pub(super) counts: Mutex<SnapshotSummary>,
    pub(super) warnings: Mutex<Vec<String>>,
    /// Files that changed while they were read.
    pub(super) changed: Arc<Mutex<Vec<PathBuf>>>,
    /// What to leave out, and what was left out.
    pub(super) selection: Selection,
    pub(super) excluded: Mutex<Vec<Excluded>>,
    /// Device of the backed-up path being walked (`--one-file-system`), or
    /// [`NO_DEVICE`].
    pub(super) top_device: AtomicU64,
    /// Tree and chunk-list ids the new snapshot reaches, for its locator (SPEC.md
    /// section 14.1): every tree written or reused, and the top-level lists of files.
    pub(super) meta_ids: Mutex<Vec<BlobId>>,
    /// Contents of level 2 and more, whose lists below the top are read after the walk.
    pub(super) deep_contents: Mutex<Vec<Content>>,
}

/// [`Walker::top_device`] before a backed-up path is reached.
pub(super) const NO_DEVICE: u64 = u64::MAX;

/// What `lstat` said of a file before it was read. A file that stats otherwise once read
/// changed while it was read (or was replaced), and its copy may mix old and new bytes;
/// the next backup sees the new times and reads it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SeenAs {
    pub(super) size: u64,
    pub(super) mtime: Timestamp,
    pub(super) ctime: Timestamp,
    pub(super) inode: u64,
}

impl SeenAs {
    pub(super) fn of(node: &Node) -> SeenAs {
        SeenAs {
            size: node.size,
            mtime: node.mtime,
            ctime: node.ctime,
            inode: node.inode,
        }
    }

    /// Stat `path` again now that it is read, and record it in `changed` if it differs.
    /// A file that can no longer be stat'ed (deleted since) counts as changed.
    pub(super) fn check_after_read(&self, path: &Path, changed: &Mutex<Vec<PathBuf>>) {
        let now = std::fs::symlink_metadata(path).map(|meta| {
            SeenAs::of(&node_from_meta(
                Vec::new(),
                &meta,
                NodeKind::Dir(BlobId([0; 32])),
            ))
        });
        if now.ok() != Some(*self) {
            changed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(path.to_path_buf());
        }
    }
}

/// A directory whose entries are all enumerated, waiting for its tree to be written.
pub(super) struct FinishedDir {
    pub(super) nodes: Vec<PendingNode>,
    pub(super) state: Arc<DirState>,
}

/// Virtual directory structure above the backed-up paths.
#[derive(Default)]
pub(super) struct PathTrie {
    pub(super) children: BTreeMap<Vec<u8>, PathTrie>,
    pub(super) is_target: bool,
}

impl Walker {
    /// Whether the selection leaves out the entry at `path`; records it if so.
    pub(super) fn excluded(&self, path: &Path, meta: &std::io::Result<std::fs::Metadata>) -> bool {
        let Ok(meta) = meta else { return false };
        match self.selection.exclude(path, meta) {
            Some(reason) => {
                self.record_excluded(path, reason);
                true
            }
            None => false,
        }
    }

    pub(super) fn record_excluded(&self, path: &Path, reason: ExcludeReason) {
        if let Ok(mut e) = self.excluded.lock() {
            e.push(Excluded {
                path: path.to_path_buf(),
                reason,
            });
        }
    }

    pub(super) fn warn(&self, msg: String) {
        self.progress.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut w) = self.warnings.lock() {
            w.push(msg);
        }
    }

    pub(super) fn walk_paths(
        &self,
        paths: &[PathBuf],
        parent_root: Option<BlobId>,
    ) -> Result<BlobId> {
        let mut trie = PathTrie::default();
        for p in paths {
            let mut t = &mut trie;
            for c in p.components() {
                if let Component::Normal(n) = c {
                    t = t.children.entry(n.as_bytes().to_vec()).or_default();
                }
            }
            t.is_target = true;
        }
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<FinishedDir>(256);
            let finalizer = scope.spawn(|| self.finalize(rx));
            let root_state = Arc::new(DirState::default());
            let root_parent = parent_root.map_or(ParentSource::None, ParentSource::Id);
            let walked =
                self.walk_virtual(&trie, Path::new("/"), root_parent, root_state.clone(), &tx);
            drop(tx);
            let finalized = finalizer
                .join()
                .map_err(|_| Error::Internal("finalizer panicked".into()))?;
            walked?;
            finalized?;
            root_state
                .tree
                .get()
                .copied()
                .ok_or_else(|| Error::Internal("root tree not written".into()))
        })
    }

    pub(super) fn walk_virtual(
        &self,
        trie: &PathTrie,
        path: &Path,
        parent: ParentSource,
        state: Arc<DirState>,
        tx: &std::sync::mpsc::SyncSender<FinishedDir>,
    ) -> Result<()> {
        if trie.is_target {
            // The root itself was given (`dprepo backup /`).
            return self.walk_dir(path, parent, state, tx);
        }
        let parent_dir = self.parent_dir(parent);
        let mut nodes = Vec::new();
        for (name, child) in &trie.children {
            let child_path = path.join(OsStr::from_bytes(name));
            let sub_parent = parent_dir
                .as_ref()
                .and_then(|p| p.subdir(name))
                .map_or(ParentSource::None, ParentSource::Id);
            if child.is_target {
                let meta = std::fs::symlink_metadata(&child_path);
                if self.excluded(&child_path, &meta) {
                    continue;
                }
                if let Ok(m) = &meta {
                    self.top_device.store(m.dev(), Ordering::Relaxed);
                }
                let parent_node = parent_dir.as_ref().and_then(|p| p.node(name));
                if let Some(n) =
                    self.entry(&child_path, name.clone(), meta, parent_node, sub_parent, tx)?
                {
                    nodes.push(n);
                }
            } else {
                let meta = std::fs::metadata(&child_path).map_err(|e| Error::LocalIo {
                    path: child_path.clone(),
                    source: e,
                })?;
                let sub_state = Arc::new(DirState::default());
                self.walk_virtual(child, &child_path, sub_parent, sub_state.clone(), tx)?;
                nodes.push(PendingNode::Dir(
                    node_from_meta(name.clone(), &meta, NodeKind::Dir(BlobId([0; 32]))),
                    sub_state,
                ));
            }
        }
        self.counts
            .lock()
            .map_err(|_| Error::Internal("poisoned".into()))?
            .dirs += 1;
        tx.send(FinishedDir { nodes, state })
            .map_err(|_| Error::Internal("finalizer stopped".into()))
    }

    /// Back up one entry found at `path`, whose `lstat` gave `meta`; `None` if it is
    /// skipped. `parent` is its node in the parent snapshot and whether that node's
    /// content may be reused; `sub_parent` is where its parent tree comes from if it is
    /// a directory.
    pub(super) fn entry(
        &self,
        path: &Path,
        name: Vec<u8>,
        meta: std::io::Result<std::fs::Metadata>,
        parent: Option<(Node, Option<bool>)>,
        sub_parent: ParentSource,
        tx: &std::sync::mpsc::SyncSender<FinishedDir>,
    ) -> Result<Option<PendingNode>> {
        if self.abort.load(Ordering::Relaxed) {
            return Err(Error::Internal("backup aborted".into()));
        }
        let meta = match meta {
            Ok(m) => m,
            Err(e) => {
                self.warn(format!("{}: {e}", path.display()));
                return Ok(None);
            }
        };
        let ft = meta.file_type();
        // Hard links, holes, extended attributes and ACLs (file_meta.rs).
        let (extensions, unread) = crate::file_meta::read_extensions(path, &meta);
        for w in unread {
            self.warn(w);
        }
        let node = |name, kind| Node {
            extensions: extensions.clone(),
            ..node_from_meta(name, &meta, kind)
        };
        if ft.is_dir() {
            let state = Arc::new(DirState::default());
            self.walk_dir(path, sub_parent, state.clone(), tx)?;
            return Ok(Some(PendingNode::Dir(
                node(name, NodeKind::Dir(BlobId([0; 32]))),
                state,
            )));
        }
        if ft.is_symlink() {
            let target = match std::fs::read_link(path) {
                Ok(t) => t,
                Err(e) => {
                    self.warn(format!("{}: {e}", path.display()));
                    return Ok(None);
                }
            };
            self.counts
                .lock()
                .map_err(|_| Error::Internal("poisoned".into()))?
                .symlinks += 1;
            return Ok(Some(PendingNode::Ready(node(
                name,
                NodeKind::Symlink(target.as_os_str().as_bytes().to_vec()),
            ))));
        }
        if !ft.is_file() {
            use std::os::unix::fs::FileTypeExt;
            let special = if ft.is_fifo() {
                Special::Fifo
            } else if ft.is_socket() {
                Special::Socket
            } else if ft.is_char_device() {
                Special::CharDevice(meta.rdev())
            } else if ft.is_block_device() {
                Special::BlockDevice(meta.rdev())
            } else {
                self.warn(format!(
                    "{}: file of unknown type {:o} not backed up",
                    path.display(),
                    meta.mode() & 0o170000
                ));
                return Ok(None);
            };
            self.counts
                .lock()
                .map_err(|_| Error::Internal("poisoned".into()))?
                .special_files += 1;
            return Ok(Some(PendingNode::Ready(node(
                name,
                NodeKind::Special(special),
            ))));
        }
        let node = node(name, NodeKind::File(Content::default()));
        {
            let mut counts = self
                .counts
                .lock()
                .map_err(|_| Error::Internal("poisoned".into()))?;
            counts.files += 1;
        }
        // Unchanged since the parent snapshot: reuse its content without reading.
        if let Some((p, usable)) = parent {
            if let NodeKind::File(content) = &p.kind {
                let same = p.size == node.size
                    && p.mtime == node.mtime
                    && p.ctime == node.ctime
                    && p.inode == node.inode;
                if same && usable.unwrap_or_else(|| content_usable(&self.repo, &self.rt, content)) {
                    let mut counts = self
                        .counts
                        .lock()
                        .map_err(|_| Error::Internal("poisoned".into()))?;
                    counts.files_unmodified += 1;
                    counts.total_bytes += node.size;
                    self.progress.files.fetch_add(1, Ordering::Relaxed);
                    self.progress
                        .bytes_unchanged
                        .fetch_add(node.size, Ordering::Relaxed);
                    let mut node = node;
                    node.kind = NodeKind::File(content.clone());
                    return Ok(Some(PendingNode::Ready(node)));
                }
                self.counts
                    .lock()
                    .map_err(|_| Error::Internal("poisoned".into()))?
                    .files_changed += 1;
                self.trust_parent_content(content);
            } else {
                self.counts
                    .lock()
                    .map_err(|_| Error::Internal("poisoned".into()))?
                    .files_new += 1;
            }
        } else {
            self.counts
                .lock()
                .map_err(|_| Error::Internal("poisoned".into()))?
                .files_new += 1;
        }
        if let Ok(mut c) = self.progress.current.lock() {
            *c = path.to_string_lossy().into_owned();
        }
        if node.size <= u64::from(self.chunker.max_size) {
            let state = FileState::new();
            let cost = node.size.max(SMALL_FILE_MIN_COST);
            self.small_files.acquire_n(cost);
            let job = SmallFileJob {
                path: path.to_path_buf(),
                size: node.size,
                cost,
                state: state.clone(),
                saver: self.saver.clone(),
                params: self.chunker,
                limiter: self.small_files.clone(),
                abort: self.abort.clone(),
                progress: self.progress.clone(),
                seen: SeenAs::of(&node),
                changed: self.changed.clone(),
            };
            self.readers.spawn(move || job.read());
            return Ok(Some(PendingNode::File(node, state, path.to_path_buf())));
        }
        // Longer than one chunk: read ahead on a thread of its own, past the page cache.
        let file = match crate::read_ahead::ReadAhead::open(path) {
            Ok(f) => f,
            Err(e) => {
                self.warn(format!("{}: {e}", path.display()));
                return Ok(None);
            }
        };
        let state = FileState::new();
        let seen = SeenAs::of(&node);
        match self.read_content(file, &state) {
            Ok(size) => {
                // Every byte is read (the chunks are still being saved).
                seen.check_after_read(path, &self.changed);
                let mut node = node;
                node.size = size;
                self.counts
                    .lock()
                    .map_err(|_| Error::Internal("poisoned".into()))?
                    .total_bytes += size;
                Ok(Some(PendingNode::File(node, state, path.to_path_buf())))
            }
            Err(Error::LocalIo { source, .. }) => {
                state.fail(Error::InvalidArgument("read failed".into()));
                self.warn(format!("{}: {source}", path.display()));
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    pub(super) fn walk_dir(
        &self,
        path: &Path,
        parent: ParentSource,
        state: Arc<DirState>,
        tx: &std::sync::mpsc::SyncSender<FinishedDir>,
    ) -> Result<()> {
        self.progress.dirs.fetch_add(1, Ordering::Relaxed);
        self.counts
            .lock()
            .map_err(|_| Error::Internal("poisoned".into()))?
            .dirs += 1;
        let parent_dir = self.parent_dir(parent);
        let mut entries: Vec<(Vec<u8>, std::fs::DirEntry)> = Vec::new();
        let top_device = match self.top_device.load(Ordering::Relaxed) {
            NO_DEVICE => None,
            d => Some(d),
        };
        let descend = !self.selection.one_file_system
            || std::fs::symlink_metadata(path)
                .map_or(true, |meta| self.selection.descend(&meta, top_device));
        if !descend {
            // A mount point: kept, as an empty directory (restic does the same).
            self.record_excluded(path, ExcludeReason::OtherFileSystem);
        }
        match std::fs::read_dir(path) {
            Ok(rd) if descend => {
                for e in rd {
                    match e {
                        Ok(e) => entries.push((e.file_name().as_bytes().to_vec(), e)),
                        Err(e) => self.warn(format!("{}: {e}", path.display())),
                    }
                }
            }
            Ok(_) => {}
            Err(e) => self.warn(format!("{}: {e}", path.display())),
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        // Subdirectories that were directories in the parent too, in walk order: their
        // parent trees load on reader threads, up to PARENT_TREES_AHEAD ahead.
        let subdirs: Vec<(usize, BlobId)> = entries
            .iter()
            .enumerate()
            .filter_map(|(i, (name, _))| {
                let id = parent_dir.as_ref()?.subdir(name)?;
                Some((i, id))
            })
            .collect();
        let mut subdirs = subdirs.into_iter();
        let mut loading = std::collections::VecDeque::new();
        let mut nodes = Vec::with_capacity(entries.len());
        for (i, (name, dir_entry)) in entries.into_iter().enumerate() {
            while loading.len() < PARENT_TREES_AHEAD {
                match subdirs.next() {
                    Some((at, id)) => loading.push_back((at, self.prefetch_parent(id))),
                    None => break,
                }
            }
            let sub_parent = match loading.front() {
                Some((at, _)) if *at == i => loading
                    .pop_front()
                    .map_or(ParentSource::None, |(_, source)| source),
                _ => ParentSource::None,
            };
            let child = path.join(OsStr::from_bytes(&name));
            // Relative to the open directory: no path walk per entry.
            let meta = dir_entry.metadata();
            drop(dir_entry);
            if self.excluded(&child, &meta) {
                continue;
            }
            let parent_node = parent_dir.as_ref().and_then(|p| p.node(&name));
            if let Some(n) = self.entry(&child, name, meta, parent_node, sub_parent, tx)? {
                nodes.push(n);
            }
        }
        tx.send(FinishedDir { nodes, state })
            .map_err(|_| Error::Internal("finalizer stopped".into()))
    }

    /// Write trees in post-order as their files complete.
    pub(super) fn finalize(&self, rx: std::sync::mpsc::Receiver<FinishedDir>) -> Result<()> {
        let mut first_error = None;
        for dir in rx {
            if first_error.is_some() {
                continue; // keep draining so the walker never blocks on a full channel
            }
            if let Err(e) = self.finalize_dir(dir) {
                self.abort.store(true, Ordering::Relaxed);
                first_error = Some(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    pub(super) fn finalize_dir(&self, dir: FinishedDir) -> Result<()> {
        let mut tree = Tree::default();
        let mut seen: HashMap<Vec<u8>, ()> = HashMap::new();
        for pending in dir.nodes {
            let node = match pending {
                PendingNode::Ready(n) => n,
                PendingNode::File(mut n, state, path) => match state.wait() {
                    Ok((content, read_size)) => {
                        if let Some(size) = read_size {
                            n.size = size;
                            self.counts
                                .lock()
                                .map_err(|_| Error::Internal("poisoned".into()))?
                                .total_bytes += size;
                        }
                        n.kind = NodeKind::File(content);
                        n
                    }
                    Err(e) => {
                        if self.abort.load(Ordering::Relaxed) {
                            return Err(e);
                        }
                        match e {
                            Error::LocalIo { source, .. } => {
                                self.warn(format!("{}: {source}", path.display()));
                            }
                            e => self.warn(format!("{}: {e}", path.display())),
                        }
                        continue;
                    }
                },
                PendingNode::Dir(mut n, state) => {
                    let id =
                        state.tree.get().copied().ok_or_else(|| {
                            Error::Internal("subtree finished out of order".into())
                        })?;
                    n.kind = NodeKind::Dir(id);
                    n
                }
            };
            if seen.insert(node.name.clone(), ()).is_none() {
                tree.nodes.push(node);
            }
        }
        tree.sort();
        let id = self.saver.save(BlobType::Tree, &tree.encode()?)?;
        self.collect_meta_ids(&tree, id)?;
        let _ = dir.state.tree.set(id);
        Ok(())
    }

    /// In a cold backup, let the saver reuse the data chunks of the parent's version of
    /// a changed file without a lookup (S-7 (a)): chunks the change left alone then
    /// deduplicate as with the index. Chunk lists are read through the parent's
    /// locator; past [`crate::index::MAX_TRUSTED`] ids, or when a list cannot be read,
    /// the rest is stored again.
    fn trust_parent_content(&self, content: &Content) {
        if !index_is_cold(&self.repo) {
            return;
        }
        let ids = if content.level == 0 {
            content.ids.clone()
        } else {
            let mut ids = Vec::new();
            let mut data = crate::restore::DataIds::new(content);
            while let Ok(Some(id)) = self.rt.block_on(data.next(&self.repo)) {
                ids.push(id);
                if ids.len() >= crate::index::MAX_TRUSTED {
                    break;
                }
            }
            ids
        };
        if let Ok(mut index) = self.repo.index().write() {
            index.trust(ids);
        }
    }

    /// Record tree `id` and the chunk lists its files reach, for the locator.
    fn collect_meta_ids(&self, tree: &Tree, id: BlobId) -> Result<()> {
        let poisoned = || Error::Internal("meta id collector poisoned".into());
        let mut meta = self.meta_ids.lock().map_err(|_| poisoned())?;
        meta.push(id);
        for n in &tree.nodes {
            if let NodeKind::File(c) = &n.kind {
                if c.level >= 1 {
                    meta.extend_from_slice(&c.ids);
                }
                if c.level >= 2 {
                    self.deep_contents
                        .lock()
                        .map_err(|_| poisoned())?
                        .push(c.clone());
                }
            }
        }
        Ok(())
    }
}

pub(super) fn node_from_meta(name: Vec<u8>, meta: &std::fs::Metadata, kind: NodeKind) -> Node {
    Node {
        name,
        kind,
        mode: meta.mode(),
        uid: meta.uid(),
        gid: meta.gid(),
        mtime: Timestamp {
            sec: meta.mtime(),
            nsec: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
        },
        ctime: Timestamp {
            sec: meta.ctime(),
            nsec: meta.ctime_nsec().clamp(0, 999_999_999) as u32,
        },
        inode: meta.ino(),
        device: meta.dev(),
        size: meta.size(),
        extensions: Vec::new(),
    }
}
