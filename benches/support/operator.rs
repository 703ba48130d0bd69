//! The operator as its own `lynq run` process, so that its CPU time and memory (read from
//! `/proc/<pid>/stat` and `/proc/<pid>/status`) are the operator's alone.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::Context as _;
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// A running `lynq run`; stopped (SIGTERM, then SIGKILL) on [`Operator::stop`] or drop.
pub struct Operator {
    child: Child,
    health_port: u16,
}

/// CPU time and memory of a process at one moment.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ProcSample {
    /// User + system CPU seconds since the process started.
    pub cpu_seconds: f64,
    /// Resident set size, MiB.
    pub rss_mib: f64,
    /// Peak resident set size so far (VmHWM), MiB.
    pub peak_rss_mib: f64,
}

impl Operator {
    /// Starts `lynq run` watching `namespace`, logging to `log`, and waits until it is ready.
    pub async fn start(kubeconfig: &Path, namespace: &str, log: &Path) -> anyhow::Result<Self> {
        let health_port = lynq::localenv::process::free_port()?;
        let log_file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(env!("CARGO_BIN_EXE_lynq"))
            .arg("run")
            .args(["--watch-namespace", namespace, "--metrics-bind-address", "0"])
            .arg("--health-probe-bind-address")
            .arg(format!("127.0.0.1:{health_port}"))
            .args(["--log-format", "text"])
            .env("KUBECONFIG", kubeconfig)
            .env("LYNQ_LOG_LEVEL", std::env::var("LYNQ_BENCH_OPERATOR_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .context("spawning lynq run")?;
        let mut operator = Self { child, health_port };
        let what = format!("lynq run to be ready (log {})", log.display());
        super::wait_until(&what, Duration::from_secs(60), || {
            let ready = operator.is_ready();
            let exited = operator.child.try_wait().ok().flatten();
            async move {
                anyhow::ensure!(exited.is_none(), "lynq run exited with {exited:?}");
                Ok(ready.then_some(()))
            }
        })
        .await?;
        Ok(operator)
    }

    /// The operator's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn is_ready(&self) -> bool {
        http_status(self.health_port, "/readyz") == Some(200)
    }

    /// CPU time and memory now.
    pub fn sample(&self) -> anyhow::Result<ProcSample> {
        proc_sample(self.pid())
    }

    /// Stops the process gracefully and waits for it.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        for _ in 0..150 {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// The HTTP status of `GET path` on localhost, None when nothing answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).ok()?;
    stream.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(head.get(9..12)?).ok()?.parse().ok()
}

/// CPU seconds (utime + stime) and RSS of `pid`.
pub fn proc_sample(pid: u32) -> anyhow::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may contain spaces; fields are counted after its closing parenthesis.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).context("malformed /proc/pid/stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, i.e. 12 and 13 after the name (state is 3 → index 0).
    let ticks: u64 = fields
        .get(11)
        .zip(fields.get(12))
        .map_or(Ok(0), |(u, s)| Ok::<_, std::num::ParseIntError>(u.parse::<u64>()? + s.parse::<u64>()?))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok(ProcSample {
        cpu_seconds: ticks as f64 / clock_ticks_per_second(),
        rss_mib: kib("VmRSS:") / 1024.0,
        peak_rss_mib: kib("VmHWM:") / 1024.0,
    })
}

fn clock_ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().map_or(100.0, |t| t as f64)
}
