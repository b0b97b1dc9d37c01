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
//! verified with (a new set starts it afresh), and each entry is trusted for a limited time (at most
//! [`REFRESH_EVERY`]), after which the token is verified again: so a withdrawn key's tokens, and a
//! deleted user's, stop working within a minute (and the fetch that learns it) even while a client
//! keeps using them.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
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
#[derive(Debug)]
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
}

/// Tokens that verified with one key set (its generation).
#[derive(Debug, Default)]
struct Memory {
    generation: u64,
    tokens: HashMap<Box<str>, Remembered>,
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

    /// The subject of `token` if it verified before with the current key set, has not expired by
    /// `now` (Unix seconds) and is still trusted at `at`.
    pub(super) fn remembered(&self, token: &str, now: u64, at: Instant) -> Option<String> {
        let verified = self.verified.read().ok()?;
        if verified.generation != self.keys.generation() {
            return None;
        }
        let entry = verified.tokens.get(token)?;
        (now <= entry.expiry && at < entry.trusted_until).then(|| entry.subject.clone())
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
        let Ok(mut verified) = self.verified.write() else {
            return;
        };
        if generation < verified.generation {
            return; // verified with a set already replaced
        }
        if generation > verified.generation || verified.tokens.len() >= MAX_REMEMBERED {
            verified.tokens.clear();
            verified.generation = generation;
        }
        let entry = Remembered {
            subject: subject.to_owned(),
            expiry,
            trusted_until: Instant::now() + trust.min(REFRESH_EVERY),
        };
        verified.tokens.insert(token.into(), entry);
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
