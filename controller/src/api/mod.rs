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
pub mod seed;
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

/// A document of one of the served kinds, decoded into its type.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)] // one variant per kind, named after it
pub enum Object {
    StorageProvider(Box<StorageProvider>),
    BackupRepo(Box<BackupRepo>),
    ActionSet(Box<ActionSet>),
    BackupPolicy(Box<BackupPolicy>),
    BackupSchedule(Box<BackupSchedule>),
    Backup(Box<Backup>),
    Restore(Box<Restore>),
    GarbageCollection(Box<GarbageCollection>),
    SeedBackupPolicy(Box<seed::BackupPolicy>),
    SeedBackupSchedule(Box<seed::BackupSchedule>),
    SeedBackup(Box<seed::Backup>),
    SeedRestore(Box<seed::Restore>),
}

/// Why a document did not decode into its type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// `apiVersion` and `kind` name no kind served here.
    #[error("{api_version:?} {kind:?} is not a kind dprepo-controller serves")]
    UnknownKind {
        /// The document's `apiVersion`.
        api_version: String,
        /// The document's `kind`.
        kind: String,
    },
    /// A field has a value its type cannot hold.
    #[error("{path}: {message}")]
    Invalid {
        /// JSON path of the field (`.spec.schedules[0].enabled`), `.` for the document.
        path: String,
        /// What is wrong.
        message: String,
    },
}

fn decode<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, DecodeError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        DecodeError::Invalid {
            // serde_path_to_error writes `spec.schedules[0].enabled`, or `.` for the root.
            path: if path == "." {
                path
            } else {
                format!(".{path}")
            },
            message: e.into_inner().to_string(),
        }
    })
}

impl Object {
    /// Decodes a document by its `apiVersion` and `kind`.
    ///
    /// # Errors
    /// [`DecodeError::UnknownKind`] for any other kind; [`DecodeError::Invalid`] naming the
    /// first field whose value the type cannot hold.
    pub fn from_value(value: serde_json::Value) -> Result<Self, DecodeError> {
        let api_version = value
            .get("apiVersion")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_string();
        let kind = value
            .get("kind")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_string();
        let dp = format!("{GROUP}/{VERSION}");
        let gc = format!("{}/{VERSION}", garbagecollection::GROUP);
        Ok(match (api_version.as_str(), kind.as_str()) {
            (v, "StorageProvider") if v == dp => Object::StorageProvider(decode(value)?),
            (v, "BackupRepo") if v == dp => Object::BackupRepo(decode(value)?),
            (v, "ActionSet") if v == dp => Object::ActionSet(decode(value)?),
            (v, "BackupPolicy") if v == dp => Object::BackupPolicy(decode(value)?),
            (v, "BackupSchedule") if v == dp => Object::BackupSchedule(decode(value)?),
            (v, "Backup") if v == dp => Object::Backup(decode(value)?),
            (v, "Restore") if v == dp => Object::Restore(decode(value)?),
            (v, "GarbageCollection") if v == gc => Object::GarbageCollection(decode(value)?),
            (seed::API_VERSION, "BackupPolicy") => Object::SeedBackupPolicy(decode(value)?),
            (seed::API_VERSION, "BackupSchedule") => Object::SeedBackupSchedule(decode(value)?),
            (seed::API_VERSION, "Backup") => Object::SeedBackup(decode(value)?),
            (seed::API_VERSION, "Restore") => Object::SeedRestore(decode(value)?),
            _ => return Err(DecodeError::UnknownKind { api_version, kind }),
        })
    }

    /// The document again, as the controller would write it.
    ///
    /// # Errors
    /// Only if a value cannot be written as JSON (none of the types' values is known to).
    pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        match self {
            Object::StorageProvider(o) => serde_json::to_value(o),
            Object::BackupRepo(o) => serde_json::to_value(o),
            Object::ActionSet(o) => serde_json::to_value(o),
            Object::BackupPolicy(o) => serde_json::to_value(o),
            Object::BackupSchedule(o) => serde_json::to_value(o),
            Object::Backup(o) => serde_json::to_value(o),
            Object::Restore(o) => serde_json::to_value(o),
            Object::GarbageCollection(o) => serde_json::to_value(o),
            Object::SeedBackupPolicy(o) => serde_json::to_value(o),
            Object::SeedBackupSchedule(o) => serde_json::to_value(o),
            Object::SeedBackup(o) => serde_json::to_value(o),
            Object::SeedRestore(o) => serde_json::to_value(o),
        }
    }
}

impl Object {
    /// The kind's name.
    pub fn kind(&self) -> &'static str {
        match self {
            Object::StorageProvider(_) => "StorageProvider",
            Object::BackupRepo(_) => "BackupRepo",
            Object::ActionSet(_) => "ActionSet",
            Object::BackupPolicy(_) => "BackupPolicy",
            Object::BackupSchedule(_) => "BackupSchedule",
            Object::Backup(_) => "Backup",
            Object::Restore(_) => "Restore",
            Object::GarbageCollection(_) => "GarbageCollection",
            Object::SeedBackupPolicy(_) => "BackupPolicy",
            Object::SeedBackupSchedule(_) => "BackupSchedule",
            Object::SeedBackup(_) => "Backup",
            Object::SeedRestore(_) => "Restore",
        }
    }

    /// Texts the schema takes as plain strings but KubeBlocks (and this controller)
    /// interpret, which do not read: Go durations, retention periods, a restore time that
    /// is no real instant. KubeBlocks cannot decode an object with a bad duration at all.
    /// Returns (field path, problem) pairs, paths as the API server writes them.
    pub fn interpretation_problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut duration = |path: String, d: Option<&duration::MetaDuration>| {
            if let Some(d) = d {
                if let Err(e) = d.parse() {
                    out.push((
                        path,
                        format!("not a Go duration (e.g. \"90s\", \"1h30m\"): {e}"),
                    ));
                }
            }
        };
        match self {
            Object::ActionSet(a) => {
                if let Some(b) = &a.spec.backup {
                    for (name, steps) in
                        [("preBackup", &b.pre_backup), ("postBackup", &b.post_backup)]
                    {
                        for (i, s) in steps.iter().flatten().enumerate() {
                            let t = s.exec.as_ref().and_then(|e| e.timeout.as_ref());
                            duration(format!("spec.backup.{name}[{i}].exec.timeout"), t);
                        }
                    }
                }
                if let Some(r) = &a.spec.restore {
                    for (i, s) in r.post_ready.iter().flatten().enumerate() {
                        let t = s.exec.as_ref().and_then(|e| e.timeout.as_ref());
                        duration(format!("spec.restore.postReady[{i}].exec.timeout"), t);
                    }
                }
            }
            Object::Backup(b) => {
                duration(
                    "status.duration".into(),
                    b.status.as_ref().and_then(|s| s.duration.as_ref()),
                );
                if let Some(Err(e)) = b.spec.retention_period.as_ref().map(|r| r.minutes()) {
                    out.push(("spec.retentionPeriod".into(), e.to_string()));
                }
            }
            Object::BackupSchedule(s) => {
                for (i, p) in s.spec.schedules.iter().enumerate() {
                    if let Some(Err(e)) = p.retention_period.as_ref().map(|r| r.minutes()) {
                        out.push((
                            format!("spec.schedules[{i}].retentionPeriod"),
                            e.to_string(),
                        ));
                    }
                }
            }
            Object::Restore(r) => {
                duration(
                    "status.duration".into(),
                    r.status.as_ref().and_then(|s| s.duration.as_ref()),
                );
                if let Some(t) = &r.spec.restore_time {
                    if chrono::DateTime::parse_from_rfc3339(t).is_err() {
                        out.push((
                            "spec.restoreTime".into(),
                            format!("{t:?} is not a valid UTC time (YYYY-MM-DDTHH:MM:SSZ)"),
                        ));
                    }
                }
            }
            Object::SeedRestore(r) => {
                if let Some(p) = &r.spec.pitr {
                    if chrono::DateTime::parse_from_rfc3339(&p.target_time).is_err() {
                        out.push((
                            "spec.pitr.targetTime".into(),
                            format!(
                                "{:?} is not a valid UTC time (YYYY-MM-DDTHH:MM:SSZ)",
                                p.target_time
                            ),
                        ));
                    }
                }
            }
            Object::SeedBackupPolicy(p) => {
                let provider = p.spec.storage.provider.as_deref();
                if let Err(e) = crate::builder::seed::provider_of(provider) {
                    out.push(("spec.storage.provider".into(), e));
                }
            }
            Object::SeedBackup(b) => {
                if let Some(over) = &b.spec.storage {
                    if over.provider.is_some() {
                        if let Err(e) = crate::builder::seed::provider_of(over.provider.as_deref())
                        {
                            out.push(("spec.storage.provider".into(), e));
                        }
                    }
                }
            }
            _ => {}
        }
        out
    }
}
