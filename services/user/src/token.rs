//! JWTs: HS256, with issuer, subject and expiry, signed with the configured secret
//! ([`signing_secret`] decides which one, or refuses to start).
//!
//! A token is accepted only when its signature, issuer and expiry check out, it names a user
//! (`sub` not empty), and it was not issued (`iat`) or made valid (`nbf`) in the future beyond
//! [`FUTURE_LEEWAY_SECS`] of clock skew. Whether its user still exists is the handler's question
//! (it has the store).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use shippy_shared::config::services::AuthSettings;

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

/// Why a token was refused. Messages are safe to send to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Past its expiry.
    #[error("token expired; log in again")]
    Expired,
    /// Bad signature, wrong issuer or algorithm, no subject, or not a JWT at all.
    #[error("invalid token")]
    Invalid,
    /// Issued, or valid only from, a time in the future (beyond the clock-skew leeway).
    #[error("token not valid yet; check the clocks, then log in again")]
    NotYetValid,
    /// Names a user that does not exist (any more).
    #[error("token of a user that does not exist; log in again")]
    UnknownUser,
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
    /// Not valid before (seconds since the epoch); never issued here, checked when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
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
/// Clock skew tolerated on `iat` and `nbf`: instances whose clocks differ by up to a minute still
/// accept each other's tokens.
pub const FUTURE_LEEWAY_SECS: u64 = 60;

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
            nbf: None,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// The claims of a valid token, checked at `now`.
    pub fn validate(&self, token: &str, now: SystemTime) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = LEEWAY_SECS;
        // `nbf` is checked below with the same leeway as `iat`.
        validation.validate_nbf = false;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })?;
        if claims.sub.trim().is_empty() {
            return Err(TokenError::Invalid);
        }
        let latest = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            .saturating_add(FUTURE_LEEWAY_SECS);
        if claims.iat > latest || claims.nbf.is_some_and(|nbf| nbf > latest) {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
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

    /// A token with `claims`, signed like [`Tokens::issue`] with `secret`.
    fn signed(secret: &str, claims: &Claims) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("encode")
    }

    #[test]
    fn tokens_without_a_subject_or_from_the_future_are_refused() {
        let secret = "0123456789abcdef0123456789abcdef";
        let t = tokens(secret);
        let now = SystemTime::now();
        let secs = now
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let good = Claims {
            sub: "u1".into(),
            email: "a@b.co".into(),
            iss: "shippy.user".into(),
            iat: secs,
            exp: secs + 3600,
            nbf: None,
        };
        assert!(t.validate(&signed(secret, &good), now).is_ok());
        for sub in ["", "  "] {
            let claims = Claims {
                sub: sub.into(),
                ..good.clone()
            };
            assert_eq!(
                t.validate(&signed(secret, &claims), now),
                Err(TokenError::Invalid)
            );
        }
        let skewed = Claims {
            iat: secs + FUTURE_LEEWAY_SECS,
            nbf: Some(secs + FUTURE_LEEWAY_SECS),
            ..good.clone()
        };
        assert!(
            t.validate(&signed(secret, &skewed), now).is_ok(),
            "a minute of clock skew is tolerated"
        );
        let issued_later = Claims {
            iat: secs + 3_000,
            ..good.clone()
        };
        assert_eq!(
            t.validate(&signed(secret, &issued_later), now),
            Err(TokenError::NotYetValid)
        );
        let not_before = Claims {
            nbf: Some(secs + 600),
            ..good
        };
        assert_eq!(
            t.validate(&signed(secret, &not_before), now),
            Err(TokenError::NotYetValid)
        );
    }

    fn tokens(secret: &str) -> Tokens {
        Tokens::new(secret.as_bytes(), "shippy.user", Duration::from_secs(3600))
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
