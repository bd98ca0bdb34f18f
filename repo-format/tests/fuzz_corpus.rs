//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the entry points
//! of `dprepo_repo_format::fuzzing` as ordinary tests, so CI checks every parser of
//! storage bytes against every seed and every input a fuzzer once found, on stable Rust
//! and without cargo-fuzz. Each file is also run with a few hundred deterministic
//! mutations (bit flips, truncations, insertions, interesting values), a short fuzzing
//! session that needs no instrumentation.
//!
//! A missing or empty corpus directory is a failure, never a silent pass.
//!
//! `generate_seed_corpus` (ignored) rewrites the `seed-*` files from a real repository:
//! `cargo test -p dprepo-repo-format --test fuzz_corpus -- --ignored generate_seed_corpus`.
//! Files not named `seed-*` (inputs found by fuzzers) are kept.

use dprepo_repo_format::backup::{
    backup, BackupOptions, BackupProgress, BackupSource, ParentChoice,
};
use dprepo_repo_format::blob::{
    compress_payload, decode_delta_blob, encode_blob, encode_delta_blob, BlobType, ENCODING_ZSTD,
    ENCODING_ZSTD_DELTA,
};
use dprepo_repo_format::content::Content;
use dprepo_repo_format::crypto::MasterKey;
use dprepo_repo_format::envelope::{open_file, FileType, HEADER_LEN, VERSION_OFFSET};
use dprepo_repo_format::fuzzing::{
    self, create_fuzz_repository, delta_blob_aad, fuzz_delta_base, fuzz_delta_bases, fuzz_keys,
    fuzz_stream_chunker, fuzz_tar_chunker, fuzz_tar_streams, pseudo_random_bytes, FUZZ_PASSWORD,
    FUZZ_TAR_STREAM, MUTATION_LEN, TARGETS,
};
use dprepo_repo_format::index::IndexFile;
use dprepo_repo_format::key::{KdfParams, KeyFile};
use dprepo_repo_format::manifest::{Lease, SessionMarker, Tombstone, TombstonePack};
use dprepo_repo_format::pack::{decode_pack, PackKind, DELTA_FLAG, PACK_HEADER_AAD, TRAILER_LEN};
use dprepo_repo_format::page_deltas::{MemberPages, TarPageMap, EXT_TAR_PAGES, MAX_MEMBER_NAME};
use dprepo_repo_format::storage::{MemoryStorage, Storage};
use dprepo_repo_format::tree::{NodeKind, Tree};
use dprepo_repo_format::{BlobId, InitOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Mutated runs of each corpus file.
const MUTATIONS_PER_FILE: usize = 300;
/// `fuzz_repository` opens and reads a whole repository per input, and its corpus files
/// are short mutation scripts: fewer runs each.
const MUTATIONS_PER_REPOSITORY_FILE: usize = 20;
/// Any single input slower than this is reported as a hang.
const MAX_INPUT_TIME: Duration = Duration::from_secs(5);

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn corpus_root() -> PathBuf {
    fuzz_dir().join("corpus")
}

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_root().join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "fuzz corpus {} is missing ({e}); it is committed with the repository \
             (regenerate seeds with `cargo test -p dprepo-repo-format --test fuzz_corpus \
             -- --ignored generate_seed_corpus`)",
            dir.display()
        )
    });
    let mut files: Vec<(String, Vec<u8>)> = entries
        .map(|e| e.expect("reading the corpus directory").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("reading a corpus file"))
        })
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "fuzz corpus {} is empty: the replay would test nothing",
        dir.display()
    );
    files
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

/// Run one input; on a panic or a hang, fail naming the target, the input and its bytes.
fn run(target: &str, f: fuzzing::FuzzTarget, label: &str, data: &[u8]) {
    let start = Instant::now();
    if std::panic::catch_unwind(|| f(data)).is_err() {
        panic!(
            "{target} panicked on {label} ({} bytes); input as hex: {}",
            data.len(),
            hex(data)
        );
    }
    let took = start.elapsed();
    assert!(
        took < MAX_INPUT_TIME,
        "{target} took {took:?} on {label}; input as hex: {}",
        hex(data)
    );
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// One to four random edits of `data`.
fn mutate(data: &[u8], rng: &mut XorShift) -> Vec<u8> {
    let mut out = data.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 => out.truncate(rng.below(out.len() + 1)),
            2 => {
                let at = rng.below(out.len() + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                out.splice(at..at, bytes);
            }
            3 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = [0, 1, 0x7f, 0x80, 0xff][rng.below(5)];
            }
            4 if out.len() >= 4 => {
                // A little-endian length or count field set to an extreme value.
                let i = rng.below(out.len() - 3);
                let v = [0u32, 1, 0xffff, 0x7fff_ffff, u32::MAX][rng.below(5)];
                out[i..i + 4].copy_from_slice(&v.to_le_bytes());
            }
            5 if !out.is_empty() => {
                let start = rng.below(out.len());
                let end = start + rng.below(out.len() - start + 1).min(64);
                let copy = out[start..end].to_vec();
                let at = rng.below(out.len() + 1);
                out.splice(at..at, copy);
            }
            _ => {}
        }
    }
    out
}

fn seed_of(name: &str) -> u64 {
    // FNV-1a: a stable seed per file, so a failure reproduces.
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }) | 1
}

fn replay(target: &str) {
    let f = TARGETS
        .iter()
        .find(|(n, _)| *n == target)
        .unwrap_or_else(|| panic!("no fuzz entry point named {target}"))
        .1;
    let files = corpus(target);
    let per_file = if target == "fuzz_repository" {
        MUTATIONS_PER_REPOSITORY_FILE
    } else {
        MUTATIONS_PER_FILE
    };
    for (name, data) in &files {
        run(target, f, name, data);
        let mut rng = XorShift(seed_of(name));
        for i in 0..per_file {
            let mutated = mutate(data, &mut rng);
            run(target, f, &format!("{name} mutation {i}"), &mutated);
        }
    }
}

macro_rules! replay_tests {
    ($($target:ident),* $(,)?) => {
        $(
            #[test]
            fn $target() {
                replay(stringify!($target));
            }
        )*

        #[test]
        fn every_target_has_a_corpus_and_a_cargo_fuzz_target() {
            let tested = [$(stringify!($target)),*];
            for (name, _) in TARGETS {
                assert!(tested.contains(name), "{name} has no replay test here");
                let target = fuzz_dir().join(format!("fuzz_targets/{name}.rs"));
                assert!(target.is_file(), "no cargo-fuzz target {}", target.display());
            }
            for entry in std::fs::read_dir(corpus_root()).expect("fuzz/corpus") {
                let name = entry.unwrap().file_name().to_string_lossy().into_owned();
                assert!(
                    TARGETS.iter().any(|(n, _)| *n == name),
                    "fuzz/corpus/{name} belongs to no fuzz target"
                );
            }
        }
    };
}

replay_tests!(
    fuzz_config,
    fuzz_key_file,
    fuzz_pack,
    fuzz_index,
    fuzz_tree,
    fuzz_page_map,
    fuzz_manifest,
    fuzz_chunk_list,
    fuzz_blob,
    fuzz_repository,
    fuzz_stream_formats,
    fuzz_locator,
);

/// The committed locator seeds decode (SPEC.md section 14.1), so the replay reaches the
/// pack records and not only the envelope checks.
#[test]
fn locator_seeds_decode() {
    let keys = fuzz_keys();
    let files = corpus("fuzz_locator");
    let (_, plain) = files
        .iter()
        .find(|(n, _)| n.starts_with("seed-locator-plain-body-"))
        .expect("a plain locator body seed");
    let id = BlobId(plain[..32].try_into().unwrap());
    let body = dprepo_repo_format::locator::Locator::decode_body(plain, &id, "seed").unwrap();
    assert!(!body.packs.is_empty(), "the seed locator names no pack");
    let (_, stored) = files
        .iter()
        .find(|(n, _)| n.starts_with("seed-locator-stored-"))
        .expect("a stored locator seed");
    let again = dprepo_repo_format::locator::Locator::decode(keys, stored, &id).unwrap();
    assert_eq!(again, body);
}

/// The committed seeds reach the delta decoders: a version 2 pack and index file with
/// delta entries, a delta blob that decodes against the fixed base, and trees carrying
/// tar page maps. A regeneration that lost them would leave the replay green but blind.
#[test]
fn corpus_reaches_the_delta_decoders() {
    let keys = fuzz_keys();
    let seeds = |target: &str, prefix: &str| -> Vec<Vec<u8>> {
        corpus(target)
            .into_iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .map(|(_, d)| d)
            .collect()
    };
    let pack_deltas: usize = seeds("fuzz_pack", "seed-data-pack")
        .iter()
        .map(|p| decode_pack(keys, p, "seed").unwrap())
        .map(|entries| entries.iter().filter(|e| e.base.is_some()).count())
        .sum();
    assert!(pack_deltas > 0, "no pack seed holds a delta entry");
    let index_deltas: usize = seeds("fuzz_index", "seed-index-stored")
        .iter()
        .map(|f| IndexFile::decode(keys, f, "seed").unwrap())
        .flat_map(|f| f.packs)
        .map(|p| p.entries.iter().filter(|e| e.base.is_some()).count())
        .sum();
    assert!(index_deltas > 0, "no index seed holds a delta entry");
    let base = fuzz_delta_base();
    let decoded = seeds("fuzz_blob", "seed-delta")
        .iter()
        .filter(|d| d.len() > 37 && d[4] == DELTA_FLAG)
        .filter(|d| {
            let raw_len = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
            let id = BlobId(d[5..37].try_into().unwrap());
            decode_delta_blob(keys, &id, &d[37..], raw_len.into(), base.as_base()).is_ok()
        })
        .count();
    assert!(
        decoded >= 2,
        "{decoded} delta blob seeds decode against the fixed base"
    );
    let maps = seeds("fuzz_tree", "seed-tree")
        .iter()
        .map(|t| Tree::decode(t, "seed").unwrap())
        .filter(|t| {
            t.nodes
                .iter()
                .any(|n| TarPageMap::of_node(n, "seed").is_ok_and(|m| m.is_some()))
        })
        .count();
    assert_eq!(maps, 2, "trees with a tar page map");
}

/// Seed files of one target, keyed by file name.
#[derive(Default)]
struct Seeds(BTreeMap<String, BTreeMap<String, Vec<u8>>>);

impl Seeds {
    fn add(&mut self, target: &str, label: &str, data: Vec<u8>) {
        let name = format!("seed-{label}-{}", &BlobId::of_stored(&data).to_hex()[..16]);
        self.0
            .entry(target.to_string())
            .or_default()
            .insert(name, data);
    }

    /// Replace every `seed-*` file of each target's directory.
    fn write(&self) {
        for (target, files) in &self.0 {
            let dir = corpus_root().join(target);
            std::fs::create_dir_all(&dir).unwrap();
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("seed-")
                {
                    std::fs::remove_file(path).unwrap();
                }
            }
            for (name, data) in files {
                std::fs::write(dir.join(name), data).unwrap();
            }
        }
    }
}

/// The plaintext payload (`encoding || body`) of an enveloped file, and the body.
fn envelope_payload(bytes: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let keys = fuzz_keys();
    let payload = keys
        .open(&bytes[..HEADER_LEN], &bytes[HEADER_LEN..], "seed")
        .expect("seed file decrypts");
    let file_type = match bytes[HEADER_LEN - 2] {
        1 => FileType::Config,
        2 => FileType::Index,
        3 => FileType::Snapshot,
        4 => FileType::Session,
        6 => FileType::Tombstone,
        9 => FileType::Locator,
        _ => FileType::Lease,
    };
    // Whatever version the writer chose (index files with deltas are version 2).
    let (_, body) =
        open_file(keys, bytes, file_type, bytes[VERSION_OFFSET], "seed").expect("seed file opens");
    (payload, body)
}

/// Add an enveloped file three ways: as stored, its payload as stored, and its body as
/// an uncompressed payload (what a fuzzer mutates best).
fn add_envelope(seeds: &mut Seeds, target: &str, label: &str, bytes: Vec<u8>) {
    let (payload, body) = envelope_payload(&bytes);
    seeds.add(target, &format!("{label}-stored"), bytes);
    if payload[0] != 0 {
        seeds.add(target, &format!("{label}-payload"), payload);
    }
    let mut raw = vec![0u8];
    raw.extend_from_slice(&body);
    seeds.add(target, &format!("{label}-body"), raw);
}

fn blob_aad(blob_type: BlobType, id: &BlobId, base: Option<&BlobId>) -> Vec<u8> {
    // SPEC.md, "Blob encoding": "dprepo blob" || type u8 || content id, then the base id
    // for a delta blob.
    if let Some(base) = base {
        return delta_blob_aad(id, base);
    }
    let mut aad = b"dprepo blob".to_vec();
    aad.push(blob_type as u8);
    aad.extend_from_slice(&id.0);
    aad
}

/// An input of `fuzz_blob`; `type_byte` as in a pack header (`DELTA_FLAG` for a delta).
fn blob_input(raw_len: u32, type_byte: u8, id: &BlobId, bytes: &[u8]) -> Vec<u8> {
    let mut out = raw_len.to_le_bytes().to_vec();
    out.push(type_byte);
    out.extend_from_slice(&id.0);
    out.extend_from_slice(bytes);
    out
}

fn write_source_tree(root: &Path) {
    use std::os::unix::ffi::OsStrExt;
    std::fs::write(root.join("a.txt"), b"hello, fuzzer\n").unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
    // Over 64 chunks at the small chunker: its content needs a chunk list.
    std::fs::write(root.join("large.bin"), pseudo_random_bytes(7, 24 << 10)).unwrap();
    std::fs::create_dir(root.join("sub")).unwrap();
    std::fs::write(
        root.join("sub").join("text"),
        b"compressible text ".repeat(200),
    )
    .unwrap();
    std::fs::write(
        root.join(std::ffi::OsStr::from_bytes(b"not-utf8-\xff")),
        b"x",
    )
    .unwrap();
    std::os::unix::fs::symlink("a.txt", root.join("link")).unwrap();
}

/// Regenerate the seed corpus from a real repository: two stream snapshots and one
/// directory snapshot, written by the ordinary backup code under the fuzz master key.
#[test]
#[ignore = "rewrites fuzz/corpus/*/seed-*; run by hand after a format change"]
fn generate_seed_corpus() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut seeds = rt.block_on(seeds_from_repository());
    // Mutation scripts for the whole-repository target: none, then damage to each file
    // of the fuzz repository (first byte, last byte, truncation, deletion, swap).
    let base = fuzzing::fuzz_repository_base();
    seeds.add("fuzz_repository", "pristine", Vec::new());
    for (i, (name, _)) in base.files.iter().enumerate() {
        let i = i as u8;
        let dir = name.split('/').next().unwrap_or_default();
        let label = format!("{dir}{i}");
        let ops: [[u8; MUTATION_LEN]; 5] = [
            [0, i, 0x00, 0x00, 0x01],
            [0, i, 0x00, 0x80, 0x01],
            [1, i, 0x10, 0x80, 0x00],
            [2, i, 0x00, 0x00, 0x00],
            [3, i, 0x00, 0x00, i.wrapping_add(1)],
        ];
        for (op, rec) in ["flip-first", "flip-last", "truncate", "delete", "swap"]
            .iter()
            .zip(ops)
        {
            seeds.add("fuzz_repository", &format!("{label}-{op}"), rec.to_vec());
        }
    }
    seeds.write();
}

async fn seeds_from_repository() -> Seeds {
    let keys = fuzz_keys();
    let storage = MemoryStorage::new();
    let options = InitOptions::default()
        .with_kdf(fuzzing::FUZZ_KDF)
        .with_chunker(fuzz_stream_chunker())
        .with_stream_chunker(fuzz_stream_chunker())
        .with_pack_size(1 << 20);
    let repo = create_fuzz_repository(Arc::new(storage.clone()), &options)
        .await
        .unwrap();
    let time = |s: i64| chrono::DateTime::from_timestamp(1_700_000_000 + s, 0);
    for (i, (name, data)) in fuzzing::fuzz_streams().into_iter().enumerate() {
        let mut o = BackupOptions::default()
            .with_hostname("fuzz-host")
            .with_tags(vec!["seed".into()])
            .with_parent(ParentChoice::None);
        o.time = time(i as i64);
        let source = BackupSource::Stream {
            name,
            reader: Box::new(std::io::Cursor::new(data)),
        };
        backup(&repo, source, o, Arc::new(BackupProgress::default()))
            .await
            .unwrap();
    }
    // The tar stream twice: the second backup stores its changed pages as deltas, in a
    // version 2 pack and index file, and both trees carry a tar page map.
    for (i, data) in fuzz_tar_streams().into_iter().enumerate() {
        let mut o = BackupOptions::default()
            .with_hostname("fuzz-host")
            .with_tags(vec!["seed".into()])
            .with_chunker(fuzz_tar_chunker())
            .with_parent(ParentChoice::Auto);
        o.time = time(2 + i as i64);
        let source = BackupSource::Stream {
            name: FUZZ_TAR_STREAM.into(),
            reader: Box::new(std::io::Cursor::new(data)),
        };
        let outcome = backup(&repo, source, o, Arc::new(BackupProgress::default()))
            .await
            .unwrap();
        let deltas = outcome.snapshot.manifest.summary.deltas_added;
        if i == 0 {
            assert_eq!(
                deltas, 0,
                "the first tar backup has no parent to delta against"
            );
        } else {
            assert!(deltas > 0, "the second tar backup stored no delta");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    write_source_tree(dir.path());
    let mut o = BackupOptions::default().with_hostname("fuzz-host");
    o.time = time(10);
    o.expires = time(1_000_000);
    backup(
        &repo,
        BackupSource::Paths(vec![dir.path().to_path_buf()]),
        o,
        Arc::new(BackupProgress::default()),
    )
    .await
    .unwrap();

    let mut seeds = Seeds::default();
    // Data blobs kept as fuzz_blob seeds: raw, compressed, delta.
    let mut data_blobs = [0usize; 3];
    for name in storage.names() {
        let bytes = storage.get(&name).await.unwrap();
        let dir = name.split('/').next().unwrap_or_default();
        match dir {
            "config" => add_envelope(&mut seeds, "fuzz_config", "config", bytes),
            "keys" => seeds.add("fuzz_key_file", "key", bytes),
            "index" => add_envelope(&mut seeds, "fuzz_index", "index", bytes),
            "snapshots" => add_envelope(&mut seeds, "fuzz_manifest", "snapshot", bytes),
            "locators" => {
                // The body alone as well: decode_body takes its snapshot id from the
                // first 32 bytes, so this seed reaches the pack records.
                let (_, body) = envelope_payload(&bytes);
                seeds.add("fuzz_locator", "locator-plain-body", body.to_vec());
                add_envelope(&mut seeds, "fuzz_locator", "locator", bytes);
            }
            "data" | "meta" => {
                let entries = decode_pack(keys, &bytes, &name).unwrap();
                let header_len = {
                    let t = &bytes[bytes.len() - TRAILER_LEN..];
                    u32::from_le_bytes([t[0], t[1], t[2], t[3]]) as usize
                };
                let area = bytes.len() - TRAILER_LEN - header_len;
                let header = keys
                    .open(PACK_HEADER_AAD, &bytes[area..area + header_len], &name)
                    .unwrap();
                let mut plain_header = (area as u32).to_le_bytes().to_vec();
                plain_header.extend_from_slice(&header);
                seeds.add("fuzz_pack", &format!("{dir}-header"), plain_header);
                seeds.add("fuzz_pack", &format!("{dir}-pack"), bytes.clone());
                for e in entries {
                    let stored = &bytes[e.offset as usize..][..e.stored_len as usize];
                    let aad = blob_aad(e.blob_type, &e.id, e.base.as_ref());
                    let payload = keys.open(&aad, stored, "blob").unwrap();
                    let plain = repo.read_blob(&e.id, e.blob_type).await.unwrap();
                    match e.blob_type {
                        BlobType::Tree => {
                            let tree = Tree::decode(&plain, "seed tree").unwrap();
                            // Inline contents of file nodes also seed the chunk-list parser.
                            for node in &tree.nodes {
                                if let NodeKind::File(c) = &node.kind {
                                    if !c.ids.is_empty() && c.ids.len() <= 4 {
                                        seeds.add("fuzz_chunk_list", "inline", c.encode_list());
                                    }
                                }
                                // The page maps of the tar stream's two snapshots.
                                for ext in &node.extensions {
                                    if ext.tag == EXT_TAR_PAGES {
                                        TarPageMap::decode(&ext.data, "seed map").unwrap();
                                        seeds.add("fuzz_page_map", "tree", ext.data.clone());
                                    }
                                }
                            }
                            seeds.add("fuzz_tree", "tree", plain);
                        }
                        BlobType::ChunkList => {
                            Content::decode_list(&plain, 0, "seed list").unwrap();
                            seeds.add("fuzz_chunk_list", "list", plain);
                        }
                        BlobType::Data => {
                            // A few raw, compressed and delta chunks are enough. Deltas
                            // against the fixed base of fuzz_blob decode there.
                            let kind = if e.base.is_some() {
                                2
                            } else {
                                usize::from(payload[0] != 0)
                            };
                            let kept = &mut data_blobs[kind];
                            *kept += 1;
                            if *kept > 3 {
                                continue;
                            }
                        }
                    }
                    let (raw_len, t) = (e.raw_len, e.type_byte());
                    let label = if e.base.is_some() { "delta-" } else { "" };
                    seeds.add(
                        "fuzz_blob",
                        &format!("{label}stored"),
                        blob_input(raw_len, t, &e.id, stored),
                    );
                    seeds.add(
                        "fuzz_blob",
                        &format!("{label}payload"),
                        blob_input(raw_len, t, &e.id, &payload),
                    );
                }
            }
            _ => {}
        }
    }
    // A zstd payload that expands far beyond its size: the decompressors' bound.
    let zeros = compress_payload(&vec![0u8; 1 << 20], 19);
    seeds.add(
        "fuzz_blob",
        "zstd-zeros",
        blob_input(1 << 20, BlobType::Data as u8, &keys.content_id(&[]), &zeros),
    );
    add_delta_blob_seeds(&mut seeds);
    add_page_map_seeds(&mut seeds);
    add_stream_format_seeds(&mut seeds);
    // The other files of the gc protocol, as a running writer and gc write them.
    let now = time(20).unwrap();
    let marker = SessionMarker {
        hostname: "fuzz-host".into(),
        pid: 4242,
        pid_namespace: None,
        boot_id: None,
        started: now,
        command: "backup".into(),
        heartbeat: now,
        ready: true,
        seen_tombstones: vec!["gc/0123".into()],
        key_generation: None,
    };
    add_envelope(&mut seeds, "fuzz_manifest", "session", marker.encode(keys));
    let tombstone = Tombstone {
        created: now,
        packs: vec![
            TombstonePack {
                id: BlobId([1; 32]),
                kind: PackKind::Data,
            },
            TombstonePack {
                id: BlobId([2; 32]),
                kind: PackKind::Meta,
            },
        ],
    };
    add_envelope(
        &mut seeds,
        "fuzz_manifest",
        "tombstone",
        tombstone.encode(keys),
    );
    let lease = Lease {
        hostname: "fuzz-host".into(),
        pid: 4242,
        pid_namespace: None,
        boot_id: None,
        acquired: now,
        expires: time(320).unwrap(),
        token: "00112233445566778899aabbccddeeff".into(),
        command: "gc".into(),
    };
    add_envelope(&mut seeds, "fuzz_manifest", "lease", lease.encode(keys));
    // A second key with a larger (still cheap) cost and longer names.
    let key = KeyFile::create(
        &MasterKey::from_bytes(fuzzing::FUZZ_MASTER_KEY),
        FUZZ_PASSWORD,
        KdfParams {
            memory_kib: 256,
            iterations: 2,
            parallelism: 2,
        },
        "a-longer-host-name.example.org",
        "backup-operator",
    )
    .unwrap();
    seeds.add("fuzz_key_file", "key", key);

    seeds
}

/// Delta blobs against the fixed bases of `fuzz_blob` (`fuzzing::fuzz_delta_bases`),
/// each as stored bytes and as payload, and the ways they go wrong: another length, id
/// or type byte, a full blob claiming to be a delta, a delta payload claiming to be zstd.
fn add_delta_blob_seeds(seeds: &mut Seeds) {
    let keys = fuzz_keys();
    let [base, dictionary_like] = fuzz_delta_bases();
    let delta = DELTA_FLAG | BlobType::Data as u8;
    let mut add = |label: &str, raw_len: usize, type_byte: u8, id: &BlobId, bytes: &[u8]| {
        let input = blob_input(raw_len as u32, type_byte, id, bytes);
        seeds.add("fuzz_blob", &format!("delta-{label}"), input);
    };
    let mut changed = base.plaintext.clone();
    changed[100..108].copy_from_slice(b"changed!");
    // Against the base that starts like a zstd dictionary (another path of the codec).
    let mut page = dictionary_like.plaintext.clone();
    page[100..108].copy_from_slice(b"changed!");
    let id = keys.content_id(&page);
    let stored = encode_delta_blob(keys, &id, &page, dictionary_like.as_base(), 3).unwrap();
    let payload = keys
        .open(&delta_blob_aad(&id, &dictionary_like.id), &stored, "seed")
        .unwrap();
    add("dictionary-like-stored", page.len(), delta, &id, &stored);
    add("dictionary-like-payload", page.len(), delta, &id, &payload);
    let mut grown = changed.clone();
    grown.extend(pseudo_random_bytes(99, 4096));
    let pages = [
        ("changed", changed.clone()),
        ("grown", grown),
        ("truncated", base.plaintext[..5000].to_vec()),
        ("unrelated", pseudo_random_bytes(98, 8192)),
        ("identical", base.plaintext.clone()),
        ("empty", Vec::new()),
    ];
    for (label, page) in &pages {
        let id = keys.content_id(page);
        let stored = encode_delta_blob(keys, &id, page, base.as_base(), 3).unwrap();
        let payload = keys
            .open(&delta_blob_aad(&id, &base.id), &stored, "seed")
            .unwrap();
        assert_eq!(payload[0], ENCODING_ZSTD_DELTA);
        add(&format!("{label}-stored"), page.len(), delta, &id, &stored);
        add(
            &format!("{label}-payload"),
            page.len(),
            delta,
            &id,
            &payload,
        );
    }
    let id = keys.content_id(&changed);
    let len = changed.len();
    let stored = encode_delta_blob(keys, &id, &changed, base.as_base(), 3).unwrap();
    let payload = keys
        .open(&delta_blob_aad(&id, &base.id), &stored, "seed")
        .unwrap();
    add("short-len", len - 1, delta, &id, &payload);
    add("long-len", len + 1, delta, &id, &payload);
    add("base-id", len, delta, &base.id, &payload);
    add("as-full", len, BlobType::Data as u8, &id, &stored);
    add(
        "tree-flag",
        len,
        DELTA_FLAG | BlobType::Tree as u8,
        &id,
        &payload,
    );
    let mut as_zstd = payload.clone();
    as_zstd[0] = ENCODING_ZSTD;
    add("payload-as-zstd", len, BlobType::Data as u8, &id, &as_zstd);
    let full = encode_blob(keys, BlobType::Data, &id, &changed, 3);
    add("full-stored", len, delta, &id, &full);
    let full_payload = compress_payload(&changed, 3);
    add("full-payload", len, delta, &id, &full_payload);
}

/// `version u8 || page_size u32 || count u32 || member*`, members given as `(shared,
/// suffix, first_chunk, pages)`: maps the encoder would not write.
/// Xbstream records as mariabackup writes them (`P` payloads split at a page multiple,
/// then `E`), a sparse record, and a stream cut inside a header.
fn add_stream_format_seeds(seeds: &mut Seeds) {
    fn record(kind: u8, path: &[u8], payload: Option<(&[u8], u64)>) -> Vec<u8> {
        let mut out = b"XBSTCK01".to_vec();
        out.extend_from_slice(&[0, kind]);
        out.extend_from_slice(&(path.len() as u32).to_le_bytes());
        out.extend_from_slice(path);
        if let Some((data, offset)) = payload {
            out.extend_from_slice(&(data.len() as u64).to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(data);
        }
        out
    }
    let page: Vec<u8> = (0..16384u32).map(|i| (i % 251) as u8).collect();
    let mut stream = record(b'P', b"db/t.ibd", Some((&page, 0)));
    stream.extend(record(b'P', b"db/t.ibd", Some((&page[..5000], 16384))));
    stream.extend(record(b'E', b"db/t.ibd", None));
    stream.extend(record(
        b'P',
        b"xtrabackup_info",
        Some((b"tool_name = mariabackup\n", 0)),
    ));
    stream.extend(record(b'E', b"xtrabackup_info", None));
    // The fuzz entry point also reads its input behind the magic: seed without it too.
    seeds.add("fuzz_stream_formats", "mbstream", stream.clone());
    seeds.add(
        "fuzz_stream_formats",
        "mbstream-no-magic",
        stream[8..].to_vec(),
    );
    seeds.add(
        "fuzz_stream_formats",
        "mbstream-cut",
        stream[..16384 + 30].to_vec(),
    );
    let mut sparse = b"XBSTCK01".to_vec();
    sparse.extend_from_slice(&[0, b'S']);
    sparse.extend_from_slice(&1u32.to_le_bytes());
    sparse.push(b'f');
    sparse.extend_from_slice(&1u32.to_le_bytes());
    sparse.extend_from_slice(&4u64.to_le_bytes());
    sparse.extend_from_slice(&0u64.to_le_bytes());
    sparse.extend_from_slice(&0u32.to_le_bytes());
    sparse.extend_from_slice(&[0, 0, 0, 0, 4, 0, 0, 0, 1, 2, 3, 4]);
    sparse.extend(record(b'E', b"f", None));
    seeds.add("fuzz_stream_formats", "sparse", sparse);
}

fn raw_page_map(
    version: u8,
    page_size: u32,
    count: u32,
    members: &[(u16, &[u8], u64, u32)],
) -> Vec<u8> {
    let mut out = vec![version];
    out.extend_from_slice(&page_size.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    for (shared, suffix, first_chunk, pages) in members {
        out.extend_from_slice(&shared.to_le_bytes());
        out.extend_from_slice(&(suffix.len() as u16).to_le_bytes());
        out.extend_from_slice(suffix);
        out.extend_from_slice(&first_chunk.to_le_bytes());
        out.extend_from_slice(&pages.to_le_bytes());
    }
    out
}

/// Tar page maps at the edges of their validity conditions (SPEC.md section 13.1), valid
/// and not.
fn add_page_map_seeds(seeds: &mut Seeds) {
    let member = |name: &[u8], first_chunk: u64, pages: u32| MemberPages {
        name: name.to_vec(),
        first_page: 0,
        first_chunk,
        pages,
    };
    let map =
        |page_size: u32, members: Vec<MemberPages>| TarPageMap { page_size, members }.encode();
    let longest = b"d/".repeat(MAX_MEMBER_NAME / 2);
    let many = (0..200u32)
        .map(|i| {
            member(
                format!("base/16384/{}", 16384 + i).as_bytes(),
                u64::from(i) * 3,
                2,
            )
        })
        .collect();
    let valid = [
        ("empty", map(8192, Vec::new())),
        ("one-byte-name", map(8192, vec![member(b"a", 0, 1)])),
        ("longest-name", map(8192, vec![member(&longest, 1, 3)])),
        (
            "extremes",
            map(
                u32::MAX,
                vec![member(b"x", u64::MAX, u32::MAX), member(b"xy", 0, 0)],
            ),
        ),
        ("zero-page-size", map(0, vec![member(b"base/1/1", 7, 2)])),
        (
            "same-name-twice",
            map(
                8192,
                vec![member(b"base/5/1", 1, 2), member(b"base/5/1", 4, 1)],
            ),
        ),
        (
            "longest-names-shared",
            map(
                8192,
                vec![
                    member(&longest, 1, 1),
                    member(&[&longest[..4095], b"e"].concat(), 3, 1),
                ],
            ),
        ),
        ("many-members", map(8192, many)),
        // Valid but not what the encoder writes: shares less than it could.
        (
            "shares-less",
            raw_page_map(
                1,
                8192,
                2,
                &[(0, b"base/5/1", 1, 2), (0, b"base/5/2", 4, 1)],
            ),
        ),
    ];
    // Version 2: runs of an xbstream file's 16 KiB pages split over records.
    let runs = TarPageMap {
        page_size: 16384,
        members: vec![
            MemberPages {
                name: b"shop/t.ibd".to_vec(),
                first_page: 0,
                first_chunk: 1,
                pages: 640,
            },
            MemberPages {
                name: b"shop/t.ibd".to_vec(),
                first_page: 640,
                first_chunk: 642,
                pages: 128,
            },
        ],
    };
    let valid = valid.into_iter().chain([("runs-v2", runs.encode())]);
    for (label, data) in valid {
        TarPageMap::decode(&data, "seed map").unwrap();
        seeds.add("fuzz_page_map", label, data);
    }
    let name_4096 = [&longest[..], b"x"].concat();
    let invalid = [
        ("version-0", raw_page_map(0, 8192, 0, &[])),
        ("version-2", raw_page_map(2, 8192, 1, &[(0, b"a", 0, 1)])),
        (
            "shares-too-much",
            raw_page_map(1, 8192, 2, &[(0, b"ab", 0, 1), (3, b"c", 1, 1)]),
        ),
        ("first-shares", raw_page_map(1, 8192, 1, &[(1, b"a", 0, 1)])),
        ("empty-name", raw_page_map(1, 8192, 1, &[(0, b"", 0, 1)])),
        (
            "name-too-long",
            raw_page_map(1, 8192, 1, &[(0, &name_4096, 0, 1)]),
        ),
        (
            "shared-name-too-long",
            raw_page_map(1, 8192, 2, &[(0, &longest, 0, 1), (4096, b"x", 1, 1)]),
        ),
        (
            "count-too-large",
            raw_page_map(1, 8192, 2, &[(0, b"a", 0, 1)]),
        ),
        (
            "count-huge",
            raw_page_map(1, 8192, u32::MAX, &[(0, b"a", 0, 1)]),
        ),
        (
            "trailing-byte",
            [raw_page_map(1, 8192, 1, &[(0, b"a", 0, 1)]), vec![0]].concat(),
        ),
        (
            "truncated",
            raw_page_map(1, 8192, 1, &[(0, b"abc", 0, 1)])[..20].to_vec(),
        ),
    ];
    for (label, data) in invalid {
        assert!(TarPageMap::decode(&data, "seed map").is_err(), "{label}");
        seeds.add("fuzz_page_map", &format!("invalid-{label}"), data);
    }
}
