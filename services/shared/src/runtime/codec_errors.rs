//! Clear answers to requests the gRPC codec cannot read, as a tower layer of the server stack
//! ([`CodecErrorsLayer`]).
//!
//! tonic's generated servers answer a request whose bytes are not a valid protobuf message with
//! `INTERNAL` and prost's decoder text, and one over the decode limit (tonic's default, 4 MiB) with
//! `OUT_OF_RANGE` and "decoded message length too large ...". Both are the client's fault and both
//! leak internals. The handlers never see such requests, so the only place to answer them well is
//! around the routes: this layer recognises exactly the codec's statuses (by code *and* the codec's
//! own wording, so a handler's genuine `INTERNAL` passes untouched) and replaces them with
//! `INVALID_ARGUMENT` "the request is not a valid protobuf message", or `RESOURCE_EXHAUSTED`
//! naming the limit. The codec's text is logged at debug level.
//!
//! A status can travel in the response headers (a trailers-only answer, what tonic sends when a
//! unary request fails to decode) or in the trailers (streams); both are rewritten.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::HeaderMap;
use http_body_util::BodyExt as _;
use tonic::{Code, Status, body::Body, codegen::Body as HttpBody};

/// What prost's `DecodeError` says first (`failed to decode Protobuf message: ...`), which tonic's
/// prost codec sends as the message of an `INTERNAL` status.
const PROST_DECODE: &str = "failed to decode Protobuf message: ";
/// What tonic's decoder says when a message is over its size limit (`OUT_OF_RANGE`).
const TOO_LARGE: &str = "Error, decoded message length too large: found ";
/// What tonic's decoder says when the request body ends inside a message (`INTERNAL`).
const TRUNCATED: &str = "Unexpected EOF decoding stream.";

/// The answer a client gets instead of `status`, when `status` is the codec's.
fn clear_answer(status: &Status) -> Option<Status> {
    let message = status.message();
    match status.code() {
        Code::Internal if message.starts_with(PROST_DECODE) => Some(Status::invalid_argument(
            "the request is not a valid protobuf message",
        )),
        Code::Internal if message == TRUNCATED => Some(Status::invalid_argument(
            "the request ended in the middle of a protobuf message",
        )),
        Code::OutOfRange if message.starts_with(TOO_LARGE) => {
            // "... found {len} bytes, the limit is: {limit} bytes"
            let number_after = |label: &str| {
                message.split(label).nth(1).and_then(|rest| {
                    rest.split(' ')
                        .next()
                        .and_then(|n| n.trim().parse::<u64>().ok())
                })
            };
            let limit = number_after("the limit is: ").map_or_else(|| "the limit".to_owned(), size);
            let found =
                number_after("found ").map_or_else(String::new, |n| format!(" ({n} bytes)"));
            Some(Status::resource_exhausted(format!(
                "the request{found} is larger than the {limit} a message may have"
            )))
        }
        _ => None,
    }
}

/// `bytes` as a person reads it: whole MiB or KiB when exact, bytes otherwise.
fn size(bytes: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// The `grpc-status` values of the codec's statuses: `INTERNAL` and `OUT_OF_RANGE`.
const CODEC_CODES: [&[u8]; 2] = [b"13", b"11"];

/// Replaces the status in `headers` (response headers or trailers) when it is the codec's.
fn rewrite(headers: &mut HeaderMap) {
    // Every other answer, each OK one's trailers above all, stops here: reading a status copies
    // the whole map into its metadata.
    if !headers
        .get("grpc-status")
        .is_some_and(|value| CODEC_CODES.contains(&value.as_bytes()))
    {
        return;
    }
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    let Some(clear) = clear_answer(&status) else {
        return;
    };
    tracing::debug!(codec = %status.message(), answer = %clear.message(), "request could not be decoded");
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        headers.remove(name);
    }
    if let Err(error) = clear.add_header(headers) {
        tracing::warn!(%error, "could not set a clear status");
    }
}

/// Answers requests the codec cannot read with a clear status (see the module documentation).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct CodecErrorsLayer;

impl<S> tower::Layer<S> for CodecErrorsLayer {
    type Service = CodecErrors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CodecErrors { inner }
    }
}

/// The service made by [`CodecErrorsLayer`].
#[derive(Debug, Clone)]
pub(super) struct CodecErrors<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for CodecErrors<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: HttpBody<Data = bytes::Bytes> + Send + 'static,
    R::Error: Into<tonic::codegen::StdError>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            if response.headers().contains_key("grpc-status") {
                // Trailers-only: the whole answer is in the headers.
                rewrite(response.headers_mut());
                return Ok(response.map(Body::new));
            }
            Ok(response.map(|body| {
                Body::new(body.map_frame(|mut frame| {
                    if let Some(trailers) = frame.trailers_mut() {
                        rewrite(trailers);
                    }
                    frame
                }))
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: &Status) -> Option<(Code, String)> {
        clear_answer(status).map(|s| (s.code(), s.message().to_owned()))
    }

    #[test]
    fn the_codes_checked_first_are_the_codecs() {
        assert_eq!(
            CODEC_CODES,
            [Code::Internal, Code::OutOfRange].map(|code| (code as i32).to_string().into_bytes())
        );
        // An OK answer's trailers are left as they are.
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        rewrite(&mut trailers);
        assert_eq!(trailers.len(), 1);
    }

    #[test]
    fn the_codecs_statuses_become_clear_answers() {
        // prost's `DecodeError` text, as tonic's prost codec sends it.
        let decode = "failed to decode Protobuf message: invalid wire type value: 7";
        assert_eq!(
            answered(&Status::internal(decode)),
            Some((
                Code::InvalidArgument,
                "the request is not a valid protobuf message".to_owned()
            ))
        );
        let too_large = Status::out_of_range(
            "Error, decoded message length too large: found 5242885 bytes, the limit is: 4194304 bytes",
        );
        assert_eq!(
            answered(&too_large),
            Some((
                Code::ResourceExhausted,
                "the request (5242885 bytes) is larger than the 4 MiB a message may have"
                    .to_owned()
            ))
        );
        assert_eq!(
            answered(&Status::internal(TRUNCATED)).map(|a| a.0),
            Some(Code::InvalidArgument)
        );
    }

    #[test]
    fn other_statuses_are_left_alone() {
        for status in [
            Status::internal("internal error"),
            Status::internal("the store failed: failed to decode Protobuf message: x"),
            Status::invalid_argument("failed to decode Protobuf message: x"),
            Status::out_of_range("page 7 does not exist"),
        ] {
            assert_eq!(answered(&status), None, "{status:?}");
        }
    }

    #[test]
    fn headers_are_rewritten_in_place_and_others_kept() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/grpc".parse().expect("value"));
        Status::internal("failed to decode Protobuf message: buffer underflow")
            .add_header(&mut headers)
            .expect("status header");
        rewrite(&mut headers);
        let status = Status::from_header_map(&headers).expect("status");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "the request is not a valid protobuf message"
        );
        assert_eq!(headers["content-type"], "application/grpc");
    }
}
