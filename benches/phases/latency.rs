//! Part 1 and 2 of the issue: single-row latency (commit → LynqNode created → first resource
//! applied → node Ready) for a MariaDB binlog stream, a PostgreSQL logical-replication stream and a
//! MariaDB Poll hub (syncInterval 5s), with the floors measured in the same loop: every tick
//! inserts one row into the next of the three hub tables or the two bare-reader tables, or makes
//! the apiserver's critical-path writes directly, so all six share the same rate and the same noise.

use std::time::Duration;

use serde_json::json;
use tokio::time::{Instant, MissedTickBehavior};

use super::{
    Ctx,
    floors::{self, CHAIN_FIRST, CHAIN_NODE, CHAIN_READY, SourceFloor},
};
use crate::support::{
    db::{Db, Kind},
    objects::{self, TableRef},
    operator::Operator,
    report::Report,
    stats::{Percentiles, ms, ratio},
};

const NAMESPACE: &str = "bench-latency";
/// Where the apiserver floor writes; no operator watches it.
pub const FLOOR_NAMESPACE: &str = "bench-floor";
const POLL_INTERVAL: &str = "5s";

/// One hub under test and the rows inserted into its table.
struct Mode {
    label: &'static str,
    prefix: &'static str,
    kind: Kind,
    poll: bool,
    table: String,
    form: String,
    db: Db,
    commits: Vec<(String, Instant)>,
}

/// commit → node created, → first resource, → Ready, for one mode.
struct Stages {
    created: Percentiles,
    first: Percentiles,
    ready: Percentiles,
}

/// Runs the latency phase and adds its rows to `report`.
pub async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    objects::namespace(&ctx.client, NAMESPACE).await?;
    objects::namespace(&ctx.client, FLOOR_NAMESPACE).await?;
    let mut modes = set_up_modes(ctx).await?;
    let operator = Operator::start(ctx.env.kubeconfig()?, NAMESPACE, &ctx.log("operator-latency.log")).await?;
    warm_up(ctx, &mut modes).await?;
    let mut binlog = SourceFloor::mysql(ctx.env.mysql_url()?).await?;
    let mut replication = SourceFloor::postgres(ctx.env.postgres_url()?).await?;

    let cpu_before = operator.sample()?.cpu_seconds;
    let samples = ctx.scale.latency_samples;
    let mut ticker = tokio::time::interval(ctx.scale.latency_tick);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut source_commits: [Vec<(i64, Instant)>; 2] = [Vec::new(), Vec::new()];
    let mut chains = Vec::new();
    let loop_start = Instant::now();
    for i in 0..samples {
        for mode in modes.iter_mut() {
            ticker.tick().await;
            let uid = format!("{}-{i:04}", mode.prefix);
            mode.db.insert_rows(&mode.table, std::slice::from_ref(&uid)).await?;
            mode.commits.push((uid, Instant::now()));
        }
        let id = i64::try_from(i)?;
        for (floor, commits) in [&mut binlog, &mut replication].into_iter().zip(source_commits.iter_mut()) {
            ticker.tick().await;
            commits.push((id, floor.insert(id).await?));
        }
        ticker.tick().await;
        let client = ctx.client.clone();
        chains.push(tokio::spawn(async move {
            floors::apiserver_chain(&client, FLOOR_NAMESPACE, &format!("f-{i:04}")).await
        }));
    }
    let loop_seconds = loop_start.elapsed().as_secs_f64();
    wait_for_ready(ctx, &modes).await?;
    let cpu = operator.sample()?.cpu_seconds - cpu_before;
    operator.stop();

    let mut chain = Vec::new();
    for handle in chains {
        chain.push(handle.await??);
    }
    let source = [arrival_delays(&binlog, &source_commits[0])?, arrival_delays(&replication, &source_commits[1])?];
    write_rows(ctx, report, &modes, &source, &chain, (cpu, loop_seconds));
    Ok(())
}

async fn set_up_modes(ctx: &Ctx) -> anyhow::Result<Vec<Mode>> {
    let specs = [
        ("MariaDB binlog stream", "ms", Kind::Mysql, false),
        ("PostgreSQL logical replication", "ps", Kind::Postgres, false),
        ("MariaDB Poll, syncInterval 5s", "mp", Kind::Mysql, true),
    ];
    let mut modes = Vec::new();
    for (label, prefix, kind, poll) in specs {
        let url = match kind {
            Kind::Mysql => ctx.env.mysql_url()?,
            Kind::Postgres => ctx.env.postgres_url()?,
        };
        let mut db = Db::bench_database(kind, url).await?;
        let table = format!("lat_{prefix}");
        db.create_table(&table).await?;
        let table_ref =
            TableRef { kind, port: port_of(url)?, database: crate::support::db::DATABASE.into(), table: table.clone() };
        let hub_name = format!("hub-{prefix}");
        let form = format!("form-{prefix}");
        let (mode, interval) = if poll { ("Poll", POLL_INTERVAL) } else { ("Stream", "30s") };
        let hub = objects::hub(&hub_name, &table_ref, mode, interval)?;
        objects::apply_hub_and_form(&ctx.client, NAMESPACE, &hub, &objects::form(&form, &hub_name)?).await?;
        modes.push(Mode { label, prefix, kind, poll, table, form, db, commits: Vec::new() });
    }
    Ok(modes)
}

/// The port of a `scheme://user:pass@127.0.0.1:PORT/…` URL.
pub fn port_of(url: &str) -> anyhow::Result<u16> {
    let after_host = url.rsplit_once('@').map_or(url, |(_, rest)| rest);
    after_host
        .split('/')
        .next()
        .and_then(|hostport| hostport.rsplit_once(':'))
        .and_then(|(_, port)| port.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no port in {url}"))
}

/// One row per hub, waited for, so that streams, caches and watches are warm before sampling.
async fn warm_up(ctx: &Ctx, modes: &mut [Mode]) -> anyhow::Result<()> {
    for mode in modes.iter_mut() {
        let uid = format!("{}-warm", mode.prefix);
        mode.db.insert_rows(&mode.table, std::slice::from_ref(&uid)).await?;
    }
    let names: Vec<String> = modes.iter().map(|m| format!("{}-warm-{}", m.prefix, m.form)).collect();
    crate::support::wait_until("the warm-up rows' nodes Ready", Duration::from_secs(120), || {
        let ready = names.iter().all(|n| ctx.timeline.node(NAMESPACE, n).ready.is_some());
        async move { Ok(ready.then_some(())) }
    })
    .await
}

async fn wait_for_ready(ctx: &Ctx, modes: &[Mode]) -> anyhow::Result<()> {
    let names: Vec<String> =
        modes.iter().flat_map(|m| m.commits.iter().map(move |(uid, _)| format!("{uid}-{}", m.form))).collect();
    crate::support::wait_until("every latency sample Ready", Duration::from_secs(180), || {
        let ready = names.iter().all(|n| ctx.timeline.node(NAMESPACE, n).ready.is_some());
        async move { Ok(ready.then_some(())) }
    })
    .await
}

fn stages(ctx: &Ctx, mode: &Mode) -> Stages {
    let (mut created, mut first, mut ready) = (Vec::new(), Vec::new(), Vec::new());
    for (uid, commit) in &mode.commits {
        let node = ctx.timeline.node(NAMESPACE, &format!("{uid}-{}", mode.form));
        created.extend(node.created.map(|t| t.saturating_duration_since(*commit)));
        ready.extend(node.ready.map(|t| t.saturating_duration_since(*commit)));
        first.extend(
            ctx.timeline.config_map(NAMESPACE, &format!("{uid}-cm")).map(|t| t.saturating_duration_since(*commit)),
        );
    }
    Stages { created: Percentiles::of(&created), first: Percentiles::of(&first), ready: Percentiles::of(&ready) }
}

fn arrival_delays(floor: &SourceFloor, commits: &[(i64, Instant)]) -> anyhow::Result<Vec<Duration>> {
    let delays: Vec<Duration> = commits
        .iter()
        .filter_map(|(id, at)| floor.arrivals.get(*id).map(|t| t.saturating_duration_since(*at)))
        .collect();
    anyhow::ensure!(
        delays.len() == commits.len(),
        "the bare {} reader saw {} of {} rows",
        floor.kind.label(),
        delays.len(),
        commits.len()
    );
    Ok(delays)
}

/// Adds the latency and floor rows; `cpu` is the operator's CPU seconds over the loop's seconds.
fn write_rows(
    ctx: &Ctx,
    report: &mut Report,
    modes: &[Mode],
    source: &[Vec<Duration>; 2],
    chain: &[[Duration; 6]],
    (cpu, loop_seconds): (f64, f64),
) {
    let chain_at = |i: usize| Percentiles::of(&chain.iter().map(|c| c[i]).collect::<Vec<_>>());
    let (chain_node, chain_first, chain_ready) = (chain_at(CHAIN_NODE), chain_at(CHAIN_FIRST), chain_at(CHAIN_READY));
    let binlog = Percentiles::of(&source[0]);
    let replication = Percentiles::of(&source[1]);
    report.row("floor", "bare binlog reader: commit → row event", binlog.display(), "—".into(), None);
    report.row(
        "floor",
        "bare logical-replication reader: commit → row message",
        replication.display(),
        "—".into(),
        None,
    );
    report.row(
        "floor",
        "apiserver: the 6 critical-path writes made directly, in sequence",
        chain_ready.display(),
        format!("node created after {} ms, first resource after {} ms (p50)", ms(chain_node.p50), ms(chain_first.p50)),
        None,
    );
    let mut stream_ready = None;
    let mut data = serde_json::Map::new();
    for mode in modes {
        let s = stages(ctx, mode);
        let source = if mode.kind == Kind::Mysql { binlog } else { replication };
        let floor = |chain: &Percentiles| source.p50 + chain.p50;
        let floor_text = |chain: &Percentiles| {
            format!(
                "floor p50 {} ms = {} reader {} + apiserver {}",
                ms(floor(chain)),
                mode.kind.label(),
                ms(source.p50),
                ms(chain.p50)
            )
        };
        if mode.poll {
            let stream = stream_ready.unwrap_or_default();
            report.row(
                "latency",
                &format!("{}: commit → node Ready", mode.label),
                s.ready.display(),
                format!(
                    "MariaDB stream, same run: p50 {} ms (ratio poll/stream); {}",
                    ms(stream),
                    floor_text(&chain_ready)
                ),
                Some(ratio(s.ready.p50, stream)),
            );
        } else {
            for (stage, p, chain) in [
                ("LynqNode created", s.created, chain_node),
                ("first resource applied", s.first, chain_first),
                ("node Ready", s.ready, chain_ready),
            ] {
                report.row(
                    "latency",
                    &format!("{}: commit → {stage}", mode.label),
                    p.display(),
                    floor_text(&chain),
                    Some(ratio(p.p50, floor(&chain))),
                );
            }
            if mode.kind == Kind::Mysql {
                stream_ready = Some(s.ready.p50);
            }
        }
        data.insert(mode.label.into(), json!({"created": s.created, "first_resource": s.first, "ready": s.ready}));
    }
    let rows = modes.iter().map(|m| m.commits.len()).sum::<usize>();
    report.row(
        "latency",
        "operator CPU per single-row change (whole latency loop)",
        format!("{:.2} ms CPU/row", cpu * 1000.0 / rows.max(1) as f64),
        format!("{rows} rows over {loop_seconds:.0} s: {:.1}% of a core", cpu / loop_seconds * 100.0),
        None,
    );
    report.note("Ratios divide lynq's p50 by the floor's p50: the bare reader's commit-to-event delay plus the \
                 apiserver's time for the writes on the node's critical path (create LynqNode, apply ConfigMap, \
                 apply Deployment, stand-in kubelet status, apply Service, node Ready status), made directly in sequence.");
    data.insert(
        "floor".into(),
        json!({"binlog": binlog, "logical_replication": replication,
        "apiserver_node_created": chain_node, "apiserver_first_resource": chain_first, "apiserver_ready": chain_ready}),
    );
    report.data("latency", serde_json::Value::Object(data));
}
