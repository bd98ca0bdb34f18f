//! KubeBlocks' StorageProvider rendering: the data templates see and the function set
//! they may use, exactly as KubeBlocks' BackupRepo controller sets them up.
//!
//! KubeBlocks (`controllers/dataprotection/backuprepo_controller.go`, `renderTemplate`)
//! parses each template with `template.New(name).Funcs(sprig.TxtFuncMap())` — no
//! `missingkey` option, so a missing `.Parameters.x` prints `<no value>` while
//! `index .Parameters "x"` gives `""` — and executes it over a `renderContext` struct:
//! `Parameters map[string]string`, `CSIDriverSecretRef corev1.SecretReference`
//! (`Name`, `Namespace`), `GeneratedStorageClassName string`. Helm's functions
//! (`required`, `include`, `toYaml`, `tpl`) are not part of it, so templates using
//! them fail to parse here as they do in KubeBlocks.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use super::{sprig, Error, FuncMap, GoType, Template, Value};

/// Template name KubeBlocks uses for `csiDriverSecretTemplate`.
pub const CSI_SECRET_TEMPLATE: &str = "secret";
/// Template name KubeBlocks uses for `storageClassTemplate`.
pub const STORAGE_CLASS_TEMPLATE: &str = "sc";
/// Template name KubeBlocks uses for `persistentVolumeClaimTemplate`.
pub const PVC_TEMPLATE: &str = "pvc";
/// Template name KubeBlocks uses for `datasafedConfigTemplate`.
pub const TOOL_CONFIG_TEMPLATE: &str = "tool-config";

/// The data a StorageProvider template is rendered over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenderContext {
    /// Merged parameters (see [`super::repo_params::merge_parameters`]).
    pub parameters: BTreeMap<String, String>,
    /// Name of the generated CSI driver Secret.
    pub csi_driver_secret_name: String,
    /// Namespace of the generated CSI driver Secret.
    pub csi_driver_secret_namespace: String,
    /// Name of the generated StorageClass.
    pub generated_storage_class_name: String,
}

impl RenderContext {
    /// The context as the Go value templates see (`dataprotection.renderContext`).
    pub fn to_value(&self) -> Value {
        Value::structure(
            "dataprotection.renderContext",
            vec![
                ("Parameters", Value::string_map(&self.parameters)),
                (
                    "CSIDriverSecretRef",
                    Value::structure(
                        "v1.SecretReference",
                        vec![
                            ("Name", Value::str(&self.csi_driver_secret_name)),
                            ("Namespace", Value::str(&self.csi_driver_secret_namespace)),
                        ],
                    ),
                ),
                (
                    "GeneratedStorageClassName",
                    Value::str(&self.generated_storage_class_name),
                ),
            ],
        )
    }
}

/// The functions KubeBlocks' renderer offers: sprig's text function map.
pub fn kubeblocks_funcs() -> &'static FuncMap {
    static F: OnceLock<FuncMap> = OnceLock::new();
    F.get_or_init(sprig::txt_func_map)
}

/// Render one StorageProvider template as KubeBlocks' `renderTemplate` does.
///
/// # Errors
/// The template's parse or execution error, worded as Go words it.
pub fn render_template(name: &str, text: &str, ctx: &RenderContext) -> Result<String, Error> {
    let mut t = Template::new(name).funcs(kubeblocks_funcs().clone());
    t.parse(text)?;
    t.execute(&ctx.to_value())
}

/// Whether `GoType` names match KubeBlocks' for the context (for tests and docs).
pub fn parameters_type() -> GoType {
    GoType::Map(Box::new(GoType::String))
}
