//! The REST gateway over real HTTP, in front of the real services: the whole story as `curl`
//! would tell it, every class of error a client can cause (each an `application/problem+json`
//! with the right status and the request id), edge limits, the OpenAPI document, the instances
//! page, OpenID Connect tokens from a real provider, and a route that exists by annotation only.

use std::time::Duration;

use reqwest::{Client, StatusCode, header};
use serde_json::{Value, json};
use shippy_test_support::{
    Cluster, ServiceProcess, example_consignment,
    oidc::{Account, OidcProvider},
};

const PASSWORD: &str = "a-long-enough-passphrase";

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("HTTP client")
}

/// Starts user, two vessels, consignment and the gateway (with `gateway_env`); the gateway's URL.
async fn system(
    cluster: &mut Cluster,
    user_env: &[(&str, &str)],
    gateway_env: &[(&str, &str)],
) -> (Vec<ServiceProcess>, String) {
    let mut processes = vec![cluster.start_with("user", user_env).await.expect("user")];
    for _ in 0..2 {
        processes.push(cluster.start("vessel").await.expect("vessel"));
    }
    processes.push(cluster.start("consignment").await.expect("consignment"));
    let gateway = cluster
        .start_with("gateway", gateway_env)
        .await
        .expect("gateway");
    let url = gateway
        .http_url()
        .expect("the gateway registers its HTTP address");
    processes.push(gateway);
    (processes, url)
}

async fn sign_up(http: &Client, url: &str, email: &str) -> String {
    let created = http
        .post(format!("{url}/v1/users"))
        .json(&json!({"name": "Ewan", "company": "Shippy", "email": email, "password": PASSWORD}))
        .send()
        .await
        .expect("sign up");
    assert_eq!(
        created.status(),
        StatusCode::OK,
        "{:?}",
        created.text().await
    );
    let token: Value = http
        .post(format!("{url}/v1/auth/token"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .expect("log in")
        .json()
        .await
        .expect("token JSON");
    token["token"].as_str().expect("a token").to_owned()
}

/// Status, content type, and body of a problem answer; checks the request id is in both.
/// Sends `request` and reads its answer as a problem (see [`problem`]).
async fn sent(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    problem(request.send().await.expect("send")).await
}

async fn problem(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let media = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: Value = response.json().await.expect("a JSON problem");
    assert_eq!(media, "application/problem+json", "{body}");
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert_eq!(body["request_id"], request_id.as_str(), "{body}");
    let text = body.to_string();
    for internal in ["127.0.0.1", "sqlite", "tonic", "panicked", "/tmp/"] {
        assert!(
            !text.contains(internal),
            "internal detail {internal:?} in {text}"
        );
    }
    (status, body)
}

#[tokio::test]
async fn the_story_over_rest_submits_consignment_json_and_answers_with_a_vessel() {
    let mut cluster = Cluster::local().expect("cluster");
    let (_processes, url) = system(&mut cluster, &[], &[]).await;
    let http = client();
    let token = sign_up(&http, &url, "ewan@example.com").await;

    let file = std::fs::read(example_consignment()).expect("consignment.json");
    let created = http
        .post(format!("{url}/v1/consignments"))
        .bearer_auth(&token)
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-request-id", "story-1")
        .body(file)
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), StatusCode::OK);
    assert_eq!(created.headers()["x-request-id"], "story-1");
    let created: Value = created.json().await.expect("JSON");
    assert_eq!(created["created"], true);
    let vessel_id = created["consignment"]["vessel_id"]
        .as_str()
        .expect("vessel_id");
    assert!(!vessel_id.is_empty(), "{created}");
    assert_eq!(
        created["consignment"]["containers"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );

    let listed: Value = http
        .get(format!("{url}/v1/consignments?page_size=10"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        listed["consignments"][0]["vessel_id"], vessel_id,
        "{listed}"
    );

    let fleet: Value = http
        .get(format!("{url}/v1/vessels"))
        .send()
        .await
        .expect("fleet")
        .json()
        .await
        .expect("JSON");
    assert!(
        fleet["vessels"]
            .as_array()
            .is_some_and(|v| v.iter().any(|v| v["id"] == vessel_id)),
        "{fleet}"
    );
    let fits: Value = http
        .get(format!(
            "{url}/v1/vessels/available?capacity=3&max_weight=55000"
        ))
        .send()
        .await
        .expect("find")
        .json()
        .await
        .expect("JSON");
    assert!(
        !fits["vessel"]["id"].as_str().unwrap_or_default().is_empty(),
        "{fits}"
    );

    let document: Value = http
        .get(format!("{url}/openapi.json"))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("JSON");
    assert_eq!(document["openapi"], "3.0.3");
    assert!(document["paths"]["/v1/consignments"]["post"].is_object());
    // The create that honours an idempotency key documents its header (see idempotency.rs).
    let parameters = &document["paths"]["/v1/consignments"]["post"]["parameters"];
    assert!(
        parameters.as_array().is_some_and(|p| p
            .iter()
            .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header")),
        "{parameters}"
    );
    validate_openapi(&document);

    let instances: Value = http
        .get(format!("{url}/v1/instances"))
        .send()
        .await
        .expect("instances")
        .json()
        .await
        .expect("JSON");
    let service = |name: &str| {
        instances["services"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == name))
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        service("vessel")["instances"].as_array().map(Vec::len),
        Some(2),
        "{instances}"
    );
    let consignment_calls = service("consignment")["instances"][0]["calls_served"]
        .as_u64()
        .unwrap_or_default();
    assert!(consignment_calls >= 2, "{instances}");

    let console = http.get(format!("{url}/")).send().await.expect("console");
    assert_eq!(console.status(), StatusCode::OK);
    assert!(
        console.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .is_ok_and(|p| p.contains("default-src 'self'"))
    );
}

#[tokio::test]
async fn every_error_a_client_can_cause_is_a_problem_with_its_status() {
    let mut cluster = Cluster::local().expect("cluster");
    let (_processes, url) = system(
        &mut cluster,
        &[],
        &[("SHIPPY_GATEWAY__BODY_LIMIT_BYTES", "4096")],
    )
    .await;
    let http = client();
    let token = sign_up(&http, &url, "errors@example.com").await;
    let create = || http.post(format!("{url}/v1/consignments"));

    let (status, body) = sent(create().json(&json!({"weight": 1}))).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("UNAUTHENTICATED"))
    );

    let (status, body) = sent(
        create()
            .header(header::AUTHORIZATION, "Basic dXNlcjpwdw==")
            .json(&json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("Bearer"),
        "{body}"
    );

    let (status, body) = sent(
        create()
            .bearer_auth(&token)
            .header(header::CONTENT_TYPE, "application/json")
            .body(r#"{"description": "x", "weight": 10,"#),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_ARGUMENT"))
    );

    let (status, body) = sent(
        create()
            .bearer_auth(&token)
            .json(&json!({"description": "x", "wieght": 10})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("wieght"),
        "{body}"
    );

    // The service's own field-naming message comes through.
    let (status, body) = sent(
        create()
            .bearer_auth(&token)
            .json(&json!({"description": "", "weight": 10, "containers": [{"customer_id": "c", "origin": "o"}]})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("description"),
        "{body}"
    );

    let (status, _) = sent(
        create()
            .bearer_auth(&token)
            .header(header::CONTENT_TYPE, "text/plain")
            .body("{}"),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let big = json!({"description": "x".repeat(5000), "weight": 1});
    let (status, body) = sent(create().bearer_auth(&token).json(&big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        body["detail"].as_str().unwrap_or_default().contains("4096"),
        "{body}"
    );

    let (status, _) = sent(
        create()
            .bearer_auth(&token)
            .json(&json!({"description": "heavy", "weight": 2_000_000_000, "containers": [{"customer_id": "c", "origin": "o"}]})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let again = http
        .post(format!("{url}/v1/users"))
        .json(&json!({"name": "E", "company": "S", "email": "errors@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("send");
    let (status, body) = problem(again).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("ALREADY_EXISTS"))
    );

    let (status, _) = sent(http.get(format!("{url}/v1/nowhere"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = sent(http.delete(format!("{url}/v1/consignments"))).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, body) = sent(
        http.get(format!("{url}/v1/consignments?page_size=lots"))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("page_size"),
        "{body}"
    );

    // A path segment that is not UTF-8 once decoded: a problem too, not the router's plain text.
    let (status, body) = sent(http.get(format!("{url}/v1/users/%FF")).bearer_auth(&token)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_ARGUMENT")),
        "{body}"
    );

    // A request head over the limit is refused by the HTTP layer itself.
    let huge = http
        .get(format!("{url}/v1/vessels"))
        .header("x-padding", "p".repeat(20 * 1024))
        .send()
        .await;
    assert!(
        huge.as_ref().map_or(true, |r| r.status()
            == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        "{huge:?}"
    );
}

#[tokio::test]
async fn a_client_over_its_rate_gets_429_with_retry_after() {
    let mut cluster = Cluster::local().expect("cluster");
    let (_processes, url) = system(
        &mut cluster,
        &[],
        &[
            ("SHIPPY_GATEWAY__RATE__PER_SECOND", "1"),
            ("SHIPPY_GATEWAY__RATE__BURST", "3"),
        ],
    )
    .await;
    let http = client();
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..6 {
        let response = http
            .get(format!("{url}/v1/vessels"))
            .send()
            .await
            .expect("send");
        statuses.push(response.status());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(response.headers().contains_key(header::RETRY_AFTER));
            limited = Some(problem(response).await.1);
        }
    }
    let limited = limited.unwrap_or_else(|| panic!("never limited: {statuses:?}"));
    assert_eq!(limited["code"], "RESOURCE_EXHAUSTED");
}

#[tokio::test]
async fn tokens_of_a_real_openid_connect_provider_work_through_the_gateway() {
    let provider = OidcProvider::start(&[
        Account::verified("oidc@example.com"),
        Account::unverified("unverified@example.com"),
    ])
    .expect("provider");
    let mut cluster = Cluster::local().expect("cluster");
    let (_processes, url) = system(
        &mut cluster,
        &[
            ("SHIPPY_USER__OIDC__ISSUER", provider.issuer()),
            ("SHIPPY_USER__OIDC__AUDIENCE", provider.client_id()),
        ],
        &[],
    )
    .await;
    let http = client();
    sign_up(&http, &url, "oidc@example.com").await;
    let id_token = provider
        .id_token("oidc@example.com", provider.client_id())
        .expect("ID token");

    let created = http
        .post(format!("{url}/v1/consignments"))
        .bearer_auth(&id_token)
        .header(header::CONTENT_TYPE, "application/json")
        .body(std::fs::read(example_consignment()).expect("file"))
        .send()
        .await
        .expect("create");
    assert_eq!(
        created.status(),
        StatusCode::OK,
        "{:?}",
        created.text().await
    );
    let listed: Value = http
        .get(format!("{url}/v1/consignments"))
        .bearer_auth(&id_token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        listed["consignments"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );

    let elsewhere = provider
        .id_token("oidc@example.com", provider.other_client_id())
        .expect("token for another client");
    let unverified = provider
        .id_token("unverified@example.com", provider.client_id())
        .expect("token");
    for refused in [elsewhere, unverified] {
        let answer = http
            .get(format!("{url}/v1/consignments"))
            .bearer_auth(&refused)
            .send()
            .await
            .expect("list");
        let (status, _) = problem(answer).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
}

/// Runs openapi-spec-validator (installed by `make test-deps`) on `document`.
fn validate_openapi(document: &Value) {
    let python = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../.tools/openapi-venv/bin/python"
    );
    assert!(
        std::path::Path::new(python).exists(),
        "the OpenAPI validator is not installed: run scripts/install-openapi-validator.sh (make test-deps)"
    );
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), document.to_string()).expect("write");
    let output = std::process::Command::new(python)
        .args(["-m", "openapi_spec_validator"])
        .arg(file.path())
        .output()
        .expect("run the validator");
    assert!(
        output.status.success(),
        "/openapi.json is not a valid OpenAPI document:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A new annotated RPC gets its route and its OpenAPI entry with no gateway code: the vessel
/// protos with one more annotated RPC, read by the gateway's own route table.
#[test]
fn a_route_exists_by_annotation_alone() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto");
    let dir = tempfile::tempdir().expect("dir");
    let original = std::fs::read_to_string(format!("{root}/shippy/vessel/v1/vessel.proto"))
        .expect("vessel.proto");
    let extended = original.replacen(
        "service VesselService {",
        "service VesselService {\n  rpc Retire(Vessel) returns (Response) {\n    option (google.api.http) = { post: \"/v1/vessels/{id}/retire\" };\n  }",
        1,
    );
    std::fs::create_dir_all(dir.path().join("shippy/vessel/v1")).expect("mkdir");
    std::fs::write(dir.path().join("shippy/vessel/v1/vessel.proto"), extended).expect("write");
    let mut compiler =
        protox::Compiler::new([dir.path(), std::path::Path::new(root)]).expect("compiler");
    compiler.include_imports(true);
    compiler
        .open_file("shippy/vessel/v1/vessel.proto")
        .expect("compiles");
    let (_, routes) =
        shippy_gateway::routes::from_descriptors(&compiler.encode_file_descriptor_set())
            .expect("routes");
    let retire = routes
        .iter()
        .find(|r| r.template == "/v1/vessels/{id}/retire")
        .expect("the new route");
    assert_eq!(retire.grpc_path(), "/shippy.vessel.v1.VesselService/Retire");
    let document = shippy_gateway::openapi::document(&routes, "test");
    assert!(document["paths"]["/v1/vessels/{id}/retire"]["post"].is_object());
}

/// The user service limits log-ins per client address; through the gateway that is the REST
/// client's address (forwarded by the registered gateway), not the gateway's: one client over its
/// limit does not lock everyone else out.
#[tokio::test]
async fn log_in_limits_count_each_rest_client_not_the_gateway() {
    let mut cluster = Cluster::local().expect("cluster");
    let (processes, url) = system(
        &mut cluster,
        &[("SHIPPY_AUTH__LOGIN_PER_CLIENT_PER_MINUTE", "2")],
        &[],
    )
    .await;
    let from = |ip: [u8; 4]| {
        Client::builder()
            .local_address(std::net::IpAddr::from(ip))
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client")
    };
    let log_in = |http: Client, n: usize| {
        let url = url.clone();
        async move {
            http.post(format!("{url}/v1/auth/token"))
                .json(&json!({"email": format!("nobody{n}@example.com"), "password": PASSWORD}))
                .send()
                .await
                .expect("log in")
                .status()
        }
    };
    // Until the user service has seen the gateway registered, the gateway's calls count as its
    // own address's.
    let (user, gateway) = (&processes[0], processes.last().expect("the gateway"));
    let gateway_address = gateway.address().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !user.log().lines().any(|line| {
        line.contains("client addresses forwarded by these gateways are believed")
            && line.contains(&gateway_address)
    }) {
        assert!(
            std::time::Instant::now() < deadline,
            "the user service never saw the gateway {gateway_address}:\n{}",
            user.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = from([127, 0, 0, 1]);
    let statuses = [
        log_in(first.clone(), 1).await,
        log_in(first.clone(), 2).await,
    ];
    assert_eq!(
        statuses,
        [StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED]
    );
    // Over the limit: 429, with the wait the user service named as `Retry-After`.
    let limited = first
        .post(format!("{url}/v1/auth/token"))
        .json(&json!({"email": "nobody3@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("log in");
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = limited
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok()?.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&wait), "{wait}");
    // Another client, the same gateway: its own allowance.
    assert_eq!(
        log_in(from([127, 0, 0, 2]), 4).await,
        StatusCode::UNAUTHORIZED
    );
}

/// Behind a trusted proxy (here: loopback) each client named by `X-Forwarded-For` has its own
/// rate; from anyone else the header is ignored, so a client cannot pick a fresh address.
#[tokio::test]
async fn forwarded_clients_are_told_apart_only_behind_trusted_proxies() {
    let mut cluster = Cluster::local().expect("cluster");
    let limited = [
        ("SHIPPY_GATEWAY__RATE__PER_SECOND", "1"),
        ("SHIPPY_GATEWAY__RATE__BURST", "1"),
    ];
    let (_processes, untrusting) = system(&mut cluster, &[], &limited).await;
    let mut trusting_env = limited.to_vec();
    trusting_env.push(("SHIPPY_GATEWAY__TRUSTED_PROXIES", "10.0.0.0/8,127.0.0.1"));
    let trusting = cluster
        .start_with("gateway", &trusting_env)
        .await
        .expect("second gateway");
    let trusting = trusting.http_url().expect("HTTP address");
    let http = client();
    let as_client = |url: &str, ip: &str| {
        http.get(format!("{url}/v1/vessels"))
            .header("x-forwarded-for", ip)
            .send()
    };
    // Behind the trusted proxy: two clients, one request each, both served; the first again is over.
    assert_eq!(
        as_client(&trusting, "198.51.100.1")
            .await
            .expect("send")
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        as_client(&trusting, "198.51.100.2")
            .await
            .expect("send")
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        as_client(&trusting, "198.51.100.1")
            .await
            .expect("send")
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Not trusted: the header changes nothing, the second request is the same client's.
    assert_eq!(
        as_client(&untrusting, "198.51.100.1")
            .await
            .expect("send")
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        as_client(&untrusting, "198.51.100.2")
            .await
            .expect("send")
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// CORS: a listed origin's preflight is answered with its origin; another origin gets no
/// `Access-Control-Allow-Origin`, so its page cannot read the answer.
#[tokio::test]
async fn only_listed_origins_may_call_from_a_browser() {
    let mut cluster = Cluster::local().expect("cluster");
    let (_processes, url) = system(
        &mut cluster,
        &[],
        &[(
            "SHIPPY_GATEWAY__CORS__ALLOWED_ORIGINS",
            "https://app.example.com",
        )],
    )
    .await;
    let http = client();
    let preflight = |origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, format!("{url}/v1/consignments"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let allowed = preflight("https://app.example.com")
        .await
        .expect("preflight");
    assert_eq!(
        allowed
            .headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("https://app.example.com")
    );
    let other = preflight("https://evil.example").await.expect("preflight");
    assert!(
        other.headers().get("access-control-allow-origin").is_none(),
        "{:?}",
        other.headers()
    );
}

/// A body that trickles in is cut off at the call's deadline with 408, not waited for forever.
#[tokio::test]
async fn a_body_that_does_not_arrive_gets_408() {
    use std::io::{Read as _, Write as _};
    let mut cluster = Cluster::local().expect("cluster");
    let (_processes, url) =
        system(&mut cluster, &[], &[("SHIPPY_GATEWAY__TIMEOUT_MS", "500")]).await;
    let address = url.trim_start_matches("http://").to_owned();
    let answer = tokio::task::spawn_blocking(move || {
        let mut socket = std::net::TcpStream::connect(&address).expect("connect");
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(
            socket,
            "POST /v1/users HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":"
        )
        .expect("write");
        let mut answer = vec![0; 4096];
        let read = socket.read(&mut answer).expect("an answer before the socket's timeout");
        String::from_utf8_lossy(&answer[..read]).into_owned()
    })
    .await
    .expect("join");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
}

/// A body within the size limit cannot take the gateway's memory: 4 MiB of `{}` would be 1.4
/// million messages once parsed. It is refused as a 400 problem, with no token needed to send it,
/// and the gateway's peak memory hardly moves.
#[tokio::test]
async fn four_mib_of_empty_list_elements_is_refused_before_it_is_parsed() {
    let mut cluster = Cluster::local().expect("cluster");
    let (processes, url) = system(&mut cluster, &[], &[]).await;
    let gateway = ServiceProcess::of(&processes, "gateway");
    let peak = || gateway.status_kib("VmHWM").expect("VmHWM") * 1024;
    let before = peak();

    let flood = format!(r#"{{"containers": [{}]}}"#, vec!["{}"; 1_390_000].join(","));
    assert!(flood.len() < 4 << 20, "within the default 4 MiB body limit");
    let (status, body) = sent(
        client()
            .post(format!("{url}/v1/consignments"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(flood),
    )
    .await;
    let grown = peak().saturating_sub(before);
    eprintln!(
        "gateway peak memory {} MiB before, grown by {} KiB",
        before >> 20,
        grown >> 10
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_ARGUMENT")),
        "{body}"
    );
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("its lists hold more than 20000 elements in all"),
        "{body}"
    );
    // The body itself is held while it is read; parsing it would take far more.
    assert!(
        grown < 32 << 20,
        "peak memory grew by {} MiB on one refused body",
        grown >> 20
    );
}

/// A service that is down is named, never located: a REST client learns which service did not
/// answer, not its address or the operating system's error (those are in the gateway's log).
#[tokio::test]
async fn a_service_that_is_down_is_named_without_its_address() {
    let mut cluster = Cluster::local().expect("cluster");
    let (mut processes, url) =
        system(&mut cluster, &[], &[("SHIPPY_GATEWAY__TIMEOUT_MS", "3000")]).await;
    // Killed, as a crash would: its registry entry lingers, so the gateway still tries it.
    processes[0].kill();
    let (status, body) = sent(client().post(format!("{url}/v1/users")).json(
        &json!({"name": "Ewan", "company": "Shippy", "email": "down@example.com", "password": PASSWORD}),
    ))
    .await;
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::GATEWAY_TIMEOUT,
        "{status}: {body}"
    );
    assert!(detail.contains("service 'user'"), "{body}");
    for internal in ["127.0.0.1", "os error", "connect"] {
        assert!(!detail.contains(internal), "{internal:?} in {body}");
    }
}

/// Opens a connection from `from` (an address of 127.0.0.0/8) to `address` and asks for the
/// OpenAPI document over it: the status line of the answer, or `None` when the gateway closed the
/// connection unanswered. The connection is returned open, so that it keeps its place.
async fn ask_from(
    from: &str,
    address: std::net::SocketAddr,
) -> (tokio::net::TcpStream, Option<String>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{from}:0").parse().expect("address"))
        .expect("bind");
    let mut stream = socket.connect(address).await.expect("connect");
    let request = format!("GET /openapi.json HTTP/1.1\r\nHost: {address}\r\n\r\n");
    let mut answer = vec![0; 256];
    let answered = async {
        stream.write_all(request.as_bytes()).await?;
        stream.read(&mut answer).await
    };
    let status = match tokio::time::timeout(Duration::from_secs(20), answered).await {
        Ok(Ok(read)) if read > 0 => String::from_utf8_lossy(&answer[..read])
            .lines()
            .next()
            .map(str::to_owned),
        Ok(_) => None,
        Err(_) => panic!("neither answered nor closed within 20 s"),
    };
    (stream, status)
}

/// One client cannot hold every connection of the gateway: beyond
/// `gateway.http.max_connections_per_client` its new connections are closed unanswered, while
/// another client is served; a trusted proxy, through which many clients come, is not held to it.
#[tokio::test]
async fn one_client_cannot_hold_every_connection_and_a_trusted_proxy_is_not_one_client() {
    let mut cluster = Cluster::local().expect("cluster");
    let gateway = cluster
        .start_with(
            "gateway",
            &[
                ("SHIPPY_GATEWAY__HTTP__MAX_CONNECTIONS_PER_CLIENT", "2"),
                ("SHIPPY_GATEWAY__TRUSTED_PROXIES", "127.0.0.3"),
            ],
        )
        .await
        .expect("gateway");
    let address: std::net::SocketAddr = gateway
        .http_url()
        .expect("HTTP address")
        .trim_start_matches("http://")
        .parse()
        .expect("an address");
    let ok = Some("HTTP/1.1 200 OK".to_owned());
    let mut open = Vec::new();
    for _ in 0..2 {
        let (stream, status) = ask_from("127.0.0.2", address).await;
        assert_eq!(status, ok, "within the client's two connections");
        open.push(stream);
    }
    let (_, status) = ask_from("127.0.0.2", address).await;
    assert_eq!(
        status, None,
        "a third connection of the same client is closed"
    );
    let (_other, status) = ask_from("127.0.0.4", address).await;
    assert_eq!(status, ok, "another client is served meanwhile");
    for _ in 0..4 {
        let (stream, status) = ask_from("127.0.0.3", address).await;
        assert_eq!(
            status, ok,
            "the trusted proxy's connections are not capped per client"
        );
        open.push(stream);
    }
}
