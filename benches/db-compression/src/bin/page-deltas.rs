//! `page-deltas DB1.tar DB2.tar`: for every 8 KiB page of a page-aligned member of the
//! second tar that differs from the page at the same member and offset in the first,
//! print its zstd size (level 3) alone and as a delta against that old page (the old page
//! as raw-content dictionary, like `zstd --patch-from`).

use std::collections::HashMap;

const PAGE: usize = 8192;

/// Regular members of a ustar/GNU tar by name (GNU long names followed; pax ignored).
fn members(path: &str) -> std::io::Result<HashMap<String, Vec<u8>>> {
    let data = std::fs::read(path)?;
    let mut out = HashMap::new();
    let (mut pos, mut long_name) = (0usize, None::<String>);
    while pos + 512 <= data.len() {
        let h = &data[pos..pos + 512];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let field = |r: std::ops::Range<usize>| {
            let f = &h[r];
            let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
            String::from_utf8_lossy(&f[..end]).into_owned()
        };
        let (name, prefix) = (field(0..100), field(345..500));
        let size = usize::from_str_radix(field(124..136).trim(), 8).unwrap_or(0);
        pos += 512;
        let Some(body) = data.get(pos..pos + size) else {
            break;
        };
        match h[156] {
            b'L' => long_name = Some(String::from_utf8_lossy(body).trim_end_matches('\0').into()),
            b'x' | b'g' => {}
            _ => {
                let full = if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}/{name}")
                };
                out.insert(long_name.take().unwrap_or(full), body.to_vec());
            }
        }
        pos += size.div_ceil(512) * 512;
    }
    Ok(out)
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(old), Some(new)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: page-deltas DB1.tar DB2.tar");
        std::process::exit(2);
    };
    let (before, after) = (members(old)?, members(new)?);
    let (mut changed, mut alone, mut delta, mut without_base) = (0usize, 0usize, 0usize, 0usize);
    let mut sizes = [0usize; 4]; // deltas < 256 B, < 512 B, < 1 KiB, larger
    for (name, body) in &after {
        if body.len() % PAGE != 0 {
            continue;
        }
        let previous = before.get(name);
        for (i, page) in body.chunks(PAGE).enumerate() {
            let base = previous.and_then(|p| p.get(i * PAGE..(i + 1) * PAGE));
            if base == Some(page) {
                continue;
            }
            changed += 1;
            let full = zstd::bulk::compress(page, 3)?.len().min(PAGE);
            alone += full;
            let Some(base) = base else {
                without_base += 1;
                delta += full;
                continue;
            };
            let d = zstd::bulk::Compressor::with_dictionary(3, base)?
                .compress(page)?
                .len()
                .min(full);
            delta += d;
            sizes[[256, 512, 1024].iter().position(|&l| d < l).unwrap_or(3)] += 1;
        }
    }
    println!("changed pages {changed} ({without_base} without an old page at the same place)");
    println!(
        "zstd level 3, page alone: {alone} bytes; as delta against the old page: {delta} bytes"
    );
    println!("deltas < 256 B / < 512 B / < 1 KiB / larger: {sizes:?}");
    Ok(())
}
