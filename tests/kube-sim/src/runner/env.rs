//! A container's environment and command line, built as the kubelet builds them:
//! `envFrom` sources first (ConfigMaps and Secrets, with `prefix`; keys that are not valid
//! variable names are skipped), then `env` in order, each `value` `$(VAR)`-expanded
//! against the variables defined before it and the service variables, `valueFrom` read
//! from Secrets, ConfigMaps, the pod's fields and the container's resources. A missing
//! Secret, ConfigMap or key that is not `optional` stops the container with the kubelet's
//! words (`secret "x" not found`, `couldn't find key k in Secret ns/x`), reported as
//! `CreateContainerConfigError`. The runtime then adds `PATH` (containerd's default, as
//! our images set none), `HOSTNAME`, and the `KUBERNETES_SERVICE_*`/`KUBERNETES_PORT*`
//! variables pointing at kube-sim (pods share the host network, so 127.0.0.1 and the API
//! server's real port).

use super::expand::expand;
use crate::cluster::Cluster;
use base64::Engine;
use serde_json::Value;
use std::collections::HashMap;

/// Default PATH of containerd for images without one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Reads a Secret's or ConfigMap's string data (Secret values base64-decoded).
pub trait Source {
    /// `kind` is `Secret` or `ConfigMap`; None when the object does not exist.
    fn data(&self, kind: &str, namespace: &str, name: &str) -> Option<HashMap<String, Vec<u8>>>;
}

impl Source for Cluster {
    fn data(&self, kind: &str, namespace: &str, name: &str) -> Option<HashMap<String, Vec<u8>>> {
        let plural = if kind == "Secret" {
            "secrets"
        } else {
            "configmaps"
        };
        let t = self.target("", "v1", plural, Some(namespace)).ok()?;
        let obj = self.get(&t, name).ok()?;
        Some(object_data(kind, &obj))
    }
}

/// The data of a Secret (decoded) or ConfigMap (`data` and `binaryData`).
pub fn object_data(kind: &str, obj: &Value) -> HashMap<String, Vec<u8>> {
    let mut out = HashMap::new();
    let b64 = base64::engine::general_purpose::STANDARD;
    if let Some(d) = obj.get("data").and_then(Value::as_object) {
        for (k, v) in d {
            let s = v.as_str().unwrap_or("");
            let bytes = if kind == "Secret" {
                b64.decode(s).unwrap_or_default()
            } else {
                s.as_bytes().to_vec()
            };
            out.insert(k.clone(), bytes);
        }
    }
    if kind == "ConfigMap" {
        if let Some(d) = obj.get("binaryData").and_then(Value::as_object) {
            for (k, v) in d {
                out.insert(
                    k.clone(),
                    b64.decode(v.as_str().unwrap_or("")).unwrap_or_default(),
                );
            }
        }
    }
    out
}

fn lower(kind: &str) -> &'static str {
    if kind == "Secret" {
        "secret"
    } else {
        "configmap"
    }
}

/// Whether `name` can be an environment variable name (printable ASCII without `=`, as
/// Kubernetes 1.33 allows).
pub fn valid_env_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (32..=126).contains(&b) && b != b'=')
}

/// A quantity (`500m`, `2`, `1Gi`, `1e3`) as a number.
pub fn quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let suffixes: [(&str, f64); 14] = [
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
    ];
    for (s, mult) in suffixes {
        if let Some(n) = q.strip_suffix(s) {
            return n.parse::<f64>().ok().map(|x| x * mult);
        }
    }
    if let Some(n) = q.strip_suffix('E') {
        return n.parse::<f64>().ok().map(|x| x * 1e18);
    }
    q.parse::<f64>().ok()
}

/// The value of a downward-API field path for a pod (`metadata.labels['k']` style paths
/// included; whole `metadata.labels`/`annotations` as the volume format `k="v"` lines).
///
/// # Errors
/// An unsupported path.
pub fn field_ref(pod: &Value, path: &str) -> Result<String, String> {
    let s = |p: &str| {
        pod.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let map_lines = |p: &str| {
        let mut kv: Vec<(String, String)> = pod
            .pointer(p)
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        kv.sort();
        kv.iter()
            .map(|(k, v)| format!("{k}={}", serde_json::to_string(v).unwrap_or_default()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let subscript = |prefix: &str| -> Option<String> {
        let rest = path
            .strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")?;
        Some(rest.to_string())
    };
    if let Some(k) = subscript("metadata.labels") {
        return Ok(pod
            .pointer("/metadata/labels")
            .and_then(|m| m.get(&k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string());
    }
    if let Some(k) = subscript("metadata.annotations") {
        return Ok(pod
            .pointer("/metadata/annotations")
            .and_then(|m| m.get(&k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string());
    }
    Ok(match path {
        "metadata.name" => s("/metadata/name"),
        "metadata.namespace" => s("/metadata/namespace"),
        "metadata.uid" => s("/metadata/uid"),
        "metadata.labels" => map_lines("/metadata/labels"),
        "metadata.annotations" => map_lines("/metadata/annotations"),
        "spec.nodeName" => s("/spec/nodeName"),
        "spec.serviceAccountName" => {
            let v = s("/spec/serviceAccountName");
            if v.is_empty() {
                "default".into()
            } else {
                v
            }
        }
        "status.hostIP" | "status.podIP" => "127.0.0.1".into(),
        "status.hostIPs" | "status.podIPs" => "127.0.0.1".into(),
        other => return Err(format!("unsupported fieldPath: {other}")),
    })
}

/// The value of a `resourceFieldRef` for a container (limits default to the node's
/// allocatable, requests to 0), divided by the divisor and rounded up.
///
/// # Errors
/// An unsupported resource or a bad divisor.
pub fn resource_field_ref(
    container: &Value,
    resource: &str,
    divisor: Option<&str>,
) -> Result<String, String> {
    let (section, name) = resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported container resource : {resource}"))?;
    if !["limits", "requests"].contains(&section)
        || !["cpu", "memory", "ephemeral-storage"].contains(&name)
    {
        return Err(format!("unsupported container resource : {resource}"));
    }
    let set = container
        .pointer(&format!("/resources/{section}/{name}"))
        .and_then(Value::as_str)
        .and_then(quantity);
    let node = |n: &str| match n {
        "cpu" => 2.0,
        "memory" => 24.0 * 1024f64.powi(3),
        _ => 100.0 * 1024f64.powi(3),
    };
    let value = match (set, section) {
        (Some(v), _) => v,
        (None, "limits") => node(name),
        (None, _) => container
            .pointer(&format!("/resources/limits/{name}"))
            .and_then(Value::as_str)
            .and_then(quantity)
            .unwrap_or(0.0),
    };
    let div = match divisor.filter(|d| !d.is_empty()) {
        Some(d) => quantity(d)
            .filter(|x| *x > 0.0)
            .ok_or_else(|| format!("invalid divisor {d}"))?,
        None => 1.0,
    };
    // Rounding up, with a little slack for binary floating point (1.5/0.5 is 3).
    let q = value / div;
    let r = (q - 1e-9).ceil().max(0.0);
    Ok(format!("{}", r as i64))
}

/// The service variables of the in-cluster API endpoint.
pub fn service_env(api_port: u16) -> Vec<(String, String)> {
    let p = api_port.to_string();
    vec![
        ("KUBERNETES_SERVICE_HOST".into(), "127.0.0.1".into()),
        ("KUBERNETES_SERVICE_PORT".into(), p.clone()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), p.clone()),
        ("KUBERNETES_PORT".into(), format!("tcp://127.0.0.1:{p}")),
        (
            format!("KUBERNETES_PORT_{p}_TCP"),
            format!("tcp://127.0.0.1:{p}"),
        ),
        (format!("KUBERNETES_PORT_{p}_TCP_PROTO"), "tcp".into()),
        (format!("KUBERNETES_PORT_{p}_TCP_PORT"), p.clone()),
        (format!("KUBERNETES_PORT_{p}_TCP_ADDR"), "127.0.0.1".into()),
    ]
}

/// What failed while building a container's environment (the container's
/// `CreateContainerConfigError` message).
pub type ConfigError = String;

/// The container's variables as `(name, value)` in definition order, then the runtime's.
///
/// # Errors
/// A missing required Secret/ConfigMap/key, or a bad field reference.
pub fn container_env(
    src: &dyn Source,
    pod: &Value,
    container: &Value,
    service: &[(String, String)],
    hostname: &str,
) -> Result<Vec<(String, String)>, ConfigError> {
    let ns = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut order: Vec<String> = Vec::new();
    let mut vars: HashMap<String, String> = HashMap::new();
    let set =
        |order: &mut Vec<String>, vars: &mut HashMap<String, String>, k: String, v: String| {
            if !vars.contains_key(&k) {
                order.push(k.clone());
            }
            vars.insert(k, v);
        };
    for from in container
        .get("envFrom")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let prefix = from.get("prefix").and_then(Value::as_str).unwrap_or("");
        let (kind, r) = if let Some(r) = from.get("configMapRef") {
            ("ConfigMap", r)
        } else if let Some(r) = from.get("secretRef") {
            ("Secret", r)
        } else {
            continue;
        };
        let name = r.get("name").and_then(Value::as_str).unwrap_or("");
        let optional = r.get("optional").and_then(Value::as_bool).unwrap_or(false);
        let Some(data) = src.data(kind, ns, name) else {
            if optional {
                continue;
            }
            return Err(format!("{} {name:?} not found", lower(kind)));
        };
        let mut keys: Vec<&String> = data.keys().collect();
        keys.sort();
        for k in keys {
            let full = format!("{prefix}{k}");
            if !valid_env_name(&full) {
                continue;
            }
            set(
                &mut order,
                &mut vars,
                full,
                String::from_utf8_lossy(&data[k]).into_owned(),
            );
        }
    }
    let service_map: HashMap<&str, &str> = service
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for e in container
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = e
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if name.is_empty() {
            continue;
        }
        let value = if let Some(v) = e.get("value").and_then(Value::as_str) {
            let lookup = |n: &str| {
                vars.get(n)
                    .cloned()
                    .or_else(|| service_map.get(n).map(|s| s.to_string()))
            };
            expand(v, &lookup)
        } else if let Some(vf) = e.get("valueFrom") {
            let key_ref = |kind: &str, r: &Value| -> Result<Option<String>, String> {
                let name = r.get("name").and_then(Value::as_str).unwrap_or("");
                let key = r.get("key").and_then(Value::as_str).unwrap_or("");
                let optional = r.get("optional").and_then(Value::as_bool).unwrap_or(false);
                let Some(data) = src.data(kind, ns, name) else {
                    return if optional {
                        Ok(None)
                    } else {
                        Err(format!("{} {name:?} not found", lower(kind)))
                    };
                };
                match data.get(key) {
                    Some(b) => Ok(Some(String::from_utf8_lossy(b).into_owned())),
                    None if optional => Ok(None),
                    None => Err(format!("couldn't find key {key} in {kind} {ns}/{name}")),
                }
            };
            if let Some(r) = vf.get("secretKeyRef") {
                match key_ref("Secret", r)? {
                    Some(v) => v,
                    None => continue,
                }
            } else if let Some(r) = vf.get("configMapKeyRef") {
                match key_ref("ConfigMap", r)? {
                    Some(v) => v,
                    None => continue,
                }
            } else if let Some(r) = vf.get("fieldRef") {
                field_ref(
                    pod,
                    r.get("fieldPath").and_then(Value::as_str).unwrap_or(""),
                )?
            } else if let Some(r) = vf.get("resourceFieldRef") {
                let cname = r.get("containerName").and_then(Value::as_str).unwrap_or("");
                let target = if cname.is_empty() {
                    Some(container.clone())
                } else {
                    find_container(pod, cname)
                };
                let target = target.ok_or_else(|| format!("container {cname} not found"))?;
                resource_field_ref(
                    &target,
                    r.get("resource").and_then(Value::as_str).unwrap_or(""),
                    r.get("divisor").and_then(Value::as_str),
                )?
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        set(&mut order, &mut vars, name, value);
    }
    let mut out: Vec<(String, String)> = Vec::new();
    if !vars.contains_key("PATH") {
        out.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    if !vars.contains_key("HOSTNAME") {
        out.push(("HOSTNAME".into(), hostname.to_string()));
    }
    let enable_links = pod
        .pointer("/spec/enableServiceLinks")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    for (k, v) in service {
        // The API server's service variables are always set; others only with links.
        let always = k.starts_with("KUBERNETES_SERVICE_") || k.starts_with("KUBERNETES_PORT");
        if (always || enable_links) && !vars.contains_key(k) {
            out.push((k.clone(), v.clone()));
        }
    }
    if !vars.contains_key("HOME") {
        let home = match container
            .pointer("/securityContext/runAsUser")
            .or_else(|| pod.pointer("/spec/securityContext/runAsUser"))
            .and_then(Value::as_u64)
        {
            Some(u) if u != 0 => "/",
            _ => "/root",
        };
        out.push(("HOME".into(), home.into()));
    }
    for k in order {
        let v = vars.remove(&k).unwrap_or_default();
        out.push((k, v));
    }
    Ok(out)
}

/// A container (or init container) of a pod by name.
pub fn find_container(pod: &Value, name: &str) -> Option<Value> {
    ["containers", "initContainers"].iter().find_map(|l| {
        pod.pointer(&format!("/spec/{l}"))
            .and_then(Value::as_array)
            .and_then(|a| {
                a.iter()
                    .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
                    .cloned()
            })
    })
}

/// `command` + `args`, `$(VAR)`-expanded with the container's final environment.
pub fn command_line(container: &Value, env: &[(String, String)]) -> Vec<String> {
    let map: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let lookup = |n: &str| map.get(n).map(|s| s.to_string());
    let list = |f: &str| -> Vec<String> {
        container
            .get(f)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|s| expand(s, &lookup))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut argv = list("command");
    argv.extend(list("args"));
    argv
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Fake;
    impl Source for Fake {
        fn data(&self, kind: &str, _ns: &str, name: &str) -> Option<HashMap<String, Vec<u8>>> {
            match (kind, name) {
                ("Secret", "db") => Some(HashMap::from([
                    ("password".to_string(), b"s3cret".to_vec()),
                    ("user".to_string(), b"admin".to_vec()),
                    ("bad=key".to_string(), b"x".to_vec()),
                ])),
                ("ConfigMap", "cfg") => {
                    Some(HashMap::from([("mode".to_string(), b"fast".to_vec())]))
                }
                _ => None,
            }
        }
    }

    fn pod() -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"app": "db"}, "annotations": {"a/b": "c"}},
            "spec": {"nodeName": "kube-sim", "serviceAccountName": "worker"}})
    }

    fn env_of(c: Value) -> Result<HashMap<String, String>, String> {
        container_env(&Fake, &pod(), &c, &service_env(6443), "p").map(|v| v.into_iter().collect())
    }

    #[test]
    fn values_refs_fields_and_expansion() {
        let c = json!({"name": "c",
            "envFrom": [{"secretRef": {"name": "db"}, "prefix": "DB_"}, {"configMapRef": {"name": "cfg"}}],
            "env": [
                {"name": "A", "value": "a"},
                {"name": "B", "value": "$(A)-$(MODE)-$(DB_user)-$(NOPE)-$$(A)-$(KUBERNETES_SERVICE_PORT)"},
                {"name": "C", "value": "$(D)"},
                {"name": "D", "value": "d"},
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                {"name": "M", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
                {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "missing", "key": "k", "optional": true}}},
                {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "ANN", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['a/b']"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}}},
            ],
            "resources": {"limits": {"memory": "512Mi"}, "requests": {"cpu": "250m"}}});
        let e = env_of(c).unwrap();
        assert_eq!(e["DB_password"], "s3cret");
        assert_eq!(e["MODE"], "fast");
        assert!(!e.contains_key("DB_bad=key"));
        assert_eq!(e["B"], "a-fast-admin-$(NOPE)-$(A)-6443");
        assert_eq!(e["C"], "$(D)", "only variables defined before are expanded");
        assert_eq!(e["PW"], "s3cret");
        assert_eq!(e["M"], "fast");
        assert!(!e.contains_key("OPT"));
        assert_eq!(
            (e["NAME"].as_str(), e["NS"].as_str(), e["UID"].as_str()),
            ("p", "ns", "u-1")
        );
        assert_eq!((e["APP"].as_str(), e["ANN"].as_str()), ("db", "c"));
        assert_eq!(
            (e["NODE"].as_str(), e["SA"].as_str(), e["IP"].as_str()),
            ("kube-sim", "worker", "127.0.0.1")
        );
        assert_eq!((e["MEM"].as_str(), e["CPU"].as_str()), ("512", "250"));
        assert_eq!(e["KUBERNETES_SERVICE_HOST"], "127.0.0.1");
        assert_eq!(e["PATH"], DEFAULT_PATH);
        assert_eq!(e["HOSTNAME"], "p");
    }

    #[test]
    fn missing_required_sources_give_the_kubelets_messages() {
        let one = |env: Value| env_of(json!({"name": "c", "env": [env]})).unwrap_err();
        assert_eq!(
            one(json!({"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}})),
            "secret \"nope\" not found"
        );
        assert_eq!(
            one(json!({"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "k"}}})),
            "couldn't find key k in Secret ns/db"
        );
        assert_eq!(
            one(
                json!({"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}}})
            ),
            "configmap \"nope\" not found"
        );
        assert_eq!(
            one(
                json!({"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}})
            ),
            "couldn't find key k in ConfigMap ns/cfg"
        );
        let e =
            env_of(json!({"name": "c", "envFrom": [{"secretRef": {"name": "nope"}}]})).unwrap_err();
        assert_eq!(e, "secret \"nope\" not found");
        assert!(env_of(
            json!({"name": "c", "envFrom": [{"secretRef": {"name": "nope", "optional": true}}]})
        )
        .is_ok());
    }

    #[test]
    fn command_and_args_are_expanded_with_the_final_environment() {
        let c = json!({"command": ["sh", "-c", "echo $(GREETING) $$(X) $(UNSET)"], "args": ["$(GREETING)"]});
        let argv = command_line(&c, &[("GREETING".into(), "hi".into())]);
        assert_eq!(argv, ["sh", "-c", "echo hi $(X) $(UNSET)", "hi"]);
    }

    #[test]
    fn resource_refs_default_to_the_node_and_round_up() {
        let c = json!({"resources": {"limits": {"cpu": "1500m"}}});
        assert_eq!(resource_field_ref(&c, "limits.cpu", None).unwrap(), "2");
        assert_eq!(
            resource_field_ref(&c, "limits.cpu", Some("500m")).unwrap(),
            "3"
        );
        assert_eq!(
            resource_field_ref(&c, "requests.cpu", Some("1m")).unwrap(),
            "1500"
        );
        assert_eq!(
            resource_field_ref(&json!({}), "limits.memory", Some("1Gi")).unwrap(),
            "24"
        );
        assert_eq!(
            resource_field_ref(&json!({}), "requests.memory", None).unwrap(),
            "0"
        );
        assert!(resource_field_ref(&json!({}), "limits.gpu", None).is_err());
    }
}
