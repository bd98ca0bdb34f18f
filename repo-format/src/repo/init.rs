//! Creating a repository: `Repository::init`.

use super::*;

impl Repository {
    /// Create a new repository in `storage`, protected by `password`.
    ///
    /// Refuses a location where `keys/`, `data/`, `index/` or `snapshots/` hold files but
    /// there is no config (a repository that lost its config: a new master key would
    /// orphan all of it). Key files alone may belong to an init running at the same
    /// time: init waits up to two seconds for that one's config first.
    ///
    /// # Errors
    /// [`Error::RepositoryExists`] if a config is already there (or appears while
    /// waiting); [`Error::Corrupt`] naming the files found if there is none; invalid
    /// options; storage errors.
    pub async fn init(
        storage: Arc<dyn Storage>,
        password: &[u8],
        options: InitOptions,
    ) -> Result<Repository> {
        let config_exists = |storage: Arc<dyn Storage>| async move {
            match storage.size(CONFIG_NAME).await {
                Ok(_) => Ok(true),
                Err(Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(e),
            }
        };
        let exists = || Error::RepositoryExists {
            location: storage.location(),
        };
        if config_exists(storage.clone()).await? {
            return Err(exists());
        }
        // Files of a repository without its config: a new master key could read none
        // of them (SPEC.md section 16).
        let mut held = repository_files(&*storage).await?;
        if held.iter().all(|(dir, _)| *dir == KEYS_DIR) {
            // Key files alone may be an init running right now, between its key and its
            // config: give it time to finish.
            for _ in 0..INIT_RACE_POLLS {
                if held.is_empty() {
                    break;
                }
                tokio::time::sleep(INIT_RACE_POLL).await;
                if config_exists(storage.clone()).await? {
                    return Err(exists());
                }
                held = repository_files(&*storage).await?;
            }
        }
        if !held.is_empty() {
            return Err(Error::corrupt(
                format!("repository at {}", storage.location()),
                format!(
                    "it has no config, but {}: init refuses to create a new repository over them (a new key could read none of them). If the config was lost, put a copy back; if an init was interrupted before writing it (only keys/ holds files), delete keys/; to start afresh, empty the location",
                    describe_files(&held)
                ),
            ));
        }
        let mut config = Config::new(options.chunker, options.stream_chunker);
        config.pack_size = options.pack_size;
        config.compression_level = options.compression_level;
        config
            .validate()
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let master = MasterKey::generate();
        let keys = Keys::derive(&master);
        let kdf = options.kdf;
        let pw = password_owned(password);
        let wrap_master = master.clone();
        let key_file = run_cpu(move || {
            KeyFile::create(
                &wrap_master,
                &pw,
                kdf,
                &current_hostname(),
                &current_username(),
            )
        })
        .await??;
        let key_name = crate::layout::key_file(&BlobId::of_stored(&key_file));
        storage.create(&key_name, &key_file).await?;
        if let Err(e) = storage.create(CONFIG_NAME, &config.encode(&keys)).await {
            // Lost a race with another init: leave no stray key behind.
            let _ = storage.delete(&key_name).await;
            return Err(match e {
                Error::AlreadyExists { .. } => Error::RepositoryExists {
                    location: storage.location(),
                },
                e => e,
            });
        }
        Ok(Repository {
            storage,
            master,
            keys,
            opened_with: key_name,
            generation: 1,
            config,
            index: Arc::new(RwLock::new(Index::new())),
            index_load: Arc::default(),
            damaged_index_files: Arc::default(),
            index_notes: Arc::default(),
            index_loads: Arc::default(),
        })
    }
}

/// How often, and how long apart, `init` looks for the config another init is about
/// to write, when it finds key files but no config.
const INIT_RACE_POLLS: usize = 20;
const INIT_RACE_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// The directories of repository files that hold anything, with how many files each.
///
/// # Errors
/// Storage errors listing them.
pub(super) async fn repository_files(storage: &dyn Storage) -> Result<Vec<(&'static str, usize)>> {
    let mut held = Vec::new();
    for dir in [KEYS_DIR, crate::layout::DATA_DIR, INDEX_DIR, SNAPSHOTS_DIR] {
        let n = storage.list(dir).await?.len();
        if n > 0 {
            held.push((dir, n));
        }
    }
    Ok(held)
}

/// "keys/ holds 1 file, data/ 3 files" for [`repository_files`].
pub(super) fn describe_files(held: &[(&str, usize)]) -> String {
    held.iter()
        .enumerate()
        .map(|(i, (dir, n))| {
            let files = if *n == 1 { "file" } else { "files" };
            if i == 0 {
                format!("{dir} holds {n} {files}")
            } else {
                format!("{dir} {n} {files}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}
