//! The binlog stream: one replication connection, decoded into [`SourceEvent`]s.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::{Stream, StreamExt};
use mysql_async::binlog::events::{Event, EventData, RowsEventData};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn};

use super::schema::{ColumnSelector, InfoColumn, TableColumns};
use super::tracker::{
    BinlogItem, MARIADB_COMPRESSED_EVENTS, MARIADB_GTID_EVENT, StatementEffect, TableFilter, Tracker,
    format_mysql_gtid, parse_mariadb_gtid, rotate_target,
};
use super::{MysqlSource, MysqlSourceError};
use crate::source::{Position, RowChange, SourceEvent};

/// MariaDB: send GTID/GTID_LIST/BINLOG_CHECKPOINT as-is instead of rewriting them for old replicas
/// (MARIA_SLAVE_CAPABILITY_GTID), like go-mysql and Vitess do.
const MARIADB_SLAVE_CAPABILITY: u8 = 4;
/// A missed heartbeat is normal jitter; three in a row mean the connection is dead.
const DEADLINE_HEARTBEATS: u32 = 3;

impl MysqlSource {
    /// Streams committed transactions of the hub's table from `from` (a transaction boundary,
    /// e.g. a snapshot position or the last applied position).
    ///
    /// The stream owns one replication connection. It ends after yielding its first error; the
    /// caller decides whether to reconnect ([`MysqlSourceError::is_retryable`]) or to snapshot
    /// first ([`MysqlSourceError::needs_snapshot`]).
    pub fn stream(&self, from: Position) -> impl Stream<Item = Result<SourceEvent, MysqlSourceError>> + Send + 'static {
        let start = State::Start { source: self.clone(), from };
        futures::stream::unfold(start, |state| async move { step(state).await })
    }

    async fn open_stream(&self, from: Position) -> Result<Running, MysqlSourceError> {
        let c = &self.inner.config;
        let ctx = &self.inner.ctx;
        let Position::Binlog { file, pos, gtid } = from else {
            return Err(ctx.protocol("starting the binlog stream", "the start position is not a binlog position"));
        };
        if pos > u64::from(u32::MAX) {
            // COM_BINLOG_DUMP carries a 32-bit offset.
            return Err(MysqlSourceError::PositionUnavailable {
                target: ctx.target.clone(),
                file,
                pos,
                message: "offset beyond 4 GiB cannot be requested".into(),
            });
        }
        let info = self.info_schema().await?;
        let filter = TableFilter::new(&c.database, &c.table, self.case_insensitive_names().await?);
        let mut conn = Conn::new(self.inner.opts.clone()).await.map_err(|e| ctx.stream(&file, pos, c.server_id, e))?;
        for sql in session_setup(c.heartbeat) {
            conn.query_drop(sql).await.map_err(|e| ctx.stream(&file, pos, c.server_id, e))?;
        }
        let request = BinlogStreamRequest::new(c.server_id).with_filename(file.as_bytes()).with_pos(pos);
        let binlog = conn.get_binlog_stream(request).await.map_err(|e| ctx.stream(&file, pos, c.server_id, e))?;
        Ok(Running {
            source: self.clone(),
            binlog,
            tracker: Tracker::new(file, pos, gtid, c.heartbeat),
            filter,
            selector: ColumnSelector::new(&c.columns),
            info,
            tables: HashMap::new(),
            queue: VecDeque::new(),
            deadline: c.heartbeat * DEADLINE_HEARTBEATS,
        })
    }
}

/// Session variables the dump thread reads. Both checksum spellings are set because MySQL 8.4
/// reads `@source_binlog_checksum` and older servers `@master_binlog_checksum`; an unused user
/// variable is harmless.
fn session_setup(heartbeat: Duration) -> Vec<String> {
    let period_ns = heartbeat.as_nanos().max(1);
    vec![
        format!("SET @mariadb_slave_capability = {MARIADB_SLAVE_CAPABILITY}"),
        format!("SET @master_heartbeat_period = {period_ns}"),
        "SET @master_binlog_checksum = 'ALL'".to_owned(),
        "SET @source_binlog_checksum = 'ALL'".to_owned(),
    ]
}

enum State {
    Start { source: MysqlSource, from: Position },
    Running(Box<Running>),
    Done,
}

type Step = Option<(Result<SourceEvent, MysqlSourceError>, State)>;

async fn step(state: State) -> Step {
    let mut running = match state {
        State::Done => return None,
        State::Start { source, from } => match source.open_stream(from).await {
            Ok(r) => Box::new(r),
            Err(e) => return Some((Err(e), State::Done)),
        },
        State::Running(r) => r,
    };
    loop {
        if let Some(event) = running.queue.pop_front() {
            return Some((Ok(event), State::Running(running)));
        }
        if let Err(e) = running.next_event().await {
            let _ = running.binlog.close().await;
            return Some((Err(e), State::Done));
        }
    }
}

struct Running {
    source: MysqlSource,
    binlog: BinlogStream,
    tracker: Tracker,
    filter: TableFilter,
    selector: ColumnSelector,
    info: Vec<InfoColumn>,
    /// Column layouts of the hub's table by TABLE_MAP id.
    tables: HashMap<u64, TableColumns>,
    queue: VecDeque<SourceEvent>,
    deadline: Duration,
}

impl Running {
    /// Reads one server event and queues what it produces.
    async fn next_event(&mut self) -> Result<(), MysqlSourceError> {
        let inner = &self.source.inner;
        let next = tokio::time::timeout(self.deadline, self.binlog.next()).await;
        let event = match next {
            Err(_) => {
                return Err(MysqlSourceError::ReadTimeout { target: inner.ctx.target.clone(), after: self.deadline });
            }
            Ok(None) => {
                let (file, pos) = (self.tracker.file().to_owned(), self.tracker.pos());
                return Err(MysqlSourceError::StreamEnded { target: inner.ctx.target.clone(), file, pos });
            }
            Ok(Some(Err(e))) => {
                return Err(inner.ctx.stream(self.tracker.file(), self.tracker.pos(), inner.config.server_id, e));
            }
            Ok(Some(Ok(event))) => event,
        };
        let (item, effect) = self.classify(&event)?;
        let out = self.tracker.on_item(item, Utc::now(), Instant::now());
        self.queue.extend(out.events);
        if effect == StatementEffect::Replaced {
            let (file, pos) = (self.tracker.file().to_owned(), self.tracker.pos());
            return Err(MysqlSourceError::TableReplaced { table: self.table_name(), file, pos });
        }
        if out.refresh_schema {
            self.info = self.source.info_schema().await?;
        }
        Ok(())
    }

    fn table_name(&self) -> String {
        let c = &self.source.inner.config;
        format!("{}.{}", c.database, c.table)
    }

    fn decode_error(&self, event: &Event, detail: String) -> MysqlSourceError {
        MysqlSourceError::Decode {
            file: self.tracker.file().to_owned(),
            pos: u64::from(event.header().log_pos()),
            table: self.table_name(),
            detail,
        }
    }

    /// Turns a server event into a tracker item (and the statement effect, for RENAME handling).
    fn classify(&mut self, event: &Event) -> Result<(BinlogItem, StatementEffect), MysqlSourceError> {
        let header = event.header();
        let type_code = header.event_type_raw();
        let log_pos = u64::from(header.log_pos());
        let timestamp = header.timestamp();
        if MARIADB_COMPRESSED_EVENTS.contains(&type_code) {
            let detail = format!("compressed event type {type_code} (log_bin_compress=ON) cannot be decoded");
            return Err(self.decode_error(event, detail));
        }
        if type_code == MARIADB_GTID_EVENT {
            let item = parse_mariadb_gtid(event.data(), header.server_id())
                .map(|(gtid, standalone)| BinlogItem::Gtid { gtid, standalone })
                .ok_or_else(|| self.decode_error(event, "short MariaDB GTID event".into()))?;
            return Ok((item, StatementEffect::None));
        }
        let data = event.read_data().map_err(|e| self.decode_error(event, e.to_string()))?;
        let item = match data {
            Some(EventData::RotateEvent(r)) => BinlogItem::Rotate {
                name: rotate_target(r.name_raw(), header.flags_raw(), self.tracker.before_first_fde()),
                pos: r.position(),
            },
            Some(EventData::FormatDescriptionEvent(_)) => BinlogItem::FormatDescription,
            Some(EventData::TableMapEvent(tme)) => {
                self.table_map(event, &tme)?;
                BinlogItem::Other
            }
            Some(EventData::RowsEvent(rows)) => self.rows(event, &rows)?,
            Some(EventData::XidEvent(_)) => BinlogItem::Commit { log_pos, timestamp },
            Some(EventData::QueryEvent(q)) => {
                let query = q.query();
                match query.trim().to_ascii_uppercase().as_str() {
                    "BEGIN" => BinlogItem::Begin,
                    "COMMIT" => BinlogItem::Commit { log_pos, timestamp },
                    "ROLLBACK" => BinlogItem::Rollback { log_pos },
                    _ => {
                        let effect = self.filter.statement_effect(&q.schema(), &query);
                        return Ok((BinlogItem::Statement { effect, log_pos, timestamp }, effect));
                    }
                }
            }
            Some(EventData::HeartbeatEvent) => BinlogItem::Heartbeat { log_pos },
            // MySQL GTIDs carry no "standalone" flag; a following BEGIN opens the transaction,
            // otherwise the single DDL statement is the group.
            Some(EventData::GtidEvent(g)) => {
                BinlogItem::Gtid { gtid: format_mysql_gtid(g.sid(), g.gno()), standalone: true }
            }
            _ => BinlogItem::Other,
        };
        Ok((item, StatementEffect::None))
    }

    fn table_map(
        &mut self,
        event: &Event,
        tme: &mysql_async::binlog::events::TableMapEvent<'_>,
    ) -> Result<(), MysqlSourceError> {
        if !self.filter.matches(&tme.database_name(), &tme.table_name()) {
            // Table ids are reused after eviction from the server's table cache.
            self.tables.remove(&tme.table_id());
            return Ok(());
        }
        let columns = TableColumns::from_table_map(tme, &self.info).map_err(|d| self.decode_error(event, d))?;
        self.tables.insert(tme.table_id(), columns);
        Ok(())
    }

    fn rows(&self, event: &Event, rows: &RowsEventData<'_>) -> Result<BinlogItem, MysqlSourceError> {
        let Some(columns) = self.tables.get(&rows.table_id()) else {
            return Ok(BinlogItem::Other);
        };
        let Some(tme) = self.binlog.get_tme(rows.table_id()) else {
            return Err(self.decode_error(event, format!("no TABLE_MAP for table id {}", rows.table_id())));
        };
        let mut changes = Vec::new();
        for pair in rows.rows(tme) {
            let (before, after) = pair.map_err(|e| self.decode_error(event, e.to_string()))?;
            let image = |r: Option<mysql_async::binlog::row::BinlogRow>| {
                r.map(|r| columns.to_row(&r, &self.selector)).transpose()
            };
            let before = image(before).map_err(|e| self.decode_error(event, e.to_string()))?;
            let after = image(after).map_err(|e| self.decode_error(event, e.to_string()))?;
            match (before, after) {
                (None, Some(after)) => changes.push(RowChange::Insert { after }),
                (Some(before), Some(after)) => changes.push(RowChange::Update { before: Some(before), after }),
                (Some(before), None) => changes.push(RowChange::Delete { before }),
                (None, None) => {}
            }
        }
        Ok(BinlogItem::Rows(changes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_setup_sets_capability_heartbeat_and_both_checksum_names() {
        let sql = session_setup(Duration::from_millis(1500));
        assert!(sql.contains(&"SET @mariadb_slave_capability = 4".to_owned()));
        assert!(sql.contains(&"SET @master_heartbeat_period = 1500000000".to_owned()));
        assert!(sql.iter().any(|s| s.contains("@master_binlog_checksum")));
        assert!(sql.iter().any(|s| s.contains("@source_binlog_checksum")));
    }
}
