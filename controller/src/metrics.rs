//! Prometheus metrics of the controller, served as text on `/metrics`
//! (see [`crate::http`]).
//!
//! Names follow Prometheus conventions (`_total` counters, `_seconds` and `_bytes`
//! units). Labels stay bounded: kinds, phases, results and repository names; never a
//! Backup name.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

/// Labels naming a reconciled kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// The custom resource kind (`BackupRepo`, `Backup`, ...).
    pub kind: String,
}

/// Labels of a repository's phase gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RepositoryPhaseLabels {
    /// The BackupRepo's name.
    pub repository: String,
    /// A phase; the gauge is 1 for the current one and 0 for the others.
    pub phase: String,
}

/// Labels naming a repository.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RepositoryLabels {
    /// The BackupRepo's name.
    pub repository: String,
}

/// Labels of a Backup's phase change.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// The phase reached.
    pub phase: String,
}

/// Labels of a Backup deleted by the expiry loop.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExpiryLabels {
    /// Why: `expired` (its expiration passed) or `keep-last` (beyond its schedule's
    /// `dprepo.io/keep-last`).
    pub rule: String,
}

/// Every metric the controller exports.
pub struct Metrics {
    registry: Registry,
    reconcile_total: Family<KindLabels, Counter>,
    reconcile_errors_total: Family<KindLabels, Counter>,
    reconcile_duration: Family<KindLabels, Histogram>,
    repository_phase: Family<RepositoryPhaseLabels, Gauge>,
    backup_phase_total: Family<PhaseLabels, Counter>,
    backup_duration: Histogram,
    backup_size: Histogram,
    gc_runs_total: Family<RepositoryLabels, Counter>,
    gc_failures_total: Family<RepositoryLabels, Counter>,
    gc_bytes_freed_total: Family<RepositoryLabels, Counter>,
    gc_last_success: Family<RepositoryLabels, Gauge<f64, AtomicU64>>,
    expiry_sweeps_total: Counter,
    expiry_deleted_total: Family<ExpiryLabels, Counter>,
    expiry_failures_total: Counter,
}

/// The BackupRepo phases, for resetting the gauges of the phases a repository left.
pub const REPOSITORY_PHASES: [&str; 4] = ["PreChecking", "Failed", "Ready", "Deleting"];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric in a new registry.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let reconcile_total = Family::<KindLabels, Counter>::default();
        registry.register(
            "dprepo_controller_reconcile",
            "Reconciles run, by kind",
            reconcile_total.clone(),
        );
        let reconcile_errors_total = Family::<KindLabels, Counter>::default();
        registry.register(
            "dprepo_controller_reconcile_errors",
            "Reconciles that ended in an error, by kind",
            reconcile_errors_total.clone(),
        );
        let reconcile_duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register(
            "dprepo_controller_reconcile_duration_seconds",
            "Time spent in one reconcile, by kind",
            reconcile_duration.clone(),
        );
        let repository_phase = Family::<RepositoryPhaseLabels, Gauge>::default();
        registry.register(
            "dprepo_repository_phase",
            "1 for the current phase of each BackupRepo, 0 for the others",
            repository_phase.clone(),
        );
        let backup_phase_total = Family::<PhaseLabels, Counter>::default();
        registry.register(
            "dprepo_backup_phase",
            "Backups that reached a phase",
            backup_phase_total.clone(),
        );
        let backup_duration = Histogram::new(exponential_buckets(1.0, 2.0, 16));
        registry.register(
            "dprepo_backup_duration_seconds",
            "Duration of completed Backups",
            backup_duration.clone(),
        );
        let backup_size = Histogram::new(exponential_buckets(1024.0 * 1024.0, 4.0, 12));
        registry.register(
            "dprepo_backup_size_bytes",
            "Total size of completed Backups as their scripts report it",
            backup_size.clone(),
        );
        let gc_runs_total = Family::<RepositoryLabels, Counter>::default();
        registry.register(
            "dprepo_repo_gc_runs",
            "Repository garbage collections finished",
            gc_runs_total.clone(),
        );
        let gc_failures_total = Family::<RepositoryLabels, Counter>::default();
        registry.register(
            "dprepo_repo_gc_failures",
            "Repository garbage collections that failed",
            gc_failures_total.clone(),
        );
        let gc_bytes_freed_total = Family::<RepositoryLabels, Counter>::default();
        registry.register(
            "dprepo_repo_gc_freed_bytes",
            "Bytes of packs deleted by repository garbage collection",
            gc_bytes_freed_total.clone(),
        );
        let gc_last_success = Family::<RepositoryLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "dprepo_repo_gc_last_success_timestamp_seconds",
            "Unix time of the last successful repository garbage collection",
            gc_last_success.clone(),
        );
        let expiry_sweeps_total = Counter::default();
        registry.register(
            "dprepo_backup_expiry_sweeps",
            "Passes of the expiry loop over every Backup (every GC_FREQUENCY_SECONDS)",
            expiry_sweeps_total.clone(),
        );
        let expiry_deleted_total = Family::<ExpiryLabels, Counter>::default();
        registry.register(
            "dprepo_backup_expiry_deleted",
            "Backups the expiry loop deleted, by rule",
            expiry_deleted_total.clone(),
        );
        let expiry_failures_total = Counter::default();
        registry.register(
            "dprepo_backup_expiry_failures",
            "Deletions or passes of the expiry loop that failed",
            expiry_failures_total.clone(),
        );
        Self {
            registry,
            expiry_sweeps_total,
            expiry_deleted_total,
            expiry_failures_total,
            reconcile_total,
            reconcile_errors_total,
            reconcile_duration,
            repository_phase,
            backup_phase_total,
            backup_duration,
            backup_size,
            gc_runs_total,
            gc_failures_total,
            gc_bytes_freed_total,
            gc_last_success,
        }
    }

    /// Records one reconcile of `kind` that took `elapsed` and failed or not.
    pub fn reconciled(&self, kind: &str, elapsed: Duration, failed: bool) {
        let labels = KindLabels {
            kind: kind.to_string(),
        };
        self.reconcile_total.get_or_create(&labels).inc();
        if failed {
            self.reconcile_errors_total.get_or_create(&labels).inc();
        }
        self.reconcile_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Sets the phase gauges of `repository`: 1 for `phase`, 0 for the others.
    pub fn repository_phase(&self, repository: &str, phase: &str) {
        for candidate in REPOSITORY_PHASES {
            self.repository_phase
                .get_or_create(&RepositoryPhaseLabels {
                    repository: repository.to_string(),
                    phase: candidate.to_string(),
                })
                .set(i64::from(candidate == phase));
        }
    }

    /// Forgets the gauges of a deleted repository.
    pub fn repository_removed(&self, repository: &str) {
        for candidate in REPOSITORY_PHASES {
            self.repository_phase.remove(&RepositoryPhaseLabels {
                repository: repository.to_string(),
                phase: candidate.to_string(),
            });
        }
    }

    /// Records a Backup reaching `phase`; a completed one also its duration and size.
    pub fn backup_phase(&self, phase: &str, duration: Option<Duration>, size: Option<u64>) {
        self.backup_phase_total
            .get_or_create(&PhaseLabels {
                phase: phase.to_string(),
            })
            .inc();
        if let Some(duration) = duration {
            self.backup_duration.observe(duration.as_secs_f64());
        }
        if let Some(size) = size {
            self.backup_size.observe(size as f64);
        }
    }

    /// Records a finished garbage collection of `repository`.
    pub fn gc_finished(&self, repository: &str, succeeded: bool, bytes_freed: u64, at_unix: f64) {
        let labels = RepositoryLabels {
            repository: repository.to_string(),
        };
        self.gc_runs_total.get_or_create(&labels).inc();
        if succeeded {
            self.gc_bytes_freed_total
                .get_or_create(&labels)
                .inc_by(bytes_freed);
            self.gc_last_success.get_or_create(&labels).set(at_unix);
        } else {
            self.gc_failures_total.get_or_create(&labels).inc();
        }
    }

    /// Records one pass of the expiry loop.
    pub fn expiry_sweep(&self, failed: bool) {
        self.expiry_sweeps_total.inc();
        if failed {
            self.expiry_failures_total.inc();
        }
    }

    /// Records a Backup deleted by the expiry loop under `rule`, or a failed deletion.
    pub fn expiry_deleted(&self, rule: &str, failed: bool) {
        if failed {
            self.expiry_failures_total.inc();
        } else {
            self.expiry_deleted_total
                .get_or_create(&ExpiryLabels {
                    rule: rule.to_string(),
                })
                .inc();
        }
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The metrics shared by the reconcilers and the HTTP server.
pub type SharedMetrics = Arc<Metrics>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_and_phases_appear_in_the_text_format() {
        let metrics = Metrics::new();
        metrics.reconciled("BackupRepo", Duration::from_millis(5), false);
        metrics.reconciled("BackupRepo", Duration::from_millis(5), true);
        metrics.repository_phase("s3-repo", "Ready");
        metrics.gc_finished("s3-repo", true, 4096, 1_700_000_000.0);
        let text = metrics.encode();
        assert!(
            text.contains("dprepo_controller_reconcile_total{kind=\"BackupRepo\"} 2"),
            "{text}"
        );
        assert!(text.contains("dprepo_controller_reconcile_errors_total{kind=\"BackupRepo\"} 1"));
        assert!(text
            .contains("dprepo_controller_reconcile_duration_seconds_count{kind=\"BackupRepo\"} 2"));
        assert!(text.contains("dprepo_repository_phase{repository=\"s3-repo\",phase=\"Ready\"} 1"));
        assert!(text.contains("dprepo_repository_phase{repository=\"s3-repo\",phase=\"Failed\"} 0"));
        assert!(text.contains("dprepo_repo_gc_freed_bytes_total{repository=\"s3-repo\"} 4096"));
        assert!(text.contains(
            "dprepo_repo_gc_last_success_timestamp_seconds{repository=\"s3-repo\"} 1700000000"
        ));
        metrics.repository_removed("s3-repo");
        assert!(!metrics.encode().contains("phase=\"Ready\""));
    }
}
