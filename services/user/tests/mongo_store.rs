//! The MongoDB user store against a real wire-compatible server (FerretDB, see
//! `shippy_test_support::ferretdb`): the store contract, outages, restarts, and the readiness
//! supervisor of the whole service.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use mongodb::bson::Document;
use shippy_proto::user::v1::{self as pb, user_service_client::UserServiceClient};
use shippy_shared::{health, store::StoreError};
use shippy_test_support::ferretdb::{FerretDb, TEST_SELECTION_TIMEOUT, unique_database};
use shippy_user::{
    IDENTITY, Settings,
    domain::{PasswordHash, User, UserError},
    store::{self, UserStore, mongo::EMAIL_INDEX},
};
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;

/// Bound of every "until" wait; generous for a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(20);

async fn open(server: &FerretDb, prefix: &str) -> (Arc<dyn UserStore>, Settings) {
    let registry = tempfile::tempdir().expect("temp dir");
    let settings = server.service_settings::<Settings>(&unique_database(prefix), registry.path());
    let opened = store::open(&settings).await.expect("open the mongo store");
    assert!(opened.mongo.is_some(), "mongodb backend selected");
    (opened.store, settings)
}

fn user(id: &str, email: &str) -> User {
    User {
        id: id.to_owned(),
        name: format!("name of {id}"),
        company: "Shippy Ltd".to_owned(),
        email: email.to_owned(),
        password_hash: PasswordHash(format!("$argon2id$hash-of-{id}")),
    }
}

#[tokio::test]
async fn users_round_trip_and_emails_are_unique() {
    let server = FerretDb::start().expect("FerretDB");
    let (store, _) = open(&server, "users_contract").await;

    let bob = user("u-2", "bob@example.com");
    let alice = user("u-1", "alice@example.com");
    store.create(&bob).await.expect("create bob");
    store.create(&alice).await.expect("create alice");

    assert_eq!(store.get("u-1").await.expect("get"), Some(alice.clone()));
    assert_eq!(store.get("nobody").await.expect("get missing"), None);
    assert_eq!(
        store
            .find_by_email("bob@example.com")
            .await
            .expect("by email"),
        Some(bob.clone())
    );
    assert_eq!(
        store
            .find_by_email("carol@example.com")
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
    assert_eq!(
        Status::from(UserError::from(taken)).code(),
        Code::AlreadyExists
    );
    store
        .create(&user("u-3", "carol@example.com"))
        .await
        .expect("another email works");
    assert_eq!(store.list().await.expect("list").len(), 3);
}

#[tokio::test]
async fn outage_is_unavailable_and_acknowledged_writes_survive_restarts_and_crashes() {
    let mut server = FerretDb::start().expect("FerretDB");
    let (store, _) = open(&server, "users_outage").await;
    let mut acknowledged = Vec::new();
    for i in 0..3 {
        let u = user(&format!("before-{i}"), &format!("before-{i}@example.com"));
        store.create(&u).await.expect("create before the outage");
        acknowledged.push(u);
    }

    server.stop().expect("stop FerretDB");
    for i in 0..3 {
        let started = Instant::now();
        let result = store
            .create(&user(
                &format!("down-{i}"),
                &format!("down-{i}@example.com"),
            ))
            .await;
        let took = started.elapsed();
        eprintln!("write {i} while down: {took:?}");
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
    let after = user("after", "after@example.com");
    shippy_test_support::write_when_back(WAIT, || store.as_ref().create(&after)).await;
    acknowledged.push(after);
    let mut expected = acknowledged.clone();
    expected.sort_by(|a, b| a.email.cmp(&b.email));
    assert_eq!(store.list().await.expect("list"), expected);

    // A crash (SIGKILL) loses nothing that was acknowledged either.
    server.kill();
    server.restart().expect("start FerretDB after the crash");
    let deadline = Instant::now() + WAIT;
    let listed = loop {
        match store.list().await {
            Ok(users) => break users,
            Err(StoreError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("store did not recover after the crash: {error:?}"),
        }
    };
    assert_eq!(listed, expected);
    // The unique index survived too.
    assert!(matches!(
        store.create(&user("dup", "after@example.com")).await,
        Err(StoreError::Duplicate(_))
    ));
}

fn registration(email: &str) -> pb::User {
    pb::User {
        name: "Ewan".into(),
        email: email.into(),
        password: "correct horse battery".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn service_is_not_serving_until_mongodb_answers_and_recovers_by_itself() {
    let mut server = FerretDb::start().expect("FerretDB");
    server
        .stop()
        .expect("stop FerretDB: the service starts without its database");
    let registry = tempfile::tempdir().expect("temp dir");
    let settings =
        server.service_settings::<Settings>(&unique_database("users_supervised"), registry.path());
    let app = shippy_user::build(settings.clone())
        .await
        .expect("builds while MongoDB is down");
    let service = shippy_test_support::InProcess::spawn(app);
    let address = service.address.clone();

    // Answers health checks, but NOT_SERVING, and stays so while the database is down (observed
    // over a few supervisor rounds).
    shippy_test_support::wait_health(
        &address,
        IDENTITY.grpc_service,
        ServingStatus::NotServing,
        WAIT,
    )
    .await;
    let watch_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch_until {
        assert_eq!(
            health::check(&address, IDENTITY.grpc_service, Duration::from_millis(500))
                .await
                .ok(),
            Some(ServingStatus::NotServing)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let started = Instant::now();
    server.restart().expect("start FerretDB");
    shippy_test_support::wait_health(
        &address,
        IDENTITY.grpc_service,
        ServingStatus::Serving,
        WAIT,
    )
    .await;
    eprintln!("SERVING {:?} after FerretDB started", started.elapsed());

    // The supervisor created the unique index before reporting SERVING.
    let db = shippy_shared::mongo::connect(&settings.common.store.mongodb)
        .await
        .expect("client");
    let indexes = db
        .collection::<Document>(store::mongo::COLLECTION)
        .list_index_names()
        .await
        .expect("list indexes");
    assert!(indexes.iter().any(|i| i == EMAIL_INDEX), "{indexes:?}");

    // Through gRPC: a taken email is ALREADY_EXISTS.
    let mut client = UserServiceClient::connect(format!("http://{address}"))
        .await
        .expect("connect");
    client
        .create(registration("ewan@example.com"))
        .await
        .expect("first registration");
    let status_code = client
        .create(registration("EWAN@example.com"))
        .await
        .expect_err("email taken")
        .code();
    assert_eq!(status_code, Code::AlreadyExists);

    // It follows the database down and up again without a restart of its own.
    server.stop().expect("stop FerretDB");
    shippy_test_support::wait_health(
        &address,
        IDENTITY.grpc_service,
        ServingStatus::NotServing,
        WAIT,
    )
    .await;
    let refused = client
        .create(registration("later@example.com"))
        .await
        .expect_err("store down");
    assert_eq!(refused.code(), Code::Unavailable);
    server.restart().expect("restart FerretDB");
    shippy_test_support::wait_health(
        &address,
        IDENTITY.grpc_service,
        ServingStatus::Serving,
        WAIT,
    )
    .await;
    let found = client
        .get(pb::User {
            email: "ewan@example.com".into(),
            ..Default::default()
        })
        .await
        .expect("the user survived");
    assert_eq!(
        found.into_inner().user.map(|u| u.email),
        Some("ewan@example.com".to_owned())
    );

    service.finish().await;
}
