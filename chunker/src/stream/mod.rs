//! [`StreamChunker`]: chunking for streams (stdin), tar-aware and page-aligned when the
//! stream is a tar archive, content-defined otherwise.
//!
//! Database base backups (`pg_basebackup -Ft -D -`, `mariabackup --stream` tars...) are
//! tar streams of files made of fixed-size pages (PostgreSQL 8 KiB, InnoDB 16 KiB).
//! Between two backups a database rewrites scattered pages in place, and most pages stay
//! the same. Content-defined chunks are larger than a page and their boundaries fall
//! anywhere, so one changed page usually changes one or two whole chunks. Cutting at each
//! page boundary instead makes every unchanged page deduplicate.
//!
//! Cut rules, for a stream whose first block is a valid ustar header ([`crate::tar`]):
//!
//! 1. Every member boundary is a cut. A member is its extension headers (pax `x`/`g`,
//!    GNU `L`/`K`) and their data, its header block, then its data padded to 512 bytes.
//! 2. A *page-structured* member: a regular file whose data length is a non-zero multiple
//!    of [`PAGE_SIZE`] (8 KiB). Its headers are one content-defined run, and its data is
//!    cut into *page groups* of [`tar_group_size`] bytes from its start (128 KiB, 16
//!    PostgreSQL pages, with params whose `max_size` allows it), the last group shorter:
//!    the rest of the data, a multiple of [`PAGE_SIZE`]. A changed page therefore changes
//!    exactly one group chunk, and identical files still deduplicate. Its data needs no
//!    padding, so the next member starts right after the last group.
//! 3. Any other member is one content-defined run (FastCDC with the given params; with
//!    [`rdb_stream_params`] of them if the member is a regular file whose data starts
//!    with a Redis RDB header, [`is_rdb`], whatever its length: KubeBlocks' redis addon
//!    pushes a tar of the data directory). This check comes before rule 2.
//! 4. The end-of-archive zero blocks and everything after them, and everything from the
//!    first block that is not a header this parser can follow (bad checksum, truncated
//!    stream, oversized extension data), is one content-defined run to the end.
//!
//! Cut rules, for a stream whose first bytes are the xbstream record magic `XBSTCK01`
//! ([`crate::xbstream`]; XtraBackup `--stream=xbstream`, mariabackup
//! `--stream=mbstream`) and params with `max_size` of at least [`XBSTREAM_PAGE_SIZE`]:
//!
//! 5. Every record boundary is a cut, and every record header (up to its payload) is one
//!    content-defined run.
//! 6. A payload record's payload, the file's bytes `offset..offset + len`, is cut where
//!    the file offset is a multiple of [`XBSTREAM_PAGE_SIZE`] (16 KiB, InnoDB's default
//!    page). A file sent in several records (mariabackup and XtraBackup split at their
//!    read size) keeps its pages whole as long as the records split at page multiples,
//!    which both do; otherwise the two pieces around the split are short chunks.
//! 7. A sparse payload record (header and payload) is one content-defined run.
//! 8. From the first record this parser cannot follow (wrong magic, unknown type,
//!    oversized path or sparse map, truncated header) to the end is one content-defined
//!    run.
//!
//! A content-defined run is cut exactly as [`Chunker`](crate::Chunker) cuts an input made
//! of the run's bytes. A stream that is neither (or chunked with
//! [`StreamChunking::Cdc`]) is therefore cut exactly as [`Chunker`](crate::Chunker) cuts
//! it; in [`StreamChunking::Auto`] with the params [`plain_stream_params`] returns (at most
//! [`ChunkerParams::SMALL`]'s average) unless it starts with the magic of a compressed
//! stream or pg_dump's custom format (`PGDMP`, gzip, zstd, xz, bzip2, lz4), with
//! [`StreamChunking::Cdc`] or a compressed stream with the given params, and a Redis RDB
//! file ([`is_rdb`]) with [`rdb_stream_params`] (at most [`RDB_PARAMS`]' 8 KiB average).
//! mongodump archives (`--archive`, magic `6d e2 99 81`) are plain streams: SMALL measured
//! best over two dumps; with `--gzip` they start with the gzip magic.

//! [`StreamChunker::next_tagged`] also tells where each page chunk sits: the member's
//! path and the unit number in its data ([`PagePosition`]: in a tar the group number,
//! with the group size as `page_size`), so a backup can find the same group of the same
//! member in an earlier snapshot. The path is the one the archive gives
//! the member: a pax `path` record, else a GNU long name, else the ustar header's
//! `prefix/name` (see [`tar::header_path`]). In an xbstream, each whole
//! [`XBSTREAM_PAGE_SIZE`] piece on the grid (rule 6) is page `offset / 16384` of the file
//! at the record's path. Every other chunk (header runs, other members, short pieces,
//! plain streams, [`StreamChunking::Cdc`]) has no position.
//!
//! Invariants, whatever the bytes (tar, damaged tar, random): the chunks concatenated are
//! the input; every chunk is `1..=max_size` bytes; chunks shorter than `min_size` occur
//! only at the end of a run (member headers, small members, the end of input); memory is
//! bounded by `max_size`, [`MAX_EXTENSION_DATA`] and the read size, not by the input.
//! Cut points are a pure function of the bytes, the params and the mode, never of how the
//! source splits its reads.

use std::io::{self, Read};
use std::mem;
use std::ops::Range;
use std::sync::Arc;

use fastcdc::v2020::FastCDC;

use crate::chunker::{read_checked, NORMALIZATION};
use crate::params::{ChunkerParams, ParamsError};
use crate::tar::{self, HeaderKind, BLOCK};
use crate::xbstream::{self, Parsed, RecordKind};

/// Page size of page-structured tar members: PostgreSQL's block size, and a divisor of
/// InnoDB's 16 KiB page. Part of the chunking definition of [`StreamChunking::Auto`].
pub const PAGE_SIZE: u32 = 8192;

/// Largest page group of page-structured tar members: 16 PostgreSQL pages. A chunk per
/// 8 KiB page cost about 100 bytes of ids (pack header, index, chunk list) per page and
/// compressed each page alone, so a first base backup stored twice what restic did;
/// groups of 16 pages cut the blob count 16-fold and compress like restic's chunks.
/// Part of the chunking definition of [`StreamChunking::Auto`].
pub const TAR_GROUP_SIZE: u32 = 128 * 1024;

/// The page group size of tar members cut with chunks of at most `max_size` bytes: the
/// largest of 128, 64, 32, 16 and 8 KiB that is at most `max_size`, or [`PAGE_SIZE`]
/// when even that is larger (tar streams are then not cut tar-aware at all).
pub fn tar_group_size(max_size: u32) -> u32 {
    let mut group = TAR_GROUP_SIZE;
    while group > PAGE_SIZE && group > max_size {
        group /= 2;
    }
    group
}

/// Chunk grid of xbstream payloads: each file's data is cut where its file offset is a
/// multiple of this, InnoDB's default page size. Part of the chunking definition of
/// [`StreamChunking::Auto`].
pub const XBSTREAM_PAGE_SIZE: u32 = 16384;

/// Largest extension header data (pax records, GNU long names) read to follow a member;
/// a longer one ends tar parsing (rule 4) so it can never make the chunker buffer more.
pub const MAX_EXTENSION_DATA: u64 = 1 << 20;

/// Most extension headers in front of one member before parsing gives up (rule 4).
const MAX_EXTENSION_HEADERS: usize = 16;

const XB_PAGE: usize = XBSTREAM_PAGE_SIZE as usize;

/// How much is asked of the source per read.
const READ_SIZE: usize = 256 * 1024;

/// How a stream is cut.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum StreamChunking {
    /// Tar-aware, page-aligned chunking when the stream starts with a ustar header;
    /// content-defined chunking otherwise (see the [module docs](self)).
    #[default]
    Auto,
    /// Content-defined chunking of the whole stream, exactly as [`Chunker`](crate::Chunker).
    Cdc,
}

/// Where a page chunk sits: the tar member (or xbstream file) it belongs to and its page
/// number there.
///
/// Both come from the archive's headers as written, unchecked: two members may have the
/// same path, and nothing proves a path names the same file in another archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PagePosition {
    /// The member's path as the archive names it (raw bytes, not normalized: `./base/1`
    /// and `base/1` differ). Shared by all the pages of a member (tar) or of a record
    /// (xbstream).
    pub member: Arc<[u8]>,
    /// Unit number within the member's data, from 0: the chunk is the member's bytes
    /// `page * page_size..`. Fewer than `page_size` bytes for the last group of a tar
    /// member (a multiple of [`PAGE_SIZE`]), or if the input ended early.
    pub page: u64,
    /// The unit size: the page group size ([`tar_group_size`] of the params' `max_size`)
    /// in a tar, [`XBSTREAM_PAGE_SIZE`] in an xbstream.
    pub page_size: u32,
}

/// One chunk of a stream, with its page position when it is a page of a tar member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamChunk {
    /// The chunk's bytes, exactly what the [`Iterator`] impl yields.
    pub data: Vec<u8>,
    /// `Some` for the page chunks of page-structured tar members (rule 2) and the whole
    /// pages of xbstream payloads (rule 6), `None` otherwise.
    pub page: Option<PagePosition>,
}

/// The format a stream was recognised as ([`StreamChunker::format`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum StreamFormat {
    /// Not recognised (or [`StreamChunking::Cdc`]): content-defined chunks throughout.
    #[default]
    Plain,
    /// A tar archive, cut by the tar rules.
    Tar,
    /// An xbstream/mbstream (XtraBackup, mariabackup), cut by the xbstream rules.
    Xbstream,
    /// A Redis RDB file ([`is_rdb`]): content-defined chunks with [`rdb_stream_params`].
    Rdb,
}

/// What the chunker is cutting at the current position.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Region {
    /// Nothing read yet: the first block decides between tar and plain CDC.
    Detect,
    /// At a member boundary of a tar stream.
    Boundary,
    /// A content-defined run with this many bytes left (`u64::MAX`: to the end), followed
    /// by `then`.
    Run { left: u64, then: Next },
    /// Page data of the member at `member` with `left` bytes left, next page number `page`.
    Pages {
        left: u64,
        page: u64,
        member: Arc<[u8]>,
    },
    /// At a record boundary of an xbstream.
    XbBoundary,
    /// Payload of an xbstream record: `left` bytes left, the next at `offset` of the file
    /// at path `member`.
    XbPayload {
        left: u64,
        offset: u64,
        member: Arc<[u8]>,
    },
    /// End of input or an error was returned.
    Done,
}

/// What follows a content-defined run.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Next {
    Boundary,
    /// `len` bytes of page data of the member at path `member`.
    Pages {
        len: u64,
        member: Arc<[u8]>,
    },
    XbBoundary,
    XbPayload {
        len: u64,
        offset: u64,
        member: Arc<[u8]>,
    },
}

/// Splits a stream into chunks by the rules in the [module docs](self).
///
/// Iterate to get the chunks in order, or call [`next_tagged`](Self::next_tagged) to get
/// them with their page positions; both can be mixed and cut the same chunks. Nothing is
/// read before the first call.
///
/// # Errors
///
/// Yields the source's [`io::Error`] when a read fails (retrying `Interrupted`), and
/// `InvalidData` if the source reports more bytes than it was given room for; the
/// iterator is finished after an error. Malformed tar data is never an error: it is
/// chunked as content-defined data.
///
/// # Panics
///
/// Never.
///
/// # Example
///
/// ```
/// use dprepo_chunker::{ChunkerParams, StreamChunker, StreamChunking};
///
/// let data = vec![3u8; 100_000]; // not a tar: cut like `Chunker`
/// let mut total = 0;
/// let mut chunks = StreamChunker::new(&data[..], ChunkerParams::SMALL, StreamChunking::Auto)?;
/// for chunk in chunks.by_ref() {
///     total += chunk?.len();
/// }
/// assert_eq!(total, data.len());
/// assert!(!chunks.tar_detected());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct StreamChunker<R: Read> {
    source: R,
    params: ChunkerParams,
    mode: StreamChunking,
    /// Bytes read and not yet returned are `buf[start..]`.
    buf: Vec<u8>,
    start: usize,
    eof: bool,
    region: Region,
    format: StreamFormat,
    /// Params of content-defined runs: `params`, or [`plain_stream_params`] or
    /// [`rdb_stream_params`] of them for a plain or RDB stream in [`StreamChunking::Auto`].
    run_params: ChunkerParams,
    /// Params of the current run when they differ from `run_params`: a tar member that is
    /// an RDB file (rule 3). Cleared when the run ends.
    member_params: Option<ChunkerParams>,
}

impl<R: Read> StreamChunker<R> {
    /// Creates a chunker over `source` cutting content-defined runs with `params`.
    ///
    /// If `params.max_size` is below [`PAGE_SIZE`], pages would not fit in a chunk, so
    /// [`StreamChunking::Auto`] falls back to content-defined chunking throughout.
    ///
    /// # Errors
    ///
    /// [`ParamsError`] if `params` fail [`ChunkerParams::validate`].
    pub fn new(
        source: R,
        params: ChunkerParams,
        mode: StreamChunking,
    ) -> Result<Self, ParamsError> {
        params.validate()?;
        Ok(StreamChunker {
            source,
            params,
            mode,
            buf: Vec::new(),
            start: 0,
            eof: false,
            region: Region::Detect,
            format: StreamFormat::Plain,
            run_params: params,
            member_params: None,
        })
    }

    /// True once the stream was recognised as tar and is cut by the tar rules. Final once
    /// the first chunk was returned.
    pub fn tar_detected(&self) -> bool {
        self.format == StreamFormat::Tar
    }

    /// The format the stream was recognised as. Final once the first chunk was returned.
    pub fn format(&self) -> StreamFormat {
        self.format
    }

    /// The params content-defined runs are cut with: the chunker's params, or for an
    /// unrecognised stream in [`StreamChunking::Auto`] [`plain_stream_params`] of them,
    /// for an RDB stream [`rdb_stream_params`] of them. Final once the first chunk was
    /// returned. (RDB members of a tar are cut with [`rdb_stream_params`] too; this still
    /// returns the tar's params.)
    pub fn run_params(&self) -> ChunkerParams {
        self.run_params
    }

    fn available(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Reads until at least `need` bytes are buffered or the source ends; returns the
    /// bytes buffered (fewer than `need` only at the end of input).
    fn fill(&mut self, need: usize) -> io::Result<usize> {
        while self.available() < need && !self.eof {
            if self.start > 0 && self.start >= self.buf.len() / 2 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let len = self.buf.len();
            let want = (need - self.available()).max(READ_SIZE);
            self.buf.resize(len + want, 0);
            let n = read_checked(&mut self.source, &mut self.buf[len..]);
            self.buf.truncate(len + *n.as_ref().unwrap_or(&0));
            if n? == 0 {
                self.eof = true;
            }
        }
        Ok(self.available())
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        let chunk = self.buf[self.start..self.start + n].to_vec();
        self.start += n;
        chunk
    }

    /// Decides the region at a member boundary, reading the member's headers.
    fn at_boundary(&mut self) -> io::Result<Region> {
        const TO_END: Region = Region::Run {
            left: u64::MAX,
            then: Next::Boundary,
        };
        let mut headers = 0usize; // bytes of extension headers and their data so far
        let mut size_override = None;
        // Where the member's path overrides are, as ranges of `buf` from `start` (the
        // buffer may move while headers are read, but never drops unreturned bytes).
        let mut pax_with_path: Option<Range<usize>> = None;
        let mut long_name: Option<Range<usize>> = None;
        for _ in 0..=MAX_EXTENSION_HEADERS {
            let need = headers + BLOCK;
            if self.fill(need)? < need {
                return Ok(TO_END);
            }
            let block = &self.buf[self.start + headers..self.start + need];
            if headers == 0 && tar::is_zero_block(block) {
                return Ok(TO_END);
            }
            let Some(kind) = tar::parse_header(block) else {
                return Ok(TO_END);
            };
            match kind {
                HeaderKind::Pax { data_len, .. } | HeaderKind::GnuLongName { data_len, .. } => {
                    let Some(padded) = tar::padded(data_len).filter(|&p| p <= MAX_EXTENSION_DATA)
                    else {
                        return Ok(TO_END);
                    };
                    // Bounded by MAX_EXTENSION_DATA (and the header count), so it fits.
                    let end = need + padded as usize;
                    if self.fill(end)? < end {
                        return Ok(TO_END);
                    }
                    let data = need..need + data_len as usize;
                    match kind {
                        HeaderKind::Pax { local: true, .. } => {
                            let records = &self.buf[self.start..][data.clone()];
                            if let Some(size) = tar::pax_size(records) {
                                size_override = Some(size);
                            }
                            if tar::pax_path(records).is_some() {
                                pax_with_path = Some(data);
                            }
                        }
                        HeaderKind::GnuLongName { link: false, .. } => long_name = Some(data),
                        _ => {}
                    }
                    headers = end;
                }
                HeaderKind::Member { data_len, regular } => {
                    let data_len = if regular {
                        size_override.unwrap_or(data_len)
                    } else {
                        data_len
                    };
                    let head = need as u64;
                    let page = u64::from(PAGE_SIZE);
                    if regular && data_len >= RDB_MAGIC_LEN as u64 {
                        let end = need + RDB_MAGIC_LEN;
                        if self.fill(end)? >= end && is_rdb(&self.buf[self.start + need..]) {
                            self.member_params = Some(rdb_stream_params(self.params));
                            return Ok(
                                match tar::padded(data_len).and_then(|p| p.checked_add(head)) {
                                    Some(left) => Region::Run {
                                        left,
                                        then: Next::Boundary,
                                    },
                                    None => TO_END,
                                },
                            );
                        }
                    }
                    if regular && data_len > 0 && data_len % page == 0 {
                        // Captured now, while the headers are buffered; one allocation
                        // per member, shared by its pages.
                        let here = &self.buf[self.start..];
                        let pax_path = pax_with_path.and_then(|r| tar::pax_path(&here[r]));
                        let gnu_name = long_name
                            .map(|r| tar::gnu_long_name(&here[r]))
                            .filter(|name| !name.is_empty());
                        let member: Arc<[u8]> = match pax_path.or(gnu_name) {
                            Some(path) => Arc::from(path),
                            None => Arc::from(
                                tar::header_path(&here[headers..need]).unwrap_or_default(),
                            ),
                        };
                        return Ok(Region::Run {
                            left: head,
                            then: Next::Pages {
                                len: data_len,
                                member,
                            },
                        });
                    }
                    return Ok(
                        match tar::padded(data_len).and_then(|p| p.checked_add(head)) {
                            Some(left) => Region::Run {
                                left,
                                then: Next::Boundary,
                            },
                            None => TO_END,
                        },
                    );
                }
            }
        }
        Ok(TO_END)
    }

    /// Decides the region at a record boundary of an xbstream, reading the record header.
    fn at_xb_boundary(&mut self) -> io::Result<Region> {
        const TO_END: Region = Region::Run {
            left: u64::MAX,
            then: Next::Boundary,
        };
        let mut need = 0;
        loop {
            let n = self.fill(need)?;
            let parsed = xbstream::parse_record(&self.buf[self.start..self.start + n]);
            let record = match parsed {
                // parse_record asks for more than it has, at most MAX_HEADER_LEN.
                Parsed::NeedMore(more) if more > n && more <= xbstream::MAX_HEADER_LEN => {
                    if n < need {
                        return Ok(TO_END); // the input ended inside the header
                    }
                    need = more;
                    continue;
                }
                Parsed::NeedMore(_) | Parsed::Invalid => return Ok(TO_END),
                Parsed::Record(record) => record,
            };
            let head = record.header_len as u64;
            return Ok(match record.kind {
                RecordKind::Eof => Region::Run {
                    left: head,
                    then: Next::XbBoundary,
                },
                RecordKind::Payload { len, offset } => {
                    // One allocation per record, shared by its pages.
                    let member = Arc::from(&self.buf[self.start..][record.path]);
                    Region::Run {
                        left: head,
                        then: Next::XbPayload {
                            len,
                            offset,
                            member,
                        },
                    }
                }
                RecordKind::Sparse { len } => match head.checked_add(len) {
                    Some(left) => Region::Run {
                        left,
                        then: Next::XbBoundary,
                    },
                    None => TO_END,
                },
            });
        }
    }

    /// The next chunk with its page position, or `None` at the end of input.
    ///
    /// Cuts exactly the chunks the [`Iterator`] impl yields (it calls this and drops the
    /// position). A page chunk is tagged even when the input ends inside it and it is
    /// short: check its length before using the position.
    ///
    /// # Errors
    ///
    /// As for iteration (see [`StreamChunker`]): the source's [`io::Error`], after which
    /// the chunker is finished and returns `None`.
    pub fn next_tagged(&mut self) -> Option<io::Result<StreamChunk>> {
        match self.next_chunk() {
            Ok(chunk) => chunk.map(Ok),
            Err(err) => {
                self.region = Region::Done;
                self.buf = Vec::new();
                self.start = 0;
                Some(Err(err))
            }
        }
    }

    /// The next chunk, or `None` at the end of input.
    ///
    /// The region is taken out for the step and each arm puts back the next one, so an
    /// error (`?`) leaves the chunker [`Region::Done`].
    fn next_chunk(&mut self) -> io::Result<Option<StreamChunk>> {
        loop {
            match mem::replace(&mut self.region, Region::Done) {
                Region::Done => return Ok(None),
                Region::Detect => {
                    let auto = self.mode == StreamChunking::Auto;
                    let n = self.fill(BLOCK)?;
                    let head = &self.buf[self.start..self.start + n];
                    self.format = if auto
                        && self.params.max_size >= PAGE_SIZE
                        && n >= BLOCK
                        && tar::looks_like_tar(head)
                    {
                        StreamFormat::Tar
                    } else if auto
                        && self.params.max_size >= XBSTREAM_PAGE_SIZE
                        && xbstream::looks_like_xbstream(head)
                    {
                        StreamFormat::Xbstream
                    } else if auto && is_rdb(head) {
                        StreamFormat::Rdb
                    } else {
                        StreamFormat::Plain
                    };
                    self.region = match self.format {
                        StreamFormat::Tar => Region::Boundary,
                        StreamFormat::Xbstream => Region::XbBoundary,
                        StreamFormat::Rdb => {
                            self.run_params = rdb_stream_params(self.params);
                            Region::Run {
                                left: u64::MAX,
                                then: Next::Boundary,
                            }
                        }
                        StreamFormat::Plain => {
                            if auto && !is_compressed(head) {
                                self.run_params = plain_stream_params(self.params);
                            }
                            Region::Run {
                                left: u64::MAX,
                                then: Next::Boundary,
                            }
                        }
                    };
                }
                Region::XbBoundary => {
                    if self.fill(1)? == 0 {
                        return Ok(None);
                    }
                    self.region = self.at_xb_boundary()?;
                }
                Region::XbPayload {
                    left,
                    offset,
                    member,
                } => {
                    if left == 0 {
                        self.region = Region::XbBoundary;
                        continue;
                    }
                    let grid = u64::from(XBSTREAM_PAGE_SIZE);
                    let piece = (grid - offset % grid).min(left) as usize;
                    let n = self.fill(piece)?.min(piece);
                    if n == 0 {
                        return Ok(None);
                    }
                    // Whole pages on the grid are tagged; the short pieces around a record
                    // split off the grid are not.
                    let page = (offset % grid == 0 && piece == XB_PAGE).then(|| PagePosition {
                        member: Arc::clone(&member),
                        page: offset / grid,
                        page_size: XBSTREAM_PAGE_SIZE,
                    });
                    self.region = Region::XbPayload {
                        left: left - n as u64,
                        offset: offset.wrapping_add(n as u64),
                        member,
                    };
                    return Ok(Some(StreamChunk {
                        data: self.take(n),
                        page,
                    }));
                }
                Region::Boundary => {
                    if self.fill(1)? == 0 {
                        return Ok(None);
                    }
                    self.region = self.at_boundary()?;
                }
                Region::Pages { left, page, member } => {
                    if left == 0 {
                        self.region = Region::Boundary;
                        continue;
                    }
                    let group = tar_group_size(self.params.max_size);
                    let size = u64::from(group).min(left) as usize;
                    let n = self.fill(size)?.min(size);
                    if n == 0 {
                        return Ok(None);
                    }
                    let position = PagePosition {
                        member: Arc::clone(&member),
                        page,
                        page_size: group,
                    };
                    self.region = Region::Pages {
                        left: left.saturating_sub(n as u64),
                        page: page + 1,
                        member,
                    };
                    return Ok(Some(StreamChunk {
                        data: self.take(n),
                        page: Some(position),
                    }));
                }
                Region::Run { left, then } => {
                    let p = self.member_params.unwrap_or(self.run_params);
                    let window = u64::from(p.max_size).min(left) as usize;
                    let n = self.fill(window)?.min(window);
                    if n == 0 {
                        // The run is over, or the input ended inside it.
                        self.member_params = None;
                        self.region = match then {
                            _ if self.eof && self.available() == 0 => Region::Done,
                            Next::Boundary => Region::Boundary,
                            Next::Pages { len, member } => Region::Pages {
                                left: len,
                                page: 0,
                                member,
                            },
                            Next::XbBoundary => Region::XbBoundary,
                            Next::XbPayload {
                                len,
                                offset,
                                member,
                            } => Region::XbPayload {
                                left: len,
                                offset,
                                member,
                            },
                        };
                        continue;
                    }
                    let data = &self.buf[self.start..self.start + n];
                    let (_, cut) = FastCDC::with_level(
                        data,
                        p.min_usize(),
                        p.avg_usize(),
                        p.max_usize(),
                        NORMALIZATION,
                    )
                    .cut(0, n);
                    // fastcdc returns a cut in 1..=n for a non-empty window; stay safe.
                    let cut = cut.clamp(1, n);
                    self.region = Region::Run {
                        left: if left == u64::MAX {
                            left
                        } else {
                            left - cut as u64
                        },
                        then,
                    };
                    return Ok(Some(StreamChunk {
                        data: self.take(cut),
                        page: None,
                    }));
                }
            }
        }
    }
}

/// Magic numbers of streams whose bytes are compressed: a change anywhere changes most
/// of what follows, so small chunks would only add index entries and compress worse.
/// pg_dump's custom format (`PGDMP`) compresses each table's data by default.
const COMPRESSED_MAGICS: &[&[u8]] = &[
    b"PGDMP",
    &[0x1f, 0x8b],                         // gzip
    &[0x28, 0xb5, 0x2f, 0xfd],             // zstd
    &[0xfd, b'7', b'z', b'X', b'Z', 0x00], // xz
    b"BZh",                                // bzip2
    &[0x04, 0x22, 0x4d, 0x18],             // lz4 frame
];

/// True if `head` starts with one of [`COMPRESSED_MAGICS`].
fn is_compressed(head: &[u8]) -> bool {
    COMPRESSED_MAGICS.iter().any(|m| head.starts_with(m))
}

/// The params content-defined runs of an unrecognised stream are cut with in
/// [`StreamChunking::Auto`]: `params` if their average is at most
/// [`ChunkerParams::SMALL`]'s, else [`ChunkerParams::SMALL`].
///
/// A stream nothing is known about is most often a database dump or data file rewritten
/// in place at scattered spots between backups, where each change costs about one to two
/// chunks; file-tree sized chunks would store most of it again (benches/NOTES.md, "Stream
/// chunking for database backups").
pub fn plain_stream_params(params: ChunkerParams) -> ChunkerParams {
    if params.avg_size > ChunkerParams::SMALL.avg_size {
        ChunkerParams::SMALL
    } else {
        params
    }
}

/// Length of the RDB magic [`is_rdb`] checks: `REDIS` and a four-digit version.
const RDB_MAGIC_LEN: usize = 9;

/// True if `head` starts with a Redis RDB header: `REDIS` and the RDB version as four
/// ASCII digits (`REDIS0010` from Redis 7.0, `REDIS0012` from 7.4; the same from
/// `BGSAVE`, `SAVE` and `redis-cli --rdb`).
pub fn is_rdb(head: &[u8]) -> bool {
    head.len() >= RDB_MAGIC_LEN
        && head.starts_with(b"REDIS")
        && head[5..RDB_MAGIC_LEN].iter().all(u8::is_ascii_digit)
}

/// Params for Redis RDB files: min 2 KiB, average 8 KiB, max 32 KiB.
///
/// An RDB file lists keys in hash-table order, which writes leave in place, and each
/// changed key costs about one chunk. Against SMALL, 8 KiB chunks stored 41% less for a
/// second dump after 1% of 200,000 keys changed while the first cost 2% more, for twice
/// the index entries (about 110,000 per GiB); benches/NOTES.md, "Redis RDB files and
/// mongodump archives".
pub const RDB_PARAMS: ChunkerParams = ChunkerParams {
    min_size: 2 * 1024,
    avg_size: 8 * 1024,
    max_size: 32 * 1024,
};

/// The params Redis RDB content (a stream that [`is_rdb`], or a tar member whose data
/// is) is cut with in [`StreamChunking::Auto`]: `params` if their average is at most
/// [`RDB_PARAMS`]' average, else [`RDB_PARAMS`].
pub fn rdb_stream_params(params: ChunkerParams) -> ChunkerParams {
    if params.avg_size > RDB_PARAMS.avg_size {
        RDB_PARAMS
    } else {
        params
    }
}

impl<R: Read> Iterator for StreamChunker<R> {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_tagged().map(|chunk| chunk.map(|c| c.data))
    }
}

#[cfg(test)]
mod tests;
