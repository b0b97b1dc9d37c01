//! In-process store: the default, for demos and tests; lost when the process stops.

use std::sync::RwLock;

use async_trait::async_trait;
use shippy_shared::store::StoreError;

use super::ConsignmentStore;
use crate::domain::Consignment;

/// Consignments in arrival order.
#[derive(Debug, Default)]
pub struct MemoryStore {
    consignments: RwLock<Vec<Consignment>>,
}

#[async_trait]
impl ConsignmentStore for MemoryStore {
    async fn create(&self, consignment: &Consignment) -> Result<(), StoreError> {
        self.consignments
            .write()
            .map_err(StoreError::poisoned)?
            .push(consignment.clone());
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Consignment>, StoreError> {
        Ok(self
            .consignments
            .read()
            .map_err(StoreError::poisoned)?
            .clone())
    }
}
