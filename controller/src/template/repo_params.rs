//! A BackupRepo's template parameters and its digest, as KubeBlocks computes them.
//!
//! Parameters (`collectParameters`): the `default` of every property of the
//! provider's `parametersSchema.openAPIV3Schema`, then the BackupRepo's `config`, then
//! every key of the credential Secret; a later source wins; nothing is validated
//! against the schema. A string default is used as is; any other default (number,
//! boolean, object) as its JSON text (`512`, `false`).
//!
//! Digest (`getDigest`): the hex MD5 of the parameters serialised as `k=v;` in sorted
//! key order, followed by the four templates in the order storage class, PVC, CSI
//! driver Secret, datasafed config. It is stored in the `backup-repo-digest`
//! annotation; a change triggers a new pre-check.

use std::collections::BTreeMap;

use md5::{Digest, Md5};

/// The four templates of a StorageProvider (empty when absent).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProviderTemplates<'a> {
    /// `storageClassTemplate`
    pub storage_class: &'a str,
    /// `persistentVolumeClaimTemplate`
    pub persistent_volume_claim: &'a str,
    /// `csiDriverSecretTemplate`
    pub csi_driver_secret: &'a str,
    /// `datasafedConfigTemplate`
    pub datasafed_config: &'a str,
}

/// Defaults of a `parametersSchema.openAPIV3Schema`'s properties.
pub fn schema_defaults(open_api_v3_schema: &serde_json::Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(props) = open_api_v3_schema
        .get("properties")
        .and_then(serde_json::Value::as_object)
    else {
        return out;
    };
    for (name, prop) in props {
        let Some(d) = prop.get("default") else {
            continue;
        };
        let v = match d {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        out.insert(name.clone(), v);
    }
    out
}

/// Merge defaults, `config` and credential Secret data; later sources win. Secret
/// values are bytes; invalid UTF-8 is replaced (Go would keep the bytes).
pub fn merge_parameters(
    defaults: &BTreeMap<String, String>,
    config: &BTreeMap<String, String>,
    credential: &BTreeMap<String, Vec<u8>>,
) -> BTreeMap<String, String> {
    let mut out = defaults.clone();
    out.extend(config.iter().map(|(k, v)| (k.clone(), v.clone())));
    out.extend(
        credential
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned())),
    );
    out
}

/// `k=v;` for every parameter in sorted key order (KubeBlocks' `stableSerializeMap`).
pub fn stable_serialize(params: &BTreeMap<String, String>) -> String {
    let mut s = String::new();
    for (k, v) in params {
        s.push_str(k);
        s.push('=');
        s.push_str(v);
        s.push(';');
    }
    s
}

/// The `backup-repo-digest` of a BackupRepo.
pub fn digest(params: &BTreeMap<String, String>, t: &ProviderTemplates<'_>) -> String {
    let mut h = Md5::new();
    h.update(stable_serialize(params).as_bytes());
    h.update(t.storage_class.as_bytes());
    h.update(t.persistent_volume_claim.as_bytes());
    h.update(t.csi_driver_secret.as_bytes());
    h.update(t.datasafed_config.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_strings_or_json_text() {
        let schema = serde_json::json!({"properties": {
            "region": {"type": "string"},
            "limit": {"type": "integer", "default": 512},
            "insecure": {"type": "boolean", "default": false},
            "share": {"type": "string", "default": "/"},
        }});
        assert_eq!(
            schema_defaults(&schema),
            m(&[("insecure", "false"), ("limit", "512"), ("share", "/")])
        );
    }

    #[test]
    fn later_sources_win() {
        let defaults = m(&[("a", "1"), ("b", "1"), ("c", "1")]);
        let config = m(&[("b", "2"), ("c", "2")]);
        let cred: BTreeMap<String, Vec<u8>> = [("c".to_string(), b"3".to_vec())].into();
        assert_eq!(
            merge_parameters(&defaults, &config, &cred),
            m(&[("a", "1"), ("b", "2"), ("c", "3")])
        );
    }

    #[test]
    fn digest_is_md5_of_serialised_parameters_and_templates() {
        let p = m(&[("b", "2"), ("a", "1")]);
        assert_eq!(stable_serialize(&p), "a=1;b=2;");
        let t = ProviderTemplates {
            storage_class: "S",
            persistent_volume_claim: "P",
            csi_driver_secret: "C",
            datasafed_config: "D",
        };
        // md5("a=1;b=2;SPCD"), computed with Go's crypto/md5.
        assert_eq!(digest(&p, &t), "967e53ca134e916c3f3c5a4468db1427");
        assert_eq!(
            digest(&BTreeMap::new(), &ProviderTemplates::default()),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
    }
}
