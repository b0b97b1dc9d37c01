//! Where consignments live: the [`ConsignmentStore`] trait and its backends.

pub mod memory;

use std::{fmt, sync::Arc};

use async_trait::async_trait;
use shippy_shared::{settings::StoreBackend, store::StoreError};

use crate::{Settings, domain::Consignment};

/// Persistence of consignments.
#[async_trait]
pub trait ConsignmentStore: Send + Sync + fmt::Debug {
    /// Stores a consignment; returns only once the backend acknowledged the write.
    async fn create(&self, consignment: &Consignment) -> Result<(), StoreError>;
    /// Every consignment, oldest first.
    async fn list(&self) -> Result<Vec<Consignment>, StoreError>;
}

/// Opens the backend selected by `store.backend`.
pub async fn open(settings: &Settings) -> Result<Arc<dyn ConsignmentStore>, StoreError> {
    match settings.common.store.backend {
        StoreBackend::Memory => Ok(Arc::new(memory::MemoryStore::default())),
        StoreBackend::Mongodb => Err(StoreError::Internal(
            "mongodb store not available yet".into(),
        )),
    }
}
