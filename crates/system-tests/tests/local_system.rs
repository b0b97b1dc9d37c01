//! The whole system on the zero-dependency defaults: real service processes, the local file registry,
//! real gRPC over loopback and the real `shippy` CLI.

use std::time::Duration;

use shippy_proto::consignment::v1::{
    Consignment, Container, GetRequest, shipping_service_client::ShippingServiceClient,
};
use shippy_test_support::{
    Cluster, ServiceProcess, consignment_json, example_consignment, with_token,
};
use tonic::{Code, transport::Channel};

type Client = ShippingServiceClient<Channel>;

async fn client(process: &ServiceProcess) -> Client {
    ShippingServiceClient::connect(format!("http://{}", process.address()))
        .await
        .expect("connect")
}

fn cargo(weight: i32, containers: usize) -> Consignment {
    Consignment {
        description: "test cargo".into(),
        weight,
        containers: (0..containers)
            .map(|i| Container {
                customer_id: format!("c{i}"),
                origin: "Felixstowe".into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn served(process: &ServiceProcess) -> usize {
    process.log().matches("vessel found").count()
}

#[tokio::test]
async fn full_story_through_the_cli() {
    let mut cluster = Cluster::local().expect("cluster");
    let _processes = cluster.start_all(1).await.expect("services start");
    let created = cluster.cli_ok([
        "user",
        "create",
        "--name",
        "Ewan",
        "--email",
        "ewan@example.com",
        "--company",
        "BBC",
        "--password",
        "correct horse",
    ]);
    assert!(created.contains("ewan@example.com"), "{created}");
    assert!(!created.contains("correct horse"));

    let login = cluster.cli_ok([
        "login",
        "--email",
        "ewan@example.com",
        "--password",
        "correct horse",
    ]);
    assert!(login.contains("Logged in as ewan@example.com"), "{login}");

    let example = example_consignment();
    let out = cluster.cli_ok([
        std::ffi::OsStr::new("consignment"),
        "create".as_ref(),
        example.as_os_str(),
    ]);
    assert!(
        out.contains("Consignment created on vessel vessel001"),
        "{out}"
    );

    let listed = cluster.cli_ok(["--output", "json", "consignment", "list"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("JSON output");
    let items = listed.as_array().expect("array");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["vessel_id"], "vessel001");
    assert_eq!(items[0]["weight"], 55_000);
    assert_eq!(items[0]["containers"].as_array().map(Vec::len), Some(3));

    // The default file name is consignment.json in the working directory; `-` reads stdin.
    let piped = cluster.cli_with_stdin(
        ["consignment", "create", "-"],
        Some(&consignment_json(10_000, 2)),
    );
    assert!(piped.status.success(), "{}", stderr(&piped));
    let missing = cluster.cli(["consignment", "create"]);
    assert!(!missing.status.success());
    assert_eq!(
        stderr(&missing).trim(),
        "error: consignment.json: no such file"
    );
}

/// `make demo` starts every service at once and runs the CLI as soon as all are registered: the
/// consignment service may have looked at the registry just before the user and vessel services
/// registered, and sees them only at its next poll. A call in that gap waits for them instead of
/// failing with "the user service is unavailable" (a CI run of the demo once did).
#[tokio::test]
async fn a_call_right_after_its_dependencies_register_waits_for_discovery_to_see_them() {
    let mut cluster = Cluster::local().expect("cluster");
    // Started first, it scans the registry before the others are in it, and (with this poll)
    // not again for 3 s: the story below runs inside that gap.
    let consignment = cluster
        .start_with(
            "consignment",
            &[("SHIPPY_REGISTRY__LOCAL__POLL_MS", "3000")],
        )
        .await
        .expect("consignment starts");
    let _user = cluster.start("user").await.expect("user starts");
    let _vessel = cluster.start("vessel").await.expect("vessel starts");
    cluster.sign_up_and_login("early@example.com");

    let created = cluster.cli_with_stdin(
        ["consignment", "create", "-"],
        Some(&consignment_json(55_000, 3)),
    );
    assert!(
        created.status.success(),
        "{}\n{}",
        stderr(&created),
        consignment.log()
    );
    let out = String::from_utf8_lossy(&created.stdout);
    assert!(
        out.contains("Consignment created on vessel vessel001"),
        "{out}"
    );
}

#[tokio::test]
async fn nothing_fits_is_not_found() {
    let mut cluster = Cluster::local().expect("cluster");
    let processes = cluster.start_all(1).await.expect("services start");
    let token = cluster.sign_up_and_login("big@example.com");

    let status = client(&processes[2])
        .await
        .create_consignment(with_token(cargo(1_000_000_000, 3), &token))
        .await
        .expect_err("too heavy");
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        status.message(),
        "no available vessel can carry 3 containers weighing 1000000000 in total"
    );

    let out = cluster.cli_with_stdin(
        ["consignment", "create", "-"],
        Some(&consignment_json(1_000_000_000, 3)),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no available vessel can carry 3 containers"),
        "{}",
        stderr(&out)
    );
    // Nothing was stored.
    let listed = client(&processes[2])
        .await
        .get_consignments(with_token(GetRequest::default(), &token))
        .await
        .expect("list");
    assert!(listed.into_inner().consignments.is_empty());
}

#[tokio::test]
async fn calls_without_a_valid_token_are_unauthenticated() {
    let mut cluster = Cluster::local().expect("cluster");
    let processes = cluster.start_all(1).await.expect("services start");
    let mut shipping = client(&processes[2]).await;

    let status = shipping
        .create_consignment(cargo(10, 1))
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    for bad in [
        "garbage",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl",
    ] {
        let status = shipping
            .create_consignment(with_token(cargo(10, 1), bad))
            .await
            .expect_err("bad token");
        assert_eq!(status.code(), Code::Unauthenticated, "{bad}");
        let status = shipping
            .get_consignments(with_token(GetRequest::default(), bad))
            .await
            .expect_err("bad token");
        assert_eq!(status.code(), Code::Unauthenticated);
    }

    let out = cluster.cli(["consignment", "list"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).starts_with("error: not logged in"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let mut cluster = Cluster::local().expect("cluster");
    let processes = cluster.start_all(1).await.expect("services start");
    let token = cluster.sign_up_and_login("input@example.com");

    let malformed = cluster.cli_with_stdin(
        ["consignment", "create", "-"],
        Some("{\n  \"description\": \"x\",\n  \"weight\": ,\n}"),
    );
    assert!(!malformed.status.success());
    assert_eq!(
        stderr(&malformed).trim(),
        "error: -:3:13: invalid consignment JSON: expected value"
    );

    let invalid = cluster.cli_with_stdin(
        ["consignment", "create", "-"],
        Some(&consignment_json(0, 1)),
    );
    assert!(!invalid.status.success());
    assert!(
        stderr(&invalid).contains("rejected: weight: must be at least 1"),
        "{}",
        stderr(&invalid)
    );

    let mut bad = cargo(10, 2);
    bad.containers[1].origin.clear();
    let status = client(&processes[2])
        .await
        .create_consignment(with_token(bad, &token))
        .await
        .expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "containers[1].origin: must not be empty");

    let duplicate = cluster.cli([
        "user",
        "create",
        "--name",
        "X",
        "--email",
        "INPUT@example.com",
        "--password",
        "another good passphrase",
    ]);
    assert!(!duplicate.status.success());
    assert!(
        stderr(&duplicate).contains("already exists"),
        "{}",
        stderr(&duplicate)
    );

    let wrong = cluster.cli([
        "login",
        "--email",
        "input@example.com",
        "--password",
        "wrong password",
    ]);
    assert!(
        stderr(&wrong).contains("invalid email or password"),
        "{}",
        stderr(&wrong)
    );
}

#[tokio::test]
async fn adding_a_vessel_needs_a_login_and_the_caller_owns_it() {
    let mut cluster = Cluster::local().expect("cluster");
    let _processes = cluster.start_all(1).await.expect("services start");
    let args = [
        "vessel",
        "create",
        "--name",
        "Shippy One",
        "--capacity",
        "40",
        "--max-weight",
        "90000",
    ];
    let refused = cluster.cli(args);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).starts_with("error: not logged in"),
        "{}",
        stderr(&refused)
    );

    cluster.sign_up_and_login("owner@example.com");
    let users = cluster.cli_ok(["--output", "json", "user", "list"]);
    let users: serde_json::Value = serde_json::from_str(&users).expect("JSON");
    let owner = users[0]["id"].as_str().expect("user id").to_owned();
    let created = cluster.cli_ok([
        "--output",
        "json",
        "vessel",
        "create",
        "--name",
        "Shippy One",
        "--capacity",
        "40",
        "--max-weight",
        "90000",
    ]);
    let created: serde_json::Value = serde_json::from_str(&created).expect("JSON");
    assert_eq!(created[0]["owner_id"], owner.as_str());
    assert_eq!(created[0]["available"], true);

    // The new, smaller vessel is now the best fit for a 3-container, 55 t consignment.
    let example = example_consignment();
    let out = cluster.cli_ok([
        "--output",
        "json",
        "consignment",
        "create",
        example.to_str().expect("path"),
    ]);
    let out: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(out[0]["vessel_id"], created[0]["id"]);
}

#[tokio::test]
async fn three_vessel_instances_all_receive_traffic() {
    let mut cluster = Cluster::local().expect("cluster");
    let processes = cluster.start_all(3).await.expect("services start");
    let token = cluster.sign_up_and_login("fleet@example.com");
    let mut shipping = client(&processes[4]).await;
    for _ in 0..30 {
        shipping
            .create_consignment(with_token(cargo(100, 1), &token))
            .await
            .expect("created");
    }
    let counts: Vec<usize> = processes[1..4].iter().map(served).collect();
    assert_eq!(counts.iter().sum::<usize>(), 30);
    assert!(
        counts.iter().all(|&n| n >= 5),
        "uneven balancing: {counts:?}"
    );
}

/// Sends consignments while `disrupt` takes vessel instance `processes[1]` away; every call must
/// succeed and the surviving vessel instance must take the traffic. `processes` is user, vessel,
/// vessel, consignment.
async fn no_failed_call_while(
    mut processes: Vec<ServiceProcess>,
    token: &str,
    disrupt: impl FnOnce(&mut ServiceProcess) + Send + 'static,
) {
    let mut shipping = client(&processes[3]).await;
    for _ in 0..10 {
        shipping
            .create_consignment(with_token(cargo(100, 1), token))
            .await
            .expect("created");
    }
    let mut victim = processes.remove(1);
    assert!(
        served(&victim) > 0,
        "the victim served nothing before the disruption"
    );
    let survivor_before = served(&processes[1]);
    let disruption = tokio::task::spawn_blocking(move || {
        disrupt(&mut victim);
        victim
    });
    let mut failures = Vec::new();
    let mut calls = 0;
    while !disruption.is_finished() || calls < 40 {
        calls += 1;
        if let Err(status) = shipping
            .create_consignment(with_token(cargo(100, 1), token))
            .await
        {
            failures.push(status);
        }
    }
    let _victim = disruption.await.expect("disruption");
    assert!(
        failures.is_empty(),
        "{} of {calls} calls failed: {failures:?}",
        failures.len()
    );
    let survivor = served(&processes[1]) - survivor_before;
    assert!(
        survivor >= 20,
        "the surviving instance took the traffic ({survivor} of {calls})"
    );
}

#[tokio::test]
async fn a_stopped_instance_stops_receiving_traffic_with_no_failed_call() {
    let mut cluster = Cluster::local().expect("cluster");
    let processes = cluster.start_all(2).await.expect("services start");
    let token = cluster.sign_up_and_login("drain@example.com");
    let registry = cluster.local_registry_dir().join("vessel");
    no_failed_call_while(processes, &token, move |victim| {
        let status = victim.stop(Duration::from_secs(20)).expect("stops");
        assert!(status.success(), "SIGTERM exits 0, got {status}");
        let id = &victim.instance.id;
        assert!(
            !registry.join(format!("{id}.json")).exists(),
            "deregistered on SIGTERM"
        );
    })
    .await;
}

#[tokio::test]
async fn a_killed_instance_costs_no_failed_call() {
    let mut cluster = Cluster::local().expect("cluster");
    let processes = cluster.start_all(2).await.expect("services start");
    let token = cluster.sign_up_and_login("crash@example.com");
    no_failed_call_while(processes, &token, ServiceProcess::kill).await;
}

#[tokio::test]
async fn killed_instance_leaves_discovery_and_user_service_needs_a_secret() {
    let mut cluster = Cluster::local().expect("cluster");
    let mut vessel = cluster.start("vessel").await.expect("vessel starts");
    let mut watch = {
        cluster
            .registry()
            .subscribe("vessel")
            .await
            .expect("subscribe")
    };
    assert_eq!(watch.borrow().len(), 1);
    vessel.kill();
    // Within the TTL (10 s); on one host the dead process is noticed at the next scan.
    tokio::time::timeout(Duration::from_secs(10), watch.wait_for(Vec::is_empty))
        .await
        .expect("evicted within the TTL")
        .expect("watch open");

    cluster.set_env("SHIPPY_AUTH__DEV_MODE", "false");
    let error = cluster
        .start("user")
        .await
        .expect_err("no secret, no start");
    assert!(
        error.to_string().contains("SHIPPY_AUTH__JWT_SECRET"),
        "{error}"
    );
}
