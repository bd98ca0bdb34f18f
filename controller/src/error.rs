//! The reconcilers' error type.
//!
//! Two cases matter to the loop around a reconciler: an error retrying can mend (the API
//! server was unreachable, a write lost a race) is retried soon with back-off; an object
//! that is wrong as written (a missing reference, a bad field) is reported on the object
//! itself (condition, event) and waits for the user to change it, while every other
//! object goes on being reconciled.

/// What went wrong in one reconcile.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A call to the API server failed.
    #[error("{action}: {source}")]
    Kube {
        /// What the controller was doing ("patch BackupRepo s3/status").
        action: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The object (or one it refers to) is invalid as written; `field` is its JSON path.
    #[error("{field}: {message}")]
    Invalid {
        /// The path of the offending field, e.g. `spec.storageProviderRef`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// An object the reconcile needs does not exist (yet).
    #[error("{kind} {name} not found")]
    Missing {
        /// Its kind.
        kind: String,
        /// Its namespace/name.
        name: String,
    },
    /// Anything else, with context naming the object.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// An API error, with what the controller was doing.
    pub fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            action: action.into(),
            source,
        }
    }

    /// An invalid field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Whether retrying the same reconcile soon can succeed without anyone changing an
    /// object: API server unavailable, throttled, a conflicting write.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Kube { source, .. } => match source {
                kube::Error::Api(status) => {
                    matches!(status.code, 409 | 429 | 500 | 502 | 503 | 504)
                }
                _ => true,
            },
            Error::Invalid { .. } | Error::Missing { .. } => false,
            Error::Other(_) => true,
        }
    }
}

/// The result of one reconcile step.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds the action to a kube result: `api.get(n).await.context_kube("get BackupRepo n")`.
pub trait KubeResultExt<T> {
    /// Wraps the error with `action`.
    fn during(self, action: impl FnOnce() -> String) -> Result<T>;
}

impl<T> KubeResultExt<T> for std::result::Result<T, kube::Error> {
    fn during(self, action: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::kube(action(), source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("boom", "Reason")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn conflicts_and_server_errors_are_transient_bad_objects_are_not() {
        assert!(Error::kube("patch", api_error(409)).is_transient());
        assert!(Error::kube("get", api_error(503)).is_transient());
        assert!(!Error::kube("create", api_error(422)).is_transient());
        assert!(!Error::kube("get", api_error(403)).is_transient());
        assert!(
            !Error::invalid("spec.storageProviderRef", "no such StorageProvider").is_transient()
        );
    }
}
