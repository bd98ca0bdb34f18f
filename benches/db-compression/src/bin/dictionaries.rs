//! `dictionaries DB1.tar DB2.tar`: cut both streams as `dprepo backup --stdin` does
//! (tar-aware, 8 KiB pages), keep the chunks of the second that the first lacks, and
//! print their zstd size compressed one by one, in 1 MiB blocks, and one by one with a
//! dictionary trained on a sample of them, at several levels.

use dprepo_chunker::{ChunkerParams, StreamChunker, StreamChunking};
use std::collections::HashSet;
use std::time::Instant;

fn chunks(path: &str) -> std::io::Result<Vec<Vec<u8>>> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let chunker = StreamChunker::new(file, ChunkerParams::SMALL, StreamChunking::Auto)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    chunker.collect()
}

fn one_by_one(chunks: &[Vec<u8>], level: i32) -> std::io::Result<usize> {
    let mut c = zstd::bulk::Compressor::new(level)?;
    chunks
        .iter()
        .map(|p| Ok(c.compress(p)?.len().min(p.len())))
        .sum()
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(old), Some(new)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: dictionaries DB1.tar DB2.tar");
        std::process::exit(2);
    };
    let first = chunks(old)?;
    let seen: HashSet<[u8; 32]> = first.iter().map(|c| *blake3::hash(c).as_bytes()).collect();
    let mut fresh = Vec::new();
    let mut ids = HashSet::new();
    for c in chunks(new)? {
        let id = *blake3::hash(&c).as_bytes();
        if !seen.contains(&id) && ids.insert(id) {
            fresh.push(c);
        }
    }
    let raw: usize = fresh.iter().map(Vec::len).sum();
    let pages = fresh.iter().filter(|c| c.len() == 8192).count();
    println!(
        "new chunks {} ({} of them 8 KiB pages), {raw} bytes",
        fresh.len(),
        pages
    );
    let blocks: usize = fresh
        .concat()
        .chunks(1 << 20)
        .map(|b| zstd::bulk::compress(b, 3).map(|c| c.len()))
        .sum::<std::io::Result<usize>>()?;
    println!("level 3 in 1 MiB blocks: {blocks}");
    // Train on up to 8 MiB of chunks spread over the whole set.
    let step = (raw / (8 << 20)).max(1);
    let samples: Vec<&Vec<u8>> = fresh.iter().step_by(step).collect();
    let started = Instant::now();
    let dict = zstd::dict::from_samples(&samples, 112 << 10)?;
    println!(
        "dictionary {} bytes trained in {:?}",
        dict.len(),
        started.elapsed()
    );
    for level in [3, 6, 9] {
        let mut with = zstd::bulk::Compressor::with_dictionary(level, &dict)?;
        let started = Instant::now();
        let sized: usize = fresh
            .iter()
            .map(|p| Ok(with.compress(p)?.len().min(p.len())))
            .sum::<std::io::Result<usize>>()?;
        let took = started.elapsed();
        println!(
            "level {level}: one by one {}, with dictionary {sized} ({took:?})",
            one_by_one(&fresh, level)?
        );
    }
    Ok(())
}
