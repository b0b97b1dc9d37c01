//! The two threads that own a [`Sqlite`](super::Sqlite) handle's connections, and group commit.
//!
//! Why threads of our own and not tokio's blocking pool: rusqlite is synchronous, and the first
//! version ran every operation with `spawn_blocking` on one connection behind a mutex. Under load
//! (32 calls at once) that started up to 32 blocking threads which then queued on the mutex: about
//! 4 `futex` calls and 2.6 context switches per `FindAvailable`, and 78 µs of CPU per call against
//! the memory store's 30. Here each connection has one thread that takes operations from a queue
//! in order, so a busy thread never sleeps between them and nothing waits on a lock.
//!
//! - **Reads** run on their own connection (WAL lets it read while the writer writes), one after
//!   the other, each in its own read transaction. They never wait for a write's `fsync`.
//! - **Writes** are committed as groups: the writer takes every write queued while it was busy
//!   (up to [`MAX_GROUP`]) and runs them in one `BEGIN IMMEDIATE` transaction, each inside its
//!   own savepoint, then commits once, so one `fsync` makes the whole group durable. A write that
//!   fails is rolled back to its savepoint alone and reports its own error; the others commit.
//!   Every reply waits for the commit, so nothing is acknowledged before it is on disk, and if the
//!   commit fails every write of the group reports that failure. A lone write runs as before, in
//!   SQLite's own implicit transaction.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::mpsc::{Receiver, Sender, channel},
    thread,
};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::{classify, execute_cached as run};
use crate::store::StoreError;

/// The most writes committed as one transaction. Bounds how long one commit holds SQLite's write
/// lock against the other processes on the host.
const MAX_GROUP: usize = 256;

/// Sends an operation's outcome to its caller once the group's commit is known: `Some` is the
/// error that failed the commit.
type Reply = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// One operation: runs on the connection and says whether it succeeded (so a failed write is
/// rolled back to its savepoint), with the reply to send after the commit.
type Job = Box<dyn FnOnce(&mut Connection) -> (bool, Reply) + Send>;

/// The queue of one connection's thread. The thread ends, closing its connection, when the last
/// clone is dropped.
#[derive(Debug, Clone)]
pub(super) struct Queue(Sender<Job>);

impl Queue {
    /// Starts the thread that reads with `connection`.
    pub(super) fn reader(connection: Connection) -> std::io::Result<Self> {
        Self::start("shippy-sqlite-read", connection, read_loop)
    }

    /// Starts the thread that writes with `connection`, in groups.
    pub(super) fn writer(connection: Connection) -> std::io::Result<Self> {
        Self::start("shippy-sqlite-write", connection, write_loop)
    }

    fn start(
        name: &str,
        connection: Connection,
        serve: fn(Connection, Receiver<Job>),
    ) -> std::io::Result<Self> {
        let (jobs, queue) = channel();
        thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || serve(connection, queue))?;
        Ok(Self(jobs))
    }

    /// Runs `operation` on this queue's connection and waits for its outcome (for a write, for
    /// its group's commit).
    pub(super) async fn submit<T, F>(&self, operation: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (answer, outcome) = oneshot::channel();
        // The caller may have gone (its call was cancelled); the work stands either way.
        let job = job(operation, move |result| drop(answer.send(result)));
        self.0
            .send(job)
            .map_err(|_| StoreError::Internal("the SQLite thread has stopped".into()))?;
        outcome
            .await
            .map_err(|_| StoreError::Internal("the SQLite thread stopped".into()))?
    }
}

/// The job that runs `operation`, catching a panic, and hands its outcome to `deliver` once the
/// commit is known: a success in a group whose commit failed becomes that failure.
fn job<T, F, D>(operation: F, deliver: D) -> Job
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    D: FnOnce(Result<T, StoreError>) + Send + 'static,
{
    Box::new(move |connection| {
        // A panic must not end the thread that every later operation needs.
        let result = catch_unwind(AssertUnwindSafe(|| operation(connection)))
            .unwrap_or_else(|_| Err(StoreError::Internal("an SQLite operation panicked".into())));
        let succeeded = result.is_ok();
        let reply: Reply = Box::new(move |commit_failed| {
            deliver(match commit_failed {
                Some(error) if succeeded => Err(error.clone()),
                _ => result,
            });
        });
        (succeeded, reply)
    })
}

fn read_loop(mut connection: Connection, queue: Receiver<Job>) {
    for job in queue {
        let (_, reply) = job(&mut connection);
        reply(None);
    }
}

fn write_loop(mut connection: Connection, queue: Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        commit_group(&mut connection, group);
    }
}

/// Runs `group` as one transaction (see the module doc). Writes the transaction could not take
/// run alone afterwards, each in its own implicit transaction.
fn commit_group(connection: &mut Connection, group: Vec<Job>) {
    if group.len() == 1 || run(connection, "BEGIN IMMEDIATE").is_err() {
        // One write needs no savepoints; and if the write lock could not be taken (another
        // process held it past the busy timeout), each write tries on its own and reports why.
        return run_alone(connection, group);
    }
    let mut replies = Vec::with_capacity(group.len());
    let mut broken = None;
    let mut jobs = group.into_iter();
    for job in jobs.by_ref() {
        if let Err(error) = run(connection, "SAVEPOINT write") {
            broken = Some((classify(&error), Some(job)));
            break;
        }
        let (succeeded, reply) = job(connection);
        replies.push(reply);
        let ended = if succeeded {
            run(connection, "RELEASE write")
        } else {
            run(connection, "ROLLBACK TO write").and_then(|()| run(connection, "RELEASE write"))
        };
        // Some errors (a full disk, an I/O error) end the whole transaction, and then the
        // savepoint is gone too: the group has failed. The writes that had succeeded were lost
        // to another's failure, which a retry may not meet: unavailable, not internal.
        if let Err(error) = ended {
            let error = if connection.is_autocommit() {
                StoreError::Unavailable(format!(
                    "rolled back with another write of its group ({error})"
                ))
            } else {
                classify(&error)
            };
            broken = Some((error, None));
            break;
        }
    }
    let (outcome, unrun) = match broken {
        None => (run(connection, "COMMIT").map_err(|e| classify(&e)), None),
        Some((error, unrun)) => (Err(error), unrun),
    };
    if outcome.is_err() && !connection.is_autocommit() {
        let _ = connection.execute_batch("ROLLBACK");
    }
    if let Err(error) = &outcome {
        tracing::error!(%error, writes = replies.len(), "an SQLite group commit failed");
    }
    for reply in replies {
        reply(outcome.as_ref().err());
    }
    run_alone(connection, unrun.into_iter().chain(jobs).collect());
}

fn run_alone(connection: &mut Connection, jobs: Vec<Job>) {
    for job in jobs {
        let (_, reply) = job(connection);
        reply(None);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn table() -> Connection {
        let connection = Connection::open_in_memory().expect("open");
        connection
            .execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            .expect("create");
        connection
    }

    /// What each caller was told, by the id it wrote.
    type Told = Arc<Mutex<Vec<(i64, Result<(), String>)>>>;

    /// A job running `sql` with `id`, recording what its caller was told.
    fn write(sql: &'static str, id: i64, told: &Told) -> Job {
        recorded(id, told, move |c| c.execute(sql, [id]).map(drop))
    }

    /// A job running `operation` for `id`, recording what its caller was told.
    fn recorded(
        id: i64,
        told: &Told,
        operation: impl FnOnce(&Connection) -> rusqlite::Result<()> + Send + 'static,
    ) -> Job {
        let told = Arc::clone(told);
        job(
            move |c| operation(c).map_err(|e| classify(&e)),
            move |result: Result<(), StoreError>| {
                told.lock()
                    .expect("lock")
                    .push((id, result.map_err(|e| e.to_string())));
            },
        )
    }

    fn insert(id: i64, told: &Told) -> Job {
        write("INSERT INTO t VALUES (?1)", id, told)
    }

    fn ids(c: &Connection) -> Vec<i64> {
        let mut statement = c.prepare("SELECT id FROM t ORDER BY id").expect("prepare");
        statement
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    #[test]
    fn a_failed_write_in_a_group_is_rolled_back_alone_and_the_others_commit() {
        let mut c = table();
        let told = Arc::new(Mutex::new(Vec::new()));
        // 2 is written twice: the second is a duplicate.
        let group = [1, 2, 3, 2, 4].map(|id| insert(id, &told)).into();
        commit_group(&mut c, group);
        assert_eq!(ids(&c), [1, 2, 3, 4]);
        let told = told.lock().expect("lock");
        assert_eq!(told.len(), 5, "every caller is answered");
        let failed: Vec<_> = told.iter().filter(|(_, r)| r.is_err()).collect();
        assert_eq!(failed.len(), 1, "{told:?}");
        assert!(
            matches!(&failed[0].1, Err(e) if e.contains("already exists")),
            "{failed:?}"
        );
        assert!(c.is_autocommit(), "the transaction is over");
    }

    #[test]
    fn when_the_commit_fails_no_write_of_the_group_is_acknowledged() {
        let mut c = table();
        // A deferred foreign key is checked at COMMIT: the last write makes the commit fail.
        c.execute_batch(
            "PRAGMA foreign_keys = ON;
             CREATE TABLE parent (id INTEGER PRIMARY KEY);
             CREATE TABLE child (p INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);",
        )
        .expect("schema");
        let told = Arc::new(Mutex::new(Vec::new()));
        let mut group: Vec<Job> = [1, 2].map(|id| insert(id, &told)).into();
        group.push(write("INSERT INTO child VALUES (?1)", 99, &told));
        commit_group(&mut c, group);
        assert!(ids(&c).is_empty(), "nothing of the group is stored");
        let told = told.lock().expect("lock");
        assert_eq!(told.len(), 3);
        assert!(told.iter().all(|(_, r)| r.is_err()), "{told:?}");
        assert!(c.is_autocommit());
    }

    #[test]
    fn a_write_whose_error_ends_the_transaction_fails_its_group_and_the_rest_run_alone() {
        let mut c = table();
        let told = Arc::new(Mutex::new(Vec::new()));
        // The second write ends the whole transaction, as a full disk would; its group mate
        // before it is lost with it, the one after it has not run yet.
        let group = vec![
            insert(1, &told),
            recorded(0, &told, |c| {
                c.execute_batch("ROLLBACK")?;
                Err(rusqlite::Error::QueryReturnedNoRows)
            }),
            insert(2, &told),
        ];
        commit_group(&mut c, group);
        assert_eq!(
            ids(&c),
            [2],
            "only the write run alone afterwards is stored"
        );
        let told = told.lock().expect("lock");
        let first = told.iter().find(|(id, _)| *id == 1).expect("answered");
        assert!(
            matches!(&first.1, Err(e) if e.starts_with("store unavailable")),
            "{first:?}"
        );
        let last = told.iter().find(|(id, _)| *id == 2).expect("answered");
        assert!(last.1.is_ok(), "{last:?}");
        assert!(c.is_autocommit());
    }
}
