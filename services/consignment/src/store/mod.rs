//! Where consignments live: the [`ConsignmentStore`] trait and its backends, [`memory`] and
//! [`mongo`]. Which one runs is the service's choice (`ConsignmentApp::build`).

pub mod memory;
pub mod mongo;

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
}
