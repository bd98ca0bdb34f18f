//! What a file system holds besides files, directories and symlinks, through `backup`
//! and `restore`: hard links, sparse files, extended attributes, POSIX ACLs, FIFOs,
//! sockets and device nodes (issue 19, point 12). Each is preserved as restic preserves
//! it; sockets are recorded and, like restic and tar do, not recreated.

mod common;

use common::*;
use rustix::fs::{lgetxattr, llistxattr, lsetxattr, XattrFlags};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 65536];
    match lgetxattr(path, name, &mut buf[..]) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

fn xattr_names(path: &Path) -> Vec<String> {
    let mut buf = vec![0u8; 65536];
    let n = llistxattr(path, &mut buf[..]).unwrap();
    let mut names: Vec<String> = buf[..n]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    names.sort();
    names
}

/// A POSIX ACL as the kernel stores it in `system.posix_acl_access`: owner rw-, user
/// 1000 r--, owning group ---, mask r--, others ---.
fn acl_bytes() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 6u16, u32::MAX),
        (0x02, 4, 1000),
        (0x04, 0, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// BUG (issue 19, point 12): hard links came back as independent copies.
#[test]
fn hard_links_are_restored_as_hard_links() {
    let env = TestEnv::init();
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("small"), b"one inode, three names").unwrap();
    fs::hard_link(src.join("small"), src.join("small-2")).unwrap();
    fs::hard_link(src.join("small"), src.join("sub/small-3")).unwrap();
    fs::write(src.join("large"), random_bytes(5, 3 << 20)).unwrap();
    fs::hard_link(src.join("large"), src.join("sub/large-2")).unwrap();
    fs::write(src.join("alone"), b"one name").unwrap();
    env.backup(&[&src], &[]);

    let target = env.path("restore");
    let out = env.json(&["restore", "latest", "--target", s(&target)]);
    assert_eq!(out["hard_links"], 3, "{out}");
    let restored = restored_path(&target, &src);
    let ino = |rel: &str| fs::metadata(restored.join(rel)).unwrap().ino();
    assert_eq!(ino("small"), ino("small-2"));
    assert_eq!(ino("small"), ino("sub/small-3"));
    assert_eq!(fs::metadata(restored.join("small")).unwrap().nlink(), 3);
    assert_eq!(ino("large"), ino("sub/large-2"));
    assert_eq!(fs::metadata(restored.join("alone")).unwrap().nlink(), 1);
    assert_same_tree(&src, &restored, Compare::ALL);

    // A restore over the first restore links the names again (each name is replaced,
    // never written through).
    env.ok(&["restore", "latest", "--target", s(&target)]);
    assert_eq!(ino("small"), ino("sub/small-3"));
    assert_same_tree(&src, &restored, Compare::ALL);
}

/// BUG (issue 19, point 12): a sparse file was restored with its holes filled, taking
/// its whole size on disk.
#[test]
fn sparse_files_are_restored_with_holes() {
    let env = TestEnv::init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    // 64 MiB with 8 KiB of data in the middle (a disk image, a database file).
    let sparse = src.join("sparse");
    let f = fs::File::create(&sparse).unwrap();
    f.set_len(64 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &random_bytes(3, 8192), 32 << 20).unwrap();
    drop(f);
    assert!(fs::metadata(&sparse).unwrap().blocks() * 512 < 1 << 20);
    // Dense, with runs of zeros: stays dense unless --sparse is asked for.
    let mut dense = random_bytes(4, 1 << 20);
    dense.extend_from_slice(&vec![0u8; 4 << 20]);
    fs::write(src.join("dense"), &dense).unwrap();
    env.backup(&[&src], &[]);

    let target = env.path("restore");
    env.ok(&["restore", "latest", "--target", s(&target)]);
    let restored = restored_path(&target, &src);
    assert_same_tree(&src, &restored, Compare::ALL);
    let allocated = |p: &Path| fs::metadata(p).unwrap().blocks() * 512;
    assert!(
        allocated(&restored.join("sparse")) < 1 << 20,
        "the sparse file takes {} bytes on disk",
        allocated(&restored.join("sparse"))
    );
    assert!(allocated(&restored.join("dense")) >= 5 << 20);

    let target = env.path("restore-sparse");
    env.ok(&["restore", "latest", "--sparse", "--target", s(&target)]);
    let restored = restored_path(&target, &src);
    assert_same_tree(&src, &restored, Compare::ALL);
    assert!(allocated(&restored.join("dense")) < 2 << 20);
}

/// BUG (issue 19, point 12): extended attributes and POSIX ACLs were dropped.
#[test]
fn extended_attributes_and_acls_are_restored() {
    let env = TestEnv::init();
    let src = env.path("src");
    fs::create_dir_all(src.join("dir")).unwrap();
    let file = src.join("file");
    fs::write(&file, b"with attributes").unwrap();
    set_mode(&file, 0o640);
    lsetxattr(&file, "user.mime_type", b"text/plain", XattrFlags::empty()).unwrap();
    lsetxattr(&file, "user.binary", &[0, 1, 2, 255], XattrFlags::empty()).unwrap();
    lsetxattr(
        &file,
        "system.posix_acl_access",
        &acl_bytes(),
        XattrFlags::empty(),
    )
    .unwrap();
    lsetxattr(
        src.join("dir"),
        "user.note",
        b"on a directory",
        XattrFlags::empty(),
    )
    .unwrap();
    // A read-only file keeps its attributes too (they are set before its mode).
    let ro = src.join("read-only");
    fs::write(&ro, b"read only").unwrap();
    lsetxattr(&ro, "user.k", b"v", XattrFlags::empty()).unwrap();
    set_mode(&ro, 0o444);
    let large = src.join("large");
    fs::write(&large, random_bytes(8, 2 << 20)).unwrap();
    lsetxattr(&large, "user.big", &vec![7u8; 3000], XattrFlags::empty()).unwrap();
    env.backup(&[&src], &[]);

    let target = env.path("restore");
    let out = env.ok(&["restore", "latest", "--target", s(&target)]);
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    let restored = restored_path(&target, &src);
    assert_same_tree(&src, &restored, Compare::ALL);
    for rel in ["file", "dir", "read-only", "large"] {
        let (a, b) = (src.join(rel), restored.join(rel));
        assert_eq!(xattr_names(&a), xattr_names(&b), "{rel}");
        for name in xattr_names(&a) {
            assert_eq!(xattr(&a, &name), xattr(&b, &name), "{rel}: {name}");
        }
    }
    assert_eq!(
        xattr(&restored.join("file"), "system.posix_acl_access"),
        Some(acl_bytes())
    );
}

/// BUG (issue 19, point 12): FIFOs, sockets and device nodes were skipped with a warning
/// (exit 3). Now FIFOs and devices are restored, and sockets are recorded and listed but
/// not recreated.
#[test]
fn fifos_devices_and_sockets_are_backed_up() {
    let env = TestEnv::init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("file"), b"a file beside them").unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(src.join("socket")).unwrap();
    let root = running_as_root();
    if root {
        // The numbers of /dev/null.
        rustix::fs::mknodat(
            rustix::fs::CWD,
            src.join("null"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        )
        .unwrap();
    }
    let snap = env.backup(&[&src], &[]);
    assert_eq!(
        snap["summary"]["special_files"],
        if root { 3 } else { 2 },
        "{snap}"
    );
    let listing = env.json(&["ls", "latest", s(&src)]);
    let kind_of = |name: &str| {
        listing["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .map(|n| n["type"].as_str().unwrap().to_string())
    };
    assert_eq!(kind_of("fifo").as_deref(), Some("fifo"));
    assert_eq!(kind_of("socket").as_deref(), Some("socket"));

    let target = env.path("restore");
    let out = env.json(&["restore", "latest", "--target", s(&target)]);
    let restored = restored_path(&target, &src);
    let fifo = fs::symlink_metadata(restored.join("fifo")).unwrap();
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.mode() & 0o7777, 0o640);
    assert_eq!(
        fifo.mtime(),
        fs::symlink_metadata(src.join("fifo")).unwrap().mtime()
    );
    assert!(
        !restored.join("socket").exists(),
        "sockets are not recreated"
    );
    if root {
        assert_eq!(out["special_files"], 2, "{out}");
        let dev = fs::symlink_metadata(restored.join("null")).unwrap();
        assert!(dev.file_type().is_char_device());
        assert_eq!(dev.rdev(), rustix::fs::makedev(1, 3));
    }
}
