//! A verifying service's copy of the user service's public keys (`UserService/PublicKeys`), kept
//! by [`super::key_set`]: fetched on first use, refetched when a token names a key id the copy does
//! not hold (a new key after a rotation, at most once per [`MIN_REFETCH`]), and refreshed in the
//! background once it is [`REFRESH_EVERY`] old, so a key the user service stops publishing (the end
//! of a rotation, or a revoked secret) stops verifying within that time and one fetch. While the
//! user service is unreachable or slow, the copy in hand keeps working: verifying a token never
//! waits for the user service once its key is known.
//!
//! Tokens that verified are remembered (their subject and expiry) so the same token on the next
//! call costs a map lookup instead of an Ed25519 verification: a client sends one token with every
//! call. The memory is bounded ([`MAX_REMEMBERED`]), vouched for only by the key set the tokens
//! verified with (a set with other keys starts it afresh; a refresh that brings the same keys does
//! not), and each entry is trusted for a limited time (at most [`REFRESH_EVERY`]), after which the
//! token is verified again: so a withdrawn key's tokens, and a deleted user's, stop working within a
//! minute (and the fetch that learns it) even while a client keeps using them. A token used in the
//! last quarter of its trust is due a fresh user check ([`Recalled::recheck`]), which its caller
//! starts in the background, so a token in steady use is renewed before its trust runs out and no
//! call waits for the user service.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use shippy_proto::user::v1::{Request, user_service_client::UserServiceClient};

use super::{
    AuthError,
    key_set::{KeySet, Policy, Publisher},
    token::{TokenError, VerifyingKey},
};
use crate::discovery::balance::BalancedChannel;

/// Longest time a copy is used without asking for a fresh one.
pub(super) const REFRESH_EVERY: Duration = Duration::from_secs(60);
/// Shortest time between two fetches caused by unknown key ids.
const MIN_REFETCH: Duration = Duration::from_secs(1);
/// After a fetch that failed (the user service was unreachable, say while it restarts and
/// discovery has not seen its new instance yet), the next may start this soon: the failure says
/// nothing about the token, so its caller is told to retry, and the retry should find out.
const REFETCH_AFTER_FAILURE: Duration = Duration::from_millis(100);
/// Most verified tokens remembered; when full, the memory starts afresh.
const MAX_REMEMBERED: usize = 10_000;

/// The keys and the issuer they sign for, as one `PublicKeys` answer gave them.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Published {
    keys: HashMap<String, VerifyingKey>,
    issuer: String,
}

/// The user service, as the publisher of the token keys.
#[derive(Debug)]
pub(super) struct UserKeys(UserServiceClient<BalancedChannel>);

impl Publisher for UserKeys {
    type Set = Published;

    async fn fetch(&self) -> Option<Published> {
        match self.0.clone().public_keys(Request::default()).await {
            Ok(answer) => {
                let set = answer.into_inner();
                let keys: HashMap<String, VerifyingKey> = set
                    .keys
                    .iter()
                    .filter(|k| k.kty == "OKP" && k.crv == "Ed25519" && k.alg == "EdDSA")
                    .filter_map(|k| VerifyingKey::from_x(&k.x))
                    .map(|key| (key.kid().to_owned(), key))
                    .collect();
                tracing::debug!(keys = keys.len(), issuer = %set.issuer, "token keys fetched");
                Some(Published {
                    keys,
                    issuer: set.issuer,
                })
            }
            Err(status) => {
                tracing::warn!(%status, "could not fetch the token keys");
                None
            }
        }
    }
}

/// What is remembered of a token that verified.
#[derive(Debug)]
struct Remembered {
    subject: String,
    /// The token's expiry, Unix seconds.
    expiry: u64,
    /// Until when it is taken on the memory's word.
    trusted_until: Instant,
    /// From when a use of the token is due a fresh user check.
    recheck_from: Instant,
    /// Whether a fresh user check was handed to a caller and has not been answered yet.
    rechecking: AtomicBool,
}

impl Remembered {
    fn new(subject: String, expiry: u64, at: Instant, trust: Duration) -> Self {
        let mut entry = Self {
            subject,
            expiry,
            trusted_until: at,
            recheck_from: at,
            rechecking: AtomicBool::new(false),
        };
        entry.trust(at, trust);
        entry
    }

    /// Trusted for `trust` from `at` (at most [`REFRESH_EVERY`]), due a fresh user check in the
    /// last quarter of that: time for a check to land before the trust runs out.
    fn trust(&mut self, at: Instant, trust: Duration) {
        let trust = trust.min(REFRESH_EVERY);
        self.trusted_until = at + trust;
        self.recheck_from = at + trust * 3 / 4;
        *self.rechecking.get_mut() = false;
    }
}

/// What the memory says of a token it holds.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Recalled {
    /// Whom the token names.
    pub(super) subject: String,
    /// Whether this caller should check the token's user again, without waiting for the answer,
    /// and hand the answer to [`KeyRing::renew`] or [`KeyRing::forget`]. Only one caller at a time
    /// is told to.
    pub(super) recheck: bool,
}

/// Tokens that verified with one key set (its generation).
#[derive(Debug, Default)]
struct Memory {
    generation: u64,
    tokens: HashMap<Box<str>, Remembered>,
}

impl Memory {
    /// `token`, if it verified with the set of `generation` (the one in hand), has not expired by
    /// `now` (Unix seconds) and is still trusted at `at`.
    fn recall(&self, generation: u64, token: &str, now: u64, at: Instant) -> Option<Recalled> {
        if self.generation != generation {
            return None;
        }
        let entry = self.tokens.get(token)?;
        if now > entry.expiry || at >= entry.trusted_until {
            return None;
        }
        let recheck = at >= entry.recheck_from && !entry.rechecking.swap(true, Ordering::AcqRel);
        Some(Recalled {
            subject: entry.subject.clone(),
            recheck,
        })
    }

    fn remember(&mut self, token: &str, generation: u64, entry: Remembered) {
        if generation < self.generation {
            return; // verified with a set already replaced
        }
        if generation > self.generation || self.tokens.len() >= MAX_REMEMBERED {
            self.tokens.clear();
            self.generation = generation;
        }
        self.tokens.insert(token.into(), entry);
    }

    /// Trusts `token`, if still held, for `trust` from `at` (never less than it was trusted).
    fn renew(&mut self, token: &str, at: Instant, trust: Duration) {
        if let Some(entry) = self.tokens.get_mut(token) {
            let until = entry.trusted_until;
            entry.trust(at, trust);
            entry.trusted_until = entry.trusted_until.max(until);
        }
    }
}

/// A key to verify one token with.
#[derive(Debug)]
pub(super) struct KeyInHand {
    /// The key the token names.
    pub(super) key: VerifyingKey,
    /// The issuer the token must carry.
    pub(super) issuer: String,
    /// The key set's generation, to remember the token by.
    pub(super) generation: u64,
}

/// The key set, kept fresh, and the tokens that verified with it.
#[derive(Debug)]
pub(super) struct KeyRing {
    keys: Arc<KeySet<UserKeys>>,
    verified: RwLock<Memory>,
}

impl KeyRing {
    pub(super) fn new(users: UserServiceClient<BalancedChannel>) -> Self {
        let policy = Policy {
            max_age: REFRESH_EVERY,
            unknown_gap: MIN_REFETCH,
            failure_gap: REFETCH_AFTER_FAILURE,
        };
        Self {
            keys: Arc::new(KeySet::new(UserKeys(users), policy)),
            verified: RwLock::default(),
        }
    }

    /// What is remembered of `token` if it verified before with the current key set, has not
    /// expired by `now` (Unix seconds) and is still trusted at `at`.
    pub(super) fn remembered(&self, token: &str, now: u64, at: Instant) -> Option<Recalled> {
        let verified = self.verified.read().ok()?;
        verified.recall(self.keys.generation(), token, now, at)
    }

    /// Trusts `token` for `trust` from now (at most [`REFRESH_EVERY`]), its user just checked.
    pub(super) fn renew(&self, token: &str, trust: Duration) {
        if let Ok(mut verified) = self.verified.write() {
            verified.renew(token, Instant::now(), trust);
        }
    }

    /// Forgets `token`: its user check refused it.
    pub(super) fn forget(&self, token: &str) {
        if let Ok(mut verified) = self.verified.write() {
            verified.tokens.remove(token);
        }
    }

    /// Remembers that `token` verified with the key set of `generation`, naming `subject`, valid
    /// until `expiry` (Unix seconds), to be taken on the memory's word for `trust` (at most
    /// [`REFRESH_EVERY`]).
    pub(super) fn remember(
        &self,
        token: &str,
        generation: u64,
        subject: &str,
        expiry: u64,
        trust: Duration,
    ) {
        if let Ok(mut verified) = self.verified.write() {
            let entry = Remembered::new(subject.to_owned(), expiry, Instant::now(), trust);
            verified.remember(token, generation, entry);
        }
    }

    /// The key with id `kid`, the issuer its tokens must carry, and its set's generation.
    pub(super) async fn key(&self, kid: &str) -> Result<KeyInHand, AuthError> {
        let now = Instant::now();
        let set = self.keys.get(now).await.map_err(|_| {
            // No key set yet: the user service is unreachable, which says nothing of the token.
            AuthError::UserService(tonic::Status::unavailable(
                "the user service's token keys could not be fetched yet",
            ))
        })?;
        // Not in the copy: a new key after a rotation, or a made-up id.
        let set = if set.set.keys.contains_key(kid) {
            set
        } else {
            self.keys.refetch(now).await.map_err(|_| {
                AuthError::UserService(tonic::Status::unavailable(
                    "the user service's token keys could not be fetched just now",
                ))
            })?
        };
        let key = set
            .set
            .keys
            .get(kid)
            .cloned()
            .ok_or_else(|| AuthError::Unauthenticated(TokenError::Invalid.to_string()))?;
        Ok(KeyInHand {
            key,
            issuer: set.set.issuer.clone(),
            generation: set.generation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn memory_with(token: &str, at: Instant, trust: Duration) -> Memory {
        let mut memory = Memory::default();
        memory.remember(token, 1, Remembered::new("ann".into(), u64::MAX, at, trust));
        memory
    }

    fn recall(memory: &Memory, at: Instant) -> Option<(String, bool)> {
        memory
            .recall(1, "t", 0, at)
            .map(|recalled| (recalled.subject, recalled.recheck))
    }

    #[test]
    fn a_token_in_use_is_rechecked_once_in_the_last_quarter_of_its_trust_and_renewed() {
        let t0 = Instant::now();
        let mut memory = memory_with("t", t0, REFRESH_EVERY);
        let ann = || "ann".to_owned();
        assert_eq!(recall(&memory, t0 + 44 * SECOND), Some((ann(), false)));
        // Due: one caller is told to check, the others are not while that check is out.
        assert_eq!(recall(&memory, t0 + 45 * SECOND), Some((ann(), true)));
        assert_eq!(recall(&memory, t0 + 46 * SECOND), Some((ann(), false)));
        // The user exists: trusted for another minute from the answer, due again in its last quarter.
        memory.renew("t", t0 + 46 * SECOND, REFRESH_EVERY);
        assert_eq!(recall(&memory, t0 + 90 * SECOND), Some((ann(), false)));
        assert_eq!(recall(&memory, t0 + 91 * SECOND), Some((ann(), true)));
        assert_eq!(recall(&memory, t0 + 100 * SECOND), Some((ann(), false)));
        // No answer by the end of the trust: the token is verified and checked again, inline.
        assert_eq!(recall(&memory, t0 + 106 * SECOND), None);
    }

    #[test]
    fn an_unconfirmed_check_keeps_the_trust_in_hand_and_is_due_again_soon() {
        let t0 = Instant::now();
        let mut memory = memory_with("t", t0, REFRESH_EVERY);
        assert_eq!(recall(&memory, t0 + 50 * SECOND).map(|r| r.1), Some(true));
        // The user service did not answer: a short trust would end sooner than the one in hand.
        memory.renew("t", t0 + 51 * SECOND, 5 * SECOND);
        assert_eq!(recall(&memory, t0 + 59 * SECOND).map(|r| r.1), Some(true));
        assert_eq!(recall(&memory, t0 + 60 * SECOND), None);
    }

    #[test]
    fn other_keys_expiry_and_forgetting_end_what_is_remembered() {
        let t0 = Instant::now();
        let mut memory = memory_with("t", t0, REFRESH_EVERY);
        assert!(memory.recall(2, "t", 0, t0).is_none(), "another key set");
        assert!(memory.recall(1, "t", 0, t0).is_some());
        let mut expiring = Memory::default();
        expiring.remember(
            "t",
            1,
            Remembered::new("ann".into(), 100, t0, REFRESH_EVERY),
        );
        assert!(expiring.recall(1, "t", 100, t0).is_some());
        assert!(expiring.recall(1, "t", 101, t0).is_none(), "expired");
        memory.tokens.remove("t");
        assert!(memory.recall(1, "t", 0, t0).is_none(), "forgotten");
        // Renewing a token no longer held does not bring it back.
        memory.renew("t", t0, REFRESH_EVERY);
        assert!(memory.recall(1, "t", 0, t0).is_none());
    }
}
