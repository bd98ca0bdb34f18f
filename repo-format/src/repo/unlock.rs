//! Unlocking a stored repository: its config and the key file that opens it, with a
//! password or an access key.

use super::init::{describe_files, repository_files};
use super::*;

/// What unlocking a repository yields: its keys, its config and the key file that
/// opened it.
pub(super) struct Unlocked {
    pub(super) master: MasterKey,
    pub(super) keys: Keys,
    pub(super) generation: u32,
    pub(super) config: Config,
    pub(super) key_name: String,
}

/// The stored config of the repository in `storage`.
///
/// # Errors
/// [`Error::NoRepository`] if there is no config and nothing but key files;
/// [`Error::Corrupt`] if the config is missing but data, index files or snapshots are
/// there; storage errors.
pub(super) async fn read_config(storage: &dyn Storage) -> Result<Vec<u8>> {
    match storage.get(CONFIG_NAME).await {
        Ok(b) => Ok(b),
        Err(Error::NotFound { .. }) => {
            // Key files alone: an init in progress or interrupted (init says which
            // way out). Anything more is a repository that lost its config, which a
            // new init would not bring back.
            let held: Vec<(&str, usize)> = repository_files(storage)
                .await?
                .into_iter()
                .filter(|(dir, _)| *dir != KEYS_DIR)
                .collect();
            if held.is_empty() {
                return Err(Error::NoRepository {
                    location: storage.location(),
                });
            }
            Err(Error::corrupt(
                format!("repository at {}", storage.location()),
                format!(
                    "its config is missing, but {}: put a copy of the config back (`dprepo init` cannot recover them: a new repository has a new key)",
                    describe_files(&held)
                ),
            ))
        }
        Err(e) => Err(e),
    }
}

/// Find the key file that opens with `password` and whose master key opens the config.
///
/// # Errors
/// As [`Repository::open`].
pub(super) async fn unlock_with_password(
    storage: &dyn Storage,
    config_bytes: &[u8],
    password: &[u8],
) -> Result<Unlocked> {
    let mut key_names: Vec<String> = storage
        .list(KEYS_DIR)
        .await?
        .into_iter()
        .map(|b| b.name)
        .collect();
    key_names.sort();
    let mut opened = None;
    let mut last_error = None;
    let mut config_error = None;
    // The first key file that did not open and is damaged: the password may be its.
    let mut damaged_key = None;
    for name in key_names.iter().take(MAX_KEYS_TRIED) {
        let bytes = match storage.get(name).await {
            Ok(bytes) => bytes,
            // Deleted since the listing: an init that lost the race removes its key.
            Err(Error::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        let key = match KeyFile::decode(&bytes, name) {
            Ok(k) => k,
            Err(e) => {
                if let Error::Corrupt { reason, .. } = &e {
                    damaged_key.get_or_insert_with(|| (name.clone(), reason.clone()));
                }
                last_error = Some(e);
                continue;
            }
        };
        if key.kind == KeyKind::Access {
            continue; // no password opens it (and it is not damaged: it decoded)
        }
        let pw = password_owned(password);
        let Some(master) = run_cpu(move || key.open(&pw)).await?? else {
            // A wrong password and a damaged key file both fail to unwrap; the name
            // (the storage id of the bytes written, L1) tells them apart.
            if crate::layout::id_in(KEYS_DIR, name) != Some(BlobId::of_stored(&bytes)) {
                damaged_key.get_or_insert_with(|| {
                    (
                        name.clone(),
                        "its bytes do not match its name (storage id)".to_string(),
                    )
                });
            }
            continue;
        };
        // The password can open a key of another master key: the key an init wrote
        // before it lost the race to create the config, until it deletes that key.
        // The right key is the one whose master key opens the config.
        match open_config(storage, master, config_bytes, name).await? {
            Ok(unlocked) => {
                opened = Some(unlocked);
                break;
            }
            Err(e) => config_error = Some(e),
        }
    }
    opened.ok_or_else(|| match (config_error, last_error) {
        (Some(e), _) => e,
        (None, Some(e @ Error::UnsupportedVersion { .. })) => e,
        _ if key_names.is_empty() => Error::corrupt("repository", "no key files in keys/"),
        _ => match damaged_key {
            Some((name, reason)) => Error::corrupt(
                name,
                format!(
                    "{reason}; no intact key file opens with this password \
                             (if it is this key's, restore the key file from a copy)"
                ),
            ),
            None => Error::WrongKey,
        },
    })
}

/// Open key file `keys/<id>` named by access key `key` (SPEC.md section 19): it must
/// still be listed in `keys/` (a revoked key is deleted; listings are never served from
/// a cache), match its name, be an access key file and open with `key`, and its master
/// key must open the config.
///
/// # Errors
/// [`Error::KeyRevoked`] if `keys/` does not list it; [`Error::Corrupt`] if it is damaged
/// or not an access key file, or the config does not open; [`Error::WrongKey`] if `key`
/// does not open it; storage errors.
pub(super) async fn unlock_with_access_key(
    storage: &dyn Storage,
    config_bytes: &[u8],
    key: &AccessKey,
) -> Result<Unlocked> {
    let name = key.key_name();
    let listed = storage.list(KEYS_DIR).await?;
    if !listed.iter().any(|b| b.name == name) {
        return Err(Error::KeyRevoked {
            key: key.key_id().short(),
        });
    }
    let bytes = match storage.get(&name).await {
        Ok(b) => b,
        // Deleted since the listing.
        Err(Error::NotFound { .. }) => {
            return Err(Error::KeyRevoked {
                key: key.key_id().short(),
            })
        }
        Err(e) => return Err(e),
    };
    if BlobId::of_stored(&bytes) != key.key_id() {
        return Err(Error::corrupt(
            &name,
            "its bytes do not match its name (storage id); restore the key file from a copy",
        ));
    }
    let file = KeyFile::decode(&bytes, &name)?;
    if file.kind != KeyKind::Access {
        return Err(Error::corrupt(
            &name,
            "the access key names a password key file (access keys open access key files only)",
        ));
    }
    let master = file.open_access(key).ok_or(Error::WrongKey)?;
    open_config(storage, master, config_bytes, &name).await?
}

/// The keys of `master` (its generation, SPEC.md section 5.1) and the config they open:
/// the config must authenticate under the generation's own encryption key, which makes
/// the newest committed generation the only one that opens the repository. The outer
/// error is a storage error; the inner one says why this key does not open it.
async fn open_config(
    storage: &dyn Storage,
    master: MasterKey,
    config_bytes: &[u8],
    key_name: &str,
) -> Result<Result<Unlocked>> {
    let generation = crate::keyring::generation_of_master(storage, &master).await?;
    let config = match Config::decode(&generation.keys.newest_only(), config_bytes) {
        Ok(c) => c,
        Err(Error::Corrupt { .. }) if generation.number < generation.newest_listed => {
            return Ok(Err(Error::KeyRetired {
                key: key_name.to_string(),
                generation: generation.number,
                newest: generation.newest_listed,
            }))
        }
        Err(e) => return Ok(Err(e)),
    };
    let rotated = config.version >= crate::config::REPOSITORY_VERSION_ROTATED;
    if rotated != (generation.number >= 2) {
        return Ok(Err(Error::corrupt(
            CONFIG_NAME,
            format!(
                "repository version {} opened by master key generation {}",
                config.version, generation.number
            ),
        )));
    }
    Ok(Ok(Unlocked {
        master,
        keys: generation.keys,
        generation: generation.number,
        config,
        key_name: key_name.to_string(),
    }))
}

pub(super) fn password_owned(p: &[u8]) -> Vec<u8> {
    p.to_vec()
}
