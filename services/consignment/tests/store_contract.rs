//! The store contract of the consignment service, run against every backend: memory, SQLite (the
//! default) and MongoDB (a real wire-compatible server, FerretDB). Each check is written once,
//! over `&dyn ConsignmentStore`.

use shippy_consignment::{
    domain::{Consignment, Container, ContainerFields, NewConsignment},
    store::{ConsignmentStore, memory::MemoryStore, mongo::MongoStore, sqlite::SqliteStore},
};
use shippy_shared::{
    config::SqliteSettings,
    store::{StoreError, sqlite::Sqlite},
};
use shippy_test_support::ferretdb::FerretDb;

/// A consignment as the service builds it: validated, with generated (time-ordered) ids.
fn consignment(description: &str, containers: usize) -> Consignment {
    let fields = (0..containers).map(|i| ContainerFields {
        customer_id: if i % 2 == 0 { "cust000" } else { "cust001" },
        origin: "Manchester, United Kingdom",
        user_id: "",
    });
    NewConsignment::parse(description, 55_000, fields)
        .expect("valid consignment")
        .assign("vessel001".to_owned(), "user-1")
}

#[tokio::test]
async fn memory_keeps_the_contract() {
    consignments_round_trip_oldest_first(&MemoryStore::default()).await;
}

#[tokio::test]
async fn sqlite_keeps_the_contract_across_instances_and_restarts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let open = || async {
        let db = Sqlite::open(&SqliteSettings {
            path: Some(dir.path().join("consignments.db")),
            busy_timeout_ms: None,
        })
        .await
        .expect("open SQLite");
        SqliteStore::open(db).await.expect("schema")
    };
    consignments_round_trip_oldest_first(&open().await).await;
    assert_eq!(
        open().await.list().await.expect("list").len(),
        6,
        "another instance sees them"
    );
}

#[tokio::test]
async fn mongodb_keeps_the_contract() {
    let server = FerretDb::start().expect("FerretDB");
    let database = server.fresh_database("consignments_contract").await;
    consignments_round_trip_oldest_first(&MongoStore::new(&database)).await;
}

/// Consignments come back oldest first with every field; an id is unique; each owner pages
/// through their own, and only their own.
async fn consignments_round_trip_oldest_first(store: &dyn ConsignmentStore) {
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

    // Pages of one owner's consignments: keyset by id, nothing repeated or skipped.
    let mine: Vec<Consignment> = listed
        .iter()
        .filter(|c| c.owner_id == "user-1")
        .cloned()
        .collect();
    let first = store
        .list_by_owner("user-1", None, 4)
        .await
        .expect("page 1");
    assert_eq!(first, mine[..4]);
    let rest = store
        .list_by_owner("user-1", Some(&first[3].id), 4)
        .await
        .expect("page 2");
    assert_eq!(rest, mine[4..]);
    assert_eq!(
        store
            .list_by_owner("someone-else", None, 10)
            .await
            .expect("none"),
        Vec::new()
    );
}
