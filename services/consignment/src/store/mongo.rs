//! MongoDB store: one document per consignment in the `consignments` collection, `_id` = the
//! consignment id. Ids are UUIDv7, whose text sorts by creation time, so `_id` order is arrival
//! order.

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::{Collection, Database, bson::doc};
use serde::{Deserialize, Serialize};
use shippy_shared::store::{
    StoreError,
    mongo::{classify, classify_insert},
};

use super::ConsignmentStore;
use crate::domain::{Consignment, Container};

/// Name of the collection.
pub const COLLECTION: &str = "consignments";

/// Consignments in MongoDB.
#[derive(Debug, Clone)]
pub struct MongoStore {
    consignments: Collection<ConsignmentDoc>,
}

impl MongoStore {
    /// A store on `database` (no round trip: the driver connects on first use).
    pub fn new(database: &Database) -> Self {
        Self {
            consignments: database.collection(COLLECTION),
        }
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
        let docs: Vec<ConsignmentDoc> = self
            .consignments
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .await
            .map_err(|e| classify(&e))?
            .try_collect()
            .await
            .map_err(|e| classify(&e))?;
        docs.into_iter().map(Consignment::try_from).collect()
    }
}
