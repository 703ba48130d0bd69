//! Hub series: Lynq's `hub_*` gauges and lynq's change-capture families (cdc.md §6.1).
//!
//! Every series carries the hub's `namespace` and `hub` labels; [`forget`] drops them all (and the
//! provisioning latencies of its nodes) when the hub's finalizer runs.

use chrono::{DateTime, Utc};
use kube::ResourceExt;

use super::{
    LATENCY_BUCKETS, REGISTRY,
    registry::{Desc, Kind, Labels},
};
use crate::{
    api::{CaptureModeInUse, LynqHub, LynqHubStatus},
    source::{RowChange, SnapshotReason},
};

macro_rules! desc {
    ($id:ident, $name:literal, $kind:expr, $help:literal) => {
        static $id: Desc = Desc { name: $name, help: $help, kind: $kind };
    };
}

desc!(HUB_DESIRED, "hub_desired", Kind::Gauge, "Desired LynqNodes of a hub (status.desired).");
desc!(HUB_READY, "hub_ready", Kind::Gauge, "Ready LynqNodes of a hub (status.ready).");
desc!(HUB_FAILED, "hub_failed", Kind::Gauge, "Failed LynqNodes of a hub (status.failed).");
desc!(
    CHANGE_LAG,
    "lynq_hub_change_lag_seconds",
    Kind::Histogram(&LATENCY_BUCKETS),
    "Source commit to the transaction's LynqNode writes applied, per applied transaction."
);
desc!(LAG, "lynq_hub_lag_seconds", Kind::Gauge, "Current change lag of the hub; 0 when caught up.");
desc!(CHANGES, "lynq_hub_changes_total", Kind::Counter, "Row changes applied, by operation.");
desc!(TRANSACTIONS, "lynq_hub_transactions_total", Kind::Counter, "Source transactions applied.");
desc!(CONNECTED, "lynq_hub_stream_connected", Kind::Gauge, "1 while the hub's source connection is up.");
desc!(MODE, "lynq_hub_change_capture_mode", Kind::Gauge, "1 for the change-capture mode in use (stream or poll).");
desc!(SNAPSHOTS, "lynq_hub_snapshots_total", Kind::Counter, "Consistent snapshots taken, by reason.");
desc!(RESYNCS, "lynq_hub_resyncs_total", Kind::Counter, "Periodic full reads compared with the stream.");
desc!(
    DIVERGENCES,
    "lynq_hub_resync_divergences_total",
    Kind::Counter,
    "Rows where a periodic full read disagreed with the stream, by kind (missing, unexpected, stale)."
);
desc!(GUARD_HOLDS, "lynq_hub_deletion_guard_holds_total", Kind::Counter, "Mass deletions held by the deletion guard.");
desc!(GUARD_ACTIVE, "lynq_hub_deletion_guard_active", Kind::Gauge, "1 while the deletion guard holds a mass deletion.");
desc!(
    LAST_EVENT,
    "lynq_hub_last_event_timestamp_seconds",
    Kind::Gauge,
    "Unix time of the last change, heartbeat or poll received from the source."
);
desc!(RECONNECTS, "lynq_hub_stream_reconnects_total", Kind::Counter, "Source sessions that ended in error, by reason.");
desc!(
    BEHIND_BYTES,
    "lynq_hub_source_behind_bytes",
    Kind::Gauge,
    "Change-log bytes between the hub's applied position and the server's end."
);
desc!(
    RETAINED_WAL,
    "lynq_hub_slot_retained_wal_bytes",
    Kind::Gauge,
    "WAL bytes the hub's PostgreSQL replication slot retains."
);

/// The source label of a hub: `postgresql` or `mysql`.
pub fn source_label(hub: &LynqHub) -> &'static str {
    if hub.spec.source.postgresql.is_some() { "postgresql" } else { "mysql" }
}

/// How often a runner samples its source's position (a query on the server).
pub const SAMPLE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// The change-capture series of one hub, as its runner records them.
#[derive(Debug)]
pub struct HubMetrics {
    labels: Labels,
    uid: String,
    last_sample: std::sync::Mutex<Option<std::time::Instant>>,
}

impl HubMetrics {
    /// The series of `hub` (labels namespace, hub, source).
    pub fn new(hub: &LynqHub) -> Self {
        Self {
            labels: vec![
                ("namespace", hub.namespace().unwrap_or_default()),
                ("hub", hub.name_any()),
                ("source", source_label(hub).to_string()),
            ],
            uid: hub.uid().unwrap_or_default(),
            last_sample: std::sync::Mutex::new(None),
        }
    }

    /// Runs `record` unless the hub was deleted (a runner still winding down must not bring its
    /// series back); see [`super::while_live`].
    fn record(&self, record: impl FnOnce()) {
        super::while_live(&self.uid, record);
    }

    /// Whether the source position is due for sampling; marks it sampled when it is.
    pub fn sample_due(&self) -> bool {
        let mut last = self.last_sample.lock().unwrap_or_else(|e| e.into_inner());
        let due = last.is_none_or(|t| t.elapsed() >= SAMPLE_INTERVAL);
        if due {
            *last = Some(std::time::Instant::now());
        }
        due
    }

    fn with(&self, key: &'static str, value: &str) -> Labels {
        let mut labels = self.labels.clone();
        labels.push((key, value.to_string()));
        labels
    }

    /// A transaction arrived and its LynqNode writes begin: until they are applied, the current lag
    /// grows from its commit time (an operator stuck on the API server shows up in the gauge).
    pub fn transaction_started(&self, commit_time: Option<DateTime<Utc>>) {
        if let Some(t) = commit_time {
            self.record(|| REGISTRY.set_since(&LAG, self.labels.clone(), t));
        }
    }

    /// A transaction's LynqNode writes were applied: its lag (when the source gave a commit time)
    /// and its changes.
    pub fn transaction_applied(&self, changes: &[RowChange], commit_time: Option<DateTime<Utc>>, now: DateTime<Utc>) {
        self.record(|| {
            REGISTRY.add(&TRANSACTIONS, self.labels.clone(), 1.0);
            for change in changes {
                REGISTRY.add(&CHANGES, self.with("operation", operation(change)), 1.0);
            }
            if let Some(t) = commit_time {
                REGISTRY.observe(&CHANGE_LAG, self.labels.clone(), lag_seconds(t, now));
            }
        });
    }

    /// The runner's capture state after each change to it: mode, connection, current lag, last event.
    pub fn capture_state(
        &self,
        mode: Option<CaptureModeInUse>,
        connected: bool,
        lag_seconds: f64,
        last_event: Option<DateTime<Utc>>,
    ) {
        self.record(|| {
            if let Some(mode) = mode {
                self.mode(mode);
            }
            self.connected(connected);
            REGISTRY.set(&LAG, self.labels.clone(), lag_seconds.max(0.0));
            if let Some(t) = last_event {
                REGISTRY.set(&LAST_EVENT, self.labels.clone(), t.timestamp_micros() as f64 / 1e6);
            }
        });
    }

    fn connected(&self, up: bool) {
        REGISTRY.set(&CONNECTED, self.labels.clone(), if up { 1.0 } else { 0.0 });
    }

    /// The mode in use: 1 for it, 0 for the other.
    fn mode(&self, mode: CaptureModeInUse) {
        let streaming = mode == CaptureModeInUse::Streaming;
        REGISTRY.set(&MODE, self.with("mode", "stream"), if streaming { 1.0 } else { 0.0 });
        REGISTRY.set(&MODE, self.with("mode", "poll"), if streaming { 0.0 } else { 1.0 });
    }

    /// A consistent snapshot was taken for `reason`.
    pub fn snapshot(&self, reason: SnapshotReason) {
        self.record(|| REGISTRY.add(&SNAPSHOTS, self.with("reason", reason.as_str()), 1.0));
    }

    /// A periodic resync compared the table with the stream and found `divergences`.
    pub fn resync(&self, divergences: &Divergences) {
        self.record(|| {
            REGISTRY.add(&RESYNCS, self.labels.clone(), 1.0);
            // Every kind is added, zeros included, so that `increase()` alerts see the series from the start.
            for (kind, n) in divergences.by_kind() {
                REGISTRY.add(&DIVERGENCES, self.with("kind", kind), n as f64);
            }
        });
    }

    /// A session ended in error and will be retried (`reason`: a short cause class).
    pub fn reconnect(&self, reason: &str) {
        self.record(|| {
            REGISTRY.add(&RECONNECTS, self.with("reason", reason), 1.0);
            self.connected(false);
        });
    }

    /// Position and WAL retention of the source, when known.
    pub fn source_position(&self, behind_bytes: Option<i64>, retained_wal_bytes: Option<i64>) {
        self.record(|| {
            if let Some(b) = behind_bytes {
                REGISTRY.set(&BEHIND_BYTES, self.labels.clone(), b as f64);
            }
            if let Some(b) = retained_wal_bytes {
                REGISTRY.set(&RETAINED_WAL, self.labels.clone(), b as f64);
            }
        });
    }
}

/// How a periodic full read disagreed with the stream's view of the table, counted by row uid.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Divergences {
    /// Uids the table has and the stream's view lacks (a change the stream never delivered).
    pub missing: usize,
    /// Uids the stream's view has and the table no longer has (a delete the stream never delivered).
    pub unexpected: usize,
    /// Uids both have, with different mapped values (an update the stream never delivered).
    pub stale: usize,
}

impl Divergences {
    /// Classifies the divergent `uids` by whether the stream's view and the fresh read hold them.
    pub fn classify<'a>(
        uids: impl IntoIterator<Item = &'a str>,
        in_stream: impl Fn(&str) -> bool,
        in_table: impl Fn(&str) -> bool,
    ) -> Self {
        let mut d = Self::default();
        for uid in uids {
            match (in_stream(uid), in_table(uid)) {
                (false, _) => d.missing += 1,
                (true, false) => d.unexpected += 1,
                (true, true) => d.stale += 1,
            }
        }
        d
    }

    /// Every divergent uid, whatever its kind.
    pub fn total(&self) -> usize {
        self.missing + self.unexpected + self.stale
    }

    /// The counts under their `kind` label values.
    pub fn by_kind(&self) -> [(&'static str, usize); 3] {
        [("missing", self.missing), ("unexpected", self.unexpected), ("stale", self.stale)]
    }
}

/// Seconds from `commit` to `now`, never negative (the database's clock may run ahead of ours).
pub fn lag_seconds(commit: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
    ((now - commit).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6).max(0.0)
}

/// The `operation` label of a row change.
pub fn operation(change: &RowChange) -> &'static str {
    match change {
        RowChange::Insert { .. } => "insert",
        RowChange::Update { .. } => "update",
        RowChange::Delete { .. } => "delete",
        RowChange::Truncate => "truncate",
    }
}

fn hub_labels(hub: &LynqHub) -> Labels {
    vec![("hub", hub.name_any()), ("namespace", hub.namespace().unwrap_or_default())]
}

/// Lynq's `hub_desired`/`hub_ready`/`hub_failed` from the status being written.
pub fn record_status(hub: &LynqHub, status: &LynqHubStatus) {
    super::while_live(&hub.uid().unwrap_or_default(), || {
        let labels = hub_labels(hub);
        for (desc, value) in [(&HUB_DESIRED, status.desired), (&HUB_READY, status.ready), (&HUB_FAILED, status.failed)]
        {
            if let Some(v) = value {
                REGISTRY.set(desc, labels.clone(), f64::from(v));
            }
        }
    });
}

/// The deletion guard's state after a batch: whether it holds now and whether a new hold began.
pub fn deletion_guard(hub: &LynqHub, holding: bool, hold_started: bool) {
    let metrics = HubMetrics::new(hub);
    metrics.record(|| {
        if hold_started {
            REGISTRY.add(&GUARD_HOLDS, metrics.labels.clone(), 1.0);
        }
        REGISTRY.set(&GUARD_ACTIVE, metrics.labels.clone(), if holding { 1.0 } else { 0.0 });
    });
}

/// Removes every series of a deleted hub: Lynq's, lynq's, and its nodes' provisioning latencies.
pub fn forget(hub: &LynqHub) {
    let (ns, name) = (hub.namespace().unwrap_or_default(), hub.name_any());
    super::retire(hub.uid(), || REGISTRY.remove_matching(&[("namespace", &ns), ("hub", &name)]));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(ns: &str, name: &str) -> LynqHub {
        let mut hub: LynqHub = serde_json::from_value(serde_json::json!({
            "apiVersion": "operator.lynq.sh/v1", "kind": "LynqHub",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"source": {"type": "mysql", "mysql": {"host": "h", "username": "u", "database": "d", "table": "t"}},
                     "valueMappings": {"uid": "id", "activate": "active"}}
        }))
        .expect("valid hub");
        hub.metadata.namespace = Some(ns.into());
        hub
    }

    #[test]
    fn lag_is_never_negative() {
        let now = Utc::now();
        assert_eq!(lag_seconds(now + chrono::Duration::seconds(2), now), 0.0);
        assert_eq!(lag_seconds(now - chrono::Duration::milliseconds(1500), now), 1.5);
    }

    #[test]
    fn a_deleted_hub_leaves_no_series() {
        let h = hub("hub-forget", "h1");
        let m = HubMetrics::new(&h);
        m.transaction_applied(&[RowChange::Truncate], Some(Utc::now()), Utc::now());
        m.capture_state(Some(CaptureModeInUse::Streaming), true, 0.5, Some(Utc::now()));
        record_status(&h, &LynqHubStatus { desired: Some(2), ..Default::default() });
        let text = REGISTRY.render();
        assert!(
            text.contains(
                r#"lynq_hub_changes_total{namespace="hub-forget",hub="h1",source="mysql",operation="truncate"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"lynq_hub_change_lag_seconds_count{namespace="hub-forget",hub="h1",source="mysql"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"hub_desired{hub="h1",namespace="hub-forget"} 2"#), "{text}");
        forget(&h);
        assert!(!REGISTRY.render().contains("hub-forget"), "{}", REGISTRY.render());
    }

    #[test]
    fn divergences_are_classified_by_where_the_uid_is() {
        let stream = ["a", "b"];
        let table = ["b", "c"];
        let d = Divergences::classify(["a", "b", "c"], |u| stream.contains(&u), |u| table.contains(&u));
        assert_eq!(d, Divergences { missing: 1, unexpected: 1, stale: 1 });
        assert_eq!(d.total(), 3);
    }

    #[test]
    fn a_resync_counts_every_divergence_kind_even_at_zero() {
        let m = HubMetrics::new(&hub("hub-resync", "h1"));
        m.resync(&Divergences { missing: 0, unexpected: 2, stale: 0 });
        let text = REGISTRY.render();
        let series = |kind: &str, n: u32| {
            format!(
                r#"lynq_hub_resync_divergences_total{{namespace="hub-resync",hub="h1",source="mysql",kind="{kind}"}} {n}"#
            )
        };
        for expected in [series("missing", 0), series("unexpected", 2), series("stale", 0)] {
            assert!(text.contains(&expected), "{expected} in {text}");
        }
        assert!(text.contains(r#"lynq_hub_resyncs_total{namespace="hub-resync",hub="h1",source="mysql"} 1"#));
    }

    #[test]
    fn a_deleted_hub_records_nothing_more() {
        let mut h = hub("hub-retired", "h1");
        h.metadata.uid = Some("uid-retired".into());
        let m = HubMetrics::new(&h);
        forget(&h);
        m.transaction_applied(&[RowChange::Truncate], Some(Utc::now()), Utc::now());
        record_status(&h, &LynqHubStatus { desired: Some(2), ..Default::default() });
        assert!(!REGISTRY.render().contains("hub-retired"), "{}", REGISTRY.render());
        // A new hub of the same name is a new object.
        let mut again = hub("hub-retired", "h1");
        again.metadata.uid = Some("uid-new".into());
        record_status(&again, &LynqHubStatus { desired: Some(1), ..Default::default() });
        assert!(REGISTRY.render().contains(r#"hub_desired{hub="h1",namespace="hub-retired"} 1"#));
        forget(&again);
    }
}
