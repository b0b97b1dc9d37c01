//! Where consignments live: the [`ConsignmentStore`] trait and its backends.

pub mod memory;
pub mod mongo;

use std::{fmt, sync::Arc};

use async_trait::async_trait;
use shippy_shared::{settings::StoreBackend, store::StoreError};

use crate::{Settings, domain::Consignment};

/// Persistence of consignments.
#[async_trait]
pub trait ConsignmentStore: Send + Sync + fmt::Debug {
    /// Stores a consignment; returns only once the backend acknowledged the write.
    async fn create(&self, consignment: &Consignment) -> Result<(), StoreError>;
    /// Every consignment, oldest first.
    async fn list(&self) -> Result<Vec<Consignment>, StoreError>;
}

/// An opened store.
#[derive(Debug, Clone)]
pub struct Opened {
    /// What the handlers use.
    pub store: Arc<dyn ConsignmentStore>,
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
                store: Arc::clone(&mongo) as Arc<dyn ConsignmentStore>,
                mongo: Some(mongo),
            })
        }
    }
}
