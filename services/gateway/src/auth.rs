//! Credentials at the edge: `Authorization: Bearer <token>` is passed on to the services as gRPC
//! metadata, where each service verifies it (the gateway is not trusted to vouch for anyone).
//!
//! A token from the external OpenID Connect provider is not a shippy token: the gateway swaps it
//! for one through the user service's `ExchangeToken` (which verifies it against the provider
//! and maps its verified email to a shippy user) and remembers the swap until the shippy token
//! is near its expiry, so a client calling with its provider's token costs one exchange, not one
//! per call. Which tokens to swap is decided by their `iss`: not the issuer the user service
//! publishes with its keys (`PublicKeys`) means "from elsewhere".

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use prost::Message as _;
use sha2::{Digest as _, Sha256};
use shippy_proto::user::v1 as pb;
use shippy_shared::discovery::balance::BalancedChannel;
use tonic::{Code, metadata::MetadataMap};

use crate::{problem::Problem, upstream};

/// Longest bearer token accepted (shippy tokens are far shorter; provider tokens rarely pass 2 KiB).
const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Most remembered exchanges; beyond it the memory is cleared rather than grown.
const MAX_REMEMBERED: usize = 10_000;
/// How long the shippy issuer learnt from `PublicKeys` is trusted before it is asked again.
const ISSUER_FOR: Duration = Duration::from_secs(300);
/// A remembered exchange is dropped this long before its shippy token expires.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);

/// Checks and forwards bearer tokens; see the module docs.
#[derive(Debug)]
pub struct Credentials {
    users: BalancedChannel,
    timeout: Duration,
    issuer: Mutex<Option<(String, Instant)>>,
    exchanged: Mutex<HashMap<[u8; 32], (String, Instant)>>,
}

impl Credentials {
    /// Credentials that reach the user service through `users`.
    pub fn new(users: BalancedChannel, timeout: Duration) -> Self {
        Self {
            users,
            timeout,
            issuer: Mutex::new(None),
            exchanged: Mutex::new(HashMap::new()),
        }
    }

    /// Puts the `authorization` metadata of a call from the request's `Authorization` header:
    /// nothing without one, the shippy token as it is, or a provider token exchanged.
    pub async fn forward(
        &self,
        header: Option<&http::HeaderValue>,
        metadata: &mut MetadataMap,
    ) -> Result<(), Problem> {
        let Some(header) = header else {
            return Ok(());
        };
        let token = bearer(header).ok_or_else(|| {
            Problem::new(
                Code::Unauthenticated,
                "the Authorization header must be `Bearer <token>`",
            )
        })?;
        let token = match unverified_issuer(token) {
            Some(issuer) if !self.is_shippy_issuer(&issuer).await => self.exchange(token).await?,
            _ => token.to_owned(),
        };
        let value = format!("Bearer {token}").parse().map_err(|_| {
            Problem::new(
                Code::Unauthenticated,
                "the bearer token has characters a token cannot have",
            )
        })?;
        metadata.insert("authorization", value);
        Ok(())
    }

    async fn is_shippy_issuer(&self, issuer: &str) -> bool {
        if let Ok(known) = self.issuer.lock()
            && let Some((known, at)) = known.as_ref()
            && at.elapsed() < ISSUER_FOR
        {
            return known == issuer;
        }
        let answer = upstream::call(
            self.users.clone(),
            "/shippy.user.v1.UserService/PublicKeys",
            Bytes::from(pb::Request {}.encode_to_vec()),
            MetadataMap::new(),
            self.timeout,
        )
        .await
        .ok()
        .and_then(|bytes| pb::KeySet::decode(bytes).ok());
        match answer {
            Some(keys) => {
                let same = keys.issuer == issuer;
                if let Ok(mut known) = self.issuer.lock() {
                    *known = Some((keys.issuer, Instant::now()));
                }
                same
            }
            // Unknown: pass the token on as it is; the service that gets it judges it.
            None => true,
        }
    }

    async fn exchange(&self, token: &str) -> Result<String, Problem> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Ok(exchanged) = self.exchanged.lock()
            && let Some((shippy, until)) = exchanged.get(&key)
            && Instant::now() < *until
        {
            return Ok(shippy.clone());
        }
        let request = pb::Token {
            token: token.to_owned(),
            ..pb::Token::default()
        };
        let answer = upstream::call(
            self.users.clone(),
            "/shippy.user.v1.UserService/ExchangeToken",
            Bytes::from(request.encode_to_vec()),
            MetadataMap::new(),
            self.timeout,
        )
        .await
        .map_err(|status| Problem::from_status(&status))?;
        let shippy = pb::Token::decode(answer)
            .map_err(|_| Problem::new(Code::Internal, "the user service answered nonsense"))?
            .token;
        let until = Instant::now() + remaining(&shippy).saturating_sub(EXPIRY_MARGIN);
        if let Ok(mut exchanged) = self.exchanged.lock() {
            if exchanged.len() >= MAX_REMEMBERED {
                exchanged.clear();
            }
            exchanged.insert(key, (shippy.clone(), until));
        }
        Ok(shippy)
    }
}

/// The token of a well-formed `Bearer` header.
fn bearer(header: &http::HeaderValue) -> Option<&str> {
    let value = header.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    let ok = scheme.eq_ignore_ascii_case("bearer")
        && !token.is_empty()
        && token.len() <= MAX_TOKEN_BYTES
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~+/=".contains(&b));
    ok.then_some(token)
}

/// The claims of a compact JWS, read without checking anything: only to route the token.
fn claims(token: &str) -> Option<serde_json::Value> {
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

fn unverified_issuer(token: &str) -> Option<String> {
    claims(token)?.get("iss")?.as_str().map(str::to_owned)
}

/// How long until `token` expires by its `exp` (zero when it has none or is past it).
fn remaining(token: &str) -> Duration {
    let exp = claims(token)
        .and_then(|claims| claims.get("exp")?.as_u64())
        .unwrap_or(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Duration::from_secs(exp.saturating_sub(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_bearer_headers_carry_a_token() {
        let header = |v: &str| http::HeaderValue::from_str(v).expect("header");
        assert_eq!(bearer(&header("Bearer a.b.c")), Some("a.b.c"));
        assert_eq!(bearer(&header("bearer a.b.c")), Some("a.b.c"));
        assert_eq!(bearer(&header("Basic dXNlcjpwdw==")), None);
        assert_eq!(bearer(&header("Bearer ")), None);
        assert_eq!(bearer(&header("Bearer a\"b")), None);
        assert_eq!(
            bearer(&header(&format!("Bearer {}", "a".repeat(9000)))),
            None
        );
    }

    #[test]
    fn the_issuer_is_read_without_trusting_the_token() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"iss":"https://id.example","exp":1}"#);
        let token = format!("e30.{payload}.sig");
        assert_eq!(
            unverified_issuer(&token).as_deref(),
            Some("https://id.example")
        );
        assert_eq!(remaining(&token), Duration::ZERO);
        assert_eq!(unverified_issuer("not a token"), None);
    }
}
