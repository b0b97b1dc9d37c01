//! What every SQLite store shares: the database file from `store.sqlite.*`, opened the same way by
//! every instance on a host, and the mapping of SQLite errors to [`StoreError`].
//!
//! Why SQLite is the default: it needs no server, keeps everything across restarts, and one file is
//! shared by every instance of every service on the host (WAL mode lets readers and one writer work
//! at once, across processes). A write returns only once it is committed with `synchronous=FULL`,
//! so nothing acknowledged is lost when a process or the machine dies. For more than one host, use
//! MongoDB.
//!
//! rusqlite is synchronous: each operation runs on tokio's blocking pool, holding this process's
//! one connection for its duration. Other processes wait on SQLite's own lock, up to
//! `store.sqlite.busy_timeout_ms`.

use std::{
    fs,
    os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::{config::SqliteSettings, store::StoreError};

/// Default wait for another writer.
const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The database file of this host, opened. Clones share the connection.
#[derive(Clone)]
pub struct Sqlite {
    connection: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl std::fmt::Debug for Sqlite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sqlite")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// `$XDG_STATE_HOME/shippy/shippy.db`, else `~/.local/state/shippy/shippy.db`.
pub fn default_path() -> Result<PathBuf, StoreError> {
    let state = match std::env::var_os("XDG_STATE_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => match std::env::var_os("HOME") {
            Some(home) if !home.is_empty() => PathBuf::from(home).join(".local/state"),
            _ => {
                return Err(StoreError::Internal(
                    "store.sqlite.path is not set and neither XDG_STATE_HOME nor HOME is: set \
                     SHIPPY_STORE__SQLITE__PATH"
                        .into(),
                ));
            }
        },
    };
    Ok(state.join("shippy").join("shippy.db"))
}

/// Creates `dir` (and its parents) if missing, the last one 0700; refuses a directory that other
/// users could write or that is not ours, since whoever can write it can replace the database.
fn secure_dir(dir: &Path) -> Result<(), StoreError> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                StoreError::Internal(format!(
                    "cannot create the data directory {}: {e}",
                    dir.display()
                ))
            })?;
    }
    let meta = fs::symlink_metadata(dir).map_err(|e| {
        StoreError::Internal(format!(
            "cannot read the data directory {}: {e}",
            dir.display()
        ))
    })?;
    let problem = if !meta.is_dir() {
        Some("is not a directory (symbolic links are not followed)".to_owned())
    } else if meta.uid() != nix::unistd::geteuid().as_raw() {
        Some(format!("belongs to uid {}, not to this user", meta.uid()))
    } else if meta.permissions().mode() & 0o022 != 0 {
        Some(format!(
            "is writable by other users (mode {:04o})",
            meta.permissions().mode() & 0o7777
        ))
    } else {
        None
    };
    match problem {
        Some(problem) => Err(StoreError::Internal(format!(
            "refusing the data directory {}: it {problem}; remove it (shippy recreates it with \
             mode 0700) or set store.sqlite.path (SHIPPY_STORE__SQLITE__PATH)",
            dir.display()
        ))),
        None => Ok(()),
    }
}

impl Sqlite {
    /// Opens (creating if needed) the database of `settings`, in WAL mode with full syncs.
    pub async fn open(settings: &SqliteSettings) -> Result<Self, StoreError> {
        let path = match &settings.path {
            Some(path) => path.clone(),
            None => default_path()?,
        };
        let busy = settings
            .busy_timeout_ms
            .map_or(DEFAULT_BUSY_TIMEOUT, Duration::from_millis);
        let opened = path.clone();
        let connection = tokio::task::spawn_blocking(move || -> Result<Connection, StoreError> {
            if let Some(dir) = opened.parent().filter(|d| !d.as_os_str().is_empty()) {
                secure_dir(dir)?;
            }
            let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_NOFOLLOW;
            let connection = Connection::open_with_flags(&opened, flags).map_err(|e| {
                StoreError::Internal(format!("cannot open {}: {e}", opened.display()))
            })?;
            connection.busy_timeout(busy).map_err(|e| classify(&e))?;
            connection
                .pragma_update(None, "journal_mode", "WAL")
                .map_err(|e| classify(&e))?;
            connection
                .pragma_update(None, "synchronous", "FULL")
                .map_err(|e| classify(&e))?;
            // The file holds password hashes: only its owner may read it.
            let _ = fs::set_permissions(&opened, fs::Permissions::from_mode(0o600));
            Ok(connection)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("opening SQLite failed: {e}")))??;
        tracing::info!(path = %path.display(), "SQLite store opened");
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `operation` on the connection, off the async runtime. Its errors are classified by
    /// [`classify`]; use [`Sqlite::run_with`] to classify them yourself.
    pub async fn run<T, F>(&self, operation: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.run_with(move |connection| operation(connection).map_err(|e| classify(&e)))
            .await
    }

    /// Runs `operation` on the connection, off the async runtime.
    pub async fn run_with<T, F>(&self, operation: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let connection = Arc::clone(&self.connection);
        tokio::task::spawn_blocking(move || {
            let mut connection = connection.lock().map_err(StoreError::poisoned)?;
            operation(&mut connection)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("SQLite task failed: {e}")))?
    }
}

/// Classifies an SQLite error: a unique or primary-key violation is [`StoreError::Duplicate`]
/// (stores replace its text with what was duplicated, see [`classify_insert`]), a busy or locked
/// database or a full disk is [`StoreError::Unavailable`], the rest [`StoreError::Internal`].
pub fn classify(error: &rusqlite::Error) -> StoreError {
    match error.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation) if is_unique_violation(error) => {
            StoreError::Duplicate("a record with the same unique key".into())
        }
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure,
        ) => StoreError::Unavailable(error.to_string()),
        _ => StoreError::Internal(error.to_string()),
    }
}

fn is_unique_violation(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(failure, _)
            if failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

/// Classifies the error of an insert: a unique-key violation becomes a [`StoreError::Duplicate`]
/// saying what was duplicated (`what()`), anything else as [`classify`].
pub fn classify_insert(error: &rusqlite::Error, what: impl FnOnce() -> String) -> StoreError {
    match classify(error) {
        StoreError::Duplicate(_) => StoreError::Duplicate(what()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(path: PathBuf) -> SqliteSettings {
        SqliteSettings {
            path: Some(path),
            busy_timeout_ms: None,
        }
    }

    #[tokio::test]
    async fn opens_in_a_private_directory_and_maps_duplicates() {
        let root = tempfile::tempdir().expect("temp dir");
        let db = Sqlite::open(&settings(root.path().join("state/shippy/test.db")))
            .await
            .expect("open");
        let dir = root.path().join("state/shippy");
        assert_eq!(
            fs::metadata(&dir).expect("dir").permissions().mode() & 0o777,
            0o700
        );
        db.run(|c| c.execute_batch("CREATE TABLE t (id TEXT PRIMARY KEY, v TEXT UNIQUE)"))
            .await
            .expect("create");
        db.run(|c| c.execute("INSERT INTO t VALUES ('a', 'x')", []))
            .await
            .expect("insert");
        let duplicate = db
            .run_with(|c| {
                c.execute("INSERT INTO t VALUES ('b', 'x')", [])
                    .map_err(|e| classify_insert(&e, || "value x".into()))
            })
            .await
            .expect_err("unique");
        assert!(matches!(&duplicate, StoreError::Duplicate(what) if what == "value x"));
        let mode: String = db
            .run(|c| c.query_row("PRAGMA journal_mode", [], |r| r.get(0)))
            .await
            .expect("pragma");
        assert_eq!(mode, "wal");
    }

    #[tokio::test]
    async fn a_directory_others_can_write_is_refused() {
        let root = tempfile::tempdir().expect("temp dir");
        let open = root.path().join("open");
        fs::create_dir(&open).expect("mkdir");
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).expect("chmod");
        let err = Sqlite::open(&settings(open.join("x.db")))
            .await
            .expect_err("refused");
        assert!(err.to_string().contains("writable by other users"), "{err}");
        assert!(
            err.to_string().contains("SHIPPY_STORE__SQLITE__PATH"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn two_handles_on_one_file_see_each_others_writes() {
        let root = tempfile::tempdir().expect("temp dir");
        let path = root.path().join("shared.db");
        let a = Sqlite::open(&settings(path.clone())).await.expect("a");
        let b = Sqlite::open(&settings(path)).await.expect("b");
        a.run(|c| c.execute_batch("CREATE TABLE t (id TEXT PRIMARY KEY)"))
            .await
            .expect("create");
        a.run(|c| c.execute("INSERT INTO t VALUES ('from-a')", []))
            .await
            .expect("insert");
        let seen: String = b
            .run(|c| c.query_row("SELECT id FROM t", [], |r| r.get(0)))
            .await
            .expect("read");
        assert_eq!(seen, "from-a");
    }
}
