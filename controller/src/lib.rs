//! `dprepo-controller`: a Kubernetes operator serving KubeBlocks' dataprotection API
//! (`dataprotection.kubeblocks.io/v1alpha1`) on dprepo repositories.
//!
//! The contract it keeps is KubeBlocks' own: the custom resources, the Job environment
//! and paths, labels and the `backup.info` hand-off, so KubeBlocks addon ActionSets run
//! unchanged with dprepo's `datasafed` injected into their pods.
//!
//! The controller never opens a repository itself and does not link the engine: everything
//! that reads or writes repository data runs the real `dprepo`/`datasafed` binaries in Jobs
//! it creates (the BackupRepo pre-check, `dprepo gc`, backup, restore and deleter Jobs),
//! or in the `backup-manager` sidecar (`dprepo stats --json` for the dedup figures). The
//! repository key reaches those pods from a Secret the controller owns.
//!
//! Module map: [`api`] holds the custom resource types; [`crd`] generates the
//! CustomResourceDefinitions from them; [`validate`] checks manifests against them.
#![warn(missing_docs)]

pub mod api;
pub mod builder;
pub mod config;
pub mod context;
pub mod crd;
pub mod create_backup;
pub mod error;
pub mod exec;
pub mod http;
pub mod leader;
pub mod manager;
pub mod metrics;
pub mod reconcile;
pub mod run;
pub mod template;
pub mod validate;
