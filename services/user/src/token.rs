//! JWTs: HS256, with issuer, subject and expiry, signed with the configured secret
//! ([`signing_secret`] decides which one, or refuses to start).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use shippy_shared::config::services::AuthSettings;

/// Secret used only when `auth.dev_mode` is on and no secret is configured.
const DEV_SECRET: &str = "shippy-dev-mode-secret-never-use-in-production";
/// Shortest secret accepted outside dev mode (HS256 wants at least 256 bits).
pub const MIN_SECRET_LEN: usize = 32;

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
    Ok(auth.jwt_secret.clone())
}

/// Why a token was refused. Messages are safe to send to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Past its expiry.
    #[error("token expired; log in again")]
    Expired,
    /// Bad signature, wrong issuer or algorithm, or not a JWT at all.
    #[error("invalid token")]
    Invalid,
}

/// What a token asserts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// User email.
    pub email: String,
    /// Issuer.
    pub iss: String,
    /// Issued at (seconds since the epoch).
    pub iat: u64,
    /// Expiry (seconds since the epoch).
    pub exp: u64,
}

/// Issues and validates tokens with one secret.
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    issuer: String,
    ttl: Duration,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("issuer", &self.issuer)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Clock skew tolerated on expiry.
const LEEWAY_SECS: u64 = 5;

impl Tokens {
    /// Tokens signed with `secret`, issued by `issuer`, valid for `ttl`.
    pub fn new(secret: &[u8], issuer: &str, ttl: Duration) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
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
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let claims = Claims {
            sub: id.to_owned(),
            email: email.to_owned(),
            iss: self.issuer.clone(),
            iat,
            exp: iat + self.ttl.as_secs(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// The claims of a valid token.
    pub fn validate(&self, token: &str) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = LEEWAY_SECS;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })
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
        auth.jwt_secret = SecretString::from("x".repeat(40));
        assert_eq!(secret(&auth).expect("real").len(), 40);
        assert!(
            !format!("{auth:?}").contains("xxxx"),
            "secret must not show in Debug"
        );
    }

    fn tokens(secret: &str) -> Tokens {
        Tokens::new(secret.as_bytes(), "shippy.user", Duration::from_secs(3600))
    }

    #[test]
    fn issued_token_validates_with_its_claims() {
        let t = tokens("0123456789abcdef0123456789abcdef");
        let token = t.issue("u1", "a@b.co", SystemTime::now()).expect("issue");
        let claims = t.validate(&token).expect("valid");
        assert_eq!(
            (claims.sub.as_str(), claims.iss.as_str()),
            ("u1", "shippy.user")
        );
        assert_eq!(claims.exp - claims.iat, 3600);
    }

    #[test]
    fn expired_token_is_refused() {
        let t = tokens("0123456789abcdef0123456789abcdef");
        let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
        let token = t.issue("u1", "a@b.co", two_hours_ago).expect("issue");
        assert_eq!(t.validate(&token), Err(TokenError::Expired));
    }

    #[test]
    fn forged_malformed_and_foreign_tokens_are_refused() {
        let t = tokens("0123456789abcdef0123456789abcdef");
        let forged = tokens("another secret entirely, 32 bytes")
            .issue("u1", "a@b.co", SystemTime::now())
            .expect("issue");
        assert_eq!(t.validate(&forged), Err(TokenError::Invalid));
        assert_eq!(t.validate("not.a.jwt"), Err(TokenError::Invalid));
        assert_eq!(t.validate(""), Err(TokenError::Invalid));
        let other_issuer = Tokens::new(
            b"0123456789abcdef0123456789abcdef",
            "someone.else",
            Duration::from_secs(60),
        )
        .issue("u1", "a@b.co", SystemTime::now())
        .expect("issue");
        assert_eq!(t.validate(&other_issuer), Err(TokenError::Invalid));
        // Tampered payload with the original signature.
        let token = t.issue("u1", "a@b.co", SystemTime::now()).expect("issue");
        let parts: Vec<&str> = token.split('.').collect();
        let tampered = format!("{}.{}x.{}", parts[0], parts[1], parts[2]);
        assert_eq!(t.validate(&tampered), Err(TokenError::Invalid));
    }
}
