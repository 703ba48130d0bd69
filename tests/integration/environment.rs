//! The local environment starts, answers, and stops without leaving anything behind.

use std::{io::Write, time::Duration};

use mysql_async::prelude::Queryable;

use crate::support;

#[tokio::test]
async fn apiserver_answers_with_its_version() {
    let client = support::client().await;
    let version = client.apiserver_version().await.expect("version");
    assert_eq!(version.git_version, "v1.20.2");
}

#[tokio::test]
async fn mariadb_has_a_row_binlog() {
    let url = support::env().mysql_url.clone().expect("mysql");
    let mut conn = mysql_async::Conn::from_url(url.as_str()).await.expect("connect");
    let row: Option<(String, String, String, String)> = conn
        .query_first("SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@binlog_row_metadata")
        .await
        .expect("query");
    assert_eq!(row, Some(("1".into(), "ROW".into(), "FULL".into(), "FULL".into())));
    conn.disconnect().await.expect("disconnect");
}

#[tokio::test]
async fn each_test_gets_its_own_mariadb_database() {
    let (first, url) = support::mysql_database("isolation").await;
    let (second, _) = support::mysql_database("isolation").await;
    assert_ne!(first, second);
    let mut conn = mysql_async::Conn::from_url(url.as_str()).await.expect("connect");
    conn.query_drop("CREATE TABLE nodes (id VARCHAR(64) PRIMARY KEY, active TINYINT(1))").await.expect("create table");
    conn.query_drop("INSERT INTO nodes VALUES ('acme', 1)").await.expect("insert");
    let db: Option<String> = conn.query_first("SELECT DATABASE()").await.expect("query");
    assert_eq!(db, Some(first));
    conn.disconnect().await.expect("disconnect");
}

#[tokio::test]
async fn each_test_gets_its_own_postgres_database() {
    let (name, url) = support::pg_database("isolation").await;
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
    let task = tokio::spawn(connection);
    client.batch_execute("CREATE TABLE nodes (id text PRIMARY KEY, active boolean)").await.expect("create table");
    let row = client.query_one("SELECT current_database()", &[]).await.expect("query");
    assert_eq!(row.get::<_, String>(0), name);
    drop(client);
    let _ = task.await;
}

#[tokio::test]
async fn postgres_has_logical_wal() {
    let url = support::env().postgres_url.clone().expect("postgres");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
    let task = tokio::spawn(connection);
    let row = client.query_one("SHOW wal_level", &[]).await.expect("query");
    assert_eq!(row.get::<_, String>(0), "logical");
    drop(client);
    let _ = task.await;
}

/// A second, private environment: started, used, stopped; afterwards none of its processes and none
/// of its data remain.
#[tokio::test]
async fn environment_stops_without_leaving_processes_or_data() {
    let (mut child, info) = support::start_supervisor("lifecycle", &[]).expect("start");
    let kubeconfig = info.kubeconfig.clone().expect("kubeconfig");
    let client = lynq::localenv::admin_client(&kubeconfig).await.expect("client");
    client.apiserver_version().await.expect("apiserver answers");
    let data_root = kubeconfig.parent().and_then(|p| p.parent()).expect("data root").to_path_buf();
    assert!(data_root.exists());
    let children = child_pids(child.id());
    assert!(children.len() >= 5, "etcd, apiserver, controller-manager, mariadbd, postgres run: {children:?}");

    // Closing stdin is how the supervisor learns its owner is gone.
    drop(child.stdin.take());
    let status = tokio::task::spawn_blocking(move || child.wait()).await.expect("join").expect("wait");
    assert!(status.success(), "supervisor exit status {status}");
    for pid in &children {
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "process {pid} still runs");
    }
    assert!(!data_root.exists(), "{} was not removed", data_root.display());
    let _ = std::io::stderr().flush();
}

/// Direct children of `pid`, from /proc.
fn child_pids(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|stat| stat.rsplit(')').next().map(str::to_owned))
                .and_then(|rest| rest.split_whitespace().nth(1).and_then(|pp| pp.parse::<u32>().ok()))
                == Some(pid)
        })
        .collect()
}

#[tokio::test]
async fn missing_binaries_fail_fast_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_lynq"))
            .args(["env", "up", "--no-mysql", "--no-postgres", "--log-dir"])
            .arg(dir.path().join("logs"))
            .env("PATH", dir.path())
            .env("KUBE_ASSETS", dir.path())
            .env("LYNQ_CACHE", dir.path())
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .expect("fails fast, never hangs")
    .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("etcd not found") && stderr.contains("scripts/setup.sh"), "clear message: {stderr}");
}
