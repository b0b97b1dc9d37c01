//! OpenID Connect ID tokens of an external provider, verified for the user service's
//! `ExchangeToken` (which then issues a shippy token to the user with the token's email).
//!
//! - **The provider** is found by discovery: `{issuer}/.well-known/openid-configuration`, whose
//!   `issuer` must equal the configured one exactly, names the key set (`jwks_uri`). Both are
//!   fetched lazily, on the first exchange, so the user service starts while the provider is down
//!   (that exchange then answers `UNAVAILABLE`). Every fetch is bounded: a timeout
//!   (`user.oidc.fetch_timeout_ms`), [`MAX_DOCUMENT_BYTES`], no redirects; and the URLs must be
//!   `https` except on loopback addresses (a provider run by tests or on the same host).
//! - **Keys** are cached by [`super::key_set`], the machinery the shippy token keys use too. A
//!   token naming a key id not in the cache makes the key set be fetched again, at most once per
//!   [`REFRESH_GAP`], so tokens with made-up key ids cannot make this service hammer the provider;
//!   once the set is [`KEYS_MAX_AGE`] old it is fetched again in the background (keys the provider
//!   withdrew stop working then) while the old one keeps answering, so no exchange waits for a
//!   slow provider unless its token names a key not seen yet. When a fetch fails, the keys in hand
//!   are kept: the provider's outage does not stop exchanges of tokens it signed before.
//! - **Signatures**: RS256 (`rsa`, keys of 2048 to 4096 bits), ES256 (`p256`) and EdDSA (Ed25519,
//!   `ed25519-dalek`, strict). The algorithm named by the token must be one of these and match
//!   the key's type and its `alg`; `none`, HMAC and everything else are refused before any key is
//!   looked at. Keys whose `use` is not `sig` (or whose `key_ops` lack `verify`) are ignored.
//!   The compact-JWS framing is [`super::token`]'s.
//! - **Claims** (OpenID Connect Core §3.1.3.7): `iss` equal to the configured issuer; `aud` the
//!   configured client id (and, with several audiences, `azp` too); `exp`, `iat` and `nbf` within
//!   `user.oidc.leeway_secs` of this clock; `sub` present; `email` present with
//!   `email_verified: true` (the string `"true"` too, as some providers send it).
//!
//! Errors ([`OidcError`]) are one sentence each, safe to send to clients; what went wrong with
//! the provider is logged here, never sent.

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, de::DeserializeOwned};
use url::Url;

use super::{
    key_set::{KeySet, Policy, Publisher},
    token::{Header, Parts},
};
use crate::config::services::OidcSettings;

/// The longest ID token looked at (checked before any decoding).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// The largest discovery document or key set read from the provider.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// The least time between two fetches of the key set caused by unknown key ids.
pub const REFRESH_GAP: Duration = Duration::from_secs(30);
/// The age at which the key set is fetched again (keys the provider withdrew are dropped then).
pub const KEYS_MAX_AGE: Duration = Duration::from_secs(3_600);
/// The least time between two attempts to fetch a key set while none could be had: the provider
/// is down, and every exchange waiting for it would otherwise pay a timeout.
const RETRY_GAP: Duration = Duration::from_secs(2);
/// Keys read from one key set; the rest are ignored.
const MAX_KEYS: usize = 64;
/// The shortest RSA key accepted (RFC 7518 §3.3).
const MIN_RSA_BITS: usize = 2048;
/// The largest RSA modulus used, in bits.
const MAX_RSA_BITS: usize = 4096;

/// Why an ID token was not exchanged. Messages are safe to send to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    /// `user.oidc.issuer` is not set.
    #[error("no OpenID Connect provider is configured (user.oidc.issuer)")]
    NotConfigured,
    /// Not a compact JWS of at most [`MAX_TOKEN_BYTES`] with the claims of an ID token.
    #[error("the token is not an OpenID Connect ID token (a signed JWT of at most 8 KiB)")]
    Malformed,
    /// Signed with an algorithm that is not accepted (`none`, HMAC, ...).
    #[error("the token's signing algorithm is not accepted; use RS256, ES256 or EdDSA")]
    Algorithm,
    /// Names a key the provider does not publish.
    #[error("the token is signed with a key the OpenID Connect provider does not publish")]
    UnknownKey,
    /// The signature does not verify: forged or altered.
    #[error("the token's signature does not verify")]
    BadSignature,
    /// `iss` is not the configured issuer.
    #[error("the token was issued by another OpenID Connect provider")]
    WrongIssuer,
    /// `aud` (or `azp`) is not the configured client id.
    #[error("the token was issued for another client, not for shippy")]
    WrongAudience,
    /// Past `exp`.
    #[error("the ID token has expired; sign in with the provider again")]
    Expired,
    /// `iat` or `nbf` in the future.
    #[error("the ID token is not valid yet; check the clocks")]
    NotYetValid,
    /// No `email` claim.
    #[error("the ID token carries no email address; sign in with the `email` scope")]
    NoEmail,
    /// `email_verified` is not true.
    #[error("the provider has not verified the email address of this token")]
    UnverifiedEmail,
    /// The provider's discovery document or key set could not be had (the cause is logged).
    #[error("the OpenID Connect provider at {issuer} does not answer")]
    Unavailable {
        /// The configured issuer.
        issuer: String,
    },
}

impl OidcError {
    /// A short label for metrics (`shippy_auth_exchanges_total{outcome}`).
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::NotConfigured => "not_configured",
            Self::Malformed => "malformed",
            Self::Algorithm => "algorithm",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::NoEmail => "no_email",
            Self::UnverifiedEmail => "unverified_email",
            Self::Unavailable { .. } => "unavailable",
        }
    }
}

/// Why the service must not start with the configured `user.oidc.*`.
#[derive(Debug, thiserror::Error)]
pub enum OidcConfigError {
    /// The issuer is not an absolute URL without query and fragment.
    #[error("user.oidc.issuer {0:?} is not an http(s) URL without query or fragment")]
    NotUrl(String),
    /// Plain http on a host that is not a loopback address.
    #[error(
        "user.oidc.issuer {0:?} must use https (plain http only on a loopback address such as \
         127.0.0.1 or localhost)"
    )]
    NotHttps(String),
    /// An issuer without an audience.
    #[error("user.oidc.audience must be set to shippy's client id at the provider")]
    NoAudience,
}

/// Who an ID token that verified names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The provider's subject identifier (`sub`).
    pub subject: String,
    /// The verified email address, as the provider wrote it.
    pub email: String,
    /// The token's expiry (`exp`, seconds since the epoch).
    pub expires_at: u64,
}

/// Verifies ID tokens of one provider for one client. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct OidcVerifier {
    expected: Expected,
    keys: Arc<KeySet<Provider>>,
}

impl OidcVerifier {
    /// The verifier `settings` configure, `None` when `user.oidc.issuer` is empty (exchange off),
    /// or why the settings are unusable. Contacts nobody: the provider is asked on first use.
    pub fn new(settings: &OidcSettings) -> Result<Option<Self>, OidcConfigError> {
        let issuer = settings.issuer.trim();
        if issuer.is_empty() {
            return Ok(None);
        }
        let url = Url::parse(issuer)
            .ok()
            .filter(|url| {
                matches!(url.scheme(), "https" | "http")
                    && url.host_str().is_some()
                    && url.query().is_none()
                    && url.fragment().is_none()
            })
            .ok_or_else(|| OidcConfigError::NotUrl(issuer.to_owned()))?;
        if !secure_enough(&url) {
            return Err(OidcConfigError::NotHttps(issuer.to_owned()));
        }
        let audience = settings.audience.trim();
        if audience.is_empty() {
            return Err(OidcConfigError::NoAudience);
        }
        // OpenID Connect Discovery §4: a trailing `/` of the issuer is removed before appending.
        let discovery = Url::parse(&format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        ))
        .map_err(|_| OidcConfigError::NotUrl(issuer.to_owned()))?;
        let timeout = Duration::from_millis(settings.fetch_timeout_ms.max(1));
        Ok(Some(Self {
            expected: Expected {
                issuer: issuer.to_owned(),
                audience: audience.to_owned(),
                leeway: settings.leeway_secs,
            },
            keys: Arc::new(KeySet::new(
                Provider {
                    issuer: issuer.to_owned(),
                    discovery,
                    timeout,
                },
                KEY_POLICY,
            )),
        }))
    }

    /// The configured issuer.
    pub fn issuer(&self) -> &str {
        &self.expected.issuer
    }

    /// Who `token` names, if it is an ID token of the provider for this client that verifies now.
    pub async fn verify(&self, token: &str) -> Result<Identity, OidcError> {
        self.verify_at(token, SystemTime::now(), Instant::now())
            .await
    }

    async fn verify_at(
        &self,
        token: &str,
        now: SystemTime,
        instant: Instant,
    ) -> Result<Identity, OidcError> {
        let token = token.trim();
        let parsed = Parsed::parse(token)?;
        // Refused before any key is fetched: a token of another provider (or one claiming to be)
        // costs no request to ours. The claims decide nothing more until the signature verified.
        if parsed.claims.iss.as_deref() != Some(self.expected.issuer.as_str()) {
            return Err(OidcError::WrongIssuer);
        }
        let key = key_for(
            &self.keys,
            parsed.header.kid.as_deref(),
            parsed.alg,
            instant,
            &self.expected.issuer,
        )
        .await?;
        key.verify(parsed.signed.as_bytes(), &parsed.signature)?;
        self.expected.check(parsed.claims, seconds(now))
    }
}

/// The shippy side of the contract: which issuer and client, and how much clock skew.
#[derive(Debug)]
struct Expected {
    issuer: String,
    audience: String,
    leeway: u64,
}

impl Expected {
    /// The identity in `claims` (of a token whose signature verified), checked at `now`.
    fn check(&self, claims: IdClaims, now: u64) -> Result<Identity, OidcError> {
        if claims.iss.as_deref() != Some(self.issuer.as_str()) {
            return Err(OidcError::WrongIssuer);
        }
        let audiences = match &claims.aud {
            Some(Audience::One(one)) => std::slice::from_ref(one),
            Some(Audience::Many(many)) => many.as_slice(),
            None => &[],
        };
        let for_us = audiences.contains(&self.audience);
        // With several audiences the authorized party must be us (Core §3.1.3.7, 4–5), and an
        // `azp` naming another client means the token was issued to that client.
        let azp_ok = match &claims.azp {
            Some(azp) => *azp == self.audience,
            None => audiences.len() == 1,
        };
        if !for_us || !azp_ok {
            return Err(OidcError::WrongAudience);
        }
        let (Some(exp), Some(iat)) = (claims.exp, claims.iat) else {
            return Err(OidcError::Malformed);
        };
        if date(exp).saturating_add(self.leeway) < now {
            return Err(OidcError::Expired);
        }
        let latest = now.saturating_add(self.leeway);
        if date(iat) > latest || claims.nbf.is_some_and(|nbf| date(nbf) > latest) {
            return Err(OidcError::NotYetValid);
        }
        let subject = claims
            .sub
            .filter(|sub| !sub.trim().is_empty())
            .ok_or(OidcError::Malformed)?;
        let email = claims
            .email
            .filter(|email| !email.trim().is_empty())
            .ok_or(OidcError::NoEmail)?;
        let verified = match claims.email_verified {
            Some(Verified::Bool(verified)) => verified,
            Some(Verified::Text(text)) => text.eq_ignore_ascii_case("true"),
            None => false,
        };
        if !verified {
            return Err(OidcError::UnverifiedEmail);
        }
        Ok(Identity {
            subject,
            email,
            expires_at: date(exp),
        })
    }
}

/// The claims of an ID token that are read; all optional here so that a missing one gets its own
/// answer rather than "malformed".
#[derive(Debug, Default, Deserialize)]
struct IdClaims {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    iat: Option<f64>,
    #[serde(default)]
    nbf: Option<f64>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<Verified>,
}

/// `aud`: one audience or several (RFC 7519 §4.1.3).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// `email_verified`: a boolean, or a string from providers that send one.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Verified {
    Bool(bool),
    Text(String),
}

/// A NumericDate (seconds, possibly fractional) as whole seconds; 0 when negative or not finite.
fn date(value: f64) -> u64 {
    if value.is_finite() && value > 0.0 {
        // Truncation is meant: whole seconds, and any date before the year 2^53 s fits.
        value as u64
    } else {
        0
    }
}

fn seconds(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// An ID token taken apart: its header, accepted algorithm, claims (not yet trusted) and
/// signature.
struct Parsed<'a> {
    header: Header,
    alg: Alg,
    claims: IdClaims,
    signed: &'a str,
    signature: Vec<u8>,
}

impl<'a> Parsed<'a> {
    fn parse(token: &'a str) -> Result<Self, OidcError> {
        let parts = Parts::split(token, MAX_TOKEN_BYTES).ok_or(OidcError::Malformed)?;
        let header = parts.header().ok_or(OidcError::Malformed)?;
        let alg = Alg::named(&header.alg).ok_or(OidcError::Algorithm)?;
        // An extension this verifier would have to understand, or a token that says it is not an
        // ID token (an access token, `at+jwt`, RFC 9068).
        let typ_ok = header.typ.as_deref().is_none_or(|typ| {
            let typ = typ.strip_prefix("application/").unwrap_or(typ);
            typ.eq_ignore_ascii_case("JWT")
        });
        if header.crit.is_some() || !typ_ok {
            return Err(OidcError::Malformed);
        }
        let claims = parts
            .payload()
            .and_then(|payload| serde_json::from_slice(&payload).ok())
            .ok_or(OidcError::Malformed)?;
        let signature = parts.signature().ok_or(OidcError::Malformed)?;
        Ok(Self {
            header,
            alg,
            claims,
            signed: parts.signed,
            signature,
        })
    }
}

/// The accepted signature algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alg {
    Rs256,
    Es256,
    EdDsa,
}

impl Alg {
    /// The algorithm a JOSE `alg` names, if accepted. Everything else, `none` and the HMAC family
    /// (whose "secret" would be a public key) above all, is refused.
    fn named(alg: &str) -> Option<Self> {
        match alg {
            "RS256" => Some(Self::Rs256),
            "ES256" => Some(Self::Es256),
            "EdDSA" => Some(Self::EdDsa),
            _ => None,
        }
    }
}

/// A public key of the provider's key set.
#[derive(PartialEq, Eq)]
struct Key {
    kid: Option<String>,
    public: PublicKey,
}

/// RSA and P-256 keys are verified with `ring`, which the binary already links for TLS
/// (rustls verifies certificates with the same code): no second RSA or ECDSA implementation.
#[derive(PartialEq, Eq)]
enum PublicKey {
    /// Modulus and exponent, big-endian, without leading zeros.
    Rs256 {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// The uncompressed point, `04 || x || y`.
    Es256(Vec<u8>),
    EdDsa(ed25519_dalek::VerifyingKey),
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg())
            .finish()
    }
}

impl Key {
    fn alg(&self) -> Alg {
        match self.public {
            PublicKey::Rs256 { .. } => Alg::Rs256,
            PublicKey::Es256(_) => Alg::Es256,
            PublicKey::EdDsa(_) => Alg::EdDsa,
        }
    }

    /// The key a JWK describes, or `None` when it is not one this verifier uses: another type or
    /// curve, an algorithm other than the one its type implies, not for signatures, or too weak.
    fn from_jwk(jwk: &Jwk) -> Option<Self> {
        if jwk.use_.as_deref().is_some_and(|use_| use_ != "sig")
            || jwk
                .key_ops
                .as_ref()
                .is_some_and(|ops| !ops.iter().any(|op| op == "verify"))
        {
            return None;
        }
        let bytes = |field: &Option<String>| URL_SAFE_NO_PAD.decode(field.as_deref()?).ok();
        let public = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
            ("RSA", _) => {
                let strip = |bytes: Vec<u8>| {
                    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
                    bytes[first..].to_vec()
                };
                let (n, e) = (strip(bytes(&jwk.n)?), strip(bytes(&jwk.e)?));
                // 2048 to 4096 bits (the upper bound bounds the work per verification); an
                // exponent of at most 33 bits, odd and at least 3 (what `ring` accepts).
                if !(MIN_RSA_BITS / 8..=MAX_RSA_BITS / 8).contains(&n.len())
                    || e.is_empty()
                    || e.len() > 5
                {
                    return None;
                }
                PublicKey::Rs256 { n, e }
            }
            ("EC", Some("P-256")) => {
                let (x, y) = (bytes(&jwk.x)?, bytes(&jwk.y)?);
                if x.len() != 32 || y.len() != 32 {
                    return None;
                }
                // Whether the point is on the curve is checked by every verification.
                PublicKey::Es256([&[0x04][..], &x, &y].concat())
            }
            ("OKP", Some("Ed25519")) => {
                let x: [u8; 32] = bytes(&jwk.x)?.try_into().ok()?;
                let key = ed25519_dalek::VerifyingKey::from_bytes(&x).ok()?;
                // A small-order key would verify forged signatures.
                if key.is_weak() {
                    return None;
                }
                PublicKey::EdDsa(key)
            }
            _ => return None,
        };
        let key = Self {
            kid: jwk.kid.clone(),
            public,
        };
        // A key restricted to another algorithm (RS384, PS256, ...) is not used for ours.
        if jwk
            .alg
            .as_deref()
            .is_some_and(|alg| Alg::named(alg) != Some(key.alg()))
        {
            return None;
        }
        Some(key)
    }

    /// Whether `signature` over `signed` verifies with this key.
    fn verify(&self, signed: &[u8], signature: &[u8]) -> Result<(), OidcError> {
        use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
        let verified = match &self.public {
            // Exactly the modulus' length (RFC 7518 §3.3), not a shorter or padded form; `ring`
            // checks that too, and the PKCS #1 v1.5 padding and SHA-256 digest info.
            PublicKey::Rs256 { n, e } => {
                signature.len() == n.len()
                    && RsaPublicKeyComponents { n, e }
                        .verify(&signature::RSA_PKCS1_2048_8192_SHA256, signed, signature)
                        .is_ok()
            }
            // JWS carries `r || s` (64 bytes), the "fixed" encoding.
            PublicKey::Es256(point) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(signed, signature)
                    .is_ok()
            }
            PublicKey::EdDsa(key) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|signature| key.verify_strict(signed, &signature).is_ok()),
        };
        verified.then_some(()).ok_or(OidcError::BadSignature)
    }
}

/// A JWK as a key set carries it (RFC 7517 §4, RFC 7518 §6); only what is read.
#[derive(Debug, Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    key_ops: Option<Vec<String>>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

/// The usable keys of a JWK Set document; one odd key does not spoil the others.
fn keys_of(set: &serde_json::Value) -> Vec<Key> {
    set.get("keys")
        .and_then(serde_json::Value::as_array)
        .map(|keys| {
            keys.iter()
                .take(MAX_KEYS)
                .filter_map(|jwk| Key::from_jwk(&Jwk::deserialize(jwk).ok()?))
                .collect()
        })
        .unwrap_or_default()
}

/// When the provider's key set is fetched again (see the module doc).
const KEY_POLICY: Policy = Policy {
    max_age: KEYS_MAX_AGE,
    unknown_gap: REFRESH_GAP,
    failure_gap: RETRY_GAP,
};

/// The key for a token of `issuer` naming `kid` and `alg`: from the set in hand, or from a set
/// fetched again when `kid` is not in it (at most once per [`REFRESH_GAP`]).
async fn key_for<P: Publisher<Set = Vec<Arc<Key>>>>(
    keys: &Arc<KeySet<P>>,
    kid: Option<&str>,
    alg: Alg,
    now: Instant,
    issuer: &str,
) -> Result<Arc<Key>, OidcError> {
    let unavailable = |_| OidcError::Unavailable {
        issuer: issuer.to_owned(),
    };
    match find(&keys.get(now).await.map_err(unavailable)?.set, kid, alg) {
        Found::Key(key) => return Ok(key),
        Found::OtherAlgorithm => return Err(OidcError::Algorithm),
        Found::Nothing => {}
    }
    // A key id not seen yet: the provider may have rotated its keys. Or the token is forged:
    // either way, ask the provider at most once per REFRESH_GAP.
    match find(&keys.refetch(now).await.map_err(unavailable)?.set, kid, alg) {
        Found::Key(key) => Ok(key),
        Found::OtherAlgorithm => Err(OidcError::Algorithm),
        Found::Nothing => Err(OidcError::UnknownKey),
    }
}

/// The key for `kid` (or, for a token naming none, the one key of its algorithm).
fn find(keys: &[Arc<Key>], kid: Option<&str>, alg: Alg) -> Found {
    let named: Vec<&Arc<Key>> = match kid {
        Some(kid) => keys
            .iter()
            .filter(|key| key.kid.as_deref() == Some(kid))
            .collect(),
        None => keys.iter().filter(|key| key.alg() == alg).collect(),
    };
    match named.iter().find(|key| key.alg() == alg) {
        Some(key) if kid.is_some() || named.len() == 1 => Found::Key(Arc::clone(key)),
        Some(_) => Found::Nothing,
        None if named.is_empty() => Found::Nothing,
        None => Found::OtherAlgorithm,
    }
}

enum Found {
    Key(Arc<Key>),
    /// The named key exists but is for another algorithm than the token names.
    OtherAlgorithm,
    Nothing,
}

/// https, or plain http on a loopback address.
fn secure_enough(url: &Url) -> bool {
    if url.scheme() == "https" {
        return true;
    }
    let host = url.host_str().unwrap_or_default();
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    url.scheme() == "http"
        && (host.eq_ignore_ascii_case("localhost")
            || ip.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()))
}

/// Why the provider's documents could not be had: logged, never sent to clients.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("{0}")]
    Get(#[from] super::fetch::GetError),
    #[error("{url} sent no JSON document of the expected shape: {source}")]
    Json { url: Url, source: serde_json::Error },
    #[error("the discovery document names issuer {found:?}, not the configured {expected:?}")]
    IssuerMismatch { found: String, expected: String },
    #[error("the discovery document's jwks_uri {0:?} is not an https URL")]
    InsecureKeys(String),
}

/// What discovery tells: only the fields used.
#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

/// The provider's endpoints, reached over bounded requests.
#[derive(Debug)]
struct Provider {
    issuer: String,
    discovery: Url,
    /// The deadline of one fetch.
    timeout: Duration,
}

impl Publisher for Provider {
    type Set = Vec<Arc<Key>>;

    async fn fetch(&self) -> Option<Vec<Arc<Key>>> {
        let issuer = &self.issuer;
        match self.fetch_keys().await {
            Ok(keys) => {
                tracing::info!(
                    %issuer,
                    keys = ?keys.iter().map(|k| (k.kid.as_deref(), k.alg())).collect::<Vec<_>>(),
                    "OpenID Connect provider's keys fetched"
                );
                Some(keys.into_iter().map(Arc::new).collect())
            }
            Err(error) => {
                tracing::warn!(
                    %issuer,
                    %error,
                    "OpenID Connect provider's keys could not be fetched; the keys in hand, if any, are kept"
                );
                None
            }
        }
    }
}

impl Provider {
    /// Discovery, then the key set it names. Discovery is asked every time (key fetches are rare:
    /// at start, hourly, on a new key id), so a moved `jwks_uri` is followed.
    async fn fetch_keys(&self) -> Result<Vec<Key>, FetchError> {
        let discovery: Discovery = self.json(self.discovery.clone()).await?;
        if discovery.issuer != self.issuer {
            return Err(FetchError::IssuerMismatch {
                found: discovery.issuer,
                expected: self.issuer.clone(),
            });
        }
        let jwks = Url::parse(&discovery.jwks_uri)
            .ok()
            .filter(secure_enough)
            .ok_or_else(|| FetchError::InsecureKeys(discovery.jwks_uri.clone()))?;
        let set: serde_json::Value = self.json(jwks).await?;
        Ok(keys_of(&set))
    }

    /// The JSON document at `url`, read up to [`MAX_DOCUMENT_BYTES`].
    async fn json<T: DeserializeOwned>(&self, url: Url) -> Result<T, FetchError> {
        let body = super::fetch::get(&url, MAX_DOCUMENT_BYTES, self.timeout).await?;
        serde_json::from_slice(&body).map_err(|source| FetchError::Json { url, source })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use ed25519_dalek::{Signer as _, SigningKey};

    use super::*;

    const ISSUER: &str = "https://id.example.com";
    const CLIENT: &str = "shippy";

    fn b64(bytes: impl AsRef<[u8]>) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn expected() -> Expected {
        Expected {
            issuer: ISSUER.into(),
            audience: CLIENT.into(),
            leeway: 30,
        }
    }

    fn claims(json: serde_json::Value) -> IdClaims {
        serde_json::from_value(json).expect("claims")
    }

    const NOW: u64 = 1_800_000_000;

    fn good() -> serde_json::Value {
        serde_json::json!({
            "iss": ISSUER, "sub": "abc", "aud": CLIENT, "iat": NOW - 10, "exp": NOW + 600,
            "email": "Ewan@Example.com", "email_verified": true,
        })
    }

    fn with(changes: serde_json::Value) -> IdClaims {
        let mut json = good();
        for (key, value) in changes.as_object().expect("object") {
            if value.is_null() {
                json.as_object_mut().expect("object").remove(key);
            } else {
                json[key] = value.clone();
            }
        }
        claims(json)
    }

    #[test]
    fn the_claims_of_an_id_token_for_shippy_are_accepted() {
        let identity = expected().check(claims(good()), NOW).expect("valid");
        assert_eq!(
            identity,
            Identity {
                subject: "abc".into(),
                email: "Ewan@Example.com".into(),
                expires_at: NOW + 600,
            }
        );
        // Several audiences with shippy as the authorized party; a string "true"; fractional
        // dates; a token just past expiry but within the leeway.
        let accepted = [
            serde_json::json!({"aud": ["other", CLIENT], "azp": CLIENT}),
            serde_json::json!({"email_verified": "true"}),
            serde_json::json!({"exp": (NOW as f64) + 0.5, "iat": (NOW as f64) - 0.5}),
            serde_json::json!({"exp": NOW - 20, "nbf": NOW + 20}),
        ];
        for changes in accepted {
            assert!(
                expected().check(with(changes.clone()), NOW).is_ok(),
                "{changes}"
            );
        }
    }

    #[test]
    fn each_wrong_claim_gets_its_own_answer() {
        let cases = [
            (
                serde_json::json!({"iss": "https://evil.example.com"}),
                OidcError::WrongIssuer,
            ),
            (serde_json::json!({"iss": null}), OidcError::WrongIssuer),
            (
                serde_json::json!({"iss": format!("{ISSUER}/")}),
                OidcError::WrongIssuer,
            ),
            (
                serde_json::json!({"aud": "someone-else"}),
                OidcError::WrongAudience,
            ),
            (serde_json::json!({"aud": null}), OidcError::WrongAudience),
            (
                serde_json::json!({"aud": [CLIENT, "other"]}),
                OidcError::WrongAudience,
            ),
            (
                serde_json::json!({"aud": [CLIENT, "other"], "azp": "other"}),
                OidcError::WrongAudience,
            ),
            (
                serde_json::json!({"azp": "someone-else"}),
                OidcError::WrongAudience,
            ),
            (serde_json::json!({"exp": NOW - 31}), OidcError::Expired),
            (serde_json::json!({"exp": null}), OidcError::Malformed),
            (serde_json::json!({"iat": null}), OidcError::Malformed),
            (serde_json::json!({"iat": NOW + 31}), OidcError::NotYetValid),
            (serde_json::json!({"nbf": NOW + 31}), OidcError::NotYetValid),
            (serde_json::json!({"sub": " "}), OidcError::Malformed),
            (serde_json::json!({"email": null}), OidcError::NoEmail),
            (
                serde_json::json!({"email_verified": false}),
                OidcError::UnverifiedEmail,
            ),
            (
                serde_json::json!({"email_verified": null}),
                OidcError::UnverifiedEmail,
            ),
            (
                serde_json::json!({"email_verified": "yes"}),
                OidcError::UnverifiedEmail,
            ),
        ];
        for (changes, wanted) in cases {
            assert_eq!(
                expected().check(with(changes.clone()), NOW),
                Err(wanted),
                "{changes}"
            );
        }
    }

    #[test]
    fn none_hmac_and_unknown_algorithms_are_refused_before_any_key_is_looked_at() {
        let payload = b64(good().to_string());
        for alg in [
            "none", "HS256", "HS512", "PS256", "RS384", "ES384", "rs256", "",
        ] {
            let header = b64(format!(r#"{{"alg":"{alg}","kid":"k1"}}"#));
            for signature in ["", "c2ln"] {
                let token = format!("{header}.{payload}.{signature}");
                assert_eq!(
                    Parsed::parse(&token).err(),
                    Some(OidcError::Algorithm),
                    "{alg}"
                );
            }
        }
        let malformed = [
            String::new(),
            "a.b".into(),
            format!("{}.{payload}.x.y", b64(r#"{"alg":"RS256"}"#)),
            format!(
                "{}.{payload}.c2ln",
                b64(r#"{"alg":"RS256","crit":["b64"]}"#)
            ),
            format!(
                "{}.{payload}.c2ln",
                b64(r#"{"alg":"RS256","typ":"at+jwt"}"#)
            ),
            format!("{}.bm90IGpzb24.c2ln", b64(r#"{"alg":"RS256"}"#)),
            format!("{}.{payload}.!!", b64(r#"{"alg":"RS256"}"#)),
            format!(
                "{}.{payload}.{}",
                b64(r#"{"alg":"RS256"}"#),
                "A".repeat(MAX_TOKEN_BYTES)
            ),
        ];
        for token in malformed {
            assert_eq!(
                Parsed::parse(&token).err(),
                Some(OidcError::Malformed),
                "{token:.80}"
            );
        }
        let typed = format!("{}.{payload}.c2ln", b64(r#"{"alg":"RS256","typ":"JWT"}"#));
        assert!(Parsed::parse(&typed).is_ok());
    }

    /// RFC 7515, appendix A.2: the RS256 example verifies with the JWK of A.2.1, and not once
    /// altered.
    #[test]
    fn the_rfc_7515_rs256_example_verifies() {
        let jwk = serde_json::json!({
            "kty": "RSA",
            "n": "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJ\
                  PMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0\
                  LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uD\
                  Zlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2\
                  PAcDTW9gb54h4FRWyuXpoQ",
            "e": "AQAB",
        });
        let jws = "eyJhbGciOiJSUzI1NiJ9\
                   .eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ\
                   .cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5\
                   jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb\
                   1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QO\
                   YEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";
        let keys = keys_of(&serde_json::json!({ "keys": [jwk] }));
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].alg(), Alg::Rs256);
        let parsed = Parsed::parse(jws).expect("parses");
        assert_eq!(parsed.claims.iss.as_deref(), Some("joe"));
        assert_eq!(
            keys[0].verify(parsed.signed.as_bytes(), &parsed.signature),
            Ok(())
        );
        // The payload altered ("joe" becomes "eve") under the original signature.
        let (header, rest) = jws.split_once('.').expect("header");
        let (payload, signature) = rest.split_once('.').expect("payload");
        let altered = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).expect("base64url"))
            .expect("UTF-8")
            .replace("joe", "eve");
        let tampered = format!("{header}.{}.{signature}", b64(altered));
        let parsed = Parsed::parse(&tampered).expect("parses");
        assert_eq!(parsed.claims.iss.as_deref(), Some("eve"));
        assert_eq!(
            keys[0].verify(parsed.signed.as_bytes(), &parsed.signature),
            Err(OidcError::BadSignature)
        );
        // A key restricted to another algorithm, or to encryption, is not used.
        for (field, value) in [("alg", "PS256"), ("use", "enc")] {
            let mut restricted = jwk.clone();
            restricted[field] = value.into();
            assert!(keys_of(&serde_json::json!({ "keys": [restricted] })).is_empty());
        }
    }

    /// RFC 7515, appendix A.3: the ES256 example verifies with the JWK of A.3.1.
    #[test]
    fn the_rfc_7515_es256_example_verifies() {
        let keys = keys_of(&serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
        }]}));
        assert_eq!(keys.len(), 1);
        let jws = "eyJhbGciOiJFUzI1NiJ9\
                   .eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ\
                   .DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
        let parsed = Parsed::parse(jws).expect("parses");
        assert_eq!(parsed.alg, Alg::Es256);
        assert_eq!(
            keys[0].verify(parsed.signed.as_bytes(), &parsed.signature),
            Ok(())
        );
        let mut signature = parsed.signature.clone();
        signature[10] ^= 1;
        assert_eq!(
            keys[0].verify(parsed.signed.as_bytes(), &signature),
            Err(OidcError::BadSignature)
        );
    }

    /// An Ed25519 key as a provider publishes it, and a token signed with it.
    fn ed25519(seed: u8, kid: &str) -> (serde_json::Value, SigningKey) {
        let signing = SigningKey::from_bytes(&[seed; 32]);
        let jwk = serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig", "alg": "EdDSA",
            "x": b64(signing.verifying_key().to_bytes()),
        });
        (jwk, signing)
    }

    fn sign(signing: &SigningKey, kid: &str, claims: &serde_json::Value) -> String {
        let header = b64(format!(r#"{{"alg":"EdDSA","typ":"JWT","kid":"{kid}"}}"#));
        let signed = format!("{header}.{}", b64(claims.to_string()));
        let signature = b64(signing.sign(signed.as_bytes()).to_bytes());
        format!("{signed}.{signature}")
    }

    #[test]
    fn eddsa_tokens_verify_and_keys_of_another_algorithm_are_not_used() {
        let (jwk, signing) = ed25519(7, "k1");
        let keys = keys_of(&serde_json::json!({ "keys": [jwk] }));
        let token = sign(&signing, "k1", &good());
        let parsed = Parsed::parse(&token).expect("parses");
        assert_eq!(
            keys[0].verify(parsed.signed.as_bytes(), &parsed.signature),
            Ok(())
        );
        let keys: Vec<Arc<Key>> = keys.into_iter().map(Arc::new).collect();
        assert!(matches!(find(&keys, Some("k1"), Alg::EdDsa), Found::Key(_)));
        assert!(matches!(find(&keys, None, Alg::EdDsa), Found::Key(_)));
        assert!(matches!(
            find(&keys, Some("k1"), Alg::Rs256),
            Found::OtherAlgorithm
        ));
        assert!(matches!(
            find(&keys, Some("k2"), Alg::EdDsa),
            Found::Nothing
        ));
    }

    /// A provider publishing `old`, then also `new` once `rotated`; nothing while `down`.
    struct FakeProvider {
        fetches: AtomicUsize,
        rotated: AtomicBool,
        down: AtomicBool,
        old: serde_json::Value,
        new: serde_json::Value,
    }

    impl Publisher for Arc<FakeProvider> {
        type Set = Vec<Arc<Key>>;

        async fn fetch(&self) -> Option<Vec<Arc<Key>>> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return None;
            }
            let mut set = vec![self.old.clone()];
            if self.rotated.load(Ordering::SeqCst) {
                set.push(self.new.clone());
            }
            let keys = keys_of(&serde_json::json!({ "keys": set }));
            Some(keys.into_iter().map(Arc::new).collect())
        }
    }

    fn provider() -> (Arc<FakeProvider>, Arc<KeySet<Arc<FakeProvider>>>) {
        let provider = Arc::new(FakeProvider {
            fetches: AtomicUsize::new(0),
            rotated: AtomicBool::new(false),
            down: AtomicBool::new(false),
            old: ed25519(1, "old").0,
            new: ed25519(2, "new").0,
        });
        let keys = Arc::new(KeySet::new(Arc::clone(&provider), KEY_POLICY));
        (provider, keys)
    }

    #[tokio::test]
    async fn unknown_key_ids_refetch_the_key_set_at_most_once_per_gap() {
        let (provider, keys) = provider();
        let fetches = || provider.fetches.load(Ordering::SeqCst);
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let key = key_for(&keys, Some("old"), Alg::EdDsa, at(0), ISSUER)
            .await
            .expect("first use fetches");
        assert_eq!(key.kid.as_deref(), Some("old"));
        assert_eq!(fetches(), 1);
        // Forged key ids right after a fetch, and a while later: one refetch per gap, no more.
        for (secs, fetched) in [(1, 1), (10, 1), (31, 2), (40, 2), (60, 2), (61, 3)] {
            let refused = key_for(&keys, Some("forged"), Alg::EdDsa, at(secs), ISSUER).await;
            assert_eq!(refused.err(), Some(OidcError::UnknownKey), "at {secs} s");
            assert_eq!(fetches(), fetched, "at {secs} s");
        }
        // Known keys cost nothing; a rotation is picked up on the next allowed refetch.
        provider.rotated.store(true, Ordering::SeqCst);
        assert!(
            key_for(&keys, Some("old"), Alg::EdDsa, at(62), ISSUER)
                .await
                .is_ok()
        );
        let key = key_for(&keys, Some("new"), Alg::EdDsa, at(92), ISSUER)
            .await
            .expect("rotated key");
        assert_eq!(key.kid.as_deref(), Some("new"));
        assert_eq!(fetches(), 4);
        // An old key set answers, and is fetched again behind the answer.
        let later = at(92 + 3_600);
        assert!(
            key_for(&keys, Some("new"), Alg::EdDsa, later, ISSUER)
                .await
                .is_ok()
        );
        keys.settled().await;
        assert_eq!(fetches(), 5);
    }

    #[tokio::test]
    async fn a_provider_that_does_not_answer_is_unavailable_and_asked_again_later() {
        let (provider, keys) = provider();
        let fetches = || provider.fetches.load(Ordering::SeqCst);
        provider.down.store(true, Ordering::SeqCst);
        let t0 = Instant::now();
        let at = |millis: u64| t0 + Duration::from_millis(millis);
        let unavailable = Some(OidcError::Unavailable {
            issuer: ISSUER.into(),
        });
        for (millis, fetched) in [(0, 1), (500, 1), (2_000, 2)] {
            let answer = key_for(&keys, Some("old"), Alg::EdDsa, at(millis), ISSUER).await;
            assert_eq!(answer.err(), unavailable, "at {millis} ms");
            assert_eq!(fetches(), fetched);
        }
        provider.down.store(false, Ordering::SeqCst);
        assert!(
            key_for(&keys, Some("old"), Alg::EdDsa, at(4_000), ISSUER)
                .await
                .is_ok()
        );
        // Down again when the keys are old: the keys in hand still serve.
        provider.down.store(true, Ordering::SeqCst);
        let later = at(4_000 + 3_600_000);
        assert!(
            key_for(&keys, Some("old"), Alg::EdDsa, later, ISSUER)
                .await
                .is_ok()
        );
        keys.settled().await;
        assert_eq!(fetches(), 4);
        // A new key id while the provider is down: unavailable, not unknown.
        let answer = key_for(&keys, Some("new"), Alg::EdDsa, later, ISSUER).await;
        assert_eq!(answer.err(), unavailable);
    }

    #[test]
    fn issuers_must_be_https_except_on_loopback_addresses() {
        let settings = |issuer: &str| OidcSettings {
            issuer: issuer.into(),
            audience: CLIENT.into(),
            ..OidcSettings::default()
        };
        assert!(matches!(OidcVerifier::new(&settings("")), Ok(None)));
        for good in [
            "https://id.example.com",
            "https://id.example.com/realms/shippy/",
            "http://127.0.0.1:8080",
            "http://127.1.2.3",
            "http://[::1]:9000/oidc",
            "http://localhost:3000",
        ] {
            let verifier = OidcVerifier::new(&settings(good)).expect(good).expect(good);
            assert_eq!(verifier.issuer(), good);
        }
        for insecure in ["http://id.example.com", "http://10.0.0.1", "http://[::2]"] {
            let error = OidcVerifier::new(&settings(insecure)).expect_err(insecure);
            assert!(matches!(error, OidcConfigError::NotHttps(_)), "{error}");
        }
        for bad in [
            "id.example.com",
            "ftp://x.y",
            "https://x.y/?q=1",
            "https://x.y/#f",
        ] {
            let error = OidcVerifier::new(&settings(bad)).expect_err(bad);
            assert!(matches!(error, OidcConfigError::NotUrl(_)), "{error}");
        }
        let mut no_audience = settings("https://id.example.com");
        no_audience.audience = " ".into();
        assert!(matches!(
            OidcVerifier::new(&no_audience),
            Err(OidcConfigError::NoAudience)
        ));
    }

    #[tokio::test]
    async fn tokens_of_other_issuers_are_refused_without_asking_the_provider() {
        let verifier = OidcVerifier::new(&OidcSettings {
            // Nothing listens there: a request would answer UNAVAILABLE, not WRONG_ISSUER.
            issuer: "http://127.0.0.1:1".into(),
            audience: CLIENT.into(),
            fetch_timeout_ms: 500,
            ..OidcSettings::default()
        })
        .expect("settings")
        .expect("configured");
        let (_, signing) = ed25519(3, "k1");
        let foreign = sign(&signing, "k1", &good());
        assert_eq!(verifier.verify(&foreign).await, Err(OidcError::WrongIssuer));
        let mut ours = good();
        ours["iss"] = "http://127.0.0.1:1".into();
        let answer = verifier.verify(&sign(&signing, "k1", &ours)).await;
        assert_eq!(
            answer,
            Err(OidcError::Unavailable {
                issuer: "http://127.0.0.1:1".into()
            })
        );
        assert_eq!(
            answer.expect_err("down").to_string(),
            "the OpenID Connect provider at http://127.0.0.1:1 does not answer"
        );
    }
}
