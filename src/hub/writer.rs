//! The hub's writes: LynqNodes (server-side apply, so every write is an idempotent create-or-update),
//! node deletions, and the hub's status.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::json;

use crate::{
    api::{LynqHub, LynqHubStatus, LynqNode, LynqNodeSpec},
    apply::FIELD_MANAGER,
};

/// Why a hub write failed.
#[derive(Debug, thiserror::Error)]
#[error("LynqHub {hub}: {action} {object}: {source}")]
pub struct WriteError {
    /// namespace/name of the hub.
    pub hub: String,
    /// What was being done.
    pub action: &'static str,
    /// The object acted on.
    pub object: String,
    /// The API error.
    pub source: Box<kube::Error>,
}

/// A LynqNode as the hub wants it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeWrite {
    /// `{uid}-{form}`.
    pub name: String,
    /// Row uid.
    pub uid: String,
    /// Form name.
    pub form: String,
    /// Labels (lynq.sh/hub, lynq.sh/uid).
    pub labels: BTreeMap<String, String>,
    /// Annotations (row values, template generation, rollout start).
    pub annotations: BTreeMap<String, String>,
}

/// Writes a hub's nodes and status.
#[derive(Clone)]
pub struct HubWriter {
    client: Client,
    hub: LynqHub,
}

impl HubWriter {
    /// A writer for `hub` (its uid is used for the nodes' owner reference).
    pub fn new(client: Client, hub: LynqHub) -> Self {
        Self { client, hub }
    }

    fn hub_key(&self) -> String {
        super::config::hub_key(&self.hub)
    }

    fn nodes(&self) -> Api<LynqNode> {
        Api::namespaced(self.client.clone(), &self.hub.namespace().unwrap_or_default())
    }

    /// Creates or updates a node with `resources` (the form's, with name/labels/annotations templates
    /// already rendered by the caller, as Lynq's hub does) and a controller owner reference to the hub.
    pub async fn apply_node(
        &self,
        node: &NodeWrite,
        syntax: Option<crate::api::TemplateSyntax>,
        resources: &crate::api::ResourceLists,
    ) -> Result<(), WriteError> {
        let owner = OwnerReference {
            api_version: LynqHub::api_version(&()).into_owned(),
            kind: LynqHub::kind(&()).into_owned(),
            name: self.hub.name_any(),
            uid: self.hub.uid().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let spec = LynqNodeSpec {
            uid: node.uid.clone(),
            template_ref: node.form.clone(),
            template_syntax: syntax,
            resources: resources.clone(),
        };
        let body = json!({
            "apiVersion": LynqNode::api_version(&()),
            "kind": LynqNode::kind(&()),
            "metadata": {
                "name": node.name,
                "labels": node.labels,
                "annotations": node.annotations,
                "ownerReferences": [owner],
                // Set at creation: the node controller would otherwise add it in a write of its own
                // (and a pass triggered by it) before applying anything.
                "finalizers": [crate::api::NODE_FINALIZER],
            },
            "spec": spec,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        crate::metrics::api_write("LynqNode", "apply");
        self.nodes().patch(&node.name, &params, &Patch::Apply(&body)).await.map(|_| ()).map_err(|e| WriteError {
            hub: self.hub_key(),
            action: "applying LynqNode",
            object: node.name.clone(),
            source: Box::new(e),
        })
    }

    /// Deletes a node (its finalizer then cleans up its resources); a missing node is fine.
    pub async fn delete_node(&self, name: &str) -> Result<(), WriteError> {
        crate::metrics::api_write("LynqNode", "delete");
        match self.nodes().delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(WriteError {
                hub: self.hub_key(),
                action: "deleting LynqNode",
                object: name.into(),
                source: Box::new(e),
            }),
        }
    }

    /// Merges `status` into the hub's status.
    pub async fn write_status(&self, status: &LynqHubStatus) -> Result<(), WriteError> {
        let api: Api<LynqHub> = Api::namespaced(self.client.clone(), &self.hub.namespace().unwrap_or_default());
        let patch = json!({ "status": status });
        crate::metrics::api_write("LynqHub", "patch");
        match api.patch_status(&self.hub.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {
                crate::metrics::hub::record_status(&self.hub, status);
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(WriteError {
                hub: self.hub_key(),
                action: "writing status of",
                object: self.hub.name_any(),
                source: Box::new(e),
            }),
        }
    }
}
