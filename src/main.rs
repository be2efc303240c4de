//! The `archway` binary: the operator, and the CRD it serves.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "archway", version, about = "Builds multi-architecture images in Kubernetes and rolls them out")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the MultiArchBuild CustomResourceDefinition as YAML (what crds/multiarchbuild.yaml holds).
    Crd,
    /// Print the version.
    Version,
    /// Run the operator against the cluster of the current kubeconfig or service account.
    Operator(Box<archway::controller::OperatorConfig>),
    /// Assemble one platform's image of a Dockerfile without RUN (what an `assemble` build pod runs).
    Assemble(Box<archway::assemble::run::AssembleArgs>),
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("cannot render the CRD: {0}")]
    Crd(#[from] serde_saphyr::SerializeError),
    #[error("cannot write to stdout: {0}")]
    Stdout(#[from] std::io::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot find the cluster's configuration (in-cluster or kubeconfig): {0}")]
    Config(#[source] kube::config::InferConfigError),
    #[error("cannot connect to the cluster: {0}")]
    Connect(#[source] kube::Error),
    #[error("cannot read the apiserver's version: {0}")]
    ApiserverVersion(#[source] kube::Error),
    #[error(transparent)]
    Controller(#[from] archway::controller::Error),
    #[error(transparent)]
    Assemble(#[from] archway::assemble::run::AssembleError),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("archway: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<(), Error> {
    match command {
        Command::Crd => print(&archway::api::crd_yaml()?),
        Command::Version => print(&format!("archway {}\n", env!("CARGO_PKG_VERSION"))),
        Command::Operator(config) => {
            archway::install_crypto_provider();
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(Error::Runtime)?;
            runtime.block_on(operator(*config))
        }
        Command::Assemble(args) => {
            archway::install_crypto_provider();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(Error::Runtime)?;
            let digest = runtime.block_on(archway::assemble::run::assemble(&args))?;
            print(&format!("{digest}\n"))
        }
    }
}

fn print(text: &str) -> Result<(), Error> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// Connects, says which apiserver it talks to, and runs the controller until SIGTERM or ctrl-c.
async fn operator(config: archway::controller::OperatorConfig) -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let kube_config = kube::Config::infer().await.map_err(Error::Config)?;
    let clients = archway::controller::Clients::new(kube_config).map_err(Error::Connect)?;
    let version = clients.requests.apiserver_version().await.map_err(Error::ApiserverVersion)?;
    tracing::info!(version = %version.git_version, platform = %version.platform, "connected to the apiserver");

    archway::controller::run(clients, config).await?;
    tracing::info!("shut down");
    Ok(())
}
