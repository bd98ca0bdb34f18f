//! Where the repository is and what opens it: storage and key from the environment and datasafed.conf.

use super::*;
use dprepo_repo_format::repo::{IndexLoad, IndexPlace};

pub(super) struct Env {
    pub(super) storage: Arc<dyn Storage>,
    pub(super) key: RepoKey,
    /// DATASAFED_BACKEND_BASE_PATH, normalised (`/` when unset).
    pub(super) base: String,
}

pub(super) fn env(cli: &DatasafedCli) -> Result<Env> {
    let storage = storage(cli)?;
    let key = repo_key(cli)?;
    let base = normalize(
        "/",
        &std::env::var("DATASAFED_BACKEND_BASE_PATH").unwrap_or_default(),
    );
    Ok(Env { storage, key, base })
}

pub(super) fn storage(cli: &DatasafedCli) -> Result<Arc<dyn Storage>> {
    let cache_dir = std::env::var_os("DPREPO_CACHE_DIR").map(PathBuf::from);
    let conf = cli
        .conf
        .clone()
        .or_else(|| env_nonempty("DATASAFED_CONFIG").map(PathBuf::from));
    if let Some(storage) = configured_storage(conf, cache_dir.clone(), false)? {
        return Ok(storage);
    }
    if let Some(location) = env_nonempty("DPREPO_REPOSITORY") {
        let s3 = || Ok(S3Options::from_url(&location)?.from_env());
        return repository::storage_at(&location, s3, cache_dir, false);
    }
    bail!(
        "no storage configured: set DATASAFED_LOCAL_BACKEND_PATH, or write a [storage] section to \
         {DEFAULT_CONFIG} (or the file named by -c/--conf or DATASAFED_CONFIG), or set DPREPO_REPOSITORY"
    )
}

/// The repository key, first set wins: DPREPO_ACCESS_KEY_FILE, DPREPO_PASSWORD,
/// DPREPO_PASSWORD_FILE, DATASAFED_ENCRYPTION_PASS_PHRASE, DATASAFED_KOPIA_PASSWORD,
/// then the config's `[storage]` ([`configured_key`]). There is no default: without a
/// key every command fails (never an unencrypted repository).
pub(super) fn repo_key(cli: &DatasafedCli) -> Result<RepoKey> {
    if let Some(file) = env_nonempty("DPREPO_ACCESS_KEY_FILE") {
        return repository::access_key_file(std::path::Path::new(&file));
    }
    let file = std::env::var_os("DPREPO_PASSWORD_FILE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    if let Some(pw) = repository::password_without_prompt(file.as_deref())? {
        return RepoKey::from_secret(pw, "DPREPO_PASSWORD or DPREPO_PASSWORD_FILE");
    }
    for var in [
        "DATASAFED_ENCRYPTION_PASS_PHRASE",
        "DATASAFED_KOPIA_PASSWORD",
    ] {
        if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            return RepoKey::from_secret(v.into_encoded_bytes(), var);
        }
    }
    let conf = cli
        .conf
        .clone()
        .or_else(|| env_nonempty("DATASAFED_CONFIG").map(PathBuf::from));
    if let Some(key) = configured_key(conf.as_deref())? {
        return Ok(key);
    }
    let conf = config_file(conf.as_deref()).unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    bail!(
        "no repository key: set DPREPO_ACCESS_KEY_FILE, DPREPO_PASSWORD_FILE, DPREPO_PASSWORD or DATASAFED_ENCRYPTION_PASS_PHRASE, or add dprepo_access_key_file or dprepo_password_file to [storage] in {}",
        conf.display()
    )
}

/// Whether a command reads blobs (trees and file contents), and so may need the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Blobs {
    /// `list`, `stat`, `rm`, `rmdir`, `access-key`: the catalogue and the manifests are
    /// all they read, so the index is never loaded, and no index cache is opened.
    Never,
    /// `push`, `pull`, `mkdir`: the index is loaded when the first blob is looked up
    /// (a backup after its session is ready, a pull at its first read), into the index
    /// cache of `DPREPO_CACHE_DIR`.
    OnDemand,
}

/// Open with the context's key, without loading the index (as `dprepo backup`'s
/// deferred open): a WAL archive leaves one index file per push until gc compacts them,
/// and a fresh process (every call of a pod) would read them all at open whether or
/// not it reads a blob.
pub(super) async fn open_existing(
    ctx: &Env,
    blobs: Blobs,
) -> std::result::Result<Repository, EngineError> {
    let place = match blobs {
        Blobs::Never => IndexPlace::Memory,
        Blobs::OnDemand => crate::repository::default_index_place(),
    };
    ctx.key
        .open_with_load(ctx.storage.clone(), &place, IndexLoad::Deferred)
        .await
}

/// Print what changed about where the index is kept (a damaged cache made again, a
/// full disk) as warnings. The index loads at the first blob lookup, long after the
/// open (`IndexLoad::Deferred`), so calls that look blobs up print them again after.
pub(super) fn warn_index_notes(repo: &Repository) {
    for note in repo.take_index_notes() {
        eprintln!("Warning: {note}");
    }
}

/// Open the repository; `create` initialises one when the location holds none (losing
/// an init race to another process is fine: its repository is opened instead).
/// `None`: no repository and `create` is false (an empty bucket).
pub(super) async fn open(ctx: &Env, create: bool, blobs: Blobs) -> Result<Option<Repository>> {
    match open_existing(ctx, blobs).await {
        Ok(r) => {
            warn_index_notes(&r);
            return Ok(Some(r));
        }
        Err(EngineError::NoRepository { .. }) if !create => return Ok(None),
        Err(EngineError::NoRepository { .. }) => {}
        Err(e @ EngineError::WrongKey) => return Err(wrong_key(ctx, e)),
        Err(e) => return Err(e.into()),
    }
    let password = match &ctx.key {
        RepoKey::Password(pw) => pw,
        RepoKey::Access(_) => bail!(
            "no repository at {}: an access key opens an existing repository only; create it with a password (`dprepo init`, or this command with DPREPO_PASSWORD_FILE)",
            ctx.storage.location()
        ),
    };
    match Repository::init(ctx.storage.clone(), password, InitOptions::default()).await {
        Ok(r) => Ok(Some(r)),
        Err(EngineError::RepositoryExists { .. }) => {
            // Another process created it. A third one that lost the config race may
            // still have its (same-password, other-master) key file in keys/ for a
            // moment before it deletes it; opening with that key fails, so try again.
            let mut attempt = 0;
            loop {
                match open_existing(ctx, blobs).await {
                    Ok(r) => return Ok(Some(r)),
                    Err(e @ EngineError::WrongKey) => return Err(wrong_key(ctx, e)),
                    Err(_) if attempt < 10 => {
                        attempt += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "creating a repository at {}",
            ctx.storage.location()
        ))),
    }
}

/// A repository exists at the storage but the key opens none of its key files. The
/// message names the location and says "another key", so callers (the controller's
/// pre-check) can tell this apart from storage or credential errors.
pub(super) fn wrong_key(ctx: &Env, e: EngineError) -> anyhow::Error {
    anyhow::Error::new(e).context(format!(
        "the repository at {} was created with another key",
        ctx.storage.location()
    ))
}

// ---------------------------------------------------------------------------------
// Paths and the namespace.
