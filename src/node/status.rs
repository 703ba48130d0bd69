//! Publishing a node's status (Lynq's fields, conditions and reasons) and its summary events.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{controller::Action, events::EventType},
};

use super::{
    Context, Error, node_key,
    plan::{self, ConditionSpec, ResourceOutcome},
};
use crate::{
    api::{AppliedResourceRef, LynqNode, LynqNodeStatus},
    apply::keys,
    graph::GraphError,
};

/// A reconcile that stopped before applying anything.
pub(super) enum EarlyExit {
    /// The hub's annotations could not be turned into variables.
    Variables(String),
    /// The dependency graph is invalid.
    Graph(GraphError),
}

/// Reports an early exit on the node (Ready=False, Degraded=True with Lynq's reasons) and waits for a change.
pub(super) async fn publish_early_exit(node: &LynqNode, ctx: &Context, exit: EarlyExit) -> Result<Action, Error> {
    let (kind, reason, message) = match &exit {
        EarlyExit::Variables(m) => (plan::EarlyExit::Variables, "VariablesBuildError", m.clone()),
        EarlyExit::Graph(e) => (plan::EarlyExit::Graph, "DependencyError", e.to_string()),
    };
    ctx.event(node, EventType::Warning, reason, format!("LynqNode {}: {message}", node_key(node))).await;
    let mut conditions = plan::early_exit_conditions(kind, &message);
    conditions.push(plan::progressing_condition(false));
    conditions.push(ConditionSpec::new("Conflicted", false, "NoConflict", "No resource conflicts detected"));
    let mut status = node.status.clone().unwrap_or_default();
    status.observed_generation = node.metadata.generation;
    status.conditions =
        Some(merge_conditions(status.conditions.as_deref(), &conditions, Utc::now(), node.metadata.generation));
    crate::metrics::node::record_status(node, &status, None);
    write_status(node, ctx, status).await?;
    // Nothing to retry until the node or its form changes; the slow requeue is only a safety net.
    Ok(Action::requeue(super::FORCE_REAPPLY_INTERVAL))
}

/// Publishes the outcome of a full pass.
pub(super) async fn publish(
    node: &LynqNode,
    ctx: &Context,
    outcomes: &[(String, ResourceOutcome)],
    refs: Vec<AppliedResourceRef>,
    changed: bool,
    forced: bool,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let summary = plan::summarize(outcomes);
    let previous = node.status.clone().unwrap_or_default();
    let last_full = match (&previous.last_full_reconcile_at, forced) {
        (Some(t), false) => Some(t.clone()),
        _ => Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(now.timestamp())
                .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now()),
        )),
    };
    let status = LynqNodeStatus {
        observed_generation: node.metadata.generation,
        ready_resources: Some(summary.ready),
        desired_resources: Some(summary.desired),
        failed_resources: Some(summary.failed),
        skipped_resources: Some(summary.skipped),
        skipped_resource_ids: Some(summary.skipped_ids.clone()),
        applied_resources: Some(refs.iter().map(|r| lynq_key(r, &node.namespace().unwrap_or_default())).collect()),
        applied_resource_refs: Some(refs),
        conditions: Some(merge_conditions(
            previous.conditions.as_deref(),
            &summary.conditions,
            now,
            node.metadata.generation,
        )),
        last_full_reconcile_at: last_full,
    };
    crate::metrics::node::record_status(node, &status, Some(summary.conflicted));
    // The summary event and the status go out together: the status (Ready) is what clients wait
    // for, and the event need not hold it back.
    let event = async {
        if changed {
            let (type_, reason) = if summary.failed > 0 {
                (EventType::Warning, "TemplateAppliedPartial")
            } else {
                (EventType::Normal, "TemplateAppliedSuccess")
            };
            let note = format!(
                "Applied {} resources: {} ready, {} failed, {} skipped",
                summary.desired, summary.ready, summary.failed, summary.skipped
            );
            ctx.event(node, type_, reason, note).await;
        }
    };
    let write = async {
        if node.status.as_ref() != Some(&status) {
            write_status(node, ctx, status).await?;
        }
        Ok(())
    };
    tokio::join!(event, write).1
}

/// Publishes `Progressing=True` (reason Reconciling) while a pass applies changes; the pass's final
/// status sets it back to False, so it is only transiently visible, as in Lynq.
pub(super) async fn publish_progressing(node: &LynqNode, ctx: &Context) {
    let mut status = node.status.clone().unwrap_or_default();
    let mut conditions = status.conditions.take().unwrap_or_default();
    let progressing =
        merge_conditions(None, &[plan::progressing_condition(true)], Utc::now(), node.metadata.generation);
    conditions.retain(|c| c.type_ != "Progressing");
    conditions.extend(progressing);
    status.conditions = Some(conditions);
    if let Err(e) = write_status(node, ctx, status).await {
        tracing::debug!(node = %node_key(node), error = %e, "publishing Progressing=True failed");
    }
}

/// Lynq's key `Kind/namespace/name@id` of an applied object; cluster-scoped objects carry the node's
/// namespace, exactly as Lynq writes them, so that a rollback to Lynq never sees them as orphans.
fn lynq_key(r: &AppliedResourceRef, node_namespace: &str) -> String {
    keys::format_key(&r.kind, keys::key_namespace(r.namespace.as_deref(), node_namespace), &r.name, &r.id)
}

/// New conditions, keeping lastTransitionTime where status, reason and message are unchanged.
fn merge_conditions(
    previous: Option<&[Condition]>,
    wanted: &[ConditionSpec],
    now: DateTime<Utc>,
    generation: Option<i64>,
) -> Vec<Condition> {
    let now = Time(
        k8s_openapi::jiff::Timestamp::from_second(now.timestamp())
            .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now()),
    );
    wanted
        .iter()
        .map(|w| {
            let status = if w.status { "True" } else { "False" }.to_string();
            let old = previous.into_iter().flatten().find(|c| c.type_ == w.type_);
            let unchanged = old.is_some_and(|c| c.status == status && c.reason == w.reason && c.message == w.message);
            Condition {
                type_: w.type_.clone(),
                status,
                reason: w.reason.clone(),
                message: w.message.clone(),
                observed_generation: generation,
                last_transition_time: match old {
                    Some(c) if unchanged => c.last_transition_time.clone(),
                    _ => now.clone(),
                },
            }
        })
        .collect()
}

async fn write_status(node: &LynqNode, ctx: &Context, status: LynqNodeStatus) -> Result<(), Error> {
    let api: Api<LynqNode> = Api::namespaced(ctx.client.clone(), &node.namespace().unwrap_or_default());
    let patch = serde_json::json!({ "status": status });
    crate::metrics::api_write("LynqNode", "patch");
    match api.patch_status(&node.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        // The node is gone: nothing left to report on.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(Error::Kube { node: node_key(node), action: "writing status", source }),
    }
}
