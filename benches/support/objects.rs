//! The objects every phase uses: a namespace, the password Secret, a hub per table, and the form
//! of the issue — ConfigMap → Deployment → Service, each depending on the one before. The Service
//! is headless: the local apiserver's service range is a /24, far too small for 10,000 ClusterIPs.

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use lynq::api::{LynqForm, LynqHub};
use serde_json::{Value, json};

use super::db::Kind;

/// Field manager of everything the benchmark writes itself.
pub const MANAGER: &str = "lynq-bench";
/// Password of the environment's admin users (both databases).
pub const ADMIN_PASSWORD: &str = "lynq-admin";
/// The Secret every hub reads its password from.
pub const SECRET: &str = "db-password";

fn apply_params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

/// Creates (or keeps) `name` and the password Secret in it.
pub async fn namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let ns: Namespace =
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))?;
    Api::<Namespace>::all(client.clone()).patch(name, &apply_params(), &Patch::Apply(&ns)).await?;
    let secret: Secret = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": SECRET}, "stringData": {"password": ADMIN_PASSWORD}}))?;
    Api::<Secret>::namespaced(client.clone(), name).patch(SECRET, &apply_params(), &Patch::Apply(&secret)).await?;
    Ok(())
}

/// Where a hub's table is.
#[derive(Clone, Debug)]
pub struct TableRef {
    /// Database kind.
    pub kind: Kind,
    /// Server port on 127.0.0.1.
    pub port: u16,
    /// Database name.
    pub database: String,
    /// Table name.
    pub table: String,
}

/// A hub over `table`, in `mode` (Stream, Poll, Auto) with `sync_interval`.
pub fn hub(name: &str, table: &TableRef, mode: &str, sync_interval: &str) -> anyhow::Result<LynqHub> {
    let password_ref = json!({"name": SECRET, "key": "password"});
    let source = match table.kind {
        Kind::Mysql => json!({"type": "mysql", "syncInterval": sync_interval, "changeCapture": mode,
            "mysql": {"host": "127.0.0.1", "port": table.port, "database": table.database, "table": table.table,
                      "username": "lynq", "passwordRef": password_ref}}),
        Kind::Postgres => json!({"type": "postgresql", "syncInterval": sync_interval, "changeCapture": mode,
            "postgresql": {"host": "127.0.0.1", "port": table.port, "database": table.database,
                           "schema": "public", "table": table.table, "username": "postgres",
                           "passwordRef": password_ref, "sslMode": "disable"}}),
    };
    Ok(serde_json::from_value(json!({
        "apiVersion": "operator.lynq.sh/v1", "kind": "LynqHub", "metadata": {"name": name},
        "spec": {"source": source, "valueMappings": {"uid": "node_id", "activate": "is_active"},
                 "extraValueMappings": {"planId": "plan"}}
    }))?)
}

/// The resource lists of the form (also a LynqNode's spec, with uid and templateRef).
pub fn form_resources() -> Value {
    json!({
        "configMaps": [{"id": "cm", "nameTemplate": "{{ .uid }}-cm",
            "spec": {"apiVersion": "v1", "kind": "ConfigMap",
                     "data": {"uid": "{{ .uid }}", "plan": "{{ .planId | default \"basic\" }}"}}}],
        "deployments": [{"id": "app", "dependIds": ["cm"], "nameTemplate": "{{ .uid }}-app",
            "labelsTemplate": {"app": "{{ .uid }}"},
            "spec": {"apiVersion": "apps/v1", "kind": "Deployment",
                     "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "{{ .uid }}"}},
                              "template": {"metadata": {"labels": {"app": "{{ .uid }}"}},
                                           "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}}}}}],
        "services": [{"id": "svc", "dependIds": ["app"], "nameTemplate": "{{ .uid }}-svc",
            "spec": {"apiVersion": "v1", "kind": "Service",
                     "spec": {"clusterIP": "None", "selector": {"app": "{{ .uid }}"},
                              "ports": [{"port": 80, "targetPort": 80}]}}}],
    })
}

/// The form `name` of hub `hub_id`.
pub fn form(name: &str, hub_id: &str) -> anyhow::Result<LynqForm> {
    let mut spec = form_resources();
    spec["hubId"] = json!(hub_id);
    Ok(serde_json::from_value(json!({
        "apiVersion": "operator.lynq.sh/v1", "kind": "LynqForm", "metadata": {"name": name}, "spec": spec
    }))?)
}

/// Applies a hub and its form in `namespace`.
pub async fn apply_hub_and_form(
    client: &Client,
    namespace: &str,
    hub: &LynqHub,
    form: &LynqForm,
) -> anyhow::Result<()> {
    let name = |o: &kube::core::ObjectMeta| o.name.clone().unwrap_or_default();
    Api::<LynqHub>::namespaced(client.clone(), namespace)
        .patch(&name(&hub.metadata), &apply_params(), &Patch::Apply(hub))
        .await?;
    Api::<LynqForm>::namespaced(client.clone(), namespace)
        .patch(&name(&form.metadata), &apply_params(), &Patch::Apply(form))
        .await?;
    Ok(())
}

/// The three objects lynq applies for row `uid`, rendered as lynq renders them.
pub fn rendered_resources(uid: &str) -> [Value; 3] {
    [
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("{uid}-cm")},
               "data": {"uid": uid, "plan": "basic"}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": format!("{uid}-app"), "labels": {"app": uid}},
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app": uid}},
                        "template": {"metadata": {"labels": {"app": uid}},
                                     "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}}}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("{uid}-svc")},
               "spec": {"clusterIP": "None", "selector": {"app": uid},
                        "ports": [{"port": 80, "targetPort": 80, "protocol": "TCP"}]}}),
    ]
}
