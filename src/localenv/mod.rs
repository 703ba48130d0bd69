//! The local environment every integration test, benchmark and the demo run against: a real
//! Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager with the garbage-collector
//! and namespace controllers), a private MariaDB with a ROW binlog and a private PostgreSQL with
//! `wal_level=logical`, each on free ports with its data in a temporary directory.
//!
//! There is no kubelet and no scheduler: tests that need a Deployment or Job to become ready write
//! its status themselves, as envtest users do.

mod kubernetes;
mod mysql;
mod postgres;
pub mod process;
pub mod supervisor;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

pub use kubernetes::{ControlPlane, KUBE_VERSION, OPERATOR_SA_USER, admin_client};
pub use mysql::MariaDb;
pub use postgres::Postgres;

/// Why the local environment could not start.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// A required program is not installed.
    #[error("{program} not found ({hint}); run scripts/setup.sh to install what lynq's environment needs")]
    MissingBinary { program: String, hint: String },
    /// A program could not be started.
    #[error("starting {name} ({program}) failed: {source}")]
    Spawn { name: String, program: String, source: std::io::Error },
    /// A process exited while it should be running.
    #[error("{name} exited with {status}; log {log}:\n{tail}")]
    Exited { name: String, status: String, log: String, tail: String },
    /// A process did not become ready in time.
    #[error("{name} did not become ready ({what}) within {seconds}s; log {log}:\n{tail}")]
    NotReady { name: String, what: String, seconds: u64, log: String, tail: String },
    /// A set-up command failed.
    #[error("{name} failed with {status}:\n{output}")]
    CommandFailed { name: String, status: String, output: String },
    /// A file-system operation failed.
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

impl EnvError {
    fn io(what: String, source: std::io::Error) -> Self {
        Self::Io { what, source }
    }
}

/// Which parts to start.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Components {
    /// etcd + kube-apiserver + kube-controller-manager.
    pub kubernetes: bool,
    /// MariaDB with binlog.
    pub mysql: bool,
    /// PostgreSQL with logical replication.
    pub postgres: bool,
}

impl Components {
    /// Everything.
    pub const ALL: Self = Self { kubernetes: true, mysql: true, postgres: true };
}

/// How to reach a running environment; what `lynq env up` prints as one JSON line.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EnvInfo {
    /// Path of an admin kubeconfig.
    pub kubeconfig: Option<PathBuf>,
    /// Static bearer tokens known to the apiserver, by user name (admin, and the operator's ServiceAccount).
    pub tokens: Vec<(String, String)>,
    /// `mysql://user:password@127.0.0.1:port/` with all privileges.
    pub mysql_url: Option<String>,
    /// `postgres://user:password@127.0.0.1:port/postgres` (superuser).
    pub postgres_url: Option<String>,
    /// Where the logs of every process are kept.
    pub log_dir: PathBuf,
    /// Process id of the supervisor (for `lynq env down`).
    pub supervisor_pid: u32,
}

/// A running local environment; [`LocalEnv::stop`] stops it and removes its data.
pub struct LocalEnv {
    /// How to reach it.
    pub info: EnvInfo,
    control_plane: Option<ControlPlane>,
    mariadb: Option<MariaDb>,
    postgres: Option<Postgres>,
    data_dir: tempfile::TempDir,
}

impl LocalEnv {
    /// Starts the requested components; logs go to `log_dir` (emptied first), data to a temp dir.
    pub async fn start(components: Components, log_dir: &Path) -> Result<Self, EnvError> {
        reset_dir(log_dir)?;
        let data_dir = tempfile::Builder::new()
            .prefix("lynq-env-")
            .tempdir()
            .map_err(|e| EnvError::io("creating the environment's temp dir".into(), e))?;
        // PostgreSQL runs as its own user and must traverse into this directory.
        std::fs::set_permissions(data_dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(|e| EnvError::io("opening the environment's temp dir to the postgres user".into(), e))?;
        let mut env = Self {
            info: EnvInfo { log_dir: log_dir.to_path_buf(), supervisor_pid: std::process::id(), ..EnvInfo::default() },
            control_plane: None,
            mariadb: None,
            postgres: None,
            data_dir,
        };
        if let Err(e) = env.start_components(components).await {
            env.stop().await;
            return Err(e);
        }
        Ok(env)
    }

    async fn start_components(&mut self, components: Components) -> Result<(), EnvError> {
        let root = self.data_dir.path().to_path_buf();
        let logs = self.info.log_dir.clone();
        // The three start concurrently: together they take as long as the apiserver alone.
        let (k8s, my, pg) = tokio::join!(
            async {
                if components.kubernetes { Some(ControlPlane::start(&root, &logs).await).transpose() } else { Ok(None) }
            },
            async { if components.mysql { Some(MariaDb::start(&root, &logs).await).transpose() } else { Ok(None) } },
            async {
                if components.postgres { Some(Postgres::start(&root, &logs).await).transpose() } else { Ok(None) }
            },
        );
        // Keep whatever started so that stop() cleans it up even when another part failed.
        let mut first_error = None;
        match k8s {
            Ok(cp) => self.control_plane = cp,
            Err(e) => first_error = first_error.or(Some(e)),
        }
        match my {
            Ok(db) => self.mariadb = db,
            Err(e) => first_error = first_error.or(Some(e)),
        }
        match pg {
            Ok(db) => self.postgres = db,
            Err(e) => first_error = first_error.or(Some(e)),
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        if let Some(cp) = &self.control_plane {
            self.info.kubeconfig = Some(cp.kubeconfig.clone());
            self.info.tokens = cp.tokens.clone();
        }
        self.info.mysql_url = self.mariadb.as_ref().map(|m| m.url.clone());
        self.info.postgres_url = self.postgres.as_ref().map(|p| p.url.clone());
        Ok(())
    }

    /// Pids of every process of the environment (for leak checks).
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        if let Some(cp) = &self.control_plane {
            pids.extend(cp.pids());
        }
        pids.extend(self.mariadb.as_ref().and_then(MariaDb::pid));
        pids.extend(self.postgres.as_ref().and_then(Postgres::pid));
        pids
    }

    /// The temporary data directory (removed by `stop`).
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// Stops every process (controller-manager and apiserver before etcd) and removes the data.
    pub async fn stop(mut self) {
        let grace = Duration::from_secs(10);
        if let Some(cp) = self.control_plane.take() {
            cp.stop(grace).await;
        }
        if let Some(db) = self.mariadb.take() {
            db.stop(grace).await;
        }
        if let Some(db) = self.postgres.take() {
            db.stop(grace).await;
        }
        let path = self.data_dir.path().to_path_buf();
        if let Err(e) = self.data_dir.close() {
            tracing::warn!(path = %path.display(), error = %e, "removing the environment's data failed");
        }
    }
}

/// Finds a program on PATH or in the given extra directories.
pub fn find_binary(program: &str, extra_dirs: &[PathBuf], hint: &str) -> Result<PathBuf, EnvError> {
    let path_dirs = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default();
    extra_dirs
        .iter()
        .chain(path_dirs.iter())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| EnvError::MissingBinary { program: program.into(), hint: hint.into() })
}

fn reset_dir(dir: &Path) -> Result<(), EnvError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| EnvError::io(format!("emptying {}", dir.display()), e))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| EnvError::io(format!("creating {}", dir.display()), e))
}

fn create_dir(dir: &Path) -> Result<(), EnvError> {
    std::fs::create_dir_all(dir).map_err(|e| EnvError::io(format!("creating {}", dir.display()), e))
}

fn write_file(path: &Path, content: &str) -> Result<(), EnvError> {
    std::fs::write(path, content).map_err(|e| EnvError::io(format!("writing {}", path.display()), e))
}
