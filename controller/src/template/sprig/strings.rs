//! sprig's string functions (`strings.go`): case, trimming, quoting, padding,
//! splitting, joining.

use std::collections::BTreeMap;

use super::{i, s, strval, t};
use crate::template::fmt::quote as go_quote;
use crate::template::funcs::{Ctx, Func, FuncMap, FuncResult};
use crate::template::value::{byte_slice, GoType, Value};

pub(super) fn register(m: &mut FuncMap) {
    let st = t::string;
    m.insert(
        "trim",
        Func::new(vec![st()], |_, a| Ok(Value::str(s(&a[0]).trim()))),
    );
    m.insert(
        "upper",
        Func::new(vec![st()], |_, a| {
            Ok(Value::string(map_chars(s(&a[0]), true)))
        }),
    );
    m.insert(
        "lower",
        Func::new(vec![st()], |_, a| {
            Ok(Value::string(map_chars(s(&a[0]), false)))
        }),
    );
    m.insert(
        "title",
        Func::new(vec![st()], |_, a| Ok(Value::string(title(s(&a[0]))))),
    );
    m.insert(
        "untitle",
        Func::new(vec![st()], |_, a| Ok(Value::string(untitle(s(&a[0]))))),
    );
    m.insert("substr", Func::new(vec![t::int(), t::int(), st()], substr));
    m.insert("repeat", Func::new(vec![t::int(), st()], repeat));
    m.insert("trimall", Func::new(vec![st(), st()], trim_all));
    m.insert("trimAll", Func::new(vec![st(), st()], trim_all));
    m.insert(
        "trimSuffix",
        Func::new(vec![st(), st()], |_, a| {
            Ok(Value::str(
                s(&a[1]).strip_suffix(s(&a[0])).unwrap_or(s(&a[1])),
            ))
        }),
    );
    m.insert(
        "trimPrefix",
        Func::new(vec![st(), st()], |_, a| {
            Ok(Value::str(
                s(&a[1]).strip_prefix(s(&a[0])).unwrap_or(s(&a[1])),
            ))
        }),
    );
    m.insert(
        "nospace",
        Func::new(vec![st()], |_, a| {
            Ok(Value::string(
                s(&a[0]).chars().filter(|c| !c.is_whitespace()).collect(),
            ))
        }),
    );
    m.insert(
        "initials",
        Func::new(vec![st()], |_, a| Ok(Value::string(initials(s(&a[0]))))),
    );
    m.insert(
        "swapcase",
        Func::new(vec![st()], |_, a| Ok(Value::string(swapcase(s(&a[0]))))),
    );
    m.insert(
        "contains",
        Func::new(vec![st(), st()], |_, a| {
            Ok(Value::Bool(s(&a[1]).contains(s(&a[0]))))
        }),
    );
    m.insert(
        "hasPrefix",
        Func::new(vec![st(), st()], |_, a| {
            Ok(Value::Bool(s(&a[1]).starts_with(s(&a[0]))))
        }),
    );
    m.insert(
        "hasSuffix",
        Func::new(vec![st(), st()], |_, a| {
            Ok(Value::Bool(s(&a[1]).ends_with(s(&a[0]))))
        }),
    );
    m.insert("quote", Func::variadic(vec![], t::any(), quote));
    m.insert("squote", Func::variadic(vec![], t::any(), squote));
    m.insert("cat", Func::variadic(vec![], t::any(), cat));
    m.insert(
        "indent",
        Func::new(vec![t::int(), st()], |c, a| {
            indent(c, i(&a[0]), s(&a[1])).map(Value::string)
        }),
    );
    m.insert(
        "nindent",
        Func::new(vec![t::int(), st()], |c, a| {
            indent(c, i(&a[0]), s(&a[1])).map(|x| Value::string(format!("\n{x}")))
        }),
    );
    m.insert("replace", Func::new(vec![st(), st(), st()], replace));
    m.insert(
        "plural",
        Func::new(vec![st(), st(), t::int()], |_, a| {
            Ok(if i(&a[2]) == 1 {
                a[0].clone()
            } else {
                a[1].clone()
            })
        }),
    );
    m.insert(
        "toString",
        Func::new(vec![t::any()], |_, a| Ok(Value::string(strval_nil(&a[0])))),
    );
    m.insert("trunc", Func::new(vec![t::int(), st()], trunc));
    m.insert("abbrev", Func::new(vec![t::int(), st()], abbrev));
    m.insert(
        "abbrevboth",
        Func::new(vec![t::int(), t::int(), st()], abbrevboth),
    );
    m.insert(
        "join",
        Func::new(vec![st(), t::any()], |_, a| {
            Ok(Value::string(strslice(&a[1]).join(s(&a[0]))))
        }),
    );
    m.insert(
        "split",
        Func::new(vec![st(), st()], |c, a| {
            split_map(c, s(&a[1]), s(&a[0]), -1)
        }),
    );
    m.insert(
        "splitn",
        Func::new(vec![st(), t::int(), st()], |c, a| {
            split_map(c, s(&a[2]), s(&a[0]), i(&a[1]))
        }),
    );
    m.insert(
        "splitList",
        Func::new(vec![st(), st()], |c, a| {
            let parts = go_split(s(&a[1]), s(&a[0]), -1);
            c.check_size(parts.len())?;
            Ok(Value::string_slice(parts))
        }),
    );
    m.insert(
        "toStrings",
        Func::new(vec![t::any()], |_, a| {
            Ok(Value::string_slice(strslice(&a[0])))
        }),
    );
    m.insert("sortAlpha", Func::new(vec![t::any()], sort_alpha));
}

/// sprig's `strval` applied to a `toString` argument: nil prints as `<nil>`.
fn strval_nil(v: &Value) -> String {
    match v {
        Value::Invalid | Value::Nil => "<nil>".into(),
        v => strval(v),
    }
}

/// `strings.ToUpper`/`ToLower`: per-character mapping, keeping characters whose
/// mapping is not a single character.
fn map_chars(x: &str, upper: bool) -> String {
    x.chars()
        .map(|c| {
            let mut m: Vec<char> = if upper {
                c.to_uppercase().collect()
            } else {
                c.to_lowercase().collect()
            };
            if m.len() == 1 {
                m.pop().unwrap_or(c)
            } else {
                c
            }
        })
        .collect()
}

/// Go's `strings.Title`: upper-case letters that begin words.
fn title(x: &str) -> String {
    let mut prev = ' ';
    x.chars()
        .map(|c| {
            let sep = is_separator(prev);
            prev = c;
            if sep {
                map_chars(&c.to_string(), true).chars().next().unwrap_or(c)
            } else {
                c
            }
        })
        .collect()
}

fn is_separator(c: char) -> bool {
    if c.is_ascii() {
        return !(c.is_ascii_alphanumeric() || c == '_');
    }
    if c.is_alphabetic() || c.is_numeric() {
        return false;
    }
    c.is_whitespace()
}

fn untitle(x: &str) -> String {
    let mut chars = x.chars();
    match chars.next() {
        Some(c) => map_chars(&c.to_string(), false) + chars.as_str(),
        None => String::new(),
    }
}

fn initials(x: &str) -> String {
    x.split_whitespace()
        .filter_map(|w| w.chars().next())
        .collect()
}

fn swapcase(x: &str) -> String {
    x.chars()
        .map(|c| {
            if c.is_uppercase() {
                map_chars(&c.to_string(), false).chars().next().unwrap_or(c)
            } else if c.is_lowercase() {
                map_chars(&c.to_string(), true).chars().next().unwrap_or(c)
            } else {
                c
            }
        })
        .collect()
}

fn substr(_: &mut Ctx<'_>, a: &[Value]) -> FuncResult {
    let (start, end, x) = (i(&a[0]), i(&a[1]), s(&a[2]));
    let len = x.len() as i64;
    let (lo, hi) = if start < 0 {
        (0, end)
    } else if end < 0 || end > len {
        (start, len)
    } else {
        (start, end)
    };
    if lo < 0 || hi < 0 || hi > len || lo > hi {
        return Err(format!(
            "runtime error: slice bounds out of range [{}:{}]",
            if start < 0 {
                String::new()
            } else {
                lo.to_string()
            },
            hi
        ));
    }
    Ok(Value::string(byte_slice(x, lo as usize, hi as usize)))
}

fn repeat(c: &mut Ctx<'_>, a: &[Value]) -> FuncResult {
    let (n, x) = (i(&a[0]), s(&a[1]));
    if n < 0 {
        return Err("strings: negative Repeat count".into());
    }
    c.check_size((n as usize).saturating_mul(x.len()))?;
    Ok(Value::string(x.repeat(n as usize)))
}

fn trim_all(_: &mut Ctx<'_>, a: &[Value]) -> FuncResult {
    let cut: Vec<char> = s(&a[0]).chars().collect();
    Ok(Value::str(s(&a[1]).trim_matches(|c| cut.contains(&c))))
}

fn quote(_: &mut Ctx<'_>, a: &[Value]) -> FuncResult {
    let out: Vec<String> = a
        .iter()
        .filter(|v| !v.is_nil_like())
        .map(|v| go_quote(&strval(v), false))
        .collect();
    Ok(Value::string(out.join(" ")))
}

fn squote(_: &mut Ctx<'_>, a: &[Value]) -> FuncResult {
    let out: Vec<String> = a
        .iter()
        .filter(|v| !v.is_nil_like())
        .map(|v| format!("'{}'", strval(v)))
        .collect();
    Ok(Value::string(out.join(" ")))
}

fn cat(_: &mut Ctx<'_>, a: &[Value]) -> FuncResult {
    let out: Vec<String> = a.iter().filter(|v| !v.is_nil_like()).map(strval).collect();
    Ok(Value::string(out.join(" ")))
}

fn indent(c: &Ctx<'_>, n: i64, x: &str) -> Result<String, String> {
    if n < 0 {
        return Err("strings: negative Repeat count".into());
    }
    let lines = x.matches('\n').count() + 1;
    c.check_size((n as usize).saturating_mul(lines).saturating_add(x.len()))?;
    let pad = " ".repeat(n as usize);
    Ok(format!("{pad}{}", x.replace('\n', &format!("\n{pad}"))))
}

fn replace(c: &mut Ctx<'_>, a: &[Value]) -> FuncResult {
    let (old, new, src) = (s(&a[0]), s(&a[1]), s(&a[2]));
    if old.is_empty() {
        // Go inserts `new` before every character and at the end.
        let n = src.chars().count() + 1;
        c.check_size(src.len() + n.saturating_mul(new.len()))?;
        let mut out = String::new();
        for ch in src.chars() {
            out.push_str(new);
            out.push(ch);
        }
        out.push_str(new);
        return Ok(Value::string(out));
    }
    let count = src.matches(old).count();
    c.check_size(src.len() + count.saturating_mul(new.len()))?;
    Ok(Value::string(src.replace(old, new)))
}

fn trunc(_: &mut Ctx<'_>, a: &[Value]) -> FuncResult {
    let (n, x) = (i(&a[0]), s(&a[1]));
    let len = x.len() as i64;
    if n < 0 && len + n > 0 {
        return Ok(Value::string(byte_slice(x, (len + n) as usize, x.len())));
    }
    if n >= 0 && len > n {
        return Ok(Value::string(byte_slice(x, 0, n as usize)));
    }
    Ok(Value::str(x))
}

/// goutils `AbbreviateFull`.
fn abbreviate_full(x: &str, offset: i64, max: i64) -> Result<String, String> {
    if x.is_empty() {
        return Ok(String::new());
    }
    if max < 4 {
        return Err("stringutils illegal argument: Minimum abbreviation width is 4".into());
    }
    let len = x.len() as i64;
    if len <= max {
        return Ok(x.to_string());
    }
    let mut offset = offset.min(len);
    if len - offset < max - 3 {
        offset = len - (max - 3);
    }
    if offset <= 4 {
        return Ok(byte_slice(x, 0, (max - 3) as usize) + "...");
    }
    if max < 7 {
        return Err(
            "stringutils illegal argument: Minimum abbreviation width with offset is 7".into(),
        );
    }
    if offset + max - 3 < len {
        let rest = byte_slice(x, offset as usize, x.len());
        return Ok(format!("...{}", abbreviate_full(&rest, 0, max - 3)?));
    }
    Ok(format!(
        "...{}",
        byte_slice(x, (len - (max - 3)) as usize, x.len())
    ))
}

fn abbrev(_: &mut Ctx<'_>, a: &[Value]) -> FuncResult {
    let (w, x) = (i(&a[0]), s(&a[1]));
    if w < 4 {
        return Ok(Value::str(x));
    }
    Ok(Value::string(abbreviate_full(x, 0, w).unwrap_or_default()))
}

fn abbrevboth(_: &mut Ctx<'_>, a: &[Value]) -> FuncResult {
    let (l, r, x) = (i(&a[0]), i(&a[1]), s(&a[2]));
    if r < 4 || (l > 0 && r < 7) {
        return Ok(Value::str(x));
    }
    Ok(Value::string(abbreviate_full(x, l, r).unwrap_or_default()))
}

/// Go's `strings.SplitN(s, sep, n)` (`n < 0`: all).
pub(crate) fn go_split(x: &str, sep: &str, n: i64) -> Vec<String> {
    if n == 0 {
        return Vec::new();
    }
    if sep.is_empty() {
        let chars: Vec<String> = x.chars().map(String::from).collect();
        if n > 0 && chars.len() > n as usize {
            let mut out: Vec<String> = chars[..n as usize - 1].to_vec();
            out.push(chars[n as usize - 1..].concat());
            return out;
        }
        return chars;
    }
    if n < 0 {
        return x.split(sep).map(String::from).collect();
    }
    x.splitn(n as usize, sep).map(String::from).collect()
}

fn split_map(c: &mut Ctx<'_>, x: &str, sep: &str, n: i64) -> FuncResult {
    let parts = go_split(x, sep, n);
    c.check_size(parts.len())?;
    let entries: BTreeMap<String, Value> = parts
        .into_iter()
        .enumerate()
        .map(|(k, v)| (format!("_{k}"), Value::string(v)))
        .collect();
    Ok(c.new_map(GoType::String, entries))
}

/// sprig's `strslice`: a list as strings, nils dropped; a non-list as one string.
pub(crate) fn strslice(v: &Value) -> Vec<String> {
    match v {
        Value::Slice(sl) => sl
            .items
            .iter()
            .filter(|x| !x.is_nil_like())
            .map(strval)
            .collect(),
        Value::Invalid | Value::Nil => Vec::new(),
        v => vec![strval(v)],
    }
}

fn sort_alpha(_: &mut Ctx<'_>, a: &[Value]) -> FuncResult {
    match &a[0] {
        Value::Slice(_) => {
            let mut v = strslice(&a[0]);
            v.sort();
            Ok(Value::string_slice(v))
        }
        v => Ok(Value::string_slice(vec![strval_nil(v)])),
    }
}
