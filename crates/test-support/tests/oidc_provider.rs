//! The OIDC test harness works: the real `oidc-provider` starts, publishes its discovery document
//! and RS256 keys, and issues ID tokens through the authorization-code flow with the claims the
//! gateway's OIDC path relies on (iss, aud, sub, email, email_verified, exp), and refuses unknown
//! accounts. Needs `scripts/install-oidc-provider.sh` (`make test-deps`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use shippy_test_support::{
    http,
    oidc::{Account, OidcProvider, claims_of},
};

fn get_json(address: &str, path: &str) -> Value {
    let (status, body) = http::get(address, path, Duration::from_secs(5)).expect("GET");
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).expect("JSON")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn accounts() -> Vec<Account> {
    vec![
        Account::verified("ada@example.com"),
        Account::unverified("bob@example.com"),
    ]
}

#[test]
fn discovery_names_the_issuer_and_rs256_signing_keys() {
    let provider = OidcProvider::start(&accounts()).expect("provider starts");
    assert!(
        provider.issuer().starts_with("http://127.0.0.1:"),
        "{}",
        provider.issuer()
    );

    let discovery = get_json(provider.address(), "/.well-known/openid-configuration");
    assert_eq!(discovery["issuer"], provider.issuer());
    let algs = discovery["id_token_signing_alg_values_supported"]
        .as_array()
        .expect("signing algs");
    assert!(algs.contains(&Value::from("RS256")), "{algs:?}");

    let jwks_uri = discovery["jwks_uri"].as_str().expect("jwks_uri");
    let jwks_path = jwks_uri
        .strip_prefix(provider.issuer())
        .expect("jwks_uri on the issuer");
    let jwks = get_json(provider.address(), jwks_path);
    let keys = jwks["keys"].as_array().expect("keys");
    assert!(!keys.is_empty(), "{jwks}");
    for key in keys {
        assert_eq!(key["kty"], "RSA", "{key}");
        assert_eq!(key["alg"], "RS256", "{key}");
        assert!(key["kid"].is_string(), "{key}");
        assert!(
            key.get("d").is_none(),
            "private key material published: {key}"
        );
    }
}

#[test]
fn id_tokens_come_through_the_code_flow_with_the_account_claims() {
    let provider = OidcProvider::start(&accounts()).expect("provider starts");

    let token = provider
        .id_token("ada@example.com", provider.client_id())
        .expect("ID token for ada");
    let header = claims_of(&format!("x.{}.x", token.split('.').next().expect("header")))
        .expect("header JSON");
    assert_eq!(header["alg"], "RS256");

    let claims = claims_of(&token).expect("claims");
    assert_eq!(claims["iss"], provider.issuer(), "{claims}");
    assert_eq!(claims["aud"], "shippy", "{claims}");
    assert_eq!(claims["email"], "ada@example.com", "{claims}");
    assert_eq!(claims["email_verified"], true, "{claims}");
    let sub = claims["sub"].as_str().expect("sub");
    assert!(!sub.is_empty() && sub != "ada@example.com", "{claims}");
    assert!(
        claims["exp"].as_u64().expect("exp") > now(),
        "expired already: {claims}"
    );

    // The same account gets the same subject every time; another account another one.
    let again = claims_of(
        &provider
            .id_token("ada@example.com", provider.client_id())
            .expect("second token"),
    )
    .expect("claims");
    assert_eq!(again["sub"], sub);

    let bob = claims_of(
        &provider
            .id_token("bob@example.com", provider.client_id())
            .expect("ID token for bob"),
    )
    .expect("claims");
    assert_eq!(bob["email_verified"], false, "{bob}");
    assert_ne!(bob["sub"], sub);

    // A token for the other client is for another audience.
    let other = claims_of(
        &provider
            .id_token("ada@example.com", provider.other_client_id())
            .expect("ID token for the other client"),
    )
    .expect("claims");
    assert_eq!(other["aud"], "someone-else", "{other}");
    assert_eq!(other["sub"], sub);
}

#[test]
fn an_unknown_email_is_refused() {
    let provider = OidcProvider::start(&accounts()).expect("provider starts");
    let error = provider
        .id_token("mallory@example.com", provider.client_id())
        .expect_err("no account, no token");
    let message = format!("{error:#}");
    assert!(
        message.contains("no account with the email mallory@example.com"),
        "{message}"
    );
}

#[test]
fn the_id_token_lifetime_is_configurable() {
    let provider = OidcProvider::start_with_id_token_ttl(&accounts(), 2).expect("provider starts");
    let claims = claims_of(
        &provider
            .id_token("ada@example.com", provider.client_id())
            .expect("ID token"),
    )
    .expect("claims");
    let (iat, exp) = (
        claims["iat"].as_u64().expect("iat"),
        claims["exp"].as_u64().expect("exp"),
    );
    assert_eq!(exp - iat, 2, "{claims}");
}

#[test]
fn dropping_the_provider_stops_it() {
    let provider = OidcProvider::start(&accounts()).expect("provider starts");
    let address = provider.address().to_owned();
    drop(provider);
    assert!(
        http::get(
            &address,
            "/.well-known/openid-configuration",
            Duration::from_secs(2)
        )
        .is_err(),
        "still answering on {address}"
    );
}
