//! The store contract of the consignment service, run against every backend: memory, SQLite (the
//! default) and MongoDB (a real wire-compatible server, FerretDB). Each check is written once,
//! over `&dyn ConsignmentStore`: consignments round trip, and idempotency keys name one
//! consignment per owner.

use shippy_consignment::{
    domain::{Consignment, Container, ContainerFields, NewConsignment},
    store::{ConsignmentStore, Keyed, memory::MemoryStore, mongo::MongoStore, sqlite::SqliteStore},
};
use shippy_shared::{
    config::SqliteSettings,
    idempotency::IdempotencyKey,
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
    keys_name_one_consignment_per_owner(&MemoryStore::default()).await;
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
    let keyed = tempfile::tempdir().expect("temp dir");
    let db = Sqlite::open(&SqliteSettings {
        path: Some(keyed.path().join("keys.db")),
        busy_timeout_ms: None,
    })
    .await
    .expect("open SQLite");
    keys_name_one_consignment_per_owner(&SqliteStore::open(db).await.expect("schema")).await;
}

#[tokio::test]
async fn mongodb_keeps_the_contract() {
    let server = FerretDb::start().expect("FerretDB");
    let database = server.fresh_database("consignments_contract").await;
    consignments_round_trip_oldest_first(&MongoStore::new(&database)).await;
    let database = server.fresh_database("consignments_keys").await;
    keys_name_one_consignment_per_owner(&MongoStore::new(&database)).await;
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

/// A key is stored with its consignment; the owner's second create with it stores nothing and
/// gets the first; another owner's same key is another consignment; racing creates with one key
/// store one.
async fn keys_name_one_consignment_per_owner(store: &dyn ConsignmentStore) {
    let key = IdempotencyKey::parse("order-1").expect("a key");
    assert_eq!(store.find_by_key("user-1", &key).await.expect("find"), None);
    let first = consignment("keyed", 2);
    assert_eq!(
        store.create_with_key(&first, &key).await.expect("create"),
        Keyed::Stored
    );
    assert_eq!(
        store.find_by_key("user-1", &key).await.expect("find"),
        Some(first.clone())
    );
    let second = consignment("keyed again", 2);
    assert_eq!(
        store.create_with_key(&second, &key).await.expect("repeat"),
        Keyed::Earlier(first.clone())
    );
    assert_eq!(
        store.list().await.expect("list"),
        std::slice::from_ref(&first)
    );

    let theirs = Consignment {
        owner_id: "user-2".to_owned(),
        ..consignment("theirs", 1)
    };
    assert_eq!(
        store.create_with_key(&theirs, &key).await.expect("theirs"),
        Keyed::Stored
    );
    assert_eq!(store.find_by_key("user-3", &key).await.expect("find"), None);

    // Eight creates racing with one key: one stores, the seven others get its consignment.
    let raced = IdempotencyKey::parse("raced").expect("a key");
    let attempts: Vec<Consignment> = (0..8)
        .map(|i| consignment(&format!("race {i}"), 1))
        .collect();
    let outcomes = futures::future::join_all(
        attempts
            .iter()
            .map(|attempt| store.create_with_key(attempt, &raced)),
    )
    .await;
    let stored: Vec<&Consignment> = attempts
        .iter()
        .zip(&outcomes)
        .filter(|(_, outcome)| matches!(outcome, Ok(Keyed::Stored)))
        .map(|(attempt, _)| attempt)
        .collect();
    assert_eq!(stored.len(), 1, "{outcomes:?}");
    for outcome in &outcomes {
        match outcome {
            Ok(Keyed::Stored) => {}
            Ok(Keyed::Earlier(earlier)) => assert_eq!(earlier, stored[0]),
            Err(error) => panic!("a racing create failed: {error:?}"),
        }
    }
    assert_eq!(store.list().await.expect("list").len(), 3);
}
