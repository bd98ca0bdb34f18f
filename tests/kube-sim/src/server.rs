//! The HTTPS front: TLS, authentication, routing of the Kubernetes REST paths, content
//! negotiation (JSON, YAML bodies, Tables, aggregated discovery), authorization, and the
//! translation of [`crate::Cluster`] calls into HTTP responses (watch streams included).

use crate::auth::{self, Attributes, UserInfo};
use crate::cluster::{
    self, Cluster, DeleteOptions, FieldValidation, ListOptions, Patch, Propagation, Target,
    WatchEvent, WriteOptions,
};
use crate::discovery;
use crate::error::{ApiError, ApiResult};
use crate::logs;
use crate::runner::{PodIoHandler, PodIoRequest};
use crate::selector::LabelSelector;
use crate::table::{self, Include};
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Response body type.
pub type Body = BoxBody<Bytes, Infallible>;

/// The largest request body accepted (the real server's limit).
const MAX_BODY: usize = 3 * 1024 * 1024;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

fn streaming(rx: mpsc::Receiver<Bytes>) -> Body {
    let s = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    BodyExt::boxed(StreamBody::new(s))
}

fn respond(code: u16, ct: &str, body: Body, warnings: &[String]) -> Response<Body> {
    let mut r = Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("Content-Type", ct)
        .header("Cache-Control", "no-cache, private")
        .header("Audit-Id", cluster::new_uid());
    for w in warnings {
        let quoted = serde_json::to_string(w).unwrap_or_default();
        r = r.header("Warning", format!("299 - {quoted}"));
    }
    r.body(body).unwrap_or_else(|_| Response::new(full("")))
}

fn json_resp(code: u16, v: &Value, warnings: &[String]) -> Response<Body> {
    respond(
        code,
        "application/json",
        full(serde_json::to_vec(v).unwrap_or_default()),
        warnings,
    )
}

fn err_resp(e: &ApiError) -> Response<Body> {
    json_resp(e.code, &e.to_status(), &[])
}

/// The parts of a resource URL.
#[derive(Debug, Default, Clone)]
struct ResourcePath {
    group: String,
    version: String,
    namespace: Option<String>,
    plural: String,
    name: Option<String>,
    sub: Option<String>,
    legacy_watch: bool,
}

fn parse_resource_path(path: &str) -> Option<ResourcePath> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => (String::new(), v.to_string(), rest),
        ["apis", g, v, rest @ ..] => (g.to_string(), v.to_string(), rest),
        _ => return None,
    };
    let mut rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
    let mut legacy_watch = false;
    if rest.first().map(String::as_str) == Some("watch") {
        legacy_watch = true;
        rest.remove(0);
    }
    let mut rp = ResourcePath {
        group,
        version,
        legacy_watch,
        ..Default::default()
    };
    if rest.len() >= 3 && rest[0] == "namespaces" && rest[2] != "status" && rest[2] != "finalize" {
        rp.namespace = Some(rest[1].clone());
        rest.drain(..2);
    }
    if rest.is_empty() || rest.len() > 3 {
        return None;
    }
    rp.plural = rest[0].clone();
    rp.name = rest.get(1).cloned();
    rp.sub = rest.get(2).cloned();
    Some(rp)
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

fn truthy(v: Option<&String>) -> bool {
    matches!(v.map(String::as_str), Some("true") | Some("1"))
}

fn accept(req: &Request<Incoming>) -> String {
    req.headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .any(|m| m.contains("as=Table") && m.contains("g=meta.k8s.io"))
}

fn aggregated_version(accept: &str) -> Option<&'static str> {
    for m in accept.split(',') {
        if m.contains("as=APIGroupDiscoveryList") && m.contains("g=apidiscovery.k8s.io") {
            if m.contains("v=v2beta1") {
                return Some("v2beta1");
            }
            if m.contains("v=v2") {
                return Some("v2");
            }
        }
    }
    None
}

fn check_acceptable(accept: &str) -> ApiResult<()> {
    if accept.is_empty() {
        return Ok(());
    }
    let ok = accept.split(',').any(|m| {
        let m = m.trim();
        m.starts_with("application/json")
            || m.starts_with("*/*")
            || m.starts_with("application/*")
            || m.starts_with("application/yaml")
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::not_acceptable(&[
            "application/json",
            "application/yaml",
        ]))
    }
}

fn include_of(q: &HashMap<String, String>) -> Include {
    match q.get("includeObject").map(String::as_str) {
        Some("None") => Include::None,
        Some("Object") => Include::Object,
        _ => Include::Metadata,
    }
}

/// The HTTP server state.
pub struct Server {
    /// The cluster.
    pub cluster: Cluster,
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// The runner's pod I/O handler, if any.
    pub pod_io: Option<PodIoHandler>,
}

async fn read_body(req: Request<Incoming>) -> ApiResult<(Bytes, String)> {
    let ct = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    let bytes = limited.collect().await.map_err(|e| {
        let msg = e.to_string();
        if msg.contains("length limit") {
            ApiError {
                code: 413,
                reason: "RequestEntityTooLarge".into(),
                message: format!("Request entity too large: limit is {MAX_BODY}"),
                details: None,
            }
        } else {
            ApiError::bad_request(format!("error reading request body: {msg}"))
        }
    })?;
    Ok((bytes.to_bytes(), ct))
}

fn decode_body(bytes: &[u8], ct: &str) -> ApiResult<Value> {
    let mime = ct.split(';').next().unwrap_or("").trim();
    match mime {
        ""
        | "application/json"
        | "application/merge-patch+json"
        | "application/json-patch+json"
        | "application/strategic-merge-patch+json" => serde_json::from_slice(bytes).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        }),
        "application/yaml" | "application/apply-patch+yaml" => {
            let v: serde_yaml::Value = serde_yaml::from_slice(bytes)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
            serde_json::to_value(v)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
        }
        "application/vnd.kubernetes.protobuf" => crate::proto::decode(bytes).map_err(|e| {
            ApiError::bad_request(format!("the protobuf body could not be decoded: {e}"))
        }),
        other => Err(ApiError::unsupported_media_type(
            other,
            &[
                "application/json",
                "application/yaml",
                "application/vnd.kubernetes.protobuf",
            ],
        )),
    }
}

fn write_options(
    q: &HashMap<String, String>,
    user: &UserInfo,
    ua: &str,
) -> ApiResult<WriteOptions> {
    let dry_run = match q.get("dryRun").map(String::as_str) {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!("Invalid dry run value: dryRun: Unsupported value: {other:?}: supported values: \"All\"")))
        }
    };
    let field_validation = match q.get("fieldValidation").map(String::as_str) {
        None | Some("") | Some("Warn") => FieldValidation::Warn,
        Some("Ignore") => FieldValidation::Ignore,
        Some("Strict") => FieldValidation::Strict,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "fieldValidation: Unsupported value: {other:?}: supported values: \"Ignore\", \"Warn\", \"Strict\""
            )))
        }
    };
    let field_manager = q.get("fieldManager").cloned().filter(|m| !m.is_empty());
    if let Some(m) = &field_manager {
        if m.len() > 128 {
            return Err(ApiError::bad_request(
                "fieldManager: Invalid value: must be at most 128 characters",
            ));
        }
    }
    let default_manager = ua
        .split('/')
        .next()
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let force = match q.get("force").map(String::as_str) {
        None | Some("") | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "force: Invalid value: {other:?}"
            )))
        }
    };
    Ok(WriteOptions {
        user: user.clone(),
        dry_run,
        field_manager: field_manager.or(default_manager),
        field_validation,
        force,
    })
}

fn list_options(q: &HashMap<String, String>) -> ApiResult<ListOptions> {
    let labels = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))?;
    let num = |k: &str| -> ApiResult<Option<u64>> {
        match q.get(k).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(s) => s
                .parse::<u64>()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("{k}: Invalid value: {s:?}"))),
        }
    };
    let send_initial_events = match q.get("sendInitialEvents").map(String::as_str) {
        None | Some("") => None,
        Some(s) => Some(s == "true"),
    };
    Ok(ListOptions {
        labels,
        fields: q.get("fieldSelector").cloned().unwrap_or_default(),
        limit: num("limit")?.map(|n| n as usize),
        continue_token: q.get("continue").cloned().filter(|s| !s.is_empty()),
        resource_version: q.get("resourceVersion").cloned(),
        resource_version_match: q
            .get("resourceVersionMatch")
            .cloned()
            .filter(|s| !s.is_empty()),
        bookmarks: truthy(q.get("allowWatchBookmarks")),
        send_initial_events,
        timeout: num("timeoutSeconds")?.map(Duration::from_secs),
    })
}

fn delete_options(
    q: &HashMap<String, String>,
    body: Option<&Value>,
    user: &UserInfo,
) -> ApiResult<DeleteOptions> {
    let b = body.cloned().unwrap_or(json!({}));
    let pol = q.get("propagationPolicy").cloned().or_else(|| {
        b.get("propagationPolicy")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let orphan = q
        .get("orphanDependents")
        .map(|s| s == "true")
        .or_else(|| b.get("orphanDependents").and_then(Value::as_bool));
    let propagation = match pol.as_deref() {
        None | Some("") => orphan.map(|o| if o { Propagation::Orphan } else { Propagation::Background }),
        Some("Background") => Some(Propagation::Background),
        Some("Foreground") => Some(Propagation::Foreground),
        Some("Orphan") => Some(Propagation::Orphan),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
            )))
        }
    };
    let grace = q
        .get("gracePeriodSeconds")
        .and_then(|s| s.parse::<i64>().ok())
        .or_else(|| b.get("gracePeriodSeconds").and_then(Value::as_i64));
    let dry = q.get("dryRun").map(String::as_str) == Some("All")
        || b.get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x == "All"));
    Ok(DeleteOptions {
        user: user.clone(),
        propagation,
        grace_period: grace,
        precondition_uid: b
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string),
        precondition_rv: b
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string),
        dry_run: dry,
    })
}

impl Server {
    fn authenticate(&self, req: &Request<Incoming>) -> Result<UserInfo, ApiError> {
        match req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
        {
            None => Ok(UserInfo::anonymous()),
            Some(h) => {
                let token = h
                    .strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
                    .unwrap_or("")
                    .trim();
                self.cluster
                    .user_for_token(token)
                    .ok_or_else(ApiError::unauthorized)
            }
        }
    }

    fn authorize(&self, user: &UserInfo, a: &Attributes) -> ApiResult<()> {
        let st = self.cluster.lock();
        if auth::authorize(&st, user, a) {
            Ok(())
        } else {
            Err(auth::forbidden(user, a))
        }
    }

    /// Handles one request.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        Ok(match self.clone().route(req).await {
            Ok(r) => r,
            Err(e) => err_resp(&e),
        })
    }

    async fn route(self: Arc<Self>, req: Request<Incoming>) -> ApiResult<Response<Body>> {
        let user = self.authenticate(&req)?;
        let path = req.uri().path().to_string();
        let acc = accept(&req);
        // Non-resource paths.
        match path.trim_end_matches('/') {
            "/healthz" | "/livez" | "/readyz" => {
                return Ok(respond(200, "text/plain; charset=utf-8", full("ok"), &[]))
            }
            "/version" => {
                self.authorize(
                    &user,
                    &Attributes {
                        verb: "get".into(),
                        path: Some("/version".into()),
                        ..Default::default()
                    },
                )?;
                return Ok(json_resp(200, &discovery::version(), &[]));
            }
            "/api" | "/apis" => {
                self.authorize(
                    &user,
                    &Attributes {
                        verb: "get".into(),
                        path: Some(path.clone()),
                        ..Default::default()
                    },
                )?;
                let core = path.trim_end_matches('/') == "/api";
                let reg = self.cluster.lock().registry.clone();
                if let Some(v) = aggregated_version(&acc) {
                    let doc =
                        discovery::aggregated(&reg, core, &format!("apidiscovery.k8s.io/{v}"));
                    let ct = format!(
                        "application/json;g=apidiscovery.k8s.io;v={v};as=APIGroupDiscoveryList"
                    );
                    return Ok(respond(
                        200,
                        &ct,
                        full(serde_json::to_vec(&doc).unwrap_or_default()),
                        &[],
                    ));
                }
                let doc = if core {
                    discovery::core_versions(self.url.trim_start_matches("https://"))
                } else {
                    discovery::group_list(&reg)
                };
                return Ok(json_resp(200, &doc, &[]));
            }
            _ => {}
        }
        if path.starts_with("/openapi") {
            return Err(ApiError::no_route());
        }
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        if segs.first() == Some(&"apis") && segs.len() == 2 {
            self.authorize(
                &user,
                &Attributes {
                    verb: "get".into(),
                    path: Some(path.clone()),
                    ..Default::default()
                },
            )?;
            let reg = self.cluster.lock().registry.clone();
            return discovery::group(&reg, segs[1])
                .map(|g| json_resp(200, &g, &[]))
                .ok_or_else(ApiError::no_route);
        }
        if (segs.first() == Some(&"api") && segs.len() == 2)
            || (segs.first() == Some(&"apis") && segs.len() == 3)
        {
            self.authorize(
                &user,
                &Attributes {
                    verb: "get".into(),
                    path: Some(path.clone()),
                    ..Default::default()
                },
            )?;
            let (g, v) = if segs[0] == "api" {
                ("", segs[1])
            } else {
                (segs[1], segs[2])
            };
            let reg = self.cluster.lock().registry.clone();
            return discovery::resource_list(&reg, g, v)
                .map(|l| json_resp(200, &l, &[]))
                .ok_or_else(ApiError::no_route);
        }
        let rp = parse_resource_path(&path).ok_or_else(ApiError::no_route)?;
        self.resource(req, rp, user, acc).await
    }

    #[allow(clippy::too_many_lines)]
    async fn resource(
        self: Arc<Self>,
        req: Request<Incoming>,
        rp: ResourcePath,
        user: UserInfo,
        acc: String,
    ) -> ApiResult<Response<Body>> {
        let c = self.cluster.clone();
        let rt = c.resource(&rp.group, &rp.version, &rp.plural)?;
        // Namespaced resources addressed without a namespace are cluster-wide reads;
        // cluster-scoped ones addressed inside a namespace do not exist.
        if !rt.namespaced && rp.namespace.is_some() {
            return Err(ApiError::no_route());
        }
        let q = query(&req);
        let method = req.method().clone();
        let watch = rp.legacy_watch || truthy(q.get("watch"));
        let verb = match (&method, rp.name.is_some(), watch) {
            (&Method::GET, _, true) => "watch",
            (&Method::GET, true, false) => "get",
            (&Method::GET, false, false) => "list",
            (&Method::POST, _, _) => "create",
            (&Method::PUT, _, _) => "update",
            (&Method::PATCH, _, _) => "patch",
            (&Method::DELETE, true, _) => "delete",
            (&Method::DELETE, false, _) => "deletecollection",
            _ => {
                return Err(ApiError::method_not_supported(
                    &rt.group,
                    &rt.plural,
                    method.as_str(),
                ))
            }
        };
        let sub = rp.sub.clone();
        let target = Target {
            rt: rt.clone(),
            namespace: rp.namespace.clone(),
        };
        if rt.namespaced
            && rp.namespace.is_none()
            && !matches!(verb, "list" | "watch" | "deletecollection")
            && !rt.virtual_only
        {
            return Err(ApiError::no_route());
        }
        let attrs = Attributes {
            verb: verb.to_string(),
            group: rt.group.clone(),
            resource: rt.plural.clone(),
            subresource: sub.clone().unwrap_or_default(),
            name: rp.name.clone().unwrap_or_default(),
            namespace: rp.namespace.clone().unwrap_or_default(),
            path: None,
        };
        // Pod exec/attach/portforward are authorized as `create` (also for GET upgrades).
        let mut attrs = attrs;
        if matches!(sub.as_deref(), Some("exec" | "attach" | "portforward")) {
            attrs.verb = "create".into();
        }
        self.authorize(&user, &attrs)?;
        let ua = req
            .headers()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let name = rp.name.clone().unwrap_or_default();
        if let Some(s) = &sub {
            let allowed = rt.subresources.iter().any(|x| x == s);
            if !allowed {
                return Err(ApiError::no_route());
            }
        }
        if !rt.supports(verb) && sub.is_none() {
            return Err(ApiError::method_not_supported(&rt.group, &rt.plural, verb));
        }
        let table = wants_table(&acc);
        if !table && aggregated_version(&acc).is_none() {
            check_acceptable(&acc)?;
        }
        match (verb, sub.as_deref()) {
            ("watch", None) => {
                let mut lo = list_options(&q)?;
                if let Some(n) = &rp.name {
                    lo.fields = if lo.fields.is_empty() {
                        format!("metadata.name={n}")
                    } else {
                        format!("{},metadata.name={n}", lo.fields)
                    };
                }
                let ws = c.watch(&target, &lo)?;
                Ok(self.watch_response(ws, target, table, include_of(&q)))
            }
            ("list", None) => {
                let lo = list_options(&q)?;
                let list = c.list(&target, &lo)?;
                if table {
                    let mut items: Vec<Value> =
                        list["items"].as_array().cloned().unwrap_or_default();
                    if !rt.is_custom() {
                        for it in items.iter_mut() {
                            it["apiVersion"] = json!(rt.api_version());
                            it["kind"] = json!(rt.kind);
                        }
                    }
                    let t = table::to_table(&rt, &items, list["metadata"].clone(), include_of(&q));
                    return Ok(json_resp(200, &t, &[]));
                }
                Ok(json_resp(200, &list, &[]))
            }
            ("get", None) | ("get", Some("status")) => {
                let obj = c.get(&target, &name)?;
                if table {
                    let t = table::to_table(
                        &rt,
                        std::slice::from_ref(&obj),
                        json!({"resourceVersion": obj.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null)}),
                        include_of(&q),
                    );
                    return Ok(json_resp(200, &t, &[]));
                }
                Ok(json_resp(200, &obj, &[]))
            }
            ("get", Some("scale")) => Ok(json_resp(200, &c.get_scale(&target, &name)?, &[])),
            ("get", Some("log")) => self.pod_log(target, &name, &q).await,
            (_, Some("exec" | "attach" | "portforward")) => {
                self.pod_io(req, target, &name, sub.as_deref().unwrap_or(""))
                    .await
            }
            ("create", sub) => {
                let (bytes, ct) = read_body(req).await?;
                let body = decode_body(&bytes, &ct)?;
                let o = write_options(&q, &user, &ua)?;
                match sub {
                    None if rt.virtual_only => {
                        let st = c.lock();
                        let out = auth::review(&st, &user, &rt, &body, rp.namespace.as_deref())?;
                        Ok(json_resp(201, &out, &[]))
                    }
                    None => {
                        let out = c.create(&target, body, &o)?;
                        Ok(json_resp(201, &out.object, &out.warnings))
                    }
                    Some("token") => {
                        let ns = rp.namespace.clone().unwrap_or_default();
                        let exp = body
                            .pointer("/spec/expirationSeconds")
                            .and_then(Value::as_i64);
                        let aud: Vec<String> = body
                            .pointer("/spec/audiences")
                            .and_then(Value::as_array)
                            .map(|a| {
                                a.iter()
                                    .filter_map(|x| x.as_str().map(str::to_string))
                                    .collect()
                            })
                            .unwrap_or_default();
                        let (token, expiry) = c.issue_token(&ns, &name, exp, &aud)?;
                        let mut out = body.clone();
                        out["apiVersion"] = json!("authentication.k8s.io/v1");
                        out["kind"] = json!("TokenRequest");
                        if out.get("metadata").is_none() {
                            out["metadata"] = json!({});
                        }
                        out["metadata"]["name"] = json!(name);
                        out["metadata"]["namespace"] = json!(ns);
                        out["spec"]["expirationSeconds"] = json!(exp.unwrap_or(3600));
                        if aud.is_empty() {
                            out["spec"]["audiences"] =
                                json!(["https://kubernetes.default.svc.cluster.local"]);
                        }
                        out["status"] = json!({"token": token, "expirationTimestamp": expiry});
                        Ok(json_resp(201, &out, &[]))
                    }
                    Some("binding") => {
                        let node = body
                            .pointer("/target/name")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        c.bind_pod(&rp.namespace.clone().unwrap_or_default(), &name, node)?;
                        Ok(json_resp(
                            201,
                            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                            &[],
                        ))
                    }
                    Some("eviction") => {
                        let d = delete_options(&q, body.get("deleteOptions"), &user)?;
                        let pods = Target {
                            rt: rt.clone(),
                            namespace: rp.namespace.clone(),
                        };
                        c.delete(&pods, &name, &d)?;
                        Ok(json_resp(
                            201,
                            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                            &[],
                        ))
                    }
                    Some(_) => Err(ApiError::method_not_supported(
                        &rt.group, &rt.plural, "create",
                    )),
                }
            }
            ("update", sub) => {
                let (bytes, ct) = read_body(req).await?;
                let body = decode_body(&bytes, &ct)?;
                let o = write_options(&q, &user, &ua)?;
                if sub == Some("scale") {
                    let replicas = body
                        .pointer("/spec/replicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    let rv = body
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    return Ok(json_resp(
                        200,
                        &c.set_replicas(&target, &name, replicas, rv, &o)?,
                        &[],
                    ));
                }
                let out = c.update(&target, &name, body, sub, &o)?;
                Ok(json_resp(
                    if out.created { 201 } else { 200 },
                    &out.object,
                    &out.warnings,
                ))
            }
            ("patch", sub) => {
                let (bytes, ct) = read_body(req).await?;
                let mime = ct.split(';').next().unwrap_or("").trim().to_string();
                let body = decode_body(&bytes, &ct)?;
                let o = write_options(&q, &user, &ua)?;
                let p = match mime.as_str() {
                    "application/merge-patch+json" => Patch::Merge(body),
                    "application/json-patch+json" => Patch::Json(body),
                    "application/strategic-merge-patch+json" => Patch::Strategic(body),
                    "application/apply-patch+yaml" => Patch::Apply(body),
                    other => {
                        return Err(ApiError::unsupported_media_type(
                            other,
                            &[
                                "application/json-patch+json",
                                "application/merge-patch+json",
                                "application/apply-patch+yaml",
                                "application/strategic-merge-patch+json",
                            ],
                        ))
                    }
                };
                if sub == Some("scale") {
                    let scale = c.get_scale(&target, &name)?;
                    let patched = match &p {
                        Patch::Merge(pv) | Patch::Strategic(pv) | Patch::Apply(pv) => {
                            crate::patch::merge_patch(&scale, pv)
                        }
                        Patch::Json(pv) => {
                            crate::patch::json_patch(&scale, pv).map_err(ApiError::bad_request)?
                        }
                    };
                    let replicas = patched
                        .pointer("/spec/replicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    return Ok(json_resp(
                        200,
                        &c.set_replicas(&target, &name, replicas, None, &o)?,
                        &[],
                    ));
                }
                let out = c.patch(&target, &name, sub, p, &o)?;
                Ok(json_resp(
                    if out.created { 201 } else { 200 },
                    &out.object,
                    &out.warnings,
                ))
            }
            ("delete", None) => {
                let (bytes, ct) = read_body(req).await?;
                let body = if bytes.is_empty() {
                    None
                } else {
                    Some(decode_body(&bytes, &ct)?)
                };
                let d = delete_options(&q, body.as_ref(), &user)?;
                let out = c.delete(&target, &name, &d)?;
                if !out.deleted || cluster::returns_deleted_object(&rt) {
                    return Ok(json_resp(200, &out.object, &out.warnings));
                }
                let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": {"name": name, "group": rt.group, "kind": rt.plural,
                        "uid": out.object.pointer("/metadata/uid").cloned().unwrap_or(Value::Null)}});
                Ok(json_resp(200, &status, &out.warnings))
            }
            ("deletecollection", None) => {
                let (bytes, ct) = read_body(req).await?;
                let body = if bytes.is_empty() {
                    None
                } else {
                    Some(decode_body(&bytes, &ct)?)
                };
                let d = delete_options(&q, body.as_ref(), &user)?;
                let lo = list_options(&q)?;
                Ok(json_resp(200, &c.delete_collection(&target, &lo, &d)?, &[]))
            }
            _ => Err(ApiError::method_not_supported(&rt.group, &rt.plural, verb)),
        }
    }

    fn watch_response(
        &self,
        mut ws: cluster::WatchStream,
        target: Target,
        table: bool,
        include: Include,
    ) -> Response<Body> {
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        tokio::spawn(async move {
            while let Some(ev) = ws.next().await {
                let WatchEvent { kind, object } = ev;
                let object = if table && kind != "ERROR" && kind != "BOOKMARK" {
                    table::to_table(
                        &target.rt,
                        std::slice::from_ref(&object),
                        json!({"resourceVersion": object.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null)}),
                        include,
                    )
                } else {
                    object
                };
                let mut line = serde_json::to_vec(&json!({"type": kind, "object": object}))
                    .unwrap_or_default();
                line.push(b'\n');
                if tx.send(Bytes::from(line)).await.is_err() {
                    return;
                }
                if kind == "ERROR" {
                    return;
                }
            }
        });
        respond(200, "application/json", streaming(rx), &[])
    }

    async fn pod_log(
        &self,
        target: Target,
        name: &str,
        q: &HashMap<String, String>,
    ) -> ApiResult<Response<Body>> {
        let pod = self.cluster.get(&target, name)?;
        let num = |k: &str| q.get(k).and_then(|s| s.parse::<i64>().ok());
        let o = logs::LogOptions {
            container: q.get("container").cloned(),
            follow: truthy(q.get("follow")),
            previous: truthy(q.get("previous")),
            tail_lines: num("tailLines").map(|n| n.max(0) as usize),
            limit_bytes: num("limitBytes").map(|n| n.max(0) as usize),
            since_seconds: num("sinceSeconds"),
            since_time: q.get("sinceTime").cloned(),
            timestamps: truthy(q.get("timestamps")),
        };
        let (path, container) = logs::resolve(&self.cluster, &pod, &o)?;
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        tokio::spawn(logs::stream(
            self.cluster.clone(),
            target,
            name.to_string(),
            path,
            container,
            o,
            tx,
        ));
        Ok(respond(200, "text/plain", streaming(rx), &[]))
    }

    async fn pod_io(
        &self,
        req: Request<Incoming>,
        target: Target,
        name: &str,
        sub: &str,
    ) -> ApiResult<Response<Body>> {
        let pod = self.cluster.get(&target, name)?;
        if pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            return Err(ApiError::bad_request(format!(
                "pod {name} does not have a host assigned"
            )));
        }
        match &self.pod_io {
            Some(h) => Ok(h(PodIoRequest {
                request: req,
                namespace: target.namespace.clone().unwrap_or_default(),
                pod: name.to_string(),
                subresource: sub.to_string(),
                cluster: self.cluster.clone(),
            })
            .await),
            None => {
                let phase = pod
                    .pointer("/status/phase")
                    .and_then(Value::as_str)
                    .unwrap_or("Pending");
                Err(ApiError::bad_request(format!(
                    "unable to upgrade connection: pod {name} is not running (phase {phase}): no kubelet serves it"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_paths() {
        let p = parse_resource_path("/api/v1/namespaces/ns/pods/p/log").unwrap();
        assert_eq!(
            (
                p.namespace.as_deref(),
                p.plural.as_str(),
                p.name.as_deref(),
                p.sub.as_deref()
            ),
            (Some("ns"), "pods", Some("p"), Some("log"))
        );
        let n = parse_resource_path("/api/v1/namespaces/ns/status").unwrap();
        assert_eq!(
            (n.plural.as_str(), n.name.as_deref(), n.sub.as_deref()),
            ("namespaces", Some("ns"), Some("status"))
        );
        let n = parse_resource_path("/api/v1/namespaces/ns").unwrap();
        assert_eq!(
            (n.plural.as_str(), n.name.as_deref()),
            ("namespaces", Some("ns"))
        );
        let g = parse_resource_path("/apis/batch/v1/jobs").unwrap();
        assert_eq!(
            (g.group.as_str(), g.plural.as_str(), g.namespace),
            ("batch", "jobs", None)
        );
        let w = parse_resource_path("/api/v1/watch/namespaces/ns/pods").unwrap();
        assert!(w.legacy_watch);
    }
}
