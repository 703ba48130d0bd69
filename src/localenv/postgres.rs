//! A private PostgreSQL 15 with `wal_level=logical`.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    EnvError, create_dir,
    process::{ManagedProcess, RunAs, free_port, port_open, run_to_completion, run_to_completion_as},
    write_file,
};

/// Superuser of the private instance.
pub const SUPERUSER: &str = "postgres";
/// Its password (host connections use scram-sha-256; the socket trusts).
pub const SUPERUSER_PASSWORD: &str = "lynq-admin";

/// A running PostgreSQL.
pub struct Postgres {
    /// `postgres://postgres:…@127.0.0.1:port/postgres`.
    pub url: String,
    /// TCP port.
    pub port: u16,
    /// Directory holding the Unix socket.
    pub socket_dir: PathBuf,
    process: ManagedProcess,
    launch: Launch,
}

/// How postgres was started, to start it again on the same data and port.
struct Launch {
    server: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    run_as: Option<RunAs>,
    psql: PathBuf,
    probe_args: Vec<String>,
}

impl Launch {
    async fn start(&self, port: u16) -> Result<ManagedProcess, EnvError> {
        let mut process = ManagedProcess::spawn_as("postgres", &self.server, &self.args, &self.log, self.run_as)?;
        process
            .wait_until("accepts queries", Duration::from_secs(60), || {
                let (psql, args) = (self.psql.clone(), self.probe_args.clone());
                async move { port_open(port).await && run_to_completion("psql", &psql, &args).await.is_ok() }
            })
            .await?;
        Ok(process)
    }
}

/// Where Debian installs the server binaries.
fn bin_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs.reverse();
    dirs
}

impl Postgres {
    /// Runs initdb, starts postgres and sets the superuser password.
    pub async fn start(root: &Path, logs: &Path) -> Result<Self, EnvError> {
        Self::start_with_settings(root, logs, &[]).await
    }

    /// As [`Postgres::start`], with extra `name=value` server settings that override the defaults
    /// (e.g. `wal_level=replica` to test a server that cannot decode logically).
    pub async fn start_with_settings(root: &Path, logs: &Path, extra: &[&str]) -> Result<Self, EnvError> {
        let bins = bin_dirs();
        let initdb = super::find_binary("initdb", &bins, "Debian package postgresql")?;
        let server = super::find_binary("postgres", &bins, "Debian package postgresql")?;
        let psql = super::find_binary("psql", &bins, "Debian package postgresql-client")?;
        let dir = root.join("postgres");
        let data = dir.join("data");
        let socket_dir = dir.join("run");
        create_dir(&data)?;
        create_dir(&socket_dir)?;
        // initdb and postgres refuse to run as root: run them as the postgres user, who must own the dirs.
        let run_as = postgres_user()?;
        for path in [&dir, &data, &socket_dir] {
            own(path, run_as)?;
        }
        let pwfile = dir.join("pwfile");
        write_file(&pwfile, SUPERUSER_PASSWORD)?;
        own(&pwfile, run_as)?;
        let initdb_args = vec![
            "-D".into(),
            data.display().to_string(),
            "-U".into(),
            SUPERUSER.into(),
            "--auth-local=trust".into(),
            "--auth-host=scram-sha-256".into(),
            format!("--pwfile={}", pwfile.display()),
            "--no-sync".into(),
            "-E".into(),
            "UTF8".into(),
            "--locale=C".into(),
        ];
        run_to_completion_as("initdb", &initdb, &initdb_args, run_as).await?;
        let port = free_port()?;
        let args = [
            vec!["-D".into(), data.display().to_string(), "-p".into(), port.to_string()],
            vec!["-k".into(), socket_dir.display().to_string()],
            settings(),
            extra.iter().flat_map(|setting| ["-c".to_owned(), (*setting).to_owned()]).collect(),
        ]
        .concat();
        let probe_args = vec![
            "-h".to_string(),
            socket_dir.display().to_string(),
            "-p".into(),
            port.to_string(),
            "-U".into(),
            SUPERUSER.into(),
            "-d".into(),
            "postgres".into(),
            "-Atc".into(),
            "SELECT 1".into(),
        ];
        let launch = Launch { server, args, log: logs.join("postgres.log"), run_as, psql, probe_args };
        let process = launch.start(port).await?;
        let url = format!("postgres://{SUPERUSER}:{SUPERUSER_PASSWORD}@127.0.0.1:{port}/postgres");
        Ok(Self { url, port, socket_dir, process, launch })
    }

    /// Stops the server (fast shutdown) and starts it again on the same data directory and port:
    /// every session drops; replication slots survive.
    pub async fn restart(self, grace: Duration) -> Result<Self, EnvError> {
        let Self { url, port, socket_dir, process, launch } = self;
        process.stop_with(nix::sys::signal::Signal::SIGINT, grace).await;
        let process = launch.start(port).await?;
        Ok(Self { url, port, socket_dir, process, launch })
    }

    /// Process id of the postmaster.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Stops the server with a "fast" shutdown (SIGINT): SIGTERM would wait for clients to leave.
    pub async fn stop(self, grace: Duration) {
        self.process.stop_with(nix::sys::signal::Signal::SIGINT, grace).await;
    }
}

fn settings() -> Vec<String> {
    [
        "listen_addresses=127.0.0.1",
        "wal_level=logical",
        "max_replication_slots=20",
        "max_wal_senders=20",
        "max_connections=200",
        "fsync=off",
        "synchronous_commit=off",
        "full_page_writes=off",
        "shared_buffers=64MB",
    ]
    .iter()
    .flat_map(|s| ["-c".to_string(), (*s).to_string()])
    .collect()
}

/// The `postgres` user when we are root (initdb and postgres refuse root), else nobody.
fn postgres_user() -> Result<Option<RunAs>, EnvError> {
    if !nix::unistd::getuid().is_root() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name("postgres").ok().flatten().ok_or_else(|| EnvError::MissingBinary {
        program: "user postgres".into(),
        hint: "PostgreSQL refuses to run as root and no postgres user exists; install Debian package postgresql".into(),
    })?;
    Ok(Some(RunAs { uid: user.uid.as_raw(), gid: user.gid.as_raw() }))
}

/// Hands `path` to the user the server runs as.
fn own(path: &Path, user: Option<RunAs>) -> Result<(), EnvError> {
    if let Some(user) = user {
        nix::unistd::chown(
            path,
            Some(nix::unistd::Uid::from_raw(user.uid)),
            Some(nix::unistd::Gid::from_raw(user.gid)),
        )
        .map_err(|e| EnvError::io(format!("chown {} to postgres", path.display()), e.into()))?;
    }
    Ok(())
}
