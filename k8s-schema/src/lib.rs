//! Kubernetes custom resource schemas applied the way the API server applies them to a
//! write: unknown fields pruned (and reported, for `fieldValidation=Strict`), `null`s of
//! non-nullable fields dropped, `default`s filled, then structural validation (type, enum,
//! pattern, format, bounds, lengths, required, list types, allOf/anyOf/oneOf/not), object
//! metadata checks, and `x-kubernetes-validations` CEL rules evaluated for real.
//!
//! Shared by kube-sim (the test API server) and `dprepo-controller validate`, so that a
//! manifest the validator passes is one kube-sim (and a real server) accepts.
//!
//! Module map: [`admit`] runs the whole sequence on one object; [`schema`] prunes,
//! defaults and validates; [`cel`] compiles and evaluates CEL rules (with kube-cel);
//! [`meta`] checks object metadata; [`names`] the name and label syntaxes; [`error`] the
//! field errors, worded as the server words them.
//!
//! ```
//! use serde_json::json;
//! let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
//!     "properties": {"size": {"type": "integer", "minimum": 1, "default": 1}}}}});
//! let doc = json!({"apiVersion": "x.io/v1", "kind": "K", "metadata": {"name": "k"},
//!     "spec": {"extra": true}});
//! let out = dprepo_k8s_schema::admit(&schema, &doc, None, &dprepo_k8s_schema::Target {
//!     api_version: "x.io/v1".into(), kind: "K".into(), namespaced: false });
//! assert_eq!(out.unknown_fields, vec!["spec.extra".to_string()]);
//! assert_eq!(out.object["spec"]["size"], 1);
//! assert!(out.errors.is_empty());
//! ```
#![warn(missing_docs)]

pub mod cel;
pub mod error;
pub mod meta;
pub mod names;
pub mod schema;

pub use error::{FieldError, FieldErrorType};

use serde_json::Value;

/// The kind an object is written as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `group/version` (`v1` for the core group).
    pub api_version: String,
    /// The kind.
    pub kind: String,
    /// Whether objects of the kind live in a namespace.
    pub namespaced: bool,
}

/// What [`admit`] made of an object.
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    /// The object as the server would store it: pruned and defaulted.
    pub object: Value,
    /// Paths of the fields pruning removed (`spec.foo`, `metadata.bogus`), sorted. The
    /// server drops them silently unless the client asks for strict field validation.
    pub unknown_fields: Vec<String>,
    /// Every validation failure, in the order the server finds them.
    pub errors: Vec<FieldError>,
}

/// The message the server gives when CEL rules were not run because of type errors.
pub const RULES_NOT_CHECKED: &str = "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation";

/// Applies a CRD version's `openAPIV3Schema` to a write of `obj` (`old`: the stored object
/// on update, whose transition rules, those using `oldSelf`, then run too).
///
/// The order is the server's: prune (recording unknown fields), drop `null`s and fill
/// defaults, check metadata, validate against the schema, then run CEL rules unless a
/// value has the wrong type (then [`RULES_NOT_CHECKED`] is reported instead, as the server
/// does). A rule that cannot be evaluated is an error naming the rule, never a pass.
pub fn admit(schema: &Value, obj: &Value, old: Option<&Value>, target: &Target) -> Admission {
    let mut object = obj.clone();
    let mut unknown_fields = Vec::new();
    schema::prune(schema, &mut object, "", true, &mut unknown_fields);
    unknown_fields.sort();
    schema::apply_defaults(schema, &mut object);
    let mut errors = meta::validate_meta(&object, meta::NameRule::Subdomain, target.namespaced);
    if let Some(old) = old {
        errors.extend(meta::validate_meta_update(&object, old));
    }
    let mut schema_errors = Vec::new();
    schema::validate(schema, &object, "", &mut schema_errors);
    let blocking = schema_errors
        .iter()
        .any(|e| e.kind == FieldErrorType::TypeInvalid);
    errors.extend(schema_errors);
    if blocking {
        errors.push(FieldError::invalid(
            "",
            Value::String("object".into()),
            RULES_NOT_CHECKED,
        ));
    } else {
        let group = target
            .api_version
            .rsplit_once('/')
            .map_or("", |(g, _)| g)
            .to_string();
        let root = kube_cel::RootContext {
            api_version: target.api_version.clone(),
            api_group: group,
            kind: target.kind.clone(),
        };
        errors.extend(cel::evaluate(schema, &object, old, &root));
    }
    Admission {
        object,
        unknown_fields,
        errors,
    }
}
