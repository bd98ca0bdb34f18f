//! The object store: every object of every kind, one global resourceVersion counter, and
//! the change history that watches resume from.
//!
//! Invariants:
//! - Each write (create, update, delete) takes the next resourceVersion, stamped into the
//!   stored object's `metadata.resourceVersion` (for deletes, into the object carried by
//!   the DELETED change).
//! - The history keeps the last `history_limit` changes in resourceVersion order; a watch
//!   or a consistent list at a version older than the oldest kept change is answered with
//!   410 Expired, as the real server does after etcd compaction.
//! - Changes are broadcast while the store lock is held, so a subscriber that replays the
//!   history and subscribes under the same lock sees every change exactly once.

use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::broadcast;

/// `(group, resource)`: the storage identity of a kind (shared by all its versions).
pub type GroupResource = (String, String);

/// `(namespace, name)`; namespace is empty for cluster-scoped objects.
pub type ObjectKey = (String, String);

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Created.
    Added,
    /// Updated (including a deletion that only set `deletionTimestamp`).
    Modified,
    /// Removed from the store.
    Deleted,
}

/// One recorded write.
#[derive(Debug)]
pub struct Change {
    /// The resourceVersion this write produced.
    pub rv: u64,
    /// Storage identity of the object's kind.
    pub gr: GroupResource,
    /// Namespace ("" for cluster-scoped).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// What happened.
    pub kind: ChangeKind,
    /// The object after the write (for Deleted: its last state, stamped with `rv`).
    pub object: Arc<Value>,
    /// The object before the write (None for Added).
    pub prev: Option<Arc<Value>>,
}

/// The store. Not synchronised itself: the cluster keeps it behind its lock.
pub struct Store {
    objects: HashMap<GroupResource, BTreeMap<ObjectKey, Arc<Value>>>,
    rv: u64,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    /// Changes at or below this version are no longer in the history.
    compacted: u64,
    tx: broadcast::Sender<Arc<Change>>,
}

/// Sets `metadata.resourceVersion`.
pub fn stamp(obj: &mut Value, rv: u64) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

impl Store {
    /// An empty store keeping `history_limit` changes for watches.
    pub fn new(history_limit: usize) -> Self {
        let (tx, _) = broadcast::channel(16384);
        Store {
            objects: HashMap::new(),
            rv: 1,
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted: 1,
            tx,
        }
    }

    /// The current (latest) resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    /// The oldest resourceVersion a watch may resume from.
    pub fn compacted_rv(&self) -> u64 {
        self.compacted
    }

    /// Drops all history: watches and continue tokens from before now get 410.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    /// One object.
    pub fn get(&self, gr: &GroupResource, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.objects
            .get(gr)?
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// All objects of a kind (in one namespace, or all when `ns` is None), in key order.
    pub fn list(&self, gr: &GroupResource, ns: Option<&str>) -> Vec<Arc<Value>> {
        let Some(m) = self.objects.get(gr) else {
            return Vec::new();
        };
        match ns {
            None => m.values().cloned().collect(),
            Some(ns) => m
                .range((ns.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, v)| v.clone())
                .collect(),
        }
    }

    /// Every kind that has objects.
    pub fn kinds(&self) -> Vec<GroupResource> {
        self.objects
            .iter()
            .filter(|(_, m)| !m.is_empty())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The objects of a kind as they were at `rv` (for paged and Exact lists).
    ///
    /// # Errors
    /// `Err(oldest)` when `rv` is older than the kept history.
    pub fn list_at(
        &self,
        gr: &GroupResource,
        ns: Option<&str>,
        rv: u64,
    ) -> Result<Vec<Arc<Value>>, u64> {
        if rv >= self.rv {
            return Ok(self.list(gr, ns));
        }
        if rv < self.compacted {
            return Err(self.compacted);
        }
        let mut map: BTreeMap<ObjectKey, Arc<Value>> =
            self.objects.get(gr).cloned().unwrap_or_default();
        for c in self.history.iter().rev() {
            if c.rv <= rv {
                break;
            }
            if &c.gr != gr {
                continue;
            }
            let key = (c.namespace.clone(), c.name.clone());
            match &c.prev {
                None => {
                    map.remove(&key);
                }
                Some(p) => {
                    map.insert(key, p.clone());
                }
            }
        }
        Ok(map
            .into_iter()
            .filter(|((n, _), _)| ns.is_none_or(|want| want == n))
            .map(|(_, v)| v)
            .collect())
    }

    fn record(&mut self, change: Change) -> Arc<Change> {
        let change = Arc::new(change);
        self.history.push_back(change.clone());
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
        // No receivers is fine.
        let _ = self.tx.send(change.clone());
        change
    }

    /// Stores a new or changed object, stamping the next resourceVersion into it.
    pub fn put(&mut self, gr: &GroupResource, ns: &str, name: &str, mut obj: Value) -> Arc<Value> {
        self.rv += 1;
        let rv = self.rv;
        stamp(&mut obj, rv);
        let obj = Arc::new(obj);
        let prev = self
            .objects
            .entry(gr.clone())
            .or_default()
            .insert((ns.to_string(), name.to_string()), obj.clone());
        let kind = if prev.is_some() {
            ChangeKind::Modified
        } else {
            ChangeKind::Added
        };
        self.record(Change {
            rv,
            gr: gr.clone(),
            namespace: ns.to_string(),
            name: name.to_string(),
            kind,
            object: obj.clone(),
            prev,
        });
        obj
    }

    /// Removes an object; returns its last state stamped with the deletion's version.
    pub fn remove(&mut self, gr: &GroupResource, ns: &str, name: &str) -> Option<Arc<Value>> {
        let prev = self
            .objects
            .get_mut(gr)?
            .remove(&(ns.to_string(), name.to_string()))?;
        self.rv += 1;
        let rv = self.rv;
        let mut last = (*prev).clone();
        stamp(&mut last, rv);
        let last = Arc::new(last);
        self.record(Change {
            rv,
            gr: gr.clone(),
            namespace: ns.to_string(),
            name: name.to_string(),
            kind: ChangeKind::Deleted,
            object: last.clone(),
            prev: Some(prev),
        });
        Some(last)
    }

    /// The kept changes after `rv` (all kinds), and a receiver for later ones.
    ///
    /// # Errors
    /// `Err(oldest)` when `rv` is older than the kept history.
    #[allow(clippy::type_complexity)]
    pub fn subscribe_from(
        &self,
        rv: u64,
    ) -> Result<(Vec<Arc<Change>>, broadcast::Receiver<Arc<Change>>), u64> {
        if rv < self.compacted {
            return Err(self.compacted);
        }
        let past = self.history.iter().filter(|c| c.rv > rv).cloned().collect();
        Ok((past, self.tx.subscribe()))
    }

    /// A receiver for changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gr() -> GroupResource {
        (String::new(), "configmaps".into())
    }

    #[test]
    fn list_at_rewinds_changes() {
        let mut s = Store::new(100);
        s.put(
            &gr(),
            "a",
            "x",
            json!({"metadata": {"name": "x"}, "data": {"v": "1"}}),
        );
        let rv1 = s.current_rv();
        s.put(
            &gr(),
            "a",
            "x",
            json!({"metadata": {"name": "x"}, "data": {"v": "2"}}),
        );
        s.put(&gr(), "a", "y", json!({"metadata": {"name": "y"}}));
        s.remove(&gr(), "a", "x");
        let then = s.list_at(&gr(), Some("a"), rv1).unwrap();
        assert_eq!(then.len(), 1);
        assert_eq!(then[0]["data"]["v"], "1");
        assert_eq!(s.list(&gr(), None).len(), 1);
    }

    #[test]
    fn history_limit_compacts() {
        let mut s = Store::new(2);
        for i in 0..5 {
            s.put(&gr(), "", &format!("o{i}"), json!({"metadata": {}}));
        }
        assert!(s.subscribe_from(2).is_err());
        let (past, _) = s.subscribe_from(s.current_rv() - 1).unwrap();
        assert_eq!(past.len(), 1);
    }
}
