//! Support of the hub scenarios: one scenario body runs against MariaDB (binlog) and PostgreSQL
//! (logical replication). [`Source`] holds what differs between the two (table DDL, the hub's
//! source block, admin SQL); [`HubScenario`] is a namespace, a database, a hub or several, their
//! forms, and the operator's controllers, which a scenario can stop and start again.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{FutureExt, StreamExt, future::Shared};
use k8s_openapi::api::{core::v1::Secret, events::v1::Event};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use lynq::api::{LynqForm, LynqHub, LynqNode};
use mysql_async::prelude::Queryable;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::{crds::install_crds, support};

/// How long a scenario waits for the operator to reach an expected state.
pub(crate) const WAIT: Duration = Duration::from_secs(60);
/// Password of the environment's admin users (both databases).
pub(crate) const ADMIN_PASSWORD: &str = "lynq-admin";

/// Which database a scenario runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// MariaDB with a ROW binlog.
    Mysql,
    /// PostgreSQL with wal_level=logical.
    Postgres,
}

impl Source {
    /// Short label for names.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Mysql => "my",
            Self::Postgres => "pg",
        }
    }

    /// The `nodes`-shaped table every simple scenario uses (uid, activate flag, nullable plan).
    pub(crate) fn nodes_table(self, table: &str) -> String {
        let flag = match self {
            Self::Mysql => "TINYINT(1)",
            Self::Postgres => "BOOLEAN",
        };
        format!("CREATE TABLE {table} (node_id VARCHAR(64) PRIMARY KEY, is_active {flag}, plan VARCHAR(32) NULL)")
    }

    /// The environment's admin user.
    pub(crate) fn admin_user(self) -> &'static str {
        match self {
            Self::Mysql => "lynq",
            Self::Postgres => "postgres",
        }
    }

    async fn database(self, prefix: &str) -> (String, String) {
        match self {
            Self::Mysql => support::mysql_database(prefix).await,
            Self::Postgres => support::pg_database(prefix).await,
        }
    }
}

/// Where a hub's table is and how the hub logs in.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// Database kind.
    pub(crate) source: Source,
    /// TCP port of the server.
    pub(crate) port: u16,
    /// Database name.
    pub(crate) database: String,
    /// PostgreSQL schema (ignored for MySQL).
    pub(crate) schema: String,
    /// Table name.
    pub(crate) table: String,
    /// Login.
    pub(crate) username: String,
    /// Secret holding the password under key `password`.
    pub(crate) secret: String,
}

impl Target {
    /// The hub's `spec.source` block.
    pub(crate) fn source_spec(&self, mode: &str, interval: &str) -> Value {
        let password_ref = json!({"name": self.secret, "key": "password"});
        match self.source {
            Source::Mysql => json!({
                "type": "mysql", "syncInterval": interval, "changeCapture": mode,
                "mysql": {"host": "127.0.0.1", "port": self.port, "database": self.database, "table": self.table,
                          "username": self.username, "passwordRef": password_ref}
            }),
            Source::Postgres => json!({
                "type": "postgresql", "syncInterval": interval, "changeCapture": mode,
                "postgresql": {"host": "127.0.0.1", "port": self.port, "database": self.database,
                               "schema": self.schema, "table": self.table, "username": self.username,
                               "passwordRef": password_ref, "sslMode": "disable"}
            }),
        }
    }
}

/// A SQL session on a scenario's database.
pub(crate) enum Db {
    /// MariaDB connection.
    Mysql(mysql_async::Conn),
    /// PostgreSQL client (its connection task runs on the test runtime).
    Postgres(tokio_postgres::Client),
}

impl Db {
    /// Connects to `url`.
    pub(crate) async fn connect(source: Source, url: &str) -> Self {
        match source {
            Source::Mysql => Self::Mysql(mysql_async::Conn::from_url(url).await.expect("connect to MariaDB")),
            Source::Postgres => {
                let (client, connection) =
                    tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect to PostgreSQL");
                tokio::spawn(connection);
                Self::Postgres(client)
            }
        }
    }

    /// Runs statements (several separated by `;` are fine), returning the server's error text.
    pub(crate) async fn try_exec(&mut self, sql: &str) -> Result<(), String> {
        match self {
            Self::Mysql(c) => c.query_drop(sql).await.map_err(|e| e.to_string()),
            Self::Postgres(c) => c.batch_execute(sql).await.map_err(|e| format!("{e}: {:?}", e.as_db_error())),
        }
    }

    /// Runs statements, panicking on error.
    pub(crate) async fn exec(&mut self, sql: &str) {
        if let Err(e) = self.try_exec(sql).await {
            panic!("{sql}: {e}");
        }
    }

    /// Rows of a query as the text protocol shows them (None = NULL).
    pub(crate) async fn text_rows(&mut self, sql: &str) -> Vec<Vec<Option<String>>> {
        match self {
            Self::Mysql(c) => {
                let rows: Vec<mysql_async::Row> = c.query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
                rows.into_iter()
                    .map(|row| {
                        (0..row.len())
                            .map(|i| match row.as_ref(i) {
                                Some(mysql_async::Value::Bytes(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                                Some(mysql_async::Value::NULL) | None => None,
                                Some(other) => Some(other.as_sql(true)),
                            })
                            .collect()
                    })
                    .collect()
            }
            Self::Postgres(c) => {
                let messages = c.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
                messages
                    .into_iter()
                    .filter_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(row) => {
                            Some((0..row.len()).map(|i| row.get(i).map(str::to_owned)).collect())
                        }
                        _ => None,
                    })
                    .collect()
            }
        }
    }

    /// The first column of the first row, as text.
    pub(crate) async fn scalar(&mut self, sql: &str) -> Option<String> {
        self.text_rows(sql).await.into_iter().next().and_then(|r| r.into_iter().next()).flatten()
    }
}

/// The operator's controllers, running until stopped.
struct Operator {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// Every LynqNode name ever seen in a namespace (a watch from the scenario's start).
#[derive(Clone, Default)]
pub(crate) struct NodeLog(Arc<Mutex<NodeNames>>);

/// Every uid each node name had, and the names deleted (or marked for deletion), since a scenario
/// started.
#[derive(Default)]
pub(crate) struct NodeNames {
    uids: BTreeMap<String, BTreeSet<String>>,
    deleted: BTreeSet<String>,
}

impl NodeLog {
    /// Whether a node of this name was ever seen.
    pub(crate) fn seen(&self, name: &str) -> bool {
        self.0.lock().map(|s| s.uids.contains_key(name)).unwrap_or(false)
    }

    /// Names that had more than one uid: deleted and created again.
    pub(crate) fn recreated(&self) -> Vec<String> {
        let names = self.0.lock().map(|s| s.uids.iter().filter(|(_, u)| u.len() > 1).map(|(n, _)| n.clone()).collect());
        names.unwrap_or_default()
    }

    /// Every node name that was deleted or marked for deletion.
    pub(crate) fn deleted(&self) -> BTreeSet<String> {
        self.0.lock().map(|s| s.deleted.clone()).unwrap_or_default()
    }
}

/// A namespace, a database, hubs and forms, and the operator's controllers.
pub(crate) struct HubScenario {
    pub(crate) source: Source,
    pub(crate) client: Client,
    pub(crate) ns: String,
    /// Name of the scenario's database.
    pub(crate) database: String,
    /// URL of the scenario's database (admin user).
    pub(crate) url: String,
    /// Admin session on the scenario's database.
    pub(crate) db: Db,
    pub(crate) port: u16,
    operator: Option<Operator>,
    node_log: NodeLog,
    watch: tokio::task::JoinHandle<()>,
}

impl Drop for HubScenario {
    fn drop(&mut self) {
        self.watch.abort();
        if let Some(op) = self.operator.take() {
            let _ = op.stop.send(());
        }
        // Slots outlive their sessions and the environment has a limited number of them.
        if self.source == Source::Postgres
            && self.port == url_port(&support::env().postgres_url.clone().unwrap_or_default())
        {
            let (admin, database) = (support::env().postgres_url.clone().unwrap_or_default(), self.database.clone());
            let _ = std::thread::spawn(move || drop_slots(&admin, &database)).join();
        }
    }
}

/// Drops every replication slot of `database` (terminating the sessions that hold them).
fn drop_slots(admin_url: &str, database: &str) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
    runtime.block_on(async {
        let Ok((client, connection)) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls).await else { return };
        tokio::spawn(connection);
        for _ in 0..100 {
            let _ = client
                .execute(
                    "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                     WHERE database = $1 AND active_pid IS NOT NULL",
                    &[&database],
                )
                .await;
            let _ = client
                .execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                     WHERE database = $1 AND NOT active",
                    &[&database],
                )
                .await;
            let left = client
                .query_one("SELECT count(*) FROM pg_replication_slots WHERE database = $1", &[&database])
                .await
                .map(|row| row.get::<_, i64>(0));
            if matches!(left, Ok(0)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// A fresh database `prefix_…` on the server of `admin_url`; its name and URL.
async fn private_database(source: Source, admin_url: &str, prefix: &str) -> (String, String) {
    let name = format!("{prefix}_{}", support::unique_suffix()).replace('-', "_");
    let mut admin = Db::connect(source, admin_url).await;
    admin.exec(&format!("CREATE DATABASE {name}")).await;
    let base = admin_url.rsplit_once('/').map(|(b, _)| b).expect("URL has a path");
    (name.clone(), format!("{base}/{name}"))
}

/// The port of a `scheme://user:pw@host:port/...` URL.
pub(crate) fn url_port(url: &str) -> u16 {
    url.rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("URL has a port")
}

impl HubScenario {
    /// A namespace with the admin password Secret `db`, a fresh database, and nothing else yet.
    pub(crate) async fn new(source: Source, prefix: &str) -> Self {
        Self::new_on(source, prefix, None).await
    }

    /// Like [`HubScenario::new`], on the server of `admin_url` instead of the environment's.
    pub(crate) async fn new_on(source: Source, prefix: &str, admin_url: Option<&str>) -> Self {
        let prefix = format!("{prefix}-{}", source.label());
        let client = support::client().await;
        install_crds(&client).await;
        let ns = support::namespace(&client, &prefix).await;
        let (database, url) = match admin_url {
            None => source.database(&prefix).await,
            Some(admin) => private_database(source, admin, &prefix).await,
        };
        let db = Db::connect(source, &url).await;
        let port = url_port(&url);
        let node_log = NodeLog::default();
        let watch = tokio::spawn(watch_nodes(Api::namespaced(client.clone(), &ns), node_log.clone()));
        let s = Self { source, client, ns, database, url, db, port, operator: None, node_log, watch };
        s.put_secret("db", ADMIN_PASSWORD).await;
        s
    }

    /// The common case: a `nodes` table, hub `hub` on it (uid node_id, activate is_active, planId
    /// from plan), form `web` with one ConfigMap, and the operator running.
    pub(crate) async fn standard(source: Source, prefix: &str, mode: &str, interval: &str) -> Self {
        let mut s = Self::new(source, prefix).await;
        s.sql(&source.nodes_table("nodes")).await;
        s.create_hub("hub", &s.target("nodes"), mode, interval).await;
        s.create_form("web", "hub").await;
        s.start_operator();
        s
    }

    /// The scenario's database table `table` as the admin user sees it.
    pub(crate) fn target(&self, table: &str) -> Target {
        Target {
            source: self.source,
            port: self.port,
            database: self.database.clone(),
            schema: "public".into(),
            table: table.into(),
            username: self.source.admin_user().into(),
            secret: "db".into(),
        }
    }

    /// Creates or replaces Secret `name` with `password`.
    pub(crate) async fn put_secret(&self, name: &str, password: &str) {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.ns);
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                            "stringData": {"password": password}});
        api.patch(name, &PatchParams::apply("hub-scenarios").force(), &Patch::Apply(&secret))
            .await
            .unwrap_or_else(|e| panic!("Secret {name}: {e}"));
    }

    /// The hub object for `target` (uid node_id, activate is_active, planId from plan).
    pub(crate) fn hub_object(name: &str, target: &Target, mode: &str, interval: &str) -> Value {
        json!({
            "apiVersion": "operator.lynq.sh/v1", "kind": "LynqHub", "metadata": {"name": name},
            "spec": {
                "source": target.source_spec(mode, interval),
                "valueMappings": {"uid": "node_id", "activate": "is_active"},
                "extraValueMappings": {"planId": "plan"}
            }
        })
    }

    /// Creates hub `name` on `target`.
    pub(crate) async fn create_hub(&self, name: &str, target: &Target, mode: &str, interval: &str) {
        self.create_hub_object(Self::hub_object(name, target, mode, interval)).await;
    }

    /// Creates a hub from its JSON.
    pub(crate) async fn create_hub_object(&self, hub: Value) {
        let hub: LynqHub = serde_json::from_value(hub).expect("hub");
        self.hubs().create(&PostParams::default(), &hub).await.expect("create hub");
    }

    /// Creates form `name` of `hub` with one ConfigMap `{uid}-{form}` whose `plan` is planId or "basic".
    pub(crate) async fn create_form(&self, name: &str, hub: &str) {
        let form = json!({
            "apiVersion": "operator.lynq.sh/v1", "kind": "LynqForm", "metadata": {"name": name},
            "spec": {"hubId": hub, "configMaps": [{"id": "cfg", "nameTemplate": format!("{{{{ .uid }}}}-{name}"),
                     "spec": {"apiVersion": "v1", "kind": "ConfigMap",
                              "data": {"plan": "{{ .planId | default \"basic\" }}"}}}]}
        });
        self.create_form_object(form).await;
    }

    /// Creates a form from its JSON.
    pub(crate) async fn create_form_object(&self, form: Value) {
        let form: LynqForm = serde_json::from_value(form).expect("form");
        Api::<LynqForm>::namespaced(self.client.clone(), &self.ns)
            .create(&PostParams::default(), &form)
            .await
            .expect("create form");
    }

    /// Starts the controllers (hub, form, node) for this namespace.
    pub(crate) fn start_operator(&mut self) {
        assert!(self.operator.is_none(), "the operator is already running");
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown: Shared<_> = stopped.map(|_| ()).shared();
        let task = tokio::spawn(lynq::server::run_controllers(self.client.clone(), Some(self.ns.clone()), shutdown));
        self.operator = Some(Operator { stop, task });
    }

    /// Stops the controllers and waits until they (and every hub's source) have stopped.
    pub(crate) async fn stop_operator(&mut self) {
        let op = self.operator.take().expect("the operator is running");
        let _ = op.stop.send(());
        tokio::time::timeout(WAIT, op.task).await.expect("controllers stop in time").expect("controllers task");
    }

    /// Runs SQL as the admin user on the scenario's database.
    pub(crate) async fn sql(&mut self, statement: &str) {
        self.db.exec(statement).await;
    }

    /// Every LynqNode name seen since the scenario started.
    pub(crate) fn node_log(&self) -> &NodeLog {
        &self.node_log
    }

    pub(crate) fn hubs(&self) -> Api<LynqHub> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub(crate) fn nodes(&self) -> Api<LynqNode> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub(crate) fn forms(&self) -> Api<LynqForm> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Waits until LynqNode `name` exists and satisfies `check`.
    pub(crate) async fn node(&self, name: &str, check: impl Fn(&LynqNode) -> bool) -> LynqNode {
        let api = self.nodes();
        support::eventually(&format!("LynqNode {name}"), WAIT, || {
            let api = api.clone();
            let check = &check;
            async move { api.get_opt(name).await.ok().flatten().filter(|n| check(n)) }
        })
        .await
    }

    /// Waits for LynqNode `name` and logs how long after `committed` it appeared.
    pub(crate) async fn node_after_commit(&self, name: &str, committed: Instant) -> LynqNode {
        let node = self.node(name, |_| true).await;
        eprintln!("[{}] commit → LynqNode {name}: {:?}", self.source.label(), committed.elapsed());
        node
    }

    /// Waits until LynqNode `name` does not exist.
    pub(crate) async fn node_gone(&self, name: &str) {
        let api = self.nodes();
        support::eventually(&format!("LynqNode {name} deleted"), WAIT, || {
            let api = api.clone();
            async move { matches!(api.get_opt(name).await, Ok(None)).then_some(()) }
        })
        .await
    }

    /// The names of the nodes of hub `hub` right now.
    pub(crate) async fn node_names(&self, hub: &str) -> BTreeSet<String> {
        let lp = kube::api::ListParams::default().labels(&format!("lynq.sh/hub={hub}"));
        self.nodes().list(&lp).await.expect("list nodes").items.iter().map(ResourceExt::name_any).collect()
    }

    /// Waits until hub `hub` has exactly the nodes `expected`.
    pub(crate) async fn nodes_exactly(&self, hub: &str, expected: &BTreeSet<String>) {
        let mut last = BTreeSet::new();
        let found = tokio::time::timeout(WAIT, async {
            loop {
                last = self.node_names(hub).await;
                if &last == expected {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        if found.is_err() {
            let missing: Vec<_> = expected.difference(&last).collect();
            let extra: Vec<_> = last.difference(expected).collect();
            panic!("hub {hub}: nodes never matched; missing {missing:?}, unexpected {extra:?}");
        }
    }

    /// Hubs `auto` (changeCapture Auto) and `strict` (Stream) on `target` with forms `wa` and `ws`, the
    /// operator started and row `p1` committed; returns once the Auto hub made `p1-wa`.
    pub(crate) async fn start_auto_and_strict(&mut self, target: &Target, interval: &str) {
        self.create_hub("auto", target, "Auto", interval).await;
        self.create_hub("strict", target, "Stream", interval).await;
        self.create_form("wa", "auto").await;
        self.create_form("ws", "strict").await;
        self.start_operator();
        self.sql("INSERT INTO nodes VALUES ('p1', TRUE, NULL)").await;
        self.node("p1-wa", |_| true).await;
    }

    /// Waits until hub `name` reports `mode` in `status.changeCapture`, returning it.
    pub(crate) async fn hub_in_mode(&self, name: &str, mode: lynq::api::CaptureModeInUse) -> LynqHub {
        self.hub_until(name, &format!("{mode:?}"), |h| {
            h.status.as_ref().and_then(|st| st.change_capture.as_ref()).and_then(|c| c.mode) == Some(mode)
        })
        .await
    }

    /// Waits until hub `name` satisfies `check`, returning it.
    pub(crate) async fn hub_until(&self, name: &str, what: &str, check: impl Fn(&LynqHub) -> bool) -> LynqHub {
        let api = self.hubs();
        let check = &check;
        support::eventually(&format!("hub {name}: {what}"), WAIT, || {
            let api = api.clone();
            async move { api.get_opt(name).await.ok().flatten().filter(|h| check(h)) }
        })
        .await
    }

    /// Waits for an event with `reason` about hub `hub` whose note contains `text`.
    pub(crate) async fn hub_event(&self, hub: &str, reason: &str, text: &str) -> Event {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        support::eventually(&format!("event {reason} ({text}) on hub {hub}"), WAIT, || {
            let api = api.clone();
            async move {
                let events = api.list(&Default::default()).await.ok()?;
                events.items.into_iter().find(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.regarding.as_ref().is_some_and(|r| r.name.as_deref() == Some(hub))
                        && e.note.as_deref().unwrap_or_default().contains(text)
                })
            }
        })
        .await
    }

    /// Whether any event with `reason` about hub `hub` exists now.
    pub(crate) async fn has_hub_event(&self, hub: &str, reason: &str) -> bool {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        api.list(&Default::default()).await.expect("list events").items.iter().any(|e| {
            e.reason.as_deref() == Some(reason) && e.regarding.as_ref().is_some_and(|r| r.name.as_deref() == Some(hub))
        })
    }

    /// Merge-patches hub `name`.
    pub(crate) async fn patch_hub(&self, name: &str, patch: Value) {
        self.hubs().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch hub");
    }

    /// Deletes hub `name`.
    pub(crate) async fn delete_hub(&self, name: &str) {
        self.hubs().delete(name, &DeleteParams::default()).await.expect("delete hub");
    }
}

/// A hub condition (type, status, reason, message).
pub(crate) fn condition(hub: &LynqHub, type_: &str) -> Option<(String, String, String)> {
    let c = hub.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Whether hub condition `type_` has this status and reason.
pub(crate) fn has_condition(hub: &LynqHub, type_: &str, status: &str, reason: &str) -> bool {
    condition(hub, type_).is_some_and(|(s, r, _)| s == status && r == reason)
}

/// The hub's `status.changeCapture.message`.
pub(crate) fn capture_message(hub: &LynqHub) -> String {
    hub.status.as_ref().and_then(|s| s.change_capture.as_ref()).and_then(|c| c.message.clone()).unwrap_or_default()
}

/// The `lynq.sh/extra` annotation of a node, parsed.
pub(crate) fn extra(node: &LynqNode) -> serde_json::Map<String, Value> {
    node.annotations().get("lynq.sh/extra").and_then(|v| serde_json::from_str(v).ok()).unwrap_or_default()
}

/// Records the names of every LynqNode ever added, and of those deleted or marked for deletion.
async fn watch_nodes(api: Api<LynqNode>, log: NodeLog) {
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        let Ok(mut names) = log.0.lock() else { return };
        match event {
            Ok(watcher::Event::Apply(node) | watcher::Event::InitApply(node)) => {
                names.uids.entry(node.name_any()).or_default().insert(node.uid().unwrap_or_default());
                if node.metadata.deletion_timestamp.is_some() {
                    names.deleted.insert(node.name_any());
                }
            }
            Ok(watcher::Event::Delete(node)) => {
                names.deleted.insert(node.name_any());
            }
            _ => {}
        }
    }
}
