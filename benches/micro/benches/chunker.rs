//! Chunker throughput: `Chunker` over an in-memory input with the DEFAULT (file trees)
//! and SMALL (database pages) parameters, on incompressible and on text-like data, and
//! the fixed cost of one small file.

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dprepo_chunker::{Chunker, ChunkerParams};
use std::hint::black_box;
use std::time::Duration;

/// 32 DEFAULT average chunks, 1024 SMALL ones.
const INPUT_LEN: usize = 16 << 20;
/// A typical small file: below every minimum chunk size, so one chunk.
const SMALL_FILE_LEN: usize = 4 << 10;

fn chunk_all(data: &[u8], params: ChunkerParams) -> usize {
    let mut total = 0;
    for chunk in Chunker::new(data, params).expect("valid params") {
        total += chunk.expect("in-memory read").len();
    }
    assert_eq!(total, data.len());
    total
}

fn chunker(c: &mut Criterion) {
    let inputs = [
        ("random", common::random_bytes(INPUT_LEN, 1)),
        ("text", common::text_bytes(INPUT_LEN, 2)),
    ];
    let params = [
        ("DEFAULT", ChunkerParams::DEFAULT),
        ("SMALL", ChunkerParams::SMALL),
    ];
    let mut group = c.benchmark_group("chunker");
    group.throughput(Throughput::Bytes(INPUT_LEN as u64));
    for (params_name, params) in params {
        for (data_name, data) in &inputs {
            group.bench_with_input(BenchmarkId::new(params_name, data_name), data, |b, data| {
                b.iter(|| chunk_all(black_box(data), params))
            });
        }
    }
    // Per-input cost: a tree of small files pays this once per file.
    let small = &inputs[0].1[..SMALL_FILE_LEN];
    group.throughput(Throughput::Elements(1));
    for (params_name, params) in params {
        group.bench_function(BenchmarkId::new(params_name, "one 4 KiB file"), |b| {
            b.iter(|| chunk_all(black_box(small), params))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    targets = chunker
}
criterion_main!(benches);
