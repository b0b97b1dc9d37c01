//! A client-side load-balanced gRPC channel fed by discovery.
//!
//! Why not tonic's `Channel::balance_channel`: it reads its change stream only while requests flow (an
//! idle client keeps dialling dead endpoints), hangs forever when it has no endpoint, and its
//! power-of-two-choices sees every endpoint with load 0, so it is effectively random. Instead, a
//! background task mirrors the discovery watch into a list of lazily connected per-instance channels,
//! whether or not calls flow, and each call picks the instance with the fewest calls in flight, ties
//! broken round robin (so sequential calls rotate evenly). An instance whose connection fails is
//! skipped for a while and the call is retried on another one; since the request never reached a
//! server, retrying is safe even for calls that are not idempotent. Every call has a deadline,
//! `client.timeout_ms`, read from the live settings the channel was given, so a change in the config
//! centre applies to the next call.
//!
//! Every call carries the request id (the one being served, or a new one at the first hop) and the
//! W3C trace context (see [`super::trace`]), and is a `grpc.client` span with one `grpc.attempt`
//! span per instance tried, so retries show in a trace.
//!
//! Metrics (recorded where the process has a recorder, i.e. in services): calls by target service,
//! method and code (`grpc_client_handled_total`, `grpc_client_handling_seconds`, the names of
//! go-grpc-prometheus plus a `target` label), attempts by endpoint (instance address) and outcome
//! (`shippy_client_attempts_total`), calls in flight per target, instances in rotation
//! (`shippy_balancer_endpoints`) and ejections (`shippy_balancer_ejections_total`).

use std::{
    pin::Pin,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::sync::watch;
use tonic::{
    Status,
    body::Body,
    transport::{Channel, Endpoint},
};
use tower::{Service, ServiceExt};
use tracing::{Instrument as _, field::Empty};

use super::{
    DiscoveryError, InstanceSet, Registry, ServiceInstance,
    trace::{self, REQUEST_ID_HEADER, RequestId},
};
use crate::config::ClientSettings;

/// How long an instance whose connection failed is left out of the rotation.
const EJECT_FOR: Duration = Duration::from_secs(3);
/// Attempts per call on connection failure (each on another instance when there is one).
const MAX_ATTEMPTS: usize = 3;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One instance and its connection.
#[derive(Debug)]
struct Backend {
    address: String,
    channel: Channel,
    in_flight: AtomicUsize,
    ejected_until: Mutex<Option<Instant>>,
}

impl Backend {
    fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until
            .lock()
            .map(|until| until.is_some_and(|until| until > now))
            .unwrap_or(false)
    }

    fn eject(&self) {
        if let Ok(mut until) = self.ejected_until.lock() {
            *until = Some(Instant::now() + EJECT_FOR);
        }
    }
}

/// Decrements the in-flight count when the call ends, however it ends.
struct InFlight(Arc<Backend>);

impl InFlight {
    fn start(backend: Arc<Backend>) -> Self {
        backend.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(backend)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a call in the `shippy_client_in_flight_calls` gauge until dropped, however it ends
/// (a caller may drop the call's future).
struct CallInFlight(metrics::Gauge);

impl CallInFlight {
    fn start(gauge: metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for CallInFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

#[derive(Debug)]
struct Inner {
    service: String,
    backends: watch::Receiver<Arc<Vec<Arc<Backend>>>>,
    cursor: AtomicUsize,
    settings: watch::Receiver<ClientSettings>,
}

impl Inner {
    fn timeout(&self) -> Duration {
        self.settings.borrow().timeout()
    }

    /// Least in-flight first, scanning from a rotating start so ties go round robin; instances that
    /// recently failed are used only when nothing else is left.
    fn pick(&self, exclude: Option<&str>) -> Option<Arc<Backend>> {
        let backends = self.backends.borrow().clone();
        if backends.is_empty() {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut best: Option<(bool, usize, &Arc<Backend>)> = None;
        for i in 0..backends.len() {
            let backend = &backends[(start + i) % backends.len()];
            if exclude == Some(backend.address.as_str()) && backends.len() > 1 {
                continue;
            }
            let key = (
                backend.is_ejected(now),
                backend.in_flight.load(Ordering::Relaxed),
            );
            if best.is_none_or(|(ejected, load, _)| key < (ejected, load)) {
                best = Some((key.0, key.1, backend));
            }
        }
        best.map(|(_, _, backend)| Arc::clone(backend))
    }

    async fn dispatch(
        &self,
        request: http::Request<Body>,
    ) -> Result<http::Response<Body>, BoxError> {
        let (parts, body) = request.into_parts();
        // Unary requests are small; buffering lets a request be re-sent to another instance.
        let body: Bytes = body.collect().await?.to_bytes();
        let mut last_failed: Option<String> = None;
        let mut last_error: Option<BoxError> = None;
        let (_, rpc_service, rpc_method) = trace::rpc_names(parts.uri.path());
        for attempt in 1..=MAX_ATTEMPTS {
            let Some(backend) = self.pick(last_failed.as_deref()) else {
                return Err(Status::unavailable(format!(
                    "no instance of service '{}' is registered",
                    self.service
                ))
                .into());
            };
            let span = tracing::info_span!(
                "grpc.attempt",
                otel.name = format!("{rpc_service}/{rpc_method} attempt {attempt}"),
                otel.kind = "client",
                rpc.system = "grpc",
                rpc.service = rpc_service,
                rpc.method = rpc_method,
                server.address = %backend.address,
                attempt,
                rpc.grpc.status_code = Empty,
                otel.status_code = Empty,
            );
            let mut request =
                http::Request::from_parts(parts.clone(), Body::new(Full::new(body.clone())));
            // The server's span is a child of this attempt.
            trace::inject(&span, request.headers_mut());
            let _guard = InFlight::start(Arc::clone(&backend));
            let mut channel = backend.channel.clone();
            let result = async {
                match channel.ready().await {
                    Ok(channel) => channel.call(request).await,
                    Err(error) => Err(error),
                }
            }
            .instrument(span.clone())
            .await;
            match result {
                Ok(response) => {
                    record_status(&span, grpc_code(&response));
                    metrics::counter!("shippy_client_attempts_total", "target" => self.service.clone(), "endpoint" => backend.address.clone(), "outcome" => "answered").increment(1);
                    return Ok(response);
                }
                Err(error) => {
                    span.record("otel.status_code", "ERROR");
                    metrics::counter!("shippy_client_attempts_total", "target" => self.service.clone(), "endpoint" => backend.address.clone(), "outcome" => "unreachable").increment(1);
                    metrics::counter!("shippy_balancer_ejections_total", "target" => self.service.clone(), "endpoint" => backend.address.clone()).increment(1);
                    // A transport error: no gRPC status came back, the server did not handle the call.
                    tracing::warn!(parent: &span, service = %self.service, address = %backend.address, %error, "instance unreachable, trying another");
                    backend.eject();
                    last_failed = Some(backend.address.clone());
                    last_error = Some(error.into());
                }
            }
        }
        let detail = last_error.map(|e| e.to_string()).unwrap_or_default();
        Err(Status::unavailable(format!(
            "service '{}' is unreachable: {detail}",
            self.service
        ))
        .into())
    }
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
        Ok(Self::from_watch(service, instances, settings))
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

    /// Balances over an instance set that someone else keeps current.
    pub fn from_watch(
        service: &str,
        mut instances: watch::Receiver<InstanceSet>,
        settings: watch::Receiver<ClientSettings>,
    ) -> Self {
        // Connections opened later keep the connect timeout of the start (it needs a restart).
        let connect_timeout = Duration::from_millis(settings.borrow().connect_timeout_ms.max(1));
        let initial = build_backends(&[], &instances.borrow_and_update(), connect_timeout);
        let endpoints =
            metrics::gauge!("shippy_balancer_endpoints", "target" => service.to_owned());
        endpoints.set(initial.len() as f64);
        let (tx, rx) = watch::channel(Arc::new(initial));
        let inner = Arc::new(Inner {
            service: service.to_owned(),
            backends: rx,
            cursor: AtomicUsize::new(0),
            settings,
        });
        let weak: Weak<Inner> = Arc::downgrade(&inner);
        let name = service.to_owned();
        tokio::spawn(async move {
            // Runs while anyone holds the channel, independent of traffic.
            while instances.changed().await.is_ok() {
                if weak.strong_count() == 0 {
                    break;
                }
                let current = tx.borrow().clone();
                let next =
                    build_backends(&current, &instances.borrow_and_update(), connect_timeout);
                let addresses: Vec<_> = next.iter().map(|b| b.address.as_str()).collect();
                tracing::info!(service = %name, instances = ?addresses, "instance set changed");
                endpoints.set(next.len() as f64);
                tx.send_replace(Arc::new(next));
            }
        });
        Self { inner }
    }

    /// Addresses currently in rotation.
    pub fn addresses(&self) -> Vec<String> {
        self.inner
            .backends
            .borrow()
            .iter()
            .map(|b| b.address.clone())
            .collect()
    }

    /// The service this channel reaches.
    pub fn service(&self) -> &str {
        &self.inner.service
    }
}

/// Reuses existing connections for instances that stay, opens lazy ones for new instances.
fn build_backends(
    current: &[Arc<Backend>],
    instances: &InstanceSet,
    connect_timeout: Duration,
) -> Vec<Arc<Backend>> {
    let mut addresses: Vec<&str> = instances.iter().map(|i| i.address.as_str()).collect();
    addresses.sort_unstable();
    addresses.dedup();
    addresses
        .into_iter()
        .filter_map(|address| {
            if let Some(existing) = current.iter().find(|b| b.address == address) {
                return Some(Arc::clone(existing));
            }
            let endpoint = Endpoint::from_shared(format!("http://{address}"))
                .inspect_err(|error| tracing::warn!(%address, %error, "ignoring unusable address"))
                .ok()?
                .connect_timeout(connect_timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5));
            Some(Arc::new(Backend {
                address: address.to_owned(),
                channel: endpoint.connect_lazy(),
                in_flight: AtomicUsize::new(0),
                ejected_until: Mutex::new(None),
            }))
        })
        .collect()
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
        if !request.headers().contains_key(REQUEST_ID_HEADER)
            && let Some(value) = request_id.header_value()
        {
            request.headers_mut().insert(REQUEST_ID_HEADER, value);
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
        let (grpc_service, grpc_method) = (rpc_service.to_owned(), rpc_method.to_owned());
        let call = async move {
            let target = inner.service.clone();
            let in_flight = CallInFlight::start(metrics::gauge!(
                "shippy_client_in_flight_calls",
                "target" => target.clone()
            ));
            let started = Instant::now();
            let timeout = inner.timeout();
            let result = match tokio::time::timeout(timeout, inner.dispatch(request)).await {
                Ok(result) => result,
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "service '{}' did not answer within {} ms",
                    inner.service,
                    timeout.as_millis()
                ))
                .into()),
            };
            drop(in_flight);
            let code = match &result {
                Ok(response) => grpc_code(response),
                Err(error) => error
                    .downcast_ref::<Status>()
                    .map_or(tonic::Code::Unavailable, Status::code),
            };
            record_status(&tracing::Span::current(), code);
            metrics::counter!("grpc_client_handled_total", "target" => target.clone(), "grpc_type" => "unary", "grpc_service" => grpc_service.clone(), "grpc_method" => grpc_method.clone(), "grpc_code" => trace::code_name(code)).increment(1);
            metrics::histogram!("grpc_client_handling_seconds", "target" => target, "grpc_type" => "unary", "grpc_service" => grpc_service, "grpc_method" => grpc_method).record(started.elapsed().as_secs_f64());
            result
        };
        Box::pin(call.instrument(span))
    }
}

/// The gRPC status of a unary answer as far as its headers tell: a failed call is answered
/// trailers-only (the status in the headers); a response with a body succeeded (its status, OK,
/// comes in the trailers).
fn grpc_code<B>(response: &http::Response<B>) -> tonic::Code {
    Status::from_header_map(response.headers()).map_or(tonic::Code::Ok, |status| status.code())
}

/// Records `code` as `rpc.grpc.status_code` on `span`, and an error status for the codes that are
/// the callee's failure.
fn record_status(span: &tracing::Span, code: tonic::Code) {
    span.record("rpc.grpc.status_code", code as i32);
    if code != tonic::Code::Ok {
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

    #[tokio::test]
    async fn sequential_picks_rotate_over_every_instance() {
        let (_tx, rx) = watch::channel(instances(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]));
        let channel =
            BalancedChannel::from_watch("svc", rx, live::fixed(ClientSettings::default()));
        let mut seen = std::collections::HashMap::new();
        for _ in 0..30 {
            let backend = channel.inner.pick(None).expect("a backend");
            *seen.entry(backend.address.clone()).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 3);
        assert!(seen.values().all(|&n| n == 10), "{seen:?}");
    }

    #[tokio::test]
    async fn least_loaded_and_non_ejected_instances_win() {
        let (_tx, rx) = watch::channel(instances(&["127.0.0.1:1", "127.0.0.1:2"]));
        let channel =
            BalancedChannel::from_watch("svc", rx, live::fixed(ClientSettings::default()));
        let busy = channel.inner.pick(None).expect("backend");
        let _guard = InFlight::start(Arc::clone(&busy));
        for _ in 0..4 {
            assert_ne!(
                channel.inner.pick(None).expect("backend").address,
                busy.address
            );
        }
        drop(_guard);
        busy.eject();
        for _ in 0..4 {
            assert_ne!(
                channel.inner.pick(None).expect("backend").address,
                busy.address
            );
        }
    }

    #[tokio::test]
    async fn set_changes_apply_without_traffic_and_empty_set_fails_fast() {
        let (tx, rx) = watch::channel(instances(&["127.0.0.1:1"]));
        let channel =
            BalancedChannel::from_watch("svc", rx, live::fixed(ClientSettings::default()));
        tx.send_replace(instances(&["127.0.0.1:2", "127.0.0.1:3"]));
        let mut backends = channel.inner.backends.clone();
        backends
            .wait_for(|b| b.len() == 2)
            .await
            .expect("updated while idle");
        assert_eq!(channel.addresses(), ["127.0.0.1:2", "127.0.0.1:3"]);

        tx.send_replace(Vec::new());
        backends.wait_for(|b| b.is_empty()).await.expect("emptied");
        let mut svc = channel.clone();
        let err = svc
            .call(http::Request::new(Body::empty()))
            .await
            .expect_err("no instance");
        let status = Status::from_error(err);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(
            status.message().contains("no instance of service 'svc'"),
            "{status:?}"
        );
    }
}
