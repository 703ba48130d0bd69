//! Prometheus metrics: Lynq's families under their original names, lynq's own under `lynq_`.
//!
//! The HTTP side (`/metrics` on the metrics address) lives in `server`; this module owns the
//! recorder and what it renders. Two stores make up a scrape:
//! - the `metrics` recorder (metrics-exporter-prometheus) for process-wide families that name no
//!   object (reconcile durations, apply attempts, API writes, queue depth), with buckets configured
//!   so that histograms are real histograms;
//! - [`registry::Registry`] for every family labelled with a node, hub or form: the exporter cannot
//!   drop a series, this registry drops an object's series when the object is deleted.

pub mod form;
pub mod hub;
pub mod node;
pub mod registry;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Why the metrics recorder could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The exporter rejected its configuration or another recorder was installed first.
    #[error("installing the Prometheus recorder: {0}")]
    Install(#[from] BuildError),
}

/// Buckets of lynq's lag and latency histograms (cdc.md §6.3), in seconds.
pub const LATENCY_BUCKETS: [f64; 14] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// Lynq's buckets of `lynqnode_reconcile_duration_seconds`, in seconds.
pub const LYNQ_RECONCILE_BUCKETS: [f64; 8] = [0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0];

/// Per-object series of nodes, hubs and forms.
pub(crate) static REGISTRY: registry::Registry = registry::Registry::new();

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once; later calls are no-ops.
pub fn install() -> Result<(), MetricsError> {
    if HANDLE.get().is_some() {
        return Ok(());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full("lynqnode_reconcile_duration_seconds".into()), &LYNQ_RECONCILE_BUCKETS)?
        .set_buckets_for_metric(Matcher::Prefix("lynq_".into()), &LATENCY_BUCKETS)?
        .install_recorder()?;
    // A concurrent caller may have won the race; its handle serves the same recorder type.
    let _ = HANDLE.set(handle);
    describe();
    Ok(())
}

fn describe() {
    metrics::describe_histogram!(
        "lynqnode_reconcile_duration_seconds",
        metrics::Unit::Seconds,
        "Duration of LynqNode reconciles by result."
    );
    metrics::describe_histogram!(
        "lynq_reconcile_duration_seconds",
        metrics::Unit::Seconds,
        "Duration of reconciles by controller."
    );
    metrics::describe_counter!("apply_attempts_total", "Resource apply attempts by kind, result and conflict policy.");
    metrics::describe_counter!("lynq_api_writes_total", "Kubernetes API writes by kind and verb.");
    metrics::describe_gauge!("workqueue_depth", "Reconciles of a controller in progress.");
}

/// The exposition text for a scrape: the recorder's families, then the per-object ones.
pub fn render() -> String {
    let mut text = HANDLE.get().map(PrometheusHandle::render).unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&REGISTRY.render());
    text
}

/// Counts one resource apply attempt (hash-skips included), as Lynq's `apply_attempts_total`.
pub fn apply_attempt(kind: &str, ok: bool, conflict_policy: &str) {
    let kind = if kind.is_empty() { "Unknown".to_string() } else { kind.to_string() };
    let result = if ok { "success" } else { "error" };
    metrics::counter!("apply_attempts_total", "kind" => kind, "result" => result, "conflict_policy" => conflict_policy.to_string())
        .increment(1);
}

/// Counts one write to the Kubernetes API (`verb`: apply, create, patch, update, delete).
pub fn api_write(kind: &str, verb: &'static str) {
    metrics::counter!("lynq_api_writes_total", "kind" => kind.to_string(), "verb" => verb).increment(1);
}

/// Marks one reconcile of a controller as in progress while alive (`workqueue_depth{name}`).
///
/// kube-runtime does not expose its scheduler's queue, so this counts reconciles being worked on.
pub struct InFlight(&'static str);

impl InFlight {
    /// Counts a reconcile of `controller` (lynqnode, lynqhub, lynqform) as started.
    pub fn start(controller: &'static str) -> Self {
        metrics::gauge!("workqueue_depth", "name" => controller).increment(1.0);
        Self(controller)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("workqueue_depth", "name" => self.0).decrement(1.0);
    }
}

/// Times one reconcile of a hub or form controller (`lynq_reconcile_duration_seconds{controller}`).
pub struct ReconcileTimer {
    started: std::time::Instant,
    controller: &'static str,
    _in_flight: InFlight,
}

impl ReconcileTimer {
    /// Starts timing a reconcile of `controller`; the duration is recorded when the timer drops.
    pub fn start(controller: &'static str) -> Self {
        Self { started: std::time::Instant::now(), controller, _in_flight: InFlight::start(controller) }
    }
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        metrics::histogram!("lynq_reconcile_duration_seconds", "controller" => self.controller)
            .record(self.started.elapsed().as_secs_f64());
    }
}

/// Uids of deleted hubs and forms: late writers of a deleted object record nothing (an object
/// re-created under the same name has a new uid). One short string per deleted object for the life
/// of the process.
static RETIRED: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Runs `record` unless the object with `uid` was deleted. The retired set stays locked while
/// `record` writes, and [`retire`] holds it while removing, so a late writer cannot slip a series in
/// between the check and the removal (lock order: retired set, then registry).
pub(crate) fn while_live(uid: &str, record: impl FnOnce()) {
    let retired = RETIRED.lock().unwrap_or_else(|e| e.into_inner());
    if uid.is_empty() || !retired.contains(uid) {
        record();
    }
}

/// Marks the object with `uid` deleted and runs `remove` (which drops its series) under the same lock.
pub(crate) fn retire(uid: Option<String>, remove: impl FnOnce()) {
    let mut retired = RETIRED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(uid) = uid {
        retired.insert(uid);
    }
    remove();
}
