//! What reads and writes past the page cache (`O_DIRECT`) share: the alignment they need,
//! and pools of aligned buffers kept for reuse (fresh memory costs a page fault per 4 KiB,
//! on the project machine each of those a trip to the host).

use std::sync::Mutex;

/// What direct I/O aligns memory, file offsets and lengths to: a multiple of the logical
/// block size of 512-byte and 4 KiB devices alike.
pub(crate) const DIRECT_ALIGN: usize = 4096;

/// Bytes of one direct read or write, a multiple of [`DIRECT_ALIGN`].
pub(crate) const DIRECT_PIECE: usize = 1 << 20;

/// Buffers with room for one aligned [`DIRECT_PIECE`] ([`aligned_piece`]), at most `max`
/// of them kept once given back.
pub(crate) struct AlignedBuffers {
    spare: Mutex<Vec<Vec<u8>>>,
    max: usize,
}

impl AlignedBuffers {
    pub(crate) const fn new(max: usize) -> Self {
        AlignedBuffers {
            spare: Mutex::new(Vec::new()),
            max,
        }
    }

    /// A kept buffer, or a new one.
    pub(crate) fn take(&self) -> Vec<u8> {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        // Room for every buffer kept, so that giving one back never allocates.
        spare.reserve(self.max);
        spare
            .pop()
            .unwrap_or_else(|| vec![0; DIRECT_PIECE + DIRECT_ALIGN])
    }

    /// Keep `buf` for a later [`AlignedBuffers::take`], unless `max` are kept already.
    pub(crate) fn give_back(&self, buf: Vec<u8>) {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        if spare.len() < self.max {
            spare.push(buf);
        }
    }
}

/// Where in `buf` (from [`AlignedBuffers::take`]) its aligned [`DIRECT_PIECE`] starts.
/// Were the address not alignable (`align_offset` may say so), the piece starts at 0 and a
/// direct transfer of it fails, which callers answer by going through the page cache.
pub(crate) fn aligned_start(buf: &[u8]) -> usize {
    let start = buf.as_ptr().align_offset(DIRECT_ALIGN);
    if start <= DIRECT_ALIGN && start + DIRECT_PIECE <= buf.len() {
        start
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_buffer_holds_an_aligned_piece() {
        let pool = AlignedBuffers::new(1);
        for _ in 0..3 {
            let buf = pool.take();
            let start = aligned_start(&buf);
            assert_eq!((buf.as_ptr() as usize + start) % DIRECT_ALIGN, 0);
            assert!(start + DIRECT_PIECE <= buf.len());
            pool.give_back(buf);
        }
    }
}
