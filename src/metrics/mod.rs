//! Prometheus metrics: Lynq's families under their original names, lynq's own under `lynq_`.
//!
//! The HTTP side (`/metrics` on the metrics address) lives in `server`; this module owns the
//! recorder and what it renders.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};

/// Why the metrics recorder could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The exporter rejected its configuration or another recorder was installed first.
    #[error("installing the Prometheus recorder: {0}")]
    Install(#[from] BuildError),
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once; later calls are no-ops.
pub fn install() -> Result<(), MetricsError> {
    if HANDLE.get().is_some() {
        return Ok(());
    }
    let handle = PrometheusBuilder::new().install_recorder()?;
    // A concurrent caller may have won the race; its handle serves the same recorder type.
    let _ = HANDLE.set(handle);
    Ok(())
}

/// The exposition text for a scrape; empty when no recorder was installed.
pub fn render() -> String {
    HANDLE.get().map(PrometheusHandle::render).unwrap_or_default()
}
