//! In-process store: the default, for demos and tests; lost when the process stops.

use std::{collections::BTreeMap, sync::RwLock};

use async_trait::async_trait;
use shippy_shared::store::StoreError;

use super::VesselStore;
use crate::domain::{Specification, Vessel};

/// Vessels in a map keyed by id.
#[derive(Debug, Default)]
pub struct MemoryStore {
    vessels: RwLock<BTreeMap<String, Vessel>>,
}

#[async_trait]
impl VesselStore for MemoryStore {
    async fn create(&self, vessel: &Vessel) -> Result<(), StoreError> {
        let mut vessels = self.vessels.write().map_err(StoreError::poisoned)?;
        if vessels.contains_key(&vessel.id) {
            return Err(StoreError::Duplicate(format!("vessel {}", vessel.id)));
        }
        vessels.insert(vessel.id.clone(), vessel.clone());
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<Vessel>, StoreError> {
        Ok(self
            .vessels
            .read()
            .map_err(StoreError::poisoned)?
            .get(id)
            .cloned())
    }

    async fn list(&self) -> Result<Vec<Vessel>, StoreError> {
        Ok(self
            .vessels
            .read()
            .map_err(StoreError::poisoned)?
            .values()
            .cloned()
            .collect())
    }

    async fn list_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Vessel>, StoreError> {
        use std::ops::Bound;
        let vessels = self.vessels.read().map_err(StoreError::poisoned)?;
        let from = after.map_or(Bound::Unbounded, |id| Bound::Excluded(id.to_owned()));
        Ok(vessels
            .range((from, Bound::Unbounded))
            .take(limit)
            .map(|(_, v)| v.clone())
            .collect())
    }

    async fn find_available(&self, spec: &Specification) -> Result<Option<Vessel>, StoreError> {
        Ok(spec
            .best_fit(self.vessels.read().map_err(StoreError::poisoned)?.values())
            .cloned())
    }

    async fn count(&self) -> Result<u64, StoreError> {
        Ok(self.vessels.read().map_err(StoreError::poisoned)?.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::seed_if_empty;

    #[tokio::test]
    async fn seeding_happens_once_and_duplicates_are_refused() {
        let store = MemoryStore::default();
        assert_eq!(seed_if_empty(&store).await.expect("seed"), 3);
        assert_eq!(seed_if_empty(&store).await.expect("seed again"), 0);
        let first = store.list().await.expect("list").remove(0);
        assert!(matches!(
            store.create(&first).await,
            Err(StoreError::Duplicate(_))
        ));
        let fit = store
            .find_available(&Specification {
                capacity: 3,
                max_weight: 55_000,
            })
            .await
            .expect("query");
        assert_eq!(fit.map(|v| v.id), Some("vessel001".to_owned()));
    }
}
