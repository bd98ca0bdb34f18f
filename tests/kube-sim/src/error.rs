//! API errors and their `Status` bodies.
//!
//! Every refusal kube-sim makes is an [`ApiError`]: the HTTP code, the machine-readable
//! `reason`, the message worded like the real API server's, and `details` (name, group,
//! kind, causes). [`ApiError::to_status`] renders the `meta.k8s.io/v1` `Status` object that
//! kubectl and kube-rs parse. Field-level validation failures are [`FieldError`]s, rendered
//! the way `k8s.io/apimachinery/pkg/util/validation/field` renders them.

use serde_json::{json, Value};
use std::fmt;

/// A refused request, as the API server reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code (404, 409, 422 ...).
    pub code: u16,
    /// `Status.reason` (`NotFound`, `AlreadyExists`, `Conflict`, `Invalid` ...).
    pub reason: String,
    /// Human-readable message, worded like the real server's.
    pub message: String,
    /// `Status.details`, when the real server sends them.
    pub details: Option<Value>,
}

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

/// `resource.group` or `resource` for the core group, as error messages name resources.
pub fn qualified(resource: &str, group: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

impl ApiError {
    fn with(code: u16, reason: &str, message: String, details: Option<Value>) -> Self {
        ApiError {
            code,
            reason: reason.to_string(),
            message,
            details,
        }
    }

    /// 404 `resource "name" not found`.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        Self::with(
            404,
            "NotFound",
            format!("{} \"{}\" not found", qualified(resource, group), name),
            Some(json!({"name": name, "group": group, "kind": resource})),
        )
    }

    /// 404 for a path that names no resource.
    pub fn no_route() -> Self {
        Self::with(
            404,
            "NotFound",
            "the server could not find the requested resource".to_string(),
            Some(json!({})),
        )
    }

    /// 409 `resource "name" already exists`.
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        Self::with(
            409,
            "AlreadyExists",
            format!("{} \"{}\" already exists", qualified(resource, group), name),
            Some(json!({"name": name, "group": group, "kind": resource})),
        )
    }

    /// 409 Conflict: `Operation cannot be fulfilled on resource "name": msg`.
    pub fn conflict(group: &str, resource: &str, name: &str, msg: &str) -> Self {
        Self::with(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": {}",
                qualified(resource, group),
                name,
                msg
            ),
            Some(json!({"name": name, "group": group, "kind": resource})),
        )
    }

    /// 409 for a stale `resourceVersion`.
    pub fn stale(group: &str, resource: &str, name: &str) -> Self {
        Self::conflict(
            group,
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 Invalid, with one cause per field error.
    pub fn invalid(group: &str, kind: &str, name: &str, errs: &[FieldError]) -> Self {
        let gk = qualified(kind, group);
        let causes: Vec<Value> = errs
            .iter()
            .map(|e| json!({"reason": e.kind.cause(), "message": e.body(), "field": e.field}))
            .collect();
        Self::with(
            422,
            "Invalid",
            format!("{gk} \"{name}\" is invalid: {}", aggregate(errs)),
            Some(json!({"name": name, "group": group, "kind": kind, "causes": causes})),
        )
    }

    /// 400 BadRequest.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::with(400, "BadRequest", msg.into(), None)
    }

    /// 403 Forbidden: `resource "name" is forbidden: msg` (no name: `resource is forbidden`).
    pub fn forbidden(group: &str, resource: &str, name: &str, msg: &str) -> Self {
        let what = qualified(resource, group);
        let message = if name.is_empty() {
            format!("{what} is forbidden: {msg}")
        } else {
            format!("{what} \"{name}\" is forbidden: {msg}")
        };
        Self::with(
            403,
            "Forbidden",
            message,
            Some(json!({"name": name, "group": group, "kind": resource})),
        )
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_supported(group: &str, resource: &str, action: &str) -> Self {
        Self::with(
            405,
            "MethodNotAllowed",
            format!(
                "{action} is not supported on resources of kind \"{}\"",
                qualified(resource, group)
            ),
            Some(json!({"group": group, "kind": resource})),
        )
    }

    /// 410 Expired (too old resourceVersion, compacted continue token).
    pub fn expired(msg: impl Into<String>) -> Self {
        Self::with(410, "Expired", msg.into(), None)
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(content_type: &str, accepted: &[&str]) -> Self {
        Self::with(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ),
            Some(json!({"causes": [{"reason": "UnexpectedServerResponse", "message": content_type}]})),
        )
    }

    /// 406 NotAcceptable.
    pub fn not_acceptable(accepted: &[&str]) -> Self {
        Self::with(
            406,
            "NotAcceptable",
            format!(
                "only the following media types are accepted: {}",
                accepted.join(", ")
            ),
            None,
        )
    }

    /// 500 InternalError.
    pub fn internal(msg: impl Into<String>) -> Self {
        let msg = msg.into();
        Self::with(
            500,
            "InternalError",
            format!("Internal error occurred: {msg}"),
            Some(json!({"causes": [{"message": msg}]})),
        )
    }

    /// 504 Timeout.
    pub fn timeout(msg: impl Into<String>, retry_after: u64) -> Self {
        Self::with(
            504,
            "Timeout",
            msg.into(),
            Some(json!({"retryAfterSeconds": retry_after})),
        )
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::with(401, "Unauthorized", "Unauthorized".to_string(), None)
    }

    /// The `Status` object sent as the response body.
    pub fn to_status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }

    /// Whether this is a 404.
    pub fn is_not_found(&self) -> bool {
        self.code == 404
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} {})", self.message, self.code, self.reason)
    }
}

impl std::error::Error for ApiError {}

/// Result of an API call.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_message_matches_server_wording() {
        let e = ApiError::invalid(
            "batch",
            "Job",
            "j",
            &[FieldError::not_supported(
                "spec.template.spec.restartPolicy",
                "Always",
                &["OnFailure", "Never"],
            )],
        );
        assert_eq!(
            e.message,
            "Job.batch \"j\" is invalid: spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""
        );
        let two = ApiError::invalid(
            "",
            "Pod",
            "p",
            &[
                FieldError::required("spec.containers", ""),
                FieldError::too_long("metadata.name", 63),
            ],
        );
        assert_eq!(
            two.message,
            "Pod \"p\" is invalid: [spec.containers: Required value, metadata.name: Too long: may not be more than 63 bytes]"
        );
    }

    #[test]
    fn not_found_names_group() {
        assert_eq!(
            ApiError::not_found("apps", "deployments", "d").message,
            "deployments.apps \"d\" not found"
        );
        assert_eq!(
            ApiError::not_found("", "pods", "p").message,
            "pods \"p\" not found"
        );
    }
}
