//! Where users live: the [`UserStore`] trait and its backends.

pub mod memory;

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

/// Opens the backend selected by `store.backend`.
pub async fn open(settings: &Settings) -> Result<Arc<dyn UserStore>, StoreError> {
    match settings.common.store.backend {
        StoreBackend::Memory => Ok(Arc::new(memory::MemoryStore::default())),
        StoreBackend::Mongodb => Err(StoreError::Internal(
            "mongodb store not available yet".into(),
        )),
    }
}
