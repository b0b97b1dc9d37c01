//! The MongoDB vessel store against a real wire-compatible server (FerretDB, see
//! `shippy_test_support::ferretdb`): the store contract (the best-fit query answers exactly what
//! `Specification::best_fit` answers), outages, restarts, and the readiness supervisor with seeding.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use mongodb::bson::Document;
use shippy_proto::vessel::v1::{self as pb, vessel_service_client::VesselServiceClient};
use shippy_shared::store::StoreError;
use shippy_test_support::ferretdb::{FerretDb, TEST_SELECTION_TIMEOUT, unique_database};
use shippy_vessel::{
    IDENTITY, Settings,
    domain::{Specification, Vessel, default_fleet},
    store::{self, VesselStore, mongo::FIT_INDEX},
};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

/// Bound of every "until" wait; generous for a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(20);

async fn open(server: &FerretDb, prefix: &str) -> Arc<dyn VesselStore> {
    let registry = tempfile::tempdir().expect("temp dir");
    let settings = server.service_settings::<Settings>(&unique_database(prefix), registry.path());
    let opened = store::open(&settings).await.expect("open the mongo store");
    assert!(opened.mongo.is_some(), "mongodb backend selected");
    opened.store
}

fn vessel(id: &str, capacity: u32, max_weight: u32, available: bool) -> Vessel {
    Vessel {
        id: id.to_owned(),
        name: format!("The {id}"),
        capacity,
        max_weight,
        available,
        owner_id: if available {
            String::new()
        } else {
            "owner-1".to_owned()
        },
    }
}

#[tokio::test]
async fn vessels_round_trip_and_ids_are_unique() {
    let server = FerretDb::start().expect("FerretDB");
    let store = open(&server, "vessels_contract").await;
    assert_eq!(store.count().await.expect("count"), 0);

    let fleet = [
        vessel("v2", 10, 1_000, true),
        vessel("v1", u32::MAX, u32::MAX, false),
        vessel("v3", 1, 1, true),
    ];
    for v in &fleet {
        store.create(v).await.expect("create");
    }
    let mut by_id = fleet.to_vec();
    by_id.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(store.list().await.expect("list"), by_id, "ordered by id");
    assert_eq!(store.count().await.expect("count"), 3);

    match store.create(&vessel("v2", 99, 99, true)).await {
        Err(StoreError::Duplicate(what)) => assert_eq!(what, "vessel v2"),
        other => panic!("expected Duplicate, got {other:?}"),
    }
    assert_eq!(store.count().await.expect("count"), 3);

    // Seeding an empty store adds the default fleet once.
    let empty = open(&server, "vessels_seed").await;
    assert_eq!(store::seed_if_empty(empty.as_ref()).await.expect("seed"), 3);
    assert_eq!(
        store::seed_if_empty(empty.as_ref())
            .await
            .expect("seed again"),
        0
    );
    assert_eq!(empty.list().await.expect("list"), default_fleet());
}

#[tokio::test]
async fn find_available_answers_exactly_what_best_fit_answers() {
    let server = FerretDb::start().expect("FerretDB");
    let store = open(&server, "vessels_fit").await;
    let fleet = [
        // Ties in both dimensions, broken by id; ids whose byte order differs from
        // case-insensitive or numeric order.
        vessel("b-tie", 5, 100, true),
        vessel("a-tie", 5, 100, true),
        vessel("B-tie", 5, 100, true),
        vessel("vessel10", 20, 5_000, true),
        vessel("vessel9", 20, 5_000, true),
        // Same capacity, different weights.
        vessel("heavy", 20, 9_000, true),
        // Better fits that are unavailable.
        vessel("busy-small", 3, 100, false),
        vessel("busy-exact", 20, 5_000, false),
        // Large in one dimension only.
        vessel("wide", 10_000, 10, true),
        vessel("strong", 1, 1_000_000, true),
        vessel("huge", 100_000, 200_000_000, true),
        vessel("édition", 7, 100, true),
        vessel("zulu", 7, 100, true),
    ];
    for v in &fleet {
        store.create(v).await.expect("create");
    }
    let mut specs = Vec::new();
    for capacity in [
        0, 1, 3, 5, 6, 7, 8, 10, 20, 21, 10_000, 10_001, 100_000, 100_001,
    ] {
        for max_weight in [
            0,
            1,
            10,
            11,
            100,
            101,
            5_000,
            5_001,
            9_000,
            1_000_000,
            200_000_001,
        ] {
            specs.push(Specification {
                capacity,
                max_weight,
            });
        }
    }
    let mut found = 0;
    for spec in &specs {
        let expected = spec.best_fit(&fleet).cloned();
        found += usize::from(expected.is_some());
        assert_eq!(
            store.find_available(spec).await.expect("query"),
            expected,
            "{spec:?}"
        );
    }
    assert!(
        found > specs.len() / 2 && found < specs.len(),
        "specs cover both outcomes"
    );
}

#[tokio::test]
async fn outage_is_unavailable_and_acknowledged_writes_survive_a_restart() {
    let mut server = FerretDb::start().expect("FerretDB");
    let store = open(&server, "vessels_outage").await;
    let mut acknowledged = Vec::new();
    for i in 0..3 {
        let v = vessel(&format!("before-{i}"), 10 + i, 100, true);
        store.create(&v).await.expect("create before the outage");
        acknowledged.push(v);
    }

    server.stop().expect("stop FerretDB");
    for i in 0..3 {
        let started = Instant::now();
        let result = store
            .create(&vessel(&format!("down-{i}"), 1, 1, true))
            .await;
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
    let spec = Specification {
        capacity: 1,
        max_weight: 1,
    };
    assert!(matches!(
        store.find_available(&spec).await,
        Err(StoreError::Unavailable(_))
    ));

    server.restart().expect("restart FerretDB");
    let after = vessel("after", 1, 1, true);
    shippy_test_support::write_when_back(WAIT, || store.as_ref().create(&after)).await;
    acknowledged.push(after.clone());
    acknowledged.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(store.list().await.expect("list"), acknowledged);
    assert_eq!(
        store.find_available(&spec).await.expect("query"),
        Some(after)
    );
}

#[tokio::test]
async fn service_seeds_once_mongodb_answers_and_only_then_serves() {
    let mut server = FerretDb::start().expect("FerretDB");
    server
        .stop()
        .expect("stop FerretDB: the service starts without its database");
    let registry = tempfile::tempdir().expect("temp dir");
    let settings = server
        .service_settings::<Settings>(&unique_database("vessels_supervised"), registry.path());
    assert!(settings.vessel.seed_fleet, "seeding is on by default");
    let app = shippy_vessel::build(settings.clone())
        .await
        .expect("builds while MongoDB is down (no seeding at build time)");
    let service = shippy_test_support::InProcess::spawn(app);
    let address = service.address.clone();

    shippy_test_support::wait_health(
        &address,
        IDENTITY.grpc_service,
        ServingStatus::NotServing,
        WAIT,
    )
    .await;
    let mut client = VesselServiceClient::connect(format!("http://{address}"))
        .await
        .expect("connect");
    let refused = client
        .get_vessels(pb::GetRequest {})
        .await
        .expect_err("store down");
    assert_eq!(refused.code(), Code::Unavailable);

    server.restart().expect("start FerretDB");
    shippy_test_support::wait_health(
        &address,
        IDENTITY.grpc_service,
        ServingStatus::Serving,
        WAIT,
    )
    .await;

    // SERVING means the fleet is seeded and the best-fit index exists.
    let vessels = client
        .get_vessels(pb::GetRequest {})
        .await
        .expect("list")
        .into_inner()
        .vessels;
    let ids: Vec<_> = vessels.iter().map(|v| v.id.as_str()).collect();
    assert_eq!(ids, ["vessel001", "vessel002", "vessel003"]);
    let fit = client
        .find_available(pb::Specification {
            capacity: 3,
            max_weight: 55_000,
        })
        .await
        .expect("find")
        .into_inner()
        .vessel
        .map(|v| v.id);
    assert_eq!(fit.as_deref(), Some("vessel001"));
    let db = shippy_shared::mongo::connect(&settings.common.store.mongodb)
        .await
        .expect("client");
    let indexes = db
        .collection::<Document>(store::mongo::COLLECTION)
        .list_index_names()
        .await
        .expect("list indexes");
    assert!(indexes.iter().any(|i| i == FIT_INDEX), "{indexes:?}");

    service.finish().await;

    // A second start on the same database finds the fleet and does not seed again.
    let app = shippy_vessel::build(settings).await.expect("second build");
    let service = shippy_test_support::InProcess::spawn(app);
    let address = service.address.clone();
    shippy_test_support::wait_health(
        &address,
        IDENTITY.grpc_service,
        ServingStatus::Serving,
        WAIT,
    )
    .await;
    let mut client = VesselServiceClient::connect(format!("http://{address}"))
        .await
        .expect("connect");
    let count = client
        .get_vessels(pb::GetRequest {})
        .await
        .expect("list")
        .into_inner()
        .vessels
        .len();
    assert_eq!(count, 3);
    service.finish().await;
}
