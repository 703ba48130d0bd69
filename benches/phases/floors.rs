//! The floors lynq's latency is compared with, measured in the same run and at the same rate:
//! a bare binlog reader's and a bare logical-replication reader's commit-to-event delay (no lynq
//! code on the path but the pgoutput decoder), and the apiserver's latency for the writes on a
//! node's critical path, made directly one after the other.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::{apps::v1::Deployment, core::v1::ConfigMap, core::v1::Service};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use lynq::{api::LynqNode, source::postgres::pgoutput};
use mysql_async::{
    BinlogStreamRequest, Conn,
    binlog::{events::EventData, value::BinlogValue},
    prelude::Queryable,
};
use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent};
use serde_json::json;
use tokio::time::Instant;

use crate::support::{
    db::{DATABASE, Db, Kind},
    kubelet,
    objects::{self, ADMIN_PASSWORD, MANAGER},
};

/// When each sample id arrived on a bare reader.
#[derive(Clone, Default)]
pub struct Arrivals(Arc<Mutex<HashMap<i64, Instant>>>);

impl Arrivals {
    fn record(&self, id: i64) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).entry(id).or_insert_with(Instant::now);
    }

    /// When sample `id` arrived.
    pub fn get(&self, id: i64) -> Option<Instant> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).get(&id).copied()
    }
}

/// A bare change reader of one floor table and the session that inserts into it.
pub struct SourceFloor {
    /// Which database.
    pub kind: Kind,
    /// Arrival times by sample id.
    pub arrivals: Arrivals,
    db: Db,
    table: &'static str,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SourceFloor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SourceFloor {
    /// Inserts sample `id` and returns when its commit returned.
    pub async fn insert(&mut self, id: i64) -> anyhow::Result<Instant> {
        self.db.exec(&format!("INSERT INTO {} (id, v) VALUES ({id}, 'x')", self.table)).await?;
        Ok(Instant::now())
    }

    /// A bare binlog reader (mysql_async, as lynq's stream uses it) from the current end of the log.
    pub async fn mysql(admin_url: &str) -> anyhow::Result<Self> {
        let mut db = Db::bench_database(Kind::Mysql, admin_url).await?;
        db.exec("CREATE TABLE floor_my (id BIGINT PRIMARY KEY, v VARCHAR(16))").await?;
        let mut conn = Conn::from_url(format!("{admin_url}{DATABASE}").as_str()).await?;
        let (file, pos): (String, u64) = conn
            .query_first("SHOW MASTER STATUS")
            .await?
            .map(|row: mysql_async::Row| (row.get(0).unwrap_or_default(), row.get(1).unwrap_or_default()))
            .context("SHOW MASTER STATUS returned nothing: is the binlog on?")?;
        // The same session set-up as lynq's stream: MariaDB GTID events as-is, checksums on.
        conn.query_drop("SET @mariadb_slave_capability = 4, @master_binlog_checksum = 'ALL'").await?;
        let request = BinlogStreamRequest::new(0xB_E7C4).with_filename(file.as_bytes()).with_pos(pos);
        let stream = conn.get_binlog_stream(request).await?;
        let arrivals = Arrivals::default();
        let task = tokio::spawn(read_binlog(stream, arrivals.clone()));
        Ok(Self { kind: Kind::Mysql, arrivals, db, table: "floor_my", task })
    }

    /// A bare logical-replication reader (pgwire-replication, pgoutput) from a new slot.
    pub async fn postgres(admin_url: &str) -> anyhow::Result<Self> {
        let mut db = Db::bench_database(Kind::Postgres, admin_url).await?;
        // Separate statements: a slot cannot be created in a transaction that wrote.
        db.exec("CREATE TABLE floor_pg (id BIGINT PRIMARY KEY, v TEXT)").await?;
        db.exec("CREATE PUBLICATION bench_floor FOR TABLE floor_pg").await?;
        db.exec("SELECT pg_create_logical_replication_slot('bench_floor', 'pgoutput')").await?;
        let port: u16 = admin_url
            .rsplit_once(':')
            .and_then(|(_, rest)| rest.split('/').next())
            .and_then(|p| p.parse().ok())
            .context("PostgreSQL port")?;
        let config =
            ReplicationConfig::new("127.0.0.1", "postgres", ADMIN_PASSWORD, DATABASE, "bench_floor", "bench_floor")
                .with_port(port)
                .with_start_lsn(Lsn(0));
        let mut client = ReplicationClient::connect(config).await?;
        client.wait_started().await?;
        let arrivals = Arrivals::default();
        let task = tokio::spawn(read_replication(client, arrivals.clone()));
        Ok(Self { kind: Kind::Postgres, arrivals, db, table: "floor_pg", task })
    }
}

async fn read_binlog(mut stream: mysql_async::BinlogStream, arrivals: Arrivals) {
    while let Some(Ok(event)) = stream.next().await {
        let Ok(Some(EventData::RowsEvent(rows))) = event.read_data() else { continue };
        let Some(tme) = stream.get_tme(rows.table_id()) else { continue };
        if tme.table_name() != "floor_my" {
            continue;
        }
        for (_, after) in rows.rows(tme).flatten() {
            if let Some(BinlogValue::Value(mysql_async::Value::Int(id))) = after.as_ref().and_then(|r| r.as_ref(0)) {
                arrivals.record(*id);
            }
        }
    }
}

async fn read_replication(mut client: ReplicationClient, arrivals: Arrivals) {
    while let Ok(Some(event)) = client.recv().await {
        match event {
            ReplicationEvent::XLogData { data, .. } => {
                if let Ok(pgoutput::PgOutputMessage::Insert(insert)) = pgoutput::decode(&data)
                    && let Some(pgoutput::TupleValue::Text(id)) = insert.new.first()
                    && let Ok(id) = id.parse()
                {
                    arrivals.record(id);
                }
            }
            ReplicationEvent::Commit { end_lsn, .. } => client.update_applied_lsn(end_lsn),
            _ => {}
        }
    }
}

/// The writes on one node's critical path, made directly in `namespace` (which no operator
/// watches): create the LynqNode, apply ConfigMap and Deployment, the stand-in kubelet's status,
/// apply the Service, write the node's Ready status. Returns the time from the start to the end of
/// each write: [`CHAIN_NODE`] (node created), [`CHAIN_FIRST`] (first resource), [`CHAIN_READY`].
pub async fn apiserver_chain(client: &Client, namespace: &str, uid: &str) -> anyhow::Result<[Duration; 6]> {
    let params = PatchParams::apply(MANAGER).force();
    let start = Instant::now();
    let mut node_spec = objects::form_resources();
    node_spec["uid"] = json!(uid);
    node_spec["templateRef"] = json!("floor");
    let node = json!({"apiVersion": "operator.lynq.sh/v1", "kind": "LynqNode",
        "metadata": {"name": format!("{uid}-floor")}, "spec": node_spec});
    let nodes: Api<LynqNode> = Api::namespaced(client.clone(), namespace);
    let mut marks = [Duration::ZERO; 6];
    nodes.patch(&format!("{uid}-floor"), &params, &Patch::Apply(&node)).await?;
    marks[0] = start.elapsed();
    let [cm, deployment, service] = objects::rendered_resources(uid);
    Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .patch(&format!("{uid}-cm"), &params, &Patch::Apply(&cm))
        .await?;
    marks[1] = start.elapsed();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let applied = deployments.patch(&format!("{uid}-app"), &params, &Patch::Apply(&deployment)).await?;
    marks[2] = start.elapsed();
    kubelet::mark_ready(client, &applied).await?;
    marks[3] = start.elapsed();
    Api::<Service>::namespaced(client.clone(), namespace)
        .patch(&format!("{uid}-svc"), &params, &Patch::Apply(&service))
        .await?;
    marks[4] = start.elapsed();
    let status = json!({"apiVersion": "operator.lynq.sh/v1", "kind": "LynqNode",
        "status": {"desiredResources": 3, "readyResources": 3,
                   "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "floor",
                                   "lastTransitionTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}]}});
    nodes.patch_status(&format!("{uid}-floor"), &params, &Patch::Apply(&status)).await?;
    marks[5] = start.elapsed();
    Ok(marks)
}

/// Index in [`apiserver_chain`]'s result: the LynqNode exists.
pub const CHAIN_NODE: usize = 0;
/// Index in [`apiserver_chain`]'s result: the first resource (ConfigMap) exists.
pub const CHAIN_FIRST: usize = 1;
/// Index in [`apiserver_chain`]'s result: the node's Ready status is written.
pub const CHAIN_READY: usize = 5;
