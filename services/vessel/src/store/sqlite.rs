//! SQLite store (the default): one row per vessel in the `vessels` table of the host's database
//! file, shared by every vessel instance on the host.
//!
//! [`VesselStore::find_available`] is one query that filters and orders exactly like
//! [`Specification::best_fit`] (SQLite compares text bytewise, as Rust does), served by an index
//! in fit order.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, params};
use shippy_shared::store::{
    StoreError,
    sqlite::{Sqlite, classify_insert},
};

use super::VesselStore;
use crate::domain::{Specification, Vessel};

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS vessels (
        id TEXT PRIMARY KEY NOT NULL,
        name TEXT NOT NULL,
        capacity INTEGER NOT NULL,
        max_weight INTEGER NOT NULL,
        available INTEGER NOT NULL,
        owner_id TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS vessels_best_fit ON vessels (capacity, max_weight, id);
";

const COLUMNS: &str = "id, name, capacity, max_weight, available, owner_id";

/// The fleet in SQLite.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    db: Sqlite,
}

impl SqliteStore {
    /// The store on `db`, creating its table and index if they are missing.
    pub async fn open(db: Sqlite) -> Result<Self, StoreError> {
        db.write(|c| c.execute_batch(SCHEMA)).await?;
        Ok(Self { db })
    }
}

fn vessel(row: &Row<'_>) -> rusqlite::Result<Vessel> {
    Ok(Vessel {
        id: row.get(0)?,
        name: row.get(1)?,
        capacity: row.get(2)?,
        max_weight: row.get(3)?,
        available: row.get(4)?,
        owner_id: row.get(5)?,
    })
}

#[async_trait]
impl VesselStore for SqliteStore {
    async fn create(&self, vessel: &Vessel) -> Result<(), StoreError> {
        let v = vessel.clone();
        self.db
            .write_with(move |c| {
                c.execute(
                    &format!("INSERT INTO vessels ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
                    params![
                        v.id,
                        v.name,
                        v.capacity,
                        v.max_weight,
                        v.available,
                        v.owner_id
                    ],
                )
                .map(drop)
                .map_err(|e| classify_insert(&e, || format!("vessel {}", v.id)))
            })
            .await
    }

    async fn get(&self, id: &str) -> Result<Option<Vessel>, StoreError> {
        let id = id.to_owned();
        self.db
            .read(move |c| {
                c.prepare_cached(&format!("SELECT {COLUMNS} FROM vessels WHERE id = ?1"))?
                    .query_row(params![id], vessel)
                    .optional()
            })
            .await
    }

    async fn list(&self) -> Result<Vec<Vessel>, StoreError> {
        self.db
            .read(|c| {
                c.prepare_cached(&format!("SELECT {COLUMNS} FROM vessels ORDER BY id"))?
                    .query_map([], vessel)?
                    .collect()
            })
            .await
    }

    async fn list_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Vessel>, StoreError> {
        let after = after.map(str::to_owned);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db
            .read(move |c| {
                c.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM vessels WHERE ?1 IS NULL OR id > ?1 ORDER BY id LIMIT ?2"
                ))?
                .query_map(params![after, limit], vessel)?
                .collect()
            })
            .await
    }

    async fn find_available(&self, spec: &Specification) -> Result<Option<Vessel>, StoreError> {
        let spec = *spec;
        self.db
            .read(move |c| {
                c.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM vessels \
                     WHERE available = 1 AND capacity >= ?1 AND max_weight >= ?2 \
                     ORDER BY capacity, max_weight, id LIMIT 1"
                ))?
                .query_row(params![spec.capacity, spec.max_weight], vessel)
                .optional()
            })
            .await
    }

    async fn count(&self) -> Result<u64, StoreError> {
        self.db
            .read(|c| c.query_row("SELECT COUNT(*) FROM vessels", [], |r| r.get(0)))
            .await
    }
}
