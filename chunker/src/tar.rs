//! Just enough of the tar format (POSIX ustar, pax extended headers, GNU long names) to
//! find member boundaries in a stream ([`parse_header`] and [`pax_size`]) and to name
//! members ([`header_path`], [`pax_path`], [`gnu_long_name`]).
//!
//! Nothing here decides correctness: the stream chunker passes every byte through in
//! order whatever these functions say, and only uses them to choose cut points. So the
//! parser is strict (a checksum mismatch, an unreadable number or an unknown sparse
//! layout is `None`, "not a header I can follow") and never panics or allocates on the
//! strength of a length it read.
//!
//! Layout of a header block (512 bytes, offsets in bytes):
//!
//! | Offset | Size | Field |
//! |---|---|---|
//! | 0 | 100 | name: NUL-terminated unless all 100 bytes are used |
//! | 124 | 12 | size: octal ASCII, or GNU base-256 (first byte 0x80) |
//! | 148 | 8 | chksum: octal sum of the block with this field read as spaces |
//! | 156 | 1 | typeflag |
//! | 257 | 6 | magic: `ustar\0` (POSIX) or `ustar ` (GNU, followed by ` \0`) |
//! | 345 | 155 | POSIX only: prefix, the path's leading directories (GNU: times, sparse map) |
//! | 482 | 1 | GNU old sparse: "isextended" (more sparse map blocks follow) |

use std::borrow::Cow;

/// Size of a tar block; headers and member data are padded to it.
pub const BLOCK: usize = 512;

const NAME_AT: usize = 0;
const NAME_LEN: usize = 100;
const SIZE_AT: usize = NAME_AT + NAME_LEN + 8 + 8 + 8; // after mode[8], uid[8], gid[8]
const SIZE_LEN: usize = 12;
const CHKSUM_AT: usize = SIZE_AT + SIZE_LEN + 12; // after mtime[12]
const CHKSUM_LEN: usize = 8;
const TYPEFLAG_AT: usize = CHKSUM_AT + CHKSUM_LEN;
const MAGIC_AT: usize = TYPEFLAG_AT + 1 + 100; // after linkname[100]
const MAGIC: &[u8; 5] = b"ustar";
/// The POSIX magic; GNU's `ustar ` differs in its sixth byte and has no prefix field.
const POSIX_MAGIC: &[u8; 6] = b"ustar\0";
// After magic[6], version[2], uname[32], gname[32], devmajor[8], devminor[8].
const PREFIX_AT: usize = MAGIC_AT + POSIX_MAGIC.len() + 2 + 32 + 32 + 8 + 8;
const PREFIX_LEN: usize = 155;
const GNU_ISEXTENDED_AT: usize = 482;

// The offsets built from field sizes must land where the layout table says.
const _: () = assert!(SIZE_AT == 124 && MAGIC_AT == 257 && PREFIX_AT == 345);

/// What a header block announces about the bytes that follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderKind {
    /// A member with `data_len` bytes of data (padded to [`BLOCK`]). `regular` is true
    /// for regular files (typeflags `0`, NUL and `7`), whose data is the file's content.
    Member {
        /// Bytes of data after the header, before padding.
        data_len: u64,
        /// A regular file: its data is the file content.
        regular: bool,
    },
    /// A pax extended header (`x`, applies to the next member) or global header (`g`),
    /// whose data of `data_len` bytes is pax records.
    Pax {
        /// Bytes of records after the header, before padding.
        data_len: u64,
        /// `x`: the records override fields of the next member (`size` among them).
        local: bool,
    },
    /// A GNU long name or long link name (`L`, `K`): data is a name for the next member.
    GnuLongName {
        /// Bytes of the name after the header, before padding.
        data_len: u64,
        /// `K`: the name is the next member's link target, not its path.
        link: bool,
    },
}

/// The `len` bytes rounded up to whole blocks, or `None` on overflow.
pub fn padded(len: u64) -> Option<u64> {
    len.checked_add(BLOCK as u64 - 1)
        .map(|l| l / BLOCK as u64 * BLOCK as u64)
}

/// True if `block` is all zeros (two of them end an archive).
pub fn is_zero_block(block: &[u8]) -> bool {
    block.iter().all(|&b| b == 0)
}

/// True if `block` starts a ustar-family archive: 512 bytes, `ustar` magic at offset 257
/// and a valid checksum. Used to detect tar streams from their first block.
pub fn looks_like_tar(block: &[u8]) -> bool {
    block.len() >= BLOCK
        && &block[MAGIC_AT..MAGIC_AT + MAGIC.len()] == MAGIC
        && checksum_ok(&block[..BLOCK])
}

/// Parses one header block. `None` if it is not a header this parser can follow: shorter
/// than a block, bad checksum, unreadable size, a negative base-256 size, or a GNU
/// sparse member with extension blocks (its data does not start right after the header).
pub fn parse_header(block: &[u8]) -> Option<HeaderKind> {
    let block = block.get(..BLOCK)?;
    if !checksum_ok(block) {
        return None;
    }
    let size = parse_number(&block[SIZE_AT..SIZE_AT + SIZE_LEN])?;
    let kind = match block[TYPEFLAG_AT] {
        b'x' => HeaderKind::Pax {
            data_len: size,
            local: true,
        },
        b'g' => HeaderKind::Pax {
            data_len: size,
            local: false,
        },
        b'L' => HeaderKind::GnuLongName {
            data_len: size,
            link: false,
        },
        b'K' => HeaderKind::GnuLongName {
            data_len: size,
            link: true,
        },
        // Header-only types: their size field does not announce data (POSIX says to
        // ignore it for links; devices, directories and FIFOs store nothing).
        b'1' | b'2' | b'3' | b'4' | b'5' | b'6' => HeaderKind::Member {
            data_len: 0,
            regular: false,
        },
        b'S' if block[GNU_ISEXTENDED_AT] != 0 => return None,
        b'0' | 0 | b'7' => HeaderKind::Member {
            data_len: size,
            regular: true,
        },
        // Everything else (GNU sparse without extensions, dumpdirs, unknown types) has
        // `size` bytes of data, as POSIX asks readers to assume.
        _ => HeaderKind::Member {
            data_len: size,
            regular: false,
        },
    };
    Some(kind)
}

/// The `size` record of pax extended header data, if there is one and it is readable.
///
/// Records are `"<len> <key>=<value>\n"`, `len` counting the whole record. A malformed
/// record ends the scan: what came before still counts. A later `size` overrides an
/// earlier one, as in pax.
pub fn pax_size(mut records: &[u8]) -> Option<u64> {
    let mut size = None;
    while !records.is_empty() {
        let PaxSplit::Record { record, rest } = split_pax_record(records)? else {
            return size;
        };
        if let Some(value) = record.strip_prefix(b"size=") {
            size = std::str::from_utf8(value).ok()?.parse::<u64>().ok();
        }
        records = rest;
    }
    size
}

/// The `path` record of pax extended header data (raw bytes, as stored), if there is one.
///
/// Scanned like [`pax_size`]: a malformed record ends the scan, an unreadable record
/// length is `None`, a later `path` overrides an earlier one, and an empty value deletes
/// the override (pax's rule), so it is `None` too.
pub fn pax_path(mut records: &[u8]) -> Option<&[u8]> {
    let mut path = None;
    while !records.is_empty() {
        let PaxSplit::Record { record, rest } = split_pax_record(records)? else {
            return path;
        };
        if let Some(value) = record.strip_prefix(b"path=") {
            path = Some(value).filter(|v| !v.is_empty());
        }
        records = rest;
    }
    path
}

/// The first record of pax data, split off.
enum PaxSplit<'a> {
    /// A well-formed record: its `key=value` bytes and the records after it.
    Record { record: &'a [u8], rest: &'a [u8] },
    /// The record's length is readable but does not frame a record: the scan ends.
    End,
}

/// Splits `"<len> <key>=<value>\n"` off `records`, `len` counting the whole record.
/// `None` if there is no space or `len` is not a decimal number.
fn split_pax_record(records: &[u8]) -> Option<PaxSplit<'_>> {
    let space = records.iter().position(|&b| b == b' ')?;
    let len: usize = std::str::from_utf8(&records[..space]).ok()?.parse().ok()?;
    if len <= space + 1 || len > records.len() || records[len - 1] != b'\n' {
        return Some(PaxSplit::End);
    }
    Some(PaxSplit::Record {
        record: &records[space + 1..len - 1],
        rest: &records[len..],
    })
}

/// The name in GNU long name data (`L`/`K`): the data without its trailing NULs.
pub fn gnu_long_name(data: &[u8]) -> &[u8] {
    let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    &data[..end]
}

/// The member path a header block stores, raw bytes. `None` if `block` is shorter than a
/// block.
///
/// A POSIX ustar header (magic `ustar\0`) with a non-empty prefix field gives
/// `prefix/name`; any other header (GNU, whose bytes there are times and sparse data, or
/// pre-POSIX) gives the name field. Each field ends at its first NUL or its end. A pax
/// `path` record ([`pax_path`]) or GNU long name ([`gnu_long_name`]) in front of the
/// header overrides this; the name field then holds a truncated or placeholder path.
/// The checksum is not checked here: see [`parse_header`].
pub fn header_path(block: &[u8]) -> Option<Cow<'_, [u8]>> {
    let block = block.get(..BLOCK)?;
    let name = until_nul(&block[NAME_AT..NAME_AT + NAME_LEN]);
    let prefix = until_nul(&block[PREFIX_AT..PREFIX_AT + PREFIX_LEN]);
    let posix = &block[MAGIC_AT..MAGIC_AT + POSIX_MAGIC.len()] == POSIX_MAGIC;
    if !posix || prefix.is_empty() {
        return Some(Cow::Borrowed(name));
    }
    Some(Cow::Owned([prefix, b"/", name].concat()))
}

/// `field` up to its first NUL, or all of it.
fn until_nul(field: &[u8]) -> &[u8] {
    field.split(|&b| b == 0).next().unwrap_or(field)
}

/// Checks the header checksum: the sum of all bytes with the chksum field counted as
/// spaces, stored as octal. Both the unsigned sum (POSIX) and the signed sum (some old
/// tars) are accepted.
fn checksum_ok(block: &[u8]) -> bool {
    let Some(stored) = parse_octal(&block[CHKSUM_AT..CHKSUM_AT + CHKSUM_LEN]) else {
        return false;
    };
    let field = CHKSUM_AT..CHKSUM_AT + CHKSUM_LEN;
    let (mut unsigned, mut signed) = (0u64, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let b = if field.contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    stored == unsigned || i64::try_from(stored).is_ok_and(|s| s == signed)
}

/// A numeric field: octal ASCII (leading spaces or NULs, digits, then space or NUL), or
/// GNU base-256 (first byte 0x80, the rest big-endian). `None` if unreadable, negative
/// or above `u64::MAX`.
fn parse_number(field: &[u8]) -> Option<u64> {
    match field.first() {
        Some(0x80) => field[1..].iter().try_fold(0u64, |acc, &b| {
            acc.checked_mul(256)?.checked_add(u64::from(b))
        }),
        Some(b) if b & 0x80 != 0 => None,
        _ => parse_octal(field),
    }
}

/// Octal ASCII; an empty field (only spaces and NULs) is 0, as many writers leave it.
fn parse_octal(field: &[u8]) -> Option<u64> {
    let Some(start) = field.iter().position(|&b| b != b' ' && b != 0) else {
        return Some(0);
    };
    let digits = &field[start..];
    let end = digits
        .iter()
        .position(|&b| b == b' ' || b == 0)
        .unwrap_or(digits.len());
    if end == 0 || digits[end..].iter().any(|&b| b != b' ' && b != 0) {
        return None;
    }
    digits[..end].iter().try_fold(0u64, |acc, &b| {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        acc.checked_mul(8)?.checked_add(u64::from(b - b'0'))
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A ustar header for a member of `size` bytes with typeflag `kind`, checksum set.
    pub(crate) fn header(name: &str, size: u64, kind: u8) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        let size_field = format!("{size:011o}\0");
        h[SIZE_AT..SIZE_AT + SIZE_LEN].copy_from_slice(size_field.as_bytes());
        h[136..148].copy_from_slice(b"14000000000\0");
        h[TYPEFLAG_AT] = kind;
        h[MAGIC_AT..MAGIC_AT + 8].copy_from_slice(b"ustar\x0000");
        set_checksum(&mut h);
        h
    }

    pub(crate) fn set_checksum(h: &mut [u8; BLOCK]) {
        h[CHKSUM_AT..CHKSUM_AT + CHKSUM_LEN].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        let field = format!("{sum:06o}\0 ");
        h[CHKSUM_AT..CHKSUM_AT + CHKSUM_LEN].copy_from_slice(field.as_bytes());
    }

    #[test]
    fn regular_member_is_parsed() {
        let h = header("base/1/1259", 8192 * 3, b'0');
        assert!(looks_like_tar(&h));
        assert_eq!(
            parse_header(&h),
            Some(HeaderKind::Member {
                data_len: 24576,
                regular: true
            })
        );
    }

    #[test]
    fn bad_checksum_is_not_a_header() {
        let mut h = header("a", 10, b'0');
        h[0] ^= 1;
        assert!(!looks_like_tar(&h));
        assert_eq!(parse_header(&h), None);
    }

    #[test]
    fn header_only_types_have_no_data() {
        for kind in [b'1', b'2', b'5'] {
            let h = header("d", 4096, kind);
            assert_eq!(
                parse_header(&h),
                Some(HeaderKind::Member {
                    data_len: 0,
                    regular: false
                })
            );
        }
    }

    #[test]
    fn base256_size_is_read() {
        let mut h = header("big", 0, b'0');
        let mut field = [0u8; SIZE_LEN];
        field[0] = 0x80;
        field[SIZE_LEN - 5..].copy_from_slice(&[0x02, 0, 0, 0, 0]); // 8 GiB
        h[SIZE_AT..SIZE_AT + SIZE_LEN].copy_from_slice(&field);
        set_checksum(&mut h);
        assert_eq!(
            parse_header(&h),
            Some(HeaderKind::Member {
                data_len: 8 << 30,
                regular: true
            })
        );
    }

    #[test]
    fn pax_size_record_is_found() {
        let records = b"20 path=some/file.x\n19 size=8589934592\n";
        assert_eq!(pax_size(records), Some(8_589_934_592));
        assert_eq!(pax_size(b"16 path=a/b/c/d\n"), None);
        assert_eq!(pax_size(b"99 size=1\n"), None);
        assert_eq!(pax_size(b"garbage"), None);
    }

    #[test]
    fn gnu_long_name_and_link_are_told_apart() {
        assert_eq!(
            parse_header(&header("././@LongLink", 130, b'L')),
            Some(HeaderKind::GnuLongName {
                data_len: 130,
                link: false
            })
        );
        assert_eq!(
            parse_header(&header("././@LongLink", 130, b'K')),
            Some(HeaderKind::GnuLongName {
                data_len: 130,
                link: true
            })
        );
        assert_eq!(gnu_long_name(b"a/long/name\0"), b"a/long/name");
        assert_eq!(gnu_long_name(b"a\0b\0\0\0"), b"a\0b");
        assert_eq!(gnu_long_name(b"no-nul"), b"no-nul");
        assert_eq!(gnu_long_name(b"\0\0"), b"");
    }

    #[test]
    fn pax_path_record_is_found() {
        let records = b"20 path=some/file.x\n19 size=8589934592\n";
        assert_eq!(pax_path(records), Some(&b"some/file.x"[..]));
        // The size scan is unchanged by the shared record splitter.
        assert_eq!(pax_size(records), Some(8_589_934_592));
        assert_eq!(pax_path(b"19 size=8589934592\n"), None);
        // A later record overrides, an empty value deletes.
        assert_eq!(pax_path(b"10 path=a\n10 path=b\n"), Some(&b"b"[..]));
        assert_eq!(pax_path(b"10 path=a\n8 path=\n"), None);
        // Not a path record: a key that only starts like one.
        assert_eq!(pax_path(b"14 linkpath=a\n"), None);
        // A malformed record ends the scan; what came before counts.
        assert_eq!(pax_path(b"10 path=a\n99 path=b\n"), Some(&b"a"[..]));
        assert_eq!(pax_path(b"garbage"), None);
        // Raw bytes, not necessarily UTF-8.
        assert_eq!(pax_path(b"10 path=\xff\n"), Some(&b"\xff"[..]));
    }

    #[test]
    fn header_path_joins_posix_prefix_and_name() {
        let mut h = header("16384", 8192, b'0');
        assert_eq!(header_path(&h).as_deref(), Some(&b"16384"[..]));
        h[PREFIX_AT..PREFIX_AT + 7].copy_from_slice(b"base/16");
        set_checksum(&mut h);
        assert_eq!(header_path(&h).as_deref(), Some(&b"base/16/16384"[..]));
        // Fields that fill their whole width have no NUL.
        let name = "n".repeat(NAME_LEN);
        let mut h = header(&name, 0, b'0');
        h[PREFIX_AT..PREFIX_AT + PREFIX_LEN].fill(b'p');
        let full = format!("{}/{name}", "p".repeat(PREFIX_LEN));
        assert_eq!(header_path(&h).as_deref(), Some(full.as_bytes()));
        assert_eq!(header_path(&h[..BLOCK - 1]), None);
    }

    #[test]
    fn header_path_ignores_prefix_bytes_of_gnu_headers() {
        // GNU headers keep atime/ctime where POSIX has the prefix.
        let mut h = header("file", 0, b'0');
        h[MAGIC_AT..MAGIC_AT + 8].copy_from_slice(b"ustar  \0");
        h[PREFIX_AT..PREFIX_AT + 12].copy_from_slice(b"14000000000\0");
        set_checksum(&mut h);
        assert!(looks_like_tar(&h));
        assert_eq!(header_path(&h).as_deref(), Some(&b"file"[..]));
        // Pre-POSIX (v7) headers have no magic: the name field alone.
        h[MAGIC_AT..MAGIC_AT + 8].fill(0);
        assert_eq!(header_path(&h).as_deref(), Some(&b"file"[..]));
    }

    #[test]
    fn numbers_reject_junk() {
        assert_eq!(parse_octal(b"0000017\0"), Some(15));
        assert_eq!(parse_octal(b"  17 \0\0\0"), Some(15));
        assert_eq!(parse_octal(b"0000019\0"), None);
        assert_eq!(parse_octal(b"17 1\0"), None);
        assert_eq!(parse_octal(b"\0\0\0\0"), Some(0));
        assert_eq!(parse_number(&[0xff; 12]), None);
        assert_eq!(
            parse_number(&[0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            None
        );
    }
}
