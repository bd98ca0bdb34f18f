//! The gc lease `locks/gc`: taking, renewing and releasing it (SPEC.md section 18).

use super::GcOptions;
use crate::error::{Error, Result};
use crate::manifest::Lease;
use crate::repo::Repository;
use crate::storage::{Bytes, PutMode, Version};
use chacha20poly1305::aead::{rand_core::RngCore, OsRng};

pub use crate::layout::LEASE_NAME;

/// The gc lease as this process holds it: the lease and the storage version it was
/// written at, which renewal and release name so that they act only on this very lease
/// (SPEC.md section 18).
#[derive(Debug, Clone)]
pub struct HeldLease {
    /// The lease as written.
    pub lease: Lease,
    /// The version of `locks/gc` holding it.
    pub version: Version,
}

/// Take the gc lease for a gc.
///
/// # Errors
/// [`Error::Busy`] if another gc (or a repair) holds an unexpired lease.
pub async fn acquire_lease(repo: &Repository, options: &GcOptions) -> Result<HeldLease> {
    acquire_lease_for(repo, options, "gc").await
}

/// How many times [`acquire_lease_for`] looks again when the lease changed under it
/// (released, or taken over by someone else) before it answers busy.
const LEASE_ATTEMPTS: usize = 3;

/// Take the gc lease for `command` (`gc`, `repair index` ...): while it is held no gc
/// runs, so nothing gc would delete can be indexed or referenced behind its back.
///
/// A free name is taken with a create; an expired lease (or one whose holder is known
/// dead) with an update naming the version read, so that of two processes taking over
/// the same expired lease exactly one succeeds: the other's update finds a new version
/// and fails, and it then sees the winner's fresh lease.
///
/// # Errors
/// [`Error::Busy`] naming the holder if another process holds an unexpired lease.
pub async fn acquire_lease_for(
    repo: &Repository,
    options: &GcOptions,
    command: &str,
) -> Result<HeldLease> {
    // Checked before the lease is written too, so that a handle of a retired generation
    // normally leaves no lease sealed under its key behind (one that a rotation
    // overtakes between this check and the write is aged out, see `take_lease`).
    crate::repo::newer_generation_check(repo).await?;
    let held = take_lease(repo, options, command).await?;
    // A handle that opened the repository before a key rotation committed must not
    // write under the lease: its index files, packs and tombstones would be sealed
    // under a key `key rotate --finish` retires (SPEC.md section 18.2). Rotations
    // commit under the lease, so checking once it is held is enough.
    if let Err(e) = crate::repo::newer_generation_check(repo).await {
        release_lease(repo, &held).await;
        return Err(e);
    }
    Ok(held)
}

async fn take_lease(repo: &Repository, options: &GcOptions, command: &str) -> Result<HeldLease> {
    let now = (options.clock)();
    let mut token = [0u8; 16];
    OsRng.fill_bytes(&mut token);
    let me = crate::liveness::Holder::current();
    let lease = Lease {
        hostname: me.hostname,
        pid: me.pid,
        pid_namespace: me.pid_namespace,
        boot_id: me.boot_id,
        acquired: now,
        expires: now + options.lease_ttl,
        token: token.iter().map(|b| format!("{b:02x}")).collect(),
        command: command.to_string(),
    };
    let bytes = Bytes::from(lease.encode(repo.keys()));
    let storage = repo.storage();
    let held = |version| HeldLease {
        lease: lease.clone(),
        version,
    };
    for _ in 0..LEASE_ATTEMPTS {
        match storage
            .put_opts(LEASE_NAME, bytes.clone(), PutMode::Create)
            .await
        {
            Ok(version) => return Ok(held(version)),
            Err(Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
        let (existing, version) = match storage.get_versioned(LEASE_NAME).await {
            Ok(got) => (
                Lease::decode(repo.keys(), &got.data, LEASE_NAME),
                got.version,
            ),
            // Released meanwhile: create it again.
            Err(Error::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        match existing {
            Ok(existing) => {
                if existing.expires > now && !existing.holder().is_dead() {
                    return Err(busy(&existing, command));
                }
            }
            // No key of this handle opens it: a holder of a retired key generation
            // (killed between writing it and its generation check), a newer build, or
            // damage. Its `expires` cannot be read, so its age is the storage's
            // modification time: a live holder renews it every third of its time to
            // live, so one not written for a whole time to live is stale (SPEC.md
            // section 18).
            Err(e) => match unreadable_age(repo, LEASE_NAME, now).await? {
                None => continue, // released meanwhile
                Some(age) if age.is_some_and(|a| a > options.lease_ttl) => {}
                Some(age) => {
                    return Err(Error::Busy {
                        object: "the gc lease".into(),
                        reason: format!(
                            "{LEASE_NAME} does not open under this handle's keys ({e}); it may be held by a process of another key generation or a newer build{}; it is taken over once it has not been written for {} minutes: run {command} again then",
                            age.map(|a| format!(", last written {} s ago", a.num_seconds()))
                                .unwrap_or_default(),
                            options.lease_ttl.num_minutes()
                        ),
                    })
                }
            },
        }
        // Expired, or its holder died: replace exactly the lease read.
        match storage
            .put_opts(LEASE_NAME, bytes.clone(), PutMode::Update(version))
            .await
        {
            Ok(version) => return Ok(held(version)),
            // Another taker won, or the holder released it: look again.
            Err(Error::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::Busy {
        object: "the gc lease".into(),
        reason: format!(
            "it changed hands {LEASE_ATTEMPTS} times while {command} tried to take it; run {command} again"
        ),
    })
}

/// How long before `now` an object no held key opens was last written: `None` if it is
/// gone, `Some(None)` if the storage does not say (then it never counts as old).
///
/// # Errors
/// Storage errors.
pub(crate) async fn unreadable_age(
    repo: &Repository,
    name: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<Option<chrono::Duration>>> {
    match repo.storage().modified(name).await {
        Ok(modified) => Ok(Some(
            modified.map(|m| now - chrono::DateTime::<chrono::Utc>::from(m)),
        )),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn busy(existing: &Lease, command: &str) -> Error {
    Error::Busy {
        object: "the gc lease".into(),
        reason: format!(
            "`{}` runs on {} (pid {}) since {}, lease valid until {}; run {command} again when it has ended",
            existing.command, existing.hostname, existing.pid, existing.acquired, existing.expires
        ),
    }
}

/// The gc lease held by a command other than gc itself (repair), renewed in the
/// background until [`LeaseGuard::release`]: such commands have no natural points at
/// which to renew it, and may run longer than the lease's time to live.
#[derive(Debug)]
pub struct LeaseGuard {
    repo: Repository,
    lease: std::sync::Arc<tokio::sync::Mutex<HeldLease>>,
    renewal: tokio::task::JoinHandle<()>,
}

impl LeaseGuard {
    /// Take the lease for `command` and start renewing it every third of
    /// `options.lease_ttl`.
    ///
    /// # Errors
    /// As [`acquire_lease_for`].
    pub async fn acquire(
        repo: &Repository,
        options: &GcOptions,
        command: &str,
    ) -> Result<LeaseGuard> {
        let lease = acquire_lease_for(repo, options, command).await?;
        let every = (options.lease_ttl / 3)
            .to_std()
            .unwrap_or(std::time::Duration::from_secs(60))
            .max(std::time::Duration::from_secs(1));
        let (renewing, options) = (repo.clone(), options.clone());
        let lease = std::sync::Arc::new(tokio::sync::Mutex::new(lease));
        let renewed = lease.clone();
        let renewal = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                // Taken over (this process stalled past the ttl): stop renewing; the
                // release below then leaves the other holder's lease alone.
                if renew_lease(&renewing, &mut *renewed.lock().await, &options)
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(LeaseGuard {
            repo: repo.clone(),
            lease,
            renewal,
        })
    }

    /// Stop renewing and release the lease if it is still ours.
    pub async fn release(self) {
        self.renewal.abort();
        let _ = self.renewal.await;
        release_lease(&self.repo, &*self.lease.lock().await).await;
    }
}

/// Extend the lease, replacing exactly the version this process wrote last.
///
/// # Errors
/// [`Error::Busy`] if the lease was taken over (or removed) meanwhile; storage errors.
pub async fn renew_lease(
    repo: &Repository,
    held: &mut HeldLease,
    options: &GcOptions,
) -> Result<()> {
    let mut lease = held.lease.clone();
    lease.expires = (options.clock)() + options.lease_ttl;
    let written = repo
        .storage()
        .put_opts(
            LEASE_NAME,
            Bytes::from(lease.encode(repo.keys())),
            PutMode::Update(held.version.clone()),
        )
        .await;
    match written {
        Ok(version) => {
            *held = HeldLease { lease, version };
            Ok(())
        }
        Err(Error::Conflict { .. }) => {
            let by = match repo.storage().get(LEASE_NAME).await {
                Ok(bytes) => match Lease::decode(repo.keys(), &bytes, LEASE_NAME) {
                    Ok(current) => format!(
                        "taken over by `{}` on {} (pid {})",
                        current.command, current.hostname, current.pid
                    ),
                    Err(_) => "replaced by an unreadable lease".into(),
                },
                Err(_) => "removed".into(),
            };
            Err(Error::Busy {
                object: "the gc lease".into(),
                reason: format!("{by}; this {} stops", held.lease.command),
            })
        }
        Err(e) => Err(e),
    }
}

/// Release the lease if it is still the version this process wrote. (S3 has no
/// conditional delete: a holder that stalls past its expiry between the check and the
/// delete could remove a successor's lease, the window SPEC.md section 18 accepts.)
pub async fn release_lease(repo: &Repository, held: &HeldLease) {
    if let Ok(meta) = repo.storage().head(LEASE_NAME).await {
        if meta.version == held.version {
            let _ = repo.storage().delete(LEASE_NAME).await;
        }
    }
}
