//! Measures candidate [`ChunkerParams`] on real data: index entries, deduplication of a
//! second version against a first, and chunking throughput. Results and the commands that
//! produced them are in `benches/NOTES.md` ("Chunk size defaults").
//!
//! ```text
//! measure mutate DIR [--seed N] [--percent P]
//!     Change a copy of a tree in place, deterministically (decisions depend on the seed
//!     and each file's relative path): of P% of the regular files (default 2), half get
//!     1-3 small edits (insert, overwrite, delete or append up to 64 bytes), a quarter are
//!     deleted, and a quarter get a new sibling `NAME.added` of fresh random bytes (as
//!     long as the file, capped at 4 MiB). Edited files are replaced, not written through,
//!     so DIR may be a hard-link copy (`cp -al SRC DIR`, which also keeps directory and
//!     symlink timestamps, so a tar of DIR differs from one of SRC only where files
//!     changed).
//! measure tree V1 V2 [--params MIN:AVG:MAX]...
//!     Chunk every regular file of the trees V1 and V2 on its own (as dprepo backs up
//!     files), sorted by path; symlinks and special files are skipped.
//! measure stream V1 V2 [--params MIN:AVG:MAX]...
//!     Chunk the files V1 and V2 as one stream each (e.g. tar archives).
//!     `--tar auto` cuts them as `dprepo backup --stdin` does by default
//!     (`StreamChunker`, tar-aware and page-aligned); without it, plain `Chunker`.
//! measure speed [--mib N] [--params MIN:AVG:MAX]...
//!     CPU cost alone: chunk N MiB (default 1024) of pseudo-random bytes held in memory,
//!     best of 3 runs; then the fixed cost per input, chunking 20,000 inputs of 4 KiB
//!     each with `Chunker` and with a bare `fastcdc::v2020::StreamCDC`.
//! ```
//!
//! Sizes take a K or M suffix (KiB, MiB). Without `--params` a candidate set from 64 KiB
//! to 2 MiB average is measured; `--preset db` measures candidates for 8 KiB page data.
//!
//! Columns: `chunks` and `unique` count v1's chunks (unique ones are index entries, about
//! 70 bytes each in memory); `v2 new` is the bytes of distinct v2 chunks absent from v1,
//! i.e. what a backup of v2 after v1 stores; `MB/s` is v1 bytes over the time spent in
//! `Chunker::next` (reads from the page cache included, file opening and hashing not).

use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::error::Error;
use std::fs::{self, File};
use std::hash::{Hash, Hasher};
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dprepo_chunker::{Chunker, ChunkerParams, StreamChunker, StreamChunking};

/// Estimated in-memory index cost per unique chunk (id, pack, offset, lengths).
const INDEX_BYTES_PER_ENTRY: u64 = 70;

/// Largest `NAME.added` file written by `mutate`.
const ADDED_FILE_CAP: u64 = 4 << 20;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("mutate") => mutate(&args[1..]),
        Some("tree") => compare(Input::Tree, &args[1..]),
        Some("stream") => compare(Input::Stream, &args[1..]),
        Some("speed") => speed(&args[1..]),
        _ => Err(
            "usage: measure (mutate DIR | tree V1 V2 | stream V1 V2 | speed) [options]; \
                  see the doc comment of chunker/examples/measure.rs"
                .into(),
        ),
    }
}

/// `--name value` pairs, in command-line order.
type Options = Vec<(String, String)>;

/// Splits arguments into positionals and `--name value` options.
fn parse_args(args: &[String]) -> Result<(Vec<String>, Options)> {
    let mut positional = Vec::new();
    let mut options = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if let Some(name) = arg.strip_prefix("--") {
            let value = iter
                .next()
                .ok_or_else(|| format!("--{name} needs a value"))?;
            options.push((name.to_string(), value.clone()));
        } else {
            positional.push(arg.clone());
        }
    }
    Ok((positional, options))
}

fn parse_size(text: &str) -> Result<u32> {
    let (digits, unit) = match text.as_bytes().last() {
        Some(b'K' | b'k') => (&text[..text.len() - 1], 1024),
        Some(b'M' | b'm') => (&text[..text.len() - 1], 1024 * 1024),
        _ => (text, 1),
    };
    let value: u32 = digits.parse()?;
    value
        .checked_mul(unit)
        .ok_or_else(|| format!("size {text} too large").into())
}

fn parse_params(text: &str) -> Result<ChunkerParams> {
    let sizes: Vec<u32> = text.split(':').map(parse_size).collect::<Result<_>>()?;
    match sizes[..] {
        [min, avg, max] => Ok(ChunkerParams::new(min, avg, max)?),
        _ => Err(format!("--params wants MIN:AVG:MAX, got {text}").into()),
    }
}

fn candidates(preset: &str) -> Result<Vec<ChunkerParams>> {
    let list: &[&str] = match preset {
        "files" => &[
            "16K:64K:256K",
            "64K:256K:1M",
            "128K:512K:2M",
            "256K:1M:4M",
            "256K:1M:8M",
            "512K:2M:8M",
            "1M:4M:16M",
        ],
        "db" => &[
            "2K:8K:32K",
            "4K:16K:64K",
            "8K:32K:128K",
            "16K:64K:256K",
            "64K:256K:1M",
            "256K:1M:4M",
        ],
        _ => return Err(format!("unknown preset {preset}, want files or db").into()),
    };
    list.iter().map(|text| parse_params(text)).collect()
}

// ---------------------------------------------------------------------------------------
// mutate

/// splitmix64: a small deterministic generator, so runs are reproducible without deps.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// Stable per-path seed: FNV-1a of the relative path mixed with the run seed.
fn path_seed(seed: u64, rel: &Path) -> u64 {
    let mut hash = 0xCBF2_9CE4_8422_2325_u64 ^ seed;
    for byte in rel.to_string_lossy().bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01B3);
    }
    Rng(hash).next()
}

#[derive(Default)]
struct MutateStats {
    copied: u64,
    modified: u64,
    deleted: u64,
    added: u64,
    added_bytes: u64,
    edits: u64,
}

fn mutate(args: &[String]) -> Result<()> {
    let (positional, options) = parse_args(args)?;
    let [root] = &positional[..] else {
        return Err("usage: measure mutate DIR [--seed N] [--percent P]".into());
    };
    let mut seed = 1_u64;
    let mut percent = 2.0_f64;
    for (name, value) in options {
        match name.as_str() {
            "seed" => seed = value.parse()?,
            "percent" => percent = value.parse()?,
            _ => return Err(format!("unknown option --{name}").into()),
        }
    }
    let root = PathBuf::from(root);
    let mut files = Vec::new();
    walk(&root, &mut files)?;
    // Basis points of files touched; halves and quarters of the range pick the change.
    let touched = (percent * 100.0).round() as u64;
    let mut stats = MutateStats::default();
    for path in &files {
        let mut rng = Rng(path_seed(seed, path.strip_prefix(&root)?));
        let bucket = rng.below(10_000);
        if bucket < touched / 2 {
            let mut data = fs::read(path)?;
            let edits = 1 + rng.below(3);
            for _ in 0..edits {
                edit(&mut data, &mut rng);
            }
            // Replace rather than write through: `path` may be a hard link to v1.
            fs::remove_file(path)?;
            fs::write(path, &data)?;
            stats.modified += 1;
            stats.edits += edits;
        } else if bucket < touched * 3 / 4 {
            fs::remove_file(path)?;
            stats.deleted += 1;
        } else {
            stats.copied += 1;
            if bucket < touched {
                let len = fs::metadata(path)?.len().min(ADDED_FILE_CAP);
                let mut name = path.file_name().ok_or("no file name")?.to_os_string();
                name.push(".added");
                fs::write(path.with_file_name(name), rng.bytes(len as usize))?;
                stats.added += 1;
                stats.added_bytes += len;
            }
        }
    }
    println!(
        "{} files: {} kept, {} modified ({} edits), {} deleted, {} added ({} bytes)",
        files.len(),
        stats.copied,
        stats.modified,
        stats.edits,
        stats.deleted,
        stats.added,
        stats.added_bytes
    );
    Ok(())
}

/// One small edit: insert, overwrite or delete up to 64 bytes somewhere, or append.
fn edit(data: &mut Vec<u8>, rng: &mut Rng) {
    let size = 1 + rng.below(64) as usize;
    let at = rng.below(data.len() as u64 + 1) as usize;
    match rng.below(4) {
        0 => {
            let bytes = rng.bytes(size);
            data.splice(at..at, bytes);
        }
        1 => {
            let end = (at + size).min(data.len());
            let bytes = rng.bytes(end - at);
            data[at..end].copy_from_slice(&bytes);
        }
        2 => {
            let end = (at + size).min(data.len());
            data.drain(at..end);
        }
        _ => data.extend(rng.bytes(size)),
    }
}

/// Regular files under `dir`, sorted by path; symlinks and special files are skipped.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<io::Result<_>>()?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&entry.path(), out)?;
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// tree / stream

#[derive(Clone, Copy)]
enum Input {
    /// Each regular file of a directory tree is chunked on its own.
    Tree,
    /// One file is chunked as a single stream.
    Stream,
}

/// A chunk as the index sees it: a 64-bit content hash (stand-in for the BLAKE3 id) and
/// the length.
type ChunkKey = (u64, u32);

/// One version chunked with one set of params.
struct Pass {
    /// Chunks in order.
    chunks: Vec<ChunkKey>,
    /// Per input file: its length and the hash of its chunk sequence (equal iff the
    /// contents are equal).
    files: Vec<(u64, u64)>,
    bytes: u64,
    chunking_time: Duration,
}

fn sources(input: Input, root: &Path) -> Result<Vec<PathBuf>> {
    match input {
        Input::Stream => Ok(vec![root.to_path_buf()]),
        Input::Tree => {
            let mut files = Vec::new();
            walk(root, &mut files)?;
            Ok(files)
        }
    }
}

fn chunk_all(paths: &[PathBuf], params: ChunkerParams, tar: bool) -> Result<Pass> {
    let mut pass = Pass {
        chunks: Vec::new(),
        files: Vec::with_capacity(paths.len()),
        bytes: 0,
        chunking_time: Duration::ZERO,
    };
    for path in paths {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::PermissionDenied => continue,
            Err(err) => return Err(format!("{}: {err}", path.display()).into()),
        };
        // Unbuffered on purpose: the chunker reads in large blocks itself.
        let mut chunker: Box<dyn Iterator<Item = io::Result<Vec<u8>>>> = if tar {
            Box::new(StreamChunker::new(file, params, StreamChunking::Auto)?)
        } else {
            Box::new(Chunker::new(file, params)?)
        };
        let mut file_hasher = DefaultHasher::new();
        let mut file_bytes = 0;
        loop {
            let started = Instant::now();
            let next = chunker.next();
            pass.chunking_time += started.elapsed();
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|err| format!("{}: {err}", path.display()))?;
            let mut hasher = DefaultHasher::new();
            chunk.hash(&mut hasher);
            let key = (hasher.finish(), chunk.len() as u32);
            key.hash(&mut file_hasher);
            pass.chunks.push(key);
            file_bytes += chunk.len() as u64;
        }
        pass.bytes += file_bytes;
        pass.files.push((file_bytes, file_hasher.finish()));
    }
    Ok(pass)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn compare(input: Input, args: &[String]) -> Result<()> {
    let (positional, options) = parse_args(args)?;
    let [v1, v2] = &positional[..] else {
        return Err("usage: measure tree|stream V1 V2 [--params MIN:AVG:MAX]...".into());
    };
    let mut params = Vec::new();
    let mut preset = "files".to_string();
    let mut tar = false;
    for (name, value) in options {
        match name.as_str() {
            "params" => params.push(parse_params(&value)?),
            "preset" => preset = value,
            "tar" => tar = value == "auto",
            _ => return Err(format!("unknown option --{name}").into()),
        }
    }
    if params.is_empty() {
        params = candidates(&preset)?;
    }
    let v1_paths = sources(input, Path::new(v1))?;
    let v2_paths = sources(input, Path::new(v2))?;
    // Warm the page cache so the first candidate is not charged for disk reads.
    for path in v1_paths.iter().chain(&v2_paths) {
        if let Ok(file) = File::open(path) {
            io::copy(&mut BufReader::new(file), &mut io::sink())?;
        }
    }

    println!(
        "| params (min/avg/max) | v1 chunks | v1 unique | index MiB | v2 new MiB | v2 new % | MB/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut whole_file_line = None;
    for params in params {
        let first = chunk_all(&v1_paths, params, tar)?;
        let second = chunk_all(&v2_paths, params, tar)?;
        let known: HashSet<ChunkKey> = first.chunks.iter().copied().collect();
        let mut stored: HashSet<ChunkKey> = HashSet::new();
        let new_bytes: u64 = second
            .chunks
            .iter()
            .filter(|key| !known.contains(key) && stored.insert(**key))
            .map(|&(_, len)| u64::from(len))
            .sum();
        let throughput = first.bytes as f64 / 1e6 / first.chunking_time.as_secs_f64();
        println!(
            "| {} / {} / {} | {} | {} | {:.1} | {:.1} | {:.2} | {:.0} |",
            human(params.min_size),
            human(params.avg_size),
            human(params.max_size),
            first.chunks.len(),
            known.len(),
            mib(known.len() as u64 * INDEX_BYTES_PER_ENTRY),
            mib(new_bytes),
            100.0 * new_bytes as f64 / second.bytes.max(1) as f64,
            throughput,
        );
        if whole_file_line.is_none() {
            whole_file_line = Some(whole_file_baseline(&first, &second));
        }
    }
    if let (Input::Tree, Some(line)) = (input, whole_file_line) {
        println!("\n{line}");
    }
    Ok(())
}

/// What whole-file deduplication (no chunking) would store for v2, for comparison.
fn whole_file_baseline(first: &Pass, second: &Pass) -> String {
    let known: HashSet<u64> = first.files.iter().map(|&(_, key)| key).collect();
    let mut stored = HashSet::new();
    let mut new_bytes = 0;
    let mut files = 0;
    for &(len, key) in &second.files {
        if !known.contains(&key) && stored.insert(key) {
            new_bytes += len;
            files += 1;
        }
    }
    format!(
        "v1: {} files, {:.1} MiB; v2: {} files, {:.1} MiB; whole-file dedup stores {:.1} MiB \
         ({} new or changed files)",
        first.files.len(),
        mib(first.bytes),
        second.files.len(),
        mib(second.bytes),
        mib(new_bytes),
        files
    )
}

fn human(size: u32) -> String {
    if size.trailing_zeros() >= 20 {
        format!("{}M", size >> 20)
    } else if size.trailing_zeros() >= 10 {
        format!("{}K", size >> 10)
    } else {
        size.to_string()
    }
}

// ---------------------------------------------------------------------------------------
// speed

/// Inputs of this size are one chunk under every candidate: the per-input cost alone.
const SMALL_INPUT_LEN: usize = 4096;
const SMALL_INPUT_COUNT: u32 = 20_000;

fn speed(args: &[String]) -> Result<()> {
    let (positional, options) = parse_args(args)?;
    if !positional.is_empty() {
        return Err("usage: measure speed [--mib N] [--params MIN:AVG:MAX]...".into());
    }
    let mut params = Vec::new();
    let mut size_mib = 1024;
    for (name, value) in options {
        match name.as_str() {
            "params" => params.push(parse_params(&value)?),
            "mib" => size_mib = value.parse()?,
            _ => return Err(format!("unknown option --{name}").into()),
        }
    }
    if params.is_empty() {
        params = candidates("files")?;
        params.extend(candidates("db")?.into_iter().take(2));
    }
    let data = Rng(7).bytes(size_mib << 20);
    let small = &data[..SMALL_INPUT_LEN];
    println!("| params (min/avg/max) | MB/s in memory | µs per 4 KiB input | µs, bare StreamCDC |");
    println!("|---|---:|---:|---:|");
    for params in params {
        let mut best = Duration::MAX;
        for _ in 0..3 {
            let started = Instant::now();
            let mut total = 0;
            for chunk in Chunker::new(&data[..], params)? {
                total += chunk?.len();
            }
            best = best.min(started.elapsed());
            assert_eq!(total, data.len());
        }
        let started = Instant::now();
        for _ in 0..SMALL_INPUT_COUNT {
            for chunk in Chunker::new(small, params)? {
                std::hint::black_box(chunk?);
            }
        }
        let per_input = started.elapsed() / SMALL_INPUT_COUNT;
        let started = Instant::now();
        for _ in 0..SMALL_INPUT_COUNT {
            let stream = fastcdc::v2020::StreamCDC::new(
                small,
                params.min_size as usize,
                params.avg_size as usize,
                params.max_size as usize,
            );
            for chunk in stream {
                std::hint::black_box(chunk?);
            }
        }
        let per_input_bare = started.elapsed() / SMALL_INPUT_COUNT;
        println!(
            "| {} / {} / {} | {:.0} | {:.1} | {:.1} |",
            human(params.min_size),
            human(params.avg_size),
            human(params.max_size),
            data.len() as f64 / 1e6 / best.as_secs_f64(),
            per_input.as_secs_f64() * 1e6,
            per_input_bare.as_secs_f64() * 1e6,
        );
    }
    Ok(())
}
