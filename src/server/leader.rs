//! Leader election on a `coordination.k8s.io/v1` Lease: the API calls around [`super::lease`]'s
//! decisions. Every write is guarded by the resourceVersion of the read it was decided on, so two
//! replicas can never both believe they took the same lease.

use std::{
    hash::{BuildHasher, Hasher},
    time::{Duration, Instant},
};

use k8s_openapi::{api::coordination::v1::Lease, apimachinery::pkg::apis::meta::v1::ObjectMeta, jiff::Timestamp};
use kube::{Api, Client, api::PostParams};

use super::{
    health::{Health, Role},
    lease::{self, Decision, LeaseTiming, Observation, Takeover},
};

/// Where the pod's namespace is mounted in a pod with a service account token.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";
/// Leader-election namespace outside a pod (Lynq's installation namespace).
pub const FALLBACK_NAMESPACE: &str = "lynq-system";

/// Why leader election failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// A Lease API call failed.
    #[error("Lease {lease}: {action}: {source}")]
    Kube {
        /// namespace/name of the Lease.
        lease: String,
        /// What was being done.
        action: &'static str,
        /// The API error.
        source: Box<kube::Error>,
    },
    /// This replica no longer holds the lease; it must stop acting at once.
    #[error("Lease {lease}: leadership lost: {reason}")]
    Lost {
        /// namespace/name of the Lease.
        lease: String,
        /// Why.
        reason: String,
    },
}

/// The outcome of one acquire-or-renew attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum Attempt {
    /// This replica holds the lease now.
    Leader(Takeover),
    /// Someone else holds a valid lease.
    Follower {
        /// Their identity.
        holder: String,
    },
    /// Another replica wrote the Lease between our read and our write; read again.
    Conflict,
}

/// One replica's side of the election.
pub struct Elector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    key: String,
    identity: String,
    timing: LeaseTiming,
    observation: Observation,
}

impl Elector {
    /// An elector for Lease `namespace/name` as `identity`.
    pub fn new(client: Client, namespace: &str, name: &str, identity: String, timing: LeaseTiming) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
            key: format!("{namespace}/{name}"),
            identity,
            timing,
            observation: Observation::new(Instant::now()),
        }
    }

    /// This replica's identity in the Lease.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// namespace/name of the Lease.
    pub fn lease_key(&self) -> &str {
        &self.key
    }

    fn kube_error(&self, action: &'static str) -> impl FnOnce(kube::Error) -> LeaderError + '_ {
        move |e| LeaderError::Kube { lease: self.key.clone(), action, source: Box::new(e) }
    }

    /// Reads the Lease, decides, and writes when this replica may hold it.
    pub async fn attempt(&mut self) -> Result<Attempt, LeaderError> {
        let current = self.api.get_opt(&self.name).await.map_err(self.kube_error("reading"))?;
        let now = Instant::now();
        let spec = current.as_ref().map(|l| l.spec.clone().unwrap_or_default());
        self.observation.observe(spec.as_ref(), now);
        let decision =
            lease::decide(&self.observation, current.is_some(), &self.identity, now, Timestamp::now(), &self.timing);
        let (written, how) = match (decision, current) {
            (Decision::Wait { holder, .. }, _) => return Ok(Attempt::Follower { holder }),
            (Decision::Create(spec), _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        namespace: Some(self.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(spec),
                };
                (self.api.create(&PostParams::default(), &lease).await, Takeover::New)
            }
            (Decision::Write(spec, how), Some(mut lease)) => {
                // The read's resourceVersion stays in the object: the write fails on any change since.
                lease.spec = Some(spec);
                (self.api.replace(&self.name, &PostParams::default(), &lease).await, how)
            }
            // A write is only decided for a Lease that exists.
            (Decision::Write(..), None) => return Ok(Attempt::Conflict),
        };
        match written {
            Ok(lease) => {
                self.observation.observe(lease.spec.as_ref(), Instant::now());
                Ok(Attempt::Leader(how))
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::Conflict),
            Err(e) => Err(self.kube_error("writing")(e)),
        }
    }

    /// Tries every retry period (with jitter) until this replica holds the lease, keeping `health`
    /// informed of the standby's state. Returns how the lease was taken and from whom.
    pub async fn acquire(&mut self, health: &Health) -> (Takeover, Option<String>) {
        let mut announced: Option<String> = None;
        loop {
            let previous = self.observation.holder().map(str::to_string);
            match self.attempt().await {
                Ok(Attempt::Leader(how)) => return (how, previous),
                Ok(Attempt::Follower { holder }) => {
                    if announced.as_deref() != Some(holder.as_str()) {
                        tracing::info!(lease = %self.key, %holder, identity = %self.identity, "waiting for the lease");
                        announced = Some(holder.clone());
                    }
                    health.set_role(Role::Standby { holder: Some(holder), api_reachable: true });
                }
                Ok(Attempt::Conflict) => {
                    health.set_role(Role::Standby { holder: previous, api_reachable: true });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "leader election attempt failed; retrying");
                    health.set_role(Role::Standby { holder: previous, api_reachable: false });
                }
            }
            tokio::time::sleep(jittered(self.timing.retry_period)).await;
        }
    }

    /// Renews every retry period while this replica holds the lease. Returns only when leadership
    /// is lost: no successful renewal within the renew deadline, or another holder in the Lease.
    pub async fn keep_renewing(&mut self) -> LeaderError {
        let mut last_renewal = Instant::now();
        loop {
            let remaining = (last_renewal + self.timing.renew_deadline).saturating_duration_since(Instant::now());
            tokio::time::sleep(self.timing.retry_period.min(remaining)).await;
            let started = Instant::now();
            let budget = (last_renewal + self.timing.renew_deadline).saturating_duration_since(started);
            match tokio::time::timeout(budget, self.attempt()).await {
                // The attempt's start is when the renewal counts from: the server may have taken a while.
                Ok(Ok(Attempt::Leader(_))) => last_renewal = started,
                Ok(Ok(Attempt::Follower { holder })) => {
                    return LeaderError::Lost {
                        lease: self.key.clone(),
                        reason: format!("the lease is held by {holder}"),
                    };
                }
                Ok(Ok(Attempt::Conflict)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "renewing the lease failed; retrying"),
                Err(_) => tracing::warn!(lease = %self.key, "renewing the lease timed out"),
            }
            if lease::renewal_overdue(last_renewal, Instant::now(), &self.timing) {
                let reason = format!("not renewed within the renew deadline ({:?})", self.timing.renew_deadline);
                return LeaderError::Lost { lease: self.key.clone(), reason };
            }
        }
    }

    /// Clears the holder (when it is still this replica), so that a standby takes over at its next
    /// attempt rather than after the lease duration. Returns whether it was released.
    pub async fn release(&mut self) -> Result<bool, LeaderError> {
        for _ in 0..3 {
            let Some(mut current) = self.api.get_opt(&self.name).await.map_err(self.kube_error("reading"))? else {
                return Ok(false);
            };
            let spec = current.spec.clone().unwrap_or_default();
            if lease::holder_of(&spec) != Some(self.identity.as_str()) {
                return Ok(false);
            }
            current.spec = Some(lease::released(&spec, Timestamp::now()));
            match self.api.replace(&self.name, &PostParams::default(), &current).await {
                Ok(_) => return Ok(true),
                // Our own renewal raced with this read; read again.
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(e) => return Err(self.kube_error("releasing")(e)),
            }
        }
        Ok(false)
    }
}

/// The retry period plus up to 20% (client-go's jitter factor 1.2), so replicas do not move in step.
fn jittered(period: Duration) -> Duration {
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    period + period.mul_f64((random % 1000) as f64 / 1000.0 * 0.2)
}

/// The namespace of the pod this runs in, or [`FALLBACK_NAMESPACE`].
pub fn default_namespace() -> String {
    std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE)
        .ok()
        .map(|ns| ns.trim().to_string())
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| FALLBACK_NAMESPACE.to_string())
}

/// A unique identity: the host (pod) name, the process id and a random part, as controller-runtime's
/// `hostname_uuid`; two processes on one host never share it.
pub fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "lynq".into());
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    format!("{host}_{}_{:08x}", std::process::id(), random as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let period = Duration::from_secs(2);
        for _ in 0..100 {
            let d = jittered(period);
            assert!(d >= period && d <= period.mul_f64(1.2), "{d:?}");
        }
    }

    #[test]
    fn identities_are_unique_and_name_the_process() {
        let (a, b) = (default_identity(), default_identity());
        assert_ne!(a, b);
        assert!(a.contains(&format!("_{}_", std::process::id())), "{a}");
    }
}
