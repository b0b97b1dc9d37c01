//! The command line every service binary shares: `serve` (the default) and `healthcheck`.

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::catalog::ServiceSpec;

/// Command line of a shippy service.
#[derive(Debug, Parser)]
#[command(
    about = "A shippy service. Settings: defaults < --config file < etcd config centre < SHIPPY_* env vars."
)]
pub(super) struct ServiceArgs {
    /// Settings file (YAML, JSON or TOML).
    #[arg(long, short, env = "SHIPPY_CONFIG_FILE", global = true)]
    pub config: Option<PathBuf>,
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<ServiceCommand>,
}

/// Subcommands of a service binary.
#[derive(Debug, Clone, Subcommand)]
pub(super) enum ServiceCommand {
    /// Run the service (the default).
    Serve,
    /// Ask the local instance (127.0.0.1:<server.port>) for its gRPC health; exit 0 only when SERVING.
    /// Lets container health checks work without a shell.
    Healthcheck,
}

impl ServiceArgs {
    /// Parses the process's arguments; `--help` and `--version` name the service's own binary.
    pub(super) fn parse_for(spec: &ServiceSpec, version: &'static str) -> Self {
        let matches = Self::command()
            .name(spec.binary)
            .bin_name(spec.binary)
            .version(version)
            .get_matches();
        Self::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
    }

    /// Whether this invocation is a health probe.
    pub(super) fn is_healthcheck(&self) -> bool {
        matches!(self.command, Some(ServiceCommand::Healthcheck))
    }
}
