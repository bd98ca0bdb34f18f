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

// Field errors are the schema crate's (shared with `dprepo-controller validate`).
pub use dprepo_k8s_schema::error::{aggregate, go_value, FieldError, FieldErrorType};

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
