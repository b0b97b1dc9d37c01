//! MongoDB store: one document per vessel in the `vessels` collection, `_id` = the vessel id.
//!
//! [`VesselStore::find_available`] is one query that filters and orders exactly like
//! [`Specification::best_fit`]: available, both dimensions large enough, smallest capacity, then
//! smallest max weight, then id (MongoDB compares strings bytewise, as Rust does).

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

use super::VesselStore;
use crate::domain::{Specification, Vessel};

/// Name of the collection.
pub const COLLECTION: &str = "vessels";

/// Name of the index serving [`VesselStore::find_available`].
pub const FIT_INDEX: &str = "best_fit";

/// The fleet in MongoDB.
#[derive(Debug, Clone)]
pub struct MongoStore {
    vessels: Collection<VesselDoc>,
}

impl MongoStore {
    /// A store on `database` (no round trip: the driver connects on first use).
    pub fn new(database: &Database) -> Self {
        Self {
            vessels: database.collection(COLLECTION),
        }
    }

    /// Creates the index that lets the best-fit query read vessels in fit order. Idempotent.
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        let index = IndexModel::builder()
            .keys(fit_sort())
            .options(IndexOptions::builder().name(FIT_INDEX.to_owned()).build())
            .build();
        self.vessels
            .create_index(index)
            .await
            .map(|_| ())
            .map_err(|e| classify(&e))
    }
}

/// The best-fit order; must match [`crate::domain::fit_order`].
fn fit_sort() -> Document {
    doc! { "capacity": 1, "max_weight": 1, "_id": 1 }
}

/// How a vessel is stored. Numbers are `i64`: BSON has no unsigned integers.
#[derive(Debug, Serialize, Deserialize)]
struct VesselDoc {
    #[serde(rename = "_id")]
    id: String,
    name: String,
    capacity: i64,
    max_weight: i64,
    available: bool,
    owner_id: String,
}

impl From<&Vessel> for VesselDoc {
    fn from(v: &Vessel) -> Self {
        Self {
            id: v.id.clone(),
            name: v.name.clone(),
            capacity: i64::from(v.capacity),
            max_weight: i64::from(v.max_weight),
            available: v.available,
            owner_id: v.owner_id.clone(),
        }
    }
}

impl TryFrom<VesselDoc> for Vessel {
    type Error = StoreError;

    fn try_from(doc: VesselDoc) -> Result<Self, Self::Error> {
        let number = |field: &str, value: i64| {
            u32::try_from(value).map_err(|_| {
                StoreError::Internal(format!("vessel {} has an invalid {field} {value}", doc.id))
            })
        };
        Ok(Self {
            capacity: number("capacity", doc.capacity)?,
            max_weight: number("max_weight", doc.max_weight)?,
            id: doc.id,
            name: doc.name,
            available: doc.available,
            owner_id: doc.owner_id,
        })
    }
}

impl MongoStore {
    async fn find(
        &self,
        filter: Document,
        sort: Document,
        limit: Option<usize>,
    ) -> Result<Vec<Vessel>, StoreError> {
        let limit = limit.map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX));
        let docs: Vec<VesselDoc> = self
            .vessels
            .find(filter)
            .sort(sort)
            .limit(limit)
            .await
            .map_err(|e| classify(&e))?
            .try_collect()
            .await
            .map_err(|e| classify(&e))?;
        docs.into_iter().map(Vessel::try_from).collect()
    }
}

#[async_trait]
impl VesselStore for MongoStore {
    async fn create(&self, vessel: &Vessel) -> Result<(), StoreError> {
        self.vessels
            .insert_one(VesselDoc::from(vessel))
            .await
            .map(drop)
            .map_err(|e| classify_insert(&e, || format!("vessel {}", vessel.id)))
    }

    async fn get(&self, id: &str) -> Result<Option<Vessel>, StoreError> {
        let doc = self
            .vessels
            .find_one(doc! { "_id": id })
            .await
            .map_err(|e| classify(&e))?;
        doc.map(Vessel::try_from).transpose()
    }

    async fn list(&self) -> Result<Vec<Vessel>, StoreError> {
        self.find(doc! {}, doc! { "_id": 1 }, None).await
    }

    async fn list_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Vessel>, StoreError> {
        let filter = match after {
            Some(id) => doc! { "_id": { "$gt": id } },
            None => doc! {},
        };
        self.find(filter, doc! { "_id": 1 }, Some(limit)).await
    }

    async fn find_available(&self, spec: &Specification) -> Result<Option<Vessel>, StoreError> {
        let filter = doc! {
            "available": true,
            "capacity": { "$gte": i64::from(spec.capacity) },
            "max_weight": { "$gte": i64::from(spec.max_weight) },
        };
        let doc = self
            .vessels
            .find_one(filter)
            .sort(fit_sort())
            .await
            .map_err(|e| classify(&e))?;
        doc.map(Vessel::try_from).transpose()
    }

    async fn count(&self) -> Result<u64, StoreError> {
        self.vessels
            .count_documents(doc! {})
            .await
            .map_err(|e| classify(&e))
    }
}
