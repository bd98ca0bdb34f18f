//! `dprepo-controller run`: the operator process.
//!
//! 1. Reads the configuration (KubeBlocks' environment variables) and connects to the API
//!    server as kube clients do (`KUBECONFIG`, else the in-cluster service account).
//! 2. Serves `/metrics`, `/healthz` and `/readyz` (KubeBlocks' ports: `:8080` and `:8081`).
//!    `/readyz` answers 200 once the API server answers and every CRD the controller
//!    serves is installed; a missing CRD is logged by name and checked again every few
//!    seconds.
//! 3. Waits to lead (a `coordination.k8s.io` Lease named `--leader-elect-id` in
//!    `CM_NAMESPACE`; `--leader-elect=false` skips it), then runs one
//!    `kube::runtime::Controller` per kind, each with `DATAPROTECTION_RECONCILE_WORKERS`
//!    concurrent reconciles.
//! 4. On SIGTERM or SIGINT: no new reconciles, running ones finish, the Lease is given
//!    up, the process exits 0. A leader that loses its Lease exits 1 (a restarted replica
//!    starts clean).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use futures::channel::oneshot;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::storage::v1::{CSIDriver, StorageClass};
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Config as ControllerRunConfig, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource};
use tokio::sync::watch;

use crate::api::labels::{label, FINALIZER};
use crate::api::{
    ActionSet, Backup, BackupPolicy, BackupRepo, BackupSchedule, GarbageCollection, Restore,
    StorageProvider,
};
use crate::builder::gc_job::GC_LABEL;
use crate::config::ControllerConfig;
use crate::context::Context;
use crate::http::{self, Health};
use crate::leader::{self, LeaderOptions};
use crate::metrics::Metrics;
use crate::reconcile::{
    availability, backup, backuprepo, backupschedule, error_policy, expiry, garbagecollection,
    guarded, restore, seed, storageprovider,
};

/// KubeBlocks' default `--leader-elect-id`.
pub const DEFAULT_LEADER_ELECT_ID: &str = "abd03fda";

/// How often a missing CRD is looked for again.
pub const CRD_RETRY: Duration = Duration::from_secs(5);

/// The command line of `run`, parsed.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// `--metrics-bind-address` (`None`: `0`, metrics not served).
    pub metrics_address: Option<SocketAddr>,
    /// `--health-probe-bind-address`.
    pub probe_address: SocketAddr,
    /// `--leader-elect`.
    pub leader_elect: bool,
    /// `--leader-elect-id`.
    pub leader_elect_id: String,
}

/// Reads a Go-style listen address: `:8080` (all interfaces), `HOST:PORT`, or `0`
/// (disabled: `None`).
///
/// # Errors
/// Text that is none of these.
pub fn parse_bind_address(text: &str) -> std::result::Result<Option<SocketAddr>, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(None);
    }
    let full = if let Some(port) = text.strip_prefix(':') {
        format!("0.0.0.0:{port}")
    } else {
        text.to_string()
    };
    full.parse::<SocketAddr>()
        .map(Some)
        .map_err(|e| format!("{text:?} is not HOST:PORT, :PORT or 0: {e}"))
}

/// One CRD the controller serves: its name, and whether listing its objects works.
async fn crd_installed<K>(client: &Client) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

fn crd_name<K: Resource<DynamicType = ()>>() -> String {
    format!("{}.{}", K::plural(&()), K::group(&()))
}

/// The CRDs that are missing (by name), or the error reaching the API server.
pub async fn missing_crds(client: &Client) -> Result<Vec<String>, kube::Error> {
    let mut missing = Vec::new();
    macro_rules! check {
        ($($k:ty),*) => {$(
            if !crd_installed::<$k>(client).await? {
                missing.push(crd_name::<$k>());
            }
        )*};
    }
    check!(
        StorageProvider,
        BackupRepo,
        GarbageCollection,
        Backup,
        Restore,
        crate::api::ActionSet,
        crate::api::BackupPolicy,
        crate::api::BackupSchedule,
        crate::api::seed::BackupPolicy,
        crate::api::seed::BackupSchedule,
        crate::api::seed::Backup,
        crate::api::seed::Restore
    );
    Ok(missing)
}

/// Waits until the API server answers and every CRD is installed, logging what is
/// missing whenever that changes; `false` if `shutdown` came first.
async fn wait_until_ready(
    client: &Client,
    health: &Health,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let mut last = String::new();
    loop {
        let state = match missing_crds(client).await {
            Ok(m) if m.is_empty() => {
                health.set_ready(true);
                tracing::info!("the API server answers and every CRD is installed");
                return true;
            }
            Ok(m) => format!(
                "CRDs not installed: {} (apply deploy/crds, e.g. `kubectl apply -k deploy/crds`); not ready",
                m.join(", ")
            ),
            Err(e) => format!("cannot reach the API server: {e}; not ready"),
        };
        if state != last {
            tracing::error!("{state}");
            last = state;
        }
        tokio::select! {
            _ = tokio::time::sleep(CRD_RETRY) => {}
            _ = shutdown.changed() => return false,
        }
    }
}

fn identity() -> String {
    let base = std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "dprepo-controller".into());
    let suffix = crate::builder::names::random_suffix().unwrap_or_default();
    format!("{base}_{suffix}")
}

/// Resolves on SIGTERM or SIGINT.
async fn termination() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
}

fn repos_of_provider(store: &Store<BackupRepo>, provider: &str) -> Vec<ObjectRef<BackupRepo>> {
    store
        .state()
        .iter()
        .filter(|r| r.spec.storage_provider_ref == provider)
        .map(|r| ObjectRef::from_obj(r.as_ref()))
        .collect()
}

/// The BackupRepos a Secret matters to: its owner, and those whose credential, named key
/// or generated key (in `controller_ns`) it is.
fn repos_of_secret(
    store: &Store<BackupRepo>,
    secret: &Secret,
    controller_ns: &str,
) -> Vec<ObjectRef<BackupRepo>> {
    let ns = secret.metadata.namespace.clone().unwrap_or_default();
    let name = secret.metadata.name.clone().unwrap_or_default();
    let mut out: Vec<ObjectRef<BackupRepo>> = secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|o| {
            o.kind == "BackupRepo" && o.api_version == "dataprotection.kubeblocks.io/v1alpha1"
        })
        .map(|o| ObjectRef::new(&o.name))
        .collect();
    // The access Secret and the revocation's Secret, owned by nobody: by label.
    if ns == controller_ns && label_value(&secret.metadata, label::DPREPO_BACKUP_REPO_UID).is_some()
    {
        if let Some(repo) = label_value(&secret.metadata, label::BACKUP_REPO_NAME) {
            out.push(ObjectRef::new(repo));
        }
    }
    for repo in store.state() {
        let credential = repo.spec.credential.as_ref().is_some_and(|c| {
            c.name.as_deref() == Some(name.as_str()) && c.namespace.as_deref() == Some(ns.as_str())
        });
        let named = repo
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(crate::api::labels::annotation::DPREPO_KEY_SECRET))
            .is_some_and(|v| v.trim() == format!("{ns}/{name}"));
        let generated = ns == controller_ns
            && crate::builder::names::key_secret_name(repo.metadata.name.as_deref().unwrap_or(""))
                == name;
        if credential || named || generated {
            out.push(ObjectRef::from_obj(repo.as_ref()));
        }
    }
    out
}

/// The owners of kind `kind` (a cluster-scoped kind of `api_version`) of a namespaced
/// object. `Controller::owns` would give them the child's namespace, and a second,
/// namespaced key for the same object would let two reconciles of it run at once.
fn cluster_owners<K: Resource<DynamicType = ()>>(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Vec<ObjectRef<K>> {
    let kind = K::kind(&());
    let api_version = K::api_version(&());
    meta.owner_references
        .iter()
        .flatten()
        .filter(|o| o.controller == Some(true) && o.kind == kind && o.api_version == api_version)
        .map(|o| ObjectRef::new(&o.name))
        .collect()
}

fn label_value<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

/// KubeBlocks' `mapBackupToRepo`: a Backup wakes its repository when it waits for it, or
/// when it is being deleted (it may hold the repository's deletion up).
fn repo_of_backup(backup: &Backup) -> Option<ObjectRef<BackupRepo>> {
    let repo = label_value(&backup.metadata, label::BACKUP_REPO_NAME)?;
    let failed = backup.phase() == Some(crate::api::backup::BackupPhase::Failed)
        && label_value(&backup.metadata, label::BACKUP_TYPE) != Some("Continuous");
    if failed {
        return None;
    }
    let waiting = label_value(&backup.metadata, label::WAIT_REPO_PREPARATION) == Some("true");
    (waiting || backup.metadata.deletion_timestamp.is_some()).then(|| ObjectRef::new(repo))
}

fn repo_of_restore(restore: &Restore) -> Option<ObjectRef<BackupRepo>> {
    let repo = label_value(&restore.metadata, label::BACKUP_REPO_NAME)?;
    if restore.phase() == Some(crate::api::restore::RestorePhase::Failed) {
        return None;
    }
    (label_value(&restore.metadata, label::WAIT_REPO_PREPARATION) == Some("true"))
        .then(|| ObjectRef::new(repo))
}

/// The Restore a restore Job or pod belongs to: label `restore`, in the namespace of label
/// `restore-namespace` (exec Jobs run in the controller's namespace), else its own.
fn restore_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<ObjectRef<Restore>> {
    let name = label_value(meta, label::RESTORE)?;
    let ns = label_value(meta, label::RESTORE_NAMESPACE)
        .or(meta.namespace.as_deref())
        .unwrap_or_default();
    Some(ObjectRef::new(name).within(ns))
}

/// The Backup of an exec Job (in the controller's namespace, labelled `backup-name` and
/// `backup-namespace`: no owner reference can cross namespaces).
fn backup_of_exec_job(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<ObjectRef<Backup>> {
    let name = label_value(meta, label::BACKUP_NAME)?;
    let ns = label_value(meta, label::BACKUP_NAMESPACE)?;
    Some(ObjectRef::new(name).within(ns))
}

/// The BackupSchedule that made a Backup (its `backup-schedule` label).
fn schedule_of_backup(backup: &Backup) -> Option<ObjectRef<BackupSchedule>> {
    let schedule = label_value(&backup.metadata, label::BACKUP_SCHEDULE)?;
    let ns = backup.metadata.namespace.as_deref()?;
    Some(ObjectRef::new(schedule).within(ns))
}

/// The BackupSchedules naming a BackupPolicy.
fn schedules_of_policy(
    store: &Store<BackupSchedule>,
    policy: &BackupPolicy,
) -> Vec<ObjectRef<BackupSchedule>> {
    let name = policy.metadata.name.as_deref().unwrap_or("");
    let ns = policy.metadata.namespace.as_deref();
    store
        .state()
        .iter()
        .filter(|s| s.spec.backup_policy_name == name && s.metadata.namespace.as_deref() == ns)
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

/// Runs the controllers and the expiry loop until `stop` resolves (each gets its own signal).
async fn run_controllers(ctx: Arc<Context>, mut stops: Vec<oneshot::Receiver<()>>) {
    let client = ctx.client.clone();
    let config = &ctx.config;
    let run_config = ControllerRunConfig::default().concurrency(config.reconcile_workers);
    let by_repo = watcher::Config::default().labels(label::BACKUP_REPO_NAME);
    let ns = config.namespace.clone();
    let stop = |stops: &mut Vec<oneshot::Receiver<()>>| {
        let rx = stops.pop();
        async move {
            if let Some(rx) = rx {
                let _ = rx.await;
            }
        }
    };

    // StorageProviders, woken by the CSIDrivers they name.
    let providers = Controller::new(
        Api::<StorageProvider>::all(client.clone()),
        watcher::Config::default(),
    );
    let provider_store = providers.store();
    let providers = providers
        .watches(
            Api::<CSIDriver>::all(client.clone()),
            watcher::Config::default(),
            move |driver: CSIDriver| {
                let name = driver.metadata.name.unwrap_or_default();
                provider_store
                    .state()
                    .iter()
                    .filter(|p| p.spec.csi_driver_name.as_deref() == Some(name.as_str()))
                    .map(|p| ObjectRef::from_obj(p.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .with_config(run_config.clone())
        .graceful_shutdown_on(stop(&mut stops))
        .run(
            |o, c| guarded(o, c, storageprovider::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(|r| async move { log_result("StorageProvider", r) });

    // BackupRepos: their derived objects, providers, Secrets, Backups and Restores.
    let repos = Controller::new(
        Api::<BackupRepo>::all(client.clone()),
        watcher::Config::default(),
    );
    let store = repos.store();
    let (s1, s2) = (store.clone(), store.clone());
    let secret_ns = ns.clone();
    let repos = repos
        .watches(
            Api::<Job>::namespaced(client.clone(), &ns),
            by_repo.clone(),
            |j: Job| {
                // The access-key revocation Job is owned by nobody (a foreground deletion
                // of the BackupRepo would delete it first): it names its repository.
                if label_value(&j.metadata, label::DPREPO_BACKUP_REPO_UID).is_some() {
                    label_value(&j.metadata, label::BACKUP_REPO_NAME)
                        .map(|name| vec![ObjectRef::<BackupRepo>::new(name)])
                        .unwrap_or_default()
                } else {
                    cluster_owners::<BackupRepo>(&j.metadata)
                }
            },
        )
        .watches(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            by_repo.clone(),
            |p: PersistentVolumeClaim| cluster_owners::<BackupRepo>(&p.metadata),
        )
        .owns(Api::<StorageClass>::all(client.clone()), by_repo.clone())
        .watches(
            Api::<StorageProvider>::all(client.clone()),
            watcher::Config::default(),
            move |p: StorageProvider| {
                repos_of_provider(&s1, p.metadata.name.as_deref().unwrap_or(""))
            },
        )
        .watches(
            Api::<Secret>::all(client.clone()),
            watcher::Config::default(),
            move |s: Secret| repos_of_secret(&s2, &s, &secret_ns),
        )
        .watches(
            Api::<Backup>::all(client.clone()),
            by_repo.clone(),
            |b: Backup| repo_of_backup(&b),
        )
        .watches(
            Api::<Restore>::all(client.clone()),
            by_repo.clone(),
            |r: Restore| repo_of_restore(&r),
        )
        .with_config(run_config.clone())
        .graceful_shutdown_on(stop(&mut stops))
        .run(
            |o, c| guarded(o, c, backuprepo::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(|r| async move { log_result("BackupRepo", r) });

    // GarbageCollections: their Jobs, and the BackupRepos they collect.
    let gcs = Controller::new(
        Api::<GarbageCollection>::all(client.clone()),
        watcher::Config::default(),
    );
    let gc_store = gcs.store();
    let gcs = gcs
        .watches(
            Api::<Job>::namespaced(client.clone(), &ns),
            watcher::Config::default().labels(GC_LABEL),
            |j: Job| cluster_owners::<GarbageCollection>(&j.metadata),
        )
        .watches(
            Api::<BackupRepo>::all(client.clone()),
            watcher::Config::default(),
            move |r: BackupRepo| {
                let name = r.metadata.name.unwrap_or_default();
                gc_store
                    .state()
                    .iter()
                    .filter(|g| g.spec.backup_repo_name == name)
                    .map(|g| ObjectRef::from_obj(g.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .with_config(run_config.clone())
        .graceful_shutdown_on(stop(&mut stops))
        .run(
            |o, c| guarded(o, c, garbagecollection::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(|r| async move { log_result("GarbageCollection", r) });

    // Restores: their Jobs (in their namespace, and exec Jobs in the controller's) and
    // the Jobs' pods (a restore container that ended releases the stage's managers).
    let by_restore = watcher::Config::default().labels(label::RESTORE);
    let restores = Controller::new(
        Api::<Restore>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<Job>::all(client.clone()),
        by_restore.clone(),
        |j: Job| restore_of(&j.metadata),
    )
    .watches(Api::<Pod>::all(client.clone()), by_restore, |p: Pod| {
        restore_of(&p.metadata)
    })
    .with_config(run_config.clone())
    .graceful_shutdown_on(stop(&mut stops))
    .run(
        |o, c| guarded(o, c, restore::reconcile),
        error_policy,
        ctx.clone(),
    )
    .for_each(|r| async move { log_result("Restore", r) });

    // ActionSets and BackupPolicies: checked, Available or Unavailable.
    let action_sets = Controller::new(
        Api::<ActionSet>::all(client.clone()),
        watcher::Config::default(),
    )
    .with_config(run_config.clone())
    .graceful_shutdown_on(stop(&mut stops))
    .run(
        |o, c| guarded(o, c, availability::reconcile_action_set),
        error_policy,
        ctx.clone(),
    )
    .for_each(|r| async move { log_result("ActionSet", r) });
    let policies = Controller::new(
        Api::<BackupPolicy>::all(client.clone()),
        watcher::Config::default(),
    )
    .with_config(run_config.clone())
    .graceful_shutdown_on(stop(&mut stops))
    .run(
        |o, c| guarded(o, c, availability::reconcile_policy),
        error_policy,
        ctx.clone(),
    )
    .for_each(|r| async move { log_result("BackupPolicy", r) });

    // Backups: woken by their Jobs and archiver StatefulSets (owned, in their namespace;
    // exec Jobs, in the controller's, by their labels).
    let backups = Controller::new(
        Api::<Backup>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<Job>::all(client.clone()),
        watcher::Config::default().labels(label::BACKUP_NAME),
    )
    .owns(
        Api::<k8s_openapi::api::apps::v1::StatefulSet>::all(client.clone()),
        watcher::Config::default().labels(label::BACKUP_NAME),
    )
    .watches(
        Api::<Job>::all(client.clone()),
        watcher::Config::default().labels(label::BACKUP_NAMESPACE),
        |j: Job| backup_of_exec_job(&j.metadata),
    )
    .with_config(run_config.clone())
    .graceful_shutdown_on(stop(&mut stops))
    .run(
        |o, c| guarded(o, c, backup::reconcile),
        error_policy,
        ctx.clone(),
    )
    .for_each(|r| async move { log_result("Backup", r) });

    // BackupSchedules: their CronJobs, the Backups they made, their BackupPolicies.
    let schedules = Controller::new(
        Api::<BackupSchedule>::all(client.clone()),
        watcher::Config::default(),
    );
    let schedule_store = schedules.store();
    let by_schedule = watcher::Config::default().labels(label::BACKUP_SCHEDULE);
    let schedules = schedules
        .owns(Api::<CronJob>::all(client.clone()), by_schedule.clone())
        .watches(
            Api::<Backup>::all(client.clone()),
            by_schedule,
            |b: Backup| schedule_of_backup(&b),
        )
        .watches(
            Api::<BackupPolicy>::all(client.clone()),
            watcher::Config::default(),
            move |p: BackupPolicy| schedules_of_policy(&schedule_store, &p),
        )
        .with_config(run_config.clone())
        .graceful_shutdown_on(stop(&mut stops))
        .run(
            |o, c| guarded(o, c, backupschedule::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(|r| async move { log_result("BackupSchedule", r) });

    // The seed's simplified kinds: each woken by the dataprotection objects it owns, and
    // polled while it waits for objects it does not own (clusters, repositories).
    let seed_policies = Controller::new(
        Api::<crate::api::seed::BackupPolicy>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<BackupPolicy>::all(client.clone()),
        watcher::Config::default(),
    )
    .with_config(run_config.clone())
    .graceful_shutdown_on(stop(&mut stops))
    .run(
        |o, c| guarded(o, c, seed::backuppolicy::reconcile),
        error_policy,
        ctx.clone(),
    )
    .for_each(|r| async move { log_result("BackupPolicy.kubeblocks.io", r) });
    let seed_schedules = Controller::new(
        Api::<crate::api::seed::BackupSchedule>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<BackupSchedule>::all(client.clone()),
        watcher::Config::default(),
    )
    .with_config(run_config.clone())
    .graceful_shutdown_on(stop(&mut stops))
    .run(
        |o, c| guarded(o, c, seed::backupschedule::reconcile),
        error_policy,
        ctx.clone(),
    )
    .for_each(|r| async move { log_result("BackupSchedule.kubeblocks.io", r) });
    let seed_backups = Controller::new(
        Api::<crate::api::seed::Backup>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<Backup>::all(client.clone()),
        watcher::Config::default(),
    )
    .with_config(run_config.clone())
    .graceful_shutdown_on(stop(&mut stops))
    .run(
        |o, c| guarded(o, c, seed::backup::reconcile),
        error_policy,
        ctx.clone(),
    )
    .for_each(|r| async move { log_result("Backup.kubeblocks.io", r) });
    let seed_restores = Controller::new(
        Api::<crate::api::seed::Restore>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<Restore>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<Job>::all(client.clone()),
        watcher::Config::default().labels(seed::restore::SWAP_LABEL),
    )
    .with_config(run_config.clone())
    .graceful_shutdown_on(stop(&mut stops))
    .run(
        |o, c| guarded(o, c, seed::restore::reconcile),
        error_policy,
        ctx.clone(),
    )
    .for_each(|r| async move { log_result("Restore.kubeblocks.io", r) });

    // The expiry loop: every Backup, every GC_FREQUENCY_SECONDS.
    let expiry = expiry::run_loop(ctx.clone(), stop(&mut stops));

    tracing::info!(finalizer = FINALIZER, namespace = %ns, workers = config.reconcile_workers, "controllers started");
    futures::join!(
        providers,
        repos,
        gcs,
        restores,
        action_sets,
        policies,
        backups,
        schedules,
        seed_policies,
        seed_schedules,
        seed_backups,
        seed_restores,
        expiry
    );
}

fn log_result<K, E1, E2>(
    kind: &str,
    r: Result<
        (ObjectRef<K>, kube::runtime::controller::Action),
        kube::runtime::controller::Error<E1, E2>,
    >,
) where
    K: Resource,
    E1: std::error::Error,
    E2: std::error::Error,
{
    if let Err(e) = r {
        match e {
            // Reconcile errors are logged by the reconcile wrapper.
            kube::runtime::controller::Error::ReconcilerFailed(..) => {}
            // A watch event for an object deleted meanwhile.
            kube::runtime::controller::Error::ObjectNotFound(r) => {
                tracing::debug!(kind, object = %r, "gone before its reconcile")
            }
            other => tracing::warn!(kind, error = %other, "controller"),
        }
    }
}

/// Selects ring as the process's TLS provider. A build that unifies rustls features with
/// a crate enabling aws-lc-rs (the engine's S3 client does) would otherwise leave rustls
/// unable to choose, and the first API client would panic.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is just as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Runs the operator until SIGTERM/SIGINT (Ok) or the loss of leadership (Err).
///
/// # Errors
/// The configuration does not parse, the API server cannot be configured, an address
/// cannot be bound, or leadership was lost.
pub async fn run(options: RunOptions) -> Result<()> {
    install_crypto_provider();
    let config = ControllerConfig::from_env()?;
    let client = Client::try_default()
        .await
        .context("configuring the API client (KUBECONFIG, or the in-cluster service account)")?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let router = http::router(metrics.clone(), health.clone());
    let probe = options.probe_address;
    let probe_listener = tokio::net::TcpListener::bind(probe)
        .await
        .with_context(|| format!("cannot listen on {probe} (--health-probe-bind-address)"))?;
    tracing::info!(address = %probe, "serving /healthz and /readyz");
    tokio::spawn({
        let router = router.clone();
        async move {
            if let Err(e) = axum::serve(probe_listener, router).await {
                tracing::error!(error = %e, "probe server stopped");
            }
        }
    });
    if let Some(address) = options.metrics_address {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address} (--metrics-bind-address)"))?;
        tracing::info!(%address, "serving /metrics");
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "metrics server stopped");
            }
        });
    }

    let (shutdown_tx, mut shutdown_rx) = watch::channel(false);
    tokio::spawn(async move {
        termination().await;
        let _ = shutdown_tx.send(true);
    });

    if !wait_until_ready(&client, &health, &mut shutdown_rx).await {
        return Ok(());
    }
    let identity = identity();
    let leases: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    let lease_options = LeaderOptions::new(&config.namespace, &options.leader_elect_id, &identity);
    let (leading_tx, mut leading_rx) = watch::channel(!options.leader_elect);
    if options.leader_elect {
        tracing::info!(lease = %format!("{}/{}", config.namespace, options.leader_elect_id), %identity, "waiting to lead");
        tokio::spawn(leader::run(
            leases.clone(),
            lease_options.clone(),
            leading_tx,
        ));
        tokio::select! {
            r = leading_rx.wait_for(|l| *l) => {
                if r.is_err() {
                    anyhow::bail!("leader election stopped before this replica led");
                }
            }
            _ = shutdown_rx.changed() => return Ok(()),
        }
    } else {
        drop(leading_tx);
    }

    let ctx = Arc::new(Context::new(
        client.clone(),
        config,
        metrics,
        Some(identity),
    ));
    // What BackupRepos gone while no controller ran left behind (owned by nobody).
    match backuprepo::sweep_left_behind(&ctx.client, &ctx.config.namespace).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(objects = n, "deleted what removed BackupRepos left behind"),
        Err(e) => {
            tracing::warn!(error = %e, "could not look for what removed BackupRepos left behind")
        }
    }
    let (stop_txs, stop_rxs): (Vec<_>, Vec<_>) = (0..13).map(|_| oneshot::channel::<()>()).unzip();
    let controllers = tokio::spawn(run_controllers(ctx, stop_rxs));
    let lost = async {
        if options.leader_elect {
            let _ = leading_rx.wait_for(|l| !*l).await;
        } else {
            futures::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = shutdown_rx.changed() => {}
        _ = lost => {
            anyhow::bail!("lost the leader Lease {}/{}: exiting so that a fresh replica takes over", lease_options.namespace, lease_options.lease_name);
        }
    }
    for tx in stop_txs {
        let _ = tx.send(());
    }
    if tokio::time::timeout(Duration::from_secs(30), controllers)
        .await
        .is_err()
    {
        tracing::warn!("reconciles still running after 30 s; exiting anyway");
    }
    if options.leader_elect {
        if let Err(e) = leader::release(&leases, &lease_options).await {
            tracing::warn!(error = %e, "could not give the Lease up");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_addresses_read_as_go_writes_them() {
        assert_eq!(
            parse_bind_address(":8080").unwrap(),
            Some("0.0.0.0:8080".parse().unwrap())
        );
        assert_eq!(
            parse_bind_address("127.0.0.1:9").unwrap(),
            Some("127.0.0.1:9".parse().unwrap())
        );
        assert_eq!(parse_bind_address("0").unwrap(), None);
        assert!(parse_bind_address("eighty").is_err());
    }

    #[test]
    fn crd_names_are_plural_dot_group() {
        assert_eq!(
            crd_name::<BackupRepo>(),
            "backuprepos.dataprotection.kubeblocks.io"
        );
        assert_eq!(
            crd_name::<GarbageCollection>(),
            "garbagecollections.dprepo.io"
        );
    }

    #[test]
    fn backups_wake_their_repository_when_waiting_or_deleting() {
        let mut b = Backup::new(
            "b",
            serde_json::from_value(
                serde_json::json!({"backupPolicyName": "p", "backupMethod": "m", "deletionPolicy": "Delete"}),
            )
            .unwrap(),
        );
        assert!(repo_of_backup(&b).is_none());
        b.metadata.labels = Some([(label::BACKUP_REPO_NAME.to_string(), "r".to_string())].into());
        assert!(repo_of_backup(&b).is_none());
        b.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(label::WAIT_REPO_PREPARATION.into(), "true".into());
        assert_eq!(repo_of_backup(&b), Some(ObjectRef::new("r")));
    }

    #[test]
    fn backups_wake_the_schedule_that_made_them() {
        let mut b = Backup::new(
            "b",
            serde_json::from_value(serde_json::json!(
                {"backupPolicyName": "p", "backupMethod": "m", "deletionPolicy": "Delete"}
            ))
            .unwrap(),
        );
        b.metadata.namespace = Some("ns".into());
        assert!(schedule_of_backup(&b).is_none());
        b.metadata.labels = Some([(label::BACKUP_SCHEDULE.to_string(), "s".to_string())].into());
        assert_eq!(
            schedule_of_backup(&b),
            Some(ObjectRef::new("s").within("ns"))
        );
    }
}
