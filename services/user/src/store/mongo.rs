//! MongoDB store: one document per user in the `users` collection, `_id` = the user id, and a
//! unique index on `email` that makes registration race-free across instances.

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::{
    Collection, Database, IndexModel,
    bson::{Document, doc},
    options::IndexOptions,
};
use serde::{Deserialize, Serialize};
use shippy_shared::{mongo::classify, store::StoreError};
use tokio::sync::OnceCell;

use super::UserStore;
use crate::domain::{PasswordHash, User};

/// Name of the collection.
pub const COLLECTION: &str = "users";

/// Name of the unique index on `email`.
pub const EMAIL_INDEX: &str = "email_unique";

/// Users in MongoDB.
#[derive(Debug)]
pub struct MongoStore {
    database: Database,
    users: Collection<UserDoc>,
    /// Set once the unique email index is known to exist.
    indexed: OnceCell<()>,
}

impl MongoStore {
    /// A store on `database` (no round trip: the driver connects on first use).
    pub fn new(database: &Database) -> Self {
        Self {
            database: database.clone(),
            users: database.collection(COLLECTION),
            indexed: OnceCell::new(),
        }
    }

    /// The database, for the readiness supervisor.
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// Creates the unique index on `email` (idempotent; one round trip per process).
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        self.indexed
            .get_or_try_init(|| async {
                let index = IndexModel::builder()
                    .keys(doc! { "email": 1 })
                    .options(
                        IndexOptions::builder()
                            .name(EMAIL_INDEX.to_owned())
                            .unique(true)
                            .build(),
                    )
                    .build();
                self.users
                    .create_index(index)
                    .await
                    .map(|_| ())
                    .map_err(|e| classify(&e))
            })
            .await
            .copied()
    }

    async fn find(&self, filter: Document) -> Result<Option<User>, StoreError> {
        Ok(self
            .users
            .find_one(filter)
            .await
            .map_err(|e| classify(&e))?
            .map(User::from))
    }
}

/// How a user is stored.
#[derive(Debug, Serialize, Deserialize)]
struct UserDoc {
    #[serde(rename = "_id")]
    id: String,
    name: String,
    company: String,
    email: String,
    password_hash: String,
}

impl From<&User> for UserDoc {
    fn from(u: &User) -> Self {
        Self {
            id: u.id.clone(),
            name: u.name.clone(),
            company: u.company.clone(),
            email: u.email.clone(),
            password_hash: u.password_hash.0.clone(),
        }
    }
}

impl From<UserDoc> for User {
    fn from(doc: UserDoc) -> Self {
        Self {
            id: doc.id,
            name: doc.name,
            company: doc.company,
            email: doc.email,
            password_hash: PasswordHash(doc.password_hash),
        }
    }
}

#[async_trait]
impl UserStore for MongoStore {
    async fn create(&self, user: &User) -> Result<(), StoreError> {
        // Without the index a second user with the same email would be accepted; the supervisor
        // normally creates it before the service reports SERVING, this covers calls before that.
        self.ensure_indexes().await?;
        match self.users.insert_one(UserDoc::from(user)).await {
            Ok(_) => Ok(()),
            Err(error) => Err(match classify(&error) {
                StoreError::Duplicate(_) => {
                    StoreError::Duplicate(format!("a user with email {}", user.email))
                }
                other => other,
            }),
        }
    }

    async fn get(&self, id: &str) -> Result<Option<User>, StoreError> {
        self.find(doc! { "_id": id }).await
    }

    async fn find_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        self.find(doc! { "email": email }).await
    }

    async fn list(&self) -> Result<Vec<User>, StoreError> {
        let docs: Vec<UserDoc> = self
            .users
            .find(doc! {})
            .sort(doc! { "email": 1 })
            .await
            .map_err(|e| classify(&e))?
            .try_collect()
            .await
            .map_err(|e| classify(&e))?;
        Ok(docs.into_iter().map(User::from).collect())
    }
}
