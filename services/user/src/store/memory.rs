//! In-process store: the default, for demos and tests; lost when the process stops.

use std::{collections::BTreeMap, sync::RwLock};

use async_trait::async_trait;
use shippy_shared::store::StoreError;

use super::UserStore;
use crate::domain::{Email, User};

/// Users keyed by email (the unique key), so the uniqueness check and the insert are one step.
#[derive(Debug, Default)]
pub struct MemoryStore {
    by_email: RwLock<BTreeMap<Email, User>>,
}

#[async_trait]
impl UserStore for MemoryStore {
    async fn create(&self, user: &User) -> Result<(), StoreError> {
        let mut users = self.by_email.write().map_err(StoreError::poisoned)?;
        if users.contains_key(&user.email) {
            return Err(StoreError::Duplicate(format!(
                "a user with email {}",
                user.email
            )));
        }
        users.insert(user.email.clone(), user.clone());
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<User>, StoreError> {
        Ok(self
            .by_email
            .read()
            .map_err(StoreError::poisoned)?
            .values()
            .find(|u| u.id == id)
            .cloned())
    }

    async fn find_by_email(&self, email: &Email) -> Result<Option<User>, StoreError> {
        Ok(self
            .by_email
            .read()
            .map_err(StoreError::poisoned)?
            .get(email)
            .cloned())
    }

    async fn list(&self) -> Result<Vec<User>, StoreError> {
        Ok(self
            .by_email
            .read()
            .map_err(StoreError::poisoned)?
            .values()
            .cloned()
            .collect())
    }
}
