//! Idempotency keys: a create repeated with its key (after a timeout, a lost answer, an "it may
//! have been saved") is answered with the consignment the first created and stores nothing more —
//! over gRPC, through the real CLI, across a restart of the service on its SQLite file, over REST
//! through the gateway's `Idempotency-Key` header (documented in its OpenAPI document: see
//! `gateway_rest.rs`), and when the balancer retries a keyed create
//! that an instance took and never answered. Vessels keep the same promise, over gRPC, the CLI
//! and REST.

use std::time::Duration;

use reqwest::{StatusCode, header};
use serde_json::Value;
use shippy_proto::{
    consignment::v1::{self as pb, GetRequest, shipping_service_client::ShippingServiceClient},
    vessel::v1::{self as vessel_pb, vessel_service_client::VesselServiceClient},
};
use shippy_shared::{config::ClientSettings, discovery::balance::BalancedChannel};
use shippy_test_support::{Cluster, ServiceProcess, example_consignment, sum_samples, with_token};
use tokio::sync::watch;
use tonic::{Code, transport::Channel};

fn consignment(weight: i32) -> pb::Consignment {
    pb::Consignment {
        description: "Cargo named by a key".into(),
        weight,
        containers: vec![pb::Container {
            customer_id: "cust001".into(),
            origin: "Derby".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

async fn client_of(service: &ServiceProcess) -> ShippingServiceClient<Channel> {
    ShippingServiceClient::connect(format!("http://{}", service.address()))
        .await
        .expect("connect")
}

/// `CreateConsignment` of `message` by the holder of `token`, with `key` as its idempotency key.
async fn create(
    client: &mut ShippingServiceClient<Channel>,
    token: &str,
    key: &str,
    message: pb::Consignment,
) -> Result<pb::Response, tonic::Status> {
    Ok(client
        .create_consignment(keyed(with_token(message, token), key))
        .await?
        .into_inner())
}

/// `request` with `key` as its idempotency key.
fn keyed<T>(mut request: tonic::Request<T>, key: &str) -> tonic::Request<T> {
    request.metadata_mut().insert(
        "idempotency-key",
        key.parse().expect("an ASCII key for the metadata"),
    );
    request
}

async fn listed(client: &mut ShippingServiceClient<Channel>, token: &str) -> Vec<String> {
    client
        .get_consignments(with_token(GetRequest::default(), token))
        .await
        .expect("list")
        .into_inner()
        .consignments
        .into_iter()
        .map(|c| c.id)
        .collect()
}

#[tokio::test]
async fn a_create_repeated_with_its_key_answers_with_the_first_consignment() {
    let mut cluster = Cluster::local().expect("cluster");
    let mut processes = cluster.start_all(1).await.expect("services start");
    let ann = cluster.sign_up_and_login("ann@example.com");
    let mut shipping = client_of(processes.last().expect("consignment")).await;

    // The first call creates; the same call again answers with that consignment, creates nothing.
    let first = create(&mut shipping, &ann, "order-0001", consignment(500))
        .await
        .expect("created");
    assert!(first.created);
    let stored = first.consignment.expect("the consignment");
    assert!(!stored.vessel_id.is_empty());
    let again = create(&mut shipping, &ann, "order-0001", consignment(500))
        .await
        .expect("answered again");
    assert!(!again.created, "a repeat creates nothing");
    assert_eq!(again.consignment.as_ref(), Some(&stored));
    assert_eq!(
        listed(&mut shipping, &ann).await,
        std::slice::from_ref(&stored.id)
    );

    // The key used again for another consignment is the client's mistake, said as such.
    let reused = create(&mut shipping, &ann, "order-0001", consignment(501))
        .await
        .expect_err("another consignment");
    assert_eq!(reused.code(), Code::FailedPrecondition);
    assert_eq!(
        reused.message(),
        "idempotency-key: already used for a different consignment; a new consignment needs a new key"
    );
    for (bad, reason) in [
        ("", "must not be empty"),
        (
            "two words",
            "only printable ASCII characters without spaces",
        ),
    ] {
        let refused = create(&mut shipping, &ann, bad, consignment(500))
            .await
            .expect_err(bad);
        assert_eq!(
            (refused.code(), refused.message()),
            (
                Code::InvalidArgument,
                &*format!("idempotency-key: {reason}")
            ),
        );
    }
    assert_eq!(
        listed(&mut shipping, &ann).await.len(),
        1,
        "nothing refused was stored"
    );

    // Keys are each user's own: another user's "order-0001" is another consignment.
    let bob = cluster.sign_up_and_login("bob@example.com");
    let bobs = create(&mut shipping, &bob, "order-0001", consignment(500))
        .await
        .expect("bob's own");
    assert!(bobs.created);
    assert_ne!(bobs.consignment.map(|c| c.id), Some(stored.id.clone()));

    // The key outlives the process: the default store is a file.
    // The connection closes first: this test's runtime cannot answer the server's goodbye while
    // `stop` blocks it, and the server would wait out its grace period for it.
    drop(shipping);
    let mut consignment_service = processes.pop().expect("consignment");
    consignment_service
        .stop(Duration::from_secs(20))
        .expect("clean stop");
    let restarted = cluster.start("consignment").await.expect("restart");
    let mut shipping = client_of(&restarted).await;
    let after = create(&mut shipping, &ann, "order-0001", consignment(500))
        .await
        .expect("answered after a restart");
    assert!(!after.created);
    assert_eq!(after.consignment.map(|c| c.id), Some(stored.id.clone()));

    // The CLI: a key given twice creates once and says so; without one, each run is new.
    let file = example_consignment();
    let file = file.to_str().expect("UTF-8 path");
    cluster.sign_up_and_login("cli@example.com");
    let once = cluster.cli_ok(["consignment", "create", file, "--idempotency-key", "cli-1"]);
    assert!(once.contains("Consignment created on vessel"), "{once}");
    let twice = cluster.cli_ok(["consignment", "create", file, "--idempotency-key", "cli-1"]);
    assert!(
        twice.contains("Consignment already created on vessel")
            && twice.contains("by a request with this key"),
        "{twice}"
    );
    cluster.cli_ok(["consignment", "create", file]);
    let list = cluster.cli_ok(["--output", "json", "consignment", "list"]);
    let list: Value = serde_json::from_str(&list).expect("JSON");
    let items = list["items"].as_array().or_else(|| list.as_array());
    assert_eq!(items.map(Vec::len), Some(2), "{list}");
    let bad = cluster.cli(["consignment", "create", file, "--idempotency-key", "a b"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr)
            .contains("idempotency-key: only printable ASCII characters without spaces"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    // The services' rule, checked before any call: the CLI names its own option.
    let long = "k".repeat(129);
    let bad = cluster.cli(["consignment", "create", file, "--idempotency-key", &long]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr)
            .contains("--idempotency-key: longer than 128 characters"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    // A repeat is answered whatever the vessels say now: here, with no vessel service at all.
    let mut vessel = processes.pop().expect("vessel");
    assert_eq!(vessel.service, "vessel");
    vessel.stop(Duration::from_secs(20)).expect("vessel stops");
    let without_vessels = create(&mut shipping, &ann, "order-0001", consignment(500))
        .await
        .expect("a repeat needs no vessel");
    assert!(!without_vessels.created);
    assert_eq!(without_vessels.consignment.map(|c| c.id), Some(stored.id));
    let new_key = create(&mut shipping, &ann, "order-0002", consignment(500))
        .await
        .expect_err("a new consignment needs a vessel");
    assert_eq!(new_key.code(), Code::Unavailable, "{new_key:?}");
    drop(restarted);
}

#[tokio::test]
async fn rest_clients_repeat_a_create_with_the_idempotency_key_header() {
    let mut cluster = Cluster::local().expect("cluster");
    let mut processes = cluster.start_all(1).await.expect("services start");
    let gateway = cluster.start("gateway").await.expect("gateway");
    let url = gateway.http_url().expect("the gateway's HTTP address");
    processes.push(gateway);
    let token = cluster.sign_up_and_login("rest@example.com");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("HTTP client");
    let body = std::fs::read(example_consignment()).expect("consignment.json");
    let post = |path: &str, key: &str| {
        http.post(format!("{url}{path}"))
            .bearer_auth(token.trim())
            .header(header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", key)
    };

    let first = post("/v1/consignments", "rest-1")
        .body(body.clone())
        .send()
        .await
        .expect("create");
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await.expect("JSON");
    assert_eq!(first["created"], true, "{first}");
    let again = post("/v1/consignments", "rest-1")
        .body(body.clone())
        .send()
        .await
        .expect("repeat");
    assert_eq!(again.status(), StatusCode::OK);
    let again: Value = again.json().await.expect("JSON");
    assert_ne!(again["created"], true, "{again}");
    assert_eq!(again["consignment"], first["consignment"]);

    // Refusals are problems with their status: the key reused for another body, a malformed
    // key, and a key on a route that would not honour it (a repeat there would not be safe).
    let other = String::from_utf8(body.clone())
        .expect("UTF-8")
        .replacen("55000", "55001", 1);
    let refused = [
        (
            post("/v1/consignments", "rest-1").body(other),
            "idempotency-key: already used for a different consignment",
        ),
        (
            post("/v1/consignments", "bad key").body(body.clone()),
            "idempotency-key: only printable ASCII characters without spaces",
        ),
        (
            post("/v1/users", "rest-2").body(
                r#"{"name": "Keyed", "email": "keyed@example.com", "password": "long enough"}"#,
            ),
            "this route does not honour an Idempotency-Key",
        ),
    ];
    for (request, reason) in refused {
        let response = request.send().await.expect("send");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let problem: Value = response.json().await.expect("JSON");
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with(reason)),
            "{problem}"
        );
    }

    drop(processes);
}

#[tokio::test]
async fn a_keyed_create_an_instance_never_answered_is_retried_elsewhere_and_stored_once() {
    let mut cluster = Cluster::local().expect("cluster");
    let _user = cluster.start("user").await.expect("user");
    let _vessel = cluster.start("vessel").await.expect("vessel");
    let frozen = cluster.start("consignment").await.expect("consignment a");
    let healthy = cluster.start("consignment").await.expect("consignment b");
    let token = cluster.sign_up_and_login("retried@example.com");
    // A channel of its own for each part: one that saw the frozen instance time out steers
    // around it (its latency estimate). Which instance a channel tries first is its own choice,
    // so each part goes on until the frozen instance was tried, as the failure or this process's
    // own balancer metrics tell.
    let settings = ClientSettings {
        timeout_ms: 1_500,
        attempt_timeout_ms: 300,
        ..ClientSettings::default()
    };
    let channel = || {
        let (_, settings) = watch::channel(settings.clone());
        ShippingServiceClient::new(BalancedChannel::fixed(
            "consignment",
            vec![frozen.address().to_owned(), healthy.address().to_owned()],
            settings,
        ))
    };
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("this test's metrics recorder");
    let retries = || {
        sum_samples(
            &metrics.render(),
            "shippy_client_retries_total",
            &[("target", "consignment")],
        )
    };
    frozen.freeze();

    // Without a key, a create the frozen instance took is not sent again: it may have been done.
    let mut failed = false;
    let mut client = channel();
    for _ in 0..30 {
        let unkeyed = pb::Consignment {
            description: "Cargo without a key".into(),
            ..consignment(100)
        };
        if let Err(status) = client.create_consignment(with_token(unkeyed, &token)).await {
            assert!(
                matches!(status.code(), Code::DeadlineExceeded | Code::Unavailable),
                "{status:?}"
            );
            failed = true;
            break;
        }
    }
    assert!(
        failed,
        "an unkeyed create sent to the frozen instance fails"
    );
    assert_eq!(retries(), 0.0, "and is never sent again");

    // With a key, it is tried again on the other instance: none fails.
    let mut ids = Vec::new();
    let mut client = channel();
    for n in 0..30 {
        let answer = client
            .create_consignment(keyed(
                with_token(consignment(100), &token),
                &format!("retried-{n}"),
            ))
            .await
            .expect("a keyed create is retried on the healthy instance")
            .into_inner();
        assert!(answer.created);
        ids.push(answer.consignment.expect("consignment").id);
        if retries() >= 1.0 {
            break;
        }
    }
    assert!(
        retries() >= 1.0,
        "a keyed create sent to the frozen instance was retried"
    );

    // Thawed, the frozen instance may still work through what it took; whatever it does with a
    // keyed create finds the key taken (the instances share the store). Every key names one
    // consignment.
    frozen.thaw();
    let mut direct = client_of(&healthy).await;
    for (n, id) in ids.iter().enumerate() {
        let again = create(
            &mut direct,
            &token,
            &format!("retried-{n}"),
            consignment(100),
        )
        .await
        .expect("repeated");
        assert!(!again.created);
        assert_eq!(again.consignment.map(|c| c.id).as_ref(), Some(id));
    }
    let stored = direct
        .get_consignments(with_token(GetRequest::default(), &token))
        .await
        .expect("list")
        .into_inner()
        .consignments
        .into_iter()
        .filter(|c| c.description == "Cargo named by a key")
        .count();
    assert_eq!(stored, ids.len(), "one consignment per key");
}

/// A vessel added again with its key is the vessel the first call added: over gRPC, the CLI and
/// REST. The key is the caller's own: another user's equal key adds another vessel, and the key
/// reused for a different vessel is refused.
#[tokio::test]
async fn a_vessel_added_again_with_its_key_is_the_first_one() {
    let mut cluster = Cluster::local().expect("cluster");
    let mut processes = cluster.start_all(1).await.expect("services start");
    let vessel = ServiceProcess::of(&processes, "vessel");
    let mut fleet = VesselServiceClient::connect(format!("http://{}", vessel.address()))
        .await
        .expect("connect");
    let bob = cluster.sign_up_and_login("bob@example.com");
    let ann = cluster.sign_up_and_login("ann@example.com");
    let ship = |name: &str, capacity: i32| vessel_pb::Vessel {
        name: name.into(),
        capacity,
        max_weight: 90_000,
        available: true,
        ..Default::default()
    };
    let mut add = async |token: &str, key: &str, asked: vessel_pb::Vessel| {
        fleet
            .create(keyed(with_token(asked, token), key))
            .await
            .map(tonic::Response::into_inner)
    };

    let first = add(&ann, "ship-1", ship("Keyed Ship", 7))
        .await
        .expect("added");
    assert!(first.created);
    let added = first.vessel.expect("vessel");
    let again = add(&ann, "ship-1", ship("Keyed Ship", 7))
        .await
        .expect("repeat");
    assert!(!again.created);
    assert_eq!(again.vessel.as_ref(), Some(&added));
    let reused = add(&ann, "ship-1", ship("Another Ship", 7))
        .await
        .expect_err("the key of another vessel");
    assert_eq!(
        (reused.code(), reused.message()),
        (
            Code::FailedPrecondition,
            "idempotency-key: already used for a different vessel; a new vessel needs a new key"
        )
    );
    let bobs = add(&bob, "ship-1", ship("Keyed Ship", 7))
        .await
        .expect("bob's own key");
    assert!(bobs.created);
    assert_ne!(bobs.vessel.map(|v| v.id), Some(added.id.clone()));

    // Through the CLI (logged in as ann): the second run with the key adds nothing.
    const CLI_ADD: [&str; 12] = [
        "vessel",
        "create",
        "--name",
        "Cli Ship",
        "--capacity",
        "9",
        "--max-weight",
        "90000",
        "--idempotency-key",
        "ship-2",
        "--output",
        "json",
    ];
    let once: Value = serde_json::from_str(&cluster.cli_ok(CLI_ADD)).expect("JSON");
    let twice: Value = serde_json::from_str(&cluster.cli_ok(CLI_ADD)).expect("JSON");
    assert_eq!(once, twice);
    let table = cluster.cli_ok(&CLI_ADD[..10]);
    assert!(
        table.contains("Vessel already created by a request with this key"),
        "{table}"
    );

    // Over REST, through the gateway's Idempotency-Key header.
    let gateway = cluster.start("gateway").await.expect("gateway");
    let url = gateway.http_url().expect("the gateway's HTTP address");
    processes.push(gateway);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("HTTP client");
    let post = || {
        http.post(format!("{url}/v1/vessels"))
            .bearer_auth(ann.trim())
            .header("Idempotency-Key", "ship-3")
            .json(&serde_json::json!({"name": "Rest Ship", "capacity": 11, "max_weight": 90000}))
            .send()
    };
    let rest_first: Value = post().await.expect("create").json().await.expect("JSON");
    let rest_again: Value = post().await.expect("repeat").json().await.expect("JSON");
    assert_eq!(rest_first["created"], true, "{rest_first}");
    assert_ne!(rest_again["created"], true, "{rest_again}");
    assert_eq!(rest_first["vessel"], rest_again["vessel"]);

    // The fleet: the three seeded vessels and one per key and user, nothing twice.
    let listed: Value =
        serde_json::from_str(&cluster.cli_ok(["--output", "json", "vessel", "list"]))
            .expect("JSON");
    let mut names: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v["name"].as_str().expect("name"))
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "Boaty McBoatface",
            "Cli Ship",
            "Ever Roomier",
            "Keyed Ship",
            "Keyed Ship",
            "Rest Ship",
            "Small Fry"
        ]
    );
}
