//! sprig's list functions (`list.go`): building, slicing and searching lists.
//!
//! The `must*` variants return an error where the plain ones panic in Go; both end as
//! the call's error here, as Go's template engine turns a panic into one.

use super::{i, t};
use crate::template::funcs::{Ctx, Func, FuncMap, FuncResult};
use crate::template::value::{GoType, Value};

pub(super) fn register(m: &mut FuncMap) {
    let any = t::any;
    m.insert(
        "list",
        Func::variadic(vec![], any(), |_, a| Ok(any_list(a.to_vec()))),
    );
    m.insert(
        "tuple",
        Func::variadic(vec![], any(), |_, a| Ok(any_list(a.to_vec()))),
    );
    for name in ["append", "push", "mustAppend", "mustPush"] {
        m.insert(
            name,
            Func::new(vec![any(), any()], |_, a| {
                let mut l = items(&a[0], "push")?;
                l.push(a[1].clone());
                Ok(any_list(l))
            }),
        );
    }
    for name in ["prepend", "mustPrepend"] {
        m.insert(
            name,
            Func::new(vec![any(), any()], |_, a| {
                let mut l = items(&a[0], "prepend")?;
                l.insert(0, a[1].clone());
                Ok(any_list(l))
            }),
        );
    }
    for name in ["first", "mustFirst"] {
        m.insert(
            name,
            Func::new(vec![any()], |_, a| {
                Ok(items(&a[0], "find first")?
                    .first()
                    .cloned()
                    .unwrap_or(Value::Nil))
            }),
        );
    }
    for name in ["last", "mustLast"] {
        m.insert(
            name,
            Func::new(vec![any()], |_, a| {
                Ok(items(&a[0], "find last")?
                    .last()
                    .cloned()
                    .unwrap_or(Value::Nil))
            }),
        );
    }
    for name in ["rest", "mustRest"] {
        m.insert(
            name,
            Func::new(vec![any()], |_, a| {
                let l = items(&a[0], "find rest")?;
                if l.is_empty() {
                    return Ok(GoType::any_slice().zero());
                }
                Ok(any_list(l[1..].to_vec()))
            }),
        );
    }
    for name in ["initial", "mustInitial"] {
        m.insert(
            name,
            Func::new(vec![any()], |_, a| {
                let l = items(&a[0], "find initial")?;
                if l.is_empty() {
                    return Ok(GoType::any_slice().zero());
                }
                Ok(any_list(l[..l.len() - 1].to_vec()))
            }),
        );
    }
    for name in ["reverse", "mustReverse"] {
        m.insert(
            name,
            Func::new(vec![any()], |_, a| {
                let mut l = items(&a[0], "find reverse")?;
                l.reverse();
                Ok(any_list(l))
            }),
        );
    }
    for name in ["compact", "mustCompact"] {
        m.insert(
            name,
            Func::new(vec![any()], |_, a| {
                let l = items(&a[0], "compact on")?;
                Ok(any_list(l.into_iter().filter(|v| !v.is_empty()).collect()))
            }),
        );
    }
    for name in ["uniq", "mustUniq"] {
        m.insert(
            name,
            Func::new(vec![any()], |_, a| {
                let mut out: Vec<Value> = Vec::new();
                for v in items(&a[0], "find uniq")? {
                    if !out.iter().any(|o| o.deep_equal(&v)) {
                        out.push(v);
                    }
                }
                Ok(any_list(out))
            }),
        );
    }
    for name in ["without", "mustWithout"] {
        m.insert(
            name,
            Func::variadic(vec![any()], any(), |_, a| {
                let l = items(&a[0], "find without")?;
                let omit = &a[1..];
                Ok(any_list(
                    l.into_iter()
                        .filter(|v| !omit.iter().any(|o| o.deep_equal(v)))
                        .collect(),
                ))
            }),
        );
    }
    for name in ["has", "mustHas"] {
        m.insert(
            name,
            Func::new(vec![any(), any()], |_, a| {
                if a[1].is_nil_like() {
                    return Ok(Value::Bool(false));
                }
                let l = items(&a[1], "find has")?;
                Ok(Value::Bool(l.iter().any(|v| v.deep_equal(&a[0]))))
            }),
        );
    }
    for name in ["slice", "mustSlice"] {
        m.insert(name, Func::variadic(vec![any()], any(), slice));
    }
    m.insert(
        "concat",
        Func::variadic(vec![], any(), |c, a| {
            let mut out = Vec::new();
            for l in a {
                match l {
                    Value::Slice(s) => out.extend(s.items.iter().cloned()),
                    other => return Err(format!("Cannot concat type {} as list", kind(other))),
                }
                c.check_size(out.len())?;
            }
            Ok(Value::Slice(std::rc::Rc::new(
                crate::template::value::SliceData {
                    elem: GoType::Interface,
                    nil: out.is_empty(),
                    items: out,
                },
            )))
        }),
    );
    for name in ["chunk", "mustChunk"] {
        m.insert(name, Func::new(vec![t::int(), any()], chunk));
    }
    m.insert(
        "until",
        Func::new(vec![t::int()], |c, a| {
            let n = i(&a[0]);
            until_step(c, 0, n, if n < 0 { -1 } else { 1 })
        }),
    );
    m.insert(
        "untilStep",
        Func::new(vec![t::int(), t::int(), t::int()], |c, a| {
            until_step(c, i(&a[0]), i(&a[1]), i(&a[2]))
        }),
    );
}

pub(crate) fn any_list(items: Vec<Value>) -> Value {
    Value::slice(GoType::Interface, items)
}

/// The reflect kind name Go's messages use.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Invalid | Value::Nil => "invalid",
        v => v.kind_name(),
    }
}

/// The elements of a list argument; Go panics on nil (reflect.TypeOf(nil).Kind()).
fn items(v: &Value, what: &str) -> Result<Vec<Value>, String> {
    match v {
        Value::Slice(s) => Ok(s.items.clone()),
        Value::Invalid | Value::Nil => {
            Err("runtime error: invalid memory address or nil pointer dereference".into())
        }
        other => Err(format!("Cannot {what} on type {}", kind(other))),
    }
}

fn to_int(v: &Value) -> i64 {
    super::numeric::to_int64(v)
}

fn slice(_: &mut Ctx<'_>, a: &[Value]) -> FuncResult {
    let l = match &a[0] {
        Value::Slice(s) => s.clone(),
        Value::Invalid | Value::Nil => {
            return Err("runtime error: invalid memory address or nil pointer dereference".into())
        }
        other => {
            return Err(format!(
                "list should be type of slice or array but {}",
                kind(other)
            ))
        }
    };
    let len = l.items.len() as i64;
    if len == 0 {
        return Ok(Value::Nil);
    }
    let start = a.get(1).map_or(0, to_int);
    let end = if a.len() < 3 { len } else { to_int(&a[2]) };
    if start < 0 || end < start || end > len {
        return Err("reflect: slice index out of range".to_string());
    }
    Ok(Value::slice(
        l.elem.clone(),
        l.items[start as usize..end as usize].to_vec(),
    ))
}

fn chunk(_: &mut Ctx<'_>, a: &[Value]) -> FuncResult {
    let size = i(&a[0]);
    let l = items(&a[1], "chunk")?;
    if size <= 0 {
        return Err("runtime error: integer divide by zero".into());
    }
    let out: Vec<Value> = l
        .chunks(size as usize)
        .map(|c| any_list(c.to_vec()))
        .collect();
    Ok(Value::slice(GoType::any_slice(), out))
}

/// sprig's `untilStep`, refusing results larger than the value limit.
fn until_step(c: &mut Ctx<'_>, start: i64, stop: i64, step: i64) -> FuncResult {
    let count: u128 = if stop < start {
        if step >= 0 {
            0
        } else {
            ((i128::from(start) - i128::from(stop) + i128::from(-step) - 1) / i128::from(-step))
                as u128
        }
    } else if step <= 0 {
        0
    } else {
        ((i128::from(stop) - i128::from(start) + i128::from(step) - 1) / i128::from(step)) as u128
    };
    c.check_size(usize::try_from(count).unwrap_or(usize::MAX))?;
    let mut out = Vec::with_capacity(count as usize);
    let mut x = start;
    for _ in 0..count {
        out.push(Value::Int(x));
        x = x.wrapping_add(step);
    }
    Ok(Value::slice(GoType::Int, out))
}
