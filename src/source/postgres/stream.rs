//! Turns replication events into [`SourceEvent`]s: relation cache, table filter, transactions.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use pgwire_replication::ReplicationEvent;

use super::PostgresConfig;
use super::error::PostgresError;
use super::pgoutput::{self, OldTuple, PgOutputMessage, Relation, RelationColumn, ReplicaIdentity, TupleValue};
use super::sql::{BOOL_OID, boolean_text};
use crate::source::{ColumnValue, Position, Row, RowChange, SourceEvent, SourceTransaction};

/// Microseconds from the Unix epoch to PostgreSQL's epoch (2000-01-01 UTC).
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// What one replication event amounts to.
#[derive(Debug, PartialEq)]
pub(crate) enum Step {
    /// Hand this to the hub.
    Emit(SourceEvent),
    /// The server is idle at this position with no transaction open.
    Idle(u64),
    /// A transaction committed without touching the hub's table; nothing to apply up to here.
    Skipped(u64),
    /// Nothing to report.
    Nothing,
}

/// An open transaction's changes to the hub's table.
struct OpenTransaction {
    changes: Vec<RowChange>,
}

/// Decoding state of one replication session.
pub(crate) struct StreamState {
    schema: String,
    table: String,
    uid_column: String,
    columns: BTreeSet<String>,
    relations: HashMap<u32, Relation>,
    target: Option<u32>,
    open: Option<OpenTransaction>,
    config: PostgresConfig,
}

impl StreamState {
    /// State for the hub's table.
    pub(crate) fn new(config: &PostgresConfig) -> Self {
        Self {
            schema: config.schema.clone(),
            table: config.table.clone(),
            uid_column: config.uid_column.clone(),
            columns: config.read_columns().into_iter().collect(),
            relations: HashMap::new(),
            target: None,
            open: None,
            config: config.clone(),
        }
    }

    /// Advance by one event from the replication client.
    pub(crate) fn on_event(
        &mut self,
        event: ReplicationEvent,
        received_at: DateTime<Utc>,
    ) -> Result<Step, PostgresError> {
        match event {
            ReplicationEvent::KeepAlive { wal_end, .. } if self.open.is_none() => Ok(Step::Idle(wal_end.0)),
            ReplicationEvent::Begin { .. } => self.begin(),
            ReplicationEvent::Commit { end_lsn, commit_time_micros, .. } => {
                self.commit(end_lsn.0, commit_time_micros, received_at)
            }
            ReplicationEvent::XLogData { data, .. } => {
                let message = pgoutput::decode(&data)?;
                self.on_message(message, received_at)
            }
            _ => Ok(Step::Nothing),
        }
    }

    fn on_message(&mut self, message: PgOutputMessage, received_at: DateTime<Utc>) -> Result<Step, PostgresError> {
        match message {
            // pgwire-replication normally turns these into Begin/Commit events itself.
            PgOutputMessage::Begin(_) => self.begin(),
            PgOutputMessage::Commit(c) => self.commit(c.end_lsn, c.commit_time_us, received_at),
            PgOutputMessage::Relation(relation) => self.relation(relation),
            PgOutputMessage::Insert(insert) => {
                let Some(relation) = self.target_relation(insert.relation_id)? else {
                    return Ok(Step::Nothing);
                };
                let after = self.row(relation, &insert.new, false)?;
                self.push(RowChange::Insert { after })
            }
            PgOutputMessage::Update(update) => {
                let Some(relation) = self.target_relation(update.relation_id)? else {
                    return Ok(Step::Nothing);
                };
                let before = update.old.as_ref().map(|old| self.old_row(relation, old)).transpose()?;
                let after = self.row(relation, &update.new, false)?;
                self.push(RowChange::Update { before, after })
            }
            PgOutputMessage::Delete(delete) => {
                let Some(relation) = self.target_relation(delete.relation_id)? else {
                    return Ok(Step::Nothing);
                };
                let before = self.old_row(relation, &delete.old)?;
                self.push(RowChange::Delete { before })
            }
            PgOutputMessage::Truncate(truncate) => {
                let hits_target = self.target.is_some_and(|t| truncate.relation_ids.contains(&t));
                if hits_target { self.push(RowChange::Truncate) } else { Ok(Step::Nothing) }
            }
            PgOutputMessage::Origin(_) | PgOutputMessage::Type(_) | PgOutputMessage::Message(_) => Ok(Step::Nothing),
        }
    }

    fn begin(&mut self) -> Result<Step, PostgresError> {
        if self.open.is_some() {
            return Err(protocol("Begin while a transaction is open"));
        }
        self.open = Some(OpenTransaction { changes: Vec::new() });
        Ok(Step::Nothing)
    }

    fn commit(&mut self, end_lsn: u64, commit_time_us: i64, received_at: DateTime<Utc>) -> Result<Step, PostgresError> {
        let open = self.open.take().ok_or_else(|| protocol("Commit without Begin"))?;
        tracing::trace!(end_lsn, changes = open.changes.len(), "commit");
        if open.changes.is_empty() {
            return Ok(Step::Skipped(end_lsn));
        }
        Ok(Step::Emit(SourceEvent::Transaction(SourceTransaction {
            position: Position::Lsn(end_lsn),
            commit_time: pg_timestamp(commit_time_us),
            received_at,
            changes: open.changes,
        })))
    }

    fn relation(&mut self, relation: Relation) -> Result<Step, PostgresError> {
        let is_target = relation.namespace == self.schema && relation.name == self.table;
        tracing::trace!(id = relation.id, namespace = %relation.namespace, name = %relation.name, is_target, "relation");
        if is_target {
            self.check_relation(&relation)?;
            self.target = Some(relation.id);
        } else if self.target == Some(relation.id) {
            // Renamed or moved: it is no longer the configured table.
            self.target = None;
        }
        self.relations.insert(relation.id, relation);
        Ok(Step::Nothing)
    }

    /// The configured columns exist and the uid's old value will be sent.
    fn check_relation(&self, relation: &Relation) -> Result<(), PostgresError> {
        for column in &self.columns {
            if !relation.columns.iter().any(|c| &c.name == column) {
                return Err(PostgresError::ColumnMissing {
                    table: self.config.qualified_table_name(),
                    column: column.clone(),
                });
            }
        }
        let uid_in_key = relation.columns.iter().any(|c| c.key && c.name == self.uid_column);
        match relation.replica_identity {
            ReplicaIdentity::Full => Ok(()),
            ReplicaIdentity::Default | ReplicaIdentity::Index if uid_in_key => Ok(()),
            _ => Err(super::sql::replica_identity_error(&self.config)),
        }
    }

    fn target_relation(&self, relation_id: u32) -> Result<Option<&Relation>, PostgresError> {
        if self.target != Some(relation_id) {
            return Ok(None);
        }
        self.relations.get(&relation_id).map(Some).ok_or_else(|| protocol("row change before its Relation message"))
    }

    fn push(&mut self, change: RowChange) -> Result<Step, PostgresError> {
        let open = self.open.as_mut().ok_or_else(|| protocol("row change outside a transaction"))?;
        open.changes.push(change);
        Ok(Step::Nothing)
    }

    fn old_row(&self, relation: &Relation, old: &OldTuple) -> Result<Row, PostgresError> {
        match old {
            // A key tuple sends NULL for non-key columns; those NULLs are not real values.
            OldTuple::Key(values) => self.row(relation, values, true),
            OldTuple::Full(values) => self.row(relation, values, false),
        }
    }

    fn row(&self, relation: &Relation, values: &[TupleValue], key_only: bool) -> Result<Row, PostgresError> {
        if values.len() != relation.columns.len() {
            return Err(protocol(&format!(
                "tuple has {} columns but relation {}.{} has {}",
                values.len(),
                relation.namespace,
                relation.name,
                relation.columns.len()
            )));
        }
        let mut row = Row::new();
        for (column, value) in relation.columns.iter().zip(values) {
            if !self.columns.contains(&column.name) || (key_only && !column.key) {
                continue;
            }
            row.insert(column.name.clone(), column_value(column, value)?);
        }
        Ok(row)
    }
}

fn column_value(column: &RelationColumn, value: &TupleValue) -> Result<ColumnValue, PostgresError> {
    match value {
        TupleValue::Null => Ok(ColumnValue::Null),
        TupleValue::UnchangedToast => Ok(ColumnValue::Unchanged),
        TupleValue::Text(text) if column.type_oid == BOOL_OID => Ok(ColumnValue::Text(boolean_text(text.clone()))),
        TupleValue::Text(text) => Ok(ColumnValue::Text(text.clone())),
        TupleValue::Binary(_) => {
            Err(protocol(&format!("binary value for column {} although text format was requested", column.name)))
        }
    }
}

/// PostgreSQL timestamps are µs since 2000-01-01 UTC.
pub(crate) fn pg_timestamp(micros: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros.checked_add(PG_EPOCH_UNIX_MICROS)?)
}

fn protocol(detail: &str) -> PostgresError {
    PostgresError::Protocol { during: "decoding the replication stream", detail: detail.to_owned() }
}

#[cfg(test)]
mod tests {
    use pgwire_replication::Lsn;

    use super::super::pgoutput::test_bytes::*;
    use super::*;

    const REL: u32 = 16_384;

    fn config() -> PostgresConfig {
        PostgresConfig {
            schema: "app".into(),
            table: "tenants".into(),
            uid_column: "uid".into(),
            columns: vec!["name".into(), "big".into()],
            slot_name: "lynq_test".into(),
            publication_name: "lynq_test".into(),
            ..PostgresConfig::default()
        }
    }

    fn xlog(data: Vec<u8>) -> ReplicationEvent {
        ReplicationEvent::XLogData { wal_start: Lsn(0), wal_end: Lsn(0), server_time_micros: 0, data: data.into() }
    }

    fn begin() -> ReplicationEvent {
        ReplicationEvent::Begin { final_lsn: Lsn(0x100), xid: 7, commit_time_micros: 0 }
    }

    fn commit(end: u64) -> ReplicationEvent {
        ReplicationEvent::Commit { lsn: Lsn(end - 8), end_lsn: Lsn(end), commit_time_micros: 1_000_000 }
    }

    fn tenants(ident: u8, key: &[&str]) -> Vec<u8> {
        let cols = ["id", "uid", "name", "big", "extra"].map(|c| (key.contains(&c), c));
        relation(REL, "app", "tenants", ident, &cols)
    }

    fn run(state: &mut StreamState, events: Vec<ReplicationEvent>) -> Vec<Step> {
        let now = DateTime::from_timestamp(0, 0).unwrap_or_default();
        events
            .into_iter()
            .map(|e| state.on_event(e, now).expect("event accepted"))
            .filter(|s| *s != Step::Nothing)
            .collect()
    }

    fn text(pairs: &[(&str, &str)]) -> Row {
        pairs.iter().map(|(k, v)| (k.to_string(), ColumnValue::Text(v.to_string()))).collect()
    }

    fn transaction(steps: &[Step]) -> &SourceTransaction {
        match steps {
            [Step::Emit(SourceEvent::Transaction(tx))] => tx,
            other => panic!("expected one transaction, got {other:?}"),
        }
    }

    #[test]
    fn multi_row_transaction_becomes_one_source_transaction() {
        let mut state = StreamState::new(&config());
        let steps = run(
            &mut state,
            vec![
                begin(),
                xlog(tenants(b'd', &["uid"])),
                xlog(insert(REL, &[Some("1"), Some("a"), Some("A"), None, Some("x")])),
                xlog(insert(REL, &[Some("2"), Some("b"), Some("B"), None, Some("y")])),
                commit(0x200),
            ],
        );
        let tx = transaction(&steps);
        assert_eq!(tx.position, Position::Lsn(0x200));
        assert_eq!(tx.commit_time, DateTime::from_timestamp(946_684_801, 0));
        let mut first = text(&[("uid", "a"), ("name", "A")]);
        first.insert("big".into(), ColumnValue::Null);
        assert_eq!(tx.changes.len(), 2);
        assert_eq!(tx.changes[0], RowChange::Insert { after: first });
    }

    #[test]
    fn other_tables_are_filtered_and_empty_commits_are_skipped() {
        let mut state = StreamState::new(&config());
        let other = relation(99, "app", "other", b'd', &[(true, "id")]);
        let steps = run(&mut state, vec![begin(), xlog(other), xlog(insert(99, &[Some("1")])), commit(0x300)]);
        assert_eq!(steps, vec![Step::Skipped(0x300)]);
    }

    #[test]
    fn key_tuple_gives_only_key_columns_and_toast_stays_unchanged() {
        let mut state = StreamState::new(&config());
        let steps = run(
            &mut state,
            vec![
                begin(),
                xlog(tenants(b'i', &["uid"])),
                xlog(update(
                    REL,
                    Some((b'K', &[None, Some("old"), None, None, None])),
                    &[Some("1"), Some("new"), Some("N"), Some("\u{0}u"), None],
                )),
                xlog(delete(REL, b'K', &[None, Some("new"), None, None, None])),
                commit(0x400),
            ],
        );
        let tx = transaction(&steps);
        let mut after = text(&[("uid", "new"), ("name", "N")]);
        after.insert("big".into(), ColumnValue::Unchanged);
        assert_eq!(
            tx.changes,
            vec![
                RowChange::Update { before: Some(text(&[("uid", "old")])), after },
                RowChange::Delete { before: text(&[("uid", "new")]) },
            ]
        );
    }

    #[test]
    fn full_identity_old_row_and_truncate() {
        let mut state = StreamState::new(&config());
        let old = [Some("1"), Some("u"), Some("A"), Some("B"), None];
        let steps = run(
            &mut state,
            vec![
                begin(),
                xlog(tenants(b'f', &[])),
                xlog(update(REL, None, &old)),
                xlog(delete(REL, b'O', &old)),
                xlog(truncate(0, &[5, REL])),
                commit(0x500),
            ],
        );
        let tx = transaction(&steps);
        let full = text(&[("uid", "u"), ("name", "A"), ("big", "B")]);
        assert!(matches!(&tx.changes[0], RowChange::Update { before: None, after } if *after == full));
        assert_eq!(tx.changes[1], RowChange::Delete { before: full });
        assert_eq!(tx.changes[2], RowChange::Truncate);
    }

    #[test]
    fn keepalive_is_idle_only_outside_transactions() {
        let mut state = StreamState::new(&config());
        let keepalive =
            || ReplicationEvent::KeepAlive { wal_end: Lsn(0x900), reply_requested: false, server_time_micros: 0 };
        let steps = run(&mut state, vec![keepalive(), begin(), keepalive()]);
        assert_eq!(steps, vec![Step::Idle(0x900)]);
    }

    #[test]
    fn relation_without_uid_in_identity_is_a_replica_identity_error() {
        let now = Utc::now();
        for (ident, key) in [(b'd', "uid"), (b'i', "uid"), (b'f', "id")] {
            let mut state = StreamState::new(&config());
            assert!(state.on_event(xlog(tenants(ident, &[key])), now).is_ok());
        }
        for (ident, key) in [(b'd', "id"), (b'i', "name"), (b'n', "uid")] {
            let mut state = StreamState::new(&config());
            let err = state.on_event(xlog(tenants(ident, &[key])), now).unwrap_err();
            assert!(matches!(err, PostgresError::ReplicaIdentity { ref column, .. } if column == "uid"));
            assert!(err.to_string().contains("REPLICA IDENTITY FULL"), "{err}");
        }
    }

    #[test]
    fn missing_column_and_malformed_payload_are_errors() {
        let mut state = StreamState::new(&PostgresConfig { columns: vec!["absent".into()], ..config() });
        let err = state.on_event(xlog(tenants(b'f', &[])), Utc::now()).unwrap_err();
        assert!(matches!(err, PostgresError::ColumnMissing { ref column, .. } if column == "absent"));
        let mut state = StreamState::new(&config());
        let err = state.on_event(xlog(vec![b'I', 0, 0]), Utc::now()).unwrap_err();
        assert!(matches!(err, PostgresError::Decode(_)), "{err}");
    }

    #[test]
    fn pg_epoch_conversion() {
        assert_eq!(pg_timestamp(0), DateTime::from_timestamp(946_684_800, 0));
        assert_eq!(pg_timestamp(i64::MAX), None);
    }
}
