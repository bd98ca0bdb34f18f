//! Which copy of a blob wins: the one rule for a blob id that several index entries
//! list (the same blob stored twice, in two packs or as a full blob and a delta).
//!
//! SPEC.md section 10: "when an id appears several times the first location seen wins
//! (any is correct: equal ids mean equal plaintext), except that a full entry wins over a
//! delta entry of the same id: a delta that no snapshot reaches may keep its entry after
//! gc collected its base as garbage (section 18), and then only a full copy stored again
//! later decodes." Section 15, S-3: a writer must "never reference a blob ... whose only
//! indexed location is a pack named by one of those tombstones", so for a writer a copy
//! outside those packs wins over one inside first.
//!
//! The rule, as a total order on [`CopyRank`] (smaller wins):
//! 1. a full copy before a delta, always (section 10's reader rule);
//! 2. then a copy outside the excluded packs (those the writer's tombstones name) before
//!    one inside them;
//! 3. then the copy seen first stays (SPEC's "first location seen"; a rebuild of the
//!    index cache may keep another of equal rank, which SPEC allows).
//!
//! Full before delta comes first even for a writer because the index cache is shared:
//! the copy a writer keeps stays in the cache for every later reader, which excludes
//! nothing, and a delta kept over an excluded full copy may be one whose base gc already
//! collected (then only the full copy decodes). A writer that finds only an excluded full
//! copy gets "not usable" (`Index::usable`) and stores the blob again: S-3 holds, at
//! the cost of one blob in this rare case. Being a total order makes the outcome
//! independent of the order index files are read in, which the memory index, the index
//! cache and its rebuild all rely on.
//!
//! Where a copy is chosen: only in the index (`MemoryIndex::add_pack`,
//! `IndexCache::add_file` and its rebuild), so restore, backup's deduplication
//! (`Index::usable`) and verify's snapshot walk all read the copy this rule keeps. The
//! other commands look at every copy instead of choosing one: gc's plan counts every
//! indexed copy of a reachable blob as live, gc's apply deletes a tombstoned pack only
//! when each reachable blob in it has a copy elsewhere that `Index::usable` accepts once
//! the pack is gone (a full copy, or a delta whose base keeps a full copy), verify checks
//! every copy of every pack, and repair rebuilds index files and salvages packs one
//! pack at a time.

/// How good one indexed copy of a blob is; smaller is better ([`replaces`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CopyRank {
    /// A full copy in a pack no tombstone names.
    Full,
    /// A full copy in an excluded pack.
    ExcludedFull,
    /// A delta copy in a pack no tombstone names.
    Delta,
    /// A delta copy in an excluded pack.
    ExcludedDelta,
}

impl CopyRank {
    /// The rank of a copy: whether it is a delta (its entry has a base) and whether its
    /// pack is excluded (named by a gc tombstone the reader saw).
    pub fn of(is_delta: bool, in_excluded_pack: bool) -> Self {
        match (in_excluded_pack, is_delta) {
            (false, false) => CopyRank::Full,
            (false, true) => CopyRank::Delta,
            (true, false) => CopyRank::ExcludedFull,
            (true, true) => CopyRank::ExcludedDelta,
        }
    }

    /// The best rank there is: a copy of this rank is never replaced.
    pub const BEST: CopyRank = CopyRank::Full;
}

/// Whether a copy of rank `new` replaces the kept copy of rank `old`: only a strictly
/// better one does, so among equals the first seen stays.
pub fn replaces(new: CopyRank, old: CopyRank) -> bool {
    new < old
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_before_delta_first_then_outside_excluded_packs() {
        use CopyRank::*;
        assert_eq!(CopyRank::of(false, false), Full);
        assert_eq!(CopyRank::of(true, false), Delta);
        assert_eq!(CopyRank::of(false, true), ExcludedFull);
        assert_eq!(CopyRank::of(true, true), ExcludedDelta);
        assert!(replaces(Full, ExcludedFull) && replaces(ExcludedFull, Delta));
        assert!(replaces(Delta, ExcludedDelta));
        for r in [Full, Delta, ExcludedFull, ExcludedDelta] {
            assert!(!replaces(r, r), "first seen stays among equals");
        }
    }

    /// The kept copy does not depend on the order copies arrive in.
    #[test]
    fn the_winner_is_the_same_in_every_order() {
        use CopyRank::*;
        let all = [ExcludedDelta, Full, ExcludedFull, Delta];
        for start in 0..all.len() {
            for reverse in [false, true] {
                let mut order: Vec<CopyRank> =
                    all.iter().cycle().skip(start).take(4).copied().collect();
                if reverse {
                    order.reverse();
                }
                let mut kept = order[0];
                for r in &order[1..] {
                    if replaces(*r, kept) {
                        kept = *r;
                    }
                }
                assert_eq!(kept, Full, "{order:?}");
            }
        }
    }
}
