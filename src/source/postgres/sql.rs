//! Ordinary SQL on a tokio-postgres connection: checks, publication, slot inspection, table reads.

use std::time::Duration;

use tokio_postgres::{Client, SimpleQueryMessage};

use super::error::{Context, PostgresError, from_server, from_sql};
use super::names::{qualified_table, quote_ident};
use super::{PostgresConfig, SESSION_OPTIONS};
use crate::source::{ColumnValue, Row};

/// How long to wait for a terminated walsender to release its slot.
const RELEASE_POLL: Duration = Duration::from_millis(100);
const RELEASE_ATTEMPTS: u32 = 100;

/// The state of a replication slot as `pg_replication_slots` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SlotInfo {
    pub plugin: Option<String>,
    pub database: Option<String>,
    pub active_pid: Option<i32>,
    pub wal_status: Option<String>,
}

/// WAL retained and pending for a replication slot (cdc.md §3.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotHealth {
    /// A walsender is streaming from the slot.
    pub active: bool,
    /// The walsender's server process id.
    pub active_pid: Option<i32>,
    /// `reserved`, `extended`, `unreserved` or `lost`.
    pub wal_status: Option<String>,
    /// WAL left before the slot is invalidated, when `max_slot_wal_keep_size` is set.
    pub safe_wal_bytes: Option<i64>,
    /// WAL written since the last acknowledged position (`confirmed_flush_lsn`).
    pub behind_bytes: Option<i64>,
    /// WAL the slot keeps on disk (since `restart_lsn`).
    pub retained_wal_bytes: Option<i64>,
    /// The last acknowledged position.
    pub confirmed_flush_lsn: Option<u64>,
}

/// Comment lynq puts on publications it creates, so only those are ever dropped.
const OWNED_PUBLICATION_COMMENT: &str = "created by lynq";

/// The publication lynq streams from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicationStatus {
    /// lynq created it just now.
    pub created_now: bool,
    /// lynq created it (now or on an earlier start); the hub's finalizer may drop it.
    pub owned_by_lynq: bool,
}

/// Open a SQL session with the pinned session settings.
pub(crate) async fn connect(config: &PostgresConfig) -> Result<Client, PostgresError> {
    let ctx = config.context("connecting");
    let (ssl_mode, tls) =
        super::tls::sql_tls(config).map_err(|detail| PostgresError::Tls { target: config.target(), detail })?;
    let mut pg = tokio_postgres::Config::new();
    pg.host(&config.host)
        .port(config.port)
        .dbname(&config.database)
        .user(&config.username)
        .password(&config.password)
        .options(SESSION_OPTIONS)
        .application_name("lynq")
        .ssl_mode(ssl_mode)
        .connect_timeout(config.connect_timeout);
    let (client, connection) = pg.connect(tls).await.map_err(|e| from_sql(ctx, e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL SQL connection ended");
        }
    });
    Ok(client)
}

/// Fail precisely when the server or role cannot stream logical replication.
pub(crate) async fn check_streaming(config: &PostgresConfig, client: &Client) -> Result<(), PostgresError> {
    let ctx = config.context("checking logical replication settings");
    let row = client
        .query_one(
            "SELECT current_setting('wal_level'),
                    r.rolreplication OR r.rolsuper,
                    current_setting('max_replication_slots')::int4,
                    (SELECT count(*) FROM pg_replication_slots),
                    EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)
             FROM pg_roles r WHERE r.rolname = current_user",
            &[&config.slot_name],
        )
        .await
        .map_err(|e| from_sql(ctx, e))?;
    let wal_level: String = row.try_get(0).map_err(|e| from_sql(ctx, e))?;
    let can_replicate: bool = row.try_get(1).map_err(|e| from_sql(ctx, e))?;
    let max_slots: i32 = row.try_get(2).map_err(|e| from_sql(ctx, e))?;
    let used_slots: i64 = row.try_get(3).map_err(|e| from_sql(ctx, e))?;
    let slot_exists: bool = row.try_get(4).map_err(|e| from_sql(ctx, e))?;
    if wal_level != "logical" {
        return Err(PostgresError::WalLevelNotLogical { current: wal_level });
    }
    if !can_replicate {
        return Err(PostgresError::MissingPrivilege {
            what: format!(
                "role {} needs the REPLICATION attribute to stream changes (ALTER ROLE {} REPLICATION)",
                config.username,
                quote_ident(&config.username)
            ),
        });
    }
    if !slot_exists && i64::from(max_slots) <= used_slots {
        return Err(PostgresError::NoFreeReplicationSlot { max: max_slots, used: used_slots });
    }
    Ok(())
}

/// Use the configured publication, or create it FOR TABLE exactly the hub's table.
pub(crate) async fn ensure_publication(
    config: &PostgresConfig,
    client: &Client,
) -> Result<PublicationStatus, PostgresError> {
    let ctx = config.context("checking the publication");
    let row = client
        .query_opt(
            "SELECT p.pubinsert AND p.pubupdate AND p.pubdelete,
                    EXISTS (SELECT 1 FROM pg_publication_tables t
                            WHERE t.pubname = p.pubname AND t.schemaname = $2 AND t.tablename = $3),
                    obj_description(p.oid, 'pg_publication') IS NOT DISTINCT FROM $4
             FROM pg_publication p WHERE p.pubname = $1",
            &[&config.publication_name, &config.schema, &config.table, &OWNED_PUBLICATION_COMMENT],
        )
        .await
        .map_err(|e| from_sql(ctx, e))?;
    let Some(row) = row else {
        return create_publication(config, client).await;
    };
    let publishes_all: bool = row.try_get(0).map_err(|e| from_sql(ctx, e))?;
    let covers_table: bool = row.try_get(1).map_err(|e| from_sql(ctx, e))?;
    let owned_by_lynq: bool = row.try_get(2).map_err(|e| from_sql(ctx, e))?;
    let incomplete = |detail: &str| PostgresError::PublicationIncomplete {
        publication: config.publication_name.clone(),
        table: config.qualified_table_name(),
        detail: detail.to_owned(),
    };
    if !covers_table {
        return Err(incomplete("the table is not in the publication (ALTER PUBLICATION … ADD TABLE)"));
    }
    if !publishes_all {
        return Err(incomplete("it must publish insert, update and delete"));
    }
    Ok(PublicationStatus { created_now: false, owned_by_lynq })
}

async fn create_publication(config: &PostgresConfig, client: &Client) -> Result<PublicationStatus, PostgresError> {
    let ctx = config.context("creating the publication");
    let publication = quote_ident(&config.publication_name);
    let statement =
        format!("CREATE PUBLICATION {publication} FOR TABLE {}", qualified_table(&config.schema, &config.table));
    // One implicit transaction: the publication never exists without lynq's mark.
    let marked = format!("{statement}; COMMENT ON PUBLICATION {publication} IS '{OWNED_PUBLICATION_COMMENT}'");
    match client.batch_execute(&marked).await {
        Ok(()) => Ok(PublicationStatus { created_now: true, owned_by_lynq: true }),
        Err(e) => match e.as_db_error().map(|db| db.code().code()) {
            // Created concurrently by another session: check and use it.
            Some("42710") => Box::pin(ensure_publication(config, client)).await,
            Some("42501") => Err(PostgresError::MissingPrivilege {
                what: format!(
                    "role {} cannot create publication {}: it needs CREATE on database {} and ownership of table {}; or create it as an administrator: {statement}",
                    config.username,
                    config.publication_name,
                    config.database,
                    config.qualified_table_name()
                ),
            }),
            Some("42P01") => Err(PostgresError::TableMissing { table: config.qualified_table_name() }),
            _ => Err(from_sql(ctx, e)),
        },
    }
}

/// The uid column's old value must reach the stream: part of the replica identity key, or FULL.
pub(crate) async fn check_replica_identity(config: &PostgresConfig, client: &Client) -> Result<(), PostgresError> {
    let ctx = config.context("checking the replica identity");
    let row = client
        .query_opt(
            "SELECT c.relreplident::text,
                    EXISTS (SELECT 1 FROM pg_index i
                            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
                            WHERE i.indrelid = c.oid AND a.attname = $3
                              AND ((c.relreplident = 'd' AND i.indisprimary)
                                OR (c.relreplident = 'i' AND i.indisreplident)))
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&config.schema, &config.table, &config.uid_column],
        )
        .await
        .map_err(|e| from_sql(ctx, e))?;
    let Some(row) = row else {
        return Err(PostgresError::TableMissing { table: config.qualified_table_name() });
    };
    let identity: String = row.try_get(0).map_err(|e| from_sql(ctx, e))?;
    let covered: bool = row.try_get(1).map_err(|e| from_sql(ctx, e))?;
    if identity == "f" || covered {
        return Ok(());
    }
    Err(replica_identity_error(config))
}

/// The ReplicaIdentity error with both fixes spelled out for this table.
pub(crate) fn replica_identity_error(config: &PostgresConfig) -> PostgresError {
    let table = qualified_table(&config.schema, &config.table);
    let index = quote_ident(&format!("{}_{}_key", config.table, config.uid_column));
    PostgresError::ReplicaIdentity {
        table: config.qualified_table_name(),
        column: config.uid_column.clone(),
        fix: format!(
            "ALTER TABLE {table} REPLICA IDENTITY FULL; or CREATE UNIQUE INDEX {index} ON {table} ({}) \
             with the column NOT NULL, then ALTER TABLE {table} REPLICA IDENTITY USING INDEX {index}",
            quote_ident(&config.uid_column)
        ),
    }
}

/// The slot's row in `pg_replication_slots`, if it exists.
pub(crate) async fn inspect_slot(config: &PostgresConfig, client: &Client) -> Result<Option<SlotInfo>, PostgresError> {
    let ctx = config.context("inspecting the replication slot");
    let row = client
        .query_opt(
            "SELECT plugin::text, database::text, active_pid, wal_status
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&config.slot_name],
        )
        .await
        .map_err(|e| from_sql(ctx, e))?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(SlotInfo {
        plugin: row.try_get(0).map_err(|e| from_sql(ctx, e))?,
        database: row.try_get(1).map_err(|e| from_sql(ctx, e))?,
        active_pid: row.try_get(2).map_err(|e| from_sql(ctx, e))?,
        wal_status: row.try_get(3).map_err(|e| from_sql(ctx, e))?,
    }))
}

/// Stop a walsender that still holds the slot (a previous lynq session), then wait for release.
pub(crate) async fn release_slot(config: &PostgresConfig, client: &Client, pid: i32) -> Result<(), PostgresError> {
    let ctx = config.context("stopping the stale holder of the replication slot");
    let in_use = || PostgresError::SlotInUse {
        slot: config.slot_name.clone(),
        holder: format!("server process {pid} could not be stopped"),
    };
    tracing::info!(slot = %config.slot_name, pid, "terminating stale walsender holding the slot");
    let terminated: bool =
        client.query_one("SELECT pg_terminate_backend($1)", &[&pid]).await.and_then(|row| row.try_get(0)).map_err(
            |e| match e.as_db_error().map(|db| db.code().code()) {
                Some("42501") => in_use(),
                _ => from_sql(ctx, e),
            },
        )?;
    if !terminated {
        return Ok(()); // The process was already gone.
    }
    for _ in 0..RELEASE_ATTEMPTS {
        let active = client
            .query_opt("SELECT active FROM pg_replication_slots WHERE slot_name = $1", &[&config.slot_name])
            .await
            .map_err(|e| from_sql(ctx, e))?;
        let still_active = match active {
            Some(row) => row.try_get::<_, bool>(0).map_err(|e| from_sql(ctx, e))?,
            None => false,
        };
        if !still_active {
            return Ok(());
        }
        tokio::time::sleep(RELEASE_POLL).await;
    }
    Err(in_use())
}

/// Retained and pending WAL for the slot; `None` when the slot does not exist.
pub(crate) async fn slot_health(config: &PostgresConfig, client: &Client) -> Result<Option<SlotHealth>, PostgresError> {
    let ctx = config.context("reading replication slot health");
    let row = client
        .query_opt(
            "SELECT active, active_pid, wal_status, safe_wal_size,
                    pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::int8,
                    pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8,
                    confirmed_flush_lsn::text
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&config.slot_name],
        )
        .await
        .map_err(|e| from_sql(ctx, e))?;
    let Some(row) = row else { return Ok(None) };
    let confirmed: Option<String> = row.try_get(6).map_err(|e| from_sql(ctx, e))?;
    let confirmed_flush_lsn = confirmed
        .map(|text| {
            pgwire_replication::Lsn::parse(&text)
                .map(|lsn| lsn.0)
                .map_err(|e| PostgresError::Protocol { during: ctx.during, detail: e.to_string() })
        })
        .transpose()?;
    Ok(Some(SlotHealth {
        active: row.try_get(0).map_err(|e| from_sql(ctx, e))?,
        active_pid: row.try_get(1).map_err(|e| from_sql(ctx, e))?,
        wal_status: row.try_get(2).map_err(|e| from_sql(ctx, e))?,
        safe_wal_bytes: row.try_get(3).map_err(|e| from_sql(ctx, e))?,
        behind_bytes: row.try_get(4).map_err(|e| from_sql(ctx, e))?,
        retained_wal_bytes: row.try_get(5).map_err(|e| from_sql(ctx, e))?,
        confirmed_flush_lsn,
    }))
}

/// Drop the publication if lynq created it; false when it is missing or not lynq's.
pub(crate) async fn drop_publication(config: &PostgresConfig, client: &Client) -> Result<bool, PostgresError> {
    let ctx = config.context("dropping the publication");
    let owned = client
        .query_opt(
            "SELECT 1 FROM pg_publication p
             WHERE p.pubname = $1 AND obj_description(p.oid, 'pg_publication') = $2",
            &[&config.publication_name, &OWNED_PUBLICATION_COMMENT],
        )
        .await
        .map_err(|e| from_sql(ctx, e))?
        .is_some();
    if !owned {
        return Ok(false);
    }
    let statement = format!("DROP PUBLICATION IF EXISTS {}", quote_ident(&config.publication_name));
    client.batch_execute(&statement).await.map_err(|e| from_sql(ctx, e))?;
    Ok(true)
}

/// PostgreSQL's `boolean` type OID.
pub(crate) const BOOL_OID: u32 = 16;

/// A boolean as Go's database/sql shows it (`true`/`false`, strings Lynq's activate check accepts), where
/// PostgreSQL's text format says `t`/`f`; the snapshot, the resync and the stream all go through here.
pub(crate) fn boolean_text(text: String) -> String {
    match text.as_str() {
        "t" => "true".to_owned(),
        "f" => "false".to_owned(),
        _ => text,
    }
}

/// The names of the table's boolean columns, from the catalog.
pub(crate) fn boolean_columns_statement(config: &PostgresConfig) -> String {
    let table = qualified_table(&config.schema, &config.table).replace('\'', "''");
    format!(
        "SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = '{table}'::regclass \
         AND atttypid = {BOOL_OID} AND attnum > 0 AND NOT attisdropped"
    )
}

/// Rewrites the boolean columns of `rows` with [`boolean_text`].
pub(crate) fn normalize_booleans(rows: &mut [Row], boolean_columns: &[String]) {
    for row in rows {
        for column in boolean_columns {
            if let Some(ColumnValue::Text(text)) = row.get_mut(column) {
                *text = boolean_text(std::mem::take(text));
            }
        }
    }
}

/// `SELECT <columns> FROM <table>` as the hub's text protocol read.
pub(crate) fn select_statement(config: &PostgresConfig) -> String {
    let columns: Vec<String> = config.read_columns().iter().map(|c| quote_ident(c)).collect();
    format!("SELECT {} FROM {}", columns.join(", "), qualified_table(&config.schema, &config.table))
}

/// Read every row over the text protocol (simple query), so values match the stream's text.
pub(crate) async fn read_table(config: &PostgresConfig, client: &Client) -> Result<Vec<Row>, PostgresError> {
    let ctx = config.context("reading the table");
    let booleans =
        client.simple_query(&boolean_columns_statement(config)).await.map_err(|e| read_error(config, ctx, e))?;
    let boolean_columns: Vec<String> = booleans
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .collect();
    let messages = client.simple_query(&select_statement(config)).await.map_err(|e| read_error(config, ctx, e))?;
    let columns = config.read_columns();
    let mut rows = Vec::new();
    for message in messages {
        if let SimpleQueryMessage::Row(row) = message {
            let values = (0..columns.len()).map(|i| row.get(i).map(str::to_owned));
            rows.push(build_row(&columns, values));
        }
    }
    normalize_booleans(&mut rows, &boolean_columns);
    Ok(rows)
}

/// Zip column names with text values (None = NULL).
pub(crate) fn build_row(columns: &[String], values: impl IntoIterator<Item = Option<String>>) -> Row {
    columns
        .iter()
        .zip(values)
        .map(|(name, value)| {
            let value = value.map_or(ColumnValue::Null, ColumnValue::Text);
            (name.clone(), value)
        })
        .collect()
}

/// Table and column errors of a read get their own variants.
pub(crate) fn read_error(config: &PostgresConfig, ctx: Context<'_>, e: tokio_postgres::Error) -> PostgresError {
    match e.as_db_error() {
        Some(db) => read_server_error(config, ctx, db.code().code(), db.message()),
        None => from_sql(ctx, e),
    }
}

/// Map a server error of the table read by SQLSTATE.
pub(crate) fn read_server_error(config: &PostgresConfig, ctx: Context<'_>, code: &str, message: &str) -> PostgresError {
    match code {
        "42P01" => PostgresError::TableMissing { table: config.qualified_table_name() },
        "42703" => PostgresError::ColumnMissing {
            table: config.qualified_table_name(),
            column: quoted_name_in(message).unwrap_or_else(|| message.to_owned()),
        },
        _ => from_server(ctx, Some(code), message),
    }
}

/// The first `"…"`-quoted name in a server message.
fn quoted_name_in(message: &str) -> Option<String> {
    let (_, rest) = message.split_once('"')?;
    let (name, _) = rest.split_once('"')?;
    Some(name.to_owned())
}
