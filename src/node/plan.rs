//! Pure decisions of one reconcile pass over a node's resources, so the API layer stays thin:
//! what to do with a resource given its dependencies' outcomes, when a not-ready resource has
//! timed out, the LynqNode status summary with Lynq's exact conditions, and the orphan markers of
//! `deletionPolicy: Retain`.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};

use crate::apply::{ANN_APPLY_START, LABEL_NODE, LABEL_NODE_NAMESPACE, annotations_mut, labels_mut};

/// Label on a retained object no node manages any more (value `"true"`).
pub const LABEL_ORPHANED: &str = "lynq.sh/orphaned";
/// Annotation: when the object was orphaned (RFC 3339).
pub const ANN_ORPHANED_AT: &str = "lynq.sh/orphaned-at";
/// Annotation: why (`RemovedFromTemplate` or `LynqNodeDeleted`).
pub const ANN_ORPHANED_REASON: &str = "lynq.sh/orphaned-reason";
/// Readiness timeout used when `timeoutSeconds` is not positive.
pub const DEFAULT_READINESS_TIMEOUT_SECONDS: i64 = 300;

/// What happened to one resource in a pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResourceOutcome {
    /// Applied (or kept) and ready, or applied with `waitForReady: false`.
    Ready,
    /// Applied, not ready yet, still within its timeout: dependents wait.
    NotReady,
    /// Render, apply or readiness failure, or readiness timeout: dependents may be skipped.
    Failed { reason: String },
    /// Server-side apply field conflict (`conflictPolicy: Stuck`); counts as failed too.
    Conflicted,
    /// Not applied because a dependency failed (`skipOnDependencyFailure`).
    Skipped,
    /// Not applied because a dependency is not ready yet.
    Blocked,
}

impl ResourceOutcome {
    /// True when dependents must treat this resource as failed.
    pub fn is_failure(&self) -> bool {
        matches!(self, Self::Failed { .. } | Self::Conflicted | Self::Skipped)
    }

    /// True when dependents must wait for this resource.
    pub fn is_pending(&self) -> bool {
        matches!(self, Self::NotReady | Self::Blocked)
    }
}

/// What to do with a resource once all its dependencies have an outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DependencyDecision {
    /// Every dependency is ready: apply it.
    Apply,
    /// A dependency is not ready yet: wait silently (no event, not counted).
    Block,
    /// A dependency failed and `skipOnDependencyFailure` is true: skip it (event `DependencySkipped`).
    Skip { failed_dependency: String },
    /// A dependency failed, `skipOnDependencyFailure` is false and nothing else is pending: apply it
    /// anyway (event `DependencyFailedButProceeding`).
    ProceedDespiteFailure { failed_dependency: String },
}

/// An event to publish on the LynqNode (all planned events are Warnings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedEvent {
    /// Event reason, as Lynq.
    pub reason: &'static str,
    /// Event message, as Lynq.
    pub message: String,
}

impl DependencyDecision {
    /// The outcome when the decision settles the resource without applying it.
    pub fn outcome(&self) -> Option<ResourceOutcome> {
        match self {
            Self::Skip { .. } => Some(ResourceOutcome::Skipped),
            Self::Block => Some(ResourceOutcome::Blocked),
            Self::Apply | Self::ProceedDespiteFailure { .. } => None,
        }
    }

    /// Lynq's event for this decision about resource `id`, if any.
    pub fn event(&self, id: &str) -> Option<PlannedEvent> {
        match self {
            Self::Skip { failed_dependency } => Some(PlannedEvent {
                reason: "DependencySkipped",
                message: format!(
                    "Resource '{id}' skipped because dependency '{failed_dependency}' failed. Set skipOnDependencyFailure=false to create anyway."
                ),
            }),
            Self::ProceedDespiteFailure { failed_dependency } => Some(PlannedEvent {
                reason: "DependencyFailedButProceeding",
                message: format!(
                    "Dependency '{failed_dependency}' failed, but creating resource '{id}' anyway (skipOnDependencyFailure=false)"
                ),
            }),
            Self::Apply | Self::Block => None,
        }
    }
}

/// Decides from the outcomes of a resource's direct dependencies (in `dependIds` order).
///
/// The first failed dependency names the failure. Unlike Lynq, a resource that proceeds despite a
/// failed dependency still waits for its other, not-yet-ready dependencies.
pub fn dependency_decision(deps: &[(String, ResourceOutcome)], skip_on_dependency_failure: bool) -> DependencyDecision {
    let failed = deps.iter().find(|(_, outcome)| outcome.is_failure()).map(|(id, _)| id.clone());
    match failed {
        Some(failed_dependency) if skip_on_dependency_failure => DependencyDecision::Skip { failed_dependency },
        _ if deps.iter().any(|(_, outcome)| outcome.is_pending()) => DependencyDecision::Block,
        Some(failed_dependency) => DependencyDecision::ProceedDespiteFailure { failed_dependency },
        None => DependencyDecision::Apply,
    }
}

/// The readiness timeout for `timeoutSeconds` (not positive ⇒ 300 s).
pub fn readiness_timeout(timeout_seconds: i64) -> Duration {
    Duration::seconds(if timeout_seconds > 0 { timeout_seconds } else { DEFAULT_READINESS_TIMEOUT_SECONDS })
}

/// The `lynq.sh/apply-start-time` annotation of a live object, if present and valid RFC 3339.
pub fn apply_start_time(live: &Value) -> Option<DateTime<Utc>> {
    live.pointer("/metadata/annotations")
        .and_then(|a| a.get(ANN_APPLY_START))
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// How long a not-ready resource has been waiting against its timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeoutCheck {
    /// Time since the desired object last changed.
    pub elapsed: Duration,
    /// The resource's readiness timeout.
    pub timeout: Duration,
    /// When the timeout expires (or expired).
    pub deadline: DateTime<Utc>,
}

impl TimeoutCheck {
    /// Measures from the live object's `lynq.sh/apply-start-time`, or from `fallback_start` (the
    /// start of this pass) when it has none, as Lynq does.
    pub fn new(live: &Value, fallback_start: DateTime<Utc>, now: DateTime<Utc>, timeout_seconds: i64) -> Self {
        let start = apply_start_time(live).unwrap_or(fallback_start);
        let timeout = readiness_timeout(timeout_seconds);
        Self { elapsed: now - start, timeout, deadline: start + timeout }
    }

    /// True once the timeout has been reached.
    pub fn timed_out(&self) -> bool {
        self.elapsed >= self.timeout
    }

    /// The outcome of a resource that is not ready: failed once timed out, else still pending.
    /// `not_ready_reason` is the readiness check's explanation.
    pub fn outcome(&self, not_ready_reason: &str) -> ResourceOutcome {
        if self.timed_out() {
            ResourceOutcome::Failed {
                reason: format!("not ready after {}: {not_ready_reason}", go_duration(self.elapsed)),
            }
        } else {
            ResourceOutcome::NotReady
        }
    }

    /// Lynq's `ReadinessTimeout` event for resource `id`, once timed out.
    pub fn event(&self, id: &str) -> Option<PlannedEvent> {
        self.timed_out().then(|| PlannedEvent {
            reason: "ReadinessTimeout",
            message: format!(
                "Resource '{id}' not ready after {} (timeout: {})",
                go_duration(self.elapsed),
                go_duration(self.timeout)
            ),
        })
    }
}

/// A duration rounded to whole seconds in Go's `time.Duration` notation (`45s`, `5m0s`, `1h2m3s`).
pub fn go_duration(d: Duration) -> String {
    let millis = d.num_milliseconds();
    // Go's Round(time.Second): halves away from zero.
    let secs = (millis.abs() + 500) / 1000;
    let sign = if millis < 0 && secs > 0 { "-" } else { "" };
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{sign}{s}s"),
        (0, _) => format!("{sign}{m}m{s}s"),
        _ => format!("{sign}{h}h{m}m{s}s"),
    }
}

/// One LynqNode condition (type, status, reason, message); timestamps are the caller's business.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionSpec {
    /// `Ready`, `Progressing`, `Conflicted` or `Degraded`.
    pub type_: String,
    /// True for `"True"`, false for `"False"`.
    pub status: bool,
    /// CamelCase reason.
    pub reason: String,
    /// Human readable message.
    pub message: String,
}

impl ConditionSpec {
    /// A condition from its parts.
    pub fn new(type_: &str, status: bool, reason: &str, message: &str) -> Self {
        Self { type_: type_.into(), status, reason: reason.into(), message: message.into() }
    }

    /// The status as Kubernetes writes it.
    pub fn status_str(&self) -> &'static str {
        if self.status { "True" } else { "False" }
    }
}

/// The status figures of one pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSummary {
    /// `status.desiredResources`: every resource of the node.
    pub desired: i32,
    /// `status.readyResources`.
    pub ready: i32,
    /// `status.failedResources` (conflicts included).
    pub failed: i32,
    /// Conflicted resources (metric only).
    pub conflicted: i32,
    /// `status.skippedResources`.
    pub skipped: i32,
    /// `status.skippedResourceIds`, empty when nothing was skipped (Lynq never cleared it).
    pub skipped_ids: Vec<String>,
    /// Ready, Progressing, Conflicted, Degraded, in that order.
    pub conditions: Vec<ConditionSpec>,
}

impl NodeSummary {
    /// The Ready condition is True.
    pub fn is_ready(&self) -> bool {
        self.failed == 0 && self.conflicted == 0 && self.ready == self.desired
    }

    /// The Degraded condition is True.
    pub fn is_degraded(&self) -> bool {
        !self.is_ready()
    }
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Counts and conditions for the outcomes of every resource of the node (Lynq's
/// `calculateLynqNodeStatus` at the end of a pass).
pub fn summarize(outcomes: &[(String, ResourceOutcome)]) -> NodeSummary {
    let counted = |f: fn(&ResourceOutcome) -> bool| count(outcomes.iter().filter(|(_, o)| f(o)).count());
    let skipped_ids: Vec<String> =
        outcomes.iter().filter(|(_, o)| *o == ResourceOutcome::Skipped).map(|(id, _)| id.clone()).collect();
    let mut summary = NodeSummary {
        desired: count(outcomes.len()),
        ready: counted(|o| *o == ResourceOutcome::Ready),
        failed: counted(|o| matches!(o, ResourceOutcome::Failed { .. } | ResourceOutcome::Conflicted)),
        conflicted: counted(|o| *o == ResourceOutcome::Conflicted),
        skipped: count(skipped_ids.len()),
        skipped_ids,
        conditions: Vec::new(),
    };
    summary.conditions = vec![
        ready_condition(&summary),
        progressing_condition(false),
        conflicted_condition(summary.conflicted > 0),
        degraded_condition(&summary),
    ];
    summary
}

fn ready_condition(s: &NodeSummary) -> ConditionSpec {
    if s.is_ready() {
        return ConditionSpec::new("Ready", true, "Reconciled", "Successfully reconciled all resources");
    }
    let (reason, message) = if s.failed > 0 && s.conflicted > 0 {
        (
            "ResourcesFailedAndConflicted",
            format!("{} resources failed and {} resources in conflict", s.failed, s.conflicted),
        )
    } else if s.conflicted > 0 {
        ("ResourcesConflicted", format!("{} resources in conflict", s.conflicted))
    } else if s.failed > 0 {
        ("ResourcesFailed", format!("{} resources failed", s.failed))
    } else {
        ("NotAllResourcesReady", format!("Not all resources are ready: {}/{} ready", s.ready, s.desired))
    };
    ConditionSpec::new("Ready", false, reason, &message)
}

/// `Progressing`: True while changed resources are being applied, False at the end of a pass.
pub fn progressing_condition(in_progress: bool) -> ConditionSpec {
    if in_progress {
        ConditionSpec::new("Progressing", true, "Reconciling", "Reconciling changed resources")
    } else {
        ConditionSpec::new("Progressing", false, "ReconcileComplete", "Reconciliation completed")
    }
}

fn conflicted_condition(conflicted: bool) -> ConditionSpec {
    if conflicted {
        ConditionSpec::new(
            "Conflicted",
            true,
            "ResourceConflict",
            "One or more resources are in conflict. Check events for details.",
        )
    } else {
        ConditionSpec::new("Conflicted", false, "NoConflict", "No resource conflicts detected")
    }
}

fn degraded_condition(s: &NodeSummary) -> ConditionSpec {
    if !s.is_degraded() {
        return ConditionSpec::new("Degraded", false, "Healthy", "All resources are healthy");
    }
    let (reason, message) = if s.failed > 0 && s.conflicted > 0 {
        (
            "ResourceFailuresAndConflicts",
            format!("LynqNode has {} failed and {} conflicted resources", s.failed, s.conflicted),
        )
    } else if s.failed > 0 {
        ("ResourceFailures", format!("LynqNode has {} failed resources", s.failed))
    } else if s.conflicted > 0 {
        ("ResourceConflicts", format!("LynqNode has {} conflicted resources", s.conflicted))
    } else {
        ("ResourcesNotReady", format!("Not all resources are ready: {}/{} ready", s.ready, s.desired))
    };
    ConditionSpec::new("Degraded", true, reason, &message)
}

/// Where a pass stopped before applying anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EarlyExit {
    /// The node's annotations could not be turned into template variables.
    Variables,
    /// The dependency graph is invalid (duplicate or unknown ids, cycles).
    Graph,
}

/// Lynq's Ready and Degraded conditions for an early exit with error `message`.
pub fn early_exit_conditions(exit: EarlyExit, message: &str) -> Vec<ConditionSpec> {
    match exit {
        EarlyExit::Variables => vec![
            ConditionSpec::new("Ready", false, "VariablesBuildError", message),
            ConditionSpec::new("Degraded", true, "VariablesBuildError", message),
        ],
        EarlyExit::Graph => vec![
            ConditionSpec::new("Ready", false, "DependencyError", message),
            ConditionSpec::new("Degraded", true, "DependencyCycle", "Dependency cycle detected in resource graph"),
        ],
    }
}

fn string_map<'a>(obj: &'a Value, field: &str) -> Option<&'a Map<String, Value>> {
    obj.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_object)
}

fn non_empty(map: Option<&Map<String, Value>>, key: &str) -> bool {
    map.and_then(|m| m.get(key)).and_then(Value::as_str).is_some_and(|v| !v.is_empty())
}

/// True when the object carries Lynq's orphan markers (label `lynq.sh/orphaned=true`, or a
/// non-empty `lynq.sh/orphaned-at` / `lynq.sh/orphaned-reason` annotation).
pub fn has_orphan_markers(obj: &Value) -> bool {
    let labelled =
        string_map(obj, "labels").and_then(|l| l.get(LABEL_ORPHANED)).and_then(Value::as_str) == Some("true");
    let annotations = string_map(obj, "annotations");
    labelled || non_empty(annotations, ANN_ORPHANED_AT) || non_empty(annotations, ANN_ORPHANED_REASON)
}

/// Marks a retained object as orphaned: drops ownerReferences and the tracking labels, adds the
/// orphan label and the `orphaned-at` (`at`, RFC 3339) and `orphaned-reason` annotations.
pub fn add_orphan_markers(obj: &mut Value, reason: &str, at: &str) {
    if let Some(Value::Object(metadata)) = obj.get_mut("metadata") {
        metadata.remove("ownerReferences");
    }
    let labels = labels_mut(obj);
    labels.remove(LABEL_NODE);
    labels.remove(LABEL_NODE_NAMESPACE);
    labels.insert(LABEL_ORPHANED.into(), Value::String("true".into()));
    let annotations = annotations_mut(obj);
    annotations.insert(ANN_ORPHANED_AT.into(), Value::String(at.into()));
    if !reason.is_empty() {
        annotations.insert(ANN_ORPHANED_REASON.into(), Value::String(reason.into()));
    }
}

/// Removes the orphan markers for re-adoption; returns whether anything was removed. Label and
/// annotation maps left empty are dropped.
pub fn strip_orphan_markers(obj: &mut Value) -> bool {
    let Some(Value::Object(metadata)) = obj.get_mut("metadata") else { return false };
    let mut changed = false;
    if let Some(Value::Object(labels)) = metadata.get_mut("labels")
        && labels.get(LABEL_ORPHANED).and_then(Value::as_str) == Some("true")
    {
        labels.remove(LABEL_ORPHANED);
        changed = true;
    }
    if let Some(Value::Object(annotations)) = metadata.get_mut("annotations") {
        changed |= annotations.remove(ANN_ORPHANED_AT).is_some();
        changed |= annotations.remove(ANN_ORPHANED_REASON).is_some();
    }
    for field in ["labels", "annotations"] {
        if metadata.get(field).and_then(Value::as_object).is_some_and(Map::is_empty) {
            metadata.remove(field);
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use ResourceOutcome::*;

    fn failed() -> ResourceOutcome {
        Failed { reason: "boom".into() }
    }

    type Outcomes = Vec<(String, ResourceOutcome)>;

    fn deps(list: &[(&str, ResourceOutcome)]) -> Outcomes {
        list.iter().map(|(id, o)| (id.to_string(), o.clone())).collect()
    }

    fn time(s: &str) -> DateTime<Utc> {
        match DateTime::parse_from_rfc3339(s) {
            Ok(t) => t.with_timezone(&Utc),
            Err(e) => panic!("bad test time {s}: {e}"),
        }
    }

    #[test]
    fn dependency_decisions() {
        let skip = |f: &str| DependencyDecision::Skip { failed_dependency: f.into() };
        let proceed = |f: &str| DependencyDecision::ProceedDespiteFailure { failed_dependency: f.into() };
        let cases: Vec<(Outcomes, bool, DependencyDecision)> = vec![
            (deps(&[]), true, DependencyDecision::Apply),
            (deps(&[("a", Ready), ("b", Ready)]), true, DependencyDecision::Apply),
            (deps(&[("a", Ready), ("b", NotReady)]), true, DependencyDecision::Block),
            (deps(&[("a", Blocked)]), false, DependencyDecision::Block),
            (deps(&[("a", failed())]), true, skip("a")),
            (deps(&[("a", Conflicted)]), true, skip("a")),
            (deps(&[("a", Skipped)]), true, skip("a")),
            (deps(&[("a", Ready), ("b", failed()), ("c", Skipped)]), true, skip("b")),
            // failure wins over pending when skipping
            (deps(&[("a", NotReady), ("b", failed())]), true, skip("b")),
            (deps(&[("a", failed())]), false, proceed("a")),
            (deps(&[("a", Ready), ("b", Conflicted)]), false, proceed("b")),
            // proceeding still waits for dependencies that are not ready (Lynq did not)
            (deps(&[("a", failed()), ("b", NotReady)]), false, DependencyDecision::Block),
        ];
        for (deps, skip_flag, want) in cases {
            assert_eq!(dependency_decision(&deps, skip_flag), want, "{deps:?} skip={skip_flag}");
        }
    }

    #[test]
    fn decision_outcomes_and_events() {
        let skip = DependencyDecision::Skip { failed_dependency: "db".into() };
        assert_eq!(skip.outcome(), Some(Skipped));
        assert_eq!(
            skip.event("app"),
            Some(PlannedEvent {
                reason: "DependencySkipped",
                message: "Resource 'app' skipped because dependency 'db' failed. Set skipOnDependencyFailure=false to create anyway.".into()
            })
        );
        let proceed = DependencyDecision::ProceedDespiteFailure { failed_dependency: "db".into() };
        assert_eq!(proceed.outcome(), None);
        assert_eq!(
            proceed.event("app").map(|e| (e.reason, e.message)),
            Some((
                "DependencyFailedButProceeding",
                "Dependency 'db' failed, but creating resource 'app' anyway (skipOnDependencyFailure=false)"
                    .to_string()
            ))
        );
        assert_eq!(DependencyDecision::Block.outcome(), Some(Blocked));
        assert_eq!(DependencyDecision::Block.event("app"), None);
        assert_eq!(DependencyDecision::Apply.outcome(), None);
        assert_eq!(DependencyDecision::Apply.event("app"), None);
    }

    #[test]
    fn readiness_timeout_defaults() {
        assert_eq!(readiness_timeout(0), Duration::seconds(300));
        assert_eq!(readiness_timeout(-5), Duration::seconds(300));
        assert_eq!(readiness_timeout(60), Duration::seconds(60));
    }

    #[test]
    fn timeout_measured_from_apply_start_time() {
        let now = time("2026-01-01T00:10:00Z");
        let pass_start = time("2026-01-01T00:09:59Z");
        let live = |start: &str| json!({"metadata": {"annotations": {ANN_APPLY_START: start}}});
        let cases = [
            // (annotation, timeoutSeconds, timed out)
            (Some("2026-01-01T00:00:00.123456789Z"), 300, true),
            (Some("2026-01-01T00:05:00Z"), 300, true),
            (Some("2026-01-01T00:05:00.000000001Z"), 300, false),
            (Some("2026-01-01T00:09:00Z"), 0, false),
            (Some("2026-01-01T01:09:00+01:00"), 60, true),
            // unparsable or absent ⇒ measured from the start of this pass (1 s ago)
            (Some("not a time"), 5, false),
            (Some("not a time"), 1, true),
            (None, 5, false),
            (None, 1, true),
        ];
        for (start, timeout, want) in cases {
            let obj = start.map(live).unwrap_or_else(|| json!({}));
            let check = TimeoutCheck::new(&obj, pass_start, now, timeout);
            assert_eq!(check.timed_out(), want, "{start:?} timeout={timeout}");
            assert_eq!(check.outcome("0/1 replicas ready").is_failure(), want);
            assert_eq!(check.event("web").is_some(), want);
        }
        let check = TimeoutCheck::new(&live("2026-01-01T00:04:29.6Z"), pass_start, now, 300);
        assert_eq!(check.deadline, time("2026-01-01T00:09:29.6Z"));
        assert_eq!(
            check.event("web").map(|e| (e.reason, e.message)),
            Some(("ReadinessTimeout", "Resource 'web' not ready after 5m30s (timeout: 5m0s)".to_string()))
        );
        assert_eq!(
            check.outcome("0/1 replicas ready"),
            Failed { reason: "not ready after 5m30s: 0/1 replicas ready".into() }
        );
        let waiting = TimeoutCheck::new(&live("2026-01-01T00:09:00Z"), pass_start, now, 300);
        assert_eq!(waiting.outcome("x"), NotReady);
        assert_eq!(waiting.deadline, time("2026-01-01T00:14:00Z"));
    }

    #[test]
    fn go_durations() {
        let cases = [
            (0, "0s"),
            (499, "0s"),
            (500, "1s"),
            (45_000, "45s"),
            (300_000, "5m0s"),
            (3_723_000, "1h2m3s"),
            (-1_500, "-2s"),
        ];
        for (millis, want) in cases {
            assert_eq!(go_duration(Duration::milliseconds(millis)), want, "{millis}");
        }
    }

    fn outcomes(list: &[(&str, ResourceOutcome)]) -> Outcomes {
        deps(list)
    }

    fn condition<'a>(s: &'a NodeSummary, type_: &str) -> (&'a str, &'a str, &'a str) {
        match s.conditions.iter().find(|c| c.type_ == type_) {
            Some(c) => (c.status_str(), c.reason.as_str(), c.message.as_str()),
            None => panic!("no {type_} condition"),
        }
    }

    #[test]
    fn summary_counts() {
        let s = summarize(&outcomes(&[
            ("a", Ready),
            ("b", NotReady),
            ("c", failed()),
            ("d", Conflicted),
            ("e", Skipped),
            ("f", Blocked),
            ("g", Skipped),
        ]));
        assert_eq!((s.desired, s.ready, s.failed, s.conflicted, s.skipped), (7, 1, 2, 1, 2));
        assert_eq!(s.skipped_ids, ["e", "g"]);
        let types: Vec<&str> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Ready", "Progressing", "Conflicted", "Degraded"]);
    }

    #[test]
    fn summary_conditions_follow_lynq() {
        type Expect = (&'static str, &'static str, &'static str);
        let cases: Vec<(Outcomes, Expect, Expect, Expect)> = vec![
            (
                outcomes(&[]),
                ("True", "Reconciled", "Successfully reconciled all resources"),
                ("False", "NoConflict", "No resource conflicts detected"),
                ("False", "Healthy", "All resources are healthy"),
            ),
            (
                outcomes(&[("a", Ready), ("b", Ready)]),
                ("True", "Reconciled", "Successfully reconciled all resources"),
                ("False", "NoConflict", "No resource conflicts detected"),
                ("False", "Healthy", "All resources are healthy"),
            ),
            (
                outcomes(&[("a", Ready), ("b", NotReady), ("c", Blocked)]),
                ("False", "NotAllResourcesReady", "Not all resources are ready: 1/3 ready"),
                ("False", "NoConflict", "No resource conflicts detected"),
                ("True", "ResourcesNotReady", "Not all resources are ready: 1/3 ready"),
            ),
            (
                outcomes(&[("a", failed()), ("b", Skipped)]),
                ("False", "ResourcesFailed", "1 resources failed"),
                ("False", "NoConflict", "No resource conflicts detected"),
                ("True", "ResourceFailures", "LynqNode has 1 failed resources"),
            ),
            (
                // A conflict is counted as failed too, so Lynq reports "failed and conflicted".
                outcomes(&[("a", Conflicted), ("b", Ready)]),
                ("False", "ResourcesFailedAndConflicted", "1 resources failed and 1 resources in conflict"),
                ("True", "ResourceConflict", "One or more resources are in conflict. Check events for details."),
                ("True", "ResourceFailuresAndConflicts", "LynqNode has 1 failed and 1 conflicted resources"),
            ),
            (
                outcomes(&[("a", Conflicted), ("b", failed()), ("c", failed())]),
                ("False", "ResourcesFailedAndConflicted", "3 resources failed and 1 resources in conflict"),
                ("True", "ResourceConflict", "One or more resources are in conflict. Check events for details."),
                ("True", "ResourceFailuresAndConflicts", "LynqNode has 3 failed and 1 conflicted resources"),
            ),
            (
                // Skipped alone: not failed, but not ready either.
                outcomes(&[("a", Ready), ("b", Skipped)]),
                ("False", "NotAllResourcesReady", "Not all resources are ready: 1/2 ready"),
                ("False", "NoConflict", "No resource conflicts detected"),
                ("True", "ResourcesNotReady", "Not all resources are ready: 1/2 ready"),
            ),
        ];
        for (list, ready, conflicted, degraded) in cases {
            let s = summarize(&list);
            assert_eq!(condition(&s, "Ready"), ready, "{list:?}");
            assert_eq!(condition(&s, "Conflicted"), conflicted, "{list:?}");
            assert_eq!(condition(&s, "Degraded"), degraded, "{list:?}");
            assert_eq!(condition(&s, "Progressing"), ("False", "ReconcileComplete", "Reconciliation completed"));
            assert_eq!(s.is_ready(), ready.0 == "True");
            assert_eq!(s.is_degraded(), degraded.0 == "True");
        }
    }

    #[test]
    fn skipped_ids_are_empty_when_nothing_is_skipped() {
        let s = summarize(&outcomes(&[("a", Ready), ("b", failed())]));
        assert_eq!(s.skipped, 0);
        assert!(s.skipped_ids.is_empty());
    }

    #[test]
    fn progressing_and_early_exit_conditions() {
        assert_eq!(
            progressing_condition(true),
            ConditionSpec::new("Progressing", true, "Reconciling", "Reconciling changed resources")
        );
        assert_eq!(
            early_exit_conditions(EarlyExit::Variables, "bad extra JSON"),
            vec![
                ConditionSpec::new("Ready", false, "VariablesBuildError", "bad extra JSON"),
                ConditionSpec::new("Degraded", true, "VariablesBuildError", "bad extra JSON"),
            ]
        );
        assert_eq!(
            early_exit_conditions(EarlyExit::Graph, "circular dependency detected: a -> a"),
            vec![
                ConditionSpec::new("Ready", false, "DependencyError", "circular dependency detected: a -> a"),
                ConditionSpec::new("Degraded", true, "DependencyCycle", "Dependency cycle detected in resource graph"),
            ]
        );
    }

    #[test]
    fn orphan_markers_round_trip() {
        let live = json!({
            "metadata": {
                "name": "cm",
                "labels": {"app": "x", LABEL_NODE: "n1", LABEL_NODE_NAMESPACE: "ns"},
                "annotations": {"keep": "1"},
                "ownerReferences": [{"uid": "u"}],
            },
            "data": {"k": "v"},
        });
        assert!(!has_orphan_markers(&live));
        let mut marked = live.clone();
        add_orphan_markers(&mut marked, "RemovedFromTemplate", "2026-01-01T00:00:00Z");
        assert_eq!(
            marked,
            json!({
                "metadata": {
                    "name": "cm",
                    "labels": {"app": "x", LABEL_ORPHANED: "true"},
                    "annotations": {"keep": "1", ANN_ORPHANED_AT: "2026-01-01T00:00:00Z", ANN_ORPHANED_REASON: "RemovedFromTemplate"},
                },
                "data": {"k": "v"},
            })
        );
        assert!(has_orphan_markers(&marked));
        assert!(strip_orphan_markers(&mut marked));
        assert_eq!(
            marked,
            json!({"metadata": {"name": "cm", "labels": {"app": "x"}, "annotations": {"keep": "1"}}, "data": {"k": "v"}})
        );
        assert!(!has_orphan_markers(&marked));
        assert!(!strip_orphan_markers(&mut marked), "nothing left to strip");
    }

    #[test]
    fn orphan_markers_on_bare_objects() {
        let mut bare = json!({"kind": "ConfigMap"});
        add_orphan_markers(&mut bare, "", "t");
        assert_eq!(
            bare["metadata"],
            json!({"labels": {LABEL_ORPHANED: "true"}, "annotations": {ANN_ORPHANED_AT: "t"}})
        );
        assert!(strip_orphan_markers(&mut bare));
        assert_eq!(bare, json!({"kind": "ConfigMap", "metadata": {}}));
        let mut nothing = json!({"kind": "ConfigMap"});
        assert!(!strip_orphan_markers(&mut nothing));
    }

    #[test]
    fn orphan_marker_detection() {
        let cases = [
            (json!({"metadata": {"labels": {LABEL_ORPHANED: "true"}}}), true),
            (json!({"metadata": {"labels": {LABEL_ORPHANED: "false"}}}), false),
            (json!({"metadata": {"annotations": {ANN_ORPHANED_AT: "t"}}}), true),
            (json!({"metadata": {"annotations": {ANN_ORPHANED_REASON: "LynqNodeDeleted"}}}), true),
            (json!({"metadata": {"annotations": {ANN_ORPHANED_AT: ""}}}), false),
            (json!({}), false),
        ];
        for (obj, want) in cases {
            assert_eq!(has_orphan_markers(&obj), want, "{obj}");
        }
        // strip leaves a non-"true" label alone, like Lynq
        let mut odd = json!({"metadata": {"labels": {LABEL_ORPHANED: "false"}}});
        assert!(!strip_orphan_markers(&mut odd));
        assert_eq!(odd["metadata"]["labels"][LABEL_ORPHANED], "false");
    }
}
