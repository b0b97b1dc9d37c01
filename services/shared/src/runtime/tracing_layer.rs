//! One span and one request id per call served, as a tower layer of the server stack
//! ([`TraceLayer`]).
//!
//! For every call (health checks and reflection excepted) it takes the caller's W3C trace context
//! (`traceparent`, `tracestate`) and `x-request-id` from the metadata (making a request id when
//! the caller sent none), opens a `grpc.server` span named and attributed per the OpenTelemetry
//! RPC conventions (`rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`,
//! `server.address`) that records `request_id`, `trace_id` and `span_id` for the log lines inside
//! it, and serves the call with that request id current, so every call the handler makes passes
//! it on (see `discovery::trace`). The caller's deadline and version pins are made current the
//! same way (`discovery::context`): the layer that sets up the call's context is this one.
//!
//! Whether the call's trace is sampled is decided here, before the span is built
//! ([`EdgeSampler`]): the caller's flag when it sent one, else `telemetry.sampling_ratio`. An
//! unsampled call's span is built only when the log level wants it, for the log lines, and is
//! never handed to the exporter; nor are the spans opened inside the call. Its log lines carry
//! its ids all the same (`telemetry`).
//!
//! A failed call's answer carries `x-request-id` in its metadata, so a caller can quote it (and
//! one that sent none learns the id the server made); a success carries none (why: [`answer`]).
//! The status message is left as the handler wrote it (clients and tests match on it). The
//! `shippy` CLI appends the id to the error sentence it prints.
//!
//! It also counts every call in the names of go-grpc-prometheus, which dashboards already know:
//! `grpc_server_started_total`, `grpc_server_handled_total{grpc_service, grpc_method, grpc_code}`,
//! `grpc_server_handling_seconds` (histogram); plus `shippy_server_in_flight_calls` and
//! `shippy_server_rate_limited_total` (calls refused by the `limits.*` rate limit).

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
};

use tonic::{Code, Status};
use tracing::{Instrument as _, field::Empty};

use crate::{
    call_metrics::{ByPath, PerCode},
    discovery::{
        InFlightGauge,
        context::CallContext,
        trace::{self, EdgeSampler, REQUEST_ID_HEADER, RequestId, code_name},
    },
};

/// The metric handles of one method served (see `call_metrics`).
#[derive(Debug)]
struct MethodMetrics {
    service: String,
    method: String,
    started: metrics::Counter,
    handled: PerCode,
    seconds: metrics::Histogram,
    in_flight: metrics::Gauge,
    rate_limited: OnceLock<metrics::Counter>,
}

impl MethodMetrics {
    fn new(service: &str, method: &str) -> Self {
        let (service, method) = (service.to_owned(), method.to_owned());
        Self {
            started: metrics::counter!("grpc_server_started_total", "grpc_type" => "unary", "grpc_service" => service.clone(), "grpc_method" => method.clone()),
            seconds: metrics::histogram!("grpc_server_handling_seconds", "grpc_type" => "unary", "grpc_service" => service.clone(), "grpc_method" => method.clone()),
            in_flight: metrics::gauge!("shippy_server_in_flight_calls", "grpc_service" => service.clone()),
            handled: PerCode::default(),
            rate_limited: OnceLock::new(),
            service,
            method,
        }
    }

    fn handled(&self, code: Code) -> &metrics::Counter {
        self.handled.get(code, || {
            metrics::counter!("grpc_server_handled_total", "grpc_type" => "unary", "grpc_service" => self.service.clone(), "grpc_method" => self.method.clone(), "grpc_code" => code_name(code))
        })
    }

    fn rate_limited(&self) -> &metrics::Counter {
        self.rate_limited.get_or_init(|| {
            metrics::counter!("shippy_server_rate_limited_total", "grpc_service" => self.service.clone(), "grpc_method" => self.method.clone())
        })
    }
}

/// The start of the message of a call refused by the rate limit (`limits`).
const RATE_LIMITED: &str = "rate limit exceeded";

/// Paths that get no span: probes and tooling would drown the traces of real calls.
fn untraced(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

/// Opens the server span of every call and carries its request id; see the module docs.
#[derive(Debug, Clone)]
pub(super) struct TraceLayer {
    /// The advertised address of this instance (`server.address`).
    address: Arc<str>,
    /// Whether a call's trace is sampled, decided before its span is built.
    sampler: EdgeSampler,
    /// The metric handles of each method, shared by every connection's copy of the layer.
    metrics: Arc<ByPath<MethodMetrics>>,
}

impl TraceLayer {
    /// A layer for the instance advertised at `address`, deciding traces with `sampler`.
    pub(super) fn new(address: String, sampler: EdgeSampler) -> Self {
        Self {
            address: address.into(),
            sampler,
            metrics: Arc::default(),
        }
    }
}

impl<S> tower::Layer<S> for TraceLayer {
    type Service = Traced<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Traced {
            inner,
            address: Arc::clone(&self.address),
            sampler: self.sampler,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

/// The service made by [`TraceLayer`].
#[derive(Debug, Clone)]
pub(super) struct Traced<S> {
    inner: S,
    address: Arc<str>,
    sampler: EdgeSampler,
    metrics: Arc<ByPath<MethodMetrics>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for Traced<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        if untraced(path) {
            return Box::pin(self.inner.call(request));
        }
        let request_id = RequestId::from_headers(request.headers());
        let (name, rpc_service, rpc_method) = trace::rpc_names(path);
        let open = || {
            tracing::info_span!(
                "grpc.server",
                otel.name = name,
                otel.kind = "server",
                rpc.system = "grpc",
                rpc.service = rpc_service,
                rpc.method = rpc_method,
                server.address = %self.address,
                request_id = %request_id,
                trace_id = Empty,
                span_id = Empty,
                rpc.grpc.status_code = Empty,
                otel.status_code = Empty,
            )
        };
        // The caller's deadline and version pins go on to every call made while serving this one,
        // and so does the trace, decided here before any span is built.
        let context = CallContext::from_headers(request.headers(), std::time::Instant::now());
        // A malformed or missing `traceparent` gives an empty context: the call starts a trace.
        let parent = trace::extract(request.headers());
        let (span, context) = self.sampler.open_call(parent, context, open);
        let handles = self
            .metrics
            .get(path, || MethodMetrics::new(rpc_service, rpc_method));
        let served = request_id
            .clone()
            .scope(context.scope(self.inner.call(request).instrument(span.clone())));
        let started = std::time::Instant::now();
        handles.started.increment(1);
        let in_flight = InFlightGauge::start(handles.in_flight.clone());
        Box::pin(async move {
            let mut response = served.await?;
            drop(in_flight);
            let (code, rate_limited) = answer(&span, &request_id, &mut response);
            let elapsed = started.elapsed().as_secs_f64();
            handles.handled(code).increment(1);
            handles.seconds.record(elapsed);
            if rate_limited {
                handles.rate_limited().increment(1);
            }
            // One access-log line per call, at debug level (`log.level=info,shippy_shared=debug`).
            tracing::debug!(parent: &span, code = ?code, elapsed_ms = elapsed * 1e3, "call served");
            Ok(response)
        })
    }
}

/// Records the call's status on `span` and, when the call failed, puts the request id in the
/// response metadata; returns the status code, and whether the rate limit refused the call.
///
/// Only a failure carries the id back: that is where a person needs one to quote, and a caller
/// that sent none learns it there. A success does not: a caller that sent its own id has it, and
/// repeating a fresh value on every answer costs both ends of the connection a literal HPACK
/// has never seen (about 2 µs to encode and 3.5 µs to decode, see docs/PERFORMANCE.md), for an
/// id nobody asked for. Envoy does the same by default (`always_set_request_id_in_response`
/// off); a client that wants to match its successes to the services' log lines sends its own
/// id, as the CLI and the gateway do.
fn answer<R>(
    span: &tracing::Span,
    request_id: &RequestId,
    response: &mut http::Response<R>,
) -> (Code, bool) {
    let headers = response.headers_mut();
    // A unary call that failed is answered trailers-only, its status in the headers; one with a
    // message body succeeded.
    let mut rate_limited = false;
    let code = match Status::from_header_map(headers) {
        Some(status) if status.code() != Code::Ok => {
            rate_limited = status.code() == Code::ResourceExhausted
                && status.message().starts_with(RATE_LIMITED);
            status.code()
        }
        _ => Code::Ok,
    };
    if code != Code::Ok {
        headers.insert(REQUEST_ID_HEADER, request_id.header_value());
    }
    span.record("rpc.grpc.status_code", code as i32);
    if is_server_error(code) {
        span.record("otel.status_code", "ERROR");
    }
    (code, rate_limited)
}

/// Codes that mean the server failed (per the OpenTelemetry gRPC conventions for server spans);
/// the others are the caller's doing and leave the span unset.
fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_the_request_id_in_metadata_and_keep_their_message() {
        let request_id = RequestId::generate();
        let mut response = Status::not_found("no such vessel").into_http::<()>();
        let _ = answer(&tracing::Span::none(), &request_id, &mut response);
        let status = Status::from_header_map(response.headers()).expect("a status");
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "no such vessel");
        assert_eq!(
            response.headers()[REQUEST_ID_HEADER]
                .to_str()
                .expect("ascii"),
            request_id.as_str()
        );
    }

    #[test]
    fn a_success_carries_no_request_id() {
        let mut response = http::Response::new(());
        let _ = answer(
            &tracing::Span::none(),
            &RequestId::generate(),
            &mut response,
        );
        assert!(Status::from_header_map(response.headers()).is_none());
        assert!(!response.headers().contains_key(REQUEST_ID_HEADER));
    }
}
