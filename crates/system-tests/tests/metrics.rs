//! Metrics with the real things: real service processes serve `/metrics` on their admin ports, a
//! real Prometheus (Debian's package) scrapes them, and the test asserts through Prometheus's query
//! API that the counters match the calls it made, and that every query of the committed Grafana
//! dashboard (`deploy/grafana/shippy.json`) returns data; and that a service nobody scrapes does
//! not grow with the calls it serves.

use std::time::Duration;

use shippy_proto::vessel::v1::{
    GetRequest, Specification, vessel_service_client::VesselServiceClient,
};
use shippy_test_support::{Cluster, consignment_json, http, prometheus::Prometheus};
use tonic::Code;

/// How long counters may take to show in Prometheus (it scrapes every second).
const SCRAPED_WITHIN: Duration = Duration::from_secs(30);

/// The dashboard's queries, with Grafana's `$__rate_interval` as a window that holds the whole
/// load of the test (a rate over a quiet window is 0, and a ratio of two such rates has no value).
fn dashboard_queries() -> Vec<(String, String)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/shippy.json"
    );
    let text = std::fs::read_to_string(path).expect("the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let expr = target["expr"].as_str().expect("a PromQL expr");
            queries.push((
                panel["title"].as_str().unwrap_or_default().to_owned(),
                expr.replace("$__rate_interval", "5m"),
            ));
        }
    }
    assert!(queries.len() >= 15, "{queries:?}");
    queries
}

/// The single value of `expr` (which must sum to one series), or 0 when there is none yet.
fn value(prometheus: &Prometheus, expr: &str) -> f64 {
    prometheus
        .query(expr)
        .expect("query")
        .first()
        .map_or(0.0, |sample| sample.value)
}

#[tokio::test]
async fn prometheus_counts_the_calls_made_and_every_dashboard_query_has_data() {
    let mut cluster = Cluster::local().expect("cluster");
    let user = cluster.start("user").await.expect("user starts");
    // A rate limit the test can exceed on purpose: a burst of 5, then 1 call a second.
    let vessel = cluster
        .start_with(
            "vessel",
            &[
                ("SHIPPY_LIMITS__REQUESTS_PER_SECOND", "1"),
                ("SHIPPY_LIMITS__BURST", "5"),
            ],
        )
        .await
        .expect("vessel starts");
    let consignment = cluster
        .start("consignment")
        .await
        .expect("consignment starts");
    let processes = [&user, &vessel, &consignment];

    // Every instance registers where its metrics are, and serves them with the probes.
    let targets: Vec<String> = processes
        .iter()
        .map(|p| {
            p.instance
                .metadata
                .get("metrics_address")
                .unwrap_or_else(|| panic!("no metrics_address in {:?}", p.instance))
                .clone()
        })
        .collect();
    for target in &targets {
        let get = |path| http::get(target, path, Duration::from_secs(5)).expect("admin port");
        assert_eq!(get("/livez").0, 200);
        assert_eq!(get("/readyz").0, 200);
        let (status, text) = get("/metrics");
        assert_eq!(status, 200);
        assert!(text.contains("shippy_build_info{"), "{text}");
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
    }
    let prometheus = Prometheus::start(&targets).expect("Prometheus starts");
    prometheus
        .wait_for("sum(up)", SCRAPED_WITHIN, |s| {
            s.first().is_some_and(|s| s.value == 3.0)
        })
        .expect("all three instances scraped");

    let server = |method: &str, code: &str| {
        format!(r#"sum(grpc_server_handled_total{{grpc_method="{method}",grpc_code="{code}"}})"#)
    };
    // The calls: sign up and log in, three consignments in two rounds, then a burst past vessel's
    // rate limit.
    cluster.sign_up_and_login("metrics@example.com");
    let file = cluster.dir().join("consignment.json");
    std::fs::write(&file, consignment_json(500, 2)).expect("consignment file");
    const CREATES: u32 = 3;
    let create = || cluster.cli_ok(["consignment", "create", file.to_str().expect("utf-8")]);
    create();
    // The second round once Prometheus has seen the first: a rate (and so most dashboard
    // queries) needs two scrapes that differ, and one round may fall within one scrape.
    prometheus
        .wait_for(&server("CreateConsignment", "OK"), SCRAPED_WITHIN, |s| {
            s.first().is_some_and(|s| s.value == 1.0)
        })
        .expect("the first round scraped");
    for _ in 1..CREATES {
        create();
    }
    let mut client = VesselServiceClient::connect(format!("http://{}", vessel.address()))
        .await
        .expect("connect");
    let (mut answered, mut limited) = (0_u32, 0_u32);
    for _ in 0..12 {
        match client.get_vessels(GetRequest::default()).await {
            Ok(_) => answered += 1,
            Err(status) if status.code() == Code::ResourceExhausted => limited += 1,
            Err(status) => panic!("unexpected {status:?}"),
        }
    }
    assert!(limited > 0, "the burst went past the limit");

    // Server side, exactly the calls made.
    let expected = [
        (server("Create", "OK"), 1),
        (server("Auth", "OK"), 1),
        (server("CreateConsignment", "OK"), CREATES),
        // Tokens are verified where they arrive: the consignment service fetched the user
        // service's public keys once.
        (server("PublicKeys", "OK"), 1),
        (server("FindAvailable", "OK"), CREATES),
        (server("GetVessels", "OK"), answered),
        (server("GetVessels", "ResourceExhausted"), limited),
        (
            r#"sum(shippy_server_rate_limited_total{grpc_method="GetVessels"})"#.to_owned(),
            limited,
        ),
        // Client side: consignment's calls to user and vessel, by target.
        (
            r#"sum(grpc_client_handled_total{target="vessel",grpc_method="FindAvailable",grpc_code="OK"})"#.to_owned(),
            CREATES,
        ),
        (
            r#"sum(grpc_client_handled_total{target="user",grpc_method="PublicKeys",grpc_code="OK"})"#.to_owned(),
            1,
        ),
        (
            r#"sum(shippy_client_attempts_total{target="vessel",outcome="answered"})"#.to_owned(),
            CREATES,
        ),
        (
            r#"sum(grpc_server_handling_seconds_count{grpc_method="CreateConsignment"})"#.to_owned(),
            CREATES,
        ),
        // Store operations, timed whatever the backend: one user and three consignments stored,
        // one login's lookup, three vessel searches.
        (
            r#"sum(shippy_store_operation_seconds_count{operation="create",outcome="ok"})"#.to_owned(),
            1 + CREATES,
        ),
        (
            r#"sum(shippy_store_operation_seconds_count{operation="find_by_email",outcome="ok"})"#.to_owned(),
            1,
        ),
        (
            r#"sum(shippy_store_operation_seconds_count{operation="find_available",outcome="ok"})"#.to_owned(),
            CREATES,
        ),
    ];
    for (expr, count) in &expected {
        prometheus
            .wait_for(expr, SCRAPED_WITHIN, |s| {
                s.first().is_some_and(|s| s.value == f64::from(*count))
            })
            .unwrap_or_else(|error| panic!("{error:#}"));
    }
    assert_eq!(
        value(&prometheus, "sum(shippy_server_in_flight_calls)"),
        0.0
    );
    // One question per token (does its user still exist?), not one per call: the three calls
    // carried the same token.
    assert_eq!(
        value(
            &prometheus,
            r#"sum(grpc_server_handled_total{grpc_method="ValidateToken"})"#
        ),
        1.0,
        "one call to the user service per token, not per authenticated call"
    );
    assert_eq!(
        value(
            &prometheus,
            r#"sum(shippy_auth_user_checks_total{outcome="confirmed"})"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &prometheus,
            r#"sum(shippy_balancer_endpoints{target="vessel"})"#
        ),
        1.0
    );
    assert_eq!(value(&prometheus, "sum(shippy_registry_registered)"), 3.0);
    assert_eq!(value(&prometheus, "count(shippy_build_info)"), 3.0);
    // Every instance's registration is confirmed by heartbeats, well within its TTL.
    assert_eq!(
        value(
            &prometheus,
            "count(shippy_registry_heartbeat_timestamp_seconds)"
        ),
        3.0
    );
    let oldest = value(
        &prometheus,
        "max(time() - shippy_registry_heartbeat_timestamp_seconds)",
    );
    assert!(oldest < 30.0, "a heartbeat {oldest} s old");

    // Every query of the dashboard has data after this load (so it cannot drift from the names).
    for (title, expr) in dashboard_queries() {
        prometheus
            .wait_for(&expr, SCRAPED_WITHIN, |samples| {
                samples.iter().any(|s| s.value.is_finite())
            })
            .unwrap_or_else(|error| panic!("dashboard panel {title:?}: {error:#}"));
    }
}

/// Makes `calls` `FindAvailable` calls on `client`'s one connection, 32 at a time; each must
/// find a vessel.
async fn find_available(client: &VesselServiceClient<tonic::transport::Channel>, calls: usize) {
    const AT_ONCE: usize = 32;
    let callers: Vec<_> = (0..AT_ONCE)
        .map(|caller| {
            let mut client = client.clone();
            let mine = calls / AT_ONCE + usize::from(caller < calls % AT_ONCE);
            tokio::spawn(async move {
                for _ in 0..mine {
                    let answer = client
                        .find_available(Specification {
                            capacity: 3,
                            max_weight: 55_000,
                        })
                        .await
                        .expect("FindAvailable");
                    assert!(answer.into_inner().vessel.is_some());
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.expect("caller");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_nobody_scrapes_does_not_grow_with_the_calls_it_serves() {
    let mut cluster = Cluster::local().expect("cluster");
    // A `FindAvailable` only reads, so nothing it does is kept and the process has no reason to
    // grow; the memory store, because a debug build serves it faster than SQLite.
    let vessel = cluster
        .start_with("vessel", &[("SHIPPY_STORE__BACKEND", "memory")])
        .await
        .expect("vessel starts");
    let client = VesselServiceClient::connect(format!("http://{}", vessel.address()))
        .await
        .expect("connect");
    // First the connection's buffers, the allocator's arenas and every lazily made metric handle
    // reach their working size.
    find_available(&client, 20_000).await;
    let rss = || vessel.status_kib("VmRSS").expect("the vessel's VmRSS");
    let before = rss();
    const CALLS: usize = 80_000;
    find_available(&client, CALLS).await;
    let grown = rss().saturating_sub(before);
    // Each call records two histogram samples (the call's duration and the store's). Kept until a
    // scrape, as they were, they took about 40 bytes a call: 3 MiB over these calls.
    assert!(
        grown < 1024,
        "the vessel grew by {grown} KiB over {CALLS} calls with no scrape (from {before} KiB)"
    );
}
