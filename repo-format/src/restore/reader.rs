//! `ContentReader`: a content's plaintext in order, read ahead, held to its recorded size.

use super::*;

/// Reads the plaintext of a content chunk by chunk, with `window` chunks fetched ahead,
/// and never returns more bytes than the size its node records: a forged or damaged
/// chunk list that expands further fails as soon as the index lengths of the chunks
/// fetched pass that size, before those chunks are read (file_size.rs).
#[derive(Debug)]
pub struct ContentReader {
    repo: Repository,
    ids: DataIds,
    inflight: VecDeque<tokio::task::JoinHandle<Result<Vec<u8>>>>,
    window: usize,
    exhausted: bool,
    /// The size the node records.
    recorded: u64,
    /// Plaintext lengths, by the index, of the chunks fetched so far.
    announced: u64,
    /// Bytes returned so far.
    returned: u64,
    /// What errors name.
    object: String,
}

impl ContentReader {
    /// Start reading `content`, whose node records `recorded` bytes.
    pub fn new(repo: &Repository, content: &Content, recorded: u64, window: usize) -> Self {
        ContentReader {
            repo: repo.clone(),
            ids: DataIds::new(content),
            inflight: VecDeque::new(),
            window: window.max(1),
            exhausted: false,
            recorded,
            announced: 0,
            returned: 0,
            object: "file content".into(),
        }
    }

    /// Name the content in errors (e.g. `file /etc/passwd`).
    pub fn named(mut self, object: impl Into<String>) -> Self {
        self.object = object.into();
        self
    }

    /// The next chunk's plaintext, or `None` at the end.
    ///
    /// # Errors
    /// A missing or damaged chunk or chunk list; [`Error::Corrupt`] when the chunks hold
    /// more or fewer bytes than the node records (found before more are returned).
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        while !self.exhausted && self.inflight.len() < self.window {
            match self.ids.next(&self.repo).await? {
                Some(id) => {
                    if let Some(location) = self.repo.locate(&id) {
                        self.announced += u64::from(location.raw_len);
                        if self.announced > self.recorded {
                            return Err(size_mismatch(
                                &self.object,
                                self.recorded,
                                self.announced,
                                true,
                            ));
                        }
                    }
                    let repo = self.repo.clone();
                    self.inflight.push_back(tokio::spawn(async move {
                        repo.read_blob(&id, BlobType::Data).await
                    }));
                }
                None => self.exhausted = true,
            }
        }
        match self.inflight.pop_front() {
            Some(h) => {
                let chunk = h.await.map_err(|e| Error::Internal(e.to_string()))??;
                self.returned += chunk.len() as u64;
                if self.returned > self.recorded {
                    return Err(size_mismatch(
                        &self.object,
                        self.recorded,
                        self.returned,
                        true,
                    ));
                }
                Ok(Some(chunk))
            }
            None if self.returned != self.recorded => Err(size_mismatch(
                &self.object,
                self.recorded,
                self.returned,
                false,
            )),
            None => Ok(None),
        }
    }
}

impl Drop for ContentReader {
    fn drop(&mut self) {
        for h in &self.inflight {
            h.abort();
        }
    }
}
