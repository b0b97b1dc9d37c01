//! Request rate limit of a service's own API (`limits.*`), changeable at run time. Health checks
//! and reflection are not limited: they are not behind this interceptor.

use std::{
    num::NonZeroU32,
    sync::{Arc, OnceLock, RwLock},
};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tonic::{Request, Status, service::Interceptor};

use crate::settings::LimitSettings;

/// A token bucket shared by every clone; `None` means unlimited.
#[derive(Debug, Clone, Default)]
pub struct RateLimit {
    bucket: Arc<RwLock<Option<Arc<DefaultDirectRateLimiter>>>>,
}

impl RateLimit {
    /// The process-wide limit, which the config centre updates.
    pub fn global() -> &'static Self {
        static GLOBAL: OnceLock<RateLimit> = OnceLock::new();
        GLOBAL.get_or_init(Self::default)
    }

    /// Replaces the quota.
    pub fn update(&self, settings: &LimitSettings) {
        let bucket = NonZeroU32::new(settings.requests_per_second).map(|rate| {
            let burst = NonZeroU32::new(settings.burst).unwrap_or(rate);
            Arc::new(RateLimiter::direct(
                Quota::per_second(rate).allow_burst(burst),
            ))
        });
        if let Ok(mut current) = self.bucket.write() {
            *current = bucket;
        }
    }

    /// Whether one more call may go through now.
    pub fn check(&self) -> bool {
        match self.bucket.read() {
            Ok(bucket) => bucket.as_ref().is_none_or(|b| b.check().is_ok()),
            Err(_) => true,
        }
    }
}

impl Interceptor for RateLimit {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if self.check() {
            Ok(request)
        } else {
            Err(Status::resource_exhausted(
                "rate limit exceeded; slow down and retry",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_applies_and_can_be_lifted() {
        let limit = RateLimit::default();
        assert!((0..100).all(|_| limit.check()), "unlimited by default");
        limit.update(&LimitSettings {
            requests_per_second: 1,
            burst: 2,
        });
        let allowed = (0..10).filter(|_| limit.check()).count();
        assert_eq!(allowed, 2, "burst of 2, then refused");
        limit.update(&LimitSettings::default());
        assert!(limit.check());
    }
}
