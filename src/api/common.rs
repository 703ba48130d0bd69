//! Types shared by LynqForm and LynqNode: the templated resource (`TResource`) and its policies.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema;

/// When a resource is created or updated.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum CreationPolicy {
    /// Create it once and never touch it again.
    Once,
    /// Keep it in sync with the template (default).
    #[default]
    WhenNeeded,
}

/// What happens to a resource when its node goes or it leaves the form.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Delete it (default).
    #[default]
    Delete,
    /// Keep it, marked as orphaned.
    Retain,
}

/// What a server-side-apply field conflict does.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum ConflictPolicy {
    /// Take ownership of the conflicting fields.
    Force,
    /// Report the conflict and leave the object alone (default).
    #[default]
    Stuck,
}

/// How a resource is written.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PatchStrategy {
    /// Server-side apply (default).
    #[default]
    Apply,
    /// JSON merge patch (RFC 7386), creating the object when absent.
    Merge,
    /// Full update with the live resourceVersion, creating the object when absent.
    Replace,
}

/// Template language of a form's strings.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TemplateSyntax {
    /// Go text/template with Sprig functions, as Lynq (default).
    #[default]
    Go,
    /// Jinja (minijinja).
    Jinja,
}

fn default_true() -> Option<bool> {
    Some(true)
}

fn default_timeout_seconds() -> Option<i32> {
    Some(300)
}

/// One templated Kubernetes resource of a form (Lynq's `TResource`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TResource {
    /// Identifier used by `dependIds`, status keys and events; unique across the form.
    #[schemars(length(min = 1))]
    pub id: String,
    /// The whole manifest (apiVersion, kind, metadata, spec/data…); every string may hold template syntax.
    #[schemars(schema_with = "schema::preserve_unknown_object")]
    pub spec: serde_json::Value,
    /// Resources that must be applied (and ready, with waitForReady) first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depend_ids: Option<Vec<String>>,
    /// Skip this resource when a dependency failed (default true).
    #[serde(default = "default_true", skip_serializing_if = "Option::is_none")]
    pub skip_on_dependency_failure: Option<bool>,
    /// When the resource is created or updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "WhenNeeded"))]
    pub creation_policy: Option<CreationPolicy>,
    /// What happens to the resource when the node goes or it leaves the form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "Delete"))]
    pub deletion_policy: Option<DeletionPolicy>,
    /// What a field-ownership conflict does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "Stuck"))]
    pub conflict_policy: Option<ConflictPolicy>,
    /// Template for metadata.name; empty means spec.metadata.name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_template: Option<String>,
    /// Namespace of the object (templatable); empty means the node's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_namespace: Option<String>,
    /// Labels whose values are templates; merged over the manifest's own labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels_template: Option<BTreeMap<String, String>>,
    /// Annotations whose values are templates; merged over the manifest's own annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations_template: Option<BTreeMap<String, String>>,
    /// Gate dependents and readiness on this object being ready (default true).
    #[serde(default = "default_true", skip_serializing_if = "Option::is_none")]
    pub wait_for_ready: Option<bool>,
    /// Readiness timeout in seconds, measured from the last spec change (default 300).
    #[serde(default = "default_timeout_seconds", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: Option<i32>,
    /// How the object is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "apply"))]
    pub patch_strategy: Option<PatchStrategy>,
    /// JSONPath expressions whose live values are kept on updates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_fields: Option<Vec<String>>,
}

impl TResource {
    /// Dependencies, empty when none.
    pub fn dependencies(&self) -> &[String] {
        self.depend_ids.as_deref().unwrap_or_default()
    }
    /// Effective skipOnDependencyFailure (nil means true, as Lynq).
    pub fn skip_on_dependency_failure(&self) -> bool {
        self.skip_on_dependency_failure.unwrap_or(true)
    }
    /// Effective creation policy.
    pub fn creation_policy(&self) -> CreationPolicy {
        self.creation_policy.unwrap_or_default()
    }
    /// Effective deletion policy.
    pub fn deletion_policy(&self) -> DeletionPolicy {
        self.deletion_policy.unwrap_or_default()
    }
    /// Effective conflict policy.
    pub fn conflict_policy(&self) -> ConflictPolicy {
        self.conflict_policy.unwrap_or_default()
    }
    /// Effective patch strategy.
    pub fn patch_strategy(&self) -> PatchStrategy {
        self.patch_strategy.unwrap_or_default()
    }
    /// Effective waitForReady (nil means true).
    pub fn wait_for_ready(&self) -> bool {
        self.wait_for_ready.unwrap_or(true)
    }
    /// Effective readiness timeout; zero or negative falls back to Lynq's 300 s.
    pub fn timeout_seconds(&self) -> i64 {
        match self.timeout_seconds {
            Some(t) if t > 0 => i64::from(t),
            _ => 300,
        }
    }
}

/// The 16 resource lists of a form or node, in Lynq's fixed concatenation order.
///
/// The form CRD marks each list `x-kubernetes-list-type: map` keyed by `id` (see `schema::mark_list_maps`);
/// the node CRD does not, exactly as Lynq.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResourceLists {
    /// ServiceAccounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_accounts: Option<Vec<TResource>>,
    /// Deployments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployments: Option<Vec<TResource>>,
    /// StatefulSets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stateful_sets: Option<Vec<TResource>>,
    /// DaemonSets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon_sets: Option<Vec<TResource>>,
    /// Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<TResource>>,
    /// Ingresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingresses: Option<Vec<TResource>>,
    /// ConfigMaps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_maps: Option<Vec<TResource>>,
    /// Secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<Vec<TResource>>,
    /// PersistentVolumeClaims.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claims: Option<Vec<TResource>>,
    /// Jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<Vec<TResource>>,
    /// CronJobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron_jobs: Option<Vec<TResource>>,
    /// PodDisruptionBudgets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_disruption_budgets: Option<Vec<TResource>>,
    /// NetworkPolicies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policies: Option<Vec<TResource>>,
    /// HorizontalPodAutoscalers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizontal_pod_autoscalers: Option<Vec<TResource>>,
    /// Namespaces (cluster-scoped, always label-tracked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<TResource>>,
    /// Any other kind, custom resources included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifests: Option<Vec<TResource>>,
}

impl ResourceLists {
    /// The lists in Lynq's fixed order.
    fn lists(&self) -> [&Option<Vec<TResource>>; 16] {
        [
            &self.service_accounts,
            &self.deployments,
            &self.stateful_sets,
            &self.daemon_sets,
            &self.services,
            &self.ingresses,
            &self.config_maps,
            &self.secrets,
            &self.persistent_volume_claims,
            &self.jobs,
            &self.cron_jobs,
            &self.pod_disruption_budgets,
            &self.network_policies,
            &self.horizontal_pod_autoscalers,
            &self.namespaces,
            &self.manifests,
        ]
    }

    /// Every resource of the 16 lists, concatenated in Lynq's order.
    pub fn all(&self) -> impl Iterator<Item = &TResource> {
        self.lists().into_iter().flat_map(|l| l.iter().flatten())
    }

    /// Applies `f` to every resource in place (used by the hub to pre-render names, labels, annotations).
    pub fn for_each_mut(&mut self, mut f: impl FnMut(&mut TResource)) {
        for list in [
            &mut self.service_accounts,
            &mut self.deployments,
            &mut self.stateful_sets,
            &mut self.daemon_sets,
            &mut self.services,
            &mut self.ingresses,
            &mut self.config_maps,
            &mut self.secrets,
            &mut self.persistent_volume_claims,
            &mut self.jobs,
            &mut self.cron_jobs,
            &mut self.pod_disruption_budgets,
            &mut self.network_policies,
            &mut self.horizontal_pod_autoscalers,
            &mut self.namespaces,
            &mut self.manifests,
        ] {
            list.iter_mut().flatten().for_each(&mut f);
        }
    }
}

/// Reference to a key of a Secret in the object's own namespace.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct SecretKeyRef {
    /// Secret name.
    pub name: String,
    /// Key inside the Secret's data.
    pub key: String,
}
