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
        let mut all = self.consignments.write().map_err(StoreError::poisoned)?;
        // The same contract as the other backends: an id is unique.
        if all.iter().any(|c| c.id == consignment.id) {
            return Err(StoreError::Duplicate(format!(
                "consignment {}",
                consignment.id
            )));
        }
        all.push(consignment.clone());
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Consignment>, StoreError> {
        // Oldest first, as every backend: ids are time-ordered, insertion order may not be.
        let mut all = self
            .consignments
            .read()
            .map_err(StoreError::poisoned)?
            .clone();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    async fn list_by_owner(
        &self,
        owner_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Consignment>, StoreError> {
        let mut page: Vec<Consignment> = self
            .consignments
            .read()
            .map_err(StoreError::poisoned)?
            .iter()
            .filter(|c| c.owner_id == owner_id && after.is_none_or(|after| c.id.as_str() > after))
            .cloned()
            .collect();
        page.sort_by(|a, b| a.id.cmp(&b.id));
        page.truncate(limit);
        Ok(page)
    }
}
