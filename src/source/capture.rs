//! One interface over both databases, so that the hub never branches on MySQL vs PostgreSQL:
//! read the table (polling, resync), tell whether streaming is possible and why not, and open a
//! change stream that starts with a snapshot when there is no usable checkpoint.

use std::pin::Pin;

use futures::{Stream, StreamExt};

use super::{
    Position, Row, Snapshot, SnapshotReason, SourceEvent,
    mysql::{MysqlSource, MysqlSourceError, StreamingBlocker},
    postgres::{PostgresError, PostgresSource, PostgresStream},
};

/// A failure of either source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// MySQL/MariaDB.
    #[error(transparent)]
    Mysql(#[from] MysqlSourceError),
    /// PostgreSQL.
    #[error(transparent)]
    Postgres(#[from] PostgresError),
    /// The stream ended without an error (the server closed it); reconnect.
    #[error("the change stream ended")]
    Ended,
    /// The streaming prerequisites could not be checked (the server is unreachable); retry later
    /// rather than decide the mode on a failed check.
    #[error("{0}")]
    CheckFailed(String),
}

impl SourceError {
    /// Worth retrying with backoff from the last applied position.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Mysql(e) => e.is_retryable(),
            Self::Postgres(e) => e.is_retryable(),
            Self::Ended | Self::CheckFailed(_) => true,
        }
    }

    /// Only a new snapshot is exact after this error (purged position, replaced table).
    pub fn needs_snapshot(&self) -> bool {
        match self {
            Self::Mysql(e) => e.needs_snapshot(),
            Self::Postgres(_) | Self::Ended | Self::CheckFailed(_) => false,
        }
    }
}

/// A hub's database.
pub enum Database {
    /// MySQL or MariaDB.
    Mysql(MysqlSource),
    /// PostgreSQL (boxed: its config is much larger than MySQL's pool handle).
    Postgres(Box<PostgresSource>),
}

impl Database {
    /// Every row of the table (the polling read and the periodic resync).
    pub async fn read_table(&self) -> Result<Vec<Row>, SourceError> {
        Ok(match self {
            Self::Mysql(s) => s.read_table().await?,
            Self::Postgres(s) => s.read_table().await?,
        })
    }

    /// None when the server allows streaming; otherwise every reason it does not, in words a user can act on.
    pub async fn streaming_blocker(&self) -> Result<Option<String>, SourceError> {
        match self {
            Self::Mysql(s) => {
                let support = s.check_streaming().await;
                if support.blockers.iter().any(|b| matches!(b, StreamingBlocker::CheckFailed(_))) {
                    // An unreachable server says nothing about its privileges: never fall back on it.
                    return Err(SourceError::CheckFailed(support.to_string()));
                }
                Ok((!support.is_supported()).then(|| support.to_string()))
            }
            Self::Postgres(s) => match s.streaming_checks().await {
                Ok(()) => Ok(None),
                Err(e) if e.is_retryable() => Err(e.into()),
                Err(e) => Ok(Some(e.to_string())),
            },
        }
    }

    /// Opens the change stream: from `checkpoint` when the server still has it, else from a new
    /// consistent snapshot, which is then the stream's first event.
    pub async fn open_stream(
        &self,
        checkpoint: Option<&Position>,
        force_snapshot: bool,
    ) -> Result<EventStream, SourceError> {
        match self {
            Self::Mysql(s) => {
                let resumable = match checkpoint {
                    Some(pos @ Position::Binlog { .. }) if !force_snapshot => s.position_available(pos).await?,
                    _ => false,
                };
                if resumable && let Some(pos) = checkpoint {
                    return Ok(EventStream::Mysql { pending: None, stream: s.stream(pos.clone()).boxed() });
                }
                let reason =
                    if checkpoint.is_some() { SnapshotReason::PositionPurged } else { SnapshotReason::Initial };
                let snapshot = s.snapshot(reason).await?;
                let stream = s.stream(snapshot.position.clone()).boxed();
                Ok(EventStream::Mysql { pending: Some(snapshot), stream })
            }
            Self::Postgres(s) => {
                Ok(EventStream::Postgres(Box::new(s.start(checkpoint.is_some() && !force_snapshot).await?)))
            }
        }
    }
}

type MysqlEvents = Pin<Box<dyn Stream<Item = Result<SourceEvent, MysqlSourceError>> + Send>>;

/// An open change stream.
pub enum EventStream {
    /// A binlog stream, with the snapshot it started from still to deliver.
    Mysql {
        /// Snapshot to hand out first.
        pending: Option<Snapshot>,
        /// The binlog events.
        stream: MysqlEvents,
    },
    /// A logical replication stream (boxed: it holds the relation cache and client state).
    Postgres(Box<PostgresStream>),
}

impl EventStream {
    /// What the status should say about the stream's set-up (PostgreSQL: which publication, and
    /// whether lynq just created it).
    pub fn source_note(&self) -> Option<(String, bool)> {
        match self {
            Self::Mysql { .. } => None,
            Self::Postgres(stream) => Some((stream.publication_note(), stream.publication().created_now)),
        }
    }

    /// Whether the stream starts with a new snapshot (otherwise it resumed from the checkpoint).
    pub fn starts_with_snapshot(&self) -> bool {
        match self {
            Self::Mysql { pending, .. } => pending.is_some(),
            Self::Postgres(stream) => stream.snapshot_reason().is_some(),
        }
    }

    /// The next event: the snapshot first (if one was taken), then transactions and heartbeats.
    pub async fn next_event(&mut self) -> Result<SourceEvent, SourceError> {
        match self {
            Self::Mysql { pending, stream } => {
                if let Some(snapshot) = pending.take() {
                    return Ok(SourceEvent::Snapshot(snapshot));
                }
                match stream.next().await {
                    Some(event) => Ok(event?),
                    None => Err(SourceError::Ended),
                }
            }
            Self::Postgres(stream) => Ok(stream.next_event().await?),
        }
    }

    /// Everything up to `position` is applied: PostgreSQL may release the WAL (MySQL keeps its
    /// checkpoint in the hub's status instead).
    pub fn ack(&self, position: &Position) {
        if let (Self::Postgres(stream), Position::Lsn(lsn)) = (self, position) {
            stream.ack(*lsn);
        }
    }

    /// Closes the stream cleanly (PostgreSQL sends its last acknowledgement).
    pub async fn close(self) {
        if let Self::Postgres(stream) = self
            && let Err(e) = (*stream).shutdown().await
        {
            tracing::debug!(error = %e, "closing the replication stream");
        }
    }
}
