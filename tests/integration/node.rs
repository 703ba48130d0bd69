//! The LynqNode controller against the real apiserver: LynqNodes are created directly by the tests
//! (the hub that creates them is tested separately); readiness is simulated by writing status.

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Service},
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use lynq::api::{LynqNode, LynqNodeSpec, ResourceLists, TResource};
use serde_json::{Value, json};

use crate::{crds::install_crds, support};

pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// A namespace with lynq's CRDs installed and a node controller scoped to it.
pub(crate) struct Scenario {
    pub(crate) client: Client,
    pub(crate) ns: String,
    pub(crate) _controller: tokio::task::JoinHandle<()>,
}

impl Scenario {
    pub(crate) async fn start(prefix: &str) -> Self {
        let client = support::client().await;
        install_crds(&client).await;
        let ns = support::namespace(&client, prefix).await;
        let config = lynq::node::NodeConfig { namespace: Some(ns.clone()), ..Default::default() };
        let controller = tokio::spawn(lynq::node::run(client.clone(), config, std::future::pending()));
        Self { client, ns, _controller: controller }
    }

    pub(crate) fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub(crate) async fn create_node(&self, name: &str, uid: &str, resources: ResourceLists, extra: Value) -> LynqNode {
        let mut node = LynqNode::new(
            name,
            LynqNodeSpec { uid: uid.into(), template_ref: "web".into(), template_syntax: None, resources },
        );
        node.metadata.annotations = Some(
            [
                ("lynq.sh/extra".to_string(), extra.to_string()),
                ("lynq.sh/hubId".to_string(), "hub".to_string()),
                ("lynq.sh/activate".to_string(), "1".to_string()),
            ]
            .into(),
        );
        self.api::<LynqNode>().create(&PostParams::default(), &node).await.expect("create node")
    }

    /// Waits until the node's Ready condition has `status`, returning the node.
    pub(crate) async fn node_ready(&self, name: &str, status: &str) -> LynqNode {
        let api = self.api::<LynqNode>();
        support::eventually(&format!("node {name} Ready={status}"), WAIT, || {
            let api = api.clone();
            async move {
                let node = api.get(name).await.ok()?;
                let ready =
                    node.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")?.status.clone();
                (ready == status).then_some(node)
            }
        })
        .await
    }

    pub(crate) async fn wait_for<K>(&self, name: &str) -> K
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api = self.api::<K>();
        support::eventually(&format!("{name} exists"), WAIT, || {
            let api = api.clone();
            async move { api.get_opt(name).await.ok().flatten() }
        })
        .await
    }

    pub(crate) async fn wait_gone<K>(&self, name: &str)
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api = self.api::<K>();
        support::eventually(&format!("{name} is gone"), WAIT, || {
            let api = api.clone();
            async move { matches!(api.get_opt(name).await, Ok(None)).then_some(()) }
        })
        .await
    }
}

pub(crate) fn resource(id: &str, depend: &[&str], spec: Value) -> TResource {
    TResource {
        id: id.into(),
        spec,
        depend_ids: (!depend.is_empty()).then(|| depend.iter().map(|d| d.to_string()).collect()),
        ..Default::default()
    }
}

fn chain() -> ResourceLists {
    ResourceLists {
        config_maps: Some(vec![resource(
            "config",
            &[],
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "{{ .uid }}-config"}, "data": {"plan": "{{ .planId | default \"basic\" }}"}}),
        )]),
        deployments: Some(vec![resource(
            "app",
            &["config"],
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "{{ .uid }}-app"},
                   "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "{{ .uid }}"}},
                            "template": {"metadata": {"labels": {"app": "{{ .uid }}"}},
                                         "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}}}}),
        )]),
        services: Some(vec![resource(
            "svc",
            &["app"],
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "{{ .uid }}-svc"},
                   "spec": {"selector": {"app": "{{ .uid }}"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
        )]),
        ..Default::default()
    }
}

/// Marks a Deployment ready the way a kubelet and the deployment controller would.
pub(crate) async fn make_deployment_ready(api: &Api<Deployment>, name: &str) {
    let deployment = api.get(name).await.expect("deployment");
    let generation = deployment.metadata.generation.unwrap_or(1);
    let status = json!({"status": {"observedGeneration": generation, "replicas": 1, "updatedReplicas": 1,
                                     "readyReplicas": 1, "availableReplicas": 1}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.expect("write deployment status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependency_chain_applies_in_order_and_waits_for_readiness() {
    let s = Scenario::start("node-chain").await;
    s.create_node("acme-web", "acme", chain(), json!({"planId": "pro"})).await;

    let config: ConfigMap = s.wait_for("acme-config").await;
    assert_eq!(config.data.as_ref().and_then(|d| d.get("plan")).map(String::as_str), Some("pro"));
    let deployments = s.api::<Deployment>();
    let deployment: Deployment = s.wait_for("acme-app").await;
    let owner = deployment.owner_references().first().expect("owned by the node");
    assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.controller), ("LynqNode", "acme-web", Some(true)));

    // The Service depends on a Deployment that is not ready yet: it must not exist.
    let node = s.node_ready("acme-web", "False").await;
    assert!(
        s.api::<Service>().get_opt("acme-svc").await.expect("get").is_none(),
        "dependent applied before its dependency was ready"
    );
    let status = node.status.expect("status");
    assert_eq!(status.desired_resources, Some(3));

    make_deployment_ready(&deployments, "acme-app").await;
    let _svc: Service = s.wait_for("acme-svc").await;
    let node = s.node_ready("acme-web", "True").await;
    let status = node.status.expect("status");
    assert_eq!(
        (status.ready_resources, status.failed_resources, status.skipped_resources),
        (Some(3), Some(0), Some(0))
    );
    let ns = &s.ns;
    assert_eq!(
        status.applied_resources.expect("keys"),
        vec![
            format!("ConfigMap/{ns}/acme-config@config"),
            format!("Deployment/{ns}/acme-app@app"),
            format!("Service/{ns}/acme-svc@svc")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_written_when_nothing_changed() {
    let s = Scenario::start("node-nowrite").await;
    s.create_node("idle-web", "idle", chain(), json!({})).await;
    let _: Deployment = s.wait_for("idle-app").await;
    make_deployment_ready(&s.api(), "idle-app").await;
    s.node_ready("idle-web", "True").await;
    let versions = |s: &Scenario| {
        let (c, d, v) = (s.api::<ConfigMap>(), s.api::<Deployment>(), s.api::<Service>());
        async move {
            (
                c.get("idle-config").await.expect("cm").resource_version(),
                d.get("idle-app").await.expect("deploy").resource_version(),
                v.get("idle-svc").await.expect("svc").resource_version(),
            )
        }
    };
    let before = versions(&s).await;
    // A spec change that renders to the same objects: the node is fully reconciled (its generation
    // moves, and observedGeneration follows), yet no managed object may be written.
    let nodes = s.api::<LynqNode>();
    let patch = json!({"spec": {"templateSyntax": "go"}});
    let touched = nodes.patch("idle-web", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("touch");
    let generation = touched.metadata.generation;
    support::eventually("the touched node to be reconciled", WAIT, || {
        let nodes = nodes.clone();
        async move { (nodes.get("idle-web").await.ok()?.status?.observed_generation == generation).then_some(()) }
    })
    .await;
    s.node_ready("idle-web", "True").await;
    assert_eq!(versions(&s).await, before, "a reconcile with nothing changed wrote to the API");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_node_deletes_owned_and_orphans_retained_resources() {
    let s = Scenario::start("node-delete").await;
    let mut lists = chain();
    lists.deployments = None;
    lists.services = None;
    let mut kept = resource(
        "kept",
        &[],
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "{{ .uid }}-kept"}, "data": {"a": "b"}}),
    );
    kept.deletion_policy = Some(lynq::api::DeletionPolicy::Retain);
    lists.config_maps.get_or_insert_with(Vec::new).push(kept);
    s.create_node("gone-web", "gone", lists, json!({})).await;
    s.node_ready("gone-web", "True").await;
    let kept: ConfigMap = s.wait_for("gone-kept").await;
    assert!(kept.owner_references().is_empty(), "Retain objects are label-tracked, never owned");
    assert_eq!(kept.labels().get("lynq.sh/node").map(String::as_str), Some("gone-web"));

    s.api::<LynqNode>().delete("gone-web", &DeleteParams::default()).await.expect("delete node");
    s.wait_gone::<ConfigMap>("gone-config").await;
    s.wait_gone::<LynqNode>("gone-web").await;
    let kept: ConfigMap = s.api().get("gone-kept").await.expect("retained object survives");
    assert_eq!(kept.labels().get("lynq.sh/orphaned").map(String::as_str), Some("true"));
    assert_eq!(kept.annotations().get("lynq.sh/orphaned-reason").map(String::as_str), Some("LynqNodeDeleted"));
    assert!(!kept.labels().contains_key("lynq.sh/node"));
    let ns = s.ns.clone();
    support::eventually("an OrphanMarkersAdded event on the retained object", WAIT, || {
        let ns = ns.clone();
        async move {
            let events = support::kubectl(&[
                "get",
                "events",
                "-n",
                &ns,
                "--field-selector",
                "involvedObject.name=gone-kept",
                "-o",
                "json",
            ]);
            events.contains("OrphanMarkersAdded").then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_resource_fails_alone_and_is_reported() {
    let s = Scenario::start("node-broken").await;
    let lists = ResourceLists {
        config_maps: Some(vec![
            resource(
                "good",
                &[],
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "{{ .uid }}-good"}}),
            ),
            resource(
                "bad",
                &[],
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "{{ .uid }}-bad"}, "data": {"x": "{{ .missing }}"}}),
            ),
            resource(
                "after-bad",
                &["bad"],
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "{{ .uid }}-after"}}),
            ),
        ]),
        ..Default::default()
    };
    s.create_node("broken-web", "broken", lists, json!({})).await;
    let _good: ConfigMap = s.wait_for("broken-good").await;
    let node = s.node_ready("broken-web", "False").await;
    let status = node.status.expect("status");
    assert_eq!(status.failed_resources, Some(1));
    assert_eq!(status.skipped_resources, Some(1));
    assert_eq!(status.skipped_resource_ids, Some(vec!["after-bad".to_string()]));
    let ready = status.conditions.expect("conditions").into_iter().find(|c| c.type_ == "Ready").expect("Ready");
    assert_eq!(ready.reason, "ResourcesFailed");
    assert!(s.api::<ConfigMap>().get_opt("broken-after").await.expect("get").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kinds_invalid_names_and_cycles_are_reported_on_the_node() {
    let s = Scenario::start("node-badinput").await;
    let lists = ResourceLists {
        config_maps: Some(vec![
            resource(
                "fine",
                &[],
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "{{ .uid }}-fine"}}),
            ),
            resource(
                "upper",
                &[],
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "{{ .uid }}-UPPER"}}),
            ),
            resource("nokind", &[], json!({"apiVersion": "v1", "metadata": {"name": "{{ .uid }}-nokind"}})),
        ]),
        manifests: Some(vec![resource(
            "ghost",
            &[],
            json!({"apiVersion": "ghosts.example.com/v1", "kind": "Ghost", "metadata": {"name": "{{ .uid }}-ghost"}}),
        )]),
        ..Default::default()
    };
    s.create_node("bad-web", "bad", lists, json!({})).await;
    let _fine: ConfigMap = s.wait_for("bad-fine").await;
    let node = s.node_ready("bad-web", "False").await;
    let status = node.status.expect("status");
    assert_eq!((status.ready_resources, status.failed_resources), (Some(1), Some(3)), "only the broken ones fail");
    let events = support::kubectl(&[
        "get",
        "events",
        "-n",
        &s.ns,
        "--field-selector",
        "involvedObject.name=bad-web",
        "-o",
        "json",
    ]);
    for needle in ["'upper'", "not a valid Kubernetes name", "'nokind'", "no kind", "'ghost'", "Ghost"] {
        assert!(events.contains(needle), "events name the resource and the cause ({needle}): {events}");
    }

    let cyclic = ResourceLists {
        config_maps: Some(vec![
            resource("a", &["b"], json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}})),
            resource("b", &["a"], json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}})),
        ]),
        ..Default::default()
    };
    s.create_node("loop-web", "loop", cyclic, json!({})).await;
    let node = s.node_ready("loop-web", "False").await;
    let conditions = node.status.and_then(|st| st.conditions).expect("conditions");
    let reason = |t: &str| conditions.iter().find(|c| c.type_ == t).map(|c| (c.reason.clone(), c.message.clone()));
    let (ready_reason, ready_message) = reason("Ready").expect("Ready");
    assert_eq!(ready_reason, "DependencyError");
    assert!(ready_message.contains("a -> b -> a") || ready_message.contains("b -> a -> b"), "{ready_message}");
    assert_eq!(reason("Degraded").map(|r| r.0).as_deref(), Some("DependencyCycle"));
}

/// Owned objects carry a controller ownerReference, so the cluster's garbage collector removes them
/// even when the node disappears without lynq's cleanup (here: its finalizer stripped by hand).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_objects_are_garbage_collected_by_the_controller_manager() {
    let s = Scenario::start("node-gc").await;
    let mut lists = chain();
    lists.deployments = None;
    lists.services = None;
    s.create_node("gc-web", "gc", lists, json!({})).await;
    s.node_ready("gc-web", "True").await;
    let nodes = s.api::<LynqNode>();
    s._controller.abort();
    let patch = json!({"metadata": {"finalizers": null}});
    nodes.patch("gc-web", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("strip finalizer");
    nodes.delete("gc-web", &DeleteParams::background()).await.expect("delete node");
    s.wait_gone::<ConfigMap>("gc-config").await;
}

/// A node that Lynq managed (status with Lynq's keys only, objects written by the same field manager
/// with the same annotations) is adopted in place: nothing is deleted or recreated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_managed_by_lynq_are_adopted_in_place() {
    let s = Scenario::start("node-adopt").await;
    s.create_node("old-web", "old", chain(), json!({})).await;
    let _: Deployment = s.wait_for("old-app").await;
    make_deployment_ready(&s.api(), "old-app").await;
    s.node_ready("old-web", "True").await;
    s._controller.abort();
    let uids = |s: &Scenario| {
        let (c, d, v) = (s.api::<ConfigMap>(), s.api::<Deployment>(), s.api::<Service>());
        async move {
            let c = c.get("old-config").await.expect("cm");
            let d = d.get("old-app").await.expect("deploy");
            let v = v.get("old-svc").await.expect("svc");
            [(c.uid(), c.resource_version()), (d.uid(), d.resource_version()), (v.uid(), v.resource_version())]
        }
    };
    let before = uids(&s).await;
    // What Lynq leaves behind: only its `Kind/ns/name@id` keys, no lynq references.
    let nodes = s.api::<LynqNode>();
    let patch = json!({"status": {"appliedResourceRefs": null}});
    nodes.patch_status("old-web", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("strip lynq status");
    let lynq_only = nodes.get("old-web").await.expect("node");
    assert!(lynq_only.status.as_ref().and_then(|st| st.applied_resource_refs.as_ref()).is_none());

    let config = lynq::node::NodeConfig { namespace: Some(s.ns.clone()), ..Default::default() };
    let _controller = tokio::spawn(lynq::node::run(s.client.clone(), config, std::future::pending()));
    support::eventually("lynq took over the node", WAIT, || {
        let nodes = nodes.clone();
        async move { nodes.get("old-web").await.ok()?.status?.applied_resource_refs.filter(|r| r.len() == 3).map(|_| ()) }
    })
    .await;
    assert_eq!(uids(&s).await, before, "adoption deleted, recreated or rewrote an object");
}

/// ignoreFields keeps the live value (e.g. replicas set by an autoscaler) while the rest of the
/// template keeps being applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_fields_keep_live_values_across_template_changes() {
    let s = Scenario::start("node-ignore").await;
    let deployment = |image: &str| {
        let mut r = resource(
            "app",
            &[],
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "{{ .uid }}-app"},
                   "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "x"}},
                            "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "app", "image": image}]}}}}),
        );
        r.ignore_fields = Some(vec!["$.spec.replicas".into()]);
        r.wait_for_ready = Some(false);
        ResourceLists { deployments: Some(vec![r]), ..Default::default() }
    };
    s.create_node("scaled-web", "scaled", deployment("nginx:1.26"), json!({})).await;
    let _: Deployment = s.wait_for("scaled-app").await;
    support::kubectl(&["scale", "deployment/scaled-app", "-n", &s.ns, "--replicas=5"]);

    let nodes = s.api::<LynqNode>();
    let patch = json!({"spec": {"deployments": deployment("nginx:1.27").deployments}});
    nodes.patch("scaled-web", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("change the template");
    let deployments = s.api::<Deployment>();
    let live = support::eventually("the new image applied", WAIT, || {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get("scaled-app").await.ok()?;
            let image = d.spec.template.spec.as_ref()?.containers.first()?.image.clone()?;
            (image == "nginx:1.27").then_some(d)
        }
    })
    .await;
    assert_eq!(live.spec.replicas, Some(5), "the ignored field kept its live value");
}
