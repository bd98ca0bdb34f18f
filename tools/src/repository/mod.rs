//! Locating the repository and obtaining the password.

use anyhow::{bail, Context, Result};
use dprepo_repo_format::key::{password_hashes, AccessKey};
use dprepo_repo_format::repo::{IndexLoad, IndexPlace};
use dprepo_repo_format::storage::{
    read_ini_section, CachedStorage, CountingStorage, DryRunStorage, LocalStorage, RequestStats,
    S3Options, S3Storage, Storage,
};
use dprepo_repo_format::Repository;
use std::io::IsTerminal;
use std::sync::{Arc, OnceLock};

use crate::Cli;

pub(crate) mod datasafed_conf;

/// Request counters of this process's storage, when one was opened.
static REQUESTS: OnceLock<Arc<RequestStats>> = OnceLock::new();

/// Turn `-r`/`DPREPO_REPOSITORY` into a storage backend: a local path or `file://` URL,
/// or `s3://bucket/prefix` (remote backends get request counting and a local cache of
/// immutable metadata).
///
/// Without `-r`/`DPREPO_REPOSITORY`, the storage a datasafed setup names
/// (`DATASAFED_LOCAL_BACKEND_PATH`, then `--datasafed-conf`/`DATASAFED_CONFIG`, then
/// /etc/datasafed/datasafed.conf): in a pod the controller prepared for datasafed,
/// `dprepo gc` finds the repository the backups use.
pub fn storage(cli: &Cli) -> Result<Arc<dyn Storage>> {
    let Some(location) = cli.repo.as_deref().filter(|s| !s.is_empty()) else {
        if let Some(storage) = datasafed_conf::configured_storage(
            cli.datasafed_conf.clone(),
            cli.cache_dir.clone(),
            cli.no_cache,
        )? {
            return Ok(storage);
        }
        bail!(
            "no repository given: use -r/--repo or set DPREPO_REPOSITORY (or, where datasafed is \
             set up, DATASAFED_LOCAL_BACKEND_PATH or a datasafed config: --datasafed-conf, \
             DATASAFED_CONFIG, /etc/datasafed/datasafed.conf)"
        );
    };
    storage_at(
        location,
        || s3_options(cli, location),
        cli.cache_dir.clone(),
        cli.no_cache,
    )
}

/// The storage at `location` with the S3 settings of the command line, but those of
/// `repo_config` (an INI file like `--repo-config`) in place of `--repo-config`: the
/// source of `copy`.
///
/// # Errors
/// As [`storage_at`].
pub fn storage_with_config(
    cli: &Cli,
    location: &str,
    repo_config: Option<&std::path::Path>,
) -> Result<Arc<dyn Storage>> {
    storage_at(
        location,
        || s3_options_with(cli, location, repo_config),
        cli.cache_dir.clone(),
        cli.no_cache,
    )
}

/// The storage backend at `location` (a path, `file://` URL or `s3://` URL); `s3` gives
/// the S3 settings when it is an S3 location. Shared by `dprepo` and `datasafed`.
pub fn storage_at(
    location: &str,
    s3: impl FnOnce() -> Result<S3Options>,
    cache_dir: Option<std::path::PathBuf>,
    no_cache: bool,
) -> Result<Arc<dyn Storage>> {
    let backend: Arc<dyn Storage> = if let Some(path) = location.strip_prefix("file://") {
        Arc::new(LocalStorage::new(path))
    } else if location.starts_with("s3://") {
        Arc::new(S3Storage::new(s3()?)?)
    } else if let Some((scheme, _)) = location.split_once("://") {
        bail!(
            "repository {location}: unsupported scheme {scheme}:// (use a path, file:// or s3://)"
        );
    } else {
        Arc::new(LocalStorage::new(location))
    };
    let counting = Arc::new(CountingStorage::new(backend));
    let _ = REQUESTS.set(counting.stats());
    if !location.starts_with("s3://") || no_cache {
        return Ok(counting);
    }
    let cache_base = cache_dir.or_else(default_cache_dir);
    Ok(match cache_base {
        Some(base) => Arc::new(CachedStorage::new(counting, &base)),
        None => counting,
    })
}

/// The index lives in the persistent cache (memory stays flat as the repository grows);
/// with `--no-cache`, or without a cache directory, in a private one deleted at exit.
pub fn index_place(cli: &Cli) -> IndexPlace {
    match &cli.cache_dir {
        _ if cli.no_cache => IndexPlace::Temporary(std::env::temp_dir()),
        Some(base) => IndexPlace::Cache(base.clone()),
        None => default_index_place(),
    }
}

/// Where `datasafed` keeps the index: the default cache directory (`DPREPO_CACHE_DIR`,
/// then XDG), else a private temporary one.
pub fn default_index_place() -> IndexPlace {
    let dir = std::env::var_os("DPREPO_CACHE_DIR")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(default_cache_dir);
    match dir {
        Some(base) => IndexPlace::Cache(base),
        None => IndexPlace::Temporary(std::env::temp_dir()),
    }
}

fn default_cache_dir() -> Option<std::path::PathBuf> {
    let xdg = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from);
    xdg.or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))
        .map(|d| d.join("dprepo"))
}

/// S3 options: flags, then the repository config file, then AWS environment variables
/// and shared config files.
fn s3_options(cli: &Cli, url: &str) -> Result<S3Options> {
    s3_options_with(cli, url, cli.repo_config.as_deref())
}

/// [`s3_options`] with `repo_config` in place of `--repo-config`.
fn s3_options_with(
    cli: &Cli,
    url: &str,
    repo_config: Option<&std::path::Path>,
) -> Result<S3Options> {
    let mut o = S3Options::from_url(url)?;
    if let Some(file) = repo_config {
        let path = file.to_string_lossy();
        if !file.exists() {
            bail!("repository config file {path} does not exist");
        }
        apply_s3_settings(&mut o, &read_ini_section(&path, "s3"), &path)?;
    }
    if let Some(e) = &cli.s3_endpoint {
        o.endpoint = Some(e.clone());
    }
    if let Some(r) = &cli.s3_region {
        o.region = Some(r.clone());
    }
    if cli.s3_path_style {
        o.path_style = Some(true);
    }
    if cli.s3_virtual_hosted {
        o.path_style = Some(false);
    }
    if cli.s3_allow_http {
        o.allow_http = Some(true);
    }
    if let Some(n) = cli.connections {
        o.connections = n.max(1);
    }
    Ok(o.from_env())
}

/// Apply the S3 settings of an INI section (`endpoint`, `region`, `access_key_id`,
/// `secret_access_key`, `session_token`, `path_style` or rclone's `force_path_style`,
/// `allow_http`, `connections`) to `o`; `path` names the file in errors. Keys the
/// section does not have leave `o` as it was.
pub fn apply_s3_settings(
    o: &mut S3Options,
    section: &[(String, String)],
    path: &str,
) -> Result<()> {
    let get = |k: &str| {
        section
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let flag = |k: &str| -> Result<Option<bool>> {
        get(k)
            .map(|v| match v.to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Ok(true),
                "false" | "no" | "0" => Ok(false),
                other => bail!("{path}: {k} = {other}: expected true or false"),
            })
            .transpose()
    };
    let keep = |new: Option<String>, old: &mut Option<String>| {
        if new.is_some() {
            *old = new;
        }
    };
    keep(get("endpoint"), &mut o.endpoint);
    keep(get("region"), &mut o.region);
    keep(get("access_key_id"), &mut o.access_key_id);
    keep(get("secret_access_key"), &mut o.secret_access_key);
    keep(get("session_token"), &mut o.session_token);
    if let Some(v) = flag("path_style")?.or(flag("force_path_style")?) {
        o.path_style = Some(v);
    }
    if let Some(v) = flag("allow_http")? {
        o.allow_http = Some(v);
    }
    if let Some(c) = get("connections") {
        o.connections = c
            .parse()
            .with_context(|| format!("{path}: connections = {c}"))?;
    }
    Ok(())
}

/// Print the storage request counts of this process, and how many passwords it hashed
/// (for `--verbose`).
pub fn print_request_counts(json: bool) {
    let Some(stats) = REQUESTS.get() else { return };
    let c = stats.counts();
    if json {
        eprintln!(
            "{}",
            serde_json::json!({ "requests": c, "password_hashes": password_hashes() })
        );
    } else {
        eprintln!("password hashes: {}", password_hashes());
        eprintln!(
            "requests: {} GET, {} ranged GET, {} PUT, {} HEAD, {} LIST, {} DELETE; {} down, {} up",
            c.get,
            c.range_get,
            c.put,
            c.head,
            c.list,
            c.delete,
            crate::output::bytes(c.bytes_down),
            crate::output::bytes(c.bytes_up)
        );
    }
}

/// The password from `DPREPO_PASSWORD`, `--password-file`/`DPREPO_PASSWORD_FILE`, or a
/// prompt when stdin is a terminal. `confirm` asks twice (for new passwords).
pub fn password(cli: &Cli, confirm: bool) -> Result<Vec<u8>> {
    if let Some(pw) = password_without_prompt(cli.password_file.as_deref())? {
        return Ok(pw);
    }
    if std::io::stdin().is_terminal() {
        let pw = rpassword::prompt_password("enter password for repository: ")
            .context("reading password")?;
        if pw.is_empty() {
            bail!("empty password");
        }
        if confirm {
            let again =
                rpassword::prompt_password("enter password again: ").context("reading password")?;
            if again != pw {
                bail!("passwords do not match");
            }
        }
        return Ok(pw.into_bytes());
    }
    bail!("no password: set DPREPO_PASSWORD or DPREPO_PASSWORD_FILE (or run on a terminal to be asked)")
}

/// What opens a repository: a password (hashed with Argon2id) or an access key (SPEC.md
/// section 6.1: no hashing, for processes started often).
#[derive(Debug)]
pub enum RepoKey {
    /// A password.
    Password(Vec<u8>),
    /// An access key.
    Access(AccessKey),
}

impl RepoKey {
    /// A secret read from `source`: an access key if it has the form of one (so a
    /// password variable or file may hold an access key), else a password.
    ///
    /// # Errors
    /// A secret that starts like an access key but is not a valid one, naming `source`.
    pub fn from_secret(secret: Vec<u8>, source: &str) -> Result<RepoKey> {
        if AccessKey::looks_like(&secret) {
            return Ok(RepoKey::Access(
                AccessKey::parse(&secret).with_context(|| source.to_string())?,
            ));
        }
        Ok(RepoKey::Password(secret))
    }

    /// Open the repository in `storage` with this key.
    ///
    /// # Errors
    /// As [`Repository::open_with`] and [`Repository::open_with_access_key`].
    pub async fn open(
        &self,
        storage: Arc<dyn Storage>,
        place: &IndexPlace,
    ) -> dprepo_repo_format::Result<Repository> {
        self.open_with_load(storage, place, IndexLoad::Eager).await
    }

    /// Open like [`RepoKey::open`], loading the index at open or not (`load`).
    ///
    /// # Errors
    /// As [`RepoKey::open`].
    pub async fn open_with_load(
        &self,
        storage: Arc<dyn Storage>,
        place: &IndexPlace,
        load: IndexLoad,
    ) -> dprepo_repo_format::Result<Repository> {
        match self {
            RepoKey::Password(pw) => Repository::open_with_load(storage, pw, place, load).await,
            RepoKey::Access(key) => {
                Repository::open_with_access_key_load(storage, key, place, load).await
            }
        }
    }
}

/// The first line of secret file `file` (`what` names it in errors).
///
/// # Errors
/// The file cannot be read, or its first line is empty.
pub fn read_secret_file(file: &std::path::Path, what: &str) -> Result<Vec<u8>> {
    let text = std::fs::read(file).with_context(|| format!("reading {what} {}", file.display()))?;
    let line = text.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        bail!("{what} {} is empty", file.display());
    }
    Ok(line.to_vec())
}

/// The access key in `file` (`DPREPO_ACCESS_KEY_FILE`, `--access-key-file`).
///
/// # Errors
/// The file cannot be read or does not hold an access key.
pub fn access_key_file(file: &std::path::Path) -> Result<RepoKey> {
    let text = read_secret_file(file, "access key file")?;
    let key =
        AccessKey::parse(&text).with_context(|| format!("access key file {}", file.display()))?;
    Ok(RepoKey::Access(key))
}

/// Where a repository key can be given, for the error when there is none.
pub const KEY_SOURCES: &str = "DPREPO_ACCESS_KEY_FILE, DPREPO_PASSWORD_FILE or DPREPO_PASSWORD";

/// The key of the command line: `--access-key-file`/`DPREPO_ACCESS_KEY_FILE`, then
/// `DPREPO_PASSWORD`, `--password-file`/`DPREPO_PASSWORD_FILE` (either may hold an
/// access key), then, without `-r`, the key a datasafed config names, then a prompt
/// when stdin is a terminal.
///
/// # Errors
/// Unreadable or invalid key files; no key anywhere.
pub fn repo_key(cli: &Cli) -> Result<RepoKey> {
    if let Some(file) = &cli.access_key_file {
        return access_key_file(file);
    }
    if let Some(pw) = password_without_prompt(cli.password_file.as_deref())? {
        return RepoKey::from_secret(pw, "DPREPO_PASSWORD or the password file");
    }
    if cli.repo.as_deref().is_none_or(str::is_empty) {
        if let Some(key) = datasafed_conf::configured_key(cli.datasafed_conf.as_deref())? {
            return Ok(key);
        }
    }
    if std::io::stdin().is_terminal() {
        let pw = rpassword::prompt_password("enter password for repository: ")
            .context("reading password")?;
        if pw.is_empty() {
            bail!("empty password");
        }
        return RepoKey::from_secret(pw.into_bytes(), "the password entered");
    }
    bail!(
        "no repository key: set {KEY_SOURCES} (or --access-key-file / --password-file, or run on a terminal to be asked)"
    )
}

/// The password from `DPREPO_PASSWORD`, else from `file` (first line), else `None`.
pub fn password_without_prompt(file: Option<&std::path::Path>) -> Result<Option<Vec<u8>>> {
    // An empty DPREPO_PASSWORD counts as unset, so it cannot mask a password file.
    if let Some(pw) = std::env::var_os("DPREPO_PASSWORD").filter(|v| !v.is_empty()) {
        return Ok(Some(pw.into_encoded_bytes()));
    }
    if let Some(file) = file {
        return read_secret_file(file, "password file").map(Some);
    }
    Ok(None)
}

/// Open the repository named on the command line.
pub async fn open(cli: &Cli) -> Result<Repository> {
    open_with_load(cli, IndexLoad::Eager).await
}

/// Open the repository named on the command line for a backup: the index is not loaded
/// at open; the backup loads it after its session is ready, or not at all when it runs
/// cold (SPEC.md section 15, S-7).
pub async fn open_for_backup(cli: &Cli) -> Result<Repository> {
    open_with_load(cli, IndexLoad::Deferred).await
}

async fn open_with_load(cli: &Cli, load: IndexLoad) -> Result<Repository> {
    let storage = storage(cli)?;
    let key = repo_key(cli)?;
    let repo = key.open_with_load(storage, &index_place(cli), load).await?;
    for (name, e) in repo.damaged_index_files() {
        eprintln!("dprepo: warning: index file {name} is skipped: {e} (run `dprepo verify`, then `dprepo repair index`)");
    }
    print_index_notes(&repo);
    Ok(repo)
}

/// Open the repository for a dry run: every write stays in memory (DryRunStorage),
/// and so does the index, so that nothing the run "writes" is remembered. (A private
/// on-disk index was tried: its RocksDB, still flushing the run's new entries at exit,
/// sometimes aborted the process.)
pub async fn open_dry_run(cli: &Cli) -> Result<(Repository, Arc<DryRunStorage>)> {
    let dry = Arc::new(DryRunStorage::new(storage(cli)?));
    let key = repo_key(cli)?;
    let repo = key.open(dry.clone(), &IndexPlace::Memory).await?;
    print_index_notes(&repo);
    Ok((repo, dry))
}

/// Print what changed about where the index is kept (a full or damaged cache) as
/// warnings: the command goes on, but the user should know why it is slower.
pub fn print_index_notes(repo: &Repository) {
    for note in repo.take_index_notes() {
        eprintln!("dprepo: warning: {note}");
    }
}
