//! `lynq run --leader-elect` as real processes: two replicas on one Lease, only the holder acts;
//! a killed leader is replaced without losing, repeating or recreating any node; a SIGTERMed leader
//! releases the lease to the standby; and the probes answer as documented.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    time::Duration,
};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, ResourceExt};
use serde_json::Value;
use tokio::process::Child;

use crate::{
    hub_support::{HubScenario, Source},
    support,
};

/// How long anything here may take to happen (a takeover after kill -9 needs the 15s lease duration).
const WAIT: Duration = Duration::from_secs(90);

/// One `lynq run --leader-elect` process.
struct Replica {
    child: Child,
    label: &'static str,
    probe_port: u16,
    metrics_port: u16,
    log: PathBuf,
}

impl Replica {
    /// Starts a replica for namespace `ns` electing on Lease `ns/lease`.
    fn start(ns: &str, lease: &str, label: &'static str) -> Self {
        let (probe_port, metrics_port) = (support::free_port(), support::free_port());
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("lynq-leader-logs");
        std::fs::create_dir_all(&dir).expect("log dir");
        let log = dir.join(format!("{ns}-{label}.log"));
        let child = support::operator_command(ns, metrics_port, probe_port, &log)
            .args(["--leader-elect", "--leader-election-namespace", ns, "--leader-election-id", lease])
            .args(["--log-format", "json", "--log-level", "info,lynq=debug"])
            .spawn()
            .expect("spawn lynq run");
        eprintln!("[{label}] lynq run (pid {:?}), logs in {}", child.id(), log.display());
        Self { child, label, probe_port, metrics_port, log }
    }

    /// Its log, one JSON object per line.
    fn log_lines(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("[{}] not a JSON log line ({e}): {l}", self.label))
            })
            .collect()
    }

    /// The first log line with this message.
    fn logged(&self, message: &str) -> Option<Value> {
        self.log_lines().into_iter().find(|l| l["message"] == message)
    }

    /// Waits for a log line with this message.
    async fn logs(&self, message: &str) -> Value {
        support::eventually(&format!("[{}] logs {message:?}", self.label), WAIT, || async { self.logged(message) })
            .await
    }

    /// Its identity in the Lease, once it logged it.
    async fn identity(&self) -> String {
        support::eventually(&format!("[{}] logs its identity", self.label), WAIT, || async {
            self.logged("trying to acquire the lease").and_then(|l| l["identity"].as_str().map(str::to_string))
        })
        .await
    }

    /// GET `path` on the probe (or metrics) port: status code, headers and body.
    async fn get(&self, metrics: bool, path: &str) -> Option<(u16, String, String)> {
        let port = if metrics { self.metrics_port } else { self.probe_port };
        support::http_get(port, path).await
    }

    /// Waits until `path` answers `code` with a body containing `text`.
    async fn answers(&self, path: &str, code: u16, text: &str) -> String {
        let what = format!("[{}] {path} answers {code} with {text:?}", self.label);
        support::eventually(&what, WAIT, || async {
            self.get(false, path).await.filter(|(c, _, body)| *c == code && body.contains(text)).map(|(_, _, b)| b)
        })
        .await
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = self.child.id().and_then(|p| i32::try_from(p).ok()).expect("the replica is running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).expect("signal the replica");
    }

    /// Waits for the process to exit; returns its status.
    async fn exited(&mut self) -> std::process::ExitStatus {
        let label = self.label;
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("[{label}] did not exit within {WAIT:?}"))
            .expect("wait for the replica")
    }
}

/// The Lease's current holder.
async fn holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases.get_opt(name).await.ok().flatten()?.spec?.holder_identity.filter(|h| !h.is_empty())
}

/// Waits until the Lease names `identity`.
async fn held_by(leases: &Api<Lease>, name: &str, identity: &str) {
    support::eventually(&format!("Lease {name} held by {identity}"), WAIT, || async {
        (holder(leases, name).await.as_deref() == Some(identity)).then_some(())
    })
    .await;
}

/// The scenario: table `nodes`, hub `hub` streaming it, form `web` (one ConfigMap per node); no
/// operator in the test process — the replicas are the operator.
async fn scenario(prefix: &str) -> HubScenario {
    let mut s = HubScenario::new(Source::Mysql, prefix).await;
    s.sql(&Source::Mysql.nodes_table("nodes")).await;
    s.create_hub("hub", &s.target("nodes"), "Stream", "30s").await;
    s.create_form("web", "hub").await;
    s
}

/// uid → LynqNode uid of the hub's nodes right now.
async fn node_uids(s: &HubScenario) -> BTreeMap<String, String> {
    let nodes = s.nodes().list(&Default::default()).await.expect("list nodes");
    nodes.items.iter().map(|n| (n.spec.uid.clone(), n.uid().unwrap_or_default())).collect()
}

/// Waits until the nodes are exactly one per row in `rows` (and each is named `{uid}-web`).
async fn nodes_match(s: &HubScenario, rows: &BTreeSet<String>) -> BTreeMap<String, String> {
    support::eventually(&format!("exactly one node for each of the {} rows", rows.len()), WAIT, || async {
        let nodes = s.nodes().list(&Default::default()).await.ok()?;
        let names: BTreeSet<String> = nodes.items.iter().map(ResourceExt::name_any).collect();
        let expected: BTreeSet<String> = rows.iter().map(|uid| format!("{uid}-web")).collect();
        let uids_match = nodes.items.iter().all(|n| n.name_any() == format!("{}-web", n.spec.uid));
        (names == expected && uids_match).then_some(())
    })
    .await;
    node_uids(s).await
}

#[tokio::test]
async fn leader_killed_mid_insert_is_replaced_without_losing_or_recreating_nodes() {
    let mut s = scenario("leader-kill").await;
    let leases: Api<Lease> = Api::namespaced(s.client.clone(), &s.ns);
    let lease = "lynq-test-lease";

    let mut a = Replica::start(&s.ns, lease, "a");
    let a_id = a.identity().await;
    held_by(&leases, lease, &a_id).await;
    a.answers("/readyz", 200, "active").await;
    let b = Replica::start(&s.ns, lease, "b");
    let b_id = b.identity().await;
    assert_ne!(a_id, b_id);
    b.answers("/healthz", 200, "ok").await;
    b.answers("/readyz", 200, "standby: waiting for the lease held by").await;

    let mut rows = BTreeSet::new();
    for i in 0..10 {
        let uid = format!("t{i:03}");
        s.sql(&format!("INSERT INTO nodes VALUES ('{uid}', 1, NULL)")).await;
        rows.insert(uid);
    }
    let before = nodes_match(&s, &rows).await;

    // Only the leader acts: its metrics say so, and the standby never started a controller.
    let (code, head, metrics) = a.get(true, "/metrics").await.expect("leader metrics");
    assert_eq!(code, 200);
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
    assert!(metrics.contains(&format!("leader_election_master_status{{name=\"{lease}\"}} 1")), "{metrics}");
    let (_, _, standby_metrics) = b.get(true, "/metrics").await.expect("standby metrics");
    assert!(
        standby_metrics.contains(&format!("leader_election_master_status{{name=\"{lease}\"}} 0")),
        "{standby_metrics}"
    );
    assert!(a.logged("starting the controllers").is_some());
    let standby_log = b.log_lines();
    assert!(b.logged("waiting for the lease").is_some());
    let acting: Vec<&Value> = standby_log
        .iter()
        .filter(|l| {
            let target = l["target"].as_str().unwrap_or_default();
            target.starts_with("lynq::hub")
                || target.starts_with("lynq::node")
                || l["message"] == "starting the controllers"
        })
        .collect();
    assert!(acting.is_empty(), "the standby acted: {acting:?}");

    // Rows keep coming while the leader dies; the load is paced, not a synchronisation.
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    let mut killed = false;
    let mut after_takeover = 0;
    for i in 10.. {
        pace.tick().await;
        let uid = format!("t{i:03}");
        s.sql(&format!("INSERT INTO nodes VALUES ('{uid}', 1, NULL)")).await;
        rows.insert(uid);
        if i == 15 {
            a.child.start_kill().expect("kill -9 the leader");
            killed = true;
        }
        if killed && holder(&leases, lease).await.as_deref() == Some(b_id.as_str()) {
            after_takeover += 1;
        }
        if after_takeover == 5 {
            break;
        }
        assert!(i < 1000, "the standby never took the lease over");
    }
    assert!(!a.exited().await.success());
    let took = b.logs("acquired the lease").await;
    assert_eq!(took["takeover"], "expired", "{took}");

    let after = nodes_match(&s, &rows).await;
    for (uid, node_uid) in &before {
        assert_eq!(after.get(uid), Some(node_uid), "the node of row {uid} was recreated");
    }
    let (recreated, deleted) = (s.node_log().recreated(), s.node_log().deleted());
    assert!(recreated.is_empty(), "nodes deleted and recreated: {recreated:?}");
    assert!(deleted.is_empty(), "nodes deleted: {deleted:?}");
    b.answers("/readyz", 200, "active").await;
}

#[tokio::test]
async fn sigterm_releases_the_lease_to_the_standby() {
    let mut s = scenario("leader-term").await;
    let leases: Api<Lease> = Api::namespaced(s.client.clone(), &s.ns);
    let lease = "lynq-test-lease";

    let mut a = Replica::start(&s.ns, lease, "a");
    let a_id = a.identity().await;
    held_by(&leases, lease, &a_id).await;
    assert_eq!(a.answers("/healthz", 200, "ok").await, "ok");
    a.answers("/readyz", 200, "active: caches synced, hub sources started").await;
    let mut b = Replica::start(&s.ns, lease, "b");
    let b_id = b.identity().await;
    b.answers("/readyz", 200, &format!("standby: waiting for the lease held by {a_id}")).await;
    assert_eq!(a.get(false, "/nothing").await.map(|(code, ..)| code), Some(404));

    let mut rows: BTreeSet<String> = ["s1", "s2", "s3"].into_iter().map(str::to_string).collect();
    s.sql("INSERT INTO nodes VALUES ('s1', 1, NULL), ('s2', 1, NULL), ('s3', 1, NULL)").await;
    let before = nodes_match(&s, &rows).await;

    a.signal(nix::sys::signal::Signal::SIGTERM);
    let status = a.exited().await;
    assert!(status.success(), "a SIGTERMed leader exits cleanly: {status}");
    assert!(a.logged("released the lease").is_some(), "the leader releases the lease on SIGTERM");
    held_by(&leases, lease, &b_id).await;
    let took = b.logs("acquired the lease").await;
    assert_eq!(took["takeover"], "released", "the standby found the lease released: {took}");
    assert_eq!(took["previous_holder"], a_id.as_str(), "{took}");

    s.sql("INSERT INTO nodes VALUES ('s4', 1, NULL)").await;
    rows.insert("s4".into());
    let after = nodes_match(&s, &rows).await;
    // The new leader resumed from the checkpoint the old one persisted: no new snapshot.
    support::eventually("the new leader resumes the stream from the checkpoint", WAIT, || async {
        let hub = s.hubs().get("hub").await.ok()?;
        let conditions = hub.status?.conditions?;
        conditions.iter().any(|c| c.type_ == "ChangeCapture" && c.reason == "Resumed").then_some(())
    })
    .await;
    for (uid, node_uid) in &before {
        assert_eq!(after.get(uid), Some(node_uid), "the node of row {uid} was recreated");
    }
    b.answers("/readyz", 200, "active").await;

    b.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(b.exited().await.success());
    support::eventually("the Lease has no holder after the last replica stopped", WAIT, || async {
        holder(&leases, lease).await.is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_leader_that_loses_the_lease_stops_and_exits_non_zero() {
    let client = support::client().await;
    crate::crds::install_crds(&client).await;
    let ns = support::namespace(&client, "leader-lost").await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let lease = "lynq-test-lease";
    let mut a = Replica::start(&ns, lease, "a");
    let a_id = a.identity().await;
    held_by(&leases, lease, &a_id).await;
    a.answers("/readyz", 200, "active").await;

    // Someone else takes the Lease over (as after a network partition the leader did not notice).
    let mut stolen = leases.get(lease).await.expect("the Lease");
    let spec = stolen.spec.as_mut().expect("a Lease spec");
    spec.holder_identity = Some("intruder".into());
    spec.lease_duration_seconds = Some(3600);
    leases.replace(lease, &Default::default(), &stolen).await.expect("take the Lease over");

    let status = a.exited().await;
    assert!(!status.success(), "a leader that lost the lease exits non-zero: {status}");
    let lost = a.logs("leader election lost; stopping at once").await;
    assert!(lost["error"].as_str().is_some_and(|e| e.contains("intruder")), "{lost}");
    assert_eq!(holder(&leases, lease).await.as_deref(), Some("intruder"), "a lost lease is never released");
}
