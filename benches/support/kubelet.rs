//! There is no kubelet in the local environment: this stand-in marks every Deployment ready the way
//! the kubelet and the deployment controller would (the idea of `lynq demo`'s), so that
//! readiness-gated resources follow. It watches instead of listing, so it scales to 10,000
//! Deployments, and it counts its own writes so they can be told apart from the operator's.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;

/// How many status writes are in flight at once (a busy kubelet fleet is parallel too).
const CONCURRENCY: usize = 16;

/// The running stand-in; aborted on drop.
pub struct StandInKubelet {
    writes: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl StandInKubelet {
    /// Starts marking Deployments ready in every namespace but `skip` (where the benchmark writes
    /// the status itself).
    pub fn start(client: Client, skip: &[&str]) -> Self {
        let writes = Arc::new(AtomicU64::new(0));
        let skip = skip.iter().map(|s| (*s).to_owned()).collect();
        let task = tokio::spawn(run(client, skip, writes.clone()));
        Self { writes, task }
    }

    /// Status writes made so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
}

impl Drop for StandInKubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(client: Client, skip: Vec<String>, writes: Arc<AtomicU64>) {
    let all: Api<Deployment> = Api::all(client.clone());
    let skip = &skip;
    watcher(all, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .filter_map(|d| async move {
            d.ok().filter(|d| needs_status(d) && !skip.contains(&d.namespace().unwrap_or_default()))
        })
        .for_each_concurrent(CONCURRENCY, |d| {
            let client = client.clone();
            let writes = writes.clone();
            async move {
                if mark_ready(&client, &d).await.is_ok() {
                    writes.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .await;
}

fn needs_status(d: &Deployment) -> bool {
    d.status.as_ref().and_then(|s| s.observed_generation) != Some(d.metadata.generation.unwrap_or(1))
}

/// The status a kubelet and the deployment controller would report for a rolled-out Deployment.
pub fn ready_status(d: &Deployment) -> serde_json::Value {
    let generation = d.metadata.generation.unwrap_or(1);
    let replicas = d.spec.replicas.unwrap_or(1);
    json!({"status": {"observedGeneration": generation, "replicas": replicas,
        "updatedReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas}})
}

/// Writes the ready status of `d`.
pub async fn mark_ready(client: &Client, d: &Deployment) -> Result<(), kube::Error> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), &d.namespace().unwrap_or_default());
    api.patch_status(&d.name_any(), &PatchParams::default(), &Patch::Merge(&ready_status(d))).await.map(|_| ())
}
