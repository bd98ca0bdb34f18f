//! sprig's dictionary functions (`dict.go`). Maps are shared references: `set` and
//! `unset` change the map every holder sees, as in Go.

use std::collections::BTreeMap;

use super::{s, strval, t};
use crate::template::funcs::{Ctx, Func, FuncMap, FuncResult};
use crate::template::value::{GoType, MapRef, Value};

pub(super) fn register(m: &mut FuncMap) {
    let (any, map, st) = (t::any, t::map, t::string);
    m.insert("dict", Func::variadic(vec![], any(), dict));
    m.insert(
        "get",
        Func::new(vec![map(), st()], |_, a| {
            let d = mref(&a[0]);
            let d = d.borrow();
            Ok(d.entries
                .get(s(&a[1]))
                .cloned()
                .unwrap_or_else(|| Value::str("")))
        }),
    );
    m.insert(
        "set",
        Func::new(vec![map(), st(), any()], |_, a| {
            let d = mref(&a[0]);
            if d.borrow().nil {
                return Err("assignment to entry in nil map".into());
            }
            d.borrow_mut()
                .entries
                .insert(s(&a[1]).to_string(), a[2].clone());
            Ok(a[0].clone())
        }),
    );
    m.insert(
        "unset",
        Func::new(vec![map(), st()], |_, a| {
            mref(&a[0]).borrow_mut().entries.remove(s(&a[1]));
            Ok(a[0].clone())
        }),
    );
    m.insert(
        "hasKey",
        Func::new(vec![map(), st()], |_, a| {
            Ok(Value::Bool(
                mref(&a[0]).borrow().entries.contains_key(s(&a[1])),
            ))
        }),
    );
    m.insert(
        "pluck",
        Func::variadic(vec![st()], map(), |_, a| {
            let key = s(&a[0]);
            let out = a[1..]
                .iter()
                .filter_map(|d| mref(d).borrow().entries.get(key).cloned())
                .collect();
            Ok(Value::slice(GoType::Interface, out))
        }),
    );
    m.insert(
        "keys",
        Func::variadic(vec![], map(), |_, a| {
            let mut out = Vec::new();
            for d in a {
                out.extend(mref(d).borrow().entries.keys().cloned());
            }
            Ok(Value::string_slice(out))
        }),
    );
    m.insert(
        "values",
        Func::new(vec![map()], |_, a| {
            Ok(Value::slice(
                GoType::Interface,
                mref(&a[0]).borrow().entries.values().cloned().collect(),
            ))
        }),
    );
    m.insert(
        "pick",
        Func::variadic(vec![map()], st(), |c, a| {
            let d = mref(&a[0]);
            let d = d.borrow();
            let mut out = BTreeMap::new();
            for k in &a[1..] {
                if let Some(v) = d.entries.get(s(k)) {
                    out.insert(s(k).to_string(), v.clone());
                }
            }
            Ok(c.new_map(GoType::Interface, out))
        }),
    );
    m.insert(
        "omit",
        Func::variadic(vec![map()], st(), |c, a| {
            let d = mref(&a[0]);
            let d = d.borrow();
            let omit: Vec<&str> = a[1..].iter().map(s).collect();
            let out = d
                .entries
                .iter()
                .filter(|(k, _)| !omit.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Ok(c.new_map(GoType::Interface, out))
        }),
    );
    for (name, overwrite) in [
        ("merge", false),
        ("mustMerge", false),
        ("mergeOverwrite", true),
        ("mustMergeOverwrite", true),
    ] {
        let f: fn(&mut Ctx<'_>, &[Value]) -> FuncResult =
            if overwrite { merge_over } else { merge_keep };
        m.insert(name, Func::variadic(vec![map()], map(), f));
    }
    for name in ["deepCopy", "mustDeepCopy"] {
        m.insert(
            name,
            Func::new(vec![any()], |c, a| Ok(c.heap.adopt(&a[0], 0))),
        );
    }
    m.insert("dig", Func::variadic(vec![], any(), dig));
}

fn mref(v: &Value) -> MapRef {
    match v {
        Value::Map(m) => m.clone(),
        _ => match GoType::any_map().zero() {
            Value::Map(m) => m,
            _ => unreachable_map(),
        },
    }
}

fn unreachable_map() -> MapRef {
    MapRef::new_detached(crate::template::value::MapData {
        elem: GoType::Interface,
        entries: BTreeMap::new(),
        nil: true,
    })
}

fn dict(c: &mut Ctx<'_>, a: &[Value]) -> FuncResult {
    let mut out = BTreeMap::new();
    let mut k = 0;
    while k < a.len() {
        let key = match &a[k] {
            Value::Invalid | Value::Nil => "<nil>".to_string(),
            v => strval(v),
        };
        let v = a.get(k + 1).cloned().unwrap_or_else(|| Value::str(""));
        out.insert(key, v);
        k += 2;
    }
    Ok(c.new_map(GoType::Interface, out))
}

/// mergo's merge of `src` into `dst`: missing or empty keys of `dst` take `src`'s
/// value, nested maps merge recursively; with `overwrite`, non-empty `src` values win.
fn merge_into(dst: &MapRef, src: &MapRef, overwrite: bool, depth: usize) -> Result<(), String> {
    if depth > 64 || dst.same(src) {
        return Ok(());
    }
    let entries: Vec<(String, Value)> = src
        .borrow()
        .entries
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, sv) in entries {
        let dv = dst.borrow().entries.get(&k).cloned();
        match dv {
            None => {
                dst.borrow_mut().entries.insert(k, sv);
            }
            Some(Value::Map(dm)) if matches!(sv, Value::Map(_)) => {
                if let Value::Map(sm) = &sv {
                    merge_into(&dm, sm, overwrite, depth + 1)?;
                }
            }
            Some(dv) => {
                if (overwrite && !sv.is_empty()) || dv.is_empty() {
                    dst.borrow_mut().entries.insert(k, sv);
                }
            }
        }
    }
    Ok(())
}

fn merge(a: &[Value], overwrite: bool) -> FuncResult {
    let dst = mref(&a[0]);
    if dst.borrow().nil {
        return Err("src and dst must be of same type".into());
    }
    for src in &a[1..] {
        merge_into(&dst, &mref(src), overwrite, 0)?;
    }
    Ok(a[0].clone())
}

fn merge_keep(_: &mut Ctx<'_>, a: &[Value]) -> FuncResult {
    merge(a, false)
}

fn merge_over(_: &mut Ctx<'_>, a: &[Value]) -> FuncResult {
    merge(a, true)
}

fn dig(_: &mut Ctx<'_>, a: &[Value]) -> FuncResult {
    if a.len() < 3 {
        return Err("dig needs at least three arguments".into());
    }
    let Value::Map(mut d) = a[a.len() - 1].clone() else {
        return Err(format!(
            "interface conversion: interface {{}} is {}, not map[string]interface {{}}",
            a[a.len() - 1]
                .go_type()
                .map(|t| t.to_string())
                .unwrap_or_else(|| "nil".into())
        ));
    };
    let def = a[a.len() - 2].clone();
    let keys = &a[..a.len() - 2];
    for (n, k) in keys.iter().enumerate() {
        let Some(k) = k.as_str() else {
            return Err("interface conversion: interface {} is not string".into());
        };
        let step = d.borrow().entries.get(k).cloned();
        let Some(step) = step else { return Ok(def) };
        if n == keys.len() - 1 {
            return Ok(step);
        }
        match step {
            Value::Map(m) => d = m,
            other => {
                return Err(format!(
                    "interface conversion: interface {{}} is {}, not map[string]interface {{}}",
                    other
                        .go_type()
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "nil".into())
                ))
            }
        }
    }
    Ok(def)
}
