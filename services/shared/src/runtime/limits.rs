//! Request rate limit of a service's own API (`limits.*`), following the live settings, as a tower
//! layer of the server stack ([`RateLimitLayer`]). Health checks and reflection are never limited.

use std::{
    future::Future,
    num::NonZeroU32,
    pin::Pin,
    sync::{Arc, RwLock, Weak},
    task::{Context, Poll},
};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::watch;
use tonic::Status;

use crate::config::LimitSettings;

type Bucket = Option<Arc<DefaultDirectRateLimiter>>;

/// A token bucket shared by every clone; `None` means unlimited. Each service has its own.
#[derive(Debug, Clone)]
pub(crate) struct RateLimit {
    bucket: Arc<RwLock<Bucket>>,
}

impl RateLimit {
    /// A limit that follows `settings`: a change replaces the bucket (a fresh burst) at once.
    pub(crate) fn follow(mut settings: watch::Receiver<LimitSettings>) -> Self {
        let bucket = Arc::new(RwLock::new(bucket(&settings.borrow_and_update())));
        let weak: Weak<RwLock<Bucket>> = Arc::downgrade(&bucket);
        tokio::spawn(async move {
            while settings.changed().await.is_ok() {
                let Some(shared) = weak.upgrade() else { return };
                let limits = settings.borrow_and_update().clone();
                if let Ok(mut current) = shared.write() {
                    *current = self::bucket(&limits);
                }
                tracing::info!(?limits, "rate limits changed");
            }
        });
        Self { bucket }
    }

    /// Whether one more call may go through now.
    pub(crate) fn check(&self) -> bool {
        match self.bucket.read() {
            Ok(bucket) => bucket.as_ref().is_none_or(|b| b.check().is_ok()),
            Err(_) => true,
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

/// Paths that are never limited: probes and tooling must work under load.
fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

/// Applies a [`RateLimit`] to every call of the service it wraps, except health and reflection;
/// calls over the limit get `RESOURCE_EXHAUSTED` without reaching the handler.
#[derive(Debug, Clone)]
pub(super) struct RateLimitLayer {
    limit: RateLimit,
}

impl RateLimitLayer {
    /// A layer enforcing `limit`.
    pub(super) fn new(limit: RateLimit) -> Self {
        Self { limit }
    }
}

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimited {
            inner,
            limit: self.limit.clone(),
        }
    }
}

/// The service made by [`RateLimitLayer`].
#[derive(Debug, Clone)]
pub(super) struct RateLimited<S> {
    inner: S,
    limit: RateLimit,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for RateLimited<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if exempt(request.uri().path()) || self.limit.check() {
            Box::pin(self.inner.call(request))
        } else {
            let refused =
                Status::resource_exhausted("rate limit exceeded; slow down and retry").into_http();
            Box::pin(std::future::ready(Ok(refused)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn limit_applies_follows_changes_and_can_be_lifted() {
        let (tx, rx) = watch::channel(LimitSettings::default());
        let limit = RateLimit::follow(rx);
        assert!((0..100).all(|_| limit.check()), "unlimited by default");
        tx.send_replace(LimitSettings {
            requests_per_second: 1,
            burst: 2,
        });
        // The follower task applies the change; yield until it has.
        for _ in 0..100 {
            if !(0..3).all(|_| limit.check()) {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(!limit.check(), "burst of 2 used up, then refused");
        tx.send_replace(LimitSettings::default());
        for _ in 0..100 {
            if limit.check() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!((0..100).all(|_| limit.check()), "lifted");
    }
}
