//! Readiness of a live object, per kind, exactly as Lynq decides it (behaviour reference §4), plus
//! the stricter "actually ready" checks Lynq's maxSkew rollout applies to workloads (§2.12).
//!
//! Missing integer fields read as 0 and missing `metadata.generation` / `status.observedGeneration`
//! compare equal, as with Go's `unstructured.NestedInt64`.

use serde_json::Value;

/// Whether an object is ready, and why (human readable, for events and logs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    /// True when the object counts as ready.
    pub ready: bool,
    /// Why, e.g. "2/3 replicas ready".
    pub reason: String,
}

impl Readiness {
    fn yes(reason: impl Into<String>) -> Self {
        Self { ready: true, reason: reason.into() }
    }

    fn no(reason: impl Into<String>) -> Self {
        Self { ready: false, reason: reason.into() }
    }
}

/// Readiness of the live object `obj` of kind `kind` (Lynq's rules; unknown kinds use the
/// `Ready` condition convention).
pub fn is_ready(kind: &str, obj: &Value) -> Readiness {
    match kind {
        "Namespace" => phase_is(obj, "Namespace", "Active"),
        "ConfigMap" | "Secret" | "ServiceAccount" | "CronJob" | "PodDisruptionBudget" | "NetworkPolicy" => {
            Readiness::yes(format!("{kind} is ready once it exists"))
        }
        "Service" => service(obj),
        "Deployment" => deployment(obj),
        "StatefulSet" => stateful_set(obj),
        "DaemonSet" => daemon_set(obj),
        "Job" => job(obj),
        "Ingress" => ingress(obj),
        "PersistentVolumeClaim" => phase_is(obj, "PersistentVolumeClaim", "Bound"),
        "HorizontalPodAutoscaler" => hpa(obj),
        _ => ready_condition(obj),
    }
}

/// The stricter check Lynq's maxSkew rollout uses before letting the next node update: workloads
/// must have finished rolling out (a Deployment's `Progressing` condition, when present, must be
/// True with reason `NewReplicaSetAvailable`). Other kinds count as ready once applied, as in Lynq.
pub fn rollout_ready(kind: &str, obj: &Value) -> bool {
    match kind {
        "Deployment" => deployment(obj).ready && deployment_rollout_complete(obj),
        "StatefulSet" => stateful_set(obj).ready,
        "DaemonSet" => daemon_set(obj).ready,
        _ => true,
    }
}

fn int_at(obj: &Value, path: &str) -> i64 {
    obj.pointer(path).and_then(Value::as_i64).unwrap_or(0)
}

fn str_at<'a>(obj: &'a Value, path: &str) -> Option<&'a str> {
    obj.pointer(path).and_then(Value::as_str)
}

/// True when the value at `path` is a non-empty array.
fn has_items(obj: &Value, path: &str) -> bool {
    obj.pointer(path).and_then(Value::as_array).is_some_and(|items| !items.is_empty())
}

/// `status.conditions` when it is an array (anything else counts as absent, as in Go).
fn conditions(obj: &Value) -> Option<&Vec<Value>> {
    obj.pointer("/status/conditions").and_then(Value::as_array)
}

fn condition_field<'a>(condition: &'a Value, field: &str) -> &'a str {
    condition.get(field).and_then(Value::as_str).unwrap_or_default()
}

fn is_true(condition: &Value, type_: &str) -> bool {
    condition_field(condition, "type") == type_ && condition_field(condition, "status") == "True"
}

/// None when the controller has seen the latest spec, else why not.
fn generation_not_observed(obj: &Value) -> Option<Readiness> {
    let generation = int_at(obj, "/metadata/generation");
    let observed = int_at(obj, "/status/observedGeneration");
    (generation != observed)
        .then(|| Readiness::no(format!("generation {generation} not yet observed (observedGeneration {observed})")))
}

/// `spec.replicas`, 1 when absent.
fn desired_replicas(obj: &Value) -> i64 {
    obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)
}

fn phase_is(obj: &Value, kind: &str, wanted: &str) -> Readiness {
    match str_at(obj, "/status/phase") {
        Some(phase) if phase == wanted => Readiness::yes(format!("{kind} is {wanted}")),
        Some(phase) => Readiness::no(format!("{kind} phase is '{phase}', waiting for '{wanted}'")),
        None => Readiness::no(format!("{kind} has no status.phase yet")),
    }
}

fn service(obj: &Value) -> Readiness {
    if str_at(obj, "/spec/type") != Some("LoadBalancer") {
        return Readiness::yes("Service is ready once it exists");
    }
    if has_items(obj, "/status/loadBalancer/ingress") {
        Readiness::yes("load balancer has an ingress")
    } else {
        Readiness::no("waiting for the load balancer ingress")
    }
}

/// Replica-based readiness shared by Deployments and StatefulSets: every listed status counter
/// must equal `spec.replicas` (absent ⇒ 1); 0 replicas is never ready.
fn replicas_ready(obj: &Value, counters: &[(&str, &str)]) -> Readiness {
    if let Some(not_observed) = generation_not_observed(obj) {
        return not_observed;
    }
    let replicas = desired_replicas(obj);
    if replicas == 0 {
        return Readiness::no("scaled to 0 replicas, which never counts as ready");
    }
    let ready = int_at(obj, "/status/readyReplicas");
    let lagging: Vec<String> = counters
        .iter()
        .map(|(label, field)| (label, int_at(obj, &format!("/status/{field}"))))
        .filter(|(_, value)| *value != replicas)
        .map(|(label, value)| format!("{value}/{replicas} {label}"))
        .collect();
    if lagging.is_empty() {
        Readiness::yes(format!("{ready}/{replicas} replicas ready"))
    } else {
        Readiness::no(format!("{ready}/{replicas} replicas ready ({})", lagging.join(", ")))
    }
}

fn deployment(obj: &Value) -> Readiness {
    replicas_ready(
        obj,
        &[("updated", "updatedReplicas"), ("ready", "readyReplicas"), ("available", "availableReplicas")],
    )
}

fn stateful_set(obj: &Value) -> Readiness {
    replicas_ready(obj, &[("updated", "updatedReplicas"), ("ready", "readyReplicas"), ("current", "currentReplicas")])
}

/// The first `Progressing` condition decides; a Deployment without one is complete.
fn deployment_rollout_complete(obj: &Value) -> bool {
    conditions(obj).and_then(|cs| cs.iter().find(|c| condition_field(c, "type") == "Progressing")).is_none_or(|c| {
        condition_field(c, "status") == "True" && condition_field(c, "reason") == "NewReplicaSetAvailable"
    })
}

fn daemon_set(obj: &Value) -> Readiness {
    if let Some(not_observed) = generation_not_observed(obj) {
        return not_observed;
    }
    let desired = int_at(obj, "/status/desiredNumberScheduled");
    if desired == 0 {
        return Readiness::no("no pods to schedule (desiredNumberScheduled is 0)");
    }
    let counters = [
        ("scheduled", "currentNumberScheduled"),
        ("updated", "updatedNumberScheduled"),
        ("ready", "numberReady"),
        ("available", "numberAvailable"),
    ];
    let ready = int_at(obj, "/status/numberReady");
    let lagging: Vec<String> = counters
        .iter()
        .map(|(label, field)| (label, int_at(obj, &format!("/status/{field}"))))
        .filter(|(_, value)| *value != desired)
        .map(|(label, value)| format!("{value}/{desired} {label}"))
        .collect();
    if lagging.is_empty() {
        Readiness::yes(format!("{ready}/{desired} pods ready"))
    } else {
        Readiness::no(format!("{ready}/{desired} pods ready ({})", lagging.join(", ")))
    }
}

/// The first `Complete=True` or `Failed=True` condition decides; otherwise any succeeded pod.
fn job(obj: &Value) -> Readiness {
    for condition in conditions(obj).into_iter().flatten() {
        if is_true(condition, "Complete") {
            return Readiness::yes("Job is complete");
        }
        if is_true(condition, "Failed") {
            let why = condition_field(condition, "message");
            return Readiness::no(if why.is_empty() { "Job failed".to_string() } else { format!("Job failed: {why}") });
        }
    }
    let succeeded = int_at(obj, "/status/succeeded");
    if succeeded > 0 {
        Readiness::yes(format!("{succeeded} pod(s) succeeded"))
    } else {
        Readiness::no("Job has not completed yet")
    }
}

fn ingress(obj: &Value) -> Readiness {
    if has_items(obj, "/status/loadBalancer/ingress") {
        Readiness::yes("load balancer has an ingress")
    } else if has_items(obj, "/spec/rules") {
        Readiness::yes("Ingress has rules")
    } else {
        Readiness::no("no load balancer ingress and no rules")
    }
}

fn hpa(obj: &Value) -> Readiness {
    if conditions(obj).into_iter().flatten().any(|c| is_true(c, "AbleToScale")) {
        Readiness::yes("AbleToScale is True")
    } else {
        Readiness::no("waiting for condition AbleToScale=True")
    }
}

/// Custom resources: ready without `status.conditions`, else only with `Ready=True`.
fn ready_condition(obj: &Value) -> Readiness {
    let Some(conditions) = conditions(obj) else {
        return Readiness::yes("no status.conditions: ready once it exists");
    };
    if conditions.iter().any(|c| is_true(c, "Ready")) {
        return Readiness::yes("condition Ready is True");
    }
    match conditions.iter().find(|c| condition_field(c, "type") == "Ready") {
        Some(c) => Readiness::no(format!(
            "condition Ready is {}{}",
            condition_field(c, "status"),
            describe(condition_field(c, "reason"), condition_field(c, "message"))
        )),
        None => Readiness::no("no Ready condition yet"),
    }
}

fn describe(reason: &str, message: &str) -> String {
    match (reason.is_empty(), message.is_empty()) {
        (true, true) => String::new(),
        (false, true) => format!(" ({reason})"),
        (true, false) => format!(": {message}"),
        (false, false) => format!(" ({reason}): {message}"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(kind: &str, obj: Value, ready: bool) -> String {
        let r = is_ready(kind, &obj);
        assert_eq!(r.ready, ready, "{kind} {obj}: {}", r.reason);
        r.reason
    }

    fn workload(replicas: Option<i64>, status: Value) -> Value {
        let mut obj = json!({"metadata": {"generation": 2}, "spec": {}, "status": status});
        if let Some(r) = replicas {
            obj["spec"]["replicas"] = json!(r);
        }
        obj
    }

    #[test]
    fn always_ready_kinds() {
        for kind in ["ConfigMap", "Secret", "ServiceAccount", "CronJob", "PodDisruptionBudget", "NetworkPolicy"] {
            check(kind, json!({}), true);
        }
    }

    #[test]
    fn namespace_needs_active_phase() {
        check("Namespace", json!({"status": {"phase": "Active"}}), true);
        let reason = check("Namespace", json!({"status": {"phase": "Terminating"}}), false);
        assert!(reason.contains("Terminating"), "{reason}");
        check("Namespace", json!({}), false);
    }

    #[test]
    fn service_waits_only_for_load_balancers() {
        check("Service", json!({"spec": {"type": "ClusterIP"}}), true);
        check("Service", json!({"spec": {}}), true);
        check("Service", json!({"spec": {"type": "LoadBalancer"}}), false);
        check("Service", json!({"spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {"ingress": []}}}), false);
        check(
            "Service",
            json!({"spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}}),
            true,
        );
    }

    #[test]
    fn deployment_rules() {
        let all =
            |n: i64| json!({"observedGeneration": 2, "updatedReplicas": n, "readyReplicas": n, "availableReplicas": n});
        let reason = check("Deployment", workload(Some(3), all(3)), true);
        assert_eq!(reason, "3/3 replicas ready");
        // replicas absent ⇒ 1
        check("Deployment", workload(None, all(1)), true);
        check("Deployment", workload(None, all(2)), false);
        // replicas 0 ⇒ never ready
        check("Deployment", workload(Some(0), all(0)), false);
        // generation not observed
        let mut stale = all(3);
        stale["observedGeneration"] = json!(1);
        let reason = check("Deployment", workload(Some(3), stale), false);
        assert!(reason.contains("not yet observed"), "{reason}");
        // partially ready
        let partial =
            json!({"observedGeneration": 2, "updatedReplicas": 3, "readyReplicas": 2, "availableReplicas": 2});
        let reason = check("Deployment", workload(Some(3), partial), false);
        assert!(reason.starts_with("2/3 replicas ready"), "{reason}");
        // more ready than wanted (scale-down in progress) is not ready either: counts must be equal
        check("Deployment", workload(Some(1), all(2)), false);
    }

    #[test]
    fn statefulset_uses_current_replicas() {
        let status = |current: i64| json!({"observedGeneration": 2, "updatedReplicas": 2, "readyReplicas": 2, "currentReplicas": current});
        check("StatefulSet", workload(Some(2), status(2)), true);
        check("StatefulSet", workload(Some(2), status(1)), false);
        check("StatefulSet", workload(Some(0), status(0)), false);
        check(
            "StatefulSet",
            workload(
                None,
                json!({"observedGeneration": 2, "updatedReplicas": 1, "readyReplicas": 1, "currentReplicas": 1}),
            ),
            true,
        );
    }

    #[test]
    fn daemonset_rules() {
        let status = |desired: i64, ready: i64| {
            json!({"observedGeneration": 2, "desiredNumberScheduled": desired, "currentNumberScheduled": desired,
                   "updatedNumberScheduled": desired, "numberReady": ready, "numberAvailable": ready})
        };
        check("DaemonSet", workload(None, status(3, 3)), true);
        check("DaemonSet", workload(None, status(3, 2)), false);
        check("DaemonSet", workload(None, status(0, 0)), false);
        let mut stale = status(3, 3);
        stale["observedGeneration"] = json!(1);
        check("DaemonSet", workload(None, stale), false);
    }

    #[test]
    fn job_conditions_in_order() {
        let with =
            |conditions: Value, succeeded: i64| json!({"status": {"conditions": conditions, "succeeded": succeeded}});
        check("Job", with(json!([{"type": "Complete", "status": "True"}]), 0), true);
        check("Job", with(json!([{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}]), 1), false);
        // the first decisive condition wins
        check(
            "Job",
            with(json!([{"type": "Failed", "status": "True"}, {"type": "Complete", "status": "True"}]), 0),
            false,
        );
        check(
            "Job",
            with(json!([{"type": "Complete", "status": "True"}, {"type": "Failed", "status": "True"}]), 0),
            true,
        );
        // non-True conditions are skipped, then succeeded decides
        check("Job", with(json!([{"type": "Failed", "status": "False"}]), 1), true);
        check("Job", with(json!([{"type": "Complete", "status": "False"}]), 0), false);
        check("Job", json!({"status": {"succeeded": 2}}), true);
        check("Job", json!({}), false);
    }

    #[test]
    fn ingress_rules_or_status() {
        check("Ingress", json!({"spec": {"rules": [{"host": "a"}]}}), true);
        check(
            "Ingress",
            json!({"spec": {"rules": []}, "status": {"loadBalancer": {"ingress": [{"ip": "1.1.1.1"}]}}}),
            true,
        );
        check("Ingress", json!({"spec": {"rules": []}}), false);
        check("Ingress", json!({"spec": {"defaultBackend": {}}}), false);
    }

    #[test]
    fn pvc_needs_bound() {
        check("PersistentVolumeClaim", json!({"status": {"phase": "Bound"}}), true);
        check("PersistentVolumeClaim", json!({"status": {"phase": "Pending"}}), false);
        check("PersistentVolumeClaim", json!({}), false);
    }

    #[test]
    fn hpa_needs_able_to_scale() {
        check(
            "HorizontalPodAutoscaler",
            json!({"status": {"conditions": [{"type": "AbleToScale", "status": "True"}]}}),
            true,
        );
        check(
            "HorizontalPodAutoscaler",
            json!({"status": {"conditions": [{"type": "ScalingActive", "status": "True"}, {"type": "AbleToScale", "status": "True"}]}}),
            true,
        );
        check(
            "HorizontalPodAutoscaler",
            json!({"status": {"conditions": [{"type": "AbleToScale", "status": "False"}]}}),
            false,
        );
        check("HorizontalPodAutoscaler", json!({}), false);
    }

    #[test]
    fn custom_resources_follow_the_ready_condition() {
        check("Widget", json!({}), true);
        check("Widget", json!({"status": {"phase": "Whatever"}}), true);
        check("Widget", json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}), true);
        let reason = check(
            "Widget",
            json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Provisioning", "message": "creating"}]}}),
            false,
        );
        assert_eq!(reason, "condition Ready is False (Provisioning): creating");
        check("Widget", json!({"status": {"conditions": [{"type": "Synced", "status": "True"}]}}), false);
        // An empty list still means "conditions are reported", as in Lynq.
        check("Widget", json!({"status": {"conditions": []}}), false);
        // A non-list counts as absent, as in Lynq.
        check("Widget", json!({"status": {"conditions": null}}), true);
    }

    #[test]
    fn rollout_ready_is_stricter_for_deployments() {
        let ready = json!({"observedGeneration": 2, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1});
        let with_progressing = |status: &str, reason: &str| {
            let mut s = ready.clone();
            s["conditions"] = json!([{"type": "Available", "status": "True"}, {"type": "Progressing", "status": status, "reason": reason}]);
            workload(Some(1), s)
        };
        assert!(rollout_ready("Deployment", &workload(Some(1), ready.clone())), "no Progressing condition");
        assert!(rollout_ready("Deployment", &with_progressing("True", "NewReplicaSetAvailable")));
        let rolling = with_progressing("True", "ReplicaSetUpdated");
        assert!(is_ready("Deployment", &rolling).ready, "plain readiness ignores Progressing");
        assert!(!rollout_ready("Deployment", &rolling));
        assert!(!rollout_ready("Deployment", &with_progressing("False", "ProgressDeadlineExceeded")));
        assert!(!rollout_ready("Deployment", &workload(Some(0), ready.clone())), "replicas 0");
        let mut stale = ready.clone();
        stale["observedGeneration"] = json!(1);
        assert!(!rollout_ready("Deployment", &workload(Some(1), stale)));
    }

    #[test]
    fn rollout_ready_for_other_kinds() {
        let sts = json!({"observedGeneration": 2, "updatedReplicas": 1, "readyReplicas": 1, "currentReplicas": 0});
        assert!(!rollout_ready("StatefulSet", &workload(None, sts)));
        assert!(!rollout_ready("DaemonSet", &workload(None, json!({"observedGeneration": 2}))));
        // Lynq trusts the node status for everything else, including CRs.
        assert!(rollout_ready("Widget", &json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}})));
        assert!(rollout_ready("PersistentVolumeClaim", &json!({})));
    }
}
