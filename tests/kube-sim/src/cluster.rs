//! The cluster: the in-process API every request goes through (REST handlers, the
//! background controllers, and the runner alike).
//!
//! [`Cluster`] offers create/get/list/update/patch/delete/watch with the real server's
//! semantics: decoding (unknown fields dropped or refused per `fieldValidation`), defaults,
//! validation, admission (namespaces, service accounts, RBAC escalation), resourceVersion
//! preconditions, the status subresource split, generation, finalizers and graceful
//! deletion, managedFields, dry runs. Everything runs under one lock, so each call is
//! atomic; watches are fed from the store's change broadcast.

use crate::apply::{self, ApplyRequest, Part, Shape};
use crate::auth::{self, UserInfo};
use crate::crd;
use crate::defaults;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::patch;
use crate::resource::{Registry, ResourceType};
use crate::selector::{field_value, FieldSelector, LabelSelector};
use crate::store::{Change, ChangeKind, GroupResource, Store};
use crate::validation::{self, builtin, schema};
use base64::Engine;
use serde_json::{json, Map, Value};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{broadcast, Notify};

/// How unknown and duplicate fields are treated (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Drop silently.
    Ignore,
    /// Drop and warn (the server default).
    #[default]
    Warn,
    /// Refuse the request.
    Strict,
}

/// Options of a write.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Who is writing.
    pub user: UserInfo,
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `fieldManager`.
    pub field_manager: Option<String>,
    /// `fieldValidation`.
    pub field_validation: FieldValidation,
    /// `force` (server-side apply).
    pub force: bool,
}

impl WriteOptions {
    /// Options for a write by `user` with everything else default.
    pub fn as_user(user: UserInfo) -> Self {
        WriteOptions {
            user,
            ..Default::default()
        }
    }
}

/// Result of a write.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The object as stored (or as it would be, for dry runs).
    pub object: Value,
    /// `Warning` headers to send.
    pub warnings: Vec<String>,
    /// Whether the write created the object (201 instead of 200).
    pub created: bool,
}

/// A patch body by type.
#[derive(Debug, Clone)]
pub enum Patch {
    /// `application/merge-patch+json`.
    Merge(Value),
    /// `application/json-patch+json`.
    Json(Value),
    /// `application/strategic-merge-patch+json`.
    Strategic(Value),
    /// `application/apply-patch+yaml` (already parsed).
    Apply(Value),
}

/// Deletion propagation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Dependents are removed in the background after the owner is gone.
    Background,
    /// The owner waits (finalizer `foregroundDeletion`) until blocking dependents are gone.
    Foreground,
    /// Dependents lose their owner reference (finalizer `orphan`).
    Orphan,
}

/// Options of a delete.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// Who is deleting.
    pub user: UserInfo,
    /// `propagationPolicy` (None: the kind's default).
    pub propagation: Option<Propagation>,
    /// `gracePeriodSeconds`.
    pub grace_period: Option<i64>,
    /// `preconditions.uid`.
    pub precondition_uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub precondition_rv: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

/// Result of a delete.
#[derive(Debug, Clone)]
pub struct DeleteOutcome {
    /// The object (its last state, or its terminating state).
    pub object: Value,
    /// Whether it is gone already.
    pub deleted: bool,
    /// Warnings.
    pub warnings: Vec<String>,
}

/// Options of a list or watch.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector` (as text; parsed against the kind's field labels).
    pub fields: String,
    /// `limit`.
    pub limit: Option<usize>,
    /// `continue`.
    pub continue_token: Option<String>,
    /// `resourceVersion`.
    pub resource_version: Option<String>,
    /// `resourceVersionMatch`.
    pub resource_version_match: Option<String>,
    /// `allowWatchBookmarks`.
    pub bookmarks: bool,
    /// `sendInitialEvents`.
    pub send_initial_events: Option<bool>,
    /// `timeoutSeconds`.
    pub timeout: Option<Duration>,
}

/// Where a request points: a resource in a namespace (or cluster-wide).
#[derive(Debug, Clone)]
pub struct Target {
    /// The resource type.
    pub rt: Arc<ResourceType>,
    /// Namespace, for namespaced kinds (None lists/watches across namespaces).
    pub namespace: Option<String>,
}

/// Settings of a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Where pod logs and volumes live.
    pub data_dir: PathBuf,
    /// Changes kept for watches.
    pub watch_history: usize,
    /// The CA certificate (PEM) put into `kube-root-ca.crt` ConfigMaps.
    pub ca_pem: String,
    /// How often watches with bookmarks get one.
    pub bookmark_interval: Duration,
}

/// Mutable state behind the lock.
pub struct State {
    /// Objects and history.
    pub store: Store,
    /// Served resources.
    pub registry: Registry,
    /// Bearer tokens.
    pub tokens: auth::Tokens,
    next_ip: u32,
}

struct Shared {
    state: Mutex<State>,
    opts: ClusterOptions,
    notify: Notify,
}

/// The in-process API server core. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
}

/// The current time in the API's second-precision RFC 3339 form.
pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The current time with microseconds (MicroTime fields).
pub fn now_micro() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// A random v4 UUID.
pub fn new_uid() -> String {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).expect("system randomness");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A random suffix as generateName uses (5 characters from the server's alphabet).
pub fn name_suffix(n: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut b = vec![0u8; n];
    getrandom::getrandom(&mut b).expect("system randomness");
    b.iter()
        .map(|x| ALPHABET[*x as usize % ALPHABET.len()] as char)
        .collect()
}

fn meta(obj: &Value, f: &str) -> String {
    obj.get("metadata")
        .and_then(|m| m.get(f))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj.get_mut("metadata")
        .and_then(Value::as_object_mut)
        .expect("metadata object")
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn parse_rv(s: &str) -> ApiResult<u64> {
    s.parse::<u64>()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s:?}")))
}

/// The kinds a real API server returns as the deleted object (others get a Status).
pub fn returns_deleted_object(rt: &ResourceType) -> bool {
    rt.is_custom()
        || matches!(
            (rt.group.as_str(), rt.plural.as_str()),
            ("", "pods")
                | ("", "serviceaccounts")
                | ("", "services")
                | ("storage.k8s.io", "storageclasses")
        )
}

fn status_name(rt: &ResourceType) -> String {
    rt.plural.clone()
}

/// Round-trips a built-in object through its Go-mirror type: unknown fields vanish, wrong
/// types are refused.
fn roundtrip<T: serde::de::DeserializeOwned + serde::Serialize>(
    v: &Value,
) -> Result<Value, String> {
    let t: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(t).map_err(|e| e.to_string())
}

fn decode_builtin(group: &str, kind: &str, v: &Value) -> Result<Value, String> {
    use k8s_openapi::api::{
        apps::v1 as apps, batch::v1 as batch, coordination::v1 as coord, core::v1 as core,
        events::v1 as ev, policy::v1 as policy, rbac::v1 as rbac, scheduling::v1 as sched,
        storage::v1 as storage,
    };
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
    match (group, kind) {
        ("", "Namespace") => roundtrip::<core::Namespace>(v),
        ("", "Secret") => roundtrip::<core::Secret>(v),
        ("", "ConfigMap") => roundtrip::<core::ConfigMap>(v),
        ("", "ServiceAccount") => roundtrip::<core::ServiceAccount>(v),
        ("", "Service") => roundtrip::<core::Service>(v),
        ("", "Endpoints") => roundtrip::<core::Endpoints>(v),
        ("", "Pod") => roundtrip::<core::Pod>(v),
        ("", "PersistentVolumeClaim") => roundtrip::<core::PersistentVolumeClaim>(v),
        ("", "PersistentVolume") => roundtrip::<core::PersistentVolume>(v),
        ("", "Event") => roundtrip::<core::Event>(v),
        ("", "Node") => roundtrip::<core::Node>(v),
        ("", "ResourceQuota") => roundtrip::<core::ResourceQuota>(v),
        ("", "LimitRange") => roundtrip::<core::LimitRange>(v),
        ("batch", "Job") => roundtrip::<batch::Job>(v),
        ("batch", "CronJob") => roundtrip::<batch::CronJob>(v),
        ("apps", "StatefulSet") => roundtrip::<apps::StatefulSet>(v),
        ("apps", "Deployment") => roundtrip::<apps::Deployment>(v),
        ("apps", "ReplicaSet") => roundtrip::<apps::ReplicaSet>(v),
        ("apps", "DaemonSet") => roundtrip::<apps::DaemonSet>(v),
        ("apps", "ControllerRevision") => roundtrip::<apps::ControllerRevision>(v),
        ("rbac.authorization.k8s.io", "Role") => roundtrip::<rbac::Role>(v),
        ("rbac.authorization.k8s.io", "RoleBinding") => roundtrip::<rbac::RoleBinding>(v),
        ("rbac.authorization.k8s.io", "ClusterRole") => roundtrip::<rbac::ClusterRole>(v),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            roundtrip::<rbac::ClusterRoleBinding>(v)
        }
        ("coordination.k8s.io", "Lease") => roundtrip::<coord::Lease>(v),
        ("storage.k8s.io", "StorageClass") => roundtrip::<storage::StorageClass>(v),
        ("storage.k8s.io", "CSIDriver") => roundtrip::<storage::CSIDriver>(v),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            roundtrip::<apiext::CustomResourceDefinition>(v)
        }
        ("events.k8s.io", "Event") => roundtrip::<ev::Event>(v),
        ("policy", "PodDisruptionBudget") => roundtrip::<policy::PodDisruptionBudget>(v),
        ("scheduling.k8s.io", "PriorityClass") => roundtrip::<sched::PriorityClass>(v),
        _ => Ok(v.clone()),
    }
}

/// Paths present (non-null) in `input` but absent from `output`: the fields the decoder
/// did not know.
fn dropped_paths(input: &Value, output: &Value, path: &str, out: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(i), Value::Object(o)) => {
            for (k, v) in i {
                if v.is_null() {
                    continue;
                }
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match o.get(k) {
                    None => out.push(p),
                    Some(ov) => dropped_paths(v, ov, &p, out),
                }
            }
        }
        (Value::Array(i), Value::Array(o)) => {
            for (idx, (a, b)) in i.iter().zip(o.iter()).enumerate() {
                dropped_paths(a, b, &format!("{path}[{idx}]"), out);
            }
        }
        _ => {}
    }
}

/// Core/v1 Event <- events.k8s.io/v1 Event.
fn event_from_new(v: &Value) -> Value {
    let mut out = json!({"apiVersion": "v1", "kind": "Event"});
    let map = [
        ("metadata", "metadata"),
        ("regarding", "involvedObject"),
        ("related", "related"),
        ("note", "message"),
        ("reason", "reason"),
        ("type", "type"),
        ("action", "action"),
        ("reportingController", "reportingComponent"),
        ("reportingInstance", "reportingInstance"),
        ("eventTime", "eventTime"),
        ("series", "series"),
        ("deprecatedSource", "source"),
        ("deprecatedFirstTimestamp", "firstTimestamp"),
        ("deprecatedLastTimestamp", "lastTimestamp"),
        ("deprecatedCount", "count"),
    ];
    for (from, to) in map {
        if let Some(x) = v.get(from) {
            out[to] = x.clone();
        }
    }
    if out.get("involvedObject").is_none() {
        out["involvedObject"] = json!({});
    }
    out
}

/// events.k8s.io/v1 Event <- core/v1 Event.
fn event_to_new(v: &Value) -> Value {
    let mut out = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event"});
    let map = [
        ("metadata", "metadata"),
        ("involvedObject", "regarding"),
        ("related", "related"),
        ("message", "note"),
        ("reason", "reason"),
        ("type", "type"),
        ("action", "action"),
        ("reportingComponent", "reportingController"),
        ("reportingInstance", "reportingInstance"),
        ("eventTime", "eventTime"),
        ("series", "series"),
        ("source", "deprecatedSource"),
        ("firstTimestamp", "deprecatedFirstTimestamp"),
        ("lastTimestamp", "deprecatedLastTimestamp"),
        ("count", "deprecatedCount"),
    ];
    for (from, to) in map {
        if let Some(x) = v.get(from) {
            if !x.is_null() {
                out[to] = x.clone();
            }
        }
    }
    out
}

/// The stored form of an object written through `rt`.
fn to_storage(rt: &ResourceType, v: Value) -> Value {
    if rt.group == "events.k8s.io" {
        return event_from_new(&v);
    }
    let mut v = v;
    if let Some(c) = &rt.crd {
        let av = format!("{}/{}", rt.group, c.storage_version);
        v["apiVersion"] = Value::String(av);
    }
    v
}

/// An object as served through `rt` (version and group conversion).
pub fn present(rt: &ResourceType, stored: &Value) -> Value {
    if rt.group == "events.k8s.io" {
        return event_to_new(stored);
    }
    let mut v = stored.clone();
    if rt.crd.is_some() {
        v["apiVersion"] = Value::String(rt.api_version());
    }
    v
}

/// The value of a field label on a stored object, for selectors.
pub fn field_label(rt: &ResourceType, stored: &Value, label: &str) -> String {
    match label {
        "metadata.name" => meta(stored, "name"),
        "metadata.namespace" => meta(stored, "namespace"),
        l => {
            if rt.group == "events.k8s.io" {
                let presented = event_to_new(stored);
                return field_value(&presented, l);
            }
            field_value(stored, l)
        }
    }
}

fn matches(rt: &ResourceType, obj: &Value, labels: &LabelSelector, fields: &FieldSelector) -> bool {
    labels.matches(obj) && fields.matches(|l| field_label(rt, obj, l))
}

/// One watch event.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    /// `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` or `ERROR`.
    pub kind: &'static str,
    /// The object (as served), a bookmark, or a Status.
    pub object: Value,
}

/// A running watch.
pub struct WatchStream {
    pending: VecDeque<WatchEvent>,
    rx: Option<broadcast::Receiver<Arc<Change>>>,
    target: Target,
    labels: LabelSelector,
    fields: FieldSelector,
    bookmarks: bool,
    bookmark_interval: Duration,
    last_rv: u64,
    deadline: tokio::time::Instant,
    next_bookmark: tokio::time::Instant,
}

impl WatchStream {
    fn bookmark(&self, rv: u64, end_of_initial: bool) -> WatchEvent {
        let mut m = json!({"resourceVersion": rv.to_string()});
        if end_of_initial {
            m["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        WatchEvent {
            kind: "BOOKMARK",
            object: json!({"kind": self.target.rt.kind, "apiVersion": self.target.rt.api_version(), "metadata": m}),
        }
    }

    fn translate(&self, c: &Change) -> Option<WatchEvent> {
        if c.gr != self.target.rt.storage {
            return None;
        }
        if let Some(ns) = &self.target.namespace {
            if &c.namespace != ns {
                return None;
            }
        }
        let rt = &self.target.rt;
        let now_m = matches(rt, &c.object, &self.labels, &self.fields);
        let was_m = c
            .prev
            .as_ref()
            .is_some_and(|p| matches(rt, p, &self.labels, &self.fields));
        let kind = match c.kind {
            ChangeKind::Added => now_m.then_some("ADDED"),
            ChangeKind::Modified => match (was_m, now_m) {
                (true, true) => Some("MODIFIED"),
                (false, true) => Some("ADDED"),
                (true, false) => Some("DELETED"),
                (false, false) => None,
            },
            ChangeKind::Deleted => was_m.then_some("DELETED"),
        }?;
        Some(WatchEvent {
            kind,
            object: present(rt, &c.object),
        })
    }

    /// The next event; None when the watch ends (timeout, or the client fell too far
    /// behind and must re-watch from its last resourceVersion).
    pub async fn next(&mut self) -> Option<WatchEvent> {
        if let Some(e) = self.pending.pop_front() {
            return Some(e);
        }
        loop {
            let rx = self.rx.as_mut()?;
            let wake = if self.bookmarks {
                self.next_bookmark.min(self.deadline)
            } else {
                self.deadline
            };
            tokio::select! {
                r = rx.recv() => match r {
                    Ok(c) => {
                        if c.rv <= self.last_rv {
                            continue;
                        }
                        self.last_rv = c.rv;
                        if let Some(e) = self.translate(&c) {
                            return Some(e);
                        }
                    }
                    Err(_) => return None,
                },
                _ = tokio::time::sleep_until(wake) => {
                    if tokio::time::Instant::now() >= self.deadline {
                        return None;
                    }
                    self.next_bookmark = tokio::time::Instant::now() + self.bookmark_interval;
                    let rv = self.last_rv;
                    return Some(self.bookmark(rv, false));
                }
            }
        }
    }
}

impl Cluster {
    /// A cluster with the built-in kinds and nothing stored (see `Cluster::bootstrap`).
    pub fn new(opts: ClusterOptions) -> Self {
        let state = State {
            store: Store::new(opts.watch_history),
            registry: Registry::builtin(),
            tokens: auth::Tokens::default(),
            next_ip: 10,
        };
        Cluster {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                opts,
                notify: Notify::new(),
            }),
        }
    }

    /// Locks the state (for the REST layer's lookups and the controllers).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cluster's settings.
    pub fn options(&self) -> &ClusterOptions {
        &self.shared.opts
    }

    /// Waits until something was written.
    pub async fn changed(&self) {
        self.shared.notify.notified().await
    }

    fn wake(&self) {
        self.shared.notify.notify_waiters();
    }

    /// Drops the watch history: later watches and continue tokens from before now get 410.
    pub fn compact(&self) {
        self.lock().store.compact();
    }

    /// Resolves a group/version/plural.
    ///
    /// # Errors
    /// 404 when the server does not serve it.
    pub fn resource(
        &self,
        group: &str,
        version: &str,
        plural: &str,
    ) -> ApiResult<Arc<ResourceType>> {
        self.lock()
            .registry
            .get(group, version, plural)
            .ok_or_else(ApiError::no_route)
    }

    /// A target for a namespaced (Some) or cluster-wide request.
    ///
    /// # Errors
    /// 404 when the resource is unknown.
    pub fn target(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        namespace: Option<&str>,
    ) -> ApiResult<Target> {
        let rt = self.resource(group, version, plural)?;
        let namespace = if rt.namespaced {
            namespace.map(str::to_string)
        } else {
            None
        };
        Ok(Target { rt, namespace })
    }

    fn ns_of(t: &Target) -> String {
        t.namespace.clone().unwrap_or_default()
    }

    // ----- reads -----

    /// Reads one object.
    ///
    /// # Errors
    /// 404 NotFound.
    pub fn get(&self, t: &Target, name: &str) -> ApiResult<Value> {
        let st = self.lock();
        let obj = st
            .store
            .get(&t.rt.storage, &Self::ns_of(t), name)
            .ok_or_else(|| ApiError::not_found(&t.rt.group, &t.rt.plural, name))?;
        Ok(present(&t.rt, &obj))
    }

    /// Lists objects.
    ///
    /// # Errors
    /// 400 on bad selectors or versions, 410 on expired continue tokens or versions,
    /// 504 when the requested version is ahead of the store.
    pub fn list(&self, t: &Target, o: &ListOptions) -> ApiResult<Value> {
        let fields = FieldSelector::parse(&o.fields, &t.rt.field_labels())?;
        let st = self.lock();
        let current = st.store.current_rv();
        let mut start_after: Option<(String, String)> = None;
        let mut at = current;
        if let Some(tok) = o.continue_token.as_deref().filter(|s| !s.is_empty()) {
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(tok.trim_end_matches('='))
                .or_else(|_| base64::engine::general_purpose::STANDARD.decode(tok))
                .map_err(|_| {
                    ApiError::bad_request("continue key is not valid: illegal base64 data")
                })?;
            let v: Value = serde_json::from_slice(&raw)
                .map_err(|_| ApiError::bad_request("continue key is not valid: invalid json"))?;
            at = v.get("rv").and_then(Value::as_u64).unwrap_or(current);
            let s = v.get("start").and_then(Value::as_str).unwrap_or("");
            let (ns, name) = s
                .trim_end_matches('\u{0}')
                .split_once('/')
                .unwrap_or(("", s));
            start_after = Some((ns.to_string(), name.trim_end_matches('\u{0}').to_string()));
        } else if let Some(rv) = o
            .resource_version
            .as_deref()
            .filter(|s| !s.is_empty() && *s != "0")
        {
            let want = parse_rv(rv)?;
            if want > current {
                return Err(ApiError::timeout(
                    format!("Too large resource version: {want}, current: {current}"),
                    1,
                ));
            }
            if o.resource_version_match.as_deref() == Some("Exact") {
                at = want;
            }
        }
        let items = st.store.list_at(&t.rt.storage, t.namespace.as_deref(), at).map_err(|_| {
            ApiError::expired(if o.continue_token.is_some() {
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.".to_string()
            } else {
                format!("too old resource version: {at} ({})", st.store.compacted_rv())
            })
        })?;
        drop(st);
        let mut selected: Vec<Value> = Vec::new();
        let mut cont = None;
        let mut remaining = 0usize;
        for obj in items {
            let key = (meta(&obj, "namespace"), meta(&obj, "name"));
            if let Some(sa) = &start_after {
                if &key <= sa {
                    continue;
                }
            }
            if !matches(&t.rt, &obj, &o.labels, &fields) {
                continue;
            }
            if let Some(limit) = o.limit.filter(|l| *l > 0) {
                if selected.len() >= limit {
                    remaining += 1;
                    if cont.is_none() {
                        let last = selected.last().map(|l: &Value| {
                            format!("{}/{}\u{0}", meta(l, "namespace"), meta(l, "name"))
                        });
                        let tokv = json!({"v": "meta.k8s.io/v1", "rv": at, "start": last.unwrap_or_default()});
                        cont = Some(
                            base64::engine::general_purpose::URL_SAFE.encode(tokv.to_string()),
                        );
                    }
                    continue;
                }
            }
            let mut item = present(&t.rt, &obj);
            if !t.rt.is_custom() {
                if let Some(m) = item.as_object_mut() {
                    m.remove("apiVersion");
                    m.remove("kind");
                }
            }
            selected.push(item);
        }
        let mut md = json!({"resourceVersion": at.to_string()});
        if let Some(c) = cont {
            md["continue"] = Value::String(c);
            if o.labels.is_empty() && fields.is_empty() {
                md["remainingItemCount"] = json!(remaining);
            }
        }
        Ok(
            json!({"apiVersion": t.rt.api_version(), "kind": t.rt.list_kind, "metadata": md, "items": selected}),
        )
    }

    /// Starts a watch.
    ///
    /// # Errors
    /// 400 on bad selectors, 422 on inconsistent streaming-list parameters.
    pub fn watch(&self, t: &Target, o: &ListOptions) -> ApiResult<WatchStream> {
        let fields = FieldSelector::parse(&o.fields, &t.rt.field_labels())?;
        let send_initial = o.send_initial_events == Some(true);
        if o.send_initial_events.is_some() {
            let mut errs = Vec::new();
            if o.resource_version_match.as_deref() != Some("NotOlderThan") {
                errs.push(FieldError::forbidden(
                    "resourceVersionMatch",
                    "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                ));
            }
            if send_initial && !o.bookmarks {
                errs.push(FieldError::forbidden(
                    "allowWatchBookmarks",
                    "sendInitialEvents requires allowWatchBookmarks to be set",
                ));
            }
            if !errs.is_empty() {
                return Err(ApiError::invalid("", "ListOptions", "", &errs)
                    .with_message_prefix("ListOptions.meta.k8s.io \"\" is invalid: "));
            }
        } else if o.resource_version_match.is_some() {
            return Err(ApiError::invalid(
                "",
                "ListOptions",
                "",
                &[FieldError::forbidden("resourceVersionMatch", "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided")],
            )
            .with_message_prefix("ListOptions.meta.k8s.io \"\" is invalid: "));
        }
        let st = self.lock();
        let current = st.store.current_rv();
        let rv_param = o.resource_version.clone().unwrap_or_default();
        let timeout = o.timeout.unwrap_or(Duration::from_secs(1800));
        let bookmark_interval = self.shared.opts.bookmark_interval;
        let mut ws = WatchStream {
            pending: VecDeque::new(),
            rx: None,
            target: t.clone(),
            labels: o.labels.clone(),
            fields,
            bookmarks: o.bookmarks,
            bookmark_interval,
            last_rv: current,
            deadline: tokio::time::Instant::now() + timeout,
            next_bookmark: tokio::time::Instant::now() + bookmark_interval,
        };
        let initial = send_initial || rv_param.is_empty() || rv_param == "0";
        if initial {
            for obj in st.store.list(&t.rt.storage, t.namespace.as_deref()) {
                if matches(&t.rt, &obj, &ws.labels, &ws.fields) {
                    ws.pending.push_back(WatchEvent {
                        kind: "ADDED",
                        object: present(&t.rt, &obj),
                    });
                }
            }
            if send_initial {
                let b = ws.bookmark(current, true);
                ws.pending.push_back(b);
            }
            ws.rx = Some(st.store.subscribe());
        } else {
            let from = parse_rv(&rv_param)?;
            match st.store.subscribe_from(from) {
                Err(oldest) => {
                    let err =
                        ApiError::expired(format!("too old resource version: {from} ({oldest})"));
                    ws.pending.push_back(WatchEvent {
                        kind: "ERROR",
                        object: err.to_status(),
                    });
                    return Ok(ws);
                }
                Ok((past, rx)) => {
                    for c in past {
                        if let Some(e) = ws.translate(&c) {
                            ws.pending.push_back(e);
                        }
                    }
                    ws.rx = Some(rx);
                }
            }
        }
        Ok(ws)
    }

    // ----- writes -----

    /// Creates an object.
    ///
    /// # Errors
    /// 400 (bad body), 403 (admission), 404 (namespace), 409 (exists), 422 (invalid).
    pub fn create(&self, t: &Target, obj: Value, o: &WriteOptions) -> ApiResult<Outcome> {
        let mut st = self.lock();
        let out = self.create_locked(&mut st, t, obj, o)?;
        drop(st);
        self.wake();
        Ok(out)
    }

    fn check_type(t: &Target, obj: &Value) -> ApiResult<()> {
        let av = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        if kind.is_empty() {
            return Err(ApiError::bad_request(format!(
                "Object 'Kind' is missing in '{}'",
                serde_json::to_string(obj).unwrap_or_default()
            )));
        }
        if av.is_empty() {
            return Err(ApiError::bad_request(format!(
                "Object 'apiVersion' is missing in '{}'",
                serde_json::to_string(obj).unwrap_or_default()
            )));
        }
        let want = t.rt.api_version();
        if kind != t.rt.kind || av != want {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want})"
            ))
            .with_kind_mismatch(kind, &t.rt.kind, av, &want));
        }
        Ok(())
    }

    /// Decodes an incoming object: type round trip or schema pruning, then defaults.
    fn decode(t: &Target, obj: Value, o: &WriteOptions) -> ApiResult<(Value, Vec<String>)> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request was not a JSON object",
            ));
        }
        Self::check_type(t, &obj)?;
        let rt = &t.rt;
        let mut unknown = Vec::new();
        let mut out = if let Some(c) = &rt.crd {
            let mut v = obj;
            schema::prune(&c.schema, &mut v, "", true, &mut unknown);
            v
        } else {
            let decoded = decode_builtin(&rt.group, &rt.kind, &obj).map_err(|e| {
                ApiError::bad_request(format!(
                    "{} in version \"{}\" cannot be handled as a {}: {e}",
                    rt.kind, rt.version, rt.kind
                ))
            })?;
            dropped_paths(&obj, &decoded, "", &mut unknown);
            decoded
        };
        let mut warnings = Vec::new();
        if !unknown.is_empty() {
            match o.field_validation {
                FieldValidation::Strict => {
                    let msg = unknown
                        .iter()
                        .map(|u| format!("unknown field \"{u}\""))
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(ApiError::bad_request(format!(
                        "strict decoding error: {msg}"
                    )));
                }
                FieldValidation::Warn => {
                    warnings.extend(unknown.iter().map(|u| format!("unknown field \"{u}\"")))
                }
                FieldValidation::Ignore => {}
            }
        }
        if let Some(c) = &rt.crd {
            schema::apply_defaults(&c.schema, &mut out);
        } else {
            defaults::apply(&rt.group, &rt.kind, &mut out);
        }
        Ok((out, warnings))
    }

    fn validate(st: &State, t: &Target, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let rt = &t.rt;
        let rule = if rt.is_custom() {
            validation::NameRule::Subdomain
        } else {
            validation::name_rule(&rt.group, &rt.kind)
        };
        let mut errs = validation::validate_meta(obj, rule, rt.namespaced);
        if let Some(o) = old {
            errs.extend(validation::validate_meta_update(obj, o));
        }
        if let Some(c) = &rt.crd {
            let mut body = obj.clone();
            if let Some(m) = body.as_object_mut() {
                m.remove("metadata");
            }
            let mut sch = c.schema.clone();
            if let Some(p) = sch.get_mut("properties").and_then(Value::as_object_mut) {
                p.remove("metadata");
            }
            schema::validate(&sch, &body, "", &mut errs);
            // Metadata name constraints from the schema.
            if let Some(ms) = c.schema.pointer("/properties/metadata/properties/name") {
                if let Some(n) = obj.pointer("/metadata/name") {
                    schema::validate(ms, n, "metadata.name", &mut errs);
                }
            }
            if errs.is_empty() {
                let root = kube_cel::RootContext {
                    api_version: rt.api_version(),
                    api_group: rt.group.clone(),
                    kind: rt.kind.clone(),
                };
                errs.extend(validation::cel::evaluate(&c.schema, obj, old, &root));
            }
        } else {
            let stored = if rt.group == "events.k8s.io" {
                event_from_new(obj)
            } else {
                obj.clone()
            };
            let lookup = |res: &str, name: &str| -> Option<Value> {
                let gr = match res {
                    "storageclasses" => {
                        ("storage.k8s.io".to_string(), "storageclasses".to_string())
                    }
                    other => (String::new(), other.to_string()),
                };
                st.store.get(&gr, "", name).map(|a| (*a).clone())
            };
            let (g, k) = if rt.group == "events.k8s.io" {
                ("", "Event")
            } else {
                (rt.group.as_str(), rt.kind.as_str())
            };
            errs.extend(builtin::validate(g, k, &stored, old, &lookup));
            if rt.kind == "CustomResourceDefinition" {
                errs.extend(crd::validate(obj, old));
            }
        }
        errs
    }

    fn invalid(t: &Target, name: &str, errs: &[FieldError]) -> ApiError {
        ApiError::invalid(&t.rt.group, &t.rt.kind, name, errs)
    }

    fn shape(rt: &ResourceType) -> Shape<'_> {
        match &rt.crd {
            Some(c) => Shape::Schema(&c.schema),
            None => Shape::Builtin,
        }
    }

    fn manager(o: &WriteOptions) -> String {
        o.field_manager
            .clone()
            .unwrap_or_else(|| "kube-sim".to_string())
    }

    fn check_namespace(st: &State, t: &Target, name: &str) -> ApiResult<()> {
        if !t.rt.namespaced {
            return Ok(());
        }
        let ns = Self::ns_of(t);
        let nsgr = (String::new(), "namespaces".to_string());
        match st.store.get(&nsgr, "", &ns) {
            None => Err(ApiError::not_found("", "namespaces", &ns)),
            Some(n)
                if n.pointer("/metadata/deletionTimestamp")
                    .is_some_and(|d| !d.is_null()) =>
            {
                let mut e = ApiError::forbidden(
                    &t.rt.group,
                    &t.rt.plural,
                    name,
                    &format!("unable to create new content in namespace {ns} because it is being terminated"),
                );
                if let Some(d) = e.details.as_mut() {
                    d["causes"] = json!([{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]);
                }
                Err(e)
            }
            Some(_) => Ok(()),
        }
    }

    fn create_locked(
        &self,
        st: &mut State,
        t: &Target,
        obj: Value,
        o: &WriteOptions,
    ) -> ApiResult<Outcome> {
        let rt = t.rt.clone();
        if rt.virtual_only {
            return Err(ApiError::method_not_supported(
                &rt.group, &rt.plural, "create",
            ));
        }
        let (mut obj, warnings) = Self::decode(t, obj, o)?;
        let ns = Self::ns_of(t);
        // Namespace of the body must agree with the URL.
        let body_ns = meta(&obj, "namespace");
        if rt.namespaced {
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            meta_mut(&mut obj).insert("namespace".into(), Value::String(ns.clone()));
        } else {
            meta_mut(&mut obj).remove("namespace");
        }
        if !meta(&obj, "resourceVersion").is_empty() {
            return Err(ApiError::internal(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let mut name = meta(&obj, "name");
        if name.is_empty() {
            let g = meta(&obj, "generateName");
            if !g.is_empty() {
                name = format!("{g}{}", name_suffix(5));
                meta_mut(&mut obj).insert("name".into(), Value::String(name.clone()));
            }
        }
        // Server-owned metadata.
        {
            let m = meta_mut(&mut obj);
            m.insert("uid".into(), Value::String(new_uid()));
            m.insert("creationTimestamp".into(), Value::String(now()));
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
            m.remove("selfLink");
            if rt.has_generation {
                m.insert("generation".into(), json!(1));
            } else {
                m.remove("generation");
            }
        }
        self.prepare_create(st, t, &mut obj)?;
        let errs = Self::validate(st, t, &obj, None);
        if !errs.is_empty() {
            return Err(Self::invalid(t, &name, &errs));
        }
        Self::check_namespace(st, t, &name)?;
        let stored_key = to_storage(&rt, obj.clone());
        if st.store.get(&rt.storage, &ns, &name).is_some() {
            return Err(ApiError::already_exists(&rt.group, &rt.plural, &name));
        }
        self.admit(st, t, &stored_key, None, &o.user)?;
        let mut obj = stored_key;
        let part = if rt.has_status() {
            Part::Main
        } else {
            Part::All
        };
        apply::track_update(
            None,
            &mut obj,
            &Self::shape(&rt),
            &Self::manager(o),
            &rt.api_version(),
            part,
            &now(),
        );
        if o.dry_run {
            crate::store::stamp(&mut obj, 0);
            if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
            return Ok(Outcome {
                object: present(&rt, &obj),
                warnings,
                created: true,
            });
        }
        let stored = st.store.put(&rt.storage, &ns, &name, obj);
        self.after_write(st, &rt, &stored, None);
        Ok(Outcome {
            object: present(&rt, &stored),
            warnings,
            created: true,
        })
    }

    /// Kind-specific preparation of a new object (status reset, generated fields).
    fn prepare_create(&self, st: &mut State, t: &Target, obj: &mut Value) -> ApiResult<()> {
        let rt = &t.rt;
        if rt.has_status() {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        match (rt.group.as_str(), rt.kind.as_str()) {
            ("", "Namespace") => {
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
                obj["status"] = json!({"phase": "Active"});
            }
            ("", "Pod") => {
                obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
                self.pod_admission(st, t, obj)?;
            }
            ("", "PersistentVolumeClaim") => {
                if obj.pointer("/spec/storageClassName").is_none() {
                    let default_sc = st
                        .store
                        .list(&("storage.k8s.io".to_string(), "storageclasses".to_string()), None)
                        .into_iter()
                        .find(|sc| {
                            sc.pointer("/metadata/annotations/storageclass.kubernetes.io~1is-default-class")
                                .and_then(Value::as_str)
                                == Some("true")
                        });
                    if let Some(sc) = default_sc {
                        obj["spec"]["storageClassName"] = Value::String(meta(&sc, "name"));
                    }
                }
                obj["status"] = json!({"phase": "Pending"});
                let m = meta_mut(obj);
                let mut f = m
                    .get("finalizers")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                if !f.contains(&json!("kubernetes.io/pvc-protection")) {
                    f.push(json!("kubernetes.io/pvc-protection"));
                }
                m.insert("finalizers".into(), Value::Array(f));
            }
            ("", "PersistentVolume") => {
                obj["status"] = json!({"phase": "Pending"});
                let m = meta_mut(obj);
                let mut f = m
                    .get("finalizers")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                if !f.contains(&json!("kubernetes.io/pv-protection")) {
                    f.push(json!("kubernetes.io/pv-protection"));
                }
                m.insert("finalizers".into(), Value::Array(f));
            }
            ("", "Service") => {
                let ty = obj
                    .pointer("/spec/type")
                    .and_then(Value::as_str)
                    .unwrap_or("ClusterIP")
                    .to_string();
                if ty != "ExternalName"
                    && obj
                        .pointer("/spec/clusterIP")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .is_empty()
                {
                    st.next_ip += 1;
                    let ip = format!("10.96.{}.{}", st.next_ip / 250, st.next_ip % 250 + 1);
                    obj["spec"]["clusterIP"] = Value::String(ip.clone());
                    obj["spec"]["clusterIPs"] = json!([ip]);
                }
                obj["status"] = json!({"loadBalancer": {}});
            }
            ("", "Secret") => merge_string_data(obj),
            ("batch", "Job") => {
                let uid = meta(obj, "uid");
                let name = meta(obj, "name");
                let manual =
                    obj.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true);
                if !manual && obj.pointer("/spec/selector").is_none() {
                    obj["spec"]["selector"] =
                        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
                }
                if !manual {
                    let tm = obj
                        .pointer_mut("/spec/template")
                        .and_then(Value::as_object_mut);
                    if let Some(tm) = tm {
                        let md = tm.entry("metadata").or_insert_with(|| json!({}));
                        if !md.get("labels").is_some_and(Value::is_object) {
                            md["labels"] = json!({});
                        }
                        let l = md["labels"].as_object_mut().expect("labels");
                        l.insert(
                            "batch.kubernetes.io/controller-uid".into(),
                            Value::String(uid.clone()),
                        );
                        l.insert(
                            "batch.kubernetes.io/job-name".into(),
                            Value::String(name.clone()),
                        );
                        l.insert("controller-uid".into(), Value::String(uid));
                        l.insert("job-name".into(), Value::String(name));
                    }
                }
            }
            ("apiextensions.k8s.io", "CustomResourceDefinition") => {
                crd::apply_defaults(obj);
                let m = meta_mut(obj);
                let mut f = m
                    .get("finalizers")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                if !f.contains(&json!("customresourcecleanup.apiextensions.k8s.io")) {
                    f.push(json!("customresourcecleanup.apiextensions.k8s.io"));
                }
                m.insert("finalizers".into(), Value::Array(f));
            }
            _ => {}
        }
        if rt.is_custom() {
            // A custom resource in a terminating CRD cannot be created.
            if let Some(c) = &rt.crd {
                let crdgr = (
                    "apiextensions.k8s.io".to_string(),
                    "customresourcedefinitions".to_string(),
                );
                if st.store.get(&crdgr, "", &c.crd_name).is_some_and(|d| {
                    d.pointer("/metadata/deletionTimestamp")
                        .is_some_and(|x| !x.is_null())
                }) {
                    return Err(ApiError::method_not_supported(
                        &rt.group, &rt.plural, "create",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The ServiceAccount admission plugin: the pod's service account must exist; its token
    /// is mounted unless automounting is off.
    fn pod_admission(&self, st: &State, t: &Target, pod: &mut Value) -> ApiResult<()> {
        let ns = Self::ns_of(t);
        let sa_name = pod
            .pointer("/spec/serviceAccountName")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        let sagr = (String::new(), "serviceaccounts".to_string());
        let Some(sa) = st.store.get(&sagr, &ns, &sa_name) else {
            return Err(ApiError::forbidden(
                "",
                "pods",
                &meta(pod, "name"),
                &format!("error looking up service account {ns}/{sa_name}: serviceaccount \"{sa_name}\" not found"),
            ));
        };
        let automount = pod
            .pointer("/spec/automountServiceAccountToken")
            .and_then(Value::as_bool)
            .or_else(|| {
                sa.get("automountServiceAccountToken")
                    .and_then(Value::as_bool)
            })
            .unwrap_or(true);
        let mount_path = "/var/run/secrets/kubernetes.io/serviceaccount";
        let already = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.get("volumeMounts")
                        .and_then(Value::as_array)
                        .is_some_and(|ms| {
                            ms.iter().any(|m| {
                                m.get("mountPath").and_then(Value::as_str) == Some(mount_path)
                            })
                        })
                })
            });
        if automount && !already {
            let vol = format!("kube-api-access-{}", name_suffix(5));
            let spec = pod
                .get_mut("spec")
                .and_then(Value::as_object_mut)
                .expect("pod spec");
            let vols = spec.entry("volumes").or_insert_with(|| json!([]));
            if let Some(a) = vols.as_array_mut() {
                a.push(json!({"name": vol, "projected": {"defaultMode": 420, "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
                ]}}));
            }
            for list in ["containers", "initContainers"] {
                if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
                    for c in cs {
                        let Some(cm) = c.as_object_mut() else {
                            continue;
                        };
                        let mounts = cm.entry("volumeMounts").or_insert_with(|| json!([]));
                        if let Some(a) = mounts.as_array_mut() {
                            a.push(json!({"name": vol, "readOnly": true, "mountPath": mount_path}));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Admission checks that need the requester (RBAC escalation).
    fn admit(
        &self,
        st: &State,
        t: &Target,
        obj: &Value,
        old: Option<&Value>,
        user: &UserInfo,
    ) -> ApiResult<()> {
        if t.rt.group == "rbac.authorization.k8s.io" {
            auth::check_escalation(st, user, &t.rt, obj, old)?;
        }
        Ok(())
    }

    /// Side effects of a write that the real server performs synchronously (CRD
    /// registration).
    fn after_write(&self, st: &mut State, rt: &ResourceType, stored: &Value, _old: Option<&Value>) {
        if rt.kind == "CustomResourceDefinition" && rt.group == "apiextensions.k8s.io" {
            self.sync_crd(st, stored);
        }
    }

    /// Registers (or re-registers) a CRD's resources and writes its status.
    fn sync_crd(&self, st: &mut State, crd_obj: &Value) {
        let name = meta(crd_obj, "name");
        let group = crd_obj
            .pointer("/spec/group")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let plural = crd_obj
            .pointer("/spec/names/plural")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let kind = crd_obj
            .pointer("/spec/names/kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        // Another CRD (or a built-in) owning the same plural or kind in the group?
        let conflict = st.registry.all().find(|t| {
            t.group == group
                && (t.plural == plural || t.kind == kind)
                && t.crd.as_ref().is_none_or(|c| c.crd_name != name)
        });
        let conflict_msg = conflict.map(|c| {
            if c.plural == plural {
                format!("\"{plural}\" is already in use")
            } else {
                format!("\"{kind}\" is already in use")
            }
        });
        if conflict_msg.is_none() {
            st.registry.remove_storage(&(group.clone(), plural.clone()));
            for t in crd::resource_types(crd_obj) {
                st.registry.insert(t);
            }
        }
        let status = crd::status(crd_obj, conflict_msg.as_deref(), &now());
        if crd_obj.get("status") != Some(&status) {
            let mut updated = crd_obj.clone();
            updated["status"] = status;
            let gr = (
                "apiextensions.k8s.io".to_string(),
                "customresourcedefinitions".to_string(),
            );
            st.store.put(&gr, "", &name, updated);
        }
    }

    /// Replaces an object (PUT), or its status (`sub = Some("status")`).
    ///
    /// # Errors
    /// 400, 404, 409 (stale resourceVersion), 422.
    pub fn update(
        &self,
        t: &Target,
        name: &str,
        obj: Value,
        sub: Option<&str>,
        o: &WriteOptions,
    ) -> ApiResult<Outcome> {
        let mut st = self.lock();
        let out = self.update_locked(&mut st, t, name, obj, sub, o)?;
        drop(st);
        self.wake();
        Ok(out)
    }

    #[allow(clippy::too_many_lines)]
    fn update_locked(
        &self,
        st: &mut State,
        t: &Target,
        name: &str,
        obj: Value,
        sub: Option<&str>,
        o: &WriteOptions,
    ) -> ApiResult<Outcome> {
        let rt = t.rt.clone();
        let ns = Self::ns_of(t);
        let body_name = meta(&obj, "name");
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        if rt.namespaced {
            let body_ns = meta(&obj, "namespace");
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        }
        let Some(old_arc) = st.store.get(&rt.storage, &ns, name) else {
            if rt.create_on_update && sub.is_none() {
                let mut obj = obj;
                if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("resourceVersion");
                }
                return self.create_locked(st, t, obj, o);
            }
            return Err(ApiError::not_found(&rt.group, &rt.plural, name));
        };
        let old_stored = (*old_arc).clone();
        let old = present(&rt, &old_stored);
        let (mut obj, warnings) = Self::decode(t, obj, o)?;
        // resourceVersion precondition.
        let want_rv = meta(&obj, "resourceVersion");
        if want_rv.is_empty() {
            if !rt.unconditional_update {
                return Err(Self::invalid(
                    t,
                    name,
                    &[FieldError::typed(
                        crate::error::FieldErrorType::Invalid,
                        "metadata.resourceVersion",
                        None,
                        "0x0: must be specified for an update",
                    )],
                ));
            }
        } else if want_rv != meta(&old, "resourceVersion") {
            return Err(ApiError::stale(&rt.group, &status_name(&rt), name));
        }
        // The part of the object this request may change.
        match sub {
            Some("status") => {
                let status = obj.get("status").cloned();
                let new_meta = obj.get("metadata").cloned().unwrap_or(json!({}));
                let mut merged = old.clone();
                match status {
                    Some(s) => merged["status"] = s,
                    None => {
                        if let Some(m) = merged.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                if !rt.is_custom() {
                    // Built-ins take label and annotation changes through /status.
                    for f in ["labels", "annotations"] {
                        match new_meta.get(f) {
                            Some(v) => meta_mut(&mut merged).insert(f.into(), v.clone()),
                            None => meta_mut(&mut merged).remove(f),
                        };
                    }
                }
                if let Some(mf) = new_meta.get("managedFields") {
                    meta_mut(&mut merged).insert("managedFields".into(), mf.clone());
                }
                obj = merged;
            }
            Some("finalize") => {
                let fin = obj.pointer("/spec/finalizers").cloned();
                let mut merged = old.clone();
                merged["spec"]["finalizers"] = fin.unwrap_or(json!([]));
                obj = merged;
            }
            _ => {
                if rt.has_status() {
                    match old.get("status") {
                        Some(s) => obj["status"] = s.clone(),
                        None => {
                            if let Some(m) = obj.as_object_mut() {
                                m.remove("status");
                            }
                        }
                    }
                }
                if rt.kind == "Namespace" && rt.group.is_empty() {
                    obj["spec"] = old.get("spec").cloned().unwrap_or(json!({}));
                }
                if rt.kind == "Secret" && rt.group.is_empty() {
                    merge_string_data(&mut obj);
                }
            }
        }
        // Server-owned metadata comes from the stored object.
        {
            let om = old.get("metadata").cloned().unwrap_or(json!({}));
            let m = meta_mut(&mut obj);
            for f in [
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "selfLink",
            ] {
                match om.get(f) {
                    Some(v) => m.insert(f.into(), v.clone()),
                    None => m.remove(f),
                };
            }
            if m.get("uid")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                m.insert("uid".into(), om.get("uid").cloned().unwrap_or(Value::Null));
            }
            m.insert(
                "namespace".into(),
                om.get("namespace").cloned().unwrap_or(Value::Null),
            );
            if !rt.namespaced {
                m.remove("namespace");
            }
            m.insert(
                "resourceVersion".into(),
                om.get("resourceVersion").cloned().unwrap_or(Value::Null),
            );
        }
        // Generation follows changes outside metadata and status.
        if rt.has_generation {
            let body = |v: &Value| {
                let mut x = v.clone();
                if let Some(m) = x.as_object_mut() {
                    m.remove("metadata");
                    m.remove("status");
                }
                x
            };
            if body(&obj) != body(&old) {
                let g = old
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                meta_mut(&mut obj).insert("generation".into(), json!(g + 1));
            }
        }
        // No new finalizers on terminating objects.
        let terminating = old
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|d| !d.is_null());
        if terminating {
            let before = finalizers(&old);
            let added: Vec<String> = finalizers(&obj)
                .into_iter()
                .filter(|f| !before.contains(f))
                .collect();
            if !added.is_empty() {
                let list = added
                    .iter()
                    .map(|f| format!("{f:?}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(Self::invalid(
                    t,
                    name,
                    &[FieldError::forbidden(
                        "metadata.finalizers",
                        format!("no new finalizers can be added if the object is being deleted, found new finalizers []string{{{list}}}"),
                    )],
                ));
            }
        }
        let errs = Self::validate(st, t, &obj, Some(&old));
        if !errs.is_empty() {
            return Err(Self::invalid(t, name, &errs));
        }
        if rt.kind == "CustomResourceDefinition" {
            crd::apply_defaults(&mut obj);
            obj["status"] = old.get("status").cloned().unwrap_or(Value::Null);
            if sub == Some("status") {
                obj["spec"] = old.get("spec").cloned().unwrap_or(Value::Null);
            }
        }
        let mut obj = to_storage(&rt, obj);
        self.admit(st, t, &obj, Some(&old_stored), &o.user)?;
        let part = match sub {
            Some("status") => Part::Status,
            _ if rt.has_status() => Part::Main,
            _ => Part::All,
        };
        apply::track_update(
            Some(&old_stored),
            &mut obj,
            &Self::shape(&rt),
            &Self::manager(o),
            &rt.api_version(),
            part,
            &now(),
        );
        self.finish_update(st, t, name, obj, &old_stored, warnings, o.dry_run)
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_update(
        &self,
        st: &mut State,
        t: &Target,
        name: &str,
        obj: Value,
        old_stored: &Value,
        warnings: Vec<String>,
        dry_run: bool,
    ) -> ApiResult<Outcome> {
        let rt = &t.rt;
        let ns = Self::ns_of(t);
        // A write that changes nothing is not a write: same resourceVersion, no event.
        if obj == *old_stored {
            return Ok(Outcome {
                object: present(rt, old_stored),
                warnings,
                created: false,
            });
        }
        if dry_run {
            return Ok(Outcome {
                object: present(rt, &obj),
                warnings,
                created: false,
            });
        }
        let terminating = obj
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|d| !d.is_null());
        let grace = obj
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let namespace_pending = rt.group.is_empty()
            && rt.kind == "Namespace"
            && obj
                .pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
        if terminating && finalizers(&obj).is_empty() && grace == 0 && !namespace_pending {
            // The last finalizer is gone: the object is deleted now.
            let stored = st.store.put(&rt.storage, &ns, name, obj);
            st.store.remove(&rt.storage, &ns, name);
            self.after_delete(st, rt, &stored);
            return Ok(Outcome {
                object: present(rt, &stored),
                warnings,
                created: false,
            });
        }
        let stored = st.store.put(&rt.storage, &ns, name, obj);
        self.after_write(st, rt, &stored, Some(old_stored));
        Ok(Outcome {
            object: present(rt, &stored),
            warnings,
            created: false,
        })
    }

    /// Patches an object (or its status).
    ///
    /// # Errors
    /// 400/415 (bad patch), 404, 409 (stale resourceVersion in the patch, apply conflicts),
    /// 422.
    pub fn patch(
        &self,
        t: &Target,
        name: &str,
        sub: Option<&str>,
        p: Patch,
        o: &WriteOptions,
    ) -> ApiResult<Outcome> {
        let mut st = self.lock();
        let out = self.patch_locked(&mut st, t, name, sub, p, o)?;
        drop(st);
        self.wake();
        Ok(out)
    }

    fn patch_locked(
        &self,
        st: &mut State,
        t: &Target,
        name: &str,
        sub: Option<&str>,
        p: Patch,
        o: &WriteOptions,
    ) -> ApiResult<Outcome> {
        let rt = t.rt.clone();
        let ns = Self::ns_of(t);
        let existing = st
            .store
            .get(&rt.storage, &ns, name)
            .map(|a| present(&rt, &a));
        let invalid_patch = |msg: String| {
            let mut e = ApiError::invalid(&rt.group, &rt.kind, name, &[]);
            e.message = msg;
            e.details = None;
            e
        };
        let patched = match (&p, &existing) {
            (Patch::Apply(cfg), _) => {
                let Some(manager) = o.field_manager.clone().filter(|m| !m.is_empty()) else {
                    return Err(ApiError::bad_request("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"));
                };
                if !cfg.is_object() {
                    return Err(ApiError::bad_request(
                        "error decoding YAML: the apply configuration is not an object",
                    ));
                }
                Self::check_type(t, cfg)?;
                let cfg_name = meta(cfg, "name");
                if !cfg_name.is_empty() && cfg_name != name {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({cfg_name}) does not match the name on the URL ({name})"
                    )));
                }
                let live = existing.clone().unwrap_or_else(|| {
                    let mut m = json!({"apiVersion": rt.api_version(), "kind": rt.kind, "metadata": {"name": name}});
                    if rt.namespaced {
                        m["metadata"]["namespace"] = Value::String(ns.clone());
                    }
                    m
                });
                // Decode the configuration like any body (unknown fields per fieldValidation).
                let mut cfg = cfg.clone();
                if cfg.pointer("/metadata/name").is_none() {
                    meta_mut(&mut cfg).insert("name".into(), Value::String(name.to_string()));
                }
                let part = match sub {
                    Some("status") => Part::Status,
                    _ if rt.has_status() => Part::Main,
                    _ => Part::All,
                };
                let req = ApplyRequest {
                    manager: &manager,
                    force: o.force,
                    api_version: &rt.api_version(),
                    part,
                    now: &now(),
                };
                let merged = apply::apply(
                    &live,
                    &cfg,
                    &Self::shape(&rt),
                    &req,
                    &rt.group,
                    &rt.plural,
                    name,
                )?;
                if existing.is_none() {
                    // Server-side apply of a missing object creates it.
                    let mut create_opts = o.clone();
                    create_opts.field_manager = Some(manager.clone());
                    let mut obj = merged;
                    let mf = obj.pointer("/metadata/managedFields").cloned();
                    let mut out = self.create_locked(st, t, obj.take(), &create_opts)?;
                    // Keep the apply ownership (create records an Update entry).
                    if let (Some(mf), false) = (mf, o.dry_run) {
                        let mut stored =
                            (*st.store.get(&rt.storage, &ns, name).expect("just created")).clone();
                        stored["metadata"]["managedFields"] = mf;
                        let s = st.store.put(&rt.storage, &ns, name, stored);
                        out.object = present(&rt, &s);
                    }
                    return Ok(out);
                }
                let mut merged = merged;
                meta_mut(&mut merged).insert(
                    "resourceVersion".into(),
                    Value::String(meta(existing.as_ref().expect("exists"), "resourceVersion")),
                );
                return self.update_after_patch(st, t, name, merged, sub, o, true);
            }
            (_, None) => return Err(ApiError::not_found(&rt.group, &rt.plural, name)),
            (Patch::Merge(pv), Some(cur)) => {
                if !pv.is_object() {
                    return Err(ApiError::bad_request("couldn't get version/kind; json parse error: json: cannot unmarshal into Go value of type struct"));
                }
                patch::merge_patch(cur, pv)
            }
            (Patch::Json(pv), Some(cur)) => patch::json_patch(cur, pv).map_err(invalid_patch)?,
            (Patch::Strategic(pv), Some(cur)) => {
                if rt.is_custom() {
                    return Err(ApiError::unsupported_media_type(
                        "application/strategic-merge-patch+json",
                        &[
                            "application/json-patch+json",
                            "application/merge-patch+json",
                            "application/apply-patch+yaml",
                        ],
                    ));
                }
                patch::strategic_merge(cur, pv).map_err(ApiError::bad_request)?
            }
        };
        self.update_after_patch(st, t, name, patched, sub, o, false)
    }

    #[allow(clippy::too_many_arguments)]
    fn update_after_patch(
        &self,
        st: &mut State,
        t: &Target,
        name: &str,
        mut patched: Value,
        sub: Option<&str>,
        o: &WriteOptions,
        applied: bool,
    ) -> ApiResult<Outcome> {
        let rt = t.rt.clone();
        // The patched object must still be the same object.
        if meta(&patched, "name") != name {
            return Err(Self::invalid(
                t,
                name,
                &[FieldError::invalid(
                    "metadata.name",
                    meta(&patched, "name"),
                    "field is immutable",
                )],
            ));
        }
        if patched.get("kind").and_then(Value::as_str) != Some(rt.kind.as_str())
            || patched.get("apiVersion").and_then(Value::as_str) != Some(rt.api_version().as_str())
        {
            patched["kind"] = Value::String(rt.kind.clone());
            patched["apiVersion"] = Value::String(rt.api_version());
        }
        if !applied {
            let ns = Self::ns_of(t);
            let old = st
                .store
                .get(&rt.storage, &ns, name)
                .map(|a| (*a).clone())
                .unwrap_or(Value::Null);
            // A patch that did not mention the resourceVersion updates unconditionally.
            if meta(&patched, "resourceVersion").is_empty() {
                meta_mut(&mut patched).insert(
                    "resourceVersion".into(),
                    Value::String(meta(&old, "resourceVersion")),
                );
            }
        }
        let mut out = match self.update_locked(st, t, name, patched.clone(), sub, o) {
            Err(e) if e.code == 422 && e.reason == "Invalid" && !rt.unconditional_update => Err(e),
            other => other,
        }?;
        out.created = false;
        Ok(out)
    }

    /// Deletes an object.
    ///
    /// # Errors
    /// 403 (protected namespaces), 404, 409 (failed preconditions).
    pub fn delete(&self, t: &Target, name: &str, o: &DeleteOptions) -> ApiResult<DeleteOutcome> {
        let mut st = self.lock();
        let out = self.delete_locked(&mut st, t, name, o)?;
        drop(st);
        self.wake();
        Ok(out)
    }

    fn default_propagation(rt: &ResourceType) -> Propagation {
        match (rt.group.as_str(), rt.kind.as_str()) {
            ("batch", "Job") => Propagation::Orphan,
            _ => Propagation::Background,
        }
    }

    fn delete_locked(
        &self,
        st: &mut State,
        t: &Target,
        name: &str,
        o: &DeleteOptions,
    ) -> ApiResult<DeleteOutcome> {
        let rt = t.rt.clone();
        let ns = Self::ns_of(t);
        let Some(cur) = st.store.get(&rt.storage, &ns, name) else {
            return Err(ApiError::not_found(&rt.group, &rt.plural, name));
        };
        let mut obj = (*cur).clone();
        if let Some(uid) = &o.precondition_uid {
            let have = meta(&obj, "uid");
            if *uid != have {
                return Err(ApiError::conflict(
                    &rt.group,
                    &rt.plural,
                    name,
                    &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"),
                ));
            }
        }
        if let Some(rv) = &o.precondition_rv {
            let have = meta(&obj, "resourceVersion");
            if *rv != have {
                return Err(ApiError::conflict(
                    &rt.group,
                    &rt.plural,
                    name,
                    &format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {have}"),
                ));
            }
        }
        if rt.group.is_empty()
            && rt.kind == "Namespace"
            && ["default", "kube-system", "kube-public"].contains(&name)
        {
            return Err(ApiError::forbidden(
                "",
                "namespaces",
                name,
                "this namespace may not be deleted",
            ));
        }
        let mut warnings = Vec::new();
        let already = obj
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|d| !d.is_null());
        let mut fins = finalizers(&obj);
        let has = |f: &str| fins.iter().any(|x| x == f);
        // As the API server's store does (also on an object already being deleted, so a
        // second `kubectl delete --cascade=foreground` switches a pending deletion to the
        // foreground): an explicit policy decides; without one, a propagation finalizer
        // already there stays; else the kind's default.
        let propagation = match o.propagation {
            Some(p) => p,
            None if has("orphan") => Propagation::Orphan,
            None if has("foregroundDeletion") => Propagation::Foreground,
            None => {
                let p = Self::default_propagation(&rt);
                if rt.kind == "Job" && rt.group == "batch" {
                    warnings.push("child pods are preserved by default when jobs are deleted; set propagationPolicy=Background to remove them or set propagationPolicy=Orphan to suppress this warning".to_string());
                }
                p
            }
        };
        let wanted = match propagation {
            Propagation::Orphan => Some("orphan"),
            Propagation::Foreground => Some("foregroundDeletion"),
            Propagation::Background => None,
        };
        let before = fins.clone();
        fins.retain(|f| f != "orphan" && f != "foregroundDeletion");
        if let Some(f) = wanted {
            fins.push(f.to_string());
        }
        let finalizers_changed = {
            let mut a = before.clone();
            let mut b = fins.clone();
            a.sort();
            b.sort();
            a != b
        };
        // Graceful pod deletion: a pod bound to the node stays until the kubelet (the
        // runner) confirms with a zero grace period.
        let mut grace = 0i64;
        if rt.group.is_empty() && rt.kind == "Pod" {
            let bound = !obj
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty();
            let phase = obj
                .pointer("/status/phase")
                .and_then(Value::as_str)
                .unwrap_or("");
            if bound && phase != "Succeeded" && phase != "Failed" {
                grace = o
                    .grace_period
                    .or_else(|| {
                        obj.pointer("/spec/terminationGracePeriodSeconds")
                            .and_then(Value::as_i64)
                    })
                    .unwrap_or(30)
                    .max(0);
                if already {
                    let cur_grace = obj
                        .pointer("/metadata/deletionGracePeriodSeconds")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    grace = grace.min(cur_grace);
                }
            }
        }
        let is_namespace = rt.group.is_empty() && rt.kind == "Namespace";
        let keeps = !fins.is_empty() || grace > 0 || is_namespace;
        if !keeps {
            if o.dry_run {
                return Ok(DeleteOutcome {
                    object: present(&rt, &obj),
                    deleted: true,
                    warnings,
                });
            }
            let last = st.store.remove(&rt.storage, &ns, name).expect("present");
            self.after_delete(st, &rt, &last);
            return Ok(DeleteOutcome {
                object: present(&rt, &last),
                deleted: true,
                warnings,
            });
        }
        if already && !(rt.kind == "Pod" && grace == 0) && !finalizers_changed {
            return Ok(DeleteOutcome {
                object: present(&rt, &obj),
                deleted: false,
                warnings,
            });
        }
        {
            let when = (chrono::Utc::now() + chrono::Duration::seconds(grace))
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
            let m = meta_mut(&mut obj);
            if !already || (rt.kind == "Pod" && grace == 0) {
                m.insert("deletionTimestamp".into(), Value::String(when));
            }
            m.insert("deletionGracePeriodSeconds".into(), json!(grace));
            if fins.is_empty() {
                m.remove("finalizers");
            } else {
                m.insert("finalizers".into(), json!(fins));
            }
        }
        if is_namespace {
            obj["status"]["phase"] = json!("Terminating");
        }
        if rt.kind == "CustomResourceDefinition" {
            let mut conds = obj
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            conds.retain(|c| c.get("type").and_then(Value::as_str) != Some("Terminating"));
            conds.push(json!({"type": "Terminating", "status": "True", "reason": "InstanceDeletionInProgress",
                "message": "CustomResource deletion is in progress", "lastTransitionTime": now()}));
            obj["status"]["conditions"] = Value::Array(conds);
        }
        if o.dry_run {
            return Ok(DeleteOutcome {
                object: present(&rt, &obj),
                deleted: false,
                warnings,
            });
        }
        if rt.kind == "Pod" && grace == 0 && fins.is_empty() {
            let last = st.store.remove(&rt.storage, &ns, name).expect("present");
            self.after_delete(st, &rt, &last);
            return Ok(DeleteOutcome {
                object: present(&rt, &last),
                deleted: true,
                warnings,
            });
        }
        let stored = st.store.put(&rt.storage, &ns, name, obj);
        Ok(DeleteOutcome {
            object: present(&rt, &stored),
            deleted: false,
            warnings,
        })
    }

    fn after_delete(&self, st: &mut State, rt: &ResourceType, last: &Value) {
        if rt.kind == "CustomResourceDefinition" && rt.group == "apiextensions.k8s.io" {
            let group = last
                .pointer("/spec/group")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let plural = last
                .pointer("/spec/names/plural")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let owner = meta(last, "name");
            let ours = st.registry.all().any(|t| {
                t.storage == (group.clone(), plural.clone())
                    && t.crd.as_ref().is_some_and(|c| c.crd_name == owner)
            });
            if ours {
                st.registry.remove_storage(&(group.clone(), plural.clone()));
                // Any objects left (the cleanup finalizer was removed by hand) go too.
                let gr = (group, plural);
                for o in st.store.list(&gr, None) {
                    st.store
                        .remove(&gr, &meta(&o, "namespace"), &meta(&o, "name"));
                }
            }
        }
    }

    /// Deletes every object matching the list options.
    ///
    /// # Errors
    /// As [`Cluster::list`] and [`Cluster::delete`].
    pub fn delete_collection(
        &self,
        t: &Target,
        lo: &ListOptions,
        o: &DeleteOptions,
    ) -> ApiResult<Value> {
        let list = self.list(
            t,
            &ListOptions {
                limit: None,
                continue_token: None,
                ..lo.clone()
            },
        )?;
        let mut items = Vec::new();
        for it in list["items"].as_array().cloned().unwrap_or_default() {
            let name = meta(&it, "name");
            let nst = Target {
                rt: t.rt.clone(),
                namespace: if t.rt.namespaced {
                    Some(meta(&it, "namespace"))
                } else {
                    None
                },
            };
            match self.delete(&nst, &name, o) {
                Ok(d) => items.push(d.object),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(
            json!({"apiVersion": t.rt.api_version(), "kind": t.rt.list_kind, "metadata": {"resourceVersion": self.lock().store.current_rv().to_string()}, "items": items}),
        )
    }

    /// Creates or replaces an object as the system (controllers, bootstrap), bypassing
    /// authorization but not validation.
    ///
    /// # Errors
    /// As create/update.
    pub fn system_upsert(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        obj: Value,
    ) -> ApiResult<Value> {
        let ns = meta(&obj, "namespace");
        let name = meta(&obj, "name");
        let t = self.target(group, version, plural, Some(&ns))?;
        let o = WriteOptions::as_user(UserInfo::system("kube-sim"));
        match self.get(&t, &name) {
            Err(e) if e.is_not_found() => Ok(self.create(&t, obj, &o)?.object),
            Err(e) => Err(e),
            Ok(cur) => {
                let mut obj = obj;
                meta_mut(&mut obj).insert(
                    "resourceVersion".into(),
                    Value::String(meta(&cur, "resourceVersion")),
                );
                Ok(self.update(&t, &name, obj, None, &o)?.object)
            }
        }
    }

    /// The stored objects of a storage identity (controllers).
    pub fn stored(&self, gr: &GroupResource) -> Vec<Arc<Value>> {
        self.lock().store.list(gr, None)
    }

    /// Issues a token for a user (the admin, service accounts).
    pub fn add_token(&self, token: &str, user: UserInfo) {
        self.lock().tokens.insert(token, user);
    }

    /// Finds the user of a bearer token.
    pub fn user_for_token(&self, token: &str) -> Option<UserInfo> {
        self.lock().tokens.lookup(token)
    }

    /// Schedules a pod onto a node (the `pods/binding` subresource).
    ///
    /// # Errors
    /// 404; 409 when the pod is already bound.
    pub fn bind_pod(&self, namespace: &str, name: &str, node: &str) -> ApiResult<Value> {
        let mut st = self.lock();
        let gr = (String::new(), "pods".to_string());
        let pod = st
            .store
            .get(&gr, namespace, name)
            .ok_or_else(|| ApiError::not_found("", "pods", name))?;
        let cur = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !cur.is_empty() {
            return Err(ApiError::conflict(
                "",
                "pods/binding",
                name,
                &format!("pod {name} is already assigned to node \"{cur}\""),
            ));
        }
        if pod
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|d| !d.is_null())
        {
            return Err(ApiError::conflict(
                "",
                "pods/binding",
                name,
                &format!("pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        let mut p = (*pod).clone();
        p["spec"]["nodeName"] = Value::String(node.to_string());
        let mut conds = p
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        conds.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
        conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now()}));
        p["status"]["conditions"] = Value::Array(conds);
        let stored = st.store.put(&gr, namespace, name, p);
        drop(st);
        self.wake();
        Ok((*stored).clone())
    }

    /// Issues a service-account token (TokenRequest). Returns the token and its expiry.
    ///
    /// # Errors
    /// 404 when the service account does not exist; 422 for a too-short expiry.
    pub fn issue_token(
        &self,
        namespace: &str,
        sa: &str,
        expiration_seconds: Option<i64>,
        audiences: &[String],
    ) -> ApiResult<(String, String)> {
        let secs = expiration_seconds.unwrap_or(3600);
        if secs < 600 {
            return Err(ApiError::invalid(
                "authentication.k8s.io",
                "TokenRequest",
                "",
                &[FieldError::invalid(
                    "spec.expirationSeconds",
                    secs,
                    "may not specify a duration less than 10 minutes",
                )],
            ));
        }
        let mut st = self.lock();
        let gr = (String::new(), "serviceaccounts".to_string());
        let obj = st
            .store
            .get(&gr, namespace, sa)
            .ok_or_else(|| ApiError::not_found("", "serviceaccounts", sa))?;
        let uid = meta(&obj, "uid");
        let exp = chrono::Utc::now() + chrono::Duration::seconds(secs);
        let token = crate::issue_token_for(namespace, sa, &uid, exp.timestamp(), audiences);
        st.tokens
            .insert(&token, UserInfo::service_account(namespace, sa, &uid));
        Ok((token, exp.format("%Y-%m-%dT%H:%M:%SZ").to_string()))
    }

    /// GET of the `scale` subresource.
    ///
    /// # Errors
    /// 404.
    pub fn get_scale(&self, t: &Target, name: &str) -> ApiResult<Value> {
        let obj = self.get(t, name)?;
        Ok(scale_of(&t.rt, &obj))
    }

    /// PUT/PATCH of the `scale` subresource: sets the replicas.
    ///
    /// # Errors
    /// 404, 409, 422.
    pub fn set_replicas(
        &self,
        t: &Target,
        name: &str,
        replicas: i64,
        rv: Option<String>,
        o: &WriteOptions,
    ) -> ApiResult<Value> {
        let mut obj = self.get(t, name)?;
        if let Some(rv) = rv.filter(|r| !r.is_empty()) {
            if rv != meta(&obj, "resourceVersion") {
                return Err(ApiError::stale(&t.rt.group, &t.rt.plural, name));
            }
        }
        let path = spec_replicas_path(&t.rt);
        set_path(&mut obj, &path, json!(replicas));
        let out = self.update(t, name, obj, None, o)?;
        Ok(scale_of(&t.rt, &out.object))
    }
}

fn spec_replicas_path(rt: &ResourceType) -> Vec<String> {
    let p = rt
        .crd
        .as_ref()
        .and_then(|c| c.scale.as_ref())
        .and_then(|s| s.get("specReplicasPath"))
        .and_then(Value::as_str)
        .unwrap_or(".spec.replicas")
        .to_string();
    p.trim_start_matches('.')
        .split('.')
        .map(str::to_string)
        .collect()
}

fn set_path(obj: &mut Value, path: &[String], v: Value) {
    let mut cur = obj;
    for (i, p) in path.iter().enumerate() {
        if i + 1 == path.len() {
            cur[p.as_str()] = v;
            return;
        }
        if !cur.get(p.as_str()).is_some_and(Value::is_object) {
            cur[p.as_str()] = json!({});
        }
        cur = cur.get_mut(p.as_str()).expect("object");
    }
}

fn scale_of(rt: &ResourceType, obj: &Value) -> Value {
    let get = |p: &str| -> Option<Value> {
        let mut cur = obj;
        for part in p.trim_start_matches('.').split('.') {
            cur = cur.get(part)?;
        }
        Some(cur.clone())
    };
    let scale = rt.crd.as_ref().and_then(|c| c.scale.clone());
    let spec_p = scale
        .as_ref()
        .and_then(|s| s.get("specReplicasPath"))
        .and_then(Value::as_str)
        .unwrap_or(".spec.replicas");
    let status_p = scale
        .as_ref()
        .and_then(|s| s.get("statusReplicasPath"))
        .and_then(Value::as_str)
        .unwrap_or(".status.replicas");
    let mut status = json!({"replicas": get(status_p).unwrap_or(json!(0))});
    let sel = match scale
        .as_ref()
        .and_then(|s| s.get("labelSelectorPath"))
        .and_then(Value::as_str)
    {
        Some(p) => get(p),
        None => obj
            .pointer("/spec/selector/matchLabels")
            .and_then(Value::as_object)
            .map(|m| {
                Value::String(
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(","),
                )
            }),
    };
    if let Some(s) = sel {
        status["selector"] = s;
    }
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": meta(obj, "name"), "namespace": meta(obj, "namespace"), "uid": meta(obj, "uid"),
            "resourceVersion": meta(obj, "resourceVersion"), "creationTimestamp": meta(obj, "creationTimestamp")},
        "spec": {"replicas": get(spec_p).unwrap_or(json!(0))},
        "status": status,
    })
}

/// Secret `stringData` is write-only: merged into `data` (base64) and dropped.
fn merge_string_data(obj: &mut Value) {
    let Some(sd) = obj.get("stringData").and_then(Value::as_object).cloned() else {
        return;
    };
    if !obj.get("data").is_some_and(Value::is_object) {
        obj["data"] = json!({});
    }
    for (k, v) in sd {
        let enc =
            base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or("").as_bytes());
        obj["data"][k.as_str()] = Value::String(enc);
    }
    if let Some(m) = obj.as_object_mut() {
        m.remove("stringData");
    }
}

impl ApiError {
    /// Replaces the message's leading `Kind "name" is invalid: ` with `prefix`.
    pub fn with_message_prefix(mut self, prefix: &str) -> Self {
        if let Some(i) = self.message.find(" is invalid: ") {
            self.message = format!("{prefix}{}", &self.message[i + " is invalid: ".len()..]);
        }
        self
    }

    fn with_kind_mismatch(self, kind: &str, want_kind: &str, av: &str, want_av: &str) -> Self {
        if kind != want_kind && av == want_av {
            ApiError::bad_request(format!(
                "the object provided is unrecognized (must be of type {want_kind}): {kind}"
            ))
        } else {
            self
        }
    }
}
