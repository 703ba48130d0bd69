//! Running the operator: every controller on one client and one shutdown signal.
//! (Health, metrics endpoints and leader election belong here too.)

use kube::Client;

/// Runs the hub, form and node controllers until `shutdown` resolves; with `namespace`, only that
/// namespace's objects are handled (tests, or a namespaced installation).
pub async fn run_controllers(
    client: Client,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + Clone + 'static,
) {
    let node_config = crate::node::NodeConfig { namespace: namespace.clone(), ..Default::default() };
    tokio::join!(
        crate::hub::controller::run(client.clone(), namespace.clone(), shutdown.clone()),
        crate::hub::form::run(client.clone(), namespace, shutdown.clone()),
        crate::node::run(client, node_config, shutdown),
    );
}
