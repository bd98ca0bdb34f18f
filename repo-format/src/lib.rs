//! dprepo repository engine.
#![warn(missing_docs)]

pub mod backup;
pub mod blob;
pub mod catalog;
pub mod codec;
pub mod config;
pub mod content;
pub mod copy;
pub mod crypto;
pub mod data_ids;
pub mod diff;
mod direct_io;
pub mod envelope;
pub mod error;
pub mod file_meta;
pub mod file_size;
mod free_space;
pub mod fuzzing;
pub mod gc;
pub mod id;
pub mod index;
pub mod inspect;
pub mod key;
pub mod keyring;
pub mod layout;
pub mod liveness;
pub mod locator;
pub mod manifest;
pub mod pack;
pub mod page_deltas;
pub mod problem;
mod read_ahead;
pub mod repair;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod rewrite;
pub mod rotate;
pub mod saver;
pub mod selection;
pub mod session;
pub mod stats;
pub mod storage;
pub mod tree;
pub mod verify;

pub use dprepo_chunker as chunker;
pub use error::{Error, Result};
pub use id::BlobId;
/// The RocksDB index cache, also at its old path.
pub use index::cache as index_cache;
pub use repo::{InitOptions, Repository, Snapshot};
