//! Reading a long file being backed up: on a thread of its own, a few blocks ahead of the
//! chunker, and on Linux past the page cache (`O_DIRECT`) unless the file is cached.
//!
//! The chunker reads on the walker thread, which was the busiest thread of a backup of
//! large files. Through the page cache, each byte read cost it a copy out of the cache,
//! and the kernel the filling of a fresh page-cache page first: on the project machine (a
//! VM whose free pages go back to the host) `dd` read 1 GiB cold in 0.7-3.4 s of system
//! time buffered and 0.1 s direct (benches/NOTES.md, "Long files read past the page cache").
//! Direct reads have no kernel read-ahead, so a thread reads ahead instead, and the disk
//! stays busy while the chunker works. It also leaves the page cache to the applications
//! being backed up.
//!
//! A file whose first block is in the page cache (`preadv2` with `RWF_NOWAIT` reads it
//! whole) is read through the cache: a file just written or read is served from memory,
//! and a direct read would first write its dirty pages back. The others switch to
//! `O_DIRECT` (`fcntl`) where the file system takes it.
//!
//! Any direct read that fails is tried again buffered, as is the rest of the file: the
//! file system may refuse a direct read (EINVAL), or a short read may have left the offset
//! unaligned. An error of the disk fails the buffered read too, and is returned.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use crate::direct_io::{aligned_start, AlignedBuffers, DIRECT_PIECE};

/// Bytes per read: large enough that a direct read costs little more than its transfer.
const BLOCK: usize = DIRECT_PIECE;

/// Blocks of one file: the one the chunker reads from, one read and waiting, and one
/// being read.
const BLOCKS: usize = 3;

/// Blocks kept for the next file (one file's worth). They are allocated by the thread
/// opening files, never by a read-ahead thread: memory a short-lived thread allocates
/// comes from an arena of its own, and stayed resident there once freed.
static SPARE_BLOCKS: AlignedBuffers = AlignedBuffers::new(BLOCKS);

fn take_block() -> Vec<u8> {
    SPARE_BLOCKS.take()
}

fn give_back(block: Vec<u8>) {
    SPARE_BLOCKS.give_back(block);
}

/// One block read: its bytes are `buf[start..start + len]`; `len` 0 marks the end.
struct Filled {
    buf: Vec<u8>,
    start: usize,
    len: usize,
    /// Read with `O_DIRECT`.
    direct: bool,
}

impl Filled {
    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

/// A file read ahead on its own thread; reads return its bytes in order.
pub(crate) struct ReadAhead {
    filled: Receiver<io::Result<Filled>>,
    /// Blocks read out, back to the read-ahead thread.
    free: Sender<Vec<u8>>,
    /// The file, read on the caller's thread, when no read-ahead thread could start.
    plain: Option<Arc<File>>,
    current: Option<Filled>,
    pos: usize,
    end: End,
    /// Blocks that came from direct reads.
    direct_blocks: usize,
    /// The file, alive while the read-ahead thread (or `plain`) holds it.
    #[cfg(test)]
    file: std::sync::Weak<File>,
}

/// How the file's bytes ended, once they have.
enum End {
    Open,
    Eof,
    /// A read failed: later reads fail too, rather than look like the end of the file.
    Failed(io::ErrorKind),
}

impl ReadAhead {
    /// Open `path` and start reading it ahead.
    ///
    /// # Errors
    /// The error of opening the file.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let file = Arc::new(File::open(path)?);
        let (filled_tx, filled) = channel();
        let (free, free_rx) = channel();
        #[cfg(test)]
        let weak = Arc::downgrade(&file);
        let source = Source {
            file: file.clone(),
            reopened: None,
            path: path.to_path_buf(),
            direct: false,
        };
        let spawned = std::thread::Builder::new()
            .name("read-ahead".into())
            .spawn(move || read_blocks(source, &free_rx, &filled_tx));
        let plain = match spawned {
            Ok(_) => {
                for _ in 0..BLOCKS {
                    // Cannot fail: the thread returns only once `free` is dropped or
                    // the file has ended, and until then holds the receiver.
                    let _ = free.send(take_block());
                }
                None
            }
            // No thread: this one reads, through the page cache.
            Err(_) => Some(file),
        };
        Ok(ReadAhead {
            filled,
            free,
            plain,
            current: None,
            pos: 0,
            end: End::Open,
            direct_blocks: 0,
            #[cfg(test)]
            file: weak,
        })
    }

    fn recycle(&self, block: Vec<u8>) {
        if let Err(unsent) = self.free.send(block) {
            give_back(unsent.0);
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if let Some(file) = &self.plain {
            return (&**file).read(out);
        }
        loop {
            match self.end {
                End::Open => {}
                End::Eof => return Ok(0),
                End::Failed(kind) => {
                    return Err(io::Error::new(kind, "an earlier read of the file failed"))
                }
            }
            if out.is_empty() {
                return Ok(0);
            }
            if let Some(block) = &self.current {
                let left = &block.bytes()[self.pos..];
                if !left.is_empty() {
                    let n = left.len().min(out.len());
                    out[..n].copy_from_slice(&left[..n]);
                    self.pos += n;
                    return Ok(n);
                }
            }
            if let Some(block) = self.current.take() {
                self.recycle(block.buf);
            }
            match self.filled.recv() {
                Ok(Ok(block)) if block.len == 0 => {
                    give_back(block.buf);
                    self.end = End::Eof;
                }
                Ok(Ok(block)) => {
                    self.direct_blocks += usize::from(block.direct);
                    self.current = Some(block);
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.end = End::Failed(e.kind());
                    return Err(e);
                }
                Err(_) => {
                    let e = io::Error::other("the read-ahead thread stopped");
                    self.end = End::Failed(e.kind());
                    return Err(e);
                }
            }
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        if let Some(block) = self.current.take() {
            give_back(block.buf);
        }
        // Blocks read and not yet taken; the thread hands back the others when it sees
        // the reader gone.
        while let Ok(Ok(block)) = self.filled.try_recv() {
            give_back(block.buf);
        }
    }
}

/// The read-ahead thread's side of the file.
struct Source {
    file: Arc<File>,
    /// The file opened again, buffered, when `O_DIRECT` could not be turned off.
    reopened: Option<File>,
    path: PathBuf,
    direct: bool,
}

impl Source {
    fn file(&self) -> &File {
        self.reopened.as_ref().unwrap_or(&self.file)
    }

    /// The first block: from the page cache when all of it is there; otherwise the file
    /// turns direct, where the file system allows, and the block is read again.
    fn read_first(&mut self, dest: &mut [u8]) -> io::Result<usize> {
        if cached_read(self.file(), dest).is_some_and(|n| n == dest.len()) {
            return Ok(dest.len());
        }
        self.direct = start_direct(self.file()).is_ok();
        self.read_block(dest, 0)
    }

    /// Up to `dest.len()` bytes at `offset`; 0 at the end of the file. A failed direct
    /// read turns the file's direct mode off and is tried again buffered.
    fn read_block(&mut self, dest: &mut [u8], offset: u64) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        loop {
            match self.file().read_at(dest, offset) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if self.direct => {
                    self.direct = false;
                    if stop_direct(self.file()).is_err() {
                        self.reopened = Some(File::open(&self.path).map_err(|_| e)?);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The read-ahead thread: read the file into the blocks `free` hands it until the end of
/// the file, an error, or the reader hanging up; then the blocks go back to the spares.
fn read_blocks(mut source: Source, free: &Receiver<Vec<u8>>, filled: &Sender<io::Result<Filled>>) {
    let mut offset = 0u64;
    while let Ok(mut buf) = free.recv() {
        let start = aligned_start(&buf);
        let dest = &mut buf[start..start + BLOCK];
        let read = if offset == 0 {
            source.read_first(dest)
        } else {
            source.read_block(dest, offset)
        };
        let message = match read {
            Ok(len) => {
                offset += len as u64;
                Ok(Filled {
                    buf,
                    start,
                    len,
                    direct: source.direct,
                })
            }
            Err(e) => {
                give_back(buf);
                Err(e)
            }
        };
        let last = !matches!(&message, Ok(block) if block.len > 0);
        if let Err(unsent) = filled.send(message) {
            if let Ok(block) = unsent.0 {
                give_back(block.buf);
            }
            break;
        }
        if last {
            break;
        }
    }
    // Blocks handed back and not read into.
    while let Ok(buf) = free.try_recv() {
        give_back(buf);
    }
}

/// Read `dest.len()` bytes at offset 0 only as far as they are in the page cache: the
/// bytes read, or `None` when none are (or the kernel cannot tell).
#[cfg(target_os = "linux")]
fn cached_read(file: &File, dest: &mut [u8]) -> Option<usize> {
    use rustix::io::{preadv2, ReadWriteFlags};
    preadv2(
        file,
        &mut [io::IoSliceMut::new(dest)],
        0,
        ReadWriteFlags::NOWAIT,
    )
    .ok()
}

#[cfg(not(target_os = "linux"))]
fn cached_read(_file: &File, _dest: &mut [u8]) -> Option<usize> {
    None
}

#[cfg(target_os = "linux")]
fn start_direct(file: &File) -> io::Result<()> {
    use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
    fcntl_setfl(file, fcntl_getfl(file)? | OFlags::DIRECT)?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn start_direct(_file: &File) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Turn `O_DIRECT` off for `file`: the reads after go through the page cache.
#[cfg(target_os = "linux")]
fn stop_direct(file: &File) -> io::Result<()> {
    use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
    fcntl_setfl(file, fcntl_getfl(file)? - OFlags::DIRECT)?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn stop_direct(_file: &File) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::direct_io::DIRECT_ALIGN;
    use std::os::unix::fs::FileExt;

    fn read_all(r: &mut ReadAhead, piece: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = vec![0; piece];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    /// Whether files in `dir` can be switched to `O_DIRECT`.
    fn takes_direct(dir: &Path) -> bool {
        let path = dir.join("probe");
        std::fs::write(&path, [0u8; 10]).unwrap();
        start_direct(&File::open(&path).unwrap()).is_ok()
    }

    /// Write `data` to `path` and drop it from the page cache.
    fn write_uncached(path: &Path, data: &[u8]) {
        std::fs::write(path, data).unwrap();
        let file = File::open(path).unwrap();
        file.sync_all().unwrap();
        #[cfg(target_os = "linux")]
        rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
    }

    #[test]
    fn files_of_every_length_around_the_block_edges_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let lens = [
            0,
            1,
            DIRECT_ALIGN - 1,
            DIRECT_ALIGN,
            DIRECT_ALIGN + 1,
            BLOCK - 1,
            BLOCK,
            BLOCK + 1,
            3 * BLOCK + 4097,
        ];
        for len in lens {
            let data = crate::fuzzing::pseudo_random_bytes(len as u64, len);
            for (cached, piece) in [(true, 1 << 16), (false, 1 << 16), (false, 3 * BLOCK)] {
                let path = dir.path().join(format!("f{len}-{cached}-{piece}"));
                if cached {
                    std::fs::write(&path, &data).unwrap();
                } else {
                    write_uncached(&path, &data);
                }
                let got = read_all(&mut ReadAhead::open(&path).unwrap(), piece);
                assert!(got == data, "{len} bytes, cached {cached}, in {piece}");
            }
        }
    }

    #[test]
    fn cached_files_are_read_through_the_cache_and_the_others_direct() {
        let dir = tempfile::tempdir().unwrap();
        let data = crate::fuzzing::pseudo_random_bytes(2, 3 * BLOCK + 5);
        let cached = dir.path().join("cached");
        std::fs::write(&cached, &data).unwrap();
        let mut r = ReadAhead::open(&cached).unwrap();
        assert!(read_all(&mut r, 1 << 16) == data);
        assert_eq!(
            r.direct_blocks, 0,
            "a file just written is in the page cache"
        );

        let cold = dir.path().join("cold");
        write_uncached(&cold, &data);
        let mut r = ReadAhead::open(&cold).unwrap();
        assert!(read_all(&mut r, 1 << 16) == data);
        if takes_direct(dir.path()) {
            // Every block, the short last one included.
            assert_eq!(r.direct_blocks, 4);
        } else {
            // tmpfs before Linux 6.6, some FUSE file systems.
            assert_eq!(r.direct_blocks, 0);
        }
    }

    #[test]
    fn a_direct_read_that_fails_is_read_again_buffered() {
        let dir = tempfile::tempdir().unwrap();
        if !takes_direct(dir.path()) {
            eprintln!("skipped: {} takes no O_DIRECT", dir.path().display());
            return;
        }
        let path = dir.path().join("f");
        let data = crate::fuzzing::pseudo_random_bytes(9, BLOCK + 100);
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        start_direct(&file).unwrap();
        // An unaligned destination and offset. File systems that mind alignment (ext4,
        // xfs) refuse to read them direct; tmpfs takes them.
        let mut buf = vec![0; 1000];
        let refused = file.read_at(&mut buf[1..], 7).is_err();
        let mut source = Source {
            file: Arc::new(file),
            reopened: None,
            path: path.clone(),
            direct: true,
        };
        let n = source.read_block(&mut buf[1..], 7).unwrap();
        assert!(n > 0 && buf[1..1 + n] == data[7..7 + n]);
        assert_eq!(source.direct, !refused, "refused: {refused}");
        let flags = rustix::fs::fcntl_getfl(&*source.file).unwrap();
        assert_eq!(flags.contains(rustix::fs::OFlags::DIRECT), !refused);
    }

    #[test]
    fn a_reused_block_returns_only_the_next_files_bytes() {
        let dir = tempfile::tempdir().unwrap();
        // Blocks full of another file's bytes in the pool (tests running beside this one
        // may take some; each block is checked the same way wherever it goes).
        for _ in 0..BLOCKS {
            give_back(vec![0xEE; BLOCK + DIRECT_ALIGN]);
        }
        let path = dir.path().join("short");
        let data = crate::fuzzing::pseudo_random_bytes(4, BLOCK / 2 + 3);
        write_uncached(&path, &data);
        assert!(read_all(&mut ReadAhead::open(&path).unwrap(), 1 << 20) == data);
    }

    #[test]
    fn a_reader_dropped_early_lets_its_thread_end_and_close_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long");
        std::fs::write(&path, vec![1u8; 8 * BLOCK]).unwrap();
        let mut r = ReadAhead::open(&path).unwrap();
        let mut buf = [0u8; 10];
        r.read_exact(&mut buf).unwrap();
        let file = r.file.clone();
        drop(r);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while file.upgrade().is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "the read-ahead thread still holds the file"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn a_missing_file_is_an_error_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let err = ReadAhead::open(&dir.path().join("nope")).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
