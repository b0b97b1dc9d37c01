//! Every error answer of the gateway: an RFC 9457 `application/problem+json` body with the HTTP
//! status of the gRPC code, the service's one-sentence message and the request id. This is the
//! gateway's one error → HTTP mapping; what the services' messages say was already written for
//! clients, and gateway-side causes are logged, never sent.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use tonic::Code;

/// The media type of error bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error answer.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// Always `about:blank`: the status and `code` say what kind of problem it is.
    #[serde(rename = "type")]
    kind: &'static str,
    /// The status's reason phrase.
    title: &'static str,
    /// The HTTP status.
    status: u16,
    /// What went wrong, in one sentence a client can show.
    detail: String,
    /// The gRPC code's name (`INVALID_ARGUMENT`, ...), the same for REST and gRPC clients.
    code: &'static str,
    /// The request id, also in the `x-request-id` header; quote it when reporting a problem.
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
    /// Seconds to wait before retrying (with 429 and 503), also in `Retry-After`.
    #[serde(skip)]
    retry_after: Option<u64>,
}

impl Problem {
    /// A problem with `code`'s HTTP status and `detail`.
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        let status = http_status(code);
        Self {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
            code: grpc_name(code),
            request_id: None,
            retry_after: None,
        }
    }

    /// A problem with an HTTP status that has no gRPC code (unknown route, wrong method, body too
    /// large, wrong media type).
    pub fn http(status: StatusCode, code: Code, detail: impl Into<String>) -> Self {
        Self {
            status: status.as_u16(),
            title: status.canonical_reason().unwrap_or("Error"),
            ..Self::new(code, detail)
        }
    }

    /// The answer to a failed gRPC call. A `RESOURCE_EXHAUSTED` one always says when to retry: what
    /// the service asked for, else in a second.
    pub fn from_status(status: &tonic::Status) -> Self {
        let detail = match status.message() {
            "" => format!("the call failed ({})", status.code().description()),
            message => message.to_owned(),
        };
        let problem = Self::new(status.code(), detail);
        if status.code() == Code::ResourceExhausted {
            problem.retry_after(shippy_shared::status::retry_after(status).unwrap_or(1))
        } else {
            problem
        }
    }

    /// Names the request id in the body.
    #[must_use]
    pub fn with_request_id(mut self, id: &str) -> Self {
        self.request_id = Some(id.to_owned());
        self
    }

    /// Asks the client to wait `secs` before retrying.
    #[must_use]
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(mut self) -> Response {
        // Made inside a request's scope (the edge layer sets it), the problem names its id.
        if self.request_id.is_none() {
            self.request_id = shippy_shared::discovery::trace::RequestId::current()
                .map(|id| id.as_str().to_owned());
        }
        let status = self.status();
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// The canonical name of a gRPC code, as in the gRPC specification.
fn grpc_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The HTTP status of a gRPC code: the mapping of Google's API design guide and grpc-gateway.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_s_codes_have_their_statuses() {
        for (code, status) in [
            (Code::InvalidArgument, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::ResourceExhausted, 429),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
        ] {
            assert_eq!(http_status(code).as_u16(), status, "{code:?}");
        }
    }

    #[test]
    fn a_problem_body_names_code_detail_and_request_id() {
        let problem = Problem::new(Code::NotFound, "no vessel fits").with_request_id("r-1");
        let json = serde_json::to_value(&problem).expect("json");
        assert_eq!(json["status"], 404);
        assert_eq!(json["title"], "Not Found");
        assert_eq!(json["code"], "NOT_FOUND");
        assert_eq!(json["detail"], "no vessel fits");
        assert_eq!(json["request_id"], "r-1");
    }

    #[test]
    fn every_429_says_when_to_retry() {
        let retry_after = |status: &tonic::Status| {
            Problem::from_status(status)
                .into_response()
                .headers()
                .get(header::RETRY_AFTER)
                .map(|value| value.to_str().expect("ASCII").to_owned())
        };
        let limited = shippy_shared::status::exhausted("too many login attempts", 7);
        assert_eq!(retry_after(&limited).as_deref(), Some("7"));
        let unsaid = tonic::Status::resource_exhausted("busy");
        assert_eq!(retry_after(&unsaid).as_deref(), Some("1"));
        assert_eq!(retry_after(&tonic::Status::not_found("no vessel")), None);
    }
}
