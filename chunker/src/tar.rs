//! Just enough of the tar format (POSIX ustar, pax extended headers, GNU long names) to
//! find member boundaries in a stream: [`parse_header`] and [`pax_size`].
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
//! | 0 | 100 | name |
//! | 124 | 12 | size: octal ASCII, or GNU base-256 (first byte 0x80) |
//! | 148 | 8 | chksum: octal sum of the block with this field read as spaces |
//! | 156 | 1 | typeflag |
//! | 257 | 6 | magic: `ustar\0` (POSIX) or `ustar ` (GNU, followed by ` \0`) |
//! | 482 | 1 | GNU old sparse: "isextended" (more sparse map blocks follow) |

/// Size of a tar block; headers and member data are padded to it.
pub const BLOCK: usize = 512;

const SIZE_AT: usize = 124;
const SIZE_LEN: usize = 12;
const CHKSUM_AT: usize = SIZE_AT + SIZE_LEN + 12; // after mtime[12]
const CHKSUM_LEN: usize = 8;
const TYPEFLAG_AT: usize = CHKSUM_AT + CHKSUM_LEN;
const MAGIC_AT: usize = TYPEFLAG_AT + 1 + 100; // after linkname[100]
const MAGIC: &[u8; 5] = b"ustar";
const GNU_ISEXTENDED_AT: usize = 482;

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
        b'L' | b'K' => HeaderKind::GnuLongName { data_len: size },
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
        let space = records.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&records[..space]).ok()?.parse().ok()?;
        if len <= space + 1 || len > records.len() || records[len - 1] != b'\n' {
            return size;
        }
        let record = &records[space + 1..len - 1];
        if let Some(value) = record.strip_prefix(b"size=") {
            size = std::str::from_utf8(value).ok()?.parse::<u64>().ok();
        }
        records = &records[len..];
    }
    size
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
