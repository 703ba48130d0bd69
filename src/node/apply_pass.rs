//! One reconcile pass of a node's resources: render, key, remove orphans, then apply in dependency
//! order — every resource whose dependencies are settled runs concurrently with the others (bounded),
//! instead of one by one as Lynq does.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use chrono::{DateTime, SecondsFormat, Utc};
use futures::{StreamExt, future::BoxFuture, stream::FuturesUnordered};
use kube::{ResourceExt, runtime::controller::Action, runtime::events::EventType};
use serde_json::Value;

use super::{
    Context, Error, FORCE_REAPPLY_INTERVAL, cleanup,
    plan::{self, ResourceOutcome},
    readiness, render,
    status::{self, EarlyExit},
    variables,
};
use crate::{
    api::{AppliedResourceRef, CreationPolicy, LynqNode, PatchStrategy, TResource},
    apply::{
        ANN_CREATED_ONCE, ApplyError, LABEL_NODE, LABEL_NODE_NAMESPACE, ResolvedKind, WriteDecision, WriteMode,
        annotations_mut, fill_ssa_list_keys, hash::desired_hash, ignore_fields::apply_ignore_fields, labels_mut,
        stamp_tracking_annotations, write_decision,
    },
    graph::ResourceGraph,
};

/// A resource rendered, resolved to a served kind and given its ownership, ready to apply.
struct Prepared {
    resource: TResource,
    kind: ResolvedKind,
    object: Value,
    reference: AppliedResourceRef,
}

/// Renders, keys and applies every resource of `node`, then publishes its status.
pub(super) async fn reconcile_resources(node: &LynqNode, ctx: &Context) -> Result<Action, Error> {
    let vars = match variables::node_variables(node) {
        Ok(v) => v,
        Err(e) => return status::publish_early_exit(node, ctx, EarlyExit::Variables(e.to_string())).await,
    };
    let resources: Vec<TResource> = node.spec.resources.all().cloned().collect();
    let edges: Vec<(String, Vec<String>)> =
        resources.iter().map(|r| (r.id.clone(), r.dependencies().to_vec())).collect();
    let graph = match ResourceGraph::new(&edges) {
        Ok(g) => g,
        Err(e) => return status::publish_early_exit(node, ctx, EarlyExit::Graph(e)).await,
    };

    let mut prepared: HashMap<String, Result<Prepared, String>> = HashMap::new();
    for resource in &resources {
        let result = prepare(ctx, node, resource, &vars).await;
        if let Err(message) = &result {
            let note = format!("Failed to render resource {}: {message}", resource.id);
            ctx.resource_event(node, EventType::Warning, "TemplateRenderError", Some(&resource.id), note).await;
        }
        prepared.insert(resource.id.clone(), result);
    }
    let current: Vec<AppliedResourceRef> =
        prepared.values().filter_map(|p| p.as_ref().ok().map(|p| p.reference.clone())).collect();
    let keep_unrendered: Vec<String> = prepared.iter().filter(|(_, p)| p.is_err()).map(|(id, _)| id.clone()).collect();
    let pending_orphans = cleanup::remove_orphans(node, ctx, &current, &keep_unrendered).await;

    let now = Utc::now();
    let force = force_reapply_due(node, now);
    let outcomes = run_in_dependency_order(ctx, node, &graph, &prepared, force, now).await;
    let requeue = next_check(&outcomes, node, now);
    let summary_outcomes: Vec<(String, ResourceOutcome)> =
        graph.order().iter().filter_map(|id| outcomes.get(id).map(|a| (id.clone(), a.outcome.clone()))).collect();
    let changed = outcomes.values().any(|a| a.changed);
    let mut refs = ordered_refs(&graph, &prepared);
    refs.extend(pending_orphans);
    status::publish(node, ctx, &summary_outcomes, refs, changed, force, now).await?;
    Ok(Action::requeue(requeue))
}

/// How long a pass applies changes before it publishes `Progressing=True`. Lynq's status writer
/// batches for up to a second, so a pass that ends sooner shows only its final status there too;
/// writing it at once would cost every changed node an extra status write.
const PROGRESSING_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Settles every resource, each as soon as its own dependencies are settled, at most
/// `apply_concurrency` at a time: a slow resource never holds back an unrelated branch.
///
/// The first change of the pass raises Lynq's `TemplateResourcesApplying` event beside the applies
/// (not in front of the dependents); a pass still applying [`PROGRESSING_AFTER`] later publishes
/// `Progressing=True`. Both finish before the pass returns, so its final status comes after them.
async fn run_in_dependency_order(
    ctx: &Context,
    node: &LynqNode,
    graph: &ResourceGraph,
    prepared: &HashMap<String, Result<Prepared, String>>,
    force: bool,
    now: DateTime<Utc>,
) -> BTreeMap<String, Applied> {
    let mut outcomes: BTreeMap<String, Applied> = BTreeMap::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut ready: VecDeque<String> = graph.roots().into_iter().map(str::to_owned).collect();
    let mut first_change = FirstChange::Unseen;
    let mut running: FuturesUnordered<BoxFuture<'_, Step>> = FuturesUnordered::new();
    let limit = ctx.config.apply_concurrency.max(1);
    loop {
        while running.len() < limit
            && let Some(id) = ready.pop_front()
        {
            let deps: Vec<(String, ResourceOutcome)> = graph
                .dependencies(&id)
                .iter()
                .filter_map(|d| outcomes.get(d).map(|a| (d.clone(), a.outcome.clone())))
                .collect();
            let prep = prepared.get(&id);
            running.push(Box::pin(async move {
                let applied = settle(ctx, node, &id, prep, &deps, force, now).await;
                Step::Settled(id, applied)
            }));
        }
        let step = match first_change {
            FirstChange::Seen(due) => tokio::select! {
                step = running.next() => step,
                () = tokio::time::sleep_until(due) => {
                    first_change = FirstChange::Published;
                    running.push(Box::pin(async move {
                        status::publish_progressing(node, ctx).await;
                        Step::Published
                    }));
                    continue;
                }
            },
            FirstChange::Unseen | FirstChange::Published => running.next().await,
        };
        let Some(step) = step else { break };
        let Step::Settled(id, applied) = step else { continue };
        if applied.changed && first_change == FirstChange::Unseen {
            first_change = FirstChange::Seen(tokio::time::Instant::now() + PROGRESSING_AFTER);
            running.push(Box::pin(async move {
                let note = "Reconciling changed resources".into();
                ctx.event(node, EventType::Normal, "TemplateResourcesApplying", note).await;
                Step::Published
            }));
        }
        outcomes.insert(id.clone(), applied);
        finished.insert(id.clone());
        ready.extend(graph.newly_runnable(&id, &finished).into_iter().map(str::to_owned));
    }
    outcomes
}

/// Where a pass is with its first change.
#[derive(Clone, Copy, PartialEq)]
enum FirstChange {
    /// Nothing changed yet.
    Unseen,
    /// Something changed; `Progressing=True` is due at this instant if the pass is still running.
    Seen(tokio::time::Instant),
    /// `Progressing=True` was published.
    Published,
}

/// A finished piece of work of a pass.
enum Step {
    /// A resource was settled.
    Settled(String, Applied),
    /// An event or the Progressing status was published.
    Published,
}

/// What happened to one resource in this pass.
struct Applied {
    outcome: ResourceOutcome,
    changed: bool,
    /// When a not-yet-ready resource times out, if it has a timeout.
    deadline: Option<DateTime<Utc>>,
}

impl Applied {
    fn new(outcome: ResourceOutcome) -> Self {
        Self { outcome, changed: false, deadline: None }
    }
}

fn ordered_refs(
    graph: &ResourceGraph,
    prepared: &HashMap<String, Result<Prepared, String>>,
) -> Vec<AppliedResourceRef> {
    graph
        .order()
        .iter()
        .filter_map(|id| prepared.get(id).and_then(|p| p.as_ref().ok()).map(|p| p.reference.clone()))
        .collect()
}

/// Renders the resource, resolves its kind and sets namespace and ownership.
async fn prepare(
    ctx: &Context,
    node: &LynqNode,
    resource: &TResource,
    vars: &BTreeMap<String, String>,
) -> Result<Prepared, String> {
    let node_ns = node.namespace().unwrap_or_default();
    let syntax = render::syntax_of(node.spec.template_syntax);
    let rendered = render::render_resource(&ctx.engine, syntax, resource, &node_ns, vars).map_err(|e| e.to_string())?;
    let kind = ctx
        .applier
        .resolve(&rendered.api_version, &rendered.kind)
        .await
        .map_err(|e| format!("resource '{}': {e}", resource.id))?;
    let mut object = rendered.object;
    let namespace = kind.namespaced.then(|| rendered.namespace.clone());
    if !kind.namespaced
        && let Some(Value::Object(meta)) = object.get_mut("metadata")
    {
        meta.remove("namespace");
    }
    let owned = kind.namespaced
        && namespace.as_deref() == Some(node_ns.as_str())
        && resource.deletion_policy() == crate::api::DeletionPolicy::Delete;
    if owned {
        set_controller_reference(&mut object, node);
    } else {
        let labels = labels_mut(&mut object);
        labels.insert(LABEL_NODE.into(), Value::String(node.name_any()));
        labels.insert(LABEL_NODE_NAMESPACE.into(), Value::String(node_ns.clone()));
    }
    ctx.watches.ensure(&kind);
    let reference = AppliedResourceRef {
        id: resource.id.clone(),
        api_version: rendered.api_version,
        kind: rendered.kind,
        namespace,
        name: rendered.name,
        deletion_policy: resource.deletion_policy(),
    };
    Ok(Prepared { resource: resource.clone(), kind, object, reference })
}

fn set_controller_reference(object: &mut Value, node: &LynqNode) {
    let owner = serde_json::json!({
        "apiVersion": "operator.lynq.sh/v1",
        "kind": "LynqNode",
        "name": node.name_any(),
        "uid": node.uid().unwrap_or_default(),
        "controller": true,
        "blockOwnerDeletion": true,
    });
    if let Some(Value::Object(meta)) = object.get_mut("metadata") {
        meta.insert("ownerReferences".into(), Value::Array(vec![owner]));
    }
}

/// Decides and, when due, applies one resource.
async fn settle(
    ctx: &Context,
    node: &LynqNode,
    id: &str,
    prepared: Option<&Result<Prepared, String>>,
    deps: &[(String, ResourceOutcome)],
    force: bool,
    now: DateTime<Utc>,
) -> Applied {
    let Some(prepared) = prepared else {
        return Applied::new(ResourceOutcome::Failed { reason: format!("resource '{id}' is not in the node") });
    };
    let skip = prepared.as_ref().map(|p| p.resource.skip_on_dependency_failure()).unwrap_or(true);
    let decision = plan::dependency_decision(deps, skip);
    if let Some(event) = decision.event(id) {
        ctx.resource_event(node, EventType::Warning, event.reason, Some(id), event.message).await;
    }
    if let Some(outcome) = decision.outcome() {
        return Applied::new(outcome);
    }
    let prepared = match prepared {
        Ok(p) => p,
        Err(message) => return Applied::new(ResourceOutcome::Failed { reason: message.clone() }),
    };
    let result = apply_one(ctx, node, prepared, force).await;
    let policy = format!("{:?}", prepared.resource.conflict_policy());
    crate::metrics::apply_attempt(&prepared.reference.kind, result.is_ok(), &policy);
    match result {
        Ok((live, changed)) => readiness_of(ctx, node, prepared, &live, changed, now).await,
        Err(ApplyError::Conflict { kind, name, message }) => {
            tracing::info!(node = %super::node_key(node), resource = id, %kind, %name, %message, "field conflict");
            crate::metrics::node::conflict(node, &kind, &policy);
            let note = format!("Resource '{id}' ({kind} {name}) is in conflict with another field manager: {message}");
            ctx.resource_event(node, EventType::Warning, "ResourceConflict", Some(id), note).await;
            Applied::new(ResourceOutcome::Conflicted)
        }
        Err(e) => {
            tracing::warn!(node = %super::node_key(node), resource = id, error = %e, "apply failed");
            ctx.resource_event(
                node,
                EventType::Warning,
                "ApplyFailed",
                Some(id),
                format!("Failed to apply resource '{id}': {e}"),
            )
            .await;
            Applied::new(ResourceOutcome::Failed { reason: e.to_string() })
        }
    }
}

/// Writes the object when needed; returns the live object afterwards and whether it changed.
async fn apply_one(ctx: &Context, node: &LynqNode, p: &Prepared, force: bool) -> Result<(Value, bool), ApplyError> {
    let ns = p.reference.namespace.as_deref();
    let mut live = ctx.applier.get(&p.kind, ns, &p.reference.name).await?;
    let once = p.resource.creation_policy() == CreationPolicy::Once;
    if once
        && let Some(existing) = &live
        && existing.pointer("/metadata/annotations").and_then(|a| a.get(ANN_CREATED_ONCE)).and_then(Value::as_str)
            == Some("true")
    {
        return Ok((existing.clone(), false));
    }
    let mut force = force;
    if let Some(existing) = &live
        && plan::has_orphan_markers(existing)
    {
        let mut stripped = existing.clone();
        plan::strip_orphan_markers(&mut stripped);
        let updated = ctx.applier.update(&p.kind, &stripped).await?;
        let note = format!("Orphan markers removed: re-adopted by LynqNode {}", super::node_key(node));
        ctx.object_event(&updated, "OrphanMarkersRemoved", note).await;
        live = Some(updated);
        force = true;
    }
    let mut desired = p.object.clone();
    if p.resource.patch_strategy() == PatchStrategy::Apply {
        fill_ssa_list_keys(&mut desired);
    }
    if once {
        annotations_mut(&mut desired).insert(ANN_CREATED_ONCE.into(), Value::String("true".into()));
    } else if let (Some(existing), Some(paths)) = (&live, &p.resource.ignore_fields)
        && let Err(e) = apply_ignore_fields(&mut desired, existing, paths)
    {
        return Err(ApplyError::Invalid {
            kind: p.reference.kind.clone(),
            name: p.reference.name.clone(),
            message: e.to_string(),
        });
    }
    let hash = desired_hash(&desired);
    if write_decision(&desired, &hash, live.as_ref(), force) == WriteDecision::Skip {
        // Safe: Skip is only returned when a live object exists.
        return Ok((live.unwrap_or_default(), false));
    }
    stamp_tracking_annotations(
        &mut desired,
        &hash,
        live.as_ref(),
        &Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true),
    );
    let mode = match p.resource.patch_strategy() {
        PatchStrategy::Apply => {
            WriteMode::Apply { force: p.resource.conflict_policy() == crate::api::ConflictPolicy::Force }
        }
        PatchStrategy::Merge => WriteMode::Merge,
        PatchStrategy::Replace => WriteMode::Replace,
    };
    let before = live.as_ref().and_then(resource_version);
    let after = ctx.applier.write(&p.kind, &desired, live.as_ref(), mode).await?;
    let changed = before.is_none() || before != resource_version(&after);
    Ok((after, changed))
}

fn resource_version(obj: &Value) -> Option<String> {
    obj.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(str::to_owned)
}

/// Readiness after a successful apply, with the timeout measured from apply-start-time.
async fn readiness_of(
    ctx: &Context,
    node: &LynqNode,
    p: &Prepared,
    live: &Value,
    changed: bool,
    now: DateTime<Utc>,
) -> Applied {
    let once_kept = p.resource.creation_policy() == CreationPolicy::Once && !changed;
    if !p.resource.wait_for_ready() || once_kept {
        return Applied { outcome: ResourceOutcome::Ready, changed, deadline: None };
    }
    let ready = readiness::is_ready(&p.reference.kind, live);
    tracing::debug!(node = %super::node_key(node), resource = %p.resource.id, ready = ready.ready, reason = %ready.reason, "readiness");
    if ready.ready {
        return Applied { outcome: ResourceOutcome::Ready, changed, deadline: None };
    }
    let check = plan::TimeoutCheck::new(live, now, now, p.resource.timeout_seconds());
    if let Some(event) = check.event(&p.resource.id) {
        let note = format!("{}: {}", event.message, ready.reason);
        ctx.resource_event(node, EventType::Warning, event.reason, Some(&p.resource.id), note).await;
    }
    let deadline = (!check.timed_out()).then_some(check.deadline);
    Applied { outcome: check.outcome(&ready.reason), changed, deadline }
}

/// Lynq's periodic forced re-apply: due when lastFullReconcileAt is older than the interval.
fn force_reapply_due(node: &LynqNode, now: DateTime<Utc>) -> bool {
    let last = node.status.as_ref().and_then(|s| s.last_full_reconcile_at.as_ref()).map(|t| t.0);
    last.is_some_and(|t| {
        let elapsed = now.signed_duration_since(DateTime::<Utc>::from_timestamp(t.as_second(), 0).unwrap_or(now));
        elapsed.num_seconds() >= FORCE_REAPPLY_INTERVAL.as_secs() as i64
    })
}

/// When to look again without any event: the earliest readiness deadline, else the forced re-apply.
fn next_check(outcomes: &BTreeMap<String, Applied>, _node: &LynqNode, now: DateTime<Utc>) -> std::time::Duration {
    outcomes
        .values()
        .filter_map(|a| a.deadline)
        .min()
        .map(|d| (d - now).to_std().unwrap_or_default() + std::time::Duration::from_millis(200))
        .unwrap_or(FORCE_REAPPLY_INTERVAL)
}
