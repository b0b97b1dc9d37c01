//! The CLI's errors: each prints as one sentence a person can act on.

use shippy_shared::{centre::CentreError, discovery::DiscoveryError, etcd::EtcdError};
use tonic::{Code, Status};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad local input: missing file, malformed JSON, too large.
    #[error("{0}")]
    Input(String),
    /// No saved token and no SHIPPY_TOKEN.
    #[error(
        "not logged in: run `shippy login --email <email> --password <password>` or set SHIPPY_TOKEN"
    )]
    NotLoggedIn,
    /// A service answered with an error.
    #[error("{}", describe(.0))]
    Rpc(Status),
    /// Local setup: settings, discovery, token file.
    #[error("{0}")]
    Setup(String),
    /// etcd (the registry or the config centre) did not answer or refused the request; its text
    /// names the endpoints tried and what to check.
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    /// Whoever read our standard output stopped reading (`shippy ... | head -1`). Not a failure
    /// to report: the CLI exits quietly with [`CliError::BROKEN_PIPE_STATUS`].
    #[error("standard output was closed before everything was written")]
    BrokenPipe,
    /// Standard output could not be written for another reason (disk full, ...).
    #[error("cannot write the output: {0}")]
    Output(std::io::Error),
}

impl CliError {
    /// Exit status after [`CliError::BrokenPipe`]: 141 (128 + SIGPIPE), what a shell reports for a
    /// C tool killed by SIGPIPE, so `set -o pipefail` scripts see `shippy` as they see `cat`.
    pub const BROKEN_PIPE_STATUS: u8 = 141;

    /// A failed write to standard output.
    pub fn output(error: std::io::Error) -> Self {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            Self::BrokenPipe
        } else {
            Self::Output(error)
        }
    }

    /// A discovery failure; an etcd failure inside it says which endpoints were tried.
    pub fn discovery(error: DiscoveryError) -> Self {
        match error {
            DiscoveryError::Etcd(error) => Self::Etcd(error),
            error => Self::Setup(format!("service discovery: {error}")),
        }
    }

    /// A config centre failure; an etcd failure inside it says which endpoints were tried.
    pub fn centre(error: CentreError) -> Self {
        match error {
            CentreError::Etcd(error) => Self::Etcd(error),
            error => Self::Setup(format!("config centre: {error}")),
        }
    }
}

impl From<Status> for CliError {
    fn from(status: Status) -> Self {
        Self::Rpc(status)
    }
}

fn describe(status: &Status) -> String {
    let message = status.message();
    match status.code() {
        Code::Unauthenticated => format!("not authenticated: {message} (run `shippy login`)"),
        Code::InvalidArgument => format!("rejected: {message}"),
        Code::AlreadyExists | Code::NotFound | Code::FailedPrecondition => message.to_owned(),
        Code::Unavailable => format!("service unavailable: {message}"),
        Code::DeadlineExceeded => format!("timed out: {message}"),
        Code::PermissionDenied => format!("not allowed: {message}"),
        Code::ResourceExhausted => format!("too busy: {message}"),
        code => format!("{message} ({code:?})"),
    }
}
