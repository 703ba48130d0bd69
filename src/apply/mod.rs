//! Writing rendered objects to the API server: kind discovery, server-side apply / merge / replace,
//! the no-write-when-unchanged decision, deletion and orphan marking.
//!
//! The decisions are pure functions ([`write_decision`], [`stamp_tracking_annotations`],
//! [`contains`]); [`Applier`] is the thin layer that talks to the API.

pub mod hash;
pub mod ignore_fields;
pub mod keys;

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use kube::{
    Api, Client,
    api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams},
    core::GroupVersionKind,
    discovery::{ApiResource, Scope},
};
use serde_json::Value;

/// Field manager of every write, shared with Lynq so that objects Lynq applied are adopted in place.
pub const FIELD_MANAGER: &str = "lynq-operator";
/// Annotation: hash of the desired object last written.
pub const ANN_APPLIED_HASH: &str = "lynq.sh/applied-hash";
/// Annotation: when the desired object last changed (readiness-timeout clock).
pub const ANN_APPLY_START: &str = "lynq.sh/apply-start-time";
/// Annotation: the deletion policy the object was applied with.
pub const ANN_DELETION_POLICY: &str = "lynq.sh/deletion-policy";
/// Annotation: `creationPolicy: Once` marker.
pub const ANN_CREATED_ONCE: &str = "lynq.sh/created-once";
/// Label: name of the tracking LynqNode.
pub const LABEL_NODE: &str = "lynq.sh/node";
/// Label: namespace of the tracking LynqNode.
pub const LABEL_NODE_NAMESPACE: &str = "lynq.sh/node-namespace";

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The apiVersion/kind is not served by the cluster.
    #[error("kind {kind} in {api_version} is not served by the API server")]
    UnknownKind { api_version: String, kind: String },
    /// Server-side apply found fields owned by another manager with other values (conflictPolicy Stuck).
    #[error("{kind} {name}: field conflict with another manager: {message}")]
    Conflict { kind: String, name: String, message: String },
    /// Any other API error.
    #[error("{verb} {kind} {name}: {source}")]
    Api { verb: &'static str, kind: String, name: String, source: Box<kube::Error> },
    /// The object could not be converted for the API.
    #[error("{kind} {name}: invalid object: {message}")]
    Invalid { kind: String, name: String, message: String },
}

/// A kind the API server serves, with its scope.
#[derive(Clone, Debug)]
pub struct ResolvedKind {
    /// Group, version, plural, kind.
    pub resource: ApiResource,
    /// True for namespaced kinds.
    pub namespaced: bool,
}

/// How an object is written (the TResource's patchStrategy and conflictPolicy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// Server-side apply; `force` takes ownership of conflicting fields.
    Apply { force: bool },
    /// Create, or JSON merge patch.
    Merge,
    /// Create, or full update with the live resourceVersion.
    Replace,
}

/// What the write decision concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteDecision {
    /// The live object already has what we want: no API call.
    Skip,
    /// Write it.
    Write,
}

/// Decides whether `desired` must be written over `live`.
///
/// Skips only when the live object carries the same applied hash *and* still holds every field we
/// want (so an edit by someone else to a field lynq manages is put back, while an object nobody
/// touched is never written again).
pub fn write_decision(desired: &Value, desired_hash: &str, live: Option<&Value>, force: bool) -> WriteDecision {
    let Some(live) = live else { return WriteDecision::Write };
    let live_hash = live.pointer("/metadata/annotations").and_then(|a| a.get(ANN_APPLIED_HASH)).and_then(Value::as_str);
    if !force && live_hash == Some(desired_hash) && contains(desired, live) {
        WriteDecision::Skip
    } else {
        WriteDecision::Write
    }
}

/// Sets the applied-hash annotation, and the apply-start-time annotation: now when the desired
/// object changed, else the live value (so the readiness-timeout clock keeps running).
pub fn stamp_tracking_annotations(desired: &mut Value, desired_hash: &str, live: Option<&Value>, now: &str) {
    let live_annotations = live.and_then(|l| l.pointer("/metadata/annotations"));
    let unchanged =
        live_annotations.and_then(|a| a.get(ANN_APPLIED_HASH)).and_then(Value::as_str) == Some(desired_hash);
    let start = live_annotations
        .and_then(|a| a.get(ANN_APPLY_START))
        .and_then(Value::as_str)
        .filter(|_| unchanged)
        .unwrap_or(now)
        .to_string();
    let annotations = annotations_mut(desired);
    annotations.insert(ANN_APPLIED_HASH.into(), Value::String(desired_hash.into()));
    annotations.insert(ANN_APPLY_START.into(), Value::String(start));
}

/// The object's `metadata.annotations` map, created when absent.
pub fn annotations_mut(obj: &mut Value) -> &mut serde_json::Map<String, Value> {
    map_at(obj, &["metadata", "annotations"])
}

/// The object's `metadata.labels` map, created when absent.
pub fn labels_mut(obj: &mut Value) -> &mut serde_json::Map<String, Value> {
    map_at(obj, &["metadata", "labels"])
}

/// The map at `path`, replacing anything that is not a map on the way.
fn map_at<'a>(obj: &'a mut Value, path: &[&str]) -> &'a mut serde_json::Map<String, Value> {
    let mut current = obj;
    for key in path {
        if !current.is_object() {
            *current = Value::Object(serde_json::Map::new());
        }
        current = match current {
            Value::Object(map) => {
                map.entry((*key).to_string()).or_insert_with(|| Value::Object(serde_json::Map::new()))
            }
            // Just made an object above.
            _ => unreachable!("current was set to an object"),
        };
    }
    if !current.is_object() {
        *current = Value::Object(serde_json::Map::new());
    }
    match current {
        Value::Object(map) => map,
        _ => unreachable!("current was set to an object"),
    }
}

/// Fills in `protocol: TCP` where server-side apply needs it as a list-map key: Service ports and
/// container ports (pod templates of workloads, CronJob's nested one). Kubernetes before 1.24 rejects
/// an apply that omits it ("associative list with keys has an element that omits key field
/// protocol"); TCP is what the API server defaults it to anyway, so the object means the same.
pub fn fill_ssa_list_keys(obj: &mut Value) {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
    let pod_spec = match kind.as_str() {
        "Service" => None,
        "Pod" => Some("/spec"),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => Some("/spec/template/spec"),
        "CronJob" => Some("/spec/jobTemplate/spec/template/spec"),
        _ => return,
    };
    let mut port_lists: Vec<String> = Vec::new();
    match pod_spec {
        None => port_lists.push("/spec/ports".into()),
        Some(spec) => {
            for containers in ["containers", "initContainers"] {
                let count = obj.pointer(&format!("{spec}/{containers}")).and_then(Value::as_array).map_or(0, Vec::len);
                port_lists.extend((0..count).map(|i| format!("{spec}/{containers}/{i}/ports")));
            }
        }
    }
    for pointer in port_lists {
        if let Some(Value::Array(ports)) = obj.pointer_mut(&pointer) {
            for port in ports.iter_mut().filter_map(Value::as_object_mut) {
                port.entry("protocol").or_insert_with(|| Value::String("TCP".into()));
            }
        }
    }
}

/// True when every field of `want` is present in `have` with an equal value (lists must have the
/// same length and each item must be contained in its counterpart).
pub fn contains(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w.iter().all(|(k, v)| h.get(k).is_some_and(|hv| contains(v, hv))),
        (Value::Array(w), Value::Array(h)) => w.len() == h.len() && w.iter().zip(h).all(|(a, b)| contains(a, b)),
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => want == have,
    }
}

/// Talks to the API server for the apply engine; cheap to clone.
#[derive(Clone)]
pub struct Applier {
    client: Client,
    kinds: Arc<RwLock<HashMap<(String, String), ResolvedKind>>>,
}

impl Applier {
    /// A new applier with an empty discovery cache.
    pub fn new(client: Client) -> Self {
        Self { client, kinds: Arc::default() }
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Resolves apiVersion/kind to a served resource (cached; a miss asks the API server again, so
    /// CRDs installed later are found).
    pub async fn resolve(&self, api_version: &str, kind: &str) -> Result<ResolvedKind, ApplyError> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some(found) = self.kinds.read().ok().and_then(|k| k.get(&key).cloned()) {
            return Ok(found);
        }
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let unknown = || ApplyError::UnknownKind { api_version: api_version.into(), kind: kind.into() };
        let (resource, caps) = kube::discovery::pinned_kind(&self.client, &gvk).await.map_err(|e| match e {
            kube::Error::Api(ref s) if s.code == 404 => unknown(),
            kube::Error::Discovery(_) => unknown(),
            other => ApplyError::Api {
                verb: "discover",
                kind: kind.into(),
                name: api_version.into(),
                source: Box::new(other),
            },
        })?;
        let resolved = ResolvedKind { resource, namespaced: caps.scope == Scope::Namespaced };
        if let Ok(mut kinds) = self.kinds.write() {
            kinds.insert(key, resolved.clone());
        }
        Ok(resolved)
    }

    /// An API handle for the kind in `namespace` (ignored for cluster-scoped kinds).
    pub fn api(&self, kind: &ResolvedKind, namespace: Option<&str>) -> Api<DynamicObject> {
        match (kind.namespaced, namespace) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &kind.resource),
            _ => Api::all_with(self.client.clone(), &kind.resource),
        }
    }

    /// The live object, or None.
    pub async fn get(
        &self,
        kind: &ResolvedKind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, ApplyError> {
        let found = self.api(kind, namespace).get_opt(name).await.map_err(|e| api_error("get", kind, name, e))?;
        found.map(|o| to_value(kind, name, &o)).transpose()
    }

    /// Writes `desired` (a complete object with apiVersion, kind and metadata) and returns the result.
    pub async fn write(
        &self,
        kind: &ResolvedKind,
        desired: &Value,
        live: Option<&Value>,
        mode: WriteMode,
    ) -> Result<Value, ApplyError> {
        let name = desired.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        let namespace = desired.pointer("/metadata/namespace").and_then(Value::as_str);
        let api = self.api(kind, namespace);
        let obj: DynamicObject = serde_json::from_value(desired.clone()).map_err(|e| ApplyError::Invalid {
            kind: kind.resource.kind.clone(),
            name: name.clone(),
            message: e.to_string(),
        })?;
        crate::metrics::api_write(&kind.resource.kind, write_verb(mode, live.is_some()));
        let result = match (mode, live) {
            (WriteMode::Apply { force }, _) => {
                let mut params = PatchParams::apply(FIELD_MANAGER);
                params.force = force;
                api.patch(&name, &params, &Patch::Apply(&obj)).await.map_err(|e| match e {
                    kube::Error::Api(ref s) if s.code == 409 => ApplyError::Conflict {
                        kind: kind.resource.kind.clone(),
                        name: name.clone(),
                        message: s.message.clone(),
                    },
                    other => api_error("apply", kind, &name, other),
                })?
            }
            (WriteMode::Merge | WriteMode::Replace, None) => {
                let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
                api.create(&params, &obj).await.map_err(|e| api_error("create", kind, &name, e))?
            }
            (WriteMode::Merge, Some(_)) => {
                let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() };
                api.patch(&name, &params, &Patch::Merge(&obj))
                    .await
                    .map_err(|e| api_error("merge-patch", kind, &name, e))?
            }
            (WriteMode::Replace, Some(live)) => {
                let mut obj = obj;
                obj.metadata.resource_version =
                    live.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(str::to_owned);
                let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
                api.replace(&name, &params, &obj).await.map_err(|e| api_error("replace", kind, &name, e))?
            }
        };
        to_value(kind, &name, &result)
    }

    /// Replaces the object as given (used to add or strip orphan markers on the live object).
    pub async fn update(&self, kind: &ResolvedKind, object: &Value) -> Result<Value, ApplyError> {
        let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        let namespace = object.pointer("/metadata/namespace").and_then(Value::as_str);
        let obj: DynamicObject = serde_json::from_value(object.clone()).map_err(|e| ApplyError::Invalid {
            kind: kind.resource.kind.clone(),
            name: name.clone(),
            message: e.to_string(),
        })?;
        let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
        crate::metrics::api_write(&kind.resource.kind, "update");
        let result = self
            .api(kind, namespace)
            .replace(&name, &params, &obj)
            .await
            .map_err(|e| api_error("update", kind, &name, e))?;
        to_value(kind, &name, &result)
    }

    /// Deletes the object (background propagation); a missing object is not an error.
    pub async fn delete(&self, kind: &ResolvedKind, namespace: Option<&str>, name: &str) -> Result<(), ApplyError> {
        crate::metrics::api_write(&kind.resource.kind, "delete");
        match self.api(kind, namespace).delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(api_error("delete", kind, name, e)),
        }
    }
}

fn api_error(verb: &'static str, kind: &ResolvedKind, name: &str, source: kube::Error) -> ApplyError {
    ApplyError::Api { verb, kind: kind.resource.kind.clone(), name: name.into(), source: Box::new(source) }
}

fn to_value(kind: &ResolvedKind, name: &str, obj: &DynamicObject) -> Result<Value, ApplyError> {
    let mut value = serde_json::to_value(obj).map_err(|e| ApplyError::Invalid {
        kind: kind.resource.kind.clone(),
        name: name.into(),
        message: e.to_string(),
    })?;
    // DynamicObject drops apiVersion/kind when the server omits them; readiness rules look at kind.
    if let Value::Object(map) = &mut value {
        map.entry("apiVersion").or_insert_with(|| Value::String(kind.resource.api_version.clone()));
        map.entry("kind").or_insert_with(|| Value::String(kind.resource.kind.clone()));
    }
    Ok(value)
}

/// The API verb a write in `mode` uses (for the API-writes metric).
fn write_verb(mode: WriteMode, exists: bool) -> &'static str {
    match (mode, exists) {
        (WriteMode::Apply { .. }, _) => "apply",
        (WriteMode::Merge | WriteMode::Replace, false) => "create",
        (WriteMode::Merge, true) => "patch",
        (WriteMode::Replace, true) => "update",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn ssa_list_keys_get_the_default_protocol() {
        let mut svc = json!({"kind": "Service", "spec": {"ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]}});
        fill_ssa_list_keys(&mut svc);
        assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(svc["spec"]["ports"][1]["protocol"], "UDP");
        let mut deploy = json!({"kind": "Deployment", "spec": {"template": {"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 8080}]}]}}}});
        fill_ssa_list_keys(&mut deploy);
        assert_eq!(deploy["spec"]["template"]["spec"]["containers"][0]["ports"][0]["protocol"], "TCP");
        let mut cm = json!({"kind": "ConfigMap", "data": {"ports": "x"}});
        fill_ssa_list_keys(&mut cm);
        assert_eq!(cm, json!({"kind": "ConfigMap", "data": {"ports": "x"}}));
    }

    #[test]
    fn contains_accepts_server_defaults_and_rejects_drift() {
        let want = json!({"spec": {"replicas": 2, "containers": [{"name": "a", "image": "x"}]}});
        let have = json!({"spec": {"replicas": 2, "progress": 600, "containers": [{"name": "a", "image": "x", "imagePullPolicy": "Always"}]}});
        assert!(contains(&want, &have));
        let drifted = json!({"spec": {"replicas": 3, "containers": [{"name": "a", "image": "x"}]}});
        assert!(!contains(&want, &drifted));
        let extra_item = json!({"spec": {"replicas": 2, "containers": [{"name": "a", "image": "x"}, {"name": "b"}]}});
        assert!(!contains(&want, &extra_item));
        assert!(contains(&json!({"n": 1}), &json!({"n": 1.0})));
    }

    #[test]
    fn skip_only_with_same_hash_and_no_drift() {
        let desired = json!({"metadata": {"name": "a"}, "data": {"k": "v"}});
        let live = json!({"metadata": {"name": "a", "annotations": {ANN_APPLIED_HASH: "h1"}}, "data": {"k": "v"}});
        assert_eq!(write_decision(&desired, "h1", Some(&live), false), WriteDecision::Skip);
        assert_eq!(write_decision(&desired, "h1", Some(&live), true), WriteDecision::Write, "forced");
        assert_eq!(write_decision(&desired, "h2", Some(&live), false), WriteDecision::Write, "template changed");
        assert_eq!(write_decision(&desired, "h1", None, false), WriteDecision::Write, "absent");
        let edited =
            json!({"metadata": {"name": "a", "annotations": {ANN_APPLIED_HASH: "h1"}}, "data": {"k": "edited"}});
        assert_eq!(write_decision(&desired, "h1", Some(&edited), false), WriteDecision::Write, "drift is put back");
    }

    #[test]
    fn apply_start_time_is_kept_while_the_hash_is_unchanged() {
        let live = json!({"metadata": {"annotations": {ANN_APPLIED_HASH: "h1", ANN_APPLY_START: "then"}}});
        let mut desired = json!({"metadata": {"name": "a"}});
        stamp_tracking_annotations(&mut desired, "h1", Some(&live), "now");
        assert_eq!(desired["metadata"]["annotations"][ANN_APPLY_START], "then");
        let mut changed = json!({"metadata": {"name": "a"}});
        stamp_tracking_annotations(&mut changed, "h2", Some(&live), "now");
        assert_eq!(changed["metadata"]["annotations"][ANN_APPLY_START], "now");
        assert_eq!(changed["metadata"]["annotations"][ANN_APPLIED_HASH], "h2");
    }
}
