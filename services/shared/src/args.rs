//! The command line every service binary shares.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Command line of a shippy service.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "A shippy service. Settings: defaults < --config file < etcd config centre < SHIPPY_* env vars."
)]
pub struct ServiceArgs {
    /// Settings file (YAML, JSON or TOML).
    #[arg(long, short, env = "SHIPPY_CONFIG_FILE", global = true)]
    pub config: Option<PathBuf>,
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<ServiceCommand>,
}

/// Subcommands of a service binary.
#[derive(Debug, Clone, Subcommand)]
pub enum ServiceCommand {
    /// Run the service (the default).
    Serve,
    /// Ask the local instance (127.0.0.1:<server.port>) for its gRPC health; exit 0 only when SERVING.
    /// Lets container health checks work without a shell.
    Healthcheck,
}

impl ServiceArgs {
    /// Whether this invocation is a health probe.
    pub fn is_healthcheck(&self) -> bool {
        matches!(self.command, Some(ServiceCommand::Healthcheck))
    }
}

/// Runs the `healthcheck` subcommand: probes `127.0.0.1:port` for `grpc_service`.
pub async fn healthcheck(port: u16, grpc_service: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        port != 0,
        "healthcheck needs a fixed server.port (SHIPPY_SERVER__PORT)"
    );
    let address = format!("127.0.0.1:{port}");
    let status = crate::health::check(&address, grpc_service, std::time::Duration::from_secs(3))
        .await
        .map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        status == tonic_health::pb::health_check_response::ServingStatus::Serving,
        "{grpc_service} at {address} is {}",
        status.as_str_name()
    );
    println!("{grpc_service} at {address} is SERVING");
    Ok(())
}
