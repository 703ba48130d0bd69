//! End-to-end checks against a real MariaDB/MySQL, gated on `LYNQ_TEST_MYSQL_URL`.
//!
//! The URL names an admin account (e.g. `mysql://lynq:pw@127.0.0.1:3306/`) with
//! `ALL PRIVILEGES ON *.* WITH GRANT OPTION`; the server must run with `log_bin`,
//! `binlog_format=ROW`, `binlog_row_image=FULL`, `binlog_row_metadata=FULL`. Each test creates its
//! own databases (`lynq_e2e_*`) and users:
//! - `lynq_e2e_cdc`: `GRANT SELECT ON lynq_e2e_*.*` + `GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.*`
//!   (REPLICATION CLIENT is shown as BINLOG MONITOR on MariaDB);
//! - `lynq_e2e_ro`: `GRANT SELECT ON lynq_e2e_priv.*` only.
//!
//! The purge test runs `FLUSH BINARY LOGS` and `PURGE BINARY LOGS`; it takes an exclusive lock so the
//! other tests of this module never stream across it. Do not point this at a shared server.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::{Stream, StreamExt};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use tokio::sync::RwLock;

use super::{MysqlConfig, MysqlSource, MysqlSourceError, StreamingBlocker, derive_server_id};
use crate::source::{ColumnValue, Position, Row, RowChange, SnapshotReason, SourceEvent, SourceTransaction};

const CDC_USER: &str = "lynq_e2e_cdc";
const CDC_PASSWORD: &str = "cdc-pw";
const RO_USER: &str = "lynq_e2e_ro";
const WAIT: Duration = Duration::from_secs(20);

/// Purge needs the binlog to itself.
static BINLOG_LOCK: RwLock<()> = RwLock::const_new(());

/// The admin account of the test server; a test without one fails rather than passing unrun.
fn admin_opts() -> Opts {
    let url = std::env::var("LYNQ_TEST_MYSQL_URL").unwrap_or_else(|_| {
        panic!("LYNQ_TEST_MYSQL_URL is not set: run scripts/test.sh, which starts the MariaDB these tests need")
    });
    Opts::from_url(&url).expect("LYNQ_TEST_MYSQL_URL is a valid mysql:// URL")
}

async fn admin(opts: &Opts) -> Conn {
    let mut conn = Conn::new(opts.clone()).await.expect("admin connects");
    conn.query_drop("SET time_zone = '+00:00'").await.expect("set time zone");
    conn
}

async fn exec(conn: &mut Conn, sqls: &[&str]) {
    for sql in sqls {
        conn.query_drop(*sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// Creates the CDC user (idempotent) and a fresh database.
async fn setup(conn: &mut Conn, db: &str) {
    exec(
        conn,
        &[
            &format!("DROP DATABASE IF EXISTS `{db}`"),
            &format!("CREATE DATABASE `{db}`"),
            &format!("CREATE USER IF NOT EXISTS '{CDC_USER}'@'%' IDENTIFIED BY '{CDC_PASSWORD}'"),
            &format!("GRANT SELECT ON `lynq\\_e2e\\_%`.* TO '{CDC_USER}'@'%'"),
            &format!("GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{CDC_USER}'@'%'"),
        ],
    )
    .await;
}

fn config(opts: &Opts, user: &str, password: &str, db: &str, table: &str, columns: &[&str]) -> MysqlConfig {
    MysqlConfig {
        host: opts.ip_or_hostname().to_owned(),
        port: opts.tcp_port(),
        username: user.to_owned(),
        password: password.to_owned(),
        database: db.to_owned(),
        table: table.to_owned(),
        columns: columns.iter().map(|c| (*c).to_owned()).collect(),
        server_id: derive_server_id("e2e", db),
        tls: None,
        heartbeat: Duration::from_millis(500),
    }
}

/// The next transaction, skipping heartbeats.
async fn next_tx<S>(stream: &mut S) -> SourceTransaction
where
    S: Stream<Item = Result<SourceEvent, MysqlSourceError>> + Unpin,
{
    loop {
        let event = tokio::time::timeout(WAIT, stream.next()).await.expect("an event within the deadline");
        match event.expect("stream still open").expect("no stream error") {
            SourceEvent::Transaction(tx) => return tx,
            SourceEvent::Heartbeat { .. } | SourceEvent::Snapshot(_) => {}
        }
    }
}

fn text(row: &Row, column: &str) -> String {
    match row.get(column) {
        Some(ColumnValue::Text(t)) => t.clone(),
        other => panic!("column {column}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_then_stream_loses_and_duplicates_nothing_under_concurrent_inserts() {
    let opts = admin_opts();
    let _guard = BINLOG_LOCK.read().await;
    let db = "lynq_e2e_handoff";
    let mut conn = admin(&opts).await;
    setup(&mut conn, db).await;
    exec(&mut conn, &[&format!("CREATE TABLE `{db}`.t (id INT PRIMARY KEY, uid VARCHAR(32))")]).await;
    for i in 0..50 {
        conn.query_drop(format!("INSERT INTO `{db}`.t VALUES ({i}, 'u{i}')")).await.expect("seed insert");
    }
    let writer_opts = opts.clone();
    let writer = tokio::spawn(async move {
        let mut conn = admin(&writer_opts).await;
        for i in 50..300 {
            conn.query_drop(format!("INSERT INTO `lynq_e2e_handoff`.t VALUES ({i}, 'u{i}')")).await.expect("insert");
        }
    });
    tokio::task::yield_now().await;
    let source = MysqlSource::new(config(&opts, CDC_USER, CDC_PASSWORD, db, "t", &["uid"]));
    let snapshot = source.snapshot(SnapshotReason::Initial).await.expect("snapshot");
    let mut seen: Vec<String> = snapshot.rows.iter().map(|r| text(r, "uid")).collect();
    eprintln!("snapshot saw {} of 300 rows; the stream must deliver the rest exactly once", seen.len());
    let mut stream = Box::pin(source.stream(snapshot.position.clone()));
    writer.await.expect("writer finished");
    while seen.len() < 300 {
        for change in next_tx(&mut stream).await.changes {
            let RowChange::Insert { after } = change else { panic!("unexpected {change:?}") };
            seen.push(text(&after, "uid"));
        }
    }
    let distinct: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), 300, "snapshot had {} rows; duplicates present", snapshot.rows.len());
    assert_eq!(distinct.len(), 300);
}

const TYPES_DDL: &str = "CREATE TABLE `lynq_e2e_types`.t (
    id INT PRIMARY KEY, b TINYINT(1), ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, mi MEDIUMINT,
    mu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED, de DECIMAL(12,3),
    f FLOAT, d DOUBLE, dfix DOUBLE(10,3), dt DATE, dtm DATETIME, dtm3 DATETIME(3), dtm6 DATETIME(6),
    tm TIME, tm2 TIME(2), ts TIMESTAMP NULL, ts4 TIMESTAMP(4) NULL, y YEAR, e ENUM('red','green','it''s'),
    s SET('a','b','c','d','e','f','g','h','i'), j JSON, c CHAR(5), vc VARCHAR(300), tx TEXT, lt LONGTEXT,
    vb VARBINARY(10), bl BLOB, bit8 BIT(8))";

const TYPES_COLUMNS: &[&str] = &[
    "id", "b", "ti", "tu", "si", "mi", "mu", "i", "iu", "bi", "bu", "de", "f", "d", "dfix", "dt", "dtm", "dtm3",
    "dtm6", "tm", "tm2", "ts", "ts4", "y", "e", "s", "j", "c", "vc", "tx", "lt", "vb", "bl", "bit8",
];

const TYPES_ROWS: &[&str] = &[
    "(1, 1, -128, 255, -32768, -8388608, 16777215, -2147483648, 4294967295, -9223372036854775808,
      18446744073709551615, -12345.678, 123456.7, 1e20, 1.5, '2024-01-02', '2024-01-02 03:04:05',
      '2024-01-02 03:04:05.678', '2024-01-02 03:04:05.000001', '-838:59:59', '12:00:00.5',
      '2024-01-02 03:04:05', '2024-01-02 03:04:05.1234', 2155, 'it''s', 'a,c,i', '{\"k\": [1, 2]}',
      'ab', 'héllo wörld', 'long text', 'lt', X'00FF41', X'DEADBEEF', b'101')",
    "(2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.5, 0.1, 0.30000000000000004, 0, '0000-00-00', '0000-00-00 00:00:00',
      '1970-01-01 00:00:00.000', '9999-12-31 23:59:59.999999', '00:00:00', '-01:00:00', '1970-01-01 00:00:01',
      '2038-01-19 03:14:07.9999', 0, 'red', '', '[]', '', '', '', '', '', '', b'0')",
    "(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
      NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    "(4, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 3.4e38, 1e-16, 2.25, '2000-02-29', '1999-12-31 23:59:59',
      '2000-01-01 00:00:00.1', '2000-01-01 00:00:00', '838:59:59', '00:00:00', '2001-09-09 01:46:40',
      '2001-09-09 01:46:40.0001', 1901, 'green', 'b,c,d,e,f,g,h', '{\"b\": 1.5, \"a\": \"x\\\\ny\"}', 'a', 'x', 'y', 'z',
      X'', X'00', b'11111111')",
];

#[tokio::test]
async fn every_column_type_streams_exactly_as_select_shows_it() {
    let opts = admin_opts();
    let _guard = BINLOG_LOCK.read().await;
    let db = "lynq_e2e_types";
    let mut conn = admin(&opts).await;
    setup(&mut conn, db).await;
    exec(&mut conn, &["SET sql_mode = ''", TYPES_DDL]).await;
    let source = MysqlSource::new(config(&opts, CDC_USER, CDC_PASSWORD, db, "t", TYPES_COLUMNS));
    let start = source.snapshot(SnapshotReason::Initial).await.expect("snapshot").position;
    let mut stream = Box::pin(source.stream(start));
    for row in TYPES_ROWS {
        conn.query_drop(format!("INSERT INTO `{db}`.t VALUES {row}")).await.expect("insert typed row");
    }
    let mut streamed = Vec::new();
    while streamed.len() < TYPES_ROWS.len() {
        for change in next_tx(&mut stream).await.changes {
            let RowChange::Insert { after } = change else { panic!("unexpected {change:?}") };
            streamed.push(after);
        }
    }
    let selected = source.read_table().await.expect("read table");
    for (got, want) in streamed.iter().zip(&selected) {
        for column in TYPES_COLUMNS {
            assert_eq!(got.get(*column), want.get(*column), "row id={} column {column}", text(want, "id"));
        }
    }
    assert_eq!(streamed.len(), selected.len());
}

#[tokio::test]
async fn transactions_group_rows_filter_other_databases_and_report_truncate() {
    let opts = admin_opts();
    let _guard = BINLOG_LOCK.read().await;
    let db = "lynq_e2e_tx";
    let other = "lynq_e2e_tx_other";
    let mut conn = admin(&opts).await;
    setup(&mut conn, db).await;
    setup(&mut conn, other).await;
    exec(
        &mut conn,
        &[
            &format!("CREATE TABLE `{db}`.tenants (uid VARCHAR(20) PRIMARY KEY, active TINYINT(1))"),
            &format!("CREATE TABLE `{other}`.tenants (uid VARCHAR(20) PRIMARY KEY, active TINYINT(1))"),
            &format!("INSERT INTO `{db}`.tenants VALUES ('keep', 1)"),
        ],
    )
    .await;
    let source = MysqlSource::new(config(&opts, CDC_USER, CDC_PASSWORD, db, "tenants", &["uid", "active"]));
    let start = source.snapshot(SnapshotReason::Initial).await.expect("snapshot").position;
    let mut stream = Box::pin(source.stream(start));
    exec(
        &mut conn,
        &[
            &format!("INSERT INTO `{other}`.tenants VALUES ('elsewhere', 1)"),
            "BEGIN",
            &format!("INSERT INTO `{db}`.tenants VALUES ('a', 1), ('b', 0), ('c', 1)"),
            &format!("INSERT INTO `{other}`.tenants VALUES ('ignored', 1)"),
            &format!("UPDATE `{db}`.tenants SET active = 0 WHERE uid = 'a'"),
            &format!("DELETE FROM `{db}`.tenants WHERE uid = 'keep'"),
            "COMMIT",
            &format!("TRUNCATE TABLE `{other}`.tenants"),
            &format!("TRUNCATE TABLE `{db}`.tenants"),
        ],
    )
    .await;
    let tx = next_tx(&mut stream).await;
    assert_eq!(tx.changes.len(), 5, "{tx:?}");
    let uids: Vec<String> = tx
        .changes
        .iter()
        .map(|c| match c {
            RowChange::Insert { after } | RowChange::Update { after, .. } => text(after, "uid"),
            RowChange::Delete { before } => text(before, "uid"),
            RowChange::Truncate => "TRUNCATE".into(),
        })
        .collect();
    assert_eq!(uids, ["a", "b", "c", "a", "keep"]);
    let RowChange::Update { before: Some(before), after } = &tx.changes[3] else { panic!("{:?}", tx.changes[3]) };
    assert_eq!((text(before, "active"), text(after, "active")), ("1".into(), "0".into()));
    assert!(matches!(tx.position, Position::Binlog { gtid: Some(_), .. }), "{:?}", tx.position);
    let truncate = next_tx(&mut stream).await;
    assert_eq!(truncate.changes, vec![RowChange::Truncate]);
}

#[tokio::test]
async fn purged_position_is_position_unavailable() {
    let opts = admin_opts();
    let _guard = BINLOG_LOCK.write().await;
    let db = "lynq_e2e_purge";
    let mut conn = admin(&opts).await;
    setup(&mut conn, db).await;
    exec(&mut conn, &[&format!("CREATE TABLE `{db}`.t (uid VARCHAR(20) PRIMARY KEY)")]).await;
    let source = MysqlSource::new(config(&opts, CDC_USER, CDC_PASSWORD, db, "t", &["uid"]));
    let old = source.snapshot(SnapshotReason::Initial).await.expect("snapshot").position;
    assert!(source.position_available(&old).await.expect("list binary logs"));
    exec(&mut conn, &["FLUSH BINARY LOGS"]).await;
    let logs: Vec<mysql_async::Row> = conn.query("SHOW BINARY LOGS").await.expect("binary logs");
    let newest: String = logs.last().and_then(|r| r.get(0)).expect("a binlog file");
    exec(&mut conn, &[&format!("PURGE BINARY LOGS TO '{newest}'")]).await;
    assert!(!source.position_available(&old).await.expect("list binary logs"));
    let mut stream = Box::pin(source.stream(old));
    let first = tokio::time::timeout(WAIT, stream.next()).await.expect("an answer").expect("an item");
    let err = first.expect_err("purged position must fail");
    assert!(matches!(err, MysqlSourceError::PositionUnavailable { .. }), "{err}");
    assert!(err.needs_snapshot());
    assert!(stream.next().await.is_none(), "the stream ends after its error");
}

#[tokio::test]
async fn select_only_user_is_told_which_privilege_is_missing() {
    let opts = admin_opts();
    let _guard = BINLOG_LOCK.read().await;
    let db = "lynq_e2e_priv";
    let mut conn = admin(&opts).await;
    setup(&mut conn, db).await;
    exec(
        &mut conn,
        &[
            &format!("CREATE TABLE `{db}`.t (uid VARCHAR(20) PRIMARY KEY)"),
            &format!("CREATE USER IF NOT EXISTS '{RO_USER}'@'%' IDENTIFIED BY 'ro-pw'"),
            &format!("GRANT SELECT ON `{db}`.* TO '{RO_USER}'@'%'"),
        ],
    )
    .await;
    let cdc = MysqlSource::new(config(&opts, CDC_USER, CDC_PASSWORD, db, "t", &["uid"]));
    let support = cdc.check_streaming().await;
    assert!(support.is_supported(), "{support}");
    let ro = MysqlSource::new(config(&opts, RO_USER, "ro-pw", db, "t", &["uid"]));
    assert!(ro.read_table().await.expect("SELECT works").is_empty());
    let support = ro.check_streaming().await;
    assert!(support.blockers.contains(&StreamingBlocker::MissingPrivilege("REPLICATION SLAVE".into())), "{support}");
    let start = Position::Binlog { file: "binlog.000001".into(), pos: 4, gtid: None };
    let mut stream = Box::pin(ro.stream(start));
    let err = stream.next().await.expect("an item").expect_err("streaming must be refused");
    assert!(
        matches!(&err, MysqlSourceError::MissingPrivilege { privilege, .. } if privilege == "REPLICATION SLAVE"),
        "{err}"
    );
}

#[tokio::test]
async fn view_is_readable_but_not_streamable() {
    let opts = admin_opts();
    let db = "lynq_e2e_view";
    let mut conn = admin(&opts).await;
    setup(&mut conn, db).await;
    exec(
        &mut conn,
        &[
            &format!("CREATE TABLE `{db}`.`base table` (uid VARCHAR(20), status VARCHAR(10))"),
            &format!("INSERT INTO `{db}`.`base table` VALUES ('x', 'active'), ('y', 'off')"),
            &format!(
                "CREATE VIEW `{db}`.v AS SELECT uid, CASE status WHEN 'active' THEN '1' ELSE '0' END AS activate \
                 FROM `{db}`.`base table`"
            ),
        ],
    )
    .await;
    let view = MysqlSource::new(config(&opts, CDC_USER, CDC_PASSWORD, db, "v", &["uid", "activate"]));
    let rows = view.read_table().await.expect("read view");
    assert_eq!(rows.len(), 2);
    assert!(view.check_streaming().await.blockers.contains(&StreamingBlocker::IsView));
}

#[tokio::test]
async fn second_stream_with_the_same_server_id_evicts_the_first_with_duplicate_server_id() {
    let opts = admin_opts();
    let _guard = BINLOG_LOCK.read().await;
    let db = "lynq_e2e_dup";
    let mut conn = admin(&opts).await;
    setup(&mut conn, db).await;
    exec(&mut conn, &[&format!("CREATE TABLE `{db}`.t (uid VARCHAR(20) PRIMARY KEY)")]).await;
    let source = MysqlSource::new(config(&opts, CDC_USER, CDC_PASSWORD, db, "t", &["uid"]));
    let start = source.snapshot(SnapshotReason::Initial).await.expect("snapshot").position;
    let mut first = Box::pin(source.stream(start.clone()));
    // A heartbeat proves the first dump thread is registered.
    let hb = tokio::time::timeout(WAIT, first.next()).await.expect("heartbeat").expect("item").expect("ok");
    assert!(matches!(hb, SourceEvent::Heartbeat { .. }), "{hb:?}");
    let mut second = Box::pin(source.stream(start));
    let _ = tokio::time::timeout(WAIT, second.next()).await.expect("second stream answers");
    let err = loop {
        match tokio::time::timeout(WAIT, first.next()).await.expect("first stream answers").expect("item") {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, MysqlSourceError::DuplicateServerId { .. }), "{err}");
}

/// MariaDB's default `binlog_row_metadata=NO_LOG` (MySQL's MINIMAL is similar): the TABLE_MAP has no
/// column names, signedness or ENUM members, so they come from information_schema — and a column added
/// in front of the others mid-stream is picked up, so values keep landing in the right columns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_without_row_metadata_from_information_schema() {
    let root = tempfile::tempdir().expect("temporary directory");
    let server =
        crate::localenv::MariaDb::start_with_server_args(root.path(), root.path(), &["--binlog-row-metadata=NO_LOG"])
            .await
            .expect("a private MariaDB with binlog_row_metadata=NO_LOG");
    let opts = Opts::from_url(&server.url).expect("the server's URL");
    let db = "lynq_e2e_nolog";
    let mut conn = admin(&opts).await;
    setup(&mut conn, db).await;
    exec(
        &mut conn,
        &[&format!(
            "CREATE TABLE `{db}`.t (uid VARCHAR(32) PRIMARY KEY, active TINYINT(1), plan ENUM('basic','pro'), \
             quota INT UNSIGNED, price DECIMAL(6,2))"
        )],
    )
    .await;
    let columns = ["uid", "active", "plan", "quota", "price"];
    let source = MysqlSource::new(config(&opts, CDC_USER, CDC_PASSWORD, db, "t", &columns));
    let support = source.check_streaming().await;
    assert!(support.is_supported(), "NO_LOG must not block streaming: {support:?}");
    let snapshot = source.snapshot(SnapshotReason::Initial).await.expect("snapshot");
    let mut stream = Box::pin(source.stream(snapshot.position.clone()));

    exec(&mut conn, &[&format!("INSERT INTO `{db}`.t VALUES ('acme', 1, 'pro', 4294967295, 12.50)")]).await;
    let expect = |row: &Row, values: [&str; 5]| {
        for (column, value) in columns.iter().zip(values) {
            assert_eq!(text(row, column), value, "column {column} of {row:?}");
        }
    };
    match next_tx(&mut stream).await.changes.as_slice() {
        [RowChange::Insert { after }] => expect(after, ["acme", "1", "pro", "4294967295", "12.50"]),
        other => panic!("one insert expected, got {other:?}"),
    }

    exec(
        &mut conn,
        &[
            &format!("ALTER TABLE `{db}`.t ADD COLUMN note VARCHAR(8) FIRST"),
            &format!("INSERT INTO `{db}`.t VALUES ('n', 'beta', 0, 'basic', 7, 0.99)"),
        ],
    )
    .await;
    let inserted = loop {
        let tx = next_tx(&mut stream).await;
        if let [RowChange::Insert { after }] = tx.changes.as_slice() {
            break after.clone();
        }
    };
    expect(&inserted, ["beta", "0", "basic", "7", "0.99"]);
    drop(stream);
    server.stop(Duration::from_secs(5)).await;
}
