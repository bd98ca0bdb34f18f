//! Where a repository's key comes from (a decision taken for dprepo, CONTROLLER.md
//! section 3, dprepo additions 2), first match wins:
//!
//! 1. the key `dprepoPassword` of the BackupRepo's credential Secret;
//! 2. the Secret named by the annotation `dprepo.io/key-secret: NAMESPACE/NAME` (its key
//!    `dprepoPassword`);
//! 3. a Secret the controller generates once, `dprepo-key-<repo>` in the controller's
//!    namespace, holding 32 random bytes (base64url), **not owned by the BackupRepo**:
//!    deleting the BackupRepo must not delete the only key of the data it stored. A
//!    BackupRepo created again under the same name finds the same key. Delete it on
//!    purpose with `kubectl delete secret -n <ns> dprepo-key-<repo>` once the repository's
//!    data is gone too.
//!
//! A key is one line of at most [`MAX_KEY_BYTES`] bytes: `DPREPO_PASSWORD_FILE` readers
//! take the first line of the file, so a key with a line break would silently become
//! another key.

use base64::Engine;

use crate::api::labels::annotation::DPREPO_KEY_SECRET;
use crate::api::BackupRepo;
use crate::error::Error;

/// The Secret key holding a repository key, in every source.
pub const KEY_FIELD: &str = "dprepoPassword";

/// Longest key accepted.
pub const MAX_KEY_BYTES: usize = 4096;

/// The label on a generated key Secret naming its BackupRepo.
pub const KEY_FOR_LABEL: &str = "dprepo.io/key-for";

/// The annotation on a BackupRepo recording which Secret its key came from (a change
/// re-runs the pre-check and rewrites the tool Secrets).
pub const KEY_SOURCE_ANNOTATION: &str = "dprepo.io/key-source";

/// Where the key is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `dprepoPassword` of the credential Secret.
    Credential {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// The Secret named by `dprepo.io/key-secret`.
    Named {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// The controller's own Secret (created when missing).
    Generated {
        /// Its namespace (`CM_NAMESPACE`).
        namespace: String,
        /// Its name (`dprepo-key-<repo>`).
        name: String,
    },
}

impl KeySource {
    /// The Secret's namespace and name.
    pub fn secret(&self) -> (&str, &str) {
        match self {
            KeySource::Credential { namespace, name }
            | KeySource::Named { namespace, name }
            | KeySource::Generated { namespace, name } => (namespace, name),
        }
    }

    /// A stable text naming the source (the value of [`KEY_SOURCE_ANNOTATION`]); it names
    /// the Secret, never its content.
    pub fn id(&self) -> String {
        let (ns, name) = self.secret();
        let kind = match self {
            KeySource::Credential { .. } => "credential",
            KeySource::Named { .. } => "secret",
            KeySource::Generated { .. } => "generated",
        };
        format!("{kind}:{ns}/{name}#{KEY_FIELD}")
    }

    /// How messages name it: "key dprepoPassword of Secret ns/name".
    pub fn describe(&self) -> String {
        let (ns, name) = self.secret();
        format!("key {KEY_FIELD} of Secret {ns}/{name}")
    }
}

/// Decides where `repo`'s key comes from. `credential_has_key`: whether the credential
/// Secret (already read) has [`KEY_FIELD`].
///
/// # Errors
/// [`Error::Invalid`] naming the annotation when it is not `NAMESPACE/NAME`.
pub fn key_source(
    repo: &BackupRepo,
    credential_has_key: bool,
    controller_namespace: &str,
) -> Result<KeySource, Error> {
    if credential_has_key {
        if let Some(c) = &repo.spec.credential {
            return Ok(KeySource::Credential {
                namespace: c.namespace.clone().unwrap_or_default(),
                name: c.name.clone().unwrap_or_default(),
            });
        }
    }
    if let Some(value) = repo
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DPREPO_KEY_SECRET))
    {
        let field = format!("metadata.annotations[{DPREPO_KEY_SECRET}]");
        let (ns, name) = value
            .trim()
            .split_once('/')
            .ok_or_else(|| Error::invalid(&field, format!("{value:?} is not NAMESPACE/NAME")))?;
        let dns = |s: &str| {
            !s.is_empty()
                && s.len() <= 253
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        };
        if !dns(ns) || !dns(name) {
            return Err(Error::invalid(
                &field,
                format!("{value:?} is not NAMESPACE/NAME of a Secret"),
            ));
        }
        return Ok(KeySource::Named {
            namespace: ns.into(),
            name: name.into(),
        });
    }
    Ok(KeySource::Generated {
        namespace: controller_namespace.into(),
        name: super::names::key_secret_name(&repo.metadata.name.clone().unwrap_or_default()),
    })
}

/// Checks a key read from `source`.
///
/// # Errors
/// [`Error::Invalid`] naming the Secret: empty, longer than [`MAX_KEY_BYTES`], or more
/// than one line.
pub fn check_key(source: &KeySource, key: &[u8]) -> Result<(), Error> {
    let field = match source {
        KeySource::Credential { .. } => format!("spec.credential ({})", source.describe()),
        _ => source.describe(),
    };
    if key.is_empty() {
        return Err(Error::invalid(field, "the repository key is empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::invalid(
            field,
            format!(
                "the repository key has {} bytes, more than the {MAX_KEY_BYTES} accepted",
                key.len()
            ),
        ));
    }
    if key.iter().any(|b| *b == b'\n' || *b == b'\r') {
        return Err(Error::invalid(
            field,
            "the repository key must be one line (password files are read up to the first line break)",
        ));
    }
    Ok(())
}

/// A new random key: 32 bytes from the operating system, base64url without padding.
///
/// # Errors
/// The random source failed.
pub fn generate_key() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::backuprepo::{BackupRepoSpec, PvReclaimPolicy};
    use k8s_openapi::api::core::v1::SecretReference;

    fn repo(annotation: Option<&str>, credential: bool) -> BackupRepo {
        let mut r = BackupRepo::new(
            "s3-repo",
            BackupRepoSpec {
                storage_provider_ref: "s3".into(),
                access_method: None,
                volume_capacity: None,
                pv_reclaim_policy: PvReclaimPolicy::Retain,
                config: None,
                credential: credential.then(|| SecretReference {
                    name: Some("creds".into()),
                    namespace: Some("kb-system".into()),
                }),
                path_prefix: None,
            },
        );
        if let Some(a) = annotation {
            r.metadata.annotations = Some([(DPREPO_KEY_SECRET.to_string(), a.to_string())].into());
        }
        r
    }

    #[test]
    fn the_credential_key_wins_then_the_annotation_then_a_generated_secret() {
        let r = repo(Some("keys/repo-key"), true);
        assert_eq!(
            key_source(&r, true, "dp").unwrap(),
            KeySource::Credential {
                namespace: "kb-system".into(),
                name: "creds".into()
            }
        );
        assert_eq!(
            key_source(&r, false, "dp").unwrap(),
            KeySource::Named {
                namespace: "keys".into(),
                name: "repo-key".into()
            }
        );
        let g = key_source(&repo(None, true), false, "dp").unwrap();
        assert_eq!(
            g,
            KeySource::Generated {
                namespace: "dp".into(),
                name: "dprepo-key-s3-repo".into()
            }
        );
        assert_eq!(g.id(), "generated:dp/dprepo-key-s3-repo#dprepoPassword");
    }

    #[test]
    fn a_malformed_annotation_is_an_invalid_field() {
        for bad in ["no-slash", "/name", "ns/", "NS/Name", "a/b/c"] {
            let err = key_source(&repo(Some(bad), false), false, "dp").unwrap_err();
            assert!(!err.is_transient());
            assert!(
                err.to_string()
                    .starts_with("metadata.annotations[dprepo.io/key-secret]: "),
                "{err}"
            );
        }
    }

    #[test]
    fn keys_are_one_nonempty_line() {
        let s = KeySource::Named {
            namespace: "a".into(),
            name: "b".into(),
        };
        assert!(check_key(&s, b"secret").is_ok());
        assert!(check_key(&s, b"").is_err());
        assert!(check_key(&s, b"two\nlines").is_err());
        assert!(check_key(&s, &[b'x'; MAX_KEY_BYTES + 1]).is_err());
        let k = generate_key().unwrap();
        assert_eq!(k.len(), 43);
        assert!(check_key(&s, k.as_bytes()).is_ok());
        assert_ne!(k, generate_key().unwrap());
    }
}
