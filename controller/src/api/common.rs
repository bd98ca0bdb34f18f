//! Pieces shared by several kinds: the Available/Unavailable phase, encryption settings,
//! name/value parameters, embedded object metadata, and the schema helpers the kinds'
//! field attributes name.
//!
//! Serde conventions of the whole `api` module (CONTROLLER.md section 6): camelCase names,
//! every optional field an `Option` skipped when `None` (KubeBlocks writes `omitempty`),
//! so a document read and written back keeps exactly the fields it had. Enums are Rust
//! enums only where KubeBlocks' CRD has an `enum` (the API server refuses other values, so
//! no object can hold one); elsewhere the field is a `String` with the known values as
//! constants, so an unexpected value is kept rather than refused.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::SecretKeySelector;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The pattern KubeBlocks puts on names of other objects (a DNS-1123 subdomain without the
/// length limit): `^[a-z0-9]([a-z0-9\.\-]*[a-z0-9])?$`.
pub const NAME_PATTERN: &str = r"^[a-z0-9]([a-z0-9\.\-]*[a-z0-9])?$";

/// Declares a string enum whose CRD field has no `enum` list: the known values get
/// variants, any other text is kept in `Other` (so every object the API server accepts
/// decodes, and is written back unchanged). Schema: a plain string.
macro_rules! open_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A value this version does not know, kept as written.
            Other(String),
        }

        impl $name {
            /// The wire name.
            pub fn as_str(&self) -> &str {
                match self {
                    $( $name::$variant => $text, )*
                    $name::Other(s) => s,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $( $text => $name::$variant, )*
                    other => $name::Other(other.to_string()),
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                ser.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
                let s = String::deserialize(de)?;
                Ok($name::from(s.as_str()))
            }
        }

        impl ::schemars::JsonSchema for $name {
            fn schema_name() -> ::std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut ::schemars::SchemaGenerator) -> ::schemars::Schema {
                ::schemars::json_schema!({ "type": "string" })
            }

            fn inline_schema() -> bool {
                true
            }
        }
    };
}
pub(crate) use open_enum;

/// The phase of a BackupPolicy or an ActionSet (KubeBlocks' `Phase`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum AvailabilityPhase {
    /// Checked and usable.
    Available,
    /// Refers to something missing or invalid; `status.message` says what.
    Unavailable,
}

impl AvailabilityPhase {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AvailabilityPhase::Available => "Available",
            AvailabilityPhase::Unavailable => "Unavailable",
        }
    }
}

impl fmt::Display for AvailabilityPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A cipher KubeBlocks' `datasafed` can encrypt backup data with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum EncryptionAlgorithm {
    /// AES-128 in CFB mode.
    #[serde(rename = "AES-128-CFB")]
    Aes128Cfb,
    /// AES-192 in CFB mode.
    #[serde(rename = "AES-192-CFB")]
    Aes192Cfb,
    /// AES-256 in CFB mode (KubeBlocks' default).
    #[default]
    #[serde(rename = "AES-256-CFB")]
    Aes256Cfb,
}

impl EncryptionAlgorithm {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EncryptionAlgorithm::Aes128Cfb => "AES-128-CFB",
            EncryptionAlgorithm::Aes192Cfb => "AES-192-CFB",
            EncryptionAlgorithm::Aes256Cfb => "AES-256-CFB",
        }
    }
}

impl fmt::Display for EncryptionAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Encryption of backup data (`spec.encryptionConfig` of a BackupPolicy, copied into the
/// Backup's status).
///
/// With dprepo every repository is encrypted with the repository key, and the pass phrase
/// here is outranked by it (CONTROLLER.md section 3, dprepo additions 2): the field is kept
/// and recorded, and changes nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionConfig {
    /// The cipher: `AES-128-CFB`, `AES-192-CFB` or `AES-256-CFB` (default).
    #[schemars(extend("default" = "AES-256-CFB"))]
    pub algorithm: EncryptionAlgorithm,
    /// The Secret key (in the object's namespace) holding the pass phrase.
    pub pass_phrase_secret_key_ref: SecretKeySelector,
}

/// A parameter handed to a backup or restore action (each becomes an environment variable
/// of its Job); names are checked against the ActionSet's `parametersSchema`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ParameterPair {
    /// The parameter's name.
    pub name: String,
    /// The parameter's value.
    pub value: String,
}

/// Object metadata embedded in a spec (a restored PVC's), as Kubernetes keeps it in a
/// custom resource: only these five fields survive.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmbeddedObjectMeta {
    /// Annotations of the object to create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Finalizers of the object to create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalizers: Option<Vec<String>>,
    /// Labels of the object to create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Name of the object to create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace of the object to create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Schema of a field that holds any JSON object, kept whole (an OpenAPI schema the user
/// writes, for instance): `type: object` with `x-kubernetes-preserve-unknown-fields`.
pub fn preserve_unknown_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// The pattern of a Kubernetes quantity (`1Gi`, `500m`, `1e3`).
pub const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// Schema of a quantity field (a number or a quantity string), as Kubernetes declares one.
pub fn quantity(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "pattern": QUANTITY_PATTERN,
        "x-kubernetes-int-or-string": true,
    })
}

/// `x-kubernetes-list-type: map` keyed by `name` on a list of [`ParameterPair`]s, at most
/// 128 of them, as KubeBlocks declares every `parameters` list.
pub fn parameter_list(gen: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = gen.subschema_for::<Vec<ParameterPair>>();
    let obj = schema.ensure_object();
    obj.insert("maxItems".into(), 128.into());
    obj.insert("x-kubernetes-list-type".into(), "map".into());
    obj.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["name"]),
    );
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encryption_algorithm_names() {
        for (a, s) in [
            (EncryptionAlgorithm::Aes128Cfb, "AES-128-CFB"),
            (EncryptionAlgorithm::Aes192Cfb, "AES-192-CFB"),
            (EncryptionAlgorithm::Aes256Cfb, "AES-256-CFB"),
        ] {
            assert_eq!(a.to_string(), s);
            assert_eq!(serde_json::to_value(a).unwrap(), s);
            assert_eq!(
                serde_json::from_value::<EncryptionAlgorithm>(s.into()).unwrap(),
                a
            );
        }
        assert_eq!(
            EncryptionAlgorithm::default(),
            EncryptionAlgorithm::Aes256Cfb
        );
    }

    open_enum! {
        /// A test enum.
        pub enum Fruit {
            /// An apple.
            Apple = "apple",
        }
    }

    #[test]
    fn open_enum_keeps_unknown_values() {
        assert_eq!(
            serde_json::from_str::<Fruit>("\"apple\"").unwrap(),
            Fruit::Apple
        );
        let pear: Fruit = serde_json::from_str("\"pear\"").unwrap();
        assert_eq!(pear, Fruit::Other("pear".into()));
        assert_eq!(serde_json::to_string(&pear).unwrap(), "\"pear\"");
        assert_eq!(Fruit::Apple.to_string(), "apple");
    }

    #[test]
    fn availability_phase_names() {
        assert_eq!(AvailabilityPhase::Available.to_string(), "Available");
        assert_eq!(AvailabilityPhase::Unavailable.to_string(), "Unavailable");
    }
}
