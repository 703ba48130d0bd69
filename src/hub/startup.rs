//! When the hub controller has started: its cache is synced and every hub in it has been reconciled
//! once (its source started, or its configuration error reported on the hub). The operator's
//! `/readyz` waits for this; later hubs do not make a running operator unready.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use kube::{
    ResourceExt,
    runtime::{controller, controller::Action, reflector::ObjectRef, reflector::Store},
};

use crate::api::LynqHub;

/// A hub's (namespace, name).
type HubId = (String, String);

/// Tracks the hub controller's first round.
pub struct Startup {
    store: Store<LynqHub>,
    seen: Mutex<HashSet<HubId>>,
    synced: AtomicBool,
    started: Arc<AtomicBool>,
}

impl Startup {
    /// Tracks the controller whose cache is `store`; sets `started` once.
    pub fn new(store: Store<LynqHub>, started: Arc<AtomicBool>) -> Self {
        Self { store, seen: Mutex::default(), synced: AtomicBool::new(false), started }
    }

    /// Waits for the cache's first full list (returns early if the controller stops before it).
    pub async fn watch_sync(&self) {
        if self.store.wait_until_ready().await.is_ok() {
            self.synced.store(true, Ordering::Release);
            self.check();
        }
    }

    /// Notes one reconcile outcome, successful or not.
    pub fn record<E, Q>(&self, result: &Result<(ObjectRef<LynqHub>, Action), controller::Error<E, Q>>)
    where
        E: std::error::Error + 'static,
        Q: std::error::Error + 'static,
    {
        if self.started.load(Ordering::Acquire) {
            return;
        }
        let id = match result {
            Ok((hub, _)) => (hub.namespace.clone().unwrap_or_default(), hub.name.clone()),
            Err(controller::Error::ReconcilerFailed(_, hub)) => {
                (hub.namespace.clone().unwrap_or_default(), hub.name.clone())
            }
            Err(_) => return,
        };
        if let Ok(mut seen) = self.seen.lock() {
            seen.insert(id);
        }
        self.check();
    }

    fn check(&self) {
        if !self.synced.load(Ordering::Acquire) {
            return;
        }
        let hubs: Vec<HubId> =
            self.store.state().iter().map(|h| (h.namespace().unwrap_or_default(), h.name_any())).collect();
        let done = self.seen.lock().map(|seen| all_started(&hubs, &seen)).unwrap_or(false);
        if done {
            self.started.store(true, Ordering::Release);
        }
    }
}

/// Whether every hub in `hubs` has been reconciled.
fn all_started(hubs: &[HubId], seen: &HashSet<HubId>) -> bool {
    hubs.iter().all(|h| seen.contains(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> HubId {
        ("ns".into(), name.into())
    }

    #[test]
    fn started_once_every_hub_was_reconciled() {
        let seen: HashSet<HubId> = [id("a")].into_iter().collect();
        assert!(all_started(&[], &seen), "no hub: nothing to wait for");
        assert!(all_started(&[id("a")], &seen));
        assert!(!all_started(&[id("a"), id("b")], &seen));
    }
}
