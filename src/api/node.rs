//! LynqNode: one active row × one form, reconciled into resources.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{DeletionPolicy, ResourceLists, TemplateSyntax};

/// Finalizer that holds a LynqNode until its resources are cleaned up (Lynq's name). The hub sets
/// it when it creates a node, so that a new node needs no second write before its first pass.
pub const NODE_FINALIZER: &str = "lynqnode.operator.lynq.sh/finalizer";

/// Desired state of a LynqNode (written by the hub).
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "operator.lynq.sh",
    version = "v1",
    kind = "LynqNode",
    plural = "lynqnodes",
    namespaced,
    status = "LynqNodeStatus",
    printcolumn = r#"{"name":"UID","type":"string","jsonPath":".spec.uid"}"#,
    printcolumn = r#"{"name":"Form","type":"string","jsonPath":".spec.templateRef"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyResources"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.desiredResources"}"#,
    printcolumn = r#"{"name":"Skipped","type":"integer","jsonPath":".status.skippedResources"}"#,
    printcolumn = r#"{"name":"Conflicted","type":"string","jsonPath":".status.conditions[?(@.type=='Conflicted')].status"}"#,
    printcolumn = r#"{"name":"Conditions","type":"string","jsonPath":".status.conditions[?(@.type=='Ready')].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LynqNodeSpec {
    /// The row's uid.
    pub uid: String,
    /// Name of the LynqForm this node renders.
    pub template_ref: String,
    /// Template language of the resources (copied from the form; default go).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_syntax: Option<TemplateSyntax>,
    /// The form's resources with name, labels and annotations already rendered by the hub.
    #[serde(flatten)]
    pub resources: ResourceLists,
}

/// Observed state of a LynqNode.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LynqNodeStatus {
    /// Generation last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Resources ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_resources: Option<i32>,
    /// Resources in the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_resources: Option<i32>,
    /// Resources failed (render, apply, conflict, readiness timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_resources: Option<i32>,
    /// Resources skipped because a dependency failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_resources: Option<i32>,
    /// Ids of the skipped resources (empty when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_resource_ids: Option<Vec<String>>,
    /// Lynq's keys `Kind/namespace/name@id` of the desired resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_resources: Option<Vec<String>>,
    /// Full references of the applied resources, so that any kind can be cleaned up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_resource_refs: Option<Vec<AppliedResourceRef>>,
    /// Conditions (Ready, Progressing, Conflicted, Degraded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// Baseline of the periodic forced re-apply (drift correction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_full_reconcile_at: Option<Time>,
}

/// Everything needed to find and clean up an applied object of any kind.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AppliedResourceRef {
    /// Resource id in the form.
    pub id: String,
    /// apiVersion of the object.
    pub api_version: String,
    /// Kind of the object.
    pub kind: String,
    /// Namespace; empty for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name of the object.
    pub name: String,
    /// Deletion policy the object was applied with.
    pub deletion_policy: DeletionPolicy,
}
