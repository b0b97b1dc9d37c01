//! Following one request across processes: the request id, W3C trace context in gRPC metadata,
//! and the OpenTelemetry pipeline that exports spans over OTLP.
//!
//! It lives beside the balanced channel because that channel is the one transport of every
//! outgoing call (service to service and CLI to service): [`super::balance`] injects what this
//! module defines, and the server stack (`runtime`) extracts it.
//!
//! - **Request id**: `x-request-id`, taken from the caller or made by the first hop, passed on in
//!   every outgoing call made while serving the request ([`RequestId::scope`]), and returned in
//!   the metadata of every failed call's answer (not of a success: `runtime::tracing_layer` says
//!   why).
//! - **Trace context**: `traceparent` / `tracestate` (W3C) in the HTTP/2 headers that carry gRPC
//!   metadata, read and written in place by [`traceparent`] (every call crosses it twice).
//! - **Export** ([`Tracing::install`]): spans go to an OTLP collector (Jaeger, the OpenTelemetry
//!   Collector, ...) over gRPC through a batch processor on its own thread, so a request never
//!   waits for, or fails because of, the collector; a collector that does not answer is one
//!   warning in the log.

use std::{fmt, time::Duration};

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::{
    Context, KeyValue,
    trace::{
        Link, SpanContext, SpanId, SpanKind, TraceContextExt as _, TraceFlags, TraceId, TraceState,
        TracerProvider as _,
    },
};
use opentelemetry_otlp::{SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::{
    Resource,
    trace::{
        Sampler, SamplingDecision, SamplingResult, SdkTracer, SdkTracerProvider, ShouldSample,
    },
};
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt as _};
use tracing_subscriber::registry::LookupSpan;

use super::context::CallContext;
use crate::config::TelemetrySettings;

mod traceparent;

/// The metadata key of the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Longest request id taken from a caller; a longer or non-printable one is replaced.
const MAX_REQUEST_ID: usize = 128;

tokio::task_local! {
    /// The request id of the call being served by this task (set by the server stack).
    static CURRENT: RequestId;
}

/// The id a person quotes to find every log line and span of one request.
///
/// Held as the header value it travels in (printable ASCII, checked when it is made): it goes out
/// in every call made while serving the request and in the answer, and a clone shares its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// A fresh id (a UUID v4, as text).
    pub fn generate() -> Self {
        let id = uuid::Uuid::new_v4().to_string();
        Self(HeaderValue::try_from(id).expect("a UUID's text is a valid header value"))
    }

    /// The caller's id from `headers`, when it is present and sane (printable ASCII, at most 128
    /// characters); otherwise a fresh one.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        Self::sent(headers).unwrap_or_else(Self::generate)
    }

    /// The caller's id from `headers`, when it is present and sane; `None` when the caller sent
    /// none, or one that [`RequestId::from_headers`] would replace.
    pub fn sent(headers: &HeaderMap) -> Option<Self> {
        headers
            .get(REQUEST_ID_HEADER)
            .filter(|id| {
                let id = id.as_bytes();
                !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.iter().all(u8::is_ascii_graphic)
            })
            .map(|id| Self(id.clone()))
    }

    /// The id of the request this task is serving, if any.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// The current request's id, or a fresh one when this task serves none (the first hop).
    pub fn current_or_new() -> Self {
        Self::current().unwrap_or_else(Self::generate)
    }

    /// Runs `future` with `self` as the current request id: every outgoing call it makes carries it.
    pub async fn scope<F: Future>(self, future: F) -> F::Output {
        CURRENT.scope(self, future).await
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Printable ASCII by construction, so never the default.
        self.0.to_str().unwrap_or_default()
    }

    /// The id as a header value (sharing its bytes).
    pub fn header_value(&self) -> HeaderValue {
        self.0.clone()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Writes the trace context of `span` (`traceparent`, `tracestate`) into `headers`; writes nothing
/// when tracing is not installed in this process. A span not built for the exporter (one opened
/// inside an unsampled call, see [`super::context`]) has no context of its own: the call's server
/// span's context goes instead, so the next hop learns that the trace is not sampled.
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    let trace = match span_context(span) {
        Some(own) => own,
        None => match CallContext::current().trace() {
            Some(call) => call.clone(),
            None => return,
        },
    };
    let value = HeaderValue::from_bytes(&traceparent::format(&trace))
        .expect("hex digits and dashes are a valid header value");
    headers.insert(TRACEPARENT, value);
    let state = trace.trace_state().header();
    if !state.is_empty()
        && let Ok(state) = HeaderValue::try_from(state)
    {
        headers.insert(TRACESTATE, state);
    }
}

/// The span a log line about `span`'s work goes under: `span` itself, or, when it was not built
/// (an unsampled call with logs at warn), the span this task is in, so the line still carries the
/// call's request id.
pub fn log_parent(span: &tracing::Span) -> Option<tracing::Id> {
    span.id().or_else(|| tracing::Span::current().id())
}

/// The caller's trace context from `headers` (`None` when there is none or it is malformed).
pub fn extract(headers: &HeaderMap) -> Option<SpanContext> {
    let state = headers
        .get(TRACESTATE)
        .and_then(|value| value.to_str().ok());
    headers
        .get(TRACEPARENT)
        .and_then(|value| traceparent::parse(value.as_bytes(), state))
}

/// The trace id and span id of `span` as lower-case hex, when tracing is installed.
pub fn ids(span: &tracing::Span) -> Option<(String, String)> {
    span_context(span).map(|trace| hex_ids(&trace))
}

fn span_context(span: &tracing::Span) -> Option<SpanContext> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then_some(span_context)
}

fn hex_ids(trace: &SpanContext) -> (String, String) {
    (trace.trace_id().to_string(), trace.span_id().to_string())
}

/// Records `trace_id` and `span_id` (declared empty) on `span`, so log lines inside it carry them;
/// returns the span's context (whether it is sampled, for [`CallContext::with_trace`]).
pub fn record_ids(span: &tracing::Span) -> Option<SpanContext> {
    let trace = span_context(span)?;
    record_given_ids(span, &trace);
    Some(trace)
}

/// Records the ids of `trace` as `span`'s `trace_id` and `span_id` (a span built for the log
/// lines only, whose call's trace was decided without it).
pub fn record_given_ids(span: &tracing::Span, trace: &SpanContext) {
    if span.is_disabled() {
        return;
    }
    let (trace_id, span_id) = hex_ids(trace);
    span.record("trace_id", trace_id);
    span.record("span_id", span_id);
}

/// The ids the log lines of the call this task serves carry when no span of it was built:
/// `request_id`, `trace_id`, `span_id`.
pub fn current_log_ids() -> Option<(RequestId, Option<(String, String)>)> {
    let request_id = RequestId::current()?;
    Some((request_id, CallContext::current().trace().map(hex_ids)))
}

/// The name a span of the RPC `path` (`/package.Service/Method`) gets and its `rpc.service` and
/// `rpc.method`, per the OpenTelemetry RPC conventions (`package.Service/Method`).
pub fn rpc_names(path: &str) -> (&str, &str, &str) {
    let name = path.trim_start_matches('/');
    let (service, method) = name.split_once('/').unwrap_or((name, ""));
    (name, service, method)
}

/// The name of `code` as gRPC's own libraries (and so go-grpc-prometheus's `grpc_code` label)
/// spell it: `OK`, `NotFound`, `Unavailable`, ...
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// Why the trace pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TracingError {
    /// The OTLP exporter could not be made (e.g. an endpoint that is not a URL).
    #[error("cannot export traces to {endpoint:?}: {source}")]
    Exporter {
        /// The endpoint in use.
        endpoint: String,
        /// Cause.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// `telemetry.sampling_ratio` is outside 0..=1.
    #[error("telemetry.sampling_ratio must be between 0 and 1, not {0}")]
    Ratio(f64),
}

/// How a process samples the traces it starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// `OTEL_TRACES_SAMPLER` when set, else `telemetry.sampling_ratio` of new traces (a trace
    /// started by a caller follows the caller's decision); with no export, none of them.
    Configured,
    /// Every trace this process starts (the CLI's `--trace`).
    Always,
}

/// The sampling decision for a call, made where it arrives (the server edge), before any span of
/// it is built: a span that would never be exported is then never built (see `context`). It
/// follows the same rules as the SDK sampler [`Tracing::install`] sets up from the same settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EdgeSampler {
    /// Whether spans leave this process at all.
    exporting: bool,
    /// The share of new traces sampled; `None` when `OTEL_TRACES_SAMPLER` lets the SDK decide.
    ratio: Option<f64>,
}

/// What the server edge does with one call's trace.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Build the call's spans; the SDK's sampler has the last word (it agrees: the sampler
    /// [`Tracing::install`] sets up keeps a server span the edge decided to build).
    Record,
    /// Build no span of this call for the exporter; the call is in this trace (a child of the
    /// caller's span, or a new unsampled trace), which goes on to the calls it makes.
    Skip(SpanContext),
}

impl EdgeSampler {
    /// The decisions of a service configured with `settings` (and the `OTEL_*` environment).
    pub fn configured(settings: &TelemetrySettings) -> Self {
        let env_sampler = std::env::var("OTEL_TRACES_SAMPLER").is_ok_and(|s| !s.is_empty());
        Self {
            exporting: export_endpoint(settings).is_some(),
            ratio: (!env_sampler).then_some(settings.sampling_ratio),
        }
    }

    /// The decision for a call whose caller sent the trace context `parent` (`None` if none).
    pub fn decide(&self, parent: Option<&SpanContext>) -> Decision {
        if let Some(caller) = parent.filter(|caller| caller.is_valid()) {
            if self.exporting && caller.is_sampled() {
                return Decision::Record;
            }
            // Not exported here; the caller's flag goes on, so a sampled trace stays sampled in
            // the services that do export.
            return Decision::Skip(SpanContext::new(
                caller.trace_id(),
                random_span_id(),
                caller.trace_flags(),
                false,
                caller.trace_state().clone(),
            ));
        }
        let sampled = match self.ratio {
            _ if !self.exporting => false,
            None => return Decision::Record,
            Some(ratio) => ratio >= 1.0 || rand::random::<f64>() < ratio,
        };
        if sampled {
            return Decision::Record;
        }
        let trace_id = TraceId::from(rand::random::<u128>().max(1));
        Decision::Skip(SpanContext::new(
            trace_id,
            random_span_id(),
            TraceFlags::default(),
            false,
            TraceState::default(),
        ))
    }
}

impl EdgeSampler {
    /// Opens the span of a call that arrived with the trace context `parent` (`open` builds it)
    /// as [`EdgeSampler::decide`] says, records its ids for the log lines, and returns it with
    /// `call`, the call's context, now carrying the trace and whether its spans are skipped.
    pub fn open_call(
        &self,
        parent: Option<SpanContext>,
        call: CallContext,
        open: impl FnOnce() -> tracing::Span,
    ) -> (tracing::Span, CallContext) {
        match self.decide(parent.as_ref()) {
            Decision::Record => {
                let span = open();
                // An OpenTelemetry context is made only here, for a span that is built: it costs
                // an allocation, and most calls are not sampled. An empty one makes a root span.
                let parent = parent.map_or_else(Context::new, |parent| {
                    Context::new().with_remote_span_context(parent)
                });
                let _ = span.set_parent(parent);
                let trace = record_ids(&span);
                // The SDK may still leave it unsampled (`OTEL_TRACES_SAMPLER`): then only this
                // span was built for nothing.
                let skip = trace.as_ref().is_some_and(|trace| !trace.is_sampled());
                (span, call.with_trace(trace, skip))
            }
            Decision::Skip(trace) => {
                let call = call.with_trace(Some(trace.clone()), true);
                // Built only if the log level wants it, for the log lines; never exported.
                let span = call.enter(open);
                record_given_ids(&span, &trace);
                (span, call)
            }
        }
    }
}

fn random_span_id() -> SpanId {
    SpanId::from(rand::random::<u64>().max(1))
}

/// The SDK's sampler for traces this process starts: a server span (of a call that arrived
/// without a trace) is built only when [`EdgeSampler`] sampled the call, so it is kept; other
/// root spans (background work) get the ratio sampler.
#[derive(Debug, Clone)]
struct EdgeDecided(Sampler);

impl ShouldSample for EdgeDecided {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        if *span_kind == SpanKind::Server {
            return SamplingResult {
                decision: SamplingDecision::RecordAndSample,
                attributes: Vec::new(),
                trace_state: TraceState::default(),
            };
        }
        self.0
            .should_sample(parent_context, trace_id, name, span_kind, attributes, links)
    }
}

/// A process's OpenTelemetry tracer: spans get W3C ids (so logs can carry them) whether or not
/// they are exported; with an OTLP endpoint, sampled spans are exported in batches.
#[derive(Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
    endpoint: Option<String>,
}

impl Tracing {
    /// Builds the tracer of the process `service_name` (`OTEL_SERVICE_NAME` wins). Export is on
    /// when `telemetry.otlp_endpoint` or `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT` is set. Must be
    /// called inside a Tokio runtime (the exporter's connection lives there).
    pub fn install(
        service_name: &str,
        settings: &TelemetrySettings,
        sampling: Sampling,
    ) -> Result<Self, TracingError> {
        let ratio = settings.sampling_ratio;
        if !(0.0..=1.0).contains(&ratio) {
            return Err(TracingError::Ratio(ratio));
        }
        let name = std::env::var("OTEL_SERVICE_NAME")
            .ok()
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| service_name.to_owned());
        let resource = Resource::builder().with_service_name(name).build();
        let mut builder = SdkTracerProvider::builder().with_resource(resource);
        let env_sampler = std::env::var("OTEL_TRACES_SAMPLER").is_ok_and(|s| !s.is_empty());
        let endpoint = export_endpoint(settings);
        match sampling {
            Sampling::Always => builder = builder.with_sampler(Sampler::AlwaysOn),
            // Nowhere to export: record nothing this process starts (ids are still made, for the
            // logs), but follow a caller that asked for its trace to be recorded.
            Sampling::Configured if endpoint.is_none() => {
                builder = builder.with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)));
            }
            // The SDK reads OTEL_TRACES_SAMPLER(_ARG) itself when no sampler is given.
            Sampling::Configured if env_sampler => {}
            // A call arriving without a trace was already sampled (or not) by the server edge
            // (`EdgeSampler`); its server span is built only when it was, and is kept.
            Sampling::Configured => {
                builder = builder.with_sampler(Sampler::ParentBased(Box::new(EdgeDecided(
                    Sampler::TraceIdRatioBased(ratio),
                ))));
            }
        }
        if let Some(endpoint) = &endpoint {
            let mut exporter = SpanExporter::builder()
                .with_tonic()
                .with_timeout(Duration::from_secs(5));
            if let Some(configured) = settings.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) {
                exporter = exporter.with_endpoint(configured);
            }
            let exporter = exporter.build().map_err(|source| TracingError::Exporter {
                endpoint: endpoint.clone(),
                source,
            })?;
            builder = builder.with_batch_exporter(exporter);
        }
        Ok(Self {
            provider: builder.build(),
            endpoint,
        })
    }

    /// The layer that turns `tracing`'s spans into OpenTelemetry spans of this tracer, with what
    /// a span carries chosen once for every process (services and CLI).
    pub fn layer<S>(&self) -> OpenTelemetryLayer<S, SdkTracer>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("shippy"))
            // Busy/idle timing reads the clock on every poll of every instrumented future, and
            // thread attributes allocate per span; a trace is read for its call tree and
            // durations, which stay. (Measured with `make bench`: see docs/PERFORMANCE.md.)
            .with_tracked_inactivity(false)
            .with_threads(false)
            // Every span is opened by shared plumbing (the server layer, the balancer, the store
            // wrapper), so its source location and target name the same few lines for every call
            // of every service: attributes that say nothing, exported and stored with each span.
            .with_location(false)
            .with_target(false)
            // Activation makes each span's OpenTelemetry context the thread's current one on
            // every poll of every instrumented future (a context clone and a thread-local stack
            // push per enter). Nothing here reads `opentelemetry::Context::current()`: parents
            // come from the `tracing` span tree and propagation reads the span's context
            // explicitly (`inject`). Profiled at about a fifth of the tracing cost per call.
            .with_context_activation(false)
    }

    /// Installs this tracer as the process's only `tracing` subscriber, for a client that logs
    /// nothing itself (the CLI); `false` when a subscriber was installed already.
    pub fn install_subscriber(&self) -> bool {
        use tracing_subscriber::{
            Layer as _, filter::LevelFilter, layer::SubscriberExt as _,
            util::SubscriberInitExt as _,
        };
        let layer = self.layer().with_filter(LevelFilter::INFO);
        tracing_subscriber::registry()
            .with(layer)
            .try_init()
            .is_ok()
    }

    /// The OTLP endpoint spans are exported to, if any.
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// Warns (once, in the background) when nothing listens at the OTLP endpoint: spans are then
    /// dropped, requests are not affected.
    pub fn warn_if_unreachable(&self) {
        let Some(endpoint) = self.endpoint.clone() else {
            return;
        };
        tokio::spawn(async move {
            let authority = endpoint
                .split("://")
                .last()
                .unwrap_or(&endpoint)
                .split('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            let connect = tokio::net::TcpStream::connect(authority.clone());
            match tokio::time::timeout(Duration::from_secs(3), connect).await {
                Ok(Ok(_)) => tracing::debug!(%endpoint, "OTLP collector reachable"),
                Ok(Err(error)) => {
                    tracing::warn!(%endpoint, %error, "no OTLP collector answers; spans are dropped until one does")
                }
                Err(_) => {
                    tracing::warn!(%endpoint, "the OTLP collector did not answer within 3 s; spans are dropped until it does")
                }
            }
        });
    }

    /// Exports what is still buffered and stops; waits at most about 5 s (the export timeout).
    /// Runs the blocking flush off the async threads, so a single-threaded runtime keeps driving
    /// the exporter's connection meanwhile.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(error)) = flushed {
            tracing::debug!(%error, "trace export did not finish at shutdown");
        }
    }
}

/// Runs `future` inside a new root span `name` (a client's whole command) and returns its output
/// with the span's trace id (`None` when no tracer is installed).
pub async fn in_root_span<F: Future>(name: String, future: F) -> (F::Output, Option<String>) {
    use tracing::Instrument as _;
    let span =
        tracing::info_span!(parent: None, "command", otel.name = name, otel.kind = "internal");
    let trace_id = ids(&span).map(|(trace_id, _)| trace_id);
    (future.instrument(span).await, trace_id)
}

/// Where spans go: `telemetry.otlp_endpoint`, else the standard OTLP variables; `None` = no export.
fn export_endpoint(settings: &TelemetrySettings) -> Option<String> {
    let from_env = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
    settings
        .otlp_endpoint
        .clone()
        .filter(|e| !e.is_empty())
        .or_else(|| from_env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        .or_else(|| from_env("OTEL_EXPORTER_OTLP_ENDPOINT"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(sampled: bool) -> SpanContext {
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        SpanContext::new(
            TraceId::from(7),
            SpanId::from(9),
            flags,
            true,
            TraceState::default(),
        )
    }

    fn skipped(decision: Decision) -> SpanContext {
        match decision {
            Decision::Skip(trace) => trace,
            Decision::Record => panic!("recorded"),
        }
    }

    #[test]
    fn the_edge_follows_the_caller_and_samples_new_traces_by_the_ratio() {
        let exporting = |ratio| EdgeSampler {
            exporting: true,
            ratio,
        };
        assert_eq!(
            exporting(Some(0.0)).decide(Some(&caller(true))),
            Decision::Record
        );
        // An unsampled caller's trace goes on, unsampled, from a span of this call.
        let child = skipped(exporting(Some(1.0)).decide(Some(&caller(false))));
        assert_eq!(child.trace_id(), TraceId::from(7));
        assert_ne!(child.span_id(), SpanId::from(9));
        assert!(child.is_valid() && !child.is_sampled());
        // New traces: by the ratio; the SDK decides when OTEL_TRACES_SAMPLER is set.
        assert_eq!(exporting(Some(1.0)).decide(None), Decision::Record);
        assert_eq!(exporting(None).decide(None), Decision::Record);
        let fresh = skipped(exporting(Some(0.0)).decide(None));
        assert!(fresh.is_valid() && !fresh.is_sampled());
        let sampled = (0..2000)
            .filter(|_| exporting(Some(0.1)).decide(None) == Decision::Record)
            .count();
        assert!((100..=300).contains(&sampled), "{sampled} of 2000 at 10 %");
    }

    #[test]
    fn with_nothing_exported_no_span_is_built_but_the_callers_flag_goes_on() {
        let idle = EdgeSampler {
            exporting: false,
            ratio: Some(1.0),
        };
        let child = skipped(idle.decide(Some(&caller(true))));
        assert_eq!(child.trace_id(), TraceId::from(7));
        assert!(
            child.is_sampled(),
            "downstream services that export keep the trace"
        );
        assert!(!skipped(idle.decide(None)).is_sampled());
    }

    #[test]
    fn the_sdk_keeps_server_roots_the_edge_sampled_and_samples_other_roots_by_ratio() {
        let sampler = EdgeDecided(Sampler::TraceIdRatioBased(0.0));
        let decide = |kind| {
            sampler
                .should_sample(None, TraceId::from(5), "x", &kind, &[], &[])
                .decision
        };
        assert_eq!(decide(SpanKind::Server), SamplingDecision::RecordAndSample);
        assert_eq!(decide(SpanKind::Internal), SamplingDecision::Drop);
    }

    #[test]
    fn request_ids_from_callers_are_kept_when_sane_and_replaced_otherwise() {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID_HEADER, HeaderValue::from_static("abc-123"));
        assert_eq!(RequestId::from_headers(&headers).as_str(), "abc-123");
        assert_eq!(RequestId::sent(&headers).expect("sane").as_str(), "abc-123");
        headers.insert(REQUEST_ID_HEADER, HeaderValue::from_static("has space"));
        assert_ne!(RequestId::from_headers(&headers).as_str(), "has space");
        assert_eq!(RequestId::sent(&headers), None);
        let long = "x".repeat(MAX_REQUEST_ID + 1);
        headers.insert(
            REQUEST_ID_HEADER,
            HeaderValue::from_str(&long).expect("ascii"),
        );
        assert_eq!(RequestId::from_headers(&headers).as_str().len(), 36);
        assert_eq!(
            RequestId::from_headers(&HeaderMap::new()).as_str().len(),
            36
        );
    }

    #[test]
    fn a_request_id_shows_as_its_text() {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID_HEADER, HeaderValue::from_static("abc-123"));
        let id = RequestId::from_headers(&headers);
        assert_eq!(id.to_string(), "abc-123");
        assert_eq!(format!("{id:?}"), r#"RequestId("abc-123")"#);
        assert_eq!(id.header_value(), "abc-123");
    }

    #[tokio::test]
    async fn the_current_request_id_is_scoped_to_the_task() {
        assert_eq!(RequestId::current(), None);
        let id = RequestId::generate();
        let seen = id.clone().scope(async { RequestId::current() }).await;
        assert_eq!(seen, Some(id));
        assert_eq!(RequestId::current(), None);
    }

    #[test]
    fn rpc_names_follow_the_semantic_conventions() {
        assert_eq!(
            rpc_names("/shippy.vessel.v1.VesselService/FindAvailable"),
            (
                "shippy.vessel.v1.VesselService/FindAvailable",
                "shippy.vessel.v1.VesselService",
                "FindAvailable"
            )
        );
    }

    #[test]
    fn trace_context_round_trips_through_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let remote = extract(&headers).expect("a valid traceparent");
        assert!(remote.is_valid() && remote.is_remote() && remote.is_sampled());
        assert_eq!(
            remote.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(extract(&HeaderMap::new()).is_none());
    }
}
