//! Metadata beyond a node's fixed fields, carried in tree node extensions (SPEC.md
//! section 13.2): hard links, extended attributes, POSIX ACLs and sparse files. What a
//! backup reads for them ([`read_extensions`]) and what a restore applies
//! ([`apply_xattrs_to_file`], [`apply_xattrs_at`]; hard links and holes are made by
//! restore.rs from [`hard_link_count`] and [`is_sparse`]).
//!
//! Every extension here but the ACLs is non-critical: a reader that predates it restores
//! the file's exact content without that metadata. POSIX ACLs are critical: without them
//! the group bits of the mode, which hold the ACL mask, would grant the owning group what
//! the ACL withheld, so a reader that does not know the tag refuses the tree instead.

use crate::codec::{Reader, Writer};
use crate::error::Result;
use crate::tree::{Extension, Node, MAX_EXTENSION_LEN};
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

pub use crate::tree::{EXT_HARD_LINK, EXT_POSIX_ACLS, EXT_SPARSE, EXT_XATTRS};

/// Longest extended attribute name accepted (Linux `XATTR_NAME_MAX`).
pub const MAX_XATTR_NAME: usize = 255;
/// Largest extended attribute value accepted (Linux `XATTR_SIZE_MAX`).
pub const MAX_XATTR_VALUE: usize = 1 << 16;
/// Smallest encoded xattr: a 1-byte name and an empty value.
const MIN_XATTR_LEN: usize = 2 + 1 + 4;

/// Names of the extended attributes that hold POSIX ACLs.
const ACL_NAMES: [&[u8]; 2] = [b"system.posix_acl_access", b"system.posix_acl_default"];

/// One extended attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xattr {
    /// Its name, namespace included (`user.mime_type`, `security.selinux`).
    pub name: Vec<u8>,
    /// Its value.
    pub value: Vec<u8>,
}

/// Whether `name` is one of the attributes holding POSIX ACLs.
pub fn is_acl(name: &[u8]) -> bool {
    ACL_NAMES.contains(&name)
}

/// Encode an xattr list: `count u32 || (name_len u16 || name || value_len u32 ||
/// value)*count`, sorted by name.
pub fn encode_xattrs(xattrs: &[Xattr]) -> Vec<u8> {
    let mut sorted: Vec<&Xattr> = xattrs.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut w = Writer::new();
    w.u32(sorted.len() as u32);
    for x in sorted {
        w.u16(x.name.len() as u16);
        w.bytes(&x.name);
        w.u32(x.value.len() as u32);
        w.bytes(&x.value);
    }
    w.finish()
}

/// Decode an xattr list.
///
/// # Errors
/// [`crate::error::Error::Corrupt`] naming `object` unless: every count fits the bytes present, names
/// are 1..=[`MAX_XATTR_NAME`] bytes without NUL and strictly increasing, values at most
/// [`MAX_XATTR_VALUE`] bytes, and nothing follows.
pub fn decode_xattrs(data: &[u8], object: &str) -> Result<Vec<Xattr>> {
    let mut r = Reader::new(data, object);
    let count = r.count("xattr count", MIN_XATTR_LEN)?;
    let mut out: Vec<Xattr> = Vec::with_capacity(count);
    for _ in 0..count {
        let name_len = usize::from(r.u16("xattr name length")?);
        let name = r.take(name_len, "xattr name")?.to_vec();
        if name.is_empty() || name.len() > MAX_XATTR_NAME || name.contains(&0) {
            return Err(r.corrupt(format!(
                "invalid xattr name {:?}",
                String::from_utf8_lossy(&name)
            )));
        }
        if out.last().is_some_and(|prev| prev.name >= name) {
            return Err(r.corrupt("xattr names not sorted or repeated"));
        }
        let value_len = r.u32("xattr value length")? as usize;
        if value_len > MAX_XATTR_VALUE {
            return Err(r.corrupt(format!("xattr value of {value_len} bytes")));
        }
        let value = r.take(value_len, "xattr value")?.to_vec();
        out.push(Xattr { name, value });
    }
    r.finish()?;
    Ok(out)
}

/// The link count recorded by [`EXT_HARD_LINK`], if the node has one.
pub fn hard_link_count(node: &Node) -> Option<u64> {
    let data = &node.extension(EXT_HARD_LINK)?.data;
    let bytes: [u8; 8] = data.as_slice().try_into().ok()?;
    Some(u64::from_le_bytes(bytes)).filter(|n| *n > 1)
}

/// Whether the node carries [`EXT_SPARSE`].
pub fn is_sparse(node: &Node) -> bool {
    node.extension(EXT_SPARSE).is_some()
}

/// Every extended attribute the node records, ACLs included.
///
/// # Errors
/// [`crate::error::Error::Corrupt`] naming `object` for a damaged list.
pub fn node_xattrs(node: &Node, object: &str) -> Result<Vec<Xattr>> {
    let mut out = Vec::new();
    for tag in [EXT_XATTRS, EXT_POSIX_ACLS] {
        if let Some(e) = node.extension(tag) {
            out.extend(decode_xattrs(&e.data, object)?);
        }
    }
    Ok(out)
}

/// What a backup records beyond the fixed fields for the entry at `path`, whose `lstat`
/// is `meta`: its extensions, and warnings for what could not be read (the entry is
/// backed up without it).
pub fn read_extensions(path: &Path, meta: &Metadata) -> (Vec<Extension>, Vec<String>) {
    let mut extensions = Vec::new();
    let mut warnings = Vec::new();
    if meta.is_file() {
        if meta.nlink() > 1 {
            extensions.push(Extension {
                tag: EXT_HARD_LINK,
                data: meta.nlink().to_le_bytes().to_vec(),
            });
        }
        // Fewer 512-byte blocks than the size needs: the file has holes.
        if meta.blocks().saturating_mul(512) < meta.size() {
            extensions.push(Extension {
                tag: EXT_SPARSE,
                data: Vec::new(),
            });
        }
    }
    match sys::read_xattrs(path) {
        Ok(all) => {
            let (acls, others): (Vec<Xattr>, Vec<Xattr>) =
                all.into_iter().partition(|x| is_acl(&x.name));
            for (tag, list) in [(EXT_XATTRS, others), (EXT_POSIX_ACLS, acls)] {
                if list.is_empty() {
                    continue;
                }
                let data = encode_xattrs(&list);
                if data.len() > MAX_EXTENSION_LEN {
                    warnings.push(format!(
                        "{}: extended attributes of {} bytes exceed the {MAX_EXTENSION_LEN} a node holds; not backed up",
                        path.display(),
                        data.len()
                    ));
                    continue;
                }
                extensions.push(Extension { tag, data });
            }
        }
        Err(e) => warnings.push(format!(
            "{}: cannot read extended attributes: {e}",
            path.display()
        )),
    }
    extensions.sort_by_key(|e| e.tag);
    (extensions, warnings)
}

/// Set the extended attributes (and ACLs) `node` records on a restored file through its
/// open handle. Returns a warning for each that could not be set (a file system
/// without xattrs, a namespace that needs privileges).
///
/// # Errors
/// [`crate::error::Error::Corrupt`] for a damaged xattr list.
pub fn apply_xattrs_to_file(file: &std::fs::File, path: &Path, node: &Node) -> Result<Vec<String>> {
    let xattrs = node_xattrs(node, &format!("extended attributes of {}", path.display()))?;
    Ok(xattrs
        .iter()
        .filter_map(|x| warning(path, x, sys::set_xattr_fd(file, x)))
        .collect())
}

/// [`apply_xattrs_to_file`] by path, not following a symlink (directories, symlinks,
/// special files).
///
/// # Errors
/// [`crate::error::Error::Corrupt`] for a damaged xattr list.
pub fn apply_xattrs_at(path: &Path, node: &Node) -> Result<Vec<String>> {
    let xattrs = node_xattrs(node, &format!("extended attributes of {}", path.display()))?;
    Ok(xattrs
        .iter()
        .filter_map(|x| warning(path, x, sys::set_xattr_path(path, x)))
        .collect())
}

fn warning(path: &Path, x: &Xattr, result: std::io::Result<()>) -> Option<String> {
    let e = result.err()?;
    let what = if is_acl(&x.name) {
        "POSIX ACL"
    } else {
        "extended attribute"
    };
    Some(format!(
        "{}: cannot set {what} {}: {e}",
        path.display(),
        String::from_utf8_lossy(&x.name)
    ))
}

/// An io error for the corrupt xattr list of a file system (not of the repository).
fn bad_list() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "the file system returned a malformed attribute list",
    )
}

#[cfg(target_os = "linux")]
mod sys {
    use super::{bad_list, Xattr, MAX_XATTR_VALUE};
    use rustix::fs::{lgetxattr, llistxattr, lsetxattr, XattrFlags};
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    /// Attempts at reading a list or value that changes size between the size query
    /// and the read.
    const TRIES: usize = 4;

    /// Every extended attribute of `path` (not following a symlink); none where the file
    /// system has no xattrs.
    pub(super) fn read_xattrs(path: &Path) -> std::io::Result<Vec<Xattr>> {
        let names = match read_sized(
            |buf| llistxattr(path, buf),
            || rustix::fs::llistxattr_query(path),
        ) {
            Ok(names) => names,
            Err(e) if unsupported(&e) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
            let os_name = OsStr::from_bytes(name);
            match read_sized(
                |buf| lgetxattr(path, os_name, buf),
                || rustix::fs::lgetxattr_query(path, os_name),
            ) {
                Ok(value) if value.len() <= MAX_XATTR_VALUE => out.push(Xattr {
                    name: name.to_vec(),
                    value,
                }),
                Ok(_) => return Err(bad_list()),
                // Removed since it was listed.
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NODATA.raw_os_error()) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Read a list or value: ask its size, then read it; again if it grew in between.
    fn read_sized(
        read: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
        size: impl Fn() -> rustix::io::Result<usize>,
    ) -> std::io::Result<Vec<u8>> {
        for _ in 0..TRIES {
            let len = size()?;
            if len == 0 {
                return Ok(Vec::new());
            }
            if len > MAX_XATTR_VALUE.max(1 << 20) {
                return Err(bad_list());
            }
            let mut buf = vec![0u8; len];
            match read(&mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(buf);
                }
                Err(rustix::io::Errno::RANGE) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(rustix::io::Errno::RANGE.into())
    }

    fn unsupported(e: &std::io::Error) -> bool {
        e.raw_os_error() == Some(rustix::io::Errno::NOTSUP.raw_os_error())
    }

    pub(super) fn set_xattr_fd(file: &std::fs::File, x: &Xattr) -> std::io::Result<()> {
        Ok(rustix::fs::fsetxattr(
            file,
            OsStr::from_bytes(&x.name),
            &x.value,
            XattrFlags::empty(),
        )?)
    }

    pub(super) fn set_xattr_path(path: &Path, x: &Xattr) -> std::io::Result<()> {
        Ok(lsetxattr(
            path,
            OsStr::from_bytes(&x.name),
            &x.value,
            XattrFlags::empty(),
        )?)
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use super::Xattr;
    use std::path::Path;

    pub(super) fn read_xattrs(_: &Path) -> std::io::Result<Vec<Xattr>> {
        Ok(Vec::new())
    }

    pub(super) fn set_xattr_fd(_: &std::fs::File, _: &Xattr) -> std::io::Result<()> {
        Err(std::io::ErrorKind::Unsupported.into())
    }

    pub(super) fn set_xattr_path(_: &Path, _: &Xattr) -> std::io::Result<()> {
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn xattr_lists_round_trip_and_truncations_are_refused(
            raw in proptest::collection::btree_map(
                proptest::collection::vec(1u8..=255, 1..40),
                proptest::collection::vec(any::<u8>(), 0..100),
                0..6,
            )
        ) {
            let xattrs: Vec<Xattr> = raw
                .into_iter()
                .map(|(name, value)| Xattr { name, value })
                .collect();
            let bytes = encode_xattrs(&xattrs);
            prop_assert_eq!(decode_xattrs(&bytes, "x").unwrap(), xattrs);
            for cut in 1..bytes.len().min(20) {
                prop_assert!(decode_xattrs(&bytes[..bytes.len() - cut], "x").is_err());
            }
        }

        #[test]
        fn xattr_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_xattrs(&bytes, "fuzz");
        }
    }

    #[test]
    fn unsorted_or_repeated_names_are_refused() {
        let x = |n: &[u8]| Xattr {
            name: n.to_vec(),
            value: vec![],
        };
        let mut w = Writer::new();
        w.u32(2);
        for name in [b"user.b", b"user.a"] {
            w.u16(6);
            w.bytes(name);
            w.u32(0);
        }
        assert!(decode_xattrs(&w.finish(), "x").is_err());
        // The encoder sorts.
        let bytes = encode_xattrs(&[x(b"user.b"), x(b"user.a")]);
        assert_eq!(
            decode_xattrs(&bytes, "x").unwrap(),
            vec![x(b"user.a"), x(b"user.b")]
        );
    }
}
