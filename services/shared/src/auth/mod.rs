//! Authentication of incoming calls: `authorization: Bearer <jwt>` metadata, verified where the
//! call arrives with the user service's public keys ([`keys`], cached and kept fresh by [`key_set`]; tokens and
//! keys in [`token`]), so an authenticated call costs no call to the user service. One
//! implementation, and one mapping of its errors to a `Status`, for every service that needs a
//! caller; a handler runs it at the edge and hands the domain only the caller's id.
//!
//! A token that verifies is taken on the memory's word for a minute. The first time the user
//! service is also asked, with `ValidateToken`, whether its user still exists; while the token is in
//! use it is asked again once a minute, in the background, from a call in the last quarter of that
//! minute, so a token in steady use never makes a call wait for the user service after its first.
//! That is one call per token per minute, not per call, and one for a burst of concurrent first
//! calls with the same token. When the user service
//! cannot answer, the signature alone vouches for the token (it proves the user service issued
//! it) and the question is asked again a few seconds later: the user service's outage does not
//! become every service's outage, and a deleted user is refused once it answers.
//!
//! Revocation: a token stays valid until it expires (`auth.token_ttl_secs`) unless its user is
//! deleted or its key is withdrawn; either is seen everywhere within a minute. Changing
//! `auth.jwt_secret` (keeping the old one in `auth.previous_jwt_secret` while tokens signed with it
//! should still work) and then clearing the previous secret revokes every token signed with the
//! old key.
//!
//! ID tokens of an external OpenID Connect provider are verified in [`oidc`], for the user
//! service's `ExchangeToken` only: every other service sees just the shippy token it issues.
//!
//! The access model's one rule for what a caller may claim lives here too ([`own`]): a field that
//! names a user (a container's `user_id`, a vessel's `owner_id`) may be empty (the caller is meant)
//! or the caller's own id, never another user's.

#[cfg(feature = "oidc")]
mod fetch;
mod key_set;
mod keys;
#[cfg(feature = "oidc")]
pub mod oidc;
pub mod token;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use shippy_proto::user::v1::{Token, user_service_client::UserServiceClient};
use tokio::sync::OnceCell;
use tonic::{Status, metadata::MetadataMap};

use self::keys::KeyRing;
use crate::discovery::balance::BalancedChannel;

/// Why a call is not authenticated.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// No token, a malformed header, or a token the user service refused (message safe for clients).
    #[error("{0}")]
    Unauthenticated(String),
    /// The user service could not answer.
    #[error("user service: {0}")]
    UserService(Status),
    /// The caller is known but may not do this (message safe for clients).
    #[error("{0}")]
    Forbidden(String),
}

impl From<AuthError> for Status {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Unauthenticated(message) => Status::unauthenticated(message),
            AuthError::UserService(status) => crate::status::upstream("user", &status),
            AuthError::Forbidden(message) => Status::permission_denied(message),
        }
    }
}

/// How long a token whose user could not be confirmed (the user service did not answer) is taken
/// on its signature alone before the user service is asked again.
const UNCONFIRMED_TRUST: Duration = Duration::from_secs(5);

/// The user checks of the last moment, by token: concurrent first calls with one token (a client's
/// burst after it logged in, or every client after a restart) wait for one `ValidateToken` instead
/// of each asking. A finished check answers the calls that were already past the token memory when
/// it finished for [`CHECK_SHARED_FOR`]; the map is pruned as it grows.
type Checks = Mutex<HashMap<Box<str>, (Instant, Arc<OnceCell<Result<bool, AuthError>>>)>>;

/// How long a user check's answer is shared with calls that started checking the same token.
const CHECK_SHARED_FOR: Duration = Duration::from_secs(1);
/// Checks remembered before old ones are pruned.
const MAX_CHECKS: usize = 1024;

/// Verifies bearer tokens with the user service's public keys. Clones share one key set.
#[derive(Debug, Clone)]
pub struct Authenticator {
    keys: Arc<KeyRing>,
    users: UserServiceClient<BalancedChannel>,
    checks: Arc<Checks>,
}

impl Authenticator {
    /// Verifies tokens with the keys the user service behind `users` (a balanced channel)
    /// publishes.
    pub fn new(users: BalancedChannel) -> Self {
        let users = UserServiceClient::new(users);
        Self {
            keys: Arc::new(KeyRing::new(users.clone())),
            users,
            checks: Arc::default(),
        }
    }

    /// The caller's user id.
    pub async fn caller(&self, metadata: &MetadataMap) -> Result<String, AuthError> {
        let token = bearer(metadata)?;
        let now = SystemTime::now();
        let seconds = now
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        if let Some(recalled) = self.keys.remembered(token, seconds, Instant::now()) {
            if recalled.recheck {
                self.recheck_in_background(token);
            }
            return Ok(recalled.subject);
        }
        let invalid = || AuthError::Unauthenticated(token::TokenError::Invalid.to_string());
        let kid = token::kid_of(token).ok_or_else(invalid)?;
        let found = self.keys.key(&kid).await?;
        let claims = token::verify(token, &found.key, &found.issuer, now)
            .map_err(|error| AuthError::Unauthenticated(error.to_string()))?;
        let trust = if self.user_exists_once(token).await? {
            keys::REFRESH_EVERY
        } else {
            UNCONFIRMED_TRUST
        };
        self.keys
            .remember(token, found.generation, &claims.sub, claims.exp, trust);
        Ok(claims.sub)
    }

    /// Checks the user of `token`, a remembered token due a check, without making anyone wait:
    /// its trust is renewed when the user exists (briefly when the user service did not answer),
    /// and it is forgotten when the user service refuses it, so its next call is refused too.
    fn recheck_in_background(&self, token: &str) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let this = self.clone();
        let token = token.to_owned();
        runtime.spawn(async move {
            match this.user_exists_once(&token).await {
                Ok(true) => this.keys.renew(&token, keys::REFRESH_EVERY),
                Ok(false) => this.keys.renew(&token, UNCONFIRMED_TRUST),
                Err(_) => this.keys.forget(&token),
            }
        });
    }

    /// [`Authenticator::user_exists`], asked once for all the calls that check `token` at the
    /// same time.
    async fn user_exists_once(&self, token: &str) -> Result<bool, AuthError> {
        let now = Instant::now();
        let check = self.checks.lock().ok().map(|mut checks| {
            if checks.len() >= MAX_CHECKS {
                checks.retain(|_, (started, _)| now.duration_since(*started) < CHECK_SHARED_FOR);
            }
            let entry = checks
                .entry(token.into())
                .or_insert_with(|| (now, Arc::default()));
            if now.duration_since(entry.0) >= CHECK_SHARED_FOR && entry.1.initialized() {
                *entry = (now, Arc::default());
            }
            Arc::clone(&entry.1)
        });
        let Some(check) = check else {
            return self.user_exists(token).await;
        };
        // A caller that goes away mid-check leaves it to the next one waiting (`OnceCell`).
        check.get_or_init(|| self.user_exists(token)).await.clone()
    }

    /// Asks the user service whether the user of `token` (which verified) still exists: `true`
    /// when it says so, `false` when it could not answer, and the user service's own refusal
    /// (a deleted user, a revoked key) when it refuses the token.
    async fn user_exists(&self, token: &str) -> Result<bool, AuthError> {
        let asked = Token {
            token: token.to_owned(),
            ..Token::default()
        };
        let outcome = match self.users.clone().validate_token(asked).await {
            Ok(_) => Ok(true),
            Err(status) if status.code() == tonic::Code::Unauthenticated => {
                Err(AuthError::Unauthenticated(status.message().to_owned()))
            }
            Err(status) => {
                tracing::debug!(%status, "user not confirmed: the user service did not answer");
                Ok(false)
            }
        };
        let label = match &outcome {
            Ok(true) => "confirmed",
            Ok(false) => "unconfirmed",
            Err(_) => "refused",
        };
        metrics::counter!("shippy_auth_user_checks_total", "outcome" => label).increment(1);
        outcome
    }
}

/// The token of `authorization: Bearer <token>` metadata, unchecked.
pub fn bearer(metadata: &MetadataMap) -> Result<&str, AuthError> {
    let header = metadata.get("authorization").ok_or_else(|| {
        AuthError::Unauthenticated(
            "missing `authorization: Bearer <token>` metadata; log in first".into(),
        )
    })?;
    header
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            AuthError::Unauthenticated("authorization metadata must be `Bearer <token>`".into())
        })
}

/// Checks that `value`, the request field `field` naming a user, is empty or the `caller`'s own id:
/// nobody may act in another user's name. `PERMISSION_DENIED` naming the field otherwise. The
/// field's name is built only for that answer (`containers[7].user_id` costs an allocation).
pub fn own<F: std::fmt::Display>(
    caller: &str,
    field: impl FnOnce() -> F,
    value: &str,
) -> Result<(), AuthError> {
    let value = value.trim();
    if value.is_empty() || value == caller {
        Ok(())
    } else {
        Err(AuthError::Forbidden(format!(
            "{}: must be empty or your own user id; you may not act for another user",
            field()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn only_the_caller_or_nobody_may_be_named() {
        assert!(own("u1", || "owner_id", "").is_ok());
        assert!(own("u1", || "owner_id", " u1 ").is_ok());
        let refused = Status::from(own("u1", || "containers[2].user_id", "u2").expect_err("other"));
        assert_eq!(
            (refused.code(), refused.message()),
            (
                Code::PermissionDenied,
                "containers[2].user_id: must be empty or your own user id; you may not act for \
                 another user"
            )
        );
    }

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        let mut metadata = MetadataMap::new();
        let missing = Status::from(bearer(&metadata).expect_err("missing"));
        assert_eq!(missing.code(), Code::Unauthenticated);
        metadata.insert("authorization", "Basic abc".parse().expect("value"));
        assert!(bearer(&metadata).is_err());
        metadata.insert("authorization", "Bearer  abc ".parse().expect("value"));
        assert_eq!(bearer(&metadata).expect("token"), "abc");
    }

    #[tokio::test]
    async fn an_unreachable_user_service_is_unavailable_and_garbage_is_unauthenticated() {
        let nobody = crate::config::live::fixed(crate::config::ClientSettings {
            timeout_ms: 500,
            ..Default::default()
        });
        let auth = Authenticator::new(BalancedChannel::fixed(
            "user",
            vec!["127.0.0.1:1".into()],
            nobody,
        ));
        let with = |token: &str| {
            let mut metadata = MetadataMap::new();
            metadata.insert(
                "authorization",
                format!("Bearer {token}").parse().expect("value"),
            );
            metadata
        };
        let garbage = auth.caller(&with("not-a-jwt")).await.expect_err("garbage");
        assert_eq!(Status::from(garbage).code(), Code::Unauthenticated);
        let pair = token::SigningKeyPair::derive(b"0123456789abcdef0123456789abcdef");
        let real = pair
            .sign(
                "u1",
                "e",
                "shippy.user",
                std::time::Duration::from_secs(60),
                SystemTime::now(),
            )
            .expect("sign");
        for _ in 0..2 {
            let unknown = Status::from(auth.caller(&with(&real)).await.expect_err("no keys"));
            assert_eq!(unknown.code(), Code::Unavailable, "{unknown:?}");
        }
    }
}
