//! Protection of a service's own API from overload (`limits.*`, followed live), as tower layers of
//! the server stack: a request rate limit ([`RateLimit`]) and a concurrency limit that sheds calls
//! beyond it ([`ConcurrencyLimit`]: a fixed ceiling for the whole service, and below it an adaptive
//! limit per method, [`super::adaptive`]). Both are [`Gate`]s: one generic layer ([`GateLayer`]) asks a
//! gate about each call and either answers the call with the gate's `Status` at once or passes it
//! on, holding what the gate handed out until the call is answered. Health checks and reflection
//! pass every gate: probes and tooling must work under load.
//!
//! Load shedding: a call that arrives while `limits.max_concurrent_calls` calls are in flight is
//! refused at once with `UNAVAILABLE` and never queued, so under overload the latency of admitted
//! calls stays bounded instead of growing with a queue. `UNAVAILABLE` rather than
//! `RESOURCE_EXHAUSTED` because the refusal says "this instance, now": it is the code gRPC clients
//! (and our balanced channels) treat as safe to retry on another instance, as it is returned before
//! the handler ran. The rate limit, a policy about the caller's pace, keeps `RESOURCE_EXHAUSTED`.
//!
//! The ceiling (`limits.max_concurrent_calls`) is configured: it bounds memory whatever happens.
//! Within it, the adaptive limit (`limits.adaptive`) sheds a method's calls only while that method
//! is queueing, at what it has shown it can serve; see [`super::adaptive`] for how and why.

use std::{
    future::Future,
    num::NonZeroU32,
    pin::Pin,
    sync::{
        Arc, RwLock, Weak,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::watch;
use tonic::Status;

use super::adaptive::{Adaptive, Admitted};
use crate::{config::LimitSettings, discovery::trace};

/// Start of the message of a call refused by the rate limit (the trace layer counts these).
const RATE_LIMITED: &str = "rate limit exceeded; slow down and retry";
/// The message of a call shed by the concurrency limit.
const SHED: &str = "server overloaded: too many calls in flight; retry on another instance";

/// Decides about each call that reaches a [`GateLayer`]: let it through, holding a guard until it
/// is answered, or answer it at once with a `Status`.
pub(super) trait Gate: Clone + Send + Sync + 'static {
    /// Held while an admitted call is served and dropped when it is answered (or abandoned).
    type Guard: Send + 'static;

    /// Admits the call to `path` (`/package.Service/Method`) or says why not.
    fn admit(&self, path: &str) -> Result<Self::Guard, Status>;
}

/// Puts a [`Gate`] in front of every call of the service it wraps, except health and reflection.
#[derive(Debug, Clone)]
pub(super) struct GateLayer<G> {
    gate: G,
}

impl<G> GateLayer<G> {
    /// A layer asking `gate` about every call.
    pub(super) fn new(gate: G) -> Self {
        Self { gate }
    }
}

impl<S, G: Clone> tower::Layer<S> for GateLayer<G> {
    type Service = Gated<S, G>;

    fn layer(&self, inner: S) -> Self::Service {
        Gated {
            inner,
            gate: self.gate.clone(),
        }
    }
}

/// The service made by [`GateLayer`].
#[derive(Debug, Clone)]
pub(super) struct Gated<S, G> {
    inner: S,
    gate: G,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, G, B, R> tower::Service<http::Request<B>> for Gated<S, G>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
    S::Error: Send + 'static,
    G: Gate,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        if exempt(path) {
            return Box::pin(self.inner.call(request));
        }
        match self.gate.admit(path) {
            Ok(guard) => {
                let served = self.inner.call(request);
                Box::pin(async move {
                    let answer = served.await;
                    drop(guard);
                    answer
                })
            }
            Err(status) => Box::pin(std::future::ready(Ok(status.into_http()))),
        }
    }
}

/// Paths that pass every gate: probes and tooling must work under load.
pub(super) fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

/// The limits of one service's API, following `limits.*`. Each service has its own.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// `limits.requests_per_second` and `limits.burst`.
    pub(super) rate: RateLimit,
    /// `limits.max_concurrent_calls`.
    pub(super) concurrency: ConcurrencyLimit,
}

impl Limits {
    /// Limits that follow `settings`: a change applies at once, to calls that arrive after it.
    /// `methods` are the paths that get an adaptive limit (see [`super::adaptive::methods_of`]).
    pub(crate) fn follow(
        mut settings: watch::Receiver<LimitSettings>,
        methods: Vec<String>,
    ) -> Self {
        let current = settings.borrow_and_update().clone();
        let limits = Self {
            rate: RateLimit::new(&current),
            concurrency: ConcurrencyLimit::new(
                current.max_concurrent_calls,
                Adaptive::new(methods, current.adaptive),
            ),
        };
        // The task holds only weak references: it ends once the limits are gone with the
        // service's server stack.
        let bucket = Arc::downgrade(&limits.rate.bucket);
        let ceiling = Arc::downgrade(&limits.concurrency.state);
        let adaptive = limits.concurrency.adaptive.switch();
        tokio::spawn(async move {
            while settings.changed().await.is_ok() {
                let limits = settings.borrow_and_update().clone();
                let (bucket, ceiling, adaptive) = (
                    Weak::upgrade(&bucket),
                    ceiling.upgrade(),
                    adaptive.upgrade(),
                );
                if bucket.is_none() && ceiling.is_none() && adaptive.is_none() {
                    return;
                }
                if let Some(Ok(mut current)) = bucket.as_ref().map(|b| b.write()) {
                    *current = self::bucket(&limits);
                }
                if let Some(ceiling) = ceiling {
                    ceiling.set_max(limits.max_concurrent_calls);
                }
                if let Some(adaptive) = adaptive {
                    adaptive.store(limits.adaptive, Ordering::Relaxed);
                }
                tracing::info!(?limits, "limits changed");
            }
        });
        limits
    }
}

type Bucket = Option<Arc<DefaultDirectRateLimiter>>;

/// A token bucket shared by every clone; `None` means unlimited. A change of the settings replaces
/// the bucket (a fresh burst).
#[derive(Debug, Clone)]
pub(super) struct RateLimit {
    bucket: Arc<RwLock<Bucket>>,
}

impl RateLimit {
    fn new(settings: &LimitSettings) -> Self {
        Self {
            bucket: Arc::new(RwLock::new(bucket(settings))),
        }
    }

    /// Whether one more call may go through now.
    fn check(&self) -> bool {
        match self.bucket.read() {
            Ok(bucket) => bucket.as_ref().is_none_or(|b| b.check().is_ok()),
            Err(_) => true,
        }
    }
}

/// Calls over the rate get `RESOURCE_EXHAUSTED` without reaching the handler.
impl Gate for RateLimit {
    type Guard = ();

    fn admit(&self, _path: &str) -> Result<(), Status> {
        if self.check() {
            Ok(())
        } else {
            // The bucket refills every second.
            Err(crate::status::exhausted(RATE_LIMITED, 1))
        }
    }
}

fn bucket(settings: &LimitSettings) -> Bucket {
    NonZeroU32::new(settings.requests_per_second).map(|rate| {
        let burst = NonZeroU32::new(settings.burst).unwrap_or(rate);
        Arc::new(RateLimiter::direct(
            Quota::per_second(rate).allow_burst(burst),
        ))
    })
}

/// The calls in flight and the most allowed at once (0 = no limit), shared by every clone.
#[derive(Debug, Default)]
struct Concurrency {
    in_flight: AtomicUsize,
    max: AtomicUsize,
}

impl Concurrency {
    fn set_max(&self, max: u32) {
        self.max.store(
            usize::try_from(max).unwrap_or(usize::MAX),
            Ordering::Relaxed,
        );
    }

    /// Takes a slot if one is free; never waits.
    fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        let max = self.max.load(Ordering::Relaxed);
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        // Counted first, checked after: two racing calls cannot both take the last slot.
        let slot = Slot(Arc::clone(self));
        (max == 0 || before < max).then_some(slot)
    }
}

/// One call's place among those in flight, given back when dropped.
#[derive(Debug)]
pub(super) struct Slot(Arc<Concurrency>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// At most `limits.max_concurrent_calls` calls in flight, and within that each method's adaptive
/// limit while it is overloaded; the next call is shed.
#[derive(Debug, Clone)]
pub(super) struct ConcurrencyLimit {
    state: Arc<Concurrency>,
    adaptive: Adaptive,
}

impl ConcurrencyLimit {
    fn new(max: u32, adaptive: Adaptive) -> Self {
        let state = Arc::new(Concurrency::default());
        state.set_max(max);
        Self { state, adaptive }
    }
}

/// A call beyond a limit gets `UNAVAILABLE` at once and is counted in `shippy_server_shed_total`
/// (`reason`: `ceiling` or `adaptive`); an admitted one holds its places until it is answered.
impl Gate for ConcurrencyLimit {
    type Guard = (Slot, Admitted);

    fn admit(&self, path: &str) -> Result<(Slot, Admitted), Status> {
        let shed = |reason: &'static str| {
            let (_, grpc_service, grpc_method) = trace::rpc_names(path);
            metrics::counter!("shippy_server_shed_total", "grpc_service" => grpc_service.to_owned(), "grpc_method" => grpc_method.to_owned(), "reason" => reason).increment(1);
            tracing::debug!(path, reason, "call shed: too many in flight");
            Status::unavailable(SHED)
        };
        let slot = self.state.try_acquire().ok_or_else(|| shed("ceiling"))?;
        let admitted = self
            .adaptive
            .admit(path, std::time::Instant::now())
            .ok_or_else(|| shed("adaptive"))?;
        Ok((slot, admitted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits (bounded) until the follower task has applied a change that `applied` can see.
    async fn until(mut applied: impl FnMut() -> bool) {
        for _ in 0..1_000 {
            if applied() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("change not applied");
    }

    #[tokio::test]
    async fn rate_limit_applies_follows_changes_and_can_be_lifted() {
        let (tx, rx) = watch::channel(LimitSettings::default());
        let limit = Limits::follow(rx, Vec::new()).rate;
        assert!((0..100).all(|_| limit.check()), "unlimited by default");
        tx.send_replace(LimitSettings {
            requests_per_second: 1,
            burst: 2,
            ..LimitSettings::default()
        });
        until(|| !(0..3).all(|_| limit.check())).await;
        assert!(!limit.check(), "burst of 2 used up, then refused");
        let refused = limit.admit("/shippy.vessel.v1.VesselService/GetVessels");
        assert_eq!(
            refused.expect_err("refused").code(),
            tonic::Code::ResourceExhausted
        );
        tx.send_replace(LimitSettings::default());
        until(|| limit.check()).await;
        assert!((0..100).all(|_| limit.check()), "lifted");
    }

    #[tokio::test]
    async fn concurrency_limit_sheds_beyond_the_ceiling_frees_slots_and_follows_changes() {
        let path = "/shippy.vessel.v1.VesselService/GetVessels";
        let (tx, rx) = watch::channel(LimitSettings {
            max_concurrent_calls: 2,
            ..LimitSettings::default()
        });
        let limit = Limits::follow(rx, Vec::new()).concurrency;
        let first = limit.admit(path).expect("first admitted");
        let second = limit.clone().admit(path).expect("second admitted");
        let shed = limit.admit(path).expect_err("third shed");
        assert_eq!(shed.code(), tonic::Code::Unavailable);
        assert_eq!(shed.message(), SHED);
        drop(first);
        let third = limit.admit(path).expect("a freed slot is reused");
        assert!(limit.admit(path).is_err(), "full again");
        // Shed calls took no slot: two in flight, as admitted.
        assert_eq!(limit.state.in_flight.load(Ordering::Relaxed), 2);

        tx.send_replace(LimitSettings {
            max_concurrent_calls: 3,
            ..LimitSettings::default()
        });
        let mut fourth = None;
        until(|| {
            fourth = limit.admit(path).ok();
            fourth.is_some()
        })
        .await;
        assert!(limit.admit(path).is_err(), "raised to 3, not beyond");

        tx.send_replace(LimitSettings {
            max_concurrent_calls: 0,
            ..LimitSettings::default()
        });
        let mut many = Vec::new();
        until(|| limit.admit(path).map(|slot| many.push(slot)).is_ok()).await;
        for _ in 0..1_000 {
            many.push(limit.admit(path).expect("0 means no limit"));
        }
        drop((second, third, fourth, many));
        assert_eq!(limit.state.in_flight.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn health_and_reflection_are_exempt_and_nothing_else() {
        assert!(exempt("/grpc.health.v1.Health/Check"));
        assert!(exempt("/grpc.health.v1.Health/Watch"));
        assert!(exempt(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
        assert!(!exempt("/shippy.user.v1.UserService/Auth"));
        assert!(!exempt("/grpc.healthy/Check"));
    }
}
