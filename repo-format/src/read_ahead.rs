//! Reading a long file being backed up: on a thread of its own, a few blocks ahead of the
//! chunker, and on Linux past the page cache (`O_DIRECT`).
//!
//! The chunker reads on the walker thread, which was the busiest thread of a backup of
//! large files. Through the page cache, each byte read cost it a copy out of the cache,
//! and the kernel the filling of a fresh page-cache page first: on the project machine (a
//! VM whose free pages go back to the host) `dd` read 1 GiB cold in 0.7-3.4 s of system
//! time buffered and 0.1 s direct (BENCHMARKS.md, "Long files read past the page cache").
//! Direct reads have no kernel read-ahead, so a thread reads ahead instead, and the disk
//! stays busy while the chunker works. It also leaves the page cache to the applications
//! being backed up.
//!
//! Any direct read that fails is tried again buffered, as is the rest of the file: the
//! file system may not take direct reads (EINVAL), or a short read may have left the
//! offset unaligned. An error of the disk fails the buffered read too, and is returned.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;

/// Bytes per read: large enough that a direct read costs little more than its transfer.
const BLOCK: usize = 1 << 20;

/// Blocks of one file: the one the chunker reads from, one read and waiting, and one
/// being read.
const BLOCKS: usize = 3;

/// What direct reads align memory, file offsets and lengths to: a multiple of the logical
/// block size of 512-byte and 4 KiB devices alike.
const ALIGN: usize = 4096;

/// Blocks kept for the next file (one file's worth): fresh memory costs a page fault per
/// 4 KiB, and on the project machine each of those a trip to the host. They are allocated
/// by the thread opening files, never by a read-ahead thread: memory a short-lived thread
/// allocates comes from an arena of its own, and stayed resident there once freed.
static SPARE_BLOCKS: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn take_block() -> Vec<u8> {
    SPARE_BLOCKS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop()
        .unwrap_or_else(|| vec![0; BLOCK + ALIGN])
}

fn give_back(block: Vec<u8>) {
    let mut spare = SPARE_BLOCKS.lock().unwrap_or_else(|e| e.into_inner());
    if spare.len() < BLOCKS {
        spare.push(block);
    }
}

/// One block read: its bytes are `buf[start..start + len]`; `len` 0 marks the end.
struct Filled {
    buf: Vec<u8>,
    start: usize,
    len: usize,
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
    plain: Option<File>,
    current: Option<Filled>,
    pos: usize,
    done: bool,
}

impl ReadAhead {
    /// Open `path` (direct where the file system allows) and start reading it.
    ///
    /// # Errors
    /// The error of opening the file.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let file = open_direct(path).or_else(|_| File::open(path))?;
        Self::start(file)
    }

    /// Start reading `file` from its start on a new thread, or, when no thread can be
    /// started, read it on the caller's thread through the page cache.
    fn start(file: File) -> io::Result<Self> {
        let (filled_tx, filled) = channel();
        let (free, free_rx) = channel();
        for _ in 0..BLOCKS {
            // Cannot fail: the receiver is in scope.
            let _ = free.send(take_block());
        }
        let same_file = file.try_clone()?;
        let spawned = std::thread::Builder::new()
            .name("read-ahead".into())
            .spawn(move || read_blocks(&file, &free_rx, &filled_tx));
        let plain = match spawned {
            Ok(_) => None,
            Err(_) => {
                if is_direct(&same_file) {
                    stop_direct(&same_file)?;
                }
                Some(same_file)
            }
        };
        Ok(ReadAhead {
            filled,
            free,
            plain,
            current: None,
            pos: 0,
            done: false,
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
        if let Some(file) = &mut self.plain {
            return file.read(out);
        }
        loop {
            if self.done || out.is_empty() {
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
                    self.done = true;
                }
                Ok(Ok(block)) => {
                    self.current = Some(block);
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Err(io::Error::other("the read-ahead thread stopped"));
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

/// The read-ahead thread: read `file` into the blocks `free` hands it until the end of
/// the file, an error, or the reader hanging up; then the blocks go back to the spares.
fn read_blocks(file: &File, free: &Receiver<Vec<u8>>, filled: &Sender<io::Result<Filled>>) {
    let mut direct = is_direct(file);
    let mut offset = 0u64;
    while let Ok(mut buf) = free.recv() {
        let start = buf.as_ptr().align_offset(ALIGN).min(ALIGN);
        let message = match read_block(file, &mut buf[start..start + BLOCK], offset, &mut direct) {
            Ok(len) => {
                offset += len as u64;
                Ok(Filled { buf, start, len })
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

/// Read up to `dest.len()` bytes at `offset`; 0 at the end of the file. A failed direct
/// read turns the file's direct mode off and is tried again buffered.
fn read_block(file: &File, dest: &mut [u8], offset: u64, direct: &mut bool) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    loop {
        match file.read_at(dest, offset) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if *direct => {
                stop_direct(file).map_err(|_| e)?;
                *direct = false;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path) -> io::Result<File> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

#[cfg(target_os = "linux")]
fn is_direct(file: &File) -> bool {
    rustix::fs::fcntl_getfl(file).is_ok_and(|flags| flags.contains(rustix::fs::OFlags::DIRECT))
}

#[cfg(not(target_os = "linux"))]
fn is_direct(_file: &File) -> bool {
    false
}

/// Turn `O_DIRECT` off for `file`: the reads after go through the page cache.
#[cfg(target_os = "linux")]
fn stop_direct(file: &File) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(file)?;
    rustix::fs::fcntl_setfl(file, flags - rustix::fs::OFlags::DIRECT)?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn stop_direct(_file: &File) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn read_all(mut r: impl Read, piece: usize) -> Vec<u8> {
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

    #[test]
    fn files_of_every_length_around_the_block_edges_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        for len in [
            0,
            1,
            ALIGN - 1,
            ALIGN,
            ALIGN + 1,
            BLOCK - 1,
            BLOCK,
            BLOCK + 1,
            3 * BLOCK + 4097,
        ] {
            let data = crate::fuzzing::pseudo_random_bytes(len as u64, len);
            let path = dir.path().join(format!("f{len}"));
            std::fs::write(&path, &data).unwrap();
            for piece in [1 << 16, 3 * BLOCK] {
                assert!(
                    read_all(ReadAhead::open(&path).unwrap(), piece) == data,
                    "{len} in {piece}"
                );
            }
        }
    }

    #[test]
    fn a_file_the_directory_takes_direct_reads_for_is_read_direct() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![5u8; 2 * BLOCK]).unwrap();
        let Ok(file) = open_direct(&path) else {
            return; // this file system takes no O_DIRECT: the buffered path is the test above
        };
        assert!(is_direct(&file));
        let mut direct = true;
        let mut buf = take_block();
        let start = buf.as_ptr().align_offset(ALIGN);
        let n = read_block(&file, &mut buf[start..start + BLOCK], 0, &mut direct).unwrap();
        assert_eq!(n, BLOCK);
        assert!(
            direct,
            "an aligned read of a direct file failed and fell back"
        );
    }

    #[test]
    fn a_direct_read_that_fails_is_read_again_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data = crate::fuzzing::pseudo_random_bytes(9, BLOCK + 100);
        std::fs::write(&path, &data).unwrap();
        let (Ok(file), Ok(probe)) = (open_direct(&path), open_direct(&path)) else {
            return; // no O_DIRECT here: reads are buffered from the start
        };
        // An unaligned destination and offset. File systems that mind alignment (ext4,
        // xfs) refuse to read them direct.
        let mut buf = vec![0; 1000];
        let refused = probe.read_at(&mut buf[1..], 7).is_err();
        let mut direct = true;
        let n = read_block(&file, &mut buf[1..], 7, &mut direct).unwrap();
        assert!(n > 0 && buf[1..1 + n] == data[7..7 + n]);
        assert_eq!(direct, !refused, "refused: {refused}");
        assert_eq!(direct, is_direct(&file));
    }

    #[test]
    fn a_reused_block_returns_only_the_next_files_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let long = dir.path().join("long");
        std::fs::write(&long, vec![1u8; 8 * BLOCK]).unwrap();
        let mut r = ReadAhead::open(&long).unwrap();
        let mut buf = [0u8; 10];
        r.read_exact(&mut buf).unwrap();
        drop(r); // early, with blocks read ahead
        let short = dir.path().join("short");
        let data = crate::fuzzing::pseudo_random_bytes(4, BLOCK / 2 + 3);
        std::fs::write(&short, &data).unwrap();
        assert!(read_all(ReadAhead::open(&short).unwrap(), 1 << 20) == data);
        assert!(SPARE_BLOCKS.lock().unwrap().len() <= BLOCKS);
    }

    #[test]
    fn a_missing_file_is_an_error_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let err = ReadAhead::open(&dir.path().join("nope")).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
