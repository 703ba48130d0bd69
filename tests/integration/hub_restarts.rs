//! Hub scenarios that restart or rewrite the database server's history, each on a private server
//! started with the environment's own code (never the shared one other tests use).

use std::{path::PathBuf, time::Duration};

use lynq::localenv::{MariaDb, Postgres};

use crate::hub_support::{HubScenario, Source, has_condition};

const GRACE: Duration = Duration::from_secs(20);

/// A private MariaDB or PostgreSQL, killed if the test ends without stopping it.
struct PrivateServer {
    server: Option<Server>,
    _dir: tempfile::TempDir,
}

enum Server {
    Mysql(MariaDb),
    Postgres(Postgres),
}

impl Server {
    fn pid(&self) -> Option<u32> {
        match self {
            Self::Mysql(s) => s.pid(),
            Self::Postgres(s) => s.pid(),
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        if let Some(pid) = self.server.as_ref().and_then(Server::pid).and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

impl PrivateServer {
    async fn start(source: Source, label: &str) -> Self {
        Self::start_with(source, label, &[]).await
    }

    /// PostgreSQL `name=value` settings (ignored for MariaDB, whose defaults these tests need).
    async fn start_with(source: Source, label: &str, pg_settings: &[&str]) -> Self {
        let dir = tempfile::Builder::new().prefix("lynq-private-").tempdir().expect("temp dir");
        // PostgreSQL runs as its own user and must traverse into this directory.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        let logs = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("lynq-env-logs").join(label);
        std::fs::create_dir_all(&logs).expect("log dir");
        let server = match source {
            Source::Mysql => Server::Mysql(MariaDb::start(dir.path(), &logs).await.expect("private MariaDB")),
            Source::Postgres => Server::Postgres(
                Postgres::start_with_settings(dir.path(), &logs, pg_settings).await.expect("private PostgreSQL"),
            ),
        };
        Self { server: Some(server), _dir: dir }
    }

    fn admin_url(&self) -> String {
        match self.server.as_ref().expect("running") {
            Server::Mysql(s) => s.url.clone(),
            Server::Postgres(s) => s.url.clone(),
        }
    }

    async fn restart(&mut self) {
        let server = self.server.take().expect("running");
        self.server = Some(match server {
            Server::Mysql(s) => Server::Mysql(s.restart(GRACE).await.expect("restart MariaDB")),
            Server::Postgres(s) => Server::Postgres(s.restart(GRACE).await.expect("restart PostgreSQL")),
        });
    }

    async fn stop(mut self) {
        match self.server.take() {
            Some(Server::Mysql(s)) => s.stop(GRACE).await,
            Some(Server::Postgres(s)) => s.stop(GRACE).await,
            None => {}
        }
    }
}

/// The server restarts under a streaming hub: the hub reconnects, resumes, and catches up.
async fn server_restart_mid_stream(source: Source) {
    let mut server = PrivateServer::start(source, &format!("hub-restart-{}", source.label())).await;
    let admin = server.admin_url();
    let mut s = HubScenario::new_on(source, "hub-dbrestart", Some(&admin)).await;
    s.sql(&source.nodes_table("nodes")).await;
    s.create_hub("hub", &s.target("nodes"), "Stream", "1h").await;
    s.create_form("web", "hub").await;
    s.start_operator();
    s.sql("INSERT INTO nodes VALUES ('before', TRUE, NULL)").await;
    s.node("before-web", |_| true).await;

    server.restart().await;
    s.db = crate::hub_support::Db::connect(source, &s.url).await;
    s.sql("INSERT INTO nodes VALUES ('after', TRUE, 'x'); UPDATE nodes SET plan = 'y' WHERE node_id = 'before'").await;
    s.node("after-web", |_| true).await;
    s.node("before-web", |n| crate::hub_support::extra(n).get("planId") == Some(&serde_json::json!("y"))).await;
    s.hub_until("hub", "resumed after the restart", |h| has_condition(h, "ChangeCapture", "True", "Resumed")).await;
    s.hub_until("hub", "Ready", |h| has_condition(h, "Ready", "True", "DatabaseConnected")).await;
    s.stop_operator().await;
    drop(s);
    server.stop().await;
}

mod server_restart_mid_stream {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mysql() {
        super::server_restart_mid_stream(super::Source::Mysql).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::server_restart_mid_stream(super::Source::Postgres).await
    }
}

/// The checkpoint's binlog was purged while the operator was down: a new snapshot, said so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_binlog_leads_to_a_new_snapshot() {
    let server = PrivateServer::start(Source::Mysql, "hub-purge").await;
    let admin = server.admin_url();
    let mut s = HubScenario::new_on(Source::Mysql, "hub-purge", Some(&admin)).await;
    s.sql(&Source::Mysql.nodes_table("nodes")).await;
    s.create_hub("hub", &s.target("nodes"), "Stream", "1h").await;
    s.create_form("web", "hub").await;
    s.start_operator();
    s.sql("INSERT INTO nodes VALUES ('a', TRUE, NULL)").await;
    s.node("a-web", |_| true).await;
    let hub = s
        .hub_until("hub", "a persisted checkpoint", |h| {
            h.status.as_ref().and_then(|st| st.change_capture.as_ref()).and_then(|c| c.position.as_ref()).is_some()
        })
        .await;
    let checkpoint_file = hub
        .status
        .and_then(|st| st.change_capture)
        .and_then(|c| c.position)
        .and_then(|p| p.binlog_file)
        .expect("binlog file");
    s.stop_operator().await;
    s.sql("INSERT INTO nodes VALUES ('b', TRUE, NULL); DELETE FROM nodes WHERE node_id = 'a'").await;
    s.sql("FLUSH BINARY LOGS").await;
    let current = s.db.text_rows("SHOW MASTER STATUS").await;
    let current = current[0][0].clone().expect("current binlog");
    // A file a dump thread still reads is kept: retry until the stopped hub's session is gone.
    crate::support::eventually(&format!("{checkpoint_file} purged"), crate::hub_support::WAIT, || {
        let (url, current, checkpoint_file) = (s.url.clone(), current.clone(), checkpoint_file.clone());
        async move {
            let mut purger = crate::hub_support::Db::connect(Source::Mysql, &url).await;
            let _ = purger.try_exec(&format!("PURGE BINARY LOGS TO '{current}'")).await;
            let logs = purger.text_rows("SHOW BINARY LOGS").await;
            logs.iter().all(|r| r[0].as_deref() != Some(checkpoint_file.as_str())).then_some(())
        }
    })
    .await;
    s.start_operator();
    s.hub_until("hub", "PositionPurged", |h| has_condition(h, "ChangeCapture", "True", "PositionPurged")).await;
    s.hub_event("hub", "SnapshotTaken", "position_purged").await;
    s.node("b-web", |_| true).await;
    s.node_gone("a-web").await;
    s.stop_operator().await;
    drop(s);
    server.stop().await;
}

/// A PostgreSQL server without `wal_level=logical` cannot stream: Auto polls (and says why), Stream
/// reports the setting and its fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_without_logical_wal_falls_back_to_polling() {
    let server = PrivateServer::start_with(Source::Postgres, "hub-wal-replica", &["wal_level=replica"]).await;
    let admin = server.admin_url();
    let mut s = HubScenario::new_on(Source::Postgres, "hub-walrep", Some(&admin)).await;
    s.sql(&Source::Postgres.nodes_table("nodes")).await;
    s.start_auto_and_strict(&s.target("nodes"), "1s").await;
    let auto = s.hub_in_mode("auto", lynq::api::CaptureModeInUse::Polling).await;
    let message = crate::hub_support::capture_message(&auto);
    assert!(message.contains("wal_level"), "Auto says why it polls: {message}");
    let strict = s
        .hub_until("strict", "not ready", |h| {
            crate::hub_support::condition(h, "Ready").is_some_and(|(st, _, m)| st == "False" && m.contains("wal_level"))
        })
        .await;
    eprintln!("[pg] Auto: {message}; Stream: {:?}", crate::hub_support::condition(&strict, "Ready"));
    assert!(!s.node_log().seen("p1-ws"), "a Stream hub that cannot stream creates nothing");
    s.stop_operator().await;
    drop(s);
    server.stop().await;
}
