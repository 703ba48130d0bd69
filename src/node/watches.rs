//! Watches on every kind the nodes actually use, so that a change to a managed object (readiness,
//! drift, deletion) reaches its LynqNode at once instead of after a periodic requeue.
//!
//! Kinds are discovered while reconciling: the first time a node applies a kind, a metadata-only
//! watch on it starts (cheap: no object bodies are kept). Each event is mapped to the owning node
//! through a LynqNode controller ownerReference or the `lynq.sh/node` tracking labels.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{
    Api, Client,
    api::{DynamicObject, PartialObjectMeta},
    runtime::{WatchStreamExt, reflector::ObjectRef, watcher},
};
use tokio::{sync::mpsc, task::JoinHandle};

use crate::{
    api::{GROUP, LynqNode},
    apply::{LABEL_NODE, LABEL_NODE_NAMESPACE, ResolvedKind},
};

/// Starts watches on demand and turns their events into node reconcile triggers.
#[derive(Clone)]
pub struct KindWatches {
    client: Client,
    started: Arc<Mutex<HashSet<String>>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    triggers: mpsc::UnboundedSender<ObjectRef<LynqNode>>,
}

impl KindWatches {
    /// A registry and the stream of nodes to reconcile.
    pub fn new(client: Client) -> (Self, mpsc::UnboundedReceiver<ObjectRef<LynqNode>>) {
        let (triggers, rx) = mpsc::unbounded_channel();
        (Self { client, started: Arc::default(), tasks: Arc::default(), triggers }, rx)
    }

    /// Makes sure `kind` is watched cluster-wide.
    pub fn ensure(&self, kind: &ResolvedKind) {
        let key = format!("{}/{}", kind.resource.api_version, kind.resource.kind);
        let Ok(mut started) = self.started.lock() else { return };
        if !started.insert(key.clone()) {
            return;
        }
        // Metadata only: owners and labels are all we need, and no object bodies are kept in memory.
        let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(self.client.clone(), &kind.resource);
        let triggers = self.triggers.clone();
        let task = tokio::spawn(async move {
            let mut events = watcher(api, watcher::Config::default()).default_backoff().touched_objects().boxed();
            while let Some(event) = events.next().await {
                match event {
                    Ok(obj) => {
                        for node in owning_nodes(&obj.metadata) {
                            if triggers.send(node).is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => tracing::debug!(kind = %key, error = %e, "watch error (retrying with backoff)"),
                }
            }
        });
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(task);
        }
    }

    /// Stops every watch.
    pub fn stop(&self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.drain(..).for_each(|t| t.abort());
        }
    }
}

/// The LynqNodes an object belongs to: its LynqNode controller ownerReference, or its tracking labels.
pub fn owning_nodes(meta: &ObjectMeta) -> Vec<ObjectRef<LynqNode>> {
    let mut nodes = Vec::new();
    let namespace = meta.namespace.clone();
    for owner in meta.owner_references.iter().flatten() {
        if owner.kind == "LynqNode" && owner.api_version.starts_with(GROUP) {
            let r = ObjectRef::new(&owner.name);
            nodes.push(match &namespace {
                Some(ns) => r.within(ns),
                None => r,
            });
        }
    }
    let labels = meta.labels.as_ref();
    if let (Some(name), Some(ns)) =
        (labels.and_then(|l| l.get(LABEL_NODE)), labels.and_then(|l| l.get(LABEL_NODE_NAMESPACE)))
    {
        nodes.push(ObjectRef::new(name).within(ns));
    }
    nodes
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;

    #[test]
    fn maps_owner_references_and_tracking_labels() {
        let meta = ObjectMeta {
            namespace: Some("ns1".into()),
            owner_references: Some(vec![
                OwnerReference {
                    api_version: "operator.lynq.sh/v1".into(),
                    kind: "LynqNode".into(),
                    name: "a-web".into(),
                    ..Default::default()
                },
                OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "ReplicaSet".into(),
                    name: "rs".into(),
                    ..Default::default()
                },
            ]),
            labels: Some(
                [(LABEL_NODE.to_string(), "b-web".to_string()), (LABEL_NODE_NAMESPACE.to_string(), "ns2".to_string())]
                    .into(),
            ),
            ..Default::default()
        };
        let nodes = owning_nodes(&meta);
        assert_eq!(nodes, vec![ObjectRef::new("a-web").within("ns1"), ObjectRef::new("b-web").within("ns2")]);
        assert!(owning_nodes(&ObjectMeta::default()).is_empty());
    }
}
