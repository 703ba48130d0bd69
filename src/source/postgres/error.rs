//! Errors of the PostgreSQL source, and their mapping from driver errors.

use pgwire_replication::PgWireError;
use thiserror::Error;

use super::PostgresConfig;
use super::pgoutput::DecodeError;

/// What went wrong in the PostgreSQL source.
#[derive(Debug, Error)]
pub enum PostgresError {
    /// The server could not be reached or the connection broke; retry with backoff.
    #[error("connection to PostgreSQL {target} failed: {detail}")]
    Connection { target: String, detail: String },
    /// The server refused the credentials.
    #[error("authentication to PostgreSQL as {user} failed: {detail}")]
    Authentication { user: String, detail: String },
    /// TLS could not be negotiated or verified.
    #[error("TLS to PostgreSQL {target} failed: {detail}")]
    Tls { target: String, detail: String },
    /// The role lacks a privilege or attribute.
    #[error("missing privilege: {what}")]
    MissingPrivilege { what: String },
    /// `wal_level` is not `logical`.
    #[error(
        "wal_level is '{current}' but logical replication needs 'logical': run ALTER SYSTEM SET wal_level = logical and restart PostgreSQL"
    )]
    WalLevelNotLogical { current: String },
    /// Every replication slot is taken.
    #[error(
        "no free replication slot: max_replication_slots is {max} and {used} are in use; raise max_replication_slots (restart needed) or drop unused slots"
    )]
    NoFreeReplicationSlot { max: i32, used: i64 },
    /// The replica identity does not carry the uid column's old value.
    #[error(
        "table {table}: deletes and uid changes cannot be streamed because the replica identity does not include column {column}; fix: {fix}"
    )]
    ReplicaIdentity { table: String, column: String, fix: String },
    /// The replication slot does not exist.
    #[error("replication slot {slot} does not exist")]
    SlotMissing { slot: String },
    /// The replication slot lost WAL it needed (`wal_status = lost`).
    #[error("replication slot {slot} was invalidated: the server removed WAL it still needed (max_slot_wal_keep_size)")]
    SlotInvalidated { slot: String },
    /// Another session streams from the slot and could not be stopped.
    #[error("replication slot {slot} is in use by another session: {holder}")]
    SlotInUse { slot: String, holder: String },
    /// Slot creation waited too long for transactions in progress.
    #[error(
        "creating replication slot {slot} timed out after {seconds}s (it waits for transactions in progress to finish)"
    )]
    SlotCreateTimeout { slot: String, seconds: u64 },
    /// The publication does not exist.
    #[error("publication {publication} does not exist")]
    PublicationMissing { publication: String },
    /// The publication exists but does not publish what lynq needs.
    #[error("publication {publication} does not cover table {table}: {detail}")]
    PublicationIncomplete { publication: String, table: String, detail: String },
    /// The table does not exist.
    #[error("table {table} does not exist")]
    TableMissing { table: String },
    /// A configured column is not in the table.
    #[error("column {column} does not exist in table {table}")]
    ColumnMissing { table: String, column: String },
    /// The configuration cannot work.
    #[error("invalid PostgreSQL source configuration: {0}")]
    InvalidConfig(String),
    /// A pgoutput message could not be decoded.
    #[error("cannot decode the replication stream: {0}")]
    Decode(#[from] DecodeError),
    /// The server sent something lynq does not expect.
    #[error("unexpected response from PostgreSQL while {during}: {detail}")]
    Protocol { during: &'static str, detail: String },
    /// Any other server error.
    #[error("PostgreSQL error while {during}: {message}")]
    Server { during: &'static str, code: Option<String>, message: String },
    /// The replication stream ended without an error.
    #[error("the replication stream of slot {slot} ended")]
    StreamEnded { slot: String },
}

impl PostgresError {
    /// True when retrying later with backoff may succeed without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Connection { .. }
                | Self::StreamEnded { .. }
                | Self::SlotCreateTimeout { .. }
                | Self::SlotInUse { .. }
        )
    }
}

/// Where an error happened, for messages and mapping.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Context<'a> {
    pub during: &'static str,
    pub config: &'a PostgresConfig,
}

impl Context<'_> {
    fn target(&self) -> String {
        self.config.target()
    }

    fn user(&self) -> String {
        self.config.username.clone()
    }
}

/// Map a tokio-postgres error.
pub(crate) fn from_sql(ctx: Context<'_>, err: tokio_postgres::Error) -> PostgresError {
    if let Some(db) = err.as_db_error() {
        return from_server(ctx, Some(db.code().code()), db.message());
    }
    let detail = with_sources(&err);
    if detail.contains("TLS") || detail.contains("certificate") {
        return PostgresError::Tls { target: ctx.target(), detail };
    }
    PostgresError::Connection { target: ctx.target(), detail: format!("while {}: {detail}", ctx.during) }
}

/// The error and its causes: tokio-postgres keeps the useful part (e.g. why TLS failed) there.
fn with_sources(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Map a pgwire-replication error.
pub(crate) fn from_pgwire(ctx: Context<'_>, err: PgWireError) -> PostgresError {
    match err {
        PgWireError::Server(text) => {
            let code = sqlstate_in(&text);
            from_server(ctx, code.as_deref(), &text)
        }
        PgWireError::Auth(detail) => PostgresError::Authentication { user: ctx.user(), detail },
        PgWireError::Tls(detail) => PostgresError::Tls { target: ctx.target(), detail },
        PgWireError::Protocol(detail) => PostgresError::Protocol { during: ctx.during, detail },
        other => PostgresError::Connection { target: ctx.target(), detail: format!("while {}: {other}", ctx.during) },
    }
}

/// Map a server error by SQLSTATE (and message, where one code has several meanings).
pub(crate) fn from_server(ctx: Context<'_>, code: Option<&str>, message: &str) -> PostgresError {
    let slot = || ctx.config.slot_name.clone();
    match code {
        Some("28000" | "28P01") => PostgresError::Authentication { user: ctx.user(), detail: message.to_owned() },
        Some("42501") => PostgresError::MissingPrivilege {
            what: format!("role {} while {}: {message}", ctx.config.username, ctx.during),
        },
        Some("42704") if message.contains("replication slot") => PostgresError::SlotMissing { slot: slot() },
        Some("42704") if message.contains("publication") => {
            PostgresError::PublicationMissing { publication: ctx.config.publication_name.clone() }
        }
        Some("55000") if message.contains("can no longer get changes") => {
            PostgresError::SlotInvalidated { slot: slot() }
        }
        Some("57P01" | "57P02" | "57P03" | "08000" | "08003" | "08006" | "53300") => {
            PostgresError::Connection { target: ctx.target(), detail: format!("while {}: {message}", ctx.during) }
        }
        _ => PostgresError::Server { during: ctx.during, code: code.map(str::to_owned), message: message.to_owned() },
    }
}

/// pgwire-replication renders server errors as text containing `SQLSTATE xxxxx`.
pub(crate) fn sqlstate_in(text: &str) -> Option<String> {
    let (_, rest) = text.split_once("SQLSTATE ")?;
    let code: String = rest.chars().take(5).collect();
    (code.len() == 5 && code.chars().all(|c| c.is_ascii_alphanumeric())).then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PostgresConfig {
        PostgresConfig {
            username: "lynq".into(),
            slot_name: "lynq_s".into(),
            publication_name: "lynq_p".into(),
            ..PostgresConfig::default()
        }
    }

    fn ctx(config: &PostgresConfig) -> Context<'_> {
        Context { during: "starting replication", config }
    }

    #[test]
    fn maps_pgwire_server_errors_by_sqlstate() {
        let missing = PgWireError::Server("ERROR: replication slot \"lynq_s\" does not exist (SQLSTATE 42704)".into());
        assert!(
            matches!(from_pgwire(ctx(&config()), missing), PostgresError::SlotMissing { slot } if slot == "lynq_s")
        );
        let lost = PgWireError::Server(
            "ERROR: can no longer get changes from replication slot \"lynq_s\" (SQLSTATE 55000)".into(),
        );
        assert!(matches!(from_pgwire(ctx(&config()), lost), PostgresError::SlotInvalidated { .. }));
        let denied = PgWireError::Server(
            "FATAL: must be superuser or replication role to start walsender (SQLSTATE 42501)".into(),
        );
        let err = from_pgwire(ctx(&config()), denied);
        assert!(matches!(err, PostgresError::MissingPrivilege { .. }));
        assert!(err.to_string().contains("replication role"), "{err}");
        let publication = PgWireError::Server("ERROR: publication \"lynq_p\" does not exist (SQLSTATE 42704)".into());
        assert!(matches!(
            from_pgwire(ctx(&config()), publication),
            PostgresError::PublicationMissing { publication } if publication == "lynq_p"
        ));
    }

    #[test]
    fn io_errors_are_retryable_connection_errors() {
        let io = PgWireError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let err = from_pgwire(ctx(&config()), io);
        assert!(matches!(err, PostgresError::Connection { .. }));
        assert!(err.is_retryable());
        assert!(!PostgresError::SlotMissing { slot: "s".into() }.is_retryable());
    }

    #[test]
    fn sqlstate_is_extracted_only_when_well_formed() {
        assert_eq!(sqlstate_in("x (SQLSTATE 42P01)"), Some("42P01".into()));
        assert_eq!(sqlstate_in("no code"), None);
        assert_eq!(sqlstate_in("SQLSTATE 4"), None);
    }
}
