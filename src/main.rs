//! The `lynq` command: the operator, its CRDs, and the local environment.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use lynq::localenv::{Components, supervisor};

/// lynq turns database rows into Kubernetes resources the moment the row commits.
#[derive(Parser)]
#[command(name = "lynq", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the three CRDs (LynqHub, LynqForm, LynqNode) as one YAML stream.
    Crds {
        /// Write one file per CRD into this directory instead.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Run the operator against $KUBECONFIG or the in-cluster configuration.
    Run,
    /// Start or stop the local environment (control plane, MariaDB, PostgreSQL).
    #[command(subcommand)]
    Env(EnvCommand),
}

#[derive(Subcommand)]
enum EnvCommand {
    /// Start it, print one JSON line (kubeconfig, database URLs) and run until SIGTERM/SIGINT.
    Up(EnvUp),
    /// Stop the environment started with `up --state-dir`.
    Down {
        /// State directory given to `up`.
        #[arg(long, default_value = "target/lynq-env")]
        state_dir: PathBuf,
    },
}

#[derive(Args)]
struct EnvUp {
    /// Where to write env.json (for `down` and scripts).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Where process logs go (emptied first).
    #[arg(long, default_value = "target/lynq-env-logs/dev")]
    log_dir: PathBuf,
    /// Stop when standard input closes (used by the test harness).
    #[arg(long)]
    exit_on_stdin_eof: bool,
    /// Skip the Kubernetes control plane.
    #[arg(long)]
    no_kubernetes: bool,
    /// Skip MariaDB.
    #[arg(long)]
    no_mysql: bool,
    /// Skip PostgreSQL.
    #[arg(long)]
    no_postgres: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing();
    lynq::install_crypto_provider();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crds { out_dir } => print_crds(out_dir),
        Command::Run => run_operator().await,
        Command::Env(EnvCommand::Up(up)) => env_up(up).await,
        Command::Env(EnvCommand::Down { state_dir }) => supervisor::down(&state_dir).await.map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lynq: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn print_crds(out_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let Some(dir) = out_dir else {
        print!("{}", lynq::api::crds_yaml()?);
        return Ok(());
    };
    std::fs::create_dir_all(&dir)?;
    for (name, yaml) in lynq::api::crd_files()? {
        std::fs::write(dir.join(name), yaml)?;
    }
    Ok(())
}

async fn run_operator() -> anyhow::Result<()> {
    let client = kube::Client::try_default().await?;
    let version = client.apiserver_version().await?;
    tracing::info!(server = %version.git_version, "connected to the Kubernetes API server");
    wait_for_shutdown_signal().await;
    tracing::info!("shutting down");
    Ok(())
}

async fn wait_for_shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops lynq");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn env_up(up: EnvUp) -> anyhow::Result<()> {
    let components = Components { kubernetes: !up.no_kubernetes, mysql: !up.no_mysql, postgres: !up.no_postgres };
    supervisor::run(components, &up.log_dir, up.state_dir.as_deref(), up.exit_on_stdin_eof).await?;
    Ok(())
}
