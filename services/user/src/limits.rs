//! Log-in rate limits (`auth.login_per_client_per_minute`, `auth.login_per_email_per_minute`):
//! password guessing is slowed per client IP address and per account, and refused attempts cost
//! no hashing at all (they are checked before the password is). Sign-ups count against the same
//! per-client allowance, since each costs a hash too: otherwise anyone could keep every hashing
//! slot busy with sign-ups and lock everybody out of logging in.
//!
//! Each limit is a token bucket per key (governor): a burst of the per-minute number, refilled
//! evenly over the minute. Every attempt counts, right or wrong: counting only failures would need
//! the expensive hash first.

use std::{
    hash::Hash,
    net::IpAddr,
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};

use crate::domain::{Email, UserError};

/// How many checks pass between two sweeps of keys whose bucket is full again (forgotten keys
/// keep the maps from growing with every address and email ever seen).
const SWEEP_EVERY: u64 = 1024;

/// One keyed limit; `None` = unlimited.
#[derive(Debug, Clone)]
struct Limit<K: Hash + Eq + Clone> {
    limiter: Option<Arc<DefaultKeyedRateLimiter<K>>>,
}

impl<K: Hash + Eq + Clone> Limit<K> {
    fn per_minute(n: u32) -> Self {
        Self {
            limiter: NonZeroU32::new(n).map(|n| Arc::new(RateLimiter::keyed(Quota::per_minute(n)))),
        }
    }

    /// `Ok`, or the seconds until `key` may try again (at least 1).
    fn check(&self, key: &K, sweep: bool) -> Result<(), u64> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if sweep {
            limiter.retain_recent();
        }
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            // Round up: "try again in 0 s" would be refused again.
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

/// The log-in limits of one user service process.
#[derive(Debug, Clone)]
pub struct LoginLimits {
    per_client: Limit<IpAddr>,
    per_email: Limit<Email>,
    checks: Arc<AtomicU64>,
}

impl LoginLimits {
    /// At most `per_client` attempts a minute from one IP address and `per_email` for one email;
    /// 0 = unlimited.
    pub fn new(per_client: u32, per_email: u32) -> Self {
        Self {
            per_client: Limit::per_minute(per_client),
            per_email: Limit::per_minute(per_email),
            checks: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Counts an attempt from `client` (when known); [`UserError::TooManyAttempts`] over the limit.
    pub fn client(&self, client: Option<IpAddr>) -> Result<(), UserError> {
        let sweep = self.sweep_due();
        match client {
            Some(ip) => self.per_client.check(&ip, sweep).map_err(refused),
            None => Ok(()),
        }
    }

    /// Counts a sign-up from `client` (when known) against the same allowance as its log-ins: both
    /// cost a hash. [`UserError::TooManySignUps`] over the limit.
    pub fn sign_up(&self, client: Option<IpAddr>) -> Result<(), UserError> {
        self.client(client).map_err(|refused| match refused {
            UserError::TooManyAttempts { retry_after_secs } => {
                UserError::TooManySignUps { retry_after_secs }
            }
            other => other,
        })
    }

    /// Counts an attempt for `email`; [`UserError::TooManyAttempts`] over the limit.
    pub fn email(&self, email: &Email) -> Result<(), UserError> {
        let sweep = self.sweep_due();
        self.per_email.check(email, sweep).map_err(refused)
    }

    /// Whether this check should also sweep: once every [`SWEEP_EVERY`] checks.
    fn sweep_due(&self) -> bool {
        self.checks
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(SWEEP_EVERY)
    }
}

fn refused(retry_after_secs: u64) -> UserError {
    UserError::TooManyAttempts {
        retry_after_secs: retry_after_secs.max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(text: &str) -> Email {
        Email::parse(text).expect("email")
    }

    #[test]
    fn the_attempt_after_the_limit_is_refused_with_a_wait() {
        let limits = LoginLimits::new(0, 3);
        let alice = email("alice@x.io");
        for _ in 0..3 {
            limits.email(&alice).expect("within the limit");
        }
        let err = limits.email(&alice).expect_err("fourth attempt");
        let UserError::TooManyAttempts { retry_after_secs } = err else {
            panic!("{err:?}");
        };
        // One attempt is refilled every 20 s.
        assert!((1..=20).contains(&retry_after_secs), "{retry_after_secs}");
        assert_eq!(
            UserError::TooManyAttempts {
                retry_after_secs: 20
            }
            .to_string(),
            "too many login attempts; try again in 20 s"
        );
        limits
            .email(&email("bob@x.io"))
            .expect("another email has its own budget");
    }

    #[test]
    fn clients_are_limited_by_address_and_zero_means_unlimited() {
        let limits = LoginLimits::new(2, 0);
        let (a, b): (IpAddr, IpAddr) =
            ("127.0.0.1".parse().expect("ip"), "::1".parse().expect("ip"));
        limits.client(Some(a)).expect("1");
        limits.client(Some(a)).expect("2");
        assert!(limits.client(Some(a)).is_err());
        limits.client(Some(b)).expect("another address");
        limits.client(None).expect("unknown address: not limited");
        for _ in 0..100 {
            limits.email(&email("a@x.io")).expect("unlimited");
        }
    }
}
