//! The MongoDB user store against a real wire-compatible server (FerretDB, see
//! `shippy_test_support::ferretdb`): the shared store contract
//! (`shippy_test_support::store_contract`), plus what is the user store's own: emails are unique,
//! the unique index exists before the service reports SERVING and survives a crash.

use std::time::{Duration, Instant};

use mongodb::bson::Document;
use shippy_proto::user::v1::{self as pb, user_service_client::UserServiceClient};
use shippy_shared::{
    config::services::UserSettings,
    probe,
    runtime::{self, Service},
    store::{StoreError, mongo},
};
use shippy_test_support::{
    InProcess,
    ferretdb::FerretDb,
    store_contract::{self, Contract, WAIT},
    wait_health,
};
use shippy_user::{
    UserApp,
    domain::{Email, PasswordHash, User},
    store::{self, UserStore, mongo::EMAIL_INDEX, mongo::MongoStore},
};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

async fn open(server: &FerretDb, prefix: &str) -> MongoStore {
    let database = server.fresh_database(prefix).await;
    let store = MongoStore::new(&database);
    store.ensure_indexes().await.expect("indexes");
    store
}

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

/// The user store as the shared contract sees it.
struct MongoStoreUnderTest(MongoStore);

impl Contract for MongoStoreUnderTest {
    type Record = User;

    fn record(&self, tag: &str) -> User {
        user(tag, &format!("{tag}@example.com"))
    }

    async fn create(&self, record: &User) -> Result<(), StoreError> {
        self.0.create(record).await
    }

    async fn list(&self) -> Result<Vec<User>, StoreError> {
        self.0.list().await
    }

    fn sort(records: &mut [User]) {
        records.sort_by(|a, b| a.email.as_str().cmp(b.email.as_str()));
    }
}

#[tokio::test]
async fn outages_lose_no_acknowledged_write_and_the_unique_index_survives() {
    let mut server = FerretDb::start().expect("FerretDB");
    let store = MongoStoreUnderTest(open(&server, "users_outage").await);
    store_contract::acknowledged_writes_survive_outages_and_crashes(&mut server, &store).await;
    assert!(matches!(
        store.0.create(&user("dup", "after@example.com")).await,
        Err(StoreError::Duplicate(_))
    ));
}

#[tokio::test]
async fn serving_follows_the_database() {
    let mut server = FerretDb::start().expect("FerretDB");
    server
        .stop()
        .expect("stop FerretDB: the service starts without its database");
    let (mut settings, _registry) =
        server.fresh_settings::<UserSettings>("users_supervised_contract");
    settings.common.shutdown.drain_ms = 2_500;
    store_contract::serving_follows_the_database::<UserApp>(&mut server, settings).await;
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
    let (settings, _registry) = server.fresh_settings::<UserSettings>("users_supervised");
    let app = runtime::launch::<UserApp>(settings.clone())
        .await
        .expect("builds while MongoDB is down");
    let service = InProcess::spawn(app);
    let address = service.address.clone();

    // Answers health checks, but NOT_SERVING, and stays so while the database is down (observed
    // over a few supervisor rounds).
    wait_health(
        &address,
        UserApp::SPEC.grpc_service,
        ServingStatus::NotServing,
        WAIT,
    )
    .await;
    let watch_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch_until {
        assert_eq!(
            probe::check(
                &address,
                UserApp::SPEC.grpc_service,
                Duration::from_millis(500)
            )
            .await
            .ok(),
            Some(ServingStatus::NotServing)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let started = Instant::now();
    server.restart().expect("start FerretDB");
    wait_health(
        &address,
        UserApp::SPEC.grpc_service,
        ServingStatus::Serving,
        WAIT,
    )
    .await;
    eprintln!("SERVING {:?} after FerretDB started", started.elapsed());

    // The supervisor created the unique index before reporting SERVING.
    let db = mongo::connect(&settings.common.store.mongodb)
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
    wait_health(
        &address,
        UserApp::SPEC.grpc_service,
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
    wait_health(
        &address,
        UserApp::SPEC.grpc_service,
        ServingStatus::Serving,
        WAIT,
    )
    .await;
    // The user survived: they can still log in, and see themselves with the token.
    let token = client
        .auth(registration("ewan@example.com"))
        .await
        .expect("log in after the outage")
        .into_inner()
        .token;
    let mut get = tonic::Request::new(pb::User {
        email: "ewan@example.com".into(),
        ..Default::default()
    });
    get.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let found = client.get(get).await.expect("the user survived");
    assert_eq!(
        found.into_inner().user.map(|u| u.email),
        Some("ewan@example.com".to_owned())
    );

    service.finish().await;
}
