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
        Position, RowChange, SourceEvent,
        capture::{Database, SourceError},
    },
};

/// What the hub controller can ask of a running hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Forms (or the hub's nodes) changed: recompute the desired set.
    Resync,
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
    /// Asks the runner to recompute the desired set.
    pub fn resync(&self) {
        let _ = self.control.send(Control::Resync);
    }

    /// Stops the task (its source connections close as it is dropped).
    pub fn stop(self) {
        self.task.abort();
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
        force_snapshot: false,
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
    force_snapshot: bool,
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

impl Runner {
    async fn run(mut self) {
        let mut backoff = new_backoff();
        loop {
            let result = self.session().await;
            match result {
                Ok(SessionEnd::Stopped) => return,
                Ok(SessionEnd::StreamingPossible) => {
                    tracing::info!(hub = %self.key, "streaming is possible now; switching from polling");
                }
                Err(SessionError::Diverged(n)) => {
                    tracing::warn!(hub = %self.key, divergences = n, "stream diverged from the table; re-snapshotting");
                    self.force_snapshot = true;
                }
                Err(e) => {
                    if let SessionError::Source(source) = &e
                        && source.needs_snapshot()
                    {
                        self.force_snapshot = true;
                    }
                    self.set_state(|s| {
                        s.connected = false;
                        s.message = Some(e.to_string());
                    });
                    self.sync.report_source_error(&e.to_string()).await;
                    let delay = backoff.next().unwrap_or(Duration::from_secs(60));
                    tracing::warn!(hub = %self.key, error = %e, retry_in = ?delay, "hub source failed");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        ctl = self.control.recv() => if ctl.is_none() { return },
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
        }
    }

    /// One connected session: decides the mode, then streams or polls until an error or a stop.
    async fn session(&mut self) -> Result<SessionEnd, SessionError> {
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
        });
        let mut ticker = tokio::time::interval(self.interval);
        loop {
            tokio::select! {
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
                    Some(Control::Resync) => self.sync.apply(BatchKind::Forms, &self.state).await?,
                    None => return Ok(SessionEnd::Stopped),
                },
            }
        }
    }

    /// Whether an Auto hub that fell back to polling can stream now: re-checked after every poll, so
    /// fixing a grant or a server setting takes effect without touching the hub.
    async fn fallback_may_stream(&self, fell_back: bool) -> bool {
        fell_back && self.mode == ChangeCaptureMode::Auto && matches!(self.database.streaming_blocker().await, Ok(None))
    }

    /// Streams from the checkpoint (or a new snapshot), with a full resync every interval.
    async fn stream(&mut self) -> Result<SessionEnd, SessionError> {
        let mut stream = self.database.open_stream(self.checkpoint.as_ref(), self.force_snapshot).await?;
        self.force_snapshot = false;
        self.set_state(|s| {
            s.mode = Some(CaptureModeInUse::Streaming);
            s.message = None;
            s.connected = true;
        });
        let start = tokio::time::Instant::now() + self.interval;
        let mut resync = tokio::time::interval_at(start, self.interval);
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
                _ = resync.tick() => {
                    let rows = match self.database.read_table().await {
                        Ok(rows) => rows,
                        Err(e) => break Err(e.into()),
                    };
                    let divergences = self.sync.divergences(&rows);
                    if divergences > 0 {
                        break Err(SessionError::Diverged(divergences));
                    }
                }
                ctl = self.control.recv() => match ctl {
                    Some(Control::Resync) => if let Err(e) = self.sync.apply(BatchKind::Forms, &self.state).await { break Err(e.into()) },
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
                self.sync.note_snapshot(snapshot.reason).await;
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
                self.sync.apply(kind, &self.state).await?;
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
