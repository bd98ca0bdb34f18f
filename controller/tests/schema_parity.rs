//! Schema parity with KubeBlocks' own CRDs (`config/crd/bases` of apecloud/kubeblocks).
//!
//! Ignored by default: it needs KubeBlocks' sources, which the project does not carry (they
//! are AGPL; their YAML is read here, never copied). Run it with
//!
//! ```text
//! KUBEBLOCKS_CRD_DIR=/path/to/kubeblocks/config/crd/bases \
//!     cargo test -p dprepo-controller --test schema_parity -- --ignored --nocapture
//! ```
//!
//! For every kind both serve it compares, property path by property path: type, required,
//! enum, default, `x-kubernetes-preserve-unknown-fields`, int-or-string, pattern,
//! minimum/maximum, minItems/maxItems, minLength/maxLength and CEL rules; and per CRD:
//! scope, short names, categories, listKind, printer columns and subresources. Every
//! difference is printed; the test fails on any difference that is not in [`JUSTIFIED`]
//! with its reason.
//!
//! Not compared, and different on purpose:
//! - descriptions (ours are our own words; Kubernetes' types keep Kubernetes' text);
//! - `format: int64` on the Restore readiness probe's seconds, which Go declares as `int`
//!   (controller-gen writes no format): the same values are valid;
//! - `x-kubernetes-map-type: atomic` and `x-kubernetes-list-type` on Kubernetes' own types
//!   (k8s-openapi's schemas do not carry them): they change how server-side apply merges
//!   those fields, never what is valid. Our own `parameters` lists do carry
//!   `x-kubernetes-list-type: map` keyed by `name`, as KubeBlocks declares them.
//!
//! Last run (KubeBlocks 13138f46): 7 kinds compared, 13 differences, all justified below;
//! BackupPolicyTemplate is KubeBlocks' only dataprotection kind not served.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::Value;

/// Differences we keep on purpose, each with its reason: (kind or `*`, path suffix or
/// `*`, aspect, reason).
const JUSTIFIED: &[(&str, &str, &str, &str)] = &[
    (
        "*",
        "",
        "required",
        "the root requires `spec`: kube's derive makes `spec` a plain field of the root type, \
         and every object the server accepts must decode, so a spec-less object is refused \
         at apply time instead of breaking the controller's watch. KubeBlocks' CRDs accept \
         one, but it has no meaning: for six of the seven kinds the spec has required \
         fields (their absence is only not checked when spec itself is absent), and an \
         empty StorageProvider provides nothing.",
    ),
    (
        "*",
        ".claims[].request",
        "only in ours",
        "ResourceClaim.request is a Kubernetes 1.31 field; KubeBlocks' CRDs are generated from \
         k8s.io/api v0.29, ours from k8s-openapi's v1_33 types. A superset: nothing KubeBlocks \
         accepts is refused.",
    ),
    (
        "*",
        ".volumeMounts[].recursiveReadOnly",
        "only in ours",
        "VolumeMount.recursiveReadOnly is a Kubernetes 1.30 field (see claims[].request).",
    ),
];

#[derive(Debug, Default, PartialEq, Clone)]
struct Facts {
    ty: Option<String>,
    required: BTreeSet<String>,
    enumeration: Option<Vec<Value>>,
    default: Option<Value>,
    preserve_unknown: bool,
    int_or_string: bool,
    pattern: Option<String>,
    minimum: Option<Value>,
    maximum: Option<Value>,
    min_items: Option<Value>,
    max_items: Option<Value>,
    min_length: Option<Value>,
    max_length: Option<Value>,
    rules: BTreeSet<(String, String)>,
}

fn facts(s: &Value) -> Facts {
    // Bounds compare as numbers: k8s-openapi holds minimum/maximum as f64 (`0.0`),
    // controller-gen writes integers (`0`).
    let get = |k: &str| {
        s.get(k).cloned().map(|v| match v.as_f64() {
            Some(f) => serde_json::json!(f),
            None => v,
        })
    };
    // controller-gen writes an enum given twice (on the type and the field) as allOf.
    let mut enumeration = s.get("enum").and_then(Value::as_array).cloned();
    if enumeration.is_none() {
        if let Some(all) = s.get("allOf").and_then(Value::as_array) {
            enumeration = all
                .iter()
                .find_map(|sub| sub.get("enum").and_then(Value::as_array).cloned());
        }
    }
    let rules = s
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    (
                        r["rule"].as_str().unwrap_or_default().to_string(),
                        r["message"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Facts {
        ty: s.get("type").and_then(Value::as_str).map(str::to_string),
        required: s
            .get("required")
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        enumeration,
        default: get("default"),
        preserve_unknown: s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)),
        int_or_string: s.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)),
        pattern: s.get("pattern").and_then(Value::as_str).map(str::to_string),
        minimum: get("minimum"),
        maximum: get("maximum"),
        min_items: get("minItems"),
        max_items: get("maxItems"),
        min_length: get("minLength"),
        max_length: get("maxLength"),
        rules,
    }
}

fn flatten(s: &Value, path: String, out: &mut BTreeMap<String, Facts>) {
    out.insert(path.clone(), facts(s));
    if let Some(Value::Object(props)) = s.get("properties") {
        for (k, sub) in props {
            flatten(sub, format!("{path}.{k}"), out);
        }
    }
    if let Some(items) = s.get("items") {
        flatten(items, format!("{path}[]"), out);
    }
    if let Some(extra @ Value::Object(_)) = s.get("additionalProperties") {
        flatten(extra, format!("{path}{{}}"), out);
    }
}

fn schema_of(crd: &Value) -> &Value {
    &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
}

fn compare_facts(kind: &str, path: &str, ours: &Facts, theirs: &Facts, out: &mut Vec<Diff>) {
    let mut aspect = |name: &str, a: String, b: String| {
        if a != b {
            out.push(Diff {
                kind: kind.to_string(),
                path: path.to_string(),
                aspect: name.to_string(),
                detail: format!("ours {a}, KubeBlocks {b}"),
            });
        }
    };
    aspect("type", format!("{:?}", ours.ty), format!("{:?}", theirs.ty));
    aspect(
        "required",
        format!("{:?}", ours.required),
        format!("{:?}", theirs.required),
    );
    aspect(
        "enum",
        format!("{:?}", ours.enumeration),
        format!("{:?}", theirs.enumeration),
    );
    aspect(
        "default",
        format!("{:?}", ours.default),
        format!("{:?}", theirs.default),
    );
    aspect(
        "preserve-unknown-fields",
        ours.preserve_unknown.to_string(),
        theirs.preserve_unknown.to_string(),
    );
    aspect(
        "int-or-string",
        ours.int_or_string.to_string(),
        theirs.int_or_string.to_string(),
    );
    aspect(
        "pattern",
        format!("{:?}", ours.pattern),
        format!("{:?}", theirs.pattern),
    );
    aspect(
        "minimum",
        format!("{:?}", ours.minimum),
        format!("{:?}", theirs.minimum),
    );
    aspect(
        "maximum",
        format!("{:?}", ours.maximum),
        format!("{:?}", theirs.maximum),
    );
    aspect(
        "minItems",
        format!("{:?}", ours.min_items),
        format!("{:?}", theirs.min_items),
    );
    aspect(
        "maxItems",
        format!("{:?}", ours.max_items),
        format!("{:?}", theirs.max_items),
    );
    aspect(
        "minLength",
        format!("{:?}", ours.min_length),
        format!("{:?}", theirs.min_length),
    );
    aspect(
        "maxLength",
        format!("{:?}", ours.max_length),
        format!("{:?}", theirs.max_length),
    );
    aspect(
        "CEL rules",
        format!("{:?}", ours.rules),
        format!("{:?}", theirs.rules),
    );
}

struct Diff {
    kind: String,
    path: String,
    aspect: String,
    detail: String,
}

impl Diff {
    fn justification(&self) -> Option<&'static str> {
        JUSTIFIED.iter().find_map(|(kind, path, aspect, reason)| {
            let kind_ok = *kind == "*" || *kind == self.kind;
            let path_ok = *path == "*"
                || (path.is_empty() && self.path.is_empty())
                || (!path.is_empty() && self.path.ends_with(path))
                || (!path.is_empty() && self.path.contains(&format!("{path}.")));
            (kind_ok && path_ok && *aspect == self.aspect).then_some(*reason)
        })
    }
}

fn load_kubeblocks(dir: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let Ok(doc) = serde_yaml::from_str::<Value>(&text) else {
            continue;
        };
        if doc["kind"] == "CustomResourceDefinition"
            && doc["spec"]["group"] == "dataprotection.kubeblocks.io"
        {
            out.insert(
                doc["spec"]["names"]["kind"].as_str().unwrap().to_string(),
                doc,
            );
        }
    }
    out
}

#[test]
#[ignore = "needs KUBEBLOCKS_CRD_DIR (KubeBlocks' config/crd/bases)"]
fn generated_crds_match_kubeblocks() {
    let dir = std::env::var("KUBEBLOCKS_CRD_DIR").expect(
        "set KUBEBLOCKS_CRD_DIR to the config/crd/bases directory of an apecloud/kubeblocks checkout",
    );
    assert!(PathBuf::from(&dir).is_dir(), "{dir} is not a directory");
    let theirs = load_kubeblocks(&dir);
    assert!(!theirs.is_empty(), "no dataprotection CRDs in {dir}");
    let mut diffs = Vec::new();
    let mut compared = Vec::new();
    for crd in dprepo_controller::crd::all() {
        let ours = serde_json::to_value(&crd).unwrap();
        let kind = crd.spec.names.kind.clone();
        if crd.spec.group != "dataprotection.kubeblocks.io" {
            continue;
        }
        let Some(their) = theirs.get(&kind) else {
            diffs.push(Diff {
                kind: kind.clone(),
                path: String::new(),
                aspect: "kind".into(),
                detail: "not in KubeBlocks' CRDs".into(),
            });
            continue;
        };
        compared.push(kind.clone());
        for (aspect, a, b) in [
            ("scope", &ours["spec"]["scope"], &their["spec"]["scope"]),
            (
                "shortNames",
                &ours["spec"]["names"]["shortNames"],
                &their["spec"]["names"]["shortNames"],
            ),
            (
                "categories",
                &ours["spec"]["names"]["categories"],
                &their["spec"]["names"]["categories"],
            ),
            (
                "listKind",
                &ours["spec"]["names"]["listKind"],
                &their["spec"]["names"]["listKind"],
            ),
            (
                "printer columns",
                &ours["spec"]["versions"][0]["additionalPrinterColumns"],
                &their["spec"]["versions"][0]["additionalPrinterColumns"],
            ),
            (
                "subresources",
                &ours["spec"]["versions"][0]["subresources"],
                &their["spec"]["versions"][0]["subresources"],
            ),
        ] {
            if a != b {
                diffs.push(Diff {
                    kind: kind.clone(),
                    path: String::new(),
                    aspect: aspect.into(),
                    detail: format!("ours {a}, KubeBlocks {b}"),
                });
            }
        }
        let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
        flatten(schema_of(&ours), String::new(), &mut a);
        flatten(schema_of(their), String::new(), &mut b);
        for (path, fa) in &a {
            match b.get(path) {
                Some(fb) => compare_facts(&kind, path, fa, fb, &mut diffs),
                None => diffs.push(Diff {
                    kind: kind.clone(),
                    path: path.clone(),
                    aspect: "only in ours".into(),
                    detail: format!("{:?}", fa.ty),
                }),
            }
        }
        for (path, fb) in &b {
            if !a.contains_key(path) {
                diffs.push(Diff {
                    kind: kind.clone(),
                    path: path.clone(),
                    aspect: "only in KubeBlocks".into(),
                    detail: format!("{:?}", fb.ty),
                });
            }
        }
    }
    let not_served: Vec<&String> = theirs.keys().filter(|k| !compared.contains(k)).collect();
    println!("compared: {}", compared.join(", "));
    println!("KubeBlocks kinds not served: {not_served:?}");
    let mut unjustified = Vec::new();
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &diffs {
        let line = format!("{} {} [{}]: {}", d.kind, d.path, d.aspect, d.detail);
        match d.justification() {
            Some(reason) => {
                *reasons.entry(reason).or_default() += 1;
                println!("justified: {line}");
            }
            None => unjustified.push(line),
        }
    }
    for (reason, n) in &reasons {
        println!("{n} difference(s) justified by: {reason}");
    }
    println!(
        "{} difference(s), {} unjustified",
        diffs.len(),
        unjustified.len()
    );
    assert!(
        unjustified.is_empty(),
        "differences from KubeBlocks' CRDs without a justification:\n  {}",
        unjustified.join("\n  ")
    );
}
