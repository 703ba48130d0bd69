//! The hub against a real MariaDB with binlog: committed rows become LynqNodes (and, through the
//! node controller, resources) without waiting for a poll.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client, ResourceExt, api::PostParams};
use lynq::api::{LynqHub, LynqNode};
use mysql_async::prelude::Queryable;
use serde_json::json;

use crate::{crds::install_crds, support};

const WAIT: Duration = Duration::from_secs(30);

/// A namespace, a database with a `nodes` table, a hub and form on it, and every controller running.
pub(crate) struct HubScenario {
    pub(crate) client: Client,
    pub(crate) ns: String,
    pub(crate) db: mysql_async::Conn,
    _controllers: tokio::task::JoinHandle<()>,
}

impl HubScenario {
    pub(crate) async fn start(prefix: &str, change_capture: &str) -> Self {
        let client = support::client().await;
        install_crds(&client).await;
        let ns = support::namespace(&client, prefix).await;
        let (database, url) = support::mysql_database(prefix).await;
        let mut db = mysql_async::Conn::from_url(url.as_str()).await.expect("connect");
        db.query_drop(
            "CREATE TABLE nodes (node_id VARCHAR(64) PRIMARY KEY, is_active TINYINT(1), plan VARCHAR(32) NULL)",
        )
        .await
        .expect("create table");
        let port: u16 = url
            .rsplit_once(':')
            .and_then(|(_, rest)| rest.split('/').next())
            .and_then(|p| p.parse().ok())
            .expect("port");

        let secret: Secret =
            serde_json::from_value(json!({"metadata": {"name": "db"}, "stringData": {"password": "lynq-admin"}}))
                .expect("secret");
        Api::<Secret>::namespaced(client.clone(), &ns).create(&PostParams::default(), &secret).await.expect("secret");
        let hub: LynqHub = serde_json::from_value(json!({
            "apiVersion": "operator.lynq.sh/v1", "kind": "LynqHub", "metadata": {"name": "hub"},
            "spec": {
                "source": {"type": "mysql", "syncInterval": "5s", "changeCapture": change_capture,
                           "mysql": {"host": "127.0.0.1", "port": port, "database": database, "table": "nodes",
                                     "username": "lynq", "passwordRef": {"name": "db", "key": "password"}}},
                "valueMappings": {"uid": "node_id", "activate": "is_active"},
                "extraValueMappings": {"planId": "plan"}
            }
        }))
        .expect("hub");
        Api::<LynqHub>::namespaced(client.clone(), &ns).create(&PostParams::default(), &hub).await.expect("create hub");
        let form = serde_json::from_value(json!({
            "apiVersion": "operator.lynq.sh/v1", "kind": "LynqForm", "metadata": {"name": "web"},
            "spec": {"hubId": "hub", "configMaps": [{"id": "cfg", "nameTemplate": "{{ .uid }}-cfg",
                     "spec": {"apiVersion": "v1", "kind": "ConfigMap", "data": {"plan": "{{ .planId | default \"basic\" }}"}}}]}
        }))
        .expect("form");
        Api::<lynq::api::LynqForm>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &form)
            .await
            .expect("create form");
        let controllers =
            tokio::spawn(lynq::server::run_controllers(client.clone(), Some(ns.clone()), std::future::pending::<()>()));
        Self { client, ns, db, _controllers: controllers }
    }

    pub(crate) async fn sql(&mut self, statement: &str) {
        self.db.query_drop(statement).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
    }

    /// Waits until LynqNode `name` exists and satisfies `check`.
    pub(crate) async fn node(&self, name: &str, check: impl Fn(&LynqNode) -> bool) -> LynqNode {
        let api: Api<LynqNode> = Api::namespaced(self.client.clone(), &self.ns);
        support::eventually(&format!("LynqNode {name}"), WAIT, || {
            let api = api.clone();
            let check = &check;
            async move { api.get_opt(name).await.ok().flatten().filter(|n| check(n)) }
        })
        .await
    }

    pub(crate) async fn node_gone(&self, name: &str) {
        let api: Api<LynqNode> = Api::namespaced(self.client.clone(), &self.ns);
        support::eventually(&format!("LynqNode {name} deleted"), WAIT, || {
            let api = api.clone();
            async move { matches!(api.get_opt(name).await, Ok(None)).then_some(()) }
        })
        .await
    }

    pub(crate) async fn config_plan(&self, name: &str, plan: &str) {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.ns);
        support::eventually(&format!("ConfigMap {name} with plan {plan}"), WAIT, || {
            let api = api.clone();
            async move {
                let cm = api.get_opt(name).await.ok().flatten()?;
                (cm.data?.get("plan").map(String::as_str) == Some(plan)).then_some(())
            }
        })
        .await
    }

    pub(crate) async fn hub(&self) -> LynqHub {
        Api::<LynqHub>::namespaced(self.client.clone(), &self.ns).get("hub").await.expect("hub")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_rows_become_nodes_and_resources() {
    let mut s = HubScenario::start("hub-stream", "Stream").await;
    s.sql("INSERT INTO nodes VALUES ('acme', 1, 'pro'), ('dormant', 0, NULL)").await;

    let node = s.node("acme-web", |_| true).await;
    assert_eq!(node.labels().get("lynq.sh/hub").map(String::as_str), Some("hub"));
    assert_eq!(node.annotations().get("lynq.sh/extra").map(String::as_str), Some(r#"{"planId":"pro"}"#));
    assert_eq!(node.owner_references().first().map(|o| o.kind.as_str()), Some("LynqHub"));
    s.config_plan("acme-cfg", "pro").await;
    let hub = s.hub().await;
    let capture = hub.status.and_then(|st| st.change_capture).expect("changeCapture");
    assert_eq!(capture.mode, Some(lynq::api::CaptureModeInUse::Streaming));

    let started = Instant::now();
    s.sql("INSERT INTO nodes VALUES ('beta', 1, NULL)").await;
    s.node("beta-web", |_| true).await;
    eprintln!("commit → LynqNode: {:?}", started.elapsed());
    s.config_plan("beta-cfg", "basic").await;

    s.sql("UPDATE nodes SET plan = 'enterprise' WHERE node_id = 'beta'").await;
    s.config_plan("beta-cfg", "enterprise").await;

    s.sql("UPDATE nodes SET is_active = 0 WHERE node_id = 'acme'").await;
    s.node_gone("acme-web").await;
    s.sql("UPDATE nodes SET is_active = 1 WHERE node_id = 'acme'").await;
    s.node("acme-web", |_| true).await;

    // One transaction with several rows is applied as one.
    s.sql("START TRANSACTION").await;
    s.sql("INSERT INTO nodes VALUES ('c1', 1, NULL), ('c2', 1, NULL)").await;
    s.sql("DELETE FROM nodes WHERE node_id = 'beta'").await;
    s.sql("COMMIT").await;
    s.node("c1-web", |_| true).await;
    s.node("c2-web", |_| true).await;
    s.node_gone("beta-web").await;
}
