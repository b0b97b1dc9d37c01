//! The user service's side of tokens: which secret signs them ([`signing_secret`] decides, or
//! refuses to start), and [`Tokens`], which issues them with the key derived from it and knows the
//! public keys every verifier may use (the current one, and during a rotation the previous one).
//! Token format and checks are shared with every verifying service (`shippy_shared::auth::token`).

use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};
pub use shippy_shared::auth::{
    oidc::OidcError,
    token::{Claims, FUTURE_LEEWAY_SECS, TokenError},
};
use shippy_shared::{
    auth::token::{self, SigningKeyPair, VerifyingKey},
    config::services::AuthSettings,
};

/// Secret used only when `auth.dev_mode` is on and no secret is configured. Public by design (a
/// test may sign tokens with it); refused outside dev mode.
pub const DEV_SECRET: &str = "shippy-dev-mode-secret-never-use-in-production";
/// Shortest secret accepted outside dev mode (HS256 wants at least 256 bits).
pub const MIN_SECRET_LEN: usize = 32;
/// Fewest different characters a secret must have: a cheap guard against secrets typed by hand
/// (`aaaa…`, `abababab…`); a random hex or base64 secret has far more.
pub const MIN_SECRET_DISTINCT: usize = 10;

/// Why the service must not start with the configured `auth.jwt_secret`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// No secret (or the public development secret) outside dev mode.
    #[error(
        "auth.jwt_secret is not set: set SHIPPY_AUTH__JWT_SECRET to a random string of at least \
         {MIN_SECRET_LEN} characters (e.g. `openssl rand -hex 32`), or SHIPPY_AUTH__DEV_MODE=true \
         for local development only"
    )]
    Missing,
    /// A secret shorter than [`MIN_SECRET_LEN`].
    #[error("auth.jwt_secret is too short: use at least {MIN_SECRET_LEN} characters")]
    TooShort,
    /// A secret that is easy to guess: blank, one repeated character, or too few different ones.
    #[error(
        "auth.jwt_secret is too easy to guess (blank, one repeated character, or fewer than \
         {MIN_SECRET_DISTINCT} different characters): set SHIPPY_AUTH__JWT_SECRET to a random \
         string, e.g. `openssl rand -hex 32`"
    )]
    Weak,
}

/// The secret to sign tokens with, or why the service must not start: outside `auth.dev_mode`
/// the secret must be set, must not be the public development secret, and must have at least
/// [`MIN_SECRET_LEN`] characters. In dev mode a missing secret is replaced by the public one.
pub fn signing_secret(auth: &AuthSettings) -> Result<SecretString, SecretError> {
    let secret = auth.jwt_secret.expose_secret();
    if secret.is_empty() || secret == DEV_SECRET {
        if !auth.dev_mode {
            return Err(SecretError::Missing);
        }
        tracing::warn!("auth.dev_mode: signing tokens with the public development secret");
        return Ok(SecretString::from(DEV_SECRET));
    }
    if secret.len() < MIN_SECRET_LEN {
        return Err(SecretError::TooShort);
    }
    let distinct: std::collections::BTreeSet<char> = secret.chars().collect();
    if secret.trim().is_empty() || distinct.len() < MIN_SECRET_DISTINCT {
        return Err(SecretError::Weak);
    }
    Ok(auth.jwt_secret.clone())
}

/// Issues tokens with the current key; knows the current and previous public keys.
#[derive(Debug, Clone)]
pub struct Tokens {
    current: SigningKeyPair,
    previous: Option<VerifyingKey>,
    issuer: String,
    ttl: Duration,
}

impl Tokens {
    /// Tokens signed with the key derived from `secret`, issued by `issuer`, valid for `ttl`;
    /// tokens of the key derived from `previous` (a secret being rotated out) still verify.
    pub fn new(secret: &[u8], previous: Option<&[u8]>, issuer: &str, ttl: Duration) -> Self {
        let current = SigningKeyPair::derive(secret);
        let previous = previous
            .map(|secret| SigningKeyPair::derive(secret).public().clone())
            .filter(|key| key.kid() != current.public().kid());
        Self {
            current,
            previous,
            issuer: issuer.to_owned(),
            ttl,
        }
    }

    /// A token for user `id` issued at `now`.
    pub fn issue(
        &self,
        id: &str,
        email: &str,
        now: SystemTime,
    ) -> Result<String, serde_json::Error> {
        self.current.sign(id, email, &self.issuer, self.ttl, now)
    }

    /// A token for user `id` issued at `now`, valid for the configured lifetime or `at_most`,
    /// whichever is shorter (at least a second): a token exchanged for an external ID token lives
    /// no longer than that ID token would have.
    pub fn issue_within(
        &self,
        id: &str,
        email: &str,
        now: SystemTime,
        at_most: Duration,
    ) -> Result<String, serde_json::Error> {
        let ttl = self.ttl.min(at_most).max(Duration::from_secs(1));
        self.current.sign(id, email, &self.issuer, ttl, now)
    }

    /// The claims of a valid token, checked at `now` with whichever published key it names.
    pub fn validate(&self, token: &str, now: SystemTime) -> Result<Claims, TokenError> {
        let kid = token::kid_of(token).ok_or(TokenError::Invalid)?;
        let key = self
            .public_keys()
            .find(|key| key.kid() == kid)
            .ok_or(TokenError::Invalid)?;
        token::verify(token, key, &self.issuer, now)
    }

    /// The keys verifiers may use: the current one first.
    pub fn public_keys(&self) -> impl Iterator<Item = &VerifyingKey> {
        std::iter::once(self.current.public()).chain(self.previous.as_ref())
    }

    /// The `iss` of issued tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_to_start_without_a_real_secret_unless_in_dev_mode() {
        let secret =
            |auth: &AuthSettings| signing_secret(auth).map(|s| s.expose_secret().to_owned());
        let mut auth = AuthSettings::default();
        let err = secret(&auth).expect_err("empty secret refused");
        assert!(err.to_string().contains("SHIPPY_AUTH__JWT_SECRET"));
        auth.jwt_secret = SecretString::from("short");
        assert_eq!(secret(&auth), Err(SecretError::TooShort));
        auth.jwt_secret = SecretString::from(DEV_SECRET);
        assert_eq!(
            secret(&auth),
            Err(SecretError::Missing),
            "the public dev secret is refused outside dev mode"
        );
        auth.dev_mode = true;
        assert_eq!(secret(&auth).expect("dev"), DEV_SECRET);
        auth.jwt_secret = SecretString::from("0123456789abcdef".repeat(3));
        assert_eq!(secret(&auth).expect("real").len(), 48);
        assert!(
            !format!("{auth:?}").contains("0123"),
            "secret must not show in Debug"
        );
    }

    #[test]
    fn guessable_secrets_are_refused_naming_the_variable() {
        let mut auth = AuthSettings::default();
        for weak in [
            " ".repeat(32),
            "a".repeat(32),
            "\t".repeat(40),
            "ab".repeat(20),
            "0123456789".repeat(4).replace('9', "0"),
        ] {
            auth.jwt_secret = SecretString::from(weak.clone());
            let err = signing_secret(&auth).expect_err("weak secret");
            assert_eq!(err, SecretError::Weak, "{weak:?}");
            assert!(err.to_string().contains("SHIPPY_AUTH__JWT_SECRET"), "{err}");
        }
        // Exactly ten different characters is enough.
        auth.jwt_secret = SecretString::from("0123456789".repeat(4));
        assert!(signing_secret(&auth).is_ok());
    }

    #[test]
    fn a_rotation_keeps_old_tokens_valid_until_the_old_secret_goes() {
        let old_secret = b"0123456789abcdef0123456789abcdef";
        let new_secret = b"fedcba9876543210fedcba9876543210";
        let before = Tokens::new(old_secret, None, "shippy.user", Duration::from_secs(3600));
        let old_token = before
            .issue("u1", "a@b.co", SystemTime::now())
            .expect("issue");
        let during = Tokens::new(
            new_secret,
            Some(old_secret),
            "shippy.user",
            Duration::from_secs(3600),
        );
        assert_eq!(during.public_keys().count(), 2);
        assert!(
            during.validate(&old_token, SystemTime::now()).is_ok(),
            "old token still valid"
        );
        let new_token = during
            .issue("u1", "a@b.co", SystemTime::now())
            .expect("issue");
        assert_ne!(
            token::kid_of(&new_token),
            token::kid_of(&old_token),
            "signed with the new key"
        );
        let after = Tokens::new(new_secret, None, "shippy.user", Duration::from_secs(3600));
        assert_eq!(
            after.validate(&old_token, SystemTime::now()),
            Err(TokenError::Invalid)
        );
        assert!(after.validate(&new_token, SystemTime::now()).is_ok());
    }

    fn tokens(secret: &str) -> Tokens {
        Tokens::new(
            secret.as_bytes(),
            None,
            "shippy.user",
            Duration::from_secs(3600),
        )
    }

    #[test]
    fn issued_token_validates_with_its_claims() {
        let t = tokens("0123456789abcdef0123456789abcdef");
        let token = t.issue("u1", "a@b.co", SystemTime::now()).expect("issue");
        let claims = t.validate(&token, SystemTime::now()).expect("valid");
        assert_eq!(
            (claims.sub.as_str(), claims.iss.as_str()),
            ("u1", "shippy.user")
        );
        assert_eq!(claims.exp - claims.iat, 3600);
    }

    #[test]
    fn exchanged_tokens_live_no_longer_than_what_they_were_exchanged_for() {
        let t = tokens("0123456789abcdef0123456789abcdef");
        let now = SystemTime::now();
        let lifetime = |token: &str| {
            let claims = t.validate(token, now).expect("valid");
            claims.exp - claims.iat
        };
        let short = t
            .issue_within("u1", "a@b.co", now, Duration::from_secs(90))
            .expect("issue");
        assert_eq!(lifetime(&short), 90);
        let long = t
            .issue_within("u1", "a@b.co", now, Duration::from_secs(86_400))
            .expect("issue");
        assert_eq!(
            lifetime(&long),
            3600,
            "never longer than auth.token_ttl_secs"
        );
        let none_left = t
            .issue_within("u1", "a@b.co", now, Duration::ZERO)
            .expect("issue");
        assert_eq!(lifetime(&none_left), 1);
    }

    #[test]
    fn expired_token_is_refused() {
        let t = tokens("0123456789abcdef0123456789abcdef");
        let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
        let token = t.issue("u1", "a@b.co", two_hours_ago).expect("issue");
        assert_eq!(
            t.validate(&token, SystemTime::now()),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn forged_malformed_and_foreign_tokens_are_refused() {
        let t = tokens("0123456789abcdef0123456789abcdef");
        let forged = tokens("another secret entirely, 32 bytes")
            .issue("u1", "a@b.co", SystemTime::now())
            .expect("issue");
        assert_eq!(
            t.validate(&forged, SystemTime::now()),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            t.validate("not.a.jwt", SystemTime::now()),
            Err(TokenError::Invalid)
        );
        assert_eq!(t.validate("", SystemTime::now()), Err(TokenError::Invalid));
        let other_issuer = Tokens::new(
            b"0123456789abcdef0123456789abcdef",
            None,
            "someone.else",
            Duration::from_secs(60),
        )
        .issue("u1", "a@b.co", SystemTime::now())
        .expect("issue");
        assert_eq!(
            t.validate(&other_issuer, SystemTime::now()),
            Err(TokenError::Invalid)
        );
        // Tampered payload with the original signature.
        let token = t.issue("u1", "a@b.co", SystemTime::now()).expect("issue");
        let parts: Vec<&str> = token.split('.').collect();
        let tampered = format!("{}.{}x.{}", parts[0], parts[1], parts[2]);
        assert_eq!(
            t.validate(&tampered, SystemTime::now()),
            Err(TokenError::Invalid)
        );
    }
}
