//! postReady Exec actions of a Restore: the Job runs `dprepo-controller exec` in the
//! controller's namespace as the exec worker (as KubeBlocks runs kubectl there), and
//! hands the restore variables and `DP_DB_*` to the command.
//!
//! `DP_DB_USER`/`DP_DB_PASSWORD` (and host or port when the credential names keys for
//! them) come from `readyConfig.connectionCredential`, a Secret in the Restore's
//! namespace, which a pod in the controller's namespace cannot reference. The controller
//! copies those values into a Secret of the same name as the Job, beside it (labelled
//! `restore` + `restore-namespace`, deleted with the Restore's Jobs), and the Job's
//! variables point at it; `dprepo-controller exec --forward-env DP_` then sends them to
//! the command over the exec stream's stdin, never in its URL.

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};
use k8s_openapi::ByteString;

use super::*;
use crate::api::backuppolicy::ConnectionCredential;
use crate::builder::exec::{exec_args, ExecJobInputs, EXEC_COMMAND};
use crate::builder::restore::{pod_host_dns, restore_job, RestoreJobInputs, Stage};

/// The `DP_DB_*` variables of an Exec action against `pod`: literal host and port when the
/// credential names no keys for them, the rest copied into `copy` (key = variable name)
/// and referenced from Secret `copy_name`.
///
/// # Errors
/// The credential Secret lacks a key it names (the message names Secret and key).
pub fn exec_db_env(
    pod: &Pod,
    credential: Option<(&ConnectionCredential, &Secret)>,
    cluster_domain: &str,
    copy_name: &str,
    copy: &mut BTreeMap<String, ByteString>,
) -> std::result::Result<Vec<EnvVar>, String> {
    let literal = |name: &str, value: String| EnvVar {
        name: name.into(),
        value: Some(value),
        value_from: None,
    };
    let reference = |name: &str| EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: copy_name.into(),
                key: name.into(),
                optional: None,
            }),
            ..Default::default()
        }),
    };
    let host = literal("DP_DB_HOST", pod_host_dns(pod, cluster_domain));
    let port = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.ports.as_ref())
        .and_then(|p| p.first())
        .map(|p| literal("DP_DB_PORT", p.container_port.to_string()));
    let Some((c, secret)) = credential else {
        let mut env = vec![host];
        env.extend(port);
        return Ok(env);
    };
    let mut take = |var: &str, key: &str| -> std::result::Result<EnvVar, String> {
        let value = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .cloned()
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|s| ByteString(s.clone().into_bytes()))
            })
            .ok_or_else(|| {
                format!(
                    "the connection credential Secret {} has no key {key}",
                    c.secret_name
                )
            })?;
        copy.insert(var.to_string(), value);
        Ok(reference(var))
    };
    let mut env = vec![
        take("DP_DB_USER", c.username_key())?,
        take("DP_DB_PASSWORD", c.password_key())?,
    ];
    match c.port_key.as_deref().filter(|k| !k.is_empty()) {
        Some(k) => env.push(take("DP_DB_PORT", k)?),
        None => env.extend(port),
    }
    match c.host_key.as_deref().filter(|k| !k.is_empty()) {
        Some(k) => env.push(take("DP_DB_HOST", k)?),
        None => env.push(host),
    }
    Ok(env)
}

impl Run<'_> {
    /// The Job of postReady Exec step `spec` against target pod `pod` (the `index`th).
    pub(super) async fn post_ready_exec_job(
        &self,
        set: &BackupSet,
        exec: &crate::api::actionset::ExecActionSpec,
        ready: &crate::api::restore::ReadyConfig,
        pod: &Pod,
        name: String,
        mut env: Vec<EnvVar>,
    ) -> Result<Outcome<Job>> {
        let cm_ns = self.ctx.config.namespace.clone();
        let timeout_secs = match crate::builder::exec::timeout_secs(exec.timeout.as_ref()) {
            Ok(t) => t,
            Err(m) => return Ok(Err(Fatal(format!("postReady exec action: {m}")))),
        };
        let credential = match ready.connection_credential.as_ref() {
            None => None,
            Some(c) => {
                let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.ns);
                match secrets
                    .get_opt(&c.secret_name)
                    .await
                    .during(|| format!("get Secret {}/{}", self.ns, c.secret_name))?
                {
                    Some(s) => Some((c, s)),
                    None => {
                        return Ok(Err(Fatal(format!(
                            "the connection credential Secret {}/{} does not exist",
                            self.ns, c.secret_name
                        ))))
                    }
                }
            }
        };
        let mut copy = BTreeMap::new();
        let db_env = match exec_db_env(
            pod,
            credential.as_ref().map(|(c, s)| (*c, s)),
            &self.ctx.config.cluster_domain,
            &name,
            &mut copy,
        ) {
            Ok(e) => e,
            Err(m) => return Ok(Err(Fatal(m))),
        };
        crate::builder::restore::merge_env(&mut env, &db_env);
        let labels = BTreeMap::from([(label::RESTORE_NAMESPACE.to_string(), self.ns.clone())]);
        if !copy.is_empty() {
            let mut secret_labels = crate::builder::restore::restore_labels(&self.name);
            secret_labels.extend(labels.clone());
            let secret = Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(cm_ns.clone()),
                    labels: Some(secret_labels),
                    ..Default::default()
                },
                data: Some(copy),
                ..Default::default()
            };
            let api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &cm_ns);
            match api.create(&kube::api::PostParams::default(), &secret).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(Error::kube(format!("create Secret {cm_ns}/{name}"), e)),
            }
        }
        let exec_inputs = ExecJobInputs {
            name: name.clone(),
            container_name: String::new(),
            labels: BTreeMap::new(),
            pod_namespace: self.ns.clone(),
            pod_name: pod.metadata.name.clone().unwrap_or_default(),
            container: crate::builder::exec::exec_container(exec.container.as_deref(), pod),
            command: exec.command.clone(),
            timeout_secs,
            backoff_limit: None,
            env: env.clone(),
            tolerations: None,
        };
        let inputs = RestoreJobInputs {
            name,
            namespace: cm_ns,
            stage: Stage::PostReady,
            service_account: self.ctx.config.exec_worker_service_account.clone(),
            repo: None,
            image: self.ctx.config.tools_image.clone(),
            command: EXEC_COMMAND.iter().map(|s| s.to_string()).collect(),
            args: Some(exec_args(&exec_inputs)),
            env,
            claims: Vec::new(),
            volumes: Vec::new(),
            labels,
            node_name: None,
            tolerations: pod.spec.as_ref().and_then(|s| s.tolerations.clone()),
        };
        let mut job = restore_job(&self.restore, set, &inputs, &self.ctx.config);
        if let Some(spec) = job.spec.as_mut() {
            if let Some(t) = timeout_secs {
                spec.active_deadline_seconds = Some(
                    i64::try_from(t).unwrap_or(i64::MAX / 2)
                        + crate::builder::exec::DEADLINE_MARGIN_SECS,
                );
            }
        }
        Ok(Ok(job))
    }

    /// Deletes the credential copies of the Restore's exec Jobs.
    pub(super) async fn delete_exec_secrets(&self) -> Result<()> {
        let cm_ns = &self.ctx.config.namespace;
        let api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), cm_ns);
        let selector = format!(
            "{}={},{}={}",
            label::RESTORE,
            self.name,
            label::RESTORE_NAMESPACE,
            self.ns
        );
        let list = api
            .list(&ListParams::default().labels(&selector))
            .await
            .during(|| format!("list the exec Secrets of Restore {}/{}", self.ns, self.name))?;
        for s in list.items {
            delete_background(&api, s.metadata.name.as_deref().unwrap_or("")).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod exec_tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec, PodStatus};

    fn pod() -> Pod {
        Pod {
            metadata: kube::api::ObjectMeta {
                name: Some("db-0".into()),
                namespace: Some("demo".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "mariadb".into(),
                    ports: Some(vec![ContainerPort {
                        container_port: 3306,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                pod_ip: Some("10.0.0.7".into()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn credentials_are_copied_and_referenced_host_and_port_are_literal() {
        let c = ConnectionCredential {
            secret_name: "db-cred".into(),
            username_key: None,
            password_key: None,
            host_key: None,
            port_key: None,
        };
        let secret = Secret {
            data: Some(BTreeMap::from([
                ("username".into(), ByteString(b"root".to_vec())),
                ("password".into(), ByteString(b"s3cret".to_vec())),
            ])),
            ..Default::default()
        };
        let mut copy = BTreeMap::new();
        let env = exec_db_env(
            &pod(),
            Some((&c, &secret)),
            "cluster.local",
            "job-x",
            &mut copy,
        )
        .unwrap();
        let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            ["DP_DB_USER", "DP_DB_PASSWORD", "DP_DB_PORT", "DP_DB_HOST"]
        );
        assert_eq!(copy.get("DP_DB_PASSWORD").unwrap().0, b"s3cret");
        let pw = env[1]
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (pw.name.as_str(), pw.key.as_str()),
            ("job-x", "DP_DB_PASSWORD")
        );
        assert_eq!(env[2].value.as_deref(), Some("3306"));
        assert_eq!(env[3].value.as_deref(), Some("10.0.0.7"));
    }

    #[test]
    fn a_missing_credential_key_is_named() {
        let c = ConnectionCredential {
            secret_name: "db-cred".into(),
            username_key: None,
            password_key: Some("pw".into()),
            host_key: None,
            port_key: None,
        };
        let secret = Secret {
            data: Some(BTreeMap::from([(
                "username".into(),
                ByteString(b"root".to_vec()),
            )])),
            ..Default::default()
        };
        let err = exec_db_env(
            &pod(),
            Some((&c, &secret)),
            "cluster.local",
            "j",
            &mut BTreeMap::new(),
        )
        .unwrap_err();
        assert!(err.contains("db-cred") && err.contains("pw"), "{err}");
    }
}
