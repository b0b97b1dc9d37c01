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
    /// A create failed in a way that leaves open whether it was done; `retry` is the option that
    /// makes repeating the command safe (the same idempotency key).
    #[error(
        "{}; to try again without risking a second one, repeat the command with {retry}",
        describe(.status)
    )]
    Unsure {
        /// What the service (or the connection) said.
        status: Status,
        /// The option to repeat the command with.
        retry: String,
    },
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

impl CliError {
    /// The error of a create sent with the idempotency key `key`: when the failure leaves open
    /// whether it was done (the service or the connection went away, or the time ran out), it
    /// says how to repeat the command safely.
    pub fn unsure(status: Status, key: &str) -> Self {
        let unknown = matches!(
            status.code(),
            Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Cancelled
                | Code::Unknown
                | Code::Internal
        );
        if !unknown {
            return Self::Rpc(status);
        }
        Self::Unsure {
            status,
            retry: format!("--idempotency-key {}", shell_quoted(key)),
        }
    }
}

/// `text` as one shell word: as it is when that is safe, else in single quotes.
fn shell_quoted(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:@%+=,".contains(&b));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_create_of_unknown_outcome_says_how_to_repeat_it_safely() {
        let unsure = CliError::unsure(Status::unavailable("storage is unavailable"), "k-1");
        assert_eq!(
            unsure.to_string(),
            "service unavailable: storage is unavailable; to try again without risking a second \
             one, repeat the command with --idempotency-key k-1"
        );
        let quoted = CliError::unsure(Status::deadline_exceeded("late"), "it's;$x");
        assert!(
            quoted
                .to_string()
                .ends_with(r"--idempotency-key 'it'\''s;$x'"),
            "{quoted}"
        );
        // A refusal leaves nothing open: no advice.
        let refused = CliError::unsure(Status::invalid_argument("weight: must be at least 1"), "k");
        assert_eq!(refused.to_string(), "rejected: weight: must be at least 1");
    }
}
