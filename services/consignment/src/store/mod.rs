//! Where consignments live: the [`ConsignmentStore`] trait and its backends, [`sqlite`] (the
//! default), [`memory`] and [`mongo`]. Which one runs is the service's choice
//! (`ConsignmentApp::build`).

pub mod memory;
pub mod mongo;
pub mod sqlite;

use std::fmt;

use async_trait::async_trait;
use shippy_shared::store::StoreError;

use crate::domain::Consignment;

/// Persistence of consignments.
#[async_trait]
pub trait ConsignmentStore: Send + Sync + fmt::Debug {
    /// Stores a consignment; returns only once the backend acknowledged the write.
    async fn create(&self, consignment: &Consignment) -> Result<(), StoreError>;
    /// Every consignment, oldest first.
    async fn list(&self) -> Result<Vec<Consignment>, StoreError>;
    /// At most `limit` of the consignments `owner_id` submitted, oldest first (id order), starting
    /// after the id `after` (from the first when `None`).
    async fn list_by_owner(
        &self,
        owner_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Consignment>, StoreError>;
}
