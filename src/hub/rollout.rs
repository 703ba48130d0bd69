//! maxSkew rollout: which nodes of a form occupy an "updating" slot, whether the hub may create or
//! update one more node of the form, and the form's `status.rollout`.
//!
//! Gating follows Lynq's `canUpdateNodeWithCount` / `countUpdatingNodes` (reference §2.12): a node
//! at the form's target generation occupies a slot while it is not Ready, its status has not
//! observed its generation, it was stamped less than 2 s ago, or one of its workloads is not
//! "actually ready" (checked live by the caller and passed in). Two fixes (Appendix C 13):
//! - `progressDeadlineSeconds` is honoured: an updated node still busy longer than the deadline
//!   after its `lynq.sh/rollout-update-start` stops occupying a slot and counts as failed, and the
//!   rollout phase becomes `Failed`;
//! - `startTime` (and `completionTime`) belong to one target generation and reset for the next.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::desired::{ANN_ROLLOUT_UPDATE_START, ANN_TEMPLATE_GENERATION, ExistingNode};
use crate::api::{RolloutConfig, RolloutPhase, RolloutStatus};

/// A node stamped this recently counts as updating whatever its status says (Lynq: status writes
/// are batched for up to 1 s).
pub const SAFETY_MARGIN: Duration = Duration::from_secs(2);
/// progressDeadlineSeconds when unset (the CRD default).
pub const DEFAULT_PROGRESS_DEADLINE: Duration = Duration::from_secs(600);

/// A form's rollout settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RolloutSettings {
    /// Maximum nodes updating at once; 0 means unlimited (and no rollout status).
    pub max_skew: u32,
    /// How long an updated node may stay busy before it counts as failed.
    pub progress_deadline: Duration,
}

impl RolloutSettings {
    /// Settings of a form's `spec.rollout` (absent means unlimited).
    pub fn from_config(config: Option<&RolloutConfig>) -> Self {
        let max_skew = config.and_then(|c| c.max_skew).and_then(|s| u32::try_from(s).ok()).unwrap_or(0);
        let progress_deadline = config
            .and_then(|c| c.progress_deadline_seconds)
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s > 0)
            .map_or(DEFAULT_PROGRESS_DEADLINE, Duration::from_secs);
        Self { max_skew, progress_deadline }
    }

    /// Whether maxSkew limits this form at all.
    pub fn limited(&self) -> bool {
        self.max_skew > 0
    }
}

/// What rollout needs to know about one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeRollout {
    /// `lynq.sh/template-generation`, when present and numeric.
    pub template_generation: Option<i64>,
    /// `lynq.sh/rollout-update-start`, when present and RFC3339.
    pub update_start: Option<DateTime<Utc>>,
    /// Status of the Ready condition; None without one.
    pub ready: Option<bool>,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `status.observedGeneration`.
    pub observed_generation: Option<i64>,
    /// Every Deployment/StatefulSet/DaemonSet of the node is "actually ready" (live check).
    pub workloads_ready: bool,
}

impl NodeRollout {
    /// Reads the two rollout annotations; the other facts come from the node's status.
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Self {
        Self {
            template_generation: annotations.get(ANN_TEMPLATE_GENERATION).and_then(|g| g.parse().ok()),
            update_start: annotations
                .get(ANN_ROLLOUT_UPDATE_START)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc)),
            ..Default::default()
        }
    }

    /// Time since the last stamp; None without a stamp or when it lies in the future.
    fn age(&self, now: DateTime<Utc>) -> Option<Duration> {
        now.signed_duration_since(self.update_start?).to_std().ok()
    }

    /// Lynq's "updating" test without the target-generation part.
    fn busy(&self, now: DateTime<Utc>) -> bool {
        let stamped_recently = self.update_start.is_some() && self.age(now).is_none_or(|age| age < SAFETY_MARGIN);
        self.ready != Some(true)
            || self.observed_generation.unwrap_or(0) != self.generation.unwrap_or(0)
            || stamped_recently
            || !self.workloads_ready
    }

    fn past_deadline(&self, now: DateTime<Utc>, deadline: Option<Duration>) -> bool {
        deadline.zip(self.age(now)).is_some_and(|(deadline, age)| age >= deadline)
    }
}

impl ExistingNode {
    /// This node's rollout facts.
    pub fn rollout(&self) -> NodeRollout {
        NodeRollout {
            ready: self.ready,
            generation: self.generation,
            observed_generation: self.observed_generation,
            workloads_ready: self.workloads_ready,
            ..NodeRollout::from_annotations(&self.annotations)
        }
    }
}

/// Where one node stands in its form's rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Not at the target generation.
    Outdated,
    /// At the target generation and settled.
    Settled,
    /// At the target generation and busy: occupies a maxSkew slot.
    Updating,
    /// At the target generation, busy past the progress deadline: no slot, counted as failed.
    Failed,
}

/// Where `node` stands; `deadline` None reproduces Lynq (no deadline).
pub fn node_state(node: &NodeRollout, target: i64, now: DateTime<Utc>, deadline: Option<Duration>) -> NodeState {
    if node.template_generation != Some(target) {
        NodeState::Outdated
    } else if !node.busy(now) {
        NodeState::Settled
    } else if node.past_deadline(now, deadline) {
        NodeState::Failed
    } else {
        NodeState::Updating
    }
}

/// Busy nodes of a form at its target generation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Occupancy {
    /// Nodes occupying a maxSkew slot.
    pub updating: usize,
    /// Nodes past the progress deadline (no slot).
    pub failed: usize,
}

/// Lynq's `countUpdatingNodes` over the nodes of one form, with the progress deadline.
pub fn updating_nodes(nodes: &[NodeRollout], target: i64, now: DateTime<Utc>, deadline: Option<Duration>) -> Occupancy {
    nodes.iter().fold(Occupancy::default(), |mut acc, node| {
        match node_state(node, target, now, deadline) {
            NodeState::Updating => acc.updating += 1,
            NodeState::Failed => acc.failed += 1,
            NodeState::Outdated | NodeState::Settled => {}
        }
        acc
    })
}

/// [`updating_nodes`] over the existing nodes of one form.
pub fn form_occupancy(
    existing: &[ExistingNode],
    form: &str,
    target: i64,
    now: DateTime<Utc>,
    deadline: Option<Duration>,
) -> Occupancy {
    let nodes: Vec<NodeRollout> = existing.iter().filter(|n| n.form == form).map(ExistingNode::rollout).collect();
    updating_nodes(&nodes, target, now, deadline)
}

/// Lynq's `canUpdateNodeWithCount`: unlimited when maxSkew is 0, else `updating + updated_this_pass < max_skew`.
pub fn can_update(max_skew: u32, updating: usize, updated_this_pass: usize) -> bool {
    max_skew == 0 || updating.saturating_add(updated_this_pass) < usize::try_from(max_skew).unwrap_or(usize::MAX)
}

/// The next instant at which time alone changes a node's rollout state — its safety margin ends or
/// it passes the progress deadline — if one lies ahead: nothing else would trigger a look then.
pub fn next_time_transition(
    nodes: &[NodeRollout],
    target: i64,
    now: DateTime<Utc>,
    deadline: Duration,
) -> Option<DateTime<Utc>> {
    let after = |start: DateTime<Utc>, d: Duration| chrono::Duration::from_std(d).ok().map(|d| start + d);
    nodes
        .iter()
        .filter(|n| n.template_generation == Some(target))
        .filter_map(|n| n.update_start.map(|start| (n, start)))
        .flat_map(|(n, start)| {
            let margin = after(start, SAFETY_MARGIN);
            let expiry = (n.ready != Some(true)).then(|| after(start, deadline)).flatten();
            [margin, expiry]
        })
        .flatten()
        .filter(|t| *t > now)
        .min()
}

/// One form's admission of creates and updates during one hub pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gate {
    form: String,
    max_skew: u32,
    updating: usize,
    admitted: usize,
    throttled: usize,
}

impl Gate {
    /// A gate for `form` with `updating` slots already occupied.
    pub fn new(form: &str, max_skew: u32, updating: usize) -> Self {
        Self { form: form.to_string(), max_skew, updating, admitted: 0, throttled: 0 }
    }

    /// Whether one more create or update may go now; counts it either way.
    pub fn admit(&mut self) -> bool {
        let ok = can_update(self.max_skew, self.updating, self.admitted);
        if ok {
            self.admitted += 1;
        } else {
            self.throttled += 1;
        }
        ok
    }

    /// Creates and updates refused so far.
    pub fn throttled(&self) -> usize {
        self.throttled
    }

    /// Lynq's `RolloutThrottled` event message, when something was throttled.
    pub fn throttled_message(&self) -> Option<String> {
        (self.throttled > 0).then(|| {
            format!(
                "LynqForm '{}': {} node updates throttled (maxSkew={}, currently updating={})",
                self.form, self.throttled, self.max_skew, self.updating
            )
        })
    }
}

/// Node counts behind a form's rollout status (Lynq's form controller uses the Ready condition only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RolloutCounts {
    /// Nodes of the form.
    pub total: usize,
    /// At the target generation.
    pub updated: usize,
    /// Updated, not Ready, within the deadline.
    pub updating: usize,
    /// Updated and Ready.
    pub ready_updated: usize,
    /// Updated, not Ready, past the deadline.
    pub failed: usize,
}

/// The counts of a form's nodes for `target`.
pub fn rollout_counts(nodes: &[NodeRollout], target: i64, now: DateTime<Utc>, deadline: Duration) -> RolloutCounts {
    let mut counts = RolloutCounts { total: nodes.len(), ..Default::default() };
    for node in nodes.iter().filter(|n| n.template_generation == Some(target)) {
        counts.updated += 1;
        if node.ready == Some(true) {
            counts.ready_updated += 1;
        } else if node.past_deadline(now, Some(deadline)) {
            counts.failed += 1;
        } else {
            counts.updating += 1;
        }
    }
    counts
}

/// The phase and message of a rollout, in Lynq's words (plus `Failed`).
pub fn phase(counts: &RolloutCounts, deadline: Duration) -> (RolloutPhase, String) {
    let RolloutCounts { total, updated, updating, ready_updated, failed } = *counts;
    if total == 0 {
        (RolloutPhase::Idle, "No nodes using this template".into())
    } else if ready_updated == total {
        (RolloutPhase::Complete, format!("All {total} nodes updated and ready"))
    } else if updated == 0 {
        (RolloutPhase::Idle, "Waiting for nodes to be updated".into())
    } else if failed > 0 {
        let secs = deadline.as_secs();
        let message = format!(
            "Failed: {failed}/{total} nodes not ready within progressDeadlineSeconds={secs} \
             ({updated}/{total} nodes updated, {updating} updating, {ready_updated} ready)"
        );
        (RolloutPhase::Failed, message)
    } else {
        let message = format!("Updating: {updated}/{total} nodes updated ({updating} updating, {ready_updated} ready)");
        (RolloutPhase::InProgress, message)
    }
}

/// A form's `status.rollout`: None unless maxSkew > 0 (as Lynq). `previous` is the current status;
/// its times are kept only while it describes the same target generation.
pub fn rollout_status(
    nodes: &[NodeRollout],
    target: i64,
    settings: RolloutSettings,
    previous: Option<&RolloutStatus>,
    now: DateTime<Utc>,
) -> Option<RolloutStatus> {
    if !settings.limited() {
        return None;
    }
    let counts = rollout_counts(nodes, target, now, settings.progress_deadline);
    let (phase, message) = phase(&counts, settings.progress_deadline);
    let same_rollout = previous.filter(|p| p.target_generation == Some(target));
    let mut start_time = same_rollout.and_then(|p| p.start_time.clone());
    let mut completion_time = same_rollout.and_then(|p| p.completion_time.clone());
    match phase {
        _ if counts.total == 0 => {}
        RolloutPhase::Complete => completion_time = completion_time.or_else(|| to_time(now)),
        RolloutPhase::Idle | RolloutPhase::InProgress | RolloutPhase::Failed => {
            completion_time = None;
            start_time = start_time.or_else(|| to_time(now));
        }
    }
    Some(RolloutStatus {
        phase: Some(phase),
        target_generation: Some(target),
        total_nodes: Some(count(counts.total)),
        updated_nodes: Some(count(counts.updated)),
        updating_nodes: Some(count(counts.updating)),
        ready_updated_nodes: Some(count(counts.ready_updated)),
        failed_nodes: Some(count(counts.failed)),
        start_time,
        completion_time,
        message: Some(message),
    })
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// `t` as a Kubernetes timestamp (None only for times outside Kubernetes' range).
fn to_time(t: DateTime<Utc>) -> Option<Time> {
    let nanos = i32::try_from(t.timestamp_subsec_nanos()).ok()?;
    k8s_openapi::jiff::Timestamp::new(t.timestamp(), nanos).ok().map(Time)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap_or_default() + chrono::TimeDelta::seconds(secs)
    }

    /// A settled node at generation `g`, stamped at t(0).
    fn node(g: i64) -> NodeRollout {
        NodeRollout {
            template_generation: Some(g),
            update_start: Some(t(0)),
            ready: Some(true),
            generation: Some(3),
            observed_generation: Some(3),
            workloads_ready: true,
        }
    }

    const DEADLINE: Option<Duration> = Some(Duration::from_secs(600));

    #[test]
    fn node_states_follow_lynqs_rules_plus_the_deadline() {
        let cases: [(&str, NodeRollout, i64, Option<Duration>, NodeState); 12] = [
            ("settled", node(5), 100, DEADLINE, NodeState::Settled),
            ("other generation", NodeRollout { ready: Some(false), ..node(4) }, 100, DEADLINE, NodeState::Outdated),
            ("no annotation", NodeRollout { template_generation: None, ..node(5) }, 100, DEADLINE, NodeState::Outdated),
            ("not ready", NodeRollout { ready: Some(false), ..node(5) }, 100, DEADLINE, NodeState::Updating),
            ("no Ready condition", NodeRollout { ready: None, ..node(5) }, 100, DEADLINE, NodeState::Updating),
            (
                "generation not observed",
                NodeRollout { observed_generation: Some(2), ..node(5) },
                100,
                DEADLINE,
                NodeState::Updating,
            ),
            ("no status yet", NodeRollout { observed_generation: None, ..node(5) }, 100, DEADLINE, NodeState::Updating),
            ("stamped 1 s ago", node(5), 1, DEADLINE, NodeState::Updating),
            ("stamped 2 s ago", node(5), 2, DEADLINE, NodeState::Settled),
            ("stamped in the future", node(5), -5, DEADLINE, NodeState::Updating),
            (
                "workload not ready",
                NodeRollout { workloads_ready: false, ..node(5) },
                599,
                DEADLINE,
                NodeState::Updating,
            ),
            ("past the deadline", NodeRollout { ready: Some(false), ..node(5) }, 600, DEADLINE, NodeState::Failed),
        ];
        for (name, n, at, deadline, want) in cases {
            assert_eq!(node_state(&n, 5, t(at), deadline), want, "{name}");
        }
        let stuck = NodeRollout { ready: Some(false), ..node(5) };
        assert_eq!(node_state(&stuck, 5, t(100_000), None), NodeState::Updating, "Lynq: no deadline");
        let unstamped = NodeRollout { update_start: None, ready: Some(false), ..node(5) };
        assert_eq!(node_state(&unstamped, 5, t(100_000), DEADLINE), NodeState::Updating, "no stamp, no clock");
        assert_eq!(node_state(&NodeRollout { update_start: None, ..node(5) }, 5, t(0), DEADLINE), NodeState::Settled);
    }

    #[test]
    fn the_next_time_transition_is_the_nearest_margin_or_deadline_ahead() {
        let stamped = |secs: i64, ready: bool| NodeRollout {
            template_generation: Some(5),
            update_start: Some(t(secs)),
            ready: Some(ready),
            ..node(5)
        };
        let deadline = Duration::from_secs(600);
        let nodes = [stamped(100, true), stamped(90, false)];
        // The first node's safety margin ends soonest.
        assert_eq!(
            next_time_transition(&nodes, 5, t(100), deadline),
            Some(t(100) + chrono::Duration::from_std(SAFETY_MARGIN).unwrap())
        );
        // Past every margin: the busy node's deadline is next; the ready one has none.
        assert_eq!(
            next_time_transition(&nodes, 5, t(200), deadline),
            Some(t(90) + chrono::Duration::from_std(deadline).unwrap())
        );
        assert_eq!(next_time_transition(&nodes, 5, t(100_000), deadline), None);
        assert_eq!(next_time_transition(&nodes, 6, t(100), deadline), None, "other generations wait for their update");
    }

    #[test]
    fn failed_nodes_free_their_slot() {
        let nodes = [
            node(5),
            NodeRollout { ready: Some(false), ..node(5) },
            NodeRollout { ready: Some(false), update_start: Some(t(500)), ..node(5) },
            NodeRollout { ready: Some(false), ..node(4) },
        ];
        assert_eq!(updating_nodes(&nodes, 5, t(100), DEADLINE), Occupancy { updating: 2, failed: 0 });
        assert_eq!(updating_nodes(&nodes, 5, t(700), DEADLINE), Occupancy { updating: 1, failed: 1 });
        assert_eq!(updating_nodes(&nodes, 5, t(700), None), Occupancy { updating: 2, failed: 0 });
    }

    #[test]
    fn form_occupancy_counts_only_that_form() {
        let annotations = |g: &str| {
            BTreeMap::from([
                (ANN_TEMPLATE_GENERATION.to_string(), g.to_string()),
                (ANN_ROLLOUT_UPDATE_START.to_string(), "2026-01-01T00:00:00Z".to_string()),
            ])
        };
        let e = |form: &str, g: &str, ready| ExistingNode {
            form: form.into(),
            annotations: annotations(g),
            ready: Some(ready),
            workloads_ready: true,
            ..Default::default()
        };
        let existing = [e("web", "2", false), e("web", "2", true), e("web", "1", false), e("db", "2", false)];
        assert_eq!(form_occupancy(&existing, "web", 2, t(60), DEADLINE), Occupancy { updating: 1, failed: 0 });
        assert_eq!(form_occupancy(&existing, "web", 2, t(600), DEADLINE), Occupancy { updating: 0, failed: 1 });
    }

    #[test]
    fn can_update_is_lynqs_sliding_window() {
        let cases = [
            (0, 100, 100, true),
            (1, 0, 0, true),
            (1, 1, 0, false),
            (1, 0, 1, false),
            (3, 1, 1, true),
            (3, 2, 1, false),
        ];
        for (skew, updating, this_pass, want) in cases {
            assert_eq!(can_update(skew, updating, this_pass), want, "maxSkew {skew}, {updating} + {this_pass}");
        }
    }

    #[test]
    fn gate_counts_admissions_and_throttles() {
        let mut gate = Gate::new("web", 3, 1);
        assert_eq!([gate.admit(), gate.admit(), gate.admit(), gate.admit()], [true, true, false, false]);
        assert_eq!(gate.throttled(), 2);
        assert_eq!(
            gate.throttled_message().as_deref(),
            Some("LynqForm 'web': 2 node updates throttled (maxSkew=3, currently updating=1)")
        );
        let mut open = Gate::new("web", 0, 50);
        assert!((0..100).all(|_| open.admit()));
        assert_eq!(open.throttled_message(), None);
    }

    #[test]
    fn settings_from_the_form() {
        assert!(!RolloutSettings::from_config(None).limited());
        let c = RolloutConfig { max_skew: Some(2), progress_deadline_seconds: None };
        assert_eq!(
            RolloutSettings::from_config(Some(&c)),
            RolloutSettings { max_skew: 2, progress_deadline: DEFAULT_PROGRESS_DEADLINE }
        );
        let c = RolloutConfig { max_skew: Some(-1), progress_deadline_seconds: Some(90) };
        assert_eq!(
            RolloutSettings::from_config(Some(&c)),
            RolloutSettings { max_skew: 0, progress_deadline: Duration::from_secs(90) }
        );
    }

    #[test]
    fn annotations_are_parsed() {
        let a = BTreeMap::from([
            (ANN_TEMPLATE_GENERATION.to_string(), "7".to_string()),
            (ANN_ROLLOUT_UPDATE_START.to_string(), "2026-01-01T00:00:10Z".to_string()),
        ]);
        let n = NodeRollout::from_annotations(&a);
        assert_eq!((n.template_generation, n.update_start), (Some(7), Some(t(10))));
        let bad = BTreeMap::from([
            (ANN_TEMPLATE_GENERATION.to_string(), "x".to_string()),
            (ANN_ROLLOUT_UPDATE_START.to_string(), "yesterday".to_string()),
        ]);
        assert_eq!(NodeRollout::from_annotations(&bad), NodeRollout::default());
        let existing = ExistingNode { annotations: a, ready: Some(true), workloads_ready: true, ..Default::default() };
        let r = existing.rollout();
        assert_eq!((r.template_generation, r.ready, r.workloads_ready), (Some(7), Some(true), true));
    }

    #[test]
    fn phases_and_messages() {
        let d = Duration::from_secs(600);
        let c = |total, updated, updating, ready_updated, failed| RolloutCounts {
            total,
            updated,
            updating,
            ready_updated,
            failed,
        };
        let cases = [
            (c(0, 0, 0, 0, 0), RolloutPhase::Idle, "No nodes using this template"),
            (c(3, 0, 0, 0, 0), RolloutPhase::Idle, "Waiting for nodes to be updated"),
            (c(3, 3, 0, 3, 0), RolloutPhase::Complete, "All 3 nodes updated and ready"),
            (c(3, 2, 1, 1, 0), RolloutPhase::InProgress, "Updating: 2/3 nodes updated (1 updating, 1 ready)"),
            (
                c(3, 2, 0, 1, 1),
                RolloutPhase::Failed,
                "Failed: 1/3 nodes not ready within progressDeadlineSeconds=600 (2/3 nodes updated, 0 updating, 1 ready)",
            ),
        ];
        for (counts, want_phase, want_message) in cases {
            assert_eq!(phase(&counts, d), (want_phase, want_message.to_string()), "{counts:?}");
        }
    }

    fn status_at(nodes: &[NodeRollout], target: i64, previous: Option<&RolloutStatus>, at: i64) -> RolloutStatus {
        let settings = RolloutSettings { max_skew: 1, progress_deadline: Duration::from_secs(600) };
        rollout_status(nodes, target, settings, previous, t(at)).unwrap_or_else(|| panic!("no status"))
    }

    #[test]
    fn rollout_status_times_belong_to_one_generation() {
        let unlimited = RolloutSettings { max_skew: 0, progress_deadline: DEFAULT_PROGRESS_DEADLINE };
        assert_eq!(rollout_status(&[node(1)], 1, unlimited, None, t(0)), None);

        // Generation 2: waiting, then in progress, then complete.
        let old = [node(1), node(1)];
        let s1 = status_at(&old, 2, None, 10);
        assert_eq!(
            (s1.phase, s1.start_time.clone(), s1.completion_time.clone()),
            (Some(RolloutPhase::Idle), to_time(t(10)), None)
        );
        let mid = [node(2), NodeRollout { ready: Some(false), ..node(1) }];
        let s2 = status_at(&mid, 2, Some(&s1), 20);
        assert_eq!((s2.phase, s2.start_time.clone()), (Some(RolloutPhase::InProgress), to_time(t(10))));
        let done = [node(2), node(2)];
        let s3 = status_at(&done, 2, Some(&s2), 30);
        assert_eq!(
            (s3.phase, s3.start_time.clone(), s3.completion_time.clone()),
            (Some(RolloutPhase::Complete), to_time(t(10)), to_time(t(30)))
        );
        let s4 = status_at(&done, 2, Some(&s3), 40);
        assert_eq!(s4.completion_time, to_time(t(30)), "completion time is kept");

        // Generation 3 starts a new rollout: times reset (Lynq kept the first startTime forever).
        let s5 = status_at(&done, 3, Some(&s4), 50);
        assert_eq!(
            (s5.phase, s5.start_time.clone(), s5.completion_time.clone()),
            (Some(RolloutPhase::Idle), to_time(t(50)), None)
        );
        assert_eq!(s5.target_generation, Some(3));

        // A node stuck past the deadline fails the rollout.
        let stuck = [node(3), NodeRollout { ready: Some(false), update_start: Some(t(60)), ..node(3) }];
        let s6 = status_at(&stuck, 3, Some(&s5), 700);
        assert_eq!((s6.phase, s6.failed_nodes, s6.updating_nodes), (Some(RolloutPhase::Failed), Some(1), Some(0)));
        let s7 = status_at(&stuck, 3, Some(&s6), 100);
        assert_eq!(
            (s7.phase, s7.updating_nodes, s7.ready_updated_nodes),
            (Some(RolloutPhase::InProgress), Some(1), Some(1))
        );
        assert_eq!(s7.start_time, to_time(t(50)));

        // No nodes: Idle, times untouched.
        let s8 = status_at(&[], 3, Some(&s7), 800);
        assert_eq!(
            (s8.phase, s8.start_time.clone(), s8.total_nodes),
            (Some(RolloutPhase::Idle), to_time(t(50)), Some(0))
        );
    }
}
