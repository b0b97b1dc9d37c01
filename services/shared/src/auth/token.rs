//! Tokens: JWTs signed with Ed25519 (`EdDSA`, RFC 8037), one implementation for the service that
//! signs them (user) and every service that verifies them.
//!
//! - **Keys** are derived from the configured secret (`auth.jwt_secret`): SHA-256 of a
//!   domain-separated secret is the Ed25519 seed. Deployments keep one random secret, as before,
//!   and only the user service holds it; every other service verifies with the public key alone.
//!   A key's id (`kid`) is the start of the SHA-256 of its public key.
//! - **Verification** accepts a token only when its header names `EdDSA` and no extension it
//!   would have to understand (`crit`), its signature verifies strictly with the key it names,
//!   its issuer and expiry check out, it names a user (`sub` not empty), and it was not issued
//!   (`iat`) or made valid (`nbf`) in the future beyond [`FUTURE_LEEWAY_SECS`].
//!
//! Why the JWS framing is written here rather than taken from a JWT crate: the services accept
//! exactly one algorithm, and the general crates (jsonwebtoken with its pure-Rust backend) link
//! RSA and NIST-curve code into every image for algorithms a shippy token can never carry, and
//! choose the algorithm from the token's header at run time. The framing is a few lines of
//! base64url and JSON; the cryptography stays in `ed25519-dalek` (`verify_strict`, which also
//! refuses malleable signatures and weak keys).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{Signature, Signer as _, SigningKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Clock skew tolerated on expiry.
const LEEWAY_SECS: u64 = 5;
/// Clock skew tolerated on `iat` and `nbf`: instances whose clocks differ by up to a minute still
/// accept each other's tokens.
pub const FUTURE_LEEWAY_SECS: u64 = 60;
/// Separates this use of the secret from any other.
const DERIVATION_CONTEXT: &[u8] = b"shippy token signing key v1\0";
/// The longest token looked at: far above any token shippy issues (about 400 bytes), so a hostile
/// header costs no decoding work.
const MAX_TOKEN_BYTES: usize = 4096;
/// The one algorithm tokens are signed with.
const ALGORITHM: &str = "EdDSA";

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

/// A compact JWS's JOSE header: what is issued, and what verification reads (here and in
/// [`super::oidc`]).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Header {
    pub(super) alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) typ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) kid: Option<String>,
    /// Extensions the verifier must understand (RFC 7515 §4.1.11): none are, so any is refused.
    #[serde(default, skip_serializing)]
    pub(super) crit: Option<serde_json::Value>,
}

/// A compact JWS split into its parts, each still encoded; `signed` is the header and payload
/// with their dot, the bytes the signature covers. Shared with [`super::oidc`].
pub(super) struct Parts<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
    pub(super) signed: &'a str,
}

impl<'a> Parts<'a> {
    /// The three parts of `token`, or `None` when it is longer than `max_bytes` (checked before
    /// any decoding, so a hostile token costs no work) or not three dot-separated parts.
    pub(super) fn split(token: &'a str, max_bytes: usize) -> Option<Self> {
        if token.len() > max_bytes {
            return None;
        }
        let (signed, signature) = token.rsplit_once('.')?;
        let (header, payload) = signed.split_once('.')?;
        (!payload.contains('.')).then_some(Self {
            header,
            payload,
            signature,
            signed,
        })
    }

    /// The decoded header, if it is base64url JSON.
    pub(super) fn header(&self) -> Option<Header> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(self.header).ok()?).ok()
    }

    /// The decoded signature bytes, if base64url.
    pub(super) fn signature(&self) -> Option<Vec<u8>> {
        URL_SAFE_NO_PAD.decode(self.signature).ok()
    }

    /// The decoded payload bytes, if base64url. Parse them only once the signature verified.
    pub(super) fn payload(&self) -> Option<Vec<u8>> {
        URL_SAFE_NO_PAD.decode(self.payload).ok()
    }
}

/// A public key that verifies tokens, with its id.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    kid: String,
    x: String,
    key: ed25519_dalek::VerifyingKey,
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
        Self::from_public(ed25519_dalek::VerifyingKey::from_bytes(&public).ok()?)
    }

    fn from_public(key: ed25519_dalek::VerifyingKey) -> Option<Self> {
        // A weak (small-order) key would verify forged signatures: never accept one.
        if key.is_weak() {
            return None;
        }
        let public = key.to_bytes();
        let digest = Sha256::digest(public);
        Some(Self {
            kid: hex(&digest[..8]),
            x: URL_SAFE_NO_PAD.encode(public),
            key,
        })
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
    signing: SigningKey,
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
        let signing = SigningKey::from_bytes(&seed);
        let public = VerifyingKey::from_public(signing.verifying_key())
            .expect("a key derived from a seed is never a small-order point");
        Self { signing, public }
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
    ) -> Result<String, serde_json::Error> {
        let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let claims = Claims {
            sub: id.to_owned(),
            email: email.to_owned(),
            iss: issuer.to_owned(),
            iat,
            exp: iat + ttl.as_secs(),
            nbf: None,
        };
        let header = Header {
            alg: ALGORITHM.to_owned(),
            typ: Some("JWT".to_owned()),
            kid: Some(self.public.kid.clone()),
            crit: None,
        };
        let mut token = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(serde_json::to_vec(&claims)?, &mut token);
        let signature = self.signing.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut token);
        Ok(token)
    }
}

/// The `kid` a token's header names, if it parses.
pub fn kid_of(token: &str) -> Option<String> {
    Parts::split(token, MAX_TOKEN_BYTES)?.header()?.kid
}

/// The claims of `token` if it verifies with `key` and was issued by `issuer`, checked at `now`.
pub fn verify(
    token: &str,
    key: &VerifyingKey,
    issuer: &str,
    now: SystemTime,
) -> Result<Claims, TokenError> {
    let payload = verified_payload(token, key)?;
    // Only a payload whose signature verified is parsed.
    let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Invalid)?;
    if claims.iss != issuer || claims.sub.trim().is_empty() {
        return Err(TokenError::Invalid);
    }
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    if claims.exp.saturating_add(LEEWAY_SECS) < now {
        return Err(TokenError::Expired);
    }
    let latest = now.saturating_add(FUTURE_LEEWAY_SECS);
    if claims.iat > latest || claims.nbf.is_some_and(|nbf| nbf > latest) {
        return Err(TokenError::NotYetValid);
    }
    Ok(claims)
}

/// The decoded payload of `token` if it is a compact JWS with an `EdDSA` header, no critical
/// extension and a signature that verifies strictly with `key`.
fn verified_payload(token: &str, key: &VerifyingKey) -> Result<Vec<u8>, TokenError> {
    let parts = Parts::split(token, MAX_TOKEN_BYTES).ok_or(TokenError::Invalid)?;
    let header = parts.header().ok_or(TokenError::Invalid)?;
    if header.alg != ALGORITHM || header.crit.is_some() {
        return Err(TokenError::Invalid);
    }
    let signature = parts
        .signature()
        .and_then(|bytes| Signature::from_slice(&bytes).ok())
        .ok_or(TokenError::Invalid)?;
    key.key
        .verify_strict(parts.signed.as_bytes(), &signature)
        .map_err(|_| TokenError::Invalid)?;
    parts.payload().ok_or(TokenError::Invalid)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn b64(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

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
        let header: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').next().expect("header"))
                .expect("base64url"),
        )
        .expect("JSON");
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(header["typ"], "JWT");
    }

    /// RFC 8037, appendix A.4: the framing and signature check agree with the standard's example.
    #[test]
    fn the_rfc_8037_example_verifies() {
        let key = VerifyingKey::from_x("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo").expect("key");
        let jws = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1P\
                   POt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
        assert_eq!(
            verified_payload(jws, &key).as_deref(),
            Ok(&b"Example of Ed25519 signing"[..])
        );
        let tampered = jws.replace("RXhhbXBsZSBvZi", "RXhhbXBsZSBvZj");
        assert_eq!(verified_payload(&tampered, &key), Err(TokenError::Invalid));
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
        assert!(VerifyingKey::from_x("not a key").is_none());
    }

    #[test]
    fn forged_and_malformed_tokens_are_refused() {
        let pair = SigningKeyPair::derive(b"0123456789abcdef0123456789abcdef");
        let now = SystemTime::now();
        let token = pair.sign("u1", "e", "shippy.user", DAY, now).expect("sign");
        let parts: Vec<&str> = token.split('.').collect();
        let refused = |token: &str| {
            assert_eq!(
                verify(token, pair.public(), "shippy.user", now),
                Err(TokenError::Invalid),
                "{token}"
            );
        };
        // A payload swapped under a valid signature.
        let admin =
            b64(r#"{"sub":"admin","email":"e","iss":"shippy.user","iat":1,"exp":99999999999}"#);
        refused(&[parts[0], &admin, parts[2]].join("."));
        // Another algorithm named in the header, with or without a signature: `none`, and HS256
        // "signed" with the public key as the secret (the classic confusion attack).
        for alg in [r#"{"alg":"none"}"#, r#"{"alg":"HS256","typ":"JWT"}"#] {
            refused(&[&b64(alg), parts[1], ""].join("."));
            refused(&[&b64(alg), parts[1], parts[2]].join("."));
        }
        // An extension the verifier would have to understand.
        let crit = b64(r#"{"alg":"EdDSA","crit":["exp"],"exp":1}"#);
        refused(&[&crit, parts[1], parts[2]].join("."));
        // Not three parts, not base64url, not JSON, oversized.
        refused(&parts[..2].join("."));
        refused(&format!("{token}.x"));
        refused(&token.replacen('.', ".!", 1));
        refused(&[&b64("not json"), parts[1], parts[2]].join("."));
        refused(&format!("{}{}", token, "A".repeat(MAX_TOKEN_BYTES)));
        refused("");
        assert_eq!(kid_of("a.b"), None);
    }
}
