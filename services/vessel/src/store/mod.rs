//! Where vessels live: the [`VesselStore`] trait and its backends.

pub mod memory;
pub mod mongo;
pub mod sqlite;

use std::fmt;

use async_trait::async_trait;
use shippy_shared::store::StoreError;

use crate::domain::{Specification, Vessel};

/// Persistence of the fleet.
#[async_trait]
pub trait VesselStore: Send + Sync + fmt::Debug {
    /// Adds a vessel; [`StoreError::Duplicate`] when its id is taken.
    async fn create(&self, vessel: &Vessel) -> Result<(), StoreError>;
    /// The vessel with id `id`, if there is one.
    async fn get(&self, id: &str) -> Result<Option<Vessel>, StoreError>;
    /// The whole fleet, ordered by id.
    async fn list(&self) -> Result<Vec<Vessel>, StoreError>;
    /// At most `limit` vessels with an id after `after` (from the first when `None`), by id.
    async fn list_page(&self, after: Option<&str>, limit: usize)
    -> Result<Vec<Vessel>, StoreError>;
    /// The best fit for `spec` (see [`Specification::best_fit`]).
    async fn find_available(&self, spec: &Specification) -> Result<Option<Vessel>, StoreError>;
    /// Number of vessels.
    async fn count(&self) -> Result<u64, StoreError>;
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
