//! SQLite store (the default): one row per consignment in the `consignments` table of the host's
//! database file, shared by every consignment instance on the host. Containers are kept as a JSON
//! array in the row (they are always read and written with their consignment). Ids are
//! time-ordered, so id order is arrival order; an index on `(owner_id, id)` serves each user's
//! list. Idempotency keys are rows of `consignment_keys`, written in one transaction with their
//! consignment.

use async_trait::async_trait;
use rusqlite::{Row, params};
use serde::{Deserialize, Serialize};
use shippy_shared::store::{
    StoreError,
    sqlite::{Sqlite, classify_insert},
};

use super::{ConsignmentStore, Keyed};
use crate::domain::{Consignment, Container};
use shippy_shared::idempotency::IdempotencyKey;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS consignments (
        id TEXT PRIMARY KEY NOT NULL,
        owner_id TEXT NOT NULL,
        description TEXT NOT NULL,
        weight INTEGER NOT NULL,
        vessel_id TEXT NOT NULL,
        containers TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS consignments_by_owner ON consignments (owner_id, id);
    CREATE TABLE IF NOT EXISTS consignment_keys (
        owner_id TEXT NOT NULL,
        key TEXT NOT NULL,
        consignment_id TEXT NOT NULL,
        PRIMARY KEY (owner_id, key)
    ) WITHOUT ROWID;
";

/// The columns of a consignment, in the order every statement here names them.
macro_rules! columns {
    () => {
        "id, owner_id, description, weight, vessel_id, containers"
    };
}

/// The consignment an owner (`?1`) created with a key (`?2`).
const BY_KEY: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM consignments \
     WHERE id = (SELECT consignment_id FROM consignment_keys WHERE owner_id = ?1 AND key = ?2)"
);

const COLUMNS: &str = columns!();

/// Stores one consignment. Like every statement a create runs, it is prepared once per connection
/// (`prepare_cached`): parsing it again for every create cost more than running it.
const INSERT: &str = concat!(
    "INSERT INTO consignments (",
    columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
);

/// Claims a key for a consignment, unless the owner has used it already.
const CLAIM_KEY: &str = "INSERT OR IGNORE INTO consignment_keys (owner_id, key, consignment_id) \
     VALUES (?1, ?2, ?3)";

/// Consignments in SQLite.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    db: Sqlite,
}

/// How a container is kept inside its consignment's row.
#[derive(Debug, Serialize, Deserialize)]
struct StoredContainer {
    id: String,
    customer_id: String,
    origin: String,
    user_id: String,
}

impl SqliteStore {
    /// The store on `db`, creating its table and index if they are missing.
    pub async fn open(db: Sqlite) -> Result<Self, StoreError> {
        db.write(|c| c.execute_batch(SCHEMA)).await?;
        Ok(Self { db })
    }

    /// Stores `c` (its containers already JSON) on `connection`.
    fn insert(
        connection: &rusqlite::Connection,
        c: &Consignment,
        containers: &str,
    ) -> Result<(), StoreError> {
        connection
            .prepare_cached(INSERT)
            .and_then(|mut statement| {
                statement.execute(params![
                    c.id,
                    c.owner_id,
                    c.description,
                    c.weight,
                    c.vessel_id,
                    containers
                ])
            })
            .map(drop)
            .map_err(|e| classify_insert(&e, || format!("consignment {}", c.id)))
    }

    /// The consignment `owner` created with `key`, read on `connection`.
    fn keyed(
        connection: &rusqlite::Connection,
        owner: &str,
        key: &str,
    ) -> Result<Option<Consignment>, StoreError> {
        use rusqlite::OptionalExtension as _;
        let found = connection
            .prepare_cached(BY_KEY)
            .and_then(|mut statement| statement.query_row(params![owner, key], row).optional())
            .map_err(|e| shippy_shared::store::sqlite::classify(&e))?;
        found
            .map(|(mut consignment, containers)| {
                consignment.containers = containers_from_json(&consignment.id, &containers)?;
                Ok(consignment)
            })
            .transpose()
    }

    async fn query(
        &self,
        sql: String,
        owner: Option<(String, Option<String>, i64)>,
    ) -> Result<Vec<Consignment>, StoreError> {
        self.db
            .read_with(move |c| {
                let read =
                    |c: &rusqlite::Connection| -> rusqlite::Result<Vec<(Consignment, String)>> {
                        let mut statement = c.prepare_cached(&sql)?;
                        let rows = match &owner {
                            Some((owner, after, limit)) => statement
                                .query_map(params![owner, after, limit], row)?
                                .collect::<Result<_, _>>()?,
                            None => statement.query_map([], row)?.collect::<Result<_, _>>()?,
                        };
                        Ok(rows)
                    };
                let rows = read(c).map_err(|e| shippy_shared::store::sqlite::classify(&e))?;
                rows.into_iter()
                    .map(|(mut consignment, containers)| {
                        consignment.containers =
                            containers_from_json(&consignment.id, &containers)?;
                        Ok(consignment)
                    })
                    .collect()
            })
            .await
    }
}

/// A row, with its containers still JSON.
fn row(row: &Row<'_>) -> rusqlite::Result<(Consignment, String)> {
    Ok((
        Consignment {
            id: row.get(0)?,
            owner_id: row.get(1)?,
            description: row.get(2)?,
            weight: row.get(3)?,
            vessel_id: row.get(4)?,
            containers: Vec::new(),
        },
        row.get(5)?,
    ))
}

fn containers_from_json(id: &str, json: &str) -> Result<Vec<Container>, StoreError> {
    let stored: Vec<StoredContainer> = serde_json::from_str(json).map_err(|e| {
        StoreError::Internal(format!("consignment {id} has unreadable containers: {e}"))
    })?;
    Ok(stored
        .into_iter()
        .map(|k| Container {
            id: k.id,
            customer_id: k.customer_id,
            origin: k.origin,
            user_id: k.user_id,
        })
        .collect())
}

fn containers_to_json(containers: &[Container]) -> Result<String, StoreError> {
    let stored: Vec<StoredContainer> = containers
        .iter()
        .map(|k| StoredContainer {
            id: k.id.clone(),
            customer_id: k.customer_id.clone(),
            origin: k.origin.clone(),
            user_id: k.user_id.clone(),
        })
        .collect();
    serde_json::to_string(&stored)
        .map_err(|e| StoreError::Internal(format!("cannot encode containers: {e}")))
}

#[async_trait]
impl ConsignmentStore for SqliteStore {
    async fn create(&self, consignment: &Consignment) -> Result<(), StoreError> {
        let containers = containers_to_json(&consignment.containers)?;
        let c = consignment.clone();
        self.db
            .write_with(move |connection| Self::insert(connection, &c, &containers))
            .await
    }

    async fn create_with_key(
        &self,
        consignment: &Consignment,
        key: &IdempotencyKey,
    ) -> Result<Keyed, StoreError> {
        let containers = containers_to_json(&consignment.containers)?;
        let c = consignment.clone();
        let key = key.as_str().to_owned();
        self.db
            .write_with(move |connection| {
                // A savepoint, not a transaction: the writer may run this inside its group's
                // transaction (where it nests) or alone (where it is the transaction). Either way
                // the key and its consignment are stored together or not at all.
                let sql = |statement: &str| {
                    shippy_shared::store::sqlite::execute_cached(connection, statement)
                        .map_err(|e| shippy_shared::store::sqlite::classify(&e))
                };
                sql("SAVEPOINT keyed")?;
                let outcome = (|| {
                    let claimed = connection
                        .prepare_cached(CLAIM_KEY)
                        .and_then(|mut statement| statement.execute(params![c.owner_id, key, c.id]))
                        .map_err(|e| shippy_shared::store::sqlite::classify(&e))?;
                    if claimed == 0 {
                        return Self::keyed(connection, &c.owner_id, &key)?
                            .map(Keyed::Earlier)
                            .ok_or_else(|| {
                                StoreError::Internal(format!(
                                    "an idempotency key of {} names no consignment",
                                    c.owner_id
                                ))
                            });
                    }
                    Self::insert(connection, &c, &containers).map(|()| Keyed::Stored)
                })();
                match outcome {
                    Ok(keyed) => sql("RELEASE keyed").map(|()| keyed),
                    Err(error) => {
                        let _ = sql("ROLLBACK TO keyed");
                        let _ = sql("RELEASE keyed");
                        Err(error)
                    }
                }
            })
            .await
    }

    async fn find_by_key(
        &self,
        owner_id: &str,
        key: &IdempotencyKey,
    ) -> Result<Option<Consignment>, StoreError> {
        let (owner, key) = (owner_id.to_owned(), key.as_str().to_owned());
        self.db
            .read_with(move |connection| Self::keyed(connection, &owner, &key))
            .await
    }

    async fn list(&self) -> Result<Vec<Consignment>, StoreError> {
        self.query(
            format!("SELECT {COLUMNS} FROM consignments ORDER BY id"),
            None,
        )
        .await
    }

    async fn list_by_owner(
        &self,
        owner_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Consignment>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query(
            format!(
                "SELECT {COLUMNS} FROM consignments WHERE owner_id = ?1 AND (?2 IS NULL OR id > ?2) \
                 ORDER BY id LIMIT ?3"
            ),
            Some((owner_id.to_owned(), after.map(str::to_owned), limit)),
        )
        .await
    }
}
