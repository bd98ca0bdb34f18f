//! sprig's defaults and JSON functions (`defaults.go`): `default`, `empty`,
//! `coalesce`, `all`, `any`, `ternary`, `toJson` and friends, `fromJson`.
//!
//! JSON is written as Go's `encoding/json` writes it: map keys sorted, `<`, `>`, `&`,
//! U+2028 and U+2029 escaped (except by `toRawJson`), floats in Go's shortest form,
//! nil slices and maps as `null`.

use super::{s, t};
use crate::template::fmt::format_float;
use crate::template::funcs::{Ctx, Func, FuncMap, FuncResult};
use crate::template::value::Value;

pub(super) fn register(m: &mut FuncMap) {
    let any = t::any;
    m.insert(
        "default",
        Func::variadic(vec![any()], any(), |_, a| {
            let given = &a[1..];
            if given.is_empty() || given[0].is_empty() {
                return Ok(a[0].clone());
            }
            Ok(given[0].clone())
        }),
    );
    m.insert(
        "empty",
        Func::new(vec![any()], |_, a| Ok(Value::Bool(a[0].is_empty()))),
    );
    m.insert(
        "coalesce",
        Func::variadic(vec![], any(), |_, a| {
            Ok(a.iter()
                .find(|v| !v.is_empty())
                .cloned()
                .unwrap_or(Value::Nil))
        }),
    );
    m.insert(
        "all",
        Func::variadic(vec![], any(), |_, a| {
            Ok(Value::Bool(a.iter().all(|v| !v.is_empty())))
        }),
    );
    m.insert(
        "any",
        Func::variadic(vec![], any(), |_, a| {
            Ok(Value::Bool(a.iter().any(|v| !v.is_empty())))
        }),
    );
    m.insert(
        "ternary",
        Func::new(vec![any(), any(), t::boolean()], |_, a| {
            Ok(if a[2].truth() {
                a[0].clone()
            } else {
                a[1].clone()
            })
        }),
    );
    m.insert(
        "toJson",
        Func::new(vec![any()], |c, a| {
            Ok(Value::string(
                to_json(c, &a[0], true, false).unwrap_or_default(),
            ))
        }),
    );
    m.insert(
        "mustToJson",
        Func::new(vec![any()], |c, a| {
            to_json(c, &a[0], true, false).map(Value::string)
        }),
    );
    m.insert(
        "toPrettyJson",
        Func::new(vec![any()], |c, a| {
            Ok(Value::string(
                to_json(c, &a[0], true, true).unwrap_or_default(),
            ))
        }),
    );
    m.insert(
        "mustToPrettyJson",
        Func::new(vec![any()], |c, a| {
            to_json(c, &a[0], true, true).map(Value::string)
        }),
    );
    m.insert(
        "toRawJson",
        Func::new(vec![any()], |c, a| {
            to_json(c, &a[0], false, false).map(Value::string)
        }),
    );
    m.insert(
        "mustToRawJson",
        Func::new(vec![any()], |c, a| {
            to_json(c, &a[0], false, false).map(Value::string)
        }),
    );
    m.insert(
        "fromJson",
        Func::new(vec![t::string()], |c, a| {
            Ok(from_json(c, s(&a[0])).unwrap_or(Value::Nil))
        }),
    );
    m.insert(
        "mustFromJson",
        Func::new(vec![t::string()], |c, a| from_json(c, s(&a[0]))),
    );
}

fn from_json(c: &mut Ctx<'_>, text: &str) -> FuncResult {
    let j: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    Ok(c.heap.adopt(&Value::from_json(&j), 0))
}

/// Go's `json.Marshal` (`html`: escape `<>&`; `pretty`: `MarshalIndent(v, "", "  ")`).
fn to_json(c: &Ctx<'_>, v: &Value, html: bool, pretty: bool) -> Result<String, String> {
    let mut out = String::new();
    write_json(&mut out, v, html, pretty, 0, c.max_value())?;
    Ok(out)
}

fn indent(out: &mut String, pretty: bool, depth: usize) {
    if pretty {
        out.push('\n');
        for _ in 0..depth {
            out.push_str("  ");
        }
    }
}

fn write_json(
    out: &mut String,
    v: &Value,
    html: bool,
    pretty: bool,
    depth: usize,
    limit: usize,
) -> Result<(), String> {
    if depth > 64 {
        return Err("json: unsupported value: encountered a cycle".into());
    }
    if out.len() > limit {
        return Err(format!("result exceeds the limit of {limit} bytes"));
    }
    match v {
        Value::Invalid | Value::Nil => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) | Value::Int64(i) => out.push_str(&i.to_string()),
        Value::Float(f) => {
            if !f.is_finite() {
                return Err(format!(
                    "json: unsupported value: {}",
                    format_float(*f, 'g', -1)
                ));
            }
            out.push_str(&json_float(*f));
        }
        Value::Str(s) => write_json_string(out, s, html),
        Value::Slice(sl) => {
            if sl.nil {
                out.push_str("null");
                return Ok(());
            }
            out.push('[');
            for (k, x) in sl.items.iter().enumerate() {
                if k > 0 {
                    out.push(',');
                }
                indent(out, pretty, depth + 1);
                write_json(out, x, html, pretty, depth + 1, limit)?;
            }
            if !sl.items.is_empty() {
                indent(out, pretty, depth);
            }
            out.push(']');
        }
        Value::Map(m) => {
            let m = m.borrow();
            if m.nil {
                out.push_str("null");
                return Ok(());
            }
            out.push('{');
            for (k, (key, x)) in m.entries.iter().enumerate() {
                if k > 0 {
                    out.push(',');
                }
                indent(out, pretty, depth + 1);
                write_json_string(out, key, html);
                out.push(':');
                if pretty {
                    out.push(' ');
                }
                write_json(out, x, html, pretty, depth + 1, limit)?;
            }
            if !m.entries.is_empty() {
                indent(out, pretty, depth);
            }
            out.push('}');
        }
        Value::Struct(st) => {
            out.push('{');
            for (k, (name, x)) in st.fields.iter().enumerate() {
                if k > 0 {
                    out.push(',');
                }
                indent(out, pretty, depth + 1);
                write_json_string(out, name, html);
                out.push(':');
                if pretty {
                    out.push(' ');
                }
                write_json(out, x, html, pretty, depth + 1, limit)?;
            }
            if !st.fields.is_empty() {
                indent(out, pretty, depth);
            }
            out.push('}');
        }
    }
    Ok(())
}

/// encoding/json's float format: `%f`-like unless the exponent is extreme.
fn json_float(f: f64) -> String {
    let a = f.abs();
    if a != 0.0 && !(1e-6..1e21).contains(&a) {
        let s = format_float(f, 'e', -1);
        // Go cleans e-09 to e-9.
        if let Some(i) = s.find("e-0") {
            return format!("{}e-{}", &s[..i], &s[i + 3..]);
        }
        if let Some(i) = s.find("e+0") {
            return format!("{}e+{}", &s[..i], &s[i + 3..]);
        }
        return s;
    }
    format_float(f, 'f', -1)
}

fn write_json_string(out: &mut String, s: &str, html: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' if html => out.push_str(&format!("\\u{:04x}", c as u32)),
            '\u{2028}' | '\u{2029}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}
