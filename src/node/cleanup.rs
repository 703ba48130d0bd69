//! Removing a node's resources: on node deletion (finalizer) and when a resource leaves the form
//! (orphans), each per its deletionPolicy, for every kind (Lynq leaks several kinds here).

use chrono::{SecondsFormat, Utc};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{controller::Action, events::EventType},
};

use super::{Context, Error, FINALIZER, node_key, plan};
use crate::{
    api::{AppliedResourceRef, DeletionPolicy, LynqNode},
    apply::{ApplyError, keys},
};

/// Why an object is being orphan-marked or deleted.
#[derive(Clone, Copy)]
enum Reason {
    RemovedFromTemplate,
    LynqNodeDeleted,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Self::RemovedFromTemplate => "RemovedFromTemplate",
            Self::LynqNodeDeleted => "LynqNodeDeleted",
        }
    }
}

/// The node's applied objects as recorded in status: lynq's full refs, else Lynq's legacy keys.
fn recorded_refs(node: &LynqNode) -> Vec<AppliedResourceRef> {
    let status = node.status.as_ref();
    if let Some(refs) = status.and_then(|s| s.applied_resource_refs.clone()) {
        return refs;
    }
    status
        .and_then(|s| s.applied_resources.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|key| keys::parse_key(key).ok())
        .filter_map(|k| {
            let api_version = keys::api_version_for_kind(&k.kind)?;
            Some(AppliedResourceRef {
                id: k.id,
                api_version: api_version.to_string(),
                namespace: (!k.namespace.is_empty() && k.kind != "Namespace").then_some(k.namespace),
                kind: k.kind,
                name: k.name,
                // Lynq stored the policy on the object; the object's annotation decides below.
                deletion_policy: DeletionPolicy::Delete,
            })
        })
        .collect()
}

/// Deletes or orphan-marks objects recorded earlier but not desired now. Returns the ones that could
/// not be handled, which stay recorded so that the next pass retries them instead of forgetting them.
pub(super) async fn remove_orphans(
    node: &LynqNode,
    ctx: &Context,
    current: &[AppliedResourceRef],
    unrendered_ids: &[String],
) -> Vec<AppliedResourceRef> {
    let same_object = |a: &AppliedResourceRef, b: &AppliedResourceRef| {
        a.kind == b.kind && a.api_version == b.api_version && a.namespace == b.namespace && a.name == b.name
    };
    let mut pending = Vec::new();
    for old in recorded_refs(node) {
        // A resource that failed to render this time is not "removed": never delete it on a render error.
        if current.iter().any(|c| same_object(c, &old)) || unrendered_ids.contains(&old.id) {
            continue;
        }
        match dispose(ctx, node, &old, Reason::RemovedFromTemplate).await {
            Ok(Some(DeletionPolicy::Retain)) => {
                let note = format!("Orphaned resource {} {} retained (removed from template)", old.kind, old.name);
                ctx.resource_event(node, EventType::Normal, "OrphanedResourceRetained", Some(&old.id), note).await;
            }
            Ok(_) => {
                let note = format!("Orphaned resource {} {} deleted (removed from template)", old.kind, old.name);
                ctx.resource_event(node, EventType::Normal, "OrphanedResourceDeleted", Some(&old.id), note).await;
            }
            Err(e) => {
                let note = format!("Removing orphaned resource {} {} failed, will retry: {e}", old.kind, old.name);
                ctx.resource_event(node, EventType::Warning, "OrphanCleanupFailed", Some(&old.id), note).await;
                pending.push(old);
            }
        }
    }
    pending
}

/// Cleans up every recorded object in reverse order, then removes the finalizer. A failure keeps the
/// finalizer and is retried (reported as CleanupPartialFailure), so nothing is leaked silently.
pub(super) async fn finalize(node: &LynqNode, ctx: &Context) -> Result<Action, Error> {
    if !node.finalizers().iter().any(|f| f == super::FINALIZER) {
        crate::metrics::node::forget(node);
        return Ok(Action::await_change());
    }
    let mut failures = Vec::new();
    for r in recorded_refs(node).iter().rev() {
        match dispose(ctx, node, r, Reason::LynqNodeDeleted).await {
            Ok(Some(DeletionPolicy::Retain)) => {
                let note = format!("Resource {} {} retained (deletionPolicy Retain)", r.kind, r.name);
                ctx.resource_event(node, EventType::Normal, "ResourceRetained", Some(&r.id), note).await;
            }
            Ok(_) => {}
            Err(e) => failures.push(format!("{} {}: {e}", r.kind, r.name)),
        }
    }
    if !failures.is_empty() {
        let message = failures.join("; ");
        ctx.event(node, EventType::Warning, "CleanupPartialFailure", format!("Cleanup failed, retrying: {message}"))
            .await;
        return Err(Error::Cleanup { node: node_key(node), failed: failures.len(), message });
    }
    remove_finalizer(node, ctx).await?;
    crate::metrics::node::forget(node);
    ctx.event(node, EventType::Normal, "LynqNodeDeleted", format!("LynqNode {} cleaned up", node_key(node))).await;
    Ok(Action::await_change())
}

/// Deletes or orphan-marks one object; returns the policy applied (None when it was already gone).
async fn dispose(
    ctx: &Context,
    node: &LynqNode,
    r: &AppliedResourceRef,
    reason: Reason,
) -> Result<Option<DeletionPolicy>, ApplyError> {
    let kind = match ctx.applier.resolve(&r.api_version, &r.kind).await {
        Ok(k) => k,
        // The kind itself is gone (CRD removed): so is every object of it.
        Err(ApplyError::UnknownKind { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(live) = ctx.applier.get(&kind, r.namespace.as_deref(), &r.name).await? else { return Ok(None) };
    if !is_managed_by(&live, node) {
        // Someone else owns the object now: leave it alone.
        return Ok(None);
    }
    let policy = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(crate::apply::ANN_DELETION_POLICY))
        .and_then(serde_json::Value::as_str)
        .map(|p| if p == "Retain" { DeletionPolicy::Retain } else { DeletionPolicy::Delete })
        .unwrap_or(r.deletion_policy);
    match policy {
        DeletionPolicy::Delete => ctx.applier.delete(&kind, r.namespace.as_deref(), &r.name).await?,
        DeletionPolicy::Retain => {
            let mut marked = live;
            plan::add_orphan_markers(
                &mut marked,
                reason.as_str(),
                &Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
            );
            let updated = ctx.applier.update(&kind, &marked).await?;
            let note = format!(
                "Orphan markers added (reason {}): no longer managed by LynqNode {}",
                reason.as_str(),
                node_key(node)
            );
            ctx.object_event(&updated, "OrphanMarkersAdded", note).await;
        }
    }
    Ok(Some(policy))
}

/// True when the object carries this node's controller ownerReference or its tracking labels.
fn is_managed_by(live: &serde_json::Value, node: &LynqNode) -> bool {
    let uid = node.uid().unwrap_or_default();
    let owned = live.pointer("/metadata/ownerReferences").and_then(serde_json::Value::as_array).is_some_and(|refs| {
        refs.iter().any(|r| r.get("uid").and_then(serde_json::Value::as_str) == Some(uid.as_str()))
    });
    let labels = live.pointer("/metadata/labels");
    let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(serde_json::Value::as_str).map(str::to_owned);
    let tracked = label(crate::apply::LABEL_NODE) == Some(node.name_any())
        && label(crate::apply::LABEL_NODE_NAMESPACE) == node.namespace();
    owned || tracked
}

async fn remove_finalizer(node: &LynqNode, ctx: &Context) -> Result<(), Error> {
    let api: Api<LynqNode> = Api::namespaced(ctx.client.clone(), &node.namespace().unwrap_or_default());
    let finalizers: Vec<&String> = node.finalizers().iter().filter(|f| f.as_str() != FINALIZER).collect();
    let patch = serde_json::json!({"metadata": {"finalizers": finalizers, "resourceVersion": node.resource_version()}});
    match api.patch(&node.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(Error::Kube { node: node_key(node), action: "removing the finalizer", source }),
    }
}
