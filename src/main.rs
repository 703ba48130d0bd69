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
    Run(lynq::server::options::RunArgs),
    /// Run the demo: local control plane and MariaDB, the operator, and scripted row changes.
    Demo {
        /// Stop after the scripted steps instead of waiting for Ctrl-C.
        #[arg(long)]
        exit_after_script: bool,
        /// Where process logs go (emptied first).
        #[arg(long, default_value = "target/lynq-env-logs/demo")]
        log_dir: PathBuf,
    },
    /// Render a LynqForm offline and print its resources in apply order as YAML.
    Render(RenderArgs),
    /// Start or stop the local environment (control plane, MariaDB, PostgreSQL).
    #[command(subcommand)]
    Env(EnvCommand),
}

#[derive(Args)]
struct RenderArgs {
    /// The LynqForm manifest (YAML).
    #[arg(long)]
    form: PathBuf,
    /// Row values as a JSON object of strings, e.g. '{"uid":"acme","planId":"pro"}'.
    #[arg(long, conflicts_with = "values_file")]
    values: Option<String>,
    /// Row values from a JSON file.
    #[arg(long)]
    values_file: Option<PathBuf>,
    /// Namespace the node would live in.
    #[arg(long, default_value = "default")]
    namespace: String,
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
    let cli = Cli::parse();
    match &cli.command {
        Command::Run(args) => {
            if let Err(e) = lynq::server::logging::init(args.log_level.as_deref(), args.log_format) {
                eprintln!("lynq: {e}");
                return ExitCode::FAILURE;
            }
        }
        // The environment supervisor polls the apiserver until it is up; kube's connection errors during
        // that wait are expected, not news.
        Command::Env(_) | Command::Demo { .. } => init_tracing("info,kube_client=off"),
        _ => init_tracing("info"),
    }
    lynq::install_crypto_provider();
    let result = match cli.command {
        Command::Crds { out_dir } => print_crds(out_dir),
        Command::Run(args) => {
            // The final error goes through the log too, so that a JSON log stays all JSON.
            let result = lynq::server::run(args).await;
            if let Err(e) = &result {
                tracing::error!(error = %e, "lynq run failed");
                return ExitCode::FAILURE;
            }
            Ok(())
        }
        Command::Render(args) => render_form(args),
        Command::Demo { exit_after_script, log_dir } => lynq::demo::run(&log_dir, exit_after_script).await,
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

fn init_tracing(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into());
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

fn render_form(args: RenderArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let text = std::fs::read_to_string(&args.form).with_context(|| format!("reading {}", args.form.display()))?;
    let form: lynq::api::LynqForm =
        serde_yaml_ng::from_str(&text).with_context(|| format!("{} is not a LynqForm", args.form.display()))?;
    let values_text = match (&args.values, &args.values_file) {
        (Some(v), _) => v.clone(),
        (None, Some(path)) => std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        (None, None) => "{}".into(),
    };
    let values: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&values_text).context("--values must be a JSON object of strings")?;
    let name = form.metadata.name.clone().unwrap_or_default();
    let vars = lynq::node::render::offline_variables(&name, &form.spec.hub_id, &values);
    let engine = lynq::template::Engine::new();
    let rendered = lynq::node::render::render_form(&engine, &name, &form.spec, &args.namespace, &vars)?;
    for resource in rendered {
        print!("---\n# {}\n{}", resource.id, serde_yaml_ng::to_string(&resource.object)?);
    }
    Ok(())
}

async fn env_up(up: EnvUp) -> anyhow::Result<()> {
    let components = Components { kubernetes: !up.no_kubernetes, mysql: !up.no_mysql, postgres: !up.no_postgres };
    supervisor::run(components, &up.log_dir, up.state_dir.as_deref(), up.exit_on_stdin_eof).await?;
    Ok(())
}
