//! What `/healthz` and `/readyz` answer.
//!
//! `/healthz` is a liveness ping: it answers while the process serves HTTP. `/readyz` depends on the
//! replica's role: the leader (or the only replica, without leader election) is ready once every
//! controller's cache is synced and every hub's source has been started; a standby waiting for the
//! lease is ready as long as it reaches the API server, so that Kubernetes neither restarts it nor
//! blocks a rolling update on it; a replica that is shutting down is not ready.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

/// Readiness flags the controllers set once (see `server::run_controllers`).
#[derive(Clone, Debug, Default)]
pub struct ControllerReadiness {
    /// The hub controller's cache is synced and every hub in it was reconciled once (its source started,
    /// or its configuration error reported on the hub).
    pub hubs_started: Arc<AtomicBool>,
    /// The form controller's cache is synced.
    pub forms_synced: Arc<AtomicBool>,
    /// The node controller's cache is synced.
    pub nodes_synced: Arc<AtomicBool>,
}

impl ControllerReadiness {
    /// What is not ready yet, for the `/readyz` body.
    pub fn pending(&self) -> Vec<&'static str> {
        [
            (&self.hubs_started, "hub sources not started"),
            (&self.forms_synced, "LynqForm cache not synced"),
            (&self.nodes_synced, "LynqNode cache not synced"),
        ]
        .into_iter()
        .filter(|(flag, _)| !flag.load(Ordering::Acquire))
        .map(|(_, what)| what)
        .collect()
    }
}

/// Where this replica is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Connecting; no lease attempt answered yet.
    Starting,
    /// Waiting for the lease.
    Standby {
        /// The current holder, when the last read named one.
        holder: Option<String>,
        /// Whether the last attempt reached the API server.
        api_reachable: bool,
    },
    /// Running the controllers (the lease holder, or the only replica).
    Active,
    /// Stopping after SIGTERM/SIGINT.
    ShuttingDown,
}

/// Shared health state of the process.
#[derive(Debug)]
pub struct Health {
    role: Mutex<Role>,
    controllers: ControllerReadiness,
}

impl Health {
    /// A replica that is starting, with the controllers' readiness flags.
    pub fn new(controllers: ControllerReadiness) -> Self {
        Self { role: Mutex::new(Role::Starting), controllers }
    }

    /// Moves to `role`.
    pub fn set_role(&self, role: Role) {
        if let Ok(mut r) = self.role.lock() {
            *r = role;
        }
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role.lock().map(|r| r.clone()).unwrap_or(Role::ShuttingDown)
    }

    /// `/readyz`: ready or not, and why.
    pub fn readiness(&self) -> (bool, String) {
        readiness(&self.role(), &self.controllers.pending())
    }
}

/// Readiness of a replica in `role` whose controllers still wait for `pending`.
pub fn readiness(role: &Role, pending: &[&str]) -> (bool, String) {
    match role {
        Role::Starting => (false, "starting".into()),
        Role::Standby { api_reachable: false, .. } => {
            (false, "standby: the API server did not answer the last lease attempt".into())
        }
        Role::Standby { holder, .. } => {
            let held = holder.as_deref().map(|h| format!(" held by {h}")).unwrap_or_default();
            (true, format!("standby: waiting for the lease{held}"))
        }
        Role::Active if pending.is_empty() => (true, "active: caches synced, hub sources started".into()),
        Role::Active => (false, format!("active: {}", pending.join(", "))),
        Role::ShuttingDown => (false, "shutting down".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_is_ready_only_when_nothing_is_pending() {
        assert!(readiness(&Role::Active, &[]).0);
        let (ready, why) = readiness(&Role::Active, &["hub sources not started"]);
        assert!(!ready);
        assert!(why.contains("hub sources not started"), "{why}");
    }

    #[test]
    fn a_standby_that_reaches_the_api_server_is_ready() {
        let role = Role::Standby { holder: Some("pod-a_1_ab".into()), api_reachable: true };
        let (ready, why) = readiness(&role, &["hub sources not started"]);
        assert!(ready, "a standby must not block rolling updates or be restarted");
        assert!(why.contains("pod-a_1_ab"), "{why}");
        assert!(!readiness(&Role::Standby { holder: None, api_reachable: false }, &[]).0);
    }

    #[test]
    fn starting_and_stopping_are_not_ready() {
        assert!(!readiness(&Role::Starting, &[]).0);
        assert!(!readiness(&Role::ShuttingDown, &[]).0);
    }

    #[test]
    fn pending_lists_every_unset_flag() {
        let flags = ControllerReadiness::default();
        assert_eq!(flags.pending().len(), 3);
        flags.forms_synced.store(true, Ordering::Release);
        flags.nodes_synced.store(true, Ordering::Release);
        assert_eq!(flags.pending(), vec!["hub sources not started"]);
        flags.hubs_started.store(true, Ordering::Release);
        assert!(flags.pending().is_empty());
    }
}
