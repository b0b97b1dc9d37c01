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
use shippy_shared::idempotency::IdempotencyKey;

/// What [`ConsignmentStore::create_with_key`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keyed {
    /// The consignment is stored, under its key.
    Stored,
    /// Its owner had used the key already: nothing was stored, and this is the consignment
    /// created with the key.
    Earlier(Consignment),
}

/// Persistence of consignments.
#[async_trait]
pub trait ConsignmentStore: Send + Sync + fmt::Debug {
    /// Stores a consignment; returns only once the backend acknowledged the write.
    async fn create(&self, consignment: &Consignment) -> Result<(), StoreError>;
    /// Stores a consignment created with the idempotency key `key` by its owner, unless the owner
    /// used `key` already (then stores nothing and returns that consignment). Atomic: of two
    /// requests racing with one key, one stores and the other gets its consignment. Returns only
    /// once the backend acknowledged the write; a write that failed part way is completed by the
    /// next call with the same key, so an acknowledged key always has its consignment.
    async fn create_with_key(
        &self,
        consignment: &Consignment,
        key: &IdempotencyKey,
    ) -> Result<Keyed, StoreError>;
    /// The consignment `owner_id` created with the idempotency key `key`, if any.
    async fn find_by_key(
        &self,
        owner_id: &str,
        key: &IdempotencyKey,
    ) -> Result<Option<Consignment>, StoreError>;
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
