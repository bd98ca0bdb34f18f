//! The pods' access key ([`crate::builder::access`]): the secret kept, the key recorded
//! once the pre-check registered it.

use super::*;
use crate::builder::access::{
    access_key_text, generate_secret, id_from_log, valid_secret, ACCESS_KEY_FIELD,
    ACCESS_KEY_PREFIX, SECRET_FIELD,
};
use crate::builder::names::access_secret_name;

/// The Event reason when a pre-check passed without registering an access key.
pub const NO_ACCESS_KEY: &str = "AccessKeyNotRegistered";

impl Run<'_> {
    /// Reads (creating it with a new secret when absent) the access Secret into `key`:
    /// the secret for the pre-check, and the access key when it was registered for this
    /// `digest` and key source.
    ///
    /// Tool access only: with Mount access each namespace's claim may be a volume of its
    /// own (a CSI driver's subdirectory per volume), whose repository the first Job there
    /// creates, which takes the repository key.
    pub(super) async fn load_access(&self, key: &mut RepoKey, digest: &str) -> Result<()> {
        key.access_secret = None;
        key.access_key = None;
        if self.repo.access_method() != AccessMethod::Tool {
            return Ok(());
        }
        let ns = self.namespace().to_string();
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &ns);
        let name = access_secret_name(&self.name);
        let fresh = generate_secret()
            .map_err(|e| Error::Other(format!("generating an access key secret: {e}")))?;
        // Not owned by the BackupRepo: it names the key the deletion revokes, and a
        // foreground deletion would have the garbage collector remove it first.
        let mut wanted = Secret {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                SECRET_FIELD.to_string(),
                ByteString(fresh.into_bytes()),
            )])),
            ..Default::default()
        };
        self.unowned(&mut wanted.metadata);
        let (mut secret, _) = create_if_absent(&secrets, &wanted).await?;
        let uid = self.repo.metadata.uid.as_deref().unwrap_or("");
        match label_of(&secret.metadata, label::DPREPO_BACKUP_REPO_UID) {
            // Left behind by an earlier BackupRepo of this name (its finalizer removed by
            // hand): that key is not this repository's.
            Some(other) if other != uid => {
                super::revoke::warn_unrevoked_key(&secret, &format!("{ns}/{name}"));
                tracing::info!(repo = %self.name, secret = %format!("{ns}/{name}"),
                    "replacing the access Secret of an earlier BackupRepo of this name");
                delete_background(&secrets, &name).await?;
                secret = create_if_absent(&secrets, &wanted).await?.0;
            }
            Some(_) => {}
            // Written by an earlier version, owned by the BackupRepo: released now,
            // before a deletion.
            None => {
                secret = patch_object(
                    &secrets,
                    &name,
                    None,
                    json!({"metadata": {
                        "ownerReferences": null,
                        "labels": wanted.metadata.labels,
                    }}),
                )
                .await?;
            }
        }
        let field = |k: &str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(k))
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
                .map(|s| s.trim().to_string())
        };
        let Some(s) = field(SECRET_FIELD).filter(|s| valid_secret(s)) else {
            tracing::warn!(repo = %self.name, secret = %format!("{ns}/{name}"),
                "the access Secret's `secret` is not 64 hex digits: pods get the repository key");
            return Ok(());
        };
        let registered_for = |a: &str| annotation_of(&secret.metadata, a);
        if registered_for(annotation::BACKUP_REPO_DIGEST) == Some(digest)
            && registered_for(KEY_SOURCE_ANNOTATION) == Some(key.source.id().as_str())
        {
            if let Some(text) = field(ACCESS_KEY_FIELD) {
                let id = text
                    .strip_prefix(ACCESS_KEY_PREFIX)
                    .and_then(|rest| rest.split_once('-'))
                    .filter(|(_, secret)| *secret == s)
                    .map(|(id, _)| id.to_string());
                if let Some(id) = id {
                    key.access_key = Some(AccessKeyInUse { text, id });
                }
            }
        }
        key.access_secret = Some(s);
        Ok(())
    }

    /// After the pre-check passed: the key file id from its log, composed with the secret
    /// and recorded; the tool Secrets are flagged for rewriting. Without an id (a
    /// datasafed that cannot register one), a Warning Event, and pods keep the repository
    /// key.
    pub(super) async fn record_access_key(&mut self, key: &RepoKey, digest: &str) -> Result<()> {
        let Some(secret) = key.access_secret.as_deref() else {
            return Ok(());
        };
        let ns = self.namespace().to_string();
        let job = self.pre_check_name();
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
        let list = pods
            .list(&ListParams::default().labels(&format!("job-name={job}")))
            .await
            .during(|| format!("list the pods of Job {ns}/{job}"))?;
        let mut id = None;
        for pod in &list.items {
            if pod.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Succeeded") {
                continue;
            }
            let params = LogParams {
                container: Some(PRE_CHECK_CONTAINER.into()),
                // The id is the script's last output.
                tail_lines: Some(50),
                ..Default::default()
            };
            match pods
                .logs(pod.metadata.name.as_deref().unwrap_or(""), &params)
                .await
            {
                Ok(log) => id = id_from_log(&log),
                Err(e) => {
                    tracing::warn!(repo = %self.name, error = %e, "could not read the pre-check pod's log")
                }
            }
            if id.is_some() {
                break;
            }
        }
        let Some(id) = id else {
            let repo = self.repo.clone();
            self.ctx
                .event(
                    &repo,
                    EventType::Warning,
                    NO_ACCESS_KEY,
                    "the pre-check registered no access key (see its log): pods get the \
                     repository key"
                        .to_string(),
                )
                .await;
            return Ok(());
        };
        let text = access_key_text(&id, secret);
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &ns);
        let name = access_secret_name(&self.name);
        let encoded =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, text.as_bytes());
        patch_object(
            &secrets,
            &name,
            None,
            json!({
                "metadata": {"annotations": generation_annotations(digest, &key.source.id())},
                "data": {ACCESS_KEY_FIELD: encoded},
            }),
        )
        .await?;
        tracing::info!(repo = %self.name, key = %&id[..16], "recorded the pods' access key");
        self.set_annotations(BTreeMap::from([(
            annotation::NEED_UPDATE_TOOL_CONFIG.to_string(),
            "true".to_string(),
        )]))
        .await
    }
}
