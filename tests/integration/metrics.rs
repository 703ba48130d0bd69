//! `/metrics` of a running `lynq run`, scraped by a real Prometheus: the hub's change lag reaches
//! Prometheus after a row change, `promtool check metrics` accepts the exposition, and the series of
//! a deleted LynqNode and of a deleted LynqHub disappear.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::{
    io::AsyncWriteExt,
    process::{Child, Command},
};

use crate::{
    hub_support::{HubScenario, Source},
    support,
};

/// How long the operator and Prometheus may take (scrapes run every second).
const WAIT: Duration = Duration::from_secs(90);

/// A scratch directory under the target dir, fresh for `name`.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("lynq-metrics").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Percent-encodes a PromQL query for a URL.
fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `lynq run` for one namespace, with its metrics and probe ports.
fn start_operator(ns: &str, dir: &Path, metrics_port: u16) -> Child {
    support::operator_command(ns, metrics_port, support::free_port(), &dir.join("lynq.log"))
        .args(["--log-format", "text"])
        .spawn()
        .expect("spawn lynq run")
}

/// Our own Prometheus scraping `target` every second (the Debian service plays no part).
fn start_prometheus(dir: &Path, target: u16, port: u16) -> Child {
    let config = dir.join("prometheus.yml");
    let yaml = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: lynq\n    \
         static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
    );
    std::fs::write(&config, yaml).expect("prometheus config");
    let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
    Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn prometheus (Debian package `prometheus`, installed by scripts/setup.sh)")
}

/// Waits until `/metrics` answers with a body satisfying `check`.
async fn metrics_until(port: u16, what: &str, check: impl Fn(&str) -> bool) -> String {
    support::eventually(what, WAIT, || async {
        support::http_get(port, "/metrics")
            .await
            .filter(|(code, _, body)| *code == 200 && check(body))
            .map(|(_, _, b)| b)
    })
    .await
}

/// Waits until no line of `/metrics` contains any of `needles`; on timeout, shows the lines left.
async fn series_gone(port: u16, what: &str, needles: &[String]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = support::http_get(port, "/metrics").await.map(|(_, _, body)| body).unwrap_or_default();
        let left: Vec<&str> = text.lines().filter(|l| needles.iter().any(|n| l.contains(n.as_str()))).collect();
        if !text.is_empty() && left.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}; left:\n{}",
            left.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `promtool check metrics` on `text`: exit status and output.
async fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    let mut stdin = child.stdin.take().expect("promtool stdin");
    stdin.write_all(text.as_bytes()).await.expect("write to promtool");
    drop(stdin);
    let out = child.wait_with_output().await.expect("promtool output");
    let output = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), output)
}

#[tokio::test]
async fn prometheus_scrapes_a_mariadb_hub_and_deleted_objects_leave_no_series() {
    scrape(Source::Mysql).await;
}

#[tokio::test]
async fn prometheus_scrapes_a_postgresql_hub_and_deleted_objects_leave_no_series() {
    scrape(Source::Postgres).await;
}

/// The scenario on `source`: a streaming hub, one row, a real Prometheus, promtool, deletions.
async fn scrape(source: Source) {
    let (label, active) = match source {
        Source::Mysql => ("mysql", "1"),
        Source::Postgres => ("postgresql", "true"),
    };
    let mut s = HubScenario::new(source, "metrics").await;
    s.sql(&source.nodes_table("nodes")).await;
    s.create_hub("hub", &s.target("nodes"), "Stream", "1h").await;
    s.create_form("web", "hub").await;
    s.create_form_object(serde_json::json!({
        "apiVersion": "operator.lynq.sh/v1", "kind": "LynqForm", "metadata": {"name": "canary"},
        "spec": {"hubId": "hub", "rollout": {"maxSkew": 1}, "configMaps": [{"id": "cfg",
                 "nameTemplate": "{{ .uid }}-canary", "spec": {"apiVersion": "v1", "kind": "ConfigMap"}}]}
    }))
    .await;
    let dir = scratch(&s.ns);
    let (metrics_port, prometheus_port) = (support::free_port(), support::free_port());
    let _operator = start_operator(&s.ns, &dir, metrics_port);
    let _prometheus = start_prometheus(&dir, metrics_port, prometheus_port);
    eprintln!("logs of lynq run and prometheus in {}", dir.display());

    // The hub streams once its mode series says so; a row committed then is a streamed transaction.
    let ns = s.ns.clone();
    let streaming =
        format!(r#"lynq_hub_change_capture_mode{{namespace="{ns}",hub="hub",source="{label}",mode="stream"}} 1"#);
    metrics_until(metrics_port, "the hub streams", |m| m.contains(&streaming)).await;
    s.sql(&format!("INSERT INTO nodes VALUES ('m1', {active}, 'gold')")).await;
    s.node("m1-web", |n| n.status.as_ref().and_then(|st| st.ready_resources) == Some(1)).await;

    let query = format!(r#"lynq_hub_change_lag_seconds_count{{namespace="{ns}",hub="hub"}}"#);
    let path = format!("/api/v1/query?query={}", encode(&query));
    let answer = support::eventually("Prometheus returns the hub's change lag", WAIT, || async {
        support::http_get(prometheus_port, &path)
            .await
            .filter(|(code, _, body)| {
                *code == 200 && body.contains(r#""__name__":"lynq_hub_change_lag_seconds_count""#)
            })
            .map(|(_, _, body)| body)
    })
    .await;
    eprintln!("Prometheus: {answer}");
    assert!(answer.contains(r#""hub":"hub""#), "{answer}");

    let node_series = format!(r#"lynqnode_resources_ready{{lynqnode="m1-web",namespace="{ns}"}} 1"#);
    let text = metrics_until(metrics_port, "the node's series", |m| m.contains(&node_series)).await;
    for family in [
        "# TYPE lynq_hub_change_lag_seconds histogram",
        "# TYPE lynqnode_reconcile_duration_seconds histogram",
        "# TYPE lynq_node_apply_latency_seconds histogram",
        "lynq_hub_changes_total{",
        "hub_desired{",
        "apply_attempts_total{",
        "lynq_api_writes_total{",
        "lynqform_rollout_progress{",
    ] {
        assert!(text.contains(family), "/metrics lacks {family}:\n{text}");
    }
    std::fs::write(dir.join("metrics.txt"), &text).expect("save the exposition");
    let (ok, output) = promtool_check(&text).await;
    if source == Source::Postgres {
        let retained = format!(r#"lynq_hub_slot_retained_wal_bytes{{namespace="{ns}",hub="hub",source="postgresql"}}"#);
        metrics_until(metrics_port, "the slot's retained WAL", |m| m.contains(&retained)).await;
    }
    eprintln!("promtool check metrics:\n{output}");
    assert!(ok, "promtool check metrics failed:\n{output}\n--- exposition ---\n{text}");

    // A deleted form's rollout gauges go with it.
    let canary = format!(r#"lynqform_rollout_phase{{form="canary",namespace="{ns}"}}"#);
    metrics_until(metrics_port, "the maxSkew form's rollout phase", |m| m.contains(&canary)).await;
    s.forms().delete("canary", &Default::default()).await.expect("delete form canary");
    let rollout = format!(r#"form="canary",namespace="{ns}""#);
    series_gone(metrics_port, "the deleted form's rollout series disappear", &[rollout]).await;

    // Deactivating the row deletes the node; its finalizer drops every lynqnode_* series of it.
    let inactive = if source == Source::Mysql { "0" } else { "false" };
    s.sql(&format!("UPDATE nodes SET is_active = {inactive} WHERE node_id = 'm1'")).await;
    s.node_gone("m1-web").await;
    let gone = format!(r#"lynqnode="m1-web",namespace="{ns}""#);
    series_gone(metrics_port, "the deleted node's series disappear", &[gone]).await;

    // Deleting the hub drops every hub-labelled series (Lynq's hub_* and lynq's lynq_hub_*/lynq_node_*).
    s.delete_hub("hub").await;
    let labels = [format!(r#"hub="hub",namespace="{ns}""#), format!(r#"namespace="{ns}",hub="hub""#)];
    series_gone(metrics_port, "the deleted hub's series disappear", &labels).await;
}

/// A row written with the binlog switched off reaches lynq only through the periodic resync: the
/// divergence is counted under its kind and the re-snapshot that repairs it under its reason.
#[tokio::test]
async fn a_resync_counts_a_row_the_binlog_never_carried_by_kind() {
    let mut s = HubScenario::new(Source::Mysql, "mresync").await;
    s.sql(&Source::Mysql.nodes_table("nodes")).await;
    s.create_hub("hub", &s.target("nodes"), "Stream", "2s").await;
    s.create_form("web", "hub").await;
    let dir = scratch(&s.ns);
    let metrics_port = support::free_port();
    let _operator = start_operator(&s.ns, &dir, metrics_port);
    let ns = s.ns.clone();
    let series = |family: &str, label: &str, value: u32| {
        format!(r#"{family}{{namespace="{ns}",hub="hub",source="mysql",{label}}} {value}"#)
    };
    let divergences = |kind: &str, n: u32| series("lynq_hub_resync_divergences_total", &format!(r#"kind="{kind}""#), n);

    // A resync that agrees with the stream already exports every kind, at zero.
    let agreeing = [divergences("missing", 0), divergences("unexpected", 0), divergences("stale", 0)];
    metrics_until(metrics_port, "a resync agreeing with the stream", |m| agreeing.iter().all(|l| m.contains(l))).await;

    s.sql("SET SESSION sql_log_bin = 0; INSERT INTO nodes VALUES ('hidden', 1, 'gold'); SET SESSION sql_log_bin = 1")
        .await;
    let counted = [divergences("missing", 1), divergences("unexpected", 0), divergences("stale", 0)];
    metrics_until(metrics_port, "the missing row counted", |m| counted.iter().all(|l| m.contains(l))).await;
    s.node("hidden-web", |_| true).await;
    let resnapshot = series("lynq_hub_snapshots_total", r#"reason="resync""#, 1);
    metrics_until(metrics_port, "the repairing snapshot counted", |m| m.contains(&resnapshot)).await;
}
