//! End-to-end benchmarks of lynq against a real local environment (control plane, MariaDB,
//! PostgreSQL), each figure beside its floor or its alternative from the same run:
//!
//! 1. single-row latency, streaming (MariaDB, PostgreSQL) and Poll (syncInterval 5s);
//! 2. the floors: bare binlog and logical-replication readers, the apiserver's own writes;
//! 3. bulk loads: all rows in one transaction and in transactions of 100;
//! 4. a full resync of unchanged rows;
//! 5. the operator's memory and idle CPU at two node counts.
//!
//! `cargo bench --bench e2e` runs the full size; `LYNQ_BENCH_SCALE=small` a smoke run;
//! `LYNQ_BENCH_ONLY=latency,bulk,resync,memory` a subset. Writes `target/bench/e2e.{md,json}`.

mod phases;
mod support;

use phases::{
    Ctx, latency,
    load::{self, Commit, LoadResult, NODE_CONCURRENCY},
    resync::{self, ResyncResult},
};
use serde_json::json;
use support::{
    Scale,
    env::{self, Env},
    kubelet::StandInKubelet,
    phase_enabled,
    report::Report,
    stats::{ms, ratio},
    timeline::Timeline,
};

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench` (and filters); this harness takes its options from the environment.
    lynq::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let scale = Scale::from_env();
    let out = support::out_dir();
    let log_dir = out.join("logs");
    std::fs::create_dir_all(&log_dir)?;
    println!("lynq e2e benchmark, scale {} (LYNQ_BENCH_SCALE=small for a smoke run)", scale.name);
    println!("starting the local environment…");
    let env = Env::start(&out.join("env-logs"))?;
    let client = env.client().await?;
    env::install_crds(&client).await?;
    let ctx = Ctx {
        timeline: Timeline::start(&client),
        kubelet: StandInKubelet::start(client.clone(), &[latency::FLOOR_NAMESPACE]),
        env,
        client,
        scale,
        log_dir,
    };
    let mut report = Report::new("e2e", "lynq end-to-end benchmarks", scale.describe());
    let result = phases(&ctx, &mut report).await;
    let Ctx { env, .. } = ctx;
    if let Err(e) = &result {
        report.note(format!("the run stopped early: {e:#}"));
    }
    report.finish()?;
    env.stop();
    result
}

async fn phases(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    if phase_enabled("latency") {
        println!("latency: {} single-row inserts per mode and floor…", ctx.scale.latency_samples);
        latency::run(ctx, report).await?;
    }
    let (bulk, memory, resync) = (phase_enabled("bulk"), phase_enabled("memory"), phase_enabled("resync"));
    if !(bulk || memory || resync) {
        return Ok(());
    }
    let rows = ctx.scale.bulk_rows;
    let raw_objects = (3 * rows).min(3000);
    println!("raw apiserver write rate: {raw_objects} server-side applies, {NODE_CONCURRENCY} in flight…");
    let raw_rate = load::raw_write_rate(ctx, "bench-raw", raw_objects, NODE_CONCURRENCY).await?;
    report.data("raw_apiserver_writes_per_second", json!(raw_rate));

    let mut small = None;
    if memory {
        let n = ctx.scale.memory_small;
        println!("memory: {n} nodes…");
        let (result, operator) =
            load::load(ctx, "bench-mem-small", n, Commit::OneTransaction, Some(ctx.scale.settle)).await?;
        operator.stop();
        small = Some(result);
    }
    let mut one = None;
    if bulk || memory {
        println!("bulk: {rows} rows in one transaction…");
        let (result, operator) =
            load::load(ctx, "bench-bulk-one", rows, Commit::OneTransaction, Some(ctx.scale.settle)).await?;
        operator.stop();
        bulk_rows(report, &result, raw_rate);
        one = Some(result);
    }
    if let (Some(small), Some(big)) = (&small, &one) {
        memory_rows(report, small, big);
    }
    if bulk || resync {
        let batch = ctx.scale.bulk_batch;
        println!("bulk: {rows} rows in transactions of {batch}…");
        let (result, operator) = load::load(ctx, "bench-bulk-batched", rows, Commit::Batches(batch), None).await?;
        operator.stop();
        bulk_rows(report, &result, raw_rate);
        if resync {
            println!("resync: {rows} unchanged rows…");
            let result = resync::run(ctx, "bench-bulk-batched").await?;
            resync_rows(report, &result);
        }
    }
    Ok(())
}

fn commit_label(commit: Commit) -> String {
    match commit {
        Commit::OneTransaction => "one transaction".into(),
        Commit::Batches(n) => format!("transactions of {n}"),
    }
}

fn bulk_rows(report: &mut Report, r: &LoadResult, raw_rate: f64) {
    let how = commit_label(r.commit);
    let figure = |what: &str| format!("{} rows in {how}: {what}", r.rows);
    report.row(
        "bulk",
        &figure("first commit → every node Ready"),
        format!("{:.1} s ({:.0} nodes/s)", r.all_ready_seconds, r.rows as f64 / r.all_ready_seconds),
        format!("the inserts took {:.2} s", r.insert_seconds),
        None,
    );
    let rate = r.lynq_writes as f64 / r.all_ready_seconds;
    report.row(
        "bulk",
        &figure("API writes/s"),
        format!("{rate:.0} writes/s ({:.1} per node)", r.lynq_writes as f64 / r.rows as f64),
        format!("raw apiserver server-side apply, {NODE_CONCURRENCY} in flight: {raw_rate:.0} writes/s"),
        Some(ratio(rate, raw_rate)),
    );
    report.row(
        "bulk",
        &figure("operator CPU"),
        format!("{:.1} CPU s ({:.2} ms per node)", r.cpu_seconds, r.cpu_seconds * 1000.0 / r.rows as f64),
        format!("{:.2} cores on average over {:.1} s", r.cpu_seconds / r.all_ready_seconds, r.all_ready_seconds),
        None,
    );
    report.data(&format!("bulk_{}", how.replace(' ', "_")), load::to_json(r));
}

fn memory_rows(report: &mut Report, small: &LoadResult, big: &LoadResult) {
    let (Some(s), Some(b)) = (small.idle, big.idle) else { return };
    for (r, idle) in [(small, s), (big, b)] {
        report.row(
            "memory",
            &format!("operator with {} nodes (3 resources each): RSS peak / settled", r.rows),
            format!("{:.0} / {:.0} MiB", idle.peak_rss_mib, idle.settled_rss_mib),
            format!("idle CPU {:.2}% of a core over {:.0} s", idle.idle_cpu_percent, idle.seconds),
            None,
        );
    }
    let per_node_kib = (b.settled_rss_mib - s.settled_rss_mib) * 1024.0 / (big.rows - small.rows).max(1) as f64;
    report.row(
        "memory",
        &format!("growth from {} to {} nodes", small.rows, big.rows),
        format!("{per_node_kib:.1} KiB settled RSS per extra node"),
        format!(
            "settled RSS {:.0} → {:.0} MiB for {:.0}× the nodes",
            s.settled_rss_mib,
            b.settled_rss_mib,
            big.rows as f64 / small.rows as f64
        ),
        Some(ratio(b.settled_rss_mib, s.settled_rss_mib)),
    );
    report.data("memory", json!({"small": small, "big": big}));
}

fn resync_rows(report: &mut Report, r: &ResyncResult) {
    report.row(
        "resync",
        &format!("full resync of {} unchanged rows: LynqNode + resource writes", r.rows),
        format!("{}", r.node_and_resource_writes),
        format!("must be 0 ({} divergences; all writes: {:?})", r.divergences, r.writes.0),
        None,
    );
    report.row(
        "resync",
        &format!("full resync of {} unchanged rows: duration p50 / p95", r.rows),
        format!("{} / {} ms", ms(r.total.p50), ms(r.total.p95)),
        format!("database time (table read) p50 {} ms", ms(r.database.p50)),
        Some(ratio(r.total.p50, r.database.p50)),
    );
    report.data("resync", resync::to_json(r));
}
