//! The LynqHub controller: owns one runner task per hub, restarts it when the hub's source
//! configuration or password changes, nudges it when forms change, and cleans up on deletion
//! (PostgreSQL replication slot and lynq-created publication, via the hub finalizer).

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        events::{Recorder, Reporter},
        reflector::{self, ObjectRef, reflector},
        watcher,
    },
};
use serde_json::json;

use super::{
    config::{self, hub_key},
    form::effective_hub_id,
    runner::{self, RunnerHandle},
    sync::HubSync,
};
use crate::{
    api::scoped_api,
    api::{LynqForm, LynqHub},
    source::capture::Database,
    template::Engine,
};

/// Finalizer of every hub (Lynq's name).
pub const FINALIZER: &str = "lynq.sh/hub-finalizer";
/// Event source name, as Lynq.
pub const CONTROLLER_NAME: &str = "lynqhub-controller";

/// Shared state of the hub controller.
pub struct HubContext {
    client: Client,
    engine: Engine,
    recorder: Recorder,
    runners: Mutex<HashMap<ObjectRef<LynqHub>, RunnerHandle>>,
}

/// Why a hub reconcile failed (retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// A Kubernetes API call on the hub failed.
    #[error("LynqHub {hub}: {action}: {source}")]
    Kube { hub: String, action: &'static str, source: Box<kube::Error> },
    /// The hub's source could not be configured (reported on the hub; retried).
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// Dropping the PostgreSQL slot or publication failed; the finalizer stays until it succeeds.
    #[error("LynqHub {hub}: cleaning up the replication slot: {message}")]
    Cleanup { hub: String, message: String },
}

/// Runs the hub controller (`concurrency` hubs reconciled at once) until `shutdown` resolves, then
/// stops every hub's source gracefully. Sets `started` once the first round is done (see
/// [`super::startup`]).
pub async fn run(
    client: Client,
    namespace: Option<String>,
    concurrency: u16,
    started: Arc<std::sync::atomic::AtomicBool>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let ns = namespace.as_deref();
    let (hubs, forms, secrets): (Api<LynqHub>, Api<LynqForm>, Api<Secret>) =
        (scoped_api(&client, ns), scoped_api(&client, ns), scoped_api(&client, ns));
    let recorder = Recorder::new(client.clone(), Reporter { controller: CONTROLLER_NAME.into(), instance: None });
    let ctx = Arc::new(HubContext { client, engine: Engine::new(), recorder, runners: Mutex::default() });
    let (cache, writer) = reflector::store();
    // The hub's own status writes (several a second while rows change) must not each restart a
    // reconcile, a resync of every node and a re-read of the password Secret.
    let changes = reflector(writer, watcher(hubs, watcher::Config::default()))
        .default_backoff()
        .applied_objects()
        .predicate_filter(crate::api::non_status_inputs, Default::default());
    let controller = Controller::for_stream(changes, cache)
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency));
    let store = controller.store();
    let startup = super::startup::Startup::new(controller.store(), started);
    let reconciles = controller
        .watches(forms, watcher::Config::default(), |form| {
            form.namespace().map(|ns| ObjectRef::new(effective_hub_id(&form)).within(&ns))
        })
        .watches(secrets, watcher::Config::default(), move |secret| {
            // A password rotation restarts the hubs whose passwordRef names this Secret.
            let (name, ns) = (secret.name_any(), secret.namespace());
            store
                .state()
                .into_iter()
                .filter(|h| h.namespace() == ns && password_secret(h) == Some(name.as_str()))
                .map(|h| ObjectRef::from_obj(&*h))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| {
            startup.record(&result);
            async move {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "hub reconcile did not complete");
                }
            }
        });
    tokio::join!(reconciles, startup.watch_sync());
    // Each source finishes its in-flight transaction and persists its checkpoint.
    let runners: Vec<RunnerHandle> =
        ctx.runners.lock().map(|mut r| r.drain().map(|(_, h)| h).collect()).unwrap_or_default();
    futures::future::join_all(runners.into_iter().map(RunnerHandle::shutdown)).await;
}

fn password_secret(hub: &LynqHub) -> Option<&str> {
    password_ref(hub).map(|r| r.name.as_str())
}

fn error_policy(hub: Arc<LynqHub>, error: &HubError, _ctx: Arc<HubContext>) -> Action {
    tracing::warn!(hub = %hub_key(&hub), error = %error, "hub reconcile failed");
    Action::requeue(Duration::from_secs(10))
}

/// Keeps the hub's runner in line with its spec.
pub async fn reconcile(hub: Arc<LynqHub>, ctx: Arc<HubContext>) -> Result<Action, HubError> {
    let _timer = crate::metrics::ReconcileTimer::start("lynqhub");
    let key = ObjectRef::from_obj(&*hub);
    if hub.metadata.deletion_timestamp.is_some() {
        return finalize(&hub, &ctx, &key).await;
    }
    ensure_finalizer(&hub, &ctx).await?;
    let password = match config::read_password(&ctx.client, &hub, password_ref(&hub)).await {
        Ok(p) => p,
        Err(e) => {
            // Keep a working runner: a Secret that disappears does not break an open connection.
            HubSync::report_config_error(&ctx.client, &ctx.recorder, &hub, &e.to_string()).await;
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
    };
    let fingerprint = fingerprint(&hub, &password);
    let running = ctx.runners.lock().ok().and_then(|r| r.get(&key).map(|h| h.fingerprint));
    if running == Some(fingerprint) {
        if let Ok(runners) = ctx.runners.lock()
            && let Some(runner) = runners.get(&key)
        {
            runner.resync(&hub);
        }
        return Ok(Action::await_change());
    }
    let database = match config::database(&hub, password) {
        Ok(db) => db,
        Err(e) => {
            HubSync::report_config_error(&ctx.client, &ctx.recorder, &hub, &e.to_string()).await;
            return Ok(Action::await_change());
        }
    };
    let sync = HubSync::new(ctx.client.clone(), ctx.engine.clone(), ctx.recorder.clone(), (*hub).clone());
    tracing::debug!(hub = %hub_key(&hub), "starting the hub's source");
    let handle = runner::spawn(sync, &hub, database, fingerprint);
    if let Ok(mut runners) = ctx.runners.lock()
        && let Some(old) = runners.insert(key, handle)
    {
        tracing::info!(hub = %hub_key(&hub), "hub configuration changed; restarting its source");
        old.stop();
    }
    Ok(Action::await_change())
}

fn password_ref(hub: &LynqHub) -> Option<&crate::api::SecretKeyRef> {
    let source = &hub.spec.source;
    source
        .mysql
        .as_ref()
        .and_then(|m| m.password_ref.as_ref())
        .or_else(|| source.postgresql.as_ref().and_then(|p| p.password_ref.as_ref()))
}

/// What a runner depends on: the hub's spec (source, mappings) and the password.
fn fingerprint(hub: &LynqHub, password: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&hub.spec).unwrap_or_default().hash(&mut h);
    password.hash(&mut h);
    h.finish()
}

async fn ensure_finalizer(hub: &LynqHub, ctx: &HubContext) -> Result<(), HubError> {
    if hub.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let mut finalizers = hub.finalizers().to_vec();
    finalizers.push(FINALIZER.into());
    patch_finalizers(hub, ctx, finalizers).await
}

async fn patch_finalizers(hub: &LynqHub, ctx: &HubContext, finalizers: Vec<String>) -> Result<(), HubError> {
    let api: Api<LynqHub> = Api::namespaced(ctx.client.clone(), &hub.namespace().unwrap_or_default());
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": hub.resource_version()}});
    match api.patch(&hub.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(HubError::Kube { hub: hub_key(hub), action: "updating finalizers", source: Box::new(e) }),
    }
}

/// Stops the runner, drops the PostgreSQL slot (a forgotten slot pins WAL forever) and the
/// publication lynq created, then lets the hub go. Its nodes go by owner-reference cascade.
async fn finalize(hub: &LynqHub, ctx: &HubContext, key: &ObjectRef<LynqHub>) -> Result<Action, HubError> {
    if let Ok(mut runners) = ctx.runners.lock()
        && let Some(runner) = runners.remove(key)
    {
        runner.stop();
    }
    crate::metrics::hub::forget(hub);
    if !hub.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    if hub.spec.source.postgresql.is_some() {
        let password = config::read_password(&ctx.client, hub, password_ref(hub)).await.unwrap_or_default();
        if let Ok(Database::Postgres(pg)) = config::database(hub, password) {
            let cleanup = async {
                pg.drop_slot().await?;
                pg.drop_publication().await
            };
            if let Err(e) = cleanup.await {
                return Err(HubError::Cleanup { hub: hub_key(hub), message: e.to_string() });
            }
        }
    }
    let finalizers = hub.finalizers().iter().filter(|f| f.as_str() != FINALIZER).cloned().collect();
    patch_finalizers(hub, ctx, finalizers).await?;
    Ok(Action::await_change())
}
