//! What every service's MongoDB store must do, written once: each service's `tests/mongo_store.rs`
//! implements [`Contract`] for its store and calls these, then adds the checks that are its own
//! (vessel: the best-fit query; user: the unique email index).

use std::{
    fmt::Debug,
    future::Future,
    time::{Duration, Instant},
};

use shippy_shared::{
    probe,
    runtime::{self, Service},
    store::StoreError,
};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::{
    InProcess,
    ferretdb::{FerretDb, TEST_SELECTION_TIMEOUT},
    wait_health, write_when_back,
};

/// Bound of every "until" wait; generous for a loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(20);

/// A store under test, seen through the records it keeps.
pub trait Contract {
    /// What the store keeps (a vessel, a user, a consignment).
    type Record: Clone + PartialEq + Debug + Send + Sync;
    /// A new record, distinct from every other `tag`'s.
    fn record(&self, tag: &str) -> Self::Record;
    /// Stores `record`; returns once the backend acknowledged it.
    fn create(&self, record: &Self::Record) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Every record, in the store's documented order.
    fn list(&self) -> impl Future<Output = Result<Vec<Self::Record>, StoreError>> + Send;
    /// Sorts `records` into the order [`Contract::list`] promises.
    fn sort(records: &mut [Self::Record]);
}

/// Retries `list` until the database answers again after a restart, within [`WAIT`].
async fn list_when_back<C: Contract + Sync>(store: &C) -> Vec<C::Record> {
    let deadline = Instant::now() + WAIT;
    loop {
        match store.list().await {
            Ok(records) => return records,
            Err(StoreError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("store did not recover: {error:?}"),
        }
    }
}

/// Writes while the database is down fail as [`StoreError::Unavailable`] (promptly, not after a
/// long hang), reads too; every write acknowledged before the outage, and after it, is there after
/// a restart and after a crash (SIGKILL) of the database.
pub async fn acknowledged_writes_survive_outages_and_crashes<C: Contract + Sync>(
    server: &mut FerretDb,
    store: &C,
) {
    let mut acknowledged = Vec::new();
    for i in 0..3 {
        let record = store.record(&format!("before-{i}"));
        store
            .create(&record)
            .await
            .expect("create before the outage");
        acknowledged.push(record);
    }

    server.stop().expect("stop FerretDB");
    for i in 0..3 {
        let started = Instant::now();
        let result = store.create(&store.record(&format!("down-{i}"))).await;
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
    assert!(matches!(
        store.list().await,
        Err(StoreError::Unavailable(_))
    ));

    server.restart().expect("restart FerretDB");
    let after = store.record("after");
    write_when_back(WAIT, || store.create(&after)).await;
    acknowledged.push(after);
    C::sort(&mut acknowledged);
    assert_eq!(store.list().await.expect("list"), acknowledged);

    server.kill();
    server.restart().expect("start FerretDB after the crash");
    assert_eq!(list_when_back(store).await, acknowledged, "after a crash");
}

/// A service on MongoDB is NOT_SERVING until the database answers (and its initialisation ran),
/// SERVING then, NOT_SERVING while the database is down after a crash, SERVING again once it is
/// back, and stays NOT_SERVING while it drains at shutdown. `settings` must point at `server`,
/// which must be stopped.
pub async fn serving_follows_the_database<Svc: Service>(
    server: &mut FerretDb,
    settings: Svc::Settings,
) {
    let grpc = Svc::SPEC.grpc_service;
    let app = runtime::launch::<Svc>(settings)
        .await
        .expect("builds while MongoDB is down");
    let mut service = InProcess::spawn(app);
    let address = service.address.clone();

    wait_health(&address, grpc, ServingStatus::NotServing, WAIT).await;
    server.restart().expect("start FerretDB");
    wait_health(&address, grpc, ServingStatus::Serving, WAIT).await;
    server.kill();
    wait_health(&address, grpc, ServingStatus::NotServing, WAIT).await;
    server.restart().expect("start FerretDB after the crash");
    wait_health(&address, grpc, ServingStatus::Serving, WAIT).await;

    // Shutting down reports NOT_SERVING, and the database watch (stopped first) does not turn it
    // back to SERVING while the service drains.
    service.begin_stop();
    wait_health(&address, grpc, ServingStatus::NotServing, WAIT).await;
    let draining = Instant::now();
    while draining.elapsed() < Duration::from_secs(2) && !service.is_finished() {
        let now = probe::check(&address, grpc, Duration::from_millis(500))
            .await
            .ok();
        assert!(
            matches!(now, Some(ServingStatus::NotServing) | None),
            "{now:?} while draining"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    service.finish().await;
}
