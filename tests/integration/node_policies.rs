//! The LynqNode controller's policies against the real apiserver (behaviour reference §2.4–§2.10,
//! §4, §2.16): conflicts, drift, patch strategies, creationPolicy Once, cross-namespace objects,
//! orphans, dependency failures, readiness (timeouts, Jobs, waitForReady, custom resources),
//! concurrent branches, and the offline `lynq render`.
//!
//! Nodes are created directly (no hub) and readiness is simulated by writing status, as in `node.rs`.

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        batch::v1::Job,
        core::v1::{ConfigMap, Namespace},
        events::v1::Event,
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    apimachinery::pkg::apis::meta::v1::Condition,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams},
    core::GroupVersionKind,
    discovery::ApiResource,
};
use lynq::api::{ConflictPolicy, CreationPolicy, DeletionPolicy, LynqNode, PatchStrategy, ResourceLists, TResource};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    node::{Scenario, WAIT, make_deployment_ready, resource},
    support,
};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A ConfigMap resource named `name` (a template) with `data`.
fn config_map(id: &str, depend: &[&str], name: &str, data: Value) -> TResource {
    resource(id, depend, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}))
}

/// A single-replica Deployment resource named `name`; nothing makes it ready unless the test does.
fn deployment(id: &str, depend: &[&str], name: &str) -> TResource {
    resource(
        id,
        depend,
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                        "template": {"metadata": {"labels": {"app": name}},
                                     "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}}}}),
    )
}

fn config_maps(list: Vec<TResource>) -> ResourceLists {
    ResourceLists { config_maps: Some(list), ..Default::default() }
}

fn data<'a>(cm: &'a ConfigMap, key: &str) -> Option<&'a str> {
    cm.data.as_ref().and_then(|d| d.get(key)).map(String::as_str)
}

fn condition<'a>(node: &'a LynqNode, type_: &str) -> Option<&'a Condition> {
    node.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

/// `(status, reason)` of the node's condition `type_`, for assertions.
fn condition_of(node: &LynqNode, type_: &str) -> Option<(String, String)> {
    condition(node, type_).map(|c| (c.status.clone(), c.reason.clone()))
}

/// Waits until `check` accepts the node, returning it.
async fn wait_node(s: &Scenario, name: &str, what: &str, check: impl Fn(&LynqNode) -> bool) -> LynqNode {
    let api = s.api::<LynqNode>();
    let check = &check;
    support::eventually(&format!("node {name}: {what}"), WAIT, || {
        let api = api.clone();
        async move { api.get(name).await.ok().filter(|n| check(n)) }
    })
    .await
}

/// Waits until the node's condition `type_` has `status` and `reason`.
async fn wait_condition(s: &Scenario, name: &str, type_: &str, status: &str, reason: &str) -> LynqNode {
    wait_node(s, name, &format!("{type_}={status} ({reason})"), |n| {
        condition_of(n, type_) == Some((status.into(), reason.into()))
    })
    .await
}

/// Waits until a full pass over `generation` of the node has been published.
async fn wait_reconciled(s: &Scenario, name: &str, generation: Option<i64>) -> LynqNode {
    wait_node(s, name, &format!("observedGeneration {generation:?}"), |n| {
        n.status.as_ref().and_then(|st| st.observed_generation) >= generation
    })
    .await
}

/// Waits until a pass published `ready` of `desired` ready resources.
async fn wait_counts(s: &Scenario, name: &str, ready: i32, desired: i32) -> LynqNode {
    wait_node(s, name, &format!("{ready}/{desired} resources ready"), |n| {
        n.status.as_ref().is_some_and(|st| st.ready_resources == Some(ready) && st.desired_resources == Some(desired))
    })
    .await
}

/// Replaces the node's resource lists (retrying on write conflicts with the controller); returns the
/// node's new generation.
async fn set_resources(s: &Scenario, name: &str, resources: ResourceLists) -> Option<i64> {
    let api = s.api::<LynqNode>();
    let resources = &resources;
    support::eventually(&format!("node {name} spec replaced"), WAIT, || {
        let api = api.clone();
        async move {
            let mut node = api.get(name).await.ok()?;
            node.spec.resources = resources.clone();
            match api.replace(name, &PostParams::default(), &node).await {
                Ok(updated) => Some(updated.metadata.generation),
                Err(kube::Error::Api(e)) if e.code == 409 => None,
                Err(e) => panic!("replacing node {name}: {e}"),
            }
        }
    })
    .await
}

/// Waits for an event with `reason` about the node `name`, returning it.
async fn wait_event(s: &Scenario, node: &str, reason: &str) -> Event {
    let api = s.api::<Event>();
    support::eventually(&format!("event {reason} on node {node}"), WAIT, || {
        let api = api.clone();
        async move {
            let events = api.list(&Default::default()).await.ok()?;
            events.items.into_iter().find(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().is_some_and(|r| r.name.as_deref() == Some(node))
            })
        }
    })
    .await
}

/// Waits until the ConfigMap `name` satisfies `check`.
async fn wait_config_map(s: &Scenario, name: &str, what: &str, check: impl Fn(&ConfigMap) -> bool) -> ConfigMap {
    let api = s.api::<ConfigMap>();
    let check = &check;
    support::eventually(&format!("ConfigMap {name}: {what}"), WAIT, || {
        let api = api.clone();
        async move { api.get_opt(name).await.ok().flatten().filter(|cm| check(cm)) }
    })
    .await
}

fn kubectl_merge_patch(ns: &str, kind: &str, name: &str, patch: Value) {
    support::kubectl(&["-n", ns, "patch", kind, name, "--type", "merge", "-p", &patch.to_string()]);
}

fn label<'a>(obj: &'a impl ResourceExt, key: &str) -> Option<&'a str> {
    obj.labels().get(key).map(String::as_str)
}

fn annotation<'a>(obj: &'a impl ResourceExt, key: &str) -> Option<&'a str> {
    obj.annotations().get(key).map(String::as_str)
}

// ---------------------------------------------------------------------------------------------
// 1. conflictPolicy
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_policy_stuck_reports_and_force_takes_over() {
    let s = Scenario::start("pol-conflict").await;
    let cms = s.api::<ConfigMap>();
    // Both ConfigMaps pre-exist, written by server-side apply under another field manager.
    for name in ["stuck-config", "force-config"] {
        let theirs =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"plan": "theirs"}});
        cms.patch(name, &PatchParams::apply("other-manager"), &Patch::Apply(&theirs)).await.expect("pre-existing cm");
    }

    let stuck = config_map("config", &[], "{{ .uid }}-config", json!({"plan": "mine"}));
    s.create_node("stuck-web", "stuck", config_maps(vec![stuck.clone()]), json!({})).await;
    let force = TResource { conflict_policy: Some(ConflictPolicy::Force), ..stuck };
    s.create_node("force-web", "force", config_maps(vec![force]), json!({})).await;

    // Stuck: reported, object untouched.
    let node = wait_condition(&s, "stuck-web", "Conflicted", "True", "ResourceConflict").await;
    // A conflict counts as failed and conflicted, as in Lynq.
    assert_eq!(condition_of(&node, "Degraded"), Some(("True".into(), "ResourceFailuresAndConflicts".into())));
    assert_eq!(condition_of(&node, "Ready"), Some(("False".into(), "ResourcesFailedAndConflicted".into())));
    assert_eq!(node.status.as_ref().and_then(|st| st.failed_resources), Some(1));
    let event = wait_event(&s, "stuck-web", "ResourceConflict").await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert!(event.note.as_deref().is_some_and(|n| n.contains("other-manager")), "{:?}", event.note);
    let cm = cms.get("stuck-config").await.expect("stuck cm");
    assert_eq!(data(&cm, "plan"), Some("theirs"), "Stuck must not overwrite another manager's value");
    assert!(cm.owner_references().is_empty(), "Stuck must not write anything to the object");
    assert!(annotation(&cm, "lynq.sh/applied-hash").is_none());

    // Force: the value and the field are taken over.
    let node = s.node_ready("force-web", "True").await;
    assert_eq!(condition_of(&node, "Conflicted"), Some(("False".into(), "NoConflict".into())));
    let cm = cms.get("force-config").await.expect("force cm");
    assert_eq!(data(&cm, "plan"), Some("mine"));
    assert_eq!(cm.owner_references().first().map(|o| o.name.as_str()), Some("force-web"));
    let owners: Vec<&str> = cm
        .managed_fields()
        .iter()
        .filter(|m| m.fields_v1.as_ref().is_some_and(|f| f.0.pointer("/f:data/f:plan").is_some()))
        .filter_map(|m| m.manager.as_deref())
        .collect();
    assert_eq!(owners, vec!["lynq-operator"], "Force takes sole ownership of data.plan");
}

// ---------------------------------------------------------------------------------------------
// 2. Drift
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_put_back_with_force_and_reported_as_conflict_with_stuck() {
    let s = Scenario::start("pol-drift").await;
    let forced = TResource {
        conflict_policy: Some(ConflictPolicy::Force),
        ..config_map("forced", &[], "{{ .uid }}-forced", json!({"k": "v"}))
    };
    let stuck = config_map("stuck", &[], "{{ .uid }}-stuck", json!({"k": "v"}));
    s.create_node("drift-web", "drift", config_maps(vec![forced, stuck]), json!({})).await;
    s.node_ready("drift-web", "True").await;

    // Force: an edit by another manager (kubectl patch) to a managed field is restored by the watch.
    kubectl_merge_patch(&s.ns, "configmap", "drift-forced", json!({"data": {"k": "edited"}}));
    wait_config_map(&s, "drift-forced", "k restored to v", |cm| data(cm, "k") == Some("v")).await;

    // Stuck (default): the same edit makes kubectl-patch the owner of data.k, so re-applying is a
    // field conflict: reported, and the edit stays.
    kubectl_merge_patch(&s.ns, "configmap", "drift-stuck", json!({"data": {"k": "edited"}}));
    wait_condition(&s, "drift-web", "Conflicted", "True", "ResourceConflict").await;
    let event = wait_event(&s, "drift-web", "ResourceConflict").await;
    assert!(event.note.as_deref().is_some_and(|n| n.contains("kubectl-patch")), "{:?}", event.note);
    let cm = s.api::<ConfigMap>().get("drift-stuck").await.expect("stuck cm");
    assert_eq!(data(&cm, "k"), Some("edited"), "Stuck must not take the field back");
    let cm = s.api::<ConfigMap>().get("drift-forced").await.expect("forced cm");
    assert_eq!(data(&cm, "k"), Some("v"));
}

// ---------------------------------------------------------------------------------------------
// 3. patchStrategy
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_strategy_merge_keeps_foreign_fields_and_replace_drops_them() {
    let s = Scenario::start("pol-patch").await;
    let lists = |value: &str| {
        config_maps(vec![
            TResource {
                patch_strategy: Some(PatchStrategy::Merge),
                ..config_map("merged", &[], "{{ .uid }}-merged", json!({"a": value}))
            },
            TResource {
                patch_strategy: Some(PatchStrategy::Replace),
                ..config_map("replaced", &[], "{{ .uid }}-replaced", json!({"a": value}))
            },
        ])
    };
    s.create_node("patch-web", "patch", lists("1"), json!({})).await;
    s.node_ready("patch-web", "True").await;
    for name in ["patch-merged", "patch-replaced"] {
        kubectl_merge_patch(&s.ns, "configmap", name, json!({"data": {"extra": "x"}}));
    }

    let generation = set_resources(&s, "patch-web", lists("2")).await;
    wait_reconciled(&s, "patch-web", generation).await;
    let merged = wait_config_map(&s, "patch-merged", "a=2", |cm| data(cm, "a") == Some("2")).await;
    assert_eq!(data(&merged, "extra"), Some("x"), "merge keeps fields set by others");
    let replaced = wait_config_map(&s, "patch-replaced", "a=2", |cm| data(cm, "a") == Some("2")).await;
    assert_eq!(data(&replaced, "extra"), None, "replace removes fields not in the template");
    s.node_ready("patch-web", "True").await;
}

// ---------------------------------------------------------------------------------------------
// 4. creationPolicy Once
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creation_policy_once_creates_never_updates_and_recreates() {
    let s = Scenario::start("pol-once").await;
    let once = |value: &str| {
        config_maps(vec![TResource {
            creation_policy: Some(CreationPolicy::Once),
            ..config_map("once", &[], "{{ .uid }}-once", json!({"v": value}))
        }])
    };
    s.create_node("once-web", "once", once("1"), json!({})).await;
    s.node_ready("once-web", "True").await;
    let cms = s.api::<ConfigMap>();
    let created = cms.get("once-once").await.expect("created");
    assert_eq!(annotation(&created, "lynq.sh/created-once"), Some("true"));
    assert_eq!(data(&created, "v"), Some("1"));

    // A template change reaches the node (its new generation is reconciled) but not the object.
    let generation = set_resources(&s, "once-web", once("2")).await;
    let node = wait_reconciled(&s, "once-web", generation).await;
    assert_eq!(condition_of(&node, "Ready").map(|c| c.0), Some("True".into()), "a kept Once object counts as ready");
    let kept = cms.get("once-once").await.expect("still there");
    assert_eq!(data(&kept, "v"), Some("1"), "Once objects are never updated");
    assert_eq!(kept.resource_version(), created.resource_version(), "Once objects are never written again");

    // Deleted ⇒ re-created, from the current template.
    cms.delete("once-once", &DeleteParams::default()).await.expect("delete");
    let recreated = wait_config_map(&s, "once-once", "re-created", |cm| cm.uid() != created.uid()).await;
    assert_eq!(data(&recreated, "v"), Some("2"));
    assert_eq!(annotation(&recreated, "lynq.sh/created-once"), Some("true"));
}

// ---------------------------------------------------------------------------------------------
// 5. Cross-namespace
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_namespace_objects_are_label_tracked_and_deleted_with_the_node() {
    let s = Scenario::start("pol-cross").await;
    let uid = format!("x{}", support::unique_suffix());
    let remote_ns = format!("{uid}-ns");
    let remote = TResource {
        target_namespace: Some("{{ .uid }}-ns".into()),
        ..config_map("remote", &["ns"], "{{ .uid }}-remote", json!({"a": "b"}))
    };
    let lists = ResourceLists {
        namespaces: Some(vec![resource(
            "ns",
            &[],
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "{{ .uid }}-ns"}}),
        )]),
        config_maps: Some(vec![remote]),
        ..Default::default()
    };
    s.create_node("cross-web", &uid, lists, json!({})).await;
    let node = s.node_ready("cross-web", "True").await;
    let keys = node.status.and_then(|st| st.applied_resources).expect("applied keys");
    let key = format!("ConfigMap/{remote_ns}/{uid}-remote@remote");
    assert!(keys.contains(&key), "{key} (rendered targetNamespace) missing from {keys:?}");

    let namespace = Api::<Namespace>::all(s.client.clone()).get(&remote_ns).await.expect("namespace created");
    let remote_cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), &remote_ns);
    let cm = remote_cms.get(&format!("{uid}-remote")).await.expect("cross-namespace cm");
    for (what, labels, owners) in [
        ("Namespace", namespace.labels(), namespace.owner_references()),
        ("cross-namespace ConfigMap", cm.labels(), cm.owner_references()),
    ] {
        assert_eq!(labels.get("lynq.sh/node").map(String::as_str), Some("cross-web"), "{what}");
        assert_eq!(labels.get("lynq.sh/node-namespace"), Some(&s.ns), "{what}");
        assert!(owners.is_empty(), "{what} must be label-tracked, not owned");
    }

    // Delete policy: node deletion deletes the cross-namespace object (no GC can) and the Namespace.
    s.api::<LynqNode>().delete("cross-web", &DeleteParams::default()).await.expect("delete node");
    s.wait_gone::<LynqNode>("cross-web").await;
    let gone = remote_cms.get_opt(&format!("{uid}-remote")).await.expect("get");
    assert!(gone.is_none_or(|cm| cm.metadata.deletion_timestamp.is_some()), "cross-namespace cm was not deleted");
    let namespaces = Api::<Namespace>::all(s.client.clone());
    let ns = namespaces.get_opt(&remote_ns).await.expect("get namespace");
    assert!(ns.is_none_or(|n| n.metadata.deletion_timestamp.is_some()), "namespace {remote_ns} was not deleted");
}

// ---------------------------------------------------------------------------------------------
// 6. Orphans
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_resources_are_deleted_or_orphaned_and_readopted_and_renames_replace() {
    let s = Scenario::start("pol-orphan").await;
    let deleted = config_map("deleted", &[], "{{ .uid }}-deleted", json!({"a": "b"}));
    let retained = TResource {
        deletion_policy: Some(DeletionPolicy::Retain),
        ..config_map("retained", &[], "{{ .uid }}-retained", json!({"a": "b"}))
    };
    let renamed = |name: &str| TResource {
        name_template: Some(name.into()),
        ..config_map("renamed", &[], "unused", json!({"a": "b"}))
    };
    let all = vec![deleted, retained.clone(), renamed("orph-name-a")];
    s.create_node("orph-web", "orph", config_maps(all), json!({})).await;
    s.node_ready("orph-web", "True").await;
    let cms = s.api::<ConfigMap>();
    let kept = cms.get("orph-retained").await.expect("retained cm");
    assert_eq!(label(&kept, "lynq.sh/node"), Some("orph-web"));

    // Remove `deleted` and `retained`, rename `renamed`.
    set_resources(&s, "orph-web", config_maps(vec![renamed("orph-name-b")])).await;
    s.wait_gone::<ConfigMap>("orph-deleted").await;
    s.wait_gone::<ConfigMap>("orph-name-a").await;
    let _: ConfigMap = s.wait_for("orph-name-b").await;
    let orphan =
        wait_config_map(&s, "orph-retained", "orphan-marked", |cm| label(cm, "lynq.sh/orphaned").is_some()).await;
    assert_eq!(label(&orphan, "lynq.sh/orphaned"), Some("true"));
    assert_eq!(annotation(&orphan, "lynq.sh/orphaned-reason"), Some("RemovedFromTemplate"));
    assert!(annotation(&orphan, "lynq.sh/orphaned-at").is_some_and(|t| !t.is_empty()));
    assert!(label(&orphan, "lynq.sh/node").is_none(), "tracking labels are removed from orphans");
    wait_event(&s, "orph-web", "OrphanedResourceRetained").await;
    wait_event(&s, "orph-web", "OrphanedResourceDeleted").await;

    // Adding it back re-adopts it: markers removed, tracking back.
    set_resources(&s, "orph-web", config_maps(vec![renamed("orph-name-b"), retained])).await;
    let adopted = wait_config_map(&s, "orph-retained", "re-adopted", |cm| label(cm, "lynq.sh/node").is_some()).await;
    assert_eq!(label(&adopted, "lynq.sh/node"), Some("orph-web"));
    assert!(label(&adopted, "lynq.sh/orphaned").is_none());
    assert!(annotation(&adopted, "lynq.sh/orphaned-at").is_none());
    assert!(annotation(&adopted, "lynq.sh/orphaned-reason").is_none());
    s.node_ready("orph-web", "True").await;
}

// ---------------------------------------------------------------------------------------------
// 7. skipOnDependencyFailure: false
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_on_dependency_failure_false_applies_anyway_and_unblocks_its_dependents() {
    let s = Scenario::start("pol-skip").await;
    let lists = config_maps(vec![
        config_map("a", &[], "{{ .uid }}-a", json!({"x": "{{ .missing }}"})),
        TResource { skip_on_dependency_failure: Some(false), ..config_map("b", &["a"], "{{ .uid }}-b", json!({})) },
        config_map("c", &["b"], "{{ .uid }}-c", json!({})),
        config_map("d", &["a"], "{{ .uid }}-d", json!({})),
    ]);
    s.create_node("skip-web", "skip", lists, json!({})).await;
    let _: ConfigMap = s.wait_for("skip-b").await;
    let _: ConfigMap = s.wait_for("skip-c").await;
    let event = wait_event(&s, "skip-web", "DependencyFailedButProceeding").await;
    assert!(event.note.as_deref().is_some_and(|n| n.contains("'a'") && n.contains("'b'")), "{:?}", event.note);
    wait_event(&s, "skip-web", "DependencySkipped").await;

    let node = wait_condition(&s, "skip-web", "Ready", "False", "ResourcesFailed").await;
    let status = node.status.expect("status");
    assert_eq!(
        (status.ready_resources, status.failed_resources, status.skipped_resources),
        (Some(2), Some(1), Some(1))
    );
    assert_eq!(status.skipped_resource_ids, Some(vec!["d".to_string()]));
    let cms = s.api::<ConfigMap>();
    assert!(cms.get_opt("skip-a").await.expect("get").is_none());
    assert!(cms.get_opt("skip-d").await.expect("get").is_none(), "d (skipOnDependencyFailure default) was applied");
}

// ---------------------------------------------------------------------------------------------
// 8. Readiness timeout
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_timeout_fails_the_resource_and_readiness_recovers_it() {
    let s = Scenario::start("pol-timeout").await;
    let app = TResource { timeout_seconds: Some(2), ..deployment("app", &[], "{{ .uid }}-app") };
    let lists = ResourceLists { deployments: Some(vec![app]), ..Default::default() };
    s.create_node("slow-web", "slow", lists, json!({})).await;

    let node = wait_condition(&s, "slow-web", "Ready", "False", "ResourcesFailed").await;
    assert_eq!(node.status.as_ref().and_then(|st| st.failed_resources), Some(1));
    let event = wait_event(&s, "slow-web", "ReadinessTimeout").await;
    assert!(event.note.as_deref().is_some_and(|n| n.contains("'app'")), "{:?}", event.note);
    assert_eq!(condition_of(&node, "Degraded").map(|c| c.0), Some("True".into()));

    make_deployment_ready(&s.api(), "slow-app").await;
    let node = s.node_ready("slow-web", "True").await;
    let status = node.status.expect("status");
    assert_eq!((status.ready_resources, status.failed_resources), (Some(1), Some(0)));
}

// ---------------------------------------------------------------------------------------------
// 9. Job readiness and waitForReady: false
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_is_ready_when_complete_and_wait_for_ready_false_counts_at_once() {
    let s = Scenario::start("pol-job").await;
    let job = resource(
        "job",
        &[],
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "{{ .uid }}-job"},
               "spec": {"template": {"spec": {"restartPolicy": "Never",
                                               "containers": [{"name": "run", "image": "busybox:1.36"}]}}}}),
    );
    let nowait = TResource { wait_for_ready: Some(false), ..deployment("nowait", &[], "{{ .uid }}-nowait") };
    let lists = ResourceLists {
        jobs: Some(vec![job]),
        deployments: Some(vec![nowait]),
        config_maps: Some(vec![
            config_map("after-job", &["job"], "{{ .uid }}-after-job", json!({})),
            config_map("after-nowait", &["nowait"], "{{ .uid }}-after-nowait", json!({})),
        ]),
        ..Default::default()
    };
    s.create_node("job-web", "job", lists, json!({})).await;

    // The never-ready Deployment counts as ready at once and unblocks its dependent; the Job does not.
    let node = wait_counts(&s, "job-web", 2, 4).await;
    assert_eq!(condition_of(&node, "Ready"), Some(("False".into(), "NotAllResourcesReady".into())));
    let _: ConfigMap = s.wait_for("job-after-nowait").await;
    assert!(s.api::<ConfigMap>().get_opt("job-after-job").await.expect("get").is_none(), "Job was not complete");

    let complete = json!({"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}});
    s.api::<Job>()
        .patch_status("job-job", &PatchParams::default(), &Patch::Merge(&complete))
        .await
        .expect("job status");
    let _: ConfigMap = s.wait_for("job-after-job").await;
    let node = s.node_ready("job-web", "True").await;
    assert_eq!(node.status.and_then(|st| st.ready_resources), Some(4));
}

// ---------------------------------------------------------------------------------------------
// 10. Independent branches
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_branch_does_not_hold_back_an_independent_one() {
    let s = Scenario::start("pol-branch").await;
    let lists = ResourceLists {
        deployments: Some(vec![deployment("a", &[], "{{ .uid }}-a")]),
        config_maps: Some(vec![
            config_map("b", &["a"], "{{ .uid }}-b", json!({})),
            config_map("c", &[], "{{ .uid }}-c", json!({})),
            config_map("d", &["c"], "{{ .uid }}-d", json!({})),
        ]),
        ..Default::default()
    };
    s.create_node("branch-web", "branch", lists, json!({})).await;
    let _: ConfigMap = s.wait_for("branch-d").await;
    let node = wait_counts(&s, "branch-web", 2, 4).await;
    assert_eq!(condition_of(&node, "Ready"), Some(("False".into(), "NotAllResourcesReady".into())));
    let a: Deployment = s.api().get("branch-a").await.expect("a");
    assert!(a.status.is_none_or(|st| st.ready_replicas.unwrap_or(0) == 0), "a must still be not ready");
    assert!(s.api::<ConfigMap>().get_opt("branch-b").await.expect("get").is_none(), "b applied before a was ready");

    make_deployment_ready(&s.api(), "branch-a").await;
    let _: ConfigMap = s.wait_for("branch-b").await;
    s.node_ready("branch-web", "True").await;
}

// ---------------------------------------------------------------------------------------------
// 11. Custom resources in `manifests`
// ---------------------------------------------------------------------------------------------

const WIDGET_CRD: &str = "widgets.test.lynq.sh";

/// Installs the namespaced `Widget` CRD (with a status subresource) and waits until discovery serves it.
async fn install_widget_crd(client: &kube::Client) -> ApiResource {
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": WIDGET_CRD},
        "spec": {"group": "test.lynq.sh", "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
                 "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                               "schema": {"openAPIV3Schema": {"type": "object",
                                                              "x-kubernetes-preserve-unknown-fields": true}}}]}
    });
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(WIDGET_CRD, &PatchParams::apply("lynq-tests").force(), &Patch::Apply(&crd)).await.expect("apply crd");
    let gvk = GroupVersionKind::gvk("test.lynq.sh", "v1", "Widget");
    support::eventually("Widget served by discovery", WAIT, || {
        let client = client.clone();
        let gvk = gvk.clone();
        async move { kube::discovery::pinned_kind(&client, &gvk).await.ok().map(|(r, _)| r) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_resources_are_applied_gated_on_ready_and_deleted_when_removed() {
    let s = Scenario::start("pol-cr").await;
    let widget_resource = install_widget_crd(&s.client).await;
    let widgets: Api<DynamicObject> = Api::namespaced_with(s.client.clone(), &s.ns, &widget_resource);
    let keep = config_map("keep", &[], "{{ .uid }}-keep", json!({}));
    let with_widget = ResourceLists {
        manifests: Some(vec![resource(
            "widget",
            &[],
            json!({"apiVersion": "test.lynq.sh/v1", "kind": "Widget", "metadata": {"name": "{{ .uid }}-widget"},
                   "spec": {"size": "{{ .size }}"}}),
        )]),
        config_maps: Some(vec![keep.clone()]),
        ..Default::default()
    };
    s.create_node("cr-web", "cr", with_widget, json!({"size": "3"})).await;

    // No conditions yet ⇒ ready.
    let node = s.node_ready("cr-web", "True").await;
    let keys = node.status.and_then(|st| st.applied_resources).expect("keys");
    assert!(keys.contains(&format!("Widget/{}/cr-widget@widget", s.ns)), "{keys:?}");
    let widget = widgets.get("cr-widget").await.expect("widget applied");
    assert_eq!(widget.data.pointer("/spec/size"), Some(&json!("3")));
    assert_eq!(widget.owner_references().first().map(|o| o.name.as_str()), Some("cr-web"));

    // Readiness follows the Ready condition.
    let set_ready = |status: &'static str| {
        let widgets = widgets.clone();
        async move {
            let patch = json!({"status": {"conditions": [{"type": "Ready", "status": status}]}});
            widgets.patch_status("cr-widget", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("status");
        }
    };
    set_ready("False").await;
    wait_condition(&s, "cr-web", "Ready", "False", "NotAllResourcesReady").await;
    set_ready("True").await;
    s.node_ready("cr-web", "True").await;

    // Removed from the spec ⇒ deleted.
    set_resources(&s, "cr-web", config_maps(vec![keep])).await;
    support::eventually("widget deleted", WAIT, || {
        let widgets = widgets.clone();
        async move {
            match widgets.get_opt("cr-widget").await {
                Ok(None) => Some(()),
                Ok(Some(w)) if w.metadata.deletion_timestamp.is_some() => Some(()),
                _ => None,
            }
        }
    })
    .await;
    // The node was Ready before the change too: wait for the status of the pass that removed it.
    let nodes: Api<LynqNode> = Api::namespaced(s.client.clone(), &s.ns);
    support::eventually("the Widget gone from appliedResources", WAIT, || {
        let nodes = nodes.clone();
        async move {
            let keys = nodes.get("cr-web").await.ok()?.status?.applied_resources?;
            (!keys.iter().any(|k| k.starts_with("Widget/")) && keys.iter().any(|k| k.starts_with("ConfigMap/")))
                .then_some(())
        }
    })
    .await;
    s.node_ready("cr-web", "True").await;
}

// ---------------------------------------------------------------------------------------------
// 12. lynq render
// ---------------------------------------------------------------------------------------------

#[test]
fn render_prints_the_seed_form_in_apply_order() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lynq"))
        .args(["render", "--form"])
        .arg(support::fixture("seed/lynqform.yaml"))
        .args(["--values", r#"{"uid":"acme","planId":"pro"}"#])
        .output()
        .expect("run lynq render");
    assert!(out.status.success(), "lynq render failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("YAML document"))
        .filter(|v: &Value| !v.is_null())
        .collect();
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds, vec!["Deployment", "Service"], "{text}");
    let deployment = &docs[0];
    assert_eq!(deployment["metadata"]["name"], "acme-app");
    assert_eq!(deployment["metadata"]["labels"]["app"], "acme");
    assert_eq!(deployment["metadata"]["labels"]["plan"], "pro");
    assert_eq!(deployment["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:latest");
    assert_eq!(docs[1]["metadata"]["name"], "acme-svc");
}
