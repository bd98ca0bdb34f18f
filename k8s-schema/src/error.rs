//! Field-level validation errors, rendered the way
//! `k8s.io/apimachinery/pkg/util/validation/field` renders them (`spec.x: Invalid value:
//! "v": detail`), so messages read exactly like the API server's.
//!
//! Moved from kube-sim's `error.rs` (the `FieldError` half; its HTTP `ApiError` stays in
//! kube-sim and builds on these).

use serde_json::Value;
use std::fmt;

/// The type of a field error (`Status.details.causes[].reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorType {
    /// `FieldValueRequired`.
    Required,
    /// `FieldValueInvalid`.
    Invalid,
    /// `FieldValueNotSupported`.
    NotSupported,
    /// `FieldValueForbidden`.
    Forbidden,
    /// `FieldValueDuplicate`.
    Duplicate,
    /// `FieldValueTooLong`.
    TooLong,
    /// `FieldValueTooMany`.
    TooMany,
    /// `FieldValueTypeInvalid`.
    TypeInvalid,
    /// `FieldValueNotFound`.
    NotFound,
    /// `InternalError`.
    Internal,
}

impl FieldErrorType {
    /// The cause type string.
    pub fn cause(self) -> &'static str {
        match self {
            Self::Required => "FieldValueRequired",
            Self::Invalid => "FieldValueInvalid",
            Self::NotSupported => "FieldValueNotSupported",
            Self::Forbidden => "FieldValueForbidden",
            Self::Duplicate => "FieldValueDuplicate",
            Self::TooLong => "FieldValueTooLong",
            Self::TooMany => "FieldValueTooMany",
            Self::TypeInvalid => "FieldValueTypeInvalid",
            Self::NotFound => "FieldValueNotFound",
            Self::Internal => "InternalError",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::Required => "Required value",
            Self::Invalid | Self::TypeInvalid => "Invalid value",
            Self::NotSupported => "Unsupported value",
            Self::Forbidden => "Forbidden",
            Self::Duplicate => "Duplicate value",
            Self::TooLong => "Too long",
            Self::TooMany => "Too many",
            Self::NotFound => "Not found",
            Self::Internal => "Internal error",
        }
    }

    /// Maps a CEL rule's `reason` (x-kubernetes-validations) to a type.
    pub fn from_rule_reason(reason: &str) -> Self {
        match reason {
            "FieldValueRequired" => Self::Required,
            "FieldValueForbidden" => Self::Forbidden,
            "FieldValueDuplicate" => Self::Duplicate,
            _ => Self::Invalid,
        }
    }
}

/// One field-level validation failure.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// The failure type.
    pub kind: FieldErrorType,
    /// The JSON path of the field, in the server's notation (`spec.containers[0].name`).
    pub field: String,
    /// The offending value, when the message shows it.
    pub value: Option<Value>,
    /// The explanation.
    pub detail: String,
}

/// Formats a value the way Go's field errors print a bad value.
pub fn go_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_string(),
        Value::Array(_) => "\"array\"".to_string(),
        Value::Object(_) => "\"object\"".to_string(),
    }
}

impl FieldError {
    fn new(
        kind: FieldErrorType,
        field: &str,
        value: Option<Value>,
        detail: impl Into<String>,
    ) -> Self {
        FieldError {
            kind,
            field: field.to_string(),
            value,
            detail: detail.into(),
        }
    }
    /// `Required value`.
    pub fn required(field: &str, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorType::Required, field, None, detail)
    }
    /// `Invalid value: V: detail`.
    pub fn invalid(field: &str, value: impl Into<Value>, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorType::Invalid, field, Some(value.into()), detail)
    }
    /// `Unsupported value: V: supported values: "a", "b"`.
    pub fn not_supported(field: &str, value: impl Into<Value>, valid: &[&str]) -> Self {
        let detail = if valid.is_empty() {
            String::new()
        } else {
            let quoted: Vec<String> = valid.iter().map(|v| format!("{v:?}")).collect();
            format!("supported values: {}", quoted.join(", "))
        };
        Self::new(
            FieldErrorType::NotSupported,
            field,
            Some(value.into()),
            detail,
        )
    }
    /// `Forbidden: detail`.
    pub fn forbidden(field: &str, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorType::Forbidden, field, None, detail)
    }
    /// `Duplicate value: V`.
    pub fn duplicate(field: &str, value: impl Into<Value>) -> Self {
        Self::new(FieldErrorType::Duplicate, field, Some(value.into()), "")
    }
    /// `Too long: may not be more than N bytes`.
    pub fn too_long(field: &str, max: usize) -> Self {
        Self::new(
            FieldErrorType::TooLong,
            field,
            None,
            format!("may not be more than {max} bytes"),
        )
    }
    /// `Too many: N: must have at most M items`.
    pub fn too_many(field: &str, actual: usize, max: usize) -> Self {
        Self::new(
            FieldErrorType::TooMany,
            field,
            Some(Value::from(actual)),
            format!("must have at most {max} items"),
        )
    }
    /// `Not found: V`.
    pub fn not_found(field: &str, value: impl Into<Value>) -> Self {
        Self::new(FieldErrorType::NotFound, field, Some(value.into()), "")
    }
    /// `Internal error: detail`.
    pub fn internal(field: &str, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorType::Internal, field, None, detail)
    }
    /// Any type with a value.
    pub fn typed(
        kind: FieldErrorType,
        field: &str,
        value: Option<Value>,
        detail: impl Into<String>,
    ) -> Self {
        Self::new(kind, field, value, detail)
    }

    /// The message without the field name (`Status.details.causes[].message`).
    pub fn body(&self) -> String {
        let mut s = self.kind.title().to_string();
        if let Some(v) = &self.value {
            s.push_str(": ");
            s.push_str(&go_value(v));
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.body())
        } else {
            write!(f, "{}: {}", self.field, self.body())
        }
    }
}

/// Renders an error list the way `ErrorList.ToAggregate().Error()` does (duplicates dropped).
pub fn aggregate(errs: &[FieldError]) -> String {
    let mut seen = Vec::new();
    for e in errs {
        let m = e.to_string();
        if !seen.contains(&m) {
            seen.push(m);
        }
    }
    if seen.len() == 1 {
        seen.remove(0)
    } else {
        format!("[{}]", seen.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_the_server() {
        let e = FieldError::not_supported("spec.restartPolicy", "Always", &["OnFailure", "Never"]);
        assert_eq!(
            e.to_string(),
            "spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""
        );
        let two = [
            FieldError::required("spec.containers", ""),
            FieldError::too_long("metadata.name", 63),
        ];
        assert_eq!(
            aggregate(&two),
            "[spec.containers: Required value, metadata.name: Too long: may not be more than 63 bytes]"
        );
        assert_eq!(aggregate(&two[..1]), "spec.containers: Required value");
    }
}
