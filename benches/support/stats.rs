//! Percentiles of a sample of durations.

use std::time::Duration;

/// p50/p95/p99 (nearest rank) of a sample, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Percentiles {
    /// Samples.
    pub n: usize,
    /// Median, ms.
    pub p50: f64,
    /// 95th percentile, ms.
    pub p95: f64,
    /// 99th percentile, ms.
    pub p99: f64,
}

impl Percentiles {
    /// Percentiles of `samples`; all zero when empty.
    pub fn of(samples: &[Duration]) -> Self {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        Self { n: ms.len(), p50: rank(&ms, 0.50), p95: rank(&ms, 0.95), p99: rank(&ms, 0.99) }
    }

    /// `p50 / p95 / p99 ms`.
    pub fn display(&self) -> String {
        format!("{} / {} / {} ms", ms(self.p50), ms(self.p95), ms(self.p99))
    }
}

fn rank(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // Nearest rank: the smallest value with at least q of the sample at or below it.
    let index = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted.get(index).copied().unwrap_or_default()
}

/// Milliseconds with a precision that suits their size.
pub fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// `a / b`, or 0 when b is 0.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}
