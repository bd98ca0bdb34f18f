//! StorageProvider: phase `Ready` or `NotReady` and the condition `CSIDriverInstalled`,
//! as KubeBlocks decides them (no `csiDriverName`, or the CSIDriver object exists: Ready),
//! plus dprepo's check that every template parses (condition `TemplatesParsed`, naming the
//! field; a provider whose templates do not parse is `NotReady`).
//!
//! Like KubeBlocks, the controller *removes* the dataprotection finalizer from
//! StorageProviders: with the controller uninstalled first, a finalizer would keep them
//! from ever being deleted.

use std::sync::Arc;

use k8s_openapi::api::storage::v1::CSIDriver;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::{patch_status, remove_finalizer, set_condition};
use crate::api::labels::FINALIZER;
use crate::api::storageprovider::{
    StorageProvider, StorageProviderPhase, StorageProviderStatus, CONDITION_CSI_DRIVER_INSTALLED,
};
use crate::context::{distinct_action, Context};
use crate::error::{Error, KubeResultExt, Result};
use crate::template::provider::{
    kubeblocks_funcs, CSI_SECRET_TEMPLATE, PVC_TEMPLATE, STORAGE_CLASS_TEMPLATE,
    TOOL_CONFIG_TEMPLATE,
};
use crate::template::Template;

/// dprepo's condition: every template of the provider parses.
pub const CONDITION_TEMPLATES_PARSED: &str = "TemplatesParsed";

/// The first template that does not parse: its field and the parser's message.
pub fn check_templates(provider: &StorageProvider) -> Option<(String, String)> {
    let s = &provider.spec;
    for (field, name, text) in [
        (
            "spec.csiDriverSecretTemplate",
            CSI_SECRET_TEMPLATE,
            &s.csi_driver_secret_template,
        ),
        (
            "spec.storageClassTemplate",
            STORAGE_CLASS_TEMPLATE,
            &s.storage_class_template,
        ),
        (
            "spec.persistentVolumeClaimTemplate",
            PVC_TEMPLATE,
            &s.persistent_volume_claim_template,
        ),
        (
            "spec.datasafedConfigTemplate",
            TOOL_CONFIG_TEMPLATE,
            &s.datasafed_config_template,
        ),
    ] {
        let Some(text) = text.as_deref().filter(|t| !t.is_empty()) else {
            continue;
        };
        let mut t = Template::new(name).funcs(kubeblocks_funcs().clone());
        if let Err(e) = t.parse(text) {
            return Some((field.to_string(), e.to_string()));
        }
    }
    None
}

/// Reconciles one StorageProvider.
///
/// # Errors
/// API errors (transient); a template that does not parse ([`Error::Invalid`], after the
/// status says so).
pub async fn reconcile(provider: Arc<StorageProvider>, ctx: Arc<Context>) -> Result<Action> {
    let api: Api<StorageProvider> = Api::all(ctx.client.clone());
    let name = provider.metadata.name.clone().unwrap_or_default();
    remove_finalizer(&api, provider.as_ref(), FINALIZER).await?;
    let now = ctx.clock.now();
    let generation = provider.metadata.generation;
    let old = provider.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let conditions = status.conditions.get_or_insert_with(Vec::new);

    let csi_error = match provider
        .spec
        .csi_driver_name
        .as_deref()
        .filter(|d| !d.is_empty())
    {
        None => None,
        Some(driver) => {
            let drivers: Api<CSIDriver> = Api::all(ctx.client.clone());
            match drivers
                .get_opt(driver)
                .await
                .during(|| format!("get CSIDriver {driver}"))?
            {
                Some(_) => None,
                None => Some(format!("csidrivers.storage.k8s.io \"{driver}\" not found")),
            }
        }
    };
    match &csi_error {
        None => set_condition(
            conditions,
            CONDITION_CSI_DRIVER_INSTALLED,
            "True",
            "CSIDriverObjectFound",
            "",
            generation,
            now,
        ),
        Some(message) => set_condition(
            conditions,
            CONDITION_CSI_DRIVER_INSTALLED,
            "Unknown",
            "CheckCSIDriverFailed",
            message,
            generation,
            now,
        ),
    };
    let template_error = check_templates(&provider);
    match &template_error {
        None => set_condition(
            conditions,
            CONDITION_TEMPLATES_PARSED,
            "True",
            "TemplatesParsed",
            "",
            generation,
            now,
        ),
        Some((field, message)) => set_condition(
            conditions,
            CONDITION_TEMPLATES_PARSED,
            "False",
            "BadTemplate",
            &format!("{field}: {message}"),
            generation,
            now,
        ),
    };
    let phase = if csi_error.is_none() && template_error.is_none() {
        StorageProviderPhase::Ready
    } else {
        StorageProviderPhase::NotReady
    };
    status.phase = Some(phase);
    if status != old {
        patch_status::<StorageProvider, StorageProviderStatus>(
            &api,
            &name,
            provider.metadata.resource_version.as_deref(),
            &status,
        )
        .await?;
        if old.phase != Some(phase) {
            // NotReady for a missing CSI driver and NotReady for a broken template are
            // different failures: each has its own series (see context.rs).
            let (kind, note, action) = match (&csi_error, &template_error) {
                (None, None) => (
                    EventType::Normal,
                    "the storage provider is ready".to_string(),
                    phase.as_str().to_string(),
                ),
                (Some(m), _) => {
                    let note = format!("CSI driver not installed: {m}");
                    let action = distinct_action("Check spec.csiDriverName", &note);
                    (EventType::Warning, note, action)
                }
                (None, Some((f, m))) => {
                    let note = format!("{f}: {m}");
                    let action = distinct_action(&format!("Validate {f}"), &note);
                    (EventType::Warning, note, action)
                }
            };
            ctx.event_as(provider.as_ref(), kind, phase.as_str(), action, note)
                .await;
        }
    }
    if let Some((field, message)) = template_error {
        return Err(Error::invalid(field, message));
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::storageprovider::StorageProviderSpec;

    #[test]
    fn a_template_that_does_not_parse_is_named_by_its_field() {
        let mut p = StorageProvider::new(
            "s3",
            StorageProviderSpec {
                datasafed_config_template: Some(
                    "[storage]\nroot = {{ .Parameters.bucket }}\n".into(),
                ),
                storage_class_template: Some("provisioner: x\n".into()),
                ..Default::default()
            },
        );
        assert_eq!(check_templates(&p), None);
        p.spec.datasafed_config_template = Some("root = {{ .Parameters.bucket \n".into());
        let (field, message) = check_templates(&p).unwrap();
        assert_eq!(field, "spec.datasafedConfigTemplate");
        assert!(message.contains("tool-config"), "{message}");
        p.spec.datasafed_config_template = Some("{{ nosuchfunc 1 }}".into());
        let (_, message) = check_templates(&p).unwrap();
        assert!(message.contains("nosuchfunc"), "{message}");
    }
}
