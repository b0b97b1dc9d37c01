//! What every service's store shares: the error every backend reports, whatever the backend, and
//! the MongoDB plumbing ([`mongo`]). Each service defines its own store trait and backends; how a
//! [`StoreError`] reaches a client is decided at the edge (the `status` module, above this one).

pub mod mongo;
pub mod sqlite;

/// Store failures, classified by what a caller can do about them.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique key is taken (e.g. a user's email); the text says what.
    #[error("{0} already exists")]
    Duplicate(String),
    /// The backend cannot be reached or did not acknowledge the write; retrying later may work.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug or corrupt data.
    #[error("store failure: {0}")]
    Internal(String),
}

impl StoreError {
    /// The error of an in-memory store whose lock a panicking thread left poisoned.
    pub fn poisoned<T>(_: T) -> Self {
        Self::Internal("memory store lock poisoned".into())
    }
}

/// The backend `store.backend` selects, opened; each service puts its own store on it.
#[derive(Debug)]
pub enum Backend {
    /// The host's SQLite file.
    Sqlite(sqlite::Sqlite),
    /// In-process memory.
    Memory,
    /// A MongoDB database (connected lazily: the server may be down right now).
    Mongodb(mongodb::Database),
}

impl Backend {
    /// Opens the backend of `settings`.
    pub async fn open(settings: &crate::config::StoreSettings) -> Result<Self, StoreError> {
        Ok(match settings.backend {
            crate::config::StoreBackend::Sqlite => {
                Self::Sqlite(sqlite::Sqlite::open(&settings.sqlite).await?)
            }
            crate::config::StoreBackend::Memory => Self::Memory,
            crate::config::StoreBackend::Mongodb => {
                Self::Mongodb(mongo::connect(&settings.mongodb).await?)
            }
        })
    }
}
