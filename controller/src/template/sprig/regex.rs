//! sprig's regular expression functions (`regex.go`), over Rust's `regex` crate,
//! whose syntax is RE2's like Go's `regexp`. Compile errors are worded by the `regex`
//! crate, not by Go.

use super::{i, s, t};
use crate::template::funcs::{Ctx, Func, FuncMap, FuncResult};
use crate::template::value::Value;

pub(super) fn register(m: &mut FuncMap) {
    let st = t::string;
    m.insert(
        "regexMatch",
        Func::new(vec![st(), st()], |_, a| {
            Ok(Value::Bool(
                compile(s(&a[0]))
                    .map(|r| r.is_match(s(&a[1])))
                    .unwrap_or(false),
            ))
        }),
    );
    m.insert(
        "mustRegexMatch",
        Func::new(vec![st(), st()], |_, a| {
            Ok(Value::Bool(compile(s(&a[0]))?.is_match(s(&a[1]))))
        }),
    );
    m.insert(
        "regexFindAll",
        Func::new(vec![st(), st(), t::int()], find_all),
    );
    m.insert(
        "mustRegexFindAll",
        Func::new(vec![st(), st(), t::int()], find_all),
    );
    m.insert("regexFind", Func::new(vec![st(), st()], find));
    m.insert("mustRegexFind", Func::new(vec![st(), st()], find));
    m.insert(
        "regexReplaceAll",
        Func::new(vec![st(), st(), st()], |c, a| replace(c, a, false)),
    );
    m.insert(
        "mustRegexReplaceAll",
        Func::new(vec![st(), st(), st()], |c, a| replace(c, a, false)),
    );
    m.insert(
        "regexReplaceAllLiteral",
        Func::new(vec![st(), st(), st()], |c, a| replace(c, a, true)),
    );
    m.insert(
        "mustRegexReplaceAllLiteral",
        Func::new(vec![st(), st(), st()], |c, a| replace(c, a, true)),
    );
    m.insert("regexSplit", Func::new(vec![st(), st(), t::int()], split));
    m.insert(
        "mustRegexSplit",
        Func::new(vec![st(), st(), t::int()], split),
    );
    m.insert(
        "regexQuoteMeta",
        Func::new(vec![st()], |_, a| {
            let mut out = String::new();
            for ch in s(&a[0]).chars() {
                if "\\.+*?()|[]{}^$".contains(ch) {
                    out.push('\\');
                }
                out.push(ch);
            }
            Ok(Value::string(out))
        }),
    );
}

fn compile(re: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(re)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("error parsing regexp: {e}"))
}

fn find_all(c: &mut Ctx<'_>, a: &[Value]) -> FuncResult {
    let r = compile(s(&a[0]))?;
    let n = i(&a[2]);
    if n == 0 {
        return Ok(crate::template::value::GoType::string_slice().zero());
    }
    let limit = if n < 0 { usize::MAX } else { n as usize };
    let out: Vec<String> = r
        .find_iter(s(&a[1]))
        .take(limit)
        .map(|m| m.as_str().to_string())
        .collect();
    c.check_size(out.len())?;
    if out.is_empty() {
        return Ok(crate::template::value::GoType::string_slice().zero());
    }
    Ok(Value::string_slice(out))
}

fn find(_: &mut Ctx<'_>, a: &[Value]) -> FuncResult {
    let r = compile(s(&a[0]))?;
    Ok(Value::str(r.find(s(&a[1])).map_or("", |m| m.as_str())))
}

fn replace(c: &mut Ctx<'_>, a: &[Value], literal: bool) -> FuncResult {
    let r = compile(s(&a[0]))?;
    let out = if literal {
        r.replace_all(s(&a[1]), regex::NoExpand(s(&a[2])))
            .into_owned()
    } else {
        r.replace_all(s(&a[1]), s(&a[2])).into_owned()
    };
    c.check_size(out.len())?;
    Ok(Value::string(out))
}

/// Go's `Regexp.Split`.
fn split(c: &mut Ctx<'_>, a: &[Value]) -> FuncResult {
    let pattern = s(&a[0]);
    let r = compile(pattern)?;
    let text = s(&a[1]);
    let n = i(&a[2]);
    if n == 0 {
        return Ok(crate::template::value::GoType::string_slice().zero());
    }
    if !pattern.is_empty() && text.is_empty() {
        return Ok(Value::string_slice(vec![String::new()]));
    }
    let limit = if n < 0 { usize::MAX } else { n as usize };
    let mut out = Vec::new();
    let (mut beg, mut end) = (0usize, 0usize);
    for m in r.find_iter(text).take(limit) {
        if n > 0 && out.len() == limit - 1 {
            break;
        }
        end = m.start();
        if m.end() != 0 {
            out.push(text[beg..end].to_string());
        }
        beg = m.end();
    }
    if end != text.len() {
        out.push(text[beg..].to_string());
    }
    c.check_size(out.len())?;
    Ok(Value::string_slice(out))
}
