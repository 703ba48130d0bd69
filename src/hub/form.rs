//! The LynqForm controller: validation (the Valid condition and Lynq's events), hubId immutability
//! (the test apiserver has no CEL), node totals and the Applied condition.
//!
//! It creates nothing: the hub turns forms × rows into LynqNodes.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        events::{Event, Recorder, Reporter},
        reflector::{self, ObjectRef, Store, reflector},
        watcher,
    },
};
use serde_json::json;

use super::form_check::{
    EngineChecker, FindingKind, FormValidation, HUB_ID_ANNOTATION, HubFacts, VALID_CONDITION, finding_events,
    hub_id_change, transition_events, validate_form,
};
use super::{
    desired::ExistingNode,
    rollout::{NodeRollout, RolloutSettings, next_time_transition, rollout_status},
};
use crate::{
    api::scoped_api,
    api::{LynqForm, LynqFormStatus, LynqHub, LynqNode},
    node::render::syntax_of,
    template::Engine,
};

/// Event source name, as Lynq.
pub const CONTROLLER_NAME: &str = "lynqform-controller";

/// Shared state of the form controller.
pub struct FormContext {
    client: Client,
    engine: Engine,
    recorder: Recorder,
    /// Every watched LynqNode, trimmed to what a form's status reads: a form reconcile once listed
    /// all nodes of its namespace from the API, on every node change.
    nodes: Store<LynqNode>,
    /// When each form's status was last computed (see [`STATUS_INTERVAL`]).
    last_pass: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

/// Least time between two status computations of one form while only its nodes change: during a bulk
/// load every node turning Ready triggers the form, and each status write triggers a resync of its
/// hub (both linear in the nodes). A spec change is handled at once.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);

impl FormContext {
    /// How long `form` must wait before its next status computation; records this one when none.
    fn wait_before_pass(&self, key: &str, spec_changed: bool) -> Option<Duration> {
        let mut last = self.last_pass.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        let since = last.get(key).map(|t| now.saturating_duration_since(*t));
        if let Some(since) = since
            && since < STATUS_INTERVAL
            && !spec_changed
        {
            return Some(STATUS_INTERVAL - since);
        }
        last.insert(key.to_string(), now);
        None
    }
}

/// Why a form reconcile failed (retried with backoff).
#[derive(Debug, thiserror::Error)]
#[error("LynqForm {form}: {action}: {source}")]
pub struct FormError {
    /// namespace/name of the form.
    pub form: String,
    /// What failed.
    pub action: &'static str,
    /// The API error.
    pub source: Box<kube::Error>,
}

/// The hub a form belongs to: the hubId recorded at first sight (hubId is immutable), else spec.hubId.
pub fn effective_hub_id(form: &LynqForm) -> &str {
    form.annotations().get(HUB_ID_ANNOTATION).map(String::as_str).unwrap_or(&form.spec.hub_id)
}

fn form_key(form: &LynqForm) -> String {
    format!("{}/{}", form.namespace().unwrap_or_default(), form.name_any())
}

/// Runs the form controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    namespace: Option<String>,
    concurrency: u16,
    synced: Arc<std::sync::atomic::AtomicBool>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let ns = namespace.as_deref();
    let (forms, nodes, hubs): (Api<LynqForm>, Api<LynqNode>, Api<LynqHub>) =
        (scoped_api(&client, ns), scoped_api(&client, ns), scoped_api(&client, ns));
    let recorder = Recorder::new(client.clone(), Reporter { controller: CONTROLLER_NAME.into(), instance: None });
    let (node_cache, node_writer) = reflector::store();
    let node_changes =
        reflector(node_writer, watcher(nodes, watcher::Config::default()).modify(super::sync::trim_node))
            .default_backoff()
            .touched_objects();
    let ctx = Arc::new(FormContext {
        client,
        engine: Engine::new(),
        recorder,
        nodes: node_cache,
        last_pass: Default::default(),
    });
    let forget_deleted = crate::metrics::form::forget_deleted(forms.clone());
    let controller = Controller::new(forms, watcher::Config::default())
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency));
    let store = controller.store();
    let cache = controller.store();
    let mark_synced = async move {
        if cache.wait_until_ready().await.is_ok() {
            synced.store(true, std::sync::atomic::Ordering::Release);
        }
    };
    let reconciles = controller
        .watches_stream(node_changes, |node| {
            node.namespace().map(|ns| ObjectRef::new(&node.spec.template_ref).within(&ns))
        })
        .watches(hubs, watcher::Config::default(), move |hub| {
            let (name, ns) = (hub.name_any(), hub.namespace());
            store
                .state()
                .into_iter()
                .filter(|f| f.namespace() == ns && effective_hub_id(f) == name)
                .map(|f| ObjectRef::from_obj(&*f))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "form reconcile did not complete");
            }
        });
    // The deletion watch never ends on its own; the controller's end ends this function.
    tokio::select! {
        _ = async { tokio::join!(reconciles, mark_synced) } => {}
        _ = forget_deleted => {}
    }
}

fn error_policy(form: Arc<LynqForm>, error: &FormError, _ctx: Arc<FormContext>) -> Action {
    tracing::warn!(form = %form_key(&form), error = %error, "form reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

/// Validates the form and publishes its status.
pub async fn reconcile(form: Arc<LynqForm>, ctx: Arc<FormContext>) -> Result<Action, FormError> {
    let _timer = crate::metrics::ReconcileTimer::start("lynqform");
    let ns = form.namespace().unwrap_or_default();
    let key = form_key(&form);
    let spec_changed = form.status.as_ref().and_then(|s| s.observed_generation) != form.metadata.generation;
    if let Some(wait) = ctx.wait_before_pass(&key, spec_changed) {
        return Ok(Action::requeue(wait));
    }
    let fail = |action: &'static str| {
        let form = key.clone();
        move |e: kube::Error| FormError { form, action, source: Box::new(e) }
    };
    let hub_id = effective_hub_id(&form).to_string();
    let hub = Api::<LynqHub>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&hub_id)
        .await
        .map_err(fail("reading its LynqHub"))?;
    let facts = hub.as_ref().map(|h| HubFacts {
        extra_variables: h.spec.extra_value_mappings.iter().flatten().map(|(k, _)| k.clone()).collect::<BTreeSet<_>>(),
        has_host_or_url: h.spec.value_mappings.host_or_url.is_some(),
    });
    let checker = EngineChecker { engine: &ctx.engine, syntax: syntax_of(form.spec.template_syntax) };
    let mut validation = validate_form(&form.spec, facts.as_ref(), &checker);
    check_hub_id(&form, &ctx, &mut validation).await?;

    // Until the node cache has listed once, every form would look empty.
    let _ = ctx.nodes.wait_until_ready().await;
    let nodes = ctx.nodes.state();
    let mine: Vec<&LynqNode> = nodes
        .iter()
        .map(|n| &**n)
        .filter(|n| n.namespace() == Some(ns.clone()) && n.spec.template_ref == form.name_any())
        .collect();
    let total = i32::try_from(mine.len()).unwrap_or(i32::MAX);
    let ready = i32::try_from(mine.iter().filter(|n| node_ready(n)).count()).unwrap_or(i32::MAX);

    publish_events(&form, &ctx, &validation, &hub_id).await;
    let rollouts: Vec<NodeRollout> = mine.iter().map(|n| ExistingNode::from_node(n, true).rollout()).collect();
    let status = form_status(&form, &validation, total, ready, &rollouts);
    crate::metrics::form::record_status(&form, &status);
    if form.status.as_ref() != Some(&status) {
        let api: Api<LynqForm> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = json!({ "status": status });
        api.patch_status(&form.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(fail("writing status"))?;
    }
    // Node, hub and form changes all trigger a reconcile; time alone changes a rollout only when a
    // safety margin ends or a progress deadline passes, so look again then (else a safety net).
    let settings = RolloutSettings::from_config(form.spec.rollout.as_ref());
    let now = chrono::Utc::now();
    let next =
        next_time_transition(&rollouts, form.metadata.generation.unwrap_or_default(), now, settings.progress_deadline)
            .and_then(|t| (t - now).to_std().ok())
            .map_or(SAFETY_NET, |wait| (wait + Duration::from_millis(100)).min(SAFETY_NET));
    Ok(Action::requeue(next))
}

/// Requeue of a form when nothing is due sooner.
const SAFETY_NET: Duration = Duration::from_secs(300);

/// hubId is immutable: record it at first sight, report a change as a validation error.
async fn check_hub_id(form: &LynqForm, ctx: &FormContext, validation: &mut FormValidation) -> Result<(), FormError> {
    let recorded = form.annotations().get(HUB_ID_ANNOTATION);
    if let Some(message) = hub_id_change(recorded.map(String::as_str), &form.spec.hub_id) {
        validation.add_error(FindingKind::HubIdChanged, None, message);
        return Ok(());
    }
    if recorded.is_none() && !form.spec.hub_id.is_empty() {
        let api: Api<LynqForm> = Api::namespaced(ctx.client.clone(), &form.namespace().unwrap_or_default());
        let patch = json!({"metadata": {"annotations": {HUB_ID_ANNOTATION: form.spec.hub_id}}});
        api.patch(&form.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(|e| FormError {
            form: form_key(form),
            action: "recording its hubId",
            source: Box::new(e),
        })?;
    }
    Ok(())
}

fn node_ready(node: &LynqNode) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn condition<'a>(form: &'a LynqForm, type_: &str) -> Option<&'a Condition> {
    form.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

async fn publish_events(form: &LynqForm, ctx: &FormContext, validation: &FormValidation, hub_id: &str) {
    let previous_valid = condition(form, VALID_CONDITION).map(|c| c.status == "True");
    let events = finding_events(validation, hub_id, &form.namespace().unwrap_or_default())
        .into_iter()
        .chain(transition_events(previous_valid, validation));
    for event in events {
        let e = Event {
            type_: event.type_,
            reason: event.reason.into(),
            note: Some(event.note),
            action: event.reason.into(),
            secondary: None,
        };
        if let Err(err) = ctx.recorder.publish(&e, &form.object_ref(&())).await {
            tracing::warn!(form = %form_key(form), error = %err, "publishing an event failed");
        }
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Lynq's Applied condition.
fn applied_condition(previous: Option<&Condition>, total: i32, ready: i32, generation: Option<i64>) -> Condition {
    let (status, reason, message) = match (total, ready) {
        (0, _) => ("False", "NoNodes", "No nodes using this template".to_string()),
        (t, r) if t == r => ("True", "AllNodesReady", format!("All {t} nodes ready")),
        (t, r) => ("False", "NotAllNodesReady", format!("{r}/{t} nodes ready")),
    };
    let unchanged = previous.is_some_and(|p| p.status == status && p.reason == reason && p.message == message);
    Condition {
        type_: "Applied".into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: previous
            .filter(|_| unchanged)
            .map(|p| p.last_transition_time.clone())
            .unwrap_or_else(now),
    }
}

fn form_status(
    form: &LynqForm,
    validation: &FormValidation,
    total: i32,
    ready: i32,
    nodes: &[NodeRollout],
) -> LynqFormStatus {
    let generation = form.metadata.generation;
    let valid = validation.valid_condition().to_condition(condition(form, VALID_CONDITION), generation, now());
    let applied = applied_condition(condition(form, "Applied"), total, ready, generation);
    LynqFormStatus {
        observed_generation: generation,
        total_nodes: Some(total),
        ready_nodes: Some(ready),
        rollout: rollout_status(
            nodes,
            generation.unwrap_or_default(),
            RolloutSettings::from_config(form.spec.rollout.as_ref()),
            form.status.as_ref().and_then(|s| s.rollout.as_ref()),
            chrono::Utc::now(),
        ),
        conditions: Some(vec![valid, applied]),
    }
}
