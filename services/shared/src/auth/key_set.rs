//! A copy of a published key set, kept fresh: the one machinery behind both verifiers, shippy
//! tokens ([`super::keys`], the user service's `PublicKeys`) and OpenID Connect ID tokens
//! (`super::oidc`, the provider's JWKS). One policy for both:
//!
//! - **First use** fetches the set; callers that arrive during that fetch wait for it rather than
//!   each asking.
//! - **An old set keeps answering** while a fresh one is fetched in the background. A verification
//!   whose key is in hand never waits for the publisher, so a slow or hung publisher delays nobody
//!   whose token names a known key. A key the publisher withdrew stops verifying once the first
//!   refresh after [`Policy::max_age`] lands.
//! - **A key id the set lacks** (a rotation, or a forged id) fetches the set again, at most once
//!   per [`Policy::unknown_gap`], so made-up key ids cannot flood the publisher.
//! - **A failed fetch** keeps the set in hand and is not tried again for [`Policy::failure_gap`];
//!   a caller that needed it hears the publisher is unavailable, which says nothing of its token.
//!
//! Written here rather than taken from a crate: the rules are about key ids, fetch gaps and who
//! waits for a fetch, which a general cache's expiry does not express, and it is the same eighty
//! lines for both verifiers. Each publisher logs its own failures; it knows what they mean.

use std::{
    future::Future,
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// Where a key set comes from.
pub(super) trait Publisher: Send + Sync + 'static {
    /// The keys of one fetch, as its verifier looks them up; equal sets hold the same keys.
    type Set: PartialEq + Send + Sync + 'static;

    /// The published set, or `None` when it could not be had (logged by the publisher).
    fn fetch(&self) -> impl Future<Output = Option<Self::Set>> + Send;
}

/// When to ask the publisher again.
#[derive(Debug, Clone, Copy)]
pub(super) struct Policy {
    /// Age at which the set is fetched again in the background.
    pub(super) max_age: Duration,
    /// Least time between two fetches caused by key ids the set lacks.
    pub(super) unknown_gap: Duration,
    /// Least time between a failed fetch and the next.
    pub(super) failure_gap: Duration,
}

/// One fetched set.
#[derive(Debug)]
pub(super) struct Fetched<S> {
    /// The keys.
    pub(super) set: S,
    /// Counts the different sets fetched, from 1: what verified with one set is not vouched for by
    /// another. A refresh that brings the same keys again keeps the generation, so what verified
    /// before it stays vouched for.
    pub(super) generation: u64,
    /// When the fetch that brought it started.
    at: Instant,
}

/// No key set could be had from the publisher just now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Unavailable;

/// The last fetch: when it started and whether it brought a set.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    started: Instant,
    succeeded: bool,
}

/// A publisher's key set, fetched on first use and kept fresh; see the module doc.
#[derive(Debug)]
pub(super) struct KeySet<P: Publisher> {
    publisher: P,
    policy: Policy,
    current: RwLock<Option<Arc<Fetched<P::Set>>>>,
    generation: AtomicU64,
    last: Mutex<Option<Attempt>>,
    /// Held for the length of a fetch: one at a time.
    flight: tokio::sync::Mutex<()>,
    /// A background refresh is under way.
    refreshing: AtomicBool,
}

impl<P: Publisher> KeySet<P> {
    /// An empty copy of what `publisher` publishes; nothing is fetched until it is needed.
    pub(super) fn new(publisher: P, policy: Policy) -> Self {
        Self {
            publisher,
            policy,
            current: RwLock::new(None),
            generation: AtomicU64::new(0),
            last: Mutex::new(None),
            flight: tokio::sync::Mutex::new(()),
            refreshing: AtomicBool::new(false),
        }
    }

    /// The generation of the set in hand (0 before the first).
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The set to verify with at `now`: the one in hand, or the first one fetched, waiting for it.
    /// A set older than [`Policy::max_age`] still answers, and a fresh one is fetched in the
    /// background.
    pub(super) async fn get(
        self: &Arc<Self>,
        now: Instant,
    ) -> Result<Arc<Fetched<P::Set>>, Unavailable> {
        if let Some(set) = self.in_hand() {
            if now.saturating_duration_since(set.at) >= self.policy.max_age {
                self.refresh_in_background(now);
            }
            return Ok(set);
        }
        // A fetch that succeeded leaves a set in hand, so only a recent failure holds this back.
        self.fetch_unless_recent(now, Duration::ZERO).await?;
        self.in_hand().ok_or(Unavailable)
    }

    /// The set after asking the publisher again, for a key id the set at `now` lacked: fetched
    /// unless a fetch started within [`Policy::unknown_gap`] (or failed within
    /// [`Policy::failure_gap`], which answers [`Unavailable`]).
    pub(super) async fn refetch(&self, now: Instant) -> Result<Arc<Fetched<P::Set>>, Unavailable> {
        self.fetch_unless_recent(now, self.policy.unknown_gap)
            .await?;
        self.in_hand().ok_or(Unavailable)
    }

    fn in_hand(&self) -> Option<Arc<Fetched<P::Set>>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether the last fetch, if any, answers for a caller asking at `now`: it started after, or
    /// within `gap` before (within [`Policy::failure_gap`] if it failed). `Some` says how it went.
    fn recent(&self, now: Instant, gap: Duration) -> Option<bool> {
        let last = (*self.last.lock().unwrap_or_else(PoisonError::into_inner))?;
        let gap = if last.succeeded {
            gap
        } else {
            self.policy.failure_gap
        };
        (last.started >= now || now.duration_since(last.started) < gap).then_some(last.succeeded)
    }

    /// Fetches the set unless a recent fetch answers for this caller. A fetch under way answers
    /// when it ends: the caller waits for it rather than asking again.
    async fn fetch_unless_recent(&self, now: Instant, gap: Duration) -> Result<(), Unavailable> {
        let _flight = self.flight.lock().await;
        match self.recent(now, gap) {
            Some(true) => Ok(()),
            Some(false) => Err(Unavailable),
            None => self.fetch(now).await,
        }
    }

    async fn fetch(&self, now: Instant) -> Result<(), Unavailable> {
        // Failed until it succeeds: a fetch abandoned halfway (its caller's call was cancelled)
        // counts as a failure.
        self.record(now, false);
        let set = self.publisher.fetch().await.ok_or(Unavailable)?;
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        let generation = match current.as_deref() {
            Some(old) if old.set == set => old.generation,
            Some(old) => old.generation + 1,
            None => 1,
        };
        *current = Some(Arc::new(Fetched {
            set,
            generation,
            at: now,
        }));
        self.generation.store(generation, Ordering::Release);
        drop(current);
        self.record(now, true);
        Ok(())
    }

    fn record(&self, started: Instant, succeeded: bool) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(Attempt { started, succeeded });
    }

    /// Starts a fetch that nobody waits for, unless one is under way or a recent one answers.
    fn refresh_in_background(self: &Arc<Self>, now: Instant) {
        if self.recent(now, Duration::ZERO).is_some() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = Arc::clone(self);
        runtime.spawn(async move {
            let _ = this.fetch_unless_recent(now, Duration::ZERO).await;
            this.refreshing.store(false, Ordering::Release);
        });
    }

    /// Waits until no background refresh is under way (tests drive time by hand).
    #[cfg(test)]
    pub(super) async fn settled(&self) {
        while self.refreshing.load(Ordering::Acquire) {
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use futures::FutureExt as _;

    use super::*;

    /// Publishes `["k1"]`, or nothing while `down`; holds each fetch until `release` while `hung`.
    #[derive(Default)]
    struct Fake {
        fetches: AtomicUsize,
        down: AtomicBool,
        hung: AtomicBool,
        release: tokio::sync::Notify,
        keys: Mutex<Vec<&'static str>>,
    }

    impl Publisher for Arc<Fake> {
        type Set = Vec<&'static str>;

        async fn fetch(&self) -> Option<Vec<&'static str>> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            if self.hung.load(Ordering::SeqCst) {
                self.release.notified().await;
            }
            (!self.down.load(Ordering::SeqCst)).then(|| self.keys.lock().expect("keys").clone())
        }
    }

    const POLICY: Policy = Policy {
        max_age: Duration::from_secs(60),
        unknown_gap: Duration::from_secs(1),
        failure_gap: Duration::from_millis(100),
    };

    fn key_set() -> (Arc<Fake>, Arc<KeySet<Arc<Fake>>>) {
        let fake = Arc::new(Fake {
            keys: Mutex::new(vec!["k1"]),
            ..Fake::default()
        });
        (Arc::clone(&fake), Arc::new(KeySet::new(fake, POLICY)))
    }

    #[tokio::test]
    async fn callers_that_arrive_during_the_first_fetch_wait_for_it_instead_of_asking_again() {
        let (fake, keys) = key_set();
        let now = Instant::now();
        let answers = futures::future::join_all((0..8).map(|_| keys.get(now))).await;
        assert!(
            answers
                .iter()
                .all(|set| set.as_ref().expect("set").set == ["k1"])
        );
        assert_eq!(fake.fetches.load(Ordering::SeqCst), 1);
        assert_eq!(keys.generation(), 1);
    }

    #[tokio::test]
    async fn an_old_set_answers_at_once_while_a_hung_publisher_is_asked_for_a_fresh_one() {
        let (fake, keys) = key_set();
        let t0 = Instant::now();
        keys.get(t0).await.expect("first fetch");
        fake.hung.store(true, Ordering::SeqCst);
        fake.keys.lock().expect("keys").clear(); // k1 withdrawn
        let later = t0 + POLICY.max_age;
        // Ready on the first poll: nothing waits for the refresh it started.
        for _ in 0..3 {
            let set = keys
                .get(later)
                .now_or_never()
                .expect("no wait")
                .expect("set");
            assert_eq!(set.set, ["k1"]);
        }
        tokio::task::yield_now().await;
        assert_eq!(fake.fetches.load(Ordering::SeqCst), 2, "one refresh");
        fake.release.notify_one();
        keys.settled().await;
        let set = keys
            .get(later)
            .now_or_never()
            .expect("no wait")
            .expect("set");
        assert!(
            set.set.is_empty(),
            "the withdrawn key is gone once the refresh lands"
        );
        assert_eq!(set.generation, 2);
    }

    #[tokio::test]
    async fn a_refresh_that_brings_the_same_keys_keeps_the_generation() {
        let (fake, keys) = key_set();
        let t0 = Instant::now();
        assert_eq!(keys.get(t0).await.expect("first fetch").generation, 1);
        // The same keys again, by age and by an unknown key id: what verified still holds.
        keys.get(t0 + POLICY.max_age).await.expect("set");
        keys.settled().await;
        assert_eq!(
            keys.refetch(t0 + 2 * POLICY.max_age)
                .await
                .expect("set")
                .generation,
            1
        );
        assert_eq!(fake.fetches.load(Ordering::SeqCst), 3);
        assert_eq!(keys.generation(), 1);
        // A rotation changes the set: a new generation.
        fake.keys.lock().expect("keys").push("k2");
        let set = keys.refetch(t0 + 3 * POLICY.max_age).await.expect("set");
        assert_eq!(
            (set.set.as_slice(), set.generation),
            (["k1", "k2"].as_slice(), 2)
        );
        assert_eq!(keys.generation(), 2);
    }

    #[tokio::test]
    async fn unknown_key_ids_and_failures_ask_the_publisher_at_most_once_per_gap() {
        let (fake, keys) = key_set();
        let t0 = Instant::now();
        let ms = |millis: u64| t0 + Duration::from_millis(millis);
        keys.get(ms(0)).await.expect("first fetch");
        for (millis, fetches) in [(10, 1), (999, 1), (1_000, 2), (1_500, 2), (2_000, 3)] {
            assert!(keys.refetch(ms(millis)).await.is_ok());
            assert_eq!(
                fake.fetches.load(Ordering::SeqCst),
                fetches,
                "at {millis} ms"
            );
        }
        fake.down.store(true, Ordering::SeqCst);
        for (millis, fetches) in [(3_000, 4), (3_050, 4), (3_100, 5)] {
            assert_eq!(keys.refetch(ms(millis)).await.err(), Some(Unavailable));
            assert_eq!(
                fake.fetches.load(Ordering::SeqCst),
                fetches,
                "at {millis} ms"
            );
        }
        // The set in hand still answers while the publisher is down.
        assert_eq!(keys.get(ms(3_150)).await.expect("kept").set, ["k1"]);
    }

    #[tokio::test]
    async fn a_publisher_down_at_first_use_is_unavailable_and_asked_again_after_the_gap() {
        let (fake, keys) = key_set();
        fake.down.store(true, Ordering::SeqCst);
        let t0 = Instant::now();
        let ms = |millis: u64| t0 + Duration::from_millis(millis);
        for (millis, fetches) in [(0, 1), (50, 1), (100, 2)] {
            assert_eq!(keys.get(ms(millis)).await.err(), Some(Unavailable));
            assert_eq!(
                fake.fetches.load(Ordering::SeqCst),
                fetches,
                "at {millis} ms"
            );
        }
        fake.down.store(false, Ordering::SeqCst);
        assert!(keys.get(ms(200)).await.is_ok());
        assert_eq!(keys.generation(), 1);
    }
}
