//! Steps 1-4 of a BackupRepo: its StorageProvider, parameters and key, StorageClass and CSI Secret, PVC template; and the objects it puts in each namespace.

use super::*;

impl Run<'_> {
    // -- 1. the storage provider ------------------------------------------------------

    pub(super) async fn check_provider(&mut self) -> Result<StorageProvider> {
        let providers: Api<StorageProvider> = Api::all(self.ctx.client.clone());
        let provider_name = self.repo.spec.storage_provider_ref.clone();
        let found = providers
            .get_opt(&provider_name)
            .await
            .during(|| format!("get StorageProvider {provider_name}"))?;
        let Some(provider) = found else {
            self.cond(
                condition::STORAGE_PROVIDER_READY,
                "False",
                reason::STORAGE_PROVIDER_NOT_FOUND,
                &format!(
                    "storageproviders.dataprotection.kubeblocks.io \"{provider_name}\" not found"
                ),
            );
            return Err(Error::invalid(
                "spec.storageProviderRef",
                format!("StorageProvider {provider_name} not found"),
            ));
        };
        let problem = match self.repo.access_method() {
            AccessMethod::Mount => {
                if nonempty(&provider.spec.storage_class_template).is_none()
                    && nonempty(&provider.spec.persistent_volume_claim_template).is_none()
                {
                    Some((
                        reason::INVALID_STORAGE_PROVIDER,
                        "both StorageClassTemplate and PersistentVolumeClaimTemplate are empty",
                        true,
                    ))
                } else {
                    let conds = provider
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_deref())
                        .unwrap_or(&[]);
                    (!is_true(conds, CONDITION_CSI_DRIVER_INSTALLED)).then_some((
                        reason::STORAGE_PROVIDER_NOT_READY,
                        "CSI driver is not installed",
                        false,
                    ))
                }
            }
            AccessMethod::Tool => nonempty(&provider.spec.datasafed_config_template)
                .is_none()
                .then_some((
                    reason::INVALID_STORAGE_PROVIDER,
                    "DatasafedConfigTemplate is empty",
                    true,
                )),
        };
        if let Some((why, message, invalid)) = problem {
            self.cond(condition::STORAGE_PROVIDER_READY, "False", why, message);
            let text = format!("StorageProvider {provider_name}: {message}");
            return Err(if invalid {
                Error::invalid("spec.storageProviderRef", text)
            } else {
                Error::Missing {
                    kind: "CSIDriver of StorageProvider".into(),
                    name: provider_name,
                }
            });
        }
        self.cond(
            condition::STORAGE_PROVIDER_READY,
            "True",
            reason::STORAGE_PROVIDER_READY,
            "",
        );
        Ok(provider)
    }

    // -- 2. parameters and the key --------------------------------------------------

    pub(super) async fn check_parameters(
        &mut self,
        provider: &StorageProvider,
    ) -> Result<(BTreeMap<String, String>, RepoKey)> {
        let schema = provider
            .spec
            .parameters_schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.clone())
            .unwrap_or(serde_json::Value::Null);
        let defaults = schema_defaults(&schema);
        let config = self.repo.spec.config.clone().unwrap_or_default();
        let mut credential: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        if let Some(reference) = self.repo.spec.credential.clone() {
            let ns = reference.namespace.clone().unwrap_or_default();
            let name = reference.name.clone().unwrap_or_default();
            let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &ns);
            let found = secrets
                .get_opt(&name)
                .await
                .during(|| format!("get Secret {ns}/{name}"))?;
            let Some(secret) = found else {
                self.cond(
                    condition::PARAMETERS_CHECKED,
                    "False",
                    reason::CREDENTIAL_SECRET_NOT_FOUND,
                    &format!("failed to get secret: secrets \"{name}\" not found"),
                );
                return Err(Error::invalid(
                    "spec.credential",
                    format!("Secret {ns}/{name} not found"),
                ));
            };
            credential = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
        }
        let params = merge_parameters(&defaults, &config, &credential);
        let key = match self.repository_key(&credential).await {
            Ok(k) => k,
            Err((why, e)) => {
                self.cond(condition::PARAMETERS_CHECKED, "False", why, &e.to_string());
                return Err(e);
            }
        };
        self.cond(
            condition::PARAMETERS_CHECKED,
            "True",
            reason::PARAMETERS_CHECKED,
            "",
        );
        Ok((params, key))
    }

    pub(super) async fn repository_key(
        &self,
        credential: &BTreeMap<String, Vec<u8>>,
    ) -> std::result::Result<RepoKey, (&'static str, Error)> {
        let source = key_source(
            &self.repo,
            credential.contains_key(KEY_FIELD),
            self.namespace(),
        )
        .map_err(|e| (reason::INVALID_REPOSITORY_KEY, e))?;
        let key = match &source {
            KeySource::Credential { .. } => credential.get(KEY_FIELD).cloned().unwrap_or_default(),
            KeySource::Named { namespace, name } => {
                let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), namespace);
                let secret = secrets
                    .get_opt(name)
                    .await
                    .during(|| format!("get Secret {namespace}/{name}"))
                    .map_err(|e| (reason::UNKNOWN_ERROR, e))?
                    .ok_or_else(|| {
                        (
                            reason::KEY_SECRET_NOT_FOUND,
                            Error::invalid(
                                format!("metadata.annotations[{}]", annotation::DPREPO_KEY_SECRET),
                                format!("Secret {namespace}/{name} not found"),
                            ),
                        )
                    })?;
                secret_key(&secret, &source)?
            }
            KeySource::Generated { namespace, name } => {
                let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), namespace);
                let fresh = generate_key().map_err(|e| {
                    (
                        reason::UNKNOWN_ERROR,
                        Error::Other(format!("generating a repository key: {e}")),
                    )
                })?;
                let wanted = generated_key_secret(&self.name, name, namespace, &fresh);
                let (secret, created) = create_if_absent(&secrets, &wanted)
                    .await
                    .map_err(|e| (reason::UNKNOWN_ERROR, e))?;
                if created {
                    tracing::info!(repo = %self.name, secret = %format!("{namespace}/{name}"), "generated the repository key");
                }
                secret_key(&secret, &source)?
            }
        };
        check_key(&source, &key).map_err(|e| (reason::INVALID_REPOSITORY_KEY, e))?;
        Ok(RepoKey {
            source,
            key,
            access_secret: None,
            access_key: None,
        })
    }

    // -- 3. StorageClass and CSI Secret -------------------------------------------

    pub(super) async fn create_storage_class_and_secret(
        &mut self,
        provider: &StorageProvider,
        rctx: &mut RenderContext,
        digest: &str,
    ) -> Result<()> {
        let result = self.storage_class_and_secret(provider, rctx, digest).await;
        match &result {
            Ok(()) => self.cond(
                condition::STORAGE_CLASS_CREATED,
                "True",
                reason::STORAGE_CLASS_CREATED,
                "",
            ),
            Err((why, e)) => self.cond(
                condition::STORAGE_CLASS_CREATED,
                "False",
                why,
                &e.to_string(),
            ),
        }
        result.map_err(|(_, e)| e)
    }

    pub(super) async fn storage_class_and_secret(
        &mut self,
        provider: &StorageProvider,
        rctx: &mut RenderContext,
        digest: &str,
    ) -> std::result::Result<(), (&'static str, Error)> {
        let unknown = |e| (reason::UNKNOWN_ERROR, e);
        let csi_template = nonempty(&provider.spec.csi_driver_secret_template).map(str::to_string);
        let sc_template = nonempty(&provider.spec.storage_class_template).map(str::to_string);
        let mut named = false;
        if csi_template.is_some() && self.status.generated_csi_driver_secret.is_none() {
            self.status.generated_csi_driver_secret = Some(SecretReference {
                name: Some(self.derived("secret").map_err(unknown)?),
                namespace: Some(self.namespace().to_string()),
            });
            named = true;
        }
        if sc_template.is_some()
            && self
                .status
                .generated_storage_class_name
                .as_deref()
                .unwrap_or("")
                .is_empty()
        {
            self.status.generated_storage_class_name = Some(self.derived("sc").map_err(unknown)?);
            named = true;
        }
        if named {
            // Keep the random names before creating objects under them.
            self.flush().await.map_err(unknown)?;
        }
        if let Some(reference) = &self.status.generated_csi_driver_secret {
            rctx.csi_driver_secret_name = reference.name.clone().unwrap_or_default();
            rctx.csi_driver_secret_namespace = reference.namespace.clone().unwrap_or_default();
        }
        if let Some(text) = csi_template {
            let failed = |e| (reason::PREPARE_CSI_SECRET_FAILED, e);
            let name = rctx.csi_driver_secret_name.clone();
            let ns = rctx.csi_driver_secret_namespace.clone();
            let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &ns);
            let existing = secrets
                .get_opt(&name)
                .await
                .during(|| format!("get Secret {ns}/{name}"))
                .map_err(failed)?;
            let stale = existing.as_ref().is_none_or(|s| {
                annotation_of(&s.metadata, annotation::BACKUP_REPO_DIGEST) != Some(digest)
            });
            if stale {
                let content = render(
                    provider,
                    "spec.csiDriverSecretTemplate",
                    CSI_SECRET_TEMPLATE,
                    &text,
                    rctx,
                )
                .map_err(|e| failed(prefix_error(e, "failed to render secret template")))?;
                let secret = csi_secret(&self.repo, &name, &ns, &content, digest).map_err(|e| {
                    failed(Error::invalid(
                        "spec.storageProviderRef (spec.csiDriverSecretTemplate)",
                        e.to_string(),
                    ))
                })?;
                match existing {
                    None => {
                        create_if_absent(&secrets, &secret).await.map_err(failed)?;
                    }
                    Some(_) => {
                        patch_object(
                            &secrets,
                            &name,
                            None,
                            json!({"metadata": {
                                    "labels": secret.metadata.labels,
                                    "annotations": secret.metadata.annotations,
                                    "ownerReferences": secret.metadata.owner_references},
                                "data": secret.data}),
                        )
                        .await
                        .map_err(failed)?;
                    }
                }
            }
        }
        if let Some(text) = sc_template {
            let failed = |e| (reason::PREPARE_STORAGE_CLASS_FAILED, e);
            let name = self
                .status
                .generated_storage_class_name
                .clone()
                .unwrap_or_default();
            let classes: Api<StorageClass> = Api::all(self.ctx.client.clone());
            let existing = classes
                .get_opt(&name)
                .await
                .during(|| format!("get StorageClass {name}"))
                .map_err(failed)?;
            if existing.is_none() {
                let content = render(
                    provider,
                    "spec.storageClassTemplate",
                    STORAGE_CLASS_TEMPLATE,
                    &text,
                    rctx,
                )
                .map_err(|e| failed(prefix_error(e, "failed to render storage class template")))?;
                let sc = storage_class(&self.repo, &name, &content).map_err(|e| {
                    failed(Error::invalid(
                        "spec.storageProviderRef (spec.storageClassTemplate)",
                        e.to_string(),
                    ))
                })?;
                create_if_absent(&classes, &sc).await.map_err(failed)?;
            }
        }
        rctx.generated_storage_class_name = self
            .status
            .generated_storage_class_name
            .clone()
            .unwrap_or_default();
        Ok(())
    }

    // -- 4. the PVC template ------------------------------------------------------

    pub(super) fn check_pvc_template(
        &mut self,
        provider: &StorageProvider,
        rctx: &RenderContext,
        digest: &str,
    ) -> Result<()> {
        let Some(text) = nonempty(&provider.spec.persistent_volume_claim_template) else {
            self.cond(condition::PVC_TEMPLATE_CHECKED, "True", reason::SKIPPED, "");
            return Ok(());
        };
        if self.repo.access_method() != AccessMethod::Mount {
            self.cond(condition::PVC_TEMPLATE_CHECKED, "True", reason::SKIPPED, "");
            return Ok(());
        }
        if annotation_of(&self.repo.metadata, annotation::BACKUP_REPO_DIGEST) != Some(digest) {
            let checked = render(
                provider,
                "spec.persistentVolumeClaimTemplate",
                PVC_TEMPLATE,
                text,
                rctx,
            )
            .map_err(|e| prefix_error(e, "failed to render PVC template"))
            .and_then(|content| {
                repo_pvc(
                    &self.repo,
                    "check",
                    "check",
                    Some(&content),
                    None,
                    BTreeMap::new(),
                )
                .map_err(|e| {
                    Error::invalid(
                        "spec.storageProviderRef (spec.persistentVolumeClaimTemplate)",
                        e.to_string(),
                    )
                })
            });
            if let Err(e) = checked {
                self.cond(
                    condition::PVC_TEMPLATE_CHECKED,
                    "False",
                    reason::BAD_PVC_TEMPLATE,
                    &e.to_string(),
                );
                return Err(e);
            }
        }
        self.cond(
            condition::PVC_TEMPLATE_CHECKED,
            "True",
            reason::PVC_TEMPLATE_CHECKED,
            "",
        );
        Ok(())
    }

    // -- per-namespace objects ------------------------------------------------------

    /// The PVC `name` in `namespace` (Mount access), created if absent.
    pub(super) async fn ensure_pvc(
        &self,
        provider: &StorageProvider,
        rctx: &RenderContext,
        name: &str,
        namespace: &str,
        annotations: BTreeMap<String, String>,
    ) -> Result<PersistentVolumeClaim> {
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(self.ctx.client.clone(), namespace);
        if let Some(found) = pvcs
            .get_opt(name)
            .await
            .during(|| format!("get PersistentVolumeClaim {namespace}/{name}"))?
        {
            return Ok(found);
        }
        let rendered = match nonempty(&provider.spec.persistent_volume_claim_template) {
            Some(text) => Some(
                render(
                    provider,
                    "spec.persistentVolumeClaimTemplate",
                    PVC_TEMPLATE,
                    text,
                    rctx,
                )
                .map_err(|e| prefix_error(e, "failed to render PVC template"))?,
            ),
            None => None,
        };
        let sc = self.status.generated_storage_class_name.clone();
        let pvc = repo_pvc(
            &self.repo,
            name,
            namespace,
            rendered.as_deref(),
            sc.as_deref(),
            annotations,
        )
        .map_err(|e| {
            Error::invalid(
                "spec.storageProviderRef (spec.persistentVolumeClaimTemplate)",
                e.to_string(),
            )
        })?;
        Ok(create_if_absent(&pvcs, &pvc).await?.0)
    }

    /// The tool Secret `name` in `namespace` (both access methods), created if absent.
    pub(super) async fn ensure_tool_secret(
        &self,
        provider: &StorageProvider,
        rctx: &RenderContext,
        key: &RepoKey,
        name: &str,
        namespace: &str,
        digest: &str,
    ) -> Result<Secret> {
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), namespace);
        if let Some(found) = secrets
            .get_opt(name)
            .await
            .during(|| format!("get Secret {namespace}/{name}"))?
        {
            return Ok(found);
        }
        let secret = self.tool_secret_object(provider, rctx, key, name, namespace, digest)?;
        Ok(create_if_absent(&secrets, &secret).await?.0)
    }

    pub(super) fn tool_secret_object(
        &self,
        provider: &StorageProvider,
        rctx: &RenderContext,
        key: &RepoKey,
        name: &str,
        namespace: &str,
        digest: &str,
    ) -> Result<Secret> {
        let conf = match self.repo.access_method() {
            AccessMethod::Tool => Some(
                render(
                    provider,
                    "spec.datasafedConfigTemplate",
                    TOOL_CONFIG_TEMPLATE,
                    provider
                        .spec
                        .datasafed_config_template
                        .as_deref()
                        .unwrap_or(""),
                    rctx,
                )
                .map_err(|e| prefix_error(e, "failed to render tool config template"))?,
            ),
            AccessMethod::Mount => None,
        };
        // The pre-check's own Secret carries the repository key (it may create the
        // repository) and the access key's secret; the revocation Job's the repository
        // key (an access key does not remove itself); every other one the pods' key.
        let pre_check = name == self.pre_check_name() && namespace == self.namespace();
        let (key_bytes, source_id) = if pre_check || self.is_revoke_secret(name, namespace) {
            (key.key.clone(), key.source.id())
        } else {
            key.for_pods()
        };
        let mut secret = tool_secret(
            &self.repo,
            name,
            namespace,
            conf.as_deref(),
            &key_bytes,
            generation_annotations(digest, &source_id),
        );
        if let (true, Some(access), Some(data)) =
            (pre_check, key.access_secret.as_ref(), secret.data.as_mut())
        {
            data.insert(
                crate::builder::access::PRE_CHECK_SECRET_KEY.to_string(),
                ByteString(access.as_bytes().to_vec()),
            );
        }
        Ok(secret)
    }

    /// What a namespace needs for pods to reach the repository.
    pub(super) async fn prepare_namespace(
        &self,
        provider: &StorageProvider,
        rctx: &RenderContext,
        key: &RepoKey,
        namespace: &str,
        digest: &str,
    ) -> Result<()> {
        if self.repo.access_method() == AccessMethod::Mount {
            let pvc_name = self.status.backup_pvc_name.clone().unwrap_or_default();
            self.ensure_pvc(provider, rctx, &pvc_name, namespace, BTreeMap::new())
                .await?;
        }
        let secret_name = self
            .status
            .tool_config_secret_name
            .clone()
            .unwrap_or_default();
        self.ensure_tool_secret(provider, rctx, key, &secret_name, namespace, digest)
            .await?;
        Ok(())
    }
}
