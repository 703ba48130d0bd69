//! etcd + kube-apiserver + kube-controller-manager, envtest style.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    EnvError, create_dir,
    process::{ManagedProcess, free_port, port_open, run_to_completion},
    write_file,
};

/// Kubernetes version the harness builds and runs.
pub const KUBE_VERSION: &str = "v1.20.2";
/// User name of the operator's ServiceAccount, for RBAC tests.
pub const OPERATOR_SA_USER: &str = "system:serviceaccount:lynq-system:lynq-controller";

/// A running control plane.
pub struct ControlPlane {
    /// Admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// Static tokens by user name.
    pub tokens: Vec<(String, String)>,
    etcd: ManagedProcess,
    apiserver: ManagedProcess,
    controller_manager: ManagedProcess,
    etcd_dir: tempfile::TempDir,
}

/// Directories searched for kube-apiserver and kube-controller-manager, in order.
pub fn asset_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        ["KUBE_ASSETS", "KUBEBUILDER_ASSETS"].iter().filter_map(std::env::var_os).map(PathBuf::from).collect();
    let cache = std::env::var_os("LYNQ_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/lynq")));
    dirs.extend(cache.map(|c| c.join(format!("k8s-{KUBE_VERSION}"))));
    dirs
}

impl ControlPlane {
    /// Starts etcd, the apiserver and the controller-manager, and waits until the apiserver is ready.
    pub async fn start(root: &Path, logs: &Path) -> Result<Self, EnvError> {
        let assets = asset_dirs();
        let hint = "built by scripts/setup.sh into ~/.cache/lynq/k8s-v1.20.2, or set KUBE_ASSETS";
        let etcd_bin = super::find_binary("etcd", &assets, "Debian package etcd-server")?;
        let apiserver_bin = super::find_binary("kube-apiserver", &assets, hint)?;
        let cm_bin = super::find_binary("kube-controller-manager", &assets, hint)?;
        let openssl = super::find_binary("openssl", &[], "Debian package openssl")?;

        let dir = root.join("kube");
        create_dir(&dir)?;
        // etcd fsyncs on every write; on tmpfs that costs nothing (etcd 3.4 has no --unsafe-no-fsync).
        let shm = Path::new("/dev/shm");
        let etcd_dir = tempfile::Builder::new()
            .prefix("lynq-etcd-")
            .tempdir_in(if shm.is_dir() { shm } else { root })
            .map_err(|e| EnvError::io("creating etcd's data dir".into(), e))?;

        let etcd_port = free_port()?;
        let peer_port = free_port()?;
        let mut etcd = ManagedProcess::spawn(
            "etcd",
            &etcd_bin,
            &etcd_args(etcd_dir.path(), etcd_port, peer_port),
            &logs.join("etcd.log"),
        )?;
        etcd.wait_until("client port open", Duration::from_secs(30), || port_open(etcd_port)).await?;

        let sa_key = dir.join("sa.key");
        let sa_pub = dir.join("sa.pub");
        run_to_completion("openssl genrsa", &openssl, &["genrsa".into(), "-out".into(), path(&sa_key), "2048".into()])
            .await?;
        run_to_completion(
            "openssl rsa",
            &openssl,
            &["rsa".into(), "-in".into(), path(&sa_key), "-pubout".into(), "-out".into(), path(&sa_pub)],
        )
        .await?;
        let admin_token = random_token();
        let tokens = vec![("admin".to_string(), admin_token.clone()), (OPERATOR_SA_USER.to_string(), random_token())];
        let token_file = dir.join("tokens.csv");
        write_file(&token_file, &token_csv(&tokens))?;

        let api_port = free_port()?;
        let api_args = apiserver_args(&dir, etcd_port, api_port, &token_file, &sa_key, &sa_pub);
        let mut apiserver =
            ManagedProcess::spawn("kube-apiserver", &apiserver_bin, &api_args, &logs.join("kube-apiserver.log"))?;
        let kubeconfig = dir.join("kubeconfig");
        write_file(&kubeconfig, &kubeconfig_yaml(api_port, &admin_token))?;
        let client = admin_client(&kubeconfig).await?;
        apiserver.wait_until("GET /readyz returns ok", Duration::from_secs(90), || apiserver_ready(&client)).await?;

        let cm_args = vec![
            format!("--kubeconfig={}", path(&kubeconfig)),
            "--controllers=garbagecollector,namespace".into(),
            "--leader-elect=false".into(),
            "--port=0".into(),
            "--secure-port=0".into(),
            "--concurrent-gc-syncs=5".into(),
            "--namespace-sync-period=10s".into(),
            "--v=1".into(),
        ];
        let mut controller_manager = ManagedProcess::spawn(
            "kube-controller-manager",
            &cm_bin,
            &cm_args,
            &logs.join("kube-controller-manager.log"),
        )?;
        controller_manager.ensure_running()?;
        Ok(Self { kubeconfig, tokens, etcd, apiserver, controller_manager, etcd_dir })
    }

    /// Pids of the three processes.
    pub fn pids(&self) -> Vec<u32> {
        [&self.etcd, &self.apiserver, &self.controller_manager].iter().filter_map(|p| p.pid()).collect()
    }

    /// Stops the controller-manager, the apiserver, then etcd, and removes etcd's data.
    pub async fn stop(self, grace: Duration) {
        self.controller_manager.stop(grace).await;
        self.apiserver.stop(grace).await;
        self.etcd.stop(grace).await;
        let _ = self.etcd_dir.close();
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn etcd_args(data: &Path, client_port: u16, peer_port: u16) -> Vec<String> {
    vec![
        "--name=lynq".into(),
        format!("--data-dir={}", path(data)),
        format!("--listen-client-urls=http://127.0.0.1:{client_port}"),
        format!("--advertise-client-urls=http://127.0.0.1:{client_port}"),
        format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
        format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
        format!("--initial-cluster=lynq=http://127.0.0.1:{peer_port}"),
        "--log-level=warn".into(),
    ]
}

fn apiserver_args(
    dir: &Path,
    etcd_port: u16,
    api_port: u16,
    tokens: &Path,
    sa_key: &Path,
    sa_pub: &Path,
) -> Vec<String> {
    vec![
        format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
        format!("--secure-port={api_port}"),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        "--insecure-port=0".into(),
        format!("--token-auth-file={}", path(tokens)),
        "--authorization-mode=RBAC".into(),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        format!("--service-account-key-file={}", path(sa_pub)),
        format!("--service-account-signing-key-file={}", path(sa_key)),
        "--service-cluster-ip-range=10.0.0.0/24".into(),
        format!("--cert-dir={}", path(&dir.join("certs"))),
        "--allow-privileged=true".into(),
        "--v=1".into(),
    ]
}

fn token_csv(tokens: &[(String, String)]) -> String {
    tokens
        .iter()
        .map(|(user, token)| {
            let groups = if user == "admin" {
                "system:masters".to_string()
            } else {
                "system:serviceaccounts,system:serviceaccounts:lynq-system,system:authenticated".to_string()
            };
            format!("{token},{user},{user},\"{groups}\"\n")
        })
        .collect()
}

fn kubeconfig_yaml(port: u16, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: lynq-local\n  cluster:\n    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: lynq-local\n  context:\n    cluster: lynq-local\n    user: admin\n    namespace: default\ncurrent-context: lynq-local\n"
    )
}

/// A token that is unique per environment (the apiserver listens on loopback only).
fn random_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    for _ in 0..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// A kube client for the admin kubeconfig just written.
pub async fn admin_client(kubeconfig: &Path) -> Result<kube::Client, EnvError> {
    crate::install_crypto_provider();
    let fail =
        |what: String| EnvError::CommandFailed { name: "kube client".into(), status: "error".into(), output: what };
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .map_err(|e| fail(format!("reading {}: {e}", kubeconfig.display())))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| fail(format!("loading {}: {e}", kubeconfig.display())))?;
    kube::Client::try_from(config).map_err(|e| fail(format!("building a client: {e}")))
}

async fn apiserver_ready(client: &kube::Client) -> bool {
    let Ok(request) = http::Request::get("/readyz").body(Vec::new()) else {
        return false;
    };
    matches!(client.request_text(request).await, Ok(body) if body.trim() == "ok")
}
