//! The MongoDB consignment store against a real wire-compatible server (FerretDB, see
//! `shippy_test_support::ferretdb`): the store contract, outages, restarts, and the readiness
//! supervisor of the whole service.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use shippy_consignment::{
    IDENTITY, Settings,
    domain::{Consignment, Container, NewConsignment},
    store::{self, ConsignmentStore},
};
use shippy_proto::consignment::v1 as pb;
use shippy_shared::{health, store::StoreError};
use shippy_test_support::ferretdb::{FerretDb, TEST_SELECTION_TIMEOUT, unique_database};
use tonic_health::pb::health_check_response::ServingStatus;

/// Bound of every "until" wait; generous for a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(20);

async fn open(server: &FerretDb, prefix: &str) -> Arc<dyn ConsignmentStore> {
    let registry = tempfile::tempdir().expect("temp dir");
    let settings = server.service_settings::<Settings>(&unique_database(prefix), registry.path());
    let opened = store::open(&settings).await.expect("open the mongo store");
    assert!(opened.mongo.is_some(), "mongodb backend selected");
    opened.store
}

/// A consignment as the service builds it: validated, with generated (time-ordered) ids.
fn consignment(description: &str, containers: usize) -> Consignment {
    NewConsignment::try_from(pb::Consignment {
        description: description.to_owned(),
        weight: 55_000,
        containers: (0..containers)
            .map(|i| pb::Container {
                customer_id: format!("cust{i:03}"),
                origin: "Manchester, United Kingdom".to_owned(),
                user_id: if i == 0 {
                    String::new()
                } else {
                    "user-9".to_owned()
                },
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })
    .expect("valid consignment")
    .assign("vessel001".to_owned(), "user-1")
}

#[tokio::test]
async fn consignments_round_trip_oldest_first() {
    let server = FerretDb::start().expect("FerretDB");
    let store = open(&server, "consignments_contract").await;
    assert_eq!(store.list().await.expect("list empty"), Vec::new());

    let created: Vec<Consignment> = (0..5)
        .map(|i| consignment(&format!("cargo {i}"), i + 1))
        .collect();
    // Stored newest first: the order of `list` must come from the ids, not from insertion.
    for c in created.iter().rev() {
        store.create(c).await.expect("create");
    }
    assert_eq!(store.list().await.expect("list"), created);

    // Every field survives, including a weight beyond i32 (BSON has no u32).
    let heavy = Consignment {
        weight: u32::MAX,
        containers: vec![Container {
            id: "k1".to_owned(),
            customer_id: "c".to_owned(),
            origin: "Derby".to_owned(),
            user_id: "u".to_owned(),
        }],
        ..consignment("heavy", 1)
    };
    store.create(&heavy).await.expect("create heavy");
    let listed = store.list().await.expect("list");
    assert_eq!(listed.last(), Some(&heavy));
    assert_eq!(listed.len(), 6);

    match store.create(&heavy).await {
        Err(StoreError::Duplicate(what)) => assert_eq!(what, format!("consignment {}", heavy.id)),
        other => panic!("expected Duplicate, got {other:?}"),
    }
}

#[tokio::test]
async fn outage_is_unavailable_and_acknowledged_writes_survive_a_restart() {
    let mut server = FerretDb::start().expect("FerretDB");
    let store = open(&server, "consignments_outage").await;
    let mut acknowledged = Vec::new();
    for i in 0..3 {
        let c = consignment(&format!("before {i}"), 2);
        store.create(&c).await.expect("create before the outage");
        acknowledged.push(c);
    }

    server.stop().expect("stop FerretDB");
    for i in 0..3 {
        let started = Instant::now();
        let result = store.create(&consignment(&format!("down {i}"), 1)).await;
        let took = started.elapsed();
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "write while down: {result:?}"
        );
        assert!(
            took < TEST_SELECTION_TIMEOUT + Duration::from_secs(1),
            "a write while down took {took:?}"
        );
    }
    assert!(matches!(
        store.list().await,
        Err(StoreError::Unavailable(_))
    ));

    server.restart().expect("restart FerretDB");
    let after = consignment("after", 1);
    shippy_test_support::write_when_back(WAIT, || store.as_ref().create(&after)).await;
    acknowledged.push(after);
    assert_eq!(store.list().await.expect("list"), acknowledged);
}

#[tokio::test]
async fn service_is_not_serving_until_mongodb_answers() {
    let mut server = FerretDb::start().expect("FerretDB");
    server
        .stop()
        .expect("stop FerretDB: the service starts without its database");
    let registry = tempfile::tempdir().expect("temp dir");
    let mut settings = server
        .service_settings::<Settings>(&unique_database("consignments_supervised"), registry.path());
    // Long enough for several supervisor rounds while draining.
    settings.common.shutdown.drain_ms = 2_500;
    let app = shippy_consignment::build(settings)
        .await
        .expect("builds while MongoDB is down");
    let mut service = shippy_test_support::InProcess::spawn(app);
    let address = service.address.clone();

    shippy_test_support::wait_health(
        &address,
        IDENTITY.grpc_service,
        ServingStatus::NotServing,
        WAIT,
    )
    .await;
    server.restart().expect("start FerretDB");
    shippy_test_support::wait_health(
        &address,
        IDENTITY.grpc_service,
        ServingStatus::Serving,
        WAIT,
    )
    .await;
    server.kill();
    shippy_test_support::wait_health(
        &address,
        IDENTITY.grpc_service,
        ServingStatus::NotServing,
        WAIT,
    )
    .await;
    server.restart().expect("start FerretDB after the crash");
    shippy_test_support::wait_health(
        &address,
        IDENTITY.grpc_service,
        ServingStatus::Serving,
        WAIT,
    )
    .await;

    // Shutting down reports NOT_SERVING, and the supervisor (stopped first) does not turn it
    // back to SERVING while the service drains.
    service.begin_stop();
    shippy_test_support::wait_health(
        &address,
        IDENTITY.grpc_service,
        ServingStatus::NotServing,
        WAIT,
    )
    .await;
    let draining = Instant::now();
    while draining.elapsed() < Duration::from_secs(2) && !service.is_finished() {
        let now = health::check(&address, IDENTITY.grpc_service, Duration::from_millis(500))
            .await
            .ok();
        assert!(
            matches!(now, Some(ServingStatus::NotServing) | None),
            "{now:?} while draining"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    service.finish().await;
}
