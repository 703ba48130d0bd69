//! The local environment of a benchmark run: a `lynq env up --exit-on-stdin-eof` supervisor (it
//! stops everything when this process exits, even on a panic), and the CRDs installed.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::Context as _;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
};
use lynq::localenv::EnvInfo;

/// A running environment; dropping it closes the supervisor's stdin, which stops it.
pub struct Env {
    /// How to reach it.
    pub info: EnvInfo,
    supervisor: Child,
}

impl Env {
    /// Starts etcd, kube-apiserver, kube-controller-manager, MariaDB and PostgreSQL.
    pub fn start(log_dir: &Path) -> anyhow::Result<Self> {
        let mut supervisor = Command::new(env!("CARGO_BIN_EXE_lynq"))
            .args(["env", "up", "--exit-on-stdin-eof", "--log-dir"])
            .arg(log_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawning lynq env up")?;
        let stdout = supervisor.stdout.take().context("the supervisor has no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).context("reading the supervisor's announcement")?;
        anyhow::ensure!(
            !line.trim().is_empty(),
            "lynq env up exited before announcing the environment; logs in {}",
            log_dir.display()
        );
        let info = serde_json::from_str(&line).with_context(|| format!("parsing {line:?}"))?;
        Ok(Self { info, supervisor })
    }

    /// An admin client of the control plane.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let path = self.info.kubeconfig.clone().context("the environment has no control plane")?;
        Ok(lynq::localenv::admin_client(&path).await?)
    }

    /// Path of the admin kubeconfig.
    pub fn kubeconfig(&self) -> anyhow::Result<&Path> {
        self.info.kubeconfig.as_deref().context("the environment has no control plane")
    }

    /// `mysql://…/` admin URL.
    pub fn mysql_url(&self) -> anyhow::Result<&str> {
        self.info.mysql_url.as_deref().context("the environment has no MariaDB")
    }

    /// `postgres://…/postgres` superuser URL.
    pub fn postgres_url(&self) -> anyhow::Result<&str> {
        self.info.postgres_url.as_deref().context("the environment has no PostgreSQL")
    }

    /// Stops the environment and waits for the supervisor to finish cleaning up.
    pub fn stop(mut self) {
        drop(self.supervisor.stdin.take());
        let _ = self.supervisor.wait();
    }
}

/// Applies lynq's CRDs and waits until each is established.
pub async fn install_crds(client: &Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in lynq::api::crds() {
        let name = crd.name_any();
        api.patch(&name, &PatchParams::apply("lynq-bench").force(), &Patch::Apply(&crd)).await?;
        super::wait_until(&format!("CRD {name} established"), Duration::from_secs(30), || {
            let api = api.clone();
            let name = name.clone();
            async move {
                let crd = api.get(&name).await?;
                let established = crd
                    .status
                    .and_then(|s| s.conditions)
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Established" && c.status == "True"));
                Ok(established.then_some(()))
            }
        })
        .await?;
    }
    Ok(())
}
