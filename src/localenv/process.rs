//! Child processes of the local environment: spawned with their output in a log file, awaited until
//! ready with a deadline, stopped with SIGTERM then SIGKILL.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::process::{Child, Command};

use super::EnvError;

/// A running child process whose output goes to `log`.
pub struct ManagedProcess {
    /// Short name used in errors ("etcd", "kube-apiserver", …).
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl ManagedProcess {
    /// Spawns `program args…` in its own process group with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, program: &Path, args: &[String], log: &Path) -> Result<Self, EnvError> {
        Self::spawn_as(name, program, args, log, None)
    }

    /// Like [`ManagedProcess::spawn`], running as another user when `user` is given.
    pub fn spawn_as(
        name: &str,
        program: &Path,
        args: &[String],
        log: &Path,
        user: Option<RunAs>,
    ) -> Result<Self, EnvError> {
        let out = File::create(log).map_err(|e| EnvError::io(format!("creating log {}", log.display()), e))?;
        let err = out.try_clone().map_err(|e| EnvError::io(format!("cloning log {}", log.display()), e))?;
        let mut command = Command::new(program);
        if let Some(user) = user {
            command.uid(user.uid).gid(user.gid);
        }
        let child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Own process group: a Ctrl-C in the terminal reaches the supervisor, which stops
            // everything in order, instead of killing the database mid-write.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| EnvError::Spawn { name: name.into(), program: program.display().to_string(), source: e })?;
        Ok(Self { name: name.into(), child, log: log.to_path_buf() })
    }

    /// The OS process id, if the process has not been reaped yet.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Fails with the tail of the log when the process has already exited.
    pub fn ensure_running(&mut self) -> Result<(), EnvError> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(EnvError::Exited {
                name: self.name.clone(),
                status: status.to_string(),
                log: self.log.display().to_string(),
                tail: log_tail(&self.log, 15),
            }),
            Ok(None) => Ok(()),
            Err(e) => Err(EnvError::io(format!("waiting for {}", self.name), e)),
        }
    }

    /// Polls `probe` until it returns true, failing when the process exits or `deadline` passes.
    pub async fn wait_until<F, Fut>(&mut self, what: &str, deadline: Duration, mut probe: F) -> Result<(), EnvError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let start = tokio::time::Instant::now();
        loop {
            self.ensure_running()?;
            if probe().await {
                return Ok(());
            }
            if start.elapsed() > deadline {
                return Err(EnvError::NotReady {
                    name: self.name.clone(),
                    what: what.into(),
                    seconds: deadline.as_secs(),
                    log: self.log.display().to_string(),
                    tail: log_tail(&self.log, 15),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; waits until the process is reaped.
    pub async fn stop(self, grace: Duration) {
        self.stop_with(Signal::SIGTERM, grace).await;
    }

    /// `signal`, then SIGKILL after `grace`; waits until the process is reaped.
    pub async fn stop_with(mut self, signal: Signal, grace: Duration) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = kill(Pid::from_raw(pid), signal);
            if tokio::time::timeout(grace, self.child.wait()).await.is_ok() {
                return;
            }
        }
        let _ = self.child.kill().await;
    }
}

/// Last `lines` lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// User and group a child runs as (PostgreSQL refuses to run as root).
#[derive(Clone, Copy, Debug)]
pub struct RunAs {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Runs a short command to completion, failing with its output when it does not succeed.
pub async fn run_to_completion(name: &str, program: &Path, args: &[String]) -> Result<String, EnvError> {
    run_to_completion_as(name, program, args, None).await
}

/// Like [`run_to_completion`], running as another user when `user` is given.
pub async fn run_to_completion_as(
    name: &str,
    program: &Path,
    args: &[String],
    user: Option<RunAs>,
) -> Result<String, EnvError> {
    let mut command = Command::new(program);
    if let Some(user) = user {
        command.uid(user.uid).gid(user.gid);
    }
    let output = command.args(args).stdin(Stdio::null()).output().await.map_err(|e| EnvError::Spawn {
        name: name.into(),
        program: program.display().to_string(),
        source: e,
    })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(EnvError::CommandFailed {
            name: name.into(),
            status: output.status.to_string(),
            output: format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)),
        })
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16, EnvError> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| EnvError::io("finding a free port".into(), e))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| EnvError::io("finding a free port".into(), e))
}

/// True when something accepts TCP connections on 127.0.0.1:`port`.
pub async fn port_open(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
}
