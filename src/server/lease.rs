//! Leader election decisions on a `coordination.k8s.io/v1` Lease, as client-go's leaderelection
//! package makes them, without any API call: what to write (or why to wait) given what was read.
//!
//! Expiry is judged on this process's own clock, from the moment it last saw the record change,
//! never by comparing the holder's `renewTime` with the local time: the two clocks may disagree.

use std::time::{Duration, Instant};

use k8s_openapi::{api::coordination::v1::LeaseSpec, apimachinery::pkg::apis::meta::v1::MicroTime, jiff::Timestamp};

/// Timing of the election (controller-runtime's defaults: 15s, 10s, 2s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a lease stays valid for others after its holder last renewed it.
    pub lease_duration: Duration,
    /// How long the holder keeps acting without a successful renewal; shorter than
    /// `lease_duration`, so the holder stops before anyone else may take over.
    pub renew_deadline: Duration,
    /// Time between two attempts to acquire or renew.
    pub retry_period: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// The last Lease record seen and when it last changed, on the local monotonic clock.
#[derive(Clone, Debug)]
pub struct Observation {
    record: Option<LeaseSpec>,
    changed_at: Instant,
}

impl Observation {
    /// Nothing seen yet.
    pub fn new(now: Instant) -> Self {
        Self { record: None, changed_at: now }
    }

    /// Records a read; the expiry clock restarts only when the record differs from the last one.
    pub fn observe(&mut self, record: Option<&LeaseSpec>, now: Instant) {
        if self.record.as_ref() != record {
            self.record = record.cloned();
            self.changed_at = now;
        }
    }

    /// The holder named in the last record seen, if any.
    pub fn holder(&self) -> Option<&str> {
        self.record.as_ref().and_then(holder_of)
    }
}

/// The holder of a record; an empty identity means nobody (client-go writes "" on release).
pub fn holder_of(record: &LeaseSpec) -> Option<&str> {
    record.holder_identity.as_deref().filter(|h| !h.is_empty())
}

/// How the record being taken was left by its previous holder (for logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Takeover {
    /// The Lease did not exist.
    New,
    /// Nobody held it: the previous holder released it on shutdown.
    Released,
    /// Its holder stopped renewing it for longer than its lease duration.
    Expired,
    /// We already hold it (a renewal).
    Ours,
}

impl Takeover {
    /// Word for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Released => "released",
            Self::Expired => "expired",
            Self::Ours => "ours",
        }
    }
}

/// What to do after a read of the Lease.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// The Lease does not exist: create it with this record.
    Create(LeaseSpec),
    /// Write this record (a renewal or a takeover), guarded by the read's resourceVersion.
    Write(LeaseSpec, Takeover),
    /// Someone else holds a valid lease.
    Wait {
        /// Their identity.
        holder: String,
        /// How long until it expires unless they renew it.
        expires_in: Duration,
    },
}

/// Decides from `observation` (the read just made, already observed) whether `me` may hold the lease.
pub fn decide(
    observation: &Observation,
    exists: bool,
    me: &str,
    now: Instant,
    wall: Timestamp,
    timing: &LeaseTiming,
) -> Decision {
    let fresh = |transitions: i32| LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(seconds(timing.lease_duration)),
        acquire_time: Some(MicroTime(wall)),
        renew_time: Some(MicroTime(wall)),
        lease_transitions: Some(transitions),
        ..Default::default()
    };
    if !exists {
        return Decision::Create(fresh(0));
    }
    let current = observation.record.clone().unwrap_or_default();
    let transitions = current.lease_transitions.unwrap_or(0);
    match holder_of(&current) {
        Some(holder) if holder == me => {
            let renewed = LeaseSpec { acquire_time: current.acquire_time.clone(), ..fresh(transitions) };
            Decision::Write(renewed, Takeover::Ours)
        }
        None => Decision::Write(fresh(transitions + 1), Takeover::Released),
        Some(holder) => {
            let duration = current
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(timing.lease_duration, Duration::from_secs);
            let expires_at = observation.changed_at + duration;
            if now < expires_at {
                Decision::Wait { holder: holder.to_string(), expires_in: expires_at - now }
            } else {
                Decision::Write(fresh(transitions + 1), Takeover::Expired)
            }
        }
    }
}

/// The record a holder writes when it lets go (client-go's release): no holder, so a standby
/// takes over at its next attempt instead of waiting for the lease to expire.
pub fn released(current: &LeaseSpec, wall: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        acquire_time: Some(MicroTime(wall)),
        renew_time: Some(MicroTime(wall)),
        lease_transitions: current.lease_transitions,
        ..Default::default()
    }
}

/// Whether a holder whose last successful renewal was at `last_renewal` must give up now.
pub fn renewal_overdue(last_renewal: Instant, now: Instant, timing: &LeaseTiming) -> bool {
    now.saturating_duration_since(last_renewal) >= timing.renew_deadline
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "me";
    const OTHER: &str = "other";

    fn held_by(holder: Option<&str>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: Some(15),
            acquire_time: Some(MicroTime(Timestamp::UNIX_EPOCH)),
            renew_time: Some(MicroTime(Timestamp::UNIX_EPOCH)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    fn seen(record: Option<LeaseSpec>, at: Instant) -> Observation {
        let mut o = Observation::new(at);
        o.observe(record.as_ref(), at);
        o
    }

    fn wall() -> Timestamp {
        Timestamp::from_second(1_000_000).expect("valid timestamp")
    }

    #[test]
    fn creates_a_missing_lease_as_its_first_holder() {
        let now = Instant::now();
        let Decision::Create(spec) = decide(&seen(None, now), false, ME, now, wall(), &LeaseTiming::default()) else {
            panic!("expected Create");
        };
        assert_eq!(spec.holder_identity.as_deref(), Some(ME));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.lease_transitions, Some(0));
    }

    #[test]
    fn takes_a_released_lease_at_once() {
        let now = Instant::now();
        for holder in [None, Some("")] {
            let obs = seen(Some(held_by(holder, 3)), now);
            let decision = decide(&obs, true, ME, now, wall(), &LeaseTiming::default());
            let Decision::Write(spec, Takeover::Released) = decision else { panic!("expected a takeover") };
            assert_eq!(spec.holder_identity.as_deref(), Some(ME));
            assert_eq!(spec.lease_transitions, Some(4));
        }
    }

    #[test]
    fn waits_while_another_holder_is_valid() {
        let start = Instant::now();
        let obs = seen(Some(held_by(Some(OTHER), 1)), start);
        let later = start + Duration::from_secs(10);
        let decision = decide(&obs, true, ME, later, wall(), &LeaseTiming::default());
        assert_eq!(decision, Decision::Wait { holder: OTHER.into(), expires_in: Duration::from_secs(5) });
    }

    #[test]
    fn takes_an_expired_lease() {
        let start = Instant::now();
        let obs = seen(Some(held_by(Some(OTHER), 1)), start);
        let later = start + Duration::from_secs(15);
        let Decision::Write(spec, Takeover::Expired) = decide(&obs, true, ME, later, wall(), &LeaseTiming::default())
        else {
            panic!("expected a takeover");
        };
        assert_eq!(spec.holder_identity.as_deref(), Some(ME));
        assert_eq!(spec.lease_transitions, Some(2));
        assert_eq!(spec.acquire_time, Some(MicroTime(wall())));
    }

    #[test]
    fn expiry_restarts_whenever_the_holder_renews() {
        let start = Instant::now();
        let mut obs = seen(Some(held_by(Some(OTHER), 1)), start);
        let mut renewed = held_by(Some(OTHER), 1);
        renewed.renew_time = Some(MicroTime(wall()));
        let t10 = start + Duration::from_secs(10);
        obs.observe(Some(&renewed), t10);
        // The same record read again does not restart the clock.
        obs.observe(Some(&renewed), t10 + Duration::from_secs(1));
        let t20 = start + Duration::from_secs(20);
        assert!(matches!(decide(&obs, true, ME, t20, wall(), &LeaseTiming::default()), Decision::Wait { .. }));
        let t25 = start + Duration::from_secs(25);
        assert!(matches!(
            decide(&obs, true, ME, t25, wall(), &LeaseTiming::default()),
            Decision::Write(_, Takeover::Expired)
        ));
    }

    #[test]
    fn the_holders_own_lease_duration_counts() {
        let start = Instant::now();
        let mut record = held_by(Some(OTHER), 1);
        record.lease_duration_seconds = Some(60);
        let obs = seen(Some(record), start);
        let later = start + Duration::from_secs(30);
        assert!(matches!(decide(&obs, true, ME, later, wall(), &LeaseTiming::default()), Decision::Wait { .. }));
    }

    #[test]
    fn renews_its_own_lease_keeping_acquire_time_and_transitions() {
        let now = Instant::now();
        let obs = seen(Some(held_by(Some(ME), 7)), now);
        let Decision::Write(spec, Takeover::Ours) = decide(&obs, true, ME, now, wall(), &LeaseTiming::default()) else {
            panic!("expected a renewal");
        };
        assert_eq!(spec.lease_transitions, Some(7));
        assert_eq!(spec.acquire_time, Some(MicroTime(Timestamp::UNIX_EPOCH)));
        assert_eq!(spec.renew_time, Some(MicroTime(wall())));
    }

    #[test]
    fn release_clears_the_holder_and_keeps_the_transition_count() {
        let spec = released(&held_by(Some(ME), 5), wall());
        assert_eq!(spec.holder_identity, None);
        assert_eq!(spec.lease_transitions, Some(5));
        assert_eq!(spec.lease_duration_seconds, Some(1));
    }

    #[test]
    fn a_holder_gives_up_at_the_renew_deadline() {
        let timing = LeaseTiming::default();
        let last = Instant::now();
        assert!(!renewal_overdue(last, last + Duration::from_secs(9), &timing));
        assert!(renewal_overdue(last, last + Duration::from_secs(10), &timing));
        assert!(timing.renew_deadline < timing.lease_duration, "the holder stops before others may take over");
    }
}
