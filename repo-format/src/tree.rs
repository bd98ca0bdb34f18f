//! Trees: the encoding of one directory.
//!
//! `tree = version u8 (1 or 2) || count u32 || node*`, nodes sorted by name bytes, names
//! unique. `node = kind u8 || name_len u16 || name || mode u32 || uid u32 || gid u32 ||
//! mtime_sec i64 || mtime_nsec u32 || ctime_sec i64 || ctime_nsec u32 || inode u64 ||
//! device u64 || size u64 || payload || ext_count u16 || extension*`, where the payload
//! is a [`Content`] for files, the subtree id for directories, `len u32 || target` for
//! symlinks, `rdev u64` for device nodes and nothing for FIFOs and sockets, and
//! `extension = tag u16 || len u32 || data` carries metadata added by later revisions
//! (hard links, extended attributes and ACLs, sparse files: file_meta.rs). Readers keep
//! extensions they do not know and ignore them, unless the tag has [`EXT_CRITICAL`] set:
//! then they must refuse the tree, because ignoring it would restore something wrong.
//!
//! Version 2 adds the node kinds FIFO, socket, character and block device; a tree is
//! written as version 2 only when it holds one of them, so trees without them stay
//! readable by version-1 readers, and those refuse the others instead of misreading them.
//!
//! Names are raw bytes (file names need not be UTF-8). A decoder rejects names that are
//! empty, `.`, `..`, or contain `/` or NUL, so a damaged or forged tree can never make a
//! restore write outside its target.

use crate::codec::{Reader, Writer};
use crate::content::Content;
use crate::error::{Error, Result};
use crate::id::BlobId;

/// Highest tree format version read and written by this build: trees holding special
/// files (FIFOs, sockets, devices) are written as this version.
pub const TREE_VERSION: u8 = 2;
/// Tree format version written when no node needs version 2 (readable by builds that
/// predate special files).
pub const TREE_VERSION_1: u8 = 1;
/// Longest accepted file name in bytes.
pub const MAX_NAME_LEN: usize = 4096;
/// Longest accepted symlink target in bytes.
pub const MAX_LINK_TARGET: usize = 1 << 16;
/// Smallest encoded node (a FIFO or socket, which have no payload, with a 1-byte name
/// and no extensions): bounds the node count. Version 1 trees, whose smallest node is
/// an empty symlink, have 4 bytes more per node.
pub const MIN_NODE_LEN: usize = 1 + 2 + 1 + 4 * 3 + (8 + 4) * 2 + 8 * 3 + 2;
/// Extension tags with this bit set must be understood by a reader, or the tree refused.
pub const EXT_CRITICAL: u16 = 0x8000;

// The extension tags this build writes (their encodings live in file_meta.rs).
/// Extension of a file node whose inode had more than one link at backup: `links u64`
/// (`st_nlink`). Files of one snapshot with this extension and the same `device` and
/// `inode` are restored as hard links of one file.
pub const EXT_HARD_LINK: u16 = 0x0002;
/// Extension carrying a node's extended attributes other than POSIX ACLs (an xattr
/// list, [`crate::file_meta::encode_xattrs`]).
pub const EXT_XATTRS: u16 = 0x0003;
/// Critical extension carrying a node's POSIX ACLs: the xattrs
/// `system.posix_acl_access` and `system.posix_acl_default` (an xattr list).
pub const EXT_POSIX_ACLS: u16 = EXT_CRITICAL | 0x0004;
/// Extension of a file node that had holes at backup (it occupied fewer blocks than its
/// size): no data. A restore writes its runs of zeros as holes.
pub const EXT_SPARSE: u16 = 0x0005;
/// Largest accepted extension data.
pub const MAX_EXTENSION_LEN: usize = 1 << 20;
/// Critical extension tags this build understands (file_meta.rs): a tree carrying one
/// decodes, any other critical tag is refused.
pub const KNOWN_CRITICAL_EXTENSIONS: &[u16] = &[EXT_POSIX_ACLS];

/// Metadata record of a later format revision (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// Record type; [`EXT_CRITICAL`] marks records a reader must understand.
    pub tag: u16,
    /// Record data.
    pub data: Vec<u8>,
}

/// What a node is, with its kind-specific payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    /// A regular file and its chunks.
    File(Content),
    /// A directory and its tree.
    Dir(BlobId),
    /// A symbolic link and its target (raw bytes).
    Symlink(Vec<u8>),
    /// A FIFO, socket or device node (tree version 2).
    Special(Special),
}

/// The special files a tree records (version 2). Nothing but their metadata (and a
/// device's number) is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    /// A named pipe.
    Fifo,
    /// A Unix domain socket: recorded, not recreated by a restore (a socket is made by
    /// the program that listens on it; restic and tar skip them too).
    Socket,
    /// A character device and its device number (`st_rdev`).
    CharDevice(u64),
    /// A block device and its device number (`st_rdev`).
    BlockDevice(u64),
}

impl NodeKind {
    fn tag(&self) -> u8 {
        match self {
            NodeKind::File(_) => 1,
            NodeKind::Dir(_) => 2,
            NodeKind::Symlink(_) => 3,
            NodeKind::Special(Special::Fifo) => 4,
            NodeKind::Special(Special::Socket) => 5,
            NodeKind::Special(Special::CharDevice(_)) => 6,
            NodeKind::Special(Special::BlockDevice(_)) => 7,
        }
    }

    /// `file`, `dir`, `symlink`, `fifo`, `socket`, `chardev` or `blockdev`.
    pub fn name(&self) -> &'static str {
        match self {
            NodeKind::File(_) => "file",
            NodeKind::Dir(_) => "dir",
            NodeKind::Symlink(_) => "symlink",
            NodeKind::Special(Special::Fifo) => "fifo",
            NodeKind::Special(Special::Socket) => "socket",
            NodeKind::Special(Special::CharDevice(_)) => "chardev",
            NodeKind::Special(Special::BlockDevice(_)) => "blockdev",
        }
    }
}

/// A timestamp: seconds since the Unix epoch and nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z (negative before).
    pub sec: i64,
    /// Nanoseconds, 0..1e9.
    pub nsec: u32,
}

/// One entry of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// File name, raw bytes.
    pub name: Vec<u8>,
    /// Kind and payload.
    pub kind: NodeKind,
    /// Permission bits and file type bits as in `st_mode`.
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Modification time.
    pub mtime: Timestamp,
    /// Status change time (used with size, mtime and inode to detect unchanged files).
    pub ctime: Timestamp,
    /// Inode number at backup time.
    pub inode: u64,
    /// Device number at backup time.
    pub device: u64,
    /// Size in bytes (files: content length; others as reported by the file system).
    pub size: u64,
    /// Extension records: those of file_meta.rs and page_deltas.rs, and any unknown
    /// non-critical ones read (kept).
    pub extensions: Vec<Extension>,
}

impl Node {
    /// The extension with `tag`, if the node has one.
    pub fn extension(&self, tag: u16) -> Option<&Extension> {
        self.extensions.iter().find(|e| e.tag == tag)
    }
}

/// A directory: its nodes sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tree {
    /// Entries, sorted by name bytes, names unique.
    pub nodes: Vec<Node>,
}

/// Check that `name` is a single, safe path component.
///
/// # Errors
/// [`Error::Corrupt`] naming `object`.
pub fn check_name(name: &[u8], object: &str) -> Result<()> {
    let bad = name.is_empty()
        || name == b"."
        || name == b".."
        || name.contains(&b'/')
        || name.contains(&0)
        || name.len() > MAX_NAME_LEN;
    if bad {
        return Err(Error::corrupt(
            object,
            format!("invalid file name {:?}", String::from_utf8_lossy(name)),
        ));
    }
    Ok(())
}

impl Tree {
    /// Sort nodes by name (the encoding requires it).
    pub fn sort(&mut self) {
        self.nodes.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// Find a node by name.
    pub fn get(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }

    /// Encode; nodes must be sorted and names valid.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if nodes are unsorted, duplicated or badly named.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut w = Writer::new();
        let special = self
            .nodes
            .iter()
            .any(|n| matches!(n.kind, NodeKind::Special(_)));
        w.u8(if special {
            TREE_VERSION
        } else {
            TREE_VERSION_1
        });
        w.u32(self.nodes.len() as u32);
        for (i, n) in self.nodes.iter().enumerate() {
            check_name(&n.name, "tree").map_err(|e| Error::InvalidArgument(e.to_string()))?;
            if i > 0 && self.nodes[i - 1].name >= n.name {
                return Err(Error::InvalidArgument(
                    "tree nodes must be sorted and unique".into(),
                ));
            }
            w.u8(n.kind.tag());
            w.u16(n.name.len() as u16);
            w.bytes(&n.name);
            w.u32(n.mode);
            w.u32(n.uid);
            w.u32(n.gid);
            w.i64(n.mtime.sec);
            w.u32(n.mtime.nsec);
            w.i64(n.ctime.sec);
            w.u32(n.ctime.nsec);
            w.u64(n.inode);
            w.u64(n.device);
            w.u64(n.size);
            match &n.kind {
                NodeKind::File(c) => c.encode_into(&mut w),
                NodeKind::Dir(id) => w.id(id),
                NodeKind::Symlink(t) => {
                    if t.len() > MAX_LINK_TARGET {
                        return Err(Error::InvalidArgument("symlink target too long".into()));
                    }
                    w.u32(t.len() as u32);
                    w.bytes(t);
                }
                NodeKind::Special(Special::CharDevice(rdev) | Special::BlockDevice(rdev)) => {
                    w.u64(*rdev)
                }
                NodeKind::Special(Special::Fifo | Special::Socket) => {}
            }
            if n.extensions.len() > usize::from(u16::MAX)
                || n.extensions
                    .iter()
                    .any(|e| e.data.len() > MAX_EXTENSION_LEN)
            {
                return Err(Error::InvalidArgument(
                    "too many or too large node extensions".into(),
                ));
            }
            w.u16(n.extensions.len() as u16);
            for e in &n.extensions {
                w.u16(e.tag);
                w.u32(e.data.len() as u32);
                w.bytes(&e.data);
            }
        }
        Ok(w.finish())
    }

    /// Decode and validate.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming `object`; [`Error::UnsupportedVersion`] for a newer tree.
    pub fn decode(body: &[u8], object: &str) -> Result<Tree> {
        let mut r = Reader::new(body, object);
        let version = r.u8("tree version")?;
        if !(TREE_VERSION_1..=TREE_VERSION).contains(&version) {
            return Err(Error::UnsupportedVersion {
                object: object.into(),
                found: u32::from(version),
                supported: u32::from(TREE_VERSION),
            });
        }
        let count = r.count("node count", MIN_NODE_LEN)?;
        let mut nodes: Vec<Node> = Vec::with_capacity(count);
        for _ in 0..count {
            let tag = r.u8("node kind")?;
            let name_len = r.u16("name length")? as usize;
            let name = r.take(name_len, "name")?.to_vec();
            check_name(&name, object)?;
            if let Some(prev) = nodes.last() {
                if prev.name >= name {
                    return Err(r.corrupt("nodes not sorted by name or names repeated"));
                }
            }
            let mode = r.u32("mode")?;
            let uid = r.u32("uid")?;
            let gid = r.u32("gid")?;
            let mtime = Timestamp {
                sec: r.i64("mtime")?,
                nsec: r.u32("mtime nsec")?,
            };
            let ctime = Timestamp {
                sec: r.i64("ctime")?,
                nsec: r.u32("ctime nsec")?,
            };
            if mtime.nsec >= 1_000_000_000 || ctime.nsec >= 1_000_000_000 {
                return Err(r.corrupt("nanoseconds out of range"));
            }
            let inode = r.u64("inode")?;
            let device = r.u64("device")?;
            let size = r.u64("size")?;
            let kind = match tag {
                1 => NodeKind::File(Content::decode_from(&mut r)?),
                2 => NodeKind::Dir(r.id("subtree")?),
                3 => {
                    let n = r.u32("link target length")? as usize;
                    if n > MAX_LINK_TARGET {
                        return Err(r.corrupt(format!("symlink target of {n} bytes")));
                    }
                    NodeKind::Symlink(r.take(n, "link target")?.to_vec())
                }
                4..=7 if version < 2 => {
                    return Err(r.corrupt(format!("node kind {tag} in a version {version} tree")))
                }
                4 => NodeKind::Special(Special::Fifo),
                5 => NodeKind::Special(Special::Socket),
                6 => NodeKind::Special(Special::CharDevice(r.u64("device number")?)),
                7 => NodeKind::Special(Special::BlockDevice(r.u64("device number")?)),
                other => return Err(r.corrupt(format!("unknown node kind {other}"))),
            };
            let ext_count = r.u16("extension count")?;
            let mut extensions = Vec::new();
            for _ in 0..ext_count {
                let tag = r.u16("extension tag")?;
                let len = r.u32("extension length")? as usize;
                if len > MAX_EXTENSION_LEN {
                    return Err(r.corrupt(format!("extension of {len} bytes")));
                }
                let data = r.take(len, "extension data")?.to_vec();
                if tag & EXT_CRITICAL != 0 && !KNOWN_CRITICAL_EXTENSIONS.contains(&tag) {
                    return Err(Error::UnsupportedFeature {
                        object: object.into(),
                        feature: format!("critical node extension {tag:#06x}"),
                    });
                }
                extensions.push(Extension { tag, data });
            }
            nodes.push(Node {
                name,
                kind,
                mode,
                uid,
                gid,
                mtime,
                ctime,
                inode,
                device,
                size,
                extensions,
            });
        }
        r.finish()?;
        Ok(Tree { nodes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node() -> impl Strategy<Value = Node> {
        let kind = prop_oneof![
            (
                0u8..3,
                proptest::collection::vec(proptest::array::uniform32(any::<u8>()), 0..5)
            )
                .prop_map(|(level, ids)| NodeKind::File(Content {
                    level,
                    ids: ids.into_iter().map(BlobId).collect()
                })),
            proptest::array::uniform32(any::<u8>()).prop_map(|id| NodeKind::Dir(BlobId(id))),
            proptest::collection::vec(any::<u8>(), 0..50).prop_map(NodeKind::Symlink),
            Just(NodeKind::Special(Special::Fifo)),
            Just(NodeKind::Special(Special::Socket)),
            any::<u64>().prop_map(|d| NodeKind::Special(Special::CharDevice(d))),
            any::<u64>().prop_map(|d| NodeKind::Special(Special::BlockDevice(d))),
        ];
        (
            proptest::collection::vec(
                any::<u8>().prop_filter("no / or NUL", |b| *b != b'/' && *b != 0),
                1..20,
            )
            .prop_filter("not . or ..", |n| n != b"." && n != b".."),
            kind,
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<i64>(),
            0u32..1_000_000_000,
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(
                (0u16..0x8000, proptest::collection::vec(any::<u8>(), 0..8)),
                0..3,
            ),
        )
            .prop_map(
                |(name, kind, mode, uid, gid, sec, nsec, inode, size, ext)| Node {
                    name,
                    kind,
                    mode,
                    uid,
                    gid,
                    mtime: Timestamp { sec, nsec },
                    ctime: Timestamp { sec: sec / 2, nsec },
                    inode,
                    device: inode ^ 7,
                    size,
                    extensions: ext
                        .into_iter()
                        .map(|(tag, data)| Extension { tag, data })
                        .collect(),
                },
            )
    }

    proptest! {
        #[test]
        fn tree_round_trip(nodes in proptest::collection::vec(node(), 0..20)) {
            let mut tree = Tree { nodes };
            tree.sort();
            tree.nodes.dedup_by(|a, b| a.name == b.name);
            let bytes = tree.encode().unwrap();
            prop_assert_eq!(Tree::decode(&bytes, "t").unwrap(), tree.clone());
            for cut in 1..bytes.len().min(40) {
                prop_assert!(Tree::decode(&bytes[..bytes.len() - cut], "t").is_err());
            }
        }

        #[test]
        fn tree_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Tree::decode(&bytes, "fuzz");
        }
    }

    #[test]
    fn unknown_extensions_are_kept_and_critical_ones_refused() {
        let mut node = Node {
            name: b"f".to_vec(),
            kind: NodeKind::Symlink(b"t".to_vec()),
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: Timestamp::default(),
            ctime: Timestamp::default(),
            inode: 0,
            device: 0,
            size: 0,
            extensions: vec![Extension {
                tag: 7,
                data: b"later".to_vec(),
            }],
        };
        let tree = Tree {
            nodes: vec![node.clone()],
        };
        assert_eq!(Tree::decode(&tree.encode().unwrap(), "t").unwrap(), tree);
        node.extensions[0].tag |= EXT_CRITICAL;
        let tree = Tree { nodes: vec![node] };
        assert!(matches!(
            Tree::decode(&tree.encode().unwrap(), "t"),
            Err(Error::UnsupportedFeature { .. })
        ));
    }

    #[test]
    fn trees_are_version_1_unless_they_hold_special_files_and_v1_refuses_special_kinds() {
        let node = |name: &[u8], kind| Node {
            name: name.to_vec(),
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: Timestamp::default(),
            ctime: Timestamp::default(),
            inode: 0,
            device: 0,
            size: 0,
            extensions: vec![],
        };
        let plain = Tree {
            nodes: vec![node(b"l", NodeKind::Symlink(b"t".to_vec()))],
        };
        assert_eq!(plain.encode().unwrap()[0], TREE_VERSION_1);
        let special = Tree {
            nodes: vec![
                node(b"dev", NodeKind::Special(Special::BlockDevice(0x0801))),
                node(b"l", NodeKind::Symlink(b"t".to_vec())),
            ],
        };
        let mut bytes = special.encode().unwrap();
        assert_eq!(bytes[0], TREE_VERSION);
        assert_eq!(Tree::decode(&bytes, "t").unwrap(), special);
        // The same nodes claiming version 1: a special kind there is damage.
        bytes[0] = TREE_VERSION_1;
        assert!(matches!(
            Tree::decode(&bytes, "t"),
            Err(Error::Corrupt { .. })
        ));
        bytes[0] = TREE_VERSION + 1;
        assert!(matches!(
            Tree::decode(&bytes, "t"),
            Err(Error::UnsupportedVersion { .. })
        ));
    }

    #[test]
    fn path_traversal_names_are_rejected() {
        for bad in [&b".."[..], b".", b"a/b", b"", b"a\0"] {
            let tree = Tree {
                nodes: vec![Node {
                    name: bad.to_vec(),
                    kind: NodeKind::Symlink(vec![]),
                    mode: 0,
                    uid: 0,
                    gid: 0,
                    mtime: Timestamp::default(),
                    ctime: Timestamp::default(),
                    inode: 0,
                    device: 0,
                    size: 0,
                    extensions: vec![],
                }],
            };
            assert!(tree.encode().is_err());
            // Forge the bytes directly: the decoder must refuse them too.
            let mut w = Writer::new();
            w.u8(TREE_VERSION);
            w.u32(1);
            w.u8(3);
            w.u16(bad.len() as u16);
            w.bytes(bad);
            w.bytes(&[0u8; 12 + 24 + 24]);
            w.u32(0);
            w.u16(0);
            assert!(Tree::decode(&w.finish(), "t").is_err());
        }
    }
}
