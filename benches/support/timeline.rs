//! When each LynqNode appeared, when its first resource (a ConfigMap) appeared, and when the node
//! first reported Ready — as seen by watches over every namespace, stamped on arrival.
//!
//! Watch delivery adds the same small delay to every figure, lynq's and the floors' alike.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use lynq::api::LynqNode;
use tokio::time::Instant;

/// What was seen of one node.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeTimes {
    /// First seen.
    pub created: Option<Instant>,
    /// First seen with condition Ready=True.
    pub ready: Option<Instant>,
}

#[derive(Default)]
struct Seen {
    nodes: HashMap<(String, String), NodeTimes>,
    config_maps: HashMap<(String, String), Instant>,
    ready_by_namespace: HashMap<String, usize>,
}

/// The recorder; its watches stop when it is dropped.
pub struct Timeline {
    seen: Arc<Mutex<Seen>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Timeline {
    /// Starts watching LynqNodes and ConfigMaps in every namespace.
    pub fn start(client: &Client) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let nodes = tokio::spawn(watch_nodes(Api::all(client.clone()), seen.clone()));
        let config_maps = tokio::spawn(watch_config_maps(Api::all(client.clone()), seen.clone()));
        Self { seen, tasks: vec![nodes, config_maps] }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What was seen of node `name` in `namespace`.
    pub fn node(&self, namespace: &str, name: &str) -> NodeTimes {
        self.lock().nodes.get(&(namespace.to_owned(), name.to_owned())).copied().unwrap_or_default()
    }

    /// When ConfigMap `name` in `namespace` was first seen.
    pub fn config_map(&self, namespace: &str, name: &str) -> Option<Instant> {
        self.lock().config_maps.get(&(namespace.to_owned(), name.to_owned())).copied()
    }

    /// How many nodes of `namespace` have reported Ready at least once.
    pub fn ready_count(&self, namespace: &str) -> usize {
        self.lock().ready_by_namespace.get(namespace).copied().unwrap_or(0)
    }
}

impl Drop for Timeline {
    fn drop(&mut self) {
        self.tasks.iter().for_each(tokio::task::JoinHandle::abort);
    }
}

fn is_ready(node: &LynqNode) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn watch_nodes(api: Api<LynqNode>, seen: Arc<Mutex<Seen>>) {
    let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff().applied_objects());
    while let Some(event) = events.next().await {
        let Ok(node) = event else { continue };
        let now = Instant::now();
        let namespace = node.namespace().unwrap_or_default();
        let ready = is_ready(&node);
        let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
        let times = seen.nodes.entry((namespace.clone(), node.name_any())).or_default();
        times.created.get_or_insert(now);
        if ready && times.ready.is_none() {
            times.ready = Some(now);
            *seen.ready_by_namespace.entry(namespace).or_default() += 1;
        }
    }
}

async fn watch_config_maps(api: Api<ConfigMap>, seen: Arc<Mutex<Seen>>) {
    let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff().applied_objects());
    while let Some(event) = events.next().await {
        let Ok(cm) = event else { continue };
        let now = Instant::now();
        let key = (cm.namespace().unwrap_or_default(), cm.name_any());
        seen.lock().unwrap_or_else(PoisonError::into_inner).config_maps.entry(key).or_insert(now);
    }
}
