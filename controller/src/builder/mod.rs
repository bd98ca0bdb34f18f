//! Pure builders: names, labels, and the Jobs, Secrets, PVCs and StorageClasses the
//! reconcilers create. Nothing here talks to the API server; every function is a map from
//! inputs to an object, tested against golden JSON.
//!
//! Module map: [`names`] (derived names and their length cuts), [`datasafed`] (the
//! injection every pod that touches a repository gets), [`precheck`] (the BackupRepo
//! pre-check Job), [`gc_job`] (the repository garbage collection Job), [`repo_objects`]
//! (per-namespace tool Secrets, PVCs, the StorageClass and CSI Secret, the key Secret),
//! [`key`] (where a repository's key comes from), [`schedule`] (a BackupSchedule's
//! CronJobs and the names of what it creates).

pub mod access;
pub mod backup_job;
pub mod datasafed;
pub mod exec;
pub mod gc_job;
pub mod key;
pub mod names;
pub mod precheck;
pub mod repo_objects;
pub mod restore;
pub mod restore_time;
pub mod schedule;
pub mod seed;

use std::collections::BTreeMap;

/// A label map from pairs.
pub(crate) fn string_map<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> BTreeMap<String, String> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Quotes `s` for `sh` (single quotes; an embedded `'` becomes `'\''`).
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The owner reference controller-runtime's `SetControllerReference` writes: controller,
/// blocking the owner's foreground deletion. `None` for an object without a uid.
pub fn controller_ref<K: kube::Resource<DynamicType = ()>>(
    owner: &K,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    owner.controller_owner_ref(&()).map(|mut r| {
        r.block_owner_deletion = Some(true);
        r
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(shell_quote("/a/b.txt"), "'/a/b.txt'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
