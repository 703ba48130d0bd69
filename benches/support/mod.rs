//! What the end-to-end benchmarks share: the local environment (started through `lynq env up`, like
//! the integration tests), the operator as a separate `lynq run` process (so its CPU and memory are
//! its own), a stand-in kubelet, watch-based timelines of rows becoming resources, the apiserver's
//! own write counters, statistics, and the report written to `target/bench/`.

pub mod apiserver;
pub mod db;
pub mod env;
pub mod kubelet;
pub mod objects;
pub mod operator;
pub mod report;
pub mod stats;
pub mod timeline;

use std::{path::PathBuf, time::Duration};

/// How large a run is: `LYNQ_BENCH_SCALE=small` for a quick smoke run, anything else the full run
/// the issue asks for.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Scale {
    /// Name shown in the report.
    pub name: &'static str,
    /// Single-row samples per mode (and per floor).
    pub latency_samples: usize,
    /// Time between two single-row inserts (round-robin over the modes and floors).
    pub latency_tick: Duration,
    /// Rows of each bulk load.
    pub bulk_rows: usize,
    /// Rows per transaction of the batched bulk load.
    pub bulk_batch: usize,
    /// Node counts of the memory points (the larger one is the one-transaction bulk load).
    pub memory_small: usize,
    /// How long the operator is watched while idle after a load.
    pub settle: Duration,
}

impl Scale {
    /// The scale selected by `LYNQ_BENCH_SCALE` (default: full), with `LYNQ_BENCH_ROWS` rows per
    /// bulk load when set.
    pub fn from_env() -> Self {
        let scale = Self::named();
        // A load size between the two scales, to see how a figure grows (profiling).
        match std::env::var("LYNQ_BENCH_ROWS").ok().and_then(|r| r.parse().ok()) {
            Some(rows) => Self { bulk_rows: rows, ..scale },
            None => scale,
        }
    }

    fn named() -> Self {
        match std::env::var("LYNQ_BENCH_SCALE").as_deref() {
            Ok("small") | Ok("smoke") => Self {
                name: "small",
                latency_samples: 30,
                latency_tick: Duration::from_millis(100),
                bulk_rows: 500,
                bulk_batch: 100,
                memory_small: 100,
                settle: Duration::from_secs(10),
            },
            _ => Self {
                name: "full",
                latency_samples: 300,
                latency_tick: Duration::from_millis(100),
                bulk_rows: 10_000,
                bulk_batch: 100,
                memory_small: 1_000,
                settle: Duration::from_secs(30),
            },
        }
    }
}

impl Scale {
    /// One line for the report.
    pub fn describe(&self) -> String {
        format!(
            "{}: {} single-row samples per mode, one every {} ms across modes and floors; bulk {} rows; \
             memory points {} and {} nodes; {} s idle",
            self.name,
            self.latency_samples,
            self.latency_tick.as_millis(),
            self.bulk_rows,
            self.memory_small,
            self.bulk_rows,
            self.settle.as_secs()
        )
    }
}

/// Which phases run: `LYNQ_BENCH_ONLY=latency,bulk,resync,memory` (default: all).
pub fn phase_enabled(phase: &str) -> bool {
    match std::env::var("LYNQ_BENCH_ONLY") {
        Ok(list) if !list.trim().is_empty() => list.split(',').any(|p| p.trim() == phase),
        _ => true,
    }
}

/// `target/bench/` of this workspace.
pub fn out_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("bench")
}

/// Polls `check` every 20 ms until it returns Some, or fails naming `what` after `timeout`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
