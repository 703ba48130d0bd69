//! Parts 3 and 5 of the issue: bulk loads (all rows in one transaction, or in transactions of 100)
//! timed until every node is Ready, lynq's API writes per second beside the apiserver's raw write
//! rate at the operator's concurrency, the operator's CPU seconds; and, after a load, its peak and
//! settled memory and idle CPU.

use std::time::Duration;

use k8s_openapi::api::{apps::v1::Deployment, core::v1::ConfigMap, core::v1::Service};
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use lynq::api::LynqHub;
use serde_json::json;
use tokio::time::Instant;

use super::{Ctx, latency::port_of};
use crate::support::{
    apiserver::{self, NOT_LYNQ, WriteCounts},
    db::{self, DATABASE, Db, Kind},
    objects::{self, MANAGER, TableRef},
    operator::{Operator, ProcSample},
};

/// `lynq run --node-concurrency` default: LynqNodes reconciled at once.
pub const NODE_CONCURRENCY: usize = 10;

/// How the rows of a load are committed.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub enum Commit {
    /// Every row in one transaction.
    OneTransaction,
    /// Transactions of this many rows, back to back.
    Batches(usize),
}

/// What one load measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LoadResult {
    /// Rows (= nodes) loaded.
    pub rows: usize,
    /// How the rows were committed.
    pub commit: Commit,
    /// From the first commit until every node was Ready, seconds.
    pub all_ready_seconds: f64,
    /// How long the inserts themselves took, seconds.
    pub insert_seconds: f64,
    /// Writes the apiserver served meanwhile, minus the control plane's and the stand-in kubelet's.
    pub lynq_writes: u64,
    /// Every write meanwhile, by resource.
    pub writes: WriteCounts,
    /// Status writes of the stand-in kubelet meanwhile (not lynq's; excluded from `lynq_writes`).
    pub kubelet_writes: u64,
    /// Operator CPU seconds from the first commit until every node was Ready.
    pub cpu_seconds: f64,
    /// After the load: the operator idle.
    pub idle: Option<Idle>,
}

/// The operator after a load, with nothing to do.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Idle {
    /// Peak RSS of the process so far (VmHWM), MiB.
    pub peak_rss_mib: f64,
    /// RSS at the end of the idle period, MiB.
    pub settled_rss_mib: f64,
    /// CPU used while idle, in % of one core.
    pub idle_cpu_percent: f64,
    /// Length of the idle period, seconds.
    pub seconds: f64,
}

/// Loads `rows` rows into a new MariaDB table behind a new hub in `namespace`, with a fresh operator
/// watching only that namespace; with `settle`, then watches the idle operator for that long.
/// The operator keeps running (returned) so that later phases can use the nodes.
pub async fn load(
    ctx: &Ctx,
    namespace: &str,
    rows: usize,
    commit: Commit,
    settle: Option<Duration>,
) -> anyhow::Result<(LoadResult, Operator)> {
    objects::namespace(&ctx.client, namespace).await?;
    let url = ctx.env.mysql_url()?;
    let mut db = Db::bench_database(Kind::Mysql, url).await?;
    let table = namespace.replace('-', "_");
    db.create_table(&table).await?;
    let table_ref =
        TableRef { kind: Kind::Mysql, port: port_of(url)?, database: DATABASE.into(), table: table.clone() };
    // A resync during the load would be normal operation, but it would blur what is measured.
    let hub = objects::hub("hub", &table_ref, "Stream", "10m")?;
    objects::apply_hub_and_form(&ctx.client, namespace, &hub, &objects::form("form", "hub")?).await?;
    let operator =
        Operator::start(ctx.env.kubeconfig()?, namespace, &ctx.log(&format!("operator-{namespace}.log"))).await?;
    wait_for_streaming(ctx, namespace).await?;

    let uids = db::uids("n", rows);
    let writes_before = WriteCounts::scrape(&ctx.client).await?;
    let cpu_before = operator.sample()?.cpu_seconds;
    let kubelet_before = ctx.kubelet.writes();
    let start = Instant::now();
    match commit {
        Commit::OneTransaction => db.insert_in_one_transaction(&table, &uids).await?,
        Commit::Batches(size) => {
            for chunk in uids.chunks(size.max(1)) {
                db.insert_rows(&table, chunk).await?;
            }
        }
    }
    let insert_seconds = start.elapsed().as_secs_f64();
    let timeout = Duration::from_secs(120) + Duration::from_millis(100) * u32::try_from(rows)?;
    crate::support::wait_until(&format!("{rows} nodes Ready in {namespace}"), timeout, || {
        let ready = ctx.timeline.ready_count(namespace);
        async move { Ok((ready >= rows).then_some(())) }
    })
    .await?;
    let all_ready_seconds = start.elapsed().as_secs_f64();
    let cpu_seconds = operator.sample()?.cpu_seconds - cpu_before;
    let writes = WriteCounts::scrape(&ctx.client).await?.since(&writes_before);
    let kubelet_writes = ctx.kubelet.writes() - kubelet_before;
    let idle = match settle {
        Some(period) => Some(watch_idle(&operator, period).await?),
        None => None,
    };
    let lynq_writes = writes.total_except(&NOT_LYNQ);
    let result = LoadResult {
        rows,
        commit,
        all_ready_seconds,
        insert_seconds,
        lynq_writes,
        writes,
        kubelet_writes,
        cpu_seconds,
        idle,
    };
    Ok((result, operator))
}

async fn wait_for_streaming(ctx: &Ctx, namespace: &str) -> anyhow::Result<()> {
    let api: Api<LynqHub> = Api::namespaced(ctx.client.clone(), namespace);
    crate::support::wait_until("the hub to stream", Duration::from_secs(60), || {
        let api = api.clone();
        async move {
            let hub = api.get("hub").await?;
            let mode = hub.status.and_then(|s| s.change_capture).and_then(|c| c.mode);
            Ok((mode == Some(lynq::api::CaptureModeInUse::Streaming)).then_some(()))
        }
    })
    .await
}

/// Samples the operator's CPU over `period` with nothing to do, and its memory at the end.
pub async fn watch_idle(operator: &Operator, period: Duration) -> anyhow::Result<Idle> {
    let before: ProcSample = operator.sample()?;
    tokio::time::sleep(period).await;
    let after = operator.sample()?;
    Ok(Idle {
        peak_rss_mib: after.peak_rss_mib,
        settled_rss_mib: after.rss_mib,
        idle_cpu_percent: (after.cpu_seconds - before.cpu_seconds) / period.as_secs_f64() * 100.0,
        seconds: period.as_secs_f64(),
    })
}

/// The apiserver's own write rate for the objects a node has (ConfigMap, Deployment, Service,
/// server-side applied), with `concurrency` writes in flight, in a namespace nobody watches.
pub async fn raw_write_rate(
    ctx: &Ctx,
    namespace: &str,
    objects_count: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    objects::namespace(&ctx.client, namespace).await?;
    let params = PatchParams::apply(MANAGER).force();
    apiserver::write_rate(objects_count, concurrency, |i| {
        let client = ctx.client.clone();
        let params = params.clone();
        async move {
            let uid = format!("raw-{:05}", i / 3);
            let [cm, deployment, service] = objects::rendered_resources(&uid);
            match i % 3 {
                0 => {
                    Api::<ConfigMap>::namespaced(client, namespace)
                        .patch(&format!("{uid}-cm"), &params, &Patch::Apply(&cm))
                        .await?;
                }
                1 => {
                    Api::<Deployment>::namespaced(client, namespace)
                        .patch(&format!("{uid}-app"), &params, &Patch::Apply(&deployment))
                        .await?;
                }
                _ => {
                    Api::<Service>::namespaced(client, namespace)
                        .patch(&format!("{uid}-svc"), &params, &Patch::Apply(&service))
                        .await?;
                }
            }
            Ok(())
        }
    })
    .await
}

/// The load's figures as JSON.
pub fn to_json(result: &LoadResult) -> serde_json::Value {
    json!(result)
}
