//! JWTs: HS256, with issuer, subject and expiry, signed with the configured secret.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

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
