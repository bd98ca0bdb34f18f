//! The repository a datasafed setup names: `DATASAFED_LOCAL_BACKEND_PATH` or the
//! `[storage]` section of datasafed.conf, and the key that section may name. Shared by
//! `datasafed` and by `dprepo` run without `-r` (in a pod prepared for datasafed, dprepo
//! finds the repository the same way).

use super::RepoKey;
use anyhow::{anyhow, bail, Context, Result};
use dprepo_repo_format::storage::{read_ini_section, S3Options, Storage};
use std::path::PathBuf;
use std::sync::Arc;

/// Where datasafed looks for its config when neither -c/--conf nor DATASAFED_CONFIG names one.
pub(crate) const DEFAULT_CONFIG: &str = "/etc/datasafed/datasafed.conf";

pub(crate) fn env_nonempty(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
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
        return super::storage_at(&location, unreachable_s3, None, true).map(Some);
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
            super::storage_at(&location, unreachable_s3, None, true).map(Some)
        }
        "s3" => {
            let root = root.trim_start_matches("s3://").trim_matches('/');
            let (bucket, prefix) = root.split_once('/').unwrap_or((root, ""));
            if bucket.is_empty() {
                bail!("{path}: root = {root}: expected BUCKET or BUCKET/PREFIX");
            }
            let mut o = S3Options::new(bucket, prefix);
            super::apply_s3_settings(&mut o, &section, &path)?;
            if let Some(e) = &o.endpoint {
                if !e.contains("://") {
                    o.endpoint = Some(format!("https://{e}"));
                }
            }
            let location = format!("s3://{bucket}/{}", o.prefix);
            super::storage_at(&location, || Ok(o.from_env()), cache_dir, no_cache).map(Some)
        }
        other => bail!("{path}: storage type {other:?} is not supported (local, s3)"),
    }
}

pub(crate) fn unreachable_s3() -> Result<S3Options> {
    bail!("not an s3:// location")
}

/// The datasafed config that applies: `conf` (-c, DATASAFED_CONFIG), else the default
/// file if it exists.
pub(crate) fn config_file(conf: Option<&std::path::Path>) -> Option<PathBuf> {
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
        return super::access_key_file(&relative(file))
            .with_context(|| format!("{shown}: dprepo_access_key_file"))
            .map(Some);
    }
    if let Some(text) = get("dprepo_access_key") {
        let key = dprepo_repo_format::key::AccessKey::parse(text.as_bytes())
            .with_context(|| format!("{shown}: dprepo_access_key"))?;
        return Ok(Some(RepoKey::Access(key)));
    }
    if let Some(file) = get("dprepo_password_file") {
        let secret = super::read_secret_file(&relative(file), "password file")
            .with_context(|| format!("{shown}: dprepo_password_file"))?;
        return RepoKey::from_secret(secret, &format!("{shown}: dprepo_password_file")).map(Some);
    }
    if let Some(pw) = get("dprepo_password") {
        return RepoKey::from_secret(pw.into_bytes(), &format!("{shown}: dprepo_password"))
            .map(Some);
    }
    Ok(None)
}
