//! A private MariaDB with a ROW binlog and full row metadata, as lynq's binlog source needs.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    EnvError, create_dir,
    process::{ManagedProcess, free_port, port_open, run_to_completion},
};

/// Admin user created for tests (all privileges, with grant option).
pub const ADMIN_USER: &str = "lynq";
/// Its password.
pub const ADMIN_PASSWORD: &str = "lynq-admin";

/// A running MariaDB.
pub struct MariaDb {
    /// `mysql://lynq:…@127.0.0.1:port/`.
    pub url: String,
    /// TCP port.
    pub port: u16,
    /// Unix socket path.
    pub socket: PathBuf,
    process: ManagedProcess,
    launch: Launch,
}

/// How mariadbd was started, to start it again on the same data and port.
struct Launch {
    server: PathBuf,
    args: Vec<String>,
    log: PathBuf,
}

impl Launch {
    async fn start(&self, socket: &Path, port: u16) -> Result<ManagedProcess, EnvError> {
        let mut process = ManagedProcess::spawn("mariadbd", &self.server, &self.args, &self.log)?;
        let sock = socket.to_path_buf();
        process
            .wait_until("socket and port accept connections", Duration::from_secs(60), || {
                let sock = sock.clone();
                async move { sock.exists() && port_open(port).await }
            })
            .await?;
        Ok(process)
    }
}

impl MariaDb {
    /// Initialises a data dir, starts mariadbd and creates the admin user.
    pub async fn start(root: &Path, logs: &Path) -> Result<Self, EnvError> {
        Self::start_with_server_args(root, logs, &[]).await
    }

    /// As [`MariaDb::start`], with extra mariadbd options that override the defaults (the last
    /// occurrence of an option wins), e.g. `--binlog-row-metadata=NO_LOG` to test a server's defaults.
    pub async fn start_with_server_args(root: &Path, logs: &Path, extra: &[&str]) -> Result<Self, EnvError> {
        let install = super::find_binary("mariadb-install-db", &[], "Debian package mariadb-server")?;
        let server = super::find_binary("mariadbd", &[PathBuf::from("/usr/sbin")], "Debian package mariadb-server")?;
        let client = super::find_binary("mariadb", &[], "Debian package mariadb-client")?;
        let dir = root.join("mariadb");
        let data = dir.join("data");
        create_dir(&data)?;
        // A private tmpdir: bootstraps running side by side in the shared /tmp once removed each
        // other's temporary tables ("Error on delete of '/tmp/#sql-temptable-…'").
        let tmp = dir.join("tmp");
        create_dir(&tmp)?;
        let tmpdir = format!("--tmpdir={}", tmp.display());
        let user = current_user();
        run_to_completion(
            "mariadb-install-db",
            &install,
            &[
                "--no-defaults".into(),
                format!("--datadir={}", data.display()),
                format!("--user={user}"),
                "--auth-root-authentication-method=normal".into(),
                "--skip-test-db".into(),
                tmpdir.clone(),
            ],
        )
        .await?;
        let port = free_port()?;
        let socket = dir.join("mysqld.sock");
        let args = vec![
            "--no-defaults".into(),
            format!("--datadir={}", data.display()),
            format!("--port={port}"),
            "--bind-address=127.0.0.1".into(),
            format!("--socket={}", socket.display()),
            format!("--pid-file={}", dir.join("mysqld.pid").display()),
            format!("--user={user}"),
            tmpdir,
            format!("--log-bin={}", data.join("binlog").display()),
            "--binlog-format=ROW".into(),
            "--binlog-row-image=FULL".into(),
            "--binlog-row-metadata=FULL".into(),
            "--server-id=1".into(),
            "--log-bin-compress=OFF".into(),
            "--skip-name-resolve".into(),
            "--innodb-buffer-pool-size=64M".into(),
            "--innodb-flush-log-at-trx-commit=2".into(),
            "--sync-binlog=0".into(),
            "--max-connections=500".into(),
        ];
        let args: Vec<String> = args.into_iter().chain(extra.iter().map(|a| (*a).to_owned())).collect();
        let launch = Launch { server, args, log: logs.join("mariadb.log") };
        let process = launch.start(&socket, port).await?;
        let grant = format!(
            "CREATE USER '{ADMIN_USER}'@'%' IDENTIFIED BY '{ADMIN_PASSWORD}'; \
             GRANT ALL PRIVILEGES ON *.* TO '{ADMIN_USER}'@'%' WITH GRANT OPTION; FLUSH PRIVILEGES;"
        );
        run_to_completion(
            "mariadb (create admin user)",
            &client,
            &["--no-defaults".into(), format!("--socket={}", socket.display()), "-uroot".into(), "-e".into(), grant],
        )
        .await?;
        let url = format!("mysql://{ADMIN_USER}:{ADMIN_PASSWORD}@127.0.0.1:{port}/");
        Ok(Self { url, port, socket, process, launch })
    }

    /// Stops mariadbd and starts it again on the same data directory and port (a server restart
    /// as clients see it: every connection drops, the binlog continues in a new file).
    pub async fn restart(self, grace: Duration) -> Result<Self, EnvError> {
        let Self { url, port, socket, process, launch } = self;
        process.stop(grace).await;
        let process = launch.start(&socket, port).await?;
        Ok(Self { url, port, socket, process, launch })
    }

    /// Process id of mariadbd.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Stops mariadbd.
    pub async fn stop(self, grace: Duration) {
        self.process.stop(grace).await;
    }
}

/// Name of the user running the environment (mariadbd refuses to run as root without --user=root).
pub(super) fn current_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid()).ok().flatten().map(|u| u.name).unwrap_or_else(|| "root".into())
}
