//! The three classic patch types: JSON merge patch (RFC 7386), JSON patch (RFC 6902,
//! including `test`) and strategic merge patch (built-in kinds only: lists merged by their
//! patch merge keys, `$patch`, `$setElementOrder`, `$deleteFromPrimitiveList`,
//! `$retainKeys` directives).
//!
//! [`list_strategy`] describes how the built-in kinds' lists merge; server-side apply
//! ([`crate::apply`]) uses the same table for its list types.

use serde_json::{Map, Value};

/// How a list merges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListStrategy {
    /// Replaced whole.
    Atomic,
    /// A set of scalars (merged as a union).
    Set,
    /// Items identified by key fields (the first is the strategic merge key).
    Map(Vec<String>),
}

fn keys(k: &[&str]) -> Vec<String> {
    k.iter().map(|s| s.to_string()).collect()
}

/// The merge strategy of a built-in kind's list at `path` (field names from the root,
/// list indices left out).
pub fn list_strategy(path: &[String]) -> ListStrategy {
    let Some(last) = path.last() else {
        return ListStrategy::Atomic;
    };
    let parent = path
        .len()
        .checked_sub(2)
        .map(|i| path[i].as_str())
        .unwrap_or("");
    let in_container = path
        .iter()
        .any(|p| p == "containers" || p == "initContainers" || p == "ephemeralContainers");
    match last.as_str() {
        "finalizers" if parent == "metadata" => ListStrategy::Set,
        "ownerReferences" => ListStrategy::Map(keys(&["uid"])),
        "containers" | "initContainers" | "ephemeralContainers"
            if !in_container_list_parent(path) =>
        {
            ListStrategy::Map(keys(&["name"]))
        }
        "env" if in_container => ListStrategy::Map(keys(&["name"])),
        "ports" if in_container => ListStrategy::Map(keys(&["containerPort", "protocol"])),
        "ports" if parent == "spec" => ListStrategy::Map(keys(&["port", "protocol"])),
        "volumeMounts" => ListStrategy::Map(keys(&["mountPath"])),
        "volumeDevices" => ListStrategy::Map(keys(&["devicePath"])),
        "volumes" if parent == "spec" => ListStrategy::Map(keys(&["name"])),
        "imagePullSecrets" => ListStrategy::Map(keys(&["name"])),
        "conditions" => ListStrategy::Map(keys(&["type"])),
        "hostAliases" => ListStrategy::Map(keys(&["ip"])),
        "topologySpreadConstraints" => {
            ListStrategy::Map(keys(&["topologyKey", "whenUnsatisfiable"]))
        }
        "resourceClaims" | "schedulingGates" => ListStrategy::Map(keys(&["name"])),
        "addresses" if parent == "status" => ListStrategy::Map(keys(&["type"])),
        _ => ListStrategy::Atomic,
    }
}

fn in_container_list_parent(path: &[String]) -> bool {
    // "containers" nested below a container would be odd; treat the top-level ones as lists.
    path.len() >= 2
        && matches!(
            path[path.len() - 2].as_str(),
            "containers" | "initContainers"
        )
}

/// RFC 7386 merge patch.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    match patch {
        Value::Object(p) => {
            let mut out = match target {
                Value::Object(t) => t.clone(),
                _ => Map::new(),
            };
            for (k, v) in p {
                if v.is_null() {
                    out.remove(k);
                } else {
                    let cur = out.get(k).cloned().unwrap_or(Value::Null);
                    out.insert(k.clone(), merge_patch(&cur, v));
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

fn unescape_pointer(tok: &str) -> String {
    tok.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(p: &str) -> Result<Vec<String>, String> {
    if p.is_empty() {
        return Ok(vec![]);
    }
    if !p.starts_with('/') {
        return Err(format!(
            "JSON pointer must be empty or start with a \"/\": {p:?}"
        ));
    }
    Ok(p[1..].split('/').map(unescape_pointer).collect())
}

fn get_mut<'a>(doc: &'a mut Value, toks: &[String]) -> Option<&'a mut Value> {
    let mut cur = doc;
    for t in toks {
        cur = match cur {
            Value::Object(m) => m.get_mut(t)?,
            Value::Array(a) => {
                let i: usize = t.parse().ok()?;
                a.get_mut(i)?
            }
            _ => return None,
        };
    }
    Some(cur)
}

fn add(doc: &mut Value, path: &str, val: Value) -> Result<(), String> {
    let toks = split_pointer(path)?;
    let Some((last, parent)) = toks.split_last() else {
        *doc = val;
        return Ok(());
    };
    let parent = get_mut(doc, parent).ok_or_else(|| {
        format!("add operation does not apply: doc is missing path: {path:?}: missing value")
    })?;
    match parent {
        Value::Object(m) => {
            m.insert(last.clone(), val);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(val);
                return Ok(());
            }
            let i: usize = last
                .parse()
                .map_err(|_| format!("add operation does not apply: invalid index {last:?}"))?;
            if i > a.len() {
                return Err(format!(
                    "add operation does not apply: index out of bounds: {path}"
                ));
            }
            a.insert(i, val);
            Ok(())
        }
        _ => Err(format!(
            "add operation does not apply: doc is missing path: {path:?}: missing value"
        )),
    }
}

fn remove(doc: &mut Value, path: &str, op: &str) -> Result<Value, String> {
    let toks = split_pointer(path)?;
    let Some((last, parent)) = toks.split_last() else {
        return Err(format!(
            "{op} operation does not apply: cannot remove the whole document"
        ));
    };
    let missing =
        || format!("{op} operation does not apply: doc is missing path: {path:?}: missing value");
    let parent = get_mut(doc, parent).ok_or_else(missing)?;
    match parent {
        Value::Object(m) => m.remove(last).ok_or_else(missing),
        Value::Array(a) => {
            let i: usize = last.parse().map_err(|_| missing())?;
            if i >= a.len() {
                return Err(missing());
            }
            Ok(a.remove(i))
        }
        _ => Err(missing()),
    }
}

/// RFC 6902 JSON patch.
///
/// # Errors
/// A message naming the failing operation (the caller answers 422).
pub fn json_patch(doc: &Value, ops: &Value) -> Result<Value, String> {
    let ops = ops
        .as_array()
        .ok_or("json patch must be an array of operations")?;
    let mut doc = doc.clone();
    for op in ops {
        let kind = op
            .get("op")
            .and_then(Value::as_str)
            .ok_or("json patch operation without \"op\"")?;
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{kind} operation without \"path\""))?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| format!("{kind} operation without \"value\""))
        };
        match kind {
            "add" => add(&mut doc, path, value()?)?,
            "remove" => {
                remove(&mut doc, path, "remove")?;
            }
            "replace" => {
                let toks = split_pointer(path)?;
                let v = value()?;
                let slot = get_mut(&mut doc, &toks).ok_or_else(|| {
                    format!("replace operation does not apply: doc is missing key: {path}: missing value")
                })?;
                *slot = v;
            }
            "move" | "copy" => {
                let from = op
                    .get("from")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("{kind} operation without \"from\""))?;
                let v = if kind == "move" {
                    remove(&mut doc, from, kind)?
                } else {
                    let toks = split_pointer(from)?;
                    get_mut(&mut doc, &toks).cloned().ok_or_else(|| {
                        format!("copy operation does not apply: doc is missing from path: {from}")
                    })?
                };
                add(&mut doc, path, v)?;
            }
            "test" => {
                let toks = split_pointer(path)?;
                let want = op.get("value").cloned().unwrap_or(Value::Null);
                let got = get_mut(&mut doc, &toks).cloned();
                let ok = match got {
                    Some(g) => g == want,
                    None => want.is_null(),
                };
                if !ok {
                    return Err(format!("testing value {path} failed: test failed"));
                }
            }
            other => return Err(format!("Unexpected kind: {other}")),
        }
    }
    Ok(doc)
}

/// Strategic merge patch for a built-in kind.
///
/// # Errors
/// A message for malformed directives (the caller answers 400/422).
pub fn strategic_merge(target: &Value, patch: &Value) -> Result<Value, String> {
    smp_map(target, patch, &mut Vec::new())
}

fn smp_map(target: &Value, patch: &Value, path: &mut Vec<String>) -> Result<Value, String> {
    let Value::Object(p) = patch else {
        return Ok(patch.clone());
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut m = p.clone();
            m.remove("$patch");
            return Ok(Value::Object(m));
        }
        Some("delete") => return Ok(Value::Null),
        Some("merge") | None => {}
        Some(other) => return Err(format!("Unknown patch type: {other}")),
    }
    let mut out = match target {
        Value::Object(t) => t.clone(),
        _ => Map::new(),
    };
    let mut orders: Vec<(String, Value)> = Vec::new();
    for (k, v) in p {
        if k == "$patch" || k == "$retainKeys" {
            continue;
        }
        if let Some(list) = k.strip_prefix("$setElementOrder/") {
            orders.push((list.to_string(), v.clone()));
            continue;
        }
        if let Some(list) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(cur)), Some(del)) = (out.get_mut(list), v.as_array()) {
                cur.retain(|x| !del.contains(x));
            }
            continue;
        }
        if v.is_null() {
            out.remove(k);
            continue;
        }
        path.push(k.clone());
        let cur = out.get(k).cloned().unwrap_or(Value::Null);
        let merged = match v {
            Value::Object(_) => smp_map(&cur, v, path)?,
            Value::Array(items) => smp_list(&cur, items, path)?,
            other => other.clone(),
        };
        path.pop();
        if merged.is_null() && v.is_object() {
            out.remove(k);
        } else {
            out.insert(k.clone(), merged);
        }
    }
    for (list, order) in orders {
        path.push(list.clone());
        let strategy = list_strategy(path);
        path.pop();
        if let (Some(Value::Array(cur)), Some(order)) = (out.get_mut(&list), order.as_array()) {
            reorder(cur, order, &strategy);
        }
    }
    if let Some(keep) = p.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        out.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(Value::Object(out))
}

fn key_of(item: &Value, key: &str) -> Value {
    item.get(key).cloned().unwrap_or(Value::Null)
}

fn reorder(cur: &mut Vec<Value>, order: &[Value], strategy: &ListStrategy) {
    let pos = |item: &Value| -> usize {
        let idx = match strategy {
            ListStrategy::Map(keys) => order
                .iter()
                .position(|o| key_of(o, &keys[0]) == key_of(item, &keys[0])),
            _ => order.iter().position(|o| o == item),
        };
        idx.unwrap_or(usize::MAX)
    };
    let mut indexed: Vec<(usize, usize, Value)> = cur
        .drain(..)
        .enumerate()
        .map(|(i, v)| (pos(&v), i, v))
        .collect();
    indexed.sort_by_key(|(p, i, _)| (*p, *i));
    cur.extend(indexed.into_iter().map(|(_, _, v)| v));
}

fn smp_list(target: &Value, items: &[Value], path: &mut Vec<String>) -> Result<Value, String> {
    let strategy = list_strategy(path);
    let cur: Vec<Value> = target.as_array().cloned().unwrap_or_default();
    // A `{"$patch": "replace"}` item replaces the whole list with the other items.
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Ok(Value::Array(
            items
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .cloned()
                .collect(),
        ));
    }
    match strategy {
        ListStrategy::Atomic => Ok(Value::Array(items.to_vec())),
        ListStrategy::Set => {
            let mut out = cur;
            for i in items {
                if !out.contains(i) {
                    out.push(i.clone());
                }
            }
            Ok(Value::Array(out))
        }
        ListStrategy::Map(keys) => {
            let key = keys[0].as_str();
            let mut out = cur;
            for it in items {
                let k = key_of(it, key);
                let pos = out.iter().position(|o| key_of(o, key) == k);
                match it.get("$patch").and_then(Value::as_str) {
                    Some("delete") => {
                        out.retain(|o| key_of(o, key) != k);
                    }
                    _ => match pos {
                        Some(p) => {
                            let merged = smp_map(&out[p], it, path)?;
                            out[p] = merged;
                        }
                        None => {
                            let mut clean = it.clone();
                            if let Some(m) = clean.as_object_mut() {
                                m.remove("$patch");
                            }
                            out.push(smp_map(&Value::Null, &clean, path)?);
                        }
                    },
                }
            }
            Ok(Value::Array(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_removes_nulls() {
        let t = json!({"a": 1, "b": {"c": 2, "d": 3}});
        let p = json!({"a": null, "b": {"c": 5}});
        assert_eq!(merge_patch(&t, &p), json!({"b": {"c": 5, "d": 3}}));
    }

    #[test]
    fn json_patch_test_op_guards() {
        let d = json!({"metadata": {"finalizers": ["a"]}});
        let ok = json!([{"op": "test", "path": "/metadata/finalizers", "value": ["a"]},
                        {"op": "add", "path": "/metadata/finalizers/-", "value": "b"}]);
        assert_eq!(
            json_patch(&d, &ok).unwrap()["metadata"]["finalizers"],
            json!(["a", "b"])
        );
        let bad = json!([{"op": "test", "path": "/metadata/finalizers", "value": ["x"]}]);
        assert!(json_patch(&d, &bad).unwrap_err().contains("test failed"));
        let rm = json!([{"op": "remove", "path": "/metadata/labels"}]);
        assert!(json_patch(&d, &rm).is_err());
    }

    #[test]
    fn strategic_merge_by_name() {
        let t = json!({"spec": {"containers": [{"name": "a", "image": "x", "env": [{"name": "E", "value": "1"}]},
                                                {"name": "b", "image": "y"}]}});
        let p = json!({"spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [{"name": "a", "env": [{"name": "F", "value": "2"}]}, {"name": "b", "$patch": "delete"}]}});
        let r = strategic_merge(&t, &p).unwrap();
        assert_eq!(r["spec"]["containers"].as_array().unwrap().len(), 1);
        assert_eq!(r["spec"]["containers"][0]["image"], "x");
        assert_eq!(
            r["spec"]["containers"][0]["env"].as_array().unwrap().len(),
            2
        );
        let f = strategic_merge(
            &json!({"metadata": {"finalizers": ["a"]}}),
            &json!({"metadata": {"finalizers": ["b"]}}),
        )
        .unwrap();
        assert_eq!(f["metadata"]["finalizers"], json!(["a", "b"]));
        let args = strategic_merge(
            &json!({"spec": {"args": ["a"]}}),
            &json!({"spec": {"args": ["b"]}}),
        )
        .unwrap();
        assert_eq!(args["spec"]["args"], json!(["b"]));
    }
}
