//! How a failure of another service reaches our own clients: retryable outages become
//! `UNAVAILABLE` with a sentence saying nothing was saved, anything else `INTERNAL`; the upstream's
//! own message (addresses, internals) is logged, never forwarded.

use tonic::{Code, Status};

/// The status to answer when `service` answered `status`.
pub fn status(service: &str, status: &Status) -> Status {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_are_retryable_and_details_stay_inside() {
        let mapped = status(
            "vessel",
            &Status::unavailable("tcp connect error 10.1.2.3:50052"),
        );
        assert_eq!(mapped.code(), Code::Unavailable);
        assert!(!mapped.message().contains("10.1.2.3"));
        let mapped = status("user", &Status::internal("boom"));
        assert_eq!(
            (mapped.code(), mapped.message()),
            (Code::Internal, "internal error")
        );
    }
}
