//! Resilience between services, with real processes: a frozen or killed instance costs no failed
//! call, writes are never sent twice, the breaker opens and closes, routing weights split calls
//! by version and a pin overrides them, and a caller's deadline bounds the calls made for it.
//! Outcomes only; the figures (failed calls, p99, recovery) are `make chaos`'s.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use shippy_proto::vessel::v1::{
    self as vessel, GetRequest, Specification, Vessel,
    vessel_service_client::VesselServiceClient,
    vessel_service_server::{VesselService, VesselServiceServer},
};
use shippy_shared::{
    config::{ClientSettings, VersionWeights},
    discovery::{ServiceInstance, balance::BalancedChannel, context},
};
use shippy_test_support::{Cluster, ServiceProcess, consignment_json, etcd::Etcd, http};
use tokio::sync::watch;
use tonic::{Code, Request, Response, Status};

/// A balanced vessel client in this process over `addresses` (fixed) with `settings`.
fn vessels_at(
    addresses: &[&str],
    settings: ClientSettings,
) -> VesselServiceClient<BalancedChannel> {
    let (_, rx) = watch::channel(settings);
    VesselServiceClient::new(BalancedChannel::fixed(
        "vessel",
        addresses.iter().map(|a| (*a).to_owned()).collect(),
        rx,
    ))
}

fn spec() -> Specification {
    Specification {
        capacity: 1,
        max_weight: 1,
    }
}

/// Calls of `method` that `process` served, from its own metrics.
fn served(process: &ServiceProcess, method: &str) -> f64 {
    process
        .metric("grpc_server_handled_total", &[("grpc_method", method)])
        .expect("metrics")
}

#[tokio::test]
async fn a_frozen_vessel_stops_getting_calls_and_no_call_fails() {
    let mut cluster = Cluster::local().expect("cluster");
    let _user = cluster.start("user").await.expect("user");
    let frozen = cluster.start("vessel").await.expect("vessel a");
    let healthy = cluster.start("vessel").await.expect("vessel b");
    let consignment = cluster
        .start_with(
            "consignment",
            &[("SHIPPY_CLIENT__ATTEMPT_TIMEOUT_MS", "300")],
        )
        .await
        .expect("consignment");
    cluster.sign_up_and_login("frozen@example.com");
    let file = cluster.dir().join("consignment.json");
    std::fs::write(&file, consignment_json(100, 1)).expect("file");

    frozen.freeze();
    const CALLS: usize = 8;
    for _ in 0..CALLS {
        cluster.cli_ok(["consignment", "create", file.to_str().expect("utf-8")]);
    }
    let attempts = |endpoint: &str, outcome: &str| {
        consignment
            .metric(
                "shippy_client_attempts_total",
                &[
                    ("target", "vessel"),
                    ("endpoint", endpoint),
                    ("outcome", outcome),
                ],
            )
            .expect("metrics")
    };
    // An attempt on a frozen process either times out or, when the HTTP/2 connection was not
    // set up yet, fails to set up: both are failed attempts the call recovers from.
    let failed_on_frozen =
        attempts(frozen.address(), "timeout") + attempts(frozen.address(), "broken");
    let answered_by_frozen = attempts(frozen.address(), "answered");
    let metrics = consignment.metrics().expect("metrics");
    frozen.thaw();
    assert!(
        failed_on_frozen >= 1.0,
        "the frozen vessel was tried: {metrics}"
    );
    assert!(
        failed_on_frozen <= 2.0,
        "after failing it stops getting calls: {failed_on_frozen} failed attempts of {CALLS} calls"
    );
    assert_eq!(answered_by_frozen, 0.0);
    assert_eq!(served(&healthy, "FindAvailable"), CALLS as f64);
    assert!(
        consignment
            .metric("shippy_client_retries_total", &[("target", "vessel")])
            .expect("metrics")
            >= 1.0
    );
}

#[tokio::test]
async fn a_killed_vessel_is_ejected_and_no_call_fails() {
    // On etcd: a killed instance's registration lasts until its lease expires (the local
    // registry notices a dead process at once, so callers would never see it).
    let etcd = Etcd::start().await.expect("etcd starts");
    let mut cluster = Cluster::on_etcd(&etcd, 10).await.expect("cluster");
    let _user = cluster.start("user").await.expect("user");
    let mut dead = cluster.start("vessel").await.expect("vessel a");
    let _alive = cluster.start("vessel").await.expect("vessel b");
    // Ejected for long enough to still be ejected when the test looks.
    let consignment = cluster
        .start_with("consignment", &[("SHIPPY_CLIENT__EJECT_BASE_MS", "60000")])
        .await
        .expect("consignment");
    cluster.sign_up_and_login("killed@example.com");
    let file = cluster.dir().join("consignment.json");
    std::fs::write(&file, consignment_json(100, 1)).expect("file");
    let dead_address = dead.address().to_owned();
    // SIGKILL: its registration stays until the lease expires, so callers still see it.
    dead.kill();
    for _ in 0..6 {
        cluster.cli_ok(["consignment", "create", file.to_str().expect("utf-8")]);
    }
    let ejections = consignment
        .metric(
            "shippy_balancer_ejections_total",
            &[("target", "vessel"), ("endpoint", &dead_address)],
        )
        .expect("metrics");
    assert!(ejections >= 1.0, "the dead instance was ejected");
    assert_eq!(
        consignment
            .metric(
                "shippy_balancer_endpoints",
                &[("target", "vessel"), ("state", "ejected")]
            )
            .expect("metrics"),
        1.0,
        "{}",
        consignment.metrics().expect("metrics")
    );
}

#[tokio::test]
async fn writes_are_never_sent_twice_and_reads_are_retried() {
    let mut cluster = Cluster::local().expect("cluster");
    let _user = cluster.start("user").await.expect("user");
    let frozen = cluster.start("vessel").await.expect("vessel a");
    let healthy = cluster.start("vessel").await.expect("vessel b");
    let token = cluster.sign_up_and_login("writer@example.com");
    let settings = ClientSettings {
        timeout_ms: 700,
        attempt_timeout_ms: 200,
        ..ClientSettings::default()
    };
    let mut client = vessels_at(&[frozen.address(), healthy.address()], settings);
    frozen.freeze();

    // Writes: one that went to the frozen instance fails; none is sent again elsewhere.
    let (mut created, mut failed) = (0, 0);
    for n in 0..6 {
        let mut request = Request::new(Vessel {
            name: format!("written-{n}"),
            capacity: 10,
            max_weight: 1_000,
            available: true,
            ..Vessel::default()
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
        match client.create(request).await {
            Ok(_) => created += 1,
            // No answer in time, or the connection to the frozen process broke: either way
            // the write may have reached it, so it is not sent again.
            Err(status) => {
                assert!(
                    matches!(status.code(), Code::DeadlineExceeded | Code::Unavailable),
                    "{status:?}"
                );
                failed += 1;
            }
        }
    }
    assert!(failed >= 1, "the frozen instance was picked for a write");

    // Reads: every one answered, whichever instance was picked.
    for _ in 0..6 {
        client
            .find_available(spec())
            .await
            .expect("a read is retried elsewhere");
    }

    // The healthy instance stored exactly the writes that succeeded (the frozen one is still
    // frozen, so it stored nothing), and handled no write twice.
    assert_eq!(served(&healthy, "Create"), f64::from(created));
    let mut direct = VesselServiceClient::connect(format!("http://{}", healthy.address()))
        .await
        .expect("connect");
    let stored = direct
        .get_vessels(GetRequest::default())
        .await
        .expect("list")
        .into_inner()
        .vessels
        .iter()
        .filter(|v| v.name.starts_with("written-"))
        .count();
    assert_eq!(stored, created as usize);
    frozen.thaw();
}

#[tokio::test]
async fn the_breaker_opens_on_a_failing_service_and_closes_when_it_recovers() {
    let mut cluster = Cluster::local().expect("cluster");
    let port = http::free_port().expect("port");
    let address = format!("127.0.0.1:{port}");
    let settings = ClientSettings {
        timeout_ms: 500,
        ..ClientSettings::default()
    };
    let mut client = vessels_at(&[&address], settings);
    let mut refused_locally = 0;
    for _ in 0..40 {
        let status = client
            .find_available(spec())
            .await
            .expect_err("nothing listens");
        assert_eq!(status.code(), Code::Unavailable);
        if status.message().contains("is failing most calls") {
            refused_locally += 1;
        }
    }
    assert!(
        refused_locally > 10,
        "the breaker opened: {refused_locally} of 40 refused locally"
    );

    let port_text = port.to_string();
    let _vessel = cluster
        .start_with("vessel", &[("SHIPPY_SERVER__PORT", &port_text)])
        .await
        .expect("vessel on that port");
    // As the failures age out of its window, calls go through again, then all of them. This loop
    // calls without pause, and every call the breaker refuses counts as one more request in its
    // 10 s window, so the refusal ratio falls only as the probes that get through succeed: it took
    // 13 to over 30 s on the 2-core test machine. The bound is generous, never a speed target.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut in_a_row = 0;
    while in_a_row < 20 {
        assert!(Instant::now() < deadline, "the breaker did not close");
        match client.find_available(spec()).await {
            Ok(_) => in_a_row += 1,
            Err(status) => {
                assert!(
                    status.message().contains("is failing most calls"),
                    "{status:?}"
                );
                in_a_row = 0;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test]
async fn weights_split_calls_by_version_live_and_a_pin_overrides_them() {
    let mut cluster = Cluster::local().expect("cluster");
    let blue = cluster
        .start_with("vessel", &[("SHIPPY_SERVER__VERSION", "0.1.0")])
        .await
        .expect("blue");
    let green = cluster
        .start_with("vessel", &[("SHIPPY_SERVER__VERSION", "0.2.0")])
        .await
        .expect("green");
    let weights = |text: &str| {
        let mut settings = ClientSettings::default();
        settings.routing.insert(
            "vessel".into(),
            text.parse::<VersionWeights>().expect("weights"),
        );
        settings
    };
    let (tx, rx) = watch::channel(weights("0.1.0=80,0.2.0=20"));
    let channel = BalancedChannel::discover(cluster.registry(), "vessel", rx)
        .await
        .expect("discover");
    let deadline = Instant::now() + Duration::from_secs(10);
    while channel.addresses().len() < 2 {
        assert!(Instant::now() < deadline, "both versions discovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut client = VesselServiceClient::new(channel);
    const CALLS: usize = 400;
    for _ in 0..CALLS {
        client.find_available(spec()).await.expect("answered");
    }
    let to_green = served(&green, "FindAvailable");
    assert_eq!(served(&blue, "FindAvailable") + to_green, CALLS as f64);
    // 20 % of 400 is 80; the binomial spread is about 8.
    assert!(
        (50.0..=110.0).contains(&to_green),
        "green got {to_green} of {CALLS}"
    );

    // A pin sends a call to the green side whatever the weights.
    for _ in 0..10 {
        let mut request = Request::new(spec());
        request
            .metadata_mut()
            .insert("x-shippy-route-vessel", "0.2.0".parse().expect("header"));
        client.find_available(request).await.expect("pinned");
    }
    assert_eq!(served(&green, "FindAvailable"), to_green + 10.0);

    // All traffic moved to green, live.
    tx.send_replace(weights("0.1.0=0,0.2.0=100"));
    let blue_before = served(&blue, "FindAvailable");
    for _ in 0..50 {
        client.find_available(spec()).await.expect("answered");
    }
    assert_eq!(
        served(&blue, "FindAvailable"),
        blue_before,
        "no call to blue after the switch"
    );
}

/// A stand-in vessel service that answers `FindAvailable` with one vessel and records the
/// `grpc-timeout` each call arrived with: what the consignment service passed on.
#[derive(Debug, Clone, Default)]
struct DeadlineRecorder {
    seen: Arc<Mutex<Vec<Option<Duration>>>>,
}

#[tonic::async_trait]
impl VesselService for DeadlineRecorder {
    async fn find_available(
        &self,
        _: Request<Specification>,
    ) -> Result<Response<vessel::Response>, Status> {
        Ok(Response::new(vessel::Response {
            vessel: Some(Vessel {
                id: "stand-in".into(),
                name: "Stand-in".into(),
                capacity: 100,
                max_weight: 100_000,
                available: true,
                ..Vessel::default()
            }),
            ..vessel::Response::default()
        }))
    }

    async fn create(&self, _: Request<Vessel>) -> Result<Response<vessel::Response>, Status> {
        Err(Status::unimplemented("stand-in"))
    }

    async fn get_vessels(
        &self,
        _: Request<GetRequest>,
    ) -> Result<Response<vessel::Response>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
}

// Multi-threaded: the CLI runs block this test's thread while the stand-in must answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_deadline_bounds_the_calls_made_for_it() {
    let mut cluster = Cluster::local().expect("cluster");
    let _user = cluster.start("user").await.expect("user");
    // The vessel service is a stand-in that records the deadline of each call it gets.
    let recorder = DeadlineRecorder::default();
    let seen = Arc::clone(&recorder.seen);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let record =
        tower::util::MapRequestLayer::new(move |request: ::http::Request<tonic::body::Body>| {
            let timeout = request
                .headers()
                .get("grpc-timeout")
                .and_then(|value| context::parse_timeout(value.as_bytes()));
            seen.lock().expect("lock").push(timeout);
            request
        });
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(record)
            .add_service(VesselServiceServer::new(recorder.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let _registration = cluster
        .registry()
        .register(ServiceInstance::new("vessel", "stand-in", address))
        .await
        .expect("register the stand-in");
    let _consignment = cluster.start("consignment").await.expect("consignment");
    cluster.sign_up_and_login("deadline@example.com");
    let file = cluster.dir().join("consignment.json");
    std::fs::write(&file, consignment_json(100, 1)).expect("file");

    // By default the consignment service gives each attempt of FindAvailable 1 s
    // (client.attempt_timeout_ms) of its own deadline: the CLI's 5 s, whole (the CLI's create
    // carries an idempotency key, so the CLI's own attempts would otherwise be bounded to 1 s too).
    cluster.set_env("SHIPPY_CLIENT__ATTEMPT_TIMEOUT_MS", "0");
    cluster.cli_ok(["consignment", "create", file.to_str().expect("utf-8")]);
    // A CLI with an 800 ms deadline: the call to vessel gets what is left of those 800 ms.
    cluster.set_env("SHIPPY_CLIENT__TIMEOUT_MS", "800");
    cluster.cli_ok(["consignment", "create", file.to_str().expect("utf-8")]);
    let seen = recorder.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0], Some(Duration::from_secs(1)), "{seen:?}");
    let passed_on = seen[1].expect("a deadline was passed on");
    assert!(
        passed_on > Duration::ZERO && passed_on <= Duration::from_millis(800),
        "the caller's deadline, minus what was spent: {passed_on:?}"
    );
}

// Multi-threaded: stopping a process blocks this test's thread while the calls go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_the_only_vessel_instance_costs_no_failed_call() {
    use shippy_proto::consignment::v1::{
        Consignment, Container, shipping_service_client::ShippingServiceClient,
    };
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let mut cluster = Cluster::local().expect("cluster");
    let _user = cluster.start("user").await.expect("user");
    let mut old_vessel = cluster.start("vessel").await.expect("vessel");
    let consignment = cluster.start("consignment").await.expect("consignment");
    let token = cluster.sign_up_and_login("restart@example.com");
    let client = ShippingServiceClient::connect(format!("http://{}", consignment.address()))
        .await
        .expect("connect");

    // Calls flow all along: each asks the vessel service (FindAvailable).
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let caller = {
        let (stop, sent, failed, token) = (
            Arc::clone(&stop),
            Arc::clone(&sent),
            Arc::clone(&failed),
            token.trim().to_owned(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut request = Request::new(Consignment {
                    description: "restart".into(),
                    weight: 10,
                    containers: vec![Container {
                        customer_id: "c".into(),
                        origin: "Felixstowe".into(),
                        ..Container::default()
                    }],
                    ..Consignment::default()
                });
                request.metadata_mut().insert(
                    "authorization",
                    format!("Bearer {token}").parse().expect("header"),
                );
                if let Err(status) = client.clone().create_consignment(request).await {
                    failed.lock().expect("lock").push(status);
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let calls_so_far = |n: usize| {
        let sent = Arc::clone(&sent);
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            let from = sent.load(Ordering::Relaxed);
            while sent.load(Ordering::Relaxed) < from + n {
                assert!(Instant::now() < deadline, "calls stopped flowing");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    calls_so_far(10).await;
    // SIGTERM: it deregisters, drains, stops; only then does the new one start.
    let status =
        tokio::task::block_in_place(|| old_vessel.stop(Duration::from_secs(20))).expect("stops");
    assert!(status.success());
    let _new_vessel = cluster.start("vessel").await.expect("new vessel");
    calls_so_far(10).await;
    stop.store(true, Ordering::Relaxed);
    caller.await.expect("caller");
    let failed = failed.lock().expect("lock");
    assert!(
        failed.is_empty(),
        "{} of {} calls failed: {:?}",
        failed.len(),
        sent.load(Ordering::Relaxed),
        failed.first()
    );
}
