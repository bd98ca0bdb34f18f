//! The custom resource types: KubeBlocks' `dataprotection.kubeblocks.io/v1alpha1` kinds,
//! field for field, and dprepo's `dprepo.io/v1alpha1` GarbageCollection.
//!
//! Module map: one file per kind ([`storageprovider`], [`backuprepo`], [`actionset`],
//! [`backuppolicy`], [`backupschedule`], [`backup`], [`restore`], [`garbagecollection`]);
//! shared pieces in [`common`]; Go's duration text in [`duration`]; KubeBlocks' retention
//! periods in [`retention`]; label, annotation and finalizer names in [`labels`]. The CRDs
//! generated from these types are assembled in [`crate::crd`].
//!
//! Guarantees, checked by the fixture tests: every field of KubeBlocks' types is here under
//! its JSON name, so an object read and written back loses nothing; and every object the
//! API server accepts under the generated CRDs decodes (fields whose text KubeBlocks
//! interprets, such as durations and retention periods, are kept as text and parsed on use).

pub mod actionset;
pub mod backup;
pub mod backuppolicy;
pub mod backuprepo;
pub mod backupschedule;
pub mod common;
pub mod duration;
pub mod garbagecollection;
pub mod labels;
pub mod restore;
pub mod retention;
pub mod storageprovider;

pub use actionset::ActionSet;
pub use backup::Backup;
pub use backuppolicy::BackupPolicy;
pub use backuprepo::BackupRepo;
pub use backupschedule::BackupSchedule;
pub use garbagecollection::GarbageCollection;
pub use restore::Restore;
pub use storageprovider::StorageProvider;

/// The API group of KubeBlocks' dataprotection kinds.
pub const GROUP: &str = "dataprotection.kubeblocks.io";

/// The only version of every kind.
pub const VERSION: &str = "v1alpha1";
