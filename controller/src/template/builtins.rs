//! Go's builtin template functions: `and or not len index slice print printf println
//! eq ne lt le gt ge html js urlquery call`.
//!
//! `and` and `or` short-circuit and are evaluated by the executor; they are listed here
//! for their signatures. Messages are Go's (newest wording where versions differ).

use super::fmt::{sprint, sprintf, sprintln, Printer};
use super::funcs::{Ctx, Func, FuncMap, FuncResult};
use super::value::{byte_slice, GoType, Value};

/// The builtin functions.
pub(crate) fn builtins() -> FuncMap {
    use GoType::{Interface as Any, ReflectValue as RV, String as Str};
    let mut m = FuncMap::new();
    m.insert(
        "and",
        Func::variadic(vec![RV], RV, |_, _| Ok(Value::Invalid)),
    );
    m.insert(
        "or",
        Func::variadic(vec![RV], RV, |_, _| Ok(Value::Invalid)),
    );
    m.insert("call", Func::variadic(vec![RV], RV, call));
    m.insert("html", Func::variadic(vec![], Any, html));
    m.insert("index", Func::variadic(vec![RV], RV, index));
    m.insert("slice", Func::variadic(vec![RV], RV, slice));
    m.insert("js", Func::variadic(vec![], Any, js));
    m.insert("len", Func::new(vec![RV], len));
    m.insert(
        "not",
        Func::new(vec![RV], |_, a| Ok(Value::Bool(!a[0].truth()))),
    );
    m.insert("print", Func::variadic(vec![], Any, print));
    m.insert("printf", Func::variadic(vec![Str], Any, printf));
    m.insert("println", Func::variadic(vec![], Any, println));
    m.insert("urlquery", Func::variadic(vec![], Any, urlquery));
    m.insert(
        "eq",
        Func::variadic(vec![RV], RV, |_, a| eq(&a[0], &a[1..]).map(Value::Bool)),
    );
    m.insert(
        "ne",
        Func::new(vec![RV, RV], |_, a| {
            eq(&a[0], &a[1..]).map(|b| Value::Bool(!b))
        }),
    );
    m.insert(
        "lt",
        Func::new(vec![RV, RV], |_, a| lt(&a[0], &a[1]).map(Value::Bool)),
    );
    m.insert(
        "le",
        Func::new(vec![RV, RV], |_, a| le(&a[0], &a[1]).map(Value::Bool)),
    );
    m.insert(
        "gt",
        Func::new(vec![RV, RV], |_, a| {
            le(&a[0], &a[1]).map(|b| Value::Bool(!b))
        }),
    );
    m.insert(
        "ge",
        Func::new(vec![RV, RV], |_, a| {
            lt(&a[0], &a[1]).map(|b| Value::Bool(!b))
        }),
    );
    m
}

fn printed(ctx: &Ctx<'_>, f: impl FnOnce(&mut Printer)) -> FuncResult {
    let mut p = Printer::new(ctx.max_value());
    f(&mut p);
    if p.overflowed() {
        return Err(format!(
            "result exceeds the limit of {} bytes",
            ctx.max_value()
        ));
    }
    Ok(Value::string(p.finish()))
}

fn print(ctx: &mut Ctx<'_>, a: &[Value]) -> FuncResult {
    printed(ctx, |p| sprint(p, a))
}

fn println(ctx: &mut Ctx<'_>, a: &[Value]) -> FuncResult {
    printed(ctx, |p| sprintln(p, a))
}

fn printf(ctx: &mut Ctx<'_>, a: &[Value]) -> FuncResult {
    let format = a[0].as_str().unwrap_or("").to_string();
    printed(ctx, |p| sprintf(p, &format, &a[1..]))
}

/// Go's `evalArgs` for `html`, `js`, `urlquery`.
fn eval_args(ctx: &Ctx<'_>, a: &[Value]) -> Result<String, String> {
    if let [Value::Str(s)] = a {
        return Ok(s.to_string());
    }
    let args: Vec<Value> = a
        .iter()
        .map(|v| match v {
            Value::Invalid | Value::Nil => Value::str("<no value>"),
            v => v.clone(),
        })
        .collect();
    match printed(ctx, |p| sprint(p, &args))? {
        Value::Str(s) => Ok(s.to_string()),
        _ => Ok(String::new()),
    }
}

fn html(ctx: &mut Ctx<'_>, a: &[Value]) -> FuncResult {
    let s = eval_args(ctx, a)?;
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\0' => out.push('\u{FFFD}'),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    Ok(Value::string(out))
}

fn js(ctx: &mut Ctx<'_>, a: &[Value]) -> FuncResult {
    let s = eval_args(ctx, a)?;
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            '&' => out.push_str("\\u0026"),
            '=' => out.push_str("\\u003D"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u00{:02X}", c as u32)),
            c if !c.is_ascii() && !super::fmt::is_print(c) => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
    Ok(Value::string(out))
}

/// Go's `url.QueryEscape`.
pub(crate) fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn urlquery(ctx: &mut Ctx<'_>, a: &[Value]) -> FuncResult {
    Ok(Value::string(query_escape(&eval_args(ctx, a)?)))
}

fn len(_: &mut Ctx<'_>, a: &[Value]) -> FuncResult {
    match &a[0] {
        Value::Invalid => Err("reflect: call of reflect.Value.Type on zero Value".into()),
        Value::Nil => Err("len of nil pointer".into()),
        v => match v.len() {
            Some(n) => Ok(Value::Int(n as i64)),
            None => Err(format!(
                "len of type {}",
                v.go_type().map(|t| t.to_string()).unwrap_or_default()
            )),
        },
    }
}

fn type_name(v: &Value) -> String {
    v.go_type().map(|t| t.to_string()).unwrap_or_default()
}

/// Go's `indexArg`.
fn index_arg(index: &Value, cap: usize) -> Result<usize, String> {
    let x = match index {
        Value::Int(i) | Value::Int64(i) => *i,
        Value::Invalid | Value::Nil => return Err("cannot index slice/array with nil".into()),
        v => {
            return Err(format!(
                "cannot index slice/array with type {}",
                type_name(v)
            ))
        }
    };
    if x < 0 || x as u64 > cap as u64 {
        return Err(format!("index out of range: {x}"));
    }
    Ok(x as usize)
}

fn index(_: &mut Ctx<'_>, a: &[Value]) -> FuncResult {
    let mut item = a[0].clone().indirect();
    if matches!(item, Value::Invalid) {
        return Err("index of untyped nil".into());
    }
    for idx in &a[1..] {
        let idx = idx.clone().indirect();
        item = match &item {
            Value::Invalid | Value::Nil => return Err("index of nil pointer".into()),
            Value::Str(s) => {
                let x = index_arg(&idx, s.len())?;
                match s.as_bytes().get(x) {
                    Some(b) => Value::Int(i64::from(*b)),
                    None => return Err("reflect: string index out of range".into()),
                }
            }
            Value::Slice(s) => {
                let x = index_arg(&idx, s.items.len())?;
                match s.items.get(x) {
                    Some(v) => v.clone(),
                    None => return Err("reflect: slice index out of range".into()),
                }
            }
            Value::Map(m) => {
                let key = match &idx {
                    Value::Str(k) => k.clone(),
                    Value::Invalid | Value::Nil => {
                        return Err("value is nil; should be of type string".into())
                    }
                    v => return Err(format!("value has type {}; should be string", type_name(v))),
                };
                let m = m.borrow();
                match m.entries.get(&*key) {
                    Some(v) => v.clone(),
                    None => m.elem.zero(),
                }
            }
            v => return Err(format!("can't index item of type {}", type_name(v))),
        };
    }
    Ok(item)
}

fn slice(_: &mut Ctx<'_>, a: &[Value]) -> FuncResult {
    let item = a[0].clone().indirect();
    if matches!(item, Value::Invalid) {
        return Err("slice of untyped nil".into());
    }
    let indexes = &a[1..];
    if indexes.len() > 3 {
        return Err(format!("too many slice indexes: {}", indexes.len()));
    }
    let len = match &item {
        Value::Str(s) => {
            if indexes.len() == 3 {
                return Err("cannot 3-index slice a string".into());
            }
            s.len()
        }
        Value::Slice(s) => s.items.len(),
        v => return Err(format!("can't slice item of type {}", type_name(v))),
    };
    let mut idx = [0usize, len, len];
    for (i, x) in indexes.iter().enumerate() {
        idx[i] = index_arg(&x.clone().indirect(), len)?;
    }
    if idx[0] > idx[1] {
        return Err(format!("invalid slice index: {} > {}", idx[0], idx[1]));
    }
    if indexes.len() == 3 && idx[1] > idx[2] {
        return Err(format!("invalid slice index: {} > {}", idx[1], idx[2]));
    }
    Ok(match &item {
        Value::Str(s) => Value::string(byte_slice(s, idx[0], idx[1])),
        Value::Slice(s) => Value::slice(s.elem.clone(), s.items[idx[0]..idx[1]].to_vec()),
        _ => Value::Invalid,
    })
}

fn call(_: &mut Ctx<'_>, a: &[Value]) -> FuncResult {
    // Template data never holds functions, so `call` always fails, with Go's words.
    match &a[0] {
        Value::Invalid | Value::Nil => Err("call of nil".into()),
        v => Err(format!("non-function of type {}", type_name(v))),
    }
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Kind {
    Invalid,
    Bool,
    Int,
    Float,
    String,
}

fn basic_kind(v: &Value) -> Kind {
    match v {
        Value::Bool(_) => Kind::Bool,
        Value::Int(_) | Value::Int64(_) => Kind::Int,
        Value::Float(_) => Kind::Float,
        Value::Str(_) => Kind::String,
        _ => Kind::Invalid,
    }
}

/// Go's `eq`: `arg1 == arg2 || arg1 == arg3 ...`.
pub(crate) fn eq(arg1: &Value, rest: &[Value]) -> Result<bool, String> {
    let a1 = arg1.clone().indirect();
    if rest.is_empty() {
        return Err("missing argument for comparison".into());
    }
    let k1 = basic_kind(&a1);
    for arg in rest {
        let a = arg.clone().indirect();
        let k2 = basic_kind(&a);
        let truth = if k1 != k2 {
            if !matches!(a1, Value::Invalid) && !matches!(a, Value::Invalid) {
                return Err(format!(
                    "incompatible types for comparison: {} and {}",
                    type_name(&a1),
                    type_name(&a)
                ));
            }
            false
        } else {
            match (&a1, &a) {
                (Value::Bool(x), Value::Bool(y)) => x == y,
                (Value::Int(x) | Value::Int64(x), Value::Int(y) | Value::Int64(y)) => x == y,
                (Value::Float(x), Value::Float(y)) => x == y,
                (Value::Str(x), Value::Str(y)) => x == y,
                _ => {
                    // Non-basic kinds: only nil comparisons and comparable structs.
                    let nil1 = is_nil(&a1);
                    let nil2 = is_nil(&a);
                    let same_kind = a1.kind_name() == a.kind_name()
                        || matches!(a1, Value::Invalid)
                        || matches!(a, Value::Invalid);
                    if !same_kind {
                        return Err(format!(
                            "non-comparable types {}: {}, {}: {}",
                            super::fmt::to_string(&a1, 1 << 16),
                            type_name(&a1),
                            type_name(&a),
                            super::fmt::to_string(&a, 1 << 16)
                        ));
                    }
                    if nil1 || nil2 {
                        nil1 == nil2
                    } else if matches!(a, Value::Struct(_)) {
                        a1.deep_equal(&a)
                    } else {
                        return Err(format!(
                            "non-comparable type {}: {}",
                            super::fmt::to_string(&a, 1 << 16),
                            type_name(&a)
                        ));
                    }
                }
            }
        };
        if truth {
            return Ok(true);
        }
    }
    Ok(false)
}

fn is_nil(v: &Value) -> bool {
    match v {
        Value::Invalid | Value::Nil => true,
        Value::Slice(s) => s.nil,
        Value::Map(m) => m.borrow().nil,
        _ => false,
    }
}

/// Go's `lt`.
pub(crate) fn lt(a1: &Value, a2: &Value) -> Result<bool, String> {
    let a1 = a1.clone().indirect();
    let a2 = a2.clone().indirect();
    let (k1, k2) = (basic_kind(&a1), basic_kind(&a2));
    if k1 == Kind::Invalid || k2 == Kind::Invalid {
        return Err("invalid type for comparison".into());
    }
    if k1 != k2 {
        return Err(format!(
            "incompatible types for comparison: {} and {}",
            type_name(&a1),
            type_name(&a2)
        ));
    }
    Ok(match (&a1, &a2) {
        (Value::Int(x) | Value::Int64(x), Value::Int(y) | Value::Int64(y)) => x < y,
        (Value::Float(x), Value::Float(y)) => x < y,
        (Value::Str(x), Value::Str(y)) => x < y,
        _ => return Err("invalid type for comparison".into()),
    })
}

fn le(a1: &Value, a2: &Value) -> Result<bool, String> {
    if lt(a1, a2)? {
        return Ok(true);
    }
    eq(a1, std::slice::from_ref(a2))
}
