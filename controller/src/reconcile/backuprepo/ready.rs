//! A Ready BackupRepo: tool Secrets kept current, waiting Backups released, its GarbageCollection; and deletion.

use super::*;

/// How soon a deletion waiting for Backups or PVCs to go looks again.
const DELETION_RETRY: Duration = Duration::from_secs(30);

impl Run<'_> {
    // -- 7. when Ready ------------------------------------------------------------

    /// Rewrites the tool Secrets made for an earlier digest or key (when flagged).
    pub(super) async fn update_tool_config_secrets(
        &mut self,
        provider: &StorageProvider,
        rctx: &RenderContext,
        key: &RepoKey,
        digest: &str,
    ) -> Result<()> {
        if annotation_of(&self.repo.metadata, annotation::NEED_UPDATE_TOOL_CONFIG) != Some("true") {
            return Ok(());
        }
        let (_, key_id) = key.for_pods();
        let secrets: Api<Secret> = Api::all(self.ctx.client.clone());
        let list = secrets
            .list(&ListParams::default().labels(&format!(
                "{}={},{}=true",
                label::BACKUP_REPO_NAME,
                self.name,
                label::IS_TOOL_CONFIG
            )))
            .await
            .during(|| format!("list the tool Secrets of {}", self.name))?;
        for secret in list.items {
            if annotation_of(&secret.metadata, annotation::BACKUP_REPO_DIGEST) == Some(digest)
                && annotation_of(&secret.metadata, KEY_SOURCE_ANNOTATION) == Some(key_id.as_str())
            {
                continue;
            }
            let ns = secret.metadata.namespace.clone().unwrap_or_default();
            let name = secret.metadata.name.clone().unwrap_or_default();
            let fresh = self.tool_secret_object(provider, rctx, key, &name, &ns, digest)?;
            let api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &ns);
            // Replace the data whole: a Mount Secret has no datasafed.conf to keep.
            let mut data: BTreeMap<String, Option<ByteString>> = secret
                .data
                .unwrap_or_default()
                .into_keys()
                .map(|k| (k, None))
                .collect();
            for (k, v) in fresh.data.unwrap_or_default() {
                data.insert(k, Some(v));
            }
            patch_object(
                &api,
                &name,
                secret.metadata.resource_version.as_deref(),
                json!({"metadata": {"annotations": fresh.metadata.annotations}, "data": data}),
            )
            .await?;
        }
        self.set_annotations(BTreeMap::from([(
            annotation::NEED_UPDATE_TOOL_CONFIG.to_string(),
            "false".to_string(),
        )]))
        .await
    }

    /// Backups and Restores waiting for the repository in their namespace.
    pub(super) async fn prepare_for_waiting(
        &self,
        provider: &StorageProvider,
        rctx: &RenderContext,
        key: &RepoKey,
        digest: &str,
    ) -> Result<()> {
        let selector = format!(
            "{}={},{}=true",
            label::BACKUP_REPO_NAME,
            self.name,
            label::WAIT_REPO_PREPARATION
        );
        let backups: Api<Backup> = Api::all(self.ctx.client.clone());
        let waiting = backups
            .list(&ListParams::default().labels(&selector))
            .await
            .during(|| format!("list the Backups waiting for {}", self.name))?;
        let mut first_error = None;
        for b in waiting.items.iter().filter(|b| !ignored_backup(b)) {
            let ns = b.metadata.namespace.clone().unwrap_or_default();
            let result = match self
                .prepare_namespace(provider, rctx, key, &ns, digest)
                .await
            {
                Ok(()) => {
                    let api: Api<Backup> = Api::namespaced(self.ctx.client.clone(), &ns);
                    drop_wait_label(&api, &b.metadata).await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::warn!(repo = %self.name, backup = %format!("{ns}/{}", b.metadata.name.as_deref().unwrap_or("")), error = %e, "could not prepare the repository for a Backup");
                first_error.get_or_insert(e);
            }
        }
        let restores: Api<Restore> = Api::all(self.ctx.client.clone());
        let waiting = restores
            .list(&ListParams::default().labels(&selector))
            .await
            .during(|| format!("list the Restores waiting for {}", self.name))?;
        for r in waiting
            .items
            .iter()
            .filter(|r| r.phase() != Some(crate::api::restore::RestorePhase::Failed))
        {
            let ns = r.metadata.namespace.clone().unwrap_or_default();
            let result = match self
                .prepare_namespace(provider, rctx, key, &ns, digest)
                .await
            {
                Ok(()) => {
                    let api: Api<Restore> = Api::namespaced(self.ctx.client.clone(), &ns);
                    drop_wait_label(&api, &r.metadata).await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The repository's GarbageCollection (unless disabled) and its namespace's objects.
    pub(super) async fn ensure_gc(
        &self,
        provider: &StorageProvider,
        rctx: &RenderContext,
        key: &RepoKey,
        digest: &str,
    ) -> Result<()> {
        let gcs: Api<GarbageCollection> = Api::all(self.ctx.client.clone());
        let all = gcs
            .list(&ListParams::default())
            .await
            .during(|| "list GarbageCollections".to_string())?;
        let mine: Vec<&GarbageCollection> = all
            .items
            .iter()
            .filter(|g| g.spec.backup_repo_name == self.name)
            .collect();
        if annotation_of(&self.repo.metadata, GC_ANNOTATION) == Some("disabled") {
            for g in mine {
                if is_owned_by(g, self.repo.metadata.uid.as_deref()) {
                    delete_background(&gcs, g.metadata.name.as_deref().unwrap_or("")).await?;
                }
            }
            return Ok(());
        }
        let ns = self.namespace().to_string();
        self.prepare_namespace(provider, rctx, key, &ns, digest)
            .await?;
        if mine.is_empty() {
            let mut gc = GarbageCollection::new(
                &self.name,
                GarbageCollectionSpec {
                    backup_repo_name: self.name.clone(),
                    schedule: None,
                    max_unused: None,
                    dry_run: None,
                    suspend: None,
                },
            );
            gc.metadata.labels = Some(BTreeMap::from([(
                label::BACKUP_REPO_NAME.to_string(),
                self.name.clone(),
            )]));
            gc.metadata.owner_references =
                crate::builder::controller_ref(&self.repo).map(|o| vec![o]);
            let (_, created) = create_if_absent(&gcs, &gc).await?;
            if created {
                tracing::info!(repo = %self.name, "created the repository's GarbageCollection");
            }
        }
        Ok(())
    }

    pub(super) async fn warn_about_default_conflicts(&self) {
        let all = match self.api.list(&ListParams::default()).await {
            Ok(l) => l.items,
            Err(_) => return,
        };
        // One event per other default BackupRepo, related to it: a second conflicting
        // repository is an event of its own, not a count on the first one's.
        for other in default_conflicts(&self.repo, &all) {
            let Some(o) = all
                .iter()
                .find(|r| r.metadata.name.as_deref() == Some(&other))
            else {
                continue;
            };
            let note = format!(
                "BackupRepo {other} is default too: Backups that name no repository fail until only one is annotated {}=true",
                annotation::IS_DEFAULT_REPO
            );
            self.ctx
                .event_related(
                    &self.repo,
                    o,
                    EventType::Warning,
                    "MultipleDefaultRepos",
                    note,
                )
                .await;
        }
    }

    // -- deletion -----------------------------------------------------------------

    /// Deletes what the repository derived; `false` while something must be waited for.
    /// Deletion: `None` once the finalizer may go, else how soon to look again.
    pub(super) async fn delete_external(&mut self) -> Result<Option<Duration>> {
        if self.status.phase != Some(BackupRepoPhase::Deleting) {
            self.status.phase = Some(BackupRepoPhase::Deleting);
            self.flush().await?;
            self.ctx.metrics.repository_phase(&self.name, "Deleting");
            let repo = self.repo.clone();
            self.ctx
                .event(
                    &repo,
                    EventType::Normal,
                    "Deleting",
                    "the BackupRepo is being deleted",
                )
                .await;
        }
        let client = self.ctx.client.clone();
        let by_repo =
            ListParams::default().labels(&format!("{}={}", label::BACKUP_REPO_NAME, self.name));
        let backups: Api<Backup> = Api::all(client.clone());
        let referencing: Vec<String> = backups
            .list(&by_repo)
            .await
            .during(|| format!("list the Backups of {}", self.name))?
            .items
            .iter()
            .filter(|b| !ignored_backup(b))
            .map(|b| {
                format!(
                    "{}/{}",
                    b.metadata.namespace.as_deref().unwrap_or(""),
                    b.metadata.name.as_deref().unwrap_or("")
                )
            })
            .collect();
        if !referencing.is_empty() {
            let mut shown = referencing
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            if referencing.len() > 10 {
                shown.push_str(&format!(" and {} more", referencing.len() - 10));
            }
            self.cond(
                condition::DERIVED_OBJECTS_DELETED,
                "False",
                reason::HAVE_ASSOCIATED_BACKUPS,
                &format!("some backups still refer to this repo: {shown}"),
            );
            self.flush().await?;
            return Ok(Some(DELETION_RETRY));
        }
        // Before the access Secret (which names the key) goes with the other Secrets.
        if let Some(wait) = self.revoke_access_key().await? {
            return Ok(Some(wait));
        }
        let uid = self.repo.metadata.uid.clone();
        let ns = self.namespace().to_string();
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
        for j in jobs
            .list(&by_repo)
            .await
            .during(|| "list Jobs".to_string())?
            .items
        {
            if is_owned_by(&j, uid.as_deref()) {
                delete_background(&jobs, j.metadata.name.as_deref().unwrap_or("")).await?;
            }
        }
        let pvcs: Api<PersistentVolumeClaim> = Api::all(client.clone());
        let owned_pvcs: Vec<PersistentVolumeClaim> = pvcs
            .list(&by_repo)
            .await
            .during(|| "list PersistentVolumeClaims".to_string())?
            .items
            .into_iter()
            .filter(|p| is_owned_by(p, uid.as_deref()))
            .collect();
        for p in &owned_pvcs {
            let api: Api<PersistentVolumeClaim> = Api::namespaced(
                client.clone(),
                p.metadata.namespace.as_deref().unwrap_or(""),
            );
            delete_background(&api, p.metadata.name.as_deref().unwrap_or("")).await?;
        }
        let remaining = pvcs
            .list(&by_repo)
            .await
            .during(|| "list PersistentVolumeClaims".to_string())?
            .items
            .into_iter()
            .filter(|p| is_owned_by(p, uid.as_deref()))
            .count();
        if remaining > 0 {
            self.cond(
                condition::DERIVED_OBJECTS_DELETED,
                "False",
                reason::HAVE_RESIDUAL_PVCS,
                "maybe the derived PVCs are still in use",
            );
            self.flush().await?;
            return Ok(Some(DELETION_RETRY));
        }
        let classes: Api<StorageClass> = Api::all(client.clone());
        for sc in classes
            .list(&by_repo)
            .await
            .during(|| "list StorageClasses".to_string())?
            .items
        {
            if is_owned_by(&sc, uid.as_deref()) {
                delete_background(&classes, sc.metadata.name.as_deref().unwrap_or("")).await?;
            }
        }
        let secrets: Api<Secret> = Api::all(client.clone());
        for s in secrets
            .list(&by_repo)
            .await
            .during(|| "list Secrets".to_string())?
            .items
        {
            if is_owned_by(&s, uid.as_deref()) {
                let api: Api<Secret> = Api::namespaced(
                    client.clone(),
                    s.metadata.namespace.as_deref().unwrap_or(""),
                );
                delete_background(&api, s.metadata.name.as_deref().unwrap_or("")).await?;
            }
        }
        let gcs: Api<GarbageCollection> = Api::all(client.clone());
        for g in gcs
            .list(&ListParams::default())
            .await
            .during(|| "list GarbageCollections".to_string())?
            .items
        {
            if is_owned_by(&g, uid.as_deref()) {
                delete_background(&gcs, g.metadata.name.as_deref().unwrap_or("")).await?;
            }
        }
        // Revoked or given up on above; owned by nobody, so not among the Secrets above.
        self.remove_access_secret().await?;
        self.cond(
            condition::DERIVED_OBJECTS_DELETED,
            "True",
            reason::DERIVED_OBJECTS_DELETED,
            "",
        );
        self.flush().await?;
        Ok(None)
    }
}
