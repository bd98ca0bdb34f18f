//! Discovery documents: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/<g>`,
//! `/apis/<g>/<v>`, and the aggregated form (`apidiscovery.k8s.io/v2`) that kubectl asks
//! for first. Generated from the registry, so CRDs appear and disappear as they are
//! written and deleted.

use crate::resource::{Registry, ResourceType};
use serde_json::{json, Value};

/// The Kubernetes version kube-sim answers as.
pub const MINOR: &str = "33";

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1", "minor": MINOR, "emulationMajor": "1", "emulationMinor": MINOR,
        "minCompatibilityMajor": "1", "minCompatibilityMinor": "32",
        "gitVersion": format!("v1.{MINOR}.0"), "gitCommit": "kube-sim", "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z", "goVersion": "go1.24.2", "compiler": "gc", "platform": "linux/amd64"
    })
}

/// `(kind, group, version, verbs)` of a subresource.
fn subresource(
    rt: &ResourceType,
    sub: &str,
) -> (
    String,
    Option<(&'static str, &'static str)>,
    Vec<&'static str>,
) {
    let same = rt.kind.clone();
    match sub {
        "status" | "ephemeralcontainers" | "resize" => (same, None, vec!["get", "patch", "update"]),
        "scale" => (
            "Scale".into(),
            Some(("autoscaling", "v1")),
            vec!["get", "patch", "update"],
        ),
        "log" => (same, None, vec!["get"]),
        "exec" => ("PodExecOptions".into(), None, vec!["create", "get"]),
        "attach" => ("PodAttachOptions".into(), None, vec!["create", "get"]),
        "portforward" => ("PodPortForwardOptions".into(), None, vec!["create", "get"]),
        "binding" => ("Binding".into(), None, vec!["create"]),
        "eviction" => ("Eviction".into(), Some(("policy", "v1")), vec!["create"]),
        "token" => (
            "TokenRequest".into(),
            Some(("authentication.k8s.io", "v1")),
            vec!["create"],
        ),
        "finalize" => (same, None, vec!["update"]),
        "proxy" => (
            format!("{}ProxyOptions", rt.kind),
            None,
            vec!["create", "delete", "get", "patch", "update"],
        ),
        _ => (same, None, vec!["get"]),
    }
}

fn resource_entries(rt: &ResourceType) -> Vec<Value> {
    let mut main = json!({
        "name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced,
        "kind": rt.kind, "verbs": rt.verbs,
    });
    if !rt.short_names.is_empty() {
        main["shortNames"] = json!(rt.short_names);
    }
    if !rt.categories.is_empty() {
        main["categories"] = json!(rt.categories);
    }
    let mut out = vec![main];
    for sub in &rt.subresources {
        let (kind, gv, verbs) = subresource(rt, sub);
        let mut e = json!({"name": format!("{}/{sub}", rt.plural), "singularName": "", "namespaced": rt.namespaced, "kind": kind, "verbs": verbs});
        if let Some((g, v)) = gv {
            e["group"] = json!(g);
            e["version"] = json!(v);
        }
        out.push(e);
    }
    out
}

/// `/api` (APIVersions).
pub fn core_versions(server: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}]})
}

/// An APIResourceList for one group/version (None if nothing is served there).
pub fn resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let types = reg.in_group_version(group, version);
    if types.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let resources: Vec<Value> = types.iter().flat_map(|t| resource_entries(t)).collect();
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn group_entry(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": vs, "preferredVersion": vs[0]})
}

/// `/apis` (APIGroupList).
pub fn group_list(reg: &Registry) -> Value {
    let groups: Vec<Value> = reg
        .groups()
        .iter()
        .map(|(g, vs)| group_entry(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>` (APIGroup).
pub fn group(reg: &Registry, group: &str) -> Option<Value> {
    reg.groups()
        .iter()
        .find(|(g, _)| g == group)
        .map(|(g, vs)| {
            let mut e = group_entry(g, vs);
            e["kind"] = json!("APIGroup");
            e["apiVersion"] = json!("v1");
            e
        })
}

fn aggregated_resource(rt: &ResourceType) -> Value {
    let mut r = json!({
        "resource": rt.plural,
        "responseKind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
        "scope": if rt.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": rt.singular,
        "verbs": rt.verbs,
    });
    if !rt.short_names.is_empty() {
        r["shortNames"] = json!(rt.short_names);
    }
    if !rt.categories.is_empty() {
        r["categories"] = json!(rt.categories);
    }
    let subs: Vec<Value> = rt
        .subresources
        .iter()
        .map(|s| {
            let (kind, gv, verbs) = subresource(rt, s);
            let (g, v) = gv.unwrap_or((rt.group.as_str(), rt.version.as_str()));
            json!({"subresource": s, "responseKind": {"group": g, "version": v, "kind": kind}, "verbs": verbs})
        })
        .collect();
    if !subs.is_empty() {
        r["subresources"] = json!(subs);
    }
    r
}

/// The aggregated discovery document for `/api` (core) or `/apis` (named groups).
pub fn aggregated(reg: &Registry, core: bool, api_version: &str) -> Value {
    let mut items = Vec::new();
    let groups: Vec<(String, Vec<String>)> = if core {
        vec![(String::new(), vec!["v1".to_string()])]
    } else {
        reg.groups()
    };
    for (g, vs) in groups {
        let versions: Vec<Value> = vs
            .iter()
            .map(|v| {
                let res: Vec<Value> = reg
                    .in_group_version(&g, v)
                    .iter()
                    .map(|t| aggregated_resource(t))
                    .collect();
                json!({"version": v, "resources": res, "freshness": "Current"})
            })
            .collect();
        items.push(
            json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": versions}),
        );
    }
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": api_version, "metadata": {}, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_lists_pods_with_subresources() {
        let reg = Registry::builtin();
        let l = resource_list(&reg, "", "v1").unwrap();
        let names: Vec<&str> = l["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(
            names.contains(&"pods")
                && names.contains(&"pods/log")
                && names.contains(&"serviceaccounts/token")
        );
        let g = group_list(&reg);
        assert!(g["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["name"] == "batch"));
    }
}
