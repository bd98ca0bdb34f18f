//! The new snapshot's locator (SPEC.md section 14.1): the locations of every tree and
//! chunk list it reaches, written just before its manifest.

use super::*;
use crate::locator::Locator;

/// Chunk lists below the top level of `deep` contents (level 2 and more), read through
/// the index; appended to `out`.
async fn expand_deep_lists(
    repo: &Repository,
    deep: Vec<Content>,
    out: &mut Vec<BlobId>,
) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    // (level of the list, its id): a list of level L ≥ 1 holds lists of level L - 1.
    let mut stack: Vec<(u8, BlobId)> = deep
        .iter()
        .flat_map(|c| c.ids.iter().map(move |id| (c.level - 1, *id)))
        .filter(|(l, _)| *l >= 1)
        .collect();
    while let Some((level, id)) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let body = repo.read_blob(&id, BlobType::ChunkList).await?;
        let list = Content::decode_list(&body, level, &format!("chunk list {}", id.short()))?;
        for child in list.ids {
            out.push(child);
            if level >= 2 {
                stack.push((level - 1, child));
            }
        }
    }
    Ok(())
}

/// The locator of snapshot `snapshot` with root `tree`, whose walk collected `meta_ids`
/// and `deep` contents. `Ok(None)` with a reason when some blob cannot be located: a
/// locator must not be partial, and the next backup then loads the index.
///
/// # Errors
/// Failures reading chunk lists of level 2 and more.
pub(super) async fn build_locator(
    repo: &Repository,
    snapshot: BlobId,
    tree: BlobId,
    mut meta_ids: Vec<BlobId>,
    deep: Vec<Content>,
) -> Result<std::result::Result<Locator, String>> {
    expand_deep_lists(repo, deep, &mut meta_ids).await?;
    meta_ids.sort_unstable();
    meta_ids.dedup();
    let locations = repo.locate_many(&meta_ids);
    let mut located = Vec::with_capacity(meta_ids.len());
    for (id, loc) in meta_ids.into_iter().zip(locations) {
        match loc {
            Some(l) => located.push((id, l)),
            None => {
                return Ok(Err(format!(
                    "tree or chunk list {} is not in the index",
                    id.short()
                )))
            }
        }
    }
    Ok(
        Locator::from_locations(snapshot, tree, chrono::Utc::now().timestamp(), located)
            .map_err(|e| e.to_string()),
    )
}
