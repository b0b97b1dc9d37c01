//! The whole system on its production backends: etcd for discovery and a MongoDB-compatible server
//! (FerretDB 1.24 on SQLite) for the stores, all real processes.

use std::time::{Duration, Instant};

use shippy_proto::consignment::v1::{
    Consignment, Container, GetRequest, shipping_service_client::ShippingServiceClient,
};
use shippy_test_support::{
    Cluster, ServiceProcess,
    etcd::Etcd,
    example_consignment,
    ferretdb::{FerretDb, unique_database},
};
use tonic::{Code, Request};
use tonic_health::pb::health_check_response::ServingStatus;

async fn production_cluster(etcd: &Etcd, mongo: &FerretDb) -> Cluster {
    let mut cluster = Cluster::on_etcd(etcd, 3).await.expect("cluster");
    for (key, value) in mongo.store_env(&unique_database("system")) {
        cluster.set_env(&key, &value);
    }
    cluster
}

fn request(token: &str, weight: i32) -> Request<Consignment> {
    let mut request = Request::new(Consignment {
        description: format!("cargo of {weight}"),
        weight,
        containers: vec![Container {
            customer_id: "c1".into(),
            origin: "Hamburg".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    request
}

async fn shipping(process: &ServiceProcess) -> ShippingServiceClient<tonic::transport::Channel> {
    ShippingServiceClient::connect(format!("http://{}", process.address()))
        .await
        .expect("connect")
}

async fn listed(process: &ServiceProcess, token: &str) -> Vec<Consignment> {
    let mut get = Request::new(GetRequest::default());
    get.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    shipping(process)
        .await
        .get_consignments(get)
        .await
        .expect("list")
        .into_inner()
        .consignments
}

async fn health(process: &ServiceProcess) -> Option<ServingStatus> {
    shippy_shared::probe::check(process.address(), "", Duration::from_secs(1))
        .await
        .ok()
}

#[tokio::test]
async fn cli_story_on_etcd_and_mongodb_survives_a_restart_of_every_service() {
    let etcd = Etcd::start().await.expect("etcd starts");
    let mongo = FerretDb::start().expect("FerretDB starts");
    let mut cluster = production_cluster(&etcd, &mongo).await;
    let mut processes = cluster.start_all(1).await.expect("services start");

    let token = cluster.sign_up_and_login("prod@example.com");
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
    let duplicate = cluster.cli([
        "user",
        "create",
        "--name",
        "Again",
        "--email",
        "prod@example.com",
        "--password",
        "another good passphrase",
    ]);
    assert!(!duplicate.status.success());
    assert!(String::from_utf8_lossy(&duplicate.stderr).contains("already exists"));

    for process in &mut processes {
        assert!(
            process
                .stop(Duration::from_secs(20))
                .expect("stops")
                .success()
        );
    }
    let processes = cluster.start_all(1).await.expect("services start again");

    let consignments = listed(&processes[2], &token).await;
    assert_eq!(consignments.len(), 1, "consignment survived the restart");
    assert_eq!(consignments[0].vessel_id, "vessel001");
    cluster.cli_ok([
        "login",
        "--email",
        "prod@example.com",
        "--password",
        "correct horse",
    ]);
    let fleet = cluster.cli_ok(["--output", "json", "vessel", "list"]);
    let fleet: serde_json::Value = serde_json::from_str(&fleet).expect("JSON");
    assert_eq!(
        fleet.as_array().map(Vec::len),
        Some(3),
        "seeded once, not again on restart"
    );
    let duplicate = cluster.cli([
        "user",
        "create",
        "--name",
        "Again",
        "--email",
        "PROD@example.com",
        "--password",
        "another good passphrase",
    ]);
    assert!(
        String::from_utf8_lossy(&duplicate.stderr).contains("already exists"),
        "unique email index after restart"
    );
}

#[tokio::test]
async fn mongodb_down_means_unavailable_and_nothing_acknowledged_is_lost() {
    let etcd = Etcd::start().await.expect("etcd starts");
    let mut mongo = FerretDb::start().expect("FerretDB starts");
    let mut cluster = production_cluster(&etcd, &mongo).await;
    let processes = cluster.start_all(1).await.expect("services start");
    let token = cluster.sign_up_and_login("outage@example.com");
    let consignment = &processes[2];

    let mut acknowledged = Vec::new();
    for weight in 1..=10 {
        let created = shipping(consignment)
            .await
            .create_consignment(request(&token, weight))
            .await
            .expect("created");
        acknowledged.push(created.into_inner().consignment.expect("consignment").id);
    }

    // Hard stop: no chance to flush anything that was not already acknowledged.
    mongo.kill();
    let status = shipping(consignment)
        .await
        .create_consignment(request(&token, 99))
        .await
        .expect_err("no store");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("nothing was saved"),
        "{}",
        status.message()
    );
    let start = Instant::now();
    while health(consignment).await != Some(ServingStatus::NotServing) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "health turns NOT_SERVING while MongoDB is down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("NOT_SERVING {:?} after MongoDB went down", start.elapsed());

    mongo.restart().expect("FerretDB restarts");
    let start = Instant::now();
    for process in &processes {
        while health(process).await != Some(ServingStatus::Serving) {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "{} recovers on its own",
                process.service
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!(
        "all services SERVING again {:?} after MongoDB came back",
        start.elapsed()
    );
    shipping(consignment)
        .await
        .create_consignment(request(&token, 11))
        .await
        .expect("works again");

    let stored: Vec<String> = listed(consignment, &token)
        .await
        .into_iter()
        .map(|c| c.id)
        .collect();
    for id in &acknowledged {
        assert!(stored.contains(id), "acknowledged consignment {id} lost");
    }
    assert_eq!(stored.len(), 11, "the refused consignment was not stored");
}
