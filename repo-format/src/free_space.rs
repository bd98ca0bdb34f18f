//! Free space of the file system holding a path: for errors about a full disk, and for
//! deciding whether the local index cache has room to grow before RocksDB is asked to
//! write (its assertions abort the process on some write errors; see `index_cache`).

use std::path::Path;

/// Space on the file system holding a path, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreeSpace {
    /// Bytes this user may still write.
    pub available: u64,
    /// Size of the file system.
    pub total: u64,
}

/// The space of the file system holding `path` (which must exist); `None` where it
/// cannot be told (another platform, or `statvfs` failed).
pub fn free_space(path: &Path) -> Option<FreeSpace> {
    #[cfg(target_os = "linux")]
    {
        let s = rustix::fs::statvfs(path).ok()?;
        Some(FreeSpace {
            available: s.f_bavail.saturating_mul(s.f_frsize),
            total: s.f_blocks.saturating_mul(s.f_frsize),
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        None
    }
}

/// `n` bytes in binary units, for messages ("12.0 KiB").
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Whether `e` says the file system (or the user's quota on it) is full.
pub fn is_out_of_space(e: &std::io::Error) -> bool {
    #[cfg(target_os = "linux")]
    {
        matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = e;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_of_an_existing_directory_is_known() {
        let dir = tempfile::tempdir().unwrap();
        let space = free_space(dir.path()).expect("statvfs of a temporary directory");
        assert!(
            space.total > 0 && space.available <= space.total,
            "{space:?}"
        );
        assert!(free_space(&dir.path().join("missing")).is_none());
    }

    #[test]
    fn bytes_are_formatted_in_binary_units() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(12 << 10), "12.0 KiB");
        assert_eq!(format_bytes(8 << 20), "8.0 MiB");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn enospc_and_edquot_are_out_of_space() {
        assert!(is_out_of_space(&std::io::Error::from_raw_os_error(
            libc::ENOSPC
        )));
        assert!(is_out_of_space(&std::io::Error::from_raw_os_error(
            libc::EDQUOT
        )));
        assert!(!is_out_of_space(&std::io::Error::from_raw_os_error(
            libc::EIO
        )));
    }
}
