//! Label, annotation and finalizer names of KubeBlocks' dataprotection contract
//! (CONTROLLER.md section 1), and dprepo's own. Reconcilers and builders use these names
//! only through these constants.

/// The prefix of KubeBlocks' dataprotection labels and annotations.
pub const PREFIX: &str = "dataprotection.kubeblocks.io/";

/// The one finalizer of every kind.
pub const FINALIZER: &str = "dataprotection.kubeblocks.io/finalizer";

/// Labels.
pub mod label {
    /// On a Backup or Restore: the BackupRepo to use (user override on a Backup).
    pub const BACKUP_REPO_NAME: &str = "dataprotection.kubeblocks.io/backup-repo-name";
    /// On a Backup or Restore: waiting for the repository's PVC or tool Secret in its
    /// namespace.
    pub const WAIT_REPO_PREPARATION: &str = "dataprotection.kubeblocks.io/wait-repo-preparation";
    /// On a Secret: a per-namespace `datasafed.conf` made by a BackupRepo.
    pub const IS_TOOL_CONFIG: &str = "dataprotection.kubeblocks.io/is-tool-config";
    /// On a Backup: its ActionSet's backup type.
    pub const BACKUP_TYPE: &str = "dataprotection.kubeblocks.io/backup-type";
    /// On a Backup: its BackupPolicy.
    pub const BACKUP_POLICY: &str = "dataprotection.kubeblocks.io/backup-policy";
    /// On a Backup or CronJob: the BackupSchedule that made it.
    pub const BACKUP_SCHEDULE: &str = "dataprotection.kubeblocks.io/backup-schedule";
    /// On a CronJob: the backup method it runs.
    pub const BACKUP_METHOD: &str = "dataprotection.kubeblocks.io/backup-method";
    /// On a Backup: made by a schedule (`"true"`).
    pub const AUTO_BACKUP: &str = "dataprotection.kubeblocks.io/autobackup";
    /// On a Backup: the uid of the cluster backed up.
    pub const CLUSTER_UID: &str = "dataprotection.kubeblocks.io/cluster-uid";
    /// On workloads: the Backup they belong to.
    pub const BACKUP_NAME: &str = "dataprotection.kubeblocks.io/backup-name";
    /// On workloads: the namespace of the Backup they belong to.
    pub const BACKUP_NAMESPACE: &str = "dataprotection.kubeblocks.io/backup-namespace";
    /// On workloads: the pod they back up.
    pub const TARGET_POD_NAME: &str = "dataprotection.kubeblocks.io/target-pod-name";
    /// On workloads: the Restore they belong to.
    pub const RESTORE: &str = "dataprotection.kubeblocks.io/restore";
    /// On workloads: the namespace of the Restore they belong to.
    pub const RESTORE_NAMESPACE: &str = "dataprotection.kubeblocks.io/restore-namespace";
    /// On every workload the controller makes.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// The value of [`MANAGED_BY`].
    pub const MANAGED_BY_VALUE: &str = "kubeblocks-dataprotection";
    /// dprepo: on the objects of a BackupRepo that must outlive a cascading deletion of
    /// it (its access Secret, the access-key revocation Job and its Secret), which carry
    /// no owner reference: the uid of that BackupRepo. The controller deletes them itself.
    pub const DPREPO_BACKUP_REPO_UID: &str = "dprepo.io/backup-repo-uid";
}

/// Annotations.
pub mod annotation {
    /// On a BackupRepo: `"true"` marks the default repository.
    pub const IS_DEFAULT_REPO: &str = "dataprotection.kubeblocks.io/is-default-repo";
    /// On a BackupRepo: digest of its parameters and its provider's templates.
    pub const BACKUP_REPO_DIGEST: &str = "dataprotection.kubeblocks.io/backup-repo-digest";
    /// On a BackupRepo: the tool-config Secrets must be rendered again.
    pub const NEED_UPDATE_TOOL_CONFIG: &str =
        "dataprotection.kubeblocks.io/need-update-tool-config";
    /// On a BackupPolicy: the default policy of its cluster.
    pub const IS_DEFAULT_POLICY: &str = "dataprotection.kubeblocks.io/is-default-policy";
    /// On any object: leave it alone.
    pub const SKIP_RECONCILIATION: &str = "dataprotection.kubeblocks.io/skip-reconciliation";
    /// On a restore pod: its manager sidecar may stop.
    pub const STOP_RESTORE_MANAGER: &str = "dataprotection.kubeblocks.io/stop-restore-manager";
    /// On a Backup: extras reported by the backup script.
    pub const BACKUP_EXTRAS: &str = "dataprotection.kubeblocks.io/backup-extras";
    /// On a BackupRepo (dprepo): `namespace/name` of the Secret holding the repository key.
    pub const DPREPO_KEY_SECRET: &str = "dprepo.io/key-secret";
    /// dprepo extension (CONTROLLER.md section 5): keep at most this many Completed
    /// autobackups; GC deletes the oldest beyond it.
    pub const DPREPO_KEEP_LAST: &str = "dprepo.io/keep-last";
}
