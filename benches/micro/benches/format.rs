//! The per-chunk work of a backup and its reverse, each step on its own: keyed BLAKE3
//! content ids, blob encode (zstd + XChaCha20-Poly1305) and decode, the AEAD alone,
//! pack assembly and pack header parsing, and index file encode/decode.
//!
//! Sizes follow the chunker: 16 KiB is the SMALL average chunk (database pages),
//! 512 KiB the DEFAULT one (file trees). Packs are the default 16 MiB.

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dprepo_repo_format::blob::{decode_blob, encode_blob, BlobType};
use dprepo_repo_format::config::DEFAULT_PACK_SIZE;
use dprepo_repo_format::index::{IndexFile, IndexPack};
use dprepo_repo_format::pack::{decode_pack, PackBuilder, PackKind};
use std::hint::black_box;
use std::time::Duration;

/// The repository default (`compression_level` in the config).
const LEVEL: i32 = 3;
/// Index files list at most this many packs.
const PACKS_PER_INDEX_FILE: usize = 64;

const SIZES: [(&str, usize); 2] = [("16KiB", 16 << 10), ("512KiB", 512 << 10)];

fn inputs(len: usize) -> [(&'static str, Vec<u8>); 2] {
    [
        ("random", common::random_bytes(len, 3)),
        ("text", common::text_bytes(len, 4)),
    ]
}

fn content_id(c: &mut Criterion) {
    let keys = common::keys();
    let mut group = c.benchmark_group("content_id");
    for (name, len) in [("4KiB", 4 << 10), SIZES[0], SIZES[1]] {
        let data = common::random_bytes(len, 5);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(name, |b| b.iter(|| keys.content_id(black_box(&data))));
    }
    group.finish();
}

fn blob(c: &mut Criterion) {
    let keys = common::keys();
    let mut group = c.benchmark_group("blob");
    for (size_name, len) in SIZES {
        group.throughput(Throughput::Bytes(len as u64));
        for (data_name, data) in inputs(len) {
            let id = keys.content_id(&data);
            let stored = encode_blob(&keys, BlobType::Data, &id, &data, LEVEL);
            eprintln!(
                "blob {size_name} {data_name}: stored {} bytes, {:.1}% of the plaintext",
                stored.len(),
                100.0 * stored.len() as f64 / len as f64
            );
            let param = format!("{size_name}/{data_name}");
            group.bench_function(BenchmarkId::new("encode", &param), |b| {
                b.iter(|| encode_blob(&keys, BlobType::Data, &id, black_box(&data), LEVEL))
            });
            group.bench_function(BenchmarkId::new("decode", &param), |b| {
                b.iter(|| {
                    decode_blob(&keys, BlobType::Data, &id, black_box(&stored), len as u64)
                        .expect("own blob decodes")
                })
            });
        }
        // The AEAD alone, to split encode/decode into compression and encryption.
        let data = common::random_bytes(len, 6);
        let sealed = keys.seal(b"aad", &data);
        group.bench_function(BenchmarkId::new("seal", size_name), |b| {
            b.iter(|| keys.seal(b"aad", black_box(&data)))
        });
        group.bench_function(BenchmarkId::new("open", size_name), |b| {
            b.iter(|| {
                keys.open(b"aad", black_box(&sealed), "bench")
                    .expect("own seal opens")
            })
        });
    }
    group.finish();
}

/// Encoded random blobs of `len` bytes filling one default-size pack.
fn pack_blobs(len: usize) -> Vec<(dprepo_repo_format::BlobId, Vec<u8>)> {
    let keys = common::keys();
    let data = common::random_bytes(len, 7);
    let mut rng = common::Rng::new(8);
    (0..DEFAULT_PACK_SIZE as usize / len)
        .map(|_| {
            // Distinct ids, same bytes: the pack does not look inside its blobs.
            let id = rng.id();
            (id, encode_blob(&keys, BlobType::Data, &id, &data, LEVEL))
        })
        .collect()
}

fn pack(c: &mut Criterion) {
    let keys = common::keys();
    let mut group = c.benchmark_group("pack");
    for (size_name, len) in SIZES {
        let blobs = pack_blobs(len);
        let bytes: usize = blobs.iter().map(|(_, s)| s.len()).sum();
        let param = format!("{} blobs of {size_name}", blobs.len());
        // Copy the blobs in, seal the header, hash the whole pack for its id.
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(BenchmarkId::new("write", &param), |b| {
            b.iter(|| {
                let mut builder = PackBuilder::with_capacity(PackKind::Data, bytes + (1 << 20));
                for (id, stored) in &blobs {
                    builder.add(BlobType::Data, *id, stored, len as u32);
                }
                builder.finish(&keys)
            })
        });
        // What reading a pack's directory costs: trailer, decrypt and parse the header.
        let finished = {
            let mut builder = PackBuilder::new(PackKind::Data);
            for (id, stored) in &blobs {
                builder.add(BlobType::Data, *id, stored, len as u32);
            }
            builder.finish(&keys)
        };
        group.throughput(Throughput::Elements(blobs.len() as u64));
        group.bench_function(BenchmarkId::new("parse header", &param), |b| {
            b.iter(|| decode_pack(&keys, black_box(&finished.bytes), "bench").expect("own pack"))
        });
    }
    group.finish();
}

/// A full index file: 64 packs of `per_pack` blobs.
fn index_file(per_pack: usize) -> IndexFile {
    let mut rng = common::Rng::new(9);
    let packs = (0..PACKS_PER_INDEX_FILE)
        .map(|_| {
            let id = rng.id();
            let mut offset = 0;
            let entries = (0..per_pack)
                .map(|_| {
                    let stored_len = 8000 + rng.below(16_000) as u32;
                    let entry = dprepo_repo_format::pack::PackEntry {
                        blob_type: BlobType::Data,
                        id: rng.id(),
                        offset,
                        stored_len,
                        raw_len: stored_len + rng.below(16_000) as u32,
                        base: None,
                    };
                    offset += stored_len;
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
    IndexFile {
        obsoletes: Vec::new(),
        packs,
    }
}

fn index_file_codec(c: &mut Criterion) {
    let keys = common::keys();
    let mut group = c.benchmark_group("index_file");
    // Blobs per 16 MiB pack with DEFAULT and with SMALL chunks.
    for per_pack in [32, 1024] {
        let file = index_file(per_pack);
        let bytes = file.encode(&keys);
        let entries = PACKS_PER_INDEX_FILE * per_pack;
        let param = format!("{entries} entries");
        group.throughput(Throughput::Elements(entries as u64));
        group.bench_function(BenchmarkId::new("encode", &param), |b| {
            b.iter(|| black_box(&file).encode(&keys))
        });
        group.bench_function(BenchmarkId::new("decode", &param), |b| {
            b.iter(|| IndexFile::decode(&keys, black_box(&bytes), "bench").expect("own file"))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = content_id, blob, pack, index_file_codec
}
criterion_main!(benches);
