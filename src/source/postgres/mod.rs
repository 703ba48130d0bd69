//! PostgreSQL change-data-capture: a consistent snapshot, then pgoutput logical replication.
//!
//! SQL (checks, publication, polling reads) goes over tokio-postgres; the walsender session over
//! pgwire-replication; pgoutput is decoded by [`pgoutput`]. Both sessions pin the same settings
//! so snapshot text and stream text are byte-identical. The replication slot is the durable
//! checkpoint: the hub acknowledges a transaction's position only after applying it.

#[doc(hidden)]
pub mod bench_decode;
mod error;
mod names;
pub mod pgoutput;
mod replication;
mod sql;
mod stream;
mod tls;

#[cfg(test)]
mod e2e_tests;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use error::PostgresError;
pub use names::{derive_publication_name, derive_slot_name};
pub use replication::PostgresStream;
pub use sql::{PublicationStatus, SlotHealth};

use crate::source::Row;

/// Settings pinned on both sessions so both render values identically (cdc.md §3.2).
const SESSION_OPTIONS: &str = "-c DateStyle=ISO -c TimeZone=UTC -c IntervalStyle=postgres \
                               -c extra_float_digits=1 -c bytea_output=hex";

/// TLS use, as libpq's `sslmode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it (unverified), else plain.
    #[default]
    Prefer,
    /// TLS, without certificate verification.
    Require,
    /// TLS with chain and host name verified (webpki roots, or `ca_cert_path`).
    VerifyFull,
}

/// Where and what to read.
#[derive(Clone)]
pub struct PostgresConfig {
    /// Host name, IP address, or a Unix socket directory (starting with `/`).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Database name.
    pub database: String,
    /// Schema of the hub's table.
    pub schema: String,
    /// The hub's table.
    pub table: String,
    /// Role to connect as.
    pub username: String,
    /// Password (SCRAM-SHA-256 or cleartext as the server asks).
    pub password: String,
    /// TLS use.
    pub ssl_mode: SslMode,
    /// CA certificates (PEM) for [`SslMode::VerifyFull`]; the webpki roots when unset.
    pub ca_cert_path: Option<PathBuf>,
    /// Replication slot name (`[a-z0-9_]`, ≤ 63), e.g. from [`derive_slot_name`].
    pub slot_name: String,
    /// Publication to stream; created FOR TABLE schema.table when missing.
    pub publication_name: String,
    /// Mapped columns to read (the uid column is always read too).
    pub columns: Vec<String>,
    /// The column that identifies a row for the hub.
    pub uid_column: String,
    /// Limit on CREATE_REPLICATION_SLOT, which waits for running transactions.
    pub slot_create_timeout: Duration,
    /// Limit on establishing the SQL session.
    pub connect_timeout: Duration,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 5432,
            database: "postgres".into(),
            schema: "public".into(),
            table: String::new(),
            username: "postgres".into(),
            password: String::new(),
            ssl_mode: SslMode::default(),
            ca_cert_path: None,
            slot_name: String::new(),
            publication_name: String::new(),
            columns: Vec::new(),
            uid_column: String::new(),
            slot_create_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl fmt::Debug for PostgresConfig {
    // Hand-written so the password never reaches logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("schema", &self.schema)
            .field("table", &self.table)
            .field("username", &self.username)
            .field("password", &"***")
            .field("ssl_mode", &self.ssl_mode)
            .field("ca_cert_path", &self.ca_cert_path)
            .field("slot_name", &self.slot_name)
            .field("publication_name", &self.publication_name)
            .field("columns", &self.columns)
            .field("uid_column", &self.uid_column)
            .finish_non_exhaustive()
    }
}

impl PostgresConfig {
    /// `host:port/database`, for messages.
    pub fn target(&self) -> String {
        format!("{}:{}/{}", self.host, self.port, self.database)
    }

    /// `schema.table`, for messages.
    pub fn qualified_table_name(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    /// The uid column followed by the mapped columns, without duplicates.
    pub fn read_columns(&self) -> Vec<String> {
        let mut columns = vec![self.uid_column.clone()];
        for column in &self.columns {
            if !columns.contains(column) {
                columns.push(column.clone());
            }
        }
        columns
    }

    fn validate(&self) -> Result<(), PostgresError> {
        let missing = [
            ("host", &self.host),
            ("database", &self.database),
            ("schema", &self.schema),
            ("table", &self.table),
            ("username", &self.username),
            ("publication_name", &self.publication_name),
            ("uid_column", &self.uid_column),
        ]
        .into_iter()
        .find(|(_, value)| value.is_empty());
        if let Some((field, _)) = missing {
            return Err(PostgresError::InvalidConfig(format!("{field} is empty")));
        }
        if !names::is_valid_slot_name(&self.slot_name) {
            return Err(PostgresError::InvalidConfig(format!(
                "slot name {:?} must be 1-63 characters of a-z, 0-9 and _",
                self.slot_name
            )));
        }
        Ok(())
    }
}

/// The PostgreSQL source of one hub.
#[derive(Clone, Debug)]
pub struct PostgresSource {
    config: PostgresConfig,
}

impl PostgresSource {
    /// A source for `config`; fails when the configuration cannot work.
    pub fn new(config: PostgresConfig) -> Result<Self, PostgresError> {
        config.validate()?;
        Ok(Self { config })
    }

    /// The configuration.
    pub fn config(&self) -> &PostgresConfig {
        &self.config
    }

    /// Read every row of the table over the text protocol (polling and periodic resync).
    pub async fn read_table(&self) -> Result<Vec<Row>, PostgresError> {
        let client = sql::connect(&self.config).await?;
        sql::read_table(&self.config, &client).await
    }

    /// Fail with what is missing when the server or role cannot stream (wal_level, REPLICATION,
    /// free replication slots).
    pub async fn check_streaming(&self) -> Result<(), PostgresError> {
        let client = sql::connect(&self.config).await?;
        sql::check_streaming(&self.config, &client).await
    }

    /// Use the configured publication or create it (marked as lynq's with a comment).
    pub async fn ensure_publication(&self) -> Result<PublicationStatus, PostgresError> {
        let client = sql::connect(&self.config).await?;
        sql::ensure_publication(&self.config, &client).await
    }

    /// Every check that decides whether the hub can stream, on one connection and in order: the role
    /// may replicate, the publication exists or may be created, and the uid reaches deletes and updates.
    pub async fn streaming_checks(&self) -> Result<(), PostgresError> {
        let client = sql::connect(&self.config).await?;
        sql::check_streaming(&self.config, &client).await?;
        self.publication_check(&client).await?;
        sql::check_replica_identity(&self.config, &client).await
    }

    /// Whether the publication exists or this role may create it, without leaving anything behind:
    /// the creation is tried inside a transaction that is rolled back.
    async fn publication_check(&self, client: &tokio_postgres::Client) -> Result<(), PostgresError> {
        let ctx = self.config.context("checking the publication");
        client.batch_execute("BEGIN").await.map_err(|e| error::from_sql(ctx, e))?;
        let result = sql::ensure_publication(&self.config, client).await;
        let _ = client.batch_execute("ROLLBACK").await;
        result.map(|_| ())
    }

    /// Fail with the fix when the uid column's old value would not reach the stream.
    pub async fn check_replica_identity(&self) -> Result<(), PostgresError> {
        let client = sql::connect(&self.config).await?;
        sql::check_replica_identity(&self.config, &client).await
    }

    /// Start streaming. `resume`: the hub holds a checkpoint, so an existing healthy slot is
    /// resumed without a snapshot; a missing or invalidated slot is recreated with a snapshot
    /// (reason SlotMissing / SlotInvalidated). Without `resume` any old slot is replaced and an
    /// Initial snapshot is taken. The snapshot, when taken, is the stream's first event.
    pub async fn start(&self, resume: bool) -> Result<PostgresStream, PostgresError> {
        replication::open(&self.config, resume).await
    }

    /// Drop the replication slot (DROP_REPLICATION_SLOT … WAIT), first stopping a stale
    /// walsender that still holds it; false when it did not exist.
    pub async fn drop_slot(&self) -> Result<bool, PostgresError> {
        let client = sql::connect(&self.config).await?;
        let Some(slot) = sql::inspect_slot(&self.config, &client).await? else {
            return Ok(false);
        };
        if let Some(pid) = slot.active_pid {
            sql::release_slot(&self.config, &client, pid).await?;
        }
        replication::drop_slot(&self.config).await
    }

    /// Drop the publication if lynq created it; false when it is missing or someone else's.
    pub async fn drop_publication(&self) -> Result<bool, PostgresError> {
        let client = sql::connect(&self.config).await?;
        sql::drop_publication(&self.config, &client).await
    }

    /// Retained and pending WAL of the slot; None when the slot does not exist.
    pub async fn slot_health(&self) -> Result<Option<SlotHealth>, PostgresError> {
        let client = sql::connect(&self.config).await?;
        sql::slot_health(&self.config, &client).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_columns_put_uid_first_without_duplicates() {
        let config = PostgresConfig {
            uid_column: "uid".into(),
            columns: vec!["name".into(), "uid".into(), "plan".into()],
            ..PostgresConfig::default()
        };
        assert_eq!(config.read_columns(), vec!["uid", "name", "plan"]);
    }

    #[test]
    fn validation_names_the_bad_field_and_debug_hides_the_password() {
        let config = PostgresConfig {
            table: "tenants".into(),
            uid_column: "uid".into(),
            publication_name: "p".into(),
            slot_name: "Bad-Slot".into(),
            password: "s3cret".into(),
            ..PostgresConfig::default()
        };
        let err = PostgresSource::new(config.clone()).unwrap_err();
        assert!(err.to_string().contains("Bad-Slot"), "{err}");
        assert!(!format!("{config:?}").contains("s3cret"));
        let empty_table = PostgresConfig { table: String::new(), slot_name: "ok".into(), ..config };
        let err = PostgresSource::new(empty_table).unwrap_err();
        assert!(err.to_string().contains("table is empty"), "{err}");
    }
}
