//! Where the repository is and what opens it: storage and key from the environment and datasafed.conf.

use super::*;

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

pub(super) fn env_nonempty(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
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

/// The storage a datasafed setup names, first match wins: `DATASAFED_LOCAL_BACKEND_PATH`,
/// then the config file `conf` (an error if given and missing), then
/// /etc/datasafed/datasafed.conf. `None` when there is none of them. Shared by `datasafed`
/// and by `dprepo` run without `-r` (in a pod prepared for datasafed, dprepo finds the
/// repository the same way).
pub(crate) fn configured_storage(
    conf: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    no_cache: bool,
) -> Result<Option<Arc<dyn Storage>>> {
    if let Some(dir) = env_nonempty("DATASAFED_LOCAL_BACKEND_PATH") {
        let path = std::path::absolute(dir.trim())
            .with_context(|| format!("DATASAFED_LOCAL_BACKEND_PATH {dir}"))?;
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!(
                "the path \"{}\" specified by DATASAFED_LOCAL_BACKEND_PATH is not a directory",
                path.display()
            ),
            Err(_) => bail!(
                "the path \"{}\" specified by DATASAFED_LOCAL_BACKEND_PATH does not exist",
                path.display()
            ),
        }
        let location = path.to_string_lossy().into_owned();
        return repository::storage_at(&location, unreachable_s3, None, true).map(Some);
    }
    let explicit = conf.is_some();
    let conf = conf.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    if !conf.is_file() {
        if explicit {
            bail!("config file {} does not exist", conf.display());
        }
        return Ok(None);
    }
    let path = conf.to_string_lossy().into_owned();
    let section = read_ini_section(&path, "storage");
    let get = |k: &str| {
        section
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let kind = get("type").ok_or_else(|| anyhow!("{path}: [storage] has no `type`"))?;
    let root = get("root").ok_or_else(|| anyhow!("{path}: [storage] has no `root`"))?;
    match kind.as_str() {
        "local" => {
            let location = root.strip_prefix("file://").unwrap_or(&root).to_string();
            repository::storage_at(&location, unreachable_s3, None, true).map(Some)
        }
        "s3" => {
            let root = root.trim_start_matches("s3://").trim_matches('/');
            let (bucket, prefix) = root.split_once('/').unwrap_or((root, ""));
            if bucket.is_empty() {
                bail!("{path}: root = {root}: expected BUCKET or BUCKET/PREFIX");
            }
            let mut o = S3Options::new(bucket, prefix);
            repository::apply_s3_settings(&mut o, &section, &path)?;
            if let Some(e) = &o.endpoint {
                if !e.contains("://") {
                    o.endpoint = Some(format!("https://{e}"));
                }
            }
            let location = format!("s3://{bucket}/{}", o.prefix);
            repository::storage_at(&location, || Ok(o.from_env()), cache_dir, no_cache).map(Some)
        }
        other => bail!("{path}: storage type {other:?} is not supported (local, s3)"),
    }
}

pub(super) fn unreachable_s3() -> Result<S3Options> {
    bail!("not an s3:// location")
}

/// The datasafed config that applies: `conf` (-c, DATASAFED_CONFIG), else the default
/// file if it exists.
pub(super) fn config_file(conf: Option<&std::path::Path>) -> Option<PathBuf> {
    match conf {
        Some(c) => Some(c.to_path_buf()),
        None => {
            let default = PathBuf::from(DEFAULT_CONFIG);
            default.is_file().then_some(default)
        }
    }
}

/// The repository key a datasafed config names in `[storage]`, first set wins:
/// `dprepo_access_key_file`, `dprepo_access_key`, `dprepo_password_file`,
/// `dprepo_password` (a password file or value may hold an access key). Relative files
/// are relative to the config's directory. `None` when the config is absent or names no
/// key. Shared by `datasafed` and `dprepo` run without `-r`.
///
/// # Errors
/// Unreadable or invalid key files.
pub(crate) fn configured_key(conf: Option<&std::path::Path>) -> Result<Option<RepoKey>> {
    let Some(path) = config_file(conf).filter(|p| p.is_file()) else {
        return Ok(None);
    };
    let shown = path.to_string_lossy().into_owned();
    let section = read_ini_section(&shown, "storage");
    let get = |k: &str| {
        section
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let relative = |file: String| {
        let file = PathBuf::from(file);
        match path.parent() {
            Some(dir) if file.is_relative() => dir.join(file),
            _ => file,
        }
    };
    if let Some(file) = get("dprepo_access_key_file") {
        return repository::access_key_file(&relative(file))
            .with_context(|| format!("{shown}: dprepo_access_key_file"))
            .map(Some);
    }
    if let Some(text) = get("dprepo_access_key") {
        let key = dprepo_repo_format::key::AccessKey::parse(text.as_bytes())
            .with_context(|| format!("{shown}: dprepo_access_key"))?;
        return Ok(Some(RepoKey::Access(key)));
    }
    if let Some(file) = get("dprepo_password_file") {
        let secret = repository::read_secret_file(&relative(file), "password file")
            .with_context(|| format!("{shown}: dprepo_password_file"))?;
        return RepoKey::from_secret(secret, &format!("{shown}: dprepo_password_file")).map(Some);
    }
    if let Some(pw) = get("dprepo_password") {
        return RepoKey::from_secret(pw.into_bytes(), &format!("{shown}: dprepo_password"))
            .map(Some);
    }
    Ok(None)
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

/// Open with the context's key.
pub(super) async fn open_existing(ctx: &Env) -> std::result::Result<Repository, EngineError> {
    ctx.key
        .open(
            ctx.storage.clone(),
            &crate::repository::default_index_place(),
        )
        .await
}

/// Open the repository; `create` initialises one when the location holds none (losing
/// an init race to another process is fine: its repository is opened instead).
/// `None`: no repository and `create` is false (an empty bucket).
pub(super) async fn open(ctx: &Env, create: bool) -> Result<Option<Repository>> {
    match open_existing(ctx).await {
        Ok(r) => {
            for note in r.take_index_notes() {
                eprintln!("Warning: {note}");
            }
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
                match open_existing(ctx).await {
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
