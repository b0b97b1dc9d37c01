//! The CLI's errors: each prints as one sentence a person can act on.

use tonic::{Code, Status};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad local input: missing file, malformed JSON.
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
        code => format!("{message} ({code:?})"),
    }
}
