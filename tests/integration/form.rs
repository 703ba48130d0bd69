//! The LynqForm controller: validation conditions and events, hubId immutability, node totals.

use std::time::Duration;

use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use lynq::api::{LynqForm, LynqHub};
use serde_json::json;

use crate::{crds::install_crds, support};

const WAIT: Duration = Duration::from_secs(30);

async fn start(prefix: &str) -> (Client, String, tokio::task::JoinHandle<()>) {
    let client = support::client().await;
    install_crds(&client).await;
    let ns = support::namespace(&client, prefix).await;
    let controller = tokio::spawn(lynq::hub::form::run(
        client.clone(),
        Some(ns.clone()),
        5,
        Default::default(),
        std::future::pending(),
    ));
    (client, ns, controller)
}

/// Waits until the form's condition `type_` has `status`, returning (reason, message).
async fn condition(api: &Api<LynqForm>, name: &str, type_: &str, status: &str) -> (String, String) {
    support::eventually(&format!("form {name} {type_}={status}"), WAIT, || {
        let api = api.clone();
        async move {
            let form = api.get(name).await.ok()?;
            let c = form.status?.conditions?.into_iter().find(|c| c.type_ == type_)?;
            (c.status == status).then_some((c.reason, c.message))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_form_is_valid_once_its_hub_exists() {
    let (client, ns, _controller) = start("form-seed").await;
    support::kubectl(&["apply", "-n", &ns, "-f", support::fixture("seed/lynqform.yaml").to_str().expect("path")]);
    let forms: Api<LynqForm> = Api::namespaced(client.clone(), &ns);
    let (reason, message) = condition(&forms, "web-app", "Valid", "False").await;
    assert_eq!(reason, "ValidationFailed");
    assert!(message.contains("my-saas-hub"), "names the missing hub: {message}");

    support::kubectl(&["apply", "-n", &ns, "-f", support::fixture("seed/lynqhub.yaml").to_str().expect("path")]);
    let (reason, _) = condition(&forms, "web-app", "Valid", "True").await;
    assert_eq!(reason, "ValidationPassed");
    let (reason, message) = condition(&forms, "web-app", "Applied", "False").await;
    assert_eq!((reason.as_str(), message.as_str()), ("NoNodes", "No nodes using this template"));
    let form = forms.get("web-app").await.expect("form");
    assert_eq!(form.status.expect("status").total_nodes, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_cycle_is_reported_with_lynqs_message() {
    let (client, ns, _controller) = start("form-cycle").await;
    support::kubectl(&["apply", "-n", &ns, "-f", support::fixture("seed/lynqhub.yaml").to_str().expect("path")]);
    let form: LynqForm = serde_json::from_value(json!({
        "apiVersion": "operator.lynq.sh/v1", "kind": "LynqForm", "metadata": {"name": "loop"},
        "spec": {"hubId": "my-saas-hub", "configMaps": [
            {"id": "a", "dependIds": ["b"], "spec": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}},
            {"id": "b", "dependIds": ["a"], "spec": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}}}
        ]}
    }))
    .expect("form");
    let forms: Api<LynqForm> = Api::namespaced(client.clone(), &ns);
    forms.create(&Default::default(), &form).await.expect("create");
    let (reason, message) = condition(&forms, "loop", "Valid", "False").await;
    assert_eq!(reason, "ValidationFailed");
    assert!(message.contains("circular dependency detected"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_id_cannot_be_changed() {
    let (client, ns, _controller) = start("form-hubid").await;
    support::kubectl(&["apply", "-n", &ns, "-f", support::fixture("seed/lynqhub.yaml").to_str().expect("path")]);
    support::kubectl(&["apply", "-n", &ns, "-f", support::fixture("seed/lynqform.yaml").to_str().expect("path")]);
    let forms: Api<LynqForm> = Api::namespaced(client.clone(), &ns);
    condition(&forms, "web-app", "Valid", "True").await;
    let hubs: Api<LynqHub> = Api::namespaced(client.clone(), &ns);
    assert!(hubs.get_opt("my-saas-hub").await.expect("get").is_some());

    let patch = json!({"spec": {"hubId": "another-hub"}});
    forms
        .patch("web-app", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("the apiserver (no CEL) accepts it");
    let (_, message) = condition(&forms, "web-app", "Valid", "False").await;
    assert!(message.contains("immutable"), "{message}");
    let form = forms.get("web-app").await.expect("form");
    assert_eq!(lynq::hub::form::effective_hub_id(&form), "my-saas-hub", "the recorded hubId stays in force");
}
