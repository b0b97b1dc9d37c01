//! The MongoDB consignment store against a real wire-compatible server (FerretDB, see
//! `shippy_test_support::ferretdb`): the shared store contract
//! (`shippy_test_support::store_contract`), plus what is the consignment store's own: consignments
//! come back oldest first, every field intact.

use shippy_consignment::{
    ConsignmentApp,
    domain::{Consignment, Container, ContainerFields, NewConsignment},
    store::{ConsignmentStore, mongo::MongoStore},
};
use shippy_shared::{
    config::services::ConsignmentSettings,
    store::{StoreError, mongo},
};
use shippy_test_support::{
    ferretdb::{FerretDb, unique_database},
    store_contract::{self, Contract},
};

/// Settings on a fresh database of `server`, with a local registry in a directory that lives as
/// long as the returned guard.
fn settings(server: &FerretDb, prefix: &str) -> (ConsignmentSettings, tempfile::TempDir) {
    let registry = tempfile::tempdir().expect("temp dir");
    let settings = server.service_settings(&unique_database(prefix), registry.path());
    (settings, registry)
}

async fn open(server: &FerretDb, prefix: &str) -> MongoStore {
    let (settings, _registry) = settings(server, prefix);
    let database = mongo::connect(&settings.common.store.mongodb)
        .await
        .expect("connect");
    MongoStore::new(&database)
}

/// A consignment as the service builds it: validated, with generated (time-ordered) ids.
fn consignment(description: &str, containers: usize) -> Consignment {
    let fields = (0..containers).map(|i| ContainerFields {
        customer_id: if i % 2 == 0 { "cust000" } else { "cust001" },
        origin: "Manchester, United Kingdom",
        user_id: if i == 0 { "" } else { "user-9" },
    });
    NewConsignment::parse(description, 55_000, fields)
        .expect("valid consignment")
        .assign("vessel001".to_owned(), "user-1")
}

/// The consignment store as the shared contract sees it.
struct MongoStoreUnderTest(MongoStore);

impl Contract for MongoStoreUnderTest {
    type Record = Consignment;

    fn record(&self, tag: &str) -> Consignment {
        consignment(tag, 2)
    }

    async fn create(&self, record: &Consignment) -> Result<(), StoreError> {
        self.0.create(record).await
    }

    async fn list(&self) -> Result<Vec<Consignment>, StoreError> {
        self.0.list().await
    }

    fn sort(records: &mut [Consignment]) {
        // Oldest first: the ids are time-ordered.
        records.sort_by(|a, b| a.id.cmp(&b.id));
    }
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
async fn outages_lose_no_acknowledged_write() {
    let mut server = FerretDb::start().expect("FerretDB");
    let store = MongoStoreUnderTest(open(&server, "consignments_outage").await);
    store_contract::acknowledged_writes_survive_outages_and_crashes(&mut server, &store).await;
}

#[tokio::test]
async fn serving_follows_the_database() {
    let mut server = FerretDb::start().expect("FerretDB");
    server
        .stop()
        .expect("stop FerretDB: the service starts without its database");
    let (mut settings, _registry) = settings(&server, "consignments_supervised");
    // Long enough for several readiness rounds while draining.
    settings.common.shutdown.drain_ms = 2_500;
    store_contract::serving_follows_the_database::<ConsignmentApp>(&mut server, settings).await;
}
