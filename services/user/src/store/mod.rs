//! Where users live: the [`UserStore`] trait and its backends.

pub mod memory;
pub mod mongo;

use std::{fmt, sync::Arc};

use async_trait::async_trait;
use shippy_shared::{settings::StoreBackend, store::StoreError};

use crate::{Settings, domain::User};

/// Persistence of users. Emails are unique.
#[async_trait]
pub trait UserStore: Send + Sync + fmt::Debug {
    /// Adds a user; [`StoreError::Duplicate`] when the email (or id) is taken.
    async fn create(&self, user: &User) -> Result<(), StoreError>;
    /// The user with `id`.
    async fn get(&self, id: &str) -> Result<Option<User>, StoreError>;
    /// The user with the (normalised) `email`.
    async fn find_by_email(&self, email: &str) -> Result<Option<User>, StoreError>;
    /// Every user, ordered by email.
    async fn list(&self) -> Result<Vec<User>, StoreError>;
}

/// An opened store.
#[derive(Debug, Clone)]
pub struct Opened {
    /// What the handlers use.
    pub store: Arc<dyn UserStore>,
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
                store: Arc::clone(&mongo) as Arc<dyn UserStore>,
                mongo: Some(mongo),
            })
        }
    }
}
