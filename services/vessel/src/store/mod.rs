//! Where vessels live: the [`VesselStore`] trait and its backends.

pub mod memory;
pub mod mongo;

use std::{fmt, sync::Arc};

use async_trait::async_trait;
use shippy_shared::{settings::StoreBackend, store::StoreError};

use crate::{
    Settings,
    domain::{Specification, Vessel},
};

/// Persistence of the fleet.
#[async_trait]
pub trait VesselStore: Send + Sync + fmt::Debug {
    /// Adds a vessel; [`StoreError::Duplicate`] when its id is taken.
    async fn create(&self, vessel: &Vessel) -> Result<(), StoreError>;
    /// The whole fleet, ordered by id.
    async fn list(&self) -> Result<Vec<Vessel>, StoreError>;
    /// The best fit for `spec` (see [`Specification::best_fit`]).
    async fn find_available(&self, spec: &Specification) -> Result<Option<Vessel>, StoreError>;
    /// Number of vessels.
    async fn count(&self) -> Result<u64, StoreError>;
}

/// An opened store.
#[derive(Debug, Clone)]
pub struct Opened {
    /// What the handlers use.
    pub store: Arc<dyn VesselStore>,
    /// The same store when the backend is MongoDB: the service supervises its readiness (see
    /// [`shippy_shared::mongo::supervise`]).
    pub mongo: Option<Arc<mongo::MongoStore>>,
}

/// Opens the backend selected by `store.backend`. MongoDB is not contacted yet: the driver
/// connects on first use, so this succeeds while the database is down.
pub async fn open(settings: &Settings) -> Result<Opened, StoreError> {
    let store = &settings.common.store;
    match store.backend {
        StoreBackend::Memory => Ok(Opened {
            store: Arc::new(memory::MemoryStore::default()),
            mongo: None,
        }),
        StoreBackend::Mongodb => {
            let database = shippy_shared::mongo::connect(&store.mongodb).await?;
            let mongo = Arc::new(mongo::MongoStore::new(&database));
            Ok(Opened {
                store: Arc::clone(&mongo) as Arc<dyn VesselStore>,
                mongo: Some(mongo),
            })
        }
    }
}

/// Adds the default fleet when the store is empty. Safe to run from several instances at once:
/// seeds have fixed ids, so a concurrent seeder's duplicates are ignored.
pub async fn seed_if_empty(store: &dyn VesselStore) -> Result<usize, StoreError> {
    if store.count().await? > 0 {
        return Ok(0);
    }
    let mut added = 0;
    for vessel in crate::domain::default_fleet() {
        match store.create(&vessel).await {
            Ok(()) => added += 1,
            Err(StoreError::Duplicate(_)) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(added)
}
