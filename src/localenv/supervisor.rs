//! `lynq env up` / `lynq env down`: the local environment as a supervised background process.
//!
//! The supervisor owns every child. It stops them and removes their data when it receives SIGTERM or
//! SIGINT, or — with `--exit-on-stdin-eof`, which the test harness uses — when its standard input
//! closes, so that a test binary that panics or is killed never leaves a database or an apiserver behind.

use std::path::{Path, PathBuf};

use tokio::io::AsyncReadExt;

use super::{Components, EnvError, LocalEnv};

/// File in the state directory holding the supervisor's [`super::EnvInfo`] as JSON.
pub const STATE_FILE: &str = "env.json";

/// Starts the environment, announces it, and runs until told to stop.
pub async fn run(
    components: Components,
    log_dir: &Path,
    state_dir: Option<&Path>,
    exit_on_stdin_eof: bool,
) -> Result<(), EnvError> {
    let env = LocalEnv::start(components, log_dir).await?;
    let line = serde_json::to_string(&env.info).unwrap_or_default();
    if let Some(dir) = state_dir {
        super::create_dir(dir)?;
        super::write_file(&dir.join(STATE_FILE), &line)?;
    }
    // One JSON line on stdout is the contract with scripts and the test harness.
    println!("{line}");
    wait_for_stop(exit_on_stdin_eof).await;
    env.stop().await;
    if let Some(dir) = state_dir {
        let _ = std::fs::remove_file(dir.join(STATE_FILE));
    }
    Ok(())
}

async fn wait_for_stop(exit_on_stdin_eof: bool) {
    let stdin_closed = async {
        if exit_on_stdin_eof {
            let mut buf = [0u8; 64];
            let mut stdin = tokio::io::stdin();
            while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
        } else {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = stdin_closed => {}
        _ = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Stops the supervisor recorded in `state_dir` and waits until it has cleaned up.
pub async fn down(state_dir: &Path) -> Result<(), EnvError> {
    let state = state_dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&state).map_err(|e| EnvError::io(format!("reading {}", state.display()), e))?;
    let info: super::EnvInfo = serde_json::from_str(&text)
        .map_err(|e| EnvError::io(format!("parsing {}", state.display()), std::io::Error::other(e)))?;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(info.supervisor_pid).unwrap_or(i32::MAX));
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while nix::sys::signal::kill(pid, None).is_ok() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Default log directory for a label: `target/lynq-env-logs/<label>` under the current directory.
pub fn default_log_dir(label: &str) -> PathBuf {
    PathBuf::from("target").join("lynq-env-logs").join(label)
}
