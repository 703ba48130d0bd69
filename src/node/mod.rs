//! The LynqNode controller: one LynqNode (one row × one form) reconciled into Kubernetes resources.
//!
//! `reconcile` is a thin layer over pure planning: variables ([`variables`]), rendering
//! ([`render`]), the dependency DAG (`crate::graph`), per-resource decisions and status
//! ([`plan`]), readiness ([`readiness`]), and the apply engine (`crate::apply`).

pub mod plan;
pub mod readiness;
pub mod render;
pub mod variables;
pub mod watches;

mod apply_pass;
mod cleanup;
mod status;

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        reflector::{self, reflector},
        watcher,
    },
};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::{api::LynqNode, apply::Applier, template::Engine};

/// Finalizer that runs resource cleanup before a LynqNode goes (Lynq's name).
pub const FINALIZER: &str = crate::api::NODE_FINALIZER;
/// Event source name, as Lynq.
pub const CONTROLLER_NAME: &str = "lynqnode-controller";
/// How often a node is re-applied even without any event (drift safety net; Lynq's 10 minutes).
pub const FORCE_REAPPLY_INTERVAL: Duration = Duration::from_secs(600);

/// Settings of the node controller.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Nodes reconciled at once.
    pub concurrency: u16,
    /// Resources of one node applied at once (independent ones only).
    pub apply_concurrency: usize,
    /// Only reconcile LynqNodes of this namespace (all namespaces when None).
    pub namespace: Option<String>,
    /// Set once the controller's LynqNode cache is synced (the operator's readiness).
    pub synced: Arc<std::sync::atomic::AtomicBool>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self { concurrency: 10, apply_concurrency: 8, namespace: None, synced: Default::default() }
    }
}

/// Shared state of the node controller.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Apply engine with its discovery cache.
    pub applier: Applier,
    /// Template engine with its compiled-template cache.
    pub engine: Engine,
    /// Event recorder (source `lynqnode-controller`).
    pub recorder: Recorder,
    /// Recorder for events on managed objects (source `lynq-operator`, as Lynq's applier).
    pub object_recorder: Recorder,
    /// Watches on the kinds nodes use.
    pub watches: watches::KindWatches,
    /// Settings.
    pub config: NodeConfig,
}

/// Why a node reconcile failed; retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call on the node itself failed.
    #[error("LynqNode {node}: {action}: {source}")]
    Kube { node: String, action: &'static str, source: kube::Error },
    /// Cleanup of the node's resources failed; the finalizer stays until it succeeds.
    #[error("LynqNode {node}: cleanup failed for {failed} resource(s): {message}")]
    Cleanup { node: String, failed: usize, message: String },
}

impl Error {
    /// Label for the reconcile-error metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube { .. } => "kube",
            Self::Cleanup { .. } => "cleanup",
        }
    }

    /// A compare-and-swap on the node lost to a concurrent write: expected, retried at once.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Kube { source: kube::Error::Api(status), .. } if status.code == 409)
    }
}

/// namespace/name of a node, for messages.
pub fn node_key(node: &LynqNode) -> String {
    format!("{}/{}", node.namespace().unwrap_or_default(), node.name_any())
}

impl Context {
    /// A context with fresh caches.
    pub fn new(
        client: Client,
        config: NodeConfig,
    ) -> (Arc<Self>, UnboundedReceiverStream<kube::runtime::reflector::ObjectRef<LynqNode>>) {
        let (watches, triggers) = watches::KindWatches::new(client.clone());
        let recorder = Recorder::new(client.clone(), Reporter { controller: CONTROLLER_NAME.into(), instance: None });
        let object_recorder =
            Recorder::new(client.clone(), Reporter { controller: "lynq-operator".into(), instance: None });
        let ctx = Self {
            applier: Applier::new(client.clone()),
            engine: Engine::new(),
            recorder,
            object_recorder,
            watches,
            config,
            client,
        };
        (Arc::new(ctx), UnboundedReceiverStream::new(triggers))
    }

    /// Publishes an event on the node; failures are logged, never fatal.
    pub async fn event(&self, node: &LynqNode, type_: EventType, reason: &str, note: String) {
        self.resource_event(node, type_, reason, None, note).await;
    }

    /// Publishes an event about one resource of the node. The resource id goes into the event's
    /// action: the recorder aggregates events by (reason, action, object), and without it the
    /// failures of several resources would collapse into one event showing only the first cause.
    pub async fn resource_event(
        &self,
        node: &LynqNode,
        type_: EventType,
        reason: &str,
        resource: Option<&str>,
        note: String,
    ) {
        let action = resource.map_or_else(|| reason.to_string(), |id| truncate(format!("{reason}/{id}"), 128));
        let event = Event { type_, reason: reason.into(), note: Some(truncate(note, 1000)), action, secondary: None };
        if let Err(e) = self.recorder.publish(&event, &node.object_ref(&())).await {
            tracing::warn!(node = %node_key(node), reason, error = %e, "publishing an event failed");
        }
    }
}

impl Context {
    /// Publishes an event on a managed object (orphan markers added or removed), as Lynq's applier does.
    pub async fn object_event(&self, object: &serde_json::Value, reason: &str, note: String) {
        let field = |p: &str| object.pointer(p).and_then(serde_json::Value::as_str).map(str::to_owned);
        let reference = k8s_openapi::api::core::v1::ObjectReference {
            api_version: field("/apiVersion"),
            kind: field("/kind"),
            name: field("/metadata/name"),
            namespace: field("/metadata/namespace"),
            uid: field("/metadata/uid"),
            ..Default::default()
        };
        let event = Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(truncate(note, 1000)),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = self.object_recorder.publish(&event, &reference).await {
            tracing::warn!(object = ?reference.name, reason, error = %e, "publishing an event failed");
        }
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Runs the node controller until `shutdown` resolves.
pub async fn run(client: Client, config: NodeConfig, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let (ctx, triggers) = Context::new(client.clone(), config.clone());
    let nodes: Api<LynqNode> = crate::api::scoped_api(&client, config.namespace.as_deref());
    let (cache, writer) = reflector::store();
    // The cache sees every version; only changes a pass depends on trigger one. Without the filter
    // each status write of a pass triggered another pass that found nothing to do.
    // managedFields are never read here and are about as large as the spec they describe.
    let versions = watcher(nodes, watcher::Config::default()).modify(|node| node.managed_fields_mut().clear());
    let changes = reflector(writer, versions)
        .default_backoff()
        .applied_objects()
        .predicate_filter(crate::api::non_status_inputs, Default::default());
    let controller = Controller::for_stream(changes, cache.clone());
    let synced = config.synced.clone();
    let mark_synced = async move {
        if cache.wait_until_ready().await.is_ok() {
            synced.store(true, std::sync::atomic::Ordering::Release);
        }
    };
    let reconciles = controller
        .reconcile_on(triggers)
        .with_config(kube::runtime::controller::Config::default().concurrency(config.concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "node reconcile did not complete");
            }
        });
    tokio::join!(reconciles, mark_synced);
    ctx.watches.stop();
}

/// Reconciles one LynqNode.
pub async fn reconcile(node: Arc<LynqNode>, ctx: Arc<Context>) -> Result<Action, Error> {
    tracing::debug!(node = %node_key(&node), generation = ?node.metadata.generation, "reconciling");
    if node.metadata.deletion_timestamp.is_some() {
        return cleanup::finalize(&node, &ctx).await;
    }
    let timer = crate::metrics::node::ReconcileTimer::start(&node);
    let result = reconcile_live(&node, &ctx).await;
    timer.finish(result.is_ok());
    result
}

async fn reconcile_live(node: &LynqNode, ctx: &Context) -> Result<Action, Error> {
    if !node.finalizers().iter().any(|f| f == FINALIZER) {
        add_finalizer(node, ctx).await?;
    }
    apply_pass::reconcile_resources(node, ctx).await
}

/// Backoff on errors: the node is retried, never dropped.
pub fn error_policy(node: Arc<LynqNode>, error: &Error, _ctx: Arc<Context>) -> Action {
    if error.is_conflict() {
        // The newer version of the node also arrives through the watch; this requeue is only a backstop.
        tracing::debug!(node = %node_key(&node), error = %error, "node changed concurrently; retrying");
        return Action::requeue(Duration::from_millis(200));
    }
    tracing::warn!(node = %node_key(&node), kind = error.metric_label(), error = %error, "node reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

async fn add_finalizer(node: &LynqNode, ctx: &Context) -> Result<(), Error> {
    let api: Api<LynqNode> = Api::namespaced(ctx.client.clone(), &node.namespace().unwrap_or_default());
    let mut finalizers = node.finalizers().to_vec();
    finalizers.push(FINALIZER.into());
    // The resourceVersion makes this a compare-and-swap: a concurrent change retries instead of clobbering.
    let patch = serde_json::json!({"metadata": {"finalizers": finalizers, "resourceVersion": node.resource_version()}});
    api.patch(&node.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|source| Error::Kube { node: node_key(node), action: "adding the finalizer", source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> LynqNode {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "operator.lynq.sh/v1", "kind": "LynqNode",
            "metadata": {"name": "acme-web", "namespace": "default", "uid": "u1", "generation": 1,
                         "annotations": {"lynq.sh/host": "acme.example.com"}},
            "spec": {"uid": "acme", "templateRef": "web"}
        }))
        .expect("valid node")
    }

    #[test]
    fn a_status_write_does_not_trigger_a_pass() {
        let before = node();
        let mut after = before.clone();
        after.status = Some(crate::api::LynqNodeStatus { ready_resources: Some(3), ..Default::default() });
        after.metadata.resource_version = Some("42".into());
        assert_eq!(crate::api::non_status_inputs(&before), crate::api::non_status_inputs(&after));
    }

    #[test]
    fn what_a_pass_reads_triggers_one() {
        let before = node();
        let changes: [fn(&mut LynqNode); 4] = [
            |n| n.metadata.generation = Some(2),
            |n| {
                n.annotations_mut().insert("lynq.sh/host".into(), "other.example.com".into());
            },
            |n| n.metadata.finalizers = Some(vec![FINALIZER.into()]),
            |n| {
                n.metadata.deletion_timestamp =
                    Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH))
            },
        ];
        for change in changes {
            let mut after = before.clone();
            change(&mut after);
            assert_ne!(crate::api::non_status_inputs(&before), crate::api::non_status_inputs(&after));
        }
    }
}
