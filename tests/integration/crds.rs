//! The CRDs install into the real apiserver and the seed's YAML applies unchanged.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api,
    api::{DynamicObject, Patch, PatchParams},
    core::GroupVersionKind,
    discovery::ApiResource,
};
use lynq::api::{LynqForm, LynqHub};

use crate::support;

/// Installs lynq's CRDs (server-side apply, so every test may call it) and waits until they are established.
pub async fn install_crds(client: &kube::Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in lynq::api::crds() {
        let name = crd.metadata.name.clone().expect("crd name");
        api.patch(&name, &PatchParams::apply("lynq-tests").force(), &Patch::Apply(&crd)).await.expect("apply crd");
        support::eventually(&format!("CRD {name} established"), Duration::from_secs(30), || {
            let api = api.clone();
            let name = name.clone();
            async move {
                let crd = api.get(&name).await.ok()?;
                let established =
                    crd.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True");
                established.then_some(())
            }
        })
        .await;
    }
}

fn read_yaml(path: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(support::fixture(path)).expect("fixture");
    serde_yaml_ng::from_str(&text).expect("fixture is YAML")
}

/// Applies a seed fixture with kubectl and checks that the typed and the raw read-back keep every field.
async fn apply_seed_and_read_back<K>(fixture: &str, kind: &str, plural: &str)
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + serde::de::DeserializeOwned
        + serde::Serialize
        + Clone
        + std::fmt::Debug,
{
    let client = support::client().await;
    install_crds(&client).await;
    let ns = support::namespace(&client, "seed").await;
    support::kubectl(&["apply", "-n", &ns, "-f", support::fixture(fixture).to_str().expect("utf-8 path")]);

    let expected = read_yaml(fixture);
    let name = expected["metadata"]["name"].as_str().expect("fixture has a name");
    let gvk = GroupVersionKind::gvk("operator.lynq.sh", "v1", kind);
    let raw: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &ApiResource::from_gvk_with_plural(&gvk, plural));
    let stored = serde_json::to_value(raw.get(name).await.expect("read back raw")).expect("json");
    support::assert_contains(&expected["spec"], &stored["spec"], "spec");

    // The typed client must round-trip every field too (nothing pruned, nothing dropped by serde).
    let typed: Api<K> = Api::namespaced(client.clone(), &ns);
    let object = typed.get(name).await.expect("read back typed");
    let retyped = serde_json::to_value(&object).expect("json");
    support::assert_contains(&expected["spec"], &retyped["spec"], "spec");
}

#[tokio::test]
async fn seed_lynqhub_applies_unchanged_and_keeps_sync_interval() {
    apply_seed_and_read_back::<LynqHub>("seed/lynqhub.yaml", "LynqHub", "lynqhubs").await;
}

#[tokio::test]
async fn seed_lynqform_applies_unchanged() {
    apply_seed_and_read_back::<LynqForm>("seed/lynqform.yaml", "LynqForm", "lynqforms").await;
}

#[tokio::test]
async fn seed_policy_fragments_apply_unchanged() {
    apply_seed_and_read_back::<LynqForm>("seed/lynqform-policies.yaml", "LynqForm", "lynqforms").await;
}

#[tokio::test]
async fn crd_defaults_match_lynq() {
    let client = support::client().await;
    install_crds(&client).await;
    let ns = support::namespace(&client, "defaults").await;
    support::kubectl(&["apply", "-n", &ns, "-f", support::fixture("seed/lynqform.yaml").to_str().expect("path")]);
    let form: LynqForm = Api::namespaced(client.clone(), &ns).get("web-app").await.expect("form");
    let app = form.spec.resources.deployments.as_ref().and_then(|d| d.first()).expect("app");
    assert_eq!(app.skip_on_dependency_failure, Some(true));
    assert_eq!(app.creation_policy, Some(lynq::api::CreationPolicy::WhenNeeded));
    assert_eq!(app.deletion_policy, Some(lynq::api::DeletionPolicy::Delete));
    assert_eq!(app.conflict_policy, Some(lynq::api::ConflictPolicy::Stuck));
    assert_eq!(app.patch_strategy, Some(lynq::api::PatchStrategy::Apply));
    assert_eq!(app.wait_for_ready, Some(true));
    assert_eq!(app.timeout_seconds, Some(300));

    support::kubectl(&["apply", "-n", &ns, "-f", support::fixture("seed/lynqhub.yaml").to_str().expect("path")]);
    let hub: LynqHub = Api::namespaced(client, &ns).get("my-saas-hub").await.expect("hub");
    let mysql = hub.spec.source.mysql.as_ref().expect("mysql");
    assert_eq!(mysql.port, 3306);
    assert_eq!(hub.spec.source.change_capture, Some(lynq::api::ChangeCaptureMode::Auto));
    assert_eq!(hub.spec.sync_interval.as_deref(), Some("30s"), "the seed's spec.syncInterval is kept, not pruned");
}

#[tokio::test]
async fn crd_validation_rejects_bad_values() {
    let client = support::client().await;
    install_crds(&client).await;
    let ns = support::namespace(&client, "invalid").await;
    let bad_interval = serde_json::json!({
        "apiVersion": "operator.lynq.sh/v1", "kind": "LynqHub", "metadata": {"name": "bad"},
        "spec": {"source": {"type": "mysql", "syncInterval": "1m30s",
                 "mysql": {"host": "h", "username": "u", "database": "d", "table": "t"}},
                 "valueMappings": {"uid": "id", "activate": "on"}}
    });
    let gvk = GroupVersionKind::gvk("operator.lynq.sh", "v1", "LynqHub");
    let api: Api<DynamicObject> =
        Api::namespaced_with(client, &ns, &ApiResource::from_gvk_with_plural(&gvk, "lynqhubs"));
    let obj: DynamicObject = serde_json::from_value(bad_interval.clone()).expect("object");
    let err = api.create(&Default::default(), &obj).await.expect_err("compound durations are rejected, as in Lynq");
    assert!(err.to_string().contains("syncInterval"), "error names the field: {err}");

    let mut bad_type = bad_interval;
    bad_type["spec"]["source"]["syncInterval"] = "30s".into();
    bad_type["spec"]["source"]["type"] = "oracle".into();
    let obj: DynamicObject = serde_json::from_value(bad_type).expect("object");
    let err = api.create(&Default::default(), &obj).await.expect_err("unknown source types are rejected");
    assert!(err.to_string().contains("type"), "error names the field: {err}");
}
