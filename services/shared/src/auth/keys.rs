//! A verifying service's copy of the user service's public keys (`UserService/PublicKeys`).
//!
//! Fetched on first use, refreshed when a token names a key id the copy does not hold (a new key
//! after a rotation) and at least every [`REFRESH_EVERY`], so a key the user service stops
//! publishing (the end of a rotation, or a revoked secret) stops verifying within that time. A
//! token with an unknown key id triggers at most one fetch per [`MIN_REFETCH`], so made-up ids
//! cannot turn into a flood of calls. While the user service is unreachable, the last copy keeps
//! working: verifying a token never needs the user service once its key is known.
//!
//! Tokens that verified are remembered (their subject and expiry) so the same token on the next
//! call costs a map lookup instead of an Ed25519 verification and a call to the user service: a
//! client sends one token with every call. The memory is bounded ([`MAX_REMEMBERED`]), forgotten
//! with every new key set, and each entry is trusted for a limited time (at most
//! [`REFRESH_EVERY`]), after which the token is verified again against a fresh key set: so a
//! withdrawn key's tokens, and a deleted user's, stop working within a minute even while a client
//! keeps using them.

use std::{
    collections::HashMap,
    sync::RwLock,
    time::{Duration, Instant},
};

use shippy_proto::user::v1::{Request, user_service_client::UserServiceClient};

use super::{
    AuthError,
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

/// The keys and the issuer they sign for, as last fetched.
#[derive(Debug)]
struct Copy {
    keys: HashMap<String, VerifyingKey>,
    issuer: String,
    fetched: Instant,
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

/// The key set, kept fresh.
#[derive(Debug)]
pub(super) struct KeyRing {
    users: UserServiceClient<BalancedChannel>,
    copy: RwLock<Option<Copy>>,
    /// Tokens that verified with the current copy.
    verified: RwLock<HashMap<Box<str>, Remembered>>,
    /// One fetch at a time; holds when the last one started.
    /// When the last fetch started, and whether it succeeded.
    fetching: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

impl KeyRing {
    pub(super) fn new(users: UserServiceClient<BalancedChannel>) -> Self {
        Self {
            users,
            copy: RwLock::new(None),
            verified: RwLock::new(HashMap::new()),
            fetching: tokio::sync::Mutex::new(None),
        }
    }

    /// The subject of `token` if it verified before with the current key set, has not expired by
    /// `now` (Unix seconds) and is still trusted at `at`.
    pub(super) fn remembered(&self, token: &str, now: u64, at: Instant) -> Option<String> {
        let verified = self.verified.read().ok()?;
        let entry = verified.get(token)?;
        (now <= entry.expiry && at < entry.trusted_until).then(|| entry.subject.clone())
    }

    /// Remembers that `token` verified, naming `subject`, valid until `expiry` (Unix seconds), to be
    /// taken on the memory's word for `trust` (at most [`REFRESH_EVERY`]).
    pub(super) fn remember(&self, token: &str, subject: &str, expiry: u64, trust: Duration) {
        if let Ok(mut verified) = self.verified.write() {
            if verified.len() >= MAX_REMEMBERED {
                verified.clear();
            }
            let entry = Remembered {
                subject: subject.to_owned(),
                expiry,
                trusted_until: Instant::now() + trust.min(REFRESH_EVERY),
            };
            verified.insert(token.into(), entry);
        }
    }

    /// The key with id `kid` and the issuer its tokens must carry.
    pub(super) async fn key(&self, kid: &str) -> Result<(VerifyingKey, String), AuthError> {
        let now = Instant::now();
        if let Some(found) = self.lookup(kid, |fetched| now.duration_since(fetched) < REFRESH_EVERY)
        {
            return Ok(found);
        }
        let refreshed = self.refresh(now).await;
        if let Some(found) = self.lookup(kid, |_| true) {
            return Ok(found);
        }
        // The key is unknown and the user service could not be asked: that says nothing about
        // the token, so the caller hears that the user service is unavailable.
        refreshed?;
        let have = self.copy.read().map(|c| c.is_some()).unwrap_or(false);
        if have {
            Err(AuthError::Unauthenticated(TokenError::Invalid.to_string()))
        } else {
            // No key set yet (the fetch failed, and another just failed): the user service is
            // unreachable, which says nothing about the token.
            Err(AuthError::UserService(tonic::Status::unavailable(
                "the user service's token keys could not be fetched yet",
            )))
        }
    }

    fn lookup(&self, kid: &str, fresh: impl Fn(Instant) -> bool) -> Option<(VerifyingKey, String)> {
        let copy = self.copy.read().ok()?;
        let copy = copy.as_ref().filter(|copy| fresh(copy.fetched))?;
        copy.keys
            .get(kid)
            .map(|key| (key.clone(), copy.issuer.clone()))
    }

    /// Fetches the key set unless a fetch started within [`MIN_REFETCH`] (including one that
    /// finished while this call waited for it). Keeps the old copy when the fetch fails (the
    /// caller still verifies with it) and says why it failed.
    async fn refresh(&self, asked: Instant) -> Result<(), AuthError> {
        let mut last = self.fetching.lock().await;
        if let Some((started, succeeded)) = *last {
            let gap = if succeeded {
                MIN_REFETCH
            } else {
                REFETCH_AFTER_FAILURE
            };
            if started >= asked || asked.duration_since(started) < gap {
                // A recent fetch answers for this call too; if it failed, so does this call.
                return if succeeded {
                    Ok(())
                } else {
                    Err(AuthError::UserService(tonic::Status::unavailable(
                        "the user service's token keys could not be fetched just now",
                    )))
                };
            }
        }
        *last = Some((Instant::now(), false));
        match self.users.clone().public_keys(Request::default()).await {
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
                // Tokens are vouched for by the key set they verified with.
                if let Ok(mut verified) = self.verified.write() {
                    verified.clear();
                }
                if let Ok(mut copy) = self.copy.write() {
                    *copy = Some(Copy {
                        keys,
                        issuer: set.issuer,
                        fetched: Instant::now(),
                    });
                }
                if let Some((_, succeeded)) = last.as_mut() {
                    *succeeded = true;
                }
                Ok(())
            }
            Err(status) => {
                let have = self.copy.read().map(|c| c.is_some()).unwrap_or(false);
                tracing::warn!(%status, keep_old = have, "could not fetch the token keys");
                Err(AuthError::UserService(status))
            }
        }
    }
}
