//! Just enough of the xbstream format (Percona XtraBackup `--stream=xbstream`, MariaDB
//! mariabackup `--stream=mbstream`) to find record boundaries and where each record's
//! payload sits in the file it belongs to ([`parse_record`]).
//!
//! An xbstream is a sequence of records, each about one file named by its path. A file
//! is sent as one or more payload records (its bytes `offset..offset + len`, usually in
//! order, split at the sender's read size) followed by an end-of-file record. Layout of a
//! record (little-endian):
//!
//! | Offset | Size | Field |
//! |---|---|---|
//! | 0 | 8 | magic `XBSTCK01` |
//! | 8 | 1 | flags (bit 0: a reader that does not know the type may skip the record) |
//! | 9 | 1 | type: `P` payload, `S` sparse payload, `E` end of file |
//! | 10 | 4 | path length `n` |
//! | 14 | n | path (no terminator) |
//!
//! An `E` record ends there. A `P` record continues with payload length `u64`, the
//! payload's offset in the file `u64`, a CRC-32 of the payload `u32`, then the payload.
//! An `S` record has a sparse map entry count `u32` right after the path, then the same
//! three fields, then the map (8 bytes per entry: bytes to skip, bytes to write) and the
//! payload (the written ranges, concatenated).
//!
//! As with [`tar`](crate::tar), nothing here decides correctness: the stream chunker
//! passes every byte through whatever these functions say, and only uses them to choose
//! cut points. The parser is strict (wrong magic, unknown type, a path longer than
//! [`MAX_PATH`], a sparse map longer than [`MAX_SPARSE_ENTRIES`] is "not a record I can
//! follow") and never allocates on the strength of a length it read.

/// Magic at the start of every record.
pub const MAGIC: &[u8; 8] = b"XBSTCK01";

const FLAGS_AT: usize = MAGIC.len();
const TYPE_AT: usize = FLAGS_AT + 1;
const PATH_LEN_AT: usize = TYPE_AT + 1;
/// Bytes before the path.
const PATH_AT: usize = PATH_LEN_AT + 4;
/// Payload length, offset and checksum after the path (and the sparse map count).
const PAYLOAD_FIELDS_LEN: usize = 8 + 8 + 4;
/// One sparse map entry: skip `u32`, write `u32`.
const SPARSE_ENTRY_LEN: usize = 4 + 4;

/// Longest path followed. Both producers limit paths to a few hundred bytes (`FN_REFLEN`);
/// a longer one ends xbstream parsing.
pub const MAX_PATH: usize = 4096;
/// Most sparse map entries followed (bounds how far ahead a header is read).
pub const MAX_SPARSE_ENTRIES: usize = 4096;

/// The largest header [`parse_record`] may ask for, so a caller can bound its buffer.
pub const MAX_HEADER_LEN: usize =
    PATH_AT + MAX_PATH + 4 + PAYLOAD_FIELDS_LEN + MAX_SPARSE_ENTRIES * SPARSE_ENTRY_LEN;

/// What [`parse_record`] found at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// The header is longer than the bytes given: call again with at least this many
    /// (never more than [`MAX_HEADER_LEN`]).
    NeedMore(usize),
    /// Not a record this parser can follow.
    Invalid,
    /// A record header of `header_len` bytes.
    Record(Record),
}

/// A parsed record header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Bytes of the header: everything before the payload (the sparse map included).
    pub header_len: usize,
    /// Where the path is in the header.
    pub path: std::ops::Range<usize>,
    /// What the record carries.
    pub kind: RecordKind,
}

/// The kind of an xbstream record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// End of a file: no payload.
    Eof,
    /// `len` bytes of the file starting at `offset` follow the header.
    Payload {
        /// Payload length.
        len: u64,
        /// Offset of the payload's first byte in the file.
        offset: u64,
    },
    /// A sparse payload of `len` bytes: the file's ranges it fills are given by the map,
    /// so payload bytes do not sit at `offset + i` of the file.
    Sparse {
        /// Payload length.
        len: u64,
    },
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(buf: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(buf.get(at..at + 8)?.try_into().ok()?))
}

/// True if `buf` starts with the record magic.
pub fn looks_like_xbstream(buf: &[u8]) -> bool {
    buf.starts_with(MAGIC)
}

/// Parses the record header at the start of `buf`.
///
/// Never panics and never reads past `buf`; asks for more bytes with
/// [`Parsed::NeedMore`] (bounded by [`MAX_HEADER_LEN`]) when the header is cut off.
pub fn parse_record(buf: &[u8]) -> Parsed {
    if buf.len() < PATH_AT {
        if !MAGIC.starts_with(&buf[..buf.len().min(MAGIC.len())]) {
            return Parsed::Invalid;
        }
        return Parsed::NeedMore(PATH_AT);
    }
    if !looks_like_xbstream(buf) {
        return Parsed::Invalid;
    }
    let Some(path_len) = u32_at(buf, PATH_LEN_AT).and_then(|n| usize::try_from(n).ok()) else {
        return Parsed::Invalid;
    };
    if path_len == 0 || path_len > MAX_PATH {
        return Parsed::Invalid;
    }
    let path = PATH_AT..PATH_AT + path_len;
    let kind = buf[TYPE_AT];
    if kind == b'E' {
        return Parsed::Record(Record {
            header_len: path.end,
            path,
            kind: RecordKind::Eof,
        });
    }
    let (sparse_entries, fields_at) = match kind {
        b'P' => (0usize, path.end),
        b'S' => {
            let Some(entries) = u32_at(buf, path.end) else {
                return Parsed::NeedMore(path.end + 4);
            };
            match usize::try_from(entries) {
                Ok(entries) if entries <= MAX_SPARSE_ENTRIES => (entries, path.end + 4),
                _ => return Parsed::Invalid,
            }
        }
        _ => return Parsed::Invalid,
    };
    let fields_end = fields_at + PAYLOAD_FIELDS_LEN;
    let header_len = fields_end + sparse_entries * SPARSE_ENTRY_LEN;
    if buf.len() < header_len {
        return Parsed::NeedMore(header_len);
    }
    let (Some(len), Some(offset)) = (u64_at(buf, fields_at), u64_at(buf, fields_at + 8)) else {
        return Parsed::Invalid;
    };
    let kind = if sparse_entries > 0 || kind == b'S' {
        RecordKind::Sparse { len }
    } else {
        RecordKind::Payload { len, offset }
    };
    Parsed::Record(Record {
        header_len,
        path,
        kind,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `P` record of `payload` at `offset` of `path`.
    pub(crate) fn payload_record(path: &str, offset: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[0, b'P']);
        out.extend_from_slice(&(path.len() as u32).to_le_bytes());
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        // Stands in for the CRC-32: any function of the payload does here.
        let check = payload
            .iter()
            .fold(0u32, |h, &b| h.rotate_left(5) ^ u32::from(b));
        out.extend_from_slice(&check.to_le_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// The `E` record of `path`.
    pub(crate) fn eof_record(path: &str) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[0, b'E']);
        out.extend_from_slice(&(path.len() as u32).to_le_bytes());
        out.extend_from_slice(path.as_bytes());
        out
    }

    #[test]
    fn parses_payload_and_eof_records() {
        let rec = payload_record("ibdata1", 16384, b"abc");
        let Parsed::Record(r) = parse_record(&rec) else {
            panic!("not parsed")
        };
        assert_eq!(r.header_len, 14 + 7 + 20);
        assert_eq!(&rec[r.path.clone()], b"ibdata1");
        assert_eq!(
            r.kind,
            RecordKind::Payload {
                len: 3,
                offset: 16384
            }
        );
        let eof = eof_record("ibdata1");
        assert_eq!(
            parse_record(&eof),
            Parsed::Record(Record {
                header_len: 21,
                path: 14..21,
                kind: RecordKind::Eof
            })
        );
    }

    #[test]
    fn asks_for_more_then_parses() {
        let rec = payload_record("a/b.ibd", 0, &[7; 100]);
        for cut in 0..41 {
            match parse_record(&rec[..cut]) {
                Parsed::NeedMore(n) => assert!(n > cut && n <= 41, "cut {cut}: {n}"),
                other => panic!("cut {cut}: {other:?}"),
            }
        }
        assert!(matches!(parse_record(&rec[..41]), Parsed::Record(_)));
    }

    #[test]
    fn rejects_what_it_cannot_follow() {
        let mut rec = payload_record("x", 0, b"");
        rec[9] = b'Z';
        assert_eq!(parse_record(&rec), Parsed::Invalid);
        let mut rec = payload_record("x", 0, b"");
        rec[0] = b'Y';
        assert_eq!(parse_record(&rec), Parsed::Invalid);
        assert_eq!(parse_record(b"YB"), Parsed::Invalid);
        let mut rec = payload_record("x", 0, b"");
        rec[10..14].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse_record(&rec), Parsed::Invalid);
        let mut rec = payload_record("x", 0, b"");
        rec[10..14].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(parse_record(&rec), Parsed::Invalid);
    }

    #[test]
    fn sparse_records_are_followed_without_offsets() {
        let mut rec = MAGIC.to_vec();
        rec.extend_from_slice(&[0, b'S']);
        rec.extend_from_slice(&1u32.to_le_bytes());
        rec.push(b'f');
        rec.extend_from_slice(&2u32.to_le_bytes()); // two map entries
        rec.extend_from_slice(&10u64.to_le_bytes());
        rec.extend_from_slice(&0u64.to_le_bytes());
        rec.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(parse_record(&rec), Parsed::NeedMore(rec.len() + 16));
        rec.extend_from_slice(&[0; 16]);
        let Parsed::Record(r) = parse_record(&rec) else {
            panic!()
        };
        assert_eq!(r.header_len, rec.len());
        assert_eq!(r.kind, RecordKind::Sparse { len: 10 });
        let at = 15;
        rec[at..at + 4].copy_from_slice(&(MAX_SPARSE_ENTRIES as u32 + 1).to_le_bytes());
        assert_eq!(parse_record(&rec), Parsed::Invalid);
    }

    #[test]
    fn real_mbstream_records_parse() {
        // Written by MariaDB's `mbstream -c`, as mariabackup writes it.
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..40_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(dir.path().join("a.ibd"), &data).unwrap();
        let out = std::process::Command::new("mbstream")
            .current_dir(dir.path())
            .args(["-c", "a.ibd"])
            .output()
            .expect("mbstream (Debian package mariadb-backup) must be installed");
        assert!(out.status.success());
        let stream = out.stdout;
        let Parsed::Record(r) = parse_record(&stream) else {
            panic!("first record")
        };
        assert_eq!(&stream[r.path.clone()], b"a.ibd");
        let RecordKind::Payload { len, offset } = r.kind else {
            panic!("{:?}", r.kind)
        };
        assert_eq!((len, offset), (40_000, 0));
        let end = r.header_len + 40_000;
        assert_eq!(stream[r.header_len..end], data[..]);
        let Parsed::Record(e) = parse_record(&stream[end..]) else {
            panic!("eof record")
        };
        assert_eq!(e.kind, RecordKind::Eof);
        assert_eq!(end + e.header_len, stream.len());
    }
}
