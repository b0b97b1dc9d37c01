//! One instance as the balancer sees it: its connection, the calls in flight on it, its recent
//! latency and its outlier state.
//!
//! - **Latency** is an EWMA of answers, where an attempt that timed out is a peak that takes
//!   over at once (Finagle's and linkerd's peak EWMA apply the peak to every answer; on a busy
//!   2-core host that lets one scheduling hiccup starve an instance for seconds, so here only a
//!   missing answer does). With no answers the value decays towards zero, so an idle or
//!   recovered instance is soon tried again. The picking cost is that latency times the calls in
//!   flight plus one.
//! - **Outliers**: consecutive failures (unreachable, `UNAVAILABLE`, an attempt timed out) eject
//!   the instance for a while, twice as long for each repeat offence up to a ceiling; a success
//!   resets the count, and a long enough clean run forgets the offences. The caller decides
//!   whether an ejection is allowed at all (never all instances at once).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use super::connection::Connection;
use crate::{call_metrics::PerValue, config::ClientSettings};

/// How fast the latency estimate forgets: its weight halves about every 1.4 s.
const DECAY: Duration = Duration::from_secs(2);
/// Longest run of doubling ejections (2^6 times the base, before the ceiling applies).
const MAX_DOUBLINGS: u32 = 6;

/// One instance and its connection.
#[derive(Debug)]
pub(super) struct Backend {
    pub(super) address: String,
    pub(super) version: String,
    pub(super) connection: Connection,
    in_flight: AtomicUsize,
    /// Whether any answer came back yet (see [`Backend::observe_answer`]).
    answered: AtomicBool,
    latency: Mutex<Ewma>,
    health: Mutex<Health>,
    /// `shippy_client_attempts_total` of this instance, per outcome.
    attempts: PerValue<5>,
}

#[derive(Debug)]
struct Ewma {
    nanos: f64,
    at: Instant,
}

#[derive(Debug, Default)]
struct Health {
    failures_in_row: u32,
    offences: u32,
    ejected_until: Option<Instant>,
}

impl Backend {
    pub(super) fn new(address: String, version: String, connection: Connection) -> Self {
        Self {
            address,
            version,
            connection,
            in_flight: AtomicUsize::new(0),
            answered: AtomicBool::new(false),
            latency: Mutex::new(Ewma {
                nanos: 0.0,
                at: Instant::now(),
            }),
            health: Mutex::new(Health::default()),
            attempts: PerValue::new([
                "answered",
                "unavailable",
                "unreachable",
                "broken",
                "timeout",
            ]),
        }
    }

    /// Counts an attempt on this instance of a call to `target` that ended in `outcome`.
    pub(super) fn count_attempt(&self, target: &str, outcome: &'static str) {
        let make = |outcome: &'static str| metrics::counter!("shippy_client_attempts_total", "target" => target.to_owned(), "endpoint" => self.address.clone(), "outcome" => outcome);
        match self.attempts.get(outcome, make) {
            Some(counter) => counter.increment(1),
            None => make(outcome).increment(1),
        }
    }

    /// Counts a call on this instance until the guard is dropped, however the call ends.
    pub(super) fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// Calls in flight now.
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The latency estimate now, in nanoseconds (one at least, so instances with no history
    /// still compare by calls in flight).
    pub(super) fn latency(&self, now: Instant) -> f64 {
        self.latency.lock().map_or(0.0, |ewma| decayed(&ewma, now)) + 1.0
    }

    /// The picking cost: latency times (calls in flight + 1). Lower is better.
    pub(super) fn cost(&self, now: Instant) -> f64 {
        self.latency(now) * (self.in_flight() + 1) as f64
    }

    /// Folds one answer's latency into the moving average. The first answer is left out: it paid
    /// for opening the connection, which says nothing about how fast the instance serves.
    pub(super) fn observe_answer(&self, latency: Duration, now: Instant) {
        if self.answered.swap(true, Ordering::Relaxed) {
            self.observe(latency, now, false);
        }
    }

    /// Records an attempt that got no answer within `limit` (it timed out, or its connection
    /// broke after that long): a peak, taking over at once.
    pub(super) fn observe_timeout(&self, limit: Duration, now: Instant) {
        self.observe(limit, now, true);
    }

    fn observe(&self, latency: Duration, now: Instant, peak: bool) {
        if let Ok(mut ewma) = self.latency.lock() {
            let sample = latency.as_nanos() as f64;
            let current = decayed(&ewma, now);
            ewma.nanos = if peak && sample > current {
                sample
            } else {
                let weight = weight(ewma.at, now);
                current * weight + sample * (1.0 - weight)
            };
            ewma.at = now;
        }
    }

    pub(super) fn is_ejected(&self, now: Instant) -> bool {
        self.health
            .lock()
            .map(|health| health.ejected_until.is_some_and(|until| until > now))
            .unwrap_or(false)
    }

    /// A call succeeded here.
    pub(super) fn succeeded(&self, now: Instant, settings: &ClientSettings) {
        if let Ok(mut health) = self.health.lock() {
            health.failures_in_row = 0;
            // A clean run as long as the longest ejection forgets past offences.
            let forgiven = health
                .ejected_until
                .is_some_and(|until| now > until + Duration::from_millis(settings.eject_max_ms));
            if forgiven {
                health.offences = 0;
                health.ejected_until = None;
            }
        }
    }

    /// A call failed here. Returns how long the instance is now ejected for, when this failure
    /// ejects it: after `eject_after_failures` in a row, or at once when `at_once` (the
    /// connection failed), and only if `may_eject`.
    pub(super) fn failed(
        &self,
        now: Instant,
        settings: &ClientSettings,
        at_once: bool,
        may_eject: bool,
    ) -> Option<Duration> {
        let mut health = self.health.lock().ok()?;
        health.failures_in_row = health.failures_in_row.saturating_add(1);
        let due = at_once || health.failures_in_row >= settings.eject_after_failures.max(1);
        let already = health.ejected_until.is_some_and(|until| until > now);
        if !due || already || !may_eject {
            return None;
        }
        let length = ejection_length(health.offences, settings);
        health.offences = health.offences.saturating_add(1);
        health.failures_in_row = 0;
        health.ejected_until = Some(now + length);
        Some(length)
    }
}

/// How long the `offences`-th ejection (0-based) lasts: the base, doubled per repeat offence, up
/// to the ceiling.
pub(super) fn ejection_length(offences: u32, settings: &ClientSettings) -> Duration {
    let base = settings.eject_base_ms.max(1);
    let length = base.saturating_mul(1 << offences.min(MAX_DOUBLINGS));
    Duration::from_millis(length.min(settings.eject_max_ms.max(base)))
}

fn weight(since: Instant, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(since).as_secs_f64();
    (-elapsed / DECAY.as_secs_f64()).exp()
}

fn decayed(ewma: &Ewma, now: Instant) -> f64 {
    ewma.nanos * weight(ewma.at, now)
}

/// Decrements the instance's in-flight count when the call ends, however it ends.
pub(super) struct InFlight(Arc<Backend>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend() -> Arc<Backend> {
        let connection = Connection::lazy("127.0.0.1:1", Duration::from_secs(1)).expect("address");
        Arc::new(Backend::new("127.0.0.1:1".into(), "1".into(), connection))
    }

    #[tokio::test]
    async fn answers_are_averaged_timeouts_are_peaks_and_both_fade() {
        let b = backend();
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        b.observe_answer(Duration::from_millis(50), t0);
        assert!(
            b.cost(t0) < 2.0,
            "the first answer (a new connection) is left out"
        );
        b.observe_answer(Duration::from_millis(1), at(10));
        b.observe_answer(Duration::from_millis(9), at(20));
        let average = b.cost(at(20));
        assert!(
            average < 1e6,
            "one slow answer moves the average a little: {average}"
        );
        b.observe_timeout(Duration::from_millis(100), at(30));
        let peak = b.cost(at(30));
        assert!(
            peak > 99e6,
            "a timed-out attempt takes over at once: {peak}"
        );
        b.observe_answer(Duration::from_millis(1), at(40));
        assert!(b.cost(at(40)) > 90e6, "a fast answer is averaged in");
        assert!(b.cost(at(30_000)) < 1e6, "and it fades when idle");
        let alone = b.cost(at(40));
        let _guard = b.start();
        assert!(
            b.cost(at(40)) > 1.9 * alone,
            "calls in flight multiply the cost"
        );
    }

    #[tokio::test]
    async fn ejections_follow_failures_in_a_row_and_grow_with_offences() {
        let b = backend();
        let settings = ClientSettings::default();
        let t0 = Instant::now();
        assert_eq!(b.failed(t0, &settings, false, true), None);
        b.succeeded(t0, &settings);
        assert_eq!(b.failed(t0, &settings, false, true), None);
        assert_eq!(b.failed(t0, &settings, false, true), None);
        let first = b
            .failed(t0, &settings, false, true)
            .expect("third failure in a row");
        assert_eq!(first, Duration::from_millis(settings.eject_base_ms));
        assert!(b.is_ejected(t0 + first / 2));
        assert!(!b.is_ejected(t0 + first));
        let t1 = t0 + first;
        let second = b
            .failed(t1, &settings, true, true)
            .expect("a failed connection ejects at once");
        assert_eq!(second, 2 * first, "a repeat offence doubles");
        assert_eq!(
            b.failed(t1 + second, &settings, true, false),
            None,
            "not when the caller forbids"
        );
        assert_eq!(
            ejection_length(40, &settings),
            Duration::from_millis(settings.eject_max_ms)
        );
    }
}
