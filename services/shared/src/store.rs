//! The error every store implementation reports, whatever its backend, and how it reaches clients.

use tonic::Status;

/// Store failures, classified by what a caller can do about them.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique key is taken (e.g. a user's email).
    #[error("{0} already exists")]
    Duplicate(String),
    /// The backend cannot be reached or did not acknowledge the write; retrying later may work.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug or corrupt data.
    #[error("store failure: {0}")]
    Internal(String),
}

impl StoreError {
    /// The client-facing status. Causes are logged here in full and never sent to clients.
    pub fn to_status(&self) -> Status {
        match self {
            Self::Duplicate(what) => Status::already_exists(format!("{what} already exists")),
            Self::Unavailable(cause) => {
                tracing::warn!(%cause, "store unavailable");
                Status::unavailable("storage is unavailable; nothing was saved, try again later")
            }
            Self::Internal(cause) => {
                tracing::error!(%cause, "store failure");
                Status::internal("internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_never_reach_clients() {
        let status = StoreError::Internal("secret connection string".into()).to_status();
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(!status.message().contains("secret"));
        let status = StoreError::Unavailable("10.0.0.5:27017 refused".into()).to_status();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(!status.message().contains("10.0.0.5"));
        assert_eq!(
            StoreError::Duplicate("email a@b.c".into())
                .to_status()
                .code(),
            tonic::Code::AlreadyExists
        );
    }
}
