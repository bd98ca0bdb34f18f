//! Unit tests of the gc module.

use super::reachable::Bloom;
use super::*;

#[test]
fn bloom_filter_has_no_false_negatives_and_few_false_positives() {
    let ids: Vec<BlobId> = (0..10_000u64)
        .map(|i| BlobId(*blake3::hash(&i.to_le_bytes()).as_bytes()))
        .collect();
    let mut bloom = Bloom::new(ids.len());
    for id in &ids[..5000] {
        bloom.insert(id);
    }
    assert!(ids[..5000].iter().all(|id| bloom.may_contain(id)));
    let fp = ids[5000..]
        .iter()
        .filter(|id| bloom.may_contain(id))
        .count();
    assert!(fp < 100, "{fp} false positives out of 5000");
}
