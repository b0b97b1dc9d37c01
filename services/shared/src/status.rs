//! The edge of every service: how errors that are not the service's own reach its clients. A
//! dependency's failure becomes `UNAVAILABLE` (retryable, with a sentence saying nothing was saved)
//! or `INTERNAL`; a store failure likewise. Causes (addresses, driver messages, the upstream's own
//! text) are logged here and never sent.

use tonic::{Code, Status};

use crate::store::StoreError;

/// The metadata key of a `RESOURCE_EXHAUSTED` answer that says how many seconds to wait before
/// trying again (the REST gateway passes it on as `Retry-After`).
pub const RETRY_AFTER: &str = "retry-after";

/// `RESOURCE_EXHAUSTED` with `message`, asking the caller to wait `secs` (at least 1) before trying
/// again.
pub fn exhausted(message: impl Into<String>, secs: u64) -> Status {
    let mut status = Status::resource_exhausted(message);
    status
        .metadata_mut()
        .insert(RETRY_AFTER, secs.max(1).into());
    status
}

/// The seconds `status` asks its caller to wait, when it says.
pub fn retry_after(status: &Status) -> Option<u64> {
    status
        .metadata()
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The status to answer when the `service` we depend on answered `status`.
pub fn upstream(service: &str, status: &Status) -> Status {
    tracing::warn!(service, code = ?status.code(), message = status.message(), "dependency failed");
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted => {
            Status::unavailable(format!(
                "the {service} service is unavailable; nothing was saved, try again later"
            ))
        }
        _ => Status::internal("internal error"),
    }
}

/// The status to answer when the store failed.
pub fn store(error: &StoreError) -> Status {
    match error {
        StoreError::Duplicate(what) => Status::already_exists(format!("{what} already exists")),
        StoreError::Unavailable(cause) => {
            tracing::warn!(%cause, "store unavailable");
            Status::unavailable("storage is unavailable; nothing was saved, try again later")
        }
        StoreError::Unconfirmed(cause) => {
            tracing::warn!(%cause, "store did not confirm a write");
            Status::unavailable(
                "storage did not confirm the write: it may have been saved; check before trying again",
            )
        }
        StoreError::Internal(cause) => {
            tracing::error!(%cause, "store failure");
            Status::internal("internal error")
        }
    }
}

/// The status to answer for a failure of our own that the client cannot act on.
pub fn internal(cause: &dyn std::fmt::Display) -> Status {
    tracing::error!(%cause, "internal error");
    Status::internal("internal error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_are_retryable_and_details_stay_inside() {
        let mapped = upstream(
            "vessel",
            &Status::unavailable("tcp connect error 10.1.2.3:50052"),
        );
        assert_eq!(mapped.code(), Code::Unavailable);
        assert!(!mapped.message().contains("10.1.2.3"));
        let mapped = upstream("user", &Status::internal("boom"));
        assert_eq!(
            (mapped.code(), mapped.message()),
            (Code::Internal, "internal error")
        );
    }

    #[test]
    fn store_causes_never_reach_clients() {
        let status = store(&StoreError::Internal("secret connection string".into()));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret"));
        let status = store(&StoreError::Unavailable("10.0.0.5:27017 refused".into()));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(!status.message().contains("10.0.0.5"));
        let status = store(&StoreError::Duplicate("email a@b.c".into()));
        assert_eq!(status.code(), Code::AlreadyExists);
        let status = store(&StoreError::Unconfirmed(
            "waiting for replication, w=2".into(),
        ));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            status.message().contains("may have been saved"),
            "{status:?}"
        );
        assert!(
            !status.message().contains("nothing was saved"),
            "{status:?}"
        );
    }
}
