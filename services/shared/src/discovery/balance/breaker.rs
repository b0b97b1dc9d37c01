//! Adaptive throttling per upstream service (Google SRE book, "Handling Overload"; go-zero's
//! breaker is the same): over the last 10 s the client counts the calls it wanted to make
//! (`requests`) and those the service handled (`accepts`), and rejects a new call locally with the
//! probability `max(0, (requests - PROTECTION - k * accepts) / (requests + 1))`.
//!
//! While the service answers, `requests ≈ accepts` and nothing is rejected; when it fails most
//! calls the ratio climbs towards 1 and callers stop queueing on it, yet a few calls still go
//! through as probes, and as they succeed (or as the failures age out of the window) the ratio
//! falls back to 0 on its own: there is no open/half-open state machine to get stuck in. Written
//! here rather than taken from a crate because it is twenty lines of arithmetic over a window,
//! and the crates that offer breakers count failures, not this ratio.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// Width of one bucket of the window.
const BUCKET: Duration = Duration::from_secs(1);
/// Buckets in the window (10 s).
const BUCKETS: usize = 10;
/// Requests that are never throttled, so a couple of failures on a quiet client reject nothing.
const PROTECTION: f64 = 5.0;

/// Requests and accepts over a sliding window.
#[derive(Debug)]
pub(super) struct Breaker {
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    /// `(requests, accepts)` per bucket, a ring.
    buckets: [(u32, u32); BUCKETS],
    /// Index of the bucket that `started` began.
    current: usize,
    started: Instant,
}

impl Window {
    /// Moves the ring forward to `now`, clearing buckets that fell out of the window.
    fn advance(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.started);
        let steps = (elapsed.as_millis() / BUCKET.as_millis()) as usize;
        if steps == 0 {
            return;
        }
        for step in 1..=steps.min(BUCKETS) {
            self.buckets[(self.current + step) % BUCKETS] = (0, 0);
        }
        self.current = (self.current + steps) % BUCKETS;
        self.started += BUCKET * steps as u32;
    }

    fn totals(&self) -> (f64, f64) {
        let (requests, accepts) = self
            .buckets
            .iter()
            .fold((0_u64, 0_u64), |(r, a), (br, ba)| {
                (r + u64::from(*br), a + u64::from(*ba))
            });
        (requests as f64, accepts as f64)
    }
}

impl Breaker {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            window: Mutex::new(Window {
                buckets: [(0, 0); BUCKETS],
                current: 0,
                started: now,
            }),
        }
    }

    /// The share of new calls to reject now, with `k_percent` as k (150 = 1.5; 0 = never).
    pub(super) fn drop_ratio(&self, now: Instant, k_percent: u32) -> f64 {
        if k_percent == 0 {
            return 0.0;
        }
        let Ok(mut window) = self.window.lock() else {
            return 0.0;
        };
        window.advance(now);
        let (requests, accepts) = window.totals();
        let k = f64::from(k_percent) / 100.0;
        ((requests - PROTECTION - k * accepts) / (requests + 1.0)).max(0.0)
    }

    /// Counts one call the client wanted to make (rejected locally or not) and whether the
    /// service handled it.
    pub(super) fn record(&self, now: Instant, accepted: bool) {
        if let Ok(mut window) = self.window.lock() {
            window.advance(now);
            let current = window.current;
            let bucket = &mut window.buckets[current];
            bucket.0 = bucket.0.saturating_add(1);
            if accepted {
                bucket.1 = bucket.1.saturating_add(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_opens_when_most_calls_fail_and_closes_as_they_succeed_or_age_out() {
        let t0 = Instant::now();
        let breaker = Breaker::new(t0);
        for _ in 0..100 {
            breaker.record(t0, true);
        }
        assert_eq!(breaker.drop_ratio(t0, 150), 0.0, "a healthy service");
        for _ in 0..3 {
            breaker.record(t0, false);
        }
        assert_eq!(
            breaker.drop_ratio(t0, 150),
            0.0,
            "a few failures reject nothing"
        );

        // Ten seconds later the successes have aged out; now everything fails.
        let t1 = t0 + Duration::from_secs(11);
        for _ in 0..50 {
            breaker.record(t1, false);
        }
        let open = breaker.drop_ratio(t1, 150);
        assert!(open > 0.85, "most calls are rejected locally: {open}");
        assert_eq!(breaker.drop_ratio(t1, 0), 0.0, "k = 0 turns it off");

        // Probes that succeed bring it back down.
        for _ in 0..100 {
            breaker.record(t1, true);
        }
        assert_eq!(breaker.drop_ratio(t1, 150), 0.0, "closed again");
        // And failures alone also fade once they leave the window.
        let t2 = t1 + Duration::from_secs(3);
        for _ in 0..200 {
            breaker.record(t2, false);
        }
        assert!(breaker.drop_ratio(t2, 150) > 0.5);
        assert_eq!(
            breaker.drop_ratio(t2 + Duration::from_secs(10), 150),
            0.0,
            "the window forgets"
        );
    }
}
