//! In-process store: the default, for demos and tests; lost when the process stops.

use std::{collections::BTreeMap, ops::Bound, sync::RwLock};

use async_trait::async_trait;
use shippy_shared::store::StoreError;

use super::ConsignmentStore;
use crate::domain::Consignment;

/// Consignments by id. A map, not a list: a unique-id check and a page after an id must not cost
/// a scan of everything stored (a busy in-memory service holds hundreds of thousands).
#[derive(Debug, Default)]
pub struct MemoryStore {
    consignments: RwLock<BTreeMap<String, Consignment>>,
}

#[async_trait]
impl ConsignmentStore for MemoryStore {
    async fn create(&self, consignment: &Consignment) -> Result<(), StoreError> {
        let mut all = self.consignments.write().map_err(StoreError::poisoned)?;
        // The same contract as the other backends: an id is unique.
        if all.contains_key(&consignment.id) {
            return Err(StoreError::Duplicate(format!(
                "consignment {}",
                consignment.id
            )));
        }
        all.insert(consignment.id.clone(), consignment.clone());
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Consignment>, StoreError> {
        // Oldest first, as every backend: ids are time-ordered, and the map is ordered by id.
        Ok(self
            .consignments
            .read()
            .map_err(StoreError::poisoned)?
            .values()
            .cloned()
            .collect())
    }

    async fn list_by_owner(
        &self,
        owner_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Consignment>, StoreError> {
        let all = self.consignments.read().map_err(StoreError::poisoned)?;
        let from = after.map_or(Bound::Unbounded, |after| Bound::Excluded(after.to_owned()));
        Ok(all
            .range((from, Bound::Unbounded))
            .map(|(_, c)| c)
            .filter(|c| c.owner_id == owner_id)
            .take(limit)
            .cloned()
            .collect())
    }
}
