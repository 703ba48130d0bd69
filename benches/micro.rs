//! Criterion micro-benchmarks of lynq's per-row and per-node work, each beside a comparison from
//! the same run:
//!
//! - template render per resource, Go syntax beside Jinja (the ConfigMap → Deployment →
//!   Service form);
//! - decode per row: lynq's binlog path (event read, TABLE_MAP layout, row rendering) beside the
//!   bare mysql_common parse of the same events, and lynq's pgoutput path (decoder, relation
//!   cache, row rendering, transaction grouping) beside the bare message decode; fixtures are a
//!   real MariaDB binlog file and real pgoutput messages of 1,000 inserts and 100 updates;
//! - DAG planning per node (graph build and validation, dependency-ordered walk) beside rendering
//!   the same node.
//!
//! `cargo bench --bench micro`; `LYNQ_BENCH_SCALE=small` shortens the measurement. Writes
//! `target/bench/micro.{md,json}` (medians from criterion's estimates) besides criterion's own output.

use std::{collections::BTreeMap, collections::HashSet, hint::black_box, io::BufReader, path::PathBuf, time::Duration};

use criterion::{Criterion, Throughput};
use lynq::{
    api::{LynqFormSpec, TResource},
    graph::ResourceGraph,
    node::render::{render_resource, syntax_of},
    source::{
        RowChange, SourceEvent,
        mysql::bench_decode::RowsDecoder,
        postgres::{PostgresConfig, bench_decode::Decoder, pgoutput},
    },
    template::Engine,
};
use mysql_common::binlog::{BinlogFileHeader, EventStreamReader, consts::BinlogVersion, events::EventData};
use serde_json::{Value, json};

const BINLOG: &[u8] = include_bytes!("fixtures/rows.binlog");
/// pgoutput messages, each prefixed with its length (u32, big-endian).
const PGOUTPUT: &[u8] = include_bytes!("fixtures/rows.pgoutput");
const COLUMNS: [&str; 4] = ["node_id", "is_active", "plan", "region"];

fn form(syntax: &str) -> anyhow::Result<LynqFormSpec> {
    let (uid, plan) = match syntax {
        "jinja" => ("{{ uid }}", "{{ planId | default(\"basic\") }}"),
        _ => ("{{ .uid }}", "{{ .planId | default \"basic\" }}"),
    };
    let name = |suffix: &str| format!("{uid}-{suffix}");
    Ok(serde_json::from_value(json!({
        "hubId": "hub", "templateSyntax": syntax,
        "configMaps": [{"id": "cm", "nameTemplate": name("cm"),
            "spec": {"apiVersion": "v1", "kind": "ConfigMap", "data": {"uid": uid, "plan": plan}}}],
        "deployments": [{"id": "app", "dependIds": ["cm"], "nameTemplate": name("app"), "labelsTemplate": {"app": uid},
            "spec": {"apiVersion": "apps/v1", "kind": "Deployment",
                     "spec": {"replicas": 1, "selector": {"matchLabels": {"app": uid}},
                              "template": {"metadata": {"labels": {"app": uid}},
                                           "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}}}}}],
        "services": [{"id": "svc", "dependIds": ["app"], "nameTemplate": name("svc"),
            "spec": {"apiVersion": "v1", "kind": "Service",
                     "spec": {"selector": {"app": uid}, "ports": [{"port": 80, "targetPort": 80}]}}}],
    }))?)
}

fn variables() -> BTreeMap<String, String> {
    [("uid", "tenant-00042"), ("planId", "pro"), ("activate", "1"), ("hubId", "hub"), ("templateRef", "form")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn render_node(engine: &Engine, spec: &LynqFormSpec, vars: &BTreeMap<String, String>) -> usize {
    let syntax = syntax_of(spec.template_syntax);
    spec.resources.all().filter_map(|r| render_resource(engine, syntax, r, "default", vars).ok()).count()
}

/// What the node controller plans for one node: the validated DAG and a walk in dependency order.
fn plan_node(resources: &[&TResource]) -> usize {
    let edges: Vec<(String, Vec<String>)> =
        resources.iter().map(|r| (r.id.clone(), r.dependencies().to_vec())).collect();
    let Ok(graph) = ResourceGraph::new(&edges) else { return 0 };
    let mut finished: HashSet<String> = HashSet::new();
    let mut steps = 0;
    loop {
        let runnable: Vec<String> =
            graph.runnable(&finished).into_iter().filter(|id| !finished.contains(*id)).map(str::to_owned).collect();
        if runnable.is_empty() {
            return steps;
        }
        steps += runnable.len();
        finished.extend(runnable);
    }
}

fn columns() -> Vec<String> {
    COLUMNS.iter().map(|c| (*c).to_owned()).collect()
}

/// lynq's path, as the stream runs it: events read, a layout per TABLE_MAP of the table, every row
/// image rendered.
fn decode_binlog(file: &[u8], columns: &[String]) -> anyhow::Result<usize> {
    let mut input = BufReader::new(file);
    BinlogFileHeader::read(&mut input)?;
    let mut reader = EventStreamReader::new(BinlogVersion::Version4);
    let mut decoder: Option<(u64, RowsDecoder)> = None;
    let mut rows = 0;
    while let Some(event) = reader.read(&mut input)? {
        match event.read_data()? {
            Some(EventData::TableMapEvent(tme)) if tme.table_name() == "node_data" => {
                decoder = Some((tme.table_id(), RowsDecoder::new(&tme, columns).map_err(anyhow::Error::msg)?));
            }
            Some(EventData::RowsEvent(data)) => {
                let Some((id, decoder)) = decoder.as_ref().filter(|(id, _)| *id == data.table_id()) else { continue };
                let tme = reader.get_tme(*id).ok_or_else(|| anyhow::anyhow!("no TABLE_MAP"))?;
                rows += count_changes(&decoder.decode(tme, &data).map_err(anyhow::Error::msg)?);
            }
            _ => {}
        }
    }
    Ok(rows)
}

/// The bare parse: events read and row images decoded by mysql_common, nothing rendered.
fn parse_binlog_only(file: &[u8]) -> usize {
    let mut input = BufReader::new(file);
    if BinlogFileHeader::read(&mut input).is_err() {
        return 0;
    }
    let mut reader = EventStreamReader::new(BinlogVersion::Version4);
    let mut rows = 0;
    while let Ok(Some(event)) = reader.read(&mut input) {
        if let Ok(Some(EventData::RowsEvent(data))) = event.read_data()
            && let Some(tme) = reader.get_tme(data.table_id())
        {
            rows += data.rows(tme).filter(Result::is_ok).count();
        }
    }
    rows
}

fn pg_messages() -> Vec<&'static [u8]> {
    let mut messages = Vec::new();
    let mut rest = PGOUTPUT;
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*len) as usize;
        let Some((message, tail)) = tail.split_at_checked(len) else { break };
        messages.push(message);
        rest = tail;
    }
    messages
}

fn pg_config() -> PostgresConfig {
    PostgresConfig {
        schema: "public".into(),
        table: "node_data".into(),
        uid_column: "node_id".into(),
        columns: columns(),
        ..PostgresConfig::default()
    }
}

fn decode_pg(messages: &[&[u8]]) -> usize {
    let mut decoder = Decoder::new(&pg_config());
    let mut rows = 0;
    for m in messages {
        if let Ok(Some(SourceEvent::Transaction(tx))) = decoder.feed(m) {
            rows += tx.changes.len();
        }
    }
    rows
}

fn count_changes(changes: &[RowChange]) -> usize {
    changes.len()
}

/// Criterion's settings: shorter with `LYNQ_BENCH_SCALE=small`.
fn criterion() -> Criterion {
    let c = Criterion::default().configure_from_args();
    match std::env::var("LYNQ_BENCH_SCALE").as_deref() {
        Ok("small") | Ok("smoke") => {
            c.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1)).sample_size(20)
        }
        _ => c,
    }
}

fn main() -> anyhow::Result<()> {
    let mut c = criterion();
    let engine = Engine::new();
    let vars = variables();
    let (go, jinja) = (form("go")?, form("jinja")?);
    anyhow::ensure!(
        render_node(&engine, &go, &vars) == 3 && render_node(&engine, &jinja, &vars) == 3,
        "the form must render"
    );

    let mut group = c.benchmark_group("render");
    group.throughput(Throughput::Elements(3));
    group.bench_function("go", |b| b.iter(|| render_node(&engine, black_box(&go), black_box(&vars))));
    group.bench_function("jinja", |b| b.iter(|| render_node(&engine, black_box(&jinja), black_box(&vars))));
    group.finish();

    let columns = columns();
    let binlog_rows = decode_binlog(BINLOG, &columns)?;
    let messages = pg_messages();
    let pg_rows = decode_pg(&messages);
    anyhow::ensure!(
        binlog_rows == 1100 && pg_rows == 1100,
        "fixtures decode to {binlog_rows} and {pg_rows} rows, not 1100"
    );

    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(binlog_rows as u64));
    group.bench_function("binlog_lynq", |b| b.iter(|| decode_binlog(black_box(BINLOG), &columns).ok()));
    group.bench_function("binlog_parse_only", |b| b.iter(|| parse_binlog_only(black_box(BINLOG))));
    group.throughput(Throughput::Elements(pg_rows as u64));
    group.bench_function("pgoutput_lynq", |b| b.iter(|| decode_pg(black_box(&messages))));
    group.bench_function("pgoutput_parse_only", |b| {
        b.iter(|| messages.iter().filter(|m| pgoutput::decode(black_box(m)).is_ok()).count())
    });
    group.finish();

    let resources: Vec<&TResource> = go.resources.all().collect();
    let mut group = c.benchmark_group("plan");
    group.throughput(Throughput::Elements(1));
    group.bench_function("dag_per_node", |b| b.iter(|| plan_node(black_box(&resources))));
    group.finish();
    c.final_summary();

    write_report(binlog_rows, pg_rows)
}

/// criterion's median estimate of `group/function`, in ns per iteration.
fn median_ns(group: &str, function: &str) -> anyhow::Result<f64> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let path = target.join("criterion").join(group).join(function).join("new/estimates.json");
    let estimates: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    estimates["median"]["point_estimate"].as_f64().ok_or_else(|| anyhow::anyhow!("no median in {}", path.display()))
}

fn write_report(binlog_rows: usize, pg_rows: usize) -> anyhow::Result<()> {
    let per = |group: &str, f: &str, n: usize| -> anyhow::Result<f64> { Ok(median_ns(group, f)? / n as f64 / 1000.0) };
    let go = per("render", "go", 3)?;
    let jinja = per("render", "jinja", 3)?;
    let binlog = per("decode", "binlog_lynq", binlog_rows)?;
    let binlog_bare = per("decode", "binlog_parse_only", binlog_rows)?;
    let pg = per("decode", "pgoutput_lynq", pg_rows)?;
    let pg_bare = per("decode", "pgoutput_parse_only", pg_rows)?;
    let plan = per("plan", "dag_per_node", 1)?;
    let rows = [
        ("template render per resource, Go syntax", go, format!("Jinja syntax: {jinja:.2} µs"), go / jinja),
        ("template render per resource, Jinja syntax", jinja, format!("Go syntax: {go:.2} µs"), jinja / go),
        (
            "binlog decode per row (lynq)",
            binlog,
            format!("bare mysql_common parse: {binlog_bare:.2} µs"),
            binlog / binlog_bare,
        ),
        ("pgoutput decode per row (lynq)", pg, format!("bare message decode: {pg_bare:.2} µs"), pg / pg_bare),
        (
            "DAG planning per node (3 resources)",
            plan,
            format!("rendering the node: {:.2} µs", go * 3.0),
            plan / (go * 3.0),
        ),
    ];
    let machine = format!(
        "{} cores, load average {}",
        std::thread::available_parallelism().map_or(1, usize::from),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().next().unwrap_or("?")
    );
    let mut md = format!(
        "### lynq micro-benchmarks (criterion medians)\n\nMachine: {machine}.\n\n| Figure | lynq | Side by side (same run) | Ratio |\n|---|---|---|---|\n"
    );
    for (figure, value, comparison, ratio) in &rows {
        md.push_str(&format!("| {figure} | {value:.2} µs | {comparison} | {ratio:.2}× |\n"));
    }
    let json = json!({
        "machine": machine,
        "microseconds": {"render_go_per_resource": go, "render_jinja_per_resource": jinja,
            "binlog_decode_per_row": binlog, "binlog_parse_only_per_row": binlog_bare,
            "pgoutput_decode_per_row": pg, "pgoutput_parse_only_per_row": pg_bare, "dag_plan_per_node": plan},
        "rows": {"binlog": binlog_rows, "pgoutput": pg_rows},
    });
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("micro.md"), &md)?;
    std::fs::write(dir.join("micro.json"), serde_json::to_string_pretty(&json)?)?;
    println!("\n{md}\nwritten to {}", dir.join("micro.md").display());
    Ok(())
}
