//! Deletion of a BackupRepo with Tool access: the pods' access key is removed from the
//! repository before the finalizer goes ([`crate::builder::access::revoke_job`]).
//!
//! The access key's text sits in every namespace's tool Secret, so copies of it outlive
//! the BackupRepo (a Secret copied out, a backup of etcd). Deleting the Secrets alone
//! leaves the key file in the repository and the copies opening it. Best effort, and
//! bounded: when the removal cannot run (the provider or credential is gone) or fails
//! (the storage is gone or refuses), or runs longer than [`REVOKE_TIMEOUT`], a Warning
//! Event names the key id and the repository for an admin to remove it by hand, and the
//! deletion goes on.
//!
//! Neither the revocation Job and its Secret nor the access Secret (which names the key)
//! is owned by the BackupRepo: `kubectl delete --cascade=foreground` has the garbage
//! collector delete every dependent of the BackupRepo while its finalizer holds it, which
//! removed them before the revocation ran, and the key stayed valid. They carry the
//! repository's name and uid ([`label::DPREPO_BACKUP_REPO_UID`]) and the controller
//! deletes them: once the revocation is done, on the next reconcile of a repository that
//! left them behind (a restart mid-way), and at start for repositories gone
//! ([`sweep_left_behind`]).

use super::*;
use crate::builder::access::{id_of_access_key, revoke_job, ACCESS_KEY_FIELD, REVOKE_CONTAINER};
use crate::builder::names::{access_secret_name, revoke_key_name};

/// The Event reason when the access key was removed from the repository.
pub const ACCESS_KEY_REVOKED: &str = "AccessKeyRevoked";
/// The Event reason when it could not be: it must be removed by hand.
pub const ACCESS_KEY_NOT_REVOKED: &str = "AccessKeyNotRevoked";

/// How long the revocation Job may run before the deletion goes on without it.
pub const REVOKE_TIMEOUT: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// How often a running revocation is looked at (its Job's changes also wake it).
pub const REVOKE_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Longest piece of the Job's output quoted in the Warning.
const OUTPUT_LIMIT: usize = 400;

impl Run<'_> {
    fn revoke_name(&self) -> String {
        revoke_key_name(self.repo.metadata.uid.as_deref().unwrap_or(""), &self.name)
    }

    /// Whether `name` in `namespace` is the revocation Job's tool Secret (which carries
    /// the repository key, as the pre-check's does).
    pub(super) fn is_revoke_secret(&self, name: &str, namespace: &str) -> bool {
        namespace == self.namespace() && name == self.revoke_name()
    }

    /// The id of the access key recorded in the access Secret, if one is.
    async fn recorded_access_key(&self) -> Result<Option<String>> {
        let ns = self.namespace().to_string();
        let name = access_secret_name(&self.name);
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &ns);
        let Some(secret) = secrets
            .get_opt(&name)
            .await
            .during(|| format!("get Secret {ns}/{name}"))?
        else {
            return Ok(None);
        };
        let text = secret
            .data
            .as_ref()
            .and_then(|d| d.get(ACCESS_KEY_FIELD))
            .and_then(|v| std::str::from_utf8(&v.0).ok())
            .map(str::to_string);
        Ok(text.as_deref().and_then(id_of_access_key))
    }

    /// Drops the access key from the access Secret: it is revoked, or given up on.
    async fn forget_access_key(&self) -> Result<()> {
        let ns = self.namespace().to_string();
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &ns);
        let name = access_secret_name(&self.name);
        match patch_object(
            &secrets,
            &name,
            None,
            json!({"data": {ACCESS_KEY_FIELD: null}}),
        )
        .await
        {
            Err(Error::Kube { source, .. }) if is_not_found(&source) => Ok(()),
            other => other.map(drop),
        }
    }

    /// The storage provider, the rendering context and the repository key, as a reconcile
    /// computes them; the conditions they set are not kept (the BackupRepo is going).
    async fn revoke_inputs(&mut self) -> Result<(StorageProvider, RenderContext, RepoKey, String)> {
        let saved = self.status.clone();
        let inputs = async {
            let provider = self.check_provider().await?;
            let (params, key) = self.check_parameters(&provider).await?;
            let digest = digest(&params, &templates(&provider));
            let rctx = RenderContext {
                parameters: params,
                ..Default::default()
            };
            Ok((provider, rctx, key, digest))
        }
        .await;
        self.status = saved;
        inputs
    }

    /// Removes the pods' access key from the repository (Tool access). `Some(interval)`
    /// while the removal runs; `None` once it is done or given up on (a Warning Event
    /// then names the key).
    pub(super) async fn revoke_access_key(&mut self) -> Result<Option<Duration>> {
        let recorded = if self.repo.access_method() == AccessMethod::Tool {
            self.recorded_access_key().await?
        } else {
            None
        };
        let Some(id) = recorded else {
            // Nothing (left) to revoke; a revocation a restart interrupted after it
            // forgot the key leaves its Job and Secret (the repository key) behind.
            self.remove_revocation().await?;
            return Ok(None);
        };
        let ns = self.namespace().to_string();
        let name = self.revoke_name();
        let jobs: Api<Job> = Api::namespaced(self.ctx.client.clone(), &ns);
        let found = jobs
            .get_opt(&name)
            .await
            .during(|| format!("get Job {ns}/{name}"))?;
        let Some(job) = found else {
            let (provider, rctx, key, digest) = match self.revoke_inputs().await {
                Ok(inputs) => inputs,
                Err(e @ (Error::Invalid { .. } | Error::Missing { .. })) => {
                    self.not_revoked(&id, &format!("the removal cannot run: {e}"), None)
                        .await;
                    self.forget_access_key().await?;
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            let sa = ensure_worker_service_account(self.ctx, &ns).await?;
            let secret = match self.tool_secret_object(&provider, &rctx, &key, &name, &ns, &digest)
            {
                Ok(mut s) => {
                    self.unowned(&mut s.metadata);
                    s
                }
                Err(e) => {
                    self.not_revoked(&id, &format!("the removal cannot run: {e}"), None)
                        .await;
                    self.forget_access_key().await?;
                    return Ok(None);
                }
            };
            let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &ns);
            create_if_absent(&secrets, &secret).await?;
            create_if_absent(
                &jobs,
                &revoke_job(&self.repo, &name, &id, &sa, &self.ctx.config),
            )
            .await?;
            tracing::info!(repo = %self.name, key = %&id[..16], "removing the pods' access key from the repository");
            return Ok(Some(REVOKE_CHECK_INTERVAL));
        };
        match job_finished(&job) {
            Some((true, _)) => {
                let repo = self.repo.clone();
                self.ctx
                    .event(
                        &repo,
                        EventType::Normal,
                        ACCESS_KEY_REVOKED,
                        format!(
                            "removed access key {id} from the repository: copies of it open \
                             nothing any more"
                        ),
                    )
                    .await;
            }
            Some((false, failure)) => {
                let output = self.revoke_output(&name).await;
                self.not_revoked(&id, &format!("the removal Job failed ({failure})"), output)
                    .await;
            }
            None => {
                let created = job
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(crate::reconcile::from_time)
                    .unwrap_or(self.now);
                if self.now - created <= REVOKE_TIMEOUT {
                    return Ok(Some(REVOKE_CHECK_INTERVAL));
                }
                let output = self.revoke_output(&name).await;
                self.not_revoked(
                    &id,
                    &format!(
                        "the removal Job did not finish within {} minutes",
                        REVOKE_TIMEOUT.num_minutes()
                    ),
                    output,
                )
                .await;
            }
        }
        self.forget_access_key().await?;
        self.remove_revocation().await?;
        Ok(None)
    }

    /// `meta` as an object of this repository that a cascading deletion must not remove:
    /// no owner reference, labelled with the repository's name and uid.
    pub(super) fn unowned(&self, meta: &mut ObjectMeta) {
        meta.owner_references = None;
        let labels = meta.labels.get_or_insert_with(BTreeMap::new);
        labels.insert(label::BACKUP_REPO_NAME.to_string(), self.name.clone());
        labels.insert(
            label::DPREPO_BACKUP_REPO_UID.to_string(),
            self.repo.metadata.uid.clone().unwrap_or_default(),
        );
    }

    /// Deletes the revocation Job (with its pods) and its Secret, if there.
    async fn remove_revocation(&self) -> Result<()> {
        let ns = self.namespace().to_string();
        let name = self.revoke_name();
        delete_background(&Api::<Job>::namespaced(self.ctx.client.clone(), &ns), &name).await?;
        delete_background(
            &Api::<Secret>::namespaced(self.ctx.client.clone(), &ns),
            &name,
        )
        .await
    }

    /// Deletes the access Secret: the last step of the deletion, after the revocation.
    pub(super) async fn remove_access_secret(&self) -> Result<()> {
        let ns = self.namespace().to_string();
        delete_background(
            &Api::<Secret>::namespaced(self.ctx.client.clone(), &ns),
            &access_secret_name(&self.name),
        )
        .await
    }

    /// The termination message (the log's tail on failure) of the revocation Job's last
    /// pod.
    async fn revoke_output(&self, job: &str) -> Option<String> {
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), self.namespace());
        let mut list = pods
            .list(&ListParams::default().labels(&format!("job-name={job}")))
            .await
            .ok()?
            .items;
        list.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
        list.iter().rev().find_map(|pod| {
            pod.status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .iter()
                .find(|c| c.name == REVOKE_CONTAINER)?
                .state
                .as_ref()?
                .terminated
                .as_ref()?
                .message
                .as_deref()
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(|m| truncate(m, OUTPUT_LIMIT))
        })
    }

    /// The Warning that the access key `id` still opens the repository.
    async fn not_revoked(&self, id: &str, why: &str, output: Option<String>) {
        let location = self.repository_location();
        let output = output.map_or(String::new(), |o| format!(" Output: {o}"));
        let note = format!(
            "access key {id} was not removed from the repository of BackupRepo {} ({location}): \
             {why}. Copies of it still open the repository: remove it by hand with \
             `dprepo key remove {id}`.{output}",
            self.name
        );
        tracing::warn!(repo = %self.name, key = %id, "{note}");
        let repo = self.repo.clone();
        self.ctx
            .event(&repo, EventType::Warning, ACCESS_KEY_NOT_REVOKED, note)
            .await;
    }

    /// Where the repository is, as far as the BackupRepo says without rendering.
    fn repository_location(&self) -> String {
        let spec = &self.repo.spec;
        let mut parts = vec![format!("StorageProvider {}", spec.storage_provider_ref)];
        if let Some(config) = &spec.config {
            let shown: Vec<String> = config
                .iter()
                .filter(|(k, _)| {
                    let k = k.to_ascii_lowercase();
                    ["bucket", "root", "path", "endpoint", "prefix"]
                        .iter()
                        .any(|w| k.contains(w))
                })
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            if !shown.is_empty() {
                parts.push(shown.join(", "));
            }
        }
        if let Some(prefix) = spec.path_prefix.as_deref().filter(|p| !p.is_empty()) {
            parts.push(format!("pathPrefix {prefix}"));
        }
        parts.join(", ")
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Deletes the Jobs and Secrets in `namespace` labelled with the uid of a BackupRepo that
/// no longer exists ([`label::DPREPO_BACKUP_REPO_UID`]: access Secrets, revocation Jobs and
/// their Secrets, which no owner reference lets the garbage collector remove), as left
/// behind when a BackupRepo's finalizer was removed by hand. Returns how many were deleted.
///
/// # Errors
/// The API error of a list or a delete.
pub async fn sweep_left_behind(client: &kube::Client, namespace: &str) -> Result<usize> {
    let by_uid = ListParams::default().labels(label::DPREPO_BACKUP_REPO_UID);
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    // Listed before the repositories: whatever is listed here and belongs to a live
    // repository has that repository in the list below.
    let job_list = jobs
        .list(&by_uid)
        .await
        .during(|| format!("list the Jobs of BackupRepos in {namespace}"))?
        .items;
    let secret_list = secrets
        .list(&by_uid)
        .await
        .during(|| format!("list the Secrets of BackupRepos in {namespace}"))?
        .items;
    let live: std::collections::BTreeSet<String> = Api::<BackupRepo>::all(client.clone())
        .list(&ListParams::default())
        .await
        .during(|| "list BackupRepos".to_string())?
        .items
        .into_iter()
        .filter_map(|r| r.metadata.uid)
        .collect();
    let gone = |meta: &ObjectMeta| {
        label_of(meta, label::DPREPO_BACKUP_REPO_UID).is_some_and(|uid| !live.contains(uid))
    };
    let mut deleted = 0;
    for j in job_list.iter().filter(|j| gone(&j.metadata)) {
        let name = j.metadata.name.as_deref().unwrap_or("");
        tracing::info!(job = %format!("{namespace}/{name}"), "deleting a Job of a BackupRepo that is gone");
        delete_background(&jobs, name).await?;
        deleted += 1;
    }
    for s in secret_list.iter().filter(|s| gone(&s.metadata)) {
        let name = s.metadata.name.as_deref().unwrap_or("");
        warn_unrevoked_key(s, &format!("{namespace}/{name}"));
        tracing::info!(secret = %format!("{namespace}/{name}"), "deleting a Secret of a BackupRepo that is gone");
        delete_background(&secrets, name).await?;
        deleted += 1;
    }
    Ok(deleted)
}

/// Before an access Secret is deleted outside the revocation (its BackupRepo is gone,
/// or it was left by an earlier repository of the same name): a key it still records
/// was never revoked, so name the key id for removal by hand (SPEC.md 6.1).
pub(super) fn warn_unrevoked_key(secret: &Secret, what: &str) {
    let id = secret
        .data
        .as_ref()
        .and_then(|d| d.get(ACCESS_KEY_FIELD))
        .and_then(|v| std::str::from_utf8(&v.0).ok())
        .and_then(id_of_access_key);
    if let Some(id) = id {
        tracing::warn!(secret = %what, key_id = %id,
            "deleting an access Secret whose key was never revoked: remove it with `dprepo key remove {id}`");
    }
}
