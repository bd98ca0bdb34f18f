//! The controller's configuration, read from the environment variables KubeBlocks'
//! dataprotection deployment uses, so a KubeBlocks installation's values (Helm chart,
//! ConfigMap) carry over unchanged.
//!
//! Every variable has KubeBlocks' default except the two images: the Jobs this
//! controller starts run dprepo's own binary, so `DATASAFED_IMAGE` and
//! `KUBEBLOCKS_TOOLS_IMAGE` default to dprepo's image (see [`DEFAULT_IMAGE`]).
//! A value that does not parse is an error naming the variable: the controller refuses
//! to start on a configuration it would misread.

use k8s_openapi::api::core::v1::{Affinity, LocalObjectReference, Toleration};
use std::collections::BTreeMap;
use std::time::Duration;

/// The image holding dprepo's static binary as `/datasafed` and `/dprepo`, and
/// `/scripts/install-datasafed.sh`: the default for both images the controller uses.
pub const DEFAULT_IMAGE: &str = concat!("docker.io/dprepo/dprepo:", env!("CARGO_PKG_VERSION"));

/// Where the configuration came from: a lookup of one environment variable.
/// [`ControllerConfig::from_env`] reads the process environment; tests pass a map.
pub trait EnvSource {
    /// The value of `name`, or `None` when it is unset.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl EnvSource for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// A configuration value that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}: {reason}")]
pub struct ConfigError {
    /// The variable.
    pub name: &'static str,
    /// What is wrong with its value.
    pub reason: String,
}

/// Everything the reconcilers take from the controller's environment.
#[derive(Debug, Clone, PartialEq)]
pub struct ControllerConfig {
    /// `CM_NAMESPACE`: the controller's namespace, where pre-check, GC and exec Jobs run
    /// and where generated key Secrets live (KubeBlocks' default `default`).
    pub namespace: String,
    /// `KUBEBLOCKS_TOOLS_IMAGE`: the image of the controller's own Jobs (pre-check,
    /// deleter, repository GC, the backup manager sidecar).
    pub tools_image: String,
    /// `DATASAFED_IMAGE`: the image the `dp-copy-datasafed` init container copies the
    /// `datasafed` binary from.
    pub datasafed_image: String,
    /// `KUBEBLOCKS_IMAGE_PULL_POLICY`: pull policy of the controller's images (unset:
    /// the cluster's default).
    pub image_pull_policy: Option<String>,
    /// `KUBEBLOCKS_IMAGE_PULL_SECRETS`: a JSON list of `{"name": ...}` references.
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// `WORKER_SERVICE_ACCOUNT_NAME`: the service account of backup, restore and delete
    /// pods, created per namespace.
    pub worker_service_account: String,
    /// `EXEC_WORKER_SERVICE_ACCOUNT_NAME`: the service account of exec-action Jobs.
    pub exec_worker_service_account: String,
    /// `WORKER_SERVICE_ACCOUNT_ANNOTATIONS`: a JSON object of annotations for the worker
    /// service accounts (e.g. cloud IAM roles).
    pub worker_service_account_annotations: BTreeMap<String, String>,
    /// `WORKER_CLUSTER_ROLE_NAME`: the ClusterRole bound to the worker service accounts.
    pub worker_cluster_role: String,
    /// `CM_TOLERATIONS`: tolerations of Jobs not run on a target's node (JSON list).
    pub tolerations: Vec<Toleration>,
    /// `CM_AFFINITY`: affinity of those Jobs (JSON object).
    pub affinity: Option<Affinity>,
    /// `CM_NODE_SELECTOR`: node selector of those Jobs (JSON object).
    pub node_selector: BTreeMap<String, String>,
    /// `GC_FREQUENCY_SECONDS`: how often every Backup is checked for expiry.
    pub gc_frequency: Duration,
    /// `DATAPROTECTION_RECONCILE_WORKERS`: concurrent reconciles per kind.
    pub reconcile_workers: u16,
    /// `KUBERNETES_CLUSTER_DOMAIN`: the DNS domain of pod and service names.
    pub cluster_domain: String,
}

impl ControllerConfig {
    /// Reads the configuration from the process environment.
    ///
    /// # Errors
    /// A variable whose value does not parse, named in the error.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&ProcessEnv)
    }

    /// Reads the configuration from `env`.
    ///
    /// # Errors
    /// A variable whose value does not parse, named in the error.
    pub fn from_source(env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let text = |name: &'static str, default: &str| -> String {
            env.var(name)
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_string())
        };
        let gc_seconds: u64 = parse_number(env, "GC_FREQUENCY_SECONDS", 3600)?;
        if gc_seconds == 0 {
            return Err(ConfigError {
                name: "GC_FREQUENCY_SECONDS",
                reason: "must be at least 1".into(),
            });
        }
        let default_workers = std::thread::available_parallelism()
            .map(|n| n.get().min(u16::MAX as usize) as u16)
            .unwrap_or(1);
        let reconcile_workers: u16 =
            parse_number(env, "DATAPROTECTION_RECONCILE_WORKERS", default_workers)?;
        Ok(Self {
            namespace: text("CM_NAMESPACE", "default"),
            tools_image: text("KUBEBLOCKS_TOOLS_IMAGE", DEFAULT_IMAGE),
            datasafed_image: text("DATASAFED_IMAGE", DEFAULT_IMAGE),
            image_pull_policy: env
                .var("KUBEBLOCKS_IMAGE_PULL_POLICY")
                .filter(|v| !v.is_empty()),
            image_pull_secrets: parse_json(env, "KUBEBLOCKS_IMAGE_PULL_SECRETS")?
                .unwrap_or_default(),
            worker_service_account: text(
                "WORKER_SERVICE_ACCOUNT_NAME",
                "kubeblocks-dataprotection-worker",
            ),
            exec_worker_service_account: text(
                "EXEC_WORKER_SERVICE_ACCOUNT_NAME",
                "kubeblocks-dataprotection-exec-worker",
            ),
            worker_service_account_annotations: parse_json(
                env,
                "WORKER_SERVICE_ACCOUNT_ANNOTATIONS",
            )?
            .unwrap_or_default(),
            worker_cluster_role: text(
                "WORKER_CLUSTER_ROLE_NAME",
                "kubeblocks-dataprotection-worker-role",
            ),
            tolerations: parse_json(env, "CM_TOLERATIONS")?.unwrap_or_default(),
            affinity: parse_json(env, "CM_AFFINITY")?,
            node_selector: parse_json(env, "CM_NODE_SELECTOR")?.unwrap_or_default(),
            gc_frequency: Duration::from_secs(gc_seconds),
            reconcile_workers: reconcile_workers.max(1),
            cluster_domain: text("KUBERNETES_CLUSTER_DOMAIN", "cluster.local"),
        })
    }
}

fn parse_number<T: std::str::FromStr>(
    env: &dyn EnvSource,
    name: &'static str,
    default: T,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match env.var(name).filter(|v| !v.trim().is_empty()) {
        None => Ok(default),
        Some(value) => value.trim().parse().map_err(|e| ConfigError {
            name,
            reason: format!("{value:?} is not a number: {e}"),
        }),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(
    env: &dyn EnvSource,
    name: &'static str,
) -> Result<Option<T>, ConfigError> {
    match env.var(name).filter(|v| !v.trim().is_empty()) {
        None => Ok(None),
        Some(value) => serde_json::from_str(&value)
            .map(Some)
            .map_err(|e| ConfigError {
                name,
                reason: format!("not valid JSON for this setting: {e}"),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_kubeblocks_defaults_except_the_images() {
        let config = ControllerConfig::from_source(&env(&[])).unwrap();
        assert_eq!(config.namespace, "default");
        assert_eq!(
            config.worker_service_account,
            "kubeblocks-dataprotection-worker"
        );
        assert_eq!(
            config.exec_worker_service_account,
            "kubeblocks-dataprotection-exec-worker"
        );
        assert_eq!(
            config.worker_cluster_role,
            "kubeblocks-dataprotection-worker-role"
        );
        assert_eq!(config.gc_frequency, Duration::from_secs(3600));
        assert_eq!(config.cluster_domain, "cluster.local");
        assert_eq!(config.datasafed_image, DEFAULT_IMAGE);
        assert_eq!(config.tools_image, DEFAULT_IMAGE);
        assert!(config.tolerations.is_empty() && config.affinity.is_none());
    }

    #[test]
    fn json_settings_are_parsed() {
        let config = ControllerConfig::from_source(&env(&[
            ("CM_NAMESPACE", "kb-system"),
            (
                "CM_TOLERATIONS",
                r#"[{"key":"dedicated","operator":"Equal","value":"backup","effect":"NoSchedule"}]"#,
            ),
            ("CM_NODE_SELECTOR", r#"{"disk":"ssd"}"#),
            ("KUBEBLOCKS_IMAGE_PULL_SECRETS", r#"[{"name":"regcred"}]"#),
            ("WORKER_SERVICE_ACCOUNT_ANNOTATIONS", r#"{"iam.role":"backup"}"#),
            ("GC_FREQUENCY_SECONDS", "60"),
        ]))
        .unwrap();
        assert_eq!(config.namespace, "kb-system");
        assert_eq!(config.tolerations[0].key.as_deref(), Some("dedicated"));
        assert_eq!(config.node_selector["disk"], "ssd");
        assert_eq!(config.image_pull_secrets[0].name, "regcred");
        assert_eq!(
            config.worker_service_account_annotations["iam.role"],
            "backup"
        );
        assert_eq!(config.gc_frequency, Duration::from_secs(60));
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let err = ControllerConfig::from_source(&env(&[("CM_AFFINITY", "{not json")])).unwrap_err();
        assert_eq!(err.name, "CM_AFFINITY");
        assert!(err
            .to_string()
            .starts_with("environment variable CM_AFFINITY: "));
        let err =
            ControllerConfig::from_source(&env(&[("GC_FREQUENCY_SECONDS", "hourly")])).unwrap_err();
        assert_eq!(err.name, "GC_FREQUENCY_SECONDS");
        let err =
            ControllerConfig::from_source(&env(&[("GC_FREQUENCY_SECONDS", "0")])).unwrap_err();
        assert!(err.reason.contains("at least 1"));
    }
}
