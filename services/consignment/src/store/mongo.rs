//! MongoDB store: one document per consignment in the `consignments` collection, `_id` = the
//! consignment id. Ids are UUIDv7, whose text sorts by creation time, so `_id` order is arrival
//! order. An index on `(owner_id, _id)` serves each user's list.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::{
    Collection, Database, IndexModel,
    bson::{Document, doc},
    options::IndexOptions,
};
use serde::{Deserialize, Serialize};
use shippy_shared::store::{
    StoreError,
    mongo::{classify, classify_insert},
};

use super::ConsignmentStore;
use crate::domain::{Consignment, Container};

/// Name of the collection.
pub const COLLECTION: &str = "consignments";

/// Name of the index on `(owner_id, _id)`.
pub const OWNER_INDEX: &str = "owner_id_id";

/// Consignments in MongoDB.
#[derive(Debug, Clone)]
pub struct MongoStore {
    consignments: Collection<ConsignmentDoc>,
    /// Set once the owner index is known to exist (two first calls racing both create it: the
    /// creation is idempotent).
    indexed: Arc<AtomicBool>,
}

impl MongoStore {
    /// A store on `database` (no round trip: the driver connects on first use).
    pub fn new(database: &Database) -> Self {
        Self {
            consignments: database.collection(COLLECTION),
            indexed: Arc::default(),
        }
    }

    /// Creates the index on `(owner_id, _id)` (idempotent; one round trip per process, made on
    /// first use, so a service that starts before its database still starts).
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        if self.indexed.load(Ordering::Acquire) {
            return Ok(());
        }
        let index = IndexModel::builder()
            .keys(doc! { "owner_id": 1, "_id": 1 })
            .options(IndexOptions::builder().name(OWNER_INDEX.to_owned()).build())
            .build();
        self.consignments
            .create_index(index)
            .await
            .map_err(|e| classify(&e))?;
        self.indexed.store(true, Ordering::Release);
        Ok(())
    }

    /// The consignments matching `filter`, oldest first.
    async fn find(
        &self,
        filter: Document,
        limit: Option<usize>,
    ) -> Result<Vec<Consignment>, StoreError> {
        let limit = limit.map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX));
        let docs: Vec<ConsignmentDoc> = self
            .consignments
            .find(filter)
            .sort(doc! { "_id": 1 })
            .limit(limit)
            .await
            .map_err(|e| classify(&e))?
            .try_collect()
            .await
            .map_err(|e| classify(&e))?;
        docs.into_iter().map(Consignment::try_from).collect()
    }
}

/// How a consignment is stored. Numbers are `i64`: BSON has no unsigned integers.
#[derive(Debug, Serialize, Deserialize)]
struct ConsignmentDoc {
    #[serde(rename = "_id")]
    id: String,
    description: String,
    weight: i64,
    containers: Vec<ContainerDoc>,
    vessel_id: String,
    /// Absent in documents stored before consignments had owners: those read as owned by nobody
    /// (listed to no user).
    #[serde(default)]
    owner_id: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct ContainerDoc {
    id: String,
    customer_id: String,
    origin: String,
    user_id: String,
}

impl From<&Consignment> for ConsignmentDoc {
    fn from(c: &Consignment) -> Self {
        Self {
            id: c.id.clone(),
            description: c.description.clone(),
            weight: i64::from(c.weight),
            containers: c
                .containers
                .iter()
                .map(|k| ContainerDoc {
                    id: k.id.clone(),
                    customer_id: k.customer_id.clone(),
                    origin: k.origin.clone(),
                    user_id: k.user_id.clone(),
                })
                .collect(),
            vessel_id: c.vessel_id.clone(),
            owner_id: c.owner_id.clone(),
        }
    }
}

impl TryFrom<ConsignmentDoc> for Consignment {
    type Error = StoreError;

    fn try_from(doc: ConsignmentDoc) -> Result<Self, Self::Error> {
        let weight = u32::try_from(doc.weight).map_err(|_| {
            StoreError::Internal(format!(
                "consignment {} has an invalid weight {}",
                doc.id, doc.weight
            ))
        })?;
        Ok(Self {
            id: doc.id,
            description: doc.description,
            weight,
            containers: doc
                .containers
                .into_iter()
                .map(|k| Container {
                    id: k.id,
                    customer_id: k.customer_id,
                    origin: k.origin,
                    user_id: k.user_id,
                })
                .collect(),
            vessel_id: doc.vessel_id,
            owner_id: doc.owner_id,
        })
    }
}

#[async_trait]
impl ConsignmentStore for MongoStore {
    async fn create(&self, consignment: &Consignment) -> Result<(), StoreError> {
        self.consignments
            .insert_one(ConsignmentDoc::from(consignment))
            .await
            .map(drop)
            .map_err(|e| classify_insert(&e, || format!("consignment {}", consignment.id)))
    }

    async fn list(&self) -> Result<Vec<Consignment>, StoreError> {
        self.find(doc! {}, None).await
    }

    async fn list_by_owner(
        &self,
        owner_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Consignment>, StoreError> {
        // The index makes each user's page a range scan instead of a collection scan.
        self.ensure_indexes().await?;
        let filter = match after {
            Some(id) => doc! { "owner_id": owner_id, "_id": { "$gt": id } },
            None => doc! { "owner_id": owner_id },
        };
        self.find(filter, Some(limit)).await
    }
}
