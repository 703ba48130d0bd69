//! End-to-end tests against a private PostgreSQL with `wal_level=logical`.
//!
//! Set `LYNQ_TEST_PG_URL` to a superuser URL (e.g. `postgres://postgres@127.0.0.1:54321/postgres`);
//! without it every test fails, naming the variable (scripts/test.sh sets it). Each test uses its own
//! table, slot and publication, so they run in parallel.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::timeout;
use tokio_postgres::config::Host;
use tokio_postgres::{Client, NoTls};

use super::*;
use crate::source::{ColumnValue, Position, RowChange, Snapshot, SnapshotReason, SourceEvent, SourceTransaction};

/// Guard against a hang; never used to wait for an effect.
const GUARD: Duration = Duration::from_secs(90);

/// The slot-invalidation test changes a server-wide setting that would invalidate the other
/// tests' slots: it runs alone (write), the others together (read).
static SERVER_SETTINGS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// The superuser URL of the test server; a test without one fails rather than passing unrun.
fn test_url() -> String {
    match std::env::var("LYNQ_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!("LYNQ_TEST_PG_URL is not set: run scripts/test.sh, which starts the PostgreSQL these tests need"),
    }
}

async fn admin(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("admin connect");
    tokio::spawn(connection);
    client
}

/// A source config for `table` on the server in `url`, with its own slot and publication.
fn config(url: &str, table: &str, uid: &str, columns: &[&str]) -> PostgresConfig {
    let pg: tokio_postgres::Config = url.parse().expect("LYNQ_TEST_PG_URL parses");
    let host = match pg.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "127.0.0.1".into(),
    };
    PostgresConfig {
        host,
        port: pg.get_ports().first().copied().unwrap_or(5432),
        database: pg.get_dbname().unwrap_or("postgres").into(),
        schema: "public".into(),
        table: table.into(),
        username: pg.get_user().unwrap_or("postgres").into(),
        password: String::from_utf8_lossy(pg.get_password().unwrap_or_default()).into(),
        ssl_mode: SslMode::Disable,
        slot_name: derive_slot_name("e2e", table),
        publication_name: derive_publication_name("e2e", table),
        columns: columns.iter().map(|c| c.to_string()).collect(),
        uid_column: uid.into(),
        ..PostgresConfig::default()
    }
}

/// Recreate `table` with `ddl` and remove leftovers of an earlier run.
async fn fresh(admin: &Client, config: &PostgresConfig, ddl: &str) {
    let slot = &config.slot_name;
    admin
        .execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
             WHERE slot_name = $1 AND active_pid IS NOT NULL",
            &[slot],
        )
        .await
        .expect("terminate old holder");
    wait_slot_inactive(admin, slot).await;
    admin
        .execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", &[slot])
        .await
        .expect("drop old slot");
    let table = &config.table;
    let publication = super::names::quote_ident(&config.publication_name);
    admin
        .batch_execute(&format!("DROP PUBLICATION IF EXISTS {publication}; DROP TABLE IF EXISTS {table}; {ddl}"))
        .await
        .expect("create table");
}

/// One test's table on the shared server, created afresh; the shared hold on server settings lasts
/// as long as the test keeps `_shared`.
struct Fixture {
    url: String,
    admin: Client,
    config: PostgresConfig,
    _shared: tokio::sync::RwLockReadGuard<'static, ()>,
}

/// The fixture for `table` (uid column `uid`, extra `columns`), recreated with `ddl`.
async fn fixture(table: &str, columns: &[&str], ddl: &str) -> Fixture {
    let url = test_url();
    let shared = SERVER_SETTINGS.read().await;
    let admin = admin(&url).await;
    let config = config(&url, table, "uid", columns);
    fresh(&admin, &config, ddl).await;
    Fixture { url, admin, config, _shared: shared }
}

/// Wait (bounded by GUARD) until no walsender holds the slot.
async fn wait_slot_inactive(admin: &Client, slot: &str) {
    let poll = async {
        loop {
            let active = admin
                .query_opt("SELECT active FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
                .await
                .expect("slot state");
            if !active.is_some_and(|row| row.get::<_, bool>(0)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    timeout(GUARD, poll).await.expect("slot released");
}

async fn next(stream: &mut PostgresStream) -> SourceEvent {
    timeout(GUARD, stream.next_event()).await.expect("event before the guard timeout").expect("stream event")
}

async fn next_transaction(stream: &mut PostgresStream) -> SourceTransaction {
    loop {
        match next(stream).await {
            SourceEvent::Transaction(tx) => return tx,
            SourceEvent::Heartbeat { .. } => continue,
            SourceEvent::Snapshot(s) => panic!("unexpected snapshot {:?}", s.reason),
        }
    }
}

/// The position of the next heartbeat; transactions must not arrive meanwhile.
async fn next_heartbeat(stream: &mut PostgresStream) -> u64 {
    match next(stream).await {
        SourceEvent::Heartbeat { position } => lsn(&position),
        other => panic!("expected a heartbeat, got {other:?}"),
    }
}

async fn start_with_snapshot(source: &PostgresSource, resume: bool) -> (PostgresStream, Snapshot) {
    let mut stream = source.start(resume).await.expect("start");
    match next(&mut stream).await {
        SourceEvent::Snapshot(snapshot) => (stream, snapshot),
        other => panic!("expected a snapshot first, got {other:?}"),
    }
}

fn text(value: &str) -> ColumnValue {
    ColumnValue::Text(value.into())
}

fn row(pairs: &[(&str, &str)]) -> Row {
    pairs.iter().map(|(k, v)| (k.to_string(), text(v))).collect()
}

fn uid_of(row: &Row) -> String {
    match row.get("uid") {
        Some(ColumnValue::Text(uid)) => uid.clone(),
        other => panic!("row without uid: {other:?}"),
    }
}

fn lsn(position: &Position) -> u64 {
    match position {
        Position::Lsn(lsn) => *lsn,
        other => panic!("not an LSN: {other:?}"),
    }
}

#[tokio::test]
async fn snapshot_and_stream_hand_off_without_loss_or_duplicates() {
    let Fixture { url, admin, config, _shared } =
        fixture("e2e_handoff", &["name"], "CREATE TABLE e2e_handoff (uid text PRIMARY KEY, name text)").await;
    admin
        .batch_execute("INSERT INTO e2e_handoff SELECT 'pre' || i, 'n' FROM generate_series(1, 20) i")
        .await
        .expect("seed");
    let writer_url = url.clone();
    let writer = tokio::spawn(async move {
        let client = self::admin(&writer_url).await;
        for i in 0..200 {
            client
                .execute("INSERT INTO e2e_handoff VALUES ($1, 'n')", &[&format!("c{i}")])
                .await
                .expect("concurrent insert");
        }
    });
    let source = PostgresSource::new(config).expect("config");
    let (mut stream, snapshot) = start_with_snapshot(&source, false).await;
    assert_eq!(snapshot.reason, SnapshotReason::Initial);
    writer.await.expect("writer");
    admin.batch_execute("INSERT INTO e2e_handoff VALUES ('end', 'n')").await.expect("sentinel");

    let snapshot_uids: Vec<String> = snapshot.rows.iter().map(uid_of).collect();
    let mut streamed = Vec::new();
    while !streamed.contains(&"end".to_string()) {
        let tx = next_transaction(&mut stream).await;
        for change in &tx.changes {
            let RowChange::Insert { after } = change else {
                panic!("unexpected change {change:?}");
            };
            streamed.push(uid_of(after));
        }
        stream.ack(lsn(&tx.position));
    }
    eprintln!("handoff: {} rows in the snapshot, {} streamed", snapshot_uids.len(), streamed.len());
    let all: Vec<&String> = snapshot_uids.iter().chain(&streamed).collect();
    let unique: BTreeSet<&String> = all.iter().copied().collect();
    assert_eq!(all.len(), unique.len(), "a row arrived twice");
    assert_eq!(unique.len(), 20 + 200 + 1, "a row was lost");
    assert!(snapshot_uids.len() >= 20, "snapshot misses the seeded rows");
    stream.shutdown().await.expect("shutdown");
    assert!(source.drop_slot().await.expect("drop slot"));
    assert!(!source.drop_slot().await.expect("second drop"));
    assert!(source.drop_publication().await.expect("drop publication"));
}

#[tokio::test]
async fn multi_row_transaction_is_one_source_transaction() {
    let Fixture { url: _, admin, config, _shared } = fixture(
        "e2e_multi",
        &["name", "born"],
        "CREATE TABLE e2e_multi (uid text PRIMARY KEY, name text, born timestamptz, skipped text);
         CREATE TABLE IF NOT EXISTS e2e_multi_other (id int)",
    )
    .await;
    let source = PostgresSource::new(config).expect("config");
    let (mut stream, snapshot) = start_with_snapshot(&source, false).await;
    let created = PublicationStatus { created_now: true, owned_by_lynq: true };
    assert_eq!(stream.publication(), created);
    assert!(snapshot.rows.is_empty());
    admin
        .batch_execute(
            "BEGIN;
             INSERT INTO e2e_multi VALUES ('a', 'A', '2024-01-02 03:04:05.678+02', 'x');
             INSERT INTO e2e_multi_other VALUES (1);
             INSERT INTO e2e_multi VALUES ('b', NULL, NULL, 'y'), ('c', 'C', NULL, 'z');
             COMMIT",
        )
        .await
        .expect("transaction");
    let tx = next_transaction(&mut stream).await;
    assert!(lsn(&tx.position) > lsn(&snapshot.position));
    assert!(tx.commit_time.is_some());
    let first = row(&[("uid", "a"), ("name", "A"), ("born", "2024-01-02 01:04:05.678+00")]);
    assert_eq!(tx.changes.len(), 3);
    assert_eq!(tx.changes[0], RowChange::Insert { after: first });
    let mut second = row(&[("uid", "b")]);
    second.insert("name".into(), ColumnValue::Null);
    second.insert("born".into(), ColumnValue::Null);
    assert_eq!(tx.changes[1], RowChange::Insert { after: second });
    // The polling read renders the same text as the stream (pinned session settings).
    let polled = source.read_table().await.expect("read table");
    let polled_a = polled.iter().find(|r| uid_of(r) == "a").expect("row a");
    assert_eq!(polled_a.get("born"), Some(&text("2024-01-02 01:04:05.678+00")));
    stream.shutdown().await.expect("shutdown");
    source.drop_slot().await.expect("drop slot");
}

#[tokio::test]
async fn update_and_delete_with_replica_identity_full() {
    let Fixture { url: _, admin, config, _shared } = fixture(
        "e2e_full",
        &["name"],
        "CREATE TABLE e2e_full (id int PRIMARY KEY, uid text, name text);
         ALTER TABLE e2e_full REPLICA IDENTITY FULL;
         INSERT INTO e2e_full VALUES (1, 'u1', 'old')",
    )
    .await;
    let source = PostgresSource::new(config).expect("config");
    let (mut stream, snapshot) = start_with_snapshot(&source, false).await;
    assert_eq!(snapshot.rows, vec![row(&[("uid", "u1"), ("name", "old")])]);
    admin
        .batch_execute(
            "UPDATE e2e_full SET name = 'new' WHERE id = 1;
             UPDATE e2e_full SET uid = 'u2' WHERE id = 1;
             DELETE FROM e2e_full WHERE id = 1",
        )
        .await
        .expect("changes");
    // A multi-statement simple query runs as one implicit transaction.
    let changes = next_transaction(&mut stream).await.changes;
    assert_eq!(
        changes,
        vec![
            RowChange::Update {
                before: Some(row(&[("uid", "u1"), ("name", "old")])),
                after: row(&[("uid", "u1"), ("name", "new")]),
            },
            RowChange::Update {
                before: Some(row(&[("uid", "u1"), ("name", "new")])),
                after: row(&[("uid", "u2"), ("name", "new")]),
            },
            RowChange::Delete { before: row(&[("uid", "u2"), ("name", "new")]) },
        ]
    );
    stream.shutdown().await.expect("shutdown");
    source.drop_slot().await.expect("drop slot");
}

#[tokio::test]
async fn update_and_delete_with_uid_as_primary_key() {
    let Fixture { url: _, admin, config, _shared } = fixture(
        "e2e_pk",
        &["name"],
        "CREATE TABLE e2e_pk (uid text PRIMARY KEY, name text); INSERT INTO e2e_pk VALUES ('a', 'old')",
    )
    .await;
    let source = PostgresSource::new(config).expect("config");
    let (mut stream, _) = start_with_snapshot(&source, false).await;
    admin
        .batch_execute(
            "UPDATE e2e_pk SET name = 'new';
             UPDATE e2e_pk SET uid = 'b';
             DELETE FROM e2e_pk",
        )
        .await
        .expect("changes");
    // A multi-statement simple query runs as one implicit transaction.
    let changes = next_transaction(&mut stream).await.changes;
    assert_eq!(
        changes,
        vec![
            RowChange::Update { before: None, after: row(&[("uid", "a"), ("name", "new")]) },
            RowChange::Update { before: Some(row(&[("uid", "a")])), after: row(&[("uid", "b"), ("name", "new")]) },
            RowChange::Delete { before: row(&[("uid", "b")]) },
        ]
    );
    stream.shutdown().await.expect("shutdown");
    source.drop_slot().await.expect("drop slot");
}

#[tokio::test]
async fn toasted_value_is_unchanged_across_an_update() {
    let Fixture { url: _, admin, config, _shared } = fixture(
        "e2e_toast",
        &["name", "big"],
        "CREATE TABLE e2e_toast (uid text PRIMARY KEY, name text, big text);
         INSERT INTO e2e_toast
         SELECT 'a', 'old', string_agg(md5(i::text), '') FROM generate_series(1, 4000) i",
    )
    .await;
    let source = PostgresSource::new(config).expect("config");
    let (mut stream, snapshot) = start_with_snapshot(&source, false).await;
    let big = snapshot.rows.first().and_then(|r| r.get("big")).cloned();
    assert!(matches!(big, Some(ColumnValue::Text(ref t)) if t.len() == 128_000));
    admin.batch_execute("UPDATE e2e_toast SET name = 'new'").await.expect("update");
    let tx = next_transaction(&mut stream).await;
    let mut after = row(&[("uid", "a"), ("name", "new")]);
    after.insert("big".into(), ColumnValue::Unchanged);
    assert_eq!(tx.changes, vec![RowChange::Update { before: None, after }]);
    stream.shutdown().await.expect("shutdown");
    source.drop_slot().await.expect("drop slot");
}

#[tokio::test]
async fn uid_outside_the_replica_identity_is_refused_with_the_fix() {
    let Fixture { url: _, admin, config, _shared } =
        fixture("e2e_noident", &["name"], "CREATE TABLE e2e_noident (id int PRIMARY KEY, uid text, name text)").await;
    let source = PostgresSource::new(config).expect("config");
    let err = source.start(false).await.err().expect("start must fail");
    let PostgresError::ReplicaIdentity { table, column, fix } = &err else {
        panic!("expected ReplicaIdentity, got {err}");
    };
    assert_eq!((table.as_str(), column.as_str()), ("public.e2e_noident", "uid"));
    assert!(fix.contains("REPLICA IDENTITY FULL") && fix.contains("USING INDEX"), "{fix}");
    // Applying the suggested fix makes the check pass.
    admin.batch_execute("ALTER TABLE e2e_noident REPLICA IDENTITY FULL").await.expect("fix");
    source.check_replica_identity().await.expect("fixed");
    source.drop_publication().await.expect("drop publication");
}

#[tokio::test]
async fn slot_dropped_by_hand_takes_a_slot_missing_snapshot() {
    let Fixture { url: _, admin, config, _shared } =
        fixture("e2e_slotmiss", &[], "CREATE TABLE e2e_slotmiss (uid text PRIMARY KEY)").await;
    let slot = config.slot_name.clone();
    let source = PostgresSource::new(config).expect("config");
    let (stream, _) = start_with_snapshot(&source, false).await;
    stream.shutdown().await.expect("shutdown");
    wait_slot_inactive(&admin, &slot).await;
    admin.execute("SELECT pg_drop_replication_slot($1)", &[&slot]).await.expect("drop by hand");
    admin.batch_execute("INSERT INTO e2e_slotmiss VALUES ('while-gone')").await.expect("insert");
    let (stream, snapshot) = start_with_snapshot(&source, true).await;
    assert_eq!(snapshot.reason, SnapshotReason::SlotMissing);
    assert_eq!(stream.snapshot_reason(), Some(SnapshotReason::SlotMissing));
    let reused = PublicationStatus { created_now: false, owned_by_lynq: true };
    assert_eq!(stream.publication(), reused);
    assert_eq!(snapshot.rows, vec![row(&[("uid", "while-gone")])]);
    stream.shutdown().await.expect("shutdown");
    source.drop_slot().await.expect("drop slot");
}

#[tokio::test]
async fn role_without_replication_is_a_missing_privilege() {
    let Fixture { url: _, admin, mut config, _shared } =
        fixture("e2e_norepl", &[], "CREATE TABLE e2e_norepl (uid text PRIMARY KEY)").await;
    admin
        .batch_execute(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lynq_e2e_norepl') THEN
                 CREATE ROLE lynq_e2e_norepl LOGIN PASSWORD 'pw';
               END IF;
             END $$;
             GRANT SELECT ON e2e_norepl TO lynq_e2e_norepl",
        )
        .await
        .expect("role");
    config.username = "lynq_e2e_norepl".into();
    config.password = "pw".into();
    let source = PostgresSource::new(config).expect("config");
    assert_eq!(source.read_table().await.expect("SELECT works").len(), 0);
    let err = source.check_streaming().await.expect_err("no REPLICATION");
    assert!(matches!(err, PostgresError::MissingPrivilege { .. }), "{err}");
    assert!(err.to_string().contains("ALTER ROLE \"lynq_e2e_norepl\" REPLICATION"), "{err}");
    let err = source.start(false).await.err().expect("start must fail");
    assert!(matches!(err, PostgresError::MissingPrivilege { .. }), "{err}");
    let err = source.ensure_publication().await.expect_err("not the table owner");
    assert!(matches!(err, PostgresError::MissingPrivilege { .. }), "{err}");
    assert!(err.to_string().contains("cannot create publication"), "{err}");
}

#[tokio::test]
async fn a_users_publication_is_used_checked_and_never_dropped() {
    let url = test_url();
    let _shared = SERVER_SETTINGS.read().await;
    let admin = admin(&url).await;
    let mut config = config(&url, "e2e_userpub", "uid", &[]);
    config.publication_name = "E2E User Pub".into();
    fresh(
        &admin,
        &config,
        "CREATE TABLE e2e_userpub (uid text PRIMARY KEY);
         CREATE TABLE IF NOT EXISTS e2e_userpub_other (id int);
         DROP PUBLICATION IF EXISTS \"E2E User Pub\";
         CREATE PUBLICATION \"E2E User Pub\" FOR TABLE e2e_userpub_other",
    )
    .await;
    let source = PostgresSource::new(config).expect("config");
    let err = source.ensure_publication().await.expect_err("table not published");
    assert!(matches!(err, PostgresError::PublicationIncomplete { .. }), "{err}");
    admin.batch_execute("ALTER PUBLICATION \"E2E User Pub\" ADD TABLE e2e_userpub").await.expect("add table");
    let (mut stream, _) = start_with_snapshot(&source, false).await;
    let theirs = PublicationStatus { created_now: false, owned_by_lynq: false };
    assert_eq!(stream.publication(), theirs);
    admin.batch_execute("INSERT INTO e2e_userpub VALUES ('q')").await.expect("insert");
    let tx = next_transaction(&mut stream).await;
    assert_eq!(tx.changes, vec![RowChange::Insert { after: row(&[("uid", "q")]) }]);
    stream.shutdown().await.expect("shutdown");
    source.drop_slot().await.expect("drop slot");
    assert!(!source.drop_publication().await.expect("drop publication"));
    let still_there =
        admin.query_opt("SELECT 1 FROM pg_publication WHERE pubname = 'E2E User Pub'", &[]).await.expect("query");
    assert!(still_there.is_some());
}

#[test]
fn stream_and_source_can_move_between_tasks() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<PostgresStream>();
    assert_send::<PostgresSource>();
}

#[tokio::test]
async fn ack_advances_the_slot_and_resume_continues_after_it() {
    let Fixture { url: _, admin, config, _shared } = fixture(
        "e2e_ack",
        &[],
        "CREATE TABLE e2e_ack (uid text PRIMARY KEY); CREATE TABLE IF NOT EXISTS e2e_ack_other (id int)",
    )
    .await;
    let slot = config.slot_name.clone();
    let source = PostgresSource::new(config).expect("config");
    let (mut stream, snapshot) = start_with_snapshot(&source, false).await;
    stream.ack(lsn(&snapshot.position));
    let health = source.slot_health().await.expect("health").expect("slot exists");
    assert_eq!(health.confirmed_flush_lsn, Some(lsn(&snapshot.position)));
    assert!(health.retained_wal_bytes.is_some() && health.behind_bytes.is_some());

    admin.batch_execute("INSERT INTO e2e_ack VALUES ('a')").await.expect("insert");
    let tx = next_transaction(&mut stream).await;
    let applied = lsn(&tx.position);
    stream.ack(applied);
    let advanced = async {
        loop {
            let health = source.slot_health().await.expect("health").expect("slot");
            if health.confirmed_flush_lsn >= Some(applied) {
                return health;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    timeout(GUARD, advanced).await.expect("confirmed_flush_lsn reaches the ack");
    stream.shutdown().await.expect("shutdown");
    wait_slot_inactive(&admin, &slot).await;

    admin.batch_execute("INSERT INTO e2e_ack VALUES ('b')").await.expect("insert");
    let mut resumed = source.start(true).await.expect("resume");
    assert_eq!(resumed.snapshot_reason(), None);
    let tx = next_transaction(&mut resumed).await;
    assert_eq!(tx.changes, vec![RowChange::Insert { after: row(&[("uid", "b")]) }]);
    let b = lsn(&tx.position);

    // Idle heartbeats are acknowledged only once every delivered transaction was acked.
    admin.batch_execute("INSERT INTO e2e_ack_other VALUES (1)").await.expect("unpublished write");
    let first = next_heartbeat(&mut resumed).await;
    assert!(resumed.acked() < b, "heartbeat {first:#x} acked past the unapplied transaction");
    resumed.ack(b);
    admin.batch_execute("INSERT INTO e2e_ack_other VALUES (2)").await.expect("unpublished write");
    let second = next_heartbeat(&mut resumed).await;
    assert!(second >= b);
    assert_eq!(resumed.acked(), second.max(b));
    resumed.shutdown().await.expect("shutdown");
    source.drop_slot().await.expect("drop slot");
    assert_eq!(source.slot_health().await.expect("health"), None);
}

#[tokio::test]
async fn stale_walsender_is_terminated_on_resume() {
    let Fixture { url: _, admin, config, _shared } =
        fixture("e2e_stale", &[], "CREATE TABLE e2e_stale (uid text PRIMARY KEY)").await;
    let source = PostgresSource::new(config).expect("config");
    // The first stream stays open, as a crashed-but-connected previous instance would.
    let (_stale, _) = start_with_snapshot(&source, false).await;
    let mut resumed = source.start(true).await.expect("resume takes the slot over");
    admin.batch_execute("INSERT INTO e2e_stale VALUES ('x')").await.expect("insert");
    let tx = next_transaction(&mut resumed).await;
    assert_eq!(tx.changes, vec![RowChange::Insert { after: row(&[("uid", "x")]) }]);
    resumed.shutdown().await.expect("shutdown");
    source.drop_slot().await.expect("drop slot");
}

#[tokio::test]
async fn invalidated_slot_is_recreated_with_a_snapshot() {
    let url = test_url();
    let _alone = SERVER_SETTINGS.write().await;
    let admin = admin(&url).await;
    let config = config(&url, "e2e_lost", "uid", &[]);
    fresh(&admin, &config, "CREATE TABLE e2e_lost (uid text PRIMARY KEY)").await;
    let slot = config.slot_name.clone();
    let source = PostgresSource::new(config).expect("config");
    let (stream, _) = start_with_snapshot(&source, false).await;
    stream.shutdown().await.expect("shutdown");
    wait_slot_inactive(&admin, &slot).await;

    // cdc.md §4: a 1MB keep size, >16MB of WAL, a segment switch and a checkpoint lose the slot.
    // Each statement alone: ALTER SYSTEM, pg_switch_wal and CHECKPOINT refuse a transaction block.
    let run = async |statements: &[&str]| {
        for statement in statements {
            admin.batch_execute(statement).await.expect(statement);
        }
    };
    run(&[
        "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'",
        "SELECT pg_reload_conf()",
        "DROP TABLE IF EXISTS e2e_lost_fill",
        "CREATE TABLE e2e_lost_fill AS SELECT repeat('x', 1000) AS v FROM generate_series(1, 40000)",
        "SELECT pg_switch_wal()",
        "CHECKPOINT",
    ])
    .await;
    let status = source.slot_health().await.expect("health").and_then(|h| h.wal_status);
    run(&[
        "ALTER SYSTEM RESET max_slot_wal_keep_size",
        "SELECT pg_reload_conf()",
        "DROP TABLE e2e_lost_fill",
        "INSERT INTO e2e_lost VALUES ('after-loss')",
    ])
    .await;
    assert_eq!(status.as_deref(), Some("lost"));

    let (stream, snapshot) = start_with_snapshot(&source, true).await;
    assert_eq!(snapshot.reason, SnapshotReason::SlotInvalidated);
    assert_eq!(snapshot.rows, vec![row(&[("uid", "after-loss")])]);
    stream.shutdown().await.expect("shutdown");
    source.drop_slot().await.expect("drop slot");
}

/// `LYNQ_TEST_PG_TLS_CA`: a CA (PEM) whose certificate the server presents for "localhost".
/// A private PostgreSQL serving TLS with a certificate for `localhost` issued by a throw-away CA
/// (made with the `openssl` command line); returns the server and the CA certificate's path.
async fn tls_server(dir: &std::path::Path) -> (crate::localenv::Postgres, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("extension file");
    openssl(
        &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=lynq-test-ca"]
            .into_iter()
            .chain(["-keyout", "ca.key", "-out", "ca.crt"])
            .collect::<Vec<_>>(),
    );
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    openssl(
        &["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1"]
            .into_iter()
            .chain(["-extfile", "server.ext", "-out", "server.crt"])
            .collect::<Vec<_>>(),
    );
    // The server reads its key as the postgres user, and only from a file no one else may read.
    let postgres = nix::unistd::User::from_name("postgres").expect("user lookup").expect("a postgres user");
    for file in ["server.crt", "server.key"] {
        nix::unistd::chown(&dir.join(file), Some(postgres.uid), Some(postgres.gid)).expect("chown");
    }
    std::fs::set_permissions(dir.join("server.key"), std::fs::Permissions::from_mode(0o600)).expect("chmod key");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let cert = format!("ssl_cert_file={}", dir.join("server.crt").display());
    let key = format!("ssl_key_file={}", dir.join("server.key").display());
    let server = crate::localenv::Postgres::start_with_settings(dir, dir, &["ssl=on", &cert, &key])
        .await
        .expect("a private PostgreSQL with TLS");
    (server, dir.join("ca.crt"))
}

/// Whether the walsender streaming from `slot` uses TLS.
async fn walsender_uses_tls(admin: &Client, slot: &str) -> bool {
    admin
        .query_one(
            "SELECT s.ssl FROM pg_stat_ssl s
             JOIN pg_replication_slots r ON r.active_pid = s.pid WHERE r.slot_name = $1",
            &[&slot],
        )
        .await
        .expect("walsender TLS state")
        .get(0)
}

#[tokio::test]
async fn tls_modes_reach_both_connections() {
    let dir = tempfile::Builder::new().prefix("lynq-pg-tls-").tempdir().expect("temporary directory");
    let (server, ca) = tls_server(dir.path()).await;
    let url = server.url.clone();
    let admin = admin(&url).await;
    let base = config(&url, "e2e_tls", "uid", &[]);
    fresh(&admin, &base, "CREATE TABLE e2e_tls (uid text PRIMARY KEY)").await;

    // Require: encrypted, certificate not checked (the IP does not match the certificate).
    let require = PostgresSource::new(PostgresConfig { ssl_mode: SslMode::Require, ..base.clone() }).expect("config");
    let (stream, _) = start_with_snapshot(&require, false).await;
    assert!(walsender_uses_tls(&admin, &base.slot_name).await);
    stream.shutdown().await.expect("shutdown");

    // VerifyFull against the given CA and the certificate's host name.
    let verified = PostgresSource::new(PostgresConfig {
        host: "localhost".into(),
        ssl_mode: SslMode::VerifyFull,
        ca_cert_path: Some(ca),
        ..base.clone()
    })
    .expect("config");
    wait_slot_inactive(&admin, &base.slot_name).await;
    let stream = verified.start(true).await.expect("verified start");
    assert!(walsender_uses_tls(&admin, &base.slot_name).await);
    stream.shutdown().await.expect("shutdown");

    // VerifyFull against the public roots rejects the private certificate.
    let untrusted =
        PostgresSource::new(PostgresConfig { host: "localhost".into(), ssl_mode: SslMode::VerifyFull, ..base.clone() })
            .expect("config");
    let err = untrusted.check_streaming().await.expect_err("untrusted certificate");
    assert!(matches!(err, PostgresError::Tls { .. }), "{err}");
    require.drop_slot().await.expect("drop slot");
    server.stop(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn wrong_password_is_an_authentication_error_on_both_connections() {
    let url = test_url();
    let _shared = SERVER_SETTINGS.read().await;
    let mut config = config(&url, "e2e_auth", "uid", &[]);
    config.password = "definitely-wrong".into();
    let source = PostgresSource::new(config).expect("config");
    let sql = source.check_streaming().await;
    if sql.is_ok() {
        eprintln!("skipping authentication test: the server trusts this user without a password");
        return;
    }
    assert!(matches!(sql, Err(PostgresError::Authentication { .. })), "{sql:?}");
    // The walsender session on its own (the public API checks over SQL first).
    let walsender = super::replication::drop_slot(source.config()).await;
    assert!(matches!(walsender, Err(PostgresError::Authentication { .. })), "{walsender:?}");
}

/// `boolean` columns read as Go's database/sql shows them (`true`/`false`), in the snapshot, the
/// resync read and the stream alike, so a boolean activate column works with Lynq's truthy set.
#[tokio::test]
async fn booleans_read_as_true_and_false_everywhere() {
    let Fixture { url: _, admin, config, _shared } = fixture(
        "e2e_booleans",
        &["active", "note"],
        "CREATE TABLE e2e_booleans (uid text PRIMARY KEY, active boolean, note text)",
    )
    .await;
    admin
        .batch_execute("INSERT INTO e2e_booleans VALUES ('a', true, 't'), ('b', false, 'f'), ('c', NULL, NULL)")
        .await
        .expect("seed");
    let source = PostgresSource::new(config).expect("config");
    let (mut stream, snapshot) = start_with_snapshot(&source, false).await;
    let expected = vec![
        row(&[("uid", "a"), ("active", "true"), ("note", "t")]),
        row(&[("uid", "b"), ("active", "false"), ("note", "f")]),
        [("uid".to_string(), text("c")), ("active".into(), ColumnValue::Null), ("note".into(), ColumnValue::Null)]
            .into_iter()
            .collect(),
    ];
    let sorted = |mut rows: Vec<Row>| {
        rows.sort_by_key(uid_of);
        rows
    };
    assert_eq!(sorted(snapshot.rows), expected, "snapshot (text columns that say t/f stay as they are)");
    assert_eq!(sorted(source.read_table().await.expect("resync read")), expected, "resync read");

    admin.batch_execute("UPDATE e2e_booleans SET active = NOT active WHERE uid = 'a'").await.expect("update");
    match next_transaction(&mut stream).await.changes.as_slice() {
        [RowChange::Update { after, .. }] => assert_eq!(after.get("active"), Some(&text("false")), "{after:?}"),
        other => panic!("one update expected, got {other:?}"),
    }
    stream.shutdown().await.expect("shutdown");
    source.drop_slot().await.expect("drop slot");
    source.drop_publication().await.expect("drop publication");
}
