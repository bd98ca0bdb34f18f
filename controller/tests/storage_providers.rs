//! dprepo's shipped StorageProviders (`deploy/storageproviders/`) render as KubeBlocks
//! would render them.
//!
//! `data/storageprovider_renders.json` holds, for realistic parameters of each
//! provider, the output Go's text/template with sprig produced for each of its
//! templates (parameters merged as KubeBlocks merges them: schema defaults, then the
//! BackupRepo's `config`). This test renders the same with our engine and compares
//! byte for byte, and checks every datasafed.conf uses only keys dprepo's `datasafed`
//! reads (tools/src/datasafed.rs).

use std::collections::BTreeMap;
use std::path::PathBuf;

use dprepo_controller::template::provider::{render_template, RenderContext};
use dprepo_controller::template::repo_params::{merge_parameters, schema_defaults};

#[derive(serde::Deserialize)]
struct Render {
    provider: String,
    config: BTreeMap<String, String>,
    template: String,
    go_output: String,
}

fn provider(name: &str) -> serde_yaml::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/storageproviders")
        .join(format!("{name}.yaml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap()
}

/// `[storage]` keys dprepo's datasafed understands.
const DATASAFED_KEYS: &[&str] = &[
    "type",
    "root",
    "endpoint",
    "region",
    "access_key_id",
    "secret_access_key",
    "session_token",
    "force_path_style",
    "path_style",
    "allow_http",
    "connections",
];

#[test]
fn shipped_providers_render_as_in_go() {
    let renders: Vec<Render> =
        serde_json::from_str(include_str!("data/storageprovider_renders.json")).unwrap();
    let mut providers = std::collections::BTreeSet::new();
    for r in &renders {
        let doc = provider(&r.provider);
        let spec = &doc["spec"];
        let schema: serde_json::Value =
            serde_json::to_value(&spec["parametersSchema"]["openAPIV3Schema"]).unwrap();
        let ctx = RenderContext {
            parameters: merge_parameters(&schema_defaults(&schema), &r.config, &BTreeMap::new()),
            csi_driver_secret_name: "sec".into(),
            csi_driver_secret_namespace: "ns".into(),
            generated_storage_class_name: "sc".into(),
        };
        let name = match r.template.as_str() {
            "csiDriverSecretTemplate" => "secret",
            "storageClassTemplate" => "sc",
            "persistentVolumeClaimTemplate" => "pvc",
            _ => "tool-config",
        };
        let text = spec[r.template.as_str()].as_str().unwrap();
        let out = render_template(name, text, &ctx)
            .unwrap_or_else(|e| panic!("{} {}: {e}", r.provider, r.template));
        assert_eq!(
            out, r.go_output,
            "{} {} with {:?}",
            r.provider, r.template, r.config
        );
        // Rendered YAML must parse; a datasafed.conf may only use keys datasafed reads.
        if r.template == "datasafedConfigTemplate" {
            for line in out.lines().skip(1).filter(|l| !l.trim().is_empty()) {
                let key = line.split('=').next().unwrap().trim();
                assert!(
                    DATASAFED_KEYS.contains(&key),
                    "{}: datasafed ignores `{key}`",
                    r.provider
                );
            }
        } else {
            serde_yaml::from_str::<serde_yaml::Value>(&out).unwrap_or_else(|e| {
                panic!("{} {} is not YAML: {e}\n{out}", r.provider, r.template)
            });
        }
        providers.insert(r.provider.clone());
    }
    // Every shipped provider is covered.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/storageproviders");
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        assert!(providers.contains(&name), "{name} has no render case");
    }
}
