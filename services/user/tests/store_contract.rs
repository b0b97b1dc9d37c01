//! The store contract of the user service, run against every backend: memory, SQLite (the
//! default) and MongoDB (a real wire-compatible server, FerretDB). Each check is written once,
//! over `&dyn UserStore`.

use shippy_shared::{
    config::SqliteSettings,
    store::{StoreError, sqlite::Sqlite},
};
use shippy_test_support::ferretdb::FerretDb;
use shippy_user::{
    domain::{Email, PasswordHash, User},
    store::{UserStore, memory::MemoryStore, mongo::MongoStore, sqlite::SqliteStore},
};

fn email(text: &str) -> Email {
    Email::parse(text).expect("valid email")
}

fn user(id: &str, address: &str) -> User {
    User {
        id: id.to_owned(),
        name: format!("name of {id}"),
        company: "Shippy Ltd".to_owned(),
        email: email(address),
        password_hash: PasswordHash::from_stored(format!("$argon2id$hash-of-{id}")),
    }
}

#[tokio::test]
async fn memory_keeps_the_contract() {
    users_round_trip_and_emails_are_unique(&MemoryStore::default()).await;
}

#[tokio::test]
async fn sqlite_keeps_the_contract_across_instances_and_restarts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let open = || async {
        let db = Sqlite::open(&SqliteSettings {
            path: Some(dir.path().join("users.db")),
            busy_timeout_ms: None,
        })
        .await
        .expect("open SQLite");
        SqliteStore::open(db).await.expect("schema")
    };
    users_round_trip_and_emails_are_unique(&open().await).await;
    // Another instance on the same file sees the users, and the unique email still holds.
    let other = open().await;
    assert_eq!(other.list().await.expect("list").len(), 3);
    assert!(matches!(
        other.create(&user("u-9", "alice@example.com")).await,
        Err(StoreError::Duplicate(_))
    ));
}

#[tokio::test]
async fn mongodb_keeps_the_contract() {
    let server = FerretDb::start().expect("FerretDB");
    let store = MongoStore::new(&server.fresh_database("users_contract").await);
    store.ensure_indexes().await.expect("indexes");
    users_round_trip_and_emails_are_unique(&store).await;
}

/// Users come back as stored, ordered by email, found by id and by email; an email is unique.
async fn users_round_trip_and_emails_are_unique(store: &dyn UserStore) {
    let bob = user("u-2", "bob@example.com");
    let alice = user("u-1", "alice@example.com");
    store.create(&bob).await.expect("create bob");
    store.create(&alice).await.expect("create alice");

    assert_eq!(store.get("u-1").await.expect("get"), Some(alice.clone()));
    assert_eq!(store.get("nobody").await.expect("get missing"), None);
    assert_eq!(
        store
            .find_by_email(&email("bob@example.com"))
            .await
            .expect("by email"),
        Some(bob.clone())
    );
    assert_eq!(
        store
            .find_by_email(&email("carol@example.com"))
            .await
            .expect("by email"),
        None
    );
    assert_eq!(
        store.list().await.expect("list"),
        vec![alice.clone(), bob.clone()],
        "ordered by email"
    );

    let taken = store
        .create(&user("u-3", "alice@example.com"))
        .await
        .expect_err("the email is taken");
    match &taken {
        StoreError::Duplicate(what) => assert_eq!(what, "a user with email alice@example.com"),
        other => panic!("expected Duplicate, got {other:?}"),
    }
    store
        .create(&user("u-3", "carol@example.com"))
        .await
        .expect("another email works");
    assert_eq!(store.list().await.expect("list").len(), 3);
}
