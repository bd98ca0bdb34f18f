//! Server-side apply and `metadata.managedFields`.
//!
//! Field sets are kept in the real `FieldsV1` notation (`f:name`, `k:{"name":"c"}`,
//! `v:"x"`, `.`). Applying a configuration as manager M:
//! 1. the applied set is every field the configuration mentions (apiVersion, kind and the
//!    server-owned metadata left out; status left out of main-resource applies and
//!    everything but status out of `/status` applies);
//! 2. a field in the applied set that another manager owns and whose value differs is a
//!    conflict (409, listing each field and its manager) unless `force=true`, which takes
//!    the field over;
//! 3. the configuration is merged into the live object (maps recursively; lists by their
//!    list type: map lists by key, sets by value, atomic lists replaced);
//! 4. fields M applied before but no longer applies, and nobody else owns, are removed;
//! 5. M's Apply entry becomes the applied set.
//!
//! Other writes (create, update, patch) are tracked as `Update` entries of their manager:
//! fields they change move to that manager, removed fields leave every manager.
//! Not done: per-version conversion of field sets (custom resources are stored in one
//! version here) and the `kubectl apply` client-side-to-server-side migration heuristics
//! beyond what requests that set `managedFields` explicitly do.

use crate::error::ApiError;
use crate::patch::{list_strategy, ListStrategy};
use serde_json::{json, Map, Value};

/// How lists and maps of a kind merge.
pub enum Shape<'a> {
    /// Built-in kinds: the strategic-merge table.
    Builtin,
    /// Custom resources: the version's structural schema.
    Schema(&'a Value),
}

impl Shape<'_> {
    fn schema_at(&self, path: &[String]) -> Option<&Value> {
        let Shape::Schema(root) = self else {
            return None;
        };
        let mut cur = *root;
        for p in path {
            cur = if let Some(s) = cur.pointer(&format!(
                "/properties/{}",
                p.replace('~', "~0").replace('/', "~1")
            )) {
                s
            } else if let Some(ap) = cur.get("additionalProperties").filter(|a| a.is_object()) {
                ap
            } else {
                return None;
            };
            if cur.get("type").and_then(Value::as_str) == Some("array") {
                // The next path element (if any) is inside an item.
                if let Some(items) = cur.get("items") {
                    if path.last() != Some(p) {
                        cur = items;
                    }
                }
            }
        }
        Some(cur)
    }

    /// The list type at a path of field names.
    pub fn list(&self, path: &[String]) -> ListStrategy {
        match self {
            Shape::Builtin => list_strategy(path),
            Shape::Schema(_) => {
                let Some(s) = self.schema_at(path) else {
                    return ListStrategy::Atomic;
                };
                match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
                    Some("set") => ListStrategy::Set,
                    Some("map") => {
                        let keys: Vec<String> = s
                            .get("x-kubernetes-list-map-keys")
                            .and_then(Value::as_array)
                            .map(|a| {
                                a.iter()
                                    .filter_map(Value::as_str)
                                    .map(str::to_string)
                                    .collect()
                            })
                            .unwrap_or_default();
                        if keys.is_empty() {
                            ListStrategy::Atomic
                        } else {
                            ListStrategy::Map(keys)
                        }
                    }
                    _ => ListStrategy::Atomic,
                }
            }
        }
    }

    fn atomic_map(&self, path: &[String]) -> bool {
        match self {
            Shape::Builtin => false,
            Shape::Schema(_) => {
                self.schema_at(path)
                    .and_then(|s| s.get("x-kubernetes-map-type"))
                    .and_then(Value::as_str)
                    == Some("atomic")
            }
        }
    }
}

const SERVER_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
];

/// Which part of an object a write covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The main resource of a kind without a status subresource: everything.
    All,
    /// The main resource of a kind with a status subresource: all but status.
    Main,
    /// The `/status` subresource: status only.
    Status,
}

fn strip(obj: &Value, part: Part) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
        match part {
            Part::Main => {
                m.remove("status");
            }
            Part::Status => {
                m.retain(|k, _| k == "status");
            }
            Part::All => {}
        }
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            for f in SERVER_META {
                meta.remove(*f);
            }
        }
        if m.get("metadata")
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty)
        {
            m.remove("metadata");
        }
    }
    o
}

fn key_string(item: &Value, keys: &[String]) -> String {
    let mut m = Map::new();
    for k in keys {
        if let Some(v) = item.get(k) {
            m.insert(k.clone(), v.clone());
        }
    }
    format!("k:{}", Value::Object(m))
}

/// The field set of a value, in FieldsV1 notation.
pub fn field_set(v: &Value, shape: &Shape<'_>, path: &mut Vec<String>) -> Map<String, Value> {
    let mut out = Map::new();
    let Value::Object(m) = v else { return out };
    for (k, child) in m {
        path.push(k.clone());
        let sub = match child {
            Value::Object(cm) if !cm.is_empty() && !shape.atomic_map(path) => {
                Value::Object(field_set(child, shape, path))
            }
            Value::Array(items) => match shape.list(path) {
                ListStrategy::Atomic => json!({}),
                ListStrategy::Set => {
                    let mut s = Map::new();
                    for it in items {
                        s.insert(format!("v:{it}"), json!({}));
                    }
                    Value::Object(s)
                }
                ListStrategy::Map(keys) => {
                    let mut s = Map::new();
                    for it in items {
                        let mut inner = field_set(it, shape, path);
                        inner.insert(".".into(), json!({}));
                        s.insert(key_string(it, &keys), Value::Object(inner));
                    }
                    Value::Object(s)
                }
            },
            _ => json!({}),
        };
        path.pop();
        out.insert(format!("f:{k}"), sub);
    }
    out
}

/// All leaf paths of a field set.
pub fn leaves(set: &Map<String, Value>) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    fn walk(m: &Map<String, Value>, cur: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        for (k, v) in m {
            cur.push(k.clone());
            match v.as_object() {
                Some(sub) if !sub.is_empty() => walk(sub, cur, out),
                _ => out.push(cur.clone()),
            }
            cur.pop();
        }
    }
    walk(set, &mut Vec::new(), &mut out);
    out
}

fn set_contains(set: &Map<String, Value>, path: &[String]) -> bool {
    let mut cur = set;
    for (i, p) in path.iter().enumerate() {
        match cur.get(p) {
            None => return false,
            Some(v) => {
                let sub = v.as_object();
                if i + 1 == path.len() {
                    return sub.is_none_or(Map::is_empty);
                }
                match sub {
                    Some(s) => cur = s,
                    None => return false,
                }
            }
        }
    }
    false
}

fn set_has_under(set: &Map<String, Value>, path: &[String]) -> bool {
    let mut cur = set;
    for p in path {
        match cur.get(p).and_then(Value::as_object) {
            Some(s) => cur = s,
            None => return cur.contains_key(p),
        }
    }
    true
}

fn set_remove(set: &mut Map<String, Value>, path: &[String]) {
    fn rec(m: &mut Map<String, Value>, path: &[String]) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        if rest.is_empty() {
            m.remove(first);
            return;
        }
        if let Some(Value::Object(sub)) = m.get_mut(first) {
            rec(sub, rest);
            if sub.is_empty() {
                m.remove(first);
            }
        }
    }
    rec(set, path);
}

fn set_insert(set: &mut Map<String, Value>, path: &[String]) {
    let mut cur = set;
    for p in path {
        let entry = cur.entry(p.clone()).or_insert_with(|| json!({}));
        if !entry.is_object() {
            *entry = json!({});
        }
        cur = entry.as_object_mut().expect("object");
    }
}

/// The value at a field-set path in an object (None if absent).
fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for p in path {
        if p == "." {
            return Some(cur);
        }
        if let Some(f) = p.strip_prefix("f:") {
            cur = cur.get(f)?;
        } else if let Some(k) = p.strip_prefix("k:") {
            let key: Value = serde_json::from_str(k).ok()?;
            let km = key.as_object()?;
            cur = cur
                .as_array()?
                .iter()
                .find(|it| km.iter().all(|(kk, kv)| it.get(kk) == Some(kv)))?;
        } else if let Some(v) = p.strip_prefix("v:") {
            let want: Value = serde_json::from_str(v).ok()?;
            cur = cur.as_array()?.iter().find(|it| **it == want)?;
        } else {
            return None;
        }
    }
    Some(cur)
}

fn remove_at(obj: &mut Value, path: &[String]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    if last == "." {
        // Remove the list item that `parent` designates.
        if let Some((item, list_path)) = parent.split_last() {
            if let Some(list) = value_at_mut(obj, list_path).and_then(Value::as_array_mut) {
                remove_item(list, item);
            }
        }
        return;
    }
    let Some(container) = value_at_mut(obj, parent) else {
        return;
    };
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = container.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(list) = container.as_array_mut() {
        remove_item(list, last);
    }
}

fn remove_item(list: &mut Vec<Value>, item: &str) {
    if let Some(k) = item.strip_prefix("k:") {
        if let Ok(Value::Object(km)) = serde_json::from_str::<Value>(k) {
            list.retain(|it| !km.iter().all(|(kk, kv)| it.get(kk) == Some(kv)));
        }
    } else if let Some(v) = item.strip_prefix("v:") {
        if let Ok(want) = serde_json::from_str::<Value>(v) {
            list.retain(|it| *it != want);
        }
    }
}

fn value_at_mut<'a>(obj: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = obj;
    for p in path {
        if let Some(f) = p.strip_prefix("f:") {
            cur = cur.get_mut(f)?;
        } else if let Some(k) = p.strip_prefix("k:") {
            let key: Value = serde_json::from_str(k).ok()?;
            let km = key.as_object()?.clone();
            cur = cur
                .as_array_mut()?
                .iter_mut()
                .find(|it| km.iter().all(|(kk, kv)| it.get(kk) == Some(kv)))?;
        } else if let Some(v) = p.strip_prefix("v:") {
            let want: Value = serde_json::from_str(v).ok()?;
            cur = cur.as_array_mut()?.iter_mut().find(|it| **it == want)?;
        } else {
            return None;
        }
    }
    Some(cur)
}

/// Merges an applied configuration into the live object.
fn merge(live: &Value, applied: &Value, shape: &Shape<'_>, path: &mut Vec<String>) -> Value {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) if !shape.atomic_map(path) => {
            let mut out = l.clone();
            for (k, av) in a {
                path.push(k.clone());
                let merged = match (l.get(k), av) {
                    (Some(lv), Value::Object(_)) => merge(lv, av, shape, path),
                    (Some(Value::Array(li)), Value::Array(ai)) => merge_list(li, ai, shape, path),
                    _ => av.clone(),
                };
                path.pop();
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        _ => applied.clone(),
    }
}

fn merge_list(
    live: &[Value],
    applied: &[Value],
    shape: &Shape<'_>,
    path: &mut Vec<String>,
) -> Value {
    match shape.list(path) {
        ListStrategy::Atomic => Value::Array(applied.to_vec()),
        ListStrategy::Set => {
            let mut out = live.to_vec();
            for a in applied {
                if !out.contains(a) {
                    out.push(a.clone());
                }
            }
            Value::Array(out)
        }
        ListStrategy::Map(keys) => {
            let mut out = live.to_vec();
            for a in applied {
                let ka = key_string(a, &keys);
                match out.iter().position(|l| key_string(l, &keys) == ka) {
                    Some(i) => out[i] = merge(&out[i], a, shape, path),
                    None => out.push(a.clone()),
                }
            }
            Value::Array(out)
        }
    }
}

fn managers(obj: &Value) -> Vec<Value> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn entry_set(e: &Value) -> Map<String, Value> {
    e.get("fieldsV1")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

fn same_entry(e: &Value, manager: &str, op: &str, sub: Option<&str>) -> bool {
    e.get("manager").and_then(Value::as_str) == Some(manager)
        && e.get("operation").and_then(Value::as_str) == Some(op)
        && e.get("subresource").and_then(Value::as_str) == sub
}

fn new_entry(
    manager: &str,
    op: &str,
    api_version: &str,
    now: &str,
    set: Map<String, Value>,
    sub: Option<&str>,
) -> Value {
    let mut e = json!({
        "manager": manager, "operation": op, "apiVersion": api_version, "time": now,
        "fieldsType": "FieldsV1", "fieldsV1": set,
    });
    if let Some(s) = sub {
        e["subresource"] = Value::String(s.into());
    }
    e
}

/// How conflict messages name a manager: `"m"` for appliers, `"m" using v1` for updaters,
/// plus the subresource.
fn describe_manager(e: &Value) -> String {
    let mut s = format!(
        "{:?}",
        e.get("manager").and_then(Value::as_str).unwrap_or("")
    );
    if let Some(sr) = e
        .get("subresource")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        s.push_str(&format!(" with subresource {sr:?}"));
    }
    if e.get("operation").and_then(Value::as_str) == Some("Update") {
        s.push_str(&format!(
            " using {}",
            e.get("apiVersion").and_then(Value::as_str).unwrap_or("")
        ));
    }
    s
}

fn part_sub(part: Part) -> Option<&'static str> {
    (part == Part::Status).then_some("status")
}

fn pretty_path(p: &[String]) -> String {
    let mut s = String::new();
    for x in p {
        if x == "." {
            continue;
        }
        if let Some(f) = x.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = x.strip_prefix("k:") {
            s.push('[');
            s.push_str(&k.replace(['{', '}'], "").replace(':', "="));
            s.push(']');
        } else if let Some(v) = x.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        }
    }
    s
}

/// Context of one apply request.
pub struct ApplyRequest<'a> {
    /// The field manager.
    pub manager: &'a str,
    /// `force=true`.
    pub force: bool,
    /// The apiVersion the request was made in.
    pub api_version: &'a str,
    /// Which part the request covers.
    pub part: Part,
    /// Timestamp for the managedFields entry.
    pub now: &'a str,
}

/// Applies a configuration to a live object (`live` is an empty object with metadata when
/// the object does not exist yet). Returns the merged object with updated managedFields.
///
/// # Errors
/// 409 Conflict listing the conflicting fields and their managers.
pub fn apply(
    live: &Value,
    config: &Value,
    shape: &Shape<'_>,
    req: &ApplyRequest<'_>,
    group: &str,
    resource: &str,
    name: &str,
) -> Result<Value, ApiError> {
    let sub = part_sub(req.part);
    let applied = strip(config, req.part);
    let applied_set = field_set(&applied, shape, &mut Vec::new());
    let mut entries = managers(live);
    let live_stripped = strip(live, req.part);

    // Conflicts with other managers.
    let mut conflicts: Vec<(String, String)> = Vec::new();
    for e in &entries {
        if same_entry(e, req.manager, "Apply", sub) {
            continue;
        }
        let set = entry_set(e);
        let mgr = describe_manager(e);
        for leaf in leaves(&applied_set) {
            if leaf.last().map(String::as_str) == Some(".") {
                continue;
            }
            if set_contains(&set, &leaf)
                && value_at(&live_stripped, &leaf) != value_at(&applied, &leaf)
            {
                conflicts.push((mgr.clone(), pretty_path(&leaf)));
            }
        }
    }
    if !conflicts.is_empty() && !req.force {
        let n = conflicts.len();
        let body = if n == 1 {
            format!("conflict with {}: {}", conflicts[0].0, conflicts[0].1)
        } else {
            let mut by: std::collections::BTreeMap<&str, Vec<&str>> =
                std::collections::BTreeMap::new();
            for (m, f) in &conflicts {
                by.entry(m.as_str()).or_default().push(f.as_str());
            }
            let mut lines = Vec::new();
            for (m, fs) in by {
                lines.push(format!("conflicts with {m}:"));
                for f in fs {
                    lines.push(format!("- {f}"));
                }
            }
            lines.join("\n")
        };
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(m, f)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {m}"), "field": f}))
            .collect();
        let mut err = ApiError::conflict(group, resource, name, "");
        err.message = format!(
            "Apply failed with {n} conflict{}: {body}",
            if n == 1 { "" } else { "s" }
        );
        if let Some(d) = err.details.as_mut() {
            d["causes"] = Value::Array(causes);
        }
        return Err(err);
    }

    // Merge.
    let mut merged = merge(live, &applied, shape, &mut Vec::new());

    // Forced fields leave their previous managers.
    for e in entries.iter_mut() {
        if same_entry(e, req.manager, "Apply", sub) {
            continue;
        }
        let mut set = entry_set(e);
        for leaf in leaves(&applied_set) {
            let differs = value_at(&live_stripped, &leaf) != value_at(&applied, &leaf);
            if leaf.last().map(String::as_str) != Some(".") && differs && set_contains(&set, &leaf)
            {
                set_remove(&mut set, &leaf);
            }
        }
        e["fieldsV1"] = Value::Object(set);
    }

    // Fields this manager no longer applies, owned by nobody else, are removed.
    let previous = entries
        .iter()
        .find(|e| same_entry(e, req.manager, "Apply", sub))
        .map(entry_set)
        .unwrap_or_default();
    let others: Vec<Map<String, Value>> = entries
        .iter()
        .filter(|e| !same_entry(e, req.manager, "Apply", sub))
        .map(entry_set)
        .collect();
    let mut dropped: Vec<Vec<String>> = leaves(&previous)
        .into_iter()
        .filter(|l| !set_contains(&applied_set, l))
        .filter(|l| {
            let scope: &[String] = if l.last().map(String::as_str) == Some(".") {
                &l[..l.len() - 1]
            } else {
                l
            };
            !others.iter().any(|o| set_has_under(o, scope))
        })
        .collect();
    // Remove deeper paths first so list items are matched before their parents go.
    dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in &dropped {
        remove_at(&mut merged, p);
    }

    // Ownership. An unchanged apply keeps its entry (and time): re-applying is a no-op.
    let unchanged = entries
        .iter()
        .find(|e| same_entry(e, req.manager, "Apply", sub))
        .filter(|e| {
            entry_set(e) == applied_set
                && e.get("apiVersion").and_then(Value::as_str) == Some(req.api_version)
        });
    let entry = match unchanged {
        Some(e) => e.clone(),
        None => new_entry(
            req.manager,
            "Apply",
            req.api_version,
            req.now,
            applied_set,
            sub,
        ),
    };
    let pos = entries
        .iter()
        .position(|e| same_entry(e, req.manager, "Apply", sub));
    entries.retain(|e| !same_entry(e, req.manager, "Apply", sub));
    entries.retain(|e| !entry_set(e).is_empty());
    match pos {
        Some(p) if p <= entries.len() => entries.insert(p, entry),
        _ => entries.push(entry),
    }
    if let Some(m) = merged.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("managedFields".into(), Value::Array(entries));
    }
    Ok(merged)
}

/// Records a non-apply write by `manager` in the new object's managedFields.
pub fn track_update(
    old: Option<&Value>,
    new: &mut Value,
    shape: &Shape<'_>,
    manager: &str,
    api_version: &str,
    part: Part,
    now: &str,
) {
    let sub = part_sub(part);
    // A request that set managedFields itself keeps them (after the reset rule: `[{}]`
    // clears them).
    let requested = new.pointer("/metadata/managedFields").cloned();
    if let Some(Value::Array(a)) = &requested {
        if a.len() == 1 && a[0].as_object().is_some_and(Map::is_empty) {
            if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("managedFields");
            }
            return;
        }
    }
    let old_entries = old.map(managers).unwrap_or_default();
    if let (Some(Value::Array(req)), Some(_)) = (&requested, old) {
        if *req != old_entries {
            return;
        }
    }
    let old_stripped = old.map(|o| strip(o, part)).unwrap_or(Value::Null);
    let new_stripped = strip(new, part);
    let old_set = field_set(&old_stripped, shape, &mut Vec::new());
    let new_set = field_set(&new_stripped, shape, &mut Vec::new());
    let changed: Vec<Vec<String>> = leaves(&new_set)
        .into_iter()
        .filter(|l| {
            value_at(&new_stripped, l) != value_at(&old_stripped, l) || !set_contains(&old_set, l)
        })
        .collect();
    let removed: Vec<Vec<String>> = leaves(&old_set)
        .into_iter()
        .filter(|l| !set_contains(&new_set, l))
        .collect();
    let mut entries = old_entries;
    for e in entries.iter_mut() {
        let mut set = entry_set(e);
        for l in changed.iter().chain(removed.iter()) {
            if set_contains(&set, l) {
                set_remove(&mut set, l);
            }
        }
        e["fieldsV1"] = Value::Object(set);
    }
    let mut mine = entries
        .iter()
        .find(|e| same_entry(e, manager, "Update", sub))
        .map(entry_set)
        .unwrap_or_default();
    for l in &changed {
        set_insert(&mut mine, l);
    }
    entries.retain(|e| !same_entry(e, manager, "Update", sub));
    entries.retain(|e| !entry_set(e).is_empty());
    if !mine.is_empty() {
        entries.push(new_entry(manager, "Update", api_version, now, mine, sub));
    } else if changed.is_empty() {
        // Nothing changed for this manager: keep its entry time as it was.
        if let Some(old_mine) = old
            .map(managers)
            .unwrap_or_default()
            .into_iter()
            .find(|e| same_entry(e, manager, "Update", sub))
        {
            if !entry_set(&old_mine).is_empty() {
                entries.push(old_mine);
            }
        }
    }
    if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
        if entries.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(entries));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(m: &'a str, force: bool) -> ApplyRequest<'a> {
        ApplyRequest {
            manager: m,
            force,
            api_version: "v1",
            part: Part::All,
            now: "2024-01-01T00:00:00Z",
        }
    }

    #[test]
    fn apply_conflicts_and_force() {
        let live = json!({"metadata": {"name": "c"}});
        let a = apply(&live, &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"x": "1"}}),
            &Shape::Builtin, &req("one", false), "", "configmaps", "c").unwrap();
        assert_eq!(a["data"]["x"], "1");
        let err = apply(
            &a,
            &json!({"metadata": {"name": "c"}, "data": {"x": "2"}}),
            &Shape::Builtin,
            &req("two", false),
            "",
            "configmaps",
            "c",
        )
        .unwrap_err();
        assert_eq!(err.code, 409);
        assert!(
            err.message.contains("conflict with \"one\": .data.x"),
            "{}",
            err.message
        );
        // Same value: shared ownership, no conflict.
        let shared = apply(
            &a,
            &json!({"metadata": {"name": "c"}, "data": {"x": "1"}}),
            &Shape::Builtin,
            &req("two", false),
            "",
            "configmaps",
            "c",
        )
        .unwrap();
        assert_eq!(
            shared["metadata"]["managedFields"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        let forced = apply(
            &a,
            &json!({"metadata": {"name": "c"}, "data": {"x": "2"}}),
            &Shape::Builtin,
            &req("two", true),
            "",
            "configmaps",
            "c",
        )
        .unwrap();
        assert_eq!(forced["data"]["x"], "2");
    }

    #[test]
    fn apply_removes_fields_no_longer_applied() {
        let live = json!({"metadata": {"name": "c"}});
        let a = apply(
            &live,
            &json!({"metadata": {"name": "c", "labels": {"a": "1", "b": "2"}}}),
            &Shape::Builtin,
            &req("m", false),
            "",
            "configmaps",
            "c",
        )
        .unwrap();
        let b = apply(
            &a,
            &json!({"metadata": {"name": "c", "labels": {"a": "1"}}}),
            &Shape::Builtin,
            &req("m", false),
            "",
            "configmaps",
            "c",
        )
        .unwrap();
        assert!(b["metadata"]["labels"].get("b").is_none());
        assert_eq!(b["metadata"]["labels"]["a"], "1");
    }

    #[test]
    fn apply_merges_containers_by_name() {
        let live = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "x"}]}});
        let r = apply(
            &live,
            &json!({"spec": {"containers": [{"name": "b", "image": "y"}]}}),
            &Shape::Builtin,
            &req("m", false),
            "",
            "pods",
            "p",
        )
        .unwrap();
        assert_eq!(r["spec"]["containers"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn update_tracking_moves_ownership() {
        let mut new = json!({"metadata": {"name": "c"}, "data": {"x": "1"}});
        track_update(
            None,
            &mut new,
            &Shape::Builtin,
            "creator",
            "v1",
            Part::All,
            "t",
        );
        let mut upd = new.clone();
        upd["data"]["y"] = json!("2");
        track_update(
            Some(&new),
            &mut upd,
            &Shape::Builtin,
            "editor",
            "v1",
            Part::All,
            "t",
        );
        let mf = upd["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(mf.len(), 2);
        assert_eq!(mf[1]["manager"], "editor");
        assert!(mf[1]["fieldsV1"]["f:data"].get("f:y").is_some());
    }
}
