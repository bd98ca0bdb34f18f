//! Locating the repository and obtaining the password.

use anyhow::{bail, Context, Result};
use dprepo_repo_format::storage::{LocalStorage, Storage};
use dprepo_repo_format::Repository;
use std::io::IsTerminal;
use std::sync::Arc;

use crate::Cli;

/// Turn `-r`/`DPREPO_REPOSITORY` into a storage backend.
pub fn storage(cli: &Cli) -> Result<Arc<dyn Storage>> {
    let Some(location) = cli.repo.as_deref().filter(|s| !s.is_empty()) else {
        bail!("no repository given: use -r/--repo or set DPREPO_REPOSITORY");
    };
    if let Some(path) = location.strip_prefix("file://") {
        return Ok(Arc::new(LocalStorage::new(path)));
    }
    if let Some((scheme, _)) = location.split_once("://") {
        bail!("repository {location}: unsupported scheme {scheme}:// (this build supports local paths and file://)");
    }
    Ok(Arc::new(LocalStorage::new(location)))
}

/// The password from `DPREPO_PASSWORD`, `--password-file`/`DPREPO_PASSWORD_FILE`, or a
/// prompt when stdin is a terminal. `confirm` asks twice (for new passwords).
pub fn password(cli: &Cli, confirm: bool) -> Result<Vec<u8>> {
    if let Ok(pw) = std::env::var("DPREPO_PASSWORD") {
        return Ok(pw.into_bytes());
    }
    if let Some(file) = &cli.password_file {
        let text = std::fs::read(file).with_context(|| format!("reading password file {}", file.display()))?;
        let line = text.split(|b| *b == b'\n').next().unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        return Ok(line.to_vec());
    }
    if std::io::stdin().is_terminal() {
        let pw = rpassword::prompt_password("enter password for repository: ").context("reading password")?;
        if confirm {
            let again = rpassword::prompt_password("enter password again: ").context("reading password")?;
            if again != pw {
                bail!("passwords do not match");
            }
        }
        if pw.is_empty() {
            bail!("empty password");
        }
        return Ok(pw.into_bytes());
    }
    bail!("no password: set DPREPO_PASSWORD or DPREPO_PASSWORD_FILE (or run on a terminal to be asked)")
}

/// Open the repository named on the command line.
pub async fn open(cli: &Cli) -> Result<Repository> {
    let storage = storage(cli)?;
    let password = password(cli, false)?;
    Ok(Repository::open(storage, &password).await?)
}
