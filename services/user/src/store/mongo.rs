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
use shippy_shared::store::{
    StoreError,
    mongo::{classify, classify_insert},
};
use tokio::sync::OnceCell;

use super::UserStore;
use crate::domain::{Email, PasswordHash, User};

/// Name of the collection.
pub const COLLECTION: &str = "users";

/// Name of the unique index on `email`.
pub const EMAIL_INDEX: &str = "email_unique";

/// Users in MongoDB.
#[derive(Debug)]
pub struct MongoStore {
    users: Collection<UserDoc>,
    /// Set once the unique email index is known to exist.
    indexed: OnceCell<()>,
}

impl MongoStore {
    /// A store on `database` (no round trip: the driver connects on first use).
    pub fn new(database: &Database) -> Self {
        Self {
            users: database.collection(COLLECTION),
            indexed: OnceCell::new(),
        }
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
        self.users
            .find_one(filter)
            .await
            .map_err(|e| classify(&e))?
            .map(User::try_from)
            .transpose()
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
            email: u.email.as_str().to_owned(),
            password_hash: u.password_hash.as_phc().to_owned(),
        }
    }
}

impl TryFrom<UserDoc> for User {
    type Error = StoreError;

    /// Every stored email went through [`Email::parse`]; one that does not parse is corrupt data.
    fn try_from(doc: UserDoc) -> Result<Self, Self::Error> {
        let email = Email::parse(&doc.email).map_err(|e| {
            StoreError::Internal(format!("user {} has an unreadable email: {e}", doc.id))
        })?;
        Ok(Self {
            id: doc.id,
            name: doc.name,
            company: doc.company,
            email,
            password_hash: PasswordHash::from_stored(doc.password_hash),
        })
    }
}

#[async_trait]
impl UserStore for MongoStore {
    async fn create(&self, user: &User) -> Result<(), StoreError> {
        // Without the index a second user with the same email would be accepted; the supervisor
        // normally creates it before the service reports SERVING, this covers calls before that.
        self.ensure_indexes().await?;
        self.users
            .insert_one(UserDoc::from(user))
            .await
            .map(drop)
            .map_err(|e| classify_insert(&e, || format!("a user with email {}", user.email)))
    }

    async fn get(&self, id: &str) -> Result<Option<User>, StoreError> {
        self.find(doc! { "_id": id }).await
    }

    async fn find_by_email(&self, email: &Email) -> Result<Option<User>, StoreError> {
        self.find(doc! { "email": email.as_str() }).await
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
        docs.into_iter().map(User::try_from).collect()
    }
}
