//! Pure binlog bookkeeping: positions, GTIDs, transaction boundaries and DDL on the hub's table.
//!
//! The async driver turns each server event into a [`BinlogItem`] (row events already filtered to
//! the hub's table and rendered), and the [`Tracker`] turns items into [`SourceEvent`]s. Keeping it
//! free of I/O makes every boundary rule unit-testable.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::source::{Position, RowChange, SourceEvent, SourceTransaction};

/// `LOG_EVENT_ARTIFICIAL_F`: the server made this event up (e.g. the ROTATE that opens a dump).
pub(crate) const ARTIFICIAL_FLAG: u16 = 0x20;
/// MariaDB GTID event (`GTID_EVENT`, not known to mysql_common).
pub(crate) const MARIADB_GTID_EVENT: u8 = 162;
/// MariaDB GTID flag: the group is a single statement with no COMMIT/XID (DDL).
const MARIADB_FL_STANDALONE: u8 = 1;
/// MariaDB compressed QUERY/ROWS events (`log_bin_compress=ON`); mysql_common cannot read them.
pub(crate) const MARIADB_COMPRESSED_EVENTS: std::ops::RangeInclusive<u8> = 165..=171;

/// One server event, reduced to what position tracking and grouping need.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum BinlogItem {
    /// ROTATE. `name` is `None` when it must not be trusted (artificial, before the first FDE).
    Rotate { name: Option<String>, pos: u64 },
    /// FORMAT_DESCRIPTION: from here on, event names and checksums are reliable.
    FormatDescription,
    /// GTID event: starts a group. `standalone` groups end with their single statement.
    Gtid { gtid: String, standalone: bool },
    /// Row changes of the hub's table (already filtered and rendered).
    Rows(Vec<RowChange>),
    /// XID, or QUERY `COMMIT`: ends a transaction.
    Commit { log_pos: u64, timestamp: u32 },
    /// QUERY `BEGIN`.
    Begin,
    /// QUERY `ROLLBACK` (non-transactional groups): the group's changes never happened.
    Rollback { log_pos: u64 },
    /// Any other statement: DDL, or statements the server logs as text.
    Statement { effect: StatementEffect, log_pos: u64, timestamp: u32 },
    /// HEARTBEAT: the server is idle at `log_pos`.
    Heartbeat { log_pos: u64 },
    /// Anything else (TABLE_MAP, other tables' rows, ...): no bookkeeping.
    Other,
}

/// What a logged statement does to the hub's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StatementEffect {
    /// Does not name the table.
    None,
    /// TRUNCATE or DROP of the table: every row is gone.
    Truncate,
    /// Other DDL naming the table (ALTER, CREATE, DROP INDEX): the column layout may have changed.
    SchemaChange,
    /// RENAME of the table: another table may now carry its name; only a new snapshot is exact.
    Replaced,
}

/// What the driver must do besides emitting events.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Output {
    /// Events for the hub, in order.
    pub events: Vec<SourceEvent>,
    /// Re-read information_schema before decoding further rows.
    pub refresh_schema: bool,
}

/// Position and transaction state of one binlog stream.
#[derive(Debug)]
pub(crate) struct Tracker {
    file: String,
    pos: u64,
    gtid: Option<String>,
    seen_fde: bool,
    in_group: bool,
    standalone: bool,
    pending_gtid: Option<String>,
    pending: Vec<RowChange>,
    heartbeat: Duration,
    last_emit: Option<Instant>,
}

impl Tracker {
    /// Starts at `file:pos` (a transaction boundary); `heartbeat` rate-limits position-only events.
    pub fn new(file: String, pos: u64, gtid: Option<String>, heartbeat: Duration) -> Self {
        Self {
            file,
            pos,
            gtid,
            seen_fde: false,
            in_group: false,
            standalone: false,
            pending_gtid: None,
            pending: Vec::new(),
            heartbeat,
            last_emit: None,
        }
    }

    /// The last committed position.
    pub fn position(&self) -> Position {
        Position::Binlog { file: self.file.clone(), pos: self.pos, gtid: self.gtid.clone() }
    }

    /// The last committed offset in [`Tracker::file`].
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// The current binlog file (for error messages).
    pub fn file(&self) -> &str {
        &self.file
    }

    /// True before the first FORMAT_DESCRIPTION of this connection.
    pub fn before_first_fde(&self) -> bool {
        !self.seen_fde
    }

    /// Feeds one item; `now` is when it was received.
    pub fn on_item(&mut self, item: BinlogItem, received_at: DateTime<Utc>, now: Instant) -> Output {
        let mut out = Output::default();
        match item {
            BinlogItem::Rotate { name, pos } => self.rotate(name, pos),
            BinlogItem::FormatDescription => self.seen_fde = true,
            BinlogItem::Gtid { gtid, standalone } => {
                self.in_group = true;
                self.standalone = standalone;
                self.pending_gtid = Some(gtid);
                self.pending.clear();
            }
            BinlogItem::Begin => {
                self.in_group = true;
                self.standalone = false;
                self.pending.clear();
            }
            BinlogItem::Rows(changes) => self.pending.extend(changes),
            BinlogItem::Commit { log_pos, timestamp } => {
                let changes = std::mem::take(&mut self.pending);
                self.commit(changes, log_pos, timestamp, received_at, now, &mut out);
            }
            BinlogItem::Rollback { log_pos } => {
                self.pending.clear();
                self.commit(Vec::new(), log_pos, 0, received_at, now, &mut out);
            }
            BinlogItem::Statement { effect, log_pos, timestamp } => {
                self.statement(effect, log_pos, timestamp, received_at, now, &mut out)
            }
            BinlogItem::Heartbeat { log_pos } => self.heartbeat(log_pos, now, &mut out),
            BinlogItem::Other => {}
        }
        out
    }

    fn rotate(&mut self, name: Option<String>, pos: u64) {
        if let Some(name) = name
            && name != self.file
        {
            self.file = name;
            // A new file starts after its header; the rotate's own position is where to resume.
            self.pos = pos;
        }
    }

    fn statement(
        &mut self,
        effect: StatementEffect,
        log_pos: u64,
        timestamp: u32,
        received_at: DateTime<Utc>,
        now: Instant,
        out: &mut Output,
    ) {
        out.refresh_schema = effect != StatementEffect::None;
        // Statements inside an open (non-standalone) transaction do not end it.
        if self.in_group && !self.standalone {
            if effect == StatementEffect::Truncate {
                self.pending.push(RowChange::Truncate);
            }
            return;
        }
        // A statement outside a transaction (or a standalone GTID group) is a whole group:
        // any rows before it belonged to an earlier group that is already committed.
        let changes = if effect == StatementEffect::Truncate { vec![RowChange::Truncate] } else { Vec::new() };
        self.pending.clear();
        self.commit(changes, log_pos, timestamp, received_at, now, out);
    }

    fn commit(
        &mut self,
        changes: Vec<RowChange>,
        log_pos: u64,
        timestamp: u32,
        received_at: DateTime<Utc>,
        now: Instant,
        out: &mut Output,
    ) {
        self.in_group = false;
        self.standalone = false;
        if log_pos > 0 {
            self.pos = log_pos;
        }
        if let Some(gtid) = self.pending_gtid.take() {
            self.gtid = Some(gtid);
        }
        if changes.is_empty() {
            self.position_only(now, out);
            return;
        }
        self.last_emit = Some(now);
        out.events.push(SourceEvent::Transaction(SourceTransaction {
            position: self.position(),
            commit_time: DateTime::from_timestamp(i64::from(timestamp), 0).filter(|_| timestamp > 0),
            received_at,
            changes,
        }));
    }

    fn heartbeat(&mut self, log_pos: u64, now: Instant, out: &mut Output) {
        // Idle server: everything up to log_pos was sent. Inside a group, only the last commit counts.
        if !self.in_group && log_pos > self.pos {
            self.pos = log_pos;
        }
        self.last_emit = Some(now);
        out.events.push(SourceEvent::Heartbeat { position: self.position() });
    }

    /// After a group that did not touch the table: report progress at most once per heartbeat
    /// period, so a checkpoint advances on a busy server without flooding the hub.
    fn position_only(&mut self, now: Instant, out: &mut Output) {
        let due = self.last_emit.is_none_or(|t| now.duration_since(t) >= self.heartbeat);
        if due {
            self.last_emit = Some(now);
            out.events.push(SourceEvent::Heartbeat { position: self.position() });
        }
    }
}

/// The file a ROTATE moves to, or `None` when its name must be ignored: the artificial ROTATE that
/// opens a dump arrives before the FDE, so its name still carries the 4 CRC bytes.
pub(crate) fn rotate_target(raw_name: &[u8], flags: u16, before_first_fde: bool) -> Option<String> {
    if flags & ARTIFICIAL_FLAG != 0 && before_first_fde {
        return None;
    }
    Some(String::from_utf8_lossy(raw_name).into_owned())
}

/// MariaDB GTID event body: `seq_no u64 LE | domain_id u32 LE | flags u8`; returns
/// (`domain-server-seq`, standalone).
pub(crate) fn parse_mariadb_gtid(body: &[u8], server_id: u32) -> Option<(String, bool)> {
    let seq = u64::from_le_bytes(body.get(0..8)?.try_into().ok()?);
    let domain = u32::from_le_bytes(body.get(8..12)?.try_into().ok()?);
    let flags = body.get(12).copied().unwrap_or(0);
    Some((format!("{domain}-{server_id}-{seq}"), flags & MARIADB_FL_STANDALONE != 0))
}

/// MySQL GTID `uuid:gno`.
pub(crate) fn format_mysql_gtid(sid: [u8; 16], gno: u64) -> String {
    let hex: String = sid.iter().map(|b| format!("{b:02x}")).collect();
    let part = |r: std::ops::Range<usize>| hex.get(r).unwrap_or("");
    format!("{}-{}-{}-{}-{}:{gno}", part(0..8), part(8..12), part(12..16), part(16..20), part(20..32))
}

/// The hub's table, as binlog events name it.
#[derive(Clone, Debug)]
pub(crate) struct TableFilter {
    database: String,
    table: String,
    case_insensitive: bool,
}

impl TableFilter {
    /// `case_insensitive` mirrors `lower_case_table_names != 0`.
    pub fn new(database: &str, table: &str, case_insensitive: bool) -> Self {
        Self { database: database.to_owned(), table: table.to_owned(), case_insensitive }
    }

    /// True when a TABLE_MAP's `db.table` is the hub's table.
    pub fn matches(&self, database: &str, table: &str) -> bool {
        if self.case_insensitive {
            self.database.eq_ignore_ascii_case(database) && self.table.eq_ignore_ascii_case(table)
        } else {
            self.database == database && self.table == table
        }
    }

    /// What a logged statement (run with default schema `schema`) does to the table.
    pub fn statement_effect(&self, schema: &str, query: &str) -> StatementEffect {
        let words = sql_words(query);
        let keyword = words.first().map(String::as_str).unwrap_or("");
        if !matches!(keyword, "truncate" | "drop" | "alter" | "rename" | "create") {
            return StatementEffect::None;
        }
        let second = words.get(1).map(|w| w.to_ascii_lowercase()).unwrap_or_default();
        if keyword == "drop" && (second == "database" || second == "schema") {
            let same = |a: &str| {
                if self.case_insensitive { a.eq_ignore_ascii_case(&self.database) } else { a == self.database }
            };
            let named =
                words.iter().skip(2).find(|w| !w.eq_ignore_ascii_case("if") && !w.eq_ignore_ascii_case("exists"));
            return if named.is_some_and(|w| same(w)) { StatementEffect::Truncate } else { StatementEffect::None };
        }
        if !self.named_in(schema, &words) {
            return StatementEffect::None;
        }
        let renames = keyword == "rename" || words.iter().any(|w| w.eq_ignore_ascii_case("rename"));
        match keyword {
            "truncate" => StatementEffect::Truncate,
            "drop" if second == "table" => StatementEffect::Truncate,
            _ if renames => StatementEffect::Replaced,
            _ => StatementEffect::SchemaChange,
        }
    }

    /// True when `words` reference the table as `db.table`, or bare while `schema` is its database.
    fn named_in(&self, schema: &str, words: &[String]) -> bool {
        let same = |a: &str, b: &str| {
            if self.case_insensitive { a.eq_ignore_ascii_case(b) } else { a == b }
        };
        let in_schema = same(schema, &self.database);
        words
            .windows(3)
            .any(|w| matches!(w, [db, dot, t] if dot == "." && same(db, &self.database) && same(t, &self.table)))
            || (in_schema
                && words.iter().enumerate().any(|(i, w)| {
                    same(w, &self.table)
                        && words.get(i.wrapping_sub(1)).is_none_or(|p| p != ".")
                        && words.get(i + 1).is_none_or(|n| n != ".")
                }))
    }
}

/// Splits SQL into identifiers (unquoted ones lowercased only for the leading keyword check),
/// backtick-quoted identifiers and `.`; string literals and comments are skipped.
fn sql_words(query: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = query.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '`' => {
                let mut w = String::new();
                while let Some(c) = chars.next() {
                    if c == '`' {
                        if chars.peek() == Some(&'`') {
                            chars.next();
                            w.push('`');
                        } else {
                            break;
                        }
                    } else {
                        w.push(c);
                    }
                }
                words.push(w);
            }
            '\'' | '"' => {
                while let Some(n) = chars.next() {
                    if n == '\\' {
                        chars.next();
                    } else if n == c {
                        break;
                    }
                }
            }
            '.' => words.push(".".to_owned()),
            '/' if chars.peek() == Some(&'*') => {
                let mut prev = ' ';
                for n in chars.by_ref() {
                    if prev == '*' && n == '/' {
                        break;
                    }
                    prev = n;
                }
            }
            c if c.is_alphanumeric() || c == '_' || c == '$' => {
                let mut w = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_alphanumeric() || n == '_' || n == '$' {
                        w.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                words.push(w);
            }
            _ => {}
        }
    }
    if let Some(first) = words.first_mut() {
        *first = first.to_ascii_lowercase();
    }
    if let Some(second) = words.get_mut(1)
        && second.eq_ignore_ascii_case("table")
    {
        *second = "table".to_owned();
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{ColumnValue, Row};

    const HB: Duration = Duration::from_secs(1);

    fn row(uid: &str) -> Row {
        Row::from([("uid".to_owned(), ColumnValue::Text(uid.to_owned()))])
    }

    fn feed(t: &mut Tracker, items: Vec<BinlogItem>) -> Vec<SourceEvent> {
        let now = Instant::now();
        items.into_iter().flat_map(|i| t.on_item(i, Utc::now(), now).events).collect()
    }

    fn pos(file: &str, p: u64, gtid: Option<&str>) -> Position {
        Position::Binlog { file: file.into(), pos: p, gtid: gtid.map(str::to_owned) }
    }

    #[test]
    fn multi_row_transaction_is_one_source_transaction_at_xid() {
        let mut t = Tracker::new("binlog.000001".into(), 4, None, HB);
        let events = feed(
            &mut t,
            vec![
                BinlogItem::Gtid { gtid: "0-1-7".into(), standalone: false },
                BinlogItem::Other,
                BinlogItem::Rows(vec![RowChange::Insert { after: row("a") }]),
                BinlogItem::Rows(vec![RowChange::Delete { before: row("b") }]),
                BinlogItem::Commit { log_pos: 900, timestamp: 1_700_000_000 },
            ],
        );
        let [SourceEvent::Transaction(tx)] = events.as_slice() else { panic!("{events:?}") };
        assert_eq!(tx.changes.len(), 2);
        assert_eq!(tx.position, pos("binlog.000001", 900, Some("0-1-7")));
        assert_eq!(tx.commit_time.map(|c| c.timestamp()), Some(1_700_000_000));
    }

    #[test]
    fn unrelated_commits_report_progress_rate_limited() {
        let mut t = Tracker::new("f".into(), 4, None, HB);
        let start = Instant::now();
        let commit = |p| BinlogItem::Commit { log_pos: p, timestamp: 1 };
        let first = t.on_item(commit(100), Utc::now(), start).events;
        assert_eq!(first, vec![SourceEvent::Heartbeat { position: pos("f", 100, None) }]);
        assert!(t.on_item(commit(200), Utc::now(), start).events.is_empty());
        let later = t.on_item(commit(300), Utc::now(), start + HB).events;
        assert_eq!(later, vec![SourceEvent::Heartbeat { position: pos("f", 300, None) }]);
        assert_eq!(t.position(), pos("f", 300, None));
    }

    #[test]
    fn rotate_moves_to_new_file_and_heartbeat_reports_position() {
        let mut t = Tracker::new("binlog.000001".into(), 4, None, HB);
        let events = feed(
            &mut t,
            vec![
                BinlogItem::Rotate { name: None, pos: 4 },
                BinlogItem::FormatDescription,
                BinlogItem::Rotate { name: Some("binlog.000002".into()), pos: 4 },
                BinlogItem::Heartbeat { log_pos: 385 },
            ],
        );
        assert_eq!(events, vec![SourceEvent::Heartbeat { position: pos("binlog.000002", 385, None) }]);
    }

    #[test]
    fn heartbeat_inside_a_group_keeps_the_committed_position() {
        let mut t = Tracker::new("f".into(), 50, None, HB);
        let events = feed(&mut t, vec![BinlogItem::Begin, BinlogItem::Heartbeat { log_pos: 900 }]);
        assert_eq!(events, vec![SourceEvent::Heartbeat { position: pos("f", 50, None) }]);
    }

    #[test]
    fn truncate_statement_is_its_own_transaction() {
        let mut t = Tracker::new("f".into(), 4, None, HB);
        let mut out =
            t.on_item(BinlogItem::Gtid { gtid: "0-1-9".into(), standalone: true }, Utc::now(), Instant::now());
        assert!(out.events.is_empty());
        out = t.on_item(
            BinlogItem::Statement { effect: StatementEffect::Truncate, log_pos: 700, timestamp: 5 },
            Utc::now(),
            Instant::now(),
        );
        assert!(out.refresh_schema);
        let [SourceEvent::Transaction(tx)] = out.events.as_slice() else { panic!("{:?}", out.events) };
        assert_eq!(tx.changes, vec![RowChange::Truncate]);
        assert_eq!(tx.position, pos("f", 700, Some("0-1-9")));
    }

    #[test]
    fn rollback_discards_pending_rows() {
        let mut t = Tracker::new("f".into(), 4, None, HB);
        let events = feed(
            &mut t,
            vec![
                BinlogItem::Begin,
                BinlogItem::Rows(vec![RowChange::Insert { after: row("a") }]),
                BinlogItem::Rollback { log_pos: 80 },
            ],
        );
        assert!(events.iter().all(|e| matches!(e, SourceEvent::Heartbeat { .. })));
        assert_eq!(t.position(), pos("f", 80, None));
    }

    #[test]
    fn first_artificial_rotate_name_is_ignored() {
        assert_eq!(rotate_target(b"binlog.000001\x12\x34\x56\x78", 0x20, true), None);
        assert_eq!(rotate_target(b"binlog.000002", 0x20, false), Some("binlog.000002".into()));
        assert_eq!(rotate_target(b"binlog.000002", 0, true), Some("binlog.000002".into()));
    }

    #[test]
    fn mariadb_gtid_body_is_parsed() {
        let mut body = 42u64.to_le_bytes().to_vec();
        body.extend(3u32.to_le_bytes());
        body.push(0x08);
        assert_eq!(parse_mariadb_gtid(&body, 1), Some(("3-1-42".into(), false)));
        body[12] = 0x09;
        assert_eq!(parse_mariadb_gtid(&body, 7), Some(("3-7-42".into(), true)));
        assert_eq!(parse_mariadb_gtid(&body[..11], 1), None);
        let mut no_flags = 5u64.to_le_bytes().to_vec();
        no_flags.extend(0u32.to_le_bytes());
        assert_eq!(parse_mariadb_gtid(&no_flags, 2), Some(("0-2-5".into(), false)));
    }

    #[test]
    fn mysql_gtid_is_uuid_and_number() {
        let sid = [0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42, 0x95, 0x62];
        assert_eq!(format_mysql_gtid(sid, 23), "3e11fa47-71ca-11e1-9e33-c80aa9429562:23");
    }

    #[test]
    fn table_filter_matches_exact_database_and_table() {
        let f = TableFilter::new("app", "tenants", false);
        assert!(f.matches("app", "tenants"));
        assert!(!f.matches("other", "tenants"));
        assert!(!f.matches("app", "Tenants"));
        assert!(TableFilter::new("app", "tenants", true).matches("APP", "Tenants"));
    }

    #[test]
    fn statements_are_classified_for_the_table() {
        let f = TableFilter::new("app", "tenants", false);
        assert_eq!(f.statement_effect("app", "TRUNCATE TABLE tenants"), StatementEffect::Truncate);
        assert_eq!(f.statement_effect("x", "truncate `app`.`tenants`"), StatementEffect::Truncate);
        assert_eq!(
            f.statement_effect("app", "DROP TABLE `tenants` /* generated by server */"),
            StatementEffect::Truncate
        );
        assert_eq!(f.statement_effect("app", "ALTER TABLE tenants ADD COLUMN x INT"), StatementEffect::SchemaChange);
        assert_eq!(f.statement_effect("app", "RENAME TABLE tenants TO t2"), StatementEffect::Replaced);
        assert_eq!(f.statement_effect("app", "ALTER TABLE t2 RENAME TO tenants"), StatementEffect::Replaced);
        assert_eq!(f.statement_effect("x", "DROP DATABASE IF EXISTS `app`"), StatementEffect::Truncate);
        assert_eq!(f.statement_effect("x", "DROP DATABASE other"), StatementEffect::None);
        assert_eq!(f.statement_effect("other", "TRUNCATE TABLE tenants"), StatementEffect::None);
        assert_eq!(f.statement_effect("app", "TRUNCATE TABLE other.tenants"), StatementEffect::None);
        assert_eq!(f.statement_effect("app", "TRUNCATE TABLE tenants_old"), StatementEffect::None);
        assert_eq!(f.statement_effect("app", "DROP INDEX i ON tenants"), StatementEffect::SchemaChange);
        assert_eq!(f.statement_effect("app", "INSERT INTO tenants VALUES ('tenants')"), StatementEffect::None);
        assert_eq!(f.statement_effect("app", "CREATE TABLE x (c varchar(9) default 'tenants')"), StatementEffect::None);
    }
}
