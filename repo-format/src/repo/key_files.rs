//! The key files of an open repository: adding passwords and access keys, changing a
//! password, listing and removing key files (SPEC.md sections 5 and 6). Every new key
//! file is checked before success is reported: read back, opened, and still of the
//! newest key generation (section 5.1).

use super::*;

impl Repository {
    /// Make a new access key for this repository: writes an access key file (SPEC.md
    /// section 6) wrapping the master key and returns the key that opens it. `label`
    /// says what it is for; `dprepo key list` shows it. Revoke it with
    /// [`Repository::remove_key`].
    ///
    /// # Errors
    /// Storage errors writing the key file.
    pub async fn add_access_key(&self, label: &str) -> Result<AccessKey> {
        let (bytes, key) = KeyFile::create_access(
            &self.master,
            &current_hostname(),
            &current_username(),
            label,
        );
        self.storage.create(&key.key_name(), &bytes).await?;
        self.retract_if_rotated(&key.key_name()).await?;
        Ok(key)
    }

    /// After writing key file `name`: if a key rotation committed since this handle
    /// opened the repository, the file wraps a retired master key and would silently open
    /// nothing; delete it and fail with [`Error::KeyRetired`] instead of reporting success.
    async fn retract_if_rotated(&self, name: &str) -> Result<()> {
        if let Err(e) = newer_generation_check(self).await {
            let _ = self.storage.delete(name).await;
            return Err(e);
        }
        Ok(())
    }

    /// The access key that `secret` makes for this repository: the existing access key
    /// file it opens, else a new one labelled `label`. `true` with a new file. Calling it
    /// again with the same secret adds nothing, so a process that runs again (an
    /// operator's check Job) registers one key, not one per run.
    ///
    /// # Errors
    /// Storage errors listing or writing `keys/`.
    pub async fn access_key_for_secret(
        &self,
        secret: [u8; crate::key::ACCESS_SECRET_LEN],
        label: &str,
    ) -> Result<(AccessKey, bool)> {
        for (name, file) in Repository::key_files(&*self.storage).await? {
            let Ok(file) = file else { continue };
            let Some(id) = crate::layout::id_in(KEYS_DIR, &name) else {
                continue;
            };
            let key = AccessKey::from_parts(id, secret);
            if file.open_access(&key).is_some_and(|m| m.0 == self.master.0) {
                return Ok((key, false));
            }
        }
        let (bytes, key) = KeyFile::create_access_with_secret(
            &self.master,
            secret,
            &current_hostname(),
            &current_username(),
            label,
        );
        self.storage.create(&key.key_name(), &bytes).await?;
        self.retract_if_rotated(&key.key_name()).await?;
        Ok((key, true))
    }

    /// Add a password: writes a password key file wrapping the master key, hashed with
    /// `kdf`. Returns its storage name.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for KDF parameters out of bounds; storage errors.
    pub async fn add_password(&self, password: &[u8], kdf: KdfParams) -> Result<String> {
        self.add_password_as(password, kdf, &current_hostname(), &current_username())
            .await
    }

    /// [`Repository::add_password`] with the host and user names the key file records
    /// (informational, shown by `dprepo key list`, as restic's `--host` and `--user`).
    ///
    /// The key file is read back and opened with `password` before this returns, so a
    /// caller that goes on to delete another key file ([`Repository::change_password`])
    /// never leaves the repository with fewer keys that open it than before.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for KDF parameters out of bounds, or when the key file read
    /// back does not open with `password`; storage errors.
    pub async fn add_password_as(
        &self,
        password: &[u8],
        kdf: KdfParams,
        hostname: &str,
        username: &str,
    ) -> Result<String> {
        let master = self.master.clone();
        let pw = password_owned(password);
        let (host, user) = (hostname.to_string(), username.to_string());
        let bytes = run_cpu(move || KeyFile::create(&master, &pw, kdf, &host, &user)).await??;
        let name = crate::layout::key_file(&BlobId::of_stored(&bytes));
        self.storage.create(&name, &bytes).await?;
        // Read it back and open it: the new key must be durable and open this master key
        // before anything relies on it.
        let stored = self.storage.get(&name).await?;
        let file = KeyFile::decode(&stored, &name)?;
        let pw = password_owned(password);
        let opened = run_cpu(move || file.open(&pw)).await??;
        if opened.is_none_or(|m| m.0 != self.master.0) {
            return Err(Error::corrupt(
                &name,
                "the key file just written does not open with its password when read back",
            ));
        }
        self.retract_if_rotated(&name).await?;
        Ok(name)
    }

    /// Replace the password this handle was opened with (`dprepo key passwd`): write a
    /// key file for `new_password` (read back and checked, [`Repository::add_password_as`])
    /// and only then delete the key file the handle was opened with. At every moment a
    /// key file that opens the repository exists: a crash before the delete leaves both
    /// passwords working. Returns the new key file's name; the handle goes on working
    /// and from then on counts the new key file as the one in use.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the handle was opened with an access key (it has no
    /// password to change); as [`Repository::add_password_as`]; storage errors deleting
    /// the old key file (the new one is kept: both then open).
    pub async fn change_password(
        &mut self,
        new_password: &[u8],
        kdf: KdfParams,
        hostname: &str,
        username: &str,
    ) -> Result<String> {
        let old = self.opened_with.clone();
        let old_file = KeyFile::decode(&self.storage.get(&old).await?, &old)?;
        if old_file.kind != KeyKind::Password {
            return Err(Error::InvalidArgument(format!(
                "{old} is an access key, not a password: open with the password to change it, or make a new access key with `dprepo key add-access` and remove this one"
            )));
        }
        let name = self
            .add_password_as(new_password, kdf, hostname, username)
            .await?;
        self.storage.delete(&old).await?;
        self.opened_with = name.clone();
        Ok(name)
    }

    /// Every key file of the repository, sorted by name, decoded (or the error that
    /// stopped it). Needs no key: key file headers are plaintext.
    ///
    /// # Errors
    /// Storage errors listing `keys/`.
    pub async fn key_files(storage: &dyn Storage) -> Result<Vec<(String, Result<KeyFile>)>> {
        let mut names: Vec<String> = storage
            .list(KEYS_DIR)
            .await?
            .into_iter()
            .map(|b| b.name)
            .collect();
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let file = match storage.get(&name).await {
                Ok(bytes) => KeyFile::decode(&bytes, &name),
                Err(Error::NotFound { .. }) => continue,
                Err(e) => Err(e),
            };
            out.push((name, file));
        }
        Ok(out)
    }

    /// Remove key file `name` (a password or an access key): from then on it opens
    /// nothing. Refuses the key this handle was opened with, and the last password key
    /// file (a repository whose only keys are access keys is one leak from lost: its
    /// owner could no longer open it with something only they know).
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no such key file; [`Error::InvalidArgument`] for
    /// the refusals above; storage errors.
    pub async fn remove_key(&self, name: &str) -> Result<()> {
        self.remove_key_with(name, false).await
    }

    /// [`Repository::remove_key`]; with `allow_in_use` also the key this handle was
    /// opened with (`dprepo key remove --force`: the command then cannot open the
    /// repository again with the key it was given). The last password is refused even so.
    ///
    /// # Errors
    /// As [`Repository::remove_key`].
    pub async fn remove_key_with(&self, name: &str, allow_in_use: bool) -> Result<()> {
        let files = Repository::key_files(&*self.storage).await?;
        let Some((_, file)) = files.iter().find(|(n, _)| n == name) else {
            return Err(Error::NotFound {
                object: name.to_string(),
            });
        };
        if name == self.opened_with && !allow_in_use {
            return Err(Error::InvalidArgument(format!(
                "{name} is the key this command opened the repository with; open with another key to remove it, or give --force"
            )));
        }
        let is_password = |f: &Result<KeyFile>| matches!(f, Ok(k) if k.kind == KeyKind::Password);
        if is_password(file) && files.iter().filter(|(_, f)| is_password(f)).count() == 1 {
            return Err(Error::InvalidArgument(format!(
                "{name} is the last password of the repository; add another password first"
            )));
        }
        self.storage.delete(name).await
    }
}

/// S-2b (SPEC.md section 15): after the marker exists, refuse to write if the config no
/// longer opens under this handle's newest key: a rotation committed since the handle
/// opened the repository. A writer that passes this check has a marker that `key rotate
/// --finish` lists (the config was re-sealed after the marker was created), so finish
/// waits for it; one that fails would write under a key about to be retired.
///
/// # Errors
/// [`Error::KeyRetired`] naming the generations; storage errors.
pub(crate) async fn newer_generation_check(repo: &Repository) -> Result<()> {
    let bytes = repo.storage().get(CONFIG_NAME).await?;
    if crate::config::Config::decode(&repo.keys().newest_only(), &bytes).is_ok() {
        return Ok(());
    }
    let newest = repo
        .storage()
        .list(crate::keyring::KEYRING_DIR)
        .await?
        .iter()
        .filter_map(|b| crate::layout::parse_keyring(&b.name))
        .max()
        .unwrap_or(1);
    Err(Error::KeyRetired {
        key: repo.opened_with().to_string(),
        generation: repo.key_generation(),
        newest,
    })
}
