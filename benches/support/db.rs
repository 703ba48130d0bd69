//! SQL sessions on the environment's MariaDB and PostgreSQL: a database per run, a table per hub,
//! single-row inserts (the time the commit returns is the start of every latency) and bulk loads.

use anyhow::Context as _;
use mysql_async::prelude::Queryable;

/// Which database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Kind {
    /// MariaDB with a ROW binlog.
    Mysql,
    /// PostgreSQL with wal_level=logical.
    Postgres,
}

impl Kind {
    /// Short label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Mysql => "MariaDB",
            Self::Postgres => "PostgreSQL",
        }
    }
}

/// One SQL session.
pub enum Db {
    /// MariaDB connection.
    Mysql(mysql_async::Conn),
    /// PostgreSQL client; its connection runs on a task.
    Postgres(tokio_postgres::Client),
}

/// The database every phase's tables live in.
pub const DATABASE: &str = "bench";

impl Db {
    /// Connects with the admin URL of the environment (`…/` for MariaDB, `…/postgres` for PostgreSQL)
    /// to `database` (None: the admin URL's own).
    pub async fn connect(kind: Kind, admin_url: &str, database: Option<&str>) -> anyhow::Result<Self> {
        match kind {
            Kind::Mysql => {
                let url = format!("{}{}", admin_url, database.unwrap_or(""));
                Ok(Self::Mysql(mysql_async::Conn::from_url(url.as_str()).await?))
            }
            Kind::Postgres => {
                let url = match database {
                    Some(db) => format!("{}/{db}", admin_url.rsplit_once('/').context("URL has a database")?.0),
                    None => admin_url.to_owned(),
                };
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
                tokio::spawn(connection);
                // The local server runs with synchronous_commit=off (fast tests), which holds WAL
                // for up to wal_writer_delay (200 ms) before logical decoding may send it; a
                // production server commits synchronously, and so do the benchmark's sessions.
                client.batch_execute("SET synchronous_commit = on").await?;
                Ok(Self::Postgres(client))
            }
        }
    }

    /// Connects and creates [`DATABASE`] when it does not exist yet, returning a session in it.
    pub async fn bench_database(kind: Kind, admin_url: &str) -> anyhow::Result<Self> {
        let mut admin = Self::connect(kind, admin_url, None).await?;
        match kind {
            Kind::Mysql => admin.exec(&format!("CREATE DATABASE IF NOT EXISTS {DATABASE}")).await?,
            Kind::Postgres => {
                let exists = match &admin {
                    Self::Postgres(c) => {
                        !c.query("SELECT 1 FROM pg_database WHERE datname = $1", &[&DATABASE]).await?.is_empty()
                    }
                    Self::Mysql(_) => true,
                };
                if !exists {
                    admin.exec(&format!("CREATE DATABASE {DATABASE}")).await?;
                }
            }
        }
        Self::connect(kind, admin_url, Some(DATABASE)).await
    }

    /// Runs statements.
    pub async fn exec(&mut self, sql: &str) -> anyhow::Result<()> {
        match self {
            Self::Mysql(c) => c.query_drop(sql).await.with_context(|| format!("running {sql}")),
            Self::Postgres(c) => c.batch_execute(sql).await.with_context(|| format!("running {sql}")),
        }
    }

    /// Creates the hub table `table` (uid, activate flag, plan).
    pub async fn create_table(&mut self, table: &str) -> anyhow::Result<()> {
        let flag = match self {
            Self::Mysql(_) => "TINYINT(1)",
            Self::Postgres(_) => "BOOLEAN",
        };
        self.exec(&format!(
            "CREATE TABLE {table} (node_id VARCHAR(64) PRIMARY KEY, is_active {flag} NOT NULL, plan VARCHAR(32) NULL)"
        ))
        .await
    }

    /// Inserts active rows `uids` in one statement (one transaction when autocommit).
    pub async fn insert_rows(&mut self, table: &str, uids: &[String]) -> anyhow::Result<()> {
        if uids.is_empty() {
            return Ok(());
        }
        let active = match self {
            Self::Mysql(_) => "1",
            Self::Postgres(_) => "true",
        };
        let values: Vec<String> = uids.iter().map(|u| format!("('{u}', {active}, 'pro')")).collect();
        self.exec(&format!("INSERT INTO {table} (node_id, is_active, plan) VALUES {}", values.join(", "))).await
    }

    /// Inserts `uids` as one transaction of several statements of at most 1,000 rows.
    pub async fn insert_in_one_transaction(&mut self, table: &str, uids: &[String]) -> anyhow::Result<()> {
        self.exec(match self {
            Self::Mysql(_) => "START TRANSACTION",
            Self::Postgres(_) => "BEGIN",
        })
        .await?;
        for chunk in uids.chunks(1000) {
            self.insert_rows(table, chunk).await?;
        }
        self.exec("COMMIT").await
    }
}

/// `prefix-00042`-style uids.
pub fn uids(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i:05}")).collect()
}
