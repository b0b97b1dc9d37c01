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
//! call costs a map lookup instead of an Ed25519 verification: a client sends one token with every
//! call. The memory is bounded ([`MAX_REMEMBERED`]) and forgotten with every new key set, so a
//! withdrawn key's tokens are refused as soon as the key set no longer holds it.

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
const REFRESH_EVERY: Duration = Duration::from_secs(60);
/// Shortest time between two fetches caused by unknown key ids.
const MIN_REFETCH: Duration = Duration::from_secs(1);
/// Most verified tokens remembered; when full, the memory starts afresh.
const MAX_REMEMBERED: usize = 10_000;

/// The keys and the issuer they sign for, as last fetched.
#[derive(Debug)]
struct Copy {
    keys: HashMap<String, VerifyingKey>,
    issuer: String,
    fetched: Instant,
}

/// The key set, kept fresh.
#[derive(Debug)]
pub(super) struct KeyRing {
    users: UserServiceClient<BalancedChannel>,
    copy: RwLock<Option<Copy>>,
    /// Tokens that verified with the current copy: token → (subject, expiry in Unix seconds).
    verified: RwLock<HashMap<Box<str>, (String, u64)>>,
    /// One fetch at a time; holds when the last one started.
    fetching: tokio::sync::Mutex<Option<Instant>>,
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

    /// The subject of `token` if it verified before with the current key set and has not expired
    /// by `now` (Unix seconds).
    pub(super) fn remembered(&self, token: &str, now: u64) -> Option<String> {
        let verified = self.verified.read().ok()?;
        let (subject, expiry) = verified.get(token)?;
        (now <= *expiry).then(|| subject.clone())
    }

    /// Remembers that `token` verified, naming `subject`, valid until `expiry`.
    pub(super) fn remember(&self, token: &str, subject: &str, expiry: u64) {
        if let Ok(mut verified) = self.verified.write() {
            if verified.len() >= MAX_REMEMBERED {
                verified.clear();
            }
            verified.insert(token.into(), (subject.to_owned(), expiry));
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
        if last
            .is_some_and(|started| started >= asked || asked.duration_since(started) < MIN_REFETCH)
        {
            return Ok(());
        }
        *last = Some(Instant::now());
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
