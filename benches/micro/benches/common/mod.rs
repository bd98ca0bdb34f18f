//! Deterministic inputs shared by the benchmark targets: the same bytes on every run and
//! machine, so figures from different days compare.
// Each bench target uses a different subset of these helpers.
#![allow(dead_code)]

use dprepo_repo_format::crypto::{Keys, MasterKey};
use dprepo_repo_format::BlobId;

/// SplitMix64: small, fast, and good enough to look like BLAKE3 output to a hash map.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn id(&mut self) -> BlobId {
        let mut id = [0u8; 32];
        for part in id.chunks_exact_mut(8) {
            part.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        BlobId(id)
    }
}

/// Incompressible bytes (what encrypted, compressed or media files look like).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Compressible bytes: lines of words drawn with a skewed frequency from a vocabulary of
/// 1024 made-up words, like source code or logs. zstd level 3 shrinks it to about 40%
/// (the exact ratio is printed by the `format` target).
pub fn text_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let vocabulary: Vec<Vec<u8>> = (0..1024)
        .map(|_| {
            let n = 2 + rng.below(9) as usize;
            (0..n).map(|_| b'a' + rng.below(26) as u8).collect()
        })
        .collect();
    let mut out = Vec::with_capacity(len + 16);
    let mut words_on_line = 0;
    while out.len() < len {
        // The product of two uniform draws favours small indices (Zipf-like).
        let i = (rng.below(1024) * rng.below(1024) / 1024) as usize;
        out.extend_from_slice(&vocabulary[i]);
        words_on_line += 1;
        if words_on_line == 12 {
            out.push(b'\n');
            words_on_line = 0;
        } else {
            out.push(b' ');
        }
    }
    out.truncate(len);
    out
}

/// Repository keys from a fixed master key.
pub fn keys() -> Keys {
    Keys::derive(&MasterKey::from_bytes([42; 32]))
}
