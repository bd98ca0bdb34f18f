use super::*;
use crate::tar::tests::{header, set_checksum};
use crate::xbstream::tests::{eof_record, payload_record};
use crate::Chunker;
use proptest::prelude::*;
use std::path::Path;
use std::process::Command;

/// Deterministic pseudo-random bytes (splitmix64).
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

const P: ChunkerParams = ChunkerParams {
    min_size: 2048,
    avg_size: 8192,
    max_size: 32768,
};

fn stream_chunks(data: &[u8], params: ChunkerParams, mode: StreamChunking) -> Vec<Vec<u8>> {
    StreamChunker::new(data, params, mode)
        .unwrap()
        .collect::<io::Result<_>>()
        .unwrap()
}

/// A source returning at most `step` bytes per read.
struct Trickle<'a>(&'a [u8], usize);
impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.len().min(buf.len()).min(self.1);
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

fn tagged_chunks<R: Read>(
    source: R,
    params: ChunkerParams,
    mode: StreamChunking,
) -> Vec<StreamChunk> {
    let mut chunker = StreamChunker::new(source, params, mode).unwrap();
    std::iter::from_fn(|| chunker.next_tagged())
        .collect::<io::Result<_>>()
        .unwrap()
}

/// Checks the invariants every stream chunking must keep, and returns the chunks.
fn check(data: &[u8], params: ChunkerParams, mode: StreamChunking) -> Vec<Vec<u8>> {
    check_tagged(data, params, mode)
        .into_iter()
        .map(|c| c.data)
        .collect()
}

/// [`check`], returning the chunks with their page positions, and checking these too:
/// the same cuts as the plain iterator, and independent of read sizes.
fn check_tagged(data: &[u8], params: ChunkerParams, mode: StreamChunking) -> Vec<StreamChunk> {
    let chunks = stream_chunks(data, params, mode);
    assert_eq!(chunks.concat(), data, "chunks must reassemble the input");
    for c in &chunks {
        assert!(
            !c.is_empty() && c.len() <= params.max_size as usize,
            "chunk of {} bytes",
            c.len()
        );
    }
    let tagged = tagged_chunks(data, params, mode);
    let tagged_data: Vec<&Vec<u8>> = tagged.iter().map(|c| &c.data).collect();
    let plain: Vec<&Vec<u8>> = chunks.iter().collect();
    assert_eq!(tagged_data, plain, "next_tagged must cut like the iterator");
    let trickled = tagged_chunks(Trickle(data, 1000), params, mode);
    assert_eq!(trickled, tagged, "short reads must not move cuts or tags");
    tagged
}

/// The page positions of `chunks` as (member, page) pairs, skipping untagged chunks.
fn positions(chunks: &[StreamChunk]) -> Vec<(String, u64)> {
    chunks
        .iter()
        .filter_map(|c| c.page.as_ref())
        .map(|p| (String::from_utf8_lossy(&p.member).into_owned(), p.page))
        .collect()
}

/// The page group size of tar members cut with [`P`]: 32 KiB, four pages, so a few
/// pages make whole and short groups.
const G: usize = 32768;

/// (member, group) for the groups of a page-structured `member` of `len` bytes cut
/// with [`P`]: `len / G` rounded up.
fn groups_of(member: &str, len: usize) -> Vec<(String, u64)> {
    (0..len.div_ceil(G) as u64)
        .map(|p| (member.to_owned(), p))
        .collect()
}

#[test]
fn group_size_is_the_largest_that_fits_the_max() {
    assert_eq!(tar_group_size(P.max_size) as usize, G);
    assert_eq!(
        tar_group_size(ChunkerParams::DEFAULT.max_size),
        TAR_GROUP_SIZE
    );
    assert_eq!(tar_group_size(ChunkerParams::SMALL.max_size), 65536);
    for (max, group) in [
        (4096, 8192),
        (8192, 8192),
        (16383, 8192),
        (16384, 16384),
        (100_000, 65536),
        (131_072, 131_072),
        (u32::MAX, 131_072),
    ] {
        assert_eq!(tar_group_size(max), group, "max {max}");
    }
}

/// An in-memory tar: members as (name, data), ustar headers, end-of-archive blocks.
fn build_tar(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in members {
        out.extend_from_slice(&header(name, data.len() as u64, b'0'));
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
    }
    out.resize(out.len() + 2 * BLOCK, 0);
    out
}

/// The long relative path [`real_tar`] stores 3 pages under: over 100 bytes, so GNU
/// tar needs a long-name or pax path header, or for ustar the prefix field (which
/// it can split into, unlike a single long component).
fn real_tar_long_path() -> String {
    format!("{}/{}/rel", "d".repeat(60), "e".repeat(60))
}

/// Real tars made by GNU tar from files of page-structured and other sizes, with a
/// name long enough for a GNU long-name or pax path header ([`real_tar_long_path`]).
fn real_tar(dir: &Path, format: &str, pages: &[u8]) -> Vec<u8> {
    let long = real_tar_long_path();
    std::fs::create_dir_all(dir.join(&long).parent().unwrap()).unwrap();
    std::fs::write(dir.join("PG_VERSION"), b"15\n").unwrap();
    std::fs::write(dir.join("16384"), pages).unwrap();
    std::fs::write(dir.join(&long), &pages[..3 * 8192]).unwrap();
    std::fs::write(dir.join("odd"), &pages[..10_000]).unwrap();
    let out = Command::new("tar")
        .args([
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "-cf",
            "-",
        ])
        .arg(format!("--format={format}"))
        .arg("-C")
        .arg(dir)
        .arg(".")
        .output()
        .expect("GNU tar must be installed to run these tests");
    assert!(
        out.status.success(),
        "tar failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn page_data(seed: u64, pages: usize) -> Vec<u8> {
    random_bytes(seed, pages * PAGE_SIZE as usize)
}

#[test]
fn non_tar_stream_is_cut_like_chunker() {
    for (seed, len) in [
        (1, 0),
        (2, 100),
        (3, 511),
        (4, 512),
        (5, 300_000),
        (6, 2_000_000),
    ] {
        let data = random_bytes(seed, len);
        let expected: Vec<Vec<u8>> = Chunker::new(&data[..], P)
            .unwrap()
            .collect::<io::Result<_>>()
            .unwrap();
        assert_eq!(check(&data, P, StreamChunking::Auto), expected);
        assert_eq!(check(&data, P, StreamChunking::Cdc), expected);
    }
}

#[test]
fn cdc_mode_ignores_tar_structure() {
    let tar = build_tar(&[("base/1/16384", &page_data(1, 20))]);
    let expected: Vec<Vec<u8>> = Chunker::new(&tar[..], P)
        .unwrap()
        .collect::<io::Result<_>>()
        .unwrap();
    let mut chunker = StreamChunker::new(&tar[..], P, StreamChunking::Cdc).unwrap();
    let chunks: Vec<Vec<u8>> = chunker.by_ref().collect::<io::Result<_>>().unwrap();
    assert_eq!(chunks, expected);
    assert!(!chunker.tar_detected());
    let tagged = check_tagged(&tar, P, StreamChunking::Cdc);
    assert!(tagged.iter().all(|c| c.page.is_none()));
}

#[test]
fn page_structured_member_is_cut_into_page_groups() {
    // Five pages: one group of four and a short last group of one.
    let pages = page_data(7, 5);
    let small = random_bytes(8, 3000);
    let tar = build_tar(&[
        ("PG_VERSION", &small),
        ("base/1/16384", &pages),
        ("x", b"y"),
    ]);
    let mut chunker = StreamChunker::new(&tar[..], P, StreamChunking::Auto).unwrap();
    let chunks: Vec<Vec<u8>> = chunker.by_ref().collect::<io::Result<_>>().unwrap();
    assert!(chunker.tar_detected());
    // The small member (header + 3000 bytes + padding) is a content-defined run ending
    // at the next member; then the page member's header, its two groups, the last
    // member (header + one padded byte) and the end-of-archive blocks.
    let h = header("base/1/16384", pages.len() as u64, b'0');
    let at = chunks.iter().position(|c| *c == h).expect("header chunk");
    assert_eq!(chunks[..at].concat(), tar[..BLOCK + 3072]);
    assert_eq!(chunks[at + 1], pages[..G]);
    assert_eq!(chunks[at + 2], pages[G..]);
    assert_eq!(chunks[at + 2].len(), PAGE_SIZE as usize);
    assert_eq!(chunks[at + 3].len(), 2 * BLOCK);
    assert_eq!(chunks[at + 4], vec![0; 2 * BLOCK]);
    assert_eq!(chunks.len(), at + 5);
    check(&tar, P, StreamChunking::Auto);
}

#[test]
fn one_page_change_changes_one_chunk() {
    let before = page_data(9, 64);
    let mut after = before.clone();
    after[37 * 8192 + 100] ^= 0xff;
    let other = random_bytes(10, 100_000);
    let chunk_set = |file: &[u8]| -> std::collections::HashSet<Vec<u8>> {
        let tar = build_tar(&[("a", &other), ("base/5/2619", file), ("b", &other)]);
        check(&tar, P, StreamChunking::Auto).into_iter().collect()
    };
    let (old, new) = (chunk_set(&before), chunk_set(&after));
    let changed: Vec<_> = new.difference(&old).collect();
    assert_eq!(changed.len(), 1);
    // Page 37 is in group 9 (pages 36..40).
    assert_eq!(changed[0], &after[9 * G..10 * G]);
}

#[test]
fn pax_size_override_is_followed() {
    let pages = page_data(11, 3);
    // A pax record counts its own length prefix: "14 size=24576\n" is 14 bytes.
    let records = format!("14 size={}\n", pages.len()).into_bytes();
    assert_eq!(records.len(), 14);
    let mut tar = Vec::new();
    tar.extend_from_slice(&header("././@PaxHeader", records.len() as u64, b'x'));
    tar.extend_from_slice(&records);
    tar.resize(tar.len().div_ceil(BLOCK) * BLOCK, 0);
    // The member's own size field says 0, as for a file too big for ustar.
    let mut h = header("big", 0, b'0');
    set_checksum(&mut h);
    tar.extend_from_slice(&h);
    tar.extend_from_slice(&pages);
    tar.resize(tar.len() + 2 * BLOCK, 0);
    let chunks = check(&tar, P, StreamChunking::Auto);
    assert_eq!(chunks[0].len(), 3 * BLOCK);
    // Three pages: one short group.
    assert_eq!(chunks[1], pages);
}

#[test]
fn page_chunks_are_tagged_with_member_and_page() {
    let a = page_data(20, 3);
    let b = page_data(21, 5);
    let c = page_data(22, 1);
    let small = random_bytes(23, 3000);
    let tar = build_tar(&[
        ("PG_VERSION", &small),
        ("base/1/16384", &a),
        ("base/1/16384_fsm", &b),
        ("odd", &small),
        ("global/pg_control", &c),
        ("empty", b""),
    ]);
    let chunks = check_tagged(&tar, P, StreamChunking::Auto);
    let mut expected = groups_of("base/1/16384", a.len());
    expected.extend(groups_of("base/1/16384_fsm", b.len()));
    expected.extend(groups_of("global/pg_control", c.len()));
    assert_eq!(positions(&chunks), expected);
    // Each tagged chunk is its group, the last of a member shorter; everything else
    // (headers, small members, the end-of-archive blocks) is untagged.
    for chunk in &chunks {
        let Some(at) = &chunk.page else {
            assert!(
                !a.chunks(G)
                    .chain(b.chunks(G))
                    .chain(c.chunks(G))
                    .any(|p| p == chunk.data),
                "a group chunk without a position"
            );
            continue;
        };
        assert_eq!(at.page_size as usize, G);
        let file = match &*at.member {
            b"base/1/16384" => &a,
            b"base/1/16384_fsm" => &b,
            _ => &c,
        };
        let start = at.page as usize * G;
        assert_eq!(chunk.data, file[start..(start + G).min(file.len())]);
    }
    let untagged = chunks.iter().filter(|c| c.page.is_none()).count();
    assert_eq!(untagged, chunks.len() - expected.len());
    // One path allocation per member, shared by its pages.
    let fsm: Vec<&PagePosition> = chunks
        .iter()
        .filter_map(|c| c.page.as_ref())
        .filter(|p| &*p.member == b"base/1/16384_fsm")
        .collect();
    assert!(fsm
        .windows(2)
        .all(|w| Arc::ptr_eq(&w[0].member, &w[1].member)));
}

#[test]
fn non_tar_chunks_are_untagged() {
    // Page-sized random data is not a tar: no positions, whatever the mode.
    let data = page_data(24, 20);
    for mode in [StreamChunking::Auto, StreamChunking::Cdc] {
        let chunks = check_tagged(&data, P, mode);
        assert!(chunks.iter().all(|c| c.page.is_none()));
    }
}

/// `header` with its prefix field set, as POSIX ustar splits long paths.
fn header_with_prefix(prefix: &str, name: &str, size: u64) -> [u8; BLOCK] {
    let mut h = header(name, size, b'0');
    h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
    set_checksum(&mut h);
    h
}

/// An extension header of typeflag `kind` with `data`, padded.
fn extension(kind: u8, data: &[u8]) -> Vec<u8> {
    let mut out = header("././@LongLink", data.len() as u64, kind).to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
    out
}

#[test]
fn member_path_precedence() {
    // Six pages: two groups.
    let pages = page_data(25, 6);
    let member = |extensions: &[Vec<u8>], h: [u8; BLOCK]| -> String {
        let mut tar = extensions.concat();
        tar.extend_from_slice(&h);
        tar.extend_from_slice(&pages);
        tar.resize(tar.len() + 2 * BLOCK, 0);
        let chunks = check_tagged(&tar, P, StreamChunking::Auto);
        let found = positions(&chunks);
        assert_eq!(found.len(), 2, "both groups tagged");
        assert_eq!(found[0].0, found[1].0);
        found[0].0.clone()
    };
    let h = || header_with_prefix("pre/fix", "name", pages.len() as u64);
    let pax = |path: &str| {
        let record = format!(" path={path}\n");
        let len = record.len() + 2; // a two-digit length prefix
        extension(b'x', format!("{len}{record}").as_bytes())
    };
    let long = |name: &[u8]| extension(b'L', name);
    assert_eq!(member(&[], h()), "pre/fix/name");
    assert_eq!(
        member(&[], header("name", pages.len() as u64, b'0')),
        "name"
    );
    assert_eq!(member(&[long(b"gnu/long\0")], h()), "gnu/long");
    assert_eq!(member(&[pax("pax/path")], h()), "pax/path");
    assert_eq!(member(&[pax("pax/path"), long(b"gnu\0")], h()), "pax/path");
    assert_eq!(member(&[long(b"gnu\0"), pax("pax/path")], h()), "pax/path");
    // A long link name (`K`) is the link target, a global pax header (`g`) is not
    // about this member, and a pax header without `path` only sets other fields.
    assert_eq!(member(&[extension(b'K', b"target\0")], h()), "pre/fix/name");
    let global = extension(b'g', b"15 path=global\n");
    assert_eq!(member(&[global], h()), "pre/fix/name");
    let mtime = extension(b'x', b"12 mtime=0\n");
    assert_eq!(member(&[mtime, long(b"gnu\0")], h()), "gnu");
    // An empty long name is no name.
    assert_eq!(member(&[long(b"\0\0")], h()), "pre/fix/name");
}

#[test]
fn truncated_member_pages_stay_tagged() {
    let pages = page_data(26, 9);
    let tar = build_tar(&[("PG_VERSION", b"15\n"), ("base/1/1259", &pages)]);
    // Second member's header starts at 1024; its data at 1536. Cut one group and 2.5
    // pages in.
    let data_at = 3 * BLOCK;
    assert_eq!(tar[data_at..data_at + 8192], pages[..8192]);
    let truncated = &tar[..data_at + G + 2 * 8192 + 4096];
    let chunks = check_tagged(truncated, P, StreamChunking::Auto);
    assert_eq!(positions(&chunks), groups_of("base/1/1259", 2 * G));
    let last = chunks.last().unwrap();
    assert_eq!(last.page.as_ref().map(|p| p.page), Some(1));
    assert_eq!(last.data, pages[G..G + 2 * 8192 + 4096]);
    // Cut inside the member's header: no pages, no positions.
    let chunks = check_tagged(&tar[..data_at - 100], P, StreamChunking::Auto);
    assert!(chunks.iter().all(|c| c.page.is_none()));
    // Cut right after a whole group: that group is the last chunk, tagged.
    let chunks = check_tagged(&tar[..data_at + G], P, StreamChunking::Auto);
    assert_eq!(positions(&chunks), groups_of("base/1/1259", G));
    assert_eq!(chunks.last().unwrap().data, pages[..G]);
}

#[test]
fn real_tars_name_members_like_the_archive() {
    let pages = page_data(27, 4);
    let long = format!("./{}", real_tar_long_path());
    assert!(long.len() > 100);
    let pax_record = format!("path={long}\n");
    // Which long-path form each format must use: GNU long name, pax record, or (for
    // ustar, neither) the prefix field.
    for (format, gnu_long, pax_path) in [
        ("gnu", true, false),
        ("pax", false, true),
        ("ustar", false, false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let tar = real_tar(dir.path(), format, &pages);
        let contains = |s: &[u8]| tar.windows(s.len()).any(|w| w == s);
        assert_eq!(
            contains(b"././@LongLink"),
            gnu_long,
            "{format}: GNU long name"
        );
        assert_eq!(
            contains(pax_record.as_bytes()),
            pax_path,
            "{format}: pax path"
        );
        let chunks = check_tagged(&tar, P, StreamChunking::Auto);
        let mut found = positions(&chunks);
        found.sort();
        // Four pages (one group) and three pages (one short group).
        let mut expected = groups_of("./16384", pages.len());
        expected.extend(groups_of(&long, 3 * 8192));
        expected.sort();
        assert_eq!(found, expected, "{format}");
        for chunk in &chunks {
            if let Some(at) = &chunk.page {
                let file = if *at.member == *b"./16384" {
                    &pages[..]
                } else {
                    &pages[..3 * 8192]
                };
                let start = at.page as usize * G;
                let end = (start + G).min(file.len());
                assert_eq!(chunk.data, file[start..end], "{format}");
            }
        }
    }
}

#[test]
fn real_gnu_and_pax_tars_are_cut_at_pages() {
    let pages = page_data(12, 40);
    for format in ["gnu", "pax"] {
        let dir = tempfile::tempdir().unwrap();
        let tar = real_tar(dir.path(), format, &pages);
        let chunks = check(&tar, P, StreamChunking::Auto);
        for group in pages.chunks(G) {
            assert!(
                chunks.iter().any(|c| c == group),
                "{format}: a page group is not a chunk"
            );
        }
        // The 3-page long-named file is one short group, and so is the 10,000-byte
        // file's first page only if it were page-structured (it is not).
        let found = chunks.iter().filter(|c| **c == pages[..3 * 8192]).count();
        assert_eq!(found, 1, "{format}: long-named member not page-cut");
    }
}

#[test]
fn max_size_below_page_size_falls_back_to_cdc() {
    let params = ChunkerParams::new(1024, 2048, 4096).unwrap();
    let tar = build_tar(&[("f", &page_data(13, 4))]);
    let mut chunker = StreamChunker::new(&tar[..], params, StreamChunking::Auto).unwrap();
    let chunks: Vec<Vec<u8>> = chunker.by_ref().collect::<io::Result<_>>().unwrap();
    assert!(!chunker.tar_detected());
    assert_eq!(chunks.concat(), tar);
    assert!(chunks.iter().all(|c| c.len() <= 4096));
}

#[test]
fn read_error_ends_iteration() {
    struct Failing(usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::other("disk on fire"));
            }
            let n = buf.len().min(self.0);
            buf[..n].fill(1);
            self.0 -= n;
            Ok(n)
        }
    }
    let mut chunker = StreamChunker::new(Failing(100_000), P, StreamChunking::Auto).unwrap();
    let err = chunker.by_ref().find_map(Result::err).unwrap();
    assert_eq!(err.to_string(), "disk on fire");
    assert!(chunker.next().is_none());
}

fn tar_with_members(seed: u64, sizes: &[usize]) -> Vec<u8> {
    let datas: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &s)| random_bytes(seed + i as u64, s))
        .collect();
    let names: Vec<String> = (0..sizes.len()).map(|i| format!("m{i}")).collect();
    let members: Vec<(&str, &[u8])> = names
        .iter()
        .map(String::as_str)
        .zip(datas.iter().map(Vec::as_slice))
        .collect();
    build_tar(&members)
}

fn member_size() -> impl Strategy<Value = usize> {
    prop_oneof![
        0usize..20_000,
        (1usize..12).prop_map(|p| p * 8192),
        Just(70_000)
    ]
}

/// An xbstream of `files`, each sent in records of `record` bytes, then its EOF record.
fn build_xbstream(files: &[(&str, &[u8])], record: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, data) in files {
        for (i, piece) in data.chunks(record.max(1)).enumerate() {
            out.extend(payload_record(path, (i * record) as u64, piece));
        }
        out.extend(eof_record(path));
    }
    out
}

const XB: usize = XBSTREAM_PAGE_SIZE as usize;

#[test]
fn xbstream_payloads_are_cut_on_the_page_grid() {
    let ibd = random_bytes(40, 10 * XB);
    let frm = random_bytes(41, 3000);
    // Records of 4 pages, as mariabackup splits files at its read size.
    let stream = build_xbstream(&[("db/t.ibd", &ibd), ("db/t.frm", &frm)], 4 * XB);
    let mut chunker = StreamChunker::new(&stream[..], P, StreamChunking::Auto).unwrap();
    assert!(chunker.next().is_some());
    assert_eq!(chunker.format(), StreamFormat::Xbstream);
    let chunks = check(&stream, P, StreamChunking::Auto);
    for page in ibd.chunks(XB) {
        assert!(chunks.iter().any(|c| c == page), "a page is not a chunk");
    }
    assert!(chunks.contains(&frm), "a small file is one chunk");
    // 3 records + EOF of the .ibd, 1 + EOF of the .frm: each header its own chunk.
    assert_eq!(chunks.len(), 10 + 1 + 6);
}

#[test]
fn xbstream_records_split_off_the_grid_still_cut_at_pages() {
    // A record boundary in the middle of a page: the pages around it are two short
    // chunks, every other page is whole.
    let ibd = random_bytes(42, 6 * XB);
    let split = 2 * XB + 1000;
    let mut stream = payload_record("t.ibd", 0, &ibd[..split]);
    stream.extend(payload_record("t.ibd", split as u64, &ibd[split..]));
    stream.extend(eof_record("t.ibd"));
    let chunks = check(&stream, P, StreamChunking::Auto);
    for (i, page) in ibd.chunks(XB).enumerate() {
        assert_eq!(chunks.iter().any(|c| c == page), i != 2, "page {i}");
    }
    assert!(chunks.iter().any(|c| *c == ibd[2 * XB..split]));
    assert!(chunks.iter().any(|c| *c == ibd[split..3 * XB]));
    // Whole pages are tagged with their page number in the file; the two pieces of
    // page 2 are not.
    let tagged = check_tagged(&stream, P, StreamChunking::Auto);
    let mut found = Vec::new();
    for c in &tagged {
        if let Some(at) = &c.page {
            assert_eq!(at.page_size, XBSTREAM_PAGE_SIZE);
            let page = at.page as usize;
            assert_eq!(c.data, ibd[page * XB..(page + 1) * XB]);
            found.push((String::from_utf8_lossy(&at.member).into_owned(), at.page));
        }
    }
    let expected: Vec<(String, u64)> = [0, 1, 3, 4, 5]
        .iter()
        .map(|&p| ("t.ibd".to_owned(), p))
        .collect();
    assert_eq!(found, expected);
}

#[test]
fn changed_page_in_xbstream_changes_only_its_chunks() {
    let mut ibd = random_bytes(43, 64 * XB);
    let before = build_xbstream(&[("ibdata1", &ibd)], 16 * XB);
    ibd[37 * XB + 100] ^= 1;
    let after = build_xbstream(&[("ibdata1", &ibd)], 16 * XB);
    let old: std::collections::HashSet<Vec<u8>> = check(&before, P, StreamChunking::Auto)
        .into_iter()
        .collect();
    let new: Vec<Vec<u8>> = check(&after, P, StreamChunking::Auto)
        .into_iter()
        .filter(|c| !old.contains(c))
        .collect();
    // The page, and the header of its record (the header holds the payload's CRC).
    assert_eq!(
        new.len(),
        2,
        "{:?}",
        new.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert_eq!(new.iter().map(Vec::len).max(), Some(XB));
}

#[test]
fn xbstream_is_plain_cdc_where_it_cannot_be_followed() {
    let ibd = random_bytes(44, 5 * XB);
    let stream = build_xbstream(&[("t.ibd", &ibd)], 2 * XB);
    // Cdc mode and max_size below the grid never parse records.
    for (params, mode) in [
        (P, StreamChunking::Cdc),
        (
            ChunkerParams::new(1024, 4096, 8192).unwrap(),
            StreamChunking::Auto,
        ),
    ] {
        let mut chunker = StreamChunker::new(&stream[..], params, mode).unwrap();
        let chunks: Vec<Vec<u8>> = chunker.by_ref().collect::<io::Result<_>>().unwrap();
        assert_eq!(chunker.format(), StreamFormat::Plain);
        assert_eq!(chunks, cdc_chunks(&stream, params));
    }
    // A damaged second record header: records before it are followed, the rest is
    // one run.
    let second = payload_record("t.ibd", 0, &ibd[..2 * XB]).len();
    let mut damaged = stream.clone();
    damaged[second + 9] = b'?';
    let chunks = check(&damaged, P, StreamChunking::Auto);
    let prefix: usize = chunks.iter().take(3).map(Vec::len).sum();
    assert_eq!(prefix, second);
    assert_eq!(chunks[3..], cdc_chunks(&damaged[second..], P)[..]);
}

#[test]
fn real_mbstream_is_cut_at_pages() {
    let dir = tempfile::tempdir().unwrap();
    let ibd = random_bytes(45, 8 * XB);
    std::fs::write(dir.path().join("t.ibd"), &ibd).unwrap();
    std::fs::write(dir.path().join("t.frm"), b"frm").unwrap();
    let out = Command::new("mbstream")
        .current_dir(dir.path())
        .args(["-c", "t.frm", "t.ibd"])
        .output()
        .expect("mbstream (Debian package mariadb-backup) must be installed");
    assert!(out.status.success());
    let chunks = check(&out.stdout, P, StreamChunking::Auto);
    for page in ibd.chunks(XB) {
        assert!(chunks.iter().any(|c| c == page), "a page is not a chunk");
    }
}

#[test]
fn scattered_page_rewrites_in_a_plain_stream_change_few_chunks() {
    // Was: a stream that is neither tar nor xbstream was cut with the repository's
    // stream params (file-tree sized by default, 512 KiB average), so rewriting 0.8%
    // of its 8 KiB pages at scattered places changed most of its chunks.
    let pages = 2000;
    let mut data = random_bytes(46, pages * 8192);
    let before: std::collections::HashSet<Vec<u8>> =
        check(&data, ChunkerParams::DEFAULT, StreamChunking::Auto)
            .into_iter()
            .collect();
    for i in 0..16 {
        let page = (i * 7919 + 13) % pages;
        data[page * 8192..(page + 1) * 8192].copy_from_slice(&random_bytes(1000 + i as u64, 8192));
    }
    let mut chunker =
        StreamChunker::new(&data[..], ChunkerParams::DEFAULT, StreamChunking::Auto).unwrap();
    let after: Vec<Vec<u8>> = chunker.by_ref().collect::<io::Result<_>>().unwrap();
    assert_eq!(chunker.run_params(), ChunkerParams::SMALL);
    let new: usize = after
        .iter()
        .filter(|c| !before.contains(*c))
        .map(Vec::len)
        .sum();
    // 16 of 2000 pages (0.8%); each costs its page and about one to two chunks.
    assert!(new < data.len() / 20, "{new} of {} bytes new", data.len());
    // Cdc mode keeps the given params, and so do compressed streams and pg_dump's
    // custom format, where small chunks deduplicate nothing more.
    let chunker = StreamChunker::new(&data[..], ChunkerParams::DEFAULT, StreamChunking::Cdc);
    assert_eq!(chunker.unwrap().run_params(), ChunkerParams::DEFAULT);
    for magic in [
        &b"PGDMP\x01\x0e"[..],
        &[0x28, 0xb5, 0x2f, 0xfd],
        &[0x1f, 0x8b, 8],
    ] {
        let mut stream = magic.to_vec();
        stream.extend_from_slice(&data[..100_000]);
        let mut chunker =
            StreamChunker::new(&stream[..], ChunkerParams::DEFAULT, StreamChunking::Auto).unwrap();
        let chunks: Vec<Vec<u8>> = chunker.by_ref().collect::<io::Result<_>>().unwrap();
        assert_eq!(chunker.run_params(), ChunkerParams::DEFAULT);
        assert_eq!(chunks, cdc_chunks(&stream, ChunkerParams::DEFAULT));
    }
}

#[test]
fn redis_rdb_streams_are_cut_with_rdb_params() {
    // Was: an RDB file (`redis-cli --rdb - | datasafed push`) was an unrecognised stream
    // cut with SMALL's 16 KiB average; 8 KiB chunks store 41% less of a second dump.
    let mut rdb = b"REDIS0011\xfa\x09redis-ver\x057.2.4".to_vec();
    rdb.extend_from_slice(&random_bytes(47, 300_000));
    for (params, expected) in [
        (ChunkerParams::DEFAULT, RDB_PARAMS),
        (ChunkerParams::SMALL, RDB_PARAMS),
        (
            ChunkerParams::new(1024, 4096, 16384).unwrap(),
            ChunkerParams::new(1024, 4096, 16384).unwrap(),
        ),
    ] {
        let mut chunker = StreamChunker::new(&rdb[..], params, StreamChunking::Auto).unwrap();
        let chunks: Vec<Vec<u8>> = chunker.by_ref().collect::<io::Result<_>>().unwrap();
        assert_eq!(chunker.format(), StreamFormat::Rdb);
        assert_eq!(chunker.run_params(), expected);
        assert_eq!(chunks, cdc_chunks(&rdb, expected));
        assert_eq!(check(&rdb, params, StreamChunking::Auto), chunks);
    }
    // Cdc mode keeps the given params.
    let chunker = StreamChunker::new(&rdb[..], ChunkerParams::DEFAULT, StreamChunking::Cdc);
    assert_eq!(chunker.unwrap().run_params(), ChunkerParams::DEFAULT);
    // Near misses are plain streams: the version must be four ASCII digits.
    for head in [&b"REDIS001x"[..], b"REDIS", b"redis0011", b"REDIS 0011"] {
        let mut stream = head.to_vec();
        stream.extend_from_slice(&rdb[9..]);
        let mut chunker =
            StreamChunker::new(&stream[..], ChunkerParams::DEFAULT, StreamChunking::Auto).unwrap();
        chunker.by_ref().for_each(drop);
        assert_eq!(chunker.format(), StreamFormat::Plain, "{head:?}");
        assert_eq!(chunker.run_params(), ChunkerParams::SMALL);
    }
    assert!(is_rdb(b"REDIS0010\xfa"));
    assert!(!is_rdb(b"REDIS001"));
}

#[test]
fn redis_rdb_member_of_a_tar_is_cut_with_rdb_params() {
    // Was: KubeBlocks' redis addon pushes `tar -cf - ./` of the data directory; the
    // dump.rdb member was cut with the repository's stream params (512 KiB average by
    // default), so a second dump after 1% of the keys changed stored all of it again.
    let mut rdb = b"REDIS0010".to_vec();
    rdb.extend_from_slice(&random_bytes(48, 400_000));
    let before = random_bytes(49, 300_000);
    let after = random_bytes(50, 8192 * 40); // page-structured: cut in page groups
                                             // A page-sized RDB file is still an RDB file, not pages.
    let mut paged_rdb = b"REDIS0012".to_vec();
    paged_rdb.extend_from_slice(&random_bytes(51, 8192 * 30 - 9));
    let tar = build_tar(&[
        ("a.bin", &before),
        ("data/dump.rdb", &rdb),
        ("base/1", &after),
        ("other.rdb", &paged_rdb),
    ]);
    let chunks = check_tagged(&tar, ChunkerParams::DEFAULT, StreamChunking::Auto);
    let data: Vec<Vec<u8>> = chunks.iter().map(|c| c.data.clone()).collect();
    // Member runs: headers, data and padding of each member, cut on their own.
    let member = |start: usize, len: usize| start..start + BLOCK + len.div_ceil(BLOCK) * BLOCK;
    let a = member(0, before.len());
    let r = member(a.end, rdb.len());
    let pages_start = r.end + BLOCK;
    let o = member(pages_start + after.len(), paged_rdb.len());
    let mut expected = cdc_chunks(&tar[a.clone()], ChunkerParams::DEFAULT);
    expected.extend(cdc_chunks(&tar[r.clone()], RDB_PARAMS));
    expected.extend(cdc_chunks(&tar[r.end..pages_start], ChunkerParams::DEFAULT));
    expected.extend(after.chunks(TAR_GROUP_SIZE as usize).map(<[u8]>::to_vec));
    expected.extend(cdc_chunks(&tar[o.clone()], RDB_PARAMS));
    expected.extend(cdc_chunks(&tar[o.end..], ChunkerParams::DEFAULT));
    assert_eq!(data, expected);
    let tagged = chunks.iter().filter(|c| c.page.is_some()).count();
    assert_eq!(tagged, after.len().div_ceil(TAR_GROUP_SIZE as usize));
    // The tar's own params are still what the chunker reports.
    let mut chunker =
        StreamChunker::new(&tar[..], ChunkerParams::DEFAULT, StreamChunking::Auto).unwrap();
    chunker.by_ref().for_each(drop);
    assert_eq!(chunker.format(), StreamFormat::Tar);
    assert_eq!(chunker.run_params(), ChunkerParams::DEFAULT);
    // A key rewritten in place changes about one chunk of the member.
    let mut changed = tar.clone();
    changed[r.start + BLOCK + 200_000..][..100].copy_from_slice(&random_bytes(52, 100));
    let old: std::collections::HashSet<&Vec<u8>> = data.iter().collect();
    let new: usize = stream_chunks(&changed, ChunkerParams::DEFAULT, StreamChunking::Auto)
        .iter()
        .filter(|c| !old.contains(c))
        .map(Vec::len)
        .sum();
    assert!(new <= 2 * RDB_PARAMS.max_size as usize, "{new} bytes new");
}

fn cdc_chunks(data: &[u8], params: ChunkerParams) -> Vec<Vec<u8>> {
    Chunker::new(data, params)
        .unwrap()
        .collect::<io::Result<_>>()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn xbstreams_truncated_or_damaged_reassemble(
        seed: u64,
        sizes in proptest::collection::vec(0usize..70_000, 1..5),
        record in 1usize..40_000,
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..4),
    ) {
        let datas: Vec<Vec<u8>> =
            sizes.iter().enumerate().map(|(i, &s)| random_bytes(seed + i as u64, s)).collect();
        let names: Vec<String> = (0..sizes.len()).map(|i| format!("d/f{i}.ibd")).collect();
        let files: Vec<(&str, &[u8])> =
            names.iter().map(String::as_str).zip(datas.iter().map(Vec::as_slice)).collect();
        let stream = build_xbstream(&files, record);
        check(&stream, P, StreamChunking::Auto);
        check(&stream, ChunkerParams::SMALL, StreamChunking::Auto);
        check(&stream[..cut.index(stream.len() + 1)], P, StreamChunking::Auto);
        let mut damaged = stream.clone();
        for (at, x) in flips {
            let i = at.index(damaged.len());
            damaged[i] ^= x;
        }
        check(&damaged, P, StreamChunking::Auto);
    }


    #[test]
    fn random_bytes_reassemble(seed: u64, len in 0usize..200_000, tar_magic: bool) {
        let mut data = random_bytes(seed, len);
        if tar_magic && data.len() >= BLOCK {
            // A valid-looking first header over random bytes.
            let mut h = header("x", seed % 100_000, b'0');
            set_checksum(&mut h);
            data[..BLOCK].copy_from_slice(&h);
        }
        check(&data, P, StreamChunking::Auto);
    }

    #[test]
    fn tar_pages_are_tagged_in_order(
        seed: u64,
        sizes in proptest::collection::vec(member_size(), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let tar = tar_with_members(seed, &sizes);
        // (member, group) and the group's length: G, the last of a member the rest.
        let expected: Vec<((String, u64), usize)> = sizes
            .iter()
            .enumerate()
            .filter(|(_, &s)| s > 0 && s % 8192 == 0)
            .flat_map(|(i, &s)| {
                groups_of(&format!("m{i}"), s)
                    .into_iter()
                    .map(move |g| { let len = (s - g.1 as usize * G).min(G); (g, len) })
            })
            .collect();
        let expected_positions: Vec<(String, u64)> =
            expected.iter().map(|(g, _)| g.clone()).collect();
        let chunks = check_tagged(&tar, P, StreamChunking::Auto);
        prop_assert_eq!(positions(&chunks), expected_positions.clone());
        let lens: Vec<usize> =
            chunks.iter().filter(|c| c.page.is_some()).map(|c| c.data.len()).collect();
        let expected_lens: Vec<usize> = expected.iter().map(|(_, len)| *len).collect();
        prop_assert_eq!(&lens, &expected_lens);
        prop_assert!(lens.iter().all(|&l| l > 0 && l % 8192 == 0));
        // Truncated: a prefix of the positions; only the last chunk may be shorter
        // than its group.
        let truncated = &tar[..cut.index(tar.len() + 1)];
        let chunks = check_tagged(truncated, P, StreamChunking::Auto);
        let found = positions(&chunks);
        prop_assert_eq!(&found[..], &expected_positions[..found.len()]);
        let tagged: Vec<&StreamChunk> = chunks.iter().filter(|c| c.page.is_some()).collect();
        let short = tagged
            .iter()
            .zip(&expected_lens)
            .filter(|(c, &len)| c.data.len() != len)
            .count();
        let last_short = chunks.last().is_some_and(|c| {
            c.page.is_some() && c.data.len() < expected_lens[found.len() - 1]
        });
        prop_assert_eq!(short, usize::from(last_short));
    }

    /// Rewriting one page of a page-structured member changes exactly one chunk: the
    /// page group holding it (the member's short last group if the page is there),
    /// whatever the member size and the params' group size.
    #[test]
    fn one_page_change_changes_exactly_its_group(
        seed: u64,
        pages in 1usize..48,
        page in any::<prop::sample::Index>(),
        params in prop_oneof![Just(P), Just(ChunkerParams::SMALL), Just(ChunkerParams::DEFAULT)],
    ) {
        let before = page_data(seed, pages);
        let page = page.index(pages);
        let mut after = before.clone();
        after[page * 8192..(page + 1) * 8192].copy_from_slice(&random_bytes(!seed, 8192));
        let other = random_bytes(seed ^ 1, 20_000);
        let chunks = |file: &[u8]| {
            let tar = build_tar(&[("a", &other), ("base/5/2619", file), ("b", &other)]);
            check_tagged(&tar, params, StreamChunking::Auto)
        };
        let (old, new) = (chunks(&before), chunks(&after));
        let old_set: std::collections::HashSet<&Vec<u8>> = old.iter().map(|c| &c.data).collect();
        let changed: Vec<&StreamChunk> = new.iter().filter(|c| !old_set.contains(&c.data)).collect();
        prop_assert_eq!(changed.len(), 1);
        let group = tar_group_size(params.max_size) as usize;
        let start = page / (group / 8192) * group;
        let end = (start + group).min(after.len());
        prop_assert_eq!(&changed[0].data[..], &after[start..end]);
        let at = changed[0].page.as_ref().expect("a group chunk is tagged");
        prop_assert_eq!(at.page as usize, start / group);
        prop_assert_eq!(at.page_size as usize, group);
        prop_assert_eq!(old.len(), new.len());
    }

    #[test]
    fn tars_truncated_or_damaged_reassemble(
        seed: u64,
        sizes in proptest::collection::vec(member_size(), 1..8),
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..4),
    ) {
        let tar = tar_with_members(seed, &sizes);
        check(&tar, P, StreamChunking::Auto);
        check(&tar, ChunkerParams::SMALL, StreamChunking::Auto);
        let truncated = &tar[..cut.index(tar.len() + 1)];
        check(truncated, P, StreamChunking::Auto);
        let mut damaged = tar.clone();
        for (at, x) in flips {
            let i = at.index(damaged.len());
            damaged[i] ^= x;
        }
        check(&damaged, P, StreamChunking::Auto);
    }
}
