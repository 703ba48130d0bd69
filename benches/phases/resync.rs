//! Part 4 of the issue: the periodic full resync of a table whose rows did not change. It runs the
//! steps of the streaming runner's resync tick in this process, on the hub of a finished bulk load
//! (whose operator is stopped first, so every write counted is the resync's): read the table, count
//! divergences from the hub's view, apply the desired set as a full read. Expected: no LynqNode or
//! resource write at all.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use kube::{
    Api,
    runtime::events::{Recorder, Reporter},
};
use lynq::{
    api::LynqHub,
    hub::{
        config,
        runner::CaptureState,
        sync::{BatchKind, HubSync},
    },
    template::Engine,
};
use serde_json::json;
use tokio::time::Instant;

use super::Ctx;
use crate::support::{
    apiserver::{NOT_LYNQ, WriteCounts},
    stats::Percentiles,
};

/// How many timed resyncs (the median is reported).
const ROUNDS: usize = 5;

/// What the resync measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ResyncResult {
    /// Rows in the table.
    pub rows: usize,
    /// Whole resync: read + compare + apply, ms.
    pub total: Percentiles,
    /// The table read alone (database time), ms.
    pub database: Percentiles,
    /// Rows the fresh read disagreed on (0 expected).
    pub divergences: usize,
    /// LynqNode and resource writes over all rounds (0 expected).
    pub node_and_resource_writes: u64,
    /// Every write over all rounds, by resource (the hub's own status may appear).
    pub writes: WriteCounts,
}

/// Resyncs hub `hub` of `namespace` [`ROUNDS`] times after one untimed warm-up.
pub async fn run(ctx: &Ctx, namespace: &str) -> anyhow::Result<ResyncResult> {
    let hub = Api::<LynqHub>::namespaced(ctx.client.clone(), namespace).get("hub").await?;
    let secret = hub.spec.source.mysql.as_ref().and_then(|m| m.password_ref.clone());
    let password = config::read_password(&ctx.client, &hub, secret.as_ref()).await?;
    let database = config::database(&hub, password)?;
    let recorder = Recorder::new(ctx.client.clone(), Reporter { controller: "lynq-bench".into(), instance: None });
    let mut sync = HubSync::new(ctx.client.clone(), Engine::new(), recorder, hub);
    let state = Arc::new(Mutex::new(CaptureState::default()));

    // The running hub's view: built from a full read, with its caches listed.
    sync.replace_table(database.read_table().await?);
    sync.apply(BatchKind::FullRead, &state).await?;

    let before = WriteCounts::scrape(&ctx.client).await?;
    let (mut totals, mut reads, mut divergences) = (Vec::new(), Vec::new(), 0);
    let mut rows = 0;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let table = database.read_table().await?;
        reads.push(start.elapsed());
        rows = table.len();
        divergences += sync.divergences(&table);
        sync.apply(BatchKind::FullRead, &state).await?;
        totals.push(start.elapsed());
    }
    // Let a write that is still in flight land before the counters are read.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let writes = WriteCounts::scrape(&ctx.client).await?.since(&before);
    let node_and_resource_writes = writes.total_except(&[&NOT_LYNQ[..], &["lynqhubs/status", "events"]].concat());
    Ok(ResyncResult {
        rows,
        total: Percentiles::of(&totals),
        database: Percentiles::of(&reads),
        divergences,
        node_and_resource_writes,
        writes,
    })
}

/// The result as JSON.
pub fn to_json(result: &ResyncResult) -> serde_json::Value {
    json!(result)
}
