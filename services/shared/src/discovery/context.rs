//! What a call being served passes on to the calls it makes: its **deadline**, its **version
//! pins** and its **trace**. The server stack (`runtime`) reads them from the incoming metadata
//! (the trace is decided there, see [`super::trace::EdgeSampler`]) and scopes them to the task
//! serving the call ([`CallContext::scope`]); the balanced channel ([`super::balance`]) reads them
//! back for every outgoing call.
//!
//! - **Deadline**: the caller's `grpc-timeout` (gRPC's own header) becomes an instant; an outgoing
//!   call gets what is left of it, minus nothing else, as its own `grpc-timeout`, so a chain of
//!   calls never works past the point where the first caller gave up. A call whose budget is gone
//!   fails at once with `DEADLINE_EXCEEDED` and does no work downstream.
//! - **Version pins**: `x-shippy-route-<service>: <version>` sends every call to `<service>` made
//!   while serving this one to instances of that version, whatever the routing weights say, so the
//!   green side of a blue/green pair can be tried end to end before traffic moves to it. Pins are
//!   passed on to every hop.
//! - **Trace**: the span context of the call (its trace id, the span id its children hang from,
//!   whether it is sampled), and whether spans opened while serving it are built for the exporter
//!   at all. They are not when the call's trace is not sampled ([`CallContext::spans_skipped`],
//!   read by the telemetry filter): most calls are not sampled, and building, recording and
//!   dropping spans nobody exports was most of the tracing cost per call (docs/PERFORMANCE.md,
//!   "no span is built for a call that is not traced"). Outgoing calls still carry the trace
//!   context, with its sampled flag, so the next hop makes the same choice and log lines keep
//!   their trace id.

use std::{
    io::Write as _,
    time::{Duration, Instant},
};

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::trace::SpanContext;

/// gRPC's deadline header.
pub const GRPC_TIMEOUT_HEADER: &str = "grpc-timeout";
/// Prefix of the version pin headers; the rest of the name is the target service.
pub const ROUTE_HEADER_PREFIX: &str = "x-shippy-route-";
/// Most pins taken from one caller (each is a header; more is abuse, not routing).
const MAX_PINS: usize = 8;
/// Longest version a pin may name.
const MAX_VERSION: usize = 64;

tokio::task_local! {
    /// The context of the call being served by this task.
    static CURRENT: CallContext;
}

/// The deadline, version pins and trace of one call being served.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    deadline: Option<Instant>,
    pins: Vec<(HeaderName, HeaderValue)>,
    trace: Option<SpanContext>,
    skip_spans: bool,
}

impl CallContext {
    /// The context a caller sent in `headers`, the deadline counted from `now`. A malformed
    /// `grpc-timeout` is ignored here (the server stack answers it); a malformed pin is dropped.
    pub fn from_headers(headers: &HeaderMap, now: Instant) -> Self {
        let deadline = headers
            .get(GRPC_TIMEOUT_HEADER)
            .and_then(|value| parse_timeout(value.as_bytes()))
            .and_then(|timeout| now.checked_add(timeout));
        let pins = headers
            .iter()
            .filter(|(name, value)| {
                name.as_str().len() > ROUTE_HEADER_PREFIX.len()
                    && name.as_str().starts_with(ROUTE_HEADER_PREFIX)
                    && !value.is_empty()
                    && value.len() <= MAX_VERSION
                    && value.as_bytes().iter().all(u8::is_ascii_graphic)
            })
            .take(MAX_PINS)
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        Self {
            deadline,
            pins,
            trace: None,
            skip_spans: false,
        }
    }

    /// The same context, in the trace `trace` (an invalid one counts as none); `skip_spans` says
    /// that spans opened while serving the call are not to be built for the exporter.
    pub fn with_trace(mut self, trace: Option<SpanContext>, skip_spans: bool) -> Self {
        self.trace = trace.filter(SpanContext::is_valid);
        self.skip_spans = skip_spans;
        self
    }

    /// The span context of the call being served, if it is in a trace.
    pub fn trace(&self) -> Option<&SpanContext> {
        self.trace.as_ref()
    }

    /// Whether this task is serving a call whose spans are not built for the exporter (its trace
    /// is not sampled, or nothing is exported). False outside a call (the CLI, background tasks).
    pub fn spans_skipped() -> bool {
        CURRENT
            .try_with(|context| context.skip_spans)
            .unwrap_or(false)
    }

    /// Runs `f` (synchronous: the opening of the call's own span) with `self` as the current
    /// context.
    pub fn enter<T>(&self, f: impl FnOnce() -> T) -> T {
        CURRENT.sync_scope(self.clone(), f)
    }

    /// The context of the call this task serves (empty at the first hop).
    pub fn current() -> Self {
        CURRENT.try_with(Clone::clone).unwrap_or_default()
    }

    /// Runs `future` with `self` as the current context.
    pub async fn scope<F: Future>(self, future: F) -> F::Output {
        CURRENT.scope(self, future).await
    }

    /// When the caller stops waiting, if it said.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The version of `service` this call is pinned to, if any.
    pub fn pinned_version(&self, service: &str) -> Option<&str> {
        self.pins.iter().find_map(|(name, value)| {
            (name.as_str().strip_prefix(ROUTE_HEADER_PREFIX) == Some(service))
                .then(|| value.to_str().ok())
                .flatten()
        })
    }

    /// Writes the pins into an outgoing call's `headers` (a pin the caller set itself wins).
    pub fn inject_pins(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.pins {
            if !headers.contains_key(name) {
                headers.insert(name.clone(), value.clone());
            }
        }
    }
}

/// Parses a `grpc-timeout` value: 1 to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
pub fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3_600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// `timeout` as a `grpc-timeout` value, rounded up to the millisecond (0 becomes 1 ms: a zero
/// budget is refused before any call is made).
pub fn encode_timeout(timeout: Duration) -> HeaderValue {
    let millis = timeout.as_nanos().div_ceil(1_000_000).max(1);
    let (amount, unit) = if millis < 100_000_000 {
        (millis, 'm')
    } else {
        (millis.div_ceil(1_000).min(99_999_999), 'S')
    };
    // Formatted into a buffer on the stack: this runs for every outgoing call, and a `format!`
    // would cost a heap string only to be copied into the header value. At most 8 digits and a
    // unit, so it always fits.
    let mut text = [0u8; 9];
    let capacity = text.len();
    let len = {
        let mut out = &mut text[..];
        write!(out, "{amount}{unit}").map(|()| capacity - out.len())
    };
    len.ok()
        .and_then(|len| HeaderValue::from_bytes(&text[..len]).ok())
        .unwrap_or(HeaderValue::from_static("99999999S"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit_and_refuse_the_rest() {
        assert_eq!(parse_timeout(b"2H"), Some(Duration::from_secs(7_200)));
        assert_eq!(parse_timeout(b"3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_timeout(b"5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_timeout(b"250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout(b"7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_timeout(b"9n"), Some(Duration::from_nanos(9)));
        for bad in [
            &b""[..],
            b"m",
            b"123456789m",
            b"5s",
            b"-5m",
            b"5 m",
            b"1.5S",
        ] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
        assert_eq!(encode_timeout(Duration::from_micros(1_500)), "2m");
        assert_eq!(encode_timeout(Duration::ZERO), "1m");
        assert_eq!(
            encode_timeout(Duration::from_millis(99_999_999)),
            "99999999m"
        );
        assert_eq!(
            encode_timeout(Duration::from_millis(100_000_000)),
            "100000S"
        );
        assert_eq!(encode_timeout(Duration::MAX), "99999999S");
        assert_eq!(
            parse_timeout(encode_timeout(Duration::from_secs(90)).as_bytes()),
            Some(Duration::from_secs(90))
        );
    }

    #[test]
    fn pins_are_taken_per_service_and_only_when_sane() {
        let mut headers = HeaderMap::new();
        headers.insert("x-shippy-route-vessel", HeaderValue::from_static("0.2.0"));
        headers.insert("x-shippy-route-user", HeaderValue::from_static("bad value"));
        headers.insert("x-shippy-route-", HeaderValue::from_static("0.1.0"));
        headers.insert(GRPC_TIMEOUT_HEADER, HeaderValue::from_static("100m"));
        let now = Instant::now();
        let context = CallContext::from_headers(&headers, now);
        assert_eq!(context.pinned_version("vessel"), Some("0.2.0"));
        assert_eq!(context.pinned_version("user"), None);
        assert_eq!(context.deadline(), Some(now + Duration::from_millis(100)));

        let mut outgoing = HeaderMap::new();
        outgoing.insert("x-shippy-route-vessel", HeaderValue::from_static("0.3.0"));
        context.inject_pins(&mut outgoing);
        assert_eq!(
            outgoing["x-shippy-route-vessel"], "0.3.0",
            "the caller's own pin wins"
        );
        assert_eq!(outgoing.len(), 1);
    }

    #[tokio::test]
    async fn the_context_is_scoped_to_the_task_serving_the_call() {
        assert!(CallContext::current().deadline().is_none());
        let deadline = Instant::now() + Duration::from_secs(1);
        let context = CallContext {
            deadline: Some(deadline),
            ..CallContext::default()
        };
        let seen = context
            .scope(async { CallContext::current().deadline() })
            .await;
        assert_eq!(seen, Some(deadline));
    }
}
