//! `lynq run`: serves the endpoints, waits for the lease when leader election is on, runs the
//! controllers while it holds it, and shuts down within the grace period on SIGTERM/SIGINT.
//!
//! Losing the lease ends the process at once with an error (as controller-runtime does): another
//! replica may take over as soon as the lease expires, so nothing waits for in-flight work; every
//! write is idempotent and checkpoints trail applied work, so the next leader repeats, never loses.

use std::{sync::Arc, time::Duration};

use futures::{FutureExt, future::Shared};
use tokio::{sync::oneshot, task::JoinHandle};

use super::{
    ControllerConfig, ControllerReadiness,
    health::{Health, Role},
    http::{self, HttpError},
    leader::{self, Elector, LeaderError},
    lease::LeaseTiming,
    options::RunArgs,
    run_controllers,
};

/// Kept from the grace period for releasing the lease after the controllers stopped.
const RELEASE_RESERVE: Duration = Duration::from_secs(1);

/// Why `lynq run` ended with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The recorder could not be installed.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// An endpoint could not listen.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// No Kubernetes client could be configured or the API server did not answer.
    #[error("connecting to the Kubernetes API server: {0}")]
    Connect(#[source] kube::Error),
    /// Leader election failed or the lease was lost.
    #[error(transparent)]
    Leader(#[from] LeaderError),
    /// The controllers returned although nothing asked them to stop.
    #[error("the controllers stopped unexpectedly")]
    ControllersEnded,
    /// The controllers did not stop in time; the lease was left to expire rather than released
    /// while something might still write.
    #[error("the controllers did not stop within the shutdown grace period of {0:?}")]
    ShutdownTimedOut(Duration),
}

/// A shutdown signal any number of tasks can wait on.
type Signal = Shared<futures::future::BoxFuture<'static, ()>>;

/// Runs the operator until SIGTERM/SIGINT (Ok) or a failure (Err: the process should exit non-zero).
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    crate::metrics::install()?;
    let readiness = ControllerReadiness::default();
    let health = Arc::new(Health::new(readiness.clone()));
    let _servers = http::start(args.metrics_bind_address.0, args.health_probe_bind_address.0, health.clone()).await?;
    let client = kube::Client::try_default().await.map_err(RunError::Connect)?;
    let version = client.apiserver_version().await.map_err(RunError::Connect)?;
    tracing::info!(server = %version.git_version, "connected to the Kubernetes API server");
    let signal: Signal = wait_for_shutdown_signal().boxed().shared();
    let config = ControllerConfig {
        namespace: args.watch_namespace(),
        hub_concurrency: args.hub_concurrency,
        form_concurrency: args.form_concurrency,
        node_concurrency: args.node_concurrency,
        readiness,
    };
    let grace = args.shutdown_grace_period;
    if !args.leader_elect {
        health.set_role(Role::Active);
        let mut controllers = Controllers::start(client, config);
        tokio::select! {
            _ = signal => {}
            _ = &mut controllers.task => return Err(RunError::ControllersEnded),
        }
        return controllers.stop(&health, grace).await;
    }
    let namespace = args.leader_election_namespace.clone().unwrap_or_else(leader::default_namespace);
    let mut elector = Elector::new(
        client.clone(),
        &namespace,
        &args.leader_election_id,
        leader::default_identity(),
        LeaseTiming::default(),
    );
    let gauge = metrics::gauge!("leader_election_master_status", "name" => args.leader_election_id.clone());
    gauge.set(0.0);
    tracing::info!(lease = %elector.lease_key(), identity = %elector.identity(), "trying to acquire the lease");
    tokio::select! {
        (how, previous) = elector.acquire(&health) => tracing::info!(
            lease = %elector.lease_key(),
            identity = %elector.identity(),
            previous_holder = previous.as_deref().unwrap_or(""),
            takeover = how.as_str(),
            "acquired the lease"
        ),
        _ = signal.clone() => {
            tracing::info!("stopping before acquiring the lease");
            return Ok(());
        }
    }
    gauge.set(1.0);
    health.set_role(Role::Active);
    let result = lead(client, config, &mut elector, &health, signal, grace).await;
    gauge.set(0.0);
    result
}

/// Runs the controllers while renewing the lease; on the signal, stops them and releases the lease.
async fn lead(
    client: kube::Client,
    config: ControllerConfig,
    elector: &mut Elector,
    health: &Health,
    signal: Signal,
    grace: Duration,
) -> Result<(), RunError> {
    let mut controllers = Controllers::start(client, config);
    let outcome = {
        let mut renewing = std::pin::pin!(elector.keep_renewing());
        // None: the signal came.
        let ended = tokio::select! {
            lost = &mut renewing => Some(Leading::Lost(lost)),
            _ = signal => None,
            _ = &mut controllers.task => Some(Leading::Ended),
        };
        match ended {
            Some(ended) => ended,
            // The lease is renewed until the controllers have stopped: losing it now still stops at once.
            None => tokio::select! {
                lost = &mut renewing => Leading::Lost(lost),
                drained = controllers.stop(health, grace.saturating_sub(RELEASE_RESERVE)) => Leading::Stopped(drained),
            },
        }
    };
    let drained = match outcome {
        Leading::Lost(lost) => return Err(controllers.abandon(lost)),
        Leading::Ended => return Err(RunError::ControllersEnded),
        Leading::Stopped(drained) => drained,
    };
    drained?;
    match tokio::time::timeout(RELEASE_RESERVE, elector.release()).await {
        Ok(Ok(true)) => tracing::info!(lease = %elector.lease_key(), "released the lease"),
        Ok(Ok(false)) => tracing::warn!(lease = %elector.lease_key(), "the lease was no longer ours to release"),
        Ok(Err(e)) => tracing::warn!(error = %e, "releasing the lease failed; the standby takes over when it expires"),
        Err(_) => tracing::warn!(lease = %elector.lease_key(), "releasing the lease timed out"),
    }
    Ok(())
}

/// How a leader's run went.
enum Leading {
    /// The lease was lost.
    Lost(LeaderError),
    /// The controllers stopped (in time or not).
    Stopped(Result<(), RunError>),
    /// The controllers returned on their own.
    Ended,
}

/// The controllers' task and the trigger that stops it gracefully.
struct Controllers {
    task: JoinHandle<()>,
    stop: Option<oneshot::Sender<()>>,
}

impl Controllers {
    fn start(client: kube::Client, config: ControllerConfig) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let trigger = stopped.map(|_| ()).shared();
        tracing::info!(namespace = config.namespace.as_deref().unwrap_or("(all)"), "starting the controllers");
        Self { task: tokio::spawn(run_controllers(client, config, trigger)), stop: Some(stop) }
    }

    /// Asks the controllers to stop and waits up to `budget` for their in-flight work to finish.
    async fn stop(&mut self, health: &Health, budget: Duration) -> Result<(), RunError> {
        health.set_role(Role::ShuttingDown);
        tracing::info!(grace = ?budget, "shutting down: stopping sources and controllers");
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(budget, &mut self.task).await {
            Ok(_) => {
                tracing::info!("controllers stopped");
                Ok(())
            }
            Err(_) => {
                self.task.abort();
                Err(RunError::ShutdownTimedOut(budget))
            }
        }
    }

    /// Stops everything at once after the lease was lost.
    fn abandon(&self, lost: LeaderError) -> RunError {
        tracing::error!(error = %lost, "leader election lost; stopping at once");
        self.task.abort();
        RunError::Leader(lost)
    }
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn wait_for_shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops lynq");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = terminate => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
