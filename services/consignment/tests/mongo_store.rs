//! The MongoDB consignment store against a real wire-compatible server (FerretDB, see
//! `shippy_test_support::ferretdb`): the shared store contract
//! (`shippy_test_support::store_contract`), plus what is the consignment store's own: consignments
//! come back oldest first, every field intact, listed per owner; documents stored before
//! consignments had owners stay readable; a key whose consignment was never written is completed.

use mongodb::bson::doc;
use shippy_consignment::{
    ConsignmentApp,
    domain::{Consignment, ContainerFields, NewConsignment},
    store::{
        ConsignmentStore, Keyed,
        mongo::{COLLECTION, MongoStore},
    },
};
use shippy_shared::{
    config::services::ConsignmentSettings,
    idempotency::IdempotencyKey,
    store::{StoreError, mongo},
};
use shippy_test_support::{
    ferretdb::FerretDb,
    store_contract::{self, Contract},
};

async fn open(server: &FerretDb, prefix: &str) -> MongoStore {
    let database = server.fresh_database(prefix).await;
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
async fn each_owner_lists_only_their_own_and_old_documents_stay_readable() {
    let server = FerretDb::start().expect("FerretDB");
    let (settings, _registry) = server.fresh_settings::<ConsignmentSettings>("consignments_owners");
    let database = mongo::connect(&settings.common.store.mongodb)
        .await
        .expect("connect");
    let store = MongoStore::new(&database);
    let owned_by = |owner: &str, description: &str| {
        NewConsignment::parse(
            description,
            10,
            [ContainerFields {
                customer_id: "c",
                origin: "Derby",
                user_id: "",
            }]
            .into_iter(),
        )
        .expect("valid")
        .assign("vessel001".to_owned(), owner)
    };
    let alice = [owned_by("alice", "a1"), owned_by("alice", "a2")];
    let bob = owned_by("bob", "b1");
    for c in alice.iter().chain([&bob]) {
        store.create(c).await.expect("create");
    }
    // Written as before consignments had owners: no `owner_id` field at all.
    database
        .collection::<mongodb::bson::Document>(COLLECTION)
        .insert_one(doc! {
            "_id": "00000000-0000-7000-8000-000000000000",
            "description": "stored by an older version",
            "weight": 5_i64,
            "containers": [],
            "vessel_id": "vessel001",
        })
        .await
        .expect("insert an old document");

    assert_eq!(
        store
            .list_by_owner("alice", None, 100)
            .await
            .expect("alice"),
        alice
    );
    assert_eq!(
        store.list_by_owner("bob", None, 100).await.expect("bob"),
        vec![bob]
    );
    assert_eq!(
        store
            .list_by_owner("carol", None, 100)
            .await
            .expect("carol"),
        Vec::new()
    );
    let all = store.list().await.expect("all, old included");
    assert_eq!(all.len(), 4);
    assert_eq!(all[0].description, "stored by an older version");
    assert_eq!(all[0].owner_id, "", "an old document is owned by nobody");
    assert_eq!(
        store.list_by_owner("", None, 100).await.expect("nobody"),
        Vec::new(),
        "an old document is listed to nobody, not even to an empty owner"
    );
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
    let (mut settings, _registry) =
        server.fresh_settings::<ConsignmentSettings>("consignments_supervised");
    // Long enough for several readiness rounds while draining.
    settings.common.shutdown.drain_ms = 2_500;
    store_contract::serving_follows_the_database::<ConsignmentApp>(&mut server, settings).await;
}

#[tokio::test]
async fn a_key_whose_consignment_was_never_written_is_completed_by_whoever_finds_it() {
    let server = FerretDb::start().expect("FerretDB");
    let database = server.fresh_database("consignments_half_written").await;
    let store = MongoStore::new(&database);
    let key = IdempotencyKey::parse("order-7").expect("a key");
    let first = consignment("half written", 2);
    assert_eq!(
        store.create_with_key(&first, &key).await.expect("create"),
        Keyed::Stored
    );
    // As if the service had stopped between its two writes: the key, without its consignment.
    database
        .collection::<mongodb::bson::Document>(COLLECTION)
        .delete_one(doc! { "_id": &first.id })
        .await
        .expect("remove the consignment");
    assert_eq!(store.list().await.expect("list"), Vec::new());

    // The repeat finds the key and writes the consignment it carries: the same one, once.
    assert_eq!(
        store
            .create_with_key(&consignment("the repeat", 2), &key)
            .await
            .expect("repeat"),
        Keyed::Earlier(first.clone())
    );
    assert_eq!(
        store.list().await.expect("list"),
        std::slice::from_ref(&first)
    );
    assert_eq!(
        store.find_by_key("user-1", &key).await.expect("find"),
        Some(first.clone())
    );
    assert_eq!(store.list().await.expect("list"), [first]);
}
