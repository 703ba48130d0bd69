//! lynq: a Kubernetes operator that turns database rows into Kubernetes resources the moment the
//! row commits, by tailing the MySQL binlog or the PostgreSQL logical replication stream.
//!
//! Data flows one way: database → [`source`] → [`hub`] → LynqNode → [`node`] → resources → status.

pub mod api;
pub mod apply;
pub mod demo;
pub mod graph;
pub mod hub;
pub mod localenv;
pub mod metrics;
pub mod node;
pub mod server;
pub mod source;
pub mod template;

/// Selects rustls' crypto provider for the whole process (idempotent).
///
/// Both ring (kube, mysql_async) and aws-lc-rs (pgwire-replication's rustls default) are compiled in,
/// and rustls refuses to guess between two; lynq uses ring everywhere.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
