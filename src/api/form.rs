//! LynqForm: the templates of resources created for every active row.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{ResourceLists, TemplateSyntax};

/// Desired state of a LynqForm.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "operator.lynq.sh",
    version = "v1",
    kind = "LynqForm",
    plural = "lynqforms",
    namespaced,
    status = "LynqFormStatus",
    printcolumn = r#"{"name":"Hub","type":"string","jsonPath":".spec.hubId"}"#,
    printcolumn = r#"{"name":"Total","type":"integer","jsonPath":".status.totalNodes"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyNodes"}"#,
    printcolumn = r#"{"name":"Rollout","type":"string","jsonPath":".status.rollout.phase"}"#,
    printcolumn = r#"{"name":"Updating","type":"integer","jsonPath":".status.rollout.updatingNodes"}"#,
    printcolumn = r#"{"name":"Applied","type":"string","jsonPath":".status.conditions[?(@.type=='Applied')].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LynqFormSpec {
    /// Name of the LynqHub in the same namespace (immutable; enforced by the controller).
    #[schemars(length(min = 1))]
    pub hub_id: String,
    /// Template language of every string in this form (default go).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "go"))]
    pub template_syntax: Option<TemplateSyntax>,
    /// The resource lists.
    #[serde(flatten)]
    pub resources: ResourceLists,
    /// Rollout throttling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutConfig>,
}

fn default_progress_deadline() -> Option<i32> {
    Some(600)
}

/// How many nodes may be updating at once.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutConfig {
    /// Maximum nodes of this form updating at once; 0 means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0), extend("default" = 0))]
    pub max_skew: Option<i32>,
    /// Seconds a node may take to become ready after an update before the rollout marks it failed.
    #[serde(default = "default_progress_deadline", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 60, max = 3600))]
    pub progress_deadline_seconds: Option<i32>,
}

/// Observed state of a LynqForm.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LynqFormStatus {
    /// Generation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// LynqNodes of this form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_nodes: Option<i32>,
    /// Of those, Ready=True.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_nodes: Option<i32>,
    /// Rollout progress (only with maxSkew > 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// Conditions (Valid, Applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
}

/// Phase of a rollout.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum RolloutPhase {
    /// Nothing to roll out.
    Idle,
    /// Nodes are being updated.
    InProgress,
    /// A node missed its progress deadline.
    Failed,
    /// Every node is updated and ready.
    Complete,
}

/// Rollout progress of a form.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Current phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RolloutPhase>,
    /// Form generation being rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_generation: Option<i64>,
    /// Nodes of the form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_nodes: Option<i32>,
    /// Nodes at the target generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_nodes: Option<i32>,
    /// Updated but not yet ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updating_nodes: Option<i32>,
    /// Updated and ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_updated_nodes: Option<i32>,
    /// Updated nodes that missed the progress deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_nodes: Option<i32>,
    /// When this rollout started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When it completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Human-readable progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
