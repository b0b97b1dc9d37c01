//! Tokens: JWTs signed with Ed25519 (`EdDSA`), one implementation for the service that signs them
//! (user) and every service that verifies them.
//!
//! - **Keys** are derived from the configured secret (`auth.jwt_secret`): SHA-256 of a
//!   domain-separated secret is the Ed25519 seed. Deployments keep one random secret, as before,
//!   and only the user service holds it; every other service verifies with the public key alone.
//!   A key's id (`kid`) is the start of the SHA-256 of its public key.
//! - **Verification** accepts a token only when its header names a known `kid` with `EdDSA`, its
//!   signature, issuer and expiry check out, it names a user (`sub` not empty), and it was not
//!   issued (`iat`) or made valid (`nbf`) in the future beyond [`FUTURE_LEEWAY_SECS`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Clock skew tolerated on expiry.
const LEEWAY_SECS: u64 = 5;
/// Clock skew tolerated on `iat` and `nbf`: instances whose clocks differ by up to a minute still
/// accept each other's tokens.
pub const FUTURE_LEEWAY_SECS: u64 = 60;
/// Separates this use of the secret from any other.
const DERIVATION_CONTEXT: &[u8] = b"shippy token signing key v1\0";
/// The fixed PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410); the 32-byte seed follows.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Why a token was refused. Messages are safe to send to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Past its expiry.
    #[error("token expired; log in again")]
    Expired,
    /// Bad signature, unknown key, wrong issuer or algorithm, no subject, or not a JWT at all.
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

/// A public key that verifies tokens, with its id.
#[derive(Clone)]
pub struct VerifyingKey {
    kid: String,
    x: String,
    decoding: DecodingKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// The key whose public half is `x` (base64url, no padding, 32 bytes), as a JWK carries it;
    /// `None` when `x` is not one. Its id is derived, not taken on trust.
    pub fn from_x(x: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(x).ok()?;
        let public: [u8; 32] = bytes.try_into().ok()?;
        ed25519_dalek::VerifyingKey::from_bytes(&public).ok()?;
        Some(Self::from_public(&public))
    }

    fn from_public(public: &[u8; 32]) -> Self {
        let digest = Sha256::digest(public);
        Self {
            kid: hex(&digest[..8]),
            x: URL_SAFE_NO_PAD.encode(public),
            decoding: DecodingKey::from_ed_der(public),
        }
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key, base64url without padding (a JWK's `x`).
    pub fn x(&self) -> &str {
        &self.x
    }
}

/// The key that signs tokens, derived from a secret. Never logged.
#[derive(Clone)]
pub struct SigningKeyPair {
    encoding: EncodingKey,
    public: VerifyingKey,
}

impl std::fmt::Debug for SigningKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyPair")
            .field("kid", &self.public.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKeyPair {
    /// The key pair derived from `secret`.
    pub fn derive(secret: &[u8]) -> Self {
        let seed: [u8; 32] = Sha256::new()
            .chain_update(DERIVATION_CONTEXT)
            .chain_update(secret)
            .finalize()
            .into();
        let public = SigningKey::from_bytes(&seed).verifying_key().to_bytes();
        let mut pkcs8 = Vec::with_capacity(48);
        pkcs8.extend_from_slice(&PKCS8_ED25519_PREFIX);
        pkcs8.extend_from_slice(&seed);
        Self {
            encoding: EncodingKey::from_ed_der(&pkcs8),
            public: VerifyingKey::from_public(&public),
        }
    }

    /// Its public half.
    pub fn public(&self) -> &VerifyingKey {
        &self.public
    }

    /// A token for user `id` issued by `issuer` at `now`, valid for `ttl`.
    pub fn sign(
        &self,
        id: &str,
        email: &str,
        issuer: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let claims = Claims {
            sub: id.to_owned(),
            email: email.to_owned(),
            iss: issuer.to_owned(),
            iat,
            exp: iat + ttl.as_secs(),
            nbf: None,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.public.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding)
    }
}

/// The `kid` a token's header names, if it parses.
pub fn kid_of(token: &str) -> Option<String> {
    jsonwebtoken::decode_header(token).ok()?.kid
}

/// The claims of `token` if it verifies with `key` and was issued by `issuer`, checked at `now`.
pub fn verify(
    token: &str,
    key: &VerifyingKey,
    issuer: &str,
    now: SystemTime,
) -> Result<Claims, TokenError> {
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[issuer]);
    validation.set_required_spec_claims(&["exp", "iss", "sub"]);
    validation.leeway = LEEWAY_SECS;
    // `nbf` is checked below with the same leeway as `iat`.
    validation.validate_nbf = false;
    let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation)
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn tokens_verify_with_the_public_key_alone() {
        let pair = SigningKeyPair::derive(b"0123456789abcdef0123456789abcdef");
        let again = SigningKeyPair::derive(b"0123456789abcdef0123456789abcdef");
        assert_eq!(
            pair.public().kid(),
            again.public().kid(),
            "derivation is stable"
        );
        let now = SystemTime::now();
        let token = pair
            .sign("u1", "a@b.c", "shippy.user", DAY, now)
            .expect("sign");
        assert_eq!(kid_of(&token).as_deref(), Some(pair.public().kid()));
        let public = VerifyingKey::from_x(pair.public().x()).expect("a JWK's x");
        assert_eq!(public.kid(), pair.public().kid());
        let claims = verify(&token, &public, "shippy.user", now).expect("valid");
        assert_eq!(
            (claims.sub.as_str(), claims.email.as_str()),
            ("u1", "a@b.c")
        );
    }

    #[test]
    fn other_keys_issuers_expired_and_future_tokens_are_refused() {
        let pair = SigningKeyPair::derive(b"0123456789abcdef0123456789abcdef");
        let other = SigningKeyPair::derive(b"fedcba9876543210fedcba9876543210");
        assert_ne!(pair.public().kid(), other.public().kid());
        let now = SystemTime::now();
        let token = pair.sign("u1", "e", "shippy.user", DAY, now).expect("sign");
        assert_eq!(
            verify(&token, other.public(), "shippy.user", now),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            verify(&token, pair.public(), "someone.else", now),
            Err(TokenError::Invalid)
        );
        let old = pair
            .sign("u1", "e", "shippy.user", Duration::from_secs(1), now - DAY)
            .expect("sign");
        assert_eq!(
            verify(&old, pair.public(), "shippy.user", now),
            Err(TokenError::Expired)
        );
        let future = pair
            .sign(
                "u1",
                "e",
                "shippy.user",
                DAY,
                now + Duration::from_secs(3_600),
            )
            .expect("sign");
        assert_eq!(
            verify(&future, pair.public(), "shippy.user", now),
            Err(TokenError::NotYetValid)
        );
        let nobody = pair.sign(" ", "e", "shippy.user", DAY, now).expect("sign");
        assert_eq!(
            verify(&nobody, pair.public(), "shippy.user", now),
            Err(TokenError::Invalid)
        );
        // A tampered payload, and an HS256 token made with the public key as its secret.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged_payload = URL_SAFE_NO_PAD.encode(
            br#"{"sub":"admin","email":"e","iss":"shippy.user","iat":1,"exp":99999999999}"#,
        );
        parts[1] = &forged_payload;
        assert_eq!(
            verify(&parts.join("."), pair.public(), "shippy.user", now),
            Err(TokenError::Invalid)
        );
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                sub: "admin".into(),
                email: "e".into(),
                iss: "shippy.user".into(),
                iat: 1,
                exp: 99_999_999_999,
                nbf: None,
            },
            &EncodingKey::from_secret(pair.public().x().as_bytes()),
        )
        .expect("encode");
        assert_eq!(
            verify(&hs, pair.public(), "shippy.user", now),
            Err(TokenError::Invalid)
        );
        assert!(VerifyingKey::from_x("not a key").is_none());
    }
}
