//! Options that choose what a command takes: `backup`'s excludes and `--files-from`,
//! and the include/exclude patterns of `restore`, `dump` and `rewrite`, with restic's
//! flag names and semantics. The matching itself is the engine's (selection.rs).

use anyhow::{bail, Context, Result};
use clap::Args;
use dprepo_repo_format::selection::{Marker, PathFilter, PatternSet, Selection};
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// `backup`'s selection flags.
#[derive(Debug, Args, Clone, Default)]
pub struct BackupSelectArgs {
    /// Exclude paths matching PATTERN (repeatable): a glob, anchored at the root when it
    /// starts with `/`, else matched anywhere; `**` spans directories; `!PATTERN`
    /// re-includes.
    #[arg(short = 'e', long = "exclude", value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// As --exclude, ignoring case.
    #[arg(long = "iexclude", value_name = "PATTERN")]
    pub iexclude: Vec<String>,
    /// Read exclude patterns from FILE, one a line (`#` comments) (repeatable).
    #[arg(long = "exclude-file", value_name = "FILE")]
    pub exclude_file: Vec<PathBuf>,
    /// As --exclude-file, ignoring case.
    #[arg(long = "iexclude-file", value_name = "FILE")]
    pub iexclude_file: Vec<PathBuf>,
    /// Exclude a directory holding a file named NAME (with :HEADER, only when the file
    /// starts with HEADER) (repeatable).
    #[arg(long = "exclude-if-present", value_name = "NAME[:HEADER]")]
    pub exclude_if_present: Vec<String>,
    /// Exclude directories holding a valid CACHEDIR.TAG (bford.info/cachedir).
    #[arg(long)]
    pub exclude_caches: bool,
    /// Exclude files larger than SIZE (e.g. 100M; K, M, G, T are powers of 1024).
    #[arg(long, value_name = "SIZE", value_parser = parse_size64)]
    pub exclude_larger_than: Option<u64>,
    /// Stay on the file system of each given path: mount points below it are kept as
    /// empty directories.
    #[arg(short = 'x', long)]
    pub one_file_system: bool,
    /// Read paths to back up from FILE (`-` for stdin), one a line; blank lines and `#`
    /// comments are skipped, globs are expanded (repeatable).
    #[arg(long = "files-from", value_name = "FILE")]
    pub files_from: Vec<PathBuf>,
    /// As --files-from, each line a path as it is: no comments, no globs.
    #[arg(long = "files-from-verbatim", value_name = "FILE")]
    pub files_from_verbatim: Vec<PathBuf>,
    /// As --files-from-verbatim, paths separated by NUL bytes (`find -print0`).
    #[arg(long = "files-from-raw", value_name = "FILE")]
    pub files_from_raw: Vec<PathBuf>,
}

/// Parse a size with an optional unit: K, M, G, T (powers of 1024), B or none.
pub fn parse_size64(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let digits: String = t.chars().take_while(|c| c.is_ascii_digit()).collect();
    let unit = t[digits.len()..].trim().to_ascii_lowercase();
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 100M, 2G)"))?;
    let shift = match unit.as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use K, M, G or T)")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

impl BackupSelectArgs {
    /// The engine's selection from these flags.
    ///
    /// # Errors
    /// An exclude file cannot be read, a pattern or marker is invalid.
    pub fn selection(&self) -> Result<Selection> {
        let mut excludes = PatternSet::new();
        for p in &self.exclude {
            excludes.add(p, false)?;
        }
        for p in &self.iexclude {
            excludes.add(p, true)?;
        }
        for (files, ignore_case) in [(&self.exclude_file, false), (&self.iexclude_file, true)] {
            for f in files {
                let text = std::fs::read_to_string(f)
                    .with_context(|| format!("reading exclude file {}", f.display()))?;
                excludes.add_file_contents(&f.display().to_string(), &text, ignore_case)?;
            }
        }
        let mut markers = Vec::new();
        for spec in &self.exclude_if_present {
            markers.push(Marker::parse(spec)?);
        }
        if self.exclude_caches {
            markers.push(Marker::cachedir_tag());
        }
        Ok(Selection {
            excludes,
            markers,
            larger_than: self.exclude_larger_than,
            one_file_system: self.one_file_system,
        })
    }

    /// The paths the `--files-from*` files name, in order; warnings for globs that
    /// match nothing go to `warnings`.
    ///
    /// # Errors
    /// A file cannot be read; a `--files-from-raw` file does not end in NUL or names
    /// an empty path.
    pub fn listed_paths(&self, warnings: &mut Vec<String>) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for f in &self.files_from {
            let data = read_list(f)?;
            for line in data.split(|b| *b == b'\n') {
                let line = trim_ascii(line.strip_suffix(b"\r").unwrap_or(line));
                if line.is_empty() || line.starts_with(b"#") {
                    continue;
                }
                let pattern = PathBuf::from(std::ffi::OsString::from_vec(line.to_vec()));
                let expanded = expand_glob(&pattern)?;
                if expanded.is_empty() {
                    warnings.push(format!(
                        "--files-from {}: pattern {:?} matches no files, skipped",
                        f.display(),
                        pattern.display().to_string()
                    ));
                }
                out.extend(expanded);
            }
        }
        for f in &self.files_from_verbatim {
            let data = read_list(f)?;
            for line in data.split(|b| *b == b'\n') {
                if !line.is_empty() {
                    out.push(PathBuf::from(std::ffi::OsString::from_vec(line.to_vec())));
                }
            }
        }
        for f in &self.files_from_raw {
            let data = read_list(f)?;
            if data.is_empty() {
                continue;
            }
            let Some(body) = data.strip_suffix(b"\0") else {
                bail!(
                    "--files-from-raw {}: the last name does not end in a NUL byte",
                    f.display()
                );
            };
            for name in body.split(|b| *b == 0) {
                if name.is_empty() {
                    bail!(
                        "--files-from-raw {}: empty file name in the list",
                        f.display()
                    );
                }
                out.push(PathBuf::from(std::ffi::OsString::from_vec(name.to_vec())));
            }
        }
        Ok(out)
    }

    /// Whether any `--files-from*` flag was given.
    pub fn has_lists(&self) -> bool {
        !(self.files_from.is_empty()
            && self.files_from_verbatim.is_empty()
            && self.files_from_raw.is_empty())
    }
}

fn trim_ascii(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

fn read_list(f: &Path) -> Result<Vec<u8>> {
    if f.as_os_str() == "-" {
        let mut data = Vec::new();
        std::io::stdin()
            .read_to_end(&mut data)
            .context("reading the list of files from stdin")?;
        return Ok(data);
    }
    std::fs::read(f).with_context(|| format!("reading the list of files {}", f.display()))
}

/// Expand a glob over the file system as a shell would (each component on its own; `*`
/// does not match a leading dot): the path itself when it has no glob characters and
/// exists, sorted matches otherwise.
fn expand_glob(pattern: &Path) -> Result<Vec<PathBuf>> {
    let is_glob = |c: &[u8]| c.iter().any(|b| matches!(b, b'*' | b'?' | b'['));
    let absolute = pattern.is_absolute();
    let mut current: Vec<PathBuf> = vec![if absolute {
        PathBuf::from("/")
    } else {
        PathBuf::new()
    }];
    for comp in pattern.components() {
        let std::path::Component::Normal(name) = comp else {
            if let std::path::Component::ParentDir = comp {
                current.iter_mut().for_each(|p| p.push(".."));
            }
            continue;
        };
        if !is_glob(name.as_bytes()) {
            current.iter_mut().for_each(|p| p.push(name));
            continue;
        }
        let glob = globset::GlobBuilder::new(&name.to_string_lossy())
            .literal_separator(true)
            .build()
            .with_context(|| format!("pattern {}", pattern.display()))?
            .compile_matcher();
        let mut next = Vec::new();
        for dir in &current {
            let listing = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir.as_path()
            };
            let Ok(rd) = std::fs::read_dir(listing) else {
                continue;
            };
            let mut names: Vec<_> = rd
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .filter(|n| {
                    (!n.as_bytes().starts_with(b".") || name.as_bytes().starts_with(b"."))
                        && glob.is_match(n)
                })
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| dir.join(n)));
        }
        current = next;
    }
    current.retain(|p| !p.as_os_str().is_empty() && std::fs::symlink_metadata(p).is_ok());
    Ok(current)
}

/// Include and exclude patterns of `restore` and `dump`, matched against paths inside
/// the snapshot (`/`-rooted, as `dprepo ls` prints them).
#[derive(Debug, Args, Clone, Default)]
pub struct TreeSelectArgs {
    /// Take only paths matching PATTERN (and what is below them) (repeatable).
    #[arg(short = 'i', long = "include", value_name = "PATTERN")]
    pub include: Vec<String>,
    /// As --include, ignoring case.
    #[arg(long = "iinclude", value_name = "PATTERN")]
    pub iinclude: Vec<String>,
    /// Leave out paths matching PATTERN (and what is below them) (repeatable).
    #[arg(short = 'e', long = "exclude", value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// As --exclude, ignoring case.
    #[arg(long = "iexclude", value_name = "PATTERN")]
    pub iexclude: Vec<String>,
}

impl TreeSelectArgs {
    /// The engine's filter from these flags.
    ///
    /// # Errors
    /// A pattern is not a valid glob.
    pub fn filter(&self) -> Result<PathFilter> {
        let mut f = PathFilter::default();
        for (list, ic) in [(&self.include, false), (&self.iinclude, true)] {
            for p in list {
                f.include.add(p, ic)?;
            }
        }
        for (list, ic) in [(&self.exclude, false), (&self.iexclude, true)] {
            for p in list {
                f.exclude.add(p, ic)?;
            }
        }
        Ok(f)
    }
}
