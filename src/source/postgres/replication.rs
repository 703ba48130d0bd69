//! The walsender side: slot + snapshot handoff, resume, slot drop, and the running stream.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use pgwire_replication::{Lsn, QueryRow, ReplicationClient, ReplicationConfig};

use super::error::{Context, PostgresError, from_pgwire, sqlstate_in};
use super::names::quote_ident;
use super::sql::{self, PublicationStatus, SlotInfo};
use super::stream::{Step, StreamState};
use super::{PostgresConfig, SESSION_OPTIONS};
use crate::source::{Position, Row, Snapshot, SnapshotReason, SourceEvent};

/// How often the client reports the acknowledged position to the server.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// A running change stream of the hub's table.
pub struct PostgresStream {
    client: ReplicationClient,
    state: StreamState,
    config: PostgresConfig,
    snapshot: Option<Snapshot>,
    snapshot_reason: Option<SnapshotReason>,
    publication: PublicationStatus,
    /// Highest position the hub acknowledged (or that needed no apply).
    acked: AtomicU64,
    /// Position of the last transaction handed to the hub.
    delivered: u64,
}

impl PostgresStream {
    /// The next event: first the snapshot (when one was taken), then transactions and heartbeats.
    pub async fn next_event(&mut self) -> Result<SourceEvent, PostgresError> {
        if let Some(snapshot) = self.snapshot.take() {
            self.note_delivered(&snapshot.position);
            return Ok(SourceEvent::Snapshot(snapshot));
        }
        loop {
            let ctx = self.config.context("streaming changes");
            let event = self
                .client
                .recv()
                .await
                .map_err(|e| from_pgwire(ctx, e))?
                .ok_or_else(|| PostgresError::StreamEnded { slot: self.config.slot_name.clone() })?;
            match self.state.on_event(event, Utc::now())? {
                Step::Emit(event) => {
                    if let SourceEvent::Transaction(tx) = &event {
                        self.note_delivered(&tx.position);
                    }
                    return Ok(event);
                }
                Step::Idle(wal_end) => {
                    self.ack_if_caught_up(wal_end);
                    return Ok(SourceEvent::Heartbeat { position: Position::Lsn(wal_end) });
                }
                Step::Skipped(end_lsn) => self.ack_if_caught_up(end_lsn),
                Step::Nothing => {}
            }
        }
    }

    /// The hub applied everything up to `lsn` (a snapshot's, transaction's or heartbeat's
    /// position): the server may release WAL before it. Sent within the 1 s status interval.
    /// Acknowledge every snapshot and transaction once applied: idle heartbeats are only
    /// acknowledged automatically while nothing delivered is left unacknowledged.
    pub fn ack(&self, lsn: u64) {
        let previous = self.acked.fetch_max(lsn, Ordering::AcqRel);
        if lsn > previous {
            self.client.update_applied_lsn(Lsn(lsn));
        }
    }

    /// The highest acknowledged position.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Acquire)
    }

    /// Why the stream started with a snapshot, if it did.
    pub fn snapshot_reason(&self) -> Option<SnapshotReason> {
        self.snapshot_reason
    }

    /// Whether lynq created the publication, now or before (only then the finalizer drops it).
    pub fn publication(&self) -> PublicationStatus {
        self.publication
    }

    /// Which publication the stream reads and who made it, in words for the hub's status.
    pub fn publication_note(&self) -> String {
        let name = &self.config.publication_name;
        let table = self.config.qualified_table_name();
        match (self.publication.created_now, self.publication.owned_by_lynq) {
            (true, _) => format!("created publication {name} for table {table}; it is dropped with the hub"),
            (false, true) => format!("streaming from publication {name}, created by lynq; it is dropped with the hub"),
            (false, false) => format!("streaming from the existing publication {name}"),
        }
    }

    /// Stop streaming and close the walsender session.
    pub async fn shutdown(mut self) -> Result<(), PostgresError> {
        let ctx = self.config.context("closing the replication stream");
        self.client.shutdown().await.map_err(|e| from_pgwire(ctx, e))
    }

    fn note_delivered(&mut self, position: &Position) {
        if let Position::Lsn(lsn) = position {
            self.delivered = self.delivered.max(*lsn);
        }
    }

    /// Idle positions are acknowledged only when every delivered transaction was applied, so
    /// an unapplied transaction is never skipped over.
    fn ack_if_caught_up(&self, lsn: u64) {
        if self.acked() >= self.delivered {
            self.ack(lsn);
        }
    }
}

/// Start streaming: checks, publication, then resume from the slot or take a new snapshot.
pub(crate) async fn open(config: &PostgresConfig, resume: bool) -> Result<PostgresStream, PostgresError> {
    let client = sql::connect(config).await?;
    sql::check_streaming(config, &client).await?;
    let publication = sql::ensure_publication(config, &client).await?;
    sql::check_replica_identity(config, &client).await?;
    let slot = sql::inspect_slot(config, &client).await?;
    let reason = prepare_slot(config, &client, slot, resume).await?;
    let (replication, snapshot) = match reason {
        None => match resume_stream(config).await {
            Ok(replication) => (replication, None),
            Err(PostgresError::SlotMissing { .. }) => snapshot_stream(config, SnapshotReason::SlotMissing).await?,
            Err(PostgresError::SlotInvalidated { .. }) => {
                drop_slot(config).await?;
                snapshot_stream(config, SnapshotReason::SlotInvalidated).await?
            }
            Err(e) => return Err(e),
        },
        Some(reason) => snapshot_stream(config, reason).await?,
    };
    let snapshot_reason = snapshot.as_ref().map(|s| s.reason);
    Ok(PostgresStream {
        client: replication,
        state: StreamState::new(config),
        config: config.clone(),
        snapshot,
        snapshot_reason,
        publication,
        acked: AtomicU64::new(0),
        delivered: 0,
    })
}

/// Decide between resuming (None) and a new snapshot, clearing the way for either.
async fn prepare_slot(
    config: &PostgresConfig,
    client: &tokio_postgres::Client,
    slot: Option<SlotInfo>,
    resume: bool,
) -> Result<Option<SnapshotReason>, PostgresError> {
    let Some(slot) = slot else {
        return Ok(Some(if resume { SnapshotReason::SlotMissing } else { SnapshotReason::Initial }));
    };
    check_slot_kind(config, &slot)?;
    if let Some(pid) = slot.active_pid {
        sql::release_slot(config, client, pid).await?;
    }
    let lost = slot.wal_status.as_deref() == Some("lost");
    if lost || !resume {
        // Without a checkpoint the hub has no state matching the slot: start over.
        drop_slot(config).await?;
        return Ok(Some(if lost { SnapshotReason::SlotInvalidated } else { SnapshotReason::Initial }));
    }
    Ok(None)
}

/// A slot of the configured name that is not a pgoutput slot of this database is not lynq's.
fn check_slot_kind(config: &PostgresConfig, slot: &SlotInfo) -> Result<(), PostgresError> {
    let plugin_ok = slot.plugin.as_deref() == Some("pgoutput");
    let database_ok = slot.database.as_deref() == Some(config.database.as_str());
    if plugin_ok && database_ok {
        return Ok(());
    }
    Err(PostgresError::InvalidConfig(format!(
        "replication slot {} exists but is not a pgoutput slot of database {} (plugin {:?}, database {:?}); choose another slot name",
        config.slot_name, config.database, slot.plugin, slot.database
    )))
}

fn replication_config(config: &PostgresConfig) -> ReplicationConfig {
    ReplicationConfig::new(
        config.host.clone(),
        config.username.clone(),
        config.password.clone(),
        config.database.clone(),
        config.slot_name.clone(),
        // The option value is an identifier list: quote so case and punctuation survive.
        quote_ident(&config.publication_name),
    )
    .with_port(config.port)
    .with_tls(super::tls::replication_tls(config))
    .with_options(SESSION_OPTIONS)
    .with_status_interval(STATUS_INTERVAL)
    .with_application_name("lynq")
    .with_start_lsn(Lsn(0))
}

/// START_REPLICATION from the slot's confirmed position.
async fn resume_stream(config: &PostgresConfig) -> Result<ReplicationClient, PostgresError> {
    let ctx = config.context("starting replication");
    let mut client = ReplicationClient::connect(replication_config(config)).await.map_err(|e| from_pgwire(ctx, e))?;
    client.wait_started().await.map_err(|e| from_pgwire(ctx, e))?;
    Ok(client)
}

/// Create the slot, read the table in the slot's snapshot, then start streaming from it.
async fn snapshot_stream(
    config: &PostgresConfig,
    reason: SnapshotReason,
) -> Result<(ReplicationClient, Option<Snapshot>), PostgresError> {
    let ctx = config.context("connecting for replication");
    let mut client =
        ReplicationClient::connect_gated(replication_config(config)).await.map_err(|e| from_pgwire(ctx, e))?;
    let (position, rows) = match create_slot_and_read(config, &mut client).await {
        Ok(read) => read,
        Err(e) => return Err(discard_half_made_slot(config, client, e).await),
    };
    let ctx = config.context("starting replication");
    client.start().await.map_err(|e| from_pgwire(ctx, e))?;
    client.wait_started().await.map_err(|e| from_pgwire(ctx, e))?;
    tracing::info!(slot = %config.slot_name, reason = reason.as_str(), rows = rows.len(), position, "snapshot taken");
    let snapshot = Snapshot { rows, position: Position::Lsn(position), reason };
    Ok((client, Some(snapshot)))
}

/// BEGIN; CREATE_REPLICATION_SLOT … (SNAPSHOT 'use'); SELECT …; COMMIT — verified on PG 15.
async fn create_slot_and_read(
    config: &PostgresConfig,
    client: &mut ReplicationClient,
) -> Result<(u64, Vec<Row>), PostgresError> {
    gated(config, client, "starting the snapshot transaction", "BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ")
        .await?;
    let create = format!("CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT 'use')", config.slot_name);
    let created = tokio::time::timeout(
        config.slot_create_timeout,
        gated(config, client, "creating the replication slot", &create),
    )
    .await
    .map_err(|_| PostgresError::SlotCreateTimeout {
        slot: config.slot_name.clone(),
        seconds: config.slot_create_timeout.as_secs(),
    })??;
    let position = consistent_point(config, &created)?;
    let rows = snapshot_rows(config, client).await?;
    gated(config, client, "ending the snapshot transaction", "COMMIT").await?;
    Ok((position, rows))
}

async fn snapshot_rows(config: &PostgresConfig, client: &mut ReplicationClient) -> Result<Vec<Row>, PostgresError> {
    let booleans = snapshot_query(config, client, &sql::boolean_columns_statement(config)).await?;
    let boolean_columns: Vec<String> = booleans
        .into_iter()
        .map(|row| text_values(config, row))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter_map(|values| values.into_iter().next().flatten())
        .collect();
    let rows = snapshot_query(config, client, &sql::select_statement(config)).await?;
    let columns = config.read_columns();
    let mut rows: Vec<Row> = rows
        .into_iter()
        .map(|row| text_values(config, row).map(|values| sql::build_row(&columns, values)))
        .collect::<Result<_, _>>()?;
    sql::normalize_booleans(&mut rows, &boolean_columns);
    Ok(rows)
}

async fn snapshot_query(
    config: &PostgresConfig,
    client: &mut ReplicationClient,
    statement: &str,
) -> Result<Vec<QueryRow>, PostgresError> {
    let ctx = config.context("reading the snapshot");
    client.simple_query(statement).await.map_err(|e| match e {
        pgwire_replication::PgWireError::Server(text) => {
            let code = sqlstate_in(&text).unwrap_or_default();
            sql::read_server_error(config, ctx, &code, &text)
        }
        other => from_pgwire(ctx, other),
    })
}

fn text_values(config: &PostgresConfig, row: QueryRow) -> Result<Vec<Option<String>>, PostgresError> {
    row.into_iter()
        .map(|value| {
            value
                .map(|bytes| {
                    String::from_utf8(bytes.to_vec()).map_err(|e| PostgresError::Protocol {
                        during: "reading the snapshot",
                        detail: format!("{} value is not UTF-8: {e}", config.qualified_table_name()),
                    })
                })
                .transpose()
        })
        .collect()
}

/// The `consistent_point` column of CREATE_REPLICATION_SLOT's result.
fn consistent_point(config: &PostgresConfig, rows: &[QueryRow]) -> Result<u64, PostgresError> {
    let protocol = |detail: String| PostgresError::Protocol { during: "creating the replication slot", detail };
    let text = rows
        .first()
        .and_then(|row| row.get(1))
        .and_then(|value| value.as_ref())
        .ok_or_else(|| protocol(format!("no consistent_point for slot {}", config.slot_name)))?;
    let text = String::from_utf8_lossy(text);
    Lsn::parse(&text).map(|lsn| lsn.0).map_err(|e| protocol(e.to_string()))
}

async fn gated(
    config: &PostgresConfig,
    client: &mut ReplicationClient,
    during: &'static str,
    statement: &str,
) -> Result<Vec<QueryRow>, PostgresError> {
    client.simple_query(statement).await.map_err(|e| from_pgwire(config.context(during), e))
}

/// A slot created without a delivered snapshot must not survive: resuming from it would skip
/// the rows the snapshot should have carried.
async fn discard_half_made_slot(
    config: &PostgresConfig,
    client: ReplicationClient,
    error: PostgresError,
) -> PostgresError {
    // Ending the session releases the slot so it can be dropped.
    drop(client);
    if let Err(drop_error) = drop_slot(config).await {
        tracing::warn!(slot = %config.slot_name, error = %drop_error, "could not drop the slot of a failed snapshot");
    }
    error
}

/// DROP_REPLICATION_SLOT … WAIT on a walsender session; false when the slot did not exist.
pub(crate) async fn drop_slot(config: &PostgresConfig) -> Result<bool, PostgresError> {
    let ctx = config.context("connecting to drop the replication slot");
    let mut client =
        ReplicationClient::connect_gated(replication_config(config)).await.map_err(|e| from_pgwire(ctx, e))?;
    let statement = format!("DROP_REPLICATION_SLOT {} WAIT", config.slot_name);
    let dropped = tokio::time::timeout(
        config.slot_create_timeout,
        gated(config, &mut client, "dropping the replication slot", &statement),
    )
    .await;
    match dropped {
        Ok(Ok(_)) => Ok(true),
        Ok(Err(PostgresError::SlotMissing { .. })) => Ok(false),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(PostgresError::SlotInUse {
            slot: config.slot_name.clone(),
            holder: format!(
                "still active after {}s of DROP_REPLICATION_SLOT … WAIT",
                config.slot_create_timeout.as_secs()
            ),
        }),
    }
}

impl PostgresConfig {
    /// Error context for an operation on this source.
    pub(crate) fn context(&self, during: &'static str) -> Context<'_> {
        Context { during, config: self }
    }
}
