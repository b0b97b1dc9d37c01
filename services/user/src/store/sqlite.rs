//! SQLite store (the default): one row per user in the `users` table of the host's database file,
//! shared by every user-service instance on the host. The email column is unique, so a second
//! registration with a taken email fails whichever instance takes it.

use async_trait::async_trait;
use rusqlite::{Row, params};
use shippy_shared::store::{
    StoreError,
    sqlite::{Sqlite, classify_insert},
};

use super::UserStore;
use crate::domain::{Email, PasswordHash, User};

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS users (
        id TEXT PRIMARY KEY NOT NULL,
        name TEXT NOT NULL,
        company TEXT NOT NULL,
        email TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL
    );
";

const COLUMNS: &str = "id, name, company, email, password_hash";

/// Users in SQLite.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    db: Sqlite,
}

impl SqliteStore {
    /// The store on `db`, creating its table (with the unique email index) if it is missing.
    pub async fn open(db: Sqlite) -> Result<Self, StoreError> {
        db.write(|c| c.execute_batch(SCHEMA)).await?;
        Ok(Self { db })
    }

    async fn query(&self, sql: String, key: String) -> Result<Vec<User>, StoreError> {
        let rows: Vec<Stored> = self
            .db
            .read(move |c| {
                let mut statement = c.prepare_cached(&sql)?;
                let rows = if key.is_empty() {
                    statement
                        .query_map([], Stored::read)?
                        .collect::<Result<_, _>>()?
                } else {
                    statement
                        .query_map([key], Stored::read)?
                        .collect::<Result<_, _>>()?
                };
                Ok(rows)
            })
            .await?;
        rows.into_iter().map(User::try_from).collect()
    }
}

/// A row as stored, before its email is parsed again.
struct Stored {
    id: String,
    name: String,
    company: String,
    email: String,
    password_hash: String,
}

impl Stored {
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            name: row.get(1)?,
            company: row.get(2)?,
            email: row.get(3)?,
            password_hash: row.get(4)?,
        })
    }
}

impl TryFrom<Stored> for User {
    type Error = StoreError;

    /// Every stored email went through [`Email::parse`]; one that does not parse is corrupt data.
    fn try_from(row: Stored) -> Result<Self, Self::Error> {
        let email = Email::parse(&row.email).map_err(|e| {
            StoreError::Internal(format!("user {} has an unreadable email: {e}", row.id))
        })?;
        Ok(Self {
            id: row.id,
            name: row.name,
            company: row.company,
            email,
            password_hash: PasswordHash::from_stored(row.password_hash),
        })
    }
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn create(&self, user: &User) -> Result<(), StoreError> {
        let u = user.clone();
        self.db
            .write_with(move |c| {
                c.execute(
                    &format!("INSERT INTO users ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
                    params![
                        u.id,
                        u.name,
                        u.company,
                        u.email.as_str(),
                        u.password_hash.as_phc()
                    ],
                )
                .map(drop)
                .map_err(|e| classify_insert(&e, || format!("a user with email {}", u.email)))
            })
            .await
    }

    async fn get(&self, id: &str) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE id = ?1");
        Ok(self.query(sql, id.to_owned()).await?.pop())
    }

    async fn find_by_email(&self, email: &Email) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE email = ?1");
        Ok(self.query(sql, email.as_str().to_owned()).await?.pop())
    }

    async fn list(&self) -> Result<Vec<User>, StoreError> {
        self.query(
            format!("SELECT {COLUMNS} FROM users ORDER BY email"),
            String::new(),
        )
        .await
    }
}
