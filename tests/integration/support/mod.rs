//! Shared test support: one local environment per test binary, started lazily by the `lynq env up`
//! supervisor and stopped when this process exits (its stdin pipe closes, even on panic or kill).

#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Mutex, OnceLock},
    time::Duration,
};

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client, api::PostParams};
use lynq::localenv::EnvInfo;

/// The environment of this test binary and the supervisor that owns it.
struct Shared {
    info: EnvInfo,
    // Held open for the life of the process; dropping it at exit is what stops the environment.
    _supervisor: Mutex<Child>,
}

static ENV: OnceLock<Shared> = OnceLock::new();

/// The running environment (started on first use).
pub fn env() -> &'static EnvInfo {
    &ENV.get_or_init(|| {
        let (child, info) = start_supervisor("integration", &[]).unwrap_or_else(|e| panic!("local environment: {e}"));
        Shared { info, _supervisor: Mutex::new(child) }
    })
    .info
}

/// Starts a `lynq env up --exit-on-stdin-eof` supervisor and reads its JSON announcement.
pub fn start_supervisor(label: &str, extra_args: &[&str]) -> Result<(Child, EnvInfo), String> {
    let log_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("lynq-env-logs").join(label);
    let mut child = Command::new(env!("CARGO_BIN_EXE_lynq"))
        .args(["env", "up", "--exit-on-stdin-eof", "--log-dir"])
        .arg(&log_dir)
        .args(extra_args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawning lynq env up: {e}"))?;
    let stdout = child.stdout.take().ok_or("supervisor has no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).map_err(|e| format!("reading the supervisor's announcement: {e}"))?;
    if line.trim().is_empty() {
        let status = child.wait().map_err(|e| e.to_string())?;
        return Err(format!(
            "lynq env up exited ({status}) before announcing the environment; logs in {}",
            log_dir.display()
        ));
    }
    let info = serde_json::from_str(&line).map_err(|e| format!("parsing {line:?}: {e}"))?;
    Ok((child, info))
}

/// A kube client for the admin kubeconfig (one per test: clients are bound to the test's runtime).
/// Also routes the operator's logs to the test output, filtered by RUST_LOG.
pub async fn client() -> Client {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let path = env().kubeconfig.clone().expect("environment has a control plane");
    lynq::localenv::admin_client(&path).await.expect("admin client")
}

/// A fresh, uniquely named namespace.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let name = format!("{prefix}-{}", unique_suffix());
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("namespace");
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("create namespace");
    name
}

/// A short suffix unique within this machine's recent runs.
pub fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{n}", std::process::id())
}

/// Runs kubectl against the environment, returning stdout, or panicking with its output.
pub fn kubectl(args: &[&str]) -> String {
    let kubeconfig = env().kubeconfig.clone().expect("environment has a control plane");
    let out =
        Command::new("kubectl").arg("--kubeconfig").arg(&kubeconfig).args(args).output().expect("kubectl is installed");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Path of a test fixture.
pub fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(path)
}

/// Asserts that every field of `expected` is present in `actual` with the same value.
pub fn assert_contains(expected: &serde_json::Value, actual: &serde_json::Value, path: &str) {
    use serde_json::Value;
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, v) in e {
                let child = format!("{path}.{k}");
                let got = a.get(k).unwrap_or_else(|| panic!("{child} is missing in {actual}"));
                assert_contains(v, got, &child);
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            assert_eq!(e.len(), a.len(), "{path} has {} items, expected {}", a.len(), e.len());
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                assert_contains(ev, av, &format!("{path}[{i}]"));
            }
        }
        _ => assert_eq!(expected, actual, "{path} differs"),
    }
}

/// Polls `check` until it returns Some, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fresh MariaDB database for one test; returns its name and a URL pointing at it.
pub async fn mysql_database(prefix: &str) -> (String, String) {
    use mysql_async::prelude::Queryable;
    let admin_url = env().mysql_url.clone().expect("environment has MariaDB");
    let name = format!("{prefix}_{}", unique_suffix()).replace('-', "_");
    let mut conn = mysql_async::Conn::from_url(admin_url.as_str()).await.expect("connect to MariaDB");
    conn.query_drop(format!("CREATE DATABASE `{name}`")).await.expect("create database");
    conn.disconnect().await.expect("disconnect");
    (name.clone(), format!("{admin_url}{name}"))
}

/// A fresh PostgreSQL database for one test; returns its name and a URL pointing at it.
pub async fn pg_database(prefix: &str) -> (String, String) {
    let admin_url = env().postgres_url.clone().expect("environment has PostgreSQL");
    let name = format!("{prefix}_{}", unique_suffix()).replace('-', "_");
    let (client, connection) =
        tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await.expect("connect to PostgreSQL");
    let task = tokio::spawn(connection);
    client.batch_execute(&format!("CREATE DATABASE \"{name}\"")).await.expect("create database");
    drop(client);
    let _ = task.await;
    let base = admin_url.rsplit_once('/').map(|(b, _)| b.to_string()).expect("URL has a database");
    (name.clone(), format!("{base}/{name}"))
}

/// A minimal HTTP/1.1 GET to 127.0.0.1: status code, head and body (chunk framing, if any, is left in
/// the body; the operator's and Prometheus's endpoints answer with a Content-Length body).
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, head.to_string(), body.to_string()))
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    lynq::localenv::process::free_port().expect("a free port")
}

/// `lynq run` for namespace `ns` against the test environment, serving metrics and probes on the given
/// ports and writing its logs to `log`; callers add their own flags. Killed when dropped.
pub fn operator_command(
    ns: &str,
    metrics_port: u16,
    probe_port: u16,
    log: &std::path::Path,
) -> tokio::process::Command {
    let kubeconfig = env().kubeconfig.clone().expect("environment has a control plane");
    let log = std::fs::File::create(log).expect("operator log file");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_lynq"));
    command
        .args(["run", "--watch-namespace", ns])
        .arg(format!("--metrics-bind-address=127.0.0.1:{metrics_port}"))
        .arg(format!("--health-probe-bind-address=127.0.0.1:{probe_port}"))
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    command
}
