//! One active replica: leader election on a `coordination.k8s.io/v1` Lease.
//!
//! The protocol is client-go's (and controller-runtime's): the holder renews
//! `spec.renewTime` every [`LeaderOptions::retry_period`]; a candidate takes the Lease
//! over only when `renewTime + leaseDurationSeconds` has passed. Every write is a
//! replace guarded by the Lease's `resourceVersion`, so of two candidates writing at
//! once the API server accepts one and answers the other 409 Conflict: at most one
//! replica believes it leads. A leader that cannot renew within
//! [`LeaderOptions::renew_deadline`] stops leading; the binary then exits, as
//! controller-runtime does, so the replica restarts with fresh state instead of
//! reconciling beside a new leader.
//!
//! [`decide`] is the pure part (what to do given the Lease and the time); [`run`] is the
//! loop around it.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use std::time::Duration;
use tokio::sync::watch;

/// Timings and names of the election.
#[derive(Debug, Clone)]
pub struct LeaderOptions {
    /// The Lease's namespace (the controller's, `CM_NAMESPACE`).
    pub namespace: String,
    /// The Lease's name (`--leader-elect-id`).
    pub lease_name: String,
    /// This replica's identity (the pod name plus a random suffix).
    pub identity: String,
    /// How long a Lease stays valid after its last renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up leading.
    pub renew_deadline: Duration,
    /// How often candidates retry and the leader renews.
    pub retry_period: Duration,
}

impl LeaderOptions {
    /// controller-runtime's timings (15 s lease, 10 s renew deadline, 2 s retry).
    pub fn new(namespace: &str, lease_name: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            lease_name: lease_name.to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What a replica does next with the Lease it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No Lease exists: create one naming us.
    Create,
    /// We hold it: renew.
    Renew,
    /// Its holder let it expire (or released it): take it over.
    TakeOver,
    /// Someone else holds a valid Lease until the given time.
    Wait {
        /// The current holder.
        holder: String,
    },
}

/// Decides what `identity` does with `lease` at `now`.
pub fn decide(lease: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = lease else {
        return Decision::Create;
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == identity {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::TakeOver;
    }
    let last = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    match last {
        Some(last)
            if last
                .checked_add(duration)
                .map(|end| end > now)
                .unwrap_or(false) =>
        {
            Decision::Wait { holder }
        }
        _ => Decision::TakeOver,
    }
}

fn lease_spec(previous: Option<&LeaseSpec>, options: &LeaderOptions, now: Timestamp) -> LeaseSpec {
    let ours = previous.and_then(|p| p.holder_identity.as_deref()) == Some(&options.identity);
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(options.identity.clone()),
        lease_duration_seconds: Some(options.lease_duration.as_secs().min(i32::MAX as u64) as i32),
        acquire_time: if ours {
            previous.and_then(|p| p.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if ours || previous.is_none() {
            transitions
        } else {
            transitions.saturating_add(1)
        }),
        ..Default::default()
    }
}

/// One round of the election: reads the Lease and writes it if [`decide`] says so.
/// Returns whether this replica holds the Lease afterwards.
///
/// # Errors
/// An API error other than the 409 Conflict or 404 that losing a race gives.
pub async fn try_acquire_or_renew(api: &Api<Lease>, options: &LeaderOptions) -> kube::Result<bool> {
    let now = Timestamp::now();
    let current = api.get_opt(&options.lease_name).await?;
    let spec = current.as_ref().and_then(|l| l.spec.as_ref());
    let result = match decide(spec, &options.identity, now) {
        Decision::Wait { .. } => return Ok(false),
        Decision::Create => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(options.lease_name.clone()),
                    namespace: Some(options.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(lease_spec(None, options, now)),
            };
            api.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        Decision::Renew | Decision::TakeOver => {
            let mut lease = current.clone().unwrap_or_default();
            lease.spec = Some(lease_spec(spec, options, now));
            // `replace` carries the resourceVersion we read: a concurrent writer
            // makes this a 409.
            api.replace(&options.lease_name, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
    };
    match result {
        Ok(()) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives the Lease up if this replica holds it (on a clean shutdown), so the next replica
/// takes over at once instead of waiting for it to expire.
///
/// # Errors
/// An API error other than losing a race (409) or a missing Lease (404).
pub async fn release(api: &Api<Lease>, options: &LeaderOptions) -> kube::Result<()> {
    let Some(mut lease) = api.get_opt(&options.lease_name).await? else {
        return Ok(());
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    if spec.holder_identity.as_deref() != Some(options.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = Some(String::new());
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(MicroTime(Timestamp::now()));
    match api
        .replace(&options.lease_name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Runs the election until leadership, once held, is lost. `leading` turns `true` when
/// this replica becomes the leader. Returns when the leader could not renew within the
/// renew deadline (the caller then exits).
pub async fn run(api: Api<Lease>, options: LeaderOptions, leading: watch::Sender<bool>) {
    let mut last_renewal: Option<tokio::time::Instant> = None;
    loop {
        match try_acquire_or_renew(&api, &options).await {
            Ok(true) => {
                if last_renewal.is_none() {
                    tracing::info!(lease = %options.lease_name, identity = %options.identity, "became the leader");
                    let _ = leading.send(true);
                }
                last_renewal = Some(tokio::time::Instant::now());
            }
            Ok(false) => {
                if last_renewal.is_some() {
                    tracing::error!(lease = %options.lease_name, "another replica took the lease over");
                    let _ = leading.send(false);
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(lease = %options.lease_name, error = %e, "leader election: could not read or write the lease")
            }
        }
        if let Some(at) = last_renewal {
            if at.elapsed() > options.renew_deadline {
                tracing::error!(lease = %options.lease_name, "could not renew the lease in time; stopping");
                let _ = leading.send(false);
                return;
            }
        }
        tokio::time::sleep(options.retry_period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    fn held_by(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(at(renewed))),
            acquire_time: Some(MicroTime(at(0))),
            lease_transitions: Some(3),
            ..Default::default()
        }
    }

    #[test]
    fn no_lease_is_created() {
        assert_eq!(decide(None, "a", at(0)), Decision::Create);
    }

    #[test]
    fn our_own_lease_is_renewed_even_when_expired() {
        assert_eq!(
            decide(Some(&held_by("a", 0)), "a", at(100)),
            Decision::Renew
        );
    }

    #[test]
    fn a_valid_lease_of_another_holder_is_respected() {
        assert_eq!(
            decide(Some(&held_by("b", 10)), "a", at(24)),
            Decision::Wait { holder: "b".into() }
        );
    }

    #[test]
    fn an_expired_or_released_lease_is_taken_over() {
        assert_eq!(
            decide(Some(&held_by("b", 10)), "a", at(25)),
            Decision::TakeOver
        );
        let released = LeaseSpec {
            holder_identity: Some(String::new()),
            ..held_by("b", 10)
        };
        assert_eq!(decide(Some(&released), "a", at(11)), Decision::TakeOver);
    }

    #[test]
    fn taking_over_counts_a_transition_and_renewing_does_not() {
        let options = LeaderOptions::new("ns", "lease", "a");
        let taken = lease_spec(Some(&held_by("b", 0)), &options, at(30));
        assert_eq!(taken.lease_transitions, Some(4));
        assert_eq!(taken.acquire_time, Some(MicroTime(at(30))));
        let renewed = lease_spec(Some(&held_by("a", 0)), &options, at(30));
        assert_eq!(renewed.lease_transitions, Some(3));
        assert_eq!(renewed.acquire_time, Some(MicroTime(at(0))));
        assert_eq!(renewed.renew_time, Some(MicroTime(at(30))));
    }
}
