//! `DataIds`: the data chunk ids of a content in order, loaded depth-first.

use crate::blob::BlobType;
use crate::content::Content;
use crate::error::Result;
use crate::id::BlobId;
use crate::repo::Repository;

/// Yields the data chunk ids of a content in order, loading chunk lists depth-first;
/// memory is bounded by the list depth times the list size.
#[derive(Debug)]
pub struct DataIds {
    stack: Vec<(u8, Vec<BlobId>, usize)>,
}

impl DataIds {
    /// Start at the root of `content`.
    pub fn new(content: &Content) -> Self {
        DataIds {
            stack: vec![(content.level, content.ids.clone(), 0)],
        }
    }

    /// The next data chunk id, or `None` at the end.
    ///
    /// # Errors
    /// Failures reading or decoding chunk lists.
    pub async fn next(&mut self, repo: &Repository) -> Result<Option<BlobId>> {
        while let Some((level, ids, pos)) = self.stack.last_mut() {
            if *pos >= ids.len() {
                self.stack.pop();
                continue;
            }
            let id = ids[*pos];
            *pos += 1;
            if *level == 0 {
                return Ok(Some(id));
            }
            let child = *level - 1;
            let body = repo.read_blob(&id, BlobType::ChunkList).await?;
            let list = Content::decode_list(&body, child, &format!("chunk list {}", id.short()))?;
            self.stack.push((child, list.ids, 0));
        }
        Ok(None)
    }
}
