//! What every service's store shares: the error every backend reports, whatever the backend, and
//! the plumbing of the database backends ([`mongo`], [`sqlite`]). Each service defines its own
//! store trait and backends; how a [`StoreError`] reaches a client is decided at the edge (the
//! `status` module, above this one).

pub mod mongo;
pub mod sqlite;

use std::future::Future;

use metrics::Histogram;
use tracing::Instrument;

use crate::call_metrics::ByStaticPair;

/// Store failures, classified by what a caller can do about them.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A unique key is taken (e.g. a user's email); the text says what.
    #[error("{0} already exists")]
    Duplicate(String),
    /// The backend cannot be reached; retrying later may work.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The write reached the backend, which did not confirm it as asked (MongoDB's write concern
    /// was not satisfied): it may be stored, or may yet be rolled back. A client told "nothing
    /// was saved" would retry and store it twice.
    #[error("store did not confirm the write: {0}")]
    Unconfirmed(String),
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

impl StoreError {
    /// The `outcome` label of this error in the store metrics.
    fn outcome(&self) -> &'static str {
        match self {
            Self::Duplicate(_) => "duplicate",
            Self::Unavailable(_) => "unavailable",
            Self::Unconfirmed(_) => "unconfirmed",
            Self::Internal(_) => "internal",
        }
    }
}

/// Runs one store operation named `operation` (e.g. `find_available`) inside a `store` span and
/// records its latency in the histogram `shippy_store_operation_seconds{operation, outcome}`
/// (`ok`, `duplicate`, `unavailable`, `unconfirmed` or `internal`). Services wrap each call their edge makes into
/// the store, whatever the backend, so a dashboard shows which operation is slow or failing.
pub async fn observe<T>(
    operation: &'static str,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let span = tracing::info_span!(
        "store",
        otel.name = operation,
        otel.kind = "client",
        db.operation.name = operation,
        otel.status_code = tracing::field::Empty,
    );
    let started = std::time::Instant::now();
    let result = call.instrument(span.clone()).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(error) => {
            span.record("otel.status_code", "ERROR");
            error.outcome()
        }
    };
    // One handle per operation and outcome, made once (see `call_metrics`).
    static HISTOGRAMS: ByStaticPair<Histogram> = ByStaticPair::new();
    HISTOGRAMS
        .get((operation, outcome), || {
            metrics::histogram!(
                "shippy_store_operation_seconds",
                "operation" => operation,
                "outcome" => outcome,
            )
        })
        .record(started.elapsed().as_secs_f64());
    result
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
