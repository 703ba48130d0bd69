//! `lynq demo`: the whole product on one machine. It starts the local environment (control plane and
//! MariaDB with binlog), installs the CRDs, creates a table and a least-privilege CDC user, applies
//! the seed's hub and form, runs the operator, and then changes rows while printing what appears and
//! disappears in the cluster and how long each took from the commit.

use std::{path::Path, time::Duration};

use anyhow::Context as _;
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{Secret, Service},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use mysql_async::prelude::Queryable;
use serde_json::json;
use tokio::time::Instant;

use crate::{
    api::{LynqForm, LynqHub, LynqNode},
    localenv::{Components, LocalEnv, admin_client},
};

const HUB_YAML: &str = include_str!("../manifests/samples/lynqhub-mysql.yaml");
const FORM_YAML: &str = include_str!("../manifests/samples/lynqform-web-app.yaml");
const NAMESPACE: &str = "default";
const CDC_PASSWORD: &str = "demo-reader-password";

/// Runs the demo; with `exit_after_script` it stops after the scripted steps (used by CI).
pub async fn run(log_dir: &Path, exit_after_script: bool) -> anyhow::Result<()> {
    println!("starting the local environment (etcd, kube-apiserver, kube-controller-manager, MariaDB)…");
    let env = LocalEnv::start(Components { kubernetes: true, mysql: true, postgres: false }, log_dir).await?;
    let result = demo(&env, exit_after_script).await;
    env.stop().await;
    println!("environment stopped and removed");
    result
}

async fn demo(env: &LocalEnv, exit_after_script: bool) -> anyhow::Result<()> {
    let kubeconfig = env.info.kubeconfig.clone().context("the environment has no control plane")?;
    let admin_url = env.info.mysql_url.clone().context("the environment has no MariaDB")?;
    let client = admin_client(&kubeconfig).await?;
    install_crds(&client).await?;
    let (mut db, port) = prepare_database(&admin_url).await?;
    apply_hub_and_form(&client, port).await?;

    let shutdown = futures::FutureExt::shared(Box::pin(async {
        let _ = tokio::signal::ctrl_c().await;
    }));
    let operator =
        tokio::spawn(crate::server::run_controllers(client.clone(), Some(NAMESPACE.into()), shutdown.clone()));
    let kubelet = tokio::spawn(stand_in_kubelet(client.clone()));

    let steps: [(&str, &str, Expect); 5] = [
        ("INSERT INTO node_data VALUES ('acme', 1, 'pro', 'eu')", "a new active row", Expect::Present("acme")),
        (
            "UPDATE node_data SET subscription_plan = 'enterprise' WHERE node_id = 'acme'",
            "its plan changes",
            Expect::Plan("acme", "enterprise"),
        ),
        ("UPDATE node_data SET is_active = 0 WHERE node_id = 'acme'", "the row is deactivated", Expect::Absent("acme")),
        (
            "UPDATE node_data SET is_active = 1 WHERE node_id = 'acme'",
            "the row is reactivated",
            Expect::Present("acme"),
        ),
        ("DELETE FROM node_data WHERE node_id = 'acme'", "the row is deleted", Expect::Absent("acme")),
    ];
    for (sql, what, expect) in steps {
        println!("\n▶ {what}:  {sql}");
        let before = observe(&client, expect.uid()).await?.lines;
        db.query_drop(sql).await.with_context(|| format!("running {sql}"))?;
        let committed = Instant::now();
        wait_for(&client, &expect, committed, before).await?;
    }
    println!("\nthe scripted steps are done.");
    if !exit_after_script {
        println!("\nTry your own statements; lynq keeps running until Ctrl-C:");
        println!("  export KUBECONFIG={}", kubeconfig.display());
        println!("  database: {admin_url}  (the hub reads as mysql://node_reader@127.0.0.1:{port}/nodes)");
        println!("  mariadb -h127.0.0.1 -P{port} -ulynq -plynq-admin nodes");
        println!("  kubectl get lynqhubs,lynqforms,lynqnodes,deployments,services");
        shutdown.clone().await;
    }
    operator.abort();
    kubelet.abort();
    Ok(())
}

async fn install_crds(client: &Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crate::api::crds() {
        let name = crd.name_any();
        api.patch(&name, &PatchParams::apply("lynq-demo").force(), &Patch::Apply(&crd)).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !api
            .get(&name)
            .await?
            .status
            .and_then(|s| s.conditions)
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Established" && c.status == "True"))
        {
            anyhow::ensure!(Instant::now() < deadline, "CRD {name} was not established within 30s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!("installed the LynqHub, LynqForm and LynqNode CRDs");
    Ok(())
}

/// Creates the seed's table and a CDC user with only what streaming needs.
async fn prepare_database(admin_url: &str) -> anyhow::Result<(mysql_async::Conn, u16)> {
    let port =
        admin_url.rsplit_once(':').and_then(|(_, p)| p.trim_end_matches('/').parse().ok()).context("MariaDB port")?;
    let mut db = mysql_async::Conn::from_url(admin_url).await?;
    for sql in [
        "CREATE DATABASE nodes".to_string(),
        "CREATE TABLE nodes.node_data (node_id VARCHAR(64) PRIMARY KEY, is_active TINYINT(1) NOT NULL, \
         subscription_plan VARCHAR(32) NULL, deployment_region VARCHAR(32) NULL)"
            .to_string(),
        format!("CREATE USER 'node_reader'@'%' IDENTIFIED BY '{CDC_PASSWORD}'"),
        "GRANT SELECT ON nodes.* TO 'node_reader'@'%'".to_string(),
        "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'node_reader'@'%'".to_string(),
        "USE nodes".to_string(),
    ] {
        db.query_drop(&sql).await.with_context(|| format!("running {sql}"))?;
    }
    println!("created table nodes.node_data and user node_reader (SELECT, REPLICATION SLAVE, REPLICATION CLIENT)");
    Ok((db, port))
}

async fn apply_hub_and_form(client: &Client, port: u16) -> anyhow::Result<()> {
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "mysql-secret"}, "stringData": {"password": CDC_PASSWORD}}),
    )?;
    Api::<Secret>::namespaced(client.clone(), NAMESPACE).create(&PostParams::default(), &secret).await?;
    let mut hub: LynqHub = serde_yaml_ng::from_str(HUB_YAML)?;
    if let Some(mysql) = hub.spec.source.mysql.as_mut() {
        mysql.host = "127.0.0.1".into();
        mysql.port = i32::from(port);
    }
    Api::<LynqHub>::namespaced(client.clone(), NAMESPACE).create(&PostParams::default(), &hub).await?;
    let form: LynqForm = serde_yaml_ng::from_str(FORM_YAML)?;
    Api::<LynqForm>::namespaced(client.clone(), NAMESPACE).create(&PostParams::default(), &form).await?;
    println!("applied LynqHub my-saas-hub (the seed's, pointed at 127.0.0.1:{port}) and LynqForm web-app");
    Ok(())
}

/// There is no kubelet here: mark Deployments ready the way the kubelet and the deployment
/// controller would, so that readiness-gated resources (the Service) follow.
async fn stand_in_kubelet(client: Client) {
    let api: Api<Deployment> = Api::namespaced(client, NAMESPACE);
    loop {
        if let Ok(list) = api.list(&ListParams::default()).await {
            for d in list.items {
                let generation = d.metadata.generation.unwrap_or(1);
                let replicas = d.spec.replicas.unwrap_or(1);
                if d.status.as_ref().and_then(|s| s.observed_generation) == Some(generation) {
                    continue;
                }
                let status = json!({"status": {"observedGeneration": generation, "replicas": replicas,
                    "updatedReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas}});
                let _ = api.patch_status(&d.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

enum Expect {
    Present(&'static str),
    Plan(&'static str, &'static str),
    Absent(&'static str),
}

impl Expect {
    fn uid(&self) -> &'static str {
        match self {
            Self::Present(uid) | Self::Plan(uid, _) | Self::Absent(uid) => uid,
        }
    }
}

/// What the cluster shows for one row: its node, Deployment and Service.
struct Observation {
    lines: Vec<String>,
    node: bool,
    ready: bool,
    plan: Option<String>,
    deployment: bool,
    service: bool,
}

impl Observation {
    fn satisfies(&self, expect: &Expect) -> bool {
        match expect {
            Expect::Present(_) => self.ready && self.service,
            Expect::Plan(_, plan) => self.ready && self.service && self.plan.as_deref() == Some(*plan),
            Expect::Absent(_) => !self.node && !self.deployment && !self.service,
        }
    }
}

async fn observe(client: &Client, uid: &str) -> anyhow::Result<Observation> {
    let node = Api::<LynqNode>::namespaced(client.clone(), NAMESPACE).get_opt(&format!("{uid}-web-app")).await?;
    let app = Api::<Deployment>::namespaced(client.clone(), NAMESPACE).get_opt(&format!("{uid}-app")).await?;
    let svc = Api::<Service>::namespaced(client.clone(), NAMESPACE).get_opt(&format!("{uid}-svc")).await?;
    let ready = node
        .as_ref()
        .and_then(|n| n.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let plan = app.as_ref().and_then(|d| d.labels().get("plan").cloned());
    let mut lines = Vec::new();
    match &node {
        Some(n) => lines.push(format!("LynqNode {} created", n.name_any())),
        None => lines.push(format!("LynqNode {uid}-web-app deleted")),
    }
    if let Some(d) = &app {
        lines.push(format!("Deployment {} applied (plan={})", d.name_any(), plan.clone().unwrap_or_default()));
    }
    if let Some(s) = &svc {
        lines.push(format!("Service {} applied after its Deployment became ready", s.name_any()));
    }
    if app.is_none() && svc.is_none() {
        lines.push(format!("Deployment {uid}-app and Service {uid}-svc deleted"));
    }
    if ready {
        lines.push(format!("LynqNode {uid}-web-app Ready"));
    }
    Ok(Observation { lines, node: node.is_some(), ready, plan, deployment: app.is_some(), service: svc.is_some() })
}

/// Polls until the cluster shows the expected state, printing each change from `before` with its
/// delay from the commit.
async fn wait_for(client: &Client, expect: &Expect, committed: Instant, before: Vec<String>) -> anyhow::Result<()> {
    let deadline = committed + Duration::from_secs(60);
    let mut printed = before;
    loop {
        anyhow::ensure!(Instant::now() < deadline, "the cluster did not reach the expected state within 60s");
        let seen = observe(client, expect.uid()).await?;
        for line in seen.lines.iter().filter(|l| !printed.contains(l)).cloned().collect::<Vec<_>>() {
            println!("  +{:>5} ms  {line}", Instant::now().duration_since(committed).as_millis());
            printed.push(line);
        }
        if seen.satisfies(expect) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
