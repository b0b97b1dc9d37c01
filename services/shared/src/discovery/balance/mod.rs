//! A client-side load-balanced gRPC channel fed by discovery, and every resilience policy between
//! services: deadlines, retries, outlier ejection, latency-aware picking, adaptive throttling and
//! version routing, composed here in one place because each needs what the others see.
//!
//! Why not tonic's `Channel::balance_channel` with tower's `Retry`, `p2c` and `Timeout` layers:
//! tonic's balancer reads its change stream only while requests flow (an idle client keeps dialling
//! dead endpoints) and hangs forever when it has no endpoint; tower's balancer hides which instance
//! served a call, so a retry cannot go to *another* instance, an answer cannot eject the instance
//! that gave it, and routing by version is impossible. What is taken from well-kept crates is
//! taken: tower's `TpsBudget` bounds retries ([`retry`]), and the `h2` crate under tonic carries
//! each instance's connection ([`connection`] says why not tonic's `Channel`).
//!
//! One call, in order:
//! 1. **Deadline**: the caller's remaining deadline (`discovery::context`), or `client.timeout_ms`
//!    when the call being served has none; a call whose budget is gone fails at once with
//!    `DEADLINE_EXCEEDED` and is not sent. Each attempt carries what is left as `grpc-timeout`.
//! 2. **Breaker** ([`breaker`]): when the service has failed most recent calls, a share of new ones
//!    is refused locally with `UNAVAILABLE` instead of queueing on it.
//! 3. **Route** ([`routing`]): the version pinned by the caller, else one drawn by the live weights.
//! 4. **Pick**: power of two choices over the instances of that version that are neither ejected
//!    nor already tried by this call, by peak-EWMA latency times calls in flight
//!    ([`backend`]); the first candidate rotates, so equal instances share calls evenly. Instances
//!    that just left the registry stay usable for `client.departed_grace_ms` when nothing else is
//!    left (a deregistered instance drains for a while; a registry that lost its data will be
//!    re-filled), and when every instance has just left, the call waits for one to appear
//!    within its deadline instead of failing at once. When none is known at all, the call waits
//!    as long as a registration takes to reach this process (two polls of the local registry,
//!    an etcd watch's push) before it reports that none is registered: the instance may have
//!    started a moment ago.
//! 5. **Attempt**: idempotent calls ([`retry`]) get `client.attempt_timeout_ms` per attempt and are
//!    retried on another instance after `UNAVAILABLE`, a broken connection or a timed-out attempt,
//!    while the retry budget lasts; any call is retried when its connection could not be opened
//!    or the server refused its stream unprocessed (no service saw it). Writes are never sent
//!    twice once they may have reached a service.
//! 6. **Outcome**: failures count towards ejecting the instance (never more than
//!    `client.max_ejected_percent` at once); latency feeds its EWMA; the breaker counts the call.
//!
//! Every call carries the request id and W3C trace context ([`super::trace`]) and the caller's
//! version pins, and is a `grpc.client` span with one `grpc.attempt` span per instance tried.
//!
//! Metrics: `grpc_client_handled_total` / `grpc_client_handling_seconds` (go-grpc-prometheus names
//! plus `target`), `shippy_client_attempts_total{target,endpoint,outcome}`,
//! `shippy_client_retries_total{target,reason}`, `shippy_client_retry_budget_exhausted_total`,
//! `shippy_client_breaker_rejected_total`, `shippy_client_breaker_drop_ratio`,
//! `shippy_client_deadline_exhausted_total`, `shippy_client_in_flight_calls`,
//! `shippy_balancer_endpoints{target,state}` (`live`, `ejected`, `departed`) and
//! `shippy_balancer_ejections_total{target,endpoint}`.

mod backend;
mod breaker;
mod connection;
mod retry;
mod routing;

use std::{
    pin::Pin,
    sync::{
        Arc, Weak,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::BodyExt;
use smallvec::SmallVec;
use tokio::sync::watch;
use tonic::{Code, Status, body::Body};
use tower::Service;
use tracing::{Instrument as _, field::Empty};

use self::{
    backend::Backend,
    breaker::Breaker,
    connection::{Connection, SendError},
    retry::RetryBudget,
};
use super::{
    DiscoveryError, InFlightGauge, InstanceSet, Registry, ServiceInstance,
    context::{self, CallContext, GRPC_TIMEOUT_HEADER},
    trace::{self, REQUEST_ID_HEADER, RequestId},
};
use crate::{
    call_metrics::{ByPath, PerCode},
    config::ClientSettings,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How much cheaper (cost or latency ratio) the random candidate must be to beat the rotating
/// one: enough that noise between equal instances does not skew the rotation, while one that
/// timed out loses.
const CLEARLY_CHEAPER: f64 = 3.0;

/// The instances the channel knows: those registered now, and those that left recently.
#[derive(Debug, Default)]
struct Set {
    live: Vec<Arc<Backend>>,
    /// Instances gone from the registry, usable until the instant beside them.
    departed: Vec<(Arc<Backend>, Instant)>,
}

impl Set {
    fn departed_until(&self, now: Instant) -> impl Iterator<Item = &Arc<Backend>> {
        self.departed
            .iter()
            .filter(move |(_, until)| *until > now)
            .map(|(backend, _)| backend)
    }
}

/// The `shippy_balancer_endpoints` gauges of one target.
#[derive(Debug)]
struct Endpoints {
    live: metrics::Gauge,
    ejected: metrics::Gauge,
    departed: metrics::Gauge,
}

impl Endpoints {
    fn new(target: &str) -> Self {
        let gauge = |state: &'static str| metrics::gauge!("shippy_balancer_endpoints", "target" => target.to_owned(), "state" => state);
        Self {
            live: gauge("live"),
            ejected: gauge("ejected"),
            departed: gauge("departed"),
        }
    }

    fn record(&self, set: &Set, now: Instant) {
        let ejected = set.live.iter().filter(|b| b.is_ejected(now)).count();
        self.live.set((set.live.len() - ejected) as f64);
        self.ejected.set(ejected as f64);
        self.departed.set(set.departed_until(now).count() as f64);
    }
}

/// How one attempt ended.
enum Attempt {
    /// The server answered; `code` is the status its headers carry.
    Answered(http::Response<Body>, Code),
    /// The connection could not be opened: no server saw the request.
    NotSent(BoxError),
    /// The connection broke; the server may have seen the request.
    Broken(BoxError),
    /// No answer within the attempt's time.
    TimedOut,
}

#[derive(Debug)]
struct Inner {
    service: String,
    /// `x-shippy-route-<service>`: the header that pins a call to a version of this service (made
    /// once, not per call); `None` if the name cannot be a header's.
    pin_header: Option<http::HeaderName>,
    set: watch::Receiver<Arc<Set>>,
    cursor: AtomicUsize,
    settings: watch::Receiver<ClientSettings>,
    breaker: Breaker,
    budget: RetryBudget,
    endpoints: Endpoints,
    /// Metric handles of this target and of each method called on it (see `call_metrics`).
    metrics: TargetMetrics,
    /// How long a new registration may take to reach `set` ([`Registry::propagation_delay`]).
    propagation: Duration,
}

/// The per-call metric handles of one target.
#[derive(Debug)]
struct TargetMetrics {
    in_flight: metrics::Gauge,
    breaker_ratio: metrics::Gauge,
    methods: ByPath<MethodMetrics>,
}

impl TargetMetrics {
    fn new(target: &str) -> Self {
        Self {
            in_flight: metrics::gauge!("shippy_client_in_flight_calls", "target" => target.to_owned()),
            breaker_ratio: metrics::gauge!("shippy_client_breaker_drop_ratio", "target" => target.to_owned()),
            methods: ByPath::default(),
        }
    }
}

/// The metric handles of one method called on a target.
#[derive(Debug)]
struct MethodMetrics {
    labels: [String; 3],
    handled: PerCode,
    seconds: metrics::Histogram,
}

impl MethodMetrics {
    fn new(target: &str, grpc_service: &str, grpc_method: &str) -> Self {
        let labels = [
            target.to_owned(),
            grpc_service.to_owned(),
            grpc_method.to_owned(),
        ];
        Self {
            seconds: metrics::histogram!("grpc_client_handling_seconds", "target" => labels[0].clone(), "grpc_type" => "unary", "grpc_service" => labels[1].clone(), "grpc_method" => labels[2].clone()),
            handled: PerCode::default(),
            labels,
        }
    }

    fn handled(&self, code: Code) -> &metrics::Counter {
        let [target, grpc_service, grpc_method] = &self.labels;
        self.handled.get(code, || {
            metrics::counter!("grpc_client_handled_total", "target" => target.clone(), "grpc_type" => "unary", "grpc_service" => grpc_service.clone(), "grpc_method" => grpc_method.clone(), "grpc_code" => trace::code_name(code))
        })
    }
}

impl Inner {
    /// Picks an instance of `version` (any when `None`) for an attempt: power of two choices by
    /// cost among the instances that are neither ejected nor `tried` by this call, falling back
    /// to ejected or tried live ones, then to recently departed ones not yet tried. Instances
    /// that `refused` this call's connection are never picked again for it.
    fn pick(
        &self,
        version: Option<&str>,
        tried: &[Arc<Backend>],
        refused: &[Arc<Backend>],
        now: Instant,
    ) -> Option<Arc<Backend>> {
        let set = self.set.borrow().clone();
        let fits = |b: &&Arc<Backend>| {
            version.is_none_or(|v| b.version == v) && !refused.iter().any(|r| Arc::ptr_eq(r, b))
        };
        let untried = |b: &&Arc<Backend>| !tried.iter().any(|t| Arc::ptr_eq(t, b));
        let live: Candidates<'_> = set.live.iter().filter(fits).collect();
        let fresh: Candidates<'_> = live
            .iter()
            .copied()
            .filter(untried)
            .filter(|b| !b.is_ejected(now))
            .collect();
        let candidates = if !fresh.is_empty() {
            fresh
        } else if live.iter().any(untried) {
            live.iter().copied().filter(untried).collect()
        } else if !live.is_empty() {
            live
        } else {
            // Departed instances are tried once per call: one that refused is gone for good.
            set.departed_until(now)
                .filter(fits)
                .filter(untried)
                .collect()
        };
        let n = candidates.len();
        if n == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        let first = candidates[start % n];
        if n == 1 {
            return Some(Arc::clone(first));
        }
        let other = candidates[(start + 1 + rand::random_range(0..n - 1)) % n];
        // The other one wins when it has fewer calls in flight and is not clearly slower, or
        // when it is clearly cheaper: noise between equal instances does not skew the rotation,
        // while a busy, slow or frozen instance loses.
        let fewer_calls = other.in_flight() < first.in_flight()
            && other.latency(now) <= first.latency(now) * CLEARLY_CHEAPER;
        let best = if fewer_calls || other.cost(now) * CLEARLY_CHEAPER < first.cost(now) {
            other
        } else {
            first
        };
        Some(Arc::clone(best))
    }

    /// Whether ejecting one more live instance keeps within `client.max_ejected_percent`.
    fn may_eject(&self, settings: &ClientSettings, now: Instant) -> bool {
        let set = self.set.borrow();
        let ejected = set.live.iter().filter(|b| b.is_ejected(now)).count();
        (ejected + 1) * 100 <= set.live.len() * settings.max_ejected_percent.min(100) as usize
    }

    /// Waits (within `deadline`) for a live instance of `version` other than those that
    /// `refused` this call: while instances were there a moment ago (they are restarting, or
    /// have just left the registry), until the deadline; while none is known, only as long as a
    /// registration takes to arrive (`propagation`), since the instance may have registered a
    /// moment ago: a client started with its service sees it a poll later, and a call in that
    /// gap would otherwise be told that nothing is registered. `false` when none came.
    async fn wait_for_another(
        &self,
        version: Option<&str>,
        refused: &[Arc<Backend>],
        deadline: Instant,
    ) -> bool {
        let now = Instant::now();
        let until = {
            let set = self.set.borrow();
            if set.live.is_empty() && set.departed_until(now).next().is_none() {
                if self.propagation.is_zero() {
                    return false;
                }
                deadline.min(now + self.propagation)
            } else {
                deadline
            }
        };
        let mut set = self.set.clone();
        let came = set.wait_for(|set| {
            set.live.iter().any(|b| {
                version.is_none_or(|v| b.version == v) && !refused.iter().any(|r| Arc::ptr_eq(r, b))
            })
        });
        matches!(tokio::time::timeout_at(until.into(), came).await, Ok(Ok(_)))
    }

    fn unavailable(&self, version: Option<&str>, pinned: bool) -> BoxError {
        let message = match version {
            Some(version) if pinned => format!(
                "no instance of service '{}' at version {version} (pinned by x-shippy-route-{}) is registered",
                self.service, self.service
            ),
            _ => format!("no instance of service '{}' is registered", self.service),
        };
        Status::unavailable(message).into()
    }

    async fn send(
        &self,
        backend: &Arc<Backend>,
        parts: http::request::Parts,
        body: Bytes,
        limit: Duration,
    ) -> Attempt {
        match tokio::time::timeout(limit, backend.connection.send(parts, body)).await {
            Ok(Ok(response)) => {
                let code = grpc_code(&response);
                Attempt::Answered(response, code)
            }
            Ok(Err(error @ SendError::NotSent(_))) => Attempt::NotSent(error.into()),
            Ok(Err(error @ SendError::Broken(_))) => Attempt::Broken(error.into()),
            Err(_) => Attempt::TimedOut,
        }
    }

    /// One call from start to answer: its deadline, the breaker, then [`Inner::dispatch`].
    async fn call(
        &self,
        request: http::Request<Body>,
        context: &CallContext,
        settings: &ClientSettings,
        started: Instant,
    ) -> Result<http::Response<Body>, BoxError> {
        // The deadline: the caller's (what the call being served has left, or one the client
        // code set on this request), else our own.
        let own = request
            .headers()
            .get(GRPC_TIMEOUT_HEADER)
            .and_then(|v| context::parse_timeout(v.as_bytes()))
            .unwrap_or_else(|| settings.timeout());
        let deadline = match context.deadline() {
            Some(theirs) => theirs.min(started + own),
            None => started + own,
        };
        if deadline <= started {
            metrics::counter!("shippy_client_deadline_exhausted_total", "target" => self.service.clone())
                .increment(1);
            return Err(Status::deadline_exceeded(format!(
                "the caller's deadline has passed; service '{}' was not called",
                self.service
            ))
            .into());
        }
        let ratio = self.breaker.drop_ratio(started, settings.breaker_k_percent);
        self.metrics.breaker_ratio.set(ratio);
        if ratio > 0.0 && rand::random::<f64>() < ratio {
            self.breaker.record(started, false);
            metrics::counter!("shippy_client_breaker_rejected_total", "target" => self.service.clone())
                .increment(1);
            tracing::debug!(service = %self.service, "refused locally: the service is failing most calls");
            return Err(Status::unavailable(format!(
                "service '{}' is failing most calls; this call was not sent, to let it recover",
                self.service
            ))
            .into());
        }
        self.budget.deposit(settings);
        let in_flight = InFlightGauge::start(self.metrics.in_flight.clone());
        // No timer of its own: every wait in `dispatch` (each attempt, the wait for an instance)
        // is bounded by the deadline already, and one timer per call is the hot path's share.
        let result = self.dispatch(request, deadline, settings).await;
        drop(in_flight);
        self.breaker
            .record(Instant::now(), accepted(code_of(&result)));
        result
    }

    /// Sends one call: attempts, retries and the bookkeeping of each (see the module doc).
    async fn dispatch(
        &self,
        request: http::Request<Body>,
        deadline: Instant,
        settings: &ClientSettings,
    ) -> Result<http::Response<Body>, BoxError> {
        let idempotent = retry::is_idempotent(request.uri().path(), request.headers());
        let (parts, body) = request.into_parts();
        let (name, rpc_service, rpc_method) = trace::rpc_names(parts.uri.path());
        // Unary requests are small; buffering lets a request be re-sent to another instance.
        let body: Bytes = body.collect().await?.to_bytes();
        // A pin on the request itself (set by the client code, or passed on from the call being
        // served by `call`) says which version this call must reach.
        let pinned = self
            .pin_header
            .as_ref()
            .and_then(|header| parts.headers.get(header))
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let version = match &pinned {
            Some(version) => Some(version.clone()),
            None => settings.routing.get(&self.service).and_then(|weights| {
                let set = self.set.borrow().clone();
                routing::choose_version(
                    weights,
                    set.live.iter().map(|b| b.version.as_str()),
                    rand::random(),
                )
            }),
        };
        let mut tried: Vec<Arc<Backend>> = Vec::new();
        let mut refused: Vec<Arc<Backend>> = Vec::new();
        let mut waited = false;
        let mut attempts = 0;
        let mut last_error: Option<BoxError> = None;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(last_error.unwrap_or_else(|| {
                    Status::deadline_exceeded(format!(
                        "service '{}' did not answer in time",
                        self.service
                    ))
                    .into()
                }));
            }
            let Some(backend) = self.pick(version.as_deref(), &tried, &refused, now) else {
                // A pin to a version with no instance is a mistake to report, not to wait out.
                if !waited
                    && pinned.is_none()
                    && self
                        .wait_for_another(version.as_deref(), &refused, deadline)
                        .await
                {
                    waited = true;
                    continue;
                }
                return Err(last_error
                    .unwrap_or_else(|| self.unavailable(version.as_deref(), pinned.is_some())));
            };
            attempts += 1;
            let remaining = deadline - now;
            let limit = if idempotent && settings.attempt_timeout_ms > 0 {
                remaining.min(Duration::from_millis(settings.attempt_timeout_ms))
            } else {
                remaining
            };
            let span = tracing::info_span!(
                "grpc.attempt",
                otel.name = format!("{name} attempt {attempts}"),
                otel.kind = "client",
                rpc.system = "grpc",
                rpc.service = rpc_service,
                rpc.method = rpc_method,
                server.address = %backend.address,
                service.version = %backend.version,
                attempt = attempts,
                rpc.grpc.status_code = Empty,
                otel.status_code = Empty,
            );
            let mut request = attempt_of(&parts);
            request
                .headers
                .insert(GRPC_TIMEOUT_HEADER, context::encode_timeout(limit));
            // The server's span is a child of this attempt.
            trace::inject(&span, &mut request.headers);
            let guard = backend.start();
            let started = Instant::now();
            let outcome = self
                .send(&backend, request, body.clone(), limit)
                .instrument(span.clone())
                .await;
            drop(guard);
            let now = Instant::now();
            let attempt_counter =
                |outcome: &'static str| backend.count_attempt(&self.service, outcome);
            let more = attempts < settings.max_attempts.max(1);
            let reason = match outcome {
                Attempt::Answered(response, code) => {
                    record_status(&span, code);
                    backend.observe_answer(now - started, now);
                    attempt_counter(if code == Code::Unavailable {
                        "unavailable"
                    } else {
                        "answered"
                    });
                    if code != Code::Unavailable {
                        backend.succeeded(now, settings);
                        return Ok(response);
                    }
                    self.failed(&backend, settings, now, false);
                    if !(idempotent && more && self.spend(settings)) {
                        return Ok(response);
                    }
                    tracing::debug!(parent: trace::log_parent(&span), service = %self.service, address = %backend.address, "answered UNAVAILABLE; retrying on another instance");
                    "unavailable"
                }
                Attempt::NotSent(error) => {
                    span.record("otel.status_code", "ERROR");
                    attempt_counter("unreachable");
                    self.failed(&backend, settings, now, true);
                    tracing::warn!(parent: trace::log_parent(&span), service = %self.service, address = %backend.address, %error, "instance unreachable, trying another");
                    // The cause (an address, an OS error) is logged above, never sent: this
                    // status may travel on to a client outside (the REST gateway's).
                    last_error = Some(
                        Status::unavailable(format!("service '{}' is unreachable", self.service))
                            .into(),
                    );
                    // No server saw it: any call may go on to another instance. Each refusal
                    // rules an instance out for this call, so the loop ends when none is left
                    // (then the call waits, once, for another within its deadline).
                    refused.push(Arc::clone(&backend));
                    "unreachable"
                }
                Attempt::Broken(error) => {
                    span.record("otel.status_code", "ERROR");
                    attempt_counter("broken");
                    // No answer after this long: as for a timeout, a peak in its latency, so a
                    // frozen instance whose connection broke is not picked again at once.
                    backend.observe_timeout(now - started, now);
                    self.failed(&backend, settings, now, false);
                    tracing::warn!(parent: trace::log_parent(&span), service = %self.service, address = %backend.address, %error, "connection broke during the call");
                    let status = Status::unavailable(format!(
                        "the connection to service '{}' broke during the call",
                        self.service
                    ));
                    if !(idempotent && more && self.spend(settings)) {
                        return Err(status.into());
                    }
                    last_error = Some(status.into());
                    "broken"
                }
                Attempt::TimedOut => {
                    span.record("otel.status_code", "ERROR");
                    attempt_counter("timeout");
                    backend.observe_timeout(limit, now);
                    self.failed(&backend, settings, now, false);
                    let status = Status::deadline_exceeded(format!(
                        "service '{}' did not answer within {} ms",
                        self.service,
                        limit.as_millis()
                    ));
                    // A timed-out attempt is retried only if it was an attempt's own limit.
                    if !(idempotent && more && limit < remaining && self.spend(settings)) {
                        return Err(status.into());
                    }
                    tracing::debug!(parent: trace::log_parent(&span), service = %self.service, address = %backend.address, "attempt timed out; retrying on another instance");
                    last_error = Some(status.into());
                    "timeout"
                }
            };
            metrics::counter!("shippy_client_retries_total", "target" => self.service.clone(), "reason" => reason).increment(1);
            tried.push(backend);
        }
    }

    /// Takes a retry from the budget, counting when it is spent.
    fn spend(&self, settings: &ClientSettings) -> bool {
        let granted = self.budget.withdraw(settings);
        if !granted {
            metrics::counter!("shippy_client_retry_budget_exhausted_total", "target" => self.service.clone()).increment(1);
        }
        granted
    }

    /// Books a failure on `backend`, ejecting it when its run of failures says so.
    fn failed(&self, backend: &Backend, settings: &ClientSettings, now: Instant, at_once: bool) {
        let may_eject = self.may_eject(settings, now);
        if let Some(length) = backend.failed(now, settings, at_once, may_eject) {
            metrics::counter!("shippy_balancer_ejections_total", "target" => self.service.clone(), "endpoint" => backend.address.clone()).increment(1);
            tracing::warn!(service = %self.service, address = %backend.address, ejected_for = ?length, "instance ejected after failing");
            self.endpoints.record(&self.set.borrow(), now);
        }
    }
}

/// The instances one pick chooses among. Held inline: a pick runs for every attempt, and a
/// service rarely has more instances than this (more spill to the heap).
type Candidates<'a> = SmallVec<[&'a Arc<Backend>; 8]>;

/// The head of one attempt's request: `parts` without its extensions. Those are for this
/// process's own layers; the HTTP/2 client reads none of them, and copying their map cost an
/// allocation per attempt.
fn attempt_of(parts: &http::request::Parts) -> http::request::Parts {
    let mut request = http::Request::new(());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    request.into_parts().0
}

/// Whether a call that ended with `code` counts as handled by the service, for the breaker: an
/// answer the caller got wrong (`NOT_FOUND`, `INVALID_ARGUMENT`, ...) is the service working.
fn accepted(code: Code) -> bool {
    !matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Internal
            | Code::Unknown
            | Code::DataLoss
    )
}

/// A `tonic` transport that balances calls over the live instances of one service.
///
/// Use it wherever a `Channel` goes: `VesselServiceClient::new(balanced)`.
#[derive(Debug, Clone)]
pub struct BalancedChannel {
    inner: Arc<Inner>,
}

impl BalancedChannel {
    /// Subscribes to `service` in `registry` and balances over what it finds; `settings` are the
    /// live `client.*` settings.
    pub async fn discover(
        registry: &dyn Registry,
        service: &str,
        settings: watch::Receiver<ClientSettings>,
    ) -> Result<Self, DiscoveryError> {
        let instances = registry.subscribe(service).await?;
        Ok(Self::build(
            service,
            instances,
            settings,
            registry.propagation_delay(),
        ))
    }

    /// Balances over a fixed list of addresses (e.g. the CLI's `--addr`).
    pub fn fixed(
        service: &str,
        addresses: Vec<String>,
        settings: watch::Receiver<ClientSettings>,
    ) -> Self {
        let instances = addresses
            .into_iter()
            .map(|address| ServiceInstance::new(service, "", address))
            .collect();
        // The sender is dropped at once: the set never changes, and the updater task ends.
        let (_, rx) = watch::channel(instances);
        Self::from_watch(service, rx, settings)
    }

    /// Balances over an instance set that someone else keeps current (and current at once: a
    /// call that finds it empty fails without waiting for an instance to appear).
    pub fn from_watch(
        service: &str,
        instances: watch::Receiver<InstanceSet>,
        settings: watch::Receiver<ClientSettings>,
    ) -> Self {
        Self::build(service, instances, settings, Duration::ZERO)
    }

    /// A channel over `instances`, whose changes may take `propagation` to arrive.
    fn build(
        service: &str,
        mut instances: watch::Receiver<InstanceSet>,
        settings: watch::Receiver<ClientSettings>,
        propagation: Duration,
    ) -> Self {
        // Connections opened later keep the connect timeout of the start (it needs a restart).
        let connect_timeout = Duration::from_millis(settings.borrow().connect_timeout_ms.max(1));
        let now = Instant::now();
        let initial = next_set(
            &Set::default(),
            &instances.borrow_and_update(),
            connect_timeout,
            Duration::ZERO,
            now,
        );
        let endpoints = Endpoints::new(service);
        endpoints.record(&initial, now);
        let (tx, rx) = watch::channel(Arc::new(initial));
        let inner = Arc::new(Inner {
            service: service.to_owned(),
            pin_header: http::HeaderName::try_from(format!(
                "{}{service}",
                context::ROUTE_HEADER_PREFIX
            ))
            .ok(),
            set: rx,
            cursor: AtomicUsize::new(0),
            settings: settings.clone(),
            breaker: Breaker::new(now),
            budget: RetryBudget::default(),
            endpoints,
            metrics: TargetMetrics::new(service),
            propagation,
        });
        let weak: Weak<Inner> = Arc::downgrade(&inner);
        let name = service.to_owned();
        tokio::spawn(async move {
            // Runs while anyone holds the channel, independent of traffic: follows the registry,
            // and forgets departed instances when their grace ends.
            loop {
                let expiry = tx.borrow().departed.iter().map(|(_, until)| *until).min();
                let changed = tokio::select! {
                    changed = instances.changed() => {
                        if changed.is_err() { break }
                        true
                    }
                    () = sleep_until(expiry) => false,
                };
                let Some(inner) = weak.upgrade() else { break };
                let now = Instant::now();
                let grace = Duration::from_millis(settings.borrow().departed_grace_ms);
                let current = tx.borrow().clone();
                let next = if changed {
                    next_set(
                        &current,
                        &instances.borrow_and_update(),
                        connect_timeout,
                        grace,
                        now,
                    )
                } else {
                    Set {
                        live: current.live.clone(),
                        departed: current
                            .departed
                            .iter()
                            .filter(|(_, until)| *until > now)
                            .cloned()
                            .collect(),
                    }
                };
                if changed {
                    let addresses: Vec<_> = next.live.iter().map(|b| b.address.as_str()).collect();
                    let departed: Vec<_> = next
                        .departed
                        .iter()
                        .map(|(b, _)| b.address.as_str())
                        .collect();
                    tracing::info!(service = %name, instances = ?addresses, ?departed, "instance set changed");
                }
                inner.endpoints.record(&next, now);
                tx.send_replace(Arc::new(next));
            }
        });
        Self { inner }
    }

    /// Addresses currently registered (in rotation or ejected for a while).
    pub fn addresses(&self) -> Vec<String> {
        self.inner
            .set
            .borrow()
            .live
            .iter()
            .map(|b| b.address.clone())
            .collect()
    }

    /// The service this channel reaches.
    pub fn service(&self) -> &str {
        &self.inner.service
    }
}

async fn sleep_until(instant: Option<Instant>) {
    match instant {
        Some(instant) => tokio::time::sleep_until(instant.into()).await,
        None => std::future::pending().await,
    }
}

/// The set after the registry said `instances`: connections of instances that stay are reused
/// (also of one that comes back within its grace); new instances get lazy connections; instances
/// that left are kept as departed for `grace`.
fn next_set(
    current: &Set,
    instances: &InstanceSet,
    connect_timeout: Duration,
    grace: Duration,
    now: Instant,
) -> Set {
    let mut wanted: Vec<(&str, &str)> = instances
        .iter()
        .map(|i| (i.address.as_str(), i.version.as_str()))
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let known = current
        .live
        .iter()
        .chain(current.departed.iter().map(|(b, _)| b));
    let same = |b: &Arc<Backend>, (address, version): (&str, &str)| {
        b.address == address && b.version == version
    };
    let live: Vec<Arc<Backend>> = wanted
        .iter()
        .filter_map(|&key| {
            if let Some(existing) = known.clone().find(|b| same(b, key)) {
                return Some(Arc::clone(existing));
            }
            connect(key.0, key.1, connect_timeout)
        })
        .collect();
    let stays = |b: &Arc<Backend>| live.iter().any(|l| Arc::ptr_eq(l, b));
    let mut departed: Vec<(Arc<Backend>, Instant)> = current
        .departed
        .iter()
        .filter(|(b, until)| *until > now && !stays(b))
        .cloned()
        .collect();
    if !grace.is_zero() {
        departed.extend(
            current
                .live
                .iter()
                .filter(|b| !stays(b))
                .map(|b| (Arc::clone(b), now + grace)),
        );
    }
    Set { live, departed }
}

fn connect(address: &str, version: &str, connect_timeout: Duration) -> Option<Arc<Backend>> {
    let connection = Connection::lazy(address, connect_timeout)?;
    Some(Arc::new(Backend::new(
        address.to_owned(),
        version.to_owned(),
        connection,
    )))
}

impl Service<http::Request<Body>> for BalancedChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is checked per instance inside `call`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let inner = Arc::clone(&self.inner);
        // The request id of the call being served goes on; the first hop makes one.
        let request_id = RequestId::current_or_new();
        if !request.headers().contains_key(REQUEST_ID_HEADER) {
            request
                .headers_mut()
                .insert(REQUEST_ID_HEADER, request_id.header_value());
        }
        let (name, rpc_service, rpc_method) = trace::rpc_names(request.uri().path());
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = name,
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = rpc_service,
            rpc.method = rpc_method,
            peer.service = %inner.service,
            request_id = %request_id,
            rpc.grpc.status_code = Empty,
            otel.status_code = Empty,
        );
        let handles = inner.metrics.methods.get(request.uri().path(), || {
            MethodMetrics::new(&inner.service, rpc_service, rpc_method)
        });
        let client_span = span.clone();
        let call = async move {
            // Read when the call runs, in the task serving the caller's call.
            let context = CallContext::current();
            context.inject_pins(request.headers_mut());
            let settings = inner.settings.borrow().clone();
            let started = Instant::now();
            let result = inner.call(request, &context, &settings, started).await;
            let code = code_of(&result);
            // On this call's own span (a no-op when it was not built), never the caller's.
            record_status(&client_span, code);
            handles.handled(code).increment(1);
            handles.seconds.record(started.elapsed().as_secs_f64());
            result
        };
        Box::pin(call.instrument(span))
    }
}

fn code_of(result: &Result<http::Response<Body>, BoxError>) -> Code {
    match result {
        Ok(response) => grpc_code(response),
        Err(error) => error
            .downcast_ref::<Status>()
            .map_or(Code::Unavailable, Status::code),
    }
}

/// The gRPC status of a unary answer as far as its headers tell: a failed call is answered
/// trailers-only (the status in the headers); a response with a body succeeded (its status, OK,
/// comes in the trailers).
fn grpc_code<B>(response: &http::Response<B>) -> Code {
    Status::from_header_map(response.headers()).map_or(Code::Ok, |status| status.code())
}

/// Records `code` as `rpc.grpc.status_code` on `span`, and an error status for the codes that are
/// the callee's failure.
fn record_status(span: &tracing::Span, code: Code) {
    span.record("rpc.grpc.status_code", code as i32);
    if code != Code::Ok {
        span.record("otel.status_code", "ERROR");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::live;

    fn instances(addresses: &[&str]) -> InstanceSet {
        addresses
            .iter()
            .map(|a| ServiceInstance::new("svc", "1", (*a).to_owned()))
            .collect()
    }

    fn channel(rx: watch::Receiver<InstanceSet>, settings: ClientSettings) -> BalancedChannel {
        BalancedChannel::from_watch("svc", rx, live::fixed(settings))
    }

    #[tokio::test]
    async fn sequential_picks_rotate_over_equal_instances() {
        let (_tx, rx) = watch::channel(instances(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]));
        let channel = channel(rx, ClientSettings::default());
        let mut seen = std::collections::HashMap::new();
        for _ in 0..30 {
            let backend = channel
                .inner
                .pick(None, &[], &[], Instant::now())
                .expect("a backend");
            *seen.entry(backend.address.clone()).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 3);
        assert!(seen.values().all(|&n| n == 10), "{seen:?}");
    }

    #[tokio::test]
    async fn busy_slow_ejected_and_tried_instances_lose() {
        let (_tx, rx) = watch::channel(instances(&["127.0.0.1:1", "127.0.0.1:2"]));
        let channel = channel(rx, ClientSettings::default());
        let now = Instant::now();
        let busy = channel.inner.pick(None, &[], &[], now).expect("backend");
        let guard = busy.start();
        for _ in 0..4 {
            assert_ne!(
                channel
                    .inner
                    .pick(None, &[], &[], now)
                    .expect("backend")
                    .address,
                busy.address
            );
        }
        drop(guard);
        busy.observe_timeout(Duration::from_millis(500), now);
        for _ in 0..4 {
            assert_ne!(
                channel
                    .inner
                    .pick(None, &[], &[], now)
                    .expect("backend")
                    .address,
                busy.address,
                "slow"
            );
        }
        let other = channel.inner.pick(None, &[], &[], now).expect("backend");
        assert_eq!(
            channel
                .inner
                .pick(None, std::slice::from_ref(&other), &[], now)
                .expect("backend")
                .address,
            busy.address,
            "an instance this call tried is avoided"
        );
        let settings = ClientSettings::default();
        assert!(other.failed(now, &settings, true, true).is_some());
        assert_eq!(
            channel
                .inner
                .pick(None, &[], &[], now)
                .expect("backend")
                .address,
            busy.address,
            "ejected"
        );
    }

    #[tokio::test]
    async fn never_more_than_the_allowed_share_is_ejected() {
        let (_tx, rx) = watch::channel(instances(&["127.0.0.1:1", "127.0.0.1:2"]));
        let channel = channel(rx, ClientSettings::default());
        let settings = ClientSettings::default();
        let now = Instant::now();
        assert!(channel.inner.may_eject(&settings, now), "one of two");
        let set = channel.inner.set.borrow().clone();
        assert!(set.live[0].failed(now, &settings, true, true).is_some());
        assert!(!channel.inner.may_eject(&settings, now), "not both");
        let (_tx, rx) = watch::channel(instances(&["127.0.0.1:1"]));
        assert!(
            !channel_of(rx).inner.may_eject(&settings, now),
            "never the only one"
        );
    }

    fn channel_of(rx: watch::Receiver<InstanceSet>) -> BalancedChannel {
        channel(rx, ClientSettings::default())
    }

    #[tokio::test]
    async fn instances_that_leave_stay_usable_for_their_grace_and_come_back() {
        let (tx, rx) = watch::channel(instances(&["127.0.0.1:1"]));
        let channel = channel(rx, ClientSettings::default());
        let mut set = channel.inner.set.clone();
        let first = channel
            .inner
            .pick(None, &[], &[], Instant::now())
            .expect("backend");
        // The registry lost its data: the instance is departed, not gone.
        tx.send_replace(Vec::new());
        set.wait_for(|s| s.live.is_empty()).await.expect("updated");
        let fallback = channel
            .inner
            .pick(None, &[], &[], Instant::now())
            .expect("still usable");
        assert!(Arc::ptr_eq(&fallback, &first));
        assert!(
            channel
                .inner
                .pick(None, &[fallback], &[], Instant::now())
                .is_none(),
            "tried once per call"
        );
        // It registers again: the same connection is reused.
        tx.send_replace(instances(&["127.0.0.1:1"]));
        set.wait_for(|s| !s.live.is_empty()).await.expect("updated");
        assert!(Arc::ptr_eq(&set.borrow().live[0], &first));
        assert!(set.borrow().departed.is_empty());
    }

    #[tokio::test]
    async fn a_call_that_finds_no_instance_waits_as_long_as_a_registration_takes_to_arrive() {
        let (tx, rx) = watch::channel(Vec::new());
        let settings = live::fixed(ClientSettings::default());
        let channel = BalancedChannel::build("svc", rx, settings, Duration::from_millis(200));
        let far = Instant::now() + Duration::from_secs(60);

        // Nothing registers: the wait ends after the propagation delay, not at the deadline.
        let started = Instant::now();
        assert!(!channel.inner.wait_for_another(None, &[], far).await);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "waited for the deadline"
        );

        // An instance that registered just before the call arrives during the wait.
        let waiting = {
            let channel = channel.clone();
            tokio::spawn(async move { channel.inner.wait_for_another(None, &[], far).await })
        };
        tx.send_replace(instances(&["127.0.0.1:1"]));
        assert!(
            waiting.await.expect("joined"),
            "the new instance was not seen"
        );
    }

    #[tokio::test]
    async fn set_changes_apply_without_traffic_and_an_empty_set_fails_fast() {
        let (tx, rx) = watch::channel(instances(&["127.0.0.1:1"]));
        let settings = ClientSettings {
            departed_grace_ms: 0,
            ..ClientSettings::default()
        };
        let channel = channel(rx, settings);
        tx.send_replace(instances(&["127.0.0.1:2", "127.0.0.1:3"]));
        let mut set = channel.inner.set.clone();
        set.wait_for(|s| s.live.len() == 2)
            .await
            .expect("updated while idle");
        assert_eq!(channel.addresses(), ["127.0.0.1:2", "127.0.0.1:3"]);

        tx.send_replace(Vec::new());
        set.wait_for(|s| s.live.is_empty()).await.expect("emptied");
        let mut svc = channel.clone();
        let started = Instant::now();
        let err = svc
            .call(http::Request::new(Body::empty()))
            .await
            .expect_err("no instance");
        let status = Status::from_error(err);
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            status.message().contains("no instance of service 'svc'"),
            "{status:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "it did not wait for the deadline"
        );
    }

    #[tokio::test]
    async fn a_pinned_version_with_no_instance_is_refused_by_name() {
        let (_tx, rx) = watch::channel(instances(&["127.0.0.1:1"]));
        let channel = channel(rx, ClientSettings::default());
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "x-shippy-route-svc",
            http::HeaderValue::from_static("9.9.9"),
        );
        let context = CallContext::from_headers(&headers, Instant::now());
        let mut svc = channel.clone();
        let err = context
            .scope(svc.call(http::Request::new(Body::empty())))
            .await
            .expect_err("no such version");
        let status = Status::from_error(err);
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().contains("version 9.9.9"), "{status:?}");
    }

    #[tokio::test]
    async fn a_spent_deadline_is_refused_before_any_call() {
        let (_tx, rx) = watch::channel(instances(&["127.0.0.1:1"]));
        let channel = channel(rx, ClientSettings::default());
        let mut headers = http::HeaderMap::new();
        headers.insert(GRPC_TIMEOUT_HEADER, http::HeaderValue::from_static("1n"));
        let context = CallContext::from_headers(&headers, Instant::now());
        tokio::time::sleep(Duration::from_millis(1)).await;
        let mut svc = channel.clone();
        let err = context
            .scope(svc.call(http::Request::new(Body::empty())))
            .await
            .expect_err("too late");
        let status = Status::from_error(err);
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert!(status.message().contains("was not called"), "{status:?}");
    }
}
