//! Where users live: the [`UserStore`] trait and its backends, [`sqlite`] (the default), [`memory`]
//! and [`mongo`].

pub mod memory;
pub mod mongo;
pub mod sqlite;

use std::fmt;

use async_trait::async_trait;
use shippy_shared::store::StoreError;

use crate::domain::{Email, User};

/// Persistence of users. Emails are unique.
#[async_trait]
pub trait UserStore: Send + Sync + fmt::Debug {
    /// Adds a user; [`StoreError::Duplicate`] when the email (or id) is taken.
    async fn create(&self, user: &User) -> Result<(), StoreError>;
    /// The user with `id`.
    async fn get(&self, id: &str) -> Result<Option<User>, StoreError>;
    /// The user with `email`.
    async fn find_by_email(&self, email: &Email) -> Result<Option<User>, StoreError>;
    /// Every user, ordered by email.
    async fn list(&self) -> Result<Vec<User>, StoreError>;
}
