//! Index lookups at repository scale: 1M blobs (512 GiB of DEFAULT chunks), hits and
//! misses, plus loading the index from decoded index files.
//!
//! Every implementation is benchmarked through [`IndexUnderTest`] on the same fixture.
//! To compare another index (an on-disk cache, say), implement the trait for it and add
//! one `bench_index::<YourIndex>(c, &fixture)` line to `index`.

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dprepo_repo_format::blob::BlobType;
use dprepo_repo_format::index::{BlobLocation, Index, IndexFile, IndexPack};
use dprepo_repo_format::index_cache::IndexCache;
use dprepo_repo_format::pack::{PackEntry, PackKind};
use dprepo_repo_format::BlobId;
use std::hint::black_box;
use std::time::Duration;

const BLOBS: usize = 1_000_000;
/// 16 MiB packs of 512 KiB chunks.
const BLOBS_PER_PACK: usize = 32;
/// Index files list at most 64 packs.
const PACKS_PER_FILE: usize = 64;
/// Lookups per iteration: enough distinct ids that caches do not hold them all.
const QUERIES: usize = 100_000;

/// What a backup (`contains`: is this chunk new?) and a restore (`get`: where is it?)
/// ask of an index.
trait IndexUnderTest: Sized {
    /// Name in the benchmark id.
    const NAME: &'static str;
    /// Load every pack of `files` (as opening a repository does).
    fn load(files: &[IndexFile]) -> Self;
    fn contains(&self, id: &BlobId) -> bool;
    fn get(&self, id: &BlobId) -> Option<BlobLocation>;
}

impl IndexUnderTest for Index {
    const NAME: &'static str = "in-memory";

    fn load(files: &[IndexFile]) -> Self {
        let mut index = Index::new();
        for file in files {
            index.add_file(file).expect("in-memory add");
        }
        index
    }

    fn contains(&self, id: &BlobId) -> bool {
        Index::contains(self, id)
    }

    fn get(&self, id: &BlobId) -> Option<BlobLocation> {
        Index::get(self, id)
    }
}

/// The on-disk RocksDB index cache the command line uses.
struct OnDisk {
    index: Index,
    _dir: tempfile::TempDir,
}

impl IndexUnderTest for OnDisk {
    const NAME: &'static str = "rocksdb-cache";

    fn load(files: &[IndexFile]) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let cache = IndexCache::temporary_in(dir.path(), "bench").expect("open cache");
        let mut index = Index::on_disk(cache);
        for (n, file) in files.iter().enumerate() {
            index
                .add_named_file(Some(&format!("index/{n}")), file)
                .expect("cache add");
        }
        OnDisk { index, _dir: dir }
    }

    fn contains(&self, id: &BlobId) -> bool {
        self.index.contains(id)
    }

    fn get(&self, id: &BlobId) -> Option<BlobLocation> {
        self.index.get(id)
    }
}

struct Fixture {
    files: Vec<IndexFile>,
    /// Ids in the index, in random order.
    hits: Vec<BlobId>,
    /// Ids not in the index.
    misses: Vec<BlobId>,
}

fn fixture() -> Fixture {
    let mut rng = common::Rng::new(10);
    let mut hits = Vec::with_capacity(QUERIES);
    let packs: Vec<IndexPack> = (0..BLOBS / BLOBS_PER_PACK)
        .map(|_| {
            let id = rng.id();
            let entries = (0..BLOBS_PER_PACK as u32)
                .map(|i| {
                    let entry = PackEntry {
                        blob_type: BlobType::Data,
                        id: rng.id(),
                        offset: i << 19,
                        stored_len: 1 << 19,
                        raw_len: 1 << 19,
                        base: None,
                    };
                    // Every tenth blob, spread over the whole index.
                    if rng.below(10) == 0 && hits.len() < QUERIES {
                        hits.push(entry.id);
                    }
                    entry
                })
                .collect();
            IndexPack {
                id,
                kind: PackKind::Data,
                entries,
            }
        })
        .collect();
    // Shuffle (Fisher-Yates) so consecutive lookups land in unrelated buckets.
    for i in (1..hits.len()).rev() {
        hits.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let misses = (0..hits.len()).map(|_| rng.id()).collect();
    let files = packs
        .chunks(PACKS_PER_FILE)
        .map(|packs| IndexFile {
            obsoletes: Vec::new(),
            packs: packs.to_vec(),
        })
        .collect();
    Fixture {
        files,
        hits,
        misses,
    }
}

fn resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn bench_index<I: IndexUnderTest>(c: &mut Criterion, fixture: &Fixture) {
    let before = resident_kib();
    let index = I::load(&fixture.files);
    if let (Some(before), Some(after)) = (before, resident_kib()) {
        eprintln!(
            "{}: {} blobs, resident memory grew by {} MiB ({} bytes per blob)",
            I::NAME,
            BLOBS,
            after.saturating_sub(before) >> 10,
            after.saturating_sub(before) * 1024 / BLOBS as u64
        );
    }
    assert!(fixture.hits.iter().all(|id| index.contains(id)));
    assert!(!fixture.misses.iter().any(|id| index.contains(id)));

    let mut group = c.benchmark_group(format!("index/{}", I::NAME));
    group.throughput(Throughput::Elements(fixture.hits.len() as u64));
    let param = format!("{}M blobs", BLOBS / 1_000_000);
    group.bench_function(BenchmarkId::new("contains hit", &param), |b| {
        b.iter(|| fixture.hits.iter().filter(|id| index.contains(id)).count())
    });
    group.bench_function(BenchmarkId::new("contains miss", &param), |b| {
        b.iter(|| {
            fixture
                .misses
                .iter()
                .filter(|id| index.contains(id))
                .count()
        })
    });
    group.bench_function(BenchmarkId::new("get hit", &param), |b| {
        b.iter(|| {
            fixture
                .hits
                .iter()
                .filter(|id| black_box(index.get(id)).is_some())
                .count()
        })
    });
    drop(index);
    group.throughput(Throughput::Elements(BLOBS as u64));
    group.sample_size(10);
    group.bench_function(BenchmarkId::new("load", &param), |b| {
        b.iter_with_large_drop(|| I::load(black_box(&fixture.files)))
    });
    group.finish();
}

fn index(c: &mut Criterion) {
    let fixture = fixture();
    bench_index::<Index>(c, &fixture);
    bench_index::<OnDisk>(c, &fixture);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    targets = index
}
criterion_main!(benches);
