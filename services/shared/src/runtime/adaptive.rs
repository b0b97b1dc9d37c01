//! Adaptive load shedding (`limits.adaptive`): each method of a service gets a limit of calls in
//! flight that follows what the method can actually do, measured as it serves, and applies it only
//! while the method is overloaded.
//!
//! The idea is the one go-zero's shedder and TCP BBR use, the bandwidth-delay product: a method
//! that completes at most `X` calls a second and takes `r` seconds per call when nothing queues
//! needs `X × r` calls in flight to be fully busy; anything beyond waits in a queue and only adds
//! latency. So, per method, over a sliding window of [`BUCKETS`] × [`BUCKET`]:
//!
//! - **throughput** `X` is the most calls completed in one bucket;
//! - **usual latency** `r` is the median of the buckets' mean latencies, taken only from buckets
//!   in which nothing was shed (while shedding, the latency of admitted calls is the limit's
//!   doing, and learning from it would let the limit creep up);
//! - **overload** starts when, in each of the last [`SUSTAINED`] buckets, the mean latency reached
//!   [`QUEUEING_FACTOR`] × `r` *and* more calls arrived than completed (by more than a tenth):
//!   calls are queueing, and the queue is growing. A closed-loop client (a load generator at
//!   concurrency 32, a pool of workers) also raises latency, but it sends a call only when one
//!   completes, so its line stays as long as its concurrency: that is a busy service, not an
//!   overloaded one, and shedding would only make the client send again. From then on a call that
//!   finds `HEADROOM × X × r` calls (at least [`FLOOR`]) of its method in flight is shed with
//!   `UNAVAILABLE`, and shedding lasts until [`COOL_DOWN`] has passed without a shed call. The
//!   headroom keeps goodput at the maximum while latency jitters; Little's law then bounds an
//!   admitted call's latency near `HEADROOM × r`.
//!
//! The median rather than the minimum, two buckets rather than one, and the floor all keep a
//! healthy service from shedding: on a busy 2-core machine a single 100 ms bucket is often twice
//! as slow as the fastest one (measured with `make chaos`: with the minimum, one bucket and a
//! floor of 8, about 1 % of calls were shed at half the maximum load), and the arrivals keep a
//! saturated closed-loop client from being shed (on latency alone, the peer bench's `ghz -c 32`
//! saw 13 % of its calls shed; with a floor of 64 instead, `make chaos`'s overload was let through
//! to the vessels, whose shedding set off retries: p99 246 ms).
//!
//! Why not CPU usage as go-zero does (shed only above 90 % CPU): on a shared or small machine the
//! CPU is busy for reasons that say nothing about this service's queue (the bench saturates both
//! cores on purpose, and go-zero's own shedder must be switched off there). Why per method: one
//! service's methods differ in cost by orders of magnitude (a password hash against a map
//! lookup), so one limit for all would follow the mix of calls rather than the load. Methods whose
//! handlers already bound their own concurrency and answer `RESOURCE_EXHAUSTED` (the user
//! service's password hashing) are left out by the service ([`crate::runtime::Service`]'s
//! `SELF_LIMITED`). Why not a crate: tower's `ConcurrencyLimit` is fixed and queues, and no
//! well-kept crate offers an adaptive limit for tower servers.
//!
//! Only the methods the service serves get state (read once from the descriptors), so hostile
//! paths cannot grow it; any other path passes untouched and meets `UNIMPLEMENTED`.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use prost::Message as _;
use prost_types::FileDescriptorSet;

/// One bucket of the window.
pub(super) const BUCKET: Duration = Duration::from_millis(100);
/// Buckets in the window (2 s).
const BUCKETS: usize = 20;
/// Calls of a method always admitted, however small its estimate.
const FLOOR: usize = 16;
/// A method is queueing when its recent buckets' mean latency is this many times its usual one.
const QUEUEING_FACTOR: u64 = 2;
/// How many of the latest completed buckets must all be that slow.
const SUSTAINED: usize = 2;
/// How far above the bandwidth-delay product the limit sits.
const HEADROOM: u64 = 2;
/// Shedding ends once this long has passed without a shed call.
const COOL_DOWN: Duration = Duration::from_secs(1);

/// `/package.Service/Method` of every method of `grpc_service` (fully qualified) in the
/// descriptor set, except the `self_limited` method names.
pub(super) fn methods_of(grpc_service: &str, self_limited: &[&str]) -> Vec<String> {
    let Ok(set) = FileDescriptorSet::decode(shippy_proto::FILE_DESCRIPTOR_SET) else {
        tracing::warn!("the proto descriptors do not decode; no method has an adaptive limit");
        return Vec::new();
    };
    let mut paths = Vec::new();
    for file in &set.file {
        for service in &file.service {
            if format!("{}.{}", file.package(), service.name()) != grpc_service {
                continue;
            }
            for method in &service.method {
                if !self_limited.contains(&method.name()) {
                    paths.push(format!("/{grpc_service}/{}", method.name()));
                }
            }
        }
    }
    paths
}

/// The adaptive limits of one service's methods; clones share them.
#[derive(Debug, Clone)]
pub(super) struct Adaptive {
    enabled: Arc<AtomicBool>,
    methods: Arc<HashMap<Box<str>, Arc<MethodLoad>>>,
}

impl Adaptive {
    /// Limits for `paths`, on or off as `enabled` says.
    pub(super) fn new(paths: Vec<String>, enabled: bool) -> Self {
        let epoch = Instant::now();
        let methods = paths
            .into_iter()
            .map(|path| (path.into(), Arc::new(MethodLoad::new(epoch))))
            .collect();
        Self {
            enabled: Arc::new(AtomicBool::new(enabled)),
            methods: Arc::new(methods),
        }
    }

    /// Turns the limits on or off (`limits.adaptive`, live).
    #[cfg(test)]
    fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Relaxed);
    }

    /// The on/off switch, for a follower of the settings that must not keep the limits alive.
    pub(super) fn switch(&self) -> std::sync::Weak<AtomicBool> {
        Arc::downgrade(&self.enabled)
    }

    /// A place for a call to `path` among those in flight, or `None` when it must be shed. Paths
    /// without a limit (other services', self-limited methods, or limits turned off) always get
    /// one.
    pub(super) fn admit(&self, path: &str, now: Instant) -> Option<Admitted> {
        if !self.enabled.load(Ordering::Relaxed) {
            return Some(Admitted(None));
        }
        let Some(load) = self.methods.get(path) else {
            return Some(Admitted(None));
        };
        load.admit(now)
            .map(|()| Admitted(Some((Arc::clone(load), now))))
    }

    #[cfg(test)]
    fn load(&self, path: &str) -> &MethodLoad {
        self.methods.get(path).expect("a limited method")
    }
}

/// An admitted call's place; when dropped (the call answered or abandoned) its latency is recorded.
#[derive(Debug)]
pub(super) struct Admitted(Option<(Arc<MethodLoad>, Instant)>);

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some((load, started)) = self.0.take() {
            let now = Instant::now();
            load.complete(now, now.saturating_duration_since(started));
        }
    }
}

/// One method's calls in flight, its window and the limit derived from it.
#[derive(Debug)]
struct MethodLoad {
    epoch: Instant,
    in_flight: AtomicUsize,
    /// Calls that arrived, admitted or shed, since the start.
    arrived: AtomicU64,
    /// Calls in flight beyond which new ones are shed; `usize::MAX` while not shedding.
    limit: AtomicUsize,
    /// While shedding: until when (microseconds since `epoch`); pushed on by every shed call.
    shedding_until_us: AtomicU64,
    window: Mutex<Window>,
}

impl MethodLoad {
    fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            in_flight: AtomicUsize::new(0),
            arrived: AtomicU64::new(0),
            limit: AtomicUsize::new(usize::MAX),
            shedding_until_us: AtomicU64::new(0),
            window: Mutex::new(Window::new(epoch)),
        }
    }

    fn micros(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX)
    }

    fn admit(&self, now: Instant) -> Option<()> {
        self.arrived.fetch_add(1, Ordering::Relaxed);
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if before < self.limit.load(Ordering::Relaxed) {
            return Some(());
        }
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        let until = self.micros(now + COOL_DOWN);
        self.shedding_until_us.fetch_max(until, Ordering::Relaxed);
        if let Ok(mut window) = self.window.lock() {
            window.shed(now, self.arrived.load(Ordering::Relaxed));
        }
        None
    }

    fn complete(&self, now: Instant, latency: Duration) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        let Ok(mut window) = self.window.lock() else {
            return;
        };
        if !window.record(now, latency, self.arrived.load(Ordering::Relaxed)) {
            return;
        }
        // A bucket ended: decide whether the method is overloaded, and its limit.
        let shedding = self.micros(now) < self.shedding_until_us.load(Ordering::Relaxed);
        let limit = match window.estimate() {
            Some(estimate) if shedding || estimate.queueing => {
                if !shedding {
                    let until = self.micros(now + COOL_DOWN);
                    self.shedding_until_us.fetch_max(until, Ordering::Relaxed);
                }
                estimate.limit
            }
            _ => usize::MAX,
        };
        self.limit.store(limit, Ordering::Relaxed);
    }
}

/// Calls completed and their summed latency in one bucket, and whether any call was shed in it.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    completed: u64,
    /// Calls that arrived (admitted or shed) while it was current; set when it ends.
    arrived: u64,
    latency_us: u64,
    shed: bool,
}

impl Bucket {
    fn mean_us(&self) -> Option<u64> {
        (self.completed > 0).then(|| self.latency_us / self.completed)
    }

    /// Whether more calls arrived than completed, by more than a tenth: a growing line.
    fn growing(&self) -> bool {
        self.arrived > self.completed + (self.completed / 10).max(1)
    }
}

/// What a full window says about a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Estimate {
    /// The limit to apply while overloaded.
    limit: usize,
    /// Whether the last bucket's calls queued.
    queueing: bool,
}

/// The sliding window of buckets; `current` is being filled.
#[derive(Debug)]
struct Window {
    buckets: [Bucket; BUCKETS],
    current: usize,
    current_started: Instant,
    /// The last usual latency seen, kept while every bucket of the window shed.
    base_us: Option<u64>,
    /// The method's arrival count when the current bucket began.
    arrived_before: u64,
}

impl Window {
    fn new(now: Instant) -> Self {
        Self {
            buckets: [Bucket::default(); BUCKETS],
            current: 0,
            current_started: now,
            base_us: None,
            arrived_before: 0,
        }
    }

    /// Moves the window on to `now`, `arrived` calls having arrived so far; whether a bucket ended.
    fn advance(&mut self, now: Instant, arrived: u64) -> bool {
        let elapsed = now.saturating_duration_since(self.current_started);
        if elapsed < BUCKET {
            return false;
        }
        // The arrivals since the bucket began are the ending bucket's (those of buckets skipped
        // while idle are too few to matter).
        self.buckets[self.current].arrived = arrived.saturating_sub(self.arrived_before);
        self.arrived_before = arrived;
        let steps = (elapsed.as_micros() / BUCKET.as_micros()).min(BUCKETS as u128 + 1);
        for _ in 0..steps {
            self.current = (self.current + 1) % BUCKETS;
            self.buckets[self.current] = Bucket::default();
        }
        // `steps` is at most BUCKETS + 1, so the multiplication cannot overflow.
        self.current_started += BUCKET * u32::try_from(steps).unwrap_or(u32::MAX);
        if now.saturating_duration_since(self.current_started) >= BUCKET {
            // Idle for longer than the window: start afresh from now.
            self.current_started = now;
        }
        true
    }

    /// Records a call completed at `now` after `latency`, `arrived` calls having arrived so far;
    /// whether a bucket ended before it.
    fn record(&mut self, now: Instant, latency: Duration, arrived: u64) -> bool {
        let ended = self.advance(now, arrived);
        let bucket = &mut self.buckets[self.current];
        bucket.completed += 1;
        bucket.latency_us += u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        ended
    }

    /// Marks the bucket of `now` as one in which a call was shed, `arrived` calls having arrived.
    fn shed(&mut self, now: Instant, arrived: u64) {
        self.advance(now, arrived);
        self.buckets[self.current].shed = true;
    }

    /// The estimate from the completed buckets (all but the current one); `None` before any
    /// bucket without shedding has completed calls.
    fn estimate(&mut self) -> Option<Estimate> {
        let completed = || {
            (0..BUCKETS)
                .filter(|&i| i != self.current)
                .map(|i| self.buckets[i])
        };
        let most = completed().map(|b| b.completed).max().unwrap_or(0);
        let mut means: Vec<u64> = completed()
            .filter(|b| !b.shed)
            .filter_map(|b| b.mean_us())
            .collect();
        if !means.is_empty() {
            let middle = means.len() / 2;
            self.base_us = Some(*means.select_nth_unstable(middle).1);
        }
        let base = self.base_us?.max(1);
        let bucket_us = u64::try_from(BUCKET.as_micros()).unwrap_or(u64::MAX);
        let product = (HEADROOM * most * base).div_ceil(bucket_us);
        let queueing = (1..=SUSTAINED).all(|back| {
            let bucket = self.buckets[(self.current + BUCKETS - back) % BUCKETS];
            bucket.growing()
                && bucket
                    .mean_us()
                    .is_some_and(|mean| mean >= QUEUEING_FACTOR * base)
        });
        Some(Estimate {
            limit: usize::try_from(product).unwrap_or(usize::MAX).max(FLOOR),
            queueing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/shippy.vessel.v1.VesselService/FindAvailable";

    /// Completes `calls` calls of `latency` spread over the bucket starting at `at`.
    /// Admits `calls` calls in the bucket starting at `at` that stay in flight (an open-loop
    /// client's calls piling up).
    fn pile_up(limits: &Adaptive, at: Instant, calls: u32) -> Vec<Admitted> {
        (0..calls)
            .map(|i| {
                limits
                    .admit(PATH, at + BUCKET * i / calls)
                    .expect("admitted")
            })
            .collect()
    }

    fn serve(limits: &Adaptive, at: Instant, calls: u32, latency: Duration) {
        let load = limits.load(PATH);
        for i in 0..calls {
            let now = at + BUCKET * i / calls;
            let admitted = load.admit(now);
            assert!(admitted.is_some(), "call {i} admitted");
            load.complete(now + latency, latency);
        }
    }

    #[test]
    fn only_the_services_methods_get_limits_and_self_limited_ones_do_not() {
        let methods = methods_of("shippy.user.v1.UserService", &["Auth", "Create"]);
        assert!(methods.contains(&"/shippy.user.v1.UserService/GetAll".to_owned()));
        assert!(
            !methods
                .iter()
                .any(|m| m.ends_with("/Auth") || m.ends_with("/Create"))
        );
        assert!(
            methods
                .iter()
                .all(|m| m.starts_with("/shippy.user.v1.UserService/"))
        );
        let limits = Adaptive::new(methods, true);
        let other = limits.admit("/shippy.vessel.v1.VesselService/GetVessels", Instant::now());
        assert!(matches!(other, Some(Admitted(None))), "no state for others");
    }

    #[test]
    fn steady_load_with_jitter_is_never_shed() {
        let limits = Adaptive::new(vec![PATH.to_owned()], true);
        let start = Instant::now();
        for bucket in 0..50_u32 {
            // 100 calls a bucket of 2 to 3 ms each, and now and then a bucket three times as slow.
            let latency = if bucket % 7 == 3 {
                Duration::from_millis(9)
            } else {
                Duration::from_micros(2_000 + u64::from(bucket % 3) * 500)
            };
            serve(&limits, start + BUCKET * bucket, 100, latency);
        }
        assert_eq!(limits.load(PATH).limit.load(Ordering::Relaxed), usize::MAX);
    }

    #[test]
    fn a_saturated_closed_loop_client_is_not_shed() {
        let limits = Adaptive::new(vec![PATH.to_owned()], true);
        let start = Instant::now();
        // Light load first, then a client at high concurrency: eight times the latency, but a
        // call arrives only when one completes.
        for bucket in 0..20_u32 {
            serve(
                &limits,
                start + BUCKET * bucket,
                50,
                Duration::from_millis(1),
            );
        }
        for bucket in 20..60_u32 {
            serve(
                &limits,
                start + BUCKET * bucket,
                400,
                Duration::from_millis(8),
            );
        }
        assert_eq!(limits.load(PATH).limit.load(Ordering::Relaxed), usize::MAX);
    }

    #[test]
    fn queueing_starts_shedding_at_the_bandwidth_delay_product_and_it_ends_after_a_quiet_second() {
        let limits = Adaptive::new(vec![PATH.to_owned()], true);
        let load = limits.load(PATH);
        let start = Instant::now();
        // 2 s at 100 calls per bucket of 2 ms: base 2 ms, 1000 calls/s.
        for bucket in 0..20 {
            serve(
                &limits,
                start + BUCKET * bucket,
                100,
                Duration::from_millis(2),
            );
        }
        // Then calls queue: 10 ms each. One slow bucket is jitter; two are a queue.
        // Calls also arrive faster than they complete. (A bucket's last calls complete in the next
        // one, which ends the bucket before.)
        let mut piled = pile_up(&limits, start + BUCKET * 20, 50);
        serve(&limits, start + BUCKET * 20, 100, Duration::from_millis(10));
        assert_eq!(
            load.limit.load(Ordering::Relaxed),
            usize::MAX,
            "one slow bucket"
        );
        piled.extend(pile_up(&limits, start + BUCKET * 21, 50));
        // 90 calls that complete within bucket 21, then one in bucket 22 that ends it.
        for i in 0..90 {
            let at = start + BUCKET * 21 + Duration::from_millis(i);
            assert!(load.admit(at).is_some(), "call {i} admitted");
            load.complete(at + Duration::from_millis(10), Duration::from_millis(10));
        }
        serve(&limits, start + BUCKET * 22, 1, Duration::from_millis(10));
        // 2 × 100 calls per 100 ms × 2 ms = 4, raised to the floor.
        assert_eq!(load.limit.load(Ordering::Relaxed), FLOOR);
        let now = start + BUCKET * 22;
        assert!(
            limits.admit(PATH, now).is_none(),
            "the piled-up calls fill the limit"
        );
        drop(piled);
        let held: Vec<_> = (0..FLOOR)
            .map(|_| limits.admit(PATH, now).expect("within"))
            .collect();
        assert!(limits.admit(PATH, now).is_none(), "one more is shed");
        drop(held);
        // While shedding, the latency of admitted calls does not move the base, and shedding
        // goes on while calls are shed.
        for bucket in 23..30_u32 {
            let at = start + BUCKET * bucket;
            serve(&limits, at, 100, Duration::from_millis(3));
            let held: Vec<_> = (0..FLOOR).filter_map(|_| limits.admit(PATH, at)).collect();
            assert_eq!(held.len(), FLOOR);
            assert!(
                limits.admit(PATH, at).is_none(),
                "still shedding in bucket {bucket}"
            );
        }
        // A quiet second later, without a shed call: the limit is lifted.
        for bucket in 30..45 {
            serve(
                &limits,
                start + BUCKET * bucket,
                100,
                Duration::from_millis(2),
            );
        }
        assert_eq!(load.limit.load(Ordering::Relaxed), usize::MAX);
        assert_eq!(load.in_flight.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn turned_off_nothing_is_shed() {
        let limits = Adaptive::new(vec![PATH.to_owned()], true);
        limits.load(PATH).limit.store(0, Ordering::Relaxed);
        assert!(limits.admit(PATH, Instant::now()).is_none());
        limits.set_enabled(false);
        assert!(limits.admit(PATH, Instant::now()).is_some());
    }
}
