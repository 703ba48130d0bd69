//! Hand-written schema pieces the derive cannot express, and post-processing of generated CRDs.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;
use schemars::{Schema, SchemaGenerator, json_schema};

/// The 16 resource-list field names of a form/node spec, in Lynq's order.
pub const RESOURCE_LISTS: [&str; 16] = [
    "serviceAccounts",
    "deployments",
    "statefulSets",
    "daemonSets",
    "services",
    "ingresses",
    "configMaps",
    "secrets",
    "persistentVolumeClaims",
    "jobs",
    "cronJobs",
    "podDisruptionBudgets",
    "networkPolicies",
    "horizontalPodAutoscalers",
    "namespaces",
    "manifests",
];

/// An arbitrary object kept verbatim by the apiserver (a whole Kubernetes manifest).
pub fn preserve_unknown_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Marks each resource list of a spec schema as a list-map keyed by `id` (Lynq's form CRD does this
/// so that server-side apply and Terraform merge the lists by id).
pub fn mark_list_maps(spec_schema: &mut JSONSchemaProps) {
    let Some(props) = spec_schema.properties.as_mut() else {
        return;
    };
    for name in RESOURCE_LISTS {
        if let Some(list) = props.get_mut(name) {
            list.x_kubernetes_list_type = Some("map".into());
            list.x_kubernetes_list_map_keys = Some(vec!["id".into()]);
        }
    }
}
