//! In-process store: the default, for demos and tests; lost when the process stops.

use std::{
    collections::{BTreeMap, HashMap},
    ops::Bound,
    sync::RwLock,
};

use async_trait::async_trait;
use shippy_shared::store::StoreError;

use super::{ConsignmentStore, Keyed};
use crate::domain::Consignment;
use shippy_shared::idempotency::IdempotencyKey;

/// Consignments by id, and idempotency keys, under one lock so that a key and its consignment are
/// stored together.
#[derive(Debug, Default)]
pub struct MemoryStore {
    consignments: RwLock<Stored>,
}

/// A map by id, not a list: a unique-id check and a page after an id must not cost a scan of
/// everything stored (a busy in-memory service holds hundreds of thousands).
#[derive(Debug, Default)]
struct Stored {
    by_id: BTreeMap<String, Consignment>,
    /// (owner, key) → consignment id.
    by_key: HashMap<(String, String), String>,
}

impl Stored {
    fn insert(&mut self, consignment: &Consignment) -> Result<(), StoreError> {
        // The same contract as the other backends: an id is unique.
        if self.by_id.contains_key(&consignment.id) {
            return Err(StoreError::Duplicate(format!(
                "consignment {}",
                consignment.id
            )));
        }
        self.by_id
            .insert(consignment.id.clone(), consignment.clone());
        Ok(())
    }

    fn keyed(&self, owner_id: &str, key: &IdempotencyKey) -> Option<Consignment> {
        let id = self
            .by_key
            .get(&(owner_id.to_owned(), key.as_str().to_owned()))?;
        self.by_id.get(id).cloned()
    }
}

#[async_trait]
impl ConsignmentStore for MemoryStore {
    async fn create(&self, consignment: &Consignment) -> Result<(), StoreError> {
        self.consignments
            .write()
            .map_err(StoreError::poisoned)?
            .insert(consignment)
    }

    async fn create_with_key(
        &self,
        consignment: &Consignment,
        key: &IdempotencyKey,
    ) -> Result<Keyed, StoreError> {
        let mut all = self.consignments.write().map_err(StoreError::poisoned)?;
        if let Some(earlier) = all.keyed(&consignment.owner_id, key) {
            return Ok(Keyed::Earlier(earlier));
        }
        all.insert(consignment)?;
        all.by_key.insert(
            (consignment.owner_id.clone(), key.as_str().to_owned()),
            consignment.id.clone(),
        );
        Ok(Keyed::Stored)
    }

    async fn find_by_key(
        &self,
        owner_id: &str,
        key: &IdempotencyKey,
    ) -> Result<Option<Consignment>, StoreError> {
        Ok(self
            .consignments
            .read()
            .map_err(StoreError::poisoned)?
            .keyed(owner_id, key))
    }

    async fn list(&self) -> Result<Vec<Consignment>, StoreError> {
        // Oldest first, as every backend: ids are time-ordered, and the map is ordered by id.
        Ok(self
            .consignments
            .read()
            .map_err(StoreError::poisoned)?
            .by_id
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
            .by_id
            .range((from, Bound::Unbounded))
            .map(|(_, c)| c)
            .filter(|c| c.owner_id == owner_id)
            .take(limit)
            .cloned()
            .collect())
    }
}
