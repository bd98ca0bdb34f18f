//! Catalogue objects (`catalog/<hex>`, envelope file type 10, SPEC.md section 14.2): what
//! the datasafed interface needs of a set of snapshots (path or directory, codec, time,
//! size, tree), so a process with an empty cache reads a few catalogue objects instead
//! of every snapshot manifest.
//!
//! Derived data: an entry only counts for a snapshot that a listing of `snapshots/`
//! shows, and a snapshot no catalogue object covers is read from its manifest. Objects
//! are named by the storage id of their bytes (L1) and never change.
//!
//! Body: `count u64 || entry*count`; entry = `id[32] || time secs i64 || time nanos u32 ||
//! tree[32] || size u64 || kind u8 (0 other, 1 file, 2 directory) || path (u16 length +
//! UTF-8) || codec (u8 length + UTF-8)`, little endian, nothing after the last entry.

use crate::crypto::Keys;
use crate::envelope::{open_file, seal_file, FileType};
use crate::error::{Error, Result};
use crate::BlobId;

pub use crate::layout::CATALOG_DIR;
/// Version of the catalogue envelope written and read.
pub const CATALOG_VERSION: u8 = 1;
/// Fixed part of an entry: id, secs, nanos, tree, size, kind.
const FIXED_LEN: usize = 32 + 8 + 4 + 32 + 8 + 1;
/// Smallest encoded entry (empty path and codec).
const MIN_ENTRY_LEN: usize = FIXED_LEN + 2 + 1;

/// What kind of datasafed object a snapshot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Not a datasafed snapshot (a `dprepo backup`).
    Other = 0,
    /// A file (`datasafed:path=`).
    File = 1,
    /// A directory marker (`datasafed:dir=`).
    Dir = 2,
}

/// One snapshot as datasafed sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The snapshot id.
    pub id: BlobId,
    /// The manifest's `time`.
    pub time: chrono::DateTime<chrono::Utc>,
    /// The manifest's root tree.
    pub tree: BlobId,
    /// The manifest's `summary.total_bytes` (the file's size).
    pub size: u64,
    /// Which datasafed tag it carries.
    pub kind: Kind,
    /// The path (files) or directory (markers); empty for other snapshots.
    pub path: String,
    /// The codec tag's value (`none` or an algorithm); empty if absent.
    pub codec: String,
}

/// The body of a catalogue object holding `entries` (paths longer than 65,535 bytes and
/// codecs longer than 255 are cut: no datasafed path or algorithm name is that long).
pub fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + entries.len() * (MIN_ENTRY_LEN + 32));
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for e in entries {
        out.extend_from_slice(&e.id.0);
        out.extend_from_slice(&e.time.timestamp().to_le_bytes());
        out.extend_from_slice(&e.time.timestamp_subsec_nanos().to_le_bytes());
        out.extend_from_slice(&e.tree.0);
        out.extend_from_slice(&e.size.to_le_bytes());
        out.push(e.kind as u8);
        let path = cut(&e.path, u16::MAX as usize);
        out.extend_from_slice(&(path.len() as u16).to_le_bytes());
        out.extend_from_slice(path.as_bytes());
        let codec = cut(&e.codec, u8::MAX as usize);
        out.push(codec.len() as u8);
        out.extend_from_slice(codec.as_bytes());
    }
    out
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut n = s.len().min(max);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    &s[..n]
}

/// One entry of a catalogue body, its path and codec borrowed from the body (a reader
/// that keeps few of 100,000 entries allocates nothing for the others).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRef<'a> {
    /// The snapshot id.
    pub id: BlobId,
    /// The manifest's `time`.
    pub time: chrono::DateTime<chrono::Utc>,
    /// The manifest's root tree.
    pub tree: BlobId,
    /// The manifest's `summary.total_bytes`.
    pub size: u64,
    /// Which datasafed tag it carries.
    pub kind: Kind,
    /// The path (files) or directory (markers); empty for other snapshots.
    pub path: &'a str,
    /// The codec tag's value; empty if absent.
    pub codec: &'a str,
}

impl EntryRef<'_> {
    /// The entry, owning its strings.
    pub fn to_entry(&self) -> Entry {
        Entry {
            id: self.id,
            time: self.time,
            tree: self.tree,
            size: self.size,
            kind: self.kind,
            path: self.path.to_string(),
            codec: self.codec.to_string(),
        }
    }
}

impl Entry {
    /// The entry as borrowed by [`for_each`]'s callback.
    pub fn as_ref(&self) -> EntryRef<'_> {
        EntryRef {
            id: self.id,
            time: self.time,
            tree: self.tree,
            size: self.size,
            kind: self.kind,
            path: &self.path,
            codec: &self.codec,
        }
    }
}

/// Decode every entry of `body` in order, handing each to `f`; returns their number.
fn parse<'a>(body: &'a [u8], object: &str, mut f: impl FnMut(EntryRef<'a>)) -> Result<usize> {
    let bad = |what: &str| Error::corrupt(object, format!("catalogue body: {what}"));
    let mut r = body;
    let mut take = |n: usize| -> Result<&'a [u8]> {
        if r.len() < n {
            return Err(bad("truncated"));
        }
        let (a, b) = r.split_at(n);
        r = b;
        Ok(a)
    };
    let count = u64::from_le_bytes(take(8)?.try_into().map_err(|_| bad("count"))?);
    // Every entry takes at least MIN_ENTRY_LEN bytes: the count bounds the work and
    // what callers allocate for it.
    if count > (body.len() / MIN_ENTRY_LEN) as u64 {
        return Err(bad("count larger than the body"));
    }
    for _ in 0..count {
        let fixed = take(FIXED_LEN)?;
        let id = BlobId(fixed[..32].try_into().map_err(|_| bad("id"))?);
        let secs = i64::from_le_bytes(fixed[32..40].try_into().map_err(|_| bad("time"))?);
        let nanos = u32::from_le_bytes(fixed[40..44].try_into().map_err(|_| bad("time"))?);
        let tree = BlobId(fixed[44..76].try_into().map_err(|_| bad("tree"))?);
        let size = u64::from_le_bytes(fixed[76..84].try_into().map_err(|_| bad("size"))?);
        let kind = match fixed[84] {
            0 => Kind::Other,
            1 => Kind::File,
            2 => Kind::Dir,
            k => return Err(bad(&format!("unknown kind {k}"))),
        };
        let n = u16::from_le_bytes(take(2)?.try_into().map_err(|_| bad("path"))?) as usize;
        let path = std::str::from_utf8(take(n)?).map_err(|_| bad("path is not UTF-8"))?;
        let n = take(1)?[0] as usize;
        let codec = std::str::from_utf8(take(n)?).map_err(|_| bad("codec is not UTF-8"))?;
        let time = chrono::DateTime::from_timestamp(secs, nanos).ok_or_else(|| bad("time"))?;
        f(EntryRef {
            id,
            time,
            tree,
            size,
            kind,
            path,
            codec,
        });
    }
    if !r.is_empty() {
        return Err(bad("bytes after the last entry"));
    }
    Ok(count as usize)
}

/// The entries of a catalogue body.
///
/// # Errors
/// [`Error::Corrupt`] naming `object` for anything that does not decode exactly.
pub fn decode(body: &[u8], object: &str) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    parse(body, object, |e| out.push(e.to_entry()))?;
    Ok(out)
}

/// Hand every entry of a catalogue body to `f`, in order, and return their number; a
/// body that does not decode exactly calls `f` for none of them (it is checked first).
///
/// # Errors
/// As [`decode`].
pub fn for_each<'a>(body: &'a [u8], object: &str, f: impl FnMut(EntryRef<'a>)) -> Result<usize> {
    parse(body, object, |_| {})?;
    parse(body, object, f)
}

/// A sealed catalogue object holding `entries`, and its name (`catalog/<storage id>`).
pub fn seal(keys: &Keys, entries: &[Entry]) -> (String, Vec<u8>) {
    let bytes = seal_file(keys, FileType::Catalog, CATALOG_VERSION, &encode(entries));
    let name = crate::layout::catalog(&BlobId::of_stored(&bytes));
    (name, bytes)
}

/// Open the catalogue object `name` (its stored `bytes`).
///
/// # Errors
/// [`Error::Corrupt`] if the name is not the storage id of the bytes, the envelope does
/// not open or the body does not decode; [`Error::UnsupportedVersion`] for a newer
/// version.
pub fn open(keys: &Keys, name: &str, bytes: &[u8]) -> Result<Vec<Entry>> {
    decode(&open_body(keys, name, bytes)?, name)
}

/// The body of the catalogue object `name` (its stored `bytes`), checked against its
/// name and opened, not decoded (see [`for_each`]).
///
/// # Errors
/// As [`open`], except for the body's own decoding.
pub fn open_body(keys: &Keys, name: &str, bytes: &[u8]) -> Result<Vec<u8>> {
    if crate::layout::id_in(CATALOG_DIR, name) != Some(BlobId::of_stored(bytes)) {
        return Err(Error::corrupt(name, "content does not hash to its name"));
    }
    let (_, body) = open_file(keys, bytes, FileType::Catalog, CATALOG_VERSION, name)?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u8) -> Entry {
        Entry {
            id: BlobId([i; 32]),
            time: chrono::DateTime::from_timestamp(1_700_000_000 + i64::from(i), 5).expect("time"),
            tree: BlobId([i ^ 0xff; 32]),
            size: u64::from(i) * 1000,
            kind: [Kind::Other, Kind::File, Kind::Dir][usize::from(i % 3)],
            path: format!("/wal/{i}"),
            codec: if i < 3 { "none".into() } else { String::new() },
        }
    }

    #[test]
    fn catalogue_round_trips_and_any_damage_is_refused() {
        let keys = Keys::derive(&crate::crypto::MasterKey::from_bytes([7; 32]));
        let entries: Vec<Entry> = (0..5).map(entry).collect();
        let (name, bytes) = seal(&keys, &entries);
        assert_eq!(open(&keys, &name, &bytes).expect("opens"), entries);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(open(&keys, &name, &bad).is_err(), "flip at {i} accepted");
        }
        // The body itself: truncations and a lying count fail, never allocate.
        let body = encode(&entries);
        for n in 0..body.len() {
            assert!(decode(&body[..n], "c").is_err());
        }
        let mut lying = body.clone();
        lying[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode(&lying, "c").is_err());
        let mut extra = body.clone();
        extra.push(0);
        assert!(decode(&extra, "c").is_err());
        // for_each sees every entry of an intact body, and none of a damaged one.
        let mut seen = Vec::new();
        assert_eq!(
            for_each(&body, "c", |e| seen.push(e.to_entry())).expect("decodes"),
            5
        );
        assert_eq!(seen, entries);
        assert!(seen.iter().all(|e| e.as_ref().to_entry() == *e));
        let mut calls = 0;
        assert!(for_each(&extra, "c", |_| calls += 1).is_err());
        assert!(for_each(&body[..body.len() - 1], "c", |_| calls += 1).is_err());
        assert_eq!(calls, 0, "a damaged body hands out no entry");
    }

    #[test]
    fn long_paths_are_cut_on_a_character_boundary() {
        let mut e = entry(1);
        e.path = "é".repeat(40_000);
        let back = decode(&encode(&[e]), "c").expect("decodes");
        assert!(back[0].path.len() <= u16::MAX as usize);
        assert!(back[0].path.chars().all(|c| c == 'é'));
    }
}
