//! Storage names: the one rule every backend applies to names and listing prefixes, so
//! that a repository can move between backends (SPEC.md section 3, "Valid names").
//!
//! File names starting with [`TEMP_PREFIX`] are reserved for the local backend's own
//! use and are never blob names: temporary files of writes, and the directory of lock
//! files of conditional writes ([`LOCK_DIR`]). Rejecting them here keeps them out of
//! every listing and out of reach of every operation.

use crate::error::{Error, Result};

/// File names starting with this are in-flight (or abandoned) writes, never blobs.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

/// The directory below the local backend's root holding one lock file for each
/// directory where it creates names, serialising updates with overwrites and deletes of
/// that directory's files (`local.rs`). It has the temporary-file prefix, so it is
/// never a blob name, but it holds no temporary files: it is never listed nor deleted.
pub(crate) const LOCK_DIR: &str = ".tmp-locks";

/// Check that `name` is a valid blob name: non-empty `/`-separated components, none of
/// them empty, `.` or `..`, or starting with the temporary-file prefix `.tmp-`; no
/// leading `/`, no backslash, no NUL.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the offending blob name and the reason.
pub(crate) fn validate_name(name: &str) -> Result<()> {
    let reject = |why: &str| Err(Error::InvalidArgument(format!("blob name {name:?} {why}")));
    if name.is_empty() {
        return reject("is empty");
    }
    if name.starts_with('/') {
        return reject("starts with '/'");
    }
    if name.contains('\\') {
        return reject("contains a backslash");
    }
    if name.contains('\0') {
        return reject("contains a NUL byte");
    }
    for component in name.split('/') {
        if component.is_empty() {
            return reject("has an empty path component");
        }
        if component == "." || component == ".." {
            return reject("has a '.' or '..' component");
        }
        if component.starts_with(TEMP_PREFIX) {
            return reject("uses the reserved temporary-file prefix \".tmp-\"");
        }
    }
    Ok(())
}

/// Check that `prefix` is a valid listing prefix: empty, or a string whose part up to
/// the last `/` is a valid blob name followed by `/`, and whose remainder contains no
/// backslash or NUL.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the prefix and the reason.
pub(crate) fn validate_prefix(prefix: &str) -> Result<()> {
    let (dir, rest) = split_prefix(prefix);
    if !dir.is_empty() {
        validate_name(dir.trim_end_matches('/')).map_err(|_| {
            Error::InvalidArgument(format!(
                "list prefix {prefix:?} does not start with a valid directory name"
            ))
        })?;
        if dir.ends_with("//") {
            return Err(Error::InvalidArgument(format!(
                "list prefix {prefix:?} has an empty path component"
            )));
        }
    }
    if rest.contains('\\') || rest.contains('\0') {
        return Err(Error::InvalidArgument(format!(
            "list prefix {prefix:?} contains a backslash or NUL byte"
        )));
    }
    Ok(())
}

/// Split a listing prefix into the directory part (up to and including the last `/`,
/// possibly empty) and the partial last component.
pub(crate) fn split_prefix(prefix: &str) -> (&str, &str) {
    match prefix.rfind('/') {
        Some(i) => prefix.split_at(i + 1),
        None => ("", prefix),
    }
}
