//! Authentication (bearer tokens) and RBAC authorization, as the real server's RBAC
//! authorizer does it.
//!
//! Users: the admin token is in `system:masters` (cluster-admin, never checked further);
//! ServiceAccount tokens (TokenRequest, token Secrets) are
//! `system:serviceaccount:<ns>:<name>` in `system:serviceaccounts`,
//! `system:serviceaccounts:<ns>` and `system:authenticated`. Requests without a token are
//! `system:anonymous`. Every authenticated user may read discovery and create self
//! reviews (the default `system:discovery`/`system:basic-user` bindings); everything else
//! needs a Role/ClusterRole rule bound to the user. Creating or changing Roles and bindings
//! is refused when it would grant permissions the requester does not hold, unless the
//! requester has `escalate` (roles) or `bind` (bindings) on the role.

use crate::cluster::State;
use crate::error::{ApiError, ApiResult};
use crate::resource::ResourceType;
use serde_json::{json, Value};
use std::collections::HashMap;

/// An authenticated (or anonymous) user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// User name.
    pub name: String,
    /// UID (service accounts).
    pub uid: String,
    /// Groups.
    pub groups: Vec<String>,
}

impl UserInfo {
    /// A cluster-admin user (`system:masters`).
    pub fn system(name: &str) -> Self {
        UserInfo {
            name: name.to_string(),
            uid: String::new(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        }
    }

    /// A service account's user.
    pub fn service_account(ns: &str, name: &str, uid: &str) -> Self {
        UserInfo {
            name: format!("system:serviceaccount:{ns}:{name}"),
            uid: uid.to_string(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".into(),
            ],
        }
    }

    /// The anonymous user.
    pub fn anonymous() -> Self {
        UserInfo {
            name: "system:anonymous".into(),
            uid: String::new(),
            groups: vec!["system:unauthenticated".into()],
        }
    }

    /// Whether the user bypasses authorization.
    pub fn is_superuser(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }

    fn authenticated(&self) -> bool {
        self.groups.iter().any(|g| g == "system:authenticated")
    }

    /// `(ns, name)` when this is a service account.
    pub fn service_account_of(&self) -> Option<(String, String)> {
        let rest = self.name.strip_prefix("system:serviceaccount:")?;
        let (ns, name) = rest.split_once(':')?;
        Some((ns.to_string(), name.to_string()))
    }
}

/// Known bearer tokens.
#[derive(Debug, Default)]
pub struct Tokens(HashMap<String, UserInfo>);

impl Tokens {
    /// Adds a token.
    pub fn insert(&mut self, token: &str, user: UserInfo) {
        self.0.insert(token.to_string(), user);
    }
    /// Looks a token up.
    pub fn lookup(&self, token: &str) -> Option<UserInfo> {
        self.0.get(token).cloned()
    }
    /// Drops every token of a service account (when it is deleted).
    pub fn revoke_service_account(&mut self, ns: &str, name: &str) {
        let user = format!("system:serviceaccount:{ns}:{name}");
        self.0.retain(|_, u| u.name != user);
    }
}

/// What a request does, for authorization.
#[derive(Debug, Clone, Default)]
pub struct Attributes {
    /// The verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`, or a special verb like `bind`).
    pub verb: String,
    /// API group.
    pub group: String,
    /// Resource (plural).
    pub resource: String,
    /// Subresource.
    pub subresource: String,
    /// Object name, if any.
    pub name: String,
    /// Namespace, if any.
    pub namespace: String,
    /// For non-resource requests: the path.
    pub path: Option<String>,
}

fn strs(v: &Value, k: &str) -> Vec<String> {
    v.get(k)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn subject_matches(sub: &Value, user: &UserInfo, binding_ns: &str) -> bool {
    let name = sub.get("name").and_then(Value::as_str).unwrap_or("");
    match sub.get("kind").and_then(Value::as_str).unwrap_or("") {
        "User" => user.name == name,
        "Group" => user.groups.iter().any(|g| g == name),
        "ServiceAccount" => {
            let ns = sub
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or(binding_ns);
            user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

fn role_rules(st: &State, kind: &str, ns: &str, name: &str) -> Option<Vec<Value>> {
    let (gr, ns) = if kind == "ClusterRole" {
        (
            (
                "rbac.authorization.k8s.io".to_string(),
                "clusterroles".to_string(),
            ),
            "",
        )
    } else {
        (
            ("rbac.authorization.k8s.io".to_string(), "roles".to_string()),
            ns,
        )
    };
    st.store.get(&gr, ns, name).map(|r| {
        r.get("rules")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    })
}

/// The rules that apply to a user in a namespace ("" = cluster-wide rules only).
pub fn rules_for(st: &State, user: &UserInfo, ns: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let crb = (
        "rbac.authorization.k8s.io".to_string(),
        "clusterrolebindings".to_string(),
    );
    for b in st.store.list(&crb, None) {
        if strs_obj(&b, "subjects")
            .iter()
            .any(|s| subject_matches(s, user, ""))
        {
            if let Some(r) = role_rules(
                st,
                "ClusterRole",
                "",
                b.pointer("/roleRef/name")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
            ) {
                out.extend(r);
            }
        }
    }
    if !ns.is_empty() {
        let rb = (
            "rbac.authorization.k8s.io".to_string(),
            "rolebindings".to_string(),
        );
        for b in st.store.list(&rb, Some(ns)) {
            if strs_obj(&b, "subjects")
                .iter()
                .any(|s| subject_matches(s, user, ns))
            {
                let kind = b
                    .pointer("/roleRef/kind")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let name = b
                    .pointer("/roleRef/name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if let Some(r) = role_rules(st, kind, ns, name) {
                    out.extend(r);
                }
            }
        }
    }
    out
}

fn strs_obj(v: &Value, k: &str) -> Vec<Value> {
    v.get(k)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

fn rule_allows(rule: &Value, a: &Attributes) -> bool {
    if !has(&strs(rule, "verbs"), &a.verb) {
        return false;
    }
    if let Some(path) = &a.path {
        return strs(rule, "nonResourceURLs").iter().any(|u| {
            u == "*" || u == path || (u.ends_with('*') && path.starts_with(u.trim_end_matches('*')))
        });
    }
    if !has(&strs(rule, "apiGroups"), &a.group) {
        return false;
    }
    let resources = strs(rule, "resources");
    let combined = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let res_ok = resources.iter().any(|r| {
        r == "*"
            || *r == combined
            || (!a.subresource.is_empty() && *r == format!("*/{}", a.subresource))
    });
    if !res_ok {
        return false;
    }
    let names = strs(rule, "resourceNames");
    names.is_empty() || (!a.name.is_empty() && names.iter().any(|n| *n == a.name))
}

const PUBLIC_PATHS: &[&str] = &["/healthz", "/livez", "/readyz", "/version", "/version/"];
const DISCOVERY_PREFIXES: &[&str] = &["/api", "/apis", "/openapi"];

/// Whether the user may do `a`.
pub fn authorize(st: &State, user: &UserInfo, a: &Attributes) -> bool {
    if user.is_superuser() {
        return true;
    }
    if let Some(p) = &a.path {
        if PUBLIC_PATHS.contains(&p.as_str()) {
            return true;
        }
        if user.authenticated()
            && a.verb == "get"
            && DISCOVERY_PREFIXES
                .iter()
                .any(|d| p == d || p.starts_with(&format!("{d}/")))
        {
            return true;
        }
    }
    if user.authenticated()
        && a.verb == "create"
        && ((a.group == "authorization.k8s.io"
            && (a.resource == "selfsubjectaccessreviews"
                || a.resource == "selfsubjectrulesreviews"))
            || (a.group == "authentication.k8s.io" && a.resource == "selfsubjectreviews"))
    {
        return true;
    }
    rules_for(st, user, &a.namespace)
        .iter()
        .any(|r| rule_allows(r, a))
}

/// The 403 for a refused request, worded like the real server's.
pub fn forbidden(user: &UserInfo, a: &Attributes) -> ApiError {
    if let Some(p) = &a.path {
        let mut e = ApiError::forbidden("", "", "", "");
        e.message = format!(
            "forbidden: User \"{}\" cannot {} path \"{p}\"",
            user.name, a.verb
        );
        e.details = Some(json!({}));
        return e;
    }
    let res = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace \"{}\"", a.namespace)
    };
    let msg = format!(
        "User \"{}\" cannot {} resource \"{res}\" in API group \"{}\" {scope}",
        user.name, a.verb, a.group
    );
    ApiError::forbidden(&a.group, &a.resource, &a.name, &msg)
}

fn covered(held: &[Value], rule: &Value) -> bool {
    let verbs = strs(rule, "verbs");
    let urls = strs(rule, "nonResourceURLs");
    if !urls.is_empty() {
        return verbs.iter().all(|v| {
            urls.iter().all(|u| {
                held.iter().any(|h| {
                    rule_allows(
                        h,
                        &Attributes {
                            verb: v.clone(),
                            path: Some(u.clone()),
                            ..Default::default()
                        },
                    ) || (has(&strs(h, "verbs"), v)
                        && strs(h, "nonResourceURLs").iter().any(|x| x == "*"))
                })
            })
        });
    }
    let groups = strs(rule, "apiGroups");
    let resources = strs(rule, "resources");
    let names = strs(rule, "resourceNames");
    let names: Vec<String> = if names.is_empty() {
        vec![String::new()]
    } else {
        names
    };
    for v in &verbs {
        for g in &groups {
            for r in &resources {
                let (res, sub) = r
                    .split_once('/')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .unwrap_or((r.clone(), String::new()));
                for n in &names {
                    let ok = held.iter().any(|h| {
                        let hv = strs(h, "verbs");
                        let hg = strs(h, "apiGroups");
                        let hr = strs(h, "resources");
                        let hn = strs(h, "resourceNames");
                        has(&hv, v)
                            && has(&hg, g)
                            && hr.iter().any(|x| {
                                x == "*"
                                    || x == r
                                    || (!sub.is_empty() && *x == format!("*/{sub}"))
                                    || (res == "*" && x == "*")
                            })
                            && (hn.is_empty() || (!n.is_empty() && hn.contains(n)))
                    });
                    if !ok {
                        return false;
                    }
                }
            }
        }
    }
    true
}

fn describe_rule(r: &Value) -> String {
    let q = |k: &str| {
        strs(r, k)
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    if !strs(r, "nonResourceURLs").is_empty() {
        return format!(
            "{{NonResourceURLs:[{}], Verbs:[{}]}}",
            q("nonResourceURLs"),
            q("verbs")
        );
    }
    let mut s = format!(
        "{{APIGroups:[{}], Resources:[{}]",
        q("apiGroups"),
        q("resources")
    );
    if !strs(r, "resourceNames").is_empty() {
        s.push_str(&format!(", ResourceNames:[{}]", q("resourceNames")));
    }
    s.push_str(&format!(", Verbs:[{}]}}", q("verbs")));
    s
}

/// Refuses Role/ClusterRole/binding writes that would grant more than the requester holds.
///
/// # Errors
/// 403 Forbidden naming the permissions not held.
pub fn check_escalation(
    st: &State,
    user: &UserInfo,
    rt: &ResourceType,
    obj: &Value,
    old: Option<&Value>,
) -> ApiResult<()> {
    if user.is_superuser() {
        return Ok(());
    }
    let ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let held = rules_for(st, user, &ns);
    let groups = user
        .groups
        .iter()
        .map(|g| format!("{g:?}"))
        .collect::<Vec<_>>()
        .join(" ");
    let refuse = |missing: Vec<&Value>| -> ApiError {
        let list = missing
            .iter()
            .map(|r| describe_rule(r))
            .collect::<Vec<_>>()
            .join("\n");
        ApiError::forbidden(
            &rt.group,
            &rt.plural,
            &name,
            &format!("user {:?} (groups=[{groups}]) is attempting to grant RBAC permissions not currently held:\n{list}", user.name),
        )
    };
    match rt.kind.as_str() {
        "Role" | "ClusterRole" => {
            let a = Attributes {
                verb: "escalate".into(),
                group: rt.group.clone(),
                resource: rt.plural.clone(),
                name: name.clone(),
                namespace: ns.clone(),
                ..Default::default()
            };
            if authorize(st, user, &a) {
                return Ok(());
            }
            let rules = strs_obj(obj, "rules");
            let missing: Vec<&Value> = rules.iter().filter(|r| !covered(&held, r)).collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(refuse(missing))
            }
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            if old.is_some_and(|o| o.get("roleRef") == obj.get("roleRef")) {
                return Ok(());
            }
            let kind = obj
                .pointer("/roleRef/kind")
                .and_then(Value::as_str)
                .unwrap_or("");
            let rname = obj
                .pointer("/roleRef/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let resource = if kind == "ClusterRole" {
                "clusterroles"
            } else {
                "roles"
            };
            let a = Attributes {
                verb: "bind".into(),
                group: "rbac.authorization.k8s.io".into(),
                resource: resource.into(),
                name: rname.into(),
                namespace: ns.clone(),
                ..Default::default()
            };
            if authorize(st, user, &a) {
                return Ok(());
            }
            let Some(rules) = role_rules(st, kind, &ns, rname) else {
                return Err(ApiError::forbidden(
                    &rt.group,
                    &rt.plural,
                    &name,
                    &format!("{}.rbac.authorization.k8s.io {rname:?} not found", resource),
                ));
            };
            let missing: Vec<&Value> = rules.iter().filter(|r| !covered(&held, r)).collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(refuse(missing))
            }
        }
        _ => Ok(()),
    }
}

/// Answers SelfSubjectAccessReview, SelfSubjectRulesReview, SubjectAccessReview,
/// LocalSubjectAccessReview, SelfSubjectReview and TokenReview requests.
///
/// # Errors
/// 400 for an unknown review kind.
pub fn review(
    st: &State,
    user: &UserInfo,
    rt: &ResourceType,
    body: &Value,
    url_ns: Option<&str>,
) -> ApiResult<Value> {
    let mut out = body.clone();
    out["apiVersion"] = Value::String(rt.api_version());
    out["kind"] = Value::String(rt.kind.clone());
    let attrs = |spec: &Value| -> Attributes {
        if let Some(ra) = spec.get("resourceAttributes") {
            let g = |k: &str| ra.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            Attributes {
                verb: g("verb"),
                group: g("group"),
                resource: g("resource"),
                subresource: g("subresource"),
                name: g("name"),
                namespace: g("namespace"),
                path: None,
            }
        } else {
            let na = spec
                .get("nonResourceAttributes")
                .cloned()
                .unwrap_or(json!({}));
            Attributes {
                verb: na
                    .get("verb")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                path: Some(
                    na.get("path")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                ),
                ..Default::default()
            }
        }
    };
    let spec = body.get("spec").cloned().unwrap_or(json!({}));
    match rt.kind.as_str() {
        "SelfSubjectAccessReview" => {
            let allowed = authorize(st, user, &attrs(&spec));
            out["status"] = json!({"allowed": allowed});
        }
        "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            let subject = UserInfo {
                name: spec
                    .get("user")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                uid: spec
                    .get("uid")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                groups: strs(&spec, "groups"),
            };
            let mut a = attrs(&spec);
            if let Some(ns) = url_ns {
                a.namespace = ns.to_string();
            }
            out["status"] = json!({"allowed": authorize(st, &subject, &a)});
        }
        "SelfSubjectRulesReview" => {
            let ns = spec.get("namespace").and_then(Value::as_str).unwrap_or("");
            let mut resource_rules = Vec::new();
            let mut non_resource = Vec::new();
            if user.is_superuser() {
                resource_rules
                    .push(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}));
                non_resource.push(json!({"verbs": ["*"], "nonResourceURLs": ["*"]}));
            }
            for r in rules_for(st, user, ns) {
                if r.get("nonResourceURLs")
                    .is_some_and(|u| u.as_array().is_some_and(|a| !a.is_empty()))
                {
                    non_resource.push(r);
                } else {
                    resource_rules.push(r);
                }
            }
            resource_rules.push(json!({"verbs": ["create"], "apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]}));
            non_resource.push(json!({"verbs": ["get"], "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz", "/version", "/version/"]}));
            out["status"] = json!({"resourceRules": resource_rules, "nonResourceRules": non_resource, "incomplete": false});
        }
        "SelfSubjectReview" => {
            let mut ui = json!({"username": user.name, "groups": user.groups});
            if !user.uid.is_empty() {
                ui["uid"] = Value::String(user.uid.clone());
            }
            out["status"] = json!({"userInfo": ui});
        }
        "TokenReview" => {
            let token = spec.get("token").and_then(Value::as_str).unwrap_or("");
            out["status"] = match st.tokens.lookup(token) {
                Some(u) => {
                    json!({"authenticated": true, "user": {"username": u.name, "uid": u.uid, "groups": u.groups}})
                }
                None => json!({"authenticated": false}),
            };
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "unsupported review kind {other}"
            )))
        }
    }
    if out.get("metadata").is_none() {
        out["metadata"] = json!({});
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_subresources_and_names() {
        let rule = json!({"verbs": ["get", "patch"], "apiGroups": ["dataprotection.kubeblocks.io"], "resources": ["backups/status"], "resourceNames": ["b1"]});
        let a = Attributes {
            verb: "patch".into(),
            group: "dataprotection.kubeblocks.io".into(),
            resource: "backups".into(),
            subresource: "status".into(),
            name: "b1".into(),
            namespace: "ns".into(),
            path: None,
        };
        assert!(rule_allows(&rule, &a));
        let b = Attributes {
            name: "b2".into(),
            ..a.clone()
        };
        assert!(!rule_allows(&rule, &b));
        let c = Attributes {
            subresource: String::new(),
            ..a.clone()
        };
        assert!(!rule_allows(&rule, &c));
    }

    #[test]
    fn coverage_requires_every_atom() {
        let held =
            vec![json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]})];
        assert!(covered(
            &held,
            &json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]})
        ));
        assert!(!covered(
            &held,
            &json!({"verbs": ["delete"], "apiGroups": [""], "resources": ["pods"]})
        ));
        assert!(!covered(
            &held,
            &json!({"verbs": ["*"], "apiGroups": [""], "resources": ["pods"]})
        ));
    }
}
