//! One supervised task per hub: it (re)connects to the hub's database with exponential backoff and
//! jitter, streams (or polls), keeps the hub's view of the table, and turns every committed change
//! into LynqNode writes. A failing hub only ever affects itself.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use tokio::{sync::mpsc, task::JoinHandle};

use super::{
    config::{self, hub_key},
    sync::{BatchKind, HubSync},
};
use crate::{
    api::{CaptureModeInUse, ChangeCaptureMode, LynqHub, StreamPosition},
    source::{
        Position, RowChange, SnapshotReason, SourceEvent,
        capture::{Database, SourceError},
    },
};

/// What the hub controller can ask of a running hub.
#[derive(Clone, Debug)]
pub enum Control {
    /// Forms (or the hub's nodes, or the hub's metadata) changed: take this latest hub object
    /// (annotations such as `lynq.sh/allow-mass-deletion`) and recompute the desired set.
    Resync(Box<LynqHub>),
}

/// How the running capture started, for the hub's `ChangeCapture` condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureStart {
    /// Streaming resumed from the checkpoint, without a snapshot.
    Resumed,
    /// Streaming from a new consistent snapshot taken for this reason.
    Snapshot(SnapshotReason),
    /// Polling the table every syncInterval.
    Polling,
}

/// Type of the hub condition that tells how change capture runs.
pub const CAPTURE_CONDITION: &str = "ChangeCapture";

/// The `ChangeCapture` condition (status, reason, message) of a state; None before the first start.
pub fn capture_condition(state: &CaptureState) -> Option<(bool, &'static str, String)> {
    // No position in the message: it moves with every transaction, the condition must not.
    let condition = match state.start? {
        CaptureStart::Resumed => (true, "Resumed", "Streaming resumed from the checkpoint without a snapshot".into()),
        CaptureStart::Snapshot(reason) => {
            let why = match reason {
                SnapshotReason::Initial => "no checkpoint to resume from",
                SnapshotReason::PositionPurged => "the checkpointed binlog position is no longer on the server",
                SnapshotReason::SlotMissing => "the replication slot was missing",
                SnapshotReason::SlotInvalidated => "the replication slot was invalidated",
                SnapshotReason::Resync => "the periodic resync found the stream diverged from the table",
            };
            let message = format!("Streaming from a new consistent snapshot ({why})");
            (true, snapshot_condition_reason(reason), message)
        }
        CaptureStart::Polling => match &state.message {
            Some(why) => (true, "StreamingUnavailable", format!("Polling the table: {why}")),
            None => (true, "Polling", "Polling the table every syncInterval (changeCapture: Poll)".into()),
        },
    };
    Some(condition)
}

/// Condition reason for a stream that started from a snapshot taken for `reason`.
pub fn snapshot_condition_reason(reason: SnapshotReason) -> &'static str {
    match reason {
        SnapshotReason::Initial => "InitialSnapshot",
        SnapshotReason::PositionPurged => "PositionPurged",
        SnapshotReason::SlotMissing => "SlotMissing",
        SnapshotReason::SlotInvalidated => "SlotInvalidated",
        SnapshotReason::Resync => "Diverged",
    }
}

/// The change-capture state a runner reports (mirrored into `status.changeCapture`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CaptureState {
    /// Streaming or polling, once decided.
    pub mode: Option<CaptureModeInUse>,
    /// Why this mode (e.g. why Auto fell back to polling), or the last error.
    pub message: Option<String>,
    /// Position of the last fully applied transaction.
    pub position: Option<Position>,
    /// When the last change was applied.
    pub last_event_time: Option<DateTime<Utc>>,
    /// Commit-to-applied lag of the last change, 0 when caught up.
    pub lag_seconds: f64,
    /// The source is connected and healthy.
    pub connected: bool,
    /// How the running capture started.
    pub start: Option<CaptureStart>,
}

impl CaptureState {
    /// The status block.
    pub fn to_status(&self) -> crate::api::ChangeCaptureStatus {
        crate::api::ChangeCaptureStatus {
            mode: self.mode,
            position: self.position.as_ref().map(position_status),
            last_event_time: self.last_event_time.map(|t| t.to_rfc3339()),
            lag_seconds: Some(self.lag_seconds),
            message: self.message.clone(),
        }
    }
}

/// A stream position as the status shows it.
pub fn position_status(position: &Position) -> StreamPosition {
    match position {
        Position::Binlog { file, pos, gtid } => StreamPosition {
            binlog_file: Some(file.clone()),
            binlog_position: i64::try_from(*pos).ok(),
            gtid_set: gtid.clone(),
            lsn: None,
        },
        Position::Lsn(lsn) => {
            StreamPosition { lsn: Some(format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)), ..Default::default() }
        }
        Position::None => StreamPosition::default(),
    }
}

/// The checkpoint recorded in a hub's status, if any.
pub fn checkpoint_from_status(hub: &LynqHub) -> Option<Position> {
    let p = hub.status.as_ref()?.change_capture.as_ref()?.position.as_ref()?;
    if let (Some(file), Some(pos)) = (&p.binlog_file, p.binlog_position) {
        return Some(Position::Binlog { file: file.clone(), pos: u64::try_from(pos).ok()?, gtid: p.gtid_set.clone() });
    }
    let (hi, lo) = p.lsn.as_deref()?.split_once('/')?;
    Some(Position::Lsn((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?))
}

/// A running hub task and how to reach it.
pub struct RunnerHandle {
    /// Fingerprint of the configuration it runs with (a change restarts it).
    pub fingerprint: u64,
    /// Its change-capture state.
    pub state: Arc<Mutex<CaptureState>>,
    control: mpsc::UnboundedSender<Control>,
    task: JoinHandle<()>,
}

impl RunnerHandle {
    /// Hands the runner the latest hub object and asks it to recompute the desired set.
    pub fn resync(&self, hub: &LynqHub) {
        let _ = self.control.send(Control::Resync(Box::new(hub.clone())));
    }

    /// Stops the task (its source connections close as it is dropped).
    pub fn stop(self) {
        self.task.abort();
    }

    /// Stops the task gracefully (operator shutdown): the transaction in flight is applied, the
    /// checkpoint persisted and the source closed before this returns.
    pub async fn shutdown(self) {
        let Self { control, task, .. } = self;
        // A closed control channel is the runner's signal to stop after its current step.
        drop(control);
        let _ = task.await;
    }
}

/// Starts the task for `hub`.
pub fn spawn(sync: HubSync, hub: &LynqHub, database: Database, fingerprint: u64) -> RunnerHandle {
    let (control, rx) = mpsc::unbounded_channel();
    let state = Arc::new(Mutex::new(CaptureState::default()));
    let runner = Runner {
        key: hub_key(hub),
        mode: config::capture_mode(hub),
        interval: config::sync_interval(hub),
        checkpoint: checkpoint_from_status(hub),
        force_snapshot: None,
        snapshot_reason: None,
        metrics: crate::metrics::hub::HubMetrics::new(hub),
        database,
        sync,
        control: rx,
        state: state.clone(),
    };
    let task = tokio::spawn(runner.run());
    RunnerHandle { fingerprint, state, control, task }
}

struct Runner {
    key: String,
    mode: ChangeCaptureMode,
    interval: Duration,
    checkpoint: Option<Position>,
    /// The next stream must start from a new snapshot, for this reason.
    force_snapshot: Option<SnapshotReason>,
    /// The reason to report for the snapshot the open stream starts with, when it was forced.
    snapshot_reason: Option<SnapshotReason>,
    metrics: crate::metrics::hub::HubMetrics,
    database: Database,
    sync: HubSync,
    control: mpsc::UnboundedReceiver<Control>,
    state: Arc<Mutex<CaptureState>>,
}

/// How one connected session ended.
enum SessionEnd {
    /// The control channel closed: the hub is gone or reconfigured.
    Stopped,
    /// Auto mode was polling and the server now allows streaming (a grant or setting was fixed).
    StreamingPossible,
}

/// Why a session ended in error (retried with backoff).
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sync(#[from] super::sync::SyncError),
    #[error("streaming is not possible: {0}")]
    StreamingImpossible(String),
    #[error("the periodic resync found {0} divergence(s) from the stream; taking a new snapshot")]
    Diverged(usize),
}

impl SessionError {
    /// The `reason` label of `lynq_hub_stream_reconnects_total`.
    fn metric_reason(&self) -> &'static str {
        match self {
            Self::Source(_) => "source_error",
            Self::Sync(_) => "kubernetes_error",
            Self::StreamingImpossible(_) => "streaming_impossible",
            Self::Diverged(_) => "diverged",
        }
    }
}

impl Runner {
    async fn run(mut self) {
        let mut backoff = new_backoff();
        loop {
            let result = self.session().await;
            match result {
                Ok(SessionEnd::Stopped) => return self.sync.flush_checkpoint(&self.state).await,
                Ok(SessionEnd::StreamingPossible) => {
                    tracing::info!(hub = %self.key, "streaming is possible now; switching from polling");
                }
                Err(SessionError::Diverged(n)) => {
                    tracing::warn!(hub = %self.key, divergences = n, "stream diverged from the table; re-snapshotting");
                    self.force_snapshot = Some(SnapshotReason::Resync);
                }
                Err(e) => {
                    if let SessionError::Source(source) = &e
                        && source.needs_snapshot()
                    {
                        self.force_snapshot = Some(SnapshotReason::PositionPurged);
                    }
                    self.metrics.reconnect(e.metric_reason());
                    self.set_state(|s| {
                        s.connected = false;
                        s.message = Some(e.to_string());
                    });
                    self.sync.report_source_error(&e.to_string()).await;
                    let delay = backoff.next().unwrap_or(Duration::from_secs(60));
                    tracing::warn!(hub = %self.key, error = %e, retry_in = ?delay, "hub source failed");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        ctl = self.control.recv() => if ctl.is_none() { return self.sync.flush_checkpoint(&self.state).await },
                    }
                    continue;
                }
            }
            backoff = new_backoff();
        }
    }

    fn set_state(&self, f: impl FnOnce(&mut CaptureState)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
            self.metrics.capture_state(s.mode, s.connected, s.lag_seconds, s.last_event_time);
        }
    }

    /// One connected session: decides the mode, then streams or polls until an error or a stop.
    async fn session(&mut self) -> Result<SessionEnd, SessionError> {
        tracing::debug!(hub = %self.key, mode = ?self.mode, checkpoint = ?self.checkpoint, "source session starting");
        match self.mode {
            ChangeCaptureMode::Poll => self.poll(None).await,
            ChangeCaptureMode::Stream | ChangeCaptureMode::Auto => match self.database.streaming_blocker().await? {
                None => self.stream().await,
                Some(reason) if self.mode == ChangeCaptureMode::Auto => {
                    self.poll(Some(format!("polling because streaming is not possible: {reason}"))).await
                }
                Some(reason) => Err(SessionError::StreamingImpossible(reason)),
            },
        }
    }

    /// Lynq's behaviour on one long-lived pool: read the table every interval.
    async fn poll(&mut self, why: Option<String>) -> Result<SessionEnd, SessionError> {
        let fell_back = why.is_some();
        self.set_state(|s| {
            s.mode = Some(CaptureModeInUse::Polling);
            s.message = why;
            s.start = Some(CaptureStart::Polling);
        });
        let mut ticker = tokio::time::interval(self.interval);
        let mut flush = tokio::time::interval(super::sync::STATUS_INTERVAL);
        loop {
            tokio::select! {
                _ = flush.tick() => self.sync.tick(&self.state).await?,
                _ = ticker.tick() => {
                    let rows = self.database.read_table().await?;
                    self.set_state(|s| { s.connected = true; s.last_event_time = Some(Utc::now()); s.lag_seconds = 0.0; });
                    self.sync.replace_table(rows);
                    self.sync.apply(BatchKind::FullRead, &self.state).await?;
                    if self.fallback_may_stream(fell_back).await {
                        return Ok(SessionEnd::StreamingPossible);
                    }
                }
                ctl = self.control.recv() => match ctl {
                    Some(Control::Resync(hub)) => {
                        self.sync.set_hub(*hub);
                        self.sync.apply(BatchKind::Forms, &self.state).await?
                    }
                    None => return Ok(SessionEnd::Stopped),
                },
            }
        }
    }

    /// Whether an Auto hub that fell back to polling can stream now: re-checked after every poll, so
    /// fixing a grant or a server setting takes effect without touching the hub.
    async fn fallback_may_stream(&self, fell_back: bool) -> bool {
        if !fell_back || self.mode != ChangeCaptureMode::Auto {
            return false;
        }
        match self.database.streaming_blocker().await {
            Ok(None) => true,
            Ok(Some(reason)) => {
                tracing::debug!(hub = %self.key, %reason, "still polling: streaming is not possible");
                false
            }
            Err(e) => {
                tracing::debug!(hub = %self.key, error = %e, "still polling: the streaming check failed");
                false
            }
        }
    }

    /// Streams from the checkpoint (or a new snapshot), with a full resync every interval.
    async fn stream(&mut self) -> Result<SessionEnd, SessionError> {
        let forced = self.force_snapshot;
        let mut stream = self.database.open_stream(self.checkpoint.as_ref(), forced.is_some()).await?;
        self.force_snapshot = None;
        self.snapshot_reason = forced;
        let resumed = !stream.starts_with_snapshot();
        tracing::debug!(hub = %self.key, resumed, "change stream open");
        let note = stream.source_note();
        if let Some((text, true)) = &note {
            self.sync.note_publication_created(text).await;
        }
        self.set_state(|s| {
            s.mode = Some(CaptureModeInUse::Streaming);
            s.message = note.map(|(text, _)| text);
            s.connected = true;
            if resumed {
                s.start = Some(CaptureStart::Resumed);
            }
        });
        if resumed {
            // The replay from the checkpoint only carries rows that changed since; a view without the
            // others would delete their nodes. The table as it is now is the base the replay applies
            // to: a replayed change replaces the read's (newer) image of its row, and the stream then
            // brings every row back to its latest state.
            let rows = self.database.read_table().await?;
            tracing::debug!(hub = %self.key, rows = rows.len(), "read the table as the base of the replay");
            self.sync.replace_table_as_replay_base(rows);
            self.sync.connected(&self.state).await;
        }
        let start = tokio::time::Instant::now() + self.interval;
        let mut resync = tokio::time::interval_at(start, self.interval);
        // Checkpoint writes are rate-limited; this persists the last one that was held back.
        let mut flush = tokio::time::interval(super::sync::STATUS_INTERVAL);
        let end = loop {
            tokio::select! {
                event = stream.next_event() => {
                    match self.handle(event?).await {
                        Ok(position) => {
                            // Only after the hub applied it: a crash before this point replays, never loses.
                            stream.ack(&position);
                            self.checkpoint_moved(position).await;
                        }
                        Err(e) => break Err(e),
                    }
                }
                // Compared with a view that has no read yet, every row would look divergent.
                _ = resync.tick(), if self.sync.table_loaded() => {
                    let rows = match self.database.read_table().await {
                        Ok(rows) => rows,
                        Err(e) => break Err(e.into()),
                    };
                    let divergences = self.sync.divergence_kinds(&rows);
                    self.metrics.resync(&divergences);
                    if divergences.total() > 0 {
                        break Err(SessionError::Diverged(divergences.total()));
                    }
                    // The read agrees with the stream: it is a full read for the deletion guard
                    // (only a full read can confirm or cancel a held mass deletion).
                    if let Err(e) = self.sync.apply(BatchKind::FullRead, &self.state).await {
                        break Err(e.into());
                    }
                }
                _ = flush.tick() => {
                    if let Err(e) = self.sync.tick(&self.state).await {
                        break Err(e.into());
                    }
                    self.sample_source_position().await;
                }
                ctl = self.control.recv() => match ctl {
                    Some(Control::Resync(hub)) => {
                        self.sync.set_hub(*hub);
                        if let Err(e) = self.sync.apply(BatchKind::Forms, &self.state).await { break Err(e.into()) }
                    }
                    None => break Ok(SessionEnd::Stopped),
                },
            }
        };
        stream.close().await;
        end
    }

    /// Applies one event; returns the position it leaves the hub at.
    async fn handle(&mut self, event: SourceEvent) -> Result<Position, SessionError> {
        let position = match event {
            SourceEvent::Snapshot(snapshot) => {
                let reason = self.snapshot_reason.take().unwrap_or(snapshot.reason);
                self.set_state(|s| s.start = Some(CaptureStart::Snapshot(reason)));
                self.metrics.snapshot(reason);
                self.sync.note_snapshot(reason).await;
                self.sync.replace_table(snapshot.rows);
                self.sync.apply(BatchKind::FullRead, &self.state).await?;
                snapshot.position
            }
            SourceEvent::Transaction(tx) => {
                self.sync.apply_changes(&tx.changes);
                let kind = if tx.changes.iter().any(|c| matches!(c, RowChange::Truncate)) {
                    BatchKind::Truncate
                } else {
                    BatchKind::Transaction
                };
                self.metrics.transaction_started(tx.commit_time);
                self.sync.set_commit_time(tx.commit_time);
                let applied = self.sync.apply(kind, &self.state).await;
                self.sync.set_commit_time(None);
                applied?;
                self.metrics.transaction_applied(&tx.changes, tx.commit_time, Utc::now());
                let lag = tx.commit_time.map(|t| (Utc::now() - t).num_milliseconds() as f64 / 1000.0).unwrap_or(0.0);
                self.set_state(|s| {
                    s.last_event_time = Some(Utc::now());
                    s.lag_seconds = lag.max(0.0);
                });
                tx.position
            }
            SourceEvent::Heartbeat { position } => {
                self.set_state(|s| s.lag_seconds = 0.0);
                position
            }
        };
        Ok(position)
    }

    /// Samples how far the applied position is behind the server (a query, so at most every
    /// [`crate::metrics::hub::SAMPLE_INTERVAL`], never per event).
    async fn sample_source_position(&self) {
        if !self.metrics.sample_due() {
            return;
        }
        match &self.database {
            Database::Postgres(pg) => match pg.slot_health().await {
                Ok(Some(h)) => self.metrics.source_position(h.behind_bytes, h.retained_wal_bytes),
                Ok(None) => {}
                Err(e) => tracing::debug!(hub = %self.key, error = %e, "sampling the slot failed"),
            },
            Database::Mysql(my) => {
                let Some(position) = &self.checkpoint else { return };
                match my.binlog_bytes_behind(position).await {
                    Ok(behind) => self.metrics.source_position(behind.map(|b| b as i64), None),
                    Err(e) => tracing::debug!(hub = %self.key, error = %e, "sampling the binlog position failed"),
                }
            }
        }
    }

    /// Records the new checkpoint (persisted in the hub's status, rate-limited).
    async fn checkpoint_moved(&mut self, position: Position) {
        self.checkpoint = Some(position.clone());
        self.set_state(|s| s.position = Some(position));
        self.sync.checkpoint_moved(&self.state).await;
    }
}

fn new_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(60))
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(start: Option<CaptureStart>, message: Option<&str>) -> CaptureState {
        CaptureState { start, message: message.map(str::to_owned), ..CaptureState::default() }
    }

    #[test]
    fn the_capture_condition_says_how_the_capture_started() {
        assert_eq!(capture_condition(&state(None, None)), None);
        let resumed = capture_condition(&state(Some(CaptureStart::Resumed), None)).expect("condition");
        assert_eq!((resumed.0, resumed.1), (true, "Resumed"));
        for (reason, expected) in [
            (SnapshotReason::Initial, "InitialSnapshot"),
            (SnapshotReason::PositionPurged, "PositionPurged"),
            (SnapshotReason::SlotMissing, "SlotMissing"),
            (SnapshotReason::SlotInvalidated, "SlotInvalidated"),
            (SnapshotReason::Resync, "Diverged"),
        ] {
            let c = capture_condition(&state(Some(CaptureStart::Snapshot(reason)), None)).expect("condition");
            assert_eq!(c.1, expected);
            assert!(c.2.starts_with("Streaming from a new consistent snapshot"), "{}", c.2);
        }
        let polling = capture_condition(&state(Some(CaptureStart::Polling), None)).expect("condition");
        assert_eq!(polling.1, "Polling");
        let fallback =
            capture_condition(&state(Some(CaptureStart::Polling), Some("no REPLICATION SLAVE"))).expect("condition");
        assert_eq!(fallback.1, "StreamingUnavailable");
        assert!(fallback.2.contains("no REPLICATION SLAVE"));
    }

    #[test]
    fn the_condition_does_not_move_with_the_position() {
        let mut s = state(Some(CaptureStart::Resumed), None);
        let before = capture_condition(&s);
        s.position = Some(Position::Binlog { file: "binlog.000002".into(), pos: 4, gtid: None });
        assert_eq!(capture_condition(&s), before);
    }

    #[test]
    fn checkpoints_round_trip_through_the_status() {
        for position in
            [Position::Binlog { file: "binlog.000007".into(), pos: 1234, gtid: None }, Position::Lsn(0x1_0000_00AB)]
        {
            let mut hub = LynqHub::new("h", Default::default());
            hub.status = Some(crate::api::LynqHubStatus {
                change_capture: Some(crate::api::ChangeCaptureStatus {
                    position: Some(position_status(&position)),
                    ..Default::default()
                }),
                ..Default::default()
            });
            assert_eq!(checkpoint_from_status(&hub), Some(position));
        }
    }
}
