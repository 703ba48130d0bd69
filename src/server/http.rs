//! The HTTP side: `/metrics` on the metrics address, `/healthz` and `/readyz` on the probe address
//! (one listener serves both when the addresses are equal). axum on hyper 1, the stack kube's
//! client already brings in.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use tokio::{net::TcpListener, task::JoinHandle};

use super::health::Health;

/// Content type of the Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Why an endpoint could not be served.
#[derive(Debug, thiserror::Error)]
#[error("listening on {addr} for {what}: {source}")]
pub struct HttpError {
    /// The address.
    pub addr: SocketAddr,
    /// Which endpoints.
    pub what: &'static str,
    /// The socket error.
    pub source: std::io::Error,
}

/// `/metrics`.
pub fn metrics_router() -> Router {
    Router::new().route("/metrics", get(metrics))
}

/// `/healthz` and `/readyz`.
pub fn probe_router(health: Arc<Health>) -> Router {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).with_state(health)
}

async fn metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], crate::metrics::render())
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(health): State<Arc<Health>>) -> impl IntoResponse {
    let (ready, why) = health.readiness();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, why)
}

/// Binds both addresses (a port already in use fails start-up at once) and serves them until the
/// process ends; `None` disables an endpoint.
pub async fn start(
    metrics: Option<SocketAddr>,
    probes: Option<SocketAddr>,
    health: Arc<Health>,
) -> Result<Vec<JoinHandle<()>>, HttpError> {
    let routes = match (metrics, probes) {
        (Some(m), Some(p)) if m == p => {
            vec![(m, "/metrics, /healthz and /readyz", metrics_router().merge(probe_router(health)))]
        }
        _ => metrics
            .map(|m| (m, "/metrics", metrics_router()))
            .into_iter()
            .chain(probes.map(|p| (p, "/healthz and /readyz", probe_router(health))))
            .collect(),
    };
    let mut tasks = Vec::new();
    for (addr, what, router) in routes {
        let listener = TcpListener::bind(addr).await.map_err(|source| HttpError { addr, what, source })?;
        let bound = listener.local_addr().unwrap_or(addr);
        tracing::info!(address = %bound, endpoints = what, "serving");
        tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(address = %bound, error = %e, "HTTP server failed");
            }
        }));
    }
    Ok(tasks)
}
