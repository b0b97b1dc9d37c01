//! What every MongoDB store shares: the client built from `store.mongodb.*`, the mapping of driver
//! errors to [`StoreError`], and the readiness supervisor ([`supervise`]) that reports whether the
//! database can be used, so the service can stay NOT_SERVING until it can.
//!
//! The driver connects lazily, so a service starts (and answers health checks) while MongoDB is
//! down; the supervisor pings it, runs the service's one-time initialisation (indexes, seed data)
//! once it answers, and only then reports ready.

use std::{future::Future, time::Duration};

use mongodb::{
    Client, Database,
    bson::doc,
    error::{Error, ErrorKind, WriteFailure},
    options::{Acknowledgment, ClientOptions, WriteConcern},
};
use secrecy::ExposeSecret;
use tokio::sync::watch;

use crate::{config::MongoSettings, store::StoreError};

/// Server error code of a unique-index violation.
pub const DUPLICATE_KEY: i32 = 11_000;

/// Server error codes that mean "not now" rather than "never": the node is stepping down, shutting
/// down, recovering or unreachable from the node we talk to, or a time limit ran out.
const TRANSIENT_CODES: &[i32] = &[
    6,     // HostUnreachable
    7,     // HostNotFound
    50,    // MaxTimeMSExpired
    64,    // WriteConcernFailed
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    189,   // PrimarySteppedDown
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10058, // LegacyNotPrimary
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
];

/// How often the supervisor pings the database.
pub const SUPERVISE_INTERVAL: Duration = Duration::from_secs(1);

/// Upper bound of one ping, in case a connection hangs beyond the driver's own timeouts.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Upper bound of one run of the service's initialisation: a run that hangs (a lock held by a
/// dead peer, a connection stuck half-open) is abandoned and tried again instead of keeping the
/// service NOT_SERVING, silently, forever.
const INIT_TIMEOUT: Duration = Duration::from_secs(30);

/// While the database stays unusable, the supervisor repeats its warning this often (with the
/// latest error and how long it has waited), so a log shows that it is still trying and why.
const REMIND_EVERY: Duration = Duration::from_secs(30);

/// Builds a client for `settings` and returns its database. Does not contact the server: the
/// driver connects on first use, so this succeeds while MongoDB is down.
///
/// Every write is acknowledged with the configured `w` and journaled before it returns, so an
/// RPC that answered OK never loses its write to a crash of the database. The `store.mongodb.*`
/// settings win over the same options in the URI; an `appName` in the URI is kept.
pub async fn connect(settings: &MongoSettings) -> Result<Database, StoreError> {
    let uri = settings.uri.expose_secret();
    let mut options = ClientOptions::parse(uri).await.map_err(|error| {
        StoreError::Internal(format!(
            "store.mongodb.uri is not a usable MongoDB connection string: {}",
            redact(&error.to_string(), uri)
        ))
    })?;
    options.write_concern = Some(write_concern(&settings.write_concern)?);
    options.max_pool_size = Some(settings.max_pool_size.max(1));
    options.server_selection_timeout = Some(millis(settings.server_selection_timeout_ms));
    options.connect_timeout = Some(millis(settings.connect_timeout_ms));
    if options.app_name.is_none() {
        options.app_name = Some(app_name());
    }
    check_database_name(&settings.database)?;
    let client = Client::with_options(options).map_err(|error| {
        StoreError::Internal(format!(
            "cannot create the MongoDB client: {}",
            redact(&error.to_string(), uri)
        ))
    })?;
    Ok(client.database(&settings.database))
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms.max(1))
}

/// The write concern of `store.mongodb.write_concern`: `majority` or a number of nodes (at least
/// 1: unacknowledged writes would let an RPC report success for a write that never happened).
pub fn write_concern(w: &str) -> Result<WriteConcern, StoreError> {
    let w = w.trim();
    let acknowledgment = if w.eq_ignore_ascii_case("majority") {
        Acknowledgment::Majority
    } else {
        match w.parse::<u32>() {
            Ok(nodes) if nodes >= 1 => Acknowledgment::Nodes(nodes),
            Ok(_) => {
                return Err(StoreError::Internal(
                    "store.mongodb.write_concern must be at least 1: unacknowledged writes are not \
                     allowed"
                        .into(),
                ));
            }
            Err(_) => {
                return Err(StoreError::Internal(format!(
                    "store.mongodb.write_concern must be `majority` or a number of nodes, not {w:?}"
                )));
            }
        }
    };
    Ok(WriteConcern::builder()
        .w(acknowledgment)
        .journal(true)
        .build())
}

/// The driver's `appName` (visible in the server's logs and `currentOp`): this binary's name.
fn app_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "shippy".to_owned())
}

/// Rejects names MongoDB would refuse on first use, so a typo fails at start-up instead.
fn check_database_name(name: &str) -> Result<(), StoreError> {
    const FORBIDDEN: &[char] = &['/', '\\', '.', ' ', '"', '$', '\0'];
    if name.is_empty() || name.len() >= 64 || name.contains(FORBIDDEN) {
        return Err(StoreError::Internal(format!(
            "store.mongodb.database {name:?} is not a valid database name (1-63 bytes, none of \
             / \\ . space \" $)"
        )));
    }
    Ok(())
}

/// Removes the credentials of `uri` (its `user:password@` part) from `text`, in case the driver
/// quotes them in an error message.
fn redact(text: &str, uri: &str) -> String {
    let after_scheme = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    let authority = after_scheme.split(['/', '?']).next().unwrap_or_default();
    match authority.rsplit_once('@') {
        Some((userinfo, _)) if !userinfo.is_empty() => {
            let mut redacted = text.replace(userinfo, "<redacted>");
            if let Some((_, password)) = userinfo.split_once(':')
                && !password.is_empty()
            {
                redacted = redacted.replace(password, "<redacted>");
            }
            redacted
        }
        _ => text.to_owned(),
    }
}

/// Classifies a driver error: a unique-key violation is [`StoreError::Duplicate`] (stores replace
/// its generic text with what was duplicated), an unsatisfied write concern (the write was
/// applied, but not confirmed as asked) is [`StoreError::Unconfirmed`], anything that may succeed
/// later (no reachable server, network, timeouts, a cleared pool, a node stepping down) is
/// [`StoreError::Unavailable`], and the rest is [`StoreError::Internal`].
pub fn classify(error: &Error) -> StoreError {
    let cause = error.to_string();
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(write)) if write.code == DUPLICATE_KEY => {
            duplicate()
        }
        ErrorKind::Write(WriteFailure::WriteConcernError(_)) => StoreError::Unconfirmed(cause),
        ErrorKind::Command(command) if command.code == DUPLICATE_KEY => duplicate(),
        ErrorKind::Command(command) if TRANSIENT_CODES.contains(&command.code) => {
            StoreError::Unavailable(cause)
        }
        ErrorKind::InsertMany(many) => {
            let errors = many.write_errors.iter().flatten();
            if errors.clone().any(|e| e.code == DUPLICATE_KEY) {
                duplicate()
            } else if many.write_concern_error.is_some() {
                StoreError::Unconfirmed(cause)
            } else {
                StoreError::Internal(cause)
            }
        }
        ErrorKind::BulkWrite(bulk) => {
            if bulk.write_errors.values().any(|e| e.code == DUPLICATE_KEY) {
                duplicate()
            } else if !bulk.write_concern_errors.is_empty() {
                StoreError::Unconfirmed(cause)
            } else {
                StoreError::Internal(cause)
            }
        }
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::DnsResolve { .. }
        | ErrorKind::Shutdown => StoreError::Unavailable(cause),
        // The driver labels network failures it wrapped in other kinds as retryable.
        _ if error.contains_label(mongodb::error::RETRYABLE_WRITE_ERROR)
            || error.contains_label(mongodb::error::TRANSIENT_TRANSACTION_ERROR) =>
        {
            StoreError::Unavailable(cause)
        }
        _ => StoreError::Internal(cause),
    }
}

/// Classifies the error of an insert: a unique-key violation becomes a [`StoreError::Duplicate`]
/// saying what was duplicated (`what()`, e.g. `vessel vessel001`), anything else as [`classify`].
pub fn classify_insert(error: &Error, what: impl FnOnce() -> String) -> StoreError {
    match classify(error) {
        StoreError::Duplicate(_) => StoreError::Duplicate(what()),
        other => other,
    }
}

fn duplicate() -> StoreError {
    StoreError::Duplicate("a record with the same unique key".into())
}

/// Whether the database answers a `ping`.
pub async fn ping(db: &Database) -> Result<(), StoreError> {
    match tokio::time::timeout(PING_TIMEOUT, db.run_command(doc! { "ping": 1 })).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(classify(&error)),
        Err(_) => Err(StoreError::Unavailable(format!(
            "ping got no answer within {PING_TIMEOUT:?}"
        ))),
    }
}

/// What the supervisor last saw, to log once per change rather than every second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readiness {
    Ready,
    Unreachable,
    InitFailing,
}

/// Spawns a task that reports whether the database can be used: every [`SUPERVISE_INTERVAL`] it
/// pings `db`; after the first successful ping it runs `init` (indexes, seed data, each run
/// bounded by [`INIT_TIMEOUT`]) until that succeeds once; `true` while the database answers and
/// `init` has succeeded. A warning is logged when the state or its error changes, and repeated
/// every [`REMIND_EVERY`] while it lasts. The task ends when every receiver is dropped.
pub fn supervise<F, Fut>(db: Database, init: F) -> watch::Receiver<bool>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), StoreError>> + Send + 'static,
{
    let (tx, rx) = watch::channel(false);
    tokio::spawn(run(db, init, tx));
    rx
}

async fn run<F, Fut>(db: Database, mut init: F, ready: watch::Sender<bool>)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), StoreError>> + Send + 'static,
{
    let database = db.name().to_owned();
    let mut initialised = false;
    let mut reporter = Reporter::default();
    loop {
        let probe = async {
            ping(&db).await.map_err(|e| (Readiness::Unreachable, e))?;
            if !initialised {
                match tokio::time::timeout(INIT_TIMEOUT, init()).await {
                    Ok(outcome) => outcome.map_err(|e| (Readiness::InitFailing, e))?,
                    Err(_) => {
                        return Err((
                            Readiness::InitFailing,
                            StoreError::Unavailable(format!(
                                "initialisation did not finish within {INIT_TIMEOUT:?}"
                            )),
                        ));
                    }
                }
                initialised = true;
            }
            Ok::<_, (Readiness, StoreError)>(())
        };
        let outcome = tokio::select! {
            () = ready.closed() => return,
            outcome = probe => outcome,
        };
        reporter.report(&database, &outcome);
        let now_ready = outcome.is_ok();
        ready.send_if_modified(|current| std::mem::replace(current, now_ready) != now_ready);
        tokio::select! {
            () = ready.closed() => return,
            () = tokio::time::sleep(SUPERVISE_INTERVAL) => {}
        }
    }
}

/// Decides which probe outcomes are worth a log line: a change of state or of error text, and a
/// reminder every [`REMIND_EVERY`] while the database stays unusable.
#[derive(Default)]
struct Reporter {
    /// The state and error text last logged, and when that state began.
    last: Option<(Readiness, String, tokio::time::Instant)>,
    /// When the last line was logged.
    logged_at: Option<tokio::time::Instant>,
}

impl Reporter {
    fn report(&mut self, database: &str, outcome: &Result<(), (Readiness, StoreError)>) {
        let (state, text) = match outcome {
            Ok(()) => (Readiness::Ready, String::new()),
            Err((state, error)) => (*state, error.to_string()),
        };
        let Some(waited) = self.observe(state, text, tokio::time::Instant::now()) else {
            return;
        };
        let waited = format!("{waited:.0?}");
        match outcome {
            Ok(()) => tracing::info!(%database, "MongoDB is reachable and initialised"),
            Err((Readiness::InitFailing, error)) => tracing::warn!(
                %database, %error, %waited,
                "MongoDB is reachable but initialisation failed; retrying"
            ),
            Err((_, error)) => tracing::warn!(
                %database, %error, %waited,
                "MongoDB is unreachable; waiting until it answers"
            ),
        }
    }

    /// Records one outcome; returns how long the state has lasted when it is worth logging.
    fn observe(
        &mut self,
        state: Readiness,
        text: String,
        now: tokio::time::Instant,
    ) -> Option<Duration> {
        let since = match &self.last {
            Some((last, _, since)) if *last == state => *since,
            _ => now,
        };
        let changed = self
            .last
            .as_ref()
            .is_none_or(|(last, last_text, _)| *last != state || *last_text != text);
        let remind = state != Readiness::Ready
            && self
                .logged_at
                .is_some_and(|at| now.duration_since(at) >= REMIND_EVERY);
        self.last = Some((state, text, since));
        if !(changed || remind) {
            return None;
        }
        self.logged_at = Some(now);
        Some(now.duration_since(since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::{
        bson::{self, Document},
        error::{CommandError, WriteConcernError, WriteError},
    };
    use secrecy::SecretString;

    fn from_doc<T: serde::de::DeserializeOwned>(doc: Document) -> T {
        bson::from_document(doc).expect("error document")
    }

    fn command(code: i32) -> Error {
        Error::from(ErrorKind::Command(from_doc::<CommandError>(
            doc! { "code": code, "codeName": "X", "errmsg": "boom" },
        )))
    }

    #[test]
    fn the_supervisor_logs_changes_and_reminds_while_unusable() {
        let mut reporter = Reporter::default();
        let t0 = tokio::time::Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let down = |text: &str| text.to_owned();
        assert_eq!(
            reporter.observe(Readiness::Unreachable, down("dns"), at(0)),
            Some(Duration::ZERO)
        );
        assert_eq!(
            reporter.observe(Readiness::Unreachable, down("dns"), at(1)),
            None
        );
        // A new error is news, and says how long the outage has lasted.
        assert_eq!(
            reporter.observe(Readiness::Unreachable, down("timeout"), at(2)),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            reporter.observe(Readiness::Unreachable, down("timeout"), at(20)),
            None
        );
        assert_eq!(
            reporter.observe(Readiness::Unreachable, down("timeout"), at(32)),
            Some(Duration::from_secs(32))
        );
        assert_eq!(
            reporter.observe(Readiness::InitFailing, down("slow"), at(33)),
            Some(Duration::ZERO)
        );
        assert_eq!(
            reporter.observe(Readiness::Ready, String::new(), at(34)),
            Some(Duration::ZERO)
        );
        // Ready is said once, never repeated.
        assert_eq!(
            reporter.observe(Readiness::Ready, String::new(), at(100)),
            None
        );
    }

    #[test]
    fn duplicate_keys_are_duplicates_wherever_reported() {
        let write = Error::from(ErrorKind::Write(WriteFailure::WriteError(from_doc::<
            WriteError,
        >(
            doc! { "code": 11000, "errmsg": "E11000 duplicate key" },
        ))));
        assert!(matches!(classify(&write), StoreError::Duplicate(_)));
        assert!(matches!(
            classify(&command(11000)),
            StoreError::Duplicate(_)
        ));
    }

    #[test]
    fn unreachable_is_unavailable_and_unacknowledged_is_unconfirmed() {
        let refused = Error::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(matches!(classify(&refused), StoreError::Unavailable(_)));
        let timed_out = Error::from(std::io::ErrorKind::TimedOut);
        assert!(matches!(classify(&timed_out), StoreError::Unavailable(_)));
        let concern = Error::from(ErrorKind::Write(WriteFailure::WriteConcernError(
            from_doc::<WriteConcernError>(doc! { "code": 64, "errmsg": "waiting for replication" }),
        )));
        // Applied, but not confirmed as asked: not "nothing was saved".
        assert!(matches!(classify(&concern), StoreError::Unconfirmed(_)));
        for code in [91, 189, 10107, 11600] {
            assert!(
                matches!(classify(&command(code)), StoreError::Unavailable(_)),
                "code {code}"
            );
        }
    }

    #[test]
    fn everything_else_is_internal() {
        assert!(matches!(classify(&command(2)), StoreError::Internal(_)));
        let write = Error::from(ErrorKind::Write(WriteFailure::WriteError(from_doc::<
            WriteError,
        >(
            doc! { "code": 121, "errmsg": "document failed validation" },
        ))));
        assert!(matches!(classify(&write), StoreError::Internal(_)));
    }

    #[test]
    fn write_concern_is_majority_or_a_positive_number_and_journaled() {
        let majority = write_concern(" Majority ").expect("majority");
        assert_eq!(majority.w, Some(Acknowledgment::Majority));
        assert_eq!(majority.journal, Some(true));
        assert_eq!(
            write_concern("2").expect("two").w,
            Some(Acknowledgment::Nodes(2))
        );
        assert!(write_concern("0").is_err(), "unacknowledged refused");
        let err = write_concern("majorty").expect_err("typo");
        assert!(err.to_string().contains("majorty"), "{err}");
    }

    #[test]
    fn database_names_are_checked() {
        assert!(check_database_name("shippy").is_ok());
        for bad in ["", "a.b", "a/b", "a b", "x$", "d".repeat(64).as_str()] {
            assert!(check_database_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn credentials_are_redacted() {
        let uri = "mongodb://admin:s3cr3t-pw@db.example:27017/?authSource=admin";
        let text = format!("bad thing in {uri} and s3cr3t-pw alone");
        let redacted = redact(&text, uri);
        assert!(!redacted.contains("s3cr3t-pw"), "{redacted}");
        assert!(redacted.contains("db.example:27017"), "{redacted}");
        assert_eq!(redact("plain", "mongodb://h:1"), "plain");
    }

    #[tokio::test]
    async fn connecting_needs_no_server_and_never_shows_the_password() {
        let settings = MongoSettings {
            // Nothing listens on port 1: connecting must still succeed, the driver is lazy.
            uri: SecretString::from("mongodb://u:hunter2-secret@127.0.0.1:1/"),
            server_selection_timeout_ms: 200,
            ..MongoSettings::default()
        };
        let db = connect(&settings).await.expect("lazy connect");
        assert_eq!(db.name(), "shippy");
        let err = ping(&db).await.expect_err("nothing listens on port 1");
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(!err.to_string().contains("hunter2"), "{err}");

        let bad = MongoSettings {
            uri: SecretString::from("mongodb://u:hunter2-secret@127.0.0.1:1/?maxPoolSize=lots"),
            ..MongoSettings::default()
        };
        let err = connect(&bad).await.expect_err("invalid option");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let bad = MongoSettings {
            uri: SecretString::from("postgres://u:hunter2-secret@h/"),
            ..MongoSettings::default()
        };
        let err = connect(&bad).await.expect_err("wrong scheme");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
