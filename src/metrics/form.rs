//! Form series: Lynq's `lynqform_rollout_*` gauges, dropped when the form is deleted.

use futures::StreamExt;
use kube::{
    Api, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};

use super::{
    REGISTRY,
    registry::{Desc, Kind, Labels},
};
use crate::api::{LynqForm, LynqFormStatus, RolloutPhase};

static UPDATING: Desc = Desc {
    name: "lynqform_rollout_updating_nodes",
    help: "LynqNodes of a form updated but not yet Ready (maxSkew rollouts only).",
    kind: Kind::Gauge,
};
static PHASE: Desc = Desc {
    name: "lynqform_rollout_phase",
    help: "Rollout phase of a form (0=Idle, 1=InProgress, 2=Failed, 3=Complete).",
    kind: Kind::Gauge,
};
static PROGRESS: Desc = Desc {
    name: "lynqform_rollout_progress",
    help: "Rollout progress of a form: ready updated nodes / total nodes x 100.",
    kind: Kind::Gauge,
};

fn labels(ns: &str, name: &str) -> Labels {
    vec![("form", name.to_string()), ("namespace", ns.to_string())]
}

/// Lynq's number for a rollout phase.
pub fn phase_value(phase: RolloutPhase) -> f64 {
    match phase {
        RolloutPhase::Idle => 0.0,
        RolloutPhase::InProgress => 1.0,
        RolloutPhase::Failed => 2.0,
        RolloutPhase::Complete => 3.0,
    }
}

/// Records the rollout gauges from the status the form controller computed.
pub fn record_status(form: &LynqForm, status: &LynqFormStatus) {
    // A form deleted while its status was being computed must not get its series back.
    super::while_live(&form.uid().unwrap_or_default(), || record_rollout(form, status));
}

fn record_rollout(form: &LynqForm, status: &LynqFormStatus) {
    let (ns, name) = (form.namespace().unwrap_or_default(), form.name_any());
    let Some(rollout) = &status.rollout else {
        // No limited rollout (any more): Lynq's rollout gauges only describe maxSkew rollouts.
        let families = [UPDATING.name, PHASE.name, PROGRESS.name];
        REGISTRY.remove_matching_in(&families, &[("namespace", &ns), ("form", &name)]);
        return;
    };
    let l = labels(&ns, &name);
    let max_skew = form.spec.rollout.as_ref().and_then(|r| r.max_skew).unwrap_or(0);
    if max_skew > 0 {
        REGISTRY.set(&UPDATING, l.clone(), f64::from(rollout.updating_nodes.unwrap_or(0)));
    }
    if let Some(phase) = rollout.phase {
        REGISTRY.set(&PHASE, l.clone(), phase_value(phase));
    }
    let total = rollout.total_nodes.unwrap_or(0);
    let progress =
        if total > 0 { f64::from(rollout.ready_updated_nodes.unwrap_or(0)) / f64::from(total) * 100.0 } else { 0.0 };
    REGISTRY.set(&PROGRESS, l, progress);
}

/// Removes the series of a deleted form (its rollout gauges and its nodes' provisioning latencies).
pub fn forget(form: &LynqForm) {
    let (ns, name) = (form.namespace().unwrap_or_default(), form.name_any());
    super::retire(form.uid(), || REGISTRY.remove_matching(&[("namespace", &ns), ("form", &name)]));
}

/// Watches forms and forgets each one's series when it is deleted (forms carry no finalizer, so the
/// form controller never sees their deletion). Runs until the watch ends.
pub async fn forget_deleted(forms: Api<LynqForm>) {
    watcher(forms, watcher::Config::default())
        .default_backoff()
        .for_each(|event| async move {
            if let Ok(watcher::Event::Delete(form)) = event {
                forget(&form);
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_lynqs_numbers() {
        assert_eq!(phase_value(RolloutPhase::Idle), 0.0);
        assert_eq!(phase_value(RolloutPhase::InProgress), 1.0);
        assert_eq!(phase_value(RolloutPhase::Failed), 2.0);
        assert_eq!(phase_value(RolloutPhase::Complete), 3.0);
    }
}
