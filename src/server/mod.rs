//! Running the operator: the controllers on one client and one shutdown signal ([`run_controllers`]),
//! and `lynq run` around them ([`run`]): flags, logs, `/metrics`, `/healthz` and `/readyz`, leader
//! election on a Lease, and a graceful shutdown.

pub mod health;
pub mod http;
pub mod leader;
pub mod lease;
pub mod logging;
pub mod operator;
pub mod options;

pub use health::ControllerReadiness;
pub use operator::{RunError, run};

/// What the controllers run with.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Only this namespace's objects are handled (all namespaces when None).
    pub namespace: Option<String>,
    /// LynqHubs reconciled at once.
    pub hub_concurrency: u16,
    /// LynqForms reconciled at once.
    pub form_concurrency: u16,
    /// LynqNodes reconciled at once.
    pub node_concurrency: u16,
    /// Flags the controllers set when their caches are synced and the hubs' sources started.
    pub readiness: ControllerReadiness,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            namespace: None,
            hub_concurrency: 3,
            form_concurrency: 5,
            node_concurrency: 10,
            readiness: Default::default(),
        }
    }
}

impl From<Option<String>> for ControllerConfig {
    /// Lynq's defaults, limited to `namespace` when given.
    fn from(namespace: Option<String>) -> Self {
        Self { namespace, ..Default::default() }
    }
}

/// Runs the hub, form and node controllers until `shutdown` resolves, then waits for them: each
/// finishes its in-flight reconciles, and every hub's source stops after its in-flight transaction
/// with its checkpoint persisted. `config` may be just the namespace (`Option<String>`).
pub async fn run_controllers(
    client: kube::Client,
    config: impl Into<ControllerConfig>,
    shutdown: impl Future<Output = ()> + Send + Sync + Clone + 'static,
) {
    let config = config.into();
    let ready = config.readiness;
    let node_config = crate::node::NodeConfig {
        namespace: config.namespace.clone(),
        concurrency: config.node_concurrency,
        synced: ready.nodes_synced,
        ..Default::default()
    };
    tokio::join!(
        crate::hub::controller::run(
            client.clone(),
            config.namespace.clone(),
            config.hub_concurrency,
            ready.hubs_started,
            shutdown.clone()
        ),
        crate::hub::form::run(
            client.clone(),
            config.namespace,
            config.form_concurrency,
            ready.forms_synced,
            shutdown.clone()
        ),
        crate::node::run(client, node_config, shutdown),
    );
}
