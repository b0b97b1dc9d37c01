//! The edge of the user service: `shippy.user.v1.UserService` requests are validated into domain
//! types here, and every error becomes a `Status` in one place ([`status`]).
//!
//! Who may call what (the access model of the user service, enforced here and nowhere else):
//! `Create` and `Auth` are open (they are how one gets a token), but hashing runs in the bounded
//! [`Hasher`] and log-ins are rate-limited per client address and per email ([`LoginLimits`]);
//! `Get` and `GetAll` need the caller's own token and answer only the caller's own record;
//! `ValidateToken` is open to the other services and accepts a token only while its user exists;
//! `ExchangeToken` is open too: what it takes, an ID token of the configured OpenID Connect
//! provider (`user.oidc.*`), is itself the proof of identity, and it answers with a shippy token
//! for the registered user with that token's verified email.
//!
//! An exchanged token lives as long as `auth.token_ttl_secs` or as the ID token had left,
//! whichever is shorter: shippy does not stretch a session the provider granted (ID tokens are
//! short-lived, an hour at most providers), and whoever holds the provider's session signs in
//! again there and exchanges the new ID token.

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use shippy_proto::user::v1::{self as pb, user_service_server::UserService};
use shippy_shared::{auth::oidc::OidcVerifier, discovery::InstanceSet, store::observe};
use tokio::sync::watch;
use tonic::{Request, Response, Status, metadata::MetadataMap};

use crate::{
    domain::{Email, NewUser, Password, User, UserError},
    limits::LoginLimits,
    password::Hasher,
    store::UserStore,
    token::{OidcError, TokenError, Tokens},
};

/// Serves `shippy.user.v1.UserService`.
#[derive(Debug, Clone)]
pub struct UserHandler {
    store: Arc<dyn UserStore>,
    tokens: Tokens,
    hasher: Hasher,
    limits: LoginLimits,
    /// The external provider whose ID tokens `ExchangeToken` takes; `None`: exchange is off.
    oidc: Option<Arc<OidcVerifier>>,
    /// The live REST gateway instances: a call from one of their hosts is limited by the client
    /// address the gateway forwards (`x-forwarded-for`), not by the gateway's own.
    proxies: Option<watch::Receiver<InstanceSet>>,
}

impl UserHandler {
    /// A handler over `store`, issuing `tokens`, hashing with `hasher`, and limiting log-ins with
    /// `limits`.
    pub fn new(
        store: Arc<dyn UserStore>,
        tokens: Tokens,
        hasher: Hasher,
        limits: LoginLimits,
    ) -> Self {
        Self {
            store,
            tokens,
            hasher,
            limits,
            oidc: None,
            proxies: None,
        }
    }

    /// Trusts `x-forwarded-for` on calls from the hosts of the gateway instances in `gateways`.
    pub fn with_proxies(mut self, gateways: watch::Receiver<InstanceSet>) -> Self {
        self.proxies = Some(gateways);
        self
    }

    /// The address a log-in is limited by: the caller's, or, when the caller runs on the host of
    /// a registered gateway instance, the client address that gateway forwarded. (Anyone else's
    /// `x-forwarded-for` is ignored: it is a client's own claim.)
    fn client_ip<T>(&self, request: &Request<T>) -> Option<IpAddr> {
        let peer = request.remote_addr()?.ip();
        let forwarded = || {
            request
                .metadata()
                .get(FORWARDED_FOR)?
                .to_str()
                .ok()?
                .trim()
                .parse::<IpAddr>()
                .ok()
        };
        let from_gateway = self.proxies.as_ref().is_some_and(|gateways| {
            gateways
                .borrow()
                .iter()
                .any(|gateway| host_ip(&gateway.address) == Some(peer))
        });
        match from_gateway {
            true => forwarded().or(Some(peer)),
            false => Some(peer),
        }
    }

    /// This handler, exchanging ID tokens that `oidc` verifies (`ExchangeToken`).
    pub fn with_oidc(mut self, oidc: Option<Arc<OidcVerifier>>) -> Self {
        self.oidc = oidc;
        self
    }

    /// A shippy token for the registered user whose verified email the ID token `token` carries.
    async fn exchange(&self, token: &str) -> Result<pb::Token, UserError> {
        let verifier = self.oidc.as_ref().ok_or(OidcError::NotConfigured)?;
        let identity = verifier.verify(token).await?;
        // A malformed address cannot be any user's.
        let email = Email::parse(&identity.email).map_err(|_| UserError::NotRegistered)?;
        let user = observe("find_by_email", self.store.find_by_email(&email))
            .await?
            .ok_or(UserError::NotRegistered)?;
        let now = SystemTime::now();
        let seconds = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let left = Duration::from_secs(identity.expires_at.saturating_sub(seconds));
        let token = self
            .tokens
            .issue_within(&user.id, user.email.as_str(), now, left)
            .map_err(|e| UserError::Internal(format!("signing failed: {e}")))?;
        tracing::info!(
            user = %user.id,
            issuer = verifier.issuer(),
            subject = %identity.subject,
            "ID token exchanged for a token"
        );
        Ok(pb::Token {
            token,
            valid: true,
            user_id: user.id,
        })
    }

    /// The user `token` belongs to: a valid token whose user still exists.
    async fn holder(&self, token: &str) -> Result<User, UserError> {
        let claims = self.tokens.validate(token, SystemTime::now())?;
        observe("get", self.store.get(&claims.sub))
            .await?
            .ok_or(UserError::Token(TokenError::UnknownUser))
    }

    /// The caller of a call that needs `authorization: Bearer <token>`.
    async fn caller(&self, metadata: &MetadataMap) -> Result<User, Status> {
        let token = shippy_shared::auth::bearer(metadata).map_err(Status::from)?;
        self.holder(token).await.map_err(status)
    }
}

/// The one mapping of the user service's errors to what clients see.
fn status(error: UserError) -> Status {
    match &error {
        UserError::Invalid(_) => Status::invalid_argument(error.to_string()),
        UserError::InvalidCredentials | UserError::Token(_) | UserError::NotRegistered => {
            Status::unauthenticated(error.to_string())
        }
        UserError::Oidc(OidcError::NotConfigured) => Status::failed_precondition(error.to_string()),
        UserError::Oidc(OidcError::Unavailable { .. }) => Status::unavailable(error.to_string()),
        UserError::Oidc(_) => Status::unauthenticated(error.to_string()),
        UserError::NotFound => Status::not_found(error.to_string()),
        UserError::NotYours => Status::permission_denied(error.to_string()),
        // The caller already waited up to `auth.hash_queue_timeout_ms` for a slot; "a few
        // seconds", as the message says.
        UserError::Busy => shippy_shared::status::exhausted(error.to_string(), 2),
        UserError::TooManyAttempts { retry_after_secs }
        | UserError::TooManySignUps { retry_after_secs } => {
            shippy_shared::status::exhausted(error.to_string(), *retry_after_secs)
        }
        UserError::Store(store) => shippy_shared::status::store(store),
        UserError::Internal(cause) => shippy_shared::status::internal(cause),
    }
}

/// How long a call may wait for a hashing slot: half of the deadline its caller sent
/// (`grpc-timeout`), so the hash itself still fits; `None` when the caller sent none (the
/// configured `auth.hash_queue_timeout_ms` bounds the wait either way).
fn hash_wait(metadata: &MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let split = value.len().checked_sub(1)?;
    let (amount, unit) = value.split_at(split);
    let amount: u64 = amount.parse().ok()?;
    let deadline = match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    };
    Some(deadline / 2)
}

/// The metadata key the REST gateway puts a client's address in.
const FORWARDED_FOR: &str = "x-forwarded-for";

/// The IP address of a registered `host:port` (`[v6]:port` included), if its host is an address.
fn host_ip(address: &str) -> Option<IpAddr> {
    address
        .parse::<std::net::SocketAddr>()
        .map(|socket| socket.ip())
        .ok()
}

impl From<User> for pb::User {
    /// The password field stays empty: neither the password nor its hash is ever returned.
    fn from(user: User) -> Self {
        Self {
            id: user.id,
            name: user.name,
            company: user.company,
            email: user.email.as_str().to_owned(),
            password: String::new(),
        }
    }
}

#[tonic::async_trait]
impl UserService for UserHandler {
    async fn create(&self, request: Request<pb::User>) -> Result<Response<pb::Response>, Status> {
        // A sign-up costs a hash as a log-in does, so it counts against the same per-client
        // allowance, checked first: a flood of sign-ups cannot keep the hashing slots from
        // log-ins. The id is always made here (`domain::new_id`); one sent by the client is ignored.
        self.limits
            .sign_up(self.client_ip(&request))
            .map_err(status)?;
        let wait = hash_wait(request.metadata());
        let request = request.into_inner();
        let new = NewUser::parse(
            &request.name,
            &request.company,
            &request.email,
            request.password,
        )
        .map_err(|e| status(e.into()))?;
        let hash = self
            .hasher
            .hash(new.password(), wait)
            .await
            .map_err(status)?;
        let user = new.into_user(hash);
        observe("create", self.store.create(&user))
            .await
            .map_err(|e| status(e.into()))?;
        tracing::info!(user = %user.id, email = %user.email, "user created");
        Ok(Response::new(pb::Response {
            user: Some(user.into()),
            users: Vec::new(),
        }))
    }

    /// The caller's own record. An id or email in the request must be the caller's (an empty
    /// request means the caller): nobody reads another user's record, and whether it exists is
    /// not revealed.
    async fn get(&self, request: Request<pb::User>) -> Result<Response<pb::Response>, Status> {
        let caller = self.caller(request.metadata()).await?;
        let query = request.into_inner();
        let id = query.id.trim();
        let email = query.email.trim();
        let names_other = (!id.is_empty() && id != caller.id)
            || (!email.is_empty() && Email::parse(email).ok().as_ref() != Some(&caller.email));
        if names_other {
            return Err(status(UserError::NotYours));
        }
        Ok(Response::new(pb::Response {
            user: Some(caller.into()),
            users: Vec::new(),
        }))
    }

    /// Every user the caller may see: the caller alone.
    async fn get_all(
        &self,
        request: Request<pb::Request>,
    ) -> Result<Response<pb::Response>, Status> {
        let caller = self.caller(request.metadata()).await?;
        Ok(Response::new(pb::Response {
            user: None,
            users: vec![caller.into()],
        }))
    }

    async fn auth(&self, request: Request<pb::User>) -> Result<Response<pb::Token>, Status> {
        // Limits first: a refused attempt costs no store lookup and no hash.
        self.limits
            .client(self.client_ip(&request))
            .map_err(status)?;
        let wait = hash_wait(request.metadata());
        let credentials = request.into_inner();
        // A malformed email cannot belong to anyone: same answer as a wrong password.
        let email =
            Email::parse(&credentials.email).map_err(|_| status(UserError::InvalidCredentials))?;
        self.limits.email(&email).map_err(|e| {
            tracing::warn!(%email, "log-in attempts over the limit");
            status(e)
        })?;
        let user = observe("find_by_email", self.store.find_by_email(&email))
            .await
            .map_err(|e| status(e.into()))?;
        // An unknown email is checked against a dummy hash: it takes as long as a wrong password.
        let hash = user.as_ref().map(|u| u.password_hash.clone());
        let matches = self
            .hasher
            .verify(Password::attempt(credentials.password), hash, wait)
            .await
            .map_err(status)?;
        let Some(user) = user.filter(|_| matches) else {
            tracing::info!(%email, "authentication failed");
            return Err(status(UserError::InvalidCredentials));
        };
        let token = self
            .tokens
            .issue(&user.id, user.email.as_str(), SystemTime::now())
            .map_err(|e| status(UserError::Internal(format!("signing failed: {e}"))))?;
        tracing::info!(user = %user.id, "token issued");
        Ok(Response::new(pb::Token {
            token,
            valid: true,
            user_id: user.id,
        }))
    }

    async fn validate_token(
        &self,
        request: Request<pb::Token>,
    ) -> Result<Response<pb::Token>, Status> {
        let token = request.into_inner().token;
        let user = self.holder(&token).await.map_err(status)?;
        Ok(Response::new(pb::Token {
            token,
            valid: true,
            user_id: user.id,
        }))
    }

    async fn exchange_token(
        &self,
        request: Request<pb::Token>,
    ) -> Result<Response<pb::Token>, Status> {
        let answer = self.exchange(&request.into_inner().token).await;
        let outcome = match &answer {
            Ok(_) => "exchanged",
            Err(UserError::Oidc(error)) => error.outcome(),
            Err(UserError::NotRegistered) => "unknown_email",
            Err(_) => "error",
        };
        metrics::counter!("shippy_auth_exchanges_total", "outcome" => outcome).increment(1);
        if let Err(error) = &answer {
            tracing::info!(outcome, %error, "ID token not exchanged");
        }
        answer.map(Response::new).map_err(status)
    }

    async fn public_keys(&self, _: Request<pb::Request>) -> Result<Response<pb::KeySet>, Status> {
        let keys = self
            .tokens
            .public_keys()
            .map(|key| pb::PublicKey {
                kid: key.kid().to_owned(),
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: key.x().to_owned(),
                alg: "EdDSA".into(),
            })
            .collect();
        Ok(Response::new(pb::KeySet {
            keys,
            issuer: self.tokens.issuer().to_owned(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use shippy_shared::{store::StoreError, validate::FieldError};
    use tonic::Code;

    use super::*;
    use crate::store::memory::MemoryStore;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn tokens() -> Tokens {
        Tokens::new(SECRET, None, "shippy.user", Duration::from_secs(60))
    }

    fn handler_with(limits: LoginLimits) -> UserHandler {
        let hasher = Hasher::new(2, Duration::from_secs(30));
        UserHandler::new(Arc::new(MemoryStore::default()), tokens(), hasher, limits)
    }

    fn handler() -> UserHandler {
        handler_with(LoginLimits::new(0, 0))
    }

    fn with_token<T>(message: T, token: &str) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
        request
    }

    /// Registers `email` and logs in; returns the user and a token.
    async fn registered(handler: &UserHandler, email: &str) -> (pb::User, String) {
        let created = handler
            .create(Request::new(user("", email, "correct horse")))
            .await
            .expect("created")
            .into_inner()
            .user
            .expect("user");
        let token = handler
            .auth(Request::new(user("", email, "correct horse")))
            .await
            .expect("logged in")
            .into_inner()
            .token;
        (created, token)
    }

    fn user(id: &str, email: &str, password: &str) -> pb::User {
        pb::User {
            id: id.into(),
            name: "Ewan".into(),
            company: "Shippy".into(),
            email: email.into(),
            password: password.into(),
        }
    }

    #[test]
    fn each_error_has_its_code_and_no_internals() {
        let invalid = status(FieldError::new("email", "must not be empty").into());
        assert_eq!(
            (invalid.code(), invalid.message()),
            (Code::InvalidArgument, "email: must not be empty")
        );
        let credentials = status(UserError::InvalidCredentials);
        assert_eq!(
            (credentials.code(), credentials.message()),
            (Code::Unauthenticated, "invalid email or password")
        );
        let token = status(TokenError::Expired.into());
        assert_eq!(
            (token.code(), token.message()),
            (Code::Unauthenticated, "token expired; log in again")
        );
        let missing = status(UserError::NotFound);
        assert_eq!(
            (missing.code(), missing.message()),
            (Code::NotFound, "user not found")
        );
        let duplicate = status(StoreError::Duplicate("a user with email a@b.co".into()).into());
        assert_eq!(
            (duplicate.code(), duplicate.message()),
            (
                Code::AlreadyExists,
                "a user with email a@b.co already exists"
            )
        );
        let store = status(StoreError::Internal("db at 10.0.0.1".into()).into());
        assert_eq!(
            (store.code(), store.message()),
            (Code::Internal, "internal error")
        );
        let internal = status(UserError::Internal("signing failed: key".into()));
        assert_eq!(
            (internal.code(), internal.message()),
            (Code::Internal, "internal error")
        );
    }

    #[test]
    fn responses_never_carry_passwords_or_hashes() {
        let new = NewUser::parse("n", "c", "e@x.io", "correct horse".into()).expect("valid");
        let user = new.into_user(crate::domain::PasswordHash::from_stored(
            "$argon2id$secret".into(),
        ));
        let sent = pb::User::from(user);
        assert!(sent.password.is_empty());
        assert!(!format!("{sent:?}").contains("secret"));
    }

    #[tokio::test]
    async fn registration_makes_its_own_id_and_login_does_not_tell_who_exists() {
        let handler = handler();
        let created = handler
            .create(Request::new(user(
                "chosen-id",
                " Ewan@X.io ",
                "correct horse",
            )))
            .await
            .expect("created")
            .into_inner()
            .user
            .expect("user");
        assert_ne!(created.id, "chosen-id", "clients never choose ids");
        assert_eq!(created.email, "ewan@x.io");
        assert!(created.password.is_empty());

        let again = handler
            .create(Request::new(user("", "ewan@x.io", "another one")))
            .await
            .expect_err("email taken");
        assert_eq!(again.code(), Code::AlreadyExists);
        let short = handler
            .create(Request::new(user("", "a@x.io", "short")))
            .await
            .expect_err("short password");
        assert_eq!(
            (short.code(), short.message()),
            (
                Code::InvalidArgument,
                "password: must be at least 8 characters"
            )
        );

        let token = handler
            .auth(Request::new(user("", "EWAN@x.io", "correct horse")))
            .await
            .expect("logged in")
            .into_inner();
        assert_eq!(token.user_id, created.id);
        let checked = handler
            .validate_token(Request::new(token))
            .await
            .expect("valid token")
            .into_inner();
        assert_eq!(checked.user_id, created.id);

        let refusals = [
            user("", "ewan@x.io", "wrong horse"),
            user("", "nobody@x.io", "correct horse"),
            user("", "not an email", "correct horse"),
        ];
        for credentials in refusals {
            let refused = handler
                .auth(Request::new(credentials))
                .await
                .expect_err("refused");
            assert_eq!(
                (refused.code(), refused.message()),
                (Code::Unauthenticated, "invalid email or password")
            );
        }
    }

    #[tokio::test]
    async fn users_see_only_themselves_and_only_with_a_token() {
        let handler = handler();
        let (ewan, token) = registered(&handler, "ewan@x.io").await;
        let (other, _) = registered(&handler, "other@x.io").await;
        let get = |id: &str, email: &str, token: Option<&str>| {
            let query = pb::User {
                id: id.into(),
                email: email.into(),
                ..Default::default()
            };
            handler.get(match token {
                Some(token) => with_token(query, token),
                None => Request::new(query),
            })
        };
        for (id, email) in [("", ""), (ewan.id.as_str(), ""), ("", " EWAN@x.io")] {
            let found = get(id, email, Some(&token)).await.expect("own record");
            assert_eq!(found.into_inner().user.map(|u| u.id), Some(ewan.id.clone()));
        }
        for (id, email) in [(other.id.as_str(), ""), ("", "other@x.io"), ("nobody", "")] {
            let refused = get(id, email, Some(&token)).await.expect_err("not yours");
            assert_eq!(
                (refused.code(), refused.message()),
                (Code::PermissionDenied, "you may only read your own user")
            );
        }
        let anonymous = get(&ewan.id, "", None).await.expect_err("no token");
        assert_eq!(anonymous.code(), Code::Unauthenticated);

        let all = handler
            .get_all(with_token(pb::Request::default(), &token))
            .await
            .expect("listed")
            .into_inner()
            .users;
        assert_eq!(
            all.iter().map(|u| u.email.as_str()).collect::<Vec<_>>(),
            ["ewan@x.io"]
        );
        let anonymous = handler
            .get_all(Request::new(pb::Request::default()))
            .await
            .expect_err("no token");
        assert_eq!(anonymous.code(), Code::Unauthenticated);
    }

    #[tokio::test]
    async fn tokens_of_users_that_do_not_exist_are_refused() {
        let handler = handler();
        // Signed with the service's own secret, for a user the store does not know.
        let stray = tokens()
            .issue("no-such-user", "ghost@x.io", SystemTime::now())
            .expect("issue");
        let refused = handler
            .validate_token(Request::new(pb::Token {
                token: stray.clone(),
                ..Default::default()
            }))
            .await
            .expect_err("unknown user");
        assert_eq!(
            (refused.code(), refused.message()),
            (
                Code::Unauthenticated,
                "token of a user that does not exist; log in again"
            )
        );
        let refused = handler
            .get_all(with_token(pb::Request::default(), &stray))
            .await
            .expect_err("unknown user");
        assert_eq!(refused.code(), Code::Unauthenticated);
    }

    #[tokio::test]
    async fn log_ins_over_the_email_limit_are_refused_before_hashing() {
        let handler = handler_with(LoginLimits::new(0, 2));
        let (_, _) = registered(&handler, "ewan@x.io").await; // one attempt
        let wrong = handler
            .auth(Request::new(user("", "ewan@x.io", "wrong horse")))
            .await
            .expect_err("wrong password");
        assert_eq!(wrong.code(), Code::Unauthenticated);
        let refused = handler
            .auth(Request::new(user("", "EWAN@x.io", "correct horse")))
            .await
            .expect_err("over the limit, even with the right password");
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert!(
            refused
                .message()
                .starts_with("too many login attempts; try again in "),
            "{}",
            refused.message()
        );
    }

    #[tokio::test]
    async fn exchanges_are_refused_with_the_code_their_cause_calls_for() {
        let refused = handler()
            .exchange_token(Request::new(pb::Token {
                token: "a.b.c".into(),
                ..Default::default()
            }))
            .await
            .expect_err("no provider");
        assert_eq!(
            (refused.code(), refused.message()),
            (
                Code::FailedPrecondition,
                "no OpenID Connect provider is configured (user.oidc.issuer)"
            )
        );
        let down = status(UserError::Oidc(OidcError::Unavailable {
            issuer: "https://id.example.com".into(),
        }));
        assert_eq!(
            (down.code(), down.message()),
            (
                Code::Unavailable,
                "the OpenID Connect provider at https://id.example.com does not answer"
            )
        );
        for error in [
            UserError::Oidc(OidcError::Expired),
            UserError::Oidc(OidcError::WrongAudience),
            UserError::Oidc(OidcError::BadSignature),
            UserError::NotRegistered,
        ] {
            assert_eq!(status(error).code(), Code::Unauthenticated);
        }
    }

    #[test]
    fn the_hash_wait_is_half_the_callers_deadline() {
        let wait = |value: &str| {
            let mut metadata = MetadataMap::new();
            metadata.insert("grpc-timeout", value.parse().expect("value"));
            hash_wait(&metadata)
        };
        assert_eq!(wait("5S"), Some(Duration::from_millis(2_500)));
        assert_eq!(wait("300m"), Some(Duration::from_millis(150)));
        assert_eq!(wait("1M"), Some(Duration::from_secs(30)));
        assert_eq!(wait("x"), None);
        assert_eq!(wait("5"), None);
        assert_eq!(hash_wait(&MetadataMap::new()), None);
    }

    #[test]
    fn busy_and_limited_calls_are_resource_exhausted() {
        let busy = status(UserError::Busy);
        assert_eq!(
            (busy.code(), busy.message()),
            (
                Code::ResourceExhausted,
                "the user service is busy checking other passwords; try again in a few seconds"
            )
        );
        let limited = status(UserError::TooManyAttempts {
            retry_after_secs: 7,
        });
        assert_eq!(
            (limited.code(), limited.message()),
            (
                Code::ResourceExhausted,
                "too many login attempts; try again in 7 s"
            )
        );
        assert_eq!(shippy_shared::status::retry_after(&limited), Some(7));
        assert_eq!(shippy_shared::status::retry_after(&busy), Some(2));
    }
}
