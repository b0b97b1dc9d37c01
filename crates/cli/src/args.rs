//! Command-line syntax of `shippy`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Command-line client for the shippy services.
#[derive(Debug, Parser)]
#[command(
    name = "shippy",
    version,
    about,
    propagate_version = true,
    after_help = "Exit status: 0 success; 1 the command failed (the reason on stderr); 2 a bad command \
                  line; 141 standard output was closed early (as in `shippy ... | head -1`)."
)]
pub struct Cli {
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t = Output::Table, env = "SHIPPY_OUTPUT")]
    pub output: Output,
    /// Talk to this address (host:port) instead of finding the service through discovery.
    #[arg(long, global = true)]
    pub addr: Option<String>,
    /// Settings file (same format and SHIPPY_* variables as the services; registry.* and etcd.* matter).
    #[arg(long, short, global = true, env = "SHIPPY_CONFIG_FILE")]
    pub config: Option<PathBuf>,
    /// Trace this command: print its trace id on stderr and have every service it reaches record
    /// the trace (exported where `telemetry.otlp_endpoint` / OTEL_EXPORTER_OTLP_ENDPOINT is set).
    #[arg(long, global = true)]
    pub trace: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned tables for people.
    Table,
    /// JSON for scripts.
    Json,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Log in and keep the token for later commands.
    Login {
        /// Email of the account.
        #[arg(
            long,
            required_unless_present = "oidc_token",
            conflicts_with = "oidc_token"
        )]
        email: Option<String>,
        /// Password (or SHIPPY_PASSWORD, which keeps it out of the process list).
        #[arg(
            long,
            env = "SHIPPY_PASSWORD",
            hide_env_values = true,
            required_unless_present = "oidc_token"
        )]
        password: Option<String>,
        /// Log in with an ID token of the OpenID Connect provider the user service trusts
        /// (`user.oidc.*`) instead of a password: it is exchanged for a shippy token of the
        /// user registered with the token's verified email. Or SHIPPY_OIDC_TOKEN.
        #[arg(long, env = "SHIPPY_OIDC_TOKEN", hide_env_values = true)]
        oidc_token: Option<String>,
    },
    /// Forget the saved token.
    Logout,
    /// Submit and list consignments.
    #[command(subcommand)]
    Consignment(ConsignmentCommand),
    /// Manage the fleet.
    #[command(subcommand)]
    Vessel(VesselCommand),
    /// Read or replace a service's document in the etcd config centre (`/<prefix>/config/<service>`).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Show the registered instances of every service (or of one) and their health.
    ///
    /// Fails when a named service has no serving instance, or when `--wait` runs out.
    Status {
        /// Only this service (consignment, vessel or user).
        service: Option<String>,
        /// Wait up to this many seconds until every service (or the named one) has a serving
        /// instance.
        #[arg(long, value_name = "SECONDS")]
        wait: Option<u64>,
    },
}

/// `shippy user ...`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Register a user.
    Create {
        /// Full name.
        #[arg(long)]
        name: String,
        /// Email, used to log in.
        #[arg(long)]
        email: String,
        /// Company.
        #[arg(long, default_value = "")]
        company: String,
        /// Password, 8 characters or more (or SHIPPY_PASSWORD).
        #[arg(long, env = "SHIPPY_PASSWORD", hide_env_values = true)]
        password: String,
    },
    /// Show the logged-in user (users see only themselves).
    List,
}

/// `shippy consignment ...`.
#[derive(Debug, Subcommand)]
pub enum ConsignmentCommand {
    /// Submit a consignment JSON file (shippy's consignment.json format); `-` reads stdin.
    Create {
        /// The file.
        #[arg(default_value = "consignment.json")]
        file: String,
        /// Your name for this consignment (printable ASCII, no spaces, at most 128 characters).
        /// Repeating the command with the same key answers with the consignment the first run
        /// created and creates no second one. Without it, a new key is made for each run (and
        /// printed should the outcome be unknown).
        #[arg(long, value_name = "KEY")]
        idempotency_key: Option<String>,
    },
    /// List consignments.
    List,
}

/// `shippy vessel ...`.
#[derive(Debug, Subcommand)]
pub enum VesselCommand {
    /// Add a vessel.
    Create {
        /// Name.
        #[arg(long)]
        name: String,
        /// Containers it carries.
        #[arg(long)]
        capacity: i32,
        /// Heaviest load it carries.
        #[arg(long)]
        max_weight: i32,
        /// Owning user id.
        #[arg(long, default_value = "")]
        owner_id: String,
        /// Add it as not available.
        #[arg(long)]
        unavailable: bool,
        /// Your name for this vessel (printable ASCII, no spaces, at most 128 characters).
        /// Repeating the command with the same key answers with the vessel the first run added
        /// and adds no second one. Without it, a new key is made for each run (and printed should
        /// the outcome be unknown).
        #[arg(long, value_name = "KEY")]
        idempotency_key: Option<String>,
    },
    /// List the fleet.
    List,
}

/// `shippy config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the service's document.
    Get {
        /// consignment, vessel or user.
        service: String,
    },
    /// Validate a YAML or JSON settings document and store it; running instances apply it live.
    Set {
        /// consignment, vessel or user.
        service: String,
        /// The document; `-` reads stdin.
        file: String,
    },
}
