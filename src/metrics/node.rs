//! LynqNode series: Lynq's `lynqnode_*` families (per node) and lynq's provisioning latencies.
//!
//! Every series carries the node's `namespace` and `lynqnode` (or `hub`/`form` for the latencies),
//! so [`forget`] removes them all when the node's finalizer has run.

use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use chrono::{DateTime, SecondsFormat, Utc};
use kube::ResourceExt;

use super::{
    LATENCY_BUCKETS, REGISTRY,
    registry::{Desc, Kind, Labels},
};
use crate::api::{LynqNode, LynqNodeStatus};

/// Annotation the hub writes on a LynqNode: source commit time of the row change that produced this
/// version of the node (RFC 3339, microseconds). The node controller measures provisioning latency from it.
pub const ANN_SOURCE_COMMIT_TIME: &str = "lynq.sh/source-commit-time";

/// Label the hub puts on its nodes (the hub's name).
const LABEL_HUB: &str = "lynq.sh/hub";

/// Lynq's degraded reasons, reset to 0 when a node is healthy (plus any reason seen since).
pub const DEGRADED_REASONS: [&str; 7] = [
    "ResourceFailures",
    "ResourceConflicts",
    "ResourceFailuresAndConflicts",
    "ResourcesNotReady",
    "TemplateRenderError",
    "DependencyCycle",
    "VariablesBuildError",
];

/// The condition types Lynq exports in `lynqnode_condition_status`.
const CONDITION_TYPES: [&str; 4] = ["Ready", "Progressing", "Conflicted", "Degraded"];

static RESOURCES_READY: Desc =
    Desc { name: "lynqnode_resources_ready", help: "Number of ready resources of a LynqNode.", kind: Kind::Gauge };
static RESOURCES_DESIRED: Desc =
    Desc { name: "lynqnode_resources_desired", help: "Number of desired resources of a LynqNode.", kind: Kind::Gauge };
static RESOURCES_FAILED: Desc =
    Desc { name: "lynqnode_resources_failed", help: "Number of failed resources of a LynqNode.", kind: Kind::Gauge };
static RESOURCES_CONFLICTED: Desc = Desc {
    name: "lynqnode_resources_conflicted",
    help: "Number of resources of a LynqNode in conflict with another field manager.",
    kind: Kind::Gauge,
};
static CONFLICTS: Desc = Desc {
    name: "lynqnode_conflicts_total",
    help: "Server-side apply conflicts met by a LynqNode's resources.",
    kind: Kind::Counter,
};
static CONDITION_STATUS: Desc = Desc {
    name: "lynqnode_condition_status",
    help: "LynqNode condition status (0=False, 1=True, 2=Unknown).",
    kind: Kind::Gauge,
};
static DEGRADED_STATUS: Desc = Desc {
    name: "lynqnode_degraded_status",
    help: "1 for the LynqNode's current degraded reason, 0 for the others.",
    kind: Kind::Gauge,
};
static APPLY_LATENCY: Desc = Desc {
    name: "lynq_node_apply_latency_seconds",
    help: "Source row commit to all of the LynqNode's resources applied.",
    kind: Kind::Histogram(&LATENCY_BUCKETS),
};
static READY_LATENCY: Desc = Desc {
    name: "lynq_node_ready_latency_seconds",
    help: "Source row commit to the LynqNode Ready.",
    kind: Kind::Histogram(&LATENCY_BUCKETS),
};

/// The commit times already observed per node, so that each commit is measured once.
#[derive(Default, Clone)]
struct Observed {
    applied: Option<String>,
    ready: Option<String>,
}

static OBSERVED: Mutex<BTreeMap<(String, String), Observed>> = Mutex::new(BTreeMap::new());

/// The labels every node series starts with (the registry finds a node's series by this prefix).
fn node_labels(node: &LynqNode) -> Labels {
    vec![("lynqnode", node.name_any()), ("namespace", node.namespace().unwrap_or_default())]
}

/// Records the node's counts, conditions and degraded reason from the status just computed, and the
/// provisioning latencies of its commit time when this pass completed them.
pub fn record_status(node: &LynqNode, status: &LynqNodeStatus, conflicted: Option<i32>) {
    let labels = node_labels(node);
    let counts = [
        (&RESOURCES_READY, status.ready_resources),
        (&RESOURCES_DESIRED, status.desired_resources),
        (&RESOURCES_FAILED, status.failed_resources),
        (&RESOURCES_CONFLICTED, conflicted),
    ];
    for (desc, value) in counts {
        if let Some(v) = value {
            REGISTRY.set(desc, labels.clone(), f64::from(v));
        }
    }
    let condition = |type_: &str| status.conditions.iter().flatten().find(|c| c.type_ == type_);
    for type_ in CONDITION_TYPES {
        if let Some(c) = condition(type_) {
            let mut l = labels.clone();
            l.push(("type", type_.to_string()));
            REGISTRY.set(&CONDITION_STATUS, l, condition_value(&c.status));
        }
    }
    let degraded = condition("Degraded").filter(|c| c.status == "True").map(|c| c.reason.as_str());
    let seen = REGISTRY.label_values_with_prefix(DEGRADED_STATUS.name, &labels, "reason");
    for (reason, value) in degraded_series(&seen, degraded) {
        let mut l = labels.clone();
        l.push(("reason", reason));
        REGISTRY.set(&DEGRADED_STATUS, l, value);
    }
    let ready = condition("Ready").is_some_and(|c| c.status == "True");
    let applied = status.failed_resources == Some(0);
    record_latencies(node, applied, ready, Utc::now());
}

/// 0=False, 1=True, 2=Unknown (anything else), as Lynq.
pub fn condition_value(status: &str) -> f64 {
    match status {
        "True" => 1.0,
        "False" => 0.0,
        _ => 2.0,
    }
}

/// The degraded series to set: the current reason at 1, every other known or previously seen reason
/// at 0 (Lynq left a previous reason at 1 when a node moved straight to another one).
pub fn degraded_series(seen: &[String], current: Option<&str>) -> Vec<(String, f64)> {
    let mut reasons: Vec<String> = DEGRADED_REASONS.iter().map(|r| r.to_string()).collect();
    for r in seen.iter().map(String::as_str).chain(current) {
        if !reasons.iter().any(|known| known == r) {
            reasons.push(r.to_string());
        }
    }
    reasons
        .into_iter()
        .map(|r| {
            let value = if Some(r.as_str()) == current { 1.0 } else { 0.0 };
            (r, value)
        })
        .collect()
}

/// The commit time the hub stamped on this version of the node, if any.
pub fn commit_time(node: &LynqNode) -> Option<(String, DateTime<Utc>)> {
    let raw = node.annotations().get(ANN_SOURCE_COMMIT_TIME)?;
    let t = DateTime::parse_from_rfc3339(raw).ok()?.with_timezone(&Utc);
    Some((raw.clone(), t))
}

/// The annotation value for a commit time (RFC 3339 with microseconds, UTC).
pub fn format_commit_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn record_latencies(node: &LynqNode, applied: bool, ready: bool, now: DateTime<Utc>) {
    let Some((raw, commit)) = commit_time(node) else { return };
    let latency = (now - commit).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
    let labels: Labels = vec![
        ("namespace", node.namespace().unwrap_or_default()),
        ("hub", node.labels().get(LABEL_HUB).cloned().unwrap_or_default()),
        ("form", node.spec.template_ref.clone()),
    ];
    let key = (node.namespace().unwrap_or_default(), node.name_any());
    // The latencies carry the hub's labels: a node finishing while its hub is deleted must not bring
    // the hub's series back after `hub::forget` removed them.
    super::while_live(&owning_hub_uid(node), || {
        let mut observed = OBSERVED.lock().unwrap_or_else(|e| e.into_inner());
        let entry = observed.entry(key).or_default();
        if applied && entry.applied.as_deref() != Some(raw.as_str()) {
            entry.applied = Some(raw.clone());
            super::REGISTRY.observe(&APPLY_LATENCY, labels.clone(), latency.max(0.0));
        }
        if ready && entry.ready.as_deref() != Some(raw.as_str()) {
            entry.ready = Some(raw);
            super::REGISTRY.observe(&READY_LATENCY, labels, latency.max(0.0));
        }
    });
}

/// Uid of the LynqHub that owns this node (empty when it has none).
fn owning_hub_uid(node: &LynqNode) -> String {
    node.owner_references()
        .iter()
        .find(|owner| owner.kind == "LynqHub")
        .map(|owner| owner.uid.clone())
        .unwrap_or_default()
}

/// Counts one server-side apply conflict of a node's resource.
pub fn conflict(node: &LynqNode, resource_kind: &str, conflict_policy: &str) {
    let mut labels = node_labels(node);
    labels.push(("resource_kind", resource_kind.to_string()));
    labels.push(("conflict_policy", conflict_policy.to_string()));
    REGISTRY.add(&CONFLICTS, labels, 1.0);
}

/// Removes every series of a node that is gone (its finalizer ran).
pub fn forget(node: &LynqNode) {
    // Every node series starts with the node's labels.
    REGISTRY.remove_with_prefix(&node_labels(node));
    let key = (node.namespace().unwrap_or_default(), node.name_any());
    OBSERVED.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
}

/// Times one node reconcile for `lynqnode_reconcile_duration_seconds` and `lynq_reconcile_duration_seconds`.
pub struct ReconcileTimer {
    started: Instant,
    labels: Labels,
    _in_flight: super::InFlight,
}

impl ReconcileTimer {
    /// Starts timing a reconcile of `node`.
    pub fn start(node: &LynqNode) -> Self {
        Self { started: Instant::now(), labels: node_labels(node), _in_flight: super::InFlight::start("lynqnode") }
    }

    /// Records the duration with Lynq's `result` label: `error` when the reconcile failed,
    /// `partial_failure` when resources failed, else `success`.
    pub fn finish(self, ok: bool) {
        let failed = REGISTRY.get(RESOURCES_FAILED.name, &self.labels).unwrap_or(0.0);
        let result = reconcile_result(ok, failed);
        record_reconcile(self.started.elapsed(), result);
    }
}

/// Lynq's `result` label of a node reconcile.
pub fn reconcile_result(ok: bool, failed: f64) -> &'static str {
    match (ok, failed > 0.0) {
        (false, _) => "error",
        (true, true) => "partial_failure",
        (true, false) => "success",
    }
}

fn record_reconcile(elapsed: Duration, result: &'static str) {
    metrics::histogram!("lynqnode_reconcile_duration_seconds", "result" => result).record(elapsed.as_secs_f64());
    metrics::histogram!("lynq_reconcile_duration_seconds", "controller" => "lynqnode").record(elapsed.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_current_degraded_reason_is_one() {
        let first = degraded_series(&[], Some("ResourceFailures"));
        assert_eq!(first.iter().filter(|(_, v)| *v == 1.0).count(), 1);
        assert!(first.contains(&("ResourceFailures".into(), 1.0)));
        // Moving straight to another reason clears the previous one (Lynq's Appendix C #7).
        let seen: Vec<String> = first.iter().map(|(r, _)| r.clone()).collect();
        let second = degraded_series(&seen, Some("ResourceConflicts"));
        assert!(second.contains(&("ResourceFailures".into(), 0.0)));
        assert!(second.contains(&("ResourceConflicts".into(), 1.0)));
        assert_eq!(second.iter().filter(|(_, v)| *v == 1.0).count(), 1);
    }

    #[test]
    fn reasons_outside_lynqs_list_are_set_and_later_cleared() {
        let first = degraded_series(&[], Some("DependencyError"));
        assert!(first.contains(&("DependencyError".into(), 1.0)));
        let healthy = degraded_series(&["DependencyError".into()], None);
        assert!(healthy.iter().all(|(_, v)| *v == 0.0));
        assert!(healthy.iter().any(|(r, _)| r == "DependencyError"));
    }

    #[test]
    fn condition_values_are_lynqs() {
        assert_eq!(condition_value("True"), 1.0);
        assert_eq!(condition_value("False"), 0.0);
        assert_eq!(condition_value("Unknown"), 2.0);
    }

    #[test]
    fn reconcile_results_are_lynqs() {
        assert_eq!(reconcile_result(false, 0.0), "error");
        assert_eq!(reconcile_result(true, 2.0), "partial_failure");
        assert_eq!(reconcile_result(true, 0.0), "success");
    }

    #[test]
    fn commit_times_round_trip_with_microseconds() {
        let t = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456Z").map(|t| t.with_timezone(&Utc));
        let t = t.expect("valid time");
        assert_eq!(format_commit_time(t), "2026-01-02T03:04:05.123456Z");
    }

    #[test]
    fn a_forgotten_node_leaves_no_series() {
        let mut node = LynqNode::new("n1", Default::default());
        node.metadata.namespace = Some("forget-test".into());
        let status = LynqNodeStatus { ready_resources: Some(1), failed_resources: Some(0), ..Default::default() };
        record_status(&node, &status, Some(0));
        conflict(&node, "Deployment", "Stuck");
        assert!(REGISTRY.render().contains("namespace=\"forget-test\""));
        forget(&node);
        assert!(!REGISTRY.render().contains("namespace=\"forget-test\""), "{}", REGISTRY.render());
    }
}
