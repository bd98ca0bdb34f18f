//! sprig's path and environment functions: `base dir clean ext isAbs` (Go's `path`),
//! their `os*` twins (Go's `path/filepath`, the same on Linux), `env`, `expandenv`.
//!
//! `env` and `expandenv` read the controller's own environment, as KubeBlocks'
//! controller does.

use super::{s, t};
use crate::template::funcs::{Func, FuncMap};
use crate::template::value::Value;

pub(super) fn register(m: &mut FuncMap) {
    for (name, f) in [
        ("base", base as fn(&str) -> String),
        ("dir", dir),
        ("clean", clean),
        ("ext", ext),
    ] {
        let _ = f;
        match name {
            "base" => {
                m.insert(
                    "base",
                    Func::new(vec![t::string()], |_, a| Ok(Value::string(base(s(&a[0]))))),
                );
                m.insert(
                    "osBase",
                    Func::new(vec![t::string()], |_, a| Ok(Value::string(base(s(&a[0]))))),
                );
            }
            "dir" => {
                m.insert(
                    "dir",
                    Func::new(vec![t::string()], |_, a| Ok(Value::string(dir(s(&a[0]))))),
                );
                m.insert(
                    "osDir",
                    Func::new(vec![t::string()], |_, a| Ok(Value::string(dir(s(&a[0]))))),
                );
            }
            "clean" => {
                m.insert(
                    "clean",
                    Func::new(vec![t::string()], |_, a| Ok(Value::string(clean(s(&a[0]))))),
                );
                m.insert(
                    "osClean",
                    Func::new(vec![t::string()], |_, a| Ok(Value::string(clean(s(&a[0]))))),
                );
            }
            _ => {
                m.insert(
                    "ext",
                    Func::new(vec![t::string()], |_, a| Ok(Value::string(ext(s(&a[0]))))),
                );
                m.insert(
                    "osExt",
                    Func::new(vec![t::string()], |_, a| Ok(Value::string(ext(s(&a[0]))))),
                );
            }
        }
    }
    m.insert(
        "isAbs",
        Func::new(vec![t::string()], |_, a| {
            Ok(Value::Bool(s(&a[0]).starts_with('/')))
        }),
    );
    m.insert(
        "osIsAbs",
        Func::new(vec![t::string()], |_, a| {
            Ok(Value::Bool(s(&a[0]).starts_with('/')))
        }),
    );
    m.insert(
        "env",
        Func::new(vec![t::string()], |_, a| {
            Ok(Value::string(std::env::var(s(&a[0])).unwrap_or_default()))
        }),
    );
    m.insert(
        "expandenv",
        Func::new(vec![t::string()], |c, a| {
            let out = expand_env(s(&a[0]));
            c.check_size(out.len())?;
            Ok(Value::string(out))
        }),
    );
}

/// Go's `path.Clean`.
pub(crate) fn clean(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// Go's `path.Base`.
pub(crate) fn base(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        return "/".into();
    }
    t.rsplit('/').next().unwrap_or(t).to_string()
}

/// Go's `path.Dir`.
pub(crate) fn dir(p: &str) -> String {
    let cut = p.rfind('/').map_or(0, |i| i + 1);
    clean(&p[..cut])
}

/// Go's `path.Ext`.
pub(crate) fn ext(p: &str) -> String {
    for (i, c) in p.char_indices().rev() {
        if c == '/' {
            break;
        }
        if c == '.' {
            return p[i..].to_string();
        }
    }
    String::new()
}

/// Go's `os.ExpandEnv`: `$VAR` and `${VAR}`.
fn expand_env(x: &str) -> String {
    let b = x.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    let mut last = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            out.push_str(&x[last..i]);
            let (name, w) = if b[i + 1] == b'{' {
                match x[i + 2..].find('}') {
                    Some(end) if end > 0 => (&x[i + 2..i + 2 + end], end + 3),
                    Some(_) => ("", 3),
                    None => ("", 2),
                }
            } else if (b[i + 1] as char).is_ascii_digit() || b"*#$@!?-".contains(&b[i + 1]) {
                (&x[i + 1..i + 2], 2)
            } else {
                let n = x[i + 1..]
                    .bytes()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == b'_')
                    .count();
                (&x[i + 1..i + 1 + n], n + 1)
            };
            if name.is_empty() && w == 1 {
                out.push('$');
            } else if !name.is_empty() {
                out.push_str(&std::env::var(name).unwrap_or_default());
            }
            i += w.max(1);
            last = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&x[last..]);
    out
}
