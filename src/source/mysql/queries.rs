//! SQL-side operations: the polling/resync read, streaming prerequisites, snapshots and binlog
//! position checks.

use std::fmt;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row as SqlRow, Value};

use super::schema::{INFO_SCHEMA_SQL, InfoColumn};
use super::{MysqlSource, MysqlSourceError};
use crate::source::{ColumnValue, Position, Row, Snapshot, SnapshotReason};

/// Which server family is on the other end; the snapshot method differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerFlavor {
    /// MariaDB: lock-free `binlog_snapshot_*` status variables.
    MariaDb,
    /// Oracle MySQL (and Percona): short `LOCK TABLES … READ` around reading the binlog position.
    Mysql,
}

/// One reason the binlog cannot be streamed (the hub falls back to polling and reports it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamingBlocker {
    /// `log_bin` is OFF.
    BinaryLogDisabled,
    /// `binlog_format` is not ROW (value shown).
    BinlogFormat(String),
    /// `binlog_row_image` is not FULL (value shown).
    BinlogRowImage(String),
    /// MariaDB `log_bin_compress` is ON: compressed events cannot be decoded.
    BinlogCompressed,
    /// The user lacks a global privilege (named as the server spells it).
    MissingPrivilege(String),
    /// The configured table is a VIEW; views have no binlog rows.
    IsView,
    /// The table does not exist.
    TableMissing,
    /// The checks themselves failed.
    CheckFailed(String),
}

impl fmt::Display for StreamingBlocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BinaryLogDisabled => {
                write!(f, "binary logging is off (start the server with log_bin)")
            }
            Self::BinlogFormat(v) => write!(f, "binlog_format is {v}, ROW is required"),
            Self::BinlogRowImage(v) => write!(f, "binlog_row_image is {v}, FULL is required"),
            Self::BinlogCompressed => write!(f, "log_bin_compress is ON; compressed binlog events cannot be read"),
            Self::MissingPrivilege(p) => write!(f, "the user lacks the global {p} privilege"),
            Self::IsView => write!(f, "the table is a VIEW, which has no binlog rows"),
            Self::TableMissing => write!(f, "the table does not exist"),
            Self::CheckFailed(e) => write!(f, "the streaming checks failed: {e}"),
        }
    }
}

/// Whether the binlog of the hub's table can be streamed, and if not, every reason why.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamingSupport {
    /// Empty when streaming is possible.
    pub blockers: Vec<StreamingBlocker>,
}

impl StreamingSupport {
    /// True when nothing blocks streaming.
    pub fn is_supported(&self) -> bool {
        self.blockers.is_empty()
    }
}

impl fmt::Display for StreamingSupport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.blockers.is_empty() {
            return write!(f, "streaming supported");
        }
        let reasons: Vec<String> = self.blockers.iter().map(ToString::to_string).collect();
        write!(f, "{}", reasons.join("; "))
    }
}

/// Backtick-quotes an identifier (a backtick inside is doubled).
pub(crate) fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `SELECT `a`, `b` FROM `db`.`t`` (no WHERE/ORDER, like Lynq; works for views).
pub(crate) fn select_sql(database: &str, table: &str, columns: &[String]) -> String {
    let cols: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
    format!("SELECT {} FROM {}.{}", cols.join(", "), quote_ident(database), quote_ident(table))
}

/// A text-protocol value as [`ColumnValue`] (text protocol values are bytes or NULL).
fn column_value(value: Option<&Value>) -> ColumnValue {
    match value {
        None | Some(Value::NULL) => ColumnValue::Null,
        Some(Value::Bytes(b)) => ColumnValue::Text(String::from_utf8_lossy(b).into_owned()),
        Some(other) => ColumnValue::Text(other.as_sql(true).trim_matches('\'').to_owned()),
    }
}

/// A result row keyed by the configured column names.
fn to_row(row: &SqlRow, columns: &[String]) -> Row {
    columns.iter().enumerate().map(|(i, c)| (c.clone(), column_value(row.as_ref(i)))).collect()
}

/// The global privileges granted directly to the current user (`ON *.*`), uppercased.
pub(crate) fn global_privileges(grants: &[String]) -> Vec<String> {
    grants
        .iter()
        .filter_map(|g| {
            let g = g.trim();
            let rest = g.strip_prefix("GRANT ")?;
            let (privs, target) = rest.split_once(" ON ")?;
            target.trim_start().starts_with("*.*").then_some(privs)
        })
        .flat_map(|privs| privs.split(',').map(|p| p.trim().to_ascii_uppercase()))
        .collect()
}

/// The replication privileges missing from `privileges` (as [`global_privileges`] returns them).
pub(crate) fn missing_replication_privileges(privileges: &[String], flavor: ServerFlavor) -> Vec<String> {
    let has = |p: &str| privileges.iter().any(|g| g == p || g == "ALL PRIVILEGES" || g == "ALL");
    let mut missing = Vec::new();
    if !has("REPLICATION SLAVE") {
        missing.push("REPLICATION SLAVE".to_owned());
    }
    let client = match flavor {
        ServerFlavor::MariaDb => has("BINLOG MONITOR") || has("REPLICATION CLIENT") || has("SUPER"),
        ServerFlavor::Mysql => has("REPLICATION CLIENT") || has("SUPER"),
    };
    if !client {
        missing.push(match flavor {
            ServerFlavor::MariaDb => "BINLOG MONITOR (REPLICATION CLIENT)".to_owned(),
            ServerFlavor::Mysql => "REPLICATION CLIENT".to_owned(),
        });
    }
    missing
}

/// The blockers implied by the server's binlog variables (`name → value`, names lowercase).
pub(crate) fn variable_blockers(vars: &[(String, String)]) -> Vec<StreamingBlocker> {
    let get = |name: &str| vars.iter().find(|(n, _)| n == name).map(|(_, v)| v.to_ascii_uppercase());
    let mut blockers = Vec::new();
    if get("log_bin").as_deref() != Some("ON") {
        blockers.push(StreamingBlocker::BinaryLogDisabled);
    }
    match get("binlog_format") {
        Some(v) if v == "ROW" => {}
        v => blockers.push(StreamingBlocker::BinlogFormat(v.unwrap_or_else(|| "missing".into()))),
    }
    match get("binlog_row_image") {
        Some(v) if v == "FULL" => {}
        v => blockers.push(StreamingBlocker::BinlogRowImage(v.unwrap_or_else(|| "missing".into()))),
    }
    // binlog_row_metadata is not checked: without FULL (MariaDB's default is NO_LOG, MySQL's MINIMAL) the
    // column names, signedness and ENUM/SET members come from information_schema instead (schema.rs).
    if get("log_bin_compress").as_deref() == Some("ON") {
        blockers.push(StreamingBlocker::BinlogCompressed);
    }
    blockers
}

impl MysqlSource {
    async fn conn(&self, during: &'static str) -> Result<Conn, MysqlSourceError> {
        self.inner.pool.get_conn().await.map_err(|e| self.inner.ctx.query(&self.object(), during, e))
    }

    /// Reads every row of the table (or view): the polling and resync read.
    pub async fn read_table(&self) -> Result<Vec<Row>, MysqlSourceError> {
        let mut conn = self.conn("connecting to read the table").await?;
        self.read_rows(&mut conn).await
    }

    async fn read_rows(&self, conn: &mut Conn) -> Result<Vec<Row>, MysqlSourceError> {
        let c = &self.inner.config;
        let sql = select_sql(&c.database, &c.table, &c.columns);
        let rows: Vec<SqlRow> =
            conn.query(sql).await.map_err(|e| self.inner.ctx.query(&self.object(), "reading the table", e))?;
        Ok(rows.iter().map(|r| to_row(r, &c.columns)).collect())
    }

    /// MariaDB or MySQL, from `SELECT VERSION()`.
    pub async fn flavor(&self) -> Result<ServerFlavor, MysqlSourceError> {
        let mut conn = self.conn("connecting to detect the server").await?;
        flavor_of(&mut conn, self).await
    }

    /// Why streaming is impossible, or nothing when it is possible. Connection errors are reported
    /// as a blocker so the hub can show them.
    pub async fn check_streaming(&self) -> StreamingSupport {
        match self.streaming_blockers().await {
            Ok(blockers) => StreamingSupport { blockers },
            Err(e) => StreamingSupport { blockers: vec![StreamingBlocker::CheckFailed(e.to_string())] },
        }
    }

    async fn streaming_blockers(&self) -> Result<Vec<StreamingBlocker>, MysqlSourceError> {
        let mut conn = self.conn("connecting to check streaming").await?;
        let flavor = flavor_of(&mut conn, self).await?;
        let vars: Vec<(String, String)> = conn
            .query(
                "SHOW GLOBAL VARIABLES WHERE Variable_name IN \
                 ('log_bin','binlog_format','binlog_row_image','binlog_row_metadata','log_bin_compress')",
            )
            .await
            .map_err(|e| self.inner.ctx.query("server variables", "checking binlog settings", e))?;
        let vars: Vec<(String, String)> = vars.into_iter().map(|(n, v)| (n.to_ascii_lowercase(), v)).collect();
        let mut blockers = variable_blockers(&vars);
        blockers.extend(self.table_blocker(&mut conn).await?);
        let grants: Vec<String> =
            conn.query("SHOW GRANTS").await.map_err(|e| self.inner.ctx.query("grants", "checking privileges", e))?;
        let missing = missing_replication_privileges(&global_privileges(&grants), flavor);
        blockers.extend(missing.into_iter().map(StreamingBlocker::MissingPrivilege));
        Ok(blockers)
    }

    async fn table_blocker(&self, conn: &mut Conn) -> Result<Option<StreamingBlocker>, MysqlSourceError> {
        let c = &self.inner.config;
        let kind: Option<String> = conn
            .exec_first(
                "SELECT TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (&c.database, &c.table),
            )
            .await
            .map_err(|e| self.inner.ctx.query(&self.object(), "checking the table type", e))?;
        Ok(match kind.as_deref() {
            None => Some(StreamingBlocker::TableMissing),
            Some("VIEW") => Some(StreamingBlocker::IsView),
            Some(_) => None,
        })
    }

    /// The table's columns from information_schema, in ordinal order.
    pub(crate) async fn info_schema(&self) -> Result<Vec<InfoColumn>, MysqlSourceError> {
        let c = &self.inner.config;
        let mut conn = self.conn("connecting to read information_schema").await?;
        let rows: Vec<(String, String, Option<u32>)> = conn
            .exec(INFO_SCHEMA_SQL, (&c.database, &c.table))
            .await
            .map_err(|e| self.inner.ctx.query(&self.object(), "reading information_schema.COLUMNS", e))?;
        Ok(rows.into_iter().map(|(name, column_type, scale)| InfoColumn { name, column_type, scale }).collect())
    }

    /// True when table names compare case-insensitively (`lower_case_table_names` ≠ 0).
    pub(crate) async fn case_insensitive_names(&self) -> Result<bool, MysqlSourceError> {
        let mut conn = self.conn("connecting to read lower_case_table_names").await?;
        let v: Option<u32> = conn
            .query_first("SELECT @@lower_case_table_names")
            .await
            .map_err(|e| self.inner.ctx.query("lower_case_table_names", "reading server settings", e))?;
        Ok(v.unwrap_or(0) != 0)
    }

    /// True when the server still has `pos` (its file is listed by `SHOW BINARY LOGS` and `pos`
    /// is within it). Needs BINLOG MONITOR / REPLICATION CLIENT.
    pub async fn position_available(&self, pos: &Position) -> Result<bool, MysqlSourceError> {
        let Position::Binlog { file, pos, .. } = pos else {
            return Ok(false);
        };
        let mut conn = self.conn("connecting to list binary logs").await?;
        let logs: Vec<SqlRow> = conn
            .query("SHOW BINARY LOGS")
            .await
            .map_err(|e| self.inner.ctx.query("binary logs", "listing binary logs", e))?;
        Ok(logs.iter().any(|row| {
            let name: Option<String> = row.get(0);
            let size: Option<u64> = row.get(1);
            name.as_deref() == Some(file.as_str()) && size.is_some_and(|s| *pos <= s)
        }))
    }

    /// Binlog bytes between `pos` and the end of the server's last binary log (the
    /// `lynq_hub_source_behind_bytes` metric); None when `pos` is not a listed binlog position.
    pub async fn binlog_bytes_behind(&self, pos: &Position) -> Result<Option<u64>, MysqlSourceError> {
        let Position::Binlog { file, pos, .. } = pos else {
            return Ok(None);
        };
        let mut conn = self.conn("connecting to list binary logs").await?;
        let logs: Vec<SqlRow> = conn
            .query("SHOW BINARY LOGS")
            .await
            .map_err(|e| self.inner.ctx.query("binary logs", "listing binary logs", e))?;
        let sizes: Vec<(String, u64)> =
            logs.iter().filter_map(|row| Some((row.get::<String, _>(0)?, row.get::<u64, _>(1)?))).collect();
        Ok(bytes_behind(&sizes, file, *pos))
    }

    /// A consistent read of the table and the exact binlog position it corresponds to.
    pub async fn snapshot(&self, reason: SnapshotReason) -> Result<Snapshot, MysqlSourceError> {
        match self.flavor().await? {
            ServerFlavor::MariaDb => self.snapshot_mariadb(reason).await,
            ServerFlavor::Mysql => self.snapshot_mysql(reason).await,
        }
    }

    /// MariaDB: `START TRANSACTION WITH CONSISTENT SNAPSHOT` pins `binlog_snapshot_file/position`
    /// to the transaction's read view, lock-free; `BINLOG_GTID_POS` maps it to a GTID.
    async fn snapshot_mariadb(&self, reason: SnapshotReason) -> Result<Snapshot, MysqlSourceError> {
        let ctx = &self.inner.ctx;
        let mut conn = self.conn("connecting for a snapshot").await?;
        for sql in ["SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", "START TRANSACTION WITH CONSISTENT SNAPSHOT"] {
            conn.query_drop(sql).await.map_err(|e| ctx.query(&self.object(), "starting the snapshot", e))?;
        }
        let status: Vec<(String, String)> = conn
            .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
            .await
            .map_err(|e| ctx.query("binlog_snapshot status", "reading the snapshot position", e))?;
        let (file, pos) = snapshot_coordinates(&status).ok_or_else(|| {
            ctx.protocol("reading the snapshot position", format!("binlog_snapshot_* status is {status:?}"))
        })?;
        let gtid: Option<Option<String>> = conn
            .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (&file, pos))
            .await
            .map_err(|e| ctx.query("BINLOG_GTID_POS", "reading the snapshot GTID", e))?;
        let rows = self.read_rows(&mut conn).await?;
        conn.query_drop("COMMIT").await.map_err(|e| ctx.query(&self.object(), "ending the snapshot", e))?;
        let gtid = gtid.flatten().filter(|g| !g.is_empty());
        Ok(Snapshot { rows, position: Position::Binlog { file, pos, gtid }, reason })
    }

    /// MySQL (untested here: no MySQL 8 server is installable on this machine). Materialize's method:
    /// `LOCK TABLES t READ` on connection A holds writers off while A reads the binlog position and
    /// connection B opens its consistent snapshot; then A unlocks and B reads. Needs LOCK TABLES.
    async fn snapshot_mysql(&self, reason: SnapshotReason) -> Result<Snapshot, MysqlSourceError> {
        let ctx = &self.inner.ctx;
        let c = &self.inner.config;
        let mut lock = self.conn("connecting for a snapshot lock").await?;
        let mut read = self.conn("connecting for a snapshot read").await?;
        let lock_sql = format!("LOCK TABLES {}.{} READ", quote_ident(&c.database), quote_ident(&c.table));
        lock.query_drop(lock_sql)
            .await
            .map_err(|e| ctx.query(&self.object(), "locking the table for a snapshot", e))?;
        let result = self.position_and_snapshot(&mut lock, &mut read).await;
        let unlocked = lock.query_drop("UNLOCK TABLES").await;
        let (file, pos, gtid) = result?;
        unlocked.map_err(|e| ctx.query(&self.object(), "unlocking the table after a snapshot", e))?;
        let rows = self.read_rows(&mut read).await?;
        read.query_drop("COMMIT").await.map_err(|e| ctx.query(&self.object(), "ending the snapshot", e))?;
        Ok(Snapshot { rows, position: Position::Binlog { file, pos, gtid }, reason })
    }

    async fn position_and_snapshot(
        &self,
        lock: &mut Conn,
        read: &mut Conn,
    ) -> Result<(String, u64, Option<String>), MysqlSourceError> {
        let ctx = &self.inner.ctx;
        // 8.2+ renamed SHOW MASTER STATUS (removed in 8.4).
        let status: Option<SqlRow> = match lock.query_first("SHOW BINARY LOG STATUS").await {
            Ok(row) => row,
            Err(_) => lock
                .query_first("SHOW MASTER STATUS")
                .await
                .map_err(|e| ctx.query("binary log status", "reading the binlog position", e))?,
        };
        let row =
            status.ok_or_else(|| ctx.protocol("reading the binlog position", "no binary log status (log_bin off?)"))?;
        let file: Option<String> = row.get(0);
        let pos: Option<u64> = row.get(1);
        let gtid: Option<String> = row.get::<Option<String>, _>(4).flatten().filter(|g| !g.is_empty());
        let (Some(file), Some(pos)) = (file, pos) else {
            return Err(ctx.protocol("reading the binlog position", "binary log status lacks File/Position"));
        };
        for sql in ["SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", "START TRANSACTION WITH CONSISTENT SNAPSHOT"] {
            read.query_drop(sql).await.map_err(|e| ctx.query(&self.object(), "starting the snapshot", e))?;
        }
        Ok((file, pos, gtid))
    }
}

async fn flavor_of(conn: &mut Conn, source: &MysqlSource) -> Result<ServerFlavor, MysqlSourceError> {
    let version: Option<String> = conn
        .query_first("SELECT VERSION()")
        .await
        .map_err(|e| source.inner.ctx.query("VERSION()", "detecting the server", e))?;
    Ok(flavor_from_version(version.as_deref().unwrap_or("")))
}

/// MariaDB reports e.g. `10.11.19-MariaDB-0+deb12u1-log`.
pub(crate) fn flavor_from_version(version: &str) -> ServerFlavor {
    if version.to_ascii_lowercase().contains("mariadb") { ServerFlavor::MariaDb } else { ServerFlavor::Mysql }
}

/// `binlog_snapshot_file` and `binlog_snapshot_position` from `SHOW STATUS` rows.
pub(crate) fn snapshot_coordinates(status: &[(String, String)]) -> Option<(String, u64)> {
    let get = |name: &str| status.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
    let file = get("binlog_snapshot_file").filter(|f| !f.is_empty())?;
    let pos = get("binlog_snapshot_position")?.parse().ok()?;
    Some((file, pos))
}

/// Bytes from `pos` in `file` to the end of the last log, given `SHOW BINARY LOGS` (name, size) in order.
fn bytes_behind(logs: &[(String, u64)], file: &str, pos: u64) -> Option<u64> {
    let start = logs.iter().position(|(name, _)| name == file)?;
    let rest: u64 = logs[start..].iter().map(|(_, size)| size).sum();
    Some(rest.saturating_sub(pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_backtick_quoted() {
        assert_eq!(quote_ident("a`b"), "`a``b`");
        assert_eq!(
            select_sql("app", "my table", &["uid".into(), "is`on".into()]),
            "SELECT `uid`, `is``on` FROM `app`.`my table`"
        );
    }

    #[test]
    fn text_protocol_values() {
        assert_eq!(column_value(Some(&Value::NULL)), ColumnValue::Null);
        assert_eq!(column_value(None), ColumnValue::Null);
        assert_eq!(column_value(Some(&Value::Bytes(b"1".to_vec()))), ColumnValue::Text("1".into()));
        assert_eq!(column_value(Some(&Value::Bytes(vec![0xfe]))), ColumnValue::Text("\u{fffd}".into()));
    }

    #[test]
    fn grants_are_parsed_for_global_replication_privileges() {
        let grants = vec![
            "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `cdc`@`%` IDENTIFIED BY PASSWORD '*x'".to_owned(),
            "GRANT SELECT ON `app`.* TO `cdc`@`%`".to_owned(),
        ];
        assert!(missing_replication_privileges(&global_privileges(&grants), ServerFlavor::MariaDb).is_empty());
        let select_only =
            vec!["GRANT USAGE ON *.* TO `u`@`%`".to_owned(), "GRANT SELECT ON `app`.* TO `u`@`%`".to_owned()];
        assert_eq!(
            missing_replication_privileges(&global_privileges(&select_only), ServerFlavor::MariaDb),
            vec!["REPLICATION SLAVE", "BINLOG MONITOR (REPLICATION CLIENT)"]
        );
        let all = vec!["GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION".to_owned()];
        assert!(missing_replication_privileges(&global_privileges(&all), ServerFlavor::Mysql).is_empty());
        // A database-level grant of the same words does not count.
        let db_level = vec!["GRANT REPLICATION SLAVE ON `app`.* TO `u`@`%`".to_owned()];
        assert_eq!(missing_replication_privileges(&global_privileges(&db_level), ServerFlavor::Mysql).len(), 2);
        let admin = vec!["GRANT REPLICATION SLAVE ADMIN, REPLICATION CLIENT ON *.* TO `u`@`%`".to_owned()];
        assert_eq!(
            missing_replication_privileges(&global_privileges(&admin), ServerFlavor::Mysql),
            vec!["REPLICATION SLAVE"]
        );
    }

    #[test]
    fn binlog_variables_name_each_problem() {
        let v = |pairs: &[(&str, &str)]| pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
        let good = v(&[
            ("log_bin", "ON"),
            ("binlog_format", "ROW"),
            ("binlog_row_image", "FULL"),
            ("binlog_row_metadata", "FULL"),
            ("log_bin_compress", "OFF"),
        ]);
        assert!(variable_blockers(&good).is_empty());
        let bad = v(&[
            ("log_bin", "OFF"),
            ("binlog_format", "MIXED"),
            ("binlog_row_image", "MINIMAL"),
            ("binlog_row_metadata", "NO_LOG"),
            ("log_bin_compress", "ON"),
        ]);
        assert_eq!(
            variable_blockers(&bad),
            vec![
                StreamingBlocker::BinaryLogDisabled,
                StreamingBlocker::BinlogFormat("MIXED".into()),
                StreamingBlocker::BinlogRowImage("MINIMAL".into()),
                StreamingBlocker::BinlogCompressed,
            ]
        );
        let without_row_metadata = v(&[("log_bin", "ON"), ("binlog_format", "ROW"), ("binlog_row_image", "FULL")]);
        assert!(variable_blockers(&without_row_metadata).is_empty(), "information_schema supplies the names");
    }

    #[test]
    fn flavor_and_snapshot_status() {
        assert_eq!(flavor_from_version("10.11.19-MariaDB-0+deb12u1-log"), ServerFlavor::MariaDb);
        assert_eq!(flavor_from_version("8.4.3"), ServerFlavor::Mysql);
        let status = vec![
            ("Binlog_snapshot_file".to_owned(), "binlog.000001".to_owned()),
            ("Binlog_snapshot_position".to_owned(), "1913".to_owned()),
        ];
        assert_eq!(snapshot_coordinates(&status), Some(("binlog.000001".into(), 1913)));
        assert_eq!(snapshot_coordinates(&[("Binlog_snapshot_file".into(), String::new())]), None);
    }

    #[test]
    fn bytes_behind_span_the_following_logs() {
        let logs = vec![("b.000001".to_string(), 1000), ("b.000002".to_string(), 500), ("b.000003".to_string(), 200)];
        assert_eq!(super::bytes_behind(&logs, "b.000002", 300), Some(400));
        assert_eq!(super::bytes_behind(&logs, "b.000003", 200), Some(0));
        assert_eq!(super::bytes_behind(&logs, "b.000000", 4), None);
    }
}
