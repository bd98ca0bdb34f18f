//! Render every StorageProvider template KubeBlocks ships, from a KubeBlocks checkout.
//!
//! KubeBlocks' provider YAML is AGPL and not part of this repository, so this test is
//! `#[ignore]`d and reads it from `KUBEBLOCKS_DIR` (a checkout of apecloud/kubeblocks):
//!
//! ```sh
//! KUBEBLOCKS_DIR=/path/to/kubeblocks cargo test -p dprepo-controller \
//!     --test kubeblocks_storage_providers -- --ignored --nocapture
//! ```
//!
//! The chart's files are Helm templates whose StorageProvider templates are escaped as
//! `` {{ `{{ ... }}` }} ``; the Helm layer is rendered first with this engine (Helm's
//! `include` answered with fixed text), then each provider template is rendered as
//! KubeBlocks renders it, twice: with every parameter set to a sample value, and with
//! only the schema defaults and the required parameters. Any error fails the test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dprepo_controller::template::provider::{render_template, RenderContext};
use dprepo_controller::template::repo_params::{merge_parameters, schema_defaults};
use dprepo_controller::template::{sprig, Func, GoType, Template, Value};

/// Render the Helm layer of a chart template.
fn render_helm(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let mut funcs = sprig::txt_func_map();
    funcs.insert(
        "include",
        Func::custom(
            vec![GoType::String, GoType::Interface],
            None,
            Arc::new(|_, a| {
                Ok(Value::str(match a[0].as_str().unwrap_or("") {
                    "kubeblocks.labels" => "app.kubernetes.io/name: kubeblocks",
                    _ => "",
                }))
            }),
        ),
    );
    let mut t = Template::new(&path.display().to_string()).funcs(funcs);
    t.parse(&text)
        .unwrap_or_else(|e| panic!("helm layer of {}: {e}", path.display()));
    t.execute(&Value::map(GoType::Interface, BTreeMap::new()))
        .unwrap_or_else(|e| panic!("helm layer of {}: {e}", path.display()))
}

fn sample(name: &str, prop: &serde_json::Value) -> String {
    match prop.get("type").and_then(|t| t.as_str()) {
        Some("integer") => "7".into(),
        Some("boolean") => "true".into(),
        _ => match prop
            .get("enum")
            .and_then(|e| e.get(0))
            .and_then(|v| v.as_str())
        {
            Some(first) => first.into(),
            None => format!("sample-{name}"),
        },
    }
}

fn providers(dir: &Path) -> Vec<(PathBuf, serde_yaml::Value)> {
    let mut out = Vec::new();
    let chart = dir.join("deploy/helm/templates/storageprovider");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&chart)
        .unwrap_or_else(|e| panic!("{}: {e}", chart.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    for f in files {
        let yaml = render_helm(&f);
        out.push((f, serde_yaml::from_str(&yaml).unwrap()));
    }
    let testdata = dir.join("test/testdata/backup/storageprovider.yaml");
    if testdata.exists() {
        let yaml = std::fs::read_to_string(&testdata).unwrap();
        out.push((testdata, serde_yaml::from_str(&yaml).unwrap()));
    }
    out
}

#[test]
#[ignore = "needs KUBEBLOCKS_DIR, a checkout of apecloud/kubeblocks"]
fn every_kubeblocks_storage_provider_renders() {
    let dir = PathBuf::from(std::env::var("KUBEBLOCKS_DIR").expect(
        "set KUBEBLOCKS_DIR to a checkout of apecloud/kubeblocks (deploy/helm/templates/storageprovider)",
    ));
    let all = providers(&dir);
    assert!(!all.is_empty(), "no providers under {}", dir.display());
    let mut rendered = 0;
    for (path, doc) in &all {
        let spec = &doc["spec"];
        let schema: serde_json::Value =
            serde_json::to_value(&spec["parametersSchema"]["openAPIV3Schema"]).unwrap();
        let defaults = schema_defaults(&schema);
        let props = schema
            .get("properties")
            .and_then(|p| p.as_object())
            .cloned()
            .unwrap_or_default();
        let required: Vec<String> = schema
            .get("required")
            .and_then(|r| r.as_array())
            .map(|r| {
                r.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let every: BTreeMap<String, String> = props
            .iter()
            .map(|(k, p)| (k.clone(), sample(k, p)))
            .collect();
        let minimal: BTreeMap<String, String> = props
            .iter()
            .filter(|(k, _)| required.contains(k))
            .map(|(k, p)| (k.clone(), sample(k, p)))
            .collect();
        for (variant, config) in [
            ("all parameters", &every),
            ("defaults and required", &minimal),
        ] {
            let ctx = RenderContext {
                parameters: merge_parameters(&defaults, config, &BTreeMap::new()),
                csi_driver_secret_name: "csi-secret".into(),
                csi_driver_secret_namespace: "kb-system".into(),
                generated_storage_class_name: "sc-generated".into(),
            };
            for (field, name) in [
                ("csiDriverSecretTemplate", "secret"),
                ("storageClassTemplate", "sc"),
                ("persistentVolumeClaimTemplate", "pvc"),
                ("datasafedConfigTemplate", "tool-config"),
            ] {
                let Some(text) = spec[field].as_str() else {
                    continue;
                };
                let out = render_template(name, text, &ctx)
                    .unwrap_or_else(|e| panic!("{} {field} ({variant}): {e}", path.display()));
                println!(
                    "=== {} {field} ({variant})\n{out}",
                    path.file_name().unwrap().to_string_lossy()
                );
                rendered += 1;
            }
        }
    }
    println!("rendered {rendered} templates of {} providers", all.len());
}
