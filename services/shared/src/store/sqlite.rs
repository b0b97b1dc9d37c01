//! What every SQLite store shares: the database file from `store.sqlite.*`, opened the same way by
//! every instance on a host, and the mapping of SQLite errors to [`StoreError`].
//!
//! Why SQLite is the default: it needs no server, keeps everything across restarts, and one file is
//! shared by every instance of every service on the host (WAL mode lets readers and one writer work
//! at once, across processes). A write returns only once it is committed with `synchronous=FULL`,
//! so nothing acknowledged is lost when a process or the machine dies. For more than one host, use
//! MongoDB.
//!
//! rusqlite is synchronous: a handle keeps two connections, each on a thread of its own, one for
//! reads and one for writes, and commits concurrent writes as a group with one `fsync` ([`worker`]
//! says how and why). Other processes wait on SQLite's own lock, up to
//! `store.sqlite.busy_timeout_ms`.

mod worker;

use std::{
    fs,
    os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    time::Duration,
};

use rusqlite::{Connection, ErrorCode, OpenFlags};

use self::worker::Queue;
use crate::{config::SqliteSettings, store::StoreError};

/// Default wait for another writer.
const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The database file of this host, opened. Clones share the connections; the last one dropped
/// closes them.
#[derive(Clone)]
pub struct Sqlite {
    reads: Queue,
    writes: Queue,
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
        let (writer, reader) =
            tokio::task::spawn_blocking(move || -> Result<(Connection, Connection), StoreError> {
                if let Some(dir) = opened.parent().filter(|d| !d.as_os_str().is_empty()) {
                    secure_dir(dir)?;
                }
                // The writer first: it creates the file and switches it to WAL, which the reader
                // needs to read beside it.
                let writer = connect(&opened, busy)?;
                writer
                    .pragma_update(None, "journal_mode", "WAL")
                    .map_err(|e| classify(&e))?;
                writer
                    .pragma_update(None, "synchronous", "FULL")
                    .map_err(|e| classify(&e))?;
                // The file holds password hashes: only its owner may read it.
                let _ = fs::set_permissions(&opened, fs::Permissions::from_mode(0o600));
                let reader = connect(&opened, busy)?;
                // A write sent to the reader by mistake fails instead of bypassing group commit.
                reader
                    .pragma_update(None, "query_only", true)
                    .map_err(|e| classify(&e))?;
                Ok((writer, reader))
            })
            .await
            .map_err(|e| StoreError::Internal(format!("opening SQLite failed: {e}")))??;
        let threads = |e: std::io::Error| {
            StoreError::Internal(format!("cannot start the SQLite threads: {e}"))
        };
        let writes = Queue::writer(writer).map_err(threads)?;
        let reads = Queue::reader(reader).map_err(threads)?;
        tracing::info!(path = %path.display(), "SQLite store opened");
        Ok(Self {
            reads,
            writes,
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs the query `operation` on the read connection, off the async runtime. It sees every
    /// write acknowledged before it was called. Errors are classified by [`classify`]; the
    /// connection refuses writes.
    pub async fn read<T, F>(&self, operation: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.read_with(move |connection| operation(connection).map_err(|e| classify(&e)))
            .await
    }

    /// [`Sqlite::read`], classifying errors yourself.
    pub async fn read_with<T, F>(&self, operation: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.reads.submit(operation).await
    }

    /// Runs `operation` on the write connection, off the async runtime, and returns once it is
    /// committed, perhaps in one transaction with other writes (so `operation` must not begin
    /// or end a transaction itself). Errors are classified by [`classify`]; use
    /// [`Sqlite::write_with`] to classify them yourself.
    pub async fn write<T, F>(&self, operation: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.write_with(move |connection| operation(connection).map_err(|e| classify(&e)))
            .await
    }

    /// [`Sqlite::write`], classifying errors yourself. An error rolls back what `operation`
    /// wrote.
    pub async fn write_with<T, F>(&self, operation: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.writes.submit(operation).await
    }
}

/// One connection to `path`, not following a symbolic link, waiting `busy` for other writers.
fn connect(path: &Path, busy: Duration) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    let connection = Connection::open_with_flags(path, flags)
        .map_err(|e| StoreError::Internal(format!("cannot open {}: {e}", path.display())))?;
    connection.busy_timeout(busy).map_err(|e| classify(&e))?;
    Ok(connection)
}

/// Runs one statement without parameters (`BEGIN`, a savepoint, `COMMIT`), prepared once per
/// connection: such statements run for every write, and parsing them each time cost more than
/// running them.
pub fn execute_cached(connection: &Connection, sql: &str) -> rusqlite::Result<()> {
    connection.prepare_cached(sql)?.execute([]).map(drop)
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
        db.write(|c| c.execute_batch("CREATE TABLE t (id TEXT PRIMARY KEY, v TEXT UNIQUE)"))
            .await
            .expect("create");
        db.write(|c| c.execute("INSERT INTO t VALUES ('a', 'x')", []))
            .await
            .expect("insert");
        let duplicate = db
            .write_with(|c| {
                c.execute("INSERT INTO t VALUES ('b', 'x')", [])
                    .map_err(|e| classify_insert(&e, || "value x".into()))
            })
            .await
            .expect_err("unique");
        assert!(matches!(&duplicate, StoreError::Duplicate(what) if what == "value x"));
        let mode: String = db
            .read(|c| c.query_row("PRAGMA journal_mode", [], |r| r.get(0)))
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
        a.write(|c| c.execute_batch("CREATE TABLE t (id TEXT PRIMARY KEY)"))
            .await
            .expect("create");
        a.write(|c| c.execute("INSERT INTO t VALUES ('from-a')", []))
            .await
            .expect("insert");
        let seen: String = b
            .read(|c| c.query_row("SELECT id FROM t", [], |r| r.get(0)))
            .await
            .expect("read");
        assert_eq!(seen, "from-a");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_are_all_committed_and_each_duplicate_fails_alone() {
        let root = tempfile::tempdir().expect("temp dir");
        let db = Sqlite::open(&settings(root.path().join("group.db")))
            .await
            .expect("open");
        db.write(|c| c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
            .await
            .expect("create");
        // 400 writes at once, so the writer commits them in groups; every tenth id is written
        // twice, and exactly one of the two may win.
        let writes = (0..400).map(|n: i64| {
            let db = db.clone();
            let id = if n % 10 == 9 { n - 1 } else { n };
            tokio::spawn(async move {
                let acknowledged = db
                    .write_with(move |c| {
                        c.execute("INSERT INTO t VALUES (?1)", [id])
                            .map_err(|e| classify_insert(&e, || format!("row {id}")))
                    })
                    .await;
                // What a caller is told is what a reader then sees.
                let seen: i64 = db
                    .read(move |c| {
                        c.query_row("SELECT COUNT(*) FROM t WHERE id = ?1", [id], |r| r.get(0))
                    })
                    .await
                    .expect("read");
                (id, acknowledged, seen)
            })
        });
        let mut duplicates = 0;
        for write in writes.collect::<Vec<_>>() {
            let (id, acknowledged, seen) = write.await.expect("task");
            assert_eq!(seen, 1, "row {id} is stored");
            match acknowledged {
                Ok(rows) => assert_eq!(rows, 1),
                Err(StoreError::Duplicate(what)) => {
                    assert_eq!(what, format!("row {id}"));
                    duplicates += 1;
                }
                Err(other) => panic!("row {id}: {other}"),
            }
        }
        assert_eq!(duplicates, 40);
        let stored: i64 = db
            .read(|c| c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)))
            .await
            .expect("count");
        assert_eq!(stored, 360);
    }

    #[tokio::test]
    async fn a_panicking_operation_fails_alone_and_reads_cannot_write() {
        let root = tempfile::tempdir().expect("temp dir");
        let db = Sqlite::open(&settings(root.path().join("p.db")))
            .await
            .expect("open");
        db.write(|c| c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
            .await
            .expect("create");
        let panicked = db
            .write(|_| -> rusqlite::Result<()> { panic!("a bug in an operation") })
            .await
            .expect_err("reported");
        assert!(matches!(panicked, StoreError::Internal(_)), "{panicked}");
        db.write(|c| c.execute("INSERT INTO t VALUES (1)", []))
            .await
            .expect("the writer still works");
        let refused = db
            .read(|c| c.execute("INSERT INTO t VALUES (2)", []))
            .await
            .expect_err("the read connection refuses writes");
        assert!(matches!(refused, StoreError::Internal(_)), "{refused}");
    }
}
