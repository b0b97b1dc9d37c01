//! The store contract of the vessel service, run against every backend: memory, SQLite (the
//! default) and MongoDB (a real wire-compatible server, FerretDB). Each check is written once,
//! over `&dyn VesselStore`.

use shippy_shared::{
    config::SqliteSettings,
    store::{StoreError, sqlite::Sqlite},
};
use shippy_test_support::ferretdb::FerretDb;
use shippy_vessel::{
    domain::{Specification, Vessel, default_fleet},
    store::{self, VesselStore, memory::MemoryStore, mongo::MongoStore, sqlite::SqliteStore},
};

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

async fn sqlite(dir: &tempfile::TempDir, name: &str) -> SqliteStore {
    let db = Sqlite::open(&SqliteSettings {
        path: Some(dir.path().join(format!("{name}.db"))),
        busy_timeout_ms: None,
    })
    .await
    .expect("open SQLite");
    SqliteStore::open(db).await.expect("schema")
}

async fn mongo(server: &FerretDb, prefix: &str) -> MongoStore {
    MongoStore::new(&server.fresh_database(prefix).await)
}

#[tokio::test]
async fn memory_keeps_the_contract() {
    vessels_round_trip_and_ids_are_unique(&MemoryStore::default(), &MemoryStore::default()).await;
    find_available_answers_exactly_what_best_fit_answers(&MemoryStore::default()).await;
}

#[tokio::test]
async fn sqlite_keeps_the_contract() {
    let dir = tempfile::tempdir().expect("temp dir");
    vessels_round_trip_and_ids_are_unique(&sqlite(&dir, "a").await, &sqlite(&dir, "b").await).await;
    find_available_answers_exactly_what_best_fit_answers(&sqlite(&dir, "c").await).await;
}

#[tokio::test]
async fn sqlite_is_shared_by_instances_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = sqlite(&dir, "shared").await;
    let second = sqlite(&dir, "shared").await;
    first
        .create(&vessel("v1", 3, 30, true))
        .await
        .expect("create");
    assert_eq!(
        second.list().await.expect("list").len(),
        1,
        "seen by another instance"
    );
    drop((first, second));
    let reopened = sqlite(&dir, "shared").await;
    assert_eq!(
        reopened.list().await.expect("list"),
        [vessel("v1", 3, 30, true)],
        "kept across a restart"
    );
}

#[tokio::test]
async fn mongodb_keeps_the_contract() {
    let server = FerretDb::start().expect("FerretDB");
    vessels_round_trip_and_ids_are_unique(
        &mongo(&server, "vessels_contract").await,
        &mongo(&server, "vessels_seed").await,
    )
    .await;
    find_available_answers_exactly_what_best_fit_answers(&mongo(&server, "vessels_fit").await)
        .await;
}

/// Vessels come back as stored, ordered by id; an id is unique; seeding happens once.
async fn vessels_round_trip_and_ids_are_unique(store: &dyn VesselStore, empty: &dyn VesselStore) {
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
    // Pages: keyset by id, a limit, nothing repeated or skipped.
    assert_eq!(store.list_page(None, 2).await.expect("page 1"), by_id[..2]);
    assert_eq!(
        store.list_page(Some("v2"), 2).await.expect("page 2"),
        by_id[2..]
    );
    assert_eq!(
        store.list_page(Some("v3"), 2).await.expect("past the end"),
        []
    );
    assert_eq!(store.count().await.expect("count"), 3);
    // One by id (what a create repeated with its idempotency key compares with).
    assert_eq!(store.get("v1").await.expect("get"), Some(fleet[1].clone()));
    assert_eq!(store.get("v4").await.expect("get"), None);

    match store.create(&vessel("v2", 99, 99, true)).await {
        Err(StoreError::Duplicate(what)) => assert_eq!(what, "vessel v2"),
        other => panic!("expected Duplicate, got {other:?}"),
    }
    assert_eq!(store.count().await.expect("count"), 3);
    assert_eq!(store.get("v2").await.expect("get"), Some(fleet[0].clone()));

    // Seeding an empty store adds the default fleet once.
    assert_eq!(store::seed_if_empty(empty).await.expect("seed"), 3);
    assert_eq!(store::seed_if_empty(empty).await.expect("seed again"), 0);
    assert_eq!(empty.list().await.expect("list"), default_fleet());
}

/// The store's best-fit query answers exactly what the domain rule answers, on 154 specifications.
async fn find_available_answers_exactly_what_best_fit_answers(store: &dyn VesselStore) {
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
