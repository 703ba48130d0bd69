//! MySQL/MariaDB source: table reads over the text protocol, consistent snapshots, and row changes
//! streamed from the binlog (mysql_async's `binlog` feature).
//!
//! One [`MysqlSource`] per hub owns one connection pool. Every pooled connection runs with
//! `time_zone='+00:00'`, so TIMESTAMP values read by `SELECT` equal the binlog's epoch rendered in UTC.
//!
//! The stream ([`MysqlSource::stream`]) is one replication connection: it yields events until the
//! first error and then ends. The hub reconnects (with backoff for [`MysqlSourceError::is_retryable`]
//! errors, or after a new snapshot for [`MysqlSourceError::needs_snapshot`]) from its last *applied*
//! position; apply is idempotent, so a replayed transaction is harmless.

#[doc(hidden)]
pub mod bench_decode;
mod error;
mod queries;
mod schema;
mod stream;
mod text;
mod tracker;

#[cfg(test)]
mod e2e_tests;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use mysql_async::{Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, SslOpts};

pub use error::MysqlSourceError;
pub use queries::{ServerFlavor, StreamingBlocker, StreamingSupport};
pub use text::TextError;

use error::ErrorContext;

/// TLS settings for the connection to the server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MysqlTls {
    /// PEM of the CA that signed the server certificate; the system roots are used when absent.
    pub ca_cert_pem: Option<String>,
    /// Accept any certificate and host name (testing only).
    pub skip_verify: bool,
}

/// Where and what a MySQL/MariaDB source reads.
#[derive(Clone, PartialEq, Eq)]
pub struct MysqlConfig {
    /// Server host name or IP.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// User name.
    pub username: String,
    /// Password (never printed by `Debug`).
    pub password: String,
    /// Database (schema) of the table.
    pub database: String,
    /// Table or view name (unquoted; see [`split_table`] for Lynq's `db.table` form).
    pub table: String,
    /// The mapped columns to read, in a stable order.
    pub columns: Vec<String>,
    /// Replica id used on the binlog connection; unique per hub (see [`derive_server_id`]).
    pub server_id: u32,
    /// TLS; plain TCP when `None`.
    pub tls: Option<MysqlTls>,
    /// How often the server sends a heartbeat on an idle stream; the read deadline is 3× this.
    pub heartbeat: Duration,
}

impl fmt::Debug for MysqlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("database", &self.database)
            .field("table", &self.table)
            .field("columns", &self.columns)
            .field("server_id", &self.server_id)
            .field("tls", &self.tls)
            .field("heartbeat", &self.heartbeat)
            .finish()
    }
}

/// First server_id handed out by [`derive_server_id`].
pub const SERVER_ID_BASE: u32 = 0xC000_0000;

/// A stable replica server_id for a hub, derived from its namespace and name.
///
/// Ids fall in `0xC000_0000..=0xFFFF_FFFE` (3221225472..4294967294): real servers and replicas are
/// conventionally numbered from 1 upwards or from IPv4 addresses in private ranges, so this top
/// quarter of the u32 space is unlikely to be in use, and 0 and 1 (the defaults) never occur.
/// Two hubs collide with probability ~1/1e9 per pair; set `server_id` explicitly if they do
/// (the stream then fails with [`MysqlSourceError::DuplicateServerId`]).
pub fn derive_server_id(namespace: &str, name: &str) -> u32 {
    // FNV-1a: stable across Rust versions and platforms, unlike DefaultHasher.
    let mut hash: u32 = 0x811c_9dc5;
    for byte in namespace.bytes().chain([b'/']).chain(name.bytes()) {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    SERVER_ID_BASE + hash % (u32::MAX - SERVER_ID_BASE)
}

/// Splits Lynq's table value: `db.table` names another database, a bare name uses `database`.
/// Backticks around either part are removed.
pub fn split_table(database: &str, table: &str) -> (String, String) {
    let unquote = |s: &str| s.trim().trim_matches('`').to_owned();
    match table.split_once('.') {
        Some((db, t)) if !table.starts_with('`') || table.contains("`.`") => (unquote(db), unquote(t)),
        _ => (database.to_owned(), unquote(table)),
    }
}

/// A MySQL/MariaDB table as a change source.
#[derive(Clone)]
pub struct MysqlSource {
    inner: Arc<Inner>,
}

struct Inner {
    config: MysqlConfig,
    opts: Opts,
    pool: Pool,
    ctx: ErrorContext,
}

impl MysqlSource {
    /// Creates the source and its pool; no connection is opened until first use.
    pub fn new(config: MysqlConfig) -> Self {
        let opts = connection_opts(&config);
        let pool = Pool::new(opts.clone());
        let ctx = ErrorContext { target: format!("{}:{}", config.host, config.port), user: config.username.clone() };
        Self { inner: Arc::new(Inner { config, opts, pool, ctx }) }
    }

    /// The configuration this source was built with.
    pub fn config(&self) -> &MysqlConfig {
        &self.inner.config
    }

    /// `db.table` for messages.
    fn object(&self) -> String {
        format!("{}.{}", self.inner.config.database, self.inner.config.table)
    }

    /// Closes the pool's idle connections (the stream holds its own connection).
    pub async fn close(&self) -> Result<(), MysqlSourceError> {
        self.inner.pool.clone().disconnect().await.map_err(|e| self.inner.ctx.connection("closing the pool", e))
    }
}

/// Connection options shared by the pool and the binlog connection.
fn connection_opts(config: &MysqlConfig) -> Opts {
    let constraints = PoolConstraints::new(0, 4).unwrap_or_default();
    let builder = OptsBuilder::default()
        .ip_or_hostname(config.host.clone())
        .tcp_port(config.port)
        .user(Some(config.username.clone()))
        .pass(Some(config.password.clone()))
        .db_name(Some(config.database.clone()))
        .tcp_keepalive(Some(Duration::from_secs(30)))
        // `setup` (unlike `init`) is re-run after the pool resets a connection.
        .setup(vec!["SET time_zone = '+00:00'"])
        .pool_opts(
            PoolOpts::default().with_constraints(constraints).with_inactive_connection_ttl(Duration::from_secs(60)),
        )
        .ssl_opts(config.tls.as_ref().map(ssl_opts));
    builder.into()
}

fn ssl_opts(tls: &MysqlTls) -> SslOpts {
    let mut opts = SslOpts::default()
        .with_danger_accept_invalid_certs(tls.skip_verify)
        .with_danger_skip_domain_validation(tls.skip_verify);
    if let Some(pem) = &tls.ca_cert_pem {
        opts = opts.with_root_certs(vec![pem.clone().into_bytes().into()]);
    }
    opts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_id_is_stable_and_in_range() {
        let a = derive_server_id("team-a", "tenants");
        assert_eq!(a, derive_server_id("team-a", "tenants"));
        assert_ne!(a, derive_server_id("team-b", "tenants"));
        // The separator keeps ("a/b","c") and ("a","b/c") apart only by value; distinct pairs differ.
        assert_ne!(derive_server_id("ab", "c"), derive_server_id("a", "bc"));
        for (ns, n) in [("", ""), ("x", "y"), ("default", "hub"), ("kube-system", "a-very-long-hub-name")] {
            let id = derive_server_id(ns, n);
            assert!((SERVER_ID_BASE..u32::MAX).contains(&id), "{id}");
        }
    }

    #[test]
    fn config_debug_hides_the_password() {
        let config = MysqlConfig {
            host: "h".into(),
            port: 3306,
            username: "u".into(),
            password: "s3cret".into(),
            database: "d".into(),
            table: "t".into(),
            columns: vec![],
            server_id: 7,
            tls: None,
            heartbeat: Duration::from_secs(1),
        };
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn lynq_table_values_are_split() {
        assert_eq!(split_table("app", "tenants"), ("app".into(), "tenants".into()));
        assert_eq!(split_table("app", "other.tenants"), ("other".into(), "tenants".into()));
        assert_eq!(split_table("app", "`other`.`tenants`"), ("other".into(), "tenants".into()));
        assert_eq!(split_table("app", "`we.ird`"), ("app".into(), "we.ird".into()));
    }
}
