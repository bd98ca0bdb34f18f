//! The structure check: who uses a blob, and which reachable blobs the index lacks.

use super::*;

/// Where each blob of interest is used: snapshot ids and paths.
pub(super) async fn users_of(
    repo: &Repository,
    snapshots: &[Snapshot],
    wanted: &HashSet<BlobId>,
) -> HashMap<BlobId, (Vec<String>, Vec<String>)> {
    let mut out: HashMap<BlobId, (Vec<String>, Vec<String>)> = HashMap::new();
    if wanted.is_empty() {
        return out;
    }
    for snap in snapshots {
        let mut stack = vec![(snap.manifest.tree, String::new())];
        while let Some((tree_id, path)) = stack.pop() {
            let mut note = |id: &BlobId, p: &str| {
                if wanted.contains(id) {
                    let e = out.entry(*id).or_default();
                    if !e.0.contains(&snap.id.to_hex()) {
                        e.0.push(snap.id.to_hex());
                    }
                    e.1.push(format!(
                        "{}:{}",
                        snap.id.short(),
                        if p.is_empty() { "/" } else { p }
                    ));
                }
            };
            note(&tree_id, &path);
            let Ok(tree) = repo.load_tree(&tree_id).await else {
                continue;
            };
            for node in tree.nodes {
                let p = format!("{path}/{}", String::from_utf8_lossy(&node.name));
                match &node.kind {
                    NodeKind::Dir(id) => stack.push((*id, p)),
                    NodeKind::File(content) => {
                        for id in &content.ids {
                            note(id, &p);
                        }
                        if content.level > 0 {
                            let mut ids = crate::data_ids::DataIds::new(content);
                            while let Ok(Some(id)) = ids.next(repo).await {
                                note(&id, &p);
                            }
                        }
                    }
                    NodeKind::Symlink(_) | NodeKind::Special(_) => {}
                }
            }
        }
    }
    for v in out.values_mut() {
        v.1.sort();
        v.1.dedup();
        v.1.truncate(100);
    }
    out
}

/// Every blob reachable from `snapshots` must be indexed, and so must the base of every
/// delta among them: the blobs that are not, with what is wrong.
pub(super) async fn walk_snapshots(repo: Repository, snapshots: Vec<Snapshot>) -> Suspects {
    let mut suspect_blobs = Suspects::new();
    let mut seen_trees = HashSet::new();
    let mut references = References::default();
    let mut sizes = crate::file_size::FileSizes::default();
    for snap in &snapshots {
        let mut stack = vec![snap.manifest.tree];
        while let Some(tree_id) = stack.pop() {
            if !seen_trees.insert(tree_id) {
                continue;
            }
            let tree = match repo.load_tree(&tree_id).await {
                Ok(t) => t,
                Err(e) => {
                    suspect_blobs.entry(tree_id).or_insert((
                        ProblemKind::TreeUnreadable,
                        format!("tree {}", tree_id.short()),
                        e.to_string(),
                    ));
                    continue;
                }
            };
            for node in tree.nodes {
                match node.kind {
                    NodeKind::Dir(id) => stack.push(id),
                    NodeKind::File(content) => {
                        sizes.file(&repo, &content, node.size, tree_id).await;
                        check_content(&repo, &content, &mut references, &mut suspect_blobs).await
                    }
                    NodeKind::Symlink(_) | NodeKind::Special(_) => {}
                }
            }
        }
    }
    references.check(&repo, &mut suspect_blobs);
    for (id, problem) in sizes.finish(&repo) {
        suspect_blobs.entry(id).or_insert(problem);
    }
    for id in references.missing {
        suspect_blobs.entry(id).or_insert((
            ProblemKind::BlobMissing,
            format!("blob {}", id.short()),
            "referenced by a snapshot but in no index file".into(),
        ));
    }
    suspect_blobs
}

/// Blobs that snapshots' file contents reference (chunk lists and data), looked up in
/// the index in batches: one read each took a fifth of verify's CPU time (benches/NOTES.md, "Batched index reads").
#[derive(Default)]
pub(super) struct References {
    pending: Vec<BlobId>,
    /// Referenced, in no index file.
    pub(super) missing: HashSet<BlobId>,
}

/// Ids per batched read. A batch blocks the walk's task for about a millisecond.
const REFERENCES_PER_READ: usize = 512;

impl References {
    pub(super) fn add(&mut self, repo: &Repository, id: BlobId, suspect: &mut Suspects) {
        self.pending.push(id);
        if self.pending.len() >= REFERENCES_PER_READ {
            self.check(repo, suspect);
        }
    }

    /// Look the pending ids up: each must be indexed, and so must the base of a delta.
    pub(super) fn check(&mut self, repo: &Repository, suspect: &mut Suspects) {
        let ids = std::mem::take(&mut self.pending);
        let mut deltas = Vec::new();
        for (id, found) in ids.iter().zip(repo.type_and_base_many(&ids)) {
            match found {
                None => {
                    self.missing.insert(*id);
                }
                // A delta is readable only with its base (page_deltas.rs).
                Some((_, Some(base))) => deltas.push((*id, base)),
                Some((_, None)) => {}
            }
        }
        let bases: Vec<BlobId> = deltas.iter().map(|(_, base)| *base).collect();
        for ((id, base), found) in deltas.iter().zip(repo.type_and_base_many(&bases)) {
            // SPEC.md, blob checks: a base is a Data blob stored in full (chains are one
            // step long), and nothing can decode a delta against anything else.
            let (kind, why) = match found {
                None => (ProblemKind::DeltaBaseMissing, "which no index file lists"),
                Some((_, Some(_))) => (
                    ProblemKind::DeltaBaseInvalid,
                    "which is itself a delta (chains are one step long)",
                ),
                Some((BlobType::Data, None)) => continue,
                Some((_, None)) => (ProblemKind::DeltaBaseInvalid, "which is not a Data blob"),
            };
            suspect.entry(*id).or_insert((
                kind,
                format!("data blob {}", id.short()),
                format!("it is stored as a delta against {}, {why}", base.short()),
            ));
        }
    }
}

/// Blobs with a problem: id -> (kind, object, detail).
pub(super) type Suspects = HashMap<BlobId, (ProblemKind, String, String)>;

async fn check_content(
    repo: &Repository,
    content: &Content,
    references: &mut References,
    suspect: &mut Suspects,
) {
    for id in &content.ids {
        references.add(repo, *id, suspect);
    }
    if content.level > 0 {
        let mut ids = crate::data_ids::DataIds::new(content);
        loop {
            match ids.next(repo).await {
                Ok(Some(id)) => references.add(repo, id, suspect),
                Ok(None) => break,
                Err(e) => {
                    if let Some(first) = content.ids.first() {
                        suspect.entry(*first).or_insert((
                            ProblemKind::ChunkListUnreadable,
                            format!("chunk list {}", first.short()),
                            e.to_string(),
                        ));
                    }
                    break;
                }
            }
        }
    }
}
