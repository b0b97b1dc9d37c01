//! MongoDB store: one document per consignment in the `consignments` collection, `_id` = the
//! consignment id. Ids are UUIDv7, whose text sorts by creation time, so `_id` order is arrival
//! order. An index on `(owner_id, _id)` serves each user's list.
//!
//! Idempotency keys live in `consignment_keys`, one document per (owner, key) whose `_id` is made
//! of both, so `_id`'s own uniqueness arbitrates between requests racing with one key: no other
//! index is needed (partial or sparse unique indexes would be, on the consignments, and
//! wire-compatible servers such as FerretDB 1.x do not have them). MongoDB has no transaction
//! without a replica set, so the key document carries the whole consignment: it is written first,
//! the consignment second, and a key found without its consignment (the service stopped in
//! between, or the second write failed) is completed from it by whoever finds it.

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

use super::{ConsignmentStore, Keyed};
use crate::domain::{Consignment, Container};
use shippy_shared::idempotency::IdempotencyKey;

/// Name of the collection.
pub const COLLECTION: &str = "consignments";

/// Name of the collection of idempotency keys.
pub const KEYS_COLLECTION: &str = "consignment_keys";

/// Name of the index on `(owner_id, _id)`.
pub const OWNER_INDEX: &str = "owner_id_id";

/// Consignments in MongoDB.
#[derive(Debug, Clone)]
pub struct MongoStore {
    consignments: Collection<ConsignmentDoc>,
    keys: Collection<KeyDoc>,
    /// Set once the owner index is known to exist (two first calls racing both create it: the
    /// creation is idempotent).
    indexed: Arc<AtomicBool>,
}

impl MongoStore {
    /// A store on `database` (no round trip: the driver connects on first use).
    pub fn new(database: &Database) -> Self {
        Self {
            consignments: database.collection(COLLECTION),
            keys: database.collection(KEYS_COLLECTION),
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

    /// Stores a consignment a key document carries, unless it is stored already (its id is
    /// unique, so a duplicate is that very consignment, stored by an earlier attempt).
    async fn complete(&self, consignment: &ConsignmentDoc) -> Result<(), StoreError> {
        match self.consignments.insert_one(consignment).await {
            Ok(_) => Ok(()),
            Err(error) => match classify(&error) {
                StoreError::Duplicate(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    /// The key document of `owner_id`'s `key`, if any.
    async fn key_doc(
        &self,
        owner_id: &str,
        key: &IdempotencyKey,
    ) -> Result<Option<KeyDoc>, StoreError> {
        self.keys
            .find_one(doc! { "_id": key_id(owner_id, key) })
            .await
            .map_err(|e| classify(&e))
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ContainerDoc {
    id: String,
    customer_id: String,
    origin: String,
    user_id: String,
}

/// An idempotency key, and the consignment created with it (see the module doc for why all of it).
#[derive(Debug, Serialize, Deserialize)]
struct KeyDoc {
    /// [`key_id`].
    #[serde(rename = "_id")]
    id: String,
    consignment: ConsignmentDoc,
}

/// The `_id` of an owner's key.
fn key_id(owner_id: &str, key: &IdempotencyKey) -> String {
    key.scoped_to(owner_id)
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

    async fn create_with_key(
        &self,
        consignment: &Consignment,
        key: &IdempotencyKey,
    ) -> Result<Keyed, StoreError> {
        let claim = KeyDoc {
            id: key_id(&consignment.owner_id, key),
            consignment: ConsignmentDoc::from(consignment),
        };
        match self.keys.insert_one(&claim).await {
            Ok(_) => {
                self.complete(&claim.consignment).await?;
                Ok(Keyed::Stored)
            }
            Err(error) => match classify(&error) {
                StoreError::Duplicate(_) => {
                    let earlier =
                        self.key_doc(&consignment.owner_id, key)
                            .await?
                            .ok_or_else(|| {
                                StoreError::Internal(format!(
                                    "the idempotency key {} was taken, then not found",
                                    claim.id
                                ))
                            })?;
                    self.complete(&earlier.consignment).await?;
                    Ok(Keyed::Earlier(Consignment::try_from(earlier.consignment)?))
                }
                other => Err(other),
            },
        }
    }

    async fn find_by_key(
        &self,
        owner_id: &str,
        key: &IdempotencyKey,
    ) -> Result<Option<Consignment>, StoreError> {
        let Some(found) = self.key_doc(owner_id, key).await? else {
            return Ok(None);
        };
        self.complete(&found.consignment).await?;
        Consignment::try_from(found.consignment).map(Some)
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
