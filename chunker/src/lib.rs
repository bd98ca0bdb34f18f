//! Content-defined chunking for dprepo: a thin, validated layer over FastCDC 2020
//! (`fastcdc::v2020`).
//!
//! A backup splits every file (or stream) into chunks whose boundaries depend on the
//! content, not on offsets, so an insertion or deletion only changes the chunks around it
//! and the rest deduplicate against earlier snapshots. This crate only cuts bytes into
//! chunks; hashing, compression, encryption and the index live in `dprepo-repo-format`.
//! It does no I/O beyond the [`Read`](std::io::Read) source it is given.
//!
//! # Modules
//!
//! - [`params`]: [`ChunkerParams`] (min/avg/max chunk size, the [`DEFAULT`] for file
//!   trees and [`SMALL`] for database page streams) and their validation, [`ParamsError`].
//! - [`chunker`]: the streaming [`Chunker`] iterator.
//! - [`stream`]: [`StreamChunker`] for streams (stdin): tar-aware, page-aligned cuts for
//!   tar streams of database files, record-aware cuts on the InnoDB page grid for
//!   xbstream/mbstream streams, small content-defined chunks otherwise
//!   ([`StreamChunking`], [`StreamFormat`]); [`StreamChunk`]s tag each page chunk of a
//!   tar member with its member and page ([`PagePosition`]).
//! - [`tar`]: the minimal tar header parser [`stream`] follows member boundaries and
//!   names members with.
//! - [`xbstream`]: the minimal xbstream record parser [`stream`] follows records with.
//!
//! [`DEFAULT`]: ChunkerParams::DEFAULT
//! [`SMALL`]: ChunkerParams::SMALL
//!
//! # Example
//!
//! ```
//! use dprepo_chunker::{Chunker, ChunkerParams};
//!
//! // Any `Read` works: a file, stdin, a decompressor. Here: 3 MiB of varied bytes.
//! let data: Vec<u8> = (0u32..3 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
//! let params = ChunkerParams::SMALL;
//! let mut restored = Vec::new();
//! for chunk in Chunker::new(&data[..], params)? {
//!     let chunk = chunk?; // an I/O error of the source, passed through
//!     assert!(chunk.len() <= params.max_size as usize);
//!     restored.extend_from_slice(&chunk);
//! }
//! assert_eq!(restored, data);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Stability of chunk boundaries
//!
//! Deduplication across snapshots only works if the same bytes are cut at the same places
//! by every dprepo version that writes to a repository. The cut points are a pure
//! function of the input bytes and of the *chunking definition*:
//!
//! - the algorithm: FastCDC 2020 as implemented by `fastcdc` 5.x (`v2020` module);
//! - normalization level 1 (`Normalization::Level1`);
//! - the built-in gear table, unseeded (seed 0);
//! - the three sizes of [`ChunkerParams`], which a repository records.
//!
//! For [`StreamChunker`] in [`StreamChunking::Auto`] mode, the tar and xbstream cut rules
//! in [`stream`], [`PAGE_SIZE`], [`TAR_GROUP_SIZE`], [`XBSTREAM_PAGE_SIZE`],
//! [`plain_stream_params`], [`is_rdb`] and [`rdb_stream_params`] are part of the
//! definition too.
//!
//! None of the first three may change without a new, recorded chunking version. A test
//! (`chunk_boundaries_are_stable`) pins the chunk lengths of a fixed pseudo-random input,
//! so a `fastcdc` upgrade that moves boundaries fails the build. A changed definition
//! never corrupts data, it only stops new chunks from deduplicating against old ones.
//!
//! Caveat: with an unseeded gear table the chunk sizes of a known file are predictable. An
//! observer who sees the (encrypted) blob sizes in a repository can test whether it holds a
//! file they already have. Per-repository gear seeds would close this; they are not part
//! of the current definition.

#![warn(missing_docs)]

pub mod chunker;
pub mod params;
pub mod stream;
pub mod tar;
pub mod xbstream;

pub use crate::chunker::Chunker;
pub use crate::params::{ChunkerParams, ParamsError, ParamsViolation, SizeField};
pub use crate::stream::{
    is_rdb, plain_stream_params, rdb_stream_params, tar_group_size, PagePosition, StreamChunk,
    StreamChunker, StreamChunking, StreamFormat, PAGE_SIZE, RDB_PARAMS, TAR_GROUP_SIZE,
    XBSTREAM_PAGE_SIZE,
};
