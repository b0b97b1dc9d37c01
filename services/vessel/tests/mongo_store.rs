//! The MongoDB vessel store against a real wire-compatible server (FerretDB, see
//! `shippy_test_support::ferretdb`): the shared store contract
//! (`shippy_test_support::store_contract`), plus what is the vessel store's own: the best-fit query
//! answers exactly what `Specification::best_fit` answers, and the fleet is seeded once the
//! database answers, before the service reports SERVING.

use mongodb::bson::Document;
use shippy_proto::vessel::v1::{self as pb, vessel_service_client::VesselServiceClient};
use shippy_shared::{
    config::services::VesselSettings,
    runtime::{self, Service},
    store::{StoreError, mongo},
};
use shippy_test_support::{
    InProcess,
    ferretdb::FerretDb,
    store_contract::{self, Contract, WAIT},
    wait_health,
};
use shippy_vessel::{
    VesselApp,
    domain::{Specification, Vessel},
    store::{self, VesselStore, mongo::FIT_INDEX, mongo::MongoStore},
};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

async fn open(server: &FerretDb, prefix: &str) -> MongoStore {
    let database = server.fresh_database(prefix).await;
    MongoStore::new(&database)
}

impl Contract for MongoStoreUnderTest {
    type Record = Vessel;

    fn record(&self, tag: &str) -> Vessel {
        vessel(tag, 10, 100, true)
    }

    async fn create(&self, record: &Vessel) -> Result<(), StoreError> {
        self.0.create(record).await
    }

    async fn list(&self) -> Result<Vec<Vessel>, StoreError> {
        self.0.list().await
    }

    fn sort(records: &mut [Vessel]) {
        records.sort_by(|a, b| a.id.cmp(&b.id));
    }
}

/// The vessel store as the shared contract sees it.
struct MongoStoreUnderTest(MongoStore);

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
async fn outages_lose_no_acknowledged_write() {
    let mut server = FerretDb::start().expect("FerretDB");
    let store = MongoStoreUnderTest(open(&server, "vessels_outage").await);
    store_contract::acknowledged_writes_survive_outages_and_crashes(&mut server, &store).await;
    // Still the right answer after the crash.
    let spec = Specification {
        capacity: 1,
        max_weight: 1,
    };
    assert!(
        store
            .0
            .find_available(&spec)
            .await
            .expect("query")
            .is_some()
    );
}

#[tokio::test]
async fn serving_follows_the_database() {
    let mut server = FerretDb::start().expect("FerretDB");
    server
        .stop()
        .expect("stop FerretDB: the service starts without its database");
    let (mut settings, _registry) = server.fresh_settings::<VesselSettings>("vessels_supervised");
    // Long enough for several readiness rounds while draining.
    settings.common.shutdown.drain_ms = 2_500;
    store_contract::serving_follows_the_database::<VesselApp>(&mut server, settings).await;
}

#[tokio::test]
async fn service_seeds_once_mongodb_answers_and_only_then_serves() {
    let mut server = FerretDb::start().expect("FerretDB");
    server
        .stop()
        .expect("stop FerretDB: the service starts without its database");
    let (settings, _registry) = server.fresh_settings::<VesselSettings>("vessels_seeded");
    assert!(settings.vessel.seed_fleet, "seeding is on by default");
    let app = runtime::launch::<VesselApp>(settings.clone())
        .await
        .expect("builds while MongoDB is down (no seeding at build time)");
    let service = InProcess::spawn(app);
    let address = service.address.clone();

    wait_health(
        &address,
        VesselApp::SPEC.grpc_service,
        ServingStatus::NotServing,
        WAIT,
    )
    .await;
    let mut client = VesselServiceClient::connect(format!("http://{address}"))
        .await
        .expect("connect");
    let refused = client
        .get_vessels(pb::GetRequest::default())
        .await
        .expect_err("store down");
    assert_eq!(refused.code(), Code::Unavailable);

    server.restart().expect("start FerretDB");
    wait_health(
        &address,
        VesselApp::SPEC.grpc_service,
        ServingStatus::Serving,
        WAIT,
    )
    .await;

    // SERVING means the fleet is seeded and the best-fit index exists.
    let vessels = client
        .get_vessels(pb::GetRequest::default())
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
    let db = mongo::connect(&settings.common.store.mongodb)
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
    let app = runtime::launch::<VesselApp>(settings)
        .await
        .expect("second build");
    let service = InProcess::spawn(app);
    let address = service.address.clone();
    wait_health(
        &address,
        VesselApp::SPEC.grpc_service,
        ServingStatus::Serving,
        WAIT,
    )
    .await;
    let mut client = VesselServiceClient::connect(format!("http://{address}"))
        .await
        .expect("connect");
    let count = client
        .get_vessels(pb::GetRequest::default())
        .await
        .expect("list")
        .into_inner()
        .vessels
        .len();
    assert_eq!(count, 3);
    service.finish().await;
}
