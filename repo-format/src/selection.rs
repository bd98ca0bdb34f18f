//! Which paths a command takes: exclude and include patterns, marker files, a size
//! limit and file-system boundaries (restic's `--exclude` family).
//!
//! Patterns follow restic's rules, so a restic user's exclude files work unchanged:
//! - a pattern is a glob over `/`-separated path components (`*` and `?` stay within
//!   one component, `**` spans any number, `[abc]` and `{a,b}` as usual);
//! - a pattern starting with `/` is anchored at the root; any other pattern matches a
//!   run of components anywhere in the path (`cache` matches `/home/u/cache`);
//! - a pattern that matches a directory matches everything below it;
//! - a pattern starting with `!` re-includes what an earlier pattern excluded: the
//!   last pattern that matches a path decides.
//!
//! The same [`PatternSet`] serves backup (`--exclude`), restore and dump (`--include`,
//! `--exclude`) and `rewrite`. Paths are matched as bytes: names need not be UTF-8.

use crate::error::{Error, Result};
use globset::{GlobBuilder, GlobMatcher};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The marker file `--exclude-caches` looks for, and the signature it must start with
/// (<https://bford.info/cachedir/>).
pub const CACHEDIR_TAG: &str = "CACHEDIR.TAG";
/// The first bytes of a valid CACHEDIR.TAG.
pub const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// One pattern, compiled.
#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    negated: bool,
    /// The pattern itself, and the pattern followed by `/**` (what lies below a match).
    matchers: [GlobMatcher; 2],
}

/// An ordered list of patterns; the last one matching a path decides.
#[derive(Debug, Clone, Default)]
pub struct PatternSet {
    patterns: Vec<Pattern>,
}

impl PatternSet {
    /// An empty set: matches nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `pattern` (restic syntax, see the module documentation); `ignore_case`
    /// for `--iexclude`/`--iinclude`. Blank patterns are ignored.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the pattern when it is not a valid glob.
    pub fn add(&mut self, pattern: &str, ignore_case: bool) -> Result<()> {
        let trimmed = pattern.trim();
        let (negated, body) = match trimmed.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        let body = body.trim_end_matches('/');
        if body.is_empty() {
            return Ok(());
        }
        let anchored = if body.starts_with('/') {
            body.to_string()
        } else {
            format!("**/{body}")
        };
        let build = |glob: &str| {
            GlobBuilder::new(glob)
                .literal_separator(true)
                .case_insensitive(ignore_case)
                .backslash_escape(true)
                .build()
                .map(|g| g.compile_matcher())
                .map_err(|e| {
                    Error::InvalidArgument(format!("pattern {pattern:?} is not valid: {e}"))
                })
        };
        let matchers = [build(&anchored)?, build(&format!("{anchored}/**"))?];
        self.patterns.push(Pattern {
            text: trimmed.to_string(),
            negated,
            matchers,
        });
        Ok(())
    }

    /// Add every pattern of an exclude file: one per line, blank lines and lines
    /// starting with `#` ignored, surrounding whitespace trimmed (as restic reads
    /// `--exclude-file`).
    ///
    /// # Errors
    /// As [`PatternSet::add`], naming the file and line.
    pub fn add_file_contents(&mut self, file: &str, text: &str, ignore_case: bool) -> Result<()> {
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            self.add(line, ignore_case)
                .map_err(|e| Error::InvalidArgument(format!("{file}, line {}: {e}", n + 1)))?;
        }
        Ok(())
    }

    /// Whether the set has no patterns.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The pattern that decides for `path` (absolute, `/`-separated), if any matches:
    /// `Some((pattern, false))` for a plain pattern, `Some((pattern, true))` for a
    /// negated one.
    pub fn decide(&self, path: &Path) -> Option<(&str, bool)> {
        self.patterns
            .iter()
            .rev()
            .find(|p| p.matchers.iter().any(|m| m.is_match(path)))
            .map(|p| (p.text.as_str(), p.negated))
    }

    /// Whether `path` is matched (by a plain pattern, not re-included by a negated one).
    pub fn matches(&self, path: &Path) -> bool {
        matches!(self.decide(path), Some((_, false)))
    }

    /// Whether something below directory `dir` could match a plain pattern: false only
    /// when every plain pattern is anchored and diverges from `dir` in a literal
    /// component (so `restore --include /a/b` does not descend into `/c`).
    pub fn may_match_below(&self, dir: &Path) -> bool {
        let dir_parts: Vec<&[u8]> = components(dir);
        self.patterns.iter().filter(|p| !p.negated).any(|p| {
            let body = p.text.as_str();
            if !body.starts_with('/') {
                return true;
            }
            let parts: Vec<&str> = body.split('/').filter(|s| !s.is_empty()).collect();
            for (i, d) in dir_parts.iter().enumerate() {
                let Some(part) = parts.get(i) else {
                    return true; // the pattern ends above or at `dir`
                };
                if part.contains("**") {
                    return true;
                }
                if is_literal(part) && part.as_bytes() != *d {
                    return false;
                }
            }
            true
        })
    }
}

fn components(path: &Path) -> Vec<&[u8]> {
    path.as_os_str()
        .as_bytes()
        .split(|b| *b == b'/')
        .filter(|s| !s.is_empty())
        .collect()
}

fn is_literal(part: &str) -> bool {
    !part.contains(['*', '?', '[', '{', '\\'])
}

/// A marker file whose presence excludes its directory (`--exclude-if-present
/// NAME[:HEADER]`): with a header, only a marker starting with those bytes counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// File name looked for in each directory.
    pub name: String,
    /// Bytes the file must start with, if any.
    pub header: Option<Vec<u8>>,
}

impl Marker {
    /// Parse `NAME[:HEADER]`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty name or one containing `/`.
    pub fn parse(spec: &str) -> Result<Marker> {
        let (name, header) = match spec.split_once(':') {
            Some((n, h)) => (n, Some(h.as_bytes().to_vec())),
            None => (spec, None),
        };
        if name.is_empty() || name.contains('/') {
            return Err(Error::InvalidArgument(format!(
                "--exclude-if-present {spec:?}: expected a file name, optionally followed by :HEADER"
            )));
        }
        Ok(Marker {
            name: name.to_string(),
            header,
        })
    }

    /// The CACHEDIR.TAG marker with its signature (`--exclude-caches`).
    pub fn cachedir_tag() -> Marker {
        Marker {
            name: CACHEDIR_TAG.to_string(),
            header: Some(CACHEDIR_SIGNATURE.to_vec()),
        }
    }

    /// Whether directory `dir` holds this marker. A marker that cannot be read counts
    /// as absent (the directory is backed up, and its unreadable files reported).
    fn present_in(&self, dir: &Path) -> bool {
        let file = dir.join(&self.name);
        match &self.header {
            None => std::fs::symlink_metadata(&file).is_ok(),
            Some(header) => {
                use std::io::Read;
                let Ok(f) = std::fs::File::open(&file) else {
                    return false;
                };
                let mut start = Vec::with_capacity(header.len());
                match f.take(header.len() as u64).read_to_end(&mut start) {
                    Ok(_) => start == *header,
                    Err(_) => false,
                }
            }
        }
    }
}

/// Why an entry was left out of a backup.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum ExcludeReason {
    /// An exclude pattern matched.
    Pattern {
        /// The pattern, as given.
        pattern: String,
    },
    /// The directory holds a marker file.
    Marker {
        /// The marker's name.
        name: String,
    },
    /// The file is larger than the limit.
    TooLarge {
        /// The file's size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A directory on another file system (its mount point is kept, empty).
    OtherFileSystem,
}

impl std::fmt::Display for ExcludeReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExcludeReason::Pattern { pattern } => write!(f, "matches {pattern:?}"),
            ExcludeReason::Marker { name } => write!(f, "holds {name}"),
            ExcludeReason::TooLarge { size, limit } => {
                write!(f, "{size} bytes, larger than {limit}")
            }
            ExcludeReason::OtherFileSystem => write!(f, "on another file system"),
        }
    }
}

/// An entry a backup left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Excluded {
    /// The entry's absolute path.
    pub path: PathBuf,
    /// Why.
    #[serde(flatten)]
    pub reason: ExcludeReason,
}

/// What a backup reads: every entry below the given paths, except what this excludes.
/// The default excludes nothing.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Exclude patterns (`--exclude`, `--iexclude`, `--exclude-file`).
    pub excludes: PatternSet,
    /// Marker files (`--exclude-if-present`, `--exclude-caches`).
    pub markers: Vec<Marker>,
    /// Files larger than this many bytes are left out (`--exclude-larger-than`).
    pub larger_than: Option<u64>,
    /// Do not descend into directories on another file system than the backed-up
    /// path they are below (`--one-file-system`); their mount points are kept empty.
    pub one_file_system: bool,
}

impl Selection {
    /// Whether this selection excludes nothing.
    pub fn is_everything(&self) -> bool {
        self.excludes.is_empty()
            && self.markers.is_empty()
            && self.larger_than.is_none()
            && !self.one_file_system
    }

    /// Why the entry at `path` (lstat'ed as `meta`) is left out, or `None` to back it
    /// up. Directories are checked for markers here; the file-system boundary is
    /// [`Selection::descend`]'s.
    pub fn exclude(&self, path: &Path, meta: &std::fs::Metadata) -> Option<ExcludeReason> {
        if let Some((pattern, false)) = self.excludes.decide(path) {
            return Some(ExcludeReason::Pattern {
                pattern: pattern.to_string(),
            });
        }
        if meta.is_file() {
            if let Some(limit) = self.larger_than {
                if meta.len() > limit {
                    return Some(ExcludeReason::TooLarge {
                        size: meta.len(),
                        limit,
                    });
                }
            }
        }
        if meta.is_dir() {
            if let Some(m) = self.markers.iter().find(|m| m.present_in(path)) {
                return Some(ExcludeReason::Marker {
                    name: m.name.clone(),
                });
            }
        }
        None
    }

    /// Whether to list the entries of directory `dir` (lstat'ed as `meta`), given the
    /// device of the backed-up path it is below.
    pub fn descend(&self, meta: &std::fs::Metadata, top_device: Option<u64>) -> bool {
        !self.one_file_system || top_device.is_none_or(|d| d == meta.dev())
    }
}

/// Include and exclude patterns over the paths of a snapshot (`/`-rooted, as `dprepo
/// ls` prints them), for restore, dump and rewrite. The default takes everything.
#[derive(Debug, Clone, Default)]
pub struct PathFilter {
    /// When not empty, only paths matching one of these (and what is below them).
    pub include: PatternSet,
    /// Paths matching these (and what is below them) are left out.
    pub exclude: PatternSet,
}

impl PathFilter {
    /// Whether nothing is filtered.
    pub fn is_everything(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    /// Whether `path` is excluded.
    pub fn excludes(&self, path: &Path) -> bool {
        self.exclude.matches(path)
    }

    /// Whether the entry at `path` is taken: not excluded, and included when includes
    /// were given.
    pub fn takes(&self, path: &Path) -> bool {
        !self.excludes(path) && (self.include.is_empty() || self.include.matches(path))
    }

    /// Whether to look below directory `path` although it is not taken itself: it is
    /// not excluded, and an include may match something below it.
    pub fn descends(&self, path: &Path) -> bool {
        !self.excludes(path) && (self.include.is_empty() || self.include.may_match_below(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(patterns: &[&str]) -> PatternSet {
        let mut s = PatternSet::new();
        for p in patterns {
            s.add(p, false).unwrap();
        }
        s
    }

    #[test]
    fn relative_patterns_match_anywhere_and_cover_what_is_below() {
        let s = set(&["*.log", "cache"]);
        assert!(s.matches(Path::new("/a/b/x.log")));
        assert!(s.matches(Path::new("/x.log")));
        assert!(s.matches(Path::new("/home/u/cache")));
        assert!(s.matches(Path::new("/home/u/cache/deep/file")));
        assert!(!s.matches(Path::new("/home/u/caches")));
        assert!(!s.matches(Path::new("/a/x.log.txt")));
    }

    #[test]
    fn anchored_patterns_match_from_the_root_only() {
        let s = set(&["/home/*/tmp"]);
        assert!(s.matches(Path::new("/home/u/tmp")));
        assert!(s.matches(Path::new("/home/u/tmp/f")));
        assert!(!s.matches(Path::new("/x/home/u/tmp")));
        assert!(!s.matches(Path::new("/home/u/v/tmp")));
    }

    #[test]
    fn the_last_matching_pattern_decides() {
        let s = set(&["/data/*", "!/data/keep"]);
        assert!(s.matches(Path::new("/data/drop")));
        assert!(!s.matches(Path::new("/data/keep")));
        assert!(!s.matches(Path::new("/data/keep/inner")));
    }

    #[test]
    fn ignore_case_matches_any_case() {
        let mut s = PatternSet::new();
        s.add("*.JPG", true).unwrap();
        assert!(s.matches(Path::new("/p/a.jpg")));
        assert!(!set(&["*.JPG"]).matches(Path::new("/p/a.jpg")));
    }

    #[test]
    fn exclude_file_skips_comments_and_blank_lines_and_names_bad_lines() {
        let mut s = PatternSet::new();
        s.add_file_contents("ex", "# c\n\n  *.o  \n", false)
            .unwrap();
        assert!(s.matches(Path::new("/src/a.o")));
        let err = s.add_file_contents("ex", "ok\n[bad\n", false).unwrap_err();
        assert!(err.to_string().contains("ex, line 2"), "{err}");
    }

    #[test]
    fn may_match_below_prunes_only_diverging_anchored_patterns() {
        let s = set(&["/a/b/*.txt"]);
        assert!(s.may_match_below(Path::new("/a")));
        assert!(s.may_match_below(Path::new("/a/b")));
        assert!(!s.may_match_below(Path::new("/c")));
        assert!(set(&["x"]).may_match_below(Path::new("/c")));
    }

    #[test]
    fn marker_spec_parses_name_and_header() {
        assert_eq!(
            Marker::parse(".nobackup").unwrap(),
            Marker {
                name: ".nobackup".into(),
                header: None
            }
        );
        let m = Marker::parse("TAG:hello").unwrap();
        assert_eq!(m.header.as_deref(), Some(&b"hello"[..]));
        assert!(Marker::parse("a/b").is_err());
    }
}
