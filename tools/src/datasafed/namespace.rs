//! The file tree datasafed shows: paths, and the snapshots that are its files and directories.

use super::*;

/// `/`-rooted, lexically clean path of `rpath` below `base` (`..` never leaves `base`).
pub(super) fn normalize(base: &str, rpath: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in rpath.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let base = base.trim_end_matches('/');
    if parts.is_empty() {
        return if base.is_empty() {
            "/".into()
        } else {
            base.into()
        };
    }
    format!("{base}/{}", parts.join("/"))
}

/// The parent directory of a `/`-rooted path (`/` for top-level entries).
pub(super) fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

pub(super) fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `path` is `dir` or below it.
pub(super) fn is_within(path: &str, dir: &str) -> bool {
    dir == "/" || path == dir || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

pub(super) struct FileEntry {
    pub(super) newest: Entry,
    /// Every snapshot holding this path (the newest included).
    pub(super) all: Vec<BlobId>,
    pub(super) size: u64,
}

#[derive(Default)]
pub(super) struct DirEntry {
    pub(super) markers: Vec<BlobId>,
    pub(super) mtime: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Default)]
pub(super) struct Namespace {
    /// Every snapshot, oldest first.
    pub(super) entries: Vec<Entry>,
    pub(super) files: BTreeMap<String, FileEntry>,
    /// Every directory except `/`: explicit (markers) and implicit (ancestors).
    pub(super) dirs: BTreeMap<String, DirEntry>,
}

pub(super) fn tag_value<'a>(s: &'a Snapshot, prefix: &str) -> Option<&'a str> {
    s.manifest.tags.iter().find_map(|t| t.strip_prefix(prefix))
}

/// The datasafed path a snapshot holds, if it is a datasafed file.
pub fn snapshot_file_path(s: &Snapshot) -> Option<&str> {
    tag_value(s, PATH_TAG)
}

pub(super) fn recorded_codec(s: &Entry) -> Result<Option<Codec>> {
    match s.codec.as_str() {
        "" | "none" => Ok(None),
        name => codec(name)
            .map(Some)
            .with_context(|| format!("snapshot {} records codec {name}", s.id.short())),
    }
}

impl Namespace {
    pub(super) async fn load(repo: Option<&Repository>) -> Result<Namespace> {
        let mut ns = Namespace::default();
        let Some(repo) = repo else { return Ok(ns) };
        let files = ds_files::load(repo).await?;
        // Derived data: a call that cannot write (read-only credentials) still answers,
        // and the next writer records what this one could not.
        let _ = files.keep(repo, &[], &[]).await;
        let mut snaps = files.into_entries();
        snaps.sort_by_key(|s| (s.time, s.id));
        for s in &snaps {
            let time = s.time;
            if s.kind == Kind::Dir {
                let dir = s.path.clone();
                ns.touch_ancestors(&dir, time);
                let d = ns.dirs.entry(dir).or_default();
                d.markers.push(s.id);
                d.mtime = d.mtime.max(Some(time));
            } else if s.kind == Kind::File {
                let path = s.path.clone();
                ns.touch_ancestors(&path, time);
                let size = s.size;
                let all = match ns.files.remove(&path) {
                    Some(prev) => {
                        let mut all = prev.all;
                        all.push(s.id);
                        all
                    }
                    None => vec![s.id],
                };
                // Sorted by time: the last one seen is the newest.
                ns.files.insert(
                    path,
                    FileEntry {
                        newest: s.clone(),
                        all,
                        size,
                    },
                );
            }
        }
        ns.entries = snaps;
        Ok(ns)
    }

    pub(super) fn touch_ancestors(&mut self, path: &str, time: chrono::DateTime<chrono::Utc>) {
        let mut p = parent(path);
        while p != "/" {
            let d = self.dirs.entry(p.to_string()).or_default();
            d.mtime = d.mtime.max(Some(time));
            p = parent(p);
        }
    }

    pub(super) fn is_dir(&self, path: &str) -> bool {
        path == "/" || self.dirs.contains_key(path)
    }

    /// Entries strictly below `dir`, at most `depth` levels down (`None`: all).
    pub(super) fn below(&self, dir: &str, depth: Option<usize>) -> Vec<Listed> {
        let level = |p: &str| {
            let rest = if dir == "/" {
                &p[1..]
            } else {
                &p[dir.len() + 1..]
            };
            rest.split('/').count()
        };
        let ok = |p: &str| p != dir && is_within(p, dir) && depth.is_none_or(|d| level(p) <= d);
        let mut out = Vec::new();
        for (p, d) in &self.dirs {
            if ok(p) {
                out.push(Listed {
                    path: p.clone(),
                    is_dir: true,
                    size: -1,
                    mtime: d.mtime.unwrap_or_default(),
                });
            }
        }
        for (p, f) in &self.files {
            if ok(p) {
                out.push(Listed::file(p, f));
            }
        }
        out
    }
}

pub(super) struct Listed {
    pub(super) path: String,
    pub(super) is_dir: bool,
    pub(super) size: i64,
    pub(super) mtime: chrono::DateTime<chrono::Utc>,
}

impl Listed {
    pub(super) fn file(path: &str, f: &FileEntry) -> Listed {
        Listed {
            path: path.to_string(),
            is_dir: false,
            size: i64::try_from(f.size).unwrap_or(i64::MAX),
            mtime: f.newest.time,
        }
    }
}

pub(super) fn relative<'a>(ctx: &Env, path: &'a str) -> &'a str {
    let rest = if ctx.base == "/" {
        path
    } else {
        path.strip_prefix(ctx.base.as_str()).unwrap_or(path)
    };
    rest.trim_start_matches('/')
}

// ---------------------------------------------------------------------------------
// Commands.
