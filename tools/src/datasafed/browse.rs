//! `list` and `stat`.

use super::*;

pub(super) async fn list(cli: &DatasafedCli, a: &ListArgs) -> Result<()> {
    if !["path", "size", "mtime"].contains(&a.sort.as_str()) {
        bail!("invalid sort: {:?}", a.sort);
    }
    if !["short", "long", "json"].contains(&a.output_format.as_str()) {
        bail!("invalid output format: {:?}", a.output_format);
    }
    let ctx = env(cli)?;
    let path = normalize(&ctx.base, &a.rpath);
    let repo = open(&ctx, false, Blobs::Never).await?;
    let ns = Namespace::load(repo.as_ref()).await?;
    let mut entries = if let Some(f) = ns.files.get(&path) {
        vec![Listed::file(&path, f)]
    } else if ns.is_dir(&path) {
        // As rclone: without -r one level; --max-depth N (N > 0) limits either way.
        let depth = if a.max_depth > 0 {
            Some(usize::try_from(a.max_depth).unwrap_or(usize::MAX))
        } else if a.recursive {
            None
        } else {
            Some(1)
        };
        ns.below(&path, depth)
            .into_iter()
            .filter(|e| {
                if e.is_dir {
                    !a.files_only
                } else {
                    !a.dirs_only
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    entries.retain(|e| {
        let mt = e.mtime.timestamp();
        let too_old = a.newer_than > 0 && a.newer_than >= mt;
        let too_new = a.older_than > 0 && a.older_than <= mt;
        !too_old
            && !too_new
            && a.name
                .as_deref()
                .is_none_or(|pat| glob_match(pat, basename(&e.path)))
    });
    entries.sort_by(|x, y| {
        let c = match a.sort.as_str() {
            "size" => x.size.cmp(&y.size),
            "mtime" => x.mtime.cmp(&y.mtime),
            _ => x.path.cmp(&y.path),
        };
        match c {
            std::cmp::Ordering::Equal => x.path.cmp(&y.path),
            c if a.reverse => c.reverse(),
            c => c,
        }
    });
    let rfc3339 =
        |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let shown = |e: &Listed| {
        let p = relative(&ctx, &e.path);
        if e.is_dir {
            format!("{p}/")
        } else {
            p.to_string()
        }
    };
    let mut text = String::new();
    match a.output_format.as_str() {
        "short" => {
            for e in &entries {
                text.push_str(&shown(e));
                text.push('\n');
            }
        }
        "long" => {
            for e in &entries {
                text.push_str(&format!(
                    "{}\t{}\t{}\n",
                    rfc3339(&e.mtime),
                    e.size,
                    shown(e)
                ));
            }
        }
        _ => {
            // datasafed's layout: one indented object per entry, "  ," between them.
            if entries.is_empty() {
                text.push_str("[]\n");
            } else {
                text.push_str("[\n");
                for (i, e) in entries.iter().enumerate() {
                    if i > 0 {
                        text.push_str("  ,\n");
                    }
                    text.push_str(&format!(
                        "  {{\n    \"path\": {},\n    \"size\": {},\n    \"mtime\": {},\n    \"mtime_str\": {},\n    \"is_dir\": {}\n  }}\n",
                        serde_json::Value::from(relative(&ctx, &e.path)),
                        e.size,
                        e.mtime.timestamp(),
                        serde_json::Value::from(rfc3339(&e.mtime)),
                        e.is_dir
                    ));
                }
                text.push_str("]\n");
            }
        }
    }
    crate::output::print(&text)?;
    Ok(())
}

/// Go's `path/filepath.Match` for one name: `*`, `?`, `[...]` classes with ranges and
/// `^` negation, `\` escapes. A malformed pattern matches nothing (datasafed ignores
/// the error).
pub(super) fn glob_match(pattern: &str, name: &str) -> bool {
    fn class(p: &[char], c: char) -> Option<(bool, usize)> {
        // p starts after '['; returns (matched, length consumed including ']').
        let mut i = 0;
        let negate = p.first() == Some(&'^');
        if negate {
            i += 1;
        }
        let mut matched = false;
        let mut first = true;
        loop {
            let ch = *p.get(i)?;
            if ch == ']' && !first {
                return Some((matched != negate, i + 1));
            }
            first = false;
            let lo = if ch == '\\' {
                i += 1;
                *p.get(i)?
            } else {
                ch
            };
            i += 1;
            let hi = if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|c| *c != ']') {
                i += 1;
                let h = if p[i] == '\\' {
                    i += 1;
                    *p.get(i)?
                } else {
                    p[i]
                };
                i += 1;
                h
            } else {
                lo
            };
            if lo <= c && c <= hi {
                matched = true;
            }
        }
    }
    fn go(p: &[char], n: &[char]) -> Option<bool> {
        match p.first() {
            None => Some(n.is_empty()),
            Some('*') => {
                let rest = &p[1..];
                for k in 0..=n.len() {
                    if n[..k].contains(&'/') {
                        break;
                    }
                    if go(rest, &n[k..])? {
                        return Some(true);
                    }
                }
                Some(false)
            }
            Some('?') => match n.first() {
                Some(c) if *c != '/' => go(&p[1..], &n[1..]),
                _ => Some(false),
            },
            Some('[') => {
                let Some(c) = n.first() else {
                    return Some(false);
                };
                let (ok, used) = class(&p[1..], *c)?;
                if ok && *c != '/' {
                    go(&p[1 + used..], &n[1..])
                } else {
                    Some(false)
                }
            }
            Some('\\') => {
                let lit = *p.get(1)?;
                if n.first() == Some(&lit) {
                    go(&p[2..], &n[1..])
                } else {
                    Some(false)
                }
            }
            Some(lit) => {
                if n.first() == Some(lit) {
                    go(&p[1..], &n[1..])
                } else {
                    Some(false)
                }
            }
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n).unwrap_or(false)
}
