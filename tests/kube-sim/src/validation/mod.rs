//! Validation as the real server does it: object metadata for every kind, the built-in
//! kinds' own rules ([`builtin`]), custom resources' structural schemas ([`schema`]) and
//! CEL rules ([`cel`]). Each check returns field errors; the caller turns a non-empty list
//! into 422 Invalid.

pub mod builtin;
// Custom resource schemas, CEL rules and object names: the schema crate's, shared with
// `dprepo-controller validate`.
pub use dprepo_k8s_schema::{cel, names, schema};

// Object metadata (names, labels, annotations, finalizers, owner references) and Go
// durations: one implementation, shared with `dprepo-controller validate`.
pub use dprepo_k8s_schema::meta::{
    go_duration, name_rule, validate_labels, validate_meta, validate_meta_update, NameRule,
};
