//! ID tokens of a real OpenID Connect provider (`oidc-provider` under Node, tokens from the real
//! authorization-code flow) exchanged for shippy tokens by the real user service (`ExchangeToken`),
//! and those tokens used with the real CLI against the real consignment service. Every refusal is
//! checked for its code and its one sentence: another client's token, an unverified email, an
//! email no shippy user has, an altered token; and without a provider, or with one that is down.
//!
//! Needs `scripts/install-oidc-provider.sh` (`make test-deps`) and `cargo build --workspace --bins`.

use std::time::{SystemTime, UNIX_EPOCH};

use shippy_proto::user::v1::{Token, user_service_client::UserServiceClient};
use shippy_test_support::{
    Cluster, START_TIMEOUT, ServiceProcess, example_consignment,
    http::free_port,
    oidc::{Account, OidcProvider, claims_of},
};
use tonic::{Code, transport::Channel};

const PASSWORD: &str = "correct horse";

/// A user service taking the ID tokens of `provider` for its client `shippy`.
async fn user_service(cluster: &mut Cluster, issuer: &str) -> ServiceProcess {
    cluster
        .start_with(
            "user",
            &[
                ("SHIPPY_USER__OIDC__ISSUER", issuer),
                ("SHIPPY_USER__OIDC__AUDIENCE", "shippy"),
            ],
        )
        .await
        .expect("user service starts")
}

async fn client(user: &ServiceProcess) -> UserServiceClient<Channel> {
    UserServiceClient::connect(format!("http://{}", user.address()))
        .await
        .expect("connect to the user service")
}

async fn exchange(
    users: &mut UserServiceClient<Channel>,
    token: &str,
) -> Result<Token, tonic::Status> {
    users
        .exchange_token(Token {
            token: token.to_owned(),
            ..Token::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Asserts that `token` is refused with `code` and exactly `message`.
async fn refused(users: &mut UserServiceClient<Channel>, token: &str, code: Code, message: &str) {
    let status = exchange(users, token).await.expect_err("refused");
    assert_eq!(
        (status.code(), status.message()),
        (code, message),
        "{status:?}"
    );
}

fn register(cluster: &Cluster, email: &str) {
    cluster.cli_ok([
        "user",
        "create",
        "--name",
        "OIDC User",
        "--email",
        email,
        "--company",
        "Acme",
        "--password",
        PASSWORD,
    ]);
}

/// Runs the CLI with `token` as its token; its stdout, or its stderr when it fails.
fn cli_as(cluster: &mut Cluster, token: &str, args: &[&str]) -> Result<String, String> {
    cluster.set_env("SHIPPY_TOKEN", token);
    let out = cluster.cli(args);
    cluster.unset_env("SHIPPY_TOKEN");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[tokio::test]
async fn id_tokens_of_the_provider_become_shippy_tokens_for_registered_users() {
    let provider = OidcProvider::start(&[
        Account::verified("ada@example.com"),
        Account::unverified("bob@example.com"),
        Account::verified("carol@example.com"),
    ])
    .expect("OIDC provider starts (scripts/install-oidc-provider.sh)");
    assert_eq!(provider.client_id(), "shippy");
    let mut cluster = Cluster::local().expect("cluster");
    let user = user_service(&mut cluster, provider.issuer()).await;
    let _vessel = cluster.start("vessel").await.expect("vessel");
    let _consignment = cluster.start("consignment").await.expect("consignment");
    // Ada and Bob are shippy users; Carol has an account at the provider only. Ada's shippy email
    // is written in capitals: emails are compared normalised.
    register(&cluster, "ADA@example.com");
    register(&cluster, "bob@example.com");
    let mut users = client(&user).await;

    // Ada's ID token for shippy is exchanged for a shippy token of Ada's user, which the
    // consignment service accepts: she creates a consignment and lists it.
    let id_token = provider
        .id_token("ada@example.com", provider.client_id())
        .expect("Ada signs in at the provider");
    let exchanged = exchange(&mut users, &id_token).await.expect("exchanged");
    assert!(exchanged.valid);
    let ada = users
        .validate_token(Token {
            token: exchanged.token.clone(),
            ..Token::default()
        })
        .await
        .expect("a shippy token")
        .into_inner();
    assert_eq!(ada.user_id, exchanged.user_id);
    let example = example_consignment();
    let created = cli_as(
        &mut cluster,
        &exchanged.token,
        &["consignment", "create", &example.display().to_string()],
    )
    .expect("consignment created with the exchanged token");
    assert!(
        created.contains("Consignment created on vessel"),
        "{created}"
    );
    let listed = cli_as(
        &mut cluster,
        &exchanged.token,
        &["--output", "json", "consignment", "list"],
    )
    .expect("listed with the exchanged token");
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("JSON");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(
        listed[0]["containers"][0]["user_id"], exchanged.user_id,
        "the consignment is Ada's"
    );

    // The shippy token lives no longer than the ID token it was exchanged for (an hour here,
    // shorter than auth.token_ttl_secs' day) and is a shippy token, not the provider's.
    let (id_claims, ours) = (
        claims_of(&id_token).expect("claims"),
        claims_of(&exchanged.token).expect("claims"),
    );
    let id_exp = id_claims["exp"].as_u64().expect("exp");
    let our_exp = ours["exp"].as_u64().expect("exp");
    assert!(
        our_exp <= id_exp && our_exp > now(),
        "{ours} vs {id_claims}"
    );
    assert_eq!(ours["iss"], "shippy.user");
    assert_eq!(ours["sub"], exchanged.user_id.as_str());

    // Refused: a token the provider issued to another client; Bob's unverified email; Carol,
    // whom shippy does not know; Carol's token altered to name Ada (the signature no longer
    // verifies); a shippy token (signed by shippy, not the provider); garbage.
    let elsewhere = provider
        .id_token("ada@example.com", provider.other_client_id())
        .expect("a token for another client");
    refused(
        &mut users,
        &elsewhere,
        Code::Unauthenticated,
        "the token was issued for another client, not for shippy",
    )
    .await;
    let bob = provider
        .id_token("bob@example.com", provider.client_id())
        .expect("Bob signs in");
    refused(
        &mut users,
        &bob,
        Code::Unauthenticated,
        "the provider has not verified the email address of this token",
    )
    .await;
    let carol = provider
        .id_token("carol@example.com", provider.client_id())
        .expect("Carol signs in");
    refused(
        &mut users,
        &carol,
        Code::Unauthenticated,
        "no shippy user has the email address of this token; register first",
    )
    .await;
    let mut claims = claims_of(&carol).expect("claims");
    claims["email"] = "ada@example.com".into();
    let parts: Vec<&str> = carol.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        base64url(claims.to_string().as_bytes()),
        parts[2]
    );
    refused(
        &mut users,
        &forged,
        Code::Unauthenticated,
        "the token's signature does not verify",
    )
    .await;
    refused(
        &mut users,
        &exchanged.token,
        Code::Unauthenticated,
        "the token was issued by another OpenID Connect provider",
    )
    .await;
    refused(
        &mut users,
        "not-a-token",
        Code::Unauthenticated,
        "the token is not an OpenID Connect ID token (a signed JWT of at most 8 KiB)",
    )
    .await;
    // Once Carol registers, her token is exchanged too (nothing was remembered of the refusal).
    register(&cluster, "carol@example.com");
    exchange(&mut users, &carol).await.expect("Carol exchanged");

    // Each outcome counted once; the provider's keys fetched once for all of it.
    for (outcome, count) in [
        ("exchanged", 2.0),
        ("wrong_audience", 1.0),
        ("unverified_email", 1.0),
        ("unknown_email", 1.0),
        ("bad_signature", 1.0),
        ("wrong_issuer", 1.0),
        ("malformed", 1.0),
    ] {
        let counted = user
            .metric("shippy_auth_exchanges_total", &[("outcome", outcome)])
            .expect("metrics");
        assert_eq!(counted, count, "{outcome}");
    }
    let fetched = user.log().matches("provider's keys fetched").count();
    assert_eq!(fetched, 1, "{}", user.log());
}

#[tokio::test]
async fn without_a_provider_the_exchange_says_why() {
    let mut cluster = Cluster::local().expect("cluster");
    // None configured: FAILED_PRECONDITION naming the setting.
    let plain = cluster.start("user").await.expect("user starts");
    let mut users = client(&plain).await;
    refused(
        &mut users,
        "any.token.at-all",
        Code::FailedPrecondition,
        "no OpenID Connect provider is configured (user.oidc.issuer)",
    )
    .await;
    drop(plain);

    // One configured but down: the service starts all the same, and says the provider does not
    // answer (UNAVAILABLE) once a token of that issuer comes; a client's token costs no wait.
    let port = free_port().expect("port");
    let issuer = format!("http://127.0.0.1:{port}");
    let user = cluster
        .start_with(
            "user",
            &[
                ("SHIPPY_USER__OIDC__ISSUER", issuer.as_str()),
                ("SHIPPY_USER__OIDC__AUDIENCE", "shippy"),
                ("SHIPPY_USER__OIDC__FETCH_TIMEOUT_MS", "1000"),
            ],
        )
        .await
        .expect("starts while its provider is down");
    let mut users = client(&user).await;
    let token = unsigned_token(&issuer);
    refused(
        &mut users,
        &token,
        Code::Unavailable,
        &format!("the OpenID Connect provider at {issuer} does not answer"),
    )
    .await;
    assert!(
        user.log().contains("keys could not be fetched"),
        "the cause is logged:\n{}",
        user.log()
    );
    drop(user);

    // A provider reached over plain http on another host: refused at start, in one sentence.
    let mut insecure = cluster
        .spawn_with(
            "user",
            &[
                ("SHIPPY_USER__OIDC__ISSUER", "http://id.example.com"),
                ("SHIPPY_USER__OIDC__AUDIENCE", "shippy"),
            ],
        )
        .expect("spawn");
    let status = insecure.wait_exit(START_TIMEOUT).expect("exits by itself");
    assert!(!status.success(), "started anyway:\n{}", insecure.log());
    assert!(
        insecure.log().contains(
            "user.oidc.issuer \"http://id.example.com\" must use https (plain http only on a \
             loopback address such as 127.0.0.1 or localhost)"
        ),
        "{}",
        insecure.log()
    );
}

/// A token of `issuer` in shape (RS256, a key id) whose signature is never looked at: the key set
/// cannot be had.
fn unsigned_token(issuer: &str) -> String {
    let header = base64url(br#"{"alg":"RS256","kid":"k1"}"#);
    let claims = serde_json::json!({
        "iss": issuer, "sub": "s", "aud": "shippy", "iat": now(), "exp": now() + 60,
        "email": "x@example.com", "email_verified": true,
    });
    format!(
        "{header}.{}.{}",
        base64url(claims.to_string().as_bytes()),
        base64url(&[0; 256])
    )
}

/// Unpadded base64url (RFC 4648 §5).
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}
