//! Row changes out of a database: MySQL/MariaDB binlog, PostgreSQL logical replication, or polling.
//!
//! Every source speaks the same small vocabulary: a consistent [`Snapshot`] of the hub's table,
//! then committed [`SourceTransaction`]s in commit order, each carrying the [`Position`] to resume
//! from once it has been applied. The hub consumes this and never looks at the database itself.

pub mod capture;
pub mod mysql;
pub mod postgres;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

/// One column value as the database's text protocol shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ColumnValue {
    /// SQL NULL (the hub maps it to "").
    Null,
    /// The value rendered as text, exactly as `SELECT` over the text protocol shows it.
    Text(String),
    /// PostgreSQL only: an unchanged TOASTed value that the stream did not resend; keep the previous one.
    Unchanged,
}

/// A row image: column name to value. Only the columns the source read are present.
pub type Row = BTreeMap<String, ColumnValue>;

/// One row-level change inside a committed transaction.
#[derive(Clone, Debug, PartialEq)]
pub enum RowChange {
    /// A new row.
    Insert { after: Row },
    /// A changed row; `before` is present when the source has the old image (binlog FULL, PG replica identity).
    Update { before: Option<Row>, after: Row },
    /// A removed row; `before` holds at least the key columns.
    Delete { before: Row },
    /// Every row of the table is gone (TRUNCATE); subject to the hub's deletion guard.
    Truncate,
}

/// Where a source stands in the server's change log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Position {
    /// MySQL/MariaDB binlog coordinates, plus the GTID of the transaction when the server reports one.
    Binlog { file: String, pos: u64, gtid: Option<String> },
    /// PostgreSQL log sequence number.
    Lsn(u64),
    /// A polling source has no log position.
    None,
}

/// A committed source transaction restricted to the hub's table, in commit order.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceTransaction {
    /// Position just after this transaction: resuming here never replays it.
    pub position: Position,
    /// Commit time reported by the server (second resolution on MariaDB), if any.
    pub commit_time: Option<DateTime<Utc>>,
    /// When lynq received the commit, for operator-side lag.
    pub received_at: DateTime<Utc>,
    /// Changes to the hub's table, in statement order.
    pub changes: Vec<RowChange>,
}

/// Why a source took a full snapshot of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotReason {
    /// First start without a checkpoint.
    Initial,
    /// The checkpointed binlog position is no longer on the server.
    PositionPurged,
    /// The PostgreSQL replication slot is missing.
    SlotMissing,
    /// The PostgreSQL replication slot was invalidated (WAL removed).
    SlotInvalidated,
    /// The periodic full resync (safety net while streaming, the only read while polling).
    Resync,
}

impl SnapshotReason {
    /// Stable label for metrics, events and condition reasons.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initial => "initial",
            Self::PositionPurged => "position_purged",
            Self::SlotMissing => "slot_missing",
            Self::SlotInvalidated => "slot_invalidated",
            Self::Resync => "resync",
        }
    }
}

/// A consistent read of the whole table and the position the stream continues from.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Every row of the table at `position`.
    pub rows: Vec<Row>,
    /// The change-log position that matches the read exactly.
    pub position: Position,
    /// Why it was taken.
    pub reason: SnapshotReason,
}

/// Everything a running source reports to its hub, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceEvent {
    /// A full consistent read; the hub replaces its desired set with it (deletion guard applies).
    Snapshot(Snapshot),
    /// A committed transaction touching the hub's table.
    Transaction(SourceTransaction),
    /// The server is alive and the source has seen everything up to `position` (no pending changes).
    Heartbeat { position: Position },
}
